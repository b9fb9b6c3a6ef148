# golden: server builder `clean-candidate` (see server/tests.rs)
docker rm -f qts-observer-next >/dev/null 2>&1; true

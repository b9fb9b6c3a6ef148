# golden: server builder `remove-candidate` (see server/tests.rs)
docker stop -t 15 qts-observer-next >/dev/null 2>&1; docker rm -f qts-observer-next >/dev/null 2>&1; true

# golden: server builder `start-old` (see server/tests.rs)
docker start qts-observer >/dev/null

# golden: server builder `exec-tty` (see server/tests.rs)
docker exec -it qts-observer sh

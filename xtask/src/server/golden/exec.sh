# golden: server builder `exec` (see server/tests.rs)
docker exec qts-observer python3 -c 'print('\''$(id)'\'')'

# golden: server builder `logs` (see server/tests.rs)
docker logs --tail 50 qts-observer 2>&1

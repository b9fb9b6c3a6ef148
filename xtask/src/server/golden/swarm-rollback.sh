# golden: server builder `swarm-rollback` (see server/tests.rs)
docker service rollback -d observer_qts-observer >/dev/null

# golden: server builder `swarm-logs` (see server/tests.rs)
docker service logs --tail 50 --no-task-ids observer_qts-observer 2>&1 | tail -n 50; docker service ps --no-trunc --format 'task|{{.ID}}|{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Image}}|{{.Error}}' observer_qts-observer 2>/dev/null | head -n 6; true

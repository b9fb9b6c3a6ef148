# golden: server builder `remove-candidate` (see server/tests.rs)
if [ "$(docker container inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' qts-observer-next 2>/dev/null)" = observer ]; then docker stop -t 15 qts-observer-next >/dev/null 2>&1; docker rm -f qts-observer-next >/dev/null 2>&1; fi; true

# golden: server builder `down-v1` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker-compose --compatibility -f docker-compose.server.yml down --timeout 10 2>&1

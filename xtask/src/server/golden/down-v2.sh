# golden: server builder `down-v2` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker compose -f docker-compose.server.yml down --timeout 10 2>&1

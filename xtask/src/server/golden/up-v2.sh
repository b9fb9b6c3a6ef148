# golden: server builder `up-v2` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker compose -f docker-compose.server.yml up -d 2>&1

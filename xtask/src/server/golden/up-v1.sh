# golden: server builder `up-v1` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker-compose --compatibility -f docker-compose.server.yml up -d 2>&1

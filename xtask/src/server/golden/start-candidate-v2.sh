# golden: server builder `start-candidate-v2` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker compose -f docker-compose.server.yml run -d --name qts-observer-next --no-deps qts-observer 2>&1

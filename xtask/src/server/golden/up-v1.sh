# golden: server builder `up-v1` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && o=$(env -i PATH="$PATH" HOME="$HOME" ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker-compose --compatibility -f docker-compose.server.yml up -d 2>&1); rc=$?; printf '%s\n' "$o" | sed 's/^.*variable is not set.*$/(compose warned that a variable is not set; hidden: it may quote part of a secret)/'; exit "$rc"

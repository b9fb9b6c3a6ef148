# golden: server builder `up-v2` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && docker compose -f docker-compose.server.yml up -d --remove-orphans 2>&1

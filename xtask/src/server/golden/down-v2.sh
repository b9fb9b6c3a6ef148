# golden: server builder `down-v2` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && docker compose -f docker-compose.server.yml down --timeout 10 2>&1

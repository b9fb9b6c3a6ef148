# golden: server builder `down-v1` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && docker-compose --compatibility -f docker-compose.server.yml down --timeout 10 2>&1

# golden: server builder `up-v1` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && docker-compose --compatibility -f docker-compose.server.yml up -d --remove-orphans 2>&1

# golden: server builder `restore-env` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && if [ -f .env.prev ]; then mv -f .env.prev .env; fi

# golden: server builder `keep-env` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && if [ -f .env ]; then cp -p .env .env.prev; else rm -f .env.prev; fi

# golden: server builder `upload-env` (see server/tests.rs)
umask 077 && cat > '/srv/obs dir/it'\''s/..env.tmp' && chmod 600 '/srv/obs dir/it'\''s/..env.tmp' && mv -f '/srv/obs dir/it'\''s/..env.tmp' '/srv/obs dir/it'\''s/.env'

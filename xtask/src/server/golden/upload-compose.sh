# golden: server builder `upload-compose` (see server/tests.rs)
umask 077 && cat > '/srv/obs dir/it'\''s/.docker-compose.server.yml.tmp' && chmod 644 '/srv/obs dir/it'\''s/.docker-compose.server.yml.tmp' && mv -f '/srv/obs dir/it'\''s/.docker-compose.server.yml.tmp' '/srv/obs dir/it'\''s/docker-compose.server.yml'

# golden: server builder `setup-apply` (see server/tests.rs)
set -e; mkdir -p -- '/srv/obs dir/it'\''s'; chmod 750 -- '/srv/obs dir/it'\''s'; echo 'done create /srv/obs dir/it'\''s (mode 750)'; chmod 2755 -- '/srv/obs backups'; echo 'done chmod 2755 /srv/obs backups'; chown 1001:1001 -- '/srv/obs dir/it'\''s/.deploy'; echo 'done chown 1001:1001 /srv/obs dir/it'\''s/.deploy'

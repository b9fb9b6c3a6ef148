# golden: server builder `snapshot-extract` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && tar -xf - --numeric-owner -C '/srv/obs dir/it'\''s'

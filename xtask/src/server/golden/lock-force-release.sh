# golden: server builder `lock-force-release` (see server/tests.rs)
rm -rf '/srv/obs dir/it'\''s/.deploy'/lock

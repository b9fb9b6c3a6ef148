# golden: server builder `lock-release` (see server/tests.rs)
grep -q 0123456789abcdef '/srv/obs dir/it'\''s/.deploy'/lock/holder.json 2>/dev/null && rm -rf '/srv/obs dir/it'\''s/.deploy'/lock; true

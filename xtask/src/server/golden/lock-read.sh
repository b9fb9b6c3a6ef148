# golden: server builder `lock-read` (see server/tests.rs)
cat '/srv/obs dir/it'\''s/.deploy'/lock/holder.json 2>/dev/null; true

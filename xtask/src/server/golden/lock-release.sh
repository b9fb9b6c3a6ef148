# golden: server builder `lock-release` (see server/tests.rs)
if [ ! -d '/srv/obs dir/it'\''s/.deploy'/lock ]; then echo absent; elif grep -q 0123456789abcdef '/srv/obs dir/it'\''s/.deploy'/lock/holder.json 2>/dev/null; then rm -rf '/srv/obs dir/it'\''s/.deploy'/lock && echo released; else echo not-ours; fi

# golden: server builder `lock-acquire` (see server/tests.rs)
mkdir -p '/srv/obs dir/it'\''s/.deploy' && if mkdir '/srv/obs dir/it'\''s/.deploy'/lock 2>/dev/null; then cat > '/srv/obs dir/it'\''s/.deploy'/lock/holder.json && echo acquired; else cat '/srv/obs dir/it'\''s/.deploy'/lock/holder.json 2>/dev/null; echo; echo held; exit 1; fi

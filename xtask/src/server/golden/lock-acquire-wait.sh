# golden: server builder `lock-acquire-wait` (see server/tests.rs)
mkdir -p '/srv/obs dir/it'\''s/.deploy' && i=0; while ! mkdir '/srv/obs dir/it'\''s/.deploy'/lock 2>/dev/null; do if [ "$i" -ge 30 ]; then cat '/srv/obs dir/it'\''s/.deploy'/lock/holder.json 2>/dev/null; echo; echo held; exit 1; fi; sleep 1; i=$((i+1)); done; cat > '/srv/obs dir/it'\''s/.deploy'/lock/holder.json && echo acquired

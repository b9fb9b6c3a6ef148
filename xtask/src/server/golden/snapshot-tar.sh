# golden: server builder `snapshot-tar` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && set -- && for d in config data logs .deploy; do [ -e "$d" ] && set -- "$@" "$d"; done; tar -cf - --numeric-owner --exclude=.deploy/lock "$@"; rc=$?; [ $rc -le 1 ]

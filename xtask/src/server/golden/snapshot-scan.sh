# golden: server builder `snapshot-scan` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && set -- && for d in config data logs .deploy; do [ -e "$d" ] && set -- "$@" "$d"; done; [ $# -eq 0 ] || find "$@" -path .deploy/lock -prune -o -printf '%y %s %T@ %i %p\n'

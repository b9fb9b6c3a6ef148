# golden: server builder `logs-follow` (see server/tests.rs)
f='/srv/obs dir/it'\''s/logs/observer.log'; { docker logs -f --tail 5 qts-observer 2>&1 | awk '{ print "[container] " $0; fflush() }'; } & { tail -n 5 -F "$f" 2>/dev/null | awk '{ print "[observer.log] " $0; fflush() }'; } & cat >/dev/null; trap '' TERM; kill -TERM 0 2>/dev/null; true

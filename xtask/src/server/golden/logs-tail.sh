# golden: server builder `logs-tail` (see server/tests.rs)
f='/srv/obs dir/it'\''s/logs/observer.log'; docker logs --tail 100 qts-observer 2>&1 | awk '{ print "[container] " $0 }'; if [ -f "$f" ]; then tail -n 100 "$f" | awk '{ print "[observer.log] " $0 }'; fi; true

# golden: server builder `logs-follow` (see server/tests.rs)
f='/srv/obs dir/it'\''s/logs/observer.log'; { docker logs -f --tail 5 qts-observer 2>&1 | while IFS= read -r l; do printf '[container] %s\n' "$l"; done; } & { tail -n 5 -F "$f" 2>/dev/null | while IFS= read -r l; do printf '[observer.log] %s\n' "$l"; done; } & cat >/dev/null; trap '' TERM; kill -TERM 0 2>/dev/null; true

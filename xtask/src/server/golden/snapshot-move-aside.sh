# golden: server builder `snapshot-move-aside` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && mkdir -p .restore-undo/20261129T100000Z-before-x/.deploy && for d in config data logs; do [ -e "$d" ] && mv "$d" .restore-undo/20261129T100000Z-before-x/; done; for f in .deploy/history.jsonl .deploy/last_good_tag; do [ -e "$f" ] && mv "$f" .restore-undo/20261129T100000Z-before-x/.deploy/; done; true

# golden: server builder `snapshot-keep-history` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && if [ -e .restore-undo/20261204T070000Z-before-s1/.deploy/history.jsonl ]; then mkdir -p .deploy && mv -f .restore-undo/20261204T070000Z-before-s1/.deploy/history.jsonl .deploy/history.jsonl; fi

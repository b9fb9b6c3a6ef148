# golden: server builder `snapshot-cut-tail` (see server/tests.rs)
truncate -s 4096 '/srv/obs dir/it'\''s/config/observer/observer.jsonl'

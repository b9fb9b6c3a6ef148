# golden: server builder `history-read` (see server/tests.rs)
tail -n 5 '/srv/obs dir/it'\''s/.deploy'/history.jsonl 2>/dev/null; true

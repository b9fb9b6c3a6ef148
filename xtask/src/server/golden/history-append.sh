# golden: server builder `history-append` (see server/tests.rs)
cat >> '/srv/obs dir/it'\''s/.deploy'/history.jsonl

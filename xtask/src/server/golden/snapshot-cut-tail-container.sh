# golden: server builder `snapshot-cut-tail-container` (see server/tests.rs)
docker run --rm --user 0 --network none --pull never -v '/srv/obs dir/it'\''s':'/srv/obs dir/it'\''s' -w '/srv/obs dir/it'\''s' --entrypoint truncate 127.0.0.1:5000/observer:v1.2.3 -s 4096 '/srv/obs dir/it'\''s/config/observer/observer.jsonl'

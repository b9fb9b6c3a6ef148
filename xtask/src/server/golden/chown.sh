# golden: server builder `chown` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && if [ -n "$(find config logs data \( ! -uid 10001 -o ! -gid 10001 \) -print 2>/dev/null | head -n 1)" ]; then chown -R 10001:10001 config logs data 2>/dev/null || docker run --rm --user 0 --entrypoint chown -v '/srv/obs dir/it'\''s':/r 127.0.0.1:5000/observer:v1.2.3 -R 10001:10001 /r/config /r/logs /r/data; fi

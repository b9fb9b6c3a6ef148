# golden: server builder `rmi` (see server/tests.rs)
docker rmi 127.0.0.1:5000/observer:v1.0.0 127.0.0.1:5000/observer:v1.1.0-rc.1 >/dev/null 2>&1 || true

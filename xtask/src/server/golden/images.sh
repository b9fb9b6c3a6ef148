# golden: server builder `images` (see server/tests.rs)
docker images --format '{{.Tag}} {{.CreatedAt}}' 127.0.0.1:5000/observer

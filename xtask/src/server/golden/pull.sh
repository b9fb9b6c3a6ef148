# golden: server builder `pull` (see server/tests.rs)
docker pull -q 127.0.0.1:5000/observer:v1.2.3 >/dev/null && docker image inspect --format '{{json .RepoDigests}}' 127.0.0.1:5000/observer:v1.2.3

# golden: server builder `pull-login` (see server/tests.rs)
read -r u && docker login --username "$u" --password-stdin 127.0.0.1:5000 >/dev/null && docker pull -q 127.0.0.1:5000/observer:v1.2.3 >/dev/null && docker image inspect --format '{{json .RepoDigests}}' 127.0.0.1:5000/observer:v1.2.3

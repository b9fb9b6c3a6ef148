# golden: server builder `prune-rmi` (see server/tests.rs)
for t in v1.0.0 v1.1.0-rc.1; do if e=$(docker rmi 127.0.0.1:5000/observer:"$t" 2>&1 >/dev/null); then echo "removed $t"; else echo "kept $t $(printf '%s' "$e" | tr '\n' ' ')"; fi; done

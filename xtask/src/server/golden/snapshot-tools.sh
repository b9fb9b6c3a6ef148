# golden: server builder `snapshot-tools` (see server/tests.rs)
for t in tar zstd sha256sum; do if command -v "$t" >/dev/null 2>&1; then echo "tool $t yes"; else echo "tool $t no"; fi; done; if tar --version 2>/dev/null | grep -q 'GNU tar'; then echo 'tool gnu-tar yes'; else echo 'tool gnu-tar no'; fi; echo "uid $(id -u)"

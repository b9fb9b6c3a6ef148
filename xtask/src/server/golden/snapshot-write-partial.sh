# golden: server builder `snapshot-write-partial` (see server/tests.rs)
mkdir -p '/srv/obs backups' && cat > '/srv/obs backups'/20261129T100000Z-abcdef.tar.zst.partial

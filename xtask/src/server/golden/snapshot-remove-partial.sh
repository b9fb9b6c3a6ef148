# golden: server builder `snapshot-remove-partial` (see server/tests.rs)
rm -f '/srv/obs backups'/20261129T100000Z-abcdef.tar.zst.partial

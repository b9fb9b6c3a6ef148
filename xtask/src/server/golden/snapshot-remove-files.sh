# golden: server builder `snapshot-remove-files` (see server/tests.rs)
cd '/srv/obs backups' && rm -rf -- 20261129T100000Z-abcdef.tar.zst 20261129T100000Z-abcdef.tar.zst.partial

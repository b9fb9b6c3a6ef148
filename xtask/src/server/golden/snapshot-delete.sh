# golden: server builder `snapshot-delete` (see server/tests.rs)
rm -f '/srv/obs backups/20261129T100000Z-abcdef.tar.zst' '/srv/obs backups/20261129T100000Z-abcdef.tar.zst.sha256' '/srv/obs backups/20261129T100000Z-abcdef.manifest.json'

# golden: server builder `snapshot-cat` (see server/tests.rs)
cat '/srv/obs backups'/20261129T100000Z-abcdef.manifest.json

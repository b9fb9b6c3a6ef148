# golden: server builder `make-dirs` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && mkdir -p config/observer logs data

# golden: server builder `record-last-good` (see server/tests.rs)
printf '%s %s\n' v1.2.3 sha256:0123 > '/srv/obs dir/it'\''s/.deploy'/last_good_tag.tmp && mv -f '/srv/obs dir/it'\''s/.deploy'/last_good_tag.tmp '/srv/obs dir/it'\''s/.deploy'/last_good_tag

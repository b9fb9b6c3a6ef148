# golden: server builder `env-has` (see server/tests.rs)
cd '/srv/obs dir/it'\''s' && for n in KIS_API_KEY KIS_API_SECRET; do grep -q "^$n=" .env 2>/dev/null || echo "missing $n"; done; true

# golden: server builder `gate` (see server/tests.rs)
s=none; i=0; while [ $i -lt 90 ]; do s=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' qts-observer 2>/dev/null || echo missing); [ "$s" = healthy ] && break; [ "$s" = unhealthy ] && break; sleep 1; i=$((i+1)); done
if [ "$s" = healthy ]; then echo "ok health container healthy"; else echo "fail health container $s after ${i}s"; fi
img=$(docker inspect -f '{{.Config.Image}}' qts-observer 2>/dev/null); case "$img" in *:v1.2.3) echo "ok image $img";; *) echo "fail image running $img, expected v1.2.3";; esac
if command -v curl >/dev/null 2>&1; then code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:18000/health); else docker exec qts-observer python3 -m observer.healthcheck && code=200 || code=000; fi
if [ "$code" = 200 ]; then echo "ok http /health answered 200"; else echo "fail http /health answered $code"; fi
if [ -d '/srv/obs dir/it'\''s'/config/observer ]; then echo "ok archive-dir config/observer exists"; else echo "fail archive-dir config/observer missing"; fi
if grep -q 'observer started version=v1.2.3 ' '/srv/obs dir/it'\''s'/logs/observer.log 2>/dev/null; then echo "ok start-line found in logs/observer.log"; else echo "fail start-line no 'observer started version=v1.2.3 ' in logs/observer.log"; fi
docker exec qts-observer sh -c 'for n in QTS_OBSERVER_STANDALONE PYTHONPATH OBSERVER_DATA_DIR OBSERVER_LOG_DIR; do printf "env %s=%s\n" "$n" "$(printenv "$n")"; done; for n in KIS_API_KEY KIS_API_SECRET; do if [ -n "$(printenv "$n")" ]; then echo "secret $n=set"; else echo "secret $n=unset"; fi; done; if [ -n "$(printenv OBSERVER_STANDALONE)" ]; then echo "forbidden OBSERVER_STANDALONE=set"; fi' 2>/dev/null || echo "fail env cannot exec in the container"


# golden: server builder `upload-env` (see server/tests.rs)
umask 077 && cd '/srv/obs dir/it'\''s' || exit 1
trap 'rm -f .env.xtask-in .env.xtask-tmp' EXIT
cat > .env.xtask-in && : > .env.xtask-tmp || exit 1
while IFS= read -r l || [ -n "$l" ]; do
  case "$l" in
    '# xtask-keep-if-present '*) n=${l#'# xtask-keep-if-present '}; req= ;;
    '# xtask-keep '*) n=${l#'# xtask-keep '}; req=1 ;;
    *) printf '%s\n' "$l" >> .env.xtask-tmp; continue ;;
  esac
  case "$n" in ''|*[!A-Za-z0-9_]*) echo "xtask-bad-directive"; exit 3 ;; esac
  m=$(grep "^$n=" .env 2>/dev/null | tail -n 1)
  if [ -n "$m" ]; then printf '%s\n' "$m" >> .env.xtask-tmp; elif [ -n "$req" ]; then echo "xtask-missing $n"; exit 3; fi
done < .env.xtask-in
chmod 600 .env.xtask-tmp && mv -f .env.xtask-tmp .env

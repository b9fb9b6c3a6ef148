#!/usr/bin/env bash
# Fetches a server's SSH host keys with ssh-keyscan and prints them as known_hosts lines (for the
# DEPLOY_KNOWN_HOSTS secret or the environment's known_hosts file) with their SHA256
# fingerprints, which must be compared out of band with what the server's admin reads on the
# server before the lines are trusted.
set -euo pipefail

TYPES=(ed25519 ecdsa rsa)

usage() {
  cat <<EOF
usage: $0 [--type ed25519|ecdsa|rsa]... [--timeout SECONDS] HOST [PORT]

Scans HOST (PORT, default 22) with ssh-keyscan, ed25519 first, then ecdsa and rsa (or only the
--type given), and prints on standard output:

  - the known_hosts lines: paste them into the DEPLOY_KNOWN_HOSTS secret (GitHub environment
    "production") or append them to the environment's known_hosts file
    (deployment_config.json "known_hosts");
  - each key's SHA256 fingerprint, as "#" comment lines (so the whole output is still a valid
    known_hosts file).

ssh-keyscan trusts the network: anyone in the path can answer with their own key. Before you
trust the lines, compare the fingerprints with what the server's admin reads ON THE SERVER
(console or an already trusted session), e.g.:

  ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub

Exit 0: at least one key printed; 1: no key obtained; 2: bad usage.
EOF
}

die_usage() {
  echo "$0: $1" >&2
  echo "run $0 -h for usage" >&2
  exit 2
}

main() {
  local types=() timeout=5 args=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --type)
        [ $# -ge 2 ] || die_usage "--type needs a value"
        case "$2" in
          ed25519 | ecdsa | rsa) types+=("$2") ;;
          *) die_usage "unknown key type: $2 (ed25519, ecdsa or rsa)" ;;
        esac
        shift 2 ;;
      --timeout)
        if [ $# -lt 2 ] || ! [[ $2 =~ ^[1-9][0-9]{0,3}$ ]]; then
          die_usage "--timeout needs a number of seconds"
        fi
        timeout=$2
        shift 2 ;;
      --) shift; args+=("$@"); break ;;
      -*) die_usage "unknown option: $1" ;;
      *) args+=("$1"); shift ;;
    esac
  done
  ((${#args[@]} >= 1 && ${#args[@]} <= 2)) || die_usage "expected HOST [PORT]"
  local host=${args[0]} port=${args[1]:-22}
  [[ $host =~ ^[A-Za-z0-9._:-]+$ && $host != -* ]] || die_usage "not a host name or address: $host"
  if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die_usage "not a port: $port"
  fi
  port=$((10#$port))
  ((${#types[@]})) || types=("${TYPES[@]}")
  for tool in ssh-keyscan ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (package openssh-client)" >&2; exit 1; }
  done

  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT

  # One scan per type, in order, so that ed25519 comes first whatever order the server answers in.
  local t
  : >"$tmp/known_hosts"
  for t in "${types[@]}"; do
    if ssh-keyscan -T "$timeout" -p "$port" -t "$t" "$host" >"$tmp/$t" 2>"$tmp/$t.err"; then :; fi
    grep -v '^#' "$tmp/$t" | grep -E '^[^ ]+ [^ ]+ [A-Za-z0-9+/=]+$' >>"$tmp/known_hosts" || true
  done
  if [ ! -s "$tmp/known_hosts" ]; then
    echo "$0: no host key from $host port $port (types: ${types[*]})" >&2
    cat "$tmp"/*.err >&2 2>/dev/null || true
    exit 1
  fi

  local target=$host
  [ "$port" = 22 ] || target="[$host]:$port"
  echo "# known_hosts for $target, from ssh-keyscan on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# NOT VERIFIED: compare the fingerprints below with the server's own (out of band) first."
  cat "$tmp/known_hosts"
  echo "#"
  echo "# SHA256 fingerprints (ssh-keygen -lf):"
  ssh-keygen -lf "$tmp/known_hosts" | sed 's/^/#   /'

  local ed_fp check
  ed_fp=$(ssh-keygen -lf "$tmp/known_hosts" | awk '/\(ED25519\)$/ {print $2; exit}')
  if [ -n "$ed_fp" ]; then
    check="  ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub

and check that it prints the same SHA256 fingerprint as the ED25519 key above:

  $ed_fp"
  else
    check="  ssh-keygen -lf /etc/ssh/ssh_host_<type>_key.pub   (for each type above)

and check that each prints the same SHA256 fingerprint as above."
  fi
  cat >&2 <<EOF

IMPORTANT: these keys came over the network and are NOT verified yet. Before you put the lines
into DEPLOY_KNOWN_HOSTS or a known_hosts file, have the server's admin run, on the server itself
(console or an already trusted session):

$check

If it differs, do not trust the lines: something between you and the server answered instead of
it.
EOF
}

main "$@"

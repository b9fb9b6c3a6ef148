#!/usr/bin/env bash
# Prepares a new production VM (Debian or Ubuntu with Docker CE) for `cargo xtask deploy`: run it
# once, as root, on the server. Idempotent: a second run changes nothing that is already right.
set -euo pipefail

QTS_UID=10001 # the image's `qts` user and group (app/Dockerfile)
# Defaults: the production environment in app/obs_deploy/deployment_config.json.
DEPLOY_ROOT=/opt/observer
BACKUPS_DIR=/opt/observer-backups
DEPLOY_USER=deploy
AUTHORIZED_KEY=
DRY_RUN=0

usage() {
  cat <<EOF
usage: $0 [options] [USER]

Run once, as root, on a new production server (Debian/Ubuntu with Docker CE) to prepare it for
\`cargo xtask deploy\`. Idempotent: run it again at any time; it changes only what is not right.

It:
  1. checks that Docker (daemon answering), compose v2 (\`docker compose\`), tar and sha256sum are
     present, and installs zstd and curl with apt-get when they are missing (snapshots are made
     on the server with GNU tar, zstd and sha256sum, issue 13; without them they stream through
     the controller);
  2. creates the deploy user USER (default: $DEPLOY_USER) in the \`docker\` group, or adds an
     existing USER to the group (note: the docker group is root-equivalent on this host);
  3. with --authorized-key, adds that public key to USER's ~/.ssh/authorized_keys;
  4. creates the deploy root (default $DEPLOY_ROOT, owned by USER, mode 0750) with
       config/, config/observer/, logs/, data/   owned by uid/gid $QTS_UID (the image's qts user)
       .deploy/                                  owned by USER (lock, last good tag, history)
     and the backups folder (default $BACKUPS_DIR) owned by USER, mode 0750;
  5. prints this server's SSH host key fingerprints, to compare with
     \`scripts/pin-host-key.sh HOST\` run from the machine that deploys.

options:
  --authorized-key FILE  a public key (one or more lines, e.g. the deploy key's .pub) for USER
  --deploy-root DIR      the environment's remote_dir (default: $DEPLOY_ROOT)
  --backups-dir DIR      the environment's backups_dir (default: $BACKUPS_DIR)
  --dry-run              print what would be done; change nothing (does not need root)
  -h, --help             this text

If you change --deploy-root or --backups-dir, set the same remote_dir / backups_dir in
app/obs_deploy/deployment_config.json.

Exit 0: the server is ready; 1: a check or a step failed; 2: bad usage.
EOF
}

die() {
  echo "error: $*" >&2
  exit 1
}
die_usage() {
  echo "$0: $*" >&2
  echo "run $0 -h for usage" >&2
  exit 2
}
say() { echo "==> $*"; }

# Runs a command, or prints it under --dry-run.
act() {
  if ((DRY_RUN)); then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    "$@"
  fi
}

parse_args() {
  local positional=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --authorized-key | --deploy-root | --backups-dir)
        [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"
        case "$1" in
          --authorized-key) AUTHORIZED_KEY=$2 ;;
          --deploy-root) DEPLOY_ROOT=$2 ;;
          --backups-dir) BACKUPS_DIR=$2 ;;
        esac
        shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; positional+=("$@"); break ;;
      -*) die_usage "unknown option: $1" ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  ((${#positional[@]} <= 1)) || die_usage "at most one USER"
  if ((${#positional[@]})); then DEPLOY_USER=${positional[0]}; fi
  [[ $DEPLOY_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die_usage "not a valid user name: $DEPLOY_USER"
  [ "$DEPLOY_USER" != root ] || die_usage "the deploy user must not be root"
  local d
  for d in "$DEPLOY_ROOT" "$BACKUPS_DIR"; do
    [[ $d == /* ]] || die_usage "not an absolute path: $d"
    [[ $d =~ ^/[A-Za-z0-9._/-]+$ && $d != */ && $d != *..* && $d != *//* ]] || die_usage "unsafe path: $d"
  done
  [ "$DEPLOY_ROOT" != "$BACKUPS_DIR" ] || die_usage "the deploy root and the backups folder must differ"
  case "$BACKUPS_DIR/" in "$DEPLOY_ROOT"/*) die_usage "the backups folder must not be inside the deploy root" ;; esac
  if [ -n "$AUTHORIZED_KEY" ]; then
    [ -f "$AUTHORIZED_KEY" ] && [ -r "$AUTHORIZED_KEY" ] || die_usage "cannot read $AUTHORIZED_KEY"
    ! grep -q 'PRIVATE KEY' "$AUTHORIZED_KEY" || die_usage "$AUTHORIZED_KEY is a PRIVATE key: give the public one (.pub)"
    ssh-keygen -lf "$AUTHORIZED_KEY" >/dev/null 2>&1 || die_usage "$AUTHORIZED_KEY is not an SSH public key (ssh-keygen -lf refuses it)"
  fi
}

check_tools() {
  say "checking the tools"
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    case " ${ID:-} ${ID_LIKE:-} " in
      *" debian "* | *" ubuntu "*) ;;
      *) echo "warning: ${PRETTY_NAME:-this system} is neither Debian nor Ubuntu; continuing" >&2 ;;
    esac
  fi
  command -v docker >/dev/null || die "docker not found: install Docker CE (docker-ce, docker-ce-cli, containerd.io, docker-compose-plugin from Docker's apt repository) first"
  docker info >/dev/null 2>&1 || die "the docker daemon does not answer (\`docker info\` fails): systemctl enable --now docker"
  local v2
  v2=$(docker compose version 2>/dev/null) || v2=
  [[ $v2 =~ [Vv]ersion\ v?2\. ]] || die "compose v2 (\`docker compose\`) not found: apt-get install docker-compose-plugin (Docker's apt repository)"
  echo "ok: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), ${v2}"
  getent group docker >/dev/null || die "no \`docker\` group: is Docker CE installed as a package?"
  local t
  for t in tar sha256sum; do
    command -v "$t" >/dev/null || die "$t not found (it is part of every Debian/Ubuntu base system: install ${t/sha256sum/coreutils})"
  done
  local missing=()
  command -v zstd >/dev/null || missing+=(zstd)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    act env DEBIAN_FRONTEND=noninteractive apt-get update -q
    act env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  if ! ((DRY_RUN)); then
    tar --version 2>/dev/null | grep -q 'GNU tar' || die "tar is not GNU tar (snapshots use its --to-command and --quoting-style)"
    tar --zstd --version >/dev/null 2>&1 || die "tar does not support --zstd (GNU tar 1.31 or newer needed)"
  fi
  echo "ok: tar, sha256sum, zstd, curl"
}

ensure_user() {
  say "deploy user $DEPLOY_USER"
  if id -u "$DEPLOY_USER" >/dev/null 2>&1; then
    if id -nG "$DEPLOY_USER" | tr ' ' '\n' | grep -qx docker; then
      echo "ok: $DEPLOY_USER exists and is in the docker group"
    else
      act usermod -aG docker "$DEPLOY_USER"
    fi
  else
    act useradd --create-home --shell /bin/bash --user-group --groups docker "$DEPLOY_USER"
    # No password at all ("*", not "!" = locked): key-only, and sshd without PAM still accepts it.
    act usermod -p '*' "$DEPLOY_USER"
  fi
}

# USER's home directory and primary group (after ensure_user; placeholders in a dry run).
user_home() {
  getent passwd "$DEPLOY_USER" | cut -d: -f6 | grep . || echo "/home/$DEPLOY_USER"
}
user_group() {
  id -gn "$DEPLOY_USER" 2>/dev/null || echo "$DEPLOY_USER"
}

install_key() {
  [ -n "$AUTHORIZED_KEY" ] || return 0
  say "authorized key from $AUTHORIZED_KEY"
  local home group ssh_dir ak line added=0
  home=$(user_home)
  group=$(user_group)
  ssh_dir="$home/.ssh"
  ak="$ssh_dir/authorized_keys"
  ensure_dir "$ssh_dir" "$DEPLOY_USER" "$group" 700
  if [ ! -e "$ak" ]; then
    act install -m 600 -o "$DEPLOY_USER" -g "$group" /dev/null "$ak"
  fi
  while IFS= read -r line || [ -n "$line" ]; do
    [[ -n ${line// /} && $line != \#* ]] || continue
    if [ -f "$ak" ] && grep -qxF -- "$line" "$ak"; then
      echo "ok: key already authorized: ${line:0:40}..."
      continue
    fi
    if ((DRY_RUN)); then
      echo "would append to $ak: ${line:0:40}..."
    else
      printf '%s\n' "$line" >>"$ak"
      echo "+ appended to $ak: ${line:0:40}..."
    fi
    added=1
  done <"$AUTHORIZED_KEY"
  if [ -e "$ak" ] || ((added)); then
    ensure_owner_mode "$ak" "$DEPLOY_USER" "$group" 600
  fi
}

# Makes sure PATH is a directory (not a symlink) owned OWNER:GROUP with MODE.
ensure_dir() {
  local path=$1 owner=$2 group=$3 mode=$4
  if [ -L "$path" ]; then
    die "$path is a symlink: refusing to use it"
  elif [ -e "$path" ] && [ ! -d "$path" ]; then
    die "$path exists and is not a directory"
  elif [ ! -d "$path" ]; then
    act mkdir -p -- "$path"
  elif [ -k "$path" ] && [ "$(( 0$(stat -c %a -- "$path") & 02 ))" -ne 0 ]; then
    die "$path is a shared folder (world-writable, sticky bit, like /tmp): refusing to take it; pass a folder of its own"
  fi
  ensure_owner_mode "$path" "$owner" "$group" "$mode"
}

ensure_owner_mode() {
  local path=$1 owner=$2 group=$3 mode=$4 now want_u want_g
  want_u=$(id -u "$owner" 2>/dev/null || echo "$owner")
  want_g=$(getent group "$group" | cut -d: -f3 | grep . || echo "$group")
  now=$(stat -c '%u:%g %a' -- "$path" 2>/dev/null || echo missing)
  if [ "$now" = "$want_u:$want_g $mode" ]; then
    echo "ok: $path ($owner:$group $mode)"
    return 0
  fi
  act chown -- "$owner:$group" "$path"
  act chmod -- "$mode" "$path"
}

ensure_dirs() {
  local group
  group=$(user_group)
  say "deploy root $DEPLOY_ROOT and backups $BACKUPS_DIR"
  ensure_dir "$DEPLOY_ROOT" "$DEPLOY_USER" "$group" 750
  ensure_dir "$DEPLOY_ROOT/config" "$QTS_UID" "$QTS_UID" 755
  ensure_dir "$DEPLOY_ROOT/config/observer" "$QTS_UID" "$QTS_UID" 755
  ensure_dir "$DEPLOY_ROOT/logs" "$QTS_UID" "$QTS_UID" 755
  ensure_dir "$DEPLOY_ROOT/data" "$QTS_UID" "$QTS_UID" 755
  ensure_dir "$DEPLOY_ROOT/.deploy" "$DEPLOY_USER" "$group" 750
  ensure_dir "$BACKUPS_DIR" "$DEPLOY_USER" "$group" 750
}

host_keys() {
  say "this server's SSH host keys (compare with \`scripts/pin-host-key.sh HOST\` on the deploying machine)"
  local k found=0
  for k in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
    if [ -r "$k" ]; then
      ssh-keygen -lf "$k"
      found=1
    fi
  done
  ((found)) || echo "no host keys under /etc/ssh (is openssh-server installed?)"
}

main() {
  parse_args "$@"
  if ! ((DRY_RUN)) && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or with --dry-run to only see what it would do)"
  fi
  if ((DRY_RUN)); then say "dry run: nothing is changed"; fi
  check_tools
  ensure_user
  install_key
  ensure_dirs
  host_keys
  if ((DRY_RUN)); then
    say "dry run done: nothing was changed"
  else
    say "ready: deploy as $DEPLOY_USER to $DEPLOY_ROOT (backups in $BACKUPS_DIR)"
  fi
}

main "$@"

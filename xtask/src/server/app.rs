//! The application on the server: uploads, the mounted folders, pull, compose up/down, logs and
//! image pruning.

use super::q;
use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::{COMPOSE_FILE, CONTAINER, PROJECT, QTS_UID};
use crate::core::dotenv::{Entry, KEEP, KEEP_IF_PRESENT};
use crate::core::version;

/// Writes stdin to `<remote_dir>/<name>` atomically (temp file + rename) with `mode` (octal);
/// `.env` goes through [`upload_env`].
pub fn upload(env: &Env, name: &str, mode: &str) -> String {
    if name == ".env" {
        return upload_env(env);
    }
    let dst = q(&format!("{}/{name}", env.remote_dir));
    let tmp = q(&format!("{}/.{name}.tmp", env.remote_dir));
    format!("umask 077 && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {dst}")
}

/// Writes stdin as `<remote_dir>/.env` (mode 0600, temp file + rename), replacing each
/// `# xtask-keep NAME` line with the current `.env`'s `NAME=` line (`--keep-server-secrets`; none:
/// fails with `xtask-missing NAME`, exit 3, nothing changed) and each `# xtask-keep-if-present NAME`
/// line with it or nothing. The carried lines never reach the output; the temp files are removed
/// whatever happens.
pub fn upload_env(env: &Env) -> String {
    format!(
        r#"umask 077 && cd {dir} || exit 1
trap 'rm -f .env.xtask-in .env.xtask-tmp' EXIT
cat > .env.xtask-in && : > .env.xtask-tmp || exit 1
while IFS= read -r l || [ -n "$l" ]; do
  case "$l" in
    '{kip}'*) n=${{l#'{kip}'}}; req= ;;
    '{keep}'*) n=${{l#'{keep}'}}; req=1 ;;
    *) printf '%s\n' "$l" >> .env.xtask-tmp; continue ;;
  esac
  case "$n" in ''|*[!A-Za-z0-9_]*) echo "xtask-bad-directive"; exit 3 ;; esac
  m=$(grep "^$n=" .env 2>/dev/null | tail -n 1)
  if [ -n "$m" ]; then printf '%s\n' "$m" >> .env.xtask-tmp; elif [ -n "$req" ]; then echo "xtask-missing $n"; exit 3; fi
done < .env.xtask-in
chmod 600 .env.xtask-tmp && mv -f .env.xtask-tmp .env"#,
        dir = q(&env.remote_dir),
        keep = KEEP,
        kip = KEEP_IF_PRESENT,
    )
}

/// Prints `missing NAME` for each of `names` without a `NAME=` line in the server's `.env`
/// (read-only; never prints a value).
pub fn env_has(env: &Env, names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|n| q(n)).collect();
    format!(
        "cd {} && for n in {}; do grep -q \"^$n=\" .env 2>/dev/null || echo \"missing $n\"; done; true",
        q(&env.remote_dir),
        names.join(" ")
    )
}

/// Pulls `image` and prints its RepoDigests. With `login`, first logs in (user and token on
/// stdin) into a throwaway `DOCKER_CONFIG` that is removed after the pull, so no registry token
/// stays on the server.
pub fn pull(env: &Env, image: &str, login: bool) -> String {
    let img = q(image);
    let inspect = format!("docker image inspect --format '{{{{json .RepoDigests}}}}' {img}");
    if !login {
        return format!("docker pull -q {img} >/dev/null && {inspect}");
    }
    format!(
        "d=$(mktemp -d) && export DOCKER_CONFIG=\"$d\" && read -r u && docker login --username \"$u\" --password-stdin {} >/dev/null && docker pull -q {img} >/dev/null; rc=$?; rm -rf \"$d\"; unset DOCKER_CONFIG; [ \"$rc\" = 0 ] || exit \"$rc\"; {inspect}",
        q(&env.registry)
    )
}

/// Creates `config/observer`, `logs` and `data` in the deploy root.
pub fn make_dirs(env: &Env) -> String {
    format!(
        "cd {} && mkdir -p config/observer logs data",
        q(&env.remote_dir)
    )
}

/// When any path under `config/`, `logs/` or `data/` is not owned by the image's user (uid and
/// gid 10001), gives them all to it: directly when the deploy user may, otherwise with a root
/// container of the just-pulled `image` (a deploy user in the docker group owns the socket).
pub fn chown(env: &Env, image: &str) -> String {
    let r = q(&env.remote_dir);
    format!(
        "cd {r} && if [ -n \"$(find config logs data \\( ! -uid {QTS_UID} -o ! -gid {QTS_UID} \\) -print 2>/dev/null | head -n 1)\" ]; then chown -R {QTS_UID}:{QTS_UID} config logs data 2>/dev/null || docker run --rm --user 0 --entrypoint chown -v {r}:/r {img} -R {QTS_UID}:{QTS_UID} /r/config /r/logs /r/data; fi",
        img = q(image)
    )
}

/// The server's `.env` for compose: project, image, port and the address it is bound to,
/// interval, and the secrets' entries
/// (values already encoded by `core::dotenv`, or keep directives for [`upload_env`]).
pub fn env_file(env: &Env, version: &str, secrets: &[Entry]) -> String {
    let mut s = format!(
        "COMPOSE_PROJECT_NAME={PROJECT}\nIMAGE_REPO={}\nIMAGE_TAG={version}\nOBSERVER_HOST_PORT={}\nOBSERVER_BIND_ADDRESS={}\nOBSERVER_INTERVAL_MS={}\n",
        env.repo(),
        env.cfg.host_port,
        env.cfg.bind_for_compose(),
        env.cfg.interval_ms
    );
    for e in secrets {
        s.push_str(&e.line());
        s.push('\n');
    }
    s
}

/// Compose with only the tool's inputs: the server's login environment (sshd `SetEnv`,
/// `/etc/environment`) cannot override `.env` in compose's interpolation.
pub fn compose_cmd(c: Compose) -> String {
    format!(
        "env -i PATH=\"$PATH\" HOME=\"$HOME\" ${{DOCKER_HOST:+DOCKER_HOST=\"$DOCKER_HOST\"}} {}",
        c.shell()
    )
}

/// Runs compose (with [`compose_cmd`]) in the deploy root with `args`, hiding its "variable is
/// not set" warnings: they quote the text after a `$` in a `.env` value, which may be part of a
/// secret (a line the server kept from before this tool wrote `.env` exactly).
pub fn compose(env: &Env, c: Compose, args: &str) -> String {
    format!(
        "cd {} && o=$({} -f {COMPOSE_FILE} {args} 2>&1); rc=$?; printf '%s\\n' \"$o\" | sed 's/^.*variable is not set.*$/{HIDDEN}/'; exit \"$rc\"",
        q(&env.remote_dir),
        compose_cmd(c)
    )
}

/// What replaces a compose warning about an unset variable.
pub const HIDDEN: &str =
    "(compose warned that a variable is not set; hidden: it may quote part of a secret)";

/// `compose up -d` in the deploy root (the version comes from `.env`'s IMAGE_TAG; the server's
/// login environment does not take part in the interpolation).
pub fn up(env: &Env, c: Compose) -> String {
    compose(env, c, "up -d")
}

/// `compose down` in the deploy root.
pub fn down(env: &Env, c: Compose) -> String {
    compose(env, c, "down --timeout 10")
}

/// Keeps the current `.env` as `.env.prev` (restored when the new version does not take over).
pub fn keep_env(env: &Env) -> String {
    format!(
        "cd {} && if [ -f .env ]; then cp -p .env .env.prev; else rm -f .env.prev; fi",
        q(&env.remote_dir)
    )
}

/// Puts `.env.prev` back.
pub fn restore_env(env: &Env) -> String {
    format!(
        "cd {} && if [ -f .env.prev ]; then mv -f .env.prev .env; fi",
        q(&env.remote_dir)
    )
}

/// The container's last 50 log lines.
pub fn logs() -> String {
    format!("docker logs --tail 50 {CONTAINER} 2>&1")
}

/// Lists the repository's images as `TAG CREATED` lines.
pub fn images(env: &Env) -> String {
    format!(
        "docker images --format '{{{{.Tag}}}} {{{{.CreatedAt}}}}' {}",
        q(&env.repo())
    )
}

/// Removes the given images (errors ignored: an image in use stays).
pub fn rmi(env: &Env, tags: &[String]) -> String {
    let args: Vec<String> = tags.iter().map(|t| q(&env.image(t))).collect();
    format!("docker rmi {} >/dev/null 2>&1 || true", args.join(" "))
}

/// The images to remove from an [`images`] listing: keep the newest `keep` version tags plus
/// the `protect`ed ones (running, last good).
pub fn prune_candidates(listing: &str, keep: usize, protect: &[&str]) -> Vec<String> {
    let mut tags: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(t, _)| *t != "<none>" && version::is_valid(t))
        .collect();
    tags.sort_by(|a, b| b.1.cmp(a.1));
    tags.iter()
        .skip(keep)
        .map(|(t, _)| t.to_string())
        .filter(|t| !protect.contains(&t.as_str()))
        .collect()
}

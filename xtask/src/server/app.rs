//! The application on the server: uploads, the mounted folders, pull, compose up/down, logs and
//! image pruning.

use super::q;
use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::{COMPOSE_FILE, CONTAINER, PROJECT, QTS_UID};
use crate::core::version;

/// Writes stdin to `<remote_dir>/<name>` atomically (temp file + rename) with `mode` (octal).
pub fn upload(env: &Env, name: &str, mode: &str) -> String {
    let dst = q(&format!("{}/{name}", env.remote_dir));
    let tmp = q(&format!("{}/.{name}.tmp", env.remote_dir));
    format!("umask 077 && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {dst}")
}

/// Logs in (user and token on stdin, when `login`), pulls `image` and prints its RepoDigests.
pub fn pull(env: &Env, image: &str, login: bool) -> String {
    let login = if login {
        format!(
            "read -r u && docker login --username \"$u\" --password-stdin {} >/dev/null && ",
            q(&env.registry)
        )
    } else {
        String::new()
    };
    format!("{login}docker pull -q {img} >/dev/null && docker image inspect --format '{{{{json .RepoDigests}}}}' {img}", img = q(image))
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

/// The server's `.env` for compose: project, image, port, interval, and the given secrets
/// (name, value). Values with a newline cannot be represented and are refused by the caller.
pub fn env_file(env: &Env, version: &str, secrets: &[(&str, String)]) -> String {
    let mut s = format!(
        "COMPOSE_PROJECT_NAME={PROJECT}\nIMAGE_REPO={}\nIMAGE_TAG={version}\nOBSERVER_HOST_PORT={}\nOBSERVER_INTERVAL_MS={}\n",
        env.repo(),
        env.cfg.host_port,
        env.cfg.interval_ms
    );
    for (name, v) in secrets {
        s.push_str(&format!("{name}={v}\n"));
    }
    s
}

/// `compose up -d` in the deploy root (the version comes from `.env`'s IMAGE_TAG; the server's
/// login environment does not take part in the interpolation).
pub fn up(env: &Env, c: Compose) -> String {
    format!(
        "cd {} && {} -f {COMPOSE_FILE} up -d 2>&1",
        q(&env.remote_dir),
        super::handoff::compose_cmd(c)
    )
}

/// `compose down` in the deploy root.
pub fn down(env: &Env, c: Compose) -> String {
    format!(
        "cd {} && {} -f {COMPOSE_FILE} down --timeout 10 2>&1",
        q(&env.remote_dir),
        super::handoff::compose_cmd(c)
    )
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

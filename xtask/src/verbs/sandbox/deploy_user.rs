//! The sandbox server's non-root deploy user (issue 13 item 3): production's deploy user is in the
//! `docker` group, not root, while the deployed data belongs to uid 10001. `up` (as root) creates
//! `observer-deploy` (a system user in group `docker`, the sandbox's authorized key through the
//! shared `AuthorizedKeysFile`, `AllowUsers`), its deploy root owned by it with `config/ logs/
//! data/` owned by 10001, and its backups folder; `XTASK_SANDBOX_NONROOT=1` makes the sandbox
//! environment connect as it. `down` stops its observer and removes what `up` created.

use crate::core::contract::QTS_UID;
use crate::core::util::is_root;
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, State, DEPLOY_USER};
use anyhow::{Context, Result};
use std::fs;
use xshell::cmd;

/// Creates the user (when absent) and its folders; records it in `st`. Not root: says so and
/// creates nothing (the non-root end-to-end tests need it).
pub fn ensure(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    if !is_root() {
        eprintln!("sandbox: not root, so no non-root deploy user ({DEPLOY_USER}) is created");
        return Ok(());
    }
    if !sh.ok(cmd!(sh, "id -u {DEPLOY_USER}")) {
        let home = p.nonroot().join("home");
        // `*`, not a locked `!`: sshd (UsePAM no) refuses a locked account even with a key.
        sh.read(cmd!(
            sh,
            "useradd --system --user-group --groups docker --shell /bin/sh --no-create-home --home-dir {home} --password * {DEPLOY_USER}"
        ))
        .with_context(|| format!("creating the sandbox's deploy user {DEPLOY_USER}"))?;
        st.deploy_user_created = true;
    } else {
        sh.read(cmd!(sh, "usermod -aG docker {DEPLOY_USER}"))
            .with_context(|| format!("adding {DEPLOY_USER} to the docker group"))?;
    }
    st.deploy_user = DEPLOY_USER.to_string();
    let n = p.nonroot();
    let root = n.join("observer");
    for d in [
        n.join("home"),
        n.join("backups"),
        root.join("config/observer"),
        root.join("logs"),
        root.join("data"),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let owner = format!("{DEPLOY_USER}:{DEPLOY_USER}");
    let qts = format!("{QTS_UID}:{QTS_UID}");
    let (home, backups) = (n.join("home"), n.join("backups"));
    sh.read(cmd!(sh, "chown {owner} {home} {backups} {root}"))
        .context("giving the non-root deploy root to its user")?;
    let (config, logs, data) = (root.join("config"), root.join("logs"), root.join("data"));
    sh.read(cmd!(sh, "chown -R {qts} {config} {logs} {data}"))
        .context("giving config/ logs/ data/ to uid 10001")?;
    Ok(())
}

/// Stops the observer the user deployed (compose down in its deploy root); after sshd stopped,
/// removes its folders and, when `up` created it, the user.
pub fn remove(sh: &Ctx, p: &Paths, st: &mut State) {
    if st.deploy_user.is_empty() {
        return;
    }
    super::compose_down(sh, &p.nonroot().join("observer"));
    let n = p.nonroot();
    if let Err(e) = fs::remove_dir_all(&n) {
        if n.exists() {
            eprintln!("sandbox: could not remove {}: {e}", n.display());
        }
    }
    if st.deploy_user_created {
        let user = &st.deploy_user;
        match sh.capture(cmd!(sh, "userdel {user}"), None) {
            Ok(o) if o.ok => eprintln!("deploy user {user}: removed"),
            Ok(o) => eprintln!("deploy user {user}: not removed: {}", o.stderr.trim()),
            Err(e) => eprintln!("deploy user {user}: not removed: {e:#}"),
        }
        st.deploy_user_created = false;
    }
    st.deploy_user.clear();
}

//! `cargo xtask setup [--env NAME] [--dry-run]`: prepares a provisioned server over SSH (issue
//! 15). One read-only check (`server::setup::check`), then [`decide`]: what the deploy user may
//! do itself (create the deploy root, `.deploy/` and the backups folder, mode 0750; take group
//! and world write off its own folders) it does; what only root can (a folder it cannot create
//! or that is someone else's, compose v2 or zstd missing, not in the `docker` group, docker not
//! answering) it names, with the exact `scripts/provision-server.sh` command and the equivalent
//! lines, changes NOTHING and exits 1. A second run finds nothing to do and says so.

use crate::config::{self, Env, Server};
use crate::core::exit::{fail, usage};
use crate::core::util::sh_quote;
use crate::ctx::Ctx;
use crate::ops;
use crate::plan::{Executor, Step};
use crate::server::setup::{self as ss, Action, Facts, State};
use anyhow::Result;
use clap::Args;

/// The mode setup gives the folders it creates (as `scripts/provision-server.sh` does).
pub const MODE: u32 = 0o750;
/// Free space under which setup warns (KiB): 1 GiB.
pub const LOW_DISK_KB: u64 = 1 << 20;

#[derive(Args)]
#[command(after_help = "Exit codes:
  0  the server is ready (what the deploy user could do was done; or nothing was to do)
  1  something only root can provide is missing: printed with the provision-server.sh command
     to run as root; nothing was changed (or a step failed)
  2  bad usage or an invalid config (nothing touched)")]
pub struct Setup {
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production")]
    env: String,
    /// Check and print what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Something only root can provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub what: String,
    /// The lines root runs for it (on the server).
    pub root_lines: Vec<String>,
}

/// What setup found and decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// What is already right, one line each.
    pub ok: Vec<String>,
    /// What the connecting user does itself (none is done when `needs` is not empty).
    pub actions: Vec<Action>,
    pub needs: Vec<Need>,
    pub warnings: Vec<String>,
}

/// Decides from the facts, for the deploy user `user` (the environment's, as connected).
pub fn decide(f: &Facts) -> Verdict {
    let mut v = Verdict::default();
    let root = f.uid == 0;
    let who = if f.user.is_empty() {
        "the deploy user"
    } else {
        &f.user
    };
    let group = if f.group.is_empty() { who } else { &f.group };
    // Tools.
    if f.compose.trim_start_matches('v').starts_with('2') {
        v.ok.push(format!("compose v2 {}", f.compose));
    } else {
        v.needs.push(Need {
            what: "compose v2 (`docker compose`) is missing".into(),
            root_lines: vec![
                "apt-get install -y docker-compose-plugin   # Docker's apt repository".into(),
            ],
        });
    }
    if f.zstd.is_empty() {
        v.needs.push(Need {
            what: "zstd is missing (snapshots are compressed on the server)".into(),
            root_lines: vec!["apt-get install -y zstd".into()],
        });
    } else {
        v.ok.push(format!("zstd {}", f.zstd));
    }
    let in_group = f.groups.iter().any(|g| g == "docker");
    if !root && !in_group {
        v.needs.push(Need {
            what: format!("{who} is not in the docker group"),
            root_lines: vec![format!("usermod -aG docker {}", sh_quote(who))],
        });
    } else if f.docker.is_empty() {
        v.needs.push(Need {
            what: format!("the docker daemon does not answer {who} (`docker version` fails)"),
            root_lines: vec!["systemctl enable --now docker".into()],
        });
    } else {
        v.ok.push(format!(
            "docker {} answers {who}{}",
            f.docker,
            if root {
                " (root)"
            } else {
                " (in the docker group)"
            }
        ));
    }
    // Folders: the deploy root first, then `.deploy/` in it, then the backups folder.
    let mut root_dir_ready = false;
    for d in &f.dirs {
        let install = format!(
            "install -d -o {} -g {} -m {MODE:o} {}",
            sh_quote(who),
            sh_quote(group),
            sh_quote(&d.path)
        );
        // `.deploy/` is creatable when the deploy root will be this user's.
        let creatable = d.ancestor_writable || (d.key == "deploy" && root_dir_ready);
        let ready = match &d.state {
            State::Missing if creatable => {
                v.actions.push(Action::Create {
                    path: d.path.clone(),
                    mode: MODE,
                });
                true
            }
            State::Missing => {
                v.needs.push(Need {
                    what: format!(
                        "{} is missing and {who} may not create it ({} is not writable by {who})",
                        d.path, d.ancestor
                    ),
                    root_lines: vec![install],
                });
                false
            }
            State::Symlink | State::Other => {
                v.needs.push(Need {
                    what: format!(
                        "{} is {} (provision-server.sh refuses it too): move it aside, or point the environment at a folder",
                        d.path,
                        if d.state == State::Symlink { "a symlink" } else { "not a folder" }
                    ),
                    root_lines: vec![format!("mv {p} {p}.aside", p = sh_quote(&d.path)), install],
                });
                false
            }
            State::Dir {
                uid,
                gid,
                mode,
                writable,
            } => {
                let mine = *uid == f.uid;
                let want = (mode & !0o022) | 0o700;
                if mode & 0o1002 == 0o1002 {
                    // A shared scratch folder (world-writable and sticky: /tmp, /var/tmp):
                    // tightening or taking it would break every other user of the host.
                    v.needs.push(Need {
                        what: format!(
                            "{} is a shared folder (world-writable, sticky bit): setup neither changes nor takes it; point the environment at a folder of its own",
                            d.path
                        ),
                        root_lines: vec![],
                    });
                    false
                } else if !mine && !root {
                    v.needs.push(Need {
                        what: format!("{} belongs to uid {uid}, not {who} (uid {})", d.path, f.uid),
                        root_lines: vec![install],
                    });
                    false
                } else if !writable && !root {
                    v.needs.push(Need {
                        what: format!("{} is not writable by {who}", d.path),
                        root_lines: vec![install],
                    });
                    false
                } else {
                    if !mine || (*gid != f.gid && root) {
                        v.actions.push(Action::Chown {
                            path: d.path.clone(),
                            uid: f.uid,
                            gid: f.gid,
                        });
                    }
                    if want != *mode {
                        v.actions.push(Action::Chmod {
                            path: d.path.clone(),
                            mode: want,
                        });
                    } else if mine {
                        v.ok.push(format!("{} ({who}, mode {mode:o})", d.path));
                    }
                    true
                }
            }
        };
        if d.key == "root" {
            root_dir_ready = ready;
        }
        match d.free_kb {
            Some(kb) if kb < LOW_DISK_KB => v.warnings.push(format!(
                "only {} MiB free for {} (on {})",
                kb / 1024,
                d.path,
                d.ancestor
            )),
            Some(kb) if d.key != "deploy" => {
                v.ok.push(format!("{} MiB free for {}", kb / 1024, d.path))
            }
            _ => {}
        }
    }
    v
}

/// What root runs: the provision command (its flags from the environment) and the lines.
pub fn provision_text(env: &Env, server: &Server, user: &str, needs: &[Need]) -> String {
    let port = if server.port == 22 {
        String::new()
    } else {
        format!(" -P {}", server.port)
    };
    let ssh_port = if server.port == 22 {
        String::new()
    } else {
        format!(" -p {}", server.port)
    };
    let dest = format!("{}@{}", server.user, server.host);
    let mut s = format!(
        "run scripts/provision-server.sh as root on the server (it does all of it, idempotently):\n  scp{port} scripts/provision-server.sh {dest}:/tmp/provision-server.sh\n  ssh -t{ssh_port} {dest} sudo bash /tmp/provision-server.sh --deploy-root {} --backups-dir {} {}\nor, as root on the server, exactly:\n",
        sh_quote(&env.remote_dir),
        sh_quote(&env.backups_dir),
        sh_quote(user)
    );
    let mut lines: Vec<&String> = Vec::new();
    for n in needs {
        for l in &n.root_lines {
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
    }
    for l in lines {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str("then run `cargo xtask setup` again");
    s
}

fn check(x: &mut Executor, env: &Env, server: &str) -> Result<Facts> {
    let step = Step::remote(
        "setup-check",
        "Check the server (user, docker, compose v2, zstd, folders, disk)",
        server,
        ss::check(env),
    )
    .read_only();
    Ok(ss::parse(env, &x.run_step(&step)?.stdout))
}

impl Setup {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if env.is_swarm() {
            return Err(usage(format!(
                "{}: setup prepares one compose server; a swarm's manager is prepared by hand (README \"Swarm\")",
                env.name
            )));
        }
        let (mut x, server) = ops::connect(sh, &env, self.dry_run)?;
        let facts = check(&mut x, &env, &server.name)?;
        let v = decide(&facts);
        println!(
            "setup {} ({}@{}:{}): deploy user {} (uid {}, group {})",
            env.name, server.user, server.host, server.port, facts.user, facts.uid, facts.group
        );
        for l in &v.ok {
            println!("ok      {l}");
        }
        for w in &v.warnings {
            println!("warning {w}");
        }
        if !v.needs.is_empty() {
            for n in &v.needs {
                println!("MISSING {}", n.what);
            }
            for a in &v.actions {
                println!("not done (root first) {}", a.describe());
            }
            // A need without root lines (a shared folder) is the environment's to fix: no
            // provision command for it (provision-server.sh refuses such a folder too).
            if v.needs.iter().any(|n| !n.root_lines.is_empty()) {
                println!("{}", provision_text(&env, &server, &facts.user, &v.needs));
            }
            return Err(fail(format!(
                "setup: {} thing(s) need root on {} (listed above); nothing was changed",
                v.needs.len(),
                server.name
            )));
        }
        if v.actions.is_empty() {
            println!("nothing to do: the server is ready");
            return Ok(());
        }
        let step = Step::remote(
            "setup-apply",
            format!("Prepare {} folder(s)", v.actions.len()),
            &server.name,
            ss::apply(&v.actions),
        );
        x.run_step(&step)?;
        if self.dry_run {
            for a in &v.actions {
                println!("would {}", a.describe());
            }
            return Ok(());
        }
        for a in &v.actions {
            println!("done    {}", a.describe());
        }
        // Checked again: what setup did must now read as ready.
        let after = decide(&check(&mut x, &env, &server.name)?);
        if !after.actions.is_empty() || !after.needs.is_empty() {
            return Err(fail(format!(
                "setup made its changes, but the server still does not read as ready: {}",
                after
                    .actions
                    .iter()
                    .map(Action::describe)
                    .chain(after.needs.iter().map(|n| n.what.clone()))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        println!("ready: deploy as {} to {}", facts.user, env.remote_dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

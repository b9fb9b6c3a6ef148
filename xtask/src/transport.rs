//! Layer 2: the way processes reach the server. The system OpenSSH client, one multiplexed
//! connection per server per run: a ControlMaster is opened once (BatchMode,
//! StrictHostKeyChecking=yes, a pinned known_hosts) and every remote script is a session over it.
//! The control socket and any key copy live in a private (0700) directory removed on drop.
//! Processes are started with `duct`: stdin is closed (`-n`) unless data is fed on purpose, and
//! nothing here starts a process through `std::process::Command` directly.

use crate::config::{Env, Server};
use crate::core::signals;
use crate::core::util::{env_nonempty, random_hex, tail};
use crate::ctx::Output;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct Session {
    server: Server,
    known_hosts: PathBuf,
    identity: Option<PathBuf>,
    dir: PathBuf,
    opened: bool,
    /// Connections opened (for tests and benchmarks: must stay 1).
    pub connections: u32,
}

fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content)?;
    Ok(())
}

impl Session {
    /// Prepares (does not open) the session: the private directory, the pinned known_hosts
    /// (`DEPLOY_KNOWN_HOSTS` or the environment's file) and the key (`DEPLOY_SSH_KEY`, the
    /// environment's identity, or the agent). Fails when no pinned host key exists.
    pub fn new(env: &Env, server: &Server) -> Result<Session> {
        let dir = std::env::temp_dir().join(format!("obs-ssh-{}", random_hex(6)?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the private SSH directory {}", dir.display()))?;
        let known_hosts = match env_nonempty("DEPLOY_KNOWN_HOSTS") {
            Some(content) => {
                let p = dir.join("known_hosts");
                write_private(&p, format!("{}\n", content.trim_end()).as_bytes())?;
                p
            }
            None => env.known_hosts.clone(),
        };
        if !known_hosts.is_file() {
            let _ = fs::remove_dir_all(&dir);
            bail!(
                "no pinned host key: {} does not exist (set DEPLOY_KNOWN_HOSTS or the environment's \
                 known_hosts; host-key checking is never turned off)",
                known_hosts.display()
            );
        }
        let identity = match env_nonempty("DEPLOY_SSH_KEY") {
            Some(key) => {
                let p = dir.join("id");
                write_private(&p, format!("{}\n", key.trim_end()).as_bytes())?;
                Some(p)
            }
            None => env.identity.clone(),
        };
        Ok(Session {
            server: server.clone(),
            known_hosts,
            identity,
            dir,
            opened: false,
            connections: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.server.name
    }

    pub fn destination(&self) -> String {
        format!("{}@{}", self.server.user, self.server.host)
    }

    /// The options every ssh invocation shares.
    pub fn options(&self) -> Vec<String> {
        let mut o: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.push("-o".into());
        o.push(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        o.push("-o".into());
        o.push(format!("ControlPath={}", self.dir.join("cm").display()));
        o.push("-p".into());
        o.push(self.server.port.to_string());
        if let Some(id) = &self.identity {
            o.extend([
                "-i".into(),
                id.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        o
    }

    /// Opens the one connection (ControlMaster). Host-key and authentication failures are
    /// reported as such.
    pub fn open(&mut self) -> Result<()> {
        if self.opened {
            return Ok(());
        }
        let log = self.dir.join("master.log");
        // A measuring hook (issue 13, `bench snapshot`): the connection's own transfer totals
        // ("Transferred: sent N, received M bytes"), logged by the master when it exits. ssh
        // takes an option's first value, so this LogLevel precedes the shared one.
        let mut args: Vec<String> = match env_nonempty("XTASK_SSH_TRANSFER_LOG") {
            Some(f) => vec!["-E".into(), f, "-o".into(), "LogLevel=VERBOSE".into()],
            None => vec![],
        };
        args.extend(self.options());
        args.extend(
            ["-M", "-N", "-f", "-o", "ControlPersist=60"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(self.destination());
        let out = duct::cmd("ssh", &args)
            .stdin_null()
            .stdout_null()
            .stderr_path(&log)
            .unchecked()
            .before_spawn(own_group)
            .run()
            .context("starting ssh (is the OpenSSH client installed?)")?;
        self.connections += 1;
        if !out.status.success() {
            let msg = fs::read_to_string(&log).unwrap_or_default();
            let why = if msg.contains("HOST IDENTIFICATION HAS CHANGED")
                || msg.contains("Host key verification failed")
                || msg.contains("No ED25519 host key is known")
                || msg.contains("host key for")
            {
                "the server's host key does not match the pinned known_hosts (refusing to connect)"
            } else if msg.contains("Permission denied") {
                "authentication failed: the SSH key was refused"
            } else {
                "the connection failed"
            };
            bail!(
                "ssh to {} ({}:{}): {why}\n{}",
                self.server.name,
                self.server.host,
                self.server.port,
                tail(msg.trim(), 5)
            );
        }
        self.opened = true;
        Ok(())
    }

    /// A remote script as a `duct` expression over the shared connection (opened first), for
    /// callers that stream. With `stdin` false, ssh gets `-n` so it cannot swallow ours. With
    /// `XTASK_REMOTE_PATH` set (tests only), the script runs with that `PATH` on the server.
    pub fn expr(&mut self, script: &str, stdin: bool) -> Result<duct::Expression> {
        self.open()?;
        let mut args = self.options();
        args.extend(
            ["-o", "ControlMaster=no", "-T"]
                .iter()
                .map(|s| s.to_string()),
        );
        if !stdin {
            args.push("-n".into());
        }
        args.push(self.destination());
        args.push("--".into());
        args.push(match env_nonempty("XTASK_REMOTE_PATH") {
            // A test hook (issue 13): the remote shell's PATH, e.g. one without zstd.
            Some(path) => format!(
                "PATH={}; export PATH; {script}",
                crate::core::util::sh_quote(&path)
            ),
            None => script.to_string(),
        });
        let e = duct::cmd("ssh", args).unchecked().before_spawn(own_group);
        Ok(if stdin { e } else { e.stdin_null() })
    }

    /// A remote script with a terminal (`ssh -t`) over the shared connection, for an interactive
    /// command (`exec -i`). ssh stays in the tool's process group: it owns the terminal (raw mode;
    /// Ctrl-C reaches the remote command as a keystroke).
    pub fn expr_tty(&mut self, script: &str) -> Result<duct::Expression> {
        self.open()?;
        let mut args = self.options();
        args.extend(
            ["-o", "ControlMaster=no", "-t"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(self.destination());
        args.push("--".into());
        args.push(script.to_string());
        Ok(duct::cmd("ssh", args).unchecked())
    }

    /// Runs a script on the server to completion, feeding `stdin` when given; the output whatever
    /// the exit status.
    pub fn run(&mut self, script: &str, stdin: Option<&[u8]>) -> Result<Output> {
        let e = self.expr(script, stdin.is_some())?;
        let e = match stdin {
            Some(d) => e.stdin_bytes(d.to_vec()),
            None => e,
        };
        let what = || format!("running a command on {}", self.server.name);
        // Polled rather than waited for, so that a second SIGINT/SIGTERM (`core::signals`) can cut
        // the command short; the first lets it finish.
        let started_at = signals::generation();
        let handle = e
            .stdout_capture()
            .stderr_capture()
            .start()
            .with_context(what)?;
        loop {
            if let Some(out) = handle.try_wait().with_context(what)? {
                return Ok(Output::from_std(out));
            }
            let now = signals::generation();
            if now >= 2 && now > started_at {
                let _ = handle.kill();
                bail!(
                    "cut short on {} by a second signal (the remote command may still be running there)",
                    self.server.name
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.opened {
            let mut args = self.options();
            args.extend(["-O", "exit"].iter().map(|s| s.to_string()));
            args.push(self.destination());
            let _ = duct::cmd("ssh", args)
                .stdin_null()
                .stdout_null()
                .stderr_null()
                .unchecked()
                .run();
            // With the measuring hook, wait (at most 5 s) for the master's last line.
            if let Some(f) = env_nonempty("XTASK_SSH_TRANSFER_LOG") {
                for _ in 0..100 {
                    let text = fs::read_to_string(&f).unwrap_or_default();
                    if text.matches("Transferred: sent").count() >= self.connections as usize {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts ssh in a process group of its own: a terminal's Ctrl-C reaches the tool only, which
/// lets the step in flight finish (`core::signals`) instead of its ssh dying under it.
fn own_group(c: &mut std::process::Command) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    Ok(())
}

/// Starts a long-running local daemon in its own process group (so a terminal's Ctrl-C does not
/// reach it), stdin closed, output appended to `log`; returns its pid.
pub fn spawn_daemon(program: &Path, args: &[String], log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let logf = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let handle = duct::cmd(program, args)
        .stdin_null()
        .stdout_file(logf.try_clone()?)
        .stderr_file(logf)
        .unchecked()
        .before_spawn(|c| {
            c.process_group(0);
            // A daemon must not keep descriptors it inherited (a caller's `flock` on a lock
            // file, a pipe a test reads to EOF): close everything above stderr before exec.
            // SAFETY: only close(2), which is async-signal-safe, runs between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    for fd in 3..4096 {
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
            Ok(())
        })
        .start()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = handle.pids()[0];
    std::mem::forget(handle);
    Ok(pid)
}

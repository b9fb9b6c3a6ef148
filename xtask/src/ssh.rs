//! The system OpenSSH client, one multiplexed connection per server per run: a ControlMaster is
//! opened once (BatchMode, StrictHostKeyChecking=yes, a pinned known_hosts) and every remote step
//! is a session over it. The control socket lives in a private (0700) directory. stdin is closed
//! unless a step feeds data on purpose.

use crate::config::{Env, Server};
use crate::shell::{env_nonempty, random_hex, run_capture, Output};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    pub fn new(env: &Env, server: &Server) -> Result<Session> {
        let dir = std::env::temp_dir().join(format!("obs-ssh-{}", random_hex(6)?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the private SSH directory {}", dir.display()))?;
        // DEPLOY_KNOWN_HOSTS holds the pinned known_hosts content (GitHub Actions secret).
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
        // DEPLOY_SSH_KEY holds a private key; otherwise the agent or the configured identity.
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
        let logf = fs::File::create(&log)?;
        let status = Command::new("ssh")
            .args(self.options())
            .args(["-M", "-N", "-f", "-o", "ControlPersist=60"])
            .arg(self.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .status()
            .context("starting ssh (is the OpenSSH client installed?)")?;
        self.connections += 1;
        if !status.success() {
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
                crate::plan::tail(msg.trim(), 5)
            );
        }
        self.opened = true;
        Ok(())
    }

    /// Runs a script on the server over the shared connection.
    pub fn run(&mut self, script: &str, stdin: Option<&[u8]>) -> Result<Output> {
        let mut c = self.command(script, stdin.is_some())?;
        run_capture(&mut c, stdin)
            .with_context(|| format!("running a command on {}", self.server.name))
    }

    /// A session over the shared connection, for callers that stream (snapshots). Without
    /// `stdin`, ssh gets `-n` so it cannot swallow ours.
    pub fn command(&mut self, script: &str, stdin: bool) -> Result<Command> {
        self.open()?;
        let mut c = Command::new("ssh");
        c.args(self.options())
            .args(["-o", "ControlMaster=no", "-T"])
            .stdin(Stdio::null());
        if !stdin {
            c.arg("-n");
        }
        c.arg(self.destination()).arg("--").arg(script);
        Ok(c)
    }

    pub fn close(self) {
        drop(self)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.opened {
            let _ = Command::new("ssh")
                .args(self.options())
                .args(["-O", "exit"])
                .arg(self.destination())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! Plan, then execute. A verb builds a `Plan` (the ordered commands, each with the host it runs
//! on) as data; one `Executor` runs steps, prints a header with the elapsed time per step, and
//! with `--dry-run` prints the plan instead of running anything that changes state.

use crate::shell::{run_capture, sh_quote, Output, Shell};
use crate::ssh;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Local,
    /// A server by its configured name.
    Server(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// argv of a local program: never through a shell.
    Local(Vec<String>),
    /// A POSIX shell script run on a server; every interpolated value is validated or quoted.
    Remote(String),
}

#[derive(Clone, PartialEq, Eq)]
pub enum Input {
    None,
    /// Bytes fed on stdin that must never be printed (passwords, `.env` contents).
    Secret(Vec<u8>),
    /// Ordinary data fed on stdin (a file upload, a record).
    Data(Vec<u8>),
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::None => f.write_str("None"),
            Input::Secret(_) => f.write_str("Secret(<hidden>)"),
            Input::Data(d) => write!(f, "Data({} bytes)", d.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Stable identifier that verbs and tests refer to.
    pub id: &'static str,
    pub title: String,
    pub host: Host,
    pub cmd: Cmd,
    pub input: Input,
    /// Whether running the step changes anything (skipped by `--dry-run`).
    pub mutates: bool,
}

impl Step {
    pub fn local(id: &'static str, title: impl Into<String>, argv: &[&str]) -> Step {
        Step {
            id,
            title: title.into(),
            host: Host::Local,
            cmd: Cmd::Local(argv.iter().map(|s| s.to_string()).collect()),
            input: Input::None,
            mutates: true,
        }
    }
    pub fn remote(
        id: &'static str,
        title: impl Into<String>,
        server: &str,
        script: String,
    ) -> Step {
        Step {
            id,
            title: title.into(),
            host: Host::Server(server.to_string()),
            cmd: Cmd::Remote(script),
            input: Input::None,
            mutates: true,
        }
    }
    pub fn read_only(mut self) -> Step {
        self.mutates = false;
        self
    }
    pub fn secret_stdin(mut self, data: Vec<u8>) -> Step {
        self.input = Input::Secret(data);
        self
    }
    pub fn data_stdin(mut self, data: Vec<u8>) -> Step {
        self.input = Input::Data(data);
        self
    }
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn argv(&self) -> Vec<&str> {
        match &self.cmd {
            Cmd::Local(a) => a.iter().map(|s| s.as_str()).collect(),
            Cmd::Remote(s) => vec![s.as_str()],
        }
    }
    /// How the step is shown: the exact command, with the host it runs on.
    pub fn render(&self) -> String {
        let cmd = match &self.cmd {
            Cmd::Local(a) => a.iter().map(|s| sh_quote(s)).collect::<Vec<_>>().join(" "),
            Cmd::Remote(s) => s.clone(),
        };
        let host = match &self.host {
            Host::Local => "local".to_string(),
            Host::Server(s) => s.clone(),
        };
        let stdin = match &self.input {
            Input::None => String::new(),
            Input::Secret(_) => "  < (secret on stdin)".to_string(),
            Input::Data(d) => format!("  < ({} bytes on stdin)", d.len()),
        };
        format!("[{host}] {cmd}{stdin}")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn ids(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.id).collect()
    }
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn get(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
    pub fn print(&self, sh: &Shell) {
        for (i, s) in self.steps.iter().enumerate() {
            let ro = if s.mutates { "" } else { " (read-only)" };
            eprintln!(
                "{:>2}. {}{ro}\n    {}",
                i + 1,
                s.title,
                sh.mask(&s.render())
            );
        }
    }
}

/// Runs steps: local ones directly, remote ones over one multiplexed SSH connection per server.
pub struct Executor<'a> {
    pub sh: &'a Shell,
    pub dry_run: bool,
    servers: BTreeMap<String, ssh::Session>,
    /// (step title, seconds) in the order run.
    pub timings: Vec<(String, f64)>,
}

impl<'a> Executor<'a> {
    pub fn new(sh: &'a Shell, dry_run: bool) -> Executor<'a> {
        Executor {
            sh,
            dry_run,
            servers: BTreeMap::new(),
            timings: Vec::new(),
        }
    }

    pub fn add_server(&mut self, session: ssh::Session) {
        self.servers.insert(session.name().to_string(), session);
    }

    pub fn session(&mut self, name: &str) -> Result<&mut ssh::Session> {
        self.servers
            .get_mut(name)
            .with_context(|| format!("no SSH session for server `{name}`"))
    }

    /// Runs one step and returns its output, whatever its exit status. Under `--dry-run` a
    /// mutating step is only printed (and reported as succeeded with empty output).
    pub fn exec(&mut self, step: &Step) -> Result<Output> {
        if self.dry_run && step.mutates {
            eprintln!("    would run: {}", self.sh.mask(&step.render()));
            return Ok(Output {
                ok: true,
                code: Some(0),
                stdout: String::new(),
                stderr: String::new(),
            });
        }
        let stdin = match &step.input {
            Input::None => None,
            Input::Secret(d) | Input::Data(d) => Some(d.as_slice()),
        };
        match (&step.host, &step.cmd) {
            (Host::Local, Cmd::Local(argv)) => {
                let mut c = self.sh.cmd(&argv[0]);
                c.args(&argv[1..]);
                run_capture(&mut c, stdin).with_context(|| format!("running `{}`", argv[0]))
            }
            (Host::Server(name), Cmd::Remote(script)) => {
                let session = self.session(name)?;
                session.run(script, stdin)
            }
            _ => anyhow::bail!("step `{}`: a local command needs Host::Local", step.id),
        }
    }

    /// Runs one step; a non-zero exit is an error that names the step, the command and its
    /// (masked) output.
    pub fn run(&mut self, step: &Step) -> Result<Output> {
        let out = self.exec(step)?;
        if !out.ok {
            let detail = [out.stderr.trim(), out.stdout.trim()]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| tail(s, 20))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(anyhow::anyhow!(
                "{} failed (exit {}):\n    {}\n{}",
                step.title,
                out.code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "by signal".into()),
                self.sh.mask(&step.render()),
                self.sh.mask(&detail)
            ));
        }
        Ok(out)
    }

    /// Runs one step under its own header.
    pub fn run_step(&mut self, step: &Step) -> Result<Output> {
        self.step(&step.title, |x| x.run(step))
    }

    /// A step header with its elapsed time: `==> title` ... `    done in 1.2s`.
    pub fn step<T>(&mut self, title: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.sh.gha {
            println!("::group::{title}");
        }
        eprintln!("==> {title}");
        let t = Instant::now();
        let r = f(self);
        let secs = t.elapsed().as_secs_f64();
        self.timings.push((title.to_string(), secs));
        match &r {
            Ok(_) => eprintln!("    ok ({secs:.1}s)"),
            Err(_) => eprintln!("    FAILED ({secs:.1}s)"),
        }
        if self.sh.gha {
            println!("::endgroup::");
        }
        r
    }

    pub fn close(&mut self) {
        for (_, s) in std::mem::take(&mut self.servers) {
            s.close();
        }
    }
}

impl Drop for Executor<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_hides_secret_stdin_and_quotes_argv() {
        let s = Step::local(
            "login",
            "Log in",
            &["docker", "login", "--password-stdin", "a b"],
        )
        .secret_stdin(b"hunter2-token".to_vec());
        let r = s.render();
        assert_eq!(
            r,
            "[local] docker login --password-stdin 'a b'  < (secret on stdin)"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

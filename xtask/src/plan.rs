//! Layer 3: plan, then execute. A verb builds its steps as data (`Step`: id, title, host, exact
//! command, stdin); one `Executor` runs them through a `Transport`, prints a header with the
//! elapsed time per step (and GitHub Actions groups), masks secrets, and under `--dry-run` prints
//! a mutating step instead of running it. The real transport runs local steps through xshell and
//! remote ones over one multiplexed SSH session per server; unit tests substitute a fake that
//! answers by step id.

use crate::core::signals;
use crate::core::util::{sh_quote, tail};
use crate::ctx::{Ctx, Output, Verbosity};
use crate::transport::Session;
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
    /// Stable identifier that verbs, the fake transport and tests refer to.
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
    /// The remote script, or the local argv (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn argv(&self) -> Vec<&str> {
        match &self.cmd {
            Cmd::Local(a) => a.iter().map(|s| s.as_str()).collect(),
            Cmd::Remote(s) => vec![s.as_str()],
        }
    }
    /// The remote script ("" for a local step).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn script(&self) -> &str {
        match &self.cmd {
            Cmd::Remote(s) => s,
            Cmd::Local(_) => "",
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
    /// Prints every step, numbered, masked: what `--dry-run` shows.
    pub fn print(&self, sh: &Ctx) {
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

/// How steps reach their host. `exec` returns the output whatever the exit status.
pub trait Transport {
    fn exec(&mut self, sh: &Ctx, step: &Step) -> Result<Output>;
    /// A remote script as a duct expression over the server's one connection (streams).
    fn stream(&mut self, server: &str, script: &str, stdin: bool) -> Result<duct::Expression>;
    /// A remote script with a terminal (`ssh -t`), for an interactive command (`exec -i`).
    fn interactive(&mut self, server: &str, script: &str) -> Result<duct::Expression> {
        let _ = (server, script);
        anyhow::bail!("this transport offers no terminal")
    }
    /// SSH connections opened so far (must stay one per server).
    #[cfg_attr(not(test), allow(dead_code))]
    fn connections(&self) -> u32;
}

/// The real transport: local steps through xshell, remote ones over SSH sessions.
#[derive(Default)]
pub struct Real {
    servers: BTreeMap<String, Session>,
}

impl Real {
    pub fn with(session: Session) -> Real {
        let mut r = Real::default();
        r.servers.insert(session.name().to_string(), session);
        r
    }
    fn session(&mut self, name: &str) -> Result<&mut Session> {
        self.servers
            .get_mut(name)
            .with_context(|| format!("no SSH session for server `{name}`"))
    }
}

impl Transport for Real {
    fn exec(&mut self, sh: &Ctx, step: &Step) -> Result<Output> {
        let stdin = match &step.input {
            Input::None => None,
            Input::Secret(d) | Input::Data(d) => Some(d.as_slice()),
        };
        match (&step.host, &step.cmd) {
            (Host::Local, Cmd::Local(argv)) => sh.capture(sh.cmd(&argv[0]).args(&argv[1..]), stdin),
            (Host::Server(name), Cmd::Remote(script)) => self.session(name)?.run(script, stdin),
            _ => anyhow::bail!("step `{}`: a local command needs Host::Local", step.id),
        }
    }
    fn stream(&mut self, server: &str, script: &str, stdin: bool) -> Result<duct::Expression> {
        self.session(server)?.expr(script, stdin)
    }
    fn interactive(&mut self, server: &str, script: &str) -> Result<duct::Expression> {
        self.session(server)?.expr_tty(script)
    }
    fn connections(&self) -> u32 {
        self.servers.values().map(|s| s.connections).sum()
    }
}

/// The error of a run stopped by `sig` before the step titled `before` (exit code `128 + sig`).
pub fn interrupted(sig: i32, before: &str) -> anyhow::Error {
    crate::core::exit::exit_code(
        format!(
            "interrupted by {} before the step `{before}`: stopped there, before it started",
            signals::name(sig)
        ),
        signals::exit_code(sig),
    )
}

/// Runs steps and keeps their timings and the ids of the steps run under a header.
pub struct Executor<'a> {
    pub sh: &'a Ctx,
    pub dry_run: bool,
    transport: Box<dyn Transport + 'a>,
    /// (step title, seconds) in the order run.
    pub timings: Vec<(String, f64)>,
    /// The ids of the steps run through [`Executor::run_step`] / [`Executor::step_of`], in order.
    pub done: Vec<&'static str>,
    /// Whether a pending SIGINT/SIGTERM (`core::signals`) stops the run before the next step
    /// (the default). A rollout turns it off and decides itself, step by step, whether to undo
    /// or to finish (its cleanup steps must run).
    pub interruptible: bool,
}

impl<'a> Executor<'a> {
    pub fn new(sh: &'a Ctx, dry_run: bool, transport: Box<dyn Transport + 'a>) -> Executor<'a> {
        Executor {
            sh,
            dry_run,
            transport,
            timings: Vec::new(),
            done: Vec::new(),
            interruptible: true,
        }
    }

    /// A remote script as a duct expression over the server's connection (streams).
    pub fn stream(&mut self, server: &str, script: &str, stdin: bool) -> Result<duct::Expression> {
        if self.sh.verbosity == Verbosity::Verbose {
            eprintln!("    [{server}] $ {}", self.sh.mask(script));
        }
        self.transport.stream(server, script, stdin)
    }

    /// Under `-v`: the step's exact command (its script, masked; stdin only named), before it runs.
    fn show(&self, step: &Step) {
        if self.sh.verbosity == Verbosity::Verbose {
            eprintln!(
                "    $ {}",
                self.sh.mask(&step.render()).replace('\n', "\n      ")
            );
        }
    }

    /// A remote script with a terminal over the server's connection (`exec -i` on a terminal).
    pub fn interactive(&mut self, server: &str, script: &str) -> Result<duct::Expression> {
        self.transport.interactive(server, script)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn connections(&self) -> u32 {
        self.transport.connections()
    }

    /// Runs one step and returns its output, whatever its exit status. Under `--dry-run` a
    /// mutating step is only printed (and reported as succeeded with empty output).
    pub fn exec(&mut self, step: &Step) -> Result<Output> {
        if self.dry_run && step.mutates {
            eprintln!("    would run: {}", self.sh.mask(&step.render()));
            return Ok(Output {
                ok: true,
                code: Some(0),
                ..Output::default()
            });
        }
        self.show(step);
        self.transport.exec(self.sh, step)
    }

    /// Runs one step; a non-zero exit is an error that names the step, the command and its
    /// (masked) output.
    pub fn run(&mut self, step: &Step) -> Result<Output> {
        let out = self.exec(step)?;
        if !out.ok {
            return Err(anyhow::anyhow!(self.failure(step, &out)));
        }
        Ok(out)
    }

    /// The message for a failed step: title, exit status, masked command, masked output tail.
    pub fn failure(&self, step: &Step, out: &Output) -> String {
        let detail = [out.stderr.trim(), out.stdout.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| tail(s, 20))
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{} failed (exit {}):\n    {}\n{}",
            step.title,
            out.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by signal".into()),
            self.sh.mask(&step.render()),
            self.sh.mask(&detail)
        )
    }

    /// Runs one step under its own header.
    pub fn run_step(&mut self, step: &Step) -> Result<Output> {
        self.step_of(step, |x| x.run(step))
    }

    /// Runs `f` under `step`'s header, recording the step's id as done.
    /// While interruptible, a pending signal stops the run here, before the step, with exit code
    /// `128 + signal`.
    pub fn step_of<T>(&mut self, step: &Step, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if let (true, Some(sig)) = (self.interruptible, signals::pending()) {
            return Err(interrupted(sig, &step.title));
        }
        self.done.push(step.id);
        self.step(&step.title, f)
    }

    /// A step header with its elapsed time: `==> title` ... `    ok (1.2s)`.
    pub fn step<T>(&mut self, title: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let quiet = self.sh.verbosity == Verbosity::Quiet;
        if self.sh.gha {
            println!("::group::{title}");
        }
        if !quiet {
            eprintln!("==> {title}");
        }
        let t = Instant::now();
        let r = f(self);
        let secs = t.elapsed().as_secs_f64();
        self.timings.push((title.to_string(), secs));
        match &r {
            Ok(_) if quiet => {}
            Ok(_) => eprintln!("    ok ({secs:.1}s)"),
            Err(_) if quiet => eprintln!("==> {title}: FAILED ({secs:.1}s)"),
            Err(_) => eprintln!("    FAILED ({secs:.1}s)"),
        }
        if self.sh.gha {
            println!("::endgroup::");
        }
        r
    }
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

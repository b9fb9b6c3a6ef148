//! Layer 1: the context every command runs in: the repository root, the output mode (GitHub
//! Actions or a terminal), secret masking, and one-shot local commands through `xshell`.
//!
//! Local commands are written as `cmd!(sh, "git rev-parse HEAD")` literals (the context derefs to
//! an `xshell::Shell` rooted at the repository) and run through [`Ctx::read`], [`Ctx::ok`] or
//! [`Ctx::capture`]: never echoed, stdin closed unless data is fed on purpose, and errors built
//! from the masked command line plus a masked tail of its stderr — never xshell's own error text.

use crate::core::util::{env_nonempty, tail};
use anyhow::{bail, Context as _, Result};
use std::cell::RefCell;
use std::ops::Deref;
use std::path::{Path, PathBuf};

pub struct Ctx {
    /// The repository root (`XTASK_ROOT` overrides it: the e2e tests drive scratch clones).
    pub root: PathBuf,
    /// Running under GitHub Actions: workflow commands for masks, groups and errors.
    pub gha: bool,
    /// How much a run prints (`-q` / `-v`, global flags; issue 15).
    pub verbosity: Verbosity,
    secrets: RefCell<Vec<String>>,
    xs: xshell::Shell,
}

/// How much a run prints on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// `-q`: only the result (errors and warnings still print).
    Quiet,
    /// Step headers and what each step found.
    #[default]
    Normal,
    /// `-v`: also each remote script (masked) before it runs.
    Verbose,
}

impl Verbosity {
    /// From the global flags `-v` and `-q` (clap keeps them exclusive).
    pub fn of(verbose: bool, quiet: bool) -> Verbosity {
        match (verbose, quiet) {
            (true, _) => Verbosity::Verbose,
            (_, true) => Verbosity::Quiet,
            _ => Verbosity::Normal,
        }
    }
}

/// What a finished process left: exit status and both streams (lossy UTF-8).
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub ok: bool,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn from_std(out: &std::process::Output) -> Output {
        Output {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Deref for Ctx {
    type Target = xshell::Shell;
    fn deref(&self) -> &xshell::Shell {
        &self.xs
    }
}

impl Ctx {
    pub fn new() -> Result<Ctx> {
        let root = match env_nonempty("XTASK_ROOT") {
            Some(r) => PathBuf::from(r),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("locating the repository root")?
                .to_path_buf(),
        };
        let xs = xshell::Shell::new().context("creating the command context")?;
        xs.change_dir(&root);
        Ok(Ctx {
            root,
            gha: std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
            verbosity: Verbosity::Normal,
            secrets: RefCell::new(Vec::new()),
            xs,
        })
    }

    /// `rel` under the repository root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Registers a secret value: masked in everything this tool prints, and announced to GitHub
    /// Actions with `::add-mask::` before any other output can contain it. Values shorter than 4
    /// bytes are not registered (masking them would garble ordinary output).
    pub fn secret(&self, value: &str) {
        if value.len() < 4 {
            return;
        }
        let mut s = self.secrets.borrow_mut();
        if s.iter().any(|v| v == value) {
            return;
        }
        if self.gha {
            println!("::add-mask::{value}");
        }
        s.push(value.to_string());
    }

    /// Progress on stderr (masked): what a step found, what runs next. Silent under `-q`.
    pub fn say(&self, msg: &str) {
        if self.verbosity != Verbosity::Quiet {
            eprintln!("{}", self.mask(msg));
        }
    }

    /// Prints a command's error (masked; a GitHub `::error::` under Actions) and returns `code`.
    pub fn report(&self, e: &anyhow::Error, code: u8) -> u8 {
        let msg = self.mask(&format!("{e:#}"));
        if self.gha {
            println!("::error::{}", msg.replace('\n', "%0A"));
        }
        eprintln!("error: {msg}");
        code
    }

    /// `text` with every registered secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.borrow().iter() {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    /// Runs a local command to completion, feeding `stdin` when given, whatever its exit status.
    /// Fails only when it cannot be started (the error names the masked command).
    pub fn capture(&self, c: xshell::Cmd<'_>, stdin: Option<&[u8]>) -> Result<Output> {
        let shown = self.mask(&c.to_string());
        let c = match stdin {
            Some(d) => c.stdin(d),
            None => c,
        };
        match c.quiet().ignore_status().output() {
            Ok(out) => Ok(Output::from_std(&out)),
            Err(e) => bail!("cannot run `{shown}`: {}", io_reason(&e)),
        }
    }

    /// Runs a local command and returns its stdout, trimmed; a non-zero exit is an error naming
    /// the (masked) command and the tail of its (masked) stderr.
    pub fn read(&self, c: xshell::Cmd<'_>) -> Result<String> {
        let shown = self.mask(&c.to_string());
        let out = self.capture(c, None)?;
        if !out.ok {
            bail!(
                "`{shown}` failed (exit {}):\n{}",
                out.code
                    .map(|c| c.to_string())
                    .unwrap_or("by signal".into()),
                tail(&self.mask(out.stderr.trim()), 10)
            );
        }
        Ok(out.stdout.trim().to_string())
    }

    /// Whether a local command succeeds (output discarded).
    pub fn ok(&self, c: xshell::Cmd<'_>) -> bool {
        self.capture(c, None).is_ok_and(|o| o.ok)
    }

    /// Runs a local command with the terminal's stdout/stderr (long-running tools: cargo,
    /// linters, builds); stdin closed. Fails on a non-zero exit, naming `what`.
    pub fn run_visible(&self, what: &str, c: xshell::Cmd<'_>) -> Result<()> {
        let shown = self.mask(&c.to_string());
        c.quiet()
            .run()
            .map_err(|_| anyhow::anyhow!("{what} failed: `{shown}`"))
    }
}

/// Why a command could not run, without xshell's text (it carries the unmasked command line).
fn io_reason(_e: &xshell::Error) -> &'static str {
    "it could not be started (not installed or not on PATH?)"
}

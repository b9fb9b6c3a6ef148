//! The context every command runs in: repository root, output mode, secret masking, and a thin
//! wrapper over `std::process::Command` that never puts a secret in argv and never inherits stdin.

use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An error that carries the process exit code (documented in `--help` and README).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub msg: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for Exit {}

/// Exit code 1: a check failed or the work failed; nothing (more) was changed.
pub fn fail(msg: impl Into<String>) -> anyhow::Error {
    Exit {
        code: 1,
        msg: msg.into(),
    }
    .into()
}
/// Exit code 2: bad usage or an invalid config; nothing was touched.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Exit {
        code: 2,
        msg: msg.into(),
    }
    .into()
}
pub fn exit_code(msg: impl Into<String>, code: u8) -> anyhow::Error {
    Exit {
        code,
        msg: msg.into(),
    }
    .into()
}

pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Exit>().map(|x| x.code))
        .unwrap_or(1)
}

pub struct Shell {
    pub root: PathBuf,
    /// Running under GitHub Actions: workflow commands for masks, groups and errors.
    pub gha: bool,
    secrets: RefCell<Vec<String>>,
}

impl Shell {
    pub fn new() -> Result<Shell> {
        // XTASK_ROOT lets the end-to-end tests drive a scratch clone of this repository.
        let root = match env_nonempty("XTASK_ROOT") {
            Some(r) => PathBuf::from(r),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("locating the repository root")?
                .to_path_buf(),
        };
        Ok(Shell {
            root,
            gha: std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
            secrets: RefCell::new(Vec::new()),
        })
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Registers a secret value: masked in everything this tool prints, and announced to GitHub
    /// Actions with `::add-mask::` before any other output can contain it.
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

    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.borrow().iter() {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    /// A local command, run from the repository root, with stdin closed.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root).stdin(Stdio::null());
        c
    }

    /// Runs `argv` locally and returns its stdout (trimmed); fails with its stderr.
    pub fn read(&self, argv: &[&str]) -> Result<String> {
        let out = run_capture(self.cmd(argv[0]).args(&argv[1..]), None)
            .with_context(|| format!("running `{}`", argv.join(" ")))?;
        if !out.ok {
            bail!(
                "`{}` failed: {}",
                argv.join(" "),
                self.mask(out.stderr.trim())
            );
        }
        Ok(out.stdout.trim().to_string())
    }

    /// Whether `argv` succeeds (output discarded).
    pub fn ok(&self, argv: &[&str]) -> bool {
        self.cmd(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

pub struct Output {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion, feeding `stdin` (if any) through a pipe: the only way secrets
/// travel to a child process.
pub fn run_capture(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().context("opening the child's stdin")?;
        let data = data.to_vec();
        // A writer thread, so that a child that does not read all of stdin cannot deadlock us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child
        .wait_with_output()
        .context("waiting for a child process")?;
    Ok(Output {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Quotes one word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A non-empty environment variable (an empty one counts as unset).
pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn is_root() -> bool {
    // SAFETY-free: read our effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex(&buf))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_neutralises_shell_syntax() {
        assert_eq!(sh_quote("v1.2.3"), "v1.2.3");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("`id`;x"), "'`id`;x'");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_898_096), "2026-11-28T20:34:56Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn exit_codes_survive_context() {
        let e = usage("bad").context("outer").context("outermost");
        assert_eq!(code_of(&e), 2);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), 1);
    }
}

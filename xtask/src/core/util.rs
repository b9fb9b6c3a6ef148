//! Small utilities with no knowledge of the rest of the crate: shell quoting, hex, randomness,
//! time (RFC 3339 through `humantime`), the environment, output tails.

use anyhow::{Context, Result};
use std::time::{SystemTime, UNIX_EPOCH};

/// Quotes one word for a POSIX shell (IEEE Std 1003.1, 2.2.2 single quotes).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A non-empty environment variable (an empty one counts as unset).
pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The user running this process: `$USER`, else `$LOGNAME`, else the name `/etc/passwd` gives the
/// real uid (from `/proc/self/status`); `None` when none of them says.
pub fn user_name() -> Option<String> {
    env_nonempty("USER")
        .or_else(|| env_nonempty("LOGNAME"))
        .or_else(|| {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .to_string();
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd_name(&passwd, &uid)
        })
}

/// The name of `uid` in `/etc/passwd`'s text (`name:x:uid:gid:…`).
fn passwd_name(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid && !f[0].is_empty()).then(|| f[0].to_string())
    })
}

/// Whether this process runs as root (effective uid 0, read from /proc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// This machine's host name (empty when unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `bytes` random bytes from the kernel, as lowercase hex (2 × `bytes` characters).
pub fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex(&buf))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch.
pub fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// UTC now as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2026-11-29T10:00:00.123Z`).
pub fn rfc3339_ms(ts: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(ts).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// The last `n` lines of `s`, each indented as `    | line`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `x` rounded to milliseconds (for seconds shown in JSON).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_names_the_uid() {
        let p = "root:x:0:0:root:/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/sh\n";
        assert_eq!(passwd_name(p, "1000").as_deref(), Some("ann"));
        assert_eq!(passwd_name(p, "0").as_deref(), Some("root"));
        assert_eq!(passwd_name(p, "7"), None);
    }

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
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(rfc3339_ms("garbage"), None);
    }
}

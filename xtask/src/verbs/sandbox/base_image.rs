//! The sandbox's Python base image: `python:3.11-slim` when present; otherwise a stand-in built
//! once with `debootstrap --variant=minbase` from the mirror in this machine's apt sources (no
//! mirror is written in the repository) and `docker import`.

use crate::core::util::tail;
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, BASE_TAG};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Instant;
use xshell::cmd;

/// The Debian mirror and suite this machine's apt uses (no mirror is written in the repository).
pub fn apt_mirror() -> Result<(String, String)> {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .context("no VERSION_CODENAME in /etc/os-release: not a Debian system?")?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if let Some(uri) = mirror_in(&text, &codename) {
            return Ok((uri, codename));
        }
    }
    bail!("no Debian mirror for `{codename}` found in /etc/apt/sources.list(.d)")
}

/// The first URI serving `<codename>` with component `main`, from a one-line or deb822 file.
pub fn mirror_in(text: &str, codename: &str) -> Option<String> {
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            let comps = field("Components:").unwrap_or_default();
            if suites.split_whitespace().any(|s| s == codename)
                && comps.split_whitespace().any(|c| c == "main")
            {
                return uris.split_whitespace().next().map(|s| s.to_string());
            }
        }
    }
    for line in text.lines() {
        let mut w = line.split_whitespace().peekable();
        if w.next() != Some("deb") {
            continue;
        }
        if w.peek().is_some_and(|x| x.starts_with('[')) {
            for x in w.by_ref() {
                if x.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else {
            continue;
        };
        if suite == codename && w.any(|c| c == "main") {
            return Some(uri.to_string());
        }
    }
    None
}

/// The base image releases build FROM: `python:3.11-slim` when present, else the stand-in.
pub fn ensure(sh: &Ctx, p: &Paths) -> Result<String> {
    if sh.ok(cmd!(sh, "docker image inspect python:3.11-slim")) {
        return Ok("python:3.11-slim".into());
    }
    if sh.ok(cmd!(sh, "docker image inspect {BASE_TAG}")) {
        return Ok(BASE_TAG.into());
    }
    eprintln!(
        "==> base image: python:3.11-slim is not present; building {BASE_TAG} with debootstrap"
    );
    let (mirror, suite) = apt_mirror()?;
    let rootfs = p.root.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let t = Instant::now();
    let out = sh.capture(
        cmd!(
            sh,
            "debootstrap --variant=minbase --include=python3 {suite} {rootfs} {mirror}"
        ),
        None,
    )?;
    if !out.ok {
        bail!(
            "debootstrap failed (suite {suite}):\n{}",
            tail(&out.stderr, 15)
        );
    }
    for junk in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let d = rootfs.join(junk);
        let _ = fs::remove_dir_all(&d);
        let _ = fs::create_dir_all(&d);
    }
    // tar | docker import, as one duct pipeline (both sides checked).
    let imported = duct::cmd!("tar", "-C", &rootfs, "-c", ".")
        .pipe(duct::cmd!(
            "docker",
            "import",
            "-c",
            "CMD [\"python3\"]",
            "-c",
            "ENV LANG=C.UTF-8",
            "-",
            BASE_TAG
        ))
        .stdin_null()
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run();
    let _ = fs::remove_dir_all(&rootfs);
    match imported {
        Ok(o) if o.status.success() => {}
        Ok(o) => bail!(
            "docker import of the debootstrap root failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!("docker import of the debootstrap root failed: {e}"),
    }
    eprintln!("    built {BASE_TAG} in {:.0}s", t.elapsed().as_secs_f64());
    Ok(BASE_TAG.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in(deb822, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        let line = "# comment\ndeb [arch=amd64 signed-by=/x] http://m.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_in(line, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_in("deb http://other nodistro main\n", "bookworm"),
            None
        );
    }
}

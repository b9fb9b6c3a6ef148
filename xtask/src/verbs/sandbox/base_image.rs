//! The sandbox's Python base image: `python:3.11-slim` when the real one is present; otherwise a
//! faithful stand-in built with `debootstrap --variant=minbase` from the mirror in this machine's
//! apt sources (no mirror is written in the repository) and `docker import`: Debian bookworm's
//! Python 3.11 with `python` and `python3` on PATH, and `bash`. The stand-in is tagged
//! `observer-base:py3-bookworm` AND `python:3.11-slim`, so that the contract's own
//! `docker build -t observer:latest .` (§9.1) builds FROM it without a download, and
//! `docker exec qts-observer python -c ...` (§9.2) finds `python`.
//!
//! The stand-in carries the label `org.observer.base-stand-in=<STAND_IN_VERSION>`; an image under
//! either tag with another value (or none, for `observer-base:py3-bookworm`: the first stand-in
//! had no `python`) is outdated and rebuilt by `sandbox up`. A `python:3.11-slim` without the
//! label is the real image and is never touched. `sandbox down` removes no image.

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

/// The tag the contract's Dockerfile builds FROM (`ARG BASE_IMAGE=python:3.11-slim`, §8.2).
pub const OFFICIAL: &str = "python:3.11-slim";
/// The label that marks the stand-in, and the stand-in's current revision: 1 was
/// `--include=python3` (no `python`), 2 adds `python-is-python3`.
pub const STAND_IN_LABEL: &str = "org.observer.base-stand-in";
pub const STAND_IN_VERSION: &str = "2";

/// What docker has under one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    /// The stand-in label's value; `None` when the image has no such label.
    pub stand_in: Option<String>,
}

impl Image {
    pub fn current_stand_in(&self) -> bool {
        self.stand_in.as_deref() == Some(STAND_IN_VERSION)
    }
}

/// `docker image inspect` of a tag: its id and stand-in label; `None` when docker has no such tag.
pub fn inspect(sh: &Ctx, tag: &str) -> Option<Image> {
    // `with`: `index` of an image without any label (nil) would fail the whole template.
    let format = format!(
        "{{{{.Id}}}} {{{{with .Config.Labels}}}}{{{{index . \"{STAND_IN_LABEL}\"}}}}{{{{end}}}}"
    );
    let out = sh
        .read(cmd!(sh, "docker image inspect -f {format} {tag}"))
        .ok()?;
    parse_inspect(&out)
}

/// `sha256:… <label value>` (empty for an image without labels, `<no value>` for one without
/// this label).
pub fn parse_inspect(line: &str) -> Option<Image> {
    let line = line.trim();
    let (id, label) = line.split_once(' ').unwrap_or((line, ""));
    if id.is_empty() {
        return None;
    }
    let label = label.trim();
    let stand_in = (!label.is_empty() && label != "<no value>").then(|| label.to_string());
    Some(Image {
        id: id.to_string(),
        stand_in,
    })
}

/// What the sandbox's base image is, for `sandbox status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The recorded tag is not present.
    Missing,
    /// The real `python:3.11-slim` (or another image without the stand-in label).
    Real,
    /// The current stand-in; `official`: also tagged `python:3.11-slim`.
    StandIn { official: bool },
    /// A stand-in of an older revision (`sandbox up` rebuilds it).
    Outdated,
}

/// Classifies the recorded base image `tag`.
pub fn kind(sh: &Ctx, tag: &str) -> Kind {
    let Some(img) = (!tag.is_empty()).then(|| inspect(sh, tag)).flatten() else {
        return Kind::Missing;
    };
    classify(&img, tag, inspect(sh, OFFICIAL).as_ref())
}

/// Pure part of [`kind`]: `img` is what `tag` names, `official` what `python:3.11-slim` names.
pub fn classify(img: &Image, tag: &str, official: Option<&Image>) -> Kind {
    if img.current_stand_in() {
        Kind::StandIn {
            official: official.is_some_and(|o| o.id == img.id),
        }
    } else if img.stand_in.is_some() || tag == BASE_TAG {
        Kind::Outdated
    } else {
        Kind::Real
    }
}

/// The base image releases build FROM: the real `python:3.11-slim` when present; otherwise the
/// stand-in `observer-base:py3-bookworm` (built or rebuilt when absent or outdated), which is
/// then also tagged `python:3.11-slim`.
pub fn ensure(sh: &Ctx, p: &Paths) -> Result<String> {
    let official = inspect(sh, OFFICIAL);
    if official.as_ref().is_some_and(|o| o.stand_in.is_none()) {
        return Ok(OFFICIAL.into());
    }
    let mut base = inspect(sh, BASE_TAG);
    if !base.as_ref().is_some_and(Image::current_stand_in) {
        match &base {
            Some(_) => eprintln!(
                "==> base image: {BASE_TAG} is an outdated stand-in (no {STAND_IN_LABEL}={STAND_IN_VERSION}); rebuilding it"
            ),
            None => eprintln!(
                "==> base image: {OFFICIAL} is not present; building the stand-in {BASE_TAG} with debootstrap"
            ),
        }
        build(sh, p)?;
        base = inspect(sh, BASE_TAG);
    }
    let base = base.with_context(|| format!("{BASE_TAG} is missing right after its build"))?;
    if official.as_ref().map(|o| &o.id) != Some(&base.id) {
        sh.read(cmd!(sh, "docker tag {BASE_TAG} {OFFICIAL}"))?;
        eprintln!("    tagged the stand-in {BASE_TAG} as {OFFICIAL} (the real image is absent)");
    }
    Ok(BASE_TAG.into())
}

/// debootstrap (bookworm: Python 3.11, `python-is-python3`) → `docker import` as [`BASE_TAG`].
fn build(sh: &Ctx, p: &Paths) -> Result<()> {
    let (mirror, suite) = apt_mirror()?;
    let rootfs = p.root.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let t = Instant::now();
    let out = sh.capture(
        cmd!(
            sh,
            "debootstrap --variant=minbase --include=python3,python-is-python3 {suite} {rootfs} {mirror}"
        ),
        None,
    )?;
    if !out.ok {
        let _ = fs::remove_dir_all(&rootfs);
        bail!(
            "debootstrap failed (suite {suite}):\n{}",
            tail(&out.stderr, 15)
        );
    }
    // What python:3.11-slim offers and the contract's commands use.
    for need in [
        "usr/bin/python3.11",
        "usr/bin/python",
        "usr/bin/python3",
        "bin/bash",
    ] {
        if !rootfs.join(need).exists() {
            let _ = fs::remove_dir_all(&rootfs);
            bail!("the debootstrap root of suite {suite} has no /{need}: the stand-in for {OFFICIAL} needs Debian bookworm's Python 3.11, `python` and `bash`");
        }
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
    let label = format!("LABEL {STAND_IN_LABEL}={STAND_IN_VERSION}");
    // tar | docker import, as one duct pipeline (both sides checked).
    let imported = duct::cmd!("tar", "-C", &rootfs, "-c", ".")
        .pipe(duct::cmd!(
            "docker",
            "import",
            "-c",
            "CMD [\"python3\"]",
            "-c",
            "ENV LANG=C.UTF-8",
            "-c",
            label,
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
    eprintln!(
        "    built {BASE_TAG} (stand-in revision {STAND_IN_VERSION}) in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_is_told_from_the_real_image() {
        let real = parse_inspect("sha256:aaa <no value>").unwrap();
        assert_eq!(real.stand_in, None);
        assert_eq!(parse_inspect("sha256:aaa ").unwrap(), real.clone());
        assert_eq!(parse_inspect("sha256:aaa").unwrap(), real.clone());
        let cur = parse_inspect("sha256:bbb 2").unwrap();
        assert!(cur.current_stand_in());
        let old = parse_inspect("sha256:ccc 1").unwrap();
        assert!(!old.current_stand_in());
        assert_eq!(parse_inspect(""), None);
        // The recorded tag is the real python:3.11-slim.
        assert_eq!(classify(&real, OFFICIAL, Some(&real)), Kind::Real);
        // The current stand-in, also tagged python:3.11-slim (same id) or not.
        assert_eq!(
            classify(&cur, BASE_TAG, Some(&cur)),
            Kind::StandIn { official: true }
        );
        assert_eq!(
            classify(&cur, BASE_TAG, None),
            Kind::StandIn { official: false }
        );
        assert_eq!(
            classify(&cur, BASE_TAG, Some(&real)),
            Kind::StandIn { official: false }
        );
        // The first stand-in had no label (and no `python`); an older revision is outdated too.
        assert_eq!(classify(&real, BASE_TAG, None), Kind::Outdated);
        assert_eq!(classify(&old, OFFICIAL, Some(&old)), Kind::Outdated);
    }

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

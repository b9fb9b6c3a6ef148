//! What a deploy may start, decided before the server is touched (README "Provenance").
//!
//! - The image's digest must be the one `release` recorded in the annotated git tag
//!   (`digest: sha256:...`). The tag object is read from this clone, or, when the tag is missing
//!   here or lightweight, from the environment's git remote (fetched into a private ref, never
//!   over a local tag). A different digest is refused always (the tag was re-pushed); no recorded
//!   digest is refused unless `--allow-unverified`, which then says loudly what it skipped.
//! - A version lower than the running one (SemVer precedence) is refused unless
//!   `--allow-downgrade` (`rollback` allows it).

use crate::config::Env;
use crate::core::exit::fail;
use crate::core::version::Version;
use crate::ctx::Ctx;
use anyhow::Result;
use xshell::cmd;

/// The digest recorded for a version, and where it was read; or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Found { digest: String, from: String },
    Missing(String),
}

/// `sha256:` and 64 lowercase hex digits.
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The `digest:` line of a tag object's message (`git cat-file -p` of an annotated tag: headers,
/// a blank line, the message). `None` when there is none, or it is not a sha256 digest.
pub fn digest_in_tag_object(text: &str) -> Option<String> {
    let (_, message) = text.split_once("\n\n")?;
    message
        .lines()
        .take_while(|l| !l.starts_with("-----BEGIN"))
        .find_map(|l| l.strip_prefix("digest: "))
        .map(|d| d.trim().to_string())
        .filter(|d| is_digest(d))
}

/// The annotated tag object at `reference` in this clone; `None` when the ref is absent or not an
/// annotated tag.
fn tag_object(sh: &Ctx, reference: &str) -> Option<String> {
    let kind = sh.read(cmd!(sh, "git cat-file -t {reference}")).ok()?;
    if kind != "tag" {
        return None;
    }
    sh.read(cmd!(sh, "git cat-file -p {reference}")).ok()
}

/// The digest recorded for `version`: in this clone's annotated tag, else in the environment's git
/// remote's (fetched into `refs/xtask/provenance/<version>`, removed again).
pub fn recorded_digest(sh: &Ctx, env: &Env, version: &str) -> Recorded {
    let local = format!("refs/tags/{version}");
    let mut why_not_local = format!("tag {version} is not in this clone");
    if sh.ok(cmd!(sh, "git rev-parse -q --verify {local}")) {
        match tag_object(sh, &local) {
            Some(t) => match digest_in_tag_object(&t) {
                Some(d) => {
                    return Recorded::Found {
                        digest: d,
                        from: "annotated tag in this clone".into(),
                    }
                }
                None => why_not_local = format!("tag {version} here records no digest"),
            },
            None => why_not_local = format!("tag {version} here is lightweight"),
        }
    }
    let remote = &env.git_remote;
    let listed = match sh.read(cmd!(sh, "git ls-remote --tags {remote} {local}")) {
        Ok(l) => l,
        Err(e) => {
            return Recorded::Missing(format!(
                "{why_not_local}, and the git remote `{remote}` could not be asked: {e:#}"
            ))
        }
    };
    if listed.is_empty() {
        return Recorded::Missing(format!(
            "{why_not_local}, and the git remote `{remote}` has no tag {version}"
        ));
    }
    let tmp = format!("refs/xtask/provenance/{version}");
    let spec = format!("+{local}:{tmp}");
    let fetched = sh.read(cmd!(
        sh,
        "git fetch --quiet --no-tags --no-write-fetch-head {remote} {spec}"
    ));
    let found = match fetched {
        Err(e) => Err(format!(
            "{why_not_local}, and fetching it from `{remote}` failed: {e:#}"
        )),
        Ok(_) => match tag_object(sh, &tmp) {
            None => Err(format!(
                "{why_not_local}, and the remote's tag {version} is lightweight"
            )),
            Some(t) => digest_in_tag_object(&t).ok_or(format!(
                "{why_not_local}, and the remote's tag {version} records no digest"
            )),
        },
    };
    let _ = sh.read(cmd!(sh, "git update-ref -d {tmp}"));
    match found {
        Ok(digest) => Recorded::Found {
            digest,
            from: format!("annotated tag on the git remote `{remote}`"),
        },
        Err(why) => Recorded::Missing(why),
    }
}

/// The registry serves `served` for `version`: it must be the recorded digest (exit 1 otherwise);
/// with no recorded digest, only `allow_unverified` lets the deploy go on, and it says so.
pub fn verify(
    sh: &Ctx,
    env: &Env,
    version: &str,
    served: &str,
    allow_unverified: bool,
    client: &mut crate::registry::Client,
) -> Result<()> {
    let recorded = recorded_digest(sh, env, version);
    if let Recorded::Found { digest, from } = &recorded {
        if digest != served {
            // An image index and its own platform image are the same image (issue 17).
            let rel = client.relate(env.repo_path(), served, digest)?;
            if rel.same_image() {
                eprintln!(
                    "    {} (recorded in git tag {version}, {from})",
                    rel.describe(served, digest)
                );
                return Ok(());
            }
        }
    }
    decide(sh, version, served, recorded, allow_unverified)
}

fn decide(
    sh: &Ctx,
    version: &str,
    served: &str,
    recorded: Recorded,
    allow_unverified: bool,
) -> Result<()> {
    match recorded {
        Recorded::Found { digest, from } if digest == served => {
            sh.say(&format!("    digest {served} matches git tag {version} ({from})"));
            Ok(())
        }
        Recorded::Found { digest, from } => Err(fail(format!(
            "the registry serves {served} for {version}, but git tag {version} ({from}) records {digest}: the image tag was re-pushed; refusing"
        ))),
        Recorded::Missing(why) if allow_unverified => {
            let msg = format!(
                "UNVERIFIED DEPLOY: {why}; --allow-unverified: {version} ({served}) is deployed WITHOUT checking it against the digest `release` records"
            );
            if sh.gha {
                println!("::warning::{}", sh.mask(&msg));
            }
            eprintln!("    !!! {}", sh.mask(&msg));
            Ok(())
        }
        Recorded::Missing(why) => Err(fail(format!(
            "no recorded digest for {version}: {why}. A deploy starts only the image `release` recorded in the annotated tag (`digest: sha256:...`); to deploy the registry's {served} anyway, pass --allow-unverified"
        ))),
    }
}

/// Deploying `target` while `running` runs (its tag; "" when none or not a version): a lower
/// version (SemVer precedence) is refused (exit 1) unless `allow`.
pub fn check_downgrade(running: &str, target: &str, allow: bool) -> Result<()> {
    let (Some(r), Some(t)) = (Version::parse(running), Version::parse(target)) else {
        return Ok(());
    };
    if t >= r {
        return Ok(());
    }
    if allow {
        eprintln!("    downgrade from {r} to {t} (allowed)");
        return Ok(());
    }
    Err(fail(format!(
        "refusing to downgrade: {r} runs on the server and {t} is older. Pass --allow-downgrade, or use `cargo xtask rollback --to {t}`; nothing was changed"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn obj(message: &str) -> String {
        format!("object 0123\ntype commit\ntag v1.0.0\ntagger a <a@b> 1 +0000\n\n{message}")
    }

    #[test]
    fn digest_from_the_tag_message_only() {
        assert_eq!(
            digest_in_tag_object(&obj(&format!("observer x\n\nimage: r/o:v1\ndigest: {D}\n"))),
            Some(D.to_string())
        );
        assert_eq!(digest_in_tag_object(&obj("no digest here\n")), None);
        assert_eq!(digest_in_tag_object(&obj("digest: sha256:short\n")), None);
        assert_eq!(
            digest_in_tag_object(&format!("object x\ndigest: {D}\n")),
            None,
            "a header is not the message"
        );
        let signed = obj(&format!("m\n-----BEGIN PGP SIGNATURE-----\ndigest: {D}\n"));
        assert_eq!(digest_in_tag_object(&signed), None);
    }

    #[test]
    fn verify_decisions() {
        let sh = Ctx::new().unwrap();
        let found = |d: &str| Recorded::Found {
            digest: d.into(),
            from: "here".into(),
        };
        assert!(decide(&sh, "v1.0.0", D, found(D), false).is_ok());
        let other = D.replace('0', "f");
        for allow in [false, true] {
            let e = decide(&sh, "v1.0.0", &other, found(D), allow).unwrap_err();
            assert!(e.to_string().contains("re-pushed"), "{e}");
            assert_eq!(crate::core::exit::code_of(&e), 1);
        }
        let e = decide(&sh, "v1.0.0", D, Recorded::Missing("gone".into()), false).unwrap_err();
        assert!(e.to_string().contains("--allow-unverified"));
        assert_eq!(crate::core::exit::code_of(&e), 1);
        assert!(decide(&sh, "v1.0.0", D, Recorded::Missing("gone".into()), true).is_ok());
    }

    #[test]
    fn downgrades_need_permission() {
        assert!(check_downgrade("v1.2.0", "v1.3.0", false).is_ok());
        assert!(
            check_downgrade("v1.2.0", "v1.2.0", false).is_ok(),
            "a redeploy"
        );
        assert!(check_downgrade("", "v0.1.0", false).is_ok(), "nothing runs");
        assert!(check_downgrade("latest", "v0.1.0", false).is_ok());
        for (running, target) in [
            ("v1.2.0", "v1.1.9"),
            ("v1.2.0", "v1.2.0-rc.1"),
            ("v2.0.0", "v1.99.99"),
            ("v1.0.0-beta.11", "v1.0.0-beta.2"),
        ] {
            let e = check_downgrade(running, target, false).unwrap_err();
            assert_eq!(crate::core::exit::code_of(&e), 1);
            assert!(e.to_string().contains("--allow-downgrade"), "{e}");
            assert!(check_downgrade(running, target, true).is_ok());
        }
    }
}

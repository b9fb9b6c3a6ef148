//! The one version rule (release and deploy): strict `vMAJOR.MINOR.PATCH[-PRERELEASE]`, ASCII only.

use crate::shell::usage;
use anyhow::Result;

pub const RULE: &str = r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$";

fn number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// True when `v` matches [`RULE`] (and is at most 128 bytes: it becomes a tag and a path).
pub fn is_valid(v: &str) -> bool {
    if v.len() > 128 {
        return false;
    }
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| number(p))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

pub fn validate(v: &str) -> Result<()> {
    if is_valid(v) {
        Ok(())
    } else {
        let shown: String = v.chars().take(40).flat_map(char::escape_default).collect();
        Err(usage(format!(
            "invalid version \"{shown}\": a version must match {RULE} (ASCII only, at most 128 characters), e.g. v1.2.3"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        for v in [
            "v0.0.0",
            "v1.2.3",
            "v10.20.30",
            "v1.2.3-rc.1",
            "v1.2.3-alpha-2",
        ] {
            assert!(is_valid(v), "{v}");
        }
    }

    #[test]
    fn rejects() {
        let long = format!("v1.2.3-{}", "a".repeat(200));
        for v in [
            "",
            "1.2.3",
            "v1.2",
            "v1.2.3.4",
            "v01.2.3",
            "v1.02.3",
            "v1.2.03",
            "V1.2.3",
            "v1.2.3-",
            "v1.2.3;rm -rf /",
            "v1.2.3$(id)",
            "v1.2.3`id`",
            "v1.2.3 ",
            " v1.2.3",
            "v1.2.3\n",
            "v١.٢.٣",
            "v1.2.3-ü",
            "v1.2.3+build",
            "v1.2.3-a/b",
            long.as_str(),
            "v-1.2.3",
        ] {
            assert!(!is_valid(v), "{v:?}");
            assert_eq!(crate::shell::code_of(&validate(v).unwrap_err()), 2);
        }
    }
}

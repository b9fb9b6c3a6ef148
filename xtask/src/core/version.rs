//! The one version rule (release and deploy): strict `vMAJOR.MINOR.PATCH[-PRERELEASE]`, ASCII
//! only, at most 128 bytes. Ordering is Semantic Versioning 2.0.0 precedence (§11).

use super::exit::usage;
use anyhow::Result;
use std::cmp::Ordering;
use std::fmt;

pub const RULE: &str = r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$";

/// A validated version: it is safe in a shell word, a tag, an image tag and a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    text: String,
    core: [u64; 3],
    pre: Option<String>,
}

fn number(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

impl Version {
    /// Parses `v` by [`RULE`]; `None` when it does not match.
    pub fn parse(v: &str) -> Option<Version> {
        if v.len() > 128 {
            return None;
        }
        let rest = v.strip_prefix('v')?;
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return None;
        }
        let core = [number(parts[0])?, number(parts[1])?, number(parts[2])?];
        if let Some(p) = pre {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return None;
            }
        }
        Some(Version {
            text: v.to_string(),
            core,
            pre: pre.map(str::to_string),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// SemVer 2.0.0 §11: numeric core, then a pre-release sorts before the release; identifiers
/// compare numerically when both are numeric, numeric before alphanumeric, then by length.
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => {
                    let (mut x, mut y) = (a.split('.'), b.split('.'));
                    loop {
                        match (x.next(), y.next()) {
                            (None, None) => return Ordering::Equal,
                            (None, Some(_)) => return Ordering::Less,
                            (Some(_), None) => return Ordering::Greater,
                            (Some(p), Some(q)) => {
                                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                                    (Ok(m), Ok(n)) => m.cmp(&n),
                                    (Ok(_), Err(_)) => Ordering::Less,
                                    (Err(_), Ok(_)) => Ordering::Greater,
                                    (Err(_), Err(_)) => p.cmp(q),
                                };
                                if o != Ordering::Equal {
                                    return o;
                                }
                            }
                        }
                    }
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// True when `v` matches [`RULE`] (and is at most 128 bytes).
pub fn is_valid(v: &str) -> bool {
    Version::parse(v).is_some()
}

/// `v` parsed, or a usage error (exit 2) naming the rule; the shown value is escaped and cut.
pub fn validate(v: &str) -> Result<Version> {
    Version::parse(v).ok_or_else(|| {
        let shown: String = v.chars().take(40).flat_map(char::escape_default).collect();
        usage(format!(
            "invalid version \"{shown}\": a version must match {RULE} (ASCII only, at most 128 characters), e.g. v1.2.3"
        ))
    })
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
            "v99999999999999999999.0.0",
        ] {
            assert!(!is_valid(v), "{v:?}");
            assert_eq!(crate::core::exit::code_of(&validate(v).unwrap_err()), 2);
        }
    }

    #[test]
    fn semver_precedence() {
        // The example chain of SemVer 2.0.0 §11.
        let chain = [
            "v1.0.0-alpha",
            "v1.0.0-alpha.1",
            "v1.0.0-alpha.beta",
            "v1.0.0-beta",
            "v1.0.0-beta.2",
            "v1.0.0-beta.11",
            "v1.0.0-rc.1",
            "v1.0.0",
            "v1.0.1",
            "v1.1.0",
            "v2.0.0",
            "v10.0.0",
        ];
        for w in chain.windows(2) {
            let (a, b) = (Version::parse(w[0]).unwrap(), Version::parse(w[1]).unwrap());
            assert!(a < b, "{a} < {b}");
        }
    }
}

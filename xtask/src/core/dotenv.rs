//! Writing a value into the server's `.env` so that BOTH composes read it back byte for byte:
//! compose v1 (Debian's docker-compose 1.29, python-dotenv 0.21) and compose v2 (compose-go's
//! dotenv). The file is read twice by each: as the project's `.env` (interpolation of the compose
//! file) and as the service's `env_file`.
//!
//! What the two parsers do, measured with both (README "Secrets"):
//!
//! | form | compose v1 (python-dotenv) | compose v2 (compose-go) |
//! |---|---|---|
//! | `'v'` | `\\` → `\`, `\'` → `'`; `${X}` / `${X:-d}` EXPANDED | literal; `\'` stays `\'` and does not end the value; `\` before the closing quote escapes it |
//! | `"v"` | `\\ \" \' \n \t ...` decoded; `${X}` expanded; a `\\` right before the closing quote is read as `\` + `\"` (the value runs on into later lines) | `\\` → `\`, `\"` → `"`; `$X`, `${X}`, `$$` expanded |
//! | `v` (bare) | leading blanks dropped, ` #...` (any blank) cut, right-trimmed, `${X}` expanded | ` #...` cut, trimmed, `$X`, `${X}`, `$$` expanded |
//!
//! So: single quotes when the value has no `'`, no `\\` and no trailing `\`; else double quotes
//! (backslashes doubled, `"` escaped) when it has no `$` that v2 would expand and no trailing `\`;
//! else bare when it is bare-safe. What none of the three carries exactly — a line break or NUL;
//! `${...}`, which v1 expands in every form; a `$name` (only single quotes keep it) together with
//! a `'`, a `\\` or a trailing `\` (which single quotes cannot hold in both) — is refused.

/// One secret's line in the `.env` the tool uploads (its `Debug` hides the value).
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    /// `NAME=<encoded value>`.
    Line(String, String),
    /// The server's upload script carries the current `.env`'s `NAME=` line over, and fails
    /// when there is none.
    Keep(String),
    /// The same, when the current `.env` has one (an optional secret).
    KeepIfPresent(String),
}

/// The directive lines for [`Entry::Keep`] and [`Entry::KeepIfPresent`] (comments to dotenv).
pub const KEEP: &str = "# xtask-keep ";
pub const KEEP_IF_PRESENT: &str = "# xtask-keep-if-present ";

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Line(n, _) => write!(f, "Line({n}, <hidden>)"),
            Entry::Keep(n) => write!(f, "Keep({n})"),
            Entry::KeepIfPresent(n) => write!(f, "KeepIfPresent({n})"),
        }
    }
}

impl Entry {
    /// The entry's line, without the newline.
    pub fn line(&self) -> String {
        match self {
            Entry::Line(n, v) => format!("{n}={v}"),
            Entry::Keep(n) => format!("{KEEP}{n}"),
            Entry::KeepIfPresent(n) => format!("{KEEP_IF_PRESENT}{n}"),
        }
    }
}

/// Why a value cannot be written (never containing the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrepresentable(pub &'static str);

/// A `$` that compose v2 expands outside single quotes: `$name`, `${`, `$$`.
fn v2_expands(v: &str) -> bool {
    let b = v.as_bytes();
    b.windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'_' | b'{' | b'$')))
}

/// python-dotenv's `\$\{[^}:]*(?::-[^}]*)?\}`: expanded by compose v1 in every quoting form.
fn v1_expands(v: &str) -> bool {
    let b = v.as_bytes();
    (0..b.len()).any(|i| {
        if !(b[i] == b'$' && b.get(i + 1) == Some(&b'{')) {
            return false;
        }
        let mut j = i + 2;
        while j < b.len() && b[j] != b'}' && b[j] != b':' {
            j += 1;
        }
        match b.get(j) {
            Some(b'}') => true,
            Some(b':') if b.get(j + 1) == Some(&b'-') => b[j + 2..].contains(&b'}'),
            _ => false,
        }
    })
}

/// Blank for either parser (Python's `str.isspace`, Go's `unicode.IsSpace`) or a control char.
fn blank(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn bare_safe(v: &str) -> bool {
    let (Some(first), Some(last)) = (v.chars().next(), v.chars().last()) else {
        return false;
    };
    let mut prev = first;
    let comment = v.chars().skip(1).any(|c| {
        let hit = c == '#' && blank(prev);
        prev = c;
        hit
    });
    !matches!(first, '\'' | '"') && !blank(first) && !blank(last) && !comment && !v2_expands(v)
}

/// The right-hand side of `NAME=` for `v`, read back exactly by compose v1 and v2.
pub fn encode(v: &str) -> Result<String, Unrepresentable> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(Unrepresentable("it contains a line break or NUL"));
    }
    if v1_expands(v) {
        return Err(Unrepresentable(
            "it contains `${...}`, which compose v1 expands in every quoting form",
        ));
    }
    let trailing_backslash = v.ends_with('\\');
    if !v.contains('\'') && !v.contains("\\\\") && !trailing_backslash {
        return Ok(format!("'{v}'"));
    }
    if !v2_expands(v) && !trailing_backslash {
        return Ok(format!(
            "\"{}\"",
            v.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    if bare_safe(v) {
        return Ok(v.to_string());
    }
    Err(Unrepresentable(
        "no .env quoting is read back exactly by both compose v1 and v2 for this mix: a `$` \
         followed by a letter, `_`, `{` or `$` (kept literally only inside single quotes) together \
         with a single quote, a double backslash or a trailing backslash (which single quotes \
         cannot carry in both)",
    ))
}

/// A `.env` variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// compose v2's reading of one encoded value (the rules in the table above), for the tests.
    fn v2_read(e: &str) -> Option<String> {
        if let Some(inner) = e.strip_prefix('\'') {
            let inner = inner.strip_suffix('\'')?;
            return Some(inner.to_string());
        }
        if let Some(inner) = e.strip_prefix('"') {
            let inner = inner.strip_suffix('"')?;
            let (mut out, mut esc) = (String::new(), false);
            for c in inner.chars() {
                if esc {
                    out.push(c);
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else {
                    out.push(c);
                }
            }
            return (!v2_expands(&out)).then_some(out);
        }
        (!v2_expands(e)).then(|| e.to_string())
    }

    #[test]
    fn forms_chosen() {
        assert_eq!(encode("plain").unwrap(), "'plain'");
        assert_eq!(encode("k3y$x #rest").unwrap(), "'k3y$x #rest'");
        assert_eq!(encode(" lead and trail ").unwrap(), "' lead and trail '");
        assert_eq!(encode("a=b#c").unwrap(), "'a=b#c'");
        assert_eq!(encode(r#"dq"in"#).unwrap(), r#"'dq"in'"#);
        assert_eq!(encode(r"one\back").unwrap(), r"'one\back'");
        assert_eq!(encode("it's").unwrap(), "\"it's\"");
        assert_eq!(encode(r"two\\back").unwrap(), r#""two\\\\back""#);
        assert_eq!(encode(r#"it's "q" $ 5"#).unwrap(), r#""it's \"q\" $ 5""#);
        assert_eq!(encode(r"trail\").unwrap(), r"trail\");
        assert_eq!(encode(r"it's\").unwrap(), r"it's\");
    }

    #[test]
    fn encodings_read_back() {
        for v in [
            "plain",
            "k3y$x #rest",
            " sp ",
            "it's",
            r#"it's "q""#,
            r"a\\b",
            r"a\'b",
            "$ #",
            "x$1",
            "tab\there",
        ] {
            let e = encode(v).unwrap();
            assert_eq!(v2_read(&e).as_deref(), Some(v), "{e}");
        }
    }

    #[test]
    fn refused_without_the_value() {
        for v in [
            "a\nb",
            "a\rb",
            "a\0b",
            "${HOME}",
            "x${A:-d}y",
            "it's $HOME",
            r"$x\\y",
            r" $x\",
            "'$x",
        ] {
            let e = encode(v).unwrap_err();
            assert!(!e.0.contains(v), "{v:?}");
        }
        // Not v1 expansions: kept.
        for v in ["${", "${a:b}", "$}", "${a", "{x}"] {
            assert!(encode(v).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn debug_hides_the_value() {
        let e = Entry::Line("KIS_API_KEY".into(), "'s3cr3t'".into());
        assert_eq!(format!("{e:?}"), "Line(KIS_API_KEY, <hidden>)");
    }

    #[test]
    fn names() {
        assert!(is_name("KIS_API_KEY") && is_name("_x1"));
        assert!(!is_name("") && !is_name("1A") && !is_name("A-B") && !is_name("A B"));
    }
}

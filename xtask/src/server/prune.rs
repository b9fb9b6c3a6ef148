//! `cargo xtask prune` on the server's side (issue 15): one read-only scan of what retention
//! looks at (the repository's images with their sizes, the backups folder, the history), and the
//! removal of images reporting each tag's fate. Snapshot files are removed with
//! [`super::snapshot::remove_files`].

use super::q;
use super::snapshot;
use crate::config::Env;

/// One round trip: `DF JSON` (`docker system df -v`'s images, a JSON list: what removing an
/// image frees, its `UniqueSize`, is known only there), then [`snapshot::prune_scan`]'s lines
/// (`M`/`I` snapshots, `P AGE NAME` partial files, `H JSON` history lines), then
/// `S SIZE_BYTES NAME` per entry of the backups folder (`du -sb`: a folder counts whole).
/// Exits non-zero when docker or the backups folder cannot be read.
pub fn scan(env: &Env) -> String {
    format!(
        "l=$(docker system df -v --format '{{{{json .Images}}}}') || exit 1; printf 'DF %s\\n' \"$l\"; {scan}; if [ -d {b} ]; then cd {b} || exit 1; for f in * .create.* .delta.*; do [ -e \"$f\" ] || continue; echo \"S $(du -sb -- \"$f\" | cut -f1) $f\"; done; fi",
        scan = snapshot::prune_scan(env),
        b = q(&env.backups_dir),
    )
}

/// An image of the environment's repository, from [`scan`]'s `DF` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub tag: String,
    /// Bytes removing it frees (`UniqueSize`: its layers no other image uses; docker rounds it).
    pub size: u64,
    /// `CreatedAt` (`2026-12-04 07:10:38 +0000 UTC`: sorts by time within one server).
    pub created: String,
}

/// docker's human sizes (`0B`, `4.096kB`, `117.3MB`, `1.2GB`: decimal units) in bytes; `None`
/// when unreadable.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let at = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(at);
    let n: f64 = n.parse().ok()?;
    let mult = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((n * mult).round() as u64)
}

/// The images of `repo` in [`scan`]'s `DF` line (none when it is absent or unreadable).
pub fn parse_images(out: &str, repo: &str) -> Vec<Image> {
    let list: Vec<serde_json::Value> = out
        .lines()
        .find_map(|l| l.strip_prefix("DF "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    list.iter()
        .filter(|v| v["Repository"] == repo)
        .map(|v| Image {
            tag: text(v, "Tag"),
            size: parse_size(&text(v, "UniqueSize")).unwrap_or(0),
            created: text(v, "CreatedAt"),
        })
        .collect()
}

/// The `S` lines of [`scan`]'s output: (name in the backups folder, bytes).
pub fn parse_sizes(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("S ")?.splitn(2, ' ');
            let size = w.next()?.parse().ok()?;
            Some((w.next()?.to_string(), size))
        })
        .collect()
}

/// Removes the given tags of the repository one by one (never forced: an image a container
/// uses stays), printing `removed TAG` or `kept TAG` (`docker rmi`'s complaint follows on the
/// same line).
pub fn rmi_each(env: &Env, tags: &[String]) -> String {
    let list: Vec<String> = tags.iter().map(|t| q(t)).collect();
    format!(
        "for t in {}; do if e=$(docker rmi {}:\"$t\" 2>&1 >/dev/null); then echo \"removed $t\"; else echo \"kept $t $(printf '%s' \"$e\" | tr '\\n' ' ')\"; fi; done",
        list.join(" "),
        q(&env.repo())
    )
}

/// The tags [`rmi_each`] reported `removed`.
pub fn parse_removed(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("removed "))
        .map(|t| t.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_lines_parse() {
        let out = r#"DF [{"Repository":"r/o","Tag":"v1.0.0","CreatedAt":"2026-12-01 10:00:00 +0000 UTC","UniqueSize":"117.3MB","Size":"117MB"},{"Repository":"r/o","Tag":"<none>","CreatedAt":"2026-12-01 09:00:00 +0000 UTC","UniqueSize":"0B"},{"Repository":"other","Tag":"v1.0.0","UniqueSize":"1GB"}]
M 20260101T000000Z-aa 10 {}
S 4096 .create.abc
S 17 20260101T000000Z-aa.tar.zst
S bad x
"#;
        let imgs = parse_images(out, "r/o");
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].tag, "v1.0.0");
        assert_eq!(imgs[0].size, 117_300_000);
        assert_eq!(imgs[0].created, "2026-12-01 10:00:00 +0000 UTC");
        assert_eq!(imgs[1].size, 0);
        assert!(parse_images("DF garbled", "r/o").is_empty());
        for (s, b) in [
            ("0B", Some(0)),
            ("4.096kB", Some(4096)),
            ("1.2GB", Some(1_200_000_000)),
            ("x", None),
            ("12", None),
        ] {
            assert_eq!(parse_size(s), b, "{s}");
        }
        assert_eq!(
            parse_sizes(out),
            [
                (".create.abc".to_string(), 4096),
                ("20260101T000000Z-aa.tar.zst".to_string(), 17)
            ]
        );
        assert_eq!(
            parse_removed("removed v1.0.0\nkept v1.1.0 conflict: in use\n"),
            ["v1.0.0"]
        );
    }
}

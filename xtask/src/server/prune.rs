//! `cargo xtask prune` on the server's side (issue 15): one read-only scan of what retention
//! looks at (the repository's images with their sizes, the backups folder, the history), and the
//! removal of images reporting each tag's fate. Snapshot files are removed with
//! [`super::snapshot::remove_files`].

use super::q;
use super::snapshot;
use crate::config::Env;

/// One round trip: `IMG SIZE_BYTES TAG CREATED_AT` per image of the environment's repository
/// (`docker images`, `<none>` tags included with size 0), then [`snapshot::prune_scan`]'s lines
/// (`M`/`I` snapshots, `P AGE NAME` partial files, `H JSON` history lines), then
/// `S SIZE_BYTES NAME` per entry of the backups folder (`du -sb`: a folder counts whole).
/// Exits non-zero when docker or the backups folder cannot be read.
pub fn scan(env: &Env) -> String {
    let r = q(&env.repo());
    format!(
        "l=$(docker images --format '{{{{.Tag}}}} {{{{.CreatedAt}}}}' {r}) || exit 1; printf '%s\\n' \"$l\" | while read -r t c; do [ -n \"$t\" ] || continue; s=$(docker image inspect --format '{{{{.Size}}}}' {r}:\"$t\" 2>/dev/null); echo \"IMG ${{s:-0}} $t $c\"; done; {scan}; if [ -d {b} ]; then cd {b} || exit 1; for f in * .create.* .delta.*; do [ -e \"$f\" ] || continue; echo \"S $(du -sb -- \"$f\" | cut -f1) $f\"; done; fi",
        scan = snapshot::prune_scan(env),
        b = q(&env.backups_dir),
    )
}

/// An image of [`scan`]'s `IMG` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub tag: String,
    /// Bytes, as `docker image inspect` counts them (layers shared with other images included).
    pub size: u64,
    /// `docker images`' `CreatedAt` (sorts by time within one server).
    pub created: String,
}

/// The `IMG` lines of [`scan`]'s output.
pub fn parse_images(out: &str) -> Vec<Image> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("IMG ")?.splitn(3, ' ');
            let size = w.next()?.parse().ok()?;
            let tag = w.next()?.to_string();
            let created = w.next().unwrap_or("").to_string();
            Some(Image { tag, size, created })
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
        let out = "IMG 123 v1.0.0 2026-12-01 10:00:00 +0000 UTC\nIMG 0 <none> 2026-12-01 09:00:00 +0000 UTC\nIMG x bad line\nM 20260101T000000Z-aa 10 {}\nS 4096 .create.abc\nS 17 20260101T000000Z-aa.tar.zst\nS bad x\n";
        let imgs = parse_images(out);
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].tag, "v1.0.0");
        assert_eq!(imgs[0].size, 123);
        assert_eq!(imgs[0].created, "2026-12-01 10:00:00 +0000 UTC");
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

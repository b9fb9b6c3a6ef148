//! `cargo xtask prune` (issue 15): the repository's images beyond `keep_images` and the snapshots
//! beyond `keep_snapshots` (with stale partial files), under the deploy lock, over one connection.
//!
//! The rules are the deploy's own: images by [`app::prune_candidates`] (the newest `keep_images`
//! version tags stay, and always the running and the last good version), snapshots by
//! [`prune::select`] (never the one `rollback --restore` would pick for the running or the last
//! good version, [`prune::restore_target`]; partial files only when idle for `lock_ttl_s`).
//! `--dry-run` runs the same read-only scan and the same [`choose`], and skips the lock and the
//! removals: what it lists is what a run removes, unless the server changes in between.

use super::prune::{self, Selection};
use super::steps::Steps;
use crate::config::Env;
use crate::core::records::HistoryRecord;
use crate::core::util::random_hex;
use crate::plan::{Executor, Step};
use crate::server::{self, app, prune as sp, snapshot as ss};
use anyhow::{Context, Result};

/// One thing a prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `image`, `snapshot` or `partial`.
    pub kind: &'static str,
    /// The image's tag, the snapshot's id, or the partial file's name in the backups folder.
    pub name: String,
    /// Bytes: what removing an image frees (its layers no other image uses: docker's
    /// `UniqueSize`), a snapshot's three files, a partial file or folder.
    pub size: u64,
}

/// What a prune removes and why the rest stays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    /// Images to remove, oldest first.
    pub images: Vec<Item>,
    /// The image tags that stay whatever their age: the running and the last good version.
    pub protected_images: Vec<String>,
    /// The version tags kept.
    pub kept_images: Vec<String>,
    /// Snapshots and stale partial files to remove (the snapshots' selection in `snapshots`).
    pub files: Vec<Item>,
    pub snapshots: Selection,
}

impl Choice {
    /// Everything removed, images first.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.images.iter().chain(&self.files)
    }
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn total(&self) -> u64 {
        self.items().map(|i| i.size).sum()
    }
}

/// Chooses from [`sp::scan`]'s output what a prune removes, with `running` and `last_good` the
/// version tags running and recorded as last good ("" when none).
pub fn choose(env: &Env, out: &str, running: &str, last_good: &str) -> Choice {
    let protect: Vec<&str> = [running, last_good]
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    // Images: the deploy's rule (`app::prune_candidates`) on the same listing.
    let images = sp::parse_images(out, &env.repo());
    let listing: String = images
        .iter()
        .map(|i| format!("{} {}\n", i.tag, i.created))
        .collect();
    let doomed = app::prune_candidates(&listing, env.cfg.keep_images as usize, &protect);
    let mut by_age: Vec<&sp::Image> = images.iter().collect();
    by_age.sort_by(|a, b| a.created.cmp(&b.created));
    let mut c = Choice {
        protected_images: protect.iter().map(|s| s.to_string()).collect(),
        ..Choice::default()
    };
    for i in by_age {
        if doomed.contains(&i.tag) {
            c.images.push(Item {
                kind: "image",
                name: i.tag.clone(),
                size: i.size,
            });
        } else if crate::core::version::is_valid(&i.tag) {
            c.kept_images.push(i.tag.clone());
        }
    }
    // Snapshots: `snapshot prune`'s rule.
    let hist: Vec<HistoryRecord> = ss::history_lines(out)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut protected: Vec<String> = Vec::new();
    for v in &protect {
        if let Some(id) = prune::restore_target(&hist, v) {
            if !protected.contains(&id) {
                protected.push(id);
            }
        }
    }
    let listed = ss::parse_list(env, out);
    let sel = prune::select(
        &listed,
        &ss::parse_partials(out),
        env.cfg.keep_snapshots as usize,
        &protected,
        env.cfg.lock_ttl_s,
    );
    let sizes = sp::parse_sizes(out);
    let size_of = |name: &str| {
        sizes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .unwrap_or(0)
    };
    for id in &sel.delete {
        let files: u64 = snapshot_files(id).iter().map(|f| size_of(f)).sum();
        let archive = listed.iter().find(|l| &l.id == id).map_or(0, |l| l.size);
        c.files.push(Item {
            kind: "snapshot",
            name: id.clone(),
            size: files.max(archive),
        });
    }
    for name in &sel.stale {
        c.files.push(Item {
            kind: "partial",
            name: name.clone(),
            size: size_of(name),
        });
    }
    c.snapshots = sel;
    c
}

/// A snapshot's three files, by their names in the backups folder.
fn snapshot_files(id: &str) -> [String; 3] {
    [
        format!("{id}.tar.zst"),
        format!("{id}.tar.zst.sha256"),
        format!("{id}.manifest.json"),
    ]
}

/// Bytes for people: `0 B`, `812 kB`, `1.25 GB` (decimal units, as `docker images` prints them).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// What a prune did (or, under `--dry-run`, would do).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub choice: Choice,
    /// What was removed (under `--dry-run`: what would be).
    pub removed: Vec<Item>,
    /// Images chosen but kept by docker (a container uses them), with docker's reason.
    pub refused: Vec<String>,
}

/// The prune: lock, probe, scan, [`choose`], remove, unlock (released whatever happened, the
/// removals' failure included). Errors: the lock is held by a live holder or a maintenance window
/// (exit 1, nothing removed; a stale holder's lock is broken as a deploy breaks it), a step
/// failed (exit 1; what was removed before it is printed by the step).
pub fn run(x: &mut Executor, env: &Env, server_name: &str) -> Result<Outcome> {
    let st = Steps::new(env, server_name);
    let lock_id = format!("prune-{}", random_hex(8)?);
    let holder = crate::core::liveness::holder(lock_id.clone(), "prune", super::who(), "");
    let lock_step = st.lock(&holder);
    // The same rule as a deploy's: a stale holder's lock is broken, a live one (or a maintenance
    // window) refuses with exit 1 naming it; nothing is pruned then.
    super::run::take_lock(x, env, &lock_step, 0)
        .context("nothing was pruned: the deploy lock is held")?;
    let r = locked(x, env, &st);
    let interruptible = std::mem::replace(&mut x.interruptible, false);
    let released = x.run_step(&st.unlock(&lock_id));
    x.interruptible = interruptible;
    if let Err(e) = released {
        eprintln!(
            "warning: the deploy lock could NOT be released: {}\nrelease it: cargo xtask lock release --env {}",
            x.sh.mask(&format!("{e:#}")),
            env.name
        );
    }
    r
}

fn locked(x: &mut Executor, env: &Env, st: &Steps) -> Result<Outcome> {
    let probe = super::probe(x, st)?;
    let running = server::tag_of(&probe.running);
    let last_good = probe.last_good.map(|l| l.version).unwrap_or_default();
    let scan = Step::remote(
        "prune-scan",
        "Scan the images, the backups folder and the history",
        &st.server,
        sp::scan(env),
    )
    .read_only();
    let out = x.run_step(&scan)?.stdout;
    let choice = choose(env, &out, &running, &last_good);
    let mut o = Outcome {
        choice: choice.clone(),
        ..Outcome::default()
    };
    if !choice.images.is_empty() {
        let tags: Vec<String> = choice.images.iter().map(|i| i.name.clone()).collect();
        let step = Step::remote(
            "prune-rmi",
            format!("Remove {} image(s)", tags.len()),
            &st.server,
            sp::rmi_each(env, &tags),
        );
        let out = x.run_step(&step)?;
        let removed = if x.dry_run {
            tags.clone()
        } else {
            sp::parse_removed(&out.stdout)
        };
        for i in &choice.images {
            if removed.contains(&i.name) {
                o.removed.push(i.clone());
            } else {
                let why = out
                    .stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("kept {} ", i.name)))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                o.refused.push(format!("{} ({why})", i.name));
            }
        }
    }
    if !choice.files.is_empty() {
        let mut names: Vec<String> = choice
            .snapshots
            .delete
            .iter()
            .flat_map(|id| snapshot_files(id))
            .collect();
        names.extend(choice.snapshots.stale.iter().cloned());
        x.run_step(&Step::remote(
            "prune-snapshots-rm",
            format!(
                "Delete {} snapshot(s) and {} stale partial file(s)",
                choice.snapshots.delete.len(),
                choice.snapshots.stale.len()
            ),
            &st.server,
            ss::remove_files(env, &names),
        ))?;
        o.removed.extend(choice.files.iter().cloned());
    }
    Ok(o)
}

#[cfg(test)]
mod tests;

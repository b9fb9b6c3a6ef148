//! Snapshot retention (issue 12 item 5): a deploy or rollback that ended healthy, and `snapshot
//! prune`, keep `keep_snapshots` valid snapshots in the backups folder, never the ones a rollback
//! needs, and remove stale partial files.
//!
//! **Protected**: the snapshot this run took (referenced by its history record) and the one
//! `rollback --restore` would restore ([`restore_target`], the rule `verbs/rollback.rs` uses).
//! **Stale partials**: `ID.tar.zst.partial` and `ID.manifest.json.tmp` not written for longer
//! than the environment's `lock_ttl_s`. `snapshot create` does not take the deploy lock, so a
//! concurrent one may be writing its partial file while a deploy prunes: holding the lock proves
//! nothing, but a create in progress writes its partial file continuously, so only a file idle
//! for a whole lock TTL is taken for a killed create's leftover.

use super::run::Run;
use super::steps::Steps;
use crate::config::Env;
use crate::core::records::{HistoryRecord, Outcome};
use crate::plan::{Executor, Step};
use crate::server::snapshot::{self as ss, Listed, Partial};
use anyhow::Result;
use std::collections::BTreeSet;

/// The snapshot `rollback --restore` restores while `running` runs: the one recorded by the
/// latest successful `deploy` of that version ("the snapshot taken before the running version
/// was deployed"), or `None` (that record has no snapshot, or there is no such record).
pub fn restore_target(hist: &[HistoryRecord], running: &str) -> Option<String> {
    hist.iter()
        .rev()
        .find(|r| r.kind == "deploy" && r.outcome == Outcome::Success && r.version == running)
        .and_then(|r| r.snapshot.clone())
}

/// What a prune keeps and removes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Valid snapshots kept, oldest first.
    pub keep: Vec<String>,
    /// Valid snapshots deleted, oldest first.
    pub delete: Vec<String>,
    /// The protected ids (whatever their state).
    pub protected: Vec<String>,
    /// Partial files idle for longer than the TTL (file names in the backups folder).
    pub stale: Vec<String>,
}

/// Chooses what to delete: of the valid snapshots, the protected ones and then the newest stay
/// until `keep` (at least 1) are kept, and with them every parent an incremental one among them
/// needs; every other valid one goes. Incomplete and corrupt
/// snapshots are never deleted here (`snapshot list` shows them). Partial files idle for more
/// than `ttl_s` seconds are stale.
pub fn select(
    listed: &[Listed],
    partials: &[Partial],
    keep: usize,
    protected: &[String],
    ttl_s: u64,
) -> Selection {
    let keep = keep.max(1);
    let valid: Vec<&Listed> = listed.iter().filter(|l| l.state == "valid").collect();
    let mut kept: BTreeSet<&str> = valid
        .iter()
        .map(|l| l.id.as_str())
        .filter(|id| protected.iter().any(|p| p == id))
        .collect();
    // Newest first (ids sort by time).
    let mut newest: Vec<&str> = valid.iter().map(|l| l.id.as_str()).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    for id in newest {
        if kept.len() >= keep {
            break;
        }
        kept.insert(id);
    }
    // An incremental snapshot restores through its parents (issue 13 item 2): every ancestor of
    // a kept snapshot is kept too, beyond `keep` if need be.
    let parent_of = |id: &str| {
        listed
            .iter()
            .find(|l| l.id == id)
            .and_then(|l| l.parent.as_deref())
    };
    let mut todo: Vec<&str> = kept.iter().copied().collect();
    while let Some(id) = todo.pop() {
        if let Some(p) = parent_of(id) {
            if kept.insert(p) {
                todo.push(p);
            }
        }
    }
    let mut s = Selection {
        protected: protected.to_vec(),
        stale: partials
            .iter()
            .filter(|p| p.age_s > ttl_s)
            .map(|p| p.name.clone())
            .collect(),
        ..Selection::default()
    };
    let mut ids: Vec<&str> = valid.iter().map(|l| l.id.as_str()).collect();
    ids.sort_unstable();
    for id in ids {
        if kept.contains(id) {
            s.keep.push(id.to_string());
        } else {
            s.delete.push(id.to_string());
        }
    }
    s
}

/// Scans the backups folder and the history, then deletes what [`select`] chose. `keep` valid
/// snapshots stay; protected: `this_run`'s snapshot and the one `rollback --restore` would pick
/// while any of `running` runs. Prints what it kept and removed.
pub fn prune(
    x: &mut Executor,
    env: &Env,
    server: &str,
    keep: usize,
    running: &[&str],
    this_run: Option<&str>,
) -> Result<Selection> {
    let out = x.run(&Steps::new(env, server).prune_snapshots())?.stdout;
    let hist: Vec<HistoryRecord> = ss::history_lines(&out)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut protected: Vec<String> = this_run.map(str::to_string).into_iter().collect();
    for v in running.iter().filter(|v| !v.is_empty()) {
        if let Some(id) = restore_target(&hist, v) {
            if !protected.contains(&id) {
                protected.push(id);
            }
        }
    }
    let sel = select(
        &ss::parse_list(env, &out),
        &ss::parse_partials(&out),
        keep,
        &protected,
        env.cfg.lock_ttl_s,
    );
    let mut names: Vec<String> = sel
        .delete
        .iter()
        .flat_map(|id| {
            [
                format!("{id}.tar.zst"),
                format!("{id}.tar.zst.sha256"),
                format!("{id}.manifest.json"),
            ]
        })
        .collect();
    names.extend(sel.stale.iter().cloned());
    if !names.is_empty() {
        x.run(&Step::remote(
            "prune-snapshots-rm",
            format!(
                "Delete {} snapshot(s) and {} stale partial file(s)",
                sel.delete.len(),
                sel.stale.len()
            ),
            server,
            ss::remove_files(env, &names),
        ))?;
    }
    x.sh.say(&format!(
        "    kept {} valid snapshot(s) (protected: {}), deleted {}{}",
        sel.keep.len(),
        if sel.protected.is_empty() {
            "none".to_string()
        } else {
            sel.protected.join(", ")
        },
        sel.delete.len(),
        if sel.stale.is_empty() {
            String::new()
        } else {
            format!(", removed stale partial files {}", sel.stale.join(", "))
        }
    ));
    Ok(sel)
}

/// The deploy's `prune-snapshots` step, after a healthy gate: a failure is a warning naming what
/// failed and the command to prune by hand, never the deploy's failure (issue 12: exit 0).
pub fn after_deploy(run: &mut Run, step: &Step) {
    let (env, server) = (run.env, run.st.server.clone());
    let keep = env.cfg.keep_snapshots as usize;
    let this_run = run.snapshot.clone();
    let version = run.version;
    let r = run.x.step_of(step, |x| {
        prune(x, env, &server, keep, &[version], this_run.as_deref())
    });
    if let Err(e) = r {
        let msg = format!(
            "pruning snapshots failed (the deploy itself succeeded): {}\n    prune by hand: cargo xtask snapshot prune --env {}",
            run.sh.mask(&format!("{e:#}")),
            env.name
        );
        if run.sh.gha {
            println!(
                "::warning::{}",
                msg.replace('%', "%25").replace('\n', "%0A")
            );
        }
        eprintln!("warning: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn listed(ids: &[(&str, &str)]) -> Vec<Listed> {
        let e = config::test_env("/srv/observer", "/tmp/r.git");
        ids.iter()
            .map(|(id, state)| Listed {
                id: id.to_string(),
                state: state.to_string(),
                size: 1,
                created: String::new(),
                version: String::new(),
                files: ss::files(&e, id),
                parent: None,
            })
            .collect()
    }

    #[test]
    fn the_parents_of_a_kept_incremental_snapshot_are_kept() {
        let mut l = listed(&[
            ("s1", "valid"),
            ("s2", "valid"),
            ("s3", "valid"),
            ("s4", "valid"),
        ]);
        // s4 on s3 on s1 (s2 is a full one in between).
        l[3].parent = Some("s3".into());
        l[2].parent = Some("s1".into());
        let s = select(&l, &[], 1, &[], 60);
        assert_eq!(s.keep, vec!["s1", "s3", "s4"]);
        assert_eq!(s.delete, vec!["s2"]);
        // A protected delta keeps its chain too.
        let s = select(&l, &[], 1, &["s3".to_string()], 60);
        assert_eq!(s.keep, vec!["s1", "s3"]);
        assert_eq!(s.delete, vec!["s2", "s4"]);
    }

    fn rec(kind: &str, version: &str, outcome: Outcome, snapshot: Option<&str>) -> HistoryRecord {
        HistoryRecord {
            kind: kind.into(),
            version: version.into(),
            outcome,
            snapshot: snapshot.map(str::to_string),
            ..HistoryRecord::default()
        }
    }

    #[test]
    fn the_restore_target_is_the_latest_successful_deploy_of_the_running_version() {
        let hist = vec![
            rec("deploy", "v1", Outcome::Success, Some("s1")),
            rec("deploy", "v2", Outcome::Success, Some("s2")),
            rec("deploy", "v3", Outcome::Failed, Some("s3")),
            rec("rollback", "v1", Outcome::Success, Some("s4")),
            rec("deploy", "v2", Outcome::Success, Some("s5")),
        ];
        assert_eq!(restore_target(&hist, "v2").as_deref(), Some("s5"));
        // A rollback record is not what --restore reads: the deploy of v1 is.
        assert_eq!(restore_target(&hist, "v1").as_deref(), Some("s1"));
        assert_eq!(
            restore_target(&hist, "v3"),
            None,
            "failed deploys do not count"
        );
        assert_eq!(restore_target(&hist, "v9"), None);
        // The latest deploy of the version took no snapshot (--no-snapshot): nothing to restore.
        let mut h = hist.clone();
        h.push(rec("deploy", "v2", Outcome::Success, None));
        assert_eq!(restore_target(&h, "v2"), None);
    }

    #[test]
    fn protected_snapshots_are_never_deleted_and_keep_counts_them() {
        let l = listed(&[
            ("a1", "valid"),
            ("a2", "valid"),
            ("a3", "valid"),
            ("a4", "incomplete"),
            ("a5", "valid"),
            ("a6", "corrupt"),
            ("a7", "valid"),
            ("a8", "valid"),
        ]);
        // Nothing protected: the newest 3 valid.
        let s = select(&l, &[], 3, &[], 600);
        assert_eq!(s.keep, ["a5", "a7", "a8"]);
        assert_eq!(s.delete, ["a1", "a2", "a3"]);
        // An old protected one stays and counts toward keep.
        let s = select(&l, &[], 3, &["a1".into(), "a8".into()], 600);
        assert_eq!(s.keep, ["a1", "a7", "a8"]);
        assert_eq!(s.delete, ["a2", "a3", "a5"]);
        // More protected than keep: all protected stay, nothing else.
        let s = select(&l, &[], 1, &["a2".into(), "a3".into()], 600);
        assert_eq!(s.keep, ["a2", "a3"]);
        assert_eq!(s.delete, ["a1", "a5", "a7", "a8"]);
        // keep 0 reads as 1; a protected id that is not valid protects nothing else.
        let s = select(&l, &[], 0, &["a4".into()], 600);
        assert_eq!(s.keep, ["a8"]);
        // Incomplete and corrupt snapshots are never in the delete list.
        for keep in 0..10 {
            for p in [vec![], vec!["a1".to_string()], vec!["a7".to_string()]] {
                let s = select(&l, &[], keep, &p, 600);
                assert!(!s.delete.iter().any(|d| d == "a4" || d == "a6"));
                assert!(!s.delete.iter().any(|d| p.contains(d)), "{p:?} {s:?}");
                assert_eq!(s.keep.len() + s.delete.len(), 6);
            }
        }
    }

    #[test]
    fn with_histories_the_rollback_snapshots_survive() {
        let l = listed(&[
            ("s1", "valid"),
            ("s2", "valid"),
            ("s3", "valid"),
            ("s4", "valid"),
            ("s5", "valid"),
            ("s6", "valid"),
        ]);
        // A rollback back to v1 (its own pre-rollback snapshot s6): --restore would pick s1.
        let hist = vec![
            rec("deploy", "v1", Outcome::Success, Some("s1")),
            rec("deploy", "v2", Outcome::Success, Some("s2")),
            rec("rollback", "v1", Outcome::Success, Some("s6")),
        ];
        let protected: Vec<String> = [Some("s6".to_string()), restore_target(&hist, "v1")]
            .into_iter()
            .flatten()
            .collect();
        let s = select(&l, &[], 3, &protected, 600);
        assert_eq!(s.keep, ["s1", "s5", "s6"]);
        assert_eq!(s.delete, ["s2", "s3", "s4"]);
    }

    #[test]
    fn only_idle_partials_are_stale() {
        let p = [
            Partial {
                name: "x.tar.zst.partial".into(),
                age_s: 601,
            },
            Partial {
                name: "y.tar.zst.partial".into(),
                age_s: 3,
            },
            Partial {
                name: "z.manifest.json.tmp".into(),
                age_s: 9000,
            },
        ];
        let s = select(&[], &p, 5, &[], 600);
        assert_eq!(s.stale, ["x.tar.zst.partial", "z.manifest.json.tmp"]);
        assert!(s.keep.is_empty() && s.delete.is_empty());
    }

    #[test]
    fn the_scan_output_parses() {
        let out = "I 20260101T000000Z-aa 12\nP 700 20260101T000000Z-aa.tar.zst.partial\nP x bad\nP 5 a/b\nH {\"kind\":\"deploy\"}\n";
        assert_eq!(
            ss::parse_partials(out),
            [Partial {
                name: "20260101T000000Z-aa.tar.zst.partial".into(),
                age_s: 700
            }]
        );
        assert_eq!(
            ss::history_lines(out).collect::<Vec<_>>(),
            ["{\"kind\":\"deploy\"}"]
        );
    }
}

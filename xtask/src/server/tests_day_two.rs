//! Golden scripts of the day-two verbs (issue 15): prune, setup, logs, exec, gaps; the golden
//! test chains them after the other builders.
use super::*;
use crate::config::{self, Env};

/// (name, script) for the day-two builders, for the golden tests' environment `e`.
pub fn scripts(e: &Env) -> Vec<(&'static str, String)> {
    let env = || e.clone();
    vec![
        ("prune-scan", prune::scan(e)),
        (
            "prune-rmi",
            prune::rmi_each(e, &["v1.0.0".into(), "v1.1.0-rc.1".into()]),
        ),
        ("setup-check", setup::check(e)),
        (
            "setup-apply",
            setup::apply(&[
                setup::Action::Create {
                    path: e.remote_dir.clone(),
                    mode: 0o750,
                },
                setup::Action::Chmod {
                    path: e.backups_dir.clone(),
                    mode: 0o2755,
                },
                setup::Action::Chown {
                    path: format!("{}/.deploy", e.remote_dir),
                    uid: 1001,
                    gid: 1001,
                },
            ]),
        ),
        // issue 15: logs, exec, gaps
        (
            "logs-tail",
            logs::script(e, &logs_query(Some(100), false, None)),
        ),
        (
            "logs-since-grep",
            logs::script(e, &logs_query(Some(5), false, Some("$(id)'; x"))),
        ),
        (
            "logs-follow",
            logs::script(e, &logs_query(Some(5), true, None)),
        ),
        (
            "logs-follow-since-grep",
            logs::script(
                e,
                &logs::Query {
                    tail: None,
                    since: Some("2026-12-04T07:00:00Z".into()),
                    grep: Some("^(error|warning):".into()),
                    follow: true,
                },
            ),
        ),
        ("logs-swarm-follow", {
            let mut sw = env();
            sw.cfg.engine = config::Engine::Swarm;
            logs::script(&sw, &logs_query(Some(5), true, None))
        }),
        (
            "exec",
            logs::exec(
                &["python3".into(), "-c".into(), "print('$(id)')".into()],
                false,
                false,
            ),
        ),
        ("exec-tty", logs::exec(&["sh".into()], true, true)),
        ("gaps", gaps::script(e, 86_400, 1000)),
    ]
}

/// A `logs` query: `since` set along with `grep`.
fn logs_query(tail: Option<usize>, follow: bool, grep: Option<&str>) -> logs::Query {
    logs::Query {
        tail,
        since: grep.map(|_| "2026-12-04T07:00:00Z".to_string()),
        grep: grep.map(|g| g.to_string()),
        follow,
    }
}

//! `logs` and `exec` (issue 15): the container's log and `<remote_dir>/logs/observer.log` in one
//! remote script, each line prefixed by its source; a command in the running container.
//!
//! Every user value reaches the shell quoted ([`q`]): the `--grep` RE is one single-quoted word
//! handed to `grep -E -e`, never shell text; `--since` arrives as an RFC 3339 time computed by
//! the controller; `-n` is a number.

use super::q;
use crate::config::Env;
use crate::core::contract::CONTAINER;

/// The prefix of the container's lines (`[container] …`; `[service] …` on a swarm).
pub const SRC_CONTAINER: &str = "container";
/// The prefix of the swarm service's lines.
pub const SRC_SERVICE: &str = "service";
/// The prefix of `logs/observer.log`'s lines.
pub const SRC_FILE: &str = "observer.log";

/// What `logs` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The last N lines per source (`None`: all; with neither this nor `since`, the verb sets 100).
    pub tail: Option<usize>,
    /// Only lines at or after this time: RFC 3339 UTC (`2026-12-04T07:00:00Z`), computed by the
    /// controller from `--since 42m`.
    pub since: Option<String>,
    /// An extended RE (`grep -E`) lines must match (before the prefix is added).
    pub grep: Option<String>,
    /// Follow both sources until the controller closes the script's stdin.
    pub follow: bool,
}

/// What prefixes each line with `[src] `. Following, a shell loop: it handles each line as it
/// arrives, where `mawk` (Debian's awk) would wait to fill its input buffer from a pipe.
fn prefix(src: &str, follow: bool) -> String {
    if follow {
        format!("while IFS= read -r l; do printf '[{src}] %s\\n' \"$l\"; done")
    } else {
        format!("awk '{{ print \"[{src}] \" $0 }}'")
    }
}

/// ` | grep -E -e 'RE'` (line-buffered when following), or "".
pub fn grep_filter(re: Option<&str>, follow: bool) -> String {
    match re {
        Some(re) => format!(
            " | grep {}-E -e {}",
            if follow { "--line-buffered " } else { "" },
            q(re)
        ),
        None => String::new(),
    }
}

/// `if …; fi; `: exits 2 (grep's complaint and ours on stderr) when the server's `grep -E`
/// cannot compile `re`. Without it such an RE silently filters everything out: grep's status is
/// lost in the pipes.
pub fn grep_check(re: &str) -> String {
    format!(
        "if grep -E -e {} </dev/null >/dev/null; [ $? -eq 2 ]; then echo 'logs: --grep is not an extended RE this grep accepts' >&2; exit 2; fi; ",
        q(re)
    )
}

/// `awk` keeping observer.log's lines from `since` on: a line that starts with a timestamp
/// (`YYYY-MM-DDTHH:MM:SS…`, the service's log format) decides; lines without one (a traceback)
/// follow the line before them. Compared to the second, as text (UTC both).
fn since_filter(since: &str) -> String {
    format!(
        "awk -v c={} '/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ {{ p = (substr($0, 1, 19) >= substr(c, 1, 19)) }} p'",
        q(since)
    )
}

/// The remote script: both sources, each line prefixed (`[container] ` or `[service] `, and
/// `[observer.log] `), filtered by `--grep`. Without `follow` it prints the container's lines,
/// then the file's, and ends; with `follow` both stream concurrently until the script's stdin
/// closes (the controller's Ctrl-C), then everything the script started is stopped (`kill 0`:
/// sshd starts the script as a process group of its own).
pub fn script(env: &Env, qy: &Query) -> String {
    let file = q(&format!("{}/logs/observer.log", env.remote_dir));
    // Without -f, -n counts the lines --grep keeps: all are read, filtered, then the last N kept.
    let lines = |n: Option<usize>| n.map(|n| format!(" | tail -n {n}")).unwrap_or_default();
    let grep_first = !qy.follow && qy.grep.is_some();
    let (tail, after) = match (grep_first, qy.tail) {
        (true, n) => ("all".to_string(), lines(n)),
        (false, Some(n)) => (n.to_string(), String::new()),
        (false, None) => ("all".to_string(), String::new()),
    };
    let since = qy
        .since
        .as_ref()
        .map(|s| format!(" --since {}", q(s)))
        .unwrap_or_default();
    let f = if qy.follow { " -f" } else { "" };
    let g = grep_filter(qy.grep.as_deref(), qy.follow);
    let (src, docker) = if env.is_swarm() {
        (
            SRC_SERVICE,
            format!(
                "docker service logs --no-task-ids{f} --tail {tail}{since} {}",
                super::swarm::SERVICE
            ),
        )
    } else {
        (
            SRC_CONTAINER,
            format!("docker logs{f} --tail {tail}{since} {CONTAINER}"),
        )
    };
    let container = format!("{docker} 2>&1{g}{after} | {}", prefix(src, qy.follow));
    let file_part = match (&qy.since, qy.follow) {
        (None, false) => {
            let read = match (grep_first, qy.tail) {
                (false, Some(n)) => format!("tail -n {n} \"$f\""),
                _ => "cat \"$f\"".into(),
            };
            format!("{read}{g}{after} | {}", prefix(SRC_FILE, false))
        }
        (Some(s), false) => format!(
            "{} \"$f\"{}{g}{after} | {}",
            since_filter(s),
            if grep_first { String::new() } else { lines(qy.tail) },
            prefix(SRC_FILE, false)
        ),
        (None, true) => format!(
            "tail -n {} -F \"$f\" 2>/dev/null{g} | {}",
            qy.tail.map_or("+1".into(), |n| n.to_string()),
            prefix(SRC_FILE, true)
        ),
        // The file as it is now through the filter, then what is appended from that byte on:
        // no line lost or repeated in between.
        (Some(s), true) => format!(
            "n=0; if [ -f \"$f\" ]; then n=$(wc -c < \"$f\"); fi; {{ head -c $((n)) \"$f\" 2>/dev/null | {}{}; tail -c +$((n + 1)) -F \"$f\" 2>/dev/null; }}{g} | {}",
            since_filter(s),
            lines(qy.tail),
            prefix(SRC_FILE, true)
        ),
    };
    let check = qy.grep.as_deref().map(grep_check).unwrap_or_default();
    if qy.follow {
        format!(
            "{check}f={file}; {{ {container}; }} & {{ {file_part}; }} & cat >/dev/null; trap '' TERM; kill -TERM 0 2>/dev/null; true"
        )
    } else {
        format!("{check}f={file}; {container}; if [ -f \"$f\" ]; then {file_part}; fi; true")
    }
}

/// `docker exec` of `argv` in the running container, every word quoted; `-i` keeps stdin open,
/// `-t` allocates a TTY (with `ssh -t` on the controller's side).
pub fn exec(argv: &[String], stdin: bool, tty: bool) -> String {
    let flags = match (stdin, tty) {
        (true, true) => " -it",
        (true, false) => " -i",
        (false, true) => " -t",
        (false, false) => "",
    };
    let words: Vec<String> = argv.iter().map(|a| q(a)).collect();
    format!("docker exec{flags} {CONTAINER} {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RE grep cannot compile fails the script (exit 2) instead of printing nothing; a valid
    /// or hostile one passes the check without running anything.
    #[test]
    fn an_invalid_re_fails_the_script() {
        let run = |re: &str| {
            duct::cmd!("sh", "-c", format!("{}echo passed", grep_check(re)))
                .stdout_capture()
                .stderr_capture()
                .unchecked()
                .run()
                .unwrap()
        };
        for re in ["[", "a(", "(b"] {
            let out = run(re);
            assert_eq!(out.status.code(), Some(2), "{re:?}: {out:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("--grep is not"));
        }
        for re in ["active|standby", "$(id)'; x", "^(error|warning):", "a\nb"] {
            let out = run(re);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "passed\n",
                "{re:?}: {out:?}"
            );
        }
    }

    /// A hostile RE stays one argument of grep: it neither runs a command nor breaks the line.
    #[test]
    fn a_hostile_re_is_data() {
        let dir = std::env::temp_dir().join(format!(
            "xtask-grep-{}",
            crate::core::util::random_hex(4).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("pwned");
        let m = marker.display();
        for re in [
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("x'; touch {m}; echo '"),
            format!("a\"; touch {m}; \""),
            format!("a|b; touch {m}"),
            format!("a\ntouch {m}"),
        ] {
            let script = format!(
                "printf '%s\\n' keep 'a|b; x' drop{}",
                grep_filter(Some(&re), false)
            );
            let out = duct::cmd!("sh", "-c", &script)
                .stdout_capture()
                .stderr_capture()
                .unchecked()
                .run()
                .unwrap();
            assert!(!marker.exists(), "the RE {re:?} ran a command");
            // grep exits 0 or 1 (no match), never 2 (a syntax error) for these.
            assert!(out.status.code().unwrap_or(2) <= 1, "{re:?}: {out:?}");
        }
        // An ordinary RE filters.
        let script = format!(
            "printf '%s\\n' 'observer started' 'error: x' ok{}",
            grep_filter(Some("^(error|warning):"), false)
        );
        let out = duct::cmd!("sh", "-c", &script).read().unwrap();
        assert_eq!(out, "error: x");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exec_quotes_every_word() {
        let argv: Vec<String> = ["python3", "-c", "print('a b'); import os"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            exec(&argv, false, false),
            "docker exec qts-observer python3 -c 'print('\\''a b'\\''); import os'"
        );
        assert!(exec(&argv, true, true).starts_with("docker exec -it "));
    }

    #[test]
    fn the_since_filter_keeps_continuation_lines() {
        let script = format!(
            "printf '%s\\n' '2026-12-04T06:59:59.999Z old' '  old trace' '2026-12-04T07:00:00.000Z new' '  new trace' | {}",
            since_filter("2026-12-04T07:00:00Z")
        );
        let out = duct::cmd!("sh", "-c", &script).read().unwrap();
        assert_eq!(out, "2026-12-04T07:00:00.000Z new\n  new trace");
    }
}

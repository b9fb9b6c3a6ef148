//! Whether the deploy lock's holder is still alive (issue 12). A holder records what tells a dead
//! holder from a live one across machines (`records::LockHolder`): the workflow run under GitHub
//! Actions, the machine id and boot id, the PID namespace, the pid and that process's start time.
//! A host name and a pid alone are not enough: another machine (or container) may share the name,
//! and a pid means something only inside its PID namespace and until it is reused.

use super::records::{LockHolder, WorkflowRun};
use super::util::env_nonempty;

/// What identifies this process to a later judge (fields of `LockHolder`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `/etc/machine-id` (empty when unreadable).
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    pub boot_id: String,
    /// `readlink /proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    pub pid_ns: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// When this machine booted (Unix seconds, `btime` of `/proc/stat`; 0 when unreadable):
    /// only a holder that started before it can have been lost to a reboot. Not recorded.
    pub boot_epoch: u64,
}

/// `btime` of `/proc/stat` (0 when unreadable).
fn boot_epoch() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .unwrap_or(0)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The start time (clock ticks since boot) of process `pid` as this process sees it, `None` when
/// there is no such process. Field 22 of `/proc/PID/stat`, counted after the `comm` field's
/// closing parenthesis (the name may contain spaces and parentheses): proc(5).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)`: field 3 (state) is the first; field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Identity {
    /// This process.
    pub fn this_process() -> Identity {
        let pid = std::process::id();
        Identity {
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            boot_epoch: boot_epoch(),
        }
    }
}

/// The GitHub Actions workflow run this process belongs to (`GITHUB_REPOSITORY`,
/// `GITHUB_WORKFLOW_REF` without its `@ref`, `GITHUB_RUN_ID`, `GITHUB_RUN_ATTEMPT`), `None`
/// outside Actions.
pub fn workflow_run() -> Option<WorkflowRun> {
    env_nonempty("GITHUB_ACTIONS")?;
    let run_id = env_nonempty("GITHUB_RUN_ID")?;
    let workflow = env_nonempty("GITHUB_WORKFLOW_REF")
        .map(|w| w.split('@').next().unwrap_or("").to_string())
        .or_else(|| env_nonempty("GITHUB_WORKFLOW"))
        .unwrap_or_default();
    let repository = env_nonempty("GITHUB_REPOSITORY").unwrap_or_default();
    let server = env_nonempty("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    Some(WorkflowRun {
        url: format!("{server}/{repository}/actions/runs/{run_id}"),
        repository,
        workflow,
        run_id,
        run_attempt: env_nonempty("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into()),
    })
}

/// A holder record for this process, taken now: operation `deploy`, `rollback` or `restore`;
/// `who` as `ops::who` says.
pub fn holder(id: String, operation: &str, who: String, version: &str) -> LockHolder {
    let me = Identity::this_process();
    LockHolder {
        id,
        operation: operation.to_string(),
        who,
        host: super::util::hostname(),
        pid: me.pid,
        version: version.to_string(),
        started: super::util::now_rfc3339(),
        started_epoch: super::util::epoch(),
        machine_id: me.machine_id,
        boot_id: me.boot_id,
        pid_ns: me.pid_ns,
        start_ticks: me.start_ticks,
        workflow_run: workflow_run(),
        message: String::new(),
        expires_epoch: 0,
    }
}

/// [`judge`] from this process, now, with this machine's `/proc`.
pub fn judge_here(h: &LockHolder, ttl_s: u64) -> Liveness {
    judge(
        h,
        ttl_s,
        super::util::epoch(),
        &Identity::this_process(),
        workflow_run().as_ref(),
        start_ticks,
    )
}

/// The judgement on a lock holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Its process is seen running (the reason says how it was told).
    Alive(String),
    /// It can never release the lock itself (the reason names why): the lock may be broken.
    Stale(String),
    /// Nothing here can tell (another machine, another PID namespace, a record from an older
    /// version of the tool): it is taken as alive until `lock_ttl_s`.
    Unknown,
}

/// Judges `h` at `now` (Unix seconds) from `me` (this process) and `run` (this workflow run, if
/// any); `ticks_of(pid)` reads a process's start time as in [`start_ticks`]. In order:
///
/// 1. older than `ttl_s` seconds → stale;
/// 2. a holder from another run (or attempt) of THIS workflow in the same repository → stale: the
///    deploy workflow's concurrency group never runs two of its runs at once, so a run that is not
///    this one has finished (cancelled or killed without releasing);
/// 3. the same machine (boot id, or machine id) → rebooted since (other boot id, and the holder
///    started before this boot) → stale; the same
///    PID namespace → alive when its pid runs with the recorded start time, else stale (gone, or the
///    pid now belongs to another process); another PID namespace → unknown;
/// 4. anything else → unknown.
///
/// A maintenance window (operation `maintenance`, `lock acquire -m`; issue 15) is judged by none of
/// these: the process that took it has exited on purpose. It is alive until `lock release`, or,
/// with an end (`expires_epoch`, `lock acquire --for`), stale after that end.
pub fn judge(
    h: &LockHolder,
    ttl_s: u64,
    now: u64,
    me: &Identity,
    run: Option<&WorkflowRun>,
    ticks_of: impl Fn(u32) -> Option<u64>,
) -> Liveness {
    if h.operation == super::records::MAINTENANCE {
        return match h.expires_epoch {
            0 => Liveness::Alive(format!(
                "a maintenance window (\"{}\"), held until `lock release`",
                h.message
            )),
            end if now >= end => Liveness::Stale(format!(
                "its maintenance window (\"{}\") ended {}s ago",
                h.message,
                now - end
            )),
            end => Liveness::Alive(format!(
                "a maintenance window (\"{}\"), {}s left",
                h.message,
                end - now
            )),
        };
    }
    let age = now.saturating_sub(h.started_epoch);
    if h.started_epoch > 0 && age > ttl_s {
        return Liveness::Stale(format!("older than the {ttl_s}s TTL ({age}s)"));
    }
    if let (Some(theirs), Some(ours)) = (&h.workflow_run, run) {
        let same_workflow = !theirs.repository.is_empty()
            && theirs.repository == ours.repository
            && theirs.workflow == ours.workflow;
        if same_workflow && (theirs.run_id != ours.run_id || theirs.run_attempt != ours.run_attempt)
        {
            return Liveness::Stale(format!(
                "its workflow run {} (attempt {}) has finished: runs of this workflow never overlap (its concurrency group)",
                theirs.run_id, theirs.run_attempt
            ));
        }
    }
    let same_boot = !h.boot_id.is_empty() && h.boot_id == me.boot_id;
    let same_machine = !h.machine_id.is_empty() && h.machine_id == me.machine_id;
    // A machine id is shared by cloned VMs and by containers of one image: another boot id
    // means a reboot only for a holder that started before this boot (else: a twin machine).
    if same_machine
        && !h.boot_id.is_empty()
        && !same_boot
        && me.boot_epoch > 0
        && h.started_epoch > 0
        && h.started_epoch < me.boot_epoch
    {
        return Liveness::Stale("its machine has rebooted since".into());
    }
    if !same_boot {
        return Liveness::Unknown;
    }
    if h.pid_ns.is_empty() || h.pid_ns != me.pid_ns || h.pid == 0 {
        return Liveness::Unknown;
    }
    match ticks_of(h.pid) {
        Some(t) if t == h.start_ticks => {
            Liveness::Alive(format!("pid {} runs on this machine", h.pid))
        }
        Some(_) => Liveness::Stale(format!(
            "pid {} on this machine now belongs to another process",
            h.pid
        )),
        None => Liveness::Stale(format!(
            "its process (pid {} on this machine) is gone",
            h.pid
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            machine_id: "m1".into(),
            boot_id: "b1".into(),
            pid_ns: "pid:[1]".into(),
            pid: 100,
            start_ticks: 5000,
            boot_epoch: 500,
        }
    }

    fn holder(id: &Identity) -> LockHolder {
        LockHolder {
            id: "x".into(),
            pid: 42,
            machine_id: id.machine_id.clone(),
            boot_id: id.boot_id.clone(),
            pid_ns: id.pid_ns.clone(),
            start_ticks: 777,
            started_epoch: 1000,
            ..LockHolder::default()
        }
    }

    fn run(id: &str, attempt: &str) -> WorkflowRun {
        WorkflowRun {
            repository: "o/r".into(),
            workflow: "o/r/.github/workflows/deploy.yml".into(),
            run_id: id.into(),
            run_attempt: attempt.into(),
            url: String::new(),
        }
    }

    #[test]
    fn the_same_process_is_alive_a_gone_or_reused_pid_is_stale() {
        let h = holder(&me());
        let alive = judge(&h, 600, 1010, &me(), None, |_| Some(777));
        assert!(matches!(alive, Liveness::Alive(_)), "{alive:?}");
        let gone = judge(&h, 600, 1010, &me(), None, |_| None);
        assert!(
            matches!(gone, Liveness::Stale(ref w) if w.contains("gone")),
            "{gone:?}"
        );
        let reused = judge(&h, 600, 1010, &me(), None, |_| Some(778));
        assert!(matches!(reused, Liveness::Stale(ref w) if w.contains("another process")));
    }

    #[test]
    fn another_pid_namespace_or_machine_cannot_be_judged_by_pid() {
        let mut other_ns = me();
        other_ns.pid_ns = "pid:[2]".into();
        // Same host name, same kernel, another PID namespace (a container): never "gone".
        let h = holder(&other_ns);
        assert_eq!(
            judge(&h, 600, 1010, &me(), None, |_| None),
            Liveness::Unknown
        );
        let mut other_machine = me();
        other_machine.machine_id = "m2".into();
        other_machine.boot_id = "b2".into();
        let h = holder(&other_machine);
        assert_eq!(
            judge(&h, 600, 1010, &me(), None, |_| None),
            Liveness::Unknown
        );
        // A record from an older version of the tool (host and pid only).
        let old = LockHolder {
            pid: 42,
            host: "same".into(),
            started_epoch: 1000,
            ..LockHolder::default()
        };
        assert_eq!(
            judge(&old, 600, 1010, &me(), None, |_| None),
            Liveness::Unknown
        );
    }

    #[test]
    fn a_reboot_a_finished_workflow_run_and_the_ttl_make_it_stale() {
        let mut rebooted = me();
        rebooted.boot_id = "b0".into();
        let h = holder(&rebooted);
        let mut booted_since = me();
        booted_since.boot_epoch = 1005;
        assert!(matches!(
            judge(&h, 600, 1010, &booted_since, None, |_| Some(777)),
            Liveness::Stale(ref w) if w.contains("rebooted")
        ));
        let mut other_runner = me();
        other_runner.machine_id = "runner-2".into();
        other_runner.boot_id = "b9".into();
        let mut h = holder(&other_runner);
        h.workflow_run = Some(run("100", "1"));
        assert!(matches!(
            judge(&h, 600, 1010, &me(), Some(&run("101", "1")), |_| None),
            Liveness::Stale(ref w) if w.contains("run 100")
        ));
        // A re-run attempt of the same run: the earlier attempt has finished.
        assert!(matches!(
            judge(&h, 600, 1010, &me(), Some(&run("100", "2")), |_| None),
            Liveness::Stale(_)
        ));
        // The same run and attempt (two jobs of one run?), another workflow, or no workflow here:
        // nothing can tell.
        assert_eq!(
            judge(&h, 600, 1010, &me(), Some(&run("100", "1")), |_| None),
            Liveness::Unknown
        );
        let mut other_wf = run("101", "1");
        other_wf.workflow = "o/r/.github/workflows/other.yml".into();
        assert_eq!(
            judge(&h, 600, 1010, &me(), Some(&other_wf), |_| None),
            Liveness::Unknown
        );
        assert_eq!(
            judge(&h, 600, 1010, &me(), None, |_| None),
            Liveness::Unknown
        );
        assert!(matches!(
            judge(&h, 600, 1601, &me(), None, |_| None),
            Liveness::Stale(ref w) if w.contains("TTL")
        ));
    }

    #[test]
    fn this_process_reads_its_own_start_time() {
        let me = Identity::this_process();
        assert!(me.start_ticks > 0);
        assert_eq!(start_ticks(me.pid), Some(me.start_ticks));
        assert!(me.pid_ns.starts_with("pid:["), "{}", me.pid_ns);
    }

    #[test]
    fn a_maintenance_window_outlives_its_process_and_the_ttl_and_ends_at_its_end() {
        let mut h = holder(&me());
        h.operation = "maintenance".into();
        h.message = "disk swap".into();
        // Its process is gone and it is older than the TTL: still held.
        let v = judge(&h, 600, 5000, &me(), None, |_| None);
        assert!(
            matches!(v, Liveness::Alive(ref w) if w.contains("disk swap")),
            "{v:?}"
        );
        h.expires_epoch = 8000;
        assert!(matches!(
            judge(&h, 600, 7999, &me(), None, |_| None),
            Liveness::Alive(_)
        ));
        assert!(matches!(
            judge(&h, 600, 8000, &me(), None, |_| None),
            Liveness::Stale(ref w) if w.contains("ended")
        ));
    }

    /// Cloned VMs (a template never re-generalized) and containers of one image share
    /// `/etc/machine-id`. A live holder on such a twin (another boot id, started well after this
    /// machine booted) has not "rebooted since": breaking its lock runs two deploys at once.
    #[test]
    fn a_machine_id_shared_by_two_machines_is_not_a_reboot() {
        let mut twin = me();
        twin.boot_id = "b-twin".into();
        twin.pid_ns = "pid:[9]".into();
        let h = holder(&twin);
        let v = judge(&h, 600, 1010, &me(), None, |_| None);
        assert!(!matches!(v, Liveness::Stale(_)), "{v:?}");
    }
}

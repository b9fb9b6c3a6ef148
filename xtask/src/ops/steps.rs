//! Every step of a deploy on one server, built in ONE place: a step's id, title, host, script and
//! stdin are decided here. The plan (`--dry-run`, unit tests) and the run (including the rollback
//! and a snapshot restore) all take their steps from here.

use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::CONTAINER;
use crate::core::records::{HistoryRecord, LastGood, LockHolder};
use crate::plan::Step;
use crate::registry::Creds;
use crate::server::handoff::{self, CANDIDATE};
use crate::server::{app, gate, history, lock, probe, snapshot};

pub struct Steps<'a> {
    pub env: &'a Env,
    pub server: String,
}

impl<'a> Steps<'a> {
    pub fn new(env: &'a Env, server: &str) -> Steps<'a> {
        Steps {
            env,
            server: server.to_string(),
        }
    }
    fn remote(&self, id: &'static str, title: impl Into<String>, script: String) -> Step {
        Step::remote(id, title, &self.server, script)
    }
    /// The registry check (shown as the equivalent request; run through `registry::Client`).
    pub fn verify(&self, version: &str) -> Step {
        let env = self.env;
        let url = format!(
            "{}/v2/{}/manifests/{version}",
            env.registry_url(),
            env.repo_path()
        );
        Step::local(
            "verify",
            format!("Verify {} in the registry", env.image(version)),
            &["curl", "-I", &url],
        )
        .read_only()
    }
    pub fn probe(&self) -> Step {
        self.remote(
            "probe",
            format!("Connect to {} and probe it", self.server),
            probe::script(self.env),
        )
        .read_only()
    }
    pub fn lock(&self, holder: &LockHolder) -> Step {
        self.remote("lock", "Take the deploy lock", lock::acquire(self.env))
            .data_stdin(serde_json::to_vec(holder).unwrap_or_default())
    }
    pub fn upload(&self, id: &'static str, name: &str, data: Vec<u8>) -> Step {
        self.remote(
            id,
            format!("Upload {name}"),
            app::upload(self.env, name, "644"),
        )
        .data_stdin(data)
    }
    pub fn upload_env(&self, env_text: String) -> Step {
        self.remote(
            "upload-env",
            "Upload .env (mode 0600)",
            app::upload(self.env, ".env", "600"),
        )
        .secret_stdin(env_text.into_bytes())
    }
    pub fn dirs(&self) -> Step {
        self.remote(
            "dirs",
            "Prepare config/ logs/ data/",
            app::make_dirs(self.env),
        )
    }
    pub fn pull(&self, version: &str, creds: Option<&Creds>) -> Step {
        let image = self.env.image(version);
        let data = creds
            .map(|c| format!("{}\n{}\n", c.user, c.token))
            .unwrap_or_default();
        self.remote(
            "pull",
            format!("Pull {image} (the old version keeps running)"),
            app::pull(self.env, &image, creds.is_some()),
        )
        .secret_stdin(data.into_bytes())
    }
    pub fn chown(&self, version: &str) -> Step {
        self.remote(
            "chown",
            "Give config/ logs/ data/ to the image's user (uid 10001) where needed",
            app::chown(self.env, &self.env.image(version)),
        )
    }
    /// The pre-deploy snapshot (run by `ops::snapshot::create`, on the server since issue 13;
    /// shown as its parts: write the archive, read it back, then the manifest).
    pub fn snapshot(&self) -> Step {
        self.remote(
            "snapshot",
            "Pre-deploy snapshot",
            format!(
                "{}  ;  {}  (without zstd on the server: streamed through the controller; a non-root deploy user's tar runs as root in a container of the pulled image)",
                crate::server::snapshot_remote::create(
                    self.env,
                    false,
                    "<ID>.tar.zst.partial",
                    &snapshot::Access::Direct
                ),
                crate::server::snapshot_remote::read_back(self.env, "<ID>.tar.zst.partial"),
            ),
        )
    }
    pub fn up(&self, version: &str, c: Compose) -> Step {
        self.remote(
            "up",
            format!("Start {version} ({})", c.describe()),
            app::up(self.env, c),
        )
    }
    /// The health gate of the service container (`qts-observer`, host port).
    pub fn gate(&self, version: &str) -> Step {
        self.remote(
            "gate",
            format!("Health gate for {version} (contract §6.3)"),
            gate::script(
                self.env,
                version,
                CONTAINER,
                true,
                self.env.cfg.health_timeout_s,
            ),
        )
        .read_only()
    }
    pub fn keep_env(&self) -> Step {
        self.remote(
            "keep-env",
            "Keep the current .env as .env.prev",
            app::keep_env(self.env),
        )
    }
    pub fn restore_env(&self) -> Step {
        self.remote(
            "restore-env",
            "Put the previous .env back",
            app::restore_env(self.env),
        )
    }
    pub fn clean_candidate(&self) -> Step {
        self.remote(
            "clean-candidate",
            format!("Remove a {CANDIDATE} left by an earlier failed run"),
            handoff::clean_candidate(),
        )
    }
    pub fn candidate(&self, version: &str, c: Compose) -> Step {
        self.remote(
            "candidate",
            format!("Start {version} beside the running version as {CANDIDATE} (standby)"),
            handoff::start_candidate(self.env, c),
        )
    }
    pub fn candidate_gate(&self, version: &str) -> Step {
        self.remote(
            "candidate-gate",
            format!("Health gate for {version} in {CANDIDATE} (contract §6.3)"),
            gate::script(
                self.env,
                version,
                CANDIDATE,
                false,
                self.env.cfg.health_timeout_s,
            ),
        )
        .read_only()
    }
    pub fn soak(&self) -> Step {
        self.remote(
            "soak",
            format!(
                "Soak: {CANDIDATE} stays healthy for {}s without a restart",
                self.env.cfg.soak_s
            ),
            handoff::soak(CANDIDATE, self.env.cfg.soak_s),
        )
        .read_only()
    }
    /// The old instance stops; the candidate takes the archive over.
    pub fn handoff(&self) -> Step {
        self.remote(
            "handoff",
            format!("Hand off: stop {CONTAINER}; {CANDIDATE} takes the archive over"),
            handoff::hand_over(CONTAINER, CANDIDATE, 30),
        )
    }
    /// The candidate stops; the recreated service takes the archive over.
    pub fn release_candidate(&self) -> Step {
        self.remote(
            "release-candidate",
            format!("Hand off: stop {CANDIDATE}; {CONTAINER} takes the archive over"),
            handoff::hand_over(CANDIDATE, CONTAINER, 30),
        )
    }
    pub fn remove_candidate(&self) -> Step {
        self.remote(
            "remove-candidate",
            format!("Stop and remove {CANDIDATE}"),
            handoff::remove_candidate(),
        )
    }
    pub fn start_old(&self) -> Step {
        self.remote(
            "start-old",
            format!("Start {CONTAINER} again (hand back)"),
            handoff::start(CONTAINER),
        )
    }
    pub fn candidate_logs(&self) -> Step {
        self.remote(
            "candidate-logs",
            format!("{CANDIDATE} logs"),
            format!("docker logs --tail 50 {CANDIDATE} 2>&1"),
        )
        .read_only()
    }
    pub fn logs(&self) -> Step {
        self.remote("logs", "Container logs", app::logs())
            .read_only()
    }
    pub fn stop(&self, c: Compose) -> Step {
        self.remote("stop", "Stop the service", app::down(self.env, c))
    }
    pub fn down(&self, c: Compose) -> Step {
        self.remote(
            "down",
            "Stop the failed container (no last good version)",
            app::down(self.env, c),
        )
    }
    pub fn record(&self, lg: &LastGood) -> Step {
        self.remote(
            "record",
            "Record last_good_tag",
            history::record_last_good(self.env, lg),
        )
    }
    pub fn history(&self, record: &HistoryRecord) -> Step {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        self.remote(
            "history",
            "Append to .deploy/history.jsonl (and write the deploy-outcome textfile)",
            history::append(self.env, history::DeployOutcome::of(record).as_ref()),
        )
        .data_stdin(line)
    }
    pub fn prune(&self) -> Step {
        self.remote(
            "prune",
            format!(
                "Prune old images (keep {}, the running and the last good)",
                self.env.cfg.keep_images
            ),
            app::images(self.env),
        )
    }
    /// Snapshot retention after a healthy deploy or rollback (issue 12; run by `ops::prune`):
    /// the scan of the backups folder and the history; the deletions follow as their own step.
    pub fn prune_snapshots(&self) -> Step {
        self.remote(
            "prune-snapshots",
            format!(
                "Prune snapshots (keep {}, never the one a rollback needs) and stale partial files",
                self.env.cfg.keep_snapshots
            ),
            snapshot::prune_scan(self.env),
        )
    }
    pub fn rmi(&self, tags: &[String]) -> Step {
        self.remote(
            "prune-rm",
            format!("Remove {} old image(s)", tags.len()),
            app::rmi(self.env, tags),
        )
    }
    pub fn unlock(&self, lock_id: &str) -> Step {
        self.remote(
            "unlock",
            "Release the deploy lock",
            lock::release(self.env, lock_id),
        )
    }
}

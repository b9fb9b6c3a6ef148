//! The Swarm plan: the steps' order and what `--dry-run` shows.

use super::*;
use crate::config::{self, Engine};

fn env() -> Env {
    let mut e = config::test_env("/srv/obs", "/tmp/r.git");
    e.cfg.engine = Engine::Swarm;
    e
}

fn payload() -> Payload {
    Payload {
        compose: Vec::new(),
        config: Vec::new(),
        env_text: "IMAGE_TAG=v1.2.3\n".into(),
        holder: crate::core::records::LockHolder {
            id: "0123456789abcdef".into(),
            ..Default::default()
        },
    }
}

#[test]
fn the_plan_pauses_deploys_watches_soaks_then_resumes_and_records() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    let p = plan(&st, "v1.2.3", "sha256:ab", "{}", None, &payload(), "17");
    assert_eq!(
        p.ids(),
        [
            "verify",
            "probe",
            "lock",
            "upload-stack",
            "keep-env",
            "upload-env",
            "resume",
            "pause",
            "stack-deploy",
            "watch",
            "soak",
            "resume",
            "record",
            "history",
            "unlock"
        ]
    );
    let watch = p.get("watch").unwrap().script().to_string();
    assert!(watch.contains("since=17;"), "{watch}");
    assert!(
        watch.contains("img=127.0.0.1:5000/observer@sha256:ab;"),
        "{watch}"
    );
    assert!(p
        .get("pause")
        .unwrap()
        .script()
        .contains("observer.paused-by-deploy=0123456789abcdef"));
}

#[test]
fn registry_credentials_go_to_stdin_never_into_the_script() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    let creds = Creds {
        user: "u".into(),
        token: "t0ps3cret".into(),
    };
    let s = st.stack_deploy(Some(&creds));
    assert!(!s.script().contains("t0ps3cret"));
    assert!(
        s.render().contains("--with-registry-auth"),
        "{}",
        s.render()
    );
}

#[test]
fn the_watch_waits_for_health_twice_the_monitor_twice_and_a_minute() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    assert_eq!(
        st.watch_timeout(),
        2 * e.cfg.health_timeout_s + 2 * e.cfg.soak_s.max(5) + 60
    );
}

//! `setup`'s decisions from parsed check output (no server).

use super::*;
use crate::server::setup as ss;

fn env() -> Env {
    let mut e = config::test_env("/srv/observer", "/tmp/r.git");
    e.backups_dir = "/srv/observer-backups".into();
    e
}

const TOOLS: &str = "docker=27.3.1\ncompose=2.29.7\nzstd=/usr/bin/zstd\n";

fn facts(who: &str, dirs: &str) -> Facts {
    ss::parse(&env(), &format!("{who}{TOOLS}{dirs}"))
}

const DEPLOY: &str = "uid=1001\ngid=1001\nuser=deploy\ngroup=deploy\ngroups=deploy docker\n";
const ROOT: &str = "uid=0\ngid=0\nuser=root\ngroup=root\ngroups=root\n";

#[test]
fn the_check_output_parses() {
    let f = facts(
        DEPLOY,
        "dir.root=dir 1001 1001 750 w\nanc.root=w /srv/observer\nfree.root=5000000\ndir.deploy=missing\nanc.deploy=w /srv/observer\nfree.deploy=5000000\ndir.backups=symlink\nanc.backups=- /srv/observer-backups\n",
    );
    assert_eq!((f.uid, f.gid, f.user.as_str()), (1001, 1001, "deploy"));
    assert_eq!(f.groups, ["deploy", "docker"]);
    assert_eq!(f.compose, "2.29.7");
    assert_eq!(
        f.dirs[0].state,
        State::Dir {
            uid: 1001,
            gid: 1001,
            mode: 0o750,
            writable: true
        }
    );
    assert_eq!(f.dirs[1].path, "/srv/observer/.deploy");
    assert_eq!(f.dirs[1].state, State::Missing);
    assert!(f.dirs[1].ancestor_writable);
    assert_eq!(f.dirs[2].state, State::Symlink);
    assert_eq!(f.dirs[2].free_kb, None);
    // Garbled output never reads as root.
    assert_eq!(ss::parse(&env(), "uid=x\n").uid, u32::MAX);
}

#[test]
fn a_fresh_server_gets_its_folders_and_a_second_run_has_nothing_to_do() {
    let f = facts(
        DEPLOY,
        "dir.root=missing\nanc.root=w /srv\nfree.root=5000000\ndir.deploy=missing\nanc.deploy=w /srv\ndir.backups=missing\nanc.backups=w /srv\nfree.backups=5000000\n",
    );
    let v = decide(&f);
    assert!(v.needs.is_empty(), "{v:?}");
    assert_eq!(
        v.actions,
        [
            Action::Create {
                path: "/srv/observer".into(),
                mode: 0o750
            },
            Action::Create {
                path: "/srv/observer/.deploy".into(),
                mode: 0o750
            },
            Action::Create {
                path: "/srv/observer-backups".into(),
                mode: 0o750
            },
        ]
    );
    let after = facts(
        DEPLOY,
        "dir.root=dir 1001 1001 750 w\nanc.root=w /srv/observer\nfree.root=5000000\ndir.deploy=dir 1001 1001 750 w\nanc.deploy=w /srv/observer/.deploy\ndir.backups=dir 1001 1001 750 w\nanc.backups=w /srv/observer-backups\nfree.backups=5000000\n",
    );
    let v = decide(&after);
    assert!(v.actions.is_empty() && v.needs.is_empty(), "{v:?}");
    assert!(v.warnings.is_empty());
    // The apply script makes exactly those folders, quoted.
    let s = ss::apply(&decide(&f).actions);
    assert!(
        s.starts_with("set -e; mkdir -p -- /srv/observer; chmod 750 -- /srv/observer;"),
        "{s}"
    );
}

#[test]
fn what_only_root_can_do_is_named_and_nothing_is_done() {
    // Not in the docker group, no zstd, compose v1 only, the deploy root under a root-owned
    // folder, the backups folder someone else's.
    let f = ss::parse(
        &env(),
        "uid=1001\ngid=1001\nuser=deploy\ngroup=deploy\ngroups=deploy\ndocker=\ncompose=\nzstd=\ndir.root=missing\nanc.root=- /srv\nfree.root=5000000\ndir.deploy=missing\nanc.deploy=- /srv\ndir.backups=dir 0 0 755 -\nanc.backups=- /srv/observer-backups\nfree.backups=100\n",
    );
    let v = decide(&f);
    let whats: Vec<&str> = v.needs.iter().map(|n| n.what.as_str()).collect();
    assert_eq!(v.needs.len(), 6, "{whats:#?}");
    assert!(whats[0].contains("compose v2"));
    assert!(whats[1].contains("zstd"));
    assert!(whats[2].contains("not in the docker group"));
    assert!(whats[3].starts_with("/srv/observer is missing"));
    assert!(whats[4].starts_with("/srv/observer/.deploy is missing"));
    assert!(whats[5].contains("belongs to uid 0"));
    assert!(v.actions.is_empty(), "{v:?}");
    assert_eq!(v.warnings.len(), 1, "{v:?}");
    let e = env();
    let text = provision_text(&e, &e.servers[0], "deploy", &v.needs);
    assert!(
        text.contains("sudo bash /tmp/provision-server.sh --deploy-root /srv/observer --backups-dir /srv/observer-backups deploy"),
        "{text}"
    );
    for l in [
        "usermod -aG docker deploy",
        "apt-get install -y zstd",
        "install -d -o deploy -g deploy -m 750 /srv/observer\n",
        "install -d -o deploy -g deploy -m 750 /srv/observer-backups\n",
    ] {
        assert!(text.contains(l), "{l}: {text}");
    }
}

#[test]
fn own_folders_lose_group_and_world_write_and_root_takes_what_it_connects_as() {
    let f = facts(
        DEPLOY,
        "dir.root=dir 1001 1001 777 w\nanc.root=w /srv/observer\ndir.deploy=dir 1001 1001 700 w\nanc.deploy=w /x\ndir.backups=dir 1001 1001 2775 w\nanc.backups=w /y\n",
    );
    let v = decide(&f);
    assert!(v.needs.is_empty(), "{v:?}");
    assert_eq!(
        v.actions,
        [
            Action::Chmod {
                path: "/srv/observer".into(),
                mode: 0o755
            },
            Action::Chmod {
                path: "/srv/observer-backups".into(),
                mode: 0o2755
            },
        ]
    );
    // Root connects: it may chown what is someone else's; docker needs no group.
    let f = facts(
        ROOT,
        "dir.root=dir 1001 1001 750 w\nanc.root=w /srv/observer\ndir.deploy=missing\nanc.deploy=w /srv/observer\ndir.backups=missing\nanc.backups=w /srv\n",
    );
    let v = decide(&f);
    assert!(v.needs.is_empty(), "{v:?}");
    assert_eq!(
        v.actions[0],
        Action::Chown {
            path: "/srv/observer".into(),
            uid: 0,
            gid: 0
        }
    );
    assert_eq!(v.actions.len(), 3);
}

#[test]
fn a_shared_sticky_folder_is_never_changed_nor_taken() {
    // remote_dir pointed at /tmp by mistake: no `chmod 1755 /tmp`, no chown, a need instead.
    for who in [ROOT, DEPLOY] {
        let f = facts(
            who,
            "dir.root=dir 0 0 1777 w\nanc.root=w /srv/observer\ndir.deploy=missing\nanc.deploy=w /srv/observer\ndir.backups=dir 1001 1001 750 w\nanc.backups=w /srv\n",
        );
        let v = decide(&f);
        assert!(
            v.actions
                .iter()
                .all(|a| !a.describe().ends_with("/srv/observer")),
            "{v:?}"
        );
        assert!(
            v.needs.iter().any(|n| n.what.contains("shared folder")),
            "{v:?}"
        );
    }
}

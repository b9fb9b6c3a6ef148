//! Unit tests of `config`: parsing, validation, resolution and the sandbox overrides.
use super::*;

fn real() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CONFIG_PATH),
    )
    .unwrap()
}

#[test]
fn the_committed_config_loads() {
    let cfg = parse(&real(), CONFIG_PATH).unwrap();
    let prod = &cfg.environments["production"];
    assert_eq!(prod.image_repo, "ghcr.io/tawbury/observer");
    assert_eq!(prod.registry, "ghcr.io");
    assert!(cfg.environments["sandbox"].sandbox);
    assert_eq!(cfg.environment["QTS_OBSERVER_STANDALONE"], "1");
}

#[test]
fn unknown_key_is_named() {
    let text = real().replace(
        "\"keep_images\": 3,",
        "\"keep_images\": 3, \"surprise\": 1,",
    );
    let e = parse(&text, "f.json").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("f.json"), "{msg}");
    assert!(msg.contains("environments.production"), "{msg}");
    assert!(msg.contains("surprise"), "{msg}");
    assert_eq!(crate::core::exit::code_of(&e), 2);
}

#[test]
fn wrong_type_is_named() {
    let text = real().replacen(
        "\"health_timeout_s\": 90",
        "\"health_timeout_s\": \"90\"",
        1,
    );
    let msg = parse(&text, "f.json").unwrap_err().to_string();
    assert!(
        msg.contains("environments.production.health_timeout_s"),
        "{msg}"
    );
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn hostile_values_are_rejected() {
    let text = real().replacen("\"/opt/observer\"", "\"/opt/$(reboot)\"", 1);
    let msg = parse(&text, "f.json").unwrap_err().to_string();
    assert!(msg.contains("remote_dir"), "{msg}");
    let text = real().replacen("\"$DEPLOY_HOST\"", "\"-oProxyCommand=x\"", 1);
    let msg = parse(&text, "f.json").unwrap_err().to_string();
    assert!(msg.contains("servers[0].host"), "{msg}");
}

#[test]
fn secrets_declared_per_environment() {
    let cfg = parse(&real(), CONFIG_PATH).unwrap();
    assert_eq!(
        cfg.environments["production"].secrets.as_deref(),
        Some(&["KIS_API_KEY".to_string(), "KIS_API_SECRET".to_string()][..])
    );
    let mut sandbox = test_env("/r", "/g");
    assert!(sandbox.required_secrets().is_empty());
    assert_eq!(sandbox.known_secrets(), APP_SECRETS);
    sandbox.cfg.secrets = None;
    assert!(
        sandbox.required_secrets().is_empty(),
        "a sandbox requires none by default"
    );
    sandbox.cfg.sandbox = false;
    assert_eq!(
        sandbox.required_secrets(),
        APP_SECRETS,
        "elsewhere: all by default"
    );
    for (bad, why) in [
        ("[\"IMAGE_TAG\"]", "sets itself"),
        ("[\"PYTHONPATH\"]", "sets itself"),
        ("[\"A-B\"]", "variable name"),
        ("[\"X\", \"X\"]", "listed once"),
    ] {
        let text = real().replacen(
            "\"secrets\": [\"KIS_API_KEY\", \"KIS_API_SECRET\"]",
            &format!("\"secrets\": {bad}"),
            1,
        );
        let msg = parse(&text, "f.json").unwrap_err().to_string();
        assert!(msg.contains("environments.production.secrets["), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
}

#[test]
fn precedence_env_file_default() {
    let mut file = BTreeMap::new();
    file.insert("OBSERVER_LOG_DIR".to_string(), "/file/logs".to_string());
    file.insert("PYTHONPATH".to_string(), "/file/py".to_string());
    let env = |n: &str| match n {
        "PYTHONPATH" => Some("/env/py".to_string()),
        "OBSERVER_DATA_DIR" => Some(String::new()),
        _ => None,
    };
    assert_eq!(
        effective("PYTHONPATH", &env, &file),
        (Some("/env/py".into()), Source::Env)
    );
    assert_eq!(
        effective("OBSERVER_LOG_DIR", &env, &file),
        (Some("/file/logs".into()), Source::File)
    );
    assert_eq!(
        effective("OBSERVER_DATA_DIR", &env, &file),
        (Some("/app/data/observer".into()), Source::Default)
    );
    assert_eq!(
        effective("NOT_A_CONTRACT_VAR", &env, &file),
        (None, Source::Unset)
    );
}

#[test]
fn bind_address_is_an_ip_address_defaulting_to_loopback() {
    let cfg = parse(&real(), CONFIG_PATH).unwrap();
    let sandbox = &cfg.environments["sandbox"];
    assert_eq!(sandbox.bind_address, "127.0.0.1");
    assert_eq!(sandbox.bind_for_compose(), "127.0.0.1");
    assert_eq!(sandbox.local_http_host(), "127.0.0.1");
    let mut c = sandbox.clone();
    for (addr, compose, local) in [
        ("0.0.0.0", "0.0.0.0", "127.0.0.1"),
        ("10.0.0.4", "10.0.0.4", "10.0.0.4"),
        ("::1", "[::1]", "[::1]"),
        ("::", "[::]", "[::1]"),
    ] {
        c.bind_address = addr.into();
        assert_eq!(c.bind_for_compose(), compose);
        assert_eq!(c.local_http_host(), local);
    }
    for bad in ["localhost", "127.0.0.1:80", "$(reboot)", "[::1]", ""] {
        let text = real().replacen(
            "\"bind_address\": \"127.0.0.1\"",
            &format!("\"bind_address\": {bad:?}"),
            1,
        );
        let msg = parse(&text, "f.json").unwrap_err().to_string();
        assert!(
            msg.contains("environments.production.bind_address"),
            "{msg}"
        );
    }
}

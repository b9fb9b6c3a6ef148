//! The deployment contract's names, written once (`../shared/contract.md`, cited as §N).

/// The compose service and container name (§2).
pub const CONTAINER: &str = "qts-observer";
/// The compose project name the server's stack runs under.
pub const PROJECT: &str = "observer";
/// uid/gid of `qts` in the image (§8.2): owner of the mounted directories.
pub const QTS_UID: u32 = 10001;
/// The deployment config, relative to the repository root (§5).
pub const CONFIG_PATH: &str = "app/obs_deploy/deployment_config.json";
/// The server compose file, relative to the repository root (§2).
pub const COMPOSE_PATH: &str = "app/obs_deploy/docker-compose.server.yml";
/// The compose file's name on the server, inside the deploy root.
pub const COMPOSE_FILE: &str = "docker-compose.server.yml";

/// The contract variables (§3.1) with the value every deployed container must carry (§5.2).
pub const CONTRACT_VARS: &[(&str, &str)] = &[
    ("QTS_OBSERVER_STANDALONE", "1"),
    ("PYTHONPATH", "/app/src:/app"),
    ("OBSERVER_DATA_DIR", "/app/data/observer"),
    ("OBSERVER_LOG_DIR", "/app/logs"),
];

/// The forbidden, non-standard name for standalone mode (§3.1).
pub const FORBIDDEN_VAR: &str = "OBSERVER_STANDALONE";

/// The application's secrets, injected into the container (§3.3).
pub const APP_SECRETS: &[&str] = &["KIS_API_KEY", "KIS_API_SECRET"];

/// The non-secret variables the tool writes into the server's `.env` (`server::app::env_file`).
pub const DOTENV_VARS: &[&str] = &[
    "COMPOSE_PROJECT_NAME",
    "IMAGE_REPO",
    "IMAGE_TAG",
    "OBSERVER_HOST_PORT",
    "OBSERVER_BIND_ADDRESS",
    "OBSERVER_INTERVAL_MS",
    "OBSERVER_VERSION",
];

/// Every secret this tool knows: reported only as set/unset, masked in all output (§8.1).
pub const ALL_SECRETS: &[&str] = &[
    "KIS_API_KEY",
    "KIS_API_SECRET",
    "REGISTRY_TOKEN",
    "DEPLOY_SSH_KEY",
];

/// The start line's prefix in `logs/observer.log` (§6.3).
pub fn start_line(version: &str) -> String {
    format!("observer started version={version} ")
}

/// §4.3: the archive is `<config dir>/observer/observer.jsonl`, never under data/observer.
pub fn archive_path(config_dir: &str) -> String {
    format!(
        "{}/observer/observer.jsonl",
        config_dir.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_under_config() {
        assert_eq!(
            archive_path("/app/config"),
            "/app/config/observer/observer.jsonl"
        );
        assert_eq!(
            archive_path("/app/config/"),
            "/app/config/observer/observer.jsonl"
        );
    }
}

"""Settings with the contract's precedence (section 3.2):
environment variable > deployment_config.json > built-in default."""

import json
import os
from dataclasses import dataclass, field

import paths

FORBIDDEN_STANDALONE = "OBSERVER_STANDALONE"
STANDALONE = "QTS_OBSERVER_STANDALONE"
SECRET_NAMES = ("KIS_API_KEY", "KIS_API_SECRET")
MIN_INTERVAL_MS = 10


class SettingsError(Exception):
    """A setting is invalid; the message names it and never contains a secret value."""


@dataclass
class Settings:
    config_dir: str
    data_dir: str
    log_dir: str
    standalone: str
    interval_ms: int
    port: int
    version: str
    config_file: str
    queue_max: int = 3600
    fsync_ms: int = 1000
    stop_flush_ms: int = 5000
    revision: str = "unknown"
    log_max_bytes: int = 10 * 1024 * 1024
    log_max_files: int = 3
    sources: dict = field(default_factory=dict)
    secrets_present: dict = field(default_factory=dict)

    @property
    def archive_dir(self):
        return paths.observer_asset_dir(self.config_dir)

    @property
    def archive(self):
        return paths.archive_path(self.config_dir)


def _load_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SettingsError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise SettingsError(f"{path}: top level must be a JSON object")
    return doc


def _file_value(doc, name):
    """Where deployment_config.json holds each setting."""
    env = doc.get("environment") or {}
    pth = doc.get("paths") or {}
    obs = doc.get("observer") or {}
    lookup = {
        STANDALONE: env.get(STANDALONE),
        "OBSERVER_DATA_DIR": env.get("OBSERVER_DATA_DIR", pth.get("data_dir")),
        "OBSERVER_LOG_DIR": env.get("OBSERVER_LOG_DIR", pth.get("log_dir")),
        "OBSERVER_CONFIG_DIR": pth.get("config_dir"),
        "OBSERVER_INTERVAL_MS": obs.get("interval_ms"),
        "OBSERVER_PORT": obs.get("port"),
        "OBSERVER_QUEUE_MAX": obs.get("queue_max"),
        "OBSERVER_FSYNC_MS": obs.get("fsync_ms"),
        "OBSERVER_STOP_FLUSH_MS": obs.get("stop_flush_ms"),
        "OBSERVER_LOG_MAX_BYTES": obs.get("log_max_bytes"),
        "OBSERVER_LOG_MAX_FILES": obs.get("log_max_files"),
    }
    value = lookup.get(name)
    return None if value is None else str(value)


def _non_negative_int(name, raw):
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def load(environ=None):
    environ = os.environ if environ is None else environ
    if environ.get(FORBIDDEN_STANDALONE) is not None:
        raise SettingsError(
            f"{FORBIDDEN_STANDALONE} is forbidden by the contract (section 3.1); "
            f"use {STANDALONE} instead"
        )
    boot_config_dir = environ.get("OBSERVER_CONFIG_DIR") or paths.DEFAULT_CONFIG_DIR
    config_file = environ.get("OBSERVER_CONFIG_FILE") or os.path.join(
        boot_config_dir, "deployment_config.json"
    )
    doc = _load_file(config_file)
    sources = {}

    def pick(name, default):
        value = environ.get(name)
        if value:
            sources[name] = "env"
            return value
        value = _file_value(doc, name)
        if value:
            sources[name] = "file"
            return value
        sources[name] = "default"
        return default

    config_dir = pick("OBSERVER_CONFIG_DIR", paths.DEFAULT_CONFIG_DIR)
    data_dir = pick("OBSERVER_DATA_DIR", paths.DEFAULT_DATA_DIR)
    log_dir = pick("OBSERVER_LOG_DIR", paths.DEFAULT_LOG_DIR)
    standalone = pick(STANDALONE, "1")
    if standalone not in ("0", "1"):
        raise SettingsError(f"{STANDALONE} must be 0 or 1")
    interval_raw = pick("OBSERVER_INTERVAL_MS", "1000")
    port_raw = pick("OBSERVER_PORT", "8000")
    try:
        interval_ms = int(interval_raw)
    except ValueError:
        raise SettingsError("OBSERVER_INTERVAL_MS must be an integer (milliseconds)") from None
    if interval_ms < MIN_INTERVAL_MS:
        raise SettingsError(f"OBSERVER_INTERVAL_MS must be at least {MIN_INTERVAL_MS}")
    try:
        port = int(port_raw)
    except ValueError:
        raise SettingsError("OBSERVER_PORT must be an integer") from None
    if not 0 <= port <= 65535:
        raise SettingsError("OBSERVER_PORT must be within 0..65535")
    # Records that cannot be written (a full disk) wait in memory: about one hour of them.
    queue_max = _non_negative_int(
        "OBSERVER_QUEUE_MAX", pick("OBSERVER_QUEUE_MAX", str(3_600_000 // interval_ms))
    )
    # fdatasync at most every OBSERVER_FSYNC_MS (0: after every record).
    fsync_ms = _non_negative_int("OBSERVER_FSYNC_MS", pick("OBSERVER_FSYNC_MS", "1000"))
    # On SIGTERM with records still queued: how long to keep trying to write them.
    stop_flush_ms = _non_negative_int(
        "OBSERVER_STOP_FLUSH_MS", pick("OBSERVER_STOP_FLUSH_MS", "5000")
    )
    # logs/observer.log is rotated past OBSERVER_LOG_MAX_BYTES (0: never), keeping
    # OBSERVER_LOG_MAX_FILES files in all (the current one included).
    log_max_bytes = _non_negative_int(
        "OBSERVER_LOG_MAX_BYTES", pick("OBSERVER_LOG_MAX_BYTES", str(10 * 1024 * 1024))
    )
    log_max_files = _non_negative_int(
        "OBSERVER_LOG_MAX_FILES", pick("OBSERVER_LOG_MAX_FILES", "3")
    )
    if log_max_files < 1:
        raise SettingsError("OBSERVER_LOG_MAX_FILES must be at least 1")
    version = environ.get("OBSERVER_VERSION") or "dev"
    # The git commit the image was built from: the Dockerfile sets it from the release's
    # REVISION build argument (the image's org.opencontainers.image.revision label).
    revision = environ.get("OBSERVER_REVISION") or "unknown"
    return Settings(
        config_dir=config_dir,
        data_dir=data_dir,
        log_dir=log_dir,
        standalone=standalone,
        interval_ms=interval_ms,
        port=port,
        version=version,
        revision=revision,
        log_max_bytes=log_max_bytes,
        log_max_files=log_max_files,
        config_file=config_file,
        queue_max=queue_max,
        fsync_ms=fsync_ms,
        stop_flush_ms=stop_flush_ms,
        sources=sources,
        secrets_present={n: bool(environ.get(n)) for n in SECRET_NAMES},
    )

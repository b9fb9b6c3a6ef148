"""Path contract of the observer (contract section 4).

The archive lives under the CONFIG directory: ``<config_dir>/observer/observer.jsonl``
(``/app/config/observer/observer.jsonl`` in the container). ``data/observer`` is mounted but
unused; an archive there is a contract violation (section 4.3).
"""

import os

DEFAULT_CONFIG_DIR = "/app/config"
DEFAULT_DATA_DIR = "/app/data/observer"
DEFAULT_LOG_DIR = "/app/logs"
ARCHIVE_NAME = "observer.jsonl"


def config_dir():
    return os.environ.get("OBSERVER_CONFIG_DIR") or DEFAULT_CONFIG_DIR


def observer_asset_dir(config_root=None):
    """The archive directory: ``<config dir>/observer``."""
    return os.path.join(config_root or config_dir(), "observer")


def archive_path(config_root=None):
    return os.path.join(observer_asset_dir(config_root), ARCHIVE_NAME)

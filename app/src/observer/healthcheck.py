"""The container HEALTHCHECK: healthy only when GET /health answers 200."""

import json
import os
import sys
import urllib.error
import urllib.request


def fetch(port):
    """(HTTP status, JSON body or {}) of /health; (0, {}) when nothing answers."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


def probe(port):
    return fetch(port)[0] == 200


def port():
    return os.environ.get("OBSERVER_PORT") or "8000"


if __name__ == "__main__":
    sys.exit(0 if probe(port()) else 1)

"""The container HEALTHCHECK: healthy only when GET /health answers 200."""

import os
import sys
import urllib.error
import urllib.request


def probe(port):
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if probe(os.environ.get("OBSERVER_PORT") or "8000") else 1)

"""``python3 -m observer.role``: prints ``status=<http> role=<role> instance=<id>`` of this
instance's ``/health``. The deploy tool's handoff reads an instance's role with it; the verdict is
the printed line, not the exit status (the HEALTHCHECK is ``observer.healthcheck``)."""

from .healthcheck import fetch, port


def describe(p):
    status, body = fetch(p)
    return f"status={status} role={body.get('role', '')} instance={body.get('instance', '')}"


if __name__ == "__main__":
    print(describe(port()))

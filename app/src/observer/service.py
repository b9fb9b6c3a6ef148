"""The observer service: an append-only JSON-lines writer plus /health and /metrics on HTTP."""

import datetime
import json
import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def utc_now_rfc3339(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Observer:
    """Appends one whole line per tick; never truncates or rewrites the archive."""

    def __init__(self, settings, clock=None):
        import time

        self.settings = settings
        self.clock = clock or time.time
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self.records_total = 0
        self.last_write = None  # wall-clock seconds of the last successful append
        self.last_error = None
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self._log_file = None

    # -- logging ---------------------------------------------------------------------------------
    def log(self, message):
        line = f"{utc_now_rfc3339()} {message}"
        print(line, flush=True)
        try:
            if self._log_file is None:
                os.makedirs(self.settings.log_dir, exist_ok=True)
                self._log_file = open(
                    os.path.join(self.settings.log_dir, "observer.log"), "a", encoding="utf-8"
                )
            self._log_file.write(line + "\n")
            self._log_file.flush()
        except OSError as e:
            print(f"{utc_now_rfc3339()} warning: cannot write the log file: {e}", flush=True)

    def start_line(self):
        s = self.settings
        presence = " ".join(
            f"{name.lower()}={'present' if present else 'absent'}"
            for name, present in sorted(s.secrets_present.items())
        )
        return (
            f"observer started version={s.version} standalone={s.standalone} "
            f"archive={s.archive} {presence}"
        )

    # -- archive ---------------------------------------------------------------------------------
    def append_once(self):
        """Append one record. Returns True on success; on failure records the reason."""
        s = self.settings
        self.seq += 1
        record = {
            "ts": utc_now_rfc3339(),
            "seq": self.seq,
            "instance": self.instance,
            "version": s.version,
        }
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            os.makedirs(s.archive_dir, exist_ok=True)
            fd = os.open(s.archive, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)  # one write: the line lands whole
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            finally:
                os.close(fd)
        except OSError as e:
            with self.lock:
                self.last_error = f"archive not writable: {e.strerror or e}"
            return False
        with self.lock:
            self.records_total += 1
            self.last_write = self.clock()
            self.last_error = None
        return True

    def fsync_archive(self):
        try:
            fd = os.open(self.settings.archive, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def run_writer(self):
        interval = self.settings.interval_ms / 1000.0
        failing = False
        while not self.stop_event.is_set():
            ok = self.append_once()
            if not ok and not failing:
                self.log(f"error: {self.last_error}")
            elif ok and failing:
                self.log("archive writable again")
            failing = not ok
            self.stop_event.wait(interval)
        self.fsync_archive()

    # -- health and metrics ----------------------------------------------------------------------
    def health(self):
        """(http status, body dict)."""
        s = self.settings
        with self.lock:
            last_write, last_error = self.last_write, self.last_error
        age = None if last_write is None else max(0.0, self.clock() - last_write)
        body = {
            "status": "ok",
            "version": s.version,
            "last_write_age_s": None if age is None else round(age, 3),
            "archive": s.archive,
        }
        limit = 3 * s.interval_ms / 1000.0
        if last_error is not None:
            body.update(status="unhealthy", reason=last_error)
            return 503, body
        if age is None:
            body.update(status="unhealthy", reason="no record written yet")
            return 503, body
        if age > limit:
            body.update(status="unhealthy", reason=f"last write {age:.3f}s ago (limit {limit:.3f}s)")
            return 503, body
        return 200, body

    def metrics(self):
        with self.lock:
            total, last_write = self.records_total, self.last_write
        version = self.settings.version.replace("\\", "\\\\").replace('"', '\\"')
        return (
            "# HELP observer_records_total Records appended to the archive by this process.\n"
            "# TYPE observer_records_total counter\n"
            f"observer_records_total {total}\n"
            "# HELP observer_last_write_timestamp_seconds Unix time of the last successful append.\n"
            "# TYPE observer_last_write_timestamp_seconds gauge\n"
            f"observer_last_write_timestamp_seconds {last_write or 0:.3f}\n"
            "# HELP observer_build_info Build information.\n"
            "# TYPE observer_build_info gauge\n"
            f'observer_build_info{{version="{version}"}} 1\n'
        )

    def make_http_server(self, host="0.0.0.0"):
        observer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path == "/health":
                    status, body = observer.health()
                    self._send(status, json.dumps(body) + "\n", "application/json")
                elif self.path == "/metrics":
                    self._send(200, observer.metrics(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, json.dumps({"error": "not found"}) + "\n", "application/json")

            def _send(self, status, text, content_type):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep request noise out of the logs
                pass

        server = ThreadingHTTPServer((host, self.settings.port), Handler)
        server.daemon_threads = True
        return server


def main(environ=None):
    import signal

    from . import settings as settings_mod

    try:
        s = settings_mod.load(environ)
    except settings_mod.SettingsError as e:
        print(f"observer: error: {e}", file=sys.stderr, flush=True)
        return 2
    obs = Observer(s)
    try:
        server = obs.make_http_server()
    except OSError as e:
        print(f"observer: error: cannot listen on port {s.port}: {e.strerror}", file=sys.stderr)
        return 1
    http_thread = threading.Thread(target=server.serve_forever, daemon=True)
    http_thread.start()

    def on_signal(signum, _frame):
        obs.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    obs.log(obs.start_line())
    obs.run_writer()
    server.shutdown()
    obs.log(f"observer stopped records={obs.records_total}")
    return 0

"""The observer service: an append-only JSON-lines writer plus /health and /metrics on HTTP."""

import collections
import datetime
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import archive, logfile


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def utc_now_rfc3339(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def process_start_time():
    """Unix time (s) this process started: from /proc (its start in clock ticks after boot, plus
    the boot time), else now."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, starttime
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class Observer:
    """Observes once per interval and appends the record to the archive as one whole line.

    A record that cannot be written (a full disk, an unwritable directory) waits in a bounded
    in-memory queue and is appended, in order and keeping its ``seq``, once the archive takes
    writes again. Beyond ``queue_max`` records the OLDEST queued record is dropped (and counted):
    the queue always holds the most recent observations, so what is appended when space returns
    reaches up to the present and the loss is one contiguous ``seq`` range right after the
    failure began, which ``python3 -m observer.check`` reports as missing.
    """

    BATCH_BYTES = 1 << 16  # queued records are flushed up to this many bytes per write()

    def __init__(self, settings, clock=None):
        self.settings = settings
        self.clock = clock or time.time
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self.records_total = 0
        self.last_write = None  # wall-clock seconds of the last successful append
        self.last_error = None
        self.queue = collections.deque()  # (seq, bytes) waiting for the archive
        self.dropped_total = 0
        self.write_errors_total = 0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.started = process_start_time()
        self._log_file = logfile.RotatingLog(
            os.path.join(settings.log_dir, "observer.log"),
            max_bytes=settings.log_max_bytes,
            max_files=settings.log_max_files,
        )
        self.writer = archive.ArchiveWriter(settings.archive, settings.fsync_ms, log=self.log)
        split = os.environ.get("OBSERVER_TEST_SPLIT_WRITE_MS")  # tests only: see ArchiveWriter
        if split:
            self.writer.split_pause = int(split) / 1000.0
        self._outage = None  # what happened since the archive stopped taking writes
        self.writer_lock = archive.WriterLock(settings.archive)
        # "active" while this process holds the writer lock and appends, "standby" while another
        # process holds it; "starting" until the first attempt (and in-process uses of
        # append_once() without run_writer(), such as the unit tests).
        self.role = "starting"
        self.standby_error = "checking the archive path"  # None: verified writable
        self.holder = {}  # standby: what the lock file says about the active instance

    # -- logging ---------------------------------------------------------------------------------
    def log(self, message):
        line = f"{utc_now_rfc3339()} {message}"
        print(line, flush=True)
        try:
            self._log_file.write(line)
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
            f"archive={s.archive} {presence} instance={self.instance}"
        )

    # -- archive ---------------------------------------------------------------------------------
    def observe(self):
        """One observation: (seq, the record as one JSON line)."""
        self.seq += 1
        record = {
            "ts": utc_now_rfc3339(),
            "seq": self.seq,
            "instance": self.instance,
            "version": self.settings.version,
        }
        return self.seq, (json.dumps(record, separators=(",", ":")) + "\n").encode()

    def trim(self):
        """Hold the queue to its bound: drop the oldest records beyond it (and count them)."""
        bound = self.settings.queue_max
        with self.lock:
            while len(self.queue) > bound:
                lost, _ = self.queue.popleft()
                self.dropped_total += 1
                if self._outage is not None:
                    o = self._outage
                    o["dropped"] += 1
                    o["dropped_first"] = o["dropped_first"] or lost
                    o["dropped_last"] = lost
        o = self._outage
        if o is not None and o["dropped"] and not o["drop_logged"]:
            o["drop_logged"] = True
            self.log(
                f"error: the queue is full ({bound} records, OBSERVER_QUEUE_MAX): "
                f"dropping the oldest queued records"
            )

    def flush(self):
        """Append the queued records, oldest first, each whole. True when the queue is empty."""
        limit = 0 if self._outage else self.BATCH_BYTES  # failing: one record per attempt
        while True:
            with self.lock:
                batch, size = [], 0
                for seq, data in self.queue:
                    if batch and size + len(data) > limit:
                        break
                    batch.append(data)
                    size += len(data)
            if not batch:
                break
            try:
                self.writer.append(b"".join(batch) if len(batch) > 1 else batch[0], len(batch))
            except OSError as e:
                if len(batch) > 1:
                    limit = 0  # a whole batch did not fit: go on one record at a time
                    continue
                with self.lock:
                    self.write_errors_total += 1
                self._failed(e)
                return False
            limit = self.BATCH_BYTES
            with self.lock:
                for _ in batch:
                    self.queue.popleft()
                self.records_total += len(batch)
                self.last_write = self.clock()
        self._recovered()
        return True

    def _failed(self, e):
        reason = f"archive not writable: {e.strerror or e}"
        with self.lock:
            self.last_error = reason
        if self._outage is None:
            self._outage = {
                "since": self.clock(),
                "first_seq": self.queue[0][0] if self.queue else None,
                "dropped": 0,
                "dropped_first": None,
                "dropped_last": None,
                "drop_logged": False,
                "errors_before": self.write_errors_total - 1,  # this one included
            }
            self.log(
                f"error: {reason}; the archive keeps only whole records; records wait in memory "
                f"(at most {self.settings.queue_max}) until it takes writes again"
            )

    def _recovered(self):
        with self.lock:
            self.last_error = None
        o, self._outage = self._outage, None
        if o is None:
            return
        lost = ""
        if o["dropped"]:
            lost = f", {o['dropped']} dropped (seq {o['dropped_first']}..{o['dropped_last']})"
        self.log(
            f"archive writable again after {self.clock() - o['since']:.3f}s: queued records "
            f"appended from seq {o['first_seq']}{lost}; "
            f"{self.write_errors_total - o['errors_before']} failed writes"
        )

    def sync(self, force=False):
        try:
            self.writer.sync(force, next_chance=self.settings.interval_ms / 1000.0)
        except OSError as e:
            with self.lock:
                self.write_errors_total += 1
                self.last_error = f"archive fsync failed: {e.strerror or e}"
            self.log(f"error: {self.last_error}")

    def append_once(self):
        """Observe once and append (after whatever is queued). True when nothing is left queued;
        False when the record waits in the queue (the reason is in ``last_error``).

        The caller must be the archive's only writer (``run_writer`` holds the writer lock)."""
        record = self.observe()
        with self.lock:
            self.queue.append(record)
        ok = self.flush()  # the queue may exceed its bound by this one record meanwhile
        if not ok:
            self.trim()
        self.sync()
        return ok

    def take_over(self):
        """Open the archive and repair a torn tail; on failure the next append retries."""
        try:
            self.writer.open()
        except OSError as e:
            with self.lock:
                self.last_error = f"archive not writable: {e.strerror or e}"
            self.log(f"error: cannot take the archive over: {e.strerror or e}; retrying")

    def wait_for_lock(self):
        """Standby until this process holds the writer lock. False when stopped first.

        While another instance holds the lock this one appends nothing; it checks now and then
        that it could write the archive (``/health`` answers 200 with role standby once it has)
        and polls the lock every min(interval, 50 ms), so it takes over within one interval of
        the lock's release (a stop, or the kernel releasing a killed holder's lock)."""
        poll = min(self.settings.interval_ms / 1000.0, 0.05)
        announced = lock_error = None
        next_probe = 0.0
        while not self.stop_event.is_set():
            try:
                holder = {  # written into the lock file for standbys and people
                    "instance": self.instance,
                    "version": self.settings.version,
                    "pid": os.getpid(),
                    "since": utc_now_rfc3339(),
                }
                if self.writer_lock.try_acquire(holder):
                    with self.lock:
                        self.role = "active"
                        if lock_error is not None:
                            self.last_error = None
                    return True
                lock_error = None
                with self.lock:
                    self.role = "standby"
            except OSError as e:
                reason = f"cannot take the writer lock {self.writer_lock.path}: {e.strerror or e}"
                if reason != lock_error:
                    self.log(f"error: {reason}; retrying")
                lock_error = reason
                with self.lock:
                    self.last_error = reason
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + 1.0
                try:
                    archive.probe_writable(self.settings.archive)
                    error = lock_error
                except OSError as e:
                    error = f"archive path not writable: {e.strerror or e}"
                held_by = self.writer_lock.holder()
                with self.lock:
                    self.standby_error, self.holder = error, held_by
                if announced is None and lock_error is None:
                    announced = True
                    who = " ".join(f"{k}={held_by[k]}" for k in ("instance", "version", "since")
                                   if k in held_by) or "another process"
                    self.log(
                        f"observer standby instance={self.instance} version={self.settings.version}"
                        f": the writer lock is held ({who}); taking over when it is released"
                    )
            self.stop_event.wait(poll)
        return False

    def run_writer(self):
        if not self.wait_for_lock():
            return
        try:
            interval = self.settings.interval_ms / 1000.0
            self.take_over()
            self.log(
                f"observer active instance={self.instance} version={self.settings.version} "
                f"archive={self.settings.archive}"
            )
            next_tick = time.monotonic()
            while not self.stop_event.is_set():
                self.append_once()
                next_tick += interval
                now = time.monotonic()
                if next_tick < now:  # late (a slow disk): tick at once, then on the new schedule
                    next_tick = now
                self.stop_event.wait(next_tick - now)
            self.finish()
        finally:
            self.writer_lock.release()  # only after the last append and its fsync

    def finish(self):
        """On stop: give queued records a last chance, fsync, close."""
        if self.queue:
            wait = self.settings.stop_flush_ms / 1000.0
            self.log(f"stopping with {len(self.queue)} records queued: retrying for {wait:.1f}s")
            deadline = time.monotonic() + wait
            while not self.flush() and time.monotonic() < deadline:
                time.sleep(min(0.05, self.settings.interval_ms / 1000.0))
            if self.queue:
                with self.lock:
                    first, last, n = self.queue[0][0], self.queue[-1][0], len(self.queue)
                    self.queue.clear()
                    self.dropped_total += n
                self.log(
                    f"error: {n} queued records lost (seq {first}..{last}): "
                    f"the archive did not take writes before the stop"
                )
        self.sync(force=True)
        self.writer.close()

    # -- health and metrics ----------------------------------------------------------------------
    def health(self):
        """(http status, body dict)."""
        s = self.settings
        with self.lock:
            last_write, last_error = self.last_write, self.last_error
            depth, dropped = len(self.queue), self.dropped_total
            role, standby_error, holder = self.role, self.standby_error, self.holder
        age = None if last_write is None else max(0.0, self.clock() - last_write)
        body = {
            "status": "ok",
            "role": role,
            "version": s.version,
            "instance": self.instance,
            "last_write_age_s": None if age is None else round(age, 3),
            "archive": s.archive,
            "queue_depth": depth,
            "dropped_records_total": dropped,
        }
        if role == "standby":
            body["active"] = {k: holder[k] for k in ("instance", "version", "since") if k in holder}
            if standby_error is not None:
                body.update(status="unhealthy", reason=f"standby: {standby_error}")
                return 503, body
            return 200, body
        limit = 3 * s.interval_ms / 1000.0
        if depth:
            body.update(
                status="unhealthy",
                reason=f"{last_error or 'archive not writable'}; {depth} records queued in memory",
            )
            return 503, body
        if last_error is not None:
            body.update(status="unhealthy", reason=last_error)
            return 503, body
        if age is None:
            body.update(status="unhealthy", reason="no record written yet")
            return 503, body
        if age > limit:
            reason = f"last write {age:.3f}s ago (limit {limit:.3f}s)"
            body.update(status="unhealthy", reason=reason)
            return 503, body
        return 200, body

    def metrics(self):
        w = self.writer
        with self.lock:
            total, last_write = self.records_total, self.last_write
            depth, dropped, errors = len(self.queue), self.dropped_total, self.write_errors_total
            role = self.role
        version = _label(self.settings.version)
        revision = _label(self.settings.revision)
        rows = [
            ("observer_records_total", "counter",
             "Records appended to the archive by this process.", "", total),
            ("observer_last_write_timestamp_seconds", "gauge",
             "Unix time of the last successful append.", "", f"{last_write or 0:.3f}"),
            ("observer_queue_depth", "gauge",
             "Records waiting in memory for the archive to take writes.", "", depth),
            ("observer_queue_max", "gauge",
             "The queue's bound (OBSERVER_QUEUE_MAX); beyond it the oldest are dropped.", "",
             self.settings.queue_max),
            ("observer_dropped_records_total", "counter",
             "Records lost: dropped from a full queue or still queued at stop.", "", dropped),
            ("observer_write_errors_total", "counter",
             "Record appends that failed (the archive was cut back to its size before each).", "",
             errors),
            ("observer_torn_tails_total", "counter",
             "Torn tails (bytes after the last newline) moved aside by this process.", "",
             w.torn_moved),
            ("observer_fsync_total", "counter", "fdatasync calls on the archive.", "", w.fsyncs),
            ("observer_last_fsync_timestamp_seconds", "gauge",
             "Unix time of the last fdatasync of the archive.", "",
             f"{w.last_sync_wall or 0:.3f}"),
            ("observer_unsynced_records", "gauge",
             "Records appended since the last fdatasync (lost by a power loss now).", "",
             w.unsynced),
            ("observer_interval_seconds", "gauge",
             "The observation interval (OBSERVER_INTERVAL_MS) in seconds.", "",
             f"{self.settings.interval_ms / 1000.0:g}"),
            ("process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.", "", f"{self.started:.3f}"),
            ("observer_build_info", "gauge",
             "Build information: the version (image tag) and the git revision it was built from.",
             f'{{version="{version}",revision="{revision}"}}', 1),
            ("observer_instance_info", "gauge", "This process's instance id (records' instance).",
             f'{{instance="{self.instance}"}}', 1),
        ]
        out = []
        for name, kind, help_text, labels, value in rows:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name}{labels} {value}\n")
        out.append(
            "# HELP observer_role 1 for this process's role: active (holds the writer lock and "
            "appends) or standby (waits for the lock).\n# TYPE observer_role gauge\n"
            + "".join(
                f'observer_role{{role="{r}"}} {int(r == role)}\n' for r in ("active", "standby")
            )
        )
        return "".join(out)

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
    http_thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    http_thread.start()

    def on_signal(signum, _frame):
        obs.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    obs.log(obs.start_line())
    obs.run_writer()
    server.shutdown()
    obs.log(f"observer stopped records={obs.records_total} dropped={obs.dropped_total}")
    return 0

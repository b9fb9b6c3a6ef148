"""Issue 15: the new /metrics (process start time, interval, revision) and logs/observer.log
rotated by size, safe with two writing processes (the active and the standby of a handoff)."""

import os
import re
import subprocess
import sys
import textwrap
import time
import unittest

from obs_helpers import SRC, TempRoot, get, metric

from observer import logfile, settings


def log_files(path):
    """``path``'s rotated files oldest first, then ``path`` itself (those that exist)."""
    d, base = os.path.split(path)
    numbered = []
    for name in os.listdir(d):
        m = re.fullmatch(re.escape(base) + r"\.(\d+)", name)
        if m:
            numbered.append(int(m.group(1)))
    return [f"{path}.{n}" for n in sorted(numbered, reverse=True)] + (
        [path] if os.path.exists(path) else []
    )


def read_lines(files):
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            out.extend(fh.read().splitlines())
    return out


WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {src!r})
    from observer.logfile import RotatingLog
    path, name, n, max_bytes, max_files, go = sys.argv[1:7]
    log = RotatingLog(path, int(max_bytes), int(max_files))
    open(go + "." + name, "w").close()  # ready: both start writing at the same moment
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(int(n)):
        log.write(f"{{name}} {{i:06d}} " + "x" * (i % 37))
    log.close()
    """
)


class Settings(unittest.TestCase):
    def test_defaults_env_and_refusals(self):
        s = settings.load({"OBSERVER_CONFIG_FILE": "/nonexistent.json"})
        self.assertEqual((s.log_max_bytes, s.log_max_files), (10 * 1024 * 1024, 3))
        self.assertEqual(s.revision, "unknown")
        s = settings.load(
            {
                "OBSERVER_CONFIG_FILE": "/nonexistent.json",
                "OBSERVER_LOG_MAX_BYTES": "4096",
                "OBSERVER_LOG_MAX_FILES": "5",
                "OBSERVER_REVISION": "0123abc",
            }
        )
        self.assertEqual((s.log_max_bytes, s.log_max_files, s.revision), (4096, 5, "0123abc"))
        for bad in ({"OBSERVER_LOG_MAX_FILES": "0"}, {"OBSERVER_LOG_MAX_BYTES": "-1"},
                    {"OBSERVER_LOG_MAX_BYTES": "10m"}):
            with self.assertRaises(settings.SettingsError):
                settings.load(dict(bad, OBSERVER_CONFIG_FILE="/nonexistent.json"))


class Rotation(TempRoot):
    def path(self):
        d = os.path.join(self.root, "logs")
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, "observer.log")

    def test_one_writer_rotates_by_size_and_keeps_max_files(self):
        path = self.path()
        log = logfile.RotatingLog(path, max_bytes=100, max_files=3)
        self.addCleanup(log.close)
        for i in range(40):
            log.write(f"line {i:03d} " + "y" * 10)  # 20 bytes a line: 5 lines a file
        files = log_files(path)
        self.assertEqual(files, [path + ".2", path + ".1", path])
        for f in files:
            self.assertLessEqual(os.path.getsize(f), 100, f)
        lines = read_lines(files)
        self.assertEqual(lines, [f"line {i:03d} " + "y" * 10 for i in range(25, 40)])

    def test_max_files_one_and_a_line_longer_than_the_limit(self):
        path = self.path()
        log = logfile.RotatingLog(path, max_bytes=10, max_files=1)
        self.addCleanup(log.close)
        log.write("a" * 30)  # never split, never refused
        log.write("b")
        self.assertEqual(log_files(path), [path])
        self.assertEqual(read_lines([path]), ["b"])

    def test_reopens_after_another_writer_rotated_and_after_a_truncation(self):
        path = self.path()
        a = logfile.RotatingLog(path, max_bytes=50, max_files=3)
        b = logfile.RotatingLog(path, max_bytes=50, max_files=3)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.write("a1 " + "." * 40)
        b.write("b1 " + "." * 40)  # past 50 bytes: b rotates, a's descriptor is now .1's
        self.assertEqual(b.rotations, 1)
        a.write("a2")  # must land in the new observer.log, not in observer.log.1
        self.assertEqual(read_lines([path + ".1"]), ["a1 " + "." * 40])
        self.assertEqual(read_lines([path]), ["b1 " + "." * 40, "a2"])
        os.truncate(path, 0)  # logrotate's copytruncate
        a.write("a3")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"a3\n")

    def writers(self, max_bytes, max_files, n=1500):
        path = self.path()
        go = os.path.join(self.root, "go")
        script = WRITER.format(src=SRC)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, path, name, str(n), str(max_bytes),
                 str(max_files), go]
            )
            for name in ("A", "B")
        ]
        for name in ("A", "B"):
            while not os.path.exists(f"{go}.{name}"):
                self.assertIsNone(procs[0].poll() or procs[1].poll(), "a writer died")
                time.sleep(0.005)
        with open(go, "w"):
            pass
        for p in procs:
            self.assertEqual(p.wait(timeout=120), 0)
        return path

    def test_two_writers_lose_nothing_and_keep_each_writers_order(self):
        n, max_bytes = 1500, 4096
        path = self.writers(max_bytes, max_files=1000, n=n)
        files = log_files(path)
        self.assertGreater(len(files), 10, "the writers must have rotated many times")
        for f in files:
            self.assertLessEqual(os.path.getsize(f), max_bytes, f)
        lines = read_lines(files)
        for name in ("A", "B"):
            mine = [ln for ln in lines if ln.startswith(name + " ")]
            self.assertEqual(
                [int(ln.split()[1]) for ln in mine], list(range(n)),
                f"{name}'s lines lost, repeated or out of order across the rotated files",
            )
        self.assertEqual(len(lines), 2 * n, "a torn or foreign line")

    def test_two_writers_keep_max_files(self):
        path = self.writers(2048, max_files=3, n=1000)
        files = log_files(path)
        self.assertEqual(files, [path + ".2", path + ".1", path])
        for f in files:
            self.assertLessEqual(os.path.getsize(f), 2048, f)
        # Only the oldest lines went: what each writer has left is its last lines, in order.
        lines = read_lines(files)
        self.assertRegex(read_lines([path])[-1], r"^[AB] 000999 ")
        for name in ("A", "B"):
            seqs = [int(ln.split()[1]) for ln in lines if ln.startswith(name + " ")]
            if seqs:
                self.assertEqual(seqs, list(range(seqs[0], 1000)), name)


class Metrics(TempRoot):
    def test_new_metrics_of_a_running_observer(self):
        before = time.time()
        p = self.start(OBSERVER_REVISION="0123456789abcdef", OBSERVER_INTERVAL_MS="250")
        p.wait_health()
        status, text = get(p.port, "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("# TYPE process_start_time_seconds gauge", text)
        self.assertIn("# TYPE observer_interval_seconds gauge", text)
        self.assertIn("# TYPE observer_write_errors_total counter", text)
        self.assertIn(
            'observer_build_info{version="v-test",revision="0123456789abcdef"} 1', text
        )
        self.assertEqual(metric(p.port, "observer_interval_seconds"), 0.25)
        self.assertEqual(metric(p.port, "observer_write_errors_total"), 0)
        started = metric(p.port, "process_start_time_seconds")
        # /proc's start time has the clock tick's resolution (10 ms).
        self.assertGreaterEqual(started, before - 1.0)
        self.assertLessEqual(started, time.time())
        self.assertEqual(p.terminate(), 0)


class TwoObserversOneLog(TempRoot):
    """A handoff in miniature: the active and the standby log to one rotated file."""

    def test_handoff_lines_all_kept_in_order(self):
        extra = dict(OBSERVER_LOG_MAX_BYTES="300", OBSERVER_LOG_MAX_FILES="50")
        a = self.start(**extra)
        a.wait_health(role="active")
        b = self.start(**extra)
        b.wait_health(role="standby")
        self.assertEqual(a.terminate(), 0)
        b.wait_health(role="active")
        self.assertEqual(b.terminate(), 0)
        path = os.path.join(self.root, "logs", "observer.log")
        files = log_files(path)
        self.assertGreater(len(files), 2, "300 bytes: the file must have rotated")
        for f in files:
            self.assertLessEqual(os.path.getsize(f), 300, f)
        lines = read_lines(files)
        events = []  # (kind, instance or None), in file order
        for ln in lines:
            m = re.match(r"\S+ observer (started|standby|active|stopped)\b", ln)
            if m:
                i = re.search(r" instance=([0-9a-f]+)", ln)
                events.append((m.group(1), i.group(1) if i else None))
        text = "\n".join(lines)
        a_id, b_id = [i for k, i in events if k == "started"]
        self.assertEqual([k for k, i in events if i == a_id], ["started", "active"], text)
        self.assertEqual(
            [k for k, i in events if i == b_id], ["started", "standby", "active"], text
        )
        stops = [n for n, (k, _) in enumerate(events) if k == "stopped"]
        self.assertEqual(len(stops), 2, text)
        self.assertEqual(stops[-1], len(events) - 1, text)


if __name__ == "__main__":
    unittest.main()

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, SRC)

import paths  # noqa: E402
from observer import settings, service  # noqa: E402

SECRET_KEY = "kis-key-8f3a1c-SHOULD-NEVER-APPEAR"
SECRET_VALUE = "kis-secret-77d0e2-SHOULD-NEVER-APPEAR"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempDirs(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="observer-test-")
        self.env = {
            "OBSERVER_CONFIG_DIR": os.path.join(self.root, "config"),
            "OBSERVER_DATA_DIR": os.path.join(self.root, "data"),
            "OBSERVER_LOG_DIR": os.path.join(self.root, "logs"),
            "OBSERVER_CONFIG_FILE": os.path.join(self.root, "deployment_config.json"),
        }

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def write_config(self, doc):
        with open(self.env["OBSERVER_CONFIG_FILE"], "w") as f:
            json.dump(doc, f)


class PathContract(unittest.TestCase):
    def test_archive_under_config(self):
        self.assertEqual(paths.observer_asset_dir("/app/config"), "/app/config/observer")
        self.assertEqual(paths.archive_path("/app/config"), "/app/config/observer/observer.jsonl")
        self.assertNotIn("data/observer", paths.archive_path("/app/config"))


class Precedence(TempDirs):
    def test_env_beats_file_beats_default(self):
        self.write_config(
            {
                "environment": {"OBSERVER_LOG_DIR": "/from/file/logs"},
                "paths": {"data_dir": "/from/file/data"},
                "observer": {"interval_ms": 250},
            }
        )
        env = dict(self.env)
        del env["OBSERVER_DATA_DIR"]
        del env["OBSERVER_LOG_DIR"]
        env["OBSERVER_LOG_DIR"] = "/from/env/logs"
        s = settings.load(env)
        self.assertEqual(s.log_dir, "/from/env/logs")
        self.assertEqual(s.sources["OBSERVER_LOG_DIR"], "env")
        self.assertEqual(s.data_dir, "/from/file/data")
        self.assertEqual(s.sources["OBSERVER_DATA_DIR"], "file")
        self.assertEqual(s.interval_ms, 250)
        self.assertEqual(s.port, 8000)
        self.assertEqual(s.sources["OBSERVER_PORT"], "default")

    def test_empty_env_value_does_not_override(self):
        self.write_config({"environment": {"QTS_OBSERVER_STANDALONE": "0"}})
        s = settings.load(dict(self.env, QTS_OBSERVER_STANDALONE=""))
        self.assertEqual(s.standalone, "0")

    def test_missing_file_uses_defaults(self):
        s = settings.load({"OBSERVER_CONFIG_FILE": os.path.join(self.root, "absent.json")})
        self.assertEqual(s.config_dir, "/app/config")
        self.assertEqual(s.archive, "/app/config/observer/observer.jsonl")

    def test_interval_minimum(self):
        with self.assertRaises(settings.SettingsError):
            settings.load(dict(self.env, OBSERVER_INTERVAL_MS="5"))

    def test_forbidden_name(self):
        with self.assertRaises(settings.SettingsError) as cm:
            settings.load(dict(self.env, OBSERVER_STANDALONE="1"))
        self.assertIn("QTS_OBSERVER_STANDALONE", str(cm.exception))


class Writer(TempDirs):
    def make(self, **extra):
        return service.Observer(settings.load(dict(self.env, **extra)))

    def read_lines(self, path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def test_records_and_append_only_across_restarts(self):
        first = self.make(OBSERVER_VERSION="v1.0.0")
        for _ in range(3):
            self.assertTrue(first.append_once())
        archive = first.settings.archive
        self.assertTrue(archive.endswith("config/observer/observer.jsonl"))
        before = read_bytes(archive)
        second = self.make(OBSERVER_VERSION="v1.0.1")
        for _ in range(2):
            self.assertTrue(second.append_once())
        after = read_bytes(archive)
        self.assertTrue(after.startswith(before), "the archive was rewritten")
        lines = self.read_lines(archive)
        self.assertEqual([r["seq"] for r in lines], [1, 2, 3, 1, 2])
        self.assertEqual(lines[0]["version"], "v1.0.0")
        self.assertEqual(lines[-1]["version"], "v1.0.1")
        self.assertNotEqual(lines[0]["instance"], lines[-1]["instance"])
        self.assertRegex(lines[0]["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_health_turns_503_when_archive_unwritable(self):
        obs = self.make()
        self.assertEqual(obs.health()[0], 503)  # nothing written yet
        self.assertTrue(obs.append_once())
        status, body = obs.health()
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ok")
        # Replace the archive directory by a file: no process (not even root) can append now.
        shutil.rmtree(obs.settings.archive_dir)
        with open(obs.settings.archive_dir, "w") as f:
            f.write("not a directory")
        self.assertFalse(obs.append_once())
        status, body = obs.health()
        self.assertEqual(status, 503)
        self.assertIn("archive not writable", body["reason"])

    def test_health_turns_503_when_writes_stall(self):
        now = [1000.0]
        obs = service.Observer(
            settings.load(dict(self.env, OBSERVER_INTERVAL_MS="100")), clock=lambda: now[0]
        )
        obs.append_once()
        now[0] += 0.25
        self.assertEqual(obs.health()[0], 200)
        now[0] += 0.1
        self.assertEqual(obs.health()[0], 503)

    def test_metrics_format(self):
        obs = self.make(OBSERVER_VERSION='v1.2.3')
        obs.append_once()
        obs.append_once()
        text = obs.metrics()
        sample = re.compile(
            r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.eE+-]+$'
        )
        for line in text.splitlines():
            if line.startswith("#"):
                self.assertRegex(line, r"^# (HELP|TYPE) [a-z_]+ .+$")
            else:
                self.assertRegex(line, sample)
        self.assertIn("# TYPE observer_records_total counter", text)
        self.assertIn("observer_records_total 2\n", text)
        self.assertIn('observer_build_info{version="v1.2.3",revision="unknown"} 1', text)
        self.assertIn("# TYPE observer_last_write_timestamp_seconds gauge", text)


class Process(TempDirs):
    """The real process: start line, HTTP endpoints, SIGTERM, secrets."""

    def test_process_end_to_end(self):
        port = free_port()
        env = dict(
            os.environ,
            **self.env,
            PYTHONPATH=SRC,
            OBSERVER_PORT=str(port),
            OBSERVER_INTERVAL_MS="50",
            OBSERVER_VERSION="v9.9.9",
            QTS_OBSERVER_STANDALONE="1",
            KIS_API_KEY=SECRET_KEY,
            KIS_API_SECRET=SECRET_VALUE,
        )
        env.pop("OBSERVER_STANDALONE", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "observer"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 10
            status = None
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        status, body = r.status, json.loads(r.read())
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.1)
            self.assertEqual(status, 200)
            self.assertEqual(body["version"], "v9.9.9")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                self.assertIn("observer_records_total", r.read().decode())
            with self.assertRaises(urllib.error.HTTPError) as cm:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=2)
            self.assertEqual(cm.exception.code, 404)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=5)
            self.assertEqual(proc.returncode, 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        text = out.decode()
        self.assertIn("observer started version=v9.9.9 standalone=1 archive=", text)
        self.assertIn("kis_api_key=present", text)
        log = read_bytes(os.path.join(self.env["OBSERVER_LOG_DIR"], "observer.log")).decode()
        self.assertIn("observer started version=v9.9.9", log)
        archive = paths.archive_path(self.env["OBSERVER_CONFIG_DIR"])
        with open(archive) as f:
            raw = f.read()
        self.assertTrue(raw.endswith("\n"))
        for line in raw.splitlines():
            json.loads(line)
        for blob in (text, log, raw):
            self.assertNotIn(SECRET_KEY, blob)
            self.assertNotIn(SECRET_VALUE, blob)

    def test_forbidden_name_refuses_to_start(self):
        env = dict(os.environ, **self.env, PYTHONPATH=SRC, OBSERVER_STANDALONE="1")
        proc = subprocess.run(
            [sys.executable, "-m", "observer"], env=env, capture_output=True, timeout=10
        )
        self.assertNotEqual(proc.returncode, 0)
        err = proc.stderr.decode().strip().splitlines()
        self.assertEqual(len(err), 1)
        self.assertIn("QTS_OBSERVER_STANDALONE", err[0])


if __name__ == "__main__":
    unittest.main()

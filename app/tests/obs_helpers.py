"""Shared helpers of the observer's fault tests: real processes, real file systems."""

import errno
import json
import os
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
if SRC not in sys.path:
    sys.path.insert(0, SRC)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def get(port, path, timeout=2):
    """(status, body text) of GET http://127.0.0.1:port/path; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return None, str(e)


def health(port):
    status, text = get(port, "/health")
    if status is None:
        return None, {}
    return status, json.loads(text)


def metric(port, name):
    """The value of an unlabelled sample in /metrics (float), or None."""
    status, text = get(port, "/metrics")
    if status != 200:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_for(predicate, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def fill(directory, name="filler"):
    """Fill the file system of ``directory`` with a file until ENOSPC; returns its path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (65536, 4096, 512, 1):
            block = b"\0" * chunk
            try:
                while True:
                    os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return path


class ObserverProcess:
    """``python3 -m observer`` as a real child process, its output in a file."""

    def __init__(self, env, out_path):
        self.env = env
        self.port = int(env["OBSERVER_PORT"])
        self.out_path = out_path
        self.out = open(out_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer"], env=env, stdout=self.out, stderr=subprocess.STDOUT
        )

    def output(self):
        return read_bytes(self.out_path).decode(errors="replace")

    def wait_health(self, status=200, timeout=10, **body):
        def ok():
            code, b = health(self.port)
            if code == status and all(b.get(k) == v for k, v in body.items()):
                return b
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the observer exited ({self.proc.returncode}):\n{self.output()}"
                )
            return None

        return wait_for(ok, timeout, what=f"/health {status} {body} on port {self.port}")

    def terminate(self, timeout=15):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.out.close()


class TempRoot(unittest.TestCase):
    """A temporary root with config/logs dirs and an env for the observer."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="observer-test-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)  # runs last
        self.procs = []
        self.addCleanup(self._close_procs)
        self.config_dir = os.path.join(self.root, "config")

    def _close_procs(self):
        for p in self.procs:
            p.close()

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("OBSERVER_STANDALONE", None)
        env.update(
            PYTHONPATH=SRC,
            OBSERVER_CONFIG_DIR=self.config_dir,
            OBSERVER_DATA_DIR=os.path.join(self.root, "data"),
            OBSERVER_LOG_DIR=os.path.join(self.root, "logs"),
            OBSERVER_CONFIG_FILE=os.path.join(self.root, "absent.json"),
            OBSERVER_PORT=str(free_port()),
            OBSERVER_INTERVAL_MS="20",
            OBSERVER_VERSION="v-test",
            QTS_OBSERVER_STANDALONE="1",
        )
        env.update({k: str(v) for k, v in extra.items()})
        return env

    @property
    def archive(self):
        return os.path.join(self.config_dir, "observer", "observer.jsonl")

    def start(self, **extra):
        out = os.path.join(self.root, f"out-{len(self.procs)}.txt")
        p = ObserverProcess(self.env(**extra), out)
        self.procs.append(p)
        return p

    def check(self, *args):
        """Run the checker CLI; (exit code, parsed JSON)."""
        r = subprocess.run(
            [sys.executable, "-m", "observer.check", "--json", *args],
            env=dict(os.environ, PYTHONPATH=SRC),
            capture_output=True,
            timeout=60,
        )
        return r.returncode, json.loads(r.stdout)


class TmpfsRoot(TempRoot):
    """TempRoot whose config dir lives on a small tmpfs of its own (root only)."""

    TMPFS_SIZE = "256k"

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        self.mnt = os.path.join(self.root, "mnt")
        os.mkdir(self.mnt)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.TMPFS_SIZE}", "tmpfs", self.mnt],
            capture_output=True,
        )
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
        self.addCleanup(self._umount)
        self.config_dir = os.path.join(self.mnt, "config")

    def _umount(self):
        self._close_procs()
        if subprocess.run(["umount", self.mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

"""``logs/observer.log``, rotated by size, safe for two writers (issue 15).

During a handoff deploy two observer processes (the active instance and the standby candidate,
in two containers) append to the same file on the bind mount. Each line is one ``write(2)`` on a
descriptor opened with ``O_APPEND``, made while holding an exclusive ``flock`` on
``<log dir>/.observer.log.lock``; under that lock the writer first reopens the file when the path
names another inode than its descriptor (the other process rotated it, or a person moved it
aside), then rotates when the line would take the file past ``max_bytes``:
``observer.log.{n-2}`` -> ``observer.log.{n-1}``, ..., ``observer.log`` -> ``observer.log.1``,
keeping ``max_files`` files in all (the current one included, as Docker's ``max-file``). So no
line is lost or written into a file that was rotated away, and each writer's lines keep their
order across the files. A truncation in place (logrotate's ``copytruncate``) is harmless: the
descriptor appends at the new end.

When the lock cannot be had within ``lock_wait`` seconds (a peer frozen while holding it, e.g. a
paused container) or its file cannot be opened, the line is appended without the lock and without
rotating: never lost, never blocking the archive writer for long.
"""

import fcntl
import os
import threading
import time

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 3


class RotatingLog:
    """Appends whole lines to ``path``; see the module's docs. ``max_bytes`` 0: never rotates."""

    def __init__(self, path, max_bytes=DEFAULT_MAX_BYTES, max_files=DEFAULT_MAX_FILES,
                 lock_wait=0.5):
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.lock_wait = lock_wait
        self.lock_path = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
        self.rotations = 0  # rotations this process made
        self._fd = None
        self._lock_fd = None
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing one fd

    # -- descriptors -----------------------------------------------------------------------------
    def _open(self):
        self._close_log()
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _close_log(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _current(self):
        """Reopens when the path is gone or names another inode than the open descriptor."""
        if self._fd is None:
            self._open()
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._open()
            return
        mine = os.fstat(self._fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            self._open()

    def _lock(self):
        """True when this process now holds the exclusive lock."""
        if self._lock_fd is None:
            try:
                os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
                self._lock_fd = os.open(
                    self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
            except OSError:
                return False
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
            except OSError:
                return False

    def _unlock(self):
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError:
            pass

    # -- rotation --------------------------------------------------------------------------------
    def _rotate(self):
        """Shifts the numbered files up by one, the current file to ``.1`` (with ``max_files``
        1: removed), and opens a new one. Called with the lock held."""
        for i in range(self.max_files - 1, 1, -1):
            try:
                os.replace(f"{self.path}.{i - 1}", f"{self.path}.{i}")
            except FileNotFoundError:
                pass
        if self.max_files > 1:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self.rotations += 1
        self._open()

    # -- writing ---------------------------------------------------------------------------------
    def write(self, line):
        """Appends ``line`` plus a newline as one write. Raises OSError when it cannot."""
        data = (line + "\n").encode()
        with self._thread_lock:
            locked = self._lock()
            try:
                self._current()
                if locked and self.max_bytes:
                    size = os.fstat(self._fd).st_size
                    if size and size + len(data) > self.max_bytes:
                        self._rotate()
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError:
                self._close_log()  # the next line starts afresh
                raise
            finally:
                if locked:
                    self._unlock()

    def close(self):
        with self._thread_lock:
            self._close_log()
            if self._lock_fd is not None:
                try:
                    os.close(self._lock_fd)
                except OSError:
                    pass
                self._lock_fd = None

"""The archive file itself: whole lines or nothing.

* An append is one or more ``write()`` calls on an ``O_APPEND`` descriptor. When it fails or
  comes up short (a full disk), the file is cut back (``ftruncate``) to the size it had before
  that append: the archive never keeps part of a record. The observer is the archive's only
  writer (the writer lock, ``.writer.lock`` beside the archive, makes sure of it), so the size
  before the append is known exactly.
* Taking the archive over (at start, after the file was replaced, or when it changed behind the
  writer's back) repairs a torn tail first: bytes after the last newline — what a crash or a
  power loss mid-write leaves — are copied to ``observer.jsonl.torn-<UTC time>`` beside the
  archive, fsynced, and only then cut from the archive. Nothing is ever appended onto a fragment.
* Durability: an appended record reaches ``fdatasync`` within ``fsync_ms`` milliseconds (0: right
  after every append), and everything is synced before the file is closed. Records appended in
  the same window share one ``fdatasync``.
"""

import datetime
import errno
import fcntl
import json
import os
import time

CHUNK = 1 << 16
TORN_MARK = ".torn-"
LOCK_NAME = ".writer.lock"


def fsync_dir(path):
    """Make a directory entry (a new file, a removed one) survive a power loss. Best effort."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tail_start(fd, size):
    """Offset just after the last newline within the first ``size`` bytes of ``fd`` (0 when
    there is none). Equals ``size`` when the file ends with a newline (or is empty)."""
    end = size
    while end > 0:
        start = max(0, end - CHUNK)
        buf = os.pread(fd, end - start, start)
        i = buf.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def probe_writable(archive):
    """Raise OSError unless this process could append to ``archive`` (nothing is written)."""
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    os.close(os.open(archive, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))


def torn_path(archive, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{archive}{TORN_MARK}{now.strftime('%Y%m%dT%H%M%SZ')}"


class ArchiveWriter:
    def __init__(self, path, fsync_ms=1000, log=print):
        self.path = path
        self.fsync_s = fsync_ms / 1000.0
        self.log = log
        self.fd = None
        self.ident = None  # (st_dev, st_ino) of the open file
        self.size = 0  # the archive's size; it ends with a whole line
        self.restore_pending = False  # a failed append's bytes still need cutting off
        self.unsynced = 0  # records appended since the last fdatasync
        self.unsynced_since = None  # time.monotonic() of the oldest unsynced append
        self.last_sync_wall = None  # time.time() of the last fdatasync
        self.fsyncs = 0
        self.torn_moved = 0
        # Test hook (OBSERVER_TEST_SPLIT_WRITE_MS): write each append in two halves with this
        # pause between them, so that a kill -9 can land mid-record and leave a real torn tail.
        self.split_pause = 0.0

    # -- taking the archive over -----------------------------------------------------------------
    def open(self):
        """Open (or create) the archive and repair a torn tail. Raises OSError; then retry."""
        if self.fd is not None and self.unsynced:
            try:
                os.fdatasync(self.fd)  # what went to the file being let go
            except OSError:
                pass
        self.close()
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            st = os.fstat(fd)
            if st.st_size == 0:
                fsync_dir(directory)  # possibly a new file: its name must survive a power loss
            self.fd, self.ident = fd, (st.st_dev, st.st_ino)
            self.restore_pending = False
            self.unsynced, self.unsynced_since = 0, None
            self.repair()
        except BaseException:
            self.close()
            raise

    def repair(self):
        """Move a torn tail (bytes after the last newline) aside. Returns its new path or None."""
        size = os.fstat(self.fd).st_size
        cut = tail_start(self.fd, size)
        if cut == size:
            self.size = size
            return None
        dest = self._copy_aside(cut, size)
        os.ftruncate(self.fd, cut)
        os.fdatasync(self.fd)
        self.size = cut
        self.torn_moved += 1
        self.log(
            f"warning: torn tail repaired: {size - cut} bytes after offset {cut} (no newline) "
            f"moved from {self.path} to {dest}"
        )
        return dest

    def _copy_aside(self, cut, size):
        base = torn_path(self.path)
        for n in range(1, 1000):
            dest = base if n == 1 else f"{base}-{n}"
            try:
                out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, f"too many torn files named {base}*")
        try:
            try:
                pos = cut
                while pos < size:
                    buf = os.pread(self.fd, min(CHUNK, size - pos), pos)
                    if not buf:
                        break
                    view = memoryview(buf)
                    while view:
                        view = view[os.write(out, view) :]
                    pos += len(buf)
                os.fsync(out)
            finally:
                os.close(out)
        except OSError:
            try:
                os.unlink(dest)
            except OSError:
                pass
            raise
        fsync_dir(os.path.dirname(dest))
        return dest

    def _check(self):
        """Before an append: the descriptor still names the archive, whose end we know."""
        if self.fd is None:
            self.open()
            return
        st = os.stat(self.path)  # FileNotFoundError, NotADirectoryError...: the append fails
        if (st.st_dev, st.st_ino) != self.ident:
            self.log(f"warning: {self.path} was replaced: taking the new file over")
            self.open()
            return
        if self.restore_pending:
            os.ftruncate(self.fd, self.size)
            self.restore_pending = False
            self.log(f"{self.path} cut back to {self.size} bytes")
            return
        if st.st_size != self.size:
            self.log(
                f"warning: {self.path} changed behind the writer's back "
                f"({self.size} -> {st.st_size} bytes): checking its tail"
            )
            self.repair()

    # -- appending -------------------------------------------------------------------------------
    def append(self, data, records=1):
        """Append ``data`` (whole lines) entirely, or leave the archive as it was and raise."""
        try:
            self._check()
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e)) from None
        before = self.size
        done = 0
        try:
            view = memoryview(data)
            if self.split_pause and len(data) > 1:
                done = os.write(self.fd, view[: len(data) // 2])
                time.sleep(self.split_pause)
            while done < len(data):
                n = os.write(self.fd, view[done:])
                if n <= 0:
                    raise OSError(errno.EIO, "write() wrote nothing")
                done += n
        except OSError as e:
            how = e.strerror or str(e)
            if done:
                how += f" after a short write ({done} of {len(data)} bytes)"
            raise OSError(e.errno, how + self._restore(before)) from None
        self.size = before + len(data)
        if not self.unsynced:
            self.unsynced_since = time.monotonic()
        self.unsynced += records

    def _restore(self, before):
        try:
            os.ftruncate(self.fd, before)
        except OSError as e:
            self.restore_pending = True
            return f"; cutting back to {before} bytes failed ({e.strerror}): retried first"
        return ""

    def sync(self, force=False, next_chance=0.0):
        """fdatasync when something is unsynced and it is due: when the oldest unsynced record
        would otherwise stay unsynced longer than ``fsync_ms``, the next chance to sync being
        ``next_chance`` seconds away (the writer's interval). Returns True when it ran."""
        if self.fd is None or self.unsynced == 0:
            return False
        if not force and self.fsync_s > 0:
            if time.monotonic() + next_chance - self.unsynced_since < self.fsync_s:
                return False
        os.fdatasync(self.fd)
        self.last_sync_wall = time.time()
        self.fsyncs += 1
        self.unsynced = 0
        self.unsynced_since = None
        return True

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = None
        self.ident = None


class WriterLock:
    """The single-writer lock: an exclusive ``flock`` on ``.writer.lock`` beside the archive,
    held for as long as the process appends. The kernel releases it when the process dies."""

    def __init__(self, archive):
        self.path = os.path.join(os.path.dirname(archive), LOCK_NAME)
        self.fd = None

    def try_acquire(self, holder=None):
        """True when this process now holds the lock; False when another one does."""
        if self.fd is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        if holder is not None:  # who holds it, for people and standbys; best effort
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(holder, separators=(",", ":")) + "\n").encode(), 0)
            except OSError:
                pass
        return True

    def holder(self):
        """What the lock file says about its holder (a dict), or {}."""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.loads(f.read() or "{}")
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

"""The archive writer in process, on real file systems: torn tails, a real full disk (tmpfs),
the queue and its bound, the fsync policy."""

import glob
import json
import os
import threading
import time
import unittest

from obs_helpers import TempRoot, TmpfsRoot, fill, read_bytes

from observer import archive, check, service, settings


def lines_of(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


class InProcess:
    """Observers in this process on self.config_dir."""

    def make(self, **extra):
        env = self.env(**extra)
        obs = service.Observer(settings.load(env))
        obs.logged = []
        obs.log = obs.logged.append
        obs.writer.log = obs.log
        return obs


class TornTail(InProcess, TempRoot):
    def seed(self, data):
        os.makedirs(os.path.dirname(self.archive), exist_ok=True)
        with open(self.archive, "wb") as f:
            f.write(data)

    def torn_files(self):
        return sorted(glob.glob(self.archive + ".torn-*"))

    def test_torn_tail_moved_aside_at_start(self):
        good = b'{"ts":"2026-01-01T00:00:00.000Z","seq":1,"instance":"a","version":"v"}\n'
        self.seed(good + b'{"ts":"2026-01-01T00:00:01.0')
        obs = self.make()
        obs.take_over()
        self.assertEqual(read_bytes(self.archive), good)
        [torn] = self.torn_files()
        self.assertRegex(os.path.basename(torn), r"^observer\.jsonl\.torn-\d{8}T\d{6}Z$")
        self.assertEqual(read_bytes(torn), b'{"ts":"2026-01-01T00:00:01.0')
        self.assertTrue(any("torn tail repaired" in m and torn in m for m in obs.logged))
        self.assertTrue(obs.append_once())
        recs = lines_of(self.archive)
        self.assertEqual([r["seq"] for r in recs], [1, 1])
        self.assertIn("observer_torn_tails_total 1\n", obs.metrics())

    def test_file_without_any_newline_and_a_second_torn_file_in_the_same_second(self):
        self.seed(b"\0\0\0garbage")
        self.make().take_over()
        self.assertEqual(read_bytes(self.archive), b"")
        self.seed(b"more")
        self.make().take_over()
        torn = self.torn_files()
        self.assertEqual(len(torn), 2)
        self.assertEqual(sorted(read_bytes(t) for t in torn), [b"\0\0\0garbage", b"more"])

    def test_clean_archive_is_left_alone(self):
        self.seed(b'{"a":1}\n')
        self.make().take_over()
        self.assertEqual(read_bytes(self.archive), b'{"a":1}\n')
        self.assertEqual(self.torn_files(), [])

    def test_fragment_appended_behind_the_writers_back_is_moved_aside(self):
        obs = self.make()
        self.assertTrue(obs.append_once())
        with open(self.archive, "ab") as f:  # a stray writer leaves a fragment
            f.write(b'{"stray":')
        self.assertTrue(obs.append_once())
        self.assertEqual([r["seq"] for r in lines_of(self.archive)], [1, 2])
        [torn] = self.torn_files()
        self.assertEqual(read_bytes(torn), b'{"stray":')

    def test_archive_replaced_is_taken_over(self):
        obs = self.make()
        self.assertTrue(obs.append_once())
        os.rename(self.archive, self.archive + ".old")
        with open(self.archive, "wb") as f:
            f.write(b'{"x":1}\n{"y"')
        self.assertTrue(obs.append_once())
        data = read_bytes(self.archive)
        self.assertTrue(data.startswith(b'{"x":1}\n{"ts"'), data)
        self.assertEqual(len(self.torn_files()), 1)


class FsyncPolicy(InProcess, TempRoot):
    def run_for(self, obs, seconds):
        """Samples of (records at risk, age in seconds of the oldest of them)."""
        samples = []
        t = threading.Thread(target=obs.run_writer)
        t.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            w = obs.writer
            n, since = w.unsynced, w.unsynced_since
            samples.append((n, 0.0 if since is None or not n else time.monotonic() - since))
            time.sleep(0.003)
        obs.stop_event.set()
        t.join()
        return samples

    def test_fsync_at_most_every_period_and_at_stop(self):
        obs = self.make(OBSERVER_INTERVAL_MS=10, OBSERVER_FSYNC_MS=200)
        samples = self.run_for(obs, 1.0)
        # At risk at any moment: the records appended in the last fsync period (200 ms, i.e.
        # 20 records at 10 ms), none of them older than the period (+ scheduling slack).
        self.assertLessEqual(max(n for n, _ in samples), 200 // 10 + 2)
        self.assertLess(max(age for _, age in samples), 0.2 + 0.05)
        self.assertGreater(max(n for n, _ in samples), 2)  # it really batches
        self.assertGreaterEqual(obs.writer.fsyncs, 4)
        self.assertLessEqual(obs.writer.fsyncs, 8)
        self.assertEqual(obs.writer.unsynced, 0)  # stop: everything synced

    def test_fsync_every_record(self):
        obs = self.make(OBSERVER_INTERVAL_MS=10, OBSERVER_FSYNC_MS=0)
        samples = self.run_for(obs, 0.3)
        self.assertLessEqual(max(n for n, _ in samples), 1)
        self.assertEqual(obs.writer.fsyncs, obs.records_total)


class DiskFull(InProcess, TmpfsRoot):
    """A real full disk: a tmpfs filled by a filler file, then freed."""

    def test_short_write_is_cut_back_and_queued_records_flush_in_order(self):
        obs = self.make()
        for _ in range(3):
            self.assertTrue(obs.append_once())
        filler = fill(self.mnt)
        # The archive's last page still has room: appends go on until one comes up short.
        results = [obs.append_once() for _ in range(200)]
        self.assertIn(False, results)
        first_fail = results.index(False)
        self.assertTrue(all(not r for r in results[first_fail:]))
        data = read_bytes(self.archive)
        self.assertTrue(data.endswith(b"\n"), "a partial record was left in the archive")
        written = lines_of(self.archive)
        self.assertEqual([r["seq"] for r in written], list(range(1, len(written) + 1)))
        self.assertEqual(len(obs.queue), 200 - first_fail)
        self.assertTrue(any("No space left on device" in m for m in obs.logged), obs.logged)
        status, body = obs.health()
        self.assertEqual(status, 503)
        self.assertIn("No space left on device", body["reason"])
        self.assertIn(f"{len(obs.queue)} records queued", body["reason"])
        text = obs.metrics()
        self.assertIn(f"observer_queue_depth {len(obs.queue)}\n", text)
        self.assertIn("observer_dropped_records_total 0\n", text)
        self.assertIn(f"\nobserver_write_errors_total {200 - first_fail}\n", text)
        os.unlink(filler)
        self.assertTrue(obs.append_once())
        self.assertEqual(len(obs.queue), 0)
        self.assertEqual(obs.health()[0], 200)
        recs = lines_of(self.archive)
        self.assertEqual([r["seq"] for r in recs], list(range(1, 3 + 200 + 2)))
        self.assertTrue(any("archive writable again" in m for m in obs.logged))
        self.assertTrue(check.check_archive(self.archive)["ok"])

    def test_queue_bound_drops_the_oldest(self):
        obs = self.make(OBSERVER_QUEUE_MAX=5)
        self.assertTrue(obs.append_once())
        filler = fill(self.mnt)
        while obs.append_once():
            pass
        last_written = lines_of(self.archive)[-1]["seq"]
        for _ in range(9):
            obs.append_once()
        # 10 records failed; the bound keeps the 5 most recent.
        self.assertEqual([seq for seq, _ in obs.queue], list(range(obs.seq - 4, obs.seq + 1)))
        self.assertEqual(obs.dropped_total, 5)
        self.assertIn("observer_dropped_records_total 5\n", obs.metrics())
        self.assertTrue(any("dropping the oldest" in m for m in obs.logged))
        os.unlink(filler)
        self.assertTrue(obs.append_once())
        report = check.check_archive(self.archive)
        self.assertFalse(report["ok"])
        [inst] = report["instances"]
        self.assertEqual(inst["missing"], [[last_written + 1, last_written + 5]])
        self.assertEqual(inst["last_seq"], obs.seq)

    def test_torn_tail_repair_waits_for_space(self):
        os.makedirs(os.path.dirname(self.archive))
        good = b'{"ts":"2026-01-01T00:00:00.000Z","seq":1,"instance":"a","version":"v"}\n'
        with open(self.archive, "wb") as f:
            f.write(good + b"x" * 4000)  # a torn tail, its page full
        filler = fill(self.mnt)
        obs = self.make()
        obs.take_over()  # cannot write the torn file: nothing is cut, nothing appended
        self.assertFalse(obs.append_once())
        self.assertEqual(read_bytes(self.archive), good + b"x" * 4000)
        self.assertEqual(glob.glob(self.archive + ".torn-*"), [])
        self.assertEqual(obs.health()[0], 503)
        os.unlink(filler)
        self.assertTrue(obs.append_once())
        recs = lines_of(self.archive)
        self.assertEqual([r["seq"] for r in recs], [1, 1, 2])
        [torn] = glob.glob(self.archive + ".torn-*")
        self.assertEqual(read_bytes(torn), b"x" * 4000)


class WriterUnit(unittest.TestCase):
    def test_tail_start(self):
        import tempfile

        with tempfile.TemporaryFile() as f:
            fd = f.fileno()
            self.assertEqual(archive.tail_start(fd, 0), 0)
            os.write(fd, b"a\nbb\n")
            self.assertEqual(archive.tail_start(fd, 5), 5)
            os.write(fd, b"c" * (archive.CHUNK * 2 + 7))
            self.assertEqual(archive.tail_start(fd, os.fstat(fd).st_size), 5)



class NewSettings(TempRoot):
    def load(self, doc=None, **env):
        path = os.path.join(self.root, "deployment_config.json")
        with open(path, "w") as f:
            json.dump(doc or {}, f)
        return settings.load(dict(OBSERVER_CONFIG_FILE=path, **env))

    def test_defaults(self):
        s = self.load()
        self.assertEqual((s.queue_max, s.fsync_ms, s.stop_flush_ms), (3600, 1000, 5000))
        self.assertEqual(self.load(OBSERVER_INTERVAL_MS="20").queue_max, 180_000)
        self.assertEqual(self.load({"observer": {"interval_ms": 250}}).queue_max, 14_400)

    def test_env_beats_file_beats_default(self):
        doc = {"observer": {"queue_max": 7, "fsync_ms": 0, "stop_flush_ms": 100}}
        s = self.load(doc)
        self.assertEqual((s.queue_max, s.fsync_ms, s.stop_flush_ms), (7, 0, 100))
        self.assertEqual(s.sources["OBSERVER_QUEUE_MAX"], "file")
        s = self.load(doc, OBSERVER_QUEUE_MAX="9", OBSERVER_FSYNC_MS="50")
        self.assertEqual((s.queue_max, s.fsync_ms), (9, 50))
        self.assertEqual(s.sources["OBSERVER_QUEUE_MAX"], "env")

    def test_invalid(self):
        for name in ("OBSERVER_QUEUE_MAX", "OBSERVER_FSYNC_MS", "OBSERVER_STOP_FLUSH_MS"):
            for bad in ("-1", "x"):
                with self.assertRaises(settings.SettingsError) as cm:
                    self.load(**{name: bad})
                self.assertIn(name, str(cm.exception))


if __name__ == "__main__":
    unittest.main()

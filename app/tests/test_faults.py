"""Real faults against real processes (``python3 -m observer``): a full disk that is freed again
across a stop/start, and kill -9 at random moments."""

import glob
import os
import random
import time
import unittest

from obs_helpers import TempRoot, TmpfsRoot, fill, health, metric, read_bytes, wait_for


class DiskFullAcrossRestarts(TmpfsRoot):
    """The config dir on a tmpfs: fill it, free it, stop and start the observer in between."""

    def fill_and_wait_queue(self, proc, queued_at_least=10):
        filler = fill(self.mnt)

        def queued():
            code, body = health(proc.port)
            return code == 503 and body.get("queue_depth", 0) >= queued_at_least and body
        body = wait_for(queued, 15, what="records queued behind a full disk")
        self.assertIn("No space left on device", body["reason"])
        self.assertGreaterEqual(metric(proc.port, "observer_write_errors_total"), 1)
        # While the disk is full the archive holds whole lines only.
        code, report = self.check(self.archive)
        self.assertEqual(report["archives"][0]["torn_tail"], None, report)
        self.assertEqual(report["archives"][0]["invalid_count"], 0, report)
        return filler

    def test_fill_free_stop_start(self):
        a = self.start()
        a.wait_health(200)
        # 1. full while running, freed while running: the queue drains in order.
        filler = self.fill_and_wait_queue(a)
        os.unlink(filler)
        a.wait_health(200, queue_depth=0)
        self.assertEqual(metric(a.port, "observer_dropped_records_total"), 0)
        # 2. a deploy-like stop and start.
        self.assertEqual(a.terminate(), 0)
        b = self.start()
        b.wait_health(200)
        # 3. full again, and the stop comes while records are queued: freed during the stop's
        #    grace period, they are written before the process exits.
        filler = self.fill_and_wait_queue(b)
        b.proc.send_signal(15)
        wait_for(lambda: "records queued: retrying" in b.output(), 5, what="the stop's retry")
        os.unlink(filler)
        self.assertEqual(b.terminate(), 0)
        out = b.output()
        self.assertIn("archive writable again", out)
        self.assertIn("dropped=0", out)
        c = self.start()
        c.wait_health(200)
        time.sleep(0.2)
        self.assertEqual(c.terminate(), 0)

        code, report = self.check(self.archive)
        self.assertEqual(code, 0, report)
        [arch] = report["archives"]
        self.assertEqual(len(arch["instances"]), 3)
        for inst in arch["instances"]:
            self.assertEqual(inst["first_seq"], 1)
            self.assertEqual(inst["missing_count"], 0)
            self.assertEqual(inst["repeated_count"], 0)
        self.assertTrue(read_bytes(self.archive).endswith(b"\n"))

    def test_queue_overflow_is_counted_and_visible_to_the_checker(self):
        a = self.start(OBSERVER_QUEUE_MAX=5)
        a.wait_health(200)
        filler = fill(self.mnt)
        wait_for(lambda: (metric(a.port, "observer_dropped_records_total") or 0) >= 10, 10,
                 what="records dropped from the full queue")
        os.unlink(filler)
        a.wait_health(200, queue_depth=0)
        self.assertEqual(a.terminate(), 0)
        dropped = int(a.output().split("dropped=")[-1].split()[0])
        code, report = self.check(self.archive)
        self.assertEqual(code, 1)
        [inst] = report["archives"][0]["instances"]
        self.assertEqual(inst["missing_count"], dropped)
        self.assertEqual(len(inst["missing"]), 1)  # one contiguous range: the oldest went
        self.assertIn("dropping the oldest", a.output())


class KillNine(TempRoot):
    """kill -9 at random moments; each restart moves a torn tail aside before appending."""

    KILLS = 30
    BUDGET_S = 45

    def torn_files(self):
        return set(glob.glob(self.archive + ".torn-*"))

    def restart_and_verify(self, **env):
        """Start an observer; check it moved the torn tail (if any) aside before appending.
        Returns (process, whether there was a torn tail)."""
        before = read_bytes(self.archive)
        cut = before.rfind(b"\n") + 1
        fragment = before[cut:]
        torn_before = self.torn_files()
        p = self.start(**env)
        body = p.wait_health(200)
        after = read_bytes(self.archive)
        self.assertTrue(after.startswith(before[:cut]), "the restart rewrote whole records")
        self.assertEqual(after[cut:cut + 1], b"{", "the first new byte does not start a record")
        self.assertIn('"instance":"%s"' % body["instance"], after[cut:].decode())
        new_torn = self.torn_files() - torn_before
        if fragment:
            self.assertEqual(len(new_torn), 1, "the torn tail was not moved aside")
            self.assertEqual(read_bytes(new_torn.pop()), fragment)
            self.assertIn("torn tail repaired", p.output())
        else:
            self.assertEqual(new_torn, set())
        return p, bool(fragment)

    def test_random_kills(self):
        rng = random.Random(18)
        os.makedirs(os.path.dirname(self.archive))
        with open(self.archive, "wb") as f:  # the state a crash mid-write leaves
            f.write(b'{"ts":"2026-11-29T10:15:00.000Z","seq":1,"instance":"0","version":"x"}\n')
            f.write(b'{"ts":')
        torn = simulated = kills = 0
        start = time.monotonic()
        while kills < self.KILLS and time.monotonic() - start < self.BUDGET_S:
            if kills % 10 == 5:  # now and then, also a crash state made by hand
                with open(self.archive, "ab") as f:
                    f.write(b'{"ts":"2026-11-29T10:15:00.0')
                simulated += 1
            # Each append is written in two halves 4 ms apart (a test hook), so that a kill
            # often lands inside a record.
            p, had_tail = self.restart_and_verify(
                OBSERVER_INTERVAL_MS=10, OBSERVER_TEST_SPLIT_WRITE_MS=4
            )
            torn += had_tail
            time.sleep(rng.uniform(0.0, 0.25))
            p.kill9()
            kills += 1
        self.assertGreaterEqual(kills, 10)
        last, had_tail = self.restart_and_verify()
        torn += had_tail
        self.assertEqual(last.terminate(), 0)
        code, report = self.check(self.archive)
        self.assertEqual(code, 0, report["archives"][0]["faults"])
        self.assertEqual(len(report["archives"][0]["torn_files"]), torn)
        real = torn - simulated - 1  # less the initial and the hand-made fragments
        # With a 4 ms window inside every 14 ms, 30 random kills all missing it is a 1e-5 event.
        self.assertGreater(real, 0, "no kill landed inside a record")
        print(f"\n  kill -9: {kills} kills, {real} real torn tails, {simulated + 1} "
              f"simulated, {time.monotonic() - start:.1f}s", end=" ")


if __name__ == "__main__":
    unittest.main()

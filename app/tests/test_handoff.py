"""The single-writer lock and standby (issue 11's handoff deploy, app side): real processes on
one archive directory."""

import datetime
import fcntl
import json
import os
import re
import time

from obs_helpers import TempRoot, get, health, read_bytes, wait_for


def parse_ts(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    ).timestamp()


class Handoff(TempRoot):
    def records(self):
        return [json.loads(line) for line in read_bytes(self.archive).splitlines()]

    def assert_clean(self, instances):
        code, report = self.check(self.archive)
        [a] = report["archives"]
        self.assertEqual(code, 0, a["faults"])
        self.assertEqual(a["interleaved"], [])
        self.assertEqual(len(a["instances"]), instances)
        return a

    def test_standby_takes_over_after_sigterm(self):
        a = self.start(OBSERVER_INTERVAL_MS=100)
        ha = a.wait_health(200, role="active")
        b = self.start(OBSERVER_INTERVAL_MS=100)
        hb = b.wait_health(200, role="standby")
        self.assertEqual(hb["active"]["instance"], ha["instance"])
        self.assertEqual(hb["active"]["version"], "v-test")
        _, text = get(b.port, "/metrics")
        self.assertIn('observer_role{role="standby"} 1\n', text)
        self.assertIn('observer_role{role="active"} 0\n', text)
        _, text = get(a.port, "/metrics")
        self.assertIn('observer_role{role="active"} 1\n', text)
        time.sleep(0.5)
        self.assertEqual({r["instance"] for r in self.records()}, {ha["instance"]})
        self.assertIn(
            f"observer standby instance={hb['instance']} version=v-test: the writer lock is held "
            f"(instance={ha['instance']} version=v-test since=", b.output())
        for p, h in ((a, ha), (b, hb)):
            self.assertRegex(
                p.output(),
                r"(?m) observer started version=v-test standalone=1 archive=\S+ "
                rf"kis_api_key=\w+ kis_api_secret=\w+ instance={h['instance']}$",
            )

        self.assertEqual(a.terminate(), 0)
        b.wait_health(200, role="active", timeout=5)
        time.sleep(0.3)
        self.assertEqual(b.terminate(), 0)
        self.assertRegex(
            b.output(), rf"observer active instance={hb['instance']} version=v-test archive=\S+"
        )
        recs = self.records()
        ra = [r for r in recs if r["instance"] == ha["instance"]]
        rb = [r for r in recs if r["instance"] == hb["instance"]]
        self.assertEqual(recs, ra + rb)  # never interleaved
        self.assertEqual(rb[0]["seq"], 1)
        # A's last tick was at most one interval before the stop; then the lock is released and
        # B (polling every 50 ms) appends at once.
        gap = parse_ts(rb[0]["ts"]) - parse_ts(ra[-1]["ts"])
        self.assertLess(gap, 0.1 + 0.2, f"handoff gap {gap:.3f}s")
        self.assert_clean(2)

    def test_standby_takes_over_after_kill9_and_repairs_the_torn_tail(self):
        # A writes each record in two halves 150 ms apart (test hook): killed in between, it
        # leaves a torn tail that B must move aside before appending.
        a = self.start(OBSERVER_INTERVAL_MS=200, OBSERVER_TEST_SPLIT_WRITE_MS=150)
        a.wait_health(200, role="active")
        b = self.start(OBSERVER_INTERVAL_MS=100)
        hb = b.wait_health(200, role="standby")

        def torn_now():
            data = read_bytes(self.archive)
            return data and not data.endswith(b"\n") and data[data.rfind(b"\n") + 1:]

        fragment = wait_for(torn_now, 5, interval=0.002, what="A in the middle of a record")
        a.kill9()
        killed = time.time()
        b.wait_health(200, role="active", timeout=5)
        self.assertIn("torn tail repaired", b.output())
        [torn] = [f for f in os.listdir(os.path.dirname(self.archive)) if ".torn-" in f]
        self.assertEqual(read_bytes(os.path.join(os.path.dirname(self.archive), torn)), fragment)
        rb = [r for r in self.records() if r["instance"] == hb["instance"]]
        takeover = parse_ts(rb[0]["ts"]) - killed
        # B polls the lock every min(interval, 50 ms).
        self.assertLess(takeover, 0.1 + 0.1, f"takeover {takeover:.3f}s after the kill")
        self.assertEqual(b.terminate(), 0)
        a_report = self.assert_clean(2)
        self.assertEqual(a_report["torn_files"], [torn])

    def test_standby_health_checks_the_archive_path_and_a_foreign_holder(self):
        lock_path = os.path.join(os.path.dirname(self.archive), ".writer.lock")
        os.makedirs(self.archive)  # the archive path is a directory: not writable
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)  # someone else holds the lock
        b = self.start(OBSERVER_INTERVAL_MS=50)
        body = b.wait_health(503, role="standby")
        self.assertIn("standby: archive path not writable: Is a directory", body["reason"])
        self.assertIn("taking over when it is released", b.output())
        os.rmdir(self.archive)
        b.wait_health(200, role="standby", timeout=5)
        time.sleep(0.2)
        self.assertEqual(read_bytes(self.archive), b"")  # standby appends nothing
        fcntl.flock(fd, fcntl.LOCK_UN)
        b.wait_health(200, role="active", timeout=3)
        self.assertEqual(b.terminate(), 0)
        self.assert_clean(1)

    def test_three_instances_one_writer_at_a_time(self):
        procs = [self.start(OBSERVER_INTERVAL_MS=50) for _ in range(3)]

        def roles():
            got = {}
            for p in procs:
                if p.proc.poll() is None:
                    code, body = health(p.port)
                    if code != 200:
                        return None
                    got[p] = body["role"]
            return got

        def one_active():
            r = roles()
            if r and sorted(r.values()) == ["active"] + ["standby"] * (len(r) - 1):
                return r
            return None

        for stop in ("terminate", "kill9"):
            r = wait_for(one_active, 10, what="exactly one active instance")
            active = next(p for p, role in r.items() if role == "active")
            time.sleep(0.3)
            getattr(active, stop)()
        wait_for(one_active, 10, what="the last instance active")
        time.sleep(0.3)
        last = next(p for p in procs if p.proc.poll() is None)
        self.assertEqual(last.terminate(), 0)
        a = self.assert_clean(3)
        # One writer at a time: instances follow each other in the file, each from seq 1.
        self.assertEqual([i["first_seq"] for i in a["instances"]], [1, 1, 1])
        lines = [i["first_line"] for i in a["instances"]]
        self.assertEqual(lines, sorted(lines))
        actives = sum(len(re.findall(r"observer active instance=", p.output())) for p in procs)
        self.assertEqual(actives, 3)

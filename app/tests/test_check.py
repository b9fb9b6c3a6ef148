"""The archive checker: python3 -m observer.check [ARCHIVE ...] [--json]."""

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest

from obs_helpers import SRC, TempRoot

from observer import check


def rec(seq, instance="a", ts="2026-11-29T10:00:00.000Z", version="v1"):
    return json.dumps({"ts": ts, "seq": seq, "instance": instance, "version": version},
                      separators=(",", ":")) + "\n"


class Checker(TempRoot):
    def write(self, text, name="observer.jsonl", mode="w"):
        path = os.path.join(self.root, name)
        with open(path, mode + "b") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return path

    def run_main(self, *args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = check.main(list(args))
        return code, out.getvalue()

    def test_clean_archive(self):
        path = self.write("".join(rec(i) for i in (1, 2, 3)) + "".join(rec(i, "b") for i in (1, 2)))
        code, out = self.run_main(path)
        self.assertEqual(code, 0, out)
        self.assertEqual(out, f"{path}: OK 5 records, 2 instances, {os.path.getsize(path)} bytes\n")
        code, out = self.run_main("--json", path)
        doc = json.loads(out)
        self.assertTrue(doc["ok"])
        [a] = doc["archives"]
        self.assertEqual((a["lines"], a["records"], a["invalid_count"], a["torn_tail"]),
                         (5, 5, 0, None))
        self.assertEqual([(i["instance"], i["first_seq"], i["last_seq"], i["records"])
                          for i in a["instances"]], [("a", 1, 3, 3), ("b", 1, 2, 2)])
        self.assertEqual(a["faults"], [])

    def test_empty_archive_is_clean(self):
        self.assertEqual(self.run_main(self.write(""))[0], 0)

    def test_invalid_lines(self):
        bad = [
            "not json\n",
            "[1,2]\n",
            '{"ts":"x","instance":"a"}\n',  # no seq
            '{"ts":"x","seq":true,"instance":"a"}\n',
            '{"ts":"x","seq":0,"instance":"a"}\n',
            '{"ts":"x","seq":2}\n',  # no instance
            '{"seq":2,"instance":"a"}\n',  # no ts
            "\n",
        ]
        path = self.write(rec(1) + "".join(bad) + rec(2))
        with open(path, "ab") as f:
            f.write(b"\xff\xfe\n")
        code, out = self.run_main("--json", path)
        self.assertEqual(code, 1)
        a = json.loads(out)["archives"][0]
        self.assertEqual(a["invalid_count"], 9)
        self.assertEqual([i["line"] for i in a["invalid"]], list(range(2, 10)) + [11])
        errors = [i["error"] for i in a["invalid"]]
        self.assertTrue(errors[0].startswith("not JSON"))
        self.assertEqual(errors[1:], ["not a JSON object", "no integer seq >= 1",
                                      "no integer seq >= 1", "no integer seq >= 1",
                                      "no instance", "no ts", "empty line", "not UTF-8"])
        self.assertEqual(a["instances"][0]["missing_count"], 0)
        self.assertEqual(len(a["faults"]), 1)

    def test_torn_tail(self):
        path = self.write(rec(1) + rec(2) + '{"ts":"2026')
        code, out = self.run_main(path)
        self.assertEqual(code, 1)
        self.assertIn("FAULT", out)
        self.assertIn("torn tail: 11 bytes after offset", out)
        a = check.check_archive(path, settle_s=0)
        self.assertEqual(a["torn_tail"], {"offset": len(rec(1) + rec(2)), "bytes": 11})
        self.assertEqual(a["records"], 2)

    def test_tail_completed_while_reading_is_a_write_in_progress(self):
        path = self.write(rec(1) + rec(2)[:20])

        def finish():
            time.sleep(0.05)
            with open(path, "ab") as f:
                f.write(rec(2)[20:].encode())

        t = threading.Thread(target=finish)
        t.start()
        a = check.check_archive(path)
        t.join()
        self.assertTrue(a["ok"], a["faults"])
        self.assertEqual(a["records"], 2)

    def test_gaps_repeats_order(self):
        path = self.write(
            "".join(rec(i) for i in (1, 2, 5, 6, 6, 7, 4, 10))
            + "".join(rec(i, "b") for i in (3, 4))
        )
        code, out = self.run_main("--json", path)
        self.assertEqual(code, 1)
        a = json.loads(out)["archives"][0]
        ia, ib = a["instances"]
        self.assertEqual(ia["missing"], [[3, 3], [8, 9]])
        self.assertEqual(ia["missing_count"], 3)
        self.assertEqual(ia["repeated"], [6])
        self.assertEqual(ia["out_of_order_count"], 1)
        self.assertEqual(ib["missing"], [[1, 2]])
        self.assertEqual(a["interleaved"], [])
        code, text = self.run_main(path)
        self.assertIn("instance a: 3 seq missing (3, 8..9)", text)
        self.assertIn("instance a: 1 seq repeated (6)", text)
        self.assertIn("instance a: 1 seq out of order", text)
        self.assertIn("instance b: 2 seq missing (1..2)", text)

    def test_interleaved_instances(self):
        path = self.write(rec(1, "a") + rec(1, "b") + rec(2, "a") + rec(2, "b") + rec(1, "c"))
        a = check.check_archive(path)
        self.assertFalse(a["ok"])
        self.assertEqual(a["interleaved"], [["a", "b"]])
        self.assertIn("instances a and b interleaved (two writers at once)", a["faults"])

    def test_torn_files_are_not_faults(self):
        path = self.write(rec(1))
        torn = self.write('{"ts":', name="observer.jsonl.torn-20261129T101500Z")
        self.write('{"x', name="observer.jsonl.torn-20261129T101500Z-2")
        code, out = self.run_main("--json", path, torn)
        self.assertEqual(code, 0, out)
        a, t = json.loads(out)["archives"]
        self.assertEqual(a["torn_files"], ["observer.jsonl.torn-20261129T101500Z",
                                           "observer.jsonl.torn-20261129T101500Z-2"])
        self.assertEqual(t, {"path": torn, "ok": True, "torn_file": True, "bytes": 6})
        code, out = self.run_main(path)
        self.assertIn("2 torn files beside it (not faults)", out)

    def test_directories_name_the_archive_inside(self):
        os.makedirs(os.path.join(self.root, "config", "observer"))
        path = self.write(rec(1), name="config/observer/observer.jsonl")
        for d in (self.root, os.path.join(self.root, "config"),
                  os.path.join(self.root, "config", "observer")):
            self.assertEqual(check.resolve(d), path)

    def test_default_archive_from_the_environment(self):
        os.makedirs(os.path.join(self.root, "observer"))
        self.write(rec(1), name="observer/observer.jsonl")
        r = subprocess.run([sys.executable, "-m", "observer.check"], capture_output=True,
                           env=dict(os.environ, PYTHONPATH=SRC, OBSERVER_CONFIG_DIR=self.root))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(b"OK 1 records", r.stdout)

    def test_exit_codes(self):
        good = self.write(rec(1), name="good.jsonl")
        bad = self.write(rec(2), name="bad.jsonl")
        missing = os.path.join(self.root, "absent.jsonl")
        self.assertEqual(self.run_main(good)[0], 0)
        self.assertEqual(self.run_main(good, bad)[0], 1)
        code, out = self.run_main("--json", bad, missing)
        self.assertEqual(code, 2)
        doc = json.loads(out)
        self.assertFalse(doc["ok"])
        self.assertEqual(doc["archives"][1], {"path": missing, "ok": False,
                                              "error": "cannot read: No such file or directory"})
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as cm:
            check.main(["--bogus"])
        self.assertEqual(cm.exception.code, 2)

    def test_json_output_is_one_short_line(self):
        path = self.write("".join(rec(i) for i in range(1, 5001, 2)))  # 2500 gaps
        code, out = self.run_main("--json", path)
        self.assertEqual(code, 1)
        self.assertEqual(out.count("\n"), 1)
        a = json.loads(out)["archives"][0]
        self.assertEqual(a["instances"][0]["missing_count"], 2499)
        self.assertEqual(len(a["instances"][0]["missing"]), check.MAX_LIST)
        self.assertLess(len(out), 2000)


class SeqSetUnit(unittest.TestCase):
    def test_against_a_plain_set(self):
        rng = random.Random(7)
        for _ in range(200):
            s, plain = check.SeqSet(), set()
            for n in [rng.randint(1, 40) for _ in range(rng.randint(0, 60))]:
                self.assertEqual(s.add(n), n not in plain)
                plain.add(n)
            expect = [n for n in range(1, max(plain, default=0) + 1) if n not in plain]
            got = [n for a, b in s.missing() for n in range(a, b + 1)]
            self.assertEqual(got, expect)
            for a, b in zip(s.starts, s.ends):
                self.assertLessEqual(a, b)
            for i in range(1, len(s.starts)):
                self.assertGreater(s.starts[i], s.ends[i - 1] + 1)  # disjoint, merged

    def test_contiguous_is_one_range(self):
        s = check.SeqSet()
        for n in range(1, 100001):
            s.add(n)
        self.assertEqual((s.starts, s.ends), ([1], [100000]))


if __name__ == "__main__":
    unittest.main()

"""Check observer archives: every line a whole record, no torn tail, per instance seq 1, 2, 3...

    python3 -m observer.check [ARCHIVE ...] [--json]        (PYTHONPATH=app/src)

ARCHIVE is an archive file, or a directory holding ``observer.jsonl``,
``observer/observer.jsonl`` (a config dir) or ``config/observer/observer.jsonl`` (a deploy root);
without one, the archive of the current settings (``$OBSERVER_CONFIG_DIR/observer/observer.jsonl``,
default ``/app/config/observer/observer.jsonl``).

Faults (exit 1):
  * an invalid line: not UTF-8, not JSON, not an object, or no integer ``seq`` >= 1, string
    ``instance`` and string ``ts``;
  * a torn tail: bytes after the last newline (a tail that completes within ~0.2 s is a write in
    progress and is read whole; a tail the observer cuts back meanwhile is no tail);
  * per instance: ``seq`` missing from 1..max (a gap), repeated, or going backwards;
  * interleaved instances: lines of two instances mixed (two writers at once).

Moved-aside torn files (``observer.jsonl.torn-<time>``, written by the observer when it repairs a
torn tail) are listed beside the archive and are not faults; passing one as ARCHIVE only
describes it.

Exit status: 0 clean, 1 a fault in some archive, 2 bad usage or an archive that cannot be read.
``--json`` prints one JSON object: ``{"ok": bool, "archives": [report, ...]}``.
"""

import argparse
import bisect
import glob
import json
import os
import sys
import time

import paths

from .archive import TORN_MARK

MAX_LIST = 10  # list at most this many items per kind (counts are always complete)
SETTLE_S = 0.2  # how long an unterminated tail may take to complete (a write in progress)
SETTLE_TRIES = 4


class SeqSet:
    """A set of positive integers kept as sorted, disjoint, inclusive ranges: one range per
    instance when its sequence has no gap, whatever its length."""

    def __init__(self):
        self.starts = []
        self.ends = []

    def add(self, n):
        """Add ``n``; False when it was already there."""
        starts, ends = self.starts, self.ends
        if ends and n == ends[-1] + 1:
            ends[-1] = n
            return True
        i = bisect.bisect_right(starts, n) - 1
        if i >= 0 and n <= ends[i]:
            return False
        left = i >= 0 and ends[i] + 1 == n
        right = i + 1 < len(starts) and starts[i + 1] - 1 == n
        if left and right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif left:
            ends[i] = n
        elif right:
            starts[i + 1] = n
        else:
            starts.insert(i + 1, n)
            ends.insert(i + 1, n)
        return True

    def missing(self):
        """The ranges absent from 1..max, as [first, last] pairs."""
        gaps, expect = [], 1
        for a, b in zip(self.starts, self.ends):
            if a > expect:
                gaps.append([expect, a - 1])
            expect = b + 1
        return gaps


def _fmt_ranges(ranges):
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges)


def resolve(arg):
    """An ARCHIVE argument as a file path (a directory names the archive inside it)."""
    if os.path.isdir(arg):
        for candidate in (
            os.path.join(arg, paths.ARCHIVE_NAME),
            os.path.join(arg, "observer", paths.ARCHIVE_NAME),
            os.path.join(arg, "config", "observer", paths.ARCHIVE_NAME),
        ):
            if os.path.isfile(candidate):
                return candidate
        return os.path.join(arg, paths.ARCHIVE_NAME)
    return arg


def is_torn_file(path):
    return TORN_MARK in os.path.basename(path)


def torn_files_beside(path):
    return sorted(os.path.basename(p) for p in glob.glob(glob.escape(path) + TORN_MARK + "*"))


def _validate(raw):
    """(record, None) or (None, why the line is invalid)."""
    if not raw:
        return None, "empty line"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        rec = json.loads(text)
    except ValueError as e:
        return None, f"not JSON ({e.msg})"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, "no integer seq >= 1"
    if not isinstance(rec.get("instance"), str) or not rec["instance"]:
        return None, "no instance"
    if not isinstance(rec.get("ts"), str):
        return None, "no ts"
    return rec, None


class _Instance:
    def __init__(self, name, rec, lineno):
        self.name = name
        self.version = rec.get("version")
        self.records = 0
        self.seqs = SeqSet()
        self.max_seq = 0
        self.repeated = []
        self.repeated_count = 0
        self.backwards = 0
        self.first_line = self.last_line = lineno
        self.first_ts = self.last_ts = rec["ts"]

    def add(self, rec, lineno):
        seq = rec["seq"]
        self.records += 1
        self.last_line, self.last_ts = lineno, rec["ts"]
        if not self.seqs.add(seq):
            self.repeated_count += 1
            if len(self.repeated) < MAX_LIST:
                self.repeated.append(seq)
        elif seq < self.max_seq:
            self.backwards += 1
        self.max_seq = max(self.max_seq, seq)

    def report(self):
        missing = self.seqs.missing()
        return {
            "instance": self.name,
            "version": self.version,
            "records": self.records,
            "first_seq": self.seqs.starts[0] if self.seqs.starts else None,
            "last_seq": self.max_seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "first_line": self.first_line,
            "last_line": self.last_line,
            "missing_count": sum(b - a + 1 for a, b in missing),
            "missing": missing[:MAX_LIST],
            "repeated_count": self.repeated_count,
            "repeated": self.repeated,
            "out_of_order_count": self.backwards,
        }


def check_archive(path, settle_s=SETTLE_S):
    """The report (a dict) of one archive. Raises OSError when it cannot be read."""
    if is_torn_file(path):
        return {"path": path, "ok": True, "torn_file": True, "bytes": os.path.getsize(path)}
    invalid, invalid_count = [], 0
    instances = {}
    lineno = offset = 0
    tail = b""
    with open(path, "rb") as f:
        tries = 0
        while True:
            line = f.readline()
            if not line:
                if tail and tries < SETTLE_TRIES and settle_s > 0:
                    tries += 1  # maybe a write in progress: let it complete
                    time.sleep(settle_s / SETTLE_TRIES)
                    continue
                break
            if not line.endswith(b"\n"):
                tail += line
                continue
            raw, tail, tries = tail + line[:-1], b"", 0
            lineno += 1
            rec, why = _validate(raw)
            if why is not None:
                invalid_count += 1
                if len(invalid) < MAX_LIST:
                    invalid.append({"line": lineno, "offset": offset, "error": why})
            else:
                inst = instances.get(rec["instance"])
                if inst is None:
                    inst = instances[rec["instance"]] = _Instance(rec["instance"], rec, lineno)
                inst.add(rec, lineno)
            offset += len(raw) + 1
        if tail and os.fstat(f.fileno()).st_size <= offset:
            tail = b""  # the writer cut a failed append back meanwhile: the file ends whole
    torn = {"offset": offset, "bytes": len(tail)} if tail else None
    reports = [i.report() for i in instances.values()]

    # Two writers at once: an instance's lines start before another's have ended.
    interleaved = []
    latest = None  # the instance whose lines reach furthest so far
    for inst in sorted(instances.values(), key=lambda i: i.first_line):
        if latest is not None and inst.first_line < latest.last_line:
            interleaved.append([latest.name, inst.name])
        if latest is None or inst.last_line > latest.last_line:
            latest = inst

    faults = []
    if invalid_count:
        where = ", ".join(str(i["line"]) for i in invalid)
        more = "..." if invalid_count > len(invalid) else ""
        faults.append(f"{invalid_count} invalid lines (line {where}{more}: {invalid[0]['error']})")
    if torn:
        faults.append(
            f"torn tail: {torn['bytes']} bytes after offset {torn['offset']} (no newline)"
        )
    for r in reports:
        if r["missing_count"]:
            more = "..." if len(r["missing"]) == MAX_LIST else ""
            faults.append(
                f"instance {r['instance']}: {r['missing_count']} seq missing "
                f"({_fmt_ranges(r['missing'])}{more})"
            )
        if r["repeated_count"]:
            faults.append(
                f"instance {r['instance']}: {r['repeated_count']} seq repeated "
                f"({', '.join(map(str, r['repeated']))})"
            )
        if r["out_of_order_count"]:
            faults.append(f"instance {r['instance']}: {r['out_of_order_count']} seq out of order")
    for a, b in interleaved[:MAX_LIST]:
        faults.append(f"instances {a} and {b} interleaved (two writers at once)")
    return {
        "path": path,
        "ok": not faults,
        "bytes": offset + len(tail),
        "lines": lineno,
        "records": sum(r["records"] for r in reports),
        "invalid_count": invalid_count,
        "invalid": invalid,
        "torn_tail": torn,
        "instances": reports,
        "interleaved": interleaved[:MAX_LIST],
        "torn_files": torn_files_beside(path),
        "faults": faults,
    }


def _text(report):
    path = report["path"]
    if report.get("torn_file"):
        return [f"{path}: torn file ({report['bytes']} bytes) moved aside by the observer; "
                f"not part of the archive"]
    if "error" in report:
        return [f"{path}: ERROR {report['error']}"]
    beside = ""
    if report["torn_files"]:
        beside = f", {len(report['torn_files'])} torn files beside it (not faults)"
    summary = (
        f"{report['records']} records, {len(report['instances'])} instances, "
        f"{report['bytes']} bytes{beside}"
    )
    if report["ok"]:
        return [f"{path}: OK {summary}"]
    lines = [f"{path}: FAULT {summary}"]
    lines += [f"  {fault}" for fault in report["faults"][:20]]
    if len(report["faults"]) > 20:
        lines.append(f"  ... {len(report['faults']) - 20} more")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m observer.check",
        description="Check observer archives (exit 0 clean, 1 fault, 2 usage or unreadable).",
    )
    parser.add_argument("archives", nargs="*", metavar="ARCHIVE",
                        help="archive file or directory (default: the configured archive)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    targets = [resolve(a) for a in args.archives] or [paths.archive_path()]
    reports, status = [], 0
    for path in targets:
        try:
            report = check_archive(path)
        except OSError as e:
            report = {"path": path, "ok": False, "error": f"cannot read: {e.strerror or e}"}
            status = 2
        if not report["ok"] and status == 0:
            status = 1
        reports.append(report)
    if args.json:
        print(json.dumps({"ok": status == 0, "archives": reports}, separators=(",", ":")))
    else:
        for report in reports:
            print("\n".join(_text(report)))
    return status


if __name__ == "__main__":
    sys.exit(main())

"""gaps (cargo xtask, issue 15): the archive's holes over a window, computed where the archive is.

Run inside the observer's image, program on stdin:  python3 - SINCE_S INTERVAL_MS
Reads every ``*.jsonl`` in ``$OBSERVER_CONFIG_DIR/observer`` (default /app/config/observer) from
its end back to the window's start (plus one record before it), merges the records of every
file and instance into one time series (``ts``: ``YYYY-MM-DDTHH:MM:SS.mmmZ``, UTC), and prints one
JSON object: every gap between consecutive records longer than 1.5 intervals that ends inside
the window, and an open hole at the end when the last record is older than 3 intervals + 1 s.
The interval is the container's OBSERVER_INTERVAL_MS when set, else INTERVAL_MS (the config's).
"""

import datetime
import glob
import json
import os
import sys
import time

CHUNK = 1 << 20
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def ms_of(ts):
    """Milliseconds since the epoch of a record's ``ts`` (None when it is not one)."""
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(round((t - EPOCH).total_seconds() * 1000))


def stamp(raw):
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return ms_of(rec.get("ts")) if isinstance(rec, dict) else None


def read_back(path, start_ms, out):
    """Append the ``ts`` (ms) of ``path``'s records, newest first, down to the first one older
    than ``start_ms`` - 60 s (records flushed late after an outage may be out of order)."""
    stop = start_ms - 60_000
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos, rest = f.tell(), b""
        while pos > 0:
            n = min(CHUNK, pos)
            pos -= n
            f.seek(pos)
            lines = (f.read(n) + rest).split(b"\n")
            rest = lines[0] if pos > 0 else b""
            for raw in reversed(lines if pos == 0 else lines[1:]):
                t = stamp(raw) if raw else None
                if t is None:
                    continue
                out.append(t)
                if t < stop:
                    return


def main():
    since_s, cfg_ms = int(sys.argv[1]), int(sys.argv[2])
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - since_s * 1000
    env_ms = os.environ.get("OBSERVER_INTERVAL_MS", "")
    if env_ms.isdigit() and int(env_ms) > 0:
        interval_ms, source = int(env_ms), "container"
    else:
        interval_ms, source = cfg_ms, "config"
    folder = os.path.join(os.environ.get("OBSERVER_CONFIG_DIR") or "/app/config", "observer")
    files, stamps = [], []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        # Only regular files that can be read: a folder or an unreadable file named *.jsonl
        # is skipped (named on stderr) rather than failing the whole report.
        if not os.path.isfile(path):
            print("gaps: skipped %s: not a regular file" % path, file=sys.stderr)
            continue
        try:
            read_back(path, start_ms, stamps)
        except OSError as e:
            print("gaps: skipped %s: %s" % (path, e), file=sys.stderr)
            continue
        files.append(path)
    stamps = sorted(set(stamps))
    before = [t for t in stamps if t < start_ms]
    series = before[-1:] + [t for t in stamps if t >= start_ms]
    limit = interval_ms * 1.5
    holes = []
    for a, b in zip(series, series[1:]):
        if b - a > limit and b > start_ms:
            holes.append({"start_ms": a, "end_ms": b, "ongoing": False})
    if series and now_ms - series[-1] > interval_ms * 3 + 1000:
        holes.append({"start_ms": series[-1], "end_ms": now_ms, "ongoing": True})
    for h in holes:
        length = h["end_ms"] - h["start_ms"]
        h["seconds"] = round(length / 1000.0, 3)
        h["missed"] = max(0, int(round(length / interval_ms - 1)))
    in_window = [t for t in series if t >= start_ms]
    print(
        json.dumps(
            {
                "now_ms": now_ms,
                "start_ms": start_ms,
                "since_s": since_s,
                "interval_ms": interval_ms,
                "interval_source": source,
                "folder": folder,
                "files": [os.path.basename(p) for p in files],
                "records": len(in_window),
                "first_ms": in_window[0] if in_window else None,
                "last_ms": in_window[-1] if in_window else None,
                "holes": holes,
            },
            separators=(",", ":"),
        )
    )


main()

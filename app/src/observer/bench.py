"""Measure the observer's write path on this machine.

    python3 -m observer.bench [--seconds 5] [--interval-ms 1] [--fsync-ms 1000] [--dir DIR] [--json]

Runs the real writer (``Observer.run_writer``: queue, whole-line appends, fsync policy) in this
process against an archive in a temporary directory (``--dir`` picks the file system; the default
is the system temp dir), then checks the archive with ``observer.check``. Four runs:

  * paced: the writer loop at ``--interval-ms`` (default 1 ms, below the service's 10 ms
    minimum on purpose) with the ``--fsync-ms`` policy: the records per second it sustains;
  * paced, fsync after every record (``OBSERVER_FSYNC_MS=0``);
  * unpaced: ``append_once()`` back to back, same fsync policy: the write path's ceiling and the
    latency of one append (p50/p99/max);
  * unpaced, fsync after every record (``OBSERVER_FSYNC_MS=0``).
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time

from . import check, service, settings


def _observer(directory, interval_ms, fsync_ms, quiet=True):
    s = settings.load(
        {
            "OBSERVER_CONFIG_DIR": os.path.join(directory, "config"),
            "OBSERVER_LOG_DIR": os.path.join(directory, "logs"),
            "OBSERVER_DATA_DIR": os.path.join(directory, "data"),
            "OBSERVER_CONFIG_FILE": os.path.join(directory, "absent.json"),
            "OBSERVER_FSYNC_MS": str(fsync_ms),
            "OBSERVER_VERSION": "bench",
        }
    )
    s.interval_ms = interval_ms  # below settings.MIN_INTERVAL_MS on purpose
    obs = service.Observer(s)
    if quiet:
        obs.log = lambda message: None
        obs.writer.log = obs.log
    return obs


def paced(directory, seconds, interval_ms, fsync_ms):
    obs = _observer(directory, interval_ms, fsync_ms)
    t = threading.Thread(target=obs.run_writer)
    start = time.monotonic()
    t.start()
    time.sleep(seconds)
    obs.stop_event.set()
    t.join()
    elapsed = time.monotonic() - start
    report = check.check_archive(obs.settings.archive, settle_s=0)
    return {
        "run": f"paced {interval_ms} ms, "
        + (f"fsync every {fsync_ms} ms" if fsync_ms else "fsync every record"),
        "records": obs.records_total,
        "seconds": round(elapsed, 3),
        "records_per_s": round(obs.records_total / elapsed, 1),
        "target_per_s": round(1000 / interval_ms, 1),
        "fsyncs": obs.writer.fsyncs,
        "archive_ok": report["ok"],
    }


def unpaced(directory, seconds, fsync_ms):
    obs = _observer(directory, 1, fsync_ms)
    obs.take_over()
    lat = []
    start = time.monotonic()
    end = start + seconds
    while True:
        t0 = time.perf_counter()
        obs.append_once()
        lat.append(time.perf_counter() - t0)
        if time.monotonic() >= end:
            break
    elapsed = time.monotonic() - start
    obs.finish()
    report = check.check_archive(obs.settings.archive, settle_s=0)
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6, 1)

    return {
        "run": f"unpaced, fsync every {fsync_ms} ms" if fsync_ms else "unpaced, fsync every record",
        "records": obs.records_total,
        "seconds": round(elapsed, 3),
        "records_per_s": round(obs.records_total / elapsed, 1),
        "append_us_p50": pct(0.50),
        "append_us_p99": pct(0.99),
        "append_us_max": round(lat[-1] * 1e6, 1),
        "fsyncs": obs.writer.fsyncs,
        "archive_ok": report["ok"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python3 -m observer.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seconds", type=float, default=5.0, help="per run (default 5)")
    p.add_argument("--interval-ms", type=int, default=1, help="paced run's interval (default 1)")
    p.add_argument("--fsync-ms", type=int, default=1000, help="fsync policy (default 1000)")
    p.add_argument("--dir", help="where to write (default: a new temp dir, removed afterwards)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.interval_ms < 1:
        p.error("--interval-ms must be at least 1")
    root = tempfile.mkdtemp(prefix="observer-bench-", dir=a.dir)
    try:
        runs = []
        for name, fn in (
            ("paced", lambda d: paced(d, a.seconds, a.interval_ms, a.fsync_ms)),
            ("paced-fsync", lambda d: paced(d, a.seconds, a.interval_ms, 0)),
            ("unpaced", lambda d: unpaced(d, a.seconds, a.fsync_ms)),
            ("unpaced-fsync", lambda d: unpaced(d, a.seconds, 0)),
        ):
            d = os.path.join(root, name)
            os.makedirs(d)
            runs.append(fn(d))
        fs = os.statvfs(root)
        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "dir": root,
            "fs_block": fs.f_bsize,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps({"machine": machine, "runs": runs}))
    else:
        print(f"machine: {machine['cpus']} cpus, python {machine['python']}, "
              f"kernel {machine['kernel']}, dir {machine['dir']}")
        for r in runs:
            extra = ""
            if "append_us_p50" in r:
                extra = (f"; append p50 {r['append_us_p50']} us, p99 {r['append_us_p99']} us, "
                         f"max {r['append_us_max']} us")
            print(f"{r['run']}: {r['records_per_s']} records/s "
                  f"({r['records']} in {r['seconds']} s, "
                  f"{r['fsyncs']} fsyncs, archive {'ok' if r['archive_ok'] else 'FAULT'}){extra}")
    return 0 if all(r["archive_ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

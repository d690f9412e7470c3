#!/usr/bin/env python3
"""bench/audit/profile.py — where does the audit module's cost go? One fresh mbyted (the build/ tree)
with or without audit, N sequential 4 KiB uploads (run.py's run()), then the CPU each mbyted thread
spent meanwhile. With --perf FILE it records `perf record` of mbyted during the uploads
(PERF_CALLGRAPH=dwarf,16384 for call stacks through libraries without frame pointers; read it with
`perf report -i FILE --no-children`); PERF_CMD=script runs `script <pid> <file>` instead (for
example `perf record -e sched:sched_switch ...` to see where threads wait).

Usage: python3 bench/audit/profile.py [--audit/--no-audit] [--uploads N] [--perf FILE]"""
import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from run import run, us_per  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audit", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--uploads", type=int, default=3000)
    ap.add_argument("--perf")
    a = ap.parse_args()
    perf = []

    def started(srv):
        if not a.perf:
            return
        pid, cmd = str(srv.proc.pid), os.environ.get("PERF_CMD")
        argv = [cmd, pid, a.perf] if cmd else ["perf", "record", "-q", "--call-graph",
                                               os.environ.get("PERF_CALLGRAPH", "fp"), "-o", a.perf, "-p", pid]
        perf.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)

    def finished(srv):
        for p in perf:
            p.send_signal(signal.SIGINT)
            p.wait()

    res = run(a.audit, a.uploads, 4096, started, finished)
    print("%d uploads: %.0f uploads/s (audit %s)" % (a.uploads, res["rate"], "on" if a.audit else "off"))
    for name, t in sorted(res["cpu"].items(), key=lambda x: -x[1]):
        print("  %-12s %6.2f s CPU  (%.0f us per upload)" % (name, t, us_per(res, a.uploads, name)))
    print("  %-12s %6.2f s CPU  (%.0f us per upload)" % ("total", sum(res["cpu"].values()), us_per(res, a.uploads)))


if __name__ == "__main__":
    main()

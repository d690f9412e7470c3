#!/usr/bin/env python3
"""bench/audit — does the audit module slow uploads? 1,000 uploads (4 KiB each, one keep-alive
connection, one client) against a fresh mbyted without and with the audit module, alternated
over several rounds; prints uploads/s for each and the ratio of the medians, and the CPU time
mbyted spent per upload (all threads, and its loop thread, where observers run), which other
load on the machine disturbs far less than the rate.

Usage: python3 bench/audit/run.py [--uploads N] [--rounds R] [--size BYTES]
Uses the build in build/ (MBYTED, MBYTE_MODULE_DIR as in tests/integration/harness.py)."""
import argparse
import http.client
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "integration"))
from harness import Server  # noqa: E402

def thread_cpu(pid):
    """{tid: (thread name, CPU seconds)} for every thread of pid (schedstat: nanoseconds). The
    main thread, which runs the event loop and the observers, is called "loop"; the other
    "mbyted" threads are the worker pool and LevelDB's compaction."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = "loop" if tid == str(pid) else f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[tid] = (name, int(f.read().split()[0]) / 1e9)
        except OSError:
            continue
    return out


def run(with_audit, n, size, started=None, finished=None):
    """One fresh server: n uploads, then (with audit) wait until the log holds them all.
    Returns {"rate": uploads/s, "cpu": {thread name: CPU seconds during the uploads}}.
    started(srv) / finished(srv) run just before and after the uploads (profile.py)."""
    srv = Server(modules={"audit": with_audit})
    srv.start()
    try:
        tok = srv.login()
        sid = json.loads(srv.request("GET", "/api/v1/stores", token=tok).body)[0]["id"]
        body = os.urandom(size)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        h = {"Authorization": "Bearer " + tok}
        if started:
            started(srv)
        before = thread_cpu(srv.proc.pid)
        t0 = time.perf_counter()
        for i in range(n):
            c.request("PUT", "/api/v1/stores/%s/files/bench/f%05d.bin?parents=true" % (sid, i), body=body, headers=h)
            r = c.getresponse()
            r.read()
            if r.status != 201:
                raise SystemExit("upload %d answered %d" % (i, r.status))
        dt = time.perf_counter() - t0
        c.close()
        time.sleep(0.2)  # the observers finish what the uploads raised (checked below)
        after = thread_cpu(srv.proc.pid)
        if finished:
            finished(srv)
        if with_audit:  # the log caught up with every upload
            deadline = time.time() + 60
            while time.time() < deadline:
                r = srv.request("GET", "/api/v1/admin/audit?action=file.created&format=jsonl", token=tok)
                if r.body.count(b"\n") >= n:
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("the audit log did not record every upload")
        cpu = {}
        for tid, (name, t) in after.items():
            cpu[name] = cpu.get(name, 0.0) + t - before.get(tid, (name, 0.0))[1]
        return {"rate": n / dt, "cpu": cpu}
    finally:
        srv.stop()
        srv.cleanup()


def us_per(res, n, thread=None):
    return 1e6 * (res["cpu"].get(thread, 0.0) if thread else sum(res["cpu"].values())) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    off, on = [], []
    for _ in range(a.rounds):
        off.append(run(False, a.uploads, a.size))
        on.append(run(True, a.uploads, a.size))
        print("round: without audit %.0f uploads/s, with audit %.0f uploads/s; mbyted CPU per upload %.0f / %.0f us "
              "(loop thread %.0f / %.0f us)" % (off[-1]["rate"], on[-1]["rate"], us_per(off[-1], a.uploads),
                                                 us_per(on[-1], a.uploads), us_per(off[-1], a.uploads, "loop"),
                                                 us_per(on[-1], a.uploads, "loop")), flush=True)
    mo, mn = statistics.median(x["rate"] for x in off), statistics.median(x["rate"] for x in on)
    print("median: without %.0f/s, with %.0f/s, ratio with/without %.3f" % (mo, mn, mn / mo))
    # The best round of each is the least disturbed by other load on the machine.
    bo, bn = max(x["rate"] for x in off), max(x["rate"] for x in on)
    print("best:   without %.0f/s, with %.0f/s, ratio with/without %.3f" % (bo, bn, bn / bo))
    co = statistics.median(us_per(x, a.uploads) for x in off)
    cn = statistics.median(us_per(x, a.uploads) for x in on)
    lo = statistics.median(us_per(x, a.uploads, "loop") for x in off)
    ln = statistics.median(us_per(x, a.uploads, "loop") for x in on)
    print("CPU per upload (median): without %.0f us, with %.0f us (+%.0f us); loop thread %.0f / %.0f us"
          % (co, cn, cn - co, lo, ln))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/audit/profile.py — where does the audit module's cost go? Starts one mbyted (the build/ tree) with
or without the audit module, uploads N files of 4 KiB over one keep-alive connection, and prints the CPU
time each thread of mbyted used during the uploads (from /proc/<pid>/task/*/stat) plus the outbox
dispatcher's turns. With --perf FILE it also records `perf record -g` of mbyted meanwhile (read it with
`perf report -i FILE --no-children`).

Usage: python3 bench/audit/profile.py [--audit/--no-audit] [--uploads N] [--perf FILE]"""
import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "integration"))
from harness import Server  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """{tid: (name, cpu seconds)} for every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audit", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--uploads", type=int, default=3000)
    ap.add_argument("--perf")
    a = ap.parse_args()
    srv = Server(modules={"audit": a.audit})
    srv.start()
    try:
        tok = srv.login()
        sid = json.loads(srv.request("GET", "/api/v1/stores", token=tok).body)[0]["id"]
        pid = srv.proc.pid
        perf = None
        if a.perf:
            cmd = os.environ.get("PERF_CMD")
            perf = subprocess.Popen([cmd, str(pid), a.perf] if cmd else
                                    ["perf", "record", "-q", "--call-graph", os.environ.get("PERF_CALLGRAPH", "fp"),
                                     "-o", a.perf, "-p", str(pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        before = thread_cpu(pid)
        body = os.urandom(4096)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        h = {"Authorization": "Bearer " + tok}
        t0 = time.perf_counter()
        for i in range(a.uploads):
            c.request("PUT", "/api/v1/stores/%s/files/p/f%05d.bin?parents=true" % (sid, i), body=body, headers=h)
            r = c.getresponse()
            r.read()
            if r.status != 201:
                raise SystemExit("upload %d answered %d" % (i, r.status))
        dt = time.perf_counter() - t0
        c.close()
        time.sleep(0.5)  # let the observers finish what the uploads raised
        after = thread_cpu(pid)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        print("%d uploads in %.2f s: %.0f uploads/s (audit %s)" % (a.uploads, dt, a.uploads / dt,
                                                                   "on" if a.audit else "off"))
        total = 0.0
        by_name = {}
        for tid, (name, cpu) in after.items():
            d = cpu - before.get(tid, (name, 0.0))[1]
            by_name[name] = by_name.get(name, 0.0) + d
            total += d
        for name, d in sorted(by_name.items(), key=lambda x: -x[1]):
            print("  %-16s %6.2f s CPU  (%.0f us per upload)" % (name, d, d * 1e6 / a.uploads))
        print("  %-16s %6.2f s CPU  (%.0f us per upload)" % ("total", total, total * 1e6 / a.uploads))
        turns = [l for l in srv.read_log().splitlines() if "dispatch" in l]
        if turns:
            print("  last dispatcher log line: " + turns[-1])
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()

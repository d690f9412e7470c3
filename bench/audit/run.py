#!/usr/bin/env python3
"""bench/audit — does the audit module slow uploads? 1,000 uploads (4 KiB each, one keep-alive
connection, one client) against a fresh mbyted without and with the audit module, alternated
over several rounds; prints uploads/s for each and the ratio of the medians.

Usage: python3 bench/audit/run.py [--uploads N] [--rounds R] [--size BYTES]
Uses the build in build/ (MBYTED, MBYTE_MODULE_DIR as in tests/integration/harness.py)."""
import argparse
import http.client
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "integration"))
from harness import Server  # noqa: E402


def run(with_audit, n, size):
    srv = Server(modules={"audit": with_audit})
    srv.start()
    try:
        tok = srv.login()
        sid = __import__("json").loads(srv.request("GET", "/api/v1/stores", token=tok).body)[0]["id"]
        body = os.urandom(size)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        h = {"Authorization": "Bearer " + tok}
        t0 = time.perf_counter()
        for i in range(n):
            c.request("PUT", "/api/v1/stores/%s/files/bench/f%05d.bin?parents=true" % (sid, i), body=body, headers=h)
            r = c.getresponse()
            r.read()
            if r.status != 201:
                raise SystemExit("upload %d answered %d" % (i, r.status))
        dt = time.perf_counter() - t0
        c.close()
        if with_audit:  # the log caught up with every upload
            deadline = time.time() + 60
            while time.time() < deadline:
                r = srv.request("GET", "/api/v1/admin/audit?action=file.created&format=jsonl", token=tok)
                if r.body.count(b"\n") >= n:
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("the audit log did not record every upload")
        return n / dt
    finally:
        srv.stop()
        srv.cleanup()


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
        print("round: without audit %.0f uploads/s, with audit %.0f uploads/s" % (off[-1], on[-1]), flush=True)
    mo, mn = statistics.median(off), statistics.median(on)
    print("median: without %.0f/s, with %.0f/s, ratio with/without %.3f" % (mo, mn, mn / mo))
    # The best round of each is the least disturbed by other load on the machine.
    bo, bn = max(off), max(on)
    print("best:   without %.0f/s, with %.0f/s, ratio with/without %.3f" % (bo, bn, bn / bo))


if __name__ == "__main__":
    main()

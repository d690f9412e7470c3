#!/usr/bin/env python3
"""The one-client rows of bench/run alone: nginx, MByte (durability: strict) and MByte (relaxed),
all three fresh, BENCH_ONE_COUNT uploads of 4 KiB by one curl over one keep-alive connection per
round, BENCH_ONE_ROUNDS rounds with the first server rotating, `sync` before each round. Prints
each server's files/s per round and the medians' ratios to nginx.

    bench/one_alone.py                      # after bench/run has built build-release/ and set nginx up
    BENCH_ONE_PRE=10000 bench/one_alone.py  # the strict server and nginx first take 3 x N uploads
                                            # through 16 transfers, as bench/run's earlier row does

Why it exists: in bench/run nginx's small-file rates depend on the rows before them (docs/
performance.md, 2026-12-06 17:52): this shows the same rows without them. Same classes and
client as bench/run (bench.py)."""
import os, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

COUNT = int(os.environ.get("BENCH_ONE_COUNT", "1000"))
ROUNDS = int(os.environ.get("BENCH_ONE_ROUNDS", "6"))
PRE = int(os.environ.get("BENCH_ONE_PRE", "0"))


def main():
    work = tempfile.mkdtemp(prefix="mbyte-one-")
    print("# the one-client rows alone — %s" % bench.machine())
    ng = ms = mr = None
    try:
        ng, ms, mr = bench.Nginx(work), bench.MByte(work), bench.MByte(work, "relaxed")
        servers = {"nginx": (ng, []), "MByte": (ms, ["Authorization: Bearer " + ms.token]),
                   "MByte relaxed": (mr, ["Authorization: Bearer " + mr.token])}

        def url_of(name, folder):
            srv = servers[name][0]
            if name == "nginx":
                return lambda i: "http://127.0.0.1:%d/dav/%s/f%05d" % (srv.port, folder, i)
            return lambda i: ("http://127.0.0.1:%d/api/v1/stores/%s/files/%s/f%05d?parents=true"
                              % (srv.port, srv.sid, folder, i))

        for k in range(3 if PRE else 0):
            for name in ("nginx", "MByte"):
                bodies = bench.small_bodies(os.path.join(work, "pre-%s-%d" % (name, k)), PRE, 900 + 2 * k + len(name))
                rate = bench.small_uploads(url_of(name, "pre%d" % k), servers[name][1], bodies, "pre", name)
                print("# before: %d uploads through %d transfers to %s, %.0f files/s" % (PRE, bench.THREADS, name, rate))
                shutil.rmtree(os.path.dirname(bodies[0]))
        rot = ["nginx", "MByte", "MByte relaxed"]
        res = {name: [] for name in rot}
        for r in range(ROUNDS):
            for name in rot[r % 3:] + rot[:r % 3]:
                bodies = bench.small_bodies(os.path.join(work, "one-%d-%d" % (r, rot.index(name))), COUNT,
                                            7000 + 3 * r + rot.index(name))
                os.sync()
                res[name].append(bench.small_uploads(url_of(name, "one/r%d" % r), servers[name][1], bodies, "one", name,
                                                     parallel=1))
                shutil.rmtree(os.path.dirname(bodies[0]))
        base = statistics.median(res["nginx"])
        for name in rot:
            m = statistics.median(res[name])
            print("%-14s files/s per round %s, median %.0f, %.2fx nginx" % (name, ["%.0f" % x for x in res[name]], m,
                                                                            m / base))
    finally:
        for s in (mr, ms, ng):
            if s:
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

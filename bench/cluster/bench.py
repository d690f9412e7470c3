#!/usr/bin/env python3
"""Cluster mode (issue 23): the cost of reaching a node that does not keep the store.

Started here on loopback: one etcd (Debian's etcd-server) and three release mbyted (n1, n2, n3) in
cluster mode. n1 made the account, so n1 keeps its Home store; the same requests go once to n1
(direct) and once to n2, which forwards each to n1 (docs/cluster.md "Requests for a store kept by
another node"). Measured, BENCH_RUNS runs, median; the order of the sides rotates run by run:
  - download of one BENCH_SIZE_MB file (curl -o /dev/null), MiB/s;
  - upload of one BENCH_SIZE_MB file (curl -T, new bytes each run), MiB/s;
  - BENCH_SMALL x 4 KiB uploads by one client on one keep-alive connection, files/s.
Ratios: forwarded / direct (1.0 = forwarding costs nothing). What is not here yet, because it is not
built: the time to recover from an owner kill and the cost of synchronous replication (no replicas).

Environment: BENCH_SIZE_MB (256), BENCH_SMALL (500), BENCH_RUNS (3), BENCH_DIR (a temp dir), MBYTED.
"""
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import PASSWORD, api, free_port, host, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "256"))
SMALL = int(os.environ.get("BENCH_SMALL", "500"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))


def etcd_start(work):
    client, peer = free_port(), free_port()
    url, purl = "http://127.0.0.1:%d" % client, "http://127.0.0.1:%d" % peer
    p = subprocess.Popen(["etcd", "--name", "b", "--data-dir", os.path.join(work, "etcd"), "--listen-client-urls",
                          url, "--advertise-client-urls", url, "--listen-peer-urls", purl,
                          "--initial-advertise-peer-urls", purl, "--initial-cluster", "b=" + purl],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(client, p, "etcd")
    return p, url


def node_start(work, name, etcd_url):
    port = free_port()
    d = os.path.join(work, name)
    conf = os.path.join(d, "conf")
    os.makedirs(conf, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "conf.d", "store-template.yaml"), conf)
    with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
        f.write("log_level: warn\ncluster: {etcd: [%s], node: %s, lease_ttl: 5}\n" % (etcd_url, name))
    env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % port, MBYTE_DATA=os.path.join(d, "data"),
               MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_MODULE_DIR=os.path.join(ROOT, "build-release", "modules"))
    p = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=open(os.path.join(d, "log"), "wb"),
                         stderr=subprocess.STDOUT)
    wait_port(port, p, "mbyted " + name)
    return p, port


def timed(args):
    t = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def small_files(port, sid, token, tag):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = os.urandom(4096)
    t = time.monotonic()
    for i in range(SMALL):
        c.request("PUT", "/api/v1/stores/%d/files/small-%s-%d.bin" % (sid, tag, i), body[:4000] + os.urandom(96),
                  {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream"})
        r = c.getresponse()
        r.read()
        assert r.status == 201, r.status
    c.close()
    return SMALL / (time.monotonic() - t)


def main():
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-bench-cluster-")
    os.makedirs(work, exist_ok=True)
    procs = []
    try:
        etcd, url = etcd_start(work)
        procs.append(etcd)
        ports = {}
        for n in ("n1", "n2", "n3"):
            p, ports[n] = node_start(work, n, url)
            procs.append(p)
        st, r = api(ports["n1"], "POST", "/api/v1/auth/login", {"username": "admin", "password": PASSWORD})
        token = r["token"]
        sid = next(s["id"] for s in api(ports["n1"], "GET", "/api/v1/stores", token=token)[1] if s["name"] == "Home")
        for _ in range(100):  # n2 knows where the store is (its placement reached it through etcd)
            st, v = api(ports["n2"], "GET", "/api/v1/admin/cluster", token=token)
            if st == 200 and sid in [s["id"] for s in v["stores"]] and len(v["nodes"]) == 3:
                break
            time.sleep(0.1)
        print("host: %s" % host())
        print("cluster: etcd and three mbyted on loopback; n1 keeps the store, n2 forwards to it")
        print("%d MiB file, %d x 4 KiB by one client, %d runs\n" % (SIZE_MB, SMALL, RUNS))
        src = os.path.join(work, "big.bin")
        rows = {k: {"direct": [], "forwarded": []} for k in ("download", "upload", "small")}
        auth = "Authorization: Bearer " + token
        for run in range(RUNS):
            order = ["direct", "forwarded"] if run % 2 == 0 else ["forwarded", "direct"]
            print("run %d: %s" % (run + 1, " then ".join(order)))
            for side in order:
                port = ports["n1"] if side == "direct" else ports["n2"]
                with open(src, "wb") as f:
                    for _ in range(SIZE_MB):
                        f.write(os.urandom(1 << 20))
                name = "big-%s-%d.bin" % (side, run)
                u = "http://127.0.0.1:%d/api/v1/stores/%d/files/%s" % (port, sid, name)
                t = timed(["curl", "-sf", "-H", auth, "-H", "Content-Type: application/octet-stream", "-T", src, u])
                rows["upload"][side].append(SIZE_MB / t)
                timed(["curl", "-sf", "-H", auth, "-o", "/dev/null", u])  # the first read: page cache
                t = timed(["curl", "-sf", "-H", auth, "-o", "/dev/null", u])
                rows["download"][side].append(SIZE_MB / t)
                rows["small"][side].append(small_files(port, sid, token, "%s%d" % (side, run)))
        print("\n| test | direct (n1) | forwarded (n2 -> n1) | forwarded / direct | runs (ratio) |")
        print("| --- | --- | --- | --- | --- |")
        for k, unit in (("download", "MiB/s"), ("upload", "MiB/s"), ("small", "files/s")):
            d, f = statistics.median(rows[k]["direct"]), statistics.median(rows[k]["forwarded"])
            runs = " ".join("%.2f" % (b / a) for a, b in zip(rows[k]["direct"], rows[k]["forwarded"]))
            print("| %s | %.0f %s | %.0f %s | %.2f | %s |" % (k, d, unit, f, unit, f / d, runs))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

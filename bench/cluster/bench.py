#!/usr/bin/env python3
"""Cluster mode (issue 23): what a cluster costs a client, and how fast it recovers.

Started here on loopback: one etcd (Debian's etcd-server) and three release mbyted (n1, n2, n3) in
cluster mode (lease_ttl 5, the default), plus, for the replication cost, a second etcd with a cluster
of one node (n0: its stores have no replica). n1 made the account, so n1 keeps its Home store, which
is replicated synchronously on n2 or n3. Measured, BENCH_RUNS runs, median; the order of the sides
rotates run by run:
  - forwarding (docs/cluster.md "Requests for a store kept by another node"): the same requests once
    to n1 (direct) and once to n2, which forwards each to n1:
      download of one BENCH_SIZE_MB file (curl -o /dev/null), MiB/s;
      upload of one BENCH_SIZE_MB file (curl -T, new bytes each run), MiB/s;
      BENCH_SMALL x 4 KiB uploads by one client on one keep-alive connection, files/s;
    ratio forwarded / direct (1.0 = forwarding costs nothing);
  - FTP through another node ("Modules' file calls"): one BENCH_SIZE_MB file stored (STOR) and read
    back (RETR, the second read) with ftplib through n1's FTP port (direct) and through n2's, which
    carries each file call to n1 over its HTTP API (a write spooled, then sent), MiB/s and ratio;
  - synchronous replication ("Replicas and failover"): BENCH_SMALL x 4 KiB uploads by one client, and
    one upload of BENCH_SIZE_MB, to the node keeping the store, on the three-node cluster (each change
    confirmed by the replica, the chunks copied to it) and on the one-node cluster (no replica); ratio
    three / one;
  - recovery: BENCH_KILLS times, the node keeping a store is killed with SIGKILL while a client
    uploads a 4 KiB file every 50 ms through another node; the time from the kill to the first
    acknowledged upload after it (the lease ends, the replica takes over), median and spread; the
    killed node is started again and the store given a replica again before the next kill.

Environment: BENCH_SIZE_MB (256), BENCH_SMALL (500), BENCH_RUNS (3), BENCH_KILLS (10), BENCH_DIR (a
temp dir), MBYTED.
"""
import ftplib
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
KILLS = int(os.environ.get("BENCH_KILLS", "10"))
TTL = 5
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))


def etcd_start(work, name="etcd"):
    client, peer = free_port(), free_port()
    url, purl = "http://127.0.0.1:%d" % client, "http://127.0.0.1:%d" % peer
    p = subprocess.Popen(["etcd", "--name", "b", "--data-dir", os.path.join(work, name), "--listen-client-urls",
                          url, "--advertise-client-urls", url, "--listen-peer-urls", purl,
                          "--initial-advertise-peer-urls", purl, "--initial-cluster", "b=" + purl],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(client, p, "etcd")
    return p, url


FTP_PORTS = {}


def node_start(work, name, etcd_url, port=None):
    port = port or free_port()
    FTP_PORTS.setdefault(name, free_port())
    d = os.path.join(work, name)
    conf = os.path.join(d, "conf")
    os.makedirs(conf, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "conf.d", "store-template.yaml"), conf)
    with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
        f.write("log_level: warn\nmodules: {ftp: true}\n"
                "cluster: {etcd: [%s], node: %s, lease_ttl: %d, rebalance: false}\n" % (etcd_url, name, TTL))
    base = 42000 + 100 * (sorted(FTP_PORTS).index(name))
    env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % port, MBYTE_DATA=os.path.join(d, "data"),
               MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_MODULE_DIR=os.path.join(ROOT, "build-release", "modules"),
               MBYTE_FTP_LISTEN="127.0.0.1:%d" % FTP_PORTS[name], MBYTE_FTP_PASV_PORTS="%d-%d" % (base, base + 99))
    p = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=open(os.path.join(d, "log"), "ab"),
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


def ftp_rates(node, path, src):
    """STOR src to path through node's FTP port, then RETR it twice (the second timed): MiB/s each."""
    f = ftplib.FTP(timeout=600)
    f.connect("127.0.0.1", FTP_PORTS[node])
    f.login("admin", PASSWORD)
    t = time.monotonic()
    with open(src, "rb") as fp:
        f.storbinary("STOR " + path, fp, blocksize=1 << 20)
    put = SIZE_MB / (time.monotonic() - t)
    sink = lambda b: None  # noqa: E731
    f.retrbinary("RETR " + path, sink, blocksize=1 << 20)
    t = time.monotonic()
    f.retrbinary("RETR " + path, sink, blocksize=1 << 20)
    get = SIZE_MB / (time.monotonic() - t)
    f.quit()
    return put, get


def placement(port, token, sid):
    st, v = api(port, "GET", "/api/v1/admin/cluster", token=token)
    return next((s for s in v["stores"] if s["id"] == sid), None) if st == 200 else None


def wait(what, cond, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = cond()
            if got:
                return got
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("bench/cluster: %s did not happen within %d s" % (what, timeout))


def recover_once(work, url, procs, ports, token, sid, k):
    """Kill the node keeping store sid; seconds until an upload through another node is acknowledged."""
    p = placement(ports["n1"], token, sid) or placement(ports["n2"], token, sid)
    owner, replica = p["owner"], p["replica"]
    via = next(n for n in ports if n not in (owner, replica))
    body = os.urandom(4096)
    procs[owner].kill()
    procs[owner].wait()
    t0 = time.monotonic()
    i = 0
    while True:
        c = http.client.HTTPConnection("127.0.0.1", ports[via], timeout=30)
        try:
            c.request("PUT", "/api/v1/stores/%d/files/probe-%d-%d.bin" % (sid, k, i), body,
                      {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream"})
            r = c.getresponse()
            r.read()
            if r.status == 201:
                break
        except OSError:
            pass
        finally:
            c.close()
        i += 1
        if time.monotonic() - t0 > 120:
            raise SystemExit("bench/cluster: no upload went through within 120 s of the kill")
        time.sleep(0.05)
    took = time.monotonic() - t0
    # the killed node again (once its lease ended: its name is free), and a filled replica
    time.sleep(TTL + 1)
    procs[owner], _ = node_start(work, owner, url, ports[owner])
    wait("a filled replica of store %d" % sid, lambda: (lambda q: q and q["replica"] and not q["filling"])(
        placement(ports[via], token, sid)), 120)
    return took


def main():
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-bench-cluster-")
    os.makedirs(work, exist_ok=True)
    procs, nodes = [], {}
    try:
        etcd, url = etcd_start(work)
        procs.append(etcd)
        ports, nodes = {}, {}
        for n in ("n1", "n2", "n3"):
            nodes[n], ports[n] = node_start(work, n, url)
        etcd0, url0 = etcd_start(work, "etcd0")  # a cluster of one node: no replica
        procs.append(etcd0)
        nodes["n0"], port0 = node_start(work, "n0", url0)
        st, r = api(ports["n1"], "POST", "/api/v1/auth/login", {"username": "admin", "password": PASSWORD})
        token = r["token"]
        sid = next(s["id"] for s in api(ports["n1"], "GET", "/api/v1/stores", token=token)[1] if s["name"] == "Home")
        # n2 knows where the store is, and it has a replica (n1 made it before the others were up)
        wait("store %d's filled replica, known to n2" % sid, lambda: (lambda q: q and q["replica"] and not q["filling"])(
            placement(ports["n2"], token, sid)), 120)
        st, r = api(port0, "POST", "/api/v1/auth/login", {"username": "admin", "password": PASSWORD})
        token0 = r["token"]
        sid0 = next(s["id"] for s in api(port0, "GET", "/api/v1/stores", token=token0)[1] if s["name"] == "Home")
        print("host: %s" % host())
        print("cluster: etcd and three mbyted on loopback; n1 keeps the store, replicated on %s; n2 forwards to n1; "
              "a second etcd with one mbyted (n0) for the replication cost" % placement(ports["n1"], token, sid)["replica"])
        print("%d MiB file, %d x 4 KiB by one client, %d runs\n" % (SIZE_MB, SMALL, RUNS))
        src = os.path.join(work, "big.bin")
        rows = {k: {"direct": [], "forwarded": []} for k in ("download", "upload", "small", "ftp STOR", "ftp RETR")}
        repl = {"three": [], "one": []}
        repl_up = {"three": [], "one": []}
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
                put, get = ftp_rates("n1" if side == "direct" else "n2", "/Home/ftp-%s-%d.bin" % (side, run), src)
                rows["ftp STOR"][side].append(put)
                rows["ftp RETR"][side].append(get)
            for side in (["three", "one"] if run % 2 == 0 else ["one", "three"]):
                repl[side].append(small_files(ports["n1"], sid, token, "r3-%d" % run) if side == "three"
                                  else small_files(port0, sid0, token0, "r1-%d" % run))
                with open(src, "wb") as f:
                    for _ in range(SIZE_MB):
                        f.write(os.urandom(1 << 20))
                p, s_, tok = (ports["n1"], sid, token) if side == "three" else (port0, sid0, token0)
                u = "http://127.0.0.1:%d/api/v1/stores/%d/files/repl-%s-%d.bin" % (p, s_, side, run)
                t = timed(["curl", "-sf", "-H", "Authorization: Bearer " + tok, "-H",
                           "Content-Type: application/octet-stream", "-T", src, u])
                repl_up[side].append(SIZE_MB / t)
        print("\n| test | direct (n1) | forwarded (n2 -> n1) | forwarded / direct | runs (ratio) |")
        print("| --- | --- | --- | --- | --- |")
        for k, unit in (("download", "MiB/s"), ("upload", "MiB/s"), ("small", "files/s"), ("ftp STOR", "MiB/s"),
                        ("ftp RETR", "MiB/s")):
            d, f = statistics.median(rows[k]["direct"]), statistics.median(rows[k]["forwarded"])
            runs = " ".join("%.2f" % (b / a) for a, b in zip(rows[k]["direct"], rows[k]["forwarded"]))
            print("| %s | %.0f %s | %.0f %s | %.2f | %s |" % (k, d, unit, f, unit, f / d, runs))
        one, three = statistics.median(repl["one"]), statistics.median(repl["three"])
        print("\n| test | one node (no replica) | three nodes (replica confirms) | three / one | runs (ratio) |")
        print("| --- | --- | --- | --- | --- |")
        print("| 4 KiB uploads, one client | %.0f files/s | %.0f files/s | %.2f | %s |" % (
            one, three, three / one, " ".join("%.2f" % (b / a) for a, b in zip(repl["one"], repl["three"]))))
        one, three = statistics.median(repl_up["one"]), statistics.median(repl_up["three"])
        print("| upload of %d MiB | %.0f MiB/s | %.0f MiB/s | %.2f | %s |" % (
            SIZE_MB, one, three, three / one, " ".join("%.2f" % (b / a) for a, b in zip(repl_up["one"], repl_up["three"]))))
        if KILLS:
            procs_by = dict(nodes)
            times = [recover_once(work, url, procs_by, ports, token, sid, k) for k in range(KILLS)]
            nodes.update(procs_by)
            print("\nrecovery from a SIGKILL of the node keeping the store (lease_ttl %d s), %d kills:" % (TTL, KILLS))
            print("| median | min | max | each |")
            print("| --- | --- | --- | --- |")
            print("| %.2f s | %.2f s | %.2f s | %s |" % (statistics.median(times), min(times), max(times),
                                                       " ".join("%.2f" % t for t in times)))
    finally:
        for p in list(nodes.values()) + list(reversed(procs)):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

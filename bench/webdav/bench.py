#!/usr/bin/env python3
"""MByte's webdav module vs Apache httpd mod_dav, side by side on loopback, in one run
(bench/webdav/run builds a release mbyted and calls this).

Peers:
  - Apache httpd 2.4 (Debian apache2) with mod_dav and mod_dav_fs, event MPM, from a config
    generated under a temporary ServerRoot, Basic authentication against an htpasswd file
    (SHA-1 entries: cheap to check, as MByte's cached app-password check is after the first);
  - a release build of mbyted (build-release/mbyted) with the webdav module and a fresh data
    directory, Basic authentication with an app password.
Both get the same bytes from the same client (curl).

Rows (BENCH_* environment variables set the sizes):
  put 1 GiB         curl -T of a BENCH_SIZE_MB file, new bytes each run (MByte deduplicates)
  get 1 GiB         curl -o /dev/null of that file, three times: right after the PUT (Apache's copy
                    is in the page cache, MByte's chunks were written around it with O_DIRECT), after
                    dropping the page cache (both from the disk; root only) and once more (both cached:
                    after a wait until the server is idle, bench.settle, since mbyted with
                    chunk_read_direct reads a cold file around the page cache and puts it into the
                    cache afterwards)
  4 KiB PUT x8      BENCH_SMALL_COUNT uploads of 4 KiB from one curl in parallel mode, 8 at a time
  4 KiB PUT x1      the same, one at a time (keep-alive)
  PROPFIND          Depth 1 of a folder of BENCH_PROPFIND_FILES files (made before timing)
Fairness: which server goes first alternates run by run, the order is printed; `sync` runs
before every timed upload. Prints each row's median per server and the MByte/Apache ratio
(goal: >= 1.0 on every row, issue 24) under the host() header of bench/bench.py.

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (3), BENCH_SMALL_COUNT (1000), BENCH_PROPFIND_FILES (10000),
BENCH_PROPFIND_RUNS (5), BENCH_DIR (a temp dir), MBYTED (build-release/mbyted), APACHE (apache2).
"""
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench as base  # noqa: E402  (free_port, wait_port, host, small_bodies, orders)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import apache_dav  # noqa: E402  (Apache with mod_dav from a generated config: the one starter)

SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SMALL_COUNT = int(os.environ.get("BENCH_SMALL_COUNT", "1000"))
PF_FILES = int(os.environ.get("BENCH_PROPFIND_FILES", "10000"))
PF_RUNS = int(os.environ.get("BENCH_PROPFIND_RUNS", "5"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
USER, PASSWORD = "bench", "bench-dav-password"


def Apache(work):
    return apache_dav.Apache(work, USER, PASSWORD, base.free_port()).start()


class MByte:
    name = "MByte"

    def __init__(self, work):
        self.port = base.free_port()
        conf = os.path.join(work, "mbyte-conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
            f.write("log_level: info\nmodules:\n  webdav: true\n")
        env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % self.port, MBYTE_DATA=os.path.join(work, "mbyte-data"),
                   MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
                   MBYTE_MODULE_DIR=os.path.join(os.path.dirname(MBYTED), "modules"))
        self.log = open(os.path.join(work, "mbyted.log"), "w")
        self.proc = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        base.wait_port(self.port, self.proc, "mbyted")
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        for _ in range(100):  # the listener is up a moment before the routes
            c.request("POST", "/api/v1/auth/login", json.dumps({"username": "admin", "password": PASSWORD}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            if r.status == 200:
                break
            time.sleep(0.1)
        token = json.loads(body)["token"]
        c.request("POST", "/api/v1/account/app-passwords", json.dumps({"name": "bench"}),
                  {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse()
        app = json.loads(r.read())
        self.url = "http://127.0.0.1:%d/dav/Home/" % self.port
        self.auth = "admin:%s" % app["password"]
        # argon2id once, before timing: later requests hit the login cache (login_cache_ttl)
        c.request("PROPFIND", "/dav/Home/", headers={"Depth": "0", "Authorization": "Basic " +
                                                    base64.b64encode(self.auth.encode()).decode()})
        c.getresponse().read()
        c.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def curl(srv, args):
    out = subprocess.run(["curl", "-sS", "--fail", "-u", srv.auth, "-w", "%{time_total}", "-o", "/dev/null"] + args,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit("curl %s against %s failed: %s" % (args[:3], srv.name, out.stderr[-500:]))
    return float(out.stdout.strip())


def can_drop_caches():
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches():
    """Both servers' copies leave the page cache: a GET then reads from the disk, whoever wrote
    through the cache (Apache) or around it (MByte's O_DIRECT chunks)."""
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def random_file(path, mb):
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))


def small_puts(srv, bodies, prefix, parallel):
    """One curl in parallel mode PUTs every body, `parallel` at a time; returns files/s."""
    cfg = os.path.join(os.path.dirname(bodies[0]), "curl-%s-%s.cfg" % (srv.name, prefix))
    with open(cfg, "w") as f:
        f.write('user = "%s"\n' % srv.auth)
        for i, b in enumerate(bodies):
            f.write('upload-file = "%s"\nurl = "%s%s/f%05d"\noutput = "/dev/null"\n' % (b, srv.url, prefix, i))
    t0 = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "--parallel", "--parallel-max", str(parallel), "-w", "%{http_code}\n",
                          "-K", cfg], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    codes = out.stdout.split()
    if out.returncode or len(codes) != len(bodies) or any(c not in ("200", "201", "204") for c in codes):
        sys.exit("small PUTs to %s failed: exit %d, %r" % (srv.name, out.returncode, codes[:5]))
    return len(bodies) / dt


def mkcol(srv, name):
    subprocess.run(["curl", "-sS", "-u", srv.auth, "-X", "MKCOL", "-o", "/dev/null", srv.url + name], check=True)


def main():
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-bench-webdav-")
    os.makedirs(work, exist_ok=True)
    apache_v = subprocess.run([apache_dav.APACHE, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    print("# MByte webdav vs Apache mod_dav — %s" % time.strftime("%Y-%m-%d %H:%M"))
    print("# %s; %s" % (base.host(), apache_v))
    print("# file %d MiB x %d runs, %d x 4 KiB PUTs, PROPFIND of %d files x %d runs; work dir %s"
          % (SIZE_MB, RUNS, SMALL_COUNT, PF_FILES, PF_RUNS, work))
    servers = {"Apache": Apache(work), "MByte": MByte(work)}
    results = {}
    try:
        for i, order in enumerate(base.orders(RUNS)):
            order = ["Apache" if o == "nginx" else o for o in order]
            print("# run %d: %s first" % (i + 1, order[0]))
            src = os.path.join(work, "big-%d.bin" % i)
            random_file(src, SIZE_MB)
            for name in order:
                srv = servers[name]
                subprocess.run(["sync"])
                t = curl(srv, ["-T", src, srv.url + "big-%d.bin" % i])
                results.setdefault("put %d MiB (MB/s)" % SIZE_MB, {}).setdefault(name, []).append(SIZE_MB / t)
            for name in order:
                srv = servers[name]
                t = curl(srv, [srv.url + "big-%d.bin" % i])
                results.setdefault("get %d MiB right after the put (MB/s)" % SIZE_MB, {}).setdefault(name, []).append(
                    SIZE_MB / t)
            if can_drop_caches():
                for name in order:  # each server reads its copy from the disk, then again from the cache
                    srv = servers[name]  # (both right after its own drop: the other's would evict its copy)
                    drop_caches()
                    t = curl(srv, [srv.url + "big-%d.bin" % i])
                    results.setdefault("get %d MiB, caches dropped (MB/s)" % SIZE_MB, {}).setdefault(name, []).append(
                        SIZE_MB / t)
                    base.settle(srv.proc.pid)  # mb-warm puts what the cold read went around into the cache
                    t = curl(srv, [srv.url + "big-%d.bin" % i])
                    results.setdefault("get %d MiB, again (MB/s)" % SIZE_MB, {}).setdefault(name, []).append(
                        SIZE_MB / t)
            os.remove(src)
            for parallel in (8, 1):
                bodies = base.small_bodies(os.path.join(work, "small-%d-%d" % (i, parallel)), SMALL_COUNT,
                                           i * 10 + parallel)
                for name in order:
                    srv = servers[name]
                    prefix = "s%d-%d" % (i, parallel)
                    mkcol(srv, prefix)
                    subprocess.run(["sync"])
                    rate = small_puts(srv, bodies, prefix, parallel)
                    results.setdefault("4 KiB PUT, %d client%s (files/s)" % (parallel, "s" if parallel > 1 else ""),
                                       {}).setdefault(name, []).append(rate)
                shutil.rmtree(os.path.dirname(bodies[0]))
        # PROPFIND Depth 1 of one folder of PF_FILES files
        bodies = base.small_bodies(os.path.join(work, "pf"), PF_FILES, 99)
        for srv in servers.values():
            mkcol(srv, "pf")
            small_puts(srv, bodies, "pf", 8)
        for i, order in enumerate(base.orders(PF_RUNS)):
            for name in ["Apache" if o == "nginx" else o for o in order]:
                srv = servers[name]
                t = curl(srv, ["-X", "PROPFIND", "-H", "Depth: 1", srv.url + "pf/"])
                results.setdefault("PROPFIND %d files (listings/s)" % PF_FILES, {}).setdefault(name, []).append(1 / t)
    finally:
        for s in servers.values():
            s.stop()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| test | Apache | MByte | MByte/Apache |")
    print("| --- | --- | --- | --- |")
    for test, by in results.items():
        a, m = statistics.median(by["Apache"]), statistics.median(by["MByte"])
        print("| %s | %.1f | %.1f | %.2fx |" % (test, a, m, m / a if a else 0))
    print("\n(medians; goal >= 1.0x on every row, issue 24)")
    print("\nEach run's ratio MByte/Apache (MByte / Apache); a goal is met when the median meets it and no run is")
    print("below 85 % of it:")
    for test, by in results.items():
        print("  %-40s %s" % (test, "  ".join("%.2f (%.0f/%.0f)" % (m / a if a else 0, m, a)
                                               for a, m in zip(by["Apache"], by["MByte"]))))


if __name__ == "__main__":
    main()

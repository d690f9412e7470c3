#!/usr/bin/env python3
"""MByte vs nginx, side by side, on loopback, in one run (bench/run builds and calls this).

Peers:
  - nginx serving the benchmark file statically (sendfile) and taking uploads with its
    WebDAV PUT (dav_methods PUT) into the same kind of directory;
  - a release build of mbyted (build-release/mbyted) with a fresh data directory.
Both get the same bytes: the download file is written once, placed in nginx's root and
uploaded into MByte before timing starts.

Measures (the same client for both servers):
  download  curl -o /dev/null of a BENCH_SIZE_MB file, BENCH_RUNS runs, median, after one untimed
            read from each and a wait until each server is idle (settle: MByte may read a file
            around the page cache and cache it afterwards, docs/storage.md chunk_read_direct)
  upload    curl -T of a file of the same size, new bytes each run (MByte deduplicates), BENCH_UPLOAD_RUNS runs, median
  small     BENCH_SMALL_COUNT uploads of 4 KiB through one curl process in parallel mode
            (libcurl's multi interface, BENCH_THREADS transfers at a time over keep-alive
            connections), in BENCH_SMALL_ROUNDS rounds with fresh bodies each, median
  first     a fresh file of BENCH_SIZE_MB uploaded and at once downloaded (timed), BENCH_FIRST_RUNS
            runs, median: what a user who reads back what they just sent sees (MByte wrote its
            chunks with O_DIRECT; nginx's copy is in the page cache)
  one       BENCH_ONE_COUNT uploads of 4 KiB by one client, one after the other over one keep-alive
            connection (curl without --parallel), BENCH_SMALL_ROUNDS rounds, median; against MByte
            with durability: strict (the default) and with a second mbyted set to relaxed
Fairness: which server goes first alternates run by run (and round by round), the order is
printed; `sync` runs before every timed upload and nothing else is dropped; the client's own CPU
time is printed per test, so a client-bound test shows itself.
Prints a table of throughputs and MByte/nginx ratios, with the goals of issue 3.

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (5), BENCH_UPLOAD_RUNS (3),
BENCH_SMALL_COUNT (10000), BENCH_SMALL_ROUNDS (3), BENCH_THREADS (16), BENCH_FIRST_RUNS (3),
BENCH_ONE_COUNT (1000), BENCH_DIR (a temp dir under /tmp),
MBYTED (build-release/mbyted), NGINX (nginx on PATH or /usr/sbin/nginx).
"""
import http.client
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
UPLOAD_RUNS = int(os.environ.get("BENCH_UPLOAD_RUNS", "3"))
SMALL_COUNT = int(os.environ.get("BENCH_SMALL_COUNT", "10000"))
SMALL_ROUNDS = int(os.environ.get("BENCH_SMALL_ROUNDS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
FIRST_RUNS = int(os.environ.get("BENCH_FIRST_RUNS", "3"))
ONE_COUNT = int(os.environ.get("BENCH_ONE_COUNT", "1000"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "bench-admin-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def api(port, method, path, body=None, token=None, timeout=600):
    """One JSON call to a server on loopback: (status, parsed answer). bench/extstore and bench/cluster."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    c.close()
    return out


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("%s did not start" % what)


class Nginx:
    def __init__(self, work):
        self.port = free_port()
        self.root = os.path.join(work, "nginx-root")
        self.prefix = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.root, "dav"), exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        user = "user root root;\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write("""%(user)sworker_processes auto;
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path %(prefix)s/tmp;
    proxy_temp_path %(prefix)s/tmp;
    fastcgi_temp_path %(prefix)s/tmp;
    uwsgi_temp_path %(prefix)s/tmp;
    scgi_temp_path %(prefix)s/tmp;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
        client_max_body_size 0;
        location /dav/ {
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }
    }
}
""" % {"user": user, "prefix": self.prefix, "port": self.port, "root": self.root})
        self.proc = subprocess.Popen([NGINX, "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.prefix, "stderr"), "w"))
        wait_port(self.port, self.proc, "nginx")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


class MByte:
    def __init__(self, work, durability="strict"):
        self.port = free_port()
        tag = "" if durability == "strict" else "-" + durability
        self.data = os.path.join(work, "mbyte-data" + tag)
        conf = os.path.join(work, "mbyte-conf" + tag)
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
            f.write("log_level: info\ndurability: %s\n" % durability
                    + ("http_threads: %s\n" % os.environ["BENCH_HTTP_THREADS"] if os.environ.get("BENCH_HTTP_THREADS") else ""))
        env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % self.port, MBYTE_DATA=self.data,
                   MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
                   MBYTE_MODULE_DIR=os.path.join(ROOT, "build-release", "modules"))
        self.log = open(os.path.join(work, "mbyted%s.log" % tag), "w")
        self.proc = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "mbyted")
        time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/api/v1/auth/login", json.dumps({"username": "admin", "password": PASSWORD}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        self.token = json.loads(r.read())["token"]
        c.request("GET", "/api/v1/stores", headers={"Authorization": "Bearer " + self.token})
        r = c.getresponse()
        self.sid = json.loads(r.read())[0]["id"]
        c.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Cpu:
    """The client's CPU seconds (curl processes) per server and test, printed under the table."""

    def __init__(self):
        self.spent = {}

    def add(self, test, server, seconds):
        self.spent.setdefault(test, {}).setdefault(server, 0.0)
        self.spent[test][server] += seconds


CPU = Cpu()


def curl_time(args, test=None, server=None):
    before = children_cpu()
    out = subprocess.run(["curl", "-sS", "--fail", "-w", "%{time_total}", "-o", "/dev/null"] + args,
                         capture_output=True, text=True, check=True)
    if test:
        CPU.add(test, server, children_cpu() - before)
    return float(out.stdout.strip())


def settle(pid, limit=30.0):
    """Wait until process pid has been idle for half a second (under 20 ms of CPU in it), at most
    limit seconds: the seconds waited. After an untimed first read, so that a "warm" row starts
    warm on both sides: mbyted with chunk_read_direct reads a file that is not cached around the
    page cache and puts it into the cache afterwards, in an idle-priority thread (mb-warm)."""
    def cpu():
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    start = time.time()
    while time.time() - start < limit:
        before = cpu()
        time.sleep(0.5)
        if cpu() - before < 0.02:
            break
    return time.time() - start


def orders(n):
    """Which server goes first in run i: nginx in even runs, MByte in odd ones."""
    return [("nginx", "MByte") if i % 2 == 0 else ("MByte", "nginx") for i in range(n)]


def small_bodies(folder, count, salt):
    """count files of 4 KiB, each unlike any other made in this run (MByte deduplicates)."""
    os.makedirs(folder, exist_ok=True)
    block = os.urandom(4096 - 16)
    paths = []
    for i in range(count):
        p = os.path.join(folder, "f%05d" % i)
        with open(p, "wb") as f:
            f.write(salt.to_bytes(8, "little") + i.to_bytes(8, "little") + block)
        paths.append(p)
    return paths


def small_uploads(url_of, headers, bodies, test, server, parallel=None):
    """One curl in parallel mode (the multi interface: THREADS transfers at a time, keep-alive
    connections reused) PUTs every body; returns files/s. A C client, so the server is measured,
    not a Python client's GIL. parallel=1: one transfer after the other on one connection."""
    parallel = parallel or THREADS
    cfg = os.path.join(os.path.dirname(bodies[0]), "curl.cfg")
    with open(cfg, "w") as f:
        for h in headers:
            f.write('header = "%s"\n' % h)
        for i, b in enumerate(bodies):
            f.write('upload-file = "%s"\nurl = "%s"\noutput = "/dev/null"\n' % (b, url_of(i)))
    before = children_cpu()
    t0 = time.perf_counter()
    mode = ["--parallel", "--parallel-max", str(parallel)] if parallel > 1 else []
    out = subprocess.run(["curl", "-sS"] + mode + ["-w", "%{http_code}\n", "-K", cfg], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    CPU.add(test, server, children_cpu() - before)
    codes = out.stdout.split()
    bad = [c for c in codes if c not in ("200", "201", "204")]
    if out.returncode != 0 or bad or len(codes) != len(bodies):
        sys.exit("small uploads to %s failed: curl exit %d, %d answers, not 2xx: %r; %s"
                 % (server, out.returncode, len(codes), bad[:5], out.stderr[-500:]))
    return len(bodies) / dt


def host():
    """CPU model, cores, memory, kernel and the file system of the work dir: ratios differ between
    machines (an Intel and an AMD guest gave different ones for the same code). bench/ftp uses it too."""
    mem, cpu = 0, "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    where = os.environ.get("BENCH_DIR") or tempfile.gettempdir()
    while not os.path.exists(where):
        where = os.path.dirname(where)
    fs = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE,OPTIONS", "-T", where], capture_output=True,
                        text=True).stdout.split()
    fs = "%s (%s, %s)" % tuple(fs[:3]) if len(fs) >= 3 else "?"
    return "%s, nproc %d, RAM %d MiB; Linux %s; %s on the work dir; %s" % (
        cpu, os.cpu_count(), mem, os.uname().release, fs, page_fault_cost())


def page_fault_cost():
    """What a first touch of an anonymous page costs here, median of three 64 MiB touches: on
    the AMD guest of docs/performance.md about 12 us (a bare machine: well under 1 us), which
    weighs on whatever allocates fresh memory per request."""
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        b = bytearray(64 << 20)
        b[::4096] = b"x" * (16 << 10)
        runs.append((time.perf_counter() - t0) / (16 << 10))
        del b
    return "page fault %.1f us" % (statistics.median(runs) * 1e6)


def machine():
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return "%s; %s; %s; Python %s" % (host(), nginx_v, " ".join(curl_v.split()[:2]), sys.version.split()[0])


def main():
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-bench-")
    os.makedirs(work, exist_ok=True)
    size = SIZE_MB << 20
    print("# MByte vs nginx — %s" % time.strftime("%Y-%m-%d %H:%M"))
    print("# %s" % machine())
    print("# file %d MiB, %d download runs, %d upload runs, %d small uploads x 4 KiB from %d threads; work dir %s"
          % (SIZE_MB, RUNS, UPLOAD_RUNS, SMALL_COUNT, THREADS, work))
    ng = mb = None
    try:
        ng, mb = Nginx(work), MByte(work)
        block = os.urandom(1 << 20)

        def make_file(path, salt):
            """SIZE_MB MiB, no two MiB alike, and unlike any file made with another salt: MByte
            deduplicates chunks, so every upload run must send bytes it has never seen."""
            with open(path, "wb") as f:
                for i in range(SIZE_MB):
                    f.write((salt * SIZE_MB + i).to_bytes(8, "little") + block[8:])
            return path

        src = make_file(os.path.join(work, "big.bin"), 0)
        shutil.copyfile(src, os.path.join(ng.root, "big.bin"))
        auth = ["-H", "Authorization: Bearer " + mb.token]
        mb_file = "http://127.0.0.1:%d/api/v1/stores/%s/files/big.bin" % (mb.port, mb.sid)
        curl_time(auth + ["-T", src, mb_file])
        results = []
        ng_file = "http://127.0.0.1:%d/big.bin" % ng.port
        order_log = []

        # download: one untimed read of each first, so both start warm (nginx's copy was just
        # written through the page cache; MByte's chunks with O_DIRECT, so not cached), then
        # the servers alternate, each run starting with the other one
        warm = (curl_time([ng_file]), curl_time(auth + [mb_file]))
        settled = (settle(ng.proc.pid), settle(mb.proc.pid))
        dn, dm = [], []
        fetch = {"nginx": lambda: dn.append(curl_time([ng_file], "download", "nginx")),
                 "MByte": lambda: dm.append(curl_time(auth + [mb_file], "download", "MByte"))}
        for first, second in orders(RUNS):
            fetch[first]()
            fetch[second]()
        order_log.append("download: " + ", ".join("%s first" % o[0] for o in orders(RUNS)))
        results.append(("download %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(dn),
                        SIZE_MB / statistics.median(dm), 0.9))

        # upload: `sync` before every timed upload, so neither server pays for the other's (or
        # the test file's) writeback; the first server alternates
        un, um = [], []
        for i, (first, second) in enumerate(orders(UPLOAD_RUNS)):
            up = make_file(os.path.join(work, "up.bin"), i + 1)
            put = {"nginx": lambda: un.append(curl_time(["-T", up, "http://127.0.0.1:%d/dav/up%d.bin" % (ng.port, i)],
                                                        "upload", "nginx")),
                   "MByte": lambda: um.append(curl_time(auth + ["-T", up, "http://127.0.0.1:%d/api/v1/stores/%s/files/up%d.bin"
                                                                % (mb.port, mb.sid, i)], "upload", "MByte"))}
            for server in (first, second):
                os.sync()
                put[server]()
            os.unlink(up)
        order_log.append("upload: " + ", ".join("%s first" % o[0] for o in orders(UPLOAD_RUNS)))
        results.append(("upload %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(un),
                        SIZE_MB / statistics.median(um), 0.7))

        # small uploads: rounds with fresh bodies, alternating which server goes first; each
        # starts after a `sync`, with no writeback of an earlier test pending
        rn, rm = [], []
        small_url = {"nginx": lambda r: lambda i: "http://127.0.0.1:%d/dav/small/r%d/f%05d" % (ng.port, r, i),
                     "MByte": lambda r: lambda i: "http://127.0.0.1:%d/api/v1/stores/%s/files/small/r%d/f%05d?parents=true"
                     % (mb.port, mb.sid, r, i)}
        small_hdr = {"nginx": [], "MByte": ["Authorization: Bearer " + mb.token]}
        small_out = {"nginx": rn, "MByte": rm}
        for r, (first, second) in enumerate(orders(SMALL_ROUNDS)):
            for server in (first, second):
                bodies = small_bodies(os.path.join(work, "small-%s-%d" % (server, r)), SMALL_COUNT,
                                      1000 + 2 * r + (server == "MByte"))
                os.sync()
                small_out[server].append(small_uploads(small_url[server](r), small_hdr[server], bodies,
                                                       "small", server))
                shutil.rmtree(os.path.dirname(bodies[0]))
        order_log.append("small: " + ", ".join("%s first" % o[0] for o in orders(SMALL_ROUNDS)))
        results.append(("%d x 4 KiB uploads, %d clients" % (SMALL_COUNT, THREADS), "files/s", statistics.median(rn),
                        statistics.median(rm), 1.0))

        # first download right after upload: a fresh file each run, uploaded, then read at once
        fn, fm = [], []
        for i, (first, second) in enumerate(orders(FIRST_RUNS)):
            up = make_file(os.path.join(work, "first.bin"), 100 + i)
            for server in (first, second):
                if server == "nginx":
                    url = "http://127.0.0.1:%d/dav/first%d.bin" % (ng.port, i)
                    curl_time(["-T", up, url])
                    fn.append(curl_time([url], "first", "nginx"))
                else:
                    url = "http://127.0.0.1:%d/api/v1/stores/%s/files/first%d.bin" % (mb.port, mb.sid, i)
                    curl_time(auth + ["-T", up, url])
                    fm.append(curl_time(auth + [url], "first", "MByte"))
            os.unlink(up)
        order_log.append("first: " + ", ".join("%s first" % o[0] for o in orders(FIRST_RUNS)))
        results.append(("first download after upload, %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(fn),
                        SIZE_MB / statistics.median(fm), 0.5))

        # one client, many small files: one connection, one upload after the other; MByte strict
        # (the server above) and relaxed (a second mbyted), against the same nginx
        mr = MByte(work, "relaxed")
        try:
            one = {"nginx": [], "MByte": [], "MByte relaxed": []}
            servers = {"nginx": (ng, []), "MByte": (mb, small_hdr["MByte"]),
                       "MByte relaxed": (mr, ["Authorization: Bearer " + mr.token])}
            rot = ["nginx", "MByte", "MByte relaxed"]
            for r in range(SMALL_ROUNDS):
                for server in rot[r % 3:] + rot[:r % 3]:
                    srv, hdr = servers[server]
                    if server == "nginx":
                        url = lambda i, r=r: "http://127.0.0.1:%d/dav/one/r%d/f%05d" % (ng.port, r, i)
                    else:
                        url = lambda i, r=r, srv=srv: ("http://127.0.0.1:%d/api/v1/stores/%s/files/one/r%d/f%05d"
                                                       "?parents=true" % (srv.port, srv.sid, r, i))
                    bodies = small_bodies(os.path.join(work, "one-%s-%d" % (server.replace(" ", "-"), r)), ONE_COUNT,
                                          5000 + 3 * r + rot.index(server))
                    os.sync()
                    one[server].append(small_uploads(url, hdr, bodies, "one", server, parallel=1))
                    shutil.rmtree(os.path.dirname(bodies[0]))
            order_log.append("one: " + ", ".join(
                "/".join((rot[r % 3:] + rot[:r % 3])) for r in range(SMALL_ROUNDS)))
        finally:
            mr.stop()
        results.append(("%d x 4 KiB uploads, 1 client, strict" % ONE_COUNT, "files/s",
                        statistics.median(one["nginx"]), statistics.median(one["MByte"]), 0.5))
        results.append(("%d x 4 KiB uploads, 1 client, relaxed" % ONE_COUNT, "files/s",
                        statistics.median(one["nginx"]), statistics.median(one["MByte relaxed"]), 1.0))

        print("")
        print("| test | unit | nginx | MByte | MByte/nginx | goal | met |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for name, unit, n, m, goal in results:
            print("| %s | %s | %.1f | %.1f | %.2f | >= %.1f | %s |" % (name, unit, n, m, m / n, goal,
                                                                     "yes" if m / n >= goal else "NO"))
        print("")
        print("nginx never fsyncs an upload; MByte (durability: strict) makes every acknowledged upload durable (fsync of its chunks")
        print("and a synced LevelDB commit) before it answers; relaxed answers first and syncs within 50 ms. MByte's warm downloads take its verified-while-cached")
        print("path (a chunk file verified in the last ten minutes and wholly in the page cache is sent without")
        print("being read and hashed again); its first read of a chunk checks the chunk's hash.")
        print("")
        print("order: " + "; ".join(order_log))
        print("client CPU seconds (curl, all runs of a test): " + "; ".join(
            "%s nginx %.2f, MByte %.2f" % (t, CPU.spent[t].get("nginx", 0), CPU.spent[t].get("MByte", 0))
            for t in ("download", "upload", "small", "first")))
        print("raw seconds: nginx download %s, MByte download %s, nginx upload %s, MByte upload %s" % (
            ["%.3f" % x for x in dn], ["%.3f" % x for x in dm], ["%.3f" % x for x in un], ["%.3f" % x for x in um]))
        print("small uploads, files/s per round: nginx %s, MByte %s" % (["%.0f" % x for x in rn], ["%.0f" % x for x in rm]))
        print("first (untimed) download of the file placed before the start: nginx %.3f s, MByte %.3f s; then idle "
              "after %.1f s and %.1f s" % (warm + settled))
        print("first download after upload, seconds: nginx %s, MByte %s" % (["%.3f" % x for x in fn], ["%.3f" % x for x in fm]))
        print("1 client, files/s per round: nginx %s, MByte strict %s, MByte relaxed %s" % tuple(
            ["%.0f" % x for x in one[k]] for k in ("nginx", "MByte", "MByte relaxed")))
    except BaseException:
        # A failed request: show what the server said before the work dir goes away.
        log = os.path.join(work, "mbyted.log")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                sys.stderr.write("--- end of mbyted.log ---\n" + f.read()[-4000:])
        raise
    finally:
        for s in (mb, ng):
            if s:
                s.stop()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

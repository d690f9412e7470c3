#!/usr/bin/env python3
"""MByte vs nginx, side by side, on loopback, in one run (bench/run builds and calls this).

Peers:
  - nginx serving the benchmark file statically (sendfile) and taking uploads with its
    WebDAV PUT (dav_methods PUT) into the same kind of directory;
  - a release build of mbyted (build-release/mbyted) with a fresh data directory.
Both get the same bytes: the download file is written once, placed in nginx's root and
uploaded into MByte before timing starts.

Measures (the same client for both servers):
  download  curl -o /dev/null of a BENCH_SIZE_MB file, BENCH_RUNS runs, median
  upload    curl -T of a file of the same size, new bytes each run (MByte deduplicates), BENCH_UPLOAD_RUNS runs, median
  small     BENCH_SMALL_COUNT uploads of 4 KiB from 16 threads, each with one keep-alive
            http.client connection
Prints a table of throughputs and MByte/nginx ratios, with the goals of issue 3.

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (5), BENCH_UPLOAD_RUNS (3),
BENCH_SMALL_COUNT (10000), BENCH_THREADS (16), BENCH_DIR (a temp dir under /tmp),
MBYTED (build-release/mbyted), NGINX (nginx on PATH or /usr/sbin/nginx).
"""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
UPLOAD_RUNS = int(os.environ.get("BENCH_UPLOAD_RUNS", "3"))
SMALL_COUNT = int(os.environ.get("BENCH_SMALL_COUNT", "10000"))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "bench-admin-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


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
    def __init__(self, work):
        self.port = free_port()
        self.data = os.path.join(work, "mbyte-data")
        conf = os.path.join(work, "mbyte-conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
            f.write("log_level: info\n" + ("http_threads: %s\n" % os.environ["BENCH_HTTP_THREADS"] if os.environ.get("BENCH_HTTP_THREADS") else ""))
        env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % self.port, MBYTE_DATA=self.data,
                   MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
                   MBYTE_MODULE_DIR=os.path.join(ROOT, "build-release", "modules"))
        self.log = open(os.path.join(work, "mbyted.log"), "w")
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


def curl_time(args):
    out = subprocess.run(["curl", "-sS", "--fail", "-w", "%{time_total}", "-o", "/dev/null"] + args,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def small_uploads(port, path_of, headers, count, threads):
    """count PUTs of 4 KiB from `threads` threads, each on one keep-alive connection."""
    errors = []
    per = count // threads

    def worker(t):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = os.urandom(4096 - 8)
        try:
            for i in range(per):
                c.request("PUT", path_of(t, i), body=i.to_bytes(8, "little") + body, headers=headers)
                r = c.getresponse()
                r.read()
                if r.status not in (200, 201, 204):
                    errors.append(r.status)
                    return
        except OSError as e:
            errors.append(str(e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        sys.exit("small uploads failed: %r" % errors[:5])
    return per * threads / dt


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return "nproc %d, RAM %d MiB; %s; %s; Python %s" % (os.cpu_count(), mem, nginx_v, " ".join(curl_v.split()[:2]),
                                                       sys.version.split()[0])


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

        # download: one untimed read of each first, so both start warm (nginx's copy was just
        # written through the page cache; MByte's chunks with O_DIRECT, so not cached), then
        # alternate the servers
        warm = (curl_time(["http://127.0.0.1:%d/big.bin" % ng.port]), curl_time(auth + [mb_file]))
        dn, dm = [], []
        for _ in range(RUNS):
            dn.append(curl_time(["http://127.0.0.1:%d/big.bin" % ng.port]))
            dm.append(curl_time(auth + [mb_file]))
        results.append(("download %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(dn),
                        SIZE_MB / statistics.median(dm), 0.9))

        un, um = [], []
        for i in range(UPLOAD_RUNS):
            up = make_file(os.path.join(work, "up.bin"), i + 1)
            un.append(curl_time(["-T", up, "http://127.0.0.1:%d/dav/up%d.bin" % (ng.port, i)]))
            um.append(curl_time(auth + ["-T", up, "http://127.0.0.1:%d/api/v1/stores/%s/files/up%d.bin"
                                        % (mb.port, mb.sid, i)]))
            os.unlink(up)
        results.append(("upload %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(un),
                        SIZE_MB / statistics.median(um), 0.7))

        # Each server starts the small uploads with no dirty pages of an earlier test still being
        # written back: nginx's 1 GiB PUTs leave gigabytes in the page cache, and that writeback
        # would otherwise fall on whoever runs next (MByte's fsyncs wait behind it, nginx's
        # writes do not), which decided the ratio more than either server did.
        os.sync()
        rn = small_uploads(ng.port, lambda t, i: "/dav/small/t%02d/f%05d" % (t, i), {}, SMALL_COUNT, THREADS)
        os.sync()
        rm = small_uploads(mb.port, lambda t, i: "/api/v1/stores/%s/files/small/t%02d/f%05d?parents=true"
                           % (mb.sid, t, i), {"Authorization": "Bearer " + mb.token}, SMALL_COUNT, THREADS)
        results.append(("%d x 4 KiB uploads" % SMALL_COUNT, "files/s", rn, rm, 1.0))

        print("")
        print("| test | unit | nginx | MByte | MByte/nginx | goal | met |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for name, unit, n, m, goal in results:
            print("| %s | %s | %.1f | %.1f | %.2f | >= %.1f | %s |" % (name, unit, n, m, m / n, goal,
                                                                     "yes" if m / n >= goal else "NO"))
        print("")
        print("raw seconds: nginx download %s, MByte download %s, nginx upload %s, MByte upload %s" % (
            ["%.3f" % x for x in dn], ["%.3f" % x for x in dm], ["%.3f" % x for x in un], ["%.3f" % x for x in um]))
        print("first (untimed) download: nginx %.3f s, MByte %.3f s" % warm)
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

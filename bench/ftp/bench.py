#!/usr/bin/env python3
"""MByte's FTP module vs vsftpd, side by side, on loopback, in one run (bench/ftp/run builds and
calls this). Plain FTP, passive mode, the same clients for both servers.

Peers:
  - vsftpd (Debian), standalone (listen=YES) on a free loopback port with a temporary config:
    anonymous login with uploads allowed into <work>/vsftpd-root/pub, its own passive range.
    It runs as root (it needs root to drop privileges to its `ftp` user, as Debian runs it);
    the chroot jail (secure_chroot_dir) is an empty directory in the work dir, so nothing
    under /etc or /var is read or touched except the package's binary and the `ftp` user.
  - a release build of mbyted (build-release/mbyted) with the ftp module, a fresh data
    directory, logged in as admin over plain FTP (allowed on loopback).
Both get the same bytes: every upload run sends a file of its own random bytes (so MByte's
content-addressed store cannot skip a write by deduplication), and the download file is
placed in vsftpd's directory and uploaded into MByte before timing starts.

Measures:
  RETR      curl -o /dev/null of a BENCH_SIZE_MB file, BENCH_RUNS runs alternating, median,
            after one untimed read from each (MByte writes chunks with O_DIRECT, so its copy
            is not in the page cache after the upload; vsftpd's is)
  RETR on one CPU
            the same with both servers and curl pinned to CPU 0 (taskset), BENCH_PINNED_RUNS
            runs alternating, median: the CPU time per transfer, without two-CPU scheduling
            noise (informational, no goal)
  STOR      curl -T of a fresh BENCH_SIZE_MB file, BENCH_UPLOAD_RUNS runs alternating, median
  small     BENCH_SMALL_COUNT STORs of 4 KiB, then RETRs of them, from BENCH_THREADS ftplib
            sessions (logged in before the clock starts; one PASV data connection per file),
            BENCH_SMALL_ROUNDS rounds alternating the servers (fresh bodies each), median;
            and the same STORs from one session once (latency per file, no overlap)
Durability differs: MByte answers 226 to a STOR only after the bytes and the metadata are
fsynced; vsftpd never fsyncs.

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (25), BENCH_PINNED_RUNS (7), BENCH_UPLOAD_RUNS (5),
BENCH_SMALL_COUNT (1000), BENCH_SMALL_ROUNDS (3), BENCH_THREADS (8), BENCH_DIR (a temp dir under /tmp, kept when given),
MBYTED (build-release/mbyted), VSFTPD (vsftpd on PATH or /usr/sbin/vsftpd).
"""
import ftplib
import io
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import ROOT, PASSWORD, free_port, wait_port  # noqa: E402

SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "25"))
PINNED_RUNS = int(os.environ.get("BENCH_PINNED_RUNS", "7"))
UPLOAD_RUNS = int(os.environ.get("BENCH_UPLOAD_RUNS", "5"))
SMALL_ROUNDS = int(os.environ.get("BENCH_SMALL_ROUNDS", "3"))
SMALL_COUNT = int(os.environ.get("BENCH_SMALL_COUNT", "1000"))
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
VSFTPD = os.environ.get("VSFTPD") or shutil.which("vsftpd") or "/usr/sbin/vsftpd"


def pasv_range():
    """100 passive ports of one's own, away from the ephemeral range's busiest part."""
    base = random.randrange(20000, 30000, 100)
    return base, base + 99


class Vsftpd:
    name = "vsftpd"
    user = ("anonymous", "bench@")

    def __init__(self, work):
        self.port = free_port()
        self.dir = os.path.join(work, "vsftpd")
        self.root = os.path.join(self.dir, "root")  # the anonymous chroot: must not be writable
        self.empty = os.path.join(self.dir, "empty")
        self.pub = os.path.join(self.root, "pub")
        for d in (self.root, self.empty, self.pub):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        ftp = pwd.getpwnam("ftp")
        os.chown(self.pub, ftp.pw_uid, ftp.pw_gid)
        lo, hi = pasv_range()
        conf = os.path.join(self.dir, "vsftpd.conf")
        with open(conf, "w") as f:
            f.write("""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=%(port)d
background=NO
anonymous_enable=YES
no_anon_password=YES
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
anon_root=%(root)s
secure_chroot_dir=%(empty)s
pasv_enable=YES
pasv_min_port=%(lo)d
pasv_max_port=%(hi)d
pasv_address=127.0.0.1
max_clients=0
max_per_ip=0
xferlog_enable=NO
dirmessage_enable=NO
seccomp_sandbox=NO
""" % {"port": self.port, "root": self.root, "empty": self.empty, "lo": lo, "hi": hi})
        self.proc = subprocess.Popen([VSFTPD, conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "w"))
        wait_port(self.port, self.proc, "vsftpd")

    def url(self, name):
        return "ftp://127.0.0.1:%d/pub/%s" % (self.port, name)

    def path(self, name):
        return "pub/" + name

    def curl_auth(self):
        return []  # curl logs in as anonymous by itself

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


class MByteFtp:
    name = "MByte"
    user = ("admin", PASSWORD)

    def __init__(self, work):
        self.http_port = free_port()
        self.port = free_port()  # FTP
        data = os.path.join(work, "mbyte-data")
        conf = os.path.join(work, "mbyte-conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
            f.write("log_level: warn\nmodules:\n  ftp: true\n")
        with open(os.path.join(conf, "ftp.yaml"), "w") as f:
            f.write("max_sessions_per_user: 0\nmax_sessions_per_ip: 0\n")
        env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % self.http_port, MBYTE_DATA=data,
                   MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
                   MBYTE_MODULE_DIR=os.path.join(os.path.dirname(MBYTED), "modules"),
                   MBYTE_FTP_LISTEN="127.0.0.1:%d" % self.port, MBYTE_FTP_PASV_PORTS="%d-%d" % pasv_range())
        self.log = open(os.path.join(work, "mbyted.log"), "w")
        self.proc = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.http_port, self.proc, "mbyted")
        wait_port(self.port, self.proc, "mbyted's FTP module")

    def url(self, name):
        return "ftp://127.0.0.1:%d/Home/%s" % (self.port, name)

    def path(self, name):
        return "/Home/" + name

    def curl_auth(self):
        return ["-u", "%s:%s" % self.user]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def random_file(path, mb):
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))


def sessions(srv, n):
    out = []
    for _ in range(n):
        f = ftplib.FTP(timeout=120)
        f.connect("127.0.0.1", srv.port)
        f.login(*srv.user)
        out.append(f)
    return out


def small_files(srv, bodies, threads, prefix):
    """STOR every body, then RETR it back, from `threads` logged-in sessions; returns
    (STOR files/s, RETR files/s). Logins happen before the clock starts."""
    conns = sessions(srv, threads)
    errors = []
    rates = []
    for op in ("STOR", "RETR"):
        barrier = threading.Barrier(threads + 1)

        def worker(t):
            f = conns[t]
            barrier.wait()
            try:
                for i in range(t, len(bodies), threads):
                    name = srv.path("%s%05d" % (prefix, i))
                    if op == "STOR":
                        f.storbinary("STOR " + name, io.BytesIO(bodies[i]))
                    else:
                        got = io.BytesIO()
                        f.retrbinary("RETR " + name, got.write)
                        if got.getvalue() != bodies[i]:
                            errors.append("%s read back other bytes for %s" % (srv.name, name))
                            return
            except (OSError, ftplib.Error) as e:
                errors.append("%s %s: %r" % (srv.name, op, e))

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        rates.append(len(bodies) / (time.perf_counter() - t0))
        if errors:
            sys.exit("small files failed: %r" % errors[:5])
    for f in conns:
        f.quit()
    return rates


def rates(xs):
    return " ".join("%.0f" % x for x in xs)


def pin(pid, cpus):
    """Every thread of process pid (and what it forks later) runs on cpus only."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, stdout=subprocess.DEVNULL)


def curl_ftp(srv, args, expect, pre=()):
    """curl's seconds for one transfer, checking that every byte went through."""
    out = subprocess.run(list(pre) + ["curl", "-sS", "--fail", "-w", "%{time_total} %{size_download} %{size_upload}",
                          "-o", "/dev/null"] + srv.curl_auth() + args, capture_output=True, text=True)
    if out.returncode:
        sys.exit("curl %s failed against %s: %s" % (args, srv.name, out.stderr.strip()))
    secs, down, up = out.stdout.split()
    if max(int(float(down)), int(float(up))) != expect:
        sys.exit("curl %s against %s moved %s/%s bytes, not %d" % (args, srv.name, down, up, expect))
    return float(secs)


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    # vsftpd -v prints its version on file descriptor 0
    vs = subprocess.run(["sh", "-c", '"$0" -v 0>&1', VSFTPD], capture_output=True, text=True)
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return "nproc %d, RAM %d MiB; %s; %s; Python %s; load %s" % (
        os.cpu_count(), mem, (vs.stdout + vs.stderr).strip(), " ".join(curl_v.split()[:2]), sys.version.split()[0],
        " ".join("%.2f" % x for x in os.getloadavg()))


def main():
    if os.geteuid() != 0:
        sys.exit("bench/ftp needs root: vsftpd drops privileges to its ftp user only when started as root")
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-ftpbench-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    size = SIZE_MB << 20
    print("# MByte FTP vs vsftpd — %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print("# %s" % machine())
    print("# file %d MiB, %d RETR runs, %d STOR runs, %d small files x 4 KiB from %d sessions; work dir %s"
          % (SIZE_MB, RUNS, UPLOAD_RUNS, SMALL_COUNT, THREADS, work))
    vs = mb = None
    try:
        vs, mb = Vsftpd(work), MByteFtp(work)
        srcs = [os.path.join(work, "src%d.bin" % i) for i in range(UPLOAD_RUNS + 1)]
        for s in srcs:
            random_file(s, SIZE_MB)
        shutil.copyfile(srcs[0], os.path.join(vs.pub, "big.bin"))
        curl_ftp(mb, ["-T", srcs[0], mb.url("big.bin")], size)
        results = []
        raw = {}

        # RETR: one untimed read of each first, so both start warm: vsftpd's copy was just
        # written through the page cache, MByte's chunks with O_DIRECT (not cached), which
        # made MByte's first run a read from the disk. Then alternate the servers.
        warm = (curl_ftp(vs, [vs.url("big.bin")], size), curl_ftp(mb, [mb.url("big.bin")], size))
        rv, rm = [], []
        for _ in range(RUNS):
            rv.append(curl_ftp(vs, [vs.url("big.bin")], size))
            rm.append(curl_ftp(mb, [mb.url("big.bin")], size))
        results.append(("RETR %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(rv),
                        SIZE_MB / statistics.median(rm), 0.9))
        raw["RETR"] = (rv, rm)
        raw["first RETR (untimed)"] = ([warm[0]], [warm[1]])

        # The same RETRs with the server and curl on one CPU: the time is then the CPU both
        # spend per GiB, without the scheduler's noise of two CPUs (which of the two runs
        # the sender, and whether curl shares its CPU). Not a goal: it shows the cost.
        if os.cpu_count() > 1:
            every = "0-%d" % (os.cpu_count() - 1)
            pv, pm = [], []
            try:
                pin(vs.proc.pid, "0")
                pin(mb.proc.pid, "0")
                for _ in range(PINNED_RUNS):
                    pv.append(curl_ftp(vs, [vs.url("big.bin")], size, ("taskset", "-c", "0")))
                    pm.append(curl_ftp(mb, [mb.url("big.bin")], size, ("taskset", "-c", "0")))
            finally:
                pin(vs.proc.pid, every)
                pin(mb.proc.pid, every)
            results.append(("RETR %d MiB, server and client on one CPU" % SIZE_MB, "MiB/s",
                            SIZE_MB / statistics.median(pv), SIZE_MB / statistics.median(pm), None))
            raw["RETR on one CPU"] = (pv, pm)

        sv, sm = [], []
        for i in range(UPLOAD_RUNS):
            sv.append(curl_ftp(vs, ["-T", srcs[i + 1], vs.url("up%d.bin" % i)], size))
            sm.append(curl_ftp(mb, ["-T", srcs[i + 1], mb.url("up%d.bin" % i)], size))
        results.append(("STOR %d MiB" % SIZE_MB, "MiB/s", SIZE_MB / statistics.median(sv),
                        SIZE_MB / statistics.median(sm), 0.9))
        raw["STOR"] = (sv, sm)

        # Small files: SMALL_ROUNDS rounds alternating the servers, each with fresh bodies
        # (the same for both), median of the rates.
        small = {"vs": ([], []), "mb": ([], [])}
        for r in range(SMALL_ROUNDS):
            bodies = [os.urandom(4096) for _ in range(SMALL_COUNT)]
            for key, srv in (("vs", vs), ("mb", mb)):
                os.sync()  # no dirty pages of earlier tests being written back under this one
                st, rt = small_files(srv, bodies, THREADS, "s%d_" % r)
                small[key][0].append(st)
                small[key][1].append(rt)
        for i, op in enumerate(("STOR", "RETR")):
            results.append(("%d x 4 KiB %s, %d sessions" % (SMALL_COUNT, op, THREADS), "files/s",
                            statistics.median(small["vs"][i]), statistics.median(small["mb"][i]), 1.0))
        small_raw = "raw small files/s: STOR vsftpd %s, MByte %s; RETR vsftpd %s, MByte %s" % (
            rates(small["vs"][0]), rates(small["mb"][0]), rates(small["vs"][1]), rates(small["mb"][1]))
        one = [os.urandom(4096) for _ in range(SMALL_COUNT)]
        v1, _ = small_files(vs, one, 1, "o")
        m1, _ = small_files(mb, one, 1, "o")
        results.append(("%d x 4 KiB STOR, 1 session" % SMALL_COUNT, "files/s", v1, m1, None))

        print("")
        print("| test | unit | vsftpd | MByte | MByte/vsftpd | goal | met |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for name, unit, v, m, goal in results:
            print("| %s | %s | %.1f | %.1f | %.2f | %s | %s |" % (
                name, unit, v, m, m / v, ">= %.1f" % goal if goal else "-",
                ("yes" if m / v >= goal else "NO") if goal else "-"))
        print("")
        for k, (v, m) in raw.items():
            print("raw %s seconds: vsftpd %s, MByte %s" % (k, " ".join("%.3f" % x for x in v),
                                                         " ".join("%.3f" % x for x in m)))
        print(small_raw)
        print("load after: %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    finally:
        for s in (mb, vs):
            if s:
                s.stop()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""MByte's FTP module vs vsftpd, side by side, on loopback, in one run (bench/ftp/run builds and
calls this). Passive mode, the same clients for both servers.

Peers:
  - vsftpd (Debian), standalone (listen=YES) on a free loopback port with a temporary config.
    Both servers check a password: vsftpd logs in a local account (BENCH_USER, made by
    bench/ftp/setup.sh with the same password as MByte's admin, checked through PAM) chrooted
    to <work>/vsftpd/root, uploads into its pub/. TLS is on (ssl_enable=YES, session reuse
    required as MByte requires it) with the same certificate as MByte, optional for plain rows.
    It runs as root (it needs root to drop privileges); the chroot jail (secure_chroot_dir) is
    an empty directory in the work dir.
  - a release build of mbyted (build-release/mbyted) with the ftp module, a fresh data
    directory, logged in as admin (plain FTP is allowed on loopback), the same certificate.
Both get the same bytes: every upload run sends files of their own random bytes (so MByte's
content-addressed store cannot skip a write by deduplication), and download files are placed in
vsftpd's directory and uploaded into MByte before timing starts.

Order: the server that goes first alternates run by run (and round by round) in every test;
the output prints the order ("V" vsftpd first, "M" MByte first). Every timed upload starts after
a sync, so neither server pays for dirty pages the other (or an earlier test) left.

Measures (median of the runs; client CPU time = user + system of the client per run, median):
  RETR      curl -o /dev/null of a BENCH_SIZE_MB file, BENCH_RUNS runs, after one untimed read from
            each (MByte writes chunks with O_DIRECT, so its copy is not in the page cache after the
            upload; vsftpd's is) and a wait until mbyted is idle (bench.settle)
  RETR on one CPU
            the same with both servers and curl pinned to CPU 0 (taskset), BENCH_PINNED_RUNS runs:
            the CPU time per transfer, without two-CPU scheduling noise (informational, no goal)
  STOR      curl -T of a fresh BENCH_SIZE_MB file, BENCH_UPLOAD_RUNS runs
  small     BENCH_SMALL_COUNT STORs of 4 KiB, then RETRs of them, from BENCH_THREADS ftplib
            sessions (logged in before the clock starts; one PASV data connection per file),
            BENCH_SMALL_ROUNDS rounds (fresh bodies each)
  1 session BENCH_SMALL_COUNT STORs of 4 KiB from one session, one after the other, BENCH_SMALL_ROUNDS
            rounds: MByte with durability: strict (the default) and a second mbyted with relaxed
  first RETR
            a fresh BENCH_SIZE_MB file STORed and at once RETRieved (timed), BENCH_FIRST_RUNS runs:
            MByte wrote its chunks with O_DIRECT, vsftpd's copy is in the page cache
  lftp FTPS BENCH_LFTP_COUNT files of 4 KiB with lftp's defaults over explicit FTPS (AUTH TLS,
            PROT P: a TLS data connection per file): `mirror` down and `mirror -R` up (fresh
            bodies each round), BENCH_LFTP_ROUNDS rounds; lftp trusts the certificate as its CA file
Durability and checks differ: MByte answers 226 to a STOR only after the bytes and the metadata
are fsynced, vsftpd never fsyncs; MByte verifies every chunk it sends (once per stay in the page
cache: warm downloads take its verified-while-cached path), vsftpd sends what is on disk.

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (25), BENCH_PINNED_RUNS (7), BENCH_UPLOAD_RUNS (5),
BENCH_SMALL_COUNT (1000), BENCH_SMALL_ROUNDS (3), BENCH_THREADS (8), BENCH_FIRST_RUNS (3), BENCH_LFTP_COUNT (600),
BENCH_LFTP_ROUNDS (3), BENCH_DIR (a temp dir under /tmp, kept when given),
MBYTED (build-release/mbyted), VSFTPD (vsftpd on PATH or /usr/sbin/vsftpd).
"""
import ftplib
import io
import os
import pwd
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import ROOT, PASSWORD, free_port, host, settle, wait_port  # noqa: E402

SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "25"))
PINNED_RUNS = int(os.environ.get("BENCH_PINNED_RUNS", "7"))
UPLOAD_RUNS = int(os.environ.get("BENCH_UPLOAD_RUNS", "5"))
SMALL_ROUNDS = int(os.environ.get("BENCH_SMALL_ROUNDS", "3"))
SMALL_COUNT = int(os.environ.get("BENCH_SMALL_COUNT", "1000"))
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
LFTP_COUNT = int(os.environ.get("BENCH_LFTP_COUNT", "600"))
LFTP_ROUNDS = int(os.environ.get("BENCH_LFTP_ROUNDS", "3"))
FIRST_RUNS = int(os.environ.get("BENCH_FIRST_RUNS", "3"))
BENCH_USER = "mbytebench"  # a local account bench/ftp/setup.sh creates, password PASSWORD
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
VSFTPD = os.environ.get("VSFTPD") or shutil.which("vsftpd") or "/usr/sbin/vsftpd"


def pasv_range():
    """100 passive ports of one's own, away from the ephemeral range's busiest part."""
    base = random.randrange(20000, 30000, 100)
    return base, base + 99


class Vsftpd:
    name = "vsftpd"
    user = (BENCH_USER, PASSWORD)

    def __init__(self, work, cert, key):
        self.port = free_port()
        self.dir = os.path.join(work, "vsftpd")
        self.root = os.path.join(self.dir, "root")  # the user's chroot: must not be writable
        self.empty = os.path.join(self.dir, "empty")
        self.pub = os.path.join(self.root, "pub")
        for d in (self.root, self.empty, self.pub):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        try:
            u = pwd.getpwnam(BENCH_USER)
        except KeyError:
            sys.exit("no local account %s: run bench/ftp/setup.sh" % BENCH_USER)
        os.chown(self.pub, u.pw_uid, u.pw_gid)
        lo, hi = pasv_range()
        conf = os.path.join(self.dir, "vsftpd.conf")
        with open(conf, "w") as f:
            f.write("""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=%(port)d
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root=%(root)s
chroot_local_user=YES
pam_service_name=vsftpd
userlist_enable=NO
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
ssl_enable=YES
rsa_cert_file=%(cert)s
rsa_private_key_file=%(key)s
ssl_ciphers=HIGH
force_local_logins_ssl=NO
force_local_data_ssl=NO
require_ssl_reuse=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
""" % {"port": self.port, "root": self.root, "empty": self.empty, "lo": lo, "hi": hi, "cert": cert, "key": key})
        self.proc = subprocess.Popen([VSFTPD, conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "w"))
        wait_port(self.port, self.proc, "vsftpd")

    def url(self, name):
        return "ftp://127.0.0.1:%d/pub/%s" % (self.port, name)

    def path(self, name):
        return "/pub/" + name

    def curl_auth(self):
        return ["-u", "%s:%s" % self.user]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


class MByteFtp:
    name = "MByte"
    user = ("admin", PASSWORD)

    def __init__(self, work, cert, key, durability="strict"):
        self.http_port = free_port()
        self.port = free_port()  # FTP
        tag = "" if durability == "strict" else "-" + durability
        self.name = "MByte" + (" " + durability if tag else "")
        data = os.path.join(work, "mbyte-data" + tag)
        conf = os.path.join(work, "mbyte-conf" + tag)
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
            f.write("log_level: warn\ndurability: %s\nmodules:\n  ftp: true\n" % durability)
        with open(os.path.join(conf, "ftp.yaml"), "w") as f:
            f.write("max_sessions_per_user: 0\nmax_sessions_per_ip: 0\ntls_cert: \"%s\"\ntls_key: \"%s\"\n"
                    % (cert, key))
        env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % self.http_port, MBYTE_DATA=data,
                   MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
                   MBYTE_MODULE_DIR=os.path.join(os.path.dirname(MBYTED), "modules"),
                   MBYTE_FTP_LISTEN="127.0.0.1:%d" % self.port, MBYTE_FTP_PASV_PORTS="%d-%d" % pasv_range())
        self.log = open(os.path.join(work, "mbyted%s.log" % tag), "w")
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


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def orders(n):
    """Which server goes first in run i: vsftpd in even runs, MByte in odd ones."""
    return [i % 2 for i in range(n)]


def pair(vs, mb, i):
    return (vs, mb) if i % 2 == 0 else (mb, vs)


def order_text(n):
    return " ".join("V" if o == 0 else "M" for o in orders(n))


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
    (STOR files/s, RETR files/s, STOR client CPU s, RETR client CPU s). Logins happen before
    the clock starts; the client is this process (ftplib), so its CPU time is ours."""
    conns = sessions(srv, threads)
    errors = []
    rates, cpus = [], []
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
        if op == "STOR":
            os.sync()
        barrier.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for t in ts:
            t.join()
        rates.append(len(bodies) / (time.perf_counter() - t0))
        cpus.append(time.process_time() - c0)
        if errors:
            sys.exit("small files failed: %r" % errors[:5])
    for f in conns:
        f.quit()
    return rates + cpus


def rates(xs):
    return " ".join("%.0f" % x for x in xs)


def pin(pid, cpus):
    """Every thread of process pid (and what it forks later) runs on cpus only."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, stdout=subprocess.DEVNULL)


def curl_ftp(srv, args, expect, pre=()):
    """curl's seconds and CPU seconds for one transfer, checking that every byte went through."""
    if "-T" in args:
        os.sync()
    c0 = children_cpu()
    out = subprocess.run(list(pre) + ["curl", "-sS", "--fail", "-w", "%{time_total} %{size_download} %{size_upload}",
                          "-o", "/dev/null"] + srv.curl_auth() + args, capture_output=True, text=True)
    cpu = children_cpu() - c0
    if out.returncode:
        sys.exit("curl %s failed against %s: %s" % (args, srv.name, out.stderr.strip()))
    secs, down, up = out.stdout.split()
    if max(int(float(down)), int(float(up))) != expect:
        sys.exit("curl %s against %s moved %s/%s bytes, not %d" % (args, srv.name, down, up, expect))
    return float(secs), cpu


def lftp(srv, cert, command):
    """lftp with its defaults (explicit FTPS, PROT P: a TLS data connection per file), trusting
    the benchmark's certificate as its CA file; seconds and client CPU seconds."""
    script = ("set ssl:ca-file '%s'; set ssl:verify-certificate no; set net:max-retries 1; "
              "open -u %s,%s -p %d 127.0.0.1; %s; bye" % (cert, srv.user[0], srv.user[1], srv.port, command))
    c0, t0 = children_cpu(), time.perf_counter()
    out = subprocess.run(["lftp", "-c", script], capture_output=True, text=True)
    secs, cpu = time.perf_counter() - t0, children_cpu() - c0
    if out.returncode or out.stderr.strip():
        sys.exit("lftp %s against %s failed (%d): %s" % (command, srv.name, out.returncode, out.stderr.strip()[-2000:]))
    return secs, cpu


def same_tree(bodies, folder, what):
    for name, data in bodies.items():
        with open(os.path.join(folder, name), "rb") as f:
            if f.read() != data:
                sys.exit("%s: %s came back with other bytes" % (what, name))


def make_cert(work):
    """One self-signed P-256 certificate for both servers."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def machine():
    # vsftpd -v prints its version on file descriptor 0
    vs = subprocess.run(["sh", "-c", '"$0" -v 0>&1', VSFTPD], capture_output=True, text=True)
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return "%s; %s; %s; Python %s; load %s" % (
        host(), (vs.stdout + vs.stderr).strip(), " ".join(curl_v.split()[:2]), sys.version.split()[0],
        " ".join("%.2f" % x for x in os.getloadavg()))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def table(title, results, notes):
    print("")
    print("### " + title)
    print("")
    print("| test | unit | vsftpd | MByte | MByte/vsftpd | goal | met | client CPU s vsftpd | client CPU s MByte | order |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |")
    for r in results:
        v, m, goal = r["v"], r["m"], r.get("goal")
        print("| %s | %s | %.1f | %.1f | %.2f | %s | %s | %.3f | %.3f | %s |" % (
            r["name"], r["unit"], v, m, m / v, ">= %.1f" % goal if goal else "-",
            ("yes" if m / v >= goal else "NO") if goal else "-", med(r["cv"]), med(r["cm"]), r["order"]))
    print("")
    for n in notes:
        print("- " + n)


NOTES = [
    "order: the server that went first in each run, V = vsftpd, M = MByte (they alternate; Mr = MByte relaxed); "
    "a sync ran before every timed upload.",
    "vsftpd never fsyncs: its 226 after an upload means the bytes are in the page cache. MByte (durability: "
    "strict) fsyncs the chunks and commits the metadata with a synced write before its 226; relaxed syncs the "
    "metadata within 50 ms after it.",
    "MByte's warm downloads take its verified-while-cached path: a chunk verified in the last ten minutes and "
    "still wholly in the page cache is sent without being read and hashed again (docs/storage.md); a cold one is "
    "verified on the way out. vsftpd sends what is on disk, unchecked.",
    "Both servers check a password at every login (curl logs in per transfer): vsftpd a local account through PAM "
    "(SHA-512 crypt, 1000 rounds, about 0.5 ms), MByte its argon2id hash once, then its remembered match "
    "(login_cache_ttl).",
]


def main():
    if os.geteuid() != 0:
        sys.exit("bench/ftp needs root: vsftpd drops privileges to the benchmark account only when started as root")
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-ftpbench-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    size = SIZE_MB << 20
    print("# MByte FTP vs vsftpd — %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print("# %s" % machine())
    print("# file %d MiB, %d RETR runs, %d STOR runs, %d small files x 4 KiB from %d sessions, %d lftp FTPS files "
          "x %d rounds; work dir %s" % (SIZE_MB, RUNS, UPLOAD_RUNS, SMALL_COUNT, THREADS, LFTP_COUNT, LFTP_ROUNDS,
                                        work))
    vs = mb = None
    try:
        cert, key = make_cert(work)
        vs, mb = Vsftpd(work, cert, key), MByteFtp(work, cert, key)
        srcs = [os.path.join(work, "src%d.bin" % i) for i in range(UPLOAD_RUNS + 1)]
        for s in srcs:
            random_file(s, SIZE_MB)
        shutil.copyfile(srcs[0], os.path.join(vs.pub, "big.bin"))
        curl_ftp(mb, ["-T", srcs[0], mb.url("big.bin")], size)
        plain = []
        raw = {}

        # RETR: one untimed read of each first, so both start warm: vsftpd's copy was just
        # written through the page cache, MByte's chunks with O_DIRECT (not cached), which
        # made MByte's first run a read from the disk.
        warm = (curl_ftp(vs, [vs.url("big.bin")], size)[0], curl_ftp(mb, [mb.url("big.bin")], size)[0])
        settle(mb.proc.pid)  # mb-warm (chunk_read_direct) puts what that read went around into the cache
        t = {vs: [], mb: []}
        c = {vs: [], mb: []}
        for i in range(RUNS):
            for srv in pair(vs, mb, i):
                secs, cpu = curl_ftp(srv, [srv.url("big.bin")], size)
                t[srv].append(secs)
                c[srv].append(cpu)
        plain.append({"name": "RETR %d MiB" % SIZE_MB, "unit": "MiB/s", "v": SIZE_MB / med(t[vs]),
                      "m": SIZE_MB / med(t[mb]), "goal": 0.9, "cv": c[vs], "cm": c[mb], "order": order_text(RUNS)})
        raw["RETR"] = (t[vs], t[mb])
        raw["first RETR (untimed)"] = ([warm[0]], [warm[1]])

        # The same RETRs with the server and curl on one CPU: the time is then the CPU both
        # spend per GiB, without the scheduler's noise of two CPUs. Not a goal: it shows the cost.
        if os.cpu_count() > 1:
            every = "0-%d" % (os.cpu_count() - 1)
            t = {vs: [], mb: []}
            c = {vs: [], mb: []}
            try:
                pin(vs.proc.pid, "0")
                pin(mb.proc.pid, "0")
                for i in range(PINNED_RUNS):
                    for srv in pair(vs, mb, i):
                        secs, cpu = curl_ftp(srv, [srv.url("big.bin")], size, ("taskset", "-c", "0"))
                        t[srv].append(secs)
                        c[srv].append(cpu)
            finally:
                pin(vs.proc.pid, every)
                pin(mb.proc.pid, every)
            plain.append({"name": "RETR %d MiB, server and client on one CPU" % SIZE_MB, "unit": "MiB/s",
                          "v": SIZE_MB / med(t[vs]), "m": SIZE_MB / med(t[mb]), "cv": c[vs], "cm": c[mb],
                          "order": order_text(PINNED_RUNS)})
            raw["RETR on one CPU"] = (t[vs], t[mb])

        t = {vs: [], mb: []}
        c = {vs: [], mb: []}
        for i in range(UPLOAD_RUNS):
            for srv in pair(vs, mb, i):
                secs, cpu = curl_ftp(srv, ["-T", srcs[i + 1], srv.url("up%d.bin" % i)], size)
                t[srv].append(secs)
                c[srv].append(cpu)
        plain.append({"name": "STOR %d MiB" % SIZE_MB, "unit": "MiB/s", "v": SIZE_MB / med(t[vs]),
                      "m": SIZE_MB / med(t[mb]), "goal": 0.9, "cv": c[vs], "cm": c[mb],
                      "order": order_text(UPLOAD_RUNS)})
        raw["STOR"] = (t[vs], t[mb])

        # Small files: rounds alternating which server goes first, fresh bodies each round
        # (the same for both).
        small = {vs: ([], [], [], []), mb: ([], [], [], [])}
        for r in range(SMALL_ROUNDS):
            bodies = [os.urandom(4096) for _ in range(SMALL_COUNT)]
            for srv in pair(vs, mb, r):
                for k, x in enumerate(small_files(srv, bodies, THREADS, "s%d_" % r)):
                    small[srv][k].append(x)
        for i, op in enumerate(("STOR", "RETR")):
            plain.append({"name": "%d x 4 KiB %s, %d sessions" % (SMALL_COUNT, op, THREADS), "unit": "files/s",
                          "v": med(small[vs][i]), "m": med(small[mb][i]), "goal": 1.0, "cv": small[vs][i + 2],
                          "cm": small[mb][i + 2], "order": order_text(SMALL_ROUNDS)})
        small_raw = "raw small files/s: STOR vsftpd %s, MByte %s; RETR vsftpd %s, MByte %s" % (
            rates(small[vs][0]), rates(small[mb][0]), rates(small[vs][1]), rates(small[mb][1]))
        # One session, one STOR after the other: MByte strict and relaxed (a second mbyted),
        # the three servers taking turns at going first.
        mr = MByteFtp(work, cert, key, "relaxed")
        try:
            rot = [vs, mb, mr]
            single = {s: ([], []) for s in rot}
            turns = []
            for r in range(SMALL_ROUNDS):
                one = [os.urandom(4096) for _ in range(SMALL_COUNT)]
                turn = rot[r % 3:] + rot[:r % 3]
                turns.append("/".join({vs: "V", mb: "M", mr: "Mr"}[s] for s in turn))
                for srv in turn:
                    stor, _, cpu, _ = small_files(srv, one, 1, "o%d_" % r)
                    single[srv][0].append(stor)
                    single[srv][1].append(cpu)
        finally:
            mr.stop()
        for srv, goal in ((mb, 0.5), (mr, 1.0)):
            plain.append({"name": "%d x 4 KiB STOR, 1 session, %s" % (SMALL_COUNT, "relaxed" if srv is mr else "strict"),
                          "unit": "files/s", "v": med(single[vs][0]), "m": med(single[srv][0]), "goal": goal,
                          "cv": single[vs][1], "cm": single[srv][1], "order": " ".join(turns)})
        small_raw += "; 1 session STOR vsftpd %s, MByte strict %s, MByte relaxed %s" % (
            rates(single[vs][0]), rates(single[mb][0]), rates(single[mr][0]))

        # First RETR right after the STOR of a fresh file.
        t = {vs: [], mb: []}
        c = {vs: [], mb: []}
        for i in range(FIRST_RUNS):
            src = os.path.join(work, "first.bin")
            random_file(src, SIZE_MB)
            for srv in pair(vs, mb, i):
                curl_ftp(srv, ["-T", src, srv.url("first%d.bin" % i)], size)
                secs, cpu = curl_ftp(srv, [srv.url("first%d.bin" % i)], size)
                t[srv].append(secs)
                c[srv].append(cpu)
            os.unlink(src)
        plain.append({"name": "first RETR after STOR, %d MiB" % SIZE_MB, "unit": "MiB/s", "v": SIZE_MB / med(t[vs]),
                      "m": SIZE_MB / med(t[mb]), "goal": 0.5, "cv": c[vs], "cm": c[mb], "order": order_text(FIRST_RUNS)})
        raw["first RETR after STOR"] = (t[vs], t[mb])

        # lftp over explicit FTPS, a TLS data connection per file: mirror down (files placed
        # before the clock), then mirror -R up (fresh bodies each round).
        tls = []
        down = {vs: ([], []), mb: ([], [])}
        up = {vs: ([], []), mb: ([], [])}
        for r in range(LFTP_ROUNDS):
            bodies = {"f%04d.bin" % i: os.urandom(4096) for i in range(LFTP_COUNT)}
            local = os.path.join(work, "lftp-src-%d" % r)
            os.makedirs(local)
            for name, data in bodies.items():
                with open(os.path.join(local, name), "wb") as f:
                    f.write(data)
            folder = "lftp_down_%d" % r
            os.makedirs(os.path.join(vs.pub, folder))
            for name, data in bodies.items():
                with open(os.path.join(vs.pub, folder, name), "wb") as f:
                    f.write(data)
            conns = sessions(mb, 1)
            conns[0].mkd(mb.path(folder))
            for name, data in bodies.items():
                conns[0].storbinary("STOR %s/%s" % (mb.path(folder), name), io.BytesIO(data))
            conns[0].quit()
            for srv in pair(vs, mb, r):
                target = os.path.join(work, "lftp-down-%s-%d" % (srv.name, r))
                secs, cpu = lftp(srv, cert, "mirror %s %s" % (srv.path(folder), target))
                same_tree(bodies, target, "lftp mirror from %s" % srv.name)
                down[srv][0].append(secs)
                down[srv][1].append(cpu)
            for srv in pair(vs, mb, r + 1):  # the other server first this time
                fresh = os.path.join(work, "lftp-up-%s-%d" % (srv.name, r))
                os.makedirs(fresh)
                for name in bodies:
                    with open(os.path.join(fresh, name), "wb") as f:
                        f.write(os.urandom(4096))
                os.sync()
                secs, cpu = lftp(srv, cert, "mirror -R %s %s" % (fresh, srv.path("lftp_up_%d" % r)))
                up[srv][0].append(secs)
                up[srv][1].append(cpu)
        tls.append({"name": "lftp FTPS mirror down, %d x 4 KiB" % LFTP_COUNT, "unit": "files/s",
                    "v": LFTP_COUNT / med(down[vs][0]), "m": LFTP_COUNT / med(down[mb][0]), "goal": 1.0,
                    "cv": down[vs][1], "cm": down[mb][1], "order": order_text(LFTP_ROUNDS)})
        tls.append({"name": "lftp FTPS mirror -R up, %d x 4 KiB" % LFTP_COUNT, "unit": "files/s",
                    "v": LFTP_COUNT / med(up[vs][0]), "m": LFTP_COUNT / med(up[mb][0]), "goal": 1.0,
                    "cv": up[vs][1], "cm": up[mb][1],
                    "order": " ".join("V" if (r + 1) % 2 == 0 else "M" for r in range(LFTP_ROUNDS))})
        raw["lftp FTPS mirror down"] = (down[vs][0], down[mb][0])
        raw["lftp FTPS mirror -R up"] = (up[vs][0], up[mb][0])

        table("Plain FTP (curl, ftplib)", plain, NOTES)
        table("FTPS, explicit TLS (lftp with its defaults)", tls, NOTES)
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

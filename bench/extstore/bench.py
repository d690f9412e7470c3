#!/usr/bin/env python3
"""External storage (issue 21): upload and download of one BENCH_SIZE_MB file through MByte into a
store placed on S3, plain and encrypted, against rclone copying the same bytes to the same S3
service directly.

Peers, all on loopback and started here:
  - s3rver (tests/s3rver, npm), one bucket, the S3 service both sides write to;
  - a release mbyted (build-release/mbyted) with the s3 module, a store {"backend": "s3a"} and a store
    {"backend": "s3a", "encrypt": true} (a master key file made here);
  - rclone (Debian) with an s3 remote from RCLONE_CONFIG_* variables, the client a user would
    otherwise run against that service.
  - two redundancy sets over six more s3 backends on the same s3rver (prefixes set1/..set6/):
    {"copies": 2, "of": [e1, e2]} and {"erasure": {"data": 4, "parity": 2}, "of": [e1..e6]}.
Measures, BENCH_RUNS runs each, median: upload (curl -T into MByte / rclone copyto, new bytes
per run, so no side deduplicates) and download (curl -o /dev/null / rclone cat > /dev/null).
The order of the sides rotates run by run and is printed. Ratios: encrypted / plain (issue
21's goal >= 0.8x), plain / rclone, and erasure 4+2 / copies 2, in throughput; and the bytes
s3rver holds per side (erasure 4+2 should hold 1.5x the file, copies 2 twice it).

Environment: BENCH_SIZE_MB (1024), BENCH_RUNS (3), BENCH_DIR (a temp dir), MBYTED.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench import PASSWORD, api, free_port, host, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "1024"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
MBYTED = os.environ.get("MBYTED", os.path.join(ROOT, "build-release", "mbyted"))
S3RVER = os.path.join(ROOT, "tests", "s3rver", "serve.js")  # s3rver answering a PUT once it is written
BUCKET = "bench"


def timed(args, **kw):
    t = time.monotonic()
    subprocess.run(args, check=True, **kw)
    return time.monotonic() - t


def main():
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="mbyte-bench-extstore-")
    os.makedirs(work, exist_ok=True)
    s3dir = os.path.join(work, "s3rver")
    s3port = free_port()
    s3 = subprocess.Popen(["node", S3RVER, "-d", s3dir, "-a", "127.0.0.1", "-p", str(s3port), "--configure-bucket",
                           BUCKET, "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(s3port, s3, "s3rver")
    conf = os.path.join(work, "conf")
    os.makedirs(conf, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "conf.d", "store-template.yaml"), conf)  # what taskmgr makes stores from
    with open(os.path.join(conf, "s3.yaml"), "w") as f:
        f.write("backends:\n  s3a:\n    endpoint: http://127.0.0.1:%d\n    region: us-east-1\n    bucket: %s\n"
                "    access_key: S3RVER\n    secret_key: S3RVER\n    path_style: true\n    prefix: mbyte/\n"
                % (s3port, BUCKET))
        for i in range(1, 7):  # the redundancy sets' members: one bucket, a prefix each
            f.write("  e%d:\n    endpoint: http://127.0.0.1:%d\n    region: us-east-1\n    bucket: %s\n"
                    "    access_key: S3RVER\n    secret_key: S3RVER\n    path_style: true\n    prefix: set%d/\n"
                    % (i, s3port, BUCKET, i))
    keyfile = os.path.join(work, "master.key")
    with open(keyfile, "w") as f:
        f.write(os.urandom(32).hex())
    os.chmod(keyfile, 0o600)
    with open(os.path.join(conf, "mbyte.yaml"), "w") as f:
        f.write("log_level: info\nmaster_key: file:%s\nmodules:\n  taskmgr: true\n  s3: true\n" % keyfile)
    port = free_port()
    env = dict(os.environ, MBYTE_LISTEN="127.0.0.1:%d" % port, MBYTE_DATA=os.path.join(work, "data"),
               MBYTE_ADMIN_PASSWORD=PASSWORD, MBYTE_WEB_DIR=os.path.join(ROOT, "web"),
               MBYTE_MODULE_DIR=os.path.join(ROOT, "build-release", "modules"))
    log = open(os.path.join(work, "mbyted.log"), "w")
    mb = subprocess.Popen([MBYTED, "--config", conf], env=env, stdout=log, stderr=subprocess.STDOUT)
    rclone_env = dict(os.environ, RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Other",
                      RCLONE_CONFIG_B_ENDPOINT="http://127.0.0.1:%d" % s3port, RCLONE_CONFIG_B_ACCESS_KEY_ID="S3RVER",
                      RCLONE_CONFIG_B_SECRET_ACCESS_KEY="S3RVER", RCLONE_CONFIG_B_FORCE_PATH_STYLE="true")
    rclone_env.pop("AWS_CA_BUNDLE", None)
    try:
        wait_port(port, mb, "mbyted")
        _, login = api(port, "POST", "/api/v1/auth/login", {"username": "admin", "password": PASSWORD})
        token = login["token"]
        sids = {}
        members = ["e%d" % i for i in range(1, 7)]
        for side, placement in (("plain", {"backend": "s3a"}), ("encrypted", {"backend": "s3a", "encrypt": True}),
                                ("copies", {"copies": 2, "of": members[:2]}),
                                ("erasure", {"erasure": {"data": 4, "parity": 2}, "of": members})):
            st, made = api(port, "POST", "/api/v1/stores", {"name": side, "placement": placement}, token)
            assert st == 202, made
            deadline = time.time() + 60
            while (task := api(port, "GET", "/api/v1/tasks/%d" % made["task"], token=token)[1])["state"] != "done":
                assert time.time() < deadline and task["state"] not in ("failed", "cancelled"), task
                time.sleep(0.1)
            sids[side] = made["store"]
        src = os.path.join(work, "file.bin")
        sides = ["plain", "encrypted", "rclone", "copies", "erasure"]
        times = {t: {s: [] for s in sides} for t in ("upload", "download")}
        order_log = []
        urls = {s: "http://127.0.0.1:%d/api/v1/stores/%d/files/f.bin" % (port, sids[s]) for s in sids}
        auth = "Authorization: Bearer " + token
        for run in range(RUNS):
            with open(src, "wb") as f:  # new bytes each run: no side deduplicates
                for _ in range(SIZE_MB):
                    f.write(os.urandom(1 << 20))
            order = sides[run % len(sides):] + sides[:run % len(sides)]
            order_log.append("/".join(order))
            for side in order:
                subprocess.run(["sync"])
                if side != "rclone":
                    t = timed(["curl", "-sS", "--fail", "-o", "/dev/null", "-H", auth, "-T", src, urls[side]])
                else:
                    t = timed(["rclone", "-q", "copyto", src, "b:%s/direct/f.bin" % BUCKET], env=rclone_env)
                times["upload"][side].append(t)
            for side in order:
                if side != "rclone":
                    t = timed(["curl", "-sS", "--fail", "-o", "/dev/null", "-H", auth, urls[side]])
                else:
                    t = timed(["rclone", "-q", "cat", "b:%s/direct/f.bin" % BUCKET], env=rclone_env,
                              stdout=subprocess.DEVNULL)
                times["download"][side].append(t)
        print("bench/extstore: %d MiB, %d runs, orders %s" % (SIZE_MB, RUNS, ", ".join(order_log)))
        print("host: %s" % host())
        print("%-10s %12s %12s %12s %12s %12s %10s %12s %12s" % (
            "test", "plain MiB/s", "enc MiB/s", "rclone MiB/s", "copies MiB/s", "ec4+2 MiB/s", "enc/plain",
            "plain/rclone", "ec/copies"))
        for test in ("upload", "download"):
            m = {s: SIZE_MB / statistics.median(times[test][s]) for s in sides}
            print("%-10s %12.1f %12.1f %12.1f %12.1f %12.1f %9.2fx %11.2fx %11.2fx" % (
                test, m["plain"], m["encrypted"], m["rclone"], m["copies"], m["erasure"], m["encrypted"] / m["plain"],
                m["plain"] / m["rclone"], m["erasure"] / m["copies"]))
        # Every run on its own (a goal is judged on the median and on the lowest run).
        print("per run, MiB/s: upload plain/encrypted (ratio) copies/erasure (ratio) | download the same")
        for run in range(RUNS):
            r = {t: {s: SIZE_MB / times[t][s][run] for s in sides} for t in times}
            print("run %d: %s" % (run + 1, " | ".join(
                "%s %.1f/%.1f (%.2fx) %.1f/%.1f (%.2fx)" % (
                    t, r[t]["plain"], r[t]["encrypted"], r[t]["encrypted"] / r[t]["plain"], r[t]["copies"],
                    r[t]["erasure"], r[t]["erasure"] / r[t]["copies"]) for t in ("upload", "download"))))
        top = os.path.join(s3dir, BUCKET)
        held = {"plain": 0, "encrypted": 0, "rclone": 0, "copies": 0, "erasure": 0}
        for root, _, files in os.walk(top):
            for f in files:
                if f.endswith("._S3rver_object"):
                    rel = os.path.relpath(os.path.join(root, f), top)
                    side = ("rclone" if rel.startswith("direct/") else "encrypted" if rel.startswith("mbyte/e/")
                            else "erasure" if "/k4m2p" in "/" + rel else "copies" if "/k1m0p" in "/" + rel else "plain")
                    held[side] += os.path.getsize(os.path.join(root, f))
        print("bytes on s3rver (last version of each, plus older chunks not yet collected): %s" % held)
    finally:
        mb.terminate()
        mb.wait(60)
        log.close()
        s3.kill()
        s3.wait()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

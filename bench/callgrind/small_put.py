#!/usr/bin/env python3
"""Instructions per small upload, counted by callgrind (repeatable on a loaded machine, unlike
times): a release mbyted runs under valgrind --tool=callgrind with a temp data dir; after a
warm-up the counters are zeroed, N uploads of 4 KiB are sent by one curl on one keep-alive
connection, the counters are dumped and divided by N.

    bench/callgrind/small_put.py [--build build-release] [--count 200] [--mode api|webdav]

Prints the total instructions of mbyted's process per upload and the inclusive count of the
request-path functions named in docs/performance.md. Runs MByte alone: it counts, it does not
compare (bench/run compares with nginx)."""
import argparse, glob, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build-release"))
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--mode", choices=["api", "webdav"], default="api")
    a = ap.parse_args()
    os.environ["MBYTED"] = os.path.join(a.build, "mbyted")
    os.environ["MBYTE_MODULE_DIR"] = os.path.join(a.build, "modules")
    import harness
    out = tempfile.mkdtemp(prefix="mbyte-cg-")
    wrapper = os.path.join(out, "mbyted")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg.%%p "
                "%s \"$@\"\n" % (out, os.path.join(a.build, "mbyted")))
    os.chmod(wrapper, 0o755)
    harness.MBYTED = wrapper
    srv = harness.Server(modules={"webdav": a.mode == "webdav"})
    yaml = os.path.join(srv.confdir, "mbyte.yaml")
    with open(yaml) as f:
        text = f.read().replace("log_level: debug", "log_level: info")  # as installed
    with open(yaml, "w") as f:
        f.write(text)
    srv.start(wait=False)
    srv.wait_ready(timeout=300)
    try:
        tok = srv.login()
        body = os.path.join(out, "body")
        with open(body, "wb") as f:
            f.write(os.urandom(4096))
        if a.mode == "api":
            base = "http://127.0.0.1:%d/api/v1/stores/1/files/" % srv.port
            auth = ["-H", "Authorization: Bearer " + tok]
        else:
            r = srv.request("POST", "/api/v1/account/app-passwords", {"name": "bench"}, token=tok)
            if r.status not in (200, 201):
                raise SystemExit("app password: %r" % r)
            secret = r.json().get("password") or r.json().get("secret")
            base = "http://127.0.0.1:%d/dav/Home/" % srv.port
            auth = ["-u", "admin:" + secret]

        def upload(prefix, n):
            cfg = os.path.join(out, "curl.cfg")
            with open(cfg, "w") as f:
                for i in range(n):
                    f.write('upload-file = "%s"\nurl = "%s%s-%d.bin"\noutput = "/dev/null"\n' % (body, base, prefix, i))
            subprocess.run(["curl", "-sS", "--fail", "-K", cfg] + auth, check=True)

        upload("warm", 20)
        time.sleep(3)  # the background type detection of the warm-up runs now, not in the count
        pid = srv.proc.pid
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, stdout=subprocess.DEVNULL)
        upload("f", a.count)
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, stdout=subprocess.DEVNULL)
        dumps = sorted(glob.glob(os.path.join(out, "cg.*")), key=os.path.getmtime)
        dump = dumps[-1]
        rep = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump], capture_output=True, text=True).stdout
        total = None
        fn = {}
        for line in rep.splitlines():
            parts = line.split()
            if not parts or not parts[0][0].isdigit():
                continue
            n = int(parts[0].replace(",", ""))
            if "PROGRAM TOTALS" in line:
                total = n
            elif ")" in line:
                where = line.split(")", 1)[1].split()
                if where and ":" in where[0]:
                    fn.setdefault(where[0].rsplit(":", 1)[1], n)
        # The background type detection (refine_main, libmagic) runs once uploads pause, so
        # whether it falls inside the counted window depends on the scheduler: left out.
        bg = fn.get("refine_main", 0)
        print("mode %s, %d uploads of 4 KiB, dump %s" % (a.mode, a.count, dump))
        print("instructions per upload: %d (whole process %d, less the background type detection %d)"
              % ((total - bg) // a.count, total // a.count, bg // a.count))
        for name in ["http_on_request", "fs_write_commit", "txn_end", "usage_flush", "apppass_check",
                     "__memset_avx2_unaligned_erms", "json_dumps", "json_loadb", "key_u64"]:
            print("  %-30s %9d" % (name, fn.get(name, 0) // a.count))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/thumbs — how fast does MByte make thumbnails? N 12-megapixel JPEGs (default 200) are
uploaded to a fresh mbyted with the thumbnails module; the time from the last upload until every
256 px thumbnail is ready is set beside, on the same files, `convert -thumbnail 256x256` run once
per file (ImageMagick's CLI, what a naive server does) and `vipsthumbnail -s 256` (libvips, the
fastest thumbnailer around). Rounds alternate the order; prints files/s of each, and the ratios
(goal: MByte >= 1.5x convert).

Not like for like, in MByte's disfavour: per file MByte makes 64, 256 and 1024 px in WebP and JPEG
(six pictures) plus a ThumbHash, in a fresh sandboxed process; the CLIs make one 256 px WebP.

Usage: python3 bench/thumbs/run.py [--files N] [--rounds R] [--keep DIR]
Uses the build in build/ (MBYTED, MBYTE_MODULE_DIR as in tests/integration/harness.py); needs
ImageMagick's convert and vipsthumbnail (libvips-tools), which tests/setup/thumbs.sh installs."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import Server  # noqa: E402
from bench import host  # noqa: E402

CONVERT = "/usr/bin/convert"


def make_files(d, n):
    """One 12 MP photo-like JPEG (4000x3000, EXIF-free), then n copies that differ after the end
    marker: decoders stop at EOI, so each costs a full decode, yet each has its own SHA-256 (MByte's
    cache is by content and would otherwise make one)."""
    src = os.path.join(d, "src.jpg")
    subprocess.run([CONVERT, "-size", "4000x3000", "plasma:fractal", "-blur", "0x1", "-quality", "90", src],
                   check=True)
    with open(src, "rb") as f:
        data = f.read()
    files = []
    for i in range(n):
        p = os.path.join(d, "p%04d.jpg" % i)
        with open(p, "wb") as f:
            f.write(data + b"mbyte-bench-%d" % i)
        files.append(p)
    os.unlink(src)
    return files


def run_mbyte(files):
    srv = Server(modules={"thumbnails": True})
    srv.start()
    try:
        tok = srv.login()
        sid = json.loads(srv.request("GET", "/api/v1/stores", token=tok).body)[0]["id"]
        for p in files:
            with open(p, "rb") as f:
                r = srv.request("PUT", "/api/v1/stores/%s/files/b/%s?parents=true" % (sid, os.path.basename(p)),
                                f.read(), token=tok)
            if r.status not in (200, 201):
                raise SystemExit("upload answered %d" % r.status)
        t0 = time.perf_counter()
        deadline = time.time() + 3600
        while True:
            st = json.loads(srv.request("GET", "/api/v1/admin/thumbnails", token=tok).body)
            if st["ready"] + st["none"] >= len(files):
                break
            if time.time() > deadline:
                raise SystemExit("thumbnails not ready within an hour: %r" % st)
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        if st["none"]:
            raise SystemExit("some files got no thumbnail: %r" % st["failures"])
        return dt
    finally:
        srv.stop()
        srv.cleanup()


def run_cli(files, out, argv_of):
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    for p in files:
        subprocess.run(argv_of(p, os.path.join(out, os.path.basename(p) + ".webp")), check=True,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep")
    a = ap.parse_args()
    for tool in (CONVERT, shutil.which("vipsthumbnail")):
        if not tool or not os.path.exists(tool):
            raise SystemExit("needs ImageMagick's convert and vipsthumbnail: run tests/setup/thumbs.sh")
    print("# host:", host())
    print("# %d files of 12 MP, %d rounds" % (a.files, a.rounds))
    work = a.keep or tempfile.mkdtemp(prefix="mbyte-bench-thumbs-")
    files = make_files(work, a.files)
    runners = {
        "mbyte": lambda: run_mbyte(files),
        "convert": lambda: run_cli(files, os.path.join(work, "convert"),
                                   lambda i, o: [CONVERT, i, "-thumbnail", "256x256", o]),
        "vips": lambda: run_cli(files, os.path.join(work, "vips"),
                                lambda i, o: ["vipsthumbnail", "-s", "256", "-o", o, i]),
    }
    times = {k: [] for k in runners}
    names = list(runners)
    for r in range(a.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            dt = runners[k]()
            times[k].append(dt)
            print("round %d %-8s %7.2f s  %6.2f files/s" % (r + 1, k, dt, a.files / dt))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in names:
        print("median %-8s %7.2f s  %6.2f files/s" % (k, med[k], a.files / med[k]))
    print("mbyte vs convert: %.2fx the throughput (goal >= 1.5x)" % (med["convert"] / med["mbyte"]))
    print("mbyte vs vips:    %.2fx the throughput" % (med["vips"] / med["mbyte"]))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""A 2 GiB upload and download keep mbyted's resident memory under 64 MiB, and malloc_arenas
bounds glibc's malloc arenas under 16 concurrent clients.

The bytes are generated on the fly and compared by SHA-256, so the test holds no file in
memory either. mbyted's VmRSS is sampled from /proc/<pid>/status while the transfers run,
and VmHWM (the kernel's own peak) is read at the end. The peak is reset (clear_refs 5) after
the login that setUp does: an argon2id password check uses 64 MiB on purpose (libsodium's
interactive limit) and is not what this test measures.

Which binary: MBYTED_PLAIN (tests/meson.build builds the same sources without sanitizers),
because AddressSanitizer's shadow memory and quarantine would measure ASan, not MByte.
Without it (a run outside meson) the normal MBYTED is used.
"""
import hashlib
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest, main  # noqa: E402

harness.MBYTED = os.environ.get("MBYTED_PLAIN") or harness.MBYTED

SIZE = 2 << 30
LIMIT = 64 << 20
BLOCK = 1 << 20


class Source:
    """size bytes (SIZE by default) in BLOCK pieces: 16 random blocks, each piece stamped with
    its index so no two pieces are equal (the chunk store cannot dedupe the test into nothing);
    sources of other seeds share no piece either."""

    def __init__(self, seed, size=SIZE):
        r = random.Random(seed)
        self.blocks = [r.randbytes(BLOCK) for _ in range(16)]
        self.size = size
        self.sha = hashlib.sha256()

    def __iter__(self):
        for i in range(self.size // BLOCK):
            b = self.blocks[i % 16]
            piece = i.to_bytes(8, "little") + b[8:]
            self.sha.update(piece)
            yield piece


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def rss(self, field="VmRSS"):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except OSError:
                return
            time.sleep(0.02)


class MemoryTest(ServerTest):
    def store(self):
        r = self.srv.request("GET", "/api/v1/stores", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()[0]["id"]

    def download_sha(self, path):
        c = self.srv.conn(timeout=300)
        try:
            c.request("GET", path, headers={"Authorization": "Bearer " + self.admin})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            h, n = hashlib.sha256(), 0
            while True:
                piece = r.read(BLOCK)
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
            return n, h.hexdigest()
        finally:
            c.close()

    def measure(self, upload):
        """Run upload(sid) -> (path, sha) then download it; return the peak resident bytes."""
        sid = self.store()
        pid = self.srv.proc.pid
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")  # reset VmHWM: the login's argon2id buffer is not part of this test
        sampler = Sampler(pid)
        self.assertLess(sampler.rss("VmHWM"), LIMIT)
        sampler.start()
        try:
            name, sha = upload(sid)
            n, got = self.download_sha("/api/v1/stores/%s/files/%s" % (sid, name))
            self.assertEqual(n, SIZE)
            self.assertEqual(got, sha)
        finally:
            sampler.stop.set()
            sampler.join()
        hwm = sampler.rss("VmHWM")
        peak = max(sampler.peak, hwm)
        print("mbyted peak resident memory: %.1f MiB (sampled %.1f MiB, VmHWM %.1f MiB)" %
              (peak / 2**20, sampler.peak / 2**20, hwm / 2**20))
        return peak

    def send(self, method, path, body, headers):
        c = self.srv.conn(timeout=300)
        try:
            h = {"Authorization": "Bearer " + self.admin}
            h.update(headers)
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def test_2gib_put_upload_and_download_stay_under_64mib_resident(self):
        def put(sid):
            src = Source(7)
            status, _, body = self.send("PUT", "/api/v1/stores/%s/files/big.bin" % sid, iter(src),
                                        {"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"})
            self.assertIn(status, (200, 201), body)
            return "big.bin", src.sha.hexdigest()
        self.assertLess(self.measure(put), LIMIT)

    def test_2gib_tus_upload_and_download_stay_under_64mib_resident(self):
        def tus(sid):
            import base64
            meta = "store %s,path %s" % (base64.b64encode(str(sid).encode()).decode(),
                                         base64.b64encode(b"/tus.bin").decode())
            status, hdrs, body = self.send("POST", "/api/v1/uploads", b"", {
                "Tus-Resumable": "1.0.0", "Upload-Length": str(SIZE), "Upload-Metadata": meta})
            self.assertEqual(status, 201, body)
            loc = dict((k.lower(), v) for k, v in hdrs)["location"]
            src = Source(8)
            status, _, body = self.send("PATCH", loc, iter(src), {
                "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(SIZE),
                "Content-Type": "application/offset+octet-stream"})
            self.assertEqual(status, 204, body)
            return "tus.bin", src.sha.hexdigest()
        self.assertLess(self.measure(tus), LIMIT)

    def test_eight_big_uploads_at_once_share_a_budget_of_chunk_buffers(self):
        """Eight uploads of 128 MiB at once: each keeps its chunker's window, and the chunk
        buffers its store threads work from come out of one budget for every upload (16, an
        upload always having two of its own), so mbyted stays under 140 MiB resident. Each
        upload on its own used to keep up to nine buffers (191 MiB for eight 256 MiB uploads)."""
        sid = self.store()
        pid = self.srv.proc.pid
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")  # reset VmHWM: the login's argon2id buffer is not part of this test
        size, results = 128 << 20, {}

        def put(i):
            src = Source(100 + i, size)
            status, _, reply = self.send("PUT", "/api/v1/stores/%s/files/big%d.bin" % (sid, i), iter(src),
                                         {"Content-Length": str(size), "Content-Type": "application/octet-stream"})
            results[i] = (status, json.loads(reply).get("sha256") if status in (200, 201) else reply,
                          src.sha.hexdigest())
        sampler = Sampler(pid)
        sampler.start()
        try:
            threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sampler.stop.set()
            sampler.join()
        for i in range(8):
            status, got, want = results[i]
            self.assertEqual((status, got), (201, want), i)
        peak = max(sampler.peak, sampler.rss("VmHWM"))
        print("mbyted peak resident memory over 8 uploads of 128 MiB at once: %.1f MiB" % (peak / 2**20))
        self.assertLess(peak, 140 << 20)


HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: each arena but the main one lives in such heaps


def arena_heaps(pid):
    """glibc's arena heaps in pid: anonymous 64 MiB reservations aligned on 64 MiB, the part in
    use read-write and the rest PROT_NONE right after it (a thread stack's guard is before it)."""
    maps = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            maps.append((lo, hi, parts[1], len(parts) > 5))
    n = 0
    for i, (lo, hi, perm, named) in enumerate(maps):
        if named or perm != "rw-p" or lo % HEAP:
            continue
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        end = nxt[1] if nxt and nxt[0] == hi and nxt[2] == "---p" and not nxt[3] else hi
        n += end - lo == HEAP
    return n


class ArenaTest(ServerTest):
    """16 clients uploading at once: each HTTP thread would take an arena of its own (glibc allows
    8 per core); with malloc_arenas: 2 (the default) there is the main arena and one more."""
    conf = {"http_threads": 16}

    def load(self, srv, token):
        sid = srv.request("GET", "/api/v1/stores", token=token).json()[0]["id"]
        errors = []

        def client(k):
            c = srv.conn()
            try:
                for i in range(30):
                    c.request("PUT", "/api/v1/stores/%s/files/c%d/f%d.txt?parents=true" % (sid, k, i),
                              body=os.urandom(4096), headers={"Authorization": "Bearer " + token})
                    r = c.getresponse()
                    r.read()
                    if r.status != 201:
                        errors.append(r.status)
            finally:
                c.close()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        return arena_heaps(srv.proc.pid)

    def test_sixteen_password_logins_at_once_take_argon2s_memory_a_few_at_a_time(self):
        """argon2id takes 64 MiB for each password it checks (libsodium's interactive limit).
        Sixteen logins sent at once, one per request thread, with the login cache off so each
        one checks: the kernel lets at most as many checks run together as there are CPUs, never
        more than 4, so mbyted's peak stays under five checks' worth (593 MiB without that, on 2 CPUs)."""
        srv = harness.Server(conf={"http_threads": 16, "login_cache_ttl": 0})
        self.addCleanup(srv.cleanup)
        srv.start()
        srv.login()
        with open("/proc/%d/clear_refs" % srv.proc.pid, "w") as f:
            f.write("5")  # reset VmHWM
        start, codes = threading.Barrier(16), []

        def login():
            c = srv.conn(timeout=120)
            try:
                start.wait()
                c.request("POST", "/api/v1/auth/login", body='{"username": "admin", "password": "%s"}'
                          % harness.ADMIN_PASSWORD, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                codes.append(r.status)
            finally:
                c.close()
        threads = [threading.Thread(target=login) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(codes, [200] * 16)
        hwm = Sampler(srv.proc.pid).rss("VmHWM")
        print("mbyted peak resident memory over 16 logins at once: %.1f MiB" % (hwm / 2**20))
        self.assertLess(hwm, 5 * 64 << 20)

    def test_malloc_arenas_bounds_the_arenas_and_zero_leaves_glibcs_limit(self):
        self.assertLessEqual(self.load(self.srv, self.admin), 1)
        free = harness.Server(conf={"http_threads": 16, "malloc_arenas": 0})
        self.addCleanup(free.cleanup)
        free.start()
        self.assertGreater(self.load(free, free.login()), 2)  # the test sees arenas when they are there
        free.stop()


if __name__ == "__main__":
    main()

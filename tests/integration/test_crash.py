"""Crash safety: SIGKILL mbyted while 16 clients upload, restart on the same data
directory, and prove that
  - every upload answered 2xx reads back byte-identical (unless a later upload of the
    same path was in flight, which may legitimately have landed),
  - no partial file is visible: a path holds exactly one whole content that some client
    sent to it (the last acknowledged one or the one in flight), or does not exist if no
    upload to it was ever acknowledged,
  - `mbytectl fsck` finds nothing,
  - no upload failed for another reason: every answer is 2xx, and the only errors are
    broken connections after the kill.
The kill comes at three different moments (after a few, after several dozen and after
over a hundred acknowledged uploads), each round on the data the previous one left.
Uploads go through PUT (12 clients) and tus (4 clients); sizes vary from 0 bytes to 24 MiB.
"""
import base64
import hashlib
import http.client
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402

CLIENTS = 16
PATHS_PER_CLIENT = 3
SIZES = [0, 1, 4096, 65537, 300000, 1 << 20, 3 << 20, 8 << 20, 24 << 20]


def content(seed, size):
    return random.Random(seed).randbytes(size)


class Ledger:
    """What each path may hold: the last acknowledged sha and the ones in flight."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}      # path -> sha256 of the last 2xx upload
        self.pending = {}    # path -> set of sha256 sent but not (yet) acknowledged
        self.count = 0
        self.killed = threading.Event()  # set just before the SIGKILL
        self.unexpected = []  # failures the kill cannot explain: any non-2xx, any error before it

    def start(self, path, sha):
        with self.lock:
            self.pending.setdefault(path, set()).add(sha)

    def ack(self, path, sha):
        with self.lock:
            self.acked[path] = sha
            self.pending[path].discard(sha)
            self.count += 1


class CrashTest(ServerTest):
    def client(self, n, rnd, ledger, stop, token, sid):
        r = random.Random("%d-%d" % (rnd, n))
        use_tus = n % 4 == 0
        i = 0
        while not stop.is_set():
            path = "/c%02d/f%d.bin" % (n, r.randrange(PATHS_PER_CLIENT))
            size = r.choice(SIZES if n % 3 == 0 else SIZES[:6])  # every third client also sends big files
            seed = "%d-%d-%d" % (rnd, n, i)
            i += 1
            data = content(seed, size)
            sha = hashlib.sha256(data).hexdigest()
            ledger.start(path, sha)
            try:
                status = self.tus_upload(token, sid, path, data) if use_tus else self.put(token, sid, path, data)
            except Exception as e:  # noqa: BLE001 - anything but a dead connection after the kill is a failure
                if not (ledger.killed.is_set() and isinstance(e, (OSError, http.client.HTTPException))):
                    with ledger.lock:
                        ledger.unexpected.append("%s: %r before the kill" % (path, e))
                return  # the server died under us: this upload stays pending
            if 200 <= status < 300:
                ledger.ack(path, sha)
            else:
                with ledger.lock:
                    ledger.pending[path].discard(sha)
                    ledger.unexpected.append("%s: answered %d" % (path, status))

    def put(self, token, sid, path, data):
        c = self.srv.conn(timeout=120)
        try:
            c.request("PUT", "/api/v1/stores/%s/files%s?parents=true" % (sid, path), body=data,
                      headers={"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream"})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def tus_upload(self, token, sid, path, data):
        c = self.srv.conn(timeout=120)
        try:
            meta = "store %s,path %s,parents %s" % (base64.b64encode(str(sid).encode()).decode(),
                                                    base64.b64encode(path.encode()).decode(),
                                                    base64.b64encode(b"true").decode())
            h = {"Authorization": "Bearer " + token, "Tus-Resumable": "1.0.0"}
            c.request("POST", "/api/v1/uploads", body=b"",
                      headers=dict(h, **{"Upload-Length": str(len(data)), "Upload-Metadata": meta}))
            r = c.getresponse()
            r.read()
            if r.status != 201 or not data:
                return r.status
            loc = r.getheader("Location")
            c.request("PATCH", loc, body=data, headers=dict(h, **{
                "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def verify(self, ledger, token, sid):
        for path in sorted(set(ledger.acked) | set(ledger.pending)):
            r = self.srv.request("GET", "/api/v1/stores/%s/files%s" % (sid, path), token=token)
            allowed = set(ledger.pending.get(path, ()))
            if path in ledger.acked:
                allowed.add(ledger.acked[path])
            if r.status == 404:
                self.assertNotIn(path, ledger.acked, "%s was acknowledged but is gone" % path)
                continue
            self.assertEqual(r.status, 200, (path, r))
            got = hashlib.sha256(r.body).hexdigest()
            self.assertIn(got, allowed, "%s holds %d bytes that no client sent whole (partial file?)"
                          % (path, len(r.body)))
            # Settle the ledger: what is there now is the acknowledged state for the next round.
            ledger.acked[path] = got
            ledger.pending[path] = set()

    def fsck_is_clean(self):
        r = self.srv.ctl("fsck")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('"problems": []', r.stdout)

    def test_sigkill_during_16_concurrent_uploads_loses_nothing_acknowledged(self):
        sid = self.srv.request("GET", "/api/v1/stores", token=self.admin).json()[0]["id"]
        ledger = Ledger()
        token = self.admin
        for rnd, kill_after in enumerate((3, 40, 120)):
            stop = threading.Event()
            threads = [threading.Thread(target=self.client, args=(n, rnd, ledger, stop, token, sid))
                       for n in range(CLIENTS)]
            base = ledger.count
            for t in threads:
                t.start()
            deadline = time.time() + 120
            while ledger.count - base < kill_after and time.time() < deadline:
                time.sleep(0.005)
            self.assertGreaterEqual(ledger.count - base, kill_after, "the clients made no progress")
            ledger.killed.set()
            self.srv.kill()  # SIGKILL in the middle of the uploads
            stop.set()
            for t in threads:
                t.join(60)
                self.assertFalse(t.is_alive(), "a client is stuck 60 s after the kill")
            self.assertEqual(ledger.unexpected, [], "uploads failed for a reason other than the kill")
            ledger.killed.clear()
            in_flight = sum(len(v) for v in ledger.pending.values())
            print("round %d: killed after %d acknowledged uploads, %d in flight"
                  % (rnd, ledger.count - base, in_flight))
            self.srv.start()
            self.verify(ledger, token, sid)
            self.fsck_is_clean()
        self.assertGreater(len(ledger.acked), CLIENTS)


if __name__ == "__main__":
    main()

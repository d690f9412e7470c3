#!/usr/bin/env python3
"""External storage (issue 21): stores placed on an S3 backend (modules/s3) against a real
s3rver (npm, installed by tests/setup/s3.sh), which checks every request's SigV4 signature
with its default credentials. What a user sees: bytes read back (whole and ranges), objects in
s3rver's directory and none in the local chunk store, fsck, the collector, errors (never a
false success) when the service dies mid-upload, and 503 while the backend's module is away."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import (MBYTECTL, SRC, Server, ServerTest, free_port, missing_prerequisite, main,  # noqa: E402
                     refused_at_start)
from storeutil import fsck, mbyted_killed_during_uploads, put, uploads_cut_by_a_crash, wait_task  # noqa: E402
from test_vault import FakeVault  # noqa: E402

# s3rver's command line through tests/s3rver/serve.js, which makes its PUT answer only once the
# object is written (s3rver 3.7.1 answers before: see there).
S3RVER = os.path.join(SRC, "tests", "s3rver", "serve.js")
S3RVER_INSTALLED = os.path.join(SRC, "tests", "s3rver", "node_modules", "s3rver", "package.json")
BUCKET = "mbyte-chunks"
DECRYPT = os.path.join(os.path.dirname(MBYTECTL), "mbyte-decrypt")
MARKER = b"MBYTE-PLAINTEXT-MARKER "


class S3rver:
    """A real s3rver on a free loopback port with its own directory; kill() and start() again
    keep the directory, as a service that crashed and came back."""

    def __init__(self, test, service_endpoint=None):
        if not os.path.exists(S3RVER_INSTALLED) or not shutil.which("node"):
            missing_prerequisite(test, "s3rver is not installed (tests/setup/s3.sh)")
        self.dir = tempfile.mkdtemp(prefix="mbyte-s3rver-")
        self.port = free_port()
        self.service_endpoint = service_endpoint
        self.proc = None
        self.log = open(os.path.join(self.dir, "..", os.path.basename(self.dir) + ".log"), "ab")

    def mend(self):
        """s3rver writes an object's metadata file with a plain writeFile, so a SIGKILL can leave
        it cut short, and from then on every listing of the bucket answers 500 (JSON.parse
        throws). A real S3 commits an object atomically. So before a restart the test removes
        metadata files that are not JSON, which s3rver treats as an object without metadata."""
        for root, _, files in os.walk(self.dir):
            for f in files:
                if f.endswith("._S3rver_metadata.json"):
                    p = os.path.join(root, f)
                    try:
                        with open(p) as fh:
                            json.load(fh)
                    except ValueError:
                        os.unlink(p)

    def start(self):
        self.mend()
        args = ["node", S3RVER, "-d", self.dir, "-a", "127.0.0.1", "-p", str(self.port),
                "--configure-bucket", BUCKET]
        if self.service_endpoint:
            args += ["--service-endpoint", self.service_endpoint]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        import socket
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, "s3rver exited with %s" % self.proc.returncode
                time.sleep(0.05)
        raise AssertionError("s3rver did not listen")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def objects(self):
        """Names of the objects in the bucket (s3rver keeps each as <key>._S3rver_object)."""
        out, top = [], os.path.join(self.dir, BUCKET)
        for root, _, files in os.walk(top):
            for f in files:
                if f.endswith("._S3rver_object"):
                    out.append(os.path.relpath(os.path.join(root, f), top)[: -len("._S3rver_object")])
        return sorted(out)

    def cleanup(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def s3_conf(s3, path_style=True, endpoint=None, retries=4):
    return """backends:
  s3a:
    endpoint: %s
    region: us-east-1
    bucket: %s
    access_key: S3RVER
    secret_key: S3RVER
    path_style: %s
    prefix: "c/"
retries: %d
retry_base_ms: 50
timeout_ms: 20000
""" % (endpoint or "http://127.0.0.1:%d" % s3.port, BUCKET, "true" if path_style else "false", retries)


def _hchacha20(key, nonce16):
    """HChaCha20 (the subkey step of XChaCha20), for writing a key in the first wrap format."""
    import struct
    st = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] + list(struct.unpack("<8I", key)) + \
        list(struct.unpack("<4I", nonce16))

    def qr(a, b, c, d):
        for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            st[x] = (st[x] + st[y]) & 0xffffffff
            st[z] ^= st[x]
            st[z] = ((st[z] << r) | (st[z] >> (32 - r))) & 0xffffffff
    for _ in range(10):
        qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
        qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
    return struct.pack("<8I", *(st[0:4] + st[12:16]))


def v1_wrap(master_hex, datakey_hex):
    """A data key wrapped the way the first release did (docs/crypto.md "v1"), written here from
    the format alone: "v1:" key id ":" hex(nonce | XChaCha20-Poly1305(DK))."""
    import hashlib
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    mk = bytes.fromhex(master_hex)
    nonce = os.urandom(24)
    box = ChaCha20Poly1305(_hchacha20(mk, nonce[:16])).encrypt(b"\0" * 4 + nonce[16:], bytes.fromhex(datakey_hex),
                                                                 b"mbyte data key v1")
    kid = hashlib.blake2b(b"mbyte key id v1", digest_size=8, key=mk).hexdigest()
    return "v1:%s:%s" % (kid, (nonce + box).hex())


def local_chunk_files(srv):
    n = 0
    for root, dirs, files in os.walk(os.path.join(srv.data, "chunks")):
        if os.path.basename(root) == "tmp":
            continue
        n += sum(1 for f in files if len(f) == 64)
    return n


def make_store(t, srv, token, name, placement):
    r = srv.request("POST", "/api/v1/stores", {"name": name, "placement": placement}, token=token)
    t.assertEqual(r.status, 202, r)
    task = wait_task(t, srv, r.json()["task"], token)
    t.assertEqual(task["state"], "done", task)
    return r.json()["store"]


MODULES = {"taskmgr": True, "storeconfig": True, "multistore": True, "s3": True}
LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", "")


class ExternalStoreTest(ServerTest):
    """A server whose stores may live on an outside service (self.service: cleaned up after the
    test), with the collector's grace at 0, an admin and a user "ann". Used by S3Test and
    test_davbackend's tests."""
    service = None

    def start_server(self):
        """With self.modules and self.module_conf, as conf() leaves them."""
        conf = self.conf()  # may add modules and their settings
        self.srv = Server(modules=self.modules, module_conf=self.module_conf, conf=conf,
                          env=dict({"MBYTE_GC_GRACE": "0"}, **self.extra_env()))
        self.srv.start()
        self.admin = self.srv.login()
        self.user = self.srv.add_user("ann", admin_token=self.admin)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if self.service:
                self.service.cleanup()

    def extra_env(self):
        return {}

    def conf(self):
        return {}

    def file_url(self, sid, path):
        return "/api/v1/stores/%d/files/%s" % (sid, path)


class S3Test(ExternalStoreTest):
    path_style = True
    service_endpoint = None

    def setUp(self):
        self.s3 = self.service = S3rver(self, self.service_endpoint).start()
        endpoint = None if self.path_style else "http://s3.localhost:%d" % self.s3.port
        self.module_conf = {"s3": s3_conf(self.s3, self.path_style, endpoint)}
        self.modules = MODULES
        self.start_server()

    def round_trip(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "s3a"})
        r = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=self.user)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["placement"], {"backend": "s3a", "encrypt": False})
        data = os.urandom(3 * 1024 * 1024 + 12345)  # several chunks, none small enough to be inline
        self.assertEqual(put(self.srv, self.user, sid, "big.bin", data).status, 201)
        r = self.srv.request("GET", self.file_url(sid, "big.bin"), token=self.user)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)
        r = self.srv.request("GET", self.file_url(sid, "big.bin"), token=self.user,
                             headers={"Range": "bytes=1048570-2097160"})
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, data[1048570:2097161])
        objs = self.s3.objects()
        self.assertGreaterEqual(len(objs), 2, objs)
        self.assertTrue(all(o.startswith("c/") and len(o) == 66 for o in objs), objs)  # the prefix, then the hash
        self.assertEqual(local_chunk_files(self.srv), 0, "a chunk of the s3 store landed on the local disk")
        report = fsck(self.srv, self.admin)
        self.assertEqual(report["problems"], [], report)
        return sid, data

    def test_store_on_s3_reads_back_whole_and_ranges_and_the_collector_empties_the_bucket(self):
        sid, _ = self.round_trip()
        self.assertEqual(self.srv.request("DELETE", self.file_url(sid, "big.bin"), token=self.user).status, 204)
        r = self.srv.request("POST", "/api/v1/admin/fsck?repair=1", token=self.admin)
        self.assertEqual(r.status, 200, r)
        deadline = time.time() + 60
        while self.s3.objects() and time.time() < deadline:
            self.srv.request("POST", "/api/v1/admin/fsck?repair=1", token=self.admin)
            time.sleep(0.2)
        self.assertEqual(self.s3.objects(), [])
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_admin_backends_lists_local_and_s3_with_their_objects_and_a_missing_one_down(self):
        sid, data = self.round_trip()
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/backends", token=self.user), 403)
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual(r.status, 200, r)
        rows = {b["name"]: b for b in r.json()}
        self.assertEqual(rows["local"]["type"], "local")
        self.assertEqual(rows["local"]["state"], "up")
        s3a = rows["s3a"]
        self.assertEqual((s3a["type"], s3a["state"], s3a["queued"], s3a["stores"]), ("s3", "up", 0, 1))
        self.assertEqual(s3a["objects"], len(self.s3.objects()))
        stored = sum(os.path.getsize(os.path.join(self.s3.dir, BUCKET, o + "._S3rver_object"))
                     for o in self.s3.objects())
        self.assertEqual(s3a["bytes"], stored)
        self.assertGreaterEqual(stored, len(data) - 32768)  # all but an inline tail is on s3
        self.s3.kill()
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual({b["name"]: b["state"] for b in r.json()}["s3a"], "down")
        self.s3.start()
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/s3/unload", token=self.admin).status, 200)
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        row = {b["name"]: b for b in r.json()}["s3a"]
        self.assertEqual((row["type"], row["state"], row["stores"]), (None, "down", 1))

    def test_an_orphan_object_is_found_by_listing_and_collected(self):
        sid, data = self.round_trip()
        # An object no refcount names (an upload that never committed) appears in fsck's listing.
        orphan = "0" * 64
        if not shutil.which("rclone"):
            missing_prerequisite(self, "rclone is not installed (tests/setup/webdav.sh)")
        env = dict(os.environ, RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
                   RCLONE_CONFIG_T_ENDPOINT="http://127.0.0.1:%d" % self.s3.port,
                   RCLONE_CONFIG_T_ACCESS_KEY_ID="S3RVER", RCLONE_CONFIG_T_SECRET_ACCESS_KEY="S3RVER",
                   RCLONE_CONFIG_T_FORCE_PATH_STYLE="true")
        env.pop("AWS_CA_BUNDLE", None)  # the AWS SDK in rclone would load it even for plain http
        r = subprocess.run(["rclone", "rcat", "t:%s/c/%s" % (BUCKET, orphan)], input=b"orphan bytes", env=env,
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("c/" + orphan, self.s3.objects())
        report = fsck(self.srv, self.admin)
        kinds = [p["kind"] for p in report["problems"]]
        self.assertIn("c/" + orphan, ["c/" + p.get("chunk", "") for p in report["problems"]], report)
        self.assertEqual(set(kinds), {"orphan"})
        self.srv.request("POST", "/api/v1/admin/fsck?repair=1", token=self.admin)
        self.assertNotIn("c/" + orphan, self.s3.objects())
        r = self.srv.request("GET", self.file_url(sid, "big.bin"), token=self.user)
        self.assertEqual(r.body, data)

    def test_placement_on_an_unknown_backend_or_encrypted_is_refused_with_a_reason(self):
        r = self.srv.request("POST", "/api/v1/stores", {"name": "X", "placement": {"backend": "nope"}},
                             token=self.user)
        self.assertProblem(r, 400, "no backend 'nope'")
        r = self.srv.request("POST", "/api/v1/stores", {"name": "X", "placement": {"backend": "s3a", "x": 1}},
                             token=self.user)
        self.assertProblem(r, 400, "placement.x")
        r = self.srv.request("POST", "/api/v1/stores", {"name": "X", "placement": {"copies": 2}}, token=self.user)
        self.assertProblem(r, 400)
        r = self.srv.request("POST", "/api/v1/stores", {"name": "X", "placement": {"backend": "s3a", "encrypt": True}},
                             token=self.user)
        self.assertProblem(r, 415, "master key")  # this server was started without one
        sid = make_store(self, self.srv, self.user, "Plain", {"backend": "local"})
        r = self.srv.request("PATCH", "/api/v1/stores/%d/config" % sid, {"placement": {"backend": "s3a"}},
                             token=self.user)
        self.assertProblem(r, 403, "administrator")  # moving a store is an administrator's call (test_migrate)
        r = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=self.user)
        self.assertEqual(r.json()["placement"], {"backend": "local", "encrypt": False})

    def test_an_administrator_moves_a_store_from_local_to_s3_and_back(self):
        sid = make_store(self, self.srv, self.user, "Plain", {"backend": "local"})
        files = {"f%d.bin" % i: os.urandom(n) for i, n in enumerate([100000, 2500000, 5 * 1024 * 1024 + 3])}
        for name, data in files.items():
            self.assertEqual(put(self.srv, self.user, sid, name, data).status, 201)
        for place, on_s3 in (({"backend": "s3a"}, True), ({"backend": "local"}, False)):
            r = self.srv.request("PATCH", "/api/v1/stores/%d/config" % sid, {"placement": place}, token=self.admin)
            self.assertEqual(r.status, 202, r)
            task = wait_task(self, self.srv, r.json()["task"], self.admin, timeout=300)
            self.assertEqual(task["state"], "done", task)
            for name, data in files.items():
                r = self.srv.request("GET", self.file_url(sid, name), token=self.user)
                self.assertEqual((r.status, r.body == data), (200, True), name)
            self.assertEqual(bool(self.s3.objects()), on_s3)
            self.assertEqual(local_chunk_files(self.srv) == 0, on_s3)
            self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_unloading_s3_refuses_its_stores_with_503_until_it_is_loaded_again(self):
        sid, data = self.round_trip()
        r = self.srv.request("POST", "/api/v1/admin/modules/s3/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("GET", self.file_url(sid, "big.bin"), token=self.user)
        self.assertProblem(r, 503, "s3a")
        r = put(self.srv, self.user, sid, "new.bin", os.urandom(100000))
        self.assertEqual(r.status, 503, r)
        r = self.srv.request("POST", "/api/v1/admin/modules/s3/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("GET", self.file_url(sid, "big.bin"), token=self.user)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, data)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_fsck_with_the_service_down_says_so_and_the_server_lives(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "s3a"})
        data = os.urandom(300000)
        self.assertEqual(put(self.srv, self.user, sid, "a.bin", data).status, 201)
        self.s3.kill()
        report = fsck(self.srv, self.admin)  # the bucket cannot be listed: reported, never a crash
        self.assertIn("backend", {p["kind"] for p in report["problems"]}, report)
        self.s3.start()
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        r = self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))

    def test_s3rver_killed_during_8_uploads_acknowledges_nothing_it_lost(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "s3a"})
        uploads_cut_by_a_crash(self, self.srv, self.admin, self.user, sid, lambda: len(self.s3.objects()),
                               self.s3.kill, self.s3.start, send_again=True)


class S3EncryptedTest(S3Test):
    """Stores with {"encrypt": true}: what reaches s3rver is ciphertext under keyed names, and
    tools/mbyte-decrypt recovers a file from the objects, the key file and its manifest."""

    def conf(self):
        # A key file of the first format (64 hex): it serves as master_key unchanged.
        self.keyfile = os.path.join(self.s3.dir + "-master.key")
        with open(self.keyfile, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(self.keyfile, 0o600)
        return {"master_key": "file:" + self.keyfile}

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if os.path.exists(self.keyfile):
                os.unlink(self.keyfile)

    def object_bytes(self):
        top = os.path.join(self.s3.dir, BUCKET)
        out = {}
        for o in self.s3.objects():
            with open(os.path.join(top, o + "._S3rver_object"), "rb") as f:
                out[o] = f.read()
        return out

    def test_every_object_is_ciphertext_and_mbyte_decrypt_gives_the_file_back(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "s3a", "encrypt": True})
        twin = make_store(self, self.srv, self.user, "Twin", {"backend": "s3a", "encrypt": True})
        r = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=self.user)
        self.assertEqual(r.json()["placement"], {"backend": "s3a", "encrypt": True})
        # Text a backend could recognise, several chunks of it, and a tail small enough to stay inline.
        data = (MARKER * 200000)[: 3 * 1024 * 1024] + os.urandom(2 * 1024 * 1024) + MARKER * 10
        for s in (sid, twin):
            self.assertEqual(put(self.srv, self.user, s, "doc.txt", data).status, 201)
        r = self.srv.request("GET", self.file_url(sid, "doc.txt"), token=self.user)
        self.assertEqual(r.body, data)
        r = self.srv.request("GET", self.file_url(sid, "doc.txt"), token=self.user,
                             headers={"Range": "bytes=3000000-3200000"})
        self.assertEqual((r.status, r.body), (206, data[3000000:3200001]))
        objs = self.object_bytes()
        self.assertGreaterEqual(len(objs), 4, list(objs))
        for name, body in objs.items():
            self.assertTrue(name.startswith("c/e/"), name)
            self.assertNotIn(MARKER[:12], body, name)
            self.assertEqual(body[:4], b"MBE1", name)
        # The same file in two stores: no object name in common (the backend cannot tell them equal).
        twin_names = set(self.s3.objects())
        r = self.srv.request("GET", "/api/v1/stores/%d/manifest/doc.txt" % sid, token=self.user)
        plain_on_backend = 2 * sum(c["n"] for c in r.json()["chunks"] if "i" not in c)
        self.assertEqual(len(twin_names), 2 * sum(1 for c in r.json()["chunks"] if "i" not in c))
        stored = sum(len(b) for b in objs.values())
        self.assertLess(stored, plain_on_backend * 1.01, "encryption grew the data by 1 % or more")
        self.assertGreater(stored, plain_on_backend)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        # Recovery with no server: the manifest, a copy of the bucket made by a real S3 client, the key.
        r = self.srv.request("GET", "/api/v1/stores/%d/manifest/doc.txt" % sid, token=self.user)
        self.assertEqual(r.status, 200, r)
        manifest = r.json()
        self.assertTrue(manifest["placement"]["key"].startswith("mbkw1:"))
        work = tempfile.mkdtemp(prefix="mbyte-decrypt-")
        try:
            mf = os.path.join(work, "manifest.json")
            with open(mf, "wb") as f:
                f.write(r.body)
            copy = os.path.join(work, "objects")
            env = dict(os.environ, RCLONE_CONFIG_T_TYPE="s3", RCLONE_CONFIG_T_PROVIDER="Other",
                       RCLONE_CONFIG_T_ENDPOINT="http://127.0.0.1:%d" % self.s3.port,
                       RCLONE_CONFIG_T_ACCESS_KEY_ID="S3RVER", RCLONE_CONFIG_T_SECRET_ACCESS_KEY="S3RVER",
                       RCLONE_CONFIG_T_FORCE_PATH_STYLE="true")
            env.pop("AWS_CA_BUNDLE", None)
            if not shutil.which("rclone"):
                missing_prerequisite(self, "rclone is not installed (tests/setup/webdav.sh)")
            # --fast-list: s3rver answers rclone's per-folder (delimiter) listings with nothing
            cp = subprocess.run(["rclone", "copy", "--fast-list", "t:" + BUCKET, copy], env=env, capture_output=True)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.srv.stop()
            out = os.path.join(work, "doc.txt")
            run = subprocess.run([DECRYPT, "--key", self.keyfile, "--manifest", mf, "--objects", copy,
                                  "--prefix", "c/", "--out", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)
            os.unlink(out)
            # the same through mbytectl, as the operator guide says it (the server is stopped)
            run = subprocess.run([MBYTECTL, "decrypt", "--key", self.keyfile, "--manifest", mf, "--objects", copy,
                                  "--prefix", "c/", "--out", out], capture_output=True, text=True,
                                 env=dict(os.environ, PATH="/usr/bin:/bin"))
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)
            os.unlink(out)
            # A wrong key is named as such.
            wrong = os.path.join(work, "wrong.key")
            with open(wrong, "w") as f:
                f.write(os.urandom(32).hex())
            os.chmod(wrong, 0o600)
            run = subprocess.run([DECRYPT, "--key", wrong, "--manifest", mf, "--objects", copy, "--prefix", "c/",
                                  "--out", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 1)
            self.assertIn("does not open with this master key", run.stderr)
            # One flipped byte in each object (the copy holds both stores' objects, and which are
            # this file's only the keys tell): a clear error and no output, never wrong bytes.
            for victim in os.listdir(os.path.join(copy, "c", "e")):
                with open(os.path.join(copy, "c", "e", victim), "r+b") as f:
                    body = bytearray(f.read())
                    body[len(body) // 2] ^= 0x01
                    f.seek(0)
                    f.write(bytes(body))
            run = subprocess.run([DECRYPT, "--key", self.keyfile, "--manifest", mf, "--objects", copy,
                                  "--prefix", "c/", "--out", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 1, run.stderr)
            self.assertIn("failed authentication", run.stderr)
            self.assertFalse(os.path.exists(out) or os.path.exists(out + ".partial"))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def test_a_corrupted_object_is_an_error_through_the_server_never_wrong_bytes(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "s3a", "encrypt": True})
        data = os.urandom(1024 * 1024)
        self.assertEqual(put(self.srv, self.user, sid, "one.bin", data).status, 201)
        top = os.path.join(self.s3.dir, BUCKET)
        for o in self.s3.objects():
            p = os.path.join(top, o + "._S3rver_object")
            with open(p, "r+b") as f:
                f.seek(100)
                b = f.read(1)
                f.seek(100)
                f.write(bytes([b[0] ^ 0x80]))
        r = self.srv.request("GET", self.file_url(sid, "one.bin"), token=self.user)
        self.assertNotEqual(r.status, 200)
        self.assertNotIn(data[:4096], r.body)
        kinds = {p["kind"] for p in fsck(self.srv, self.admin)["problems"]}
        self.assertEqual(kinds, {"corrupt_chunk"})

    def test_the_collector_deletes_encrypted_objects_and_encryption_needs_the_master_key(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "s3a", "encrypt": True})
        self.assertEqual(put(self.srv, self.user, sid, "x.bin", os.urandom(2 * 1024 * 1024)).status, 201)
        self.assertTrue(self.s3.objects())
        self.assertEqual(self.srv.request("DELETE", self.file_url(sid, "x.bin"), token=self.user).status, 204)
        self.srv.request("POST", "/api/v1/admin/fsck?repair=1", token=self.admin)
        self.assertEqual(self.s3.objects(), [])
        r = self.srv.request("POST", "/api/v1/stores", {"name": "L", "placement": {"backend": "local",
                                                                                    "encrypt": True}},
                             token=self.user)
        self.assertProblem(r, 415, "external backends")
        # A server started without the key refuses new encrypted stores and cannot read old ones.
        kept = os.urandom(300000)
        self.assertEqual(put(self.srv, self.user, sid, "kept.bin", kept).status, 201)
        self.srv.stop()
        self.srv.conf.pop("master_key")
        self.srv.write_config()
        self.srv.start()
        self.admin = self.srv.login()
        self.user = self.srv.login("ann", "user-password-1")
        r = self.srv.request("POST", "/api/v1/stores", {"name": "S2", "placement": {"backend": "s3a",
                                                                                     "encrypt": True}},
                             token=self.user)
        self.assertProblem(r, 415, "master key")
        r = self.srv.request("GET", self.file_url(sid, "kept.bin"), token=self.user)
        self.assertProblem(r, 503, "cannot be unwrapped")

    def test_mbyted_killed_during_8_uploads_leaves_no_encrypted_object_after_the_collector(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "s3a", "encrypt": True})
        mbyted_killed_during_uploads(self, self.srv, self.admin, self.user, sid, self.s3.objects)

    def test_a_store_key_of_the_first_format_still_opens_and_a_rewrap_moves_it(self):
        sid = make_store(self, self.srv, self.user, "Old", {"backend": "s3a", "encrypt": True})
        data = MARKER * 100 + os.urandom(3 * 1024 * 1024)
        self.assertEqual(put(self.srv, self.user, sid, "old.bin", data).status, 201)
        r = self.srv.request("GET", "/api/v1/admin/stores/%d/datakey" % sid, token=self.admin)
        self.assertEqual(r.status, 200, r)
        dk = r.json()["datakey"]
        self.assertEqual(len(bytes.fromhex(dk)), 32)
        self.assertEqual(self.srv.request("GET", "/api/v1/admin/stores/%d/datakey" % sid, token=self.user).status,
                         403)
        now = self.srv.request("GET", "/api/v1/stores/%d/manifest/old.bin" % sid, token=self.user).json()
        # The store record as the first release wrote it: the same data key in the v1 format.
        self.srv.stop()
        with open(self.keyfile) as f:
            old = v1_wrap(f.read().strip(), dk)
        key = "s/%016x" % sid
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), key, now["placement"]["key"], old],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        self.admin = self.srv.login()
        self.user = self.srv.login("ann", "user-password-1")
        r = self.srv.request("GET", "/api/v1/stores/%d/manifest/old.bin" % sid, token=self.user)
        self.assertEqual(r.json()["placement"]["key"], old)
        r = self.srv.request("GET", self.file_url(sid, "old.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))
        # A rewrap moves it to the key-wrap registry's format; nothing is re-encrypted.
        before = self.object_bytes()
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"rotated": False, "stores": [{"store": sid, "from": old[:20], "to": "mbkw1:"}]})
        self.assertEqual(self.object_bytes(), before)
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap?rotate=true", token=self.admin)
        self.assertProblem(r, 415, "no versions")
        self.srv.stop()
        self.srv.start()
        self.user = self.srv.login("ann", "user-password-1")
        r = self.srv.request("GET", "/api/v1/stores/%d/manifest/old.bin" % sid, token=self.user)
        self.assertTrue(r.json()["placement"]["key"].startswith("mbkw1:"), r.json())
        r = self.srv.request("GET", self.file_url(sid, "old.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))

    test_store_on_s3_reads_back_whole_and_ranges_and_the_collector_empties_the_bucket = None
    test_an_orphan_object_is_found_by_listing_and_collected = None
    test_unloading_s3_refuses_its_stores_with_503_until_it_is_loaded_again = None
    test_s3rver_killed_during_8_uploads_acknowledges_nothing_it_lost = None
    test_placement_on_an_unknown_backend_or_encrypted_is_refused_with_a_reason = None
    test_admin_backends_lists_local_and_s3_with_their_objects_and_a_missing_one_down = None


class VaultEnv:
    """What a test with tests/tools/fakevault.py as Vault (self.vault) shares."""

    def extra_env(self):
        return {"VAULT_ADDR": self.vault.addr, "VAULT_TOKEN": self.vault.root}

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if self.vault.proc:
                self.vault.stop()


class S3TransitTest(VaultEnv, S3Test):
    """The master key in Vault transit (master_key: transit:<key>; tests/tools/fakevault.py stands
    in for Vault): stores' data keys are wrapped by the vault module's provider, a rotation
    rewraps them without touching a byte of data, and the admin's data key export (audited)
    lets mbyte-decrypt read the objects with no server and no Vault."""

    def conf(self):
        self.vault = FakeVault(tempfile.mkdtemp(prefix="mbyte-vault-"), tls=False)
        st, _ = self.vault.call("POST", "/v1/transit/keys/mbyte-store", {})
        assert st == 204, st
        self.modules = dict(MODULES, vault=True, audit=True)
        self.module_conf["vault"] = "refresh: 3600\n"
        return {"master_key": "transit:mbyte-store"}


    object_bytes = S3EncryptedTest.object_bytes

    def test_transit_wrapped_store_rotate_rewrap_and_decrypt_with_the_exported_data_key(self):
        sid = make_store(self, self.srv, self.user, "Vaulted", {"backend": "s3a", "encrypt": True})
        # over CHUNK_MAX (4 MiB): two chunks at least, whatever the random bytes (with 1 MiB of them, one
        # chunk in about 50 runs: the marker's repeated text has no cut point)
        data = (MARKER * 150000)[: 2 * 1024 * 1024] + os.urandom(2 * 1024 * 1024 + 512 * 1024 + 7)
        self.assertEqual(put(self.srv, self.user, sid, "v.bin", data).status, 201)
        r = self.srv.request("GET", self.file_url(sid, "v.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))
        r = self.srv.request("GET", self.file_url(sid, "v.bin"), token=self.user, headers={"Range": "bytes=100-2200000"})
        self.assertEqual((r.status, r.body), (206, data[100:2200001]))
        manifest = self.srv.request("GET", "/api/v1/stores/%d/manifest/v.bin" % sid, token=self.user).json()
        self.assertTrue(manifest["placement"]["key"].startswith("vault:v1:"), manifest["placement"])
        objs = self.object_bytes()
        self.assertGreaterEqual(len(objs), 2)
        for name, body in objs.items():
            self.assertNotIn(MARKER[:12], body, name)
            self.assertEqual(body[:4], b"MBE1", name)

        # Rotate the transit key and rewrap: the store's key moves to v2, no object changes.
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap?rotate=true", token=self.user)
        self.assertEqual(r.status, 403, r)
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap?rotate=maybe", token=self.admin)
        self.assertProblem(r, 400, "rotate")
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap?rotate=true", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"rotated": True, "stores": [{"store": sid, "from": "vault:v1:", "to": "vault:v2:"}]})
        self.assertEqual(self.object_bytes(), objs)
        r = self.srv.request("GET", self.file_url(sid, "v.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))
        self.srv.stop()
        self.srv.start()
        self.admin = self.srv.login()
        self.user = self.srv.login("ann", "user-password-1")
        r = self.srv.request("GET", self.file_url(sid, "v.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))
        manifest = self.srv.request("GET", "/api/v1/stores/%d/manifest/v.bin" % sid, token=self.user).json()
        self.assertTrue(manifest["placement"]["key"].startswith("vault:v2:"), manifest["placement"])
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

        # The admin exports the data key (recorded in the audit log) and mbyte-decrypt reads a
        # copy of the bucket with it, no server and no Vault needed.
        self.assertEqual(self.srv.request("GET", "/api/v1/admin/stores/%d/datakey" % sid, token=self.user).status, 403)
        r = self.srv.request("GET", "/api/v1/admin/stores/%d/datakey" % sid, token=self.admin)
        self.assertEqual(r.status, 200, r)
        dk = r.json()["datakey"]
        deadline = time.time() + 30
        while True:
            a = self.srv.request("GET", "/api/v1/admin/audit?action=store.datakey_exported", token=self.admin).json()
            if a["entries"] or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual([(e["user"], e["detail"]["store"]) for e in a["entries"]], [("admin", sid)], a)
        self.assertNotIn(dk, self.srv.read_log())
        work = tempfile.mkdtemp(prefix="mbyte-decrypt-")
        try:
            copy = os.path.join(work, "objects")
            for name, body in objs.items():
                os.makedirs(os.path.dirname(os.path.join(copy, name)), exist_ok=True)
                with open(os.path.join(copy, name), "wb") as f:
                    f.write(body)
            mf, dkf, out = (os.path.join(work, n) for n in ("manifest.json", "store.key", "v.bin"))
            with open(mf, "w") as f:
                json.dump(manifest, f)
            with open(dkf, "w") as f:
                f.write(dk + "\n")
            self.srv.stop()
            self.vault.stop()
            self.vault.proc = None
            run = subprocess.run([DECRYPT, "--datakey", dkf, "--manifest", mf, "--objects", copy, "--prefix", "c/",
                                  "--out", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), data)
            with open(dkf, "w") as f:
                f.write(os.urandom(32).hex())
            os.unlink(out)
            run = subprocess.run([DECRYPT, "--datakey", dkf, "--manifest", mf, "--objects", copy, "--prefix", "c/",
                                  "--out", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 1, run.stderr)
            self.assertFalse(os.path.exists(out))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    test_store_on_s3_reads_back_whole_and_ranges_and_the_collector_empties_the_bucket = None
    test_an_orphan_object_is_found_by_listing_and_collected = None
    test_unloading_s3_refuses_its_stores_with_503_until_it_is_loaded_again = None
    test_s3rver_killed_during_8_uploads_acknowledges_nothing_it_lost = None
    test_placement_on_an_unknown_backend_or_encrypted_is_refused_with_a_reason = None
    test_admin_backends_lists_local_and_s3_with_their_objects_and_a_missing_one_down = None


class MasterKeySettingTest(unittest.TestCase):
    def test_a_bad_master_key_is_refused_with_its_line_and_a_key_file_is_not_read_as_a_secret(self):
        refused_at_start(self, {"master_key": "12345"}, "mbyte.yaml:2: master_key must be a key reference")
        # A key file readable by others: the server starts (the key is named, not read as a
        # value), and an encrypted store is refused naming why.
        srv = Server(modules=MODULES)
        try:
            key = os.path.join(srv.tmp, "master.key")
            secret = os.urandom(32)
            with open(key, "wb") as f:
                f.write(secret)
            os.chmod(key, 0o644)
            srv.conf["master_key"] = "file:" + key
            srv.module_conf["s3"] = "backends:\n  s3a:\n    endpoint: http://127.0.0.1:9\n    region: r\n" \
                                    "    bucket: b\n    access_key: a\n    secret_key: s\n"
            srv.write_config()
            srv.start()
            admin = srv.login()
            r = srv.request("POST", "/api/v1/stores", {"name": "S", "placement": {"backend": "s3a", "encrypt": True}},
                            token=admin)
            self.assertEqual(r.status, 403, r)
            self.assertIn("chmod 600", r.json()["detail"])
            self.assertNotIn(secret.hex(), srv.read_log())
        finally:
            srv.stop()
            srv.cleanup()


class MasterKeyMoveTest(VaultEnv, ExternalStoreTest):
    """master_key changes (a key file, then Vault transit, then another key file) with the key
    before it as previous_master_key: encrypted stores stay readable, a rewrap moves every data
    key to the new master key without touching an object, and then the old key can go."""

    def setUp(self):
        self.s3 = self.service = S3rver(self, None).start()
        self.module_conf = {"s3": s3_conf(self.s3, True, None), "vault": "refresh: 3600\n"}
        self.modules = dict(MODULES, vault=True)
        self.vault = FakeVault(tempfile.mkdtemp(prefix="mbyte-vault-"), tls=False)
        st, _ = self.vault.call("POST", "/v1/transit/keys/mbyte-store", {})
        assert st == 204, st
        self.keys = [self.keyfile(i) for i in range(2)]
        self.start_server()

    def keyfile(self, i):
        path = "%s-master-%d.key" % (self.s3.dir, i)
        with open(path, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(path, 0o600)
        return path

    def conf(self):
        return {"master_key": "file:" + self.keys[0]}

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for k in self.keys:
                if os.path.exists(k):
                    os.unlink(k)

    object_bytes = S3EncryptedTest.object_bytes

    def restart_with(self, **conf):
        self.srv.stop()
        for k in ("master_key", "previous_master_key"):
            self.srv.conf.pop(k, None)
        self.srv.conf.update(conf)
        self.srv.write_config()
        self.srv.start()
        self.admin = self.srv.login()
        self.user = self.srv.login("ann", "user-password-1")

    def read_back(self, sid, data):
        r = self.srv.request("GET", self.file_url(sid, "s.bin"), token=self.user)
        self.assertEqual((r.status, r.body), (200, data))

    def rewrap(self, want_from, want_to, sids):
        r = self.srv.request("POST", "/api/v1/admin/backends/rewrap", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"rotated": False, "stores": [{"store": s, "from": want_from, "to": want_to}
                                                                  for s in sids]})

    def test_file_to_transit_to_another_file_with_the_previous_key_then_without(self):
        sids = [make_store(self, self.srv, self.user, n, {"backend": "s3a", "encrypt": True}) for n in ("A", "B")]
        data = MARKER * 1000 + os.urandom(2 * 1024 * 1024)
        for sid in sids:
            self.assertEqual(put(self.srv, self.user, sid, "s.bin", data).status, 201)
        objs = self.object_bytes()
        # The new master key alone cannot open the stores' keys: they answer 503, nothing is lost.
        self.restart_with(master_key="transit:mbyte-store")
        r = self.srv.request("GET", self.file_url(sids[0], "s.bin"), token=self.user)
        self.assertProblem(r, 503, "cannot be unwrapped")
        # With the old one as previous_master_key they open; a rewrap moves them to transit.
        self.restart_with(master_key="transit:mbyte-store", previous_master_key="file:" + self.keys[0])
        for sid in sids:
            self.read_back(sid, data)
        self.rewrap("mbkw1:", "vault:v1:", sids)
        self.rewrap("vault:v1:", "vault:v1:", sids)  # again: already there, rewrapped in place
        self.assertEqual(self.object_bytes(), objs)
        # The first key file is no longer needed.
        os.unlink(self.keys[0])
        self.restart_with(master_key="transit:mbyte-store")
        for sid in sids:
            self.read_back(sid, data)
        # Transit to another key file, the same way.
        self.restart_with(master_key="file:" + self.keys[1], previous_master_key="transit:mbyte-store")
        self.read_back(sids[1], data)
        self.rewrap("vault:v1:", "mbkw1:", sids)
        self.restart_with(master_key="file:" + self.keys[1])
        for sid in sids:
            self.read_back(sid, data)
        self.assertEqual(self.object_bytes(), objs)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_previous_master_key_without_master_key_is_refused_with_its_line(self):
        refused_at_start(self, {"previous_master_key": "file:" + self.keys[0]}, "previous_master_key needs a master_key")


class S3VirtualHostTest(S3Test):
    """The same through virtual-host addressing: <bucket>.s3.localhost:<port> (curl maps any
    *.localhost name to the loopback address)."""
    path_style = False
    service_endpoint = "localhost"

    test_an_orphan_object_is_found_by_listing_and_collected = None
    test_unloading_s3_refuses_its_stores_with_503_until_it_is_loaded_again = None
    test_s3rver_killed_during_8_uploads_acknowledges_nothing_it_lost = None
    test_placement_on_an_unknown_backend_or_encrypted_is_refused_with_a_reason = None
    test_admin_backends_lists_local_and_s3_with_their_objects_and_a_missing_one_down = None


if __name__ == "__main__":
    main()

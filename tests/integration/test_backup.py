"""Online backup (docs/operations.md "Backing up"): `mbytectl backup DIR` while clients upload,
`mbytectl backup verify DIR`, `mbytectl restore DIR --data NEWDIR`, incremental runs, damage found."""
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, ServerTest, main  # noqa: E402
from storeutil import fsck, home, put  # noqa: E402


def read(path):
    with open(path) as f:
        return f.read()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def body(i, size):
    """Bytes unlike any other body (MByte deduplicates chunks)."""
    seed = hashlib.sha256(b"body %d" % i).digest()
    return (seed * (size // 32 + 1))[:size - 8] + i.to_bytes(8, "little") if size > 40 else os.urandom(size)


class Backup(ServerTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="mbyte-backup-")
        self.sid = home(self.srv, self.admin)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        super().tearDown()

    def backup(self):
        r = self.srv.ctl("backup", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r

    def upload(self, path, data):
        r = put(self.srv, self.admin, self.sid, path + "?parents=true", data)
        self.assertIn(r.status, (200, 201), r)

    def restored(self, data_dir):
        """A server on the restored data directory (the caller stops and cleans it)."""
        srv = Server(data_dir=data_dir)
        srv.start()
        return srv

    def restore_and_start(self):
        """Restores DIR's newest snapshot into a new directory, stops the server and starts one on
        the restored data (fsck clean); returns it and its admin token."""
        new = os.path.join(self.dir + "-restored")
        self.addCleanup(shutil.rmtree, new, True)
        r = self.srv.ctl("restore", self.dir, "--data", new)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.srv.stop()
        srv = self.restored(new)
        self.addCleanup(srv.cleanup)
        admin = srv.login()
        report = fsck(srv, admin)
        self.assertEqual(report["problems"], [], report)
        return srv, admin

    def test_a_backup_taken_while_8_clients_upload_restores_every_upload_acknowledged_before_it(self):
        before = {}
        for i in range(24):  # files of one inline chunk, one chunk file, and several chunk files
            data = body(i, [3000, 700 * 1024, 3 * 1024 * 1024][i % 3])
            self.upload("before/f%02d.bin" % i, data)
            before["before/f%02d.bin" % i] = sha(data)
        during, stop, errors = {}, threading.Event(), []

        def client(n):
            k = 0
            while not stop.is_set() and k < 200:
                data = body(1000 * (n + 1) + k, [5000, 400 * 1024][k % 2])
                path = "during/c%d/f%03d.bin" % (n, k)
                r = put(self.srv, self.admin, self.sid, path + "?parents=true", data)
                if r.status not in (200, 201):
                    errors.append(r)
                    return
                during[path] = sha(data)
                k += 1

        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for c in clients:
            c.start()
        try:
            # The clients are really uploading when the backup starts; what they had been told
            # succeeded by then must be in the backup too.
            deadline = time.time() + 120
            while len(during) < 16 and not errors and time.time() < deadline:
                time.sleep(0.01)
            acked_before = dict(during)
            self.assertGreaterEqual(len(acked_before), 16, errors)
            out = self.backup()
        finally:
            stop.set()
            for c in clients:
                c.join()
        self.assertEqual(errors, [])
        self.assertIn("backup ", out.stdout)
        verify = self.srv.ctl("backup", "verify", self.dir)
        self.assertEqual(verify.returncode, 0, verify.stderr)
        self.assertIn(" ok: ", verify.stdout)

        srv, admin = self.restore_and_start()
        try:
            for path, digest in before.items():
                g = srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, path), token=admin)
                self.assertEqual(g.status, 200, path)
                self.assertEqual(sha(g.body), digest, path)
            for path, digest in acked_before.items():
                g = srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, path), token=admin)
                self.assertEqual(g.status, 200, path)
                self.assertEqual(sha(g.body), digest, path)
            # What was uploaded during the backup is there whole or not at all.
            seen = 0
            for path, digest in during.items():
                g = srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, path), token=admin)
                self.assertIn(g.status, (200, 404), path)
                if g.status == 200:
                    seen += 1
                    self.assertEqual(sha(g.body), digest, path)
            srv.stop()
        finally:
            srv.cleanup()
        self.srv.start()

    def test_a_second_backup_copies_only_the_new_chunks_and_both_snapshots_verify(self):
        for i in range(6):
            self.upload("a%d.bin" % i, body(i, 2 * 1024 * 1024))
        self.backup()
        first = read(os.path.join(self.dir, "latest")).strip()
        self.upload("new.bin", body(99, 2 * 1024 * 1024))
        r = self.srv.ctl("backup", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        second = read(os.path.join(self.dir, "latest")).strip()
        self.assertNotEqual(first, second)
        # "... N chunks, M copied": the second run copied only new.bin's chunks.
        words = r.stdout.split()
        total = int(words[words.index("chunks,") - 1])
        copied = int(words[words.index("copied") - 1])
        self.assertGreater(copied, 0, r.stdout)
        self.assertLess(copied, total, r.stdout)
        listed = read(os.path.join(self.dir, "snapshots", second, "chunks.list")).split("\n")
        old = set(read(os.path.join(self.dir, "snapshots", first, "chunks.list")).split("\n"))
        self.assertEqual(copied, len([x for x in listed if x and x not in old]))
        for snap in (first, second):
            v = self.srv.ctl("backup", "verify", self.dir, "--snapshot", snap)
            self.assertEqual(v.returncode, 0, v.stderr)

    def test_verify_and_restore_name_a_damaged_chunk_and_restore_nothing_silently(self):
        data = body(7, 3 * 1024 * 1024)
        self.upload("big.bin", data)
        self.backup()
        snap = read(os.path.join(self.dir, "latest")).strip()
        first = read(os.path.join(self.dir, "snapshots", snap, "chunks.list")).split()[0]
        victim = os.path.join(self.dir, "chunks", first[:2], first[2:4], first)
        with open(victim, "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 0xFF]))
        v = self.srv.ctl("backup", "verify", self.dir)
        self.assertEqual(v.returncode, 1, v.stdout)
        self.assertIn(victim, v.stderr)
        self.assertIn("do not hash to its name", v.stderr)
        new = self.dir + "-restored"
        self.addCleanup(shutil.rmtree, new, True)
        r = self.srv.ctl("restore", self.dir, "--data", new)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("incomplete", r.stderr)

    def chunk_names(self, snap):
        listed = read(os.path.join(self.dir, "snapshots", snap, "chunks.list")).split("\n")
        return {x.split()[0] for x in listed if x}

    def chunk_file(self, h):
        return os.path.join(self.dir, "chunks", h[:2], h[2:4], h)

    def test_prune_removes_the_chunks_only_a_forgotten_snapshot_listed(self):
        keep, gone = body(11, 2 * 1024 * 1024), body(12, 2 * 1024 * 1024)
        self.upload("keep.bin", keep)
        self.upload("gone.bin", gone)
        self.backup()
        first = read(os.path.join(self.dir, "latest")).strip()
        r = self.srv.request("DELETE", "/api/v1/stores/%d/files/gone.bin" % self.sid, token=self.admin)
        self.assertIn(r.status, (200, 204), r)
        self.backup()
        second = read(os.path.join(self.dir, "latest")).strip()
        unique = self.chunk_names(first) - self.chunk_names(second)
        self.assertTrue(unique, "gone.bin had no chunk of its own")
        self.assertTrue(self.chunk_names(second))
        # A chunk file a failed backup left half-written goes too.
        leftover = os.path.join(self.dir, "chunks", "tmp", "half-written")
        with open(leftover, "wb") as f:
            f.write(b"x" * 100)

        # Without --keep-last both snapshots stay, and so does every chunk they list.
        p = self.srv.ctl("backup", "prune", self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("0 snapshots removed, 2 kept; 0 chunks removed", p.stdout)
        self.assertFalse(os.path.exists(leftover))
        for h in unique:
            self.assertTrue(os.path.exists(self.chunk_file(h)))

        # A backup into DIR holds its lock: prune waits its turn rather than race it.
        import fcntl
        with open(os.path.join(self.dir, ".lock"), "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            p = self.srv.ctl("backup", "prune", self.dir, "--keep-last", "1")
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("a backup into %s is running" % self.dir, p.stderr)
        self.assertTrue(os.path.isdir(os.path.join(self.dir, "snapshots", first)))

        p = self.srv.ctl("backup", "prune", self.dir, "--keep-last", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 snapshots removed, 1 kept; %d chunks removed" % len(unique), p.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "snapshots", first)))
        for h in unique:
            self.assertFalse(os.path.exists(self.chunk_file(h)), h)
        for h in self.chunk_names(second):
            self.assertTrue(os.path.exists(self.chunk_file(h)), h)
        v = self.srv.ctl("backup", "verify", self.dir)
        self.assertEqual(v.returncode, 0, v.stderr)
        self.assertEqual(self.srv.ctl("backup", "verify", self.dir, "--snapshot", first).returncode, 1)

        srv, admin = self.restore_and_start()
        try:
            g = srv.request("GET", "/api/v1/stores/%d/files/keep.bin" % self.sid, token=admin)
            self.assertEqual(sha(g.body), sha(keep))
            self.assertEqual(srv.request("GET", "/api/v1/stores/%d/files/gone.bin" % self.sid, token=admin).status,
                             404)
            srv.stop()
        finally:
            srv.cleanup()
        self.srv.start()

    def test_restore_refuses_a_directory_that_holds_data(self):
        self.upload("x.bin", b"x" * 5000)
        self.backup()
        r = self.srv.ctl("restore", self.dir, "--data", self.srv.data)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already holds data", r.stderr)

    def test_a_backup_into_the_data_directory_is_refused(self):
        r = self.srv.request("POST", "/api/v1/admin/backup", {"dir": os.path.join(self.srv.data, "bk")},
                             token=self.admin)
        self.assertProblem(r, 400, "may not contain each other")
        r = self.srv.request("POST", "/api/v1/admin/backup", {"dir": "relative/path"}, token=self.admin)
        self.assertProblem(r, 400, "absolute path")
        user = self.srv.add_user("eve", admin_token=self.admin)
        r = self.srv.request("POST", "/api/v1/admin/backup", {"dir": self.dir}, token=user)
        self.assertEqual(r.status, 403, r)


if __name__ == "__main__":
    main()

"""The integrity module through real clients: flip one byte of a chunk file on disk; the
scrub finds it, marks the file, notifies the owner and lists the finding; the download
refuses it with a clear problem (also when the bad chunk is not the first); fsck reports it;
healthy files still download; admin-only routes."""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402

MiB = 1024 * 1024


class IntegrityTest(ServerTest):
    modules = {"integrity": True}

    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    def req(self, method, path, body=None):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=self.tok)

    def chunk_path(self, sha):
        return os.path.join(self.srv.data, "chunks", sha[:2], sha[2:4], sha)

    def read(self, sha):
        with open(self.chunk_path(sha), "rb") as f:
            return f.read()

    def flip(self, sha, at=10):
        with open(self.chunk_path(sha), "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0xff]))

    def scrub(self):
        r = self.srv.request("POST", "/api/v1/admin/integrity/scrub", token=self.admin)
        self.assertEqual(r.status, 202, r)
        task = r.json()["task"]
        for _ in range(600):
            t = self.srv.request("GET", "/api/v1/tasks/%d" % task, token=self.admin).json()
            if t.get("state") in ("done", "failed", "cancelled"):
                break
            time.sleep(0.05)
        self.assertEqual(t.get("state"), "done", t)
        r = self.srv.request("GET", "/api/v1/admin/integrity", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_a_flipped_byte_is_found_by_the_scrub_refused_on_download_reported_by_fsck_and_listed(self):
        bad, good = b"precious bytes " * 3000, b"healthy " * 500  # bad: over 32 KiB, a chunk file
        self.assertEqual(self.req("PUT", "files/docs/bad.txt?parents=true", bad).status, 201)
        self.assertEqual(self.req("PUT", "files/good.txt", good).status, 201)
        sha = hashlib.sha256(bad).hexdigest()  # one small chunk: its name is the file's hash
        clean = self.scrub()
        self.assertEqual(clean["findings"], [])
        self.assertEqual(clean["scrub"]["chunks_checked"], 2)
        self.flip(sha)
        report = self.scrub()
        self.assertEqual(len(report["findings"]), 1, report)
        f = report["findings"][0]
        self.assertEqual((f["chunk"], f["kind"]), (sha, "corrupt"))
        self.assertEqual([(x["path"], x["version"], x["current"]) for x in f["files"]], [("docs/bad.txt", 1, True)])
        self.assertEqual(report["scrub"]["problems"], 1)
        # the download refuses it with a problem, never the bytes
        r = self.req("GET", "files/docs/bad.txt")
        p = self.assertProblem(r, 500)
        self.assertIn("damaged", p["detail"])
        self.assertNotIn(b"precious", r.body)
        self.assertEqual(self.req("GET", "files/good.txt").body, good)
        # fsck reports it
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin).json()
        self.assertEqual([(p["kind"], p["chunk"]) for p in r["problems"]], [("corrupt_chunk", sha)])
        # the owner was told
        n = self.srv.request("GET", "/api/v1/notifications", token=self.tok).json()
        text = repr(n)
        self.assertIn("damaged", text)
        self.assertIn("docs/bad.txt", text)

    def test_a_damaged_chunk_past_the_first_still_refuses_the_whole_download(self):
        data = os.urandom(9 * MiB)
        self.assertEqual(self.req("PUT", "files/big.bin", data).status, 201)
        chunks = []
        for root, dirs, files in os.walk(os.path.join(self.srv.data, "chunks")):
            if os.path.basename(root) != "tmp":
                chunks += files
        self.assertGreater(len(chunks), 1)
        first = [c for c in chunks if self.read(c) == data[:len(self.read(c))]]
        later = sorted(set(chunks) - set(first))[0]
        self.flip(later, at=100)
        report = self.scrub()
        self.assertEqual([x["chunk"] for x in report["findings"]], [later])
        # without the mark the first chunk would verify and a 200 would break off midway
        p = self.assertProblem(self.req("GET", "files/big.bin"), 500)
        self.assertIn("big.bin", p["detail"])
        # a missing chunk is a finding too
        os.unlink(self.chunk_path(first[0]))
        report = self.scrub()
        kinds = sorted((x["kind"], x["chunk"]) for x in report["findings"])
        self.assertEqual(kinds, sorted([("corrupt", later), ("missing", first[0])]))

    def test_overwriting_a_damaged_file_gives_a_healthy_new_version(self):
        self.assertEqual(self.req("PUT", "files/a.txt", b"first " * 6000).status, 201)
        self.flip(hashlib.sha256(b"first " * 6000).hexdigest())
        self.scrub()
        self.assertProblem(self.req("GET", "files/a.txt"), 500)
        self.assertEqual(self.req("PUT", "files/a.txt", b"second").status, 200)
        self.assertEqual(self.req("GET", "files/a.txt").body, b"second")

    def test_the_integrity_routes_are_for_admins_only(self):
        for m, p in (("POST", "/api/v1/admin/integrity/scrub"), ("GET", "/api/v1/admin/integrity")):
            self.assertProblem(self.srv.request(m, p, token=self.tok), 403)
            self.assertEqual(self.srv.request(m, p).status, 401)
        self.assertEqual(self.srv.request("GET", "/api/v1/admin/integrity/nope", token=self.admin).status, 404)


if __name__ == "__main__":
    main()

"""The file service through real clients: curl uploads and downloads (ranges, resume),
Python's http.client (chunked upload, conditionals), folders, move, copy, delete, content
types, the default store, fsck (also through mbytectl), a damaged chunk, and a restart."""
import ctypes
import hashlib
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import HeldRequest, Server, ServerTest, main, missing_prerequisite  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", os.path.join(os.path.dirname(__file__), "..", "..", "build", "tests",
                                                         "ldb_edit"))

BIG = 6 * 1024 * 1024 + 12345  # several chunks


def rnd(n, seed=1):
    out = bytearray()
    h = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64  # cheap, still content-defined-chunkable
    return bytes(out[:n])


class FilesTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        r = self.srv.request("GET", "/api/v1/stores", token=self.tok)
        self.assertEqual(r.status, 200, r)
        self.sid = r.json()[0]["id"]
        self.tmp = tempfile.mkdtemp(dir=self.srv.tmp)

    # ---- helpers ----
    def url(self, path):
        return "http://127.0.0.1:%d/api/v1/stores/%s/files/%s" % (self.srv.port, self.sid, path)

    def curl(self, *args):
        return subprocess.run(["curl", "-sS", "-H", "Authorization: Bearer " + self.tok] + list(args),
                              capture_output=True, timeout=120)

    def put(self, path, data, headers=None, query=""):
        return self.srv.request("PUT", "/api/v1/stores/%s/files/%s%s" % (self.sid, path, query), body=data,
                                token=self.tok, headers=headers)

    def get(self, path, headers=None):
        return self.srv.request("GET", "/api/v1/stores/%s/files/%s" % (self.sid, path), token=self.tok,
                                headers=headers)

    def post(self, what, body):
        return self.srv.request("POST", "/api/v1/stores/%s/%s" % (self.sid, what), body, token=self.tok)

    def names(self, path=""):
        r = self.srv.request("GET", "/api/v1/stores/%s/list%s" % (self.sid, "/" + path if path else ""),
                             token=self.tok)
        self.assertEqual(r.status, 200, r)
        return sorted(e["name"] for e in r.json()["entries"])

    def wait_named(self, name, timeout=120):
        """The content type of `name` once the background naming (libmagic on a SCHED_IDLE
        thread, which a busy CPU can starve for long) changed it from octet-stream. The
        deadline only ends a wait for something really stuck."""
        deadline = time.time() + timeout
        while True:
            r = self.srv.request("GET", "/api/v1/stores/%s/list" % self.sid, token=self.tok)
            self.assertEqual(r.status, 200, r)
            entry = [e for e in r.json()["entries"] if e["name"] == name][0]
            if entry["ctype"] != "application/octet-stream":
                return entry["ctype"]
            self.assertLess(time.time(), deadline, "%s was never named: %r" % (name, entry))
            time.sleep(0.05)

    def chunk_files(self):
        out = []
        for root, dirs, files in os.walk(os.path.join(self.srv.data, "chunks")):
            if os.path.basename(root) == "tmp":
                continue
            out += [os.path.join(root, f) for f in files]
        return out

    def fsck(self):
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def ldb(self, *args):
        """ldb_edit on the (stopped) server's LevelDB: its output."""
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta")] + list(args), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.decode("latin-1")

    def inline_keys(self):
        """The inline chunks in the (stopped) server's LevelDB."""
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--keys", "ci/"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        return sorted(k[3:] for k in p.stdout.split())

    # ---- tests ----
    def test_small_files_live_in_the_metadata_database_and_read_back(self):
        small = {"empty": b"", "one": b"x", "four.bin": rnd(4096, 3), "limit.bin": rnd(32768, 4)}
        for name, data in small.items():
            self.assertIn(self.put(name, data).status, (200, 201))
        over = rnd(32769, 5)
        self.assertEqual(self.put("over.bin", over).status, 201)
        # only the file over chunk_inline_max (32 KiB by default) has a chunk file
        self.assertEqual([os.path.basename(p) for p in self.chunk_files()], [hashlib.sha256(over).hexdigest()])
        for name, data in list(small.items()) + [("over.bin", over)]:
            r = self.get(name)
            self.assertEqual((r.status, r.body), (200, data), name)
        r = self.get("four.bin", headers={"Range": "bytes=100-199"})
        self.assertEqual((r.status, r.body), (206, small["four.bin"][100:200]))
        self.assertEqual(self.fsck()["problems"], [])
        # a copy shares the inline chunk; deleting both lets the collector drop it
        self.assertEqual(self.post("copy", {"from": "four.bin", "to": "four2.bin"}).status, 201)
        self.srv.stop()
        h4 = hashlib.sha256(small["four.bin"]).hexdigest()
        self.assertIn(h4, self.inline_keys())
        self.srv.extra_env["MBYTE_GC_GRACE"] = "0"
        self.srv.start()
        for name in ("four.bin", "four2.bin"):
            self.assertEqual(self.srv.request("DELETE", "/api/v1/stores/%s/files/%s" % (self.sid, name),
                                              token=self.tok).status, 204)
        p = self.srv.ctl("fsck", "--repair")  # runs the collector (grace 0 here)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.srv.stop()
        keys = self.inline_keys()
        self.assertNotIn(h4, keys)
        self.assertIn(hashlib.sha256(small["limit.bin"]).hexdigest(), keys)
        self.srv.start()
        self.assertEqual(self.get("limit.bin").body, small["limit.bin"])

    def test_sha256_is_right_on_both_sides_of_the_smallest_chunk(self):
        # Up to the smallest chunk (256 KiB) a file is one chunk and its bytes are hashed
        # once; one byte more and the file's own digest is kept from the start. Both sides,
        # sent whole and in small pieces (chunked), must report and store the real SHA-256.
        for size in (262143, 262144, 262145, 600000):
            data = rnd(size, size % 97)
            want = hashlib.sha256(data).hexdigest()
            r = self.put("edge-%d.bin" % size, data)
            self.assertIn(r.status, (200, 201))
            self.assertEqual(r.json()["sha256"], want, size)
            c = self.srv.conn()
            c.request("PUT", "/api/v1/stores/%s/files/edge-c-%d.bin" % (self.sid, size),
                      body=(data[i:i + 7000] for i in range(0, size, 7000)), encode_chunked=True,
                      headers={"Authorization": "Bearer " + self.tok, "Transfer-Encoding": "chunked"})
            r2 = c.getresponse()
            self.assertEqual(json.loads(r2.read())["sha256"], want, size)
            c.close()
            for name in ("edge-%d.bin" % size, "edge-c-%d.bin" % size):
                g = self.get(name)
                self.assertEqual((g.status, g.body), (200, data), name)
        self.assertEqual(self.fsck()["problems"], [])

    def test_small_files_bytes_are_kept_in_the_order_they_were_written_and_once(self):
        # The body records (cb/<sequence><sha256>) sort in the order of writing, so LevelDB moves
        # them down its levels instead of rewriting them; ci/<sha256> names the record.
        datas = [rnd(3000 + i, 40 + i) for i in range(8)]
        for i, d in enumerate(datas):
            self.assertEqual(self.put("s%d.bin" % i, d).status, 201)
        # the same bytes again, under other names and twice in one file's place: no second body
        self.assertEqual(self.put("again.bin", datas[3]).status, 201)
        self.assertEqual(self.put("s5.bin", datas[5]).status, 200)
        self.assertEqual(self.get("again.bin").body, datas[3])
        self.assertEqual(self.fsck()["problems"], [])
        self.srv.stop()
        bodies = self.ldb("--keys", "cb/").split()
        self.assertEqual([k[19:] for k in bodies], [hashlib.sha256(d).hexdigest() for d in datas])
        self.assertEqual(bodies, sorted(bodies))
        for k in bodies:
            self.assertEqual(self.ldb("--get", "ci/" + k[19:]), "\x02" + k[3:19] + "\n")
        self.srv.start()
        for i, d in enumerate(datas):
            self.assertEqual(self.get("s%d.bin" % i).body, d)

    def test_an_inline_body_its_chunk_lost_is_found_by_fsck_and_named_again(self):
        data = b"words kept apart " * 100
        self.assertEqual(self.put("apart.txt", data).status, 201)
        self.assertEqual(self.put("other.txt", b"another " * 100).status, 201)
        self.srv.stop()
        h = hashlib.sha256(data).hexdigest()
        [body] = [k for k in self.ldb("--keys", "cb/").split() if k.endswith(h)]
        # the body record moves to another sequence: ci/ names a record that is not there, and
        # the record holding the bytes is named by nobody
        self.ldb("--rename", body, "cb/0000000000000001" + h)
        self.srv.start()
        self.assertProblem(self.get("apart.txt"), 500)
        kinds = sorted(x["kind"] for x in self.fsck()["problems"])
        self.assertEqual(kinds, ["corrupt_chunk", "inline_orphan"])
        p = self.srv.ctl("fsck", "--repair")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        r = self.get("apart.txt")
        self.assertEqual((r.status, r.body), (200, data))
        self.assertEqual(self.get("other.txt").body, b"another " * 100)
        self.assertEqual(self.fsck()["problems"], [])

    def test_a_damaged_inline_chunk_is_refused_and_reported_by_fsck(self):
        data = b"precious little words " * 100
        self.assertEqual(self.put("small.txt", data).status, 201)
        self.srv.stop()
        h = hashlib.sha256(data).hexdigest()
        [body] = [k for k in self.ldb("--keys", "cb/").split() if k.endswith(h)]
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), body, "little", "LITTLE"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        r = self.get("small.txt")
        self.assertProblem(r, 500)
        self.assertNotIn(b"little", r.body)
        self.assertNotIn(b"LITTLE", r.body)
        kinds = [x["kind"] for x in self.fsck()["problems"]]
        self.assertEqual(kinds, ["corrupt_chunk"])

    def test_with_chunk_inline_max_zero_every_chunk_is_a_file(self):
        srv = Server(conf={"chunk_inline_max": 0})
        self.addCleanup(srv.cleanup)
        srv.start()
        tok = srv.login()
        sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
        data = b"tiny"
        self.assertEqual(srv.request("PUT", "/api/v1/stores/%s/files/t.txt" % sid, data, token=tok).status, 201)
        h = hashlib.sha256(data).hexdigest()
        self.assertTrue(os.path.exists(os.path.join(srv.data, "chunks", h[:2], h[2:4], h)))
        self.assertEqual(srv.request("GET", "/api/v1/stores/%s/files/t.txt" % sid, token=tok).body, data)
        srv.stop()

    def test_a_new_user_gets_a_default_store_named_home(self):
        r = self.srv.request("GET", "/api/v1/stores", token=self.tok)
        stores = r.json()
        self.assertEqual(len(stores), 1)
        self.assertEqual(stores[0]["name"], "Home")
        self.assertEqual(self.names(), [])

    def test_curl_upload_and_download_are_byte_identical(self):
        data = rnd(BIG)
        src = os.path.join(self.tmp, "src.bin")
        open(src, "wb").write(data)
        p = self.curl("-T", src, "-w", "%{http_code}", "-o", os.path.join(self.tmp, "resp"),
                      self.url("docs/big.bin?parents=true"))
        self.assertEqual(p.stdout, b"201", p)
        info = json.load(open(os.path.join(self.tmp, "resp")))
        self.assertEqual(info["size"], len(data))
        self.assertEqual(info["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(info["path"], "docs/big.bin")
        dst = os.path.join(self.tmp, "dst.bin")
        p = self.curl("-o", dst, "-w", "%{http_code}", self.url("docs/big.bin"))
        self.assertEqual(p.stdout, b"200")
        self.assertEqual(open(dst, "rb").read(), data)
        self.assertGreaterEqual(len(self.chunk_files()), 3)

    def test_curl_ranges_single_multiple_and_unsatisfiable(self):
        data = rnd(BIG, 2)
        self.assertEqual(self.put("r.bin", data).status, 201)
        p = self.curl("-r", "1000-1999", "-D", "-", "-o", os.path.join(self.tmp, "part"), self.url("r.bin"))
        self.assertIn(b"206", p.stdout.split(b"\r\n")[0])
        self.assertIn(b"Content-Range: bytes 1000-1999/%d" % len(data), p.stdout)
        self.assertEqual(open(os.path.join(self.tmp, "part"), "rb").read(), data[1000:2000])
        # a range that crosses a chunk boundary and the suffix form
        r = self.get("r.bin", {"Range": "bytes=%d-%d" % (BIG - 5000000, BIG - 100)})
        self.assertEqual(r.status, 206)
        self.assertEqual(r.body, data[BIG - 5000000:BIG - 99])
        r = self.get("r.bin", {"Range": "bytes=-10"})
        self.assertEqual(r.body, data[-10:])
        # multiple ranges: multipart/byteranges
        p = self.curl("-r", "0-9,5000000-5000009", "-D", os.path.join(self.tmp, "h"), "-o",
                      os.path.join(self.tmp, "mp"), self.url("r.bin"))
        hdrs = open(os.path.join(self.tmp, "h"), "rb").read().decode()
        self.assertIn("206", hdrs.split("\r\n")[0])
        self.assertIn("multipart/byteranges; boundary=", hdrs)
        body = open(os.path.join(self.tmp, "mp"), "rb").read()
        self.assertIn(b"Content-Range: bytes 0-9/%d\r\n\r\n" % BIG + data[0:10], body)
        self.assertIn(b"Content-Range: bytes 5000000-5000009/%d\r\n\r\n" % BIG + data[5000000:5000010], body)
        # unsatisfiable
        r = self.get("r.bin", {"Range": "bytes=%d-" % (BIG + 1)})
        self.assertProblem(r, 416)
        self.assertEqual(r.header("Content-Range"), "bytes */%d" % BIG)
        # An error names no file: `curl -OJ` would save the problem text as r.bin (issue 25).
        self.assertIsNone(r.header("Content-Disposition"), r.headers)
        r = self.get("r.bin", {"If-Match": '"not-the-etag"'})
        self.assertProblem(r, 412)
        self.assertIsNone(r.header("Content-Disposition"), r.headers)
        self.assertIn("attachment", self.get("r.bin", {"Range": "bytes=0-1"}).header("Content-Disposition"))

    def test_curl_resumes_an_interrupted_download(self):
        data = rnd(BIG, 3)
        self.assertEqual(self.put("resume.bin", data).status, 201)
        out = os.path.join(self.tmp, "partial")
        open(out, "wb").write(data[:1234567])  # what an interrupted transfer left
        p = self.curl("-C", "-", "-o", out, self.url("resume.bin"))
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(open(out, "rb").read(), data)

    def test_python_chunked_upload_and_replace_gives_200_with_new_content(self):
        parts = [rnd(100000, i) for i in range(30)]
        c = self.srv.conn()
        c.request("PUT", "/api/v1/stores/%s/files/chunked.bin" % self.sid, body=iter(parts),
                  headers={"Authorization": "Bearer " + self.tok}, encode_chunked=True)
        r = c.getresponse()
        info = json.loads(r.read())
        c.close()
        self.assertEqual(r.status, 201, info)
        whole = b"".join(parts)
        self.assertEqual(info["size"], len(whole))
        self.assertEqual(self.get("chunked.bin").body, whole)
        r = self.put("chunked.bin", b"new content")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], 2)
        self.assertEqual(self.get("chunked.bin").body, b"new content")
        self.assertEqual(self.fsck()["problems"], [])

    def test_etag_if_none_match_if_modified_since_and_if_range(self):
        data = rnd(300000, 4)
        self.put("c.bin", data)
        r = self.get("c.bin")
        etag = r.header("ETag")
        self.assertEqual(etag, '"%s"' % hashlib.sha256(data).hexdigest())
        self.assertEqual(r.header("Accept-Ranges"), "bytes")
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
        lm = r.header("Last-Modified")
        self.assertEqual(self.get("c.bin", {"If-None-Match": etag}).status, 304)
        self.assertEqual(self.get("c.bin", {"If-None-Match": '"other"'}).status, 200)
        self.assertEqual(self.get("c.bin", {"If-Modified-Since": lm}).status, 304)
        r = self.get("c.bin", {"Range": "bytes=0-9", "If-Range": etag})
        self.assertEqual((r.status, r.body), (206, data[:10]))
        r = self.get("c.bin", {"Range": "bytes=0-9", "If-Range": '"stale"'})
        self.assertEqual((r.status, r.body), (200, data))
        r = self.get("c.bin", {"Range": "bytes=0-9", "If-Range": lm})
        self.assertEqual(r.status, 206)
        r = self.srv.request("HEAD", "/api/v1/stores/%s/files/c.bin" % self.sid, token=self.tok)
        self.assertEqual((r.status, r.body, r.header("Content-Length")), (200, b"", str(len(data))))

    def test_if_none_match_star_and_if_match_make_overwrites_safe(self):
        self.assertEqual(self.put("s.txt", b"one", {"If-None-Match": "*"}).status, 201)
        self.assertProblem(self.put("s.txt", b"two", {"If-None-Match": "*"}), 412)
        etag = self.get("s.txt").header("ETag")
        self.assertProblem(self.put("s.txt", b"two", {"If-Match": '"%s"' % ("0" * 64)}), 412)
        self.assertEqual(self.put("s.txt", b"two", {"If-Match": etag}).status, 200)
        self.assertEqual(self.get("s.txt").body, b"two")

    def test_folders_list_and_recursive_list(self):
        self.assertEqual(self.post("folders", {"path": "a"}).status, 201)
        self.assertProblem(self.post("folders", {"path": "a"}), 409)
        self.assertProblem(self.post("folders", {"path": "x/y"}), 409)
        self.assertEqual(self.post("folders", {"path": "x/y", "parents": True}).status, 201)
        self.put("a/f1.txt", b"hello")
        self.put("x/y/f2.txt", b"world")
        self.assertEqual(self.names(), ["a", "x"])
        self.assertEqual(self.names("a"), ["f1.txt"])
        r = self.srv.request("GET", "/api/v1/stores/%s/list?recursive=true" % self.sid, token=self.tok)
        rel = sorted(e["relpath"] for e in r.json()["entries"])
        self.assertEqual(rel, ["a", "a/f1.txt", "x", "x/y", "x/y/f2.txt"])
        e = [e for e in r.json()["entries"] if e["relpath"] == "a/f1.txt"][0]
        for k in ("name", "type", "size", "mtime", "ctype", "sha256", "version", "created_by"):
            self.assertIn(k, e)

    def test_missing_parent_is_409_unless_parents_true(self):
        self.assertProblem(self.put("no/such/f.txt", b"x"), 409, "does not exist")
        self.assertEqual(self.put("no/such/f.txt", b"x", query="?parents=true").status, 201)
        self.assertEqual(self.names("no"), ["such"])

    def test_move_and_rename_of_a_file_and_a_folder_subtree(self):
        self.put("d/sub/deep.txt", b"deep", query="?parents=true")
        self.put("d/top.txt", b"top")
        r = self.post("move", {"from": "d/top.txt", "to": "d/renamed.txt"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.names("d"), ["renamed.txt", "sub"])
        r = self.post("move", {"from": "d", "to": "moved/d2"})
        self.assertProblem(r, 409)
        self.post("folders", {"path": "moved"})
        self.assertEqual(self.post("move", {"from": "d", "to": "moved/d2"}).status, 200)
        self.assertEqual(self.names(), ["moved"])
        self.assertEqual(self.get("moved/d2/sub/deep.txt").body, b"deep")
        self.assertProblem(self.post("move", {"from": "moved", "to": "moved/d2/inside"}), 409, "into itself")
        self.put("other.txt", b"o")
        self.assertProblem(self.post("move", {"from": "other.txt", "to": "moved/d2/renamed.txt"}), 409)
        r = self.post("move", {"from": "other.txt", "to": "moved/d2/renamed.txt", "overwrite": True})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.get("moved/d2/renamed.txt").body, b"o")
        self.assertEqual(self.fsck()["problems"], [])

    def test_copy_shares_chunks_and_the_chunk_dir_does_not_grow(self):
        data = rnd(BIG, 5)
        self.put("orig.bin", data)
        self.put("f/inner.bin", rnd(500000, 6), query="?parents=true")
        before = sorted(self.chunk_files())
        r = self.post("copy", {"from": "orig.bin", "to": "copy.bin"})
        self.assertEqual(r.status, 201, r)
        r = self.post("copy", {"from": "f", "to": "g"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(sorted(self.chunk_files()), before)
        self.assertEqual(self.get("copy.bin").body, data)
        self.assertEqual(self.get("g/inner.bin").body, rnd(500000, 6))
        # the original can go; the copy keeps the chunks alive
        self.assertEqual(self.srv.request("DELETE", "/api/v1/stores/%s/files/orig.bin" % self.sid,
                                          token=self.tok).status, 204)
        self.assertEqual(self.get("copy.bin").body, data)
        self.assertEqual(self.fsck()["problems"], [])

    def test_delete_file_and_folder_recursive_only_when_asked(self):
        self.put("k/a.txt", b"a", query="?parents=true")
        self.put("k/b/c.txt", b"c", query="?parents=true")
        d = lambda p, q="": self.srv.request("DELETE", "/api/v1/stores/%s/files/%s%s" % (self.sid, p, q),
                                             token=self.tok)
        self.assertProblem(d("k"), 409, "not empty")
        self.assertEqual(d("k/a.txt").status, 204)
        self.assertProblem(self.get("k/a.txt"), 404)
        self.assertEqual(d("k", "?recursive=true").status, 204)
        self.assertEqual(self.names(), [])
        report = self.fsck()
        self.assertEqual(report["problems"], [])

    def test_unreferenced_chunks_are_collected_after_the_grace(self):
        srv = Server(env={"MBYTE_GC_GRACE": "0"})
        srv.start()
        try:
            tok = srv.add_user("bob")
            sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
            srv.request("PUT", "/api/v1/stores/%s/files/x.bin" % sid, body=rnd(400000, 9), token=tok)
            chunks = os.path.join(srv.data, "chunks")
            count = lambda: sum(len(f) for r, d, f in os.walk(chunks) if not r.endswith("tmp"))
            self.assertEqual(count(), 1)
            srv.request("DELETE", "/api/v1/stores/%s/files/x.bin" % sid, token=tok)
            self.assertEqual(count(), 1)  # the collector, not the delete, removes bytes
            p = srv.ctl("fsck", "--repair")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(count(), 0)
        finally:
            srv.stop()
            srv.cleanup()

    def test_client_digest_mismatch_stores_nothing(self):
        data = rnd(5000000, 7)
        before = sorted(self.chunk_files())
        good = hashlib.sha256(data).hexdigest()
        bad = hashlib.sha256(b"something else").hexdigest()
        self.assertProblem(self.put("d.bin", data, {"X-Checksum-Sha256": bad}), 400, "SHA-256")
        import base64
        b64 = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
        self.assertProblem(self.put("d.bin", data, {"Content-Digest": "sha-256=:%s:" % b64}), 400)
        self.assertProblem(self.put("d.bin", data, {"Digest": "SHA-256=%s" % b64}), 400)
        self.assertEqual(self.names(), [])
        self.assertEqual(sorted(self.chunk_files()), before)
        r = self.put("d.bin", data, {"X-Checksum-Sha256": good})
        self.assertEqual(r.status, 201)
        b64 = base64.b64encode(hashlib.sha256(b"tiny").digest()).decode()
        self.assertEqual(self.put("t.txt", b"tiny", {"Content-Digest": "sha-256=:%s:" % b64}).status, 201)

    def test_content_type_from_signature_extension_text_then_libmagic(self):
        png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64
        self.assertEqual(self.put("pic.dat", png).json()["ctype"], "image/png")
        self.assertEqual(self.put("report", b"%PDF-1.7\n%\xe2\xe3\n").json()["ctype"], "application/pdf")
        zipped = b"PK\x03\x04\x14\x00" + b"\x00" * 40
        self.assertEqual(self.put("a.zip", zipped).json()["ctype"], "application/zip")
        self.assertEqual(self.put("a.docx", zipped).json()["ctype"],
                         "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        self.assertEqual(self.put("Makefile", b"all:\n\tcc -o x x.c\n").json()["ctype"], "text/plain")
        # HTML content is never sniffed into text/html: only a name says so
        self.assertEqual(self.put("nohtml", b"<html><script>alert(1)</script>").json()["ctype"], "text/plain")
        # libmagic names, in the background, what no signature or extension does (a Java class
        # file is not in sniff.c's table): octet-stream at first, then libmagic's answer
        self.assertEqual(self.put("Thing", b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\x00" * 64).json()["ctype"],
                         "application/octet-stream")
        self.assertEqual(self.wait_named("Thing"), "application/x-java-applet")
        self.assertEqual(self.get("Thing").header("Content-Type"), "application/x-java-applet")
        self.srv.stop()  # the marker that asked for libmagic is gone with the answer
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--keys", "cm/"], capture_output=True,
                           text=True)
        self.assertEqual((p.returncode, p.stdout), (0, ""), p.stderr)
        self.srv.start()
        self.assertEqual(self.put("style.css", b"body { color: red; }\n").json()["ctype"], "text/css")
        self.assertEqual(self.put("notes.txt", b"just words\n").json()["ctype"], "text/plain")
        self.assertEqual(self.put("blob", rnd(1000, 8)).json()["ctype"], "application/octet-stream")
        r = self.get("pic.dat")
        self.assertEqual(r.header("Content-Type"), "image/png")
        self.assertTrue(r.header("Content-Disposition").startswith("inline"))
        page = self.put("page.html", b"<html><script>alert(1)</script></html>")
        r = self.get("page.html")
        self.assertTrue(r.header("Content-Disposition").startswith("attachment"), r.headers)
        self.assertEqual(self.put("caf%C3%A9%20%22q%22.txt", b"x").status, 201)
        r = self.srv.request("GET", "/api/v1/stores/%s/files/caf%%C3%%A9%%20%%22q%%22.txt?download=1" % self.sid,
                             token=self.tok)
        cd = r.header("Content-Disposition")
        self.assertTrue(cd.startswith("attachment"), cd)
        self.assertIn("filename*=UTF-8''caf%C3%A9%20%22q%22.txt", cd)
        self.assertIn('filename="caf__ _q_.txt"', cd)

    def test_a_content_type_left_to_name_survives_a_restart(self):
        # Naming waits for an idle minute here, so the server stops before it happens.
        self.srv.stop()
        self.srv.extra_env["MBYTE_CTYPE_IDLE_MS"] = "60000"
        self.srv.start()
        klass = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\x00" * 64
        self.assertEqual(self.put("Later", klass).json()["ctype"], "application/octet-stream")
        self.srv.stop()
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--keys", "cm/"], capture_output=True,
                           text=True)
        self.assertEqual(len(p.stdout.split()), 1, p.stdout)  # the marker is durable
        del self.srv.extra_env["MBYTE_CTYPE_IDLE_MS"]
        self.srv.start()
        self.assertEqual(self.wait_named("Later"), "application/x-java-applet")
        r = self.get("Later")
        self.assertEqual((r.status, r.header("Content-Type"), r.body), (200, "application/x-java-applet", klass))

    def test_chunk_files_are_written_and_read_back_with_the_data_dir_on_tmpfs(self):
        # Chunk files go to disk with O_DIRECT. tmpfs refused it before Linux 6.6 (blob.c then
        # writes the ordinary way) and accepts it since; either way uploads must work there.
        mnt = tempfile.mkdtemp(dir=self.srv.tmp)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], capture_output=True, text=True)
        if p.returncode:
            missing_prerequisite(self, "cannot mount a tmpfs here (the test must run as root): "
                                 + (p.stderr.strip() or "mount failed"))
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        srv = Server(data_dir=os.path.join(mnt, "data"))
        self.addCleanup(srv.cleanup)
        srv.start()
        tok = srv.login()
        sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
        data = rnd(3 * 1024 * 1024 + 77, 11)
        self.assertEqual(srv.request("PUT", "/api/v1/stores/%s/files/t.bin" % sid, data, token=tok).status, 201)
        self.assertEqual(srv.request("GET", "/api/v1/stores/%s/files/t.bin" % sid, token=tok).body, data)
        srv.stop()

    def test_fsck_is_clean_through_mbytectl_and_a_flipped_byte_is_caught(self):
        data = b"precious bytes " * 3000  # over chunk_inline_max: one chunk file
        self.put("p.txt", data)
        self.put("q/r.bin", rnd(BIG, 10), query="?parents=true")
        p = self.srv.ctl("fsck")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(json.loads(p.stdout)["problems"], [])
        # one chunk holds the small file: its name is the file's hash
        h = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.srv.data, "chunks", h[:2], h[2:4], h)
        with open(path, "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 1]))
        r = self.get("p.txt")
        self.assertProblem(r, 500)
        self.assertNotIn(data[:50], r.body)
        p = self.srv.ctl("fsck")
        self.assertEqual(p.returncode, 1, p.stdout)
        kinds = [x["kind"] for x in json.loads(p.stdout)["problems"]]
        self.assertEqual(kinds, ["corrupt_chunk"])

    def test_a_store_and_its_files_survive_a_restart(self):
        data = rnd(BIG, 11)
        self.put("keep/me.bin", data, query="?parents=true")
        self.srv.stop()
        self.srv.start()
        self.tok = self.srv.login("alice", "user-password-1")
        self.assertEqual(self.names("keep"), ["me.bin"])
        self.assertEqual(self.get("keep/me.bin").body, data)
        self.assertEqual(self.fsck()["problems"], [])


# ---- issue 28: promises of docs/api.md that no test checked (concurrent requests) ----------
class ConcurrentWritesTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    put, get = FilesTest.put, FilesTest.get

    def test_if_match_is_checked_again_at_commit_so_one_of_two_concurrent_puts_gets_412(self):
        old = rnd(200000, 1)
        self.assertEqual(self.put("doc.bin", old).status, 201)
        etag = '"%s"' % hashlib.sha256(old).hexdigest()
        a, b = rnd(300000, 2), rnd(300000, 3)
        path = "/api/v1/stores/%s/files/doc.bin" % self.sid
        h = {"Authorization": "Bearer " + self.tok, "If-Match": etag, "Content-Type": "application/octet-stream"}
        # Both PUTs passed the If-Match check at their start (the file is still the old one
        # for both) before either commits.
        first = HeldRequest(self, self.srv, "PUT", path, a, 65536, h)
        second = HeldRequest(self, self.srv, "PUT", path, b, 65536, h)
        won = first.finish()
        lost = second.finish()
        self.assertEqual(won.status, 200, won)
        self.assertProblem(lost, 412, "If-Match")
        r = self.get("doc.bin")
        self.assertEqual((r.status, hashlib.sha256(r.body).hexdigest()), (200, hashlib.sha256(a).hexdigest()))
        self.assertEqual(r.header("ETag"), '"%s"' % hashlib.sha256(a).hexdigest())
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin).json()["problems"], [])


def resident_pages(path):
    """Which 4 KiB pages of the file at path are in the page cache (mincore(2) of a shared
    read-only mapping; mapping touches no page)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        vec = ctypes.create_string_buffer(pages)
        try:
            if libc.mincore(addr, size, vec):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return [bool(b & 1) for b in vec.raw[:pages]]


class ChunkDirectIoTest(ServerTest):
    """chunk_direct_io (docs/operations.md): by default a chunk file is written around the page
    cache (O_DIRECT), so the first download of a new file reads the disk; with false its pages stay
    in the page cache for that download. The pages are read off with mincore(2); the first 8 KiB of a
    file may be read back by the type naming (libmagic) and its last partial page is written
    through the cache either way, so the direct case looks at the pages between."""

    def setUp(self):
        super().setUp()
        self.tok = self.admin
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    chunk_files = FilesTest.chunk_files

    def upload_and_look(self):
        data = os.urandom(3 * 1024 * 1024 + 4097)
        before = set(self.chunk_files())
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/c.bin" % self.sid, body=data, token=self.tok)
        self.assertEqual(r.status, 201, r)
        new = sorted(set(self.chunk_files()) - before)
        self.assertGreaterEqual(len(new), 1)
        pages = [resident_pages(f) for f in new]
        r = self.srv.request("GET", "/api/v1/stores/%s/files/c.bin" % self.sid, token=self.tok)
        self.assertEqual((r.status, hashlib.sha256(r.body).hexdigest()), (200, hashlib.sha256(data).hexdigest()))
        return pages

    def test_by_default_a_new_files_chunks_are_not_left_in_the_page_cache(self):
        pages = self.upload_and_look()
        middle = [p for f in pages for p in f[2:-1]]
        self.assertGreater(len(middle), 500)
        self.assertEqual(sum(middle), 0, "pages of a chunk written with O_DIRECT are in the page cache")


class ChunkCachedIoTest(ChunkDirectIoTest):
    conf = {"chunk_direct_io": "false"}
    test_by_default_a_new_files_chunks_are_not_left_in_the_page_cache = None

    def test_with_chunk_direct_io_off_a_new_files_chunks_stay_in_the_page_cache(self):
        pages = self.upload_and_look()
        every = [p for f in pages for p in f]
        self.assertEqual(sum(every), len(every), "pages of a chunk written through the page cache went missing")


if __name__ == "__main__":
    main()

"""tus 1.0 resumable uploads (/api/v1/uploads): a real tus client (tus-js-client under node)
resuming an interrupted upload, and the protocol's rules checked raw with http.client.
Also the folder-as-zip download, which is served by kernel/zip.c."""
import base64
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, HeldRequest, ServerTest, main  # noqa: E402

NODE_DIR = os.path.join(SRC, "tests", "node")
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def b64(s):
    return base64.b64encode(s.encode()).decode()


def metadata(**kv):
    return ",".join("%s %s" % (k, b64(str(v))) for k, v in kv.items())


class TusBase(ServerTest):
    def setUp(self):
        super().setUp()
        self.sid = self.store_of(self.admin)

    def store_of(self, token):
        r = self.srv.request("GET", "/api/v1/stores", token=token)
        self.assertEqual(r.status, 200, r)
        return r.json()[0]["id"]

    def create(self, length, path="/f.bin", token=None, sid=None, extra=None, **meta):
        h = dict(TUS, **{"Upload-Length": str(length),
                         "Upload-Metadata": metadata(store=sid if sid is not None else self.sid, path=path, **meta)})
        h.update(extra or {})
        return self.srv.request("POST", "/api/v1/uploads", b"", token=token or self.admin, headers=h)

    def created(self, length, path="/f.bin", **kw):
        r = self.create(length, path, **kw)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.header("Tus-Resumable"), "1.0.0")
        self.assertTrue(r.header("Upload-Expires"))
        loc = r.header("Location")
        self.assertTrue(loc.startswith("/api/v1/uploads/"), loc)
        return loc

    def patch(self, loc, offset, data, token=None, ctype=OCTETS, extra=None):
        h = dict(TUS, **{"Upload-Offset": str(offset), "Content-Type": ctype})
        h.update(extra or {})
        return self.srv.request("PATCH", loc, data, token=token or self.admin, headers=h)

    def head(self, loc, token=None):
        return self.srv.request("HEAD", loc, token=token or self.admin, headers=TUS)

    def download(self, path, token=None):
        return self.srv.request("GET", "/api/v1/stores/%s/files%s" % (self.sid, path), token=token or self.admin)

    def wait_released(self, loc, timeout=60):
        """The upload's offset once no PATCH holds it any more. An empty PATCH at the recorded
        offset says whether one does: 423 while a (dead) PATCH still holds the upload, 409 if
        the offset moved since the HEAD, 204 once it is free."""
        deadline = time.time() + timeout
        while True:
            r = self.head(loc)
            self.assertEqual(r.status, 200, r)
            offset = int(r.header("Upload-Offset"))
            probe = self.patch(loc, offset, b"")
            if probe.status == 204:
                self.assertEqual(int(probe.header("Upload-Offset")), offset)
                return offset
            self.assertIn(probe.status, (409, 423), probe)
            self.assertLess(time.time(), deadline, "the server never let go of the upload")
            time.sleep(0.05)

    def held_patch(self, loc, offset, data, split, extra=None):
        h = dict(TUS, **{"Upload-Offset": str(offset), "Content-Type": OCTETS, "Authorization": "Bearer " + self.admin})
        h.update(extra or {})
        return HeldRequest(self, self.srv, "PATCH", loc, data, split, h)



class TusTest(TusBase):
    # ------------------------------------------------------------ a real client ---

    def run_node(self, path, file, url=None, freeze_at=0):
        args = ["node", os.path.join(NODE_DIR, "tus_upload.js"),
                "http://127.0.0.1:%d/api/v1/uploads" % self.srv.port, self.admin, file,
                '{"store": "%s", "path": "%s"}' % (self.sid, path)]
        if url:
            args.append(url)
        env = dict(os.environ, TUS_FREEZE_AT=str(freeze_at), TUS_CHUNK_SIZE=str(4 << 20))
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=NODE_DIR,
                                env=env)

    def test_tus_js_client_resumes_an_interrupted_64mib_upload(self):
        size = 64 << 20
        tmp = tempfile.mkdtemp(prefix="mbyte-tus-")
        self.addCleanup(shutil.rmtree, tmp, True)
        src = os.path.join(tmp, "big.bin")
        digest = hashlib.sha256()
        with open(src, "wb") as f:
            for _ in range(size // (1 << 20)):
                block = os.urandom(1 << 20)
                digest.update(block)
                f.write(block)

        # First process: stops sending once half of the file went out, then is killed.
        p = self.run_node("/big.bin", src, freeze_at=size // 2)
        url, killed_at = None, 0
        for line in p.stdout:
            if line.startswith("url "):
                url = line.split(" ", 1)[1].strip()
            elif line.startswith("frozen "):
                killed_at = int(line.split()[1])
                p.send_signal(signal.SIGKILL)
                break
            elif line.startswith(("done", "error")):
                self.fail("the first upload was not interrupted: " + line)
        p.wait()
        p.stdout.close()
        self.assertTrue(url, "tus-js-client never reported its upload URL")
        self.assertGreater(killed_at, 0)
        loc = url[url.index("/api/v1/uploads/"):]

        # The bytes that reached the server before the kill are kept (resumable): wait until
        # the server noticed the dead connection, recorded them and let go of the upload.
        offset = self.wait_released(loc)
        self.assertGreater(offset, 0)
        r = self.head(loc)
        self.assertLess(offset, size)
        self.assertEqual(int(r.header("Upload-Length")), size)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        self.assertEqual(self.download("/big.bin").status, 404, "a partial upload must not be visible")

        # Second process: resumes from the stored URL and finishes.
        p = self.run_node("/big.bin", src, url)
        out, _ = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("done " + url, out)
        self.assertNotIn("refused ", out)  # the resume never met an error answer
        first_progress = [int(l.split()[1]) for l in out.splitlines() if l.startswith("progress ")]
        self.assertTrue(first_progress and first_progress[0] > offset - 1, out)

        r = self.download("/big.bin")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), size)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), digest.hexdigest())
        # The part file is gone once the upload was committed.
        self.assertEqual([n for n in os.listdir(os.path.join(self.srv.data, "uploads")) if n.endswith(".part")], [])

    # -------------------------------------------------------------- protocol ---

    def test_options_advertises_version_extensions_and_checksums(self):
        r = self.srv.request("OPTIONS", "/api/v1/uploads")
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Tus-Resumable"), "1.0.0")
        self.assertIn("1.0.0", r.header("Tus-Version"))
        self.assertEqual(set(r.header("Tus-Extension").split(",")),
                         {"creation", "termination", "checksum", "expiration"})
        self.assertEqual(set(r.header("Tus-Checksum-Algorithm").split(",")), {"sha1", "sha256"})
        self.assertGreater(int(r.header("Tus-Max-Size")), 0)

    def test_upload_in_pieces_reads_back_byte_identical(self):
        data = os.urandom(300000)
        loc = self.created(len(data), "/pieces.bin")
        r = self.head(loc)
        self.assertEqual((r.status, r.header("Upload-Offset"), r.header("Upload-Length")), (200, "0", "300000"))
        for off in (0, 100000, 200000):
            r = self.patch(loc, off, data[off:off + 100000])
            self.assertEqual(r.status, 204, r)
            self.assertEqual(int(r.header("Upload-Offset")), off + 100000)
            self.assertEqual(r.header("Tus-Resumable"), "1.0.0")
        r = self.download("/pieces.bin")
        self.assertEqual((r.status, r.body), (200, data))

    def test_patch_with_a_wrong_offset_is_409_and_changes_nothing(self):
        loc = self.created(10)
        self.assertEqual(self.patch(loc, 0, b"abc").status, 204)
        for off in (0, 2, 4):
            r = self.patch(loc, off, b"zzz")
            self.assertProblem(r, 409)
            self.assertEqual(r.header("Upload-Offset"), "3")
        self.assertEqual(self.head(loc).header("Upload-Offset"), "3")
        self.assertEqual(self.patch(loc, 3, b"defghij").status, 204)
        self.assertEqual(self.download("/f.bin").body, b"abcdefghij")

    def test_patch_with_a_wrong_content_type_is_415(self):
        loc = self.created(3)
        for ct in ("application/octet-stream", "text/plain", "application/offset+octet-streamx"):
            self.assertProblem(self.patch(loc, 0, b"abc", ctype=ct), 415)
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")

    def test_checksum_mismatch_is_460_and_the_bytes_are_discarded(self):
        loc = self.created(10)
        good = base64.b64encode(hashlib.sha1(b"hello").digest()).decode()
        bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        r = self.patch(loc, 0, b"hello", extra={"Upload-Checksum": "sha256 " + bad})
        self.assertEqual(r.status, 460, r)
        self.assertEqual(r.header("Content-Type"), "application/problem+json")
        self.assertEqual((r.json()["status"], r.json()["code"]), (460, "checksum_mismatch"))  # like every problem
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")
        r = self.patch(loc, 0, b"hello", extra={"Upload-Checksum": "sha1 " + good})
        self.assertEqual((r.status, r.header("Upload-Offset")), (204, "5"))
        r = self.patch(loc, 5, b"world", extra={"Upload-Checksum": "md5 XUFAKrxLKna5cZ2REBfFkg=="})
        self.assertProblem(r, 400, "not supported")
        sha = base64.b64encode(hashlib.sha256(b"world").digest()).decode()
        r = self.patch(loc, 5, b"world", extra={"Upload-Checksum": "sha256 " + sha})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.download("/f.bin").body, b"helloworld")

    def test_acknowledged_offset_survives_a_crash_and_restart(self):
        data = os.urandom(200000)
        loc = self.created(len(data), "/crash.bin")
        self.assertEqual(self.patch(loc, 0, data[:120000]).status, 204)
        self.srv.kill()  # SIGKILL: only what was synced survives
        self.srv.start()
        r = self.head(loc)
        self.assertEqual((r.status, r.header("Upload-Offset")), (200, "120000"))
        self.assertEqual(self.patch(loc, 120000, data[120000:]).status, 204)
        self.assertEqual(self.download("/crash.bin").body, data)

    def test_patch_past_upload_length_is_refused(self):
        loc = self.created(4)
        self.assertProblem(self.patch(loc, 0, b"12345"), 413)
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")
        self.assertEqual(self.download("/f.bin").status, 404)

    def test_deleted_upload_is_gone(self):
        loc = self.created(10)
        self.assertEqual(self.patch(loc, 0, b"abc").status, 204)
        r = self.srv.request("DELETE", loc, token=self.admin, headers=TUS)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Tus-Resumable"), "1.0.0")
        self.assertEqual(self.head(loc).status, 404)
        self.assertProblem(self.patch(loc, 3, b"def"), 404)
        self.assertProblem(self.srv.request("DELETE", loc, token=self.admin, headers=TUS), 404)
        self.assertEqual([n for n in os.listdir(os.path.join(self.srv.data, "uploads"))], [])

    def test_another_users_upload_is_not_found(self):
        loc = self.created(10)
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.assertEqual(self.head(loc, token=bob).status, 404)
        self.assertProblem(self.patch(loc, 0, b"abc", token=bob), 404)
        self.assertProblem(self.srv.request("DELETE", loc, token=bob, headers=TUS), 404)
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")
        # nor may bob aim an upload at the admin's store
        self.assertProblem(self.create(10, "/x.bin", token=bob, sid=self.sid), 404)

    def test_no_token_is_401_and_a_bad_upload_id_is_404(self):
        loc = self.created(10)
        r = self.srv.request("PATCH", loc, b"abc", headers=dict(TUS, **{"Upload-Offset": "0", "Content-Type": OCTETS}))
        self.assertProblem(r, 401)
        self.assertEqual(self.srv.request("HEAD", loc, headers=TUS).status, 401)
        self.assertProblem(self.srv.request("POST", "/api/v1/uploads", b"", headers=dict(TUS, **{
            "Upload-Length": "3", "Upload-Metadata": metadata(store=self.sid, path="/a")})), 401)
        self.assertProblem(self.srv.request("DELETE", loc, headers=TUS), 401)
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")
        for bad in ("/api/v1/uploads/nothex", "/api/v1/uploads/%2e%2e", "/api/v1/uploads/" + "0" * 32):
            self.assertEqual(self.head(bad).status in (400, 404), True, bad)

    def test_wrong_tus_version_is_412_with_tus_version(self):
        loc = self.created(3)
        for h in ({"Tus-Resumable": "0.2.2"}, {}):
            r = self.srv.request("PATCH", loc, b"abc", token=self.admin,
                                 headers=dict(h, **{"Upload-Offset": "0", "Content-Type": OCTETS}))
            self.assertProblem(r, 412)
            self.assertEqual(r.header("Tus-Version"), "1.0.0")
        r = self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers={
            "Tus-Resumable": "0.2.2", "Upload-Length": "3", "Upload-Metadata": metadata(store=self.sid, path="/a")})
        self.assertProblem(r, 412)
        self.assertEqual(self.head(loc).header("Upload-Offset"), "0")

    def test_creation_checks_the_target_before_any_byte_is_sent(self):
        uploads = os.path.join(self.srv.data, "uploads")
        self.assertProblem(self.create(10, "/no/such/folder/f.bin"), 409)
        self.assertProblem(self.create(10, "/a/../../etc/passwd"), 400)
        self.assertProblem(self.create(10, "/f.bin", sid=987654), 404)
        self.assertProblem(self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers=dict(
            TUS, **{"Upload-Length": "10", "Upload-Metadata": metadata(path="/f.bin")})), 400, "needs 'store'")
        # A store that is there but not an id is invalid, not missing (issue 25).
        p = self.assertProblem(self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers=dict(
            TUS, **{"Upload-Length": "10", "Upload-Metadata": metadata(store="my-files", path="/f.bin")})), 400,
            "'store' is invalid")
        self.assertNotIn("needs", p["detail"])
        self.assertProblem(self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers=dict(
            TUS, **{"Upload-Length": "10", "Upload-Metadata": "store !!!"})), 400, "base64")
        self.assertProblem(self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers=dict(
            TUS, **{"Upload-Metadata": metadata(store=self.sid, path="/f.bin")})), 400, "Upload-Length")
        self.assertProblem(self.create(10, "/f.bin", extra={"Upload-Length": "-1"}), 400)
        self.assertEqual(os.listdir(uploads), [], "a refused creation must leave nothing behind")
        # filename + folder + parents build the path
        r = self.srv.request("POST", "/api/v1/uploads", b"", token=self.admin, headers=dict(TUS, **{
            "Upload-Length": "2", "Upload-Metadata": metadata(store=self.sid, filename="n.txt", folder="/deep/er",
                                                              parents="true")}))
        self.assertEqual(r.status, 201, r)
        loc = r.header("Location")
        self.assertEqual(self.patch(loc, 0, b"ok").status, 204)
        self.assertEqual(self.download("/deep/er/n.txt").body, b"ok")

    def test_zero_length_upload_is_complete_at_creation(self):
        loc = self.created(0, "/empty.txt")
        r = self.head(loc)
        self.assertEqual((r.status, r.header("Upload-Offset"), r.header("Upload-Length")), (200, "0", "0"))
        r = self.download("/empty.txt")
        self.assertEqual((r.status, r.body), (200, b""))

    def test_expired_upload_is_gone_and_its_data_removed(self):
        loc = self.created(10)
        self.assertEqual(self.patch(loc, 0, b"abc").status, 204)
        self.srv.stop()
        self.srv.extra_env["MBYTE_CLOCK_OFFSET"] = str(2 * 24 * 3600)  # two days later
        self.srv.start()
        self.assertIn(self.head(loc).status, (404, 410))
        self.assertIn(self.patch(loc, 3, b"def").status, (404, 410))
        deadline = time.time() + 60
        while os.listdir(os.path.join(self.srv.data, "uploads")) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(os.listdir(os.path.join(self.srv.data, "uploads")), [])
        self.assertEqual(self.download("/f.bin").status, 404)


class FolderZipTest(TusBase):
    """GET of a folder answers a streamed zip (kernel/zip.c)."""

    def test_folder_downloads_as_a_zip_with_every_file_byte_identical(self):
        files = {"/album/a.jpg": os.urandom(70000), "/album/sub/b.txt": b"hello",
                 "/album/sub/\u00e9t\u00e9.txt": b"summer", "/album/empty.bin": b""}
        for path, data in files.items():
            loc = self.created(len(data), path, parents="true")
            if data:
                self.assertEqual(self.patch(loc, 0, data).status, 204)
        r = self.download("/album")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/zip")
        self.assertIn('filename="album.zip"', r.header("Content-Disposition"))
        z = zipfile.ZipFile(io.BytesIO(r.body))
        self.assertIsNone(z.testzip())
        for path, data in files.items():
            self.assertEqual(z.read(path[1:]), data, path)
        self.assertIn("album/sub/", z.namelist())


# ---- issue 28: promises of docs/api.md that no test checked (concurrent and cut PATCHes) ----
class TusConcurrencyTest(TusBase):
    def test_a_second_patch_while_one_is_receiving_gets_423_and_changes_nothing(self):
        data = os.urandom(300000)
        loc = self.created(len(data), "/busy.bin")
        first = self.held_patch(loc, 0, data, 100000)  # the server is writing its bytes now
        second = self.patch(loc, 0, data)
        p = self.assertProblem(second, 423)
        self.assertEqual(p["title"], "Locked")
        r = first.finish()
        self.assertEqual((r.status, r.header("Upload-Offset")), (204, str(len(data))), r)
        got = self.download("/busy.bin")
        self.assertEqual((got.status, got.body == data), (200, True))

    def test_a_checksum_patch_cut_midway_keeps_none_of_its_bytes(self):
        data = os.urandom(400000)
        loc = self.created(len(data), "/sum.bin")
        self.assertEqual(self.patch(loc, 0, data[:100000]).status, 204)  # 100000 bytes kept
        rest = data[100000:]
        digest = base64.b64encode(hashlib.sha256(rest).digest()).decode()
        cut = self.held_patch(loc, 100000, rest, 150000, {"Upload-Checksum": "sha256 " + digest})
        cut.cut()  # 150000 bytes reached the server, unverifiable without the rest
        self.assertEqual(self.wait_released(loc), 100000)
        self.assertEqual(os.path.getsize(os.path.join(self.srv.data, "uploads", loc.rsplit("/", 1)[1] + ".part")),
                         100000)
        # ... and the upload goes on from there.
        r = self.patch(loc, 100000, rest, extra={"Upload-Checksum": "sha256 " + digest})
        self.assertEqual(r.status, 204, r)
        got = self.download("/sum.bin")
        self.assertEqual((got.status, hashlib.sha256(got.body).digest()), (200, hashlib.sha256(data).digest()))


if __name__ == "__main__":
    main()

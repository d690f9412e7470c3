"""The sharing module through real clients (http.client and curl): links with passwords,
expiry, download limits and revocation; an upload-only drop box; user shares and the
shared-with-me view; nobody else reaches a share; paths cannot leave the shared folder; a
folder zip holds exactly the shared files; Range requests count one download per fetch from
byte 0."""
import io
import http.client
import os
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Response, ServerTest, main  # noqa: E402


class SharingTest(ServerTest):
    modules = {"sharing": True}

    def setUp(self):
        super().setUp()
        self.alice = self.srv.add_user("alice", admin_token=self.admin)
        self.bob = self.srv.add_user("bob", admin_token=self.admin)
        self.carol = self.srv.add_user("carol", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.alice).json()[0]["id"]
        self.put("docs/report.txt", b"the quarterly report\n")
        self.put("docs/sub/deep.txt", b"deep file\n")
        self.put("private/secret.txt", b"not shared\n")

    def put(self, path, data, token=None):
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/%s?parents=true" % (self.sid, path), body=data,
                             token=token or self.alice)
        self.assertIn(r.status, (200, 201), r)

    def share(self, body, token=None, status=201):
        r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.sid, body, token=token or self.alice)
        self.assertEqual(r.status, status, r)
        return r.json()

    def pub(self, token, path="", method="GET", headers=None, body=None):
        return self.srv.request(method, "/api/v1/public/%s%s" % (token, "/" + path if path else ""), body=body,
                                headers=headers)

    def test_link_with_password_and_expiry_wrong_right_expired_revoked(self):
        s = self.share({"path": "docs/report.txt", "type": "link", "permission": "download",
                        "password": "correct horse", "expires": int(time.time()) + 3600})
        self.assertGreaterEqual(len(s["token"]), 43)  # 256 random bits, base64url
        self.assertTrue(s["url"].endswith("/s/" + s["token"]))
        self.assertTrue(s["has_password"])
        tok = s["token"]
        self.assertProblem(self.pub(tok), 401, "password")
        self.assertProblem(self.pub(tok, headers={"X-Share-Password": "wrong"}), 401, "wrong password")
        self.assertNotIn(tok, self.srv.read_log())  # refusals are logged, the token never
        self.assertIn("/api/v1/public/***", self.srv.read_log())
        r = self.pub(tok, headers={"X-Share-Password": "correct horse"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"the quarterly report\n")
        # The web page's form posts the password as a field, never in the URL.
        r = self.pub(tok, method="POST", body=b"password=correct+horse",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"the quarterly report\n")
        # Range through curl.
        p = subprocess.run(["curl", "-sS", "-i", "-H", "X-Share-Password: correct horse", "-r", "4-12",
                            "http://127.0.0.1:%d/api/v1/public/%s" % (self.srv.port, tok)],
                           capture_output=True, timeout=60)
        self.assertIn(b"206", p.stdout.split(b"\r\n")[0])
        self.assertTrue(p.stdout.endswith(b"quarterly"), p.stdout[-40:])
        # Two hours later (the server's clock moved) the link has expired.
        self.srv.stop()
        self.srv.extra_env["MBYTE_CLOCK_OFFSET"] = "7200"
        self.srv.start()
        self.assertProblem(self.pub(tok, headers={"X-Share-Password": "correct horse"}), 410, "expired")
        # A fresh link works until its owner revokes it, then stops at once.
        alice = self.srv.login("alice", "user-password-1")
        r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.sid,
                             {"path": "docs/report.txt", "type": "link", "permission": "view"}, token=alice)
        self.assertEqual(r.status, 201, r)
        s2 = r.json()
        self.assertEqual(self.pub(s2["token"]).status, 200)
        r = self.srv.request("DELETE", "/api/v1/shares/%s" % s2["id"], token=alice)
        self.assertEqual(r.status, 200, r)
        self.assertProblem(self.pub(s2["token"]), 404)

    def test_guessing_a_link_password_is_throttled(self):
        s = self.share({"path": "docs", "type": "link", "permission": "view", "password": "right one"})
        for i in range(10):
            self.assertProblem(self.pub(s["token"], headers={"X-Share-Password": "guess %d" % i}), 401)
        r = self.pub(s["token"], headers={"X-Share-Password": "right one"})
        self.assertProblem(r, 429, "too many")
        # Another link is not affected.
        s2 = self.share({"path": "docs", "type": "link", "permission": "view", "password": "other"})
        self.assertEqual(self.pub(s2["token"], headers={"X-Share-Password": "other"}).status, 200)

    def test_a_link_password_flood_from_one_address_does_not_lock_the_link_for_others(self):
        # Issue 25: ten wrong passwords locked a link for everyone.
        s = self.share({"path": "docs", "type": "link", "permission": "view", "password": "right one"})

        def pub_from(address, password):
            c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=60, source_address=(address, 0))
            try:
                c.request("GET", "/api/v1/public/" + s["token"], headers={"X-Share-Password": password})
                r = c.getresponse()
                return Response(r.status, r.getheaders(), r.read())
            finally:
                c.close()
        for i in range(15):
            self.assertIn(pub_from("127.0.0.3", "guess %d" % i).status, (401, 429))
        self.assertEqual(pub_from("127.0.0.4", "right one").status, 200)
        r = pub_from("127.0.0.3", "right one")
        self.assertProblem(r, 429, "too many wrong passwords")
        wait = int(r.header("Retry-After"))  # what is left of the 600 s window
        self.assertGreater(wait, 540)
        self.assertLessEqual(wait, 600)
        self.assertIn("try again in %d s" % wait, r.json()["detail"])

    def test_upload_only_link_cannot_list_or_read(self):
        s = self.share({"path": "docs", "type": "link", "permission": "upload"})
        tok = s["token"]
        r = self.pub(tok, "from-a-stranger.txt", method="PUT", body=b"dropped in")
        self.assertEqual(r.status, 201, r)
        self.assertProblem(self.pub(tok), 403, "uploads")
        self.assertProblem(self.pub(tok, "report.txt"), 403)
        self.assertProblem(self.pub(tok, "from-a-stranger.txt"), 403)
        self.assertProblem(self.pub(tok, "sub"), 403)
        # A drop box never overwrites what is there, and its refusal never shows where the shared
        # folder sits in the owner's store.
        p = self.assertProblem(self.pub(tok, "report.txt", method="PUT", body=b"overwrite"), 409, "'report.txt'")
        self.assertNotIn("docs", p["detail"])
        r = self.srv.request("GET", "/api/v1/stores/%s/files/docs/report.txt" % self.sid, token=self.alice)
        self.assertEqual(r.body, b"the quarterly report\n")
        r = self.srv.request("GET", "/api/v1/stores/%s/files/docs/from-a-stranger.txt" % self.sid,
                             token=self.alice)
        self.assertEqual(r.body, b"dropped in")

    def test_another_user_cannot_reach_a_private_share(self):
        s = self.share({"path": "docs", "type": "user", "permission": "view", "user": "bob"})
        self.assertIsNone(s["token"])
        # bob sees it and reads through it.
        r = self.srv.request("GET", "/api/v1/shared-with-me", token=self.bob)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["id"] for x in r.json()["shares"]], [s["id"]])
        self.assertEqual(r.json()["shares"][0]["owner"], "alice")
        r = self.srv.request("GET", "/api/v1/shared/%s" % s["id"], token=self.bob)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(e["name"] for e in r.json()["entries"]), ["report.txt", "sub"])
        r = self.srv.request("GET", "/api/v1/shared/%s/sub/deep.txt" % s["id"], token=self.bob)
        self.assertEqual(r.body, b"deep file\n")
        # view is read-only.
        r = self.srv.request("PUT", "/api/v1/shared/%s/new.txt" % s["id"], body=b"x", token=self.bob)
        self.assertProblem(r, 403)
        # carol reaches nothing of it, and cannot list or revoke alice's shares.
        for path in ("/api/v1/shared/%s" % s["id"], "/api/v1/shared/%s/report.txt" % s["id"]):
            self.assertProblem(self.srv.request("GET", path, token=self.carol), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/shared-with-me", token=self.carol).json()["shares"], [])
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/%s/shares" % self.sid, token=self.carol), 404)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/shares/%s" % s["id"], token=self.carol), 404)
        self.share({"path": "docs", "type": "link", "permission": "view"}, token=self.carol, status=404)
        # Without credentials the user share is not reachable at all.
        self.assertEqual(self.srv.request("GET", "/api/v1/shared/%s" % s["id"]).status, 401)
        # alice lists her shares; after she revokes, bob loses access at once.
        r = self.srv.request("GET", "/api/v1/stores/%s/shares" % self.sid, token=self.alice)
        self.assertEqual([x["id"] for x in r.json()["shares"]], [s["id"]])
        self.assertNotIn("token_sha256", r.body.decode())
        self.srv.request("DELETE", "/api/v1/shares/%s" % s["id"], token=self.alice)
        self.assertProblem(self.srv.request("GET", "/api/v1/shared/%s" % s["id"], token=self.bob), 404)

    def test_edit_share_lets_the_grantee_upload_into_the_owners_folder_and_overwrite(self):
        s = self.share({"path": "docs", "type": "user", "permission": "edit", "user": "bob"})
        r = self.srv.request("PUT", "/api/v1/shared/%s/sub/from-bob.txt" % s["id"], body=b"bob wrote", token=self.bob)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["path"], "sub/from-bob.txt")
        r = self.srv.request("GET", "/api/v1/stores/%s/files/docs/sub/from-bob.txt" % self.sid, token=self.alice)
        self.assertEqual(r.body, b"bob wrote")
        # edit overwrites the owner's file; the owner and the grantee read the new bytes.
        r = self.srv.request("PUT", "/api/v1/shared/%s/report.txt" % s["id"], body=b"edited by bob", token=self.bob)
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("GET", "/api/v1/stores/%s/files/docs/report.txt" % self.sid, token=self.alice)
        self.assertEqual(r.body, b"edited by bob")
        self.assertEqual(self.srv.request("GET", "/api/v1/shared/%s/report.txt" % s["id"], token=self.bob).body,
                         b"edited by bob")

    def test_a_folder_link_cannot_reach_outside_its_folder(self):
        s = self.share({"path": "docs", "type": "link", "permission": "download"})
        tok = s["token"]
        r = self.pub(tok)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("private", r.body.decode())
        self.assertEqual(r.json()["share"], {"name": "docs", "permission": "download", "target": "folder",
                                             "expires": 0})
        for bad in ("..", "../private/secret.txt", "%2e%2e/private/secret.txt", "sub/..%2f..%2fprivate",
                    "..%2fprivate%2fsecret.txt", "sub/../../private/secret.txt"):
            c = self.srv.conn()
            c.request("GET", "/api/v1/public/%s/%s" % (tok, bad))
            r = c.getresponse()
            body = r.read()
            c.close()
            self.assertIn(r.status, (400, 404), (bad, r.status, body))
            self.assertNotIn(b"not shared", body)
        self.assertProblem(self.pub(tok, "secret.txt"), 404)
        # A file link reaches only that file.
        f = self.share({"path": "docs/report.txt", "type": "link", "permission": "view"})
        self.assertProblem(self.pub(f["token"], "sub/deep.txt"), 404)
        # Unknown and malformed tokens look the same.
        self.assertProblem(self.pub("A" * 43), 404)
        self.assertProblem(self.pub("short"), 404)
        # The folder as a zip, holding exactly the shared folder's files with their bytes, and
        # nothing of the private folder.
        r = self.srv.request("GET", "/api/v1/public/%s?zip=1" % tok)
        self.assertEqual(r.status, 200, r)
        z = zipfile.ZipFile(io.BytesIO(r.body))
        self.assertEqual(sorted(z.namelist()), ["docs/", "docs/report.txt", "docs/sub/", "docs/sub/deep.txt"])
        files = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
        self.assertEqual(files, {"docs/report.txt": b"the quarterly report\n", "docs/sub/deep.txt": b"deep file\n"})
        self.assertNotIn(b"not shared", r.body)
        # A view link lists and reads but may not zip (docs/api.md "Sharing").
        v = self.share({"path": "docs", "type": "link", "permission": "view"})
        self.assertEqual(self.pub(v["token"], "sub/deep.txt").body, b"deep file\n")
        self.assertProblem(self.srv.request("GET", "/api/v1/public/%s?zip=1" % v["token"]), 403, "folder")

    def test_download_limit_and_bad_requests(self):
        s = self.share({"path": "docs/report.txt", "type": "link", "permission": "download", "max_downloads": 2})
        self.assertEqual(self.pub(s["token"]).status, 200)
        self.assertEqual(self.pub(s["token"]).status, 200)
        self.assertProblem(self.pub(s["token"]), 410, "limit")
        for body, why in (({"path": "docs", "type": "link", "permission": "own"}, "permission"),
                          ({"path": "docs", "type": "group", "permission": "view"}, "type"),
                          ({"path": "docs", "type": "user", "permission": "view", "user": "nobody"}, "user"),
                          ({"path": "docs", "type": "user", "permission": "view", "user": "alice"}, "user"),
                          ({"path": "docs/report.txt", "type": "link", "permission": "upload"}, "folder"),
                          ({"path": "docs", "type": "link", "permission": "view", "expires": 1}, "expires"),
                          ({"path": "docs", "type": "link", "permission": "view", "password": ""}, "password")):
            r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.sid, body, token=self.alice)
            self.assertProblem(r, 400, why)
        r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.sid,
                             {"path": "nope", "type": "link", "permission": "view"}, token=self.alice)
        self.assertProblem(r, 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%s/shares" % self.sid).status, 401)

    def test_link_info_tells_name_size_expiry_and_password_without_counting_a_download(self):
        expires = int(time.time()) + 3600
        s = self.share({"path": "docs/report.txt", "type": "link", "permission": "download", "max_downloads": 1,
                        "password": "correct horse", "expires": expires})
        info = lambda headers=None: self.srv.request("GET", "/api/v1/public/%s?info=1" % s["token"], headers=headers)
        # Without the password: only that one is needed, and until when the link works.
        r = info()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"password": True, "locked": True, "expires": expires})
        self.assertProblem(info({"X-Share-Password": "wrong"}), 401, "wrong password")
        pw = {"X-Share-Password": "correct horse"}
        for _ in range(3):  # asked again and again: never a download
            r = info(pw)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"password": True, "locked": False, "expires": expires, "name": "report.txt",
                                        "type": "file", "permission": "download", "size": 21, "downloads_left": 1})
        self.assertNotIn(s["token"], self.srv.read_log())  # redacted like every public path
        listed = self.srv.request("GET", "/api/v1/stores/%s/shares" % self.sid, token=self.alice).json()["shares"]
        self.assertEqual([x["downloads"] for x in listed if x["id"] == s["id"]], [0])
        # The one download is still there to take, and after it the info says the link is spent.
        r = self.pub(s["token"], headers=pw)
        self.assertEqual((r.status, r.body), (200, b"the quarterly report\n"))
        self.assertProblem(info(pw), 410, "limit")
        # A folder drop box: a folder, no size, no password.
        d = self.share({"path": "docs", "type": "link", "permission": "upload"})
        r = self.srv.request("GET", "/api/v1/public/%s?info=1" % d["token"])
        self.assertEqual(r.json(), {"password": False, "locked": False, "expires": 0, "name": "docs", "type": "folder",
                                    "permission": "upload", "size": None, "downloads_left": None})
        self.assertProblem(self.srv.request("GET", "/api/v1/public/%s?info=1" % ("x" * 43)), 404, "no such link")

    def test_range_requests_count_one_download_per_fetch_from_the_first_byte(self):
        data = os.urandom(200000)
        self.put("film.mp4", data)
        s = self.share({"path": "film.mp4", "type": "link", "permission": "download", "max_downloads": 2})
        tok = s["token"]

        def get(rng=None):
            return self.pub(tok, headers={"Range": rng} if rng else None)

        def downloads():
            r = self.srv.request("GET", "/api/v1/stores/%s/shares" % self.sid, token=self.alice)
            return [x for x in r.json()["shares"] if x["id"] == s["id"]][0]["downloads"]

        r = get("bytes=0-")  # a player's first request: the one download
        self.assertEqual((r.status, r.body), (206, data))
        for rng, want in (("bytes=150000-", data[150000:]), ("bytes=70000-70999", data[70000:71000]),
                          ("bytes=-5000", data[-5000:]), ("bytes=199999-", data[-1:])):  # seeks
            r = get(rng)
            self.assertEqual((r.status, r.body), (206, want), rng)
        self.assertEqual(downloads(), 1)
        self.assertEqual(self.pub(tok, method="HEAD").status, 200)
        self.assertEqual(downloads(), 1)
        r = get()  # a whole fetch: the second and last download
        self.assertEqual((r.status, r.body), (200, data))
        self.assertEqual(downloads(), 2)
        r = get("bytes=100000-100009")  # the last download may still seek
        self.assertEqual((r.status, r.body), (206, data[100000:100010]))
        self.assertEqual(downloads(), 2)
        # Anything that would send byte 0 again is past the limit.
        for rng in (None, "bytes=0-0", "bytes=-200000", "bytes=5-9,0-1", "bytes=abc"):
            self.assertProblem(get(rng), 410, "limit")
        r = self.pub(tok, headers={"Range": "bytes=10-19", "If-Range": '"stale"'})  # would be whole
        self.assertProblem(r, 410, "limit")
        self.assertEqual(downloads(), 2)

    def test_unloading_the_module_takes_links_down_and_reloading_brings_them_back(self):
        s = self.share({"path": "docs", "type": "link", "permission": "view"})
        r = self.srv.request("POST", "/api/v1/admin/modules/sharing/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pub(s["token"]).status, 404)
        r = self.srv.request("POST", "/api/v1/admin/modules/sharing/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pub(s["token"]).status, 200)


if __name__ == "__main__":
    main()

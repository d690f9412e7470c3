"""Hostile requests against the file service: traversal, encoded slashes, NUL, overlong and
invalid names, other people's stores, missing or wrong tokens. Each gets the right 4xx as
problem+json, and nothing is read or changed (the store listing and the chunk folder are
compared before and after)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402


class FilesAttacksTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.alice = self.srv.add_user("alice", admin_token=self.admin)
        self.bob = self.srv.add_user("bob", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.alice).json()[0]["id"]
        self.bob_sid = self.srv.request("GET", "/api/v1/stores", token=self.bob).json()[0]["id"]
        self.assertNotEqual(self.sid, self.bob_sid)
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/secret/plan.txt?parents=true" % self.sid,
                             body=b"the secret plan", token=self.alice)
        self.assertEqual(r.status, 201, r)

    def snapshot(self):
        r = self.srv.request("GET", "/api/v1/stores/%s/list?recursive=true" % self.sid, token=self.alice)
        self.assertEqual(r.status, 200)
        entries = sorted((e["relpath"], e.get("sha256")) for e in r.json()["entries"])
        chunks = sorted(f for root, d, fs in os.walk(os.path.join(self.srv.data, "chunks")) for f in fs)
        return entries, chunks

    def raw(self, method, target, token=None, body=None, headers=None):
        """http.client sends the target exactly as written: no client-side normalisation."""
        return self.srv.request(method, target, body=body, token=token, headers=headers)

    def check_refused(self, cases, status, token=None):
        before = self.snapshot()
        for method, target, body in cases:
            r = self.raw(method, target, token=token, body=body)
            p = self.assertProblem(r, status)
            self.assertNotIn(b"the secret plan", r.body)
            self.assertTrue(p["detail"], (method, target))
        self.assertEqual(self.snapshot(), before)

    def test_traversal_and_encoded_segments_are_refused_with_400(self):
        base = "/api/v1/stores/%s/files/" % self.sid
        cases = []
        for bad in ["../etc/passwd", "secret/../../x", "%2e%2e/x", "%2E%2E", "secret/%2e%2e/%2e%2e/x",
                    "secret%2fplan.txt", "a%2F..%2Fb", "a%00b", "secret/plan.txt%00.png", "%ff%fe",
                    "a%c0%afb", "%", "a%zz", "./x", "secret/./plan.txt"]:
            cases.append(("GET", base + bad, None))
            cases.append(("PUT", base + bad, b"overwrite"))
            cases.append(("DELETE", base + bad + "?recursive=true", None))
        self.check_refused(cases, 400, token=self.alice)

    def test_overlong_names_and_paths_are_refused_with_the_rule(self):
        base = "/api/v1/stores/%s/files/" % self.sid
        before = self.snapshot()
        r = self.raw("PUT", base + "a" * 256, token=self.alice, body=b"x")
        self.assertProblem(r, 400, "at most 255 bytes")
        r = self.raw("PUT", base + "/".join(["d"] * 65) + "?parents=true", token=self.alice, body=b"x")
        self.assertProblem(r, 400)
        r = self.raw("PUT", base + "ctl%01name", token=self.alice, body=b"x")
        self.assertProblem(r, 400, "control characters")
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.raw("PUT", base + "a" * 255, token=self.alice, body=b"x").status, 201)

    def test_json_bodies_cannot_smuggle_bad_paths(self):
        api = "/api/v1/stores/%s/" % self.sid
        cases = [
            ("POST", api + "folders", {"path": "a/../b"}),
            ("POST", api + "folders", {"path": "a\u0000b"}),
            ("POST", api + "folders", {"path": ".."}),
            ("POST", api + "folders", {"path": 7}),
            ("POST", api + "move", {"from": "secret/plan.txt", "to": "../plan.txt"}),
            ("POST", api + "move", {"from": "secret/../secret", "to": "x"}),
            ("POST", api + "copy", {"from": "secret/plan.txt", "to": "x/\u0000"}),
            ("POST", api + "copy", {"from": "secret", "to": "a" * 256}),
        ]
        self.check_refused(cases, 400, token=self.alice)

    def test_another_users_store_is_404_for_everyone_including_admins(self):
        cases = [
            ("GET", "/api/v1/stores/%s/files/secret/plan.txt" % self.sid, None),
            ("HEAD", "/api/v1/stores/%s/files/secret/plan.txt" % self.sid, None),
            ("GET", "/api/v1/stores/%s/list" % self.sid, None),
            ("GET", "/api/v1/stores/%s/list/secret?recursive=true" % self.sid, None),
            ("PUT", "/api/v1/stores/%s/files/secret/plan.txt" % self.sid, b"defaced"),
            ("DELETE", "/api/v1/stores/%s/files/secret?recursive=true" % self.sid, None),
            ("POST", "/api/v1/stores/%s/folders" % self.sid, {"path": "mine"}),
            ("POST", "/api/v1/stores/%s/move" % self.sid, {"from": "secret", "to": "gone"}),
            ("POST", "/api/v1/stores/%s/copy" % self.sid, {"from": "secret", "to": "copied"}),
            ("GET", "/api/v1/stores/999999/files/x", None),
            ("GET", "/api/v1/stores/notanumber/list", None),
        ]
        for tok in (self.bob, self.admin):
            before = self.snapshot()
            for method, target, body in cases:
                r = self.raw(method, target, token=tok, body=body)
                if method == "HEAD":
                    self.assertEqual(r.status, 404)
                else:
                    self.assertProblem(r, 404)
                    self.assertIn("no such store", r.json()["detail"])
            self.assertEqual(self.snapshot(), before)
        stores = self.srv.request("GET", "/api/v1/stores", token=self.bob).json()
        self.assertEqual([s["id"] for s in stores], [self.bob_sid])

    def test_no_token_and_a_wrong_token_are_401(self):
        cases = [
            ("GET", "/api/v1/stores", None),
            ("GET", "/api/v1/stores/%s/files/secret/plan.txt" % self.sid, None),
            ("PUT", "/api/v1/stores/%s/files/secret/plan.txt" % self.sid, b"defaced"),
            ("DELETE", "/api/v1/stores/%s/files/secret?recursive=true" % self.sid, None),
            ("POST", "/api/v1/stores/%s/move" % self.sid, {"from": "secret", "to": "gone"}),
            ("POST", "/api/v1/admin/fsck?repair=true", None),
        ]
        self.check_refused(cases, 401, token=None)
        self.check_refused(cases, 401, token="mbt_" + "0" * 64)

    def test_fsck_is_for_admins_only(self):
        r = self.raw("POST", "/api/v1/admin/fsck", token=self.alice)
        self.assertProblem(r, 403)


    def test_names_that_can_show_as_something_else_are_refused_when_created(self):
        """invoice<RLO>gpj.exe shows as "invoiceexe.jpg": bidi overrides, embeddings, isolates and
        the BOM are refused at every door that creates a name, with the character named."""
        from base64 import b64encode
        from urllib.parse import quote
        base = "/api/v1/stores/%s" % self.sid
        rlo = "invoice\u202egpj.exe"
        before = self.snapshot()
        cases = [
            ("PUT", base + "/files/" + quote(rlo), b"MZ", "U+202E RIGHT-TO-LEFT OVERRIDE"),
            ("PUT", base + "/files/" + quote("\ufeffnotes.txt"), b"x", "U+FEFF"),
            ("PUT", base + "/files/" + quote("new\u2067dir/a.txt") + "?parents=true", b"x",
             "U+2067 RIGHT-TO-LEFT ISOLATE"),
            ("POST", base + "/folders", {"path": "a\u202db"}, "U+202D"),
            ("POST", base + "/folders", {"path": "x\u202a/y", "parents": True}, "U+202A"),
            ("POST", base + "/move", {"from": "secret/plan.txt", "to": "secret/" + rlo}, "U+202E"),
            ("POST", base + "/copy", {"from": "secret", "to": "s\u2069"}, "U+2069"),
        ]
        for method, target, body, rule in cases:
            r = self.raw(method, target, token=self.alice, body=body)
            self.assertProblem(r, 400, rule)
            self.assertIn("name: may not contain", r.json()["detail"])
        meta = "store %s,path %s" % (b64encode(str(self.sid).encode()).decode(),
                                     b64encode(("/" + rlo).encode()).decode())
        r = self.raw("POST", "/api/v1/uploads", token=self.alice,
                     headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": meta})
        self.assertProblem(r, 400, "U+202E")
        self.assertEqual(self.snapshot(), before)
        # Zero-width joiners stay allowed (Persian, Indic scripts, emoji sequences need them).
        zwnj = "\u0645\u06cc\u200c\u0631\u0648\u0645.txt"
        r = self.raw("PUT", base + "/files/" + quote(zwnj), token=self.alice, body=b"ok")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.raw("GET", base + "/files/" + quote(zwnj), token=self.alice).body, b"ok")

    def test_a_name_made_before_the_bidi_rule_stays_readable_writable_and_movable(self):
        """The bidi/BOM rule is for new names: an entry that already has one (made by an older
        version) is read, overwritten, moved and renamed away as usual; it just cannot be made again."""
        import subprocess
        from urllib.parse import quote
        ldb_edit = os.environ.get("MBYTE_LDB_EDIT", "")
        base = "/api/v1/stores/%s" % self.sid
        r = self.raw("PUT", base + "/files/old.txt", token=self.alice, body=b"from before")
        self.assertEqual(r.status, 201, r)
        self.srv.stop()
        meta = os.path.join(self.srv.data, "meta")
        keys = subprocess.run([ldb_edit, meta, "--keys", "d/"], capture_output=True, check=True).stdout.split(b"\n")
        key = [k for k in keys if k.endswith(b"/old.txt")][0]
        legacy = "old\u202etxt.exe"
        subprocess.run([ldb_edit, meta, "--rename", key, key[:-len(b"old.txt")] + legacy.encode()], check=True)
        self.srv.start()
        url = base + "/files/" + quote(legacy)
        self.assertEqual(self.raw("GET", url, token=self.alice).body, b"from before")
        self.assertEqual(self.raw("PUT", url, token=self.alice, body=b"updated").status, 200)
        r = self.raw("POST", base + "/move", token=self.alice,
                     body={"from": legacy, "to": "archive/" + legacy, "parents": True})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.raw("GET", base + "/files/archive/" + quote(legacy), token=self.alice).body, b"updated")
        r = self.raw("POST", base + "/move", token=self.alice, body={"from": "archive/" + legacy, "to": "clean.exe"})
        self.assertEqual(r.status, 200, r)
        r = self.raw("POST", base + "/move", token=self.alice, body={"from": "clean.exe", "to": legacy})
        self.assertProblem(r, 400, "U+202E")

if __name__ == "__main__":
    main()

"""storeconfig: per-store settings with defaults from YAML, refused bad values naming the
field, and the limits enforced on uploads (known and unknown length) and copies; the Home store
gets the store template like every store made later."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTest, main  # noqa: E402
from storeutil import put, put_chunked, home, create_store, listing  # noqa: E402


class StoreConfig(ServerTest):
    modules = {"storeconfig": True}
    module_conf = {"storeconfig": "trash_retention_days: 12\nblocked_extensions: [exe]\n"}

    def cfg(self, tok, sid, body=None):
        if body is None:
            return self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=tok)
        return self.srv.request("PATCH", "/api/v1/stores/%d/config" % sid, body, token=tok)

    def test_defaults_overrides_and_limits_on_every_way_in(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)
        s = self.cfg(bob, hid).json()["settings"]
        self.assertEqual((s["trash_retention_days"], s["blocked_extensions"], s["max_bytes"]), (12, ["exe"], 0))
        self.assertProblem(put(self.srv, bob, hid, "setup.exe", b"MZ"), 415, "blocked_extensions")
        r = self.cfg(bob, hid, {"max_file_size": 10, "max_files": 2, "versioning": {"enabled": True}})
        self.assertEqual(r.status, 200, r)
        # Asked for, but no versioning module is loaded here: the store keeps no versions,
        # and the config shows what is applied (test_versioning checks it with the module).
        self.assertEqual(r.json()["settings"]["versioning"]["enabled"], False)
        self.assertEqual(sorted(r.json()["overridden"]), ["max_file_size", "max_files", "versioning"])
        self.assertProblem(put(self.srv, bob, hid, "big.txt", b"x" * 11), 413, "max_file_size")
        status, _ = put_chunked(self.srv, bob, hid, "big2.txt", [b"x" * 6, b"x" * 6])
        self.assertEqual(status, 413)
        self.assertEqual(put(self.srv, bob, hid, "a.txt", b"x" * 10).status, 201)
        self.assertEqual(put(self.srv, bob, hid, "b.txt", b"x").status, 201)
        self.assertProblem(put(self.srv, bob, hid, "c.txt", b"x"), 507, "max_files")
        self.assertEqual(put(self.srv, bob, hid, "a.txt", b"y").status, 200)  # replacing is not a new file
        r = self.srv.request("POST", "/api/v1/stores/%d/copy" % hid, {"from": "a.txt", "to": "d.txt"}, token=bob)
        self.assertProblem(r, 507, "max_files")
        r = self.cfg(bob, hid, {"max_files": None, "max_bytes": 11})
        self.assertEqual(r.json()["settings"]["max_files"], 0)
        self.assertProblem(put(self.srv, bob, hid, "e.txt", b"x" * 10), 507, "max_bytes")
        r = self.srv.request("POST", "/api/v1/stores/%d/move" % hid, {"from": "a.txt", "to": "a.exe"}, token=bob)
        self.assertProblem(r, 415)

    def test_bad_values_are_refused_naming_the_field_and_change_nothing(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        eve = self.srv.add_user("eve", admin_token=self.admin)
        hid = home(self.srv, bob)
        before = self.cfg(bob, hid).json()
        bad = [({"max_bytes": -1}, "max_bytes"), ({"max_files": "3"}, "max_files"),
               ({"blocked_extensions": [".exe"]}, "blocked_extensions"), ({"allowed_types": ["IMAGE"]}, "allowed_types"),
               ({"versioning": {"max_versions": 0}}, "versioning.max_versions"), ({"versioning": 1}, "versioning"),
               ({"trash_retention_days": 40000}, "trash_retention_days"), ({"colour": "red"}, "colour"),
               ({"max_bytes": 5, "nope": None}, "nope"), ({}, "setting")]
        for body, field in bad:
            self.assertProblem(self.cfg(bob, hid, body), 400, field)
        self.assertEqual(self.cfg(bob, hid).json(), before)
        self.assertProblem(self.cfg(eve, hid), 404)
        self.assertProblem(self.cfg(eve, hid, {"max_bytes": 1}), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%d/config" % hid).status, 401)


    def test_allowed_types_admit_only_those_types_on_every_upload_path(self):
        """allowed_types ["image/*", "application/pdf"]: images and PDFs land, anything else is 415
        naming the setting, before any byte is stored, with a known or unknown length and via tus;
        the store keeps only what was admitted."""
        from base64 import b64encode
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)
        r = self.cfg(bob, hid, {"allowed_types": ["image/*", "application/pdf"]})
        self.assertEqual((r.status, r.json()["settings"]["allowed_types"]), (200, ["image/*", "application/pdf"]), r)
        self.assertEqual(put(self.srv, bob, hid, "photo.png", b"\x89PNG\r\n\x1a\n").status, 201)
        self.assertEqual(put(self.srv, bob, hid, "scan.JPG", b"\xff\xd8\xff").status, 201)
        self.assertEqual(put(self.srv, bob, hid, "paper.pdf", b"%PDF-1.4").status, 201)
        self.assertProblem(put(self.srv, bob, hid, "notes.txt", b"text"), 415, "allowed_types: text/plain")
        self.assertProblem(put(self.srv, bob, hid, "noext", b"x"), 415, "allowed_types")
        status, body = put_chunked(self.srv, bob, hid, "song.mp3", [b"ID3", b"x" * 10])
        self.assertEqual(status, 415, body)
        meta = "store %s,path %s" % (b64encode(str(hid).encode()).decode(), b64encode(b"/page.html").decode())
        r = self.srv.request("POST", "/api/v1/uploads", token=bob,
                             headers={"Tus-Resumable": "1.0.0", "Upload-Length": "4", "Upload-Metadata": meta})
        self.assertProblem(r, 415, "allowed_types: text/html")
        names = sorted(e["name"] for e in self.srv.request("GET", "/api/v1/stores/%d/list" % hid,
                                                           token=bob).json()["entries"])
        self.assertEqual(names, ["paper.pdf", "photo.png", "scan.JPG"])
        # Switched off again (null = the default, no list): any type lands.
        self.assertEqual(self.cfg(bob, hid, {"allowed_types": None}).json()["settings"]["allowed_types"], [])
        self.assertEqual(put(self.srv, bob, hid, "notes.txt", b"text").status, 201)

    def test_blocked_types_refuse_those_types_and_win_over_allowed_types(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)
        r = self.cfg(bob, hid, {"blocked_types": ["image/svg+xml", "text/*"]})
        self.assertEqual(r.status, 200, r)
        self.assertProblem(put(self.srv, bob, hid, "logo.svg", b"<svg/>"), 415, "blocked_types: image/svg+xml")
        self.assertProblem(put(self.srv, bob, hid, "LOGO.SVG", b"<svg/>"), 415, "blocked_types")
        self.assertProblem(put(self.srv, bob, hid, "readme.txt", b"hi"), 415, "blocked_types: text/plain")
        self.assertProblem(put(self.srv, bob, hid, "index.html", b"<p>"), 415, "blocked_types: text/html")
        self.assertEqual(put(self.srv, bob, hid, "logo.png", b"\x89PNG").status, 201)
        # Both lists: blocked wins for a type both name.
        r = self.cfg(bob, hid, {"allowed_types": ["image/*"], "blocked_types": ["image/svg+xml"]})
        self.assertEqual(r.status, 200, r)
        self.assertProblem(put(self.srv, bob, hid, "logo.svg", b"<svg/>"), 415, "blocked_types")
        self.assertEqual(put(self.srv, bob, hid, "logo.gif", b"GIF89a").status, 201)
        names = sorted(e["name"] for e in self.srv.request("GET", "/api/v1/stores/%d/list" % hid,
                                                           token=bob).json()["entries"])
        self.assertEqual(names, ["logo.gif", "logo.png"])


class StoreLimitWithVersions(ServerTest):
    modules = {"storeconfig": True, "versioning": True}

    def test_max_bytes_limits_current_files_and_old_versions_never_block_saving(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)
        r = self.srv.request("PATCH", "/api/v1/stores/%d/config" % hid, {"max_bytes": 5000}, token=bob)
        self.assertEqual(r.status, 200, r)
        for i in range(4):  # old versions pile up (the user quota and retention are theirs)
            self.assertIn(put(self.srv, bob, hid, "doc.txt", bytes([65 + i]) * 3000).status, (200, 201))
        self.assertEqual(len(self.srv.request("GET", "/api/v1/stores/%d/versions/doc.txt" % hid,
                                              token=bob).json()), 4)
        self.assertProblem(put(self.srv, bob, hid, "more.txt", b"x" * 2001), 507, "max_bytes")
        self.assertEqual(put(self.srv, bob, hid, "more.txt", b"x" * 2000).status, 201)


class HomeTemplate(ServerTest):
    modules = {"taskmgr": True, "storeconfig": True}
    module_conf = {"store-template": "folders: [Documents, Photos/Holidays]\nsettings: {trash_retention_days: 9}\n"}

    def test_the_home_store_gets_the_template_like_a_store_made_later(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)
        work = create_store(self, self.srv, bob, "Work")
        want = sorted(e["relpath"] for e in listing(self.srv, bob, work))
        self.assertEqual(want, ["Documents", "Photos", "Photos/Holidays"])
        deadline = time.time() + 60  # laid out by a task queued when the account was made
        while time.time() < deadline:
            got = sorted(e["relpath"] for e in listing(self.srv, bob, hid))
            if got == want:
                break
            time.sleep(0.05)
        self.assertEqual(got, want)
        for sid in (hid, work):
            s = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=bob).json()["settings"]
            self.assertEqual(s["trash_retention_days"], 9)


if __name__ == "__main__":
    main()

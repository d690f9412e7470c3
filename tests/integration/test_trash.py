"""The trash module through real clients: deletes move files and folder trees to the trash,
restore is byte-identical (a taken path gets a suffixed name that the answer reports),
permanent delete and empty, the automatic purge after the retention with a shifted clock,
unloading the module makes deletes permanent again, bad input and other users' stores."""
import hashlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, ServerTest, main  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", os.path.join(os.path.dirname(__file__), "..", "..", "build", "tests",
                                                         "ldb_edit"))

DAY = 86400


def rnd(n, seed=1):
    out = bytearray()
    h = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


class Client:
    """Small helpers bound to one user and store."""

    def __init__(self, srv, tok):
        self.srv, self.tok = srv, tok
        self.sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]

    def req(self, method, path, body=None, **kw):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=self.tok, **kw)

    def put(self, path, data):
        r = self.req("PUT", "files/%s?parents=true" % path, data)
        assert r.status in (200, 201), r
        return r

    def trash(self):
        r = self.req("GET", "trash")
        assert r.status == 200, r
        return r.json()


class TrashTest(ServerTest):
    modules = {"trash": True}

    def setUp(self):
        super().setUp()
        self.c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))

    def test_delete_then_restore_a_file_is_byte_identical(self):
        data = rnd(3 * 1024 * 1024 + 7)
        self.c.put("docs/report.bin", data)
        # curl is a real client the web page and scripts would use
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-H",
                            "Authorization: Bearer " + self.c.tok, "http://127.0.0.1:%d/api/v1/stores/%s/files/docs/"
                            "report.bin" % (self.srv.port, self.c.sid)], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout, "204")
        self.assertEqual(self.c.req("GET", "files/docs/report.bin").status, 404)
        t = self.c.trash()
        self.assertEqual(len(t["items"]), 1)
        item = t["items"][0]
        self.assertEqual(item["path"], "docs/report.bin")
        self.assertEqual(item["type"], "file")
        self.assertEqual(item["size"], len(data))
        self.assertTrue(item["deleted_by"] > 0)
        self.assertEqual(item["expires"] - item["deleted"], 30 * DAY)
        self.assertTrue(t["counts_toward_quota"])
        r = self.c.req("POST", "trash/%d/restore" % item["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"path": "docs/report.bin", "original": "docs/report.bin", "renamed": False})
        self.assertEqual(self.c.req("GET", "files/docs/report.bin").body, data)
        self.assertEqual(self.c.trash()["items"], [])

    def test_delete_then_restore_a_folder_tree_is_byte_identical(self):
        files = {"tree/a.txt": b"alpha", "tree/sub/b.bin": rnd(2 * 1024 * 1024, 2), "tree/sub/deeper/c.txt": b"c",
                 "tree/empty.txt": b""}
        for p, d in files.items():
            self.c.put(p, d)
        self.assertProblem(self.c.req("DELETE", "files/tree"), 409)  # not empty without recursive
        self.assertEqual(self.c.req("DELETE", "files/tree?recursive=true").status, 204)
        self.assertEqual(self.c.req("GET", "list/tree").status, 404)
        items = self.c.trash()["items"]
        self.assertEqual([(i["path"], i["type"], i["size"]) for i in items],
                         [("tree", "folder", sum(len(d) for d in files.values()))])
        # the trashed bytes are kept: fsck finds nothing wrong
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin)
        self.assertEqual(r.json()["problems"], [], r)
        r = self.c.req("POST", "trash/%d/restore" % items[0]["id"])
        self.assertEqual(r.status, 200, r)
        for p, d in files.items():
            self.assertEqual(self.c.req("GET", "files/" + p).body, d, p)

    def test_restore_onto_a_taken_path_picks_a_suffixed_name_and_says_so(self):
        self.c.put("notes.txt", b"old")
        self.assertEqual(self.c.req("DELETE", "files/notes.txt").status, 204)
        self.c.put("notes.txt", b"new")
        item = self.c.trash()["items"][0]
        r = self.c.req("POST", "trash/%d/restore" % item["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"path": "notes (restored).txt", "original": "notes.txt", "renamed": True})
        self.assertEqual(self.c.req("GET", "files/notes.txt").body, b"new")
        self.assertEqual(self.c.req("GET", "files/notes%20(restored).txt").body, b"old")
        # a second conflict on the same name counts up
        self.assertEqual(self.c.req("DELETE", "files/notes.txt").status, 204)
        self.c.put("notes.txt", b"third")
        item = self.c.trash()["items"][0]
        r = self.c.req("POST", "trash/%d/restore" % item["id"])
        self.assertEqual(r.json()["path"], "notes (restored 2).txt")
        self.assertEqual(self.c.req("GET", "files/notes%20(restored%202).txt").body, b"new")

    def test_restore_recreates_missing_parent_folders(self):
        self.c.put("a/b/c.txt", b"c")
        self.assertEqual(self.c.req("DELETE", "files/a/b/c.txt").status, 204)
        self.assertEqual(self.c.req("DELETE", "files/a?recursive=true").status, 204)
        items = {i["path"]: i["id"] for i in self.c.trash()["items"]}
        r = self.c.req("POST", "trash/%d/restore" % items["a/b/c.txt"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.req("GET", "files/a/b/c.txt").body, b"c")

    def test_delete_permanently_and_empty_free_the_chunks(self):
        self.c.put("one.bin", rnd(1024 * 1024, 3))
        self.c.put("two.bin", rnd(1024 * 1024, 4))
        self.c.put("three.bin", rnd(1024 * 1024, 5))
        for n in ("one", "two", "three"):
            self.assertEqual(self.c.req("DELETE", "files/%s.bin" % n).status, 204)
        items = self.c.trash()["items"]
        self.assertEqual(self.c.req("DELETE", "trash/%d" % items[0]["id"]).status, 204)
        self.assertEqual(len(self.c.trash()["items"]), 2)
        self.assertProblem(self.c.req("DELETE", "trash/%d" % items[0]["id"]), 404)
        r = self.c.req("DELETE", "trash")
        self.assertEqual(r.json(), {"purged": 2})
        self.assertEqual(self.c.trash()["items"], [])
        # nothing is left referencing the chunks: fsck agrees, and restore of a purged item is 404
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin).json()
        self.assertEqual(r["problems"], [])
        self.assertProblem(self.c.req("POST", "trash/%d/restore" % items[1]["id"]), 404)

    def test_unloading_trash_makes_deletes_permanent_again(self):
        self.c.put("x.txt", b"x")
        r = self.srv.request("POST", "/api/v1/admin/modules/trash/unload", token=self.admin)
        self.assertIn(r.status, (200, 202), r)
        self.assertEqual(self.c.req("DELETE", "files/x.txt").status, 204)
        self.assertEqual(self.c.req("GET", "trash").status, 404)  # the route went with the module
        r = self.srv.request("POST", "/api/v1/admin/modules/trash/load", token=self.admin)
        self.assertIn(r.status, (200, 201, 202), r)
        for _ in range(100):
            if self.c.req("GET", "trash").status == 200:
                break
            time.sleep(0.05)
        self.assertEqual(self.c.trash()["items"], [])  # the file went for good
        self.assertEqual(self.c.req("GET", "files/x.txt").status, 404)

    def test_bad_input_is_refused_and_changes_nothing(self):
        self.c.put("keep.txt", b"k")
        self.assertEqual(self.c.req("DELETE", "files/keep.txt").status, 204)
        for bad in ("abc", "0", "-1", "1.5", "99999999999999999999"):
            self.assertProblem(self.c.req("POST", "trash/%s/restore" % bad), 400)
            self.assertProblem(self.c.req("DELETE", "trash/%s" % bad), 400)
        self.assertProblem(self.c.req("POST", "trash/424242/restore"), 404)
        self.assertProblem(self.c.req("DELETE", "trash/424242"), 404)
        r = self.srv.request("GET", "/api/v1/stores/notanumber/trash", token=self.c.tok)
        self.assertProblem(r, 404)
        r = self.srv.request("GET", "/api/v1/stores/%s/trash" % self.c.sid)
        self.assertEqual(r.status, 401)
        self.assertEqual(len(self.c.trash()["items"]), 1)

    def test_another_users_store_is_not_found(self):
        self.c.put("secret.txt", b"s")
        self.assertEqual(self.c.req("DELETE", "files/secret.txt").status, 204)
        item = self.c.trash()["items"][0]
        bob = self.srv.add_user("bob", admin_token=self.admin)
        base = "/api/v1/stores/%s/trash" % self.c.sid
        self.assertProblem(self.srv.request("GET", base, token=bob), 404)
        self.assertProblem(self.srv.request("POST", "%s/%d/restore" % (base, item["id"]), token=bob), 404)
        self.assertProblem(self.srv.request("DELETE", "%s/%d" % (base, item["id"]), token=bob), 404)
        self.assertProblem(self.srv.request("DELETE", base, token=bob), 404)
        # bob's own store does not reach alice's item either
        bob_sid = self.srv.request("GET", "/api/v1/stores", token=bob).json()[0]["id"]
        self.assertProblem(self.srv.request("POST", "/api/v1/stores/%s/trash/%d/restore" % (bob_sid, item["id"]),
                                            token=bob), 404)
        self.assertEqual(len(self.c.trash()["items"]), 1)


class TrashPurgeTest(ServerTest):
    """The purge task with an injectable clock: MBYTE_CLOCK_OFFSET is read at start."""
    modules = {"trash": True}

    def restart(self, offset_days):
        self.srv.stop()
        self.srv.extra_env["MBYTE_CLOCK_OFFSET"] = str(offset_days * DAY)
        self.srv.start()

    def test_items_older_than_the_retention_are_purged_and_younger_ones_kept(self):
        c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))
        c.put("old.txt", b"old")
        self.assertEqual(c.req("DELETE", "files/old.txt").status, 204)
        self.restart(20)
        c.tok = self.srv.login("alice", "user-password-1")
        c.put("young.txt", b"young")
        self.assertEqual(c.req("DELETE", "files/young.txt").status, 204)
        self.assertEqual(sorted(i["path"] for i in c.trash()["items"]), ["old.txt", "young.txt"])
        self.restart(31)  # old.txt is now 31 days in the trash, young.txt 11
        c.tok = self.srv.login("alice", "user-password-1")
        paths = None
        for _ in range(400):
            paths = [i["path"] for i in c.trash()["items"]]
            if "old.txt" not in paths:
                break
            time.sleep(0.05)
        self.assertEqual(paths, ["young.txt"])


class TrashUsageTest(ServerTest):
    modules = {"trash": True, "versioning": True, "quotas": True}

    def usage(self, c):
        r = c.req("GET", "usage")
        self.assertEqual(r.status, 200, r)
        u = r.json()
        me = self.srv.request("GET", "/api/v1/me/usage", token=c.tok).json()
        parts = ("bytes", "files", "current", "versions", "trash")
        self.assertEqual([me[k] for k in parts], [u.get(k) for k in parts])  # one store: the same
        return tuple(u.get(k) for k in parts)

    def test_trashed_bytes_and_old_versions_count_until_they_are_gone_each_in_its_part(self):
        c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))
        c.put("a.bin", rnd(1000, 1))
        c.put("b.bin", rnd(300, 2))
        self.assertEqual(self.usage(c), (1300, 2, 1300, 0, 0))
        self.assertIn(c.req("DELETE", "files/a.bin").status, (200, 204))
        self.assertEqual(self.usage(c), (1300, 2, 300, 0, 1000))  # in the trash: still counted
        tid = c.trash()["items"][0]["id"]
        self.assertEqual(c.req("POST", "trash/%s/restore" % tid).status, 200)
        self.assertEqual(self.usage(c), (1300, 2, 1300, 0, 0))
        self.assertIn(c.req("DELETE", "files/a.bin").status, (200, 204))
        tid = c.trash()["items"][0]["id"]
        self.assertIn(c.req("DELETE", "trash/%s" % tid).status, (200, 204))
        self.assertEqual(self.usage(c), (300, 1, 300, 0, 0))  # purged: gone from usage too
        c.put("b.bin", rnd(700, 3))  # version 2; version 1 is kept and counts
        self.assertEqual(self.usage(c), (1000, 1, 700, 300, 0))
        r = c.req("POST", "versions/b.bin", {"restore": 1})  # version 3, a copy of 1
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.usage(c), (1300, 1, 300, 1000, 0))
        # A trashed file keeps its old versions counted until the purge.
        self.assertIn(c.req("DELETE", "files/b.bin").status, (200, 204))
        self.assertEqual(self.usage(c), (1300, 1, 0, 1000, 300))
        self.assertIn(c.req("DELETE", "trash").status, (200, 204))
        self.assertEqual(self.usage(c), (0, 0, 0, 0, 0))

    def test_usage_counted_before_versions_counted_is_completed_once_at_start(self):
        c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))
        c.put("b.bin", rnd(300, 2))
        c.put("b.bin", rnd(700, 3))
        c.put("t.bin", rnd(50, 4))
        self.assertIn(c.req("DELETE", "files/t.bin").status, (200, 204))
        now = self.usage(c)
        self.assertEqual(now, (1050, 2, 700, 300, 50))
        # Make the database what a server before usage format 2 left: records without the
        # versions and trash parts (and bytes without old versions), format marker 1.
        self.srv.kill()
        meta = os.path.join(self.srv.data, "meta")
        v2 = '{"v":2,"bytes":1050,"files":2,"versions":300,"trash":50}'
        v1 = '{"v":1,"bytes":750,"files":2}'
        edited = 0
        for prefix in ("us/", "uu/"):
            keys = subprocess.run([LDB_EDIT, meta, "--keys", prefix], capture_output=True, text=True).stdout.split()
            for k in keys:
                edited += subprocess.run([LDB_EDIT, meta, k, v2, v1], capture_output=True).returncode == 0
        self.assertEqual(edited, 2)
        self.assertEqual(subprocess.run([LDB_EDIT, meta, "n/usage_format", "2", "1"]).returncode, 0)
        self.srv.start()
        c.tok = self.srv.login("alice", "user-password-1")
        self.assertEqual(self.usage(c), now)
        self.srv.kill()  # counted once: a second start adds nothing
        self.srv.start()
        c.tok = self.srv.login("alice", "user-password-1")
        self.assertEqual(self.usage(c), now)


if __name__ == "__main__":
    main()

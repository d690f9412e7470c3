"""multistore: rename, the default store, and deleting a store as a task that frees the
chunks nobody else references (fsck clean)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTest, main  # noqa: E402
from storeutil import create_store, wait_task, put, stores, home, usage, fsck  # noqa: E402


def chunk_files(data_dir):
    out = set()
    base = os.path.join(data_dir, "chunks")
    for root, _, files in os.walk(base):
        if os.path.relpath(root, base).startswith("tmp"):
            continue
        out.update(f for f in files if len(f) == 64)
    return out


class MultiStore(ServerTest):
    modules = {"taskmgr": True, "multistore": True, "quotas": True}
    module_conf = {"store-template": "folders: [Docs]\n"}

    def test_deleting_a_store_frees_chunks_nobody_else_references_and_fsck_is_clean(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        sid = create_store(self, self.srv, bob, "Scratch")
        hid = home(self.srv, bob)
        # Each file at most CHUNK_MIN (256 KiB) long, so each is one chunk whatever its bytes: at
        # 300 KiB the chunker could cut random bytes in two (a CI run counted 3 chunks for 2 files).
        only = os.urandom(250 * 1024)
        shared = os.urandom(200 * 1024)
        before = chunk_files(self.srv.data)
        self.assertEqual(put(self.srv, bob, sid, "Docs/only.bin", only).status, 201)
        self.assertEqual(put(self.srv, bob, sid, "Docs/shared.bin", shared).status, 201)
        self.assertEqual(put(self.srv, bob, hid, "shared.bin", shared).status, 201)
        added = chunk_files(self.srv.data) - before
        self.assertEqual(len(added), 2)
        self.assertEqual(usage(self.srv, bob)["bytes"], len(only) + 2 * len(shared))
        r = self.srv.request("DELETE", "/api/v1/stores/%d" % sid, {"confirm": "Scratch"}, token=bob)
        self.assertEqual(r.status, 202, r)
        t = wait_task(self, self.srv, r.json()["task"], bob)
        self.assertEqual(t["state"], "done", t)
        self.assertNotIn(sid, [s["id"] for s in stores(self.srv, bob)])
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%d/list" % sid, token=bob).status, 404)
        left = chunk_files(self.srv.data)
        self.assertEqual(len(added & left), 1)  # the shared chunk stays, the other is gone
        got = self.srv.request("GET", "/api/v1/stores/%d/files/shared.bin" % hid, token=bob)
        self.assertEqual(got.body, shared)
        u = usage(self.srv, bob)
        self.assertEqual((u["bytes"], u["files"]), (len(shared), 1))
        report = fsck(self.srv, self.admin)
        self.assertEqual(report["problems"], [], report)

    def test_rename_default_store_and_bad_input(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        eve = self.srv.add_user("eve", admin_token=self.admin)
        sid = create_store(self, self.srv, bob, "Work")
        r = self.srv.request("PATCH", "/api/v1/stores/%d" % sid, {"name": "Job"}, token=bob)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "Job")
        for body in ({}, {"name": ""}, {"name": "a/b"}, {"name": 3}):
            self.assertProblem(self.srv.request("PATCH", "/api/v1/stores/%d" % sid, body, token=bob), 400)
        # another user's store is not there for eve, whatever she does
        self.assertProblem(self.srv.request("PATCH", "/api/v1/stores/%d" % sid, {"name": "Mine"}, token=eve), 404)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/stores/%d" % sid, {"confirm": "Job"}, token=eve), 404)
        self.assertProblem(self.srv.request("PUT", "/api/v1/me/default-store", {"store": sid}, token=eve), 404)
        self.assertProblem(self.srv.request("PATCH", "/api/v1/stores/abc", {"name": "x"}, token=bob), 404)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/stores/%d" % sid, {"confirm": "Work"}, token=bob),
                           400, "Job")
        self.assertProblem(self.srv.request("DELETE", "/api/v1/stores/%d" % sid, {}, token=bob), 400)
        for body in ({}, {"store": "1"}, {"store": -1}):
            self.assertProblem(self.srv.request("PUT", "/api/v1/me/default-store", body, token=bob), 400)
        defaults = [s["name"] for s in stores(self.srv, bob) if s["default"]]
        self.assertEqual(defaults, ["Home"])
        r = self.srv.request("PUT", "/api/v1/me/default-store", {"store": sid}, token=bob)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([s["name"] for s in stores(self.srv, bob) if s["default"]], ["Job"])
        self.assertEqual(self.srv.request("GET", "/api/v1/me/default-store", token=bob).json()["store"], sid)
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%d/list" % sid, token=bob).status, 200)


    def test_a_store_name_with_a_bidi_override_is_refused_on_create_and_rename(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        r = self.srv.request("POST", "/api/v1/stores", {"name": "Work\u202eskoob"}, token=bob)
        self.assertProblem(r, 400, "U+202E RIGHT-TO-LEFT OVERRIDE")
        sid = create_store(self, self.srv, bob, "Work")
        r = self.srv.request("PATCH", "/api/v1/stores/%d" % sid, {"name": "\ufeffWork"}, token=bob)
        self.assertProblem(r, 400, "U+FEFF")
        self.assertEqual(sorted(s["name"] for s in stores(self.srv, bob)), ["Home", "Work"])

if __name__ == "__main__":
    main()

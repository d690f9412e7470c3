"""quotas: exact fill, one byte more is 507 with usage unchanged (known and unknown
length), usage exact after kill -9 during uploads, unload lifts and load restores,
warnings once per crossing, and bad input on the admin routes."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTest, main  # noqa: E402
from storeutil import put, put_chunked, home, usage, listing  # noqa: E402


class Quotas(ServerTest):
    modules = {"quotas": True}

    def set_quota(self, user, n):
        r = self.srv.request("PUT", "/api/v1/admin/quotas/users/" + user, {"bytes": n}, token=self.admin)
        self.assertEqual(r.status, 200, r)

    def test_exact_fill_succeeds_and_one_byte_more_is_507_before_bytes_land(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.set_quota("bob", 1000)
        hid = home(self.srv, bob)
        self.assertEqual(put(self.srv, bob, hid, "a.bin", b"a" * 600).status, 201)
        self.assertEqual(put(self.srv, bob, hid, "b.bin", b"b" * 400).status, 201)
        u = usage(self.srv, bob)
        self.assertEqual((u["bytes"], u["files"], u["quota_bytes"]), (1000, 2, 1000))
        p = self.assertProblem(put(self.srv, bob, hid, "c.bin", b"c"), 507, "quota")
        self.assertIn("1000", p["detail"])
        status, _ = put_chunked(self.srv, bob, hid, "d.bin", [b"d" * 10, b"d" * 10])
        self.assertEqual(status, 507)
        self.assertEqual(usage(self.srv, bob)["bytes"], 1000)
        names = [e["name"] for e in listing(self.srv, bob, hid)]
        self.assertEqual(sorted(names), ["a.bin", "b.bin"])
        # replacing a file counts only the difference
        self.assertEqual(put(self.srv, bob, hid, "a.bin", b"z" * 600).status, 200)
        self.assertEqual(self.srv.request("DELETE", "/api/v1/stores/%d/files/b.bin" % hid, token=bob).status, 204)
        self.assertEqual(usage(self.srv, bob)["bytes"], 600)
        store = self.srv.request("GET", "/api/v1/stores/%d/usage" % hid, token=bob).json()
        self.assertEqual((store["bytes"], store["files"]), (600, 1))
        # role defaults apply when the user has no override
        self.set_quota("bob", None)
        r = self.srv.request("PUT", "/api/v1/admin/quotas/roles/user", {"bytes": 650}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertProblem(put(self.srv, bob, hid, "e.bin", b"e" * 51), 507, "role user")
        self.assertEqual(put(self.srv, bob, hid, "e.bin", b"e" * 50).status, 201)

    def test_warnings_are_notified_once_per_crossing(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.set_quota("bob", 1000)
        hid = home(self.srv, bob)
        put(self.srv, bob, hid, "a", b"a" * 810)
        put(self.srv, bob, hid, "b", b"b" * 10)
        put(self.srv, bob, hid, "c", b"c" * 140)
        put(self.srv, bob, hid, "d", b"d" * 100)  # refused
        put(self.srv, bob, hid, "d", b"d" * 100)  # refused again: no second notification
        import time
        deadline = time.time() + 10
        while time.time() < deadline:
            notes = self.srv.request("GET", "/api/v1/notifications", token=bob).json()
            titles = [n["title"] for n in notes]
            if titles.count("Storage almost full") >= 2 and "Storage full" in titles:
                break
            time.sleep(0.05)
        self.assertEqual(titles.count("Storage almost full"), 2, notes)
        self.assertEqual(titles.count("Storage full"), 1, notes)

    def test_unloading_quotas_lifts_enforcement_and_loading_restores_it_with_correct_usage(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.set_quota("bob", 100)
        hid = home(self.srv, bob)
        self.assertProblem(put(self.srv, bob, hid, "big", b"x" * 200), 507)
        r = self.srv.request("POST", "/api/v1/admin/modules/quotas/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(put(self.srv, bob, hid, "big", b"x" * 200).status, 201)
        r = self.srv.request("POST", "/api/v1/admin/modules/quotas/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        u = usage(self.srv, bob)
        self.assertEqual((u["bytes"], u["files"]), (200, 1))
        self.assertProblem(put(self.srv, bob, hid, "one", b"x"), 507)

    def test_usage_is_exact_after_kill_during_uploads(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        hid = home(self.srv, bob)

        def upload(i):
            for j in range(20):
                try:
                    put(self.srv, bob, hid, "f%d-%d" % (i, j), os.urandom(1000 + 97 * j))
                except OSError:
                    return

        ths = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
        for t in ths:
            t.start()
        import time
        time.sleep(0.3)
        self.srv.kill()
        for t in ths:
            t.join()
        self.srv.start()
        bob = self.srv.login("bob", "user-password-1")
        files = [e for e in listing(self.srv, bob, hid) if e["type"] == "file"]
        u = usage(self.srv, bob)
        self.assertEqual((u["bytes"], u["files"]), (sum(e["size"] for e in files), len(files)))

    def test_bad_input_on_quota_routes(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        for body in ({}, {"bytes": -1}, {"bytes": "10"}, {"bytes": 1.5}):
            self.assertProblem(self.srv.request("PUT", "/api/v1/admin/quotas/users/bob", body, token=self.admin), 400)
            self.assertProblem(self.srv.request("PUT", "/api/v1/admin/quotas/roles/user", body, token=self.admin), 400)
        self.assertProblem(self.srv.request("PUT", "/api/v1/admin/quotas/users/nobody", {"bytes": 1},
                                            token=self.admin), 404)
        self.assertProblem(self.srv.request("PUT", "/api/v1/admin/quotas/roles/boss", {"bytes": 1},
                                            token=self.admin), 404)
        self.assertEqual(self.srv.request("PUT", "/api/v1/admin/quotas/users/bob", {"bytes": 1}, token=bob).status,
                         403)
        admin_home = home(self.srv, self.admin)
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/%d/usage" % admin_home, token=bob), 404)
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/x/usage", token=bob), 404)
        r = self.srv.request("GET", "/api/v1/admin/quotas/users/bob", token=self.admin)
        self.assertEqual(r.json(), {"username": "bob", "bytes": None})


if __name__ == "__main__":
    main()

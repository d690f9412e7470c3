"""The versioning module through real clients: overwrites keep versions, list, download any
version, restore (the newest becomes a copy, history kept), delete one, a 1-byte change to a
100 MiB file costs only a few MiB of chunks, unloading or switching versioning off stops new
versions but keeps the old ones, bad input and other users' stores."""
import hashlib
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402

MiB = 1024 * 1024


def chunk_bytes(srv):
    total = 0
    for root, dirs, files in os.walk(os.path.join(srv.data, "chunks")):
        if os.path.basename(root) == "tmp":
            continue
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


class VersioningTest(ServerTest):
    modules = {"versioning": True}

    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    def req(self, method, path, body=None, token=None, headers=None):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=token or self.tok,
                                headers=headers)

    def put(self, path, data):
        r = self.req("PUT", "files/" + path, data)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def versions(self, path):
        r = self.req("GET", "versions/" + path)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_five_versions_restore_the_second_gives_its_content_and_six_in_history(self):
        contents = [("version %d " % i).encode() * (i * 1000) for i in range(1, 6)]
        for c in contents:
            self.put("doc.txt", c)
        vs = self.versions("doc.txt")
        self.assertEqual([v["version"] for v in vs], [1, 2, 3, 4, 5])
        for v, c in zip(vs, contents):
            self.assertEqual(v["size"], len(c))
            self.assertEqual(v["sha256"], hashlib.sha256(c).hexdigest())
            self.assertEqual(v["author_name"], "alice")
            self.assertTrue(v["time"] > 0 and v["author"] > 0)
        self.assertEqual([v["current"] for v in vs], [False] * 4 + [True])
        r = self.req("POST", "versions/doc.txt", {"restore": 2})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], 6)
        self.assertEqual(self.req("GET", "files/doc.txt").body, contents[1])
        vs = self.versions("doc.txt")
        self.assertEqual(len(vs), 6)
        self.assertEqual(vs[-1]["restored_from"], 2)
        self.assertEqual(vs[-1]["sha256"], hashlib.sha256(contents[1]).hexdigest())
        # kept versions are history, not leaks: fsck is clean
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin).json()
        self.assertEqual(r["problems"], [])

    def test_any_version_downloads_byte_identical(self):
        a, b = os.urandom(300000), os.urandom(5000)
        self.put("bin/data.bin?parents=true", a)
        self.put("bin/data.bin", b)
        r = subprocess.run(["curl", "-sS", "-H", "Authorization: Bearer " + self.tok,
                            "http://127.0.0.1:%d/api/v1/stores/%s/versions/bin/data.bin?version=1"
                            % (self.srv.port, self.sid)], capture_output=True, timeout=60)
        self.assertEqual(r.stdout, a)
        r = self.req("GET", "versions/bin/data.bin?version=2")
        self.assertEqual(r.body, b)
        self.assertEqual(r.header("ETag"), '"%s"' % hashlib.sha256(b).hexdigest())

    def test_delete_one_version_but_never_the_current(self):
        for i in range(3):
            self.put("f.txt", b"v%d" % i)
        self.assertEqual(self.req("DELETE", "versions/f.txt?version=1").status, 204)
        self.assertEqual([v["version"] for v in self.versions("f.txt")], [2, 3])
        self.assertProblem(self.req("DELETE", "versions/f.txt?version=3"), 409)
        self.assertProblem(self.req("DELETE", "versions/f.txt?version=1"), 404)
        self.assertProblem(self.req("GET", "versions/f.txt?version=1"), 404)
        self.assertEqual(self.req("GET", "files/f.txt").body, b"v2")

    def test_a_one_byte_change_to_a_100_mib_file_grows_the_chunk_store_by_a_few_mib(self):
        path = os.path.join(self.srv.tmp, "big.bin")
        data = bytearray(random.Random(5).randbytes(100 * MiB))
        with open(path, "wb") as f:
            f.write(data)
        url = "http://127.0.0.1:%d/api/v1/stores/%s/files/big.bin" % (self.srv.port, self.sid)
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer " + self.tok,
                "-T", path, url]
        self.assertIn(subprocess.run(curl, capture_output=True, text=True, timeout=600).stdout, ("200", "201"))
        before = chunk_bytes(self.srv)
        around = slice(50 * MiB + 100, 50 * MiB + 151)  # holds the byte that changes
        old_bytes = bytes(data[around])
        data[50 * MiB + 123] ^= 0x01
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(subprocess.run(curl, capture_output=True, text=True, timeout=600).stdout, "200")
        grown = chunk_bytes(self.srv) - before
        print("100 MiB file, 1 byte changed: chunk store grew by %.2f MiB" % (grown / MiB), file=sys.stderr)
        self.assertLessEqual(grown, 8 * MiB)  # at most two of the largest chunks
        self.assertGreater(grown, 0)
        self.assertEqual(len(self.versions("big.bin")), 2)
        r = self.req("GET", "versions/big.bin?version=1")  # streamed, not held in memory
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), self.versions("big.bin")[0]["sha256"])
        self.assertEqual(r.header("X-MByte-Version"), "1")
        # An old version answers ranges like any file, with its own bytes (not the current's).
        r = self.req("GET", "versions/big.bin?version=1",
                     headers={"Range": "bytes=%d-%d" % (around.start, around.stop - 1)})
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, old_bytes)
        self.assertNotEqual(r.body, bytes(data[around]))
        r = self.req("GET", "versions/big.bin?version=2", headers={"Range": "bytes=%d-" % around.start})
        self.assertEqual(r.body, bytes(data[around.start:]))

    def test_unloading_versioning_stops_new_versions_but_keeps_the_old_ones(self):
        self.put("a.txt", b"1")
        self.put("a.txt", b"2")
        r = self.srv.request("POST", "/api/v1/admin/modules/versioning/unload", token=self.admin)
        self.assertIn(r.status, (200, 202), r)
        self.put("a.txt", b"3")  # version 2 is replaced and not kept; version 1 stays
        self.assertEqual(self.req("GET", "versions/a.txt").status, 404)
        r = self.srv.request("POST", "/api/v1/admin/modules/versioning/load", token=self.admin)
        self.assertIn(r.status, (200, 201, 202), r)
        for _ in range(100):
            r = self.req("GET", "versions/a.txt")
            if r.status == 200:
                break
            time.sleep(0.05)
        self.assertEqual([v["version"] for v in r.json()], [1, 3])
        self.assertEqual(self.req("GET", "versions/a.txt?version=1").body, b"1")
        r = self.srv.request("POST", "/api/v1/admin/fsck", token=self.admin).json()
        self.assertEqual(r["problems"], [])

    def test_bad_input_is_refused_and_changes_nothing(self):
        self.put("x.txt", b"1")
        self.put("x.txt", b"2")
        for bad in ("abc", "0", "-1", "", "1.0", "99999999999999999999"):
            self.assertProblem(self.req("GET", "versions/x.txt?version=" + bad), 400)
            self.assertProblem(self.req("DELETE", "versions/x.txt?version=" + bad), 400)
        self.assertProblem(self.req("DELETE", "versions/x.txt"), 400)
        for body in ({}, {"restore": "1"}, {"restore": 0}, {"restore": -2}, {"restore": 1.5}, {"restore": None}):
            self.assertProblem(self.req("POST", "versions/x.txt", body), 400)
        self.assertProblem(self.srv.request("POST", "/api/v1/stores/%s/versions/x.txt" % self.sid, b"not json",
                                            token=self.tok, headers={"Content-Type": "application/json"}), 400)
        self.assertProblem(self.req("POST", "versions/x.txt", {"restore": 9}), 404)
        self.assertProblem(self.req("GET", "versions/missing.txt"), 404)
        self.assertProblem(self.req("GET", "versions/"), 400)
        self.assertProblem(self.req("GET", "versions/..%2Fx.txt"), 400)
        self.req("POST", "folders", {"path": "dir"})
        self.assertProblem(self.req("GET", "versions/dir"), 409)
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/x/versions/x.txt", token=self.tok), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%s/versions/x.txt" % self.sid).status, 401)
        self.assertEqual([v["version"] for v in self.versions("x.txt")], [1, 2])

    def test_another_users_store_is_not_found(self):
        self.put("mine.txt", b"1")
        self.put("mine.txt", b"2")
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.assertProblem(self.req("GET", "versions/mine.txt", token=bob), 404)
        self.assertProblem(self.req("GET", "versions/mine.txt?version=1", token=bob), 404)
        self.assertProblem(self.req("POST", "versions/mine.txt", {"restore": 1}, token=bob), 404)
        self.assertProblem(self.req("DELETE", "versions/mine.txt?version=1", token=bob), 404)
        self.assertProblem(self.req("GET", "versions/mine.txt", token=self.admin), 404)  # admins too
        self.assertEqual(len(self.versions("mine.txt")), 2)



class VersioningSwitchedOff(ServerTest):
    modules = {"versioning": True, "storeconfig": True}

    def test_switching_versioning_off_keeps_the_history_and_the_config_shows_what_is_applied(self):
        tok = self.srv.add_user("alice", admin_token=self.admin)
        sid = self.srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
        base = "/api/v1/stores/%d/" % sid

        def config(body=None):
            r = self.srv.request("PATCH" if body else "GET", base + "config", body, token=tok)
            self.assertEqual(r.status, 200, r)
            return r.json()["settings"]["versioning"]

        def put(data):
            r = self.srv.request("PUT", base + "files/f.txt", data, token=tok)
            self.assertIn(r.status, (200, 201), r)

        def versions():
            r = self.srv.request("GET", base + "versions/f.txt", token=tok)
            self.assertEqual(r.status, 200, r)
            return [v["version"] for v in r.json()]

        # The versioning module keeps versions of this store, with its own YAML limits.
        v = config()
        self.assertEqual((v["enabled"], v["max_versions"], v["max_age_days"]), (True, 100, 365))
        for i in (1, 2, 3):
            put(b"v%d" % i)
        self.assertEqual(config({"versioning": {"enabled": False}})["enabled"], False)
        put(b"v4")  # no new version (3 is replaced), and 1 and 2 stay
        self.assertEqual(versions(), [1, 2, 4])
        for n in (1, 2):
            self.assertEqual(self.srv.request("GET", base + "versions/f.txt?version=%d" % n, token=tok).body,
                             b"v%d" % n)
        self.assertEqual(self.srv.request("GET", base + "files/f.txt", token=tok).body, b"v4")
        v = config({"versioning": {"enabled": True, "max_versions": 7}})
        self.assertEqual((v["enabled"], v["max_versions"]), (True, 7))
        put(b"v5")
        self.assertEqual(versions(), [1, 2, 4, 5])
        # Unloaded, the module keeps nothing, and the config says so.
        r = self.srv.request("POST", "/api/v1/admin/modules/versioning/unload", token=self.admin)
        self.assertIn(r.status, (200, 202), r)
        self.assertEqual(config()["enabled"], False)

if __name__ == "__main__":
    main()

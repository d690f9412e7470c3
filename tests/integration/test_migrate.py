#!/usr/bin/env python3
"""Live migration of a store between placements (issue 21; kernel/migrate.c, docs/storage.md
"Live migration"): PATCH /api/v1/stores/{sid}/config {"placement"} -> 202 {"task"}, against real
WebDAV servers (Apache httpd with mod_dav_fs, and `rclone serve webdav`). What a user and an admin see: a store of a few hundred
files (inline ones, chunk files, multi-chunk files, trashed ones) moved from the local disk to
WebDAV while one client keeps reading random files and another keeps uploading, with no failed
request and every file identical after; the chunks on the WebDAV server's disk and none left on the
local one; fsck clean; the task's progress reaching its total; a SIGKILL midway and a restart after
which the task goes on and converges; WebDAV back to local; plain to encrypted; a cancel that takes
the store back; bad requests answered 400/403/404/409."""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import main  # noqa: E402
from chunkdirs import master_key_conf, objects  # noqa: E402
from storeutil import fsck, put, wait_task  # noqa: E402
from test_davbackend import PASSWORD, USER, ApacheServer, RcloneServer, backend_conf  # noqa: E402
from test_extstore import ExternalStoreTest, local_chunk_files, make_store  # noqa: E402

MODULES = {"taskmgr": True, "storeconfig": True, "multistore": True, "webdav": True, "trash": True}
INLINE_MAX = 32768  # mbyte.yaml's chunk_inline_max by default: smaller files stay in LevelDB


def sizes(n, seed):
    """n file sizes: most small (inline), a good share of chunk files, some of several chunks."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 25 == 0:
            out.append(rnd.randint(4 * 1024 * 1024 + 1, 7 * 1024 * 1024))  # two chunks or more
        elif i % 3 == 0:
            out.append(rnd.randint(INLINE_MAX + 1, 400 * 1024))  # one chunk file
        else:
            out.append(rnd.randint(1, INLINE_MAX))
    return out


class MigrateTest(ExternalStoreTest):
    keyed = ("test_plain_to_encrypted_on_the_same_server_keeps_the_bytes_and_sends_only_ciphertext",)

    server_class = ApacheServer

    def setUp(self):
        self.dav = self.service = self.server_class(self).start()
        conf = "backends:\n" + backend_conf("dav", self.dav.url, PASSWORD, self.dav.prefix)
        conf += "backend_retries: 2\nbackend_retry_base_ms: 50\nbackend_timeout_ms: 20000\n"
        self.modules, self.module_conf = MODULES, {"webdav": conf}
        self.start_server()
        self.assertEqual(USER, "mbyte")  # the WebDAV servers' user, as backend_conf writes it

    def conf(self):
        return master_key_conf(self.dav.work) if self._testMethodName in self.keyed else {}

    # ------------------------------------------------------------------ helpers

    def url(self, sid, name):
        return "/api/v1/stores/%d/files/%s" % (sid, name)

    def fill(self, sid, n, seed=1):
        files = {}
        for i, size in enumerate(sizes(n, seed)):
            name = "f%03d.bin" % i
            data = os.urandom(size)
            self.assertEqual(put(self.srv, self.user, sid, name, data).status, 201, name)
            files[name] = data
        return files

    def dav_objects(self):
        return objects(os.path.join(self.dav.dir, self.dav.prefix))

    def migrate(self, sid, placement, token=None):
        return self.srv.request("PATCH", "/api/v1/stores/%d/config" % sid, {"placement": placement},
                                token=token or self.admin)

    def migrated(self, sid, placement, timeout=300):
        r = self.migrate(sid, placement)
        self.assertEqual(r.status, 202, r)
        task = wait_task(self, self.srv, r.json()["task"], self.admin, timeout=timeout)
        self.assertEqual(task["state"], "done", task)
        return task

    def started(self, n, seed):
        """A local store of n files, whose migration to dav has just been asked: (sid, files, task)."""
        sid = make_store(self, self.srv, self.user, "Work", {"backend": "local"})
        files = self.fill(sid, n, seed=seed)
        r = self.migrate(sid, {"backend": "dav"})
        self.assertEqual(r.status, 202, r)
        return sid, files, r.json()["task"]

    def reads_back(self, sid, files):
        for name, data in files.items():
            r = self.srv.request("GET", self.url(sid, name), token=self.user)
            self.assertEqual((r.status, len(r.body), r.body == data), (200, len(data), True), name)

    def placement(self, sid):
        r = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=self.user)
        self.assertEqual(r.status, 200, r)
        return r.json()["placement"]

    def chunk_files_expected(self, files):
        """At least how many chunk objects the files need on a backend (distinct sizes > inline)."""
        return sum(1 for d in files.values() if len(d) > INLINE_MAX)

    def under_load(self, sid, files, placement, writer=True):
        """Migrate store sid to placement while one client reads random files (byte-compared) and
        another uploads new ones: (task, placement seen while it ran, {name: bytes} of every file,
        failed requests, {"reads", "writes"} made while it ran)."""
        lock = threading.Lock()
        known = dict(files)
        self.rounds = getattr(self, "rounds", 0) + 1  # new names in every round: a PUT of a new file is 201
        failures, counts = [], {"reads": 0, "writes": 0}
        stop = threading.Event()

        def reader():
            rnd = random.Random(7)
            while not stop.is_set():
                with lock:
                    name, data = rnd.choice(list(known.items()))
                try:
                    r = self.srv.request("GET", self.url(sid, name), token=self.user)
                    if r.status != 200 or r.body != data:
                        failures.append(("GET", name, r.status, len(r.body), len(data)))
                except Exception as e:  # noqa: BLE001 (a broken answer is a failure too)
                    failures.append(("GET", name, repr(e)))
                counts["reads"] += 1

        def writer():
            rnd = random.Random(9)
            i = 0
            while not stop.is_set():
                name = "new%d-%04d.bin" % (self.rounds, i)
                data = os.urandom(rnd.choice([300, 20000, 90000, 1500000, 4500000]))
                try:
                    r = put(self.srv, self.user, sid, name, data)
                    if r.status != 201:
                        failures.append(("PUT", name, r.status, r.body[:300]))
                    else:
                        with lock:
                            known[name] = data
                except Exception as e:  # noqa: BLE001 (a broken answer is a failure too)
                    failures.append(("PUT", name, repr(e)))
                counts["writes"] += 1
                i += 1

        threads = [threading.Thread(target=reader)] + ([threading.Thread(target=writer)] if writer else [])
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            before = dict(counts)
            r = self.migrate(sid, placement)
            self.assertEqual(r.status, 202, r)
            tid = r.json()["task"]
            # While it runs, the store says where it goes and where it comes from.
            p = self.placement(sid)
            task = wait_task(self, self.srv, tid, self.admin, timeout=600)
            during = {k: counts[k] - before[k] for k in counts}
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        return task, p, known, failures, during

    # -------------------------------------------------------------------- tests

    def test_local_to_dav_under_a_reader_and_a_writer_fails_no_request_and_leaves_fsck_clean(self):
        sid = make_store(self, self.srv, self.user, "Work", {"backend": "local"})
        files = self.fill(sid, 260)
        # Trashed files keep their chunks: they move too (every version the store holds).
        trashed = {n: files.pop(n) for n in sorted(files)[:30]}
        for n in trashed:
            self.assertEqual(self.srv.request("DELETE", self.url(sid, n), token=self.user).status, 204, n)
        self.assertGreater(local_chunk_files(self.srv), 100)
        self.assertEqual(self.dav_objects(), {})

        task, p, known, failures, during = self.under_load(sid, files, {"backend": "dav"})
        self.assertEqual(p["backend"], "dav")
        self.assertEqual(failures, [])
        self.assertEqual(task["state"], "done", task)
        self.assertGreater(during["reads"], 0, during)
        self.assertGreater(during["writes"], 0, during)
        if "migrating" in p:
            self.assertEqual(p["migrating"]["from"], {"backend": "local", "encrypt": False})
        self.assertEqual(self.placement(sid), {"backend": "dav", "encrypt": False})
        # Progress: the task went through every chunk it counted.
        res = task["result"]
        self.assertEqual(task["progress"], 100, task)
        self.assertEqual(res["done"], res["total"], res)
        self.assertGreater(res["copied"], 100, res)
        self.assertEqual(res["missing"], 0, res)
        # Every file, old and new, trashed ones restored, reads back identical.
        self.reads_back(sid, known)
        objs = self.dav_objects()
        self.assertGreaterEqual(len(objs), self.chunk_files_expected(known), len(objs))
        self.assertEqual(local_chunk_files(self.srv), 0, "the local disk still holds chunks of the moved store")
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        r = self.srv.request("GET", "/api/v1/stores/%d/trash" % sid, token=self.user)
        self.assertEqual(r.status, 200, r)
        for item in r.json()["items"][:5]:
            rr = self.srv.request("POST", "/api/v1/stores/%d/trash/%s/restore" % (sid, item["id"]), token=self.user)
            self.assertEqual(rr.status, 200, rr)
            self.reads_back(sid, {rr.json()["path"].lstrip("/"): trashed[item["path"].lstrip("/")]})

    def test_sigkill_midway_then_restart_resumes_the_task_and_converges(self):
        sid, files, tid = self.started(150, 2)
        # A second migration while this one runs is refused.
        again = self.migrate(sid, {"backend": "local"})
        self.assertProblem(again, 409, "already running")
        deadline = time.time() + 120
        while len(self.dav_objects()) < 30 and time.time() < deadline:
            time.sleep(0.01)
        self.srv.kill()
        copied_before = len(self.dav_objects())
        self.assertGreater(copied_before, 0)
        self.assertGreater(local_chunk_files(self.srv), 0)
        mark = self.srv.log_mark()
        self.srv.start()
        # The task goes on from its note, not from the start.
        self.srv.wait_log("migration resumes (copy phase, after f/", since=mark)
        some = dict(list(files.items())[:20])
        self.reads_back(sid, some)
        task = wait_task(self, self.srv, tid, self.admin, timeout=600)
        self.assertEqual(task["state"], "done", task)
        self.assertGreaterEqual(task["attempts"], 2, task)
        res = task["result"]
        self.assertEqual(res["done"], res["total"], res)
        self.reads_back(sid, files)
        self.assertLessEqual(res["copied"], len(self.dav_objects()), res)
        self.assertEqual(local_chunk_files(self.srv), 0)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        self.assertEqual(self.placement(sid), {"backend": "dav", "encrypt": False})

    def test_dav_to_local_moves_the_chunks_home_and_empties_the_server(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "dav"})
        files = self.fill(sid, 100, seed=3)
        self.assertEqual(local_chunk_files(self.srv), 0)
        self.assertGreater(len(self.dav_objects()), 10)
        task, _, files, failures, during = self.under_load(sid, files, {"backend": "local"})
        self.assertEqual(failures, [])
        self.assertGreater(during["reads"], 0, during)
        self.assertEqual(task["state"], "done", task)
        self.assertEqual(task["result"]["missing"], 0, task)
        self.reads_back(sid, files)
        self.assertEqual(self.dav_objects(), {})
        self.assertGreaterEqual(local_chunk_files(self.srv), self.chunk_files_expected(files) // 2)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        self.assertEqual(self.placement(sid), {"backend": "local", "encrypt": False})

    def test_plain_to_encrypted_on_the_same_server_keeps_the_bytes_and_sends_only_ciphertext(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "dav"})
        files = self.fill(sid, 40, seed=4)
        plain = set(self.dav_objects())
        self.assertTrue(plain)
        self.migrated(sid, {"backend": "dav", "encrypt": True})
        self.assertEqual(self.placement(sid), {"backend": "dav", "encrypt": True})
        self.reads_back(sid, files)
        left = self.dav_objects()
        self.assertTrue(left)
        self.assertTrue(all(k.startswith("e/") for k in left), sorted(left)[:5])  # no plain object left
        for body in left.values():
            self.assertEqual(body[:4], b"MBE1")
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        # And back to plain on the local disk under load: the encrypted objects are read (the old
        # placement's key still opens them), then deleted.
        task, _, files, failures, during = self.under_load(sid, files, {"backend": "local"})
        self.assertEqual((failures, task["state"]), ([], "done"), task)
        self.assertGreater(during["reads"], 0, during)
        self.reads_back(sid, files)
        self.assertEqual(self.dav_objects(), {})
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_a_cancel_takes_the_store_back_and_loses_nothing_written_meanwhile(self):
        sid, files, tid = self.started(120, 5)
        r = self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=self.admin)
        self.assertEqual(r.status, 200, r)
        late = os.urandom(3 * 1024 * 1024)  # written while the store turns round: wherever it lands, kept
        self.assertEqual(put(self.srv, self.user, sid, "late.bin", late).status, 201)
        files["late.bin"] = late
        task = wait_task(self, self.srv, tid, self.admin, timeout=300)
        self.assertEqual(task["state"], "cancelled", task)
        deadline = time.time() + 300
        while "migrating" in self.placement(sid) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.placement(sid), {"backend": "local", "encrypt": False})
        self.assertEqual(self.dav_objects(), {})  # what went there came back and was removed
        self.reads_back(sid, files)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])

    def test_bad_requests_are_refused_and_change_nothing(self):
        sid = make_store(self, self.srv, self.user, "Work", {"backend": "local"})
        files = self.fill(sid, 5, seed=6)
        # Only an administrator moves a store, even the owner may not.
        self.assertProblem(self.migrate(sid, {"backend": "dav"}, token=self.user), 403, "administrator")
        self.assertProblem(self.migrate(sid, {"backend": "nowhere"}), 400, "nowhere")
        self.assertProblem(self.migrate(sid, {"backend": "dav", "tier": 1}), 400, "tier")
        self.assertProblem(self.migrate(sid, "dav"), 400, "placement")
        r = self.srv.request("PATCH", "/api/v1/stores/%d/config" % sid,
                             {"placement": {"backend": "dav"}, "max_files": 3}, token=self.admin)
        self.assertProblem(r, 400, "alone")
        self.assertProblem(self.migrate(987654, {"backend": "dav"}), 404)
        # Encryption needs the master key this server does not have (as at creation: 415).
        self.assertProblem(self.migrate(sid, {"backend": "dav", "encrypt": True}), 415, "master key")
        # The placement it has already: nothing to do, 200 with the config.
        r = self.migrate(sid, {"backend": "local"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["placement"], {"backend": "local", "encrypt": False})
        self.assertEqual(self.placement(sid), {"backend": "local", "encrypt": False})
        self.assertEqual(self.dav_objects(), {})
        self.reads_back(sid, files)


class RcloneMigrateTest(MigrateTest):
    """The same against `rclone serve webdav` (chunks at the top of its directory)."""
    server_class = RcloneServer


if __name__ == "__main__":
    main()

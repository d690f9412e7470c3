"""Big folders (issue 27) through the HTTP API with real requests: paged listings return every
entry exactly once while entries are added and removed between pages, the total follows every
kind of change, bad cursors and limits are refused, a DELETE of a big non-empty folder answers
409 without loading it (mbyted's resident memory, read from /proc, stays put), and a trash of a
20,000-entry folder killed with SIGKILL midway is all or nothing after the restart. Above
subtree_task_above entries a recursive delete and a copy answer 202 with a task that works in
batches; killed midway and restarted, the task finishes (the folder fully gone, the copy whole),
fsck is clean and mbyted's resident memory stays bounded."""
import http.client
import io
import os
import sys
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402
from storeutil import fsck, usage, wait_task  # noqa: E402

MIB = 1024 * 1024


def fill(srv, tok, sid, folder, n, clients=8, name="f%06d.txt"):
    """Upload n small files into folder with several keep-alive connections."""
    errors = []

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        try:
            for i in range(k, n, clients):
                c.request("PUT", "/api/v1/stores/%s/files/%s/%s?parents=true" % (sid, folder, name % i),
                          body=b"x%d" % i, headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                r.read()
                if r.status not in (200, 201):
                    errors.append(r.status)
                    return
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise AssertionError("uploads failed: %r" % errors[:5])


def rss(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Base(ServerTest):
    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    def req(self, method, path, body=None):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=self.tok)

    def page(self, folder, limit=None, cursor=None):
        q = []
        if limit is not None:
            q.append("limit=%s" % limit)
        if cursor:
            q.append("cursor=%s" % cursor)
        r = self.req("GET", "list/%s%s" % (folder, "?" + "&".join(q) if q else ""))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def running(self, tid):
        """Poll until the task has done a batch or more (not a measurement), then return it."""
        deadline = time.time() + 120
        while time.time() < deadline:
            t = self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=self.tok).json()
            if t["state"] == "running" and t["progress"] > 0 or t["state"] in ("done", "failed"):
                return t
            time.sleep(0.01)
        self.fail("task %d never got under way" % tid)

    def count_pages(self, folder, limit):
        """Entries in every page of folder, followed by cursor to the end."""
        seen, cursor = 0, None
        while True:
            p = self.page(folder, limit=limit, cursor=cursor)
            seen += len(p["entries"])
            cursor = p["next_cursor"]
            if not cursor:
                return seen

    def total(self, folder):
        return self.page(folder, limit=1)["total"]


class PagingTest(Base):
    def test_every_entry_exactly_once_while_entries_come_and_go(self):
        fill(self.srv, self.tok, self.sid, "big", 300, name="n%04d")  # n0000 .. n0299
        seen, cursor, pages = [], None, 0
        removed, added, removed_ahead = set(), set(), set()
        while True:
            p = self.page("big", limit=37, cursor=cursor)
            self.assertLessEqual(len(p["entries"]), 37)
            seen += [e["name"] for e in p["entries"]]
            pages += 1
            # Between pages: remove a name not seen yet and one already seen, add one before
            # the cursor and one after it.
            k = pages * 31
            for gone in ("n%04d" % (k + 40), "n%04d" % (k - 30)):
                if k + 40 < 300 and gone not in removed:
                    self.assertEqual(self.req("DELETE", "files/big/" + gone).status, 204)
                    removed.add(gone)
                    if gone > seen[-1]:
                        removed_ahead.add(gone)
            for new in ("m%04d" % pages, "o%04d" % pages):  # "m" sorts before every n, "o" after
                self.assertEqual(self.req("PUT", "files/big/" + new, b"new").status, 201)
                added.add(new)
            cursor = p["next_cursor"]
            if not cursor:
                break
        self.assertEqual(len(seen), len(set(seen)), "a name came twice")
        self.assertEqual(seen, sorted(seen), "not in name order")
        always = {"n%04d" % i for i in range(300)} - removed
        self.assertEqual(always - set(seen), set(), "entries present throughout were missed")
        self.assertTrue(removed_ahead)
        self.assertFalse(removed_ahead & set(seen), "names removed before their page was read were listed")
        self.assertGreater(pages, 8)
        # the total follows: 300 - removed + added
        self.assertEqual(self.total("big"), 300 - len(removed) + len(added))

    def test_no_limit_gives_the_first_page_and_limits_are_bounded(self):
        fill(self.srv, self.tok, self.sid, "d", 1005, name="e%05d")
        p = self.page("d")
        self.assertEqual(len(p["entries"]), 1000)
        self.assertEqual(p["limit"], 1000)
        self.assertEqual(p["total"], 1005)
        self.assertTrue(p["next_cursor"])
        rest = self.page("d", cursor=p["next_cursor"])
        self.assertEqual([e["name"] for e in rest["entries"]], ["e%05d" % i for i in range(1000, 1005)])
        self.assertIsNone(rest["next_cursor"])
        self.assertEqual(self.page("d", limit=100000)["limit"], 10000)
        for bad in ("0", "-1", "x", ""):
            self.assertProblem(self.req("GET", "list/d?limit=" + bad), 400, "limit")
        for bad in ("zz", "abc", "00"):
            self.assertProblem(self.req("GET", "list/d?cursor=" + bad), 400, "cursor")
        # the recursive listing is unchanged: everything, with relpath
        r = self.req("GET", "list/?recursive=true")
        self.assertEqual(len(r.json()["entries"]), 1006)

    def test_total_follows_mkdir_move_copy_and_delete(self):
        self.assertEqual(self.total(""), 0)
        self.assertEqual(self.req("POST", "folders", {"path": "a/b", "parents": True}).status, 201)
        self.assertEqual(self.req("PUT", "files/a/b/x.txt", b"x").status, 201)
        self.assertEqual(self.req("PUT", "files/a/b/x.txt", b"xx").status, 200)  # overwrite: same count
        self.assertEqual(self.req("PUT", "files/a/y.txt", b"y").status, 201)
        self.assertEqual((self.total(""), self.total("a"), self.total("a/b")), (1, 2, 1))
        self.assertEqual(self.req("POST", "move", {"from": "a/y.txt", "to": "y.txt"}).status, 200)
        self.assertEqual((self.total(""), self.total("a")), (2, 1))
        self.assertEqual(self.req("POST", "copy", {"from": "a", "to": "c"}).status, 201)
        self.assertEqual((self.total(""), self.total("c"), self.total("c/b")), (3, 1, 1))
        self.assertEqual(self.req("POST", "move", {"from": "c/b", "to": "c/b2"}).status, 200)  # rename
        self.assertEqual((self.total("c"), self.total("c/b2")), (1, 1))
        self.assertEqual(self.req("DELETE", "files/a?recursive=true").status, 204)
        self.assertEqual(self.total(""), 2)
        self.assertEqual(self.req("DELETE", "files/c/b2/x.txt").status, 204)
        self.assertEqual(self.total("c/b2"), 0)
        # the counters survive a restart (they are records, not memory)
        self.srv.stop()
        self.srv.start()
        self.assertEqual((self.total(""), self.total("c")), (2, 1))

    def test_a_move_deeper_past_64_levels_is_refused_and_renames_and_moves_up_are_not(self):
        # fs_move walks the moved subtree only when the move goes deeper (it was within the
        # limit where it was): every other move answers without reading the folder
        deep = "/".join("d%d" % i for i in range(61))  # 61 levels
        self.assertEqual(self.req("POST", "folders", {"path": deep, "parents": True}).status, 201)
        self.assertEqual(self.req("PUT", "files/x/y/z.txt?parents=true", b"z").status, 201)  # x: 2 levels below
        r = self.req("POST", "move", {"from": "x", "to": deep + "/e/x", "parents": True})  # 63 + 2 = 65
        self.assertProblem(r, 400, "deeper than 64 levels")
        self.assertEqual(self.req("GET", "files/x/y/z.txt").body, b"z")  # nothing moved
        self.assertEqual(self.req("POST", "move", {"from": "x", "to": deep + "/x"}).status, 200)  # 62 + 2 = 64
        self.assertEqual(self.req("POST", "move", {"from": deep + "/x", "to": deep + "/w"}).status, 200)  # rename
        self.assertEqual(self.req("POST", "move", {"from": deep + "/w", "to": "w"}).status, 200)  # up
        self.assertEqual(self.req("GET", "files/w/y/z.txt").body, b"z")
        self.assertProblem(self.req("POST", "move", {"from": "w", "to": deep + "/d/w", "parents": True}), 400,
                           "deeper than 64 levels")


class BigFolderTest(Base):
    modules = {"trash": True}
    N = 20000

    def test_delete_of_big_folder_is_409_in_small_memory_and_trash_is_all_or_nothing(self):
        fill(self.srv, self.tok, self.sid, "big", self.N)
        self.assertEqual(self.total("big"), self.N)
        # 409 without loading the folder: the old check decoded all 20,000 entries (tens of MiB
        # under the sanitizers, which keep freed memory in quarantine)
        before = rss(self.srv)
        for _ in range(3):
            self.assertProblem(self.req("DELETE", "files/big"), 409, "not empty")
        grown = rss(self.srv) - before
        self.assertLess(grown, 8 * MIB, "the emptiness check grew mbyted by %d bytes" % grown)
        # a trash of the folder, killed midway: all or nothing after the restart
        done = []

        def trash():
            try:
                done.append(self.req("DELETE", "files/big?recursive=true").status)
            except OSError:
                done.append("cut")
        t = threading.Thread(target=trash)
        t.start()
        time.sleep(0.2)  # not a measurement: let the request get under way before the kill
        self.srv.kill()
        t.join()
        self.srv.start()
        items = self.req("GET", "trash").json()["items"]
        listed = self.req("GET", "list/")
        names = [e["name"] for e in listed.json()["entries"]]
        if items:  # the trash committed: the folder is wholly in it, and restores wholly
            self.assertNotIn("big", names)
            self.assertEqual(len(items), 1)
            self.assertEqual(items[0]["size"], sum(len(b"x%d" % i) for i in range(self.N)))
            r = self.req("POST", "trash/%d/restore" % items[0]["id"])
            self.assertEqual(r.status, 200, r)
        else:  # it did not: nothing of the folder went anywhere
            self.assertIn("big", names)
        self.assertEqual(self.total("big"), self.N)
        self.assertEqual(self.count_pages("big", 5000), self.N)
        self.assertEqual(self.req("GET", "files/big/f012345.txt").body, b"x12345")
        # a purge of it from the trash (20,000 > subtree_task_above): out of the trash at once,
        # its entries freed by a kernel.subtree task
        self.assertIn(self.req("DELETE", "files/big?recursive=true").status, (200, 204))
        item = self.req("GET", "trash").json()["items"][0]
        r = self.req("DELETE", "trash/%d" % item["id"])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.req("GET", "trash").json()["items"], [])
        task = self.srv.request("GET", "/api/v1/tasks", token=self.tok).json()[0]
        self.assertEqual(task["type"], "kernel.subtree")
        task = wait_task(self, self.srv, task["id"], self.tok, timeout=300)
        self.assertEqual((task["state"], task["result"]["op"]), ("done", "purge"), task)
        report = fsck(self.srv, self.admin)
        self.assertEqual((report["problems"], report["files_checked"]), ([], 0), report)


def mapped_tables(srv):
    """Bytes of mbyted's resident size that are pages of LevelDB's mapped tables (*.ldb)."""
    total, table = 0, False
    with open("/proc/%d/smaps" % srv.proc.pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                table = line.rstrip().endswith(".ldb") and os.path.realpath(srv.data) in line
            elif table and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def meta_tables(srv):
    meta = os.path.join(srv.data, "meta")
    return sum(os.path.getsize(os.path.join(meta, n)) for n in os.listdir(meta) if n.endswith(".ldb"))


class MappedTablesTest(Base):
    """db_mapped bounds the pages of LevelDB's tables that stay in mbyted's resident size: every
    walk over a big folder used to leave all the tables it read mapped (116 MiB after a zip of a
    million files). With a 1 MiB memtable, 20,000 files make several MiB of tables."""
    conf = {"db_write_buffer": 1048576, "db_mapped": 1048576}
    N = 20000

    def test_walks_over_a_big_folder_leave_at_most_db_mapped_of_tables_resident(self):
        fill(self.srv, self.tok, self.sid, "big", self.N)
        self.assertEqual(self.total("big"), self.N)
        tables = meta_tables(self.srv)
        self.assertGreater(tables, 3 * MIB, "too few tables on disk for the test to tell")
        # every page, the recursive listing and a zip: each reads every entry
        self.assertEqual(self.count_pages("big", 1000), self.N)
        r = self.req("GET", "list/?recursive=true")
        self.assertEqual(r.status, 200, r)
        r = self.req("GET", "files/big")
        self.assertEqual(r.status, 200, r)
        names = zipfile.ZipFile(io.BytesIO(r.body)).namelist()
        self.assertEqual(len([n for n in names if not n.endswith("/")]), self.N)
        # the bound plus what the last MAPPED_CHECK (256) reads can touch after a check
        resident = mapped_tables(self.srv)
        self.assertLess(resident, 2 * MIB, "%d bytes of the %d bytes of tables stay resident" % (resident, tables))
        m = self.srv.request("GET", "/metrics", token=self.admin).body.decode()
        given = [float(l.split()[1]) for l in m.splitlines()
                 if l.startswith("mbyte_leveldb_mapped_paged_out_bytes_total ")]
        self.assertEqual(len(given), 1, m[:500])
        self.assertGreater(given[0], 0)


class BigSubtreeTest(Base):
    """Without the trash: DELETE ?recursive=true really deletes. Tasks above 1,000 entries, in
    batches of 100, so a 20,000-entry subtree is ~200 transactions and a kill lands midway."""
    modules = {"trash": False, "quotas": True}
    conf = {"subtree_task_above": 1000, "subtree_batch": 100, "db_write_buffer": 1048576}
    N = 10000  # per half: big/a and big/b/c

    def setUp(self):
        # ASan keeps freed memory in a quarantine (256 MiB by default), which would hide what
        # mbyted really holds: a small one, so the resident size tells
        self.asan = os.environ.get("MBYTE_TEST_ASAN_OPTIONS")
        os.environ["MBYTE_TEST_ASAN_OPTIONS"] = (self.asan or "detect_leaks=1:abort_on_error=0:exitcode=23") + \
            ":quarantine_size_mb=4"
        super().setUp()

    def tearDown(self):
        super().tearDown()
        if self.asan is None:
            os.environ.pop("MBYTE_TEST_ASAN_OPTIONS", None)
        else:
            os.environ["MBYTE_TEST_ASAN_OPTIONS"] = self.asan

    def count(self, folder):
        seen, cursor = 0, None
        while True:
            p = self.page(folder, limit=5000, cursor=cursor)
            seen += len(p["entries"])
            cursor = p["next_cursor"]
            if not cursor:
                return seen

    def restart_resumes(self, tid, what):
        self.srv.kill()
        self.srv.start()
        with open(self.srv.log_path) as f:
            self.assertIn("resuming the unfinished " + what, f.read())
        t = wait_task(self, self.srv, tid, self.tok, timeout=300)
        self.assertEqual(t["state"], "done", t)

    def test_big_delete_and_copy_are_tasks_that_survive_a_kill(self):
        fill(self.srv, self.tok, self.sid, "big/a", self.N)
        fill(self.srv, self.tok, self.sid, "big/b/c", self.N)
        files = 2 * self.N
        base = usage(self.srv, self.tok)
        self.assertEqual(base["files"], files, base)
        # the folder as a zip: 20,000 files and 3 folders below it, unzipped by Python
        before = rss(self.srv)
        r = self.req("GET", "files/big")
        self.assertEqual(r.status, 200, r)
        zipped = rss(self.srv) - before
        # bounded: the old zip held every entry (~200 bytes each, more under ASan) until the end
        self.assertLess(zipped, 48 * MIB, "a zip of 20,000 entries grew mbyted by %d bytes" % zipped)
        with zipfile.ZipFile(io.BytesIO(r.body)) as z:
            names = z.namelist()
            self.assertEqual(len(names), files + 4)
            self.assertEqual(len(set(names)), len(names))
            self.assertIsNone(z.testzip())  # every CRC
            self.assertEqual(z.read("big/b/c/f004321.txt"), b"x4321")
            self.assertIn("big/a/", names)
        r = self.req("POST", "copy", {"from": "big/b", "to": "small"})  # 10,001 entries > 1,000: a task
        self.assertEqual(r.status, 202, r)
        small = r.json()["task"]
        # below the size: synchronous as before
        r = self.req("POST", "folders", {"path": "tiny/x", "parents": True})
        self.assertEqual(r.status, 201, r)
        r = self.req("POST", "copy", {"from": "tiny", "to": "tiny2"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.req("DELETE", "files/tiny2?recursive=true").status, 204)
        self.assertEqual(wait_task(self, self.srv, small, self.tok, timeout=300)["state"], "done")
        before = rss(self.srv)
        # a copy of the big folder: 202, then whole once the task ends
        r = self.req("POST", "copy", {"from": "big", "to": "big2"})
        self.assertEqual(r.status, 202, r)
        t = wait_task(self, self.srv, r.json()["task"], self.tok, timeout=300)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual((self.count("big2/a"), self.count("big2/b/c")), (self.N, self.N))
        self.assertEqual(self.req("GET", "files/big2/b/c/f001234.txt").body, b"x1234")
        # a delete of it: 202, the folder gone at once, everything freed by the task
        r = self.req("DELETE", "files/big2?recursive=true")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.req("GET", "list/big2").status, 404)
        t = wait_task(self, self.srv, r.json()["task"], self.tok, timeout=300)
        self.assertEqual(t["state"], "done", t)
        grown = rss(self.srv) - before
        # bounded by settings (a batch of 100, a 1 MiB memtable, LevelDB's caches), not by the
        # 20,000 entries; ASan's allocator keeps what it used, so this is the peak of the run
        self.assertLess(grown, 128 * MIB, "a copy and a delete of 20,000 entries grew mbyted by %d bytes" % grown)
        self.assertEqual(usage(self.srv, self.tok)["files"], files + self.N)  # "small" is still there
        r = self.req("DELETE", "files/small?recursive=true")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(wait_task(self, self.srv, r.json()["task"], self.tok, timeout=300)["state"], "done")
        # a copy killed midway: resumed after the restart, and whole
        r = self.req("POST", "copy", {"from": "big", "to": "big3"})
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        self.assertLess(self.running(tid)["progress"], 100)
        self.assertNotIn("big3", [e["name"] for e in self.page("")["entries"]])
        self.restart_resumes(tid, "copy")
        self.assertEqual((self.count("big3/a"), self.count("big3/b/c")), (self.N, self.N))
        self.assertEqual(self.req("GET", "files/big3/a/f009999.txt").body, b"x9999")
        self.assertEqual(usage(self.srv, self.tok)["files"], 2 * files)
        # a delete killed midway: gone at once, and after the restart freed entirely
        r = self.req("DELETE", "files/big3?recursive=true")
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        self.assertLess(self.running(tid)["progress"], 100)
        self.assertEqual(self.req("GET", "list/big3").status, 404)
        self.restart_resumes(tid, "delete")
        self.assertEqual(self.req("GET", "list/big3").status, 404)
        self.assertEqual(usage(self.srv, self.tok)["files"], files)
        self.assertEqual(usage(self.srv, self.tok)["bytes"], base["bytes"])
        report = fsck(self.srv, self.admin)
        self.assertEqual(report["problems"], [], report)


class CancelSubtreeTest(Base):
    """A cancel of a big copy gives it up as if it never was (nothing of it left, before or
    after a restart); a cancel of a big delete cannot bring the folder back, so its cleanup
    finishes and the task ends done. Batches of 5 over 3,000 entries: 600 transactions, so
    the cancel lands while the task works."""
    modules = {"trash": False, "quotas": True}
    conf = {"subtree_task_above": 100, "subtree_batch": 5}
    N = 3000

    def cancel_midway(self, r):
        """The 202 of a big copy or delete: once its task has done a batch, cancel it (it was
        running, not finished) and return the task as it ended."""
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        self.assertLess(self.running(tid)["progress"], 100)
        c = self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=self.tok)
        self.assertEqual(c.status, 200, c)
        self.assertTrue(c.json().get("cancel_requested"), c.json())
        return wait_task(self, self.srv, tid, self.tok, timeout=300)

    def test_a_cancelled_copy_leaves_nothing_and_a_cancelled_delete_still_finishes(self):
        fill(self.srv, self.tok, self.sid, "src/a", self.N)
        base = usage(self.srv, self.tok)
        self.assertEqual(base["files"], self.N, base)
        t = self.cancel_midway(self.req("POST", "copy", {"from": "src", "to": "dst"}))
        self.assertEqual(t["state"], "cancelled", t)
        self.assertNotIn("dst", [e["name"] for e in self.page("")["entries"]])
        self.assertEqual(usage(self.srv, self.tok), base)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])
        # nothing to resume: the copy does not come back after a restart
        self.srv.kill()
        self.srv.start()
        with open(self.srv.log_path) as f:
            self.assertNotIn("resuming the unfinished copy", f.read())
        self.assertEqual(self.req("GET", "list/dst").status, 404)
        self.assertEqual(usage(self.srv, self.tok), base)
        # a delete: gone at once for everyone; the cancel cannot undo that, the cleanup finishes
        t = self.cancel_midway(self.req("DELETE", "files/src?recursive=true"))
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(self.req("GET", "list/src").status, 404)
        self.assertEqual(usage(self.srv, self.tok)["files"], 0)
        self.assertEqual(fsck(self.srv, self.admin)["problems"], [])


class CancelQueuedCopyTest(Base):
    """A big copy cancelled while its task still waits for the one task worker never ran, so it
    never marked its journal: the next start used to do the copy. Now it gives it up."""
    modules = {"trash": False, "hello": True}
    conf = {"subtree_task_above": 100, "subtree_batch": 50, "workers": 1}

    def test_a_copy_cancelled_before_it_ran_is_not_done_at_the_next_start(self):
        fill(self.srv, self.tok, self.sid, "src", 300)
        h = self.srv.request("POST", "/api/v1/hello/tasks", {"steps": 1000, "step_ms": 200}, token=self.tok)
        self.assertEqual(h.status, 202, h)  # the one worker, busy for minutes
        hid = h.json()["id"]
        self.running(hid)
        r = self.req("POST", "copy", {"from": "src", "to": "dst"})
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        c = self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=self.tok)
        self.assertEqual((c.status, c.json().get("state")), (200, "cancelled"), c.json())  # queued: at once
        self.assertEqual(self.srv.request("POST", "/api/v1/tasks/%d/cancel" % hid, token=self.tok).status, 200)
        self.assertEqual(wait_task(self, self.srv, hid, self.tok)["state"], "cancelled")
        self.srv.kill()
        self.srv.start()
        with open(self.srv.log_path) as f:
            log = f.read()
        self.assertIn("the copy to 'dst' was cancelled before it ran: it is given up", log)
        self.assertNotIn("resuming the unfinished copy", log)
        later = [t for t in self.srv.request("GET", "/api/v1/tasks", token=self.tok).json()
                 if t["type"] == "kernel.subtree" and t["id"] > tid]
        self.assertEqual(len(later), 1, later)
        t = wait_task(self, self.srv, later[0]["id"], self.tok, timeout=120)
        self.assertEqual(t["state"], "cancelled", t)
        self.assertEqual(self.req("GET", "list/dst").status, 404)
        self.assertEqual(self.total("src"), 300)
        # and the start after that has nothing left to resume or give up
        self.srv.kill()
        self.srv.start()
        with open(self.srv.log_path) as f:
            log = f.read()
        self.assertEqual(log.count("was cancelled before it ran"), 1)
        self.assertEqual(self.req("GET", "list/dst").status, 404)


if __name__ == "__main__":
    main()

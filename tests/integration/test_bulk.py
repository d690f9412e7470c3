"""Operations on a whole folder (issue 27: "select all" in a big folder is one request):
POST /api/v1/stores/{sid}/bulk moves, copies or deletes every entry of a folder but the ones
named in `except`, as a task. Checked with real requests against a real mbyted: what is where
afterwards (names listed, bytes read back, the trash), the task's result counting the entries
that could not be moved with their reasons, every bad request refused with the reason, another
user's store out of reach, and a task killed with SIGKILL midway that finishes after the
restart with every entry in exactly one place and counted once."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402
from storeutil import wait_task  # noqa: E402
import test_scale  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", "")


class BulkBase(test_scale.Base):
    def names(self, folder):
        seen, cursor = [], None
        while True:
            p = self.page(folder, limit=5000, cursor=cursor)
            seen += [e["name"] for e in p["entries"]]
            cursor = p["next_cursor"]
            if not cursor:
                return seen

    def bulk(self, body, status=202):
        r = self.req("POST", "bulk", body)
        self.assertEqual(r.status, status, r)
        return r.json()

    def done(self, tid):
        t = wait_task(self, self.srv, tid, self.tok, timeout=300)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["type"], "kernel.bulk", t)
        return t["result"]


class BulkTest(BulkBase):
    modules = {"trash": True}
    N = 600  # more than two of the task's pages (256)

    def test_move_copy_and_delete_every_entry_but_the_excepted(self):
        test_scale.fill(self.srv, self.tok, self.sid, "src", self.N)
        self.assertEqual(self.req("POST", "folders", {"path": "src/sub"}).status, 201)
        self.assertEqual(self.req("PUT", "files/src/sub/deep.txt", b"deep").status, 201)
        self.assertEqual(self.req("PUT", "files/dst/f000005.txt?parents=true", b"already here").status, 201)
        # move all but two; the one whose name is taken in dst stays, with the reason
        r = self.bulk({"op": "move", "folder": "src", "to": "dst", "except": ["f000001.txt", "f000002.txt"]})
        self.assertEqual(r["total"], self.N + 1 - 2)
        res = self.done(r["task"])
        self.assertEqual((res["op"], res["folder"], res["to"], res["done"], res["failed"]),
                         ("move", "src", "dst", self.N + 1 - 3, 1), res)
        self.assertEqual([e["name"] for e in res["errors"]], ["f000005.txt"])
        self.assertIn("exists", res["errors"][0]["error"])
        self.assertEqual(self.names("src"), ["f000001.txt", "f000002.txt", "f000005.txt"])
        moved = self.names("dst")
        self.assertEqual(len(moved), self.N + 1 - 2)
        self.assertEqual(self.req("GET", "files/dst/f000599.txt").body, b"x599")
        self.assertEqual(self.req("GET", "files/dst/f000005.txt").body, b"already here")
        self.assertEqual(self.req("GET", "files/src/f000005.txt").body, b"x5")
        self.assertEqual(self.req("GET", "files/dst/sub/deep.txt").body, b"deep")
        # copy everything into another folder: both hold it all, the same bytes
        self.assertEqual(self.req("POST", "folders", {"path": "cp"}).status, 201)
        r = self.bulk({"op": "copy", "folder": "dst", "to": "cp"})
        res = self.done(r["task"])
        self.assertEqual((res["done"], res["failed"]), (len(moved), 0), res)
        self.assertEqual(self.names("cp"), moved)
        self.assertEqual(self.names("dst"), moved)
        self.assertEqual(self.req("GET", "files/cp/f000321.txt").body, b"x321")
        self.assertEqual(self.req("GET", "files/cp/sub/deep.txt").body, b"deep")
        # delete all but one: with the trash on, each entry goes to the trash and comes back
        r = self.bulk({"op": "delete", "folder": "cp", "except": ["sub"]})
        res = self.done(r["task"])
        self.assertEqual((res["done"], res["failed"]), (len(moved) - 1, 0), res)
        self.assertEqual(self.names("cp"), ["sub"])
        trash = self.req("GET", "trash").json()["items"]
        self.assertEqual(len(trash), len(moved) - 1)
        item = [i for i in trash if i["path"] == "cp/f000100.txt"][0]
        self.assertEqual(self.req("POST", "trash/%d/restore" % item["id"]).status, 200)
        self.assertEqual(self.req("GET", "files/cp/f000100.txt").body, b"x100")
        # the root folder works as any other ("" or left out)
        r = self.bulk({"op": "delete", "except": ["src", "dst"]})
        self.assertEqual(self.done(r["task"])["done"], 1)
        self.assertEqual(self.names(""), ["dst", "src"])

    def test_bad_requests_are_refused_with_the_reason_and_other_stores_are_out_of_reach(self):
        self.assertEqual(self.req("PUT", "files/a/x.txt?parents=true", b"x").status, 201)
        self.assertEqual(self.req("POST", "folders", {"path": "b"}).status, 201)
        for body, status, why in (
                ({"op": "rename", "folder": "a", "to": "b"}, 400, "op"),
                ({"folder": "a"}, 400, "op"),
                ({"op": "move", "folder": "a"}, 400, "to"),
                ({"op": "move", "folder": "a", "to": "a"}, 400, "already"),
                ({"op": "copy", "folder": 5, "to": "b"}, 400, "folder"),
                ({"op": "delete", "folder": "a", "except": "x.txt"}, 400, "except"),
                ({"op": "delete", "folder": "a", "except": ["ok", "a/b"]}, 400, "except[1]"),
                ({"op": "delete", "folder": "a", "except": ["n%d" % i for i in range(1001)]}, 400, "at most 1000"),
                ({"op": "delete", "folder": "nope"}, 404, None),
                ({"op": "move", "folder": "a", "to": "nope"}, 404, None),
                ({"op": "move", "folder": "a", "to": "a/x.txt"}, None, None)):
            r = self.req("POST", "bulk", body)
            if status is None:
                self.assertGreaterEqual(r.status, 400, (body, r))
                self.assertLess(r.status, 500, (body, r))
            else:
                self.assertProblem(r, status, why)
        r = self.srv.request("POST", "/api/v1/stores/%s/bulk" % self.sid, b"{not json",
                             token=self.tok, headers={"Content-Type": "application/json"})
        self.assertProblem(r, 400)
        self.assertEqual(self.srv.request("POST", "/api/v1/stores/%s/bulk" % self.sid,
                                          {"op": "delete", "folder": "a"}).status, 401)
        bob = self.srv.add_user("bob", admin_token=self.admin)
        r = self.srv.request("POST", "/api/v1/stores/%s/bulk" % self.sid, {"op": "delete", "folder": "a"}, token=bob)
        self.assertProblem(r, 404)
        self.assertEqual(self.req("GET", "files/a/x.txt").body, b"x")  # nothing was touched


class BulkKillTest(BulkBase):
    """Killed with SIGKILL midway, the task resumes where it was after the restart."""
    modules = {"trash": False}
    N = 3000

    def kill_midway_and_finish(self, tid):
        t = self.running(tid)
        self.assertEqual(t["state"], "running", t)
        self.srv.kill()
        self.srv.start()
        return self.done(tid)

    def test_a_move_and_a_copy_killed_midway_finish_with_each_entry_in_one_place(self):
        test_scale.fill(self.srv, self.tok, self.sid, "src", self.N)
        every = ["f%06d.txt" % i for i in range(self.N)]
        self.assertEqual(self.req("POST", "folders", {"path": "dst"}).status, 201)
        r = self.bulk({"op": "move", "folder": "src", "to": "dst"})
        res = self.kill_midway_and_finish(r["task"])
        self.assertEqual((res["done"], res["failed"]), (self.N, 0), res)
        self.assertEqual((self.names("src"), self.names("dst")), ([], every))
        self.assertEqual(self.req("GET", "files/dst/f002999.txt").body, b"x2999")
        self.assertEqual(self.req("POST", "folders", {"path": "cp"}).status, 201)
        r = self.bulk({"op": "copy", "folder": "dst", "to": "cp"})
        res = self.kill_midway_and_finish(r["task"])
        self.assertEqual((res["done"], res["failed"]), (self.N, 0), res)
        self.assertEqual((self.names("dst"), self.names("cp")), (every, every))
        self.assertEqual(self.req("GET", "files/cp/f001500.txt").body, b"x1500")
        # the notes kept for resuming went with the tasks' ends
        self.srv.stop()
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--keys", "bk/"],
                           capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stdout), (0, ""), p.stderr)

if __name__ == "__main__":
    main()

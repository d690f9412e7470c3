"""The audit module: logins, failed logins, token and share creation, accesses through a
link, admin actions, module loads, config reloads and file changes land in a hash-chained
log with the client address; users see their own store's activity; admins search and
export it; `mbytectl audit verify` passes, and editing one stored entry on disk makes it
fail and name that entry."""
import csv
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import ServerTest, main  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", os.path.join(os.path.dirname(__file__), "..", "..", "build", "tests",
                                                         "ldb_edit"))


class AuditTest(ServerTest):
    modules = {"audit": True, "sharing": True}

    def setUp(self):
        super().setUp()
        self.alice = self.srv.add_user("alice", admin_token=self.admin)
        self.bob = self.srv.add_user("bob", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.alice).json()[0]["id"]

    def search(self, query="", token=None):
        r = self.srv.request("GET", "/api/v1/admin/audit" + query, token=token or self.admin)
        self.assertEqual(r.status, 200, r)
        return r

    def wait_for(self, query, n=1):
        deadline = time.time() + 20
        while time.time() < deadline:
            e = self.search(query).json()["entries"]
            if len(e) >= n:
                return e
            time.sleep(0.05)
        self.fail("no %d audit entries for %s: %s" % (n, query, self.search().body[-2000:]))

    def test_security_actions_and_file_changes_are_logged_with_who_where_and_result(self):
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "alice", "password": "wrong"})
        self.assertEqual(r.status, 401)
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/notes.txt" % self.sid, body=b"hello", token=self.alice)
        self.assertEqual(r.status, 201, r)
        r = self.srv.request("POST", "/api/v1/me/tokens", {"name": "ci"}, token=self.alice)
        self.assertEqual(r.status, 201, r)
        r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.sid,
                             {"path": "notes.txt", "type": "link", "permission": "view"}, token=self.alice)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.srv.request("GET", "/api/v1/public/" + r.json()["token"]).body, b"hello")
        self.srv.request("POST", "/api/v1/admin/modules/sharing/unload", token=self.admin)
        self.srv.proc.send_signal(signal.SIGHUP)

        failed = self.wait_for("?action=auth.login_failed")[0]
        self.assertEqual((failed["user"], failed["result"], failed["ip"]), ("alice", "failed", "127.0.0.1"))
        up = self.wait_for("?action=file.created&user=alice")[0]
        self.assertEqual((up["path"], up["store"], up["ip"], up["result"]), ("notes.txt", self.sid, "127.0.0.1", "ok"))
        tok = self.wait_for("?action=token.created")[0]
        self.assertEqual((tok["user"], tok["ip"]), ("alice", "127.0.0.1"))
        self.assertNotIn("token", json.dumps(tok["detail"]).replace('"token.created"', ""))
        self.wait_for("?action=share.created")
        acc = self.wait_for("?action=share.accessed")[0]
        self.assertEqual((acc["path"], acc["detail"]["action"]), ("notes.txt", "download"))
        self.wait_for("?action=module.unloaded")
        self.wait_for("?action=config.reloaded")
        self.wait_for("?action=auth.")  # a prefix search
        self.assertEqual(self.search("?action=nothing.like.this").json()["entries"], [])
        self.assertEqual(self.search("?path=notes&action=file.created").json()["entries"][0]["path"], "notes.txt")
        self.assertEqual(self.search("?to=1000").json()["entries"], [])
        self.assertGreater(len(self.search("?from=2020-01-01").json()["entries"]), 5)

        # Exports: JSON lines and CSV.
        r = self.search("?format=jsonl&action=file.created")
        lines = [json.loads(x) for x in r.body.decode().splitlines()]
        self.assertEqual([x["path"] for x in lines], ["notes.txt"])
        r = self.search("?format=csv&user=alice")
        rows = list(csv.DictReader(io.StringIO(r.body.decode())))
        self.assertIn("file.created", [x["action"] for x in rows])
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/audit?format=xml", token=self.admin), 400)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/audit?from=yesterday", token=self.admin), 400)
        # Only admins search; users see their own store's activity and nobody else's.
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/audit", token=self.alice), 403)
        r = self.srv.request("GET", "/api/v1/stores/%s/activity" % self.sid, token=self.alice)
        self.assertEqual(r.status, 200, r)
        self.assertIn("file.created", [e["action"] for e in r.json()["entries"]])
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/%s/activity" % self.sid, token=self.bob), 404)

        # The chain verifies.
        p = self.srv.ctl("audit", "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("audit chain ok", p.stdout)

    def test_search_and_activity_answer_newest_first_a_page_at_a_time(self):
        for i in range(7):
            r = self.srv.request("PUT", "/api/v1/stores/%s/files/f%d.txt" % (self.sid, i), body=b"x", token=self.alice)
            self.assertEqual(r.status, 201, r)
        everything = self.wait_for("?action=file.created&user=alice", 7)
        want = ["f%d.txt" % i for i in reversed(range(7))]
        self.assertEqual([e["path"] for e in everything], want)  # newest first
        self.assertIsNone(self.search("?action=file.created&user=alice").json()["next"])
        got, cursor, pages = [], None, 0
        while True:
            page = self.search("?action=file.created&user=alice&limit=3" + ("&before=" + cursor if cursor else "")).json()
            got += [e["path"] for e in page["entries"]]
            pages += 1
            cursor = page["next"]
            if not cursor:
                break
            self.assertEqual(cursor, str(page["entries"][-1]["seq"]))
        self.assertEqual((got, pages), (want, 3))  # 3 + 3 + 1, none twice, none missed
        # exports page the same way, the cursor in a header
        r = self.search("?action=file.created&user=alice&limit=2&format=csv")
        self.assertEqual([x["path"] for x in csv.DictReader(io.StringIO(r.body.decode()))], want[:2])
        r2 = self.search("?action=file.created&user=alice&limit=2&format=jsonl&before=" + r.header("X-Next-Before"))
        self.assertEqual([json.loads(x)["path"] for x in r2.body.decode().splitlines()], want[2:4])
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/audit?before=x", token=self.admin), 400, "before")
        # a store's activity: the same paging
        act = lambda q: self.srv.request("GET", "/api/v1/stores/%s/activity%s" % (self.sid, q), token=self.alice).json()
        first = act("?limit=4")
        self.assertEqual([e["path"] for e in first["entries"]], want[:4])
        rest = act("?limit=100&before=" + first["next"])
        self.assertEqual([e["path"] for e in rest["entries"] if e["action"] == "file.created"], want[4:])
        self.assertIsNone(rest["next"])

    def test_csv_export_defuses_formulas_so_a_spreadsheet_shows_text(self):
        """A file name is the user's text: in the CSV export a leading = + - @ gets a ' so a
        spreadsheet opening the export shows it instead of running it; quotes stay quoted."""
        from urllib.parse import quote
        names = ['=HYPERLINK("evil.example","click")', "+SUM(1;2)", "-2+3", "@cmd", "plain \"q\".txt"]
        for n in names:
            r = self.srv.request("PUT", "/api/v1/stores/%s/files/%s" % (self.sid, quote(n, safe="")), body=b"x",
                                 token=self.alice)
            self.assertEqual(r.status, 201, r)
        self.wait_for("?action=file.created&user=alice", len(names))
        r = self.search("?format=csv&action=file.created&user=alice")
        self.assertTrue(r.header("Content-Type").startswith("text/csv"), r)
        paths = sorted(row["path"] for row in csv.DictReader(io.StringIO(r.body.decode())))
        self.assertEqual(paths, sorted(["'" + n for n in names[:4]] + [names[4]]))
        # Every field is quoted, so no cell starts with a formula character outside quotes either.
        for line in r.body.decode().splitlines()[1:]:
            self.assertTrue(line.startswith('"'), line)
            self.assertNotRegex(line, r'(^|,)"?[=+@-]')

    def test_editing_one_stored_entry_makes_verification_fail_and_name_it(self):
        for i in range(3):
            r = self.srv.request("PUT", "/api/v1/stores/%s/files/f%d.txt" % (self.sid, i), body=b"x",
                                 token=self.alice)
            self.assertEqual(r.status, 201, r)
        e = self.wait_for("?action=file.created&path=f1.txt")[0]
        self.wait_for("?action=file.created&path=f2.txt")
        r = self.srv.request("GET", "/api/v1/admin/audit/verify", token=self.admin)
        self.assertTrue(r.json()["ok"], r)
        self.srv.stop()
        # Rewrite who made the change, straight in LevelDB, as someone with disk access could.
        key = "m/audit/e/%016x" % e["seq"]
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), key, '"f1.txt"', '"f9.txt"'],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        p = self.srv.ctl("audit", "verify")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("entry %d " % e["seq"], p.stdout)
        r = self.srv.request("GET", "/api/v1/admin/audit/verify", token=self.admin)
        self.assertFalse(r.json()["ok"])
        self.assertEqual(r.json()["first_bad"]["seq"], e["seq"])
        self.assertIn("edited", r.json()["first_bad"]["reason"])

    def test_the_chain_continues_across_a_reload_and_a_restart(self):
        self.srv.request("PUT", "/api/v1/stores/%s/files/r1.txt" % self.sid, body=b"x", token=self.alice)
        self.wait_for("?action=file.created&path=r1.txt")
        r = self.srv.request("POST", "/api/v1/admin/modules/audit/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.srv.request("PUT", "/api/v1/stores/%s/files/r2.txt" % self.sid, body=b"x", token=self.alice)
        self.wait_for("?action=file.created&path=r2.txt")
        self.srv.stop()
        self.srv.start()
        self.srv.request("PUT", "/api/v1/stores/%s/files/r3.txt" % self.sid, body=b"x", token=self.alice)
        self.wait_for("?action=file.created&path=r3.txt")
        r = self.srv.request("GET", "/api/v1/admin/audit/verify", token=self.admin)
        self.assertTrue(r.json()["ok"], r)
        seqs = [e["seq"] for e in self.search().json()["entries"]]
        self.assertEqual(seqs, list(range(len(seqs), 0, -1)))  # every number, newest first

    def test_renumbering_an_entry_is_detected(self):
        for i in range(3):
            self.srv.request("PUT", "/api/v1/stores/%s/files/g%d.txt" % (self.sid, i), body=b"x", token=self.alice)
        e = self.wait_for("?action=file.created&path=g1.txt")[0]
        self.wait_for("?action=file.created&path=g2.txt")
        self.srv.stop()
        # Give the entry another sequence number than its place in the log.
        key = "m/audit/e/%016x" % e["seq"]
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), key, '"seq":%d' % e["seq"],
                            '"seq":%d' % (e["seq"] + 100)], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        r = self.srv.request("GET", "/api/v1/admin/audit/verify", token=self.admin)
        self.assertFalse(r.json()["ok"], r)
        self.assertEqual(r.json()["first_bad"]["seq"], e["seq"])

    def test_no_entry_is_lost_or_doubled_across_a_kill_during_uploads(self):
        """Four clients upload until a SIGKILL; after the restart every upload answered 201
        has exactly one file.created entry and the chain verifies. Every answer before the
        kill is a 201 and the only errors are broken connections after it."""
        acked, lock, stop, killed, unexpected = [], threading.Lock(), threading.Event(), threading.Event(), []

        def client(n):
            c = self.srv.conn(timeout=60)
            for i in range(100000):
                if stop.is_set():
                    return
                path = "k%d/f%05d.txt" % (n, i)
                try:
                    c.request("PUT", "/api/v1/stores/%s/files/%s?parents=true" % (self.sid, path), body=b"x" * 100,
                              headers={"Authorization": "Bearer " + self.alice})
                    r = c.getresponse()
                    r.read()
                except Exception as e:  # noqa: BLE001 - only a dead connection after the kill is expected
                    if not (killed.is_set() and isinstance(e, (OSError, http.client.HTTPException))):
                        with lock:
                            unexpected.append("%s: %r before the kill" % (path, e))
                    return
                with lock:
                    if r.status == 201:
                        acked.append(path)
                    else:
                        unexpected.append("%s: answered %d" % (path, r.status))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acked) < 150 and time.time() < deadline:
            time.sleep(0.01)
        killed.set()
        self.srv.kill()
        stop.set()
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive(), "a client is stuck 60 s after the kill")
        self.assertEqual(unexpected, [], "uploads failed for a reason other than the kill")
        self.assertGreaterEqual(len(acked), 150)
        self.srv.start()
        self.admin = self.srv.login()
        deadline = time.time() + 60
        while True:
            logged = [e["path"] for e in self.search("?action=file.created&path=k").json()["entries"]]
            if set(acked) <= set(logged) or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(sorted(set(acked) - set(logged)), [])
        doubled = sorted(p for p in set(logged) if logged.count(p) > 1)
        self.assertEqual(doubled, [])
        p = self.srv.ctl("audit", "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class AuditRetentionTest(ServerTest):
    modules = {"audit": True}
    module_conf = {"audit": "retention_days: 1\n"}

    def test_entries_past_the_retention_are_removed_and_the_rest_still_verifies(self):
        alice = self.srv.add_user("alice", admin_token=self.admin)
        sid = self.srv.request("GET", "/api/v1/stores", token=alice).json()[0]["id"]
        self.srv.request("PUT", "/api/v1/stores/%s/files/old.txt" % sid, body=b"x", token=alice)
        deadline = time.time() + 20
        while time.time() < deadline and not self.srv.request(
                "GET", "/api/v1/admin/audit?path=old.txt", token=self.admin).json()["entries"]:
            time.sleep(0.05)
        before = self.srv.request("GET", "/api/v1/admin/audit", token=self.admin).json()["entries"]
        self.assertTrue(before)
        # Two days later: the start prunes everything older than one day.
        self.srv.stop()
        self.srv.extra_env["MBYTE_CLOCK_OFFSET"] = str(2 * 86400)
        self.srv.start()
        admin = self.srv.login()
        self.srv.request("PUT", "/api/v1/stores/%s/files/new.txt" % sid, body=b"x",
                         token=self.srv.login("alice", "user-password-1"))
        deadline = time.time() + 20
        while time.time() < deadline and not self.srv.request(
                "GET", "/api/v1/admin/audit?path=new.txt", token=admin).json()["entries"]:
            time.sleep(0.05)
        after = self.srv.request("GET", "/api/v1/admin/audit", token=admin).json()["entries"]
        self.assertEqual([e for e in after if e["path"] == "old.txt"], [])
        self.assertIn("new.txt", [e["path"] for e in after])
        self.assertGreater(after[0]["seq"], before[-1]["seq"])  # numbering continues
        r = self.srv.request("GET", "/api/v1/admin/audit/verify", token=admin)
        self.assertTrue(r.json()["ok"], r)


if __name__ == "__main__":
    main()

"""The tags module (issue 19) through a real mbyted: manual tags on files and folders survive
rename, move, trash and restore and go with a purge; listings filter by tag with AND, NOT and
OR; another user can neither read nor change a store's tags; Lua rules run from the hook bus
(HTTP and FTP uploads alike), and rules that loop, allocate without end, call os.execute or do
not compile are stopped or refused and reported while uploads go on; the apply-to-existing run's
dry run reports exactly what the real run then applies."""
import ftplib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest, main, missing_prerequisite  # noqa: E402


def poll(fn, timeout=60, what="condition"):
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


class Client:
    def __init__(self, srv, tok):
        self.srv, self.tok = srv, tok
        self.sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]

    def req(self, method, path, body=None, **kw):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=self.tok, **kw)

    def put(self, path, data):
        r = self.req("PUT", "files/%s?parents=true" % path, data)
        assert r.status in (200, 201), r
        return r

    def tag(self, path, add=(), remove=()):
        r = self.req("POST", "tags/" + path, {"add": list(add), "remove": list(remove)})
        assert r.status == 200, r
        return r.json()["tags"]

    def tags_of(self, path):
        r = self.req("GET", "tags/" + path)
        assert r.status == 200, r
        return r.json()["tags"]

    def listing(self, path="", query=""):
        r = self.req("GET", "list/%s%s" % (path, query))
        assert r.status == 200, r
        return r.json()["entries"]

    def names(self, path="", query=""):
        return sorted(e["name"] for e in self.listing(path, query))


class ManualTagsTest(ServerTest):
    modules = {"tags": True, "trash": True}

    def setUp(self):
        super().setUp()
        self.c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))

    def test_unload_and_load_again(self):
        """Switched off, listings carry no tags and ignore ?tag=; switched on, the tags are back
        (they live in the module's keyspace) and a rename made meanwhile kept them."""
        c = self.c
        c.put("u/x.txt", b"x")
        c.put("u/y.txt", b"y")
        c.tag("u/x.txt", ["keep"])
        r = self.srv.ctl("module", "unload", "tags")
        self.assertEqual(r.returncode, 0, r.stderr)
        entries = c.listing("u", "?tag=keep")
        self.assertEqual(sorted(e["name"] for e in entries), ["x.txt", "y.txt"])
        self.assertTrue(all("tags" not in e for e in entries))
        self.assertEqual(c.req("GET", "tags").status, 404)
        self.assertEqual(c.req("POST", "move", {"from": "u/x.txt", "to": "u/z.txt"}).status, 200)
        r = self.srv.ctl("module", "load", "tags")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(c.names("u", "?tag=keep"), ["z.txt"])
        self.assertEqual(c.tags_of("u/z.txt"), ["keep"])

    def test_tags_follow_rename_move_trash_restore_and_go_with_purge(self):
        c = self.c
        c.put("docs/a.txt", b"alpha")
        c.put("docs/sub/b.txt", b"beta")
        self.assertEqual(c.tag("docs/a.txt", ["Invoice", {"name": "urgent", "color": "#f00"}]), ["Invoice", "urgent"])
        # case-insensitive, the first spelling kept
        self.assertEqual(c.tag("docs/sub/b.txt", ["INVOICE"]), ["Invoice"])
        self.assertEqual(c.tag("docs/sub", ["Project"]), ["Project"])  # a folder
        listed = {e["name"]: e["tags"] for e in c.listing("docs")}
        self.assertEqual(listed, {"a.txt": ["Invoice", "urgent"], "sub": ["Project"]})
        self.assertEqual(sorted((t["name"], t["count"], t["color"]) for t in c.req("GET", "tags").json()),
                         [("Invoice", 2, None), ("Project", 1, None), ("urgent", 1, "#f00")])
        # rename and move
        self.assertEqual(c.req("POST", "move", {"from": "docs/a.txt", "to": "docs/renamed.txt"}).status, 200)
        self.assertEqual(c.tags_of("docs/renamed.txt"), ["Invoice", "urgent"])
        self.assertEqual(c.req("POST", "move", {"from": "docs/sub", "to": "moved"}).status, 200)
        self.assertEqual(c.tags_of("moved"), ["Project"])
        self.assertEqual(c.tags_of("moved/b.txt"), ["Invoice"])
        # trash and restore keep them; trashed entries are not counted
        self.assertEqual(c.req("DELETE", "files/moved?recursive=true").status, 204)
        poll(lambda: {t["name"]: t["count"] for t in c.req("GET", "tags").json()} == {"Invoice": 1, "urgent": 1},
             what="trashed tags uncounted")
        item = c.req("GET", "trash").json()["items"][0]
        self.assertEqual(c.req("POST", "trash/%d/restore" % item["id"]).status, 200)
        self.assertEqual(c.tags_of("moved"), ["Project"])
        self.assertEqual(c.tags_of("moved/b.txt"), ["Invoice"])
        poll(lambda: {t["name"]: t["count"] for t in c.req("GET", "tags").json()} ==
             {"Invoice": 2, "Project": 1, "urgent": 1}, what="restored tags counted")
        # purge drops them: a new file at the same path starts without tags
        self.assertEqual(c.req("DELETE", "files/moved?recursive=true").status, 204)
        item = c.req("GET", "trash").json()["items"][0]
        self.assertEqual(c.req("DELETE", "trash/%d" % item["id"]).status, 204)
        poll(lambda: {t["name"]: t["count"] for t in c.req("GET", "tags").json()} == {"Invoice": 1, "urgent": 1},
             what="purged tags gone")
        c.put("moved/b.txt", b"new")
        self.assertEqual(c.tags_of("moved/b.txt"), [])
        self.assertEqual(c.tags_of("moved"), [])
        # remove
        self.assertEqual(c.tag("docs/renamed.txt", remove=["URGENT"]), ["Invoice"])

    def test_a_copy_carries_the_tags_and_the_original_keeps_them(self):
        c = self.c
        c.put("src/a.txt", b"alpha")
        c.put("src/deep/b.txt", b"beta")
        c.put("src/plain.txt", b"untagged")
        c.tag("src/a.txt", ["Invoice", {"name": "urgent", "color": "#f00"}])
        c.tag("src/deep/b.txt", ["Draft"])
        c.tag("src", ["Project"])
        self.assertIn(c.req("POST", "copy", {"from": "src/a.txt", "to": "one.txt"}).status, (200, 201))
        poll(lambda: c.tags_of("one.txt") == ["Invoice", "urgent"], what="the copied file's tags")
        self.assertIn(c.req("POST", "copy", {"from": "src", "to": "dup"}).status, (200, 201))
        # the copy's entries are tagged one by one in the background: wait for the last of them
        poll(lambda: c.tags_of("dup") == ["Project"] and c.tags_of("dup/a.txt") == ["Invoice", "urgent"]
             and c.tags_of("dup/deep/b.txt") == ["Draft"], what="the copied folder's tags")
        self.assertEqual(c.tags_of("dup/a.txt"), ["Invoice", "urgent"])
        self.assertEqual(c.tags_of("dup/deep/b.txt"), ["Draft"])
        self.assertEqual(c.tags_of("dup/plain.txt"), [])
        self.assertEqual(c.names("", "?tag=Project"), ["dup", "src"])
        # the copies are entries of their own: untagging one leaves the original alone
        c.tag("dup/a.txt", remove=["urgent"])
        self.assertEqual(c.tags_of("src/a.txt"), ["Invoice", "urgent"])
        self.assertEqual({t["name"]: t["count"] for t in c.req("GET", "tags").json()},
                         {"Invoice": 3, "urgent": 2, "Draft": 2, "Project": 2})

    def test_filters_and_or_not(self):
        c = self.c
        for name, tags in [("1.txt", ["red", "big"]), ("2.txt", ["red"]), ("3.txt", ["big"]), ("4.txt", [])]:
            c.put("f/" + name, name.encode())
            if tags:
                c.tag("f/" + name, tags)
        self.assertEqual(c.names("f", "?tag=red"), ["1.txt", "2.txt"])
        self.assertEqual(c.names("f", "?tag=red&tag=BIG"), ["1.txt"])
        self.assertEqual(c.names("f", "?tag=red&tag=-big"), ["2.txt"])
        self.assertEqual(c.names("f", "?tag=-red"), ["3.txt", "4.txt"])
        self.assertEqual(c.names("f", "?any=red&any=big"), ["1.txt", "2.txt", "3.txt"])
        self.assertEqual(c.names("f", "?any=red&any=big&tag=-red"), ["3.txt"])
        self.assertEqual(c.names("f"), ["1.txt", "2.txt", "3.txt", "4.txt"])
        self.assertProblem(c.req("GET", "list/f?tag=-"), 400, "tag")
        self.assertProblem(c.req("POST", "tags/f/1.txt", {"add": ["a,b"]}), 400, "comma")
        self.assertProblem(c.req("POST", "tags/f/1.txt", {"add": ["x" * 65]}), 400, "64")
        self.assertProblem(c.req("POST", "tags/nothing.txt", {"add": ["x"]}), 404)

    def test_another_user_cannot_read_or_change_tags(self):
        self.c.put("secret.txt", b"s")
        self.c.tag("secret.txt", ["private"])
        bob = Client(self.srv, self.srv.add_user("bob", admin_token=self.admin))
        for method, path, body in [("GET", "tags", None), ("GET", "tags/secret.txt", None),
                                   ("POST", "tags/secret.txt", {"add": ["mine"]}),
                                   ("GET", "rules", None), ("GET", "suggestions", None),
                                   ("PUT", "rules/evil", b"function rule(f) return {} end"),
                                   ("POST", "rules/run", {"dry_run": True})]:
            r = self.srv.request(method, "/api/v1/stores/%s/%s" % (self.c.sid, path), body, token=bob.tok)
            self.assertEqual(r.status, 404, (method, path, r))
        self.assertEqual(self.c.tags_of("secret.txt"), ["private"])
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%s/tags" % self.c.sid).status, 401)


HEAD_RULE = b"""
function rule(file)
  local out = {apply = {}, suggest = {}}
  if file.head:sub(1, 4) == "%PDF" then out.apply[#out.apply + 1] = {tag = "pdf", reason = "starts with %PDF"} end
  if file.extension == "txt" and file.head:find("invoice", 1, true) then
    out.apply[#out.apply + 1] = "invoice"
    out.suggest[#out.suggest + 1] = {tag = "accounting", reason = "an invoice"}
  end
  return out
end
"""


class RulesBase(ServerTest):
    modules = {"tags": True, "ftp": True}
    module_conf = {}

    def setUp(self):
        self.ftp_port = harness.free_port()
        base = random.randrange(20000, 60000, 100)
        self.env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
                    "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99), "MBYTE_LUA_SECONDS": "5",
                    "MBYTE_LUA_MEMORY": str(4 << 20)}
        self.env.update(getattr(self, "env_extra", {}))
        self.srv = harness.Server(modules=self.modules, env=self.env, module_conf=self.module_conf)
        self.srv.start()
        self.admin = self.srv.login()
        self.c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))

    def rule(self, name, src):
        return self.c.req("PUT", "rules/" + name, src, headers={"Content-Type": "text/x-lua"})

    def run_rules(self, path, dry):
        """POST rules/run on path and wait for its task: the finished task."""
        r = self.c.req("POST", "rules/run", {"path": path, "dry_run": dry})
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        t = poll(lambda: (lambda x: x if x.get("state") in ("done", "failed") else None)(
            self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=self.c.tok).json()), timeout=600)
        self.assertEqual(t["state"], "done", t)
        return t

    def ftp_put(self, path, data):
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_port)
        f.login("alice", "user-password-1")
        f.storbinary("STOR /Home/" + path, io.BytesIO(data))
        f.quit()


class RulesTest(RulesBase):
    def test_rule_tags_http_and_ftp_uploads_alike_and_suggests(self):
        self.assertEqual(self.rule("basics", HEAD_RULE).status, 201)
        self.c.put("a/bill.txt", b"This invoice is due.")
        self.ftp_put("bill2.txt", b"Another invoice, over FTP.")
        poll(lambda: self.c.tags_of("a/bill.txt") == ["invoice"], what="HTTP upload tagged")
        poll(lambda: self.c.tags_of("bill2.txt") == ["invoice"], what="FTP upload tagged")
        # both files were tagged, but each suggestion is written by its own rule run: wait for two
        sugg = poll(lambda: (lambda v: v if len(v) >= 2 else None)(
            sorted((s["path"], s["tag"]) for s in self.c.req("GET", "suggestions").json())), what="two suggestions")
        self.assertEqual(sugg, [("a/bill.txt", "accounting"), ("bill2.txt", "accounting")])
        s = self.c.req("GET", "suggestions").json()[0]
        self.assertEqual((s["rule"], s["reason"]), ("basics", "an invoice"))
        self.assertEqual(self.c.req("POST", "suggestions/accept", {"path": "a/bill.txt", "tag": "accounting"}).status,
                         200)
        self.assertEqual(self.c.tags_of("a/bill.txt"), ["invoice", "accounting"])
        self.assertEqual(self.c.req("POST", "suggestions/dismiss", {"path": "bill2.txt", "tag": "accounting"}).status,
                         200)
        self.assertEqual(self.c.req("GET", "suggestions").json(), [])
        # a dismissed suggestion is not made again for the same version, but is for a new one
        self.c.req("POST", "move", {"from": "bill2.txt", "to": "bill3.txt"})
        poll(lambda: self.c.req("GET", "rules").json()[0]["runs"] >= 3, what="the rule ran on the move")
        self.assertEqual(self.c.req("GET", "suggestions").json(), [])
        self.c.put("bill3.txt", b"A changed invoice.")
        poll(lambda: [x["path"] for x in self.c.req("GET", "suggestions").json()] == ["bill3.txt"],
             what="suggested again for the new version")
        # the test call
        r = self.c.req("POST", "rules/basics/test", {"path": "a/bill.txt"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([a["tag"] for a in r.json()["apply"]], ["invoice"])
        self.assertEqual(self.c.req("GET", "rules/basics").body, HEAD_RULE)
        self.assertEqual(self.c.req("DELETE", "rules/basics").status, 204)
        self.assertEqual(self.c.req("GET", "rules").json(), [])

    def test_bad_rules_are_stopped_and_reported_and_uploads_go_on(self):
        r = self.rule("broken", b"function rule(file)\n  return {apply = {\"x\"}\nend\n")
        self.assertEqual(r.status, 422, r)
        self.assertEqual(r.json()["line"], 3)  # where Lua found the missing '}'
        self.assertIn("broken.lua:3:", r.json()["detail"])
        bad = {
            "loop": b"function rule(file) while true do end end",
            "alloc": b"function rule(file) local t = {} local i = 0 while true do i = i + 1 t[i] = string.rep('x', 1000) .. i end end",
            "exec": b"function rule(file) os.execute('touch /tmp/pwned-by-rule') return {apply={'x'}} end",
            "good": b"function rule(file) return {apply = {'seen'}} end",
        }
        for name, src in bad.items():
            self.assertEqual(self.rule(name, src).status, 201, name)
        self.c.put("up.txt", b"hello")
        self.ftp_put("up2.txt", b"hello ftp")
        self.assertEqual(self.c.req("GET", "files/up.txt").body, b"hello")
        poll(lambda: self.c.tags_of("up.txt") == ["seen"] and self.c.tags_of("up2.txt") == ["seen"],
             what="the good rule still ran")
        stats = poll(lambda: (lambda s: s if all(s[n]["errors"] >= 2 for n in ("loop", "alloc", "exec")) else None)(
            {x["name"]: x for x in self.c.req("GET", "rules").json()}), what="errors counted")
        self.assertRegex(stats["loop"]["last_error"], "instruction budget|time limit")
        self.assertIn("memory", stats["alloc"]["last_error"])
        self.assertIn("execute", stats["exec"]["last_error"])
        self.assertEqual(stats["good"]["errors"], 0)
        self.assertFalse(os.path.exists("/tmp/pwned-by-rule"))
        r = self.c.req("POST", "rules/loop/test", {"path": "up.txt"}).json()
        self.assertRegex(r["error"], "instruction budget|time limit")

    def test_a_rule_cannot_change_the_file_it_is_shown(self):
        writes = {"top": b"function rule(file)\n  file.name = 'x'\n  return {apply = {'top'}}\nend\n",
                  "meta": b"function rule(file)\n  setmetatable(file, nil)\n  return {apply = {'meta'}}\nend\n",
                  "reads": b"function rule(file)\n  local n = 0\n  for k in pairs(file) do n = n + 1 end\n"
                           b"  return {apply = {(file.name == 'ro.txt' and n > 3) and 'reads' or 'none'}}\nend\n"}
        for name, src in writes.items():
            self.assertEqual(self.rule(name, src).status, 201, name)
        self.c.put("ro.txt", b"hello")
        poll(lambda: self.c.tags_of("ro.txt") == ["reads"], what="the reading rule ran")
        stats = poll(lambda: (lambda s: s if all(s[n]["errors"] >= 1 for n in ("top", "meta")) else None)(
            {x["name"]: x for x in self.c.req("GET", "rules").json()}), what="errors counted")
        self.assertIn("top.lua:2: the argument is read-only", stats["top"]["last_error"])
        self.assertIn("metatable", stats["meta"]["last_error"])
        r = self.c.req("POST", "rules/top/test", {"path": "ro.txt"}).json()
        self.assertIn("read-only", r["error"])

    def test_dry_run_reports_what_the_real_run_applies_to_1000_files(self):
        for i in range(1000):
            self.c.put("many/f%04d.txt" % i, b"x" * (i % 7))
        rule = b"""function rule(file)
          local n = tonumber(file.name:match("f(%d+)")) or 0
          local out = {apply = {}}
          if n % 3 == 0 then out.apply[#out.apply + 1] = "three" end
          if file.size >= 5 then out.apply[#out.apply + 1] = "big" end
          return out end"""

        def run(dry):
            t = self.run_rules("many", dry)
            return {ch["path"]: sorted(a["tag"] for a in ch["apply"]) for ch in t["result"]["changes"]}

        # Events are handled in order: once a marker uploaded last is tagged, the 1,000 uploads were
        # handled (with no rule), so nothing is tagged yet.
        self.assertEqual(self.rule("marker", b"function rule(f) if f.name == 'marker.txt' then return {apply={'m'}} end end").status, 201)
        self.c.put("marker.txt", b"m")
        poll(lambda: self.c.tags_of("marker.txt") == ["m"], what="the marker")
        self.assertEqual(self.c.req("DELETE", "rules/marker").status, 204)
        self.assertEqual(self.rule("r", rule).status, 201)
        before = {e["name"]: e["tags"] for e in self.c.listing("many")}
        self.assertTrue(all(v == [] for v in before.values()))
        dry = run(True)
        self.assertEqual({e["name"]: e["tags"] for e in self.c.listing("many")}, before)  # nothing changed
        expect = {}
        for i in range(1000):
            tags = (["three"] if i % 3 == 0 else []) + (["big"] if i % 7 >= 5 else [])
            if tags:
                expect["many/f%04d.txt" % i] = sorted(tags)
        self.assertEqual(dry, expect)
        real = run(False)
        self.assertEqual(real, dry)
        after = {"many/" + e["name"]: sorted(e["tags"]) for e in self.c.listing("many") if e["tags"]}
        self.assertEqual(after, dry)
        # cancel: a slower rule over the same files, stopped; it stops between two files
        slow = b"function rule(f) local n = 0 for i = 1, 300000 do n = n + i end return {apply = {'slow'}} end"
        self.assertEqual(self.rule("slow", slow).status, 201)
        tid = self.c.req("POST", "rules/run", {"path": "many", "dry_run": False}).json()["task"]
        self.assertEqual(self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=self.c.tok).status, 200)
        t = poll(lambda: (lambda x: x if x.get("state") in ("done", "failed", "cancelled") else None)(
            self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=self.c.tok).json()), timeout=600)
        self.assertEqual(t["state"], "cancelled", t)
        slow_tagged = sum("slow" in e["tags"] for e in self.c.listing("many"))
        self.assertLess(slow_tagged, 1000)


class RunResultCapTest(RulesBase):
    module_conf = {"tags": "run_result_max: 5\n"}

    def test_a_run_counts_every_file_it_tags_and_lists_the_first_run_result_max(self):
        # a run over a store of a million files keeps a page of its changes, not all of them
        for i in range(12):
            self.c.put("few/f%02d.txt" % i, b"x")
        self.assertEqual(self.rule("all", b"function rule(f) return {apply = {'seen'}} end").status, 201)
        for dry in (True, False):
            res = self.run_rules("few", dry)["result"]
            self.assertEqual((res["files"], res["changed"], len(res["changes"])), (12, 12, 5), res)
            listed = [ch["path"] for ch in res["changes"]]
            self.assertEqual(len(set(listed)), 5)
            self.assertTrue(all(p.startswith("few/f") for p in listed), listed)
        self.assertEqual(sum(e["tags"] == ["seen"] for e in self.c.listing("few")), 12)  # all applied


LUA = os.path.join(harness.SRC, "scripts", "lua")


class GlobalRulesTest(RulesBase):
    """Global rules: scripts/lua/ files named in conf.d/tags.yaml run for every store and user."""
    module_conf = {"tags": "global_rules: [source_code.lua, by_path.lua]\n"}

    def test_global_rules_run_for_every_store(self):
        bob = Client(self.srv, self.srv.add_user("bob", admin_token=self.admin))
        self.c.put("Projects/apollo/run.py", b"print('hi')\n")
        bob.put("taxes/2026/tool", b"#!/usr/bin/env python3\nprint(1)\n")
        poll(lambda: self.c.tags_of("Projects/apollo/run.py") == ["code", "lang:python", "project:apollo"],
             what="alice's file tagged by the global rules")
        poll(lambda: bob.tags_of("taxes/2026/tool") == ["code", "lang:python", "taxes"],
             what="bob's file tagged by its #! line and its folder")
        rules = {r["name"]: r for r in self.c.req("GET", "rules").json()}
        self.assertEqual({n: r["scope"] for n, r in rules.items()}, {"source_code.lua": "global", "by_path.lua": "global"})
        self.assertTrue(all(r["runs"] >= 2 and r["errors"] == 0 for r in rules.values()), rules)
        r = bob.req("POST", "rules/source_code.lua/test", {"path": "taxes/2026/tool"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([a["tag"] for a in r.json()["apply"]], ["code", "lang:python"])
        # a global rule cannot be replaced or deleted through a store
        self.assertEqual(self.c.req("DELETE", "rules/source_code.lua").status, 400)



class GlobalRulesReloadTest(RulesBase):
    """mbytectl rules reload: after the administrator fixed a global rule's file."""
    module_conf = {"tags": "global_rules: [flaky.lua]\n"}

    def setUp(self):
        self.lua_dir = tempfile.mkdtemp(prefix="lua-")
        self.addCleanup(shutil.rmtree, self.lua_dir, True)
        self.write("function rule(file)\n  return {apply = {file.nosuch.field}}\nend\n")
        self.env_extra = {"MBYTE_LUA_DIR": self.lua_dir}
        super().setUp()

    def write(self, src):
        with open(os.path.join(self.lua_dir, "flaky.lua"), "w") as f:
            f.write(src)

    def stats(self):
        return {r["name"]: r for r in self.c.req("GET", "rules").json()}["flaky.lua"]

    def test_reload_clears_the_error_count_and_the_fixed_rule_runs(self):
        self.c.put("a.txt", b"one")
        poll(lambda: self.stats()["errors"] >= 1, what="the broken rule's error counted")
        self.assertIn("flaky.lua:2:", self.stats()["last_error"])
        self.write("function rule(file)\n  return {apply = {'fixed'}}\nend\n")
        r = self.srv.request("POST", "/api/v1/admin/tags/rules/reload", token=self.c.tok)
        self.assertEqual(r.status, 403, r)  # an administrator's command
        r = self.srv.ctl("rules", "reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("flaky.lua", r.stdout)
        self.assertIn("error counts cleared for 1", r.stdout)
        st = self.stats()
        self.assertEqual((st["errors"], st["last_error"]), (0, None), st)
        self.c.put("b.txt", b"two")
        poll(lambda: self.c.tags_of("b.txt") == ["fixed"], what="the fixed rule tagged the next file")
        self.assertEqual(self.stats()["errors"], 0)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class SearchRulesTest(RulesBase):
    """Rules that need the search module's extracted text: a word in a PDF (made by groff), the
    camera of a JPEG (ImageMagick + exiftool); HTTP and FTP uploads get the same tags; search's
    tag: filter answers from the tags."""
    modules = {"tags": True, "search": True, "ftp": True}

    def setUp(self):
        for tool in ("groff", "convert", "exiftool"):
            if not shutil.which(tool):
                missing_prerequisite(self, tool + " is not installed (tests/setup/search.sh)")
        self.tmp = tempfile.mkdtemp(prefix="mbyte-tags-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, cwd=self.tmp, timeout=180, **kw)
        with open(os.path.join(self.tmp, "bill.ms"), "w") as f:
            f.write(".TL\nStatement\n.PP\nThis Invoice is payable within thirty days.\n")
        with open(os.path.join(self.tmp, "bill.pdf"), "wb") as f:
            subprocess.run(["groff", "-ms", "-Tpdf", "bill.ms"], check=True, stdout=f, cwd=self.tmp, timeout=120)
        run("convert", "-size", "64x48", "gradient:blue-white", "photo.jpg")
        run("exiftool", "-overwrite_original", "-Make=Hasselblad", "-Model=X2D",
            "-DateTimeOriginal=2026:05:04 10:11:12", "photo.jpg")
        self.pdf, self.jpg = read(os.path.join(self.tmp, "bill.pdf")), read(os.path.join(self.tmp, "photo.jpg"))
        self.assertNotIn(b"Invoice", self.pdf)  # the word is only in the compressed text stream
        super().setUp()

    def test_pdf_by_a_word_and_jpeg_by_camera_over_http_and_ftp(self):
        for name in ("invoices", "photos", "exif_date"):
            self.assertEqual(self.rule(name, read(os.path.join(LUA, name + ".lua"))).status, 201)
        self.c.put("in/bill.pdf", self.pdf)
        self.c.put("in/photo.jpg", self.jpg)
        self.ftp_put("bill.pdf", self.pdf)
        self.ftp_put("photo.jpg", self.jpg)
        want_photo = ["photo", "camera:X2D", "taken:2026", "taken:2026-05"]
        for path, want in [("in/bill.pdf", ["invoice"]), ("bill.pdf", ["invoice"]),
                           ("in/photo.jpg", want_photo), ("photo.jpg", want_photo)]:
            poll(lambda: sorted(self.c.tags_of(path)) == sorted(want), timeout=120, what="%s tagged %s" % (path, want))
        r = self.srv.request("GET", "/api/v1/search?q=tag:invoice", token=self.c.tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(h["path"] for h in r.json()["hits"]), ["bill.pdf", "in/bill.pdf"])
        r = self.srv.request("GET", "/api/v1/search?q=tag:-invoice%20tag:-photo", token=self.c.tok)
        # every file carries one of them; the folder "in" (folders are hits too) carries neither
        self.assertEqual([h["path"] for h in r.json()["hits"]], ["in"])
        r = self.srv.request("GET", "/api/v1/search?q=hasselblad%20tag:camera:X2D", token=self.c.tok)
        self.assertEqual(sorted(h["path"] for h in r.json()["hits"]), ["in/photo.jpg", "photo.jpg"])
        # the rule test call sees the text too
        r = self.c.req("POST", "rules/invoices/test", {"path": "in/bill.pdf"}).json()
        self.assertEqual([(a["tag"], a["reason"]) for a in r["apply"]], [("invoice", "the text says 'invoice'")])


if __name__ == "__main__":
    main()

"""The discord module against tests/tools/fakediscord.py, a local stand-in that follows Discord's
HTTP API v10 for the routes the module uses (Discord cannot be reached from here): channel
backups with threads and attachments, incremental runs, kill -9 in the middle of a run, Discord's
rate limits (buckets, 429 bursts, the global limit), expired signed attachment URLs, edits and
deletions, notifications, and Ed25519-signed interactions signed with a real key."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from harness import Server, ServerTest, main, missing_prerequisite  # noqa: E402
from storeutil import wait_task  # noqa: E402
from fakediscord import FakeDiscord  # noqa: E402

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
except ImportError:  # tests/setup/discord.sh installs python3-cryptography
    Ed25519PrivateKey = None

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", "")
CH = "800000000000000001"
THREAD_ACTIVE = "800000000000000002"
THREAD_ARCHIVED = "800000000000000003"
APP = "700000000000000001"
DISCORD_USER = "100000000000000042"


class DiscordBase(ServerTest):
    extra_modules = {}
    extra_conf = {}
    poll_interval = 0

    def setUp(self):
        if Ed25519PrivateKey is None:
            missing_prerequisite(self, "python3-cryptography (tests/setup/discord.sh) signs the interactions")
        self.fake = FakeDiscord()
        self.key = Ed25519PrivateKey.generate()
        pk = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        conf = ("bot_token: %s\npublic_key: %s\napi_base: %s\ncdn_hosts: [\"127.0.0.1\"]\npoll_interval: %d\n"
                "notify_channel: \"%s\"\nnotify_events: [\"discord.backup.failed\", \"task.failed\"]\n"
                % (self.fake.token, pk, self.fake.api_base, self.poll_interval, CH))
        mods = {"discord": True}
        mods.update(self.extra_modules)
        module_conf = {"discord": conf}
        module_conf.update(self.extra_conf)
        self.srv = Server(modules=mods, module_conf=module_conf, env={"MBYTE_TASK_BACKOFF_MS": "50"})
        self.srv.start()
        self.admin = self.srv.login()
        self.tok = self.srv.add_user("dana")
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]
        self.fake.add_channel(CH)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.fake.close()

    # ---- helpers ----
    def connect(self, channel=CH, folder="discord", token=None, sid=None):
        r = self.srv.request("POST", "/api/v1/discord/backups",
                             {"channel": channel, "store": sid or self.sid, "folder": folder}, token=token or self.tok)
        self.assertEqual(r.status, 201, r)
        return r.json()["id"]

    def run_backup(self, bid, want="done"):
        """Run now and wait for the run; a run skipped because one was going on is asked again."""
        deadline = time.time() + 300
        while True:
            r = self.srv.request("POST", "/api/v1/discord/backups/%s/run" % bid, token=self.tok)
            self.assertEqual(r.status, 202, r)
            task = wait_task(self, self.srv, r.json()["task"], self.tok, timeout=300)
            if not (task.get("result") or {}).get("skipped"):
                self.assertEqual(task["state"], want, task)
                return task
            self.assertLess(time.time(), deadline, "the backup never ran")
            time.sleep(0.2)

    def files(self, folder="discord"):
        r = self.srv.request("GET", "/api/v1/stores/%d/list/%s?recursive=true" % (self.sid, folder), token=self.tok)
        self.assertEqual(r.status, 200, r)
        return [e["relpath"] for e in r.json()["entries"] if e["type"] == "file"]

    def read(self, path):
        r = self.srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, path), token=self.tok)
        self.assertEqual(r.status, 200, (path, r))
        return r.body

    def lines(self, folder="discord"):
        """Every JSON line of every day file: {channel dir: [records]}."""
        out = {}
        for rel in sorted(self.files(folder)):
            if rel.endswith(".jsonl"):
                d = rel.rsplit("/", 1)[0]
                for ln in self.read(folder + "/" + rel).decode().splitlines():
                    out.setdefault(d, []).append(json.loads(ln))
        return out

    def message_ids(self, folder="discord"):
        ids = []
        for recs in self.lines(folder).values():
            ids += [r["id"] for r in recs if r["kind"] == "message"]
        return ids

    def expected_ids(self, *channels):
        return sorted(i for c in channels for i in self.fake.messages[c])

    def fill(self, channel, n, every=20, tag="m"):
        """n messages, one with an attachment every `every`; returns {attachment id: bytes}."""
        blobs = {}
        for i in range(n):
            atts = []
            if every and i % every == every - 1:
                data = os.urandom(1000 + (i * 7919) % 200000)
                atts = [("photo %s-%d.bin" % (tag, i), data, "application/octet-stream")]
            mid = self.fake.add_message(channel, "%s %d: **hello** from the test" % (tag, i), atts)
            for a in self.fake.messages[channel][mid]["attachments"]:
                blobs[(mid, a["filename"])] = self.fake.blobs[a["id"]]
        return blobs

    def assert_attachments(self, blobs, folder="discord"):
        for (mid, name), data in blobs.items():
            got = self.read("%s/attachments/%s-%s" % (folder, mid, name.replace(" ", "%20")))
            self.assertEqual(got, data, "attachment %s-%s differs" % (mid, name))


class Backups(DiscordBase):
    def test_1000_messages_and_50_attachments_in_a_channel_and_threads_then_only_200_new_ones(self):
        self.fake.add_channel(THREAD_ACTIVE, parent=CH, name="active thread")
        self.fake.add_channel(THREAD_ARCHIVED, parent=CH, name="old thread", archived=True)
        blobs = self.fill(CH, 800, tag="c")
        blobs.update(self.fill(THREAD_ACTIVE, 100, tag="a"))
        blobs.update(self.fill(THREAD_ARCHIVED, 100, tag="z"))
        self.assertEqual(len(blobs), 50)
        bid = self.connect()
        task = self.run_backup(bid)
        self.assertEqual(task["result"]["messages"], 1000, task)
        self.assertEqual(task["result"]["threads"], 2, task)
        ids = self.message_ids()
        self.assertEqual(sorted(ids), self.expected_ids(CH, THREAD_ACTIVE, THREAD_ARCHIVED))
        self.assert_attachments(blobs)
        days = [f for f in self.files() if f.startswith(CH + "/") and f.count("/") == 1 and f.endswith(".jsonl")]
        self.assertGreaterEqual(len(days), 3, days)  # 800 messages 5 minutes apart: three days at least
        for f in days:  # each day file holds that day's messages only, and its .md renders them
            recs = [json.loads(x) for x in self.read("discord/" + f).decode().splitlines()]
            self.assertTrue(all(r["timestamp"].startswith(f.split("/")[-1][:10]) for r in recs))
            md = self.read("discord/" + f[:-6] + ".md").decode()
            self.assertIn(recs[-1]["id"], md)
            self.assertIn("**hello**", md)
        thread_files = [f for f in self.files() if "/threads/%s/" % THREAD_ARCHIVED in f]
        self.assertTrue(thread_files, self.files())
        # 200 more: only those are added.
        new = self.fill(CH, 150, tag="c2")
        new.update(self.fill(THREAD_ACTIVE, 50, tag="a2"))
        task = self.run_backup(bid)
        self.assertEqual(task["result"]["messages"], 200, task)
        ids = self.message_ids()
        self.assertEqual(len(ids), len(set(ids)), "a message is stored twice")
        self.assertEqual(sorted(ids), self.expected_ids(CH, THREAD_ACTIVE, THREAD_ARCHIVED))
        self.assert_attachments(new)
        r = self.srv.request("GET", "/api/v1/discord/backups", token=self.tok)
        b = r.json()["backups"][0]
        self.assertEqual((b["state"], b["messages"], b["threads"], b["last_error"]), ("ok", 1200, 2, None), b)
        self.assertEqual(self.fake.violations, 0, "a request was sent that Discord's headers said to hold back")

    def test_kill_9_in_the_middle_of_a_run_loses_and_doubles_nothing(self):
        blobs = self.fill(CH, 700, every=35)
        bid = self.connect()
        self.fake.delay = 0.08
        r = self.srv.request("POST", "/api/v1/discord/backups/%s/run" % bid, token=self.tok)
        self.assertEqual(r.status, 202, r)
        deadline = time.time() + 120
        while self.fake.message_pages < 4:
            self.assertLess(time.time(), deadline, "the run did not get going")
            time.sleep(0.01)
        self.srv.kill()
        # 700 messages take 8 page reads (the last one empty): the run was cut short.
        self.assertLess(self.fake.message_pages, 8, "the run had finished before the kill: nothing tested")
        self.fake.delay = 0
        self.srv.start()
        self.run_backup(bid)
        ids = self.message_ids()
        self.assertEqual(len(ids), len(set(ids)), "a message is stored twice after the kill")
        self.assertEqual(sorted(ids), self.expected_ids(CH))
        self.assert_attachments(blobs)

    def test_day_files_written_but_cursor_not_yet_saved_are_not_doubled(self):
        """The state a kill -9 between step 2 (day files) and step 3 (cursor) leaves, made exactly:
        the cursor is put back 130 messages while the files hold all 250 (docs/discord.md)."""
        self.fill(CH, 250, every=50)
        bid = self.connect()
        self.run_backup(bid)
        ids = sorted(self.fake.messages[CH], key=int)
        self.srv.stop()
        key = "m/discord/c/%s/%s" % (bid, CH)
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), key, '"last":"%s"' % ids[-1],
                            '"last":"%s"' % ids[119]], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        task = self.run_backup(bid)
        self.assertEqual(task["result"]["messages"], 130, task)  # read again, and found in the files
        got = self.message_ids()
        self.assertEqual(len(got), len(set(got)), "a message is stored twice")
        self.assertEqual(sorted(got), self.expected_ids(CH))
        for f in self.files():
            if f.endswith(".md"):
                self.assertEqual(self.read("discord/" + f).decode().count("`%s`" % ids[200]), 0 if ids[200] not in
                                 self.read("discord/" + f[:-3] + ".jsonl").decode() else 1)

    def test_a_reload_during_a_run_neither_breaks_it_nor_starts_a_second_one(self):
        self.fill(CH, 500, every=0)
        bid = self.connect()
        r = self.srv.request("POST", "/api/v1/discord/backups/%s/run" % bid, token=self.tok)
        first = r.json()["task"]
        deadline = time.time() + 120
        while self.fake.message_pages < 2:
            self.assertLess(time.time(), deadline, "the run did not get going")
            time.sleep(0.01)
        self.fake.gate.clear()  # the run now waits inside a request to Discord
        r = self.srv.request("POST", "/api/v1/admin/modules/discord/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        # The new copy sees the old copy's run going on and does not start a second one beside it.
        r = self.srv.request("POST", "/api/v1/discord/backups/%s/run" % bid, token=self.tok)
        second = wait_task(self, self.srv, r.json()["task"], self.tok, timeout=120)
        self.assertTrue((second.get("result") or {}).get("skipped"), second)
        self.fake.gate.set()
        task = wait_task(self, self.srv, first, self.tok, timeout=300)
        self.assertEqual(task["state"], "done", task)
        self.assertEqual(task["result"]["messages"], 500, task)
        got = self.message_ids()
        self.assertEqual(sorted(got), self.expected_ids(CH))

    def test_a_burst_of_429s_is_waited_out_as_told_and_the_run_finishes(self):
        self.fill(CH, 450, every=0)
        bid = self.connect()
        self.fake.burst(3, retry_after=0.4, global_=False)
        self.fake.burst(3, retry_after=0.3, global_=True)
        self.run_backup(bid)
        self.assertEqual(sorted(self.message_ids()), self.expected_ids(CH))
        self.assertGreaterEqual(self.fake.served_429, 6)
        self.assertEqual(self.fake.violations, 0, "a request came before the retry_after Discord gave")
        self.assertIn("waiting", self.srv.read_log())

    def test_a_tight_bucket_and_global_limit_are_kept_without_a_single_refusal(self):
        self.fake.bucket_limit, self.fake.global_limit = 2, 10
        self.fill(CH, 600, every=0)
        self.run_backup(self.connect())
        self.assertEqual(sorted(self.message_ids()), self.expected_ids(CH))
        self.assertEqual((self.fake.violations, self.fake.served_429), (0, 0))

    def test_eighty_threads_read_at_once_stay_under_the_global_limit(self):
        """Each thread is its own bucket (its channel id is the top-level resource), so only the
        global limit (50 a second at the stand-in, as at Discord) holds the module back."""
        for i in range(80):
            tid = str(810000000000000000 + i)
            self.fake.add_channel(tid, parent=CH, name="t%d" % i, archived=i % 2 == 0)
            self.fake.add_message(tid, "in thread %d" % i)
        task = self.run_backup(self.connect())
        self.assertEqual((task["result"]["threads"], task["result"]["messages"]), (80, 80), task)
        self.assertEqual((self.fake.violations, self.fake.served_429), (0, 0))

    def test_an_expired_attachment_url_is_fetched_again_through_a_fresh_message_read(self):
        blobs = self.fill(CH, 9, every=3)
        gone = self.fake.add_message(CH, "its file was removed from Discord", [("gone.txt", b"x" * 10, "text/plain")])
        del self.fake.blobs[self.fake.messages[CH][gone]["attachments"][0]["id"]]
        self.fake.list_urls_expired = True
        self.run_backup(self.connect())
        self.assert_attachments(blobs)
        self.assertGreaterEqual(self.fake.expired_refusals, 3)
        self.assertGreaterEqual(self.fake.single_reads, 3)
        # An attachment that cannot be had any more is recorded as missing; the backup goes on.
        rec = [r for rs in self.lines().values() for r in rs if r["id"] == gone][0]
        self.assertIsNone(rec["attachments"][0]["path"])
        self.assertIn("expired", rec["attachments"][0]["missing"])
        self.assertEqual(sorted(self.message_ids()), self.expected_ids(CH))

    def test_edits_and_deletions_seen_later_are_recorded_not_overwritten(self):
        self.fill(CH, 30, every=0)
        bid = self.connect()
        self.run_backup(bid)
        ids = sorted(self.fake.messages[CH], key=int)
        self.fake.edit_message(CH, ids[5], "edited text")
        self.fake.delete_message(CH, ids[7])
        self.run_backup(bid)
        recs = [r for rs in self.lines().values() for r in rs]
        original = [r for r in recs if r["id"] == ids[5] and r["kind"] == "message"]
        self.assertEqual(len(original), 1)
        self.assertIn("m 5:", original[0]["content"])  # the first text is kept
        edits = [r for r in recs if r["id"] == ids[5] and r["kind"] == "edit"]
        self.assertEqual([e["content"] for e in edits], ["edited text"])
        self.assertEqual(len([r for r in recs if r["id"] == ids[7] and r["kind"] == "delete"]), 1)
        self.assertEqual(len([r for r in recs if r["id"] == ids[7] and r["kind"] == "message"]), 1)
        self.run_backup(bid)  # seen once, recorded once
        recs = [r for rs in self.lines().values() for r in rs]
        self.assertEqual(len([r for r in recs if r["kind"] != "message"]), 2)

    def test_a_user_connects_only_their_own_stores_and_sees_only_their_own_backups(self):
        other = self.srv.add_user("eve")
        r = self.srv.request("POST", "/api/v1/discord/backups", {"channel": CH, "store": self.sid, "folder": "x"},
                             token=other)
        self.assertProblem(r, 404)
        bid = self.connect()
        for method, path in [("GET", ""), ("POST", "/run"), ("DELETE", "")]:
            r = self.srv.request(method, "/api/v1/discord/backups/%s%s" % (bid, path), token=other)
            self.assertProblem(r, 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/discord/backups", token=other).json()["backups"], [])
        r = self.srv.request("POST", "/api/v1/discord/backups", {"channel": "12ab", "store": self.sid}, token=self.tok)
        self.assertProblem(r, 400)
        r = self.srv.request("POST", "/api/v1/discord/backups", {"channel": "999", "store": self.sid}, token=self.tok)
        self.assertProblem(r, 400, "cannot read channel")
        r = self.srv.request("DELETE", "/api/v1/discord/backups/%s" % bid, token=self.tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.srv.request("GET", "/api/v1/discord/backups", token=self.tok).json()["backups"], [])


class Polling(DiscordBase):
    poll_interval = 1

    def test_new_messages_are_backed_up_every_poll_interval_without_asking(self):
        self.fill(CH, 5, every=0)
        bid = self.connect()
        deadline = time.time() + 60
        while sorted(self.message_ids()) != self.expected_ids(CH):
            self.assertLess(time.time(), deadline, "the timer never ran the backup")
            time.sleep(0.2)
        self.fill(CH, 3, every=0, tag="later")
        while sorted(self.message_ids()) != self.expected_ids(CH):
            self.assertLess(time.time(), deadline + 60, "the timer did not pick up the new messages")
            time.sleep(0.2)
        # the files land before the run's record is written: poll the record too
        while (b := self.srv.request("GET", "/api/v1/discord/backups/%s" % bid, token=self.tok).json())["messages"] != 8:
            self.assertLess(time.time(), deadline + 60, "the record never counted 8 messages: %r" % b)
            time.sleep(0.2)
        self.assertEqual(b["state"], "ok", b)


class Notifications(DiscordBase):
    def test_a_failed_backup_is_posted_by_the_bot_and_to_the_users_webhook(self):
        self.fake.add_channel("800000000000000009", name="doomed")
        bid = self.connect(channel="800000000000000009")
        r = self.srv.request("PUT", "/api/v1/discord/notifications",
                             {"webhook_url": "http://169.254.169.254/latest", "events": ["discord.backup.failed"]},
                             token=self.tok)
        self.assertProblem(r, 400)
        hook = self.fake.api_base + "/webhooks/600000000000000001/hooktoken"
        r = self.srv.request("PUT", "/api/v1/discord/notifications",
                             {"webhook_url": hook, "events": ["discord.backup.failed"]}, token=self.tok)
        self.assertEqual(r.status, 200, r)
        with self.fake.lock:
            del self.fake.channels["800000000000000009"]
        self.run_backup(bid, want="failed")
        deadline = time.time() + 60
        while not (self.fake.created and self.fake.webhook_posts):
            self.assertLess(time.time(), deadline, (self.fake.created, self.fake.webhook_posts))
            time.sleep(0.05)
        # The task tried 3 times; the outage is told once (and the failed task once).
        told = [b for c, b in self.fake.created if "the backup of channel" in b["content"]]
        self.assertEqual(len(told), 1, self.fake.created)
        deadline = time.time() + 60
        while not [b for c, b in self.fake.created if "(discord.backup) failed" in b["content"]]:
            self.assertLess(time.time(), deadline, self.fake.created)
            time.sleep(0.05)
        ch, body = [(c, b) for c, b in self.fake.created if "the backup of channel" in b["content"]][0]
        self.assertEqual(ch, CH)
        self.assertIn("800000000000000009", body["content"])
        self.assertEqual(body["allowed_mentions"], {"parse": []})
        self.assertEqual(self.fake.webhook_posts[0][:2], ("600000000000000001", "hooktoken"))
        b = self.srv.request("GET", "/api/v1/discord/backups/%s" % bid, token=self.tok).json()
        self.assertEqual(b["state"], "error")
        self.assertIn("cannot read channel", b["last_error"])


class QuotaNotifications(DiscordBase):
    extra_modules = {"quotas": True}
    extra_conf = {"quotas": "warn_percent: [80, 90]\n"}

    def test_quota_above_90_percent_is_posted_and_below_it_is_not(self):
        r = self.srv.request("PUT", "/api/v1/admin/quotas/users/dana", {"bytes": 100000}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        hook = self.fake.api_base + "/webhooks/600000000000000002/quotatoken"
        r = self.srv.request("PUT", "/api/v1/discord/notifications", {"webhook_url": hook, "events": ["quota.warning"]},
                             token=self.tok)
        self.assertEqual(r.status, 200, r)
        put = lambda name, n: self.srv.request("PUT", "/api/v1/stores/%d/files/%s" % (self.sid, name), b"q" * n,
                                               token=self.tok, headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(put("a.bin", 85000).status, 201)  # 85 %: quota.warning (level 80), not posted
        self.assertEqual(put("b.bin", 8000).status, 201)  # 93 %: quota.warning (level 90), posted
        deadline = time.time() + 60
        while not [p for p in self.fake.webhook_posts if p[1] == "quotatoken"]:
            self.assertLess(time.time(), deadline, "no quota notification")
            time.sleep(0.05)
        # The 85 % event came first (the outbox keeps order): had it been posted, it would be here.
        posts = [p for p in self.fake.webhook_posts if p[1] == "quotatoken"]
        self.assertEqual([("93000 of 100000 bytes" in p[2]["content"]) for p in posts], [True], posts)


class Interactions(DiscordBase):
    extra_modules = {"quotas": True}

    def post(self, body, key=None, ts=None, sig=None):
        raw = json.dumps(body).encode()
        ts = ts or str(int(time.time()))
        if sig is None:
            sig = (key or self.key).sign(ts.encode() + raw).hex()
        h = {"Content-Type": "application/json", "X-Signature-Timestamp": ts}
        if sig:
            h["X-Signature-Ed25519"] = sig
        return self.srv.request("POST", "/api/v1/discord/interactions", raw, headers=h)

    def command(self, sub, token="interactiontoken1"):
        return {"type": 2, "id": "500000000000000001", "application_id": APP, "token": token,
                "member": {"user": {"id": DISCORD_USER, "username": "dana"}},
                "data": {"name": "mbyte", "type": 1, "options": [sub]}}

    def link(self, tok=None):
        """Link DISCORD_USER to the user of tok as a person does: a code from MByte, typed as
        /mbyte link <code> in Discord (a signed interaction). The ephemeral answer's text."""
        r = self.srv.request("POST", "/api/v1/discord/link/code", token=tok or self.tok)
        self.assertEqual(r.status, 201, r)
        sub = {"type": 1, "name": "link", "options": [{"type": 3, "name": "code", "value": r.json()["code"]}]}
        r = self.post(self.command(sub, token="linktoken"))
        self.assertEqual((r.status, r.json()["type"], r.json()["data"]["flags"]), (200, 4, 64), r)
        return r.json()["data"]["content"]

    def test_a_discord_account_is_linked_only_by_a_code_typed_from_it(self):
        # no way to claim a Discord id by typing it: the old PUT is gone
        r = self.srv.request("PUT", "/api/v1/discord/link", {"discord_user": DISCORD_USER}, token=self.tok)
        self.assertIn(r.status, (404, 405), r)
        bad = {"type": 1, "name": "link", "options": [{"type": 3, "name": "code", "value": "ABCD-EFGH"}]}
        self.assertIn("unknown, used or expired", self.post(self.command(bad)).json()["data"]["content"])
        self.assertIsNone(self.srv.request("GET", "/api/v1/discord/link", token=self.tok).json()["discord_user"])
        code = self.srv.request("POST", "/api/v1/discord/link/code", token=self.tok).json()["code"]
        sub = {"type": 1, "name": "link", "options": [{"type": 3, "name": "code", "value": code.lower()}]}
        self.assertIn("Linked", self.post(self.command(sub)).json()["data"]["content"])
        self.assertEqual(self.srv.request("GET", "/api/v1/discord/link", token=self.tok).json()["discord_user"],
                         DISCORD_USER)
        # a code works once
        self.assertIn("unknown, used or expired", self.post(self.command(sub)).json()["data"]["content"])
        # the account's holder may move it to another MByte user with that user's code: the first link ends
        eve = self.srv.add_user("eve")
        self.assertIn("Linked", self.link(eve))
        self.assertIsNone(self.srv.request("GET", "/api/v1/discord/link", token=self.tok).json()["discord_user"])
        self.assertEqual(self.srv.request("GET", "/api/v1/discord/link", token=eve).json()["discord_user"], DISCORD_USER)
        # a newer code replaces the older one
        first = self.srv.request("POST", "/api/v1/discord/link/code", token=self.tok).json()["code"]
        self.srv.request("POST", "/api/v1/discord/link/code", token=self.tok)
        sub = {"type": 1, "name": "link", "options": [{"type": 3, "name": "code", "value": first}]}
        self.assertIn("unknown, used or expired", self.post(self.command(sub)).json()["data"]["content"])

    def test_forged_or_missing_signatures_are_refused_and_a_ping_is_answered(self):
        ping = {"type": 1, "id": "1", "application_id": APP}
        self.assertProblem(self.post(ping, key=Ed25519PrivateKey.generate()), 401)
        self.assertProblem(self.post(ping, sig=""), 401)
        good = self.post(ping)
        self.assertEqual((good.status, good.json()), (200, {"type": 1}))
        # A body changed after signing, and an old signed request replayed.
        raw = json.dumps(ping).encode()
        ts = str(int(time.time()))
        sig = self.key.sign(ts.encode() + raw).hex()
        r = self.srv.request("POST", "/api/v1/discord/interactions", raw.replace(b"1", b"2", 1),
                             headers={"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts})
        self.assertProblem(r, 401)
        self.assertProblem(self.post(ping, ts=str(int(time.time()) - 3600)), 401)

    def test_mbyte_usage_answers_with_the_users_real_usage(self):
        r = self.post(self.command({"type": 1, "name": "usage"}))
        self.assertEqual(r.json()["type"], 4)  # not linked yet: told how to link
        self.assertIn("not linked", r.json()["data"]["content"])
        self.assertIn("Linked", self.link())
        data = os.urandom(123457)
        r = self.srv.request("PUT", "/api/v1/stores/%d/files/a.bin" % self.sid, data, token=self.tok,
                             headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 201, r)
        usage = self.srv.request("GET", "/api/v1/me/usage", token=self.tok).json()
        r = self.post(self.command({"type": 1, "name": "usage"}, token="usagetoken"))
        self.assertEqual((r.status, r.json()), (200, {"type": 5, "data": {"flags": 64}}))
        deadline = time.time() + 30
        while not [p for p in self.fake.webhook_posts if p[1] == "usagetoken"]:
            self.assertLess(time.time(), deadline, "no follow-up message")
            time.sleep(0.05)
        post = [p for p in self.fake.webhook_posts if p[1] == "usagetoken"][0]
        self.assertEqual(post[0], APP)
        self.assertIn("(%d bytes)" % usage["bytes"], post[2]["content"])
        self.assertIn("in %d files" % usage["files"], post[2]["content"])
        self.assertEqual(post[2]["flags"], 64)

    def wait_followup(self, token):
        deadline = time.time() + 30
        while not [p for p in self.fake.webhook_posts if p[1] == token]:
            self.assertLess(time.time(), deadline, "no follow-up message")
            time.sleep(0.05)
        return [p for p in self.fake.webhook_posts if p[1] == token][0][2]["content"]

    def test_mbyte_search_lists_matching_names_of_the_users_files_only(self):
        self.link()
        for path in ["trips/Holiday-Photo 1.jpg", "trips/notes.txt", "holiday/plan.txt"]:
            r = self.srv.request("PUT", "/api/v1/stores/%d/files/%s?parents=true" % (self.sid, path.replace(" ", "%20")), b"x",
                                 token=self.tok, headers={"Content-Type": "application/octet-stream"})
            self.assertIn(r.status, (200, 201), r)
        other = self.srv.add_user("eve")
        osid = self.srv.request("GET", "/api/v1/stores", token=other).json()[0]["id"]
        self.srv.request("PUT", "/api/v1/stores/%d/files/holiday%%20photo%%20secret.jpg" % osid, b"x", token=other,
                         headers={"Content-Type": "application/octet-stream"})
        sub = {"type": 1, "name": "search", "options": [{"type": 3, "name": "words", "value": "holiday photo"}]}
        r = self.post(self.command(sub, token="searchtoken"))
        self.assertEqual(r.json()["type"], 5)
        text = self.wait_followup("searchtoken")
        self.assertIn("trips/Holiday-Photo 1.jpg", text)
        self.assertNotIn("plan.txt", text)
        self.assertNotIn("secret", text)  # another user's file

    def test_mbyte_backup_now_runs_the_linked_users_backups(self):
        self.fill(CH, 12, every=0)
        bid = self.connect()
        self.link()
        r = self.post(self.command({"type": 2, "name": "backup", "options": [{"type": 1, "name": "now"}]},
                                   token="backuptoken"))
        self.assertEqual(r.json()["type"], 5)
        deadline = time.time() + 60
        while self.srv.request("GET", "/api/v1/discord/backups/%s" % bid, token=self.tok).json()["messages"] != 12:
            self.assertLess(time.time(), deadline, "the backup did not run")
            time.sleep(0.1)
        self.assertEqual(sorted(self.message_ids()), self.expected_ids(CH))


class FullTextSearch(DiscordBase):
    """/mbyte search through the search module's full-text search (its "search.query" service)."""
    extra_modules = {"search": True, "sharing": True}
    post = Interactions.post
    command = Interactions.command
    wait_followup = Interactions.wait_followup
    link = Interactions.link

    def put(self, tok, sid, path, data):
        r = self.srv.request("PUT", "/api/v1/stores/%d/files/%s?parents=true" % (sid, path), data, token=tok,
                             headers={"Content-Type": "application/octet-stream"})
        self.assertIn(r.status, (200, 201), r)

    def test_words_inside_files_and_in_shares_are_found_and_unshared_files_never(self):
        self.link()
        self.put(self.tok, self.sid, "notes/trip.txt", b"on rottnest we saw a quokka smiling")
        self.put(self.tok, self.sid, "notes/other.txt", b"nothing to see")
        eve = self.srv.add_user("eve")
        esid = self.srv.request("GET", "/api/v1/stores", token=eve).json()[0]["id"]
        self.put(eve, esid, "zoo/list.txt", b"kangaroo, quokka, emu")
        self.put(eve, esid, "private.txt", b"my own quokka diary")
        r = self.srv.request("POST", "/api/v1/stores/%d/shares" % esid,
                             {"type": "user", "user": "dana", "path": "zoo", "permission": "view"}, token=eve)
        self.assertEqual(r.status, 201, r)
        deadline = time.time() + 60  # indexing is asynchronous: wait until the web search finds both
        while sorted(h["path"] for h in self.srv.request("GET", "/api/v1/search?q=quokka", token=self.tok)
                     .json()["hits"]) != ["notes/trip.txt", "zoo/list.txt"]:
            self.assertLess(time.time(), deadline, "the search module did not index the files")
            time.sleep(0.1)
        sub = {"type": 1, "name": "search", "options": [{"type": 3, "name": "words", "value": "quokka"}]}
        self.assertEqual(self.post(self.command(sub, token="fulltext")).json()["type"], 5)
        text = self.wait_followup("fulltext")
        self.assertIn("notes/trip.txt", text)  # the word is in the file, not in its name
        self.assertIn("zoo/list.txt (shared with you)", text)
        self.assertNotIn("private.txt", text)
        self.assertNotIn("other.txt", text)
        # without the search module: names only, so a word inside a file finds nothing
        r = self.srv.request("POST", "/api/v1/admin/modules/search/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.post(self.command(sub, token="namesonly")).json()["type"], 5)
        self.assertEqual(self.wait_followup("namesonly"), 'No file or folder name has "quokka".')
        sub["options"][0]["value"] = "trip"
        self.post(self.command(sub, token="names2"))
        self.assertIn("notes/trip.txt", self.wait_followup("names2"))


if __name__ == "__main__":
    main()

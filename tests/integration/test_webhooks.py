"""The webhooks module against a real receiver (Python's http.server in the test): signed
deliveries, retries with backoff and the delivery log, manual redelivery, automatic
disabling with a notification, the deny list on the connected address, and no delivery
lost across a kill -9."""
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, ServerTest, main  # noqa: E402

ALLOW_LOCAL = 'allow: ["127.0.0.0/8"]\n'


class Receiver:
    """Records every POST; answers statuses from a script (then `default`); checks signatures."""

    def __init__(self, fail_first=0, fail_status=500, default=200):
        self.got = []
        self.bad_signatures = 0
        self.secret = None
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.default = default
        self.lock = threading.Lock()
        self.location = None  # sent as Location (with a 3xx default)
        self.hang = None  # a threading.Event: answer only once it is set
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-MByte-Timestamp"]
                sig = self.headers["X-MByte-Signature"]
                with rec.lock:
                    if rec.secret is not None:
                        want = "sha256=" + hmac.new(rec.secret.encode(), ts.encode() + b"." + body,
                                                    hashlib.sha256).hexdigest()
                        if not hmac.compare_digest(want, sig or ""):
                            rec.bad_signatures += 1
                    rec.got.append({"body": json.loads(body), "event": self.headers["X-MByte-Event"],
                                    "delivery": self.headers["X-MByte-Delivery"]})
                    n = len(rec.got)
                    status = rec.fail_status if n <= rec.fail_first else rec.default
                if rec.hang is not None:
                    rec.hang.wait(60)  # released by close(): longer than any timeout_ms under test
                self.send_response(status)
                if rec.location:
                    self.send_header("Location", rec.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        if self.hang is not None:
            self.hang.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class WebhooksBase(ServerTest):
    """A server with the webhooks module (loopback receivers allowed) and helpers; no tests."""
    modules = {"webhooks": True}
    module_conf = {"webhooks": ALLOW_LOCAL + "disable_after: 2\n"}

    def setUp(self):
        self.srv = Server(modules=self.modules, module_conf=self.module_conf, env={"MBYTE_TASK_BACKOFF_MS": "30"})
        self.srv.start()
        self.admin = self.srv.login()
        self.alice = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.alice).json()[0]["id"]
        self.receivers = []

    def tearDown(self):
        for r in self.receivers:
            r.close()
        super().tearDown()

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.receivers.append(r)
        return r

    def hook(self, url, events=("file.created",), token=None, status=201):
        r = self.srv.request("POST", "/api/v1/stores/%s/webhooks" % self.sid, {"url": url, "events": list(events)},
                             token=token or self.alice)
        self.assertEqual(r.status, status, r)
        return r.json()

    def upload(self, name, data=b"x"):
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/%s" % (self.sid, name), body=data, token=self.alice)
        self.assertEqual(r.status, 201, r)

    def deliveries(self, hid):
        r = self.srv.request("GET", "/api/v1/stores/%s/webhooks/%s/deliveries" % (self.sid, hid), token=self.alice)
        self.assertEqual(r.status, 200, r)
        return r.json()["deliveries"]

    def until(self, what, fn, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what)


class WebhooksTest(WebhooksBase):
    def test_signed_delivery_fails_three_times_then_succeeds_and_the_log_shows_four_attempts(self):
        rec = self.receiver(fail_first=3)
        h = self.hook(rec.url)
        self.assertEqual(len(h["secret"]), 64)
        rec.secret = h["secret"]
        self.upload("a.txt", b"hello")
        d = self.until("a delivered delivery",
                       lambda: [x for x in self.deliveries(h["id"]) if x["state"] == "delivered"])[0]
        self.assertEqual([a["status"] for a in d["attempts"]], [500, 500, 500, 200])
        self.assertEqual(len(rec.got), 4)
        self.assertEqual(rec.bad_signatures, 0)
        self.assertEqual({g["delivery"] for g in rec.got}, {d["id"]})
        body = rec.got[-1]["body"]
        self.assertEqual((body["event"], body["data"]["path"], body["store"]), ("file.created", "a.txt", self.sid))
        # The secret is shown once; listings never show it.
        r = self.srv.request("GET", "/api/v1/stores/%s/webhooks" % self.sid, token=self.alice)
        self.assertNotIn(h["secret"], r.body.decode())
        # Manual redelivery sends the same message again under a new delivery id.
        r = self.srv.request("POST", "/api/v1/stores/%s/webhooks/%s/deliveries/%s/redeliver" % (self.sid, h["id"],
                                                                                             d["id"]), token=self.alice)
        self.assertEqual(r.status, 202, r)
        self.until("the redelivery", lambda: len(rec.got) == 5)
        self.assertEqual(rec.got[-1]["body"]["data"], body["data"])
        self.assertEqual(rec.got[-1]["delivery"], r.json()["id"])
        self.assertEqual(rec.bad_signatures, 0)
        # A receiver that checks with the wrong secret notices.
        rec.secret = "0" * 64
        self.upload("b.txt")
        self.until("the second delivery", lambda: len(rec.got) == 6)
        self.assertEqual(rec.bad_signatures, 1)

    def test_only_subscribed_events_are_delivered(self):
        rec = self.receiver()
        h = self.hook(rec.url, events=["file.deleted"])
        self.upload("keep.txt")
        r = self.srv.request("DELETE", "/api/v1/stores/%s/files/keep.txt" % self.sid, token=self.alice)
        self.assertIn(r.status, (200, 204), r)
        self.until("the delete event", lambda: rec.got)
        self.assertEqual([g["event"] for g in rec.got], ["file.deleted"])
        self.assertEqual(len(self.deliveries(h["id"])), 1)

    def test_a_hook_failing_every_attempt_is_disabled_and_its_owner_notified(self):
        rec = self.receiver(default=500)
        h = self.hook(rec.url)
        self.upload("1.txt")
        self.upload("2.txt")
        self.until("the hook switched off", lambda: not self.srv.request(
            "GET", "/api/v1/stores/%s/webhooks/%s" % (self.sid, h["id"]), token=self.alice).json()["active"])
        self.assertTrue(all(d["state"] == "failed" and len(d["attempts"]) == 6 for d in self.deliveries(h["id"])))
        r = self.srv.request("GET", "/api/v1/notifications", token=self.alice)
        self.assertIn("Webhook disabled", [n.get("title") for n in r.json()])
        n = len(rec.got)
        # Switched off: no more attempts. A witness hook on the same store is matched against the
        # same event in the same observer call, so once the witness's log shows 3.txt the
        # switched-off hook would have its delivery record too, were it still on.
        witness = self.hook(self.receiver().url)
        self.upload("3.txt")
        self.until("the witness's delivery of 3.txt", lambda: [
            d for d in self.deliveries(witness["id"]) if d["payload"]["path"] == "3.txt" and d["state"] == "delivered"])
        self.assertEqual([d for d in self.deliveries(h["id"]) if d["payload"]["path"] == "3.txt"], [])
        self.assertEqual(len(rec.got), n)
        r = self.srv.request("PATCH", "/api/v1/stores/%s/webhooks/%s" % (self.sid, h["id"]), {"active": True},
                             token=self.alice)
        self.assertEqual((r.status, r.json()["active"]), (200, True))

    def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(self):
        target = self.receiver()
        rec = self.receiver(default=302)
        rec.location = target.url
        h = self.hook(rec.url)
        self.upload("r.txt")
        d = self.until("a failed delivery", lambda: [x for x in self.deliveries(h["id"]) if x["state"] == "failed"])[0]
        self.assertEqual([a["status"] for a in d["attempts"]], [302] * 6)
        self.assertTrue(all("302" in a["error"] for a in d["attempts"]), d)
        self.assertEqual(len(rec.got), 6)
        self.assertEqual(target.got, [])

    def test_prefix_subscriptions_hear_only_the_events_under_their_prefix(self):
        rec = self.receiver()
        h = self.hook(rec.url, events=["file.*"])
        r = self.srv.request("POST", "/api/v1/stores/%s/folders" % self.sid, {"path": "docs"}, token=self.alice)
        self.assertEqual(r.status, 201, r)
        self.upload("docs/a.txt")
        r = self.srv.request("DELETE", "/api/v1/stores/%s/files/docs/a.txt" % self.sid, token=self.alice)
        self.assertIn(r.status, (200, 204), r)
        # Events are observed in order: once file.deleted is logged, folder.created (earlier) was
        # matched too, and refused.
        self.until("the file.deleted delivery", lambda: [
            d for d in self.deliveries(h["id"]) if d["event"] == "file.deleted" and d["state"] == "delivered"])
        self.assertEqual(sorted(d["event"] for d in self.deliveries(h["id"])), ["file.created", "file.deleted"])
        self.assertEqual(sorted(g["event"] for g in rec.got), ["file.created", "file.deleted"])

    def test_bad_hooks_are_refused_and_other_users_cannot_see_them(self):
        for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://x", "not a url", "", None):
            r = self.srv.request("POST", "/api/v1/stores/%s/webhooks" % self.sid,
                                 {"url": url, "events": ["file.created"]}, token=self.alice)
            self.assertProblem(r, 400, "url")
        for events in ([], "file.created", ["BAD EVENT"], [1]):
            r = self.srv.request("POST", "/api/v1/stores/%s/webhooks" % self.sid,
                                 {"url": "http://example.org/", "events": events}, token=self.alice)
            self.assertProblem(r, 400, "events")
        h = self.hook("http://example.org/")
        bob = self.srv.add_user("bob", admin_token=self.admin)
        for method, path in (("GET", ""), ("GET", "/" + h["id"]), ("GET", "/%s/deliveries" % h["id"]),
                             ("DELETE", "/" + h["id"])):
            r = self.srv.request(method, "/api/v1/stores/%s/webhooks%s" % (self.sid, path), token=bob)
            self.assertProblem(r, 404)
        self.hook("http://example.org/", token=bob, status=404)
        r = self.srv.request("DELETE", "/api/v1/stores/%s/webhooks/%s" % (self.sid, h["id"]), token=self.alice)
        self.assertEqual(r.status, 200, r)
        self.assertProblem(self.srv.request("GET", "/api/v1/stores/%s/webhooks/%s" % (self.sid, h["id"]),
                                            token=self.alice), 404)

    def test_kill_9_with_deliveries_pending_loses_none_after_restart(self):
        # Slow retries, so every delivery is still pending when the server dies.
        self.srv.stop()
        self.srv.extra_env["MBYTE_TASK_BACKOFF_MS"] = "3000"
        self.srv.start()
        rec = self.receiver(default=503)
        h = self.hook(rec.url)
        names = ["k%d.txt" % i for i in range(5)]
        for n in names:
            self.upload(n)
        # Every event became a delivery and was tried at least once; none has succeeded.
        self.until("five deliveries tried", lambda: len(self.deliveries(h["id"])) == 5 and all(
            d["attempts"] for d in self.deliveries(h["id"])))
        self.srv.kill()  # SIGKILL
        rec.default = 200
        self.srv.extra_env["MBYTE_TASK_BACKOFF_MS"] = "30"
        self.srv.start()
        self.until("all five delivered", lambda: {g["body"]["data"]["path"] for g in rec.got} >= set(names) and all(
            d["state"] == "delivered" for d in self.deliveries(h["id"])))


class WebhooksTimeoutTest(WebhooksBase):
    module_conf = {"webhooks": ALLOW_LOCAL + "timeout_ms: 300\n"}

    def test_a_receiver_slower_than_timeout_ms_is_a_failed_attempt(self):
        rec = self.receiver()
        rec.hang = threading.Event()  # never answers while the test runs
        h = self.hook(rec.url)
        self.upload("slow.txt")
        d = self.until("two timed-out attempts", lambda: [
            x for x in self.deliveries(h["id"]) if len(x["attempts"]) >= 2])[0]
        for a in d["attempts"][:2]:
            self.assertEqual(a["status"], 0, d)
            self.assertRegex(a["error"], r"(?i)timed? ?out", d)
        self.assertNotEqual(d["state"], "delivered")


class WebhooksDenyTest(ServerTest):
    modules = {"webhooks": True}  # the default conf.d: loopback and private ranges denied

    def test_a_hook_to_a_denied_address_is_refused_when_created_or_changed(self):
        alice = self.srv.add_user("alice", admin_token=self.admin)
        sid = self.srv.request("GET", "/api/v1/stores", token=alice).json()[0]["id"]
        base = "/api/v1/stores/%s/webhooks" % sid
        # "localhost" resolves to loopback; ::ffff:127.0.0.1 is loopback in IPv6 clothing.
        for url in ("http://127.0.0.1:9/", "http://localhost:9/hook", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
                    "https://10.1.2.3/x", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/"):
            r = self.srv.request("POST", base, {"url": url, "events": ["*"]}, token=alice)
            self.assertProblem(r, 400, "deny list")
        self.assertEqual(self.srv.request("GET", base, token=alice).json()["webhooks"], [])
        # A name that does not resolve now is accepted (DNS may come back); delivery checks again.
        r = self.srv.request("POST", base, {"url": "http://receiver.invalid/", "events": ["*"]}, token=alice)
        self.assertEqual(r.status, 201, r)
        hid = r.json()["id"]
        r = self.srv.request("PATCH", "%s/%s" % (base, hid), {"url": "http://127.0.0.2/"}, token=alice)
        self.assertProblem(r, 400, "deny list")
        r = self.srv.request("GET", "%s/%s" % (base, hid), token=alice)
        self.assertEqual(r.json()["url"], "http://receiver.invalid/")

    def test_the_connected_address_is_checked_again_at_delivery(self):
        """A hook accepted while its address was allowed, then denied: never contacted."""
        rec = Receiver()
        try:
            self.srv.stop()
            self.srv.module_conf = {"webhooks": ALLOW_LOCAL}
            self.srv.write_config()
            self.srv.start()
            self.admin = self.srv.login()
            alice = self.srv.add_user("alice", admin_token=self.admin)
            sid = self.srv.request("GET", "/api/v1/stores", token=alice).json()[0]["id"]
            hooks = []
            for host in ("127.0.0.1", "localhost"):
                r = self.srv.request("POST", "/api/v1/stores/%s/webhooks" % sid,
                                     {"url": "http://%s:%d/" % (host, rec.port), "events": ["*"]}, token=alice)
                self.assertEqual(r.status, 201, r)
                hooks.append(r.json()["id"])
            # The administrator takes the exemption away; the module reloads with the deny list whole.
            with open(os.path.join(self.srv.confdir, "webhooks.yaml"), "w") as f:
                f.write("allow: []\n")
            r = self.srv.request("POST", "/api/v1/admin/modules/webhooks/reload", token=self.admin)
            self.assertEqual(r.status, 200, r)
            r = self.srv.request("PUT", "/api/v1/stores/%s/files/x.txt" % sid, body=b"x", token=alice)
            self.assertEqual(r.status, 201, r)
            deadline = time.time() + 30
            errors = []
            while time.time() < deadline:
                errors = []
                for hid in hooks:
                    d = self.srv.request("GET", "/api/v1/stores/%s/webhooks/%s/deliveries" % (sid, hid),
                                         token=alice).json()["deliveries"]
                    errors += [a.get("error", "") for x in d for a in x["attempts"]]
                if len(errors) >= 2:
                    break
                time.sleep(0.05)
            self.assertGreaterEqual(len(errors), 2, errors)
            self.assertTrue(all("deny list" in e for e in errors), errors)
            self.assertEqual(rec.got, [])
        finally:
            rec.close()


if __name__ == "__main__":
    main()

"""Logs an administrator's tools read (docs/operations.md "Logs"): the access log in the
combined log format, reopened on SIGHUP for logrotate; JSON lines for the server log
(log_format: json); a request id in the X-Request-Id header, the access log, the server log
and problem+json answers (a client's own id only from trusted_proxies); and the shipped
fail2ban filters (tools/fail2ban) run by fail2ban-regex over the logs of a real run."""
import ftplib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SRC, Server, ServerTest, free_port, main, missing_prerequisite  # noqa: E402

COMBINED = re.compile(r'^(\S+) - (\S+) \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "(\S+) (\S+) (HTTP/[\d.]+)" '
                      r'(\d{3}) (\d+|-) "([^"]*)" "([^"]*)" "([0-9a-zA-Z._:-]+)"$')
FILTERS = os.path.join(SRC, "tools", "fail2ban", "filter.d")


def wait_for(test, fn, what, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        test.assertLess(time.time(), deadline, "never happened: " + what)
        time.sleep(0.05)


class LogTest(ServerTest):
    json_log = False
    trusted = False

    def setUp(self):
        self.ftp_port = free_port()
        base = random.randrange(20000, 60000, 100)
        self.access = None
        conf = {}
        srv = Server(modules={"ftp": True}, env={"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
                                                 "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)})
        self.access = os.path.join(srv.tmp, "access.log")
        conf["access_log"] = self.access
        if self.json_log:
            conf["log_format"] = "json"
        if self.trusted:
            conf["trusted_proxies"] = '["127.0.0.1"]'
        srv.conf = conf
        srv.write_config()
        self.srv = srv.start()
        self.admin = self.srv.login()

    def access_lines(self, want=None):
        """The access log's lines; with want, wait until a line contains it (lines are written
        just after the client has its answer)."""
        def read():
            try:
                with open(self.access) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                return []
            return lines if want is None or any(want in ln for ln in lines) else []
        return read() if want is None else wait_for(self, read, "access log line with " + want)

    def fail2ban(self, log, filt):
        if not shutil.which("fail2ban-regex"):
            missing_prerequisite(self, "fail2ban-regex is not installed (tests/setup/ops.sh installs fail2ban)")
        p = subprocess.run(["fail2ban-regex", "-o", "ip", log, os.path.join(FILTERS, filt)], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.split()

    def ftp_login(self, user, password):
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_port)
        try:
            f.login(user, password)
            return True
        except ftplib.error_perm as e:
            self.assertTrue(str(e).startswith("530"), e)
            return False
        finally:
            f.close()


class AccessLog(LogTest):
    def test_combined_lines_with_request_ids_and_failed_logins_found_by_fail2ban(self):
        self.srv.add_user("bob", "bob-password-1", admin_token=self.admin)
        for _ in range(3):
            r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong"},
                                 headers={"User-Agent": "guesser/1.0", "Referer": "https://evil.example/"})
            p = self.assertProblem(r, 401)
            self.assertEqual(p["request_id"], r.header("X-Request-Id"))
            self.assertRegex(p["request_id"], r"^[0-9a-f]{32}$")
        self.srv.login()  # a good login: must not match
        self.assertEqual(self.srv.request("GET", "/metrics").status, 401)  # a 401 that is no login
        for _ in range(3):
            self.assertFalse(self.ftp_login("bob", "not-his-password"))
        self.assertTrue(self.ftp_login("bob", "bob-password-1"))
        self.srv.wait_log("ftp: failed login for bob from 127.0.0.1")
        lines = self.access_lines("GET /metrics")

        parsed = [COMBINED.match(ln) for ln in lines]
        self.assertTrue(all(parsed), "not combined log format:\n" + "\n".join(lines))
        fails = [m for m in parsed if m.group(5) == "/api/v1/auth/login" and m.group(7) == "401"]
        self.assertEqual(len(fails), 3)
        for m in fails:
            self.assertEqual(m.group(1), "127.0.0.1")
            self.assertEqual(m.group(4), "POST")
            self.assertEqual(m.group(9), "https://evil.example/")
            self.assertEqual(m.group(10), "guesser/1.0")
            self.assertTrue(m.group(8).isdigit() and int(m.group(8)) > 0)
        # The id of the last failure is in its access log line and in its server log lines.
        rid = fails[-1].group(11)
        self.assertIn("(request %s)" % rid, self.srv.read_log())
        self.assertEqual(len({m.group(11) for m in parsed}), len(parsed), "request ids repeat")
        # The user column names who was authenticated: the admin who added bob.
        self.assertEqual([m.group(2) for m in parsed if m.group(5) == "/api/v1/admin/users"], ["admin"])

        self.assertEqual(self.fail2ban(self.access, "mbyte-http.conf"), ["127.0.0.1"] * 3)
        self.assertEqual(self.fail2ban(self.srv.log_path, "mbyte-ftp.conf"), ["127.0.0.1"] * 3)

    def test_a_client_id_is_ignored_from_an_untrusted_peer(self):
        r = self.srv.request("GET", "/api/v1/health", headers={"X-Request-Id": "client-chosen-1"})
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")
        self.assertTrue(self.access_lines(r.header("X-Request-Id")))

    def test_requests_on_one_connection_get_ids_of_their_own(self):
        """Every request id is new, also for many requests one after the other on one keep-alive
        connection (one server thread, whose pool of random bytes they are drawn from)."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
        self.addCleanup(c.close)
        ids = []
        for _ in range(100):
            c.request("GET", "/api/v1/health")
            r = c.getresponse()
            r.read()
            ids.append(r.getheader("X-Request-Id"))
        for rid in ids:
            self.assertRegex(rid, r"^[0-9a-f]{32}$")
        self.assertEqual(len(set(ids)), len(ids), "request ids repeat")
        # random ones: two of 100 share their first 32 bits about once in a million runs
        self.assertEqual(len({rid[:8] for rid in ids}), len(ids), "request ids are not random: %r" % ids[:4])

    def test_sighup_reopens_the_access_log_for_logrotate(self):
        self.srv.request("GET", "/api/v1/health", headers={"User-Agent": "before-rotate"})
        self.access_lines("before-rotate")
        os.rename(self.access, self.access + ".1")  # what logrotate does, then its postrotate HUP
        mark = self.srv.log_mark()
        self.srv.proc.send_signal(signal.SIGHUP)
        self.srv.wait_log("configuration reloaded", since=mark)
        self.srv.request("GET", "/api/v1/health", headers={"User-Agent": "after-rotate"})
        self.assertTrue(self.access_lines("after-rotate"))
        with open(self.access + ".1") as f:
            old = f.read()
        self.assertIn("before-rotate", old)
        self.assertNotIn("after-rotate", old)


class TrustedProxy(LogTest):
    trusted = True

    def test_a_trusted_proxy_passes_its_request_id_on(self):
        r = self.srv.request("GET", "/api/v1/no-such", headers={"X-Request-Id": "lb-7f3a.42"})
        self.assertEqual(r.header("X-Request-Id"), "lb-7f3a.42")
        self.assertEqual(r.json()["request_id"], "lb-7f3a.42")
        self.assertTrue(self.access_lines('"lb-7f3a.42"'))
        for bad in ["has space", "x" * 100, "quote\"d"]:
            r = self.srv.request("GET", "/api/v1/health", headers={"X-Request-Id": bad})
            self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$", bad)


class JsonLog(LogTest):
    json_log = True

    def test_server_log_is_json_lines_and_fail2ban_reads_them(self):
        self.srv.add_user("bob", "bob-password-1", admin_token=self.admin)
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong\nlevel"})
        self.assertEqual(r.status, 401)
        rid = r.header("X-Request-Id")
        for _ in range(3):
            self.assertFalse(self.ftp_login("bob", "wrong"))
        self.srv.wait_log('"who":"ftp","msg":"failed login for bob from 127.0.0.1"')
        records = []
        for line in self.srv.read_log().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)  # every such line is one whole JSON object
                self.assertEqual(set(rec) - {"request_id"}, {"time", "level", "who", "msg"}, line)
                self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                records.append(rec)
        self.assertGreater(len(records), 5)
        failed = [x for x in records if x["who"] == "auth" and x["msg"] == "failed login for admin from 127.0.0.1"]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["request_id"], rid)
        self.assertEqual(self.fail2ban(self.srv.log_path, "mbyte-ftp.conf"), ["127.0.0.1"] * 3)


if __name__ == "__main__":
    main()

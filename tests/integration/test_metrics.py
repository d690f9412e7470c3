"""GET /metrics (docs/operations.md "Metrics"): Prometheus' own checker (promtool, Debian's
prometheus package) accepts the page, counters move with real requests (an upload's bytes, a
404 under its status, an FTP session and its bytes), the route needs an admin, and
metrics_listen serves the page without credentials on an address of its own."""
import ftplib
import http.client
import io
import os
import random
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Server, ServerTest, free_port, main, missing_prerequisite  # noqa: E402
from storeutil import home, put  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')


def parse(text):
    """{(name, frozenset of label pairs): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def until(test, scrape, pred, timeout=30):
    """Scrape until pred(samples) holds (a deadline, not a timing)."""
    deadline = time.time() + timeout
    while True:
        m = scrape()
        if pred(m):
            return m
        test.assertLess(time.time(), deadline, "the metrics never showed what was expected:\n%s" % m)
        time.sleep(0.05)


def value(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class Metrics(ServerTest):
    def scrape(self, token=None):
        r = self.srv.request("GET", "/metrics", token=token or self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"), r)
        self.promtool(r.body)
        return parse(r.body.decode())

    def promtool(self, body):
        if not shutil.which("promtool"):
            missing_prerequisite(self, "promtool is not installed (tests/setup/ops.sh installs Debian's prometheus)")
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, "promtool refused the page: %s\n%s" % (p.stdout + p.stderr, body.decode()))

    def test_promtool_accepts_the_page_and_counters_move_with_requests(self):
        before = self.scrape()
        sid = home(self.srv, self.admin)
        data = os.urandom(700 * 1024)
        r = put(self.srv, self.admin, sid, "up.bin", data)
        self.assertIn(r.status, (200, 201), r)
        r = self.srv.request("GET", "/api/v1/stores/%d/files/up.bin" % sid, token=self.admin)
        self.assertEqual(r.body, data)
        self.assertEqual(self.srv.request("GET", "/api/v1/no/such/thing", token=self.admin).status, 404)
        # A request is counted when libmicrohttpd reports it complete, just after the client
        # has its answer: poll until the 404 shows.
        after = until(self, self.scrape, lambda m: value(m, "mbyte_http_requests_total", status="404",
                                                         route="(no route)") > 0)

        got_in = value(after, "mbyte_received_bytes_total", protocol="http") - \
            value(before, "mbyte_received_bytes_total", protocol="http")
        got_out = value(after, "mbyte_sent_bytes_total", protocol="http") - \
            value(before, "mbyte_sent_bytes_total", protocol="http")
        self.assertGreaterEqual(got_in, len(data))
        self.assertGreaterEqual(got_out, len(data))
        self.assertEqual(value(after, "mbyte_http_requests_total", status="404", route="(no route)") -
                         value(before, "mbyte_http_requests_total", status="404", route="(no route)"), 1,
                         [k for k in after if ("status", "404") in k[1]])
        upload = [ls for (n, ls), v in after.items() if n == "mbyte_http_requests_total" and ("method", "PUT") in ls]
        self.assertTrue(upload, "no PUT series after an upload")
        route = dict(upload[0])["route"]
        self.assertIn("{", route, "the route label is the pattern, not the path: %s" % route)
        self.assertNotIn("up.bin", route)
        self.assertEqual(value(after, "mbyte_http_request_duration_seconds_count", route=route, method="PUT"), 1)
        self.assertEqual(value(after, "mbyte_http_request_duration_seconds_bucket", route=route, method="PUT",
                               le="+Inf"), 1)
        self.assertEqual(value(after, "mbyte_http_uploads_in_flight"), 0)
        self.assertGreater(value(after, "mbyte_leveldb_size_bytes"), 0)
        self.assertGreater(value(after, "mbyte_group_commit_writes_count"), 0)
        self.assertGreater(value(after, "mbyte_chunk_bytes"), 0)
        self.assertEqual(value(after, "mbyte_module_state", module="trash", state="available") +
                         value(after, "mbyte_module_state", module="trash", state="active"), 1)

    def test_failed_logins_are_counted(self):
        before = value(self.scrape(), "mbyte_login_failures_total")
        for _ in range(2):
            r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong"})
            self.assertEqual(r.status, 401, r)
        self.assertEqual(value(self.scrape(), "mbyte_login_failures_total") - before, 2)
        m = until(self, self.scrape, lambda m: value(m, "mbyte_http_requests_total", route="/api/v1/auth/login",
                                                     status="401") == 2)
        # the histogram has one series per route and method: setUp's good login is in it too
        self.assertEqual(value(m, "mbyte_http_request_duration_seconds_count", route="/api/v1/auth/login"), 3)

    def test_metrics_need_an_admin(self):
        r = self.srv.request("GET", "/metrics")
        self.assertProblem(r, 401)
        user = self.srv.add_user("carol", admin_token=self.admin)
        r = self.srv.request("GET", "/metrics", token=user)
        self.assertProblem(r, 403)
        self.assertNotIn(b"mbyte_", r.body)


class MetricsListen(ServerTest):
    def setUp(self):
        self.mport = free_port()
        self.conf = {"metrics_listen": "127.0.0.1:%d" % self.mport}
        super().setUp()

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.mport, timeout=30)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.getheader("Content-Type"), r.read()
        finally:
            c.close()

    def test_metrics_listen_serves_the_page_without_credentials(self):
        status, ctype, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        Metrics.promtool(self, body)
        before = value(parse(body.decode()), "mbyte_http_requests_total", route="/api/v1/health")
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        until(self, lambda: parse(self.get("/metrics")[2].decode()),
              lambda m: value(m, "mbyte_http_requests_total", route="/api/v1/health") - before == 1)
        self.assertEqual(self.get("/api/v1/health")[0], 404)  # that address serves nothing else
        self.assertEqual(self.srv.request("GET", "/metrics").status, 401)  # the main door still asks

    def test_a_bad_metrics_listen_is_refused_with_its_line(self):
        srv = Server(conf={"metrics_listen": "nowhere"})
        try:
            srv.start(wait=False)
            rc = srv.proc.wait(timeout=60)
            self.assertEqual(rc, 2)
            self.assertRegex(srv.read_log(), r"mbyte\.yaml:\d+: metrics_listen must be ip:port")
            srv.proc = None
            srv.log.close()
        finally:
            srv.cleanup()


class FtpMetrics(ServerTest):
    def setUp(self):
        self.ftp_port = free_port()
        base = random.randrange(20000, 60000, 100)
        self.srv = Server(modules={"ftp": True}, env={"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
                                                      "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)})
        self.srv.start()
        self.admin = self.srv.login()

    def scrape(self):
        return parse(self.srv.request("GET", "/metrics", token=self.admin).body.decode())

    def poll(self, name, want, **labels):
        deadline = time.time() + 30
        while value(self.scrape(), name, **labels) != want:
            self.assertLess(time.time(), deadline, "%s never became %s" % (name, want))
            time.sleep(0.05)

    def test_ftp_sessions_and_bytes_are_counted(self):
        self.assertEqual(value(self.scrape(), "mbyte_module_state", module="ftp", state="active"), 1)
        before = self.scrape()
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_port)
        f.login("admin", harness.ADMIN_PASSWORD)
        self.poll("mbyte_ftp_sessions", 1)
        data = os.urandom(300 * 1024)
        f.storbinary("STOR /Home/ftp-m.bin", io.BytesIO(data))
        back = io.BytesIO()
        f.retrbinary("RETR /Home/ftp-m.bin", back.write)
        self.assertEqual(back.getvalue(), data)
        f.quit()
        self.poll("mbyte_ftp_sessions", 0)
        after = self.scrape()
        self.assertGreaterEqual(value(after, "mbyte_received_bytes_total", protocol="ftp") -
                                value(before, "mbyte_received_bytes_total", protocol="ftp"), len(data))
        self.assertGreaterEqual(value(after, "mbyte_sent_bytes_total", protocol="ftp") -
                                value(before, "mbyte_sent_bytes_total", protocol="ftp"), len(data))


if __name__ == "__main__":
    main()

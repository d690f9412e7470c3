"""HTTPS in mbyted (docs/operations.md "HTTPS"): with tls_cert and tls_key the API and the page are
served over TLS (curl checks the certificate), the session cookie is Secure, a plain-HTTP port can
redirect to HTTPS, and plain HTTP on an address that is not loopback is refused unless require_tls
is switched off."""
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ADMIN_PASSWORD, Server, free_port, main  # noqa: E402


def make_cert(folder):
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


class Https(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mbyte-https-")
        cls.cert, cls.key = make_cert(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start(self, conf, env=None):
        srv = Server(conf=conf, env=env)
        self.addCleanup(srv.cleanup)
        srv.start(wait=False)
        return srv

    def https(self, srv, method, path, body=None, headers=None):
        ctx = ssl.create_default_context(cafile=self.cert)
        deadline = time.time() + 60
        while True:
            c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30)
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                return r.status, dict(r.getheaders()), r.read()
            except (ConnectionError, ssl.SSLError, OSError):
                self.assertIsNone(srv.proc.poll(), srv.read_log()[-3000:])
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                c.close()

    def test_the_api_and_the_page_are_served_over_https_and_the_session_cookie_is_secure(self):
        redirect = free_port()
        srv = self.start({"tls_cert": self.cert, "tls_key": self.key,
                          "http_redirect_listen": "127.0.0.1:%d" % redirect})
        status, _, body = self.https(srv, "GET", "/api/v1/health")
        self.assertEqual((status, json.loads(body)["status"]), (200, "ok"))
        # A real client that checks the certificate against the CA file.
        r = subprocess.run(["curl", "-sS", "--fail", "--cacert", self.cert, "https://127.0.0.1:%d/" % srv.port],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"<html", r.stdout.lower())
        status, headers, body = self.https(srv, "POST", "/api/v1/auth/login",
                                           json.dumps({"username": "admin", "password": ADMIN_PASSWORD,
                                                       "session": True}),
                                           {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        cookie = headers["Set-Cookie"]
        self.assertIn("; Secure", cookie)
        self.assertIn("HttpOnly", cookie)
        # Plain HTTP on the TLS port gets no HTTP answer.
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            c.request("GET", "/api/v1/health")
            c.getresponse().read()
        c.close()
        # The plain port sends everything to HTTPS, path kept; curl follows it to a checked answer.
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                            "http://127.0.0.1:%d/api/v1/health?x=1" % redirect], capture_output=True, text=True)
        self.assertEqual(r.stdout, "308 https://127.0.0.1:%d/api/v1/health?x=1" % srv.port, r.stderr)
        r = subprocess.run(["curl", "-sS", "--fail", "-L", "--cacert", self.cert,
                            "http://127.0.0.1:%d/api/v1/health" % redirect], capture_output=True)
        self.assertEqual((r.returncode, json.loads(r.stdout)["status"]), (0, "ok"), r.stderr)
        srv.stop()

    def test_plain_http_on_an_address_that_is_not_loopback_is_refused_unless_switched_off(self):
        port = free_port()
        srv = self.start({}, env={"MBYTE_LISTEN": "0.0.0.0:%d" % port})
        self.assertNotEqual(srv.proc.wait(60), 0)
        srv.proc = None
        srv.log.close()
        log = srv.read_log()
        self.assertIn("is not a loopback address and would serve plain HTTP", log)
        self.assertIn("tls_cert", log)
        ok = Server(conf={"require_tls": "false"}, env={"MBYTE_LISTEN": "0.0.0.0:%d" % port})
        self.addCleanup(ok.cleanup)
        ok.port = port
        ok.start()
        ok.stop()

    def test_a_key_that_is_not_pem_or_a_lone_certificate_is_refused_with_the_reason(self):
        bad = os.path.join(self.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a key\n")
        for conf, reason in (({"tls_cert": self.cert, "tls_key": bad}, "is not a PEM file"),
                             ({"tls_cert": self.cert}, "tls_cert and tls_key go together")):
            srv = self.start(conf)
            self.assertNotEqual(srv.proc.wait(60), 0)
            srv.proc = None
            srv.log.close()
            self.assertIn(reason, srv.read_log())


class TrustedProxy(unittest.TestCase):
    """Behind a proxy listed in trusted_proxies, the client is the rightmost untrusted
    X-Forwarded-For entry (throttles, logs) and X-Forwarded-Proto: https makes the cookie Secure;
    from any other peer both headers are ignored."""

    def start(self, conf):
        srv = Server(conf=conf)
        self.addCleanup(srv.cleanup)
        srv.start()
        srv.add_user("alice", "alice-password-1")
        return srv

    def login(self, srv, password, xff, proto=None):
        h = {"X-Forwarded-For": xff}
        if proto:
            h["X-Forwarded-Proto"] = proto
        return srv.request("POST", "/api/v1/auth/login", {"username": "alice", "password": password,
                                                           "session": True}, headers=h)

    def test_a_trusted_proxy_names_the_client_and_an_untrusted_peer_cannot(self):
        srv = self.start({"trusted_proxies": "[127.0.0.1]", "login_max_failures": 3})
        for _ in range(3):  # the client may prepend anything: the proxy's own entry is the rightmost
            self.assertEqual(self.login(srv, "wrong", "10.9.9.9, 203.0.113.9").status, 401)
        self.assertEqual(self.login(srv, "alice-password-1", "203.0.113.9").status, 429)
        r = self.login(srv, "alice-password-1", "198.51.100.7", proto="https")
        self.assertEqual(r.status, 200, r)
        self.assertIn("; Secure", r.header("Set-Cookie"))
        r = self.login(srv, "alice-password-1", "198.51.100.7")
        self.assertNotIn("Secure", r.header("Set-Cookie"))
        srv.stop()

    def test_without_trusted_proxies_forwarded_headers_are_ignored(self):
        srv = self.start({"login_max_failures": 3})
        for i in range(3):
            self.assertEqual(self.login(srv, "wrong", "203.0.113.%d" % i).status, 401)
        r = self.login(srv, "alice-password-1", "198.51.100.7", proto="https")
        self.assertEqual(r.status, 429, r)  # all came from 127.0.0.1, whatever they claimed
        srv.stop()


if __name__ == "__main__":
    main()

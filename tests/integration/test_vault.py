"""Secrets from HashiCorp Vault (issue 20, docs/security.md): secret references (vault:, env:,
file:) in module settings, the vault module's login life cycle and resilience, transit key
wrapping, and that no secret value ever shows.

HashiCorp Vault cannot be installed here: tests/tools/fakevault.py stands in for it, a local
server following Vault's published HTTP API (1.15) for exactly the endpoints the module uses,
with real TTLs that expire, sealing, single-use wrapping tokens and Vault's error JSON."""
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SRC, Server, free_port, main  # noqa: E402

FAKEVAULT = os.path.join(SRC, "tests", "tools", "fakevault.py")
DEADLINE = 90  # generous: only ends a wait for something really stuck


def poll(what, fn, timeout=DEADLINE):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def write_private(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class FakeVault:
    """fakevault.py on a free port, over TLS with its own certificate when tls is set."""

    def __init__(self, folder, tls=True):
        self.port = free_port()
        self.root = "hvs.root-" + secrets.token_hex(8)
        self.ca = None
        args = [sys.executable, FAKEVAULT, "--port", str(self.port), "--root-token", self.root]
        if tls:
            self.ca = os.path.join(folder, "vault-ca.pem")
            key = os.path.join(folder, "vault-key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", key, "-out", self.ca, "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            args += ["--cert", self.ca, "--key", key]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise AssertionError("fakevault did not start: %r" % line)
        self.addr = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def call(self, method, path, body=None, token=None, headers=None):
        if self.ca:
            ctx = ssl.create_default_context(cafile=self.ca)
            c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if token is not False:
            h["X-Vault-Token"] = token or self.root
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
            r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
        finally:
            c.close()

    def kv_put(self, path, data):
        st, _ = self.call("POST", "/v1/secret/data/" + path, {"data": data})
        assert st == 200, st

    def control(self, what):
        st, j = self.call("POST" if what != "stats" else "GET", "/_control/" + what, token=False)
        assert st == 200, st
        return j

    def approle(self, name, token_ttl):
        st, _ = self.call("POST", "/v1/auth/approle/role/" + name, {"token_ttl": token_ttl})
        assert st == 204, st
        st, j = self.call("GET", "/v1/auth/approle/role/%s/role-id" % name)
        assert st == 200, st
        return j["data"]["role_id"]

    def wrapped_secret_id(self, name):
        st, j = self.call("POST", "/v1/auth/approle/role/%s/secret-id" % name, {}, headers={"X-Vault-Wrap-TTL": "300s"})
        assert st == 200, st
        return j["wrap_info"]["token"]


class VaultTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbyte-vault-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.values = []  # every secret value a test used: none may show anywhere

    def value(self, tag):
        v = "SECRET-%s-%s" % (tag, secrets.token_hex(8))
        self.values.append(v)
        return v

    def server(self, modules, module_conf, env=None):
        srv = Server(modules=modules, module_conf=module_conf, env=env)
        self.addCleanup(srv.cleanup)
        return srv

    def greeting(self, srv, token):
        r = srv.request("GET", "/api/v1/hello", token=token)
        self.assertEqual(r.status, 200, r)
        return r.json()["greeting"]

    def assert_no_values(self, srv, token, extra_text=""):
        """grep the data directory, the captured output, /health and the audit log."""
        seen = {"mbytectl output": extra_text, "the server's stdout and stderr": srv.read_log()}
        for path in ("/api/v1/health", "/api/v1/admin/audit?limit=100000"):
            seen[path] = srv.request("GET", path, token=token).body.decode("utf-8", "replace")
        for root, _, files in os.walk(srv.data):
            for f in files:
                p = os.path.join(root, f)
                if os.path.isfile(p):  # not the control socket
                    with open(p, "rb") as fh:
                        seen[p] = fh.read().decode("latin-1")
        for where, text in seen.items():
            for v in self.values:
                self.assertNotIn(v, text, "a secret value shows in %s" % where)

    # ------------------------------------------------------------------------------------
    def test_vault_greeting_refresh_seal_renewal_relogin_restart(self):
        fv = FakeVault(self.tmp, tls=True)
        self.addCleanup(fv.stop)
        v1 = self.value("one")
        fv.kv_put("mbyte", {"greeting": v1, "other": "x"})
        role_id = fv.approle("mbyte", token_ttl=2)
        sid_file = os.path.join(self.tmp, "secret-id")
        write_private(sid_file, fv.wrapped_secret_id("mbyte") + "\n")
        state = os.path.join(self.tmp, "vault-state.json")
        vault_yaml = ("address: %s\nca_file: %s\nauth:\n  method: approle\n  role_id: %s\n  secret_id_file: %s\n"
                      "  wrapped: true\nstate_file: %s\nrefresh: 1\nretry_max: 2\n"
                      % (fv.addr, fv.ca, role_id, sid_file, state))
        # hello is named before vault: the kernel must still load vault first.
        srv = self.server({"hello": True, "vault": True, "audit": True},
                          {"vault": vault_yaml, "hello": "greeting: vault:secret/mbyte#greeting\n"})
        srv.start()
        admin = srv.login()
        user = srv.add_user("alice", admin_token=admin)
        self.assertEqual(self.greeting(srv, user), v1)
        self.assertEqual(os.stat(state).st_mode & 0o777, 0o600)

        # A new KV version reaches hello through its reconfigure call, no restart.
        v2 = self.value("two")
        fv.kv_put("mbyte", {"greeting": v2})
        poll("the new greeting", lambda: self.greeting(srv, user) == v2)

        # A 2 s token is renewed at 2/3 of its TTL, many times, without a new login.
        s0 = fv.control("stats")
        poll("five renewals", lambda: fv.control("stats")["renewals"] >= s0["renewals"] + 5)
        self.assertEqual(fv.control("stats")["logins"], s0["logins"])
        self.assertEqual(self.greeting(srv, user), v2)

        # Sealed: a warning, and the cached value keeps serving.
        mark = srv.log_mark()
        fv.control("seal")
        tail = srv.wait_log("Vault is sealed", since=mark)
        self.assertIn("warn", tail.split("Vault is sealed")[0].splitlines()[-1])
        for _ in range(5):
            self.assertEqual(self.greeting(srv, user), v2)
        # The token cannot be renewed while sealed: it expires, and the cached value still serves.
        poll("the token to expire while sealed", lambda: fv.control("stats")["live_tokens"] == 0)
        self.assertEqual(self.greeting(srv, user), v2)
        mark = srv.log_mark()
        fv.control("unseal")
        srv.wait_log("answers again", since=mark)
        v3 = self.value("three")
        fv.kv_put("mbyte", {"greeting": v3})
        poll("the greeting after unsealing", lambda: self.greeting(srv, user) == v3)

        # Renewal refused (every token revoked): a new AppRole login with the kept secret_id.
        logins = fv.control("stats")["logins"]
        fv.control("revoke-tokens")
        poll("a new AppRole login", lambda: fv.control("stats")["logins"] > logins)
        v4 = self.value("four")
        fv.kv_put("mbyte", {"greeting": v4})
        poll("the greeting after the new login", lambda: self.greeting(srv, user) == v4)
        self.assertEqual(fv.control("stats")["unwraps"], 1)

        # config check names references, never values.
        r = srv.ctl("config", "check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("greeting: vault:secret/mbyte#greeting: resolves", r.stdout)
        ctl_out = r.stdout + r.stderr

        # The audit log says who read which secret, by name.
        r = srv.request("GET", "/api/v1/admin/audit?action=secret.read", token=admin)
        self.assertEqual(r.status, 200, r)
        self.assertIn("vault:secret/mbyte#greeting", r.body.decode())
        self.assertIn("hello", r.body.decode())

        # A restart works from the kept login state: the wrapping token is used up.
        srv.stop()
        srv.start()
        admin = srv.login()
        self.assertEqual(self.greeting(srv, srv.login("alice", "user-password-1")), v4)
        self.assertEqual(fv.control("stats")["unwraps"], 1)
        # The Vault token and the secret_id are on disk only in the operator's state_file.
        with open(state) as f:
            kept = json.load(f)
        self.assertTrue(kept["token"] and kept["secret_id"])
        self.values += [kept["token"], kept["secret_id"]]
        self.assert_no_values(srv, admin, ctl_out)
        srv.stop()
        for v in self.values:
            self.assertNotIn(v, srv.read_log(), "a secret value shows in the server's output")

    # ------------------------------------------------------------------------------------
    def test_vault_certificate_is_checked_against_ca_file(self):
        fv = FakeVault(self.tmp, tls=True)
        self.addCleanup(fv.stop)
        fv.kv_put("mbyte", {"greeting": self.value("tls")})
        token_file = os.path.join(self.tmp, "token")
        write_private(token_file, fv.root + "\n")
        # No ca_file: the system's CAs do not know fakevault's certificate, so nothing is read.
        srv = self.server({"vault": True, "hello": True},
                          {"vault": "address: %s\nauth:\n  method: token\n  token_file: %s\n" % (fv.addr, token_file),
                           "hello": "greeting: vault:secret/mbyte#greeting\n"})
        srv.start()
        admin = srv.login()
        r = srv.request("GET", "/api/v1/hello", token=admin)
        self.assertEqual(r.status, 404, r)  # hello could not load without its greeting
        log = srv.wait_log("hello not loaded")
        self.assertRegex(log, r"(?i)certificate")
        # With the CA: the same Vault is trusted.
        with open(os.path.join(srv.confdir, "vault.yaml"), "a") as f:
            f.write("ca_file: %s\n" % fv.ca)
        r = srv.ctl("config", "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = srv.ctl("module", "load", "hello")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.greeting(srv, admin), self.values[-1])
        self.assert_no_values(srv, admin)

    # ------------------------------------------------------------------------------------
    def test_env_and_file_references(self):
        ev = self.value("env")
        access_log = os.path.join(self.tmp, "access.log")
        srv = Server(modules={"hello": True}, module_conf={"hello": "greeting: env:MBYTE_TEST_GREETING\n"},
                     conf={"access_log": "env:MBYTE_TEST_ACCESS_LOG"},
                     env={"MBYTE_TEST_GREETING": ev, "MBYTE_TEST_ACCESS_LOG": access_log})
        self.addCleanup(srv.cleanup)
        srv.start()
        admin = srv.login()
        self.assertEqual(self.greeting(srv, admin), ev)
        # mbyte.yaml takes references too: the access log is where the environment says.
        poll("the access log", lambda: os.path.exists(access_log) and "/api/v1/hello" in open(access_log).read())

        # A file anyone may read is refused, with the reason and the fix; the value never shows.
        fv1 = self.value("file")
        secret_file = os.path.join(self.tmp, "greeting.txt")
        write_private(secret_file, fv1 + "\n", mode=0o644)
        with open(os.path.join(srv.confdir, "hello.yaml"), "w") as f:
            f.write("greeting: file:%s\n" % secret_file)
        r = srv.ctl("config", "reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("refused", r.stdout)
        self.assertIn("chmod 600", r.stdout)
        self.assertIn("file:" + secret_file, r.stdout)
        self.assertEqual(self.greeting(srv, admin), ev)  # the running settings stay
        out = r.stdout + r.stderr

        # Owner-only: it resolves; a changed file arrives with `secrets refresh`.
        os.chmod(secret_file, 0o600)
        r = srv.ctl("secrets", "refresh")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("hello: reconfigured", r.stdout)
        self.assertEqual(self.greeting(srv, admin), fv1)
        fv2 = self.value("file2")
        write_private(secret_file, fv2)
        r = srv.ctl("secrets", "refresh")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.greeting(srv, admin), fv2)
        out += r.stdout + r.stderr

        # A vault: reference without the vault module: refused by name.
        with open(os.path.join(srv.confdir, "hello.yaml"), "w") as f:
            f.write("greeting: vault:secret/mbyte#greeting\n")
        r = srv.ctl("config", "check")
        self.assertEqual(r.returncode, 1)
        self.assertIn("vault:secret/mbyte#greeting: does not resolve", r.stdout)
        self.assertIn("no provider", r.stdout)
        out += r.stdout + r.stderr
        self.assert_no_values(srv, admin, out)

    # ------------------------------------------------------------------------------------
    def test_transit_keys_token_auth_and_refresh_now(self):
        fv = FakeVault(self.tmp, tls=False)
        self.addCleanup(fv.stop)
        st, _ = fv.call("POST", "/v1/transit/keys/mbyte-store", {})
        self.assertEqual(st, 204)
        g1 = self.value("g1")
        fv.kv_put("app/web", {"greeting": g1})
        # No address or token in the file: VAULT_ADDR and VAULT_TOKEN, as Vault's CLI.
        srv = self.server({"vault": True, "hello": True},
                          {"vault": "refresh: 3600\n", "hello": "greeting: vault:secret/app/web#greeting@1\n"},
                          env={"VAULT_ADDR": fv.addr, "VAULT_TOKEN": fv.root})
        srv.start()
        admin = srv.login()
        self.assertEqual(self.greeting(srv, admin), g1)

        # Transit: data key, wrap, rotate, rewrap under the new version, old form still opens.
        r = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "transit:mbyte-store", "rotate": True},
                        token=admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["datakey"], "vault:v1:")
        self.assertEqual(r.json()["rewrapped"], "vault:v2:")
        r = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "transit:no-such-key"}, token=admin)
        self.assertEqual(r.status, 400, r)
        self.assertIn("encryption key not found", r.json()["detail"])

        # The built-in file: master key: owner-only, 32 bytes; it cannot rotate.
        mk = os.path.join(self.tmp, "master.key")
        with open(mk, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(mk, 0o644)
        r = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "file:" + mk}, token=admin)
        self.assertEqual(r.status, 403, r)
        self.assertIn("chmod 600", r.json()["detail"])
        os.chmod(mk, 0o600)
        r = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "file:" + mk}, token=admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["datakey"], "mbkw1:")
        r = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "file:" + mk, "rotate": True}, token=admin)
        self.assertGreaterEqual(r.status, 400, r)

        # A pinned version (@1) stays; the unpinned reference follows `secrets refresh` at once.
        with open(os.path.join(srv.confdir, "hello.yaml"), "w") as f:
            f.write("greeting: vault:secret/app/web#greeting\n")
        r = srv.ctl("config", "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        g2 = self.value("g2")
        fv.kv_put("app/web", {"greeting": g2})
        self.assertEqual(self.greeting(srv, admin), g1)  # refresh is an hour: still cached
        r = srv.ctl("secrets", "refresh")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("providers with new values: 1", r.stdout)
        self.assertEqual(self.greeting(srv, admin), g2)

        # Sealed: a refresh says so (exit 1) and the cached value keeps serving.
        fv.control("seal")
        r = srv.ctl("secrets", "refresh")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("sealed", r.stdout + r.stderr)
        self.assertEqual(self.greeting(srv, admin), g2)
        fv.control("unseal")
        out = r.stdout + r.stderr

        # The vault module unloaded: hello keeps the value it has; a refresh says why it cannot.
        r = srv.ctl("module", "unload", "vault")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = srv.ctl("secrets", "refresh")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("hello: refused", r.stdout)
        self.assertIn("no provider for 'vault:'", r.stdout)
        self.assertEqual(self.greeting(srv, admin), g2)
        r2 = srv.request("POST", "/api/v1/admin/keys/check", {"keyref": "transit:mbyte-store"}, token=admin)
        self.assertEqual(r2.status, 404, r2)
        self.assert_no_values(srv, admin, out + r.stdout + r.stderr)


if __name__ == "__main__":
    main()

"""Auth against a real mbyted: API tokens, browser sessions with CSRF, throttling, logout,
password change, expiry, and that no credential is stored in the clear."""
import ftplib
import glob
import http.client
import json
import os
import random
import re
import time

from harness import ADMIN_PASSWORD, Response, Server, ServerTest, free_port, main
import unittest


class TokenTest(ServerTest):
    def test_named_token_works_is_listed_without_secret_and_revokes(self):
        bob = self.srv.add_user("bob", "bob-password", admin_token=self.admin)
        r = self.srv.request("POST", "/api/v1/me/tokens", {"name": "laptop", "expires_days": 30}, token=bob)
        self.assertEqual(r.status, 201)
        t = r.json()
        self.assertTrue(t["token"].startswith("mbt_"))
        self.assertEqual(self.srv.request("GET", "/api/v1/me", token=t["token"]).json()["username"], "bob")
        lst = self.srv.request("GET", "/api/v1/me/tokens", token=bob)
        self.assertEqual([x["name"] for x in lst.json()], ["laptop"])
        self.assertNotIn(t["token"].encode(), lst.body)
        r = self.srv.request("DELETE", "/api/v1/me/tokens/" + t["id"], token=bob)
        self.assertEqual(r.status, 200)
        self.assertProblem(self.srv.request("GET", "/api/v1/me", token=t["token"]), 401)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/me/tokens/" + t["id"], token=bob), 404)

    def test_one_user_cannot_revoke_another_users_token(self):
        bob = self.srv.add_user("bob", "bob-password", admin_token=self.admin)
        eve = self.srv.add_user("eve", "eve-password", admin_token=self.admin)
        t = self.srv.request("POST", "/api/v1/me/tokens", {"name": "x"}, token=bob).json()
        self.assertProblem(self.srv.request("DELETE", "/api/v1/me/tokens/" + t["id"], token=eve), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/me", token=t["token"]).status, 200)

    def test_bad_token_requests(self):
        bob = self.srv.add_user("bob", "bob-password", admin_token=self.admin)
        for body in [{}, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "expires_days": 0},
                     {"name": "ok", "expires_days": "7"}]:
            self.assertProblem(self.srv.request("POST", "/api/v1/me/tokens", body, token=bob), 400)
        self.assertEqual(self.srv.request("GET", "/api/v1/me/tokens", token=bob).json(), [])

    def test_logout_revokes_the_login_token(self):
        tok = self.srv.login()
        self.assertEqual(self.srv.request("POST", "/api/v1/auth/logout", token=tok).status, 200)
        self.assertProblem(self.srv.request("GET", "/api/v1/me", token=tok), 401)

    def test_password_change_needs_the_old_password(self):
        bob = self.srv.add_user("bob", "bob-password", admin_token=self.admin)
        self.srv.login("bob", "bob-password")
        self.srv.login("bob", "bob-password")  # the second one from the login cache
        r = self.srv.request("POST", "/api/v1/me/password", {"old": "wrong-one", "new": "bob-password-2"}, token=bob)
        self.assertProblem(r, 403)
        r = self.srv.request("POST", "/api/v1/me/password", {"old": "bob-password", "new": "bob-password-2"},
                             token=bob)
        self.assertEqual(r.status, 200)
        self.srv.login("bob", "bob-password-2")
        # The old password had just logged in (and was remembered by the login cache): it
        # no longer opens anything, over HTTP or FTP-style password checks alike.
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "bob", "password": "bob-password"})
        self.assertProblem(r, 401)

    def test_no_credential_is_stored_in_the_clear(self):
        bob = self.srv.add_user("bob", "bob-secret-password", admin_token=self.admin)
        api = self.srv.request("POST", "/api/v1/me/tokens", {"name": "x"}, token=bob).json()["token"]
        self.srv.stop()
        blob = b""
        for f in glob.glob(os.path.join(self.srv.data, "meta", "*")):
            with open(f, "rb") as fh:
                blob += fh.read()
        self.assertIn(b"argon2id", blob)  # the database was read for real
        for secret in [bob, api, "bob-secret-password"]:
            self.assertNotIn(secret.encode(), blob)
        self.assertNotIn(b"bob-secret-password", self.srv.read_log().encode())
        self.srv.start()


class SessionTest(ServerTest):
    def session(self):
        c = self.srv.conn()
        c.request("POST", "/api/v1/auth/login", body=b'{"username":"admin","password":"%s","session":true}'
                  % ADMIN_PASSWORD.encode(), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        c.close()
        self.assertEqual(r.status, 200, body)
        cookie = r.getheader("Set-Cookie")
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        import json
        j = json.loads(body)
        self.assertNotIn("token", j)  # scripts never see the session secret
        return cookie.split(";")[0], j["csrf"]

    def test_cookie_session_needs_csrf_for_unsafe_methods(self):
        cookie, csrf = self.session()
        r = self.srv.request("GET", "/api/v1/me", headers={"Cookie": cookie})
        self.assertEqual(r.json()["username"], "admin")
        r = self.srv.request("POST", "/api/v1/me/tokens", {"name": "x"}, headers={"Cookie": cookie})
        self.assertProblem(r, 403, "CSRF")
        r = self.srv.request("POST", "/api/v1/me/tokens", {"name": "x"},
                             headers={"Cookie": cookie, "X-CSRF-Token": "0" * 32})
        self.assertProblem(r, 403, "CSRF")
        r = self.srv.request("POST", "/api/v1/me/tokens", {"name": "x"},
                             headers={"Cookie": cookie, "X-CSRF-Token": csrf})
        self.assertEqual(r.status, 201)
        r = self.srv.request("POST", "/api/v1/auth/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
        self.assertEqual(r.status, 200)
        self.assertProblem(self.srv.request("GET", "/api/v1/me", headers={"Cookie": cookie}), 401)


def login_from(srv, address, username, password):
    """POST /api/v1/auth/login from a given loopback address (127.0.0.x): the server sees it
    as the client's address, as it would see another machine's."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60, source_address=(address, 0))
    try:
        c.request("POST", "/api/v1/auth/login", json.dumps({"username": username, "password": password}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        c.close()


ATTACKER, OWNER = "127.0.0.3", "127.0.0.4"


class ThrottleTest(ServerTest):
    conf = {"login_max_failures": 3, "login_window": 60, "login_max_failures_per_ip": 6}

    def test_repeated_failures_are_throttled_even_with_the_right_password(self):
        for _ in range(3):
            r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong-pass"})
            self.assertEqual(r.status, 401)
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        self.assertProblem(r, 429, "from your address")
        self.assertTrue(r.header("Retry-After"))

    def test_an_address_spraying_many_accounts_is_throttled(self):
        for i in range(6):
            r = login_from(self.srv, ATTACKER, "user%d" % i, "wrong-pass")
            self.assertEqual(r.status, 401, r)
        r = login_from(self.srv, ATTACKER, "admin", ADMIN_PASSWORD)
        self.assertProblem(r, 429, "from your address")
        self.assertEqual(login_from(self.srv, OWNER, "admin", ADMIN_PASSWORD).status, 200)


class AccountSlowedNotLockedTest(ServerTest):
    conf = {"login_account_slow_after": 3, "login_window": 300}

    def test_an_account_guessed_from_many_addresses_is_slowed_never_locked(self):
        self.srv.add_user("alice", "alice-password", admin_token=self.admin)
        for i in range(3):  # three guessers, one guess each: none is locked on its own
            self.assertEqual(login_from(self.srv, "127.0.0.%d" % (10 + i), "alice", "guess").status, 401)
        r = login_from(self.srv, "127.0.0.20", "alice", "guess")
        if r.status == 429:  # within a second of the last failure: slowed, for a second
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertIn("slowed", r.json()["detail"])
        # The owner gets in once the second is over, while the window (300 s) still runs.
        deadline = time.monotonic() + 30
        while True:
            r = login_from(self.srv, OWNER, "alice", "alice-password")
            if r.status != 429 or time.monotonic() > deadline:
                break
            self.assertEqual(r.header("Retry-After"), "1", r)
            time.sleep(0.2)
        self.assertEqual(r.status, 200, r)


class LockoutOfOthersTest(ServerTest):
    """Issue 25: five wrong passwords for a user from any address locked that user out
    everywhere, and Retry-After said 60 while the window was 300."""
    conf = {"login_window": 300}

    def test_a_password_flood_from_one_address_does_not_lock_the_owner_out_elsewhere(self):
        self.srv.add_user("alice", "alice-password", admin_token=self.admin)
        for _ in range(30):
            r = login_from(self.srv, ATTACKER, "alice", "guess")
            self.assertIn(r.status, (401, 429), r)
        # alice from her own address gets in at once.
        r = login_from(self.srv, OWNER, "alice", "alice-password")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["user"]["username"], "alice")
        # The attacker's address is throttled for alice, even with the right password ...
        r = login_from(self.srv, ATTACKER, "alice", "alice-password")
        self.assertProblem(r, 429, "for this account from your address")
        # ... and Retry-After is what is really left of the 300 s window (rounded up).
        wait = int(r.header("Retry-After"))
        self.assertGreater(wait, 240)
        self.assertLessEqual(wait, 300)
        self.assertIn("try again in %d s" % wait, r.json()["detail"])

    def test_malformed_json_is_explained_without_library_option_names(self):
        for body, says in [(b'{"username": "a\\u0000b", "password": "x"}', "\\u0000 (NUL)"),
                           (b'{"username": "a", "username": "b"}', "same key twice"),
                           (b'{"username": "a"', "ends before"), (b'{} []', "more after")]:
            r = self.srv.request("POST", "/api/v1/auth/login", body, headers={"Content-Type": "application/json"})
            p = self.assertProblem(r, 400, says)
            self.assertNotIn("JSON_", p["detail"])
            self.assertNotIn("near", p["detail"])

    def test_the_login_answer_that_carries_a_token_is_not_cached(self):
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        self.assertEqual(r.status, 200)
        self.assertIn("token", r.json())
        self.assertEqual(r.header("Cache-Control"), "no-store")
        r = self.srv.request("POST", "/api/v1/auth/login",
                             {"username": "admin", "password": ADMIN_PASSWORD, "session": True})
        self.assertEqual(r.header("Cache-Control"), "no-store")


class FtpLockoutOfOthersTest(unittest.TestCase):
    def setUp(self):
        self.ftp_port = free_port()
        base = random.randrange(20000, 60000, 100)
        env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
               "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        self.srv = Server(modules={"ftp": True}, env=env, conf={"login_window": 300})
        self.srv.start()
        self.srv.add_user("alice", "alice-password")

    def tearDown(self):
        try:
            self.srv.stop()
        finally:
            self.srv.cleanup()

    def ftp_login(self, address, password):
        f = ftplib.FTP(timeout=30, source_address=(address, 0))
        f.connect("127.0.0.1", self.ftp_port)
        try:
            return f.login("alice", password)
        except ftplib.Error as e:
            return str(e)
        finally:
            f.close()

    def test_an_ftp_password_flood_from_one_address_does_not_lock_the_owner_out_elsewhere(self):
        for _ in range(8):
            self.assertRegex(self.ftp_login(ATTACKER, "guess"), "^(530|421)")
        self.assertTrue(self.ftp_login(OWNER, "alice-password").startswith("230"))
        got = self.ftp_login(ATTACKER, "alice-password")
        self.assertTrue(got.startswith("421"), got)
        self.assertIn("from your address; try again in", got)
        wait = int(re.search(r"try again in (\d+) s", got).group(1))
        self.assertGreater(wait, 240)
        self.assertLessEqual(wait, 300)
        # The HTTP door shares the throttle: the attacker's address is throttled there too,
        # alice's is not.
        self.assertProblem = ServerTest.assertProblem.__get__(self)
        self.assertProblem(login_from(self.srv, ATTACKER, "alice", "alice-password"), 429)
        self.assertEqual(login_from(self.srv, OWNER, "alice", "alice-password").status, 200)


class ExpiryTest(unittest.TestCase):
    def test_login_tokens_expire(self):
        srv = Server(conf={"token_ttl": 60})
        try:
            srv.start()
            tok = srv.login()
            self.assertEqual(srv.request("GET", "/api/v1/me", token=tok).status, 200)
            srv.stop()
            srv.extra_env["MBYTE_CLOCK_OFFSET"] = "120"
            srv.start()
            r = srv.request("GET", "/api/v1/me", token=tok)
            self.assertEqual(r.status, 401)
            srv.stop()
        finally:
            srv.cleanup()


class AdminUsersAndStatusTest(ServerTest):
    def test_patch_user_changes_role_and_password_and_refuses_bad_input_whole(self):
        alice = self.srv.add_user("alice", "alice-password", admin_token=self.admin)
        patch = lambda body, token=self.admin, name="alice": self.srv.request(  # noqa: E731
            "PATCH", "/api/v1/admin/users/" + name, body, token=token)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/users", token=alice), 403)
        self.assertProblem(patch({"role": "admin"}, token=alice), 403)
        r = patch({"role": "admin"})
        self.assertEqual((r.status, r.json()["username"], r.json()["role"]), (200, "alice", "admin"), r)
        # The role counts at once, for the tokens alice already holds.
        self.assertEqual(self.srv.request("GET", "/api/v1/admin/users", token=alice).status, 200)
        r = patch({"password": "alice-new-password"})
        self.assertEqual(r.status, 200, r)
        self.assertProblem(self.srv.request("POST", "/api/v1/auth/login",
                                            {"username": "alice", "password": "alice-password"}), 401)
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "alice", "password": "alice-new-password"})
        self.assertEqual(r.status, 200, r)
        # Bad input changes nothing, not even the valid half of it.
        for body, field in [({"role": "root"}, "role"), ({"role": 1}, "role"), ({"password": "short"}, "password"),
                            ({"password": 12345678}, "password"), ({"role": "user", "password": "x"}, "password"),
                            ({"rolle": "user"}, "rolle"), ({}, "role")]:
            self.assertProblem(patch(body), 400, field)
        users = {u["username"]: u["role"] for u in self.srv.request("GET", "/api/v1/admin/users",
                                                                    token=self.admin).json()}
        self.assertEqual(users, {"admin": "admin", "alice": "admin"})
        self.assertEqual(self.srv.request("POST", "/api/v1/auth/login",
                                          {"username": "alice", "password": "alice-new-password"}).status, 200)
        self.assertProblem(patch({"role": "user"}, name="nobody"), 404)
        # Demoted: the admin routes close for her tokens at once.
        self.assertEqual(patch({"role": "user"}).json()["role"], "user")
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/users", token=alice), 403)
        # The last administrator cannot be demoted: nobody could administer the server any more.
        self.assertProblem(patch({"role": "user"}, name="admin"), 409, "last administrator")
        self.assertEqual(self.srv.request("GET", "/api/v1/admin/users", token=self.admin).status, 200)

    def test_admin_status_reports_version_abi_listen_data_and_modules_to_admins_only(self):
        r = self.srv.request("GET", "/api/v1/admin/status", token=self.admin)
        self.assertEqual(r.status, 200, r)
        st = r.json()
        health = self.srv.request("GET", "/api/v1/health", token=self.admin).json()
        self.assertEqual((st["status"], st["version"]), ("ok", health["version"]))
        self.assertEqual(sorted(st["abi"]), ["major", "minor"])
        self.assertTrue(all(isinstance(v, int) and v >= 0 for v in st["abi"].values()), st)
        self.assertEqual(os.path.realpath(st["data_dir"]), os.path.realpath(self.srv.data))
        self.assertEqual(st["listen"], "127.0.0.1")
        self.assertEqual([m["name"] for m in st["modules"]], [m["name"] for m in health["modules"]])
        bob = self.srv.add_user("bob", "bob-password", admin_token=self.admin)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/status", token=bob), 403)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/status"), 401)

if __name__ == "__main__":
    main()

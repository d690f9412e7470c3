"""The kernel contract of issue 2 against a real mbyted: health, login, roles, bad input,
configuration errors, SIGHUP, graceful stop and restart."""
import json
import os
import resource
import signal
import socket
import subprocess
import time
import unittest

from harness import ADMIN_PASSWORD, MBYTED, Server, ServerTest, main, recv_until, wait_read_by_server


class ContractTest(ServerTest):
    def test_health_says_only_up_to_anyone_and_the_modules_only_to_admins(self):
        r = self.srv.request("GET", "/api/v1/health")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(r.json(), {"status": "ok"})  # no version, no module names for strangers
        bob = self.srv.add_user("bob", admin_token=self.admin)
        for tok in (bob, "not-a-token"):  # a user, a bad credential: the same one word
            r = self.srv.request("GET", "/api/v1/health", token=tok)
            self.assertEqual((r.status, r.json()), (200, {"status": "ok"}), r)
        h = self.srv.request("GET", "/api/v1/health", token=self.admin).json()
        self.assertEqual(h["status"], "ok")
        self.assertTrue(h["version"])
        self.assertIsInstance(h["modules"], list)

    def test_login_returns_a_token_that_opens_me(self):
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        self.assertEqual(r.status, 200)
        tok = r.json()["token"]
        me = self.srv.request("GET", "/api/v1/me", token=tok)
        self.assertEqual(me.status, 200)
        self.assertEqual(me.json()["username"], "admin")
        self.assertEqual(me.json()["role"], "admin")

    def test_wrong_password_is_401_problem(self):
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "nope-nope"})
        self.assertProblem(r, 401)
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "ghost", "password": "nope-nope"})
        self.assertProblem(r, 401)

    def test_admin_creates_users_and_a_user_cannot(self):
        r = self.srv.request("POST", "/api/v1/admin/users",
                             {"username": "alice", "password": "alice-pass-1", "role": "user"}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["username"], "alice")
        alice = self.srv.login("alice", "alice-pass-1")
        me = self.srv.request("GET", "/api/v1/me", token=alice).json()
        self.assertEqual(me["role"], "user")
        r = self.srv.request("POST", "/api/v1/admin/users",
                             {"username": "mallory", "password": "mallory-pass", "role": "admin"}, token=alice)
        self.assertProblem(r, 403)
        r = self.srv.request("GET", "/api/v1/admin/users", token=alice)
        self.assertProblem(r, 403)
        names = [u["username"] for u in self.srv.request("GET", "/api/v1/admin/users", token=self.admin).json()]
        self.assertEqual(sorted(names), ["admin", "alice"])
        r = self.srv.request("POST", "/api/v1/admin/users",
                             {"username": "alice", "password": "another-pass", "role": "user"}, token=self.admin)
        self.assertProblem(r, 409)

    def test_bad_user_fields_are_refused_with_the_field_named(self):
        for body, word in [({"username": "Bad Name", "password": "long-enough"}, "username"),
                           ({"username": "bob", "password": "short"}, "password"),
                           ({"username": "bob", "password": "long-enough", "role": "root"}, "role"),
                           ({"username": "bob"}, "password")]:
            r = self.srv.request("POST", "/api/v1/admin/users", body, token=self.admin)
            self.assertProblem(r, 400, word)

    def test_tasks_and_events_routes_need_auth(self):
        for path in ["/api/v1/tasks", "/api/v1/events", "/api/v1/me", "/api/v1/admin/modules"]:
            r = self.srv.request("GET", path)
            self.assertProblem(r, 401)
            self.assertIn("Bearer", r.header("WWW-Authenticate") or "")

    def test_event_stream_is_text_event_stream(self):
        c = self.srv.conn(timeout=5)
        c.request("GET", "/api/v1/events", headers={"Authorization": "Bearer " + self.admin})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/event-stream"))
        first = r.readline()
        self.assertTrue(first.startswith(b":"), first)
        c.close()


class BadInputTest(ServerTest):
    def users(self):
        return self.srv.request("GET", "/api/v1/admin/users", token=self.admin).json()

    def test_bad_input_gets_4xx_problem_and_changes_nothing(self):
        before = self.users()
        t = self.admin
        cases = [
            ("POST", "/api/v1/admin/users", b"{not json", {"Content-Type": "application/json"}, 400, "malformed"),
            ("POST", "/api/v1/admin/users", b"[1,2]", {}, 400, "object"),
            ("POST", "/api/v1/admin/users", b'{"username":"\xff\xfe","password":"x"}', {}, 400, "UTF-8"),
            ("POST", "/api/v1/admin/users", b'{"username":"a","username":"b"}', {}, 400, None),
            ("GET", "/api/v1/no/such/route", None, {}, 404, None),
            ("DELETE", "/api/v1/health", None, {}, 405, None),
            ("GET", "/api/v1/%ff%fe", None, {}, 400, "UTF-8"),
            ("GET", "/api/v1/a%2fb", None, {}, 400, "/"),
            ("GET", "/api/v1/%2e%2e/health", None, {}, 400, ".."),
            ("GET", "/api/v1/a%00b", None, {}, 400, "NUL"),
            ("GET", "/api/v1/%zz", None, {}, 400, "escape"),
        ]
        for method, path, body, headers, status, word in cases:
            r = self.srv.request(method, path, body=body, token=t, headers=headers)
            self.assertProblem(r, status, word)
        self.assertEqual(self.users(), before)
        self.assertIn("-> 400", self.srv.read_log())  # refusals are logged

    def test_oversized_body_is_413_before_it_is_sent(self):
        # The length is announced; the server answers without waiting for the body.
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        s.sendall(b"POST /api/v1/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (self.admin.encode(), 2 << 20))
        data = recv_until(s, b"}")
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:200])
        self.assertIn(b"application/problem+json", data)

    def test_answers_decided_from_the_headers_keep_the_connection(self):
        # A page's assets, a 404, a 401 and a refused small upload are answered on the same
        # connection, so a browser or an API client does not reconnect after each; a big
        # refused body still closes it (test above), because it is never read.
        c = self.srv.conn()
        sock = None
        for method, path, body, headers, status in [
            ("GET", "/", None, {}, 200),
            ("GET", "/api/v1/no-such-call", None, {}, 404),
            ("GET", "/api/v1/me", None, {}, 401),
            ("PUT", "/api/v1/stores/1/files/x.bin", b"x" * 4096, {"Authorization": "Bearer mbt_bad"}, 401),
            ("GET", "/api/v1/health", None, {}, 200),
        ]:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, status, path)
            self.assertNotEqual((r.getheader("Connection") or "").lower(), "close", path)
            if sock is None:
                sock = c.sock
            self.assertIs(c.sock, sock, "%s %s made the client reconnect" % (method, path))
        c.close()

    def test_oversized_chunked_body_is_413(self):
        c = self.srv.conn()
        def gen():
            for _ in range(40):
                yield b"a" * 65536
        # Unknown length: the server reads past the limit, discards, then answers 413.
        c.request("POST", "/api/v1/admin/users", body=gen(), encode_chunked=True,
                  headers={"Authorization": "Bearer " + self.admin, "Transfer-Encoding": "chunked"})
        r = c.getresponse()
        self.assertEqual(r.status, 413)
        self.assertEqual(r.getheader("Content-Type"), "application/problem+json")
        c.close()

    def test_oversized_headers_are_refused(self):
        r = self.srv.request("GET", "/api/v1/health", headers={"X-Big": "a" * 20000})
        self.assertProblem(r, 431, "headers")

    def test_headers_up_to_the_limit_carry_uploads_on_one_connection(self):
        # The connection's memory pool (http_server.c) holds the headers and the read buffer:
        # headers just under the documented 16 KiB must still carry an upload, again and again
        # on one kept-alive connection, and the bytes come back whole.
        body = os.urandom(4096)
        big = {"X-Big": "b" * 16000, "Authorization": "Bearer " + self.admin}
        c = self.srv.conn()
        for i in range(3):
            c.request("PUT", "/api/v1/stores/1/files/big-headers-%d.bin" % i, body=body, headers=big)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 201)
            c.request("GET", "/api/v1/stores/1/files/big-headers-%d.bin" % i, headers=big)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.read(), body)
        c.close()

    def test_wrong_and_missing_credentials(self):
        for h in [{}, {"Authorization": "Bearer mbt_" + "0" * 64}, {"Authorization": "Basic YWRtaW46eA=="},
                  {"Authorization": "Bearer "}]:
            r = self.srv.request("GET", "/api/v1/me", headers=h)
            self.assertProblem(r, 401)


class ConfigTest(unittest.TestCase):
    def run_with_config(self, text):
        srv = Server()
        with open(os.path.join(srv.confdir, "mbyte.yaml"), "w") as f:
            f.write(text)
        try:
            p = subprocess.run([MBYTED, "--config", srv.confdir], env=srv.env(), capture_output=True, text=True,
                               timeout=30)
            return p
        finally:
            srv.cleanup()

    def test_bad_configuration_is_refused_with_file_and_line(self):
        p = self.run_with_config("log_level: info\nworkers: 2\nworkers_typo: 3\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:3: unknown key 'workers_typo'", p.stderr)
        p = self.run_with_config("log_level: info\nworkers: [1,\n")
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr, r"mbyte\.yaml:\d+: ")
        p = self.run_with_config("http_threads: 0\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:1: http_threads must be between 1 and 256", p.stderr)
        p = self.run_with_config("log_level: info\ndb_write_buffer: 4096\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:2: db_write_buffer must be between 1048576 and 1073741824", p.stderr)
        p = self.run_with_config("log_level: info\ndb_cache: 2147483648\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:2: db_cache must be between 1048576 and 1073741824", p.stderr)
        p = self.run_with_config("log_level: info\nchunk_large_folios: sometimes\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:2: chunk_large_folios must be true, false or auto", p.stderr)
        p = self.run_with_config("log_level: info\nchunk_direct_io: sometimes\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("mbyte.yaml:2: chunk_direct_io must be true or false", p.stderr)

    def test_sighup_keeps_the_running_config_when_the_new_one_is_bad(self):
        srv = Server()
        try:
            srv.start()
            with open(os.path.join(srv.confdir, "mbyte.yaml"), "w") as f:
                f.write("log_level: loud\n")
            mark = srv.log_mark()
            srv.proc.send_signal(signal.SIGHUP)
            # The daemon says what it did with the signal: wait for that line, not for a time.
            log = srv.wait_log("configuration not reloaded", since=mark)
            self.assertIn("mbyte.yaml:1: log_level must be", log)
            self.assertNotIn("configuration reloaded", log)
            self.assertEqual(srv.request("GET", "/api/v1/health").status, 200)
            with open(os.path.join(srv.confdir, "mbyte.yaml"), "w") as f:
                f.write("log_level: debug\nlogin_max_failures: 2\n")
            mark = srv.log_mark()
            srv.proc.send_signal(signal.SIGHUP)
            self.assertNotIn("not reloaded", srv.wait_log("configuration reloaded", since=mark))
            # The new limit is in force: the third failure in a row is throttled.
            codes = [srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong-pass"}).status
                     for _ in range(3)]
            self.assertEqual(codes, [401, 401, 429])
            srv.stop()
        finally:
            srv.cleanup()


class LifecycleTest(unittest.TestCase):
    def test_restart_keeps_users_and_tokens(self):
        srv = Server()
        try:
            srv.start()
            admin = srv.login()
            bob = srv.add_user("bob", "bob-password", admin_token=admin)
            api = srv.request("POST", "/api/v1/me/tokens", {"name": "ci"}, token=bob).json()["token"]
            srv.stop()
            srv.start()
            self.assertEqual(srv.request("GET", "/api/v1/me", token=bob).json()["username"], "bob")
            self.assertEqual(srv.request("GET", "/api/v1/me", token=api).json()["username"], "bob")
            self.assertEqual(srv.login("bob", "bob-password")[:4], "mbt_")
            srv.stop()
        finally:
            srv.cleanup()

    def test_sigterm_lets_a_request_in_flight_finish(self):
        srv = Server()
        try:
            srv.start()
            body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            wait_read_by_server(self, srv.port, s)
            mark = srv.log_mark()
            srv.proc.send_signal(signal.SIGTERM)
            srv.wait_log("stopping", since=mark)
            # While it drains, a new request is told to come back later, not left hanging
            # (until the loop has stopped, health still answers 200).
            deadline = time.time() + 60
            while True:
                self.assertIsNone(srv.proc.poll(), "mbyted quit with a request in flight")
                r = srv.request("GET", "/api/v1/health", timeout=10)
                if r.status == 503:
                    break
                self.assertEqual(r.status, 200, r)
                self.assertLess(time.time(), deadline, "health never answered 503 while draining")
                time.sleep(0.02)
            self.assertIsNone(srv.proc.poll(), "mbyted quit with a request in flight")
            self.assertEqual(r.header("Content-Type"), "application/problem+json")
            s.sendall(body[10:])
            data = recv_until(s, b"\r\n\r\n")
            s.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
            self.assertEqual(srv.proc.wait(timeout=30), 0)
            srv.proc = None
            srv.log.close()
            self.assertIn("stopped", srv.read_log())
        finally:
            srv.cleanup()

    def test_the_open_files_limit_is_raised_to_the_hard_limit(self):
        # Started with a soft limit of 256 (chunk files queued for sendfile, connections and
        # LevelDB's tables would run out of it), mbyted runs with its hard limit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertGreater(hard, 256)
        srv = Server()
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            try:
                srv.start()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            with open("/proc/%d/limits" % srv.proc.pid) as f:
                line = [l for l in f if l.startswith("Max open files")][0].split()
            self.assertEqual((line[3], line[4]), (str(hard), str(hard)), line)
            self.assertEqual(srv.request("GET", "/api/v1/health").status, 200)
        finally:
            srv.cleanup()


def threads(pid):
    """{tid: (name, nice, ns on a CPU)} of a process's threads."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                nice = int(f.read().rsplit(")", 1)[1].split()[16])
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                ns = int(f.read().split()[0])
        except FileNotFoundError:
            continue  # a thread that ended while we looked
        out[int(t)] = (name, nice, ns)
    return out


class CompactionThreadTest(ServerTest):
    """LevelDB compacts in one background thread it makes on its first compaction, and a new
    thread takes its maker's name and nice value. The kernel opens the database from a thread
    named mb-leveldb ten nice steps below itself and makes LevelDB start that thread there, so
    the metadata store's flushes and compactions run below the requests' priority (kernel/db.c)."""
    conf = {"db_write_buffer": 1048576}  # the smallest memtable: a few MiB of uploads flush and compact

    def test_flushes_and_compactions_run_in_a_lower_priority_thread_of_their_own(self):
        pid = self.srv.proc.pid
        main_nice = threads(pid)[pid][1]
        low = [(t, v) for t, v in threads(pid).items() if v[0] == "mb-leveldb"]
        self.assertEqual(len(low), 1, threads(pid))
        tid, (_, nice, ns_before) = low[0]
        self.assertEqual(nice, min(main_nice + 10, 19))
        self.assertTrue(all(v[1] == main_nice for t, v in threads(pid).items() if v[0] == "MHD-worker"))
        sid = self.srv.request("GET", "/api/v1/stores", token=self.admin).json()[0]["id"]
        sent = {}
        for i in range(2000):  # 8 MiB of small files: their bytes live in LevelDB (blob.c)
            body = os.urandom(4096)
            r = self.srv.request("PUT", "/api/v1/stores/%s/files/c/f%04d?parents=true" % (sid, i), body,
                                 token=self.admin)
            self.assertIn(r.status, (200, 201), r)
            if i % 97 == 0:
                sent[i] = body
        with open(os.path.join(self.srv.data, "meta", "LOG")) as f:
            log = f.read()
        self.assertGreaterEqual(log.count("Level-0 table #"), 4, log[-2000:])  # memtables written out
        after = threads(pid)
        self.assertEqual(after.get(tid, ("gone",))[0], "mb-leveldb", after)  # LevelDB's own thread, kept
        self.assertGreater(after[tid][2], ns_before, "the flushes ran in another thread")
        for i, body in sent.items():
            r = self.srv.request("GET", "/api/v1/stores/%s/files/c/f%04d" % (sid, i), token=self.admin)
            self.assertEqual((r.status, r.body), (200, body))


class CtlTest(ServerTest):
    def test_mbytectl_users_tokens_and_status(self):
        p = self.srv.ctl("user", "add", "carol", "--role", "user", input="carol-password\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.srv.ctl("user", "list")
        self.assertIn("carol", p.stdout)
        self.assertEqual(self.srv.login("carol", "carol-password")[:4], "mbt_")
        p = self.srv.ctl("user", "passwd", "carol", env={"MBYTE_PASSWORD": "carol-password-2"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.srv.request("POST", "/api/v1/auth/login",
                                          {"username": "carol", "password": "carol-password"}).status, 401)
        self.srv.login("carol", "carol-password-2")
        p = self.srv.ctl("--json", "token", "create", "backup", "--user", "carol")
        self.assertEqual(p.returncode, 0, p.stderr)
        tok = json.loads(p.stdout)
        self.assertEqual(self.srv.request("GET", "/api/v1/me", token=tok["token"]).json()["username"], "carol")
        p = self.srv.ctl("token", "list", "--user", "carol")
        self.assertIn("backup", p.stdout)
        self.assertNotIn(tok["token"], p.stdout)
        p = self.srv.ctl("token", "revoke", tok["id"], "--user", "carol")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.srv.request("GET", "/api/v1/me", token=tok["token"]).status, 401)
        p = self.srv.ctl("status")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["status"], "ok")
        p = self.srv.ctl("user", "add", "Bad Name", input="whatever-pass\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("username", p.stderr)

    def test_mbytectl_without_the_socket_says_so(self):
        p = self.srv.ctl("--data", "/nonexistent", "status")
        self.assertEqual(p.returncode, 3)
        self.assertIn("cannot reach mbyted", p.stderr)


class FeaturesTest(ServerTest):
    modules = {"trash": True, "sharing": True}

    def test_features_tell_a_user_which_modules_are_on_without_versions(self):
        self.assertProblem(self.srv.request("GET", "/api/v1/features"), 401)
        bob = self.srv.add_user("bob", admin_token=self.admin)
        r = self.srv.request("GET", "/api/v1/features", token=bob)
        self.assertEqual(r.status, 200, r)
        active = sorted(m["name"] for m in self.srv.request("GET", "/api/v1/admin/modules", token=self.admin).json()
                        if m["state"] == "active")
        self.assertEqual(r.json(), {"features": active})
        self.assertEqual(active, ["sharing", "trash"])
        r = self.srv.request("POST", "/api/v1/admin/modules/trash/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.srv.request("GET", "/api/v1/features", token=bob).json(), {"features": ["sharing"]})


if __name__ == "__main__":
    main()

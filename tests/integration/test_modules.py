"""Modules: load, unload, reload and list through the admin API and mbytectl; refusals with
clear sentences; reload under load without a failed request (kernel/modmgr.c)."""
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
import http.client
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, ServerTest, MODULE_DIR, SRC, kernel_abi, main  # noqa: E402

TEST_MODULES = os.environ.get("MBYTE_TEST_MODULE_DIR", os.path.join(SRC, "build", "tests", "modules"))


def so_path(name, v2=False):
    if v2:
        return os.path.join(TEST_MODULES, "v2", "hello.so")
    shipped = os.path.join(MODULE_DIR, name + ".so")
    return shipped if os.path.exists(shipped) else os.path.join(TEST_MODULES, name + ".so")


def put_module(moddir, name, v2=False):
    """Replace <moddir>/<name>.so atomically (the way an admin should deploy one)."""
    tmp = os.path.join(moddir, ".%s.tmp" % name)
    shutil.copy(so_path(name, v2), tmp)
    os.rename(tmp, os.path.join(moddir, name + ".so"))


class ModuleTest(ServerTest):
    """One server per test, with its own module directory holding `names`."""
    names = ("hello",)
    modules = {"hello": True}

    def setUp(self):
        self.moddir = tempfile.mkdtemp(prefix="mbyte-mods-")
        for n in self.names:
            put_module(self.moddir, n)
        self.srv = Server(modules=self.modules, conf=self.conf, module_conf=self.module_conf,
                          env={"MBYTE_MODULE_DIR": self.moddir})
        self.srv.start()
        self.admin = self.srv.login()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            shutil.rmtree(self.moddir, ignore_errors=True)

    def act(self, name, action, token=None):
        return self.srv.request("POST", "/api/v1/admin/modules/%s/%s" % (name, action), token=token or self.admin)

    def listing(self):
        r = self.srv.request("GET", "/api/v1/admin/modules", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return {m["name"]: m for m in r.json()}

    def health_modules(self):
        r = self.srv.request("GET", "/api/v1/health", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return sorted((m["name"], m["state"]) for m in r.json()["modules"])


class AdminApi(ModuleTest):
    def test_enabled_hello_is_loaded_at_start_and_listed_active(self):
        m = self.listing()["hello"]
        self.assertEqual(m["state"], "active")
        self.assertEqual(m["version"], "1.0.0")
        self.assertEqual(m["abi"], kernel_abi())
        self.assertEqual(m["depends"], [])
        self.assertTrue(m["enabled"])
        self.assertTrue(m["description"])
        r = self.srv.request("GET", "/api/v1/hello", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"greeting": "hello", "user": "admin", "module_version": "1.0.0",
                                    "observed": 0})

    def test_unload_removes_the_route_and_load_brings_it_back(self):
        r = self.act("hello", "unload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["state"], "cold")
        self.assertProblem(self.srv.request("GET", "/api/v1/hello", token=self.admin), 404,
                           "the hello module is not loaded")
        # Cold until dlclose on the next loop turn, then only the file is left: available.
        self.assertIn(self.listing()["hello"]["state"], ("cold", "available"))
        self.assertProblem(self.act("hello", "unload"), 404, "not loaded")
        self.assertProblem(self.act("hello", "reload"), 404, "not loaded")
        r = self.act("hello", "load")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["state"], "active")
        self.assertEqual(self.srv.request("GET", "/api/v1/hello", token=self.admin).status, 200)
        self.assertProblem(self.act("hello", "load"), 409, "already loaded")

    def test_unknown_module_is_404_and_a_bad_name_changes_nothing(self):
        self.assertProblem(self.act("nosuch", "load"), 404, "no module nosuch")
        self.assertProblem(self.act("Bad%2EName", "load"), 404)
        self.assertProblem(self.act("..", "load"), 400)
        self.assertEqual(list(self.listing()), ["hello"])

    def test_reload_swaps_in_the_new_version_and_kv_state_survives(self):
        r = self.srv.request("POST", "/api/v1/hello/ping", {"n": 1}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.wait_observed(1)
        put_module(self.moddir, "hello", v2=True)
        r = self.act("hello", "reload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["version"], "2.0.0")
        self.assertEqual(r.json()["state"], "active")
        g = self.srv.request("GET", "/api/v1/hello", token=self.admin).json()
        self.assertEqual(g["module_version"], "2.0.0")
        self.assertEqual(g["observed"], 1)  # kept in kv, read by the new copy's init
        self.assertEqual(self.listing()["hello"]["version"], "2.0.0")

    def test_a_failed_reload_keeps_the_running_copy(self):
        with open(os.path.join(self.moddir, "hello.so"), "wb") as f:
            f.write(b"this is not an ELF file")
        p = self.assertProblem(self.act("hello", "reload"), 400, "module hello cannot be opened")
        self.assertIn("hello", p["detail"])
        self.assertEqual(self.srv.request("GET", "/api/v1/hello", token=self.admin).status, 200)
        self.assertEqual(self.listing()["hello"]["state"], "active")

    def test_ping_filter_refuses_and_observer_counts(self):
        r = self.srv.request("POST", "/api/v1/hello/ping", {"deny": True}, token=self.admin)
        self.assertProblem(r, 403, "hello refuses this ping")
        for i in range(3):
            self.assertEqual(self.srv.request("POST", "/api/v1/hello/ping", {"i": i}, token=self.admin).status, 200)
        self.wait_observed(3)

    def wait_observed(self, n):
        deadline = time.time() + 60
        while time.time() < deadline:
            got = self.srv.request("GET", "/api/v1/hello", token=self.admin).json()["observed"]
            if got >= n:
                self.assertEqual(got, n)
                return
            time.sleep(0.05)
        self.fail("the observer never saw %d pings" % n)

    def test_non_admin_cannot_list_or_manage_modules(self):
        user = self.srv.add_user("bob", admin_token=self.admin)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/modules", token=user), 403)
        for action in ("load", "unload", "reload"):
            self.assertProblem(self.act("hello", action, token=user), 403)
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/modules"), 401)
        self.assertEqual(self.listing()["hello"]["state"], "active")
        self.assertEqual(self.srv.request("GET", "/api/v1/hello", token=user).status, 200)

    def test_mbytectl_lists_loads_unloads_and_reloads(self):
        r = self.srv.ctl("module", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("hello")][0]
        self.assertIn("active", line)
        self.assertIn("1.0.0", line)
        r = self.srv.ctl("module", "unload", "hello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["state"], "cold")
        r = self.srv.ctl("module", "list")
        line = [l for l in r.stdout.splitlines() if l.startswith("hello")][0]
        self.assertTrue("available" in line or "cold" in line, line)
        self.assertNotIn("active", line)
        r = self.srv.ctl("module", "load", "hello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["state"], "active")
        r = self.srv.ctl("module", "reload", "hello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["state"], "active")
        r = self.srv.ctl("module", "load", "nosuch")
        self.assertEqual(r.returncode, 1)
        self.assertIn("404", r.stderr)
        self.assertIn("no module nosuch", r.stderr)


class NotEnabled(ModuleTest):
    modules = {"hello": False}

    def test_a_module_not_enabled_is_available_but_not_loaded(self):
        m = self.listing()["hello"]
        self.assertEqual(m["state"], "available")
        self.assertFalse(m["enabled"])
        self.assertProblem(self.srv.request("GET", "/api/v1/hello", token=self.admin), 404,
                           "the hello module is not loaded")
        # A path no module serves is still a plain 404.
        self.assertProblem(self.srv.request("GET", "/api/v1/nothing-here", token=self.admin), 404,
                           "no such endpoint")


class RoutesOfShippedModulesNotLoaded(ServerTest):
    """Issue 25: /api/v1/shares/... with sharing not loaded answered a bare "no such endpoint"."""

    def test_a_route_of_a_module_not_loaded_is_404_naming_the_module(self):
        for method, path in [("DELETE", "/api/v1/shares/abc"), ("GET", "/api/v1/public/sometoken/a.txt"),
                             ("GET", "/api/v1/shared-with-me")]:
            r = self.srv.request(method, path, token=self.admin)
            self.assertProblem(r, 404, "the sharing module is not loaded")
        self.assertProblem(self.srv.request("GET", "/api/v1/no/such/thing", token=self.admin), 404,
                           "no such endpoint")


class BadConfig(ModuleTest):
    modules = {"hello": False}
    module_conf = {"hello": "greeting: hi\ncolour: blue\n"}

    def test_bad_module_config_is_refused_with_file_and_line(self):
        p = self.assertProblem(self.act("hello", "load"), 400, "hello.yaml:2: unknown key 'colour'")
        self.assertEqual(self.listing()["hello"]["state"], "available")
        with open(os.path.join(self.srv.confdir, "hello.yaml"), "w") as f:
            f.write("greeting: hi there\n")
        self.assertEqual(self.act("hello", "load").status, 200)
        g = self.srv.request("GET", "/api/v1/hello", token=self.admin).json()
        self.assertEqual(g["greeting"], "hi there")
        del p


class Timers(ModuleTest):
    names = ("hello", "ticker")

    def ticker(self):
        r = self.srv.request("GET", "/api/v1/ticker", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_ticks(self, at_least):
        deadline = time.time() + 30
        while time.time() < deadline:
            t = self.ticker()
            if t["ticks"] >= at_least:
                return t
            time.sleep(0.05)
        self.fail("the ticker's timer did not run %d times: %s" % (at_least, self.ticker()))

    def test_timers_run_on_time_and_none_runs_after_unload_or_reload(self):
        self.assertEqual(self.act("ticker", "load").status, 200)
        t = self.wait_ticks(5)
        self.assertEqual(t["once"], 1)            # a one-shot timer runs once
        self.assertEqual(t["cancelled_ran"], 0)   # a cancelled one never
        # Reloads and an unload while a run is often in progress: the old copy's timers are
        # cancelled before its fini, and a run in progress is waited for.
        for _ in range(3):
            self.assertEqual(self.act("ticker", "reload").status, 200)
            self.wait_ticks(self.ticker()["ticks"] + 3)
        self.assertEqual(self.act("ticker", "unload").status, 200)
        self.assertEqual(self.act("ticker", "load").status, 200)
        t = self.wait_ticks(1)
        self.assertFalse(t["late"], "a timer ran after its module's fini")
        self.assertEqual(self.ticker()["cancelled_ran"], 0)


class BadModules(ModuleTest):
    names = ("hello", "badabi", "oldabi", "needsdep", "initfail", "stubborn", "dependent")

    def test_bad_modules_are_refused_with_clear_sentences_and_nothing_changes(self):
        before = self.health_modules()
        next_major = int(kernel_abi().split(".")[0]) + 1
        self.assertProblem(self.act("badabi", "load"), 400,
                           "module badabi was built for ABI %d.0, this kernel speaks %s" % (next_major, kernel_abi()))
        # A module built for ABI 1.x (the table laid out by change, not by topic) is refused alike.
        self.assertProblem(self.act("oldabi", "load"), 400,
                           "module oldabi was built for ABI 1.9, this kernel speaks %s" % kernel_abi())
        self.assertProblem(self.act("needsdep", "load"), 409,
                           "module needsdep needs module nosuchmodule, which is not loaded")
        self.assertProblem(self.act("initfail", "load"), 409,
                           "module initfail failed to start: the frobnicator is missing")
        self.assertProblem(self.srv.request("GET", "/api/v1/initfail", token=self.admin), 404)
        self.assertEqual(self.health_modules(), before)
        self.assertEqual(self.srv.request("GET", "/api/v1/hello", token=self.admin).status, 200)
        # Refusals are logged with the module's name.
        log = self.srv.read_log()
        self.assertIn("initfail: not loaded: module initfail failed to start", log)

    def test_a_module_whose_fini_refuses_stays_active_with_its_reason(self):
        self.assertEqual(self.act("stubborn", "load").status, 200)
        p = self.assertProblem(self.act("stubborn", "unload"), 409, "module stubborn refused to unload")
        self.assertIn("it still holds work nobody else can take", p["detail"])
        self.assertEqual(self.listing()["stubborn"]["state"], "active")
        self.assertEqual(self.srv.request("GET", "/api/v1/stubborn", token=self.admin).status, 200)
        # A reload is never refused.
        self.assertEqual(self.act("stubborn", "reload").status, 200)
        self.assertEqual(self.srv.request("POST", "/api/v1/stubborn/release", token=self.admin).status, 200)
        self.assertEqual(self.act("stubborn", "unload").status, 200)
        self.assertProblem(self.srv.request("GET", "/api/v1/stubborn", token=self.admin), 404)

    def test_unload_is_refused_while_a_dependent_is_loaded(self):
        r = self.act("dependent", "load")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["depends"], ["hello"])
        self.assertProblem(self.act("hello", "unload"), 409, "module hello is needed by module dependent")
        self.assertEqual(self.srv.request("GET", "/api/v1/hello", token=self.admin).status, 200)
        # A reload of the dependency is fine: the dependent needs the name, not the copy.
        self.assertEqual(self.act("hello", "reload").status, 200)
        self.assertEqual(self.act("dependent", "unload").status, 200)
        self.assertEqual(self.act("hello", "unload").status, 200)
        self.assertProblem(self.act("dependent", "load"), 409, "needs module hello, which is not loaded")


class BackendUnloadTest(ModuleTest):
    """A blob backend's module unloading: no call may start once the unload has begun (slowfini
    aborts the server if one reaches it during its 1.5 s fini), a download that has begun ends
    whole (its reader holds the backend, the unload waits for it), one asked for after the
    unload began gets 503 before any byte, and a refused unload leaves the backend serving.
    Found by CI: a read entering s3's backend while s3's fini freed it; then a download cut in
    its middle (IncompleteRead) when the per-chunk lookup found the backend closing."""
    names = ("taskmgr", "storeconfig", "multistore", "slowfini")
    modules = {"taskmgr": True, "storeconfig": True, "multistore": True, "slowfini": True}

    def setUp(self):
        self.chunks = tempfile.mkdtemp(prefix="mbyte-slow-")
        self.module_conf = {"slowfini": "dir: %s\nget_ms: 20\n" % self.chunks}
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            shutil.rmtree(self.chunks, ignore_errors=True)

    def slow_file(self, size):
        """A store on the backend "slow" holding big.bin of `size` random bytes: (path, data)."""
        r = self.srv.request("POST", "/api/v1/stores", {"name": "Slow", "placement": {"backend": "slow"}},
                             token=self.admin)
        self.assertEqual(r.status, 202, r)
        sid = r.json()["store"]
        for _ in range(200):
            t = self.srv.request("GET", "/api/v1/tasks/%s" % r.json()["task"], token=self.admin).json()
            if t["state"] == "done":
                break
            time.sleep(0.05)
        data = os.urandom(size)  # chunks over chunk_inline_max go to the backend
        path = "/api/v1/stores/%d/files/big.bin" % sid
        self.assertEqual(self.srv.request("PUT", path, data, token=self.admin).status, 201)
        self.assertTrue(os.listdir(self.chunks), "no chunk reached the backend")
        return path, data

    def unloaded(self, r):
        """The unload answered 200 (done), or 202 when the drain and slowfini's fini outlast the
        unload's own budget under load (docs/modules.md: it then ends on its own): it ends."""
        self.assertIn(r.status, (200, 202), r)
        end = time.time() + 60
        while self.listing()["slowfini"]["state"] not in ("cold", "available"):
            self.assertLess(time.time(), end, "the unload never ended")
            time.sleep(0.1)

    def get(self, path):
        """(status, whole) of one GET: whole is False when the body was cut or differs."""
        try:
            r = self.srv.request("GET", path, token=self.admin)
        except (OSError, http.client.HTTPException) as e:
            return ("cut", repr(e))
        return (r.status, r.body)

    def test_no_backend_call_starts_during_fini_and_a_refused_unload_keeps_serving(self):
        path, data = self.slow_file(300000)
        # 1. refused: the backend serves again at once
        self.assertProblem(self.act("slowfini", "unload"), 409, "the first unload is refused")
        self.assertEqual(self.get(path), (200, data))
        # 2. readers hammer the file while the module unloads: each read gets the file whole or 503
        results, stop = [], threading.Event()

        def reader():
            while not stop.is_set():
                results.append(self.get(path))

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        self.unloaded(self.act("slowfini", "unload"))
        stop.set()
        for t in threads:
            t.join()
        statuses = [st for st, _ in results]
        self.assertTrue(set(statuses) <= {200, 503}, collections.Counter(statuses))
        self.assertTrue(all(body == data for st, body in results if st == 200), "a 200 with a body not the file's")
        self.assertIn(503, statuses)  # some read was asked for inside the unload window
        self.assertNotIn("called while fini runs", self.srv.read_log())
        self.assertProblem(self.srv.request("GET", path, token=self.admin), 503, "slow")
        self.assertEqual(self.act("slowfini", "load").status, 200)
        self.assertEqual(self.get(path), (200, data))

    def test_a_download_that_has_begun_ends_whole_when_its_backend_unloads(self):
        # 32 MiB: about 27 chunks of 20 ms each, more than loopback's socket buffers hold, so
        # most of the file is read from the backend after the unload has begun
        path, data = self.slow_file(32 << 20)
        self.assertProblem(self.act("slowfini", "unload"), 409, "the first unload is refused")
        c = self.srv.conn(60)
        c.request("GET", path, headers={"Authorization": "Bearer " + self.admin})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        head = r.read(1 << 20)
        done = {}
        t = threading.Thread(target=lambda: done.setdefault("unload", self.act("slowfini", "unload")))
        t.start()
        for _ in range(100):
            if self.listing()["slowfini"]["state"] == "draining":
                break
            time.sleep(0.05)
        self.assertEqual(self.listing()["slowfini"]["state"], "draining", "the unload waits for the download")
        # asked for now: refused before any byte
        self.assertProblem(self.srv.request("GET", path, token=self.admin), 503, "slow")
        rest = r.read()
        c.close()
        self.assertEqual(len(head) + len(rest), len(data), "the download was cut")
        self.assertEqual(head + rest, data)
        t.join(60)
        self.unloaded(done["unload"])
        self.assertNotIn("called while fini runs", self.srv.read_log())


class ReloadUnderLoad(ModuleTest):
    conf = {"http_threads": 8}

    def test_twenty_reloads_while_eight_clients_call_the_module_lose_no_request(self):
        stop = threading.Event()
        served = [0] * 8
        failures = []

        def client(i):
            c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
            h = {"Authorization": "Bearer " + self.admin}
            try:
                while not stop.is_set():
                    try:
                        c.request("GET", "/api/v1/hello", headers=h)
                        r = c.getresponse()
                        body = r.read()
                        if r.status != 200:
                            failures.append((r.status, body[:200]))
                        else:
                            served[i] += 1
                    except (OSError, http.client.HTTPException) as e:
                        failures.append(repr(e))
                        c.close()
                        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        started = time.time()
        versions = []
        try:
            for n in range(20):
                # Paced by the traffic, not the clock: each reload comes after the clients
                # were served another 32 requests (the deadline only catches a real stall).
                base, deadline = sum(served), time.time() + 60
                while sum(served) < base + 32:
                    self.assertEqual(failures, [])
                    self.assertLess(time.time(), deadline, "the clients were served nothing for 60 s")
                    time.sleep(0.005)
                put_module(self.moddir, "hello", v2=(n % 2 == 0))
                r = self.act("hello", "reload")
                self.assertEqual(r.status, 200, r)
                versions.append(r.json()["version"])
            base, deadline = sum(served), time.time() + 60
            while sum(served) < base + 32:  # and the last copy serves too
                self.assertLess(time.time(), deadline, "the clients were served nothing for 60 s")
                time.sleep(0.005)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "a client is stuck")
        self.assertEqual(failures, [])
        self.assertEqual(versions[:2], ["2.0.0", "1.0.0"])
        self.assertGreaterEqual(sum(served), 21 * 32)
        self.assertEqual(self.listing()["hello"]["state"], "active")
        print("reload under load: %d requests served, 0 failed, 20 reloads in %.1f s"
              % (sum(served), time.time() - started))


if __name__ == "__main__":
    main()

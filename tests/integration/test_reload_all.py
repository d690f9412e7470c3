"""Every module loads, unloads and reloads under load with zero failed requests (issue 15, "Done
when"). One mbyted on the shipped conf.d (every module it switches on, with its shipped
settings); for each of those modules in turn, clients keep uploading and downloading files
through the files API (the kernel's own routes) and keep calling the module's own route, while
the admin reloads the module twice, unloads it (the modules depending on it first, as the
kernel requires) and loads it all back through /api/v1/admin/modules.

What must hold: no kernel request fails and every download reads back exactly the bytes that
were uploaded, at every moment; the module's own route never fails while the module is loaded
(reloads included), and only answers 404 while it is unloaded; it serves again afterwards."""
import base64
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import main, ServerTest  # noqa: E402
from test_defaults import ShippedServer, shipped_module_lines  # noqa: E402

FIXED = "reload/fixed.bin"
# A GET route of each module, {sid} the admin's Home store. None: the module has no GET route
# of its own (taskmgr's are POSTs that start tasks; rclone has backends only). webdav's is its door, /dav/.
MODULE_ROUTE = {
    "multistore": "/api/v1/me/default-store",
    "taskmgr": None,
    "storeconfig": "/api/v1/stores/{sid}/config",
    "quotas": "/api/v1/me/usage",
    "trash": "/api/v1/stores/{sid}/trash",
    "versioning": "/api/v1/stores/{sid}/versions/" + FIXED,
    "integrity": "/api/v1/admin/integrity",
    "sharing": "/api/v1/stores/{sid}/shares",
    "audit": "/api/v1/admin/audit",
    "webhooks": "/api/v1/stores/{sid}/webhooks",
    "ftp": "/api/v1/ftp",
    "webdav": "/dav/Home/" + FIXED,
    "thumbnails": "/api/v1/admin/thumbnails",
    "search": "/api/v1/search/status",
    "tags": "/api/v1/stores/{sid}/tags",
    "rclone": None,  # blob backends only, none declared as shipped
}
# Sizes of the uploads: empty, inline-sized, a few chunks (the write pipeline's store thread).
SIZES = [0, 1000, 70 * 1024, 3 * 1024 * 1024 + 17]


class Stream:
    """Clients on threads until stop(): each call is (start, end, label, ok, detail)."""

    def __init__(self, test):
        self.test, self.calls, self.lock = test, [], threading.Lock()
        self.halt = threading.Event()
        self.threads = []

    def record(self, start, label, ok, detail=""):
        with self.lock:
            self.calls.append((start, time.monotonic(), label, ok, detail))

    def run(self, fn):
        def loop():
            n = 0
            while not self.halt.is_set():
                fn(n)
                n += 1
        t = threading.Thread(target=loop)
        t.start()
        self.threads.append(t)

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join()

    def wait_for(self, label, more):
        """Waits until `more` further successful calls of `label` were made (60 s deadline)."""
        def ok():
            with self.lock:
                return sum(1 for c in self.calls if c[2] == label and c[3])
        want, deadline = ok() + more, time.time() + 120
        while ok() < want:
            self.test.assertLess(time.time(), deadline, "no progress of %s: %r" % (label, self.calls[-5:]))
            time.sleep(0.02)


class ReloadEveryModule(ServerTest):
    def setUp(self):
        self.srv = ShippedServer()
        self.srv.start()
        self.admin = self.srv.login()
        stores = self.srv.request("GET", "/api/v1/stores", token=self.admin).json()
        self.sid = [s["id"] for s in stores if s["name"] == "Home"][0]
        self.fixed = os.urandom(200 * 1024 + 3)
        self.assertEqual(self.put(FIXED + "?parents=true", self.fixed).status, 201)
        r = self.srv.request("POST", "/api/v1/account/app-passwords", {"name": "reload test"}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.basic = "Basic " + base64.b64encode(("admin:" + r.json()["password"]).encode()).decode()

    def put(self, path, data):
        return self.srv.request("PUT", "/api/v1/stores/%d/files/%s" % (self.sid, path), data, token=self.admin)

    def get(self, path):
        return self.srv.request("GET", "/api/v1/stores/%d/files/%s" % (self.sid, path), token=self.admin)

    def modules(self):
        r = self.srv.request("GET", "/api/v1/admin/modules", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return {m["name"]: m for m in r.json()}

    def act(self, name, action):
        r = self.srv.request("POST", "/api/v1/admin/modules/%s/%s" % (name, action), token=self.admin,
                             timeout=120)
        if action == "unload" and r.status == 202:  # still draining calls in flight: wait for the end
            deadline = time.time() + 120
            while self.modules().get(name, {}).get("state") not in ("available", None):
                self.assertLess(time.time(), deadline, "%s still draining" % name)
                time.sleep(0.05)
            return
        self.assertEqual(r.status, 200, "%s %s: %r" % (action, name, r))

    def dependents(self, name, mods):
        """The loaded modules that need `name`, directly or not, the outermost first."""
        out = []

        def visit(n):
            for m in mods.values():
                if m.get("state") == "active" and n in (m.get("depends") or []) and m["name"] not in out:
                    visit(m["name"])
                    out.append(m["name"])
        visit(name)
        return list(reversed(out))

    # -------------------------------------------------------------- the clients --

    def uploader(self, stream, tag):
        def one(n):
            data = os.urandom(SIZES[n % len(SIZES)])
            path = "reload/%s-%d.bin" % (tag, n % 3)
            t0 = time.monotonic()
            r = self.put(path + "?parents=true", data)
            if r.status not in (200, 201):
                return stream.record(t0, "kernel", False, "PUT %s: %r" % (path, r))
            t1 = time.monotonic()
            r = self.get(path)
            ok = r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
            stream.record(t0, "kernel", True)
            stream.record(t1, "kernel", ok, "" if ok else "GET %s: %d, %d bytes of %d" % (path, r.status,
                                                                                           len(r.body), len(data)))
        return one

    def reader(self, stream):
        def one(n):
            t0 = time.monotonic()
            r = self.get(FIXED) if n % 2 == 0 else self.srv.request(
                "GET", "/api/v1/stores/%d/list/reload" % self.sid, token=self.admin)
            ok = r.status == 200 and (n % 2 or r.body == self.fixed)
            stream.record(t0, "kernel", ok, "" if ok else "read %d: %r" % (n, r))
        return one

    def module_client(self, stream, route):
        path = route.replace("{sid}", str(self.sid))

        def one(n):
            t0 = time.monotonic()
            if path.startswith("/dav/"):
                r = self.srv.request("GET", path, headers={"Authorization": self.basic})
            else:
                r = self.srv.request("GET", path, token=self.admin)
            ok = r.status == 200 and (not path.startswith("/dav/") or r.body == self.fixed)
            stream.record(t0, "module", ok, "" if ok else "%d GET %s: %r" % (r.status, path, r))
        return one

    # ------------------------------------------------------------------ the test --

    def test_every_shipped_module_reloads_unloads_and_loads_under_load_with_no_failed_request(self):
        shipped = [n for n, (on, _) in shipped_module_lines().items() if on]
        self.assertTrue(shipped)
        mods = self.modules()
        for name in shipped:
            self.assertEqual(mods.get(name, {}).get("state"), "active", "%s is not active: %r" % (name, mods))
            self.assertIn(name, MODULE_ROUTE, "a new shipped module %s: name its GET route in MODULE_ROUTE" % name)
        for name in shipped:
            with self.subTest(module=name):
                self.cycle(name)

    def cycle(self, name):
        route = MODULE_ROUTE[name]
        stream = Stream(self)
        stream.run(self.uploader(stream, name + "-a"))
        stream.run(self.uploader(stream, name + "-b"))
        stream.run(self.reader(stream))
        if route:
            stream.run(self.module_client(stream, route))
        window = None
        try:
            stream.wait_for("kernel", 6)
            if route:
                stream.wait_for("module", 3)
            for _ in range(2):
                self.act(name, "reload")
                stream.wait_for("kernel", 4)
                if route:
                    stream.wait_for("module", 2)
            mods = self.modules()
            chain = self.dependents(name, mods) + [name]  # unloaded in this order, loaded back reversed
            window = [time.monotonic(), None]
            for m in chain:
                self.act(m, "unload")
            self.assertNotEqual(self.modules().get(name, {}).get("state"), "active")
            stream.wait_for("kernel", 6)
            for m in reversed(chain):
                self.act(m, "load")
            window[1] = time.monotonic()
            stream.wait_for("kernel", 6)
            if route:
                stream.wait_for("module", 3)
        finally:
            stream.stop()
        kernel_failed = [c for c in stream.calls if c[2] == "kernel" and not c[3]]
        self.assertEqual(kernel_failed, [], "%s: kernel requests failed" % name)
        module_failed = [c for c in stream.calls if c[2] == "module" and not c[3]]
        # While the module is unloaded its route is gone: 404, nothing else, and only then (a
        # module's routes come and go together: routes added one by one once gave a 405 between
        # webhooks' POST and GET of one path while it was loaded back).
        outside = [c for c in module_failed
                   if not (window and window[1] and c[1] >= window[0] and c[0] <= window[1] and c[4].startswith("404 "))]
        self.assertEqual(outside, [], "%s: its own route failed while loaded" % name)
        self.assertEqual(self.modules()[name]["state"], "active")


if __name__ == "__main__":
    main()

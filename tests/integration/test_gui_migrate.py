"""Storage backends and a store's placement in the web page, in a real browser
(tests/gui/migrate.test.mjs): a real mbyted with the webdav module and one backend on a real WebDAV
server (Apache httpd with mod_dav_fs, as test_davbackend), driven by Debian's chromium through
playwright-core (tests/setup/gui.sh), as test_gui.py. The administrator sees the backends with
their type, health and usage, and declares the WebDAV one there; a store's settings say where its files are
kept, and moving it to the WebDAV backend there is a task followed by a toast, after which the
settings, the server's disk and the API agree. The server stops with exit 0 (sanitizers)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from chunkdirs import objects  # noqa: E402
from test_davbackend import PASSWORD, USER, ApacheServer  # noqa: E402
from test_gui import GUI_DIR, run_browser  # noqa: E402

MODULES = {"taskmgr": True, "storeconfig": True, "multistore": True, "webdav": True}


class GuiMigrateTest(unittest.TestCase):
    def test_backends_and_a_store_moved_to_webdav_in_a_real_browser(self):
        if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
                or not os.path.exists("/usr/bin/chromium"):
            self.fail("browser test dependencies missing: run tests/setup/gui.sh")
        dav = ApacheServer(self).start()
        self.addCleanup(dav.cleanup)
        # No backend in webdav.yaml: the page declares "dav", its password a reference to this variable.
        srv = harness.Server(modules=MODULES, module_conf={"webdav": "backends: {}\n"},
                             env={"MBYTE_TEST_DAV_PASSWORD": PASSWORD})
        self.addCleanup(srv.cleanup)
        srv.start()
        for k, v in {"MBYTE_TEST_DAV_URL": dav.url, "MBYTE_TEST_DAV_USER": USER,
                     "MBYTE_TEST_DAV_PREFIX": dav.prefix}.items():
            os.environ[k] = v
            self.addCleanup(os.environ.pop, k, None)
        run_browser(self, srv, ["--test-concurrency=1", "migrate.test.mjs"], 300)
        # The declaration outlives a restart: dav is registered again and the moved store reads.
        srv.stop()
        srv.start()
        admin = srv.login()
        rows = {b["name"]: b for b in srv.request("GET", "/api/v1/admin/backends", token=admin).json()}
        self.assertEqual((rows["dav"]["state"], rows["dav"]["declared"], rows["dav"]["stores"]), ("up", "page", 1))
        # What the page said happened is on the WebDAV server's disk: the chunk files the test
        # uploaded (two of 300 KB, one of 5 MB: four chunks or more).
        self.assertGreaterEqual(len(objects(os.path.join(dav.dir, dav.prefix))), 4)
        srv.stop()


if __name__ == "__main__":
    harness.main()

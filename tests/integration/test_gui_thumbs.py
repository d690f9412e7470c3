"""The thumbnails on the web page (web/js/thumbs.js) in a real browser: tests/gui/thumbs.test.mjs
drives Debian's chromium through playwright-core (tests/setup/gui.sh) against a real mbyted with
every built module. This wrapper makes real pictures (tests/setup/thumbs.sh), uploads them, waits
until their thumbnails are made (so the listing carries ThumbHashes), runs the browser scenario
and stops the server asserting exit 0, so the session also runs under the sanitizers."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_gui import GUI_DIR, built_modules, run_browser  # noqa: E402
from test_thumbnails import make_files  # noqa: E402


class GuiThumbsTest(unittest.TestCase):
    def test_grid_hash_first_and_preview_in_a_real_browser(self):
        if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
                or not os.path.exists("/usr/bin/chromium"):
            self.fail("browser test dependencies missing: run tests/setup/gui.sh")
        files = make_files(self)
        srv = harness.Server(modules={m: True for m in built_modules()})
        try:
            srv.start()
            tok = srv.login()
            sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
            names = {"pics/photo.jpg": "photo.jpg", "pics/alpha.png": "alpha.png", "pics/anim.gif": "anim.gif",
                     "notes.md": "notes.md"}
            for path, src in names.items():
                with open(os.path.join(files, src), "rb") as f:
                    r = srv.request("PUT", "/api/v1/stores/%s/files/%s?parents=true" % (sid, path), f.read(),
                                    token=tok)
                self.assertIn(r.status, (200, 201), r)
            end = time.time() + 120
            for path in names:
                while srv.request("GET", "/api/v1/stores/%s/thumbnails/%s" % (sid, path), token=tok,
                                  headers={"Accept": "image/webp"}).header("X-Thumbnail") != "ready":
                    self.assertLess(time.time(), end, "no thumbnail for " + path)
                    time.sleep(0.3)
            run_browser(self, srv, ["thumbs.test.mjs"], 300)
            srv.stop()
        finally:
            srv.cleanup()


if __name__ == "__main__":
    harness.main()

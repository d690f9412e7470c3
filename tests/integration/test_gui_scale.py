"""A folder of 20,000 files in the web page (tests/gui/scale.test.mjs, issue 27): a real mbyted, driven
by Debian's chromium through playwright-core (tests/setup/gui.sh), the same setup as test_gui.py. The
page must show any part of the folder while holding a bounded number of rows. The server stops with
exit 0, so the session also runs under the sanitizers."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_gui import run_browser_test  # noqa: E402


class GuiScaleTest(unittest.TestCase):
    def test_big_folder_in_a_real_browser(self):
        run_browser_test(self, {"trash": True}, "scale.test.mjs", timeout=540)


if __name__ == "__main__":
    harness.main()

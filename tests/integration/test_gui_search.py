"""The search box of the web page in a real browser (tests/gui/search.test.mjs): a real mbyted with
the search module, driven by Debian's chromium through playwright-core (tests/setup/gui.sh), the
same setup as test_gui.py. The server stops with exit 0, so the session also runs under the
sanitizers."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_gui import run_browser_test  # noqa: E402


class GuiSearchTest(unittest.TestCase):
    def test_search_box_in_a_real_browser(self):
        run_browser_test(self, {"search": True, "trash": True, "sharing": True}, "search.test.mjs", timeout=300)


if __name__ == "__main__":
    harness.main()

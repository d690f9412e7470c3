#!/usr/bin/env python3
"""The Cluster section of the web page in a real browser (tests/gui/cluster.test.mjs): a real etcd
and two real mbyted (n1, n2) on loopback, as test_cluster.py starts them, and Debian's chromium
through playwright-core against n1 (tests/setup/gui.sh). The page shows both nodes up with their
address, capacity, the leader and the node serving it; when the browser test asks, this runner
kills n2 with SIGKILL, and the page's Refresh shows it gone once its lease expired. Both nodes'
processes are checked for sanitizer findings (n1 stops with exit 0)."""
import os
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_cluster import Etcd, cluster_conf, have_tools  # noqa: E402
from test_gui import GUI_DIR, run_browser  # noqa: E402


class GuiClusterTest(unittest.TestCase):
    def test_the_cluster_section_in_a_real_browser(self):
        if not have_tools():
            harness.missing_prerequisite(self, "etcd and haproxy are not installed (tests/setup/cluster.sh)")
        if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
                or not os.path.exists("/usr/bin/chromium"):
            self.fail("browser test dependencies missing: run tests/setup/gui.sh")
        etcd = Etcd().start()
        self.addCleanup(etcd.cleanup)
        nodes = {}
        for n in ("n1", "n2"):
            nodes[n] = harness.Server(conf=cluster_conf(etcd.url, n))
            self.addCleanup(nodes[n].cleanup)
            nodes[n].start()
        flags = tempfile.mkdtemp(prefix="mbyte-gui-cluster-")
        kill, done = os.path.join(flags, "kill"), os.path.join(flags, "killed")

        def killer():  # n2 dies when the browser test asks for it
            deadline = time.time() + 300
            while not os.path.exists(kill) and time.time() < deadline:
                time.sleep(0.05)
            if os.path.exists(kill):
                nodes["n2"].proc.send_signal(signal.SIGKILL)
                nodes["n2"].proc.wait()
                nodes["n2"].proc = None
                nodes["n2"].log.close()
                open(done, "w").close()
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        for k, v in {"MBYTE_TEST_NODES": "n1,n2", "MBYTE_TEST_KILL": kill, "MBYTE_TEST_KILL_DONE": done}.items():
            os.environ[k] = v
            self.addCleanup(os.environ.pop, k, None)
        run_browser(self, nodes["n1"], ["--test-concurrency=1", "cluster.test.mjs"], 300)
        t.join(timeout=5)
        self.assertTrue(os.path.exists(done), "the browser test asked for n2 to be killed")
        nodes["n1"].stop()


if __name__ == "__main__":
    harness.main()

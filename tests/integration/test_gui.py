"""Browser tests of the web page (tests/gui/gui.test.mjs): a real mbyted with every module that
was built, driven by Debian's chromium through playwright-core (installed by tests/setup/gui.sh).

This wrapper starts the server, hands the node test its URL, the admin credentials and the
artifacts directory (screenshots), and stops the server asserting exit 0, so the browser session
also runs under the sanitizers.
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

GUI_DIR = os.path.join(harness.SRC, "tests", "gui")
ARTIFACTS = os.environ.get("MBYTE_ARTIFACTS", os.path.join(os.getcwd(), "artifacts"))


# Modules that cannot start without a service outside the machine: vault refuses to load without
# a Vault server (test_vault starts the stand-in for it). Every other module is loaded here.
NEEDS_OUTSIDE = {"vault"}


def built_modules():
    """Every module .so in the module directory but NEEDS_OUTSIDE: the page is tested with all of
    them loaded."""
    try:
        return sorted(f[:-3] for f in os.listdir(harness.MODULE_DIR)
                      if f.endswith(".so") and f[:-3] not in NEEDS_OUTSIDE)
    except OSError:
        return []


def run_browser(test, srv, args, timeout):
    """Run `node --test ARGS` in tests/gui against srv with the admin's credentials; the test fails
    with the server log's tail when the browser scenarios do."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "MBYTE_URL": "http://127.0.0.1:%d" % srv.port,
        "MBYTE_ADMIN_USER": "admin",
        "MBYTE_ADMIN_PASSWORD": harness.ADMIN_PASSWORD,
        "MBYTE_ARTIFACTS": ARTIFACTS,
    })
    p = subprocess.run(["node", "--test"] + args, cwd=GUI_DIR, env=env, capture_output=True, text=True,
                       timeout=timeout)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    test.assertEqual(p.returncode, 0, "browser tests failed; server log tail:\n" + srv.read_log()[-2000:]
                     + "\nthe failing scenarios (all of node's output is above):\n" + failing_scenarios(p.stdout))


def failing_scenarios(tap, lines_each=25):
    """The `not ok` entries of node's TAP output with the first lines of each one's error: the end
    of the failure message, where a log cut to its head and tail still shows it."""
    out, take = [], 0
    for line in tap.splitlines():
        if line.lstrip().startswith("not ok "):
            take = lines_each
        if take:
            out.append(line)
            take -= 1
    return "\n".join(out) or "(none named: node failed before or after the scenarios)"


def run_browser_test(test, modules, script, timeout=540):
    """Start a server with `modules`, run tests/gui/<script> with node against it (run_browser),
    and check that the server stops with exit 0. test_gui_search.py uses it too."""
    if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
            or not os.path.exists("/usr/bin/chromium"):
        test.fail("browser test dependencies missing: run tests/setup/gui.sh")
    srv = harness.Server(modules=modules)
    try:
        srv.start()
        run_browser(test, srv, ["--test-concurrency=1", script], timeout)
        srv.stop()
    finally:
        srv.cleanup()


class GuiTest(unittest.TestCase):
    def test_web_page_scenarios_in_a_real_browser(self):
        run_browser_test(self, {m: True for m in built_modules()}, "gui.test.mjs")


if __name__ == "__main__":
    harness.main()

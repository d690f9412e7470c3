"""What a new user gets: mbyted started with the shipped conf.d as it is (only the listen
addresses and the data directory moved to free, temporary places) has every module that needs
nothing outside the machine switched on, and a module that is off says why in the shipped file."""
import ftplib
import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ADMIN_PASSWORD, MODULE_DIR, SRC, Server, ServerTest, free_port, main  # noqa: E402

# Issue 14: the modules that need no outside service. A module added later joins this list, or
# its line in conf.d/mbyte.yaml is `false` with a comment naming what it needs.
NEEDS_NOTHING_OUTSIDE = ["multistore", "taskmgr", "storeconfig", "quotas", "trash", "versioning", "integrity",
                         "sharing", "audit", "webhooks", "ftp", "webdav", "thumbnails", "search", "tags", "rclone"]
EXAMPLES = ["hello"]  # the example module of docs/modules.md: built, shipped off


def shipped_module_lines():
    """{name: (enabled, comment)} from the modules block of the shipped conf.d/mbyte.yaml."""
    out, inside = {}, False
    with open(os.path.join(SRC, "conf.d", "mbyte.yaml")) as f:
        for line in f:
            if re.match(r"^modules:", line):
                inside = True
                continue
            if inside:
                m = re.match(r"^\s+([a-z0-9_]+):\s*(true|false)\s*(?:#\s*(.*))?$", line)
                if not m:
                    if line.strip() and not line.startswith(" "):
                        break
                    continue
                out[m.group(1)] = (m.group(2) == "true", (m.group(3) or "").strip())
    return out


class ShippedServer(Server):
    """A real mbyted on the shipped conf.d, every file copied as it is."""

    def __init__(self):
        self.ftp_port = free_port()
        super().__init__(env={"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port})

    def write_config(self):
        shutil.rmtree(self.confdir)
        shutil.copytree(os.path.join(SRC, "conf.d"), self.confdir)


class ShippedDefaults(ServerTest):
    def setUp(self):
        self.srv = ShippedServer()
        self.srv.start()
        self.admin = self.srv.login()

    def test_the_shipped_configuration_switches_on_every_module_that_needs_nothing_outside(self):
        r = self.srv.request("GET", "/api/v1/admin/modules", token=self.admin)
        self.assertEqual(r.status, 200, r)
        state = {m["name"]: m["state"] for m in r.json()}
        for name in NEEDS_NOTHING_OUTSIDE:
            self.assertEqual(state.get(name), "active", "%s is not active with the shipped conf.d: %r" % (name, state))
        for name in EXAMPLES:
            self.assertNotEqual(state.get(name), "active", "the example module %s is on by default" % name)

    def test_every_built_module_is_on_in_the_shipped_file_or_says_what_it_needs(self):
        lines = shipped_module_lines()
        built = sorted(f[:-3] for f in os.listdir(MODULE_DIR) if f.endswith(".so"))
        self.assertTrue(built, "no modules in %s" % MODULE_DIR)
        for name in built:
            self.assertIn(name, lines, "module %s is built but not listed in conf.d/mbyte.yaml" % name)
            on, comment = lines[name]
            if not on and name not in EXAMPLES:
                self.assertRegex(comment, r"(?i)needs", "module %s is off in conf.d/mbyte.yaml without saying "
                                 "what outside service it needs" % name)

    def test_ftp_is_on_with_the_shipped_settings_and_the_admin_can_log_in_over_loopback(self):
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.srv.ftp_port, timeout=30)
        try:
            self.assertTrue(ftp.getwelcome().startswith("220"), ftp.getwelcome())
            self.assertTrue(ftp.login("admin", ADMIN_PASSWORD).startswith("230"))
            self.assertIn("Home", ftp.nlst())
        finally:
            ftp.close()


class FirstStart(unittest.TestCase):
    def test_the_generated_admin_password_is_shown_once_in_a_box_with_the_url_and_it_logs_in(self):
        srv = Server(env={"MBYTE_ADMIN_PASSWORD": ""})
        try:
            srv.start(wait=False)
            deadline = time.time() + 60
            while "+\n\n" not in srv.read_log() and time.time() < deadline and srv.proc.poll() is None:
                time.sleep(0.05)
            srv.wait_ready()
            out = srv.read_log()
            box = re.search(r"\n\+=+\+\n((?:\|.*\|\n)+)\+=+\+\n", out)
            self.assertTrue(box, out)
            text = box.group(1)
            self.assertIn("http://127.0.0.1:%d/" % srv.port, text)
            self.assertIn("mbytectl user passwd admin", text)
            pw = re.search(r"password\s*\|\n\|\s+([0-9a-f]{32})\s+\|", text)
            self.assertTrue(pw, text)
            pw = pw.group(1)
            self.assertEqual(out.count(pw), 1, "the password is printed more than once")
            token = srv.login("admin", pw)
            self.assertTrue(token)
            srv.stop()
            srv.start()
            self.assertEqual(srv.read_log().count("First start"), 1, "the box came again on a second start")
            srv.login("admin", pw)
            srv.stop()
        finally:
            srv.cleanup()


if __name__ == "__main__":
    main()

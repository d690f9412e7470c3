"""Browser test of the FTP access panel (tests/gui/gui_ftp.test.mjs): a real mbyted with the ftp
module listening on ports of the test's own, driven by Debian's chromium through playwright-core
(installed by tests/setup/gui.sh), the same setup as test_gui.py.

The panel must show the listener the server really has (not the shipped 2121), and an FTPS client
given exactly what the panel showed logs in."""
import ftplib
import os
import random
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

GUI_DIR = os.path.join(harness.SRC, "tests", "gui")
ARTIFACTS = os.environ.get("MBYTE_ARTIFACTS", os.path.join(os.getcwd(), "artifacts"))


class GuiFtpTest(unittest.TestCase):
    def test_ftp_panel_shows_the_real_listener_with_copy_buttons(self):
        if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
                or not os.path.exists("/usr/bin/chromium"):
            self.fail("browser test dependencies missing: run tests/setup/gui.sh")
        port, iport = harness.free_port(), harness.free_port()
        base = random.randrange(20000, 60000, 100)
        pasv = "%d-%d" % (base, base + 99)
        srv = harness.Server(modules={"ftp": True}, env={
            "MBYTE_FTP_LISTEN": "127.0.0.1:%d" % port, "MBYTE_FTP_IMPLICIT_LISTEN": "127.0.0.1:%d" % iport,
            "MBYTE_FTP_PASV_PORTS": pasv})
        try:
            srv.start()
            os.makedirs(ARTIFACTS, exist_ok=True)
            env = dict(os.environ)
            env.update({
                "MBYTE_URL": "http://127.0.0.1:%d" % srv.port,
                "MBYTE_ADMIN_USER": "admin",
                "MBYTE_ADMIN_PASSWORD": harness.ADMIN_PASSWORD,
                "MBYTE_ARTIFACTS": ARTIFACTS,
                "MBYTE_FTP_PORT": str(port),
                "MBYTE_FTP_IMPLICIT_PORT": str(iport),
                "MBYTE_FTP_PASV_PORTS": pasv,
            })
            p = subprocess.run(["node", "--test", "--test-concurrency=1", "gui_ftp.test.mjs"], cwd=GUI_DIR,
                               env=env, capture_output=True, text=True, timeout=300)
            sys.stdout.write(p.stdout)
            sys.stderr.write(p.stderr)
            self.assertEqual(p.returncode, 0, "browser test failed (see above); server log tail:\n" +
                             srv.read_log()[-3000:])
            # What the panel showed (the browser test checked it against these) is enough to log in.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            f = ftplib.FTP_TLS(context=ctx, timeout=30)
            f.connect("127.0.0.1", port)
            f.auth()
            self.assertTrue(f.login("admin", harness.ADMIN_PASSWORD).startswith("230"))
            f.quit()
            srv.stop()
        finally:
            srv.cleanup()


if __name__ == "__main__":
    harness.main()

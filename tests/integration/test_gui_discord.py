"""Browser test of the Discord view (tests/gui/discord.test.mjs): a real mbyted with the discord
module pointed at tests/tools/fakediscord.py (the stand-in for Discord's API v10), driven by
Debian's chromium through playwright-core (tests/setup/gui.sh), like test_gui.py. What the page
did is then checked through the API: the day files are in the folder the user typed."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402
from fakediscord import FakeDiscord  # noqa: E402

GUI_DIR = os.path.join(harness.SRC, "tests", "gui")
ARTIFACTS = os.environ.get("MBYTE_ARTIFACTS", os.path.join(os.getcwd(), "artifacts"))
CH = "800000000000000001"


class GuiDiscordTest(unittest.TestCase):
    def test_connect_run_and_see_the_state_in_the_discord_view(self):
        if not os.path.isdir(os.path.join(GUI_DIR, "node_modules", "playwright-core")) \
                or not os.path.exists("/usr/bin/chromium"):
            self.fail("browser test dependencies missing: run tests/setup/gui.sh")
        fake = FakeDiscord()
        fake.add_channel(CH)
        for i in range(37):
            fake.add_message(CH, "message %d" % i)
        conf = ("bot_token: %s\napi_base: %s\ncdn_hosts: [\"127.0.0.1\"]\npoll_interval: 0\n"
                % (fake.token, fake.api_base))
        srv = harness.Server(modules={"discord": True}, module_conf={"discord": conf})
        try:
            srv.start()
            os.makedirs(ARTIFACTS, exist_ok=True)
            env = dict(os.environ)
            env.update({"MBYTE_URL": "http://127.0.0.1:%d" % srv.port, "MBYTE_ADMIN_USER": "admin",
                        "MBYTE_ADMIN_PASSWORD": harness.ADMIN_PASSWORD, "MBYTE_ARTIFACTS": ARTIFACTS,
                        "MBYTE_DISCORD_CHANNEL": CH, "MBYTE_DISCORD_MESSAGES": "37"})
            p = subprocess.run(["node", "--test", "--test-concurrency=1", "discord.test.mjs"], cwd=GUI_DIR,
                               env=env, capture_output=True, text=True, timeout=300)
            sys.stdout.write(p.stdout)
            sys.stderr.write(p.stderr)
            self.assertEqual(p.returncode, 0, "browser test failed (see above); server log tail:\n" +
                             srv.read_log()[-3000:])
            tok = srv.login()
            sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]
            r = srv.request("GET", "/api/v1/stores/%d/list/chat/backup/%s?recursive=true" % (sid, CH), token=tok)
            self.assertEqual(r.status, 200, r)
            names = [e["name"] for e in r.json()["entries"]]
            self.assertTrue(any(n.endswith(".jsonl") for n in names), names)
            self.assertTrue(any(n.endswith(".md") for n in names), names)
            srv.stop()
        finally:
            srv.cleanup()
            fake.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

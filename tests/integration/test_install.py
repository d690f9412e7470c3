"""`meson install` into a temporary root (DESTDIR): the layout of docs/operations.md "Install on a
server", an installed mbyted that starts with no arguments from it and loads every shipped module,
a configuration that a second install never overwrites, and a systemd unit that
`systemd-analyze verify` accepts."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, free_port, main  # noqa: E402
from test_defaults import NEEDS_NOTHING_OUTSIDE  # noqa: E402

BUILD = os.environ.get("MBYTE_BUILD_ROOT")


def layout():
    """The install paths meson configured for this build: prefix, bindir, sysconfdir, ... (absolute)."""
    out = subprocess.run(["meson", "introspect", "--buildoptions", BUILD], capture_output=True, text=True, check=True)
    opts = {o["name"]: o["value"] for o in json.loads(out.stdout)}
    prefix = opts["prefix"]
    out = {k: os.path.join(prefix, opts[k]) for k in ("bindir", "sysconfdir", "libdir", "datadir", "localstatedir")}
    out["prefix"] = prefix
    return out


def yaml_value(path, key):
    with open(path) as f:
        for line in f:
            m = re.match(r"^%s:\s*(\S+)" % key, line)
            if m:
                return m.group(1)
    raise AssertionError("%s has no %s" % (path, key))


class Installed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise AssertionError("MBYTE_BUILD_ROOT is not set (tests/meson.build sets it)")
        cls.root = tempfile.mkdtemp(prefix="mbyte-install-")
        cls.paths = layout()
        cls.install()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    @classmethod
    def install(cls):
        r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", cls.root],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("meson install failed:\n%s%s" % (r.stdout[-3000:], r.stderr[-3000:]))
        return r.stdout

    def at(self, path):
        """An installed path inside the temporary root."""
        return self.root + path

    def test_the_installed_mbyted_starts_with_no_arguments_and_loads_every_shipped_module(self):
        conf = self.at(os.path.join(self.paths["sysconfdir"], "mbyte"))
        mbyted = self.at(os.path.join(self.paths["bindir"], "mbyted"))
        mbyte_yaml = os.path.join(conf, "mbyte.yaml")
        # The installed mbyte.yaml names the installed places, not the source tree's.
        modules = yaml_value(mbyte_yaml, "module_dir")
        web = yaml_value(mbyte_yaml, "web_dir")
        lua = yaml_value(mbyte_yaml, "lua_dir")
        data = yaml_value(mbyte_yaml, "data_dir")
        self.assertEqual(modules, os.path.join(self.paths["libdir"], "mbyte", "modules"))
        self.assertEqual(data, os.path.join(self.paths["localstatedir"], "lib", "mbyte"))
        self.assertTrue(os.path.isfile(self.at(os.path.join(modules, "ftp.so"))))
        self.assertTrue(os.path.isfile(self.at(os.path.join(web, "index.html"))))
        self.assertTrue(os.path.isdir(self.at(lua)))

        srv = Server()
        ftp_port = free_port()
        try:
            # No arguments: the configuration is found where it was installed. Only the paths
            # that point into the temporary root are moved (a real install has them at /).
            env = dict(srv.env(), MBYTE_CONFIG=conf, MBYTE_MODULE_DIR=self.at(modules), MBYTE_WEB_DIR=self.at(web),
                       MBYTE_LUA_DIR=self.at(lua), MBYTE_FTP_LISTEN="127.0.0.1:%d" % ftp_port)
            srv.log = open(srv.log_path, "ab")
            srv.proc = subprocess.Popen([mbyted], env=env, stdout=srv.log, stderr=subprocess.STDOUT)
            srv.wait_ready()
            page = srv.request("GET", "/")
            self.assertEqual(page.status, 200, page)
            with open(self.at(os.path.join(web, "index.html")), "rb") as f:
                self.assertEqual(page.body, f.read())
            admin = srv.login()
            r = srv.request("GET", "/api/v1/admin/modules", token=admin)
            state = {m["name"]: m["state"] for m in r.json()}
            for name in NEEDS_NOTHING_OUTSIDE:
                self.assertEqual(state.get(name), "active", "%s: %r\n%s" % (name, state, srv.read_log()[-3000:]))
            # The installed mbytectl reaches the running server through the data directory.
            ctl = subprocess.run([self.at(os.path.join(self.paths["bindir"], "mbytectl")), "--data", srv.data, "status"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(ctl.returncode, 0, ctl.stderr)
            srv.stop()
        finally:
            srv.cleanup()

    def test_mbyted_looks_for_its_configuration_in_the_installed_place(self):
        mbyted = self.at(os.path.join(self.paths["bindir"], "mbyted"))
        r = subprocess.run([mbyted, "--help"], env=Server().env(), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("else %s\n" % os.path.join(self.paths["sysconfdir"], "mbyte"), r.stderr)
        missing = os.path.join(self.root, "no-such-conf")
        r = subprocess.run([mbyted], env=dict(Server().env(), MBYTE_CONFIG=missing), capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(missing, r.stderr)

    def test_a_second_install_keeps_the_administrators_settings(self):
        mbyte_yaml = self.at(os.path.join(self.paths["sysconfdir"], "mbyte", "mbyte.yaml"))
        with open(mbyte_yaml, "a") as f:
            f.write("# changed by the administrator\n")
        self.install()
        with open(mbyte_yaml) as f:
            self.assertTrue(f.read().endswith("# changed by the administrator\n"))

    def test_the_systemd_unit_passes_systemd_analyze_verify_and_is_sandboxed(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            raise AssertionError("systemd-analyze is missing (tests/setup/install.sh installs systemd)")
        unit = self.at(os.path.join(self.paths["prefix"], "lib", "systemd", "system", "mbyte.service"))
        with open(unit) as f:
            text = f.read()
        for line in ("User=mbyte", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                     "ReadWritePaths=" + os.path.join(self.paths["localstatedir"], "lib", "mbyte"),
                     "ExecReload=/bin/kill -HUP $MAINPID", "LimitNOFILE="):
            self.assertIn(line, text)
        # verify checks that ExecStart's program exists: point it at the installed copy.
        bindir = self.paths["bindir"]
        checked = os.path.join(self.root, "mbyte.service")
        with open(checked, "w") as f:
            f.write(text.replace("ExecStart=%s/" % bindir, "ExecStart=%s%s/" % (self.root, bindir)))
        r = subprocess.run([analyze, "verify", checked], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "", "systemd-analyze verify warns:\n" + r.stderr)
        sysusers = self.at(os.path.join(self.paths["prefix"], "lib", "sysusers.d", "mbyte.conf"))
        with open(sysusers) as f:
            self.assertRegex(f.read(), r"(?m)^u mbyte ")


if __name__ == "__main__":
    main()

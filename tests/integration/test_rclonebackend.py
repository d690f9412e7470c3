#!/usr/bin/env python3
"""External storage through rclone (issue 21): stores placed on the rclone module's backends
(modules/rclone), which talk to a real `rclone rcd` (Debian's rclone, tests/setup/webdav.sh) over
its remote-control API. Two ways to reach rcd: one mbyted starts and supervises itself, and one
the test runs (url, user and a password given as a file: reference). Two remotes: a local
directory, and a WebDAV server (`rclone serve webdav` with Basic auth) behind an rclone webdav
remote. What a user sees: bytes read back (whole and ranges), the objects in the remote's
directory as <aa>/<sha256>, the collector removing them, GET /api/v1/admin/backends (type
rclone, up; down while rcd is dead; up again once the supervisor started it anew), an rcd killed
during uploads losing nothing acknowledged, encrypted stores sending only ciphertext, and the rc
password kept off command lines and out of the log."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import apache_dav  # noqa: E402
from harness import free_port, missing_prerequisite, main  # noqa: E402
from chunkdirs import (encrypted_reads_back_as_ciphertext, master_key_conf, objects,  # noqa: E402
                       reads_back_and_is_collected, upload_several)
from storeutil import put, uploads_cut_by_a_crash  # noqa: E402
from test_extstore import MARKER, ExternalStoreTest, make_store  # noqa: E402

MODULES = {"taskmgr": True, "storeconfig": True, "multistore": True, "rclone": True}
DAV_USER, DAV_PASSWORD = "mbyte", "dav-password-51c9"
RC_USER, RC_PASSWORD = "rcadmin", "rc-password-0e8a7"
RCLONE = shutil.which("rclone")


def rclone_obscure(secret):
    return subprocess.run([RCLONE, "obscure", secret], check=True, capture_output=True, text=True).stdout.strip()


class LocalRemote:
    """An rclone remote of type local, [loc] in the rclone.conf; chunks under <dir>/chunks."""

    def __init__(self, work):
        self.dir = os.path.join(work, "remote")
        os.makedirs(self.dir)
        self.remote = "loc:" + self.dir + "/chunks"
        self.top = os.path.join(self.dir, "chunks")
        self.conf = "[loc]\ntype = local\n"

    def cleanup(self):
        pass


class WebdavRemote:
    """`rclone serve webdav` of a directory, with Basic auth, as [dav] in the rclone.conf (the
    password obscured, as rclone keeps it); chunks under <dir>/c."""

    def __init__(self, work):
        self.work = work
        self.dir = os.path.join(work, "davroot")
        os.makedirs(self.dir)
        self.port = free_port()
        self.log = open(os.path.join(work, "serve-webdav.log"), "ab")
        self.start()
        self.remote = "dav:c"
        self.top = os.path.join(self.dir, "c")
        self.conf = "[dav]\ntype = webdav\nurl = http://127.0.0.1:%d/\nvendor = other\nuser = %s\npass = %s\n" % (
            self.port, DAV_USER, rclone_obscure(DAV_PASSWORD))

    def start(self, read_only=False):
        self.proc = subprocess.Popen([RCLONE, "serve", "webdav", self.dir, "--addr", "127.0.0.1:%d" % self.port,
                                      "--user", DAV_USER, "--pass", DAV_PASSWORD,
                                      "--config", os.path.join(self.work, "empty.conf")] +
                                     (["--read-only"] if read_only else []),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        apache_dav.wait_listening(self.port, self.proc, "rclone serve webdav")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.kill()
        self.log.close()


class Rcd:
    """An rcd that the test runs itself (url mode): --rc-serve, the rc user and password in its
    environment. kill() and start() again keep its port, as a service that crashed and came back."""

    def __init__(self, work, config):
        self.work, self.config = work, config
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.log = open(os.path.join(work, "rcd.log"), "ab")

    def start(self):
        env = dict(os.environ, RCLONE_RC_USER=RC_USER, RCLONE_RC_PASS=RC_PASSWORD)
        self.proc = subprocess.Popen([RCLONE, "rcd", "--rc-addr", "127.0.0.1:%d" % self.port, "--rc-serve",
                                      "--config", self.config], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        apache_dav.wait_listening(self.port, self.proc, "rclone rcd")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def cleanup(self):
        self.kill()
        self.log.close()


class Service:
    """What the test owns beside mbyted: the work directory, the remote, its own rcd if any."""

    def __init__(self, work, remote, rcd):
        self.work, self.remote, self.rcd = work, remote, rcd

    def cleanup(self):
        if self.rcd:
            self.rcd.cleanup()
        self.remote.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)


def children(pid):
    """Pids of a process's children (every thread's)."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            out += [int(p) for p in f.read().split()]
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class RcloneBackendTest(ExternalStoreTest):
    """A local remote behind an rcd that mbyted starts and supervises. The program mbyted starts
    is a wrapper that waits while a hold file exists, then execs rclone (same pid): a test holds
    the next start to see the backend down, then lets it go and sees it up again."""
    remote_class = LocalRemote
    supervised = True

    def setUp(self):
        if not RCLONE:
            missing_prerequisite(self, "rclone is not installed (tests/setup/webdav.sh)")
        work = tempfile.mkdtemp(prefix="mbyte-rclone-")
        remote = self.remote_class(work)
        self.rconf = os.path.join(work, "rclone.conf")
        with open(self.rconf, "w") as f:
            f.write(remote.conf)
        rcd = None if self.supervised else Rcd(work, self.rconf).start()
        self.service = Service(work, remote, rcd)
        self.remote, self.rcd = remote, rcd
        conf = "backends:\n  cloud:\n    remote: \"%s\"\n" % remote.remote
        if self.supervised:
            self.hold = os.path.join(work, "hold")
            wrapper = os.path.join(work, "rclone-wrapper")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nwhile [ -e '%s' ]; do sleep 0.02; done\nexec '%s' \"$@\"\n" % (self.hold, RCLONE))
            os.chmod(wrapper, 0o755)
            conf += "rclone: %s\nconfig: %s\nrestart_base_ms: 50\n" % (wrapper, self.rconf)
        else:
            secret = os.path.join(work, "rc.secret")
            with open(secret, "w") as f:
                f.write(RC_PASSWORD + "\n")
            os.chmod(secret, 0o600)
            conf += "url: %s\nuser: %s\npassword: file:%s\n" % (rcd.url, RC_USER, secret)
        conf += "retries: 2\nretry_base_ms: 50\ntimeout_ms: 20000\n"
        self.modules, self.module_conf = MODULES, {"rclone": conf}
        self.start_server()

    # ---- what the remote holds ----
    def objects(self):
        """{relative path: bytes} of every chunk object in the remote's directory."""
        return objects(self.remote.top)

    def backend_row(self):
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return {b["name"]: b for b in r.json()}["cloud"]

    def wait_up(self):
        deadline = time.time() + 60
        while self.backend_row()["state"] != "up":
            self.assertLess(time.time(), deadline, "the rclone backend did not come back up")
            time.sleep(0.05)

    # ---- the rcd mbyted supervises ----
    def rcd_pid(self):
        """The running rcd's pid (the wrapper execs rclone, so it is mbyted's child)."""
        deadline = time.time() + 60
        while True:
            for pid in children(self.srv.proc.pid):
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
                if alive(pid) and b"rcd" in argv and argv[0].endswith(b"rclone"):
                    return pid
            self.assertLess(time.time(), deadline, "mbyted runs no rclone rcd")
            time.sleep(0.05)

    def kill_rcd(self):
        if self.supervised:
            with open(self.hold, "w"):
                pass
            pid = self.rcd_pid()
            os.kill(pid, signal.SIGKILL)
        else:
            self.rcd.kill()

    def restart_rcd(self):
        if self.supervised:
            os.unlink(self.hold)
        else:
            self.rcd.start()
        self.wait_up()

    # ---- the tests ----
    def test_store_reads_back_whole_and_ranges_and_the_collector_removes_its_objects(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "cloud"})
        reads_back_and_is_collected(self, sid, self.remote.top)

    def test_admin_backends_shows_rclone_up_then_down_while_rcd_is_dead_then_up_again(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "cloud"})
        files = upload_several(self, sid)
        row, objs = self.backend_row(), self.objects()
        self.assertEqual((row["type"], row["state"], row["stores"]), ("rclone", "up", 1))
        self.assertEqual((row["objects"], row["bytes"]), (len(objs), sum(len(b) for b in objs.values())))
        self.kill_rcd()
        row = self.backend_row()
        self.assertEqual((row["type"], row["state"], row["objects"]), ("rclone", "down", None))
        r = self.srv.request("GET", self.file_url(sid, "f2.bin"), token=self.user)
        self.assertNotEqual(r.status, 200, "a read succeeded with rcd dead")
        self.restart_rcd()  # supervised: mbyted starts it again by itself once the hold is gone
        self.assertEqual(self.backend_row()["objects"], len(objs))
        for name, data in files.items():
            self.assertEqual(self.srv.request("GET", self.file_url(sid, name), token=self.user).body, data, name)

    def test_rcd_killed_during_8_uploads_acknowledges_nothing_it_lost(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "cloud"})
        uploads_cut_by_a_crash(self, self.srv, self.admin, self.user, sid, lambda: len(self.objects()),
                               self.kill_rcd, self.restart_rcd, send_again=True)

    def test_the_rc_password_is_in_rcds_environment_only_and_rcd_ends_with_mbyted(self):
        pid = self.rcd_pid()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        password = env.get(b"RCLONE_RC_PASS", b"")
        self.assertGreaterEqual(len(password), 32, "rcd was started without a random rc password")
        self.assertFalse([a for a in argv if password in a or a.startswith(b"--rc-pass") or a == b"--rc-no-auth"],
                         argv)
        self.assertIn(b"127.0.0.1:", b" ".join(argv))  # loopback only
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "cloud"})
        self.assertEqual(put(self.srv, self.user, sid, "a.bin", os.urandom(100000)).status, 201)
        self.srv.stop()
        self.assertFalse(alive(pid), "rclone rcd outlived mbyted")
        with open(self.srv.log_path, "rb") as f:
            log = f.read()
        self.assertIn(b"rclone rcd started", log)
        self.assertNotIn(password, log, "the rc password is in the server's log")


class RcloneWebdavTest(RcloneBackendTest):
    """A WebDAV remote (rclone serve webdav) behind an rcd that the test runs (url mode)."""
    remote_class = WebdavRemote
    supervised = False
    test_the_rc_password_is_in_rcds_environment_only_and_rcd_ends_with_mbyted = None

    def test_a_wrong_rc_password_fails_the_upload_with_a_problem_and_acknowledges_nothing(self):
        path = os.path.join(self.srv.confdir, "rclone.yaml")
        with open(path) as f:
            conf = f.read()
        with open(path, "w") as f:
            f.write(conf.replace("user: %s" % RC_USER, "user: someone-else"))
        r = self.srv.request("POST", "/api/v1/admin/config/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        sid = make_store(self, self.srv, self.user, "Bad", {"backend": "cloud"})
        p = self.assertProblem(put(self.srv, self.user, sid, "a.bin", os.urandom(300000)), 500, "cloud")
        self.assertIn("rc user or password", p["detail"])
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).status, 404)
        self.assertEqual(self.objects(), {})
        with open(self.srv.log_path, "rb") as f:
            self.assertNotIn(RC_PASSWORD.encode(), f.read(), "the rc password is in the server's log")


    def test_a_remote_that_refuses_writes_fails_the_upload_and_acknowledges_nothing(self):
        self.remote.kill()
        self.remote.start(read_only=True)  # listings and stats work, every upload is refused
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "cloud"})
        self.assertEqual(self.backend_row()["state"], "up")
        for n in (100000, 3 * 1024 * 1024):
            p = self.assertProblem(put(self.srv, self.user, sid, "a.bin", os.urandom(n)), 500, "cloud")
            self.assertIn("uploadfile", p["detail"])
            self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).status, 404)
        self.assertEqual(self.objects(), {})


class RcloneLocalExternalTest(RcloneBackendTest):
    """A local remote behind an rcd that the test runs: the kill test with the rcd restarted by
    the test, on its port."""
    supervised = False
    test_store_reads_back_whole_and_ranges_and_the_collector_removes_its_objects = None
    test_the_rc_password_is_in_rcds_environment_only_and_rcd_ends_with_mbyted = None


class RcloneWebdavSupervisedTest(RcloneBackendTest):
    """A WebDAV remote behind the rcd mbyted supervises: the way in most installs."""
    remote_class = WebdavRemote
    test_the_rc_password_is_in_rcds_environment_only_and_rcd_ends_with_mbyted = None
    test_admin_backends_shows_rclone_up_then_down_while_rcd_is_dead_then_up_again = None


class RcloneEncryptedTest(RcloneBackendTest):
    """{"encrypt": true} over the rclone backend: what reaches the remote is ciphertext."""

    def conf(self):
        return master_key_conf(self.service.work)

    def test_every_object_is_ciphertext_and_reads_back(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "cloud", "encrypt": True})
        encrypted_reads_back_as_ciphertext(self, sid, self.remote.top)
        for root, _, files in os.walk(self.remote.dir):  # nothing else rclone wrote holds it either
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    self.assertNotIn(MARKER[:12], fh.read(), f)

    test_store_reads_back_whole_and_ranges_and_the_collector_removes_its_objects = None
    test_admin_backends_shows_rclone_up_then_down_while_rcd_is_dead_then_up_again = None
    test_rcd_killed_during_8_uploads_acknowledges_nothing_it_lost = None
    test_the_rc_password_is_in_rcds_environment_only_and_rcd_ends_with_mbyted = None


if __name__ == "__main__":
    main()

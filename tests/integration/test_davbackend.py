#!/usr/bin/env python3
"""External storage on WebDAV (issue 21): stores placed on the webdav module's client backends
(modules/webdav/dav_backend.c) against two real WebDAV servers, Apache httpd with mod_dav_fs
and `rclone serve webdav` (tests/setup/webdav.sh installs both), each with Basic auth. What a
user sees: bytes read back (whole and ranges), the objects in the server's directory as
<prefix><aa>/<sha256>, the collector removing them, GET /api/v1/admin/backends, a wrong
password failing the upload with a problem and nothing acknowledged, a server killed during
uploads losing nothing that was acknowledged, and encrypted stores sending only ciphertext."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
import apache_dav  # noqa: E402
from harness import free_port, missing_prerequisite, main  # noqa: E402
from chunkdirs import (encrypted_reads_back_as_ciphertext, master_key_conf, objects,  # noqa: E402
                       reads_back_and_is_collected, upload_several)
from storeutil import put, uploads_cut_by_a_crash  # noqa: E402
from test_extstore import ExternalStoreTest, make_store  # noqa: E402

USER, PASSWORD = "mbyte", "dav-password-7d1f"
WRONG = "not-the-dav-password-93a"
MODULES = {"taskmgr": True, "storeconfig": True, "multistore": True, "webdav": True}


class ApacheServer:
    """Apache with mod_dav_fs; chunks under <dir>/<prefix>."""
    kind = "apache"

    def __init__(self, test):
        if not apache_dav.available():
            missing_prerequisite(test, "apache2 with mod_dav_fs is not installed (tests/setup/webdav.sh)")
        self.work = tempfile.mkdtemp(prefix="mbyte-davsrv-")
        self.srv = apache_dav.Apache(self.work, USER, PASSWORD, free_port())
        self.dir = self.srv.dav
        self.url = self.srv.url.rstrip("/")
        self.prefix = "c/"

    def start(self):
        self.srv.start()
        return self

    def kill(self):
        self.srv.kill()

    def cleanup(self):
        self.srv.kill()
        self.srv.stop()
        shutil.rmtree(self.work, ignore_errors=True)


class RcloneServer:
    """rclone serve webdav of a plain directory; chunks at its top (no prefix)."""
    kind = "rclone"

    def __init__(self, test):
        if not shutil.which("rclone"):
            missing_prerequisite(test, "rclone is not installed (tests/setup/webdav.sh)")
        self.work = tempfile.mkdtemp(prefix="mbyte-davsrv-")
        self.dir = os.path.join(self.work, "root")
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.prefix = ""
        self.proc = None
        self.log = open(os.path.join(self.work, "rclone.log"), "ab")

    def start(self):
        env = dict(os.environ, RCLONE_CONFIG=os.path.join(self.work, "rclone.conf"))
        self.proc = subprocess.Popen(["rclone", "serve", "webdav", self.dir, "--addr", "127.0.0.1:%d" % self.port,
                                      "--user", USER, "--pass", PASSWORD], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        apache_dav.wait_listening(self.port, self.proc, "rclone serve webdav")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def cleanup(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


class Redirector:
    """A plain HTTP server that answers every request with a 307 to another host (localhost on
    another port), where a second server writes down whatever reaches it. A backend follows no
    redirect, so its password never goes to a host it was not configured with."""

    def __init__(self):
        self.reached = []
        self.sink = self.serve(self.note)
        self.port = free_port()
        self.front = self.serve(self.redirect, self.port)
        self.url = "http://127.0.0.1:%d/dav" % self.port

    def serve(self, answer, port=0):
        class Handler(BaseHTTPRequestHandler):
            def __getattr__(self, name):
                if name.startswith("do_"):
                    return lambda: answer(self)
                raise AttributeError(name)

            def log_message(self, *args):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    def redirect(self, h):
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        h.send_response(307)
        h.send_header("Location", "http://localhost:%d%s" % (self.sink.server_address[1], h.path))
        h.send_header("Content-Length", "0")
        h.end_headers()

    def note(self, h):
        self.reached.append((h.command, h.path, h.headers.get("Authorization")))
        h.send_response(201)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def cleanup(self):
        for srv in (self.front, self.sink):
            srv.shutdown()
            srv.server_close()


def backend_conf(name, url, password, prefix=""):
    return "  %s:\n    url: %s\n    user: %s\n    password: %s\n    prefix: \"%s\"\n" % (name, url, USER, password,
                                                                                         prefix)


class DavBackendTest(ExternalStoreTest):
    """One server per test: Apache in this class, rclone in RcloneBackendTest."""
    server_class = ApacheServer
    # Backends beside "dav" that some tests declare: one whose server is not running, one
    # with a wrong password. Only there, so the collector's listing in the others sees all up.
    extra = {
        "test_admin_backends_shows_it_up_with_its_objects_and_one_without_server_down": ["gone"],
        "test_a_wrong_password_fails_the_upload_with_a_problem_and_acknowledges_nothing": ["bad"],
        "test_a_new_password_applies_on_config_reload_and_a_new_backend_name_needs_a_module_reload": ["bad"],
        "test_a_redirect_to_another_host_is_not_followed_and_the_upload_fails": ["redirect"],
    }

    def setUp(self):
        self.dav = self.service = self.server_class(self).start()
        # The password as a reference (docs/operations.md "Secrets"): the kernel resolves it.
        secret = os.path.join(self.dav.work, "dav.secret")
        with open(secret, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(secret, 0o600)
        conf = "backends:\n" + backend_conf("dav", self.dav.url, "file:" + secret, self.dav.prefix)
        extra = self.extra.get(self._testMethodName, [])
        if "gone" in extra:
            conf += backend_conf("davgone", "http://127.0.0.1:%d/dav" % free_port(), PASSWORD)
        if "bad" in extra:
            conf += backend_conf("davbad", self.dav.url, WRONG, "bad/")
        if "redirect" in extra:
            self.redirector = Redirector()
            self.addCleanup(self.redirector.cleanup)
            conf += backend_conf("davmoved", self.redirector.url, PASSWORD)
        conf += "backend_retries: 2\nbackend_retry_base_ms: 50\nbackend_timeout_ms: 20000\n"
        self.modules, self.module_conf = MODULES, {"webdav": conf}
        self.start_server()

    def objects(self, top=None):
        """{relative path: bytes} of every chunk object in the server's directory."""
        return objects(top or os.path.join(self.dav.dir, self.dav.prefix))

    def test_store_reads_back_whole_and_ranges_and_the_collector_removes_its_objects(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "dav"})
        r = self.srv.request("GET", "/api/v1/stores/%d/config" % sid, token=self.user)
        self.assertEqual(r.json()["placement"], {"backend": "dav", "encrypt": False})
        reads_back_and_is_collected(self, sid, os.path.join(self.dav.dir, self.dav.prefix))

    def test_a_backend_declared_through_the_api_is_checked_by_its_module_kept_and_removed(self):
        secret = "file:" + os.path.join(self.dav.work, "dav.secret")
        good = {"url": self.dav.url, "user": USER, "password": secret, "prefix": "two/"}

        def declare(body, token=None):
            return self.srv.request("POST", "/api/v1/admin/backends", body, token=token or self.admin)

        def names():
            return {b["name"] for b in self.srv.request("GET", "/api/v1/admin/backends", token=self.admin).json()}
        self.assertProblem(declare({"name": "dav2", "type": "webdav", "settings": good}, self.user), 403)
        self.assertProblem(declare({"name": "dav2", "type": "s3", "settings": good}), 409, "not a loaded backend module")
        self.assertProblem(declare({"name": "local", "type": "webdav", "settings": good}), 400, "not 'local'")
        self.assertProblem(declare({"name": "dav", "type": "webdav", "settings": good}), 409, "exists already")
        self.assertProblem(declare({"name": "dav2", "type": "webdav", "settings": dict(good, password=PASSWORD)}),
                           400, "settings.password: a reference")
        # the module checks the settings with its own words, and nothing of a refused one stays
        self.assertProblem(declare({"name": "dav2", "type": "webdav", "settings": dict(good, url="ftp://x")}), 400,
                           "backends.dav2.url must be http[s]://")
        self.assertProblem(declare({"name": "dav2", "type": "webdav", "settings": dict(good, colour="red")}), 400,
                           "colour")
        self.assertNotIn("dav2", names())
        r = declare({"name": "dav2", "type": "webdav", "settings": good})
        self.assertEqual(r.status, 201, r)
        self.assertEqual({k: r.json().get(k) for k in ("name", "type", "state", "declared", "stores")},
                         {"name": "dav2", "type": "webdav", "state": "up", "declared": "page", "stores": 0})
        self.assertProblem(declare({"name": "dav2", "type": "webdav", "settings": good}), 409, "exists already")
        sid = make_store(self, self.srv, self.user, "Two", {"backend": "dav2"})
        data = os.urandom(2 * 1024 * 1024 + 3)
        self.assertEqual(put(self.srv, self.user, sid, "two.bin", data).status, 201)
        self.assertTrue(self.objects(os.path.join(self.dav.dir, "two")), "nothing under two/")
        self.srv.stop()
        self.srv.start()  # the declaration is the server's, not the process's
        r = self.srv.request("GET", self.file_url(sid, "two.bin"), token=self.user)
        self.assertEqual((r.status, r.body == data), (200, True))
        rows = {b["name"]: b for b in self.srv.request("GET", "/api/v1/admin/backends", token=self.admin).json()}
        self.assertEqual((rows["dav2"]["state"], rows["dav2"]["declared"], rows["dav"]["declared"]),
                         ("up", "page", "conf.d"))
        self.assertProblem(self.srv.request("DELETE", "/api/v1/admin/backends/dav2", token=self.admin), 409,
                           "1 store(s) keep files on backend 'dav2'")
        self.assertProblem(self.srv.request("DELETE", "/api/v1/admin/backends/dav", token=self.admin), 409,
                           "declared in conf.d")
        self.assertProblem(self.srv.request("DELETE", "/api/v1/admin/backends/nope", token=self.admin), 404)
        self.assertEqual(declare({"name": "spare", "type": "webdav", "settings": good}).status, 201)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/admin/backends/spare", token=self.user), 403)
        r = self.srv.request("DELETE", "/api/v1/admin/backends/spare", token=self.admin)
        self.assertEqual(r.status, 204, r)
        self.assertNotIn("spare", names())
        r = self.srv.request("POST", "/api/v1/stores", {"name": "S", "placement": {"backend": "spare"}},
                             token=self.user)
        self.assertProblem(r, 400, "no backend 'spare'")
        r = self.srv.request("GET", self.file_url(sid, "two.bin"), token=self.user)  # the reload kept dav2
        self.assertEqual((r.status, r.body == data), (200, True))

    def test_admin_backends_shows_it_up_with_its_objects_and_one_without_server_down(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "dav"})
        upload_several(self, sid)
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual(r.status, 200, r)
        rows = {b["name"]: b for b in r.json()}
        objs = self.objects()
        dav = rows["dav"]
        self.assertEqual((dav["type"], dav["state"], dav["stores"]), ("webdav", "up", 1))
        self.assertEqual((dav["objects"], dav["bytes"]), (len(objs), sum(len(b) for b in objs.values())))
        gone = rows["davgone"]
        self.assertEqual((gone["type"], gone["state"], gone["objects"]), ("webdav", "down", None))
        self.dav.kill()
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual({b["name"]: b["state"] for b in r.json()}["dav"], "down")
        self.dav.start()
        r = self.srv.request("GET", "/api/v1/admin/backends", token=self.admin)
        self.assertEqual({b["name"]: b["state"] for b in r.json()}["dav"], "up")

    def test_a_wrong_password_fails_the_upload_with_a_problem_and_acknowledges_nothing(self):
        sid = make_store(self, self.srv, self.user, "Bad", {"backend": "davbad"})
        r = put(self.srv, self.user, sid, "a.bin", os.urandom(300000))
        p = self.assertProblem(r, 500, "davbad")
        self.assertIn("user or password", p["detail"])
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).status, 404)
        self.assertEqual(self.objects(os.path.join(self.dav.dir, "bad")), {})
        with open(self.srv.log_path, "rb") as f:
            log = f.read()
        self.assertIn(b"davbad", log)
        for secret in (PASSWORD, WRONG):
            self.assertNotIn(secret.encode(), log, "a backend password is in the server's log")

    def test_a_new_password_applies_on_config_reload_and_a_new_backend_name_needs_a_module_reload(self):
        sid = make_store(self, self.srv, self.user, "Bad", {"backend": "davbad"})
        self.assertEqual(put(self.srv, self.user, sid, "a.bin", os.urandom(300000)).status, 500)
        path = os.path.join(self.srv.confdir, "webdav.yaml")
        with open(path) as f:
            conf = f.read()
        with open(path, "w") as f:  # the password of davbad set right: a rotated secret
            f.write(conf.replace(WRONG, PASSWORD))
        r = self.srv.request("POST", "/api/v1/admin/config/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertIn({"module": "webdav", "action": "reconfigured", "detail": ""}, r.json()["modules"], r.json())
        data = os.urandom(300000)
        self.assertEqual(put(self.srv, self.user, sid, "a.bin", data).status, 201)
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).body, data)
        self.assertTrue(self.objects(os.path.join(self.dav.dir, "bad")))
        with open(path, "w") as f:  # one more backend: init registers backends, so a reload is needed
            f.write(conf.replace(WRONG, PASSWORD).replace("backends:\n", "backends:\n" + backend_conf(
                "davnew", self.dav.url, PASSWORD, "new/"), 1))
        r = self.srv.request("POST", "/api/v1/admin/config/reload", token=self.admin)
        row = [m for m in r.json()["modules"] if m["module"] == "webdav"][0]
        self.assertEqual(row["action"], "refused", r.json())
        self.assertIn("mbytectl module reload webdav", row["detail"])
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).body, data)
        r = self.srv.request("POST", "/api/v1/admin/modules/webdav/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        rows = {b["name"]: b for b in self.srv.request("GET", "/api/v1/admin/backends", token=self.admin).json()}
        self.assertEqual((rows["davnew"]["type"], rows["davnew"]["state"]), ("webdav", "up"))
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).body, data)

    def test_a_redirect_to_another_host_is_not_followed_and_the_upload_fails(self):
        sid = make_store(self, self.srv, self.user, "Moved", {"backend": "davmoved"})
        p = self.assertProblem(put(self.srv, self.user, sid, "a.bin", os.urandom(300000)), 500, "davmoved")
        self.assertIn("redirected (307)", p["detail"])
        self.assertEqual(self.srv.request("GET", self.file_url(sid, "a.bin"), token=self.user).status, 404)
        self.assertEqual(self.redirector.reached, [], "a request (and the password) went to the other host")

    def test_server_killed_during_8_uploads_acknowledges_nothing_it_lost(self):
        sid = make_store(self, self.srv, self.user, "Cloud", {"backend": "dav"})
        uploads_cut_by_a_crash(self, self.srv, self.admin, self.user, sid, lambda: len(self.objects()),
                               self.dav.kill, self.dav.start, send_again=True)


class RcloneBackendTest(DavBackendTest):
    server_class = RcloneServer
    # the WebDAV server plays no part in it: DavBackendTest runs it once
    test_a_redirect_to_another_host_is_not_followed_and_the_upload_fails = None


class DavEncryptedTest(DavBackendTest):
    """{"encrypt": true} over the WebDAV backend: what reaches the server is ciphertext."""

    def conf(self):
        return master_key_conf(self.dav.work)

    def test_every_object_is_ciphertext_and_reads_back(self):
        sid = make_store(self, self.srv, self.user, "Secret", {"backend": "dav", "encrypt": True})
        encrypted_reads_back_as_ciphertext(self, sid, os.path.join(self.dav.dir, self.dav.prefix))

    # The other tests of the class are the plain ones; they run in DavBackendTest.
    test_store_reads_back_whole_and_ranges_and_the_collector_removes_its_objects = None
    test_admin_backends_shows_it_up_with_its_objects_and_one_without_server_down = None
    test_a_wrong_password_fails_the_upload_with_a_problem_and_acknowledges_nothing = None
    test_server_killed_during_8_uploads_acknowledges_nothing_it_lost = None
    test_a_new_password_applies_on_config_reload_and_a_new_backend_name_needs_a_module_reload = None
    test_a_redirect_to_another_host_is_not_followed_and_the_upload_fails = None


if __name__ == "__main__":
    main()

"""The webdav module (issue 24) against a real mbyted, with real WebDAV clients.

litmus (the WebDAV conformance suite) runs in full; rclone syncs a real tree up and down over
its webdav remote; cadaver runs a scripted session; curl and raw sockets check app passwords,
scopes, path attacks, chunked and interrupted PUTs, the trash, and a SIGKILL during 8
concurrent PUTs. The 2 GiB test runs the unsanitized mbyted (MBYTED_PLAIN) as test_memory does.
"""
import base64
import hashlib
import http.client
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest, Server, main, missing_prerequisite  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", "")

MODULES = {"webdav": True, "trash": True}


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


class DavTest(ServerTest):
    modules = MODULES

    def setUp(self):
        super().setUp()
        self.tok = self.srv.add_user("alice", "alice-password-1")
        self.pw = self.app_password(self.tok, "test")["password"]
        self.auth = basic("alice", self.pw)

    def app_password(self, token, name, **extra):
        body = {"name": name}
        body.update(extra)
        r = self.srv.request("POST", "/api/v1/account/app-passwords", body, token=token)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def dav(self, method, path, body=None, headers=None, auth=None, timeout=120):
        h = {"Authorization": auth or self.auth}
        h.update(headers or {})
        return self.srv.request(method, path, body=body, headers=h, timeout=timeout)

    def stores(self, token):
        return self.srv.request("GET", "/api/v1/stores", token=token).json()

    def url(self):
        return "http://127.0.0.1:%d/dav/Home/" % self.srv.port

    def tool(self, name):
        if not shutil.which(name):
            missing_prerequisite(self, "%s is not installed (tests/setup/webdav.sh installs it)" % name)


class TestAppPasswords(DavTest):
    def test_app_password_is_shown_once_listed_without_secret_and_revoked(self):
        r = self.srv.request("GET", "/api/v1/account/app-passwords", token=self.tok)
        self.assertEqual(r.status, 200)
        [entry] = r.json()
        self.assertEqual(entry["name"], "test")
        self.assertNotIn("password", entry)
        self.assertNotIn("hash", entry)
        self.assertEqual(self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "0"}).status, 207)
        r = self.srv.request("DELETE", "/api/v1/account/app-passwords/" + entry["id"], token=self.tok)
        self.assertEqual(r.status, 204)
        r = self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "0"})
        self.assertEqual(r.status, 401)
        self.assertIn("Basic", r.header("WWW-Authenticate"))

    def test_bad_app_password_requests_are_refused_and_change_nothing(self):
        bob = self.srv.add_user("bob", "bob-password-11")
        bob_sid = self.stores(bob)[0]["id"]
        for body, status in [({"name": ""}, 400), ({"name": "x" * 101}, 400), ({"name": "a", "store": "Home"}, 400),
                             ({"name": "a", "store": bob_sid}, 404), ({"name": "a", "read_only": "yes"}, 400)]:
            self.assertProblem(self.srv.request("POST", "/api/v1/account/app-passwords", body, token=self.tok), status)
        self.assertEqual(len(self.srv.request("GET", "/api/v1/account/app-passwords", token=self.tok).json()), 1)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/account/app-passwords/0123456789abcdef",
                                            token=self.tok), 404)
        # bob cannot revoke alice's, and does not see it
        alice_id = self.srv.request("GET", "/api/v1/account/app-passwords", token=self.tok).json()[0]["id"]
        self.assertProblem(self.srv.request("DELETE", "/api/v1/account/app-passwords/" + alice_id, token=bob), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/account/app-passwords", token=bob).json(), [])
        self.assertEqual(self.dav("PROPFIND", "/dav/", headers={"Depth": "0"}).status, 207)

    def test_account_password_is_refused_unless_the_setting_allows_it(self):
        r = self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "0"}, auth=basic("alice", "alice-password-1"))
        self.assertEqual(r.status, 401)
        self.srv.stop()
        self.srv.module_conf = {"webdav": "allow_account_password: true\n"}
        self.srv.write_config()
        self.srv.start()
        r = self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "0"}, auth=basic("alice", "alice-password-1"))
        self.assertEqual(r.status, 207)

    def test_wrong_passwords_hit_the_kernel_login_throttle(self):
        statuses = [self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "0"}, auth=basic("alice", "wrong%d" % i)).status
                    for i in range(12)]
        self.assertIn(429, statuses, statuses)
        self.assertEqual(statuses[0], 401)
        # the login door shares it: alice's right password from this address waits too
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "alice", "password": "alice-password-1"})
        self.assertEqual(r.status, 429, r)

    def test_ftp_app_passwords_from_before_work_for_webdav_and_ftp_routes_stay(self):
        self.srv.stop()
        self.srv.modules = dict(MODULES, ftp=True)
        self.srv.module_conf = {"ftp": "listen: 127.0.0.1:%d\n" % harness.free_port()}
        self.srv.write_config()
        self.srv.start()
        tok = self.srv.login("alice", "alice-password-1")
        r = self.srv.request("POST", "/api/v1/ftp/passwords", {"name": "old ftp"}, token=tok)
        self.assertEqual(r.status, 201, r)
        ftp_pw = r.json()["password"]
        r = self.dav("PUT", "/dav/Home/f.txt", b"via ftp password", auth=basic("alice", ftp_pw))
        self.assertEqual(r.status, 201, r)
        listed = self.srv.request("GET", "/api/v1/account/app-passwords", token=tok).json()
        self.assertIn("ftp", [e["source"] for e in listed])
        self.assertEqual(len(self.srv.request("GET", "/api/v1/ftp/passwords", token=tok).json()), 1)
        ftp_id = [e["id"] for e in listed if e["source"] == "ftp"][0]
        r = self.srv.request("DELETE", "/api/v1/ftp/passwords/" + ftp_id, token=tok)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.dav("GET", "/dav/Home/f.txt", auth=basic("alice", ftp_pw)).status, 401)


class TestScopes(DavTest):
    modules = dict(MODULES, taskmgr=True)  # POST /api/v1/stores
    def test_read_only_app_password_reads_but_changes_nothing(self):
        self.assertEqual(self.dav("PUT", "/dav/Home/a.txt", b"hello").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/d").status, 201)
        ro = basic("alice", self.app_password(self.tok, "ro", read_only=True)["password"])
        self.assertEqual(self.dav("GET", "/dav/Home/a.txt", auth=ro).body, b"hello")
        for method, path, headers in [("PUT", "/dav/Home/a.txt", {}), ("DELETE", "/dav/Home/a.txt", {}),
                                      ("MKCOL", "/dav/Home/e", {}),
                                      ("MOVE", "/dav/Home/a.txt", {"Destination": "/dav/Home/b.txt"}),
                                      ("COPY", "/dav/Home/a.txt", {"Destination": "/dav/Home/b.txt"}),
                                      ("PROPPATCH", "/dav/Home/a.txt", {}), ("LOCK", "/dav/Home/a.txt", {})]:
            r = self.dav(method, path, b"x" if method in ("PUT", "PROPPATCH", "LOCK") else None, headers, auth=ro)
            self.assertEqual(r.status, 403, (method, r))
        self.assertEqual(self.dav("GET", "/dav/Home/a.txt").body, b"hello")
        self.assertEqual(self.dav("GET", "/dav/Home/b.txt").status, 404)

    def test_single_store_app_password_sees_only_that_store(self):
        r = self.srv.request("POST", "/api/v1/stores", {"name": "Work"}, token=self.tok)
        self.assertEqual(r.status, 202, r)
        work = r.json()["store"]
        deadline = time.time() + 60
        while work not in [s["id"] for s in self.stores(self.tok)]:
            self.assertLess(time.time(), deadline, "the store was never made")
            time.sleep(0.05)
        only = basic("alice", self.app_password(self.tok, "work only", store=work)["password"])
        r = self.dav("PROPFIND", "/dav/", headers={"Depth": "1"}, auth=only)
        self.assertEqual(r.status, 207)
        self.assertIn(b"/dav/Work/", r.body)
        self.assertNotIn(b"/dav/Home/", r.body)
        self.assertEqual(self.dav("PUT", "/dav/Home/x", b"no", auth=only).status, 404)
        self.assertEqual(self.dav("PUT", "/dav/Work/x", b"yes", auth=only).status, 201)
        self.assertEqual(self.dav("GET", "/dav/%d/x" % work, auth=only).body, b"yes")

    def test_other_users_stores_and_path_attacks_are_refused(self):
        bob = self.srv.add_user("bob", "bob-password-11")
        bob_sid = self.stores(bob)[0]["id"]
        r = self.srv.request("PUT", "/api/v1/stores/%d/files/secret.txt" % bob_sid, b"bob's", token=bob)
        self.assertIn(r.status, (200, 201), r)
        for path in ["/dav/%d/secret.txt" % bob_sid, "/dav/%d/" % bob_sid]:
            self.assertEqual(self.dav("GET", path).status, 404, path)
            self.assertEqual(self.dav("PROPFIND", path, headers={"Depth": "1"}).status, 404, path)
        r = self.dav("PROPFIND", "/dav/", headers={"Depth": "1"})
        self.assertNotIn(b"secret", r.body)
        self.assertEqual(len(re.findall(rb"<D:href>/dav/[^<]+</D:href>", r.body)), 1)  # only Home
        self.assertEqual(self.dav("PUT", "/dav/Home/in.txt", b"mine").status, 201)
        # traversal and encoded separators never reach a handler
        for raw in ["/dav/Home/../%d/secret.txt" % bob_sid, "/dav/Home/%2e%2e/x", "/dav/Home%2F..%2Fx",
                    "/dav/Home/a%2Fb", "/dav/Home/%00"]:
            s = socket.create_connection(("127.0.0.1", self.srv.port))
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nConnection: close\r\n\r\n"
                       % (raw, self.auth)).encode())
            status = int(s.recv(100).split()[1])
            s.close()
            self.assertIn(status, (400, 404), raw)
        # a Destination that climbs out, or names another user's store
        for dest in ["/dav/Home/../%d/stolen.txt" % bob_sid, "/dav/Home/%2e%2e/x", "/dav/%d/stolen.txt" % bob_sid,
                     "http://elsewhere/dav/bob/x"]:
            r = self.dav("COPY", "/dav/Home/in.txt", headers={"Destination": dest})
            self.assertIn(r.status, (400, 502), (dest, r))
        names = [e["name"] for e in self.srv.request("GET", "/api/v1/stores/%d/list" % bob_sid,
                                                    token=bob).json()["entries"]]
        self.assertIn("secret.txt", names)
        self.assertNotIn("stolen.txt", names)
        self.assertNotIn("x", names)


class TestProtocol(DavTest):
    def test_options_and_propfind_depths(self):
        r = self.srv.request("OPTIONS", "/dav/Home/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("DAV"), "1, 2")
        self.assertIn("PROPFIND", r.header("Allow"))

    def test_options_on_the_server_root_and_on_dav_without_slash(self):
        # Windows' mini-redirector probes / and /dav before it maps a drive, without credentials.
        for path in ("/", "/dav", "/dav/"):
            r = self.srv.request("OPTIONS", path)
            self.assertEqual(r.status, 200, path)
            self.assertEqual(r.header("DAV"), "1, 2", path)
            self.assertEqual(r.header("MS-Author-Via"), "DAV", path)
            self.assertIn("PROPFIND", r.header("Allow"), path)
        page = self.srv.request("GET", "/")  # the web page is still served at /
        self.assertEqual(page.status, 200)
        self.assertIn(b"<html", page.body.lower())

    def hrefs(self, body):
        import xml.etree.ElementTree as ET
        root = ET.fromstring(body)  # the streamed multistatus is one well-formed document
        return sorted(h.text for h in root.iter("{DAV:}href") if h.text)

    def test_propfind_depth_infinity_and_without_depth_walks_the_whole_tree(self):
        for col in ("/dav/Home/a/", "/dav/Home/a/b/", "/dav/Home/a/b/c/", "/dav/Home/z/"):
            self.assertEqual(self.dav("MKCOL", col).status, 201, col)
        for f in ("a/one.txt", "a/b/two.txt", "a/b/c/three.txt", "top.txt"):
            self.assertEqual(self.dav("PUT", "/dav/Home/" + f, f.encode()).status, 201, f)
        patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
                 b'<Z:colour>deep-blue</Z:colour></D:prop></D:set></D:propertyupdate>')
        self.assertEqual(self.dav("PROPPATCH", "/dav/Home/a/b/c/three.txt", patch).status, 207)
        want = ["/dav/Home/", "/dav/Home/a/", "/dav/Home/a/b/", "/dav/Home/a/b/c/", "/dav/Home/a/b/c/three.txt",
                "/dav/Home/a/b/two.txt", "/dav/Home/a/one.txt", "/dav/Home/top.txt", "/dav/Home/z/"]
        for headers in ({"Depth": "infinity"}, {}):
            r = self.dav("PROPFIND", "/dav/Home/", None, headers)
            self.assertEqual(r.status, 207, (headers, r))
            self.assertEqual(r.header("Transfer-Encoding"), "chunked")  # streamed, not built whole
            self.assertEqual(self.hrefs(r.body), sorted(want))
            self.assertIn(b"deep-blue", r.body)  # dead properties of deep members come along
        r = self.dav("PROPFIND", "/dav/Home/a/b/", None, {"Depth": "infinity"})
        self.assertEqual(self.hrefs(r.body), ["/dav/Home/a/b/", "/dav/Home/a/b/c/", "/dav/Home/a/b/c/three.txt",
                                              "/dav/Home/a/b/two.txt"])
        r = self.dav("PROPFIND", "/dav/Home/a/", None, {"Depth": "1"})
        self.assertEqual(self.hrefs(r.body), ["/dav/Home/a/", "/dav/Home/a/b/", "/dav/Home/a/one.txt"])
        r = self.dav("PROPFIND", "/dav/", None, {"Depth": "infinity"})
        self.assertEqual(r.status, 207)
        self.assertIn("/dav/Home/a/b/c/three.txt", self.hrefs(r.body))
        self.assertEqual(self.dav("PROPFIND", "/dav/Home/nope/", None, {}).status, 404)

    def test_a_folder_of_more_than_a_page_streams_every_member_once(self):
        # 1,005 files and 2 folders: the module lists a folder 1,000 at a time (folder_page), so the
        # answer crosses a page; Depth infinity counts through the pages too, and a browser gets a
        # page. Dead properties are read a page at a time: on either side of the boundary, on a
        # member whose own subfolder has some (stepped over), and deep inside.
        self.assertEqual(self.dav("MKCOL", "/dav/Home/many/").status, 201)
        for i in range(1005):
            self.assertEqual(self.dav("PUT", "/dav/Home/many/f%04d.txt" % i, b"x").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/many/f0499x/").status, 201)  # page 1: f0998 is its last
        self.assertEqual(self.dav("PUT", "/dav/Home/many/f0499x/inner.txt", b"yy").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/many/zz/").status, 201)  # on the second page
        self.assertEqual(self.dav("PUT", "/dav/Home/many/zz/deep.txt", b"yy").status, 201)
        marked = ["many", "many/f0000.txt", "many/f0499x", "many/f0499x/inner.txt", "many/f0998.txt",
                  "many/f0999.txt", "many/f1004.txt", "many/zz", "many/zz/deep.txt"]
        for path in marked:
            patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
                     b'<Z:mark>mark-%s</Z:mark></D:prop></D:set></D:propertyupdate>' % path.encode())
            self.assertEqual(self.dav("PROPPATCH", "/dav/Home/" + path, patch).status, 207, path)
        members = (["/dav/Home/many/f%04d.txt" % i for i in range(500)] + ["/dav/Home/many/f0499x/"]
                   + ["/dav/Home/many/f%04d.txt" % i for i in range(500, 1005)] + ["/dav/Home/many/zz/"])
        want = ["/dav/Home/many/"] + members
        deep = ["/dav/Home/many/f0499x/inner.txt", "/dav/Home/many/zz/deep.txt"]

        def marks(body):
            out = {}
            for block in re.findall(rb"<D:response>(.*?)</D:response>", body, re.S):
                href = re.search(rb"<D:href>(.*?)</D:href>", block).group(1).decode()
                out.update({href: m.decode() for m in re.findall(rb"mark-([^<]*)<", block)})
            return out

        def want_marks(hrefs):
            return {h: h[len("/dav/Home/"):].rstrip("/") for h in hrefs
                    if h[len("/dav/Home/"):].rstrip("/") in marked}

        r = self.dav("PROPFIND", "/dav/Home/many/", None, {"Depth": "1"})
        self.assertEqual(r.status, 207)
        self.assertEqual(self.hrefs(r.body), sorted(want))
        self.assertEqual(r.body.count(b"<D:getcontentlength>1</D:getcontentlength>"), 1005)
        self.assertEqual(marks(r.body), want_marks(want))
        r = self.dav("PROPFIND", "/dav/Home/many/", None, {"Depth": "infinity"})
        self.assertEqual(r.status, 207)
        wantdeep = want[:502] + deep[:1] + want[502:] + deep[1:]  # each folder's members right after it
        self.assertEqual(self.hrefs(r.body), sorted(wantdeep))
        self.assertEqual(marks(r.body), want_marks(wantdeep))
        r = self.dav("GET", "/dav/Home/many/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.count(b"<li>"), 1000)
        self.assertIn(b"The first 1000 of 1007 entries", r.body)

    def test_etag_last_modified_and_range_match_the_http_api(self):
        data = os.urandom(100000)
        r = self.dav("PUT", "/dav/Home/r.bin", data)
        self.assertEqual(r.status, 201)
        sid = self.stores(self.tok)[0]["id"]
        api = self.srv.request("HEAD", "/api/v1/stores/%d/files/r.bin" % sid, token=self.tok)
        dav = self.dav("GET", "/dav/Home/r.bin", headers={"Range": "bytes=10-19"})
        self.assertEqual(dav.status, 206)
        self.assertEqual(dav.body, data[10:20])
        self.assertEqual(dav.header("ETag"), api.header("ETag"))
        self.assertEqual(dav.header("ETag"), '"%s"' % hashlib.sha256(data).hexdigest())
        self.assertEqual(dav.header("Last-Modified"), api.header("Last-Modified"))
        r = self.dav("PROPFIND", "/dav/Home/r.bin", headers={"Depth": "0"})
        self.assertIn(("<D:getetag>%s</D:getetag>" % api.header("ETag")).encode(), r.body)
        self.assertIn(("<D:getlastmodified>%s</D:getlastmodified>" % api.header("Last-Modified")).encode(), r.body)

    def test_quota_properties(self):
        self.assertEqual(self.dav("PUT", "/dav/Home/q.bin", b"q" * 5000).status, 201)
        body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/>'
                b'<D:quota-used-bytes/></D:prop></D:propfind>')
        r = self.dav("PROPFIND", "/dav/Home/", body, {"Depth": "0", "Content-Type": "application/xml"})
        self.assertEqual(r.status, 207)
        used = int(re.search(rb"<D:quota-used-bytes>(\d+)<", r.body).group(1))
        avail = int(re.search(rb"<D:quota-available-bytes>(\d+)<", r.body).group(1))
        self.assertGreaterEqual(used, 5000)
        self.assertGreater(avail, 0)

    def test_chunked_put_without_content_length_stores_every_byte(self):
        data = os.urandom(3 * 1024 * 1024 + 17)
        c = self.srv.conn()
        c.putrequest("PUT", "/dav/Home/chunked.bin")
        c.putheader("Authorization", self.auth)
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for i in range(0, len(data), 65521):
            piece = data[i:i + 65521]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 201)
        self.assertEqual(self.dav("GET", "/dav/Home/chunked.bin").body, data)

    def test_macos_metadata_files_are_dropped_and_never_listed(self):
        self.assertEqual(self.dav("PUT", "/dav/Home/._doc.txt", b"appledouble").status, 201)
        self.assertEqual(self.dav("PUT", "/dav/Home/.DS_Store", b"finder").status, 201)
        self.assertEqual(self.dav("GET", "/dav/Home/._doc.txt").status, 404)
        r = self.dav("PROPFIND", "/dav/Home/", headers={"Depth": "1"})
        self.assertNotIn(b"DS_Store", r.body)
        sid = self.stores(self.tok)[0]["id"]
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%d/list" % sid, token=self.tok).json()["entries"], [])

    def test_delete_moves_to_the_trash_and_an_unauthenticated_put_sends_no_bytes_in(self):
        self.assertEqual(self.dav("PUT", "/dav/Home/t.txt", b"trash me").status, 201)
        self.assertEqual(self.dav("DELETE", "/dav/Home/t.txt").status, 204)
        sid = self.stores(self.tok)[0]["id"]
        trash = self.srv.request("GET", "/api/v1/stores/%d/trash" % sid, token=self.tok).json()["items"]
        self.assertEqual([t["name"] for t in trash], ["t.txt"])
        r = self.dav("PUT", "/dav/Home/u.txt", b"x" * 1000, auth=basic("alice", "nope"))
        self.assertEqual(r.status, 401)

    def test_interrupted_put_stores_nothing(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        s.sendall(("PUT /dav/Home/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n"
                   % (self.auth, 50 << 20)).encode())
        s.sendall(os.urandom(8 << 20))
        harness.wait_read_by_server(self, self.srv.port, s)
        s.close()
        deadline = time.time() + 30
        while time.time() < deadline and "ended early" not in self.srv.read_log():
            time.sleep(0.05)
        self.assertEqual(self.dav("GET", "/dav/Home/cut.bin").status, 404)
        sid = self.stores(self.tok)[0]["id"]
        r = self.srv.request("GET", "/api/v1/stores/%d/list" % sid, token=self.tok)
        self.assertEqual(r.json()["entries"], [])


class TestQuirks(DavTest):
    def test_windows_explorer_save_sequence(self):
        """What Microsoft-WebDAV-MiniRedir sends when Explorer copies a file in: an empty PUT,
        LOCK, the PUT of the bytes with the token, PROPPATCH of its Win32 times, UNLOCK."""
        ua = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "translate": "f"}
        r = self.dav("PROPFIND", "/dav/Home", headers=dict(ua, Depth="0"))
        self.assertEqual(r.status, 207)
        self.assertIn(b"<D:href>/dav/Home/</D:href>", r.body)
        self.assertEqual(self.dav("PUT", "/dav/Home/New%20Text%20Document.txt", b"", ua).status, 201)
        lock = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DESKTOP\\alice</D:href>'
                b'</D:owner></D:lockinfo>')
        r = self.dav("LOCK", "/dav/Home/New%20Text%20Document.txt", lock, dict(ua, Timeout="Second-3600", Depth="0"))
        self.assertEqual(r.status, 200, r)
        token = r.header("Lock-Token").strip("<>")
        data = b"saved from Explorer\r\n" * 100
        self.assertEqual(self.dav("PUT", "/dav/Home/New%20Text%20Document.txt", data, ua).status, 423)
        r = self.dav("PUT", "/dav/Home/New%20Text%20Document.txt", data, dict(ua, If="(<%s>)" % token))
        self.assertEqual(r.status, 204, r)
        times = (b'<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
                 b'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
                 b'<Z:Win32CreationTime>Thu, 03 Dec 2026 10:00:00 GMT</Z:Win32CreationTime>'
                 b'<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>')
        r = self.dav("PROPPATCH", "/dav/Home/New%20Text%20Document.txt", times, dict(ua, If="(<%s>)" % token))
        self.assertEqual(r.status, 207)
        self.assertIn(b"200 OK", r.body)
        r = self.dav("UNLOCK", "/dav/Home/New%20Text%20Document.txt", headers=dict(ua, **{"Lock-Token": "<%s>" % token}))
        self.assertEqual(r.status, 204)
        r = self.dav("PROPFIND", "/dav/Home/New%20Text%20Document.txt", headers=dict(ua, Depth="0"))
        self.assertIn(b"00000020</Z:Win32FileAttributes>", r.body)
        self.assertIn(b"<D:getcontentlength>%d</D:getcontentlength>" % len(data), r.body)
        self.assertEqual(self.dav("GET", "/dav/Home/New%20Text%20Document.txt").body, data)

    def test_office_locks_a_new_document_and_another_writer_is_refused(self):
        """Word: LOCK on a name that does not exist yet (an empty file appears), save with the
        token in a tagged If list, refresh; a second program without the token gets 423."""
        lock = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>alice</D:owner></D:lockinfo>')
        ua = {"User-Agent": "Microsoft Office Word 2014"}
        r = self.dav("LOCK", "/dav/Home/Report.docx", lock, dict(ua, Timeout="Second-180"))
        self.assertEqual(r.status, 201, r)
        token = r.header("Lock-Token").strip("<>")
        self.assertIn(b"<D:timeout>Second-180</D:timeout>", r.body)
        self.assertEqual(self.dav("GET", "/dav/Home/Report.docx").body, b"")
        tagged = "<http://127.0.0.1:%d/dav/Home/Report.docx> (<%s>)" % (self.srv.port, token)
        doc = os.urandom(20000)
        self.assertEqual(self.dav("PUT", "/dav/Home/Report.docx", doc, dict(ua, If=tagged)).status, 204)
        r = self.dav("LOCK", "/dav/Home/Report.docx", None, dict(ua, If="(<%s>)" % token, Timeout="Second-600"))
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"Second-600", r.body)
        other = basic("alice", self.app_password(self.tok, "phone")["password"])
        self.assertEqual(self.dav("PUT", "/dav/Home/Report.docx", b"clobber", auth=other).status, 423)
        self.assertEqual(self.dav("DELETE", "/dav/Home/Report.docx", auth=other).status, 423)
        self.assertEqual(self.dav("GET", "/dav/Home/Report.docx").body, doc)


class TestAcrossStores(DavTest):
    modules = dict(MODULES, taskmgr=True)

    def test_copy_move_and_delete_carry_every_dead_property_of_a_big_tree(self):
        # 290 marked files and a marked subfolder of 10: more keys than the module reads at a time
        # (PROPS_BATCH, 256), so a batch that does not lead to the next shows as a missing mark
        # past the 256th (f256.txt on), a leftover one, or one that comes back with a new file.
        names = ["f%03d.txt" % i for i in range(290)] + ["sub"] + ["sub/g%d.txt" % i for i in range(10)]
        self.assertEqual(self.dav("MKCOL", "/dav/Home/big/").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/big/sub/").status, 201)
        for name in names:
            if name != "sub":
                self.assertEqual(self.dav("PUT", "/dav/Home/big/" + name, b"x").status, 201)
            patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
                     b'<Z:mark>mark-%s</Z:mark></D:prop></D:set></D:propertyupdate>' % name.encode())
            self.assertEqual(self.dav("PROPPATCH", "/dav/Home/big/" + name, patch).status, 207, name)
        want = {name: name for name in names}

        def marks(folder):
            r = self.dav("PROPFIND", "/dav/Home/%s/" % folder, None, {"Depth": "infinity"})
            self.assertEqual(r.status, 207, folder)
            out = {}
            for block in re.findall(rb"<D:response>(.*?)</D:response>", r.body, re.S):
                href = re.search(rb"<D:href>(.*?)</D:href>", block).group(1).decode()
                rel = href[len("/dav/Home/%s/" % folder):].rstrip("/")
                out.update({rel: m.decode() for m in re.findall(rb"mark-([^<]*)<", block)})
            return out

        def unmarked(path):  # a new file where a marked one was has no property of the old one
            self.assertIn(self.dav("PUT", "/dav/Home/" + path, b"new").status, (201, 204), path)
            r = self.dav("PROPFIND", "/dav/Home/" + path, None, {"Depth": "0"})
            self.assertEqual(r.status, 207, path)
            self.assertNotIn(b"mark-", r.body, path)

        self.assertEqual(marks("big"), want)
        dest = "http://127.0.0.1:%d/dav/Home/" % self.srv.port
        self.assertEqual(self.dav("COPY", "/dav/Home/big/", headers={"Destination": dest + "copy/"}).status, 201)
        self.assertEqual(marks("copy"), want)
        self.assertEqual(marks("big"), want)  # COPY leaves the source's
        self.assertEqual(self.dav("MOVE", "/dav/Home/copy/", headers={"Destination": dest + "moved/"}).status, 201)
        self.assertEqual(marks("moved"), want)
        self.assertEqual(self.dav("PROPFIND", "/dav/Home/copy/", None, {"Depth": "0"}).status, 404)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/copy/").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/copy/sub/").status, 201)
        for path in ("copy/f000.txt", "copy/f289.txt", "copy/sub/g9.txt"):  # MOVE took them, first batch and last
            unmarked(path)
        self.assertEqual(self.dav("DELETE", "/dav/Home/moved/").status, 204)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/moved/").status, 201)
        self.assertEqual(self.dav("MKCOL", "/dav/Home/moved/sub/").status, 201)
        for path in ("moved/f000.txt", "moved/f289.txt", "moved/sub/g9.txt"):  # DELETE dropped them
            unmarked(path)
        self.assertEqual(marks("big"), want)

    def test_copy_and_move_between_two_stores_of_the_user(self):
        import storeutil
        storeutil.create_store(self, self.srv, self.tok, "Work")
        data = os.urandom(300000)
        self.assertEqual(self.dav("PUT", "/dav/Home/report.bin", data).status, 201)
        patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
                 b'<Z:tag>quarterly</Z:tag></D:prop></D:set></D:propertyupdate>')
        self.assertEqual(self.dav("PROPPATCH", "/dav/Home/report.bin", patch).status, 207)
        dest = "http://127.0.0.1:%d/dav/Work/report.bin" % self.srv.port
        r = self.dav("COPY", "/dav/Home/report.bin", headers={"Destination": dest})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.dav("GET", "/dav/Work/report.bin").body, data)
        self.assertEqual(self.dav("GET", "/dav/Home/report.bin").body, data)  # COPY keeps the source
        r = self.dav("PROPFIND", "/dav/Work/report.bin", None, {"Depth": "0"})
        self.assertIn(b"quarterly", r.body)  # dead properties follow
        r = self.dav("COPY", "/dav/Home/report.bin", headers={"Destination": dest, "Overwrite": "F"})
        self.assertEqual(r.status, 412)
        self.assertEqual(self.dav("PUT", "/dav/Home/report.bin", b"v2").status, 204)
        r = self.dav("COPY", "/dav/Home/report.bin", headers={"Destination": dest, "Overwrite": "T"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.dav("GET", "/dav/Work/report.bin").body, b"v2")
        # a tree moves whole: parents first, every byte, and the source goes
        files = {"tree/a.txt": b"a" * 10, "tree/sub/b.bin": os.urandom(70000), "tree/sub/deeper/c.txt": b"c",
                 "tree/empty/": None}
        for col in ("tree/", "tree/sub/", "tree/sub/deeper/", "tree/empty/"):
            self.assertEqual(self.dav("MKCOL", "/dav/Home/" + col).status, 201)
        for name, body in files.items():
            if body is not None:
                self.assertEqual(self.dav("PUT", "/dav/Home/" + name, body).status, 201)
        r = self.dav("MOVE", "/dav/Home/tree/",
                     headers={"Destination": "http://127.0.0.1:%d/dav/Work/moved/" % self.srv.port})
        self.assertEqual(r.status, 201, r)
        for name, body in files.items():
            moved = "/dav/Work/moved/" + name[len("tree/"):]
            if body is None:
                self.assertEqual(self.dav("PROPFIND", moved, None, {"Depth": "0"}).status, 207, moved)
            else:
                self.assertEqual(self.dav("GET", moved).body, body, moved)
        self.assertEqual(self.dav("PROPFIND", "/dav/Home/tree/", None, {"Depth": "0"}).status, 404)
        # Depth 0 COPY of a folder across: the folder alone
        r = self.dav("COPY", "/dav/Work/moved/", headers={"Depth": "0", "Destination": "/dav/Home/shell/"})
        self.assertEqual(r.status, 201, r)
        r = self.dav("PROPFIND", "/dav/Home/shell/", None, {"Depth": "1"})
        self.assertEqual(r.body.count(b"<D:response>"), 1)


class TestStoreNames(DavTest):
    modules = dict(MODULES, taskmgr=True, multistore=True)

    def test_a_renamed_or_swapped_store_name_is_seen_at_once(self):
        import storeutil
        work = storeutil.create_store(self, self.srv, self.tok, "Work")
        home = self.stores(self.tok)[0]["id"] if self.stores(self.tok)[0]["name"] == "Home" else \
            [s["id"] for s in self.stores(self.tok) if s["name"] == "Home"][0]
        self.assertEqual(self.dav("PUT", "/dav/Home/h.txt", b"home").status, 201)  # Home -> its id is remembered
        self.assertEqual(self.dav("PUT", "/dav/Work/w.txt", b"work").status, 201)
        for sid, name in ((home, "Tmp"), (work, "Home"), (home, "Work")):  # swap the two names
            r = self.srv.request("PATCH", "/api/v1/stores/%d" % sid, {"name": name}, token=self.tok)
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.dav("GET", "/dav/Home/w.txt").body, b"work")  # the name now names the other store
        self.assertEqual(self.dav("GET", "/dav/Work/h.txt").body, b"home")
        self.assertEqual(self.dav("GET", "/dav/Home/h.txt").status, 404)
        self.assertEqual(self.dav("PUT", "/dav/Home/after.txt", b"x").status, 201)
        names = [e["name"] for e in self.srv.request("GET", "/api/v1/stores/%d/list" % work, token=self.tok)
                 .json()["entries"]]
        self.assertIn("after.txt", names)


class TestDepthCap(DavTest):
    module_conf = {"webdav": "propfind_infinity_max: 3\n"}

    def test_depth_infinity_above_the_cap_is_refused_with_the_rfc_precondition(self):
        self.assertEqual(self.dav("MKCOL", "/dav/Home/small/").status, 201)
        self.assertEqual(self.dav("PUT", "/dav/Home/small/a.txt", b"a").status, 201)
        for i in range(4):
            self.assertEqual(self.dav("PUT", "/dav/Home/f%d.txt" % i, b"f").status, 201)
        for headers in ({"Depth": "infinity"}, {}):
            r = self.dav("PROPFIND", "/dav/Home/", None, headers)
            self.assertEqual(r.status, 403, headers)
            self.assertIn(b"<D:propfind-finite-depth/>", r.body)
        r = self.dav("PROPFIND", "/dav/Home/small/", None, {"Depth": "infinity"})
        self.assertEqual(r.status, 207)  # 1 member: under the cap
        self.assertIn(b"/dav/Home/small/a.txt", r.body)
        self.assertEqual(self.dav("PROPFIND", "/dav/Home/", None, {"Depth": "1"}).status, 207)


class TestLockPersistence(DavTest):
    LOCK = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>alice-laptop</D:owner></D:lockinfo>')

    def test_a_lock_survives_a_restart_and_a_module_reload_and_an_expired_one_does_not(self):
        self.assertEqual(self.dav("PUT", "/dav/Home/held.odt", b"v1").status, 201)
        self.assertEqual(self.dav("PUT", "/dav/Home/brief.odt", b"v1").status, 201)
        r = self.dav("LOCK", "/dav/Home/held.odt", self.LOCK, {"Timeout": "Second-3600", "Depth": "0"})
        self.assertEqual(r.status, 200, r)
        token = r.header("Lock-Token").strip("<>")
        r = self.dav("LOCK", "/dav/Home/brief.odt", self.LOCK, {"Timeout": "Second-2", "Depth": "0"})
        self.assertEqual(r.status, 200, r)
        brief_deadline = time.time() + 2
        self.srv.stop()
        self.srv.start()
        admin = self.srv.login()
        for round_ in ("restart", "reload"):
            self.assertEqual(self.dav("PUT", "/dav/Home/held.odt", b"clobber").status, 423, round_)
            r = self.dav("PROPFIND", "/dav/Home/held.odt", None, {"Depth": "0"})
            self.assertIn(token.encode(), r.body, round_)
            self.assertIn(b"alice-laptop", r.body, round_)
            r = self.srv.request("POST", "/api/v1/admin/modules/webdav/reload", token=admin)
            self.assertEqual(r.status, 200, r)
        ok = self.dav("PUT", "/dav/Home/held.odt", b"v2", {"If": "(<%s>)" % token})
        self.assertEqual(ok.status, 204, ok)
        while time.time() <= brief_deadline + 1:
            time.sleep(0.2)
        self.srv.stop()
        self.srv.start()
        self.assertEqual(self.dav("PUT", "/dav/Home/brief.odt", b"v2").status, 204)  # its lock expired
        r = self.dav("UNLOCK", "/dav/Home/held.odt", None, {"Lock-Token": "<%s>" % token})
        self.assertEqual(r.status, 204, r)
        self.srv.stop()
        self.srv.start()
        self.assertEqual(self.dav("PUT", "/dav/Home/held.odt", b"v3").status, 204)  # unlocked for good
        self.assertEqual(self.dav("GET", "/dav/Home/held.odt").body, b"v3")

    def lock_keys(self):
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--keys", "m/webdav/l/"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.split()

    def test_a_refresh_racing_an_unlock_never_brings_the_lock_back_after_a_restart(self):
        """A refresh writes the lock's record after it let the table go; an UNLOCK in between deleted
        the record first, and the refresh's write brought it back: after the next start the file
        was locked again (423) by a lock its client had given up. Refreshes and UNLOCKs of 100 locks
        are sent two by two at once; whichever wins, no record may stay."""
        if not LDB_EDIT:
            missing_prerequisite(self, "MBYTE_LDB_EDIT is not set (meson sets it)")
        tokens = {}
        for i in range(100):
            path = "/dav/Home/race%03d.odt" % i
            self.assertEqual(self.dav("PUT", path, b"v1").status, 201)
            r = self.dav("LOCK", path, self.LOCK, {"Timeout": "Second-3600", "Depth": "0"})
            self.assertEqual(r.status, 200, r)
            tokens[path] = r.header("Lock-Token").strip("<>")
        got = {}

        def send(path, what, gate):
            gate.wait()
            if what == "refresh":
                r = self.dav("LOCK", path, None, {"If": "(<%s>)" % tokens[path], "Timeout": "Second-3600"})
            else:
                r = self.dav("UNLOCK", path, None, {"Lock-Token": "<%s>" % tokens[path]})
            got[(path, what)] = r.status

        for path in tokens:
            gate = threading.Barrier(2)
            pair = [threading.Thread(target=send, args=(path, w, gate)) for w in ("refresh", "unlock")]
            for t in pair:
                t.start()
            for t in pair:
                t.join(60)
        self.assertEqual({k: v for k, v in got.items() if k[1] == "unlock" and v != 204}, {})
        self.assertEqual({k: v for k, v in got.items() if k[1] == "refresh" and v not in (200, 412)}, {})
        self.srv.stop()
        self.assertEqual(self.lock_keys(), [])
        self.srv.start()
        for path in tokens:
            self.assertEqual(self.dav("PUT", path, b"v2").status, 204, path)

    def test_two_refreshes_at_once_leave_the_record_with_the_expiry_the_lock_has(self):
        """Two refreshes of one lock, one asking 600 s and one 7,200 s, sent at once: the lock keeps
        whichever came last, and after a restart it must have the same expiry. Each refresh wrote its
        own copy after it let the table go, so the other's write could land last: the record kept the
        expiry the lock no longer had, and after a restart the lock ended two hours early (or late)."""
        paths = ["/dav/Home/twice%03d.odt" % i for i in range(100)]
        tokens = {}
        for path in paths:
            self.assertEqual(self.dav("PUT", path, b"v1").status, 201)
            r = self.dav("LOCK", path, self.LOCK, {"Timeout": "Second-3600", "Depth": "0"})
            self.assertEqual(r.status, 200, r)
            tokens[path] = r.header("Lock-Token").strip("<>")
        got = []

        def send(path, seconds, gate):
            gate.wait()
            r = self.dav("LOCK", path, None, {"If": "(<%s>)" % tokens[path], "Timeout": "Second-%d" % seconds})
            got.append(r.status)

        for path in paths:
            gate = threading.Barrier(2)
            pair = [threading.Thread(target=send, args=(path, s, gate)) for s in (600, 7200)]
            for t in pair:
                t.start()
            for t in pair:
                t.join(60)
        self.assertEqual(got, [200] * 200)

        def left():
            out = {}
            for path in paths:
                r = self.dav("PROPFIND", path, None, {"Depth": "0"})
                m = re.search(rb"<D:timeout>Second-(\d+)</D:timeout>", r.body)
                self.assertTrue(m, r.body[:500])
                out[path] = int(m.group(1))
            return out
        before = left()
        self.assertTrue(all(v > 500 for v in before.values()), before)
        self.srv.stop()
        self.srv.start()
        after = left()
        differ = {p: (before[p], after[p]) for p in paths if abs(before[p] - after[p]) > 300}
        self.assertEqual(differ, {}, "the lock's expiry before the restart, and after it")

    def test_a_lock_an_older_build_saved_holds_moves_to_the_stores_key_when_refreshed_and_goes_with_unlock(self):
        if not LDB_EDIT:
            missing_prerequisite(self, "MBYTE_LDB_EDIT is not set (meson sets it)")
        self.assertEqual(self.dav("PUT", "/dav/Home/old.odt", b"v1").status, 201)
        r = self.dav("LOCK", "/dav/Home/old.odt", self.LOCK, {"Timeout": "Second-3600", "Depth": "0"})
        self.assertEqual(r.status, 200, r)
        token = r.header("Lock-Token").strip("<>")
        self.srv.stop()
        [new] = self.lock_keys()
        self.assertTrue(new.endswith("/" + token), new)
        old = "m/webdav/l/" + token  # where a build before the cluster's store records kept it
        p = subprocess.run([LDB_EDIT, os.path.join(self.srv.data, "meta"), "--rename", new, old],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.start()
        self.assertEqual(self.dav("PUT", "/dav/Home/old.odt", b"clobber").status, 423)
        r = self.dav("PROPFIND", "/dav/Home/old.odt", None, {"Depth": "0"})
        self.assertIn(token.encode(), r.body)
        r = self.dav("LOCK", "/dav/Home/old.odt", None, {"If": "(<%s>)" % token, "Timeout": "Second-3600"})
        self.assertEqual(r.status, 200, r)
        self.srv.stop()
        self.assertEqual(self.lock_keys(), [new])  # refreshed: under the store's key, the old one gone
        self.srv.start()
        self.assertEqual(self.dav("PUT", "/dav/Home/old.odt", b"clobber").status, 423)
        r = self.dav("UNLOCK", "/dav/Home/old.odt", None, {"Lock-Token": "<%s>" % token})
        self.assertEqual(r.status, 204, r)
        self.srv.stop()
        self.assertEqual(self.lock_keys(), [])
        self.srv.start()
        self.assertEqual(self.dav("PUT", "/dav/Home/old.odt", b"v2").status, 204)
        self.assertEqual(self.dav("GET", "/dav/Home/old.odt").body, b"v2")


class TestTls(ServerTest):
    """With tls_cert and tls_key, /dav/ is served over TLS on the same port as the API."""

    def setUp(self):
        from test_https import make_cert
        self.tmp = tempfile.mkdtemp(prefix="mbyte-davtls-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cert, key = make_cert(self.tmp)
        self.srv = Server(modules=MODULES, conf={"tls_cert": self.cert, "tls_key": key})
        self.addCleanup(self.srv.cleanup)
        self.srv.start(wait=False)

    def tearDown(self):
        self.srv.stop()

    def curl(self, *args):
        deadline = time.time() + 60
        while True:
            p = subprocess.run(["curl", "-sS", "--fail", "--cacert", self.cert] + list(args), capture_output=True)
            if p.returncode == 0 or time.time() > deadline:
                return p
            time.sleep(0.1)

    def test_put_and_get_over_https_with_an_app_password(self):
        base = "https://127.0.0.1:%d" % self.srv.port
        p = self.curl(base + "/api/v1/auth/login", "-H", "Content-Type: application/json",
                      "-d", '{"username":"admin","password":"%s"}' % harness.ADMIN_PASSWORD)
        self.assertEqual(p.returncode, 0, p.stderr)
        token = __import__("json").loads(p.stdout)["token"]
        p = self.curl(base + "/api/v1/account/app-passwords", "-H", "Authorization: Bearer " + token,
                      "-d", '{"name":"tls"}')
        pw = __import__("json").loads(p.stdout)["password"]
        src = os.path.join(self.tmp, "gpl.txt")
        shutil.copyfile("/usr/share/common-licenses/GPL-3", src)
        p = self.curl("-u", "admin:" + pw, "-T", src, base + "/dav/Home/gpl.txt")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.curl("-u", "admin:" + pw, base + "/dav/Home/gpl.txt")
        with open(src, "rb") as f:
            self.assertEqual(p.stdout, f.read())


class TestReload(DavTest):
    def test_a_put_streaming_while_the_module_is_reloaded_and_unloaded_completes(self):
        data = os.urandom(2 << 20)
        held = harness.HeldRequest(self, self.srv, "PUT", "/dav/Home/during.bin", data, 1 << 20,
                                   {"Authorization": self.auth})
        r = self.srv.request("POST", "/api/v1/admin/modules/webdav/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        answer = {}
        t = threading.Thread(target=lambda: answer.setdefault(
            "r", self.srv.request("POST", "/api/v1/admin/modules/webdav/unload", token=self.admin)))
        t.start()
        r = held.finish()  # the old copy's sink takes the rest: it stayed loaded for this request
        self.assertEqual(r.status, 201, r)
        t.join(120)
        self.assertEqual(answer["r"].status, 200, answer["r"])
        self.assertEqual(self.dav("GET", "/dav/Home/during.bin").status, 404)  # no route now
        sid = self.stores(self.tok)[0]["id"]
        got = self.srv.request("GET", "/api/v1/stores/%d/files/during.bin" % sid, token=self.tok)
        self.assertEqual(got.body, data)


class TestStreamUnload(DavTest):
    def test_a_propfind_streaming_while_the_module_is_unloaded_completes(self):
        self.assertEqual(self.dav("MKCOL", "/dav/Home/big/").status, 201)
        for i in range(400):
            self.assertEqual(self.dav("PUT", "/dav/Home/big/file-%03d.txt" % i, b"x").status, 201)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # the server blocks on a slow reader
        s.connect(("127.0.0.1", self.srv.port))
        s.sendall(("PROPFIND /dav/Home/big/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nDepth: 1\r\n"
                   "Connection: close\r\n\r\n" % self.auth).encode())
        first = s.recv(1024)
        self.assertIn(b" 207 ", first.split(b"\r\n")[0])
        answer = {}
        t = threading.Thread(target=lambda: answer.setdefault(
            "r", self.srv.request("POST", "/api/v1/admin/modules/webdav/unload", token=self.admin)))
        t.start()
        raw = first
        while True:  # the module stays loaded for the stream: every byte arrives
            b = s.recv(65536)
            if not b:
                break
            raw += b
        s.close()
        t.join(120)
        self.assertEqual(answer["r"].status, 200, answer["r"])
        body = raw.split(b"\r\n\r\n", 1)[1]
        text = b"".join(body.split(b"\r\n")[1::2])  # the chunks' data, without their sizes
        self.assertTrue(text.rstrip().endswith(b"</D:multistatus>"), text[-200:])
        self.assertEqual(text.count(b"<D:response>"), 401)


class TestClients(DavTest):
    def test_litmus_passes_in_full(self):
        self.tool("litmus")
        work = tempfile.mkdtemp()
        try:
            out = subprocess.run(["litmus", self.url(), "alice", self.pw], cwd=work, capture_output=True, text=True,
                                 timeout=900, env=dict(os.environ, TESTS="basic copymove props locks http")).stdout
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(out)
        summaries = dict(re.findall(r"summary for `(\w+)': of \d+ tests run: \d+ passed, (\d+) failed", out))
        self.assertEqual(sorted(summaries), ["basic", "copymove", "http", "locks", "props"], out)
        self.assertEqual(set(summaries.values()), {"0"}, out)
        warnings = re.findall(r"WARNING: (.*)", out)
        # The one warning: the fragment of "DELETE .../frag/#ment" is cut off before the
        # request reaches a handler (libmicrohttpd), so the collection itself is deleted.
        self.assertEqual(warnings, ["DELETE removed collection resource with Request-URI including fragment; unsafe"])

    def test_rclone_syncs_a_real_tree_up_and_down_and_check_is_clean(self):
        self.tool("rclone")
        src, back = tempfile.mkdtemp(), tempfile.mkdtemp()
        try:
            docs = sorted(os.path.join(d, n) for d, _, ns in os.walk("/usr/share/doc") for n in ns
                          if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n)))[:300]
            for i, p in enumerate(docs):
                dst = os.path.join(src, "d%d" % (i % 7), "sub é %d" % (i % 3), "%d %s" % (i, os.path.basename(p)))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(p, dst)
            obscured = subprocess.run(["rclone", "obscure", self.pw], capture_output=True, text=True).stdout.strip()
            env = dict(os.environ, RCLONE_CONFIG_MB_TYPE="webdav", RCLONE_CONFIG_MB_URL=self.url(),
                       RCLONE_CONFIG_MB_VENDOR="other", RCLONE_CONFIG_MB_USER="alice", RCLONE_CONFIG_MB_PASS=obscured)
            for args in (["sync", src, "mb:tree"], ["check", src, "mb:tree"], ["sync", "mb:tree", back],
                         ["check", src, back]):
                p = subprocess.run(["rclone"] + args, env=env, capture_output=True, text=True, timeout=900)
                self.assertEqual(p.returncode, 0, (args, p.stderr[-3000:]))
            # a change on one side shows up in check, then sync repairs it
            first = next(os.path.join(d, n) for d, _, ns in os.walk(src) for n in ns)
            with open(first, "ab") as f:
                f.write(b"changed")
            p = subprocess.run(["rclone", "check", src, "mb:tree"], env=env, capture_output=True, text=True)
            self.assertNotEqual(p.returncode, 0)
            subprocess.run(["rclone", "sync", src, "mb:tree"], env=env, check=True, capture_output=True)
            p = subprocess.run(["rclone", "check", src, "mb:tree"], env=env, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        finally:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(back, ignore_errors=True)

    def test_cadaver_scripted_session(self):
        self.tool("cadaver")
        home = tempfile.mkdtemp()
        try:
            with open(os.path.join(home, ".netrc"), "w") as f:
                f.write("machine 127.0.0.1 login alice password %s\n" % self.pw)
            os.chmod(os.path.join(home, ".netrc"), 0o600)
            local = os.path.join(home, "report.txt")
            with open("/usr/share/common-licenses/GPL-3", "rb") as f:
                data = f.read()
            with open(local, "wb") as f:
                f.write(data)
            script = ("mkcol docs\ncd docs\nput %s report.txt\ncopy report.txt copy.txt\nmove copy.txt moved.txt\n"
                      "propset report.txt color blue\npropget report.txt color\nlock report.txt\nunlock report.txt\n"
                      "ls\nget moved.txt %s\nrm report.txt\nls\nquit\n") % (local, os.path.join(home, "back.txt"))
            p = subprocess.run(["cadaver", self.url()], input=script, capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, HOME=home))
            print(p.stdout)
            self.assertIn("blue", p.stdout)
            self.assertNotIn("failed", p.stdout.lower())
            with open(os.path.join(home, "back.txt"), "rb") as f:
                self.assertEqual(f.read(), data)
            self.assertEqual(self.dav("GET", "/dav/Home/docs/moved.txt").body, data)
            self.assertEqual(self.dav("GET", "/dav/Home/docs/report.txt").status, 404)
        finally:
            shutil.rmtree(home, ignore_errors=True)


CLIENTS = 8


class TestCrash(DavTest):
    def test_sigkill_during_8_concurrent_puts_loses_no_acknowledged_file(self):
        acked, lock, stop = {}, threading.Lock(), threading.Event()
        unexpected = []

        def client(n):
            i = 0
            while not stop.is_set():
                data = os.urandom(random.randint(1, 300000))
                path = "/dav/Home/c%d-%d.bin" % (n, i)
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=60)
                    c.request("PUT", path, body=data, headers={"Authorization": self.auth})
                    r = c.getresponse()
                    r.read()
                    c.close()
                except (OSError, http.client.HTTPException):
                    return  # the kill
                if r.status == 201:
                    with lock:
                        acked[path] = hashlib.sha256(data).hexdigest()
                elif not stop.is_set():
                    unexpected.append((path, r.status))
                i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.time() + 120
        while len(acked) < 40 and time.time() < deadline:
            time.sleep(0.01)
        self.assertGreaterEqual(len(acked), 40, "the clients made no progress")
        self.srv.kill()
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(unexpected, [])
        with lock:
            want = dict(acked)
        self.srv.start()
        for path, sha in want.items():
            r = self.dav("GET", path)
            self.assertEqual(r.status, 200, path)
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), sha, path)


class TestMemory(ServerTest):
    """2 GiB PUT and GET over WebDAV with mbyted's peak resident memory under 64 MiB."""
    modules = {"webdav": True}  # the only module built without sanitizers (tests/plain)

    def setUp(self):
        saved = harness.MBYTED, harness.MODULE_DIR
        import test_memory  # its import points harness.MBYTED at MBYTED_PLAIN for good: put it back after
        self.tm = test_memory
        plain, plain_modules = os.environ.get("MBYTED_PLAIN"), os.environ.get("MBYTE_PLAIN_MODULE_DIR")
        if not plain or not plain_modules:
            self.fail("MBYTED_PLAIN and MBYTE_PLAIN_MODULE_DIR (tests/meson.build) name the unsanitized builds")
        self.addCleanup(lambda: (setattr(harness, "MBYTED", saved[0]), setattr(harness, "MODULE_DIR", saved[1])))
        harness.MBYTED, harness.MODULE_DIR = plain, plain_modules
        super().setUp()

    def test_2gib_put_and_get_stay_under_64mib_resident(self):
        tm = self.tm
        self.srv.add_user("alice", "alice-password-1")
        tok = self.srv.login("alice", "alice-password-1")
        r = self.srv.request("POST", "/api/v1/account/app-passwords", {"name": "big"}, token=tok)
        auth = basic("alice", r.json()["password"])
        self.srv.request("PROPFIND", "/dav/Home/", headers={"Authorization": auth, "Depth": "0"})  # argon2id once
        pid = self.srv.proc.pid
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        sampler = tm.Sampler(pid)
        sampler.start()
        try:
            src = tm.Source(11)
            c = self.srv.conn(timeout=600)
            c.request("PUT", "/dav/Home/big.bin", body=iter(src),
                      headers={"Authorization": auth, "Content-Length": str(tm.SIZE)})
            r = c.getresponse()
            r.read()
            c.close()
            self.assertEqual(r.status, 201)
            c = self.srv.conn(timeout=600)
            c.request("GET", "/dav/Home/big.bin", headers={"Authorization": auth})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            h, n = hashlib.sha256(), 0
            while True:
                piece = r.read(tm.BLOCK)
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
            c.close()
            self.assertEqual(n, tm.SIZE)
            self.assertEqual(h.hexdigest(), src.sha.hexdigest())
        finally:
            sampler.stop.set()
            sampler.join()
        peak = max(sampler.peak, sampler.rss("VmHWM"))
        print("mbyted peak resident memory over WebDAV: %.1f MiB" % (peak / 2**20))
        self.assertLess(peak, tm.LIMIT)


if __name__ == "__main__":
    main()

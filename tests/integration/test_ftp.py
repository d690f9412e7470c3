"""FTP/FTPS module (modules/ftp) against a real mbyted with real clients: curl, lftp and
Python's ftplib. Each test gets its own daemon, FTP port and passive port range."""
import errno
import ftplib
import time
import hashlib
import io
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import storeutil  # noqa: E402

ADMIN = ("admin", harness.ADMIN_PASSWORD)


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib does not resume the control session on data connections; the server requires
    it (like vsftpd's require_ssl_reuse), so pass the session along."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


def read_to_close(sock, timeout=60):
    """Everything the server sends on `sock` until it closes the connection (a reset counts
    as a close only after the bytes before it were read). Fails if it stays open."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def tls_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class FtpTest(harness.ServerTest):
    more_modules = {}  # real modules besides ftp, e.g. {"quotas": True}

    def setUp(self):
        self.ftp_port = harness.free_port()
        base = random.randrange(20000, 60000, 100)
        env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
               "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        modules = {"ftp": True}
        modules.update(self.more_modules)
        self.srv = harness.Server(modules=modules, env=env, conf=self.conf, module_conf=self.module_conf)
        self.srv.start()
        self.admin = self.srv.login()
        self.tmp = tempfile.mkdtemp(prefix="mbyte-ftp-client-")
        self.url = "ftp://127.0.0.1:%d" % self.ftp_port

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----
    def ftp(self, user=ADMIN, tls=False):
        f = ReusingFTP_TLS(context=tls_ctx(), timeout=30) if tls else ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_port)
        if tls:
            f.auth()
        f.login(*user)
        if tls:
            f.prot_p()
        return f

    def curl(self, *args, user=ADMIN, check=True):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "-u", "%s:%s" % user] + list(args),
                           capture_output=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("curl %s failed (%d): %s" % (args, r.returncode, r.stderr.decode()))
        return r

    def http_get(self, path, token=None):
        return self.srv.request("GET", "/api/v1/stores/1/files/" + path, token=token or self.admin)

    def stor_raw(self, f, cmd, data):
        """Upload `data` with `cmd` and return the final reply (ftplib raises for 4xx/5xx). Unlike
        storbinary, a server that refuses midway and closes the data connection while the
        client still sends is not an error of the client's: the reply is what counts."""
        conn = f.transfercmd(cmd)
        try:
            conn.sendall(data)
        except OSError:
            pass
        conn.close()
        return f.voidresp()

    def write(self, name, data):
        p = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return p


class TestFtpBigFolder(FtpTest):
    def test_list_nlst_and_mlsd_of_a_folder_of_several_pages_name_every_entry_once(self):
        from test_scale import fill  # noqa: E402 (uploads through the HTTP API, 8 connections)
        n = 2500  # the module reads a folder 1,000 entries at a time
        fill(self.srv, self.admin, 1, "big", n, name="n%05d.txt")
        want = ["n%05d.txt" % i for i in range(n)]
        def same(got, what):  # compared without difflib: a diff of 2,500 lines takes minutes
            self.assertTrue(got == want, "%s: %d names, first %r, last %r"
                            % (what, len(got), [g[:40] for g in got[:3]], [g[:40] for g in got[-3:]]))
        nlst = self.curl("--list-only", self.url + "/Home/big/").stdout.decode().splitlines()
        same([x for x in nlst if x], "NLST")
        lines = [x for x in self.curl(self.url + "/Home/big/").stdout.decode().splitlines() if x]
        same([x.split()[-1] for x in lines], "LIST")
        self.assertTrue(all(x.startswith("-rw-r--r--") for x in lines))
        f = self.ftp()
        same([name for name, facts in f.mlsd("/Home/big")], "MLSD")
        # STAT on the control connection lists the whole folder too
        self.assertEqual(f.sendcmd("STAT /Home/big").count(".txt"), n)
        f.quit()


class TestFtpClients(FtpTest):
    def test_curl_uploads_downloads_and_lists_over_plain_and_tls(self):
        data = os.urandom(3 * 1024 * 1024 + 17)
        src = self.write("up.bin", data)
        self.curl("-T", src, self.url + "/Home/docs/up.bin", "--ftp-create-dirs")
        # What FTP wrote is what HTTP reads: the same store, through the same kernel calls.
        self.assertEqual(self.http_get("docs/up.bin").body, data)
        r = self.curl("--ssl-reqd", "-k", self.url + "/Home/docs/up.bin")
        self.assertEqual(r.stdout, data)
        listing = self.curl("--ssl-reqd", "-k", self.url + "/Home/docs/").stdout.decode()
        self.assertIn("up.bin", listing)
        self.assertIn(str(len(data)), listing)
        root = self.curl("-l", self.url + "/").stdout.decode().split()
        self.assertEqual(root, ["Home"])

    def test_curl_resumes_a_download_and_an_upload(self):
        data = os.urandom(2 * 1024 * 1024 + 5)
        self.srv.request("PUT", "/api/v1/stores/1/files/r.bin", body=data, token=self.admin)
        part = self.write("r.bin", data[:700001])
        self.curl("--ssl-reqd", "-k", "-C", "-", "-o", part, self.url + "/Home/r.bin")
        with open(part, "rb") as f:
            self.assertEqual(f.read(), data)
        # Upload resume: the server has the first part, curl sends the rest (APPE).
        up = self.write("u.bin", data)
        self.srv.request("PUT", "/api/v1/stores/1/files/u.bin", body=data[:1000000], token=self.admin)
        self.curl("--ssl-reqd", "-k", "-C", "-", "-T", up, self.url + "/Home/u.bin")
        self.assertEqual(self.http_get("u.bin").body, data)

    def test_plain_retr_sends_chunk_files_whole_from_any_offset_and_never_a_damaged_one(self):
        # Several chunk files and a small last piece (kept in the metadata database): plain RETR
        # sends the files with sendfile and copies only the small piece.
        data = os.urandom(5 * 1024 * 1024 + 1234)
        self.assertEqual(self.srv.request("PUT", "/api/v1/stores/1/files/z.bin", body=data, token=self.admin).status,
                         201)
        f = self.ftp()
        for rest in (0, 1, 700001, len(data) - 10):
            got = io.BytesIO()
            f.retrbinary("RETR /Home/z.bin", got.write, rest=rest)
            self.assertEqual(got.getvalue(), data[rest:], rest)
        # Damage one byte of the second chunk file: the download stops before that chunk.
        files = sorted((os.path.getsize(os.path.join(r, n)), os.path.join(r, n))
                       for r, _, ns in os.walk(os.path.join(self.srv.data, "chunks")) if not r.endswith("tmp") for n in ns)
        self.assertGreaterEqual(len(files), 2)
        chunks = {}
        for size, path in files:
            with open(path, "rb") as fh:
                chunks[data.find(fh.read(4096))] = path
        second = chunks[sorted(chunks)[1]]
        with open(second, "r+b") as fh:
            fh.seek(5000)
            b = fh.read(1)
            fh.seek(5000)
            fh.write(bytes([b[0] ^ 0xff]))
        got = io.BytesIO()
        with self.assertRaises(ftplib.error_temp) as cm:
            f.retrbinary("RETR /Home/z.bin", got.write)
        self.assertTrue(str(cm.exception).startswith("451"), cm.exception)
        self.assertLessEqual(len(got.getvalue()), sorted(chunks)[1])
        self.assertEqual(got.getvalue(), data[:len(got.getvalue())])
        f.quit()

    def test_lftp_mirrors_a_tree_up_and_down_and_resumes(self):
        tree = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(300000), "sub/deeper/c.txt": b"c" * 5000,
                "\u00e9t\u00e9/\u65e5\u672c.txt": "unicode \u2713".encode()}
        for name, body in tree.items():
            self.write("up/" + name, body)
        up, down = os.path.join(self.tmp, "up"), os.path.join(self.tmp, "down")
        script = ("set ssl:verify-certificate no; set ftp:ssl-force true; set ftp:ssl-protect-data true; "
                  "set net:max-retries 1; set net:timeout 20; open -u admin,%s -p %d 127.0.0.1; "
                  "mirror -R %s /Home/tree; mirror /Home/tree %s; bye" % (harness.ADMIN_PASSWORD, self.ftp_port,
                                                                         up, down))
        r = subprocess.run(["lftp", "-c", script], capture_output=True, timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        for name, body in tree.items():
            with open(os.path.join(down, name), "rb") as f:
                self.assertEqual(f.read(), body, name)
        self.assertEqual(self.http_get("tree/sub/b.bin").body, tree["sub/b.bin"])
        # An interrupted download (half the file on disk) is finished with get -c.
        big = os.urandom(1500000)
        self.srv.request("PUT", "/api/v1/stores/1/files/big.bin", body=big, token=self.admin)
        local = self.write("big.bin", big[:600000])
        script = ("set ssl:verify-certificate no; set ftp:ssl-force true; open -u admin,%s -p %d 127.0.0.1; "
                  "get -c /Home/big.bin -o %s; bye" % (harness.ADMIN_PASSWORD, self.ftp_port, local))
        r = subprocess.run(["lftp", "-c", script], capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        with open(local, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(big).hexdigest())

    def test_ftplib_tls_session_reuse_is_required_on_data_connections(self):
        f = self.ftp(tls=True)
        f.storbinary("STOR /Home/t.txt", io.BytesIO(b"over tls"))
        out = io.BytesIO()
        f.retrbinary("RETR /Home/t.txt", out.write)
        self.assertEqual(out.getvalue(), b"over tls")
        self.assertIn("type=file;", f.sendcmd("MLST /Home/t.txt"))
        self.assertEqual(f.size("/Home/t.txt"), 8)
        self.assertTrue(f.sendcmd("MDTM /Home/t.txt").startswith("213 2"))
        f.quit()
        # A client that opens a fresh TLS session for data is refused, and nothing is read.
        g = ftplib.FTP_TLS(context=tls_ctx(), timeout=30)
        g.connect("127.0.0.1", self.ftp_port)
        g.auth()
        g.login(*ADMIN)
        g.prot_p()
        with self.assertRaises(ftplib.error_perm) as cm:
            g.retrbinary("RETR /Home/t.txt", lambda b: self.fail("bytes leaked"))
        self.assertTrue(str(cm.exception).startswith("522"), cm.exception)
        g.close()

    def test_twenty_sessions_at_once(self):
        errors = []

        def one(i):
            try:
                f = self.ftp()
                body = ("session %d " % i).encode() * 1000
                f.storbinary("STOR /Home/s%02d.txt" % i, io.BytesIO(body))
                out = io.BytesIO()
                f.retrbinary("RETR /Home/s%02d.txt" % i, out.write)
                if out.getvalue() != body:
                    errors.append("session %d read back other bytes" % i)
                f.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("session %d: %r" % (i, e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        f = self.ftp()
        self.assertEqual(len([n for n in f.nlst("/Home") if n.startswith("s")]), 20)
        f.quit()

    def test_rename_mkdir_rmd_dele_and_epsv_over_ipv4(self):
        f = self.ftp()
        self.assertTrue(f.mkd("/Home/d1").endswith("/Home/d1"))
        f.cwd("/Home/d1")
        self.assertEqual(f.pwd(), "/Home/d1")
        f.storbinary("STOR x.txt", io.BytesIO(b"x"))
        f.rename("x.txt", "y.txt")
        self.assertEqual(f.nlst(), ["y.txt"])
        with self.assertRaises(ftplib.error_perm) as cm:
            f.rmd("/Home/d1")
        self.assertTrue(str(cm.exception).startswith("550"))
        f.delete("y.txt")
        f.cwd("..")
        f.rmd("d1")
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/1/files/d1", token=self.admin).status, 404)
        f.quit()

    def test_names_with_bidi_overrides_or_a_bom_are_refused_with_553(self):
        """The kernel's name check for new names (docs/api.md "Names") answers FTP with 553."""
        f = self.ftp()
        f.storbinary("STOR /Home/plan.txt", io.BytesIO(b"x"))
        for cmd in [lambda: f.storbinary("STOR /Home/invoice\u202egpj.exe", io.BytesIO(b"MZ")),
                    lambda: f.mkd("/Home/\ufeffdocs"),
                    lambda: f.rename("/Home/plan.txt", "/Home/plan\u2066.txt")]:
            with self.assertRaises(ftplib.error_perm) as cm:
                cmd()
            self.assertRegex(str(cm.exception), r"^553 .*name: may not contain U\+")
        self.assertEqual(f.nlst("/Home"), ["plan.txt"])
        f.quit()


class TestFtpCommands(FtpTest):
    """STOU, REST+STOR, TYPE A and the 553/554/450 replies docs/ftp.md promises."""

    def test_stou_names_the_new_file_in_its_150_reply_and_each_is_a_new_file(self):
        f = self.ftp()
        f.cwd("/Home")
        names = []
        for body in (b"first unique", b"second unique"):
            host, port = f.makepasv()
            conn = socket.create_connection((host, port), timeout=30)
            line = f.sendcmd("STOU")  # RFC 1123 4.1.2.9: the name is in the 150 line, "150 FILE: name"
            m = re.match(r"^150 FILE: (/Home/[^/\s]+)$", line)
            self.assertTrue(m, line)
            conn.sendall(body)
            conn.close()
            self.assertTrue(f.voidresp().startswith("226"))
            # The reply stream is in step: the next command gets its own answer.
            self.assertEqual(f.sendcmd("NOOP"), "200 NOOP ok")
            names.append(m.group(1))
            got = io.BytesIO()
            f.retrbinary("RETR " + m.group(1), got.write)
            self.assertEqual(got.getvalue(), body)
        self.assertNotEqual(names[0], names[1])
        self.assertEqual(sorted(f.nlst("/Home")), sorted(n.rsplit("/", 1)[1] for n in names))
        for name, body in zip(names, (b"first unique", b"second unique")):  # the second replaced nothing
            self.assertEqual(self.http_get(name[len("/Home/"):]).body, body)
        f.quit()

    def test_rest_stor_resumes_an_upload_from_the_size_the_server_has(self):
        data = os.urandom(3 * 1024 * 1024 + 12345)  # the old part spans several chunks
        f = self.ftp()
        f.storbinary("STOR /Home/resume.bin", io.BytesIO(data[:1500001]))
        have = f.size("/Home/resume.bin")
        self.assertEqual(have, 1500001)
        self.assertTrue(f.storbinary("STOR /Home/resume.bin", io.BytesIO(data[have:]), rest=have).startswith("226"))
        self.assertEqual(self.http_get("resume.bin").body, data)
        self.assertEqual(f.size("/Home/resume.bin"), len(data))
        # An offset past the end is 554 (range) and changes nothing, for STOR and RETR.
        for cmd in ("STOR", "RETR"):
            self.assertTrue(f.sendcmd("REST %d" % (len(data) + 1)).startswith("350"))
            with self.assertRaises(ftplib.error_perm) as cm:
                f.sendcmd(cmd + " /Home/resume.bin")
            self.assertTrue(str(cm.exception).startswith("554 REST offset"), cm.exception)
        self.assertEqual(self.http_get("resume.bin").body, data)
        f.quit()

    def test_type_a_is_accepted_and_transfers_byte_for_byte(self):
        f = self.ftp()
        self.assertEqual(f.sendcmd("TYPE A"), "200 Type set to A")
        # ftplib's ASCII upload sends each line with CRLF: the store keeps what came.
        f.storlines("STOR /Home/lines.txt", io.BytesIO(b"one\ntwo\n"))
        self.assertEqual(self.http_get("lines.txt").body, b"one\r\ntwo\r\n")
        lines = []
        f.retrlines("RETR /Home/lines.txt", lines.append)
        self.assertEqual(lines, ["one", "two"])
        # Whatever the bytes (bare LF, bare CR, binary), TYPE A moves them unchanged both ways.
        odd = b"unix\nmac\rdos\r\n\x00\xff" + os.urandom(5000)
        self.assertTrue(self.stor_raw(f, "STOR /Home/odd.bin", odd).startswith("226"))
        self.assertEqual(self.http_get("odd.bin").body, odd)
        self.assertEqual(f.sendcmd("TYPE A"), "200 Type set to A")  # still A; said again for the reader
        conn = f.transfercmd("RETR /Home/odd.bin")
        got = read_to_close(conn)
        conn.close()
        self.assertTrue(f.voidresp().startswith("226"))
        self.assertEqual(got, odd)
        for bad in ("TYPE E", "TYPE X"):
            with self.assertRaises(ftplib.error_perm) as cm:
                f.sendcmd(bad)
            self.assertTrue(str(cm.exception).startswith("504"), cm.exception)
        f.quit()

    def test_rnto_onto_an_existing_file_is_553_and_changes_nothing(self):
        f = self.ftp()
        f.storbinary("STOR /Home/a.txt", io.BytesIO(b"a"))
        f.storbinary("STOR /Home/b.txt", io.BytesIO(b"b"))
        with self.assertRaises(ftplib.error_perm) as cm:
            f.rename("/Home/a.txt", "/Home/b.txt")
        self.assertRegex(str(cm.exception), r"^553 .*already exists", cm.exception)
        with self.assertRaises(ftplib.error_perm) as cm:
            f.rename("/Home/a.txt", "/")
        self.assertTrue(str(cm.exception).startswith("553 Renames stay inside one store"), cm.exception)
        self.assertEqual((self.http_get("a.txt").body, self.http_get("b.txt").body), (b"a", b"b"))
        f.quit()

    def test_a_command_during_a_transfer_is_450_and_the_transfer_goes_on(self):
        f = self.ftp()
        conn = f.transfercmd("STOR /Home/busy.bin")
        conn.sendall(b"first half ")
        with self.assertRaises(ftplib.error_temp) as cm:
            f.sendcmd("DELE /Home/busy.bin")
        self.assertEqual(str(cm.exception), "450 A transfer is in progress; wait or send ABOR")
        self.assertEqual(f.sendcmd("NOOP"), "200 NOOP ok")
        conn.sendall(b"second half")
        conn.close()
        self.assertTrue(f.voidresp().startswith("226"))
        self.assertEqual(self.http_get("busy.bin").body, b"first half second half")
        f.quit()


class TestFtpSessionLimits(FtpTest):
    """max_sessions_per_user and max_sessions, filled with logged-in sessions (docs/ftp.md, Limits)."""
    module_conf = {"ftp": "max_sessions: 3\nmax_sessions_per_user: 2\n"}

    def closed_by_server(self, f):
        """QUIT and wait until the server has closed (and so counted out) the session."""
        f.putcmd("QUIT")
        self.assertEqual(read_to_close(f.sock), b"221 Goodbye\r\n")
        f.close()

    def test_a_users_sessions_past_max_sessions_per_user_are_refused_with_421(self):
        self.srv.add_user("bob", admin_token=self.admin)
        a1, a2 = self.ftp(), self.ftp()
        extra = ftplib.FTP(timeout=30)
        extra.connect("127.0.0.1", self.ftp_port)
        with self.assertRaises(ftplib.error_temp) as cm:
            extra.login(*ADMIN)
        self.assertEqual(str(cm.exception), "421 Too many sessions for this user")
        self.assertEqual(read_to_close(extra.sock), b"")  # and the connection is closed
        extra.close()
        # Another user is not counted against admin; admin's two sessions still work.
        b = self.ftp(user=("bob", "user-password-1"))
        self.assertEqual(b.nlst("/Home"), [])
        self.assertEqual(a1.nlst("/"), ["Home"])
        self.closed_by_server(b)
        # A session that ends frees its place.
        self.closed_by_server(a2)
        a3 = self.ftp()
        self.assertEqual(a3.nlst("/"), ["Home"])
        a1.quit()
        a3.quit()

    def test_connections_past_max_sessions_are_refused_with_421(self):
        self.srv.add_user("bob", admin_token=self.admin)
        held = [self.ftp(), self.ftp(), self.ftp(user=("bob", "user-password-1"))]
        # Refused at the greeting today ("connections in all"); a cap applied at login instead
        # would refuse the same way, so the test holds either way: no fourth session.
        extra = ftplib.FTP(timeout=30)
        with self.assertRaises(ftplib.error_temp) as cm:
            extra.connect("127.0.0.1", self.ftp_port)
            extra.login("bob", "user-password-1")
        self.assertEqual(str(cm.exception), "421 Too many connections; try again later")
        self.assertEqual(read_to_close(extra.sock), b"")
        extra.close()
        for f in held:
            self.assertEqual(f.sendcmd("NOOP"), "200 NOOP ok")
        self.closed_by_server(held.pop())
        f = self.ftp(user=("bob", "user-password-1"))
        self.assertEqual(f.nlst("/"), ["Home"])
        for g in held + [f]:
            g.quit()


class TestFtpReloadDuringTransfer(FtpTest):
    def test_an_upload_cut_by_reload_or_unload_stores_nothing_and_gets_421_not_226(self):
        body = os.urandom(4 * 1024 * 1024)
        for op in ("reload", "unload"):
            f = self.ftp()
            conn = f.transfercmd("STOR /Home/%s.bin" % op)
            conn.sendall(body[:2 * 1024 * 1024])  # half of it; the client has not ended the upload
            self.assertIn("\n Transfer in progress: ", f.sendcmd("STAT"))  # the server is in it
            r = self.srv.request("POST", "/api/v1/admin/modules/ftp/" + op, token=self.admin)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(read_to_close(f.sock), b"421 Service shutting down; reconnect\r\n", op)
            f.close()
            # The server closed the data connection too (an end or a reset, not a timeout).
            self.assertEqual(read_to_close(conn), b"", op)
            conn.close()
            self.assertEqual(self.http_get("%s.bin" % op).status, 404, op)
        r = self.srv.request("POST", "/api/v1/admin/modules/ftp/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        f = self.ftp()
        self.assertEqual(f.nlst("/Home"), [])
        f.quit()


class TestFtpCrash(FtpTest):
    UPLOADERS = 8
    ACKED_BEFORE_KILL = 16

    def test_sigkill_during_8_concurrent_uploads_keeps_every_226_and_leaves_no_partial_file(self):
        sent = {}       # name -> the bytes its upload sends (recorded before the STOR)
        acked = set()   # names whose STOR got its 226
        lock = threading.Lock()
        enough = threading.Event()
        killed = threading.Event()
        errors = []

        def uploader(i):
            rnd = random.Random(i)
            try:
                f = self.ftp()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("uploader %d could not log in: %r" % (i, e))
                return
            n = 0
            while not killed.is_set():
                name = "u%d-%03d.bin" % (i, n)
                body = rnd.randbytes(rnd.randrange(200000, 3 * 1024 * 1024))
                with lock:
                    sent[name] = body
                try:
                    reply = f.storbinary("STOR /Home/" + name, io.BytesIO(body))
                except Exception as e:  # noqa: BLE001 - the kill ends every session
                    if not killed.is_set():
                        errors.append("%s before the kill: %r" % (name, e))
                    break
                if reply.startswith("226"):
                    with lock:
                        acked.add(name)
                        if len(acked) >= self.ACKED_BEFORE_KILL:
                            enough.set()
                n += 1
            f.close()

        threads = [threading.Thread(target=uploader, args=(i,)) for i in range(self.UPLOADERS)]
        for t in threads:
            t.start()
        self.assertTrue(enough.wait(300), "no %d uploads acknowledged: %r" % (self.ACKED_BEFORE_KILL, errors))
        with lock:  # the acknowledged set is what the clients knew at the moment of the kill
            killed.set()
            self.srv.kill()  # SIGKILL: no fini, no flush, uploads in flight everywhere
            acked_at_kill = set(acked)
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.srv.start()
        self.assertGreaterEqual(len(acked_at_kill), self.ACKED_BEFORE_KILL)
        in_flight = set(sent) - acked_at_kill
        self.assertGreater(len(in_flight), 0)
        for name in sorted(acked_at_kill):
            r = self.http_get(name)
            self.assertEqual(r.status, 200, name)
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), hashlib.sha256(sent[name]).hexdigest(), name)
        for name in sorted(in_flight):  # absent or whole, never partial
            r = self.http_get(name)
            self.assertIn(r.status, (200, 404), name)
            if r.status == 200:
                self.assertEqual(hashlib.sha256(r.body).hexdigest(), hashlib.sha256(sent[name]).hexdigest(), name)
        f = self.ftp()
        listed = set(f.nlst("/Home"))
        f.quit()
        self.assertLessEqual(acked_at_kill, listed)
        self.assertLessEqual(listed, set(sent))


class TestFtpLargeFolios(FtpTest):
    """Chunks read into the page cache as large folios (kernel/blob.c, cache_large) by the
    read-ahead threads and by a sendfile reader. `auto` turns that off on VMs whose hypervisor
    takes free memory back, as on the CI machine, so these tests ask for it."""
    conf = {"chunk_large_folios": "true"}

    test_plain_retr_sends_chunk_files_whole_from_any_offset_and_never_a_damaged_one = \
        TestFtpClients.test_plain_retr_sends_chunk_files_whole_from_any_offset_and_never_a_damaged_one

    def test_a_file_read_in_cold_comes_back_whole_over_http_and_ftp(self):
        data = os.urandom(9 * 1024 * 1024 + 77)
        self.assertEqual(self.srv.request("PUT", "/api/v1/stores/1/files/c.bin", body=data, token=self.admin).status,
                         201)
        # Right after the upload nothing is cached (O_DIRECT): the HTTP download goes through
        # the read-ahead threads, the RETR after it through sendfile of what they read in.
        r = self.srv.request("GET", "/api/v1/stores/1/files/c.bin", token=self.admin)
        self.assertEqual((r.status, hashlib.sha256(r.body).hexdigest()), (200, hashlib.sha256(data).hexdigest()))
        for _ in range(2):
            got = io.BytesIO()
            f = self.ftp()
            f.retrbinary("RETR /Home/c.bin", got.write)
            f.quit()
            self.assertEqual(hashlib.sha256(got.getvalue()).hexdigest(), hashlib.sha256(data).hexdigest())


class TestFtpReadDirect(FtpTest):
    """chunk_read_direct: true: a RETR of chunks not in the page cache copies them from memory
    (read around the cache, then verified) where sendfile would have read them through it; the
    bytes from any offset, and never a damaged chunk, as with sendfile."""
    conf = {"chunk_read_direct": "true"}

    test_plain_retr_sends_chunk_files_whole_from_any_offset_and_never_a_damaged_one = \
        TestFtpClients.test_plain_retr_sends_chunk_files_whole_from_any_offset_and_never_a_damaged_one
    test_a_file_read_in_cold_comes_back_whole_over_http_and_ftp = \
        TestFtpLargeFolios.test_a_file_read_in_cold_comes_back_whole_over_http_and_ftp


class TestFtpQuota(FtpTest):
    """The real quotas module (modules/quotas) behind the FTP door: its refusal reaches the
    client as 552 through the kernel's error table, and nothing of the refused upload lands."""
    more_modules = {"quotas": True}
    QUOTA = 1000000

    def setUp(self):
        super().setUp()
        self.bob = self.srv.add_user("bob", admin_token=self.admin)
        r = self.srv.request("PUT", "/api/v1/admin/quotas/users/bob", {"bytes": self.QUOTA}, token=self.admin)
        self.assertEqual(r.status, 200, r)

    def bob_get(self, name):
        hid = storeutil.home(self.srv, self.bob)
        return self.srv.request("GET", "/api/v1/stores/%d/files/%s" % (hid, name), token=self.bob)

    def usage(self):
        return self.srv.request("GET", "/api/v1/me/usage", token=self.bob).json()["bytes"]

    def test_stor_and_appe_over_quota_are_552_and_store_nothing(self):
        f = self.ftp(user=("bob", "user-password-1"))
        first = os.urandom(600000)
        f.storbinary("STOR /Home/fits.bin", io.BytesIO(first))
        self.assertEqual(self.bob_get("fits.bin").body, first)
        self.assertEqual(self.usage(), 600000)
        # Whole body sent, refused at the end; a body refused while it is still arriving (the
        # server closes the data connection on the client); and APPE growing a file past it.
        for cmd, body in [("STOR /Home/over.bin", os.urandom(400001)),
                          ("STOR /Home/big.bin", os.urandom(3 * 1024 * 1024)),
                          ("APPE /Home/fits.bin", os.urandom(400001))]:
            with self.assertRaises(ftplib.error_perm) as cm:
                self.stor_raw(f, cmd, body)
            self.assertRegex(str(cm.exception), r"^552 quota exceeded: the quota of user bob is 1000000 bytes", cmd)
            self.assertEqual(self.usage(), 600000, cmd)
        self.assertEqual(self.bob_get("over.bin").status, 404)
        self.assertEqual(self.bob_get("big.bin").status, 404)
        self.assertEqual(self.bob_get("fits.bin").body, first)
        self.assertEqual(sorted(f.nlst("/Home")), ["fits.bin"])
        # The same session goes on, and what fits is stored: exactly up to the quota.
        more = os.urandom(400000)
        f.storbinary("APPE /Home/fits.bin", io.BytesIO(more))
        self.assertEqual(self.bob_get("fits.bin").body, first + more)
        self.assertEqual(self.usage(), self.QUOTA)
        f.quit()


class TestFtpRefusals(FtpTest):
    def test_bad_commands_and_path_traversal_change_nothing(self):
        self.srv.add_user("bob", admin_token=self.admin)
        f = self.ftp()
        self.assertTrue(f.sendcmd("NOOP").startswith("200"))
        for bad in ["XYZZ", "TOOLONGCOMMAND", "SITE FOO 777 x"]:
            with self.assertRaises(ftplib.Error) as cm:
                f.sendcmd(bad)
            self.assertRegex(str(cm.exception), r"^50[0-4]")
        # SITE CHMOD is a no-op success on a path that exists (docs/ftp.md), 550 on one that does not.
        with self.assertRaises(ftplib.error_perm) as cm:
            f.sendcmd("SITE CHMOD 777 x")
        self.assertTrue(str(cm.exception).startswith("550"), cm.exception)
        f.cwd("/../../../..")
        self.assertEqual(f.pwd(), "/")
        self.assertEqual(f.nlst("/../.."), ["Home"])
        for p in ["/../../etc/passwd", "../../../../etc/passwd", "/Home/../../etc/passwd", "/bob/x",
                  "/Home/%2e%2e/x"]:
            with self.assertRaises(ftplib.error_perm) as cm:
                f.retrbinary("RETR " + p, lambda b: self.fail("read something at " + p))
            self.assertTrue(str(cm.exception).startswith("550"), (p, cm.exception))
        with self.assertRaises(ftplib.error_perm):
            f.mkd("/NewStore")
        # Refusals by permission are 550 and change nothing: a store is not deleted over FTP.
        with self.assertRaises(ftplib.error_perm) as cm:
            f.delete("/Home")
        self.assertTrue(str(cm.exception).startswith("550 Stores are deleted in the web page"), cm.exception)
        self.assertEqual(f.nlst("/"), ["Home"])
        with self.assertRaises(ftplib.error_perm):
            f.rename("/Home", "/Other")
        f.quit()
        # bob sees only his own Home, never admin's files.
        g = self.ftp(user=("bob", "user-password-1"))
        self.assertEqual(g.nlst("/"), ["Home"])
        self.assertEqual(g.nlst("/Home"), [])
        g.quit()

    def test_port_and_eprt_to_another_host_or_low_port_are_refused(self):
        f = self.ftp()
        for cmd in ["PORT 10,0,0,1,200,10", "PORT 127,0,0,1,0,25", "EPRT |1|192.168.1.1|5000|",
                    "EPRT |2|::1|5000|", "PORT 1,2,3", "EPRT garbage"]:
            with self.assertRaises(ftplib.Error) as cm:
                f.sendcmd(cmd)
            self.assertRegex(str(cm.exception), r"^50[01]", cmd)
        # Without an accepted PORT there is no data connection to use.
        with self.assertRaises(ftplib.Error) as cm:
            f.sendcmd("LIST")
        self.assertTrue(str(cm.exception).startswith("425"))
        # The client's own address works (active mode).
        f.set_pasv(False)
        f.storbinary("STOR /Home/active.txt", io.BytesIO(b"active"))
        self.assertEqual(self.http_get("active.txt").body, b"active")
        f.quit()

    def test_wrong_password_repeated_is_locked_out(self):
        for _ in range(5):
            f = ftplib.FTP(timeout=30)
            f.connect("127.0.0.1", self.ftp_port)
            with self.assertRaises(ftplib.error_perm) as cm:
                f.login("admin", "wrong")
            self.assertTrue(str(cm.exception).startswith("530"))
            f.close()
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_port)
        with self.assertRaises(ftplib.Error) as cm:
            f.login(*ADMIN)  # even the right password while locked out
        self.assertTrue(str(cm.exception).startswith("421"), cm.exception)
        f.close()


class TestFtpConnectionDetails(FtpTest):
    """GET /api/v1/ftp: what a user types into an FTP client, from what the server listens on."""

    def test_the_details_name_the_real_listener_and_a_client_logs_in_with_them(self):
        self.assertEqual(self.srv.request("GET", "/api/v1/ftp").status, 401)
        r = self.srv.request("GET", "/api/v1/ftp", token=self.admin)
        self.assertEqual(r.status, 200, r)
        d = r.json()
        base = int(self.srv.extra_env["MBYTE_FTP_PASV_PORTS"].split("-")[0])
        self.assertEqual(d["host"], "127.0.0.1")
        self.assertEqual(d["port"], self.ftp_port)  # MBYTE_FTP_LISTEN, not the shipped 2121
        self.assertEqual(d["username"], "admin")
        self.assertEqual(d["tls"], "explicit")
        self.assertIs(d["tls_required"], True)
        self.assertIsNone(d["implicit_tls"])
        self.assertEqual(d["passive_ports"], {"min": base, "max": base + 99})
        self.assertIs(d["loopback_only"], True)
        # Another user sees his own name; with the details alone, FTPS logs in and lists.
        self.srv.add_user("carol", password="carol-password-1", admin_token=self.admin)
        tok = self.srv.login("carol", "carol-password-1")
        d = self.srv.request("GET", "/api/v1/ftp", token=tok).json()
        self.assertEqual(d["username"], "carol")
        f = ReusingFTP_TLS(context=tls_ctx(), timeout=30)
        f.connect(d["host"], d["port"])
        f.auth()
        self.assertTrue(f.login(d["username"], "carol-password-1").startswith("230"))
        f.prot_p()
        self.assertIn("Home", f.nlst("/"))
        f.quit()


class TestFtpAppPasswords(FtpTest):
    def test_app_password_logs_in_until_deleted(self):
        r = self.srv.request("POST", "/api/v1/ftp/passwords", {"name": "laptop"}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        pw = r.json()["password"]
        lst = self.srv.request("GET", "/api/v1/ftp/passwords", token=self.admin).json()
        self.assertEqual([p["name"] for p in lst], ["laptop"])
        self.assertNotIn("hash", lst[0])
        self.assertNotIn("password", lst[0])
        f = self.ftp(user=("admin", pw))
        self.assertEqual(f.nlst("/"), ["Home"])
        f.quit()
        self.assertEqual(self.srv.request("DELETE", "/api/v1/ftp/passwords/" + r.json()["id"],
                                          token=self.admin).status, 204)
        with self.assertRaises(ftplib.error_perm):
            self.ftp(user=("admin", pw))
        self.assertProblem(self.srv.request("POST", "/api/v1/ftp/passwords", {"name": ""}, token=self.admin), 400)
        self.assertProblem(self.srv.request("DELETE", "/api/v1/ftp/passwords/nothex", token=self.admin), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/ftp/passwords").status, 401)

    def test_account_app_password_logs_in_and_a_limited_one_is_refused(self):
        # The kernel's app passwords (every door) work for FTP; one limited to a store or to
        # reading is refused with 530 and the reason, since an FTP session reaches every store
        # and may write.
        r = self.srv.request("POST", "/api/v1/account/app-passwords", {"name": "nas"}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        full = r.json()["password"]
        f = self.ftp(user=("admin", full))
        self.assertEqual(f.nlst("/"), ["Home"])
        f.quit()
        sid = self.srv.request("GET", "/api/v1/stores", token=self.admin).json()[0]["id"]
        for limit in ({"read_only": True}, {"store": sid}):
            r = self.srv.request("POST", "/api/v1/account/app-passwords", dict(name="limited", **limit),
                                 token=self.admin)
            self.assertEqual(r.status, 201, r)
            with self.assertRaises(ftplib.error_perm) as cm:
                self.ftp(user=("admin", r.json()["password"]))
            self.assertIn("530", str(cm.exception))
            self.assertIn("full access", str(cm.exception))
        r = self.srv.request("GET", "/api/v1/account/app-passwords", token=self.admin).json()
        nas = [p for p in r if p["name"] == "nas"][0]
        self.assertEqual(self.srv.request("DELETE", "/api/v1/account/app-passwords/" + nas["id"],
                                          token=self.admin).status, 204)
        with self.assertRaises(ftplib.error_perm):
            self.ftp(user=("admin", full))

    def test_module_unloads_and_reloads_with_sessions_open(self):
        f = self.ftp()
        r = self.srv.request("POST", "/api/v1/admin/modules/ftp/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        # The old copy's fini says goodbye on the session it had, then closes it.
        self.assertEqual(read_to_close(f.sock), b"421 Service shutting down; reconnect\r\n")
        f.close()
        # The new copy serves new sessions on the same port.
        g = self.ftp()
        self.assertEqual(g.nlst("/"), ["Home"])
        r = self.srv.request("POST", "/api/v1/admin/modules/ftp/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)  # 200: cold, its fini has run
        self.assertEqual(read_to_close(g.sock), b"421 Service shutting down; reconnect\r\n")
        g.close()
        # Nothing listens on the port any more: a refusal, not a connection that hangs.
        with self.assertRaises(ConnectionRefusedError) as cm:
            socket.create_connection(("127.0.0.1", self.ftp_port), timeout=30).close()
        self.assertEqual(cm.exception.errno, errno.ECONNREFUSED)


class TestFtpTransfersEndingEarly(FtpTest):
    def test_an_upload_cut_midway_stores_nothing_and_the_server_keeps_serving(self):
        body = os.urandom(6 * 1024 * 1024)
        f = self.ftp()
        conn = f.transfercmd("STOR /Home/cut.bin")
        conn.sendall(body[:3 * 1024 * 1024])
        # A reset, not a clean end: the server must not take it for the end of the file.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()
        with self.assertRaises(ftplib.Error) as cm:
            f.voidresp()
        self.assertTrue(str(cm.exception).startswith("426"), cm.exception)
        self.assertEqual(self.http_get("cut.bin").status, 404)
        # A session that disappears in the middle of an upload stores nothing either.
        g = self.ftp()
        conn = g.transfercmd("STOR /Home/gone.bin")
        conn.sendall(body[:2 * 1024 * 1024])
        g.close()
        # The server ends the session and with it the data connection, leaving no file.
        conn.settimeout(20)
        try:
            self.assertEqual(conn.recv(1), b"")
        except ConnectionResetError:
            pass
        conn.close()
        # A download stopped with ABOR: 426 for the transfer, then 226 for the ABOR.
        self.srv.request("PUT", "/api/v1/stores/1/files/big.bin", body=body, token=self.admin)
        conn = f.transfercmd("RETR /Home/big.bin")
        self.assertEqual(len(conn.recv(65536)) > 0, True)
        f.putcmd("ABOR")
        with self.assertRaises(ftplib.error_temp) as cm:
            f.getresp()
        self.assertTrue(str(cm.exception).startswith("426"), cm.exception)
        self.assertTrue(f.getresp().startswith("226"))
        conn.close()
        # The same session, and the server, go on working.
        out = io.BytesIO()
        f.retrbinary("RETR /Home/big.bin", out.write)
        self.assertEqual(out.getvalue(), body)
        f.quit()
        self.assertEqual(self.http_get("gone.bin").status, 404)


    def test_a_tls_upload_ended_without_close_notify_or_by_abor_stores_nothing(self):
        body = os.urandom(3 * 1024 * 1024)
        t = self.ftp(tls=True)
        # The TCP connection ends cleanly but TLS does not (no close_notify): a truncation
        # attack looks like this, so it is not the end of the file.
        conn = t.transfercmd("STOR /Home/dirty.bin")
        conn.sendall(body[:1024 * 1024 + 7])
        conn.shutdown(socket.SHUT_WR)  # SSLSocket.shutdown drops TLS and sends a TCP FIN, no close_notify
        with self.assertRaises(ftplib.error_temp) as cm:
            t.voidresp()
        self.assertTrue(str(cm.exception).startswith("426"), cm.exception)
        conn.close()
        # ABOR in the middle of an upload: 426 for the transfer, 226 for the ABOR.
        conn = t.transfercmd("STOR /Home/aborted.bin")
        conn.sendall(body[:1024 * 1024 + 7])
        t.putcmd("ABOR")
        with self.assertRaises(ftplib.error_temp) as cm:
            t.getresp()
        self.assertTrue(str(cm.exception).startswith("426"), cm.exception)
        self.assertEqual(t.getresp(), "226 ABOR successful")
        conn.close()
        self.assertEqual(self.http_get("dirty.bin").status, 404)
        self.assertEqual(self.http_get("aborted.bin").status, 404)
        # The same session stores a whole upload (ended with close_notify) afterwards.
        self.assertTrue(t.storbinary("STOR /Home/whole.bin", io.BytesIO(body)).startswith("226"))
        self.assertEqual(self.http_get("whole.bin").body, body)
        self.assertEqual(t.nlst("/Home"), ["whole.bin"])
        t.quit()


class TestFtpBandwidthCap(FtpTest):
    LIMIT = 256 * 1024
    module_conf = {"ftp": "bandwidth_limit: %d\n" % LIMIT}

    def test_transfers_are_held_to_the_bandwidth_limit_and_arrive_intact(self):
        # The cap is a token bucket holding one second of bytes: N bytes need at least
        # (N - LIMIT) / LIMIT seconds after the first bucket.
        body = os.urandom(640 * 1024)
        self.srv.request("PUT", "/api/v1/stores/1/files/capped.bin", body=body, token=self.admin)
        f = self.ftp()
        out = io.BytesIO()
        t0 = time.monotonic()
        f.retrbinary("RETR /Home/capped.bin", out.write)
        elapsed = time.monotonic() - t0
        self.assertEqual(out.getvalue(), body)
        self.assertGreaterEqual(elapsed, (len(body) - self.LIMIT) / self.LIMIT)
        up = body[:384 * 1024]
        t0 = time.monotonic()
        f.storbinary("STOR /Home/capped-up.bin", io.BytesIO(up))
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, (len(up) - self.LIMIT) / self.LIMIT)
        self.assertEqual(self.http_get("capped-up.bin").body, up)
        f.quit()


def non_loopback_ipv4():
    """An IPv4 address of this machine that is not loopback, or None."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("198.51.100.1", 9))  # TEST-NET-2: no packet is sent, only a route chosen
        ip = s.getsockname()[0]
        s.close()
        if not ip.startswith("127."):
            return ip
    except OSError:
        pass
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            ip = parts[parts.index("inet") + 1].split("/")[0]
            if not ip.startswith("127."):
                return ip
    return None


class TestFtpListeners(unittest.TestCase):
    """IPv6, the implicit-TLS port and the idle timeout, each on a server of its own."""

    def server(self, env, conf=""):
        port = harness.free_port()
        base = random.randrange(20000, 60000, 100)
        e = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % port, "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        e.update(env)
        srv = harness.Server(modules={"ftp": True}, env=e, module_conf={"ftp": conf} if conf else None)
        self.addCleanup(srv.cleanup)
        srv.start()
        return srv, port

    def test_ipv6_listener_with_epsv_transfers_a_file(self):
        port = harness.free_port()
        srv, _ = self.server({"MBYTE_FTP_LISTEN": "[::1]:%d" % port})
        data = os.urandom(200000)
        f = ftplib.FTP(timeout=30)
        f.af = socket.AF_INET6
        f.connect("::1", port)
        f.login(*ADMIN)
        f.storbinary("STOR /Home/v6.bin", io.BytesIO(data))  # ftplib uses EPSV on IPv6
        got = io.BytesIO()
        f.retrbinary("RETR /Home/v6.bin", got.write)
        f.quit()
        self.assertEqual(got.getvalue(), data)
        srv.stop()

    def test_implicit_tls_port_speaks_tls_from_the_first_byte(self):
        iport = harness.free_port()
        srv, _ = self.server({"MBYTE_FTP_IMPLICIT_LISTEN": "127.0.0.1:%d" % iport})
        raw = socket.create_connection(("127.0.0.1", iport), timeout=10)
        tls = tls_ctx().wrap_socket(raw, server_hostname="127.0.0.1")
        greeting = tls.recv(200)
        self.assertTrue(greeting.startswith(b"220"), greeting)
        tls.sendall(b"USER admin\r\n")
        self.assertTrue(tls.recv(200).startswith(b"331"))
        tls.sendall(b"PASS %s\r\n" % harness.ADMIN_PASSWORD.encode())
        self.assertTrue(tls.recv(200).startswith(b"230"))
        tls.close()
        d = srv.request("GET", "/api/v1/ftp", token=srv.login()).json()
        self.assertEqual(d["implicit_tls"], {"host": "127.0.0.1", "port": iport})
        srv.stop()

    def test_the_removed_lockout_keys_are_refused_by_config_check_and_at_start(self):
        # Failed FTP logins count in the kernel's login throttle (test_wrong_password_repeated_
        # is_locked_out); ftp.yaml's own max_login_failures/lockout_seconds did nothing, so a file
        # that still sets them is refused with its file, line and key instead of being trusted.
        port = harness.free_port()
        srv = harness.Server(modules={"ftp": True}, env={"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % port},
                             module_conf={"ftp": "idle_timeout: 60\n"})
        self.addCleanup(srv.cleanup)
        srv.start()
        with open(os.path.join(srv.confdir, "ftp.yaml"), "w") as f:
            f.write("idle_timeout: 60\nmax_login_failures: 3\nlockout_seconds: 600\n")
        check = srv.ctl("config", "check")
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("ftp.yaml:2: unknown key 'max_login_failures'", check.stdout)
        # At the next start the module stays off, with the same reason in the log.
        srv.stop()
        srv.start()
        logged = srv.wait_log("module ftp not loaded")
        self.assertIn("ftp.yaml:2: unknown key 'max_login_failures'", logged)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        srv.stop()

    def test_tls_is_required_for_logins_from_a_non_loopback_address(self):
        # In a network namespace of the test's own with a non-loopback address, so it runs on
        # any machine where it is root; else from this machine's own non-loopback address.
        net = harness.PrivateNetwork()
        try:
            ip = net.__enter__()
            self.addCleanup(net.__exit__)
        except OSError as e:
            ip = non_loopback_ipv4()
            if not ip:
                harness.missing_prerequisite(self, "no network namespace (%s) and no non-loopback IPv4 address "
                                             "to connect from" % e)
        port = harness.free_port()
        srv, _ = self.server({"MBYTE_FTP_LISTEN": "0.0.0.0:%d" % port})
        f = ftplib.FTP(timeout=30)
        f.connect(ip, port)
        for cmd in ("USER admin", "PASS " + harness.ADMIN_PASSWORD):
            with self.assertRaises(ftplib.error_perm) as cm:
                f.sendcmd(cmd)
            self.assertRegex(str(cm.exception), r"^53[04] .*TLS")
        with self.assertRaises(ftplib.error_perm):
            f.nlst("/")  # not logged in
        f.close()
        g = ReusingFTP_TLS(context=tls_ctx(), timeout=30)
        g.connect(ip, port)
        g.auth()
        g.login(*ADMIN)
        with self.assertRaises(ftplib.error_perm) as cm:
            g.prot_c()  # clear data is refused off loopback too
        self.assertTrue(str(cm.exception).startswith("534"), cm.exception)
        g.prot_p()
        g.storbinary("STOR /Home/remote.txt", io.BytesIO(b"over tls from afar"))
        self.assertEqual(g.nlst("/Home"), ["remote.txt"])
        g.quit()
        # The same server on loopback takes a plain login.
        h = ftplib.FTP(timeout=30)
        h.connect("127.0.0.1", port)
        h.login(*ADMIN)
        out = io.BytesIO()
        h.retrbinary("RETR /Home/remote.txt", out.write)
        self.assertEqual(out.getvalue(), b"over tls from afar")
        h.quit()
        srv.stop()

    def test_reload_closes_the_old_copys_sessions_with_421(self):
        srv, port = self.server({})
        admin = srv.login()
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", port)
        f.login(*ADMIN)
        f.storbinary("STOR /Home/kept.txt", io.BytesIO(b"kept"))
        t = ReusingFTP_TLS(context=tls_ctx(), timeout=30)  # AUTH TLS: the 421 is encrypted
        t.connect("127.0.0.1", port)
        t.auth()
        t.login(*ADMIN)
        r = srv.request("POST", "/api/v1/admin/modules/ftp/reload", token=admin)
        self.assertEqual(r.status, 200, r)
        # The old copy's fini says goodbye on every open session, then closes it.
        for c in (f, t):
            got = harness.recv_until(c.sock, b"\r\n", timeout=20)
            self.assertTrue(got.startswith(b"421 "), got)
            try:
                rest = harness.recv_until(c.sock, b"never", timeout=20)
            except (ssl.SSLError, ConnectionResetError):
                rest = b""  # a TLS connection may end without close_notify
            self.assertEqual(rest, b"")
            c.close()
        # The new copy serves new sessions, on the same port, with the same files.
        g = ftplib.FTP(timeout=30)
        g.connect("127.0.0.1", port)
        g.login(*ADMIN)
        out = io.BytesIO()
        g.retrbinary("RETR /Home/kept.txt", out.write)
        self.assertEqual(out.getvalue(), b"kept")
        g.quit()
        srv.stop()

    def test_an_idle_session_is_closed_with_421(self):
        srv, port = self.server({}, "idle_timeout: 1\n")
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", port)
        f.login(*ADMIN)
        # Say nothing: the server speaks once the second has passed, then closes.
        self.assertEqual(read_to_close(f.sock), b"421 Idle timeout; closing the connection\r\n")
        f.close()
        srv.stop()


if __name__ == "__main__":
    harness.main()

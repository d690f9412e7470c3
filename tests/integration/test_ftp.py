"""FTP/FTPS module (modules/ftp) against a real mbyted with real clients: curl, lftp and
Python's ftplib. Each test gets its own daemon, FTP port and passive port range."""
import ftplib
import time
import hashlib
import io
import os
import random
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

ADMIN = ("admin", harness.ADMIN_PASSWORD)
TEST_MODULE_DIR = os.environ.get("MBYTE_TEST_MODULE_DIR", "")


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib does not resume the control session on data connections; the server requires
    it (like vsftpd's require_ssl_reuse), so pass the session along."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


def tls_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class FtpTest(harness.ServerTest):
    extra_modules = {}

    def setUp(self):
        self.ftp_port = harness.free_port()
        base = random.randrange(20000, 60000, 100)
        self.moddir = None
        env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
               "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        modules = {"ftp": True}
        modules.update(self.extra_modules)
        if self.extra_modules:
            # Test-only modules live in their own build folder: gather a module dir for this run.
            self.moddir = tempfile.mkdtemp(prefix="mbyte-ftp-mods-")
            shutil.copy(os.path.join(harness.MODULE_DIR, "ftp.so"), self.moddir)
            for m in self.extra_modules:
                shutil.copy(os.path.join(TEST_MODULE_DIR, m + ".so"), self.moddir)
            env["MBYTE_MODULE_DIR"] = self.moddir
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
            if self.moddir:
                shutil.rmtree(self.moddir, ignore_errors=True)

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

    def write(self, name, data):
        p = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return p


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


class TestFtpRefusals(FtpTest):
    extra_modules = {"ftpdeny": True}

    def test_quota_refusal_is_552_and_permission_refusal_is_550(self):
        f = self.ftp()
        with self.assertRaises(ftplib.error_perm) as cm:
            f.storbinary("STOR /Home/over-quota.bin", io.BytesIO(b"z" * 100000))
        self.assertTrue(str(cm.exception).startswith("552"), cm.exception)
        self.assertEqual(self.http_get("over-quota.bin").status, 404)
        f.storbinary("STOR /Home/protected.txt", io.BytesIO(b"keep"))
        with self.assertRaises(ftplib.error_perm) as cm:
            f.delete("/Home/protected.txt")
        self.assertTrue(str(cm.exception).startswith("550"), cm.exception)
        self.assertEqual(self.http_get("protected.txt").body, b"keep")
        f.quit()

    def test_bad_commands_and_path_traversal_change_nothing(self):
        self.srv.add_user("bob", admin_token=self.admin)
        f = self.ftp()
        self.assertTrue(f.sendcmd("NOOP").startswith("200"))
        for bad in ["XYZZ", "TOOLONGCOMMAND", "SITE CHMOD 777 x"]:
            with self.assertRaises(ftplib.Error) as cm:
                f.sendcmd(bad)
            self.assertRegex(str(cm.exception), r"^50[0-4]")
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

    def test_module_unloads_and_reloads_with_sessions_open(self):
        f = self.ftp()
        r = self.srv.request("POST", "/api/v1/admin/modules/ftp/reload", token=self.admin)
        self.assertIn(r.status, (200, 202), r)
        g = self.ftp()
        self.assertEqual(g.nlst("/"), ["Home"])
        g.quit()
        try:
            f.close()
        except OSError:
            pass
        r = self.srv.request("POST", "/api/v1/admin/modules/ftp/unload", token=self.admin)
        self.assertIn(r.status, (200, 202), r)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.ftp_port), timeout=5).recv(10) or (_ for _ in ()).throw(
                ConnectionRefusedError())


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
        self.assertIn(r.status, (200, 202), r)
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
        time.sleep(2.5)
        line = f.sock.recv(200)
        self.assertTrue(line.startswith(b"421"), line)
        f.close()
        srv.stop()


if __name__ == "__main__":
    harness.main()

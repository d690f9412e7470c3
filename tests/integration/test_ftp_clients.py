"""FTP module (modules/ftp) against the holes real clients and an attacker found (issue 25):
lftp and rclone with their default settings, raw control-channel bytes, and a flood of
connections that never log in. Each test gets its own daemon, FTP port and passive range."""
import ftplib
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ADMIN = ("admin", harness.ADMIN_PASSWORD)


class FtpClientTest(harness.ServerTest):
    """A daemon with the ftp module on a port of its own; module_conf may add ftp.yaml lines."""

    def setUp(self):
        self.ftp_port = harness.free_port()
        self.implicit_port = harness.free_port()
        base = random.randrange(20000, 60000, 100)
        env = {"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % self.ftp_port,
               "MBYTE_FTP_IMPLICIT_LISTEN": "127.0.0.1:%d" % self.implicit_port,
               "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)}
        self.srv = harness.Server(modules={"ftp": True}, env=env, module_conf=self.module_conf)
        self.srv.start()
        self.admin = self.srv.login()
        self.tmp = tempfile.mkdtemp(prefix="mbyte-ftpc-")

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----
    def ftp(self, source="127.0.0.1"):
        f = ftplib.FTP(timeout=60, source_address=(source, 0))
        f.connect("127.0.0.1", self.ftp_port)
        f.login(*ADMIN)
        return f

    def put(self, path, data):
        r = self.srv.request("PUT", "/api/v1/stores/1/files/%s?parents=true" % path, body=data, token=self.admin)
        self.assertEqual(r.status, 201, r)

    def get(self, path):
        return self.srv.request("GET", "/api/v1/stores/1/files/" + path, token=self.admin)

    def names(self, path=""):
        r = self.srv.request("GET", "/api/v1/stores/1/list/" + path, token=self.admin)
        self.assertEqual(r.status, 200, r)
        return sorted(e["name"] for e in r.json()["entries"])

    def lftp(self, commands, timeout=600):
        """lftp with its default settings (so explicit FTPS with protected data, SITE CHMOD after
        uploads, ...) except trusting the test's self-signed certificate: its own file as the CA
        file (lftp reads the whole system CA bundle for every data connection otherwise, which
        was most of the client's CPU time), without the host name check (it names no host)."""
        cert = os.path.join(self.srv.data, "m", "ftp", "cert.pem")
        script = ("set ssl:ca-file '%s'; set ssl:verify-certificate no; set net:max-retries 2; "
                  "open -u %s,%s -p %d 127.0.0.1; %s; bye" % (cert, ADMIN[0], ADMIN[1], self.ftp_port, commands))
        return subprocess.run(["lftp", "-c", script], capture_output=True, timeout=timeout)

    def raw(self, source="127.0.0.1"):
        """A logged-in control connection as a plain socket, for bytes no client library sends."""
        c = socket.create_connection(("127.0.0.1", self.ftp_port), timeout=30, source_address=(source, 0))
        self.assertTrue(harness.recv_until(c, b"\r\n").startswith(b"220"))
        c.sendall(b"USER admin\r\n")
        self.assertTrue(harness.recv_until(c, b"\r\n").startswith(b"331"))
        c.sendall(b"PASS %s\r\n" % ADMIN[1].encode())
        self.assertTrue(harness.recv_until(c, b"\r\n").startswith(b"230"))
        return c


def replies(sock, n, timeout=30):
    """The next n reply lines (a line starting "ddd " ends a reply)."""
    got = []
    buf = b""
    sock.settimeout(timeout)
    while len(got) < n:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return got
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        if len(line) >= 4 and line[3:4] == b" ":
            got.append(line.decode("utf-8", "replace"))
    return got


class TestControlChannel(FtpClientTest):
    def test_a_bare_lf_inside_a_command_never_runs_a_second_command(self):
        self.put("victim.txt", b"keep me")
        c = self.raw()
        # A name with a line feed in it, as a client sends it for a file called
        # "a<LF>DELE victim.txt": the command ends at CRLF only, so both pieces are refused
        # (each with its own 553: lftp waits for a reply after each LF-ended piece).
        c.sendall(b"DELE a\nDELE /Home/victim.txt\r\nNOOP\r\n")
        got = replies(c, 3)
        self.assertTrue(got[0].startswith("553 "), got)
        self.assertTrue(got[1].startswith("553 "), got)
        self.assertTrue(got[2].startswith("200 "), got)  # the NOOP
        # The piece after the LF arriving later (as lftp sends it) is refused all the same.
        c.sendall(b"DELE a\n")
        self.assertTrue(replies(c, 1)[0].startswith("553 "))
        c.sendall(b"DELE /Home/victim.txt\r\n")
        self.assertTrue(replies(c, 1)[0].startswith("553 "))
        c.sendall(b"MKD /Home/x\ny\r\nRNFR /Home/victim.txt\r\nRNTO /Home/a\rb\r\n")
        got = replies(c, 4)
        self.assertTrue(got[0].startswith("553 ") and got[1].startswith("553 "), got)
        self.assertTrue(got[2].startswith("350 "), got)
        self.assertTrue(got[3].startswith("553 "), got)  # a bare CR is refused too
        c.sendall(b"QUIT\r\n")
        c.close()
        self.assertEqual(self.get("victim.txt").body, b"keep me")
        self.assertEqual(self.names(), ["victim.txt"])

    def test_lftp_mirror_of_a_name_with_a_line_feed_deletes_nothing(self):
        self.put("dst/victim.txt", b"keep me")
        self.put("victim.txt", b"keep me too")
        src = os.path.join(self.tmp, "src")
        os.makedirs(src)
        with open(os.path.join(src, "a\nDELE victim.txt"), "wb") as f:
            f.write(b"payload")
        with open(os.path.join(src, "ok.txt"), "wb") as f:
            f.write(b"fine")
        r = self.lftp("mirror -R %s /Home/dst" % src)
        # lftp reports the refused name (553); everything else went through.
        self.assertIn(b"553", r.stderr, r.stderr)
        self.assertEqual(self.get("dst/victim.txt").body, b"keep me")
        self.assertEqual(self.get("victim.txt").body, b"keep me too")
        self.assertEqual(self.names("dst"), ["ok.txt", "victim.txt"])  # no upload stored as "a"
        self.assertEqual(self.get("dst/ok.txt").body, b"fine")

    def test_site_chmod_succeeds_without_changing_anything_and_lftp_mirror_exits_0(self):
        c = self.raw()
        self.put("f.txt", b"x")
        c.sendall(b"SITE CHMOD 644 /Home/f.txt\r\nSITE CHMOD 755 /Home/nope.txt\r\nSITE CHMOD /Home/f.txt\r\n")
        got = replies(c, 3)
        self.assertTrue(got[0].startswith("200 "), got)
        self.assertTrue(got[1].startswith("550 "), got)  # a missing file is still reported
        self.assertTrue(got[2].startswith("501 "), got)
        c.close()
        src = os.path.join(self.tmp, "tree")
        for i in range(30):
            p = os.path.join(src, "d%d" % (i % 3), "f%02d.txt" % i)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(b"file %d\n" % i)
            os.chmod(p, 0o640 if i % 2 else 0o755)  # mirror -R sends SITE CHMOD for each
        r = self.lftp("mirror -R %s /Home/tree" % src)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(r.stderr, b"")
        self.assertEqual(self.get("tree/d1/f04.txt").body, b"file 4\n")

    def test_mkd_answers_550_for_an_existing_folder_and_for_a_new_store(self):
        f = self.ftp()
        f.mkd("/Home/docs")
        with self.assertRaises(ftplib.error_perm) as cm:
            f.mkd("/Home/docs")
        self.assertTrue(str(cm.exception).startswith("550 "), cm.exception)
        with self.assertRaises(ftplib.error_perm) as cm:
            f.mkd("/newstore")
        self.assertRegex(str(cm.exception), r"^550 Stores are created through the web page or the API")
        f.quit()


# Names for the odd-names tree: every kind a user's files really have. Left out, because MByte
# refuses them on every door (kernel/fs.c): control characters (so CR/LF too), "/" inside a
# name, "." and "..", names over 255 bytes after NFC. MByte keeps names in NFC (docs/storage.md),
# so a name sent in NFD comes back in NFC: names are compared after NFC, and no folder holds
# both forms of one name.
ODD_NAMES = [
    "plain.txt", "with space.txt", "two  spaces.txt", " leading space.txt", "trailing space.txt ",
    "caf\u00e9 NFC.txt", unicodedata.normalize("NFD", "r\u00e9sum\u00e9 NFD.txt"), "\u65e5\u672c\u8a9e.txt",
    "emoji \U0001f600.txt", "\u0645\u0631\u062d\u0628\u0627.txt", "it's.txt", 'say "hi".txt', "back`tick`.txt",
    "#hash.txt", "a#b#c.txt", "100% done.txt", "%41%2F%25.txt", "-leading-dash.txt", "--help", "-rf",
    "semi;colon.txt", "amp&and.txt", "star*.txt", "question?.txt", "[brackets].txt", "{braces}.txt",
    "back\\slash.txt", "tab\u00a0nbsp.txt", "dots...txt", ".hidden", "..double-dot-start",
    "L" * 255, "\u00e9" * 127 + "x", "very " * 40 + "long.txt",
]
ODD_DIRS = ["dir with space", "\u00fcn\u00efc\u00f8d\u00e9", "#hash dir", "%41 pct", "-dash dir", "it's \"quoted\"",
            unicodedata.normalize("NFD", "d\u00e9j\u00e0 vu"), "nested"]


def odd_tree(root, count):
    """count real files (from /usr/share/doc) under root with names from ODD_NAMES, in nested
    folders with odd names; returns {relative path: sha256}."""
    docs = sorted(os.path.join(d, n) for d, _, ns in os.walk("/usr/share/doc") for n in ns
                  if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n)))
    want = {}
    for i in range(count):
        src = docs[i % len(docs)]
        folder = os.path.join(ODD_DIRS[i % len(ODD_DIRS)], ODD_DIRS[(i // 7) % len(ODD_DIRS)])
        if i % 5 == 0:
            folder = os.path.join(folder, "deeper", ODD_DIRS[(i // 3) % len(ODD_DIRS)])
        name = ODD_NAMES[i % len(ODD_NAMES)]
        # Keep the odd part where it is (front, end) and make the name unique.
        stem = "%d %s" % (i, os.path.basename(src)) if len(name.encode()) > 200 else "%s %d" % (name, i)
        if len(name.encode()) > 200:
            name = name.encode()[:255 - len(stem.encode()) - 1].decode("utf-8", "ignore") + " " + stem
        else:
            name = stem if i % 2 else "%d %s" % (i, name)
        path = os.path.join(root, folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(src, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o755 if i % 4 == 0 else 0o644)  # scripts among documents: mirror -R sends SITE CHMOD
        want[os.path.relpath(path, root)] = hashlib.sha256(data).hexdigest()
    return want


def tree_hashes(root):
    got = {}
    for d, _, ns in os.walk(root):
        for n in ns:
            with open(os.path.join(d, n), "rb") as f:
                got[os.path.relpath(os.path.join(d, n), root)] = hashlib.sha256(f.read()).hexdigest()
    return got


class TestLftpFtps(FtpClientTest):
    def test_lftp_mirrors_thousands_of_odd_names_up_and_back_identical(self):
        src, down = os.path.join(self.tmp, "src"), os.path.join(self.tmp, "down")
        # 2500 files ("a few thousand", issue 25): each is a TLS data connection both ways, about
        # 14 ms of the ASan server's CPU; MBYTE_TEST_ODD_FILES sets another count.
        count = int(os.environ.get("MBYTE_TEST_ODD_FILES", "2500"))
        want = odd_tree(src, count)
        self.assertEqual(len(want), count)
        r = self.lftp("mirror -R --parallel=8 %s /Home/odd; mirror --parallel=8 /Home/odd %s" % (src, down))
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-3000:])
        self.assertEqual(r.stderr, b"")
        nfc = {unicodedata.normalize("NFC", k): v for k, v in want.items()}
        got = tree_hashes(down)
        self.assertEqual(sorted(set(nfc) - set(got))[:10], [])
        self.assertEqual(sorted(set(got) - set(nfc))[:10], [])
        self.assertEqual(got, nfc)

    def test_lftp_ftps_downloads_200_small_files_byte_for_byte(self):
        # Each file is a TLS data connection of its own: the handshake's round trips (and the
        # delayed ACK that once stalled each one for 40 ms) are most of the work.
        want = {}
        for i in range(200):
            data = os.urandom(100 + i * 37)
            self.put("small/f%03d.bin" % i, data)
            want["f%03d.bin" % i] = hashlib.sha256(data).hexdigest()
        down = os.path.join(self.tmp, "small")
        r = self.lftp("mirror /Home/small %s" % down)
        self.assertEqual(r.returncode, 0, r.stderr.decode()[-3000:])
        self.assertEqual(tree_hashes(down), want)


class TestRclone(FtpClientTest):
    def rclone(self, *args):
        obscured = subprocess.run(["rclone", "obscure", ADMIN[1]], capture_output=True, text=True,
                                  check=True).stdout.strip()
        env = dict(os.environ, RCLONE_CONFIG=os.path.join(self.tmp, "no-rclone.conf"),
                   RCLONE_CONFIG_MB_TYPE="ftp", RCLONE_CONFIG_MB_HOST="127.0.0.1",
                   RCLONE_CONFIG_MB_PORT=str(self.ftp_port), RCLONE_CONFIG_MB_USER=ADMIN[0],
                   RCLONE_CONFIG_MB_PASS=obscured, RCLONE_CONFIG_MB_EXPLICIT_TLS="true",
                   RCLONE_CONFIG_MB_NO_CHECK_CERTIFICATE="true")
        return subprocess.run(["rclone"] + list(args), env=env, capture_output=True, text=True, timeout=300)

    def test_rclone_sync_over_ftps_needs_no_retry(self):
        src = os.path.join(self.tmp, "src")
        body = {}
        for i in range(12):
            name = os.path.join("sub%d" % (i % 3), "deep", "f%d.bin" % i)
            body[name] = os.urandom(1000 + i * 777)
            os.makedirs(os.path.join(src, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(src, name), "wb") as f:
                f.write(body[name])
        for run in range(2):  # the second sync finds every folder there already
            if run:
                with open(os.path.join(src, "sub0", "new.txt"), "wb") as f:
                    f.write(b"new")
                body[os.path.join("sub0", "new.txt")] = b"new"
            r = self.rclone("sync", src, "mb:Home/dst", "-v", "--retries", "3")
            self.assertEqual(r.returncode, 0, r.stderr)
            # rclone retries the whole sync after any failed step ("Attempt 1/3 failed with N
            # errors"); its "SetModTime is not supported" lines are only notes (no MFMT here,
            # as with vsftpd) and fail nothing.
            self.assertNotIn("Attempt 1/3 failed", r.stderr)
        for name, data in body.items():
            self.assertEqual(self.get("dst/" + name).body, data, name)


class TestLoginFlood(FtpClientTest):
    def test_connections_that_never_log_in_do_not_lock_out_a_real_user(self):
        # 300 connections from five loopback addresses (60 each, under the per-address limit)
        # that never send a command: more than max_sessions (256).
        flood = []
        try:
            for i in range(300):
                s = socket.socket()
                s.bind(("127.0.0.%d" % (2 + i % 5), 0))
                s.settimeout(30)
                s.connect(("127.0.0.1", self.ftp_port))
                flood.append(s)
            # Every connection was answered (220, or a 421 for one closed to make room).
            for s in flood:
                self.assertRegex(harness.recv_until(s, b"\r\n"), rb"^(220|421) ")
            f = self.ftp()  # from 127.0.0.1, an address of its own
            f.storbinary("STOR /Home/in.txt", io.BytesIO(b"got in"))
            self.assertEqual(f.nlst("/Home"), ["in.txt"])
            f.quit()
            # And from one of the flooding addresses too: the oldest waiting connection goes.
            g = self.ftp(source="127.0.0.3")
            self.assertEqual(g.nlst("/Home"), ["in.txt"])
            g.quit()
        finally:
            for s in flood:
                s.close()


class TestLoginTimeout(FtpClientTest):
    module_conf = {"ftp": "login_timeout: 1\n"}

    def test_a_connection_that_does_not_log_in_in_time_is_closed_with_421(self):
        s = socket.create_connection(("127.0.0.1", self.ftp_port), timeout=60)
        self.assertTrue(harness.recv_until(s, b"\r\n").startswith(b"220"))
        s.sendall(b"USER admin\r\n")  # commands do not extend the deadline; only a login ends it
        got = harness.recv_until(s, b"421", timeout=60)
        self.assertIn(b"\r\n421 Login timeout", got)
        self.assertEqual(harness.recv_until(s, b"never", timeout=60), b"")  # closed
        s.close()
        # On the implicit-TLS port a client that never finishes its handshake cannot read the
        # 421: the connection is closed all the same (it was kept for good before).
        t = socket.create_connection(("127.0.0.1", self.implicit_port), timeout=60)
        t.sendall(b"\x16\x03\x01\x00\x10")  # the start of a ClientHello, and nothing more
        self.assertEqual(harness.recv_until(t, b"never", timeout=60), b"")
        t.close()
        # A session that logged in is not affected by the login deadline.
        f = self.ftp()
        deadline = time.time() + 2.5
        while time.time() < deadline:
            f.voidcmd("NOOP")
            time.sleep(0.5)
        f.quit()


if __name__ == "__main__":
    harness.main()

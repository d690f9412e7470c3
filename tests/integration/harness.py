"""The one helper every integration test uses: a real mbyted on a free port with a
temporary data directory, and small real HTTP clients (http.client) to talk to it.

Environment (set by tests/meson.build): MBYTED, MBYTECTL, MBYTE_MODULE_DIR, MBYTE_SOURCE_ROOT.
When the daemon stops, the test asserts it exited 0: under AddressSanitizer a leak or a
memory error at any point makes the exit status non-zero, so every integration test is
also a sanitizer test.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SRC = os.environ.get("MBYTE_SOURCE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
MBYTED = os.environ.get("MBYTED", os.path.join(SRC, "build", "mbyted"))
MBYTECTL = os.environ.get("MBYTECTL", os.path.join(SRC, "build", "tools", "mbytectl"))
MODULE_DIR = os.environ.get("MBYTE_MODULE_DIR", os.path.join(SRC, "build", "modules"))
ADMIN_PASSWORD = "admin-password-1"


def kernel_abi():
    """The ABI version abi/mbyte.h declares, as "major.minor" (what modules are built with)."""
    import re
    with open(os.path.join(SRC, "abi", "mbyte.h")) as f:
        text = f.read()
    major = re.search(r"#define MB_ABI_MAJOR (\d+)", text).group(1)
    minor = re.search(r"#define MB_ABI_MINOR (\d+)", text).group(1)
    return "%s.%s" % (major, minor)


_handed_out = set()


def _port_range():
    """The ports the kernel hands out on its own (connect, bind to 0): a port picked there
    can be taken by any process's outgoing connection between our probe and the server's
    bind, and a probe on 127.0.0.1 does not see one taken on another address."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def free_port():
    """A port nothing uses on any address now, below the kernel's ephemeral range so that no
    outgoing connection takes it before the server binds it, never one this process handed
    out before (a test often asks for two: HTTP, FTP)."""
    low, high = _port_range()
    first, last = (10000, low - 1) if low > 12000 else (high + 1, 65535)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randint(first, last)
        if port in _handed_out:
            continue
        s = socket.socket()
        try:
            s.bind(("", port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise AssertionError("no free port found")


def recv_until(sock, marker, timeout=20):
    """Read from a raw socket until `marker` appears or the peer closes; returns what came."""
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Server:
    """A real mbyted. conf: dict of extra kernel YAML lines; modules: {name: bool}."""

    def __init__(self, modules=None, conf=None, module_conf=None, env=None, data_dir=None):
        self.tmp = tempfile.mkdtemp(prefix="mbyte-test-")
        self.data = data_dir or os.path.join(self.tmp, "data")
        self.confdir = os.path.join(self.tmp, "conf.d")
        os.makedirs(self.confdir)
        self.port = free_port()
        self.modules = modules or {}
        self.conf = conf or {}
        self.module_conf = module_conf or {}
        self.extra_env = env or {}
        self.proc = None
        self.log_path = os.path.join(self.tmp, "mbyted.log")
        self.write_config()

    def write_config(self):
        lines = ["log_level: debug"]
        for k, v in self.conf.items():
            lines.append("%s: %s" % (k, v))
        if self.modules:
            lines.append("modules:")
            for name, on in self.modules.items():
                lines.append("  %s: %s" % (name, "true" if on else "false"))
        with open(os.path.join(self.confdir, "mbyte.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        # Data files the shipped configuration refers to (not module settings: each test
        # states the module settings it relies on) come along, as on a real install.
        for data in ["store-template.yaml"]:
            shutil.copy(os.path.join(SRC, "conf.d", data), os.path.join(self.confdir, data))
        for name, text in self.module_conf.items():
            with open(os.path.join(self.confdir, name + ".yaml"), "w") as f:
                f.write(text)

    def env(self):
        e = dict(os.environ)
        e.update({
            "MBYTE_LISTEN": "127.0.0.1:%d" % self.port,
            "MBYTE_DATA": self.data,
            "MBYTE_MODULE_DIR": MODULE_DIR,
            "MBYTE_WEB_DIR": os.path.join(SRC, "web"),
            "MBYTE_LUA_DIR": os.path.join(SRC, "scripts", "lua"),
            "MBYTE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ASAN_OPTIONS": os.environ.get("MBYTE_TEST_ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23"),
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=24",
        })
        e.update(self.extra_env)
        return e

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MBYTED, "--config", self.confdir], env=self.env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mbyted exited with %s:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                r = self.request("GET", "/api/v1/health")
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("mbyted did not become ready:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_mark(self):
        """Where the log ends now: wait_log(text, since=mark) looks only at what comes later."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, text, since=0, timeout=60):
        """Wait until `text` appears in the log after byte `since`, and return that part of the
        log. The deadline is generous: it only ends a wait for something really stuck, and
        a daemon that exits meanwhile ends it at once."""
        deadline = time.time() + timeout
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                tail = f.read().decode("utf-8", "replace")
            if text in tail:
                return tail
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("mbyted exited (%s) before logging %r:\n%s" % (self.proc.returncode, text,
                                                                                   tail[-5000:]))
            if time.time() > deadline:
                raise AssertionError("mbyted did not log %r within %d s:\n%s" % (text, timeout, tail[-5000:]))
            time.sleep(0.02)

    def stop(self, expect_rc=0):
        """SIGTERM, wait, and check the exit status (sanitizer findings make it non-zero)."""
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("mbyted did not stop within 60 s:\n" + self.read_log()[-5000:])
        self.proc = None
        self.log.close()
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError("mbyted exited %s (want %s):\n%s" % (rc, expect_rc, self.read_log()[-20000:]))
        return rc

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()

    def cleanup(self):
        if self.proc:
            self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- clients ----
    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, token=None, headers=None, timeout=60):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data)
        finally:
            c.close()

    def login(self, username="admin", password=ADMIN_PASSWORD):
        r = self.request("POST", "/api/v1/auth/login", {"username": username, "password": password})
        if r.status != 200:
            raise AssertionError("login %s failed: %r" % (username, r))
        return r.json()["token"]

    def add_user(self, username, password="user-password-1", role="user", admin_token=None):
        tok = admin_token or self.login()
        r = self.request("POST", "/api/v1/admin/users",
                         {"username": username, "password": password, "role": role}, token=tok)
        if r.status != 201:
            raise AssertionError("add user %s failed: %r" % (username, r))
        return self.login(username, password)

    def ctl(self, *args, input=None, env=None):
        e = dict(os.environ)
        e["MBYTE_DATA"] = self.data
        e.update(env or {})
        return subprocess.run([MBYTECTL] + list(args), input=input, capture_output=True, text=True, env=e,
                              timeout=120)


class ServerTest(unittest.TestCase):
    """A test case with one fresh server per test (self.srv) unless the class says otherwise."""
    modules = None
    conf = None
    module_conf = None

    def setUp(self):
        self.srv = Server(modules=self.modules, conf=self.conf, module_conf=self.module_conf)
        self.srv.start()
        self.admin = self.srv.login()

    def tearDown(self):
        try:
            if self.srv.proc:
                self.srv.stop()
        finally:
            self.srv.cleanup()

    def assertProblem(self, r, status, contains=None):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("Content-Type"), "application/problem+json", r)
        p = r.json()
        self.assertEqual(p["status"], status)
        self.assertTrue(p.get("title"))
        self.assertTrue(p.get("detail"))
        if contains:
            self.assertIn(contains, p["detail"])
        return p


class HeldRequest:
    """A request whose body goes out in two parts over a raw socket, so the test decides when
    the server gets the rest: two requests held at once are concurrent for sure. The first
    `split` bytes of the body are sent in two sends, each waited on until the server read it,
    so the server has also acted on the headers (checks done, locks taken) on return."""

    def __init__(self, test, srv, method, path, body, split, headers):
        self.body, self.split = body, split
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        head = "%s %s HTTP/1.1\r\nHost: mbyte\r\nContent-Length: %d\r\n" % (method, path, len(body))
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        self.sock.sendall(head.encode() + body[:split - 1])
        wait_read_by_server(test, srv.port, self.sock)
        self.sock.sendall(body[split - 1:split])
        wait_read_by_server(test, srv.port, self.sock)

    def finish(self):
        """Send the rest of the body and return the answer (a Response)."""
        self.sock.sendall(self.body[self.split:])
        return self.answer()

    def answer(self):
        r = http.client.HTTPResponse(self.sock)
        r.begin()
        body = r.read()
        self.sock.close()
        return Response(r.status, r.getheaders(), body)

    def cut(self):
        """The client goes away mid-body."""
        self.sock.close()


def wait_read_by_server(test, server_port, sock, timeout=60):
    """Wait until the server has read everything the client sent on `sock` (the server end's
    receive queue in /proc/net/tcp is empty): what was sent is in the server's hands then."""
    client_port = sock.getsockname()[1]
    deadline = time.time() + timeout
    while True:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, queues = fields[1], fields[2], fields[4]
                if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                    if int(queues.split(":")[1], 16) == 0:
                        return
                    break
            else:
                return  # the server closed its end: it read all it will
        test.assertLess(time.time(), deadline, "the server never read what was sent")
        time.sleep(0.01)


def refused_at_start(test, conf, sentence):
    """mbyted started with these mbyte.yaml settings exits non-zero, saying `sentence`."""
    srv = Server(conf=conf)
    try:
        p = subprocess.run([MBYTED, "--config", srv.confdir], env=srv.env(), capture_output=True, text=True,
                           timeout=60)
        test.assertNotEqual(p.returncode, 0)
        test.assertIn(sentence, p.stdout + p.stderr)
    finally:
        srv.cleanup()


def missing_prerequisite(test, reason):
    """A test that cannot run on this machine: a failure under CI (CI=true), where every test
    must run, and a skip that says why elsewhere. Never a quiet skip."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        test.fail("cannot run under CI: " + reason)
    test.skipTest(reason)


class PrivateNetwork:
    """`with PrivateNetwork() as ip:` moves the calling thread into a network namespace of its
    own (loopback up, plus a veth pair whose one end has `ip`, an address that is not loopback,
    or that address on lo where veth is missing), so a client can reach a server from a
    non-loopback address on any machine where the test is root. Servers started inside run in
    it; on leaving, the thread goes back to its namespace (the new one goes when its last
    process does). Raises OSError with the reason when it cannot be made."""
    ADDR = "10.77.0.1"
    CLONE_NEWNET = 0x40000000

    def __enter__(self):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        if self.libc.unshare(self.CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            os.close(self.old)
            raise OSError(err, "unshare(CLONE_NEWNET): %s" % os.strerror(err))
        try:
            self.ip("link", "set", "lo", "up")
            dev = "lo"
            if subprocess.run(["ip", "link", "add", "mbv0", "type", "veth", "peer", "name", "mbv1"],
                              capture_output=True).returncode == 0:
                dev = "mbv0"
                self.ip("link", "set", "mbv0", "up")
                self.ip("link", "set", "mbv1", "up")
            self.ip("addr", "add", self.ADDR + "/24", "dev", dev)
        except BaseException:
            self.__exit__()
            raise
        return self.ADDR

    @staticmethod
    def ip(*args):
        p = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
        if p.returncode:
            raise OSError("ip %s: %s" % (" ".join(args), p.stderr.strip()))

    def __exit__(self, *exc):
        if self.libc.setns(self.old, self.CLONE_NEWNET) != 0:
            raise OSError("setns back to the first network namespace failed")
        os.close(self.old)


class _SayAtOnce(unittest.TextTestResult):
    """Writes a failure's last traceback lines right after its "FAIL" line, where a log cut to its
    head and tail (as CI shows it) still has them; the full tracebacks follow at the end as usual."""

    def _say(self, test, err):
        lines = self._exc_info_to_string(err, test).rstrip().splitlines()
        at = max((i for i, l in enumerate(lines) if l.startswith("  File ")), default=0)
        rest = [l for l in lines[at + 2:] if l.strip(" ^~")]
        self.stream.writeln("    | " + "\n    | ".join(lines[at:at + 2] + rest[:8]))
        self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._say(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._say(test, err)


def main():
    unittest.main(verbosity=2, testRunner=unittest.TextTestRunner(verbosity=2, resultclass=_SayAtOnce))

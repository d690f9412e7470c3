"""Apache httpd 2.4 (Debian apache2) with mod_dav and mod_dav_fs, started from a config
generated under a temporary ServerRoot, on a free loopback port, with Basic authentication
against an htpasswd file (SHA-1 entries: cheap to check). The one starter of Apache as a
WebDAV server: bench/webdav/bench.py (the peer MByte is measured against) and
tests/integration/test_davbackend.py (a server the webdav module's client backends store on)
both use it. When run as root, httpd serves as www-data and the files are theirs."""
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time

APACHE = os.environ.get("APACHE") or shutil.which("apache2") or "/usr/sbin/apache2"
MODS = "/usr/lib/apache2/modules"


def wait_listening(port, proc, what, timeout=30):
    """Until something listens on the loopback port; RuntimeError when proc exits first or the
    time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not start" % what)


def available():
    return os.path.exists(APACHE) and os.path.exists(os.path.join(MODS, "mod_dav_fs.so"))


class Apache:
    """Serves <root>/dav at http://127.0.0.1:<port>/dav/. start() and stop() (or kill()) may be
    called again: the directory stays, as a server that went away and came back."""
    name = "Apache"

    def __init__(self, work, user, password, port):
        self.port = port
        self.root = os.path.join(work, "apache")
        self.dav = os.path.join(self.root, "dav")
        os.makedirs(self.dav, exist_ok=True)
        sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        with open(os.path.join(self.root, "htpasswd"), "w") as f:
            f.write("%s:{SHA}%s\n" % (user, sha))
        run_as = ""
        if os.getuid() == 0:  # httpd will not serve as root: the files belong to www-data
            run_as = "User www-data\nGroup www-data\n"
            os.chmod(work, 0o711)  # mkdtemp made it 0700: www-data must pass through to reach dav/
            shutil.chown(self.root, "www-data", "www-data")
            shutil.chown(self.dav, "www-data", "www-data")
        mods = ["mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user", "dav", "dav_fs",
                "alias"]  # unixd is built in
        self.conf = os.path.join(self.root, "httpd.conf")
        with open(self.conf, "w") as f:
            f.write("ServerRoot %s\nListen 127.0.0.1:%d\nServerName localhost\nPidFile %s/httpd.pid\n"
                    "ErrorLog %s/error.log\nLogLevel warn\n%s" % (self.root, port, self.root, self.root, run_as))
            f.write("".join("LoadModule %s_module %s/mod_%s.so\n" % (m, MODS, m) for m in mods))
            f.write("KeepAlive On\nMaxKeepAliveRequests 0\nDavLockDB %s/davlock\nLimitRequestBody 0\n"
                    "Alias /dav %s\n<Directory %s>\n  DAV On\n  AuthType Basic\n  AuthName dav\n"
                    "  AuthBasicProvider file\n  AuthUserFile %s/htpasswd\n  Require valid-user\n</Directory>\n"
                    % (self.root, self.dav, self.dav, self.root))
        self.log = open(os.path.join(work, "apache.log"), "a")
        self.proc = None
        self.url = "http://127.0.0.1:%d/dav/" % port
        self.auth = "%s:%s" % (user, password)

    def start(self, timeout=30):
        pid = os.path.join(self.root, "httpd.pid")
        if os.path.exists(pid):
            os.unlink(pid)  # left by a kill: httpd would refuse to start
        self.proc = subprocess.Popen([APACHE, "-f", self.conf, "-DFOREGROUND"], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_listening(self.port, self.proc, "apache2 (see %s/error.log)" % self.root, timeout)
        return self

    def kill(self):
        """SIGKILL the whole process group (the parent and its children), as a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(60)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.log.close()

#!/usr/bin/env python3
"""Cluster mode, first slice (issue 23, docs/cluster.md): three real mbyted on loopback register in a
real etcd (Debian's etcd-server, started here on free ports), elect one leader, fence a paused leader
by time, ride out an etcd outage, and sit behind a real HAProxy whose health checks take a killed
node out. Without `cluster` a server stays alone; bad cluster settings are refused with their line.
tests/setup/cluster.sh installs etcd-server and haproxy."""
import base64
import csv
import ftplib
import hashlib
import io
import random
import re
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import ADMIN_PASSWORD, Server, ServerTest, free_port, main, missing_prerequisite  # noqa: E402
from storeutil import create_store, fsck, home, put_chunked  # noqa: E402

LDB_EDIT = os.environ.get("MBYTE_LDB_EDIT", "")
TTL = 3  # seconds: cluster.lease_ttl of every node here (etcd's smallest lease is about 2 s)


def wait_for(what, cond, timeout):
    """cond() until it returns something true; that value, or an AssertionError naming `what`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = cond()
            if last:
                return last
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("%s: not within %.1f s (last: %r)" % (what, timeout, last))


class Etcd:
    """A real single-member etcd on free loopback ports, its data in a temporary directory."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="mbyte-etcd-")
        self.client, self.peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client
        self.proc = None

    def start(self):
        peer = "http://127.0.0.1:%d" % self.peer
        self.log = open(os.path.join(self.tmp, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "default", "--data-dir", os.path.join(self.tmp, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "default=" + peer], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("etcd answers", lambda: self.call("/v3/kv/range", {"key": self.b64("x")}) is not None, 30)
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
            self.log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def b64(s):
        return base64.b64encode(s.encode()).decode()

    def call(self, path, body, timeout=5):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def get(self, key):
        """The value of key (text), or None."""
        kvs = self.call("/v3/kv/range", {"key": self.b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def keys(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        kvs = self.call("/v3/kv/range", {"key": self.b64(prefix), "range_end": self.b64(end)}).get("kvs", [])
        return sorted(base64.b64decode(kv["key"]).decode() for kv in kvs)


class Link:
    """A TCP relay between one node and etcd that the test can cut: while cut, connections are
    accepted and held without an answer (a network partition as the node sees it: its calls time
    out) and the ones in flight are closed; etcd itself stays up for the other nodes."""

    def __init__(self, target_port):
        self.target = target_port
        self.cut = False
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.live, self.held = [], []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.cut:
                    self.held.append(c)
                    continue
                try:
                    u = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    c.close()
                    continue
                self.live += [c, u]
            threading.Thread(target=self.pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def set_cut(self, cut):
        with self.lock:
            self.cut = cut
            for x in self.live + self.held:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                x.close()
            self.live, self.held = [], []

    def close(self):
        self.set_cut(False)
        self.lsock.close()


class HAProxy:
    """A real HAProxy in front of the nodes, health-checking /api/v1/health every 300 ms; its stats
    (CSV) on a second port tell which servers it counts as up."""

    def __init__(self, nodes):
        self.tmp = tempfile.mkdtemp(prefix="mbyte-haproxy-")
        self.port, self.stats = free_port(), free_port()
        servers = "\n".join("    server %s 127.0.0.1:%d check inter 300ms fall 2 rise 2" % (n, s.port)
                            for n, s in nodes.items())
        self.conf = os.path.join(self.tmp, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write("""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend mbyte
    bind 127.0.0.1:%d
    default_backend nodes
frontend stats
    bind 127.0.0.1:%d
    stats enable
    stats uri /stats
backend nodes
    balance roundrobin
    option httpchk GET /api/v1/health
    http-check expect status 200
%s
""" % (self.port, self.stats, servers))
        self.proc = subprocess.Popen(["haproxy", "-f", self.conf, "-db"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def status(self):
        """{server name: "UP" / "DOWN" / ...} as HAProxy sees its backends now."""
        with urllib.request.urlopen("http://127.0.0.1:%d/stats;csv" % self.stats, timeout=5) as r:
            text = r.read().decode().lstrip("# ")
        return {row["svname"]: row["status"].split(" ")[0] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "nodes" and row["svname"] not in ("BACKEND", "FRONTEND")}

    def call(self, method, path, body=None, token=None, headers=None):
        """One request on a new connection (HAProxy hands each to the next node in turn): (status,
        body); a connection that failed is status 0 with the error."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if isinstance(body, dict):
            body, h["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return 0, repr(e).encode()

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def cleanup(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def cluster_conf(etcd_urls, name, ttl=TTL, rebalance=False, more=""):
    """A node's cluster settings. Rebalancing (on by default) is off unless a test asks for it: the tests
    place stores on the nodes they name and must find them there. more: further keys ("k: v, ...")."""
    return {"cluster": "{etcd: [%s], node: %s, lease_ttl: %d, rebalance: %s%s}" % (
        etcd_urls, name, ttl, "true" if rebalance else "false", ", " + more if more else "")}


def refused_start(test, s):
    """Start s, which must exit on its own with a failure: its log."""
    s.start(wait=False)
    rc = s.proc.wait(timeout=60)
    s.proc = None
    s.log.close()
    test.assertNotEqual(rc, 0)
    return s.read_log()


def thread_names(pid):
    names = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
            names.append(f.read().strip())
    return names


def have_tools():
    return shutil.which("etcd") and shutil.which("haproxy")


class EtcdAndNodes(unittest.TestCase):
    """One etcd and a few mbyted for a whole class (start_cluster), all stopped and removed after it;
    each test starts with etcd running and resumed and every node up again on its data directory."""
    NAMES = ("n1", "n2", "n3")

    @classmethod
    def setUpClass(cls):
        cls.etcd = None
        cls.nodes = {}
        if not have_tools():
            return
        try:
            cls.start_cluster()
        except BaseException:
            cls.tearDownClass()  # unittest does not when setUpClass fails: leave no process behind
            raise

    @classmethod
    def tearDownClass(cls):
        errors = []
        for s in cls.nodes.values():
            try:
                if s.proc:
                    s.proc.send_signal(signal.SIGCONT)
                    s.stop()  # exit 0: nothing leaked, no sanitizer finding
            except AssertionError as e:
                errors.append(str(e))
            finally:
                s.cleanup()
        for link in getattr(cls, "links", {}).values():
            link.close()
        if cls.etcd:
            cls.etcd.cleanup()
        if errors:
            raise AssertionError("\n".join(errors))

    def setUp(self):
        if not have_tools():
            missing_prerequisite(self, "etcd and haproxy are not installed (tests/setup/cluster.sh)")
        if self.etcd.proc is None:
            self.etcd.start()
        self.etcd.proc.send_signal(signal.SIGCONT)
        for link in getattr(self, "links", {}).values():
            link.set_cut(False)
        for name, s in self.nodes.items():
            if s.proc is None:
                self.start_again(name)

    def warnings(self):
        """The last warnings and errors of every node's log (for a failure's message)."""
        out = []
        for n, s in self.nodes.items():
            lines = [x for x in s.read_log().splitlines() if " warn " in x or " error " in x or "WARN" in x
                     or "ERROR" in x]
            out += ["%s: %s" % (n, x) for x in lines[-15:]]
        return "\n".join(out)

    def run(self, result=None):
        """A failed test prints what the nodes warned of: a cluster's failure is often one node's."""
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > before and self.nodes:
            sys.stderr.write("--- the nodes' last warnings ---\n%s\n" % self.warnings())
        return out

    OTHER_PW = "not-the-cluster-admin-pw"

    @classmethod
    def start_joined(cls, modules=None, names=None, rebalance=False, conf=None, cluster_more=""):
        """etcd, then the nodes: n1 starts the cluster, the others join it with another
        MBYTE_ADMIN_PASSWORD (which must not make an admin of their own). conf: more of mbyte.yaml."""
        cls.etcd = Etcd().start()
        cls.ftp_ports = {}
        for n in names or cls.NAMES:
            env = {} if n == "n1" else {"MBYTE_ADMIN_PASSWORD": cls.OTHER_PW}
            if (modules or {}).get("ftp"):  # every node its own FTP door
                cls.ftp_ports[n] = free_port()
                base = random.randrange(20000, 60000, 100)
                env.update({"MBYTE_FTP_LISTEN": "127.0.0.1:%d" % cls.ftp_ports[n],
                            "MBYTE_FTP_PASV_PORTS": "%d-%d" % (base, base + 99)})
            cls.nodes[n] = Server(conf=dict(cluster_conf(cls.etcd.url, n, rebalance=rebalance, more=cluster_more),
                                            **(conf or {})), env=env,
                                  modules=modules)
            cls.nodes[n].start()

    def start_again(self, name):
        """A node killed by a test, started again on its data directory once etcd has let its old
        lease expire (before that its name is taken: test_a_second_mbyted_...)."""
        wait_for("the lease of killed %s expires" % name,
                 lambda: "/mbyte/nodes/" + name not in self.etcd.keys("/mbyte/nodes/"), TTL + 10)
        self.nodes[name].start()


class ClusterOfThree(EtcdAndNodes):
    """One etcd and three nodes for the whole class; each test starts with all three up."""

    @classmethod
    def start_cluster(cls):
        cls.etcd = Etcd().start()
        # Each node reaches etcd through a link the test can cut. n3 is told of an endpoint where
        # nothing listens first: it must go on to the next.
        cls.links = {n: Link(cls.etcd.client) for n in cls.NAMES}
        cls.dead = "http://127.0.0.1:%d" % free_port()
        for n in cls.NAMES:
            urls = cls.dead + ", " + cls.links[n].url if n == "n3" else cls.links[n].url
            # audit records every hook event: how a test sees cluster.leader reach modules' observers
            cls.nodes[n] = Server(conf=cluster_conf(urls, n), modules={"audit": True})
            cls.nodes[n].start()

    def setUp(self):
        super().setUp()
        wait_for("all three nodes registered with one leader", self.all_agreed, 30)

    def all_agreed(self):
        vs = [self.agreed(n) for n in self.NAMES]
        return all(vs) and vs

    tokens = {}

    def view(self, name):
        """GET /api/v1/admin/cluster on node `name` (each node has its own accounts in this slice)."""
        s = self.nodes[name]
        r = s.request("GET", "/api/v1/admin/cluster", token=self.tokens.get(name))
        if r.status == 401:
            self.tokens[name] = s.login()
            r = s.request("GET", "/api/v1/admin/cluster", token=self.tokens[name])
        self.assertEqual(r.status, 200, r)
        return r.json()

    def leader_events(self, name):
        """The cluster.leader events node `name`'s modules observed, oldest first: ["gained", "lost", ...]."""
        s = self.nodes[name]
        self.view(name)  # a fresh token
        r = s.request("GET", "/api/v1/admin/audit?action=cluster.leader", token=self.tokens[name])
        self.assertEqual(r.status, 200, r)
        return [e["detail"]["state"] for e in reversed(r.json()["entries"]) if e["detail"]["node"] == name]

    def agreed(self, name):
        v = self.view(name)
        return v["leader"] and sorted(n["name"] for n in v["nodes"]) == list(self.NAMES) and v

    def leader(self):
        return self.view("n1")["leader"]

    def test_three_nodes_register_and_every_node_names_the_same_single_leader(self):
        views = {n: self.view(n) for n in self.NAMES}
        leaders = {v["leader"] for v in views.values()}
        self.assertEqual(len(leaders), 1, views)
        leader = leaders.pop()
        self.assertIn(leader, self.NAMES)
        self.assertEqual([n for n, v in views.items() if v["leader"] == v["node"]], [leader])
        self.assertEqual(self.etcd.get("/mbyte/leader"), leader)
        for name, v in views.items():
            self.assertEqual(v["node"], name)
            # one account, admin, made by n1 (which started the cluster): its Home store, kept by n1 or, once
            # an earlier test killed n1, by the node that took it over; every node says the same
            self.assertEqual(len(v["stores"]), 1, v["stores"])
            self.assertEqual(v["stores"][0]["owner"], views["n1"]["stores"][0]["owner"], views)
            self.assertEqual(v["etcd"], "ok")
            for n in v["nodes"]:
                self.assertEqual(n["state"], "up")
                self.assertEqual(n["address"], "127.0.0.1:%d" % self.nodes[n["name"]].port)
                self.assertGreater(n["capacity"], 0)
                self.assertGreater(n["free"], 0)
                self.assertLessEqual(n["free"], n["capacity"])
        self.assertEqual(self.etcd.keys("/mbyte/nodes/"), ["/mbyte/nodes/" + n for n in self.NAMES])
        # The hook event reached the leader's observers (the audit module).
        self.assertEqual(wait_for("cluster.leader gained, observed", lambda: self.leader_events(leader), 10)[-1],
                         "gained")
        # Unauthenticated health answers on every node (HAProxy's check); the cluster view is admin only.
        for s in self.nodes.values():
            self.assertIn("mb-cluster", thread_names(s.proc.pid))
            self.assertEqual(s.request("GET", "/api/v1/health").status, 200)
            self.assertEqual(s.request("GET", "/api/v1/admin/cluster").status, 401)

    def test_sigkill_of_the_leader_hands_leadership_over_within_the_lease_and_it_rejoins_as_follower(self):
        old = self.leader()
        others = [n for n in self.NAMES if n != old]
        self.nodes[old].kill()
        t0 = time.time()

        def taken_over():
            vs = [self.view(n) for n in others]
            return all(v["leader"] in others and v["leader"] == vs[0]["leader"] and
                       old not in [x["name"] for x in v["nodes"]] for v in vs) and vs[0]["leader"]
        new = wait_for("another node leads and %s is gone" % old, taken_over, TTL + 10)
        self.assertLessEqual(time.time() - t0, TTL + 3, "takeover took too long")
        self.assertEqual(self.etcd.get("/mbyte/leader"), new)
        self.assertNotIn("/mbyte/nodes/" + old, self.etcd.keys("/mbyte/nodes/"))
        # Started again, it rejoins as a member that follows the new leader.
        self.start_again(old)
        v = wait_for("%s rejoins" % old, lambda: self.agreed(old), 20)
        self.assertEqual(v["leader"], new)
        self.assertEqual({n["name"]: n["state"] for n in v["nodes"]}[old], "up")
        wait_for("the others list %s again" % old, self.all_agreed, 10)

    def test_a_second_mbyted_with_a_live_node_name_refuses_to_start(self):
        leader = self.leader()
        twin = Server(conf=cluster_conf(self.etcd.url, "n2"))
        try:
            log = refused_start(self, twin)
            self.assertIn("cluster.node 'n2' is already registered in etcd by a running node", log)
            self.assertIn("127.0.0.1:%d" % self.nodes["n2"].port, log)  # the holder's address
        finally:
            twin.cleanup()
        # The live n2 is untouched: still registered, same leader, its record its own.
        self.assertTrue(self.agreed("n2"))
        self.assertEqual(self.leader(), leader)
        self.assertEqual(json.loads(self.etcd.get("/mbyte/nodes/n2"))["address"],
                         "127.0.0.1:%d" % self.nodes["n2"].port)

    def test_a_leader_paused_past_its_lease_stops_claiming_at_once_when_resumed(self):
        old = self.leader()
        s = self.nodes[old]
        mark = s.log_mark()
        s.proc.send_signal(signal.SIGSTOP)
        try:
            others = [n for n in self.NAMES if n != old]
            wait_for("another node leads while %s is paused" % old,
                     lambda: self.view(others[0])["leader"] in others, TTL + 10)
            time.sleep(1)
        finally:
            s.proc.send_signal(signal.SIGCONT)
        # The first answer after resuming: fenced by time, before its thread has talked to etcd.
        v = self.view(old)
        self.assertNotEqual(v["leader"], old, v)
        self.assertIn(self.etcd.get("/mbyte/leader"), others)
        s.wait_log("is no longer the leader", since=mark, timeout=20)  # and the cluster.leader "lost" event
        v = wait_for("%s follows the new leader" % old, lambda: self.agreed(old), 20)
        self.assertIn(v["leader"], others)
        self.assertIn(self.etcd.get("/mbyte/leader"), others)

    def test_a_leader_cut_off_from_etcd_stops_claiming_when_its_lease_may_have_expired(self):
        # Fencing by time: the node cannot learn from etcd that it lost the lease (its calls time
        # out), so it must stop naming itself leader lease_ttl after its last answered keepalive, while
        # another node takes over; it never claims again until it holds /mbyte/leader.
        old = self.leader()
        others = [n for n in self.NAMES if n != old]
        self.links[old].set_cut(True)
        t0 = time.time()  # its last keepalive that etcd answered was sent before this
        seen = []
        while time.time() < t0 + TTL + 4:
            seen.append((time.time() - t0, self.view(old)["leader"]))
            time.sleep(0.1)
        claimed = [t for t, leader in seen if leader == old]
        self.assertLessEqual(max(claimed, default=0), TTL + 0.5, "still leader after its lease: %r" % seen)
        self.assertIn(self.etcd.get("/mbyte/leader"), others)
        self.assertEqual(self.view(old)["etcd"], "unreachable")
        self.links[old].set_cut(False)
        v = wait_for("%s registers again and follows" % old, lambda: self.agreed(old), 20)
        self.assertIn(v["leader"], others)
        self.assertEqual(self.leader_events(old)[-2:], ["gained", "lost"])  # what modules were told
        self.assertEqual(wait_for("the new leader's gained", lambda: self.leader_events(v["leader"]), 10)[-1],
                         "gained")

    def test_etcd_paused_past_the_leases_nodes_keep_serving_files_and_register_again(self):
        self.etcd.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.time()
            for i, (name, s) in enumerate(self.nodes.items()):
                tok = s.login()
                hid = home(s, tok)
                body = os.urandom(100000 + i)
                r = s.request("PUT", "/api/v1/stores/%d/files/while-etcd-is-away-%d.bin" % (hid, i), body=body,
                              token=tok)
                self.assertIn(r.status, (200, 201), r)
                r = s.request("GET", "/api/v1/stores/%d/files/while-etcd-is-away-%d.bin" % (hid, i), token=tok)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, body)
            # Past every lease: a leader must have stopped claiming by now.
            time.sleep(max(0, TTL + 1 - (time.time() - t0)))
            for name in self.NAMES:
                v = self.view(name)
                self.assertNotEqual(v["leader"], name, v)
                self.assertEqual(v["etcd"], "unreachable")
        finally:
            self.etcd.proc.send_signal(signal.SIGCONT)
        views = wait_for("registration recovers", self.all_agreed, 30)
        self.assertEqual(len({v["leader"] for v in views}), 1)
        for v in views:
            self.assertEqual(v["etcd"], "ok")
        self.assertEqual(self.etcd.keys("/mbyte/nodes/"), ["/mbyte/nodes/" + n for n in self.NAMES])

    def test_etcd_stopped_and_started_again_on_its_data_directory_nodes_keep_serving_and_recover(self):
        leader = self.leader()
        self.etcd.stop()
        for name, s in self.nodes.items():
            tok = s.login()
            hid = home(s, tok)
            r = s.request("PUT", "/api/v1/stores/%d/files/etcd-restart-%s.txt" % (hid, name), body=name.encode(),
                          token=tok)
            self.assertIn(r.status, (200, 201), r)
            self.assertEqual(s.request("GET", "/api/v1/stores/%d/files/etcd-restart-%s.txt" % (hid, name),
                                       token=tok).body, name.encode())
            self.assertEqual(s.request("GET", "/api/v1/health").status, 200)
        self.etcd.start()  # same ports, same data: the leases and keys it had are back
        views = wait_for("registration recovers", self.all_agreed, 30)
        self.assertEqual({v["leader"] for v in views}, {leader})  # its lease survived: no change of leader
        self.assertEqual(self.etcd.keys("/mbyte/nodes/"), ["/mbyte/nodes/" + n for n in self.NAMES])

    def test_haproxy_health_checks_take_a_killed_node_out(self):
        hp = HAProxy(self.nodes)
        try:
            wait_for("HAProxy sees three nodes up", lambda: set(hp.status().values()) == {"UP"}, 20)
            self.assertEqual([hp.get("/api/v1/health") for _ in range(12)], [200] * 12)
            victim = [n for n in self.NAMES if n != self.leader()][0]
            self.nodes[victim].kill()
            wait_for("HAProxy takes %s out" % victim, lambda: hp.status()[victim] == "DOWN", 20)
            self.assertEqual(sorted(v for v in hp.status().values()), ["DOWN", "UP", "UP"])
            self.assertEqual([hp.get("/api/v1/health") for _ in range(12)], [200] * 12)
        finally:
            hp.cleanup()


class ClusterWide(EtcdAndNodes):
    """Accounts, tokens, app passwords and which modules are on are the cluster's (docs/cluster.md
    "Accounts and tokens on every node", "Modules on every node"): made on one node, they count on
    every node; changes made while etcd is away
    reach the others when it is back; a node that was down catches up; a node with accounts of
    its own refuses to join. n1 starts the cluster; n2 and n3 join it with another
    MBYTE_ADMIN_PASSWORD, which must not make an admin of their own."""

    @classmethod
    def start_cluster(cls):
        cls.start_joined({"webdav": True, "quotas": True, "taskmgr": True, "multistore": True, "sharing": True,
                          "ftp": True, "hello": True})

    def setUp(self):
        super().setUp()
        for n in self.NAMES:  # a node a test killed and setUp started again is in every node's view again
            wait_for("n1, n2 and n3 in %s's view" % n, lambda: set(self.NAMES) <= {x["name"] for x in self.nodes[n].request(
                "GET", "/api/v1/admin/cluster", token=self.login(n, "admin", ADMIN_PASSWORD)).json()["nodes"]}, 30)

    def status(self, node, method, path, token=None, body=None, headers=None):
        return self.nodes[node].request(method, path, body=body, token=token, headers=headers).status

    def login(self, node, user, pw):
        r = self.nodes[node].request("POST", "/api/v1/auth/login", {"username": user, "password": pw})
        return r.json()["token"] if r.status == 200 else r.status

    def placed_everywhere(self, sid):
        """Wait until every node knows which node keeps store sid (its placement reached them)."""
        self.everywhere("store %d's node is known" % sid, lambda n: sid in [st["id"] for st in self.nodes[n].request(
            "GET", "/api/v1/admin/cluster", token=self.login(n, "admin", ADMIN_PASSWORD)).json()["stores"]])

    def everywhere(self, what, cond, nodes=None, timeout=10):
        for n in nodes or self.NAMES:
            wait_for("%s on %s" % (what, n), lambda: cond(n), timeout)

    def user_at_home(self, name):
        """A user made on n1 (password name-pw-1), who logs in everywhere, and their Home store once
        every node knows its placement: (token, store id, the placement as n1 shows it)."""
        tok = self.nodes["n1"].add_user(name, name + "-pw-1")
        self.everywhere(name + " logs in", lambda n: isinstance(self.login(n, name, name + "-pw-1"), str))
        sid = home(self.nodes["n1"], tok)
        self.placed_everywhere(sid)
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        stores = self.nodes["n1"].request("GET", "/api/v1/admin/cluster", token=admin).json()["stores"]
        return tok, sid, next(st for st in stores if st["id"] == sid)

    def test_joining_nodes_take_the_first_nodes_admin_and_make_none_of_their_own(self):
        def first_start(n):  # the log of the node's first start (a later test may restart it)
            log = self.nodes[n].read_log()
            return log[:log.index("accounts and tokens are cluster-wide")]
        self.assertIn("this node started the cluster", first_start("n1"))
        for n in ("n2", "n3"):
            self.assertNotIn("this node started the cluster", first_start(n))
            self.assertNotIn("First start", self.nodes[n].read_log())
            self.assertIsInstance(self.login(n, "admin", ADMIN_PASSWORD), str)
            self.assertEqual(self.login(n, "admin", self.OTHER_PW), 401)
        self.assertIn("/mbyte/kv/u/admin", self.etcd.keys("/mbyte/kv/"))

    def test_a_user_created_on_one_node_logs_in_on_every_node_and_ids_stay_unique(self):
        a1, a2 = self.login("n1", "admin", ADMIN_PASSWORD), self.login("n2", "admin", ADMIN_PASSWORD)
        made = {}

        def create(node, tok, name):
            made[name] = self.nodes[node].request("POST", "/api/v1/admin/users",
                                                  {"username": name, "password": name + "-pw-1", "role": "user"},
                                                  token=tok).status
        ts = [threading.Thread(target=create, args=(n, t, "%s-u%d" % (n, i)))
              for i in range(4) for n, t in (("n1", a1), ("n2", a2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(set(made.values()), {201}, made)
        for name in made:
            self.everywhere("%s logs in" % name, lambda n: isinstance(self.login(n, name, name + "-pw-1"), str))
        self.assertEqual(self.login("n3", "n1-u0", "wrong-password"), 401)
        users = self.nodes["n3"].request("GET", "/api/v1/admin/users", token=self.login("n3", "admin", ADMIN_PASSWORD))
        ids = {u["username"]: u["id"] for u in users.json()}
        self.assertTrue(set(made) <= set(ids), ids)
        self.assertEqual(len(set(ids.values())), len(ids), ids)  # no two accounts share an id
        # the account's one Home store is kept by the node that made it, and every node lists it
        homes = set()
        for n in self.NAMES:
            r = self.nodes[n].request("GET", "/api/v1/stores", token=self.login(n, "n2-u1", "n2-u1-pw-1"))
            self.assertEqual(r.status, 200, r)
            self.assertEqual([st["name"] for st in r.json()], ["Home"], (n, r.json()))
            homes.add(r.json()[0]["id"])
        self.assertEqual(len(homes), 1, homes)

    def quota_everywhere(self, user, limit):
        """Set user's quota on n1 and wait until every node knows it."""
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        r = self.nodes["n1"].request("PUT", "/api/v1/admin/quotas/users/" + user, {"bytes": limit}, token=admin)
        self.assertEqual(r.status, 200, r)
        self.everywhere("the quota is known", lambda n: self.nodes[n].request(
            "GET", "/api/v1/admin/quotas/users/" + user,
            token=self.login(n, "admin", ADMIN_PASSWORD)).json().get("bytes") == limit)

    def test_a_quota_set_on_one_node_holds_on_every_node(self):
        tok = self.nodes["n1"].add_user("quinn", "quinn-pw-1")
        self.everywhere("quinn logs in", lambda n: isinstance(self.login(n, "quinn", "quinn-pw-1"), str))
        self.quota_everywhere("quinn", 4096)
        # on n3 (its own Home store there): 3 KiB fit, 3 KiB more do not
        t3 = self.login("n3", "quinn", "quinn-pw-1")
        sid = self.nodes["n3"].request("GET", "/api/v1/stores", token=t3).json()[0]["id"]
        put = lambda name: self.nodes["n3"].request("PUT", "/api/v1/stores/%d/files/%s" % (sid, name), b"q" * 3072,
                                                    token=t3, headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(put("a.bin").status, 201)
        r = put("b.bin")
        self.assertEqual(r.status, 507, r)
        # removed on n2: the same upload now fits on n3
        admin2 = self.login("n2", "admin", ADMIN_PASSWORD)
        self.assertEqual(self.nodes["n2"].request("PUT", "/api/v1/admin/quotas/users/quinn", {"bytes": None},
                                                  token=admin2).status, 200)
        wait_for("the quota is gone on n3", lambda: put("b.bin").status == 201, 10)
        self.assertEqual(self.status("n1", "GET", "/api/v1/me", tok), 200)

    def test_a_quota_counts_the_stores_of_every_node(self):
        """A user's stores kept by two nodes: the quota counts both (no node lets them fill their
        quota again), and their usage reads the same on every node."""
        tok = self.nodes["n1"].add_user("una", "una-pw-1")
        self.everywhere("una logs in", lambda n: isinstance(self.login(n, "una", "una-pw-1"), str))
        homes = home(self.nodes["n1"], tok)  # kept by n1
        work = create_store(self, self.nodes["n2"], tok, "Work")  # kept by n2
        self.placed_everywhere(work)
        self.quota_everywhere("una", 100000)
        octet = {"Content-Type": "application/octet-stream"}
        r = self.nodes["n1"].request("PUT", "/api/v1/stores/%d/files/a.bin" % homes, b"a" * 60000, token=tok, headers=octet)
        self.assertEqual(r.status, 201, r)
        for via in self.NAMES:  # on n2, through any node: 60 kB more would pass 100 kB
            r = self.nodes[via].request("PUT", "/api/v1/stores/%d/files/b.bin" % work, b"b" * 60000, token=tok,
                                        headers=octet)
            self.assertEqual(r.status, 507, (via, r))
        r = self.nodes["n3"].request("PUT", "/api/v1/stores/%d/files/c.bin" % work, b"c" * 30000, token=tok, headers=octet)
        self.assertEqual(r.status, 201, r)  # what fits, fits
        for n in self.NAMES:
            u = self.nodes[n].request("GET", "/api/v1/me/usage", token=tok).json()
            self.assertEqual((u["bytes"], u["files"]), (90000, 2), (n, u))
            per = {st["id"]: st["bytes"] for st in u["stores"]}
            self.assertEqual((per.get(homes), per.get(work)), (60000, 30000), (n, u))
        # FTP's uploads are measured the same way
        f = self.ftp("n3", "una", "una-pw-1")
        with self.assertRaises(ftplib.error_perm) as e:
            f.storbinary("STOR /Home/d.bin", io.BytesIO(b"d" * 20000))
        self.assertTrue(str(e.exception).startswith("552"), e.exception)

    def test_stores_have_ids_unique_in_the_cluster_and_every_node_knows_where_each_is(self):
        tok = self.nodes["n1"].add_user("stella", "stella-pw-1")
        self.everywhere("stella logs in", lambda n: isinstance(self.login(n, "stella", "stella-pw-1"), str))
        t2 = self.login("n2", "stella", "stella-pw-1")
        wait_for("n2 sees the others taking replicas", lambda: len([x for x in self.nodes["n2"].request(
            "GET", "/api/v1/admin/cluster", token=self.login("n2", "admin", ADMIN_PASSWORD)).json()["nodes"]
            if x.get("replication")]) == 3, 10)
        made = self.nodes["n2"].request("POST", "/api/v1/stores", {"name": "Photos"}, token=t2)
        self.assertEqual(made.status, 202, made)
        photos = made.json()["store"]
        # every store a node keeps is placed on that node, in every node's view, with an id no
        # other store has (a node's own list: asked as if forwarded, it answers from its own data)
        def placements_agree():
            views = [self.nodes[n].request("GET", "/api/v1/admin/cluster",
                                           token=self.login(n, "admin", ADMIN_PASSWORD)).json() for n in self.NAMES]
            placed = [{st["id"]: st["owner"] for st in v["stores"]} for v in views]
            held = {}
            for n in self.NAMES:
                for who, pw in (("stella", "stella-pw-1"), ("admin", ADMIN_PASSWORD)):
                    for st in self.nodes[n].request("GET", "/api/v1/stores", token=self.login(n, who, pw),
                                                    headers={"X-MByte-Forwarded": "test"}).json():
                        self.assertNotIn(st["id"], held, "store id %d on two nodes" % st["id"])
                        held[st["id"]] = n
            return placed[0] == placed[1] == placed[2] and all(placed[0].get(k) == n for k, n in held.items())
        wait_for("every node knows every store's node", placements_agree, 10)
        v = self.nodes["n3"].request("GET", "/api/v1/admin/cluster", token=self.login("n3", "admin", ADMIN_PASSWORD)).json()
        entry = next(st for st in v["stores"] if st["id"] == photos)
        # kept by n2, replicated on one of the others (docs/cluster.md "Replicas and failover")
        self.assertEqual((entry["owner"], entry["epoch"]), ("n2", 1))
        self.assertIn(entry["replica"], ("n1", "n3"))
        # deleted on n2: gone from every node's view
        task = made.json()["task"]
        wait_for("Photos is made", lambda: self.nodes["n2"].request(
            "GET", "/api/v1/tasks/%d" % task, token=t2).json().get("state") == "done", 10)
        # every node lists it with the Home store n1 keeps
        for n in self.NAMES:
            names = sorted(st["name"] for st in self.nodes[n].request(
                "GET", "/api/v1/stores", token=self.login(n, "stella", "stella-pw-1")).json())
            self.assertEqual(names, ["Home", "Photos"], n)
        r = self.nodes["n2"].request("DELETE", "/api/v1/stores/%d" % photos, {"confirm": "Photos"}, token=t2)
        self.assertEqual(r.status, 202, r)
        self.everywhere("Photos leaves the views", lambda n: photos not in [st["id"] for st in self.nodes[n].request(
            "GET", "/api/v1/admin/cluster", token=self.login(n, "admin", ADMIN_PASSWORD)).json()["stores"]])
        self.assertEqual(self.status("n1", "GET", "/api/v1/me", tok), 200)

    def test_a_store_kept_by_another_node_is_served_through_any_node_streaming_both_ways(self):
        tok = self.nodes["n1"].add_user("fran", "fran-pw-1")
        self.everywhere("fran logs in", lambda n: isinstance(self.login(n, "fran", "fran-pw-1"), str))
        sid = home(self.nodes["n1"], tok)  # kept by n1
        self.placed_everywhere(sid)
        body = os.urandom(3 * 1024 * 1024 + 17)
        url = "/api/v1/stores/%d/files/big.bin" % sid
        octet = {"Content-Type": "application/octet-stream"}
        r = self.nodes["n2"].request("PUT", url, body=body, token=tok, headers=octet)  # through n2
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.nodes["n1"].request("GET", url, token=tok).body, body)  # it is on n1
        r = self.nodes["n3"].request("GET", url, token=tok)  # and reads back through n3
        self.assertEqual((r.status, r.body), (200, body))
        r = self.nodes["n3"].request("GET", url, token=tok, headers={"Range": "bytes=1000000-1000099"})
        self.assertEqual((r.status, r.body), (206, body[1000000:1000100]))
        self.assertEqual(r.header("Content-Range"), "bytes 1000000-1000099/%d" % len(body))
        r = self.nodes["n2"].request("HEAD", url, token=tok)
        self.assertEqual((r.status, r.header("Content-Length")), (200, str(len(body))))
        # a body of unknown length (chunked) goes through too
        st, _ = put_chunked(self.nodes["n3"], tok, sid, "chunked.bin", [body[i:i + 65536] for i in range(0, len(body), 65536)])
        self.assertEqual(st, 201)
        self.assertEqual(self.nodes["n1"].request("GET", "/api/v1/stores/%d/files/chunked.bin" % sid, token=tok).body, body)
        # the keeping node authorizes: no token, and another user's token, are refused as n1 refuses them
        self.assertEqual(self.status("n2", "GET", url), 401)
        other = self.nodes["n2"].add_user("gus", "gus-pw-1")
        self.everywhere("gus's token is known", lambda n: self.status(n, "GET", "/api/v1/me", other) == 200)
        self.assertEqual(self.status("n2", "GET", url, other), self.status("n1", "GET", url, other))
        self.assertIn(self.status("n2", "GET", url, other), (403, 404))
        # a token made on n3 this moment, while etcd cannot carry it to n1: n3 signs the user it
        # authenticated, and n1 takes the signature
        self.etcd.proc.send_signal(signal.SIGSTOP)
        try:
            fresh = self.login("n3", "fran", "fran-pw-1")
            r = self.nodes["n3"].request("GET", url, token=fresh, headers={"Range": "bytes=0-9"})
            self.assertEqual((r.status, r.body), (206, body[:10]))
            self.assertEqual(self.status("n1", "GET", url, fresh), 401)  # not known there yet
        finally:
            self.etcd.proc.send_signal(signal.SIGCONT)
        # a client cannot sign: a made-up signature is ignored
        forged = {"X-MByte-Forwarded": "n2", "X-MByte-Forwarded-User": "%d.%d.%s" % (1, int(time.time()), "0" * 64)}
        self.assertEqual(self.status("n1", "GET", url, headers=forged), 401)
        # the keeping node down: a clear 503 naming it, not a hang. (n1 keeps it unless etcd's pause above
        # outlived n1's lease: etcd then ends it when it resumes, and the replica takes the store over.)
        admin = self.login("n2", "admin", ADMIN_PASSWORD)
        keeper = next(st["owner"] for st in self.nodes["n2"].request("GET", "/api/v1/admin/cluster", token=admin).json()[
            "stores"] if st["id"] == sid)
        via = "n2" if keeper != "n2" else "n3"
        self.nodes[keeper].proc.kill()
        self.nodes[keeper].proc.wait()
        self.nodes[keeper].proc = None
        self.nodes[keeper].log.close()
        r = self.nodes[via].request("GET", url, token=tok, timeout=30)
        self.assertEqual(r.status, 503, r)
        self.assertIn("node " + keeper, r.json()["detail"])

    def test_eight_clients_through_haproxy_round_robin_need_no_sticky_sessions(self):
        hp = HAProxy(self.nodes)
        self.addCleanup(hp.cleanup)
        wait_for("HAProxy sees the three nodes up", lambda: set(hp.status().values()) == {"UP"}, 20)

        call = hp.call

        st, b = call("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        self.assertEqual(st, 200, b)
        admin = json.loads(b)["token"]
        failures = []

        def client(i):
            try:
                name, pw = "rr%d" % i, "rr%d-password" % i
                st, b = call("POST", "/api/v1/admin/users", {"username": name, "password": pw, "role": "user"}, admin)
                assert st == 201, (st, b)
                st, b = call("POST", "/api/v1/auth/login", {"username": name, "password": pw})
                assert st == 200, (st, b)
                tok = json.loads(b)["token"]
                st, b = call("GET", "/api/v1/stores", token=tok)
                assert st == 200 and [x["name"] for x in json.loads(b)] == ["Home"], (st, b)
                sid = json.loads(b)[0]["id"]
                files = {"f%d.bin" % j: os.urandom(150000 + 1000 * i + j) for j in range(3)}
                for fname, data in files.items():
                    st, b = call("PUT", "/api/v1/stores/%d/files/%s" % (sid, fname), data, tok,
                                 {"Content-Type": "application/octet-stream"})
                    assert st == 201, (fname, st, b)
                for _ in range(2):  # twice: each time most likely through other nodes
                    for fname, data in files.items():
                        st, b = call("GET", "/api/v1/stores/%d/files/%s" % (sid, fname), token=tok)
                        assert st == 200 and b == data, (fname, st, len(b))
                st, b = call("GET", "/api/v1/stores/%d/list" % sid, token=tok)
                got = sorted(e["name"] for e in json.loads(b)["entries"] if e["type"] == "file")
                assert st == 200 and got == sorted(files), (st, got)  # the Home template's folders aside
            except Exception as e:  # collected, reported below
                failures.append("client %d: %r" % (i, e))
        ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(failures, [])
        # the requests did cross: nodes that did not keep a client's Home forwarded to the one that did
        self.assertGreaterEqual(sum("forwarding PUT" in self.nodes[n].read_log() for n in self.NAMES), 2)

    def test_webdav_on_a_store_kept_by_another_node_works_through_any_node(self):
        tok = self.nodes["n1"].add_user("dana", "dana-pw-1")
        sid = home(self.nodes["n1"], tok)  # kept by n1
        r = self.nodes["n1"].request("POST", "/api/v1/account/app-passwords", {"name": "laptop"}, token=tok)
        self.assertEqual(r.status, 201, r)
        auth = {"Authorization": "Basic " + base64.b64encode(("dana:" + r.json()["password"]).encode()).decode()}
        body = os.urandom(200000)
        r = self.nodes["n2"].request("PUT", "/dav/%d/notes.bin" % sid, body=body, headers=auth)  # through n2
        self.assertIn(r.status, (201, 204), r)
        r = self.nodes["n3"].request("GET", "/dav/%d/notes.bin" % sid, headers=auth)  # through n3
        self.assertEqual((r.status, r.body), (200, body))
        r = self.nodes["n3"].request("PROPFIND", "/dav/%d/" % sid, headers=dict(auth, Depth="1"))
        self.assertEqual(r.status, 207, r)
        self.assertIn(b"/dav/%d/notes.bin" % sid, r.body)
        # MOVE names its Destination on the node the client reached: the Host passes through
        n2 = self.nodes["n2"]
        dest = "http://127.0.0.1:%d/dav/%d/moved.bin" % (n2.port, sid)
        r = n2.request("MOVE", "/dav/%d/notes.bin" % sid, headers=dict(auth, Destination=dest))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.nodes["n1"].request("GET", "/api/v1/stores/%d/files/moved.bin" % sid, token=tok).body,
                         body)

    def dav_user(self, name, store):
        """A user made on n1 with a store `store` made on n2 (so n2 keeps it) and known everywhere, and
        the Basic credentials of an app password of theirs that opens /dav/ on every node."""
        tok = self.nodes["n1"].add_user(name, name + "-pw-1")
        self.everywhere(name + " logs in", lambda n: isinstance(self.login(n, name, name + "-pw-1"), str))
        sid = create_store(self, self.nodes["n2"], tok, store)
        self.placed_everywhere(sid)
        r = self.nodes["n1"].request("POST", "/api/v1/account/app-passwords", {"name": "laptop"}, token=tok)
        self.assertEqual(r.status, 201, r)
        auth = {"Authorization": "Basic " + base64.b64encode((name + ":" + r.json()["password"]).encode()).decode()}
        self.everywhere("the app password opens /dav/",
                        lambda n: self.status(n, "PROPFIND", "/dav/", headers=dict(auth, Depth="0")) == 207)
        return tok, sid, auth

    def test_webdav_by_store_name_and_the_store_list_work_through_any_node(self):
        """/dav/<store name>/ is looked up by the WebDAV module (no id to forward by), which then hands
        the request to the keeper (docs/cluster.md "Modules' file calls"); the store list at /dav/ is
        every node's."""
        tok, sid, auth = self.dav_user("wanda", "Work")
        for n in ("n1", "n3"):  # neither keeps Work: n3 holds no copy, n1 may be its replica
            r = self.nodes[n].request("PROPFIND", "/dav/", headers=dict(auth, Depth="1"))
            self.assertEqual(r.status, 207, r)
            self.assertIn(b"/dav/Work/", r.body)
            self.assertIn(b"/dav/Home/", r.body)
        body = os.urandom(500000)
        r = self.nodes["n1"].request("PUT", "/dav/Work/report.bin", body=body, headers=auth)
        self.assertEqual(r.status, 201, r)
        r = self.nodes["n3"].request("GET", "/dav/Work/report.bin", headers=auth)
        self.assertEqual((r.status, r.body), (200, body))
        r = self.nodes["n3"].request("GET", "/dav/Work/report.bin", headers=dict(auth, Range="bytes=1000-1999"))
        self.assertEqual((r.status, r.body), (206, body[1000:2000]))
        r = self.nodes["n3"].request("PROPFIND", "/dav/Work/", headers=dict(auth, Depth="1"))
        self.assertEqual(r.status, 207, r)
        self.assertIn(b"/dav/Work/report.bin", r.body)
        r = self.nodes["n3"].request("DELETE", "/dav/Work/report.bin", headers=auth)
        self.assertEqual(r.status, 204, r)
        r = self.nodes["n2"].request("GET", "/api/v1/stores/%d/files/report.bin" % sid, token=tok)
        self.assertEqual(r.status, 404, r)

    def test_webdav_locks_and_properties_by_store_name_hold_through_every_node(self):
        """A request on /dav/<store name>/... that reaches a node which does not keep the store goes
        whole to the keeper (api->forward_store): a lock taken through one node binds writes through
        every other, and a dead property set through one is read through any; before, each node kept
        its own locks and properties, so a PUT through another node went through the lock."""
        tok, sid, auth = self.dav_user("oksana", "Desk")
        v1 = os.urandom(300000)
        r = self.nodes["n3"].request("PUT", "/dav/Desk/plan.odt", body=v1, headers=auth)
        self.assertEqual(r.status, 201, r)
        lock = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>oksana-office</D:owner></D:lockinfo>')
        r = self.nodes["n3"].request("LOCK", "/dav/Desk/plan.odt", body=lock,
                                     headers=dict(auth, Timeout="Second-600", Depth="0"))
        self.assertEqual(r.status, 200, r)
        token = r.header("Lock-Token").strip("<>")
        for n in ("n1", "n2"):  # the replica (or nothing) and the keeper: both see n3's lock
            r = self.nodes[n].request("PUT", "/dav/Desk/plan.odt", body=b"clobber", headers=auth)
            self.assertEqual(r.status, 423, (n, r))
            r = self.nodes[n].request("PROPFIND", "/dav/Desk/plan.odt", headers=dict(auth, Depth="0"))
            self.assertIn(token.encode(), r.body, n)
        v2 = os.urandom(400000)
        r = self.nodes["n1"].request("PUT", "/dav/Desk/plan.odt", body=v2, headers=dict(auth, If="(<%s>)" % token))
        self.assertEqual(r.status, 204, r)
        patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
                 b'<Z:stage>draft</Z:stage></D:prop></D:set></D:propertyupdate>')
        r = self.nodes["n1"].request("PROPPATCH", "/dav/Desk/plan.odt", body=patch,
                                     headers=dict(auth, If="(<%s>)" % token))
        self.assertEqual(r.status, 207, r)
        for n in self.NAMES:
            r = self.nodes[n].request("PROPFIND", "/dav/Desk/plan.odt", headers=dict(auth, Depth="0"))
            self.assertEqual(r.status, 207, (n, r))
            self.assertIn(b"draft", r.body, n)
            r = self.nodes[n].request("GET", "/dav/Desk/plan.odt", headers=auth)
            self.assertEqual((r.status, r.body), (200, v2), n)
        r = self.nodes["n1"].request("UNLOCK", "/dav/Desk/plan.odt", headers=dict(auth, **{"Lock-Token": "<%s>" % token}))
        self.assertEqual(r.status, 204, r)
        r = self.nodes["n3"].request("PUT", "/dav/Desk/plan.odt", body=v1, headers=auth)
        self.assertEqual(r.status, 204, r)
        r = self.nodes["n2"].request("GET", "/api/v1/stores/%d/files/plan.odt" % sid, token=tok)
        self.assertEqual((r.status, r.body), (200, v1))

    def test_a_by_name_read_forwarded_to_a_node_without_the_store_streams_from_the_keeper(self):
        """A /dav/<name>/ request another node forwarded (marked X-MByte-Forwarded) is not handed on
        again: the module's file calls serve it, and reply_file for a store kept elsewhere streams the
        keeper's answer (cluster_fwd_file, which parks the connection until the headers are in). This
        is what a by-name request meets when it was forwarded a moment before the store moved."""
        tok, sid, auth = self.dav_user("fedir", "Atlas")
        body = os.urandom(700000)
        r = self.nodes["n2"].request("PUT", "/dav/Atlas/map.bin", body=body, headers=auth)
        self.assertEqual(r.status, 201, r)
        for n in ("n1", "n3"):  # neither keeps Atlas
            h = dict(auth, **{"X-MByte-Forwarded": "elsewhere"})
            r = self.nodes[n].request("GET", "/dav/Atlas/map.bin", headers=h)
            self.assertEqual((r.status, len(r.body), r.body == body), (200, len(body), True), n)
            r = self.nodes[n].request("GET", "/dav/Atlas/map.bin", headers=dict(h, Range="bytes=1000-1999"))
            self.assertEqual((r.status, r.body), (206, body[1000:2000]), n)
            r = self.nodes[n].request("HEAD", "/dav/Atlas/map.bin", headers=h)
            self.assertEqual((r.status, r.header("Content-Length")), (200, str(len(body))), n)

    def test_tasks_are_read_listed_and_cancelled_through_any_node(self):
        """A task is its node's (the node that runs it), its id names that node: a client polling
        through HAProxy reaches it from any node, and the list holds every node's tasks."""
        tok = self.nodes["n1"].add_user("tess", "tess-pw-1")
        self.everywhere("tess logs in", lambda n: isinstance(self.login(n, "tess", "tess-pw-1"), str))
        made = {}
        for n in self.NAMES:  # a store made through each node: a task on each node
            r = self.nodes[n].request("POST", "/api/v1/stores", {"name": "T-" + n}, token=tok)
            self.assertEqual(r.status, 202, r)
            made[r.json()["task"]] = n
        self.assertEqual(len(made), 3, made)  # three ids: no two nodes hand out the same one
        for tid in made:
            for n in self.NAMES:  # polled through every node: the same task, done
                wait_for("task %d seen done through %s" % (tid, n), lambda: self.nodes[n].request(
                    "GET", "/api/v1/tasks/%d" % tid, token=tok).json().get("state") == "done", 20)
        # someone else's task is as missing through any node as on its own
        other = self.nodes["n2"].add_user("tom", "tom-pw-1")
        self.everywhere("tom's token is known", lambda n: self.status(n, "GET", "/api/v1/me", other) == 200)
        for tid, n in made.items():
            for via in self.NAMES:
                self.assertEqual(self.status(via, "GET", "/api/v1/tasks/%d" % tid, other), 404, (tid, via))
        # a finished task cannot be cancelled, wherever the request lands: the task's node says so
        tid = next(t for t, n in made.items() if n == "n1")
        r = self.nodes["n3"].request("POST", "/api/v1/tasks/%d/cancel" % tid, token=tok)
        self.assertEqual(r.status, 409, r)
        # the list through any node holds every node's tasks, newest first, page after page
        for n in self.NAMES:
            r = self.nodes[n].request("GET", "/api/v1/tasks", token=tok)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(sorted(t["id"] for t in r.json()), sorted(made), n)
            seen, path = [], "/api/v1/tasks?limit=1"
            while path:
                r = self.nodes[n].request("GET", path, token=tok)
                self.assertEqual(r.status, 200, r)
                seen += [t["id"] for t in r.json()]
                link = r.header("Link")
                path = link[1:link.index(">")] if link else None
                self.assertLess(len(seen), 10, seen)
            self.assertEqual(sorted(seen), sorted(made), n)  # each exactly once
        admin = self.login("n3", "admin", ADMIN_PASSWORD)
        r = self.nodes["n3"].request("GET", "/api/v1/admin/tasks?limit=1000", token=admin)
        self.assertLessEqual(set(made), {t["id"] for t in r.json()})
        # each task's end is a notification, made on its node and the same on every node; read on one,
        # read on all
        def finished(n):
            r = self.nodes[n].request("GET", "/api/v1/notifications", token=tok)
            return [x for x in r.json() if x["title"].startswith("Task ") and x["title"].endswith("finished")]
        unread = lambda n: self.nodes[n].request("GET", "/api/v1/notifications/unread", token=tok).json()["unread"]  # noqa
        for n in self.NAMES:
            wait_for("three task notifications on %s" % n, lambda: len(finished(n)) == 3, 10)
            self.assertEqual(len({x["id"] for x in finished(n)}), 3)
        total = unread("n1")
        self.assertGreaterEqual(total, 3)
        for n in self.NAMES:
            wait_for("%d unread on %s" % (total, n), lambda: unread(n) == total, 10)
        one = finished("n1")[0]["id"]
        self.assertEqual(self.nodes["n3"].request("POST", "/api/v1/notifications/%s/read" % one, token=tok).json(),
                         {"unread": total - 1})
        self.assertEqual(self.status("n2", "POST", "/api/v1/notifications/read", tok), 200)
        for n in self.NAMES:
            wait_for("no unread notification on %s" % n, lambda: self.nodes[n].request(
                "GET", "/api/v1/notifications/unread", token=tok).json()["unread"] == 0, 10)
        # a task of a node that is not up: a clear 503, not a 404
        r = self.nodes["n1"].request("GET", "/api/v1/tasks/%d" % ((999 << 40) + 1), token=tok)
        self.assertEqual(r.status, 503, r)
        self.assertIn("number 999", r.json()["detail"])

    def ftp(self, node, user, pw):
        f = ftplib.FTP(timeout=30)
        f.connect("127.0.0.1", self.ftp_ports[node])
        f.login(user, pw)
        self.addCleanup(f.close)
        return f

    def move_to_the_switch(self, keeper, sid, to, admin):
        """Move store sid from its keeper to node `to`, and return (the move's task) once the move
        waits at the store's gate for the requests and writes under way on the keeper."""
        r = self.nodes[keeper].request("POST", "/api/v1/admin/cluster/stores/%d/move" % sid, {"to": to}, token=admin)
        self.assertEqual(r.status, 202, r)
        wait_for("the move waits at the switch", lambda: "store %d switches over to node %s" % (sid, to)
                 in self.nodes[keeper].read_log(), 30)
        time.sleep(0.5)  # from the log line to the gate's closing
        return r.json()["task"]

    def test_ftp_uploads_that_meet_a_moves_switch_end_on_the_new_keeper(self):
        """A module's write on the node keeping the store (an FTP STOR) counts at the store's gate like
        an HTTP request: a move switches over once it has ended. One that begins while the switch waits
        is spooled and sent, once it ends, to where the store then is. Before, neither counted: the
        switch went ahead under the first, and its commit was refused (503, FTP 451)."""
        tok, sid, placed = self.user_at_home("stormv")
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        keeper = placed["owner"]
        to = next(n for n in self.NAMES if n not in (keeper, placed.get("replica")))
        held = os.urandom(300 * 1024)
        f1 = self.ftp(keeper, "stormv", "stormv-pw-1")
        f1.voidcmd("TYPE I")
        data = f1.transfercmd("STOR /Home/held.bin")
        data.sendall(held[:1000])
        time.sleep(0.5)  # the STOR's write has begun
        task = self.move_to_the_switch(keeper, sid, to, admin)
        second, got = os.urandom(200 * 1024), {}
        f2 = self.ftp(keeper, "stormv", "stormv-pw-1")
        t = threading.Thread(target=lambda: got.update(r=f2.storbinary("STOR /Home/second.bin", io.BytesIO(second))))
        t.start()
        time.sleep(1)
        self.assertEqual(got, {}, "the second STOR ended before the switch it met")
        self.assertEqual(self.nodes[keeper].request("GET", "/api/v1/tasks/%d" % task, token=admin).json()["state"],
                         "running")  # the switch waits for the first STOR
        data.sendall(held[1000:])
        data.close()
        self.assertTrue(f1.voidresp().startswith("226"))
        t.join(60)
        self.assertTrue(got.get("r", "").startswith("226"), got)
        wait_for("the move is done", lambda: self.nodes[keeper].request(
            "GET", "/api/v1/tasks/%d" % task, token=admin).json()["state"] == "done", 30)
        self.everywhere("store %d kept by %s" % (sid, to), lambda n: {st["id"]: st["owner"] for st in self.nodes[n].request(
            "GET", "/api/v1/admin/cluster", token=self.login(n, "admin", ADMIN_PASSWORD)).json()["stores"]}[sid] == to)
        for n in self.NAMES:
            for name, body in (("held.bin", held), ("second.bin", second)):
                r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/%s" % (sid, name), token=tok)
                self.assertEqual((r.status, r.body), (200, body), (n, name))
        self.assertRegex(self.nodes[keeper].read_log(), r"forwarding PUT /api/v1/stores/%d/files/second\.bin to node %s"
                         % (sid, to))

    def test_a_webdav_lock_that_makes_its_file_while_a_move_waits_binds_on_the_new_keeper(self):
        """A LOCK on a name that does not exist yet makes an empty file (what Office does) inside the
        request. Its request counted at the store's gate, and its body read once a move waits there,
        the file's write joins the gate its own request holds: the LOCK is answered, then the store
        switches over, and the lock binds on the new keeper from its first request. Before, the write was
        sent away as a far write, which met the closed gate behind its own request: the LOCK failed with
        503; and the new keeper read the store's locks only when its placement thread next looked."""
        tok, sid, auth = self.dav_user("lockmove", "Deck")
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        placed = next(st for st in self.nodes["n1"].request("GET", "/api/v1/admin/cluster", token=admin).json()["stores"]
                      if st["id"] == sid)
        keeper = placed["owner"]
        to = next(n for n in self.NAMES if n not in (keeper, placed.get("replica")))
        body = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>deck-office</D:owner></D:lockinfo>')
        s = socket.create_connection(("127.0.0.1", self.nodes[keeper].port), timeout=90)
        self.addCleanup(s.close)
        s.sendall(("LOCK /dav/%d/new.odt HTTP/1.1\r\nHost: mbyte\r\nAuthorization: %s\r\nContent-Type: application/xml"
                   "\r\nContent-Length: %d\r\nTimeout: Second-600\r\nDepth: 0\r\nExpect: 100-continue\r\n\r\n"
                   % (sid, auth["Authorization"], len(body))).encode())
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 100"))  # taken in: counted at the store's gate
        task = self.move_to_the_switch(keeper, sid, to, admin)
        s.sendall(body)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        head, rest = raw.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 201"), head)
        token = re.search(rb"(?im)^Lock-Token: <([^>]+)>", head).group(1).decode()
        # at once, through the old keeper: parked until the switch (or sent on after it), then served by
        # the new keeper a moment after it came to keep the store, before its placement thread looked
        r = self.nodes[keeper].request("PUT", "/dav/%d/new.odt" % sid, body=b"clobber", headers=auth)
        self.assertEqual(r.status, 423, r)
        wait_for("the move is done", lambda: self.nodes[keeper].request(
            "GET", "/api/v1/tasks/%d" % task, token=admin).json()["state"] == "done", 60)
        self.everywhere("store %d kept by %s" % (sid, to), lambda n: {st["id"]: st["owner"] for st in self.nodes[n].request(
            "GET", "/api/v1/admin/cluster", token=self.login(n, "admin", ADMIN_PASSWORD)).json()["stores"]}[sid] == to)
        # at once: the new keeper reads the store's locks before it serves the store's first request
        # (before, its placement thread did, up to half a second after the first requests)
        for n in self.NAMES:
            r = self.nodes[n].request("PUT", "/dav/%d/new.odt" % sid, body=b"clobber", headers=auth)
            self.assertEqual(r.status, 423, (n, r))
        r = self.nodes[to].request("PUT", "/dav/%d/new.odt" % sid, body=b"saved", headers=dict(auth, If="(<%s>)" % token))
        self.assertIn(r.status, (201, 204), r)
        r = self.nodes["n1"].request("GET", "/api/v1/stores/%d/files/new.odt" % sid, token=tok)
        self.assertEqual((r.status, r.body), (200, b"saved"))
        self.assertNotIn("store %d moves with" % sid, self.nodes[keeper].read_log())

    def test_ftp_reads_through_a_node_without_the_store_are_whole_resume_and_never_mix_two_contents(self):
        """A RETR through a node with no copy of the store fetches the file from its keeper in 1 MiB
        windows: every byte in order, from an offset (REST) too; a file replaced while it is read fails the transfer, and what came before is the
        old content only (each window is pinned to the content opened). The node queues a few MiB of
        such copied bytes for sending, not the 32 MiB it queues of chunk files: before, the whole 24 MiB
        file was read before the client had taken 1 MiB, and the replacement was never seen."""
        tok, sid, placed = self.user_at_home("reta")
        far = next(n for n in self.NAMES if n not in (placed["owner"], placed.get("replica")))
        data = os.urandom(5 * 1024 * 1024 + 12345)
        url = "/api/v1/stores/%d/files/big.bin" % sid
        self.assertEqual(self.nodes[placed["owner"]].request("PUT", url, body=data, token=tok).status, 201)
        f = self.ftp(far, "reta", "reta-pw-1")
        got = io.BytesIO()
        self.assertTrue(f.retrbinary("RETR /Home/big.bin", got.write).startswith("226"))
        self.assertEqual(hashlib.sha256(got.getvalue()).hexdigest(), hashlib.sha256(data).hexdigest())
        for off in (3 * 1024 * 1024 + 7, 1024 * 1024, 5):
            got = io.BytesIO()
            self.assertTrue(f.retrbinary("RETR /Home/big.bin", got.write, rest=off).startswith("226"), off)
            self.assertEqual(got.getvalue(), data[off:], off)
        # replaced while it is read: 24 MiB, more than the node and the sockets between here and there hold
        old, new = os.urandom(24 * 1024 * 1024), os.urandom(24 * 1024 * 1024)
        self.assertEqual(self.nodes[placed["owner"]].request("PUT", url, body=old, token=tok).status, 200)
        f.voidcmd("TYPE I")
        conn = f.transfercmd("RETR /Home/big.bin")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)  # no 32 MiB autotuned window here
        head = b""
        while len(head) < 1024 * 1024:
            head += conn.recv(1024 * 1024 - len(head))
        time.sleep(1)  # the node sends what its socket takes, and waits
        self.assertEqual(self.nodes[placed["owner"]].request("PUT", url, body=new, token=tok).status, 200)
        rest = []
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            rest.append(b)
        conn.close()
        got = head + b"".join(rest)
        with self.assertRaises((ftplib.error_temp, ftplib.error_perm)):
            f.voidresp()
        self.assertLess(len(got), len(old))
        self.assertEqual(got, old[:len(got)])

    def test_ftp_sessions_through_any_node_reach_the_right_store(self):
        """An FTP client may reach any node (HAProxy in TCP mode, DNS round robin): its stores are
        wherever they are kept, and every change lands on the store's keeper (replicated from
        there), never in a replica's copy."""
        tok = self.nodes["n1"].add_user("fiona", "fiona-pw-1")
        self.everywhere("fiona logs in", lambda n: isinstance(self.login(n, "fiona", "fiona-pw-1"), str))
        sids = {"Home": home(self.nodes["n1"], tok), "Work": create_store(self, self.nodes["n2"], tok, "Work")}
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        for sid in sids.values():
            self.placed_everywhere(sid)
        placed = {st["id"]: st for st in self.nodes["n1"].request("GET", "/api/v1/admin/cluster", token=admin).json()["stores"]}
        keeper = {name: placed[sid]["owner"] for name, sid in sids.items()}
        self.assertEqual(keeper, {"Home": "n1", "Work": "n2"})
        bodies = {}
        for n in self.NAMES:  # the keeper, the replica and a node with no copy, for each store
            f = self.ftp(n, "fiona", "fiona-pw-1")
            self.assertEqual(sorted(f.nlst("/")), ["Home", "Work"], n)
            for store in sids:
                data = os.urandom(300 * 1024 + len(n))
                path = "/%s/from-%s.bin" % (store, n)
                self.assertTrue(f.storbinary("STOR " + path, io.BytesIO(data)).startswith("226"), (n, path))
                self.assertEqual(f.size(path), len(data))
                f.mkd("/%s/dir-%s" % (store, n))
                f.rename(path, "/%s/dir-%s/moved.bin" % (store, n))
                bodies[(store, "dir-%s/moved.bin" % n)] = data
            with self.assertRaises(ftplib.error_perm) as e:  # the keeper's refusals come back as FTP replies
                f.rename("/Work/no-such-file", "/Work/x")
            self.assertTrue(str(e.exception).startswith("550"), e.exception)
        for n in self.NAMES:  # every node reads what every node wrote
            f = self.ftp(n, "fiona", "fiona-pw-1")
            for (store, rel), data in bodies.items():
                got = io.BytesIO()
                f.retrbinary("RETR /%s/%s" % (store, rel), got.write)
                self.assertEqual(got.getvalue(), data, (n, store, rel))
            self.assertLessEqual({"dir-%s" % m for m in self.NAMES}, set(f.nlst("/Work")))
        # it is all on the keepers, as their own HTTP clients see it
        for (store, rel), data in bodies.items():
            r = self.nodes[keeper[store]].request("GET", "/api/v1/stores/%d/files/%s" % (sids[store], rel), token=tok)
            self.assertEqual((r.status, r.body), (200, data), (store, rel))
        f = self.ftp("n3", "fiona", "fiona-pw-1")
        f.delete("/Home/dir-n2/moved.bin")
        f.rmd("/Home/dir-n2")
        r = self.nodes["n1"].request("GET", "/api/v1/stores/%d/info/dir-n2" % sids["Home"], token=tok)
        self.assertEqual(r.status, 404, r)
        for n in self.NAMES:  # replicas hold what their keepers hold: fsck is clean everywhere
            report = fsck(self.nodes[n], self.login(n, "admin", ADMIN_PASSWORD))
            self.assertEqual([p for p in report["problems"] if p["kind"] != "orphan"], [], (n, report))

    def test_a_tus_upload_to_a_store_on_another_node_goes_on_through_any_node(self):
        tok = self.nodes["n1"].add_user("tara", "tara-pw-1")
        sid = home(self.nodes["n1"], tok)  # kept by n1
        self.placed_everywhere(sid)
        body = os.urandom(700000)
        b64 = lambda t: base64.b64encode(t.encode()).decode()
        tus = {"Tus-Resumable": "1.0.0"}
        r = self.nodes["n2"].request("POST", "/api/v1/uploads", token=tok, headers=dict(
            tus, **{"Upload-Length": str(len(body)), "Upload-Metadata": "store %s,path %s" % (b64(str(sid)),
                                                                                               b64("tus.bin"))}))
        self.assertEqual(r.status, 201, r)  # made by n1, through n2
        loc = r.header("Location")
        self.assertTrue(loc.startswith("/api/v1/uploads/"), loc)
        patch = dict(tus, **{"Content-Type": "application/offset+octet-stream"})
        for i, (node, lo, hi) in enumerate((("n3", 0, 300000), ("n2", 300000, 700000))):  # two other nodes
            r = self.nodes[node].request("PATCH", loc, body=body[lo:hi], token=tok,
                                         headers=dict(patch, **{"Upload-Offset": str(lo)}))
            self.assertEqual(r.status, 204, (i, r))
            self.assertEqual(r.header("Upload-Offset"), str(hi))
        r = self.nodes["n3"].request("HEAD", loc, token=tok, headers=tus)
        self.assertEqual((r.status, r.header("Upload-Offset")), (200, str(len(body))))
        self.assertEqual(self.nodes["n3"].request("GET", "/api/v1/stores/%d/files/tus.bin" % sid, token=tok).body, body)

    def home_with_file(self, tok, folder, name, size):
        """The user's Home (kept by n1, its placement known everywhere) with folder/name of size random
        bytes: (store id, the bytes)."""
        sid = home(self.nodes["n1"], tok)
        self.placed_everywhere(sid)
        body = os.urandom(size)
        self.assertEqual(self.nodes["n1"].request("POST", "/api/v1/stores/%d/folders" % sid, {"path": folder},
                                                  token=tok).status, 201)
        r = self.nodes["n1"].request("PUT", "/api/v1/stores/%d/files/%s/%s" % (sid, folder, name), body=body,
                                     token=tok, headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 201, r)
        return sid, body

    def test_a_share_link_to_a_store_on_another_node_opens_through_any_node(self):
        tok = self.nodes["n1"].add_user("lena", "lena-pw-1")
        sid, body = self.home_with_file(tok, "trip", "pic.bin", 300000)
        r = self.nodes["n2"].request("POST", "/api/v1/stores/%d/shares" % sid,  # made on n1, through n2
                                     {"path": "trip", "type": "link", "permission": "download"}, token=tok)
        self.assertEqual(r.status, 201, r)
        link = "/api/v1/public/%s/pic.bin" % r.json()["token"]
        # anyone, without an account, through the nodes that do not keep the store
        for n in ("n2", "n3"):
            got = wait_for("the link opens through %s" % n, lambda: (lambda x: x.status == 200 and x)(
                self.nodes[n].request("GET", link)), 10)
            self.assertEqual(got.body, body)
        self.assertEqual(self.nodes["n3"].request("GET", "/api/v1/public/%s/pic.bin" % ("x" * 43)).status, 404)

    def test_a_drop_box_link_to_a_store_on_another_node_takes_uploads_through_any_node(self):
        tok = self.nodes["n1"].add_user("dora", "dora-pw-1")
        sid, _ = self.home_with_file(tok, "inbox", "readme.bin", 1000)
        r = self.nodes["n1"].request("POST", "/api/v1/stores/%d/shares" % sid,
                                     {"path": "inbox", "type": "link", "permission": "upload"}, token=tok)
        self.assertEqual(r.status, 201, r)
        token = r.json()["token"]
        bodies = {}
        for n in self.NAMES:  # a visitor's upload, wherever HAProxy sends it
            bodies[n] = os.urandom(200000 + len(n))
            r = wait_for("the link takes an upload through %s" % n, lambda: (lambda x: x.status != 404 and x)(
                self.nodes[n].request("PUT", "/api/v1/public/%s/from-%s.bin" % (token, n), body=bodies[n])), 10)
            self.assertEqual(r.status, 201, (n, r))
        for n, body in bodies.items():
            r = self.nodes["n1"].request("GET", "/api/v1/stores/%d/files/inbox/from-%s.bin" % (sid, n), token=tok)
            self.assertEqual((r.status, r.body), (200, body), n)

    def test_a_share_with_a_user_shows_and_opens_for_them_through_any_node(self):
        tok = self.nodes["n1"].add_user("sofia", "sofia-pw-1")
        self.nodes["n2"].add_user("sam", "sam-pw-1")
        self.everywhere("sam logs in", lambda n: isinstance(self.login(n, "sam", "sam-pw-1"), str))
        sid, body = self.home_with_file(tok, "plans", "a.bin", 250000)
        r = self.nodes["n3"].request("POST", "/api/v1/stores/%d/shares" % sid,  # made on n1, through n3
                                     {"path": "plans", "type": "user", "permission": "download", "user": "sam"},
                                     token=tok)
        self.assertEqual(r.status, 201, r)
        share = r.json()["id"]
        for n in self.NAMES:  # sam sees it and opens it wherever their requests land
            sam = self.login(n, "sam", "sam-pw-1")
            wait_for("the share is listed for sam on %s" % n, lambda: [x["id"] for x in self.nodes[n].request(
                "GET", "/api/v1/shared-with-me", token=sam).json()["shares"]] == [share], 10)
            r = self.nodes[n].request("GET", "/api/v1/shared/%s/a.bin" % share, token=sam)
            self.assertEqual((r.status, r.body), (200, body), n)
        self.assertEqual(self.status("n2", "DELETE", "/api/v1/shares/" + share, tok), 200)
        for n in self.NAMES:  # revoked through n2: gone for sam everywhere
            sam = self.login(n, "sam", "sam-pw-1")
            wait_for("the share is gone for sam on %s" % n, lambda: self.nodes[n].request(
                "GET", "/api/v1/shared-with-me", token=sam).json()["shares"] == [], 10)
            self.assertEqual(self.status(n, "GET", "/api/v1/shared/%s/a.bin" % share, sam), 404)

    def test_a_token_revoked_on_one_node_is_refused_on_all_and_a_new_password_counts_everywhere(self):
        self.nodes["n1"].add_user("rita", "rita-pw-1")
        self.everywhere("rita logs in", lambda n: isinstance(self.login(n, "rita", "rita-pw-1"), str))
        tok = self.login("n2", "rita", "rita-pw-1")
        self.everywhere("rita's token from n2 is taken", lambda n: self.status(n, "GET", "/api/v1/me", tok) == 200)
        named = self.nodes["n1"].request("POST", "/api/v1/me/tokens", {"name": "script"}, token=tok)
        self.assertEqual(named.status, 201, named)
        script = named.json()["token"]
        self.everywhere("the named token works", lambda n: self.status(n, "GET", "/api/v1/me", script) == 200)
        # revoked on n3: refused on every node
        r = self.nodes["n3"].request("DELETE", "/api/v1/me/tokens/" + named.json()["id"], token=tok)
        self.assertEqual(r.status, 200, r)
        self.everywhere("the revoked token is refused", lambda n: self.status(n, "GET", "/api/v1/me", script) == 401)
        self.assertEqual(self.status("n2", "POST", "/api/v1/auth/logout", tok), 200)
        self.everywhere("the logged-out token is refused", lambda n: self.status(n, "GET", "/api/v1/me", tok) == 401)
        # a password changed on n2: the old one is refused and the new one taken on all
        t2 = self.login("n2", "rita", "rita-pw-1")
        self.assertEqual(self.status("n2", "POST", "/api/v1/me/password", t2, {"old": "rita-pw-1", "new": "rita-pw-2"}),
                         200)
        self.everywhere("the old password is refused", lambda n: self.login(n, "rita", "rita-pw-1") == 401)
        for n in self.NAMES:
            self.assertIsInstance(self.login(n, "rita", "rita-pw-2"), str)

    def test_an_app_password_made_on_one_node_opens_webdav_on_another_until_it_is_deleted(self):
        tok = self.nodes["n1"].add_user("wendy", "wendy-pw-1")
        r = self.nodes["n1"].request("POST", "/api/v1/account/app-passwords", {"name": "laptop"}, token=tok)
        self.assertEqual(r.status, 201, r)
        ap = r.json()
        basic = {"Authorization": "Basic " + base64.b64encode(("wendy:" + ap["password"]).encode()).decode(),
                 "Depth": "0"}
        self.everywhere("the app password opens /dav/",
                        lambda n: self.status(n, "PROPFIND", "/dav/", headers=basic) == 207, ("n2", "n3"))
        r = self.nodes["n1"].request("DELETE", "/api/v1/account/app-passwords/" + ap["id"], token=tok)
        self.assertEqual(r.status, 204, r)
        self.everywhere("the deleted app password is refused",
                        lambda n: self.status(n, "PROPFIND", "/dav/", headers=basic) == 401, ("n2", "n3"))

    def test_changes_made_while_etcd_is_away_reach_every_node_when_it_returns(self):
        self.nodes["n1"].add_user("otto", "otto-pw-1")
        self.everywhere("otto logs in", lambda n: isinstance(self.login(n, "otto", "otto-pw-1"), str))
        tok = self.login("n3", "otto", "otto-pw-1")
        self.everywhere("otto's token is taken", lambda n: self.status(n, "GET", "/api/v1/me", tok) == 200)
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        self.etcd.proc.send_signal(signal.SIGSTOP)
        try:
            # served without etcd: the logout is local and durable at once ...
            self.assertEqual(self.status("n1", "POST", "/api/v1/auth/logout", tok), 200)
            self.assertEqual(self.status("n1", "GET", "/api/v1/me", tok), 401)
            self.assertEqual(self.status("n2", "GET", "/api/v1/me", tok), 200)  # ... and not yet known there
            # a new account needs a cluster-wide id: refused, clearly, while etcd is away
            r = self.nodes["n1"].request("POST", "/api/v1/admin/users",
                                         {"username": "nobody", "password": "nobody-pw-1", "role": "user"}, token=admin)
            self.assertEqual(r.status, 503, r)
            self.assertIn("etcd", r.json()["detail"])
            acc = self.nodes["n1"].request("GET", "/api/v1/admin/cluster", token=admin).json()["accounts"]
            self.assertGreaterEqual(acc["queued"], 1, acc)  # the logout waits here for etcd
        finally:
            self.etcd.proc.send_signal(signal.SIGCONT)
        wait_for("n1 handed its queue to etcd", lambda: self.nodes["n1"].request(
            "GET", "/api/v1/admin/cluster", token=admin).json()["accounts"]["queued"] == 0, 20)
        self.everywhere("the logout made without etcd", lambda n: self.status(n, "GET", "/api/v1/me", tok) == 401,
                        timeout=20)
        self.assertEqual(self.login("n2", "nobody", "nobody-pw-1"), 401)

    def test_a_node_killed_catches_up_on_what_changed_meanwhile(self):
        self.nodes["n3"].proc.kill()
        self.nodes["n3"].proc.wait()
        self.nodes["n3"].proc = None
        self.nodes["n3"].log.close()
        tok = self.nodes["n1"].add_user("kate", "kate-pw-1")
        self.assertEqual(self.status("n1", "POST", "/api/v1/auth/logout", tok), 200)
        self.start_again("n3")  # on its data directory
        self.assertIsInstance(self.login("n3", "kate", "kate-pw-1"), str)
        self.assertEqual(self.status("n3", "GET", "/api/v1/me", tok), 401)

    def test_a_node_joining_later_takes_every_record_however_many_pages_they_fill(self):
        tok = self.nodes["n1"].add_user("paula", "paula-pw-1")
        self.everywhere("paula logs in", lambda n: isinstance(self.login(n, "paula", "paula-pw-1"), str))
        # 1,100 app-password records of an account that does not exist: they sort before every
        # account and token, so the join reads them in three pages of 500 before paula's
        for first in range(0, 1100, 100):
            self.etcd.call("/v3/kv/txn", {"success": [
                {"request_put": {"key": self.etcd.b64("/mbyte/kv/ap/00000000000fffff/%05d" % i),
                                 "value": self.etcd.b64('{"v":1,"id":"%05d","name":"filler","hash":"x"}' % i)}}
                for i in range(first, first + 100)]})
        late = Server(conf=cluster_conf(self.etcd.url, "n4"), env={"MBYTE_ADMIN_PASSWORD": self.OTHER_PW})
        try:
            late.start()
            self.assertEqual(late.request("GET", "/api/v1/me", token=tok).status, 200)
            self.assertEqual(late.request("POST", "/api/v1/auth/login",
                                          {"username": "paula", "password": "paula-pw-1"}).status, 200)
            self.assertEqual(late.request("POST", "/api/v1/auth/login",
                                          {"username": "admin", "password": self.OTHER_PW}).status, 401)
            late.stop()
            keys = subprocess.run([LDB_EDIT, os.path.join(late.data, "meta"), "--keys", "ap/00000000000fffff/"],
                                  capture_output=True, text=True, check=True).stdout.split()
            self.assertEqual(len(keys), 1100)  # every page was written
        finally:
            late.cleanup()
            self.etcd.call("/v3/kv/deleterange", {"key": self.etcd.b64("/mbyte/kv/ap/00000000000fffff/"),
                                                   "range_end": self.etcd.b64("/mbyte/kv/ap/00000000000fffff0")})

    def test_an_etcd_replaced_by_an_empty_one_gets_the_accounts_back_and_none_is_lost(self):
        self.nodes["n1"].add_user("rob", "rob-pw-1")
        self.everywhere("rob logs in", lambda n: isinstance(self.login(n, "rob", "rob-pw-1"), str))
        # n3 sleeps through the swap: when it wakes, the new etcd has the records again (another node
        # handed them on), but its revision is far behind n3's; n3 must notice and read them anew
        self.nodes["n3"].proc.send_signal(signal.SIGSTOP)
        try:
            self.etcd.stop()
            shutil.rmtree(os.path.join(self.etcd.tmp, "data"))  # a new, empty etcd on the same address
            self.etcd.start()
            wait_for("a node hands the new etcd its accounts",
                     lambda: "/mbyte/kv/u/rob" in self.etcd.keys("/mbyte/kv/"), 30)
        finally:
            self.nodes["n3"].proc.send_signal(signal.SIGCONT)
        for n in self.NAMES:
            self.assertIsInstance(self.login(n, "rob", "rob-pw-1"), str, n)
        admin = self.login("n2", "admin", ADMIN_PASSWORD)
        r = self.nodes["n2"].request("POST", "/api/v1/admin/users",
                                     {"username": "after-swap", "password": "after-swap-pw", "role": "user"}, token=admin)
        self.assertEqual(r.status, 201, r)
        self.everywhere("an account made after the swap logs in",
                        lambda n: isinstance(self.login(n, "after-swap", "after-swap-pw"), str))
        users = self.nodes["n3"].request("GET", "/api/v1/admin/users", token=self.login("n3", "admin", ADMIN_PASSWORD))
        ids = [u["id"] for u in users.json()]
        self.assertEqual(len(set(ids)), len(ids), users.json())  # the new etcd's ids start past every old one

    def module_state(self, node, name):
        tok = self.login(node, "admin", ADMIN_PASSWORD)
        mods = self.nodes[node].request("GET", "/api/v1/admin/modules", token=tok).json()
        return next((m["state"] for m in mods if m["name"] == name), None)

    def test_a_module_switched_off_on_one_node_is_off_on_every_node_and_on_a_node_started_later(self):
        self.assertEqual({self.module_state(n, "webdav") for n in self.NAMES}, {"active"})
        self.nodes["n3"].proc.kill()
        self.nodes["n3"].proc.wait()
        self.nodes["n3"].proc = None
        self.nodes["n3"].log.close()
        admin = self.login("n1", "admin", ADMIN_PASSWORD)
        try:
            r = self.nodes["n1"].request("POST", "/api/v1/admin/modules/webdav/unload", token=admin)
            self.assertEqual(r.status, 200, r)
            self.everywhere("webdav is off", lambda n: self.module_state(n, "webdav") != "active", ("n1", "n2"))
            self.assertEqual(self.status("n2", "PROPFIND", "/dav/", headers={"Depth": "0"}), 404)
            # n3's conf.d switches webdav on; the cluster said off while n3 was down
            self.start_again("n3")
            wait_for("n3 follows the cluster", lambda: self.module_state("n3", "webdav") != "active", 10)
            self.assertIn("webdav: switched off on node n1: unloading here too", self.nodes["n3"].read_log())
        finally:
            tok = self.login("n2", "admin", ADMIN_PASSWORD)
            r = self.nodes["n2"].request("POST", "/api/v1/admin/modules/webdav/load", token=tok)
        self.assertEqual(r.status, 200, r)
        self.everywhere("webdav is on again", lambda n: self.module_state(n, "webdav") == "active")
        self.assertEqual(self.status("n3", "PROPFIND", "/dav/", headers={"Depth": "0"}), 401)  # served: asks who

    def test_a_module_setting_changed_on_one_node_applies_on_every_node_and_on_a_node_started_later(self):
        def greeting(n):
            r = self.nodes[n].request("GET", "/api/v1/hello", token=self.login(n, "admin", ADMIN_PASSWORD))
            return r.status == 200 and r.json()["greeting"]

        def text(n):
            with open(os.path.join(self.nodes[n].confdir, "hello.yaml")) as f:
                return f.read()
        self.nodes["n3"].kill()  # down while the setting changes
        new = "# set on n1\ngreeting: bonjour from the cluster\n"
        with open(os.path.join(self.nodes["n1"].confdir, "hello.yaml"), "w") as f:
            f.write(new)
        r = self.nodes["n1"].request("POST", "/api/v1/admin/config/reload", token=self.login("n1", "admin", ADMIN_PASSWORD))
        self.assertEqual(r.status, 200, r)
        self.assertIn({"module": "hello", "action": "reconfigured", "detail": ""}, r.json()["modules"])
        self.assertEqual(greeting("n1"), "bonjour from the cluster")
        self.everywhere("n1's greeting", lambda n: greeting(n) == "bonjour from the cluster", nodes=["n2"])
        self.assertEqual(text("n2"), new)  # its conf.d file is the cluster's: its own next reload keeps it
        r = self.nodes["n2"].request("POST", "/api/v1/admin/config/reload", token=self.login("n2", "admin", ADMIN_PASSWORD))
        self.assertIn({"module": "hello", "action": "unchanged", "detail": ""}, r.json()["modules"])
        self.start_again("n3")
        self.everywhere("n1's greeting", lambda n: greeting(n) == "bonjour from the cluster", nodes=["n3"], timeout=30)
        self.assertEqual(text("n3"), new)
        # Changed again on n3: back on every node.
        with open(os.path.join(self.nodes["n3"].confdir, "hello.yaml"), "w") as f:
            f.write("greeting: hello\n")
        r = self.nodes["n3"].request("POST", "/api/v1/admin/config/reload", token=self.login("n3", "admin", ADMIN_PASSWORD))
        self.assertEqual(r.status, 200, r)
        self.everywhere("n3's greeting", lambda n: greeting(n) == "hello")

    def test_a_notification_made_on_one_node_is_pushed_live_to_a_page_open_on_another(self):
        tok = self.login("n2", "admin", ADMIN_PASSWORD)
        s = socket.create_connection(("127.0.0.1", self.nodes["n2"].port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % tok.encode())
        data = b""
        while b": connected" not in data:
            data += s.recv(4096)
        r = self.nodes["n1"].request("POST", "/api/v1/hello/tasks", {"steps": 6, "step_ms": 500},
                                     token=self.login("n1", "admin", ADMIN_PASSWORD))
        self.assertEqual(r.status, 202, r)
        task = r.json()["id"]
        while b"event: notification" not in data:  # the task ran on n1; its notification reaches n2's page
            data += s.recv(4096)
        while b"\n\n" not in data.split(b"event: notification", 1)[1]:
            data += s.recv(4096)
        self.assertIn(b"Task %d is done" % task, data.split(b"event: notification", 1)[1])
        # Its live events too (cluster_events.c): queued, running with progress (at most one a second
        # once running), done; in the order n1 made them.
        def mine():
            return [(e["state"], e["progress"]) for e in map(json.loads, re.findall(
                rb"event: task\ndata: (\{[^\n]*\})\n\n", data)) if e["id"] == task]
        deadline = time.monotonic() + 20  # the stream's keepalives would keep recv going for ever
        while ("done", 100) not in mine() and time.monotonic() < deadline:  # may follow the notification
            data += s.recv(4096)
        mine = mine()
        self.assertIn(("done", 100), mine, "the task's end did not reach n2's page as a task event")
        self.assertEqual(mine[0], ("queued", 0), mine)
        self.assertEqual(mine[-1], ("done", 100), mine)
        running = [p for st, p in mine if st == "running"]
        self.assertTrue(any(0 < p < 100 for p in running), mine)  # 3 s of progress: some of it on the way
        self.assertLessEqual(len(running), 5, mine)  # 7 made on n1 (the start, then each of 6 steps), throttled
        self.assertEqual(running, sorted(running), mine)
        # Marked read through n1: n2's page hears the new count.
        r = self.nodes["n1"].request("POST", "/api/v1/notifications/read", token=self.login("n1", "admin", ADMIN_PASSWORD))
        self.assertEqual((r.status, r.json()), (200, {"unread": 0}), r)
        while b'"unread":0' not in data.split(b"event: unread")[-1] if b"event: unread" in data else True:
            data += s.recv(4096)

    def test_a_node_with_accounts_of_its_own_refuses_to_join(self):
        alone = Server()
        try:
            alone.start()
            alone.add_user("local-only")
            alone.stop()
            alone.conf = cluster_conf(self.etcd.url, "n4")
            alone.write_config()
            log = refused_start(self, alone)
            self.assertIn("node n4 has accounts of its own", log)
            self.assertIn("joins a running cluster with an empty data directory", log)
        finally:
            alone.cleanup()
        self.assertNotIn("/mbyte/kv/u/local-only", self.etcd.keys("/mbyte/kv/"))


class SingleServer(ServerTest):
    """Without `cluster` nothing of it runs."""

    def test_without_cluster_the_cluster_view_is_404_and_no_etcd_is_asked(self):
        r = self.srv.request("GET", "/api/v1/admin/cluster", token=self.admin)
        p = self.assertProblem(r, 404, "not in cluster mode")
        self.assertEqual(p["status"], 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        self.assertNotIn("cluster:", self.srv.read_log())
        # No membership thread: the only one that talks to etcd (ClusterOfThree sees it in cluster mode).
        self.assertNotIn("mb-cluster", thread_names(self.srv.proc.pid))


class BadSettings(unittest.TestCase):
    """Each refused at start (exit 2) with mbyte.yaml's line and the reason."""
    CASES = [
        ("cluster: [http://127.0.0.1:1]", 2, "cluster must be a mapping"),
        ("cluster:\n  etcd: http://127.0.0.1:1\n  node: a", 3, "cluster.etcd must be a list"),
        ("cluster:\n  node: a\n  etcd: [ftp://127.0.0.1:1]", 4, "is not an etcd endpoint"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  node: Bad/Name", 4, "cluster.node must be a name"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  node: a\n  lease_ttl: 1", 5, "cluster.lease_ttl must be"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  node: a\n  advertise: nowhere", 5, "must be host:port"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  node: a\n  rebalance: sometimes", 5, "cluster.rebalance must be true or false"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  node: a\n  store_weight_mb: 0", 5, "cluster.store_weight_mb must be"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]\n  nodes: a", 4, "unknown key 'cluster.nodes'"),
        ("cluster:\n  etcd: [http://127.0.0.1:1]", 2, "cluster mode needs cluster.node"),
    ]

    def test_bad_cluster_settings_are_refused_at_start_with_their_line(self):
        for text, line, reason in self.CASES:
            with self.subTest(text=text):
                s = Server()
                try:
                    with open(os.path.join(s.confdir, "mbyte.yaml"), "w") as f:
                        f.write("log_level: info\n" + text + "\n")
                    p = subprocess.run([os.environ.get("MBYTED", "mbyted"), "--config", s.confdir], env=s.env(),
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("mbyte.yaml:%d: " % line, p.stderr)
                    self.assertIn(reason, p.stderr)
                finally:
                    s.cleanup()

    def test_bad_cluster_environment_is_refused_naming_the_variable(self):
        for env, reason in [({"MBYTE_ETCD": "127.0.0.1:2379"}, "MBYTE_ETCD: '127.0.0.1:2379' is not an etcd endpoint"),
                            ({"MBYTE_ETCD": "http://127.0.0.1:1", "MBYTE_NODE": "no way"}, "MBYTE_NODE:"),
                            ({"MBYTE_ETCD": "http://127.0.0.1:1", "MBYTE_NODE": "a", "MBYTE_ADVERTISE": "x"},
                             "MBYTE_ADVERTISE")]:
            with self.subTest(env=env):
                s = Server(env=env)
                try:
                    p = subprocess.run([os.environ.get("MBYTED", "mbyted"), "--config", s.confdir], env=s.env(),
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn(reason, p.stderr)
                finally:
                    s.cleanup()

    def test_unreachable_etcd_refuses_the_start_with_the_endpoint(self):
        port = free_port()
        s = Server(env={"MBYTE_ETCD": "http://127.0.0.1:%d" % port, "MBYTE_NODE": "lonely"})
        try:
            self.assertIn("cannot register node lonely in etcd (http://127.0.0.1:%d)" % port, refused_start(self, s))
        finally:
            s.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Replicas and failover (issue 23, docs/cluster.md "Replicas and failover"): three real mbyted on
loopback, a real etcd and a real HAProxy. Every store is kept by one node and replicated
synchronously on another; the owner killed with SIGKILL, its replica serves the store within seconds
with every acknowledged write; the replica killed, the owner goes on alone; an owner paused past its
lease cannot acknowledge a write once its replica took the store over. What is checked is what users
see: status codes, the bytes read back, and fsck on every node."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import ADMIN_PASSWORD, main  # noqa: E402
from storeutil import create_store, fsck, home, put_chunked  # noqa: E402
from test_cluster import LDB_EDIT, TTL, EtcdAndNodes, HAProxy, Server, cluster_conf, wait_for  # noqa: E402

OCTET = {"Content-Type": "application/octet-stream"}


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


class Failover(EtcdAndNodes):
    """Three nodes joined in one cluster for the class; each test starts with all three up."""

    @classmethod
    def start_cluster(cls):
        cls.start_joined()

    def setUp(self):
        super().setUp()
        for n in self.NAMES:  # each taking replicas (it publishes its replication port once started), and
            # no record of a process an earlier test killed left in any view (etcd restarted keeps leases)
            wait_for("three live nodes in %s's view" % n, lambda: len(
                [x for x in self.view(n)["nodes"] if x.get("replication") and listening(x["replication"])]) == 3, 30)

    def admin(self, n):
        r = self.nodes[n].request("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200, r
        return r.json()["token"]

    def view(self, n):
        return self.nodes[n].request("GET", "/api/v1/admin/cluster", token=self.admin(n)).json()

    def placement(self, n, sid):
        return next((st for st in self.view(n)["stores"] if st["id"] == sid), None)

    def user_on(self, n, name):
        """A user made on node n: their Home store is kept by n. (token, store id, its placement)"""
        tok = self.nodes[n].add_user(name, name + "-password")
        sid = home(self.nodes[n], tok)
        for m in self.NAMES:
            wait_for("store %d's placement on %s" % (sid, m), lambda: self.placement(m, sid), 10)
            wait_for("%s logs in on %s" % (name, m), lambda: self.nodes[m].request(
                "POST", "/api/v1/auth/login", {"username": name, "password": name + "-password"}).status == 200, 10)
        p = self.placement(n, sid)
        self.assertEqual((p["owner"], p["epoch"]), (n, 1), (p, [line for line in self.nodes[n].read_log().splitlines()
                                                               if "replica" in line][-3:]))
        self.assertIn(p["replica"], [m for m in self.NAMES if m != n], p)
        return tok, sid, p

    def put(self, n, tok, sid, name, data):
        return self.nodes[n].request("PUT", "/api/v1/stores/%d/files/%s" % (sid, name), body=data, token=tok,
                                     headers=OCTET).status

    def get(self, n, tok, sid, name):
        r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/%s" % (sid, name), token=tok)
        return r.status, r.body

    def fsck_clean(self, n):
        """fsck on node n: nothing but orphans (chunks a killed transfer left; the collector takes them)."""
        report = fsck(self.nodes[n], self.admin(n))
        self.assertEqual([p for p in report["problems"] if p["kind"] != "orphan"], [], (n, report))

    def test_owner_killed_under_eight_clients_through_haproxy_failures_last_seconds_and_no_write_is_lost(self):
        hp = HAProxy(self.nodes)
        self.addCleanup(hp.cleanup)
        wait_for("HAProxy sees the three nodes up", lambda: set(hp.status().values()) == {"UP"}, 20)
        users = [self.user_on("n1", "fo%d" % i) for i in range(8)]  # every Home kept by n1
        replicas = {p["replica"] for _, _, p in users}
        acked, failures, stop = {}, [], threading.Event()
        lock = threading.Lock()

        def call(method, path, tok, body=None):
            return hp.call(method, path, body, tok, OCTET if body is not None else None)

        def client(i):
            tok, sid, _ = users[i]
            j = 0
            while not stop.is_set():
                name, data = "c%d-%d.bin" % (i, j), os.urandom(1000 + (i * 7919 + j * 104729) % 300000)
                st, b = call("PUT", "/api/v1/stores/%d/files/%s" % (sid, name), tok, data)
                t = time.time()
                if st in (200, 201):
                    with lock:
                        acked[(i, name)] = data
                    if j:  # read one acknowledged before back
                        prev = "c%d-%d.bin" % (i, j - 1)
                        with lock:
                            want = acked.get((i, prev))
                        if want is not None:
                            st, b = call("GET", "/api/v1/stores/%d/files/%s" % (sid, prev), tok)
                            if st != 200 or b != want:
                                with lock:
                                    failures.append((time.time(), "GET", st))
                else:
                    with lock:
                        failures.append((t, "PUT", st, b[:200]))
                j += 1
                time.sleep(0.05)

        ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        time.sleep(3)
        with lock:
            before = len(acked)
        self.assertGreater(before, 8, "the clients did not get going")
        killed = time.time()
        self.nodes["n1"].kill()
        # the replicas take the stores over once n1's lease ends; the clients go on meanwhile
        for r in replicas:
            try:
                wait_for("the stores n1 kept are taken over", lambda: all(
                    self.placement(r, sid)["owner"] != "n1" for _, sid, _ in users), TTL + 15)
            except AssertionError as e:
                raise AssertionError("%s\n%s" % (e, "\n".join(
                    "%s: %s" % (n, line) for n in ("n2", "n3") for line in self.nodes[n].read_log().splitlines()
                    if "cluster" in line)[-6000:]))
        time.sleep(6)  # and keep working afterwards
        stop.set()
        for t in ts:
            t.join()
        with lock:
            failed_at = [f[0] for f in failures]
            after = [k for k in acked]
        self.assertGreater(len(after), before + 8, "no write was acknowledged after the owner died")
        if failed_at:
            window = max(failed_at) - min(failed_at)
            self.assertLessEqual(window, 10, "clients saw failures for %.1f s: %r ... %r\n%s" % (
            window, failures[:2], failures[-4:], self.warnings()))
            self.assertGreaterEqual(min(failed_at), killed - 0.5, failures[:5])  # none before the kill
        # every acknowledged upload reads back identical through both survivors
        for i, (tok, sid, p) in enumerate(users):
            new = self.placement("n2", sid)
            self.assertEqual(new["owner"], p["replica"], new)
            self.assertIn(new["epoch"], (2, 3), new)  # taken over (2); given a new replica since (3)
            for (ci, name), data in acked.items():
                if ci == i:
                    for n in ("n2", "n3"):
                        self.assertEqual(self.get(n, tok, sid, name), (200, data), (n, name))
        for n in ("n2", "n3"):
            self.fsck_clean(n)

    def test_a_killed_owner_back_removes_its_old_copy_once_two_other_nodes_hold_the_store(self):
        tok, sid, p = self.user_on("n1", "oldcopy")
        third = next(n for n in self.NAMES if n not in ("n1", p["replica"]))
        data = os.urandom(300000)
        self.assertEqual(self.put("n1", tok, sid, "kept.bin", data), 201)
        self.nodes["n1"].kill()
        wait_for("store %d kept by %s with its replica on %s" % (sid, p["replica"], third), lambda: (
            lambda pl: pl and pl["owner"] == p["replica"] and pl["replica"] == third and not pl.get("filling"))(
            self.placement(p["replica"], sid)), TTL + 30)
        self.start_again("n1")  # its copy is an old one now: two other nodes hold the store
        olds = lambda: [c["store"] for c in self.view("n1").get("old_copies", [])]  # noqa: E731
        wait_for("n1 listing its old copy of store %d" % sid, lambda: sid in olds(), 20)
        self.assertEqual(self.get("n1", tok, sid, "kept.bin"), (200, data))  # served by its keeper meanwhile
        wait_for("n1's old copy of store %d removed" % sid, lambda: sid not in olds(), 40)
        self.assertIn("old copy of store %d is removed" % sid, self.nodes["n1"].read_log())
        for n in self.NAMES:  # the keeper and its replica keep theirs; every node reads the file
            self.assertEqual(self.get(n, tok, sid, "kept.bin"), (200, data), n)
            self.fsck_clean(n)
        self.nodes["n1"].stop()  # n1's database has none of the store's records left
        keys = subprocess.run([LDB_EDIT, os.path.join(self.nodes["n1"].data, "meta"), "--keys", "f/%016x/" % sid],
                              capture_output=True, text=True, check=True).stdout.split()
        self.assertEqual(keys, [])

    def test_a_store_moves_live_under_a_reader_and_a_writer_with_no_failed_request(self):
        tok, sid, p = self.user_on("n1", "mv")
        to = next(n for n in self.NAMES if n not in ("n1", p["replica"]))  # not its replica: filled first
        files = {"base%d.bin" % i: os.urandom(20000 + i) for i in range(5)}
        for name, data in files.items():
            self.assertEqual(self.put("n1", tok, sid, name, data), 201)
        admin = self.admin("n2")
        # refused: nobody to move to, the node that keeps it already, a user
        move = "/api/v1/admin/cluster/stores/%d/move" % sid
        self.assertEqual(self.nodes["n2"].request("POST", move, {"to": "nowhere"}, token=admin).status, 400)
        self.assertEqual(self.nodes["n2"].request("POST", move, {"to": "n1"}, token=admin).status, 409)
        self.assertEqual(self.nodes["n2"].request("POST", move, {"to": to}, token=tok).status, 403)
        stop, acked, failed, reads = threading.Event(), dict(files), [], [0]

        def writer():  # on the node that keeps it now: its requests meet the switch
            k = 0
            while not stop.is_set():
                name, data = "live%d.bin" % k, os.urandom(3000 + k)
                st = self.put("n1", tok, sid, name, data)
                if st == 201:
                    acked[name] = data
                else:
                    failed.append(("PUT", name, st))
                k += 1

        def reader():  # through every node in turn
            k = 0
            while not stop.is_set():
                name = sorted(files)[k % len(files)]
                st, body = self.get(self.NAMES[k % 3], tok, sid, name)
                if (st, body) != (200, files[name]):
                    failed.append(("GET", name, st))
                reads[0] += 1
                k += 1
        ts = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in ts:
            t.start()
        try:
            time.sleep(1)
            r = self.nodes["n2"].request("POST", move, {"to": to}, token=admin)  # n2 hands it to n1
            self.assertEqual(r.status, 202, r)
            task = r.json()["task"]
            wait_for("the store is kept by %s" % to, lambda: self.placement("n1", sid)["owner"] == to, 60)
            time.sleep(1.5)  # and the reader and the writer go on against it
        finally:
            stop.set()
            for t in ts:
                t.join()
        self.assertEqual(failed, [], self.warnings())  # what the nodes said, to tell which refusal it was
        self.assertGreater(reads[0], 10)
        now = self.placement(to, sid)
        self.assertEqual((now["owner"], now["replica"], now["filling"]), (to, "n1", False), now)
        self.assertEqual(self.nodes["n1"].request("GET", "/api/v1/tasks/%d" % task, token=admin).json()["state"],
                         "done")
        for name, data in acked.items():  # every acknowledged write is on the new keeper
            self.assertEqual(self.get(to, tok, sid, name), (200, data), name)
        self.fsck_clean(to)

    def test_requests_that_meet_a_moves_switch_wait_without_holding_the_servers_threads(self):
        """A move switches a store over once no request its keeper serves for it is under way; one
        that arrives meanwhile is parked (its connection suspended), not held in one of
        libmicrohttpd's threads: with more of them waiting than the node has threads (16), the node
        still answers everything else, and the upload the switch waits for still gets its body
        read. Once the switch is done the parked requests go to the new keeper and get the file."""
        tok, sid, p = self.user_on("n1", "gate")
        to = next(n for n in self.NAMES if n not in ("n1", p["replica"]))
        data = os.urandom(50000)
        self.assertEqual(self.put("n1", tok, sid, "doc.bin", data), 201)
        # an upload to n1 under way, its body held back: the switch waits for it
        slow = os.urandom(200000)
        up = socket.create_connection(("127.0.0.1", self.nodes["n1"].port), timeout=60)
        self.addCleanup(up.close)
        up.sendall(("PUT /api/v1/stores/%d/files/slow.bin HTTP/1.1\r\nHost: n1\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (sid, tok, len(slow))).encode())
        up.sendall(slow[:1000])
        admin = self.admin("n1")
        r = self.nodes["n2"].request("POST", "/api/v1/admin/cluster/stores/%d/move" % sid, {"to": to}, token=admin)
        self.assertEqual(r.status, 202, r)
        task = r.json()["task"]
        wait_for("the move waits at the switch", lambda: "store %d switches over to node %s" % (sid, to)
                 in self.nodes["n1"].read_log(), 30)
        time.sleep(0.5)  # from the log line to the gate's closing
        got = {}

        def reader(i):
            got[i] = self.get("n1", tok, sid, "doc.bin")
        readers = [threading.Thread(target=reader, args=(i,)) for i in range(24)]
        for t in readers:
            t.start()
            time.sleep(0.02)
        time.sleep(1)
        self.assertEqual(got, {}, "a request answered before the switch")
        # all of them wait; n1 answers anything else, and reads the held upload's body
        r = self.nodes["n1"].request("GET", "/api/v1/health", timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.nodes["n1"].request("GET", "/api/v1/me", token=tok, timeout=10).status, 200)
        up.sendall(slow[1000:])
        head = up.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 201"), head[:200])
        for t in readers:
            t.join(60)
        self.assertEqual(sorted(got), list(range(24)))
        self.assertTrue(all(v == (200, data) for v in got.values()), {k: v[0] for k, v in got.items()})
        wait_for("the move is done", lambda: self.nodes["n1"].request(
            "GET", "/api/v1/tasks/%d" % task, token=admin).json()["state"] == "done", 30)
        self.assertEqual(self.placement("n1", sid)["owner"], to)
        self.assertEqual(self.get(to, tok, sid, "slow.bin"), (200, slow))
        self.assertEqual(self.get("n2", tok, sid, "doc.bin"), (200, data))

    def test_a_tus_upload_under_way_when_its_store_moves_ends_on_the_new_keeper(self):
        """A tus upload stays on the node that made it (its part file); when its store moved to another
        node meanwhile, its last PATCH sends the file to the new keeper as the user (before, the commit
        on the old keeper was refused: 503, every retry the same)."""
        tok, sid, p = self.user_on("n1", "tusmv")
        to = next(n for n in self.NAMES if n not in ("n1", p["replica"]))
        body = os.urandom(900000)
        tus = {"Tus-Resumable": "1.0.0"}
        meta = "store %s,path %s" % (base64.b64encode(str(sid).encode()).decode(),
                                     base64.b64encode(b"in/moved.bin").decode())
        r = self.nodes["n1"].request("POST", "/api/v1/uploads", token=tok, headers=dict(
            tus, **{"Upload-Length": str(len(body)), "Upload-Metadata": meta + ",parents " +
                    base64.b64encode(b"true").decode()}))
        self.assertEqual(r.status, 201, r)
        loc = r.header("Location")
        patch = dict(tus, **{"Content-Type": "application/offset+octet-stream"})
        r = self.nodes["n1"].request("PATCH", loc, body=body[:400000], token=tok,
                                     headers=dict(patch, **{"Upload-Offset": "0"}))
        self.assertEqual(r.status, 204, r)
        admin = self.admin("n2")
        r = self.nodes["n2"].request("POST", "/api/v1/admin/cluster/stores/%d/move" % sid, {"to": to}, token=admin)
        self.assertEqual(r.status, 202, r)
        wait_for("the store is kept by %s" % to, lambda: self.placement("n1", sid)["owner"] == to, 60)
        r = self.nodes["n2"].request("PATCH", loc, body=body[400000:], token=tok,  # through another node
                                     headers=dict(patch, **{"Upload-Offset": "400000"}))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Upload-Offset"), str(len(body)))
        r = self.nodes["n3"].request("HEAD", loc, token=tok, headers=tus)
        self.assertEqual((r.status, r.header("Upload-Offset")), (200, str(len(body))))
        for n in self.NAMES:
            self.assertEqual(self.get(n, tok, sid, "in/moved.bin"), (200, body), n)
        self.assertIn("moved to another node", self.nodes["n1"].read_log())
        self.assertEqual(os.listdir(os.path.join(self.nodes["n1"].data, "uploads")), [])  # its part file went
        self.fsck_clean(to)

    def test_replica_and_etcd_down_together_the_store_waits_and_goes_on_once_etcd_is_back(self):
        tok, sid, p = self.user_on("n1", "bd")
        self.assertEqual(self.put("n1", tok, sid, "before.bin", b"b" * 7000), 201)
        self.etcd.stop()
        try:
            self.nodes[p["replica"]].kill()
            # nobody can confirm that the store goes on without its replica: the change is refused
            st = self.put("n1", tok, sid, "during.bin", b"d" * 7000)
            self.assertEqual(st, 503)
            self.assertEqual(self.put("n1", tok, sid, "during2.bin", b"e" * 7000), 503)  # and the next one
        finally:
            self.etcd.start()
        # etcd back: the owner drops the replica on its own and takes changes again
        wait_for("the store takes changes again", lambda: self.put("n1", tok, sid, "after.bin", b"a" * 7000) == 201,
                 TTL + 20)
        # the store went on without the killed replica at a later epoch, and says so. The drop is made
        # by the retry once etcd is back, or by a try whose swap etcd made as it started again while
        # its answer was lost; the retry then finds the record moved on (a fresh-clone CI met that)
        now = self.placement("n1", sid)
        self.assertEqual(now["owner"], "n1")
        self.assertGreater(now["epoch"], p["epoch"])
        self.assertNotEqual(now.get("replica"), p["replica"])
        self.assertRegex(self.nodes["n1"].read_log(),
                         r"store %d (goes on without its replica on node %s \(etcd confirmed it now\)"
                         r"|takes changes again: etcd's record of it is at epoch)" % (sid, p["replica"]))
        self.assertEqual(self.get("n1", tok, sid, "before.bin"), (200, b"b" * 7000))
        self.assertEqual(self.get("n1", tok, sid, "after.bin"), (200, b"a" * 7000))

    def test_the_replication_port_takes_nothing_a_client_could_send(self):
        tok, sid, p = self.user_on("n1", "rp")
        node = next(x for x in self.view("n1")["nodes"] if x["name"] == p["replica"])
        base = "http://127.0.0.1:%d" % node["replication"]

        def send(method, path, body, headers):
            req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())
        frame = b"\0" * 36  # store 0, epoch 0, no changes
        st, b = send("POST", "/api/v1/internal/cluster/replicate", frame, {})
        self.assertEqual((st, b["title"]), (401, "Unauthorized"))
        forged = {"X-MByte-Replication": "n1.%d.%s" % (int(time.time()), "ab" * 32)}
        st, b = send("POST", "/api/v1/internal/cluster/replicate", frame, forged)
        self.assertEqual(st, 401)
        self.assertIn("needs valid X-MByte-Replication and X-MByte-Replication-Head headers", b["detail"])
        # refused at the headers: the body that follows is read and dropped, never held
        st, b = send("POST", "/api/v1/internal/cluster/replicate", b"x" * (8 << 20), forged)
        self.assertEqual(st, 401)
        st, b = send("PUT", "/api/v1/internal/cluster/chunks/" + "0" * 64, b"x", forged)
        self.assertEqual(st, 401)
        self.assertEqual(send("GET", "/", None, forged)[0], 404)
        # nor is it on the nodes' HTTP port
        self.assertEqual(self.nodes[p["replica"]].request("POST", "/api/v1/internal/cluster/replicate", body=frame,
                                                          headers=OCTET).status, 404)
        # and what was sent changed nothing: the store still takes writes on its owner
        self.assertEqual(self.put("n1", tok, sid, "ok.bin", b"fine"), 201)

    def test_replica_killed_the_owner_goes_on_alone_then_fills_a_new_replica_that_holds_every_write(self):
        tok, sid, p = self.user_on("n1", "rk")
        replica = p["replica"]
        other = next(n for n in self.NAMES if n not in ("n1", replica))
        files = {"a.bin": b"a" * 300000, "b.bin": b"b" * 5000, "c.bin": os.urandom(2 * 1024 * 1024 + 5)}
        self.assertEqual(self.put("n1", tok, sid, "a.bin", files["a.bin"]), 201)
        # etcd stopped: the owner hands changes to the replica without it
        self.etcd.stop()
        try:
            self.assertEqual(self.put("n1", tok, sid, "b.bin", files["b.bin"]), 201)
        finally:
            self.etcd.start()
        self.nodes[replica].kill()
        self.assertEqual(self.put("n1", tok, sid, "c.bin", files["c.bin"]), 201)  # the replica dropped, not waited for
        self.assertIn("goes on without its replica on node %s" % replica, self.nodes["n1"].read_log())
        # a writer goes on while the owner gives the store a new replica (the third node) and fills it
        stop, acked, failed = threading.Event(), {}, []

        def writer():
            k = 0
            while not stop.is_set():
                name, data = "w%d.bin" % k, os.urandom(500 + 37 * k)
                st = self.put("n1", tok, sid, name, data)
                (acked.__setitem__(name, data) if st == 201 else failed.append((name, st)))
                k += 1
        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_for("a new replica, filled", lambda: (lambda q: q["replica"] == other and not q["filling"] and q)(
                self.placement("n1", sid)), 40)
            time.sleep(1)
        finally:
            stop.set()
            t.join()
        self.assertEqual(failed, [])
        self.assertGreater(len(acked), 3)
        self.assertIn("has a replica on node %s again" % other, self.nodes["n1"].read_log())
        files.update(acked)
        # the owner killed: the filled replica takes over and serves every acknowledged write
        self.nodes["n1"].kill()
        wait_for("the new replica takes over", lambda: self.placement(other, sid)["owner"] == other, TTL + 15)
        for name, data in files.items():
            self.assertEqual(self.get(other, tok, sid, name), (200, data), name)
        self.fsck_clean(other)

    def test_a_replica_that_stops_answering_holds_back_only_the_changes_of_the_stores_it_replicates(self):
        """Each replica node has its own sender on the owner: with one replica paused (SIGSTOP) and a
        change of its store waiting for it, a change of a store replicated on the other node is
        acknowledged at once. With one sender for every node it waited behind the first, up to the
        30 s after which the owner drops the paused replica."""
        tok_x, x, p = self.user_on("n1", "hb1")
        slow = p["replica"]
        other = next(n for n in self.NAMES if n not in ("n1", slow))
        # a store n1 keeps with its replica on the other node: made there, then moved to n1 (whose
        # keeper before becomes its replica)
        tok_y, y, _ = self.user_on(other, "hb2")
        r = self.nodes["n1"].request("POST", "/api/v1/admin/cluster/stores/%d/move" % y, {"to": "n1"},
                                     token=self.admin("n1"))
        self.assertEqual(r.status, 202, r)
        wait_for("store %d kept by n1, replicated on %s" % (y, other), lambda: (lambda q: q and q["owner"] == "n1" and (
            q["replica"] == other) and not q["filling"])(self.placement("n1", y)), 60)
        wait_for("store %d's replica on %s filled" % (x, slow), lambda: (lambda q: q and q["replica"] == slow and (
            not q["filling"]))(self.placement("n1", x)), 60)  # a fill the pause stopped would drop it
        self.nodes[slow].proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: self.nodes[slow].proc and self.nodes[slow].proc.send_signal(signal.SIGCONT))
        got = {}
        held = threading.Thread(target=lambda: got.setdefault("x", self.put("n1", tok_x, x, "held.txt", b"held\n")))
        held.start()
        time.sleep(2)  # a few bytes: committed on n1 and queued for the paused replica long before
        self.assertTrue(held.is_alive(), "the change was acknowledged without the paused replica")
        self.assertEqual(self.put("n1", tok_y, y, "quick.txt", b"quick\n"), 201)
        self.assertTrue(held.is_alive(), "the other store's change waited for the paused replica")
        self.nodes[slow].proc.send_signal(signal.SIGCONT)
        held.join(60)
        self.assertEqual(got.get("x"), 201)
        for n in self.NAMES:
            self.assertEqual(self.get(n, tok_x, x, "held.txt"), (200, b"held\n"), n)
            self.assertEqual(self.get(n, tok_y, y, "quick.txt"), (200, b"quick\n"), n)

    def test_an_owner_paused_past_its_lease_cannot_acknowledge_a_write_once_its_replica_took_over(self):
        tok, sid, p = self.user_on("n1", "so")
        replica = p["replica"]
        self.assertEqual(self.put("n1", tok, sid, "before.bin", b"x" * 4000), 201)
        self.nodes["n1"].proc.send_signal(signal.SIGSTOP)
        try:
            wait_for("the replica takes the store over", lambda: self.placement(replica, sid)["owner"] == replica,
                     TTL + 15)
            results = {}

            def put(k):  # sent to the paused owner: it answers once resumed, before it hears of the takeover
                results[k] = self.put("n1", tok, sid, "stale%d.bin" % k, b"s%d" % k * 1000)
            ts = [threading.Thread(target=put, args=(k,)) for k in range(4)]
            for t in ts:
                t.start()
            time.sleep(1)
        finally:
            self.nodes["n1"].proc.send_signal(signal.SIGCONT)
        for t in ts:
            t.join()
        # whatever the stale owner answered, a success is on the store's owner now; a refusal is a 503
        for k, st in results.items():
            self.assertIn(st, (201, 503), results)
            got = self.get(replica, tok, sid, "stale%d.bin" % k)
            if st == 201:
                self.assertEqual(got, (200, b"s%d" % k * 1000), k)
        self.assertEqual(self.get(replica, tok, sid, "before.bin"), (200, b"x" * 4000))
        # and n1 forwards to the new owner from then on
        wait_for("n1 knows the new owner", lambda: self.placement("n1", sid)["owner"] == replica, 10)
        self.assertEqual(self.put("n1", tok, sid, "after.bin", b"after"), 201)
        self.assertEqual(self.get(replica, tok, sid, "after.bin"), (200, b"after"))



class CrossForwarding(EtcdAndNodes):
    """Two nodes with one HTTP worker thread each (http_threads: 1), each forwarding uploads to the
    other at the same moment. A worker that waited for the other node's answer could not serve the
    request that node forwarded here meanwhile: each would wait for the other until a timeout (the
    owner-kill failover test met it with 16 workers, on a kept-alive connection of a busy one)."""

    NAMES = ("n1", "n2")

    @classmethod
    def start_cluster(cls):
        cls.start_joined(names=cls.NAMES, conf={"http_threads": "1"})

    def users_kept_by_each(self, prefix):
        """{node: (token, sid)}: a user whose Home that node keeps, known to every node."""
        users = {}
        for n in self.NAMES:
            tok = self.nodes[n].add_user(prefix + n, "%s%s-password" % (prefix, n))
            users[n] = (tok, home(self.nodes[n], tok))
        for n in self.NAMES:
            for m in self.NAMES:
                wait_for("%s%s's store known on %s" % (prefix, n, m), lambda: self.nodes[m].request(
                    "GET", "/api/v1/stores/%d/files/" % users[n][1], token=users[n][0]).status == 200, 15)
        return users

    def uploads_at_once(self, users, send, jobs):
        """send(via, token, sid, name, data) -> status, run at once for each (via, owner, name, data)
        of jobs, through the node that does not keep the store; then every 2xx reads back byte-identical
        through both nodes."""
        results, lock = {}, threading.Lock()

        def one(via, owner, name, data):
            tok, sid = users[owner]
            try:
                st = send(via, tok, sid, name, data)
            except Exception as e:  # a timeout: the two workers waited for each other
                st = repr(e)
            with lock:
                results[(owner, name)] = (st, data)

        ts = [threading.Thread(target=one, args=j) for j in jobs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual({k: v[0] for k, v in results.items()}, {k: 201 for k in results})
        for (owner, name), (_, data) in results.items():
            for n in self.NAMES:
                r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/%s" % (users[owner][1], name),
                                          token=users[owner][0])
                self.assertEqual((r.status, r.body), (200, data), (n, owner, name))

    def test_uploads_forwarded_both_ways_at_once_through_single_workers_all_succeed(self):
        users = self.users_kept_by_each("x")

        def put(via, tok, sid, name, data):
            return self.nodes[via].request("PUT", "/api/v1/stores/%d/files/%s" % (sid, name), body=data, token=tok,
                                           headers=OCTET, timeout=20).status

        for rnd in range(6):
            size = 3 * 1024 * 1024 if rnd == 5 else 20000 + rnd  # the last over the 1 MiB buffer: suspended mid-body
            self.uploads_at_once(users, put, [(via, owner, "k%d.bin" % (rnd * 2 + j), os.urandom(size + j))
                                              for via, owner in (("n1", "n2"), ("n2", "n1")) for j in range(2)])

    def test_chunked_uploads_held_up_by_a_paused_keeper_read_back_and_nodes_stop_cleanly(self):
        """Bodies of unknown length in 2 KiB chunks, 6 MiB, through n1 to a store n2 keeps; n2 is paused
        (SIGSTOP) for 2 s once 1 MiB was sent, so n1's 1 MiB buffer fills, the connection is suspended
        and the client's chunks pile up in the socket. Once n2 goes on and the connection is resumed,
        libmicrohttpd hands several chunks to the handler in one go even after it suspended again: a
        second suspend broke libmicrohttpd's list of suspended connections, and the node aborted at
        stop ("MHD_stop_daemon() called while we have suspended connections"), which tearDownClass's
        exit-status check catches."""
        users = self.users_kept_by_each("c")
        keeper = self.nodes["n2"].proc.pid
        paused = threading.Event()

        def pieces(data):
            for i in range(0, len(data), 2048):
                if i == 1024 * 1024 and not paused.is_set():
                    paused.set()
                    os.kill(keeper, signal.SIGSTOP)
                    threading.Timer(2.0, os.kill, (keeper, signal.SIGCONT)).start()
                yield data[i:i + 2048]

        def put(via, tok, sid, name, data):
            return put_chunked(self.nodes[via], tok, sid, name, pieces(data))[0]

        try:
            self.uploads_at_once(users, put, [("n1", "n2", "c%d.bin" % k, os.urandom(6 * 1024 * 1024 + k))
                                              for k in range(2)])
        finally:
            time.sleep(2.5)
            os.kill(keeper, signal.SIGCONT)
        self.assertTrue(paused.is_set())


class Rebalance(EtcdAndNodes):
    """cluster.rebalance (on by default): two nodes keep the stores; a third joins and takes stores
    from the node that keeps the most until no two nodes differ by more than one, while the stores
    are read through every node."""

    @classmethod
    def start_cluster(cls):
        cls.start_joined({"taskmgr": True, "multistore": True}, names=("n1", "n2"), rebalance=True)

    def token(self, n, user, pw):
        r = self.nodes[n].request("POST", "/api/v1/auth/login", {"username": user, "password": pw})
        assert r.status == 200, r
        return r.json()["token"]

    def kept(self, n):
        """Node -> how many stores it keeps, as node n sees the placements."""
        stores = self.nodes[n].request("GET", "/api/v1/admin/cluster", token=self.token(n, "admin", ADMIN_PASSWORD)).json()["stores"]
        count = {}
        for st in stores:
            count[st["owner"]] = count.get(st["owner"], 0) + 1
        return count, {st["id"]: st["owner"] for st in stores}

    def test_a_node_that_joins_takes_stores_until_the_nodes_keep_about_as_many(self):
        tok = self.nodes["n1"].add_user("rita", "rita-password")
        wait_for("rita logs in on n2", lambda: self.nodes["n2"].request(
            "POST", "/api/v1/auth/login", {"username": "rita", "password": "rita-password"}).status == 200, 10)
        sids = [home(self.nodes["n1"], tok)] + [create_store(self, self.nodes["n2"], tok, "S%d" % i) for i in range(3)]
        data = {sid: os.urandom(200000 + sid) for sid in sids}
        for sid in sids:
            r = self.nodes["n1"].request("PUT", "/api/v1/stores/%d/files/f.bin" % sid, body=data[sid], token=tok,
                                         headers=OCTET)
            self.assertEqual(r.status, 201, r)
        before, where = self.kept("n1")
        self.assertEqual(before, {"n1": 2, "n2": 3}, before)  # the admin's Home and rita's; her three others
        failures, stop = [], threading.Event()
        names = ["n1", "n2"]

        def reader():
            while not stop.is_set():
                for n in list(names):
                    for sid in sids:
                        r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/f.bin" % sid, token=tok, timeout=60)
                        if (r.status, r.body) != (200, data[sid]):
                            failures.append((n, sid, r.status))
        t = threading.Thread(target=reader)
        t.start()
        try:
            late = Server(conf=cluster_conf(self.etcd.url, "n3", rebalance=True),
                          env={"MBYTE_ADMIN_PASSWORD": self.OTHER_PW}, modules={"taskmgr": True, "multistore": True})
            self.nodes["n3"] = late
            late.start()
            names.append("n3")
            wait_for("n3 keeps a store", lambda: self.kept("n1")[0].get("n3", 0) >= 1, 60)
            time.sleep(12)  # a second move would come after 10 s: none must (2, 2, 1 is balanced)
        finally:
            stop.set()
            t.join()
        after, now = self.kept("n3")
        self.assertEqual(sorted(after.values()), [1, 2, 2], after)
        moved = [sid for sid in now if where.get(sid) != now[sid]]
        self.assertEqual(len(moved), 1, (where, now))
        self.assertEqual(failures, [])
        for sid in sids:  # every store's file, through every node, from wherever it is now
            for n in ("n1", "n2", "n3"):
                r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/f.bin" % sid, token=tok)
                self.assertEqual((r.status, r.body), (200, data[sid]), (n, sid))
        log = self.nodes[where[moved[0]]].read_log()
        self.assertRegex(log, r"rebalancing: store %d \(\d+ bytes\) moves to node n3" % moved[0])

class RebalanceBytes(EtcdAndNodes):
    """Rebalancing weighs a node's load by the bytes of the stores it keeps besides their number
    (cluster.store_weight_mb each, 1 MiB here): two nodes keep three stores each, one of them with a
    6 MiB file; the node that keeps it hands its two empty stores to the other one, one at a time,
    and not the big one (that would not even them), though the counts were equal and end 1 to 5."""

    @classmethod
    def start_cluster(cls):
        cls.start_joined({"taskmgr": True, "multistore": True}, names=("n1", "n2"), rebalance=True,
                         cluster_more="store_weight_mb: 1")

    def placements(self, n):
        admin = self.nodes[n].request("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        view = self.nodes[n].request("GET", "/api/v1/admin/cluster", token=admin.json()["token"]).json()
        return {st["id"]: st["owner"] for st in view["stores"]}, {x["name"]: x.get("kept") for x in view["nodes"]}

    def test_the_node_with_the_most_bytes_hands_over_stores_that_even_the_load(self):
        admin = self.nodes["n1"].login()
        tok = self.nodes["n2"].add_user("bea", "bea-password", admin_token=admin)
        wait_for("bea logs in on n1", lambda: self.nodes["n1"].request(
            "POST", "/api/v1/auth/login", {"username": "bea", "password": "bea-password"}).status == 200, 10)
        # made in turns so that the counts never differ by two (no move before the big file)
        big = create_store(self, self.nodes["n1"], tok, "Big")
        s0 = create_store(self, self.nodes["n2"], tok, "S0")
        x = create_store(self, self.nodes["n1"], tok, "X")
        s1 = create_store(self, self.nodes["n2"], tok, "S1")
        where, _ = self.placements("n1")
        self.assertEqual(sorted(where.values()), ["n1"] * 3 + ["n2"] * 3, where)
        n1_small = sorted(sid for sid, n in where.items() if n == "n1" and sid != big)
        data = os.urandom(6 << 20)
        r = self.nodes["n1"].request("PUT", "/api/v1/stores/%d/files/big.bin" % big, body=data, token=tok,
                                     headers=OCTET)
        self.assertEqual(r.status, 201, r)
        small = {sid: os.urandom(1000 + sid) for sid in (s0, x, s1)}
        for sid, body in small.items():
            r = self.nodes[where[sid]].request("PUT", "/api/v1/stores/%d/files/s.bin" % sid, body=body, token=tok,
                                               headers=OCTET)
            self.assertEqual(r.status, 201, r)
        wait_for("n1's two small stores are on n2", lambda: all(
            self.placements("n1")[0][sid] == "n2" for sid in n1_small), 90)
        time.sleep(15)  # a third move would come by now: none must (n1 would then be the lighter)
        now, kept = self.placements("n2")
        self.assertEqual(now[big], "n1", now)
        self.assertEqual(sorted(now.values()), ["n1"] + ["n2"] * 5, now)
        self.assertGreaterEqual(kept["n1"], 6 << 20, kept)  # the nodes publish what they keep
        self.assertLess(kept["n2"], 1 << 20, kept)
        log = self.nodes["n1"].read_log()
        for sid in n1_small:
            self.assertRegex(log, r"rebalancing: store %d \(\d+ bytes\) moves to node n2" % sid)
        for n in ("n1", "n2"):  # every file through both nodes, from wherever its store is now
            r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/big.bin" % big, token=tok)
            self.assertEqual((r.status, r.body == data), (200, True), n)
            for sid, body in small.items():
                r = self.nodes[n].request("GET", "/api/v1/stores/%d/files/s.bin" % sid, token=tok)
                self.assertEqual((r.status, r.body), (200, body), (n, sid))


if __name__ == "__main__":
    main()

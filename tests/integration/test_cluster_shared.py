#!/usr/bin/env python3
"""What the nodes share beyond a store's files (issue 23, docs/cluster.md): three real mbyted in one
cluster (a real etcd), each with the same bucket of one real s3rver declared as backend "s3a", the
collector's grace at 0, and the WebDAV and tags modules on.
- Chunks on a shared backend ("Chunks on a shared backend"): a node knows only its own references,
  so a chunk one node gave up may still be another node's; only the leader, after asking every node,
  deletes it.
- Modules' records of a store ("Modules' records of a store"): a file's tags and WebDAV dead
  properties are replicated with the store, so they survive its keeper's death; the search module,
  whose index is not replicated, indexes a store its node took over.
What is checked is what a user sees: files, tags and properties read back through every node, the
bucket's objects, and fsck on every node."""
import base64
import hashlib
import hmac
import os
import shutil
import signal
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import ADMIN_PASSWORD, Server, main, missing_prerequisite  # noqa: E402
from storeutil import fsck, home, wait_task  # noqa: E402
from test_cluster import EtcdAndNodes, Etcd, cluster_conf, wait_for  # noqa: E402
from test_extstore import BUCKET, MODULES, S3RVER_INSTALLED, S3rver, make_store, s3_conf  # noqa: E402

OCTET = {"Content-Type": "application/octet-stream"}
PROPPATCH = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:mbyte-test"><D:set><D:prop><Z:colour>teal, kept</Z:colour>
</D:prop></D:set></D:propertyupdate>"""
LOCK = (b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tia-laptop</D:owner></D:lockinfo>')
PROPFIND = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:Z="urn:mbyte-test"><D:prop><Z:colour/></D:prop></D:propfind>"""


def two_backends(conf):
    """The s3 module's settings with a second backend, "s3b": the same bucket under the prefix "d/"."""
    head, rest = conf.split("  s3a:\n", 1)
    block, tail = rest.split("retries:", 1)
    assert 'prefix: "c/"' in block
    return head + "  s3a:\n" + block + "  s3b:\n" + block.replace('prefix: "c/"', 'prefix: "d/"') + "retries:" + tail


class SharedBucket(EtcdAndNodes):
    """One s3rver bucket declared on all three nodes for the class."""

    @classmethod
    def start_cluster(cls):
        if not os.path.exists(S3RVER_INSTALLED) or not shutil.which("node"):
            return  # setUp says why
        cls.s3 = S3rver(None).start()
        cls.etcd = Etcd().start()
        for n in cls.NAMES:
            env = {"MBYTE_GC_GRACE": "0", "MBYTE_GC_INTERVAL": "1"}
            if n != "n1":
                env["MBYTE_ADMIN_PASSWORD"] = cls.OTHER_PW
            cls.nodes[n] = Server(conf=cluster_conf(cls.etcd.url, n), env=env,
                                  modules=dict(MODULES, webdav=True, tags=True, search=True),
                                  module_conf={"s3": two_backends(s3_conf(cls.s3))})
            cls.nodes[n].start()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "s3", None):
                cls.s3.cleanup()

    def setUp(self):
        if not getattr(self, "s3", None):
            missing_prerequisite(self, "s3rver is not installed (tests/setup/s3.sh)")
        super().setUp()
        wait_for("three nodes up in n1's view", lambda: len(self.view("n1")["nodes"]) == 3, 30)

    tokens = {}

    def token(self, n, user="admin", password=ADMIN_PASSWORD):
        key = (n, user)
        if key not in self.tokens:
            self.tokens[key] = wait_for("%s logs in on %s" % (user, n), lambda: self.nodes[n].login(user, password), 15)
        return self.tokens[key]

    def view(self, n):
        r = self.nodes[n].request("GET", "/api/v1/admin/cluster", token=self.token(n))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def collector(self, away=None):
        """The leader's collector as the leader shows it (asked through a node other than `away`)."""
        ask = next(n for n in self.NAMES if n != away)
        leader = self.view(ask)["leader"]
        return self.view(leader)["collector"] if leader and leader != away else None

    def objects(self, prefix="c/"):
        """The chunks in the bucket under prefix: "c/" is backend s3a, "d/" s3b."""
        return {o[2:] for o in self.s3.objects() if o.startswith(prefix)}

    def url(self, sid, name):
        return "/api/v1/stores/%d/files/%s" % (sid, name)

    def user(self, name):
        """A user made on n1: their token on every node."""
        r = self.nodes["n1"].request("POST", "/api/v1/admin/users", {"username": name, "password": name + "-password-1",
                                                                      "role": "user"}, token=self.token("n1"))
        self.assertEqual(r.status, 201, r)
        return {n: self.token(n, name, name + "-password-1") for n in self.NAMES}

    def placed(self, sid):
        """Store sid's placement once it is replicated: {"owner", "replica", ...}."""
        def filled():
            p = next((st for st in self.view("n1")["stores"] if st["id"] == sid), None)
            return p and p["replica"] and not p["filling"] and p
        return wait_for("store %d kept and replicated" % sid, filled, 60)

    def kept_by_n1_with_dav(self, name):
        """A user made on n1, their Home store (kept by n1), its replica, and the Basic credentials of an
        app password of theirs: (tokens, store id, replica, headers)."""
        tok = self.user(name)
        sid = home(self.nodes["n1"], tok["n1"])
        (replica,) = self.kept_by(sid) - {"n1"}
        r = self.nodes["n1"].request("POST", "/api/v1/account/app-passwords", {"name": "laptop"}, token=tok["n1"])
        self.assertEqual(r.status, 201, r)
        dav = {"Authorization": "Basic " + base64.b64encode((name + ":" + r.json()["password"]).encode()).decode()}
        return tok, sid, replica, dav

    def kept_by(self, sid):
        """The nodes holding store sid (its keeper and its replica, once filled)."""
        p = self.placed(sid)
        return {p["owner"], p["replica"]}

    def stores_apart(self, tok, prefix):
        """Two stores on the bucket, one made through each of two nodes, such that a node holds the
        first and not the second: a file in both, deleted from the first, leaves that node with no
        reference to its chunks while the second's nodes still need them. (first, second, the node)"""
        sids = {n: make_store(self, self.nodes[n], tok[n], "%s-%s" % (prefix, n), {"backend": "s3a"}) for n in self.NAMES}
        sets = {n: self.kept_by(sid) for n, sid in sids.items()}
        for a in self.NAMES:  # each store is on its keeper, so no two-node set holds all three: a pair differs
            for b in self.NAMES:
                if a != b and sets[a] - sets[b]:
                    return (a, sids[a]), (b, sids[b]), sorted(sets[a] - sets[b])[0]
        raise AssertionError("three stores on the same two nodes: %r" % sets)

    def migrated(self, n, sid, backend):
        """Store sid's placement changed to backend through node n (an admin's PATCH): its migration
        task, done."""
        r = self.nodes[n].request("PATCH", "/api/v1/stores/%d/config" % sid, {"placement": {"backend": backend}},
                                  token=self.token(n))
        self.assertEqual(r.status, 202, r)
        task = wait_task(self, self.nodes[n], r.json()["task"], self.token(n), timeout=120)
        self.assertEqual(task["state"], "done", task)
        return task

    def reads_back(self, tok, sid, name, data):
        for n in self.NAMES:
            r = self.nodes[n].request("GET", self.url(sid, name), token=tok[n])
            self.assertEqual((r.status, r.body == data), (200, True), (n, name, r.status, r.body[:200]))

    def test_a_chunk_one_node_gave_up_stays_while_another_needs_it_and_goes_once_none_does(self):
        tok = self.user("sam")
        (na, a), (nb, b), _ = self.stores_apart(tok, "Cloud")
        y, z, x = os.urandom(700 * 1024 + 11), os.urandom(900 * 1024 + 7), os.urandom(3 * 1024 * 1024 + 5)
        for n, sid, name, data in ((na, a, "y.bin", y), (nb, b, "z.bin", z)):
            r = self.nodes[n].request("PUT", self.url(sid, name), body=data, token=tok[n], headers=OCTET)
            self.assertEqual(r.status, 201, r)
        before = self.objects()
        # The same bytes in both stores, each written by its own keeper: one set of objects in the bucket.
        for n, sid in ((na, a), (nb, b)):
            r = self.nodes[n].request("PUT", self.url(sid, "x.bin"), body=x, token=tok[n], headers=OCTET)
            self.assertEqual(r.status, 201, r)
        xs = self.objects() - before
        self.assertGreaterEqual(len(xs), 2, "x.bin is several chunks in the bucket")

        # A node of store A gives x.bin up; store B's nodes still need every chunk of it.
        start = self.collector()
        self.assertEqual(self.nodes[na].request("DELETE", self.url(a, "x.bin"), token=tok[na]).status, 204)
        try:
            wait_for("a round of the leader's collector that kept x.bin's chunks", lambda: (
                lambda c: c and c["rounds"] > start["rounds"] and c["kept"] - start["kept"] >= len(xs))(self.collector()), 60)
        except AssertionError as e:
            raise AssertionError("%s; the leader's collector: %r, at first %r" % (e, self.collector(), start))
        self.assertEqual(self.objects() & xs, xs, "an object of x.bin went while store B still names it")
        self.reads_back(tok, b, "x.bin", x)

        # Store B gives it up too: the leader deletes x.bin's objects, and nothing else.
        self.assertEqual(self.nodes[nb].request("DELETE", self.url(b, "x.bin"), token=tok[nb]).status, 204)
        wait_for("x.bin's objects gone from the bucket", lambda: not (self.objects() & xs), 60)
        self.assertEqual(self.objects() & before, before)
        self.reads_back(tok, a, "y.bin", y)
        self.reads_back(tok, b, "z.bin", z)

        # An object no node ever committed (an upload cut before its commit): the leader's listing finds it.
        top = os.path.join(self.s3.dir, BUCKET, "c")
        src = next(iter(before))
        ghost = os.urandom(32).hex()
        for suffix in ("._S3rver_object", "._S3rver_metadata.json", "._S3rver_object.md5"):
            if os.path.exists(os.path.join(top, src + suffix)):
                shutil.copy(os.path.join(top, src + suffix), os.path.join(top, ghost + suffix))
        self.assertIn(ghost, self.objects())
        wait_for("the object nobody committed gone", lambda: ghost not in self.objects(), 60)
        self.assertEqual(self.objects() & before, before)
        for n in self.NAMES:
            report = fsck(self.nodes[n], self.token(n))
            self.assertEqual(report["problems"], [], (n, report))

    def test_a_store_migrated_off_the_bucket_leaves_the_chunks_another_nodes_store_needs(self):
        """A migration (docs/storage.md "Live migration") deletes the store's old copies; on a backend
        the nodes share, one object is the chunk of every store that wrote it, and the store's keeper
        knows only its own references: a store kept on two other nodes still needs x.bin's objects."""
        tok = self.user("lee")
        sids = {n: make_store(self, self.nodes[n], tok[n], "Move-%s" % n, {"backend": "s3a"}) for n in self.NAMES}
        places = {n: self.placed(sid) for n, sid in sids.items()}
        # A's keeper holds neither B's records nor a replica of them (each of three stores misses one node)
        a, b = next((a, b) for a in self.NAMES for b in self.NAMES
                    if a != b and places[a]["owner"] not in (places[b]["owner"], places[b]["replica"]))
        a_sid, b_sid, keeper = sids[a], sids[b], places[a]["owner"]
        x, y = os.urandom(3 * 1024 * 1024 + 5), os.urandom(2 * 1024 * 1024 + 9)
        before = self.objects()
        r = self.nodes[keeper].request("PUT", self.url(a_sid, "y.bin"), body=y, token=tok[keeper], headers=OCTET)
        self.assertEqual(r.status, 201, r)
        ys = self.objects() - before
        for sid in (a_sid, b_sid):
            r = self.nodes[a].request("PUT", self.url(sid, "x.bin"), body=x, token=tok[a], headers=OCTET)
            self.assertEqual(r.status, 201, r)
        xs = self.objects() - before - ys
        self.assertGreaterEqual(len(xs), 2, "x.bin is several chunks in the bucket")
        self.assertGreaterEqual(len(ys), 1)

        res = self.migrated(b, a_sid, "s3b")["result"]
        self.assertEqual((res["deleted"], res["kept"]), (len(ys), len(xs)), res)
        self.assertEqual(self.objects("d/") & (xs | ys), xs | ys, "store A's chunks are not all on s3b")
        self.assertEqual(self.objects() & xs, xs, "an object of x.bin went from s3a while store B still names it")
        self.assertEqual(self.objects() & ys, set(), "an old copy only store A named stayed on s3a")
        self.reads_back(tok, a_sid, "y.bin", y)
        self.reads_back(tok, a_sid, "x.bin", x)
        self.reads_back(tok, b_sid, "x.bin", x)
        for n in self.NAMES:
            report = fsck(self.nodes[n], self.token(n))
            self.assertEqual(report["problems"], [], (n, report))

    def test_a_store_migrated_from_the_bucket_to_its_keepers_disk_survives_its_keepers_death(self):
        """On the bucket the replica read the store's chunks from there; once on the keeper's disk the
        migration puts each on the replica's disk too, before the bucket's copy goes."""
        tok = self.user("ola")
        sid = make_store(self, self.nodes["n2"], tok["n2"], "Disk", {"backend": "s3a"})
        p = self.placed(sid)
        keeper, replica = p["owner"], p["replica"]
        z = os.urandom(3 * 1024 * 1024 + 1)
        before = self.objects()
        r = self.nodes[keeper].request("PUT", self.url(sid, "z.bin"), body=z, token=tok[keeper], headers=OCTET)
        self.assertEqual(r.status, 201, r)
        zs = self.objects() - before
        self.assertGreaterEqual(len(zs), 2)
        task = self.migrated(keeper, sid, "local")
        self.assertEqual(task["result"]["deleted"], len(zs), task)
        self.assertEqual(self.objects() & zs, set(), "the bucket's copies stayed")
        self.nodes[keeper].kill()  # SIGKILL: the replica takes the store over, from its own disk
        wait_for("store %d taken over by %s" % (sid, replica), lambda: next(
            (st for st in self.view(replica)["stores"] if st["id"] == sid and st["owner"] == replica), None), 30)
        for n in self.NAMES:
            if n != keeper:
                r = self.nodes[n].request("GET", self.url(sid, "z.bin"), token=tok[n])
                self.assertEqual((r.status, r.body == z), (200, True), (n, r.status, r.body[:300]))
                report = fsck(self.nodes[n], self.token(n))
                self.assertEqual(report["problems"], [], (n, report))

    def test_a_small_chunk_sent_ahead_of_changes_that_never_came_goes_with_the_collector(self):
        """A keeper sends its replica the chunks a change or a fill names before the records (PUT
        .../chunks/{sha256}, signed with the cluster's key). When the records never come (the keeper
        died, the fill was cut off), a small chunk, which lives in the node's database, is still the
        collector's: never an inline chunk without a record (fsck found one after a fill cut short)."""
        to = "n2"
        port = next(x for x in self.view(to)["nodes"] if x["name"] == to)["replication"]
        before = fsck(self.nodes[to], self.token(to))
        self.assertEqual(before["problems"], [], before)
        key = bytes.fromhex(self.etcd.get("/mbyte/kv/cs/key"))
        data = os.urandom(5000)
        path = "/api/v1/internal/cluster/chunks/" + hashlib.sha256(data).hexdigest()
        t = int(time.time())

        def mac(text):
            return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method="PUT", headers={
            "X-MByte-Replication": "n1.%d.%s" % (t, mac("n1.%d.PUT %s" % (t, path))),
            "X-MByte-Replication-Head": mac("n1.%d.PUT %s %d" % (t, path, len(data))), **OCTET})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 204)

        def collected():  # the grace is 0 here: the next round of the node's collector takes it
            report = fsck(self.nodes[to], self.token(to))
            self.assertEqual(report["problems"], [], report)
            return report["chunks_stored"] <= before["chunks_stored"]
        wait_for("the chunk nothing named gone from %s" % to, collected, 30)

    def test_a_chunk_is_kept_while_a_node_that_keeps_a_store_is_down(self):
        tok = self.user("kim")
        (nd, d), (nc, c), _ = self.stores_apart(tok, "Keep")
        w = os.urandom(2 * 1024 * 1024 + 3)
        before = self.objects()
        for n, sid in ((nc, c), (nd, d)):
            r = self.nodes[n].request("PUT", self.url(sid, "w.bin"), body=w, token=tok[n], headers=OCTET)
            self.assertEqual(r.status, 201, r)
        ws = self.objects() - before
        self.assertGreaterEqual(len(ws), 2)
        self.nodes[nc].proc.send_signal(signal.SIGSTOP)  # it keeps store C, and answers nobody
        self.addCleanup(lambda: self.nodes[nc].proc and self.nodes[nc].proc.send_signal(signal.SIGCONT))
        self.assertEqual(self.nodes[nd].request("DELETE", self.url(d, "w.bin"), token=tok[nd]).status, 204)
        wait_for("the leader's collector waiting for %s" % nc, lambda: nc in ((self.collector(nc) or {}).get("waits") or ""), 60)
        self.assertEqual(self.objects() & ws, ws, "an object went while the node that needs it was away")
        self.nodes[nc].proc.send_signal(signal.SIGCONT)
        wait_for("n3 back in the view", lambda: len(self.view("n1")["nodes"]) == 3, 30)
        for n in self.NAMES:  # store C's keeper may have changed meanwhile: each node learns of it
            wait_for("w.bin read back whole through %s" % n, lambda: (lambda r: r.status == 200 and r.body == w)(
                self.nodes[n].request("GET", self.url(c, "w.bin"), token=tok[n])), 30)

    def test_a_files_tags_dead_properties_and_webdav_lock_survive_the_death_of_its_stores_keeper(self):
        tok, sid, replica, dav = self.kept_by_n1_with_dav("tia")
        body = os.urandom(50000)
        r = self.nodes["n1"].request("PUT", self.url(sid, "docs/bill.pdf") + "?parents=true", body=body, token=tok["n1"],
                                     headers=OCTET)
        self.assertEqual(r.status, 201, r)
        r = self.nodes["n1"].request("POST", "/api/v1/stores/%d/tags/docs/bill.pdf" % sid,
                                     {"add": ["Invoice", {"name": "urgent", "color": "#f00"}]}, token=tok["n1"])
        self.assertEqual((r.status, r.json().get("tags")), (200, ["Invoice", "urgent"]), r)
        r = self.nodes["n1"].request("PROPPATCH", "/dav/%d/docs/bill.pdf" % sid, body=PROPPATCH,
                                     headers=dict(dav, **{"Content-Type": "application/xml"}))
        self.assertEqual(r.status, 207, r)
        self.assertIn(b"200 OK", r.body)
        r = self.nodes["n1"].request("PUT", "/dav/%d/docs/held.odt" % sid, body=b"v1", headers=dav)
        self.assertEqual(r.status, 201, r)
        r = self.nodes["n1"].request("LOCK", "/dav/%d/docs/held.odt" % sid, body=LOCK,
                                     headers=dict(dav, Timeout="Second-3600", Depth="0"))
        self.assertEqual(r.status, 200, r)
        self.held_lock = r.header("Lock-Token").strip("<>")

        self.nodes["n1"].kill()  # SIGKILL: the replica takes the store over (its live copy)
        self.survive(sid, replica, [n for n in self.NAMES if n != "n1"], tok, dav, body)
        # The new keeper gives the store a new replica, filled from a snapshot; then it dies too.
        (third,) = set(self.NAMES) - {"n1", replica}
        wait_for("store %d filled on %s" % (sid, third), lambda: (lambda p: p and p["replica"] == third and not p["filling"])(
            next((st for st in self.view(third)["stores"] if st["id"] == sid), None)), 60)
        self.nodes[replica].kill()
        self.survive(sid, third, [third], tok, dav, body)
        held = "/dav/%d/docs/held.odt" % sid
        auth = {"Authorization": dav["Authorization"]}
        r = self.nodes[third].request("PUT", held, body=b"v2", headers=dict(auth, If="(<%s>)" % self.held_lock))
        self.assertEqual(r.status, 204, r)
        r = self.nodes[third].request("UNLOCK", held, headers=dict(auth, **{"Lock-Token": "<%s>" % self.held_lock}))
        self.assertEqual(r.status, 204, r)
        r = self.nodes[third].request("PUT", held, body=b"v3", headers=auth)
        self.assertEqual(r.status, 204, r)

    def test_a_lock_binds_the_first_request_its_stores_new_keeper_serves(self):
        """The replica that takes a store over reads the store's WebDAV locks before it serves the
        store's first request (cluster_store_ready). Before, its placement thread told the modules at
        its next look, up to half a second later, and the first writes there went through the lock."""
        tok, sid, replica, dav = self.kept_by_n1_with_dav("lia")
        path = "/dav/%d/notes.odt" % sid
        self.assertEqual(self.nodes["n1"].request("PUT", path, body=b"v1", headers=dav).status, 201)
        r = self.nodes["n1"].request("LOCK", path, body=LOCK, headers=dict(dav, Timeout="Second-3600", Depth="0"))
        self.assertEqual(r.status, 200, r)
        token = r.header("Lock-Token").strip("<>")
        self.nodes["n1"].kill()  # SIGKILL: the replica takes the store over
        end, first = time.time() + 30, None
        while first is None:  # 503 while the keeper is away; the first answer after that is the new keeper's
            r = self.nodes[replica].request("PUT", path, body=b"clobber", headers=dav)
            if r.status != 503:
                first = r.status
            self.assertLess(time.time(), end, "no answer but 503 within 30 s")
            time.sleep(0.01)
        self.assertEqual(first, 423)
        r = self.nodes[replica].request("PUT", path, body=b"v2", headers=dict(dav, If="(<%s>)" % token))
        self.assertEqual(r.status, 204, r)

    def survive(self, sid, keeper, through, tok, dav, body):
        """Once `keeper` took store sid over: the file, its tags and its dead property through each node of `through`,
        and the new keeper's search index of the store (not replicated: it catches up on the store it now keeps)."""
        wait_for("store %d taken over by %s" % (sid, keeper), lambda: next(
            (st for st in self.view(keeper)["stores"] if st["id"] == sid and st["owner"] == keeper), None), 30)
        for n in through:  # a search of one store is answered from its keeper's index, through any node
            wait_for("bill.pdf found by searching through %s" % n, lambda: [h["path"] for h in self.nodes[n].request(
                "GET", "/api/v1/search?q=bill&store=%d" % sid, token=tok[n]).json().get("hits", [])] == ["docs/bill.pdf"], 30)
        for n in through:
            r = wait_for("the tags through %s" % n, lambda: (lambda x: x.status == 200 and x)(self.nodes[n].request(
                "GET", "/api/v1/stores/%d/tags/docs/bill.pdf" % sid, token=tok[n])), 30)
            self.assertEqual(r.json()["tags"], ["Invoice", "urgent"], (n, r.json()))
            r = self.nodes[n].request("GET", "/api/v1/stores/%d/tags" % sid, token=tok[n])
            self.assertEqual({t["name"]: t["color"] for t in r.json()}, {"Invoice": None, "urgent": "#f00"}, (n, r.json()))
            r = self.nodes[n].request("PROPFIND", "/dav/%d/docs/bill.pdf" % sid, body=PROPFIND,
                                      headers=dict(dav, Depth="0", **{"Content-Type": "application/xml"}))
            self.assertEqual(r.status, 207, (n, r))
            self.assertIn(b"teal, kept</", r.body, (n, r.body))
            r = self.nodes[n].request("GET", self.url(sid, "docs/bill.pdf"), token=tok[n])
            self.assertEqual((r.status, r.body == body), (200, True), n)
            # the WebDAV lock taken on the first keeper binds the new one (its records are the store's)
            auth = {"Authorization": dav["Authorization"]}
            r = self.nodes[n].request("PUT", "/dav/%d/docs/held.odt" % sid, body=b"clobber", headers=auth)
            self.assertEqual(r.status, 423, (n, r))
            r = self.nodes[n].request("PROPFIND", "/dav/%d/docs/held.odt" % sid, headers=dict(auth, Depth="0"))
            self.assertIn(self.held_lock.encode(), r.body, n)

    def test_a_search_of_every_store_through_any_node_finds_what_every_node_keeps(self):
        tok = self.user("una")
        (na, a), (nb, b), _ = self.stores_apart(tok, "Notes")
        for n, sid, name in ((na, a, "first.txt"), (nb, b, "second.txt"), (nb, b, "third.txt")):
            r = self.nodes[n].request("PUT", self.url(sid, name), body=b"the zebracorn crossed the bridge at %s" %
                                      name.encode(), token=tok[n], headers=OCTET)
            self.assertEqual(r.status, 201, r)
        want = {(a, "first.txt"), (b, "second.txt"), (b, "third.txt")}

        def found(n, **more):
            q = "&".join("%s=%s" % kv for kv in sorted(more.items()))
            r = self.nodes[n].request("GET", "/api/v1/search?q=zebracorn" + ("&" + q if q else ""), token=tok[n])
            self.assertEqual(r.status, 200, r)
            return r.json()
        for n in self.NAMES:  # each node keeps a part (or none); every node answers for all
            wait_for("every zebracorn through %s" % n, lambda: {(h["store"], h["path"]) for h in found(n)["hits"]} == want, 30)
            def paged():  # a page at a time: each hit once (a node slow to answer leaves a page short: again)
                pages, cursor = [], None
                while True:
                    page = found(n, limit=1, **({"cursor": cursor} if cursor else {}))
                    pages += [(h["store"], h["path"]) for h in page["hits"]]
                    cursor = page["next"]
                    if not cursor or len(pages) > 3:
                        return sorted(pages)
            wait_for("every zebracorn through %s a page at a time" % n, lambda: paged() == sorted(want), 60)
        r = self.nodes["n1"].request("GET", "/api/v1/search?q=zebracorn&cursor=c:n1%3Dx", token=tok["n1"])
        self.assertEqual(r.status, 400, r)


if __name__ == "__main__":
    main()

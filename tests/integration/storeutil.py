"""Helpers shared by the store tests (test_taskmgr, test_multistore, test_storeconfig,
test_quotas): create a store through taskmgr and wait for tasks."""
import time

FINAL = ("done", "failed", "cancelled")


def wait_task(t, srv, tid, token, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        r = srv.request("GET", "/api/v1/tasks/%d" % tid, token=token)
        t.assertEqual(r.status, 200, r)
        last = r.json()
        if last["state"] in FINAL:
            return last
        time.sleep(0.05)
    t.fail("task %d did not finish: %r" % (tid, last))


def create_store(t, srv, token, name):
    r = srv.request("POST", "/api/v1/stores", {"name": name}, token=token)
    t.assertEqual(r.status, 202, r)
    body = r.json()
    task = wait_task(t, srv, body["task"], token)
    t.assertEqual(task["state"], "done", task)
    return body["store"]


def put(srv, token, sid, path, data, headers=None):
    h = {"Content-Type": "application/octet-stream"}
    h.update(headers or {})
    return srv.request("PUT", "/api/v1/stores/%d/files/%s" % (sid, path), data, token=token, headers=h)


def put_chunked(srv, token, sid, path, pieces):
    """A PUT of unknown length (chunked). A server that refuses from the headers alone (a type rule)
    answers and closes before the body is sent, as HTTP allows: the client then stops sending, as
    curl does, and reads the answer that is already there."""
    c = srv.conn()
    try:
        c.putrequest("PUT", "/api/v1/stores/%d/files/%s" % (sid, path))
        c.putheader("Authorization", "Bearer " + token)
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        try:
            for p in pieces:
                c.send(b"%x\r\n%s\r\n" % (len(p), p))
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def stores(srv, token):
    r = srv.request("GET", "/api/v1/stores", token=token)
    assert r.status == 200, r
    return r.json()


def home(srv, token):
    return [s for s in stores(srv, token) if s["name"] == "Home"][0]["id"]


def usage(srv, token):
    r = srv.request("GET", "/api/v1/me/usage", token=token)
    assert r.status == 200, r
    return r.json()


def listing(srv, token, sid):
    r = srv.request("GET", "/api/v1/stores/%d/list?recursive=true" % sid, token=token)
    assert r.status == 200, r
    return r.json()["entries"]


def fsck(srv, admin):
    r = srv.request("POST", "/api/v1/admin/fsck", token=admin)
    assert r.status == 200, r
    return r.json()




def puts_cut_by(srv, token, sid, blobs, stored, crash, join_secs=120):
    """Every file of blobs ({name: bytes}) put into store sid at once, one thread each;
    crash() once stored() reaches 3. {name: status, or the error's repr}."""
    import threading
    results = {}

    def upload(name):
        try:
            results[name] = put(srv, token, sid, name, blobs[name]).status
        except OSError as e:
            results[name] = repr(e)

    threads = [threading.Thread(target=upload, args=(n,)) for n in blobs]
    for th in threads:
        th.start()
    deadline = time.time() + 60
    while stored() < 3 and time.time() < deadline:
        time.sleep(0.01)
    crash()
    for th in threads:
        th.join(join_secs)
    return results


def uploads_cut_by_a_crash(t, srv, admin, token, sid, stored, crash, restart, count=8, send_again=False):
    """`count` uploads of 6 MiB at once into store sid, whose backend's service crashes
    (crash()) once it holds 3 objects (stored() counts them); then restart() and check what a
    client was told: some upload failed, each failure a 500 or 503 with nothing of it visible,
    and every upload that got 201 reads back identical. Chunks a failed upload had put stay
    behind as orphans (the delete could not reach the dead service): fsck finds nothing else,
    and its repair (the collector) leaves none. With send_again, every failed upload is first
    sent again with the same bytes, as a client would, and must then read back identical: a
    chunk the crash left cut short under its own name must not pass for stored (a put asks
    the backend whether it has the chunk first). Returns the names acknowledged."""
    import os
    blobs = {"f%d.bin" % i: os.urandom(6 * 1024 * 1024 + i) for i in range(count)}
    results = puts_cut_by(srv, token, sid, blobs, stored, crash)
    acked = [n for n, st in results.items() if st == 201]
    failed = [n for n, st in results.items() if st != 201]
    t.assertEqual(len(results), count, results)
    t.assertTrue(failed, "no upload failed although the backend's service died: %r" % results)
    for n in failed:
        t.assertIn(results[n], (500, 503), results)
    restart()
    for n in acked:
        r = srv.request("GET", "/api/v1/stores/%d/files/%s" % (sid, n), token=token)
        t.assertEqual(r.status, 200, r)
        t.assertEqual(r.body, blobs[n], n)
    for n in failed:  # nothing of a failed upload is visible
        t.assertEqual(srv.request("GET", "/api/v1/stores/%d/files/%s" % (sid, n), token=token).status, 404)
    for n in failed if send_again else []:
        t.assertEqual(put(srv, token, sid, n, blobs[n]).status, 201, n)
        r = srv.request("GET", "/api/v1/stores/%d/files/%s" % (sid, n), token=token)
        t.assertEqual((r.status, r.body == blobs[n]), (200, True), n)
        acked.append(n)
    report = fsck(srv, admin)
    t.assertEqual({p["kind"] for p in report["problems"]} - {"orphan"}, set(), report)
    r = srv.request("POST", "/api/v1/admin/fsck?repair=1", token=admin)
    t.assertEqual(r.status, 200, r)
    t.assertEqual(fsck(srv, admin)["problems"], [])
    return acked


def mbyted_killed_during_uploads(t, srv, admin, token, sid, objects, count=8):
    """mbyted itself killed (SIGKILL) once the store's backend holds 3 objects from `count`
    uploads of 3 MiB at once (objects() lists what the backend holds), then started again.
    What a user sees: every acknowledged upload reads back identical, nothing of the others
    is visible; what the killed uploads had put is found by fsck as orphans (for stores whose
    objects no listing finds: encrypted ones and redundancy sets, through their put records)
    and removed by its repair; once every file is deleted, the collector leaves the backend
    empty."""
    import os
    blobs = {"f%d.bin" % i: os.urandom(3 * 1024 * 1024 + i) for i in range(count)}
    results = puts_cut_by(srv, token, sid, blobs, lambda: len(objects()), srv.kill)
    srv.start()
    acked = [n for n, st in results.items() if st == 201]
    t.assertLess(len(acked), count, "every upload finished before the kill: %r" % results)
    for n in blobs:
        r = srv.request("GET", "/api/v1/stores/%d/files/%s" % (sid, n), token=token)
        if n in acked:
            t.assertEqual((r.status, r.body == blobs[n]), (200, True), n)
        else:
            t.assertEqual(r.status, 404, n)
    report = fsck(srv, admin)
    kinds = [p["kind"] for p in report["problems"]]
    t.assertEqual(set(kinds), {"orphan"}, report)  # the killed uploads' objects, found
    r = srv.request("POST", "/api/v1/admin/fsck?repair=1", token=admin)
    t.assertEqual(r.status, 200, r)
    t.assertEqual(fsck(srv, admin)["problems"], [])
    for n in acked:
        r = srv.request("GET", "/api/v1/stores/%d/files/%s" % (sid, n), token=token)
        t.assertEqual((r.status, r.body == blobs[n]), (200, True), n)
        t.assertEqual(srv.request("DELETE", "/api/v1/stores/%d/files/%s" % (sid, n), token=token).status, 204)
    srv.request("POST", "/api/v1/admin/fsck?repair=1", token=admin)
    t.assertEqual(objects(), [], "objects left on the backend after every file was deleted and collected")

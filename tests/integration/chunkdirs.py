"""What test_davbackend and test_rclonebackend check alike: stores whose backend keeps chunks as
files <prefix><aa>/<sha256> (encrypted ones as e/<aa>/<hex>) in a directory the test can read
(the WebDAV server's, the rclone remote's)."""
import hashlib
import os
import time

from storeutil import fsck, put
from test_extstore import MARKER, local_chunk_files

SIZES = [50000, 1300000, 5 * 1024 * 1024 + 77]  # one chunk, one or two, several (> 4 MiB)


def master_key_conf(work):
    """mbyte.yaml's master_key as a file: reference to a fresh key file in work (encrypting
    stores need one)."""
    keyfile = os.path.join(work, "master.key")
    with open(keyfile, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(keyfile, 0o600)
    return {"master_key": "file:" + keyfile}


def objects(top):
    """{path under top: bytes} of every chunk object there (64-character names)."""
    out = {}
    for root, _, files in os.walk(top):
        for f in files:
            if len(f) == 64:
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, top)] = fh.read()
    return out


def upload_several(t, sid):
    """Files of SIZES, random bytes, into store sid of t.srv as t.user: {name: bytes}."""
    files = {}
    for i, n in enumerate(SIZES):
        data = os.urandom(n)
        files["f%d.bin" % i] = data
        t.assertEqual(put(t.srv, t.user, sid, "f%d.bin" % i, data).status, 201)
    return files


def reads_back_and_is_collected(t, sid, top):
    """Files uploaded into store sid read back whole and by ranges; the objects under top are
    <aa>/<sha256>, each the chunk its name says, none on the local disk; once the files are
    deleted, the collector (fsck's repair) leaves no object."""
    files = upload_several(t, sid)
    for name, data in files.items():
        r = t.srv.request("GET", t.file_url(sid, name), token=t.user)
        t.assertEqual((r.status, r.body), (200, data), name)
        lo, hi = len(data) // 3, len(data) // 3 + len(data) // 2
        r = t.srv.request("GET", t.file_url(sid, name), token=t.user, headers={"Range": "bytes=%d-%d" % (lo, hi)})
        t.assertEqual((r.status, r.body), (206, data[lo:hi + 1]), name)
    objs = objects(top)
    t.assertGreaterEqual(len(objs), 4, list(objs))  # the 5 MiB file alone is two chunks or more
    for rel, body in objs.items():
        aa, name = rel.split("/")
        t.assertEqual(aa, name[:2], rel)
        t.assertEqual(hashlib.sha256(body).hexdigest(), name, rel)
    t.assertGreaterEqual(sum(len(b) for b in objs.values()), sum(SIZES) - 3 * 32768)
    t.assertEqual(local_chunk_files(t.srv), 0, "a chunk of the store landed on the local disk")
    t.assertEqual(fsck(t.srv, t.admin)["problems"], [])
    for name in files:
        t.assertEqual(t.srv.request("DELETE", t.file_url(sid, name), token=t.user).status, 204)
    deadline = time.time() + 60
    while objects(top) and time.time() < deadline:
        r = t.srv.request("POST", "/api/v1/admin/fsck?repair=1", token=t.admin)
        t.assertEqual(r.status, 200, r)
        time.sleep(0.2)
    t.assertEqual(objects(top), {})
    t.assertEqual(fsck(t.srv, t.admin)["problems"], [])


def encrypted_reads_back_as_ciphertext(t, sid, top):
    """A file with a plaintext marker, into encrypting store sid: it reads back whole and by a
    range, and every object under top is e/<aa>/<hex>, ciphertext (MBE1) without the marker;
    no plain aa/ directory is made and nothing lands on the local disk."""
    data = (MARKER * 200000)[: 3 * 1024 * 1024] + os.urandom(2 * 1024 * 1024) + MARKER * 10
    t.assertEqual(put(t.srv, t.user, sid, "doc.txt", data).status, 201)
    r = t.srv.request("GET", t.file_url(sid, "doc.txt"), token=t.user)
    t.assertEqual((r.status, r.body), (200, data))
    r = t.srv.request("GET", t.file_url(sid, "doc.txt"), token=t.user, headers={"Range": "bytes=3000000-3200000"})
    t.assertEqual((r.status, r.body), (206, data[3000000:3200001]))
    objs = objects(top)
    t.assertGreaterEqual(len(objs), 2, list(objs))  # the repeated text dedups to few chunks
    for rel, body in objs.items():
        t.assertTrue(rel.startswith("e/"), rel)  # keyed names: e/<aa>/<hex>
        t.assertEqual(rel.split("/")[1], rel.split("/")[2][:2], rel)
        t.assertNotIn(MARKER[:12], body, rel)
        t.assertEqual(body[:4], b"MBE1", rel)
    t.assertFalse([f for f in os.listdir(top) if len(f) == 2], "a plain aa/ directory was made")
    t.assertEqual(local_chunk_files(t.srv), 0)

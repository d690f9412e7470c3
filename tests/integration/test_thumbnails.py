"""The thumbnails module (issue 18) through a real mbyted and real files made by ImageMagick and
exiftool (tests/setup/thumbs.sh): pixel sizes and EXIF orientation of what comes back (read
with ImageMagick's convert), the placeholder first and the real thumbnail within a deadline,
WebP or JPEG by Accept, ETag/304, listings with "thumb", hostile files (a 100000 x 100000 PNG,
a truncated JPEG, a PDF named .jpg) while the server keeps answering, deletion, the cache cap
with LRU eviction and remaking, and reloads under load with no failed request."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SRC, ServerTest, main, missing_prerequisite  # noqa: E402

CONVERT = "/usr/bin/convert"
FILES = None  # made once per run by tests/setup/thumbs.sh --make
WEBP = {"Accept": "image/avif,image/webp,*/*"}


def make_files(test):
    global FILES
    if FILES:
        return FILES
    if not os.path.exists(CONVERT) or not shutil.which("exiftool"):
        missing_prerequisite(test, "ImageMagick and exiftool are needed (tests/setup/thumbs.sh installs them)")
    d = tempfile.mkdtemp(prefix="mbyte-thumbs-")
    atexit.register(shutil.rmtree, d, True)
    subprocess.run([os.path.join(SRC, "tests", "setup", "thumbs.sh"), "--make", d], check=True)
    FILES = d
    return d


def pixels(data, fmt):
    """(width, height) of an image given as bytes, read by ImageMagick."""
    out = subprocess.run([CONVERT, fmt + ":-", "-format", "%w %h", "info:"], input=data, capture_output=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def pixel(data, fmt, x, y):
    """The (r, g, b) at x, y, 0..255."""
    out = subprocess.run([CONVERT, fmt + ":-", "-crop", "1x1+%d+%d" % (x, y), "-depth", "8", "rgb:-"], input=data,
                         capture_output=True, check=True).stdout
    return tuple(out[:3])


class ThumbBase(ServerTest):
    """One user (alice) and her store; helpers to upload and to ask for thumbnails."""
    modules = {"thumbnails": True}

    def setUp(self):
        self.files = make_files(self)
        super().setUp()
        self.tok = self.srv.add_user("alice", admin_token=self.admin)
        self.sid = self.srv.request("GET", "/api/v1/stores", token=self.tok).json()[0]["id"]

    def put(self, name, src=None, data=None):
        if data is None:
            with open(os.path.join(self.files, src or name), "rb") as f:
                data = f.read()
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/%s?parents=true" % (self.sid, name), data, token=self.tok)
        self.assertIn(r.status, (200, 201), r)

    def thumb(self, name, size=256, headers=WEBP, tok=None, sid=None):
        return self.srv.request("GET", "/api/v1/stores/%s/thumbnails/%s?size=%d" % (sid or self.sid, name, size),
                                token=tok or self.tok, headers=headers)

    def ready(self, name, size=256, headers=WEBP, deadline=90):
        """Poll until the thumbnail is made (or the file is known to have none)."""
        end = time.time() + deadline
        while True:
            r = self.thumb(name, size, headers)
            self.assertEqual(r.status, 200, r)
            if r.header("X-Thumbnail") == "ready" or r.header("X-Thumbnail-State") == "none":
                return r
            self.assertLess(time.time(), end, "no thumbnail for %s within %ds" % (name, deadline))
            time.sleep(0.2)


class ThumbsTest(ThumbBase):
    def module(self, verb):
        r = self.srv.request("POST", "/api/v1/admin/modules/thumbnails/" + verb, token=self.admin)
        self.assertEqual(r.status, 200, r)

    def test_pictures_pdf_and_text_get_thumbnails_of_the_right_size_after_a_placeholder(self):
        # photo.jpg comes while the module is off, so nothing is queued for it: the first ask
        # answers a placeholder for sure, and queues it
        self.module("unload")
        self.put("photo.jpg")
        self.module("load")
        for n in ("alpha.png", "anim.gif", "doc.pdf", "notes.md", "photo.heic"):
            self.put(n)
        first = self.thumb("photo.jpg")
        self.assertEqual(first.status, 200)
        self.assertEqual(first.header("X-Thumbnail"), "placeholder")
        self.assertEqual(first.header("X-Thumbnail-State"), "pending")
        self.assertEqual(first.header("Cache-Control"), "no-store")
        self.assertEqual(first.header("Content-Type"), "image/webp")
        self.assertEqual(pixels(first.body, "webp"), (256, 256))
        r = self.ready("photo.jpg")
        self.assertEqual(r.header("Content-Type"), "image/webp")
        # 4000x3000 stored, EXIF orientation 6: shown 3000x4000, so 192x256; the white block
        # stored top-left is at the top right once turned
        self.assertEqual(pixels(r.body, "webp"), (192, 256))
        self.assertGreater(min(pixel(r.body, "webp", 185, 5)), 230)
        self.assertLess(min(pixel(r.body, "webp", 5, 5)), 200)
        for size, want in ((64, (48, 64)), (1024, (768, 1024))):
            self.assertEqual(pixels(self.ready("photo.jpg", size).body, "webp"), want)
        # JPEG for a client without image/webp
        j = self.ready("photo.jpg", 256, {"Accept": "image/jpeg,image/png,image/*"})
        self.assertEqual(j.header("Content-Type"), "image/jpeg")
        self.assertEqual(j.body[:3], b"\xff\xd8\xff")
        self.assertEqual(pixels(j.body, "jpeg"), (192, 256))
        # ETag and 304
        tag = r.header("ETag")
        self.assertTrue(tag)
        again = self.thumb("photo.jpg", headers=dict(WEBP, **{"If-None-Match": tag}))
        self.assertEqual(again.status, 304, again)
        self.assertEqual(again.body, b"")
        # PNG with alpha 300x200 -> 256x171 keeping the alpha; GIF first frame blue; PDF page
        # 400x200 pt -> 256x128 with the red band at the bottom; text -> a portrait page
        a = self.ready("alpha.png").body
        self.assertEqual(pixels(a, "webp"), (256, 171))
        g = self.ready("anim.gif").body
        self.assertEqual(pixels(g, "webp"), (120, 80))  # never enlarged
        rr, gg, bb = pixel(g, "webp", 60, 40)
        self.assertTrue(bb > 200 and gg < 60, (rr, gg, bb))
        p = self.ready("doc.pdf").body
        self.assertEqual(pixels(p, "webp"), (256, 128))
        rr, gg, bb = pixel(p, "webp", 128, 110)
        self.assertTrue(rr > 200 and gg < 60 and bb < 60, (rr, gg, bb))
        self.assertGreater(min(pixel(p, "webp", 128, 20)), 230)  # the page is white above
        self.assertEqual(pixels(self.ready("photo.heic").body, "webp"), (256, 128))
        t = self.ready("notes.md", 1024)
        self.assertEqual(t.header("X-Thumbnail"), "ready")
        self.assertEqual(pixels(t.body, "webp"), (768, 1024))
        # the listing carries the state and a ThumbHash
        ls = self.srv.request("GET", "/api/v1/stores/%s/list" % self.sid, token=self.tok).json()["entries"]
        by = {e["name"]: e for e in ls}
        for n in ("photo.jpg", "alpha.png", "anim.gif", "doc.pdf", "notes.md", "photo.heic"):
            self.assertEqual(by[n]["thumb"]["state"], "ready", by[n])
            self.assertGreaterEqual(len(by[n]["thumb"]["hash"]), 20, by[n])

    def test_hostile_files_get_a_placeholder_or_a_thumbnail_and_the_server_keeps_answering(self):
        for n in ("bomb.png", "truncated.jpg", "pdf-named.jpg"):
            self.put(n)
        for n in ("bomb.png", "truncated.jpg", "pdf-named.jpg"):
            self.ready(n)
            self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        bomb = self.thumb("bomb.png")
        self.assertEqual(bomb.header("X-Thumbnail"), "placeholder")
        self.assertEqual(bomb.header("X-Thumbnail-State"), "none")
        self.assertIn("size limits", bomb.header("X-Thumbnail-Reason"))
        self.assertEqual(pixels(bomb.body, "webp"), (256, 256))
        # the PDF named .jpg: its content decides, so it has the PDF's page as its thumbnail
        p = self.thumb("pdf-named.jpg")
        self.assertEqual(p.header("X-Thumbnail"), "ready")
        self.assertEqual(pixels(p.body, "webp"), (256, 128))
        # the truncated JPEG: ImageMagick draws what is there (grey below), or it has none
        t = self.thumb("truncated.jpg")
        self.assertIn(t.header("X-Thumbnail"), ("ready", "placeholder"))
        st = self.srv.request("GET", "/api/v1/admin/thumbnails", token=self.admin).json()
        reasons = [f["reason"] for f in st["failures"]]
        self.assertTrue(any("size limits" in x for x in reasons), st)
        ls = self.srv.request("GET", "/api/v1/stores/%s/list" % self.sid, token=self.tok).json()["entries"]
        self.assertEqual({e["name"]: e["thumb"]["state"] for e in ls}["bomb.png"], "none")
        # mbytectl shows the same
        out = self.srv.ctl("thumbnails", "status")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("size limits", out.stdout)

    def test_missing_files_and_other_users_stores_are_404_bad_sizes_400(self):
        self.put("alpha.png")
        self.assertEqual(self.thumb("nope.png").status, 404)
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.assertEqual(self.thumb("alpha.png", tok=bob).status, 404)
        self.assertProblem(self.thumb("alpha.png", size=100), 400, "size")

    def test_deleting_a_file_deletes_its_thumbnails(self):
        self.put("alpha.png")
        self.ready("alpha.png")
        cache = os.path.join(self.srv.data, "m", "thumbnails", "cache")
        count = lambda: sum(len(fs) for _, _, fs in os.walk(cache))  # noqa: E731
        self.assertEqual(count(), 6)  # three sizes, WebP and JPEG
        r = self.srv.request("DELETE", "/api/v1/stores/%s/files/alpha.png" % self.sid, token=self.tok)
        self.assertIn(r.status, (200, 204), r)
        end = time.time() + 30
        while count():
            self.assertLess(time.time(), end, "thumbnails of a deleted file stayed")
            time.sleep(0.2)

    def test_thumbnails_made_on_request_before_the_upload_was_seen_go_with_the_file(self):
        # The module off while the file is uploaded: its thumbnails are made because they are asked
        # for, as when a client asks before the upload's event reached the module (a fresh-clone
        # run: the thumbnails of a deleted file stayed).
        self.module("unload")
        self.put("alpha.png")
        self.module("load")
        self.ready("alpha.png")
        cache = os.path.join(self.srv.data, "m", "thumbnails", "cache")
        count = lambda: sum(len(fs) for _, _, fs in os.walk(cache))  # noqa: E731
        self.assertEqual(count(), 6)
        r = self.srv.request("DELETE", "/api/v1/stores/%s/files/alpha.png" % self.sid, token=self.tok)
        self.assertIn(r.status, (200, 204), r)
        end = time.time() + 30
        while count():
            self.assertLess(time.time(), end, "thumbnails of a deleted file stayed")
            time.sleep(0.2)

    def test_a_rebuild_makes_again_the_thumbnails_of_files_in_nested_folders(self):
        self.put("pics/deep/alpha.png", src="alpha.png")
        self.ready("pics/deep/alpha.png")
        cache = os.path.join(self.srv.data, "m", "thumbnails", "cache")
        count = lambda: sum(len(fs) for _, _, fs in os.walk(cache))  # noqa: E731
        self.assertEqual(count(), 6)
        r = self.srv.request("POST", "/api/v1/admin/thumbnails/rebuild", token=self.admin)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json()["removed"], 6, r)
        end = time.time() + 60
        while count() < 6:  # every store walked again: the file two folders down is queued and made
            self.assertLess(time.time(), end, "the rebuild did not make the thumbnails again")
            time.sleep(0.2)
        self.assertEqual(self.ready("pics/deep/alpha.png").header("X-Thumbnail"), "ready")

    def test_reload_under_load_fails_no_request(self):
        self.put("alpha.png")
        self.ready("alpha.png")
        stop, failures, done = threading.Event(), [], [0]

        def load():
            while not stop.is_set():
                for r in (self.thumb("alpha.png"),
                          self.srv.request("GET", "/api/v1/stores/%s/list" % self.sid, token=self.tok)):
                    done[0] += 1
                    if r.status != 200:
                        failures.append(r)
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for _ in range(3):
                r = self.srv.request("POST", "/api/v1/admin/modules/thumbnails/reload", token=self.admin)
                self.assertEqual(r.status, 200, r)
                time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertGreater(done[0], 10)
        self.assertEqual(failures, [])


class CacheCapTest(ThumbBase):
    module_conf = {"thumbnails": "cache_max_mb: 1\n"}

    def test_past_the_cap_the_least_recently_used_go_and_come_back_on_demand(self):
        names = ["noise%d.png" % i for i in range(1, 13)]
        for n in names:  # one after another: each is made (and used) after the ones before it, so
            self.put(n)  # the first ones are the least recently used; no request touches them again
            self.ready(n)
        # A worker trims the cache right after it stores a thumbnail, so the last one can be
        # seen a moment before its trim: wait for the trim, then check what it removed.
        end = time.time() + 30
        while True:
            st = self.srv.request("GET", "/api/v1/admin/thumbnails", token=self.admin).json()
            if st["cache_bytes"] <= 1 << 20 or time.time() > end:
                break
            time.sleep(0.1)
        self.assertLessEqual(st["cache_bytes"], 1 << 20, st)
        self.assertEqual(st["ready"], 12, st)
        first, last = self.thumb(names[0]), self.thumb(names[-1])
        self.assertEqual(last.header("X-Thumbnail"), "ready")
        self.assertEqual(first.header("X-Thumbnail"), "placeholder")  # evicted
        self.assertEqual(first.header("X-Thumbnail-State"), "pending")
        self.assertEqual(pixels(self.ready(names[0]).body, "webp"), (256, 192))  # made again


class BrokenWorkerTest(ThumbBase):
    """A worker that crashes or hangs (a stand-in for a decoder bug: the `helper` setting points at
    a script that ends itself with SIGSEGV, or sleeps): only that process ends, the file gets the
    placeholder with the reason, and the server keeps answering."""

    def setUp(self):
        self.script = os.path.join(tempfile.mkdtemp(prefix="mbyte-thumbd-"), "thumbd")
        with open(self.script, "w") as f:
            f.write("#!/bin/sh\n# $1 -m MB, then IN OUT\nif grep -q hang \"$3\"; then exec sleep 60; fi\n"
                    "kill -SEGV $$\n")
        os.chmod(self.script, 0o755)
        self.module_conf = {"thumbnails": "helper: %s\nworker_timeout_seconds: 2\n" % self.script}
        super().setUp()

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(os.path.dirname(self.script), ignore_errors=True)

    def test_a_crash_or_a_hang_ends_only_the_worker(self):
        self.put("crash.txt", data=b"crash me\n")
        self.put("hang.txt", data=b"hang here\n")
        for name, why in (("crash.txt", "signal 11"), ("hang.txt", "longer than 2s")):
            r = self.ready(name)
            self.assertEqual(r.header("X-Thumbnail-State"), "none", r)
            self.assertIn(why, r.header("X-Thumbnail-Reason"))
            self.assertEqual(pixels(r.body, "webp"), (256, 256))  # the text placeholder
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        st = self.srv.request("GET", "/api/v1/admin/thumbnails", token=self.admin).json()
        self.assertEqual(st["failed"], 2, st)


if __name__ == "__main__":
    main()

"""The search module (issue 17) through a real mbyted: documents made by real tools (pandoc, groff,
LibreOffice, ImageMagick + exiftool, Python's email package) are found by a word of their body
with a snippet; the query language and every filter; garbage queries get 200 or a clear 400;
trash, restore, rename and folder moves show in the hits; another user never sees a hit of a
store he cannot read; unload/load catches up; kill -9 while 1,000 files are indexed converges;
status, rebuild, and a corrupt index found at start. Extraction runs in mbyte-extractd, a process per
file with limits: an extractor that crashes or hangs fails only its file (the server answers, the
name is found, the reason is in the status, the queue goes on), and a zip bomb DOCX is stopped by
the limits."""
import email.message
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, ServerTest, main, missing_prerequisite  # noqa: E402

TOOLS = ["pandoc", "gropdf", "soffice", "convert", "exiftool"]


def make_documents(d):
    """{file name: (bytes, a word only its body holds)}, each made by the real tool."""
    def run(*cmd, **kw):
        subprocess.run(cmd, check=True, capture_output=True, cwd=d, timeout=180, **kw)

    def read(name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()

    out = {}
    with open(os.path.join(d, "body.md"), "w") as f:
        f.write("# Minutes\n\nThe committee discussed the marmalade budget at length.\n")
    run("pandoc", "body.md", "-o", "minutes.docx")
    out["minutes.docx"] = (read("minutes.docx"), "marmalade")
    with open(os.path.join(d, "odt.md"), "w") as f:
        f.write("Field notes: a quokka was seen near the river.\n")
    run("pandoc", "odt.md", "-o", "notes.odt")
    out["notes.odt"] = (read("notes.odt"), "quokka")
    with open(os.path.join(d, "page.md"), "w") as f:
        f.write("Welcome to the xylophone museum.\n")
    run("pandoc", "page.md", "-s", "--metadata", "title=Museum", "-o", "page.html")
    out["page.html"] = (read("page.html"), "xylophone")
    with open(os.path.join(d, "paper.ms"), "w") as f:
        f.write(".TL\nAirships\n.PP\nThe zeppelin crossed the ocean in three days.\n")
    with open(os.path.join(d, "paper.pdf"), "wb") as f:
        subprocess.run(["groff", "-ms", "-Tpdf", "paper.ms"], check=True, stdout=f, cwd=d, timeout=120)
    out["paper.pdf"] = (read("paper.pdf"), "zeppelin")
    with open(os.path.join(d, "book.md"), "w") as f:
        f.write("---\ntitle: Sea stories\n---\n\n# Chapter one\n\nThe albatross followed the ship.\n")
    run("pandoc", "book.md", "-o", "stories.epub")
    out["stories.epub"] = (read("stories.epub"), "albatross")
    with open(os.path.join(d, "slides.md"), "w") as f:
        f.write("# Roadmap\n\n- ship the gazebo feature\n")
    run("pandoc", "slides.md", "-o", "roadmap.pptx")
    out["roadmap.pptx"] = (read("roadmap.pptx"), "gazebo")
    with open(os.path.join(d, "deck.md"), "w") as f:
        f.write("# Wildlife\n\n- a pelican on the pier\n")
    run("pandoc", "deck.md", "-o", "deck.pptx")
    run("soffice", "--headless", "-env:UserInstallation=file://" + os.path.join(d, "lo-profile"),
        "--convert-to", "odp", "deck.pptx", "--outdir", d)
    if not os.path.exists(os.path.join(d, "deck.odp")):
        raise AssertionError("LibreOffice Impress made no ODP (tests/setup/search.sh installs libreoffice-impress-nogui)")
    out["deck.odp"] = (read("deck.odp"), "pelican")  # ODP: LibreOffice's own presentation format
    with open(os.path.join(d, "stock.csv"), "w") as f:
        f.write("item,count\ncardamom,7\n")
    run("soffice", "--headless", "-env:UserInstallation=file://" + os.path.join(d, "lo-profile"),
        "--convert-to", "ods", "stock.csv", "--outdir", d)
    out["stock.ods"] = (read("stock.ods"), "cardamom")
    with open(os.path.join(d, "fruit.csv"), "w") as f:
        f.write("fruit,count\nkumquat,12\napple,3\n")
    run("soffice", "--headless", "-env:UserInstallation=file://" + os.path.join(d, "lo-profile"),
        "--convert-to", "xlsx", "fruit.csv", "--outdir", d)
    out["fruit.xlsx"] = (read("fruit.xlsx"), "kumquat")
    m = email.message.EmailMessage()
    m["From"] = "Zoë <zoe@example.org>"
    m["To"] = "team@example.org"
    m["Subject"] = "Grüße from the outback"
    m.set_content("We saw a wombat crossing the road.\n", charset="utf-8", cte="quoted-printable")
    m.add_alternative("<p>We saw a <b>wombat</b> crossing the road.</p>", subtype="html", cte="base64")
    out["trip.eml"] = (bytes(m), "wombat")
    run("convert", "-size", "64x48", "gradient:blue-white", "photo.jpg")
    run("exiftool", "-overwrite_original", "-Make=Hasselblad", "-Model=X2D", "-DateTimeOriginal=2026:05:04 10:11:12",
        "-ImageDescription=lighthouse at dawn", "-GPSLatitude=48.8583", "-GPSLatitudeRef=N",
        "-GPSLongitude=2.2945", "-GPSLongitudeRef=E", "photo.jpg")
    out["photo.jpg"] = (read("photo.jpg"), "hasselblad")
    out["utf16.txt"] = ("Ein Flügel aus Zürich\n".encode("utf-16"), "flügel")
    out["latin1.txt"] = ("Café crème au gingembre\n".encode("latin-1"), "gingembre")
    return out


class Client:
    def __init__(self, srv, tok):
        self.srv, self.tok = srv, tok
        self.sid = srv.request("GET", "/api/v1/stores", token=tok).json()[0]["id"]

    def put(self, path, data, sid=None):
        r = self.srv.request("PUT", "/api/v1/stores/%s/files/%s?parents=true" % (sid or self.sid, path), data,
                             token=self.tok, headers={"Content-Type": "application/octet-stream"})
        assert r.status in (200, 201), r
        return r

    def call(self, method, path, body=None):
        return self.srv.request(method, "/api/v1/stores/%s/%s" % (self.sid, path), body, token=self.tok)

    def search(self, q, **params):
        params["q"] = q
        return self.srv.request("GET", "/api/v1/search?" + urllib.parse.urlencode(params), token=self.tok)

    def paths(self, q, **params):
        r = self.search(q, **params)
        assert r.status == 200, r
        return sorted(h["path"] for h in r.json()["hits"])

    def status(self):
        r = self.srv.request("GET", "/api/v1/search/status", token=self.tok)
        assert r.status == 200, r
        return {s["store"]: s for s in r.json()["stores"]}


class SearchBase(ServerTest):
    modules = {"search": True, "trash": True}

    def setUp(self):
        super().setUp()
        self.c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))

    def until(self, fn, what, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(0.1)
        self.fail("%s: not within %d s (last %r)" % (what, timeout, last))

    def expect(self, q, paths, timeout=60, **params):
        """Poll until the hits of q are exactly `paths` (indexing is asynchronous)."""
        want = sorted(paths)
        self.until(lambda: self.c.paths(q, **params) == want or None,
                   "q=%r to give %r (gives %r)" % (q, want, self.c.paths(q, **params)), timeout)


    def paged(self, q, limit):
        """Every hit of q, page after page (limit a page), in the order given."""
        seen, cursor = [], None
        while True:
            params = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            body = self.c.search(q, **params).json()
            seen += [h["path"] for h in body["hits"]]
            cursor = body["next"]
            if not cursor:
                return seen

    def all_paths(self, q):
        return set(self.paged(q, 100))

    def restart(self, modules=None):
        if modules:
            self.srv.modules.update(modules)
            self.srv.write_config()
        self.srv.start()
        self.c = Client(self.srv, self.srv.login("alice", "user-password-1"))


class SearchTest(SearchBase):
    def test_a_word_of_each_real_document_is_found_with_a_snippet(self):
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            missing_prerequisite(self, "tests/setup/search.sh installs %s" % ", ".join(missing))
        d = tempfile.mkdtemp(prefix="search-docs-")
        try:
            docs = make_documents(d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        for name, (data, _) in docs.items():
            self.c.put("inbox/" + name, data)
        for name, (data, word) in docs.items():
            self.expect(word, ["inbox/" + name])
            hit = self.c.search(word).json()["hits"][0]
            self.assertIn("<mark>", hit["snippet"], hit)
            self.assertIn(word.lower(), hit["snippet"].lower(), hit)
            self.assertEqual(hit["name"], name)
            self.assertEqual(hit["size"], len(data))
        kinds = {h["name"]: h["type"] for h in self.c.search("type:pdf OR type:document", limit=50).json()["hits"]}
        self.assertEqual(self.c.paths("type:pdf"), ["inbox/paper.pdf"])
        self.assertEqual(self.c.paths("type:spreadsheet"), ["inbox/fruit.xlsx", "inbox/stock.ods"])
        self.assertEqual(self.c.paths("type:presentation"), ["inbox/deck.odp", "inbox/roadmap.pptx"])
        self.assertEqual(self.c.paths("type:ebook"), ["inbox/stories.epub"])
        self.assertEqual(self.c.paths("type:email"), ["inbox/trip.eml"])
        self.assertEqual(self.c.paths("type:image"), ["inbox/photo.jpg"])
        self.assertEqual(self.c.paths("type:document"), ["inbox/minutes.docx", "inbox/notes.odt"], kinds)
        # EXIF: the camera, the description and the GPS position as coordinates
        photo = self.c.search("lighthouse").json()["hits"][0]
        self.assertEqual(photo["path"], "inbox/photo.jpg")
        self.assertEqual(self.c.paths("x2d"), ["inbox/photo.jpg"])
        self.assertEqual(self.c.paths('"48.858300"'), ["inbox/photo.jpg"])
        # e-mail headers (an RFC 2047 subject) and the PDF title
        self.assertEqual(self.c.paths("grüße outback"), ["inbox/trip.eml"])
        self.assertEqual(self.c.paths("airships"), ["inbox/paper.pdf"])
        self.assertEqual(self.c.paths("zürich"), ["inbox/utf16.txt"])

    def test_query_language_and_every_filter(self):
        c = self.c
        c.put("a.txt", b"alpha beta gamma")
        c.put("b.txt", b"alpha delta")
        c.put("notes/c.md", b"gamma epsilon " + b"x" * 3000)
        c.put("notes/deep/report-2026.txt", b"omega")
        self.expect("alpha OR gamma OR omega", ["a.txt", "b.txt", "notes/c.md", "notes/deep/report-2026.txt"])
        self.assertEqual(c.paths("alpha"), ["a.txt", "b.txt"])
        self.assertEqual(c.paths("alpha gamma"), ["a.txt"])  # every word
        self.assertEqual(c.paths('"alpha beta"'), ["a.txt"])  # phrase
        self.assertEqual(c.paths('"beta alpha"'), [])
        self.assertEqual(c.paths("eps*"), ["notes/c.md"])  # prefix
        self.assertEqual(c.paths("alpha -delta"), ["a.txt"])  # exclusion
        self.assertEqual(c.paths('alpha -"alpha delta"'), ["a.txt"])
        self.assertEqual(c.paths("beta OR epsilon"), ["a.txt", "notes/c.md"])
        self.assertEqual(c.paths("gamma beta OR omega"), ["a.txt"])  # gamma AND (beta OR omega)
        self.assertEqual(c.paths("port"), ["notes/deep/report-2026.txt"])  # a substring of a name
        self.assertEqual(c.paths("report"), ["notes/deep/report-2026.txt"])  # a word of a name
        self.assertEqual(c.paths("type:md"), ["notes/c.md"])
        self.assertEqual(c.paths("type:markdown gamma"), ["notes/c.md"])
        self.assertEqual(c.paths("gamma type:txt"), ["a.txt"])
        self.assertEqual(c.paths("in:/notes"), ["notes/c.md", "notes/deep", "notes/deep/report-2026.txt"])  # folders too
        self.assertEqual(c.paths("in:notes/deep/"), ["notes/deep/report-2026.txt"])
        self.assertEqual(c.paths("in:/not"), [])  # a folder, not a prefix of names
        self.assertEqual(c.paths("size>2KB"), ["notes/c.md"])
        self.assertEqual(c.paths("size<=5 alpha"), [])
        self.assertEqual(c.paths("size<=11"), ["b.txt", "notes/deep/report-2026.txt"])
        self.assertEqual(c.paths("alpha modified>2020-01-01"), ["a.txt", "b.txt"])
        self.assertEqual(c.paths("alpha modified<2020-01-01"), [])
        this_year = time.strftime("%Y", time.gmtime())
        self.assertEqual(c.paths("alpha modified:" + this_year), ["a.txt", "b.txt"])
        self.assertEqual(c.paths("alpha store:home"), ["a.txt", "b.txt"])
        self.assertEqual(c.paths("alpha store:Elsewhere"), [])
        self.assertEqual(c.paths("alpha", store=c.sid), ["a.txt", "b.txt"])
        # paging by cursor: every hit once
        self.assertEqual(sorted(self.paged("alpha OR gamma OR omega", 1)), ["a.txt", "b.txt", "notes/c.md", "notes/deep/report-2026.txt"])
        # a name match ranks before a body match
        c.put("gamma.txt", b"nothing here")
        self.expect("gamma", ["a.txt", "gamma.txt", "notes/c.md"])
        self.assertEqual(c.search("gamma").json()["hits"][0]["path"], "gamma.txt")
        self.assertProblem(c.search("tag:x"), 400, "tag")
        self.assertProblem(c.search("size>lots"), 400, "size")
        self.assertProblem(c.search("modified>2026-13-01"), 400, "modified")
        for day in ("2026-00-01", "2026-00", "2026-01-00", "2026-02-29"):  # no such day (fuzz_search_query)
            self.assertProblem(c.search("modified>" + day), 400, "modified")
        self.assertEqual(c.search("alpha modified>2024-02-29").status, 200)  # a leap day
        self.assertProblem(c.search("alpha", limit=0), 400, "limit")
        self.assertProblem(c.search("alpha", cursor="x"), 400, "cursor")
        self.assertProblem(c.search(""), 400)

    def test_garbage_queries_get_results_or_a_clear_400(self):
        self.c.put("x.txt", b"some words (with) punctuation - and \"quotes\" * stars")
        self.expect("punctuation", ["x.txt"])
        rnd = random.Random(17)
        garbage = ["-", '"', "*", "(", ")", '"open quote', "a OR", "OR", "AND", "NOT", "NEAR(a b)", "name:x",
                   "^start", "{a b}", "a:b", '"" "" ""', "-a -b", "- - -", "***words", "wo*rds", "\\", "'", ";",
                   "a AND OR NOT b", "x" * 5000, "é" * 100, "\u202e", "in:", "store:", "type:", "size>", "modified>",
                   "size>>1", "-\"", "\"-\"", "%", "100%", "NEAR", "a NEAR b", "col: x", "quotes\"\"", "1e308",
                   "".join(chr(rnd.randrange(32, 127)) for _ in range(10 * 1024)),
                   " ".join("".join(chr(rnd.randrange(33, 127)) for _ in range(5)) for _ in range(60))]
        for q in garbage:
            r = self.c.search(q)
            self.assertIn(r.status, (200, 400), (q[:50], r))
            if r.status == 400:
                self.assertProblem(r, 400)
        r = self.srv.request("GET", "/api/v1/search?q=%ff%fe", token=self.c.tok)
        self.assertProblem(r, 400, "UTF-8")
        self.assertEqual(self.c.paths('"with) punctuation'), ["x.txt"])
        self.assertEqual(self.c.paths("punctuation -"), ["x.txt"])

    def test_trash_restore_rename_and_folder_moves_show_in_hits(self):
        c = self.c
        c.put("work/plan.txt", b"the secret pineapple plan")
        self.expect("pineapple", ["work/plan.txt"])
        self.assertEqual(c.call("DELETE", "files/work/plan.txt").status, 204)
        self.expect("pineapple", [])
        items = c.call("GET", "trash").json()["items"]
        r = c.call("POST", "trash/%d/restore" % items[0]["id"])
        self.assertEqual(r.status, 200, r)
        self.expect("pineapple", ["work/plan.txt"])
        r = c.call("POST", "move", {"from": "work/plan.txt", "to": "work/final.txt"})
        self.assertEqual(r.status, 200, r)
        self.expect("pineapple", ["work/final.txt"])
        r = c.call("POST", "move", {"from": "work", "to": "archive/2026", "parents": True})
        self.assertEqual(r.status, 200, r)
        self.expect("pineapple", ["archive/2026/final.txt"])
        c.put("archive/2026/final.txt", b"now about mangoes")  # an overwrite: the new text replaces the old
        self.expect("mangoes", ["archive/2026/final.txt"])
        self.assertEqual(c.paths("pineapple"), [])
        self.assertEqual(c.call("DELETE", "files/archive?recursive=true").status, 204)
        self.expect("mangoes", [])
        # purge from the trash: nothing comes back
        for it in c.call("GET", "trash").json()["items"]:
            self.assertEqual(c.call("DELETE", "trash/%d" % it["id"]).status, 204)
        time.sleep(0.5)
        self.assertEqual(c.paths("mangoes OR pineapple"), [])

    def test_another_user_never_sees_a_hit_of_a_store_he_cannot_read(self):
        bob = Client(self.srv, self.srv.add_user("bob", admin_token=self.admin))
        self.c.put("diary.txt", b"alice writes about her walrus")
        bob.put("list.txt", b"bob writes about his walrus")
        self.expect("walrus", ["diary.txt"])
        self.until(lambda: bob.paths("walrus") == ["list.txt"] or None, "bob's own hit")
        self.assertEqual(bob.paths("walrus OR alice OR diary"), ["list.txt"])
        self.assertProblem(bob.search("walrus", store=self.c.sid), 404)
        admin = Client(self.srv, self.admin)
        self.assertEqual(admin.paths("walrus"), [])  # the admin role is no way into files
        st = bob.status()
        self.assertEqual(list(st), [bob.sid])
        r = self.srv.request("GET", "/api/v1/search?q=walrus")
        self.assertEqual(r.status, 401, r)
        self.assertProblem(self.srv.request("POST", "/api/v1/admin/search/rebuild", {}, token=bob.tok), 403)

    def test_unload_removes_the_routes_and_load_catches_up(self):
        c = self.c
        c.put("keep.txt", b"heron")
        c.put("gone.txt", b"heron egret")
        self.expect("heron", ["gone.txt", "keep.txt"])
        r = self.srv.request("POST", "/api/v1/admin/modules/search/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(c.search("heron").status, 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/search/status", token=c.tok).status, 404)
        self.assertEqual(c.call("DELETE", "files/gone.txt").status, 204)
        c.put("new.txt", b"heron pelican")
        self.assertEqual(c.call("POST", "move", {"from": "keep.txt", "to": "kept.txt"}).status, 200)
        r = self.srv.request("POST", "/api/v1/admin/modules/search/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.expect("heron", ["kept.txt", "new.txt"])
        self.assertEqual(c.paths("egret"), [])

    def test_snippets_of_long_texts(self):
        # over 64 KiB of text the snippet comes from a linear scan (FTS5's is quadratic in the matches)
        words = " ".join("w%d" % (i % 5000) for i in range(30000))
        self.c.put("long.txt", ("Preface. " + words + " The zebra stripes end here.").encode())
        self.c.put("short.txt", b"A zebra in a short text.")
        self.expect("zebra", ["long.txt", "short.txt"])
        hits = {h["path"]: h["snippet"] for h in self.c.search("zebra").json()["hits"]}
        self.assertIn("The <mark>zebra</mark> stripes end here.", hits["long.txt"])
        self.assertTrue(hits["long.txt"].startswith("…"), hits["long.txt"])
        self.assertEqual(hits["short.txt"], "A <mark>zebra</mark> in a short text.")
        hits = {h["path"]: h["snippet"] for h in self.c.search("w12*").json()["hits"]}
        self.assertIn("<mark>w12</mark>", hits["long.txt"])  # thousands of matches, one answer
        hits = self.c.search("ZEBRA Stripes").json()["hits"]
        self.assertEqual([h["path"] for h in hits], ["long.txt"])
        self.assertIn("The <mark>zebra</mark> <mark>stripes</mark> end", hits[0]["snippet"])  # case folded

    def test_size_and_text_limits(self):
        self.srv.stop()
        with open(os.path.join(self.srv.confdir, "search.yaml"), "w") as f:
            f.write("max_file_mb: 1\nmax_text_kb: 16\n")
        self.srv.start()
        c = self.c = Client(self.srv, self.srv.login("alice", "user-password-1"))
        c.put("huge.txt", b"capybara " * 200000)  # 1.7 MiB: over max_file_mb, indexed by name only
        c.put("long.txt", b"ocelot " + b"filler " * 10000 + b"tapir")  # 70 KiB of text: the end is cut
        self.expect("huge", ["huge.txt"])
        self.expect("ocelot", ["long.txt"])
        self.assertEqual(c.paths("capybara"), [])
        self.assertEqual(c.paths("tapir"), [])
        st = c.status()[c.sid]
        self.assertEqual((st["indexed"], st["skipped"], st["failed"]), (2, 1, 0), st)

    def test_status_failures_rebuild_and_a_corrupt_index_at_start(self):
        c = self.c
        c.put("ok.txt", b"sturgeon")
        c.put("broken.pdf", b"%PDF-1.7\nnot really a pdf sturgeon")
        c.put("broken.docx", b"PK\x03\x04 not a zip")
        self.until(lambda: c.status()[c.sid]["indexed"] == 3 or None, "three indexed")
        st = c.status()[c.sid]
        self.assertEqual(st["failed"], 2, st)
        self.assertEqual(st["queued"], 0, st)
        reasons = {f["path"]: f["reason"] for f in st["failures"]}
        self.assertIn("PDF", reasons["broken.pdf"])
        self.assertIn("zip", reasons["broken.docx"])
        self.assertEqual(c.paths("broken"), ["broken.docx", "broken.pdf"])  # names are always indexed
        self.assertEqual(c.paths("sturgeon"), ["ok.txt"])
        r = self.srv.request("POST", "/api/v1/admin/search/rebuild", {"store": c.sid}, token=self.admin)
        self.assertEqual(r.status, 202, r)
        tid = r.json()["task"]
        task = self.until(lambda: (lambda t: t if t["state"] in ("done", "failed") else None)(
            self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=self.admin).json()), "the rebuild")
        self.assertEqual(task["state"], "done", task)
        self.assertEqual(c.paths("sturgeon"), ["ok.txt"])
        # the same through mbytectl (the admin socket: every store)
        p = self.srv.ctl("search", "status")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("store %d Home: 3 indexed, 0 queued, 2 failed, 0 skipped" % c.sid, p.stdout)
        self.assertIn("failed broken.pdf: not a readable PDF", p.stdout)
        p = self.srv.ctl("search", "rebuild", str(c.sid))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("search index rebuilt: 1 store(s)", p.stdout)
        self.assertEqual(c.paths("sturgeon"), ["ok.txt"])
        self.assertEqual(self.srv.ctl("search", "rebuild", "x").returncode, 2)
        self.assertProblem(self.srv.request("POST", "/api/v1/admin/search/rebuild", {"store": 999},
                                            token=self.admin), 404)
        # a damaged index file found at start: kept aside, rebuilt, searchable again
        self.srv.stop()
        db = os.path.join(self.srv.data, "m", "search", "%d.db" % c.sid)
        for ext in ("-wal", "-shm"):
            if os.path.exists(db + ext):
                os.unlink(db + ext)
        with open(db, "r+b") as f:
            f.seek(100)
            f.write(os.urandom(8192))
        self.srv.start()
        self.c = c = Client(self.srv, self.srv.login("alice", "user-password-1"))
        self.expect("sturgeon", ["ok.txt"])
        self.assertTrue(os.path.exists(db + ".corrupt"))
        self.assertIn("was damaged", self.srv.read_log())

    def test_an_index_of_the_previous_schema_is_rebuilt_at_start(self):
        """Schema 1 had no prefix index of 4 characters: an upgrade rebuilds the index."""
        c = self.c
        c.put("notes/heron.txt", b"the heronry by the lake")
        self.expect("hero*", ["notes/heron.txt"])
        self.srv.stop()
        db = os.path.join(self.srv.data, "m", "search", "%d.db" % c.sid)
        x = sqlite3.connect(db)
        x.executescript("DROP TABLE fts; CREATE VIRTUAL TABLE fts USING fts5(name, body,"
                        " tokenize='unicode61 remove_diacritics 2', prefix='2 3'); PRAGMA user_version = 1;")
        x.close()
        self.srv.start()
        self.c = c = Client(self.srv, self.srv.login("alice", "user-password-1"))
        self.expect("hero*", ["notes/heron.txt"])
        self.expect("lake", ["notes/heron.txt"])
        x = sqlite3.connect(db)
        self.assertEqual(x.execute("PRAGMA user_version").fetchone()[0], 2)
        self.assertIn("prefix='2 3 4'", x.execute("SELECT sql FROM sqlite_master WHERE name = 'fts'").fetchone()[0])
        x.close()


class ConvergenceTest(SearchBase):
    """Every hit of a word in 1,000 files: each one ranked (the default ranks the newest 1,000)."""
    module_conf = {"search": "rank_newest: 0\n"}

    def test_kill_during_indexing_of_1000_files_converges(self):
        c = self.c
        # 1. kill -9 while the worker is half-way through 1,000 files it has to catch up with
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/search/unload", token=self.admin).status, 200)
        for i in range(1000):
            c.put("bulk/f%04d.txt" % i, b"common lemur number%d" % i)
        for i in range(0, 1000, 100):
            self.assertEqual(c.call("DELETE", "files/bulk/f%04d.txt" % i).status, 204)
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/search/load", token=self.admin).status, 200)
        st = self.until(lambda: (lambda s: s["indexed"] > 0 and s)(c.status()[c.sid]), "indexing to start")
        self.srv.kill()
        self.assertLess(st["indexed"], 990, "the kill came after indexing had finished: %r" % st)
        self.restart()
        self.until(lambda: (lambda s: s["indexed"] == 990 and s["queued"] == 0 and s)(self.c.status()[self.c.sid]),
                   "990 indexed, nothing queued", timeout=300)
        want = {"bulk/f%04d.txt" % i for i in range(1000) if i % 100}
        self.assertEqual(self.all_paths("lemur"), want)
        # 2. kill -9 right after 200 uploads and 20 deletes answered: the queue entries made from their
        # events survive it
        for i in range(1000, 1200):
            self.c.put("bulk/f%04d.txt" % i, b"common lemur number%d" % i)
        for i in range(1, 21):
            self.assertEqual(self.c.call("DELETE", "files/bulk/f%04d.txt" % i).status, 204)
        self.srv.kill()
        self.restart()
        want |= {"bulk/f%04d.txt" % i for i in range(1000, 1200)}
        want -= {"bulk/f%04d.txt" % i for i in range(1, 21)}
        self.until(lambda: (lambda s: s["indexed"] == len(want) and s["queued"] == 0 and s)(
            self.c.status()[self.c.sid]), "%d indexed, nothing queued" % len(want), timeout=300)
        self.assertEqual(self.all_paths("lemur"), want)  # no file missing, no ghost
        self.assertEqual(self.c.paths("number500"), [])
        self.assertEqual(self.c.paths("number5"), [])
        self.assertEqual(self.c.paths("number1199"), ["bulk/f1199.txt"])

    def test_a_folder_of_more_entries_than_a_page_moved_and_caught_up_is_indexed_exactly(self):
        """The worker walks a folder a page (1,000 entries) at a time and reads the index's paths a
        page at a time: a move of a folder of 1,300 files and 200 in a subfolder, then what was
        removed while the module was off, must leave every file once at its place, no ghost."""
        c = self.c
        want = set()
        for i in range(1300):
            c.put("big/f%04d.txt" % i, b"common quokka n%d" % i)
            want.add("big/f%04d.txt" % i)
        for i in range(200):
            c.put("big/sub/g%03d.txt" % i, b"common quokka m%d" % i)
            want.add("big/sub/g%03d.txt" % i)
        self.until(lambda: self.c.status()[self.c.sid]["queued"] == 0 or None, "the uploads indexed", timeout=300)
        r = c.call("POST", "move", {"from": "big", "to": "moved"})
        self.assertEqual(r.status, 200, r)
        want = {"moved/" + p[len("big/"):] for p in want}
        self.until(lambda: self.all_paths("quokka") == want or None, "every file under its new path", timeout=300)
        # removed while the module is off: its catch-up at load finds them gone in the index's pages
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/search/unload", token=self.admin).status, 200)
        self.assertEqual(c.call("DELETE", "files/moved/sub?recursive=true").status, 204)
        for i in range(0, 1300, 13):
            self.assertEqual(c.call("DELETE", "files/moved/f%04d.txt" % i).status, 204)
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/search/load", token=self.admin).status, 200)
        want = {"moved/f%04d.txt" % i for i in range(1300) if i % 13}
        self.until(lambda: self.all_paths("quokka") == want or None, "the removed files gone, no other", timeout=300)
        self.assertEqual(c.paths("m5"), [])
        self.assertEqual(c.paths("n1299"), ["moved/f1299.txt"])


def zip_bomb_docx():
    """A 3 MB DOCX whose word/document.xml inflates to 2 GiB: "okapi", 2 GiB of "bomb ", "gnu"."""
    out = tempfile.TemporaryFile()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"/>')
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/'
                    b'2006/main"><w:body><w:p><w:r><w:t>okapi ')
            chunk = b"bomb " * (1 << 18)
            for _ in range(1640):
                f.write(chunk)
            f.write(b"gnu</w:t></w:r></w:p></w:body></w:document>")
    out.seek(0)
    data = out.read()
    out.close()
    return data


def charset_mails():
    """{file name: (bytes, word of the body, word of the subject)}: real EML files made by Python's
    email package in other charsets than UTF-8 (the body and the RFC 2047 subject both in it)."""
    from email.header import Header
    from email.mime.text import MIMEText
    cases = [
        ("polish.eml", "iso-8859-2", "Zażółć gęślą jaźń: źdźbło", "źdźbło", "Sprawozdanie kwartalne", "sprawozdanie"),
        ("russian.eml", "koi8-r", "Мы видели медведя в тайге", "медведя", "Отчёт о поездке", "поездке"),
        ("cyrillic.eml", "windows-1251", "Кофе с кардамоном", "кардамоном", "Рецепт недели", "рецепт"),
        ("greek.eml", "iso-8859-7", "Η ακρόπολη τη νύχτα", "ακρόπολη", "Ταξίδι στην Αθήνα", "αθήνα"),
        ("french.eml", "windows-1252", "Le chef-d’œuvre coûte 5 € à Ürümqi", "chef", "Réunion budgétaire", "budgétaire"),
    ]
    out = {}
    for name, cs, body, word, subject, sword in cases:
        m = MIMEText(body + "\n", "plain", cs)
        m["Subject"] = Header(subject, cs)
        m["From"] = "sender@example.org"
        raw = m.as_bytes()
        assert body.encode(cs) in raw or b"base64" in raw or b"quoted-printable" in raw
        out[name] = (raw, word, sword)
    return out


class RankNewestTest(SearchBase):
    """A word in more files of a store than rank_newest: only the newest that many are ranked,
    the answer says so, and filters choose the files before the cut, not after it."""
    module_conf = {"search": "rank_newest: 5\n"}

    def test_a_common_word_ranks_the_newest_matches_and_filters_apply_before_the_cut(self):
        c = self.c
        for i in range(2):  # the oldest two, in a folder of their own
            c.put("old/o%d.txt" % i, b"common words, old file uniq%d" % i)
        self.expect("old", ["old", "old/o0.txt", "old/o1.txt"])
        for i in range(8):
            c.put("n%d.txt" % i, b"common words " * (i + 1) + b"uniq%d" % (i + 10))
        self.expect("uniq17", ["n7.txt"])
        self.until(lambda: self.c.status()[c.sid]["queued"] == 0 or None, "the queue to drain")
        body = c.search("common").json()
        self.assertEqual(sorted(h["path"] for h in body["hits"]), ["n%d.txt" % i for i in range(3, 8)])
        self.assertEqual(body.get("ranked_newest"), 5)
        self.assertEqual(body["hits"][0]["path"], "n7.txt")  # ranked: the most occurrences first
        self.assertEqual(self.paged("common", 2), [h["path"] for h in body["hits"]])  # the same five
        # filters first: the two old files are found although ten files match "common"
        body = c.search("common in:/old").json()
        self.assertEqual(sorted(h["path"] for h in body["hits"]), ["old/o0.txt", "old/o1.txt"])
        self.assertNotIn("ranked_newest", body)
        body = c.search("common uniq0").json()
        self.assertEqual([h["path"] for h in body["hits"]], ["old/o0.txt"])
        self.assertNotIn("ranked_newest", body)
        self.assertEqual(len(c.search("common -uniq17").json()["hits"]), 5)  # n2..n6 once n7 is excluded
        self.assertEqual(c.paths("common -uniq17"), ["n%d.txt" % i for i in range(2, 7)])


class CharsetMailTest(SearchBase):
    def test_mail_bodies_and_subjects_in_other_charsets_are_decoded_with_their_charset(self):
        mails = charset_mails()
        for name, (raw, _, _) in mails.items():
            self.c.put(name, raw)
        for name, (_, word, sword) in mails.items():
            self.expect(word, [name])
            self.expect(sword, [name])
        hit = self.c.search("медведя").json()["hits"][0]
        self.assertIn("медведя", str(hit["snippet"]))  # UTF-8 in the snippet, not Latin-1 mojibake


class FolderHitsTest(SearchBase):
    def test_a_folder_whose_name_matches_is_a_hit_and_follows_renames_and_deletes(self):
        self.assertIn(self.c.call("POST", "folders", {"path": "Holidays"}).status, (200, 201))
        r = self.c.call("POST", "folders", {"path": "Holidays/Patagonia 2026"})
        self.assertIn(r.status, (200, 201), r)
        self.expect("patagonia", ["Holidays/Patagonia 2026"])
        hit = self.c.search("patagonia").json()["hits"][0]
        self.assertEqual((hit["type"], hit["name"]), ("folder", "Patagonia 2026"))
        self.expect("patag*", ["Holidays/Patagonia 2026"])
        self.expect("type:folder holidays", ["Holidays"])
        self.c.put("Holidays/list.txt", b"tent, boots")
        self.expect("tent", ["Holidays/list.txt"])
        self.assertEqual(self.c.status()[self.c.sid]["indexed"], 1)  # status counts files, not folders
        r = self.c.call("POST", "move", {"from": "Holidays/Patagonia 2026", "to": "Holidays/Chile 2026"})
        self.assertIn(r.status, (200, 201), r)
        self.expect("chile", ["Holidays/Chile 2026"])
        self.expect("patagonia", [])
        r = self.c.call("DELETE", "files/Holidays?recursive=true")
        self.assertIn(r.status, (200, 204), r)
        self.expect("chile OR holidays", [])


class SharedSearchTest(SearchBase):
    modules = {"search": True, "trash": True, "sharing": True}

    def share(self, path, user="bob", permission="view"):
        r = self.srv.request("POST", "/api/v1/stores/%s/shares" % self.c.sid,
                             {"type": "user", "user": user, "path": path, "permission": permission}, token=self.c.tok)
        self.assertEqual(r.status, 201, r)
        return r.json()["id"]

    def test_a_grantee_finds_shared_files_loses_them_on_revoke_and_never_sees_unshared_ones(self):
        bob = Client(self.srv, self.srv.add_user("bob", admin_token=self.admin))
        self.c.put("Projects/plan.txt", b"the narwhal migration plan")
        self.c.put("Projects/deep/notes.txt", b"narwhal sightings log")
        self.c.put("Private/diary.txt", b"my narwhal dream")
        self.c.put("single.txt", b"a lone narwhal")
        self.c.put("other.txt", b"another narwhal")
        self.expect("narwhal", ["Private/diary.txt", "Projects/deep/notes.txt", "Projects/plan.txt", "other.txt",
                                "single.txt"])
        self.assertEqual(bob.paths("narwhal"), [])
        folder = self.share("Projects")
        single = self.share("single.txt")
        self.until(lambda: bob.paths("narwhal") == ["Projects/deep/notes.txt", "Projects/plan.txt", "single.txt"]
                   or None, "bob finds what alice shared with him")
        hits = {h["path"]: h for h in bob.search("narwhal").json()["hits"]}
        self.assertEqual(hits["Projects/plan.txt"]["share"], folder)
        self.assertEqual(hits["single.txt"]["share"], single)
        self.assertEqual(hits["Projects/plan.txt"]["store"], self.c.sid)
        self.assertIn("narwhal", hits["Projects/plan.txt"]["snippet"].lower() if isinstance(
            hits["Projects/plan.txt"]["snippet"], str) else str(hits["Projects/plan.txt"]["snippet"]).lower())
        self.assertEqual(bob.paths("dream OR diary OR another"), [])  # never the unshared ones
        self.assertEqual(bob.paths("narwhal", store=self.c.sid), ["Projects/deep/notes.txt", "Projects/plan.txt",
                                                                 "single.txt"])
        r = self.srv.request("DELETE", "/api/v1/shares/%s" % folder, token=self.c.tok)
        self.assertIn(r.status, (200, 204), r)
        self.assertEqual(bob.paths("narwhal"), ["single.txt"])  # revoked: gone at once
        r = self.srv.request("DELETE", "/api/v1/shares/%s" % single, token=self.c.tok)
        self.assertIn(r.status, (200, 204), r)
        self.assertEqual(bob.paths("narwhal"), [])
        # an upload-only drop box lists nothing, so nothing of it is found
        self.share("Projects", permission="upload")
        self.assertEqual(bob.paths("narwhal"), [])

    def test_shares_follow_the_sharing_module_through_unload_and_load(self):
        # search asks the sharing module's "sharing.grants" service at every query: without the
        # module nothing is shared (and the search still answers), with it back the share is too
        bob = Client(self.srv, self.srv.add_user("bob", admin_token=self.admin))
        self.c.put("Shared/ibis.txt", b"a scarlet ibis")
        self.share("Shared")
        self.until(lambda: bob.paths("ibis") == ["Shared/ibis.txt"] or None, "bob finds the shared file")
        r = self.srv.request("POST", "/api/v1/admin/modules/sharing/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(bob.search("ibis").status, 200)
        self.assertEqual(bob.paths("ibis"), [])
        r = self.srv.request("POST", "/api/v1/admin/modules/sharing/load", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(bob.paths("ibis"), ["Shared/ibis.txt"])



class ExtractorLimitsTest(SearchBase):
    """mbyte-extractd as shipped: a zip bomb inflates no further than the limits allow."""

    def test_a_zip_bomb_docx_is_stopped_by_the_limits(self):
        bomb = zip_bomb_docx()
        self.assertLess(len(bomb), 8 << 20)
        self.c.put("bomb.docx", bomb)
        self.c.put("after.docx", make_docx("the aardvark came after the bomb"))
        self.expect("aardvark", ["after.docx"])
        self.expect("okapi", ["bomb.docx"])  # the start of its text is indexed...
        self.assertEqual(self.c.paths("gnu"), [])  # ...2 GiB later, its end is not
        st = self.c.status()[self.c.sid]
        self.assertEqual((st["indexed"], st["failed"], st["queued"]), (2, 0, 0), st)
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)


def make_docx(text):
    """A minimal DOCX holding `text` (the parts a word processor needs to open it)."""
    out = tempfile.TemporaryFile()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>')
        z.writestr("word/document.xml", '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                   'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>%s</w:t></w:r></w:p></w:body>'
                   '</w:document>' % text)
    out.seek(0)
    data = out.read()
    out.close()
    return data


class BrokenExtractorTest(SearchBase):
    """An extractor that crashes or hangs (a stand-in for a decoder bug: mbyte-extractd's test
    switch MBYTE_EXTRACTD_TEST makes the worker for a file holding SEGFAULT-ME end on SIGSEGV and
    one for a file holding HANG-ME sleep): only that worker ends, the file is indexed by name with
    status failed and the reason, the files queued after it are indexed, and the server keeps
    answering."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mbyte-extractd-")
        self.srv = Server(modules=self.modules, module_conf={"search": "extract_seconds: 1\n"},
                          env={"MBYTE_EXTRACTD_TEST": self.dir})
        self.srv.start()
        self.admin = self.srv.login()
        self.c = Client(self.srv, self.srv.add_user("alice", admin_token=self.admin))

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_a_crash_or_a_hang_fails_only_that_file(self):
        c = self.c
        c.put("crash.html", b"<html><body><p>SEGFAULT-ME cassowary</p></body></html>")
        c.put("hang.html", b"<html><body><p>HANG-ME dugong</p></body></html>")
        c.put("after.html", b"<html><body><p>the toucan came after</p></body></html>")
        c.put("after.docx", make_docx("the narwhal came after"))
        c.put("after.txt", b"the pangolin came after")
        # while the extractor hangs, the server answers
        self.until(lambda: c.status()[c.sid]["failed"] >= 1 or None, "the crash recorded")
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        self.expect("toucan", ["after.html"])
        self.expect("narwhal", ["after.docx"])
        self.expect("pangolin", ["after.txt"])
        st = self.until(lambda: (lambda s: s["queued"] == 0 and s["indexed"] == 5 and s)(c.status()[c.sid]),
                        "five indexed, nothing queued")
        self.assertEqual(st["failed"], 2, st)
        reasons = {f["path"]: f["reason"] for f in st["failures"]}
        self.assertIn("extractor crashed (signal 11", reasons["crash.html"])
        self.assertIn("extraction took longer than 6 s", reasons["hang.html"])
        self.assertEqual(c.paths("crash"), ["crash.html"])  # names are always indexed
        self.assertEqual(c.paths("hang"), ["hang.html"])
        self.assertEqual(c.paths("cassowary OR dugong"), [])
        self.assertEqual(self.srv.request("GET", "/api/v1/health").status, 200)
        # unloading while an extractor hangs kills it: the unload does not wait the 605 s of its limit
        with open(os.path.join(self.srv.confdir, "search.yaml"), "w") as f:
            f.write("extract_seconds: 600\n")
        r = self.srv.request("POST", "/api/v1/admin/config/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        c.put("later.html", b"<p>HANG-ME again</p>")
        pid = int(self.until(lambda: self.hangs()[1:2], "the hanging extractor to start")[0])
        r = self.srv.request("POST", "/api/v1/admin/modules/search/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.until(lambda: not alive(pid) or None, "the hanging extractor to be gone")

    def hangs(self):
        """The pids of the hanging extractors so far (each writes itself down)."""
        try:
            with open(os.path.join(self.dir, "hangs")) as f:
                return f.read().split()
        except FileNotFoundError:
            return []


def alive(pid):
    """True while pid runs (a zombie waiting for its reaper does not count)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/search — the search module against ripgrep over the same text (issue 17).

1. A corpus of --docs documents (100,000 by default) from text Debian ships: package documentation
   under /usr/share/doc and man pages under /usr/share/man (gzip'd ones unpacked, roff requests
   dropped), cut into pieces of about 2 KiB when there are fewer files than documents wanted.
   The same text goes into a directory for ripgrep and through the API into a fresh mbyted.
2. Indexing: documents per second from the first upload until status says every document is
   indexed and nothing is queued; the index size (<data>/m/search) as a ratio of the text size.
3. --queries mixed queries (one word, two words, a phrase, a prefix; rare and common words taken
   from the corpus), each run against MByte (GET /api/v1/search, one keep-alive connection) and
   ripgrep (rg -l over the directory, the equivalent expression), alternating which goes first.
   p50 and p99 of each, the ratio of ripgrep's p50 to MByte's, and how many answers ranked only
   the newest matches (a word in more than rank_newest documents, docs/search.md); --rounds times (5 by default)
   over the one index, a fresh query set each round, then the median and worst of the rounds
   (the five consecutive runs a goal is judged on; indexing 100,000 documents once takes minutes).
   ripgrep takes about a second a query over 100,000 files, so it runs the first --rg-queries (100)
   of each round, every kind of query in turn; MByte runs them all.

Usage: bench/search/run [--docs N] [--queries N] [--seed S] [--rounds N] [--rg-queries N]
Run only at a tiny size on a busy machine (--docs 500 --queries 50): numbers then are noise."""
import argparse
import collections
import gzip
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import Server  # noqa: E402
from bench import host  # noqa: E402

WORD = re.compile(r"[a-z]{4,14}")


def source_texts():
    for root in ("/usr/share/doc", "/usr/share/man"):
        for d, _, files in os.walk(root):
            for f in sorted(files):
                p = os.path.join(d, f)
                try:
                    if f.endswith(".gz"):
                        with gzip.open(p, "rb") as g:
                            raw = g.read(1 << 20)
                    elif os.path.islink(p) or os.path.getsize(p) > (1 << 20):
                        continue
                    else:
                        with open(p, "rb") as g:
                            raw = g.read()
                except (OSError, EOFError, gzip.BadGzipFile):
                    continue
                if b"\0" in raw[:4096]:
                    continue
                text = raw.decode("utf-8", "replace")
                if "/man/" in p:
                    text = "\n".join(l for l in text.split("\n") if not l.startswith((".", "'\\\"")))
                if len(text) > 200:
                    yield text


def build_corpus(n, piece=2048):
    texts = []
    for t in source_texts():  # stop reading once there is a document for each one wanted
        texts.append(t)
        if len(texts) >= n:
            break
    if not texts:
        sys.exit("no text under /usr/share/doc or /usr/share/man")
    docs = []
    if len(texts) >= n:
        docs = texts[:n]
    else:
        for t in texts:
            for i in range(0, len(t), piece):
                docs.append(t[i:i + piece])
        while len(docs) < n:  # a small system: reuse pieces under new names
            docs += docs[:n - len(docs)]
        docs = docs[:n]
    return docs


def upload_all(srv, tok, sid, docs, threads=4):
    def work(k):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        h = {"Authorization": "Bearer " + tok, "Content-Type": "text/plain"}
        for i in range(k, len(docs), threads):
            c.request("PUT", "/api/v1/stores/%d/files/corpus/%03d/d%06d.txt?parents=true" % (sid, i // 1000, i),
                      body=docs[i].encode(), headers=h)
            r = c.getresponse()
            r.read()
            if r.status not in (200, 201):
                raise SystemExit("upload %d answered %d" % (i, r.status))
        c.close()
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def make_queries(docs, n, rnd):
    counts = collections.Counter()
    for d in docs[:5000]:
        counts.update(set(WORD.findall(d.lower())))
    common = [w for w, c in counts.most_common(300)]
    rare = [w for w, c in counts.items() if c == 2][:2000] or common
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            w = rnd.choice(rare if i % 8 else common)
            out.append(("word", w, [w]))
        elif kind == 1:
            a, b = rnd.choice(common), rnd.choice(rare)
            out.append(("two", "%s %s" % (a, b), [a, b]))
        elif kind == 2:
            d = WORD.findall(rnd.choice(docs).lower())
            j = rnd.randrange(max(1, len(d) - 1)) if len(d) > 1 else 0
            ph = " ".join(d[j:j + 2]) if len(d) > 1 else rnd.choice(common)
            out.append(("phrase", '"%s"' % ph, [ph]))
        else:
            w = rnd.choice(common)[:4]
            out.append(("prefix", w + "*", [w]))
    return out


def rg_run(kind, terms, corpus):
    """ripgrep's equivalent: the files holding every term (whole words; a phrase as fixed text)."""
    if kind == "prefix":
        cmd = ["rg", "-l", "-i", "-e", r"\b" + re.escape(terms[0]) + r"\w*", corpus]
    elif kind == "phrase":
        cmd = ["rg", "-l", "-i", "-F", terms[0], corpus]
    else:
        cmd = ["rg", "-l", "-i", "-w", "-F", terms[0], corpus]
    files = set(subprocess.run(cmd, capture_output=True, text=True).stdout.split())
    for t in terms[1:]:
        if not files:
            break
        # a pass over the corpus per further word, intersected (a list of matching files as
        # arguments overflows the command line when the first word is common)
        files &= set(subprocess.run(["rg", "-l", "-i", "-w", "-F", t, corpus], capture_output=True,
                                    text=True).stdout.split())
    return len(files)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--rg-queries", type=int, default=100,
                    help="ripgrep runs the first N queries of each round (every kind in turn): at about a second "
                         "a query over 100,000 files, all 1,000 would take 20 minutes a round")
    ap.add_argument("--rounds", type=int, default=5,
                    help="query rounds over the one index (fresh queries each): the five runs of a goal")
    a = ap.parse_args()
    if not shutil.which("rg"):
        sys.exit("ripgrep is missing: bash bench/search/setup.sh")
    print("# host:", host())
    rnd = random.Random(a.seed)
    docs = build_corpus(a.docs)
    text_bytes = sum(len(d.encode()) for d in docs)
    work = tempfile.mkdtemp(prefix="bench-search-")
    corpus = os.path.join(work, "corpus")
    for i, d in enumerate(docs):
        folder = os.path.join(corpus, "%03d" % (i // 1000))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "d%06d.txt" % i), "w") as f:
            f.write(d)
    print("# corpus: %d documents, %.1f MiB of text" % (len(docs), text_bytes / 2**20))
    srv = Server(modules={"search": True})
    srv.start()
    try:
        tok = srv.login()
        sid = json.loads(srv.request("GET", "/api/v1/stores", token=tok).body)[0]["id"]
        t0 = time.perf_counter()
        upload_all(srv, tok, sid, docs)
        up = time.perf_counter() - t0
        while True:
            st = json.loads(srv.request("GET", "/api/v1/search/status", token=tok).body)["stores"][0]
            if st["indexed"] >= len(docs) and st["queued"] == 0:
                break
            time.sleep(0.2)
        idx = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(srv.data, "m", "search", f))
                   for f in os.listdir(os.path.join(srv.data, "m", "search")))
        print("indexing: uploads took %.1f s; every document indexed after %.1f s: %.0f documents/s" %
              (up, idx, len(docs) / idx))
        print("index size: %.1f MiB, %.2fx the text" % (size / 2**20, size / text_bytes))
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        h = {"Authorization": "Bearer " + tok}
        print("%-6s %9s %9s %9s %9s %8s %6s" % ("round", "MByte p50", "MByte p99", "rg p50", "rg p99", "rg/MByte",
                                                "ranked"))
        rows = []
        by_kind = collections.defaultdict(list)
        for rnum in range(1, a.rounds + 1):
            queries = make_queries(docs, a.queries, rnd)
            lat = {"mbyte": [], "rg": []}
            cut = 0  # answers that ranked only the newest matches (the module's rank_newest)
            for i, (kind, q, terms) in enumerate(queries):
                order = ("mbyte", "rg") if (i + rnum) % 2 == 0 else ("rg", "mbyte")
                for who in order:
                    if who == "rg" and i >= a.rg_queries:
                        continue
                    t = time.perf_counter()
                    if who == "mbyte":
                        c.request("GET", "/api/v1/search?limit=20&q=" + urllib.parse.quote(q), headers=h)
                        r = c.getresponse()
                        body = r.read()
                        if r.status != 200:
                            sys.exit("query %r answered %d" % (q, r.status))
                        cut += b'"ranked_newest"' in body
                    else:
                        rg_run(kind, terms, corpus)
                    lat[who].append(time.perf_counter() - t)
                    if who == "mbyte":
                        by_kind[kind].append(lat[who][-1])
            m50, m99 = pct(lat["mbyte"], 50) * 1000, pct(lat["mbyte"], 99) * 1000
            r50, r99 = pct(lat["rg"], 50) * 1000, pct(lat["rg"], 99) * 1000
            ratio = r50 / m50 if m50 else float("inf")
            rows.append((m50, m99, ratio))
            print("%-6d %9.2f %9.2f %9.2f %9.2f %7.1fx %6s" % (rnum, m50, m99, r50, r99, ratio,
                                                             "%d cut" % cut if cut else "all"), flush=True)
        c.close()
        for kind, xs in by_kind.items():
            print("  %-7s p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  (%d queries, every round)" %
                  (kind, pct(xs, 50) * 1000, pct(xs, 90) * 1000, pct(xs, 99) * 1000, len(xs)))
        p99s = sorted(x[1] for x in rows)
        ratios = sorted(x[2] for x in rows)
        print("MByte p99: median %.2f ms, worst %.2f ms (goal < 10 ms); ripgrep/MByte p50: median %.1fx, "
              "lowest %.1fx (goal >= 100x)" % (p99s[len(p99s) // 2], p99s[-1], ratios[len(ratios) // 2], ratios[0]))
        srv.stop()
    finally:
        srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

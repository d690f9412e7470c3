#!/usr/bin/env python3
"""A local stand-in for Discord's HTTP API v10, for tests only (Discord cannot be reached from
here). It follows Discord's published API for exactly the routes the discord module uses, with
Discord's behaviour where it matters:

  GET  /api/v10/channels/{id}                                  channel object (404 code 10003)
  GET  /api/v10/channels/{id}/messages?after|before&limit=1..100   newest first, like Discord
  GET  /api/v10/channels/{id}/messages/{message}               one message, fresh attachment URLs
  POST /api/v10/channels/{id}/messages                         Create Message
  GET  /api/v10/guilds/{id}/threads/active                     {"threads","members"}
  GET  /api/v10/channels/{id}/threads/archived/public?before&limit   {"threads","members","has_more"}
  POST /api/v10/webhooks/{id}/{token}                          Execute Webhook and interaction
                                                               follow-ups (204, or the message with ?wait=true)
  GET  /attachments/{channel}/{attachment}/{name}?ex=&is=&hm=  the CDN: signed URLs that expire
                                                               (404 once ex has passed or hm is wrong)

Rate limits as Discord documents them: every API answer has X-RateLimit-Limit, -Remaining,
-Reset, -Reset-After and -Bucket for its route (per method, path shape and top-level id); a
request over a bucket gets 429 {"message","retry_after","global":false} with X-RateLimit-Scope:
user; more than `global_limit` requests in any second get 429 with "global": true,
X-RateLimit-Global and X-RateLimit-Scope: global. `violations` counts requests that came while a
limit the client had been told about was still in force (a client that honours the headers
causes none). `burst(n, retry_after, global_)` answers the next n API requests with 429, as
Discord does under load. The bot token is checked (401 otherwise). The CDN is not rate
limited (it is another host at Discord).

Run alone: python3 fakediscord.py (on a free port, which it prints; a channel with a few messages)."""
import hashlib
import hmac
import json
import os
import re
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DISCORD_EPOCH_MS = 1420070400000


def snowflake(ms, seq):
    return str(((ms - DISCORD_EPOCH_MS) << 22) | (seq & 0x3FFFFF))


def iso(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


class FakeDiscord:
    def __init__(self, token="fake-bot-token", bucket_limit=5, bucket_window=1.0, global_limit=50,
                 attachment_ttl=3600, delay=0.0):
        self.token = token
        self.bucket_limit, self.bucket_window, self.global_limit = bucket_limit, bucket_window, global_limit
        self.attachment_ttl = attachment_ttl
        self.delay = delay  # seconds added to every API answer (to kill a run in its middle)
        self.gate = threading.Event()  # API requests wait while it is clear (a run held in its middle)
        self.gate.set()
        self.secret = os.urandom(32)
        self.lock = threading.Lock()
        self.channels = {}
        self.messages = {}  # channel id -> {id: message}
        self.blobs = {}  # attachment id -> bytes
        self.created = []  # (channel, body) of Create Message
        self.webhook_posts = []  # (webhook id, token, body) of Execute Webhook / follow-ups
        self.buckets = {}  # bucket key -> [window start, count, blocked_until]
        self.global_times = []
        self.global_blocked_until = 0.0
        self.forced = []  # [(retry_after, global)] for the next API requests
        self.violations = 0
        self.served_429 = 0
        self.expired_refusals = 0
        self.single_reads = 0
        self.message_pages = 0
        self.list_urls_expired = False
        self.seq = 0
        self.clock_ms = int(time.time() * 1000) - 10 * 86400 * 1000  # messages start ten days ago
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                fake.handle(self, "GET")

            def do_POST(self):
                fake.handle(self, "POST")

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        self.api_base = self.base + "/api/v10"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the world ----
    def add_channel(self, cid, guild="900000000000000001", name="general", parent=None, archived=False):
        ch = {"id": cid, "type": 0 if parent is None else 11, "guild_id": guild, "name": name}
        if parent is not None:
            ch["parent_id"] = parent
            ch["thread_metadata"] = {"archived": archived, "archive_timestamp": iso(self.clock_ms),
                                     "auto_archive_duration": 1440, "locked": False}
        with self.lock:
            self.channels[cid] = ch
            self.messages.setdefault(cid, {})
        return ch

    def add_message(self, cid, content, attachments=(), author=("100000000000000001", "alice"), reply_to=None,
                    step_ms=300000):
        """A message `step_ms` after the previous one (5 minutes: 1,000 span three and a half days).
        attachments: [(file name, bytes, content type)]. Returns its id."""
        with self.lock:
            self.clock_ms += step_ms
            self.seq += 1
            mid = snowflake(self.clock_ms, self.seq)
            atts = []
            for i, (name, data, ctype) in enumerate(attachments):
                self.seq += 1
                aid = snowflake(self.clock_ms, self.seq)
                self.blobs[aid] = data
                atts.append({"id": aid, "filename": name, "size": len(data), "content_type": ctype})
            m = {"id": mid, "channel_id": cid, "type": 19 if reply_to else 0, "content": content,
                 "author": {"id": author[0], "username": author[1], "global_name": author[1].title(),
                            "discriminator": "0"},
                 "timestamp": iso(self.clock_ms), "edited_timestamp": None, "attachments": atts, "embeds": [],
                 "mentions": [], "pinned": False, "tts": False}
            if reply_to:
                m["message_reference"] = {"message_id": reply_to, "channel_id": cid}
            self.messages[cid][mid] = m
            return mid

    def edit_message(self, cid, mid, content):
        with self.lock:
            m = self.messages[cid][mid]
            m["content"] = content
            m["edited_timestamp"] = iso(int(time.time() * 1000))

    def delete_message(self, cid, mid):
        with self.lock:
            del self.messages[cid][mid]

    def burst(self, n, retry_after=0.3, global_=False):
        with self.lock:
            self.forced += [(retry_after, global_)] * n

    # ---- signed CDN URLs ----
    def _sign(self, path, ex, is_):
        return hmac.new(self.secret, ("%s|%x|%x" % (path, ex, is_)).encode(), hashlib.sha256).hexdigest()

    def _url(self, cid, a, expired=False):
        now = int(time.time())
        ex = now - 60 if expired else now + self.attachment_ttl
        path = "/attachments/%s/%s/%s" % (cid, a["id"], urllib.parse.quote(a["filename"]))
        return "%s%s?ex=%x&is=%x&hm=%s&" % (self.base, path, ex, now, self._sign(path, ex, now))

    def _public(self, m, expired=False):
        out = json.loads(json.dumps(m))
        for a in out["attachments"]:
            a["url"] = self._url(m["channel_id"], a, expired)
            a["proxy_url"] = a["url"]
        return out

    # ---- HTTP ----
    def _send(self, h, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if body is not None:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method, path):
        segs = path.strip("/").split("/")[2:]  # after api/v10
        top, shape = "", []
        for i, s in enumerate(segs):
            is_id = s.isdigit() or (i == 2 and segs[0] == "webhooks")
            if is_id and (not top or (i == 2 and segs[0] == "webhooks")):
                top = (top + "/" + s) if top else s
            shape.append("{id}" if is_id else s)
        b = hashlib.sha1(("%s /%s" % (method, "/".join(shape))).encode()).hexdigest()[:16]
        return b, b + ":" + top

    def _limits(self, method, path):
        """The rate-limit decision for an API request: (429 body and headers) or (None, headers)."""
        now = time.monotonic()
        bucket, key = self._route(method, path)
        with self.lock:
            if self.forced:
                ra, glob = self.forced.pop(0)
                self.served_429 += 1
                if glob:
                    self.global_blocked_until = now + ra
                    return ({"message": "You are being rate limited.", "retry_after": ra, "global": True},
                            {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global", "Retry-After": str(ra)})
                st = self.buckets.setdefault(key, [now, 0, 0.0])
                st[2] = now + ra
                return ({"message": "You are being rate limited.", "retry_after": ra, "global": False},
                        {"X-RateLimit-Scope": "user", "X-RateLimit-Bucket": bucket, "X-RateLimit-Limit":
                         str(self.bucket_limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "%.3f" % ra,
                         "X-RateLimit-Reset": "%.3f" % (time.time() + ra), "Retry-After": str(ra)})
            self.global_times = [t for t in self.global_times if t > now - 1.0]
            if now < self.global_blocked_until or len(self.global_times) >= self.global_limit:
                self.violations += 1
                self.served_429 += 1
                ra = round(max(self.global_blocked_until - now, self.global_times[0] + 1.0 - now
                               if self.global_times else 0.1), 3)
                self.global_blocked_until = max(self.global_blocked_until, now + ra)
                return ({"message": "You are being rate limited.", "retry_after": ra, "global": True},
                        {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"})
            self.global_times.append(now)
            st = self.buckets.setdefault(key, [now, 0, 0.0])
            if now >= st[0] + self.bucket_window and now >= st[2]:
                st[0], st[1] = now, 0
            if now < st[2] or st[1] >= self.bucket_limit:
                self.violations += 1
                self.served_429 += 1
                ra = round(max(st[2], st[0] + self.bucket_window) - now, 3)
                return ({"message": "You are being rate limited.", "retry_after": ra, "global": False},
                        {"X-RateLimit-Scope": "user", "X-RateLimit-Bucket": bucket, "X-RateLimit-Limit":
                         str(self.bucket_limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "%.3f" % ra,
                         "X-RateLimit-Reset": "%.3f" % (time.time() + ra)})
            st[1] += 1
            after = max(st[0] + self.bucket_window - now, 0)
            return None, {"X-RateLimit-Limit": str(self.bucket_limit),
                          "X-RateLimit-Remaining": str(self.bucket_limit - st[1]),
                          "X-RateLimit-Reset": "%.3f" % (time.time() + after),
                          "X-RateLimit-Reset-After": "%.3f" % after, "X-RateLimit-Bucket": bucket}

    def handle(self, h, method):
        u = urllib.parse.urlsplit(h.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        if u.path.startswith("/attachments/"):
            return self._cdn(h, u.path, q)
        if not u.path.startswith("/api/v10/"):
            return self._send(h, 404, {"message": "404: Not Found", "code": 0})
        if self.delay:
            time.sleep(self.delay)
        self.gate.wait(120)
        is_webhook = u.path.startswith("/api/v10/webhooks/")
        if not is_webhook and h.headers.get("Authorization") != "Bot " + self.token:
            return self._send(h, 401, {"message": "401: Unauthorized", "code": 0})
        limited, headers = self._limits(method, u.path)
        if limited:
            return self._send(h, 429, limited, headers)
        status, body = self._api(method, u.path, q, raw)
        self._send(h, status, body, headers)

    def _api(self, method, path, q, raw):
        m = re.fullmatch(r"/api/v10/channels/(\d+)", path)
        if m and method == "GET":
            ch = self.channels.get(m.group(1))
            return (200, ch) if ch else (404, {"message": "Unknown Channel", "code": 10003})
        m = re.fullmatch(r"/api/v10/channels/(\d+)/messages", path)
        if m and method == "GET":
            return self._list(m.group(1), q)
        if m and method == "POST":
            if m.group(1) not in self.channels:
                return 404, {"message": "Unknown Channel", "code": 10003}
            body = json.loads(raw)
            with self.lock:
                self.created.append((m.group(1), body))
            return 200, {"id": snowflake(int(time.time() * 1000), len(self.created)), "channel_id": m.group(1),
                         "content": body.get("content", ""), "author": {"id": "1", "username": "bot", "bot": True}}
        m = re.fullmatch(r"/api/v10/channels/(\d+)/messages/(\d+)", path)
        if m and method == "GET":
            with self.lock:
                msg = self.messages.get(m.group(1), {}).get(m.group(2))
                self.single_reads += 1
                return (200, self._public(msg)) if msg else (404, {"message": "Unknown Message", "code": 10008})
        m = re.fullmatch(r"/api/v10/guilds/(\d+)/threads/active", path)
        if m and method == "GET":
            with self.lock:
                th = [c for c in self.channels.values() if c.get("guild_id") == m.group(1) and "parent_id" in c
                      and not c["thread_metadata"]["archived"]]
            return 200, {"threads": th, "members": []}
        m = re.fullmatch(r"/api/v10/channels/(\d+)/threads/archived/public", path)
        if m and method == "GET":
            limit = max(2, min(int(q.get("limit", 50)), 100))
            with self.lock:
                th = sorted((c for c in self.channels.values() if c.get("parent_id") == m.group(1)
                             and c["thread_metadata"]["archived"]),
                            key=lambda c: c["thread_metadata"]["archive_timestamp"], reverse=True)
            if "before" in q:
                th = [c for c in th if c["thread_metadata"]["archive_timestamp"] < q["before"]]
            return 200, {"threads": th[:limit], "members": [], "has_more": len(th) > limit}
        m = re.fullmatch(r"/api/v10/webhooks/(\d+)/([A-Za-z0-9_.-]+)", path)
        if m and method == "POST":
            body = json.loads(raw)
            with self.lock:
                self.webhook_posts.append((m.group(1), m.group(2), body))
            if q.get("wait") == "true":
                return 200, {"id": snowflake(int(time.time() * 1000), 1), "content": body.get("content")}
            return 204, None
        return 404, {"message": "404: Not Found", "code": 0}

    def _list(self, cid, q):
        with self.lock:
            if cid not in self.channels:
                return 404, {"message": "Unknown Channel", "code": 10003}
            self.message_pages += 1
            limit = int(q.get("limit", 50))
            if not 1 <= limit <= 100:
                return 400, {"message": "Invalid Form Body", "code": 50035}
            ids = sorted(self.messages[cid], key=int)
            if "after" in q:
                sel = [i for i in ids if int(i) > int(q["after"])][:limit]
            elif "before" in q:
                sel = [i for i in ids if int(i) < int(q["before"])][-limit:]
            else:
                sel = ids[-limit:]
            # Discord answers newest first.
            return 200, [self._public(self.messages[cid][i], self.list_urls_expired) for i in reversed(sel)]

    def _cdn(self, h, path, q):
        try:
            ex, is_ = int(q["ex"], 16), int(q["is"], 16)
            good = hmac.compare_digest(self._sign(path, ex, is_), q["hm"])
        except (KeyError, ValueError):
            good, ex = False, 0
        if not good or ex < int(time.time()):
            with self.lock:
                self.expired_refusals += 1
            data = b"This content is no longer available."
            h.send_response(404)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        aid = path.split("/")[3]
        data = self.blobs.get(aid)
        if data is None:
            return self._send(h, 404, {"message": "404: Not Found", "code": 0})
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


if __name__ == "__main__":
    fake = FakeDiscord()
    fake.add_channel("800000000000000001")
    for i in range(5):
        fake.add_message("800000000000000001", "hello %d" % i)
    print("fake Discord API at %s (token %s)" % (fake.api_base, fake.token), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.close()

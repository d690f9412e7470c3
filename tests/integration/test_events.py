"""The event stream (GET /api/v1/events, docs/api.md): its bytes are well-formed server-sent
events from the first byte on, so a browser's EventSource reads every event's type, the first
one after connecting included. Notifications are marked read one by one or all at once; the
count is kept across a restart and every open stream hears the new one."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTest, main  # noqa: E402


class EventStream(ServerTest):
    modules = {"hello": True}

    def test_the_stream_is_clean_text_and_the_first_event_after_connecting_has_its_type(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=60)
        s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % self.admin.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertIn(b"text/event-stream", head)
        r = self.srv.request("POST", "/api/v1/hello/tasks", {"steps": 1, "step_ms": 0}, token=self.admin)
        self.assertEqual(r.status, 202, r)
        while b"event: task" not in body:
            body += s.recv(4096)
        s.close()
        # The chunked framing aside, the event text holds no NUL and the type line starts an event.
        text = b"".join(part for i, part in enumerate(body.split(b"\r\n")) if i % 2 == 1)
        self.assertNotIn(b"\x00", text)
        self.assertTrue(text.startswith(b": connected\nretry: 3000\n\n"), text[:60])
        self.assertRegex(text.decode(), r"\n\nevent: task\n")


class MarkRead(ServerTest):
    modules = {"hello": True}

    def notifications(self, token=None):
        r = self.srv.request("GET", "/api/v1/notifications", token=token or self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def unread(self, token=None):
        r = self.srv.request("GET", "/api/v1/notifications/unread", token=token or self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()["unread"]

    def test_mark_one_and_all_read_durably_and_every_stream_hears_the_count(self):
        for _ in range(3):  # each finished task raises a notification
            r = self.srv.request("POST", "/api/v1/hello/tasks", {"steps": 1, "step_ms": 0}, token=self.admin)
            self.assertEqual(r.status, 202, r)
        deadline = time.time() + 30
        while len(self.notifications()) < 3:
            self.assertLess(time.time(), deadline, self.notifications())
            time.sleep(0.05)
        ns = self.notifications()
        self.assertEqual([n["read"] for n in ns], [False] * 3)
        self.assertEqual(self.unread(), 3)
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=60)
        s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % self.admin.encode())
        body = b""
        while b": connected" not in body:
            body += s.recv(4096)
        one = ns[1]["id"]
        r = self.srv.request("POST", "/api/v1/notifications/%s/read" % one, token=self.admin)
        self.assertEqual((r.status, r.json()), (200, {"unread": 2}), r)
        while b"event: unread" not in body:
            body += s.recv(4096)
        frame = body[body.index(b"event: unread"):].split(b"\n")[1]
        self.assertEqual(json.loads(frame[len(b"data: "):]), {"unread": 2})
        s.close()
        self.assertEqual([n["id"] for n in self.notifications() if n["read"]], [one])
        # again: nothing changes; an unknown, a malformed, another user's: 404
        r = self.srv.request("POST", "/api/v1/notifications/%s/read" % one, token=self.admin)
        self.assertEqual(r.json(), {"unread": 2})
        bob = self.srv.add_user("bob", admin_token=self.admin)
        self.assertProblem(self.srv.request("POST", "/api/v1/notifications/%s/read" % ns[0]["id"], token=bob), 404)
        self.assertProblem(self.srv.request("POST", "/api/v1/notifications/ffffffffffffffff/read", token=self.admin), 404)
        self.assertProblem(self.srv.request("POST", "/api/v1/notifications/nope/read", token=self.admin), 404)
        self.assertProblem(self.srv.request("POST", "/api/v1/notifications/read"), 401)
        self.assertEqual(self.unread(), 2)
        # all, then a restart: still read
        r = self.srv.request("POST", "/api/v1/notifications/read", token=self.admin)
        self.assertEqual((r.status, r.json()), (200, {"unread": 0}), r)
        self.srv.stop()
        self.srv.start()
        admin = self.srv.login()
        self.assertEqual(self.unread(admin), 0)
        self.assertEqual([n["read"] for n in self.notifications(admin)], [True] * 3)


if __name__ == "__main__":
    main()

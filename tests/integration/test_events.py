"""The event stream (GET /api/v1/events, docs/api.md): its bytes are well-formed server-sent
events from the first byte on, so a browser's EventSource reads every event's type, the first
one after connecting included."""
import os
import socket
import sys

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


if __name__ == "__main__":
    main()

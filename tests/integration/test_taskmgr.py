"""taskmgr: stores created in the background — progress through the tasks API and the
event stream, rollback with a reason, a kill -9 mid-provisioning, limits and bad input."""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, ServerTest, main  # noqa: E402
from storeutil import wait_task, stores, listing  # noqa: E402

TEMPLATE = "folders:\n  - Documents\n  - Photos/Holidays\nsettings:\n  trash_retention_days: 7\n"


class Provisioning(ServerTest):
    modules = {"taskmgr": True, "storeconfig": True}
    module_conf = {"store-template": TEMPLATE, "taskmgr": "max_stores_per_user: 4\n"}

    def test_three_stores_at_once_are_followed_through_tasks_and_events_to_done(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        frames, ready = [], threading.Event()

        def listen():
            c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=60)
            c.request("GET", "/api/v1/events", headers={"Authorization": "Bearer " + bob})
            r = c.getresponse()
            ready.set()
            event, notes, done = None, 0, 0
            try:
                while notes < 3 or done < 3:
                    line = r.fp.readline().decode()
                    if not line:
                        break
                    if line.startswith("event: "):
                        event = line[7:].strip()
                    elif line.startswith("data: "):
                        frames.append((event, json.loads(line[6:])))
                        notes += event == "notification" and frames[-1][1].get("title") == "Store created"
                        done += event == "task" and frames[-1][1]["state"] == "done"
            except OSError:
                pass
            finally:
                c.close()

        th = threading.Thread(target=listen)
        th.start()
        self.assertTrue(ready.wait(60))
        made = []
        for name in ("Work", "Music", "Archive"):
            r = self.srv.request("POST", "/api/v1/stores", {"name": name}, token=bob)
            self.assertEqual(r.status, 202, r)
            made.append(r.json())
        for m in made:
            t = wait_task(self, self.srv, m["task"], bob)
            self.assertEqual(t["state"], "done", t)
            self.assertEqual(t["progress"], 100)
        th.join(60)
        self.assertFalse(th.is_alive(), "the event stream never brought the three tasks' ends")
        names = {s["name"]: s for s in stores(self.srv, bob)}
        self.assertEqual(set(names), {"Home", "Work", "Music", "Archive"})
        for m in made:
            paths = sorted(e["relpath"] for e in listing(self.srv, bob, m["store"]))
            self.assertEqual(paths, ["Documents", "Photos", "Photos/Holidays"])
            cfg = self.srv.request("GET", "/api/v1/stores/%d/config" % m["store"], token=bob).json()
            self.assertEqual(cfg["settings"]["trash_retention_days"], 7)
            task_frames = [d for e, d in frames if e == "task" and d["id"] == m["task"]]
            self.assertEqual(task_frames[-1]["state"], "done", task_frames)
            self.assertTrue(any(0 < d["progress"] < 100 for d in task_frames), task_frames)
        self.assertEqual(sum(1 for e, d in frames if e == "notification" and d["title"] == "Store created"), 3)

    def test_bad_input_and_limits_are_refused_with_problems(self):
        bob = self.srv.add_user("bob", admin_token=self.admin)
        for body in ({}, {"name": 5}, {"name": ""}, {"name": "a/b"}, {"name": ".."}, {"name": "x" * 300}):
            self.assertProblem(self.srv.request("POST", "/api/v1/stores", body, token=bob), 400)
        self.assertProblem(self.srv.request("POST", "/api/v1/stores", b"{", token=bob,
                                            headers={"Content-Type": "application/json"}), 400)
        self.assertEqual(self.srv.request("POST", "/api/v1/stores", {"name": "x"}).status, 401)
        tasks = [self.srv.request("POST", "/api/v1/stores", {"name": "S%d" % i}, token=bob) for i in range(3)]
        for r in tasks:
            self.assertEqual(r.status, 202, r)
            wait_task(self, self.srv, r.json()["task"], bob)
        self.assertProblem(self.srv.request("POST", "/api/v1/stores", {"name": "S4"}, token=bob), 409,
                           "max_stores_per_user")
        self.assertEqual(len(stores(self.srv, bob)), 4)


class Failure(ServerTest):
    modules = {"taskmgr": True}
    module_conf = {"taskmgr": "template: missing-template.yaml\n"}

    def test_a_missing_template_rolls_the_store_back_and_reports_why(self):
        r = self.srv.request("POST", "/api/v1/stores", {"name": "Doomed"}, token=self.admin)
        self.assertEqual(r.status, 202, r)
        sid = r.json()["store"]
        t = wait_task(self, self.srv, r.json()["task"], self.admin)
        self.assertEqual(t["state"], "failed", t)
        self.assertIn("missing-template.yaml", t["error"])
        self.assertIn("rolled back", t["error"])
        self.assertNotIn("Doomed", [s["name"] for s in stores(self.srv, self.admin)])
        self.assertEqual(self.srv.request("GET", "/api/v1/stores/%d/list" % sid, token=self.admin).status, 404)
        notes = self.srv.request("GET", "/api/v1/notifications", token=self.admin).json()
        self.assertTrue(any(n["kind"] == "error" and "Doomed" in n["body"] for n in notes), notes)


class Crash(ServerTest):
    modules = {"taskmgr": True}
    module_conf = {"store-template": "folders: [A, B, C, D]\n", "taskmgr": "step_delay_ms: 300\n"}

    def test_kill_during_provisioning_leaves_a_complete_store_or_none(self):
        r = self.srv.request("POST", "/api/v1/stores", {"name": "Half"}, token=self.admin)
        self.assertEqual(r.status, 202, r)
        tid, sid = r.json()["task"], r.json()["store"]
        # Kill once the task is running and part-way (each step takes 300 ms): the store
        # exists, hidden, with some of its folders.
        deadline = time.time() + 60
        while True:
            t = self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=self.admin).json()
            if t["state"] == "running" and t["progress"] >= 20:
                break
            self.assertIn(t["state"], ("queued", "running"), t)  # not finished before the kill
            self.assertLess(time.time(), deadline, "the task never got part-way: %r" % t)
            time.sleep(0.02)
        self.srv.kill()
        self.assertLess(t["progress"], 100, t)
        self.srv.start()
        admin = self.srv.login()
        # The kernel re-queues the running task at start and its steps are idempotent, so
        # provisioning resumes and completes: the whole store, never a part of it.
        t = wait_task(self, self.srv, tid, admin)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["progress"], 100, t)
        have = [s for s in stores(self.srv, admin) if s["id"] == sid]
        self.assertEqual(len(have), 1, have)
        self.assertEqual(sorted(e["relpath"] for e in listing(self.srv, admin, sid)), ["A", "B", "C", "D"])


if __name__ == "__main__":
    main()

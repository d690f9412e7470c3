"""Tasks: the persistent queue (kernel/task.c) driven through hello.count — progress,
events, retries with backoff, failure, cancellation, privacy, and surviving restarts
(a kill -9 mid-task and a graceful stop)."""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, ServerTest, main  # noqa: E402

FINAL = ("done", "failed", "cancelled")


class TaskTest(ServerTest):
    modules = {"hello": True}
    conf = {"workers": 2}
    workers_env = {"MBYTE_TASK_BACKOFF_MS": "10"}  # retries in tens of ms, same schedule

    def setUp(self):
        self.srv = Server(modules=self.modules, conf=self.conf, env=self.workers_env)
        self.srv.start()
        self.admin = self.srv.login()

    def submit(self, token=None, **args):
        r = self.srv.request("POST", "/api/v1/hello/tasks", args, token=token or self.admin)
        self.assertEqual(r.status, 202, r)
        return r.json()["id"]

    def get(self, tid, token=None):
        return self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=token or self.admin)

    def wait(self, tid, pred, token=None, timeout=60):
        deadline = time.time() + timeout
        t = None
        while time.time() < deadline:
            r = self.get(tid, token)
            self.assertEqual(r.status, 200, r)
            t = r.json()
            if pred(t):
                return t
            time.sleep(0.03)
        self.fail("task %d never reached the expected state; last: %r" % (tid, t))

    def wait_final(self, tid, token=None, timeout=60):
        return self.wait(tid, lambda t: t["state"] in FINAL, token, timeout)


class Basics(TaskTest):
    def test_a_task_runs_to_done_with_progress_and_its_events_stream_to_the_owner(self):
        frames = []
        ready = threading.Event()

        def listen():
            c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=60)
            c.request("GET", "/api/v1/events", headers={"Authorization": "Bearer " + self.admin})
            r = c.getresponse()
            assert r.status == 200
            ready.set()
            event = None
            try:
                while True:
                    line = r.fp.readline().decode()
                    if not line:
                        break
                    if line.startswith("event: "):
                        event = line[7:].strip()
                    elif line.startswith("data: "):
                        frames.append((event, json.loads(line[6:])))
                        if event == "notification":
                            break
            except OSError:
                pass
            finally:
                c.close()

        th = threading.Thread(target=listen)
        th.start()
        self.assertTrue(ready.wait(60))
        tid = self.submit(steps=5, step_ms=30)
        t = self.wait_final(tid)
        th.join(60)
        self.assertFalse(th.is_alive(), "the event stream never brought the notification")
        self.assertEqual(t["state"], "done")
        self.assertEqual(t["progress"], 100)
        self.assertEqual(t["attempts"], 1)
        self.assertEqual(t["result"], {"counted": 5})
        self.assertEqual(t["type"], "hello.count")
        self.assertIsNone(t["error"])
        mine = [d for e, d in frames if e == "task" and d["id"] == tid]
        states = [d["state"] for d in mine]
        self.assertEqual(states[0], "queued")
        self.assertIn("running", states)
        self.assertEqual(states[-1], "done")
        progress = [d["progress"] for d in mine if d["state"] == "running"]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 100)
        notes = [d for e, d in frames if e == "notification"]
        self.assertEqual(notes[0]["kind"], "success")
        self.assertIn("hello.count", notes[0]["title"])

    def test_a_task_failing_its_first_two_attempts_is_retried_and_ends_done(self):
        tid = self.submit(steps=2, step_ms=0, fail_first=2)
        t = self.wait_final(tid)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["attempts"], 3)

    def test_a_task_failing_every_attempt_ends_failed_with_the_reason(self):
        tid = self.submit(steps=2, step_ms=0, fail_first=5)
        t = self.wait_final(tid)
        self.assertEqual(t["state"], "failed", t)
        self.assertEqual(t["attempts"], 3)  # hello.count allows 3
        self.assertEqual(t["max_attempts"], 3)
        self.assertIn("fails attempt 3 of the first 5", t["error"])
        # The owner is told after the record is final: wait for it.
        deadline = time.time() + 60
        while time.time() < deadline:
            r = self.srv.request("GET", "/api/v1/notifications", token=self.admin)
            if any(n["kind"] == "error" and "failed" in n["title"] for n in r.json()):
                break
            time.sleep(0.03)
        self.assertTrue(any(n["kind"] == "error" and "failed" in n["title"] for n in r.json()), r)

    def test_bad_task_arguments_are_refused(self):
        r = self.srv.request("POST", "/api/v1/hello/tasks", {"steps": 0}, token=self.admin)
        self.assertProblem(r, 400, "steps must be a whole number")
        self.assertEqual(self.srv.request("GET", "/api/v1/tasks", token=self.admin).json(), [])

    def test_another_user_cannot_see_or_cancel_the_task(self):
        alice = self.srv.add_user("alice", admin_token=self.admin)
        bob = self.srv.add_user("bob", admin_token=self.admin)
        tid = self.submit(token=alice, steps=1, step_ms=0)
        self.wait_final(tid, token=alice)
        self.assertProblem(self.get(tid, bob), 404)
        self.assertProblem(self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=bob), 404)
        self.assertEqual(self.srv.request("GET", "/api/v1/tasks", token=bob).json(), [])
        self.assertEqual([t["id"] for t in self.srv.request("GET", "/api/v1/tasks", token=alice).json()], [tid])
        self.assertEqual(self.get(tid).status, 200)  # admin may
        self.assertProblem(self.srv.request("GET", "/api/v1/admin/tasks", token=bob), 403)
        self.assertIn(tid, [t["id"] for t in self.srv.request("GET", "/api/v1/admin/tasks", token=self.admin).json()])
        self.assertProblem(self.get(999999), 404)
        self.assertProblem(self.srv.request("GET", "/api/v1/tasks/abc", token=self.admin), 404)

    def test_a_task_running_during_a_reload_finishes_in_the_old_copy(self):
        # 10 s of counting: the checks below hold whenever they run, and only a stall of
        # that long could end the task before the first of them.
        tid = self.submit(steps=200, step_ms=50)
        self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        r = self.srv.request("POST", "/api/v1/admin/modules/hello/reload", token=self.admin)
        self.assertEqual(r.status, 200, r)  # answered once the new copy serves

        def hello():
            return {m["name"]: m for m in self.srv.request("GET", "/api/v1/admin/modules",
                                                           token=self.admin).json()}["hello"]
        # While the task runs, the old copy drains; once it ended, the old copy goes.
        mod, t = hello(), self.get(tid).json()
        self.assertEqual(mod["state"], "active")
        self.assertEqual(t["state"], "running", "the task ended before the first check: %r" % t)
        self.assertEqual(mod.get("old_copies_draining"), 1, mod)
        t = self.wait_final(tid, timeout=120)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["attempts"], 1)
        deadline = time.time() + 60
        while "old_copies_draining" in hello():
            self.assertLess(time.time(), deadline, "the old copy never went after its task ended")
            time.sleep(0.05)

    def test_my_tasks_are_listed_newest_first(self):
        a = self.submit(steps=1, step_ms=0)
        b = self.submit(steps=1, step_ms=0)
        ids = [t["id"] for t in self.srv.request("GET", "/api/v1/tasks", token=self.admin).json()]
        self.assertEqual(ids, [b, a])


class Cancel(TaskTest):
    conf = {"workers": 1}  # one worker: the second task waits in the queue

    def test_cancel_stops_a_running_task_and_removes_a_queued_one(self):
        running = self.submit(steps=400, step_ms=50)
        self.wait(running, lambda t: t["state"] == "running" and t["progress"] > 0)
        queued = self.submit(steps=1, step_ms=0)
        r = self.srv.request("POST", "/api/v1/tasks/%d/cancel" % queued, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["state"], "cancelled")  # at once
        r = self.srv.ctl("task", "cancel", str(running))
        self.assertEqual(r.returncode, 0, r.stderr)
        t = self.wait_final(running)
        self.assertEqual(t["state"], "cancelled")
        self.assertLess(t["progress"], 100)
        self.assertEqual(self.get(queued).json()["attempts"], 0)
        self.assertProblem(self.srv.request("POST", "/api/v1/tasks/%d/cancel" % running, token=self.admin), 409,
                           "already ended")
        r = self.srv.ctl("task", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cancelled", r.stdout)

    def test_queued_tasks_of_an_unloaded_module_wait_for_it(self):
        tid = self.submit(steps=200, step_ms=50)
        self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        r = self.srv.request("POST", "/api/v1/admin/modules/hello/unload", token=self.admin)
        self.assertEqual(r.status, 200, r)
        t = self.get(tid).json()
        self.assertEqual(t["state"], "queued")  # interrupted by the unload, not failed
        self.assertEqual(t["attempts"], 0)     # and that attempt does not count
        time.sleep(0.3)
        self.assertEqual(self.get(tid).json()["state"], "queued")
        self.assertEqual(self.srv.request("POST", "/api/v1/admin/modules/hello/load", token=self.admin).status, 200)
        self.wait(tid, lambda t: t["state"] == "running")
        self.srv.request("POST", "/api/v1/tasks/%d/cancel" % tid, token=self.admin)
        self.assertEqual(self.wait_final(tid)["state"], "cancelled")


class Restarts(TaskTest):
    def test_a_task_killed_mid_run_resumes_after_restart_and_completes(self):
        tid = self.submit(steps=30, step_ms=50)
        self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        self.srv.kill()  # kill -9: no chance to tidy up
        self.srv.start()
        t = self.wait_final(tid)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["attempts"], 2)  # the killed attempt counted
        self.assertEqual(t["result"], {"counted": 30})

    def test_a_graceful_stop_requeues_the_running_task_without_spending_an_attempt(self):
        done = self.submit(steps=1, step_ms=0)
        self.wait_final(done)
        tid = self.submit(steps=30, step_ms=50)
        self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        self.srv.stop()
        self.srv.start()
        listed = {t["id"]: t for t in self.srv.request("GET", "/api/v1/tasks", token=self.admin).json()}
        self.assertEqual(listed[done]["state"], "done")
        self.assertIn(tid, listed)
        t = self.wait_final(tid)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["attempts"], 1)


# ---- issue 28: a crash in a task's last attempt ------------------------------------------
class CrashRerun(TaskTest):
    def kill_while_running(self, tid):
        t = self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        self.srv.kill()
        self.assertLess(t["progress"], 100, t)
        self.srv.start()

    def test_a_crash_in_the_last_attempt_gets_one_more_run_and_a_second_one_fails_the_task(self):
        # hello.count has 3 attempts: three crashes use them up, yet the task that lost its
        # last attempt to a crash runs once more (it may finish or undo what it started).
        tid = self.submit(steps=200, step_ms=20)
        for _ in range(3):
            self.kill_while_running(tid)
        t = self.wait(tid, lambda t: t["state"] == "running" and t["progress"] > 0)
        self.assertEqual(t["attempts"], 3, t)
        # A crash in that extra run fails it: a task that brings the server down every time
        # is not run forever.
        self.kill_while_running(tid)
        t = self.wait_final(tid)
        self.assertEqual(t["state"], "failed", t)
        self.assertIn("no attempts are left", t["error"])

    def test_the_extra_run_after_a_crash_in_the_last_attempt_completes_the_task(self):
        tid = self.submit(steps=100, step_ms=20)
        for _ in range(3):
            self.kill_while_running(tid)
        t = self.wait_final(tid, timeout=120)
        self.assertEqual(t["state"], "done", t)
        self.assertEqual(t["result"], {"counted": 100})


if __name__ == "__main__":
    main()

"""Task lists page (?limit, ?before and a Link to the next page) and finished tasks are removed
after task_retention_days (docs/api.md "Tasks", docs/operations.md)."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, ServerTest, main  # noqa: E402


def submit(srv, token, steps=1, step_ms=0):
    r = srv.request("POST", "/api/v1/hello/tasks", {"steps": steps, "step_ms": step_ms}, token=token)
    assert r.status == 202, r
    return r.json()["id"]


def wait_state(t, srv, token, tid, want, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = srv.request("GET", "/api/v1/tasks/%d" % tid, token=token)
        if r.status == 200 and r.json()["state"] == want:
            return r.json()
        time.sleep(0.05)
    t.fail("task %d not %s within %d s: %r" % (tid, want, timeout, r))


class TaskPages(ServerTest):
    modules = {"hello": True}

    def pages(self, first, token):
        """Follows rel="next" from `first`; returns the pages' ids."""
        out, url = [], first
        while url:
            r = self.srv.request("GET", url, token=token)
            self.assertEqual(r.status, 200, r)
            out.append([x["id"] for x in r.json()])
            link = r.header("Link")
            url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
        return out

    def test_task_lists_come_in_pages_newest_first_with_a_link_to_the_next(self):
        ids = [submit(self.srv, self.admin) for _ in range(7)]
        for tid in ids:
            wait_state(self, self.srv, self.admin, tid, "done")
        pages = self.pages("/api/v1/tasks?limit=3", self.admin)
        self.assertEqual([len(p) for p in pages], [3, 3, 1])
        self.assertEqual(sum(pages, []), sorted(ids, reverse=True))
        admin = self.pages("/api/v1/admin/tasks?limit=5", self.admin)
        self.assertEqual(sum(admin, [])[:7], sorted(ids, reverse=True))
        for bad in ("limit=0", "limit=1001", "limit=x", "before=abc"):
            self.assertProblem(self.srv.request("GET", "/api/v1/tasks?" + bad, token=self.admin), 400)


class TaskRetention(ServerTest):
    modules = {"hello": True}
    conf = {"task_retention_days": 30}

    def test_finished_tasks_older_than_the_retention_go_and_unfinished_ones_stay(self):
        done = [submit(self.srv, self.admin) for _ in range(3)]
        for tid in done:
            wait_state(self, self.srv, self.admin, tid, "done")
        # A task that cannot run (its module is gone) stays queued, however old.
        waiting = submit(self.srv, self.admin, steps=1000, step_ms=1000)
        wait_state(self, self.srv, self.admin, waiting, "running")
        self.srv.stop()
        self.srv.modules = {"hello": False}
        self.srv.write_config()
        self.srv.start()
        self.srv.stop()
        # 29 days later nothing goes; 31 days later the finished ones do.
        for days, gone in ((29, False), (31, True)):
            self.srv.extra_env["MBYTE_CLOCK_OFFSET"] = str(days * 86400)
            mark = len(self.srv.read_log())
            self.srv.start()
            token = self.srv.login()
            if gone:
                deadline = time.time() + 60
                while "finished tasks older than 30 days removed" not in self.srv.read_log()[mark:]:
                    self.assertLess(time.time(), deadline, self.srv.read_log()[mark:])
                    time.sleep(0.05)
            listed = [x["id"] for x in self.srv.request("GET", "/api/v1/admin/tasks", token=token).json()]
            self.assertIn(waiting, listed)
            self.assertEqual(self.srv.request("GET", "/api/v1/tasks/%d" % waiting, token=token).json()["state"],
                             "queued")
            for tid in done:
                self.assertEqual(tid not in listed, gone, (days, tid, listed))
                self.assertEqual(self.srv.request("GET", "/api/v1/tasks/%d" % tid, token=token).status,
                                 404 if gone else 200)
            self.srv.stop()
        self.srv.start()


class TaskRetentionSetting(ServerTest):
    def test_a_bad_retention_is_refused_with_its_line(self):
        srv = Server(conf={"task_retention_days": 0})
        try:
            srv.start(wait=False)
            self.assertEqual(srv.proc.wait(60), 2)
            srv.log.close()
            self.assertIn("task_retention_days", srv.read_log())
            srv.proc = None
        finally:
            srv.cleanup()


if __name__ == "__main__":
    main()

"""Security headers on every answer (docs/api.md "Conventions"): the web page under a
Content-Security-Policy without inline script that forbids framing; API answers, problems and a
user's own files (even HTML) under a policy where nothing can run; no sniffing, no Referer."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SRC, ServerTest, main  # noqa: E402
from storeutil import home, put  # noqa: E402


def directives(csp):
    return {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}


class SecurityHeaders(ServerTest):
    def common(self, r, what):
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff", what)
        self.assertEqual(r.header("Referrer-Policy"), "no-referrer", what)
        self.assertEqual(r.header("X-Frame-Options"), "DENY", what)
        csp = r.header("Content-Security-Policy")
        self.assertTrue(csp, what)
        d = directives(csp)
        self.assertEqual(d.get("frame-ancestors"), ["'none'"], what)
        return d

    def test_the_web_page_runs_only_its_own_scripts_and_is_never_framed(self):
        for path in ("/", "/index.html", "/s/some-share-token", "/js/app.js"):
            r = self.srv.request("GET", path)
            self.assertEqual(r.status, 200, path)
            d = self.common(r, path)
            script = d.get("script-src", d.get("default-src"))
            self.assertEqual(script, ["'self'"], path)
            self.assertNotIn("'unsafe-eval'", sum(d.values(), []), path)
            self.assertEqual(d.get("object-src"), ["'none'"], path)
        # ... and the page has no inline script the policy would block.
        with open(os.path.join(SRC, "web", "index.html")) as f:
            html = f.read()
        self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html), [])
        self.assertNotRegex(html, r"\son[a-z]+\s*=")

    def test_api_answers_problems_and_stored_files_can_run_nothing(self):
        sid = home(self.srv, self.admin)
        self.assertIn(put(self.srv, self.admin, sid, "evil.html", b"<script>alert(1)</script>").status, (200, 201))
        answers = {
            "json": self.srv.request("GET", "/api/v1/stores", token=self.admin),
            "problem": self.srv.request("GET", "/api/v1/stores/%d/files/missing.txt" % sid, token=self.admin),
            "401": self.srv.request("GET", "/api/v1/stores"),
            "stored html": self.srv.request("GET", "/api/v1/stores/%d/files/evil.html" % sid, token=self.admin),
        }
        self.assertEqual([a.status for a in answers.values()], [200, 404, 401, 200])
        for what, r in answers.items():
            d = self.common(r, what)
            self.assertEqual(d.get("default-src"), ["'none'"], what)
            self.assertNotIn("script-src", d, what)

    def test_the_answer_with_a_token_is_never_stored_by_a_cache(self):
        r = self.srv.request("POST", "/api/v1/auth/login", {"username": "admin", "password": "admin-password-1"})
        self.assertEqual(r.status, 200)
        self.assertIn("no-store", r.header("Cache-Control"))
        self.common(r, "login")


if __name__ == "__main__":
    main()

"""The web dashboard of ccdocker-httpd (issue 19, docs/dashboard.md) in real browsers: Debian's chromium,
headless, driven by playwright-core (tests/dashboard/driver.js), for every step; and Debian's Firefox
ESR, headless, driven by puppeteer-core over WebDriver BiDi, for one pass of sign-in, a live session and
its output shown as text. Both against a ccdocker-httpd and a ccdockerd of
this module's own, with real sessions: the real Claude Code CLI in the containers, answered by the scripted
model through the daemon's model proxy. The page is used as a person uses it (typing, clicking) and checked
against what the REST API says.

Screenshots of the tree and of a session are written to $CCDOCKER_DEV_DIR/test-output/dashboard/ (kept
across `down`); docs/dashboard-tree.png and docs/dashboard-session.png are copies of them.
"""

import json
import os
import shutil
import subprocess
import threading
import unittest

import sandbox as sb
import test_httpd
from test_httpd import curl, jcurl

DAEMON = None
HTTPD = None
MODEL = None
BROWSER = None

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

SCRIPT = {
    "steps": [
        {"id": "spawn", "when": {"last_user_contains": "dash parent"},
         "reply": {"text": "Spawning a child.", "delay_ms": 1500,
                   "tool_use": {"name": "mcp__cc-docker__spawn_child",
                                "input": {"prompt": "dash child: say hi", "task_type": "dash-child"}}}},
        {"id": "spawned", "when": {"tool_result_for": "spawn"},
         "reply": {"text": "Parent spawned its child.", "delay_ms": 3000}},
        {"id": "child", "when": {"last_user_contains": "dash child"}, "reply": {"text": "Child says hi."},
         "repeat": True},
        {"id": "ask", "when": {"last_user_contains": "dash ask"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__ask_user",
                                "input": {"question": "Ship it? " + XSS, "timeout_seconds": 600}}}},
        {"id": "asked", "when": {"tool_result_for": "ask"}, "reply": {"text": "the user said ${result:ask.response}"}},
        {"id": "xss", "when": {"last_user_contains": "dash xss"}, "reply": {"text": "look: " + XSS + " end"},
         "repeat": True},
        {"id": "beta", "when": {"last_user_contains": "dash beta"}, "reply": {"text": "Beta from the page."},
         "repeat": True},
    ],
    "default": {"text": "ok"},
}


def output_dir():
    d = os.path.join(sb.env("CCDOCKER_DEV_DIR"), "test-output", "dashboard")
    os.makedirs(d, exist_ok=True)
    return d


class Browser:
    """tests/dashboard/driver.js: one headless page of kind ("chromium" or "firefox"), one JSON command
    per line."""

    def __init__(self, kind="chromium"):
        driver = os.path.join(sb.env("CCDOCKER_SRC"), "tests", "dashboard", "driver.js")
        env = dict(os.environ, NODE_PATH=os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules"),
                   PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", PLAYWRIGHT_BROWSERS_PATH="0")
        self.stderr = open(os.path.join(output_dir(), f"driver-{kind}.log"), "w")
        self.proc = subprocess.Popen(["node", driver, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, op, **args):
        with self.lock:
            self.n += 1
            self.proc.stdin.write(json.dumps({"id": self.n, "op": op, **args}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver exited ({self.proc.poll()}); see {self.stderr.name}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(f"browser {op} {args}: {reply['error']}")
        return reply["value"]

    def until(self, expr, arg=None, timeout=60):
        return self("until", expr=expr, arg=arg, timeout=timeout * 1000)

    def stop(self):
        try:
            if self.proc.poll() is None:
                self("close")
        except AssertionError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def setUpModule():
    global DAEMON, HTTPD, MODEL, BROWSER
    MODEL = sb.ScriptedModel(SCRIPT)
    try:
        DAEMON = sb.Daemon(unit="ccdockerd-dashboard-test.service", settings={
            "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-dashboard-runtime"),
            "MaxMemory": "2G",
            "DefaultMemory": "1G",
            "ModelUpstreamURL": MODEL.base_url,
            "HeartbeatTimeoutSec": "30",
            "QuestionMinTimeoutSec": "5",
        }, extra_env={"ANTHROPIC_API_KEY": "sk-ant-test-dashboard"})
        del DAEMON.settings["SessionCommand"]  # the image's own entrypoint: ccdocker-init, the real CLI
        shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
        DAEMON.start()
        HTTPD = test_httpd.Httpd()
        test_httpd.HTTPD = HTTPD  # curl() and jcurl() talk to it
        BROWSER = Browser()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    errors = []
    for stop in (BROWSER and BROWSER.stop, HTTPD and HTTPD.stop, DAEMON and DAEMON.stop, MODEL and MODEL.stop):
        if not stop:
            continue
        try:
            stop()
        except Exception as e:  # noqa: BLE001 -- report every failure, stop everything
            errors.append(str(e))
    if DAEMON:
        shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    if errors:
        raise AssertionError("\n".join(errors))


# The texts the page shows of a session's events, in order, with their seqs.
EVENTS = "() => [...document.querySelectorAll('#events > li')].map(li => [Number(li.dataset.seq), li.textContent])"


class DashboardTest(unittest.TestCase):
    """In order (unittest sorts by name): each step builds on the page the one before left."""

    @classmethod
    def setUpClass(cls):
        cls.token = HTTPD.token(sb.unique("dash"))

    @property
    def browser(self):
        return BROWSER

    def create(self, prompt, keep=False, **extra):
        """A session of self.token; keep: for the later steps too (removed after the last)."""
        body = {"workspace": {"type": "ephemeral"}, "prompt": prompt, "config": {"memory": "1G"}, **extra}
        s = jcurl("POST", "/api/v1/sessions", self.token, body, expect=201)
        (self.addClassCleanup if keep else self.addCleanup)(self.forget, s["id"])
        return s

    forget = test_httpd.HttpdTest.forget  # stop, wait, Remove: quietly, also when it is gone

    def result(self, sid, token=None):
        r = jcurl("GET", f"/api/v1/sessions/{sid}/result?wait=true&timeout=180", token or self.token, timeout=200)
        self.assertEqual(r["status"], "completed", r)
        return r["result"]

    def sign_in(self, token=None):
        b = self.browser
        b("goto", url=HTTPD.url + "/")
        b("eval", expr="() => sessionStorage.clear()")  # signed out, as a new tab is
        b("goto", url=HTTPD.url + "/")
        b("wait", selector="#signin-form")
        b("fill", selector="#token", value=token or self.token)
        b("click", selector="#signin-form button")
        b("wait", selector="#app")
        b.until("() => document.getElementById('live-status').textContent === 'live'")

    def open_session(self, sid):
        self.browser("click", selector=f'#tree .node[data-id="{sid}"]')
        self.browser.until("(id) => document.getElementById('session-title').textContent.startsWith(id)", sid)

    def events_text(self):
        return "\n".join(t for _, t in self.browser("eval", expr=EVENTS))

    def wait_text(self, selector, text, timeout=120):
        return self.browser.until(
            "([sel, text]) => { const e = document.querySelector(sel); return e && e.textContent.includes(text); }",
            [selector, text], timeout=timeout)

    def follow_markup_session(self):
        """A new session whose answer is markup, opened from the tree: its id once the page shows the
        answer as the characters it is, with nothing of it run and nothing fetched."""
        b = self.browser
        sid = self.create("dash xss please")["id"]
        b("wait", selector=f'#tree .node[data-id="{sid}"]')
        self.open_session(sid)
        self.assertEqual(self.result(sid), "look: " + XSS + " end")
        b.until("() => document.querySelectorAll('#events .event-result').length > 0")
        self.assertIn("look: " + XSS + " end", self.events_text())
        self.assertEqual(b("eval", expr="() => document.querySelectorAll('#events img, #events script').length"), 0)
        self.assertEqual(b("eval", expr="() => [...document.images].map(i => i.src)"), [])
        self.assertIsNone(b("eval", expr="() => window.__xss ?? null"))
        self.assertFalse([u for u in b("requests") if u.rstrip("/").endswith("/x") or "/x?" in u], b("requests"))
        return sid

    def test_0_headers_and_files(self):
        """Every dashboard answer: strict CSP, no framing, no sniffing, the right type; nothing outside
        the embedded files is served, whatever the path."""
        for path, ctype in (("/", "text/html"), ("/dashboard/app.js", "text/javascript"),
                            ("/dashboard/style.css", "text/css"), ("/dashboard/nope.js", "text/plain")):
            status, hdrs, body = curl("GET", path)
            self.assertEqual(status, 404 if "nope" in path else 200, path)
            self.assertTrue(hdrs.get("content-type", "").startswith(ctype), (path, hdrs))
            csp = hdrs.get("content-security-policy", "")
            for want in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'",
                         f"connect-src 'self' ws://127.0.0.1:{HTTPD.port}"):
                self.assertIn(want, csp, path)
            self.assertNotIn("unsafe-inline", csp)
            self.assertNotIn("unsafe-eval", csp)
            self.assertEqual(hdrs.get("x-frame-options"), "DENY", path)
            self.assertEqual(hdrs.get("x-content-type-options"), "nosniff", path)
        status, _, body = curl("GET", "/")
        self.assertIn('<script type="module" src="/dashboard/app.js">', body)
        self.assertNotRegex(body, r"<script>|<style>| on[a-z]+=")  # nothing inline for the CSP to allow
        # Traversal and listing, as curl sends them (--path-as-is) and encoded.
        for path in ("/dashboard/", "/dashboard", "/dashboard/..", "/dashboard/../httpd.h", "/dashboard/%2e%2e/httpd.h",
                     "/dashboard/..%2f..%2f..%2fetc%2fpasswd", "/dashboard/%2e%2e%2fmeson.build", "/../etc/passwd",
                     "/dashboard/embed.py", "/dashboard/.%2fapp.js", "/index.html", "/dashboard//app.js"):
            p = subprocess.run(["curl", "-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", HTTPD.url + path],
                               capture_output=True, text=True, timeout=30)
            body, _, code = p.stdout.rpartition("\n")
            self.assertIn(code, ("401", "404"), (path, code, body[:200]))
            self.assertNotIn("root:", body)
            self.assertNotIn("#!/usr/bin/python3", body)

    def test_1_wrong_token_gets_the_sign_in_page_back(self):
        b = BROWSER
        b("goto", url=HTTPD.url + "/")
        b("wait", selector="#signin-form")
        b("fill", selector="#token", value="ccd_" + "A" * 43)
        b("click", selector="#signin-form button")
        self.wait_text("#signin-message", "refused")
        self.assertTrue(b("eval", expr="() => !document.getElementById('signin').hidden"))
        self.assertIsNone(b("eval", expr="() => sessionStorage.getItem('ccdocker.token')"))
        self.assertNotIn("ccd_", b("url"))
        self.assertFalse(any("ccd_" in u for u in b("requests")))

    def test_2_tree_live_events_and_reload(self):
        """The tree shows a parent and the child it spawned with their states; the parent's events appear
        as they arrive; a reload shows each exactly once."""
        b = BROWSER
        self.sign_in()
        self.assertEqual(b("eval", expr="() => sessionStorage.getItem('ccdocker.token')"), self.token)
        self.assertNotIn("ccd_", b("url"))
        parent = self.create("dash parent: spawn a child, please", keep=True)
        pid = parent["id"]
        self.__class__.parent_id = pid
        b("wait", selector=f'#tree .node[data-id="{pid}"]')
        self.open_session(pid)
        # Live: the first events come while the turn is still going (its result has not been stored).
        first = b.until("() => document.querySelectorAll('#events > li').length > 0 && "
                        "[...document.querySelectorAll('#events > li')].map(li => li.textContent)", timeout=180)
        self.assertFalse(any("Parent spawned its child." in t for t in first), first)
        self.wait_text("#events", "Parent spawned its child.", timeout=180)
        self.assertEqual(self.result(pid), "Parent spawned its child.")
        child = jcurl("GET", f"/api/v1/sessions/{pid}", self.token)["children"]
        self.assertEqual(len(child), 1)
        cid = child[0]
        self.__class__.child_id = cid
        # The child nested under its parent, each with its state as the API has it.
        b("wait", selector=f'#tree li[data-id="{pid}"] > ul li[data-id="{cid}"]')
        self.result(cid)
        for sid in (pid, cid):
            st = jcurl("GET", f"/api/v1/sessions/{sid}", self.token)["state"]
            b.until("([id, st]) => { const e = document.querySelector(`#tree .node[data-id=\"${id}\"] .state`);"
                    " return e && e.textContent === st; }", [sid, st])
        self.wait_text(f'#tree .node[data-id="{cid}"]', "dash-child")
        # Usage came with the properties (the model proxy counted the calls), and the tree's total.
        usage = sb.wait_until(lambda: (lambda u: u if u["tree_calls"] > u["calls"] > 0 else None)(
            jcurl("GET", f"/api/v1/sessions/{pid}", self.token)["usage"]), 60, 0.5, what="the tree's usage")
        self.assertGreater(usage["tree_input_tokens"], usage["input_tokens"])
        self.wait_text(f'#tree .node[data-id="{pid}"] .tree-total', "tree")
        # Its limits, as created (memory 1G) and as the daemon's defaults filled them in.
        self.wait_text(f'#tree .node[data-id="{pid}"] .limits', "1 GiB")
        self.wait_text("#session-meta", "1 GiB")

        last = jcurl("GET", f"/api/v1/sessions/{pid}", self.token)["last_seq"]
        b.until("(n) => document.querySelectorAll('#events > li').length >= n", last)
        before = b("eval", expr=EVENTS)
        out = jcurl("GET", f"/api/v1/sessions/{pid}/output?since=0", self.token)["events"]
        seqs = [s for s, _ in before]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))  # every one, once, in order
        self.assertEqual(seqs, [e["seq"] for e in out][:len(seqs)])
        self.assertIn("tool call: mcp__cc-docker__spawn_child", self.events_text())
        b("click", selector="#events details summary")  # a tool call's input, unfolded
        self.wait_text("#events details[open]", "dash-child")
        b("screenshot", path=os.path.join(output_dir(), "dashboard-session.png"))

        b("reload")
        b("wait", selector="#app")
        b.until("(n) => document.querySelectorAll('#events > li').length >= n", len(before))
        after = b("eval", expr=EVENTS)
        self.assertEqual(after[:len(before)], before)  # nothing missing, nothing twice, in order
        self.assertEqual([s for s, _ in after], list(range(1, len(after) + 1)))

    def test_3_question_answered_in_the_page_resumes_the_session(self):
        b = BROWSER
        self.sign_in()
        s = self.create("dash ask the user")
        sid = s["id"]
        self.wait_text("#questions", "Ship it?", timeout=180)
        # Marked in the tree, and the question's text shown as text.
        b("wait", selector=f'#tree .node[data-id="{sid}"] .waiting')
        self.wait_text("#questions", XSS)
        self.assertEqual(b("eval", expr="() => document.querySelectorAll('#questions img, #questions script').length"), 0)
        b("screenshot", path=os.path.join(output_dir(), "dashboard-tree.png"))  # a tree, a question waiting
        q = jcurl("GET", f"/api/v1/sessions/{sid}/questions", self.token)["questions"][0]
        b("fill", selector=f'#questions form[data-qid="{q["interaction_id"]}"] input', value="yes from the page")
        b("click", selector=f'#questions form[data-qid="{q["interaction_id"]}"] button')
        self.assertEqual(self.result(sid), "the user said yes from the page")
        b("wait", selector=f'#tree .node[data-id="{sid}"] .waiting', state="detached")
        self.open_session(sid)
        self.wait_text("#events", "the user said yes from the page")
        all_q = jcurl("GET", f"/api/v1/sessions/{sid}/questions?all=true", self.token)["questions"]
        answered = [x for x in all_q if x["interaction_id"] == q["interaction_id"]]
        self.assertIn("http", json.dumps(answered[0]["answered_by"]), answered)

    def test_4_prompt_stop_remove_and_create(self):
        b = BROWSER
        pid = self.parent_id
        self.open_session(pid)
        b("fill", selector="#prompt", value="dash beta, from the page")
        b("click", selector="#prompt-form button")
        self.wait_text("#events", "Beta from the page.", timeout=180)
        self.assertIn("dash beta, from the page", json.dumps(MODEL.requests()))  # the prompt the page sent

        b("click", selector="#stop")
        b.until("(id) => { const e = document.querySelector(`#tree .node[data-id=\"${id}\"] .state`);"
                " return e && e.textContent === 'stopped'; }", pid, timeout=120)
        self.wait_text(f'#tree .node[data-id="{pid}"] .reason', "stopped")
        self.assertEqual(jcurl("GET", f"/api/v1/sessions/{pid}", self.token)["state"], "stopped")
        # Filters: an ended session is under "ended", not "live".
        b("click", selector='input[name=filter][value=live]')
        b("wait", selector=f'#tree .node[data-id="{pid}"]', state="detached")
        b("click", selector='input[name=filter][value=ended]')
        b("wait", selector=f'#tree .node[data-id="{pid}"]')
        b("click", selector='input[name=filter][value=all]')
        # Its child was stopped with it; remove the child, then the parent.
        cid = self.child_id
        b.until("(id) => { const e = document.querySelector(`#tree .node[data-id=\"${id}\"] .state`);"
                " return e && e.textContent === 'stopped'; }", cid, timeout=120)
        for sid in (cid, pid):
            self.open_session(sid)
            b("click", selector="#remove")
            b("wait", selector=f'#tree .node[data-id="{sid}"]', state="detached")
            status, _, _ = curl("GET", f"/api/v1/sessions/{sid}", self.token)
            self.assertEqual(status, 404)

        # The form: a refused value is named next to its field; then a good one.
        b("click", selector="#create-pane summary")
        b("fill", selector="#f-prompt", value="dash beta from the form")
        b("fill", selector="#f-memory", value="100G")
        b("click", selector="#create-form button[type=submit]")
        self.wait_text('.field-error[data-field="memory"]', "memory")
        self.assertIn("100G", b("text", selector='.field-error[data-field="memory"]'))
        self.assertEqual(b("text", selector="#create-error"), "")
        self.assertEqual(b("eval", expr="() => document.getElementById('f-memory').getAttribute('aria-invalid')"), "true")
        b("fill", selector="#f-memory", value="1G")
        b("fill", selector="#f-task-type", value="from-the-form")
        b("click", selector="#create-form button[type=submit]")
        sid = b.until("() => { const t = document.getElementById('session-title').textContent;"
                      " return t.includes('from-the-form') && t.slice(0, 12); }", timeout=60)
        self.addCleanup(self.forget, sid)
        self.assertEqual(b("text", selector='.field-error[data-field="memory"]'), "")
        self.wait_text("#events", "Beta from the page.", timeout=180)
        self.assertEqual(jcurl("GET", f"/api/v1/sessions/{sid}", self.token)["task_type"], "from-the-form")

    def test_5_session_output_is_text_and_runs_nothing(self):
        b = BROWSER
        self.sign_in()
        self.follow_markup_session()
        self.assertEqual(b("eval", expr="() => document.querySelectorAll('script:not([src])').length"), 0)
        # The CSP holds by itself too: an inline script put in the page does not run.
        b("eval", expr="() => { try { const s = document.createElement('script'); s.append('window.__inline = 1');"
                       " document.body.append(s); } catch (e) {} }")
        self.assertIsNone(b("eval", expr="() => window.__inline ?? null"))
        self.assertTrue([m for m in b("messages") if "Content Security Policy" in m or "TrustedScript" in m], b("messages"))

    def test_6_revoked_token_gets_the_sign_in_page_back(self):
        b = BROWSER
        # Revoked while the page is open: the next call the page makes is refused, and says so.
        name = sb.unique("dash-revoked")
        t = HTTPD.token(name)
        self.sign_in(t)
        HTTPD.ctl("token", "revoke", name)
        b("click", selector="#create-pane summary")
        b("click", selector="#create-form button[type=submit]")
        self.wait_text("#signin-message", "a valid bearer token is needed (the token is wrong or was revoked)")
        self.assertTrue(b("eval", expr="() => !document.getElementById('signin').hidden"))
        self.assertIsNone(b("eval", expr="() => sessionStorage.getItem('ccdocker.token')"))
        # Signing in with it again is refused at once.
        b("fill", selector="#token", value=t)
        b("click", selector="#signin-form button")
        self.wait_text("#signin-message", "That token was refused: it is wrong or has been revoked.")

        # Revoked while the page only watches: the tree's stream is ended (at its next event or ping, at
        # most 20 s) and the page goes back to sign-in by itself.
        name = sb.unique("dash-revoked")
        t = HTTPD.token(name)
        self.sign_in(t)
        HTTPD.ctl("token", "revoke", name)
        self.wait_text("#signin-message", "the live updates were refused", timeout=90)


class FirefoxTest(unittest.TestCase):
    """The dashboard in Debian's Firefox ESR: signed in, a session followed live from the tree, its
    events shown as the characters they are (the injected markup runs nothing and fetches nothing), and
    the CSP keeping an inline script from running."""

    @classmethod
    def setUpClass(cls):
        cls.token = HTTPD.token(sb.unique("dash-firefox"))
        cls.browser = Browser("firefox")
        cls.addClassCleanup(cls.browser.stop)

    create = DashboardTest.create
    forget = DashboardTest.forget
    result = DashboardTest.result
    sign_in = DashboardTest.sign_in
    open_session = DashboardTest.open_session
    events_text = DashboardTest.events_text
    wait_text = DashboardTest.wait_text
    follow_markup_session = DashboardTest.follow_markup_session

    def test_sign_in_follow_a_session_and_its_output_runs_nothing(self):
        b = self.browser
        self.sign_in()
        self.assertEqual(b("eval", expr="() => sessionStorage.getItem('ccdocker.token')"), self.token)
        self.assertNotIn("ccd_", b("url"))
        sid = self.follow_markup_session()
        self.wait_text(f'#tree .node[data-id="{sid}"] .state', "idle")
        before = b("messages")
        self.assertFalse([m for m in before if m.startswith("pageerror")], before)
        # A script's text is an injection sink: Firefox enforces the CSP's require-trusted-types-for
        # too, refuses it and says so, and the script does not run.
        b("eval", expr="() => { try { const s = document.createElement('script'); s.append('window.__inline = 1');"
                       " document.body.append(s); } catch (e) {} }")
        refused = sb.wait_until(lambda: [m for m in b("messages")[len(before):] if m.startswith("pageerror")], 30,
                                0.2, what="Firefox to report the refused script")
        self.assertTrue(all("require-trusted-types-for" in m for m in refused), refused)
        self.assertIsNone(b("eval", expr="() => window.__inline ?? null"))
        b("screenshot", path=os.path.join(output_dir(), "dashboard-firefox.png"))


if __name__ == "__main__":
    unittest.main()

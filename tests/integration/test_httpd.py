"""ccdocker-httpd, the HTTP and WebSocket adapter (issue 7), against a real ccdockerd of its own with the
real Claude Code CLI in the containers, answered by the scripted model. Every route is called with curl;
streams are followed by clients nobody here wrote: the npm `ws` package (driven by node) for WebSocket,
curl for Server-Sent Events. The server is checked against docs/openapi.yaml, and the examples of
docs/api.md are run as they are written.

The test starts its own ccdocker-httpd (by PID, stopped at the end, which under ASan also checks for
leaks) on a free loopback port, with its own token store in a temporary directory.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import sandbox as sb

DAEMON = None
HTTPD = None
MODEL = None

NOBODY = "000000000000"  # a well-formed session id no session has

# One scripted model for every session here: the steps answer by the words of the prompts.
SCRIPT = {
    "steps": [
        {"id": "alpha", "when": {"last_user_contains": "alpha"}, "reply": {"text": "Alpha done.", "delay_ms": 1500},
         "repeat": True},
        {"id": "beta", "when": {"last_user_contains": "beta"}, "reply": {"text": "Beta done."}, "repeat": True},
        {"id": "fanout", "when": {"last_user_contains": "fanout"}, "reply": {"text": "Fan-out done."},
         "repeat": True},
    ],
    "default": {"text": "ok"},
}

# A WebSocket client of the npm ws package. argv: a JSON object with url, token, clients (how many
# sockets), until_results (close after this many "result" events; 0: until the server closes),
# until_events (close after this many events; 0: no limit), timeout_ms. Prints one JSON line: a list,
# per socket, of {"code", "reason", "events": [[seq, type], ...], "error"}.
WS_CLIENT = r"""
const WebSocket = require('ws');
const opt = JSON.parse(process.argv[2]);
const out = [];
let open = opt.clients, ready = 0;
function finish() { process.stdout.write(JSON.stringify(out) + '\n'); process.exit(0); }
for (let i = 0; i < opt.clients; i++) {
  const rec = { code: null, reason: null, events: [], error: null, seen_results: 0 };
  out.push(rec);
  const headers = opt.token ? { Authorization: 'Bearer ' + opt.token } : {};
  const ws = new WebSocket(opt.url, { headers });
  ws.on('open', () => { if (++ready === opt.clients && opt.ready_file) require('fs').writeFileSync(opt.ready_file, 'ok'); });
  ws.on('message', (data, isBinary) => {
    const e = JSON.parse(data.toString());
    rec.events.push([e.seq, e.data.type]);
    if (e.data.type === 'result') rec.seen_results++;
    if ((opt.until_results && rec.seen_results >= opt.until_results) ||
        (opt.until_events && rec.events.length >= opt.until_events)) ws.close(1000, 'enough');
  });
  ws.on('unexpected-response', (req, res) => { rec.error = 'HTTP ' + res.statusCode; });
  ws.on('error', (err) => { rec.error = rec.error || String(err.message); });
  ws.on('close', (code, reason) => {
    rec.code = code; rec.reason = reason.toString();
    if (--open === 0) finish();
  });
}
setTimeout(() => { for (const r of out) r.error = r.error || 'timeout'; finish(); }, opt.timeout_ms);
"""


# ---- a validator for the subset of OpenAPI 3.0 schema that docs/openapi.yaml uses ----


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def validate(doc, schema, value, where="$"):
    """Raises AssertionError naming the first place where value does not fit schema."""
    schema = resolve(doc, schema)
    if value is None:
        assert schema.get("nullable"), f"{where}: null where {schema.get('type')} is wanted"
        return
    if "oneOf" in schema:
        fits = 0
        for alt in schema["oneOf"]:
            try:
                validate(doc, alt, value, where)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{where}: {value!r} fits {fits} of oneOf"
        return
    t = schema.get("type")
    checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    if t:
        assert checks[t](value), f"{where}: {value!r} is not of type {t}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{where}: {value!r} does not match {schema['pattern']}"
    if schema.get("format") == "date-time":
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value), f"{where}: {value!r}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if "maximum" in schema:
        assert value <= schema["maximum"], f"{where}: {value} > {schema['maximum']}"
    if t == "object":
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            assert k in value, f"{where}: '{k}' is missing"
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                validate(doc, props[k], v, f"{where}.{k}")
            elif extra is False:
                raise AssertionError(f"{where}: '{k}' is not in the schema")
            elif isinstance(extra, dict):
                validate(doc, extra, v, f"{where}.{k}")
    if t == "array":
        for i, v in enumerate(value):
            validate(doc, schema.get("items", {}), v, f"{where}[{i}]")


def check_response(doc, path, method, status, hdrs, text):
    """The answer fits the document: its status is listed, and its body fits the schema of its type."""
    op = doc["paths"][path][method.lower()]
    responses = op["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} is not documented: {text[:300]}"
    resp = resolve(doc, responses[str(status)])
    content = resp.get("content")
    if not content:
        return
    ctype = hdrs.get("content-type", "").split(";")[0].strip()
    assert ctype in content, f"{method} {path} {status}: content type {ctype!r} is not documented"
    if ctype == "application/json":
        validate(doc, content[ctype]["schema"], json.loads(text), f"{method} {path} {status}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Httpd:
    """ccdocker-httpd of the build under test, on a free loopback port, with a token store of its own."""

    def __init__(self, extra_args=(), binary=None):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-httpd-")
        self.tokens = os.path.join(self.dir, "tokens.db")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Another build's (bench/http compares two).
        self.binary = binary or os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "httpd", "ccdocker-httpd")
        self.log_path = os.path.join(self.dir, "httpd.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--user", f"--listen=127.0.0.1:{self.port}", f"--tokens={self.tokens}",
                 "--log-level=debug", *extra_args], stdout=log, stderr=subprocess.STDOUT)
        sb.wait_until(self._listening, 15, what="ccdocker-httpd to listen")

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"ccdocker-httpd exited {self.proc.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def token(self, name):
        p = sb.run(os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl"), "--tokens", self.tokens,
                   "token", "create", name)
        return p.stdout.strip()

    def ctl(self, *args, check=True):
        return sb.run(os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl"), "--tokens", self.tokens,
                      *args, check=check)

    def stop(self):
        """SIGTERM; a clean exit is 0 (under ASan a leak or an error exits otherwise)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"ccdocker-httpd did not stop on SIGTERM:\n{self.log()[-3000:]}")
        rc = self.proc.returncode
        log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)
        if rc != 0:
            raise AssertionError(f"ccdocker-httpd exited {rc}:\n{log[-6000:]}")


def curl(method, path, token=None, body=None, raw=None, headers=(), url=None, timeout=120):
    """One request with curl; returns (status, {header: value}, body text)."""
    argv = ["curl", "-sS", "-X", method, "-D", "-", "--max-time", str(timeout), (url or HTTPD.url) + path]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    for h in headers:
        argv += ["-H", h]
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    if data is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    p = subprocess.run(argv, input=data.encode() if data is not None else None, capture_output=True,
                       timeout=timeout + 10)
    if p.returncode != 0:
        raise AssertionError(f"curl {method} {path} failed: {p.stderr.decode().strip()}")
    head, _, text = p.stdout.decode().partition("\r\n\r\n")
    while head.startswith("HTTP/1.1 100"):
        head, _, text = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, text


def jcurl(method, path, token, body=None, expect=200, **kw):
    status, hdrs, text = curl(method, path, token, body, **kw)
    if status != expect:
        raise AssertionError(f"{method} {path}: expected {expect}, got {status}: {text}")
    return json.loads(text) if text else None


def ws_clients(path, token, clients=1, until_results=0, until_events=0, timeout=120, ready_file=None):
    script = os.path.join(HTTPD.dir, "ws-client.js")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WS_CLIENT)
    opt = {"url": HTTPD.url.replace("http:", "ws:") + path, "token": token, "clients": clients,
           "until_results": until_results, "until_events": until_events, "timeout_ms": timeout * 1000,
           "ready_file": ready_file}
    env = dict(os.environ, NODE_PATH=os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules"))
    return subprocess.Popen(["node", script, json.dumps(opt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def ws_result(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0 or not out.strip():
        raise AssertionError(f"the ws client failed ({proc.returncode}): {err.strip()}")
    return json.loads(out)


def session_body(prompt=None, **extra):
    body = {"workspace": {"type": "ephemeral"},
            "config": {"memory": "1G", "network": "host", "environment": sb.claude_env(MODEL),
                       "timeout_seconds": 1800}}
    if prompt:
        body["prompt"] = prompt
    body.update(extra)
    return body


def setUpModule():
    global DAEMON, HTTPD, MODEL
    MODEL = sb.ScriptedModel(SCRIPT)
    DAEMON = sb.Daemon(unit="ccdockerd-httpd-test.service", settings={
        "AllowHostNetwork": "yes",
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-httpd-runtime"),
        "MaxMemory": "2G",
        "HeartbeatTimeoutSec": "30",
    })
    # The image's own entrypoint, ccdocker-init, which runs the real CLI.
    del DAEMON.settings["SessionCommand"]
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    try:
        DAEMON.start()
        HTTPD = Httpd()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    errors = []
    for stop in (HTTPD and HTTPD.stop, DAEMON and DAEMON.stop, MODEL and MODEL.stop):
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


class HttpdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.token = HTTPD.token(sb.unique("app"))
        cls.other = HTTPD.token(sb.unique("other"))

    def create(self, prompt=None, token=None, **extra):
        s = jcurl("POST", "/api/v1/sessions", token or self.token, session_body(prompt, **extra), expect=201)
        self.addCleanup(self.forget, s["id"])
        return s

    def forget(self, sid):
        path = f"/org/ccdocker1/session/{'_3' + sid if sid[0].isdigit() else sid}"
        stop = sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true", check=False)
        if "Unknown object" in stop.stderr:
            return
        try:
            sb.wait_state(path, "stopped", "failed", timeout=30)
        finally:
            sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)

    def wait_result(self, sid, token=None):
        r = jcurl("GET", f"/api/v1/sessions/{sid}/result?wait=true&timeout=180", token or self.token, timeout=200)
        self.assertEqual(r["status"], "completed", r)
        return r

    def output(self, sid, since=0):
        return jcurl("GET", f"/api/v1/sessions/{sid}/output?since={since}", self.token)["events"]

    # ---- auth ----

    def test_health_is_open_and_everything_else_needs_a_token(self):
        status, _, text = curl("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(text)["status"], "ok")
        routes = [("GET", "/metrics"), ("GET", "/api/v1/sessions"), ("POST", "/api/v1/sessions"),
                  ("GET", f"/api/v1/sessions/{NOBODY}"), ("DELETE", f"/api/v1/sessions/{NOBODY}"),
                  ("POST", f"/api/v1/sessions/{NOBODY}/prompts"), ("GET", f"/api/v1/sessions/{NOBODY}/output"),
                  ("GET", f"/api/v1/sessions/{NOBODY}/result"), ("GET", f"/api/v1/sessions/{NOBODY}/children"),
                  ("POST", f"/api/v1/sessions/{NOBODY}/spawn"), ("GET", f"/api/v1/sessions/{NOBODY}/stream"),
                  ("GET", "/api/v1/nothing-here")]
        for token in (None, "ccd_" + "A" * 43, "not-even-shaped-like-one"):
            for method, path in routes:
                status, hdrs, text = curl(method, path, token, body={} if method == "POST" else None)
                self.assertEqual(status, 401, f"{method} {path} with {token!r}: {text}")
                self.assertTrue(hdrs.get("www-authenticate", "").startswith("Bearer"), hdrs)
                self.assertEqual(json.loads(text)["error"]["code"], "unauthorized")
                self.assertNotIn("access-control-allow-origin", hdrs)

    def test_revoked_token_is_refused_and_list_shows_tokens(self):
        name = sb.unique("short-lived")
        token = HTTPD.token(name)
        self.assertRegex(token, r"^ccd_[A-Za-z0-9_-]{43}$")
        self.assertEqual(curl("GET", "/api/v1/sessions", token)[0], 200)
        listed = json.loads(HTTPD.ctl("--json", "token", "list").stdout)
        self.assertIn(name, [t["name"] for t in listed])
        # Only the hash is kept: the token's text is nowhere in the store.
        with open(HTTPD.tokens, "rb") as f:
            self.assertNotIn(token.encode(), f.read())
        self.assertNotEqual(HTTPD.ctl("token", "create", name, check=False).returncode, 0)
        HTTPD.ctl("token", "revoke", name)
        self.assertEqual(curl("GET", "/api/v1/sessions", token)[0], 401)
        self.assertNotEqual(HTTPD.ctl("token", "revoke", name, check=False).returncode, 0)

    def test_list_leaves_the_token_store_writable(self):
        """A list checks its sessions' scope inside one read transaction (httpd/tokens.c): it must end with
        the request, or the store stays locked against every other writer (ccdockerctl token)."""
        s = self.create()
        self.assertIn(s["id"], [x["id"] for x in jcurl("GET", "/api/v1/sessions", self.token)["sessions"]])
        name = sb.unique("after-list")
        HTTPD.token(name)  # another process writes the store; a lock left behind makes it fail
        self.assertIn(name, [t["name"] for t in json.loads(HTTPD.ctl("--json", "token", "list").stdout)])
        HTTPD.ctl("token", "revoke", name)

    # ---- REST ----

    def test_create_get_list_stop_with_curl(self):
        s = self.create(task_type="http-test")
        sid = s["id"]
        self.assertRegex(sid, r"^[0-9a-f]{12}$")
        self.assertEqual(s["task_type"], "http-test")
        self.assertIn(s["state"], ("starting", "idle"))
        self.assertIsNone(s["parent_id"])
        got = jcurl("GET", f"/api/v1/sessions/{sid}", self.token)
        self.assertEqual((got["id"], got["unit"]), (sid, f"ccdocker-session-{sid}.service"))
        self.assertRegex(got["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual((got["limits"]["memory"], got["limits"]["timeout_sec"], got["limits"]["budget_tokens"]),
                         (1 << 30, 1800, 0), got["limits"])
        listed = jcurl("GET", "/api/v1/sessions", self.token)["sessions"]
        self.assertIn(sid, [x["id"] for x in listed])
        sb.wait_until(lambda: jcurl("GET", f"/api/v1/sessions/{sid}", self.token)["state"] == "idle", 60, 0.2,
                      what="the session to be idle")
        self.assertIn(sid, [x["id"] for x in jcurl("GET", "/api/v1/sessions?state=idle", self.token)["sessions"]])
        self.assertIn(sid, [x["id"] for x in jcurl("GET", "/api/v1/sessions?parent=", self.token)["sessions"]])
        self.assertNotIn(sid, [x["id"] for x in
                               jcurl("GET", "/api/v1/sessions?state=failed", self.token)["sessions"]])
        self.assertEqual(jcurl("GET", f"/api/v1/sessions/{sid}/children", self.token), {"sessions": []})
        r = jcurl("GET", f"/api/v1/sessions/{sid}/result", self.token)
        self.assertEqual(r["status"], "pending")
        stopped = jcurl("DELETE", f"/api/v1/sessions/{sid}?force=true", self.token)
        self.assertEqual(stopped["state"], "stopped")
        self.assertIn("stopped on request", stopped["state_reason"])
        status, _, text = curl("POST", f"/api/v1/sessions/{sid}/prompts", self.token, {"prompt": "hello"})
        self.assertEqual(status, 409, text)
        self.assertEqual(json.loads(text)["error"]["code"], "bad_state")

    def test_other_tokens_sessions_are_404_like_missing_ones(self):
        s = self.create()
        sid = s["id"]
        missing = curl("GET", f"/api/v1/sessions/{NOBODY}", self.other)
        self.assertEqual(missing[0], 404)
        for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/output"), ("GET", "/result"),
                             ("GET", "/children"), ("GET", "/stream")):
            status, _, text = curl(method, f"/api/v1/sessions/{sid}{path}", self.other)
            self.assertEqual((status, text), (404, missing[2]), f"{method} {path}")
        for path, body in (("/prompts", {"prompt": "hi"}), ("/spawn", {"prompt": "hi"})):
            status, _, text = curl("POST", f"/api/v1/sessions/{sid}{path}", self.other, body)
            self.assertEqual((status, text), (404, missing[2]), path)
        self.assertNotIn(sid, [x["id"] for x in jcurl("GET", "/api/v1/sessions", self.other)["sessions"]])
        self.assertEqual(curl("GET", "/api/v1/sessions/not-an-id", self.token)[0], 404)
        # The session is untouched and still the first token's.
        self.assertIn(jcurl("GET", f"/api/v1/sessions/{sid}", self.token)["state"], ("starting", "idle"))

    def test_bad_bodies_are_400_naming_the_field_and_big_ones_413(self):
        cases = [
            ("{not json", "invalid_json", "not valid JSON"),
            ("[1, 2]", "invalid_json", "must be a JSON object"),
            ('{"a": 1, "a": 2}', "invalid_json", "duplicate"),
            ('{"colour": "red"}', "invalid_body", "unknown field 'colour'"),
            ('{"config": {"memory": true}}', "invalid_body", "'config.memory'"),
            ('{"config": {"tasks": "many"}}', "invalid_body", "'config.tasks' must be an integer"),
            ('{"config": {"timeout_seconds": -1}}', "invalid_body", "'config.timeout_seconds'"),
            ('{"config": {"environment": {"A": 1}}}', "invalid_body", "'config.environment.A' must be a string"),
            ('{"workspace": "ephemeral"}', "invalid_body", "'workspace' must be an object"),
            ('{"workspace": {"type": "cloud"}}', "invalid_body", "'workspace.type'"),
            ('{"config": {"mcp_servers": "github"}}', "invalid_body", "'config.mcp_servers' must be an array"),
            ('{"config": {"claude_config": {"colour": 1}}}', "invalid_body", "'config.claude_config.colour'"),
            ('{"config": {"claude_config": {"allowed_tools": [1]}}}', "invalid_body",
             "'config.claude_config.allowed_tools[0]' must be a string"),
            ('{"config": {"claude_config": {"permission_mode": "yolo"}}}', "invalid_config", "'permission_mode'"),
            ('{"config": {"mcp_overrides": []}}', "invalid_body", "'config.mcp_overrides' must be an object"),
            ('{"config": {"secrets": "GITHUB_TOKEN"}}', "invalid_body", "'config.secrets' must be an array"),
            ('{"config": {"secrets": ["GITHUB_TOKEN"]}}', "invalid_config", "no secret 'GITHUB_TOKEN' is configured"),
            ('{"config": {"allowed_hosts": ["not a host"]}}', "invalid_config", "'allowed_hosts'"),
            ('{"config": {"cpus": "many"}}', "invalid_config", "'cpus'"),
            ('{"config": {"memory": "100G"}}', "limit_exceeded", "'memory'"),
            ('{"prompt": 5}', "invalid_body", "'prompt' must be a string"),
        ]
        for raw, code, text in cases:
            status, _, body = curl("POST", "/api/v1/sessions", self.token, raw=raw)
            self.assertEqual(status, 400, f"{raw}: {body}")
            err = json.loads(body)["error"]
            self.assertEqual(err["code"], code, raw)
            self.assertIn(text, err["message"], raw)
        status, _, body = curl("POST", "/api/v1/sessions", self.token, raw='{"prompt": "' + "x" * (1 << 20) + '"}')
        self.assertEqual(status, 413, body)
        s = self.create()
        for raw, text in (('{}', "'prompt' is required"), ('{"prompt": "x", "urgent": true}', "unknown field 'urgent'"),
                          ('{"prompt": ["x"]}', "'prompt' must be a string")):
            status, _, body = curl("POST", f"/api/v1/sessions/{s['id']}/prompts", self.token, raw=raw)
            self.assertEqual(status, 400, raw)
            self.assertIn(text, json.loads(body)["error"]["message"])
        for query, arg in (("output?since=x", "since"), ("result?wait=maybe", "wait"), ("result?timeout=4000", "timeout"),
                           ("output?colour=red", "colour")):
            status, _, body = curl("GET", f"/api/v1/sessions/{s['id']}/{query}", self.token)
            self.assertEqual(status, 400, query)
            self.assertIn(f"'{arg}'", json.loads(body)["error"]["message"])
        self.assertEqual(curl("PUT", "/api/v1/sessions", self.token)[0], 405)
        self.assertEqual(curl("GET", "/api/v1/sessions", self.token, raw="{}")[0], 400)

    def test_prompts_output_and_result(self):
        s = self.create(prompt="Say alpha please.")
        sid = s["id"]
        self.assertEqual(self.wait_result(sid)["result"], "Alpha done.")
        sent = jcurl("POST", f"/api/v1/sessions/{sid}/prompts", self.token, {"prompt": "Now beta."}, expect=202)
        self.assertTrue(sent["message_id"])
        sb.wait_until(lambda: jcurl("GET", f"/api/v1/sessions/{sid}/result", self.token)["result"] == "Beta done.",
                      120, 0.5, what="the second turn")
        r = jcurl("GET", f"/api/v1/sessions/{sid}/result", self.token)
        self.assertEqual((r["status"], r["error"]), ("completed", None))
        self.assertGreater(r["usage"].get("output_tokens", 0), 0)
        events = self.output(sid)
        self.assertEqual([e["seq"] for e in events], list(range(1, len(events) + 1)))
        self.assertEqual([e["data"]["type"] for e in events if e["data"]["type"] == "result"], ["result", "result"])
        page = jcurl("GET", f"/api/v1/sessions/{sid}/output?since=2&limit=3", self.token)
        self.assertEqual([e["seq"] for e in page["events"]], [3, 4, 5])
        self.assertEqual(page["next_since"], 5)

    def test_spawn_and_children(self):
        parent = self.create()
        pid = parent["id"]
        child = jcurl("POST", f"/api/v1/sessions/{pid}/spawn", self.token,
                      {"prompt": "Say beta please.", "task_type": "child-task"}, expect=201)
        self.addCleanup(self.forget, child["id"])
        self.assertEqual((child["parent_id"], child["depth"], child["task_type"]), (pid, 1, "child-task"))
        kids = jcurl("GET", f"/api/v1/sessions/{pid}/children", self.token)["sessions"]
        self.assertEqual([k["id"] for k in kids], [child["id"]])
        self.assertIn(child["id"], [x["id"] for x in
                                    jcurl("GET", f"/api/v1/sessions?parent={pid}", self.token)["sessions"]])
        # The child is in the token's scope as a descendant; the other token sees neither.
        self.assertEqual(self.wait_result(child["id"])["result"], "Beta done.")
        self.assertEqual(curl("GET", f"/api/v1/sessions/{child['id']}", self.other)[0], 404)
        status, _, body = curl("POST", f"/api/v1/sessions/{pid}/spawn", self.token, {"prompt": "x", "memory": "1G"})
        self.assertEqual(status, 400)
        self.assertIn("unknown field 'memory'", body)
        metrics = curl("GET", "/metrics", self.token)[2]
        self.assertRegex(metrics, r"ccdocker_httpd_spawns_total [1-9]")

    # ---- streams ----

    def test_websocket_reconnect_with_since_gets_every_event_exactly_once(self):
        s = self.create(prompt="Say alpha please.")
        sid = s["id"]
        # The first client follows the live session and goes away after two events.
        first = ws_result(ws_clients(f"/api/v1/sessions/{sid}/stream", self.token, until_events=2))
        self.assertIsNone(first[0]["error"])
        seen = [e[0] for e in first[0]["events"]]
        self.assertEqual(seen, [1, 2])
        # Meanwhile the session goes on: the rest of the turn and a second one.
        self.wait_result(sid)
        jcurl("POST", f"/api/v1/sessions/{sid}/prompts", self.token, {"prompt": "Now beta."}, expect=202)
        second = ws_clients(f"/api/v1/sessions/{sid}/stream?since={seen[-1]}", self.token, until_results=2)
        got = ws_result(second)[0]
        self.assertIsNone(got["error"])
        seqs = seen + [e[0] for e in got["events"]]
        stored = [e["seq"] for e in self.output(sid)]
        self.assertEqual(seqs, stored[:len(seqs)])
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "a gap or a duplicate")
        self.assertEqual([t for _, t in got["events"]].count("result"), 2)
        # A client of an ended session gets the rest and a normal close.
        jcurl("DELETE", f"/api/v1/sessions/{sid}", self.token)
        last = ws_result(ws_clients(f"/api/v1/sessions/{sid}/stream?since={len(stored) - 1}", self.token))[0]
        self.assertEqual((last["code"], last["reason"]), (1000, "session ended"))
        self.assertEqual([e[0] for e in last["events"]], [len(stored)] if len(stored) == len(self.output(sid)) else
                         [e["seq"] for e in self.output(sid, len(stored) - 1)])

    def test_sse_with_curl_resumes_after_last_event_id(self):
        s = self.create(prompt="Say alpha please.")
        sid = s["id"]
        url = f"{HTTPD.url}/api/v1/sessions/{sid}/stream?since=1"
        live = subprocess.Popen(["curl", "-sSN", "--max-time", "180", "-H", "Accept: text/event-stream", "-H",
                                 f"Authorization: Bearer {self.token}", url], stdout=subprocess.PIPE, text=True)
        self.addCleanup(live.wait)
        self.addCleanup(live.kill)
        self.wait_result(sid)
        jcurl("DELETE", f"/api/v1/sessions/{sid}", self.token)
        out, _ = live.communicate(timeout=60)
        ids = [int(m) for m in re.findall(r"^id: (\d+)$", out, re.M)]
        stored = self.output(sid)
        self.assertEqual(ids, [e["seq"] for e in stored[1:]])
        datas = [json.loads(m) for m in re.findall(r"^data: (\{\"seq\".*)$", out, re.M)]
        self.assertEqual([d["data"] for d in datas], [e["data"] for e in stored[1:]])
        self.assertIn("event: end\n", out)
        # Last-Event-ID, as EventSource sends it when it reconnects, wins over since.
        p = subprocess.run(["curl", "-sSN", "--max-time", "30", "-H", "Accept: text/event-stream", "-H",
                            f"Authorization: Bearer {self.token}", "-H", f"Last-Event-ID: {ids[-2]}", url],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual([int(m) for m in re.findall(r"^id: (\d+)$", p.stdout, re.M)], [ids[-1]])
        status, _, body = curl("GET", f"/api/v1/sessions/{sid}/stream", self.token)
        self.assertEqual(status, 406, body)

    def test_hundred_websocket_clients_on_one_session(self):
        s = self.create()
        sid = s["id"]
        ready = os.path.join(HTTPD.dir, f"ready-{sid}")
        clients = ws_clients(f"/api/v1/sessions/{sid}/stream", self.token, clients=100, until_results=1,
                             timeout=240, ready_file=ready)
        sb.wait_until(lambda: os.path.exists(ready) or clients.poll() is not None, 60, what="100 sockets to open")
        metrics = curl("GET", "/metrics", self.token)[2]
        self.assertRegex(metrics, r'ccdocker_httpd_stream_clients\{transport="websocket"\} (\d{3})')
        jcurl("POST", f"/api/v1/sessions/{sid}/prompts", self.token, {"prompt": "fanout now"}, expect=202)
        results = ws_result(clients, timeout=300)
        stored = [[e["seq"], e["data"]["type"]] for e in self.output(sid)]
        self.assertEqual(len(results), 100)
        for r in results:
            self.assertIsNone(r["error"])
            self.assertEqual(r["events"], stored[:len(r["events"])])
            self.assertEqual(r["events"][-1][1], "result")
        metrics = curl("GET", "/metrics", self.token)[2]
        sent = int(re.search(r'ccdocker_httpd_events_sent_total\{transport="websocket"\} (\d+)', metrics).group(1))
        self.assertGreaterEqual(sent, 100 * len(results[0]["events"]))


    # ---- the documents ----

    def test_openapi_document_matches_the_server(self):
        import yaml
        with open(os.path.join(sb.SRC, "docs", "openapi.yaml")) as f:
            doc = yaml.safe_load(f)
        ops = [(p, m) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "delete", "patch")]
        # Every route of the server is documented (probing what is not: 404 for an authenticated client).
        self.assertEqual(len(ops), 19)
        self.assertEqual(curl("GET", "/api/v1/sessions/" + NOBODY + "/else", self.token)[0], 404)

        def example(p, m):
            body = doc["paths"][p][m].get("requestBody")
            return resolve(doc, body)["content"]["application/json"]["example"] if body else None

        created = {}
        seen = set()

        def call(p, m, sid, token=self.token, headers=()):
            body = example(p, m)
            if p == "/api/v1/sessions" and m == "post":
                body = dict(body, config=dict(body["config"], environment=sb.claude_env(MODEL), network="host"))
            status, hdrs, text = curl(m.upper(), p.replace("{id}", sid), token, body, headers=headers, timeout=60)
            check_response(doc, p, m, status, hdrs, text)
            seen.add((p, m))
            return status, hdrs, text

        # Without a token: 401 everywhere but /health, each in the document's shape.
        for p, m in ops:
            status = call(p, m, NOBODY, token=None)[0]
            self.assertEqual(status, 200 if p == "/health" else 401, (p, m))
        # A session made from the document's own example, then every operation on it.
        status, _, text = call("/api/v1/sessions", "post", "")
        self.assertEqual(status, 201, text)
        sid = json.loads(text)["id"]
        self.addCleanup(self.forget, sid)
        order = [op for op in ops if op not in (("/api/v1/sessions/{id}", "delete"),
                                                ("/api/v1/sessions/{id}/stream", "get"),
                                                ("/api/v1/sessions", "post"),
                                                # the dashboard's: a stream, and one for an ended session
                                                ("/api/v1/events", "get"),
                                                ("/api/v1/sessions/{id}/remove", "post"),
                                                # answered in tests/integration/test_questions.py
                                                ("/api/v1/sessions/{id}/questions/{qid}/answer", "post"))]
        for p, m in order:
            status, _, text = call(p, m, sid)
            self.assertLess(status, 300, f"{m} {p}: {text}")
            if p.endswith("/spawn"):
                created["child"] = json.loads(text)["id"]
                self.addCleanup(self.forget, created["child"])
            # And a session that is not there: 404 for every operation on one.
            if "{id}" in p:
                self.assertEqual(call(p, m, NOBODY)[0], 404)
        self.assertEqual(curl("POST", f"/api/v1/sessions/{sid}/questions/none/answer", self.token,
                              {"text": "yes"})[0], 404)
        seen.add(("/api/v1/sessions/{id}/questions/{qid}/answer", "post"))
        self.assertEqual(call("/api/v1/sessions/{id}", "delete", sid)[0], 200)
        status, hdrs, text = call("/api/v1/sessions/{id}/stream", "get", sid, headers=["Accept: text/event-stream"])
        self.assertEqual(status, 200)
        self.assertIn("event: end", text)
        self.assertEqual(call("/api/v1/sessions/{id}/stream", "get", sid)[0], 406)
        self.assertEqual(call("/api/v1/sessions/{id}/stream", "get", NOBODY)[0], 404)
        self.assertEqual(call("/api/v1/events", "get", "")[0], 406)  # tests/integration/test_dashboard.py follows it
        self.assertEqual(call("/api/v1/sessions/{id}/remove", "post", NOBODY)[0], 404)
        self.assertEqual(call("/api/v1/sessions/{id}/remove", "post", sid)[0], 200)
        for raw in ('{"config": {"memory": []}}', "x" * (2 << 20)):
            status, hdrs, text = curl("POST", "/api/v1/sessions", self.token, raw=raw)
            check_response(doc, "/api/v1/sessions", "post", status, hdrs, text)
        self.assertEqual(seen, set(ops))

    def test_api_md_examples_run_as_written(self):
        with open(os.path.join(sb.SRC, "docs", "api.md")) as f:
            text = f.read()
        blocks = re.findall(r"^```(sh|js)\n(.*?)^```$", text, re.M | re.S)
        sh = "\n".join(b for kind, b in blocks if kind == "sh")
        js = [b for kind, b in blocks if kind == "js"]
        self.assertGreaterEqual(sh.count("curl "), 10)
        self.assertEqual(len(js), 1)
        # The one change: the first session reaches the scripted model.
        config = '"config": {"timeout_seconds": 600}'
        self.assertIn(config, sh)
        env = json.dumps({"timeout_seconds": 600, "network": "host", "memory": "1G",
                          "environment": sb.claude_env(MODEL)})
        sh = sh.replace(config, f'"config": {env}')
        token = HTTPD.token(sb.unique("docs"))
        id_file = os.path.join(HTTPD.dir, "docs-id")
        script = "set -euo pipefail\n" + sh + f'\nprintf %s "$ID" > {id_file}\n'
        environ = dict(os.environ, CCDOCKER_URL=HTTPD.url, CCDOCKER_TOKEN=token)
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=environ, timeout=400)
        if os.path.exists(id_file):
            with open(id_file) as f:
                sid = f.read().strip()
            self.addCleanup(self.forget, sid)
            for kid in jcurl("GET", f"/api/v1/sessions/{sid}/children", token)["sessions"]:
                self.addCleanup(self.forget, kid["id"])
        self.assertEqual(p.returncode, 0, f"the examples failed:\n{p.stdout}\n{p.stderr}")
        self.assertIn("Alpha done.", p.stdout)
        self.assertIn("stopped", p.stdout)
        script_js = os.path.join(HTTPD.dir, "docs-example.js")
        with open(script_js, "w") as f:
            f.write(js[0])
        p = subprocess.run(["node", script_js], capture_output=True, text=True, timeout=60,
                           env=dict(environ, ID=sid, NODE_PATH=os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules")))
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[-1], "closed 1000 session ended")
        seqs = [int(line.split()[0]) for line in lines[:-1]]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(len(seqs), len(self.output_as(token, sid)))

    def output_as(self, token, sid):
        return jcurl("GET", f"/api/v1/sessions/{sid}/output", token)["events"]

    # ---- metrics ----

    def test_metrics_are_prometheus_text(self):
        status, hdrs, text = curl("GET", "/metrics", self.token)
        self.assertEqual(status, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"))
        for name in ("ccdocker_sessions", "ccdocker_httpd_requests_total", "ccdocker_httpd_request_duration_seconds",
                     "ccdocker_httpd_stream_clients", "ccdocker_httpd_events_sent_total", "ccdocker_httpd_spawns_total",
                     "ccdocker_httpd_refusals_total"):
            self.assertIn(f"# TYPE {name} ", text)
        self.assertRegex(text, r'ccdocker_sessions\{state="idle"\} \d+')
        self.assertRegex(text, r'ccdocker_httpd_request_duration_seconds_bucket\{route="/metrics",method="GET",le="\+Inf"\} \d+')
        for line in text.splitlines():
            if line and not line.startswith("#"):
                self.assertRegex(line, r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')


if __name__ == "__main__":
    unittest.main()

"""The daemon's model proxy (daemon/model-proxy.c) through tests/helpers/model-proxy-probe, which runs it
on its own event loop with one session socket, pointed at the real scripted model on loopback. Requests
go over the session's unix socket with http.client, as the bridge in the container will send them.
Covered: a streaming call arrives intact and incrementally (its first event long before the scripted
delay ends); the proxy's credential (API key, or OAuth token with its anthropic-beta) reaches upstream
in place of the client's placeholder, and appears nowhere in what the proxy prints, logs or answers;
usage is counted per call and per session; ten concurrent calls against a model that answers bursts
with 429 + retry-after all complete, never more than MaxInFlight at once upstream; a call over budget
is refused with a 400 the CLI shows, without calling upstream; a client that hangs up mid-stream ends
its upstream call. The attacks of issue 14: batches and files requests are refused 403 and never reach
upstream; ten concurrent calls against a small budget do not together overrun it; an abandoned stream
is charged what it produced; one session flooding calls does not hold back another's. The last test runs the probe built with AddressSanitizer, when build-asan has it."""

import hashlib
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import sandbox as sb

API_KEY = "sk-ant-api03-proxytest-" + "Q7x9" * 8
OAUTH_TOKEN = "sk-ant-oat01-proxytest-" + "Z3k1" * 8
PLACEHOLDER = "sk-placeholder-not-a-key"
TEXT = "The quick brown fox jumps over the lazy dog. " * 4


def probe_path(build_dir=None):
    return os.path.join(build_dir or sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "model-proxy-probe")


def sha256(s):
    return hashlib.sha256(s.encode()).hexdigest()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def message_body(stream=True, text="hello", model="claude-proxy-test"):
    return json.dumps({"model": model, "max_tokens": 64, "stream": stream,
                       "messages": [{"role": "user", "content": text}],
                       "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}]})


def client_headers(extra=None):
    h = {"content-type": "application/json", "anthropic-version": "2023-06-01",
         "x-api-key": PLACEHOLDER, "anthropic-beta": "client-beta-1"}
    h.update(extra or {})
    return h


def parse_sse(text):
    """[(event, data)] of an SSE stream."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if name or data:
            events.append((name, json.loads("\n".join(data)) if data else None))
    return events


class Probe:
    """model-proxy-probe on a socket in a temporary directory; its stdout JSON lines in self.lines."""

    def __init__(self, upstream, *args, env=None, binary=None, extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-model-proxy-")
        self.socket = os.path.join(self.dir, "model.sock")
        self.stderr_path = os.path.join(self.dir, "stderr")
        e = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")}
        e.update(env or {})
        e.update(extra_env or {})
        self.stderr_file = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([binary or probe_path(), "--upstream", upstream, "--socket", self.socket,
                                      "--session", "0123456789ab", *args],
                                     stdout=subprocess.PIPE, stderr=self.stderr_file, text=True, env=e)
        self.lines = queue.Queue()
        self.stdout = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            ready = self.next_event("ready", 20)
        except BaseException:
            self.stop()
            raise
        self.credential = ready["credential"]

    def _read(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next_event(self, kind, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"model-proxy-probe: no {kind} event in {timeout} s: {self.stderr()[-2000:]}")
            if ev is None:
                raise AssertionError(f"model-proxy-probe exited ({self.proc.wait()}): {self.stderr()[-2000:]}")
            if ev.get("event") == kind:
                return ev

    def calls(self, n, timeout=30):
        return [self.next_event("call", timeout) for _ in range(n)]

    def connection(self, timeout=60):
        return UnixHTTPConnection(self.socket, timeout)

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM; returns (exit status, totals event or None)."""
        totals = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        self.proc.stdout.close()
        while True:
            try:
                ev = self.lines.get_nowait()
            except queue.Empty:
                break
            if ev and ev.get("event") == "totals":
                totals = ev
        self.stderr_file.close()
        return self.proc.returncode, totals

    def cleanup(self):
        if self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ModelProxyTest(unittest.TestCase):
    def start(self, script, *args, env=None, binary=None, extra_env=None):
        model = sb.ScriptedModel(script)
        self.addCleanup(model.stop)
        probe = Probe(model.base_url, *args, env=env if env is not None else {"ANTHROPIC_API_KEY": API_KEY},
                      binary=binary, extra_env=extra_env)
        self.addCleanup(probe.cleanup)
        return model, probe

    def assert_no_secret(self, probe, model, *texts):
        code, totals = probe.stop()
        self.assertEqual(code, 0, probe.stderr()[-3000:])
        everything = "".join(probe.stdout) + probe.stderr() + "".join(texts)
        with open(model.log_path) as f:
            everything += f.read()
        for secret in (API_KEY, OAUTH_TOKEN, API_KEY[-20:], OAUTH_TOKEN[-20:]):
            self.assertNotIn(secret, everything)
        return totals

    def test_stream_passes_through_incrementally_with_the_proxy_credential(self):
        model, probe = self.start({"steps": [], "default": {"text": TEXT, "delay_ms": 1500}})
        self.assertEqual(probe.credential, "api-key")

        conn = probe.connection()
        t0 = time.monotonic()
        conn.request("POST", "/v1/messages?beta=true", body=message_body(), headers=client_headers())
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.getheader("content-type").startswith("text/event-stream"))
        self.assertIsNotNone(resp.getheader("request-id"))  # upstream headers pass through
        first = resp.readline()
        t_first = time.monotonic() - t0
        raw = first + resp.read()
        t_all = time.monotonic() - t0
        conn.close()
        # message_start is sent before the 1.5 s delay, the text after it.
        self.assertEqual(first.strip(), b"event: message_start")
        self.assertLess(t_first, 1.0, f"first bytes after {t_first:.3f} s")
        self.assertGreaterEqual(t_all, 1.5)

        text = raw.decode()
        events = parse_sse(text)
        names = [n for n, _ in events if n != "ping"]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-2:], ["message_delta", "message_stop"])
        got = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
        self.assertEqual(got, TEXT)

        # Upstream saw the proxy's key, not the placeholder, and the client's other headers and query.
        rec = model.requests()[-1]
        self.assertEqual(rec["path"], "/v1/messages?beta=true")
        self.assertEqual(rec["credential_sha256"], {"x-api-key": sha256(API_KEY)})
        self.assertEqual(rec["headers"]["anthropic-beta"], "client-beta-1")
        self.assertEqual(rec["headers"]["anthropic-version"], "2023-06-01")
        self.assertNotIn("authorization", rec["headers"])

        # Usage: what message_start and message_delta said.
        start = next(d for n, d in events if n == "message_start")["message"]["usage"]
        delta = next(d for n, d in events if n == "message_delta")["usage"]
        call = probe.calls(1)[0]
        self.assertEqual((call["status"], call["complete"], call["attempts"]), (200, True, 1))
        self.assertEqual(call["model"], "claude-proxy-test")
        self.assertEqual(call["input_tokens"], start["input_tokens"])
        self.assertEqual(call["output_tokens"], delta["output_tokens"])
        self.assertAlmostEqual(call["cost_usd"], (start["input_tokens"] * 3 + delta["output_tokens"] * 15) / 1e6)
        self.assertGreaterEqual(call["latency_ms"], 1500)

        # A non-streaming call: usage from the JSON body.
        conn = probe.connection()
        conn.request("POST", "/v1/messages", body=message_body(stream=False), headers=client_headers())
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        self.assertEqual(resp.status, 200)
        call2 = probe.calls(1)[0]
        self.assertEqual(call2["input_tokens"], body["usage"]["input_tokens"])
        self.assertEqual(call2["output_tokens"], body["usage"]["output_tokens"])

        totals = self.assert_no_secret(probe, model, text, json.dumps(body))
        self.assertEqual(totals["calls"], 2)
        self.assertEqual(totals["input_tokens"], call["input_tokens"] + call2["input_tokens"])
        self.assertEqual(totals["output_tokens"], call["output_tokens"] + call2["output_tokens"])

    def test_oauth_token_goes_as_bearer_with_its_beta(self):
        model, probe = self.start({"steps": [], "default": {"text": "ok"}},
                                  env={"CLAUDE_CODE_OAUTH_TOKEN": OAUTH_TOKEN})
        self.assertEqual(probe.credential, "oauth")
        conn = probe.connection()
        conn.request("POST", "/v1/messages/count_tokens?beta=true", body=message_body(stream=False),
                     headers=client_headers({"authorization": "Bearer " + PLACEHOLDER}))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertIn("input_tokens", json.loads(resp.read()))
        conn.close()
        rec = model.requests()[-1]
        self.assertEqual(rec["path"], "/v1/messages/count_tokens?beta=true")
        self.assertEqual(rec["credential_sha256"], {"authorization": sha256("Bearer " + OAUTH_TOKEN)})
        self.assertEqual(rec["headers"]["anthropic-beta"], "client-beta-1,oauth-2025-04-20")
        self.assertEqual(probe.calls(1)[0]["path"], "/v1/messages/count_tokens")
        self.assert_no_secret(probe, model)

    def test_ten_concurrent_calls_through_429s_stay_within_max_in_flight(self):
        max_in_flight = 2
        model, probe = self.start(
            {"steps": [], "default": {"text": "ok", "delay_ms": 300},
             "rate_limit": {"requests": 3, "window_ms": 1000, "retry_after": 1}},
            "--max-in-flight", str(max_in_flight), "--rpm", "600")
        results = [None] * 10

        def one(i):
            try:
                conn = probe.connection(timeout=120)
                conn.request("POST", "/v1/messages", body=message_body(text=f"call {i}"), headers=client_headers())
                resp = conn.getresponse()
                results[i] = (resp.status, resp.read().decode())
                conn.close()
            except Exception as e:  # reported below
                results[i] = (None, repr(e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        elapsed = time.monotonic() - t0

        for status, text in results:
            self.assertEqual(status, 200, text[:500])
            self.assertEqual([n for n, _ in parse_sse(text)][-1], "message_stop")
        records = model.requests()
        self.assertGreaterEqual(sum(1 for r in records if r["status"] == 429), 1, "the burst met no 429")
        self.assertEqual(sum(1 for r in records if r["status"] == 200), 10)
        self.assertLessEqual(max(r["in_flight"] for r in records), max_in_flight)
        calls = probe.calls(10, timeout=60)
        self.assertTrue(all(c["status"] == 200 and c["complete"] for c in calls))
        self.assertGreater(max(c["attempts"] for c in calls), 1)
        self.assertLessEqual(max(c["in_flight_peak"] for c in calls), max_in_flight)
        totals = self.assert_no_secret(probe, model)
        self.assertEqual(totals["calls"], 10)
        print(f"\n  10 calls, MaxInFlight {max_in_flight}, {sum(1 for r in records if r['status'] == 429)} "
              f"upstream 429s retried by the proxy: all done in {elapsed:.1f} s", flush=True)

    def test_over_budget_is_refused_without_calling_upstream(self):
        budget = tempfile.NamedTemporaryFile("w", delete=False, prefix="ccdocker-budget-")
        self.addCleanup(os.unlink, budget.name)
        budget.write("spent 1.20 of 1.00 USD\n")
        budget.close()
        model, probe = self.start({"steps": [], "default": {"text": "ok"}}, "--budget-file", budget.name)

        conn = probe.connection()
        conn.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        resp = conn.getresponse()
        body = json.loads(resp.read())
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.getheader("x-should-retry"), "false")
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        self.assertEqual(body["error"]["message"],
                         "cc-docker: this session tree is over its budget (spent 1.20 of 1.00 USD)")
        self.assertEqual(model.requests(), [])
        call = probe.calls(1)[0]
        self.assertEqual((call["status"], call["upstream"], call["attempts"]), (400, False, 0))

        # Within budget again: the same connection goes through.
        with open(budget.name, "w"):
            pass
        conn.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        resp = conn.getresponse()
        resp.read()
        conn.close()
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(model.requests()), 1)
        self.assert_no_secret(probe, model)

    def test_client_hanging_up_mid_stream_ends_the_call(self):
        model, probe = self.start({"steps": [], "default": {"text": "late", "delay_ms": 5000}})
        conn = probe.connection()
        conn.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        resp = conn.getresponse()
        self.assertEqual(resp.readline().strip(), b"event: message_start")
        t0 = time.monotonic()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        call = probe.calls(1, timeout=10)[0]
        self.assertLess(time.monotonic() - t0, 3, "the call was recorded only when upstream finished")
        self.assertEqual((call["status"], call["complete"]), (200, False))
        self.assertGreater(call["input_tokens"], 0)  # message_start was read
        # Paths outside /v1/ are not forwarded.
        conn = probe.connection()
        conn.request("GET", "/admin/../v1/x")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 404)
        self.assertEqual(json.loads(resp.read())["error"]["type"], "not_found_error")
        conn.close()
        self.assert_no_secret(probe, model)

    def test_only_the_accounted_endpoints_are_forwarded(self):
        """Batches are never counted against a budget and files belong to the shared key: a session's
        socket may not reach them. Every such call is a 403 that names the path, and upstream sees none."""
        model, probe = self.start({"steps": [], "default": {"text": "ok"}})
        attacks = [("POST", "/v1/messages/batches", json.dumps({"requests": []})),
                   ("GET", "/v1/messages/batches", None),
                   ("GET", "/v1/messages/batches/msgbatch_01/results", None),
                   ("GET", "/v1/files", None),
                   ("GET", "/v1/files/file_01/content", None),
                   ("DELETE", "/v1/files/file_01", None),
                   ("POST", "/v1/files", "x"),
                   ("GET", "/v1/models", None),
                   ("POST", "/v1/complete", "{}"),
                   ("POST", "/v1/messages/", message_body())]
        for method, path, body in attacks:
            # A connection each: a refusal may close the connection before its body is read, and the
            # next request on it would then race that close.
            conn = probe.connection()
            conn.request(method, path + "?beta=true", body=body, headers=client_headers())
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            conn.close()
            self.assertEqual(resp.status, 403, (method, path, answer))
            self.assertEqual(answer["type"], "error")
            self.assertEqual(answer["error"]["type"], "permission_error")
            self.assertIn(path, answer["error"]["message"])
            self.assertIn("only POST /v1/messages and POST /v1/messages/count_tokens", answer["error"]["message"])
        # The right path with another method: 405.
        for method in ("GET", "DELETE", "PUT"):
            conn = probe.connection()
            conn.request(method, "/v1/messages", headers=client_headers())
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            conn.close()
            self.assertEqual(resp.status, 405, answer)
            self.assertIn("POST /v1/messages", answer["error"]["message"])
        conn.close()
        self.assertEqual(model.requests(main_only=False), [])
        calls = probe.calls(len(attacks) + 3)
        self.assertTrue(all(not c["upstream"] and c["attempts"] == 0 for c in calls))
        self.assertEqual(sorted({c["status"] for c in calls}), [403, 405])
        # Journaled: each refusal says so.
        self.assertGreaterEqual(probe.stderr().count("is not forwarded"), len(attacks))
        self.assert_no_secret(probe, model)

    def test_a_refusal_waits_for_a_small_body(self):
        """A refused call's small body is read before the refusal is sent: a client that writes its
        headers, then its body a moment later, gets the 403 instead of a reset connection."""
        model, probe = self.start({"steps": [], "default": {"text": "ok"}})
        body = json.dumps({"requests": [{"custom_id": "x" * 4000}]}).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in client_headers().items())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(probe.socket)
        s.sendall(f"POST /v1/messages/batches HTTP/1.1\r\nHost: m\r\n{head}"
                  f"Content-Length: {len(body)}\r\n\r\n".encode())
        time.sleep(0.5)  # the old proxy answered and closed in here
        s.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        s.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 403"), answer[:200])
        self.assertIn(b"/v1/messages/batches", answer)
        self.assertEqual(model.requests(main_only=False), [])

    def test_concurrent_calls_cannot_overrun_a_budget(self):
        """Ten calls at once against a budget of 3000 tokens, each reserving its body and max_tokens
        (about 4,100): the used total stays within the budget plus one call's reservation (before, all
        ten passed the check at once and used about 10,000)."""
        budget = 3000
        model, probe = self.start({"steps": [], "default": {"text": "ok", "delay_ms": 800}},
                                  "--budget-tokens", str(budget), "--max-in-flight", "10",
                                  "--max-in-flight-per-session", "10")
        results = [None] * 10

        def one(i):
            conn = probe.connection(timeout=60)
            conn.request("POST", "/v1/messages", body=message_body(text=f"call {i} " + "x" * 4000),
                         headers=client_headers())
            resp = conn.getresponse()
            results[i] = (resp.status, resp.read().decode())
            conn.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = [r[0] for r in results]
        self.assertIn(200, statuses)
        # Those without room beside the calls running are deferred with a 429 the SDK retries.
        self.assertIn(429, statuses)
        self.assertEqual(set(statuses), {200, 429})
        for status, text in results:
            if status == 429:
                self.assertIn("no room for this call beside the calls running", json.loads(text)["error"]["message"])
        calls = probe.calls(10)
        reservation = max(c["reserved_tokens"] for c in calls)
        # Once the calls have settled and the budget is used up, a call is refused (400), not deferred.
        while True:
            conn = probe.connection()
            conn.request("POST", "/v1/messages", body=message_body(stream=False, text="more " + "x" * 4000),
                         headers=client_headers())
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            conn.close()
            calls.append(probe.calls(1)[0])
            if resp.status != 200:
                break
        self.assertEqual(resp.status, 400, answer)
        self.assertEqual(resp.getheader("x-should-retry"), "false")
        self.assertIn("over its budget", answer["error"]["message"])
        self.assertGreater(reservation, 4000)
        code, totals = probe.stop()
        admitted = sum(1 for c in calls if c["status"] == 200)
        used = (totals["input_tokens"] + totals["output_tokens"] + totals["cache_creation_input_tokens"]
                + totals["cache_read_input_tokens"])
        self.assertLessEqual(used, budget + reservation, (used, statuses))
        self.assertEqual(len(model.requests()), admitted)
        print(f"\n  10 concurrent calls, budget {budget} tokens, reservation {reservation}: "
              f"{statuses.count(200)} admitted at once, {admitted} in all, {used} tokens used", flush=True)

    def test_an_abandoned_stream_is_charged_what_it_produced(self):
        """A client that reads part of a long answer and hangs up is charged message_start's input and
        the output of the deltas the proxy passed on, not only message_start's one output token."""
        text = "All work and no play makes Jack a dull boy. " * 24000  # about 1 MB of deltas
        model, probe = self.start({"steps": [], "default": {"text": text}})
        conn = probe.connection()
        conn.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        resp = conn.getresponse()
        got = b""
        while got.count(b"content_block_delta") < 50:
            got += resp.read1(4096)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        call = probe.calls(1, timeout=20)[0]
        self.assertEqual((call["status"], call["complete"]), (200, False))
        self.assertGreater(call["input_tokens"], 0)
        full = model.requests()[-1]["reply"]["usage"]["output_tokens"]
        self.assertGreater(call["output_tokens"], 40, call)  # message_start alone says 1
        self.assertLess(call["output_tokens"], full, call)  # not the whole answer: it was cut short
        print(f"\n  abandoned stream charged {call['output_tokens']} output tokens of {full}", flush=True)
        self.assert_no_secret(probe, model)

    def test_one_session_flooding_does_not_hold_back_another(self):
        """Session A sends eight calls at once with MaxInFlight 2; session B's one call, sent after,
        goes upstream second, not ninth: A may have one call in flight (half of MaxInFlight) and the
        sessions take turns."""
        other = tempfile.mkdtemp(prefix="ccdocker-model-proxy-b-")
        self.addCleanup(shutil.rmtree, other, True)
        b_socket = os.path.join(other, "model.sock")
        model, probe = self.start({"steps": [], "default": {"text": "ok", "delay_ms": 1500}},
                                  "--max-in-flight", "2", "--rpm", "6000", "--also", f"bbbbbbbbbbbb={b_socket}")
        results = {}

        def one(name, path, text):
            conn = UnixHTTPConnection(path, timeout=120)
            conn.request("POST", "/v1/messages", body=message_body(text=text), headers=client_headers())
            resp = conn.getresponse()
            results[text] = resp.status
            resp.read()
            conn.close()

        threads = [threading.Thread(target=one, args=("a", probe.socket, f"flood {i}")) for i in range(8)]
        for t in threads:
            t.start()
        sb.wait_until(lambda: len(model.requests()) >= 1, timeout=30, what="A's first call upstream")
        time.sleep(0.3)  # A's other calls are read and queued by now (a slow host only weakens the test)
        b = threading.Thread(target=one, args=("b", b_socket, "from B"))
        b.start()
        threads.append(b)
        for t in threads:
            t.join(120)
        self.assertEqual(set(results.values()), {200})
        order = [r["last_user_text"] for r in model.requests()]
        self.assertEqual(len(order), 9)
        self.assertLess(order.index("from B"), 2, order)
        calls = probe.calls(9, timeout=60)
        b_call = next(c for c in calls if c["session"] == "bbbbbbbbbbbb")
        self.assertLess(b_call["queued_ms"], 1500)
        self.assertLessEqual(max(c["in_flight_peak"] for c in calls), 2)

    def test_under_address_sanitizer(self):
        asan_build = os.path.join(sb.SRC, "build-asan")
        binary = probe_path(asan_build)
        if not os.path.exists(binary):
            self.skipTest("build-asan has no model-proxy-probe")
        model, probe = self.start(
            {"steps": [], "default": {"text": TEXT, "delay_ms": 200},
             "rate_limit": {"requests": 2, "window_ms": 500, "retry_after": 0.5}},
            "--max-in-flight", "2", binary=binary,
            extra_env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=66",
                       "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
        statuses = []

        def one(stream):
            conn = probe.connection()
            conn.request("POST", "/v1/messages", body=message_body(stream=stream), headers=client_headers())
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            conn.close()

        threads = [threading.Thread(target=one, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # One left hanging mid-stream, and one left waiting, when the proxy stops.
        hung = probe.connection()
        hung.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        hung.getresponse().readline()
        waiting = probe.connection()
        waiting.request("POST", "/v1/messages", body=message_body(), headers=client_headers())
        time.sleep(0.2)
        self.assertEqual(statuses, [200] * 4)
        code, totals = probe.stop()
        stderr = probe.stderr()
        hung.close()
        waiting.close()
        self.assertNotIn("AddressSanitizer", stderr)
        self.assertNotIn("LeakSanitizer", stderr)
        self.assertNotIn("runtime error", stderr)
        self.assertEqual(code, 0, stderr[-3000:])
        self.assertGreaterEqual(totals["calls"], 4)


if __name__ == "__main__":
    unittest.main()

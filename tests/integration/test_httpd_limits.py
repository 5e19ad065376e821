"""ccdocker-httpd against the HTTP clients that attack it (issue 14, defect 8): a request without a token
is refused on its headers and its body never read; one client address holds a bounded number of
connections; a body sent a byte at a time is cut off by its deadline; bodies together stay within their
memory budget, asserted from the VmHWM of the server's /proc/PID/status, not from timings. A
well-behaved client beside the attackers gets its answers throughout.

The test starts the real ccdocker-httpd of the build under test (by PID) with small limits, next to its
own ccdockerd. Loopback has all of 127.0.0.0/8, so each attacker binds a source address of its own and
the per-address limit of one does not hide the effect of another.
"""

import base64
import http.client
import importlib.util
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import sandbox as sb
import test_httpd as th
from test_httpd import Httpd

DAEMON = None
HTTPD = None

PER_CLIENT = 8
PER_TOKEN = 2
BODY_MEMORY = 8 * 1024 * 1024
# Long enough for the memory test to hold its bodies (it finishes them well within it), short enough for
# the slowloris test to wait for.
BODY_TIMEOUT = 20
MIB = 1024 * 1024


class LimitedHttpd(Httpd):
    """test_httpd's Httpd (token store, log, stop), started with the limits under test."""

    def __init__(self):
        super().__init__([f"--max-connections-per-client={PER_CLIENT}", f"--max-body-memory={BODY_MEMORY}",
                          f"--body-timeout={BODY_TIMEOUT}", f"--max-sessions-per-token={PER_TOKEN}"])

    def vm_hwm(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


# The fan-out tests (StreamFanoutTest) run the emitter of bench/events in a session with a host workspace
# that holds emit.py; every other session runs the sandbox's test command as before. One Attach per
# session is what httpd may hold now: the daemon refuses a second one.
WORKSPACES = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-httpd-limits-workspaces")
EMITTER_OR_TEST_COMMAND = ("sh -c 'test -f /workspace/emit.py && exec python3 /workspace/emit.py; "
                           + sb.TEST_SESSION_COMMAND[len("sh -c '"):])


def setUpModule():
    global DAEMON, HTTPD
    os.makedirs(WORKSPACES, exist_ok=True)
    os.chmod(WORKSPACES, 0o755)
    DAEMON = sb.Daemon(unit="ccdockerd-httpd-limits.service", settings={
        "WorkspaceRoots": WORKSPACES, "SessionCommand": EMITTER_OR_TEST_COMMAND, "MaxAttachPerSession": "1"})
    try:
        DAEMON.start()
        HTTPD = LimitedHttpd()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    # Both are stopped whatever the other does; every failure is reported.
    failures = [why for why in (stopped(HTTPD), stopped(DAEMON)) if why]
    if failures:
        raise AssertionError("\n".join(failures))


def stopped(what):
    """None once what (a server of this module, or None) is stopped, else why it failed."""
    try:
        if what:
            what.stop()
    except Exception as e:  # noqa: BLE001 -- reported by tearDownModule
        return str(e)
    return None


def connect(source):
    """A TCP connection to the server from the loopback address source."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(30)
    s.connect(("127.0.0.1", HTTPD.port))
    return s


def head(method, path, token=None, length=None, extra=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s, timeout=30):
    """(status, body) of one response, read until its Content-Length; None if the server closed the
    connection without one."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        buf += chunk
    top, _, rest = buf.partition(b"\r\n\r\n")
    status = int(top.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", top)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:n].decode(errors="replace")


def closed_by_server(s, timeout=30):
    """True once the server closed s (EOF or reset), False if it stays open for timeout."""
    s.settimeout(timeout)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def padded_body(length):
    """A JSON object of exactly length bytes that httpd/body.c refuses (unknown field): never a session."""
    start = b'{"pad":"'
    return start + b"a" * (length - len(start) - 2) + b'"}'


class HttpdLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.token = HTTPD.token(sb.unique("limits"))

    def well_behaved(self, with_body=True):
        """A client that plays by the rules gets its answers: a list from the daemon, and a body read
        whole and checked."""
        s = connect("127.0.0.1")
        try:
            s.sendall(head("GET", "/api/v1/sessions", self.token))
            status, text = read_response(s)
            self.assertEqual(status, 200, text)
            self.assertIn("sessions", json.loads(text))
            if not with_body:
                return
            body = json.dumps({"image": 5}).encode()
            s.sendall(head("POST", "/api/v1/sessions", self.token, len(body)) + body)
            status, text = read_response(s)
            self.assertEqual(status, 400, text)
            self.assertIn("'image' must be a string", text)
        finally:
            s.close()

    def refusals(self, reason):
        s = connect("127.0.0.1")
        try:
            s.sendall(head("GET", "/metrics", self.token))
            status, text = read_response(s)
        finally:
            s.close()
        self.assertEqual(status, 200, text)
        m = re.search(r'reason="%s"\} (\d+)' % re.escape(reason), text)
        return int(m.group(1)) if m else 0

    def create(self, token):
        s = connect("127.0.0.1")
        try:
            s.sendall(head("POST", "/api/v1/sessions", token, 2) + b"{}")
            return read_response(s, timeout=120)
        finally:
            s.close()

    def test_sessions_per_token(self):
        """Issue 14, defect 9: httpd creates every session as its own user, so the daemon's per-owner
        quota would let one token take every slot; each token holds at most --max-sessions-per-token
        live sessions, and another token is not held back by it."""
        token = HTTPD.token(sb.unique("quota"))
        made = []

        def stop(sid):
            got = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s",
                            sid, check=False)
            if got.returncode == 0:
                sb.busctl("call", "org.ccdocker1", json.loads(got.stdout)["data"][0], "org.ccdocker1.Session",
                          "Stop", "b", "true", check=False)
        for _ in range(PER_TOKEN):
            status, text = self.create(token)
            self.assertEqual(status, 201, text)
            made.append(json.loads(text)["id"])
            self.addCleanup(stop, made[-1])
        status, text = self.create(token)
        self.assertEqual(status, 429, text)
        self.assertIn(f"this token has {PER_TOKEN} live sessions", text)
        self.assertIn("--max-sessions-per-token", text)
        status, text = self.create(self.token)  # another token
        self.assertEqual(status, 201, text)
        self.addCleanup(stop, json.loads(text)["id"])
        stop(made[0])
        sb.wait_until(lambda: self.create(token)[0] == 201, 60, 1, what="room for the token once one ended")

    def test_unauthenticated_body_is_refused_on_its_headers(self):
        for token in (None, "ccd_not_a_token"):
            s = connect("127.0.0.2")
            try:
                # Only the headers: an answer now means the server did not wait for the body.
                s.sendall(head("POST", "/api/v1/sessions", token, MIB))
                resp = read_response(s)
                self.assertIsNotNone(resp, "the server closed without an answer")
                self.assertEqual(resp[0], 401, resp[1])
                self.assertIn("unauthorized", resp[1])
                # ... and it does not read the body: the connection ends.
                self.assertTrue(closed_by_server(s), "the connection stayed open for the body")
            finally:
                s.close()
        # With Expect: 100-continue the client is never told to go on.
        s = connect("127.0.0.2")
        try:
            s.sendall(head("PUT", "/api/v1/sessions/x", None, MIB, ["Expect: 100-continue"]))
            resp = read_response(s)
            self.assertEqual(resp[0], 401, resp[1])
        finally:
            s.close()
        self.well_behaved()

    def test_connections_per_client_address_are_limited(self):
        held = [connect("127.0.0.3") for _ in range(PER_CLIENT)]
        try:
            # Each held connection is accepted: it answers a request.
            held[0].sendall(head("GET", "/health"))
            self.assertEqual(read_response(held[0])[0], 200)
            extra = connect("127.0.0.3")
            try:
                extra.sendall(head("GET", "/health"))
                self.assertIsNone(read_response(extra), "a connection over the per-client limit was served")
            finally:
                extra.close()
            # Another address, and the well-behaved client, are not affected.
            other = connect("127.0.0.4")
            try:
                other.sendall(head("GET", "/health"))
                self.assertEqual(read_response(other)[0], 200)
            finally:
                other.close()
            self.well_behaved()
        finally:
            for s in held:
                s.close()

    def test_slowloris_body_is_cut_off_at_its_deadline(self):
        before = self.refusals("body_timeout")
        s = connect("127.0.0.5")
        try:
            length = 500
            s.sendall(head("POST", "/api/v1/sessions", self.token, length))
            sent, closed = 0, False
            # A byte every 0.2 s keeps libmicrohttpd's idle timer (60 s) from ever firing, and would take
            # 100 s for the whole body; only the body deadline (20 s) can end it before.
            while sent < length - 1:
                try:
                    s.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sent += 1
                if closed_by_server(s, timeout=0.2):
                    closed = True
                    break
                if sent == 5:
                    self.well_behaved()
            self.assertTrue(closed, "the server read a trickling body to its end")
        finally:
            s.close()
        self.assertEqual(self.refusals("body_timeout"), before + 1)
        self.well_behaved()

    def test_body_memory_stays_within_its_budget(self):
        attackers, held = 40, []
        hwm_before = HTTPD.vm_hwm()
        body = padded_body(MIB)
        try:
            # Bodies one byte short of complete, which the server would hold until the last byte: without
            # a token each is refused on its headers and never read.
            for i in range(attackers):
                s = connect(f"127.0.1.{i + 1}")
                held.append(s)
                s.sendall(head("POST", "/api/v1/sessions", None, MIB))
                try:
                    s.sendall(body[:-1])
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass
            # With a token, only BODY_MEMORY of them fit; the others get 503 on their headers, at once.
            authed = []
            for i in range(attackers):
                s = connect(f"127.0.2.{i + 1}")
                held.append(s)
                authed.append(s)
                s.sendall(head("POST", "/api/v1/sessions", self.token, MIB))
            for s in authed:
                try:
                    s.sendall(body[:-1])
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass
            # The refusals are sent on the headers: wait for them, however slow the machine.
            fits = BODY_MEMORY // MIB
            answered, deadline = [], time.monotonic() + 60
            while len(answered) < attackers - fits and time.monotonic() < deadline:
                ready, _, _ = select.select([s for s in authed if s not in answered], [], [], 1)
                answered += ready
            # ... and the ones taken get nothing (a last look, after the refusals all came).
            answered += select.select([s for s in authed if s not in answered], [], [], 0.5)[0]
            for s in answered:
                s.settimeout(1)
                try:
                    early = s.recv(65536)
                except ConnectionResetError:
                    early = b""
                if early:
                    self.assertIn(b" 503 ", early.split(b"\r\n", 1)[0], early[:300])
            accepted = [s for s in authed if s not in answered]
            self.assertEqual(len(accepted), fits, f"{len(accepted)} bodies of 1 MiB were taken")
            # The budget is full: a request without a body is still answered, one with a body gets 503.
            self.well_behaved(with_body=False)
            self.assertEqual(self._small_body_status(), 503)
            # The held bodies were all read: each is answered (400, a refused field) on its last byte.
            for s in accepted:
                s.sendall(body[-1:])
            for s in accepted:
                status, text = read_response(s)
                self.assertEqual(status, 400, text)
            hwm = HTTPD.vm_hwm()
        finally:
            for s in held:
                s.close()
        grown = hwm - hwm_before
        # The budget, libmicrohttpd's buffers of 80 connections and slack; without the early refusal and
        # the budget the 80 bodies would hold 80 MiB.
        self.assertLess(grown, BODY_MEMORY + 12 * MIB, f"VmHWM grew by {grown // 1024} KiB")
        # The budget is given back when the bodies go.
        sb.wait_until(lambda: self._small_body_status() == 400, 30, what="the body budget to be given back")
        self.well_behaved()

    def _small_body_status(self):
        s = connect("127.0.0.1")
        try:
            body = json.dumps({"image": 5}).encode()
            s.sendall(head("POST", "/api/v1/sessions", self.token, len(body)) + body)
            return read_response(s)[0]
        finally:
            s.close()


# ---- streams: one Attach per session, fanned out; a slow client; browser authentication (issue 18) ----

_spec = importlib.util.spec_from_file_location("bench_events", os.path.join(sb.SRC, "tests", "bench", "events.py"))
EVENTS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(EVENTS)

# Past what three fast clients in one node process fall behind by while a flood goes by on a busy
# machine (64 KiB dropped one of them in a full run), far below what a client that reads nothing holds
# up: the kernel's buffers for it alone grow to about 4 MB.
STREAM_QUEUE = 1024 * 1024
TICKET_TTL = 1

# WebSocket clients of the npm ws package. argv: JSON {url, total, timeout_ms, ready_file, clients: [{query,
# token, protocols, delay_ms}]}; clients without delay_ms open at once and ready_file is written when they
# are all open; the others open delay_ms after that. A client closes once it has seq total. Prints, per
# client: {status, echoed (the Sec-WebSocket-Protocol answered), protocol, first, last, count, missing,
# repeated, disorder, code, reason, error}.
FAN_CLIENT = r"""
const WebSocket = require('ws');
const o = JSON.parse(process.argv[2]);
const out = o.clients.map(() => ({ status: null, echoed: null, protocol: null, first: null, last: null, count: 0,
                                   missing: 0, repeated: 0, disorder: 0, code: null, reason: null, error: null }));
let open = o.clients.length, ready = 0;
const immediate = o.clients.filter((c) => !c.delay_ms).length;
function finish() { process.stdout.write(JSON.stringify(out) + '\n'); process.exit(0); }
function start(c, rec) {
  let ended = false, last = null;
  const end = () => { if (!ended) { ended = true; if (--open === 0) finish(); } };
  const seen = new Set();
  const headers = c.token ? { Authorization: 'Bearer ' + c.token } : {};
  const ws = new WebSocket(o.url + (c.query || ''), c.protocols || [], { headers });
  ws.on('upgrade', (res) => { rec.status = 101; rec.echoed = res.headers['sec-websocket-protocol'] || null; });
  ws.on('open', () => {
    rec.protocol = ws.protocol;
    if (!c.delay_ms && ++ready === immediate) {
      if (o.ready_file) require('fs').writeFileSync(o.ready_file, 'ok');
      o.clients.forEach((d, i) => { if (d.delay_ms) setTimeout(() => start(d, out[i]), d.delay_ms); });
    }
  });
  ws.on('message', (data) => {
    const s = data.toString();
    const seq = Number(s.slice(7, s.indexOf(',')));
    if (rec.first === null) { rec.first = seq; last = seq - 1; }
    if (seen.has(seq)) rec.repeated++; else seen.add(seq);
    if (seq <= last) rec.disorder++; else { rec.missing += seq - last - 1; last = seq; }
    rec.last = last; rec.count++;
    if (o.total && seq >= o.total) ws.close(1000, 'enough');
  });
  ws.on('unexpected-response', (req, res) => { rec.status = res.statusCode; rec.error = 'HTTP ' + res.statusCode;
                                               res.resume(); end(); });
  ws.on('error', (e) => { rec.error = rec.error || String(e.message); });
  ws.on('close', (code, reason) => { rec.code = code; rec.reason = reason.toString(); end(); });
}
o.clients.forEach((c, i) => { if (!c.delay_ms) start(c, out[i]); });
setTimeout(() => { for (const r of out) r.error = r.error || 'timeout'; finish(); }, o.timeout_ms);
"""


def loopback_client(port, rcvbuf=None):
    """A TCP connection to port on the loopback address (rcvbuf: its receive buffer, set before the
    connection so that the window follows it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    return s


def ws_handshake(port, path, headers=(), rcvbuf=None):
    """A WebSocket handshake on a raw socket: (socket, status, {header: value}, bytes after the head)."""
    s = loopback_client(port, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *headers]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    top, _, rest = buf.partition(b"\r\n\r\n")
    status = int(top.split(b" ", 2)[1])
    hdrs = {}
    for line in top.decode().split("\r\n")[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return s, status, hdrs, rest


def dechunk(raw):
    """The body of an HTTP/1.1 chunked response read so far (an incomplete last chunk as far as it goes)
    and whether its last chunk came."""
    body, i = bytearray(), 0
    while True:
        j = raw.find(b"\r\n", i)
        if j < 0:
            return bytes(body), False
        size = int(raw[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(body), True
        body.extend(raw[j + 2:j + 2 + size])
        if len(raw) < j + 2 + size + 2:
            return bytes(body), False
        i = j + 2 + size + 2


def sse_events(body):
    """(event, data) of each complete Server-Sent Event in body; comments are skipped."""
    out = []
    for block in body.decode(errors="replace").split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            out.append((fields.get("event"), json.loads(fields["data"])))
    return out


def ws_read_all(s, rest):
    """Reads server frames until a close frame or EOF: ([seq, ...], close code or None, close reason)."""
    buf = bytearray(rest)
    seqs = []

    def need(n):
        while len(buf) < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise EOFError
            buf.extend(chunk)

    try:
        while True:
            need(2)
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if n == 126:
                need(4)
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                need(10)
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            need(off + n)
            payload = bytes(buf[off:off + n])
            del buf[:off + n]
            if opcode == 1:
                seqs.append(int(payload[7:payload.index(b",")]))
            elif opcode == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                return seqs, code, payload[2:].decode(errors="replace")
    except (EOFError, ConnectionResetError):
        return seqs, None, None


class StreamFanoutTest(unittest.TestCase):
    """ccdocker-httpd's streams with the daemon allowing one Attach per session (MaxAttachPerSession=1):
    many clients of one session, joining when they like, with since= anywhere; a client that does not
    read; GET answered from the property cache; the browser's ways to authenticate a WebSocket. Sessions
    run the emitter of bench/events, which sends events as fast or as steadily as asked."""

    @classmethod
    def setUpClass(cls):
        cls.httpd = Httpd([f"--stream-queue={STREAM_QUEUE}", f"--ticket-ttl={TICKET_TTL}"])
        cls.token = cls.httpd.token(sb.unique("fanout"))
        cls.js = os.path.join(cls.httpd.dir, "fan-client.js")
        with open(cls.js, "w") as f:
            f.write(FAN_CLIENT)

    @classmethod
    def tearDownClass(cls):
        cls.httpd.stop()

    def jcurl(self, method, path, token, body=None, expect=200):
        return th.jcurl(method, path, token, body, expect=expect, url=self.httpd.url)

    def emitter_session(self, **env):
        """A session running the emitter with BENCH_<KEY>=value settings; returns (id, its workspace)
        once event 1 is stored. The measured events 2.. start when DIR/go appears."""
        ws = tempfile.mkdtemp(prefix="emit-", dir=WORKSPACES)
        self.addCleanup(shutil.rmtree, ws, True)
        with open(os.path.join(ws, "emit.py"), "w") as f:
            f.write(EVENTS.EMITTER)
        for p in (ws, os.path.join(ws, "emit.py")):
            os.chown(p, 1000, 1000)
        os.chmod(ws, 0o755)
        environment = {f"BENCH_{k.upper()}": str(v) for k, v in env.items()}
        s = self.jcurl("POST", "/api/v1/sessions", self.token,
                       {"workspace": {"type": "host", "path": ws}, "config": {"environment": environment}},
                       expect=201)
        self.addCleanup(self.stop_session, s["id"])
        sb.wait_until(lambda: os.path.exists(os.path.join(ws, "ready")) or os.path.exists(os.path.join(ws, "error")),
                      60, 0.05, what="the emitter's first event")
        self.assertFalse(os.path.exists(os.path.join(ws, "error")), "the emitter failed")
        return s["id"], ws

    def stop_session(self, sid):
        th.curl("DELETE", f"/api/v1/sessions/{sid}?force=true", self.token, url=self.httpd.url)

    def fan_clients(self, sid, clients, total, ready_file=None, timeout=120):
        opt = {"url": self.httpd.url.replace("http:", "ws:") + f"/api/v1/sessions/{sid}/stream", "total": total,
               "timeout_ms": timeout * 1000, "ready_file": ready_file, "clients": clients}
        env = dict(os.environ, NODE_PATH=os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules"))
        return subprocess.Popen(["node", self.js, json.dumps(opt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    def fan_result(self, proc, timeout=180):
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0 or not out.strip():
            raise AssertionError(f"the ws clients failed ({proc.returncode}): {err.strip()}")
        return json.loads(out)

    def metric(self, pattern):
        text = th.curl("GET", "/metrics", self.token, url=self.httpd.url)[2]
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0

    def test_get_is_never_older_than_the_last_properties_changed(self):
        """Every GET is answered from the cache (no GetAll), and none shows a LastSeq older than the
        newest PropertiesChanged a bus monitor had seen before the GET was sent: httpd's cache is kept by
        the same signals, and its bus is dispatched before HTTP."""
        seen = {"seq": 0, "signals": 0, "paths": set()}
        mon = subprocess.Popen(["busctl", "--user", "monitor", "--json=short", "--match",
                                "type='signal',sender='org.ccdocker1',interface='org.freedesktop.DBus.Properties',"
                                "member='PropertiesChanged'"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(mon.stdout.close)
        self.addCleanup(mon.wait)
        self.addCleanup(mon.terminate)

        def follow():
            for line in mon.stdout:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue
                if m.get("member") != "PropertiesChanged":
                    continue
                seen["paths"].add(m.get("path"))
                if m.get("path") != seen.get("path"):
                    continue
                changed = m["payload"]["data"][1]
                if "LastSeq" in changed:
                    seen["seq"] = max(seen["seq"], changed["LastSeq"]["data"])
                seen["signals"] += 1
        threading.Thread(target=follow, daemon=True).start()

        rate, seconds = 400, 3
        sid, ws = self.emitter_session(mode="steady", rate=rate, seconds=seconds, batch=1)
        path = "/org/ccdocker1/session/" + ("_3" + sid if sid[0].isdigit() else sid)
        seen["path"] = path
        # The monitor is live once it has seen a signal (the session's start made some).
        sb.wait_until(lambda: len(seen["paths"]) > 0, 30, 0.05, what="the bus monitor")
        conn = http.client.HTTPConnection("127.0.0.1", self.httpd.port, timeout=30)
        auth = {"Authorization": f"Bearer {self.token}"}

        def get():
            conn.request("GET", f"/api/v1/sessions/{sid}", headers=auth)
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200, body)
            return json.loads(body)

        get()  # fills the cache
        hits = self.metric(r'ccdocker_httpd_session_cache_total\{result="hit"\} (\d+)')
        open(os.path.join(ws, "go"), "w").close()
        checks, stale = 0, []
        while not os.path.exists(os.path.join(ws, "stats.json")) or checks < 200:
            want = seen["seq"]
            got = get()["last_seq"]
            checks += 1
            if got < want:
                stale.append((want, got))
        self.assertEqual(stale, [], f"{len(stale)} of {checks} GETs older than a PropertiesChanged already sent")
        self.assertGreater(seen["signals"], 10, "the monitor saw too few PropertiesChanged to tell")
        self.assertGreaterEqual(self.metric(r'ccdocker_httpd_session_cache_total\{result="hit"\} (\d+)') - hits,
                                checks, "GETs went to the daemon instead of the cache")
        # And at rest, the cache agrees with the daemon.
        final = int(sb.session_prop(path, "LastSeq"))
        sb.wait_until(lambda: get()["last_seq"] == final, 10, 0.05, what="the cache to show the last LastSeq")
        self.assertEqual(final, rate * seconds + 1)
        conn.close()

    def test_since_replay_is_exact_under_fanout_with_clients_joining_mid_stream(self):
        """Clients joining while events flow, with since at the start, behind the feed, at it and ahead of
        it, each get exactly the events after their since, once and in order; the daemon allows one
        Attach per session, so all of them share httpd's one."""
        rate, seconds = 1000, 3
        total = rate * seconds + 1
        sid, ws = self.emitter_session(mode="steady", rate=rate, seconds=seconds, batch=1)
        first = [{"query": "?since=1", "token": self.token}, {"query": "?since=0", "token": self.token}]
        later = [(0, 400), (1, 700), (500, 900), (1500, 1300), (0, 1800), (2900, 2000), (2999, 2100),
                 (total, 2200)]
        clients = first + [{"query": f"?since={since}", "token": self.token, "delay_ms": delay}
                           for since, delay in later]
        ready = os.path.join(self.httpd.dir, f"ready-{sid}")
        proc = self.fan_clients(sid, clients, total, ready_file=ready)
        sb.wait_until(lambda: os.path.exists(ready) or proc.poll() is not None, 60, 0.02, what="the first clients")
        open(os.path.join(ws, "go"), "w").close()
        # The last client's since is the last event: it has nothing to wait for but the session's end.
        sb.wait_until(lambda: os.path.exists(os.path.join(ws, "stats.json")), 120, 0.1, what="the emitter")
        time.sleep(0.5)
        self.stop_session(sid)
        results = self.fan_result(proc)
        sinces = [1, 0] + [since for since, _ in later]
        for since, r in zip(sinces, results):
            with self.subTest(since=since):
                self.assertEqual(r["status"], 101, r)
                if since >= total:
                    self.assertEqual(r["count"], 0, r)
                    self.assertEqual((r["code"], r["reason"]), (1000, "session ended"), r)
                    continue
                self.assertIsNone(r["error"], r)
                self.assertEqual((r["first"], r["last"], r["count"]), (since + 1, total, total - since), r)
                self.assertEqual((r["missing"], r["repeated"], r["disorder"]), (0, 0, 0), r)
        self.assertEqual(self.metric(r"ccdocker_httpd_session_feeds (\d+)"), 0, "a feed outlived its session")

    def test_slow_client_is_dropped_with_a_close_code_and_others_get_everything(self):
        """A client that does not read is dropped once --stream-queue bytes wait for it: it gets a prefix of
        the events with no gap, then close 1008 naming since; three clients beside it get every event, and
        finish while it has not read a byte."""
        n = 30000
        sid, ws = self.emitter_session(mode="flood", n=n, batch=500)
        slow, status, _, rest = ws_handshake(self.httpd.port, f"/api/v1/sessions/{sid}/stream?since=1",
                                             [f"Authorization: Bearer {self.token}"], rcvbuf=4096)
        self.addCleanup(slow.close)
        self.assertEqual(status, 101)
        ready = os.path.join(self.httpd.dir, f"ready-{sid}")
        proc = self.fan_clients(sid, [{"query": "?since=1", "token": self.token}] * 3, n + 1, ready_file=ready)
        sb.wait_until(lambda: os.path.exists(ready) or proc.poll() is not None, 60, 0.02, what="the fast clients")
        drops = self.metric(r'reason="slow_client"\} (\d+)')
        open(os.path.join(ws, "go"), "w").close()
        for r in self.fan_result(proc):
            self.assertIsNone(r["error"], r)
            self.assertEqual((r["first"], r["last"], r["count"]), (2, n + 1, n), r)
            self.assertEqual((r["missing"], r["repeated"], r["disorder"]), (0, 0, 0), r)
        # Only now does the slow client read.
        seqs, code, reason = ws_read_all(slow, rest)
        self.assertEqual(code, 1008, f"closed with {code} after {len(seqs)} events")
        self.assertIn("since=", reason)
        self.assertEqual(seqs, list(range(2, 2 + len(seqs))), "a gap before the drop")
        self.assertLess(len(seqs), n)
        self.assertEqual(self.metric(r'reason="slow_client"\} (\d+)') - drops, 1)

    def events_client(self, rcvbuf=None):
        """A raw GET /api/v1/events: the socket, once the response's head has been read."""
        s = loopback_client(self.httpd.port, rcvbuf)
        self.addCleanup(s.close)
        s.sendall(head("GET", "/api/v1/events", self.token, extra=["Accept: text/event-stream"]))
        top = b""
        while b"\r\n\r\n" not in top:
            chunk = s.recv(1)  # byte by byte: what follows the head is the test's to read
            if not chunk:
                raise AssertionError(f"/api/v1/events closed before its head: {top!r}")
            top += chunk
        self.assertIn(b" 200 ", top.split(b"\r\n")[0])
        return s

    def test_events_client_that_does_not_read_is_dropped_and_a_reader_is_not(self):
        """GET /api/v1/events bounds what waits for a client as a stream does: one that does not read is
        ended with "too slow" once --stream-queue bytes wait, while a client that reads beside it gets
        every change to the end."""
        slow = self.events_client(rcvbuf=4096)
        reader = self.events_client()
        got = bytearray()
        stop = threading.Event()

        def read():
            while not stop.is_set():
                try:
                    chunk = reader.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                got.extend(chunk)
        t = threading.Thread(target=read, daemon=True)
        t.start()
        self.addCleanup(t.join, 70)
        self.addCleanup(stop.set)

        drops = self.metric(r'reason="slow_client"\} (\d+)')
        # One event a call, one call at a time: each changes last_seq, about 100 bytes on /events. What
        # the kernel holds for a client of loopback TCP that does not read grows to about 4 MB
        # (tcp_wmem), beside --stream-queue: 100000 changes are well past both.
        sid, ws = self.emitter_session(mode="flood", n=100000, batch=1)
        open(os.path.join(ws, "go"), "w").close()
        sb.wait_until(lambda: os.path.exists(os.path.join(ws, "stats.json")), 300, 0.2, what="the emitter")
        last = self.jcurl("GET", f"/api/v1/sessions/{sid}", self.token)["last_seq"]
        self.assertEqual(last, 100001)

        def seqs_of(events):
            """The last_seq of each change of the session: {"id", "change": "changed", "session": {...}}."""
            return [d["session"]["last_seq"] for name, d in events
                    if name == "session" and d.get("id") == sid and "last_seq" in d.get("session", {})]

        def seen_last():
            return last in seqs_of(sse_events(dechunk(bytes(got))[0]))
        sb.wait_until(seen_last, 60, 0.5, what=f"the reader to see last_seq {last}")
        self.assertNotIn("end", [e[0] for e in sse_events(dechunk(bytes(got))[0])])
        self.assertEqual(self.metric(r'reason="slow_client"\} (\d+)') - drops, 1)

        # Only now does the slow client read: changes of the session, then the end, and the response ends.
        raw = bytearray()
        while not dechunk(bytes(raw))[1]:
            chunk = slow.recv(65536)
            if not chunk:
                break
            raw.extend(chunk)
        body, complete = dechunk(bytes(raw))
        self.assertTrue(complete, "the response did not end")
        events = sse_events(body)
        self.assertEqual(events[-1], ("end", {"reason": "too slow"}))
        self.assertEqual([e for e in events if e[0] == "end"], [events[-1]])
        seqs = seqs_of(events)
        self.assertTrue(seqs, "no change of the session before the end")
        self.assertLess(seqs[-1], last)

    def test_websocket_subprotocol_bearer_is_accepted_and_only_the_protocol_echoed(self):
        sid, ws = self.emitter_session(mode="flood", n=50, batch=50)
        proc = self.fan_clients(sid, [{"query": "?since=0", "protocols": ["ccdocker.v1", "bearer." + self.token]}],
                                51)
        open(os.path.join(ws, "go"), "w").close()
        r = self.fan_result(proc)[0]
        self.assertIsNone(r["error"], r)
        self.assertEqual((r["status"], r["echoed"], r["protocol"]), (101, "ccdocker.v1", "ccdocker.v1"), r)
        self.assertEqual((r["first"], r["last"], r["missing"]), (1, 51, 0), r)

        path = f"/api/v1/sessions/{sid}/stream"
        revoked = sb.unique("revoked")
        revoked_token = self.httpd.token(revoked)
        self.httpd.ctl("token", "revoke", revoked)
        for offered, status, code in (
                (f"ccdocker.v1, bearer.{self.token}", 101, None),
                ("ccdocker.v1, bearer.ccd_" + "A" * 43, 401, "unauthorized"),
                (f"ccdocker.v1, bearer.{revoked_token}", 401, "unauthorized"),
                (f"bearer.{self.token}", 400, "invalid_argument"),  # nothing to echo but the token
                ("ccdocker.v1", 401, "unauthorized")):
            with self.subTest(offered=offered.replace(self.token, "TOKEN")):
                s, got, hdrs, rest = ws_handshake(self.httpd.port, path, [f"Sec-WebSocket-Protocol: {offered}"])
                s.close()
                self.assertEqual(got, status, rest)
                if status == 101:
                    self.assertEqual(hdrs.get("sec-websocket-protocol"), "ccdocker.v1")
                else:
                    self.assertEqual(json.loads(rest)["error"]["code"], code, rest)
                    self.assertNotIn("ccd_", json.dumps(hdrs))

    def test_token_in_the_query_is_refused(self):
        sid = NOBODY_ID
        for query in (f"?token={self.token}", f"?access_token={self.token}", f"?since=0&x={self.token}"):
            with self.subTest(query=query.replace(self.token, "TOKEN")):
                for path in (f"/api/v1/sessions/{sid}/stream", "/api/v1/sessions"):
                    status, _, text = th.curl("GET", path + query, self.token, url=self.httpd.url)
                    self.assertEqual(status, 400, text)
                    err = json.loads(text)["error"]
                    self.assertEqual(err["code"], "token_in_query", text)
                    self.assertIn("bearer.TOKEN", err["message"])
                    self.assertIn("/api/v1/stream-tickets", err["message"])
                    self.assertNotIn(self.token, text)

    def test_stream_ticket_is_single_use_and_expires(self):
        sid, ws = self.emitter_session(mode="flood", n=20, batch=20)
        open(os.path.join(ws, "go"), "w").close()
        self.assertEqual(th.curl("POST", "/api/v1/stream-tickets", None, url=self.httpd.url)[0], 401)
        t = self.jcurl("POST", "/api/v1/stream-tickets", self.token, expect=201)
        self.assertEqual(t["expires_in"], TICKET_TTL)
        self.assertTrue(t["ticket"].startswith("cct_"), t)
        path = f"/api/v1/sessions/{sid}/stream"
        r = self.fan_result(self.fan_clients(sid, [{"query": f"?since=0&ticket={t['ticket']}"}], 21))[0]
        self.assertIsNone(r["error"], r)
        self.assertEqual((r["status"], r["first"], r["last"], r["missing"]), (101, 1, 21, 0), r)
        # Used once: not again.
        s, status, _, rest = ws_handshake(self.httpd.port, f"{path}?ticket={t['ticket']}")
        s.close()
        self.assertEqual(status, 401, rest)
        # An EventSource (SSE) takes one too.
        t = self.jcurl("POST", "/api/v1/stream-tickets", self.token, expect=201)
        p = subprocess.run(["curl", "-sSN", "--max-time", "5", "-H", "Accept: text/event-stream",
                            f"{self.httpd.url}{path}?since=19&ticket={t['ticket']}"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(re.findall(r"^id: (\d+)$", p.stdout, re.M), ["20", "21"], p.stdout + p.stderr)
        # Expired: refused after --ticket-ttl.
        t = self.jcurl("POST", "/api/v1/stream-tickets", self.token, expect=201)
        time.sleep(TICKET_TTL + 0.5)
        s, status, _, rest = ws_handshake(self.httpd.port, f"{path}?ticket={t['ticket']}")
        s.close()
        self.assertEqual(status, 401, rest)
        # A ticket of a token revoked since: refused.
        name = sb.unique("ticket")
        other = self.httpd.token(name)
        t = self.jcurl("POST", "/api/v1/stream-tickets", other, expect=201)
        self.httpd.ctl("token", "revoke", name)
        s, status, _, rest = ws_handshake(self.httpd.port, f"{path}?ticket={t['ticket']}")
        s.close()
        self.assertEqual(status, 401, rest)
        # Bounded: at most 64 wait per token (on a server whose tickets live long enough to pile up).
        lasting = Httpd()
        try:
            token = lasting.token("many")
            many = [th.curl("POST", "/api/v1/stream-tickets", token, url=lasting.url) for _ in range(65)]
        finally:
            lasting.stop()
        self.assertEqual([m[0] for m in many].count(201), 64)
        self.assertEqual(many[-1][0], 429, many[-1][2])
        self.assertEqual(json.loads(many[-1][2])["error"]["code"], "limit_exceeded")


NOBODY_ID = "000000000000"


if __name__ == "__main__":
    unittest.main()

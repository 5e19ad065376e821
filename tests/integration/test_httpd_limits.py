"""ccdocker-httpd against the HTTP clients that attack it (issue 14, defect 8): a request without a token
is refused on its headers and its body never read; one client address holds a bounded number of
connections; a body sent a byte at a time is cut off by its deadline; bodies together stay within their
memory budget, asserted from the VmHWM of the server's /proc/PID/status, not from timings. A
well-behaved client beside the attackers gets its answers throughout.

The test starts the real ccdocker-httpd of the build under test (by PID) with small limits, next to its
own ccdockerd. Loopback has all of 127.0.0.0/8, so each attacker binds a source address of its own and
the per-address limit of one does not hide the effect of another.
"""

import json
import re
import select
import socket
import time
import unittest

import sandbox as sb
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


def setUpModule():
    global DAEMON, HTTPD
    DAEMON = sb.Daemon(unit="ccdockerd-httpd-limits.service")
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


if __name__ == "__main__":
    unittest.main()

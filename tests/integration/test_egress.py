"""The egress proxy (daemon/egress-proxy.c) and ccdocker-init's loopback bridges, for real.

EgressProxyTest runs tests/helpers/egress-probe (the daemon's real proxy on its own sd-event loop, the
sanitizer build when there is one) as a transient unit of the sandbox's user manager, so that its
decision records reach the sandbox's journald, with an allowlist holding one of two local TCP servers:
through its unix socket a CONNECT to the allowed one relays bytes both ways (an echo, with half-close),
by address and by name; a CONNECT to the other is refused with a 403 naming it; malformed heads get 400
and other methods 405; the journal has every decision.

EgressLocalAddressTest: an allowed name that resolves (through a hosts file of the test's own) to a
loopback, link-local or private address is refused with a 403 before any connection, unless the
allowlist names that address.

BridgeInContainerTest runs the session image with --network=none and the proxy's socket (and a model
socket served by the test) in the directory the container gets at /run/ccdocker, with a fake claude
that checks from inside the container: the environment ccdocker-init gave it, a CONNECT through its
HTTPS_PROXY bridge to the allowed echo server on the host's loopback, a 403 for the other (asked for by
address, and by an allowed name that resolves to the host's loopback), a request
through the ANTHROPIC_BASE_URL bridge, and that nothing is reachable directly.
"""

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import unittest

import sandbox as sb
import test_init

MESSAGE_ID = "5cae453ebbd44387a722330274638946"  # EGRESS_DECISION_MESSAGE_ID of egress-proxy.h
IMAGE = os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev")


class TcpServer:
    """A TCP server on 127.0.0.1: echoes what it gets until the client's end, then closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()


def closed_port():
    """A loopback port below the ephemeral range that refuses connections: a freed ephemeral port could
    come back as the proxy's own source port and connect to itself."""
    for port in range(1, 1024):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("every low port listens")


def probe_binary():
    for build in (os.environ.get("CCDOCKER_BUILD_ASAN_DIR"), os.path.join(sb.SRC, "build-asan"),
                  os.environ.get("CCDOCKER_BUILD_DIR"), os.path.join(sb.SRC, "build")):
        if build and os.access(os.path.join(build, "tests", "helpers", "egress-probe"), os.X_OK):
            return os.path.join(build, "tests", "helpers", "egress-probe")
    raise AssertionError("tests/helpers/egress-probe is not built")


class EgressProbe:
    """egress-probe as a transient unit, listening on socket_path."""

    def __init__(self, test, socket_path, session, allowed, owner=None, env=()):
        self.unit = sb.unique("egress-probe") + ".service"
        self.socket_path = socket_path
        argv = ["systemd-run", "--user", f"--unit={self.unit}", "-p", "Type=exec",
                "-E", "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66",
                "-E", "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"]
        for e in env:
            argv += ["-E", e]
        argv += [probe_binary(), f"--socket={socket_path}", f"--session={session}"]
        argv += [f"--allow={a}" for a in allowed]
        if owner is not None:
            argv += [f"--uid={owner}", f"--gid={owner}"]
        test.addCleanup(self.cleanup)
        sb.run(*argv)
        sb.wait_until(lambda: os.path.exists(socket_path), 20, what=f"{socket_path} from egress-probe")

    def stop(self):
        """Stops it (SIGTERM) and returns its exit status."""
        sb.systemctl("stop", self.unit, check=False)
        return int(sb.unit_show(self.unit, "ExecMainStatus")["ExecMainStatus"] or 0)

    def cleanup(self):
        sb.stop_unit(self.unit)

    def output(self):
        return "\n".join(str(r.get("MESSAGE")) for r in sb.journal(f"_SYSTEMD_UNIT={self.unit}"))


def request(path, head, body=b"", shut=True, timeout=10):
    """Sends head (and body) on the proxy's socket and returns everything it answers until it closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(head + body)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def split_answer(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n")[0], body


class EgressProxyTest(unittest.TestCase):
    def setUp(self):
        self.allowed = TcpServer()
        self.addCleanup(self.allowed.close)
        self.other = TcpServer()
        self.addCleanup(self.other.close)
        self.dir = tempfile.mkdtemp(prefix="ccdocker-egress-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sid = sb.unique("eg").replace("-", "")[:12]
        self.path = os.path.join(self.dir, "egress.sock")
        self.dead = closed_port()
        self.probe = EgressProbe(self, self.path, self.sid, [f"127.0.0.1:{self.allowed.port}",
                                                             f"localhost:{self.allowed.port}",
                                                             f"127.0.0.1:{self.dead}"])

    def connect_echo(self, host):
        payload = os.urandom(3 << 20)
        raw = request(self.path, f"CONNECT {host}:{self.allowed.port} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
                      payload)
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n"), raw[:200])
        self.assertEqual(raw[len(b"HTTP/1.1 200 Connection established\r\n\r\n"):], payload)

    def test_egress_proxy_allows_only_the_allowlist(self):
        # Allowed, by address and by a name the proxy resolves without blocking its loop; the bytes
        # sent with the head go through too, and the client's end reaches the server and back.
        self.connect_echo("127.0.0.1")
        self.connect_echo("localhost")
        raw = request(self.path, f"CONNECT 127.0.0.1:{self.allowed.port} HTTP/1.1\r\n\r\nhello".encode())
        self.assertEqual(raw, b"HTTP/1.1 200 Connection established\r\n\r\nhello")

        # Several at once, interleaved.
        socks = []
        for i in range(20):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(self.path)
            s.sendall(f"CONNECT 127.0.0.1:{self.allowed.port} HTTP/1.1\r\n\r\n".encode())
            socks.append(s)
        for i, s in enumerate(socks):
            s.sendall(f"message {i}".encode())
            s.shutdown(socket.SHUT_WR)
        for i, s in enumerate(socks):
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            s.close()
            self.assertEqual(out, f"HTTP/1.1 200 Connection established\r\n\r\nmessage {i}".encode())

        # Not allowed: 403 naming the host, and the other server never hears of it.
        accepted = self.other.accepted
        for target in (f"127.0.0.1:{self.other.port}", "example.com:443", "localhost:1"):
            status, body = split_answer(request(self.path, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode()))
            self.assertEqual(status, "HTTP/1.1 403 Forbidden")
            self.assertEqual(body.decode(), f"cc-docker: egress to {target} is not allowed for this session\n")
        self.assertEqual(self.other.accepted, accepted)

        # Malformed heads: 400; a plain proxy request: 405; a head over 8 KiB: 400.
        for head in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b"CONNECT nowhere HTTP/1.1\r\n\r\n",
                     b"CONNECT a:1 HTTP/9\r\n\r\n", b"\r\n\r\n", b"CONNECT a:1 HTTP/1.1\r\nbad header\r\n\r\n",
                     b"CONNECT a:1 HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n"):
            status, body = split_answer(request(self.path, head))
            self.assertEqual(status, "HTTP/1.1 400 Bad Request", head[:40])
            self.assertIn(b"cc-docker:", body)
        status, body = split_answer(request(self.path, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"))
        self.assertEqual(status, "HTTP/1.1 405 Method Not Allowed")
        self.assertIn(b"only tunnels with CONNECT", body)

        # A head that never ends is not kept forever either, but a slow one is fine.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.path)
            for piece in (b"CONNECT 127.0.0.1:", str(self.allowed.port).encode(), b" HTTP/1.1\r\n", b"\r\n"):
                s.sendall(piece)
                time.sleep(0.1)
            self.assertEqual(s.recv(100), b"HTTP/1.1 200 Connection established\r\n\r\n")

        # An allowed host that does not answer: 502, saying why.
        status, body = split_answer(request(self.path, f"CONNECT 127.0.0.1:{self.dead} HTTP/1.1\r\n\r\n".encode()))
        self.assertEqual(status, "HTTP/1.1 502 Bad Gateway")
        self.assertEqual(body.decode(), f"cc-docker: could not connect to 127.0.0.1:{self.dead}: Connection refused\n")

        # Every decision is in the journal, with its fields.
        def decisions():
            return [r for r in sb.journal(f"MESSAGE_ID={MESSAGE_ID}", f"CCDOCKER_SESSION={self.sid}")]
        sb.wait_until(lambda: len(decisions()) >= 3 + 20 + 3 + 6 + 1 + 1 + 1, 10, what="the decision records")
        records = decisions()
        by = {}
        for r in records:
            by.setdefault(r["CCDOCKER_EGRESS_DECISION"], []).append(r)
            self.assertEqual(r["CCDOCKER_EVENT"], "egress")
        self.assertEqual(len(by["allowed"]), 3 + 20 + 1 + 1)
        self.assertEqual({(r["CCDOCKER_EGRESS_HOST"], r["CCDOCKER_EGRESS_PORT"]) for r in by["allowed"]},
                         {("127.0.0.1", str(self.allowed.port)), ("localhost", str(self.allowed.port)),
                          ("127.0.0.1", str(self.dead))})
        self.assertEqual(sorted((r["CCDOCKER_EGRESS_HOST"], r["CCDOCKER_EGRESS_PORT"]) for r in by["denied"]),
                         sorted([("127.0.0.1", str(self.other.port)), ("example.com", "443"), ("localhost", "1")]))
        self.assertTrue(all(r["PRIORITY"] == "4" for r in by["denied"]))
        self.assertTrue(all(r["PRIORITY"] == "6" for r in by["allowed"]))
        self.assertTrue(any(r["MESSAGE"] == f"session {self.sid}: egress to example.com:443 denied: not in the "
                            "session's allowlist" for r in by["denied"]), by["denied"])
        self.assertEqual(len(by["bad-request"]), 6)
        self.assertEqual(len(by["method-not-allowed"]), 1)

        # It stops cleanly: no sanitizer report, no leak.
        self.assertEqual(self.probe.stop(), 0, self.probe.output())
        self.assertNotIn("Sanitizer", self.probe.output())
        self.assertFalse(os.path.exists(self.path), "the socket is removed")


class EgressLocalAddressTest(unittest.TestCase):
    """Issue 14 defect 7: an allowed name that resolves to a loopback, link-local or private address is
    refused with a 403 that says so, before any connection, unless the allowlist names that address (or
    the name is "localhost" itself); with the address named, the same name reaches the server. The names
    resolve through a hosts file of the test's own, given to the proxy's c-ares as CARES_HOSTS (the
    machine's /etc/hosts is left alone), and none of the refused addresses is ever connected to."""

    NAMES = {"loop.egress.test": "127.0.0.1", "metadata.egress.test": "169.254.169.254",
             "private.egress.test": "10.11.12.13", "mapped.egress.test": "::ffff:127.0.0.1",
             "a.wild.egress.test": "127.0.0.2"}

    def setUp(self):
        self.server = TcpServer()
        self.addCleanup(self.server.close)
        self.dir = tempfile.mkdtemp(prefix="ccdocker-egress-local-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.hosts = os.path.join(self.dir, "hosts")
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
            for name, address in self.NAMES.items():
                f.write(f"{address} {name}\n")
        os.chmod(self.dir, 0o755)
        os.chmod(self.hosts, 0o644)

    def probe(self, allowed):
        sid = sb.unique("el").replace("-", "")[:12]
        path = os.path.join(self.dir, f"{sid}.sock")
        return sid, path, EgressProbe(self, path, sid, allowed, env=[f"CARES_HOSTS={self.hosts}"])

    def echo(self, path, host):
        raw = request(path, f"CONNECT {host}:{self.server.port} HTTP/1.1\r\n\r\nhello {host}".encode())
        self.assertEqual(raw, f"HTTP/1.1 200 Connection established\r\n\r\nhello {host}".encode())

    def test_egress_refuses_allowed_names_that_resolve_to_local_addresses(self):
        port = self.server.port
        sid, path, probe = self.probe([f"loop.egress.test:{port}", "metadata.egress.test:80",
                                       f"private.egress.test:{port}", f"mapped.egress.test:{port}",
                                       f"*.wild.egress.test:{port}", f"localhost:{port}"])
        cases = [("loop.egress.test", port, "a loopback address 127.0.0.1"),
                 ("metadata.egress.test", 80, "a link-local address 169.254.169.254"),
                 ("private.egress.test", port, "a private address 10.11.12.13"),
                 ("mapped.egress.test", port, "a loopback address ::ffff:127.0.0.1"),
                 ("a.wild.egress.test", port, "a loopback address 127.0.0.2")]
        for host, p, what in cases:
            status, body = split_answer(request(path, f"CONNECT {host}:{p} HTTP/1.1\r\n\r\n".encode()))
            self.assertEqual(status, "HTTP/1.1 403 Forbidden", host)
            self.assertEqual(body.decode(), f"cc-docker: egress to {host}:{p} is not allowed for this session: "
                             f"it resolves to {what}; allowed_hosts must name it explicitly\n")
        self.assertEqual(self.server.accepted, 0, "a refused address was connected to")

        # "localhost" named as itself is explicit: it reaches the loopback.
        self.echo(path, "localhost")
        self.assertEqual(self.server.accepted, 1)

        # The decisions, with the address refused.
        def decisions():
            return sb.journal(f"MESSAGE_ID={MESSAGE_ID}", f"CCDOCKER_SESSION={sid}")
        sb.wait_until(lambda: len(decisions()) >= len(cases) + 1, 10, what="the decision records")
        records = decisions()
        denied = {r["CCDOCKER_EGRESS_HOST"]: r for r in records if r["CCDOCKER_EGRESS_DECISION"] == "denied"}
        self.assertEqual(set(denied), {host for host, _, _ in cases})
        for host, p, what in cases:
            self.assertEqual(denied[host]["CCDOCKER_EGRESS_ADDRESS"], what.split()[-1])
            self.assertEqual(denied[host]["CCDOCKER_EGRESS_PORT"], str(p))
            self.assertEqual(denied[host]["PRIORITY"], "4")
            self.assertEqual(denied[host]["MESSAGE"], f"session {sid}: egress to {host}:{p} denied: it resolves "
                             f"to {what}; allowed_hosts must name it explicitly")
        self.assertEqual([r["CCDOCKER_EGRESS_HOST"] for r in records if r["CCDOCKER_EGRESS_DECISION"] == "allowed"],
                         ["localhost"])
        self.assertEqual(probe.stop(), 0, probe.output())
        self.assertNotIn("Sanitizer", probe.output())

        # The same name, with its address named in the list: allowed, and it reaches the server.
        sid, path, probe = self.probe([f"loop.egress.test:{port}", f"127.0.0.1:{port}"])
        self.echo(path, "loop.egress.test")
        self.assertEqual(self.server.accepted, 2)
        status, _ = split_answer(request(path, f"CONNECT loop.egress.test:{port + 1} HTTP/1.1\r\n\r\n".encode()))
        self.assertEqual(status, "HTTP/1.1 403 Forbidden")
        self.assertEqual(probe.stop(), 0, probe.output())
        self.assertNotIn("Sanitizer", probe.output())


# The fake claude that ccdocker-init runs in the container: it reports what it sees as one event.
FAKE_CLAUDE = r'''
import errno, http.client, json, os, socket, sys, urllib.parse

def connect_via_proxy(target, payload):
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode("latin-1")

def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))

report = {"type": "egress-check"}
report["env"] = {k: os.environ.get(k) for k in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "HTTPS_PROXY",
                 "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY")}
echo, other = os.environ["ECHO_PORT"], os.environ["OTHER_PORT"]
try:
    report["allowed"] = connect_via_proxy(f"127.0.0.1:{echo}", b"ping from the container " * 5000)
    report["denied"] = connect_via_proxy(f"127.0.0.1:{other}", b"")
    report["local"] = connect_via_proxy(f"loop.egress.test:{other}", b"")
    base = urllib.parse.urlsplit(os.environ["ANTHROPIC_BASE_URL"])
    c = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    c.request("POST", "/v1/messages", body=b'{"x":1}', headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"]})
    r = c.getresponse()
    report["model"] = [r.status, r.read().decode()]
except Exception as e:
    report["error"] = repr(e)
report["direct_loopback"] = direct("127.0.0.1", int(echo))
report["direct_outside"] = direct("192.0.2.1", 80)
report["interfaces"] = [name for _, name in socket.if_nameindex()]
print(json.dumps(report), flush=True)
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "checked"}), flush=True)
for line in sys.stdin:
    pass
'''


class FakeModel:
    """An HTTP/1.1 server on a unix socket (the model proxy's place): answers every request with what it
    saw of it, as JSON."""

    def __init__(self, path, owner):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        os.chown(path, owner, owner)
        self.sock.listen(8)
        self.requests = []
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                top, _, got = data.partition(b"\r\n\r\n")
                head = top.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                # The whole body is read before the answer, as a real server does: a unix socket closed
                # with bytes unread resets its peer, and the reset may overtake the answer.
                want = int(headers.get("content-length") or 0)
                while len(got) < want:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                self.requests.append(head[0])
                body = json.dumps({"request": head[0], "x-api-key": headers.get("x-api-key")}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def close(self):
        self.sock.close()


class BridgeInContainerTest(unittest.TestCase):
    def setUp(self):
        self.allowed = TcpServer()
        self.addCleanup(self.allowed.close)
        self.other = TcpServer()
        self.addCleanup(self.other.close)
        self.daemon = test_init.FakeDaemon()
        self.addCleanup(self.daemon.close)
        self.sid = sb.unique("br").replace("-", "")[:12]
        # An allowed name that resolves to the host's loopback (through a hosts file of the test's own).
        self.hosts = tempfile.mkdtemp(prefix="ccdocker-egress-hosts-")
        self.addCleanup(shutil.rmtree, self.hosts, True)
        os.chmod(self.hosts, 0o755)
        with open(os.path.join(self.hosts, "hosts"), "w") as f:
            f.write("127.0.0.1 loop.egress.test\n")
        self.probe = EgressProbe(self, os.path.join(self.daemon.dir, "egress.sock"), self.sid,
                                 [f"127.0.0.1:{self.allowed.port}", f"loop.egress.test:{self.other.port}"],
                                 owner=1000, env=[f"CARES_HOSTS={os.path.join(self.hosts, 'hosts')}"])
        self.model = FakeModel(os.path.join(self.daemon.dir, "model.sock"), 1000)
        self.addCleanup(self.model.close)
        self.tools = tempfile.mkdtemp(prefix="ccdocker-egress-claude-")
        self.addCleanup(shutil.rmtree, self.tools, True)
        os.chmod(self.tools, 0o755)
        with open(os.path.join(self.tools, "claude"), "w") as f:
            f.write("#!/usr/bin/python3\n" + FAKE_CLAUDE)
        os.chmod(os.path.join(self.tools, "claude"), 0o755)
        self.ws = test_init.workspace()
        self.addCleanup(shutil.rmtree, self.ws, True)
        self.name = sb.unique("ccdocker-egress")

    def remove_container(self):
        sb.run("podman", "rm", "--force", "--time", "0", self.name, check=False, timeout=60)

    def container_log(self):
        p = sb.run("podman", "logs", self.name, check=False, timeout=30)
        return (p.stdout + p.stderr)[-4000:]

    def test_claude_reaches_only_the_proxies_through_the_bridges(self):
        argv = ["podman", "run", "-d", "--name", self.name, "--network=none", "--read-only",
                "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp",
                "--mount", "type=tmpfs,destination=/home/claude,U",
                "--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "-v", f"{self.ws}:/workspace", "-v", f"{self.daemon.dir}:/run/ccdocker",
                "-v", f"{self.tools}:/opt/egress-test:ro",
                "-e", "CCDOCKER_CLAUDE=/opt/egress-test/claude",
                "-e", f"ECHO_PORT={self.allowed.port}", "-e", f"OTHER_PORT={self.other.port}",
                "--label", "org.ccdocker.test=1", IMAGE]
        self.addCleanup(self.remove_container)
        sb.run(*argv, timeout=120)
        ch, _ = self.daemon.hello(30, config=test_init.session_config(self.sid), session_id=self.sid)
        try:
            ch.until(lambda: any(e["data"].get("type") == "egress-check" for e in ch.events), 60,
                     "the fake claude's report")
        except AssertionError as e:
            raise AssertionError(f"{e}\ncontainer log:\n{self.container_log()}") from None
        report = next(e["data"] for e in ch.events if e["data"].get("type") == "egress-check")
        self.assertNotIn("error", report, report)

        # The environment ccdocker-init gave claude.
        env = report["env"]
        model_url, proxy_url = env["ANTHROPIC_BASE_URL"], env["HTTPS_PROXY"]
        self.assertRegex(model_url, r"^http://127\.0\.0\.1:\d+$")
        self.assertRegex(proxy_url, r"^http://127\.0\.0\.1:\d+$")
        self.assertNotEqual(model_url, proxy_url)
        self.assertEqual(env["ANTHROPIC_API_KEY"], "sk-ant-placeholder-ccdocker")
        self.assertEqual(env["HTTP_PROXY"], proxy_url)
        self.assertEqual(env["https_proxy"], proxy_url)
        self.assertEqual(env["http_proxy"], proxy_url)
        self.assertEqual(env["NO_PROXY"], "127.0.0.1,localhost")
        logs = ch.log_text()
        self.assertIn(f"model bridge: {model_url[len('http://'):]} to /run/ccdocker/model.sock", logs)
        self.assertIn(f"egress bridge: {proxy_url[len('http://'):]} to /run/ccdocker/egress.sock", logs)

        # Through the egress bridge and the proxy on the host, to the echo server on the host's loopback.
        self.assertEqual(report["allowed"],
                         "HTTP/1.1 200 Connection established\r\n\r\n" + "ping from the container " * 5000)
        self.assertTrue(report["denied"].startswith("HTTP/1.1 403 Forbidden\r\n"), report["denied"])
        self.assertTrue(report["denied"].endswith(
            f"cc-docker: egress to 127.0.0.1:{self.other.port} is not allowed for this session\n"))
        # An allowed name that resolves to the host's loopback does not reach it either.
        self.assertTrue(report["local"].startswith("HTTP/1.1 403 Forbidden\r\n"), report["local"])
        self.assertTrue(report["local"].endswith(
            f"cc-docker: egress to loop.egress.test:{self.other.port} is not allowed for this session: it resolves "
            "to a loopback address 127.0.0.1; allowed_hosts must name it explicitly\n"), report["local"])
        self.assertEqual(self.other.accepted, 0)

        # Through the model bridge to the model socket, with the placeholder credential.
        self.assertEqual(report["model"][0], 200)
        self.assertEqual(json.loads(report["model"][1]),
                         {"request": "POST /v1/messages HTTP/1.1", "x-api-key": "sk-ant-placeholder-ccdocker"})

        # Nothing else: the container's loopback is its own, and there is no other interface.
        self.assertEqual(report["direct_loopback"], "ECONNREFUSED")
        self.assertEqual(report["direct_outside"], "ENETUNREACH")
        self.assertEqual(report["interfaces"], ["lo"])

        # The proxy recorded both decisions for this session.
        records = sb.wait_until(
            lambda: (r := sb.journal(f"MESSAGE_ID={MESSAGE_ID}", f"CCDOCKER_SESSION={self.sid}")) and len(r) >= 3 and r,
            10, what="the decision records")
        self.assertEqual(sorted(r["CCDOCKER_EGRESS_DECISION"] for r in records), ["allowed", "denied", "denied"])

        sb.run("podman", "stop", "--time", "10", self.name, timeout=60)
        code = sb.run("podman", "inspect", "--format", "{{.State.ExitCode}}", self.name, timeout=30).stdout.strip()
        self.assertEqual(code, "0", self.container_log())
        self.assertEqual(self.probe.stop(), 0, self.probe.output())
        self.assertNotIn("Sanitizer", self.probe.output())


if __name__ == "__main__":
    unittest.main()

"""Nothing slow on ccdockerd's loop (STYLE.md 16), against the real sandbox: a libpod call that podman
never answers fails its session with a reason naming the timeout while another session starts
normally; an ephemeral workspace is removed by a forked worker that does not follow a symlink out of
it; child.output's since_timestamp (found in SQL now) selects what it did before.

The hung call: the daemon under test reaches the real podman through a small relay on a unix socket
that passes every request through unchanged except one session's container create, which it holds
unanswered. That stands in for a hung libpod only; podman serves everything else."""

import calendar
import json
import os
import shutil
import socket
import tempfile
import threading
import unittest

import sandbox as sb

STALL_MARKER = "stall-this-create"


class StallingRelay:
    """A unix-socket HTTP relay to podman's socket. Each request is read whole (curl sends
    Content-Length, never chunks) and sent upstream on its own connection with "Connection: close",
    and the answer relayed until podman closes; a POST /containers/create whose body holds the
    marker is never forwarded nor answered."""

    def __init__(self, path, upstream):
        self.path = path
        self.upstream = upstream
        self.stalled = threading.Event()
        self.held = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    @staticmethod
    def read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return head, body

    def handle(self, conn):
        req = self.read_request(conn)
        if req is None:
            conn.close()
            return
        head, body = req
        if head.startswith(b"POST ") and b"/containers/create" in head.split(b"\r\n")[0] and \
                STALL_MARKER.encode() in body:
            self.held.append(conn)  # kept open, never answered
            self.stalled.set()
            return
        lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.upstream)
            up.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
        finally:
            up.close()
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()
        os.unlink(self.path)


RELAY = DAEMON = None
RELAY_DIR = RUNTIME = None


def setUpModule():
    global RELAY, DAEMON, RELAY_DIR, RUNTIME
    RELAY_DIR = tempfile.mkdtemp(prefix="ccdocker-relay-", dir=sb.env("CCDOCKER_RUN_DIR"))
    RUNTIME = os.path.join(RELAY_DIR, "runtime")
    RELAY = StallingRelay(os.path.join(RELAY_DIR, "podman.sock"), sb.env("CCDOCKER_PODMAN_SOCKET"))
    DAEMON = sb.Daemon(unit="ccdockerd-loop-test.service", settings={
        "PodmanSocket": RELAY.path,
        # Short, so the test does not wait long; nothing here is asserted on how long it took.
        "PodmanTimeoutSec": "10",
        "RuntimeDirectory": RUNTIME,
        "DefaultMemory": "256M",
        "HeartbeatTimeoutSec": "0",
    })
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    RELAY.close()
    shutil.rmtree(RELAY_DIR, ignore_errors=True)
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


class HungPodmanCallTest(unittest.TestCase):
    def forget(self, path):
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true", check=False)
        sb.wait_state(path, "stopped", "failed", timeout=60)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)

    def test_a_hung_create_fails_on_its_timeout_and_holds_no_other_session(self):
        _, stuck = sb.create_session("environment", "a{ss}", {"CCDOCKER_TEST": STALL_MARKER})
        self.addCleanup(self.forget, stuck)
        sb.wait_until(RELAY.stalled.is_set, 60, what="the relay to hold the container create")

        # Another session is created and started while the first one's call hangs.
        _, other = sb.create_session()
        self.addCleanup(self.forget, other)
        self.assertEqual(sb.wait_state(other, "idle", "failed", timeout=120), "idle",
                         sb.session_prop(other, "StateReason"))

        # The hung call ends on PodmanTimeoutSec, not never, and the reason says so.
        self.assertEqual(sb.wait_state(stuck, "failed", "stopped", timeout=120), "failed")
        reason = sb.session_prop(stuck, "StateReason")
        self.assertIn("timeout: libpod did not answer", reason)
        self.assertIn("PodmanTimeoutSec", reason)
        self.assertEqual(sb.session_prop(other, "State"), "idle")


class WorkspaceRemovalTest(unittest.TestCase):
    def test_ephemeral_workspace_goes_and_a_symlink_out_of_it_is_not_followed(self):
        sid, path = sb.create_session()
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)
        sb.wait_state(path, "idle")
        ws = sb.session_prop(path, "Workspace")
        outside = tempfile.mkdtemp(prefix="ccdocker-outside-", dir=sb.env("CCDOCKER_RUN_DIR"))
        self.addCleanup(shutil.rmtree, outside, ignore_errors=True)
        with open(os.path.join(outside, "keep"), "w") as f:
            f.write("not the session's\n")
        os.makedirs(os.path.join(ws, "deep", "er"))
        with open(os.path.join(ws, "deep", "er", "file"), "w") as f:
            f.write("the session's\n")
        os.symlink(outside, os.path.join(ws, "deep", "link"))

        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "stopped")
        sb.wait_until(lambda: not os.path.lexists(ws), 30, what="the ephemeral workspace to be removed")
        self.assertTrue(os.path.exists(os.path.join(outside, "keep")), "the worker followed a symlink")
        # The daemon's loop went on: it still answers.
        self.assertEqual(sb.session_prop(path, "State"), "stopped")


class Channel:
    """A client of a session's channel socket (docs/channel.md) in a role: "init" is what
    ccdocker-init is to the daemon, "mcp" what ccdocker-mcp is. Requests from the daemon (a prompt
    for init) are left unanswered."""

    def __init__(self, sid, role):
        path = os.path.join(RUNTIME, "sessions", sid, "session.sock")
        sb.wait_until(lambda: os.path.exists(path), 30, what=f"the channel socket of {sid}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(60)
        self.lines = self.sock.makefile("rb")
        self.next_id = 0
        self.ok("hello", {"role": role, "protocol": 1})

    def ok(self, method, params):
        self.next_id += 1
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                      "params": params}).encode() + b"\n")
        for line in self.lines:
            msg = json.loads(line)
            if "method" not in msg and msg.get("id") == self.next_id:
                assert "result" in msg, f"{method} {params}: {msg}"
                return msg["result"]
        raise AssertionError("the daemon closed the channel")

    def close(self):
        self.lines.close()
        self.sock.close()


class ChildOutputByTimeTest(unittest.TestCase):
    def test_since_timestamp_passes_over_what_is_not_later(self):
        sid, path = sb.create_session()
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        sb.wait_state(path, "idle")
        mcp = Channel(sid, "mcp")
        self.addCleanup(mcp.close)
        cid = mcp.ok("child.spawn", {"prompt": "a task"})["child_session_id"]
        # The child's idle test command runs no ccdocker-init: the test speaks for it.
        init = Channel(cid, "init")
        self.addCleanup(init.close)
        t0 = calendar.timegm((2026, 11, 25, 14, 3, 0, 0, 0, 0))
        events = [{"seq": n + 1, "time": (t0 + 2 * n) * 1000000, "data": {"type": "system", "n": n + 1}}
                  for n in range(3)]
        init.ok("events", {"events": events})

        def output(second):
            since = f"2026-11-25T14:03:{second:02d}Z"
            out = mcp.ok("child.output", {"child_session_id": cid, "since_timestamp": since})
            return [e["seq"] for e in out["events"]], out["last_seq"]

        self.assertEqual(output(1), ([2, 3], 3))
        # Stamped at the time itself is not after it.
        self.assertEqual(output(2), ([3], 3))
        self.assertEqual(output(0), ([2, 3], 3))
        # Everything passed over: nothing to return, and last_seq says how far that went.
        self.assertEqual(output(5), ([], 3))
        out = mcp.ok("child.output", {"child_session_id": cid, "since_timestamp": "2026-11-25T14:02:59Z"})
        self.assertEqual([e["seq"] for e in out["events"]], [1, 2, 3])


if __name__ == "__main__":
    unittest.main()

"""ccdocker-init, the session container's PID 1, with the test playing the daemon's end of the session
channel (docs/channel.md): a unix socket in a directory bind-mounted at /run/ccdocker.

InitInContainerTest runs the session image as a session runs (read-only root, tmpfs home, uid 1000,
no capabilities) with the real Claude Code CLI against the scripted model: hello, the generated
configuration (and that it reaches the model), prompts and their numbered events, one conversation
across prompts, a reconnect that resends exactly what was not acked, a claude that dies and is
resumed, heartbeats, and a quick clean `podman stop`.

InitUnderSanitizersTest runs the sanitizer build of ccdocker-init on the host against a fake claude
(a few lines of Python that speak stream-json), for the protocol corners the real CLI cannot be made
to hit on demand; a sanitizer report or a leak fails it.
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import sandbox as sb

IMAGE = os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev")
SKILLS = ["delegate-task", "coordinate-children", "child-status"]


class Channel:
    """The daemon's end of one connection: reads JSON-RPC lines, records events, logs and heartbeats,
    answers heartbeats, and acks events calls while `ack` is true (else it keeps them in `held`)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.events = []     # acked events, in order
        self.calls = []      # every events call, as received
        self.held = []       # events calls left unanswered
        self.logs = []
        self.heartbeats = 0
        self.responses = {}
        self.ack = True

    def close(self):
        self.sock.close()

    def send(self, msg):
        self.sock.sendall((json.dumps(msg) + "\n").encode())

    def respond(self, msg_id, result):
        self.send({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def next(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise EOFError("ccdocker-init closed the channel")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def handle(self, msg):
        method = msg.get("method")
        if method == "events":
            self.calls.append(msg)
            if self.ack:
                self.events.extend(msg["params"]["events"])
                self.respond(msg["id"], {"acked": msg["params"]["events"][-1]["seq"]})
            else:
                self.held.append(msg)
        elif method == "heartbeat":
            self.heartbeats += 1
            self.respond(msg["id"], {})
        elif method == "log":
            self.logs.append(msg["params"])
        elif method is None:
            self.responses[msg.get("id")] = msg
        else:
            raise AssertionError(f"unexpected request from ccdocker-init: {msg}")
        return msg

    def until(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond():
            try:
                self.handle(self.next(deadline))
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; logs {self.logs}") from None
        return cond()

    def drain(self, seconds):
        """Handles whatever arrives for this long."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.handle(self.next(deadline))
        except TimeoutError:
            pass

    def prompt(self, req_id, message_id, text, timeout=30):
        self.send({"jsonrpc": "2.0", "id": req_id, "method": "prompt",
                   "params": {"message_id": message_id, "text": text}})
        answer = self.until(lambda: self.responses.get(req_id), timeout, f"the answer to prompt {req_id}")
        assert answer.get("result") == {}, answer
        return answer

    def results(self):
        return [e for e in self.events if e["data"].get("type") == "result"]

    def log_text(self):
        return "\n".join(f"{l.get('level')}: {l.get('message')}" for l in self.logs)


class FakeDaemon:
    """A listening session socket in a directory the container gets at /run/ccdocker (owned by the
    container's uid, as the daemon makes it)."""

    def __init__(self, owner=1000):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-chan-")
        self.path = os.path.join(self.dir, "session.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        if owner is not None:
            os.chown(self.dir, owner, owner)
            os.chown(self.path, owner, owner)
        os.chmod(self.dir, 0o700)
        os.chmod(self.path, 0o600)
        self.channels = []

    def accept(self, timeout):
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise AssertionError(f"ccdocker-init did not connect within {timeout} s") from None
        conn.setblocking(True)
        ch = Channel(conn)
        self.channels.append(ch)
        return ch

    def hello(self, timeout, last_seq=0, config=None, session_id="3f9c0a1b2c4d"):
        """Accepts a connection and answers its hello; returns (channel, hello params)."""
        ch = self.accept(timeout)
        msg = ch.next(time.monotonic() + 10)
        assert msg.get("method") == "hello", msg
        ch.respond(msg["id"], {"protocol": 1, "session_id": session_id, "last_seq": last_seq,
                               "config": config or {}})
        return ch, msg["params"]

    def close(self):
        for ch in self.channels:
            ch.close()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def session_config(session_id, **overrides):
    config = {"session_id": session_id, "parent_id": None, "depth": 0, "task_type": None,
              "permission_mode": "bypassPermissions", "mcp_servers": ["filesystem"],
              "skills": list(SKILLS), "allowed_tools": []}
    config.update(overrides)
    return config


def workspace():
    ws = tempfile.mkdtemp(prefix="ccdocker-ws-")
    os.chown(ws, 1000, 1000)
    return ws


class InitInContainerTest(unittest.TestCase):
    def setUp(self):
        self.name = sb.unique("ccdocker-init")
        self.model = sb.ScriptedModel({"steps": [
            {"id": "one", "when": {"last_user_contains": "first question"}, "reply": {"text": "Answer one."}},
            {"id": "two", "when": {"last_user_contains": "second question"}, "reply": {"text": "Answer two."}},
            {"id": "three", "when": {"last_user_contains": "third question"}, "reply": {"text": "Answer three."}},
        ]})
        self.addCleanup(self.model.stop)
        self.daemon = FakeDaemon()
        self.addCleanup(self.daemon.close)
        self.ws = workspace()
        self.addCleanup(shutil.rmtree, self.ws, True)
        self.sid = sb.unique("s").replace("-", "")

    def run_container(self):
        env = sb.claude_env(self.model)
        argv = ["podman", "run", "-d", "--name", self.name, "--network=host", "--read-only",
                "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp",
                "--mount", "type=tmpfs,destination=/home/claude,U",
                "--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "-v", f"{self.ws}:/workspace", "-v", f"{self.daemon.dir}:/run/ccdocker",
                "--label", "org.ccdocker.test=1"]
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        argv.append(IMAGE)
        self.addCleanup(self.remove_container)
        started = time.monotonic()
        sb.run(*argv, timeout=120)
        return started

    def remove_container(self):
        sb.run("podman", "rm", "--force", "--time", "0", self.name, check=False, timeout=60)

    def container_log(self):
        p = sb.run("podman", "logs", self.name, check=False, timeout=30)
        return (p.stdout + p.stderr)[-4000:]

    def start(self, **config):
        self.run_container()
        ch, hello = self.daemon.hello(30, config=session_config(self.sid, **config), session_id=self.sid)
        self.assertEqual(hello, {"role": "init", "protocol": 1})
        return ch

    def turn(self, ch, req_id, message_id, text, timeout=90):
        """A prompt and its events up to the result; returns the events of this turn."""
        first = len(ch.events)
        n_results = len(ch.results())
        ch.prompt(req_id, message_id, text)
        try:
            ch.until(lambda: len(ch.results()) > n_results, timeout, f"the result of {text!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\ncontainer log:\n{self.container_log()}") from None
        return ch.events[first:]

    def exec_json(self, path):
        p = sb.run("podman", "exec", self.name, "cat", path, timeout=30)
        return json.loads(p.stdout)

    def stop_container(self):
        t0 = time.monotonic()
        sb.run("podman", "stop", "--time", "10", self.name, timeout=60)
        elapsed = time.monotonic() - t0
        code = sb.run("podman", "inspect", "--format", "{{.State.ExitCode}}", self.name, timeout=30).stdout.strip()
        return elapsed, int(code)

    def test_init_configures_claude_and_streams_a_conversation(self):
        ch = self.start()

        # What a session's configuration makes of the image's templates (SPEC.md 1.3-1.5, 4). The image
        # carries the filesystem server and the SessionStart hook (issue 16, docs/mcp-servers.md).
        sb.wait_until(lambda: os.path.exists(os.path.join(self.ws, ".claude", "CLAUDE.md")), 10,
                      what="the configuration files")
        with open(os.path.join(self.ws, ".mcp.json")) as f:
            self.assertEqual(json.load(f), {"mcpServers": {"filesystem": {
                "type": "stdio", "command": "/opt/cc-docker/mcp-servers/filesystem", "args": ["/workspace", "/shared"]}}})
        with open(os.path.join(self.ws, ".claude", "settings.json")) as f:
            project = json.load(f)
        self.assertIs(project["enableAllProjectMcpServers"], True)
        self.assertEqual(project["enabledMcpjsonServers"], ["filesystem"])
        self.assertIn("mcp__cc-docker__*", project["permissions"]["allow"])
        with open(os.path.join(self.ws, ".claude", "CLAUDE.md")) as f:
            claude_md = f.read()
        self.assertIn(f"- **Session ID**: {self.sid}\n", claude_md)
        self.assertIn("- **Parent Session**: None (root session)\n", claude_md)
        for skill in SKILLS:
            with open(os.path.join(sb.SRC, "oci-image", "skills", skill, "SKILL.md")) as f:
                want = f.read()
            with open(os.path.join(self.ws, ".claude", "skills", skill, "SKILL.md")) as f:
                self.assertEqual(f.read(), want)
            self.assertIn(f"- **/{skill}**: ", claude_md)
            self.assertEqual(os.stat(os.path.join(self.ws, ".claude", "skills", skill, "SKILL.md")).st_uid, 1000)
        user = self.exec_json("/home/claude/.claude/settings.json")
        self.assertEqual(user["permissions"]["defaultMode"], "bypassPermissions")
        self.assertEqual(user["env"]["SESSION_ID"], self.sid)
        self.assertEqual(user["env"]["MCP_TIMEOUT"], "30000")
        self.assertEqual(user["hooks"]["SessionStart"][0]["hooks"][0]["command"], "/opt/cc-docker/hooks/session-start.sh")
        state = self.exec_json("/home/claude/.claude.json")
        self.assertIs(state["hasCompletedOnboarding"], True)
        self.assertIs(state["projects"]["/workspace"]["hasTrustDialogAccepted"], True)

        # A prompt: its events are numbered from 1 and end in a result.
        events = self.turn(ch, "p-1", "m-1", "Here is the first question.")
        self.assertEqual([e["seq"] for e in ch.events], list(range(1, len(ch.events) + 1)))
        kinds = [(e["data"].get("type"), e["data"].get("subtype")) for e in events]
        # The image's SessionStart hook runs first, then the CLI's init.
        self.assertEqual(kinds[:3], [("system", "hook_started"), ("system", "hook_response"), ("system", "init")], kinds)
        self.assertIn(f"cc-docker session {self.sid} started", events[1]["data"]["stdout"])
        self.assertIn("assistant", [k[0] for k in kinds])
        self.assertEqual(kinds[-1], ("result", "success"))
        self.assertEqual(events[-1]["data"]["result"], "Answer one.")
        self.assertFalse(events[-1]["data"]["is_error"])
        now_us = time.time() * 1e6
        self.assertTrue(all(now_us - 600e6 < e["time"] <= now_us for e in events), events[0]["time"])

        # The configuration reached the model: CLAUDE.md in the first user message, the skills.
        reqs = self.model.requests()
        self.assertEqual([r["matched_step"] for r in reqs], ["one"])
        self.assertIn(f"- **Session ID**: {self.sid}", json.dumps(reqs[0]["body"]["messages"][0]))
        for skill in SKILLS:
            self.assertIn(f"- {skill}: ", reqs[0]["system_text"])

        # The second prompt continues the same conversation; a resent prompt is not written twice.
        ch.send({"jsonrpc": "2.0", "id": "p-2", "method": "prompt",
                 "params": {"message_id": "m-2", "text": "And the second question?"}})
        ch.prompt("p-2-again", "m-2", "And the second question?")
        ch.until(lambda: len(ch.results()) >= 2, 90, "the second result")
        self.assertEqual(ch.responses["p-2"]["result"], {})
        self.assertEqual(ch.results()[-1]["data"]["result"], "Answer two.")
        self.assertEqual([e["seq"] for e in ch.events], list(range(1, len(ch.events) + 1)))
        reqs = self.model.requests()
        self.assertEqual([r["matched_step"] for r in reqs], ["one", "two"])
        history = json.dumps(reqs[1]["body"]["messages"])
        self.assertIn("first question", history)
        self.assertIn("Answer one.", history)
        self.assertEqual(ch.results()[0]["data"]["session_id"], ch.results()[1]["data"]["session_id"])

        # Heartbeats, every 5 s.
        ch.until(lambda: ch.heartbeats >= 1, 15, "a heartbeat")
        self.assertEqual([r["matched_step"] for r in self.model.requests()], ["one", "two"])

        # podman stop: SIGTERM to init, which ends claude and exits 0 at once.
        elapsed, code = self.stop_container()
        self.assertEqual(code, 0, self.container_log())
        self.assertLess(elapsed, 6, self.container_log())

    def test_init_resends_exactly_the_unacked_events_after_a_reconnect(self):
        ch = self.start()
        ch.prompt("p-1", "m-1", "Here is the first question.")
        # Ack the system/init event only; leave the next events call unanswered.
        ch.until(lambda: ch.events, 60, "the first event")
        ch.ack = False
        ch.until(lambda: ch.held, 60, "a second events call")
        acked = ch.events[-1]["seq"]
        held = ch.held[0]["params"]["events"]
        self.assertEqual(held[0]["seq"], acked + 1)
        sb.wait_until(lambda: self.model.requests(), 60, what="the model's answer")
        time.sleep(1)  # claude prints the rest of the turn meanwhile, into init's queue

        # The daemon "restarts": it stored the first held event but died before acking it.
        ch.close()
        stored = acked + 1
        ch2, hello = self.daemon.hello(30, last_seq=stored, session_id=self.sid)
        self.assertEqual(hello, {"role": "init", "protocol": 1})
        ch2.until(lambda: ch2.results(), 60, "the resent result")
        self.assertEqual(ch2.calls[0]["params"]["events"][0]["seq"], stored + 1, ch2.calls[0])
        seqs = [e["seq"] for e in ch2.events]
        self.assertEqual(seqs, list(range(stored + 1, stored + 1 + len(seqs))))
        by_seq = {e["seq"]: e for e in ch2.events}
        for e in held[1:]:
            self.assertEqual(by_seq[e["seq"]], e, "a resent event differs from the one first sent")
        self.assertEqual(ch2.results()[-1]["data"]["result"], "Answer one.")

        # Numbering goes on from there.
        events = self.turn(ch2, "p-2", "m-2", "And the second question?")
        self.assertEqual(events[0]["seq"], seqs[-1] + 1)
        self.assertEqual(ch2.results()[-1]["data"]["result"], "Answer two.")

    def test_init_resumes_a_claude_that_died(self):
        ch = self.start()
        self.turn(ch, "p-1", "m-1", "Here is the first question.")
        sb.run("podman", "exec", self.name, "pkill", "-KILL", "-x", "claude", timeout=30)
        ch.until(lambda: "restarting it with --resume" in ch.log_text(), 30, "the restart of claude")
        self.assertIn("claude was killed by signal KILL", ch.log_text())
        self.turn(ch, "p-2", "m-2", "And the second question?")
        self.assertEqual(ch.results()[-1]["data"]["result"], "Answer two.")
        reqs = self.model.requests()
        self.assertEqual([r["matched_step"] for r in reqs], ["one", "two"])
        self.assertIn("Answer one.", json.dumps(reqs[1]["body"]["messages"]), "the conversation was not resumed")
        self.assertEqual([e["seq"] for e in ch.events], list(range(1, len(ch.events) + 1)))
        elapsed, code = self.stop_container()
        self.assertEqual(code, 0, self.container_log())


# ---------------------------------------------------------------------------------------------
# the sanitizer build on the host, against a fake claude

FAKE_CLAUDE = r'''
import json, os, sys
with open(os.environ["FAKE_CLAUDE_ARGS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
sid = "fake-session"
for line in sys.stdin:
    msg = json.loads(line)
    text = msg["message"]["content"]
    if text == "die":
        sys.exit(3)
    if text == "big":  # too long for the channel, as JSON and as raw text that escaping makes longer
        sys.stdout.write(json.dumps({"type": "assistant", "blob": "x" * (9 << 20)}) + "\n")
        sys.stdout.write("\x01" * (5 << 20) + "\n")
    out = [{"type": "system", "subtype": "init", "session_id": sid},
           "this line is not JSON",
           {"type": "assistant", "message": {"content": [{"type": "text", "text": "echo: " + text}]}},
           {"type": "result", "subtype": "success", "is_error": False, "result": "echo: " + text,
            "session_id": sid}]
    for o in out:
        sys.stdout.write((o if isinstance(o, str) else json.dumps(o)) + "\n")
    sys.stdout.flush()
'''


class InitUnderSanitizersTest(unittest.TestCase):
    def setUp(self):
        build = os.environ.get("CCDOCKER_BUILD_ASAN_DIR") or os.path.join(sb.SRC, "build-asan")
        self.binary = os.path.join(build, "oci-image", "init", "ccdocker-init")
        self.assertTrue(os.access(self.binary, os.X_OK), f"{self.binary} is not built")
        self.dir = tempfile.mkdtemp(prefix="ccdocker-init-host-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        for d in ("ws", "home"):
            os.mkdir(os.path.join(self.dir, d))
        self.claude = os.path.join(self.dir, "claude")
        with open(self.claude, "w") as f:
            f.write(f"#!{sb.PYTHON}\n{FAKE_CLAUDE}")
        os.chmod(self.claude, 0o755)
        self.args_file = os.path.join(self.dir, "args")
        self.daemon = FakeDaemon(owner=None)
        self.addCleanup(self.daemon.close)
        self.stderr_path = os.path.join(self.dir, "stderr")

    def start_init(self, claude=None):
        env = dict(os.environ, CCDOCKER_CHANNEL=self.daemon.path, CCDOCKER_CLAUDE=claude or self.claude,
                   CCDOCKER_TEMPLATES=os.path.join(sb.SRC, "oci-image", "templates"),
                   CCDOCKER_SKILLS=os.path.join(sb.SRC, "oci-image", "skills"),
                   CCDOCKER_WORKSPACE=os.path.join(self.dir, "ws"), HOME=os.path.join(self.dir, "home"),
                   FAKE_CLAUDE_ARGS=self.args_file,
                   ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=66",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([self.binary], env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        self.addCleanup(self.kill_init)

    def kill_init(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ccdocker-init did not exit:\n{self.stderr()}") from None

    def claude_args(self):
        with open(self.args_file) as f:
            return [json.loads(line) for line in f]

    def test_protocol_corners_under_sanitizers(self):
        self.start_init()
        # A session that already has events (a new init in an old session): numbering follows them.
        ch, hello = self.daemon.hello(30, last_seq=41, config=session_config("s1", permission_mode="default"))
        self.assertEqual(hello, {"role": "init", "protocol": 1})
        ch.prompt("p-1", "m-1", "hello")
        ch.until(lambda: ch.results(), 20, "the first result")
        self.assertEqual([e["seq"] for e in ch.events], [42, 43, 44, 45])
        self.assertEqual(ch.events[1]["data"], {"type": "raw", "text": "this line is not JSON"})
        self.assertEqual(self.claude_args()[0], ["-p", "--input-format", "stream-json", "--output-format",
                                                 "stream-json", "--verbose", "--permission-mode", "default"])

        # Bad requests get JSON-RPC errors, and the connection survives them.
        ch.send({"jsonrpc": "2.0", "id": "bad-1", "method": "prompt", "params": {"text": "x"}})
        ch.send({"jsonrpc": "2.0", "id": "bad-2", "method": "nonsense", "params": {}})
        ch.until(lambda: "bad-1" in ch.responses and "bad-2" in ch.responses, 10, "the error answers")
        self.assertEqual(ch.responses["bad-1"]["error"]["code"], -32602)
        self.assertEqual(ch.responses["bad-2"]["error"]["code"], -32601)

        # The same message_id twice: written once.
        ch.prompt("p-2", "m-2", "again")
        ch.prompt("p-2b", "m-2", "again")
        ch.until(lambda: len(ch.results()) == 2, 20, "the second result")
        ch.drain(1)
        self.assertEqual(len(ch.results()), 2)

        # A partial ack: the rest comes again, after a pause, and nothing is lost.
        ch.ack = False
        ch.prompt("p-3", "m-3", "partial")
        ch.until(lambda: ch.held, 20, "an events call")
        first = ch.held[0]
        ch.held.clear()
        ch.respond(first["id"], {"acked": first["params"]["events"][0]["seq"] - 1})
        ch.ack = True
        t0 = time.monotonic()
        ch.until(lambda: len(ch.results()) == 3, 20, "the third result")
        self.assertGreater(time.monotonic() - t0, 0.5)
        self.assertEqual([e["seq"] for e in ch.events], list(range(42, 42 + len(ch.events))))

        # The daemon goes away while events are unacked; init reconnects and resends them.
        ch.ack = False
        ch.prompt("p-4", "m-4", "unacked")
        ch.until(lambda: ch.held, 20, "an events call")
        last = ch.events[-1]["seq"]
        ch.close()
        ch2, _ = self.daemon.hello(30, last_seq=last)
        ch2.until(lambda: ch2.results(), 20, "the resent result")
        self.assertEqual([e["seq"] for e in ch2.events], list(range(last + 1, last + 5)))
        self.assertEqual(ch2.events[0]["data"], ch.held[0]["params"]["events"][0]["data"])

        # claude dies: it is restarted with --resume and the session id it reported.
        ch2.prompt("p-5", "m-5", "die")
        ch2.until(lambda: "restarting it with --resume fake-session" in ch2.log_text(), 20, "the restart")
        ch2.prompt("p-6", "m-6", "after")
        ch2.until(lambda: len(ch2.results()) == 2, 20, "a result from the new claude")
        self.assertEqual(self.claude_args()[-1][-2:], ["--resume", "fake-session"])

        # Lines longer than the channel takes are cut, not lost, and the stream goes on.
        ch2.prompt("p-7", "m-7", "big")
        ch2.until(lambda: len(ch2.results()) == 3, 60, "the result after the long lines")
        cut = [e["data"] for e in ch2.events if e["data"].get("truncated")]
        self.assertEqual(len(cut), 2, [str(e)[:200] for e in ch2.events[-6:]])
        self.assertEqual(cut[0]["type"], "raw")
        self.assertGreater(cut[0]["bytes"], 9 << 20)
        self.assertTrue(cut[0]["text"].startswith('{"type": "assistant"'))
        self.assertEqual(cut[1]["bytes"], 5 << 20)
        self.assertEqual([e["seq"] for e in ch2.events], list(range(last + 1, last + 1 + len(ch2.events))))

        # SIGTERM: claude ends on EOF, init exits 0; no sanitizer report.
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0, self.stderr())
        self.assertNotIn("Sanitizer", self.stderr())

    def test_init_gives_up_on_a_claude_that_keeps_dying(self):
        self.start_init(claude="/bin/false")
        ch, _ = self.daemon.hello(30, config=session_config("s1"))
        try:
            ch.until(lambda: "giving up" in ch.log_text(), 40, "init to give up")
        except EOFError:
            pass
        self.assertEqual(self.wait_exit(), 2, self.stderr())
        self.assertEqual(self.stderr().count("restarting it"), 5, self.stderr())
        self.assertNotIn("Sanitizer", self.stderr())

    def test_init_dies_loudly_when_claude_cannot_start(self):
        self.start_init(claude="/nonexistent/claude")
        ch, _ = self.daemon.hello(30, config=session_config("s1"))
        try:
            ch.until(lambda: any(l["level"] == "error" for l in ch.logs), 10, "the error log")
        except EOFError:
            pass
        self.assertEqual(self.wait_exit(), 1)
        self.assertIn("ccdocker-init: starting /nonexistent/claude: No such file or directory", self.stderr())
        self.assertNotIn("Sanitizer", self.stderr())

    def test_init_exits_at_once_on_sigterm_before_the_daemon_answers(self):
        self.daemon.close()  # nobody listens: init keeps retrying
        self.start_init()
        time.sleep(0.5)
        self.assertIsNone(self.proc.poll(), self.stderr())
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.wait_exit(), 0, self.stderr())
        self.assertLess(time.monotonic() - t0, 2)


if __name__ == "__main__":
    unittest.main()

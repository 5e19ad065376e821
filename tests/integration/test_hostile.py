"""A hostile container (issue 14, docs/security.md): the attacker is a real session whose container
runs the attack as its command, speaking on its own /run/ccdocker/session.sock as anything inside a
container can. Each test performs one attack and asserts that it is refused or bounded, and that a
well-behaved session beside it is not hurt."""

import json
import os
import shutil
import unittest

import sandbox as sb

DAEMON = None

# The container's command: the Python code in $CCDOCKER_ATTACK (given through CreateSession's
# environment), or the idle shell of the lifecycle tests when it is not set.
ATTACK_COMMAND = ("sh -c 'if [ -n \"$CCDOCKER_ATTACK\" ]; then exec python3 -c \"$CCDOCKER_ATTACK\"; fi; "
                  "trap \"exit 0\" TERM; while :; do sleep 0.2; done'")

# What every attack starts with: a connection to the session's channel, answered hello.
PRELUDE = """
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("/run/ccdocker/session.sock")
f = s.makefile("rwb")
def send(o):
    f.write((json.dumps(o) + "\\n").encode())
def call(method, params, id=1):
    send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    f.flush()
    return json.loads(f.readline())
hello = call("hello", {"role": "init", "protocol": 1})
"""


def setUpModule():
    global DAEMON
    DAEMON = sb.Daemon(unit="ccdockerd-hostile-test.service", settings={
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-hostile-runtime"),
        "SessionCommand": ATTACK_COMMAND,
        "HeartbeatTimeoutSec": "0",
    })
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


class HostileContainerTest(unittest.TestCase):
    def session(self, attack=None):
        env = {"CCDOCKER_ATTACK": PRELUDE + attack} if attack else {}
        sid, path = sb.create_session(*(["environment", "a{ss}", env] if env else []))
        self.addCleanup(self.forget, path)
        sb.wait_state(path, "idle", "running")
        return sid, path

    def forget(self, path):
        stop = call(path, "Stop", "b", "true", check=False)
        if "Unknown object" in stop.stderr:
            return
        try:
            sb.wait_state(path, "stopped", "failed", timeout=30)
        finally:
            call(path, "Remove", check=False)

    def init_lines(self, sid):
        return [r for r in sb.journal(f"CCDOCKER_SESSION={sid}")
                if "ccdocker-init:" in str(r.get("MESSAGE", ""))]

    def test_log_flood_is_bounded_neutralised_and_leaves_the_audit_trail(self):
        """3000 log lines, each claiming to be a warning and carrying a newline and a forged field, are
        cut to the per-session budget, their control characters escaped, and logged at info: the audit
        records of a session created and stopped during the flood are all in the journal."""
        attacker, _ = self.session("""
for i in range(3000):
    send({"jsonrpc": "2.0", "method": "log",
          "params": {"level": "warning", "message": "flood %d\\nMESSAGE_ID=forged\\x1b[2J" % i}})
f.flush()
time.sleep(11)  # the next window: the drop is reported with the next line
send({"jsonrpc": "2.0", "method": "log", "params": {"level": "info", "message": "after the flood"}})
f.flush()
time.sleep(3600)
""")
        sb.wait_until(lambda: any("flood 2999" in str(r.get("MESSAGE")) or "dropped" in str(r.get("MESSAGE"))
                                  for r in self.init_lines(attacker)) or len(self.init_lines(attacker)) >= 200,
                      60, 0.5, what="the flood to reach the journal")
        good, good_path = self.session()
        call(good_path, "Stop", "b", "false")
        sb.wait_state(good_path, "stopped", timeout=60)

        sb.wait_until(lambda: any("after the flood" in str(r.get("MESSAGE")) for r in self.init_lines(attacker)),
                      90, 0.5, what="the line after the flood")
        lines = self.init_lines(attacker)
        flood = [r for r in lines if "flood " in str(r["MESSAGE"])]
        self.assertLessEqual(len(flood), 200, "the per-session budget (SESSION_LOG_BURST per 10 s)")
        self.assertGreater(len(flood), 0)
        dropped = [r for r in lines if "log line(s) dropped" in str(r["MESSAGE"])]
        self.assertEqual(len(dropped), 1, [r["MESSAGE"] for r in lines[-3:]])
        self.assertEqual(int(dropped[0]["MESSAGE"].split("ccdocker-init: ")[1].split()[0]), 3000 - len(flood))
        for r in flood:
            msg = r["MESSAGE"]
            self.assertNotIn("\n", msg)
            self.assertNotIn("\x1b", msg)
            self.assertIn("\\x0aMESSAGE_ID=forged\\x1b[2J", msg)
            self.assertEqual(r["PRIORITY"], "6", "a container's line is logged at info whatever it claims")
            self.assertEqual(r["CCDOCKER_LOG_LEVEL"], "warning")
            self.assertNotEqual(r.get("MESSAGE_ID"), "forged")

        audit = {r.get("CCDOCKER_EVENT") for r in sb.journal(f"CCDOCKER_SESSION={good}")
                 if r.get("MESSAGE_ID")}
        self.assertTrue({"created", "state", "stop"} <= audit, audit)

    def test_host_process_with_the_session_uid_cannot_speak_on_its_channel(self):
        """A host process running as uid 1000, the session user whose socket it is, connects to the
        session's channel: it is closed unheard, the refusal is audited, and the session's own container
        still speaks on it."""
        sid, path = self.session("""
print(json.dumps(hello), flush=True)
time.sleep(3600)
""")
        sock = os.path.join(DAEMON.settings["RuntimeDirectory"], "sessions", sid, "session.sock")
        probe = ("import socket\n"
                 "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                 f"s.connect({sock!r})\n"
                 "s.settimeout(30)\n"
                 "try:\n"
                 "    s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":"
                 "{\"role\":\"mcp\",\"protocol\":1}}\\n')\n"
                 "    print(repr(s.recv(65536)))\n"
                 "except (ConnectionResetError, BrokenPipeError):\n"
                 "    print('closed')\n")
        p = sb.run("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3", "-c", probe,
                   check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(p.stdout.strip(), ("b''", "closed"), "the connection is closed without an answer")
        denied = [r for r in sb.journal("MESSAGE_ID=c2962f7914b0421cae356094e82b5bf0", f"CCDOCKER_SESSION={sid}")
                  if "session.sock" in r.get("MESSAGE", "")]
        self.assertEqual(len(denied), 1)
        self.assertIn("(uid 1000) was refused: it runs outside the session's unit", denied[0]["MESSAGE"])
        self.assertEqual(denied[0]["CALLER_UID"], "1000")
        # The container's own hello was answered: its init is connected and the session is not harmed.
        self.assertEqual(sb.session_prop(path, "State"), "idle")
        out = sb.journal(f"_SYSTEMD_UNIT=ccdocker-session-{sid}.service", output="cat")
        self.assertIn('"session_id": "%s"' % sid, out)


if __name__ == "__main__":
    unittest.main()

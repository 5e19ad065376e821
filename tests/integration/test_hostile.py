"""A hostile container (issue 14, docs/security.md): the attacker is a real session whose container
runs the attack as its command, speaking on its own /run/ccdocker/session.sock as anything inside a
container can. Each test performs one attack and asserts that it is refused or bounded, and that a
well-behaved session beside it is not hurt."""

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
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


# The daemon's peak memory, asserted where a container makes it parse: parsing the hostile data of
# these tests would cost hundreds of megabytes (jansson's tree is tens of times its text), gigabytes
# for the stored history. Under ASan (run-tests.py sets ASAN_OPTIONS for it), VmHWM also counts the
# freed memory ASan holds in its quarantine, up to quarantine_size_mb (256 by default).
def hwm_bound_mib():
    # Read when asked, not at import: run-tests.py imports this module once, then runs it again with
    # ASAN_OPTIONS set for the sanitizer build.
    return 200 + (256 if "ASAN_OPTIONS" in os.environ else 0)


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


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
        # Its output reaches the journal a moment later on a loaded machine.
        sb.wait_until(lambda: '"session_id": "%s"' % sid in sb.journal(
            f"_SYSTEMD_UNIT=ccdocker-session-{sid}.service", output="cat"), 60, 0.5,
            what="the container's answered hello in its unit's journal")

    def test_over_deep_and_over_wide_events_are_refused_before_they_are_parsed(self):
        """The container sends an events line nested 100 deep and one of 2.5 million values (7.5 MB of
        [{},{},...], which jansson would make over 500 MB of): each is refused with -32600 naming the
        limit, the connection survives, and the good events sent next on it are stored. The daemon's
        peak memory shows that the wide line was never parsed."""
        sid, path = self.session("""
head = '{"jsonrpc":"2.0","id":%d,"method":"events","params":{"events":[{"seq":1,"time":1,"data":'
for line in (head % 2 + "[" * 100 + "]" * 100 + "}]}}",
             head % 3 + "[" + ",".join(["{}"] * 2500000) + "]}]}}"):
    f.write((line + "\\n").encode())
    f.flush()
    print("REFUSED " + f.readline().decode().strip(), flush=True)
good = call("events", {"events": [{"seq": 1, "time": 1, "data": {"type": "system", "n": [[[1]]]}},
                                  {"seq": 2, "time": 2, "data": {"type": "assistant", "n": 2}}]}, id=4)
print("GOOD " + json.dumps(good), flush=True)
time.sleep(3600)
""")
        unit = f"_SYSTEMD_UNIT=ccdocker-session-{sid}.service"
        sb.wait_until(lambda: "GOOD " in sb.journal(unit, output="cat"), 120, 0.5, what="the good events' answer")
        out = sb.journal(unit, output="cat").splitlines()
        refused = [json.loads(line.split("REFUSED ", 1)[1]) for line in out if line.startswith("REFUSED ")]
        self.assertEqual(len(refused), 2, out)
        self.assertEqual(refused[0]["error"]["code"], -32600)
        self.assertIn("at most 64 levels", refused[0]["error"]["message"])
        self.assertEqual(refused[1]["error"]["code"], -32600)
        self.assertIn("at most 200000 array elements and object members", refused[1]["error"]["message"])
        good = json.loads([line for line in out if line.startswith("GOOD ")][0].split("GOOD ", 1)[1])
        self.assertEqual(good["result"], {"acked": 2}, "the connection survived and goes on at seq 1")

        events = json.loads(call(path, "GetOutput", "tu", "0", "0").stdout)["data"][0]
        self.assertEqual([(e[0], json.loads(e[2])) for e in events],
                         [(1, {"type": "system", "n": [[[1]]]}), (2, {"type": "assistant", "n": 2})])
        hwm = vm_hwm_mib(DAEMON.main_pid())
        self.assertLess(hwm, hwm_bound_mib(), "the daemon parsed the wide line")

    def test_daemon_starts_bounded_on_a_hostile_stored_history_and_removes_it(self):
        """A store written by a daemon from before the channel's limits, with 20 stopped sessions whose
        every stored event is 1.5 MB of [{},{},...] (the last one typed "result"): the daemon starts
        without parsing them (it used to parse the last 1000 events of each, gigabytes), lists the
        sessions, pages their output with the events replaced by placeholders, and removes them, its
        peak memory bounded all along."""
        sid, path = self.session()
        call(path, "Stop", "b", "true")
        sb.wait_state(path, "stopped", "failed", timeout=30)
        DAEMON.stop()
        try:
            db = os.path.join(DAEMON.state_dir, "ccdockerd.db")
            wide = "[" + ",".join(["{}"] * 500000) + "]"
            result = ('{"type":"result","subtype":"success","is_error":false,"result":"done","junk":'
                      + wide + "}")
            ids = [secrets.token_hex(6) for _ in range(20)]
            with contextlib.closing(sqlite3.connect(db)) as c:
                row = c.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
                cols = [d[0] for d in c.execute("SELECT * FROM sessions").description]
                for n, i in enumerate(ids):
                    copy = [v.replace(sid, i) if isinstance(v, str) else v for v in row]
                    copy[cols.index("workspace_ephemeral")] = 0
                    copy[cols.index("created_usec")] += n + 1
                    c.execute(f"INSERT INTO sessions VALUES ({','.join('?' * len(copy))})", copy)
                    for seq in range(1, 4):
                        c.execute("INSERT INTO events VALUES (?, ?, ?, ?)",
                                  (i, seq, 1700000000000000 + seq, wide))
                    c.execute("INSERT INTO events VALUES (?, 4, 1700000000000004, ?)", (i, result))
                # As the store of a daemon from before: no record of latest results.
                c.execute("DROP TABLE IF EXISTS session_results")
                c.execute("PRAGMA user_version = 4")
                c.commit()
        finally:
            DAEMON.start()  # ready (Type=notify) once every session is restored
        pid = DAEMON.main_pid()
        self.assertLess(vm_hwm_mib(pid), hwm_bound_mib(), "the start parsed the stored events")
        listed = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                      "ListSessions").stdout)["data"][0]
        states = {e[0]: e[2] for e in listed}
        for i in ids:
            self.assertEqual(states.get(i), "stopped", i)

        for i in ids:
            spath = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                         "GetSession", "s", i).stdout)["data"][0]
            since, seen = 0, []
            while True:
                page = json.loads(call(spath, "GetOutput", "tu", str(since), "2").stdout)["data"][0]
                seen += [(e[0], json.loads(e[2])) for e in page]
                if len(page) < 2:
                    break
                since = page[-1][0]
            self.assertEqual(seen, [(1, {"type": "oversized", "bytes": len(wide)}),
                                    (2, {"type": "oversized", "bytes": len(wide)}),
                                    (3, {"type": "oversized", "bytes": len(wide)}),
                                    (4, {"type": "oversized", "bytes": len(result)})])
            status = json.loads(call(spath, "GetResult", "bu", "false", "0").stdout)["data"]
            self.assertEqual(status[0], "failed", "an oversized result is no success")
            call(spath, "Remove")
        self.assertLess(vm_hwm_mib(pid), hwm_bound_mib(), "paging the output parsed the stored events")

        listed = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                      "ListSessions").stdout)["data"][0]
        self.assertFalse({e[0] for e in listed} & set(ids))
        with contextlib.closing(sqlite3.connect(db)) as c:
            left = c.execute(f"SELECT count(*) FROM events WHERE session_id IN ({','.join('?' * len(ids))})",
                             ids).fetchone()[0]
        self.assertEqual(left, 0, "Remove took the hostile events along")

if __name__ == "__main__":
    unittest.main()

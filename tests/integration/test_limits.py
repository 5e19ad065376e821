"""What a caller can make the daemon hold is bounded (issue 14, defects 4 and 9; docs/security.md):
live sessions per owner and per agent tree, queued prompts and waiting calls per session, and ended
sessions, which the daemon removes once their retention runs out. Each limit is reached for real,
refused with an error naming it, and nothing else changes."""

import json
import os
import select
import shutil
import socket
import subprocess
import unittest

import sandbox as sb

DAEMON = None


def setUpModule():
    global DAEMON
    DAEMON = sb.Daemon(unit="ccdockerd-limits-test.service", settings={
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-limits-runtime"),
        "MaxSessionsPerOwner": "4",
        "MaxTreeSessions": "3",
        "MaxQueuedPrompts": "3",
        "MaxWaitersPerSession": "2",
        "EndedSessionRetentionSec": "2",
        "MaxSpawnsPerMinute": "50",
        "MaxAttachPerSession": "2",
    })
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def create(check=True):
    p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession", "a{sv}",
                  "0", check=check)
    return json.loads(p.stdout)["data"] if p.returncode == 0 else p


def error_name(path, interface_method, arg):
    """The D-Bus error name a call with one string argument is answered with (busctl prints only the
    message), or None if it succeeds."""
    p = sb.run("dbus-send", "--session", "--print-reply", "--dest=org.ccdocker1", path, interface_method,
               f"string:{arg}", check=False)
    return p.stderr.split("Error ", 1)[1].split(":", 1)[0] if p.returncode != 0 else None


def spawn(path, check=True):
    p = call(path, "SpawnChild", "a{sv}", "1", "prompt", "s", "work", check=check)
    return json.loads(p.stdout)["data"] if p.returncode == 0 else p


class LimitsTest(unittest.TestCase):
    def session(self):
        sid, path = create()
        self.addCleanup(self.forget, path)
        sb.wait_state(path, "idle")
        return sid, path

    def forget(self, path):
        call(path, "Stop", "b", "true", check=False)
        # Ended sessions are removed 2 s later here: gone is as good as ended.
        def ended():
            p = sb.busctl("get-property", "org.ccdocker1", path, "org.ccdocker1.Session", "State", check=False)
            return p.returncode != 0 or json.loads(p.stdout)["data"] in ("stopped", "failed")
        sb.wait_until(ended, 30, 0.2, what=f"{path} to end")

    def live_paths(self):
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions")
        return [s[5] for s in json.loads(p.stdout)["data"][0] if s[2] not in ("stopped", "failed")]

    def stop_all(self):
        for path in self.live_paths():
            call(path, "Stop", "b", "true", check=False)
        for path in self.live_paths():
            sb.wait_state(path, "stopped", "failed", timeout=30)

    def test_sessions_per_owner(self):
        self.stop_all()
        paths = [self.session()[1] for _ in range(4)]
        refused = create(check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("has 4 live sessions, the configured MaxSessionsPerOwner", refused.stderr)
        g = sb.run("gdbus", "call", "--session", "--dest", "org.ccdocker1", "--object-path", "/org/ccdocker1",
                   "--method", "org.ccdocker1.Manager.CreateSession", "{}", check=False)
        self.assertIn("org.ccdocker1.Error.LimitExceeded", g.stderr)
        self.assertEqual(len(self.live_paths()), 4, "the refusal made nothing")
        call(paths[0], "Stop", "b", "true")
        sb.wait_state(paths[0], "stopped", "failed")
        self.session()  # one ended: there is room again

    def test_sessions_per_tree_count_grandchildren_too(self):
        self.stop_all()
        _, root = self.session()
        _, child_path = spawn(root)
        self.addCleanup(self.forget, child_path)
        sb.wait_state(child_path, "idle")
        _, grandchild_path = spawn(child_path)
        self.addCleanup(self.forget, grandchild_path)
        refused = spawn(child_path, check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("has 3 live sessions, the configured MaxTreeSessions", refused.stderr)
        refused = spawn(root, check=False)
        self.assertIn("MaxTreeSessions", refused.stderr, "a sibling branch of the same tree is refused too")
        refusals = [r for r in sb.journal("MESSAGE_ID=dd4aba8bee574aaab6e27129ac91e41f")
                    if "MaxTreeSessions" in r.get("MESSAGE", "")]
        self.assertGreaterEqual(len(refusals), 2, "each refusal is a child-refused audit record")

    def test_queued_prompts(self):
        _, path = self.session()  # the idle shell: no ccdocker-init takes the prompts, so they stay queued
        for i in range(3):
            call(path, "SendPrompt", "s", f"prompt {i}")
        refused = call(path, "SendPrompt", "s", "one too many", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("has 3 prompts waiting, the configured MaxQueuedPrompts", refused.stderr)
        self.assertEqual(error_name(path, "org.ccdocker1.Session.SendPrompt", "and another"),
                         "org.ccdocker1.Error.LimitExceeded")
        self.assertEqual(sb.session_prop(path, "PendingPrompts"), 3)

    def test_waiting_calls(self):
        _, path = self.session()
        call(path, "SendPrompt", "s", "never answered")
        # Three wait at once for a result that does not come; with MaxWaitersPerSession=2 whichever
        # arrives third is refused at once, and the other two are answered when the session ends.
        waiters = [subprocess.Popen(
            ["busctl", "--user", "--json=short", "--timeout=120", "call", "org.ccdocker1", path,
             "org.ccdocker1.Session", "GetResult", "bu", "true", "100"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for w in waiters:
            self.addCleanup(w.kill)
        refused = sb.wait_until(lambda: next((w for w in waiters if w.poll() is not None), None), 60, 0.2,
                                what="one of three waiting GetResults to be refused")
        out, err = refused.communicate()
        self.assertNotEqual(refused.returncode, 0, out)
        self.assertIn("already has 2 calls waiting on it, the configured MaxWaitersPerSession", err)
        waiting = [w for w in waiters if w is not refused]
        self.assertTrue(all(w.poll() is None for w in waiting), "the other two still wait")
        call(path, "Stop", "b", "true")
        for w in waiting:
            out, err = w.communicate(timeout=60)
            self.assertEqual(w.returncode, 0, err)
            self.assertEqual(json.loads(out)["data"][0], "failed", "the waiters are answered when it ends")

    def test_attach_subscribers(self):
        sid, path = self.session()
        ctl = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl")
        # One event, sent on the session's channel as ccdocker-init sends claude's output, so that a
        # follower attached from seq 0 prints a line: that line is how the test knows it holds its slot.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as init:
            init.connect(os.path.join(DAEMON.settings["RuntimeDirectory"], "sessions", sid, "session.sock"))
            channel = init.makefile("rwb")
            for n, (method, params) in enumerate((
                    ("hello", {"role": "init", "protocol": 1}),
                    ("events", {"events": [{"seq": 1, "time": 1, "data": {"type": "system"}}]})), 1):
                channel.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}).encode()
                              + b"\n")
                channel.flush()
                answer = json.loads(channel.readline())
                self.assertIn("result", answer, answer)
        self.assertEqual(json.loads(call(path, "GetOutput", "tu", "0", "0").stdout)["data"][0][0][0], 1)

        def follow():
            f = subprocess.Popen([ctl, "--user", "--json", "attach", sid], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            self.addCleanup(f.wait, 30)
            self.addCleanup(f.terminate)
            # Until it has printed an event it may not have attached: a probing Attach meanwhile would
            # take the slot it needs for an instant. It is waited for before anything else attaches.
            if not select.select([f.stdout], [], [], 120)[0]:
                raise AssertionError("a follower printed no event in 120 s")
            line = f.stdout.readline()
            if not line:
                raise AssertionError(f"a follower exited {f.wait(30)}: {f.stderr.read()}")
            self.assertEqual(json.loads(line)["seq"], 1)
            return f

        followers = [follow(), follow()]
        refused = call(path, "Attach", "t", "0", check=False)
        self.assertNotEqual(refused.returncode, 0, "a third Attach while two follow")
        self.assertIn("has 2 subscribers, the configured MaxAttachPerSession", refused.stderr)
        self.assertTrue(all(f.poll() is None for f in followers), "the two followers are not disturbed")
        followers[0].terminate()
        followers[0].wait(30)
        sb.wait_until(lambda: call(path, "Attach", "t", "0", check=False).returncode == 0, 30, 0.5,
                      what="an Attach to be taken once a follower left")

    def test_ended_sessions_are_removed_after_their_retention(self):
        sid, path = self.session()
        _, live = self.session()
        call(path, "Stop", "b", "false")
        sb.wait_state(path, "stopped")

        def gone():
            p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", sid,
                          check=False)
            return p if p.returncode != 0 else None
        sb.wait_until(gone, 60, 0.5, what="the ended session to be removed")
        self.assertEqual(error_name("/org/ccdocker1", "org.ccdocker1.Manager.GetSession", sid),
                         "org.ccdocker1.Error.NoSuchSession")
        self.assertEqual(sb.session_prop(live, "State"), "idle", "a live session is kept")
        removed = sb.journal("MESSAGE_ID=4333de2810f34e878734153e95480218", f"CCDOCKER_SESSION={sid}")
        self.assertEqual(len(removed), 1)
        self.assertIn("EndedSessionRetentionSec", removed[0]["MESSAGE"])


if __name__ == "__main__":
    unittest.main()

"""ccdockerd --system on the sandbox's system bus, authorised by the real polkitd: root may create and
manage sessions; an unprivileged caller (uid 65534, through setpriv) is denied creating a session and
stopping someone else's, with a D-Bus error naming the polkit action, each denial an audit record, and
does not even see someone else's session (docs/security.md: metadata is for its owner, root and
polkit-authorised admins). systemd is reached on the sandbox's user manager (SystemdBus=user), since PID 1
here is not systemd."""

import json
import os
import shutil
import unittest

import sandbox as sb

DAEMON = None
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def setUpModule():
    global DAEMON
    address = sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS")
    DAEMON = sb.Daemon(unit="ccdockerd-system-test.service", mode="--system", settings={"SystemdBus": "user"},
                       extra_env={"DBUS_SYSTEM_BUS_ADDRESS": address})
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def call(*args, as_nobody=False, check=True):
    argv = ["busctl", "--address=" + sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"), "--json=short", "call",
            "org.ccdocker1", *args]
    if as_nobody:
        argv = NOBODY + argv
    return sb.run(*argv, check=check)


class SystemModeTest(unittest.TestCase):
    def create_as_root(self):
        p = call("/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession", "a{sv}", "0")
        sid, path = json.loads(p.stdout)["data"]
        self.addCleanup(self.cleanup, sid, path)
        return sid, path

    def cleanup(self, sid, path):
        call(path, "org.ccdocker1.Session", "Stop", "b", "true", check=False)
        sb.wait_until(lambda: self.state(path) in ("stopped", "failed"), 30, what="the session to end")
        call(path, "org.ccdocker1.Session", "Remove", check=False)

    def state(self, path):
        p = sb.run("busctl", "--address=" + sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"), "--json=short", "get-property",
                   "org.ccdocker1", path, "org.ccdocker1.Session", "State")
        return json.loads(p.stdout)["data"]

    def test_root_may_create_and_stop(self):
        sid, path = self.create_as_root()
        sb.wait_until(lambda: self.state(path) == "idle", 60, what="the session to be idle")
        call(path, "org.ccdocker1.Session", "Stop", "b", "false")
        sb.wait_until(lambda: self.state(path) == "stopped", 30, what="the session to stop")

    def test_unprivileged_caller_may_not_create_a_session(self):
        before = call("/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions").stdout
        p = call("/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession", "a{sv}", "0", as_nobody=True,
                 check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("not authorized", p.stderr)
        self.assertIn("org.ccdocker1.create-session", p.stderr)
        self.assertEqual(call("/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions").stdout, before)
        denied = sb.wait_until(lambda: [r for r in sb.journal("MESSAGE_ID=c2962f7914b0421cae356094e82b5bf0",
                                                              "CALLER_UID=65534")
                                        if "CreateSession" in r["MESSAGE"]], 10, what="the denial record")
        self.assertEqual(denied[-1]["CALLER_UID"], "65534")

    def test_unprivileged_caller_neither_sees_nor_stops_roots_session(self):
        sid, path = self.create_as_root()
        self.assertIn(sid, [s[0] for s in json.loads(
            call("/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions").stdout)["data"][0]])
        listed = json.loads(call("/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions", as_nobody=True)
                            .stdout)["data"][0]
        self.assertNotIn(sid, [s[0] for s in listed], "another owner's session is not listed")
        got = call("/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", sid, as_nobody=True, check=False)
        self.assertNotEqual(got.returncode, 0)
        self.assertIn(f"no session '{sid}'", got.stderr, "the same answer as for an id that does not exist")
        prop = sb.run(*NOBODY, "busctl", "--address=" + sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"), "get-property",
                      "org.ccdocker1", path, "org.ccdocker1.Session", "Workspace", check=False)
        self.assertNotEqual(prop.returncode, 0, "its properties are not readable")
        self.assertNotIn("/", prop.stdout)
        tree = sb.run(*NOBODY, "busctl", "--address=" + sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"), "tree",
                      "org.ccdocker1", check=False)
        self.assertNotIn(sid, tree.stdout, "nor in the object tree")
        p = call(path, "org.ccdocker1.Session", "Stop", "b", "false", as_nobody=True, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("org.ccdocker1.manage-sessions", p.stderr)
        self.assertIn("uid 65534 may not manage session " + sid, p.stderr)
        self.assertNotIn("owned by", p.stderr, "the denial does not name the owner")
        self.assertNotIn(self.state(path), ("stopped", "failed"))

if __name__ == "__main__":
    unittest.main()

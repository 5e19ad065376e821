"""ccdockerctl, the command-line client, against the real ccdockerd.

setUpModule starts ccdockerd on the sandbox's user bus (sandbox.py's Daemon, with its test
SessionCommand so that a session stays idle until it is stopped) and tearDownModule stops it.

The usage tests need no daemon: a usage error must exit 2 with a message naming what was wrong,
before any bus is touched. The rest drive the daemon only through `ccdockerctl --user`: create prints
an id, status and list show it (as text and as JSON with the documented keys), stop makes it
stopped, remove makes it unknown, and a refusal by the daemon exits 1 with the daemon's message.
"""

import json
import os
import re
import shutil
import subprocess
import unittest
from datetime import datetime, timezone

import sandbox as sb

COMMANDS = ("create", "list", "status", "stop", "remove")
JSON_KEYS = {"id", "state", "state_reason", "unit", "container_id", "parent_id", "depth", "task_type",
             "created_at", "owner_uid", "image", "workspace"}
ID_RE = re.compile(r"^[0-9a-f]{12}$")


def ctl_path():
    path = shutil.which("ccdockerctl")
    if not path:
        build = os.environ.get("CCDOCKER_BUILD_DIR") or os.path.join(sb.SRC, "build")
        path = os.path.join(build, "ctl", "ccdockerctl")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"ccdockerctl is not built ({path}): run 'tools/ccdocker-dev setup'")
    return path


def ctl(*args, check=False, env=None, timeout=120):
    """Runs `ccdockerctl --user ARGS...` and returns the CompletedProcess (text)."""
    p = subprocess.run([ctl_path(), "--user", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"ccdockerctl --user {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


DAEMON = None


def setUpModule():
    global DAEMON
    DAEMON = sb.Daemon(unit="ccdockerd-ctl-test.service")
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


class CtlUsageTest(unittest.TestCase):
    """Argument handling; none of these may reach the bus."""

    def assert_usage_error(self, args, *names):
        # An address that cannot work: a usage error must be reported before connecting.
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent/ccdocker-test-bus")
        p = ctl(*args, env=env)
        self.assertEqual(p.returncode, 2, f"ccdockerctl {' '.join(args)}: {p.stdout}{p.stderr}")
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("ccdockerctl: "), p.stderr)
        for name in names:
            self.assertIn(name, lines[0])
        return lines[0]

    def test_help_mentions_every_command_and_the_exit_status(self):
        p = ctl("--help", check=True)
        self.assertEqual(p.stderr, "")
        for command in COMMANDS:
            self.assertRegex(p.stdout, rf"(?m)^\s+{command}\b", f"--help does not list {command}")
        for word in ("--user", "--system", "--json", "--force", "--env NAME=VALUE", "Exit status", "Examples"):
            self.assertIn(word, p.stdout)

    def test_help_after_a_command_is_the_same_help(self):
        self.assertEqual(ctl("create", "--help", check=True).stdout, ctl("--help", check=True).stdout)

    def test_version_prints_the_version(self):
        self.assertRegex(ctl("--version", check=True).stdout, r"^ccdockerctl \d+\.\d+")

    def test_unknown_global_option_is_a_usage_error_naming_it(self):
        self.assert_usage_error(["--frobnicate", "list"], "--frobnicate")

    def test_unknown_command_option_is_a_usage_error_naming_it_and_the_command(self):
        self.assert_usage_error(["create", "--frobnicate"], "--frobnicate", "create")

    def test_unknown_short_option_is_a_usage_error_naming_it(self):
        self.assert_usage_error(["list", "-q"], "-q")

    def test_missing_option_argument_is_a_usage_error_naming_the_option(self):
        self.assert_usage_error(["create", "--memory"], "--memory")

    def test_option_argument_given_to_a_flag_is_a_usage_error(self):
        self.assert_usage_error(["list", "--json=yes"], "--json")

    def test_env_without_equals_is_a_usage_error_naming_it(self):
        self.assert_usage_error(["create", "--env", "NOVALUE"], "--env", "NOVALUE")

    def test_env_with_a_bad_name_is_a_usage_error(self):
        self.assert_usage_error(["create", "--env", "1BAD=x"], "--env", "1BAD=x")

    def test_non_numeric_tasks_is_a_usage_error(self):
        self.assert_usage_error(["create", "--tasks", "many"], "--tasks", "many")

    def test_relative_workspace_is_a_usage_error(self):
        self.assert_usage_error(["create", "--workspace", "work"], "--workspace", "work")

    def test_unknown_command_is_a_usage_error_naming_it(self):
        self.assert_usage_error(["frobnicate"], "frobnicate")

    def test_no_command_is_a_usage_error(self):
        self.assert_usage_error([], "command")

    def test_missing_session_id_is_a_usage_error(self):
        for command in ("status", "stop", "remove"):
            self.assert_usage_error([command], command, "ID")

    def test_extra_argument_is_a_usage_error_naming_it(self):
        self.assert_usage_error(["status", "0123456789ab", "extra"], "extra")
        self.assert_usage_error(["list", "extra"], "extra")


class CtlDaemonTest(unittest.TestCase):
    """ccdockerctl against the running ccdockerd."""

    def create(self, *args):
        p = ctl("create", *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        sid = p.stdout.strip()
        self.assertRegex(sid, ID_RE, f"create printed {p.stdout!r}")
        self.addCleanup(self.forget, sid)
        return sid

    def forget(self, sid):
        """Stops and removes a session whatever its state; a session already gone is fine."""
        ctl("stop", sid, "--force")
        try:
            sb.wait_until(lambda: self.state_or_gone(sid) in ("stopped", "failed", None), 30,
                          what=f"session {sid} to end")
        finally:
            ctl("remove", sid)

    def state_or_gone(self, sid):
        p = ctl("status", sid, "--json")
        return json.loads(p.stdout)["state"] if p.returncode == 0 else None

    def status(self, sid):
        p = ctl("status", sid, "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def wait_state(self, sid, *states, timeout=60):
        def probe():
            s = self.status(sid)
            return s if s["state"] in states else None
        return sb.wait_until(probe, timeout, 0.2, what=f"session {sid} to be {'/'.join(states)}")

    def wait_live(self, sid):
        """Waits until the session has left 'starting'; fails with its reason if it did not come up."""
        def probe():
            st = self.status(sid)
            return st if st["state"] != "starting" else None
        s = sb.wait_until(probe, 120, 0.2, what=f"session {sid} to start")
        self.assertIn(s["state"], ("idle", "running"), f"session {sid} did not come up: {s['state_reason']}")
        return s

    def assert_session_object(self, o, sid):
        self.assertLessEqual(JSON_KEYS, set(o), f"missing keys: {JSON_KEYS - set(o)}")
        self.assertEqual(o["id"], sid)
        self.assertIn(o["state"], ("starting", "idle", "running", "stopped", "failed"))
        self.assertIsInstance(o["state_reason"], str)
        self.assertEqual(o["unit"], f"ccdocker-session-{sid}.service")
        self.assertIsInstance(o["container_id"], str)
        self.assertIsNone(o["parent_id"])
        self.assertEqual(o["depth"], 0)
        self.assertEqual(o["owner_uid"], os.geteuid())
        self.assertIsInstance(o["image"], str)
        self.assertTrue(o["image"])
        self.assertTrue(o["workspace"].startswith("/"), o["workspace"])
        created = datetime.strptime(o["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        age = (datetime.now(timezone.utc) - created).total_seconds()
        self.assertTrue(-60 < age < 3600, f"created_at {o['created_at']} is {age:.0f} s ago")

    def test_create_prints_the_session_id_and_status_json_has_the_documented_keys(self):
        args = ["--memory", "256M", "--cpus", "0.5", "--tasks", "128", "--timeout", "600",
                "--workspace", "ephemeral", "--task-type", "ctl-test", "--env", "CCDOCKER_CTL=1",
                "--network", "none"]
        image = os.environ.get("CCDOCKER_SESSION_IMAGE")
        if image:
            args += ["--image", image]
        sid = self.create(*args)
        o = self.status(sid)
        self.assert_session_object(o, sid)
        self.assertEqual(o["task_type"], "ctl-test")
        if image:
            self.assertEqual(o["image"], image)

    def test_create_json_prints_the_session_object(self):
        p = ctl("create", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        o = json.loads(p.stdout)
        self.addCleanup(self.forget, o["id"])
        self.assert_session_object(o, o["id"])
        self.assertIsNone(o["task_type"])

    def test_status_prints_every_property_as_key_value_lines(self):
        sid = self.create()
        p = ctl("status", sid)
        self.assertEqual(p.returncode, 0, p.stderr)
        props = dict(line.split(": ", 1) for line in p.stdout.splitlines())
        for key in ("Id", "ParentId", "Depth", "State", "StateReason", "Unit", "ContainerId", "TaskType",
                    "CreatedAt", "OwnerUID", "Image", "Workspace"):
            self.assertIn(key, props)
        self.assertEqual(props["Id"], sid)
        self.assertEqual(props["ParentId"], "-")
        self.assertEqual(props["Unit"], f"ccdocker-session-{sid}.service")
        self.assertRegex(props["CreatedAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")

    def test_list_json_contains_the_session(self):
        sid = self.create()
        p = ctl("list", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        sessions = json.loads(p.stdout)
        self.assertIsInstance(sessions, list)
        mine = [o for o in sessions if o["id"] == sid]
        self.assertEqual(len(mine), 1, p.stdout)
        self.assert_session_object(mine[0], sid)

    def test_list_table_shows_the_session(self):
        sid = self.create()
        p = ctl("list")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "STATE", "PARENT", "UNIT", "CREATED"])
        row = [line.split() for line in lines[1:] if line.split()[0] == sid]
        self.assertEqual(len(row), 1, p.stdout)
        self.assertEqual(row[0][2], "-")
        self.assertEqual(row[0][3], f"ccdocker-session-{sid}.service")
        self.assertRegex(row[0][4], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")

    def test_stop_makes_the_session_stopped(self):
        sid = self.create()
        self.wait_live(sid)
        p = ctl("stop", sid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "")
        s = self.wait_state(sid, "stopped", "failed")
        self.assertEqual(s["state"], "stopped", s["state_reason"])
        self.assertIn("stopped on request", s["state_reason"])

    def test_force_stop_makes_the_session_stopped(self):
        sid = self.create()
        self.wait_live(sid)
        p = ctl("stop", "--force", sid)
        self.assertEqual(p.returncode, 0, p.stderr)
        s = self.wait_state(sid, "stopped", "failed")
        self.assertEqual(s["state"], "stopped", s["state_reason"])

    def test_remove_makes_the_session_unknown(self):
        sid = self.create()
        self.wait_live(sid)
        self.assertEqual(ctl("stop", sid).returncode, 0)
        self.wait_state(sid, "stopped", "failed")

        p = ctl("remove", sid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "")

        p = ctl("status", sid)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertTrue(p.stderr.startswith("ccdockerctl: "), p.stderr)
        self.assertTrue(sid in p.stderr or "NoSuchSession" in p.stderr, p.stderr)
        self.assertNotIn(sid, [o["id"] for o in json.loads(ctl("list", "--json", check=True).stdout)])

    def test_remove_of_a_live_session_is_refused(self):
        sid = self.create()
        self.wait_live(sid)
        p = ctl("remove", sid)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn(sid, p.stderr)
        self.assertIn(self.status(sid)["state"], ("idle", "running"))

    def test_memory_over_the_ceiling_fails_naming_memory(self):
        before = {o["id"] for o in json.loads(ctl("list", "--json", check=True).stdout)}
        p = ctl("create", "--memory", "100G")
        if p.returncode == 0:
            self.addCleanup(self.forget, p.stdout.strip())
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("ccdockerctl: "), p.stderr)
        self.assertIn("'memory'", lines[0])
        after = {o["id"] for o in json.loads(ctl("list", "--json", check=True).stdout)}
        self.assertEqual(after - before, set(), "a refused create left a session behind")

    def test_unknown_session_fails_naming_it(self):
        for args in (["status", "0000deadbeef"], ["stop", "0000deadbeef"], ["remove", "0000deadbeef"]):
            p = ctl(*args)
            self.assertEqual(p.returncode, 1, f"{args}: {p.stdout}{p.stderr}")
            self.assertIn("0000deadbeef", p.stderr)


def ctl_nobus(*args, system_bus=None):
    """ccdockerctl ARGS... without --user: it picks the bus. system_bus is DBUS_SYSTEM_BUS_ADDRESS
    (None: unset, so the system bus is the machine's, which has no ccdockerd here)."""
    environ = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    if system_bus:
        environ["DBUS_SYSTEM_BUS_ADDRESS"] = system_bus
    return subprocess.run([ctl_path(), *args], capture_output=True, text=True, timeout=120, env=environ)


class CtlBusPickTest(unittest.TestCase):
    """Without --system or --user, ccdockerctl talks to the system bus's ccdockerd if there is one,
    else to the user bus's; --system and --user always win."""

    def user_session(self):
        p = ctl("create")
        self.assertEqual(p.returncode, 0, p.stderr)
        sid = p.stdout.strip()
        self.addCleanup(ctl, "remove", sid)
        self.addCleanup(ctl, "stop", sid, "--force")
        return sid

    def ids(self, p):
        self.assertEqual(p.returncode, 0, p.stderr)
        return {o["id"] for o in json.loads(p.stdout)}

    def test_help_says_which_bus_it_talks_to(self):
        out = ctl_nobus("--help").stdout
        self.assertIn("on the user bus when only the user\nbus has one", out)
        self.assertIn("--system or --user picks the bus", out)

    def test_without_an_option_it_picks_the_user_bus_when_no_system_daemon_runs(self):
        sid = self.user_session()
        self.assertIn(sid, self.ids(ctl_nobus("list", "--json")))
        # A system bus that answers but has no ccdockerd on it (the sandbox's stand-in).
        self.assertIn(sid, self.ids(ctl_nobus("list", "--json", system_bus=sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"))))

    def test_explicit_system_wins_over_a_user_daemon(self):
        self.user_session()
        p = ctl_nobus("--system", "list", system_bus=sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("org.ccdocker1", p.stderr)

    def test_a_system_daemon_is_picked_first_and_explicit_user_still_wins(self):
        address = sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS")
        system = sb.Daemon(unit="ccdockerd-ctl-system-test.service", mode="--system",
                           settings={"SystemdBus": "user"}, extra_env={"DBUS_SYSTEM_BUS_ADDRESS": address})
        shutil.rmtree(system.state_dir, ignore_errors=True)
        system.start()
        self.addCleanup(shutil.rmtree, system.state_dir, True)
        self.addCleanup(system.stop)
        sid = self.user_session()
        p = sb.run("busctl", "--address=" + address, "--json=short", "call", "org.ccdocker1", "/org/ccdocker1",
                   "org.ccdocker1.Manager", "CreateSession", "a{sv}", "0")
        system_sid, path = json.loads(p.stdout)["data"]
        self.addCleanup(sb.run, "busctl", "--address=" + address, "call", "org.ccdocker1", path,
                        "org.ccdocker1.Session", "Remove", check=False)
        self.addCleanup(sb.run, "busctl", "--address=" + address, "call", "org.ccdocker1", path,
                        "org.ccdocker1.Session", "Stop", "b", "true", check=False)
        picked = self.ids(ctl_nobus("list", "--json", system_bus=address))
        self.assertIn(system_sid, picked)
        self.assertNotIn(sid, picked)
        user = ctl_nobus("--user", "list", "--json", system_bus=address)
        self.assertIn(sid, self.ids(user))
        self.assertNotIn(system_sid, self.ids(user))


if __name__ == "__main__":
    unittest.main()

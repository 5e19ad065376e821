"""ccdockerd in the sandbox: sessions created over D-Bus become containers in transient units with the
requested limits and the hardening of SPEC.md 9.4; stop, crash, OOM, timeout and a kill -9 of the
daemon each end in the right state with the right reason and nothing left over; bad config is refused
by field name and changes nothing; the introspection matches dbus/*.xml; audit records reach the
journal."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

import sandbox as sb

DAEMON = None


def setUpModule():
    global DAEMON
    roots = tempfile.mkdtemp(prefix="ccdocker-roots-")
    os.chmod(roots, 0o755)
    DAEMON = sb.Daemon(settings={"WorkspaceRoots": roots, "MaxMemory": "1G", "MaxTasks": "512"})
    DAEMON.roots = roots
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.roots, ignore_errors=True)
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def list_sessions():
    p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions")
    return json.loads(p.stdout)["data"][0]


class DaemonTestCase(unittest.TestCase):
    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(self.forget, sid, path)
        return sid, path

    def forget(self, sid, path):
        """Stops and removes a session whatever its state, and checks it left nothing behind."""
        if sid not in [s[0] for s in list_sessions()]:
            return self.assert_nothing_left(sid)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true", check=False)
        try:
            sb.wait_state(path, "stopped", "failed", timeout=30)
        finally:
            sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)
        self.assert_nothing_left(sid)

    def assert_nothing_left(self, sid):
        podman = sb.Podman()
        sb.wait_until(lambda: not podman.exists(f"ccdocker-{sid}"), 30, what=f"container ccdocker-{sid} to go")
        unit = f"ccdocker-session-{sid}.service"
        sb.wait_until(lambda: sb.unit_show(unit, "LoadState")["LoadState"] == "not-found", 30,
                      what=f"unit {unit} to be unloaded")

    def container_of(self, sid):
        return sb.Podman().inspect(f"ccdocker-{sid}")


class IntrospectionTest(DaemonTestCase):
    def interface_of(self, xml_text, name):
        root = ET.fromstring(xml_text)
        for iface in root.iter("interface"):
            if iface.get("name") == name:
                return iface
        self.fail(f"interface {name} not in the introspection data")

    def shape(self, iface):
        """Methods with typed args, signals, properties with type and access, comparable as sets."""
        items = set()
        for node in iface:
            args = tuple((a.get("type"), a.get("direction", "out" if node.tag == "signal" else "in"))
                         for a in node.findall("arg"))
            if node.tag == "property":
                annotations = tuple(sorted((a.get("name"), a.get("value")) for a in node.findall("annotation")))
                items.add(("property", node.get("name"), node.get("type"), node.get("access"), annotations))
            elif node.tag in ("method", "signal"):
                items.add((node.tag, node.get("name"), args))
        return items

    def check(self, path, name, xml_file):
        live = sb.run("busctl", "--user", "introspect", "--xml-interface", "org.ccdocker1", path).stdout
        with open(os.path.join(sb.SRC, "dbus", xml_file)) as f:
            written = f.read()
        self.assertEqual(self.shape(self.interface_of(live, name)), self.shape(self.interface_of(written, name)))

    def test_manager_introspection_matches_the_xml(self):
        self.check("/org/ccdocker1", "org.ccdocker1.Manager", "org.ccdocker1.Manager.xml")

    def test_session_introspection_matches_the_xml(self):
        sid, path = self.create()
        self.check(path, "org.ccdocker1.Session", "org.ccdocker1.Session.xml")


class LifecycleTest(DaemonTestCase):
    def test_created_session_runs_in_a_unit_with_the_limits_and_hardening(self):
        sid, path = self.create("memory", "s", "256M", "cpus", "s", "0.5", "tasks", "u", "64",
                                "timeout_seconds", "u", "600", "task_type", "s", "analysis")
        self.assertEqual(sb.wait_state(path, "idle"), "idle")
        self.assertEqual(session_props(path, "Id", "TaskType", "Depth", "ParentId"),
                         [sid, "analysis", 0, ""])
        unit = sb.session_prop(path, "Unit")
        self.assertEqual(unit, f"ccdocker-session-{sid}.service")
        show = sb.unit_show(unit, "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec", "RuntimeMaxUSec", "ActiveState",
                            "ControlGroup")
        self.assertEqual(show["ActiveState"], "active")
        self.assertEqual(show["MemoryMax"], str(256 * 1024 * 1024))
        self.assertEqual(show["TasksMax"], "64")
        self.assertEqual(show["CPUQuotaPerSecUSec"], "500ms")
        self.assertEqual(show["RuntimeMaxUSec"], "10min")
        # The same limits, as the session's Limits property tells a client.
        limits = {k: v["data"] for k, v in sb.session_prop(path, "Limits").items()}
        self.assertEqual(limits, {"memory": 256 * 1024 * 1024, "cpu_millis": 500, "tasks": 64, "timeout_sec": 600,
                                  "budget_usd": 0.0, "budget_tokens": 0})

        info = self.container_of(sid)
        self.assertEqual(sb.session_prop(path, "ContainerId"), info["Id"])
        host = info["HostConfig"]
        self.assertTrue(host["ReadonlyRootfs"])
        self.assertTrue({"CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID"} <= set(host["CapDrop"]), host["CapDrop"])
        self.assertEqual(info["Config"]["User"], "1000:1000")
        # What the kernel says of the container's first process: no capabilities, no new privileges.
        with open(f"/proc/{info['State']['Pid']}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(int(status["CapEff"], 16), 0)
        self.assertEqual(status["Uid"].split()[0], "1000")
        self.assertEqual(host["Memory"], 256 * 1024 * 1024)
        self.assertEqual(host["PidsLimit"], 64)
        self.assertEqual(info["HostConfig"]["NetworkMode"], "none")
        self.assertIn("/tmp", host.get("Tmpfs") or {})
        # The container's processes are in the unit's cgroup.
        cg = sb.proc_cgroups(info["State"]["Pid"])["memory"]
        self.assertTrue(cg.startswith("/" + sb.env("CCDOCKER_SANDBOX_CGROUP") + "/manager" + show["ControlGroup"]),
                        cg)
        # What the container prints is in the unit's journal.
        sb.wait_until(lambda: f"session {sid} up" in sb.journal(f"_SYSTEMD_UNIT={unit}", output="cat"), 15,
                      what="the container's output in the unit's journal")
        # The ephemeral workspace is the container's /workspace, writable by uid 1000 only.
        ws = sb.session_prop(path, "Workspace")
        self.assertTrue(os.path.isdir(ws))
        self.assertEqual(os.stat(ws).st_uid, 1000)
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        self.assertEqual(mounts["/workspace"]["Source"], ws)

    def test_stop_ends_stopped_and_leaves_nothing(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        ws = sb.session_prop(path, "Workspace")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "stopped")
        self.assertIn("stopped on request", sb.session_prop(path, "StateReason"))
        self.assert_nothing_left(sid)
        sb.wait_until(lambda: not os.path.exists(ws), 10, what="the ephemeral workspace to be removed")

    def test_stop_while_starting_ends_stopped(self):
        # No wait for idle: the stop arrives while the container or unit is still being made.
        for force in ("false", "true"):
            sid, path = self.create()
            sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", force)
            self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=30), "stopped")
            self.assert_nothing_left(sid)

    def test_force_stop_ends_stopped(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "stopped")
        self.assert_nothing_left(sid)

    def test_killed_container_ends_failed_with_the_reason(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        sb.run("podman", "kill", "--signal", "KILL", f"ccdocker-{sid}")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "failed")
        reason = sb.session_prop(path, "StateReason")
        self.assertRegex(reason, r"killed|137")
        self.assert_nothing_left(sid)

    def test_container_exit_status_is_the_reason(self):
        sid, path = self.create("environment", "a{ss}", {"CCDOCKER_TEST": "exit3"})
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "failed")
        self.assertIn("status 3", sb.session_prop(path, "StateReason"))
        self.assert_nothing_left(sid)

    def test_out_of_memory_ends_failed_oom(self):
        sid, path = self.create("memory", "s", "64M", "environment", "a{ss}", {"CCDOCKER_TEST": "oom"})
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "failed")
        self.assertIn("out of memory", sb.session_prop(path, "StateReason"))
        self.assert_nothing_left(sid)

    def test_timeout_ends_failed_timeout(self):
        sid, path = self.create("timeout_seconds", "u", "2")
        self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=60), "failed")
        self.assertIn("timeout", sb.session_prop(path, "StateReason"))
        self.assert_nothing_left(sid)

    def test_host_workspace_is_mounted_and_kept(self):
        ws = tempfile.mkdtemp(dir=DAEMON.roots)
        os.chown(ws, 1000, 1000)
        sid, path = self.create("workspace", "s", ws)
        sb.wait_state(path, "idle")
        mounts = {m["Destination"]: m for m in self.container_of(sid)["Mounts"]}
        self.assertEqual(mounts["/workspace"]["Source"], ws)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        sb.wait_state(path, "stopped")
        self.assertTrue(os.path.isdir(ws), "a host workspace must survive its session")

    def test_remove_forgets_a_stopped_session(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        refused = sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("stop it first", refused.stderr)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        sb.wait_state(path, "stopped")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove")
        self.assertNotIn(sid, [s[0] for s in list_sessions()])
        gone = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", sid,
                         check=False)
        self.assertNotEqual(gone.returncode, 0)
        self.assertIn(sid, gone.stderr)


class BadInputTest(DaemonTestCase):
    def refused(self, *config):
        before = list_sessions()
        words = []
        it = iter(config)
        n = 0
        for key, sig in zip(it, it):
            n += 1
            words += [key, sig, str(next(it))]
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession", "a{sv}",
                      str(n), *words, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertEqual(list_sessions(), before, "a refused CreateSession must change nothing")
        return p.stderr

    def test_unknown_field_is_named(self):
        self.assertIn("'colour'", self.refused("colour", "s", "blue"))

    def test_wrong_type_is_named(self):
        err = self.refused("tasks", "s", "many")
        self.assertIn("'tasks'", err)

    def test_memory_over_the_ceiling_is_named(self):
        err = self.refused("memory", "s", "8G")
        self.assertIn("'memory'", err)
        self.assertIn("1G", err)

    def test_unknown_image_is_named(self):
        err = self.refused("image", "s", "localhost/no-such-image:1")
        self.assertIn("localhost/no-such-image:1", err)

    def test_workspace_outside_the_roots_is_refused(self):
        self.assertIn("'workspace'", self.refused("workspace", "s", "/etc"))

    def test_unknown_session_is_an_error_naming_it(self):
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s",
                      "0123456789ab", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("0123456789ab", p.stderr)


class AuditTest(DaemonTestCase):
    def test_create_and_stop_are_audited(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        sb.wait_state(path, "stopped")
        created = sb.wait_until(lambda: sb.journal("MESSAGE_ID=a9d92449b44246168afa8e04f30b2fdf",
                                                   f"CCDOCKER_SESSION={sid}"), 10, what="the create record")
        self.assertEqual(created[0]["UNIT"], f"ccdocker-session-{sid}.service")
        self.assertEqual(created[0]["CALLER_UID"], "0")
        stops = sb.wait_until(lambda: sb.journal("MESSAGE_ID=fc6618581d66411a813b43e273a65345",
                                                 f"CCDOCKER_SESSION={sid}"), 10, what="the stop record")
        self.assertEqual(stops[0]["CALLER_UID"], "0")
        states = [r["MESSAGE"] for r in sb.journal("MESSAGE_ID=7fc538d2299444988e9fbd8f21a4ea48",
                                                   f"CCDOCKER_SESSION={sid}")]
        self.assertTrue(any("idle" in m for m in states), states)
        self.assertTrue(any("stopped" in m for m in states), states)


class RestartTest(DaemonTestCase):
    """kill -9 and restart of the daemon: a session whose unit still runs is re-adopted, live again in
    the new daemon (the same container answers its prompts, Attach follows it, Stop stops its unit),
    and one whose container died meanwhile ends with the reason. Its sessions run ccdocker-init and
    the real CLI against the scripted model, so this class has a daemon of its own: the module's runs
    the idle command, which has no channel."""

    @classmethod
    def setUpClass(cls):
        DAEMON.stop()
        cls.daemon = sb.Daemon(unit="ccdockerd-readopt-test.service", settings={
            "AllowHostNetwork": "yes",
            "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-readopt-runtime"),
            "MaxMemory": "2G",
        })
        del cls.daemon.settings["SessionCommand"]  # the image's entrypoint, ccdocker-init
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
        cls.daemon.start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
        DAEMON.start()

    def call(self, path, method, *args, check=True):
        return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)

    def result(self, path):
        p = self.call(path, "GetResult", "bu", "true", "180")
        return tuple(json.loads(p.stdout)["data"][:3])

    def unit_identity(self, sid):
        show = sb.unit_show(f"ccdocker-session-{sid}.service", "InvocationID", "MainPID", "ActiveState")
        return show["InvocationID"], show["MainPID"], show["ActiveState"]

    def test_kill9_and_restart_readopts_the_live_session(self):
        model = sb.ScriptedModel({"steps": [
            {"id": "before", "when": {"last_user_contains": "READOPT before"}, "reply": {"text": "pong before"}},
            {"id": "after", "when": {"last_user_contains": "READOPT after"}, "reply": {"text": "pong after"}},
        ], "default": {"text": "SCRIPT-NO-MATCH"}})
        self.addCleanup(model.stop)
        config = ("network", "s", "host", "memory", "s", "1G", "environment", "a{ss}", sb.claude_env(model))
        sid, path = self.create(*config)
        gone_sid, gone_path = self.create(*config)
        sb.wait_state(path, "idle", timeout=120)
        sb.wait_state(gone_path, "idle", timeout=120)
        self.call(path, "SendPrompt", "s", "READOPT before: ping")
        self.assertEqual(self.result(path), ("completed", "pong before", ""))
        before = self.container_of(sid)
        unit_before = self.unit_identity(sid)
        self.assertEqual(unit_before[2], "active")
        last_seq = sb.session_prop(path, "LastSeq")
        old_pid = self.daemon.main_pid()

        self.daemon.kill9()
        # While the daemon is down, the other session's container dies.
        sb.run("podman", "kill", "--signal", "KILL", f"ccdocker-{gone_sid}")
        sb.wait_until(lambda: sb.systemctl("is-active", f"ccdocker-session-{gone_sid}.service",
                                           check=False).stdout.strip() != "active", 30, what="the unit to end")
        self.daemon.start()
        self.assertNotEqual(self.daemon.main_pid(), old_pid)

        # The session that died is ended by the new daemon with the reason of its death.
        self.assertEqual(sb.wait_state(gone_path, "stopped", "failed"), "failed")
        self.assertEqual(sb.session_prop(gone_path, "StateReason"),
                         "the container was killed (SIGKILL, exit status 137; unit result exit-code)")

        # The live one is the same container in the same unit invocation: nothing was restarted.
        self.assertEqual(sb.session_prop(path, "State"), "idle")
        self.assertEqual(sb.session_prop(path, "ContainerId"), before["Id"])
        after = self.container_of(sid)
        self.assertEqual((after["Id"], after["State"]["Pid"], after["State"]["StartedAt"]),
                         (before["Id"], before["State"]["Pid"], before["State"]["StartedAt"]))
        self.assertEqual(self.unit_identity(sid), unit_before)

        # Attach on the new daemon follows it, and a prompt sent to the new daemon reaches the same
        # claude: its request carries the turn answered before the restart.
        attach = subprocess.Popen(["ccdockerctl", "--user", "--json", "attach", sid, "--since", str(last_seq)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: attach.poll() is None and attach.kill())
        self.call(path, "SendPrompt", "s", "READOPT after: ping again")
        self.assertEqual(self.result(path), ("completed", "pong after", ""))
        (second,) = [r for r in model.requests() if r["matched_step"] == "after"]
        self.assertIn("pong before", json.dumps(second["body"]["messages"]))
        self.assertEqual(self.container_of(sid)["State"]["Pid"], before["State"]["Pid"])

        # Stop through the new daemon stops the unit; the attached stream ends with the session.
        self.call(path, "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=60), "stopped")
        self.assertEqual(sb.session_prop(path, "StateReason"), "stopped on request of uid 0")
        self.assert_nothing_left(sid)
        out, err = attach.communicate(timeout=60)
        self.assertEqual(attach.returncode, 0, err)
        events = [json.loads(line) for line in out.splitlines()]
        self.assertTrue(events, err)
        self.assertEqual([e["seq"] for e in events], list(range(last_seq + 1, last_seq + 1 + len(events))))
        self.assertIn(("result", "pong after"),
                      [(e["data"].get("type"), e["data"].get("result")) for e in events])


def session_props(path, *names):
    return [sb.session_prop(path, n) for n in names]


if __name__ == "__main__":
    unittest.main()

"""The session contract on both runtimes (issue 20, docs/runtimes.md): the same tests, run once with
Runtime=podman and once with Runtime=docker against a real dockerd (`tools/ccdocker-dev docker-up`).

A session's container sits in its transient unit's cgroup, so the unit's limits bind it and stopping
the unit stops it; its hardening, read from the kernel's view of the container's first process, is
the same; a secret is a file in the container and never in the runtime's inspect; stop, force stop,
a killed container, an exit status, an out-of-memory kill and a timeout each end with their reason;
a kill -9 of the daemon leaves the session running and the new daemon re-adopts it through the
runtime the session recorded; and the real Claude Code CLI runs a turn that spawns a child session,
whose container is nested in its parent's slice.
"""

import json
import os
import shutil
import subprocess
import unittest

import sandbox as sb

SECRET_VALUE = "tok_runtime_contract_5d0c1e"
MCP = "mcp__cc-docker__"
SPAWN = MCP + "spawn_child"
RESULT = MCP + "get_child_result"


class RuntimeApi:
    """The few calls a test makes to the runtime itself, as the daemon does: over its REST socket."""

    def __init__(self, socket_path, prefix):
        self.socket_path = socket_path
        self.prefix = prefix

    def request(self, method, path):
        conn = sb._UnixConnection(self.socket_path)
        try:
            conn.request(method, self.prefix + path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def inspect(self, name):
        status, raw = self.request("GET", f"/containers/{name}/json")
        if status != 200:
            raise AssertionError(f"inspect {name}: HTTP {status}: {raw[:300]!r}")
        return json.loads(raw)

    def inspect_raw(self, name):
        return self.request("GET", f"/containers/{name}/json")[1].decode("utf-8", "replace")

    def exists(self, name):
        return self.request("GET", f"/containers/{name}/json")[0] == 200

    def kill(self, name):
        status, raw = self.request("POST", f"/containers/{name}/kill?signal=KILL")
        if status not in (200, 204):
            raise AssertionError(f"kill {name}: HTTP {status}: {raw[:300]!r}")


def docker_up():
    """Starts the sandbox's dockerd and loads the session image into it (idempotent)."""
    p = subprocess.run([os.path.join(sb.SRC, "tools", "ccdocker-dev"), "docker-up"], capture_output=True,
                       text=True, timeout=590)
    if p.returncode != 0:
        raise AssertionError(f"tools/ccdocker-dev docker-up failed:\n{p.stderr[-3000:]}")


def status_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def mount_options(pid, target):
    """The per-mount options of the container's mount at target, as its first process sees it."""
    found = None
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                found = fields[5].split(",")
    return found


def list_sessions():
    p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions")
    return json.loads(p.stdout)["data"][0]


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


class RuntimeContract:
    """The tests; a subclass per runtime says which (RUNTIME) and makes them a TestCase."""

    RUNTIME = None
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if cls.RUNTIME == "docker":
            docker_up()
            cls.api = RuntimeApi(sb.env("CCDOCKER_DOCKER_SOCKET"), "/v1.41")
        else:
            cls.api = RuntimeApi(sb.env("CCDOCKER_PODMAN_SOCKET"), "/v4.0.0/libpod")
        cls.runtime_dir = os.path.join(sb.env("CCDOCKER_RUN_DIR"), f"ccdockerd-{cls.RUNTIME}-contract-runtime")
        cls.daemon = sb.Daemon(unit=f"ccdockerd-{cls.RUNTIME}-contract.service", settings={
            "Runtime": cls.RUNTIME,
            "DockerSocket": sb.env("CCDOCKER_DOCKER_SOCKET"),
            "RuntimeDirectory": cls.runtime_dir,
            "MaxMemory": "2G",
            "AllowHostNetwork": "yes",
            "AllowedSecrets": "API_TOKEN",
            "HeartbeatTimeoutSec": "0",
        }, extra_env={"CC_SECRET_API_TOKEN": SECRET_VALUE})
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
        cls.daemon.start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)

    # -- plumbing ------------------------------------------------------------------------------

    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(self.forget, sid, path)
        return sid, path

    def forget(self, sid, path):
        if sid in [s[0] for s in list_sessions()]:
            call(path, "Stop", "b", "true", check=False)
            try:
                sb.wait_state(path, "stopped", "failed", timeout=60)
            finally:
                call(path, "Remove", check=False)
        self.assert_nothing_left(sid)

    def assert_nothing_left(self, sid):
        sb.wait_until(lambda: not self.api.exists(f"ccdocker-{sid}"), 30, what=f"container ccdocker-{sid} to go")
        unit = f"ccdocker-session-{sid}.service"
        sb.wait_until(lambda: sb.unit_show(unit, "LoadState")["LoadState"] == "not-found", 30,
                      what=f"unit {unit} to be unloaded")

    def running_pid(self, sid):
        """The container's first process, once it runs (idle may come as soon as the unit is active)."""
        def pid():
            state = self.api.inspect(f"ccdocker-{sid}")["State"]
            return state["Pid"] if state.get("Running") else None
        try:
            return sb.wait_until(pid, 30, what=f"container ccdocker-{sid} to run")
        except AssertionError as e:
            unit = f"ccdocker-session-{sid}.service"
            raise AssertionError(f"{e}\n{sb.journal(f'_SYSTEMD_UNIT={unit}', output='cat')[-2000:]}")

    # -- the contract --------------------------------------------------------------------------

    def test_container_is_hardened_limited_and_in_its_unit(self):
        sid, path = self.create("memory", "s", "256M", "tasks", "u", "64", "cpus", "s", "0.5",
                                "secrets", "as", ["API_TOKEN"])
        self.assertEqual(sb.wait_state(path, "idle"), "idle", sb.session_prop(path, "StateReason"))
        unit = sb.session_prop(path, "Unit")
        show = sb.unit_show(unit, "MemoryMax", "TasksMax", "ControlGroup", "ActiveState")
        self.assertEqual((show["ActiveState"], show["MemoryMax"], show["TasksMax"]),
                         ("active", str(256 << 20), "64"))
        pid = self.running_pid(sid)
        info = self.api.inspect(f"ccdocker-{sid}")
        self.assertEqual(sb.session_prop(path, "ContainerId"), info["Id"])

        # From the kernel, of the container's first process: no capabilities, no new privileges,
        # uid 1000, a read-only root, no network but loopback.
        st = status_of(pid)
        self.assertEqual(int(st["CapEff"], 16), 0)
        self.assertEqual(int(st["CapPrm"], 16), 0)
        self.assertEqual(int(st["CapBnd"], 16), 0)
        self.assertEqual(st["NoNewPrivs"].strip(), "1")
        self.assertEqual(st["Uid"].split()[0], "1000")
        self.assertIn("ro", mount_options(pid, "/"))
        for tmp in ("/tmp", "/run", "/var/tmp", "/home/claude"):
            opts = mount_options(pid, tmp)
            self.assertIsNotNone(opts, f"no tmpfs at {tmp}")
            self.assertIn("nosuid", opts, tmp)
        self.assertEqual(os.stat(f"/proc/{pid}/root/home/claude").st_uid, 1000)
        self.assertEqual(sorted(os.listdir(f"/proc/{pid}/root/sys/class/net")), ["lo"])
        self.assertIsNotNone(mount_options(pid, "/workspace"))
        self.assertIsNotNone(mount_options(pid, "/run/ccdocker"))

        # In the unit's cgroup, in every hierarchy that limits it, below the unit's own limit.
        cgroups = sb.proc_cgroups(pid)
        unit_cg = "/" + sb.env("CCDOCKER_SANDBOX_CGROUP") + "/manager" + show["ControlGroup"]
        for h in ("memory", "pids", "cpu", "systemd"):
            self.assertTrue(cgroups[h].startswith(unit_cg + "/"), (h, cgroups[h], unit_cg))
        with open(os.path.join("/sys/fs/cgroup/memory", cgroups["memory"].lstrip("/"), "memory.limit_in_bytes")) as f:
            self.assertEqual(int(f.read()), 256 << 20)
        with open(os.path.join("/sys/fs/cgroup/pids", cgroups["pids"].lstrip("/"), "pids.max")) as f:
            self.assertEqual(f.read().strip(), "64")

        # The secret is a 0400 file of the container's user, and nowhere in the runtime's inspect.
        secret = f"/proc/{pid}/root/run/ccdocker-secrets/API_TOKEN"
        with open(secret) as f:
            self.assertEqual(f.read().strip(), SECRET_VALUE)
        self.assertEqual((os.stat(secret).st_mode & 0o777, os.stat(secret).st_uid), (0o400, 1000))
        self.assertNotIn(SECRET_VALUE, self.api.inspect_raw(f"ccdocker-{sid}"))
        self.assertNotIn(SECRET_VALUE, json.dumps(info))

    def test_stop_ends_stopped_and_leaves_nothing(self):
        for force in ("false", "true"):
            sid, path = self.create()
            sb.wait_state(path, "idle")
            call(path, "Stop", "b", force)
            self.assertEqual(sb.wait_state(path, "stopped", "failed"), "stopped", force)
            self.assertIn("stopped on request", sb.session_prop(path, "StateReason"))
            self.assert_nothing_left(sid)

    def test_stopping_the_unit_from_outside_stops_the_container(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        pid = self.running_pid(sid)
        sb.systemctl("stop", f"ccdocker-session-{sid}.service")
        self.assertFalse(os.path.exists(f"/proc/{pid}"), "the container's process outlived its unit")
        sb.wait_state(path, "stopped", "failed")

    def test_killing_the_units_processes_kills_the_container(self):
        # SIGKILL to every process in the unit's cgroup, with no daemon to clean up after it and a
        # runtime client that cannot pass anything on: only a container inside the unit's cgroup dies.
        sid, path = self.create()
        sb.wait_state(path, "idle")
        pid = self.running_pid(sid)
        unit = f"ccdocker-session-{sid}.service"
        self.daemon.kill9()
        try:
            sb.systemctl("kill", "--signal=SIGKILL", unit)
            sb.wait_until(lambda: sb.systemctl("is-active", unit, check=False).stdout.strip() != "active", 30,
                          what="the unit to end")
            self.assertFalse(os.path.exists(f"/proc/{pid}"), "the container's process outlived its unit")
        finally:
            self.daemon.start()
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "failed")

    def test_killed_container_ends_failed_with_the_reason(self):
        sid, path = self.create()
        sb.wait_state(path, "idle")
        self.api.kill(f"ccdocker-{sid}")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "failed")
        self.assertRegex(sb.session_prop(path, "StateReason"), r"killed|137")
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

    def test_kill9_of_the_daemon_readopts_through_the_recorded_runtime(self):
        sid, path = self.create()
        gone_sid, gone_path = self.create()
        sb.wait_state(path, "idle")
        sb.wait_state(gone_path, "idle")
        self.running_pid(sid)
        before = self.api.inspect(f"ccdocker-{sid}")
        self.daemon.kill9()
        self.api.kill(f"ccdocker-{gone_sid}")
        sb.wait_until(lambda: sb.systemctl("is-active", f"ccdocker-session-{gone_sid}.service",
                                           check=False).stdout.strip() != "active", 30, what="the unit to end")
        # The other runtime as the daemon's Runtime= now: the sessions still go to their own.
        other = "podman" if self.RUNTIME == "docker" else "docker"
        self.daemon.settings["Runtime"] = other
        if other == "docker":
            docker_up()
        try:
            self.daemon.start()
        finally:
            self.daemon.settings["Runtime"] = self.RUNTIME
        self.assertEqual(sb.wait_state(gone_path, "stopped", "failed"), "failed")
        self.assertEqual(sb.session_prop(gone_path, "StateReason"),
                         "the container was killed (SIGKILL, exit status 137; unit result exit-code)")
        self.assertEqual(sb.session_prop(path, "State"), "idle")
        after = self.api.inspect(f"ccdocker-{sid}")
        self.assertEqual((after["Id"], after["State"]["Pid"]), (before["Id"], before["State"]["Pid"]))
        call(path, "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=60), "stopped")
        self.assert_nothing_left(sid)
        # Back to this class's daemon for the tests after.
        self.daemon.stop()
        self.daemon.start()

    def test_real_cli_turn_spawns_a_child_in_the_parents_slice(self):
        model = sb.ScriptedModel({"steps": [
            {"id": "spawn", "when": {"last_user_contains": "RT-PARENT", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {"prompt": "RT-CHILD: say hi"}}}},
            {"id": "wait", "when": {"tool_result_for": "spawn"}, "reply": {"tool_use": {"name": RESULT, "input": {
                "child_session_id": "${result:spawn.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "done", "when": {"tool_result_for": "wait"}, "reply": {"text": "child said ${result:wait.result}"}},
            {"id": "child", "when": {"last_user_contains": "RT-CHILD"}, "reply": {"text": "hi"}},
        ], "default": {"text": "SCRIPT-NO-MATCH"}})
        self.addCleanup(model.stop)
        # The image's entrypoint (ccdocker-init and the real CLI), not the test's idle command.
        saved = dict(self.daemon.settings)
        self.daemon.stop()
        del self.daemon.settings["SessionCommand"]
        try:
            self.daemon.start()
        finally:
            self.daemon.settings = saved
        self.addCleanup(lambda: (self.daemon.stop(), self.daemon.start()))
        sid, path = self.create("network", "s", "host", "memory", "s", "1G", "environment", "a{ss}",
                                sb.claude_env(model), "prompt", "s", "RT-PARENT: make a child")
        def result_now():
            return json.loads(call(path, "GetResult", "bu", "false", "0").stdout)["data"][:3]
        sb.wait_until(lambda: result_now()[0] != "pending", 300, 1.0, what="the parent's result")
        status, result, error = result_now()
        self.assertEqual((status, result, error), ("completed", "child said hi", ""),
                         json.dumps(model.requests())[-3000:])
        kids = [s for s in list_sessions() if s[1] == sid]
        self.assertEqual(len(kids), 1)
        kid = kids[0][0]
        self.addCleanup(self.forget, kid, kids[0][5])
        kid_pid = self.running_pid(kid)
        parent_slice_cg = sb.unit_show(sb.unit_show(f"ccdocker-session-{sid}.service", "Slice")["Slice"],
                                       "ControlGroup")["ControlGroup"]
        self.assertIn("/manager" + parent_slice_cg + "/", sb.proc_cgroups(kid_pid)["memory"])
        call(path, "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=90), "stopped")
        self.assertEqual(sb.wait_state(kids[0][5], "stopped", "failed", timeout=90), "stopped")
        sb.wait_until(lambda: not self.api.exists(f"ccdocker-{kid}"), 60, what="the child's container to go")


class PodmanContractTest(RuntimeContract, unittest.TestCase):
    RUNTIME = "podman"


class DockerContractTest(RuntimeContract, unittest.TestCase):
    RUNTIME = "docker"


class UnreachableRuntimeTest(unittest.TestCase):
    def test_daemon_refuses_to_start_naming_the_socket(self):
        missing = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "no-dockerd-here.sock")
        daemon = sb.Daemon(unit="ccdockerd-no-runtime.service", settings={"Runtime": "docker",
                                                                          "DockerSocket": missing})
        self.addCleanup(lambda: shutil.rmtree(daemon.state_dir, ignore_errors=True))
        self.addCleanup(lambda: sb.systemctl("reset-failed", daemon.unit, check=False))
        with self.assertRaises(AssertionError) as e:
            daemon.start()
        self.assertIn(f"Runtime=docker: nothing answers on {missing} (DockerSocket=)", str(e.exception))


if __name__ == "__main__":
    unittest.main()

"""The daemon's runtime layer against the real sandbox: daemon/podman.c (libpod REST on libcurl's multi
interface under sd-event) and daemon/unit.c (transient units over sd-bus), driven through
tests/helpers/runtime-probe. A session's shape (docs/sandbox.md): a hardened container created over
REST, run by `podman start --attach` in a transient unit whose limits bind it, followed to its end
through the unit's state."""

import json
import os
import queue
import subprocess
import threading
import time
import unittest

import sandbox as sb

MiB = 1024 * 1024


# A container PID 1 that ends on SIGTERM (a bare `sleep` as PID 1 ignores it and waits for SIGKILL).
TERM_EXITS_0 = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def probe_path():
    return os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "runtime-probe")


def parse_states(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def cgroup_v2_memory():
    """Whether memory is controlled by cgroup v2 here: only then can systemd see OOM kills."""
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except FileNotFoundError:
        return False


class RunningProbe:
    """`runtime-probe run` in the background, its state lines collected as they come."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.states = []
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; states: {self.states}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the probe exited before {what}: {self.proc.wait()} "
                                     f"{self.proc.stderr.read()}; states: {self.states}")
            if line.startswith("{"):
                state = json.loads(line)
                self.states.append(state)
                if predicate(state):
                    return state

    def finish(self, timeout):
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        while True:
            line = self._lines.get_nowait() if not self._lines.empty() else None
            if line is None:
                break
            if line.startswith("{"):
                self.states.append(json.loads(line))
        return rc, self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


class RuntimeTest(unittest.TestCase):
    def setUp(self):
        self.probe = probe_path()
        self.assertTrue(os.access(self.probe, os.X_OK), f"{self.probe} is not built")
        self.podman = sb.Podman()
        self.image = sb.env("CCDOCKER_SESSION_IMAGE")

    def new_names(self):
        """A container name and its unit, both removed at the end of the test."""
        name = sb.unique("ccdocker-rt")
        unit = f"ccdocker-probe-{name}.service"
        self.addCleanup(self.podman.remove, name)
        self.addCleanup(sb.stop_unit, unit)
        return name, unit

    def probe_run(self, *args, timeout=60):
        return subprocess.run([self.probe, *args], capture_output=True, text=True, timeout=timeout)

    def run_container(self, name, command, *, memory=256 * MiB, tasks=200, runtime=30, options=(), timeout=60):
        p = self.probe_run("run", *options, name, self.image, str(memory), str(tasks), str(runtime), "--",
                           *command, timeout=timeout)
        return p, parse_states(p.stdout)

    def assert_cleaned_up(self, name, unit):
        """The probe removed the container and reset the unit once it had ended."""
        self.assertFalse(self.podman.exists(name), f"container {name} is left")
        self.assertEqual(sb.unit_show(unit, "LoadState")["LoadState"], "not-found")

    # ---- the unit's end, as its state says ----

    def test_container_that_exits_0_leaves_the_unit_inactive_with_success(self):
        name, unit = self.new_names()
        p, states = self.run_container(name, ["sh", "-c", "sleep 1; exit 0"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("active", [s["active_state"] for s in states], states)
        last = states[-1]
        self.assertEqual(last["active_state"], "inactive", states)
        self.assertEqual(last["result"], "success", states)
        self.assertEqual((last["exec_main_code"], last["exec_main_status"]), (1, 0), states)
        # The first state is read before the start: the unit did not exist yet.
        self.assertFalse(states[0]["exists"], states)
        self.assertGreaterEqual(last["t"], 1.0)
        self.assert_cleaned_up(name, unit)

    def test_container_over_the_units_memory_max_is_killed(self):
        # The container has no memory limit of its own: only the unit's MemoryMax can stop it.
        name, unit = self.new_names()
        code = "b = bytearray(300 * 1024 * 1024); print('survived', flush=True)"
        p, states = self.run_container(name, ["python3", "-c", code], memory=64 * MiB)
        self.assertEqual(p.returncode, 0, p.stderr)
        last = states[-1]
        self.assertEqual(last["active_state"], "failed", states)
        if cgroup_v2_memory():
            self.assertEqual(last["result"], "oom-kill", states)
        else:
            # cgroup v1 has no memory.events: systemd cannot tell an OOM kill from any SIGKILL, so
            # the unit sees podman exit with the container's status, 137 (128 + SIGKILL).
            self.assertIn(last["result"], ("oom-kill", "exit-code"), states)
        if last["result"] == "exit-code":
            self.assertEqual((last["exec_main_code"], last["exec_main_status"]), (1, 137), states)
        self.assert_cleaned_up(name, unit)

    def test_runtime_max_sec_stops_the_unit_with_result_timeout(self):
        name, unit = self.new_names()
        p, states = self.run_container(name, TERM_EXITS_0, runtime=2, options=("--stop-timeout=3",))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("active", [s["active_state"] for s in states], states)
        last = states[-1]
        self.assertEqual(last["active_state"], "failed", states)
        self.assertEqual(last["result"], "timeout", states)
        self.assertGreaterEqual(last["t"], 2.0, states)
        self.assertLess(last["t"], 2.0 + 3 + 5, states)
        self.assert_cleaned_up(name, unit)

    def test_stop_from_outside_ends_the_watched_unit(self):
        name, unit = self.new_names()
        run = RunningProbe([self.probe, "run", name, self.image, str(256 * MiB), "200", "0", "--", *TERM_EXITS_0])
        self.addCleanup(run.kill)
        run.wait_for(lambda s: s["active_state"] == "active", 30, "the unit to be active")

        stop = self.probe_run("stop", unit)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertEqual(parse_states(stop.stdout), [{"outcome": "done"}])

        rc, stderr = run.finish(30)
        self.assertEqual(rc, 0, stderr)
        self.assertIn("deactivating", [s["active_state"] for s in run.states], run.states)
        last = run.states[-1]
        self.assertEqual((last["active_state"], last["result"]), ("inactive", "success"), run.states)
        self.assert_cleaned_up(name, unit)

    def test_kill_from_outside_ends_the_unit_with_result_signal(self):
        name, unit = self.new_names()
        run = RunningProbe([self.probe, "run", name, self.image, str(256 * MiB), "200", "0", "--", "sleep", "300"])
        self.addCleanup(run.kill)
        run.wait_for(lambda s: s["active_state"] == "active", 30, "the unit to be active")

        kill = self.probe_run("kill", unit, "9")
        self.assertEqual(kill.returncode, 0, kill.stderr)

        rc, stderr = run.finish(30)
        self.assertEqual(rc, 0, stderr)
        last = run.states[-1]
        self.assertEqual((last["active_state"], last["result"]), ("failed", "signal"), run.states)
        self.assertEqual((last["exec_main_code"], last["exec_main_status"]), (2, 9), run.states)
        self.assert_cleaned_up(name, unit)

    def test_stopping_a_unit_that_is_not_loaded_is_success(self):
        p = self.probe_run("stop", f"ccdocker-probe-{sb.unique('none')}.service")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(parse_states(p.stdout), [{"outcome": "done"}])

    def test_state_of_a_unit_that_is_not_loaded(self):
        p = self.probe_run("state", f"ccdocker-probe-{sb.unique('none')}.service")
        self.assertEqual(p.returncode, 0, p.stderr)
        state = parse_states(p.stdout)[0]
        self.assertFalse(state["exists"])
        self.assertIsNone(state["active_state"])

    # ---- the container ----

    def test_container_is_created_hardened(self):
        name, _ = self.new_names()
        p = self.probe_run("create", name, self.image, "--", "true")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(json.loads(p.stdout)["Id"], r"^[0-9a-f]{64}$")

        p = self.probe_run("inspect", name)
        self.assertEqual(p.returncode, 0, p.stderr)
        info = json.loads(p.stdout)
        host = info["HostConfig"]
        self.assertEqual(info["Name"], name)
        self.assertTrue(host["ReadonlyRootfs"])
        # cap_drop ALL: podman lists every capability of its default set as dropped, and adds none.
        for cap in ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID", "CAP_NET_RAW", "CAP_SYS_CHROOT"):
            self.assertIn(cap, host["CapDrop"])
        self.assertFalse(host.get("CapAdd"))
        self.assertIn("no-new-privileges", host["SecurityOpt"])
        self.assertEqual(info["Config"]["User"], "1000:1000")
        self.assertEqual(host["NetworkMode"], "none")
        self.assertEqual(sorted(host["Tmpfs"]), ["/run", "/tmp", "/var/tmp", "/workspace"])

    def test_hardening_holds_inside_the_running_container(self):
        name, unit = self.new_names()
        script = ("id -u; id -g; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; "
                  "touch /probe-root 2>/dev/null && echo root-writable || echo root-read-only; "
                  "touch /workspace/f /tmp/f && echo scratch-writable")
        p, states = self.run_container(name, ["sh", "-c", script])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(states[-1]["result"], "success", states)
        out = sb.wait_until(lambda: (o := sb.journal(f"_SYSTEMD_UNIT={unit}", output="cat")) and
                            "scratch-writable" in o and o, 10, what="the container's output in the journal")
        lines = out.split()
        self.assertEqual(lines[:2], ["1000", "1000"], out)
        self.assertIn("CapEff:\t0000000000000000", out)
        self.assertIn("NoNewPrivs:\t1", out)
        self.assertIn("root-read-only", lines)

    def test_inspect_and_remove_of_a_missing_container(self):
        name = sb.unique("ccdocker-rt-none")
        p = self.probe_run("inspect", name)
        self.assertEqual(p.returncode, 2, p.stderr)  # -ENOENT
        self.assertIn(f'no container with name or ID "{name}" found', p.stderr)
        p = self.probe_run("remove", name)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(parse_states(p.stdout), [{"status": 404}])

    # ---- errors, in the words of podman and systemd ----

    def test_creating_from_a_missing_image_reports_podmans_error(self):
        name, _ = self.new_names()
        image = "localhost/ccdocker-no-such-image:1"
        p = self.probe_run("create", name, image, "--", "true")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"{image}: image not known", p.stderr)
        self.assertFalse(self.podman.exists(name))

    def test_run_with_a_missing_image_names_it_and_creates_nothing(self):
        name, unit = self.new_names()
        image = "localhost/ccdocker-no-such-image:1"
        p = self.probe_run("run", name, image, str(256 * MiB), "200", "0", "--", "true")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"image {image} does not exist", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertFalse(self.podman.exists(name))
        self.assertEqual(sb.unit_show(unit, "LoadState")["LoadState"], "not-found")

    def test_duplicate_unit_name_reports_systemds_error(self):
        name, unit = self.new_names()
        sb.run("systemd-run", "--user", f"--unit={unit}", "sleep", "60")
        p, _ = self.run_container(name, ["true"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("org.freedesktop.systemd1.UnitExists", p.stderr)
        self.assertIn(unit, p.stderr)
        # The probe removed its container and left the other unit alone.
        self.assertFalse(self.podman.exists(name))
        self.assertEqual(sb.unit_show(unit, "ActiveState")["ActiveState"], "active")

    def test_failed_start_job_reports_its_result(self):
        name, unit = self.new_names()
        p, _ = self.run_container(name, ["true"], options=("--podman=/nonexistent/podman",))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"Job to start {unit} finished with result 'failed'", p.stderr)
        self.assert_cleaned_up(name, unit)


class PodmanClientEdgeTest(unittest.TestCase):
    """daemon/podman.c's own edges, against the real libpod service."""

    def setUp(self):
        self.probe = probe_path()

    def test_freeing_the_client_drops_a_pending_request_without_its_callback(self):
        p = subprocess.run([self.probe, "cancel", "ccdocker-no-such-container"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(parse_states(p.stdout), [{"outcome": "cancelled"}])

    def test_a_missing_socket_is_a_transport_error(self):
        env = dict(os.environ, CCDOCKER_PODMAN_SOCKET=sb.env("CCDOCKER_PODMAN_SOCKET") + ".missing")
        p = subprocess.run([self.probe, "inspect", "x"], capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("(HTTP 0): Failed to connect", p.stderr)


if __name__ == "__main__":
    unittest.main()

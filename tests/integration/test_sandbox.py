"""The sandbox itself: a contained user manager, its bus, journald, podman and Redis, and the
shape of a session (a container from the session image inside a transient unit whose cgroup
limits bind it)."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import sandbox as sb


class SandboxServicesTest(unittest.TestCase):
    def test_pid1_stays_in_the_root_cgroup(self):
        with open("/proc/1/cgroup") as f:
            for line in f:
                self.assertTrue(line.rstrip("\n").endswith(":/"), f"PID 1 moved: {line!r}")

    def test_manager_runs_in_its_own_cgroup_subtree(self):
        pid = int(open(os.path.join(sb.env("CCDOCKER_RUN_DIR"), "pids", "manager.pid")).read())
        cgroups = sb.proc_cgroups(pid)
        root = "/" + sb.env("CCDOCKER_SANDBOX_CGROUP") + "/manager"
        for h in ("memory", "pids", "systemd"):
            self.assertTrue(cgroups[h].startswith(root), f"manager {h} cgroup is {cgroups[h]}")

    def test_systemd_answers_on_the_private_bus(self):
        out = sb.run("busctl", "--user", "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                     "org.freedesktop.systemd1.Manager", "Version").stdout
        self.assertRegex(out, r'^s "\d+')
        self.assertIn(os.path.join(sb.env("CCDOCKER_RUN_DIR"), "xdg", "bus"),
                      sb.env("DBUS_SESSION_BUS_ADDRESS"))

    def test_redis_cli_reaches_the_sandbox_redis(self):
        key = sb.unique("ccdocker-test")
        self.assertEqual(sb.run("redis-cli", "SET", key, "v").stdout.strip(), "OK")
        self.addCleanup(sb.run, "redis-cli", "DEL", key, check=False)
        self.assertEqual(sb.run("redis-cli", "GET", key).stdout.strip(), "v")
        info = sb.run("redis-cli", "INFO", "server").stdout
        self.assertIn(sb.env("CCDOCKER_RUN_DIR"), sb.run("redis-cli", "CONFIG", "GET", "dir").stdout)
        self.assertIn("tcp_port:0", info)

    def test_podman_client_reaches_the_sandbox_service(self):
        images = sb.run("podman", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        self.assertIn(sb.env("CCDOCKER_SESSION_IMAGE"), images)
        self.assertIn("OK", sb.run("curl", "-s", "--unix-socket", sb.env("CCDOCKER_PODMAN_SOCKET"),
                                   "http://d/v4.0.0/libpod/_ping").stdout)

    def test_session_image_has_the_user_the_cli_and_the_directories(self):
        name = sb.unique("ccdocker-img")
        script = ("id -u; id -g; id -un; claude --version; "
                  "for d in /workspace /workspace/.claude/skills /shared /home/claude/.claude "
                  "/opt/cc-docker/templates /opt/cc-docker/skills /opt/cc-docker/hooks /opt/cc-docker/mcp-server; "
                  "do test -d $d && echo dir:$d; done; stat -c %u /workspace /shared /home/claude/.claude")
        p = sb.run("podman", "run", "--rm", "--name", name, "--network=none", sb.env("CCDOCKER_SESSION_IMAGE"),
                   "sh", "-c", script)
        lines = p.stdout.split()
        self.assertEqual(lines[:3], ["1000", "1000", "claude"])
        self.assertIn(sb.env("CCDOCKER_CLAUDE_CODE_VERSION"), p.stdout)
        for d in ("/workspace", "/workspace/.claude/skills", "/shared", "/home/claude/.claude",
                  "/opt/cc-docker/templates", "/opt/cc-docker/skills", "/opt/cc-docker/hooks",
                  "/opt/cc-docker/mcp-server"):
            self.assertIn("dir:" + d, lines)
        self.assertEqual(lines[-3:], ["1000", "1000", "1000"])


class SessionShapeTest(unittest.TestCase):
    """A container created over libpod REST and started by a transient unit."""

    def setUp(self):
        self.podman = sb.Podman()
        self.name = sb.unique("ccdocker-t")
        self.unit = self.name + ".service"
        self.addCleanup(self.podman.remove, self.name)
        self.addCleanup(sb.stop_unit, self.unit)

    def test_container_processes_sit_in_the_units_cgroup_with_the_units_limits(self):
        self.podman.create(sb.session_container_spec(self.name, ["sleep", "300"]))
        p = sb.start_container_unit(self.unit, self.name, props=["MemoryMax=96M", "TasksMax=40"])
        self.assertEqual(p.returncode, 0, p.stderr)
        state = sb.wait_until(lambda: (s := self.podman.inspect(self.name)["State"])["Running"] and s,
                              what="the container to run")
        show = sb.unit_show(self.unit, "ControlGroup", "MemoryMax", "TasksMax", "ActiveState")
        self.assertEqual(show["ActiveState"], "active")
        self.assertEqual(show["MemoryMax"], str(96 * 1024 * 1024))
        self.assertEqual(show["TasksMax"], "40")
        unit_cg = show["ControlGroup"]
        cgroups = sb.proc_cgroups(state["Pid"])
        prefix = "/" + sb.env("CCDOCKER_SANDBOX_CGROUP") + "/manager" + unit_cg + "/"
        for h in ("memory", "pids"):
            self.assertTrue(cgroups[h].startswith(prefix), f"container {h} cgroup {cgroups[h]} not under {prefix}")
        with open(os.path.join(sb.sandbox_cgroup_path("memory", unit_cg), "memory.limit_in_bytes")) as f:
            self.assertEqual(int(f.read()), 96 * 1024 * 1024)
        with open(os.path.join(sb.sandbox_cgroup_path("pids", unit_cg), "pids.max")) as f:
            self.assertEqual(f.read().strip(), "40")

    def test_units_memory_limit_kills_a_container_that_exceeds_it(self):
        # The container sets no limit of its own: only the unit's MemoryMax can stop it.
        self.podman.create(sb.session_container_spec(
            self.name, ["python3", "-c", "b = bytearray(300 * 1024 * 1024); print('survived', flush=True)"]))
        p = sb.start_container_unit(self.unit, self.name, wait=True, props=["MemoryMax=64M"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("status=137", p.stdout + p.stderr)
        self.assertNotIn("survived", sb.journal(f"_SYSTEMD_UNIT={self.unit}", output="cat"))

    def test_units_tasks_limit_caps_the_containers_processes(self):
        code = ("import subprocess\n"
                "n = 0\n"
                "procs = []\n"
                "try:\n"
                "    for _ in range(60):\n"
                "        procs.append(subprocess.Popen(['sleep', '30'])); n += 1\n"
                "except OSError:\n"
                "    pass\n"
                "print('spawned', n, flush=True)\n"
                "for p in procs: p.kill()\n")
        self.podman.create(sb.session_container_spec(self.name, ["python3", "-c", code]))
        p = sb.start_container_unit(self.unit, self.name, wait=True, props=["TasksMax=25"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = sb.journal(f"_SYSTEMD_UNIT={self.unit}", output="cat")
        spawned = [int(line.split()[1]) for line in out.splitlines() if line.startswith("spawned ")]
        self.assertEqual(len(spawned), 1, out)
        # podman and conmon share the unit's 25 tasks, so the payload gets fewer than 25.
        self.assertLess(spawned[0], 25)
        self.assertGreater(spawned[0], 0)

    def test_stopping_the_unit_stops_the_container(self):
        self.podman.create(sb.session_container_spec(self.name, ["sleep", "300"]))
        self.assertEqual(sb.start_container_unit(self.unit, self.name).returncode, 0)
        sb.wait_until(lambda: self.podman.inspect(self.name)["State"]["Running"], what="the container to run")
        sb.systemctl("stop", self.unit)
        # ExecStopPost removes the container once the unit is down.
        sb.wait_until(lambda: not self.podman.exists(self.name), 30, what="the container to be removed")
        self.assertEqual(sb.systemctl("is-active", self.unit, check=False).stdout.strip(), "inactive")

    def test_units_journal_holds_the_containers_output(self):
        word = sb.unique("hello")
        self.podman.create(sb.session_container_spec(self.name, ["sh", "-c", f"echo {word}"]))
        p = sb.start_container_unit(self.unit, self.name, wait=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        records = sb.wait_until(lambda: sb.journal(f"_SYSTEMD_UNIT={self.unit}", f"MESSAGE={word}"), 10,
                                what="the unit's output in the journal")
        self.assertEqual(records[0]["MESSAGE"], word)


class TeardownTest(unittest.TestCase):
    """A second, throw-away sandbox: up, then down leaves no process and no cgroup behind."""

    def test_down_leaves_no_process_and_no_cgroup(self):
        dev_dir = tempfile.mkdtemp(prefix="ccdocker-dev2-")
        self.addCleanup(subprocess.run, ["rm", "-rf", dev_dir])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CCDOCKER_", "CONTAINER", "XDG_RUNTIME_DIR", "DBUS_SESSION"))}
        env["CCDOCKER_DEV_DIR"] = dev_dir
        tool = os.path.join(sb.SRC, "tools", "ccdocker-dev")
        before = open("/proc/1/cgroup").read()
        self.addCleanup(subprocess.run, [tool, "down"], env=env, capture_output=True)
        up = subprocess.run([tool, "up"], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(up.returncode, 0, up.stderr)
        pids = {}
        for name in ("manager", "journald", "podman", "redis"):
            with open(os.path.join(dev_dir, "run", "pids", name + ".pid")) as f:
                pids[name] = int(f.read())
            self.assertTrue(os.path.exists(f"/proc/{pids[name]}"), f"{name} is not running after up")
        cg = sb.proc_cgroups(pids["manager"])["memory"].split("/")[1]
        self.assertTrue(cg.startswith("ccdocker-sandbox-"))
        self.assertNotEqual(cg, sb.env("CCDOCKER_SANDBOX_CGROUP"))
        # A unit with a process of its own, so down has something to stop.
        subprocess.run(["systemd-run", "--user", "--unit=teardown-probe", "sleep", "600"],
                       env={**env, "XDG_RUNTIME_DIR": os.path.join(dev_dir, "run", "xdg")},
                       capture_output=True, check=True)
        probe_cgroup = f"/sys/fs/cgroup/pids/{cg}/manager/app.slice/teardown-probe.service/cgroup.procs"
        probe = int(sb.wait_until(lambda: os.path.exists(probe_cgroup) and open(probe_cgroup).read().split(),
                                  what="the probe unit's process")[0])

        down = subprocess.run([tool, "down"], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(down.returncode, 0, down.stderr)
        for name, pid in list(pids.items()) + [("probe", probe)]:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"{name} ({pid}) still runs after down")
        for h in os.listdir("/sys/fs/cgroup"):
            self.assertFalse(os.path.exists(os.path.join("/sys/fs/cgroup", h, cg)),
                             f"cgroup {h}/{cg} is left after down")
        self.assertFalse(os.path.exists(os.path.join(dev_dir, "run")))
        self.assertEqual(open("/proc/1/cgroup").read(), before)


def dev_tool(*args, env=None, timeout=300):
    return subprocess.run([os.path.join(sb.SRC, "tools", "ccdocker-dev"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class SandboxDaemonTest(unittest.TestCase):
    """What `up` starts for a person to play with: ccdockerd --user as a unit of the manager and the
    scripted model, so that `exec -- ccdockerctl --user run "hello"` works right after `up`."""

    def test_ctl_run_hello_works_right_after_up(self):
        # up again: a test's own daemon may have stopped the sandbox's (sandbox_daemon_aside).
        up = dev_tool("up")
        self.assertEqual(up.returncode, 0, up.stderr)
        unit = sb.env("CCDOCKER_SANDBOX_DAEMON_UNIT")
        run_dir = sb.env("CCDOCKER_RUN_DIR")
        with open(os.path.join(run_dir, "pids", "daemon.pid")) as f:
            self.assertEqual(int(f.read()), int(sb.unit_show(unit, "MainPID")["MainPID"]))
        p = dev_tool("exec", "--", "ccdockerctl", "--user", "run", "hello")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Hello from cc-docker!", p.stdout)
        # The model saw the daemon's credential (the placeholder, or the person's own), never the
        # container's: the scripted model logs a hash of the x-api-key it got.
        with open(os.path.join(run_dir, "sandbox-daemon", "credential.env")) as f:
            creds = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        self.assertEqual(os.stat(os.path.join(run_dir, "sandbox-daemon", "credential.env")).st_mode & 0o077, 0)
        with open(os.path.join(run_dir, "logs", "model-requests.jsonl")) as f:
            reqs = [json.loads(line) for line in f if line.strip()]
        self.assertTrue(reqs, "the scripted model got no request")
        got = reqs[-1]["credential_sha256"]
        want = {hashlib.sha256(v.encode()).hexdigest() for v in creds.values()}
        self.assertTrue(set(got.values()) & want, f"the model got {got}, not the daemon's credential")

    def test_a_tests_own_daemon_steps_the_sandboxs_aside(self):
        up = dev_tool("up")
        self.assertEqual(up.returncode, 0, up.stderr)
        unit = sb.env("CCDOCKER_SANDBOX_DAEMON_UNIT")
        self.assertEqual(sb.systemctl("is-active", unit, check=False).stdout.strip(), "active")
        daemon = sb.Daemon(unit="ccdockerd-aside-test.service")
        self.addCleanup(shutil.rmtree, daemon.state_dir, True)
        daemon.start()
        self.addCleanup(daemon.stop)
        self.assertEqual(sb.systemctl("is-active", unit, check=False).stdout.strip(), "inactive")
        owner = sb.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                          "GetConnectionUnixProcessID", "s", "org.ccdocker1").stdout
        self.assertEqual(json.loads(owner)["data"][0], daemon.main_pid())


class SandboxDaemonCredentialTest(unittest.TestCase):
    """A second, throw-away sandbox: the person's ANTHROPIC_API_KEY reaches the sandbox's daemon
    through a private file, not its command line, and down stops the daemon and the model by PID."""

    def test_the_persons_credential_reaches_the_daemon_and_down_stops_it(self):
        dev_dir = tempfile.mkdtemp(prefix="ccdocker-dev3-")
        self.addCleanup(subprocess.run, ["rm", "-rf", dev_dir])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CCDOCKER_", "CONTAINER", "XDG_RUNTIME_DIR", "DBUS_SESSION", "ANTHROPIC_",
                                    "CLAUDE_CODE_OAUTH"))}
        env["CCDOCKER_DEV_DIR"] = dev_dir
        key = "sk-ant-test-" + sb.unique("key")
        env["ANTHROPIC_API_KEY"] = key
        self.addCleanup(dev_tool, "down", env=env)
        up = dev_tool("up", env=env)
        self.assertEqual(up.returncode, 0, up.stderr)
        pids = {}
        for name in ("daemon", "model"):
            with open(os.path.join(dev_dir, "run", "pids", name + ".pid")) as f:
                pids[name] = int(f.read())
        cred = os.path.join(dev_dir, "run", "sandbox-daemon", "credential.env")
        self.assertEqual(os.stat(cred).st_mode & 0o777, 0o600)
        with open(cred) as f:
            self.assertEqual(f.read(), f"ANTHROPIC_API_KEY={key}\n")
        # The daemon got it in its environment, read it, and wiped the value (daemon/credentials.c).
        with open(f"/proc/{pids['daemon']}/environ", "rb") as f:
            self.assertIn(b"ANTHROPIC_API_KEY=", f.read().split(b"\0"))
        with open(f"/proc/{pids['daemon']}/cmdline", "rb") as f:
            self.assertNotIn(key.encode(), f.read())
        show = dev_tool("exec", "--", "systemctl", "--user", "show", "ccdockerd-sandbox.service", env=env).stdout
        self.assertNotIn(key, show)
        with open(f"/proc/{pids['model']}/cmdline", "rb") as f:
            self.assertIn(b"scripted-model.py", f.read())
        down = dev_tool("down", env=env)
        self.assertEqual(down.returncode, 0, down.stderr)
        for name, pid in pids.items():
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"{name} ({pid}) still runs after down")


if __name__ == "__main__":
    unittest.main()

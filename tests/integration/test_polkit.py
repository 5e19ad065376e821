"""daemon/polkit.c against the sandbox's real system bus and polkitd: tests/helpers/polkit-probe owns
org.ccdocker1.PolkitProbe there and answers Check(action) through polkit_check_async(), as ccdockerd's
methods do. Root passes without polkit being asked; uid 65534 is refused by polkitd with an error that
names the action, for our actions (installed by `up` from polkit/org.ccdocker1.policy) and for an
unknown one; on a bus without polkitd an unprivileged caller is refused with "polkit is not
available", and root still passes."""

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import sandbox as sb

PROBE_NAME = "org.ccdocker1.PolkitProbe"
PROBE_PATH = "/org/ccdocker1/PolkitProbe"
PROBE_INTERFACE = "org.ccdocker1.PolkitProbe"
ACCESS_DENIED = "org.ccdocker1.Error.AccessDenied"
ACTIONS = ("org.ccdocker1.create-session", "org.ccdocker1.manage-own-sessions", "org.ccdocker1.manage-sessions")
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")

# The probe's bus policy: a test-only file in the sandbox bus's own includedir (see docs/sandbox.md),
# so that the production policy dbus/org.ccdocker1.conf stays as it ships.
PROBE_POLICY_FILE = "org.ccdocker1.PolkitProbe.conf"
PROBE_POLICY = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "https://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Written by tests/integration/test_polkit.py and removed by it. -->
<busconfig>
  <policy user="root">
    <allow own="{PROBE_NAME}"/>
  </policy>
  <policy context="default">
    <allow send_destination="{PROBE_NAME}" send_interface="{PROBE_INTERFACE}"/>
  </policy>
</busconfig>
"""


def system_bus():
    return sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS")


def bus_call(address, *args, as_nobody=False, check=False):
    argv = (NOBODY if as_nobody else ()) + ("busctl", f"--address={address}", "call") + args
    return sb.run(*argv, check=check, timeout=60)


def check(address, action, as_nobody=False):
    return bus_call(address, PROBE_NAME, PROBE_PATH, PROBE_INTERFACE, "Check", "s", action, as_nobody=as_nobody)


def reload_bus_config(address):
    bus_call(address, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig",
             check=True)


def pid_of_name(address, name):
    out = bus_call(address, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                   "GetConnectionUnixProcessID", "s", name, check=True).stdout.split()
    assert out[0] == "u", out
    return int(out[1])


def stop_process(proc):
    """SIGTERM by PID, SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def stop_probe(proc, err_path):
    """Stops the probe by PID; it must exit 0 on SIGTERM (and, in a sanitizer build, leak nothing)."""
    running = proc.poll() is None
    stop_process(proc)
    if not running or proc.returncode != 0:
        with open(err_path) as f:
            raise AssertionError(f"polkit-probe {'died' if not running else 'exited'} with status "
                                 f"{proc.returncode}: {f.read().strip()}")


def probe_path():
    path = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "polkit-probe")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is not built: run 'tools/ccdocker-dev build'")
    return path


def start_probe(test, address):
    """Runs polkit-probe as root on the bus at address until the test ends; returns (process, its
    stderr file's path)."""
    d = tempfile.mkdtemp(prefix="ccdocker-polkit-probe-")
    test.addCleanup(shutil.rmtree, d, ignore_errors=True)
    err_path = os.path.join(d, "stderr")
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
    with open(err_path, "w") as err:
        proc = subprocess.Popen([probe_path()], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
    test.addCleanup(proc.stdout.close)
    test.addCleanup(stop_probe, proc, err_path)
    deadline = time.monotonic() + 15
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                break
            line += chunk
    if line != b"ready\n":
        with open(err_path) as f:
            raise AssertionError(f"polkit-probe did not get ready (stdout {line!r}): {f.read().strip()}")
    return proc, err_path


class SandboxPolkitTest(unittest.TestCase):
    """The sandbox's system bus, with the polkitd that `up` started on it."""

    def setUp(self):
        policy = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "system-bus", "system.d", PROBE_POLICY_FILE)
        with open(policy, "w") as f:
            f.write(PROBE_POLICY)
        self.addCleanup(reload_bus_config, system_bus())
        self.addCleanup(os.unlink, policy)
        reload_bus_config(system_bus())
        self.probe, self.probe_stderr = start_probe(self, system_bus())

    def test_polkitd_of_the_sandbox_answers_on_its_system_bus(self):
        with open(os.path.join(sb.env("CCDOCKER_RUN_DIR"), "pids", "polkitd.pid")) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/comm") as f:
            self.assertEqual(f.read().strip(), "polkitd")
        # The process that owns org.freedesktop.PolicyKit1 is the one up started, and it runs as its own
        # user, not as root.
        self.assertEqual(pid_of_name(system_bus(), "org.freedesktop.PolicyKit1"), pid)
        self.assertNotEqual(os.stat(f"/proc/{pid}").st_uid, 0)
        self.assertEqual(pid_of_name(system_bus(), PROBE_NAME), self.probe.pid)

    def test_root_is_allowed(self):
        for action in ACTIONS:
            p = check(system_bus(), action)
            self.assertEqual((p.returncode, p.stdout.strip()), (0, "b true"), p.stderr)

    def test_unprivileged_caller_is_denied_with_the_action_named(self):
        for action in ACTIONS:
            p = check(system_bus(), action, as_nobody=True)
            self.assertNotEqual(p.returncode, 0, p.stdout)
            # polkitd knows the action (up installed the policy) and says no: a challenge, since the
            # defaults are auth_admin*, which a non-interactive check turns into a denial.
            self.assertIn(f"Access denied: polkit does not authorise {action}", p.stderr)
        # The error name, which busctl does not print.
        p = sb.run(*NOBODY, "dbus-send", f"--bus={system_bus()}", "--print-reply", f"--dest={PROBE_NAME}",
                   PROBE_PATH, f"{PROBE_INTERFACE}.Check", "string:org.ccdocker1.create-session", check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn(f"Error {ACCESS_DENIED}: Access denied: polkit does not authorise org.ccdocker1.create-session",
                      p.stderr)

    def test_unknown_action_is_denied_by_polkitd(self):
        action = "org.ccdocker1.no-such-action"
        p = check(system_bus(), action, as_nobody=True)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        # The reason is polkitd's own text: it was asked and refused.
        self.assertIn(f"Access denied to {action}: Action {action} is not registered", p.stderr)


class MissingPolkitTest(unittest.TestCase):
    """A bus of the test's own, on which no polkitd runs."""

    def setUp(self):
        d = tempfile.mkdtemp(prefix="ccdocker-nopolkit-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        os.chmod(d, 0o755)  # uid 65534 must reach the socket
        self.address = f"unix:path={d}/bus"
        conf = os.path.join(d, "bus.conf")
        with open(conf, "w") as f:
            f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>{self.address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
""")
        with open(os.path.join(d, "bus.log"), "w") as log:
            bus = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.addCleanup(stop_process, bus)
        sb.wait_until(lambda: bus_call(self.address, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "GetId").returncode == 0,
                      10, what="the test's dbus-daemon")
        self.probe, self.probe_stderr = start_probe(self, self.address)

    def test_unprivileged_caller_is_denied_when_polkit_is_missing(self):
        action = "org.ccdocker1.create-session"
        p = check(self.address, action, as_nobody=True)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn(f"Access denied to {action}: polkit is not available", p.stderr)
        with open(self.probe_stderr) as f:
            self.assertIn(f"polkit is not available, denying {action}", f.read())

    def test_root_passes_without_asking_polkit(self):
        p = check(self.address, "org.ccdocker1.manage-sessions")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "b true"), p.stderr)


if __name__ == "__main__":
    unittest.main()

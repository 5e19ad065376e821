"""The shipped units (units/) as systemd reads and runs them (STYLE.md 13): `systemd-analyze verify`
finds nothing to say of them against a root holding this machine's units and the built programs;
`systemd-analyze security` rates each service's exposure at most today's figure (printed); and the
shipped ccdocker-httpd.socket, ccdocker-httpd.service and ccdockerd.service, loaded into the
sandbox's contained user manager with only the drop-ins a user manager needs, come up as a machine
would run them (the socket activates the HTTP service, which pulls in the daemon), answer, and run
under the sandboxing the units ship, as the kernel shows it."""

import json
import os
import re
import shutil
import socket
import tempfile
import unittest
import urllib.error
import urllib.request

import sandbox as sb

UNITS = os.path.join(sb.SRC, "units")
SHIPPED = ("ccdockerd.service", "ccdocker-httpd.service", "ccdocker-httpd.socket")
# systemd's 0-10 exposure of each service as shipped today (systemd 252): a change that raises it
# fails here and must lower the figure back or raise it with a reason. ccdockerd's rose from 1.3 to
# 2.3 when it got the network for its upstreams (issue 15: the model upstream, the egress proxies'
# hosts, Discord): PrivateNetwork= 0.5, AF_INET/AF_INET6 0.3 and no IPAddressDeny=any 0.2, exactly
# the three settings in NETWORK below; nothing else was given up.
EXPOSURE_MAX = {"ccdockerd.service": 2.3, "ccdocker-httpd.service": 1.1}
NETWORK = {"PrivateNetwork=", "RestrictAddressFamilies=~AF_(INET|INET6)", "IPAddressDeny="}
# The checks systemd-analyze security finds open in each shipped service, each with its reason in the
# unit ("Left out, and why"): one more fails the test, so no hardening is dropped unnoticed, whatever the
# total.
OPEN_CHECKS = {
    "ccdockerd.service": NETWORK | {
        "SystemCallFilter=~@privileged",  # chown() for the workspaces
        "RootDirectory=/RootImage=",
        "User=/DynamicUser=",  # root: transient units of the system manager, rootful podman's socket
        "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",  # emptying the workspaces' trees
        "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",  # handing a workspace to the session user
        "RestrictAddressFamilies=~AF_UNIX",  # the bus, podman, journald, the channel sockets
        "ProtectHome=",  # read-only: host workspaces may lie below /home
        "ProtectProc=",  # sd-bus reads callers' /proc/PID
        "ProcSubset=",
        "PrivateUsers=",
        "DeviceAllow=",  # char-rtc:r, from ProtectClock=
    },
    "ccdocker-httpd.service": NETWORK | {
        "RootDirectory=/RootImage=",
        "RestrictAddressFamilies=~AF_UNIX",
        "DeviceAllow=",
    },
}


def analyze_root():
    """A root for systemd-analyze: this machine's unit directory (the targets, dbus.socket and
    podman.socket the units name), the shipped units over it, and the built programs where their
    ExecStart= looks for them."""
    root = tempfile.mkdtemp(prefix="ccdocker-units-root-")
    units = os.path.join(root, "usr", "lib", "systemd", "system")
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    for name in SHIPPED:
        shutil.copy(os.path.join(UNITS, name), units)
    libexec = os.path.join(root, "usr", "libexec")
    os.makedirs(libexec)
    build = sb.env("CCDOCKER_BUILD_DIR")
    for program in ("daemon/ccdockerd", "httpd/ccdocker-httpd"):
        shutil.copy(os.path.join(build, program), libexec)
    return root


def exec_start_program(name):
    with open(os.path.join(UNITS, name)) as f:
        return re.search(r"^ExecStart=(\S+)", f.read(), re.M).group(1)


class UnitAnalyzeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = analyze_root()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def verify(self, *names):
        return sb.run("systemd-analyze", "verify", "--man=no", f"--root={self.root}", *names, check=False)

    def test_systemd_analyze_verify_finds_nothing(self):
        # verify prints a warning for every setting it cannot parse and still exits 0: both must hold.
        p = self.verify(*SHIPPED)
        self.assertEqual((p.returncode, p.stderr, p.stdout), (0, "", ""))

    def test_verify_sees_a_missing_program(self):
        # The root is what verify checks against: without the program, the unit is an error.
        program = os.path.join(self.root, exec_start_program("ccdockerd.service").lstrip("/"))
        os.rename(program, program + ".away")
        try:
            p = self.verify("ccdockerd.service")
        finally:
            os.rename(program + ".away", program)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/usr/libexec/ccdockerd is not executable", p.stderr)

    def test_systemd_analyze_security_rates_the_services_low(self):
        for name, most in EXPOSURE_MAX.items():
            with self.subTest(unit=name):
                # --threshold takes tenths: above it the exit status is non-zero.
                p = sb.run("systemd-analyze", "security", "--offline=true", f"--root={self.root}",
                           f"--threshold={round(most * 10)}", "--no-pager", name, check=False)
                level = re.search(rf"Overall exposure level for {re.escape(name)}: ([0-9.]+)", p.stdout)
                self.assertIsNotNone(level, p.stdout[-2000:] + p.stderr)
                print(f"\n  systemd-analyze security {name}: exposure {level.group(1)} (at most {most})",
                      end=" ", flush=True)
                self.assertLessEqual(float(level.group(1)), most)
                self.assertEqual(p.returncode, 0, p.stderr)
                open_checks = set(re.findall(r"^✗ (\S+)", p.stdout, re.M))
                self.assertEqual(open_checks - OPEN_CHECKS[name], set(), "hardening given up in " + name)

    def test_ccdockerd_runs_on_the_system_bus_and_notifies(self):
        with open(os.path.join(UNITS, "ccdockerd.service")) as f:
            text = f.read()
        settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        self.assertEqual(settings["Type"], "notify")
        self.assertEqual(settings["BusName"], "org.ccdocker1")
        self.assertIn("--system", settings["ExecStart"])
        self.assertEqual(settings["NoNewPrivileges"], "yes")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShippedUnitsRunTest(unittest.TestCase):
    """The shipped ccdockerd.service, ccdocker-httpd.socket and ccdocker-httpd.service in the
    sandbox's user manager, as a machine would run them: the socket activates the HTTP service,
    whose Wants= starts the daemon. The drop-ins change only what a user manager on this machine
    needs: the built programs in --user mode (on the session bus) instead of /usr/libexec on the
    system bus, the sandbox's podman socket and the idle session command in the daemon's
    configuration, no User= (a user manager cannot switch users, and the ccdocker-httpd user is
    not made here), a free loopback port instead of 8080 (sandboxes run side by side), and bind
    mounts of the sandbox's sockets, which live under /var/tmp here, and of the build directory
    (a checkout may live under /tmp), where PrivateTmp= would hide them. Every sandboxing setting of the shipped units stays."""

    SOCKET, SERVICE, DAEMON = "ccdocker-httpd.socket", "ccdocker-httpd.service", "ccdockerd.service"

    @classmethod
    def setUpClass(cls):
        cls.unit_dir = sb.systemctl("show", "-p", "UnitPath", "--value").stdout.split()[0]
        run_dir = sb.env("CCDOCKER_RUN_DIR")
        build = sb.env("CCDOCKER_BUILD_DIR")
        bus = os.environ["DBUS_SESSION_BUS_ADDRESS"].split("=", 1)[1]
        podman = sb.env("CCDOCKER_PODMAN_SOCKET")
        # Type=notify's socket, which the manager names in $NOTIFY_SOCKET.
        notify = os.path.join(sb.env("XDG_RUNTIME_DIR"), "systemd", "notify")
        cls.work = tempfile.mkdtemp(prefix="units-run-", dir=run_dir)
        # What StateDirectory=ccdocker is in this user manager: systemd 252 puts a user unit's state
        # directory under $XDG_CONFIG_HOME. ccdockerd --user would pick $XDG_STATE_HOME/ccdocker,
        # so the configuration names the unit's.
        manager_env = dict(line.split("=", 1) for line in sb.systemctl("show-environment").stdout.splitlines())
        config_home = manager_env.get("XDG_CONFIG_HOME") or os.path.join(manager_env["HOME"], ".config")
        cls.daemon_state = os.path.join(config_home, "ccdocker")
        cls.httpd_state = os.path.join(config_home, "ccdocker-httpd")  # made by StateDirectory=, unused
        shutil.rmtree(cls.daemon_state, ignore_errors=True)
        cls.port = free_port()
        cls.installed = []
        for name in (cls.SOCKET, cls.SERVICE, cls.DAEMON):
            shutil.copy(os.path.join(UNITS, name), cls.unit_dir)
            cls.installed.append(os.path.join(cls.unit_dir, name))
        conf = os.path.join(cls.work, "ccdockerd.conf")
        with open(conf, "w") as f:
            f.write("[ccdockerd]\n"
                    f"StateDirectory={cls.daemon_state}\n"
                    f"PodmanSocket={podman}\n"
                    f"DefaultImage={os.environ.get('CCDOCKER_SESSION_IMAGE', 'localhost/ccdocker-session:dev')}\n"
                    f"SessionCommand={sb.TEST_SESSION_COMMAND}\n"
                    "StopTimeoutSec=5\n")
        cls.dropin(cls.SOCKET, "[Socket]", "ListenStream=", f"ListenStream=127.0.0.1:{cls.port}")
        cls.dropin(cls.SERVICE, "[Service]", "ExecStart=",
                   f"ExecStart={build}/httpd/ccdocker-httpd --user --tokens={cls.work}/tokens.db",
                   "User=", "Group=", f"BindReadOnlyPaths={bus} {notify} {build}", f"BindPaths={cls.work}")
        cls.dropin(cls.DAEMON, "[Service]", "ExecStart=",
                   f"ExecStart={build}/daemon/ccdockerd --user --config={conf}",
                   f"BindReadOnlyPaths={bus} {notify} {podman} {cls.work} {build}")
        sb.systemctl("daemon-reload")
        sb.sandbox_daemon_aside()  # the shipped unit takes org.ccdocker1 on the same bus

    @classmethod
    def dropin(cls, unit, *lines):
        d = os.path.join(cls.unit_dir, unit + ".d")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "50-sandbox.conf"), "w") as f:
            f.write("# written by tests/integration/test_units.py\n" + "\n".join(lines) + "\n")
        cls.installed.append(d)

    @classmethod
    def tearDownClass(cls):
        units = (cls.SOCKET, cls.SERVICE, cls.DAEMON)
        sb.systemctl("stop", *units, check=False)
        sb.systemctl("reset-failed", *units, check=False)
        for path in cls.installed:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        sb.systemctl("daemon-reload")
        shutil.rmtree(cls.work, ignore_errors=True)
        shutil.rmtree(cls.daemon_state, ignore_errors=True)
        shutil.rmtree(cls.httpd_state, ignore_errors=True)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def kernel_status(self, pid):
        with open(f"/proc/{pid}/status") as f:
            return {k: v.strip() for k, v in (line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)}

    def exposure(self, unit):
        p = sb.run("systemd-analyze", "security", "--user", "--no-pager", unit, check=False)
        level = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", p.stdout)
        self.assertIsNotNone(level, p.stdout[-2000:] + p.stderr)
        print(f"\n  {unit} running in the sandbox's user manager: exposure {level.group(1)}", end=" ", flush=True)
        return float(level.group(1))

    def test_socket_activates_httpd_which_starts_ccdockerd_and_both_answer(self):
        self.addCleanup(sb.systemctl, "stop", self.SOCKET, self.SERVICE, self.DAEMON, check=False)
        sb.systemctl("start", self.SOCKET)
        show = sb.unit_show(self.SOCKET, "ActiveState", "Listen")
        self.assertEqual(show["ActiveState"], "active", show)
        self.assertIn(f"127.0.0.1:{self.port}", show["Listen"])
        # Nothing runs until a client connects: the connection starts the service, and the service
        # pulls in the daemon (Wants=ccdockerd.service), which the answer reaches over the bus.
        self.assertEqual(sb.unit_show(self.SERVICE, "ActiveState")["ActiveState"], "inactive")
        self.assertEqual(sb.unit_show(self.DAEMON, "ActiveState")["ActiveState"], "inactive")
        status, health = self.get("/health")
        self.assertEqual((status, health.get("status"), health.get("daemon_version")), (200, "ok", health["version"]),
                         health)

        httpd = sb.unit_show(self.SERVICE, "ActiveState", "SubState", "MainPID", "TriggeredBy")
        self.assertEqual((httpd["ActiveState"], httpd["SubState"]), ("active", "running"), httpd)
        self.assertIn(self.SOCKET, httpd["TriggeredBy"])
        daemon = sb.unit_show(self.DAEMON, "ActiveState", "SubState", "MainPID", "StatusText")
        self.assertEqual((daemon["ActiveState"], daemon["SubState"]), ("active", "running"), daemon)

        # The sandboxing as the kernel applied it to the running programs: no new privileges, a
        # seccomp filter, and the shipped capability bounding sets (none for the HTTP service;
        # CAP_CHOWN, CAP_DAC_OVERRIDE and CAP_FOWNER for the daemon: bits 0, 1 and 3).
        for unit, pid, cap_bnd in ((self.SERVICE, httpd["MainPID"], 0), (self.DAEMON, daemon["MainPID"], 0b1011)):
            with self.subTest(unit=unit):
                st = self.kernel_status(int(pid))
                self.assertEqual((st["NoNewPrivs"], st["Seccomp"], int(st["CapBnd"], 16)), ("1", "2", cap_bnd))
        # A read-only /usr, and the private /tmp of each: a file in the host's /tmp is not in theirs
        # (their /tmp may hold the mount point of the build directory bound in, when the checkout
        # lives under /tmp).
        marker = tempfile.NamedTemporaryFile(prefix="ccdocker-units-probe-", dir="/tmp")
        self.addCleanup(marker.close)
        for pid in (httpd["MainPID"], daemon["MainPID"]):
            probe = sb.run("nsenter", "-t", str(pid), "-m", "sh", "-c",
                           "if touch /usr/.ccdocker-probe 2>/dev/null; then rm -f /usr/.ccdocker-probe; echo writable; "
                           f"else echo read-only; fi; if [ -e {marker.name} ]; then echo shared; else echo private; fi")
            self.assertEqual(probe.stdout.split(), ["read-only", "private"],
                             f"pid {pid}: /usr writable or /tmp not private")

        # The daemon under the shipped sandbox does its work: a session comes up and stops.
        sid, path = sb.create_session()
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)
        self.assertEqual(sb.wait_state(path, "idle", "failed"), "idle", sb.session_prop(path, "StateReason"))
        self.assertTrue(sb.session_prop(path, "Workspace").startswith(self.daemon_state + "/"))
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed"), "stopped")

        # systemd's rating of the units as loaded and running here (as root: User= is dropped). The
        # daemon's is 1.0 above the HTTP service's bound for the network it has (EXPOSURE_MAX above).
        for unit, most in ((self.SERVICE, 2.0), (self.DAEMON, 2.5)):
            self.assertLessEqual(self.exposure(unit), most)


if __name__ == "__main__":
    unittest.main()

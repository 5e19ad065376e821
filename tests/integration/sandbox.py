"""Helpers for integration tests that run inside the sandbox of tools/ccdocker-dev.

Everything here talks to the real thing: the contained systemd user manager (systemctl,
systemd-run), the podman REST service (libpod over its unix socket), journald's files, Redis,
and the scripted model server of tests/fixtures. Tests get their environment from
`tools/ccdocker-dev exec` (or `test`), which exports the variables read below.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

SRC = os.environ.get("CCDOCKER_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(SRC, "tests", "fixtures")
PYTHON = "/usr/bin/python3"


def env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the tests through 'tools/ccdocker-dev test' or 'exec'")
    return value


def run(*argv, check=True, timeout=120, input=None):
    """Runs a command, returns CompletedProcess with text output; raises with its stderr."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def wait_until(predicate, timeout=30.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------
# libpod REST


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("d", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Podman:
    """A small libpod REST client (the same API the daemon speaks)."""

    def __init__(self, socket_path=None):
        self.socket_path = socket_path or env("CCDOCKER_PODMAN_SOCKET")

    def request(self, method, path, body=None, timeout=60):
        conn = _UnixConnection(self.socket_path, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, "/v4.0.0/libpod" + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, raw
        finally:
            conn.close()

    def json(self, method, path, body=None, ok=(200, 201, 204)):
        status, raw = self.request(method, path, body)
        if status not in ok:
            raise AssertionError(f"libpod {method} {path}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def create(self, spec):
        return self.json("POST", "/containers/create", spec)["Id"]

    def inspect(self, name):
        return self.json("GET", f"/containers/{name}/json")

    def exists(self, name):
        status, _ = self.request("GET", f"/containers/{name}/exists")
        return status == 204

    def remove(self, name):
        status, raw = self.request("DELETE", f"/containers/{name}?force=true&v=true&timeout=5")
        if status not in (200, 404):
            raise AssertionError(f"removing container {name}: HTTP {status}: {raw[:300]!r}")

    def logs(self, name):
        """stdout of a container without a tty, from the multiplexed log stream."""
        status, raw = self.request("GET", f"/containers/{name}/logs?stdout=true&stderr=false")
        if status != 200:
            raise AssertionError(f"logs of {name}: HTTP {status}")
        out = bytearray()
        i = 0
        while i + 8 <= len(raw):
            size = int.from_bytes(raw[i + 4:i + 8], "big")
            if raw[i] == 1:
                out += raw[i + 8:i + 8 + size]
            i += 8 + size
        return out.decode("utf-8", "replace")


def session_container_spec(name, command, *, network="none", mounts=(), env_vars=None, memory=None):
    """A container spec with the hardening of SPEC.md 9.4, in podman's split cgroup mode so
    that `podman start` inside a transient unit puts the payload in the unit's cgroup."""
    spec = {
        "name": name,
        "image": os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev"),
        "command": list(command),
        "user": "1000:1000",
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "cgroups_mode": "split",
        "netns": {"nsmode": network},
        "mounts": [
            {"type": "bind", "source": src, "destination": dst, "options": ["rbind", opt]}
            for (src, dst, opt) in mounts
        ],
        "env": dict(env_vars or {}),
        "labels": {"org.ccdocker.test": "1"},
    }
    if memory:
        spec["resource_limits"] = {"memory": {"limit": memory, "swap": memory}}
    return spec


# ---------------------------------------------------------------------------------------------
# the contained systemd user manager


def systemctl(*args, check=True):
    return run("systemctl", "--user", "--no-pager", *args, check=check)


def unit_show(unit, *props):
    out = systemctl("show", unit, "-p", ",".join(props)).stdout
    values = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        values[k] = v
    return values


def start_container_unit(unit, container, *, wait=False, props=(), remove_on_stop=True):
    """Runs `podman start --attach CONTAINER` as the transient unit UNIT (the shape of a session,
    see docs/sandbox.md); `props` are extra unit properties like MemoryMax=64M. With
    remove_on_stop the unit removes the container when it stops (ExecStopPost)."""
    argv = ["systemd-run", "--user", f"--unit={unit}", "--collect", "-p", "Delegate=yes", "-p", "Type=exec",
            "-p", "KillMode=mixed", "-p", "OOMPolicy=stop", "-p", "TimeoutStopSec=15"]
    if remove_on_stop:
        argv += ["-p", f"ExecStopPost=-/usr/bin/podman rm --force --ignore --time 0 {container}"]
    for p in props:
        argv += ["-p", p]
    if wait:
        argv.append("--wait")
    argv += ["/usr/bin/podman", "start", "--attach", container]
    return run(*argv, check=False, timeout=600)


def stop_unit(unit):
    systemctl("stop", unit, check=False)
    systemctl("reset-failed", unit, check=False)


def sandbox_cgroup_path(hierarchy, unit_cgroup):
    """The host path of a unit's cgroup (ControlGroup is relative to the manager's namespace)."""
    return os.path.join("/sys/fs/cgroup", hierarchy, env("CCDOCKER_SANDBOX_CGROUP"), "manager",
                        unit_cgroup.lstrip("/"))


def proc_cgroups(pid):
    """{hierarchy-name: path} of a process, as the host sees it."""
    result = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in (controllers or "unified").split(","):
                result[c.replace("name=", "")] = path
    return result


def journal(*matches, output="json"):
    """Records of the sandbox's journald, oldest first."""
    out = run("journalctl", "-D", env("CCDOCKER_JOURNAL_DIR"), "--no-pager", "-o", output, *matches,
              check=False).stdout
    if output != "json":
        return out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# the scripted model


class ScriptedModel:
    """The scripted Anthropic Messages API of tests/fixtures, on a loopback port."""

    def __init__(self, script):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-model-")
        self.script_path = os.path.join(self.dir, "script.json")
        self.log_path = os.path.join(self.dir, "requests.jsonl")
        port_file = os.path.join(self.dir, "port")
        with open(self.script_path, "w") as f:
            json.dump(script, f)
        with open(os.path.join(self.dir, "stderr"), "w") as stderr:
            self.proc = subprocess.Popen(
                [PYTHON, os.path.join(FIXTURES, "scripted-model.py"), "--script", self.script_path,
                 "--log", self.log_path, "--port", "0", "--port-file", port_file],
                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_until(lambda: os.path.exists(port_file) or self.proc.poll() is not None, 15,
                       what="the scripted model to listen")
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "stderr")) as f:
                    raise AssertionError(f"scripted model exited: {f.read()}")
            with open(port_file) as f:
                self.port = int(f.read().strip())
        except BaseException:
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{self.port}"

    def requests(self, main_only=True):
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [r for r in records if not (main_only and r.get("side_call"))]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Claude Code in a session container


def claude_workspace(mcp_servers=None, allow=()):
    """A host directory to bind-mount as /workspace, owned by the container's uid 1000, with a
    project .mcp.json and .claude/settings.json that approve the given servers and tools."""
    ws = tempfile.mkdtemp(prefix="ccdocker-ws-")
    os.makedirs(os.path.join(ws, ".claude"))
    if mcp_servers:
        with open(os.path.join(ws, ".mcp.json"), "w") as f:
            json.dump({"mcpServers": mcp_servers}, f)
    settings = {"enableAllProjectMcpServers": True, "permissions": {"allow": list(allow)}}
    with open(os.path.join(ws, ".claude", "settings.json"), "w") as f:
        json.dump(settings, f)
    for root, dirs, files in os.walk(ws):
        for n in dirs + files:
            os.chown(os.path.join(root, n), 1000, 1000)
    os.chown(ws, 1000, 1000)
    return ws


def claude_command(prompt, *extra):
    """The container command: seed ~/.claude.json (onboarding done and /workspace trusted, as
    headless use needs: an untrusted project's permissions.allow is ignored), then run the real
    CLI with stream-json output."""
    state = json.dumps({"hasCompletedOnboarding": True,
                        "projects": {"/workspace": {"hasTrustDialogAccepted": True}}})
    seed = f"printf '%s' '{state}' > \"$HOME/.claude.json\" && exec claude \"$@\""
    return ["sh", "-c", seed, "claude", "-p", prompt, "--output-format", "stream-json", "--verbose", *extra]


def claude_env(model):
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "sk-test-not-a-secret",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "ENABLE_TOOL_SEARCH": "false",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def stream_events(text):
    """The stream-json lines of a Claude Code run, parsed; other lines are ignored."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return events


# ---------------------------------------------------------------------------------------------
# ccdockerd in the sandbox

# What test sessions run until ccdocker-init exists: a shell that acts on $CCDOCKER_TEST (set through
# CreateSession's environment): "oom" allocates past any limit, "exitN" exits with N, anything else
# says hello, then idles and exits 0 on SIGTERM.
TEST_SESSION_COMMAND = (
    "sh -c 'case \"$CCDOCKER_TEST\" in "
    "oom) exec python3 -c \"b = bytearray(1 << 31)\";; "
    "exit*) exit \"${CCDOCKER_TEST#exit}\";; "
    "esac; echo \"session $CCDOCKER_SESSION_ID up\"; trap \"exit 0\" TERM; "
    "while :; do sleep 0.2; done'")


def sandbox_daemon_aside():
    """Stops the sandbox's own ccdockerd --user (tools/ccdocker-dev up starts it for people to play
    with), which holds org.ccdocker1 on the session bus that a test's own daemon needs; `up` starts
    it again. Its PID file goes too, so that down never signals a PID that is no longer its."""
    unit = os.environ.get("CCDOCKER_SANDBOX_DAEMON_UNIT")
    if unit and systemctl("is-active", unit, check=False).stdout.strip() in ("active", "activating", "reloading"):
        systemctl("stop", unit, check=False)
        try:
            os.unlink(os.path.join(env("CCDOCKER_RUN_DIR"), "pids", "daemon.pid"))
        except FileNotFoundError:
            pass


class Daemon:
    """ccdockerd run as a transient unit of the sandbox's user manager, so that it can be killed
    and restarted like the real service."""

    def __init__(self, unit="ccdockerd-test.service", mode="--user", settings=None, extra_env=None, props=()):
        self.unit = unit
        self.mode = mode
        self.state_dir = os.path.join(env("CCDOCKER_RUN_DIR"), "ccdockerd-" + unit.split(".")[0])
        self.settings = {
            "StateDirectory": self.state_dir,
            "PodmanSocket": env("CCDOCKER_PODMAN_SOCKET"),
            "DefaultImage": os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev"),
            "SessionCommand": TEST_SESSION_COMMAND,
            "StopTimeoutSec": "5",
        }
        self.settings.update(settings or {})
        self.extra_env = dict(extra_env or {})
        self.props = list(props)  # more unit properties, e.g. "SetCredential=NAME:value"
        self.binary = os.path.join(env("CCDOCKER_BUILD_DIR"), "daemon", "ccdockerd")

    def start(self):
        if self.mode == "--user":
            sandbox_daemon_aside()
        systemctl("reset-failed", self.unit, check=False)
        # The settings go through a configuration file: systemd expands $VARIABLES in ExecStart
        # arguments, which would mangle the session command.
        os.makedirs(self.state_dir, exist_ok=True)
        conf = os.path.join(self.state_dir, "ccdockerd.conf")
        with open(conf, "w") as f:
            f.write("# written by tests/integration/sandbox.py\n[ccdockerd]\n")
            for k, v in self.settings.items():
                f.write(f"{k}={v}\n")
        argv = ["systemd-run", "--user", f"--unit={self.unit}", "-p", "Type=notify", "-p", "NotifyAccess=main",
                "-p", "KillMode=process"]
        for k, v in self.extra_env.items():
            argv.append(f"--setenv={k}={v}")
        for p in self.props:
            argv += ["-p", p]
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                argv.append(f"--setenv={k}={os.environ[k]}")
        argv += [self.binary, self.mode, "--log-level=debug", f"--config={conf}"]
        p = run(*argv, check=False, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"ccdockerd did not start: {p.stderr.strip()}\n{self.log()[-3000:]}")
        return self

    def main_pid(self):
        return int(unit_show(self.unit, "MainPID")["MainPID"])

    def kill9(self):
        pid = self.main_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="ccdockerd to die")
        wait_until(lambda: systemctl("is-active", self.unit, check=False).stdout.strip() != "active", 10,
                   what="the daemon unit to end")

    def stop(self):
        """Stops the daemon and checks that it exited cleanly (under ASan: no error, no leak)."""
        systemctl("stop", self.unit, check=False)
        show = unit_show(self.unit, "Result", "ExecMainStatus", "LoadState")
        systemctl("reset-failed", self.unit, check=False)
        if show.get("LoadState") == "loaded" and show.get("Result") not in ("success", ""):
            raise AssertionError(f"ccdockerd exited badly (Result={show.get('Result')}, status "
                                 f"{show.get('ExecMainStatus')}):\n{self.log()[-4000:]}")

    def log(self):
        return journal(f"_SYSTEMD_UNIT={self.unit}", output="cat")


def busctl(*args, check=True, bus="--user"):
    return run("busctl", bus, "--json=short", *args, check=check, timeout=60)


def create_session(*config, bus="--user"):
    """CreateSession with config as busctl a{sv} words, e.g. ("memory", "s", "256M")."""
    n = 0
    words = []
    it = iter(config)
    for key, sig in zip(it, it):
        n += 1
        words += [key, sig]
        if sig == "a{ss}":
            pairs = next(it)
            words.append(str(len(pairs)))
            for k, v in pairs.items():
                words += [k, v]
        elif sig == "as":
            items = list(next(it))
            words += [str(len(items)), *items]
        else:
            words.append(str(next(it)))
    p = busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession", "a{sv}",
               str(n), *words, bus=bus)
    sid, path = json.loads(p.stdout)["data"]
    return sid, path


def session_prop(path, prop, bus="--user"):
    p = busctl("get-property", "org.ccdocker1", path, "org.ccdocker1.Session", prop, bus=bus)
    return json.loads(p.stdout)["data"]


def wait_state(path, *states, timeout=60, bus="--user"):
    def probe():
        state = session_prop(path, "State", bus=bus)
        return state if state in states else None
    return wait_until(probe, timeout, 0.2, what=f"session {path} to reach {'/'.join(states)}")

"""Secrets (SPEC.md 6, DESIGN.md decision 10): the daemon reads them from systemd credentials and
CC_SECRET_* variables, a session asks for them by name, only the allowed ones are granted, a granted
one reaches the container as an environment variable from a podman secret and nowhere else (not the
journal, the store, D-Bus, `podman inspect`), it is removed with the session, a child gets only
secrets its parent holds, and the conditional MCP servers follow their secrets."""

import glob
import json
import os
import shutil
import socket
import subprocess
import unittest

import sandbox as sb

API_VALUE = "tok-api-5c1e2d7f-redact-me"
GH_VALUE = "ghp_testvalue_0f3a9b81c2"
CRED_VALUE = "cred-db-pw-77aa1e"
DAEMON = None
RUNTIME = None


def setUpModule():
    global DAEMON, RUNTIME
    RUNTIME = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-secrets-runtime")
    # systemd's LoadCredential= hands a service $CREDENTIALS_DIRECTORY. The sandbox's user manager
    # (systemd 252, not PID 1) makes the directory but leaves it empty, so the test makes one itself
    # and hands it over the same way: the daemon cannot tell the difference.
    creds = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-secrets-credentials")
    shutil.rmtree(creds, ignore_errors=True)
    os.makedirs(creds, mode=0o700)
    with open(os.path.join(creds, "DB_PASSWORD"), "w") as f:
        f.write(CRED_VALUE + "\n")
    with open(os.path.join(creds, "bad-name"), "w") as f:
        f.write("ignored\n")
    DAEMON = sb.Daemon(unit="ccdockerd-secrets-test.service", settings={
        "RuntimeDirectory": RUNTIME,
        "MaxMemory": "1G",
        "DefaultMemory": "256M",
        "HeartbeatTimeoutSec": "0",
        "AllowedSecrets": "API_TOKEN GITHUB_TOKEN DB_PASSWORD",
    }, extra_env={
        "CC_SECRET_API_TOKEN": API_VALUE,
        "CC_SECRET_GITHUB_TOKEN": GH_VALUE,
        "CC_SECRET_NOT_ALLOWED": "never-granted-9911",
        "CREDENTIALS_DIRECTORY": creds,
    })
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def podman_cli(*args, check=True):
    return sb.run("podman", *args, check=check, timeout=60)


class Channel:
    def __init__(self, sid):
        path = os.path.join(RUNTIME, "sessions", sid, "session.sock")
        sb.wait_until(lambda: os.path.exists(path), 30, what="the channel socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(60)
        self.f = self.sock.makefile("rb")
        self.n = 0
        self.hello = self.call("hello", {"role": "mcp", "protocol": 1})["result"]

    def call(self, method, params):
        self.n += 1
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method,
                                      "params": params}).encode() + b"\n")
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("id") == self.n:
                return msg

    def close(self):
        self.f.close()
        self.sock.close()


class SecretsTest(unittest.TestCase):
    def create(self, *secrets, check=True):
        words = ["memory", "s", "256M"]
        if secrets:
            words += ["secrets", "as", str(len(secrets)), *secrets]
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession",
                      "a{sv}", str(len(words) // 3 if not secrets else 2), *words, check=check)
        if not check:
            return p
        sid, path = json.loads(p.stdout)["data"]
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        sb.wait_state(path, "idle", "running")
        return sid, path

    def secret_in(self, sid, name):
        """The secret file the container has for name, or None. (The idle test command runs no
        ccdocker-init; SecretsInitTest checks the environment init gives claude.)"""
        # The unit is active once `podman start` runs; the container may be a moment behind it.
        podman = sb.Podman()
        sb.wait_until(lambda: podman.inspect(f"ccdocker-{sid}")["State"]["Running"], 30,
                      what=f"container ccdocker-{sid} to run")
        p = podman_cli("exec", f"ccdocker-{sid}", "cat", f"/run/ccdocker-secrets/{name}", check=False)
        return p.stdout if p.returncode == 0 else None

    def assert_nowhere(self, *values):
        """None of values in the daemon's journal, its store, or the sessions' D-Bus properties."""
        log = DAEMON.log()
        everything = sb.journal(output="cat")
        for v in values:
            self.assertNotIn(v, log)
            self.assertNotIn(v, everything)
        for f in glob.glob(os.path.join(DAEMON.state_dir, "ccdockerd.db*")):
            with open(f, "rb") as fh:
                data = fh.read()
            for v in values:
                self.assertNotIn(v.encode(), data, f)
        listed = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                      "ListSessions").stdout)["data"][0]
        for _id, _parent, _state, _unit, _created, path in listed:
            props = sb.busctl("call", "org.ccdocker1", path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                              "org.ccdocker1.Session").stdout
            for v in values:
                self.assertNotIn(v, props)

    def test_granted_secret_reaches_the_container_and_nothing_else(self):
        sid, path = self.create("API_TOKEN", "DB_PASSWORD")
        self.assertEqual(self.secret_in(sid, "API_TOKEN"), API_VALUE)
        self.assertEqual(self.secret_in(sid, "DB_PASSWORD"), CRED_VALUE)  # from a systemd credential
        self.assertIsNone(self.secret_in(sid, "GITHUB_TOKEN"))
        mode = podman_cli("exec", f"ccdocker-{sid}", "stat", "-c", "%a %u", "/run/ccdocker-secrets/API_TOKEN").stdout
        self.assertEqual(mode.strip(), "400 1000")
        self.assertNotIn("CC_SECRET", podman_cli("exec", f"ccdocker-{sid}", "env").stdout)

        inspect = podman_cli("inspect", f"ccdocker-{sid}").stdout
        self.assertNotIn(API_VALUE, inspect)
        self.assertNotIn(CRED_VALUE, inspect)
        self.assertIn(f"ccdocker-{sid}-API_TOKEN", inspect)  # by name only
        self.assert_nowhere(API_VALUE, CRED_VALUE, GH_VALUE)
        # The daemon wiped the values from its environment block.
        with open(f"/proc/{DAEMON.main_pid()}/environ", "rb") as f:
            environ = f.read()
        self.assertNotIn(API_VALUE.encode(), environ)
        self.assertNotIn(GH_VALUE.encode(), environ)

        # The podman secrets go with the session.
        podman = sb.Podman()
        self.assertEqual(podman.request("GET", f"/secrets/ccdocker-{sid}-API_TOKEN/json")[0], 200)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false")
        sb.wait_state(path, "stopped")
        sb.wait_until(lambda: podman.request("GET", f"/secrets/ccdocker-{sid}-API_TOKEN/json")[0] == 404, 30,
                      what="the podman secret to be removed")
        self.assertEqual(podman.request("GET", f"/secrets/ccdocker-{sid}-DB_PASSWORD/json")[0], 404)

    def test_ccdockerctl_create_secret(self):
        ctl = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl")
        sid = sb.run(ctl, "--user", "create", "--memory", "256M", "--secret", "API_TOKEN",
                     "--allow-host", "example.invalid:443").stdout.strip()
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", sid)
        path = json.loads(p.stdout)["data"][0]
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        sb.wait_state(path, "idle", "running")
        self.assertEqual(self.secret_in(sid, "API_TOKEN"), API_VALUE)
        bad = sb.run(ctl, "--user", "create", "--secret", "NOT_ALLOWED", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("secret 'NOT_ALLOWED' may not be used", bad.stderr)

    def test_refused_secrets_are_named_and_create_nothing(self):
        before = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                      "ListSessions").stdout)["data"][0]
        p = self.create("NOT_ALLOWED", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("secret 'NOT_ALLOWED' may not be used", p.stderr)
        self.assertIn("AllowedSecrets", p.stderr)
        p = self.create("NO_SUCH_THING", check=False)
        self.assertIn("no secret 'NO_SUCH_THING' is configured", p.stderr)
        p = self.create("bad-name", check=False)
        self.assertIn("secret names must match", p.stderr)
        after = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                     "ListSessions").stdout)["data"][0]
        self.assertEqual(len(after), len(before))
        self.assert_nowhere("never-granted-9911")

    def test_child_gets_only_what_its_parent_holds(self):
        sid, _ = self.create("API_TOKEN")
        ch = Channel(sid)
        self.addCleanup(ch.close)
        self.assertEqual(ch.hello["config"]["secrets"], ["API_TOKEN"])

        refused = ch.call("child.spawn", {"prompt": "x", "secrets": ["GITHUB_TOKEN"]})
        self.assertEqual(refused["error"]["code"], -32001)
        self.assertIn("cannot give secret 'GITHUB_TOKEN'", refused["error"]["message"])

        with_secret = ch.call("child.spawn", {"prompt": "x", "secrets": ["API_TOKEN"]})["result"]["child_session_id"]
        without = ch.call("child.spawn", {"prompt": "y"})["result"]["child_session_id"]
        for cid in (with_secret, without):
            p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", cid)
            sb.wait_state(json.loads(p.stdout)["data"][0], "idle", "running")
        self.assertEqual(self.secret_in(with_secret, "API_TOKEN"), API_VALUE)
        self.assertIsNone(self.secret_in(without, "API_TOKEN"))
        self.assert_nowhere(API_VALUE)

    def test_spawn_child_tool_passes_secrets_it_may(self):
        """ccdocker-mcp's spawn_child takes secrets, and the daemon refuses one the session lacks."""
        sid, _ = self.create("API_TOKEN")
        sock = os.path.join(RUNTIME, "sessions", sid, "session.sock")
        mcp = subprocess.Popen([os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "mcp", "ccdocker-mcp")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env={**os.environ, "CCDOCKER_CHANNEL_SOCKET": sock})
        self.addCleanup(mcp.stdout.close)
        self.addCleanup(mcp.wait, 30)
        self.addCleanup(mcp.stdin.close)

        def rpc(i, method, params):
            mcp.stdin.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
                             + "\n").encode())
            mcp.stdin.flush()
            while True:
                msg = json.loads(mcp.stdout.readline())
                if msg.get("id") == i:
                    return msg["result"]
        rpc(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "test", "version": "1"}})
        refused = rpc(2, "tools/call", {"name": "spawn_child",
                                        "arguments": {"prompt": "x", "secrets": ["GITHUB_TOKEN"]}})
        self.assertTrue(refused["isError"])
        self.assertIn("cannot give secret 'GITHUB_TOKEN'", refused["content"][0]["text"])
        given = rpc(3, "tools/call", {"name": "spawn_child", "arguments": {"prompt": "y", "secrets": ["API_TOKEN"]}})
        self.assertFalse(given.get("isError"), given)
        cid = given["structuredContent"]["child_session_id"]
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", cid)
        sb.wait_state(json.loads(p.stdout)["data"][0], "idle", "running")
        self.assertEqual(self.secret_in(cid, "API_TOKEN"), API_VALUE)

    def test_conditional_mcp_servers_follow_their_secrets(self):
        with_gh, _ = self.create("GITHUB_TOKEN")
        without, _ = self.create("API_TOKEN")
        a, b = Channel(with_gh), Channel(without)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual(a.hello["config"]["mcp_servers"], ["cc-docker", "github"])
        self.assertEqual(b.hello["config"]["mcp_servers"], ["cc-docker"])


class SecretsInitTest(unittest.TestCase):
    """With ccdocker-init as the entrypoint: the generated .mcp.json has the github server exactly when
    GITHUB_TOKEN was granted, and never the token's value (the daemon adds it, test_mcp_remote.py)."""

    def test_mcp_json(self):
        saved = DAEMON.settings.pop("SessionCommand")
        self.addCleanup(DAEMON.settings.__setitem__, "SessionCommand", saved)
        DAEMON.stop()
        DAEMON.start()
        self.addCleanup(lambda: (DAEMON.stop(), DAEMON.start()))

        def session(*secrets):
            """.mcp.json and the environment of the claude that init started."""
            words = ["memory", "s", "512M"] + (["secrets", "as", str(len(secrets)), *secrets] if secrets else [])
            p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession",
                          "a{sv}", "2" if secrets else "1", *words)
            sid, path = json.loads(p.stdout)["data"]
            self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b",
                            "true", check=False)
            ws = sb.session_prop(path, "Workspace")
            mcp = os.path.join(ws, ".mcp.json")
            sb.wait_until(lambda: os.path.exists(mcp), 60, what=f"{mcp}")
            with open(mcp) as f:
                text = f.read()

            def claude_env():
                p = podman_cli("exec", f"ccdocker-{sid}", "sh", "-c",
                               "cat /proc/$(pgrep -x claude | head -n1)/environ", check=False)
                return p.stdout if p.returncode == 0 and p.stdout else None
            env = sb.wait_until(claude_env, 60, what="claude to run")
            return text, dict(e.split("=", 1) for e in env.split("\0") if "=" in e)

        with_gh, env_gh = session("GITHUB_TOKEN", "API_TOKEN")
        without, env_without = session()
        # GITHUB_TOKEN stays in the daemon, which adds it to the github server's requests (issue 16,
        # test_mcp_remote.py): .mcp.json points github at the loopback bridge, with no header.
        self.assertNotIn("GITHUB_TOKEN", env_gh)
        self.assertEqual(env_gh.get("API_TOKEN"), API_VALUE)
        self.assertNotIn("GITHUB_TOKEN", env_without)
        self.assertNotIn("API_TOKEN", env_without)
        self.assertIn('"github"', with_gh)
        self.assertRegex(json.loads(with_gh)["mcpServers"]["github"]["url"], r"^http://127\.0\.0\.1:\d+/github$")
        self.assertNotIn(GH_VALUE, with_gh)
        self.assertNotIn('"github"', without)
        self.assertIn('"cc-docker"', without)


if __name__ == "__main__":
    unittest.main()

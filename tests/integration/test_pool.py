"""The warm pool (issue 18, docs/ccdockerd.md "The warm pool"): with PoolSize=1 the daemon keeps one
session of the default configuration started, with the real ccdocker-init and Claude Code CLI, and
hands it to a CreateSession it can serve. A pooled session's id, CLAUDE.md and settings, limits (read
from its unit and slice), owner and audit record are those of a cold one; a config it cannot serve
starts cold; the pool refills; its members are in no list, no quota and not in Redis; a prompt gets
its result through a pooled session, whose events reach Redis from the hand-over; a daemon stop leaves no member behind, and a daemon killed leaves none
after its restart."""

import json
import os
import shutil
import unittest

import sandbox as sb

DAEMON = None
MODEL = None
RUNTIME = None
CREATED = "a9d92449b44246168afa8e04f30b2fdf"

SCRIPT = {
    "steps": [
        {"id": "hello", "when": {"last_user_contains": "say hello"}, "reply": {"text": "hello from the pool"},
         "repeat": True},
        {"id": "again", "when": {"last_user_contains": "once more"}, "reply": {"text": "and again"},
         "repeat": True},
    ],
}


def setUpModule():
    global DAEMON, MODEL, RUNTIME
    MODEL = sb.ScriptedModel(SCRIPT)
    RUNTIME = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-pool-runtime")
    DAEMON = sb.Daemon(unit="ccdockerd-pool-test.service", settings={
        "RuntimeDirectory": RUNTIME,
        "PoolSize": "1",
        "DefaultMemory": "1G",
        "MaxMemory": "2G",
        "DefaultTasks": "256",
        "DefaultTimeoutSec": "3600",
        # Two live sessions on the host: a pool member counted among them would refuse the second.
        "MaxSessions": "2",
        "ModelUpstreamURL": MODEL.base_url,
        "HeartbeatTimeoutSec": "30",
        "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
    }, extra_env={"ANTHROPIC_API_KEY": "sk-ant-test-pool-0c2f"})
    # The image's own entrypoint: ccdocker-init and the real CLI.
    del DAEMON.settings["SessionCommand"]
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    shutil.rmtree(RUNTIME, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    MODEL.stop()


def pool_dir():
    return os.path.join(DAEMON.state_dir, "pool")


def members():
    """The ids the pool holds now: its marker files (docs/ccdockerd.md, "The warm pool")."""
    try:
        return set(os.listdir(pool_dir()))
    except FileNotFoundError:
        return set()


def claude_runs(sid):
    p = sb.run("podman", "exec", f"ccdocker-{sid}", "pgrep", "-x", "claude", check=False)
    return p.returncode == 0


def ready_member(timeout=180):
    """A member whose CLI runs (ccdocker-init starts it after its hello: the daemon can hand it over)."""
    def probe():
        for sid in members():
            if claude_runs(sid):
                return sid
        return None
    return sb.wait_until(probe, timeout, 0.3, what="a started session in the pool")


def list_ids():
    p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions")
    return {row[0] for row in json.loads(p.stdout)["data"][0]}


def redis(*args):
    return sb.run("/usr/bin/redis-cli", "-s", sb.env("CCDOCKER_REDIS_SOCKET"), *args).stdout.strip()


def in_redis(sid):
    """Whether the session's output stream exists in Redis (daemon/events-redis.c)."""
    return redis("EXISTS", f"session:{sid}:output") != "0"


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def result(path, timeout=180):
    status, text, error, usage = json.loads(call(path, "GetResult", "bu", "true", str(timeout)).stdout)["data"]
    return status, text, error


def read_in(sid, path):
    return sb.run("podman", "exec", f"ccdocker-{sid}", "cat", path).stdout


def unit_limits(sid):
    unit = sb.unit_show(f"ccdocker-session-{sid}.service", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax")
    sl = sb.unit_show(f"ccdocker-{sid}.slice", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax")
    return unit, sl


def audit_events(sid):
    return [r for r in sb.journal(f"CCDOCKER_SESSION={sid}") if r.get("MESSAGE_ID")]


def without(text, sid):
    return text.replace(sid, "SESSION-ID")


class PoolTest(unittest.TestCase):
    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(redis, "DEL", f"session:{sid}:output")
        self.addCleanup(self.stop, path)
        return sid, path

    def stop(self, path):
        call(path, "Stop", "b", "true", check=False)
        try:
            sb.wait_state(path, "stopped", "failed", timeout=60)
        except AssertionError:
            pass

    def create_cold(self, *config):
        """A session of config that the pool did not serve: created again while the pool had one
        ready would be a hand-over, which this checks did not happen."""
        for _ in range(5):
            before = members()
            sid, path = self.create(*config)
            if sid not in before:
                return sid, path
            self.stop(path)
        self.fail("every session came from the pool")

    def test_a_pooled_session_is_a_cold_one(self):
        config = ("memory", "s", "768M", "cpus", "s", "0.5", "tasks", "u", "100", "timeout_seconds", "u", "600")
        member = ready_member()
        self.assertNotIn(member, list_ids())
        sid, path = self.create(*config)
        self.assertEqual(sid, member, "the ready member was not handed over")
        sb.wait_state(path, "idle")
        self.assertIn(sid, list_ids())
        self.assertNotIn(sid, members(), "a handed-over session keeps its pool marker")
        cold, cold_path = self.create_cold(*config)
        sb.wait_state(cold_path, "idle", "running")
        sb.wait_until(lambda: claude_runs(cold), 120, 0.3, what="the cold session's CLI")
        self.assertNotEqual(sid, cold)
        self.assertRegex(sid, r"^[0-9a-f]{12}$")

        # What ccdocker-init wrote for the CLI: the same but for the id.
        for f in ("/workspace/.claude/CLAUDE.md", "/workspace/.claude/settings.json", "/workspace/.mcp.json",
                  "/home/claude/.claude/settings.json"):
            self.assertEqual(without(read_in(sid, f), sid), without(read_in(cold, f), cold), f)
        self.assertIn(f"**Session ID**: {sid}", read_in(sid, "/workspace/.claude/CLAUDE.md"))

        # The caller's limits, on the unit and on the slice (timeout_seconds: test_f).
        self.assertEqual(unit_limits(sid), unit_limits(cold))
        unit, sl = unit_limits(sid)
        self.assertEqual(unit["MemoryMax"], str(768 << 20))
        self.assertEqual(unit["TasksMax"], "100")
        self.assertEqual(sl["CPUQuotaPerSecUSec"], "500ms")

        # The owner, and the audit trail: "created" first, the same record, then the same states.
        self.assertEqual(sb.session_prop(path, "OwnerUID"), sb.session_prop(cold_path, "OwnerUID"))
        self.assertEqual(sb.session_prop(path, "Image"), sb.session_prop(cold_path, "Image"))
        mine, theirs = audit_events(sid), audit_events(cold)
        self.assertEqual(mine[0]["MESSAGE_ID"], CREATED, [r["MESSAGE"] for r in mine])
        for k in ("CALLER_UID", "UNIT", "CCDOCKER_EVENT", "PRIORITY"):
            self.assertEqual(without(mine[0].get(k, ""), sid), without(theirs[0].get(k, ""), cold), k)
        self.assertEqual(without(mine[0]["MESSAGE"], sid), without(theirs[0]["MESSAGE"], cold))
        self.assertEqual([r["MESSAGE_ID"] for r in mine], [r["MESSAGE_ID"] for r in theirs][:len(mine)])
        self.assertEqual(len([r for r in mine if r["MESSAGE_ID"] == CREATED]), 1)

    def test_b_a_prompt_through_a_pooled_session(self):
        member = ready_member()
        self.assertFalse(in_redis(member))
        sid, path = self.create("prompt", "s", "say hello")
        self.assertEqual(sid, member)
        self.assertEqual(result(path), ("completed", "hello from the pool", ""))
        # From the hand-over on its events are published as a cold session's are.
        stream = sb.wait_until(lambda: redis("XRANGE", f"session:{sid}:output", "-", "+"), 30,
                               what="the pooled session's events in Redis")
        self.assertIn("hello from the pool", stream)
        call(path, "SendPrompt", "s", "once more")
        sb.wait_until(lambda: result(path)[1] == "and again", 120, 0.3, what="the follow-up's result")

    def test_c_what_the_pool_cannot_serve_starts_cold(self):
        member = ready_member()
        for config in (("task_type", "s", "review"), ("memory", "s", "2G"), ("environment", "a{ss}", {"X": "1"})):
            sid, path = self.create(*config)
            self.assertNotEqual(sid, member, config)
            self.assertIn(member, members(), "the member was taken for a config it cannot serve")
            self.stop(path)

    def test_d_the_pool_refills(self):
        member = ready_member()
        sid, path = self.create()
        self.assertEqual(sid, member)
        nxt = ready_member()
        self.assertNotEqual(nxt, sid)

    def test_e_members_are_in_no_list_and_no_quota(self):
        member = ready_member()
        self.assertNotIn(member, list_ids())
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "GetSession", "s", member,
                      check=False)
        self.assertNotEqual(p.returncode, 0)
        # MaxSessions=2: two sessions live beside the pool's member (and its replacement); the third
        # is refused.
        a, _ = self.create()
        self.assertEqual(a, member)
        # The replacement starts a few seconds after the hand-over (docs/ccdockerd.md).
        sb.wait_until(members, 60, 0.2, what="the pool's next member")
        b, _ = self.create()
        p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession",
                      "a{sv}", "0", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("MaxSessions", p.stderr)
        # b may have taken the pool's next member: then its replacement comes a few seconds later. A
        # member is in no list, has no audit record and nothing in Redis.
        for m in sb.wait_until(members, 60, 0.2, what="a member of the pool beside a and b"):
            self.assertNotIn(m, list_ids())
            self.assertFalse(in_redis(m))
            self.assertEqual(audit_events(m), [])

    def test_f_timeout_seconds_ends_a_pooled_session_as_a_cold_one(self):
        member = ready_member()
        sid, path = self.create("timeout_seconds", "u", "4")
        self.assertEqual(sid, member)
        cold, cold_path = self.create_cold("timeout_seconds", "u", "4")
        sb.wait_state(path, "failed", timeout=120)
        sb.wait_state(cold_path, "failed", timeout=120)
        self.assertEqual(sb.session_prop(path, "StateReason"), sb.session_prop(cold_path, "StateReason"))
        self.assertIn("timeout", sb.session_prop(path, "StateReason"))
        sb.wait_until(lambda: not sb.Podman().exists(f"ccdocker-{sid}"), 60, 0.3, what="its container to go")

    def test_y_a_killed_daemon_leaves_no_member_after_its_restart(self):
        member = ready_member()
        DAEMON.kill9()
        DAEMON.start()
        sb.wait_until(lambda: not sb.Podman().exists(f"ccdocker-{member}"), 60, 0.3,
                      what="the killed daemon's pool member to be removed")
        self.assertNotIn(member, list_ids())
        self.assertNotIn(member, members())
        sb.wait_until(lambda: not os.path.exists(os.path.join(DAEMON.state_dir, "workspaces", member)), 30,
                      what="its workspace to go")
        show = sb.unit_show(f"ccdocker-session-{member}.service", "ActiveState")
        self.assertIn(show.get("ActiveState"), ("inactive", "failed", None, ""))

    def test_z_a_daemon_stop_leaves_no_member(self):
        member = ready_member()
        DAEMON.stop()
        try:
            self.assertFalse(sb.Podman().exists(f"ccdocker-{member}"), "the pool's container is left")
            show = sb.unit_show(f"ccdocker-session-{member}.service", "ActiveState", "LoadState")
            self.assertNotEqual(show.get("ActiveState"), "active", show)
            self.assertNotIn(member, members())
            self.assertFalse(os.path.exists(os.path.join(DAEMON.state_dir, "workspaces", member)))
            self.assertFalse(os.path.exists(os.path.join(RUNTIME, "sessions", member)))
        finally:
            DAEMON.start()


if __name__ == "__main__":
    unittest.main()

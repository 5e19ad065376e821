"""Sessions with no network reach the model only through the daemon's model proxy (issue 8): the real
Claude Code CLI in a --network=none container completes a turn, the scripted model sees the daemon's
credential while nothing in the container holds it, usage adds up on the session and its parent, a
tree over its budget gets an error Claude Code shows, and ten sessions started together all complete
against a model that answers bursts with 429. Issue 14: a real turn meets no endpoint the proxy refuses;
a session whose tree used its budget up is paused (BudgetExhausted), its next prompt held, and raising
the budget (ccdockerctl budget, Session.SetBudget) resumes it and the prompt is answered."""

import hashlib
import json
import os
import shutil
import unittest

import sandbox as sb

CREDENTIAL = "sk-ant-test-proxy-7f1c9e2b44d0"
DAEMON = None
MODEL = None
RUNTIME = None

SCRIPT = {
    "steps": [
        {"id": "answer", "when": {"last_user_contains": "say hello"}, "reply": {"text": "hello through the proxy"},
         "repeat": True},
        {"id": "spawn", "when": {"last_user_contains": "delegate now"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__spawn_child", "input": {"prompt": "child: say hello"}}}},
        {"id": "wait", "when": {"tool_result_for": "spawn"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__get_child_result",
                                "input": {"child_session_id": "${result:spawn.child_session_id}",
                                          "wait": True, "timeout_seconds": 120}}}},
        {"id": "done", "when": {"tool_result_for": "wait"}, "reply": {"text": "the child answered"}},
        {"id": "burst", "when": {"last_user_contains": "burst"}, "reply": {"text": "burst answered"},
         "repeat": True},
    ],
    "rate_limit": {"requests": 3, "window_ms": 1000, "retry_after": 1},
}


def setUpModule():
    global DAEMON, MODEL, RUNTIME
    MODEL = sb.ScriptedModel(SCRIPT)
    RUNTIME = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-model-runtime")
    DAEMON = sb.Daemon(unit="ccdockerd-model-test.service", settings={
        "RuntimeDirectory": RUNTIME,
        "MaxMemory": "1G",
        "DefaultMemory": "512M",
        "ModelUpstreamURL": MODEL.base_url,
        "ModelMaxInFlight": "2",
        "HeartbeatTimeoutSec": "30",
    }, extra_env={"ANTHROPIC_API_KEY": CREDENTIAL})
    # The image's own entrypoint: ccdocker-init and the real CLI.
    del DAEMON.settings["SessionCommand"]
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    MODEL.stop()


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def result(path, timeout=180):
    status, text, error, usage = json.loads(call(path, "GetResult", "bu", "true", str(timeout)).stdout)["data"]
    return status, text, error


def usage_of(path):
    return {k: v["data"] for k, v in sb.session_prop(path, "Usage").items()}


class ModelSessionTest(unittest.TestCase):
    def create(self, prompt, *extra):
        sid, path = sb.create_session("prompt", "s", prompt, *extra)
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        return sid, path

    def test_a_turn_through_the_proxy_and_no_credential_inside(self):
        sid, path = self.create("say hello")
        status, text, error = result(path)
        self.assertEqual((status, text, error), ("completed", "hello through the proxy", ""))

        # The scripted model saw the daemon's credential on every call, and the container has only a
        # placeholder: not in any process's environment, file or argument.
        want = hashlib.sha256(CREDENTIAL.encode()).hexdigest()
        records = [r for r in MODEL.requests(main_only=False) if r.get("path", "").startswith("/v1/messages")]
        self.assertTrue(records)
        self.assertEqual({json.dumps(r.get("credential_sha256"), sort_keys=True) for r in records},
                         {json.dumps({"x-api-key": want})})
        found = sb.run("podman", "exec", f"ccdocker-{sid}", "sh", "-c",
                       f"grep -rIls -- '{CREDENTIAL}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline /home /workspace "
                       "/run /tmp /etc 2>/dev/null; true").stdout
        self.assertEqual(found.strip(), "")
        self.assertEqual(sb.run("podman", "inspect", f"ccdocker-{sid}").stdout.count(CREDENTIAL), 0)
        self.assertNotIn(CREDENTIAL, DAEMON.log())
        env = sb.run("podman", "exec", f"ccdocker-{sid}", "sh", "-c",
                     "cat /proc/$(pgrep -x claude | head -n1)/environ").stdout.split("\0")
        base = [e for e in env if e.startswith("ANTHROPIC_BASE_URL=")]
        self.assertEqual(len(base), 1)
        self.assertRegex(base[0], r"^ANTHROPIC_BASE_URL=http://127\.0\.0\.1:\d+$")

        # Usage adds up to what the model reported.
        mine = [r for r in records if r["reply"] and r["reply"].get("usage")]
        u = usage_of(path)
        self.assertEqual(u["calls"], len([r for r in records if r.get("status") == 200]))
        self.assertEqual(u["input_tokens"], sum(r["reply"]["usage"]["input_tokens"] for r in mine))
        self.assertEqual(u["output_tokens"], sum(r["reply"]["usage"]["output_tokens"] for r in mine))
        self.assertGreater(u["cost_usd"], 0)

        # The CLI needs no endpoint beyond POST /v1/messages and /v1/messages/count_tokens: the proxy
        # refused nothing of this turn (and the scripted model saw nothing else).
        calls = sb.journal("MESSAGE_ID=ba83ae243ad545989d5829bdc797f1a8", f"CCDOCKER_SESSION={sid}")
        self.assertTrue(calls)
        self.assertEqual([c for c in calls if c.get("CCDOCKER_MODEL_STATUS") in ("403", "405")], [])
        self.assertEqual({r["path"].split("?")[0] for r in MODEL.requests(main_only=False)}
                         - {"/v1/messages", "/v1/messages/count_tokens"}, set())

    def test_budget_of_a_tree(self):
        """A parent with a token budget: its child's calls count against it, and once the tree is over
        it, the next call gets the proxy's error, which Claude Code shows as the turn's error."""
        sid, path = self.create("delegate now", "budget_tokens", "t", "1")
        status, text, error = result(path, timeout=240)
        # The parent's very first call already used more than one token: the budget refused the rest.
        self.assertEqual(status, "failed", (status, text, error))
        self.assertIn("budget", error)
        u = usage_of(path)
        self.assertGreaterEqual(u["tree_input_tokens"] + u["tree_output_tokens"], 1)
        self.assertGreaterEqual(u["tree_calls"], u["calls"])

    def test_batches_and_files_from_inside_the_container_are_refused(self):
        """The container, through its own model bridge, asks for Message Batches and the shared key's
        files: 403 each, naming the path, and the scripted model never sees them."""
        sid, path = self.create("say hello")
        self.assertEqual(result(path)[0], "completed")
        attack = r"""
import json, os, re, urllib.request
env = open("/proc/%s/environ" % os.popen("pgrep -x claude | head -n1").read().strip(), "rb").read().split(b"\0")
base = [e.decode()[len("ANTHROPIC_BASE_URL="):] for e in env if e.startswith(b"ANTHROPIC_BASE_URL=")][0]
out = []
for method, p, body in [("POST", "/v1/messages/batches", b'{"requests": []}'), ("GET", "/v1/files", None),
                        ("DELETE", "/v1/files/file_011", None), ("GET", "/v1/messages/batches", None)]:
    req = urllib.request.Request(base + p, data=body, method=method,
                                 headers={"x-api-key": "placeholder", "content-type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=30)
        out.append([p, r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([p, e.code, e.read().decode()])
print(json.dumps(out))
"""
        p = sb.run("podman", "exec", f"ccdocker-{sid}", "python3", "-c", attack)
        answers = json.loads(p.stdout)
        self.assertEqual(len(answers), 4)
        for target, status, body in answers:
            self.assertEqual(status, 403, (target, body))
            err = json.loads(body)["error"]
            self.assertEqual(err["type"], "permission_error")
            self.assertIn(target, err["message"])
        seen = {r["path"].split("?")[0] for r in MODEL.requests(main_only=False)}
        self.assertFalse({"/v1/messages/batches", "/v1/files", "/v1/files/file_011"} & seen, seen)
        refused = [r for r in sb.journal("MESSAGE_ID=ba83ae243ad545989d5829bdc797f1a8", f"CCDOCKER_SESSION={sid}")
                   if r.get("CCDOCKER_MODEL_STATUS") == "403"]
        self.assertEqual(len(refused), 4)

    def test_budget_used_up_pauses_and_set_budget_resumes(self):
        """A session with a budget of one token: its first turn uses it up, so it is paused, not failed.
        A prompt sent then is held (the session stays idle; the model never sees it); raising the
        budget with ccdockerctl resumes it and the held prompt is answered."""
        sid, path = self.create("say hello", "budget_tokens", "t", "1")
        result(path)
        sb.wait_until(lambda: sb.session_prop(path, "BudgetExhausted") is True, timeout=60,
                      what="BudgetExhausted after the budget is used up")
        reason = sb.session_prop(path, "BudgetExhaustedReason")
        self.assertIn(f"session {sid}", reason)
        self.assertIn("budget_tokens", reason)
        self.assertNotIn(sb.session_prop(path, "State"), ("failed", "stopped"))
        sb.wait_state(path, "idle", timeout=60)

        seen = len(MODEL.requests(main_only=False))
        call(path, "SendPrompt", "s", "say hello once more")
        # Held: not delivered, so the session did not start a turn (delivery makes it running at once).
        self.assertEqual(sb.session_prop(path, "State"), "idle")
        self.assertEqual(sb.session_prop(path, "PendingPrompts"), 1)
        self.assertTrue(sb.session_prop(path, "BudgetExhausted"))
        status = json.loads(call(path, "GetResult", "bu", "false", "0").stdout)["data"][0]
        self.assertEqual(status, "pending")

        # Raised (through ccdockerctl, i.e. Session.SetBudget): resumed, and the held prompt answered.
        sb.run("ccdockerctl", "--user", "budget", sid, "--tokens", "100000000")
        status, text, error = result(path)
        self.assertEqual((status, text), ("completed", "hello through the proxy"), error)
        self.assertFalse(sb.session_prop(path, "BudgetExhausted"))
        self.assertEqual(sb.session_prop(path, "BudgetExhaustedReason"), "")
        self.assertEqual(sb.session_prop(path, "Limits")["budget_tokens"]["data"], 100000000,
                         "Limits shows the budget SetBudget set")
        later = [r for r in MODEL.requests(main_only=False)[seen:] if "once more" in (r.get("last_user_text") or "")]
        self.assertTrue(later)

        # Bad calls are refused with InvalidArgs, and nobody else's uid could have done it (SendPrompt's rule).
        bad = call(path, "SetBudget", "a{sv}", "1", "budget", "s", "lots", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("budget_usd (d) and budget_tokens (t)", bad.stderr)

    def test_ten_sessions_at_once_under_429s(self):
        paths = [self.create(f"burst {i}")[1] for i in range(10)]
        for p in paths:
            self.assertEqual(result(p, timeout=300)[:2], ("completed", "burst answered"))
        health = json.loads(sb.run("curl", "-s", f"{MODEL.base_url}/health").stdout)
        self.assertLessEqual(health["in_flight_max"], 2)
        statuses = [r.get("status") for r in MODEL.requests(main_only=False)]
        self.assertIn(429, statuses)


if __name__ == "__main__":
    unittest.main()

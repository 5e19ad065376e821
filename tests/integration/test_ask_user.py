"""Asking a person from a session (issue 17, SPEC.md 2.7): the real Claude Code CLI in a session
container, through ccdocker-init and ccdocker-mcp, against the scripted model, on a real ccdockerd
without Discord (ccdockerctl is the person's surface).

- notify_user: the notice is stored and listed by `ccdockerctl questions`, and the tool result says so.
- ask_user: a question answered with `ccdockerctl answer` a few seconds later reaches the model as the
  tool result (response, timed_out false, interaction_id); a second answer is refused.
- A wait of 150 s on the real CLI (the one slow test) ends with the answer reaching the model as the
  tool result, not as an error or a later prompt (docs/ccdocker-mcp.md, "Long waits").
- Permission prompts: a session in `default` mode runs claude with --permission-prompt-tool; its Bash
  call becomes a permission question; deny: the model sees the denial and the file was not made;
  allow: the command ran.
- ask_user across a daemon killed with SIGKILL: ccdocker-mcp connects again and waits for the same
  question (human.wait); the answer given after the restart is the call's result.
- Bad input to each tool (every field out of range, empty, 2001 characters, an unknown field): an
  isError result naming the field and the allowed range, and nothing stored.
"""

import json
import os
import shutil
import time
import unittest

import sandbox as sb
import test_mcp
import test_model_session

DAEMON = None
MODEL = None
RUNTIME = None
LONG_WAIT_SEC = 150

SCRIPT = {
    "steps": [
        {"id": "notify", "when": {"last_user_contains": "notify the user"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__notify_user",
                                "input": {"message": "Build finished @everyone", "priority": "urgent"}}}},
        {"id": "notified", "when": {"tool_result_for": "notify"}, "reply": {"text": "notified"}},
        {"id": "ask", "when": {"last_user_contains": "ask the user now"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__ask_user",
                                "input": {"question": "Deploy to staging? (yes/no)", "timeout_seconds": 600}}}},
        {"id": "asked", "when": {"tool_result_for": "ask"}, "reply": {"text": "the user said ${result:ask.response}"}},
        {"id": "ask_long", "when": {"last_user_contains": "ask the user and wait long"},
         "reply": {"tool_use": {"name": "mcp__cc-docker__ask_user",
                                "input": {"question": "Which release? (long wait)", "timeout_seconds": 900,
                                          "max_attempts": 1}}}},
        {"id": "asked_long", "when": {"tool_result_for": "ask_long"},
         "reply": {"text": "after the long wait: ${result:ask_long.response}"}},
        {"id": "touch_denied", "when": {"last_user_contains": "touch the denied file"},
         "reply": {"tool_use": {"name": "Bash", "input": {"command": "touch /workspace/denied",
                                                          "description": "make a file"}}}},
        {"id": "touched_denied", "when": {"tool_result_for": "touch_denied"}, "reply": {"text": "tried denied"}},
        {"id": "touch_allowed", "when": {"last_user_contains": "touch the allowed file"},
         "reply": {"tool_use": {"name": "Bash", "input": {"command": "touch /workspace/allowed",
                                                          "description": "make a file"}}}},
        {"id": "touched_allowed", "when": {"tool_result_for": "touch_allowed"}, "reply": {"text": "tried allowed"}},
    ],
}


def setUpModule():
    global DAEMON, MODEL, RUNTIME
    MODEL = sb.ScriptedModel(SCRIPT)
    RUNTIME = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-ask-runtime")
    try:
        DAEMON = sb.Daemon(unit="ccdockerd-ask-test.service", settings={
            "RuntimeDirectory": RUNTIME,
            "MaxMemory": "2G",
            "DefaultMemory": "1G",
            "ModelUpstreamURL": MODEL.base_url,
            "HeartbeatTimeoutSec": "30",
            "QuestionMinTimeoutSec": "5",  # ask_user's lowest timeout_seconds, told in the hello
        }, extra_env={"ANTHROPIC_API_KEY": "sk-ant-test-ask-user"})
        del DAEMON.settings["SessionCommand"]  # the image's own entrypoint: ccdocker-init, the real CLI
        shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
        DAEMON.start()
    except BaseException:
        MODEL.stop()
        raise


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    MODEL.stop()


call = test_model_session.call  # a Session method over busctl
result = test_model_session.result  # GetResult with wait: (status, text, error)


def ctl(*args, check=True):
    return sb.run("ccdockerctl", "--user", *args, check=check, timeout=60)


def questions(sid):
    """What `ccdockerctl questions ID --all --json` lists for the session: notices and questions."""
    return json.loads(ctl("questions", sid, "--all", "--json").stdout)


def pending_question(sid, timeout=180):
    def probe():
        qs = [q for q in questions(sid) if q["status"] == "pending" and q["type"] != "notification"]
        return qs[0] if qs else None
    return sb.wait_until(probe, timeout, 0.5, what=f"a pending question of session {sid}")


def tool_result_of(step):
    """The tool_result the CLI sent back for the tool call of step, as the model saw it."""
    for r in MODEL.requests():
        for t in r.get("tool_results") or []:
            if t.get("step_id") == step:
                return t
    raise AssertionError(f"the model never saw a tool result for step {step}: {MODEL.requests()[-1:]}")


class AskUserTest(unittest.TestCase):
    def create(self, prompt, *extra):
        sid, path = sb.create_session("prompt", "s", prompt, *extra)
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        return sid, path

    def test_notify_user_is_stored_and_listed(self):
        sid, path = self.create("Please notify the user.")
        self.assertEqual(result(path)[:2], ("completed", "notified"))
        seen = tool_result_of("notify")
        self.assertFalse(seen["is_error"], seen)
        out = json.loads(seen["content_text"])
        self.assertIs(out["success"], True)
        listed = [q for q in questions(sid) if q["interaction_id"] == out["interaction_id"]]
        self.assertEqual(len(listed), 1, questions(sid))
        self.assertIn("Build finished", listed[0]["message"])
        self.assertEqual(listed[0]["priority"], "urgent")

    def test_ask_user_answered_on_ccdockerctl_reaches_the_model(self):
        sid, path = self.create("Please ask the user now.")
        q = pending_question(sid)
        qid = q["interaction_id"]
        self.assertIn("Deploy to staging?", q["message"])
        time.sleep(3)  # a person takes a moment; the call waits meanwhile
        ctl("answer", qid, "yes, deploy")

        self.assertEqual(result(path)[:2], ("completed", "the user said yes, deploy"))
        seen = tool_result_of("ask")
        self.assertFalse(seen["is_error"], seen)
        out = json.loads(seen["content_text"])
        self.assertEqual((out["response"], out["timed_out"], out["interaction_id"]), ("yes, deploy", False, qid))

        # The first answer won; a second is refused clearly.
        again = ctl("answer", qid, "no", check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("already answered", again.stderr + again.stdout)

    def test_a_wait_of_150_seconds_ends_with_the_answer_reaching_the_model(self):
        """The one slow test: the pinned CLI neither times out nor backgrounds the call (its
        MCP_TOOL_TIMEOUT is pinned in the settings, and ccdocker-mcp's progress keeps the idle
        timeout away, here one of 90 s), so the answer comes back as the tool result."""
        # A Claude Code idle timeout shorter than the wait (its default for stdio servers is 30 min):
        # only ccdocker-mcp's progress every 60 s keeps the call alive.
        sid, path = self.create("Please ask the user and wait long.", "environment", "a{ss}",
                                {"CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT": "90000"})
        q = pending_question(sid)
        qid = q["interaction_id"]
        asked = time.monotonic()
        time.sleep(max(0.0, LONG_WAIT_SEC - (time.monotonic() - asked)))
        self.assertEqual(sb.session_prop(path, "State"), "running")  # still in the same turn
        ctl("answer", qid, "release 7")

        self.assertEqual(result(path)[:2], ("completed", "after the long wait: release 7"))
        seen = tool_result_of("ask_long")
        self.assertFalse(seen["is_error"], seen)
        out = json.loads(seen["content_text"])
        self.assertEqual((out["response"], out["timed_out"], out["interaction_id"]), ("release 7", False, qid))
        # It came as the tool result, so no late "[answer to question ...]" prompt followed.
        self.assertFalse([r for r in MODEL.requests() if f"[answer to question {qid}]" in
                          (r.get("last_user_text") or "")])

    def test_permission_prompt_deny_and_allow(self):
        sid, path = self.create("Please touch the denied file.", "permission_mode", "s", "default")
        workspace = sb.session_prop(path, "Workspace")
        q = pending_question(sid)
        qid = q["interaction_id"]
        self.assertEqual(q["type"], "permission")
        self.assertIn("Allow Bash: touch /workspace/denied?", q["message"])
        ctl("answer", qid, "deny")
        self.assertEqual(result(path)[:2], ("completed", "tried denied"))
        seen = tool_result_of("touch_denied")
        self.assertTrue(seen["is_error"], seen)
        self.assertIn("Denied by a person", seen["content_text"])
        self.assertFalse(os.path.exists(os.path.join(workspace, "denied")))

        call(path, "SendPrompt", "s", "Please touch the allowed file.")
        q2 = pending_question(sid)
        self.assertNotEqual(q2["interaction_id"], qid)
        self.assertIn("Allow Bash: touch /workspace/allowed?", q2["message"])
        ctl("answer", q2["interaction_id"], "allow")
        self.assertEqual(result(path)[:2], ("completed", "tried allowed"))
        seen = tool_result_of("touch_allowed")
        self.assertFalse(seen["is_error"], seen)
        self.assertTrue(os.path.exists(os.path.join(workspace, "allowed")))


def wait_notification(m, predicate, timeout):
    """The first notification of ccdocker-mcp m that predicate takes; answers met are kept."""
    deadline = time.monotonic() + timeout
    while True:
        for n in m.notifications:
            if predicate(n):
                return n
        msg = m.receive(max(0.1, deadline - time.monotonic()))
        if "id" in msg:
            m.early[msg["id"]] = msg
        else:
            m.notifications.append(msg)


class SessionSocketTest(test_mcp.ServerTestCase):
    """ccdocker-mcp on a real session's socket, driven over pipes as Claude Code drives it."""

    def session_mcp(self):
        sid, path = sb.create_session("memory", "s", "512M")
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        sb.wait_state(path, "idle", "running", timeout=120)
        socket = os.path.join(RUNTIME, "sessions", sid, "session.sock")
        sb.wait_until(lambda: os.path.exists(socket), 30, what="the session socket")
        m = self.start(socket)
        m.initialize()
        return sid, path, m

    def test_ask_user_gets_its_answer_across_a_daemon_restart(self):
        """The daemon killed with SIGKILL while ask_user waits: ccdocker-mcp connects again, waits for
        the same question with human.wait, and the answer given after the restart is the result."""
        sid, path, m = self.session_mcp()
        m.send(test_mcp.tool_call(1, "ask_user", {"question": "Still there after a restart?", "timeout_seconds": 20,
                                                  "max_attempts": 5}, token="ask-1"))
        # The reminder of attempt 2 tells ccdocker-mcp the question's id, and reaches the client as progress.
        n = wait_notification(m, lambda n: n["method"] == "notifications/progress" and
                              "attempt 2 of 5" in n["params"].get("message", ""), 60)
        self.assertEqual(n["params"]["progressToken"], "ask-1")
        qid = pending_question(sid)["interaction_id"]
        self.assertIn(qid, n["params"]["message"])

        DAEMON.kill9()
        DAEMON.start()
        sb.wait_state(path, "idle", "running", timeout=120)
        self.assertEqual(pending_question(sid, timeout=60)["interaction_id"], qid)
        ctl("answer", qid, "yes, still here")
        out = test_mcp.structured(self, m.answer(1, timeout=120)["result"])
        self.assertEqual((out["response"], out["timed_out"], out["interaction_id"]), ("yes, still here", False, qid))
        self.assertEqual([q["interaction_id"] for q in questions(sid)], [qid])  # asked once

    def test_bad_input_is_refused_and_nothing_is_stored(self):
        """Every bad argument is refused by ccdocker-mcp, naming the field and its range, and the
        daemon stores nothing."""
        sid, path, m = self.session_mcp()
        cases = [
            ("notify_user", {"message": ""}, "'message' must be a string of 1 to 2000 characters"),
            ("notify_user", {"message": "x" * 2001}, "'message' must be a string of 1 to 2000 characters, got 2001"),
            ("notify_user", {"message": "hi", "priority": "high"}, "'priority' must be one of \"normal\", \"urgent\""),
            ("notify_user", {"message": "hi", "channel": "ops"}, "'channel'"),
            ("notify_user", {}, "'message'"),
            ("ask_user", {"question": ""}, "'question' must be a string of 1 to 2000 characters"),
            ("ask_user", {"question": "q" * 2001}, "got 2001 characters"),
            # The daemon's lowest (QuestionMinTimeoutSec), not the schema's 60.
            ("ask_user", {"question": "q", "timeout_seconds": 4}, "'timeout_seconds' must be an integer from 5 to 7200, got 4"),
            ("ask_user", {"question": "q", "timeout_seconds": 7201}, "'timeout_seconds' must be an integer from"),
            ("ask_user", {"question": "q", "max_attempts": 0}, "'max_attempts' must be an integer from 1 to 5, got 0"),
            ("ask_user", {"question": "q", "max_attempts": 6}, "'max_attempts' must be an integer from 1 to 5, got 6"),
            ("ask_user", {"question": "q", "priority": "low"}, "'priority' must be one of"),
            ("ask_user", {"question": "q", "timeout": 60}, "'timeout'"),
            ("permission_prompt", {"tool_name": "Bash"}, "'input'"),
        ]
        for i, (tool, args, needle) in enumerate(cases, start=1):
            with self.subTest(tool=tool, args=str(args)[:80]):
                message = test_mcp.tool_error(self, m.tool(i, tool, args))
                self.assertTrue(message.startswith(tool), message)
                self.assertIn(needle, message)
        self.assertEqual(questions(sid), [])

        # A good call on the same connection is stored: the empty list above was no accident.
        out = test_mcp.structured(self, m.tool(100, "notify_user", {"message": "all good"}))
        self.assertEqual([q["interaction_id"] for q in questions(sid)], [out["interaction_id"]])


if __name__ == "__main__":
    unittest.main()

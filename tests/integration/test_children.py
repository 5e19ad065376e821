"""The agent tree (issue 6, SPEC.md 2.4, 9.6, Appendices A and B): sessions spawn, steer and collect
child sessions through ccdocker-mcp's tools, with the real Claude Code CLI in every container,
parent and children alike, all answered by one scripted model (tests/fixtures/scripted-model.py).

Children inherit their parent's environment, so they reach the same model. Steps tell the sessions
of a tree apart by their prompts (`last_user_contains` on a first request) and, after that, by the
tool calls they answer (`tool_result_for`: tool ids are unique to one conversation). Values that
only exist at run time, such as the id spawn_child returned or a child's result, go into later tool
calls through the model's `${result:STEP...}` references (docs/scripted-model.md).

What a user of the tree cares about is checked where it shows: the parent's final text (D-Bus
GetResult), what each tool returned to the model (the model's request log: tool_results with their
content and is_error), the sessions and their states on D-Bus, their units and slices in systemd,
and the audit records in the journal.
"""

import json
import os
import shutil
import unittest

import sandbox as sb

DAEMON = None

MCP = "mcp__cc-docker__"
SPAWN = MCP + "spawn_child"
SEND = MCP + "send_to_child"
OUTPUT = MCP + "get_child_output"
RESULT = MCP + "get_child_result"
LIST = MCP + "list_children"
STOP = MCP + "stop_child"
CONTEXT = MCP + "get_parent_context"

NO_MATCH = "SCRIPT-NO-MATCH: the scripted model had no step for this request"
# A tree of up to four containers on a small machine: every wait is generous.
TREE_TIMEOUT = 360
NOBODY = "000000000000"  # a well-formed session id that no session has
CHILD_REFUSED = "dd4aba8bee574aaab6e27129ac91e41f"  # docs/audit.md
# The test-only offset of the spawn-rate window's clock (daemon/test-clock.h): whole seconds.
CLOCK_OFFSET_FILE = None


def setUpModule():
    global DAEMON, CLOCK_OFFSET_FILE
    CLOCK_OFFSET_FILE = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-agent-tree-clock-offset")
    DAEMON = sb.Daemon(unit="ccdockerd-agent-tree-test.service", settings={
        "AllowHostNetwork": "yes",
        "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-agent-tree-runtime"),
        "MaxMemory": "2G",
        "HeartbeatTimeoutSec": "30",
    }, extra_env={"CCDOCKER_TEST_CLOCK_OFFSET_FILE": CLOCK_OFFSET_FILE})
    # The image's own entrypoint, ccdocker-init, which runs the real CLI. The child limits stay at
    # their defaults (depth 3, 5 spawns a minute, 5 running children): the tests check those numbers.
    del DAEMON.settings["SessionCommand"]
    if os.path.exists(CLOCK_OFFSET_FILE):
        os.unlink(CLOCK_OFFSET_FILE)
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# D-Bus and systemd


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def sessions():
    """Every session the daemon knows: {id: {parent, state, unit, created, path}}."""
    p = sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListSessions")
    return {sid: {"id": sid, "parent": parent, "state": state, "unit": unit, "created": created, "path": path}
            for sid, parent, state, unit, created, path in json.loads(p.stdout)["data"][0]}


def children(parent_id, all_sessions=None):
    """The sessions whose parent is parent_id, oldest first."""
    found = [s for s in (all_sessions or sessions()).values() if s["parent"] == parent_id]
    return sorted(found, key=lambda s: s["created"])


def descendants(root_id):
    """Every session under root_id, parents before their children."""
    every = sessions()
    out, todo = [], [root_id]
    while todo:
        for c in children(todo.pop(0), every):
            out.append(c)
            todo.append(c["id"])
    return out


def result_now(path):
    p = call(path, "GetResult", "bu", "false", "0")
    status, result, error, usage = json.loads(p.stdout)["data"]
    return status, result, error, json.loads(usage or "{}")


def unit_gone(unit):
    show = sb.unit_show(unit, "LoadState", "ActiveState")
    return show.get("LoadState") == "not-found" or show.get("ActiveState") in ("inactive", "failed")


def refusals(sid):
    """The daemon's audit records of refused spawns by session sid."""
    return [r for r in sb.journal("SYSLOG_IDENTIFIER=ccdockerd", f"CCDOCKER_SESSION={sid}")
            if r.get("CCDOCKER_EVENT") == "child-refused"]


def as_tool_error(refusal):
    """What the model reads for a refusal of the daemon's: ccdocker-mcp's wording around it (mcp/tools.c)."""
    return (f"spawn_child refused by a limit: {refusal}. Wait for running children to finish (get_child_result) "
            "or stop those you no longer need (list_children, stop_child), then try again; at the depth limit, "
            "do the task yourself instead.")


# ---------------------------------------------------------------------------------------------
# the tests


class ChildrenTest(unittest.TestCase):
    maxDiff = None

    # -- plumbing ------------------------------------------------------------------------------

    def model(self, steps):
        model = sb.ScriptedModel({"steps": steps, "default": {"text": NO_MATCH}})
        self.addCleanup(model.stop)
        return model

    def start(self, model, prompt=None, files=None):
        """A top-level session running the real CLI against model. With files ({relative path:
        text}), they are written into its workspace once it is up, before prompt is sent."""
        config = ["network", "s", "host", "memory", "s", "1G", "environment", "a{ss}", sb.claude_env(model)]
        if prompt and not files:
            config += ["prompt", "s", prompt]
        sid, path = sb.create_session(*config)
        self.addCleanup(self.remove_tree, sid, path)
        if files:
            sb.wait_state(path, "idle", timeout=120)
            ws = sb.session_prop(path, "Workspace")
            for rel, text in files.items():
                full = os.path.join(ws, rel)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w") as f:
                    f.write(text)
                for p in (os.path.dirname(full), full):
                    os.chown(p, 1000, 1000)
            if prompt:
                call(path, "SendPrompt", "s", prompt)
        return sid, path

    def remove_tree(self, sid, path):
        tree = descendants(sid)
        call(path, "Stop", "b", "true", check=False)
        for s in [{"path": path}] + tree:
            try:
                sb.wait_state(s["path"], "stopped", "failed", timeout=60)
            except AssertionError:
                call(s["path"], "Stop", "b", "true", check=False)
        for s in reversed(tree):
            call(s["path"], "Remove", check=False)
        call(path, "Remove", check=False)

    def trace(self, model):
        """The model's log in short, for failure messages: who asked what, and what it got."""
        lines = []
        for r in model.requests():
            if not r["path"].startswith("/v1/messages"):
                continue
            trs = "; ".join(f"{t['step_id']}->{'ERR ' if t['is_error'] else ''}{t['content_text'][:160]!r}"
                            for t in r["tool_results"] or [])
            calls = ", ".join(f"{t['name'][len(MCP):] if t['name'].startswith(MCP) else t['name']}"
                              f"{json.dumps(t['input'])[:120]}" for t in (r["reply"] or {}).get("tool_uses", []))
            lines.append(f"#{r['seq']} {r['status']} step={r['matched_step']} user={(r['last_user_text'] or '')[-100:]!r}"
                         f"\n     results: {trs}\n     reply: {calls} {(r['reply'] or {}).get('texts')}"
                         f"{' ERROR ' + json.dumps(r['error']) if r.get('error') else ''}")
        return "\n".join(lines)

    def finish(self, model, path, timeout=TREE_TIMEOUT):
        """Waits for the session's turn to end; returns (status, result, error, usage)."""
        try:
            sb.wait_until(lambda: result_now(path)[0] != "pending", timeout, 1.0, what="the session's result")
        except AssertionError as e:
            raise AssertionError(f"{e}\nstate {sb.session_prop(path, 'State')!r} "
                                 f"({sb.session_prop(path, 'StateReason')!r}); model log:\n{self.trace(model)}")
        return result_now(path)

    def results_of(self, model, step):
        """What the tool calls of `step` returned to the model: tool_results, one per call, in
        the order the calls were issued."""
        seen = {}
        for r in model.requests():
            for t in r.get("tool_results") or []:
                if t["step_id"] == step:
                    seen.setdefault(t["tool_use_id"], t)
        issued = [tu["id"] for r in model.requests() if r["matched_step"] == step and r["status"] == 200
                  for tu in r["reply"]["tool_uses"]]
        out = [seen[i] for i in issued if i in seen]
        self.assertTrue(out, f"no tool result for step {step!r}; model log:\n{self.trace(model)}")
        return out

    def structured(self, tool_result):
        """A ccdocker-mcp result as the model saw it: its text block holds the structured JSON."""
        self.assertFalse(tool_result["is_error"], tool_result)
        try:
            return json.loads(tool_result["content_text"])
        except ValueError:
            self.fail(f"tool result is not the JSON of a structured result: {tool_result['content_text']!r}")

    def request_of(self, model, step):
        reqs = [r for r in model.requests() if r["matched_step"] == step and r["status"] == 200]
        self.assertEqual(len(reqs), 1, f"step {step!r} answered {len(reqs)} times; model log:\n{self.trace(model)}")
        return reqs[0]

    def assert_done(self, model, path, expected):
        status, result, error, usage = self.finish(model, path)
        self.assertEqual((status, error), ("completed", ""), f"model log:\n{self.trace(model)}")
        self.assertEqual(result, expected, f"model log:\n{self.trace(model)}")
        self.assertNotIn(NO_MATCH, json.dumps([r["reply"] for r in model.requests()]), self.trace(model))

    # -- Appendix B.1: fan-out / fan-in ----------------------------------------------------------

    def test_fan_out_three_children_and_fan_in_their_results(self):
        files = {"src/alpha.py": "eval(input())\n", "src/beta.py": "import pickle\n", "src/gamma.py": "x = 1\n"}
        findings = {"alpha.py": "alpha.py: eval of user input (high)",
                    "beta.py": "beta.py: unpickling untrusted data (medium)",
                    "gamma.py": "gamma.py: no issues found"}
        steps = [
            {"id": "p_ls", "when": {"last_user_contains": "Review all Python files", "tools_include": SPAWN},
             "reply": {"text": "Listing the files.", "tool_use": {"name": "Bash", "input": {
                 "command": "ls -1 /workspace/src", "description": "List the Python files"}}}},
            {"id": "p_spawn", "when": {"tool_result_for": "p_ls", "tool_result_contains": "alpha.py\nbeta.py\ngamma.py"},
             "reply": {"text": "One child per file.", "tool_uses": [
                 {"name": SPAWN, "input": {"prompt": f"FANOUT-CHILD security review of {name}",
                                           "context": {"file": name}, "task_type": "security-review"}}
                 for name in findings]}},
            {"id": "p_stream", "when": {"tool_result_for": "p_spawn"}, "reply": {"tool_uses": [
                {"name": OUTPUT, "input": {"child_session_id": "${result:p_spawn#%d.child_session_id}" % i,
                                           "stream": True, "timeout_seconds": 300}} for i in range(3)]}},
            {"id": "p_collect", "when": {"tool_result_for": "p_stream"}, "reply": {"tool_uses": [
                {"name": RESULT, "input": {"child_session_id": "${result:p_spawn#%d.child_session_id}" % i,
                                           "wait": True, "timeout_seconds": 300}} for i in range(3)]}},
            {"id": "p_summary", "when": {"tool_result_for": "p_collect"}, "reply": {
                "text": "Summary: ${result:p_collect#0.result} | ${result:p_collect#1.result} | "
                        "${result:p_collect#2.result}"}},
        ] + [{"id": f"c_{name[:-3]}", "when": {"last_user_contains": f"FANOUT-CHILD security review of {name}"},
              "reply": {"text": text}} for name, text in findings.items()]
        model = self.model(steps)
        sid, path = self.start(model, "Review all Python files in /workspace/src for security issues", files)

        self.assert_done(model, path, "Summary: " + " | ".join(findings.values()))

        # Three real children, each its own session at depth 1 whose CLI asked the model itself.
        kids = children(sid)
        self.assertEqual(len(kids), 3, kids)
        spawned = [self.structured(t) for t in self.results_of(model, "p_spawn")]
        self.assertEqual(sorted(s["child_session_id"] for s in spawned), sorted(k["id"] for k in kids))
        for s in spawned:
            self.assertIn(s["status"], ("starting", "idle", "running"))
        for k in kids:
            self.assertEqual(sb.session_prop(k["path"], "Depth"), 1)
            self.assertEqual(sb.session_prop(k["path"], "TaskType"), "security-review")
        for name in findings:
            self.request_of(model, f"c_{name[:-3]}")
        # The parent followed each child's output as it came, and got each one's result.
        for t, text in zip(self.results_of(model, "p_stream"), findings.values()):
            out = self.structured(t)
            self.assertIn(text, out["output"])
            self.assertTrue(out["is_complete"], out)
        for t, text in zip(self.results_of(model, "p_collect"), findings.values()):
            res = self.structured(t)
            self.assertEqual((res["status"], res["result"]), ("completed", text))
            self.assertGreater(res["usage"]["output_tokens"], 0)

    # -- Appendix B.2: pipeline ------------------------------------------------------------------

    def test_pipeline_second_child_gets_the_first_childs_result(self):
        research = "Research: use a token bucket, 10 requests per second, burst 20."
        steps = [
            {"id": "p_research", "when": {"last_user_contains": "Research rate limiting then implement it",
                                          "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {
                 "prompt": "PIPE-RESEARCH: find best practices for rate limiting", "task_type": "research"}}}},
            {"id": "p_wait1", "when": {"tool_result_for": "p_research"},
             "reply": {"tool_use": {"name": RESULT, "input": {
                 "child_session_id": "${result:p_research.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "p_implement", "when": {"tool_result_for": "p_wait1", "tool_result_contains": "completed"},
             "reply": {"tool_use": {"name": SPAWN, "input": {
                 "prompt": "PIPE-IMPLEMENT in our API, based on these findings: ${result:p_wait1.result}",
                 "task_type": "implementation"}}}},
            {"id": "p_wait2", "when": {"tool_result_for": "p_implement"},
             "reply": {"tool_use": {"name": RESULT, "input": {
                 "child_session_id": "${result:p_implement.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "p_done", "when": {"tool_result_for": "p_wait2"},
             "reply": {"text": "Pipeline done. ${result:p_wait2.result}"}},
            {"id": "c_research", "when": {"last_user_contains": "PIPE-RESEARCH"}, "reply": {"text": research}},
            {"id": "c_implement", "when": {"last_user_contains": "PIPE-IMPLEMENT"},
             "reply": {"text": "Implemented the token bucket limiter."}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "Research rate limiting then implement it in our API")
        self.assert_done(model, path, "Pipeline done. Implemented the token bucket limiter.")

        # The second child's own request to the model carried the first child's result.
        second = self.request_of(model, "c_implement")
        self.assertIn(f"based on these findings: {research}", second["last_user_text"])
        first = self.request_of(model, "c_research")
        self.assertLess(first["seq"], second["seq"])
        kids = children(sid)
        self.assertEqual([sb.session_prop(k["path"], "TaskType") for k in kids], ["research", "implementation"])

    # -- send_to_child, get_parent_context -------------------------------------------------------

    def test_send_to_child_continues_the_childs_conversation(self):
        steps = [
            {"id": "p_spawn", "when": {"last_user_contains": "CONVO-PARENT", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {
                 "prompt": "CONVO-CHILD: remember the word marmalade", "context": {"codeword": "quince"}}}}},
            {"id": "p_wait", "when": {"tool_result_for": "p_spawn"},
             "reply": {"tool_use": {"name": RESULT, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "p_send", "when": {"tool_result_for": "p_wait", "tool_result_contains": "completed"},
             "reply": {"tool_use": {"name": SEND, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "prompt": "CONVO-FOLLOWUP: which word?",
                 "wait_for_result": True, "timeout_seconds": 300}}}},
            {"id": "p_done", "when": {"tool_result_for": "p_send"},
             "reply": {"text": "First: ${result:p_wait.result} Then: ${result:p_send.result}"}},
            {"id": "c_context", "when": {"last_user_contains": "CONVO-CHILD", "tools_include": CONTEXT},
             "reply": {"tool_use": {"name": CONTEXT, "input": {}}}},
            {"id": "c_first", "when": {"tool_result_for": "c_context"},
             "reply": {"text": "Remembered marmalade (parent's codeword ${result:c_context.context.codeword})."}},
            {"id": "c_second", "when": {"last_user_contains": "CONVO-FOLLOWUP"},
             "reply": {"text": "The word was marmalade."}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "CONVO-PARENT: delegate and follow up")
        self.assert_done(model, path, "First: Remembered marmalade (parent's codeword quince). "
                                      "Then: The word was marmalade.")
        (kid,) = children(sid)

        # The child's second request is the same conversation: it carries the first exchange.
        second = self.request_of(model, "c_second")
        history = json.dumps(second["body"]["messages"])
        self.assertIn("CONVO-CHILD: remember the word marmalade", history)
        self.assertIn("Remembered marmalade (parent's codeword quince).", history)
        sent = self.structured(self.results_of(model, "p_send")[0])
        self.assertIn(sent["status"], ("queued", "processing"))
        self.assertEqual((sent["result_status"], sent["result"]), ("completed", "The word was marmalade."))
        # What get_parent_context gave the child: who its parent is and the context it was given.
        ctx = self.structured(self.results_of(model, "c_context")[0])
        self.assertEqual((ctx["session_id"], ctx["parent_session_id"], ctx["depth"], ctx["context"]),
                         (kid["id"], sid, 1, {"codeword": "quince"}))
        self.assertEqual(sb.session_prop(kid["path"], "State"), "idle")

    # -- stop_child mid-run ----------------------------------------------------------------------

    def test_stop_child_mid_run(self):
        steps = [
            {"id": "p_spawn", "when": {"last_user_contains": "STOPPER-PARENT", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {"prompt": "SLOWPOKE: take your time"}}}},
            # Once the child's output shows its Bash call, its next model request (which never
            # ends) is under way; the parent "thinks" 3 s more, then stops it.
            {"id": "p_stop", "when": {"any_contains": "STOPPER-PARENT", "tool_result_contains": "[tool Bash]"},
             "reply": {"delay_ms": 3000, "tool_use": {"name": STOP, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}"}}}},
            {"id": "p_watch", "repeat": True, "when": {"any_contains": "STOPPER-PARENT",
                                                       "tool_result_contains": "is_complete"},
             "reply": {"tool_use": {"name": OUTPUT, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "stream": True, "timeout_seconds": 5}}}},
            {"id": "p_watch0", "when": {"tool_result_for": "p_spawn"},
             "reply": {"tool_use": {"name": OUTPUT, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "stream": True, "timeout_seconds": 5}}}},
            {"id": "p_result", "when": {"tool_result_for": "p_stop"},
             "reply": {"tool_use": {"name": RESULT, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "wait": False}}}},
            {"id": "p_done", "when": {"tool_result_for": "p_result"},
             "reply": {"text": "Stopped the child: ${result:p_stop.final_status}"}},
            {"id": "c_bash", "when": {"last_user_contains": "SLOWPOKE"},
             "reply": {"tool_use": {"name": "Bash", "input": {"command": "true", "description": "Warm up"}}}},
            {"id": "c_slow", "when": {"tool_result_for": "c_bash"},
             "reply": {"text": "SLOW ANSWER that must never arrive", "delay_ms": 600000}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "STOPPER-PARENT: start a child, then stop it")
        self.assert_done(model, path, "Stopped the child: stopped")

        (kid,) = children(sid)
        stop = self.structured(self.results_of(model, "p_stop")[0])
        self.assertEqual(stop, {"success": True, "final_status": "stopped"})
        # It was stopped mid-run: its model request had started, and its answer never came.
        self.request_of(model, "c_slow")
        self.assertEqual(sb.session_prop(kid["path"], "State"), "stopped")
        self.assertNotIn("SLOW ANSWER", json.dumps(call(kid["path"], "GetOutput", "tu", "0", "0").stdout))
        # Its unit and container are gone.
        sb.wait_until(lambda: unit_gone(kid["unit"]), 60, what=f"{kid['unit']} to be gone")
        sb.wait_until(lambda: not sb.Podman().exists(f"ccdocker-{kid['id']}"), 60, what="the child's container to go")
        # Its turn never ended: get_child_result must not call that "completed" (with an empty
        # result); it failed, and the error says why.
        after = self.structured(self.results_of(model, "p_result")[0])
        self.assertEqual(after["status"], "failed", after)
        self.assertTrue(after["error"], after)
        self.assertFalse(after["result"], after)
        # The parent itself goes on.
        self.assertEqual(sb.session_prop(path, "State"), "idle")

    # -- a child that fails ----------------------------------------------------------------------

    def test_failed_child_is_reported_failed_with_its_error(self):
        steps = [
            {"id": "p_spawn", "when": {"last_user_contains": "FAILING-PARENT", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {"prompt": "DOOMED-CHILD: do the impossible"}}}},
            {"id": "p_wait", "when": {"tool_result_for": "p_spawn"},
             "reply": {"tool_use": {"name": RESULT, "input": {
                 "child_session_id": "${result:p_spawn.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "p_done", "when": {"tool_result_for": "p_wait"},
             "reply": {"text": "The child ended: ${result:p_wait.status}"}},
            # repeat: the CLI tries a 400 more than once before it gives up.
            {"id": "c_error", "repeat": True, "when": {"last_user_contains": "DOOMED-CHILD"},
             "reply": {"error": {"status": 400, "type": "invalid_request_error",
                                 "message": "DOOMED: this request cannot be served"}}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "FAILING-PARENT: delegate something doomed")
        self.assert_done(model, path, "The child ended: failed")
        res = self.structured(self.results_of(model, "p_wait")[0])
        self.assertEqual(res["status"], "failed", res)
        self.assertIn("DOOMED: this request cannot be served", res["error"] or "", res)
        self.assertFalse(res.get("result"), res)
        (kid,) = children(sid)
        self.assertEqual(result_now(kid["path"])[0], "failed")

    # -- limits ----------------------------------------------------------------------------------

    def test_depth_four_is_refused(self):
        # parent (depth 0) -> child (1) -> grandchild (2) -> great-grandchild (3), whose spawn
        # would make depth 4: refused by the default MaxChildDepth of 3.
        names = ["DEPTH-ZERO", "DEPTH-ONE", "DEPTH-TWO", "DEPTH-THREE", "DEPTH-FOUR"]
        steps = []
        for level in range(4):
            first = {"last_user_contains": f"{names[level]} task", "tools_include": SPAWN}
            steps.append({"id": f"d{level}_spawn", "when": first, "reply": {"tool_use": {"name": SPAWN, "input": {
                "prompt": f"{names[level + 1]} task: go one level deeper"}}}})
            if level < 3:
                steps.append({"id": f"d{level}_wait", "when": {"tool_result_for": f"d{level}_spawn"},
                              "reply": {"tool_use": {"name": RESULT, "input": {
                                  "child_session_id": f"${{result:d{level}_spawn.child_session_id}}",
                                  "wait": True, "timeout_seconds": 600}}}})
                steps.append({"id": f"d{level}_done", "when": {"tool_result_for": f"d{level}_wait"},
                              "reply": {"text": f"L{level} got [${{result:d{level}_wait.result}}]"}})
            else:
                steps.append({"id": "d3_done", "when": {"tool_result_for": "d3_spawn"},
                              "reply": {"text": "L3 refused: ${result:d3_spawn}"}})
        model = self.model(steps)
        sid, path = self.start(model, "DEPTH-ZERO task: go one level deeper")
        status, result, error, _ = self.finish(model, path, timeout=600)
        self.assertEqual((status, error), ("completed", ""), self.trace(model))

        (refusal,) = self.results_of(model, "d3_spawn")
        self.assertTrue(refusal["is_error"], refusal)
        message = "spawn_child: maximum child depth 3 reached (this session is at depth 3); do the work here instead"
        self.assertEqual(refusal["content_text"], as_tool_error(message))
        # The refusal travelled up the tree as each level's result.
        self.assertEqual(result, f"L0 got [L1 got [L2 got [L3 refused: {as_tool_error(message)}]]]")
        # Four sessions at depths 0..3, and no fifth.
        tree = descendants(sid)
        self.assertEqual([sb.session_prop(s["path"], "Depth") for s in tree], [1, 2, 3])
        self.assertEqual(sb.session_prop(path, "Depth"), 0)
        self.assertEqual([s["parent"] for s in tree], [sid, tree[0]["id"], tree[1]["id"]])
        deepest = tree[2]["id"]
        self.assertEqual(children(deepest), [])
        # And an audit record names the refusing limit.
        records = sb.wait_until(lambda: refusals(deepest), 10, what="the child-refused audit record")
        self.assertEqual(len(records), 1, records)
        self.assertEqual((records[0].get("MESSAGE_ID"), records[0]["MESSAGE"]),
                         (CHILD_REFUSED, f"session {deepest}: spawn of a child refused: {message}"))

    def test_spawn_rate_and_running_children_limits(self):
        # Defaults: 5 spawns a minute and 5 running children per session. The steps keep the two
        # apart: the sixth spawn meets the running limit (5 live), the seventh, after a stop, the
        # rate alone (4 live, 5 in the window). Then the window's clock moves a minute on
        # (CCDOCKER_TEST_CLOCK_OFFSET_FILE, docs/ccdockerd.md) between two turns, instead of a
        # minute's sleep: the eighth is let in and the ninth meets the running limit again.
        def spawn(n):
            return {"name": SPAWN, "input": {"prompt": f"LIMITS-CHILD number {n}: say ok"}}
        steps = [
            {"id": "l_five", "when": {"last_user_contains": "LIMITS-PARENT first", "tools_include": SPAWN},
             "reply": {"tool_uses": [spawn(n) for n in range(1, 6)]}},
            {"id": "l_sixth", "when": {"tool_result_for": "l_five"}, "reply": {"tool_use": spawn(6)}},
            {"id": "l_stop1", "when": {"tool_result_for": "l_sixth"}, "reply": {"tool_use": {"name": STOP, "input": {
                "child_session_id": "${result:l_five#0.child_session_id}"}}}},
            {"id": "l_rate", "when": {"tool_result_for": "l_stop1"}, "reply": {"tool_use": spawn(7)}},
            {"id": "l_first_done", "when": {"tool_result_for": "l_rate"}, "reply": {"text": "first turn done"}},
            {"id": "l_later", "when": {"last_user_contains": "LIMITS-PARENT second", "tools_include": SPAWN},
             "reply": {"tool_use": spawn(8)}},
            {"id": "l_running", "when": {"tool_result_for": "l_later"}, "reply": {"tool_use": spawn(9)}},
            {"id": "l_done", "when": {"tool_result_for": "l_running"}, "reply": {"text": "limits probed"}},
            {"id": "l_child", "repeat": True, "when": {"last_user_contains": "LIMITS-CHILD number"},
             "reply": {"text": "ok"}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "LIMITS-PARENT first: spawn until refused")
        self.assert_done(model, path, "first turn done")
        running_refusal = ("spawn_child: 5 children are already running, the most a session may have is 5 "
                           "(MaxRunningChildren); wait for one with get_child_result or stop one with stop_child")
        rate_refusal = ("spawn_child: spawn rate limit: 5 children spawned in the last minute, at most 5 "
                        "children per minute (MaxSpawnsPerMinute); try again in a minute")
        sixth, = self.results_of(model, "l_sixth")
        rate, = self.results_of(model, "l_rate")
        self.assertEqual((sixth["is_error"], sixth["content_text"]), (True, as_tool_error(running_refusal)))
        self.assertEqual((rate["is_error"], rate["content_text"]), (True, as_tool_error(rate_refusal)))

        # A minute later on the window's clock, the same window holds none of the five.
        with open(CLOCK_OFFSET_FILE, "w") as f:
            f.write("61\n")
        self.addCleanup(os.unlink, CLOCK_OFFSET_FILE)
        call(path, "SendPrompt", "s", "LIMITS-PARENT second: spawn again")
        self.assert_done(model, path, "limits probed")

        for t in self.results_of(model, "l_five") + self.results_of(model, "l_later"):
            self.structured(t)  # accepted
        running, = self.results_of(model, "l_running")
        self.assertEqual((running["is_error"], running["content_text"]), (True, as_tool_error(running_refusal)))
        self.assertEqual(self.structured(self.results_of(model, "l_stop1")[0])["final_status"], "stopped")
        # Six children were made (1-5 and 8), none for the refused spawns; five are live.
        kids = children(sid)
        self.assertEqual(len(kids), 6, kids)
        live = [k for k in kids if sb.session_prop(k["path"], "State") not in ("stopped", "failed")]
        self.assertEqual(len(live), 5, kids)
        prompts = [r["last_user_text"] for r in model.requests() if r["matched_step"] == "l_child"]
        for n in (6, 7, 9):
            self.assertFalse([p for p in prompts if f"number {n}:" in p], f"refused child {n} ran")
        # One child-refused audit record per refusal, naming the limit as the error did.
        records = sb.wait_until(lambda: len(refusals(sid)) >= 3 and refusals(sid), 10, what="3 audit records")
        self.assertEqual([(r["MESSAGE_ID"], r["CCDOCKER_EVENT"], r["MESSAGE"]) for r in records],
                         [(CHILD_REFUSED, "child-refused", f"session {sid}: spawn of a child refused: {m}")
                          for m in (running_refusal, rate_refusal, running_refusal)])

    def test_another_sessions_child_is_invisible(self):
        owner_steps = [
            {"id": "a_spawn", "when": {"last_user_contains": "OWNER-A", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {"prompt": "A-CHILD: hold this"}}}},
            {"id": "a_wait", "when": {"tool_result_for": "a_spawn"}, "reply": {"tool_use": {"name": RESULT, "input": {
                "child_session_id": "${result:a_spawn.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "a_done", "when": {"tool_result_for": "a_wait"}, "reply": {"text": "A has ${result:a_wait.result}"}},
            {"id": "a_child", "when": {"last_user_contains": "A-CHILD"}, "reply": {"text": "held"}},
        ]

        def probes(target):
            return [{"name": RESULT, "input": {"child_session_id": target, "wait": False}},
                    {"name": OUTPUT, "input": {"child_session_id": target}},
                    {"name": SEND, "input": {"child_session_id": target, "prompt": "INTRUDER: hijack this child"}},
                    {"name": STOP, "input": {"child_session_id": target}}]
        intruder_steps = [
            {"id": "b_read", "when": {"last_user_contains": "INTRUDER-B", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": "Bash", "input": {"command": "cat /workspace/target-id",
                                                                "description": "Read the id"}}}},
            {"id": "b_probe", "when": {"tool_result_for": "b_read"},
             "reply": {"tool_uses": probes("${result:b_read}") + probes(NOBODY)}},
            {"id": "b_done", "when": {"tool_result_for": "b_probe"}, "reply": {"text": "probed"}},
        ]
        model = self.model(owner_steps + intruder_steps)
        a_sid, a_path = self.start(model, "OWNER-A: keep a child")
        self.assert_done(model, a_path, "A has held")
        (kid,) = children(a_sid)

        b_sid, b_path = self.start(model, "INTRUDER-B: poke at another session's child",
                                   files={"target-id": kid["id"]})
        self.assert_done(model, b_path, "probed")
        got = self.results_of(model, "b_probe")
        self.assertEqual(len(got), 8, got)
        for t in got:
            self.assertTrue(t["is_error"], t)
        # The same answer whether the id is another session's child or no session at all.
        for theirs, nobodys in zip(got[:4], got[4:]):
            self.assertIn(kid["id"], theirs["content_text"])
            self.assertEqual(theirs["content_text"].replace(kid["id"], "ID"),
                             nobodys["content_text"].replace(NOBODY, "ID"))
        # The child was neither stopped nor prompted.
        self.assertEqual(sb.session_prop(kid["path"], "State"), "idle")
        self.assertEqual(sb.session_prop(kid["path"], "PendingPrompts"), 0)
        self.assertNotIn("INTRUDER: hijack", json.dumps([r["last_user_text"] for r in model.requests()]))
        self.assertEqual(children(b_sid), [])

    # -- slices ----------------------------------------------------------------------------------

    def test_child_unit_is_in_the_parents_slice_and_stopping_the_parent_stops_it(self):
        steps = [
            {"id": "s_spawn", "when": {"last_user_contains": "SLICE-PARENT", "tools_include": SPAWN},
             "reply": {"tool_use": {"name": SPAWN, "input": {"prompt": "SLICE-CHILD: say hi",
                                                              "task_type": "slice-check"}}}},
            {"id": "s_wait", "when": {"tool_result_for": "s_spawn"}, "reply": {"tool_use": {"name": RESULT, "input": {
                "child_session_id": "${result:s_spawn.child_session_id}", "wait": True, "timeout_seconds": 300}}}},
            {"id": "s_list", "when": {"tool_result_for": "s_wait"}, "reply": {"tool_use": {"name": LIST, "input": {}}}},
            {"id": "s_done", "when": {"tool_result_for": "s_list"}, "reply": {
                "text": "${result:s_wait.result} from ${result:s_list.children.0.session_id} "
                        "(${result:s_list.children.0.task_type}, depth ${result:s_list.children.0.depth})"}},
            {"id": "c_hi", "when": {"last_user_contains": "SLICE-CHILD"}, "reply": {"text": "hi"}},
        ]
        model = self.model(steps)
        sid, path = self.start(model, "SLICE-PARENT: make a child")
        status, result, error, _ = self.finish(model, path)
        (kid,) = children(sid)
        self.assertEqual((status, result, error), ("completed", f"hi from {kid['id']} (slice-check, depth 1)", ""),
                         self.trace(model))

        parent_unit = sb.session_prop(path, "Unit")
        p_show = sb.unit_show(parent_unit, "Slice", "ControlGroup")
        c_show = sb.unit_show(kid["unit"], "Slice", "ControlGroup", "ActiveState")
        p_slice, c_slice = p_show["Slice"], c_show["Slice"]
        self.assertEqual(c_show["ActiveState"], "active")
        self.assertIn(sid, p_slice)
        # systemd's dash nesting: the child's slice is "<parent slice minus .slice>-<child>.slice",
        # and systemd itself places it in the parent's slice, and the child's cgroup below it.
        self.assertTrue(p_slice.endswith(".slice") and p_slice != "-.slice", p_slice)
        self.assertEqual(c_slice, f"{p_slice[:-len('.slice')]}-{kid['id']}.slice")
        self.assertEqual(sb.unit_show(c_slice, "Slice")["Slice"], p_slice)
        p_slice_cg = sb.unit_show(p_slice, "ControlGroup")["ControlGroup"]
        self.assertTrue(c_show["ControlGroup"].startswith(p_slice_cg + "/"), (c_show["ControlGroup"], p_slice_cg))

        # Stopping the parent over D-Bus stops the child too.
        call(path, "Stop", "b", "false")
        self.assertEqual(sb.wait_state(path, "stopped", "failed", timeout=90), "stopped")
        self.assertEqual(sb.wait_state(kid["path"], "stopped", "failed", timeout=90), "stopped")
        for unit in (kid["unit"], parent_unit, c_slice):
            sb.wait_until(lambda: unit_gone(unit), 60, what=f"{unit} to be gone")
        sb.wait_until(lambda: not sb.Podman().exists(f"ccdocker-{kid['id']}"), 60, what="the child's container to go")


if __name__ == "__main__":
    unittest.main()

"""The real Claude Code CLI in a session container, inside a transient unit, against the scripted
model: it answers a prompt with stream-json events, and it calls an MCP tool named by the script
and returns the tool's result to the model."""

import os
import shutil
import unittest

import sandbox as sb


class ClaudeInContainerTest(unittest.TestCase):
    def setUp(self):
        self.podman = sb.Podman()
        self.name = sb.unique("ccdocker-claude")
        self.unit = self.name + ".service"
        self.addCleanup(self.podman.remove, self.name)
        self.addCleanup(sb.stop_unit, self.unit)

    def run_claude(self, model, prompt, workspace, extra_mounts=()):
        mounts = [(workspace, "/workspace", "rw")] + list(extra_mounts)
        # Host network only so that the CLI reaches the scripted model on loopback; a later
        # issue replaces it with --network=none and the daemon's model proxy.
        spec = sb.session_container_spec(self.name, sb.claude_command(prompt), network="host", mounts=mounts,
                                         env_vars=sb.claude_env(model))
        self.podman.create(spec)
        p = sb.start_container_unit(self.unit, self.name, wait=True, props=["MemoryMax=1G", "TasksMax=200"],
                                    remove_on_stop=False)
        out = self.podman.logs(self.name)
        return p, out, sb.stream_events(out)

    def test_claude_answers_a_prompt_with_stream_json_events(self):
        model = sb.ScriptedModel({"steps": [
            {"id": "answer", "when": {"last_user_contains": "capital of France"},
             "reply": {"text": "The capital of France is Paris."}},
        ]})
        self.addCleanup(model.stop)
        ws = sb.claude_workspace()
        self.addCleanup(shutil.rmtree, ws, True)

        p, out, events = self.run_claude(model, "What is the capital of France?", ws)
        self.assertEqual(p.returncode, 0, f"unit failed: {p.stdout}{p.stderr}\n{out[-3000:]}")

        types = [e.get("type") for e in events]
        self.assertEqual(types[0], "system", out[:2000])
        self.assertEqual(events[0].get("subtype"), "init")
        self.assertIn("assistant", types)
        self.assertEqual(types[-1], "result")
        result = events[-1]
        self.assertEqual(result["subtype"], "success")
        self.assertFalse(result["is_error"], result)
        self.assertEqual(result["result"], "The capital of France is Paris.")
        texts = [b.get("text") for e in events if e.get("type") == "assistant"
                 for b in e["message"]["content"] if b.get("type") == "text"]
        self.assertIn("The capital of France is Paris.", texts)

        reqs = model.requests()
        self.assertEqual([r["matched_step"] for r in reqs], ["answer"])
        self.assertIn("capital of France", reqs[0]["last_user_text"])
        # The container ran as the session user, not root.
        self.assertEqual(self.podman.inspect(self.name)["Config"]["User"], "1000:1000")

    def test_claude_calls_the_mcp_tool_the_script_names_and_returns_its_result(self):
        model = sb.ScriptedModel({"steps": [
            {"id": "call", "when": {"tools_include": "mcp__echo__echo"},
             "reply": {"text": "Calling echo.", "tool_use": {"name": "mcp__echo__echo", "input": {"text": "ping"}}}},
            {"id": "final", "when": {"tool_result_for": "call"},
             "reply": {"text": "The echo tool answered."}},
        ]})
        self.addCleanup(model.stop)
        ws = sb.claude_workspace(
            mcp_servers={"echo": {"type": "stdio", "command": "python3", "args": ["/opt/fixtures/echo-mcp.py"]}},
            allow=["mcp__echo__*"])
        self.addCleanup(shutil.rmtree, ws, True)

        p, out, events = self.run_claude(model, "Please echo ping.", ws,
                                         extra_mounts=[(sb.FIXTURES, "/opt/fixtures", "ro")])
        self.assertEqual(p.returncode, 0, f"unit failed: {p.stdout}{p.stderr}\n{out[-3000:]}")

        init = events[0]
        self.assertEqual((init.get("type"), init.get("subtype")), ("system", "init"))
        self.assertIn("mcp__echo__echo", init["tools"])
        self.assertIn({"name": "echo", "status": "connected"},
                      [{"name": s["name"], "status": s["status"]} for s in init["mcp_servers"]])

        reqs = model.requests()
        self.assertEqual([r["matched_step"] for r in reqs], ["call", "final"])
        self.assertIn("mcp__echo__echo", reqs[0]["tools"])
        results = reqs[1]["tool_results"]
        self.assertEqual(len(results), 1, results)
        self.assertEqual(results[0]["step_id"], "call")
        self.assertFalse(results[0]["is_error"], results[0])
        self.assertEqual(results[0]["content_text"], "ECHO:ping")

        # The CLI reports the tool result in its own stream too.
        tool_results = [b for e in events if e.get("type") == "user"
                        for b in e["message"]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
        self.assertTrue(any("ECHO:ping" in str(b.get("content")) for b in tool_results), tool_results)
        self.assertEqual(events[-1]["type"], "result")
        self.assertEqual(events[-1]["result"], "The echo tool answered.")


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""The demo of tools/ccdocker-dev: one Claude Code session, end to end, in the sandbox.

The real Claude Code CLI runs as uid 1000 in a container from the session image, inside a
transient systemd unit with memory and task limits, against the scripted model (the only fake:
the model behind the CLI). The script has the agent write a file in its workspace with the Write
tool, inspect it with the Bash tool, and report. The demo prints the streamed events as they
arrive, then the unit's outcome and the file the agent left on the host side of /workspace.

Until ccdockerd exists this drives podman and systemd directly, the way the daemon will.
Set CCDOCKER_DEMO_RAW=1 to print each stream-json line as well.
"""

import http.client
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox as sb  # noqa: E402

REPORT = "# Hello from cc-docker\n\nThis file was written by Claude Code inside a session container.\n"

SCRIPT = {"steps": [
    {"id": "write", "when": {"tools_include": "Write"},
     "reply": {"text": "I'll write the report into the workspace.",
               "tool_use": {"name": "Write", "input": {"file_path": "/workspace/hello.md", "content": REPORT}}}},
    {"id": "check", "when": {"tool_result_for": "write"},
     "reply": {"text": "Now let me check it from a shell.",
               "tool_use": {"name": "Bash", "input": {"command": "wc -l /workspace/hello.md; id -un; hostname",
                                                      "description": "Inspect the report"}}}},
    {"id": "done", "when": {"tool_result_for": "check"},
     "reply": {"text": "Done: /workspace/hello.md is written and checked."}},
]}


def short(value, n=100):
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[:n - 1] + "…"


def describe(event):
    """One human line for one stream-json event."""
    t = event.get("type")
    if t == "system" and event.get("subtype") == "init":
        return (f"[system/init] Claude Code {event.get('claude_code_version')}, model {event.get('model')}, "
                f"{len(event.get('tools', []))} tools, cwd {event.get('cwd')}, "
                f"permission mode {event.get('permissionMode')}")
    if t == "assistant":
        parts = []
        for block in event["message"].get("content", []):
            if block.get("type") == "text":
                parts.append(f"[assistant] {short(block['text'])}")
            elif block.get("type") == "tool_use":
                parts.append(f"[assistant] tool_use {block['name']} {short(block.get('input'), 80)}")
        return "\n".join(parts) or "[assistant] (no content)"
    if t == "user":
        parts = []
        content = event["message"].get("content", [])
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "tool_result":
                c = block.get("content")
                if isinstance(c, list):
                    c = " ".join(x.get("text", "") for x in c if isinstance(x, dict))
                flag = " (error)" if block.get("is_error") else ""
                parts.append(f"[tool_result]{flag} {short(c)}")
        return "\n".join(parts) or "[user]"
    if t == "result":
        return (f"[result/{event.get('subtype')}] {short(event.get('result', ''))} "
                f"(turns {event.get('num_turns')}, {event.get('duration_ms')} ms, "
                f"is_error {event.get('is_error')})")
    return f"[{t}{'/' + event['subtype'] if event.get('subtype') else ''}]"


def follow_logs(podman, name):
    """Yields the container's stdout lines as they are written (libpod logs?follow=true)."""
    conn = sb._UnixConnection(podman.socket_path, timeout=600)
    try:
        conn.request("GET", f"/v4.0.0/libpod/containers/{name}/logs?follow=true&stdout=true&stderr=false")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"following {name}: HTTP {resp.status}")
        pending = b""
        while True:
            header = resp.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[4:8], "big")
            data = resp.read(size)
            if header[0] != 1:
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                yield line.decode("utf-8", "replace")
        if pending:
            yield pending.decode("utf-8", "replace")
    except http.client.IncompleteRead:
        return
    finally:
        conn.close()


def main():
    raw = os.environ.get("CCDOCKER_DEMO_RAW") == "1"
    podman = sb.Podman()
    name = sb.unique("ccdocker-demo")
    unit = name + ".service"
    model = sb.ScriptedModel(SCRIPT)
    ws = sb.claude_workspace()
    try:
        print(f"== cc-docker demo: one Claude Code session in container {name}, unit {unit}")
        print(f"   scripted model on {model.base_url}; workspace {ws} -> /workspace")
        spec = sb.session_container_spec(
            name, sb.claude_command("Write a short hello report into the workspace and check it.",
                                    "--permission-mode", "bypassPermissions"),
            network="host", mounts=[(ws, "/workspace", "rw")], env_vars=sb.claude_env(model))
        podman.create(spec)
        p = sb.start_container_unit(unit, name, props=["MemoryMax=1G", "TasksMax=200", "CPUQuota=100%"],
                                    remove_on_stop=False)
        if p.returncode != 0:
            raise RuntimeError(f"starting {unit} failed: {p.stderr.strip()}")
        sb.wait_until(lambda: podman.inspect(name)["State"]["Status"] in ("running", "exited"), 30,
                      what="the container to start")
        print("== streamed events")
        events = 0
        for line in follow_logs(podman, name):
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            events += 1
            if raw:
                print("   " + line)
            print("   " + describe(event).replace("\n", "\n   "), flush=True)
        sb.wait_until(lambda: sb.systemctl("is-active", unit, check=False).stdout.strip() != "active", 60,
                      what="the unit to finish")
        state = podman.inspect(name)["State"]
        print("== outcome")
        print(f"   {events} events; container exit code {state['ExitCode']}; "
              f"model requests {len(model.requests())}")
        path = os.path.join(ws, "hello.md")
        if os.path.exists(path):
            with open(path) as f:
                print("   /workspace/hello.md, as the host sees it:")
                for line in f.read().splitlines():
                    print("   | " + line)
        ok = state["ExitCode"] == 0 and os.path.exists(path) and events > 0
        print("== demo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        sb.stop_unit(unit)
        podman.remove(name)
        model.stop()
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

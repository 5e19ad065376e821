#!/usr/bin/env python3
"""The demo of tools/ccdocker-dev: a Claude Code session and the child it spawns, end to end, through
ccdockerd.

ccdockerd runs in the sandbox (a unit of the contained systemd user manager). `ccdockerctl run`
asks it over D-Bus for a session with a prompt: the daemon creates a hardened container with no
network from the session image inside a transient unit, ccdocker-init in the container writes Claude
Code's configuration and runs the real CLI, which reaches the model only through the daemon's model
proxy (the daemon holds the credential: $ANTHROPIC_API_KEY if set, else a placeholder; the model is
the scripted one, the only fake). The events stream back over the session channel, through SQLite
and Redis, to ccdockerctl, which prints them as they arrive. The script has the agent write a file
in its workspace with the Write tool, check it with the Bash tool, spawn a child session (its own
container, in a slice nested in the parent's) to review it through ccdocker-mcp, wait for the
child's result and report it.

Set CCDOCKER_DEMO_RAW=1 to print the events as JSON lines instead.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox as sb  # noqa: E402

REPORT = "# Hello from cc-docker\n\nThis file was written by Claude Code inside a session container.\n"

SCRIPT = {"steps": [
    {"id": "write", "when": {"last_user_contains": "hello report"},
     "reply": {"text": "I'll write the report into the workspace.",
               "tool_use": {"name": "Write", "input": {"file_path": "/workspace/hello.md", "content": REPORT}}}},
    {"id": "check", "when": {"tool_result_for": "write"},
     "reply": {"text": "Now let me check it from a shell.",
               "tool_use": {"name": "Bash", "input": {"command": "wc -l /workspace/hello.md; id -un; hostname",
                                                      "description": "Inspect the report"}}}},
    {"id": "spawn", "when": {"tool_result_for": "check"},
     "reply": {"text": "I'll ask a child session to review it.",
               "tool_use": {"name": "mcp__cc-docker__spawn_child",
                            "input": {"prompt": "child: review this report in one line: " + REPORT,
                                      "task_type": "review"}}}},
    {"id": "wait", "when": {"tool_result_for": "spawn"},
     "reply": {"tool_use": {"name": "mcp__cc-docker__get_child_result",
                            "input": {"child_session_id": "${result:spawn.child_session_id}", "wait": True,
                                      "timeout_seconds": 120}}}},
    {"id": "done", "when": {"tool_result_for": "wait"},
     "reply": {"text": "Done: /workspace/hello.md is written and checked. The reviewer said: ${result:wait.result}"}},
    {"id": "review", "when": {"last_user_contains": "child: review"},
     "reply": {"text": "A short, clear greeting from inside a container."}},
]}


def main():
    raw = os.environ.get("CCDOCKER_DEMO_RAW") == "1"
    roots = tempfile.mkdtemp(prefix="ccdocker-demo-")
    os.chmod(roots, 0o755)
    ws = os.path.join(roots, "workspace")
    os.mkdir(ws)
    os.chown(ws, 1000, 1000)
    model = sb.ScriptedModel(SCRIPT)
    # The model proxy's credential: the caller's, or a placeholder the scripted model accepts.
    credential = {k: os.environ[k] for k in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN") if os.environ.get(k)}
    daemon = sb.Daemon(unit="ccdockerd-demo.service", settings={
        "WorkspaceRoots": roots,
        "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
        "ModelUpstreamURL": model.base_url,
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-demo-runtime")},
        extra_env=credential or {"ANTHROPIC_API_KEY": "sk-ant-placeholder-demo"})
    del daemon.settings["SessionCommand"]  # the image's own entrypoint: ccdocker-init
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    try:
        daemon.start()
        print(f"== cc-docker demo: ccdockerd on the sandbox's bus; containers have no network and reach the "
              f"scripted model on {model.base_url} through the daemon's model proxy")
        argv = ["ccdockerctl", "--user", "run", "--memory", "1G", "--workspace", ws]
        if raw:
            argv.insert(2, "--json")
        argv.append("Write a short hello report into the workspace, check it, and have it reviewed.")
        print(f"$ ccdockerctl --user run --memory 1G --workspace {ws} '{argv[-1]}'", flush=True)
        rc = subprocess.run(argv).returncode
        # The child stops with its parent (their slices are nested): wait for it to show.
        def settled():
            out = subprocess.run(["ccdockerctl", "--user", "tree"], capture_output=True, text=True).stdout
            return out if all(ln.endswith(("stopped", "failed")) for ln in out.splitlines()) else None
        try:
            tree = sb.wait_until(settled, 30, what="the session tree to stop")
        except AssertionError:
            tree = subprocess.run(["ccdockerctl", "--user", "tree"], capture_output=True, text=True).stdout
        print("$ ccdockerctl --user tree", flush=True)
        print("".join("   " + line + "\n" for line in tree.splitlines()), end="")
        print("== outcome")
        print(f"   ccdockerctl run exited {rc}; the scripted model answered {len(model.requests())} requests")
        path = os.path.join(ws, "hello.md")
        if os.path.exists(path):
            with open(path) as f:
                print("   hello.md in the session's workspace, as the host sees it:")
                for line in f.read().splitlines():
                    print("   | " + line)
        audit = sb.journal("SYSLOG_IDENTIFIER=ccdockerd", "CCDOCKER_EVENT=created", output="cat").splitlines()
        for line in audit[-2:]:
            print(f"   audit: {line}")
        children = [ln for ln in tree.splitlines() if ln.startswith("`- ") or ln.startswith("|- ")]
        ok = rc == 0 and os.path.exists(path) and len(children) == 1
        print("== demo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        daemon.stop()
        model.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)
        shutil.rmtree(roots, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

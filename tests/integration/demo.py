#!/usr/bin/env python3
"""The demo of tools/ccdocker-dev: one Claude Code session, end to end, through ccdockerd.

ccdockerd runs in the sandbox (a unit of the contained systemd user manager). `ccdockerctl run`
asks it over D-Bus for a session with a prompt: the daemon creates a hardened container from the
session image inside a transient unit, ccdocker-init in the container writes Claude Code's
configuration and runs the real CLI against the scripted model (the only fake: the model behind the
CLI), and the events stream back over the session channel, through SQLite and Redis, to
ccdockerctl, which prints them as they arrive. The script has the agent write a file in its
workspace with the Write tool, check it with the Bash tool, and report.

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


def main():
    raw = os.environ.get("CCDOCKER_DEMO_RAW") == "1"
    roots = tempfile.mkdtemp(prefix="ccdocker-demo-")
    os.chmod(roots, 0o755)
    ws = os.path.join(roots, "workspace")
    os.mkdir(ws)
    os.chown(ws, 1000, 1000)
    model = sb.ScriptedModel(SCRIPT)
    daemon = sb.Daemon(unit="ccdockerd-demo.service", settings={
        "AllowHostNetwork": "yes", "WorkspaceRoots": roots,
        "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-demo-runtime")})
    del daemon.settings["SessionCommand"]  # the image's own entrypoint: ccdocker-init
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    try:
        daemon.start()
        print(f"== cc-docker demo: ccdockerd on the sandbox's bus, scripted model on {model.base_url}")
        argv = ["ccdockerctl", "--user", "run", "--network", "host", "--memory", "1G", "--workspace", ws]
        for k, v in sb.claude_env(model).items():
            argv += ["--env", f"{k}={v}"]
        if raw:
            argv.insert(2, "--json")
        argv.append("Write a short hello report into the workspace and check it.")
        print(f"$ ccdockerctl --user run --network host --memory 1G --workspace {ws} --env ... '{argv[-1]}'",
              flush=True)
        rc = subprocess.run(argv).returncode
        print("== outcome")
        print(f"   ccdockerctl run exited {rc}; the scripted model answered {len(model.requests())} requests")
        path = os.path.join(ws, "hello.md")
        if os.path.exists(path):
            with open(path) as f:
                print("   hello.md in the session's workspace, as the host sees it:")
                for line in f.read().splitlines():
                    print("   | " + line)
        audit = sb.journal("SYSLOG_IDENTIFIER=ccdockerd", "CCDOCKER_EVENT=created", output="cat").splitlines()
        if audit:
            print(f"   audit: {audit[-1]}")
        ok = rc == 0 and os.path.exists(path)
        print("== demo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        daemon.stop()
        model.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)
        shutil.rmtree(roots, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

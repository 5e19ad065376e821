#!/usr/bin/env python3
"""bench/first_answer: how long a new session takes to its first answer, with and without the warm
pool, beside a bare `claude -p` of the same CLI against the same scripted model on the host; and how
long a follow-up prompt takes in a live session.

In one run, against one scripted model (tests/fixtures/scripted-model.py, one text turn):

- bare: N runs of the host's `claude -p PROMPT --output-format stream-json --verbose` (the CLI the
  session image carries, from the sandbox's npm cache), timed from spawn to exit: the baseline, the
  time a person running claude themselves waits;
- cold: a daemon with PoolSize=0, N times CreateSession with `prompt`, then GetResult(wait) until the
  result: the CLI starts only when the session does;
- pooled: a daemon with PoolSize=1, the same, each time once the pool's member runs its CLI (that
  wait is not timed: it is what the pool does between two callers);
- follow-up: in each cold session, SendPrompt then GetResult(wait): the long-lived CLI's next turn.

Prints p50, p95 and mean of each and their ratios to the bare run (issue 18's targets: a first answer
at most 0.5 of bare with the pool, a follow-up at most 0.2). The machines are shared and noisy, so
only the ratios mean much; nothing here passes or fails on time. Run it in the sandbox:

    tools/ccdocker-dev up && tools/ccdocker-dev exec -- python3 tests/bench/first_answer.py -n 5
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import sandbox as sb  # noqa: E402

SCRIPT = {
    "steps": [
        {"id": "hello", "when": {"last_user_contains": "say hello"}, "reply": {"text": "hello"}, "repeat": True},
        {"id": "again", "when": {"last_user_contains": "once more"}, "reply": {"text": "again"}, "repeat": True},
    ],
}
CREDENTIAL = "sk-ant-bench-first-answer"


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def claude_bin():
    return os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules", "@anthropic-ai", "claude-code-linux-x64",
                        "claude")


def time_bare(n, model):
    """claude -p on the host, in a fresh HOME and project each run (as a first run in a session is)."""
    times = []
    for _ in range(n):
        home = tempfile.mkdtemp(prefix="ccdocker-bench-home-")
        ws = tempfile.mkdtemp(prefix="ccdocker-bench-ws-")
        with open(os.path.join(home, ".claude.json"), "w") as f:
            json.dump({"hasCompletedOnboarding": True, "projects": {ws: {"hasTrustDialogAccepted": True}}}, f)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, **sb.claude_env(model)}
        try:
            start = time.monotonic()
            p = subprocess.run([claude_bin(), "-p", "say hello", "--output-format", "stream-json", "--verbose"],
                               cwd=ws, env=env, capture_output=True, text=True, timeout=300)
            times.append(time.monotonic() - start)
            results = [e for e in sb.stream_events(p.stdout) if e.get("type") == "result"]
            if p.returncode != 0 or not results or results[-1].get("result") != "hello":
                raise SystemExit(f"bare claude -p failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(ws, ignore_errors=True)
    return times


def call(path, method, *args):
    # busctl's own 25 s call timeout would end a GetResult wait on a loaded machine first.
    return sb.run("busctl", "--user", "--json=short", "--timeout=320", "call", "org.ccdocker1", path,
                  "org.ccdocker1.Session", method, *args, timeout=330)


def wait_result(path, want):
    status, text, error, _ = json.loads(call(path, "GetResult", "bu", "true", "300").stdout)["data"]
    if (status, text) != ("completed", want):
        raise SystemExit(f"session {path}: {status} {text!r} {error!r}")


def pool_members(daemon):
    try:
        return set(os.listdir(os.path.join(daemon.state_dir, "pool")))
    except FileNotFoundError:
        return set()


def wait_pool_ready(daemon, settle):
    """A pool member whose CLI runs, then a moment for the CLI to finish its own start (untimed)."""
    def probe():
        for sid in pool_members(daemon):
            p = sb.run("podman", "exec", f"ccdocker-{sid}", "pgrep", "-x", "claude", check=False)
            if p.returncode == 0:
                return sid
        return None
    sid = sb.wait_until(probe, 300, 0.2, what="a started session in the pool")
    time.sleep(settle)
    return sid


def time_sessions(n, daemon, pooled, settle=2.0):
    first, follow, served = [], [], 0
    for _ in range(n):
        member = wait_pool_ready(daemon, settle) if pooled else None
        start = time.monotonic()
        sid, path = sb.create_session("prompt", "s", "say hello")
        wait_result(path, "hello")
        first.append(time.monotonic() - start)
        served += sid == member
        start = time.monotonic()
        call(path, "SendPrompt", "s", "once more")
        wait_result(path, "again")
        follow.append(time.monotonic() - start)
        call(path, "Stop", "b", "true")
        sb.wait_state(path, "stopped", "failed")
        call(path, "Remove")
    return first, follow, served


def run_daemon(model, pool_size, fn):
    runtime = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-bench-first-runtime")
    daemon = sb.Daemon(unit="ccdockerd-bench-first.service", settings={
        "RuntimeDirectory": runtime, "PoolSize": str(pool_size), "ModelUpstreamURL": model.base_url,
        "DefaultMemory": "1G"}, extra_env={"ANTHROPIC_API_KEY": CREDENTIAL})
    del daemon.settings["SessionCommand"]  # the image's own: ccdocker-init and the real CLI
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    daemon.start()
    try:
        return fn(daemon)
    finally:
        daemon.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="runs of each (default 5)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds a pool member's CLI is given after it runs, before a pooled run (default 2)")
    args = ap.parse_args()

    model = sb.ScriptedModel(SCRIPT)
    try:
        time_bare(1, model)  # the CLI's binary into the page cache
        bare = time_bare(args.n, model)
        cold, follow_cold, _ = run_daemon(model, 0, lambda d: time_sessions(args.n, d, False))
        pooled, follow_pooled, served = run_daemon(model, 1, lambda d: time_sessions(args.n, d, True, args.settle))
    finally:
        model.stop()
    version = subprocess.run([claude_bin(), "--version"], capture_output=True, text=True).stdout.strip()

    def row(name, v):
        print(f"{name:<44} p50 {percentile(v, 50) * 1000:7.0f} ms   p95 {percentile(v, 95) * 1000:7.0f} ms   "
              f"mean {statistics.mean(v) * 1000:7.0f} ms")
        print(f"  runs (ms): {' '.join(str(round(x * 1000)) for x in v)}")

    def ratio(name, v, target):
        print(f"  ratio ({name} / bare) p50 {percentile(v, 50) / percentile(bare, 50):.2f}   "
              f"mean {statistics.mean(v) / statistics.mean(bare):.2f}   (target: {target})")

    print(f"bench/first_answer: {args.n} runs each, Claude Code {version}, scripted model, one text turn")
    row("bare claude -p on the host (spawn -> exit)", bare)
    row("cold: CreateSession(prompt) -> result", cold)
    ratio("cold", cold, "none; what the pool is for")
    row("pooled: CreateSession(prompt) -> result", pooled)
    ratio("pooled", pooled, "at most 0.5")
    print(f"  {served} of {args.n} pooled runs were served by the pool")
    row("follow-up: SendPrompt -> result (cold)", follow_cold)
    ratio("follow-up", follow_cold, "at most 0.2")
    row("follow-up: SendPrompt -> result (pooled)", follow_pooled)
    ratio("follow-up pooled", follow_pooled, "at most 0.2")


if __name__ == "__main__":
    sys.exit(main())

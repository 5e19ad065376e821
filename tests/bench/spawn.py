#!/usr/bin/env python3
"""bench/spawn: how long from CreateSession to a running container, beside a bare podman run, and
how long a session's spawn_child takes.

Creates N sessions one after another through ccdockerd (D-Bus CreateSession, then libpod REST
inspect polled every 2 ms until the container runs) and, in the same run, times N bare local
`podman run --rm IMAGE /bin/true` (the floor of a container start) as the baseline. Prints p50 and
p95 of both and their ratio.

Then, from one parent session, N children through ccdocker-mcp's spawn_child tool, the way Claude
Code calls it (tools/call on the MCP server's stdin, the server on the parent's channel socket):
the time to the returned child id (target: p99 under 20 ms) and to the child's container running,
beside the same bare floor; and the same spawn as one raw child.spawn request on the channel, to
show what the MCP server adds. The machines are shared and noisy, so only the ratios mean much;
nothing here passes or fails on time. Run it in the sandbox:

    tools/ccdocker-dev up && tools/ccdocker-dev exec -- python3 tests/bench/spawn.py -n 20

With --runtime docker the daemon runs Runtime=docker against the sandbox's dockerd (started and
given the image by `tools/ccdocker-dev docker-up`), and the baseline is a bare `docker run --rm`.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import sandbox as sb  # noqa: E402


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


class DockerApi(sb.Podman):
    """The same GET as sb.Podman's, of Docker Engine's API."""

    def __init__(self):
        super().__init__(sb.env("CCDOCKER_DOCKER_SOCKET"))

    def request(self, method, path, body=None, timeout=60):
        conn = sb._UnixConnection(self.socket_path, timeout=timeout)
        try:
            conn.request(method, "/v1.41" + path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def time_bare_docker(n, image):
    """A bare `docker run --rm` on the sandbox's dockerd (its default cgroup parent is inside the
    sandbox's subtree)."""
    times = []
    for _ in range(n):
        start = time.monotonic()
        subprocess.run(["/usr/bin/docker", "-H", "unix://" + sb.env("CCDOCKER_DOCKER_SOCKET"), "run", "--rm",
                        "--network=none", image, "/bin/true"], check=True, capture_output=True)
        times.append(time.monotonic() - start)
    return times


def time_sessions(n, podman=None):
    podman = podman or sb.Podman()
    times = []
    for _ in range(n):
        start = time.monotonic()
        sid, path = sb.create_session()
        name = f"ccdocker-{sid}"
        while True:
            status, raw = podman.request("GET", f"/containers/{name}/json")
            if status == 200 and b'"Running":true' in raw.replace(b" ", b""):
                break
            time.sleep(0.002)
        times.append(time.monotonic() - start)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true")
        sb.wait_state(path, "stopped", "failed")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove")
    return times


def time_bare(n, image):
    """A local podman (not the REST client the sandbox environment makes of it), with the container's
    cgroup inside the sandbox's own subtree."""
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
    parent = "/" + sb.env("CCDOCKER_SANDBOX_CGROUP") + "/aux"
    times = []
    for _ in range(n):
        start = time.monotonic()
        subprocess.run(["podman", "run", "--rm", "--network=none", f"--cgroup-parent={parent}", image, "/bin/true"],
                       check=True, capture_output=True, env=env)
        times.append(time.monotonic() - start)
    return times


def wait_running(podman, sid):
    name = f"ccdocker-{sid}"
    while True:
        status, raw = podman.request("GET", f"/containers/{name}/json")
        if status == 200 and b'"Running":true' in raw.replace(b" ", b""):
            return
        time.sleep(0.002)


class Lines:
    """JSON lines over a file pair or a socket."""

    def __init__(self, write, read):
        self.write, self.read = write, read

    def request(self, msg):
        self.write((json.dumps(msg) + "\n").encode())
        while True:
            answer = json.loads(self.read())
            if answer.get("id") == msg["id"]:
                return answer


def time_children(n, runtime, podman):
    """spawn_child through ccdocker-mcp, then the same through the raw channel."""
    sid, path = sb.create_session()
    sb.wait_state(path, "idle", "running")
    sock_path = os.path.join(runtime, "sessions", sid, "session.sock")
    mcp_bin = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "mcp", "ccdocker-mcp")
    proc = subprocess.Popen([mcp_bin], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "CCDOCKER_CHANNEL_SOCKET": sock_path})

    def write(b):
        proc.stdin.write(b)
        proc.stdin.flush()
    mcp = Lines(write, proc.stdout.readline)
    mcp.request({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                 "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": {"name": "bench", "version": "1"}}})
    to_id, to_running, raw = [], [], []
    try:
        # The server connects to the channel at its first call: not what is timed.
        mcp.request({"jsonrpc": "2.0", "id": 99999, "method": "tools/call",
                     "params": {"name": "list_children", "arguments": {}}})
        for i in range(n):
            start = time.monotonic()
            answer = mcp.request({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                                  "params": {"name": "spawn_child", "arguments": {"prompt": f"child {i}"}}})
            got_id = time.monotonic()
            result = answer.get("result") or {}
            if result.get("isError") or "structuredContent" not in result:
                raise SystemExit(f"spawn_child failed: {answer}")
            cid = result["structuredContent"]["child_session_id"]
            wait_running(podman, cid)
            to_id.append(got_id - start)
            to_running.append(time.monotonic() - start)
            mcp.request({"jsonrpc": "2.0", "id": 10000 + i, "method": "tools/call",
                         "params": {"name": "stop_child", "arguments": {"child_session_id": cid, "force": True}}})

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        f = s.makefile("rb")
        chan = Lines(s.sendall, f.readline)
        chan.request({"jsonrpc": "2.0", "id": 0, "method": "hello", "params": {"role": "mcp", "protocol": 1}})
        for i in range(n):
            start = time.monotonic()
            answer = chan.request({"jsonrpc": "2.0", "id": i + 1, "method": "child.spawn",
                                   "params": {"prompt": f"raw child {i}"}})
            raw.append(time.monotonic() - start)
            cid = answer["result"]["child_session_id"]
            chan.request({"jsonrpc": "2.0", "id": 10000 + i, "method": "child.stop",
                          "params": {"child_session_id": cid, "force": True}})
        s.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true")
        sb.wait_state(path, "stopped", "failed")
    return to_id, to_running, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="sessions (and bare runs) to time (default 10)")
    ap.add_argument("--children", type=int, default=30, help="children to spawn from one parent (default 30)")
    ap.add_argument("--runtime", choices=("podman", "docker"), default="podman",
                    help="the daemon's Runtime= and the bare baseline's runtime (default podman)")
    args = ap.parse_args()
    image = os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev")
    if args.runtime == "docker":
        subprocess.run([os.path.join(sb.SRC, "tools", "ccdocker-dev"), "docker-up"], check=True)
        api, bare_run, bare_name = DockerApi(), time_bare_docker, "docker run --rm IMAGE /bin/true"
    else:
        api, bare_run, bare_name = sb.Podman(), time_bare, "podman run --rm IMAGE /bin/true"

    runtime = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-bench-runtime")
    daemon = sb.Daemon(unit="ccdockerd-bench.service", settings={
        "RuntimeDirectory": runtime, "HeartbeatTimeoutSec": "0",
        # The children are spawned back to back: the per-minute limit is not what is measured here.
        "MaxSpawnsPerMinute": str(4 * args.children + 10), "MaxSessions": str(4 * args.children + 10),
        "Runtime": args.runtime, "DockerSocket": sb.env("CCDOCKER_DOCKER_SOCKET")})
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    daemon.start()
    try:
        bare_run(1, image)  # warm the image's layers into the page cache for both
        bare = bare_run(args.n, image)
        sessions = time_sessions(args.n, api)
        to_id, to_running, raw = time_children(args.children, runtime, api)
    finally:
        daemon.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)

    def row(name, v):
        print(f"{name:<34} p50 {percentile(v, 50) * 1000:7.0f} ms   p95 {percentile(v, 95) * 1000:7.0f} ms   "
              f"mean {statistics.mean(v) * 1000:7.0f} ms")

    print(f"bench/spawn ({args.runtime}): {args.n} runs each, {args.children} children")
    row(bare_name, bare)
    row("CreateSession -> container running", sessions)
    print(f"ratio (session / bare) p50 {percentile(sessions, 50) / percentile(bare, 50):.2f}   "
          f"p95 {percentile(sessions, 95) / percentile(bare, 95):.2f}   (target: at most 1.5)")

    def row99(name, v):
        print(f"{name:<34} p50 {percentile(v, 50) * 1000:7.1f} ms   p99 {percentile(v, 99) * 1000:7.1f} ms   "
              f"mean {statistics.mean(v) * 1000:7.1f} ms")

    row99("spawn_child (MCP) -> child id", to_id)
    row99("child.spawn (channel) -> child id", raw)
    row("spawn_child -> child running", to_running)
    print(f"ratio (child running / bare) p50 {percentile(to_running, 50) / percentile(bare, 50):.2f}   "
          f"p95 {percentile(to_running, 95) / percentile(bare, 95):.2f}   "
          f"(spawn_child to id, target: p99 under 20 ms)")


if __name__ == "__main__":
    sys.exit(main())

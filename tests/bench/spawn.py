#!/usr/bin/env python3
"""bench/spawn: how long from CreateSession to a running container, beside a bare podman run.

Creates N sessions one after another through ccdockerd (D-Bus CreateSession, then libpod REST
inspect polled every 2 ms until the container runs) and, in the same run, times N bare local
`podman run --rm IMAGE /bin/true` (the floor of a container start) as the baseline. Prints p50 and p95 of both and their ratio.
The machines are shared and noisy, so only the ratio means much; nothing here passes or fails on
time. Run it in the sandbox:

    tools/ccdocker-dev up && tools/ccdocker-dev exec -- python3 tests/bench/spawn.py -n 20
"""

import argparse
import os
import shutil
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


def time_sessions(n):
    podman = sb.Podman()
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="sessions (and bare runs) to time (default 10)")
    args = ap.parse_args()
    image = os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev")

    daemon = sb.Daemon(unit="ccdockerd-bench.service")
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    daemon.start()
    try:
        time_bare(1, image)  # warm the image's layers into the page cache for both
        bare = time_bare(args.n, image)
        sessions = time_sessions(args.n)
    finally:
        daemon.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)

    def row(name, v):
        print(f"{name:<34} p50 {percentile(v, 50) * 1000:7.0f} ms   p95 {percentile(v, 95) * 1000:7.0f} ms   "
              f"mean {statistics.mean(v) * 1000:7.0f} ms")

    print(f"bench/spawn: {args.n} runs each")
    row("podman run --rm IMAGE /bin/true", bare)
    row("CreateSession -> container running", sessions)
    print(f"ratio (session / bare) p50 {percentile(sessions, 50) / percentile(bare, 50):.2f}   "
          f"p95 {percentile(sessions, 95) / percentile(bare, 95):.2f}   (target: at most 1.5)")


if __name__ == "__main__":
    sys.exit(main())

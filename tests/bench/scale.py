#!/usr/bin/env python3
"""bench/scale: what 1, 100 and 500 live sessions cost ccdockerd and ccdocker-httpd, and how each figure
grows with their number (linear, or for a lookup constant, is the target).

The sessions are real: CreateSession on the daemon's bus makes each one's unit and podman container as
for any session (ephemeral workspace, no network, so each also has its channel, egress and model-proxy
sockets: the daemon is given a placeholder model credential). Only the command is small: the container
runs `sh` waiting on a `sleep` (SESSION_COMMAND below) instead of Claude Code, so that hundreds of them
fit a small machine; the daemon's side of a session (unit, container, sockets, records) is the same.
Sessions are added in stages up to each size; at most --in-flight start at once, and each stage waits
until every one is idle (its container running) before measuring:

  CreateSession      the D-Bus call (reply = stored and published, the container comes later): p50/p99
                     of the calls made in the stage, beside podman's GET /images/NAME/exists timed right
                     after each (the call CreateSession waits on before it answers), under the same load.
  ListSessions       the call with N sessions in the reply, median of --repeat; also µs per session.
  GetSession         Manager.GetSession of a random session id, and the session object's
                     Properties.GetAll (what a client reads next), median of --repeat.
  daemon memory      VmRSS, RssAnon and Pss (/proc/PID/status, smaps_rollup) of ccdockerd before the first
                     session (idle) and at each size, and per session: (size figure - idle) / N.
  httpd memory       ccdocker-httpd's VmRSS/Pss: started before the sessions, then at each size after a GET of
                     every session (so its property cache holds them all), and at the last size again with a
                     WebSocket stream open on --streams sessions (each one Attach fd and fan-out).
  around it          the conmon processes' Pss and the anonymous memory of the sessions' slices per session, to
                     show what a session costs beside the daemon's share.

The D-Bus calls go through one sd-bus connection of this process (libsystemd through ctypes), so that no
busctl fork is timed; the baseline measured in the same run is org.freedesktop.DBus.Peer.Ping on the same
daemon through the same connection (the bus round trip every call pays). Sessions created on the bus
belong to no ccdocker-httpd token, so the bench grants them to its token in httpd's token store (the row
POST /api/v1/sessions writes) before it GETs them.

Nothing passes or fails on time or size (the targets are printed beside the figures: daemon RSS under 10 MB
idle plus under 50 KB per idle session); the exit status is 1 only if something broke (a session that did
not become idle, a call that failed). On a machine that cannot hold the largest size, --sizes 1,100,300
runs fewer, and the output says what ran. Run it in the sandbox:

    tools/ccdocker-dev exec -- /usr/bin/python3 tests/bench/scale.py [--sizes 1,100,500] [--streams 50]
"""

import argparse
import ctypes
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import sandbox as sb  # noqa: E402
import test_httpd as th  # noqa: E402

UNIT = "ccdockerd-bench-scale.service"
DEST = "org.ccdocker1"
MANAGER = "/org/ccdocker1"
# PID 1 of the container: a shell with a TERM handler (so a stop is prompt), waiting on one sleep.
SESSION_COMMAND = "sh -c 'trap \"exit 0\" TERM; sleep infinity & wait'"

# ---- one sd-bus connection through ctypes ----

_sd = ctypes.CDLL("libsystemd.so.0")


class BusError(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("message", ctypes.c_char_p), ("need_free", ctypes.c_int)]


class Bus:
    """Method calls on the session bus ($DBUS_SESSION_BUS_ADDRESS, the sandbox's), one at a time."""

    def __init__(self):
        self.bus = ctypes.c_void_p()
        r = _sd.sd_bus_open_user(ctypes.byref(self.bus))
        if r < 0:
            raise OSError(-r, "sd_bus_open_user")

    def call(self, path, iface, member, types=None, *args):
        """Returns the reply (an sd_bus_message*, to read then unref); raises on an error reply."""
        err = BusError()
        reply = ctypes.c_void_p()
        r = _sd.sd_bus_call_method(self.bus, DEST.encode(), path.encode(), iface.encode(), member.encode(),
                                   ctypes.byref(err), ctypes.byref(reply),
                                   types.encode() if types else None, *args)
        if r < 0:
            msg = f"{member}: {(err.name or b'').decode()} {(err.message or b'').decode()} ({r})"
            _sd.sd_bus_error_free(ctypes.byref(err))
            raise RuntimeError(msg)
        return reply

    @staticmethod
    def unref(reply):
        _sd.sd_bus_message_unref(reply)

    def timed(self, path, iface, member, types=None, *args):
        t0 = time.perf_counter()
        reply = self.call(path, iface, member, types, *args)
        dt = time.perf_counter() - t0
        return dt, reply

    def create_session(self):
        dt, reply = self.timed(MANAGER, "org.ccdocker1.Manager", "CreateSession", "a{sv}", ctypes.c_uint(0))
        sid, path = ctypes.c_char_p(), ctypes.c_char_p()
        r = _sd.sd_bus_message_read(reply, b"so", ctypes.byref(sid), ctypes.byref(path))
        out = (sid.value.decode(), path.value.decode())
        self.unref(reply)
        if r < 0:
            raise OSError(-r, "CreateSession reply")
        return dt, out

    def list_sessions(self):
        """Times ListSessions; returns (seconds, number of entries read from the reply)."""
        dt, reply = self.timed(MANAGER, "org.ccdocker1.Manager", "ListSessions")
        n = 0
        r = _sd.sd_bus_message_enter_container(reply, ctypes.c_char(b"a"), b"(ssssto)")
        strs = [ctypes.c_char_p() for _ in range(5)]
        created = ctypes.c_uint64()
        while r >= 0:
            r = _sd.sd_bus_message_read(reply, b"(ssssto)", *[ctypes.byref(s) for s in strs[:4]],
                                        ctypes.byref(created), ctypes.byref(strs[4]))
            if r <= 0:
                break
            n += 1
        self.unref(reply)
        if r < 0:
            raise OSError(-r, "ListSessions reply")
        return dt, n

    def get_session(self, sid):
        dt, reply = self.timed(MANAGER, "org.ccdocker1.Manager", "GetSession", "s", sid.encode())
        self.unref(reply)
        return dt

    def get_all(self, path):
        dt, reply = self.timed(path, "org.freedesktop.DBus.Properties", "GetAll", "s", b"org.ccdocker1.Session")
        self.unref(reply)
        return dt

    def ping(self):
        dt, reply = self.timed(MANAGER, "org.freedesktop.DBus.Peer", "Ping")
        self.unref(reply)
        return dt

    def state(self, path):
        err = BusError()
        out = ctypes.c_char_p()
        r = _sd.sd_bus_get_property_string(self.bus, DEST.encode(), path.encode(), b"org.ccdocker1.Session",
                                           b"State", ctypes.byref(err), ctypes.byref(out))
        if r < 0:
            _sd.sd_bus_error_free(ctypes.byref(err))
            raise RuntimeError(f"State of {path}: {r}")
        s = out.value.decode()
        ctypes.CDLL(None).free(out)
        return s

    def stop(self, path):
        self.unref(self.call(path, "org.ccdocker1.Session", "Stop", "b", ctypes.c_int(1)))

    def remove(self, path):
        self.unref(self.call(path, "org.ccdocker1.Session", "Remove"))


# ---- memory ----

def memory(pid):
    """{rss, anon, pss, uss} in bytes of one process (uss: its private pages, clean and dirty)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out["rss" if k == "VmRSS" else "anon"] = int(v.split()[0]) * 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) * 1024
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                out["uss"] = out.get("uss", 0) + int(line.split()[1]) * 1024
    return out


def conmon_pss():
    """The Pss of every conmon process (one per running container) and their number."""
    total = n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "conmon":
                    continue
            total += memory(pid)["pss"]
            n += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total, n


def sessions_anon():
    """The anonymous memory charged to the sessions' slices (ccdocker.slice: the containers' processes),
    cgroup v1 or v2; None when neither is readable."""
    sub = os.path.join(sb.env("CCDOCKER_SANDBOX_CGROUP"), "manager", "ccdocker.slice", "memory.stat")
    for path, key in ((os.path.join("/sys/fs/cgroup/memory", sub), "total_rss"),
                      (os.path.join("/sys/fs/cgroup", sub), "anon")):
        try:
            with open(path) as f:
                for line in f:
                    k, v = line.split()
                    if k == key:
                        return int(v)
        except FileNotFoundError:
            continue
    return None


def settle(pids, seconds=2.0):
    """Lets the processes finish what the last calls started (a publish turn, a journal write)."""
    time.sleep(seconds)
    return {name: memory(pid) for name, pid in pids.items()}


# ---- httpd ----

def grant(httpd, token_name, ids):
    """Records ids as created by the token (what POST /api/v1/sessions writes), so it may see them."""
    db = sqlite3.connect(httpd.tokens, timeout=30)
    with db:
        (tid,) = db.execute("SELECT id FROM tokens WHERE name = ?", (token_name,)).fetchone()
        db.executemany("INSERT OR IGNORE INTO token_sessions (token_id, session_id) VALUES (?, ?)",
                       [(tid, i) for i in ids])
    db.close()


class Http:
    """One keep-alive connection to ccdocker-httpd."""

    def __init__(self, port, token):
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path):
        """Times one GET; a connection httpd closed while it was idle (a long stage) is opened again."""
        import http.client
        for attempt in (0, 1):
            t0 = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
                return time.perf_counter() - t0, resp.status, body
            except (http.client.RemoteDisconnected, ConnectionError):
                self.conn.close()
                if attempt:
                    raise


def open_stream(port, token, sid):
    """A WebSocket on /api/v1/sessions/{sid}/stream, upgraded and left open (its frames are not read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall((f"GET /api/v1/sessions/{sid}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError(f"stream {sid}: closed before the upgrade: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        first = head.split(b"\r\n")[0]
        raise AssertionError(f"stream {sid}: {first!r}")
    return s


class KeepAlive:
    """libpod REST on one kept connection, as the daemon's curl keeps its own."""

    def __init__(self, path):
        self.path = path
        self.conn = sb._UnixConnection(path)

    def get(self, path):
        for attempt in (0, 1):
            try:
                self.conn.request("GET", "/v4.0.0/libpod" + path)
                resp = self.conn.getresponse()
                resp.read()
                return resp.status
            except (OSError, Exception):
                self.conn.close()
                self.conn = sb._UnixConnection(self.path)
                if attempt:
                    raise


# ---- the stages ----

def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def wait_idle(bus, starting, in_flight, problems, timeout=300):
    """Polls the sessions in starting until at most in_flight are still starting; removes the idle ones."""
    deadline = time.monotonic() + timeout
    while len(starting) > in_flight:
        for path in list(starting):
            state = bus.state(path)
            if state in ("idle", "running"):
                starting.remove(path)
            elif state in ("stopped", "failed"):
                starting.remove(path)
                problems.append(f"{path} ended {state} while starting")
        if len(starting) > in_flight:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(starting)} sessions still starting after {timeout} s")
            time.sleep(0.05)


def measure_calls(bus, sessions, repeat):
    ls, gs, ga, ping = [], [], [], []
    for _ in range(repeat):
        dt, n = bus.list_sessions()
        if n != len(sessions):
            raise AssertionError(f"ListSessions gave {n} sessions, expected {len(sessions)}")
        ls.append(dt)
        sid, path = random.choice(sessions)
        gs.append(bus.get_session(sid))
        ga.append(bus.get_all(path))
        ping.append(bus.ping())
    return {"list": statistics.median(ls), "get": statistics.median(gs), "getall": statistics.median(ga),
            "ping": statistics.median(ping)}


def stop_all(bus, paths, problems, batch=32, timeout=600):
    """Stops and removes the sessions, batch at a time: the daemon asks systemd once per stop, and a bus
    with the stock limits (128 pending replies per connection) refuses more at once."""
    deadline = time.monotonic() + timeout
    for i in range(0, len(paths), batch):
        stopping = []
        for path in paths[i:i + batch]:
            try:
                bus.stop(path)
                stopping.append(path)
            except RuntimeError as e:
                problems.append(str(e))
        while stopping and time.monotonic() < deadline:
            for path in list(stopping):
                if bus.state(path) in ("stopped", "failed"):
                    stopping.remove(path)
                    try:
                        bus.remove(path)
                    except RuntimeError as e:
                        problems.append(str(e))
            time.sleep(0.05)
        if stopping:
            problems.append(f"{len(stopping)} sessions did not stop in {timeout} s, e.g. {stopping[0]}")
            return


def wait_containers_gone(podman, ids, timeout=60):
    """The ids whose container is still there after timeout (ExecStopPost or the daemon removes them)."""
    deadline = time.monotonic() + timeout
    while True:
        status, raw = podman.request("GET", "/containers/json?all=true")
        names = {n for c in json.loads(raw) for n in c.get("Names", [])} if status == 200 else set()
        left = [i for i in ids if f"ccdocker-{i}" in names]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 0


def live_counts(podman, prefix="ccdocker-"):
    status, raw = podman.request("GET", "/containers/json")
    running = [c for c in json.loads(raw) if any(n.startswith(prefix) for n in c.get("Names", []))] \
        if status == 200 else []
    units = sb.systemctl("list-units", "--no-legend", "--plain", "--state=active", "ccdocker-*.service",
                         check=False).stdout.splitlines()
    return len(running), len(units)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,100,500", help="the numbers of live sessions to measure at (1,100,500)")
    ap.add_argument("--streams", type=int, default=50, help="WebSocket streams open at the largest size (50)")
    ap.add_argument("--in-flight", type=int, default=8, help="sessions starting at once at most (8)")
    ap.add_argument("--repeat", type=int, default=50, help="calls of each lookup per size (50)")
    ap.add_argument("--hold", type=float, default=0, help="seconds to wait at the largest size, e.g. to profile (0)")
    args = ap.parse_args()
    sizes = sorted({int(x) for x in args.sizes.split(",")})
    top = sizes[-1]

    run_dir = sb.env("CCDOCKER_RUN_DIR")
    daemon = sb.Daemon(unit=UNIT, settings={
        "RuntimeDirectory": os.path.join(run_dir, "ccdockerd-bench-scale-runtime"),
        "SessionCommand": SESSION_COMMAND, "HeartbeatTimeoutSec": "0", "StopTimeoutSec": "5",
        "MaxSessions": str(top + 10), "MaxSessionsPerOwner": str(top + 10),
        # A placeholder credential: the daemon then runs its model proxy, and every session gets its model.sock.
    }, extra_env={"ANTHROPIC_API_KEY": "sk-bench-not-a-secret"})
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    podman = sb.Podman()
    image = daemon.settings["DefaultImage"]
    podman_keep = KeepAlive(sb.env("CCDOCKER_PODMAN_SOCKET"))
    problems, rows = [], []
    sessions = []  # (id, path)
    httpd = None
    streams = []
    t_start = time.monotonic()
    slices0 = sessions_anon() or 0
    try:
        daemon.start()
        bus = Bus()
        for _ in range(20):
            bus.ping()
        httpd = th.Httpd()
        token = httpd.token("bench-scale")
        web = Http(httpd.port, token)
        pids = {"daemon": daemon.main_pid(), "httpd": httpd.proc.pid}
        bus.list_sessions()
        web.get("/api/v1/sessions")
        idle = settle(pids)
        idle["fds"] = open_fds(pids["daemon"])
        idle["fd_limit"] = fd_limit(pids["daemon"])
        conmon0, _ = conmon_pss()
        print(f"bench/scale: sizes {sizes}; idle daemon VmRSS {idle['daemon']['rss'] / 1024:.0f} KiB, "
              f"httpd {idle['httpd']['rss'] / 1024:.0f} KiB", flush=True)

        starting = set()
        held = None  # the number of sessions at which CreateSession first failed
        for size in sizes:
            t_stage = time.monotonic()
            creates, exists = [], []
            while len(sessions) < size:
                try:
                    dt, (sid, path) = bus.create_session()
                except RuntimeError as e:
                    held = len(sessions)
                    problems.append(f"CreateSession failed with {held} sessions live: {e}")
                    break
                creates.append(dt)
                # CreateSession asks podman whether the image exists before it answers: the same call,
                # under the same load, is the floor it cannot go below.
                t0 = time.perf_counter()
                status = podman_keep.get(f"/images/{image}/exists")
                exists.append(time.perf_counter() - t0)
                if status != 204:
                    problems.append(f"podman images/{image}/exists: {status}")
                sessions.append((sid, path))
                starting.add(path)
                wait_idle(bus, starting, args.in_flight, problems)
            wait_idle(bus, starting, 0, problems)
            stage_s = time.monotonic() - t_stage
            if held is not None:
                if not creates:
                    break
                size = held  # measure what the machine held, and say so
            grant(httpd, "bench-scale", [sid for sid, _ in sessions])
            gets = []
            for sid, _ in sessions:
                dt, status, _ = web.get(f"/api/v1/sessions/{sid}")
                if status != 200:
                    problems.append(f"GET /api/v1/sessions/{sid}: {status}")
                gets.append(dt)
            mem = settle(pids)
            calls = measure_calls(bus, sessions, args.repeat)
            http_get = statistics.median(web.get(f"/api/v1/sessions/{random.choice(sessions)[0]}")[0]
                                         for _ in range(args.repeat))
            http_list = statistics.median(web.get("/api/v1/sessions")[0] for _ in range(max(5, args.repeat // 5)))
            conmon, n_conmon = conmon_pss()
            containers, units = live_counts(podman)
            row = {"size": size, "creates": creates, "exists": exists, "stage_s": stage_s, "mem": mem, "calls": calls,
                   "http_get": http_get, "http_list": http_list, "conmon": (conmon - conmon0) / size,
                   "n_conmon": n_conmon, "containers": containers, "units": units,
                   "slices": ((sessions_anon() or 0) - slices0) / size, "fds": open_fds(pids["daemon"])}
            if (size == top or held is not None) and args.streams:
                for sid, _ in sessions[:args.streams]:
                    streams.append(open_stream(httpd.port, token, sid))
                row["streams"] = settle(pids)["httpd"]
            rows.append(row)
            print(f"  {size} sessions: {containers} containers running, {units} session units active, "
                  f"stage {stage_s:.0f} s", flush=True)
            if containers < size or units < size:
                problems.append(f"at {size}: only {containers} containers and {units} units for {size} sessions")
            if args.hold and (size == top or held is not None):
                print(f"  holding {args.hold:.0f} s: daemon PID {pids['daemon']}, httpd PID {pids['httpd']} "
                      f"on port {httpd.port}, token in {httpd.tokens}", flush=True)
                with open(os.path.join(run_dir, "bench-scale-token"), "w") as f:
                    f.write(token)
                time.sleep(args.hold)
            if held is not None:
                print(f"  stopped at {held} sessions: CreateSession failed (see PROBLEM below)", flush=True)
                break
    finally:
        for s in streams:
            s.close()
        if sessions:
            print(f"stopping {len(sessions)} sessions ...", flush=True)
            stop_all(bus, [path for _, path in sessions], problems)
            leftover = wait_containers_gone(podman, [sid for sid, _ in sessions])
            if leftover:
                problems.append(f"{len(leftover)} containers of stopped sessions still there after 60 s "
                                f"(removed by the bench), e.g. ccdocker-{leftover[0]}")
                for sid in leftover:
                    podman.request("DELETE", f"/containers/ccdocker-{sid}?force=true&t=0")
        if httpd:
            httpd.stop()
        daemon.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)

    report(rows, idle, args, problems, time.monotonic() - t_start)
    return 1 if problems else 0


def report(rows, idle, args, problems, elapsed):
    kib = 1024
    print()
    print(f"bench/scale: {os.cpu_count()} CPUs; {elapsed:.0f} s in all; session command: {SESSION_COMMAND}")
    print(f"sizes run: {', '.join(str(r['size']) for r in rows)} live sessions (units and containers)")
    print()
    hdr = f"{'':<40}" + "".join(f"{r['size']:>12}" for r in rows)
    print("calls (ms; the baseline: Peer.Ping on the daemon, same connection)")
    print(hdr)

    def line(name, values, fmt="{:12.3f}"):
        print(f"  {name:<38}" + "".join(fmt.format(v) for v in values))

    line("CreateSession p50", [percentile(r["creates"], 50) * 1e3 for r in rows])
    line("CreateSession p99", [percentile(r["creates"], 99) * 1e3 for r in rows])
    line("  (calls in the stage)", [len(r["creates"]) for r in rows], "{:12d}")
    line("baseline: podman images/exists p50", [percentile(r["exists"], 50) * 1e3 for r in rows])
    line("baseline: podman images/exists p99", [percentile(r["exists"], 99) * 1e3 for r in rows])
    line("ListSessions", [r["calls"]["list"] * 1e3 for r in rows])
    line("  per session (µs)", [r["calls"]["list"] * 1e6 / r["size"] for r in rows])
    line("GetSession", [r["calls"]["get"] * 1e3 for r in rows])
    line("session GetAll", [r["calls"]["getall"] * 1e3 for r in rows])
    line("baseline: Peer.Ping", [r["calls"]["ping"] * 1e3 for r in rows])
    line("httpd GET /api/v1/sessions/{id}", [r["http_get"] * 1e3 for r in rows])
    line("httpd GET /api/v1/sessions", [r["http_list"] * 1e3 for r in rows])
    line("  per session (µs)", [r["http_list"] * 1e6 / r["size"] for r in rows])
    print()
    print(f"memory (KiB); idle: daemon VmRSS {idle['daemon']['rss'] / kib:.0f}, RssAnon "
          f"{idle['daemon']['anon'] / kib:.0f}, Pss {idle['daemon']['pss'] / kib:.0f}, USS {idle['daemon']['uss'] / kib:.0f}; httpd VmRSS "
          f"{idle['httpd']['rss'] / kib:.0f}, Pss {idle['httpd']['pss'] / kib:.0f}")
    print(hdr)
    for who in ("daemon", "httpd"):
        for k, name in (("rss", "VmRSS"), ("anon", "RssAnon"), ("pss", "Pss"), ("uss", "USS (private)")):
            line(f"{who} {name}", [r["mem"][who][k] / kib for r in rows], "{:12.0f}")
            line(f"  per session over idle", [(r["mem"][who][k] - idle[who][k]) / r["size"] / kib for r in rows],
                 "{:12.1f}")
    line("daemon open fds", [r["fds"] for r in rows], "{:12d}")
    line("  per session", [(r["fds"] - idle["fds"]) / r["size"] for r in rows], "{:12.2f}")
    line("conmon Pss per session", [r["conmon"] / kib for r in rows], "{:12.1f}")
    line("session slices' anon memory per session", [r["slices"] / kib for r in rows], "{:12.1f}")
    last = rows[-1]
    if "streams" in last:
        s = last["streams"]
        print(f"  httpd with {args.streams} WebSocket streams open at {last['size']}: VmRSS {s['rss'] / kib:.0f}, "
              f"Pss {s['pss'] / kib:.0f} ({(s['rss'] - last['mem']['httpd']['rss']) / args.streams / kib:.1f} "
              f"per stream)")
    print()
    print("growth (linear: the per-session figure stays put; a lookup: the time stays put)")
    for a, b in zip(rows, rows[1:]):
        n = b["size"] - a["size"]
        d = (b["mem"]["daemon"]["rss"] - a["mem"]["daemon"]["rss"]) / n / kib
        h = (b["mem"]["httpd"]["rss"] - a["mem"]["httpd"]["rss"]) / n / kib
        ls = (b["calls"]["list"] - a["calls"]["list"]) / n * 1e6
        print(f"  {a['size']} -> {b['size']}: daemon +{d:.1f} KiB/session, httpd +{h:.1f} KiB/session, "
              f"ListSessions +{ls:.2f} µs/session, GetSession x{b['calls']['get'] / a['calls']['get']:.2f}, "
              f"CreateSession p50 x{percentile(b['creates'], 50) / percentile(a['creates'], 50):.2f}")
    per = (last["mem"]["daemon"]["rss"] - idle["daemon"]["rss"]) / last["size"] / kib
    fds = (last["fds"] - idle["fds"]) / last["size"]
    print(f"the daemon's open-file limit {idle['fd_limit']} ({idle['fds']} fds idle, {fds:.2f} per session) allows "
          f"about {int((idle['fd_limit'] - idle['fds']) / max(fds, 0.01))} sessions")
    print(f"target: daemon RSS < 10 MB idle (now {idle['daemon']['rss'] / 1e6:.1f} MB) plus < 50 KB per idle "
          f"session (now {per * kib / 1e3:.1f} KB at {last['size']})")
    for p in problems[:20]:
        print(f"PROBLEM: {p}")


if __name__ == "__main__":
    sys.exit(main())

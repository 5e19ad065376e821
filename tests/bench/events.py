#!/usr/bin/env python3
"""bench/events: how fast a session's output goes through ccdockerd, and how late it arrives.

A session's container runs a small Python emitter (written into a host workspace and run as the
session command) that speaks the session channel (docs/channel.md) as ccdocker-init does: hello with
role init, then `events` calls of at most 1000 events, one call in flight, each waiting for its ack.
Each event is a ~300-byte stream-json-like assistant message; its `time` is CLOCK_REALTIME in µs when
the emitter made it. Two subscribers follow the session from before the first measured event:
`ccdockerctl --user --json attach ID --since 0` (Attach) and `redis-cli SUBSCRIBE session:ID:output`
(Redis pub/sub); each records when every event arrived.

  flood   N events as fast as the emitter can send them: events/s stored (acked by the daemon,
          which answers only after SQLite has them) and delivered to each subscriber, the daemon's
          CPU time per event, and a check that every event arrived at both, once and in order.
  steady  RATE events/s for SECONDS: latency from emit to stored (ack) and to each subscriber,
          p50/p99/max.

Baselines from the same run, so that the figures mean something on a shared, noisy machine: Redis
PUBLISH and XADD rates with redis-benchmark, a Python unix-socket echo round trip (flat out, and paced
at the steady RATE: the machine's own scheduling tail, beside the steady p99), and the same emitter
against a Python server that only parses and acks (the most the emitter could push with no daemon).

Nothing passes or fails on time (the targets are printed beside the figures); the exit status is 1
only if something broke: an event missing, repeated or out of order, a session that failed. Run it
in the sandbox:

    tools/ccdocker-dev exec -- /usr/bin/python3 tests/bench/events.py [-n 100000] [--rate 1000] [--seconds 10]
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import sandbox as sb  # noqa: E402

REDIS_CLI = "/usr/bin/redis-cli"
# The targets (issue 18): printed beside the figures, never checked.
TARGET_RATE = 100000        # flood events/s stored and delivered
TARGET_CPU_US = 20          # daemon CPU per event at flood
TARGET_P99_US = 2000        # steady emit -> Attach p99
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
UNIT = "ccdockerd-bench-events.service"

# The emitter, run in the session container as uid 1000 (`python3 /workspace/emit.py`), and on the
# host for the no-daemon baseline. Its settings come from the environment:
#   BENCH_MODE flood|steady, BENCH_N (flood), BENCH_RATE and BENCH_SECONDS (steady), BENCH_BATCH (<= 1000),
#   BENCH_SOCKET (the channel), BENCH_DIR (where the go/ready/stats/error files are), BENCH_EXIT=1 (exit
#   after the stats instead of idling until SIGTERM).
# Event 1 is a warm-up (system/init) sent right after hello, so that the host can see both subscribers
# receive it before it lets the measured events 2..N+1 go (by creating DIR/go). At the end it writes
# DIR/stats.json, then idles with heartbeats until SIGTERM, on which it exits 0.
EMITTER = r'''
import collections, json, os, signal, socket, sys, threading, time

signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

SOCK = os.environ.get("BENCH_SOCKET", "/run/ccdocker/session.sock")
DIR = os.environ.get("BENCH_DIR", "/workspace")
MODE = os.environ.get("BENCH_MODE", "flood")
N = int(os.environ.get("BENCH_N", "100000"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
BATCH = max(1, min(1000, int(os.environ.get("BENCH_BATCH", "1000"))))
EXIT = os.environ.get("BENCH_EXIT") == "1"

# One event as the channel carries it: seq, time, then ~320 bytes of data (%d: seq, time, seq).
EVENT = @EVENT@
WARMUP = '{"seq":1,"time":%d,"data":{"type":"system","subtype":"init","session_id":"bench"}}'


def now_us():
    return time.time_ns() // 1000


def fail(msg):
    try:
        with open(os.path.join(DIR, "error"), "w") as f:
            f.write(msg + "\n")
    finally:
        sys.stderr.write("emit: " + msg + "\n")
        sys.stderr.flush()
        os._exit(1)


class Channel:
    def __init__(self):
        deadline = time.monotonic() + 15
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(SOCK)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    fail("cannot connect to %s: %s" % (SOCK, e))
                time.sleep(0.05)
        self.rf = self.sock.makefile("rb")
        self.next_id = 1
        self.last_hb = time.monotonic()

    def call(self, method, params):
        """params: JSON text. One call in flight: returns its result."""
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(('{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}\n' % (rid, method, params)).encode())
        while True:
            line = self.rf.readline()
            if not line:
                fail("the daemon closed the channel during %s" % method)
            m = json.loads(line)
            if "method" in m:  # a request from the daemon (none expected): answer it
                if "id" in m:
                    self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {}}).encode() + b"\n")
                continue
            if m.get("id") != rid:
                continue
            if "error" in m:
                fail("%s refused: %s" % (method, json.dumps(m["error"])))
            return m["result"]

    def heartbeat_if_due(self):
        if time.monotonic() - self.last_hb >= 4:
            self.call("heartbeat", "{}")
            self.last_hb = time.monotonic()


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


def summary(values):
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values) if values else None,
            "mean": (sum(values) / len(values)) if values else None}


def send(ch, events, times, first_seq, stored_lat, rtts):
    sent = now_us()
    res = ch.call("events", '{"events":[' + ",".join(events) + "]}")
    ack = now_us()
    want = first_seq + len(events) - 1
    if res.get("acked") != want:
        fail("events %d..%d acked as %r" % (first_seq, want, res))
    rtts.append(ack - sent)
    stored_lat.extend(ack - t for t in times)
    return ack


def flood(ch):
    last = N + 1
    stored_lat, rtts = [], []
    cpu0 = time.process_time()
    start = now_us()
    seq = 2
    ack = start
    while seq <= last:
        ch.heartbeat_if_due()
        k = min(BATCH, last - seq + 1)
        events, times = [], []
        for s in range(seq, seq + k):
            t = time.time_ns() // 1000
            events.append(EVENT % (s, t, s))
            times.append(t)
        ack = send(ch, events, times, seq, stored_lat, rtts)
        seq += k
    return {"mode": "flood", "events": N, "start_us": start, "last_ack_us": ack, "calls": len(rtts),
            "cpu_s": time.process_time() - cpu0, "call_rtt_us": summary(rtts), "stored_lat_us": summary(stored_lat)}


def steady(ch):
    sys.setswitchinterval(0.0005)
    total = int(RATE * SECONDS)
    q = collections.deque()
    cond = threading.Condition()
    done = [False]
    late = [0]

    def produce():
        t0 = time.monotonic()
        for i in range(total):
            d = t0 + i / RATE - time.monotonic()
            if d > 0:
                time.sleep(d)
            elif d < -0.001:
                late[0] += 1
            t = time.time_ns() // 1000
            s = i + 2
            line = EVENT % (s, t, s)
            with cond:
                q.append((t, line))
                cond.notify()
        with cond:
            done[0] = True
            cond.notify()

    stored_lat, rtts, sizes = [], [], []
    cpu0 = time.process_time()
    start = now_us()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    seq = 2
    ack = start
    while True:
        with cond:
            if not q and not done[0]:
                cond.wait(0.5)
            batch = [q.popleft() for _ in range(min(len(q), BATCH))]
            finished = done[0] and not q
        if batch:
            ack = send(ch, [b[1] for b in batch], [b[0] for b in batch], seq, stored_lat, rtts)
            sizes.append(len(batch))
            seq += len(batch)
        ch.heartbeat_if_due()
        if finished and not batch:
            break
    return {"mode": "steady", "events": total, "rate": RATE, "start_us": start, "last_ack_us": ack,
            "calls": len(rtts), "mean_batch": sum(sizes) / max(1, len(sizes)), "late_producer": late[0],
            "cpu_s": time.process_time() - cpu0, "call_rtt_us": summary(rtts), "stored_lat_us": summary(stored_lat)}


def main():
    ch = Channel()
    hello = ch.call("hello", '{"role":"init","protocol":1}')
    if hello.get("last_seq", 0) != 0:
        fail("a fresh session has last_seq %r" % hello.get("last_seq"))
    r = ch.call("events", '{"events":[' + WARMUP % now_us() + "]}")
    if r.get("acked") != 1:
        fail("warm-up event acked as %r" % r)
    with open(os.path.join(DIR, "ready"), "w") as f:
        f.write("ready\n")
    go = os.path.join(DIR, "go")
    while not os.path.exists(go):
        ch.heartbeat_if_due()
        time.sleep(0.002)
    stats = flood(ch) if MODE == "flood" else steady(ch)
    tmp = os.path.join(DIR, "stats.json.tmp")
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.rename(tmp, os.path.join(DIR, "stats.json"))
    if EXIT:
        return
    while True:
        time.sleep(1)
        ch.heartbeat_if_due()


main()
'''

# A stand-in for the daemon's side of the channel, for the emitter's no-daemon ceiling: parses each
# request and acks it, storing nothing.
FAKE_CHANNEL = r'''
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
f = c.makefile("rb")
last = 0
for line in f:
    m = json.loads(line)
    method = m.get("method")
    if method == "hello":
        res = {"protocol": 1, "session_id": "baseline", "last_seq": 0, "config": {}}
    elif method == "events":
        ev = m["params"]["events"]
        if ev:
            last = ev[-1]["seq"]
        res = {"acked": last}
    else:
        res = {}
    c.sendall((json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": res}) + "\n").encode())
'''

ECHO_SERVER = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
for line in c.makefile("rb"):
    c.sendall(line)
'''

# One event as the channel, Attach and Redis carry it (%d: seq, time, seq), ~320 bytes of it data: a
# stream-json-like assistant message.
EVENT = ('{"seq":%d,"time":%d,"data":{"type":"assistant","message":{"id":"msg_bench","type":"message",'
         '"role":"assistant","model":"bench","content":[{"type":"text","text":"event %d: Reading the module '
         'and its tests first; then the change, a test for it, and a short note on what was checked and why '
         'it is enough"}],"stop_reason":null},"session_id":"bench"}}')
EMITTER = EMITTER.replace("@EVENT@", repr(EVENT))

# The Redis baselines send the same bytes.
PAYLOAD = EVENT % (123456, 1795607655374314, 123456)
DATA_BYTES = len(PAYLOAD) - len('{"seq":123456,"time":1795607655374314,"data":}')


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def now_us():
    return time.time_ns() // 1000


class Problems(list):
    def add(self, msg):
        print(f"PROBLEM: {msg}", flush=True)
        self.append(msg)


# ---------------------------------------------------------------------------------------------
# subscribers


class Subscriber:
    """A process that prints one event per line as {"seq":N,"time":T,"data":...} among other lines;
    records seq, event time and arrival time (CLOCK_REALTIME µs) of each."""

    def __init__(self, name, argv):
        self.name = name
        self.seqs = []
        self.times = []
        self.arrivals = []
        self.bad_data = 0
        self.subscribed = threading.Event()
        self.eof = threading.Event()
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        seqs, times, arrivals = self.seqs, self.times, self.arrivals
        for line in self.proc.stdout:
            arrived = time.time_ns() // 1000
            if not line.startswith(b'{"seq":'):
                if line.rstrip(b"\n") == b"subscribe":
                    self.subscribed.set()
                continue
            try:
                i = line.index(b',"time":', 7)
                j = line.index(b",", i + 8)
                seq = int(line[7:i])
                t = int(line[i + 8:j])
            except ValueError:
                self.bad_data += 1
                continue
            if seq > 1 and line.find(b'"text":"event %d: ' % seq, j) < 0:
                self.bad_data += 1
            seqs.append(seq)
            times.append(t)
            arrivals.append(arrived)
        self.eof.set()

    def count(self):
        return len(self.seqs)

    def has(self, seq):
        return seq in self.seqs[:5]

    def check(self, total):
        """(missing, repeated, out of order, bad data) against seqs 1..total."""
        seqs = list(self.seqs)
        seen = set(seqs)
        missing = sum(1 for s in range(1, total + 1) if s not in seen)
        repeated = len(seqs) - len(seen)
        disorder = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
        return missing, repeated, disorder, self.bad_data

    def latencies(self, first_seq=2):
        return [a - t for s, t, a in zip(self.seqs, self.times, self.arrivals) if s >= first_seq]

    def last_arrival(self):
        return self.arrivals[-1] if self.arrivals else None

    def stop(self, wait=10):
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        self.proc.stdout.close()
        self.stderr.seek(0)
        err = self.stderr.read().decode("utf-8", "replace").strip()
        self.stderr.close()
        return err


# ---------------------------------------------------------------------------------------------
# CPU accounting


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle


def busy_fraction(before, after):
    total = after[0] - before[0]
    idle = after[1] - before[1]
    return (total - idle) / total if total > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# baselines


def redis_benchmark(sock, n, pipeline, *command):
    if not os.path.exists(REDIS_BENCHMARK):
        return None
    p = subprocess.run([REDIS_BENCHMARK, "-s", sock, "-c", "1", "-P", str(pipeline), "-n", str(n), "-q", *command],
                       capture_output=True, text=True, timeout=120)
    found = re.findall(r"([\d.]+) requests per second", p.stdout)
    if p.returncode != 0 or not found:
        print(f"redis-benchmark {' '.join(command[:2])}: exit {p.returncode}: {p.stderr.strip() or p.stdout[-300:]}")
        return None
    return float(found[-1])


def start_server(source, sock_path):
    proc = subprocess.Popen([sys.executable, "-c", source, sock_path], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "listening":
        proc.kill()
        proc.wait()
        raise AssertionError("a baseline server did not start")
    return proc


def stop_proc(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@contextlib.contextmanager
def echo_client(tmp, name):
    """A connection to a fresh unix socket echo server: yields a function that sends one event line and
    waits for it to come back."""
    server = start_server(ECHO_SERVER, os.path.join(tmp, name))
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(tmp, name))
        rf = s.makefile("rb")
        line = PAYLOAD.encode() + b"\n"

        def round_trip():
            s.sendall(line)
            if rf.readline() != line:
                raise AssertionError("echo server answered something else")
        try:
            yield round_trip
        finally:
            rf.close()
            s.close()
    finally:
        stop_proc(server)


def echo_rate(tmp, seconds=1.0):
    with echo_client(tmp, "echo.sock") as round_trip:
        n = 0
        start = time.monotonic()
        while True:
            round_trip()
            n += 1
            if n % 256 == 0 and time.monotonic() - start >= seconds:
                break
        return n / (time.monotonic() - start)


def echo_steady(tmp, rate, seconds):
    """The scheduling tail of this machine now: one line at RATE/s through a unix socket echo (Python
    both ends), as the steady phase paces its events; [round trip µs] of every line."""
    with echo_client(tmp, "echo-steady.sock") as round_trip:
        rtts = []
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            d = t0 + i / rate - time.monotonic()
            if d > 0:
                time.sleep(d)
            sent = time.monotonic_ns()
            round_trip()
            rtts.append((time.monotonic_ns() - sent) // 1000)
        return rtts


def emitter_ceiling(tmp, n):
    d = os.path.join(tmp, "ceiling")
    os.mkdir(d)
    emit = os.path.join(d, "emit.py")
    with open(emit, "w") as f:
        f.write(EMITTER)
    path = os.path.join(d, "channel.sock")
    server = start_server(FAKE_CHANNEL, path)
    try:
        open(os.path.join(d, "go"), "w").close()
        env = dict(os.environ, BENCH_SOCKET=path, BENCH_DIR=d, BENCH_MODE="flood", BENCH_N=str(n), BENCH_EXIT="1")
        p = subprocess.run([sys.executable, emit], env=env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"the emitter against the fake channel exited {p.returncode}: {p.stderr.strip()}")
        with open(os.path.join(d, "stats.json")) as f:
            stats = json.load(f)
        return n / ((stats["last_ack_us"] - stats["start_us"]) / 1e6)
    finally:
        stop_proc(server)


def baselines(tmp, n, rate, seconds):
    sock = sb.env("CCDOCKER_REDIS_SOCKET")
    key = "bench:events:baseline"
    b = {}
    b["publish_rtt"] = redis_benchmark(sock, 20000, 1, "PUBLISH", key, PAYLOAD)
    b["publish_pipe"] = redis_benchmark(sock, 200000, 100, "PUBLISH", key, PAYLOAD)
    b["xadd_pipe"] = redis_benchmark(sock, 100000, 100, "XADD", key, "MAXLEN", "~", "10000", "*",
                                     "seq", "1", "time", "1", "data", PAYLOAD)
    sb.run(REDIS_CLI, "-s", sock, "DEL", key, check=False)
    b["echo"] = echo_rate(tmp)
    b["echo_steady"] = echo_steady(tmp, rate, min(seconds, 5))
    b["emitter"] = emitter_ceiling(tmp, n)
    return b


# ---------------------------------------------------------------------------------------------
# one session


def session_log(sid):
    return sb.journal(f"_SYSTEMD_UNIT=ccdocker-session-{sid}.service", output="cat")[-2000:]


def run_phase(daemon, base, mode, env_vars, total, problems, timeout):
    """Creates a session whose emitter runs MODE with ENV_VARS, follows it with both subscribers until
    all TOTAL events (the warm-up included) arrived or nothing moved for a while; returns the figures."""
    ws = os.path.join(base, f"ws-{mode}")
    os.mkdir(ws, 0o755)
    with open(os.path.join(ws, "emit.py"), "w") as f:
        f.write(EMITTER)
    os.chown(os.path.join(ws, "emit.py"), 1000, 1000)
    os.chown(ws, 1000, 1000)
    redis_sock = sb.env("CCDOCKER_REDIS_SOCKET")

    sid, path = sb.create_session("workspace", "s", ws, "environment", "a{ss}", env_vars)
    subs = []
    result = {"sid": sid}
    try:
        redis_sub = Subscriber("Redis", [REDIS_CLI, "-s", redis_sock, "SUBSCRIBE", f"session:{sid}:output"])
        subs.append(redis_sub)
        if not redis_sub.subscribed.wait(10):
            raise AssertionError("redis-cli SUBSCRIBE did not confirm its subscription")

        def ready():
            if os.path.exists(os.path.join(ws, "error")):
                raise AssertionError(f"the emitter failed: {open(os.path.join(ws, 'error')).read().strip()}")
            state = sb.session_prop(path, "State")
            if state in ("stopped", "failed"):
                raise AssertionError(f"session {sid} {state}: {sb.session_prop(path, 'StateReason')}\n"
                                     f"{session_log(sid)}")
            return os.path.exists(os.path.join(ws, "ready"))
        sb.wait_until(ready, 60, 0.05, what="the emitter's hello and warm-up event")

        attach_sub = Subscriber("Attach", ["ccdockerctl", "--user", "--json", "attach", sid, "--since", "0"])
        subs.append(attach_sub)
        sb.wait_until(lambda: attach_sub.has(1) and redis_sub.has(1), 15, 0.01,
                      what="the warm-up event at both subscribers")

        pid = daemon.main_pid()
        cpu0, m0 = proc_cpu_s(pid), machine_cpu()
        open(os.path.join(ws, "go"), "w").close()

        stats_path = os.path.join(ws, "stats.json")
        deadline = time.monotonic() + timeout
        last_progress, last_counts = time.monotonic(), None
        while True:
            time.sleep(0.1)
            if os.path.exists(os.path.join(ws, "error")):
                raise AssertionError(f"the emitter failed: {open(os.path.join(ws, 'error')).read().strip()}")
            counts = (attach_sub.count(), redis_sub.count(), os.path.exists(stats_path))
            if counts != last_counts:
                last_counts, last_progress = counts, time.monotonic()
            if counts[2] and counts[0] >= total and counts[1] >= total:
                break
            if time.monotonic() - last_progress > 15 or time.monotonic() > deadline:
                problems.add(f"{mode}: gave up waiting: emitter done {counts[2]}, Attach {counts[0]}/{total}, "
                             f"Redis {counts[1]}/{total} (state {sb.session_prop(path, 'State')})")
                break
        cpu1, m1 = proc_cpu_s(pid), machine_cpu()
        result["daemon_cpu_s"] = cpu1 - cpu0
        result["machine_busy"] = busy_fraction(m0, m1)
        if os.path.exists(stats_path):
            with open(stats_path) as f:
                result["emitter"] = json.load(f)
        else:
            problems.add(f"{mode}: the emitter wrote no stats")
        last_seq = sb.session_prop(path, "LastSeq")
        result["last_seq"] = last_seq
        if last_seq != total:
            problems.add(f"{mode}: the daemon stored up to seq {last_seq}, expected {total}")
        for sub in (attach_sub, redis_sub):
            missing, repeated, disorder, bad = sub.check(total)
            result[sub.name] = {"count": sub.count(), "missing": missing, "repeated": repeated, "disorder": disorder,
                                "bad": bad, "last_arrival": sub.last_arrival(), "lat": sub.latencies()}
            if missing or repeated or disorder or bad:
                problems.add(f"{mode}: {sub.name} subscriber: {missing} missing, {repeated} repeated, "
                             f"{disorder} out of order, {bad} with wrong data (of {total})")
    finally:
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "false", check=False)
        try:
            state = sb.wait_state(path, "stopped", "failed", timeout=30)
            if state != "stopped":
                problems.add(f"{mode}: session {sid} ended {state}: {sb.session_prop(path, 'StateReason')}")
        finally:
            sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Remove", check=False)
            # Remove leaves the session's Redis stream behind; this one only holds benchmark events.
            sb.run(REDIS_CLI, "-s", redis_sock, "DEL", f"session:{sid}:output", check=False)
            for sub in subs:
                err = sub.stop(wait=10 if sub.name == "Attach" else 0)
                if err and sub.name == "Attach":
                    print(f"ccdockerctl attach said: {err[-500:]}")
            shutil.rmtree(ws, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------
# report


def fmt_rate(v):
    return "-" if v is None else f"{v:>10,.0f}"


def ms(us):
    return "-" if us is None else f"{us / 1000:7.2f}"


def lat_row(name, lat):
    if not lat:
        return f"  {name:<38} (no data)"
    return (f"  {name:<38} p50 {ms(percentile(lat, 50))} ms  p99 {ms(percentile(lat, 99))} ms  "
            f"max {ms(max(lat))} ms  mean {ms(statistics.mean(lat))} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100000, help="events in the flood (default 100000)")
    ap.add_argument("--rate", type=float, default=1000, help="events/s of the steady run (default 1000)")
    ap.add_argument("--seconds", type=float, default=10, help="length of the steady run (default 10)")
    ap.add_argument("--batch", type=int, default=1000, help="most events per call (default and limit 1000)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baselines")
    args = ap.parse_args()
    sys.setswitchinterval(0.0005)  # the reader threads stamp arrivals: keep GIL hand-overs short

    run_dir = sb.env("CCDOCKER_RUN_DIR")
    runtime_dir = os.path.join(run_dir, "ccdockerd-bench-runtime")
    base = tempfile.mkdtemp(prefix="ccdocker-bench-events-", dir=run_dir)
    os.chmod(base, 0o755)
    problems = Problems()
    steady_total = int(args.rate * args.seconds)
    t_start = time.monotonic()
    base_figs, flood, steady = {}, None, None
    try:
        if not args.no_baseline:
            print("baselines ...", flush=True)
            base_figs = baselines(base, args.n, args.rate, args.seconds)
        daemon = sb.Daemon(unit=UNIT, settings={
            "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
            "RuntimeDirectory": runtime_dir,
            "WorkspaceRoots": base,
            "SessionCommand": "/usr/bin/python3 /workspace/emit.py",
        })
        shutil.rmtree(daemon.state_dir, ignore_errors=True)
        daemon.start()
        try:
            print(f"flood: {args.n} events ...", flush=True)
            flood = run_phase(daemon, base, "flood",
                              {"BENCH_MODE": "flood", "BENCH_N": str(args.n), "BENCH_BATCH": str(args.batch)},
                              args.n + 1, problems, timeout=max(120, args.n / 1000))
            print(f"steady: {args.rate:.0f} events/s for {args.seconds:.0f} s ...", flush=True)
            steady = run_phase(daemon, base, "steady",
                               {"BENCH_MODE": "steady", "BENCH_RATE": str(args.rate),
                                "BENCH_SECONDS": str(args.seconds), "BENCH_BATCH": str(args.batch)},
                               steady_total + 1, problems, timeout=args.seconds + 120)
        finally:
            daemon.stop()
            shutil.rmtree(daemon.state_dir, ignore_errors=True)
            shutil.rmtree(runtime_dir, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"bench/events: {os.cpu_count()} CPUs; flood {args.n} events, batches of at most {args.batch}; "
          f"steady {args.rate:.0f} events/s for {args.seconds:.0f} s; events of {DATA_BYTES} B data, "
          f"{len(PAYLOAD)} B as a line; "
          f"{time.monotonic() - t_start:.0f} s in all")
    ceiling = base_figs.get("emitter")
    if base_figs:
        print("baselines (same run)")
        print(f"  {'Redis PUBLISH, 1 client, round trip':<46} {fmt_rate(base_figs.get('publish_rtt'))} /s")
        print(f"  {'Redis PUBLISH, 1 client, pipeline 100':<46} {fmt_rate(base_figs.get('publish_pipe'))} /s")
        print(f"  {'Redis XADD MAXLEN~, 1 client, pipeline 100':<46} {fmt_rate(base_figs.get('xadd_pipe'))} /s")
        print(f"  {'unix socket echo (Python), round trip':<46} {fmt_rate(base_figs.get('echo'))} /s")
        print(f"  {'emitter -> Python parse-and-ack, no store':<46} {fmt_rate(ceiling)} events/s")

    if flood and "emitter" in flood:
        e = flood["emitter"]
        start = e["start_us"]
        n = e["events"]
        stored = n / ((e["last_ack_us"] - start) / 1e6)
        print(f"flood ({n} events, {e['calls']} calls; machine {flood['machine_busy'] * 100:.0f}% busy)")

        def ratio_to(v, ref, label):
            return f"   {v / ref:5.2f} x {label}" if ref else ""
        print(f"  {'stored (acked)':<46} {fmt_rate(stored)} events/s   target >= {TARGET_RATE:,}: {stored / TARGET_RATE:.2f} x"
              f"{ratio_to(stored, ceiling, 'emitter ceiling')}"
              f"{ratio_to(stored, base_figs.get('xadd_pipe'), 'Redis XADD')}")
        for name in ("Attach", "Redis"):
            s = flood[name]
            if s["last_arrival"]:
                rate = s["count"] - 1 if s["count"] else 0
                rate = rate / ((s["last_arrival"] - start) / 1e6)
                print(f"  {'delivered to ' + name:<46} {fmt_rate(rate)} events/s   "
                      f"{rate / stored:.2f} x stored; {s['count'] - 1} of {n} arrived, {s['missing']} missing")
        print(f"  {'daemon CPU per event':<46} {flood['daemon_cpu_s'] / n * 1e6:10.1f} µs   "
              f"target <= {TARGET_CPU_US}: {flood['daemon_cpu_s'] / n * 1e6 / TARGET_CPU_US:.2f} x   "
              f"({flood['daemon_cpu_s']:.2f} s in all; emitter {e['cpu_s'] / n * 1e6:.1f} µs/event)")
        print(f"  {'events call round trip (1000 events)':<46} p50 {ms(e['call_rtt_us']['p50'])} ms  "
              f"p99 {ms(e['call_rtt_us']['p99'])} ms  max {ms(e['call_rtt_us']['max'])} ms")
        print("  latency under flood (backlog included)")
        print(f"  {'emit -> stored':<38} p50 {ms(e['stored_lat_us']['p50'])} ms  p99 {ms(e['stored_lat_us']['p99'])} ms  "
              f"max {ms(e['stored_lat_us']['max'])} ms")
        print(lat_row("emit -> Attach", flood["Attach"]["lat"]))
        print(lat_row("emit -> Redis", flood["Redis"]["lat"]))

    if steady and "emitter" in steady:
        e = steady["emitter"]
        print(f"steady ({e['events']} events at {e['rate']:.0f}/s, {e['calls']} calls of {e['mean_batch']:.1f} "
              f"events on average; machine {steady['machine_busy'] * 100:.0f}% busy; "
              f"daemon CPU {steady['daemon_cpu_s'] / e['events'] * 1e6:.1f} µs/event)")
        print(f"  {'emit -> stored':<38} p50 {ms(e['stored_lat_us']['p50'])} ms  p99 {ms(e['stored_lat_us']['p99'])} ms  "
              f"max {ms(e['stored_lat_us']['max'])} ms  mean {ms(e['stored_lat_us']['mean'])} ms")
        for name in ("Attach", "Redis"):
            lat = steady[name]["lat"]
            print(lat_row(f"emit -> {name}", lat)
                  + (f"   p99 target <= {TARGET_P99_US / 1000:g} ms: {percentile(lat, 99) / TARGET_P99_US:.2f} x"
                     if lat else ""))
        if base_figs.get("echo"):
            print(f"  {'(unix socket echo round trip, for scale)':<38} {1e3 / base_figs['echo']:7.3f} ms")
        if base_figs.get("echo_steady"):
            print(lat_row(f"(echo at {args.rate:.0f}/s, same machine)", base_figs["echo_steady"]))
        if e.get("late_producer"):
            print(f"  the emitter's producer fell more than 1 ms behind its schedule {e['late_producer']} times")

    summary_rows = []
    if flood and "emitter" in flood:
        e = flood["emitter"]
        stored = e["events"] / ((e["last_ack_us"] - e["start_us"]) / 1e6)
        summary_rows.append(("flood stored events/s", f"{stored:,.0f}", f">= {TARGET_RATE:,}",
                             f"{stored / TARGET_RATE:.2f}"))
        for name in ("Attach", "Redis"):
            s = flood[name]
            if s["last_arrival"]:
                rate = (s["count"] - 1) / ((s["last_arrival"] - e["start_us"]) / 1e6)
                summary_rows.append((f"flood delivered to {name} events/s", f"{rate:,.0f}", f">= {TARGET_RATE:,}",
                                     f"{rate / TARGET_RATE:.2f}"))
        cpu = flood["daemon_cpu_s"] / e["events"] * 1e6
        summary_rows.append(("flood daemon CPU µs/event", f"{cpu:.1f}", f"<= {TARGET_CPU_US}",
                             f"{cpu / TARGET_CPU_US:.2f}"))
    if steady and "emitter" in steady:
        for name in ("Attach", "Redis"):
            lat = steady[name]["lat"]
            if lat:
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                summary_rows.append((f"steady {name} p50 / p99 ms", f"{p50 / 1000:.2f} / {p99 / 1000:.2f}",
                                     f"p99 <= {TARGET_P99_US / 1000:g}", f"{p99 / TARGET_P99_US:.2f}"))
        summary_rows.append(("steady daemon CPU µs/event", f"{steady['daemon_cpu_s'] / steady['emitter']['events'] * 1e6:.1f}", "", ""))
    if base_figs.get("echo"):
        summary_rows.append(("baseline: unix socket echo ms", f"{1e3 / base_figs['echo']:.3f}", "", ""))
    if base_figs.get("echo_steady"):
        summary_rows.append((f"baseline: echo at {args.rate:.0f}/s p99 ms",
                             f"{percentile(base_figs['echo_steady'], 99) / 1000:.2f}", "", ""))
    if summary_rows:
        print()
        print(f"{'summary':<36} {'measured':>16} {'target':>11} {'ratio':>7}")
        for row in summary_rows:
            print(f"{row[0]:<36} {row[1]:>16} {row[2]:>11} {row[3]:>7}")
    print()
    if problems:
        print(f"{len(problems)} functional problem(s):")
        for p in problems:
            print(f"  {p}")
        return 1
    print("no events missing, repeated or out of order at either subscriber")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A flood of events through the session channel (docs/channel.md), the path ccdocker-init's events take
(the channel's fast path, daemon/channel-events.c), with the daemon killed -9 in the middle of it: after
the restart every event the container sent is stored exactly once and in order (GetOutput), the Redis
stream holds each once and in order, and an Attach from 0 replays them all alike. The container runs a
small emitter that speaks the channel as ccdocker-init does: hello, then events calls of 100 events,
one in flight, each sent again after a reconnect from the last_seq hello reports, until told to stop."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import sandbox as sb

REDIS_CLI = "/usr/bin/redis-cli"
UNIT = "ccdockerd-events-flood-test.service"

EMITTER = r'''
import json, os, signal, socket, time

signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
SOCK = "/run/ccdocker/session.sock"
DIR = "/workspace"
BATCH = 100


def event(seq):
    data = {"type": "flood", "i": seq, "text": "caf\u00e9 \u2603 \"quoted\" and a \\ backslash", "pad": "x" * 100}
    if seq % 1000 == 0:
        data = {"type": "result", "subtype": "success", "i": seq, "result": "batch %d" % seq}
    return json.dumps({"seq": seq, "time": time.time_ns() // 1000, "data": data}, separators=(",", ":"))


class Conn:
    def __init__(self):
        while True:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.s.connect(SOCK)
                break
            except OSError:
                self.s.close()
                time.sleep(0.05)
        self.f = self.s.makefile("rb")
        self.id = 0

    def call(self, method, params):
        self.id += 1
        self.s.sendall(('{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}\n' % (self.id, method, params)).encode())
        while True:
            line = self.f.readline()
            if not line:
                raise OSError("closed")
            m = json.loads(line)
            if m.get("id") == self.id and "method" not in m:
                if "error" in m:
                    raise OSError("refused: %r" % m["error"])
                return m["result"]


last_hb = time.monotonic()
while True:
    try:
        c = Conn()
        acked = c.call("hello", '{"role":"init","protocol":1}').get("last_seq", 0)
        while not os.path.exists(os.path.join(DIR, "stop")):
            if time.monotonic() - last_hb > 3:
                c.call("heartbeat", "{}")
                last_hb = time.monotonic()
            evs = [event(s) for s in range(acked + 1, acked + 1 + BATCH)]
            acked = c.call("events", '{"events":[' + ",".join(evs) + "]}")["acked"]
            time.sleep(0.005)
        with open(os.path.join(DIR, "done.tmp"), "w") as f:
            f.write(str(acked))
        os.rename(os.path.join(DIR, "done.tmp"), os.path.join(DIR, "done"))
        while True:
            time.sleep(1)
            c.call("heartbeat", "{}")
    except (OSError, ValueError):
        time.sleep(0.05)
'''


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def get_output_all(path):
    """Every stored event, page by page: [(seq, time, data)]."""
    events, since = [], 0
    while True:
        p = call(path, "GetOutput", "tu", str(since), "0")
        page = json.loads(p.stdout)["data"][0]
        if not page:
            return events
        events += [(seq, t, json.loads(data)) for seq, t, data in page]
        since = page[-1][0]


def stream_seqs(sock, key):
    out = sb.run(REDIS_CLI, "-s", sock, "--json", "XRANGE", key, "-", "+", timeout=60).stdout
    seqs = []
    for _id, fields in json.loads(out):
        f = dict(zip(fields[::2], fields[1::2]))
        seqs.append((int(f["seq"]), json.loads(f["data"])))
    return seqs


class EventsFloodTest(unittest.TestCase):
    def test_kill9_mid_flood_stores_and_streams_each_event_once(self):
        run_dir = sb.env("CCDOCKER_RUN_DIR")
        redis = sb.env("CCDOCKER_REDIS_SOCKET")
        base = tempfile.mkdtemp(prefix="ccdocker-flood-", dir=run_dir)
        os.chmod(base, 0o755)
        self.addCleanup(shutil.rmtree, base, True)
        ws = os.path.join(base, "ws")
        os.mkdir(ws, 0o755)
        with open(os.path.join(ws, "emit.py"), "w") as f:
            f.write(EMITTER)
        for p in (ws, os.path.join(ws, "emit.py")):
            os.chown(p, 1000, 1000)

        daemon = sb.Daemon(unit=UNIT, settings={
            "RedisSocket": redis,
            "RuntimeDirectory": os.path.join(run_dir, "ccdockerd-flood-runtime"),
            "WorkspaceRoots": base,
            "SessionCommand": "/usr/bin/python3 /workspace/emit.py",
            "HeartbeatTimeoutSec": "30",
        })
        shutil.rmtree(daemon.state_dir, ignore_errors=True)
        daemon.start()
        self.addCleanup(shutil.rmtree, daemon.state_dir, True)
        self.addCleanup(daemon.stop)

        sid, path = sb.create_session("workspace", "s", ws)
        key = f"session:{sid}:output"
        self.addCleanup(sb.run, REDIS_CLI, "-s", redis, "DEL", key, check=False)
        self.addCleanup(call, path, "Remove", check=False)
        self.addCleanup(call, path, "Stop", "b", "false", check=False)

        sb.wait_until(lambda: sb.session_prop(path, "LastSeq") >= 1000, 90, 0.01, what="the flood to start")
        daemon.kill9()
        daemon.start()
        after_restart = sb.session_prop(path, "LastSeq")
        # The emitter goes on through the new daemon's socket from the last_seq its hello gets.
        sb.wait_until(lambda: sb.session_prop(path, "LastSeq") >= after_restart + 1000, 90, 0.05,
                      what="the flood to go on after the restart")
        open(os.path.join(ws, "stop"), "w").close()
        sb.wait_until(lambda: os.path.exists(os.path.join(ws, "done")), 60, 0.05, what="the emitter to stop")
        with open(os.path.join(ws, "done")) as f:
            total = int(f.read())
        self.assertGreaterEqual(total, after_restart + 1000)
        self.assertEqual(sb.session_prop(path, "LastSeq"), total)

        stored = get_output_all(path)
        self.assertEqual([e[0] for e in stored], list(range(1, total + 1)), "a gap or a duplicate in GetOutput")
        self.assertEqual([e[2]["i"] for e in stored], list(range(1, total + 1)))
        self.assertEqual(stored[1][2]["text"], "caf\u00e9 \u2603 \"quoted\" and a \\ backslash")
        self.assertEqual(stored[999][2]["type"], "result")

        # The stream keeps about its last 10000 entries: what it has runs without a gap or a repeat to
        # the last stored event.
        def caught_up():
            s = stream_seqs(redis, key)
            return s if s and s[-1][0] == total else None
        entries = sb.wait_until(caught_up, 60, 0.2, what="the Redis stream to reach the last event")
        seqs = [e[0] for e in entries]
        self.assertEqual(seqs, list(range(seqs[0], total + 1)), "a gap or a duplicate in the Redis stream")
        if total <= 10000:
            self.assertEqual(seqs[0], 1)
        self.assertEqual([e[1]["i"] for e in entries], seqs)

        # An Attach from 0 replays the same events, once each.
        attached = []
        proc = subprocess.Popen(["ccdockerctl", "--user", "--json", "attach", sid, "--since", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if line.startswith('{"seq":'):
                    attached.append(json.loads(line)["seq"])
                    if attached[-1] >= total:
                        break
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        self.assertEqual(attached, list(range(1, total + 1)))


if __name__ == "__main__":
    unittest.main()

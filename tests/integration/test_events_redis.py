"""The event bus (daemon/events.c) against real Redis, through tests/helpers/events-probe: events stored
in SQLite reach the stream session:{id}:output (XADD) and its channel (PUBLISH) in order; events stored
while Redis is away, by this process or an earlier one, are published once it is there, and only once;
and across a Redis restart in the middle of a stream every event is in the stream exactly once, in
order. The first case uses the sandbox's Redis ($CCDOCKER_REDIS_SOCKET); the others start their own
redis-server on a socket in a temporary directory and stop it by PID. A subscriber is `redis-cli
SUBSCRIBE` in the background."""

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import sandbox as sb

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


def probe_path():
    return os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "events-probe")


def channel(sid):
    return f"session:{sid}:output"


def redis_cli(sock, *args):
    return sb.run(REDIS_CLI, "-s", sock, *args, timeout=30).stdout


def stream_entries(sock, key):
    """[(seq, time, data)] of the whole stream, oldest first."""
    out = redis_cli(sock, "--json", "XRANGE", key, "-", "+")
    entries = []
    for _id, fields in json.loads(out):
        f = dict(zip(fields[::2], fields[1::2]))
        entries.append((int(f["seq"]), int(f["time"]), json.loads(f["data"])))
    return entries


class Subscriber:
    """`redis-cli SUBSCRIBE CHANNEL`, its messages parsed as they come (redis-cli prints each reply
    element on a line of its own: "message", the channel, the payload)."""

    def __init__(self, sock, chan):
        self.proc = subprocess.Popen([REDIS_CLI, "-s", sock, "SUBSCRIBE", chan], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.messages = []
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_line("subscribe", 10)

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self, deadline):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"redis-cli SUBSCRIBE: timed out; {len(self.messages)} messages so far")
            try:
                line = self._lines.get(timeout=remaining)
                break
            except queue.Empty:
                continue
        if line is None:
            raise AssertionError(f"redis-cli SUBSCRIBE exited: {self.proc.wait()} {self.proc.stderr.read()}")
        return line

    def _wait_line(self, want, timeout):
        deadline = time.monotonic() + timeout
        while self._next(deadline) != want:
            pass

    def wait_for(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if self._next(deadline) == "message":
                self._next(deadline)  # the channel
                self.messages.append(json.loads(self._next(deadline)))
        return self.messages

    def wait_for_seq(self, last, timeout=60):
        """Reads until the message with seq `last` has come (missing ones before it are not waited for)."""
        deadline = time.monotonic() + timeout
        while not self.messages or self.messages[-1]["seq"] < last:
            if self._next(deadline) == "message":
                self._next(deadline)  # the channel
                self.messages.append(json.loads(self._next(deadline)))
        return self.messages

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


class RedisServer:
    """A redis-server of the test's own, on DIR/redis.sock, stopped by PID."""

    def __init__(self, directory, appendonly=False):
        self.dir = directory
        self.sock = os.path.join(directory, "redis.sock")
        self.appendonly = appendonly
        self.proc = None

    def start(self):
        argv = [REDIS_SERVER, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--dir", self.dir, "--save", "", "--daemonize", "no", "--logfile", "",
                "--appendonly", "yes" if self.appendonly else "no"]
        log = open(os.path.join(self.dir, "redis.log"), "a")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        sb.wait_until(lambda: sb.run(REDIS_CLI, "-s", self.sock, "ping", check=False).stdout.strip() == "PONG"
                      or self.proc.poll() is not None, 15, what="redis-server to answer")
        if self.proc.poll() is not None:
            with open(os.path.join(self.dir, "redis.log")) as f:
                raise AssertionError(f"redis-server exited: {f.read()[-2000:]}")
        return self

    def kill(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class RunningProbe:
    """events-probe in the background, its JSON lines collected as they come."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([probe_path(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = []
        self._q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._q.put(json.loads(line))
        self._q.put(None)

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if predicate(line):
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; probe said {self.lines[-5:]}")
            try:
                line = self._q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the probe exited before {what}: {self.proc.wait()} "
                                     f"{self.proc.stderr.read()[-2000:]}")
            self.lines.append(line)
            if predicate(line):
                return line

    def finish(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the probe did not finish")
        while True:
            line = self._q.get(timeout=5)
            if line is None:
                break
            self.lines.append(line)
        return rc, self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class EventsRedisTest(unittest.TestCase):
    def setUp(self):
        self.cleanups = []

    def tearDown(self):
        for fn in reversed(self.cleanups):
            fn()

    def tempdir(self):
        d = tempfile.mkdtemp(prefix="ccdocker-events-")
        self.cleanups.append(lambda: shutil.rmtree(d, ignore_errors=True))
        return d

    def check_in_order(self, seqs, n):
        self.assertEqual(seqs, list(range(1, n + 1)))

    def test_events_reach_stream_and_channel_in_order(self):
        sock = sb.env("CCDOCKER_REDIS_SOCKET")
        sid = sb.unique("events")
        n = 3000
        self.cleanups.append(lambda: redis_cli(sock, "DEL", channel(sid)))
        sub = Subscriber(sock, channel(sid))
        self.cleanups.append(sub.stop)

        p = sb.run(probe_path(), f"--socket={sock}", f"--session={sid}", f"--count={n}", "--batch=100",
                   "--pad=200", "--wait-for-redis=30", timeout=60)
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertTrue(summary["done"], summary)
        self.assertEqual(summary["published"], n)

        messages = sub.wait_for(n, timeout=30)
        self.check_in_order([m["seq"] for m in messages], n)
        self.assertEqual([m["data"]["i"] for m in messages], list(range(1, n + 1)))
        self.assertEqual(messages[0]["data"]["type"], "probe")

        entries = stream_entries(sock, channel(sid))
        self.check_in_order([e[0] for e in entries], n)
        self.assertEqual([e[2]["i"] for e in entries], list(range(1, n + 1)))
        self.assertEqual([e[1] for e in entries], [m["time"] for m in messages])

    def test_a_flood_past_the_pipeline_reaches_subscribers_whole(self):
        # Far more events at once than the pipeline to Redis holds (REDIS_MAX_INFLIGHT, 20000) and than
        # the stream keeps (10000): the bus falls back on catching up from SQLite while Redis is up the
        # whole time, and a subscriber must still get every event once, in order (it once lost the
        # ones the stream would trim at once).
        sock = sb.env("CCDOCKER_REDIS_SOCKET")
        sid = sb.unique("flood")
        n = 60000
        self.cleanups.append(lambda: redis_cli(sock, "DEL", channel(sid)))
        sub = Subscriber(sock, channel(sid))
        self.cleanups.append(sub.stop)

        p = sb.run(probe_path(), f"--socket={sock}", f"--session={sid}", f"--count={n}", "--batch=1000",
                   "--pad=100", "--wait-for-redis=120", "--after-connect", timeout=180)
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertTrue(summary["done"], summary)

        seqs = [m["seq"] for m in sub.wait_for_seq(n, timeout=120)]
        missing = sorted(set(range(1, n + 1)) - set(seqs))
        self.assertEqual(missing, [], f"{len(missing)} of {n} never published, from {missing[:1]} on")
        self.check_in_order(seqs, n)

    def test_backlog_is_published_once_redis_appears(self):
        tmp = self.tempdir()
        link = os.path.join(tmp, "redis-link.sock")
        sid = sb.unique("backlog")
        n = 500

        # The probe is pointed at a path where nothing listens yet: the events are only stored.
        probe = RunningProbe(f"--socket={link}", f"--session={sid}", f"--count={n}", "--batch=50",
                             "--wait-for-redis=60")
        self.cleanups.append(probe.stop)
        probe.wait_for(lambda l: "stored" in l, 30, "the events to be stored")
        time.sleep(0.3)  # a few failed reconnects
        self.assertFalse(any(l.get("published") for l in probe.lines), probe.lines)

        # Redis comes up, a subscriber joins, and only then does the path lead to it.
        server = RedisServer(tmp).start()
        self.cleanups.append(server.kill)
        sub = Subscriber(server.sock, channel(sid))
        self.cleanups.append(sub.stop)
        os.symlink(server.sock, link)

        rc, err = probe.finish(60)
        self.assertEqual(rc, 0, err)
        self.assertTrue(probe.lines[-1]["done"], probe.lines[-1])

        self.check_in_order([m["seq"] for m in sub.wait_for(n, timeout=30)], n)
        self.check_in_order([e[0] for e in stream_entries(server.sock, channel(sid))], n)

    def test_backlog_of_an_earlier_process_is_published_once(self):
        tmp = self.tempdir()
        db = os.path.join(tmp, "ccdockerd.db")
        nowhere = os.path.join(tmp, "nowhere.sock")
        a, b = sb.unique("earlier-a"), sb.unique("earlier-b")

        # A process stores events of two sessions while Redis is away, and ends.
        for sid, n in ((a, 300), (b, 1200)):
            p = sb.run(probe_path(), f"--socket={nowhere}", f"--db={db}", f"--session={sid}", f"--count={n}",
                       "--batch=100", "--wait-for-redis=0", timeout=60)
            self.assertEqual(json.loads(p.stdout.strip().splitlines()[-1])["published"], 0)

        server = RedisServer(tmp).start()
        self.cleanups.append(server.kill)
        sub = Subscriber(server.sock, channel(a))
        self.cleanups.append(sub.stop)

        # The next process appends nothing: what it publishes it found in the store.
        p = sb.run(probe_path(), f"--socket={server.sock}", f"--db={db}", f"--session={a}", "--count=0",
                   "--wait-for-redis=30", timeout=60)
        self.assertTrue(json.loads(p.stdout.strip().splitlines()[-1])["done"], p.stdout)
        self.check_in_order([m["seq"] for m in sub.wait_for(300, timeout=30)], 300)
        self.check_in_order([e[0] for e in stream_entries(server.sock, channel(a))], 300)
        self.check_in_order([e[0] for e in stream_entries(server.sock, channel(b))], 1200)

        # And one more finds the streams complete and adds nothing.
        p = sb.run(probe_path(), f"--socket={server.sock}", f"--db={db}", f"--session={b}", "--count=5",
                   "--wait-for-redis=30", timeout=60)
        self.check_in_order([e[0] for e in stream_entries(server.sock, channel(a))], 300)
        self.check_in_order([e[0] for e in stream_entries(server.sock, channel(b))], 1205)

    def test_redis_restart_midstream_leaves_each_event_in_the_stream_once(self):
        tmp = self.tempdir()
        sid = sb.unique("restart")
        n = 4000
        # appendonly: what the stream held before the restart is there after it, so the bus must
        # continue from the stream's last entry rather than add again what it had sent.
        server = RedisServer(tmp, appendonly=True).start()
        self.cleanups.append(server.kill)

        probe = RunningProbe(f"--socket={server.sock}", f"--session={sid}", f"--count={n}", "--batch=10",
                             "--interval-ms=2", "--wait-for-redis=60")
        self.cleanups.append(probe.stop)
        probe.wait_for(lambda l: l.get("published", 0) >= 500, 30, "some events to be published")

        # Killed mid-stream: XADDs in flight get no reply; some may have been applied.
        server.kill(signal.SIGKILL)
        time.sleep(0.5)  # events go on being stored meanwhile
        server.start()

        rc, err = probe.finish(90)
        self.assertEqual(rc, 0, err)
        self.assertTrue(probe.lines[-1]["done"], probe.lines[-1])
        self.assertIn("Lost the connection to Redis", err)

        seqs = [e[0] for e in stream_entries(server.sock, channel(sid))]
        self.assertEqual(len(seqs), len(set(seqs)), "an event was added to the stream twice")
        self.check_in_order(seqs, n)


if __name__ == "__main__":
    unittest.main()

"""Discord delivery (daemon/discord.c) against tests/fixtures/fake-discord.py, the only stand-in.

DiscordSinkTest drives the client through tests/helpers/discord-probe (the real code on its own sd-event
loop, one JSON command a line): notices and questions posted once with allowed_mentions {"parse": []}
and every mention made inert; a 429 storm, a global limit and 5xx answers ridden out with each message
posted exactly once; a 401 reported at once and never retried; watches that ignore bots, our own posts
and other threads, and compare cursors as numbers. The token appears in nothing the probe prints."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import sandbox as sb

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.fake-discord.tok3n-" + "Xy9z" * 6
CHANNEL = "1000000000000000100"
MENTION_RE = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")


class FakeDiscord:
    """fake-discord.py on a loopback port."""

    def __init__(self, *args, token=TOKEN):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-discord-")
        port_file = os.path.join(self.dir, "port")
        self.stderr_path = os.path.join(self.dir, "stderr")
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sb.PYTHON, os.path.join(sb.FIXTURES, "fake-discord.py"), "--port", "0", "--port-file", port_file,
                 "--token", token, "--channel", CHANNEL, *args], stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            sb.wait_until(lambda: os.path.exists(port_file) or self.proc.poll() is not None, 15,
                          what="fake-discord to listen")
            if self.proc.poll() is not None:
                raise AssertionError("fake-discord exited: " + open(self.stderr_path).read())
            with open(port_file) as f:
                self.port = int(f.read())
        except BaseException:
            self.stop()
            raise
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_url = self.base + "/api/v10"

    def control(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_fake/" + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def messages(self, channel=CHANNEL):
        return self.control("messages?channel=" + channel)

    def requests(self):
        return self.control("requests")

    def inject(self, channel, content, **kw):
        return self.control("inject", dict(channel_id=channel, content=content, **kw))

    def fail(self, **kw):
        return self.control("fail", kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def probe_path(build_dir=None):
    return os.path.join(build_dir or sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "discord-probe")


class Probe:
    def __init__(self, fake, *args, token=TOKEN, binary=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-discord-probe-")
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr_file = open(self.stderr_path, "w")
        env = dict(os.environ, DISCORD_BOT_TOKEN=token, **(env or {}))
        self.proc = subprocess.Popen([binary or probe_path(), "--api-url", fake.api_url, "--channel", CHANNEL,
                                      "--poll-ms", "100", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, text=True, env=env)
        self.lines = queue.Queue()
        self.stdout = []
        self.events = {}
        threading.Thread(target=self._read, daemon=True).start()
        self.next_event("ready", None, 20)

    def _read(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        if cmd["op"] == "cancel":
            self.next_event("cancelled", cmd["tag"])
            return 0
        return self.next_event("started", cmd["tag"])["r"]

    def _pump(self, done, what, timeout):
        """Reads events into self.events until done() gives one."""
        deadline = time.monotonic() + timeout
        while (found := done()) is None:
            try:
                ev = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"discord-probe: no {what} in {timeout} s: {self.stderr()[-2000:]}")
            if ev is None:
                raise AssertionError(f"discord-probe exited ({self.proc.wait()}): {self.stderr()[-2000:]}")
            if ev["event"] == "bug":
                raise AssertionError(f"discord-probe: {ev['what']}")
            self.events.setdefault((ev["event"], ev.get("tag")), ev)
        return found

    def next_event(self, kind, tag, timeout=60):
        return self._pump(lambda: self.events.pop((kind, tag), None), f"{kind} {tag}", timeout)

    def result(self, tag, timeout=60):
        """The outcome of tag: its posted or reply event."""
        return self._pump(lambda: self.events.pop(("posted", tag), None) or self.events.pop(("reply", tag), None),
                          f"outcome of {tag}", timeout)

    def pending(self, tag):
        """Whether tag has no outcome yet (after a round trip through the probe)."""
        self.send(tag="sync-" + tag + str(time.monotonic()), op="cancel", target="")
        while True:
            try:
                ev = self.lines.get_nowait()
            except queue.Empty:
                break
            if ev is not None:
                self.events.setdefault((ev["event"], ev.get("tag")), ev)
        return ("posted", tag) not in self.events and ("reply", tag) not in self.events

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.stderr_file.closed:
            self.stderr_file.close()
        return self.proc.returncode


class DiscordSinkTest(unittest.TestCase):
    def start(self, *fake_args, probe_args=(), binary=None):
        fake = FakeDiscord(*fake_args)
        self.addCleanup(fake.stop)
        probe = Probe(fake, *probe_args, binary=binary)
        self.addCleanup(probe.stop)
        self.addCleanup(self.assert_no_token, probe, fake)
        return fake, probe

    def assert_no_token(self, probe, fake):
        code = probe.stop()
        self.assertEqual(code, 0, probe.stderr()[-2000:])
        everything = "".join(probe.stdout) + probe.stderr() + json.dumps(fake.requests())
        for m in fake.control("channels"):
            everything += json.dumps(fake.messages(m["id"]))
        self.assertNotIn(TOKEN, everything)
        self.assertNotIn(TOKEN[-16:], everything)

    def posts(self, fake):
        return [r for r in fake.requests() if r["method"] == "POST"]

    def test_notice_and_question_neutralise_mentions_and_show_urgency(self):
        fake, probe = self.start()
        hostile = "ping @everyone and @here, <@123456789012345678> <@!1> <@&987654321> <#1000000000000000100> done"
        self.assertEqual(probe.send(tag="n", op="notice", text=hostile, urgent=True, interaction_id="iid-n-1"), 0)
        self.assertEqual(probe.send(tag="q", op="question", text="Deploy? " + hostile, interaction_id="iid-q-1"), 0)
        n, q = probe.result("n"), probe.result("q")
        self.assertEqual((n["r"], q["r"]), (0, 0))
        self.assertIsNone(n["thread_id"])
        self.assertEqual(q["thread_id"], q["message_id"])  # Discord's thread from a message takes its id

        msgs = {m["id"]: m for m in fake.messages()}
        self.assertEqual(len(msgs), 2)
        notice, question = msgs[n["message_id"]], msgs[q["message_id"]]
        for m in (notice, question):
            self.assertEqual(m["allowed_mentions"], {"parse": []})
            self.assertIsNone(MENTION_RE.search(m["content"]), m["content"])
            self.assertIn("ping @\u200beveryone", m["content"])  # the text is still there, inert
            self.assertLessEqual(len(m["content"]), 2000)
        self.assertIn("URGENT", notice["content"])
        self.assertNotIn("URGENT", question["content"])
        self.assertIn("iid-n-1", notice["content"])
        self.assertIn("ccdockerctl answer iid-q-1", question["content"])
        threads = [c for c in fake.control("channels") if c["type"] == 11]
        self.assertEqual([(t["id"], t["parent_id"]) for t in threads], [(q["thread_id"], CHANNEL)])
        self.assertIsNone(MENTION_RE.search(threads[0]["name"]))
        # Every request had the headers Discord wants.
        for r in fake.requests():
            self.assertEqual(r["authorization"], "ok")
            self.assertTrue(r["user_agent"].startswith("DiscordBot ("), r["user_agent"])
            if r["method"] == "POST":
                self.assertEqual(r["content_type"], "application/json")

    def test_long_text_is_cut_to_2000_characters(self):
        fake, probe = self.start()
        probe.send(tag="n", op="notice", text="@" * 2000)
        self.assertEqual(probe.result("n")["r"], 0)
        content = fake.messages()[0]["content"]
        self.assertLessEqual(len(content), 2000)
        self.assertTrue(content.endswith("\u2026"))
        self.assertIsNone(MENTION_RE.search(content))

    def test_a_429_storm_is_ridden_out_with_each_message_posted_once(self):
        # Buckets of 2 per 0.3 s, and on top the next 6 posts answered 429 with retry_after.
        fake, probe = self.start("--bucket-limit", "2", "--bucket-window", "0.3")
        fake.fail(status=429, count=6, retry_after=0.2, path="/messages")
        for i in range(12):
            self.assertEqual(probe.send(tag=f"n{i}", op="notice", text=f"notice {i}", interaction_id=f"id-{i}"), 0)
        results = [probe.result(f"n{i}", 120) for i in range(12)]
        self.assertEqual([r["r"] for r in results], [0] * 12, results)
        contents = [m["content"].split("\n", 1)[1] for m in fake.messages()]
        self.assertEqual(sorted(contents), sorted(f"notice {i}" for i in range(12)))
        reqs = fake.requests()
        self.assertGreaterEqual(sum(1 for r in reqs if r["status"] == 429), 6)
        # The client waits out each 429 and each empty bucket: a client that ignored the headers would
        # have had hundreds of 429s from buckets of 2, not a handful beyond the forced ones.
        self.assertLessEqual(sum(1 for r in reqs if r["status"] == 429), 6 + 6, [(r["status"], r["mono"]) for r in reqs])

    def test_global_limit_is_obeyed(self):
        fake, probe = self.start("--bucket-limit", "100")
        fake.fail(status=429, count=1, retry_after=0.5, **{"global": True})
        probe.send(tag="q", op="question", text="first")
        probe.send(tag="n", op="notice", text="second")
        self.assertEqual(probe.result("q")["r"], 0)
        self.assertEqual(probe.result("n")["r"], 0)
        reqs = fake.requests()
        i = next(k for k, r in enumerate(reqs) if r["status"] == 429)
        # Nothing at all, on any route, until the global retry_after passed.
        self.assertTrue(all(r["mono"] - reqs[i]["mono"] >= 0.5 for r in reqs[i + 1:]),
                        [(r["path"], r["status"], r["mono"] - reqs[i]["mono"]) for r in reqs])
        self.assertEqual(len(fake.messages()), 2)

    def test_5xx_is_retried_then_recovers_and_gives_up_with_eagain(self):
        fake, probe = self.start(probe_args=("--max-retries", "3"))
        fake.fail(status=503, count=2)
        probe.send(tag="a", op="notice", text="after two 503s")
        self.assertEqual(probe.result("a")["r"], 0)
        self.assertEqual(len(fake.messages()), 1)
        # A 500 after the message was made (the answer lost): the resend carries the same nonce.
        fake.fail(status=500, count=1, commit=True)
        probe.send(tag="b", op="notice", text="lost answer")
        self.assertEqual(probe.result("b")["r"], 0)
        self.assertEqual([m["content"].endswith("lost answer") for m in fake.messages()], [False, True])
        # Four 503s exceed three retries: -EAGAIN (11) to the core, with a message.
        fake.fail(status=503, count=4)
        probe.send(tag="c", op="notice", text="down")
        c = probe.result("c")
        self.assertEqual(c["r"], -11)
        self.assertIn("Discord unavailable after 4 attempts", c["error"])
        self.assertEqual(len(fake.messages()), 2)

    def test_401_is_reported_and_never_retried(self):
        fake = FakeDiscord()
        self.addCleanup(fake.stop)
        probe = Probe(fake, token="wrong.token-" + "Q" * 20)
        self.addCleanup(probe.stop)
        probe.send(tag="a", op="notice", text="x")
        a = probe.result("a")
        self.assertEqual(a["r"], -13)  # -EACCES
        self.assertIn("401", a["error"])
        self.assertNotIn("wrong.token", a["error"])
        self.assertEqual(len(fake.requests()), 1)
        # 403 too: -EPERM, one request.
        fake2, probe2 = self.start()
        fake2.fail(status=403)
        probe2.send(tag="b", op="question", text="y")
        self.assertEqual(probe2.result("b")["r"], -1)
        self.assertEqual(len(fake2.requests()), 1)

    def test_watch_ignores_bots_us_and_other_threads(self):
        fake, probe = self.start()
        probe.send(tag="q1", op="question", text="one?")
        probe.send(tag="q2", op="question", text="two?")
        t1, t2 = probe.result("q1")["thread_id"], probe.result("q2")["thread_id"]
        probe.send(tag="w", op="watch", thread_id=t1)
        fake.inject(t1, "beep, I am a bot", bot=True)
        fake.inject(t2, "an answer to the other question", username="carol")
        probe.send(tag="r", op="in_thread", thread_id=t1, text="Reminder (attempt 2 of 3): one? @here", attempt=2,
                   max_attempts=3, interaction_id="iid-r")
        self.assertEqual(probe.result("r")["r"], 0)
        sb.wait_until(lambda: sum(1 for r in fake.requests() if r["method"] == "GET") >= 3, 30,
                      what="three polls of the thread")
        self.assertTrue(probe.pending("w"))
        reply = fake.inject(t1, "yes, go", username="alice")
        w = probe.result("w")
        self.assertEqual((w["r"], w["text"], w["answerer"], w["reply_id"]), (0, "yes, go", "alice", reply["id"]))
        reminder = [m for m in fake.messages(t1) if m["author"]["id"] == "1100000000000000001"]
        self.assertEqual(len(reminder), 1)
        self.assertTrue(reminder[0]["content"].startswith("Reminder (attempt 2 of 3): one? @\u200bhere\n"),
                        reminder[0]["content"])
        self.assertIn("ccdockerctl answer iid-r", reminder[0]["content"])
        # Reads went to t1 only, with a cursor, newest-first pages, limit 100.
        for r in fake.requests():
            if r["method"] == "GET":
                self.assertEqual(r["path"], f"/api/v10/channels/{t1}/messages")
                self.assertRegex(r["query"], r"^after=\d+&limit=100$")

    def test_cursor_is_compared_as_a_number(self):
        # Ids from the fake's clock (2026) have 19 digits; a cursor of 17 nines is smaller as a number but
        # larger as a string, so a string compare would skip the reply as if it came before the cursor.
        fake, probe = self.start()
        probe.send(tag="q", op="question", text="numbers?")
        q = probe.result("q")
        self.assertEqual(len(q["thread_id"]), 19)
        probe.send(tag="w", op="watch", thread_id=q["thread_id"], after="9" * 17)
        fake.control("clock", {"advance_ms": 1000})
        reply = fake.inject(q["thread_id"], "42", username="dave")
        w = probe.result("w")
        self.assertEqual((w["r"], w["text"], w["reply_id"]), (0, "42", reply["id"]))
        # A watch after the reply's own id sees nothing more.
        probe.send(tag="w2", op="watch", thread_id=q["thread_id"], after=reply["id"])
        sb.wait_until(lambda: sum(1 for r in fake.requests() if r["query"].startswith("after=" + reply["id"])) >= 2,
                      30, what="two polls after the reply")
        self.assertTrue(probe.pending("w2"))

    def test_watch_rides_out_an_outage_and_cancel_stops_it(self):
        fake, probe = self.start()
        probe.send(tag="q", op="question", text="still there?")
        t = probe.result("q")["thread_id"]
        fake.fail(status=503, count=5, path="/messages")
        probe.send(tag="w", op="watch", thread_id=t)
        fake.inject(t, "here", username="erin")
        w = probe.result("w", 120)
        self.assertEqual((w["r"], w["text"]), (0, "here"))
        self.assertGreaterEqual(sum(1 for r in fake.requests() if r["status"] == 503), 5)
        probe.send(tag="w2", op="watch", thread_id=t, after=w["reply_id"])
        probe.send(tag="c", op="cancel", target="w2")
        n = len(fake.requests())
        fake.inject(t, "too late", username="erin")
        probe.send(tag="n", op="notice", text="a later notice goes through")
        self.assertEqual(probe.result("n")["r"], 0)
        self.assertTrue(probe.pending("w2"))
        # A deleted thread ends the watch with -ENOENT.
        probe.send(tag="w3", op="watch", thread_id="1234567890")
        self.assertEqual(probe.result("w3")["r"], -2)
        self.assertGreater(len(fake.requests()), n)

    def test_bad_requests_refused_at_the_call(self):
        fake, probe = self.start()
        self.assertEqual(probe.send(tag="a", op="in_thread", text="x", thread_id="not-a-snowflake"), -22)
        self.assertEqual(probe.send(tag="b", op="watch", thread_id="1", after="12a"), -22)
        self.assertEqual(probe.send(tag="c", op="notice", text=""), -22)
        self.assertEqual(fake.requests(), [])

    def test_under_address_sanitizer(self):
        binary = probe_path(os.path.join(sb.SRC, "build-asan"))
        if not os.path.exists(binary):
            self.skipTest("build-asan has no discord-probe")
        fake = FakeDiscord()
        self.addCleanup(fake.stop)
        probe = Probe(fake, binary=binary, env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=66",
                                                "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
        self.addCleanup(probe.stop)
        fake.fail(status=429, count=2, retry_after=0.1)
        fake.fail(status=503, count=1)
        probe.send(tag="q", op="question", text="asan @everyone")
        t = probe.result("q")["thread_id"]
        probe.send(tag="w", op="watch", thread_id=t)
        fake.inject(t, "ok", username="f")
        self.assertEqual(probe.result("w")["r"], 0)
        probe.send(tag="w2", op="watch", thread_id=t)  # left pending at exit: freed without a leak
        probe.send(tag="n", op="notice", text="left queued at exit")
        code = probe.stop()
        stderr = probe.stderr()
        self.assertNotIn("AddressSanitizer", stderr)
        self.assertNotIn("LeakSanitizer", stderr)
        self.assertNotIn("runtime error", stderr)
        self.assertEqual(code, 0, stderr[-3000:])

class DiscordDaemonTest(unittest.TestCase):
    """The daemon with the Discord sink installed in its questions core, pointed at the fake; sessions run
    the idle test command and their channel is driven as ccdocker-mcp drives it (test_questions.Mcp)."""

    @classmethod
    def setUpClass(cls):
        import test_questions as tq
        cls.tq = tq
        cls.fake = FakeDiscord("--bucket-limit", "50")
        cls.runtime = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-discord-runtime")
        # The token as the credential discord-bot-token, handed over as test_secrets.py does (the
        # sandbox's user manager leaves LoadCredential='s directory empty).
        cls.creds = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-discord-credentials")
        shutil.rmtree(cls.creds, ignore_errors=True)
        os.makedirs(cls.creds, mode=0o700)
        with open(os.path.join(cls.creds, "discord-bot-token"), "w") as f:
            f.write(TOKEN + "\n")
        tq.RUNTIME = cls.runtime
        cls.daemon = sb.Daemon(unit="ccdockerd-discord-test.service", settings={
            "RuntimeDirectory": cls.runtime,
            "MaxMemory": "1G",
            "DefaultMemory": "256M",
            "HeartbeatTimeoutSec": "0",
            "QuestionMinTimeoutSec": "1",
            "DiscordChannelID": CHANNEL,
            "DiscordAPIURL": cls.fake.api_url,
            "DiscordMaxRetries": "1",
            "DiscordPollIntervalSec": "1",
        }, extra_env={"CREDENTIALS_DIRECTORY": cls.creds})
        tq.DAEMON = cls.daemon
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
        try:
            cls.daemon.start()
        except BaseException:
            cls.fake.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.daemon.stop()
        finally:
            cls.fake.stop()
            shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
            shutil.rmtree(cls.creds, ignore_errors=True)

    def session(self):
        sid, path = sb.create_session("memory", "s", "256M")
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        sb.wait_state(path, "idle", "running")
        return sid, path

    def mcp(self, sid):
        m = self.tq.Mcp(sid)
        self.addCleanup(m.close)
        return m

    def rows(self, where="1=1", *params):
        return self.tq.rows(where, *params)

    def posted_with(self, needle, channel=CHANNEL):
        return [m for m in self.fake.messages(channel) if needle in m["content"]]

    def ask(self, m, question, **params):
        call_id = m.send("human.ask", {"question": question, **params})
        # Posted in the channel with the interaction id, and a thread made from it.
        msg = sb.wait_until(lambda: self.posted_with(question), 60, what="the question in the fake channel")[0]
        qid = re.search(r"id `([0-9a-f-]{36})`", msg["content"]).group(1)
        sb.wait_until(lambda: any(c["id"] == msg["id"] for c in self.fake.control("channels")), 30,
                      what="the question's thread")
        sb.wait_until(lambda: self.rows("id = ?", qid) and self.rows("id = ?", qid)[0]["discord_thread_id"] == msg["id"], 30,
                      what="the thread id in the record")
        return qid, call_id, msg

    def test_notice_posted_once_with_mentions_neutralised_and_priority(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        text = "Build done @everyone <@123456789012345678> see <#1000000000000000100> " + sb.unique("n")
        r = m.ok("human.notify", {"message": text, "priority": "urgent"})
        iid = r["interaction_id"]
        sb.wait_until(lambda: self.rows("id = ?", iid)[0]["status"] == "completed", 30, what="the notice completed")
        [msg] = self.posted_with(iid)
        self.assertIn("URGENT", msg["content"])
        self.assertIn(sid, msg["content"])
        self.assertIsNone(MENTION_RE.search(msg["content"]), msg["content"])
        self.assertEqual(msg["allowed_mentions"], {"parse": []})
        self.assertEqual(self.rows("id = ?", iid)[0]["discord_message_id"], msg["id"])
        r2 = m.ok("human.notify", {"message": "normal one " + sb.unique("n")})
        sb.wait_until(lambda: self.posted_with(r2["interaction_id"]), 30, what="the second notice")
        self.assertNotIn("URGENT", self.posted_with(r2["interaction_id"])[0]["content"])
        self.assertEqual(len(self.posted_with(iid)), 1)

    def test_reply_by_a_person_answers_and_a_bot_reply_is_ignored(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        qid, call_id, msg = self.ask(m, "Deploy now? " + sb.unique("q"), timeout_seconds=600, priority="urgent")
        self.assertIn("URGENT", msg["content"])
        thread = msg["id"]
        self.fake.inject(thread, "yes from a bot", bot=True)
        self.fake.inject(CHANNEL, "an answer in the channel, not the thread", username="mallory")
        n_reads = len([r for r in self.fake.requests() if r["method"] == "GET" and thread in r["path"]])
        sb.wait_until(lambda: len([r for r in self.fake.requests()
                                   if r["method"] == "GET" and thread in r["path"]]) >= n_reads + 2, 30,
                      what="two more polls of the thread")
        self.assertEqual(self.rows("id = ?", qid)[0]["status"], "pending")
        self.fake.inject(thread, "yes, go ahead", username="alice")
        result = m.wait(call_id)["result"]
        self.assertEqual((result["interaction_id"], result["response"], result["timed_out"]),
                         (qid, "yes, go ahead", False))
        self.assertEqual(result["answered_by"]["surface"], "discord")
        self.assertIn("alice", result["answered_by"]["who"])
        [row] = self.rows("id = ?", qid)
        self.assertEqual((row["status"], row["response"], row["answered_surface"]), ("answered", "yes, go ahead", "discord"))
        self.assertGreater(row["answered_at"], row["created_at"])

    def test_answered_elsewhere_is_said_in_the_thread(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        qid, call_id, msg = self.ask(m, "Which colour? " + sb.unique("q"), timeout_seconds=600)
        self.tq.ctl("answer", qid, "blue")
        self.assertEqual(m.wait(call_id)["result"]["response"], "blue")
        said = sb.wait_until(lambda: [x for x in self.fake.messages(msg["id"]) if "Answered on ctl" in x["content"]],
                             30, what="the word in the thread")
        self.assertEqual(len(said), 1)

    def test_reminders_are_posted_then_the_question_times_out(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        question = "Anyone there? " + sb.unique("q")
        qid, call_id, msg = self.ask(m, question, timeout_seconds=2, max_attempts=3)
        result = m.wait(call_id)["result"]
        self.assertTrue(result["timed_out"])
        self.assertEqual(self.rows("id = ?", qid)[0]["status"], "timeout")
        # The word that it timed out follows the answer to the asker: wait for it.
        sb.wait_until(lambda: any("timed out" in x["content"] for x in self.fake.messages(msg["id"])), 30,
                      what="the timeout said in the thread")
        in_thread = [x["content"] for x in self.fake.messages(msg["id"])]
        reminders = [c for c in in_thread if c.startswith("Reminder (attempt")]
        self.assertEqual([c.split(":")[0] for c in reminders], ["Reminder (attempt 2 of 3)", "Reminder (attempt 3 of 3)"])
        self.assertTrue(any("timed out" in c for c in in_thread), in_thread)
        # One question message, one thread: the reminders went into it.
        self.assertEqual(len(self.posted_with(question)), 1)

    def test_discord_down_then_recovering_delivers_the_question(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        # DiscordMaxRetries=1: each post gives up after two 503s; the core tries again later.
        self.fake.fail(status=503, count=6, path="/channels/" + CHANNEL + "/messages")
        question = "After the outage? " + sb.unique("q")
        qid, call_id, msg = self.ask(m, question, timeout_seconds=600)
        self.assertGreaterEqual(len([r for r in self.fake.requests() if r["status"] == 503]), 6)
        self.fake.inject(msg["id"], "delivered", username="bob")
        self.assertEqual(m.wait(call_id)["result"]["response"], "delivered")
        self.assertEqual(len(self.posted_with(question)), 1)

    def test_kill9_while_pending_reply_while_down_restart_answers_once(self):
        sid, path = self.session()
        m = self.mcp(sid)
        question = "Survive a crash? " + sb.unique("q")
        qid, _, msg = self.ask(m, question, timeout_seconds=600)
        self.daemon.kill9()
        self.fake.inject(msg["id"], "answered while you were down", username="carol")
        requests_before = len(self.fake.requests())
        self.daemon.start()
        sb.wait_state(path, "idle", "running")
        result = self.mcp(sid).ok("human.wait", {"interaction_id": qid})
        self.assertEqual((result["response"], result["timed_out"], result["answered_by"]["surface"]),
                         ("answered while you were down", False, "discord"))
        # Nothing posted again: not the question, not its thread.
        self.assertEqual(len(self.posted_with(question)), 1)
        self.assertEqual(len([c for c in self.fake.control("channels") if c["id"] == msg["id"]]), 1)
        # The daemon did not even ask Discord to post it again (the nonce would have caught a resend).
        again = [r["body"] for r in self.fake.requests()[requests_before:] if r["method"] == "POST"]
        self.assertEqual([b for b in again if question in json.dumps(b)], [])
        self.assertEqual(self.rows("id = ?", qid)[0]["status"], "answered")

    def http_answers(self):
        from test_httpd import Httpd, curl
        httpd = Httpd()
        self.addCleanup(httpd.stop)
        token = httpd.token(sb.unique("d"))
        out = ""
        for path in ("/api/v1/questions", "/api/v1/sessions", "/api/v1/questions?all=true"):
            status, _, text = curl("GET", path, token, None, url=httpd.url)
            out += f"{status} {text}\n"
        return out

    def test_zz_the_token_appears_nowhere(self):
        # After the others: the journal, the store, every D-Bus property, ccdockerctl's answers.
        sid, path = self.session()
        m = self.mcp(sid)
        m.ok("human.notify", {"message": "token check " + sb.unique("t")})
        import sqlite3
        db = sqlite3.connect(os.path.join(self.daemon.state_dir, "ccdockerd.db"), timeout=5)
        try:
            dump = "\n".join(db.iterdump())
        finally:
            db.close()
        texts = {
            "journal": sb.run("journalctl", "-D", sb.env("CCDOCKER_JOURNAL_DIR"), "--no-pager", "-o", "export",
                              check=False).stdout,
            "store": dump,
            "manager properties": sb.busctl("introspect", "org.ccdocker1", "/org/ccdocker1", check=False).stdout,
            "session properties": sb.busctl("introspect", "org.ccdocker1", path, check=False).stdout,
            "ctl": self.tq.ctl("questions", "--all", "--json").stdout + self.tq.ctl("status", sid, check=False).stdout,
            "daemon log": self.daemon.log(),
            "http": self.http_answers(),
        }
        for where, text in texts.items():
            # Not assertNotIn: its message would print the whole journal.
            self.assertFalse(TOKEN in text or TOKEN[-16:] in text, f"the bot token is in the {where}")
        self.assertIn(sid, texts["session properties"] + texts["ctl"])


if __name__ == "__main__":
    unittest.main()

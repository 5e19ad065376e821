"""Asking a human (SPEC.md 2.7, docs/channel.md "asking a human"): the daemon's side of human.notify,
human.ask and human.wait, driven over a real session's channel as ccdocker-mcp drives it, with no
Discord configured, so that every answer comes from one of the daemon's own surfaces (ccdockerctl,
D-Bus, HTTP, Redis). The records are read back from the store, the audit records from the journal.
Sessions run the idle test command; tests/integration/test_mcp.py and the Discord tests drive the
same methods through the real CLI and the fake Discord."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import unittest

import sandbox as sb
import test_child_channel

DAEMON = None
RUNTIME = None
MSG_NOTICE = "5b0f3c1e9d2a4e7f8a61c4d2b9e07a13"
MSG_QUESTION = "8e4d2a7c1f6b4b09a3d5e2c7f1a09b64"
MSG_ANSWER = "c17a9e3b5d2f4a68b0e4d91f7c3a2e58"
MSG_TIMEOUT = "2f9b7d4e6a1c4c3d8e05b7a9d2f4c1e0"
MSG_REFUSED = "9a6c3e1d7b4f4e2a9c18f5b3d7e0a4c6"


def setUpModule():
    global DAEMON, RUNTIME
    RUNTIME = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-questions-runtime")
    DAEMON = sb.Daemon(unit="ccdockerd-questions-test.service", settings={
        "RuntimeDirectory": RUNTIME,
        "MaxMemory": "1G",
        "DefaultMemory": "256M",
        "HeartbeatTimeoutSec": "0",
        "RedisSocket": sb.env("CCDOCKER_REDIS_SOCKET"),
        # Timeouts of a second, so that attempts and their end are seen in a test's time.
        "QuestionMinTimeoutSec": "1",
        "MaxPendingQuestionsPerSession": "3",
    })
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)


def ctl(*args, check=True):
    binary = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl")
    return sb.run(binary, "--user", *args, check=check)


def rows(where="1=1", *params):
    db = sqlite3.connect(os.path.join(DAEMON.state_dir, "ccdockerd.db"), timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM discord_interactions WHERE {where}", params)]
    finally:
        db.close()


def redis_command(*words):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sb.env("CCDOCKER_REDIS_SOCKET"))
    s.settimeout(10)
    out = f"*{len(words)}\r\n".encode()
    for w in words:
        b = w.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    s.sendall(out)
    reply = s.recv(4096)
    s.close()
    return reply


class Mcp(test_child_channel.Mcp):
    """test_child_channel's client of a session's channel with role "mcp", on this module's runtime
    directory, keeping the notifications (human.waiting) it reads and the hello's result."""

    def __init__(self, sid, runtime=None):
        self.notifications = []
        test_child_channel.RUNTIME = runtime or RUNTIME
        super().__init__(sid)

    def call(self, method, params=None):
        msg = super().call(method, params)
        if method == "hello":
            self.hello = msg["result"]
        return msg

    def wait(self, id_):
        # The base's reading, with the messages that have no id (notifications) kept apart.
        while id_ not in self.answers:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError("the daemon closed the channel")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "id" in msg:
                self.answers[msg["id"]] = msg
            else:
                self.notifications.append(msg)
        return self.answers.pop(id_)


def audit(message_id, sid):
    return sb.journal(f"MESSAGE_ID={message_id}", f"CCDOCKER_SESSION={sid}")


class QuestionsTest(unittest.TestCase):
    def session(self):
        sid, path = sb.create_session("memory", "s", "256M")
        self.addCleanup(self.stop_quietly, path)
        sb.wait_state(path, "idle", "running")
        return sid, path

    def stop_quietly(self, path):
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true", check=False)

    def mcp(self, sid):
        m = Mcp(sid)  # waits for the socket to listen again after a daemon restart
        self.addCleanup(m.close)
        return m

    def pending(self, sid):
        return json.loads(ctl("questions", sid, "--json").stdout)

    def ask(self, m, sid, **params):
        """Sends human.ask and waits until the daemon lists the question: its id and the call's id."""
        before = {q["interaction_id"] for q in self.pending(sid)}
        call_id = m.send("human.ask", {"question": "Deploy now?", **params})
        fresh = sb.wait_until(lambda: [q for q in self.pending(sid) if q["interaction_id"] not in before], 10,
                              what="the question to be listed")
        return fresh[0]["interaction_id"], call_id

    def test_hello_carries_the_least_timeout(self):
        sid, _ = self.session()
        self.assertEqual(self.mcp(sid).hello["question_timeout_min"], 1)

    def test_notice_is_stored_and_the_eleventh_in_a_minute_refused(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        ids = []
        for i in range(10):
            r = m.ok("human.notify", {"message": f"step {i} done", "priority": "urgent" if i == 0 else "normal"})
            self.assertTrue(r["success"])
            ids.append(r["interaction_id"])
        code, message = m.error("human.notify", {"message": "one too many"})
        self.assertEqual(code, -32001)
        self.assertIn("10 notices a minute", message)

        stored = rows("session_id = ?", sid)
        self.assertEqual(sorted(r["id"] for r in stored), sorted(ids))
        for r in stored:
            # No Discord: nothing to post it to, so it is done once stored.
            self.assertEqual((r["interaction_type"], r["status"]), ("notification", "completed"))
        self.assertEqual([r["priority"] for r in stored if r["id"] == ids[0]], ["urgent"])
        self.assertNotIn("one too many", json.dumps(stored))
        sb.wait_until(lambda: len(audit(MSG_NOTICE, sid)) == 10, 10, what="ten notice records")
        refused = sb.wait_until(lambda: audit(MSG_REFUSED, sid), 10, what="the refusal record")
        self.assertIn("10 notices a minute", refused[-1]["MESSAGE"])

    def test_ask_answered_on_ctl_wins_and_later_answers_are_refused_everywhere(self):
        sid, path = self.session()
        m = self.mcp(sid)
        qid, call_id = self.ask(m, sid, timeout_seconds=600, priority="urgent")
        listed = self.pending(sid)[0]
        self.assertEqual((listed["type"], listed["status"], listed["priority"], listed["attempt"],
                          listed["max_attempts"], listed["timeout_seconds"]),
                         ("question", "pending", "urgent", 1, 3, 600))
        self.assertIn(qid, [q["interaction_id"] for q in json.loads(ctl("questions", "--json").stdout)])
        self.assertIn(qid, ctl("questions", sid).stdout)

        ctl("answer", qid, "yes, go ahead")
        result = m.wait(call_id)["result"]
        self.assertEqual(result["interaction_id"], qid)
        self.assertEqual(result["response"], "yes, go ahead")
        self.assertFalse(result["timed_out"])
        self.assertEqual(result["answered_by"]["surface"], "ctl")
        self.assertIn(f"uid {os.getuid()}", result["answered_by"]["who"])

        again = ctl("answer", qid, "no", check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("already answered", again.stderr)
        bus = sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Answer", "ssa{sv}", qid, "no", "0",
                        check=False)
        self.assertNotEqual(bus.returncode, 0)
        self.assertIn("already answered", bus.stderr)

        [row] = rows("id = ?", qid)
        self.assertEqual((row["status"], row["response"], row["answered_surface"]), ("answered", "yes, go ahead", "ctl"))
        self.assertGreater(row["answered_at"], row["created_at"])
        self.assertEqual(self.pending(sid), [])
        answered = json.loads(ctl("questions", sid, "--all", "--json").stdout)
        self.assertEqual([(q["interaction_id"], q["status"]) for q in answered], [(qid, "answered")])
        rec = sb.wait_until(lambda: [r for r in audit(MSG_ANSWER, sid) if qid in r["MESSAGE"]], 10,
                            what="the answer record")
        self.assertIn("on ctl", rec[-1]["MESSAGE"])
        self.assertEqual(rec[-1]["CALLER_UID"], str(os.getuid()))

    def test_ask_answered_on_dbus_with_its_signals(self):
        sid, path = self.session()
        m = self.mcp(sid)
        log = os.path.join(DAEMON.state_dir, f"monitor-{sid}.json")
        with open(log, "w") as out:
            monitor = subprocess.Popen(
                ["busctl", "--user", "--json=short", "monitor",
                 f"--match=type='signal',path='{path}',interface='org.ccdocker1.Session'"], stdout=out,
                stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (monitor.kill(), monitor.wait()))

        def signals():
            with open(log) as f:
                return [(j["member"], j["payload"]["data"]) for j in map(json.loads, filter(None, f.read().splitlines()))
                        if j.get("type") == "signal"]
        # The monitor listens once a signal it matches arrives: throwaway questions of a second each.
        sb.wait_until(lambda: (m.ok("human.ask", {"question": "warm-up", "timeout_seconds": 1, "max_attempts": 1}),
                               signals())[1], 20, what="the monitor to listen")
        qid, call_id = self.ask(m, sid, question="Which colour?", timeout_seconds=600)
        sb.wait_until(lambda: ("QuestionAsked", [qid, "question", "Which colour?"]) in signals(), 10,
                      what="QuestionAsked")
        sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", "Answer", "ssa{sv}", qid, "blue", "1",
                  "who", "s", "alice")
        result = m.wait(call_id)["result"]
        self.assertEqual((result["response"], result["answered_by"]["surface"]), ("blue", "dbus"))
        self.assertIn("alice", result["answered_by"]["who"])
        sb.wait_until(lambda: ("QuestionClosed", [qid, "answered"]) in signals(), 10, what="QuestionClosed")

    def test_ask_answered_on_redis(self):
        from test_child_channel import PSubscriber
        sid, _ = self.session()
        m = self.mcp(sid)
        notices = PSubscriber(f"session:{sid}:questions")
        self.addCleanup(notices.close)
        qid, call_id = self.ask(m, sid, timeout_seconds=600)
        asked = notices.until(lambda ch, msg: msg["type"] == "question", "the question's notice")[-1][1]
        self.assertEqual((asked["interaction_id"], asked["kind"], asked["status"], asked["message"]),
                         (qid, "question", "pending", "Deploy now?"))
        # Not an answer: ignored. Another session's channel: ignored.
        redis_command("PUBLISH", f"session:{sid}:control", json.dumps({"type": "stop"}))
        redis_command("PUBLISH", "session:someone-else:control",
                      json.dumps({"type": "answer", "interaction_id": qid, "text": "wrong"}))
        redis_command("PUBLISH", f"session:{sid}:control",
                      json.dumps({"type": "answer", "interaction_id": qid, "text": "from redis"}))
        result = m.wait(call_id)["result"]
        self.assertEqual((result["response"], result["answered_by"]["surface"]), ("from redis", "redis"))
        [row] = rows("id = ?", qid)
        self.assertEqual(row["answered_surface"], "redis")
        closed = notices.until(lambda ch, msg: msg["type"] == "question_closed", "the answer's notice")[-1][1]
        self.assertEqual((closed["interaction_id"], closed["status"], closed["answered_by"]), (qid, "answered", "redis"))

    def test_ask_answered_over_http_in_the_token_scope_only(self):
        from test_httpd import Httpd, curl
        httpd = Httpd()
        self.addCleanup(httpd.stop)
        token, other = httpd.token(sb.unique("q")), httpd.token(sb.unique("other"))

        def jcurl(method, path, tok, body=None):
            status, _, text = curl(method, path, tok, body, url=httpd.url)
            return status, json.loads(text) if text else None

        status, created = jcurl("POST", "/api/v1/sessions", token, {"config": {"memory": "256M"}})
        self.assertEqual(status, 201, created)
        sid = created["id"]
        path = json.loads(sb.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager",
                                    "GetSession", "s", sid).stdout)["data"][0]
        self.addCleanup(self.stop_quietly, path)
        sb.wait_state(path, "idle", "running")
        m = self.mcp(sid)
        qid, call_id = self.ask(m, sid, timeout_seconds=600)

        status, listed = jcurl("GET", f"/api/v1/sessions/{sid}/questions", token)
        self.assertEqual((status, [q["interaction_id"] for q in listed["questions"]]), (200, [qid]))
        status, everywhere = jcurl("GET", "/api/v1/questions", token)
        self.assertIn(qid, [q["interaction_id"] for q in everywhere["questions"]])
        # Another token sees neither the session nor its question, and cannot answer it.
        self.assertEqual(jcurl("GET", f"/api/v1/sessions/{sid}/questions", other)[0], 404)
        self.assertNotIn(qid, [q["interaction_id"] for q in jcurl("GET", "/api/v1/questions", other)[1]["questions"]])
        self.assertEqual(jcurl("POST", f"/api/v1/sessions/{sid}/questions/{qid}/answer", other, {"text": "x"})[0], 404)
        self.assertEqual(jcurl("POST", f"/api/v1/sessions/{sid}/questions/{qid}/answer", token, {"txt": "x"})[0], 400)

        status, body = jcurl("POST", f"/api/v1/sessions/{sid}/questions/{qid}/answer", token, {"text": "over http"})
        self.assertEqual((status, body), (200, {"answered": True}))
        result = m.wait(call_id)["result"]
        self.assertEqual((result["response"], result["answered_by"]["surface"]), ("over http", "http"))
        self.assertIn("http token", result["answered_by"]["who"])
        status, body = jcurl("POST", f"/api/v1/sessions/{sid}/questions/{qid}/answer", token, {"text": "again"})
        self.assertEqual(status, 409)
        self.assertIn("already answered", body["error"]["message"])
        status, listed = jcurl("GET", f"/api/v1/sessions/{sid}/questions?all=true", token)
        self.assertEqual([(q["status"], q["answered_by"]["surface"]) for q in listed["questions"]],
                         [("answered", "http")])

    def test_timeouts_count_attempts_and_end_timed_out(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        qid, call_id = self.ask(m, sid, timeout_seconds=1, max_attempts=2)
        result = m.wait(call_id)["result"]
        self.assertEqual(result, {"interaction_id": qid, "response": "", "timed_out": True, "answered_by": None})
        # One human.waiting at once, naming the request (so a caller knows the id before anything can
        # go wrong), then one per new attempt.
        self.assertEqual([(n["method"], n["params"]["attempt"]) for n in m.notifications],
                         [("human.waiting", 1), ("human.waiting", 2)])
        self.assertEqual(m.notifications[0]["params"].get("request_id"), call_id)
        self.assertEqual(m.notifications[0]["params"]["interaction_id"], qid)
        [row] = rows("id = ?", qid)
        self.assertEqual((row["status"], row["attempt"]), ("timeout", 2))
        sb.wait_until(lambda: len([r for r in audit(MSG_TIMEOUT, sid) if qid in r["MESSAGE"]]) == 2, 10,
                      what="a timeout record per attempt")
        late = ctl("answer", qid, "too late", check=False)
        self.assertNotEqual(late.returncode, 0)
        self.assertIn("timed out", late.stderr)

    def test_permission_takes_allow_or_deny_and_denies_on_timeout(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        tool = {"name": "Bash", "input": {"command": "rm -rf build"}}
        qid, call_id = self.ask(m, sid, kind="permission", tool=tool, timeout_seconds=600, max_attempts=1)
        self.assertEqual(self.pending(sid)[0]["tool"], tool)
        maybe = ctl("answer", qid, "maybe", check=False)
        self.assertNotEqual(maybe.returncode, 0)
        self.assertIn("allow and deny", maybe.stderr)
        self.assertEqual(rows("id = ?", qid)[0]["status"], "pending")
        ctl("answer", qid, "ALLOW")
        self.assertEqual(m.wait(call_id)["result"]["response"], "allow")

        qid, call_id = self.ask(m, sid, kind="permission", tool=tool, timeout_seconds=1, max_attempts=1)
        result = m.wait(call_id)["result"]
        self.assertEqual((result["response"], result["timed_out"]), ("deny", True))
        self.assertEqual(rows("id = ?", qid)[0]["response"], "deny")

    def test_bad_input_is_refused_naming_the_field_and_stores_nothing(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        cases = [
            ("human.ask", {"question": ""}, "question must be 1-2000 characters"),
            ("human.ask", {"question": "x" * 2001}, "question must be 1-2000 characters"),
            ("human.ask", {}, "question is missing"),
            ("human.ask", {"question": 7}, "question must be a string"),
            ("human.ask", {"question": "q", "timeout_seconds": 7201}, "timeout_seconds must be an integer 1-7200"),
            ("human.ask", {"question": "q", "timeout_seconds": 0}, "timeout_seconds must be an integer 1-7200"),
            ("human.ask", {"question": "q", "max_attempts": 0}, "max_attempts must be an integer 1-5"),
            ("human.ask", {"question": "q", "max_attempts": 6}, "max_attempts must be an integer 1-5"),
            ("human.ask", {"question": "q", "priority": "high"}, "priority must be normal or urgent"),
            ("human.ask", {"question": "q", "kind": "poll"}, "kind must be question or permission"),
            ("human.ask", {"question": "q", "kind": "permission"}, "tool must be an object"),
            ("human.ask", {"question": "q", "tool": {"name": "Bash"}}, "tool is only for kind"),
            ("human.ask", {"question": "q", "colour": "red"}, "unknown field \"colour\""),
            ("human.notify", {"message": ""}, "message must be 1-2000 characters"),
            ("human.notify", {"message": "m" * 2001}, "message must be 1-2000 characters"),
            ("human.notify", {"message": "m", "priority": "loud"}, "priority must be normal or urgent"),
            ("human.notify", {"message": "m", "extra": 1}, "unknown field \"extra\""),
            ("human.wait", {"interaction_id": "00000000-0000-0000-0000-000000000000"}, "no question"),
        ]
        for method, params, text in cases:
            with self.subTest(method=method, params=str(params)[:60]):
                code, message = m.error(method, params)
                self.assertEqual(code, -32002 if method == "human.wait" else -32602)
                self.assertIn(text, message)
        self.assertEqual(rows("session_id = ?", sid), [])
        # 2000 characters, some of them two bytes long, are within the limit.
        self.assertTrue(m.ok("human.notify", {"message": "é" * 2000})["success"])

    def test_pending_questions_are_bounded_per_session(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        for i in range(3):
            self.ask(m, sid, question=f"q{i}", timeout_seconds=600)
        code, message = m.error("human.ask", {"question": "q3"})
        self.assertEqual(code, -32001)
        self.assertIn("MaxPendingQuestionsPerSession", message)
        self.assertEqual(len(rows("session_id = ?", sid)), 3)

    def test_answer_while_nobody_waits_is_handed_over_on_wait(self):
        sid, _ = self.session()
        m = self.mcp(sid)
        qid, _ = self.ask(m, sid, timeout_seconds=600)
        m.close()
        ctl("answer", qid, "later")
        [row] = rows("id = ?", qid)
        self.assertEqual((row["status"], row["handed_over"]), ("answered", 0))
        # Kept for whoever comes for it, and still the first answer.
        again = ctl("answer", qid, "sooner", check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("already answered on ctl", again.stderr)
        result = self.mcp(sid).ok("human.wait", {"interaction_id": qid})
        self.assertEqual((result["response"], result["timed_out"]), ("later", False))
        sb.wait_until(lambda: rows("id = ?", qid)[0]["handed_over"] == 1, 10, what="the record handed over")

    def test_late_delivery_queues_the_answer_as_a_prompt(self):
        sid, path = self.session()
        m = self.mcp(sid)
        qid, _ = self.ask(m, sid, timeout_seconds=600, late_delivery="prompt")
        m.close()
        before = sb.session_prop(path, "PendingPrompts")
        ctl("answer", qid, "ship it")
        # Nobody came for it within QuestionMinTimeoutSec: the session's next prompt.
        sb.wait_until(lambda: rows("id = ?", qid)[0]["handed_over"] == 1, 20, what="the late answer queued")
        self.assertEqual(sb.session_prop(path, "PendingPrompts"), before + 1)

    def test_a_question_outlives_kill9_and_is_answered_after_the_restart(self):
        sid, path = self.session()
        m = self.mcp(sid)
        qid, _ = self.ask(m, sid, question="Survive a crash?", timeout_seconds=600)
        DAEMON.kill9()
        DAEMON.start()
        sb.wait_state(path, "idle", "running")
        self.assertEqual([q["interaction_id"] for q in self.pending(sid)], [qid])
        ctl("answer", qid, "yes")
        result = self.mcp(sid).ok("human.wait", {"interaction_id": qid})
        self.assertEqual((result["interaction_id"], result["response"], result["timed_out"]), (qid, "yes", False))
        # Asked once: one record, one question record in the audit trail.
        self.assertEqual(len(rows("message = ?", "Survive a crash?")), 1)
        self.assertEqual(len([r for r in audit(MSG_QUESTION, sid) if qid in r["MESSAGE"]]), 1)

    def test_an_attempt_deadline_is_kept_across_a_restart(self):
        sid, path = self.session()
        m = self.mcp(sid)
        qid, _ = self.ask(m, sid, timeout_seconds=2, max_attempts=1)
        DAEMON.kill9()
        DAEMON.start()
        sb.wait_state(path, "idle", "running")
        result = self.mcp(sid).ok("human.wait", {"interaction_id": qid})
        self.assertTrue(result["timed_out"])
        self.assertEqual(rows("id = ?", qid)[0]["status"], "timeout")



class SystemModeQuestionsTest(unittest.TestCase):
    """ccdockerd --system with the real polkitd: an unprivileged caller (uid 65534) may neither see
    nor answer root's questions; root may."""

    NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    @classmethod
    def setUpClass(cls):
        cls.runtime = os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-questions-system-runtime")
        cls.daemon = sb.Daemon(unit="ccdockerd-questions-system-test.service", mode="--system", settings={
            "SystemdBus": "user", "RuntimeDirectory": cls.runtime, "HeartbeatTimeoutSec": "0"},
            extra_env={"DBUS_SYSTEM_BUS_ADDRESS": sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS")})
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)
        cls.daemon.start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        shutil.rmtree(cls.daemon.state_dir, ignore_errors=True)

    def busctl(self, *args, as_nobody=False, check=True):
        argv = ["busctl", "--address=" + sb.env("CCDOCKER_SYSTEM_BUS_ADDRESS"), "--json=short", *args]
        return sb.run(*(self.NOBODY if as_nobody else []), *argv, check=check)

    def test_unprivileged_caller_may_not_answer_or_list_roots_questions(self):
        p = self.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "CreateSession",
                        "a{sv}", "0")
        sid, path = json.loads(p.stdout)["data"]
        self.addCleanup(self.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        sb.wait_until(lambda: json.loads(self.busctl("get-property", "org.ccdocker1", path, "org.ccdocker1.Session",
                                                     "State").stdout)["data"] == "idle", 60, what="idle")
        m = Mcp(sid, runtime=self.runtime)
        self.addCleanup(m.close)
        call_id = m.send("human.ask", {"question": "Root's question?", "timeout_seconds": 600})

        def listed(as_nobody):
            p = self.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "ListQuestions", "b",
                            "true", as_nobody=as_nobody)
            return json.loads(json.loads(p.stdout)["data"][0])
        qid = sb.wait_until(lambda: listed(False), 10, what="the question")[0]["interaction_id"]
        self.assertEqual(listed(True), [], "another owner's questions are not listed")

        for args in (("/org/ccdocker1", "org.ccdocker1.Manager", "AnswerQuestion"),
                     (path, "org.ccdocker1.Session", "Answer")):
            p = self.busctl("call", "org.ccdocker1", *args, "ssa{sv}", qid, "yes", "0", as_nobody=True, check=False)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("org.ccdocker1.manage-sessions", p.stderr)
        denied = sb.wait_until(lambda: [r for r in sb.journal("MESSAGE_ID=c2962f7914b0421cae356094e82b5bf0",
                                                              f"CCDOCKER_SESSION={sid}", "CALLER_UID=65534")], 10,
                               what="the denial records")
        self.assertTrue(any("Answer" in r["MESSAGE"] for r in denied))
        self.assertEqual(listed(False)[0]["status"], "pending")

        self.busctl("call", "org.ccdocker1", "/org/ccdocker1", "org.ccdocker1.Manager", "AnswerQuestion", "ssa{sv}",
                    qid, "root says yes", "0")
        result = m.wait(call_id)["result"]
        self.assertEqual((result["response"], result["answered_by"]["who"]), ("root says yes", "uid 0"))


if __name__ == "__main__":
    unittest.main()

"""The MCP servers the session image carries (issue 16, docs/mcp-servers.md), in real sessions: the
daemon runs the image's own entrypoint (ccdocker-init and the real Claude Code CLI) in a --network=none
container against the scripted model, through the model proxy.

ServersTest.test_filesystem_sqlite_hook_and_the_session_set: a session asking for cc-docker,
filesystem and sqlite (mcp_servers). The CLI's system/init event lists those three connected and no
other (playwright, which the image carries, is left out); the SessionStart hook's line is in the
session's events and names them; the model reads a file the test put in the workspace and lists
/shared (the daemon's SharedDirectory, read-only) through filesystem, and creates a table in
/workspace/data.db and reads it back through sqlite; the host then reads the same rows from the file.

ServersTest.test_playwright_through_the_egress_proxy: a session with every server of the image. The
model navigates Chromium to an HTTPS page served on the host's loopback, which allowed_hosts names,
reads its text and saves a PNG screenshot in the workspace; a page on a port allowed_hosts does not
name fails with the tunnel error Chromium gives for the egress proxy's 403, which the daemon's journal
records as denied.
"""

import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import http.server
import unittest

import sandbox as sb
from test_model_session import call, result  # Session method calls, GetResult

DAEMON = None
MODEL = None
ROOTS = None
SHARED = None
PAGE = None
OTHER = None
EGRESS_MESSAGE_ID = "5cae453ebbd44387a722330274638946"  # EGRESS_DECISION_MESSAGE_ID of egress-proxy.h

FS_CANARY = "filesystem-canary-5d1e7"
SHARED_NAME = "shared-note-9a4c.txt"
PAGE_TEXT = "playwright-canary-3b8f"


def script(url, denied_url):
    return {"steps": [
        # filesystem and sqlite, one tool call after the other
        {"id": "fs_read", "when": {"last_user_contains": "FS-SQLITE"},
         "reply": {"tool_use": {"name": "mcp__filesystem__read_text_file", "input": {"path": "/workspace/note.txt"}}}},
        {"id": "fs_list", "when": {"tool_result_for": "fs_read"},
         "reply": {"tool_use": {"name": "mcp__filesystem__list_directory", "input": {"path": "/shared"}}}},
        {"id": "sql", "when": {"tool_result_for": "fs_list"},
         "reply": {"tool_use": {"name": "mcp__sqlite__execute_sql", "input": {
             "sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); "
                    "INSERT INTO notes (body) VALUES ('sqlite-row-one'), ('sqlite-row-two'); "
                    "SELECT body FROM notes ORDER BY id"}}}},
        {"id": "fs_done", "when": {"tool_result_for": "sql"}, "reply": {"text": "filesystem and sqlite answered"}},
        # playwright
        {"id": "nav", "when": {"last_user_contains": "PLAYWRIGHT"},
         "reply": {"tool_use": {"name": "mcp__playwright__browser_navigate", "input": {"url": url}}}},
        {"id": "text", "when": {"tool_result_for": "nav"},
         "reply": {"tool_use": {"name": "mcp__playwright__browser_evaluate",
                                "input": {"function": "() => document.body.innerText"}}}},
        {"id": "shot", "when": {"tool_result_for": "text"},
         "reply": {"tool_use": {"name": "mcp__playwright__browser_take_screenshot",
                                "input": {"filename": "page.png", "type": "png"}}}},
        {"id": "denied", "when": {"tool_result_for": "shot"},
         "reply": {"tool_use": {"name": "mcp__playwright__browser_navigate", "input": {"url": denied_url}}}},
        {"id": "pw_done", "when": {"tool_result_for": "denied"}, "reply": {"text": "playwright answered"}},
    ]}


class HttpsPage:
    """An HTTPS server on 127.0.0.1 with a throwaway self-signed certificate, serving one page."""

    def __init__(self, body):
        self.dir = tempfile.mkdtemp(prefix="ccdocker-https-")
        key, cert = os.path.join(self.dir, "key.pem"), os.path.join(self.dir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        page = body.encode()
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    global DAEMON, MODEL, ROOTS, SHARED, PAGE, OTHER
    ROOTS = tempfile.mkdtemp(prefix="ccdocker-roots-")
    os.chmod(ROOTS, 0o755)
    SHARED = tempfile.mkdtemp(prefix="ccdocker-shared-")
    os.chmod(SHARED, 0o755)
    with open(os.path.join(SHARED, SHARED_NAME), "w") as f:
        f.write("shared across sessions\n")
    PAGE = HttpsPage(f"<html><head><title>t</title></head><body><h1>{PAGE_TEXT}</h1></body></html>")
    OTHER = HttpsPage("<html><body>never</body></html>")
    MODEL = sb.ScriptedModel(script(f"https://127.0.0.1:{PAGE.port}/page", f"https://127.0.0.1:{OTHER.port}/"))
    DAEMON = sb.Daemon(unit="ccdockerd-mcp-servers-test.service", settings={
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), "ccdockerd-mcp-servers-runtime"),
        "WorkspaceRoots": ROOTS,
        "SharedDirectory": SHARED,
        "SharedReadOnly": "yes",
        "MaxMemory": "2G",
        "DefaultMemory": "1536M",
        "MaxTasks": "1024",
        "DefaultTasks": "1024",
        "ModelUpstreamURL": MODEL.base_url,
        "HeartbeatTimeoutSec": "60",
    }, extra_env={"ANTHROPIC_API_KEY": "sk-ant-test-mcp-servers"})
    del DAEMON.settings["SessionCommand"]  # the image's own entrypoint: ccdocker-init and the real CLI
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    DAEMON.start()


def tearDownModule():
    DAEMON.stop()
    shutil.rmtree(DAEMON.state_dir, ignore_errors=True)
    MODEL.stop()
    PAGE.stop()
    OTHER.stop()
    shutil.rmtree(ROOTS, ignore_errors=True)
    shutil.rmtree(SHARED, ignore_errors=True)


def events_of(path):
    return [json.loads(data) for _, _, data in json.loads(call(path, "GetOutput", "tu", "0", "0").stdout)["data"][0]]


def tool_results(step_ids):
    """The tool results the model got, by the step that asked for them."""
    got = {}
    for r in MODEL.requests():
        for t in r.get("tool_results", []):
            if t["step_id"] in step_ids:
                got[t["step_id"]] = t
    return got


class ServersTest(unittest.TestCase):
    def workspace(self):
        ws = tempfile.mkdtemp(dir=ROOTS)
        os.chown(ws, 1000, 1000)
        self.addCleanup(shutil.rmtree, ws, True)
        return ws

    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        return sid, path

    def init_event(self, events):
        inits = [e for e in events if e.get("type") == "system" and e.get("subtype") == "init"]
        self.assertTrue(inits, events[:5])
        return inits[0]

    def test_filesystem_sqlite_hook_and_the_session_set(self):
        ws = self.workspace()
        with open(os.path.join(ws, "note.txt"), "w") as f:
            f.write(FS_CANARY + "\n")
        os.chown(os.path.join(ws, "note.txt"), 1000, 1000)

        sid, path = self.create("prompt", "s", "FS-SQLITE: read the note, list /shared, use the database",
                                "workspace", "s", ws, "mcp_servers", "as", ["cc-docker", "filesystem", "sqlite"])
        status, text, error = result(path, timeout=300)
        events = events_of(path)
        self.assertEqual((status, text, error), ("completed", "filesystem and sqlite answered", ""),
                         json.dumps(events)[-4000:])

        # The CLI connected exactly the servers the session asked for.
        servers = {s["name"]: s["status"] for s in self.init_event(events)["mcp_servers"]}
        self.assertEqual(servers, {"cc-docker": "connected", "filesystem": "connected", "sqlite": "connected"})

        # The SessionStart hook ran and its line is in the session's events.
        hooks = [e for e in events if e.get("type") == "system" and e.get("subtype") == "hook_response"
                 and e.get("hook_event") == "SessionStart"]
        self.assertEqual(len(hooks), 1, hooks)
        self.assertEqual(hooks[0]["outcome"], "success", hooks[0])
        self.assertIn(f"cc-docker session {sid} started", hooks[0]["stdout"])
        self.assertIn("MCP servers: cc-docker, filesystem, sqlite", hooks[0]["stdout"])

        got = tool_results({"fs_read", "fs_list", "sql"})
        self.assertEqual(set(got), {"fs_read", "fs_list", "sql"}, got)
        for step, r in got.items():
            self.assertFalse(r["is_error"], (step, r))
        self.assertIn(FS_CANARY, got["fs_read"]["content_text"])
        self.assertIn(SHARED_NAME, got["fs_list"]["content_text"])
        self.assertIn("sqlite-row-one", got["sql"]["content_text"])
        self.assertIn("sqlite-row-two", got["sql"]["content_text"])

        # The database is a file of the workspace, and the host reads the same rows.
        db = sqlite3.connect(os.path.join(ws, "data.db"))
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT body FROM notes ORDER BY id").fetchall(),
                         [("sqlite-row-one",), ("sqlite-row-two",)])
        # /shared is read-only here.
        mounts = {m["Destination"]: m for m in
                  json.loads(sb.run("podman", "inspect", f"ccdocker-{sid}").stdout)[0]["Mounts"]}
        self.assertEqual(mounts["/shared"]["Source"], SHARED)
        self.assertFalse(mounts["/shared"]["RW"])

    def test_playwright_through_the_egress_proxy(self):
        page, other = PAGE, OTHER
        ws = self.workspace()

        sid, path = self.create("prompt", "s", "PLAYWRIGHT: open the page", "workspace", "s", ws,
                                "mcp_servers", "as", ["cc-docker", "filesystem", "sqlite", "playwright"],
                                "allowed_hosts", "as", [f"127.0.0.1:{page.port}"],
                                # The page's certificate is a throwaway one no CA signed.
                                "environment", "a{ss}", {"PLAYWRIGHT_MCP_IGNORE_HTTPS_ERRORS": "true"})
        status, text, error = result(path, timeout=300)
        events = events_of(path)
        self.assertEqual((status, text, error), ("completed", "playwright answered", ""),
                         json.dumps(events)[-4000:])

        servers = {s["name"]: s["status"] for s in self.init_event(events)["mcp_servers"]}
        for name in ("cc-docker", "filesystem", "sqlite", "playwright"):
            self.assertEqual(servers.get(name), "connected", servers)

        got = tool_results({"nav", "text", "shot", "denied"})
        self.assertEqual(set(got), {"nav", "text", "shot", "denied"}, got)
        for step in ("nav", "text", "shot"):
            self.assertFalse(got[step]["is_error"], got[step])
        self.assertIn(PAGE_TEXT, got["text"]["content_text"])
        self.assertEqual(page.requests[:1], ["/page"])

        shot = os.path.join(ws, "page.png")
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 1000)
        self.assertLess(len(png), 10 << 20)

        # The other page never loaded: the proxy refused the tunnel (403), which Chromium reports so.
        self.assertIn("ERR_TUNNEL_CONNECTION_FAILED", got["denied"]["content_text"])
        self.assertEqual(other.requests, [])
        denied = [r for r in sb.journal(f"MESSAGE_ID={EGRESS_MESSAGE_ID}", f"CCDOCKER_SESSION={sid}")
                  if r.get("CCDOCKER_EGRESS_PORT") == str(other.port)]
        self.assertTrue(denied)
        self.assertEqual({r.get("CCDOCKER_EGRESS_DECISION") for r in denied}, {"denied"})


if __name__ == "__main__":
    unittest.main()

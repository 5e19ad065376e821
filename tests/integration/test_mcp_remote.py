"""Remote MCP servers through the daemon (issue 16): a session with no network gets the github server
(SPEC.md 3.2) only when GITHUB_TOKEN is granted, and an mcp_overrides entry of type http whose header
names a granted secret; the container's .mcp.json points both at a loopback bridge to the daemon's
mcp.sock, and the daemon forwards to the configured upstream with the credential added. A local MCP
server over streamable HTTP stands in for the upstream: it sees the bearer token on every request, the
real CLI (through the scripted model) calls its tools and gets the answers, and nothing in the container
(its processes' environments, its files, `podman inspect`) holds a token. Bad overrides are refused at
CreateSession with the field named.

The stand-in is a small Python server rather than @modelcontextprotocol/server-everything: the test must
see the headers of every request, which the reference server does not report."""

import http.server
import json
import threading
import unittest

import sandbox as sb
from cli_session import call, connected_servers, mcp_json, result, start_daemon, stop_daemon

GH_TOKEN = "ghp_remote_mcp_test_4b1d9e77c0"
CUSTOM_TOKEN = "custom-key-8a2f61d3e5"
DAEMON = None
MODEL = None
UPSTREAM = None

SCRIPT = {
    "steps": [
        {"id": "gh", "when": {"last_user_contains": "ask github"},
         "reply": {"text": "Asking.", "tool_use": {"name": "mcp__github__whoami", "input": {}}}},
        {"id": "custom", "when": {"tool_result_for": "gh"},
         "reply": {"text": "And the custom one.", "tool_use": {"name": "mcp__custom-server__whoami", "input": {}}}},
        {"id": "done", "when": {"tool_result_for": "custom"}, "reply": {"text": "both answered"}},
        {"id": "plain", "when": {"last_user_contains": "say hi"}, "reply": {"text": "hi"}, "repeat": True},
        {"id": "fs", "when": {"last_user_contains": "list the directories"},
         "reply": {"tool_use": {"name": "mcp__filesystem__list_allowed_directories", "input": {}}}},
        {"id": "fs_done", "when": {"tool_result_for": "fs"}, "reply": {"text": "listed"}},
    ],
}


class Upstream:
    """A minimal MCP server over streamable HTTP (JSON answers) on loopback, recording each request's path,
    method, JSON-RPC method and Authorization / X-Custom-Key headers."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def record(self, rpc):
                with upstream.lock:
                    upstream.records.append({
                        "path": self.path, "http": self.command, "rpc": rpc,
                        "authorization": self.headers.get("Authorization"),
                        "custom": self.headers.get("X-Custom-Key"),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    })

            def answer(self, status, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.record(None)
                self.answer(405)

            def do_DELETE(self):
                self.record(None)
                self.answer(200)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                msg = json.loads(self.rfile.read(n) or b"{}")
                self.record(msg.get("method"))
                who = "github" if self.path.startswith("/mcp") else "custom"
                if "id" not in msg:
                    self.answer(202)
                    return
                method, mid = msg.get("method"), msg["id"]
                if method == "initialize":
                    result = {"protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                              "capabilities": {"tools": {}},
                              "serverInfo": {"name": f"{who}-standin", "version": "1"}}
                    self.answer(200, {"jsonrpc": "2.0", "id": mid, "result": result},
                                headers=[("Mcp-Session-Id", f"{who}-session-1")])
                elif method == "tools/list":
                    self.answer(200, {"jsonrpc": "2.0", "id": mid, "result": {"tools": [
                        {"name": "whoami", "description": "Who the token belongs to",
                         "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False}}]}})
                elif method == "tools/call":
                    self.answer(200, {"jsonrpc": "2.0", "id": mid, "result": {
                        "content": [{"type": "text", "text": f"{who}: you are octocat"}]}})
                else:
                    self.answer(200, {"jsonrpc": "2.0", "id": mid,
                                      "error": {"code": -32601, "message": "method not found"}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self, prefix):
        with self.lock:
            return [r for r in self.records if r["path"].startswith(prefix)]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def setUpModule():
    global DAEMON, MODEL, UPSTREAM
    UPSTREAM = Upstream()
    MODEL = sb.ScriptedModel(SCRIPT)
    DAEMON = start_daemon("ccdockerd-mcp-remote-test.service", "ccdockerd-mcp-remote-runtime", MODEL,
                          {"GithubMcpURL": f"http://127.0.0.1:{UPSTREAM.port}/mcp/",
                           "AllowedSecrets": "GITHUB_TOKEN CUSTOM_TOKEN"},
                          {"ANTHROPIC_API_KEY": "sk-ant-test-remote-mcp",
                           "CC_SECRET_GITHUB_TOKEN": GH_TOKEN, "CC_SECRET_CUSTOM_TOKEN": CUSTOM_TOKEN})


def tearDownModule():
    stop_daemon(DAEMON)
    MODEL.stop()
    UPSTREAM.stop()


CUSTOM = {"custom-server": {"type": "http", "url": "http://127.0.0.1:{port}/custom",
                            "headers": {"X-Custom-Key": "Key ${CUSTOM_TOKEN}"}}}


class RemoteMcpTest(unittest.TestCase):
    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        return sid, path

    def assert_no_token_inside(self, sid, *tokens):
        for token in tokens:
            found = sb.run("podman", "exec", f"ccdocker-{sid}", "sh", "-c",
                           f"grep -rIls -- '{token}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline /home /workspace "
                           "/run /tmp /etc /opt 2>/dev/null; true").stdout
            self.assertEqual(found.strip(), "", f"{token} found in the container")
            self.assertEqual(sb.run("podman", "inspect", f"ccdocker-{sid}").stdout.count(token), 0)
            self.assertEqual(sb.run("podman", "secret", "ls", "--format", "{{.Name}}").stdout.count(sid), 0)
            self.assertNotIn(token, DAEMON.log())

    def test_github_and_an_http_override_get_their_credential_from_the_daemon(self):
        overrides = json.dumps(CUSTOM).replace("{port}", str(UPSTREAM.port))
        sid, path = self.create("prompt", "s", "ask github", "secrets", "as", ["GITHUB_TOKEN", "CUSTOM_TOKEN"],
                                "mcp_overrides", "s", overrides,
                                "allowed_tools", "as", ["mcp__github__*", "mcp__custom-server__*"])
        status, text, error = result(path)
        self.assertEqual((status, text, error), ("completed", "both answered", ""))
        self.assertLessEqual({"github", "custom-server"}, connected_servers(path))

        # The CLI's .mcp.json names the loopback bridge, with no header.
        servers = mcp_json(path)["mcpServers"]
        self.assertRegex(servers["github"]["url"], r"^http://127\.0\.0\.1:\d+/github$")
        self.assertRegex(servers["custom-server"]["url"], r"^http://127\.0\.0\.1:\d+/custom-server$")
        self.assertNotIn("headers", servers["github"])
        self.assertNotIn("headers", servers["custom-server"])

        # The model called both tools and got their answers.
        reqs = [r for r in MODEL.requests() if r["matched_step"] in ("gh", "custom", "done")]
        self.assertEqual([r["matched_step"] for r in reqs], ["gh", "custom", "done"])
        self.assertEqual(reqs[1]["tool_results"][0]["content_text"], "github: you are octocat")
        self.assertEqual(reqs[2]["tool_results"][0]["content_text"], "custom: you are octocat")

        # Every request the upstream saw carried the daemon's credential, and only its own.
        gh, custom = UPSTREAM.requests("/mcp"), UPSTREAM.requests("/custom")
        self.assertIn("tools/call", [r["rpc"] for r in gh])
        self.assertIn("tools/call", [r["rpc"] for r in custom])
        self.assertEqual({r["authorization"] for r in gh}, {f"Bearer {GH_TOKEN}"})
        self.assertEqual({r["custom"] for r in gh}, {None})
        self.assertEqual({r["custom"] for r in custom}, {f"Key {CUSTOM_TOKEN}"})
        self.assertEqual({r["authorization"] for r in custom}, {None})
        # The MCP session id came back to the client, which sent it on.
        self.assertIn("github-session-1", [r["headers"].get("mcp-session-id") for r in gh])

        self.assert_no_token_inside(sid, GH_TOKEN, CUSTOM_TOKEN)
        records = sb.journal("MESSAGE_ID=7d1f3c0e5a6b4e0f9a3c2b8d1e4f6a70", f"CCDOCKER_SESSION={sid}")
        self.assertTrue(any(r.get("CCDOCKER_MCP_SERVER") == "github" for r in records), records)

    def test_github_is_absent_without_its_secret(self):
        _sid, path = self.create("prompt", "s", "say hi")
        self.assertEqual(result(path)[0], "completed")
        self.assertNotIn("github", mcp_json(path)["mcpServers"])

    def test_an_override_changes_filesystem_args(self):
        overrides = {"filesystem": {"args": ["/workspace", "/tmp"]}}
        sid, path = self.create("prompt", "s", "list the directories", "mcp_overrides", "s", json.dumps(overrides),
                                 "mcp_servers", "as", ["cc-docker", "filesystem"],
                                 "allowed_tools", "as", ["mcp__filesystem__*"])
        fs = mcp_json(path)["mcpServers"].get("filesystem")
        self.assertIsNotNone(fs, "the image has no filesystem server")
        self.assertEqual(fs["args"], ["/workspace", "/tmp"])
        self.assertEqual(result(path), ("completed", "listed", ""))
        self.assertIn("filesystem", connected_servers(path))
        out = [r for r in MODEL.requests() if r["matched_step"] == "fs_done"][-1]["tool_results"][0]
        self.assertFalse(out["is_error"], out)
        self.assertIn("Allowed directories", out["content_text"])
        # The CLI ran the server with the overridden arguments. (What it then serves is the client's roots:
        # server-filesystem replaces its arguments with them, and Claude Code sends /workspace.)
        cmdlines = sb.run("podman", "exec", f"ccdocker-{sid}", "sh", "-c",
                          "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done").stdout
        fs_lines = [line for line in cmdlines.splitlines() if "server-filesystem" in line]
        self.assertTrue(fs_lines, cmdlines)
        self.assertTrue(any(line.rstrip().endswith("/workspace /tmp") for line in fs_lines), fs_lines)

    def test_a_refusal_waits_for_a_small_body(self):
        """A request refused from its headers alone (PUT is not MCP streamable HTTP) with a small body:
        the body is read before the 405 is sent, so a client that writes its headers, then its body a
        moment later, gets the refusal instead of a broken pipe (the model proxy's rule, shared through
        daemon/session-http.c)."""
        sid, path = self.create("prompt", "s", "say hi", "secrets", "as", ["GITHUB_TOKEN"])
        self.assertEqual(result(path)[0], "completed")
        probe = r"""
import json, socket, sys, time
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x" * 4000}).encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect("/run/ccdocker/mcp.sock")
s.sendall(b"PUT /github HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body))
time.sleep(0.5)  # the old forward answered and closed in here
try:
    s.sendall(body)
except OSError as e:
    print("send failed: %s" % e)
    sys.exit(0)
answer = b""
while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
sys.stdout.write(answer.decode(errors="replace"))
"""
        before = len(UPSTREAM.requests("/mcp"))
        answer = sb.run("podman", "exec", f"ccdocker-{sid}", "python3", "-c", probe).stdout
        self.assertTrue(answer.startswith("HTTP/1.1 405"), answer[:300])
        self.assertIn("POST, GET and DELETE", answer)
        self.assertEqual(len(UPSTREAM.requests("/mcp")), before)

    def test_bad_overrides_are_refused_naming_the_field(self):
        cases = [
            ({"x": {"type": "websocket", "url": "http://127.0.0.1:1/x"}}, (), "'mcp_overrides.x.type'"),
            ({"filesystem": {"command": "/workspace/run-me.sh"}}, (), "'mcp_overrides.filesystem.command'"),
            ({"y": {"type": "http", "url": "http://127.0.0.1:1/y", "headers": {"Authorization": "Bearer ${CUSTOM_TOKEN}"}}},
             ("GITHUB_TOKEN",), "'mcp_overrides.y.headers.Authorization' names secret 'CUSTOM_TOKEN'"),
        ]
        for overrides, secrets, field in cases:
            config = ["mcp_overrides", "s", json.dumps(overrides)]
            if secrets:
                config += ["secrets", "as", list(secrets)]
            with self.assertRaises(AssertionError) as ctx:
                self.create(*config)
            self.assertIn(field, str(ctx.exception))


if __name__ == "__main__":
    unittest.main()

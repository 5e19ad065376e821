"""ccdocker-mcp, the MCP server of the session image, driven over pipes as Claude Code drives it.

McpProtocolTest runs the binary of $CCDOCKER_BUILD_DIR (the sanitizer build too, through
tools/ccdocker-dev test): the initialize handshake and version negotiation, ping, the empty tool
list, the errors of JSON-RPC (parse, invalid request, unknown method, unknown tool) after each of
which the server still answers, and exit 0 at the end of stdin. Every test ends by closing stdin
and checking the exit status and that stderr has no sanitizer report.

McpInImageTest runs the copy the session image carries, with podman, to show it starts and answers.
"""

import json
import os
import select
import subprocess
import time
import unittest

import sandbox as sb

IMAGE = os.environ.get("CCDOCKER_SESSION_IMAGE", "localhost/ccdocker-session:dev")
IMAGE_BINARY = "/opt/cc-docker/bin/ccdocker-mcp"
LATEST = "2025-11-25"


def binary():
    return os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "mcp", "ccdocker-mcp")


def request(msg_id, method, params=None):
    msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def initialize_request(msg_id=0, version=LATEST):
    return request(msg_id, "initialize", {"protocolVersion": version, "capabilities": {"roots": {}},
                                          "clientInfo": {"name": "claude-code", "version": "test"}})


class Server:
    """One ccdocker-mcp process on pipes."""

    def __init__(self):
        self.proc = subprocess.Popen([binary()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""

    def send_line(self, data):
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def send(self, msg):
        self.send_line(json.dumps(msg).encode())

    def receive(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer from ccdocker-mcp in {timeout} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise AssertionError(f"ccdocker-mcp closed stdout: {self.proc.stderr.read()!r}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def call(self, msg):
        self.send(msg)
        return self.receive()

    def nothing_pending(self, wait=0.3):
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        return not self.buf and not ready

    def close(self):
        """Ends stdin; returns (exit status, stderr)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("ccdocker-mcp did not exit at the end of stdin")
        rest = self.proc.stdout.read()
        err = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, rest, err


class McpProtocolTest(unittest.TestCase):
    def setUp(self):
        self.server = Server()

    def tearDown(self):
        if self.server.proc.returncode is None:
            code, rest, err = self.server.close()
            self.assertEqual(code, 0, f"ccdocker-mcp exited {code}: {err}")
            self.assertEqual(rest, b"", "ccdocker-mcp wrote after the last answer")
            self.assertNotIn("Sanitizer", err)
            self.assertNotIn("runtime error", err)

    def initialize(self, version=LATEST):
        answer = self.server.call(initialize_request(0, version))
        self.server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def assert_error(self, answer, msg_id, code):
        self.assertEqual(answer.get("jsonrpc"), "2.0")
        self.assertEqual(answer.get("id"), msg_id)
        self.assertNotIn("result", answer)
        self.assertEqual(answer["error"]["code"], code, answer)
        return answer["error"]["message"]

    def test_initialize_echoes_each_supported_version(self):
        for version in ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"):
            with self.subTest(version=version):
                server = Server()
                try:
                    answer = server.call(initialize_request(7, version))
                finally:
                    code, _, err = server.close()
                self.assertEqual(code, 0, err)
                self.assertEqual(answer["id"], 7)
                self.assertEqual(answer["result"]["protocolVersion"], version)

    def test_initialize_answers_latest_for_unknown_version(self):
        result = self.initialize("2099-01-01")["result"]
        self.assertEqual(result["protocolVersion"], LATEST)

    def test_initialize_result_names_server_and_tools_capability(self):
        answer = self.initialize()
        self.assertEqual(answer["jsonrpc"], "2.0")
        self.assertEqual(answer["id"], 0)
        result = answer["result"]
        self.assertEqual(result["serverInfo"]["name"], "ccdocker-mcp")
        self.assertRegex(result["serverInfo"]["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(result["capabilities"], {"tools": {"listChanged": False}})
        self.assertIsInstance(result["instructions"], str)
        self.assertTrue(result["instructions"])

    def test_initialized_notification_gets_no_answer(self):
        self.initialize()
        self.assertTrue(self.server.nothing_pending())
        self.server.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}})
        self.assertTrue(self.server.nothing_pending())

    def test_second_initialize_is_refused(self):
        self.initialize()
        self.assert_error(self.server.call(initialize_request(1)), 1, -32600)

    def test_tools_list_is_empty(self):
        self.initialize()
        answer = self.server.call(request(1, "tools/list"))
        self.assertEqual(answer, {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

    def test_ping_answers_empty_object(self):
        self.assertEqual(self.server.call(request("p", "ping"))["result"], {})
        self.initialize()
        self.assertEqual(self.server.call(request(2, "ping")), {"jsonrpc": "2.0", "id": 2, "result": {}})

    def test_unknown_method_is_method_not_found_at_once(self):
        # Before initialize too: Claude Code may probe with server/discover first.
        self.assert_error(self.server.call(request(1, "server/discover")), 1, -32601)
        self.initialize()
        message = self.assert_error(self.server.call(request(2, "resources/list")), 2, -32601)
        self.assertIn("resources/list", message)

    def test_tools_call_unknown_tool_is_invalid_params_naming_it(self):
        self.initialize()
        answer = self.server.call(request(3, "tools/call", {"name": "no_such_tool", "arguments": {}}))
        message = self.assert_error(answer, 3, -32602)
        self.assertIn("no_such_tool", message)
        self.assert_error(self.server.call(request(4, "tools/call", {"arguments": {}})), 4, -32602)

    def test_garbage_line_is_parse_error_and_server_survives(self):
        self.initialize()
        self.server.send_line(b"this is not json {")
        self.assert_error(self.server.receive(), None, -32700)
        self.assertEqual(self.server.call(request(5, "ping"))["result"], {})

    def test_invalid_requests_are_refused_and_server_survives(self):
        self.initialize()
        self.server.send_line(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]')
        self.assert_error(self.server.receive(), None, -32600)
        self.server.send({"jsonrpc": "1.0", "id": 6, "method": "ping"})
        self.assertEqual(self.server.receive()["error"]["code"], -32600)
        self.assertEqual(self.server.call(request(7, "ping"))["result"], {})

    def test_request_before_initialize_is_refused(self):
        message = self.assert_error(self.server.call(request(1, "tools/list")), 1, -32600)
        self.assertIn("initialize", message)
        self.assert_error(self.server.call(request(2, "tools/call", {"name": "x"})), 2, -32600)
        self.assertEqual(self.initialize()["result"]["protocolVersion"], LATEST)
        self.assertEqual(self.server.call(request(3, "tools/list"))["result"], {"tools": []})

    def test_eof_exits_zero(self):
        self.initialize()
        code, rest, err = self.server.close()
        self.assertEqual(code, 0, err)
        self.assertEqual(rest, b"")
        self.assertNotIn("Sanitizer", err)

    def test_eof_at_once_exits_zero(self):
        code, rest, err = self.server.close()
        self.assertEqual(code, 0, err)
        self.assertEqual(rest, b"")


class McpInImageTest(unittest.TestCase):
    def test_image_carries_working_server(self):
        lines = [initialize_request(0), {"jsonrpc": "2.0", "method": "notifications/initialized"},
                 request(1, "tools/list")]
        p = sb.run("podman", "run", "--rm", "-i", "--network=none", "--entrypoint", IMAGE_BINARY, IMAGE,
                   input="".join(json.dumps(m) + "\n" for m in lines), timeout=120)
        answers = [json.loads(line) for line in p.stdout.splitlines()]
        self.assertEqual(len(answers), 2, p.stdout)
        self.assertEqual(answers[0]["id"], 0)
        self.assertEqual(answers[0]["result"]["protocolVersion"], LATEST)
        self.assertEqual(answers[0]["result"]["serverInfo"]["name"], "ccdocker-mcp")
        self.assertEqual(answers[1], {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})


if __name__ == "__main__":
    unittest.main()

"""PostgreSQL through a TCP forward (issue 16, SPEC.md 3.4): a real PostgreSQL server (Debian's, a
throwaway cluster initdb'd into the sandbox directory, on loopback, stopped by its PID) and a session with
no network that is granted POSTGRES_URL. ccdocker-init bridges a loopback port to the egress socket with
"CONNECT postgres.forward.invalid:PORT", points POSTGRES_URL at it, and the daemon connects to the
secret's host:port and nothing else. The real CLI (through the scripted model) runs a SELECT through the
forward and gets the row; without the secret there is no forward and no postgres server; a session whose
allowlist names another host cannot reach the database, and neither the forward's port nor the database's
address can be asked for by a session that was not given them. When the image has @bytebase/dbhub the
postgres MCP server answers the SELECT too."""

import base64
import os
import shutil
import socket
import subprocess
import unittest

import sandbox as sb
from cli_session import call, connected_servers, mcp_json, result, start_daemon, stop_daemon

PG_BIN = "/usr/lib/postgresql/15/bin"
DAEMON = None
MODEL = None
PG = None

# Run inside the container (the image has python3): the PostgreSQL wire protocol by hand, trust auth.
CLIENT = r'''
import os, socket, struct, sys, urllib.parse as up
url = up.urlparse(os.environ["POSTGRES_URL"])
print("TARGET:%s:%s" % (url.hostname, url.port))
s = socket.create_connection((url.hostname, url.port), timeout=30)
def recv(n):
    d = b""
    while len(d) < n:
        k = s.recv(n - len(d))
        if not k:
            print("CLOSED"); sys.exit(1)
        d += k
    return d
def read():
    h = recv(5)
    return h[:1], recv(struct.unpack("!I", h[1:])[0] - 4)
body = b"user\0" + url.username.encode() + b"\0database\0" + url.path[1:].encode() + b"\0\0"
s.sendall(struct.pack("!II", len(body) + 8, 196608) + body)
while True:
    t, d = read()
    if t == b"E":
        print("ERR:" + d.decode(errors="replace")); sys.exit(1)
    if t == b"Z":
        break
q = b"SELECT v FROM answers\0"
s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
while True:
    t, d = read()
    if t == b"D":
        n = struct.unpack("!i", d[2:6])[0]
        print("ROW:" + d[6:6 + n].decode())
    if t == b"E":
        print("ERR:" + d.decode(errors="replace"))
    if t == b"Z":
        break
'''
COMMAND = ("echo " + base64.b64encode(CLIENT.encode()).decode() + " | base64 -d > /tmp/pg-client.py && "
           "python3 /tmp/pg-client.py")

SCRIPT = {
    "steps": [
        {"id": "select", "when": {"last_user_contains": "query the database"},
         "reply": {"text": "Querying.", "tool_use": {"name": "Bash", "input": {
             "command": COMMAND, "description": "SELECT through the forward"}}}},
        {"id": "done", "when": {"tool_result_for": "select"}, "reply": {"text": "queried"}},
        {"id": "dbhub", "when": {"last_user_contains": "ask dbhub"},
         "reply": {"text": "Asking dbhub.", "tool_use": {"name": "mcp__postgres__execute_sql",
                                                         "input": {"sql": "SELECT v FROM answers"}}}},
        {"id": "dbhub_done", "when": {"tool_result_for": "dbhub"}, "reply": {"text": "dbhub answered"}},
        {"id": "plain", "when": {"last_user_contains": "say hi"}, "reply": {"text": "hi"}, "repeat": True},
    ],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway cluster on 127.0.0.1, run as the postgres user (it refuses root), stopped by PID."""

    def __init__(self, root):
        self.dir = os.path.join(root, f"pg-{os.getpid()}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir, mode=0o700)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
        sb.run(*self.as_pg, f"{PG_BIN}/initdb", "-D", f"{self.dir}/data", "--auth=trust", "-U", "postgres",
               "--no-sync", timeout=120)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(
            [*self.as_pg, f"{PG_BIN}/postgres", "-D", f"{self.dir}/data", "-k", self.dir,
             "-h", "127.0.0.1", "-p", str(self.port), "-c", "fsync=off"],
            stdout=self.log, stderr=subprocess.STDOUT)
        sb.wait_until(lambda: self.psql("postgres", "SELECT 1", check=False).returncode == 0, 60,
                      what="PostgreSQL to accept connections")
        self.psql("postgres", "CREATE DATABASE ccd")
        self.psql("ccd", "CREATE TABLE answers (v text); INSERT INTO answers VALUES ('forty-two')")

    def psql(self, db, sql, check=True):
        return sb.run(*self.as_pg, f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql, check=check, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    global DAEMON, MODEL, PG
    PG = Postgres(sb.env("CCDOCKER_RUN_DIR"))
    MODEL = sb.ScriptedModel(SCRIPT)
    DAEMON = start_daemon("ccdockerd-postgres-test.service", "ccdockerd-postgres-runtime", MODEL,
                          {"AllowedSecrets": "POSTGRES_URL"},
                          {"ANTHROPIC_API_KEY": "sk-ant-test-postgres",
                           "CC_SECRET_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{PG.port}/ccd?sslmode=disable"})


def tearDownModule():
    stop_daemon(DAEMON)
    MODEL.stop()
    PG.stop()


# From inside the container, one CONNECT on the egress socket: the proxy's status line.
CONNECT = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/run/ccdocker/egress.sock")
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (sys.argv[1], sys.argv[1])).encode())
print(s.recv(4096).decode(errors="replace").split("\r\n")[0])
'''


class PostgresForwardTest(unittest.TestCase):
    def create(self, *config):
        sid, path = sb.create_session(*config)
        self.addCleanup(call, path, "Stop", "b", "true", check=False)
        return sid, path

    def connect_from_inside(self, sid, target):
        return sb.run("podman", "exec", f"ccdocker-{sid}", "python3", "-c", CONNECT, target).stdout.strip()

    def test_a_select_through_the_forward(self):
        sid, path = self.create("prompt", "s", "query the database", "secrets", "as", ["POSTGRES_URL"])
        self.assertEqual(result(path), ("completed", "queried", ""))
        out = [r for r in MODEL.requests() if r["matched_step"] == "done"][-1]["tool_results"][0]["content_text"]
        self.assertIn("ROW:forty-two", out)
        # POSTGRES_URL inside names the bridge, not the database.
        self.assertRegex(out, r"TARGET:127\.0\.0\.1:\d+")
        self.assertNotIn(f"TARGET:127.0.0.1:{PG.port}\n", out + "\n")

        # The forward does not widen the allowlist: the database by address, or the forward at another
        # port, is refused.
        self.assertIn("403", self.connect_from_inside(sid, f"127.0.0.1:{PG.port}"))
        self.assertIn("403", self.connect_from_inside(sid, "postgres.forward.invalid:1"))
        self.assertIn("403", self.connect_from_inside(sid, f"other.forward.invalid:{PG.port}"))
        self.assertIn("200", self.connect_from_inside(sid, f"postgres.forward.invalid:{PG.port}"))
        records = sb.journal("MESSAGE_ID=5cae453ebbd44387a722330274638946", f"CCDOCKER_SESSION={sid}")
        self.assertIn("allowed", [r.get("CCDOCKER_EGRESS_DECISION") for r in records])

    def test_without_the_secret_no_forward_and_no_server(self):
        sid, path = self.create("prompt", "s", "say hi", "allowed_hosts", "as", ["127.0.0.1:1"])
        self.assertEqual(result(path)[0], "completed")
        self.assertNotIn("postgres", mcp_json(path)["mcpServers"])
        env = sb.run("podman", "exec", f"ccdocker-{sid}", "sh", "-c",
                     "cat /proc/$(pgrep -x claude | head -n1)/environ").stdout
        self.assertNotIn("POSTGRES_URL", env)
        # Its allowlist names another host: the database is out of reach, by address and by forward.
        self.assertIn("403", self.connect_from_inside(sid, f"127.0.0.1:{PG.port}"))
        self.assertIn("403", self.connect_from_inside(sid, f"postgres.forward.invalid:{PG.port}"))

    def test_dbhub_answers_through_the_forward(self):
        sid, path = self.create("prompt", "s", "ask dbhub", "secrets", "as", ["POSTGRES_URL"],
                                "allowed_tools", "as", ["mcp__postgres__*"])
        servers = mcp_json(path)["mcpServers"]
        self.assertIn("postgres", servers, "the image has no @bytebase/dbhub")
        self.assertEqual(result(path), ("completed", "dbhub answered", ""))
        self.assertIn("postgres", connected_servers(path))
        out = [r for r in MODEL.requests() if r["matched_step"] == "dbhub_done"][-1]["tool_results"][0]
        self.assertFalse(out["is_error"], out)
        self.assertIn("forty-two", out["content_text"])


if __name__ == "__main__":
    unittest.main()

"""Helpers for the tests that run the real CLI in no-network sessions of a daemon of their own
(test_mcp_remote.py, test_postgres.py): the daemon on the image's own entrypoint, a session's result,
its .mcp.json and the MCP servers the CLI's init event lists."""

import json
import os
import shutil

import sandbox as sb


def start_daemon(unit, runtime_name, model, settings, extra_env):
    """A daemon whose sessions run ccdocker-init and the real CLI against the scripted model."""
    daemon = sb.Daemon(unit=unit, settings={
        "RuntimeDirectory": os.path.join(sb.env("CCDOCKER_RUN_DIR"), runtime_name),
        "MaxMemory": "1G",
        "DefaultMemory": "512M",
        "ModelUpstreamURL": model.base_url,
        "HeartbeatTimeoutSec": "30",
        **settings,
    }, extra_env=extra_env)
    del daemon.settings["SessionCommand"]  # the image's own entrypoint
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    daemon.start()
    return daemon


def stop_daemon(daemon):
    daemon.stop()
    shutil.rmtree(daemon.state_dir, ignore_errors=True)


def call(path, method, *args, check=True):
    return sb.busctl("call", "org.ccdocker1", path, "org.ccdocker1.Session", method, *args, check=check)


def result(path, timeout=180):
    status, text, error, _usage = json.loads(call(path, "GetResult", "bu", "true", str(timeout)).stdout)["data"]
    return status, text, error


def mcp_json(path):
    mcp = os.path.join(sb.session_prop(path, "Workspace"), ".mcp.json")
    sb.wait_until(lambda: os.path.exists(mcp), 60, what=mcp)
    with open(mcp) as f:
        return json.load(f)


def connected_servers(path):
    """The names of the MCP servers the CLI's own system/init event lists as connected, or as pending: with
    --input-format stream-json the CLI does not wait for a slow server (node starting dbhub on a loaded
    machine) before that event; the tool call that follows shows it connected."""
    events = json.loads(call(path, "GetOutput", "tu", "0", "0").stdout)["data"][0]
    for e in events:
        data = json.loads(e[2])
        if (data.get("type"), data.get("subtype")) == ("system", "init"):
            return {s["name"] for s in data.get("mcp_servers", []) if s.get("status") in ("connected", "pending")}
    return set()

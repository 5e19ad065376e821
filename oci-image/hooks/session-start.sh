#!/bin/sh
# The SessionStart hook of SPEC.md 1.3 (settings.json.tmpl names it; docs/ccdocker-init.md). Claude
# Code runs it when the session starts or resumes and hands it the event as JSON on stdin. It
# answers one line naming the session, how it started and the MCP servers of /workspace/.mcp.json:
# the CLI puts it in the session's events (a system/hook_response event, on every stream-json
# output) and gives it to the model as context. Cheap: one node process, no network, no writes.
exec /usr/local/bin/node -e '
const fs = require("fs");
let input = "";
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => {
  let ev = {};
  try { ev = JSON.parse(input); } catch (e) { /* no event: still say hello */ }
  let servers = [];
  try {
    const mcp = JSON.parse(fs.readFileSync((ev.cwd || "/workspace") + "/.mcp.json", "utf8"));
    servers = Object.keys(mcp.mcpServers || {});
  } catch (e) { /* no .mcp.json */ }
  const line = "cc-docker session " + (process.env.SESSION_ID || "unknown") + " " +
    (ev.source === "resume" ? "resumed" : "started") + " at " + new Date().toISOString() +
    "; MCP servers: " + (servers.length ? servers.join(", ") : "none");
  process.stdout.write(JSON.stringify({
    hookSpecificOutput: { hookEventName: "SessionStart", additionalContext: line },
  }) + "\n");
});
'

#!/usr/bin/env python3
"""bench/http (http_api.py: a file named http.py here would hide the standard http package from
the other benchmarks): what ccdocker-httpd costs on top of ccdockerd.

  requests   GET /api/v1/sessions/{id} (answered from httpd's property cache, httpd/cache.c; before issue
             18 one D-Bus GetAll per request) with keep-alive, CONNS
             connections for SECONDS, from a node client (http.Agent keepAlive): requests/s and
             latency p50/p99. Baselines from the same run and the same client: a trivial node HTTP
             server answering a session-sized JSON body (the client's ceiling), and ccdocker-httpd's
             own 404 for an unknown route (authentication and routing, no D-Bus).
  fanout     one session whose container emits RATE events/s for SECONDS (the emitter of
             bench/events, speaking the session channel), followed by CLIENTS WebSocket clients (the
             npm ws package) through ccdocker-httpd: delivery latency from the emitter's clock to
             each client's, p50/p99/max, and a check that every client got every event once and in
             order. httpd holds one Attach for them all (httpd/fanout.c). Baseline from the same run: one
             `ccdockerctl attach` reading the daemon's Attach fd directly.

--httpd BINARY runs another build's ccdocker-httpd against the same daemon and clients (to print the
figures of an older one, e.g. one built from the commit before a change, beside the current one's).

Nothing passes or fails on time (the targets, 10,000 requests/s and p99 under 20 ms with 100
subscribers, are printed beside the figures); the exit status is 1 only if something broke. Run it
in the sandbox:

    tools/ccdocker-dev exec -- /usr/bin/python3 tests/bench/http_api.py [--conns 32] [--seconds 5] [--clients 100] [--rate 1000] [--httpd BINARY] [--procs N] [--only fanout]

The fan-out's clients are split over --procs node processes (one per 25 clients by default, at most 4): a
single node process parsing 100 clients' 100,000 messages/s was itself most of the latency measured. Each
reports its own event-loop delay p99, printed beside the figure, so what is the client's can be told from
what is httpd's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This file's name hides the standard library's http package from whatever runs with its directory on
# the path: take the directory off, and load bench/events by its path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import importlib.util  # noqa: E402

import sandbox as sb  # noqa: E402
import test_httpd as th  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_events", os.path.join(HERE, "events.py"))
ev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ev)

UNIT = "ccdockerd-bench-http.service"

# argv: JSON {url, token, conns, seconds}. Prints {requests, errors, seconds, p50_us, p99_us}.
LOAD = r"""
const http = require('http');
const { performance } = require('perf_hooks');
const o = JSON.parse(process.argv[2]);
const u = new URL(o.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: o.conns });
const headers = o.token ? { Authorization: 'Bearer ' + o.token } : {};
let n = 0, errors = 0, stop = false;
const lat = [];
const end = performance.now() + o.seconds * 1000;
function one() {
  if (stop) return;
  const t0 = performance.now();
  const req = http.request({ agent, host: u.hostname, port: u.port, path: u.pathname, headers }, (res) => {
    res.on('data', () => {});
    res.on('end', () => {
      if (res.statusCode !== o.expect) errors++;
      n++; lat.push(performance.now() - t0);
      if (performance.now() < end) one(); else finish();
    });
  });
  req.on('error', () => { errors++; if (performance.now() < end) setImmediate(one); else finish(); });
  req.end();
}
let open = o.conns;
const t0 = performance.now();
function finish() {
  if (--open > 0) return;
  stop = true;
  lat.sort((a, b) => a - b);
  const p = (q) => Math.round(lat[Math.min(lat.length - 1, Math.floor(lat.length * q))] * 1000);
  console.log(JSON.stringify({ requests: n, errors, seconds: (performance.now() - t0) / 1000, p50_us: p(0.5), p99_us: p(0.99) }));
  process.exit(0);
}
for (let i = 0; i < o.conns; i++) one();
"""

# A trivial server for the client's ceiling: argv port, body.
TRIVIAL = r"""
const http = require('http');
const body = process.argv[3];
http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'application/json' }); res.end(body); })
  .listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'));
"""

# argv: JSON {url, token, clients, total, timeout_ms, ready_file}. Each client reads until seq total;
# writes to out_file {missing, repeated, disorder, errors, lat: [us of every event >= 2], seqs: [their seqs],
# loop_p99_us, cpu_us}. The
# clients are split over --procs such processes (one node process parsing 100,000 messages/s is a
# bound of its own); loop_p99_us is the process's own event-loop delay (how late it ran a callback that
# was due), the part of a latency that is the client's, and cpu_us what it used.
FANOUT = r"""
const WebSocket = require('ws');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const o = JSON.parse(process.argv[2]);
const lat = [], seqs = [];
let done = 0, ready = 0, missing = 0, repeated = 0, disorder = 0, errors = [];
const now_us = () => (performance.timeOrigin + performance.now()) * 1000;
const loop = monitorEventLoopDelay({ resolution: 1 });
let cpu0 = null;
function finish() {
  loop.disable();
  const cpu = cpu0 ? process.cpuUsage(cpu0) : { user: 0, system: 0 };
  require('fs').writeFileSync(o.out_file, JSON.stringify({
    missing, repeated, disorder, errors, lat: lat.map(Math.round), seqs,
    loop_p99_us: Math.round(loop.percentile(99) / 1000), cpu_us: cpu.user + cpu.system }));
  process.exit(0);
}
require('fs').watchFile(o.go_file, { interval: 50 }, () => { if (!cpu0) { cpu0 = process.cpuUsage(); loop.enable(); } });
for (let i = 0; i < o.clients; i++) {
  const seen = new Set(); let last = 0;
  const ws = new WebSocket(o.url, { headers: { Authorization: 'Bearer ' + o.token } });
  ws.on('open', () => { if (++ready === o.clients) require('fs').writeFileSync(o.ready_file, 'ok'); });
  ws.on('message', (data) => {
    const arrived = now_us();
    const s = data.toString();
    const i1 = s.indexOf(',"time":'), i2 = s.indexOf(',', i1 + 8);
    const seq = Number(s.slice(7, i1)), t = Number(s.slice(i1 + 8, i2));
    if (seen.has(seq)) repeated++; else seen.add(seq);
    if (seq <= last) disorder++;
    last = seq;
    if (seq >= 2) { lat.push(arrived - t); seqs.push(seq); }
    if (seq >= o.total) {
      for (let k = o.since + 1; k <= o.total; k++) if (!seen.has(k)) missing++;
      ws.close();
      if (++done === o.clients) finish();
    }
  });
  ws.on('error', (e) => errors.push(String(e.message)));
}
setTimeout(() => { errors.push('timeout'); finish(); }, o.timeout_ms);
"""


def node(script_path, *args, **kw):
    env = dict(os.environ, NODE_PATH=os.path.join(sb.env("CCDOCKER_NPM_DIR"), "node_modules"))
    return subprocess.Popen(["node", script_path, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw)


def load(tmp, url, token, conns, seconds, expect=200):
    p = node(os.path.join(tmp, "load.js"), json.dumps({"url": url, "token": token, "conns": conns,
                                                        "seconds": seconds, "expect": expect}))
    out, err = p.communicate(timeout=seconds + 60)
    if p.returncode != 0:
        raise AssertionError(f"the load client failed: {err}")
    r = json.loads(out)
    r["rate"] = r["requests"] / r["seconds"]
    return r


def cpu_of(pid):
    """The user and system CPU seconds process pid used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write(tmp, name, text):
    with open(os.path.join(tmp, name), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=32, help="keep-alive connections of the request test (32)")
    ap.add_argument("--seconds", type=float, default=5, help="length of each request run and of the fan-out (5)")
    ap.add_argument("--clients", type=int, default=100, help="WebSocket subscribers of the fan-out (100)")
    ap.add_argument("--rate", type=float, default=1000, help="events/s of the fan-out (1000)")
    ap.add_argument("--httpd", default=None, help="the ccdocker-httpd binary (default: the build's)")
    ap.add_argument("--procs", type=int, default=0,
                    help="node processes the WebSocket clients are split over (default: one per 25 clients, at most 4)")
    ap.add_argument("--only", choices=("all", "requests", "fanout"), default="all", help="which part to run (all)")
    ap.add_argument("--perf", default=None, metavar="FILE",
                    help="record ccdocker-httpd with perf (linux-perf) during the fan-out, into FILE")
    args = ap.parse_args()
    procs = max(1, min(args.clients, args.procs or min(4, (args.clients + 24) // 25)))

    run_dir = sb.env("CCDOCKER_RUN_DIR")
    base = tempfile.mkdtemp(prefix="ccdocker-bench-http-", dir=run_dir)
    os.chmod(base, 0o755)
    tmp = tempfile.mkdtemp(prefix="ccdocker-bench-http-js-")
    for name, text in (("load.js", LOAD), ("trivial.js", TRIVIAL), ("fanout.js", FANOUT)):
        write(tmp, name, text)
    problems = []
    figs = {}
    daemon = sb.Daemon(unit=UNIT, settings={
        "RuntimeDirectory": os.path.join(run_dir, "ccdockerd-bench-http-runtime"),
        "WorkspaceRoots": base,
        "SessionCommand": "/usr/bin/python3 /workspace/emit.py",
    })
    shutil.rmtree(daemon.state_dir, ignore_errors=True)
    httpd = trivial = None
    t_start = time.monotonic()
    try:
        daemon.start()
        httpd = th.Httpd(binary=args.httpd)
        th.HTTPD = httpd
        token = httpd.token("bench")

        ws = os.path.join(base, "ws")
        os.mkdir(ws, 0o755)
        write(ws, "emit.py", ev.EMITTER)
        os.chown(os.path.join(ws, "emit.py"), 1000, 1000)
        os.chown(ws, 1000, 1000)
        total = int(args.rate * args.seconds) + 1
        s = th.jcurl("POST", "/api/v1/sessions", token, {
            "workspace": {"type": "host", "path": ws},
            "config": {"environment": {"BENCH_MODE": "steady", "BENCH_RATE": str(args.rate),
                                       "BENCH_SECONDS": str(args.seconds), "BENCH_BATCH": "1000"}}}, expect=201)
        sid = s["id"]
        sb.wait_until(lambda: os.path.exists(os.path.join(ws, "ready")) or os.path.exists(os.path.join(ws, "error")),
                      60, 0.05, what="the emitter's warm-up event")
        if os.path.exists(os.path.join(ws, "error")):
            raise AssertionError(open(os.path.join(ws, "error")).read())
        body = th.curl("GET", f"/api/v1/sessions/{sid}", token)[2]

        if args.only != "fanout":
            print(f"requests: {args.conns} keep-alive connections, {args.seconds:.0f} s each ...", flush=True)
            port = th.free_port()
            trivial = node(os.path.join(tmp, "trivial.js"), str(port), body)
            trivial.stdout.readline()
            figs["trivial"] = load(tmp, f"http://127.0.0.1:{port}/", None, args.conns, args.seconds)
            figs["404"] = load(tmp, f"{httpd.url}/api/v1/nothing", token, args.conns, args.seconds, expect=404)
            figs["get"] = load(tmp, f"{httpd.url}/api/v1/sessions/{sid}", token, args.conns, args.seconds)
            for k in ("404", "get"):
                if figs[k]["errors"]:
                    problems.append(f"{k}: {figs[k]['errors']} requests got another status")
        if args.only == "requests":
            open(os.path.join(ws, "go"), "w").close()
            raise StopIteration

        print(f"fanout: {args.rate:.0f} events/s for {args.seconds:.0f} s to {args.clients} WebSocket clients "
              f"in {procs} node processes ...", flush=True)
        fans, readies = [], []
        go = os.path.join(ws, "go")
        for i in range(procs):
            n = args.clients // procs + (1 if i < args.clients % procs else 0)
            readies.append(os.path.join(tmp, f"ready.{i}"))
            fans.append(node(os.path.join(tmp, "fanout.js"), json.dumps({
                "url": httpd.url.replace("http:", "ws:") + f"/api/v1/sessions/{sid}/stream?since=1", "token": token,
                "clients": n, "total": total, "since": 1, "timeout_ms": int((args.seconds + 120) * 1000),
                "ready_file": readies[i], "go_file": go, "out_file": os.path.join(tmp, f"out.{i}")})))
        attach = ev.Subscriber("Attach", ["ccdockerctl", "--user", "--json", "attach", sid, "--since", "1"])
        sb.wait_until(lambda: all(os.path.exists(r) for r in readies) or any(f.poll() is not None for f in fans),
                      60, 0.05, what="the subscribers")
        time.sleep(0.5)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-p", str(httpd.proc.pid), "-o",
                                     args.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cpu0 = cpu_of(httpd.proc.pid)
        open(go, "w").close()
        merged = {"events": 0, "missing": 0, "repeated": 0, "disorder": 0, "errors": [], "loop_p99_us": 0,
                  "cpu_us": 0}
        lat, lat_seqs = [], []
        for i, fan in enumerate(fans):
            out, err = fan.communicate(timeout=args.seconds + 180)
            if fan.returncode != 0:
                raise AssertionError(f"the fan-out client failed: {err}")
            with open(os.path.join(tmp, f"out.{i}")) as f:
                r = json.load(f)
            lat += r["lat"]
            lat_seqs += r["seqs"]
            for k in ("missing", "repeated", "disorder", "errors", "cpu_us"):
                merged[k] += r[k]
            merged["loop_p99_us"] = max(merged["loop_p99_us"], r["loop_p99_us"])
        merged["httpd_cpu_s"] = cpu_of(httpd.proc.pid) - cpu0
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
        ordered = sorted(lat)
        merged["events"] = len(ordered)
        for k, q in (("p50_us", 0.5), ("p99_us", 0.99)):
            merged[k] = ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0
        merged["max_us"] = ordered[-1] if ordered else 0
        figs["fanout"] = merged
        sb.wait_until(lambda: attach.count() >= total - 1, 60, 0.1, what="the Attach subscriber")
        figs["attach"] = attach.latencies()
        # Each delivery against the Attach baseline's for the same event: what the machine did to both (the
        # emitter, the daemon, a stall of everything) cancels, what is httpd's and its clients' stays.
        by_seq = {q: a - t for q, t, a in zip(attach.seqs, attach.times, attach.arrivals)}
        paired = sorted(x - by_seq[q] for x, q in zip(lat, lat_seqs) if q in by_seq)
        figs["paired"] = paired
        attach.stop(wait=5)
        f = figs["fanout"]
        if f["missing"] or f["repeated"] or f["disorder"] or f["errors"]:
            problems.append(f"fanout: {f['missing']} missing, {f['repeated']} repeated, {f['disorder']} out of "
                            f"order, errors {f['errors'][:3]}")
        if f["events"] != args.clients * (total - 1):
            problems.append(f"fanout: {f['events']} events arrived, expected {args.clients * (total - 1)}")
        th.jcurl("DELETE", f"/api/v1/sessions/{sid}", token)
        metrics = th.curl("GET", "/metrics", token)[2]
        figs["metrics"] = [line for line in metrics.splitlines()
                           if line.startswith("ccdocker_httpd_events_sent_total")]
    except StopIteration:
        pass
    finally:
        if trivial:
            trivial.kill()
            trivial.wait()
        if httpd:
            httpd.stop()
        daemon.stop()
        shutil.rmtree(daemon.state_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"bench/http: {os.cpu_count()} CPUs; {time.monotonic() - t_start:.0f} s in all; {httpd.binary}")
    if "get" in figs:
        print(f"GET with keep-alive, {args.conns} connections, {args.seconds:.0f} s each (target 10,000 requests/s)")
        for key, name in (("trivial", "baseline: trivial node server"),
                          ("404", "baseline: ccdocker-httpd 404 (no D-Bus)"), ("get", "GET /api/v1/sessions/{id}")):
            r = figs[key]
            print(f"  {name:<42} {r['rate']:>9,.0f} req/s   p50 {r['p50_us'] / 1000:6.2f} ms   "
                  f"p99 {r['p99_us'] / 1000:6.2f} ms")
        print(f"  GET / trivial baseline: {figs['get']['rate'] / figs['trivial']['rate']:.2f}; "
              f"GET / httpd 404: {figs['get']['rate'] / figs['404']['rate']:.2f} (issue 18 target >= 0.7)")
    if "fanout" not in figs:
        for p in problems:
            print(f"PROBLEM: {p}")
        return 1 if problems else 0
    f = figs["fanout"]
    a = figs["attach"]
    print(f"WebSocket fan-out, {args.rate:.0f} events/s for {args.seconds:.0f} s, {args.clients} clients "
          f"(target p99 under 20 ms)")
    print(f"  {'ws via ccdocker-httpd':<42} p50 {f['p50_us'] / 1000:6.2f} ms   p99 {f['p99_us'] / 1000:6.2f} ms   "
          f"max {f['max_us'] / 1000:6.2f} ms   ({f['events']} deliveries)")
    print(f"  {'ccdocker-httpd CPU':<42} {f['httpd_cpu_s'] / max(f['events'], 1) * 1e6:6.2f} us per delivery "
          f"({f['httpd_cpu_s'] / args.seconds:.2f} cores while the events came)")
    print(f"  {'the clients themselves':<42} {procs} node processes: event-loop delay p99 "
          f"{f['loop_p99_us'] / 1000:6.2f} ms (the part of a latency that is the client's), "
          f"CPU {f['cpu_us'] / 1e6 / args.seconds:.2f} cores")
    if a:
        a = sorted(a)
        p50, p99 = a[len(a) // 2], a[min(len(a) - 1, int(len(a) * 0.99))]
        print(f"  {'baseline: one ccdockerctl attach':<42} p50 {p50 / 1000:6.2f} ms   p99 {p99 / 1000:6.2f} ms   "
              f"max {a[-1] / 1000:6.2f} ms")
        print(f"  ws p99 / attach p99: {f['p99_us'] / max(p99, 1):.2f} (issue 18 target <= 2)")
    d = figs.get("paired")
    if d:
        print(f"  {'ws minus attach, the same event':<42} p50 {d[len(d) // 2] / 1000:6.2f} ms   "
              f"p99 {d[min(len(d) - 1, int(len(d) * 0.99))] / 1000:6.2f} ms   (what httpd and its clients add)")
    for line in figs.get("metrics", []):
        print(f"  {line}")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs every test of cc-docker and prints one closing line, "N passed, N failed, N skipped".

Groups, in order:
  unit         the cmocka unit tests of the normal build (meson test --suite unit)
  unit-asan    the same tests built with AddressSanitizer and UndefinedBehaviorSanitizer
  fixtures     the self-tests of the scripted model and the echo MCP server
  integration  tests/integration/test_*.py against the running sandbox
  integration-asan
               the tests of the daemon, its runtime and its client again, with the programs of
               the sanitizer build (a sanitizer report or a leak at exit fails them)

tools/ccdocker-dev test calls this inside the sandbox's environment. A skipped test is not a
passed one: any skip, like any failure, makes the exit status non-zero.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import unittest

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.matched = 0  # Python tests selected to run, all groups together
        self.failures = []

    def add(self, group, name, outcome):
        if outcome == "pass":
            self.passed += 1
        elif outcome == "skip":
            self.skipped += 1
            self.failures.append(f"{group}: {name} (skipped)")
        else:
            self.failed += 1
            self.failures.append(f"{group}: {name}")


def run_meson(group, build_dir, tally, env_extra):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        print(f"== {group}: {build_dir} is not configured (run tools/ccdocker-dev setup)", flush=True)
        tally.add(group, "configure", "fail")
        return
    print(f"== {group} ({build_dir})", flush=True)
    env = dict(os.environ, **env_extra)
    p = subprocess.run(["meson", "test", "-C", build_dir, "--suite", "unit", "--print-errorlogs"], env=env)
    log = os.path.join(build_dir, "meson-logs", "testlog.json")
    seen = 0
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                seen += 1
                result = rec.get("result")
                outcome = {"OK": "pass", "EXPECTEDFAIL": "pass", "SKIP": "skip"}.get(result, "fail")
                tally.add(group, rec.get("name", "?"), outcome)
    if seen == 0:
        tally.add(group, "meson test ran no test", "fail")
    elif p.returncode != 0 and not any(f.startswith(group + ":") for f in tally.failures):
        tally.add(group, f"meson test exited {p.returncode}", "fail")


def run_unittest(group, directory, tally, pattern, modules=None):
    print(f"== {group} ({os.path.relpath(directory, SRC)})", flush=True)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if modules:
        suite = unittest.defaultTestLoader.loadTestsFromNames(modules)
    else:
        suite = unittest.defaultTestLoader.discover(directory, pattern="test_*.py", top_level_dir=directory)
    if pattern:
        suite = unittest.TestSuite(t for t in _flatten(suite) if re.search(pattern, t.id()))
    ids = [t.id() for t in _flatten(suite)]  # run() drops the tests from the suite as they finish
    tally.matched += len(ids)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
    result = runner.run(suite)
    failed = {t.id() for t, _ in result.failures + result.errors} | {t.id() for t in result.unexpectedSuccesses}
    skipped = {t.id() for t, _ in result.skipped}
    for tid in ids:
        tally.add(group, tid, "fail" if tid in failed else "skip" if tid in skipped else "pass")
    # Errors outside any test: a setUpClass or a module fixture that failed.
    for tid in sorted(failed - set(ids)):
        tally.add(group, tid, "fail")
    # A whole run that finds nothing has failed; with a pattern, a group none of whose tests match it
    # was simply not asked for.
    if result.testsRun == 0 and not (pattern and not ids):
        tally.add(group, "no test ran", "fail")


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--build-asan", default=os.path.join(SRC, "build-asan"))
    ap.add_argument("--groups", default="unit,unit-asan,fixtures,integration,integration-asan",
                    help="comma-separated groups to run (default: all)")
    ap.add_argument("--only", default=os.environ.get("TESTS", ""),
                    help="run only Python tests whose id matches this regular expression "
                         "(a plain word matches ids that contain it; a|b takes either)")
    args = ap.parse_args()
    groups = args.groups.split(",")
    tally = Tally()
    start = time.monotonic()
    sanitizer_env = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:strict_string_checks=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    if "unit" in groups:
        run_meson("unit", args.build, tally, {})
    if "unit-asan" in groups:
        run_meson("unit-asan", args.build_asan, tally, sanitizer_env)
    if "fixtures" in groups:
        run_unittest("fixtures", os.path.join(SRC, "tests", "fixtures"), tally, args.only)
    if "integration" in groups:
        run_unittest("integration", os.path.join(SRC, "tests", "integration"), tally, args.only)
    if "integration-asan" in groups:
        saved = dict(os.environ)
        os.environ.update(sanitizer_env, CCDOCKER_BUILD_DIR=args.build_asan)
        os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=66"
        try:
            run_unittest("integration-asan", os.path.join(SRC, "tests", "integration"), tally, args.only,
                         modules=["test_runtime", "test_daemon", "test_daemon_polkit", "test_ctl", "test_session_io", "test_mcp",
                                  "test_child_channel", "test_httpd", "test_model_proxy", "test_daemon_loop",
                                  "test_hostile", "test_questions", "test_discord"])
        finally:
            os.environ.clear()
            os.environ.update(saved)

    if args.only and tally.matched == 0 and {"fixtures", "integration", "integration-asan"} & set(groups):
        tally.add("TESTS", f"no Python test matches {args.only!r}", "fail")
    print(f"\n== finished in {time.monotonic() - start:.0f} s", flush=True)
    for f in tally.failures:
        print(f"   not passed: {f}")
    print(f"{tally.passed} passed, {tally.failed} failed, {tally.skipped} skipped", flush=True)
    return 0 if tally.failed == 0 and tally.skipped == 0 and tally.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

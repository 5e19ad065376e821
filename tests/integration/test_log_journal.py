"""common/log.h against the sandbox's real journald: tests/helpers/log-probe logs with the AUTO
target, as every cc-docker program does. Run as a transient unit of the user manager, its stderr is a
journal stream ($JOURNAL_STREAM), so its messages must arrive over the native protocol with their
structured fields; run bare, they must come out on stderr and not reach the journal."""

import os
import shutil
import subprocess
import tempfile
import time
import unittest

import sandbox as sb

MESSAGE_ID = "ba8518b38c034b1db9300e095a8dbe0f"  # LOG_PROBE_MESSAGE_ID of log-probe.c

# The probe runs through a symlink of this name. A native message that carries no SYSLOG_IDENTIFIER
# is stored with the process name (seen here with systemd 252), and systemd names a unit's output
# streams after the executable: were the probe run as "log-probe", SYSLOG_IDENTIFIER=log-probe would
# not show that log.c sent it (log_set_prefix).
LINK_NAME = "renamed-probe"


def probe_link(test):
    """A symlink LINK_NAME to the built probe, removed when the test ends."""
    path = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "tests", "helpers", "log-probe")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is not built: run 'tools/ccdocker-dev build'")
    d = tempfile.mkdtemp(prefix="ccdocker-log-probe-")
    test.addCleanup(shutil.rmtree, d, ignore_errors=True)
    link = os.path.join(d, LINK_NAME)
    os.symlink(path, link)
    return link


def probe_records(token):
    """Every journal record of the probe that mentions this run's token: its native messages (with
    log.c's identifier, or journald's if log.c sent none) and its stdout and stderr streams."""
    return [r for r in sb.journal("SYSLOG_IDENTIFIER=log-probe", f"SYSLOG_IDENTIFIER={LINK_NAME}")
            if token in str(r.get("MESSAGE", "")) or r.get("CCDOCKER_SESSION") == token]


class LogJournalTest(unittest.TestCase):
    def test_unit_logs_to_journald_over_the_native_protocol_with_fields(self):
        token = sb.unique("probe")
        unit = token + ".service"
        link = probe_link(self)
        self.addCleanup(sb.stop_unit, unit)

        p = sb.run("systemd-run", "--user", "--wait", "--collect", f"--unit={unit}", link, token, check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

        notice = sb.wait_until(lambda: sb.journal(f"CCDOCKER_SESSION={token}"), 10,
                               what="the log_struct() record in the journal")
        self.assertEqual(len(notice), 1, notice)
        r = notice[0]
        self.assertEqual(r["MESSAGE"], f"probe {token}")
        self.assertEqual(r["PRIORITY"], "5")
        self.assertEqual(r["CCDOCKER_SESSION"], token)
        self.assertEqual(r["CCDOCKER_EVENT"], "probe")
        self.assertEqual(r["MESSAGE_ID"], MESSAGE_ID)
        self.assertNotIn("ERRNO", r)
        self.assert_native_record(r, unit)

        message = f"probe {token} failed: No such file or directory"
        error = sb.wait_until(lambda: sb.journal(f"MESSAGE={message}"), 10,
                              what="the log_error_errno() record in the journal")
        self.assertEqual(len(error), 1, error)
        r = error[0]
        self.assertEqual(r["PRIORITY"], "3")
        self.assertEqual(r["ERRNO"], "2")
        self.assertNotIn("CCDOCKER_SESSION", r)
        self.assert_native_record(r, unit)

        # The unit's stdout is a journal stream too: the probe ran to its end, and what it printed
        # there arrives as _TRANSPORT=stdout, unlike its log messages above.
        done = sb.wait_until(lambda: sb.journal(f"_SYSTEMD_UNIT={unit}", "MESSAGE=probe-done"), 10,
                             what="the probe's stdout in the journal")
        self.assertEqual(done[0]["_TRANSPORT"], "stdout")
        self.assertEqual(done[0]["SYSLOG_IDENTIFIER"], LINK_NAME)

        # The debug message was sent (if at all) before the two above on the same socket, so it would
        # be in by now. Nothing with the token came through the stream either (no stderr fallback).
        records = probe_records(token)
        self.assertEqual(sorted(r["MESSAGE"] for r in records), sorted([f"probe {token}", message]), records)
        for r in records:
            self.assertEqual(r["_TRANSPORT"], "journal", r)

    def assert_native_record(self, r, unit):
        self.assertEqual(r["_TRANSPORT"], "journal", r)  # sd_journal_sendv(), not the stdout stream
        self.assertEqual(r["SYSLOG_IDENTIFIER"], "log-probe")
        self.assertTrue(r["CODE_FILE"].endswith("tests/helpers/log-probe.c"), r["CODE_FILE"])
        self.assertEqual(r["CODE_FUNC"], "main")
        self.assertRegex(r["CODE_LINE"], r"^[1-9][0-9]*$")
        # journald reads the sender's cgroup from /proc, which may be gone if the probe has exited.
        if "_SYSTEMD_UNIT" in r:
            self.assertEqual(r["_SYSTEMD_UNIT"], unit)

    def test_bare_process_logs_to_stderr_and_not_to_the_journal(self):
        token = sb.unique("probe")
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        p = subprocess.run([probe_link(self), token], env=env, capture_output=True, text=True, timeout=30)

        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "probe-done\n")
        self.assertEqual(p.stderr, f"log-probe: probe {token}\n"
                                   f"log-probe: probe {token} failed: No such file or directory\n")
        # Outside the manager's mount namespace there is no journal socket, and libsystemd drops a
        # message silently when the socket is missing (ENOENT), so the stderr check above is what shows
        # that AUTO chose stderr. This one makes sure that nothing reached the sandbox's journald.
        # Absence cannot be waited for: a second is far longer than journald takes with the unit
        # test's records.
        time.sleep(1)
        self.assertEqual(probe_records(token), [])
        self.assertEqual(sb.journal(f"CCDOCKER_SESSION={token}"), [])


if __name__ == "__main__":
    unittest.main()

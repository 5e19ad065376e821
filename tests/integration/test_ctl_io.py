"""ccdockerctl's commands for a session's input and output: run, send, output, attach and result.

These need no daemon and no bus. A usage error must exit 2 with one line naming what was wrong,
before any bus is touched: every call here gets a bus address that cannot work, so a command that
reached for the bus would fail with exit 1 instead. --help must document every command, its options
and an example. A well-formed command against the unreachable bus must fail with exit 1 and one
line, not hang. The end-to-end tests against ccdockerd are in the daemon's test files.
"""

import os
import re
import shutil
import subprocess
import unittest

import sandbox as sb

NEW_COMMANDS = ("run", "send", "output", "attach", "result")
SID = "0123456789ab"
BOGUS_BUS = "unix:path=/nonexistent/ccdocker-test-bus"


def ctl_path():
    path = shutil.which("ccdockerctl")
    if not path:
        build = os.environ.get("CCDOCKER_BUILD_DIR") or os.path.join(sb.SRC, "build")
        path = os.path.join(build, "ctl", "ccdockerctl")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"ccdockerctl is not built ({path}): run 'tools/ccdocker-dev setup'")
    return path


def ctl(*args, timeout=30):
    """Runs `ccdockerctl --user ARGS...` against a bus that cannot be reached."""
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=BOGUS_BUS)
    return subprocess.run([ctl_path(), "--user", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


class CtlIoHelpTest(unittest.TestCase):
    def help(self):
        p = ctl("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return p.stdout

    def test_help_lists_the_new_commands_with_their_arguments(self):
        text = self.help()
        for usage in ("run [CREATE OPTIONS...] [--keep] PROMPT", "send ID PROMPT",
                      "output ID [--since SEQ] [--limit N]", "attach ID [--since SEQ]",
                      "result ID [--wait [--timeout SEC]]"):
            self.assertRegex(text, rf"(?m)^\s+{re.escape(usage)}", f"--help does not show '{usage}'")

    def test_help_documents_the_new_options(self):
        text = self.help()
        for option in ("--keep", "--since SEQ", "--limit N", "--wait", "--timeout SEC", "--prompt PROMPT"):
            self.assertRegex(text, rf"(?m)^\s+{re.escape(option)}\s", f"--help does not document {option}")

    def test_help_has_an_example_of_every_new_command(self):
        examples = self.help().split("\nExamples:\n", 1)[1]
        for command in NEW_COMMANDS:
            self.assertRegex(examples, rf"(?m)^\s+ccdockerctl {command} ", f"no example of {command}")

    def test_help_documents_the_event_and_result_output_and_exit_statuses(self):
        text = self.help()
        for word in ('"seq"', '"time"', '"data"', '"status"', '"usage"', '"message_id"', "pending"):
            self.assertIn(word, text)
        exit_status = text.split("\nExit status:\n", 1)[1].split("\n\n", 1)[0]
        self.assertRegex(exit_status, r"(?m)^\s+3\s+result")
        self.assertRegex(exit_status, r"(?m)^\s+130\s+run")

    def test_help_after_a_new_command_is_the_same_help(self):
        text = self.help()
        for command in NEW_COMMANDS:
            p = ctl(command, "--help")
            self.assertEqual(p.returncode, 0, f"{command} --help: {p.stderr}")
            self.assertEqual(p.stdout, text, f"{command} --help differs from --help")


class CtlIoUsageTest(unittest.TestCase):
    """Argument handling of the new commands; none of these may reach the bus."""

    def assert_usage_error(self, args, *names):
        p = ctl(*args)
        self.assertEqual(p.returncode, 2, f"ccdockerctl {' '.join(args)}: {p.stdout}{p.stderr}")
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("ccdockerctl: "), p.stderr)
        for name in names:
            self.assertIn(name, lines[0])
        return lines[0]

    def test_missing_session_id_is_a_usage_error_naming_the_command(self):
        for command in ("send", "output", "attach", "result"):
            self.assert_usage_error([command], f"'{command}'", "ID")

    def test_send_without_a_prompt_is_a_usage_error_naming_prompt(self):
        self.assert_usage_error(["send", SID], "'send'", "PROMPT")

    def test_run_without_a_prompt_is_a_usage_error_naming_prompt(self):
        self.assert_usage_error(["run"], "'run'", "PROMPT")
        self.assert_usage_error(["run", "--memory", "1G"], "'run'", "PROMPT")

    def test_an_unquoted_prompt_of_several_words_is_a_usage_error_saying_to_quote_it(self):
        line = self.assert_usage_error(["send", SID, "hello", "world"], "'world'", "send")
        self.assertIn("quote", line)
        line = self.assert_usage_error(["run", "hello", "world"], "'world'", "run")
        self.assertIn("quote", line)

    def test_a_prompt_after_double_dash_is_not_an_option(self):
        # '--frobnicate' is taken as the prompt; only the argument after it is too many.
        line = self.assert_usage_error(["send", SID, "--", "--frobnicate", "extra"], "'extra'")
        self.assertNotIn("Unknown option", line)

    def test_extra_argument_is_a_usage_error_naming_it(self):
        for command in ("output", "attach", "result"):
            self.assert_usage_error([command, SID, "extra"], "'extra'", command)

    def test_since_must_be_a_whole_number(self):
        for command in ("output", "attach"):
            for bad in ("-1", "abc", "1.5", "18446744073709551616"):
                self.assert_usage_error([command, SID, "--since", bad], "--since", bad)

    def test_limit_must_be_a_32_bit_whole_number(self):
        for bad in ("-1", "many", "4294967296"):
            self.assert_usage_error(["output", SID, "--limit", bad], "--limit", bad)

    def test_missing_option_argument_is_a_usage_error_naming_the_option(self):
        self.assert_usage_error(["output", SID, "--since"], "--since")
        self.assert_usage_error(["output", SID, "--limit"], "--limit")
        self.assert_usage_error(["result", SID, "--wait", "--timeout"], "--timeout")
        self.assert_usage_error(["create", "--prompt"], "--prompt")

    def test_options_of_one_command_are_unknown_to_the_others(self):
        self.assert_usage_error(["attach", SID, "--limit", "3"], "--limit", "attach")
        self.assert_usage_error(["output", SID, "--wait"], "--wait", "output")
        self.assert_usage_error(["result", SID, "--since", "3"], "--since", "result")
        self.assert_usage_error(["send", SID, "hi", "--keep"], "--keep", "send")
        self.assert_usage_error(["create", "--keep"], "--keep", "create")
        # run takes its prompt as its argument, not as --prompt.
        self.assert_usage_error(["run", "--prompt", "x", "y"], "--prompt", "run")

    def test_result_timeout_without_wait_is_a_usage_error_naming_both(self):
        self.assert_usage_error(["result", SID, "--timeout", "60"], "--timeout", "--wait")

    def test_result_timeout_must_be_a_whole_number(self):
        self.assert_usage_error(["result", SID, "--wait", "--timeout", "soon"], "--timeout", "soon")

    def test_flags_take_no_argument(self):
        self.assert_usage_error(["result", SID, "--wait=yes"], "--wait")
        self.assert_usage_error(["run", "--keep=yes", "x"], "--keep")

    def test_run_checks_the_create_options_like_create(self):
        self.assert_usage_error(["run", "--env", "NOVALUE", "x"], "--env", "NOVALUE")
        self.assert_usage_error(["run", "--workspace", "work", "x"], "--workspace", "work")
        self.assert_usage_error(["run", "--tasks", "many", "x"], "--tasks", "many")
        self.assert_usage_error(["run", "--memroy", "1G", "x"], "--memroy", "run")

    def test_ambiguous_abbreviation_is_a_usage_error(self):
        # --t could be --tasks, --timeout or --task-type.
        self.assert_usage_error(["run", "--t", "5", "x"], "--t", "run")


class CtlIoNoBusTest(unittest.TestCase):
    """A well-formed command that cannot reach the bus fails at once: exit 1, one line, no output."""

    def test_every_new_command_fails_with_one_line_without_a_bus(self):
        for args in (["send", SID, "hello"], ["output", SID, "--since", "3", "--limit", "10"],
                     ["attach", SID], ["result", SID, "--wait", "--timeout", "5"], ["run", "hello"],
                     ["--json", "run", "--keep", "hello"], ["create", "--prompt", "hello"]):
            p = ctl(*args)
            self.assertEqual(p.returncode, 1, f"ccdockerctl {' '.join(args)}: {p.stdout}{p.stderr}")
            self.assertEqual(p.stdout, "", args)
            lines = p.stderr.splitlines()
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertTrue(lines[0].startswith("ccdockerctl: "), p.stderr)
            self.assertIn("bus", lines[0])


if __name__ == "__main__":
    unittest.main()

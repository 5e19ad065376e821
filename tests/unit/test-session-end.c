/* Unit tests for daemon/session-end.c, the end of a session's unit as the session's final state and
 * reason: a stop on request (with its reason, its caller's uid, or neither) wins over every unit result;
 * then a clean exit, the OOM kill (systemd's oom-kill result, or the kernel's record on cgroup v1 when
 * the unit only saw a SIGKILL), the timeout, a signal (killed or dumped), exit status 137, any other exit
 * status, and a unit that ended without its main process having run (a start failure). The messages are
 * compared whole: they are what StateReason shows users. Built with session-end.c alone. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "session-end.h"
#include "unit-test.h"

#define MEMORY (64ULL * 1024 * 1024)
#define TIMEOUT 600ULL

static const SessionEndFacts running = {
        .stop_requested = false,
        .stop_uid = (uid_t) -1,
        .memory = MEMORY,
        .timeout_sec = TIMEOUT,
};

static void expect(
        const SessionEndFacts *f,
        const char *result,
        int code,
        int status,
        bool oom,
        SessionState want_state,
        const char *want_reason) {
        UnitState st = {
                .active_state = "failed",
                .result = result,
                .exec_main_code = code,
                .exec_main_status = status,
                .exists = true,
        };
        SessionState state = _SESSION_STATE_INVALID;
        _cleanup_free_ char *reason = session_end_describe(f, &st, oom, &state);

        assert_non_null(reason);
        assert_int_equal(state, want_state);
        assert_string_equal(reason, want_reason);
}

static void test_stop_on_request_wins_over_every_result(void **state) {
        SessionEndFacts f = running;

        f.stop_requested = true;
        /* Nobody known asked (a shutdown of the daemon's own making, say). */
        expect(&f, "success", CLD_EXITED, 0, false, SESSION_STOPPED, "stopped on request");
        /* Stopping a container kills it: the unit's failure is the stop, not a crash. */
        expect(&f, "signal", CLD_KILLED, SIGKILL, false, SESSION_STOPPED, "stopped on request");
        expect(&f, "exit-code", CLD_EXITED, 137, false, SESSION_STOPPED, "stopped on request");
        expect(&f, "oom-kill", CLD_KILLED, SIGKILL, true, SESSION_STOPPED, "stopped on request");
        expect(&f, "timeout", CLD_KILLED, SIGTERM, false, SESSION_STOPPED, "stopped on request");

        f.stop_uid = 1000;
        expect(&f, "signal", CLD_KILLED, SIGTERM, false, SESSION_STOPPED, "stopped on request of uid 1000");
        f.stop_uid = 0;
        expect(&f, "success", CLD_EXITED, 0, false, SESSION_STOPPED, "stopped on request of uid 0");

        /* A reason of the daemon's (the parent ended) is given as it is, over the uid. */
        f.stop_reason = "its parent session 0123456789ab ended";
        expect(&f,
               "signal",
               CLD_KILLED,
               SIGKILL,
               true,
               SESSION_STOPPED,
               "its parent session 0123456789ab ended");
}

static void test_clean_exit_is_stopped(void **state) {
        expect(&running,
               "success",
               CLD_EXITED,
               0,
               false,
               SESSION_STOPPED,
               "the container exited with status 0");
        /* systemd's result decides, whatever the exec fields say (a unit already unloaded reports 0). */
        expect(&running, "success", 0, 0, false, SESSION_STOPPED, "the container exited with status 0");
}

static void test_oom_kill_result_is_failed_with_the_limit(void **state) {
        expect(&running,
               "oom-kill",
               CLD_KILLED,
               SIGKILL,
               false,
               SESSION_FAILED,
               "out of memory: the container was killed at its memory limit (67108864 bytes)");
}

static void test_oom_flag_turns_a_sigkill_into_oom(void **state) {
        /* cgroup v1: systemd saw only the SIGKILL, the kernel's record says why. */
        expect(&running,
               "signal",
               CLD_KILLED,
               SIGKILL,
               true,
               SESSION_FAILED,
               "out of memory: the container was killed at its memory limit (67108864 bytes)");
        /* podman reports the payload's SIGKILL as exit status 137. */
        expect(&running,
               "exit-code",
               CLD_EXITED,
               137,
               true,
               SESSION_FAILED,
               "out of memory: the container was killed at its memory limit (67108864 bytes)");
        /* OOM is named before a timeout that the kill may also have raced with. */
        expect(&running,
               "timeout",
               CLD_KILLED,
               SIGKILL,
               true,
               SESSION_FAILED,
               "out of memory: the container was killed at its memory limit (67108864 bytes)");
}

static void test_timeout_is_failed_with_the_timeout(void **state) {
        expect(&running,
               "timeout",
               CLD_KILLED,
               SIGTERM,
               false,
               SESSION_FAILED,
               "timeout: the session ran longer than timeout_seconds (600 s)");
        SessionEndFacts f = running;
        f.timeout_sec = 2;
        expect(&f,
               "timeout",
               CLD_EXITED,
               143,
               false,
               SESSION_FAILED,
               "timeout: the session ran longer than timeout_seconds (2 s)");
}

static void test_signal_is_failed_naming_it(void **state) {
        expect(&running,
               "signal",
               CLD_KILLED,
               SIGKILL,
               false,
               SESSION_FAILED,
               "the container was killed by signal Killed (unit result signal)");
        expect(&running,
               "core-dump",
               CLD_DUMPED,
               SIGSEGV,
               false,
               SESSION_FAILED,
               "the container was killed by signal Segmentation fault (unit result core-dump)");
        /* No result known (a unit whose last state was not read): still a message, not "(null)". */
        expect(&running,
               NULL,
               CLD_KILLED,
               SIGTERM,
               false,
               SESSION_FAILED,
               "the container was killed by signal Terminated (unit result )");
}

static void test_exit_status_137_is_a_kill(void **state) {
        expect(&running,
               "exit-code",
               CLD_EXITED,
               137,
               false,
               SESSION_FAILED,
               "the container was killed (SIGKILL, exit status 137; unit result exit-code)");
}

static void test_exit_status_is_failed_naming_it(void **state) {
        expect(&running,
               "exit-code",
               CLD_EXITED,
               3,
               false,
               SESSION_FAILED,
               "the container exited with status 3 (unit result exit-code)");
        expect(&running,
               "exit-code",
               CLD_EXITED,
               136,
               false,
               SESSION_FAILED,
               "the container exited with status 136 (unit result exit-code)");
        /* An exit status 0 with a failed result (ExecStopPost= failed, say) is a failure, not a clean exit.
         */
        expect(&running,
               "exit-code",
               CLD_EXITED,
               0,
               false,
               SESSION_FAILED,
               "the container exited with status 0 (unit result exit-code)");
}

static void test_start_failure_names_the_unit_result(void **state) {
        /* The main process never ran (the unit failed to start): only the result is known. */
        expect(&running, "resources", 0, 0, false, SESSION_FAILED, "the unit ended with result resources");
        expect(&running, "exit-code", 0, 0, false, SESSION_FAILED, "the unit ended with result exit-code");
        expect(&running, NULL, 0, 0, false, SESSION_FAILED, "the unit ended with result ");
}

static void test_unknown_limits_are_zero(void **state) {
        /* A session whose configuration was lost (an unreadable store row) still gets a reason. */
        SessionEndFacts f = { .stop_uid = (uid_t) -1 };

        expect(&f,
               "oom-kill",
               CLD_KILLED,
               SIGKILL,
               false,
               SESSION_FAILED,
               "out of memory: the container was killed at its memory limit (0 bytes)");
        expect(&f,
               "timeout",
               CLD_KILLED,
               SIGTERM,
               false,
               SESSION_FAILED,
               "timeout: the session ran longer than timeout_seconds (0 s)");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stop_on_request_wins_over_every_result),
                cmocka_unit_test(test_clean_exit_is_stopped),
                cmocka_unit_test(test_oom_kill_result_is_failed_with_the_limit),
                cmocka_unit_test(test_oom_flag_turns_a_sigkill_into_oom),
                cmocka_unit_test(test_timeout_is_failed_with_the_timeout),
                cmocka_unit_test(test_signal_is_failed_naming_it),
                cmocka_unit_test(test_exit_status_137_is_a_kill),
                cmocka_unit_test(test_exit_status_is_failed_naming_it),
                cmocka_unit_test(test_start_failure_names_the_unit_result),
                cmocka_unit_test(test_unknown_limits_are_zero),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

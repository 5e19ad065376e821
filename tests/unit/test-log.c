/* Unit tests for common/log.h: return values and %m of the *_errno forms, errno preservation, level
 * filtering, the stderr line format, log_struct()'s field walking, and the AUTO target's $JOURNAL_STREAM
 * check. Every message here goes to the real stderr, captured around each log call only so that cmocka's
 * own failure messages stay visible. What reaches journald (the entries, their fields, the choice of the
 * journal under a unit) is tested against the sandbox's real journald by
 * tests/integration/test_log_journal.py, with tests/helpers/log-probe. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "unit-test.h"
#include "util.h"

/* ---- capturing stderr ---- */

static int capture_fd = -EBADF, saved_stderr = -EBADF;

static void capture_start(void) {
        capture_fd = memfd_create("stderr", MFD_CLOEXEC);
        assert_true(capture_fd >= 0);
        saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        assert_true(saved_stderr >= 0);
        assert_int_equal(dup2(capture_fd, STDERR_FILENO), STDERR_FILENO);
}

/* Restores stderr and returns what was written to it meanwhile. */
static char *capture_stop(void) {
        char *buf;
        struct stat st;
        ssize_t n;

        assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
        saved_stderr = safe_close(saved_stderr);

        assert_int_equal(fstat(capture_fd, &st), 0);
        buf = calloc(1, (size_t) st.st_size + 1);
        assert_non_null(buf);
        n = pread(capture_fd, buf, (size_t) st.st_size, 0);
        assert_int_equal(n, st.st_size);
        capture_fd = safe_close(capture_fd);
        return buf;
}

/* ---- fixtures ---- */

static int setup(void **state) {
        assert_int_equal(unsetenv("JOURNAL_STREAM"), 0);
        log_set_prefix("test-log");
        log_set_max_level(LOG_INFO);
        log_set_target(LOG_TARGET_STDERR);
        return 0;
}

/* ---- tests ---- */

static void test_log_errno_returns_negative(void **state) {
        _cleanup_free_ char *out = NULL;
        int a, b, c;

        capture_start();
        a = log_error_errno(EIO, "a");
        b = log_error_errno(-EIO, "b");
        c = log_warning_errno(0, "c");
        out = capture_stop();

        assert_int_equal(a, -EIO);
        assert_int_equal(b, -EIO);
        assert_int_equal(c, 0);
        assert_string_equal(out, "test-log: a\ntest-log: b\ntest-log: c\n");
}

static void test_log_errno_returns_negative_when_filtered(void **state) {
        _cleanup_free_ char *out = NULL;
        int r;

        capture_start();
        r = log_debug_errno(ENOENT, "not shown");
        out = capture_stop();

        assert_int_equal(r, -ENOENT);
        assert_string_equal(out, "");
}

static void test_log_percent_m_prints_logged_error(void **state) {
        _cleanup_free_ char *out = NULL;

        capture_start();
        errno = ENOENT; /* must not be what %m prints */
        (void) log_error_errno(EACCES, "open %s: %m", "/x");
        (void) log_error_errno(-EIO, "read: %m");
        out = capture_stop();

        assert_string_equal(
                out, "test-log: open /x: Permission denied\ntest-log: read: Input/output error\n");
}

static void test_log_percent_m_without_error_prints_errno(void **state) {
        _cleanup_free_ char *out = NULL;

        capture_start();
        errno = ENOENT;
        log_error("stat: %m");
        out = capture_stop();

        assert_string_equal(out, "test-log: stat: No such file or directory\n");
}

static void test_log_preserves_errno(void **state) {
        _cleanup_free_ char *out = NULL;
        int after_errno, after_plain, after_struct, after_filtered;

        capture_start();
        errno = ENOENT;
        (void) log_error_errno(EIO, "x: %m");
        after_errno = errno;
        log_info("y");
        after_plain = errno;
        (void) log_struct_errno(LOG_ERR, EPERM, "MESSAGE=z: %m", NULL);
        after_struct = errno;
        log_debug("filtered");
        after_filtered = errno;
        out = capture_stop();

        assert_int_equal(after_errno, ENOENT);
        assert_int_equal(after_plain, ENOENT);
        assert_int_equal(after_struct, ENOENT);
        assert_int_equal(after_filtered, ENOENT);
        assert_string_equal(
                out, "test-log: x: Input/output error\ntest-log: y\ntest-log: z: Operation not permitted\n");
}

static int evaluated;

static const char *count_evaluation(void) {
        evaluated++;
        return "arg";
}

static void test_log_drops_messages_above_max_level(void **state) {
        _cleanup_free_ char *out = NULL;

        log_set_max_level(LOG_WARNING);
        assert_int_equal(log_get_max_level(), LOG_WARNING);
        evaluated = 0;

        capture_start();
        log_debug("debug %s", count_evaluation());
        log_info("info %s", count_evaluation());
        log_notice("notice %s", count_evaluation());
        log_warning("warning %s", count_evaluation());
        log_error("error %s", count_evaluation());
        (void) log_struct(LOG_INFO, "MESSAGE=struct info", NULL);
        (void) log_struct(LOG_ERR, "MESSAGE=struct error", NULL);
        out = capture_stop();

        /* Arguments of dropped messages are not even evaluated. */
        assert_int_equal(evaluated, 2);
        assert_string_equal(out, "test-log: warning arg\ntest-log: error arg\ntest-log: struct error\n");

        log_set_max_level(LOG_DEBUG);
        capture_start();
        log_debug("now %s", "shown");
        free(out);
        out = capture_stop();
        assert_string_equal(out, "test-log: now shown\n");
}

static void test_log_stderr_line_without_prefix(void **state) {
        _cleanup_free_ char *out = NULL;

        log_set_prefix(NULL);
        capture_start();
        log_info("bare %d", 7);
        out = capture_stop();

        assert_string_equal(out, "bare 7\n");
}

static void test_log_struct_prints_only_message_on_stderr(void **state) {
        _cleanup_free_ char *out = NULL;
        int r;

        /* The fields before MESSAGE= consume arguments of many kinds; the message only comes out right
         * if each field's arguments were skipped exactly. */
        capture_start();
        r = log_struct(
                LOG_INFO,
                "CCDOCKER_SESSION=%s",
                "s-1",
                "A=%d %c %hd",
                -1,
                'c',
                (short) 3,
                "B=%ld %lld %zu",
                (long) 1,
                (long long) 2,
                (size_t) 3,
                "C=%f %Lf %p %%",
                1.5,
                (long double) 2.5,
                (void *) &r,
                "D=%*d %.*s %m",
                4,
                5,
                2,
                "xyz",
                "MESSAGE=session %s is %s (%d)",
                "s-1",
                "ready",
                42,
                "CCDOCKER_EVENT=%s",
                "create",
                NULL);
        out = capture_stop();

        assert_int_equal(r, 0);
        assert_string_equal(out, "test-log: session s-1 is ready (42)\n");
}

static void test_log_struct_without_message_prints_nothing(void **state) {
        _cleanup_free_ char *out = NULL;

        capture_start();
        (void) log_struct(LOG_ERR, "CCDOCKER_EVENT=%s", "x", NULL);
        out = capture_stop();

        assert_string_equal(out, "");
}

static void test_log_struct_errno_returns_negative_and_binds_percent_m(void **state) {
        _cleanup_free_ char *out = NULL;
        int r;

        capture_start();
        r = log_struct_errno(
                LOG_ERR, ENOSPC, "CCDOCKER_EVENT=%s", "save: %m", "MESSAGE=save failed: %m", NULL);
        out = capture_stop();

        assert_int_equal(r, -ENOSPC);
        assert_string_equal(out, "test-log: save failed: No space left on device\n");
}

/* Only the choice of target: what then reaches journald is checked against the sandbox's real journald
 * by tests/integration/test_log_journal.py. Nothing is logged here, so nothing is sent. */
static void test_log_target_auto_resolves_to_journal_when_stream_matches_stderr(void **state) {
        _cleanup_free_ char *value = NULL;
        struct stat st;

        assert_int_equal(fstat(STDERR_FILENO, &st), 0);
        assert_true(
                asprintf(
                        &value,
                        "%llu:%llu",
                        (unsigned long long) st.st_dev,
                        (unsigned long long) st.st_ino) > 0);
        assert_int_equal(setenv("JOURNAL_STREAM", value, 1), 0);
        log_set_target(LOG_TARGET_AUTO);
        assert_int_equal(log_get_target(), LOG_TARGET_JOURNAL);

        /* Set again after stderr is redirected, AUTO follows the new stderr. */
        capture_start();
        log_set_target(LOG_TARGET_AUTO);
        assert_int_equal(log_get_target(), LOG_TARGET_STDERR);
        free(capture_stop());
}

static void test_log_target_auto_uses_stderr_when_stream_differs(void **state) {
        _cleanup_free_ char *out = NULL;
        const char *values[6];
        char *matching = NULL, *other_ino = NULL, *junk = NULL;
        enum log_target targets[7];
        struct stat st;

        capture_start();
        assert_int_equal(fstat(STDERR_FILENO, &st), 0);
        assert_true(
                asprintf(
                        &matching,
                        "%llu:%llu",
                        (unsigned long long) st.st_dev,
                        (unsigned long long) st.st_ino) > 0);
        assert_true(
                asprintf(
                        &other_ino,
                        "%llu:%llu",
                        (unsigned long long) st.st_dev,
                        (unsigned long long) st.st_ino + 1) > 0);
        assert_true(asprintf(&junk, "%sx", matching) > 0);
        values[0] = other_ino;
        values[1] = junk; /* trailing junk after a matching value */
        values[2] = "";
        values[3] = "garbage";
        values[4] = ":";
        values[5] = "1:";
        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                assert_int_equal(setenv("JOURNAL_STREAM", values[i], 1), 0);
                log_set_target(LOG_TARGET_AUTO);
                targets[i] = log_get_target();
        }
        assert_int_equal(unsetenv("JOURNAL_STREAM"), 0);
        log_set_target(LOG_TARGET_AUTO);
        targets[6] = log_get_target();
        log_info("to stderr");
        out = capture_stop();

        for (size_t i = 0; i < ELEMENTSOF(targets); i++)
                assert_int_equal(targets[i], LOG_TARGET_STDERR);
        assert_string_equal(out, "test-log: to stderr\n");
        free(matching);
        free(other_ino);
        free(junk);
}

static void test_log_oom_returns_enomem(void **state) {
        _cleanup_free_ char *out = NULL;
        int r;

        capture_start();
        r = log_oom();
        out = capture_stop();

        assert_int_equal(r, -ENOMEM);
        assert_string_equal(out, "test-log: Out of memory.\n");
}

#define T(name) cmocka_unit_test_setup(name, setup)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(test_log_errno_returns_negative),
                T(test_log_errno_returns_negative_when_filtered),
                T(test_log_percent_m_prints_logged_error),
                T(test_log_percent_m_without_error_prints_errno),
                T(test_log_preserves_errno),
                T(test_log_drops_messages_above_max_level),
                T(test_log_stderr_line_without_prefix),
                T(test_log_struct_prints_only_message_on_stderr),
                T(test_log_struct_without_message_prints_nothing),
                T(test_log_struct_errno_returns_negative_and_binds_percent_m),
                T(test_log_target_auto_resolves_to_journal_when_stream_matches_stderr),
                T(test_log_target_auto_uses_stderr_when_stream_differs),
                T(test_log_oom_returns_enomem),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

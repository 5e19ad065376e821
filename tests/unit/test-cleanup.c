/* Unit tests for common/cleanup.h: that each _cleanup_ helper really releases what it guards when the
 * scope ends, leaves errno alone, and that TAKE_PTR()/TAKE_FD() really stop it from doing so. Leaks
 * that a broken helper would cause are also caught by the sanitizer build. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "unit-test.h"

static bool fd_is_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

static void test_cleanup_close_closes_fd_at_scope_end(void **state) {
        int fds[2], saved;

        assert_int_equal(pipe(fds), 0);
        saved = fds[0];
        {
                _cleanup_close_ int fd = fds[0];

                assert_true(fd_is_open(fd));
        }
        assert_false(fd_is_open(saved));
        assert_int_equal(errno, EBADF);
        assert_int_equal(safe_close(fds[1]), -EBADF);
        assert_false(fd_is_open(fds[1]));
}

static void test_cleanup_close_ignores_negative_fd(void **state) {
        errno = 0;
        {
                _cleanup_close_ int fd = -EBADF;

                (void) fd;
        }
        assert_int_equal(errno, 0);
        assert_int_equal(safe_close(-1), -EBADF);
}

static void test_safe_close_preserves_errno(void **state) {
        int fds[2];

        assert_int_equal(pipe(fds), 0);

        errno = ENOENT;
        fds[0] = safe_close(fds[0]);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(fds[0], -EBADF);

        /* Also when close() itself fails: 1000 is not an open descriptor in this test. */
        assert_false(fd_is_open(1000));
        errno = EPERM;
        (void) safe_close(1000);
        assert_int_equal(errno, EPERM);

        (void) safe_close(fds[1]);
}

static int take_fd_helper(int *ret) {
        _cleanup_close_ int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        *ret = TAKE_FD(fd);
        assert_int_equal(fd, -EBADF);
        return 0;
}

static void test_take_fd_keeps_fd_open(void **state) {
        int fd = -1;

        assert_int_equal(take_fd_helper(&fd), 0);
        assert_true(fd >= 0);
        assert_true(fd_is_open(fd));
        (void) safe_close(fd);
}

static char *take_ptr_helper(void) {
        _cleanup_free_ char *p = strdup("kept");

        assert_non_null(p);
        return TAKE_PTR(p);
}

static void test_take_ptr_hands_ownership_on(void **state) {
        _cleanup_free_ char *p = take_ptr_helper();
        char *q = strdup("x"), *r;

        /* If freep() had run on the helper's variable, reading p would be a use-after-free that the
         * sanitizer build reports. */
        assert_string_equal(p, "kept");

        r = TAKE_PTR(q);
        assert_null(q);
        assert_string_equal(r, "x");
        r = mfree(r);
        assert_null(r);
}

static void test_json_decrefp_drops_one_reference(void **state) {
        json_t *obj = json_object();

        assert_non_null(obj);
        json_incref(obj);
        assert_int_equal(obj->refcount, 2);
        {
                _cleanup_(json_decrefp) json_t *j = obj;

                assert_int_equal(j->refcount, 2);
        }
        assert_int_equal(obj->refcount, 1);
        json_decref(obj);
        {
                _cleanup_(json_decrefp) json_t *none = NULL;

                (void) none;
        }
}

static void test_cleanup_fclose_closes_stream(void **state) {
        int fds[2];

        assert_int_equal(pipe(fds), 0);
        {
                _cleanup_fclose_ FILE *f = fdopen(fds[1], "w");

                assert_non_null(f);
                assert_true(fputs("data", f) >= 0); /* buffered: only written by fclose() */
        }
        assert_false(fd_is_open(fds[1]));

        char buf[8] = {};
        assert_int_equal(read(fds[0], buf, sizeof(buf)), 4);
        assert_string_equal(buf, "data");
        (void) safe_close(fds[0]);

        {
                _cleanup_fclose_ FILE *none = NULL;

                (void) none;
        }
}

static int counter_calls;

static void counter_free(int *p) {
        counter_calls++;
        (*p)++;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(int *, counter_free);

static void test_trivial_cleanup_func_skips_null(void **state) {
        int value = 0;

        counter_calls = 0;
        {
                _cleanup_(counter_freep) int *p = &value;
                _cleanup_(counter_freep) int *none = NULL;

                (void) p;
                (void) none;
        }
        assert_int_equal(counter_calls, 1);
        assert_int_equal(value, 1);
}

static void test_elementsof_counts_array_elements(void **state) {
        int a[7];
        const char *const s[] = { "a", "b", "c" };
        char buf[32];

        (void) a;
        assert_int_equal(ELEMENTSOF(a), 7);
        assert_int_equal(ELEMENTSOF(s), 3);
        assert_int_equal(ELEMENTSOF(buf), 32);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cleanup_close_closes_fd_at_scope_end),
                cmocka_unit_test(test_cleanup_close_ignores_negative_fd),
                cmocka_unit_test(test_safe_close_preserves_errno),
                cmocka_unit_test(test_take_fd_keeps_fd_open),
                cmocka_unit_test(test_take_ptr_hands_ownership_on),
                cmocka_unit_test(test_json_decrefp_drops_one_reference),
                cmocka_unit_test(test_cleanup_fclose_closes_stream),
                cmocka_unit_test(test_trivial_cleanup_func_skips_null),
                cmocka_unit_test(test_elementsof_counts_array_elements),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for common/util.h: the string helpers and the strict integer and size parsers, which
 * must accept exactly the documented forms and nothing that strtoull() would let through; and
 * common/byte-queue.h, which gives a burst's memory back once it is written. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "byte-queue.h"
#include "cleanup.h"
#include "unit-test.h"
#include "util.h"

static void test_streq_compares_contents(void **state) {
        char a[] = "abc";

        assert_true(streq(a, "abc"));
        assert_false(streq(a, "abcd"));
        assert_false(streq(a, "ab"));
        assert_true(streq_ptr(NULL, NULL));
        assert_false(streq_ptr(a, NULL));
        assert_false(streq_ptr(NULL, a));
        assert_true(streq_ptr(a, "abc"));
}

static void test_startswith_returns_rest_after_prefix(void **state) {
        const char *s = "MESSAGE=hello";

        assert_ptr_equal(startswith(s, "MESSAGE="), s + 8);
        assert_string_equal(startswith(s, "MESSAGE="), "hello");
        assert_ptr_equal(startswith(s, ""), s);
        assert_string_equal(startswith(s, "MESSAGE=hello"), "");
        assert_null(startswith(s, "MESSAGE=hello!"));
        assert_null(startswith(s, "message="));
        assert_null(startswith("", "x"));
}

static void test_strempty_and_isempty_treat_null_as_empty(void **state) {
        assert_string_equal(strempty(NULL), "");
        assert_string_equal(strempty("x"), "x");
        assert_true(isempty(NULL));
        assert_true(isempty(""));
        assert_false(isempty(" "));
}

static void test_safe_atou64_accepts_plain_decimal(void **state) {
        uint64_t v = 0;

        assert_int_equal(safe_atou64("0", &v), 0);
        assert_true(v == 0);
        assert_int_equal(safe_atou64("42", &v), 0);
        assert_true(v == 42);
        assert_int_equal(safe_atou64("007", &v), 0);
        assert_true(v == 7);
        assert_int_equal(safe_atou64("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
}

static void test_safe_atou64_rejects_junk(void **state) {
        static const char *const bad[] = { "",     " 1",  "1 ",  "+1",  "-1", "-0",
                                           "0x10", "1.0", "1e3", "12a", "a",  "1\n" };
        uint64_t v = 12345;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(safe_atou64(bad[i], &v), -EINVAL);
                assert_true(v == 12345); /* not written on failure */
        }
        assert_int_equal(safe_atou64(NULL, &v), -EINVAL);
}

static void test_safe_atou64_rejects_overflow(void **state) {
        uint64_t v = 12345;

        assert_int_equal(safe_atou64("18446744073709551616", &v), -ERANGE);
        assert_int_equal(safe_atou64("99999999999999999999999999", &v), -ERANGE);
        assert_true(v == 12345);
        /* Junk wins over overflow: it is not a number at all. */
        assert_int_equal(safe_atou64("99999999999999999999999999x", &v), -EINVAL);
}

static void test_safe_atoi_accepts_full_int_range(void **state) {
        int v = 1;

        assert_int_equal(safe_atoi("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(safe_atoi("-17", &v), 0);
        assert_int_equal(v, -17);
        assert_int_equal(safe_atoi("2147483647", &v), 0);
        assert_int_equal(v, INT_MAX);
        assert_int_equal(safe_atoi("-2147483648", &v), 0);
        assert_int_equal(v, INT_MIN);
}

static void test_safe_atoi_rejects_junk_and_overflow(void **state) {
        static const char *const bad[] = { "", "-", "--1", "+1", " 1", "1 ", "1x", "0x1", "- 1" };
        int v = 99;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(safe_atoi(bad[i], &v), -EINVAL);
        assert_int_equal(safe_atoi("2147483648", &v), -ERANGE);
        assert_int_equal(safe_atoi("-2147483649", &v), -ERANGE);
        assert_int_equal(safe_atoi("99999999999999999999999", &v), -ERANGE);
        assert_int_equal(v, 99);
}

static void test_parse_size_applies_binary_suffixes(void **state) {
        uint64_t v = 0;

        assert_int_equal(parse_size("1024", &v), 0);
        assert_true(v == 1024);
        assert_int_equal(parse_size("0", &v), 0);
        assert_true(v == 0);
        assert_int_equal(parse_size("1K", &v), 0);
        assert_true(v == 1024);
        assert_int_equal(parse_size("512M", &v), 0);
        assert_true(v == 512ULL * 1024 * 1024);
        assert_int_equal(parse_size("2G", &v), 0);
        assert_true(v == 2ULL * 1024 * 1024 * 1024);
        assert_int_equal(parse_size("2g", &v), 0);
        assert_true(v == 2ULL * 1024 * 1024 * 1024);
        assert_int_equal(parse_size("3T", &v), 0);
        assert_true(v == 3ULL << 40);
        assert_int_equal(parse_size("16777215T", &v), 0);
        assert_true(v == 16777215ULL << 40);
}

static void test_parse_size_rejects_junk(void **state) {
        static const char *const bad[] = { "",    "G",  "-1", "+1",  "1.5G", "1 G", " 1G", "1G ",
                                           "1GB", "1B", "1P", "1KK", "0x10", "ten", "1G\n" };
        uint64_t v = 77;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(parse_size(bad[i], &v), -EINVAL);
        assert_int_equal(parse_size(NULL, &v), -EINVAL);
        assert_true(v == 77);
}

static void test_parse_size_rejects_overflow(void **state) {
        uint64_t v = 77;

        /* 2^24 T = 2^64 bytes: one past the largest representable. */
        assert_int_equal(parse_size("16777216T", &v), -ERANGE);
        assert_int_equal(parse_size("17179869184G", &v), -ERANGE);
        assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
        assert_int_equal(parse_size("99999999999999999999999K", &v), -ERANGE);
        assert_true(v == 77);
        assert_int_equal(parse_size("18446744073709551615", &v), 0);
        assert_true(v == UINT64_MAX);
}

static void test_byte_queue_gives_back_a_burst_once_written(void **state) {
        ByteQueue q = {};
        size_t len = 256 * 1024;
        _cleanup_free_ char *burst = malloc(len);
        _cleanup_close_ int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

        assert_non_null(burst);
        assert_true(fd >= 0);
        memset(burst, 'b', len);
        assert_int_equal(byte_queue_put(&q, burst, len), 0);
        assert_true(q.cap > len);
        assert_int_equal(byte_queue_write(&q, fd), 0);
        assert_int_equal(byte_queue_len(&q), 0);
        assert_true(q.cap <= BYTE_QUEUE_KEEP);

        /* A small queue keeps its memory, and the queue is usable after either. */
        assert_int_equal(byte_queue_puts(&q, "small"), 0);
        assert_int_equal(byte_queue_write(&q, fd), 0);
        assert_int_equal(q.cap, 4096);
        assert_int_equal(byte_queue_put(&q, burst, len), 0);
        assert_int_equal(byte_queue_len(&q), len);
        byte_queue_free(&q);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_streq_compares_contents),
                cmocka_unit_test(test_startswith_returns_rest_after_prefix),
                cmocka_unit_test(test_strempty_and_isempty_treat_null_as_empty),
                cmocka_unit_test(test_safe_atou64_accepts_plain_decimal),
                cmocka_unit_test(test_safe_atou64_rejects_junk),
                cmocka_unit_test(test_safe_atou64_rejects_overflow),
                cmocka_unit_test(test_safe_atoi_accepts_full_int_range),
                cmocka_unit_test(test_safe_atoi_rejects_junk_and_overflow),
                cmocka_unit_test(test_parse_size_applies_binary_suffixes),
                cmocka_unit_test(test_parse_size_rejects_junk),
                cmocka_unit_test(test_parse_size_rejects_overflow),
                cmocka_unit_test(test_byte_queue_gives_back_a_burst_once_written),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

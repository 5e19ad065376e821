/* Unit tests for common/session-id.c: new ids are valid and differ, and anything but 12 lowercase hex
 * digits is refused. */
#include <string.h>

#include "session-id.h"
#include "unit-test.h"

static void test_session_id_new_is_valid_and_random(void **state) {
        char a[13], b[13];

        assert_int_equal(session_id_new(a), 0);
        assert_int_equal(session_id_new(b), 0);
        assert_int_equal(strlen(a), 12);
        assert_true(session_id_is_valid(a));
        assert_true(session_id_is_valid(b));
        assert_string_not_equal(a, b);
}

static void test_session_id_is_valid_rejects_others(void **state) {
        assert_true(session_id_is_valid("0123456789ab"));
        assert_false(session_id_is_valid(NULL));
        assert_false(session_id_is_valid(""));
        assert_false(session_id_is_valid("0123456789a"));
        assert_false(session_id_is_valid("0123456789abc"));
        assert_false(session_id_is_valid("0123456789AB"));
        assert_false(session_id_is_valid("0123456789ag"));
        assert_false(session_id_is_valid("01234-6789ab"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_session_id_new_is_valid_and_random),
                cmocka_unit_test(test_session_id_is_valid_rejects_others),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

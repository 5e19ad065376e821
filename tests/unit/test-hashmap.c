/* Unit tests for common/hashmap.c: put, get and remove, -EEXIST on a duplicate, keys borrowed from the
 * values, growth past thousands of entries with removals between, iteration that sees each entry once,
 * removal during iteration, the assertion on a put that grew the table under an iteration, and the
 * FNV-1a reference values of string_hash(). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hashmap.h"
#include "unit-test.h"

/* A value that carries its own key, as a session carries its id. */
typedef struct Item {
        char id[32];
        unsigned n;
        unsigned seen;
} Item;

#define MANY 20000

static Item *items_new(unsigned n) {
        Item *items = calloc(n, sizeof(Item));

        assert_non_null(items);
        for (unsigned i = 0; i < n; i++) {
                snprintf(items[i].id, sizeof(items[i].id), "session-%u", i);
                items[i].n = i;
        }
        return items;
}

static void test_hashmap_put_get_remove(void **state) {
        _cleanup_(hashmap_freep) Hashmap *h = hashmap_new();
        Item a = { .id = "alpha" }, b = { .id = "beta" }, a2 = { .id = "alpha" };

        assert_non_null(h);
        assert_int_equal(hashmap_size(h), 0);
        assert_null(hashmap_get(h, "alpha"));
        assert_null(hashmap_remove(h, "alpha"));

        assert_int_equal(hashmap_put(h, a.id, &a), 0);
        assert_int_equal(hashmap_put(h, b.id, &b), 0);
        assert_int_equal(hashmap_size(h), 2);
        assert_ptr_equal(hashmap_get(h, "alpha"), &a);
        assert_ptr_equal(hashmap_get(h, "beta"), &b);
        assert_null(hashmap_get(h, "gamma"));
        assert_null(hashmap_get(h, "alph"));
        assert_null(hashmap_get(h, ""));

        /* A duplicate key leaves the first value in place. */
        assert_int_equal(hashmap_put(h, a2.id, &a2), -EEXIST);
        assert_ptr_equal(hashmap_get(h, "alpha"), &a);
        assert_int_equal(hashmap_size(h), 2);

        assert_ptr_equal(hashmap_remove(h, "alpha"), &a);
        assert_null(hashmap_get(h, "alpha"));
        assert_null(hashmap_remove(h, "alpha"));
        assert_int_equal(hashmap_size(h), 1);
        /* The key can be used again, by another value. */
        assert_int_equal(hashmap_put(h, a2.id, &a2), 0);
        assert_ptr_equal(hashmap_get(h, "alpha"), &a2);
}

static void test_hashmap_null_is_an_empty_map(void **state) {
        Iterator i;
        Item *v;
        unsigned n = 0;

        assert_null(hashmap_get(NULL, "x"));
        assert_null(hashmap_remove(NULL, "x"));
        assert_int_equal(hashmap_size(NULL), 0);
        HASHMAP_FOREACH(v, (Hashmap *) NULL, i)
        n++;
        assert_int_equal(n, 0);
        assert_null(hashmap_free(NULL));
}

static void test_hashmap_grows_past_thousands_of_entries(void **state) {
        _cleanup_(hashmap_freep) Hashmap *h = hashmap_new();
        _cleanup_free_ Item *items = items_new(MANY);

        assert_non_null(h);
        for (unsigned i = 0; i < MANY; i++) {
                assert_int_equal(hashmap_put(h, items[i].id, &items[i]), 0);
                assert_int_equal(hashmap_size(h), i + 1);
        }
        for (unsigned i = 0; i < MANY; i++)
                assert_ptr_equal(hashmap_get(h, items[i].id), &items[i]);
        for (unsigned i = 0; i < MANY; i++)
                assert_int_equal(hashmap_put(h, items[i].id, &items[i]), -EEXIST);

        /* Take every odd one out, then put them back: deleted slots are reused or cleared by growth,
         * and nothing is lost or found twice. */
        for (unsigned i = 1; i < MANY; i += 2)
                assert_ptr_equal(hashmap_remove(h, items[i].id), &items[i]);
        assert_int_equal(hashmap_size(h), MANY / 2);
        for (unsigned i = 0; i < MANY; i++)
                if (i % 2)
                        assert_null(hashmap_get(h, items[i].id));
                else
                        assert_ptr_equal(hashmap_get(h, items[i].id), &items[i]);
        for (unsigned i = 1; i < MANY; i += 2)
                assert_int_equal(hashmap_put(h, items[i].id, &items[i]), 0);
        assert_int_equal(hashmap_size(h), MANY);
        for (unsigned i = 0; i < MANY; i++)
                assert_ptr_equal(hashmap_get(h, items[i].id), &items[i]);
}

static void test_hashmap_churn_does_not_fill_the_table_with_deleted_slots(void **state) {
        _cleanup_(hashmap_freep) Hashmap *h = hashmap_new();
        _cleanup_free_ Item *items = items_new(MANY);

        /* A registry's life: sessions come and go, a few at a time. Without the deleted slots counting
         * towards the load, a lookup of a missing key would probe forever. */
        for (unsigned i = 0; i < MANY; i++) {
                assert_int_equal(hashmap_put(h, items[i].id, &items[i]), 0);
                if (i >= 3)
                        assert_ptr_equal(hashmap_remove(h, items[i - 3].id), &items[i - 3]);
        }
        assert_int_equal(hashmap_size(h), 3);
        assert_null(hashmap_get(h, "session-0"));
        assert_ptr_equal(hashmap_get(h, items[MANY - 1].id), &items[MANY - 1]);
}

static void test_hashmap_foreach_sees_each_entry_once(void **state) {
        _cleanup_(hashmap_freep) Hashmap *h = hashmap_new();
        _cleanup_free_ Item *items = items_new(5000);
        Iterator i;
        Item *v;
        const char *k;
        unsigned n = 0;

        for (unsigned j = 0; j < 5000; j++)
                assert_int_equal(hashmap_put(h, items[j].id, &items[j]), 0);
        HASHMAP_FOREACH_KEY(v, k, h, i) {
                assert_ptr_equal(k, v->id); /* the key is the value's own string, not a copy */
                v->seen++;
                n++;
        }
        assert_int_equal(n, 5000);
        for (unsigned j = 0; j < 5000; j++)
                assert_int_equal(items[j].seen, 1);
}

static void test_hashmap_remove_during_foreach(void **state) {
        _cleanup_(hashmap_freep) Hashmap *h = hashmap_new();
        _cleanup_free_ Item *items = items_new(3000);
        Iterator i;
        Item *v;
        unsigned n = 0;

        for (unsigned j = 0; j < 3000; j++)
                assert_int_equal(hashmap_put(h, items[j].id, &items[j]), 0);
        /* Removing the current entry does not skip the next one. */
        HASHMAP_FOREACH(v, h, i) {
                v->seen++;
                n++;
                if (v->n % 3 == 0)
                        assert_ptr_equal(hashmap_remove(h, v->id), v);
        }
        assert_int_equal(n, 3000);
        assert_int_equal(hashmap_size(h), 2000);
        for (unsigned j = 0; j < 3000; j++)
                assert_int_equal(items[j].seen, 1);

        /* Removing every entry as it is visited empties the map. */
        n = 0;
        HASHMAP_FOREACH(v, h, i) {
                assert_ptr_equal(hashmap_remove(h, v->id), v);
                n++;
        }
        assert_int_equal(n, 2000);
        assert_int_equal(hashmap_size(h), 0);
        HASHMAP_FOREACH(v, h, i)
        fail();
}

static void test_hashmap_put_that_grows_under_foreach_asserts(void **state) {
        Hashmap *h = hashmap_new();
        Item *items = items_new(100);
        Iterator i;
        Item *v;
        pid_t pid;
        int status;

        for (unsigned j = 0; j < 4; j++)
                assert_int_equal(hashmap_put(h, items[j].id, &items[j]), 0);
        i = ITERATOR_FIRST;
        assert_true(hashmap_iterate(h, &i, (void **) &v, NULL));
        /* Enough puts to grow the table: the next step must refuse to go on (abort, in a child). */
        for (unsigned j = 4; j < 100; j++)
                assert_int_equal(hashmap_put(h, items[j].id, &items[j]), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                (void) hashmap_iterate(h, &i, (void **) &v, NULL);
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGABRT);
        /* A new iteration is fine. */
        i = ITERATOR_FIRST;
        assert_true(hashmap_iterate(h, &i, (void **) &v, NULL));
        hashmap_free(h);
        free(items);
}

static void test_string_hash_is_fnv1a(void **state) {
        /* The published FNV-1a 64-bit test vectors. */
        assert_true(string_hash("") == UINT64_C(0xcbf29ce484222325));
        assert_true(string_hash("a") == UINT64_C(0xaf63dc4c8601ec8c));
        assert_true(string_hash("foobar") == UINT64_C(0x85944171f73967e8));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hashmap_put_get_remove),
                cmocka_unit_test(test_hashmap_null_is_an_empty_map),
                cmocka_unit_test(test_hashmap_grows_past_thousands_of_entries),
                cmocka_unit_test(test_hashmap_churn_does_not_fill_the_table_with_deleted_slots),
                cmocka_unit_test(test_hashmap_foreach_sees_each_entry_once),
                cmocka_unit_test(test_hashmap_remove_during_foreach),
                cmocka_unit_test(test_hashmap_put_that_grows_under_foreach_asserts),
                cmocka_unit_test(test_string_hash_is_fnv1a),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

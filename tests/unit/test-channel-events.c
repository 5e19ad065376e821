/* Unit tests for daemon/channel-events.h, the fast path of "events" requests: what it takes it reads
 * as jansson does (the same seqs, times, data values, result flags and id), checked on hand-written
 * lines and on many thousands of random mutations of them; and the lines it must leave to jansson
 * (escaped or duplicate keys, \u0000, lone surrogates, bad UTF-8, numbers jansson refuses or might,
 * whitespace inside data, other methods and shapes) it leaves. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "channel-events.h"
#include "cleanup.h"
#include "unit-test.h"

#define MAX 1000

static ChannelEvent events[MAX];

/* If the fast path takes line, jansson must read the same request from it. Returns what it returned. */
static int check_line(const char *line, size_t n) {
        _cleanup_(json_decrefp) json_t *id = NULL, *msg = NULL;
        size_t k = 0;
        json_t *evs;
        int r;

        r = channel_events_parse(line, n, events, MAX, &k, &id);
        assert_true(r == 0 || r == 1);
        if (r == 0)
                return 0;

        msg = json_loadb(line, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (!msg)
                fail_msg("the fast path took a line jansson refuses: %.*s", (int) n, line);
        assert_string_equal(json_string_value(json_object_get(msg, "method")), "events");
        assert_string_equal(json_string_value(json_object_get(msg, "jsonrpc")), "2.0");
        assert_true(json_equal(id, json_object_get(msg, "id")));
        evs = json_object_get(json_object_get(msg, "params"), "events");
        assert_int_equal(json_array_size(evs), k);
        for (size_t i = 0; i < k; i++) {
                json_t *e = json_array_get(evs, i), *d = json_object_get(e, "data");
                _cleanup_(json_decrefp) json_t *mine =
                        json_loadb(events[i].data, events[i].data_len, JSON_DECODE_ANY, NULL);

                assert_int_equal(json_integer_value(json_object_get(e, "seq")), events[i].seq);
                assert_int_equal(json_integer_value(json_object_get(e, "time")), events[i].time);
                assert_non_null(mine);
                assert_true(json_equal(mine, d));
                assert_int_equal(
                        events[i].result,
                        json_is_object(d) && json_is_string(json_object_get(d, "type")) &&
                                strcmp(json_string_value(json_object_get(d, "type")), "result") == 0);
                /* Stored as it came, and compact. */
                for (size_t j = 0; j < events[i].data_len; j++)
                        if (events[i].data[j] == '\n')
                                fail_msg("a newline in data");
        }
        return 1;
}

static int check(const char *line) {
        return check_line(line, strlen(line));
}

static const char *const taken[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":5,\"data\":{\"type\":\"system\"}}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":\"x-1\",\"method\":\"events\",\"params\":{\"events\":[{\"seq\":7,\"time\":0,\"data\":{\"type\":\"result\",\"n\":[1,2.5,-3e-7,true,false,null,{}]}},{\"seq\":8,\"time\":9,\"data\":\"\\u00e9\\n\\\"x\\\" caf\xc3\xa9 \xf0\x9f\x98\x80\"}]}}",
        " { \"params\" : { \"events\" : [ { \"data\" : [] , \"time\" : 1 , \"seq\" : 2 , \"extra\" : {\"a\":1} } ] } , \"method\" : \"events\" , \"id\" : -4 , \"jsonrpc\" : \"2.0\" } \r",
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"a\\/b\\\\c\\t\"}],\"type\":\"result\"}}}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":999999999999999999,\"time\":123456789012345678,\"data\":0}]}}",
};

static const char *const left[] = {
        /* not an events request, or not one the fast path answers */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":{\"events\":[]}}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":0,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":-1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1.0,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}],\"x\":1}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]},\"x\":1}",
        "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}",
        /* duplicates, and keys it cannot compare */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{\"a\":1,\"a\":2}}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{\"a\":1,\"\\u0061\":2}}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"seq\":1,\"time\":1,\"data\":1}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{\"type\":\"res\\u0075lt\"}}]}}",
        /* strings jansson refuses, or might */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\\u0000\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\\ud800\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\\x\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\xc0\xaf\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\xed\xa0\x80\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\xf4\x90\x80\x80\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"\xe2\x82\"}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":\"a\tb\"}]}}",
        /* numbers */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":99999999999999999999}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1e400}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":01}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1.}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":-}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":+1}]}}",
        /* whitespace inside data (stored compact only), trailing garbage, truncation */
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{\"a\": 1}}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":[1,\r2]}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}}x",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":1}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":tru}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":[1,]}]}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events\",\"params\":{\"events\":[{\"seq\":1,\"time\":1,\"data\":{,}}]}}",
};

static void test_taken(void **state) {
        for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
                if (check(taken[i]) != 1)
                        fail_msg("not taken: %s", taken[i]);
}

static void test_left(void **state) {
        for (size_t i = 0; i < sizeof(left) / sizeof(left[0]); i++)
                if (check(left[i]) != 0)
                        fail_msg("taken: %s", left[i]);
}

static void test_result_flag(void **state) {
        assert_int_equal(check(taken[1]), 1);
        assert_true(events[0].result);
        assert_false(events[1].result);
        /* "type" of a nested object is not the event's */
        assert_int_equal(check(taken[3]), 1);
        assert_false(events[0].result);
}

static void test_too_many(void **state) {
        _cleanup_(json_decrefp) json_t *id = NULL;
        const char *line = taken[1];
        size_t k = 0;

        /* Two events, room for one: left to the ordinary path, which says what the limit is. */
        assert_int_equal(channel_events_parse(line, strlen(line), events, 1, &k, &id), 0);
        assert_null(id);
}

/* Random byte changes of every line: whatever the fast path takes from a mutant, jansson reads alike. */
static void test_mutations(void **state) {
        static const char alphabet[] = "{}[]\",:\\ 0123456789.eE-+tfnulrsa\x01\x80\xc3\xa9\xed\xf0\x7f\t\r";
        unsigned seed = 12345;
        size_t taken_n = 0;

        for (int round = 0; round < 200000; round++) {
                const char *base = round % 2 ? taken[(round / 2) % (sizeof(taken) / sizeof(taken[0]))]
                                             : left[(round / 2) % (sizeof(left) / sizeof(left[0]))];
                char buf[1024];
                size_t n = strlen(base);
                int edits;

                assert_true(n < sizeof(buf));
                memcpy(buf, base, n);
                seed = seed * 1103515245 + 12345;
                edits = 1 + (int) ((seed >> 16) % 3);
                for (int e = 0; e < edits; e++) {
                        size_t at;

                        seed = seed * 1103515245 + 12345;
                        at = (seed >> 8) % n;
                        seed = seed * 1103515245 + 12345;
                        switch ((seed >> 16) % 3) {
                        case 0: /* replace */
                                buf[at] = alphabet[(seed >> 4) % (sizeof(alphabet) - 1)];
                                break;
                        case 1: /* delete */
                                memmove(buf + at, buf + at + 1, n - at - 1);
                                n--;
                                break;
                        default: /* insert */
                                if (n + 1 < sizeof(buf)) {
                                        memmove(buf + at + 1, buf + at, n - at);
                                        buf[at] = alphabet[(seed >> 4) % (sizeof(alphabet) - 1)];
                                        n++;
                                }
                        }
                }
                taken_n += (size_t) check_line(buf, n);
        }
        /* The mutants are mostly broken, but many stay valid requests. */
        assert_true(taken_n > 1000);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_taken),       cmocka_unit_test(test_left),
                cmocka_unit_test(test_result_flag), cmocka_unit_test(test_too_many),
                cmocka_unit_test(test_mutations),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for common/jsonrpc.h: the line reader (partial and combined feeds, CRLF, blank lines,
 * oversized lines with recovery in the same and later feeds, a long line's memory given back, bad JSON and
 * UTF-8, lines over its nesting and value limits), the pre-scan (its counts, strings with brackets and
 * escaped quotes, the limits), every refusal of the classifier, the builders' ownership and validation, and
 * the line formatter. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "byte-queue.h"
#include "cleanup.h"
#include "jsonrpc.h"
#include "unit-test.h"

/* ---- helpers ---- */

static struct jsonrpc_reader *reader_new(size_t max_line) {
        struct jsonrpc_reader *r = NULL;

        assert_int_equal(jsonrpc_reader_new(max_line, &r), 0);
        assert_non_null(r);
        return r;
}

static void feed(struct jsonrpc_reader *r, const char *s) {
        assert_int_equal(jsonrpc_reader_feed(r, s, strlen(s)), 0);
}

/* Takes the next message, which must be there, and checks its "id" member. */
static void expect_message_with_id(struct jsonrpc_reader *r, json_int_t id) {
        _cleanup_(json_decrefp) json_t *m = NULL;
        struct jsonrpc_error e = {};

        assert_int_equal(jsonrpc_reader_next(r, &m, &e), 1);
        assert_non_null(m);
        assert_true(json_is_integer(json_object_get(m, "id")));
        assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
}

static void expect_nothing(struct jsonrpc_reader *r) {
        json_t *m = NULL;
        struct jsonrpc_error e = {};

        assert_int_equal(jsonrpc_reader_next(r, &m, &e), 0);
        assert_null(m);
}

/* The next line must fail with this errno and JSON-RPC code; returns nothing, checks the message. */
static void expect_error(struct jsonrpc_reader *r, int error, int code, const char *needle) {
        json_t *m = NULL;
        struct jsonrpc_error e = {};

        assert_int_equal(jsonrpc_reader_next(r, &m, &e), error);
        assert_null(m);
        assert_int_equal(e.code, code);
        assert_null(e.id);
        if (!strstr(e.message, needle))
                fail_msg("error message \"%s\" does not mention \"%s\"", e.message, needle);
        for (const char *p = e.message; *p; p++)
                assert_true(*p >= 0x20 && *p <= 0x7e);
}

static json_t *parse(const char *s) {
        json_error_t e;
        json_t *j = json_loads(s, JSON_DECODE_ANY, &e);

        if (!j)
                fail_msg("test JSON does not parse: %s: %s", s, e.text);
        return j;
}

#define REQ(id) "{\"jsonrpc\":\"2.0\",\"id\":" #id ",\"method\":\"ping\"}"

/* ---- reader ---- */

static void test_reader_new_rejects_zero_max_line(void **state) {
        struct jsonrpc_reader *r = NULL;

        assert_int_equal(jsonrpc_reader_new(0, &r), -EINVAL);
        assert_null(r);
}

static void test_reader_returns_zero_until_line_complete(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        expect_nothing(r);
        assert_int_equal(jsonrpc_reader_pending(r), 0);
        feed(r, "{\"jsonrpc\":\"2.0\",");
        expect_nothing(r);
        assert_int_equal(jsonrpc_reader_pending(r), 17);
        assert_int_equal(jsonrpc_reader_feed(r, NULL, 0), 0);
        expect_nothing(r);
}

static void test_reader_splits_message_across_feeds(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);
        const char *line = REQ(1) "\n";

        for (const char *p = line; *p; p++) {
                expect_nothing(r);
                assert_int_equal(jsonrpc_reader_feed(r, p, 1), 0);
        }
        expect_message_with_id(r, 1);
        expect_nothing(r);
        assert_int_equal(jsonrpc_reader_pending(r), 0);
}

static void test_reader_returns_several_messages_from_one_feed(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r,
             REQ(1) "\n" REQ(2) "\n" REQ(3) "\n"
                                            "{\"jsonrpc\"");
        expect_message_with_id(r, 1);
        expect_message_with_id(r, 2);
        expect_message_with_id(r, 3);
        expect_nothing(r);
        assert_int_equal(jsonrpc_reader_pending(r), 10);

        /* The rest of the fourth arrives with a fifth. */
        feed(r, ":\"2.0\",\"id\":4,\"method\":\"m\"}\n" REQ(5) "\n");
        expect_message_with_id(r, 4);
        expect_message_with_id(r, 5);
        expect_nothing(r);
}

static void test_reader_accepts_crlf_line_endings(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, REQ(1) "\r\n" REQ(2) "\r");
        expect_message_with_id(r, 1);
        expect_nothing(r);
        feed(r, "\n");
        expect_message_with_id(r, 2);
        expect_nothing(r);
}

static void test_reader_skips_blank_lines(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, "\n\r\n\n  \t \r\n\r");
        expect_nothing(r);
        feed(r, "\n" REQ(1) "\n\n");
        expect_message_with_id(r, 1);
        expect_nothing(r);
        assert_int_equal(jsonrpc_reader_pending(r), 0);
}

static void test_reader_accepts_line_of_exactly_max_line(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(strlen(REQ(1)));

        feed(r, REQ(1));
        expect_nothing(r);
        feed(r, "\r"); /* max_line + 1 bytes buffered, but the "\r" may start "\r\n" */
        expect_nothing(r);
        feed(r, "\n" REQ(2) "\n");
        expect_message_with_id(r, 1);
        expect_message_with_id(r, 2);
        feed(r, " " REQ(3) "\n"); /* one byte over */
        expect_error(r, -EMSGSIZE, JSONRPC_INVALID_REQUEST, "limited to 40 bytes");
        expect_nothing(r);
}

static void test_reader_survives_oversized_line(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(64);
        char big[200];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';

        /* Oversized line, then a good one, in the same feed. */
        feed(r, big);
        feed(r, "\n" REQ(1) "\n");
        expect_error(r, -EMSGSIZE, JSONRPC_INVALID_REQUEST, "64 bytes");
        expect_message_with_id(r, 1);
        expect_nothing(r);

        /* The same, in a single feed call. */
        feed(r, "[" REQ(2) "," REQ(3) "]\n" REQ(4) "\n");
        expect_error(r, -EMSGSIZE, JSONRPC_INVALID_REQUEST, "64 bytes");
        expect_message_with_id(r, 4);
        expect_nothing(r);
}

static void test_reader_skips_oversized_line_across_later_feeds(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(64);
        char big[100];

        memset(big, 'y', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';

        feed(r, REQ(1) "\n");
        feed(r, big);
        expect_message_with_id(r, 1);
        /* Reported as soon as more than max_line bytes are buffered without a newline. */
        expect_error(r, -EMSGSIZE, JSONRPC_INVALID_REQUEST, "64 bytes");
        assert_int_equal(jsonrpc_reader_pending(r), 0);

        /* The rest of the line is dropped as it arrives, without buffering and without a second
         * error; "{" that looks like JSON is still part of the bad line. */
        for (int i = 0; i < 50; i++) {
                feed(r, big);
                expect_nothing(r);
                assert_int_equal(jsonrpc_reader_pending(r), 0);
        }
        feed(r, "{\"jsonrpc\":\"2.0\"}");
        expect_nothing(r);
        feed(r, "tail of the long line\n" REQ(2) "\n" REQ(3));
        expect_message_with_id(r, 2);
        expect_nothing(r);
        feed(r, "\n");
        expect_message_with_id(r, 3);
        expect_nothing(r);
}

static void test_reader_oversized_line_ends_in_newline_only_feed(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(8);

        feed(r, "0123456789");
        expect_error(r, -EMSGSIZE, JSONRPC_INVALID_REQUEST, "8 bytes");
        feed(r, "\n");
        expect_nothing(r);
        feed(r, "{}\n");
        {
                _cleanup_(json_decrefp) json_t *m = NULL;
                struct jsonrpc_error e = {};

                assert_int_equal(jsonrpc_reader_next(r, &m, &e), 1);
                assert_true(json_is_object(m));
                assert_int_equal(json_object_size(m), 0);
        }
}

static void test_reader_reports_parse_error_and_continues(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, "{\"jsonrpc\":\n" REQ(1) "\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "Parse error at byte");
        expect_message_with_id(r, 1);

        feed(r, "not json\r\n" REQ(2) "\r\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "invalid token");
        expect_message_with_id(r, 2);
        expect_nothing(r);
}

static void test_reader_rejects_trailing_garbage(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, REQ(1) " x\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "end of file expected");
        /* Two objects on one line are not two messages. */
        feed(r, REQ(2) REQ(3) "\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "end of file expected");
        expect_nothing(r);
}

static void test_reader_rejects_invalid_utf8(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, "{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\xfe\"}\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "Parse error");
        /* An overlong encoding of '/' and a lone continuation byte. */
        feed(r, "{\"m\":\"\xc0\xaf\"}\n{\"m\":\"\x80\"}\n" REQ(1) "\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "Parse error");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "Parse error");
        expect_message_with_id(r, 1);
}

static void test_reader_rejects_nul_bytes(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);
        static const char raw[] = "{\"a\":\0}\n{\"a\":\"\\u0000\"}\n";

        assert_int_equal(jsonrpc_reader_feed(r, raw, sizeof(raw) - 1), 0);
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "Parse error");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "\\u0000");
        expect_nothing(r);
}

static void test_reader_rejects_duplicate_keys(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);

        feed(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"m\"}\n");
        expect_error(r, -EBADMSG, JSONRPC_PARSE_ERROR, "duplicate object key");
}

static void test_reader_passes_json_scalars_to_classifier(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);
        _cleanup_(json_decrefp) json_t *m = NULL;
        struct jsonrpc_error e = {};

        /* Valid JSON that is not a message is an invalid request, not a parse error. */
        feed(r, "42\n");
        assert_int_equal(jsonrpc_reader_next(r, &m, &e), 1);
        assert_true(json_is_integer(m));
        assert_int_equal(jsonrpc_classify(m, NULL, &e), -EBADMSG);
        assert_int_equal(e.code, JSONRPC_INVALID_REQUEST);
}

static void test_reader_reassembles_large_message_from_small_feeds(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1 << 20);
        _cleanup_(json_decrefp) json_t *in = NULL, *out = NULL;
        _cleanup_free_ char *text = NULL, *line = NULL;
        struct jsonrpc_error e = {};
        size_t len, i;

        text = malloc(200001);
        assert_non_null(text);
        memset(text, 'a', 200000);
        text[200000] = '\0';
        in = json_pack(
                "{s:s, s:i, s:s, s:{s:s}}",
                "jsonrpc",
                "2.0",
                "id",
                9,
                "method",
                "m",
                "params",
                "text",
                text);
        assert_non_null(in);
        assert_int_equal(jsonrpc_format_line(in, &line, &len), 0);

        for (i = 0; i + 7 < len; i += 7) {
                assert_int_equal(jsonrpc_reader_feed(r, line + i, 7), 0);
                expect_nothing(r);
        }
        assert_int_equal(jsonrpc_reader_feed(r, line + i, len - i), 0);
        assert_int_equal(jsonrpc_reader_next(r, &out, &e), 1);
        assert_true(json_equal(in, out));
        expect_nothing(r);
}

/* ---- the pre-scan ---- */

static size_t scan_values(const char *s) {
        size_t v = 0;

        assert_int_equal(jsonrpc_scan(s, strlen(s), 0, 0, &v), 0);
        return v;
}

static void test_scan_counts_elements_and_members(void **state) {
        assert_int_equal(scan_values(""), 0);
        assert_int_equal(scan_values("1"), 1);
        assert_int_equal(scan_values("  \"x\" "), 1);
        assert_int_equal(scan_values("[]"), 1);
        assert_int_equal(scan_values("{ }"), 1);
        assert_int_equal(scan_values("[1]"), 2);
        assert_int_equal(scan_values("[1, 2 ,3]"), 4);
        assert_int_equal(scan_values("{\"a\":1,\"b\":[true,null],\"c\":{}}"), 6);
        assert_int_equal(scan_values("[{},{},{}]"), 4);
        assert_int_equal(scan_values("[[],[[]],[ ]]"), 5);
        assert_int_equal(scan_values("{\"a\":{\"b\":{\"c\":-1.5e3}}}"), 4);
}

static void test_scan_skips_strings_and_their_escapes(void **state) {
        /* Brackets, commas and quotes inside strings are text. */
        assert_int_equal(scan_values("[\"[[[,,,{{{\"]"), 2);
        assert_int_equal(scan_values("{\"k,[\":\"v]}\"}"), 2);
        /* An escaped quote does not end the string; an escaped backslash before a quote does. */
        assert_int_equal(scan_values("[\"a\\\",[\\\"\",1]"), 3);
        assert_int_equal(scan_values("[\"a\\\\\",1]"), 3);
        assert_int_equal(scan_values("[\"a\\\\\\\\\",[1]]"), 4);
        assert_int_equal(scan_values("[\"\\\\\\\",[\",1]"), 3);
        assert_int_equal(scan_values("[\"\\u0022,[\",2]"), 3);
        /* A string that does not end hides the rest of the line, and nothing breaks. */
        assert_int_equal(scan_values("[\"unterminated,[[[[[[\\"), 2);
        assert_int_equal(scan_values("\"\\"), 1);
}

static void test_scan_refuses_over_the_limits(void **state) {
        char deep[200], wide[64];
        size_t v = 0;

        memset(deep, '[', 65);
        memset(deep + 65, ']', 65);
        deep[130] = '\0';
        assert_int_equal(jsonrpc_scan(deep, 130, 65, 0, &v), 0);
        assert_int_equal(v, 65);
        v = 7;
        assert_int_equal(jsonrpc_scan(deep, 130, 64, 0, &v), -ELOOP);
        assert_int_equal(v, 7); /* written only on success */
        /* Depth is how many are open at once, not how many opened. */
        assert_int_equal(jsonrpc_scan("[[[]],[[]]]", 11, 3, 0, NULL), 0);
        assert_int_equal(jsonrpc_scan("[[[]],[[[]]]]", 13, 3, 0, NULL), -ELOOP);
        /* Brackets in strings do not nest. */
        assert_int_equal(jsonrpc_scan("[\"[[[[[[\"]", 10, 1, 0, NULL), 0);

        strcpy(wide, "[{},{},{},{}]");
        assert_int_equal(jsonrpc_scan(wide, strlen(wide), 0, 5, &v), 0);
        assert_int_equal(v, 5);
        assert_int_equal(jsonrpc_scan(wide, strlen(wide), 0, 4, NULL), -E2BIG);
        assert_int_equal(jsonrpc_scan("{\"a\":1,\"b\":2}", 13, 0, 2, NULL), -E2BIG);
        assert_int_equal(jsonrpc_scan("{\"a,b,c\":\"1,2\"}", 15, 0, 2, NULL), 0);
}

static void test_reader_refuses_lines_over_its_limits_and_goes_on(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1 << 20);
        _cleanup_free_ char *deep = NULL, *wide = NULL;
        size_t n;

        jsonrpc_reader_set_limits(r, 8, 0);
        /* 9 levels: the message, params and 7 more arrays. */
        feed(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":[[[[[[[[]]]]]]]]}\n");
        expect_error(r, -ELOOP, JSONRPC_INVALID_REQUEST, "at most 8 levels");
        feed(r, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x\",\"params\":[[[[[[[]]]]]]]}\n");
        expect_message_with_id(r, 2);

        /* The message, its 4 members and 6 elements: 11 values. */
        jsonrpc_reader_set_limits(r, 0, 10);
        feed(r, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x\",\"params\":[{},{},{},{},{},{}]}\n");
        expect_error(r, -E2BIG, JSONRPC_INVALID_REQUEST, "at most 10 array elements and object members");
        feed(r, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"x\",\"params\":[{},{},{},{},{}]}\n");
        expect_message_with_id(r, 4);
        /* What is in strings costs nothing. */
        feed(r,
             "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"x\",\"params\":[\"[[[[[[[[[[,,,,,,,,,,,\\\"\"]}\n");
        expect_message_with_id(r, 5);
        expect_nothing(r);

        /* The shapes of the attack at the channel's limits: 100000 levels, then 1 MiB of {}. */
        jsonrpc_reader_set_limits(r, JSONRPC_MAX_DEPTH, JSONRPC_MAX_VALUES);
        n = 100000;
        deep = malloc(2 * n + 2);
        assert_non_null(deep);
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        strcpy(deep + 2 * n, "\n");
        feed(r, deep);
        expect_error(r, -ELOOP, JSONRPC_INVALID_REQUEST, "at most 64 levels");

        n = (1 << 20) / 3 - 1;
        wide = malloc(3 * n + 3);
        assert_non_null(wide);
        wide[0] = '[';
        for (size_t i = 0; i < n; i++)
                memcpy(wide + 1 + 3 * i, i + 1 < n ? "{}," : "{}]", 3);
        strcpy(wide + 1 + 3 * n, "\n");
        feed(r, wide);
        expect_error(r, -E2BIG, JSONRPC_INVALID_REQUEST, "at most 200000");
        feed(r, REQ(6) "\n");
        expect_message_with_id(r, 6);
}

/* ---- classify ---- */

static void test_classify_request(void **state) {
        _cleanup_(json_decrefp) json_t *msg = parse(
                "{\"jsonrpc\":\"2.0\",\"id\":\"a-1\",\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}");
        struct jsonrpc_message m;

        assert_int_equal(jsonrpc_classify(msg, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_REQUEST);
        assert_ptr_equal(m.id, json_object_get(msg, "id"));
        assert_string_equal(m.method, "tools/call");
        assert_ptr_equal(m.params, json_object_get(msg, "params"));
        assert_null(m.result);
        assert_null(m.error);
}

static void test_classify_request_with_array_or_no_params(void **state) {
        _cleanup_(json_decrefp) json_t *a =
                parse("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"m\",\"params\":[1,2]}");
        _cleanup_(json_decrefp) json_t *b = parse("{\"jsonrpc\":\"2.0\",\"id\":-5,\"method\":\"m\"}");
        struct jsonrpc_message m;

        assert_int_equal(jsonrpc_classify(a, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_REQUEST);
        assert_true(json_is_array(m.params));
        assert_int_equal(jsonrpc_classify(b, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_REQUEST);
        assert_int_equal(json_integer_value(m.id), -5);
        assert_null(m.params);
}

static void test_classify_notification(void **state) {
        _cleanup_(json_decrefp) json_t *msg =
                parse("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
        struct jsonrpc_message m;

        assert_int_equal(jsonrpc_classify(msg, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_NOTIFICATION);
        assert_null(m.id);
        assert_string_equal(m.method, "notifications/initialized");
}

static void test_classify_response(void **state) {
        _cleanup_(json_decrefp) json_t *a = parse("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"ok\":true}}");
        _cleanup_(json_decrefp) json_t *b = parse("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"result\":null}");
        struct jsonrpc_message m;

        assert_int_equal(jsonrpc_classify(a, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_RESPONSE);
        assert_int_equal(json_integer_value(m.id), 3);
        assert_ptr_equal(m.result, json_object_get(a, "result"));
        assert_null(m.method);
        assert_int_equal(jsonrpc_classify(b, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_RESPONSE);
        assert_true(json_is_null(m.result));
}

static void test_classify_error_response(void **state) {
        _cleanup_(json_decrefp) json_t *a = parse(
                "{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32601,\"message\":\"no such method\",\"data\":1}}");
        _cleanup_(json_decrefp) json_t *b = parse(
                "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}");
        struct jsonrpc_message m;

        assert_int_equal(jsonrpc_classify(a, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_ERROR_RESPONSE);
        assert_int_equal(m.error_code, JSONRPC_METHOD_NOT_FOUND);
        assert_string_equal(m.error_message, "no such method");
        assert_ptr_equal(m.error, json_object_get(a, "error"));
        assert_int_equal(jsonrpc_classify(b, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_ERROR_RESPONSE);
        assert_true(json_is_null(m.id));
        assert_int_equal(m.error_code, JSONRPC_PARSE_ERROR);
}

static void test_classify_ignores_unknown_members(void **state) {
        _cleanup_(json_decrefp) json_t *msg =
                parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"extra\":[]}");

        assert_int_equal(jsonrpc_classify(msg, NULL, NULL), 0);
}

static void test_classify_rejects_batch_array(void **state) {
        _cleanup_(json_decrefp) json_t *msg = parse("[" REQ(1) "," REQ(2) "]");
        struct jsonrpc_error e = {};

        assert_int_equal(jsonrpc_classify(msg, NULL, &e), -EBADMSG);
        assert_int_equal(e.code, JSONRPC_INVALID_REQUEST);
        assert_non_null(strstr(e.message, "Batches"));
        assert_null(e.id);
}

struct bad_case {
        const char *json;
        const char *needle; /* must appear in the error message */
        bool keeps_id;      /* ret_err->id must be the message's "id" */
};

static void check_bad_cases(const struct bad_case *cases, size_t n) {
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_decrefp) json_t *msg = parse(cases[i].json);
                struct jsonrpc_message m = { .kind = 99 };
                struct jsonrpc_error e = {};
                int r;

                r = jsonrpc_classify(msg, &m, &e);
                if (r != -EBADMSG)
                        fail_msg("%s: returned %i, not -EBADMSG", cases[i].json, r);
                assert_int_equal(m.kind, 99); /* not written on failure */
                assert_int_equal(e.code, JSONRPC_INVALID_REQUEST);
                if (!strstr(e.message, cases[i].needle))
                        fail_msg(
                                "%s: message \"%s\" does not mention \"%s\"",
                                cases[i].json,
                                e.message,
                                cases[i].needle);
                if (cases[i].keeps_id ? e.id != json_object_get(msg, "id") || !e.id : e.id != NULL)
                        fail_msg("%s: the error %s the id", cases[i].json, e.id ? "has" : "lacks");

                /* Without ret_err it fails the same way. */
                assert_int_equal(jsonrpc_classify(msg, NULL, NULL), -EBADMSG);
        }
}

static void test_classify_rejects_non_objects(void **state) {
        static const struct bad_case cases[] = {
                { "\"2.0\"", "got a string", false },  { "42", "got an integer", false },
                { "1.5", "got a real number", false }, { "null", "got null", false },
                { "true", "got a boolean", false },    { "[]", "Batches", false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
        assert_int_equal(jsonrpc_classify(NULL, NULL, NULL), -EBADMSG);
}

static void test_classify_rejects_missing_or_wrong_version(void **state) {
        static const struct bad_case cases[] = {
                { "{\"id\":1,\"method\":\"m\"}", "\"jsonrpc\" is missing", true },
                { "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"m\"}", "must be the string \"2.0\"", true },
                { "{\"jsonrpc\":2.0,\"id\":\"a\",\"method\":\"m\"}", "must be the string \"2.0\"", true },
                { "{\"jsonrpc\":\"2.0 \",\"method\":\"m\"}", "must be the string \"2.0\"", false },
                { "{\"jsonrpc\":null,\"id\":1.5,\"method\":\"m\"}", "must be the string \"2.0\"", false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_bad_method(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}",
                  "\"method\" must be a string, got an integer",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":null}",
                  "\"method\" must be a string, got null",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":[\"m\"]}", "got an array", true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", "must not be empty", true },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_bad_id_types(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"m\"}",
                  "\"id\" must be a string or an integer, got null",
                  false },
                { "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}", "got a boolean", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":false,\"method\":\"m\"}", "got a boolean", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"m\"}", "got a real number", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}", "got an object", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"m\"}", "got an array", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":1}", "got null", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":2.5,\"result\":1}", "got a real number", false },
                { "{\"jsonrpc\":\"2.0\",\"id\":true,\"error\":{\"code\":1,\"message\":\"x\"}}",
                  "got a boolean",
                  false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_unstructured_params(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":1}",
                  "\"params\" must be an object or an array, got an integer",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":\"x\"}", "got a string", true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":null}", "got null", true },
                { "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":false}", "got a boolean", false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_mixed_kinds(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1,\"message\":\"x\"}}",
                  "both \"result\" and \"error\"",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"result\":1}",
                  "request must not have \"result\" or \"error\"",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"error\":{}}",
                  "request must not have \"result\" or \"error\"",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"params\":{}}",
                  "response must not have \"params\"",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1}", "must have \"method\", \"result\" or \"error\"", true },
                { "{\"jsonrpc\":\"2.0\",\"params\":{}}",
                  "must have \"method\", \"result\" or \"error\"",
                  false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_response_without_id(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"result\":{}}", "response must have an \"id\"", false },
                { "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"x\"}}",
                  "response must have an \"id\"",
                  false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_classify_rejects_malformed_error_object(void **state) {
        static const struct bad_case cases[] = {
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"boom\"}",
                  "\"error\" must be an object, got a string",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":null}",
                  "\"error\" must be an object, got null",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"message\":\"x\"}}", "has no \"code\"", true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\",\"message\":\"x\"}}",
                  "\"error.code\" must be an integer, got a string",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1.5,\"message\":\"x\"}}",
                  "got a real number",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":4294967296,\"message\":\"x\"}}",
                  "\"error.code\" must be an integer",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}", "has no \"message\"", true },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":7}}",
                  "\"error.message\" must be a string, got an integer",
                  true },
                { "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":1}}", "has no \"message\"", false },
        };

        check_bad_cases(cases, ELEMENTSOF(cases));
}

static void test_error_keeps_request_id(void **state) {
        _cleanup_(json_decrefp) json_t *msg =
                parse("{\"jsonrpc\":\"1.0\",\"id\":\"req-7\",\"method\":\"x\"}");
        _cleanup_(json_decrefp) json_t *reply = NULL;
        _cleanup_free_ char *line = NULL;
        struct jsonrpc_error e = {};
        size_t len;

        assert_int_equal(jsonrpc_classify(msg, NULL, &e), -EBADMSG);
        assert_ptr_equal(e.id, json_object_get(msg, "id"));

        reply = jsonrpc_error_new(e.id, e.code, e.message, NULL);
        assert_non_null(reply);
        assert_int_equal(jsonrpc_format_line(reply, &line, &len), 0);
        assert_string_equal(
                line,
                "{\"jsonrpc\":\"2.0\",\"id\":\"req-7\",\"error\":{\"code\":-32600,"
                "\"message\":\"Member \\\"jsonrpc\\\" must be the string \\\"2.0\\\"\"}}\n");
}

/* ---- builders ---- */

static void test_request_new_builds_valid_request(void **state) {
        _cleanup_(json_decrefp) json_t *id = json_integer(1), *params = json_pack("{s:s}", "name", "x");
        _cleanup_(json_decrefp) json_t *req = NULL, *bare = NULL;
        _cleanup_free_ char *line = NULL, *bare_line = NULL;
        struct jsonrpc_message m;
        size_t len;

        req = jsonrpc_request_new(id, "tools/call", params);
        assert_non_null(req);
        assert_int_equal(jsonrpc_classify(req, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_REQUEST);
        assert_string_equal(m.method, "tools/call");
        assert_int_equal(jsonrpc_format_line(req, &line, &len), 0);
        assert_string_equal(
                line,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}\n");
        assert_int_equal(len, strlen(line));

        bare = jsonrpc_request_new(id, "ping", NULL);
        assert_non_null(bare);
        assert_int_equal(jsonrpc_format_line(bare, &bare_line, &len), 0);
        assert_string_equal(bare_line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
}

static void test_notification_new_has_no_id(void **state) {
        _cleanup_(json_decrefp) json_t *params = json_array(), *n = NULL;
        _cleanup_free_ char *line = NULL;
        struct jsonrpc_message m;
        size_t len;

        n = jsonrpc_notification_new("notifications/progress", params);
        assert_non_null(n);
        assert_int_equal(jsonrpc_classify(n, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_NOTIFICATION);
        assert_int_equal(jsonrpc_format_line(n, &line, &len), 0);
        assert_string_equal(
                line, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":[]}\n");
}

static void test_result_new_builds_response(void **state) {
        _cleanup_(json_decrefp) json_t *id = json_string("abc"), *result = json_object(), *a = NULL,
                                       *b = NULL;
        _cleanup_free_ char *line_a = NULL, *line_b = NULL;
        struct jsonrpc_message m;
        size_t len;

        a = jsonrpc_result_new(id, result);
        assert_non_null(a);
        assert_int_equal(jsonrpc_classify(a, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_RESPONSE);
        assert_int_equal(jsonrpc_format_line(a, &line_a, &len), 0);
        assert_string_equal(line_a, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"result\":{}}\n");

        /* NULL result: "result": null, still a success response. */
        b = jsonrpc_result_new(id, NULL);
        assert_non_null(b);
        assert_int_equal(jsonrpc_classify(b, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_RESPONSE);
        assert_int_equal(jsonrpc_format_line(b, &line_b, &len), 0);
        assert_string_equal(line_b, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"result\":null}\n");
}

static void test_error_new_builds_error_response(void **state) {
        _cleanup_(json_decrefp) json_t *id = json_integer(4), *data = json_pack("{s:s}", "field", "memory");
        _cleanup_(json_decrefp) json_t *a = NULL, *b = NULL, *c = NULL;
        _cleanup_free_ char *line_a = NULL, *line_b = NULL, *line_c = NULL;
        struct jsonrpc_message m;
        size_t len;

        a = jsonrpc_error_new(id, JSONRPC_INVALID_PARAMS, "bad size", data);
        assert_non_null(a);
        assert_int_equal(jsonrpc_classify(a, &m, NULL), 0);
        assert_int_equal(m.kind, JSONRPC_ERROR_RESPONSE);
        assert_int_equal(m.error_code, JSONRPC_INVALID_PARAMS);
        assert_string_equal(m.error_message, "bad size");
        assert_int_equal(jsonrpc_format_line(a, &line_a, &len), 0);
        assert_string_equal(
                line_a,
                "{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{\"code\":-32602,\"message\":\"bad size\",\"data\":{\"field\":\"memory\"}}}\n");

        /* No id known: "id": null, and no "data" member. */
        b = jsonrpc_error_new(NULL, JSONRPC_PARSE_ERROR, "Parse error", NULL);
        assert_non_null(b);
        assert_int_equal(jsonrpc_classify(b, &m, NULL), 0);
        assert_true(json_is_null(m.id));
        assert_int_equal(jsonrpc_format_line(b, &line_b, &len), 0);
        assert_string_equal(
                line_b,
                "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n");

        c = jsonrpc_error_new(json_null(), -32000, "x", NULL);
        assert_non_null(c);
        assert_int_equal(jsonrpc_format_line(c, &line_c, &len), 0);
        assert_string_equal(
                line_c, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"x\"}}\n");
}

static void test_builders_borrow_their_arguments(void **state) {
        json_t *id = json_integer(1), *params = json_object(), *data = json_array();
        json_t *req, *notif, *res, *err;

        assert_int_equal(id->refcount, 1);
        req = jsonrpc_request_new(id, "m", params);
        notif = jsonrpc_notification_new("n", params);
        res = jsonrpc_result_new(id, params);
        err = jsonrpc_error_new(id, 1, "x", data);
        assert_non_null(req);
        assert_non_null(notif);
        assert_non_null(res);
        assert_non_null(err);

        /* Each message holds its own reference; the caller still holds its one. */
        assert_int_equal(id->refcount, 4);
        assert_int_equal(params->refcount, 4);
        assert_int_equal(data->refcount, 2);
        assert_ptr_equal(json_object_get(req, "id"), id);
        assert_ptr_equal(json_object_get(res, "result"), params);

        json_decref(req);
        json_decref(notif);
        json_decref(res);
        json_decref(err);
        assert_int_equal(id->refcount, 1);
        assert_int_equal(params->refcount, 1);
        assert_int_equal(data->refcount, 1);

        json_decref(id);
        json_decref(params);
        json_decref(data);
}

static void test_builders_reject_invalid_arguments(void **state) {
        _cleanup_(json_decrefp) json_t *id = json_integer(1), *real_id = json_real(1.5),
                                       *obj = json_object(), *scalar = json_integer(3);

        errno = 0;
        assert_null(jsonrpc_request_new(NULL, "m", NULL));
        assert_int_equal(errno, EINVAL);
        errno = 0;
        assert_null(jsonrpc_request_new(json_null(), "m", NULL));
        assert_int_equal(errno, EINVAL);
        assert_null(jsonrpc_request_new(json_true(), "m", NULL));
        assert_null(jsonrpc_request_new(real_id, "m", NULL));
        assert_null(jsonrpc_request_new(obj, "m", NULL));
        assert_null(jsonrpc_request_new(id, NULL, NULL));
        assert_null(jsonrpc_request_new(id, "", NULL));
        errno = 0;
        assert_null(jsonrpc_request_new(id, "m", scalar));
        assert_int_equal(errno, EINVAL);
        errno = 0;
        assert_null(jsonrpc_request_new(id, "bad \xff utf-8", NULL));
        assert_int_equal(errno, EINVAL);

        assert_null(jsonrpc_notification_new(NULL, NULL));
        assert_null(jsonrpc_notification_new("", obj));
        assert_null(jsonrpc_notification_new("n", json_null()));

        assert_null(jsonrpc_result_new(NULL, obj));
        assert_null(jsonrpc_result_new(json_null(), obj));
        assert_null(jsonrpc_result_new(real_id, obj));

        errno = 0;
        assert_null(jsonrpc_error_new(json_false(), 1, "x", NULL));
        assert_int_equal(errno, EINVAL);
        assert_null(jsonrpc_error_new(id, 1, NULL, NULL));
        errno = 0;
        assert_null(jsonrpc_error_new(id, 1, "\xc3", NULL));
        assert_int_equal(errno, EINVAL);

        /* Failed calls took no references. */
        assert_int_equal(id->refcount, 1);
        assert_int_equal(obj->refcount, 1);
        assert_int_equal(scalar->refcount, 1);
}

/* ---- format ---- */

static void test_format_line_escapes_newlines(void **state) {
        _cleanup_(json_decrefp) json_t *msg = NULL, *back = NULL;
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024);
        _cleanup_free_ char *line = NULL;
        struct jsonrpc_error e = {};
        size_t len;

        msg = json_pack(
                "{s:s, s:s, s:{s:s, s:s}}",
                "jsonrpc",
                "2.0",
                "method",
                "log",
                "params",
                "text",
                "one\ntwo\r\nthree",
                "ctl",
                "\x01\x1f\t\x7f");
        assert_non_null(msg);
        assert_int_equal(jsonrpc_format_line(msg, &line, &len), 0);

        assert_int_equal(len, strlen(line));
        assert_true(len > 1);
        assert_int_equal(line[len - 1], '\n');
        assert_null(memchr(line, '\n', len - 1));
        assert_null(memchr(line, '\r', len));
        assert_non_null(strstr(line, "one\\ntwo\\r\\nthree"));
        assert_non_null(strstr(line, "\\u0001\\u001F\\t"));

        /* What the formatter writes, the reader reads back as the same message. */
        feed(r, line);
        assert_int_equal(jsonrpc_reader_next(r, &back, &e), 1);
        assert_true(json_equal(msg, back));
        expect_nothing(r);
}

static void test_format_line_is_compact(void **state) {
        _cleanup_(json_decrefp) json_t *msg =
                parse("{ \"jsonrpc\" : \"2.0\",\n \"id\" : 1,\n \"result\" : { \"a\" : [ 1, 2, { } ] } }");
        _cleanup_free_ char *line = NULL;
        size_t len;

        assert_int_equal(jsonrpc_format_line(msg, &line, &len), 0);
        assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"a\":[1,2,{}]}}\n");
        assert_int_equal(len, strlen(line));
}

static void test_format_line_rejects_non_objects(void **state) {
        _cleanup_(json_decrefp) json_t *array = parse("[1]"), *number = json_integer(1);
        char *line = NULL;
        size_t len = 0;

        assert_int_equal(jsonrpc_format_line(array, &line, &len), -EINVAL);
        assert_int_equal(jsonrpc_format_line(number, &line, &len), -EINVAL);
        assert_int_equal(jsonrpc_format_line(NULL, &line, &len), -EINVAL);
        assert_null(line);
        assert_int_equal(len, 0);
}

static void test_format_line_rejects_invalid_utf8(void **state) {
        _cleanup_(json_decrefp) json_t *msg = json_object();
        char *line = NULL;
        size_t len = 0;

        /* Only the unchecked constructor can make such a string; the formatter must not emit it. */
        assert_int_equal(json_object_set_new(msg, "m", json_stringn_nocheck("\xff", 1)), 0);
        assert_int_equal(jsonrpc_format_line(msg, &line, &len), -EINVAL);
        assert_null(line);
}

/* A long line's memory goes back once it is read, and the reader goes on: an idle connection must
 * not keep its biggest message's buffer. A line not yet complete keeps it. */
static void test_reader_gives_back_a_long_lines_memory(void **state) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *r = reader_new(1024 * 1024);
        size_t len = 300 * 1024;
        _cleanup_free_ char *line = malloc(len + 64);

        assert_non_null(line);
        memcpy(line, "{\"id\":1,\"s\":\"", 13);
        memset(line + 13, 'x', len);
        strcpy(line + 13 + len, "\"}");

        feed(r, line);
        expect_nothing(r);
        assert_true(jsonrpc_reader_allocated(r) > len); /* half a line: kept */
        feed(r, "\n");
        expect_message_with_id(r, 1);
        expect_nothing(r);
        assert_true(jsonrpc_reader_allocated(r) <= BYTE_QUEUE_KEEP);

        feed(r, "{\"id\":2}\n{\"id\":3");
        expect_message_with_id(r, 2);
        expect_nothing(r);
        feed(r, "}\n");
        expect_message_with_id(r, 3);
        expect_nothing(r);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reader_new_rejects_zero_max_line),
                cmocka_unit_test(test_reader_returns_zero_until_line_complete),
                cmocka_unit_test(test_reader_splits_message_across_feeds),
                cmocka_unit_test(test_reader_returns_several_messages_from_one_feed),
                cmocka_unit_test(test_reader_accepts_crlf_line_endings),
                cmocka_unit_test(test_reader_skips_blank_lines),
                cmocka_unit_test(test_reader_accepts_line_of_exactly_max_line),
                cmocka_unit_test(test_reader_survives_oversized_line),
                cmocka_unit_test(test_reader_skips_oversized_line_across_later_feeds),
                cmocka_unit_test(test_reader_oversized_line_ends_in_newline_only_feed),
                cmocka_unit_test(test_reader_reports_parse_error_and_continues),
                cmocka_unit_test(test_reader_rejects_trailing_garbage),
                cmocka_unit_test(test_reader_rejects_invalid_utf8),
                cmocka_unit_test(test_reader_rejects_nul_bytes),
                cmocka_unit_test(test_reader_rejects_duplicate_keys),
                cmocka_unit_test(test_reader_passes_json_scalars_to_classifier),
                cmocka_unit_test(test_reader_reassembles_large_message_from_small_feeds),
                cmocka_unit_test(test_classify_request),
                cmocka_unit_test(test_classify_request_with_array_or_no_params),
                cmocka_unit_test(test_classify_notification),
                cmocka_unit_test(test_classify_response),
                cmocka_unit_test(test_classify_error_response),
                cmocka_unit_test(test_classify_ignores_unknown_members),
                cmocka_unit_test(test_classify_rejects_batch_array),
                cmocka_unit_test(test_classify_rejects_non_objects),
                cmocka_unit_test(test_classify_rejects_missing_or_wrong_version),
                cmocka_unit_test(test_classify_rejects_bad_method),
                cmocka_unit_test(test_classify_rejects_bad_id_types),
                cmocka_unit_test(test_classify_rejects_unstructured_params),
                cmocka_unit_test(test_classify_rejects_mixed_kinds),
                cmocka_unit_test(test_classify_rejects_response_without_id),
                cmocka_unit_test(test_classify_rejects_malformed_error_object),
                cmocka_unit_test(test_error_keeps_request_id),
                cmocka_unit_test(test_request_new_builds_valid_request),
                cmocka_unit_test(test_notification_new_has_no_id),
                cmocka_unit_test(test_result_new_builds_response),
                cmocka_unit_test(test_error_new_builds_error_response),
                cmocka_unit_test(test_builders_borrow_their_arguments),
                cmocka_unit_test(test_builders_reject_invalid_arguments),
                cmocka_unit_test(test_format_line_escapes_newlines),
                cmocka_unit_test(test_format_line_is_compact),
                cmocka_unit_test(test_format_line_rejects_non_objects),
                cmocka_unit_test(test_format_line_rejects_invalid_utf8),
                cmocka_unit_test(test_scan_counts_elements_and_members),
                cmocka_unit_test(test_scan_skips_strings_and_their_escapes),
                cmocka_unit_test(test_scan_refuses_over_the_limits),
                cmocka_unit_test(test_reader_refuses_lines_over_its_limits_and_goes_on),
                cmocka_unit_test(test_reader_gives_back_a_long_lines_memory),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

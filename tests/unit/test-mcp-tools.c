/* Unit tests for mcp/tools.c and mcp/schema.c, ccdocker-mcp's pure parts: the tool table as tools/list
 * shows it (the tools of SPEC.md 2.4 that work, closed input schemas, output schemas), the argument
 * checks and their messages (the argument named, what it must be, a hint for a misspelt name), the
 * params of each tool's first channel request, the results projected onto the output schemas, the
 * messages for the daemon's error codes, and utf8_tail(); notify_user, ask_user and permission_prompt
 * (SPEC.md 2.7): their ranges, the daemon's lowest question timeout, the permission question. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "jsonrpc.h"
#include "schema.h"
#include "tools.h"
#include "unit-test.h"
#include "util.h"

static const char *const tool_names[] = {
        "spawn_child", "send_to_child",      "get_child_output", "get_child_result", "list_children",
        "stop_child",  "get_parent_context", "notify_user",      "ask_user",         "permission_prompt",
};

static int setup(void **state) {
        return tools_load() < 0 ? -1 : 0;
}

static int teardown(void **state) {
        tools_unload();
        return 0;
}

static json_t *parse(const char *text) {
        json_error_t err;
        json_t *j = json_loads(text, 0, &err);

        if (!j)
                fail_msg("bad JSON in the test: %s: %s", text, err.text);
        return j;
}

/* Checks arguments (JSON text) of a tool; returns the message of a refusal, or NULL if accepted. */
static char *refusal(const char *tool, const char *args_text) {
        _cleanup_(json_decrefp) json_t *args = args_text ? parse(args_text) : NULL, *checked = NULL;
        const Tool *t = tool_find(tool);
        char *message = NULL;
        int r;

        assert_non_null(t);
        r = tool_check_arguments(t, args, &checked, &message);
        if (r == 0) {
                assert_null(message);
                assert_true(json_is_object(checked));
                return NULL;
        }
        assert_int_equal(r, -EINVAL);
        assert_non_null(message);
        assert_true(startswith(message, tool) != NULL);
        return message;
}

static void assert_contains(const char *haystack, const char *needle) {
        if (!strstr(haystack, needle))
                fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* ---- the table ---- */

static void test_list_has_the_spec_tools_and_no_others(void **state) {
        _cleanup_(json_decrefp) json_t *list = tools_list();
        json_t *tool;
        size_t i;

        assert_int_equal(json_array_size(list), ELEMENTSOF(tool_names));
        json_array_foreach (list, i, tool) {
                assert_string_equal(json_string_value(json_object_get(tool, "name")), tool_names[i]);
                assert_non_null(tool_find(tool_names[i]));
        }
        assert_null(tool_find("spawn"));
}

static void test_every_tool_has_closed_input_and_an_output_schema(void **state) {
        _cleanup_(json_decrefp) json_t *list = tools_list();
        json_t *tool;
        size_t i;

        json_array_foreach (list, i, tool) {
                json_t *in = json_object_get(tool, "inputSchema"),
                       *out = json_object_get(tool, "outputSchema");
                json_t *props = json_object_get(in, "properties"), *name, *p;
                const char *key;
                size_t j;

                assert_true(strlen(json_string_value(json_object_get(tool, "description"))) > 80);
                assert_string_equal(json_string_value(json_object_get(in, "type")), "object");
                assert_true(json_is_false(json_object_get(in, "additionalProperties")));
                assert_true(json_is_object(props));
                json_object_foreach (props, key, p) {
                        /* The model reads these: every argument says what it is and has a type. */
                        assert_non_null(json_string_value(json_object_get(p, "description")));
                        assert_non_null(json_string_value(json_object_get(p, "type")));
                }
                json_array_foreach (json_object_get(in, "required"), j, name)
                        assert_non_null(json_object_get(props, json_string_value(name)));
                if (streq(json_string_value(json_object_get(tool, "name")), "permission_prompt")) {
                        /* Claude Code reads a permission prompt tool's answer from one text block. */
                        assert_null(out);
                        continue;
                }
                assert_string_equal(json_string_value(json_object_get(out, "type")), "object");
                json_array_foreach (json_object_get(out, "required"), j, name)
                        assert_non_null(json_object_get(
                                json_object_get(out, "properties"), json_string_value(name)));
        }
}

static void test_spec_argument_names(void **state) {
        static const struct {
                const char *tool, *args;
        } accepted[] = {
                { "spawn_child",
                  "{\"prompt\":\"Review auth.py\",\"context\":{\"file\":\"auth.py\"},\"task_type\":\"security-review\","
                  "\"stream_output\":true,\"timeout_seconds\":600}" },
                { "send_to_child",
                  "{\"child_session_id\":\"abc\",\"prompt\":\"more\",\"wait_for_result\":true}" },
                { "get_child_output",
                  "{\"child_session_id\":\"abc\",\"stream\":true,\"since_timestamp\":\"2026-11-25T14:03:07Z\"}" },
                { "get_child_output", "{\"child_session_id\":\"abc\",\"since_seq\":12}" },
                { "get_child_result",
                  "{\"child_session_id\":\"abc\",\"wait\":true,\"timeout_seconds\":60}" },
                { "list_children",
                  "{\"status_filter\":[\"running\",\"idle\"],\"include_completed\":false}" },
                { "list_children", NULL },
                { "stop_child", "{\"child_session_id\":\"abc\",\"force\":true}" },
                { "get_parent_context", "{}" },
                { "get_parent_context", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(accepted); i++) {
                _cleanup_free_ char *message = refusal(accepted[i].tool, accepted[i].args);

                if (message)
                        fail_msg("%s %s refused: %s", accepted[i].tool, strempty(accepted[i].args), message);
        }
}

/* ---- argument checks ---- */

static void test_missing_required_argument_is_named(void **state) {
        _cleanup_free_ char *a = refusal("spawn_child", "{}"),
                            *b = refusal("send_to_child", "{\"prompt\":\"x\"}");

        assert_string_equal(a, "spawn_child: argument 'prompt' is required (a non-empty string)");
        assert_contains(b, "argument 'child_session_id' is required");
}

static void test_unknown_argument_is_named_with_a_hint(void **state) {
        _cleanup_free_ char *a = refusal("send_to_child", "{\"child_id\":\"abc\",\"prompt\":\"x\"}"),
                            *b = refusal("get_child_result", "{\"child_session_id\":\"a\",\"timeout\":5}"),
                            *c = refusal("get_parent_context", "{\"verbose\":true}");

        assert_contains(a, "unknown argument 'child_id' (did you mean 'child_session_id'?)");
        assert_contains(a, "send_to_child takes child_session_id, prompt, wait_for_result, timeout_seconds");
        assert_contains(b, "unknown argument 'timeout' (did you mean 'timeout_seconds'?)");
        assert_string_equal(
                c, "get_parent_context: unknown argument 'verbose'; get_parent_context takes no arguments");
}

static void test_wrong_types_say_what_is_wanted_and_what_came(void **state) {
        _cleanup_free_ char *a = refusal("spawn_child", "{\"prompt\":\"x\",\"timeout_seconds\":\"600\"}"),
                            *b = refusal("spawn_child", "{\"prompt\":42}"),
                            *c = refusal("stop_child", "{\"child_session_id\":\"a\",\"force\":\"yes\"}"),
                            *d = refusal("spawn_child", "{\"prompt\":\"x\",\"context\":[1]}"),
                            *e = refusal("list_children", "{\"status_filter\":\"running\"}"),
                            *f = refusal("get_child_result", "[1]");

        assert_string_equal(
                a,
                "spawn_child: argument 'timeout_seconds' must be an integer from 1 to 86400, got a string");
        assert_string_equal(b, "spawn_child: argument 'prompt' must be a non-empty string, got 42");
        assert_string_equal(c, "stop_child: argument 'force' must be true or false, got a string");
        assert_string_equal(d, "spawn_child: argument 'context' must be a JSON object, got an array");
        assert_contains(e, "argument 'status_filter' must be an array of strings, each one of \"starting\"");
        assert_string_equal(f, "get_child_result: the arguments must be a JSON object, got an array");
}

static void test_ranges_lengths_patterns_and_enums(void **state) {
        _cleanup_free_ char
                *a = refusal("get_child_result", "{\"child_session_id\":\"a\",\"timeout_seconds\":0}"),
                *b = refusal("get_child_result", "{\"child_session_id\":\"a\",\"timeout_seconds\":3601}"),
                *c = refusal("get_child_result", "{\"child_session_id\":\"a\",\"timeout_seconds\":1.5}"),
                *d = refusal("spawn_child", "{\"prompt\":\"\"}"),
                *e = refusal("spawn_child", "{\"prompt\":\"x\",\"task_type\":\"two words\"}"),
                *f = refusal("list_children", "{\"status_filter\":[\"idle\",\"zombie\"]}"),
                *g = refusal("get_child_output", "{\"child_session_id\":\"a\",\"since_seq\":-1}");
        _cleanup_free_ char *args64 = NULL, *args65 = NULL, *h = NULL;

        assert_contains(a, "'timeout_seconds' must be an integer from 1 to 3600, got 0");
        assert_contains(b, "got 3601");
        assert_contains(c, "got 1.5");
        assert_string_equal(
                d, "spawn_child: argument 'prompt' must be a non-empty string, got an empty string");
        assert_contains(
                e,
                "argument 'task_type' must be a string matching ^[A-Za-z0-9._-]{1,64}$, got \"two words\"");
        assert_contains(
                f,
                "argument 'status_filter[1]' must be one of \"starting\", \"idle\", \"running\", \"stopped\", \"failed\", got \"zombie\"");
        assert_contains(g, "'since_seq' must be an integer of at least 0, got -1");

        /* task_type: at most 64 characters. */
        assert_true(asprintf(&args64, "{\"prompt\":\"x\",\"task_type\":\"%064d\"}", 0) > 0);
        assert_null(refusal("spawn_child", args64));
        assert_true(asprintf(&args65, "{\"prompt\":\"x\",\"task_type\":\"%065d\"}", 0) > 0);
        h = refusal("spawn_child", args65);
        assert_contains(h, "'task_type' must be a string matching");
}

static void test_since_seq_and_since_timestamp_exclude_each_other(void **state) {
        _cleanup_free_ char *a = refusal(
                "get_child_output",
                "{\"child_session_id\":\"a\",\"since_seq\":1,\"since_timestamp\":\"2026-01-01T00:00:00Z\"}");

        assert_contains(a, "since_seq or since_timestamp, not both");
}

static void test_integral_numbers_become_integers(void **state) {
        _cleanup_(json_decrefp) json_t *args = parse("{\"prompt\":\"x\",\"timeout_seconds\":600.0}"),
                                       *checked = NULL;
        _cleanup_free_ char *message = NULL;

        assert_int_equal(tool_check_arguments(tool_find("spawn_child"), args, &checked, &message), 0);
        assert_true(json_is_integer(json_object_get(checked, "timeout_seconds")));
        assert_int_equal(json_integer_value(json_object_get(checked, "timeout_seconds")), 600);
}

static void test_string_length_counts_characters(void **state) {
        /* 128 two-byte characters: 256 bytes, but 128 characters, the most a child_session_id may have. */
        char id[300] = "";
        _cleanup_free_ char *args = NULL, *args2 = NULL, *refused = NULL;

        for (int i = 0; i < 128; i++)
                strcat(id, "\xc3\xa9");
        assert_true(asprintf(&args, "{\"child_session_id\":\"%s\"}", id) > 0);
        assert_null(refusal("stop_child", args));
        assert_true(asprintf(&args2, "{\"child_session_id\":\"%sx\"}", id) > 0);
        refused = refusal("stop_child", args2);
        assert_contains(refused, "got 129 characters");
}

/* SPEC 2.7.2 and 2.7.3: every field out of its range, unknown fields, and the lengths in characters. */
static void test_human_tools_check_spec_ranges(void **state) {
        _cleanup_free_ char *a = refusal("notify_user", "{\"message\":\"\"}"),
                            *b = refusal("notify_user", "{\"message\":\"x\",\"priority\":\"high\"}"),
                            *c = refusal("notify_user", "{\"message\":\"x\",\"channel\":\"y\"}"),
                            *d = refusal("ask_user", "{\"question\":\"q\",\"timeout_seconds\":7201}"),
                            *e = refusal("ask_user", "{\"question\":\"q\",\"max_attempts\":0}"),
                            *f = refusal("ask_user", "{\"question\":\"q\",\"max_attempts\":6}"),
                            *g = refusal("ask_user", "{}"), *h = refusal("ask_user", "{\"question\":\"\"}"),
                            *i = refusal("ask_user", "{\"question\":\"q\",\"timeout\":60}"),
                            *j = refusal("permission_prompt", "{\"tool_name\":\"Bash\"}");
        _cleanup_free_ char *long2000 = NULL, *long2001 = NULL, *k = NULL, *l = NULL;
        char big[2002];

        assert_contains(a, "notify_user: argument 'message' must be a string of 1 to 2000 characters");
        assert_contains(b, "argument 'priority' must be one of \"normal\", \"urgent\", got \"high\"");
        assert_contains(c, "'channel'");
        assert_contains(d, "argument 'timeout_seconds' must be an integer from 1 to 7200, got 7201");
        assert_contains(e, "argument 'max_attempts' must be an integer from 1 to 5, got 0");
        assert_contains(f, "got 6");
        assert_contains(g, "'question'");
        assert_contains(h, "argument 'question' must be a string of 1 to 2000 characters");
        assert_contains(i, "'timeout'");
        assert_contains(j, "'input'");

        memset(big, 'x', 2001);
        big[2001] = '\0';
        assert_true(asprintf(&long2001, "{\"question\":\"%s\"}", big) > 0);
        k = refusal("ask_user", long2001);
        assert_contains(k, "got 2001 characters");
        big[2000] = '\0';
        assert_true(asprintf(&long2000, "{\"message\":\"%s\",\"priority\":\"urgent\"}", big) > 0);
        assert_null(refusal("notify_user", long2000));
        assert_null(refusal(
                "ask_user",
                "{\"question\":\"q\",\"timeout_seconds\":60,\"max_attempts\":5,\"priority\":\"normal\"}"));
        l = refusal("permission_prompt", "{\"tool_name\":\"two words\",\"input\":{}}");
        assert_contains(l, "'tool_name'");
}

/* The schema publishes 60 as ask_user's lowest timeout; the daemon's hello may say another. */
static void test_question_timeout_is_checked_against_the_daemons_lowest(void **state) {
        _cleanup_(json_decrefp) json_t *a = parse("{\"question\":\"q\",\"timeout_seconds\":5}"),
                                       *checked = NULL;
        _cleanup_free_ char *message = NULL, *refused = NULL;
        const Tool *ask = tool_find("ask_user");

        assert_int_equal(tool_check_arguments(ask, a, &checked, &message), 0);
        assert_null(tool_check_question_timeout(ask, checked, 5));
        refused = tool_check_question_timeout(ask, checked, 60);
        assert_non_null(refused);
        assert_string_equal(
                refused, "ask_user: argument 'timeout_seconds' must be an integer from 60 to 7200, got 5");
        assert_null(tool_check_question_timeout(tool_find("notify_user"), checked, 60));
        /* The published schema still says 60. */
        assert_int_equal(
                json_integer_value(json_object_get(
                        json_object_get(
                                json_object_get(
                                        json_object_get(ask->definition, "inputSchema"), "properties"),
                                "timeout_seconds"),
                        "minimum")),
                60);
}

static void test_permission_answer_is_one_text_block(void **state) {
        _cleanup_(json_decrefp) json_t *deny = parse("{\"behavior\":\"deny\",\"message\":\"no\"}"),
                                       *r = NULL;
        _cleanup_free_ char *message = NULL;
        json_t *content;

        assert_int_equal(tool_result(tool_find("permission_prompt"), deny, &r, &message), 0);
        assert_null(json_object_get(r, "structuredContent"));
        content = json_object_get(r, "content");
        assert_int_equal(json_array_size(content), 1);
        assert_string_equal(
                json_string_value(json_object_get(json_array_get(content, 0), "text")),
                "{\"behavior\":\"deny\",\"message\":\"no\"}");
}

static void test_permission_question_says_what_is_asked(void **state) {
        _cleanup_(json_decrefp) json_t *bash = parse("{\"command\":\"rm -rf build\",\"description\":\"d\"}"),
                                       *other = parse("{\"a\":1}");
        _cleanup_free_ char *a = tool_permission_question("Bash", bash),
                            *b = tool_permission_question("X", other), *c = NULL;
        _cleanup_(json_decrefp) json_t *big = NULL;
        char text[1001];

        assert_string_equal(a, "Allow Bash: rm -rf build?");
        assert_string_equal(b, "Allow X: {\"a\":1}?");
        memset(text, 'y', 1000);
        text[1000] = '\0';
        big = json_pack("{s:s}", "command", text);
        c = tool_permission_question("Bash", big);
        assert_true(strlen(c) < 400);
        assert_true(endswith(c, "...?"));
}

/* ---- channel params ---- */

static void assert_params(const char *tool, const char *args_text, const char *expected_text) {
        _cleanup_(json_decrefp) json_t *args = parse(args_text), *checked = NULL, *params = NULL,
                                       *expected = parse(expected_text);
        _cleanup_free_ char *message = NULL, *got = NULL;
        const Tool *t = tool_find(tool);

        assert_int_equal(tool_check_arguments(t, args, &checked, &message), 0);
        params = tool_channel_params(t, checked);
        assert_non_null(params);
        got = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
        if (!json_equal(params, expected))
                fail_msg("%s: params %s, expected %s", tool, got, expected_text);
}

static void test_channel_params_of_each_tool(void **state) {
        assert_string_equal(tool_find("spawn_child")->method, "child.spawn");
        assert_params(
                "spawn_child",
                "{\"prompt\":\"p\",\"context\":{\"k\":[1]},\"task_type\":\"t\",\"stream_output\":false}",
                "{\"prompt\":\"p\",\"context\":{\"k\":[1]},\"task_type\":\"t\",\"stream_output\":false}");
        assert_string_equal(tool_find("send_to_child")->method, "child.send");
        assert_params(
                "send_to_child",
                "{\"child_session_id\":\"c\",\"prompt\":\"p\",\"wait_for_result\":true,\"timeout_seconds\":9}",
                "{\"child_session_id\":\"c\",\"prompt\":\"p\"}");
        assert_string_equal(tool_find("get_child_output")->method, "child.output");
        assert_params(
                "get_child_output",
                "{\"child_session_id\":\"c\",\"stream\":true,\"since_seq\":4}",
                "{\"child_session_id\":\"c\",\"since_seq\":4,\"wait_seconds\":0}");
        assert_string_equal(tool_find("get_child_result")->method, "child.result");
        assert_params(
                "get_child_result",
                "{\"child_session_id\":\"c\"}",
                "{\"child_session_id\":\"c\",\"wait\":true,\"timeout_seconds\":300}");
        assert_params(
                "get_child_result",
                "{\"child_session_id\":\"c\",\"wait\":false}",
                "{\"child_session_id\":\"c\",\"wait\":false,\"timeout_seconds\":300}");
        assert_string_equal(tool_find("list_children")->method, "child.list");
        assert_params("list_children", "{\"include_completed\":false}", "{\"include_completed\":false}");
        assert_string_equal(tool_find("stop_child")->method, "child.stop");
        assert_params("stop_child", "{\"child_session_id\":\"c\"}", "{\"child_session_id\":\"c\"}");
        assert_string_equal(tool_find("get_parent_context")->method, "parent.context");
        assert_params("get_parent_context", "{}", "{}");
        assert_string_equal(tool_find("notify_user")->method, "human.notify");
        assert_params(
                "notify_user",
                "{\"message\":\"m\",\"priority\":\"urgent\"}",
                "{\"message\":\"m\",\"priority\":\"urgent\"}");
        assert_string_equal(tool_find("ask_user")->method, "human.ask");
        assert_params(
                "ask_user",
                "{\"question\":\"q\",\"timeout_seconds\":60,\"max_attempts\":2}",
                "{\"question\":\"q\",\"timeout_seconds\":60,\"max_attempts\":2,\"late_delivery\":\"prompt\"}");
        assert_string_equal(tool_find("permission_prompt")->method, "human.ask");
        assert_params(
                "permission_prompt",
                "{\"tool_name\":\"Bash\",\"input\":{\"command\":\"touch x\"},\"tool_use_id\":\"toolu_1\"}",
                "{\"question\":\"Allow Bash: touch x?\",\"kind\":\"permission\",\"tool\":{\"name\":\"Bash\","
                "\"input\":{\"command\":\"touch x\"}},\"timeout_seconds\":600,\"max_attempts\":1,\"priority\":\"urgent\"}");
}

/* ---- results ---- */

static void test_result_has_text_and_structured_content_fitting_the_schema(void **state) {
        _cleanup_(json_decrefp) json_t *
                answer = parse(
                       "{\"children\":[{\"session_id\":\"c1\",\"status\":\"idle\",\"created_at\":\"2026-11-25T14:03:01Z\","
                       "\"task_type\":null,\"depth\":1,\"secret_extra\":true}],\"more_extra\":1}"),
               *result = NULL,
               *expected = parse(
                       "{\"children\":[{\"session_id\":\"c1\",\"status\":\"idle\",\"created_at\":\"2026-11-25T14:03:01Z\","
                       "\"task_type\":null,\"depth\":1}]}"),
               *text = NULL;
        _cleanup_free_ char *message = NULL;
        json_t *content;

        assert_int_equal(tool_result(tool_find("list_children"), answer, &result, &message), 0);
        assert_true(json_equal(json_object_get(result, "structuredContent"), expected));
        assert_null(json_object_get(result, "isError"));
        content = json_array_get(json_object_get(result, "content"), 0);
        assert_string_equal(json_string_value(json_object_get(content, "type")), "text");
        assert_null(strchr(json_string_value(json_object_get(content, "text")), '\n'));
        text = parse(json_string_value(json_object_get(content, "text")));
        assert_true(json_equal(text, expected));
}

static void test_result_that_does_not_fit_is_refused(void **state) {
        _cleanup_(json_decrefp)
                json_t *a = parse("{\"status\":\"starting\"}"),
                       *b = parse("{\"child_session_id\":\"c\",\"status\":\"exploded\"}"),
                       *c = parse("{\"children\":[{\"session_id\":7}]}"),
                       *d = parse("{\"status\":\"completed\",\"usage\":\"lots\",\"result\":\"r\"}"),
                       *result = NULL;
        _cleanup_free_ char *ma = NULL, *mb = NULL, *mc = NULL, *md = NULL;

        assert_int_equal(tool_result(tool_find("spawn_child"), a, &result, &ma), -EBADMSG);
        assert_string_equal(ma, "'child_session_id' is missing");
        assert_int_equal(tool_result(tool_find("spawn_child"), b, &result, &mb), -EBADMSG);
        assert_contains(mb, "'status' must be one of \"starting\", \"idle\", \"running\", got \"exploded\"");
        assert_int_equal(tool_result(tool_find("list_children"), c, &result, &mc), -EBADMSG);
        assert_contains(mc, "'children[0].session_id' must be a string, got 7");
        /* An optional field of the wrong type is left out, not fatal. */
        assert_int_equal(tool_result(tool_find("get_child_result"), d, &result, &md), 0);
        assert_null(json_object_get(json_object_get(result, "structuredContent"), "usage"));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(result, "structuredContent"), "result")),
                "r");
}

static void test_parent_context_keeps_nulls_and_any_context(void **state) {
        _cleanup_(json_decrefp) json_t *
                top = parse(
                       "{\"session_id\":\"s\",\"parent_session_id\":null,\"depth\":0,\"task_type\":null,\"context\":null}"),
               *child = parse(
                       "{\"session_id\":\"c\",\"parent_session_id\":\"s\",\"depth\":1,\"task_type\":\"t\",\"context\":{\"a\":{\"b\":[1,2]}}}"),
               *r1 = NULL, *r2 = NULL;
        _cleanup_free_ char *m1 = NULL, *m2 = NULL;

        assert_int_equal(tool_result(tool_find("get_parent_context"), top, &r1, &m1), 0);
        assert_true(json_equal(json_object_get(r1, "structuredContent"), top));
        assert_int_equal(tool_result(tool_find("get_parent_context"), child, &r2, &m2), 0);
        assert_true(json_equal(json_object_get(r2, "structuredContent"), child));
}

static void test_error_result(void **state) {
        _cleanup_(json_decrefp) json_t *e = tool_errorf("spawn_child: %s", "no");
        json_t *content = json_array_get(json_object_get(e, "content"), 0);

        assert_true(json_is_true(json_object_get(e, "isError")));
        assert_string_equal(json_string_value(json_object_get(content, "text")), "spawn_child: no");
        assert_null(json_object_get(e, "structuredContent"));
}

static void test_channel_error_messages_say_what_to_do(void **state) {
        const Tool *spawn = tool_find("spawn_child"), *stop = tool_find("stop_child");
        _cleanup_free_ char *a = tool_channel_error_message(
                                    spawn, "child.spawn", -32001, "depth limit 3 reached"),
                            *b = tool_channel_error_message(
                                    stop, "child.stop", -32002, "no child session 'x' of this session"),
                            *c = tool_channel_error_message(
                                    spawn, "child.spawn", -32602, "params.prompt is empty"),
                            *d = tool_channel_error_message(spawn, "child.spawn", -32000, "podman failed"),
                            *e = tool_channel_error_message(
                                    spawn, "child.spawn", -32601, "unknown method 'child.spawn'"),
                            *f = tool_channel_error_message(spawn, "child.spawn", -32099, NULL);

        assert_contains(a, "spawn_child refused by a limit: depth limit 3 reached");
        assert_contains(a, "stop_child");
        assert_contains(b, "stop_child: no child session 'x' of this session");
        assert_contains(b, "list_children");
        assert_contains(c, "spawn_child: params.prompt is empty");
        assert_contains(d, "spawn_child failed: the cc-docker daemon could not do it: podman failed");
        assert_contains(e, "does not know 'child.spawn'");
        assert_contains(f, "error -32099: no reason given");
}

static void test_channel_error_messages_of_the_human_tools(void **state) {
        _cleanup_free_ char *a = tool_channel_error_message(
                                    tool_find("notify_user"), "human.notify", -32001, "10 notices a minute"),
                            *b = tool_channel_error_message(
                                    tool_find("ask_user"), "human.ask", -32003, "no surface can take it"),
                            *c = tool_channel_error_message(
                                    tool_find("ask_user"), "human.wait", -32002, "no interaction 'x'");

        assert_contains(a, "notify_user: 10 notices a minute. Send fewer");
        assert_contains(b, "ask_user: no surface can take it. No person can be reached now");
        assert_contains(c, "ask_user: no interaction 'x'. The question is no longer known");
        assert_null(strstr(c, "list_children"));
}

static void test_utf8_tail_starts_on_a_character(void **state) {
        assert_string_equal(utf8_tail("hello", 10), "hello");
        assert_string_equal(utf8_tail("hello", 3), "llo");
        /* "é" is two bytes: a tail of 3 bytes of "aéé" would start inside the first é. */
        assert_string_equal(utf8_tail("a\xc3\xa9\xc3\xa9", 3), "\xc3\xa9");
        assert_string_equal(utf8_tail("", 3), "");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_list_has_the_spec_tools_and_no_others),
                cmocka_unit_test(test_every_tool_has_closed_input_and_an_output_schema),
                cmocka_unit_test(test_spec_argument_names),
                cmocka_unit_test(test_missing_required_argument_is_named),
                cmocka_unit_test(test_unknown_argument_is_named_with_a_hint),
                cmocka_unit_test(test_wrong_types_say_what_is_wanted_and_what_came),
                cmocka_unit_test(test_ranges_lengths_patterns_and_enums),
                cmocka_unit_test(test_since_seq_and_since_timestamp_exclude_each_other),
                cmocka_unit_test(test_integral_numbers_become_integers),
                cmocka_unit_test(test_string_length_counts_characters),
                cmocka_unit_test(test_human_tools_check_spec_ranges),
                cmocka_unit_test(test_question_timeout_is_checked_against_the_daemons_lowest),
                cmocka_unit_test(test_permission_question_says_what_is_asked),
                cmocka_unit_test(test_permission_answer_is_one_text_block),
                cmocka_unit_test(test_channel_params_of_each_tool),
                cmocka_unit_test(test_result_has_text_and_structured_content_fitting_the_schema),
                cmocka_unit_test(test_result_that_does_not_fit_is_refused),
                cmocka_unit_test(test_parent_context_keeps_nulls_and_any_context),
                cmocka_unit_test(test_error_result),
                cmocka_unit_test(test_channel_error_messages_say_what_to_do),
                cmocka_unit_test(test_channel_error_messages_of_the_human_tools),
                cmocka_unit_test(test_utf8_tail_starts_on_a_character),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}

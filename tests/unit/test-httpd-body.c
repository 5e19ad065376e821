/* Unit tests for httpd/body.c: the JSON bodies of POST /sessions, POST .../spawn and POST .../prompts
 * turned into the daemon's a{sv} (built on a bus whose peer is a socketpair nobody answers, then sealed
 * and read back as the daemon would receive it). Covered: every field with its D-Bus type, the numeric
 * forms and ranges (the u32 limits at and past their edges, sizes as strings or bytes), every wrong JSON
 * type named with the field's dotted path and the type it got, unknown fields at each level, bad shapes
 * (a workspace or config that is not an object, array elements that are not strings), bodies at the
 * size the server lets through (BODY_MAX), and a message buffer too small for the refusal. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "cleanup.h"
#include "httpd.h"
#include "unit-test-bus.h"
#include "unit-test.h"
#include "util.h"

typedef struct Fixture {
        sd_bus *bus;
        int peer;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        unit_test_bus_new(&f->bus, &f->peer);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        sd_bus_close_unref(f->bus);
        f->peer = safe_close(f->peer);
        free(f);
        return 0;
}

typedef int (*convert_t)(json_t *body, sd_bus_message *m, char *msg, size_t size);

/* Appends text to a malloc'd string. */
static void add(char **s, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void add(char **s, const char *format, ...) {
        _cleanup_free_ char *piece = NULL;
        char *joined;
        va_list ap;

        va_start(ap, format);
        assert_true(vasprintf(&piece, format, ap) >= 0);
        va_end(ap);
        assert_true(asprintf(&joined, "%s%s", *s ?: "", piece) >= 0);
        free(*s);
        *s = joined;
}

/* The a{sv} of a sealed message as "key=type:value" words joined by spaces; arrays as [a,b], a{ss} as
 * {k=v,...}. */
static char *dump(sd_bus_message *m) {
        char *out = strdup("");
        int r;

        assert_non_null(out);
        assert_int_equal(sd_bus_message_seal(m, 1, 0), 0);
        assert_true(sd_bus_message_rewind(m, true) >= 0);
        assert_true(sd_bus_message_enter_container(m, 'a', "{sv}") > 0);
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;
                char type;

                assert_true(sd_bus_message_read(m, "s", &key) > 0);
                assert_true(sd_bus_message_peek_type(m, &type, &contents) > 0);
                assert_int_equal(type, 'v');
                add(&out, "%s%s=%s:", *out ? " " : "", key, contents);
                assert_true(sd_bus_message_enter_container(m, 'v', contents) > 0);
                if (streq(contents, "s")) {
                        const char *v;
                        assert_true(sd_bus_message_read(m, "s", &v) > 0);
                        add(&out, "%s", v);
                } else if (streq(contents, "u")) {
                        uint32_t v;
                        assert_true(sd_bus_message_read(m, "u", &v) > 0);
                        add(&out, "%u", v);
                } else if (streq(contents, "t")) {
                        uint64_t v;
                        assert_true(sd_bus_message_read(m, "t", &v) > 0);
                        add(&out, "%" PRIu64, v);
                } else if (streq(contents, "d")) {
                        double v;
                        assert_true(sd_bus_message_read(m, "d", &v) > 0);
                        add(&out, "%g", v);
                } else if (streq(contents, "b")) {
                        int v;
                        assert_true(sd_bus_message_read(m, "b", &v) > 0);
                        add(&out, "%s", v ? "true" : "false");
                } else if (streq(contents, "as")) {
                        const char *v;
                        bool first = true;
                        assert_true(sd_bus_message_enter_container(m, 'a', "s") > 0);
                        add(&out, "[");
                        while ((r = sd_bus_message_read(m, "s", &v)) > 0) {
                                add(&out, "%s%s", first ? "" : ",", v);
                                first = false;
                        }
                        assert_int_equal(r, 0);
                        assert_true(sd_bus_message_exit_container(m) > 0);
                        add(&out, "]");
                } else if (streq(contents, "a{ss}")) {
                        const char *k, *v;
                        bool first = true;
                        assert_true(sd_bus_message_enter_container(m, 'a', "{ss}") > 0);
                        add(&out, "{");
                        while ((r = sd_bus_message_read(m, "{ss}", &k, &v)) > 0) {
                                add(&out, "%s%s=%s", first ? "" : ",", k, v);
                                first = false;
                        }
                        assert_int_equal(r, 0);
                        assert_true(sd_bus_message_exit_container(m) > 0);
                        add(&out, "}");
                } else
                        fail_msg("unexpected variant type %s", contents);
                assert_true(sd_bus_message_exit_container(m) > 0);
                assert_true(sd_bus_message_exit_container(m) > 0);
        }
        assert_int_equal(r, 0);
        assert_true(sd_bus_message_exit_container(m) > 0);
        assert_true(sd_bus_message_at_end(m, true) > 0);
        return out;
}

static sd_bus_message *new_call(Fixture *f) {
        sd_bus_message *m = NULL;

        assert_int_equal(
                sd_bus_message_new_method_call(
                        f->bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "CreateSession"),
                0);
        return m;
}

/* Converts the body text and expects the a{sv} dumped as want. */
static void expect_ok(Fixture *f, convert_t convert, const char *body, const char *want) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = new_call(f);
        json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
        char msg[512] = "";
        _cleanup_free_ char *got = NULL;
        int r;

        assert_non_null(j);

        r = convert(j, m, msg, sizeof(msg));
        if (r < 0)
                fail_msg("%s refused: %s (%d)", body, msg, r);
        got = dump(m);
        json_decref(j);
        assert_string_equal(got, want);
}

/* Converts the body text and expects -EINVAL with exactly this message. */
static void expect_refused(Fixture *f, convert_t convert, const char *body, const char *want) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = new_call(f);
        json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
        char msg[512] = "";

        assert_non_null(j);
        assert_int_equal(convert(j, m, msg, sizeof(msg)), -EINVAL);
        json_decref(j);
        assert_string_equal(msg, want);
}

static int prompt_to_message(json_t *body, sd_bus_message *m, char *msg, size_t size) {
        const char *prompt = NULL;
        int r = body_prompt(body, &prompt, msg, size);

        if (r < 0)
                return r;
        /* As one entry, so that dump() can show it. */
        return sd_bus_message_append(m, "a{sv}", 1, "prompt", "s", prompt);
}

#define SESSION body_to_session_config
#define SPAWN body_to_spawn_options
#define PROMPT prompt_to_message

static void test_session_empty_body_is_an_empty_dict(void **state) {
        expect_ok(*state, SESSION, "{}", "");
}

static void test_session_every_field_with_its_type(void **state) {
        expect_ok(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"host\", \"path\": \"/srv/proj\"}, \"image\": \"localhost/img:1\","
                " \"task_type\": \"analysis\", \"prompt\": \"hello\", \"config\": {"
                " \"timeout_seconds\": 600, \"tasks\": 64, \"memory\": \"512M\", \"cpus\": 1.5,"
                " \"network\": \"none\", \"environment\": {\"A\": \"1\", \"B\": \"two\"},"
                " \"secrets\": [\"gh\"], \"allowed_hosts\": [\"example.com\", \"*.example.org\"],"
                " \"mcp_servers\": [], \"skills\": [\"review\"],"
                " \"claude_config\": {\"permission_mode\": \"plan\", \"allowed_tools\": [\"Read\", \"Grep\"]},"
                " \"mcp_overrides\": {\"fs\": {\"args\": [\"-v\"]}}}}",
                "workspace=s:/srv/proj image=s:localhost/img:1 task_type=s:analysis prompt=s:hello"
                " timeout_seconds=u:600 tasks=u:64 memory=s:512M cpus=d:1.5 network=s:none"
                " environment=a{ss}:{A=1,B=two} secrets=as:[gh] allowed_hosts=as:[example.com,*.example.org]"
                " mcp_servers=as:[] skills=as:[review] permission_mode=s:plan allowed_tools=as:[Read,Grep]"
                " mcp_overrides=s:{\"fs\":{\"args\":[\"-v\"]}}");
        expect_ok(*state, SESSION, "{\"workspace\": {\"type\": \"ephemeral\"}}", "workspace=s:ephemeral");
}

static void test_session_numeric_forms(void **state) {
        /* Sizes as the daemon's strings or as bytes; CPUs as a string, a real or an integer. */
        expect_ok(*state, SESSION, "{\"config\": {\"memory\": 268435456}}", "memory=t:268435456");
        expect_ok(*state, SESSION, "{\"config\": {\"cpus\": 2}}", "cpus=d:2");
        expect_ok(*state, SESSION, "{\"config\": {\"cpus\": \"0.5\"}}", "cpus=s:0.5");
        /* Values are the daemon's to check: the adapter passes them on as they are. */
        expect_ok(
                *state,
                SESSION,
                "{\"config\": {\"memory\": \"lots\", \"network\": \"moon\"}}",
                "memory=s:lots network=s:moon");
}

static void test_session_u32_limits(void **state) {
        expect_ok(*state, SESSION, "{\"config\": {\"timeout_seconds\": 0}}", "timeout_seconds=u:0");
        expect_ok(*state, SESSION, "{\"config\": {\"tasks\": 4294967295}}", "tasks=u:4294967295");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"tasks\": 4294967296}}",
                "field 'config.tasks' must be between 0 and 4294967295");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"timeout_seconds\": -1}}",
                "field 'config.timeout_seconds' must be between 0 and 4294967295");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"timeout_seconds\": 9223372036854775807}}",
                "field 'config.timeout_seconds' must be between 0 and 4294967295");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"timeout_seconds\": \"600\"}}",
                "field 'config.timeout_seconds' must be an integer, got a string");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"tasks\": 1.5}}",
                "field 'config.tasks' must be an integer, got a number");
}

static void test_session_wrong_types_are_named(void **state) {
        static const struct {
                const char *body, *message;
        } cases[] = {
                { "{\"image\": 5}", "field 'image' must be a string, got an integer" },
                { "{\"task_type\": [\"a\"]}", "field 'task_type' must be a string, got an array" },
                { "{\"prompt\": null}", "field 'prompt' must be a string, got null" },
                { "{\"config\": {\"memory\": 0}}",
                  "field 'config.memory' must be a size like \"512M\" or a positive number of bytes, got an integer" },
                { "{\"config\": {\"memory\": -5}}",
                  "field 'config.memory' must be a size like \"512M\" or a positive number of bytes, got an integer" },
                { "{\"config\": {\"memory\": true}}",
                  "field 'config.memory' must be a size like \"512M\" or a positive number of bytes, got a boolean" },
                { "{\"config\": {\"cpus\": {}}}",
                  "field 'config.cpus' must be a number of CPUs like 1.5, got an object" },
                { "{\"config\": {\"network\": false}}",
                  "field 'config.network' must be a string, \"none\" or \"host\", got a boolean" },
                { "{\"config\": {\"environment\": [\"A=1\"]}}",
                  "field 'config.environment' must be an object, got an array" },
                { "{\"config\": {\"environment\": {\"A\": \"1\", \"B\": 2}}}",
                  "field 'config.environment.B' must be a string, got an integer" },
                { "{\"config\": {\"secrets\": \"gh\"}}",
                  "field 'config.secrets' must be an array of strings, got a string" },
                { "{\"config\": {\"allowed_hosts\": [\"a\", 1]}}",
                  "field 'config.allowed_hosts[1]' must be a string, got an integer" },
                { "{\"config\": {\"mcp_servers\": [null]}}",
                  "field 'config.mcp_servers[0]' must be a string, got null" },
                { "{\"config\": {\"skills\": {}}}",
                  "field 'config.skills' must be an array of strings, got an object" },
                { "{\"config\": {\"claude_config\": []}}",
                  "field 'config.claude_config' must be an object, got an array" },
                { "{\"config\": {\"claude_config\": {\"permission_mode\": 1}}}",
                  "field 'config.claude_config.permission_mode' must be a string, got an integer" },
                { "{\"config\": {\"claude_config\": {\"allowed_tools\": [\"Read\", {}]}}}",
                  "field 'config.claude_config.allowed_tools[1]' must be a string, got an object" },
                { "{\"config\": {\"mcp_overrides\": \"{}\"}}",
                  "field 'config.mcp_overrides' must be an object of servers, got a string" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                expect_refused(*state, SESSION, cases[i].body, cases[i].message);
}

static void test_session_bad_shapes(void **state) {
        expect_refused(
                *state, SESSION, "{\"config\": [1, 2]}", "field 'config' must be an object, got an array");
        expect_refused(*state, SESSION, "{\"config\": null}", "field 'config' must be an object, got null");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": \"/srv\"}",
                "field 'workspace' must be an object, got a string");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {}}",
                "field 'workspace.type' must be a string, \"ephemeral\" or \"host\"");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"tmpfs\"}}",
                "field 'workspace.type' must be \"ephemeral\" or \"host\"");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"ephemeral\", \"path\": \"/srv\"}}",
                "field 'workspace.path' is only for a workspace of type \"host\"");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"host\"}}",
                "field 'workspace.path' must be a string, an absolute host path");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"host\", \"path\": 7}}",
                "field 'workspace.path' must be a string, an absolute host path");
}

static void test_session_unknown_fields_at_each_level(void **state) {
        expect_refused(*state, SESSION, "{\"colour\": \"blue\"}", "unknown field 'colour'");
        expect_refused(
                *state, SESSION, "{\"config\": {\"colour\": \"blue\"}}", "unknown field 'config.colour'");
        expect_refused(
                *state,
                SESSION,
                "{\"workspace\": {\"type\": \"ephemeral\", \"size\": 1}}",
                "unknown field 'workspace.size'");
        expect_refused(
                *state,
                SESSION,
                "{\"config\": {\"claude_config\": {\"model\": \"x\"}}}",
                "unknown field 'config.claude_config.model'");
        /* Daemon keys that SPEC.md 8.2 nests under config are not taken at the top level. */
        expect_refused(*state, SESSION, "{\"memory\": \"1G\"}", "unknown field 'memory'");
        /* The first bad field is named even after good ones. */
        expect_refused(
                *state,
                SESSION,
                "{\"image\": \"i\", \"config\": {\"tasks\": 3, \"budget\": 1}}",
                "unknown field 'config.budget'");
}

static void test_bodies_at_the_server_limit_pass_whole(void **state) {
        /* The server refuses bodies over BODY_MAX with 413; below it body.c takes what it is given. */
        _cleanup_free_ char *big = malloc(BODY_MAX - 64);
        _cleanup_free_ char *text = NULL, *want = NULL;

        assert_non_null(big);
        memset(big, 'x', BODY_MAX - 65);
        big[BODY_MAX - 65] = '\0';
        assert_true(asprintf(&text, "{\"prompt\": \"%s\"}", big) >= 0);
        assert_true(strlen(text) <= BODY_MAX);
        assert_true(asprintf(&want, "prompt=s:%s", big) >= 0);
        expect_ok(*state, SESSION, text, want);
        expect_ok(*state, PROMPT, text, want);
        free(want);
        want = NULL;
        assert_true(asprintf(&want, "prompt=s:%s", big) >= 0);
        expect_ok(*state, SPAWN, text, want);
}

static void test_environment_of_many_entries(void **state) {
        _cleanup_free_ char *text = strdup("{\"config\": {\"environment\": {"),
                            *want = strdup("environment=a{ss}:{");

        for (unsigned i = 0; i < 2000; i++) {
                add(&text, "%s\"V%u\": \"%u\"", i ? ", " : "", i, i * 7);
                add(&want, "%sV%u=%u", i ? "," : "", i, i * 7);
        }
        add(&text, "}}}");
        add(&want, "}");
        expect_ok(*state, SESSION, text, want);
}

static void test_refusal_fits_a_small_buffer(void **state) {
        Fixture *f = *state;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = new_call(f);
        json_t *j = json_loads("{\"a-very-long-unknown-field-name\": 1}", 0, NULL);
        char msg[17];

        assert_non_null(j);
        memset(msg, '#', sizeof(msg));
        assert_int_equal(body_to_session_config(j, m, msg, 16), -EINVAL);
        json_decref(j);
        /* Cut to the size given, terminated, and nothing written past it. */
        assert_string_equal(msg, "unknown field '");
        assert_int_equal(msg[16], '#');
}

static void test_prompt_body(void **state) {
        expect_ok(*state, PROMPT, "{\"prompt\": \"do it\"}", "prompt=s:do it");
        expect_ok(*state, PROMPT, "{\"prompt\": \"\"}", "prompt=s:");
        expect_refused(*state, PROMPT, "{}", "field 'prompt' is required");
        expect_refused(*state, PROMPT, "{\"prompt\": 3}", "field 'prompt' must be a string, got an integer");
        expect_refused(*state, PROMPT, "{\"prompt\": \"x\", \"urgent\": true}", "unknown field 'urgent'");
        expect_refused(*state, PROMPT, "{\"text\": \"x\"}", "unknown field 'text'");
}

static void test_spawn_options(void **state) {
        expect_ok(
                *state,
                SPAWN,
                "{\"prompt\": \"p\", \"task_type\": \"research\", \"timeout_seconds\": 300,"
                " \"stream_output\": true, \"context\": {\"files\": [\"a\"], \"n\": 1}}",
                "prompt=s:p task_type=s:research timeout_seconds=u:300 stream_output=b:true"
                " context=s:{\"files\":[\"a\"],\"n\":1}");
        expect_ok(*state, SPAWN, "{\"stream_output\": false}", "stream_output=b:false");
        expect_refused(
                *state,
                SPAWN,
                "{\"stream_output\": \"yes\"}",
                "field 'stream_output' must be a boolean, got a string");
        expect_refused(
                *state, SPAWN, "{\"context\": [1]}", "field 'context' must be an object, got an array");
        expect_refused(*state, SPAWN, "{\"prompt\": {}}", "field 'prompt' must be a string, got an object");
        expect_refused(
                *state, SPAWN, "{\"task_type\": 1.0}", "field 'task_type' must be a string, got a number");
        expect_refused(
                *state,
                SPAWN,
                "{\"timeout_seconds\": 4294967296}",
                "field 'timeout_seconds' must be between 0 and 4294967295");
        expect_refused(
                *state,
                SPAWN,
                "{\"timeout_seconds\": \"1\"}",
                "field 'timeout_seconds' must be an integer, got a string");
        /* Session fields are not spawn options: a child's limits come from its parent. */
        expect_refused(*state, SPAWN, "{\"image\": \"i\"}", "unknown field 'image'");
        expect_refused(*state, SPAWN, "{\"config\": {}}", "unknown field 'config'");
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_session_empty_body_is_an_empty_dict),
                T(test_session_every_field_with_its_type),
                T(test_session_numeric_forms),
                T(test_session_u32_limits),
                T(test_session_wrong_types_are_named),
                T(test_session_bad_shapes),
                T(test_session_unknown_fields_at_each_level),
                T(test_bodies_at_the_server_limit_pass_whole),
                T(test_environment_of_many_entries),
                T(test_refusal_fits_a_small_buffer),
                T(test_prompt_body),
                T(test_spawn_options),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}

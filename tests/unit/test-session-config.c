/* Unit tests for daemon/session-config.c: the SessionConfig's JSON round trip for the store (every field,
 * and the defaults' short form), the shapes from_json refuses, and what a child inherits from its
 * parent's config (session_config_inherit()). CreateSession's parsing is test-validate.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "session-config.h"
#include "unit-test.h"
#include "util.h"

static char **strv_of(const char *a, const char *b) {
        char **l = calloc(3, sizeof(char *));

        assert_non_null(l);
        l[0] = strdup(a);
        l[1] = b ? strdup(b) : NULL;
        assert_non_null(l[0]);
        return l;
}

/* A config with every field set, as CreateSession would have made it. */
static SessionConfig *full_config(void) {
        SessionConfig *c = calloc(1, sizeof(SessionConfig));

        assert_non_null(c);
        *c = (SessionConfig){
                .workspace_type = WORKSPACE_HOST,
                .workspace_path = strdup("/srv/projects/a"),
                .image = strdup("localhost/ccdocker-session:1"),
                .memory = UINT64_C(1) << 30,
                .cpu_millis = 500,
                .tasks = 128,
                .timeout_sec = 3600,
                .task_type = strdup("review \"quoted\""),
                .environment = strv_of("B=two\nlines", "A=1"),
                .network = strdup("host"),
                .context = strdup("{\"k\":[1,2]}"),
                .slice = strdup("ccdocker-s0123456789ab.slice"),
                .secrets = strv_of("github", NULL),
                .allowed_hosts = strv_of("api.github.com", "*.npmjs.org"),
                .mcp_servers = strv_of("ccdocker", NULL),
                .skills = strv_of("review", "lint"),
                .permission_mode = strdup("acceptEdits"),
                .allowed_tools = strv_of("Bash(git *)", NULL),
                .mcp_overrides = strdup("{\"ccdocker\":{\"timeout\":5}}"),
                .budget_usd = 2.5,
                .budget_tokens = 100000,
        };
        assert_non_null(c->workspace_path);
        assert_non_null(c->image);
        return c;
}

static void assert_strv_equal(char **a, char **b) {
        if (!a || !b) {
                assert_null(a);
                assert_null(b);
                return;
        }
        for (; *a && *b; a++, b++)
                assert_string_equal(*a, *b);
        assert_null(*a);
        assert_null(*b);
}

static void test_config_json_round_trip(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = full_config(), *back = NULL;
        _cleanup_free_ char *json = NULL, *again = NULL;

        json = session_config_to_json(c);
        assert_non_null(json);
        assert_int_equal(session_config_from_json(json, &back), 0);

        assert_int_equal(back->workspace_type, WORKSPACE_HOST);
        assert_string_equal(back->workspace_path, c->workspace_path);
        assert_string_equal(back->image, c->image);
        assert_true(back->memory == c->memory);
        assert_true(back->cpu_millis == 500);
        assert_true(back->tasks == c->tasks);
        assert_true(back->timeout_sec == c->timeout_sec);
        assert_string_equal(back->task_type, "review \"quoted\"");
        assert_strv_equal(back->environment, c->environment);
        assert_string_equal(back->network, "host");
        assert_string_equal(back->context, "{\"k\":[1,2]}");
        assert_string_equal(back->slice, c->slice);
        assert_strv_equal(back->secrets, c->secrets);
        assert_strv_equal(back->allowed_hosts, c->allowed_hosts);
        assert_strv_equal(back->mcp_servers, c->mcp_servers);
        assert_strv_equal(back->skills, c->skills);
        assert_string_equal(back->permission_mode, "acceptEdits");
        assert_strv_equal(back->allowed_tools, c->allowed_tools);
        assert_non_null(strstr(back->mcp_overrides, "\"timeout\""));
        assert_true(back->budget_usd == 2.5);
        assert_true(back->budget_tokens == 100000);
        /* The prompt is not stored. */
        assert_null(back->prompt);

        again = session_config_to_json(back);
        assert_string_equal(again, json);
}

static void test_config_json_leaves_out_what_is_unset(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL, *back = NULL;
        _cleanup_free_ char *json = NULL;

        c = calloc(1, sizeof(SessionConfig));
        assert_non_null(c);
        c->image = strdup("i");
        c->network = strdup("none");
        c->memory = 1;
        c->prompt = strdup("not kept");

        json = session_config_to_json(c);
        assert_non_null(json);
        assert_string_equal(
                json,
                "{\"workspace\":{\"type\":\"ephemeral\"},\"image\":\"i\",\"memory\":1,\"cpu_millis\":0,"
                "\"tasks\":0,\"timeout_sec\":0,\"network\":\"none\"}");
        assert_int_equal(session_config_from_json(json, &back), 0);
        assert_int_equal(back->workspace_type, WORKSPACE_EPHEMERAL);
        assert_null(back->workspace_path);
        assert_null(back->task_type);
        assert_null(back->environment);
        assert_null(back->context);
        assert_null(back->slice);
        assert_null(back->allowed_hosts);
        assert_null(back->prompt);
}

static void test_config_to_json_refuses_incomplete(void **state) {
        SessionConfig c = { .workspace_type = WORKSPACE_HOST,
                            .image = (char *) "i",
                            .network = (char *) "none" };

        errno = 0;
        assert_null(session_config_to_json(&c)); /* a host workspace without its path */
        assert_int_equal(errno, EINVAL);
        c.workspace_type = WORKSPACE_EPHEMERAL;
        c.context = (char *) "[1]"; /* a context must be an object */
        errno = 0;
        assert_null(session_config_to_json(&c));
        assert_int_equal(errno, EINVAL);
        errno = 0;
        assert_null(session_config_to_json(NULL));
        assert_int_equal(errno, EINVAL);
}

static void test_config_from_json_rejects_bad_shapes(void **state) {
        static const char *const bad[] = {
                "",
                "[]",
                "{}",
                "{\"workspace\":{\"type\":\"ephemeral\"},\"image\":\"i\",\"memory\":-1,\"cpu_millis\":1,"
                "\"tasks\":1,\"timeout_sec\":0,\"network\":\"none\"}",
                "{\"workspace\":{\"type\":\"host\"},\"image\":\"i\",\"memory\":1,\"cpu_millis\":1,"
                "\"tasks\":1,\"timeout_sec\":0,\"network\":\"none\"}",
                "{\"workspace\":{\"type\":\"ephemeral\"},\"image\":\"i\",\"memory\":1,\"cpu_millis\":1,"
                "\"tasks\":1,\"timeout_sec\":0,\"network\":\"none\",\"environment\":{\"A\":1}}",
                "{\"workspace\":{\"type\":\"ephemeral\"},\"image\":\"i\",\"image\":\"j\",\"memory\":1,"
                "\"cpu_millis\":1,\"tasks\":1,\"timeout_sec\":0,\"network\":\"none\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                SessionConfig *c = NULL;

                assert_int_equal(session_config_from_json(bad[i], &c), -EBADMSG);
                assert_null(c);
        }
}

static void test_config_inherit_copies_what_a_child_gets(void **state) {
        _cleanup_(session_config_freep) SessionConfig *parent = full_config(), *child = NULL;

        assert_int_equal(session_config_inherit(parent, &child), 0);

        /* The image, limits, network, environment, allowed hosts and Claude Code's configuration. */
        assert_string_equal(child->image, parent->image);
        assert_ptr_not_equal(child->image, parent->image);
        assert_true(child->memory == parent->memory);
        assert_true(child->cpu_millis == parent->cpu_millis);
        assert_true(child->tasks == parent->tasks);
        assert_true(child->timeout_sec == parent->timeout_sec);
        assert_string_equal(child->network, "host");
        assert_strv_equal(child->environment, parent->environment);
        assert_ptr_not_equal(child->environment, parent->environment);
        assert_strv_equal(child->allowed_hosts, parent->allowed_hosts);
        assert_strv_equal(child->mcp_servers, parent->mcp_servers);
        assert_strv_equal(child->skills, parent->skills);
        assert_strv_equal(child->allowed_tools, parent->allowed_tools);
        assert_string_equal(child->permission_mode, parent->permission_mode);
        assert_string_equal(child->mcp_overrides, parent->mcp_overrides);

        /* Its own ephemeral workspace, and none of the parent's task, context, secrets, budget or slice. */
        assert_int_equal(child->workspace_type, WORKSPACE_EPHEMERAL);
        assert_null(child->workspace_path);
        assert_null(child->task_type);
        assert_null(child->context);
        assert_null(child->slice);
        assert_null(child->secrets);
        assert_null(child->prompt);
        assert_true(child->budget_usd == 0);
        assert_true(child->budget_tokens == 0);
}

static void test_config_inherit_of_a_plain_parent(void **state) {
        _cleanup_(session_config_freep) SessionConfig *child = NULL;
        SessionConfig parent = { .image = (char *) "i", .network = (char *) "none", .memory = 7 };

        assert_int_equal(session_config_inherit(&parent, &child), 0);
        assert_string_equal(child->image, "i");
        assert_true(child->memory == 7);
        assert_null(child->environment);
        assert_null(child->allowed_hosts);
        assert_null(child->permission_mode);
        assert_null(child->mcp_overrides);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config_json_round_trip),
                cmocka_unit_test(test_config_json_leaves_out_what_is_unset),
                cmocka_unit_test(test_config_to_json_refuses_incomplete),
                cmocka_unit_test(test_config_from_json_rejects_bad_shapes),
                cmocka_unit_test(test_config_inherit_copies_what_a_child_gets),
                cmocka_unit_test(test_config_inherit_of_a_plain_parent),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

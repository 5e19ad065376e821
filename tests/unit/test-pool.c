/* Unit tests for daemon/pool.c's rule of what a warm pool's session can serve (docs/ccdockerd.md, "The
 * warm pool"): the default config and one with lower limits, any timeout, prompt or budget, yes; a
 * child, a host workspace, another image, secrets, environment, a network, allowed hosts, a task type,
 * Claude Code settings or limits above the defaults, no. Links the daemon's real core library. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "manager.h"
#include "pool.h"
#include "session-config.h"
#include "unit-test.h"
#include "util.h"
#include "validate.h"

typedef struct Fixture {
        Manager manager;
        SessionConfig *config;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        assert_int_equal(config_init(&f->manager.config, DAEMON_SYSTEM), 0);
        f->config = session_config_new_default(&f->manager.config);
        assert_non_null(f->config);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        session_config_free(f->config);
        config_done(&f->manager.config);
        free(f);
        return 0;
}

static char **strv1(const char *s) {
        char **l = calloc(2, sizeof(char *));

        assert_non_null(l);
        l[0] = strdup(s);
        assert_non_null(l[0]);
        return l;
}

static bool serves(Fixture *f) {
        return pool_can_serve(&f->manager, f->config, NULL);
}

static void test_pool_serves_the_default_config(void **state) {
        Fixture *f = *state;

        assert_true(serves(f));
        f->config->prompt = strdup("say hello");
        f->config->timeout_sec = 60;
        f->config->budget_tokens = 1000;
        f->config->memory = 256ULL << 20;
        f->config->cpu_millis = 500;
        f->config->tasks = 10;
        assert_true(serves(f));
}

static void test_pool_refuses_children(void **state) {
        Fixture *f = *state;
        Session parent = { .id = (char *) "0123456789ab" };

        assert_false(pool_can_serve(&f->manager, f->config, &parent));
}

static void test_pool_refuses_limits_above_the_defaults(void **state) {
        Fixture *f = *state;

        f->config->memory = f->manager.config.default_memory + 1;
        assert_false(serves(f));
        f->config->memory = f->manager.config.default_memory;
        f->config->cpu_millis = f->manager.config.default_cpu_millis + 1;
        assert_false(serves(f));
        f->config->cpu_millis = f->manager.config.default_cpu_millis;
        f->config->tasks = f->manager.config.default_tasks + 1;
        assert_false(serves(f));
}

static void test_pool_refuses_what_the_container_or_claude_md_would_differ_in(void **state) {
        Fixture *f = *state;

        f->config->workspace_type = WORKSPACE_HOST;
        assert_false(serves(f));
        f->config->workspace_type = WORKSPACE_EPHEMERAL;

        free(f->config->image);
        f->config->image = strdup("localhost/other:1");
        assert_false(serves(f));
        free(f->config->image);
        f->config->image = strdup(f->manager.config.default_image);
        assert_true(serves(f));

        free(f->config->network);
        f->config->network = strdup("host");
        assert_false(serves(f));
        free(f->config->network);
        f->config->network = strdup("none");

        f->config->task_type = strdup("review");
        assert_false(serves(f));
        f->config->task_type = mfree(f->config->task_type);

        f->config->secrets = strv1("GITHUB_TOKEN");
        assert_false(serves(f));
        strv_free(f->config->secrets);
        f->config->secrets = NULL;

        f->config->environment = strv1("X=1");
        assert_false(serves(f));
        strv_free(f->config->environment);
        f->config->environment = NULL;

        f->config->allowed_hosts = strv1("example.com:443");
        assert_false(serves(f));
        strv_free(f->config->allowed_hosts);
        f->config->allowed_hosts = NULL;

        f->config->permission_mode = strdup("plan");
        assert_false(serves(f));
        f->config->permission_mode = mfree(f->config->permission_mode);

        f->config->skills = strv1("delegate-task");
        assert_false(serves(f));
        strv_free(f->config->skills);
        f->config->skills = NULL;
        assert_true(serves(f));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_pool_serves_the_default_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pool_refuses_children, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_pool_refuses_limits_above_the_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_pool_refuses_what_the_container_or_claude_md_would_differ_in, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

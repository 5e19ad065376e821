/* Unit tests for daemon/validate.c: CreateSession's a{sv} parsed from real sd_bus_message objects (built
 * on a bus whose peer is a socketpair nobody answers, sealed and rewound as if received), the defaults,
 * every ceiling and policy check with the exact D-Bus error it gives, host workspaces against real
 * directories and symlinks in a mkdtemp() directory. The SessionConfig's JSON form is test-session-config.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "unit-test-bus.h"
#include "unit-test.h"
#include "util.h"
#include "validate.h"

typedef struct Fixture {
        sd_bus *bus;
        int peer; /* the other end of the bus's socketpair */
        DaemonConfig config;
        char base[64];
        char root[128], proj[160], file[160], escape[160], inner[160], outside[128];
        char *roots[2];
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        unit_test_bus_new(&f->bus, &f->peer);
        assert_int_equal(config_init(&f->config, DAEMON_SYSTEM), 0);

        /* base/root is the workspace root; base/root/escape leads out of it to base/outside. */
        strcpy(f->base, "/tmp/test-validate-XXXXXX");
        assert_non_null(mkdtemp(f->base));
        snprintf(f->root, sizeof f->root, "%s/root", f->base);
        snprintf(f->proj, sizeof f->proj, "%s/proj", f->root);
        snprintf(f->file, sizeof f->file, "%s/file", f->root);
        snprintf(f->escape, sizeof f->escape, "%s/escape", f->root);
        snprintf(f->inner, sizeof f->inner, "%s/inner", f->root);
        snprintf(f->outside, sizeof f->outside, "%s/outside", f->base);
        assert_int_equal(mkdir(f->root, 0700), 0);
        assert_int_equal(mkdir(f->proj, 0700), 0);
        assert_int_equal(mkdir(f->outside, 0700), 0);
        assert_int_equal(symlink(f->outside, f->escape), 0);
        assert_int_equal(symlink("proj", f->inner), 0);
        fclose(fopen(f->file, "we"));

        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        assert_int_equal(unlink(f->inner), 0);
        assert_int_equal(unlink(f->escape), 0);
        assert_int_equal(unlink(f->file), 0);
        assert_int_equal(rmdir(f->proj), 0);
        assert_int_equal(rmdir(f->root), 0);
        assert_int_equal(rmdir(f->outside), 0);
        assert_int_equal(rmdir(f->base), 0);
        /* The roots array points into the fixture; config_done() must not free it. */
        f->config.workspace_roots = NULL;
        config_done(&f->config);
        sd_bus_close_unref(f->bus);
        f->peer = safe_close(f->peer);
        free(f);
        return 0;
}

static void use_root(Fixture *f) {
        f->roots[0] = f->root;
        f->roots[1] = NULL;
        f->config.workspace_roots = f->roots;
}

static sd_bus_message *new_call(Fixture *f) {
        sd_bus_message *m = NULL;

        assert_int_equal(
                sd_bus_message_new_method_call(
                        f->bus,
                        &m,
                        "org.ccdocker1",
                        "/org/ccdocker1",
                        "org.ccdocker1.Manager",
                        "CreateSession"),
                0);
        return m;
}

/* Seals m as if it had been received and parses it. */
static int parse(Fixture *f, sd_bus_message *m, SessionConfig **ret, sd_bus_error *error) {
        assert_int_equal(sd_bus_message_seal(m, 1, 0), 0);
        assert_true(sd_bus_message_rewind(m, true) >= 0);
        return session_config_from_bus(m, &f->config, ret, error);
}

/* Appends the a{sv} given as sd_bus_message_append() arguments, parses it, and expects a refusal with
 * this error name and message. */
#define assert_refused(f, expect_name, expect_message, ...)                        \
        do {                                                                       \
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *_m = new_call(f); \
                _cleanup_(sd_bus_error_free) sd_bus_error _e = SD_BUS_ERROR_NULL;  \
                SessionConfig *_c = NULL;                                          \
                assert_true(sd_bus_message_append(_m, "a{sv}", __VA_ARGS__) >= 0); \
                assert_int_equal(parse((f), _m, &_c, &_e), -EINVAL);               \
                assert_null(_c);                                                   \
                assert_string_equal(_e.name, (expect_name));                       \
                assert_string_equal(_e.message, (expect_message));                 \
        } while (0)

#define parse_ok(f, ret, ...)                                                                 \
        do {                                                                                  \
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *_m = new_call(f);            \
                _cleanup_(sd_bus_error_free) sd_bus_error _e = SD_BUS_ERROR_NULL;             \
                int _r;                                                                       \
                assert_true(sd_bus_message_append(_m, "a{sv}", __VA_ARGS__) >= 0);            \
                _r = parse((f), _m, (ret), &_e);                                              \
                if (_r < 0)                                                                   \
                        fail_msg("refused: %s: %s", strempty(_e.name), strempty(_e.message)); \
        } while (0)

/* ---- defaults and values ---- */

static void test_validate_applies_defaults(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        Fixture *f = *state;

        parse_ok(f, &c, 0);
        assert_int_equal(c->workspace_type, WORKSPACE_EPHEMERAL);
        assert_null(c->workspace_path);
        assert_string_equal(c->image, "localhost/ccdocker-session:latest");
        assert_true(c->memory == 2ULL << 30);
        assert_true(c->cpu_millis == 1000);
        assert_true(c->tasks == 256);
        assert_true(c->timeout_sec == 3600);
        assert_null(c->task_type);
        assert_null(c->environment);
        assert_string_equal(c->network, "none");
}

static void test_validate_accepts_every_field(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        Fixture *f = *state;

        use_root(f);
        /* One key, type and value a line. */
        /* clang-format off */
        parse_ok(f, &c, 9,
                 "workspace", "s", f->proj,
                 "image", "s", "registry.example/cc@sha256:abc",
                 "memory", "s", "512M",
                 "cpus", "s", "1.5",
                 "tasks", "u", 100,
                 "timeout_seconds", "t", (uint64_t) 60,
                 "task_type", "s", "code-review",
                 "environment", "a{ss}", 2, "FOO", "bar", "_X1", "a=b c",
                 "network", "s", "none");
        /* clang-format on */
        assert_int_equal(c->workspace_type, WORKSPACE_HOST);
        assert_non_null(strstr(c->workspace_path, "/root/proj"));
        assert_string_equal(c->image, "registry.example/cc@sha256:abc");
        assert_true(c->memory == 512ULL << 20);
        assert_true(c->cpu_millis == 1500);
        assert_true(c->tasks == 100);
        assert_true(c->timeout_sec == 60);
        assert_string_equal(c->task_type, "code-review");
        assert_string_equal(c->environment[0], "FOO=bar");
        assert_string_equal(c->environment[1], "_X1=a=b c");
        assert_null(c->environment[2]);
        assert_string_equal(c->network, "none");
}

static void test_validate_accepts_numeric_forms(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        Fixture *f = *state;

        /* clang-format off */
        parse_ok(f, &c, 4,
                 "memory", "t", (uint64_t) (1ULL << 30),
                 "cpus", "d", 0.25,
                 "tasks", "t", (uint64_t) 1024,
                 "timeout_seconds", "u", 86400);
        /* clang-format on */
        assert_true(c->memory == 1ULL << 30);
        assert_true(c->cpu_millis == 250);
        assert_true(c->tasks == 1024);
        assert_true(c->timeout_sec == 86400);
}

/* ---- ceilings ---- */

static void test_validate_rejects_memory_over_ceiling(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'memory' must be at most 4G, got '8G'",
                1,
                "memory",
                "s",
                "8G");
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'memory' must be at most 4G, got '4294967297'",
                1,
                "memory",
                "t",
                (uint64_t) (4ULL << 30) + 1);
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'memory' must be at most 4G, got '99999999999999999999G'",
                1,
                "memory",
                "s",
                "99999999999999999999G");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'memory' must be a size like 2G or 512M, got '2 G'",
                1,
                "memory",
                "s",
                "2 G");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'memory' must be at least 6M, got '1M'",
                1,
                "memory",
                "s",
                "1M");
}

static void test_validate_rejects_cpus_tasks_timeout_over_ceiling(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'cpus' must be at most 2, got '2.5'",
                1,
                "cpus",
                "s",
                "2.5");
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'cpus' must be at most 2, got '3'",
                1,
                "cpus",
                "d",
                3.0);
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'cpus' must be a number of CPUs like 2 or 1.5, got '-1'",
                1,
                "cpus",
                "d",
                -1.0);
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'cpus' must be at least 0.001, got '0'",
                1,
                "cpus",
                "s",
                "0");
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'tasks' must be at most 1024, got '1025'",
                1,
                "tasks",
                "u",
                1025);
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'tasks' must be at least 1, got '0'",
                1,
                "tasks",
                "t",
                (uint64_t) 0);
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'timeout_seconds' must be at most 86400, got '86401'",
                1,
                "timeout_seconds",
                "u",
                86401);
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'timeout_seconds' must be at most 86400 (0, no limit, is not allowed), got '0'",
                1,
                "timeout_seconds",
                "u",
                0);
}

static void test_validate_allows_no_timeout_without_ceiling(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        Fixture *f = *state;

        f->config.max_timeout_sec = 0;
        parse_ok(f, &c, 1, "timeout_seconds", "u", 0);
        assert_true(c->timeout_sec == 0);
}

/* ---- types and keys ---- */

static void test_validate_rejects_wrong_variant_type_naming_field(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'tasks' must be of type u or t, got 's'",
                1,
                "tasks",
                "s",
                "12");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'memory' must be of type s or t, got 'u'",
                1,
                "memory",
                "u",
                1024);
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'workspace' must be of type s, got 'as'",
                1,
                "workspace",
                "as",
                1,
                "ephemeral");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'environment' must be of type a{ss}, got 'a{sv}'",
                1,
                "environment",
                "a{sv}",
                1,
                "A",
                "s",
                "b");
}

static void test_validate_rejects_unknown_field(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: unknown field 'foo'",
                2,
                "memory",
                "s",
                "1G",
                "foo",
                "s",
                "x");
        /* Refused before its value is looked at, whatever its type. */
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: unknown field 'Memory'",
                1,
                "Memory",
                "u",
                5);
        /* What is echoed back is made safe to print. */
        assert_refused(
                f, CCDOCKER_ERROR_INVALID_CONFIG, "CreateSession: unknown field 'a?b'", 1, "a\nb", "u", 5);
}

static void test_validate_rejects_duplicate_field(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'memory' must be given at most once",
                2,
                "memory",
                "s",
                "1G",
                "memory",
                "s",
                "2G");
}

static void test_validate_rejects_message_not_a_dict(void **state) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = new_call(*state);
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        SessionConfig *c = NULL;

        assert_true(sd_bus_message_append(m, "s", "memory") >= 0);
        assert_int_equal(parse(*state, m, &c, &e), -EINVAL);
        assert_null(c);
        assert_string_equal(e.name, CCDOCKER_ERROR_INVALID_CONFIG);
        assert_non_null(startswith(e.message, "CreateSession: the configuration must be of type a{sv}"));
}

/* ---- workspace ---- */

static void test_validate_refuses_host_workspace_outside_roots(void **state) {
        _cleanup_free_ char *dotdot = NULL, *through = NULL, *msg = NULL;
        Fixture *f = *state;

        /* No roots configured: host workspaces are refused altogether. */
        assert_true(
                asprintf(
                        &msg,
                        "CreateSession: field 'workspace' must be \"ephemeral\": no host workspace roots are configured (WorkspaceRoots=), got '%s'",
                        f->proj) > 0);
        assert_refused(f, CCDOCKER_ERROR_INVALID_CONFIG, msg, 1, "workspace", "s", f->proj);
        msg = mfree(msg);

        use_root(f);

        /* Outside, as written. */
        assert_true(
                asprintf(
                        &msg,
                        "CreateSession: field 'workspace' must lie below a configured workspace root, got '%s'",
                        f->outside) > 0);
        assert_refused(f, CCDOCKER_ERROR_INVALID_CONFIG, msg, 1, "workspace", "s", f->outside);
        msg = mfree(msg);

        /* A root that is only a prefix of the path's name does not count. */
        assert_true(asprintf(&through, "%sx", f->root) > 0);
        assert_true(
                asprintf(
                        &msg,
                        "CreateSession: field 'workspace' must lie below a configured workspace root, got '%s'",
                        through) > 0);
        assert_refused(f, CCDOCKER_ERROR_INVALID_CONFIG, msg, 1, "workspace", "s", through);
        msg = mfree(msg);
        through = mfree(through);

        /* ".." is refused outright, even where it would stay inside. */
        assert_true(asprintf(&dotdot, "%s/../outside", f->root) > 0);
        assert_true(
                asprintf(
                        &msg,
                        "CreateSession: field 'workspace' must be a path without \"..\", got '%s'",
                        dotdot) > 0);
        assert_refused(f, CCDOCKER_ERROR_INVALID_CONFIG, msg, 1, "workspace", "s", dotdot);
        msg = mfree(msg);

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'workspace' must be \"ephemeral\" or an absolute path, got 'proj'",
                1,
                "workspace",
                "s",
                "proj");
}

/* Validation looks at nothing on disk (so its errors tell no one what exists): a path below a root
 * as written passes here, missing, a file or a symlink out of the root alike, normalised and not
 * resolved. What it is on disk is checked later, with the caller's rights (test-workspace.c). */
static void test_validate_leaves_the_disk_to_the_callers_check(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        _cleanup_free_ char *missing = NULL, *messy = NULL, *proj = NULL;
        Fixture *f = *state;

        use_root(f);
        assert_true(asprintf(&missing, "%s/missing", f->root) > 0);
        assert_true(asprintf(&messy, "%s//./proj/", f->root) > 0);
        assert_true(asprintf(&proj, "%s/proj", f->root) > 0);

        const char *paths[] = { missing, f->file, f->escape, f->inner };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                parse_ok(f, &c, 1, "workspace", "s", paths[i]);
                assert_int_equal(c->workspace_type, WORKSPACE_HOST);
                assert_string_equal(c->workspace_path, paths[i]);
                assert_false(c->workspace_checked);
                c = session_config_free(c);
        }
        parse_ok(f, &c, 1, "workspace", "s", messy);
        assert_string_equal(c->workspace_path, proj);
        c = session_config_free(c);

        /* The root itself may be the workspace. */
        parse_ok(f, &c, 1, "workspace", "s", f->root);
        assert_int_equal(c->workspace_type, WORKSPACE_HOST);
}

/* ---- network, environment, task type, image ---- */

static void test_validate_refuses_host_network_unless_allowed(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'network' may be \"host\" only where the daemon is configured with AllowHostNetwork=yes, got 'host'",
                1,
                "network",
                "s",
                "host");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'network' must be \"none\" or \"host\", got 'bridge'",
                1,
                "network",
                "s",
                "bridge");

        f->config.allow_host_network = true;
        parse_ok(f, &c, 1, "network", "s", "host");
        assert_string_equal(c->network, "host");
}

static void test_validate_checks_environment(void **state) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *big = NULL;
        Fixture *f = *state;
        SessionConfig *c = NULL;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'environment' names must match [A-Za-z_][A-Za-z0-9_]*, got '1X'",
                1,
                "environment",
                "a{ss}",
                1,
                "1X",
                "v");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'environment' names must match [A-Za-z_][A-Za-z0-9_]*, got 'A-B'",
                1,
                "environment",
                "a{ss}",
                1,
                "A-B",
                "v");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'environment' names must match [A-Za-z_][A-Za-z0-9_]*, got ''",
                1,
                "environment",
                "a{ss}",
                1,
                "",
                "v");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'environment' names must be unique, got 'A' twice",
                1,
                "environment",
                "a{ss}",
                2,
                "A",
                "1",
                "A",
                "2");

        /* "A=" and 4094 bytes: 4096 is the most. */
        big = malloc(4096);
        assert_non_null(big);
        memset(big, 'x', 4095);
        big[4094] = '\0';
        {
                _cleanup_(session_config_freep) SessionConfig *ok = NULL;
                parse_ok(f, &ok, 1, "environment", "a{ss}", 1, "A", big);
        }
        big[4094] = 'x';
        big[4095] = '\0';
        assert_refused(
                f,
                CCDOCKER_ERROR_LIMIT,
                "CreateSession: field 'environment' entries must be at most 4096 bytes as NAME=value, got '4097' for 'A'",
                1,
                "environment",
                "a{ss}",
                1,
                "A",
                big);

        /* 65 entries. */
        m = new_call(f);
        assert_true(sd_bus_message_open_container(m, 'a', "{sv}") >= 0);
        assert_true(sd_bus_message_open_container(m, 'e', "sv") >= 0);
        assert_true(sd_bus_message_append(m, "s", "environment") >= 0);
        assert_true(sd_bus_message_open_container(m, 'v', "a{ss}") >= 0);
        assert_true(sd_bus_message_open_container(m, 'a', "{ss}") >= 0);
        for (unsigned i = 0; i < 65; i++) {
                char name[16];

                snprintf(name, sizeof name, "V%u", i);
                assert_true(sd_bus_message_append(m, "{ss}", name, "x") >= 0);
        }
        for (unsigned i = 0; i < 4; i++)
                assert_true(sd_bus_message_close_container(m) >= 0);
        assert_int_equal(parse(f, m, &c, &e), -EINVAL);
        assert_null(c);
        assert_string_equal(e.name, CCDOCKER_ERROR_LIMIT);
        assert_string_equal(
                e.message, "CreateSession: field 'environment' must have at most 64 entries, got '65'");
}

static void test_validate_checks_mcp_overrides(void **state) {
        Fixture *f = *state;

        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.x.type' must be stdio or http, got 'websocket'",
                1,
                "mcp_overrides",
                "s",
                "{\"x\":{\"type\":\"websocket\",\"url\":\"https://a.example/mcp\"}}");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.filesystem.command' must be a program of the image (a "
                "name in its PATH, or a path under /usr, /opt or /bin), got '/workspace/evil.sh'",
                1,
                "mcp_overrides",
                "s",
                "{\"filesystem\":{\"command\":\"/workspace/evil.sh\"}}");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.filesystem.command' must be a program of the image (a "
                "name in its PATH, or a path under /usr, /opt or /bin), got '/usr/../tmp/x'",
                1,
                "mcp_overrides",
                "s",
                "{\"filesystem\":{\"command\":\"/usr/../tmp/x\"}}");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.custom.headers.Authorization' names secret 'MY_TOKEN', "
                "which the session is not granted (field 'secrets')",
                2,
                "secrets",
                "as",
                1,
                "OTHER",
                "mcp_overrides",
                "s",
                "{\"custom\":{\"type\":\"http\",\"url\":\"https://a.example/mcp\","
                "\"headers\":{\"Authorization\":\"Bearer ${MY_TOKEN}\"}}}");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.x.cmd' is not a key of an MCP server (type, command, args, "
                "env, url, headers, description)",
                1,
                "mcp_overrides",
                "s",
                "{\"x\":{\"cmd\":\"sh\"}}");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'mcp_overrides.x.url' is needed by type http",
                1,
                "mcp_overrides",
                "s",
                "{\"x\":{\"type\":\"http\"}}");
        {
                _cleanup_(session_config_freep) SessionConfig *ok = NULL;

                /* The secret may come after the override naming it. */
                parse_ok(
                        f,
                        &ok,
                        2,
                        "mcp_overrides",
                        "s",
                        "{\"filesystem\":{\"args\":[\"/workspace\",\"/custom/path\"]},"
                        "\"custom\":{\"type\":\"http\",\"url\":\"https://a.example/mcp\","
                        "\"headers\":{\"Authorization\":\"Bearer ${MY_TOKEN}\"}},"
                        "\"tool\":{\"command\":\"/opt/cc-docker/bin/ccdocker-mcp\"},\"npx\":{\"command\":\"npx\"}}",
                        "secrets",
                        "as",
                        1,
                        "MY_TOKEN");
                assert_non_null(ok);
        }
}

static void test_validate_checks_task_type_and_image(void **state) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        char long_type[66];
        Fixture *f = *state;

        memset(long_type, 'a', 65);
        long_type[65] = '\0';
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'task_type' must be at most 64 printable ASCII characters, got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'",
                1,
                "task_type",
                "s",
                long_type);
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'task_type' must be at most 64 printable ASCII characters, got 'a?b'",
                1,
                "task_type",
                "s",
                "a\tb");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'image' must be an image reference without spaces like localhost/ccdocker-session:latest, got ''",
                1,
                "image",
                "s",
                "");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'image' must be an image reference without spaces like localhost/ccdocker-session:latest, got 'a b'",
                1,
                "image",
                "s",
                "a b");
        assert_refused(
                f,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'image' must be an image reference without spaces like localhost/ccdocker-session:latest, got '--privileged'",
                1,
                "image",
                "s",
                "--privileged");

        long_type[64] = '\0';
        parse_ok(f, &c, 2, "task_type", "s", long_type, "image", "s", "docker.io/library/alpine:3");
        assert_string_equal(c->task_type, long_type);
        assert_string_equal(c->image, "docker.io/library/alpine:3");
        c = session_config_free(c);

        /* An empty task type is no task type. */
        parse_ok(f, &c, 1, "task_type", "s", "");
        assert_null(c->task_type);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_validate_applies_defaults),
                T(test_validate_accepts_every_field),
                T(test_validate_accepts_numeric_forms),
                T(test_validate_rejects_memory_over_ceiling),
                T(test_validate_rejects_cpus_tasks_timeout_over_ceiling),
                T(test_validate_allows_no_timeout_without_ceiling),
                T(test_validate_rejects_wrong_variant_type_naming_field),
                T(test_validate_rejects_unknown_field),
                T(test_validate_rejects_duplicate_field),
                T(test_validate_rejects_message_not_a_dict),
                T(test_validate_refuses_host_workspace_outside_roots),
                T(test_validate_leaves_the_disk_to_the_callers_check),
                T(test_validate_refuses_host_network_unless_allowed),
                T(test_validate_checks_environment),
                T(test_validate_checks_mcp_overrides),
                T(test_validate_checks_task_type_and_image),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}

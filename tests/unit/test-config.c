/* Unit tests for daemon/config.c: the defaults of each mode, every kind of value the keys take, the
 * file syntax (comments, the section header, whitespace around '='), errors that name the file and
 * line, and the cross-field checks of config_verify(). Files are real, in a mkdtemp() directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "unit-test.h"
#include "util.h"

/* ---- helpers ---- */

static int capture_fd = -EBADF, saved_stderr = -EBADF;

static void capture_start(void) {
        capture_fd = memfd_create("stderr", MFD_CLOEXEC);
        assert_true(capture_fd >= 0);
        saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        assert_true(saved_stderr >= 0);
        assert_int_equal(dup2(capture_fd, STDERR_FILENO), STDERR_FILENO);
}

/* Restores stderr and returns what was written to it meanwhile. */
static char *capture_stop(void) {
        struct stat st;
        char *buf;

        assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
        saved_stderr = safe_close(saved_stderr);
        assert_int_equal(fstat(capture_fd, &st), 0);
        buf = calloc(1, (size_t) st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(pread(capture_fd, buf, (size_t) st.st_size, 0), st.st_size);
        capture_fd = safe_close(capture_fd);
        return buf;
}

typedef struct Fixture {
        char dir[64];
        char path[128];
        DaemonConfig config;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-config-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/ccdockerd.conf", f->dir);
        assert_int_equal(config_init(&f->config, DAEMON_SYSTEM), 0);
        log_set_target(LOG_TARGET_STDERR);
        log_set_prefix("test-config");
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        config_done(&f->config);
        (void) unlink(f->path);
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

static void write_file(const char *path, const char *text) {
        _cleanup_fclose_ FILE *file = fopen(path, "we");

        assert_non_null(file);
        assert_int_equal(fputs(text, file) >= 0, 1);
}

/* Loads text as the configuration file, with stderr captured into *ret_log if not NULL. */
static int load(Fixture *f, const char *text, char **ret_log) {
        _cleanup_free_ char *out = NULL;
        int r;

        write_file(f->path, text);
        capture_start();
        r = config_load_file(&f->config, f->path, true);
        out = capture_stop();
        if (ret_log)
                *ret_log = TAKE_PTR(out);
        return r;
}

/* ---- defaults ---- */

static void test_config_system_defaults(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_int_equal(c->mode, DAEMON_SYSTEM);
        assert_string_equal(c->systemd_bus, "system");
        assert_string_equal(c->state_dir, "/var/lib/ccdocker");
        assert_string_equal(c->podman_socket, "/run/podman/podman.sock");
        assert_string_equal(c->default_image, "localhost/ccdocker-session:latest");
        assert_null(c->session_command);
        assert_true(c->default_memory == 2ULL << 30);
        assert_true(c->max_memory == 4ULL << 30);
        assert_true(c->default_cpu_millis == 1000);
        assert_true(c->max_cpu_millis == 2000);
        assert_true(c->default_tasks == 256);
        assert_true(c->max_tasks == 1024);
        assert_true(c->default_timeout_sec == 3600);
        assert_true(c->max_timeout_sec == 86400);
        assert_true(c->stop_timeout_sec == 10);
        assert_true(c->podman_timeout_sec == 120);
        assert_int_equal(c->max_sessions, 64);
        assert_string_equal(c->runtime, "podman");
        assert_string_equal(c->docker_socket, "/run/docker.sock");
        assert_false(c->allow_host_network);
        assert_null(c->workspace_roots);
        assert_int_equal(config_verify(c), 0);
}

static void test_config_user_defaults_follow_xdg(void **state) {
        DaemonConfig c = {};

        assert_int_equal(setenv("XDG_STATE_HOME", "/xdg/state", 1), 0);
        assert_int_equal(setenv("XDG_RUNTIME_DIR", "/xdg/run", 1), 0);
        assert_int_equal(config_init(&c, DAEMON_USER), 0);
        assert_string_equal(c.systemd_bus, "user");
        assert_string_equal(c.state_dir, "/xdg/state/ccdocker");
        assert_string_equal(c.podman_socket, "/xdg/run/podman/podman.sock");
        assert_int_equal(config_verify(&c), 0);
        config_done(&c);

        /* A relative XDG_STATE_HOME is to be ignored, says the specification. */
        assert_int_equal(setenv("XDG_STATE_HOME", "relative", 1), 0);
        assert_int_equal(setenv("HOME", "/home/someone", 1), 0);
        assert_int_equal(config_init(&c, DAEMON_USER), 0);
        assert_string_equal(c.state_dir, "/home/someone/.local/state/ccdocker");
        config_done(&c);

        assert_int_equal(unsetenv("XDG_STATE_HOME"), 0);
        assert_int_equal(config_init(&c, DAEMON_USER), 0);
        assert_string_equal(c.state_dir, "/home/someone/.local/state/ccdocker");
        config_done(&c);
        config_done(&c); /* twice is harmless */
}

/* ---- values ---- */

static void test_config_parses_sizes_and_cpus(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_int_equal(
                load(f,
                     "DefaultMemory=512M\n"
                     "MaxMemory=8G\n"
                     "DefaultCPUs=0.5\n"
                     "MaxCPUs=1.5\n",
                     NULL),
                1);
        assert_true(c->default_memory == 512ULL << 20);
        assert_true(c->max_memory == 8ULL << 30);
        assert_true(c->default_cpu_millis == 500);
        assert_true(c->max_cpu_millis == 1500);

        assert_int_equal(config_set(c, "MaxCPUs", "2.25"), 0);
        assert_true(c->max_cpu_millis == 2250);
        assert_int_equal(config_set(c, "MaxCPUs", "4"), 0);
        assert_true(c->max_cpu_millis == 4000);
        assert_int_equal(config_set(c, "MaxCPUs", "0.125"), 0);
        assert_true(c->max_cpu_millis == 125);
        assert_int_equal(config_set(c, "MaxMemory", "1073741824"), 0);
        assert_true(c->max_memory == 1ULL << 30);
        assert_int_equal(config_set(c, "PodmanTimeoutSec", "5"), 0);
        assert_true(c->podman_timeout_sec == 5);
        assert_int_equal(config_set(c, "Runtime", "docker"), 0);
        assert_string_equal(c->runtime, "docker");
        assert_int_equal(config_set(c, "DockerSocket", "/srv/docker.sock"), 0);
        assert_string_equal(c->docker_socket, "/srv/docker.sock");
}

static void test_config_rejects_bad_values_unchanged(void **state) {
        static const char *const bad[][2] = {
                { "MaxMemory", "4X" },
                { "MaxMemory", "0" },
                { "MaxMemory", "-1G" },
                { "MaxMemory", "1.5G" },
                { "MaxCPUs", "1.2345" },
                { "MaxCPUs", "0" },
                { "MaxCPUs", "1." },
                { "MaxCPUs", ".5" },
                { "MaxCPUs", "two" },
                { "MaxTasks", "0" },
                { "MaxTasks", "-5" },
                { "MaxTimeoutSec", "1h" },
                { "StopTimeoutSec", "0" },
                { "PodmanTimeoutSec", "0" },
                { "PodmanTimeoutSec", "86401" },
                { "PodmanTimeoutSec", "5s" },
                { "MaxSessions", "0" },
                { "MaxSessions", "4294967296" },
                { "AllowHostNetwork", "maybe" },
                { "SystemdBus", "session" },
                { "StateDirectory", "relative" },
                { "PodmanSocket", "/run/../etc/x" },
                { "Runtime", "Docker" },
                { "Runtime", "crun" },
                { "Runtime", "" },
                { "DockerSocket", "docker.sock" },
                { "DefaultImage", "" },
                { "DefaultImage", "a b" },
                { "DefaultImage", "-rm" },
                { "WorkspaceRoots", "/srv relative" },
        };
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *out = NULL;
                DaemonConfig before = f->config;

                capture_start();
                assert_int_equal(config_set(&f->config, bad[i][0], bad[i][1]), -EINVAL);
                out = capture_stop();
                assert_non_null(strstr(out, bad[i][0]));
                assert_true(memcmp(&before, &f->config, sizeof before) == 0);
        }
}

static void test_config_parses_booleans(void **state) {
        static const char *const yes[] = { "yes", "true", "1", "on", "YES" };
        static const char *const no[] = { "no", "false", "0", "off", "False" };
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                f->config.allow_host_network = false;
                assert_int_equal(config_set(&f->config, "AllowHostNetwork", yes[i]), 0);
                assert_true(f->config.allow_host_network);
        }
        for (size_t i = 0; i < ELEMENTSOF(no); i++) {
                f->config.allow_host_network = true;
                assert_int_equal(config_set(&f->config, "AllowHostNetwork", no[i]), 0);
                assert_false(f->config.allow_host_network);
        }
}

static void test_config_splits_session_command_and_roots(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_int_equal(config_set(c, "SessionCommand", "  /usr/bin/ccdocker-init   --verbose\t-x "), 0);
        assert_non_null(c->session_command);
        assert_string_equal(c->session_command[0], "/usr/bin/ccdocker-init");
        assert_string_equal(c->session_command[1], "--verbose");
        assert_string_equal(c->session_command[2], "-x");
        assert_null(c->session_command[3]);

        /* An assignment replaces the list; an empty one clears it. */
        assert_int_equal(config_set(c, "SessionCommand", "sh"), 0);
        assert_string_equal(c->session_command[0], "sh");
        assert_null(c->session_command[1]);
        assert_int_equal(config_set(c, "SessionCommand", ""), 0);
        assert_null(c->session_command);

        assert_int_equal(config_set(c, "WorkspaceRoots", "/srv/work /home"), 0);
        assert_string_equal(c->workspace_roots[0], "/srv/work");
        assert_string_equal(c->workspace_roots[1], "/home");
        assert_null(c->workspace_roots[2]);
        assert_int_equal(config_set(c, "WorkspaceRoots", " "), 0);
        assert_null(c->workspace_roots);
        assert_int_equal(config_verify(c), 0);
}

static void test_config_mcp_keys(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_string_equal(c->github_mcp_url, "https://api.githubcopilot.com/mcp/");
        assert_string_equal(c->default_mcp_servers[0], "cc-docker");
        assert_null(c->default_mcp_servers[1]);
        assert_int_equal(config_set(c, "DefaultMcpServers", "filesystem,playwright, cc-docker"), 0);
        assert_string_equal(c->default_mcp_servers[0], "filesystem");
        assert_string_equal(c->default_mcp_servers[1], "playwright");
        assert_string_equal(c->default_mcp_servers[2], "cc-docker");
        assert_null(c->default_mcp_servers[3]);
        assert_int_equal(config_set(c, "DefaultMcpServers", "Filesystem"), -EINVAL);
        assert_int_equal(config_set(c, "DefaultMcpServers", ","), -EINVAL);
        assert_string_equal(c->default_mcp_servers[0], "filesystem"); /* unchanged */
        assert_int_equal(config_set(c, "GithubMcpURL", "http://127.0.0.1:9/mcp/"), 0);
        assert_string_equal(c->github_mcp_url, "http://127.0.0.1:9/mcp/");
        assert_int_equal(config_set(c, "GithubMcpURL", "ftp://x/"), -EINVAL);
}

static void test_config_session_command_honours_quotes(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_int_equal(
                config_set(c, "SessionCommand", "sh -c 'case \"$X\" in a) exit 1;; esac; echo \"up\"'"), 0);
        assert_string_equal(c->session_command[0], "sh");
        assert_string_equal(c->session_command[1], "-c");
        assert_string_equal(c->session_command[2], "case \"$X\" in a) exit 1;; esac; echo \"up\"");
        assert_null(c->session_command[3]);

        assert_int_equal(config_set(c, "SessionCommand", "a\\ b \"c \\\" \\d\" '' e'f'g"), 0);
        assert_string_equal(c->session_command[0], "a b");
        assert_string_equal(c->session_command[1], "c \" \\d");
        assert_string_equal(c->session_command[2], "");
        assert_string_equal(c->session_command[3], "efg");
        assert_null(c->session_command[4]);

        /* Quoting is the same for the roots, so a path may hold a space. */
        assert_int_equal(config_set(c, "WorkspaceRoots", "'/srv/my work' /home"), 0);
        assert_string_equal(c->workspace_roots[0], "/srv/my work");
        assert_string_equal(c->workspace_roots[1], "/home");

        capture_start();
        assert_int_equal(config_set(c, "SessionCommand", "sh -c 'unterminated"), -EINVAL);
        assert_int_equal(config_set(c, "SessionCommand", "trailing\\"), -EINVAL);
        assert_int_equal(config_set(c, "WorkspaceRoots", "\"/srv"), -EINVAL);
        free(capture_stop());
        assert_string_equal(c->session_command[3], "efg");
}

static void test_config_unset_default_follows_lower_ceiling(void **state) {
        _cleanup_free_ char *out = NULL;
        Fixture *f = *state;
        DaemonConfig *c = &f->config;
        int r;

        assert_int_equal(config_set(c, "MaxMemory", "1G"), 0);
        assert_true(c->default_memory == 1ULL << 30);
        assert_int_equal(config_set(c, "MaxTasks", "100"), 0);
        assert_true(c->default_tasks == 100);
        assert_int_equal(config_set(c, "MaxCPUs", "0.5"), 0);
        assert_true(c->default_cpu_millis == 500);
        assert_int_equal(config_set(c, "MaxTimeoutSec", "600"), 0);
        assert_true(c->default_timeout_sec == 600);
        /* A ceiling above the default leaves it; no ceiling at all leaves it too. */
        assert_int_equal(config_set(c, "MaxMemory", "8G"), 0);
        assert_true(c->default_memory == 1ULL << 30);
        assert_int_equal(config_set(c, "MaxTimeoutSec", "0"), 0);
        assert_true(c->default_timeout_sec == 600);
        assert_int_equal(config_verify(c), 0);

        /* A default that was set is not moved: the contradiction is refused. */
        assert_int_equal(config_set(c, "DefaultMemory", "2G"), 0);
        assert_int_equal(config_set(c, "MaxMemory", "1G"), 0);
        assert_true(c->default_memory == 2ULL << 30);
        capture_start();
        r = config_verify(c);
        out = capture_stop();
        assert_int_equal(r, -EINVAL);
        assert_non_null(strstr(out, "DefaultMemory=2G must be greater than 0 and at most MaxMemory=1G"));
}

/* ---- the file ---- */

static void test_config_accepts_comments_section_and_spacing(void **state) {
        Fixture *f = *state;
        DaemonConfig *c = &f->config;

        assert_int_equal(
                load(f,
                     "# ccdockerd configuration\n"
                     "; another comment\n"
                     "\n"
                     "[ccdockerd]\n"
                     "   MaxTasks   =   2048   \n"
                     "\tDefaultImage=registry.example/cc:1\r\n"
                     "AllowHostNetwork = yes\n"
                     "WorkspaceRoots = /srv/a /srv/b\n"
                     "SystemdBus=user\n"
                     "MaxSessions=8",
                     NULL),
                1);
        assert_true(c->max_tasks == 2048);
        assert_string_equal(c->default_image, "registry.example/cc:1");
        assert_true(c->allow_host_network);
        assert_string_equal(c->workspace_roots[1], "/srv/b");
        assert_string_equal(c->systemd_bus, "user");
        assert_int_equal(c->max_sessions, 8);
}

static void test_config_rejects_unknown_key_with_line(void **state) {
        _cleanup_free_ char *out = NULL, *expect = NULL;
        Fixture *f = *state;

        assert_int_equal(load(f, "# comment\nMaxTasks=10\nFoo=bar\n", &out), -EINVAL);
        assert_true(asprintf(&expect, "test-config: %s:3: unknown key 'Foo'\n", f->path) > 0);
        assert_string_equal(out, expect);
        /* Good lines still apply; the daemon refuses to start anyway. */
        assert_true(f->config.max_tasks == 10);
}

static void test_config_reports_every_bad_line(void **state) {
        _cleanup_free_ char *out = NULL, *l1 = NULL, *l2 = NULL, *l3 = NULL, *l4 = NULL;
        Fixture *f = *state;

        assert_int_equal(
                load(f, "MaxMemory=lots\n[other]\nno equals sign\n=5\nMaxTasks=8\n", &out), -EINVAL);
        assert_true(asprintf(&l1, "%s:1: MaxMemory must be a size", f->path) > 0);
        assert_true(asprintf(&l2, "%s:2: unknown section '[other]'", f->path) > 0);
        assert_true(asprintf(&l3, "%s:3: expected KEY=VALUE", f->path) > 0);
        assert_true(asprintf(&l4, "%s:4: expected KEY=VALUE", f->path) > 0);
        assert_non_null(strstr(out, l1));
        assert_non_null(strstr(out, "got 'lots'"));
        assert_non_null(strstr(out, l2));
        assert_non_null(strstr(out, l3));
        assert_non_null(strstr(out, l4));
        assert_true(f->config.max_tasks == 8);
}

static void test_config_missing_file_is_fine_unless_required(void **state) {
        _cleanup_free_ char *out = NULL, *missing = NULL;
        Fixture *f = *state;
        int r;

        assert_true(asprintf(&missing, "%s/absent.conf", f->dir) > 0);
        assert_int_equal(config_load_file(&f->config, missing, false), 0);

        capture_start();
        r = config_load_file(&f->config, missing, true);
        out = capture_stop();
        assert_int_equal(r, -ENOENT);
        assert_non_null(strstr(out, missing));
}

/* ---- consistency ---- */

static void test_config_verify_rejects_default_over_max(void **state) {
        static const char *const cases[][2] = {
                { "DefaultMemory", "8G" },         { "DefaultCPUs", "3" },       { "DefaultTasks", "2048" },
                { "DefaultTimeoutSec", "100000" }, { "DefaultTimeoutSec", "0" },
        };
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *out = NULL;
                DaemonConfig c = {};
                int r;

                assert_int_equal(config_init(&c, DAEMON_SYSTEM), 0);
                assert_int_equal(config_set(&c, cases[i][0], cases[i][1]), 0);
                capture_start();
                r = config_verify(&c);
                out = capture_stop();
                assert_int_equal(r, -EINVAL);
                assert_non_null(strstr(out, cases[i][0]));
                config_done(&c);
        }

        /* Without a ceiling, no limit is a fine default. */
        assert_int_equal(config_set(&f->config, "MaxTimeoutSec", "0"), 0);
        assert_int_equal(config_set(&f->config, "DefaultTimeoutSec", "0"), 0);
        assert_int_equal(config_verify(&f->config), 0);
}

static void test_config_formats_sizes_and_cpus(void **state) {
        char buf[CONFIG_FORMAT_MAX];
        uint64_t v;

        assert_string_equal(config_format_size(4ULL << 30, buf), "4G");
        assert_string_equal(config_format_size(512ULL << 20, buf), "512M");
        assert_string_equal(config_format_size(3ULL << 40, buf), "3T");
        assert_string_equal(config_format_size(1536, buf), "1536");
        assert_string_equal(config_format_size(1536ULL << 10, buf), "1536K");
        assert_string_equal(config_format_size(0, buf), "0");
        assert_string_equal(config_format_cpus(2000, buf), "2");
        assert_string_equal(config_format_cpus(1500, buf), "1.5");
        assert_string_equal(config_format_cpus(250, buf), "0.25");
        assert_string_equal(config_format_cpus(1, buf), "0.001");

        assert_int_equal(config_parse_cpus(config_format_cpus(12345, buf), &v), 0);
        assert_true(v == 12345);
        assert_int_equal(config_parse_cpus("18446744073709551615", &v), -ERANGE);
        assert_int_equal(config_parse_cpus("1.2.3", &v), -EINVAL);
        assert_int_equal(config_parse_cpus("1.-5", &v), -EINVAL);
        assert_int_equal(config_parse_cpus(" 1", &v), -EINVAL);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_config_system_defaults),
                cmocka_unit_test(test_config_user_defaults_follow_xdg),
                T(test_config_parses_sizes_and_cpus),
                T(test_config_rejects_bad_values_unchanged),
                T(test_config_parses_booleans),
                T(test_config_splits_session_command_and_roots),
                T(test_config_mcp_keys),
                T(test_config_session_command_honours_quotes),
                T(test_config_unset_default_follows_lower_ceiling),
                T(test_config_accepts_comments_section_and_spacing),
                T(test_config_rejects_unknown_key_with_line),
                T(test_config_reports_every_bad_line),
                T(test_config_missing_file_is_fine_unless_required),
                T(test_config_verify_rejects_default_over_max),
                cmocka_unit_test(test_config_formats_sizes_and_cpus),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}

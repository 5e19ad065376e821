/* Unit tests for daemon/podman.c's container spec (podman_container_spec_to_json()): the JSON libpod
 * gets for a session's container keeps its hardening whatever the session asks for (no capabilities, no
 * new privileges, the read-only root, the user, the network mode, nosuid mounts and tmpfs, the limits,
 * the secrets as 0400 files), and refuses a spec that lacks what a container needs. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "cleanup.h"
#include "podman.h"
#include "unit-test.h"
#include "util.h"

static const PodmanSecretMount test_secrets[] = {
        { .secret = "ccdocker-0123456789ab-GITHUB_TOKEN", .file = "GITHUB_TOKEN" },
        { .secret = "ccdocker-0123456789ab-NPM_TOKEN", .file = "NPM_TOKEN" },
};

/* What session.c fills in for a session with secrets and an environment. */
static PodmanContainerSpec test_spec(void) {
        static char *labels[] = { (char *) "org.ccdocker.session=0123456789ab", NULL };
        static char *env[] = {
                (char *) "A=1",
                (char *) "NOT_AN_ASSIGNMENT",
                (char *) "CCDOCKER_SESSION_ID=forged",
                (char *) "CCDOCKER_SESSION_ID=0123456789ab",
                NULL,
        };

        return (PodmanContainerSpec){
                .name = "ccdocker-0123456789ab",
                .image = "localhost/ccdocker-session:dev",
                .labels = labels,
                .environment = env,
                .workspace = "/var/lib/ccdocker/workspaces/0123456789ab",
                .channel_dir = "/run/ccdocker/sessions/0123456789ab",
                .home = "/home/claude",
                .uid = 1000,
                .gid = 1000,
                .network = "none",
                .read_only_root = true,
                .memory = UINT64_C(512) << 20,
                .cpu_millis = 1500,
                .pids = 256,
                .stop_timeout_sec = 10,
                .secrets = test_secrets,
                .n_secrets = ELEMENTSOF(test_secrets),
        };
}

static json_t *to_json(const PodmanContainerSpec *p) {
        json_t *j = NULL;

        assert_int_equal(podman_container_spec_to_json(p, &j), 0);
        assert_true(json_is_object(j));
        return j;
}

static json_int_t get_int(json_t *o, const char *path1, const char *path2) {
        json_t *v = json_object_get(json_object_get(o, path1), path2);

        assert_true(json_is_integer(v));
        return json_integer_value(v);
}

/* The mount of the spec at dest, which must be there once. */
static json_t *find_mount(json_t *spec, const char *dest) {
        json_t *mounts = json_object_get(spec, "mounts"), *m, *found = NULL;
        size_t i;

        assert_true(json_is_array(mounts));
        json_array_foreach (mounts, i, m)
                if (streq(json_string_value(json_object_get(m, "destination")), dest)) {
                        assert_null(found);
                        found = m;
                }
        assert_non_null(found);
        return found;
}

static bool has_option(json_t *mount, const char *option) {
        json_t *opts = json_object_get(mount, "options"), *o;
        size_t i;

        json_array_foreach (opts, i, o)
                if (streq(json_string_value(o), option))
                        return true;
        return false;
}

static void test_spec_is_hardened(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = to_json(&p);
        json_t *caps;

        assert_string_equal(json_string_value(json_object_get(spec, "name")), "ccdocker-0123456789ab");
        assert_string_equal(
                json_string_value(json_object_get(spec, "image")), "localhost/ccdocker-session:dev");
        assert_string_equal(json_string_value(json_object_get(spec, "user")), "1000:1000");

        caps = json_object_get(spec, "cap_drop");
        assert_true(json_is_array(caps));
        assert_int_equal(json_array_size(caps), 1);
        assert_string_equal(json_string_value(json_array_get(caps, 0)), "ALL");
        assert_null(json_object_get(spec, "cap_add"));
        assert_null(json_object_get(spec, "privileged"));
        assert_true(json_is_true(json_object_get(spec, "no_new_privileges")));
        assert_true(json_is_true(json_object_get(spec, "read_only_filesystem")));
        assert_string_equal(json_string_value(json_object_get(spec, "cgroups_mode")), "split");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(spec, "netns"), "nsmode")), "none");
        assert_int_equal(json_integer_value(json_object_get(spec, "stop_timeout")), 10);
        assert_null(json_object_get(spec, "command"));
}

static void test_spec_asks_for_the_root_it_is_given(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = NULL;

        p.read_only_root = false;
        p.network = "host";
        p.uid = 1001;
        p.gid = 1002;
        spec = to_json(&p);
        assert_true(json_is_false(json_object_get(spec, "read_only_filesystem")));
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(spec, "netns"), "nsmode")), "host");
        assert_string_equal(json_string_value(json_object_get(spec, "user")), "1001:1002");
        /* Whatever else changes, these do not. */
        assert_true(json_is_true(json_object_get(spec, "no_new_privileges")));
        assert_string_equal(json_string_value(json_array_get(json_object_get(spec, "cap_drop"), 0)), "ALL");
}

static void test_spec_mounts(void **state) {
        static const char *const tmpfs[] = { "/tmp", "/run", "/var/tmp", "/home/claude" };
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = to_json(&p);
        json_t *m;

        assert_int_equal(json_array_size(json_object_get(spec, "mounts")), 6);
        for (size_t i = 0; i < ELEMENTSOF(tmpfs); i++) {
                m = find_mount(spec, tmpfs[i]);
                assert_string_equal(json_string_value(json_object_get(m, "type")), "tmpfs");
                assert_true(has_option(m, "nosuid"));
                assert_true(has_option(m, "nodev"));
                assert_true(has_option(m, "size=256m"));
                /* Only the home is handed to the user. */
                assert_int_equal(has_option(m, "U"), streq(tmpfs[i], "/home/claude"));
        }

        m = find_mount(spec, "/workspace");
        assert_string_equal(json_string_value(json_object_get(m, "type")), "bind");
        assert_string_equal(json_string_value(json_object_get(m, "source")), p.workspace);
        assert_true(has_option(m, "rw"));
        assert_true(has_option(m, "nosuid"));

        m = find_mount(spec, "/run/ccdocker");
        assert_string_equal(json_string_value(json_object_get(m, "type")), "bind");
        assert_string_equal(json_string_value(json_object_get(m, "source")), p.channel_dir);
        assert_true(has_option(m, "nosuid"));
        assert_true(has_option(m, "nodev"));
}

static void test_spec_limits(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = to_json(&p);
        json_t *limits = json_object_get(spec, "resource_limits");

        assert_true(get_int(limits, "memory", "limit") == (json_int_t) 512 << 20);
        assert_true(get_int(limits, "memory", "swap") == (json_int_t) 512 << 20); /* no swap beyond it */
        assert_true(get_int(limits, "cpu", "quota") == 150000);
        assert_true(get_int(limits, "cpu", "period") == 100000);
        assert_true(get_int(limits, "pids", "limit") == 256);
}

static void test_spec_environment_labels_and_secrets(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = to_json(&p);
        json_t *env = json_object_get(spec, "env"), *secrets = json_object_get(spec, "secrets"), *s;
        size_t i;

        assert_int_equal(json_object_size(env), 2);
        assert_string_equal(json_string_value(json_object_get(env, "A")), "1");
        assert_string_equal(json_string_value(json_object_get(env, "CCDOCKER_SESSION_ID")), "0123456789ab");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(spec, "labels"), "org.ccdocker.session")),
                "0123456789ab");

        /* Files owned by the user, readable by it alone; never environment secrets (podman inspect shows
         * those). */
        assert_null(json_object_get(spec, "secret_env"));
        assert_int_equal(json_array_size(secrets), 2);
        json_array_foreach (secrets, i, s) {
                _cleanup_free_ char *target = NULL;

                assert_true(asprintf(&target, "/run/ccdocker-secrets/%s", test_secrets[i].file) > 0);
                assert_string_equal(json_string_value(json_object_get(s, "source")), test_secrets[i].secret);
                assert_string_equal(json_string_value(json_object_get(s, "target")), target);
                assert_int_equal(json_integer_value(json_object_get(s, "uid")), 1000);
                assert_int_equal(json_integer_value(json_object_get(s, "gid")), 1000);
                assert_int_equal(json_integer_value(json_object_get(s, "mode")), 0400);
        }
}

static void test_spec_without_secrets_or_environment(void **state) {
        static char *command[] = { (char *) "/usr/bin/sleep", (char *) "infinity", NULL };
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *spec = NULL;
        json_t *argv;

        p.secrets = NULL;
        p.n_secrets = 0;
        p.environment = NULL;
        p.labels = NULL;
        p.command = command;
        spec = to_json(&p);
        assert_null(json_object_get(spec, "secrets"));
        assert_int_equal(json_object_size(json_object_get(spec, "env")), 0);
        assert_int_equal(json_object_size(json_object_get(spec, "labels")), 0);
        argv = json_object_get(spec, "command");
        assert_int_equal(json_array_size(argv), 2);
        assert_string_equal(json_string_value(json_array_get(argv, 0)), "/usr/bin/sleep");
        assert_string_equal(json_string_value(json_array_get(argv, 1)), "infinity");
}

static void test_spec_refuses_incomplete(void **state) {
        static const PodmanSecretMount nameless[] = { { .secret = "x", .file = "" } };
        json_t *j = NULL;

        for (unsigned i = 0; i < 7; i++) {
                PodmanContainerSpec p = test_spec();

                switch (i) {
                case 0:
                        p.name = NULL;
                        break;
                case 1:
                        p.image = "";
                        break;
                case 2:
                        p.network = NULL;
                        break;
                case 3:
                        p.workspace = NULL;
                        break;
                case 4:
                        p.channel_dir = NULL;
                        break;
                case 5:
                        p.home = NULL;
                        break;
                case 6:
                        p.secrets = nameless;
                        p.n_secrets = 1;
                        break;
                }
                assert_int_equal(podman_container_spec_to_json(&p, &j), -EINVAL);
                assert_null(j);
        }
        assert_int_equal(podman_container_spec_to_json(NULL, &j), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_spec_is_hardened),
                cmocka_unit_test(test_spec_asks_for_the_root_it_is_given),
                cmocka_unit_test(test_spec_mounts),
                cmocka_unit_test(test_spec_limits),
                cmocka_unit_test(test_spec_environment_labels_and_secrets),
                cmocka_unit_test(test_spec_without_secrets_or_environment),
                cmocka_unit_test(test_spec_refuses_incomplete),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

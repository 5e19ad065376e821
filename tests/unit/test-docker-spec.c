/* Unit tests for daemon/docker.c: the create body Docker Engine gets for a session's container keeps the
 * hardening podman's has (no capabilities, no new privileges, read-only root, the user, the network
 * mode, the limits, tmpfs with the home handed to the user), puts the container below its unit's
 * cgroup, carries secrets as read-only bind mounts of files and never their values; the unit's cgroup
 * follows systemd's dash nesting of slices; secret files are 0400 and made exclusively. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "docker.h"
#include "unit-test.h"
#include "util.h"

static const PodmanSecretMount test_secrets[] = {
        { .secret = "ccdocker-0123456789ab-GITHUB_TOKEN", .file = "GITHUB_TOKEN" },
};

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
                .cgroup_parent =
                        "/ccdocker.slice/ccdocker-0123456789ab.slice/ccdocker-session-0123456789ab.service",
        };
}

static json_t *mount_at(json_t *mounts, const char *target) {
        size_t i;
        json_t *m;

        json_array_foreach (mounts, i, m)
                if (streq_ptr(json_string_value(json_object_get(m, "Target")), target))
                        return m;
        return NULL;
}

static void test_body_is_hardened(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_t *host, *tmpfs, *env;
        _cleanup_free_ char *dump = NULL;

        assert_int_equal(docker_container_spec_to_json(&p, "/run/ccdocker/docker-secrets", &j), 0);
        host = json_object_get(j, "HostConfig");
        assert_string_equal(json_string_value(json_object_get(j, "Name")), "ccdocker-0123456789ab");
        assert_string_equal(json_string_value(json_object_get(j, "User")), "1000:1000");
        assert_string_equal(json_string_value(json_array_get(json_object_get(host, "CapDrop"), 0)), "ALL");
        assert_int_equal(json_array_size(json_object_get(host, "CapDrop")), 1);
        assert_string_equal(
                json_string_value(json_array_get(json_object_get(host, "SecurityOpt"), 0)),
                "no-new-privileges");
        assert_true(json_is_true(json_object_get(host, "ReadonlyRootfs")));
        assert_false(json_is_true(json_object_get(host, "Privileged")));
        assert_string_equal(json_string_value(json_object_get(host, "NetworkMode")), "none");
        assert_string_equal(json_string_value(json_object_get(host, "CgroupParent")), p.cgroup_parent);
        assert_int_equal(json_integer_value(json_object_get(host, "Memory")), 512 << 20);
        assert_int_equal(json_integer_value(json_object_get(host, "MemorySwap")), 512 << 20);
        assert_int_equal(json_integer_value(json_object_get(host, "NanoCpus")), 1500000000);
        assert_int_equal(json_integer_value(json_object_get(host, "PidsLimit")), 256);
        assert_int_equal(json_integer_value(json_object_get(j, "StopTimeout")), 10);

        tmpfs = json_object_get(host, "Tmpfs");
        assert_non_null(strstr(json_string_value(json_object_get(tmpfs, "/tmp")), "nosuid"));
        assert_non_null(strstr(json_string_value(json_object_get(tmpfs, "/run")), "nodev"));
        assert_non_null(
                strstr(json_string_value(json_object_get(tmpfs, "/home/claude")), "uid=1000,gid=1000"));

        /* podman's "later entries win", in Docker's "first one wins" Env. */
        env = json_object_get(j, "Env");
        assert_int_equal(json_array_size(env), 2);
        assert_string_equal(json_string_value(json_array_get(env, 0)), "A=1");
        assert_string_equal(json_string_value(json_array_get(env, 1)), "CCDOCKER_SESSION_ID=0123456789ab");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(j, "Labels"), "org.ccdocker.session")),
                "0123456789ab");
        dump = json_dumps(j, JSON_COMPACT);
        assert_null(strstr(dump, "forged"));
}

static void test_body_mounts_and_secrets(void **state) {
        PodmanContainerSpec p = test_spec();
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_t *mounts, *m;

        p.shared = "/srv/shared";
        p.shared_read_only = true;
        assert_int_equal(docker_container_spec_to_json(&p, "/run/ccdocker/docker-secrets", &j), 0);
        mounts = json_object_get(json_object_get(j, "HostConfig"), "Mounts");

        m = mount_at(mounts, "/workspace");
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m, "Source")), p.workspace);
        assert_false(json_is_true(json_object_get(m, "ReadOnly")));
        m = mount_at(mounts, "/run/ccdocker");
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m, "Source")), p.channel_dir);
        m = mount_at(mounts, "/shared");
        assert_non_null(m);
        assert_true(json_is_true(json_object_get(m, "ReadOnly")));
        m = mount_at(mounts, "/run/ccdocker-secrets/GITHUB_TOKEN");
        assert_non_null(m);
        assert_true(json_is_true(json_object_get(m, "ReadOnly")));
        assert_string_equal(
                json_string_value(json_object_get(m, "Source")),
                "/run/ccdocker/docker-secrets/ccdocker-0123456789ab-GITHUB_TOKEN");
}

static void test_body_refuses_incomplete(void **state) {
        static const PodmanSecretMount bad[] = { { .secret = "../etc/shadow", .file = "X" } };
        json_t *j = NULL;

        for (int i = 0; i < 4; i++) {
                PodmanContainerSpec p = test_spec();

                switch (i) {
                case 0:
                        p.cgroup_parent = NULL; /* it would land outside the unit */
                        break;
                case 1:
                        p.name = NULL;
                        break;
                case 2:
                        p.secrets = bad;
                        break;
                case 3:
                        p.network = "";
                        break;
                }
                assert_int_equal(docker_container_spec_to_json(&p, "/run/x", &j), -EINVAL);
                assert_null(j);
        }
        {
                PodmanContainerSpec p = test_spec();

                assert_int_equal(docker_container_spec_to_json(&p, NULL, &j), -EINVAL);
        }
}

static void test_unit_cgroup(void **state) {
        char *s = NULL;

        assert_int_equal(
                docker_unit_cgroup("/", "ccdocker-ab12.slice", "ccdocker-session-ab12.service", &s), 0);
        assert_string_equal(s, "/ccdocker.slice/ccdocker-ab12.slice/ccdocker-session-ab12.service");
        s = mfree(s);
        assert_int_equal(
                docker_unit_cgroup(
                        "/user.slice/user-1000.slice/user@1000.service/",
                        "ccdocker-a-b.slice",
                        "ccdocker-session-b.service",
                        &s),
                0);
        assert_string_equal(
                s,
                "/user.slice/user-1000.slice/user@1000.service/ccdocker.slice/ccdocker-a.slice/ccdocker-a-b.slice/"
                "ccdocker-session-b.service");
        s = mfree(s);
        assert_int_equal(docker_unit_cgroup("/", "app.slice", "x.service", &s), 0);
        assert_string_equal(s, "/app.slice/x.service");
        s = mfree(s);
        assert_int_equal(docker_unit_cgroup("/", NULL, "x.service", &s), -EINVAL);
        assert_int_equal(docker_unit_cgroup("/", "a--b.slice", "x.service", &s), -EINVAL);
        assert_int_equal(docker_unit_cgroup("/", "-a.slice", "x.service", &s), -EINVAL);
        assert_int_equal(docker_unit_cgroup("relative", "a.slice", "x.service", &s), -EINVAL);
        assert_int_equal(docker_unit_cgroup("/", "a.slice", "../x.service", &s), -EINVAL);
        assert_null(s);
}

static void test_secret_files(void **state) {
        char dir[] = "/tmp/test-docker-secrets-XXXXXX";
        _cleanup_free_ char *path = NULL;
        struct stat st;
        char buf[64] = {};
        FILE *f;

        assert_non_null(mkdtemp(dir));
        assert_int_equal(docker_secret_write(dir, "s1", "value-1"), 0);
        assert_int_equal(docker_secret_write(dir, "s1", "again"), -EEXIST);
        assert_int_equal(docker_secret_write(dir, "../s2", "x"), -EINVAL);
        assert_true(asprintf(&path, "%s/s1", dir) > 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0400);
        f = fopen(path, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof buf, f));
        fclose(f);
        assert_string_equal(buf, "value-1");
        assert_int_equal(docker_secret_chown(dir, "s1", getuid(), getgid()), 0);
        assert_int_equal(docker_secret_unlink(dir, "s1"), 0);
        assert_int_equal(docker_secret_unlink(dir, "s1"), 0); /* gone already: success */
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(rmdir(dir), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_body_is_hardened),
                cmocka_unit_test(test_body_mounts_and_secrets),
                cmocka_unit_test(test_body_refuses_incomplete),
                cmocka_unit_test(test_unit_cgroup),
                cmocka_unit_test(test_secret_files),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for daemon/workspace.c: a host workspace is checked in a forked worker that has become the
 * caller, on a real sd-event loop, against real directories in a mkdtemp() tree (the test runs as root,
 * the callers are uid 65534 and root); and the check before the container is made notices a symlink or
 * another directory swapped in. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "unit-test.h"
#include "util.h"
#include "workspace.h"

#define NOBODY 65534

typedef struct Outcome {
        bool done;
        int r;
        char path[PATH_MAX];
        char message[256];
        dev_t dev;
        ino_t ino;
} Outcome;

static void on_checked(int r, const char *path, dev_t dev, ino_t ino, const char *message, void *userdata) {
        Outcome *o = userdata;

        o->done = true;
        o->r = r;
        o->dev = dev;
        o->ino = ino;
        (void) snprintf(o->path, sizeof(o->path), "%s", strempty(path));
        (void) snprintf(o->message, sizeof(o->message), "%s", strempty(message));
}

static char tmp[64], root[96], outside[96];

static Outcome check(uid_t uid, const char *path) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        char *roots[] = { root, NULL };
        Outcome o = {};

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(workspace_check_async(e, uid, path, roots, on_checked, &o), 0);
        while (!o.done)
                assert_true(sd_event_run(e, UINT64_MAX) >= 0);
        return o;
}

static char *at(const char *dir, const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static int setup(void **state) {
        sigset_t ss;

        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        assert_int_equal(sigprocmask(SIG_BLOCK, &ss, NULL), 0);
        strcpy(tmp, "/tmp/test-workspace-XXXXXX");
        assert_non_null(mkdtemp(tmp));
        assert_int_equal(chmod(tmp, 0755), 0);
        (void) snprintf(root, sizeof(root), "%s/root", tmp);
        (void) snprintf(outside, sizeof(outside), "%s/outside", tmp);
        assert_int_equal(mkdir(root, 0755), 0);
        assert_int_equal(mkdir(outside, 0777), 0);
        return 0;
}

static int teardown(void **state) {
        char cmd[128];

        (void) snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", tmp);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static void test_the_callers_own_directory_is_allowed(void **state) {
        _cleanup_free_ char *mine = at(root, "mine"), *messy = NULL;
        struct stat st;
        Outcome o;

        assert_int_equal(mkdir(mine, 0700), 0);
        assert_int_equal(chown(mine, NOBODY, NOBODY), 0);
        assert_int_equal(stat(mine, &st), 0);
        o = check(NOBODY, mine);
        assert_int_equal(o.r, 0);
        assert_string_equal(o.path, mine);
        assert_true(o.dev == st.st_dev && o.ino == st.st_ino);
        assert_int_equal(workspace_verify(o.path, o.dev, o.ino), 0);
}

static void test_a_directory_the_caller_may_not_write_is_refused(void **state) {
        _cleanup_free_ char *roots = at(root, "roots-only"), *open_ro = at(root, "readable");
        Outcome o;

        /* root's, 0700: nobody cannot even look inside; root's 0755: readable, not writable. */
        assert_int_equal(mkdir(roots, 0700), 0);
        assert_int_equal(mkdir(open_ro, 0755), 0);
        o = check(NOBODY, roots);
        assert_int_equal(o.r, -EACCES);
        assert_non_null(strstr(o.message, "not a workspace uid 65534 may use"));
        o = check(NOBODY, open_ro);
        assert_int_equal(o.r, -EACCES);
        assert_non_null(strstr(o.message, "may not read, write and enter it"));
        /* Root is not held back by modes. */
        assert_int_equal(check(0, roots).r, 0);
}

static void test_the_caller_learns_only_what_it_could_see(void **state) {
        _cleanup_free_ char *hidden = at(root, "hidden"), *missing = NULL, *file = NULL;
        Outcome o;

        /* Inside a directory nobody may not enter, a missing entry and an existing file look the
         * same to nobody: permission denied, not "does not exist" or "not a directory". */
        assert_int_equal(mkdir(hidden, 0700), 0);
        missing = at(hidden, "missing");
        file = at(hidden, "file");
        fclose(fopen(file, "we"));
        o = check(NOBODY, missing);
        assert_int_equal(o.r, -EACCES);
        assert_int_equal(check(NOBODY, file).r, -EACCES);
        /* Root sees what there is. */
        assert_int_equal(check(0, missing).r, -ENOENT);
        assert_int_equal(check(0, file).r, -ENOTDIR);
}

static void test_a_symlink_out_of_the_roots_is_refused(void **state) {
        _cleanup_free_ char *escape = at(root, "escape");

        assert_int_equal(symlink(outside, escape), 0);
        assert_int_equal(check(0, escape).r, -EXDEV);
        assert_int_equal(check(NOBODY, escape).r, -EXDEV);
}

static void test_a_swap_after_the_check_is_noticed(void **state) {
        _cleanup_free_ char *work = at(root, "work"), *moved = at(root, "moved");
        Outcome o;

        assert_int_equal(mkdir(work, 0777), 0);
        assert_int_equal(chmod(work, 0777), 0); /* past the umask */
        o = check(NOBODY, work);
        assert_int_equal(o.r, 0);
        /* The name now leads elsewhere: by a symlink, then by another directory. */
        assert_int_equal(rename(work, moved), 0);
        assert_int_equal(symlink(outside, work), 0);
        assert_int_equal(workspace_verify(o.path, o.dev, o.ino), -ELOOP);
        assert_int_equal(unlink(work), 0);
        assert_int_equal(mkdir(work, 0777), 0);
        assert_int_equal(workspace_verify(o.path, o.dev, o.ino), -ESTALE);
        /* The same directory back under its name is the one that was checked. */
        assert_int_equal(rmdir(work), 0);
        assert_int_equal(rename(moved, work), 0);
        assert_int_equal(workspace_verify(o.path, o.dev, o.ino), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_the_callers_own_directory_is_allowed, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_a_directory_the_caller_may_not_write_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_the_caller_learns_only_what_it_could_see, setup, teardown),
                cmocka_unit_test_setup_teardown(test_a_symlink_out_of_the_roots_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_a_swap_after_the_check_is_noticed, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

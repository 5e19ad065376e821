/* Unit tests for daemon/async.c: async_rm_rf() removes a real tree in a forked child, on a real sd-event
 * loop, without following a symlink out of it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "async.h"
#include "log.h"
#include "unit-test.h"
#include "util.h"

typedef struct Outcome {
        bool done;
        int r;
} Outcome;

static void on_done(int r, void *userdata) {
        Outcome *o = userdata;

        o->done = true;
        o->r = r;
}

static void touch(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        close(fd);
}

static void run_until_done(sd_event *e, Outcome *o) {
        while (!o->done)
                assert_true(sd_event_run(e, UINT64_MAX) >= 0);
}

static void test_async_rm_rf_removes_the_tree_not_what_a_symlink_names(void **state) {
        char base[] = "/tmp/test-async-XXXXXX", tree[128], p[192], outside[128];
        sd_event *e = NULL;
        Outcome o = {};

        assert_non_null(mkdtemp(base));
        snprintf(tree, sizeof tree, "%s/tree", base);
        snprintf(outside, sizeof outside, "%s/outside", base);
        assert_int_equal(mkdir(tree, 0700), 0);
        assert_int_equal(mkdir(outside, 0700), 0);
        snprintf(p, sizeof p, "%s/keep", outside);
        touch(p);
        snprintf(p, sizeof p, "%s/a", tree);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof p, "%s/a/b", tree);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof p, "%s/a/b/file", tree);
        touch(p);
        snprintf(p, sizeof p, "%s/a/link", tree);
        assert_int_equal(symlink(outside, p), 0);

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(async_rm_rf(e, tree, on_done, &o), 0);
        /* Never from inside the call. */
        assert_false(o.done);
        run_until_done(e, &o);

        assert_int_equal(o.r, 0);
        assert_int_equal(access(tree, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        snprintf(p, sizeof p, "%s/keep", outside);
        assert_int_equal(access(p, F_OK), 0);

        /* A tree that is not there is removed already. */
        o = (Outcome){};
        assert_int_equal(async_rm_rf(e, tree, on_done, &o), 0);
        run_until_done(e, &o);
        assert_int_equal(o.r, 0);

        assert_int_equal(unlink(p), 0);
        assert_int_equal(rmdir(outside), 0);
        assert_int_equal(rmdir(base), 0);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_async_rm_rf_removes_the_tree_not_what_a_symlink_names),
        };
        sigset_t mask;

        /* As in ccdockerd.c: sd_event_add_child() needs SIGCHLD blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        assert_int_equal(sigprocmask(SIG_BLOCK, &mask, NULL), 0);
        log_set_target(LOG_TARGET_STDERR);
        return cmocka_run_group_tests(tests, NULL, NULL);
}

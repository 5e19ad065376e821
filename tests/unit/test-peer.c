/* Unit tests for daemon/peer.c: which /proc/PID/cgroup lines put a process inside a session's unit,
 * and the whole check over a real socketpair (whose peer is this very process, outside any session). */
#define _GNU_SOURCE
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "peer.h"
#include "unit-test.h"

#define UNIT "ccdocker-session-3f9c0a1b2c4d.service"

static void test_cgroup_lines_inside_the_unit(void **state) {
        /* cgroup v2, and v1's named and controller hierarchies, with podman's split cgroups below. */
        assert_true(peer_cgroup_line_in_unit(
                "0::/ccdocker-3f9c0a1b2c4d.slice/" UNIT "/libpod-payload-ab\n", UNIT));
        assert_true(peer_cgroup_line_in_unit("1:name=systemd:/user.slice/" UNIT "\n", UNIT));
        assert_true(peer_cgroup_line_in_unit("4:memory:/a.slice/" UNIT "/runtime", UNIT));
}

static void test_cgroup_lines_outside_the_unit(void **state) {
        assert_false(peer_cgroup_line_in_unit("0::/user.slice/user-1000.slice/session-1.scope\n", UNIT));
        /* Another session's unit, a longer name with ours as its prefix, ours as a mere suffix. */
        assert_false(peer_cgroup_line_in_unit("0::/ccdocker-session-3f9c0a1b2c4e.service\n", UNIT));
        assert_false(peer_cgroup_line_in_unit("0::/" UNIT "x/payload\n", UNIT));
        assert_false(peer_cgroup_line_in_unit("0::/evil-" UNIT "\n", UNIT));
        /* The unit's name in the controller list, not in the path; lines without a path. */
        assert_false(peer_cgroup_line_in_unit("1:" UNIT ":/\n", UNIT));
        assert_false(peer_cgroup_line_in_unit("garbage", UNIT));
        assert_false(peer_cgroup_line_in_unit("", UNIT));
}

static void test_peer_outside_the_unit_is_refused_unless_trusted(void **state) {
        int sv[2];
        PeerInfo peer;

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        /* This process runs in no session's unit: refused, saying so... */
        assert_int_equal(peer_check_session(sv[0], UNIT, getuid() + 1, &peer), 0);
        assert_int_equal(peer.pid, getpid());
        assert_int_equal(peer.uid, getuid());
        assert_non_null(strstr(peer.reason, "outside the session's unit " UNIT));
        /* ... but the daemon's own user is let through. */
        assert_int_equal(peer_check_session(sv[0], UNIT, getuid(), &peer), 1);
        (void) close(sv[0]);
        (void) close(sv[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cgroup_lines_inside_the_unit),
                cmocka_unit_test(test_cgroup_lines_outside_the_unit),
                cmocka_unit_test(test_peer_outside_the_unit_is_refused_unless_trusted),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

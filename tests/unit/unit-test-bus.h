/* A bus that can make sd_bus_message objects for the cmocka tests that build and parse D-Bus messages
 * without a bus daemon. sd-bus refuses to create messages on a bus that was never started (-ENOTCONN);
 * started on a socketpair it only writes its AUTH line into the socket buffer, and messages can be
 * built, sealed (sd_bus_message_seal()) and read back as if received. */
#pragma once

#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "unit-test.h"

/* The bus in *ret_bus, the socketpair's other end in *ret_peer: close it after sd_bus_close_unref(). */
static inline void unit_test_bus_new(sd_bus **ret_bus, int *ret_peer) {
        int fds[2];

        assert_int_equal(sd_bus_new(ret_bus), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(sd_bus_set_fd(*ret_bus, fds[0], fds[0]), 0);
        assert_int_equal(sd_bus_start(*ret_bus), 0);
        *ret_peer = fds[1];
}

/* Unit tests for common/relay.c with real socketpairs: bytes both ways, a half-close passed on only
 * after the bytes before it, the bound (a full buffer stops asking to read), what each end waits for,
 * bytes put in by the caller, and an error ending the relay. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "unit-test.h"

/* A relay between the right ends of two socketpairs: the test writes and reads the left ends, pa[0]
 * is the "client" and pb[0] the "server". */
typedef struct Fixture {
        int pa[2], pb[2];
        Relay relay;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->pa), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->pb), 0);
        assert_int_equal(relay_init(&f->relay, f->pa[1], f->pb[1]), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        relay_done(&f->relay);
        for (int i = 0; i < 2; i++) {
                close(f->pa[i]);
                close(f->pb[i]);
        }
        free(f);
        return 0;
}

static size_t read_all(int fd, char *buf, size_t size) {
        size_t n = 0;

        for (;;) {
                ssize_t k = read(fd, buf + n, size - n);

                if (k <= 0)
                        return n;
                n += (size_t) k;
        }
}

static void test_relay_moves_bytes_both_ways(void **state) {
        Fixture *f = *state;
        char buf[64];

        assert_int_equal(write(f->pa[0], "hello", 5), 5);
        assert_int_equal(write(f->pb[0], "world!", 6), 6);
        assert_int_equal(relay_step(&f->relay), 0);
        assert_int_equal(read_all(f->pb[0], buf, sizeof(buf)), 5);
        assert_memory_equal(buf, "hello", 5);
        assert_int_equal(read_all(f->pa[0], buf, sizeof(buf)), 6);
        assert_memory_equal(buf, "world!", 6);
        /* Nothing pending: each end only waits to be read. */
        assert_int_equal(relay_events(&f->relay, 0), POLLIN);
        assert_int_equal(relay_events(&f->relay, 1), POLLIN);
}

static void test_relay_passes_a_half_close_after_the_bytes_and_ends_when_both_are_done(void **state) {
        Fixture *f = *state;
        char buf[64];

        assert_int_equal(write(f->pa[0], "last", 4), 4);
        assert_int_equal(shutdown(f->pa[0], SHUT_WR), 0);
        assert_int_equal(relay_step(&f->relay), 0);
        assert_true(f->relay.buffer[0].shut);
        assert_false(f->relay.buffer[1].shut);
        /* The server gets the bytes, then its end of file, and can still answer. */
        assert_int_equal(read_all(f->pb[0], buf, sizeof(buf)), 4);
        assert_int_equal(read(f->pb[0], buf, sizeof(buf)), 0);
        assert_int_equal(write(f->pb[0], "bye", 3), 3);
        assert_int_equal(shutdown(f->pb[0], SHUT_WR), 0);
        assert_int_equal(relay_step(&f->relay), 1);
        assert_int_equal(read_all(f->pa[0], buf, sizeof(buf)), 3);
        assert_memory_equal(buf, "bye", 3);
        assert_int_equal(read(f->pa[0], buf, sizeof(buf)), 0);
}

static void test_relay_is_bounded_when_the_destination_does_not_read(void **state) {
        Fixture *f = *state;
        static char chunk[16384];
        size_t sent = 0;

        memset(chunk, 'x', sizeof(chunk));
        /* The server never reads: the relay fills its socket, then its buffer, then stops reading. */
        for (int round = 0; round < 1000 && relay_events(&f->relay, 0) & POLLIN; round++) {
                ssize_t k = write(f->pa[0], chunk, sizeof(chunk));

                if (k > 0)
                        sent += (size_t) k;
                assert_int_equal(relay_step(&f->relay), 0);
        }
        assert_false(relay_events(&f->relay, 0) & POLLIN);
        assert_true(relay_events(&f->relay, 1) & POLLOUT);
        assert_int_equal(relay_buffer_len(&f->relay.buffer[0]), RELAY_BUFFER_SIZE);
        assert_true(sent > RELAY_BUFFER_SIZE);
}

static void test_relay_buffer_put_takes_at_most_the_room_left(void **state) {
        RelayBuffer b = {};
        static char big[RELAY_BUFFER_SIZE + 10];

        assert_int_equal(relay_buffer_put(&b, "x", 1), 0); /* not allocated */
        assert_int_equal(relay_buffer_alloc(&b), 0);
        assert_false(relay_buffer_wants_write(&b));
        assert_int_equal(relay_buffer_put(&b, "abc", 3), 3);
        assert_true(relay_buffer_wants_write(&b));
        assert_int_equal(relay_buffer_put(&b, big, sizeof(big)), RELAY_BUFFER_SIZE - 3);
        assert_false(relay_buffer_wants_read(&b));
        relay_buffer_free(&b);
        assert_null(b.data);
}

static void test_relay_ends_with_an_error_when_an_end_is_reset(void **state) {
        Fixture *f = *state;

        /* The server side is gone while the client has bytes for it: the write fails. */
        assert_int_equal(write(f->pa[0], "lost", 4), 4);
        close(f->pb[0]);
        f->pb[0] = -EBADF;
        assert_true(relay_step(&f->relay) < 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_relay_moves_bytes_both_ways, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_relay_passes_a_half_close_after_the_bytes_and_ends_when_both_are_done,
                        setup,
                        teardown),
                cmocka_unit_test_setup_teardown(
                        test_relay_is_bounded_when_the_destination_does_not_read, setup, teardown),
                cmocka_unit_test(test_relay_buffer_put_takes_at_most_the_room_left),
                cmocka_unit_test_setup_teardown(
                        test_relay_ends_with_an_error_when_an_end_is_reset, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

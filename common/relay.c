/* The bounded two-way byte relay (relay.h). */
#include "relay.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int relay_buffer_alloc(RelayBuffer *b) {
        if (!b->data) {
                b->data = malloc(RELAY_BUFFER_SIZE);
                if (!b->data)
                        return -ENOMEM;
        }
        return 0;
}

void relay_buffer_free(RelayBuffer *b) {
        free(b->data);
        *b = (RelayBuffer){};
}

size_t relay_buffer_len(const RelayBuffer *b) {
        return b->end - b->start;
}

bool relay_buffer_wants_read(const RelayBuffer *b) {
        return b->data && !b->eof && relay_buffer_len(b) < RELAY_BUFFER_SIZE;
}

bool relay_buffer_wants_write(const RelayBuffer *b) {
        return relay_buffer_len(b) > 0 || (b->eof && !b->shut);
}

/* Moves the pending bytes to the front when the tail has no room left. */
static void buffer_compact(RelayBuffer *b) {
        if (b->end < RELAY_BUFFER_SIZE || b->start == 0)
                return;
        memmove(b->data, b->data + b->start, relay_buffer_len(b));
        b->end -= b->start;
        b->start = 0;
}

size_t relay_buffer_put(RelayBuffer *b, const void *data, size_t n) {
        if (!b->data)
                return 0;
        buffer_compact(b);
        if (n > RELAY_BUFFER_SIZE - b->end)
                n = RELAY_BUFFER_SIZE - b->end;
        memcpy(b->data + b->end, data, n);
        b->end += n;
        return n;
}

int relay_buffer_read(RelayBuffer *b, int fd, bool *progress) {
        ssize_t k;

        if (!relay_buffer_wants_read(b))
                return 0;
        buffer_compact(b);
        do
                k = read(fd, b->data + b->end, RELAY_BUFFER_SIZE - b->end);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return errno == EAGAIN ? 0 : -errno;
        if (k == 0)
                b->eof = true;
        b->end += (size_t) k;
        *progress = true;
        return 0;
}

int relay_buffer_write(RelayBuffer *b, int fd, bool *progress) {
        if (relay_buffer_len(b) > 0) {
                ssize_t k;

                do
                        k = send(fd, b->data + b->start, relay_buffer_len(b), MSG_NOSIGNAL);
                while (k < 0 && errno == EINTR);
                if (k < 0)
                        return errno == EAGAIN ? 0 : -errno;
                b->start += (size_t) k;
                if (b->start == b->end)
                        b->start = b->end = 0;
                *progress = true;
        }
        if (b->eof && relay_buffer_len(b) == 0 && !b->shut) {
                if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN)
                        return -errno;
                b->shut = true;
                *progress = true;
        }
        return 0;
}

int relay_init(Relay *r, int a, int b) {
        *r = (Relay){ .fd = { a, b } };
        if (relay_buffer_alloc(&r->buffer[0]) < 0 || relay_buffer_alloc(&r->buffer[1]) < 0) {
                relay_done(r);
                return -ENOMEM;
        }
        return 0;
}

void relay_done(Relay *r) {
        relay_buffer_free(&r->buffer[0]);
        relay_buffer_free(&r->buffer[1]);
}

uint32_t relay_events(const Relay *r, unsigned i) {
        uint32_t events = 0;

        if (relay_buffer_wants_read(&r->buffer[i]))
                events |= POLLIN;
        if (relay_buffer_wants_write(&r->buffer[!i]))
                events |= POLLOUT;
        return events;
}

int relay_step(Relay *r) {
        for (int i = 0; i < RELAY_STEPS_MAX; i++) {
                bool progress = false;
                int k;

                k = relay_buffer_read(&r->buffer[0], r->fd[0], &progress);
                if (k >= 0)
                        k = relay_buffer_write(&r->buffer[0], r->fd[1], &progress);
                if (k >= 0)
                        k = relay_buffer_read(&r->buffer[1], r->fd[1], &progress);
                if (k >= 0)
                        k = relay_buffer_write(&r->buffer[1], r->fd[0], &progress);
                if (k < 0)
                        return k;
                if (r->buffer[0].shut && r->buffer[1].shut)
                        return 1;
                if (!progress)
                        break;
        }
        return 0;
}

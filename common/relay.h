/* A bounded two-way byte relay between two non-blocking stream sockets, for any event loop: the loop
 * asks which events each fd wants (relay_events()), and calls relay_step() when either is ready. Each
 * direction has one fixed buffer of RELAY_BUFFER_SIZE, allocated when first needed; an end that closes
 * its sending side is passed on with shutdown(SHUT_WR) once its bytes are out (a half-close), and the
 * relay is done when both directions are. Used by ccdocker-init's loopback bridges (poll) and meant
 * for the daemon's egress proxy (sd-event). The returned events are poll(2) bits, which epoll shares
 * (EPOLLIN == POLLIN, EPOLLOUT == POLLOUT), so either loop takes them as they are. The fds are
 * borrowed: the relay never closes them. The programs using it ignore SIGPIPE or rely on send()'s
 * MSG_NOSIGNAL, which the relay uses. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RELAY_BUFFER_SIZE (64 * 1024) /* per direction */
#define RELAY_STEPS_MAX 16            /* rounds of read and write in one relay_step() */

/* Bytes in one direction: data[start, end) is pending. eof once the source ended, shut once that end
 * was passed on to the destination. */
typedef struct RelayBuffer {
        char *data;
        size_t start, end;
        bool eof, shut;
} RelayBuffer;

typedef struct Relay {
        int fd[2];             /* the two ends */
        RelayBuffer buffer[2]; /* buffer[i] holds what was read from fd[i], to write to fd[!i] */
} Relay;

/* Allocates the buffer if it has none. 0 or -ENOMEM. */
int relay_buffer_alloc(RelayBuffer *b);
void relay_buffer_free(RelayBuffer *b);
size_t relay_buffer_len(const RelayBuffer *b);
/* Whether reading into it would make sense: allocated, its source not ended, room left. */
bool relay_buffer_wants_read(const RelayBuffer *b);
/* Whether it has bytes, or an end not yet passed on. */
bool relay_buffer_wants_write(const RelayBuffer *b);
/* Appends up to the room left (an allocated buffer); returns how much it took. For bytes that did not
 * come from the source fd: an answer a proxy writes itself, bytes read past a request head. */
size_t relay_buffer_put(RelayBuffer *b, const void *data, size_t n);
/* Reads what fd has and the buffer takes now; sets *progress when something happened (bytes, or the
 * end). 0 or -errno (EAGAIN is 0). */
int relay_buffer_read(RelayBuffer *b, int fd, bool *progress);
/* Writes what fd takes now, then passes an ended source on with shutdown(SHUT_WR). 0 or -errno. */
int relay_buffer_write(RelayBuffer *b, int fd, bool *progress);

/* A relay between fd a and fd b, with both buffers allocated. 0 or -ENOMEM. */
int relay_init(Relay *r, int a, int b);
/* Frees the buffers; the fds stay as they are. */
void relay_done(Relay *r);
/* The events fd[i] waits for now (POLLIN, POLLOUT, or both), 0 for none. */
uint32_t relay_events(const Relay *r, unsigned i);
/* Moves what can be moved now, both ways, for at most RELAY_STEPS_MAX rounds. 1 once both directions
 * are done (each source ended and passed on), 0 while it goes on, -errno on a read or write error:
 * then the relay is over and the caller closes both ends. */
int relay_step(Relay *r);

/* The event bus's local subscribers (events.c is the rest): each Attach gets one end of a socketpair; the
 * bus writes JSON lines to the other, never blocking. A subscriber first gets its replay from SQLite a
 * slice at a time, then live events, one write per batch; one that lets its buffer pass a bound is
 * dropped. When the session ends, its subscribers get what is left and then EOF. Also the bounded byte
 * buffers these and the rest of the bus use. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "events-internal.h"
#include "log.h"
#include "util.h"

/* A local subscriber that lets this much pile up is dropped. */
#define SUBSCRIBER_MAX_BUFFER (32U * 1024 * 1024)
/* The replay from SQLite is read in slices of about this size, each once the previous one is written. */
#define SUBSCRIBER_REPLAY_BYTES (1024U * 1024)
#define SUBSCRIBER_REPLAY_CHUNK 1000

/* ---- buffers ---- */

size_t buffer_len(const Buffer *buf) {
        return buf->end - buf->start;
}

void buffer_done(Buffer *buf) {
        buf->data = mfree(buf->data);
        buf->start = buf->end = buf->cap = 0;
}

int buffer_reserve(Buffer *buf, size_t extra) {
        size_t len = buffer_len(buf), cap;
        char *p;

        if (buf->start > 0 && (len == 0 || buf->start >= buf->cap / 2 || buf->end + extra > buf->cap)) {
                memmove(buf->data, buf->data + buf->start, len);
                buf->start = 0;
                buf->end = len;
        }
        if (buf->end + extra <= buf->cap)
                return 0;

        if (extra > SIZE_MAX / 2 - buf->end)
                return -ENOMEM;
        cap = buf->cap > 0 ? buf->cap : 4096;
        while (cap < buf->end + extra)
                cap *= 2;
        p = realloc(buf->data, cap);
        if (!p)
                return -ENOMEM;
        buf->data = p;
        buf->cap = cap;
        return 0;
}

int buffer_append(Buffer *buf, const void *data, size_t len) {
        int r;

        r = buffer_reserve(buf, len);
        if (r < 0)
                return r;
        memcpy(buf->data + buf->end, data, len);
        buf->end += len;
        return 0;
}

static void buffer_consume(Buffer *buf, size_t len) {
        buf->start += len;
        if (buf->start == buf->end)
                buf->start = buf->end = 0;
}

/* After a batch: a scratch buffer that grew for one huge batch does not keep the memory. */
void buffer_reset(Buffer *buf) {
        buf->start = buf->end = 0;
        if (buf->cap > 4U * 1024 * 1024)
                buffer_done(buf);
}

int buffer_append_json(const char *text, size_t len, void *userdata) {
        return buffer_append(userdata, text, len) < 0 ? -1 : 0;
}

int line_prefix(char *p, size_t size, uint64_t seq, uint64_t time) {
        return snprintf(p, size, "{\"seq\":%" PRIu64 ",\"time\":%" PRIu64 ",\"data\":", seq, time);
}

/* ---- local subscribers ---- */

void subscriber_free(Subscriber *sub) {
        BusSession *s;

        if (!sub)
                return;
        s = sub->session;

        if (sub->prev)
                sub->prev->next = sub->next;
        else
                s->subscribers = sub->next;
        if (sub->next)
                sub->next->prev = sub->prev;

        sub->io = sd_event_source_disable_unref(sub->io);
        safe_close(sub->fd);
        buffer_done(&sub->out);
        free(sub);
}

/* Writes what is pending, without blocking. -errno when the peer is gone. */
static int subscriber_write(Subscriber *sub) {
        while (buffer_len(&sub->out) > 0) {
                const char *p = sub->out.data + sub->out.start;
                ssize_t k;

                k = send(sub->fd, p, buffer_len(&sub->out), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                buffer_consume(&sub->out, (size_t) k);
        }
        return 0;
}

typedef struct ReplaySlice {
        Subscriber *sub;
        bool full;
} ReplaySlice;

static int replay_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        ReplaySlice *slice = userdata;
        Subscriber *sub = slice->sub;
        char prefix[LINE_PREFIX_MAX];
        int k, r;

        k = line_prefix(prefix, sizeof prefix, seq, time);
        r = buffer_reserve(&sub->out, (size_t) k + data_len + 2);
        if (r < 0)
                return r;
        (void) buffer_append(&sub->out, prefix, (size_t) k);
        (void) buffer_append(&sub->out, data, data_len);
        (void) buffer_append(&sub->out, "}\n", 2);
        sub->queued = seq;

        if (buffer_len(&sub->out) >= SUBSCRIBER_REPLAY_BYTES) {
                slice->full = true;
                return 1;
        }
        return 0;
}

/* The next slice of the replay from SQLite; live once it comes up short. */
static int subscriber_replay(Subscriber *sub) {
        ReplaySlice slice = { .sub = sub };
        int n;

        n = store_load_events(
                sub->session->bus->store,
                sub->session->id,
                sub->queued,
                SUBSCRIBER_REPLAY_CHUNK,
                replay_one,
                &slice);
        if (n < 0)
                return n;
        if (!slice.full && n < SUBSCRIBER_REPLAY_CHUNK)
                sub->live = true;
        return 0;
}

/* Writes, replays further while the socket takes it, and arms EPOLLOUT for the rest. Returns 1 when the
 * subscriber is done (the session ended and everything is written: EOF sent), -errno when it is to be
 * dropped, else 0. */
static int subscriber_pump(Subscriber *sub) {
        int r;

        for (;;) {
                r = subscriber_write(sub);
                if (r < 0)
                        return r;
                if (buffer_len(&sub->out) > 0 || sub->live)
                        break;
                r = subscriber_replay(sub);
                if (r < 0)
                        return r;
        }

        if (buffer_len(&sub->out) == 0 && sub->live && sub->ending) {
                (void) shutdown(sub->fd, SHUT_WR);
                return 1;
        }

        return sd_event_source_set_io_events(
                sub->io, EPOLLRDHUP | (buffer_len(&sub->out) > 0 ? EPOLLOUT : 0));
}

static int on_subscriber_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Subscriber *sub = userdata;
        BusSession *s = sub->session;
        int r;

        if (revents & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                log_debug("session %s: a subscriber closed its end.", s->id);
                subscriber_free(sub);
                bus_session_maybe_free(s);
                return 0;
        }

        r = subscriber_pump(sub);
        if (r != 0) {
                if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                subscriber_free(sub);
                bus_session_maybe_free(s);
        }
        return 0;
}

/* Queues text (whole lines) for a live subscriber: written at once if nothing is pending, the rest kept
 * for EPOLLOUT. -ENOBUFS when the subscriber has let too much pile up. */
static int subscriber_queue(Subscriber *sub, const char *text, size_t len) {
        size_t pending = buffer_len(&sub->out);
        int r;

        if (pending + len > SUBSCRIBER_MAX_BUFFER)
                return -ENOBUFS;

        if (pending == 0) {
                while (len > 0) {
                        ssize_t k = send(sub->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);

                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        break;
                                return -errno;
                        }
                        text += k;
                        len -= (size_t) k;
                }
                if (len == 0)
                        return 0;
        }

        r = buffer_append(&sub->out, text, len);
        if (r < 0)
                return r;
        return sd_event_source_set_io_events(sub->io, EPOLLRDHUP | EPOLLOUT);
}

void deliver_batch(BusSession *s, const BatchLine *lines, size_t n) {
        const char *text = s->bus->scratch.data + s->bus->scratch.start;
        size_t total = buffer_len(&s->bus->scratch);

        for (Subscriber *sub = s->subscribers, *next; sub; sub = next) {
                size_t first = 0;
                int r;

                next = sub->next;
                if (!sub->live)
                        continue; /* still replaying: it reads these from SQLite */

                while (first < n && lines[first].seq <= sub->queued)
                        first++;
                if (first == n)
                        continue;

                r = subscriber_queue(sub, text + lines[first].line_off, total - lines[first].line_off);
                if (r == -ENOBUFS)
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: dropping a subscriber that does not read (%zu bytes unread).",
                                s->id,
                                buffer_len(&sub->out),
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                else if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                if (r < 0) {
                        subscriber_free(sub);
                        continue;
                }
                sub->queued = lines[n - 1].seq;
        }
}

/* ---- the API ---- */

int event_bus_attach(EventBus *b, const char *session_id, uint64_t since, int *ret_fd) {
        _cleanup_close_ int ours = -EBADF, theirs = -EBADF;
        int pair[2], flags, r;
        BusSession *s;
        Subscriber *sub;

        if (!b || !session_id || !ret_fd)
                return -EINVAL;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
                return -errno;
        ours = pair[0];
        theirs = pair[1];

        /* Non-blocking is for our end; the reader gets an ordinary blocking descriptor. */
        flags = fcntl(theirs, F_GETFL);
        if (flags < 0 || fcntl(theirs, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;

        r = bus_session_get(b, session_id, &s);
        if (r < 0)
                return r;

        sub = calloc(1, sizeof(Subscriber));
        if (!sub) {
                bus_session_maybe_free(s);
                return -ENOMEM;
        }
        sub->session = s;
        sub->fd = TAKE_FD(ours);
        sub->queued = since;
        sub->next = s->subscribers;
        if (s->subscribers)
                s->subscribers->prev = sub;
        s->subscribers = sub;

        r = sd_event_add_io(b->event, &sub->io, sub->fd, EPOLLRDHUP, on_subscriber_io, sub);
        if (r >= 0) {
                (void) sd_event_source_set_description(sub->io, "event-subscriber");
                r = subscriber_pump(sub);
        }
        if (r < 0) {
                subscriber_free(sub);
                bus_session_maybe_free(s);
                return r;
        }
        /* A pump that returned 1 (ending) cannot happen here: a new subscriber is not ending. */

        *ret_fd = TAKE_FD(theirs);
        return 0;
}

void event_bus_session_ended(EventBus *b, const char *session_id) {
        BusSession *s;

        if (!b || !session_id)
                return;
        s = bus_session_find(b, session_id);
        if (!s)
                return;

        s->keep = false;
        for (Subscriber *sub = s->subscribers, *next; sub; sub = next) {
                int r;

                next = sub->next;
                sub->ending = true;
                r = subscriber_pump(sub);
                if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                if (r != 0)
                        subscriber_free(sub);
        }
        bus_session_maybe_free(s);
}

unsigned event_bus_n_subscribers(EventBus *b, const char *session_id) {
        BusSession *s;
        unsigned n = 0;

        if (!b || !session_id)
                return 0;
        s = bus_session_find(b, session_id);
        if (s)
                for (Subscriber *sub = s->subscribers; sub; sub = sub->next)
                        n++;
        return n;
}

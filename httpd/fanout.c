/* One Session.Attach per watched session, fanned out in-process: a Feed reads the daemon's Attach fd (JSON
 * lines of {"seq","time","data"}) once and hands each line to every stream of the session (stream.c),
 * each of which queues it for its own client within its own bound and drops itself when that bound is
 * reached, so a slow client never holds up the feed or the others, and the daemon writes each event once
 * to ccdocker-httpd however many clients watch. A feed starts with the first stream request of a session
 * (Attach after that request's since); requests that come while it attaches wait for it. A stream whose
 * since is behind the feed catches up by itself from GetOutput and then takes the feed's lines (stream.c);
 * seq only grows on a feed and on a stream, so nothing is sent twice or skipped. When the daemon drops the
 * fd while the session is live (it never waits for a reader), the feed attaches again after its last seq;
 * when the session ends, the feed ends its streams and goes. A feed with no streams left is freed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

/* An Attach line carries one event of up to 8 MiB with its escaping and wrapper. */
#define LINE_MAX_BYTES (64U * 1024U * 1024U)
#define READ_CHUNK 65536U
/* Attach again at once after an fd that brought events; after one that brought none, wait this long, and
 * give up after this many in a row (the session's State is late to say it ended). */
#define REATTACH_DELAY_USEC (100ULL * 1000ULL)
#define REATTACH_TRIES 50U

struct Feed {
        Server *server;
        char *id;
        bool in_map;

        int fd;
        sd_event_source *io;
        char *line;
        size_t line_len, line_cap;
        uint64_t last_seq; /* the last seq read from the daemon (or the first request's since) */
        bool attached;     /* has had an fd: requests join at once */
        bool got_event;
        unsigned empty_tries;
        sd_bus_slot *slot;
        sd_event_source *retry_timer;
        bool ended;

        Request *waiting; /* requests waiting for the first Attach */
        struct Stream **streams;
        size_t n_streams, cap_streams;
        unsigned busy; /* > 0 while handing out lines: removed streams leave a NULL */
};

static void feed_attach(Feed *f);

uint64_t feed_last_seq(Feed *f) {
        return f->last_seq;
}

bool feed_ended(Feed *f) {
        return f->ended;
}

unsigned feed_count(Server *s) {
        return (unsigned) hashmap_size(s->feeds);
}

static void feed_close_fd(Feed *f) {
        f->io = sd_event_source_disable_unref(f->io);
        f->fd = safe_close(f->fd);
}

static void feed_unmap(Feed *f) {
        if (f->in_map)
                (void) hashmap_remove(f->server->feeds, f->id);
        f->in_map = false;
}

static void feed_free(Feed *f) {
        if (!f)
                return;
        feed_unmap(f);
        feed_close_fd(f);
        sd_bus_slot_unref(f->slot);
        sd_event_source_disable_unref(f->retry_timer);
        free(f->streams);
        free(f->line);
        free(f->id);
        free(f);
}

static void feed_maybe_free(Feed *f) {
        if (f->busy == 0 && f->n_streams == 0 && !f->waiting)
                feed_free(f);
}

int feed_add(Feed *f, struct Stream *st) {
        if (f->n_streams == f->cap_streams) {
                size_t cap = f->cap_streams ? f->cap_streams * 2 : 8;
                struct Stream **p = reallocarray(f->streams, cap, sizeof(struct Stream *));

                if (!p)
                        return -ENOMEM;
                f->streams = p;
                f->cap_streams = cap;
        }
        f->streams[f->n_streams++] = st;
        return 0;
}

void feed_remove(Feed *f, struct Stream *st) {
        for (size_t i = 0; i < f->n_streams; i++) {
                if (f->streams[i] != st)
                        continue;
                if (f->busy > 0)
                        f->streams[i] = NULL; /* compacted when the lines are out */
                else {
                        f->streams[i] = f->streams[--f->n_streams];
                        feed_maybe_free(f);
                }
                return;
        }
}

static void feed_compact(Feed *f) {
        size_t j = 0;

        for (size_t i = 0; i < f->n_streams; i++)
                if (f->streams[i])
                        f->streams[j++] = f->streams[i];
        f->n_streams = j;
}

/* The session ended (or cannot be followed): every stream ends once it has what there is. */
static void feed_end(Feed *f, const char *reason) {
        f->ended = true;
        feed_unmap(f); /* new requests start a feed of their own */
        feed_close_fd(f);
        f->busy++;
        for (size_t i = 0; i < f->n_streams; i++)
                if (f->streams[i])
                        stream_feed_ended(f->streams[i], reason);
        f->busy--;
        feed_compact(f);
        feed_maybe_free(f);
}

/* One line: to every stream of the feed. */
static void feed_line(Feed *f, const char *line, size_t len) {
        const char *p = startswith(line, "{\"seq\":");
        WsFrame *frame = NULL; /* the WebSocket frame, built once for all the streams that take it */
        uint64_t seq;

        if (!p)
                return;
        seq = strtoull(p, NULL, 10);
        if (seq <= f->last_seq)
                return; /* already handed out: a replay after attaching again */
        f->last_seq = seq;
        f->got_event = true;
        for (size_t i = 0; i < f->n_streams; i++)
                if (f->streams[i])
                        (void) stream_line(f->streams[i], seq, line, len, &frame);
        ws_frame_unref(frame);
}

static int on_state(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Feed *f = userdata;

        f->retry_timer = sd_event_source_disable_unref(f->retry_timer);
        feed_attach(f);
        return 0;
}

static int on_state(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Feed *f = userdata;
        const char *state = NULL;

        f->slot = sd_bus_slot_unref(f->slot);
        if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "v", "s", &state) < 0) {
                feed_end(f, "session gone");
                return 0;
        }
        if (streq(state, "stopped") || streq(state, "failed")) {
                feed_end(f, "session ended");
                return 0;
        }
        if (f->got_event) {
                f->empty_tries = 0;
                feed_attach(f);
                return 0;
        }
        if (++f->empty_tries > REATTACH_TRIES) {
                feed_end(f, "session ended");
                return 0;
        }
        if (sd_event_add_time_relative(
                    f->server->event,
                    &f->retry_timer,
                    CLOCK_MONOTONIC,
                    REATTACH_DELAY_USEC,
                    0,
                    on_retry,
                    f) < 0)
                feed_end(f, "internal error");
        return 0;
}

/* The Attach fd ended: the session ended, or the daemon dropped us. */
static void feed_eof(Feed *f) {
        _cleanup_free_ char *path = NULL;
        int r;

        feed_close_fd(f);
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, f->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        f->server->bus,
                        &f->slot,
                        BUS_NAME,
                        path,
                        "org.freedesktop.DBus.Properties",
                        "Get",
                        on_state,
                        f,
                        "ss",
                        SESSION_INTERFACE,
                        "State");
        if (r < 0)
                feed_end(f, "internal error");
}

/* Reads one chunk and hands out its lines; true if there may be more to read now. */
static bool feed_read(Feed *f) {
        size_t scanned, start = 0;
        ssize_t k;

        if (f->line_cap - f->line_len < READ_CHUNK) {
                size_t cap = f->line_cap ? f->line_cap * 2 : 2 * READ_CHUNK;
                char *p;

                if (cap > LINE_MAX_BYTES + READ_CHUNK) {
                        log_warning("session %s: an Attach line is too long.", f->id);
                        feed_end(f, "internal error");
                        return false;
                }
                p = realloc(f->line, cap);
                if (!p) {
                        feed_end(f, "internal error");
                        return false;
                }
                f->line = p;
                f->line_cap = cap;
        }
        do
                k = read(f->fd, f->line + f->line_len, READ_CHUNK);
        while (k < 0 && errno == EINTR);
        if (k < 0 && errno == EAGAIN)
                return false;
        if (k <= 0) {
                f->line_len = 0;
                feed_eof(f);
                return false;
        }
        scanned = f->line_len;
        f->line_len += (size_t) k;
        for (char *nl; (nl = memchr(f->line + scanned, '\n', f->line_len - scanned));) {
                size_t end = (size_t) (nl - f->line);

                *nl = '\0';
                feed_line(f, f->line + start, end - start);
                start = scanned = end + 1;
        }
        if (start > 0) {
                memmove(f->line, f->line + start, f->line_len - start);
                f->line_len -= start;
        }
        return (size_t) k == READ_CHUNK;
}

static int on_feed_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Feed *f = userdata;

        f->busy++;
        /* A chunk at a time, each sent on before the next is read: a burst after a stall is queued for a
         * client only as far as its socket does not take it. */
        for (unsigned round = 0; round < 16; round++) {
                bool more = feed_read(f);

                for (size_t i = 0; i < f->n_streams; i++)
                        if (f->streams[i])
                                (void) stream_flush(f->streams[i]);
                if (!more || f->fd < 0)
                        break;
        }
        f->busy--;
        feed_compact(f);
        feed_maybe_free(f);
        return 0;
}

static int feed_watch(Feed *f, int fd) {
        int r;

        f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (f->fd < 0)
                return -errno;
        if (fcntl(f->fd, F_SETFL, O_NONBLOCK) < 0)
                return -errno;
        r = sd_event_add_io(f->server->event, &f->io, f->fd, EPOLLIN, on_feed_io, f);
        if (r < 0)
                return r;
        /* Below D-Bus and HTTP: a flood of events does not starve requests. */
        return sd_event_source_set_priority(f->io, SD_EVENT_PRIORITY_NORMAL + 1);
}

/* The first Attach failed: its error (m, or NULL for an unreadable reply) answers every waiting request,
 * and the feed goes. */
static void feed_refuse(Feed *f, sd_bus_message *m) {
        feed_unmap(f);
        while (f->waiting) {
                Request *req = f->waiting;

                f->waiting = req->feed_next;
                req->feed_next = NULL;
                req->feed = NULL;
                if (m)
                        request_reply_bus_error(
                                req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
                else
                        request_reply_error(req, 502, "daemon_error", "ccdockerd sent an unexpected reply");
        }
        feed_maybe_free(f);
}

static int on_attached(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Feed *f = userdata;
        int fd, r;

        f->slot = sd_bus_slot_unref(f->slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                if (!f->attached) {
                        feed_refuse(f, m);
                        return 0;
                }
                feed_end(f, "session gone");
                return 0;
        }
        r = sd_bus_message_read(m, "h", &fd);
        if (r >= 0)
                r = feed_watch(f, fd);
        if (r < 0) {
                log_warning_errno(r, "session %s: cannot follow the Attach fd: %m", f->id);
                feed_close_fd(f);
                if (!f->attached) {
                        feed_refuse(f, NULL);
                        return 0;
                }
                feed_end(f, "internal error");
                return 0;
        }
        f->got_event = false;
        if (f->attached)
                return 0;
        f->attached = true;
        f->busy++;
        while (f->waiting) {
                Request *req = f->waiting;

                f->waiting = req->feed_next;
                req->feed_next = NULL;
                req->feed = NULL;
                stream_attached(req, f);
        }
        f->busy--;
        feed_compact(f);
        feed_maybe_free(f);
        return 0;
}

static void feed_attach(Feed *f) {
        _cleanup_free_ char *path = NULL;
        int r;

        f->line_len = 0;
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, f->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        f->server->bus,
                        &f->slot,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "Attach",
                        on_attached,
                        f,
                        "t",
                        f->last_seq);
        if (r < 0)
                feed_end(f, "internal error");
}

void feed_forget_request(Request *req) {
        Feed *f = req->feed;

        if (!f)
                return;
        for (Request **p = &f->waiting; *p; p = &(*p)->feed_next)
                if (*p == req) {
                        *p = req->feed_next;
                        break;
                }
        req->feed = NULL;
        req->feed_next = NULL;
        feed_maybe_free(f);
}

void feed_request(Request *req) {
        Server *s = req->server;
        Feed *f = hashmap_get(s->feeds, req->id);
        int r;

        if (f && f->attached) {
                stream_attached(req, f);
                return;
        }
        if (!f) {
                f = calloc(1, sizeof(Feed));
                if (!f) {
                        request_reply_error(req, 500, "internal", "out of memory");
                        return;
                }
                *f = (Feed){ .server = s, .fd = -EBADF, .last_seq = req->since, .id = strdup(req->id) };
                r = f->id ? hashmap_put(s->feeds, f->id, f) : -ENOMEM;
                if (r < 0) {
                        feed_free(f);
                        request_reply_error(req, 500, "internal", "out of memory");
                        return;
                }
                f->in_map = true;
                req->feed = f;
                f->waiting = req;
                feed_attach(f);
                return;
        }
        req->feed = f;
        req->feed_next = f->waiting;
        f->waiting = req;
}

void feeds_free(Server *s) {
        Feed *f;
        Iterator i;

        /* At exit, after every stream and request is gone. */
        HASHMAP_FOREACH(f, s->feeds, i)
        feed_free(f);
}

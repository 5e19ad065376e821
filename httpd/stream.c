/* GET /api/v1/sessions/{id}/stream: a session's events, live, as WebSocket text frames (wslay on the
 * socket libmicrohttpd hands over after the 101) or as Server-Sent Events for clients that accept
 * text/event-stream. Every stream of a session takes its lines from the session's one Feed (fanout.c, one
 * Session.Attach) and sends each line as it is, one event per frame. ?since=SEQ (or SSE's Last-Event-ID)
 * starts after SEQ, and seq never goes backwards on a stream, so a client that reconnects with the last seq
 * it saw loses nothing and gets nothing twice: a stream whose since is behind its feed first catches up
 * from GetOutput, a page at a time as its client reads, and takes the feed's lines once it has reached
 * them. When the session ends, the stream ends (WebSocket close 1000, SSE "event: end"). Each stream
 * queues at most --stream-queue bytes for its client; a client that does not read that fast is dropped
 * (WebSocket close 1008 with "reconnect with since", SSE "event: end" with reason "too slow"), so it costs
 * a bounded buffer here and nothing to the other clients or the daemon. WebSocket clients are pinged every
 * PING_INTERVAL and dropped after PING_TIMEOUT of silence; SSE streams get a comment line as often, which
 * is how a client that went away is noticed. The WebSocket handshake echoes the subprotocol WS_PROTOCOL
 * when offered, never the bearer.TOKEN offered beside it (server.c authenticates with that). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <wslay/wslay.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

/* GetOutput pages of a stream that catches up; the next is asked for when less than half the queue waits. */
#define CATCHUP_PAGE 500U
#define PING_INTERVAL_USEC (20ULL * 1000000ULL)
#define PING_TIMEOUT_USEC (50ULL * 1000000ULL)
#define CLOSE_TIMEOUT_USEC (5ULL * 1000000ULL)
/* A dropped slow client has this long to read what it has and the close frame. */
#define SLOW_CLOSE_TIMEOUT_USEC (30ULL * 1000000ULL)

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Queued frames handed to one sendmsg(): what a turn of the loop queued goes in one system call. */
#define WS_IOV_MAX 64U

/* A WebSocket text frame (header and payload, unmasked as a server sends it), built once per event and
 * shared by every stream that queues it. */
struct WsFrame {
        unsigned n_ref;
        size_t len;
        uint8_t data[];
};

typedef struct Stream {
        Server *server;
        struct Stream *prev, *next;
        bool linked;
        char *id;
        bool websocket;

        /* The session's feed, and where this stream is in it. */
        Feed *feed;
        uint64_t last_seq; /* the last seq queued for the client */
        bool live;         /* the client is there (upgraded, or the SSE response is out) */
        bool catching_up;  /* behind the feed: reading GetOutput pages */
        bool page_wanted;  /* the next page waits for the client to read */
        sd_bus_slot *page_slot;
        const char *end_reason; /* the feed ended: end once caught up */
        bool ended;

        sd_event_source *ping_timer;
        uint64_t last_recv_usec;

        /* WebSocket */
        struct MHD_UpgradeResponseHandle *urh;
        int sock;
        sd_event_source *sock_io;
        wslay_event_context_ptr ctx; /* reads, and the control frames (pong, ping, close) */
        /* The data frames queued for the client, a ring: frames[(head + i) % cap]; frame_off bytes of the
         * first are sent, and nothing else may go until it is whole. wslay only sends between frames. */
        WsFrame **frames;
        size_t frames_head, frames_n, frames_cap, frame_off;
        size_t frames_bytes;      /* of the queued frames, whole */
        const char *close_reason; /* close 1000 with it once the queue is out */
        char *extra;
        size_t extra_len, extra_off;
        sd_event_source *close_timer;

        /* SSE */
        struct MHD_Connection *connection;
        bool suspended;
        char *out;
        size_t out_start, out_end, out_cap;
        bool done, failed;
} Stream;

static void ws_close(Stream *st);
static int ws_update(Stream *st);
static void sse_wake(Stream *st);
static int stream_end(Stream *st, const char *reason);
static int catchup_next(Stream *st);

unsigned stream_count(Server *s, bool websocket) {
        unsigned n = 0;

        for (Stream *st = s->streams; st; st = st->next)
                n += st->websocket == websocket;
        return n;
}

static WsFrame *ws_frame_new(const char *payload, size_t len) {
        size_t header = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
        WsFrame *fr = malloc(offsetof(WsFrame, data) + header + len);

        if (!fr)
                return NULL;
        fr->n_ref = 1;
        fr->len = header + len;
        fr->data[0] = 0x81; /* FIN, text */
        if (header == 2)
                fr->data[1] = (uint8_t) len;
        else if (header == 4) {
                fr->data[1] = 126;
                fr->data[2] = (uint8_t) (len >> 8);
                fr->data[3] = (uint8_t) len;
        } else {
                fr->data[1] = 127;
                for (unsigned i = 0; i < 8; i++)
                        fr->data[2 + i] = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
        }
        memcpy(fr->data + header, payload, len);
        return fr;
}

static WsFrame *ws_frame_ref(WsFrame *fr) {
        fr->n_ref++;
        return fr;
}

void ws_frame_unref(WsFrame *fr) {
        if (fr && --fr->n_ref == 0)
                free(fr);
}

static void stream_link(Stream *st) {
        Server *s = st->server;

        st->next = s->streams;
        if (s->streams)
                s->streams->prev = st;
        s->streams = st;
        st->linked = true;
}

static void stream_unlink(Stream *st) {
        if (!st->linked)
                return;
        if (st->prev)
                st->prev->next = st->next;
        else
                st->server->streams = st->next;
        if (st->next)
                st->next->prev = st->prev;
        st->prev = st->next = NULL;
        st->linked = false;
}

static void stream_leave_feed(Stream *st) {
        Feed *f = st->feed;

        st->feed = NULL;
        st->page_slot = sd_bus_slot_unref(st->page_slot);
        st->page_wanted = false;
        if (f)
                feed_remove(f, st);
}

void stream_free(Stream *st) {
        if (!st)
                return;
        stream_unlink(st);
        stream_leave_feed(st);
        sd_event_source_disable_unref(st->ping_timer);
        sd_event_source_disable_unref(st->sock_io);
        sd_event_source_disable_unref(st->close_timer);
        if (st->ctx)
                wslay_event_context_free(st->ctx);
        for (size_t i = 0; i < st->frames_n; i++)
                ws_frame_unref(st->frames[(st->frames_head + i) % st->frames_cap]);
        free(st->frames);
        if (st->urh) {
                (void) MHD_upgrade_action(st->urh, MHD_UPGRADE_ACTION_CLOSE);
                server_kick(st->server);
        }
        free(st->extra);
        free(st->out);
        free(st->id);
        free(st);
}

/* Bytes queued for the client. */
static size_t stream_queued(Stream *st) {
        if (st->websocket)
                return st->frames_bytes - st->frame_off +
                        (st->ctx ? wslay_event_get_queued_msg_length(st->ctx) : 0);
        return st->out_end - st->out_start;
}

/* The client read: a stream that catches up asks for its next page once half its queue is free. */
static void stream_drained(Stream *st) {
        /* On failure, tried again when the client reads more. */
        if (st->page_wanted && stream_queued(st) < st->server->limits.stream_queue / 2)
                st->page_wanted = catchup_next(st) < 0;
}

/* ---- SSE ---- */

/* force: beyond the queue's bound (the last words of a dropped stream). */
static int sse_append_full(
        Stream *st, const char *a, size_t a_len, const char *b, size_t b_len, const char *c, bool force) {
        size_t c_len = strlen(c), need = a_len + b_len + c_len;

        if (!force && st->out_end - st->out_start + need > st->server->limits.stream_queue)
                return -ENOBUFS;
        if (st->out_start > 0 && st->out_end + need > st->out_cap) {
                memmove(st->out, st->out + st->out_start, st->out_end - st->out_start);
                st->out_end -= st->out_start;
                st->out_start = 0;
        }
        if (st->out_end + need > st->out_cap) {
                size_t cap = st->out_cap ? st->out_cap : 16384;
                char *p;

                while (cap < st->out_end + need)
                        cap *= 2;
                p = realloc(st->out, cap);
                if (!p)
                        return -ENOMEM;
                st->out = p;
                st->out_cap = cap;
        }
        memcpy(st->out + st->out_end, a, a_len);
        memcpy(st->out + st->out_end + a_len, b, b_len);
        memcpy(st->out + st->out_end + a_len + b_len, c, c_len);
        st->out_end += need;
        return 0;
}

static int sse_append(Stream *st, const char *a, size_t a_len, const char *b, size_t b_len, const char *c) {
        return sse_append_full(st, a, a_len, b, b_len, c, false);
}

static void sse_wake(Stream *st) {
        if (!st->suspended)
                return;
        st->suspended = false;
        MHD_resume_connection(st->connection);
        server_kick(st->server);
}

static void sse_fail(Stream *st) {
        st->done = st->failed = true;
        stream_leave_feed(st);
        sse_wake(st);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Stream *st = cls;
        size_t n = st->out_end - st->out_start;

        if (st->failed)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0) {
                if (n > max)
                        n = max;
                memcpy(buf, st->out + st->out_start, n);
                st->out_start += n;
                if (st->out_start == st->out_end)
                        st->out_start = st->out_end = 0;
                stream_drained(st);
                return (ssize_t) n;
        }
        if (st->done)
                return MHD_CONTENT_READER_END_OF_STREAM;
        /* Nothing to send: wait, off MHD's loop, until there is. */
        st->suspended = true;
        MHD_suspend_connection(st->connection);
        return 0;
}

static void sse_free(void *cls) {
        stream_free(cls);
}

/* ---- WebSocket ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user_data) {
        Stream *st = user_data;
        ssize_t k;

        if (st->extra_off < st->extra_len) {
                size_t n = st->extra_len - st->extra_off;

                if (n > len)
                        n = len;
                memcpy(buf, st->extra + st->extra_off, n);
                st->extra_off += n;
                return (ssize_t) n;
        }
        do
                k = recv(st->sock, buf, len, MSG_DONTWAIT);
        while (k < 0 && errno == EINTR);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        if (k <= 0) {
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        (void) sd_event_now(st->server->event, CLOCK_MONOTONIC, &st->last_recv_usec);
        return k;
}

static ssize_t ws_send(
        wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user_data) {
        Stream *st = user_data;
        ssize_t k;

        do
                k =
                        send(st->sock,
                             data,
                             len,
                             MSG_DONTWAIT | MSG_NOSIGNAL | (flags & WSLAY_MSG_MORE ? MSG_MORE : 0));
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                wslay_event_set_error(
                        ctx,
                        errno == EAGAIN || errno == EWOULDBLOCK ? WSLAY_ERR_WOULDBLOCK
                                                                : WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        return k;
}

static void ws_on_msg(
        wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user_data) {
        /* Clients have nothing to say on this stream; wslay answers pings and close frames itself. */
}

static int ws_queue_frame(Stream *st, WsFrame *fr) {
        if (st->frames_n == st->frames_cap) {
                size_t cap = st->frames_cap ? st->frames_cap * 2 : 64;
                WsFrame **p = malloc(cap * sizeof(WsFrame *));

                if (!p)
                        return -ENOMEM;
                for (size_t i = 0; i < st->frames_n; i++)
                        p[i] = st->frames[(st->frames_head + i) % st->frames_cap];
                free(st->frames);
                st->frames = p;
                st->frames_cap = cap;
                st->frames_head = 0;
        }
        st->frames[(st->frames_head + st->frames_n) % st->frames_cap] = fr;
        st->frames_n++;
        st->frames_bytes += fr->len;
        return 0;
}

static void ws_pop_frame(Stream *st) {
        WsFrame *fr = st->frames[st->frames_head];

        st->frames_bytes -= fr->len;
        st->frames_head = (st->frames_head + 1) % st->frames_cap;
        st->frames_n--;
        st->frame_off = 0;
        ws_frame_unref(fr);
}

/* Drops the queued frames but one begun (it must go whole before a close frame). */
static void ws_drop_frames(Stream *st) {
        size_t keep = st->frame_off > 0 ? 1 : 0;

        while (st->frames_n > keep) {
                size_t last = (st->frames_head + st->frames_n - 1) % st->frames_cap;

                st->frames_bytes -= st->frames[last]->len;
                ws_frame_unref(st->frames[last]);
                st->frames_n--;
        }
}

/* Writes queued frames, up to WS_IOV_MAX in one sendmsg(): 1 when the queue is out, 0 when the socket
 * is full, < 0 on error. */
static int ws_write_frames(Stream *st) {
        struct iovec iov[WS_IOV_MAX];
        struct msghdr mh = { .msg_iov = iov };
        size_t n = 0;
        ssize_t k;

        while (n < st->frames_n && n < WS_IOV_MAX) {
                WsFrame *fr = st->frames[(st->frames_head + n) % st->frames_cap];
                size_t off = n == 0 ? st->frame_off : 0;

                iov[n++] = (struct iovec){ .iov_base = fr->data + off, .iov_len = fr->len - off };
        }
        mh.msg_iovlen = n;
        do
                k = sendmsg(st->sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        for (size_t left = (size_t) k; left > 0 && st->frames_n > 0;) {
                size_t rest = st->frames[st->frames_head]->len - st->frame_off;

                if (left < rest) {
                        st->frame_off += left;
                        break;
                }
                left -= rest;
                ws_pop_frame(st);
        }
        if (st->frames_n == 0)
                return 1;
        return st->frame_off == 0 && n == WS_IOV_MAX ? 1 : 0;
}

/* Sends what can go, in an order that never splits a frame: the data frame begun, then wslay's
 * control frames, then the other data frames; a close waiting for the queue goes once it is out, and
 * nothing goes after a close. */
static int ws_send_pending(Stream *st) {
        for (;;) {
                int r;

                if (st->frame_off == 0 && wslay_event_want_write(st->ctx)) {
                        if (wslay_event_send(st->ctx) < 0)
                                return -ECONNRESET;
                        if (wslay_event_want_write(st->ctx))
                                return 0; /* the socket is full */
                }
                if (wslay_event_get_close_sent(st->ctx)) {
                        ws_drop_frames(st);
                        if (st->frames_n == 0)
                                return 0;
                } else if (st->frames_n == 0) {
                        if (!st->close_reason)
                                return 0;
                        r = wslay_event_queue_close(
                                st->ctx, 1000, (const uint8_t *) st->close_reason, strlen(st->close_reason));
                        st->close_reason = NULL;
                        if (r != 0)
                                return -ECONNRESET;
                        continue;
                }
                r = ws_write_frames(st);
                if (r <= 0)
                        return r;
        }
}

/* Sends what can be sent, and watches the socket for what wslay wants next; closes when it wants
 * nothing more (both close frames went) or the peer is gone. */
static int ws_update(Stream *st) {
        uint32_t events = 0;

        if (ws_send_pending(st) < 0) {
                ws_close(st);
                return -ECONNRESET;
        }
        stream_drained(st);
        if (wslay_event_want_read(st->ctx))
                events |= EPOLLIN;
        if (wslay_event_want_write(st->ctx) || st->frames_n > 0)
                events |= EPOLLOUT;
        if (events == 0) {
                ws_close(st);
                return -ECONNRESET;
        }
        (void) sd_event_source_set_io_events(st->sock_io, events);
        return 0;
}

static int on_ws_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Stream *st = userdata;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (wslay_event_recv(st->ctx) < 0) {
                        ws_close(st);
                        return 0;
                }
        }
        (void) ws_update(st);
        return 0;
}

static void ws_close(Stream *st) {
        log_debug("session %s: WebSocket client gone.", st->id);
        stream_free(st);
}

static int on_close_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        ws_close(userdata);
        return 0;
}

/* ---- the events ---- */

static void stream_drop(Stream *st, const char *why) {
        log_notice(
                "session %s: dropping a %s client: %s.", st->id, st->websocket ? "WebSocket" : "SSE", why);
        if (st->websocket)
                ws_close(st);
        else
                sse_fail(st);
}

/* The client does not read as fast as the session writes: it leaves the feed, and its stream ends with
 * what is queued, then a WebSocket close 1008 (sent ahead of the queued frames it will never get) or an SSE
 * end event naming the reason. The client reconnects with the last seq it got. Returns < 0 if freed. */
static int stream_drop_slow(Stream *st) {
        static const char reason[] = "too slow: reconnect with since=<the last seq you got>";

        log_notice(
                "session %s: dropping a %s client after seq %" PRIu64 ": more than %" PRIu64
                " bytes wait for it.",
                st->id,
                st->websocket ? "WebSocket" : "SSE",
                st->last_seq,
                st->server->limits.stream_queue);
        metrics_refusal(st->server->metrics, "slow_client");
        st->ended = true;
        stream_leave_feed(st);
        if (st->websocket) {
                ws_drop_frames(st); /* the close goes ahead of them */
                st->close_reason = NULL;
                if (wslay_event_queue_close(st->ctx, 1008, (const uint8_t *) reason, strlen(reason)) != 0 ||
                    sd_event_add_time_relative(
                            st->server->event,
                            &st->close_timer,
                            CLOCK_MONOTONIC,
                            SLOW_CLOSE_TIMEOUT_USEC,
                            0,
                            on_close_timeout,
                            st) < 0) {
                        ws_close(st);
                        return -ENOBUFS;
                }
                return 0;
        }
        _cleanup_free_ char *data = NULL;
        if (asprintf(
                    &data,
                    "event: end\ndata: {\"reason\":\"too slow\",\"last_seq\":%" PRIu64 "}\n\n",
                    st->last_seq) < 0 ||
            sse_append_full(st, data, strlen(data), "", 0, "", true) < 0) {
                sse_fail(st);
                return -ENOMEM;
        }
        st->done = true;
        sse_wake(st);
        return 0;
}

/* One event for the client, queued within the bound; a WebSocket takes the frame *shared (built by the
 * first stream that needs it, when shared is not NULL). Returns < 0 if the stream was freed or dropped. */
static int stream_event(Stream *st, uint64_t seq, const char *line, size_t len, WsFrame **shared) {
        char seqbuf[32];
        int r;

        if (st->ended || seq <= st->last_seq)
                return 0;
        /* What the client's socket takes does not count: send before judging. */
        if (st->websocket && stream_queued(st) + len > st->server->limits.stream_queue &&
            ws_send_pending(st) < 0) {
                ws_close(st);
                return -ECONNRESET;
        }
        /* An event larger than the queue still goes to a client that has read everything. */
        if (stream_queued(st) > 0 && stream_queued(st) + len > st->server->limits.stream_queue) {
                (void) stream_drop_slow(st);
                return -ENOBUFS;
        }
        st->last_seq = seq;

        if (st->websocket) {
                WsFrame *fr = shared && *shared ? ws_frame_ref(*shared) : ws_frame_new(line, len);

                if (!fr) {
                        ws_close(st);
                        return -EIO;
                }
                if (shared && !*shared)
                        *shared = ws_frame_ref(fr);
                if (ws_queue_frame(st, fr) < 0) {
                        ws_frame_unref(fr);
                        ws_close(st);
                        return -EIO;
                }
                metrics_event_sent(st->server->metrics, true);
                return 0;
        }

        snprintf(seqbuf, sizeof seqbuf, "id: %" PRIu64 "\ndata: ", seq);
        r = sse_append(st, seqbuf, strlen(seqbuf), line, len, "\n\n");
        if (r < 0) {
                stream_drop(st, "out of memory");
                return r;
        }
        metrics_event_sent(st->server->metrics, false);
        return 0;
}

int stream_line(Stream *st, uint64_t seq, const char *line, size_t len, WsFrame **frame) {
        /* Until it is live or while it catches up, the stream takes its events from elsewhere. */
        if (!st->live || st->catching_up)
                return 0;
        return stream_event(st, seq, line, len, frame);
}

int stream_flush(Stream *st) {
        if (!st->live)
                return 0;
        if (st->websocket)
                return ws_update(st);
        sse_wake(st);
        return 0;
}

static int stream_end(Stream *st, const char *reason) {
        st->ended = true;
        stream_leave_feed(st);
        if (st->websocket) {
                /* After the frames queued: close 1000 goes once they are out (ws_send_pending()). */
                st->close_reason = reason;
                (void) sd_event_add_time_relative(
                        st->server->event,
                        &st->close_timer,
                        CLOCK_MONOTONIC,
                        CLOSE_TIMEOUT_USEC,
                        0,
                        on_close_timeout,
                        st);
                return ws_update(st);
        }
        _cleanup_free_ char *data = NULL;
        if (asprintf(
                    &data,
                    "event: end\ndata: {\"reason\":\"%s\",\"last_seq\":%" PRIu64 "}\n\n",
                    reason,
                    st->last_seq) < 0 ||
            sse_append_full(st, data, strlen(data), "", 0, "", true) < 0) {
                sse_fail(st);
                return 0;
        }
        st->done = true;
        sse_wake(st);
        return 0;
}

void stream_feed_ended(Stream *st, const char *reason) {
        st->end_reason = reason;
        if (st->live && !st->catching_up && !st->ended)
                (void) stream_end(st, reason);
}

/* Caught up (or the store has nothing more): the feed's lines from here on, or the end. */
static void stream_joined(Stream *st) {
        st->catching_up = false;
        if (st->end_reason && !st->ended)
                (void) stream_end(st, st->end_reason);
}

static int on_page(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Stream *st = userdata;
        uint64_t seq, time;
        const char *data;
        unsigned n = 0;
        int r;

        st->page_slot = sd_bus_slot_unref(st->page_slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                if (st->end_reason)
                        (void) stream_end(st, st->end_reason);
                else
                        stream_drop(st, "its session's events cannot be read");
                return 0;
        }
        r = sd_bus_message_enter_container(m, 'a', "(tts)");
        while (r >= 0 && (r = sd_bus_message_read(m, "(tts)", &seq, &time, &data)) > 0) {
                _cleanup_free_ char *line = NULL;
                int k;

                n++;
                if (seq <= st->last_seq)
                        continue;
                /* The line as Attach writes it (daemon/events-subscribers.c: line_prefix). */
                k = asprintf(
                        &line, "{\"seq\":%" PRIu64 ",\"time\":%" PRIu64 ",\"data\":%s}", seq, time, data);
                if (k < 0) {
                        stream_drop(st, "out of memory");
                        return 0;
                }
                if (stream_event(st, seq, line, (size_t) k, NULL) < 0)
                        return 0; /* dropped */
        }
        if (r < 0) {
                stream_drop(st, "ccdockerd sent an unexpected reply");
                return 0;
        }
        if (stream_flush(st) < 0)
                return 0;
        if (st->ended)
                return 0;
        /* Joined when it has what the feed has handed out. An empty page below the feed would mean the
         * store lost events: the stream joins and the gap is the store's. */
        if (n == 0 || !st->feed || st->last_seq >= feed_last_seq(st->feed)) {
                if (n > 0 && st->feed && !feed_ended(st->feed) && st->last_seq < feed_last_seq(st->feed))
                        log_warning(
                                "session %s: the store has nothing after seq %" PRIu64 ", the stream "
                                "had %" PRIu64,
                                st->id,
                                st->last_seq,
                                feed_last_seq(st->feed));
                if (n == 0 || !st->end_reason) {
                        stream_joined(st);
                        return 0;
                }
        }
        if (stream_queued(st) >= st->server->limits.stream_queue / 2)
                st->page_wanted = true;
        else if (catchup_next(st) < 0)
                stream_drop(st, "its session's events cannot be read");
        return 0;
}

/* Asks for the next page; < 0 if it cannot (nothing freed). */
static int catchup_next(Stream *st) {
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(SESSION_PATH_PREFIX, st->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        st->server->bus,
                        &st->page_slot,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "GetOutput",
                        on_page,
                        st,
                        "tu",
                        st->last_seq,
                        CATCHUP_PAGE);
        if (r < 0)
                log_warning_errno(r, "session %s: cannot ask for the stream's next events: %m", st->id);
        return r;
}

/* The client is there: take the feed's lines, after catching up if the feed is ahead. */
static int stream_go_live(Stream *st) {
        st->live = true;
        if (!st->feed)
                return 0; /* a stream of no session (tests/fuzz/fuzz-websocket.c) */
        if (feed_last_seq(st->feed) > st->last_seq) {
                st->catching_up = true;
                if (catchup_next(st) < 0) {
                        stream_drop(st, "its session's events cannot be read");
                        return -EIO; /* a WebSocket is freed, an SSE stream ends */
                }
                return 0;
        }
        if (st->end_reason)
                return stream_end(st, st->end_reason);
        return 0;
}

static int on_ping(sd_event_source *source, uint64_t usec, void *userdata) {
        Stream *st = userdata;

        if (st->websocket) {
                struct wslay_event_msg msg = { .opcode = WSLAY_PING, .msg = NULL, .msg_length = 0 };

                if (usec > st->last_recv_usec + PING_TIMEOUT_USEC) {
                        stream_drop(st, "it did not answer pings");
                        return 0;
                }
                if (!st->ended)
                        (void) wslay_event_queue_msg(st->ctx, &msg);
                if (ws_update(st) < 0)
                        return 0; /* freed */
        } else if (!st->done) {
                if (sse_append(st, ": ping\n\n", 8, "", 0, "") < 0) {
                        sse_fail(st);
                        return 0;
                }
                sse_wake(st);
        }
        (void) sd_event_source_set_time_relative(source, PING_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(source, SD_EVENT_ON);
        return 0;
}

/* ---- the start: Attach, then upgrade or answer with SSE ---- */

static Stream *stream_new(Request *req, Feed *f) {
        Stream *st = calloc(1, sizeof(Stream));

        if (!st)
                return NULL;
        *st = (Stream){
                .server = req->server,
                .id = strdup(req->id),
                .websocket = req->websocket,
                .last_seq = req->since,
                .sock = -EBADF,
        };
        if (!st->id || (f && feed_add(f, st) < 0)) {
                free(st->id);
                free(st);
                return NULL;
        }
        st->feed = f;
        return st;
}

static void on_upgrade(
        void *cls,
        struct MHD_Connection *connection,
        void *con_cls,
        const char *extra_in,
        size_t extra_in_size,
        MHD_socket sock,
        struct MHD_UpgradeResponseHandle *urh) {
        static const struct wslay_event_callbacks callbacks = {
                .recv_callback = ws_recv,
                .send_callback = ws_send,
                .on_msg_recv_callback = ws_on_msg,
        };
        Request *req = con_cls;
        Stream *st = cls;
        int r;

        /* From here on the stream is its own. */
        if (req && req->stream == st)
                req->stream = NULL;
        st->urh = urh;
        st->sock = sock;
        stream_link(st);
        /* Each event is a small frame sent at once: Nagle would hold one back until the last is acked. */
        (void) setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
        (void) sd_event_now(st->server->event, CLOCK_MONOTONIC, &st->last_recv_usec);

        if (extra_in_size > 0) {
                st->extra = malloc(extra_in_size);
                if (!st->extra) {
                        stream_free(st);
                        return;
                }
                memcpy(st->extra, extra_in, extra_in_size);
                st->extra_len = extra_in_size;
        }

        r = wslay_event_context_server_init(&st->ctx, &callbacks, st);
        if (r != 0) {
                st->ctx = NULL;
                stream_free(st);
                return;
        }
        wslay_event_config_set_max_recv_msg_length(st->ctx, 65536);

        r = sd_event_add_io(st->server->event, &st->sock_io, sock, EPOLLIN, on_ws_io, st);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        st->server->event,
                        &st->ping_timer,
                        CLOCK_MONOTONIC,
                        PING_INTERVAL_USEC,
                        0,
                        on_ping,
                        st);
        if (r < 0) {
                log_warning_errno(r, "session %s: could not start a WebSocket stream: %m", st->id);
                stream_free(st);
                return;
        }
        log_debug("session %s: WebSocket client attached after seq %" PRIu64 ".", st->id, st->last_seq);
        if (stream_go_live(st) < 0)
                return; /* freed */
        if (st->extra_len > 0)
                on_ws_io(st->sock_io, sock, EPOLLIN, st);
}

static int websocket_accept(
        const char *key, char ret[static BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1]) {
        struct sha1_ctx ctx;
        uint8_t digest[SHA1_DIGEST_SIZE];

        sha1_init(&ctx);
        sha1_update(&ctx, strlen(key), (const uint8_t *) key);
        sha1_update(&ctx, strlen(WS_GUID), (const uint8_t *) WS_GUID);
        sha1_digest(&ctx, sizeof digest, digest);
        base64_encode_raw(ret, sizeof digest, digest);
        ret[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
        return 0;
}

void stream_attached(Request *req, Feed *f) {
        struct MHD_Response *response;
        Stream *st;
        int r;

        st = stream_new(req, f);
        if (!st) {
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }

        if (req->websocket) {
                char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];

                websocket_accept(request_header(req, "Sec-WebSocket-Key"), accept);
                response = MHD_create_response_for_upgrade(on_upgrade, st);
                if (!response ||
                    MHD_add_response_header(response, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
                    MHD_add_response_header(response, "Sec-WebSocket-Accept", accept) != MHD_YES ||
                    (req->ws_protocol &&
                     MHD_add_response_header(response, "Sec-WebSocket-Protocol", req->ws_protocol) !=
                             MHD_YES)) {
                        if (response)
                                MHD_destroy_response(response);
                        stream_free(st);
                        request_reply_error(req, 500, "internal", "out of memory");
                        return;
                }
                req->stream = st; /* freed with the request unless the upgrade happens */
                request_reply_response(req, MHD_HTTP_SWITCHING_PROTOCOLS, response);
                return;
        }

        st->connection = req->connection;
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, st, sse_free);
        if (!response) {
                stream_free(st);
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        (void) MHD_add_response_header(response, "Content-Type", "text/event-stream");
        (void) MHD_add_response_header(response, "Cache-Control", "no-store");
        (void) MHD_add_response_header(response, "X-Accel-Buffering", "no");
        stream_link(st);
        r = sd_event_add_time_relative(
                st->server->event, &st->ping_timer, CLOCK_MONOTONIC, PING_INTERVAL_USEC, 0, on_ping, st);
        if (r < 0)
                st->done = st->failed = true;
        /* A first comment line, so the client sees the stream open before the first event. */
        (void) sse_append(st, ": ccdocker-httpd\n\n", 18, "", 0, "");
        request_reply_response(req, 200, response);
        if (!st->failed)
                (void) stream_go_live(st);
}

static bool header_has_token(const char *value, const char *token) {
        size_t n = strlen(token);

        for (const char *p = value; p && *p;) {
                p += strspn(p, " \t,");
                if (strncasecmp(p, token, n) == 0 &&
                    (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
                        return true;
                p = strchr(p, ',');
        }
        return false;
}

/* The token of a bearer.TOKEN entry of a Sec-WebSocket-Protocol list, copied to ret (at most size - 1
 * characters); NULL if there is none. */
const char *websocket_protocol_bearer(const char *value, char *ret, size_t size) {
        for (const char *p = value; p && *p;) {
                size_t n;

                p += strspn(p, " \t,");
                n = strcspn(p, " \t,");
                if (n > 7 && strncmp(p, "bearer.", 7) == 0 && n - 7 < size) {
                        memcpy(ret, p + 7, n - 7);
                        ret[n - 7] = '\0';
                        return ret;
                }
                p += n;
        }
        return NULL;
}

static bool websocket_protocol_token(const char *value) {
        char token[128];

        return websocket_protocol_bearer(value, token, sizeof token) != NULL;
}

void stream_start(Request *req) {
        const char *upgrade = request_header(req, MHD_HTTP_HEADER_UPGRADE);
        const char *accept = request_header(req, MHD_HTTP_HEADER_ACCEPT);
        const char *since = request_arg(req, "since"), *last_id = request_header(req, "Last-Event-ID");

        req->streaming = true;
        req->since = 0;
        if (since && safe_atou64(since, &req->since) < 0) {
                request_reply_error(
                        req, 400, "invalid_argument", "query argument 'since' must be an integer");
                return;
        }

        if (upgrade && header_has_token(upgrade, "websocket")) {
                const char *version = request_header(req, "Sec-WebSocket-Version");
                const char *key = request_header(req, "Sec-WebSocket-Key");

                if (!header_has_token(request_header(req, MHD_HTTP_HEADER_CONNECTION), "upgrade") || !key ||
                    strlen(key) != 24) {
                        request_reply_error(req, 400, "invalid_argument", "not a valid WebSocket handshake");
                        return;
                }
                if (!streq_ptr(version, "13")) {
                        struct MHD_Response *response =
                                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);

                        if (response) {
                                (void) MHD_add_response_header(response, "Sec-WebSocket-Version", "13");
                                request_reply_response(req, 426, response);
                        }
                        return;
                }
                /* RFC 6455 4.2.2: the server echoes at most one of the subprotocols offered, and a browser
                 * that offered some fails the connection if none is echoed. bearer.TOKEN is a credential,
                 * never echoed (nor logged), so a browser offers WS_PROTOCOL beside it. */
                const char *protocols = request_header(req, "Sec-WebSocket-Protocol");
                if (protocols && header_has_token(protocols, WS_PROTOCOL))
                        req->ws_protocol = WS_PROTOCOL;
                else if (protocols && websocket_protocol_token(protocols)) {
                        request_reply_error(
                                req,
                                400,
                                "invalid_argument",
                                "a WebSocket that offers bearer.TOKEN must offer the subprotocol " WS_PROTOCOL
                                " beside it (the one echoed: the token is never sent back)");
                        return;
                }
                req->websocket = true;
        } else if (accept && strstr(accept, "text/event-stream")) {
                /* EventSource sends the last id it saw when it reconnects by itself. */
                if (last_id && safe_atou64(last_id, &req->since) < 0) {
                        request_reply_error(
                                req, 400, "invalid_argument", "header Last-Event-ID must be an integer");
                        return;
                }
        } else {
                request_reply_error(
                        req,
                        406,
                        "not_acceptable",
                        "the stream is a WebSocket (Upgrade: websocket) or Server-Sent Events (Accept: text/event-stream)");
                return;
        }

        feed_request(req);
}

void server_stop_streams(Server *s) {
        while (s->streams) {
                Stream *st = s->streams;

                if (st->websocket)
                        stream_free(st);
                else {
                        stream_unlink(st);
                        sse_fail(st);
                }
        }
}

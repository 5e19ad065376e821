/* GET /api/v1/sessions/{id}/stream: a session's events, live, as WebSocket text frames (wslay on the
 * socket libmicrohttpd hands over after the 101) or as Server-Sent Events for clients that accept
 * text/event-stream. Both read the daemon's Session.Attach fd, JSON lines of {"seq","time","data"}, and
 * send each line as it is, one event per frame. ?since=SEQ (or SSE's Last-Event-ID) starts after SEQ, and
 * seq never goes backwards on a stream, so a client that reconnects with the last seq it saw loses
 * nothing and gets nothing twice. When the daemon drops our fd early (it never waits for a reader) while
 * the session is live, the stream attaches again after the last seq; when the session ends, the stream
 * ends (WebSocket close 1000, SSE "event: end"). A client that does not read is dropped once
 * STREAM_MAX_QUEUE bytes wait for it, so it costs a bounded buffer here and nothing in the daemon.
 * WebSocket clients are pinged every PING_INTERVAL and dropped after PING_TIMEOUT of silence; SSE streams
 * get a comment line as often, which is how a client that went away is noticed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#define STREAM_MAX_QUEUE (8U * 1024U * 1024U)
/* An Attach line carries one event of up to 8 MiB with its escaping and wrapper. */
#define LINE_MAX_BYTES (64U * 1024U * 1024U)
#define PING_INTERVAL_USEC (20ULL * 1000000ULL)
#define PING_TIMEOUT_USEC (50ULL * 1000000ULL)
#define CLOSE_TIMEOUT_USEC (5ULL * 1000000ULL)
/* Attach again at once after an fd that brought events; after one that brought none, wait this long, and
 * give up after this many in a row (the session's State is late to say it ended). */
#define REATTACH_DELAY_USEC (100ULL * 1000ULL)
#define REATTACH_TRIES 50U
#define READ_CHUNK 65536U

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct Stream {
        Server *server;
        struct Stream *prev, *next;
        bool linked;
        char *id;
        bool websocket;

        /* The Attach fd and the line being read from it. */
        int fd;
        sd_event_source *attach_io;
        char *line;
        size_t line_len, line_cap;
        uint64_t last_seq;
        bool got_event;
        unsigned empty_tries;
        sd_bus_slot *slot;
        sd_event_source *retry_timer;
        bool ended;

        sd_event_source *ping_timer;
        uint64_t last_recv_usec;

        /* WebSocket */
        struct MHD_UpgradeResponseHandle *urh;
        int sock;
        sd_event_source *sock_io;
        wslay_event_context_ptr ctx;
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

static void stream_attach(Stream *st);
static void ws_close(Stream *st);
static int ws_update(Stream *st);
static void sse_wake(Stream *st);

unsigned stream_count(Server *s, bool websocket) {
        unsigned n = 0;

        for (Stream *st = s->streams; st; st = st->next)
                n += st->websocket == websocket;
        return n;
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

static void stream_close_attach(Stream *st) {
        st->attach_io = sd_event_source_disable_unref(st->attach_io);
        st->fd = safe_close(st->fd);
}

void stream_free(Stream *st) {
        if (!st)
                return;
        stream_unlink(st);
        stream_close_attach(st);
        sd_bus_slot_unref(st->slot);
        sd_event_source_disable_unref(st->retry_timer);
        sd_event_source_disable_unref(st->ping_timer);
        sd_event_source_disable_unref(st->sock_io);
        sd_event_source_disable_unref(st->close_timer);
        if (st->ctx)
                wslay_event_context_free(st->ctx);
        if (st->urh) {
                (void) MHD_upgrade_action(st->urh, MHD_UPGRADE_ACTION_CLOSE);
                server_kick(st->server);
        }
        free(st->extra);
        free(st->line);
        free(st->out);
        free(st->id);
        free(st);
}

/* ---- SSE ---- */

static int sse_append(Stream *st, const char *a, size_t a_len, const char *b, size_t b_len, const char *c) {
        size_t c_len = strlen(c), need = a_len + b_len + c_len;

        if (st->out_end - st->out_start + need > STREAM_MAX_QUEUE)
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

static void sse_wake(Stream *st) {
        if (!st->suspended)
                return;
        st->suspended = false;
        MHD_resume_connection(st->connection);
        server_kick(st->server);
}

static void sse_fail(Stream *st) {
        st->done = st->failed = true;
        stream_close_attach(st);
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

/* Sends what can be sent, and watches the socket for what wslay wants next; closes when it wants
 * nothing more (both close frames went) or the peer is gone. */
static int ws_update(Stream *st) {
        uint32_t events = 0;

        if (wslay_event_want_write(st->ctx) && wslay_event_send(st->ctx) < 0) {
                ws_close(st);
                return -ECONNRESET;
        }
        if (wslay_event_want_read(st->ctx))
                events |= EPOLLIN;
        if (wslay_event_want_write(st->ctx))
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

/* One line of the Attach stream: {"seq":N,...}. Returns < 0 if the stream was freed. */
static int stream_event(Stream *st, const char *line, size_t len) {
        const char *p = startswith(line, "{\"seq\":");
        char seqbuf[32];
        uint64_t seq;
        int r;

        if (!p)
                return 0;
        seq = strtoull(p, NULL, 10);
        if (seq <= st->last_seq)
                return 0; /* already sent: a replay after attaching again */
        st->last_seq = seq;
        st->got_event = true;

        if (st->websocket) {
                struct wslay_event_msg msg = {
                        .opcode = WSLAY_TEXT_FRAME,
                        .msg = (const uint8_t *) line,
                        .msg_length = len,
                };

                if (wslay_event_get_queued_msg_length(st->ctx) + len > STREAM_MAX_QUEUE) {
                        stream_drop(st, "it does not read");
                        return -ENOBUFS;
                }
                if (wslay_event_queue_msg(st->ctx, &msg) != 0) {
                        ws_close(st);
                        return -EIO;
                }
                metrics_event_sent(st->server->metrics, true);
                return 0;
        }

        snprintf(seqbuf, sizeof seqbuf, "id: %" PRIu64 "\ndata: ", seq);
        r = sse_append(st, seqbuf, strlen(seqbuf), line, len, "\n\n");
        if (r < 0) {
                stream_drop(st, r == -ENOBUFS ? "it does not read" : "out of memory");
                return r;
        }
        metrics_event_sent(st->server->metrics, false);
        return 0;
}

static void stream_end(Stream *st, const char *reason) {
        st->ended = true;
        stream_close_attach(st);
        if (st->websocket) {
                if (wslay_event_queue_close(st->ctx, 1000, (const uint8_t *) reason, strlen(reason)) != 0) {
                        ws_close(st);
                        return;
                }
                (void) sd_event_add_time_relative(
                        st->server->event,
                        &st->close_timer,
                        CLOCK_MONOTONIC,
                        CLOSE_TIMEOUT_USEC,
                        0,
                        on_close_timeout,
                        st);
                (void) ws_update(st);
                return;
        }
        _cleanup_free_ char *data = NULL;
        if (asprintf(
                    &data,
                    "event: end\ndata: {\"reason\":\"%s\",\"last_seq\":%" PRIu64 "}\n\n",
                    reason,
                    st->last_seq) < 0 ||
            sse_append(st, data, strlen(data), "", 0, "") < 0) {
                sse_fail(st);
                return;
        }
        st->done = true;
        sse_wake(st);
}

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Stream *st = userdata;

        st->retry_timer = sd_event_source_disable_unref(st->retry_timer);
        stream_attach(st);
        return 0;
}

static int on_state(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Stream *st = userdata;
        const char *state = NULL;

        st->slot = sd_bus_slot_unref(st->slot);
        if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "v", "s", &state) < 0) {
                stream_end(st, "session gone");
                return 0;
        }
        if (streq(state, "stopped") || streq(state, "failed")) {
                stream_end(st, "session ended");
                return 0;
        }
        if (st->got_event) {
                st->empty_tries = 0;
                stream_attach(st);
                return 0;
        }
        if (++st->empty_tries > REATTACH_TRIES) {
                stream_end(st, "session ended");
                return 0;
        }
        if (sd_event_add_time_relative(
                    st->server->event,
                    &st->retry_timer,
                    CLOCK_MONOTONIC,
                    REATTACH_DELAY_USEC,
                    0,
                    on_retry,
                    st) < 0)
                stream_end(st, "internal error");
        return 0;
}

/* The Attach fd ended: the session ended, or the daemon dropped us. */
static void stream_attach_eof(Stream *st) {
        _cleanup_free_ char *path = NULL;
        int r;

        stream_close_attach(st);
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, st->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        st->server->bus,
                        &st->slot,
                        BUS_NAME,
                        path,
                        "org.freedesktop.DBus.Properties",
                        "Get",
                        on_state,
                        st,
                        "ss",
                        SESSION_INTERFACE,
                        "State");
        if (r < 0)
                stream_end(st, "internal error");
}

static int on_attach_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Stream *st = userdata;

        for (unsigned round = 0; round < 16; round++) {
                ssize_t k;
                size_t scanned;

                if (st->line_cap - st->line_len < READ_CHUNK) {
                        size_t cap = st->line_cap ? st->line_cap * 2 : 2 * READ_CHUNK;
                        char *p;

                        if (cap > LINE_MAX_BYTES + READ_CHUNK) {
                                stream_drop(st, "an event line is too long");
                                return 0;
                        }
                        p = realloc(st->line, cap);
                        if (!p) {
                                stream_drop(st, "out of memory");
                                return 0;
                        }
                        st->line = p;
                        st->line_cap = cap;
                }
                k = read(st->fd, st->line + st->line_len, st->line_cap - st->line_len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        break;
                if (k <= 0) {
                        stream_attach_eof(st);
                        return 0;
                }

                scanned = st->line_len;
                st->line_len += (size_t) k;
                size_t start = 0;
                for (char *nl; (nl = memchr(st->line + scanned, '\n', st->line_len - scanned));) {
                        size_t end = (size_t) (nl - st->line);

                        *nl = '\0';
                        if (stream_event(st, st->line + start, end - start) < 0)
                                return 0;
                        start = scanned = end + 1;
                }
                if (start > 0) {
                        memmove(st->line, st->line + start, st->line_len - start);
                        st->line_len -= start;
                }
                if ((size_t) k < READ_CHUNK)
                        break;
        }

        if (st->websocket)
                (void) ws_update(st);
        else
                sse_wake(st);
        return 0;
}

static int stream_watch_attach(Stream *st) {
        int r;

        r = sd_event_add_io(st->server->event, &st->attach_io, st->fd, EPOLLIN, on_attach_io, st);
        if (r < 0)
                return r;
        return sd_event_source_set_priority(st->attach_io, SD_EVENT_PRIORITY_NORMAL + 1);
}

static int on_reattached(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Stream *st = userdata;
        int fd, r;

        st->slot = sd_bus_slot_unref(st->slot);
        if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "h", &fd) < 0) {
                stream_end(st, "session gone");
                return 0;
        }
        st->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (st->fd < 0 || fcntl(st->fd, F_SETFL, O_NONBLOCK) < 0 || (r = stream_watch_attach(st)) < 0) {
                stream_end(st, "internal error");
                return 0;
        }
        st->got_event = false;
        return 0;
}

static void stream_attach(Stream *st) {
        _cleanup_free_ char *path = NULL;
        int r;

        st->line_len = 0;
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, st->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        st->server->bus,
                        &st->slot,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "Attach",
                        on_reattached,
                        st,
                        "t",
                        st->last_seq);
        if (r < 0)
                stream_end(st, "internal error");
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

static Stream *stream_new(Request *req, int fd) {
        Stream *st = calloc(1, sizeof(Stream));

        if (!st)
                return NULL;
        *st = (Stream){
                .server = req->server,
                .id = strdup(req->id),
                .websocket = req->websocket,
                .fd = fd,
                .last_seq = req->since,
                .sock = -EBADF,
        };
        if (!st->id) {
                safe_close(fd);
                free(st);
                return NULL;
        }
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
                r = stream_watch_attach(st);
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

static int on_attached(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        struct MHD_Response *response;
        Stream *st;
        int fd, r;

        req->slot = sd_bus_slot_unref(req->slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                request_reply_bus_error(req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
                return 0;
        }
        r = sd_bus_message_read(m, "h", &fd);
        if (r >= 0)
                fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (r < 0 || fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
                safe_close(fd);
                request_reply_error(req, 502, "daemon_error", "ccdockerd sent an unexpected reply");
                return 0;
        }
        st = stream_new(req, fd);
        if (!st) {
                request_reply_error(req, 500, "internal", "out of memory");
                return 0;
        }

        if (req->websocket) {
                char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];

                websocket_accept(request_header(req, "Sec-WebSocket-Key"), accept);
                response = MHD_create_response_for_upgrade(on_upgrade, st);
                if (!response ||
                    MHD_add_response_header(response, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
                    MHD_add_response_header(response, "Sec-WebSocket-Accept", accept) != MHD_YES) {
                        if (response)
                                MHD_destroy_response(response);
                        stream_free(st);
                        request_reply_error(req, 500, "internal", "out of memory");
                        return 0;
                }
                req->stream = st; /* freed with the request unless the upgrade happens */
                request_reply_response(req, MHD_HTTP_SWITCHING_PROTOCOLS, response);
                return 0;
        }

        st->connection = req->connection;
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, st, sse_free);
        if (!response) {
                stream_free(st);
                request_reply_error(req, 500, "internal", "out of memory");
                return 0;
        }
        (void) MHD_add_response_header(response, "Content-Type", "text/event-stream");
        (void) MHD_add_response_header(response, "Cache-Control", "no-store");
        (void) MHD_add_response_header(response, "X-Accel-Buffering", "no");
        stream_link(st);
        r = stream_watch_attach(st);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        st->server->event,
                        &st->ping_timer,
                        CLOCK_MONOTONIC,
                        PING_INTERVAL_USEC,
                        0,
                        on_ping,
                        st);
        if (r < 0)
                st->done = st->failed = true;
        /* A first comment line, so the client sees the stream open before the first event. */
        (void) sse_append(st, ": ccdocker-httpd\n\n", 18, "", 0, "");
        request_reply_response(req, 200, response);
        return 0;
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

void stream_start(Request *req) {
        const char *upgrade = request_header(req, MHD_HTTP_HEADER_UPGRADE);
        const char *accept = request_header(req, MHD_HTTP_HEADER_ACCEPT);
        const char *since = request_arg(req, "since"), *last_id = request_header(req, "Last-Event-ID");
        int r;

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

        _cleanup_free_ char *path = NULL;
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, req->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        req->server->bus,
                        &req->slot,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "Attach",
                        on_attached,
                        req,
                        "t",
                        req->since);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
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

/* The session channel's client side (channel-client.h). */
#define _GNU_SOURCE
#include "channel-client.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "byte-queue.h"
#include "cleanup.h"
#include "log.h"

#define READ_CHUNK (64 * 1024)
#define READS_PER_DISPATCH 16

struct ChannelClient {
        const char *path, *role;
        const ChannelClientHooks *hooks;
        void *userdata;

        int fd;
        ChannelState state;
        struct jsonrpc_reader *reader;
        ByteQueue out;
        int64_t next_id, hello_id;
        unsigned generation; /* bumped by every close: a hook may close and connect again */
};

int channel_client_new(
        const char *path,
        const char *role,
        const ChannelClientHooks *hooks,
        void *userdata,
        ChannelClient **ret) {
        ChannelClient *c = calloc(1, sizeof(ChannelClient));

        if (!c)
                return -ENOMEM;
        *c = (ChannelClient){
                .path = path,
                .role = role,
                .hooks = hooks,
                .userdata = userdata,
                .fd = -EBADF,
                .next_id = 1,
        };
        *ret = c;
        return 0;
}

ChannelClient *channel_client_free(ChannelClient *c) {
        if (!c)
                return NULL;
        channel_client_close(c);
        byte_queue_free(&c->out);
        free(c);
        return NULL;
}

ChannelState channel_client_state(const ChannelClient *c) {
        return c->state;
}

const char *channel_client_path(const ChannelClient *c) {
        return c->path;
}

int channel_client_fd(const ChannelClient *c) {
        return c->fd;
}

size_t channel_client_pending(const ChannelClient *c) {
        return byte_queue_len(&c->out);
}

short channel_client_poll_events(const ChannelClient *c) {
        if (c->state == CHANNEL_CONNECTING)
                return POLLOUT;
        return (short) (POLLIN | (byte_queue_len(&c->out) > 0 ? POLLOUT : 0));
}

void channel_client_close(ChannelClient *c) {
        c->fd = safe_close(c->fd);
        c->reader = jsonrpc_reader_free(c->reader);
        byte_queue_clear(&c->out);
        c->state = CHANNEL_DOWN;
        c->hello_id = 0;
        c->generation++;
}

static void channel_down(ChannelClient *c, int error, const char *why) {
        ChannelState was = c->state;

        channel_client_close(c);
        c->hooks->down(c, was, error, why, c->userdata);
}

/* ---- sending ---- */

int channel_client_put(ChannelClient *c, const void *data, size_t n) {
        return byte_queue_put(&c->out, data, n);
}

int channel_client_send(ChannelClient *c, json_t *msg) {
        _cleanup_free_ char *line = NULL;
        size_t len;
        int r;

        if (!msg)
                return -ENOMEM;
        r = jsonrpc_format_line(msg, &line, &len);
        if (r < 0)
                return r;
        return byte_queue_put(&c->out, line, len);
}

int64_t channel_client_take_id(ChannelClient *c) {
        return c->next_id++;
}

int channel_client_request(ChannelClient *c, const char *method, json_t *params, int64_t *ret_id) {
        _cleanup_(json_decrefp) json_t *id = json_integer(c->next_id), *msg = NULL;
        int r;

        if (!id)
                return -ENOMEM;
        msg = jsonrpc_request_new(id, method, params);
        r = channel_client_send(c, msg);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = c->next_id;
        c->next_id++;
        return 0;
}

int channel_client_respond(ChannelClient *c, json_t *id, json_t *result) {
        _cleanup_(json_decrefp) json_t *msg = jsonrpc_result_new(id, result);

        return channel_client_send(c, msg);
}

int channel_client_respond_error(ChannelClient *c, json_t *id, int code, const char *message) {
        _cleanup_(json_decrefp) json_t *msg = jsonrpc_error_new(id, code, message, NULL);

        return channel_client_send(c, msg);
}

void channel_client_flush(ChannelClient *c) {
        int r;

        if (c->state < CHANNEL_HELLO || byte_queue_len(&c->out) == 0)
                return;
        r = byte_queue_write(&c->out, c->fd);
        if (r < 0)
                channel_down(c, ECONNRESET, strerror(-r));
}

void channel_client_flush_blocking(ChannelClient *c, usec_t timeout) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

        while (c->fd >= 0 && byte_queue_len(&c->out) > 0) {
                struct pollfd p = { .fd = c->fd, .events = POLLOUT };
                usec_t t = now_usec(CLOCK_MONOTONIC);

                if (t >= deadline || byte_queue_write(&c->out, c->fd) < 0)
                        return;
                if (byte_queue_len(&c->out) > 0 &&
                    poll(&p, 1, (int) ((deadline - t) / USEC_PER_MSEC) + 1) <= 0)
                        return;
        }
}

/* ---- connecting ---- */

static int channel_connected(ChannelClient *c) {
        _cleanup_(json_decrefp) json_t *params =
                json_pack("{s:s, s:i}", "role", c->role, "protocol", CHANNEL_PROTOCOL);
        int r;

        if (!params)
                return -ENOMEM;
        r = jsonrpc_reader_new(CHANNEL_LINE_MAX, &c->reader);
        if (r < 0)
                return r;
        c->state = CHANNEL_HELLO;
        return channel_client_request(c, "hello", params, &c->hello_id);
}

int channel_client_connect(ChannelClient *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (c->state != CHANNEL_DOWN)
                return -EBUSY;
        if (strlen(c->path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, c->path);

        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                if (errno == EINPROGRESS || errno == EAGAIN) {
                        c->state = CHANNEL_CONNECTING;
                        return 0;
                }
                int error = errno;

                log_debug("connecting to %s: %s", c->path, strerror(error));
                c->state = CHANNEL_CONNECTING;
                channel_down(c, error, strerror(error));
                return 0;
        }
        return channel_connected(c);
}

/* ---- reading ---- */

static int channel_handle(ChannelClient *c, json_t *msg) {
        struct jsonrpc_message m;
        struct jsonrpc_error e;
        int64_t id;

        if (jsonrpc_classify(msg, &m, &e) < 0) {
                log_warning("the daemon sent an invalid message: %s", e.message);
                return e.id ? channel_client_respond_error(c, e.id, e.code, e.message) : 0;
        }
        id = (m.kind == JSONRPC_RESPONSE || m.kind == JSONRPC_ERROR_RESPONSE) && json_is_integer(m.id)
                ? (int64_t) json_integer_value(m.id)
                : 0;
        if (id != 0 && id == c->hello_id) {
                c->hello_id = 0;
                if (m.kind == JSONRPC_ERROR_RESPONSE)
                        channel_client_close(c);
                else
                        c->state = CHANNEL_READY;
                c->hooks->hello(c, &m, c->userdata);
                return 0;
        }
        c->hooks->message(c, &m, c->userdata);
        return 0;
}

int channel_client_dispatch(ChannelClient *c, short revents) {
        unsigned generation = c->generation;
        char chunk[READ_CHUNK];

        if (revents == 0 || c->fd < 0)
                return 0;
        if (c->state == CHANNEL_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        channel_down(c, error, strerror(error));
                        return 0;
                }
                return channel_connected(c);
        }
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
                return 0;

        for (int i = 0; i < READS_PER_DISPATCH; i++) {
                ssize_t k = read(c->fd, chunk, sizeof(chunk));
                int r;

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        return 0;
                if (k <= 0) {
                        channel_down(c, ECONNRESET, k == 0 ? "closed by the daemon" : strerror(errno));
                        return 0;
                }
                r = jsonrpc_reader_feed(c->reader, chunk, (size_t) k);
                if (r < 0)
                        return r;
                for (;;) {
                        _cleanup_(json_decrefp) json_t *msg = NULL;
                        struct jsonrpc_error e;

                        r = jsonrpc_reader_next(c->reader, &msg, &e);
                        if (r == 0)
                                break;
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0) {
                                log_warning("the daemon sent a bad line: %s", e.message);
                                continue;
                        }
                        r = channel_handle(c, msg);
                        if (r < 0)
                                return r;
                        if (c->generation != generation)
                                return 0; /* a hook closed the connection */
                }
        }
        return 0;
}

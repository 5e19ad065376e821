/* The protocol side of the session channel (docs/channel.md): the socket in the session's directory,
 * its connections, JSON-RPC framing and validation, the error answers, each connection's hello and
 * role, and the prompt requests to ccdocker-init with their answers matched back by id; what a message
 * means is left to the hooks the channel was created with (ChannelHooks: the session's, in
 * session-channel.c). Reads are bounded per callback and output queues are
 * bounded, so a flooding container neither starves other sessions nor grows the daemon. A hook may
 * free the channel from inside a callback (the channel and the dispatched connection are
 * reference-counted for that); channel_free() itself calls no hook. */
#define _GNU_SOURCE
#include "channel.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "jsonrpc.h"
#include "log.h"
#include "manager.h"
#include "util.h"

#define CHANNEL_SOCKET_NAME "session.sock"
/* Bytes read per read() and at most per callback: the fairness bound between connections. */
#define CHANNEL_READ_CHUNK (64U * 1024)
#define CHANNEL_READ_PER_CALLBACK (256U * 1024)
/* A peer that does not read its answers is dropped once this much is queued for it. */
#define CHANNEL_MAX_OUTPUT (16U * 1024 * 1024)
/* init, the MCP servers and a reconnect or two; more is a container trying to exhaust our fds. */
#define CHANNEL_MAX_CONNECTIONS 16U
/* Connections accepted per callback of the listening socket. */
#define CHANNEL_ACCEPT_PER_CALLBACK 16U

typedef enum ConnectionRole {
        ROLE_NONE,
        ROLE_INIT,
        ROLE_MCP,
} ConnectionRole;

/* A prompt request sent on a connection, not yet answered. */
typedef struct PendingPrompt {
        char *id; /* "p-<n>" */
        char *message_id;
        struct PendingPrompt *next;
} PendingPrompt;

typedef struct Connection {
        unsigned n_ref;
        Channel *channel; /* NULL once closed */
        struct Connection *prev, *next;

        int fd;
        sd_event_source *source;
        struct jsonrpc_reader *reader;

        char *out; /* queued output is out[out_start, out_end) */
        size_t out_start, out_end, out_allocated;

        bool hello;    /* hello was answered */
        bool dropping; /* to be closed: its peer let its output queue overflow */
        ConnectionRole role;
        PendingPrompt *prompts; /* in the order sent */
        int filter_r;           /* what the last line the fast path took came to (connection_filter()) */
} Connection;

struct Channel {
        unsigned n_ref;
        sd_event *event;
        const ChannelHooks *hooks; /* NULL after channel_free(): no hook is called from then on */
        void *userdata;            /* the hooks' (the session, which owns the channel) */
        char *log_id;              /* the session's id, for log messages */

        char *dir;
        char *socket_path;
        bool bound;
        int listen_fd;
        sd_event_source *listen_source;

        Connection *connections;
        unsigned n_connections;
        Connection *init; /* the connection whose hello as "init" was answered */
        uint64_t last_prompt;

        char *read_buffer; /* CHANNEL_READ_CHUNK bytes */
};

/* Log with the session's journal field (STYLE.md 8). */
#define channel_log_errno(c, level, error, format, ...) \
        log_struct_errno(                               \
                (level),                                \
                (error),                                \
                "MESSAGE=session %s: channel: " format, \
                (c)->log_id,                            \
                ##__VA_ARGS__,                          \
                "CCDOCKER_SESSION=%s",                  \
                (c)->log_id,                            \
                NULL)
#define channel_log(c, level, format, ...) ((void) channel_log_errno(c, level, 0, format, ##__VA_ARGS__))

/* ---- lifetimes ---- */

static Channel *channel_ref(Channel *c) {
        c->n_ref++;
        return c;
}

static Channel *channel_unref(Channel *c) {
        if (!c || --c->n_ref > 0)
                return NULL;

        free(c->read_buffer);
        free(c->socket_path);
        free(c->dir);
        free(c->log_id);
        sd_event_unref(c->event);
        return mfree(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Channel *, channel_unref);
DEFINE_TRIVIAL_CLEANUP_FUNC(Channel *, channel_free);

static void pending_prompt_free(PendingPrompt *p) {
        if (!p)
                return;
        free(p->id);
        free(p->message_id);
        free(p);
}

static Connection *connection_ref(Connection *conn) {
        conn->n_ref++;
        return conn;
}

static Connection *connection_unref(Connection *conn) {
        if (!conn || --conn->n_ref > 0)
                return NULL;

        /* Closed before the last reference goes: everything but the struct is already released. */
        return mfree(conn);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Connection *, connection_unref);

static bool connection_is_open(const Connection *conn) {
        return conn->channel && !conn->dropping;
}

/* Closes the connection and forgets it. With notify, the session learns that its unanswered prompts
 * will not be answered and, for the init connection, that init is gone; a hook may free the channel,
 * after which no further hook is called. */
static void connection_close(Connection *conn, bool notify) {
        _cleanup_(channel_unrefp) Channel *c = NULL;
        PendingPrompt *prompts;
        bool was_init;

        if (!conn->channel)
                return;
        c = channel_ref(conn->channel);

        if (conn->prev)
                conn->prev->next = conn->next;
        else
                c->connections = conn->next;
        if (conn->next)
                conn->next->prev = conn->prev;
        conn->prev = conn->next = NULL;
        c->n_connections--;

        was_init = c->init == conn;
        if (was_init)
                c->init = NULL;

        conn->source = sd_event_source_disable_unref(conn->source);
        conn->fd = safe_close(conn->fd);
        conn->reader = jsonrpc_reader_free(conn->reader);
        conn->out = mfree(conn->out);
        conn->out_start = conn->out_end = conn->out_allocated = 0;
        prompts = TAKE_PTR(conn->prompts);
        conn->channel = NULL;

        channel_log(c, LOG_DEBUG, "%s connection closed", was_init ? "init" : "a");

        while (prompts) {
                PendingPrompt *p = prompts;

                prompts = p->next;
                if (notify && c->hooks)
                        c->hooks->prompt_delivered(c->userdata, p->message_id, -ECONNRESET);
                pending_prompt_free(p);
        }
        if (notify && was_init && c->hooks)
                c->hooks->init_gone(c->userdata);

        /* The list's reference. */
        connection_unref(conn);
}

/* ---- output ---- */

static int connection_flush(Connection *conn) {
        int r;

        while (conn->out_start < conn->out_end) {
                ssize_t n =
                        send(conn->fd,
                             conn->out + conn->out_start,
                             conn->out_end - conn->out_start,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                conn->out_start += (size_t) n;
        }

        if (conn->out_start == conn->out_end) {
                conn->out_start = conn->out_end = 0;
                /* Do not keep the memory of a burst. */
                if (conn->out_allocated > CHANNEL_READ_PER_CALLBACK) {
                        conn->out = mfree(conn->out);
                        conn->out_allocated = 0;
                }
                r = sd_event_source_set_io_events(conn->source, EPOLLIN);
        } else
                r = sd_event_source_set_io_events(conn->source, EPOLLIN | EPOLLOUT);
        return r;
}

/* Marks the connection to be closed from the event loop, where hooks may be called: the overflow can
 * be found inside a call from the session (channel_send_prompt()). shutdown() makes the loop see
 * EPOLLHUP. */
static void connection_drop(Connection *conn, const char *why) {
        if (conn->dropping)
                return;
        channel_log(conn->channel, LOG_WARNING, "dropping a connection: %s", why);
        conn->dropping = true;
        (void) shutdown(conn->fd, SHUT_RDWR);
}

/* Appends msg as one line to the output queue; the loop writes it. -ENOBUFS (and the connection is
 * being dropped) when the peer has let too much pile up. */
static int connection_queue(Connection *conn, const json_t *msg) {
        _cleanup_free_ char *line = NULL;
        size_t len, pending;
        int r;

        if (!connection_is_open(conn))
                return -ESHUTDOWN;

        r = jsonrpc_format_line(msg, &line, &len);
        if (r < 0)
                return channel_log_errno(conn->channel, LOG_WARNING, r, "could not format a message: %m");

        pending = conn->out_end - conn->out_start;
        if (len > CHANNEL_MAX_OUTPUT - pending) {
                connection_drop(conn, "its peer does not read what it is sent (16 MiB queued)");
                return -ENOBUFS;
        }

        if (conn->out_end + len > conn->out_allocated) {
                if (conn->out_start > 0) {
                        memmove(conn->out, conn->out + conn->out_start, pending);
                        conn->out_start = 0;
                        conn->out_end = pending;
                }
                if (pending + len > conn->out_allocated) {
                        size_t n = (pending + len) * 2;
                        char *b;

                        if (n < 4096)
                                n = 4096;
                        b = realloc(conn->out, n);
                        if (!b)
                                return log_oom();
                        conn->out = b;
                        conn->out_allocated = n;
                }
        }

        memcpy(conn->out + conn->out_end, line, len);
        conn->out_end += len;

        r = sd_event_source_set_io_events(conn->source, EPOLLIN | EPOLLOUT);
        if (r < 0)
                return channel_log_errno(conn->channel, LOG_WARNING, r, "could not wait for output: %m");
        return 0;
}

static int connection_send_result(Connection *conn, json_t *id, json_t *result) {
        _cleanup_(json_decrefp) json_t *msg = NULL;

        msg = jsonrpc_result_new(id, result);
        if (!msg)
                return log_oom();
        return connection_queue(conn, msg);
}

static int connection_send_error(Connection *conn, json_t *id, int code, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

/* The message may quote what the peer sent: anything but printable ASCII becomes '?', so that a
 * truncated UTF-8 sequence cannot make the answer invalid JSON. */
static int connection_send_error(Connection *conn, json_t *id, int code, const char *format, ...) {
        _cleanup_(json_decrefp) json_t *msg = NULL;
        char message[256];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        for (char *p = message; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        *p = '?';

        msg = jsonrpc_error_new(id, code, message, NULL);
        if (!msg)
                return log_oom();
        return connection_queue(conn, msg);
}

/* ---- methods ---- */

/* A method either fills *ret_result, or returns a negative errno with *e set to the error to answer. */
typedef int (*MethodHandler)(Connection *conn, json_t *params, json_t **ret_result, struct jsonrpc_error *e);

static int method_error(struct jsonrpc_error *e, int code, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

static int method_error(struct jsonrpc_error *e, int code, const char *format, ...) {
        va_list ap;

        *e = (struct jsonrpc_error){ .code = code };
        va_start(ap, format);
        (void) vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return -EINVAL;
}

static int method_ping(Connection *conn, json_t *params, json_t **ret_result, struct jsonrpc_error *e) {
        *ret_result = json_object();
        return *ret_result ? 0 : method_error(e, JSONRPC_INTERNAL_ERROR, "Out of memory");
}

static int method_hello(Connection *conn, json_t *params, json_t **ret_result, struct jsonrpc_error *e) {
        _cleanup_free_ char *error = NULL;
        Channel *c = conn->channel;
        json_t *role, *protocol, *result;
        ConnectionRole want;

        if (conn->hello)
                return method_error(
                        e, JSONRPC_INVALID_REQUEST, "hello was already answered on this connection");

        role = json_object_get(params, "role");
        if (!role)
                return method_error(
                        e, JSONRPC_INVALID_PARAMS, "params.role is missing: it must be \"init\" or \"mcp\"");
        if (json_is_string(role) && streq(json_string_value(role), "init"))
                want = ROLE_INIT;
        else if (json_is_string(role) && streq(json_string_value(role), "mcp"))
                want = ROLE_MCP;
        else
                return method_error(e, JSONRPC_INVALID_PARAMS, "params.role must be \"init\" or \"mcp\"");

        protocol = json_object_get(params, "protocol");
        if (protocol && !json_is_integer(protocol))
                return method_error(e, JSONRPC_INVALID_PARAMS, "params.protocol must be an integer");

        /* One init at a time: the newer one is the live one (the old may be a crashed init whose socket
         * has not been noticed yet). The session hears that the old one is gone before it hears the new
         * hello, as after any reconnect. */
        if (want == ROLE_INIT && c->init) {
                channel_log(c, LOG_INFO, "a new init connection replaces the previous one");
                connection_close(c->init, true);
                if (!connection_is_open(conn))
                        return -ESHUTDOWN;
        }

        result = c->hooks->hello(c->userdata, json_string_value(role), &error);
        if (!connection_is_open(conn)) {
                json_decref(result);
                return -ESHUTDOWN;
        }
        if (!result)
                return method_error(e, CHANNEL_ERROR_FAILED, "%s", error ?: "the session refused the hello");

        conn->hello = true;
        conn->role = want;
        if (want == ROLE_INIT)
                c->init = conn;

        *ret_result = result;
        return 0;
}

static int method_heartbeat(Connection *conn, json_t *params, json_t **ret_result, struct jsonrpc_error *e) {
        /* The heartbeat the session watches is init's (docs/channel.md); others are only answered. */
        if (conn->role == ROLE_INIT)
                conn->channel->hooks->heartbeat(conn->channel->userdata);
        if (!connection_is_open(conn))
                return -ESHUTDOWN;
        return method_ping(conn, params, ret_result, e);
}

static int validate_events(json_t *events, struct jsonrpc_error *e) {
        size_t i;
        json_t *ev;

        if (!events)
                return method_error(e, JSONRPC_INVALID_PARAMS, "params.events is missing");
        if (!json_is_array(events) || json_array_size(events) < 1 ||
            json_array_size(events) > CHANNEL_MAX_EVENTS_PER_CALL)
                return method_error(
                        e,
                        JSONRPC_INVALID_PARAMS,
                        "params.events must be an array of 1 to %d events",
                        CHANNEL_MAX_EVENTS_PER_CALL);

        json_array_foreach (events, i, ev) {
                json_t *seq, *time;

                if (!json_is_object(ev))
                        return method_error(
                                e, JSONRPC_INVALID_PARAMS, "params.events[%zu] must be an object", i);

                seq = json_object_get(ev, "seq");
                if (!json_is_integer(seq) || json_integer_value(seq) < 1)
                        return method_error(
                                e,
                                JSONRPC_INVALID_PARAMS,
                                "params.events[%zu].seq must be an integer >= 1",
                                i);

                time = json_object_get(ev, "time");
                if (!json_is_integer(time) || json_integer_value(time) < 0)
                        return method_error(
                                e,
                                JSONRPC_INVALID_PARAMS,
                                "params.events[%zu].time must be an integer >= 0",
                                i);

                if (!json_object_get(ev, "data"))
                        return method_error(
                                e, JSONRPC_INVALID_PARAMS, "params.events[%zu].data is missing", i);
        }
        return 0;
}

static int method_events(Connection *conn, json_t *params, json_t **ret_result, struct jsonrpc_error *e) {
        _cleanup_free_ char *error = NULL;
        json_t *events = json_object_get(params, "events");
        uint64_t acked = 0;
        int r;

        r = validate_events(events, e);
        if (r < 0)
                return r;

        r = conn->channel->hooks->events(conn->channel->userdata, events, &acked, &error);
        if (!connection_is_open(conn))
                return -ESHUTDOWN;
        if (r == -EBADMSG)
                return method_error(e, JSONRPC_INVALID_PARAMS, "%s", error ?: "event sequence gap");
        if (r < 0)
                return method_error(e, CHANNEL_ERROR_FAILED, "%s", error ?: strerror(-r));

        *ret_result = json_pack("{s:I}", "acked", (json_int_t) (acked > INT64_MAX ? INT64_MAX : acked));
        return *ret_result ? 0 : method_error(e, JSONRPC_INTERNAL_ERROR, "Out of memory");
}

/* The fast path: an "events" request parsed by channel_events_parse(), answered as method_events() would
 * answer it. Anything it does not take is parsed and dispatched as usual. */
static int connection_filter(const char *line, size_t n, void *userdata) {
        static ChannelEvent events[CHANNEL_MAX_EVENTS_PER_CALL];
        Connection *conn = userdata;
        _cleanup_(json_decrefp) json_t *id = NULL, *result = NULL;
        _cleanup_free_ char *error = NULL;
        uint64_t acked = 0;
        size_t n_events = 0;
        int r;

        /* Before hello, and without the hook, the ordinary path says what is wrong or does the work. */
        if (!conn->hello || !connection_is_open(conn) || !conn->channel->hooks->events_raw)
                return 0;
        r = channel_events_parse(line, n, events, ELEMENTSOF(events), &n_events, &id);
        if (r <= 0) {
                conn->filter_r = r;
                return r < 0 ? 1 : 0;
        }

        r = conn->channel->hooks->events_raw(conn->channel->userdata, events, n_events, &acked, &error);
        if (!connection_is_open(conn))
                r = -ESHUTDOWN;
        else if (r == -EBADMSG)
                r = connection_send_error(
                        conn, id, JSONRPC_INVALID_PARAMS, "%s", error ?: "event sequence gap");
        else if (r < 0)
                r = connection_send_error(conn, id, CHANNEL_ERROR_FAILED, "%s", error ?: strerror(-r));
        else {
                result = json_pack("{s:I}", "acked", (json_int_t) (acked > INT64_MAX ? INT64_MAX : acked));
                r = result ? connection_send_result(conn, id, result) : log_oom();
        }
        conn->filter_r = r;
        return 1;
}

/* ---- ccdocker-mcp's methods: answered by the session, now or later ---- */

struct ChannelCall {
        Connection *conn; /* a reference */
        json_t *id;
};

ChannelCall *channel_call_free(ChannelCall *call) {
        if (!call)
                return NULL;
        connection_unref(call->conn);
        json_decref(call->id);
        return mfree(call);
}

bool channel_call_is_open(const ChannelCall *call) {
        return call && connection_is_open(call->conn);
}

void channel_call_reply(ChannelCall *call, json_t *result) {
        if (channel_call_is_open(call))
                (void) connection_send_result(call->conn, call->id, result);
        channel_call_free(call);
}

void channel_call_error(ChannelCall *call, int code, const char *format, ...) {
        char message[256];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        if (channel_call_is_open(call))
                (void) connection_send_error(call->conn, call->id, code, "%s", message);
        channel_call_free(call);
}

json_t *channel_call_id(const ChannelCall *call) {
        return call ? call->id : NULL;
}

int channel_call_notify(ChannelCall *call, const char *method, json_t *params) {
        _cleanup_(json_decrefp) json_t *msg = NULL;

        if (!channel_call_is_open(call))
                return -ENOTCONN;
        msg = jsonrpc_notification_new(method, params);
        if (!msg)
                return -ENOMEM;
        return connection_queue(call->conn, msg);
}

static const char *const mcp_methods[] = {
        "child.spawn", "child.send", "child.output",   "child.result",
        "child.list",  "child.stop", "parent.context",
};

/* ccdocker-mcp's methods for asking a human (daemon/questions.c). */
static const char *const human_methods[] = { "human.notify", "human.ask", "human.wait" };

static bool is_mcp_method(const char *method) {
        for (size_t i = 0; i < ELEMENTSOF(mcp_methods); i++)
                if (streq(mcp_methods[i], method))
                        return true;
        for (size_t i = 0; i < ELEMENTSOF(human_methods); i++)
                if (streq(human_methods[i], method))
                        return true;
        return false;
}

static int connection_call_session(Connection *conn, const struct jsonrpc_message *m, json_t *params) {
        ChannelCall *call;

        call = calloc(1, sizeof(*call));
        if (!call)
                return log_oom();
        call->conn = connection_ref(conn);
        call->id = json_incref(m->id);
        conn->channel->hooks->call(conn->channel->userdata, m->method, params, call);
        return connection_is_open(conn) ? 0 : -ESHUTDOWN;
}

static const struct {
        const char *name;
        MethodHandler handler;
        bool before_hello;
} methods[] = {
        { "hello", method_hello, true },
        { "ping", method_ping, true },
        { "heartbeat", method_heartbeat, false },
        { "events", method_events, false },
};

/* ---- dispatch ---- */

static int connection_handle_request(Connection *conn, const struct jsonrpc_message *m) {
        _cleanup_(json_decrefp) json_t *empty = NULL, *result = NULL;
        struct jsonrpc_error e = {};
        json_t *params = m->params;
        MethodHandler handler = NULL;
        bool before_hello = false;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (streq(methods[i].name, m->method)) {
                        handler = methods[i].handler;
                        before_hello = methods[i].before_hello;
                        break;
                }

        if (!handler && is_mcp_method(m->method) && conn->hello) {
                if (conn->role != ROLE_MCP)
                        return connection_send_error(
                                conn,
                                m->id,
                                JSONRPC_METHOD_NOT_FOUND,
                                "\"%s\" is for connections whose hello said \"mcp\"",
                                m->method);
                if (params && !json_is_object(params))
                        return connection_send_error(
                                conn,
                                m->id,
                                JSONRPC_INVALID_PARAMS,
                                "params of \"%s\" must be an object",
                                m->method);
                if (!params) {
                        params = empty = json_object();
                        if (!params)
                                return log_oom();
                }
                return connection_call_session(conn, m, params);
        }
        if (!conn->hello && !before_hello)
                return connection_send_error(
                        conn,
                        m->id,
                        JSONRPC_INVALID_REQUEST,
                        "Say hello first: \"%.64s\" was called before hello",
                        m->method);
        if (!handler)
                return connection_send_error(
                        conn, m->id, JSONRPC_METHOD_NOT_FOUND, "Unknown method \"%.64s\"", m->method);

        if (params && !json_is_object(params))
                return connection_send_error(
                        conn,
                        m->id,
                        JSONRPC_INVALID_PARAMS,
                        "params of \"%s\" must be an object",
                        m->method);
        if (!params) {
                params = empty = json_object();
                if (!params)
                        return log_oom();
        }

        r = handler(conn, params, &result, &e);
        if (!connection_is_open(conn))
                return -ESHUTDOWN;
        if (r < 0)
                return connection_send_error(conn, m->id, e.code, "%s", e.message);
        return connection_send_result(conn, m->id, result);
}

static void connection_handle_notification(Connection *conn, const struct jsonrpc_message *m) {
        Channel *c = conn->channel;
        json_t *level, *message;

        /* A notification cannot be answered: what is wrong with it is only logged. */
        if (!streq(m->method, "log")) {
                channel_log(c, LOG_DEBUG, "ignoring notification \"%.64s\"", m->method);
                return;
        }
        if (!conn->hello) {
                channel_log(c, LOG_DEBUG, "ignoring a log notification before hello");
                return;
        }

        level = json_object_get(m->params, "level");
        message = json_object_get(m->params, "message");
        if (!json_is_object(m->params) || !json_is_string(message) || (level && !json_is_string(level))) {
                channel_log(c, LOG_DEBUG, "ignoring a log notification without a string params.message");
                return;
        }

        c->hooks->log(c->userdata, level ? json_string_value(level) : "info", json_string_value(message));
}

static void connection_handle_response(Connection *conn, const struct jsonrpc_message *m) {
        Channel *c = conn->channel;
        PendingPrompt **i, *p;
        int r = 0;

        if (!json_is_string(m->id)) {
                /* Our ids are strings: this answers nothing we sent, or one the peer could not read. */
                if (m->kind == JSONRPC_ERROR_RESPONSE)
                        channel_log(
                                c,
                                LOG_DEBUG,
                                "the peer could not read a request: %d %.128s",
                                m->error_code,
                                m->error_message);
                return;
        }

        for (i = &conn->prompts; *i; i = &(*i)->next)
                if (streq((*i)->id, json_string_value(m->id)))
                        break;
        if (!*i) {
                channel_log(
                        c,
                        LOG_DEBUG,
                        "ignoring an answer to unknown request \"%.64s\"",
                        json_string_value(m->id));
                return;
        }
        p = *i;
        *i = p->next;

        if (m->kind == JSONRPC_ERROR_RESPONSE) {
                channel_log(
                        c,
                        LOG_WARNING,
                        "prompt %s refused by ccdocker-init: %d %.128s",
                        p->message_id,
                        m->error_code,
                        m->error_message);
                r = -EPROTO;
        }
        c->hooks->prompt_delivered(c->userdata, p->message_id, r);
        pending_prompt_free(p);
}

static int connection_dispatch(Connection *conn, json_t *msg) {
        struct jsonrpc_message m;
        struct jsonrpc_error e = {};
        int r;

        r = jsonrpc_classify(msg, &m, &e);
        if (r < 0)
                return connection_send_error(conn, e.id, e.code, "%s", e.message);

        switch (m.kind) {
        case JSONRPC_REQUEST:
                return connection_handle_request(conn, &m);
        case JSONRPC_NOTIFICATION:
                connection_handle_notification(conn, &m);
                return 0;
        case JSONRPC_RESPONSE:
        case JSONRPC_ERROR_RESPONSE:
                connection_handle_response(conn, &m);
                return 0;
        }
        return 0;
}

/* Handles every complete line buffered. < 0: stop, the connection is closed or must be. */
static int connection_process(Connection *conn) {
        for (;;) {
                _cleanup_(json_decrefp) json_t *msg = NULL;
                struct jsonrpc_error e = {};
                int r;

                r = jsonrpc_reader_next(conn->reader, &msg, &e);
                if (r == 0)
                        return 0;
                if (r == 2) /* the fast path took it (connection_filter()) */
                        r = conn->filter_r;
                else if (r < 0)
                        r = connection_send_error(conn, NULL, e.code, "%s", e.message);
                else
                        r = connection_dispatch(conn, msg);
                if (!connection_is_open(conn))
                        return -ESHUTDOWN;
                if (r == -ENOMEM)
                        return r;
        }
}

/* Reads what is there, up to CHANNEL_READ_PER_CALLBACK, and handles it. < 0: close the connection. */
static int connection_read(Connection *conn) {
        Channel *c = conn->channel;
        size_t total = 0;
        int r;

        while (total < CHANNEL_READ_PER_CALLBACK) {
                ssize_t n;

                n = recv(conn->fd, c->read_buffer, CHANNEL_READ_CHUNK, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return channel_log_errno(
                                c, LOG_DEBUG, errno, "could not read from a connection: %m");
                }
                if (n == 0) {
                        if (jsonrpc_reader_pending(conn->reader) > 0)
                                channel_log(c, LOG_DEBUG, "a connection ended in the middle of a message");
                        return -ECONNRESET;
                }
                total += (size_t) n;

                r = jsonrpc_reader_feed(conn->reader, c->read_buffer, (size_t) n);
                if (r < 0)
                        return log_oom();
                r = connection_process(conn);
                if (r < 0)
                        return r;
        }

        /* More may be waiting: the loop calls again after the other ready sources had their turn. */
        return 0;
}

static int on_connection_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        _cleanup_(connection_unrefp) Connection *conn = connection_ref(userdata);
        _cleanup_(channel_unrefp) Channel *c = channel_ref(conn->channel);
        int r;

        if (conn->dropping) {
                connection_close(conn, true);
                return 0;
        }

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                r = connection_read(conn);
                if (r == -ECONNRESET && connection_is_open(conn))
                        /* The peer may only have shut down its side: it gets the answers that are
                         * ready, as far as its socket takes them. */
                        (void) connection_flush(conn);
                if (r < 0 || conn->dropping) {
                        connection_close(conn, true);
                        return 0;
                }
        }

        /* Answers go out in the same callback as the requests that caused them. */
        if (conn->out_end > conn->out_start || (revents & EPOLLOUT)) {
                r = connection_flush(conn);
                if (r < 0) {
                        channel_log_errno(c, LOG_DEBUG, r, "could not write to a connection: %m");
                        connection_close(conn, true);
                }
        }
        return 0;
}

static int connection_new(Channel *c, int fd) {
        Connection *conn;
        int r;

        conn = calloc(1, sizeof(*conn));
        if (!conn)
                return -ENOMEM;
        *conn = (Connection){ .n_ref = 1, .channel = c, .fd = fd };

        r = jsonrpc_reader_new(CHANNEL_MAX_LINE, &conn->reader);
        if (r < 0) {
                free(conn);
                return r;
        }
        /* What a container sends is measured before it is parsed (docs/channel.md). */
        jsonrpc_reader_set_limits(conn->reader, JSONRPC_MAX_DEPTH, JSONRPC_MAX_VALUES);
        jsonrpc_reader_set_filter(conn->reader, connection_filter, conn);

        r = sd_event_add_io(c->event, &conn->source, fd, EPOLLIN, on_connection_io, conn);
        if (r < 0) {
                jsonrpc_reader_free(conn->reader);
                free(conn);
                return r;
        }
        (void) sd_event_source_set_description(conn->source, "channel-connection");

        conn->next = c->connections;
        if (c->connections)
                c->connections->prev = conn;
        c->connections = conn;
        c->n_connections++;
        return 0;
}

static int on_listen_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Channel *c = userdata;
        int r;

        for (unsigned i = 0; i < CHANNEL_ACCEPT_PER_CALLBACK; i++) {
                _cleanup_close_ int cfd = -EBADF;

                cfd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno != EAGAIN)
                                channel_log_errno(
                                        c, LOG_WARNING, errno, "could not accept a connection: %m");
                        return 0;
                }

                if (c->n_connections >= CHANNEL_MAX_CONNECTIONS) {
                        channel_log(
                                c,
                                LOG_WARNING,
                                "refusing a connection: %u are open already",
                                CHANNEL_MAX_CONNECTIONS);
                        continue;
                }
                /* Who may speak for the session is the session's to say (the peer's cgroup). */
                if (c->hooks->admit && c->hooks->admit(c->userdata, cfd) <= 0)
                        continue;

                r = connection_new(c, cfd);
                if (r < 0) {
                        channel_log_errno(c, LOG_WARNING, r, "could not set up a connection: %m");
                        continue;
                }
                TAKE_FD(cfd);
        }
        return 0;
}

/* ---- the channel ---- */

/* Makes dir (or takes the existing one) ours: a directory, not a symlink, with owner and mode fixed.
 * Returns an fd of it. */
static int channel_open_dir(Channel *c, uid_t uid, gid_t gid) {
        _cleanup_close_ int dfd = -EBADF;
        struct stat st;

        if (mkdir(c->dir, 0700) < 0 && errno != EEXIST)
                return channel_log_errno(c, LOG_ERR, errno, "could not create %s: %m", c->dir);

        dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not open directory %s: %m", c->dir);
        if (fstat(dfd, &st) < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not stat %s: %m", c->dir);

        if ((st.st_uid != uid || st.st_gid != gid) && fchown(dfd, uid, gid) < 0)
                return channel_log_errno(
                        c,
                        LOG_ERR,
                        errno,
                        "could not give %s to %u:%u: %m",
                        c->dir,
                        (unsigned) uid,
                        (unsigned) gid);
        if ((st.st_mode & 07777) != 0700 && fchmod(dfd, 0700) < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not make %s mode 0700: %m", c->dir);

        return TAKE_FD(dfd);
}

/* The socket's owner and mode, set on the inode we checked is a socket: the directory belongs to the
 * container's user, who could put a symlink in the socket's place between bind() and a chmod by path. */
static int channel_fix_socket(Channel *c, int dfd, uid_t uid, gid_t gid) {
        _cleanup_close_ int fd = -EBADF;
        char proc[64];
        struct stat st;

        fd = openat(dfd, CHANNEL_SOCKET_NAME, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not open %s: %m", c->socket_path);
        if (fstat(fd, &st) < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not stat %s: %m", c->socket_path);
        if (!S_ISSOCK(st.st_mode))
                return channel_log_errno(
                        c, LOG_ERR, EBADFD, "%s was replaced by something else", c->socket_path);

        if ((st.st_uid != uid || st.st_gid != gid) && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return channel_log_errno(
                        c,
                        LOG_ERR,
                        errno,
                        "could not give %s to %u:%u: %m",
                        c->socket_path,
                        (unsigned) uid,
                        (unsigned) gid);

        /* bind() under umask 0177 made it 0600 already; an O_PATH fd has no fchmod(). */
        if ((st.st_mode & 07777) != 0600) {
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                if (chmod(proc, 0600) < 0)
                        return channel_log_errno(
                                c, LOG_ERR, errno, "could not make %s mode 0600: %m", c->socket_path);
        }
        return 0;
}

int channel_new(
        sd_event *event,
        const ChannelHooks *hooks,
        void *userdata,
        const char *log_id,
        const char *dir,
        uid_t uid,
        gid_t gid,
        Channel **ret) {
        _cleanup_(channel_freep) Channel *c = NULL;
        _cleanup_close_ int dfd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        mode_t old_umask;
        int r;

        if (!event || !hooks || isempty(dir) || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (Channel){ .n_ref = 1,
                        .event = sd_event_ref(event),
                        .hooks = hooks,
                        .userdata = userdata,
                        .listen_fd = -EBADF };

        c->log_id = strdup(strempty(log_id));
        c->dir = strdup(dir);
        c->read_buffer = malloc(CHANNEL_READ_CHUNK);
        if (!c->log_id || !c->dir || !c->read_buffer ||
            asprintf(&c->socket_path, "%s/" CHANNEL_SOCKET_NAME, dir) < 0)
                return log_oom();
        if (strlen(c->socket_path) >= sizeof(sa.sun_path))
                return channel_log_errno(
                        c, LOG_ERR, ENAMETOOLONG, "socket path %s is too long", c->socket_path);
        memcpy(sa.sun_path, c->socket_path, strlen(c->socket_path) + 1);

        dfd = channel_open_dir(c, uid, gid);
        if (dfd < 0)
                return dfd;

        /* A socket left by an earlier daemon: nobody listens on it any more. */
        if (unlinkat(dfd, CHANNEL_SOCKET_NAME, 0) < 0 && errno != ENOENT)
                return channel_log_errno(c, LOG_ERR, errno, "could not remove stale %s: %m", c->socket_path);

        c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->listen_fd < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not create a socket: %m");

        /* Created 0600 from the start. The daemon has one thread, so the process-wide umask is safe. */
        old_umask = umask(0177);
        r = bind(c->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        (void) umask(old_umask);
        if (r < 0)
                return channel_log_errno(c, LOG_ERR, r, "could not bind %s: %m", c->socket_path);
        c->bound = true;

        r = channel_fix_socket(c, dfd, uid, gid);
        if (r < 0)
                return r;

        if (listen(c->listen_fd, SOMAXCONN) < 0)
                return channel_log_errno(c, LOG_ERR, errno, "could not listen on %s: %m", c->socket_path);

        r = sd_event_add_io(c->event, &c->listen_source, c->listen_fd, EPOLLIN, on_listen_io, c);
        if (r < 0)
                return channel_log_errno(c, LOG_ERR, r, "could not watch %s: %m", c->socket_path);
        (void) sd_event_source_set_description(c->listen_source, "channel-listen");

        *ret = TAKE_PTR(c);
        return 0;
}

Channel *channel_free(Channel *c) {
        if (!c)
                return NULL;

        /* From here on no hook is called: the session is going away, or has. */
        c->hooks = NULL;

        while (c->connections)
                connection_close(c->connections, false);

        c->listen_source = sd_event_source_disable_unref(c->listen_source);
        c->listen_fd = safe_close(c->listen_fd);

        if (c->bound && unlink(c->socket_path) < 0 && errno != ENOENT)
                channel_log_errno(c, LOG_DEBUG, errno, "could not remove %s: %m", c->socket_path);
        /* Not empty (the container left something) or still bind-mounted: the session's cleanup goes on. */
        if (c->dir && rmdir(c->dir) < 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EBUSY)
                channel_log_errno(c, LOG_DEBUG, errno, "could not remove %s: %m", c->dir);

        /* Memory goes with the last reference: a callback may still be unwinding. */
        return channel_unref(c);
}

int channel_send_prompt(Channel *c, const char *message_id, const char *text) {
        _cleanup_(json_decrefp) json_t *id = NULL, *params = NULL, *msg = NULL;
        _cleanup_free_ char *sid = NULL;
        PendingPrompt *p, **tail;
        int r;

        if (!c || !c->hooks || isempty(message_id) || !text)
                return -EINVAL;
        if (!c->init || !connection_is_open(c->init))
                return -ENOTCONN;

        if (asprintf(&sid, "p-%" PRIu64, c->last_prompt + 1) < 0)
                return -ENOMEM;
        id = json_string(sid);
        params = json_pack("{s:s, s:s}", "message_id", message_id, "text", text);
        if (!id || !params)
                return -EINVAL; /* not UTF-8, or out of memory */
        msg = jsonrpc_request_new(id, "prompt", params);
        if (!msg)
                return -errno;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->id = TAKE_PTR(sid);
        p->message_id = strdup(message_id);
        if (!p->message_id) {
                pending_prompt_free(p);
                return -ENOMEM;
        }

        /* On -ENOBUFS the connection is being dropped: the prompt was not sent, the session keeps it. */
        r = connection_queue(c->init, msg);
        if (r < 0) {
                pending_prompt_free(p);
                return r;
        }

        c->last_prompt++;
        for (tail = &c->init->prompts; *tail; tail = &(*tail)->next)
                ;
        *tail = p;
        return 0;
}

bool channel_has_init(Channel *c) {
        return c && c->init && connection_is_open(c->init);
}

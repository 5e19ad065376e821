/* The loopback-to-unix-socket bridges of ccdocker-init (bridge.h): a listener on 127.0.0.1 and, per
 * accepted connection, a connection to the unix socket, with a bounded buffer per direction. Everything
 * is non-blocking and driven by the caller's poll(). */
#define _GNU_SOURCE
#include "bridge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "cleanup.h"
#include "relay.h"
#include "util.h"

#define ACCEPTS_PER_DISPATCH 32
#define FAILURES_LOGGED_EVERY 100
#define ANSWER_HEAD_MAX 1024 /* the egress proxy's answer to a forward's CONNECT */

typedef struct Conn Conn;
struct Conn {
        Conn *prev, *next;
        int tcp, ux;
        bool connecting;
        bool handshake; /* a forward's: the CONNECT is sent and its answer not yet read */
        char answer[ANSWER_HEAD_MAX];
        size_t answer_len;
        Relay relay; /* fd[0] is tcp, fd[1] is ux */
        size_t poll_index;
        bool polled;
};

struct Bridge {
        char *name, *path;
        char *connect; /* a forward's request head, sent first on every connection; NULL for a plain bridge
                        */
        int listen_fd;
        uint16_t port;
        Conn *conns;
        size_t n_conns;
        bool listen_polled;
        unsigned failures;
        BridgeLogFunc log;
        void *userdata;
};

static void bridge_log(Bridge *b, int level, const char *format, ...) __attribute__((format(printf, 3, 4)));

static void bridge_log(Bridge *b, int level, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        if (!b->log)
                return;
        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r >= 0)
                b->log(level, message, b->userdata);
}

/* ---- connections ---- */

static void conn_free(Bridge *b, Conn *c) {
        if (c->prev)
                c->prev->next = c->next;
        else
                b->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        b->n_conns--;
        safe_close(c->tcp);
        safe_close(c->ux);
        relay_done(&c->relay);
        free(c);
}

/* Moves what can be moved now; frees the connection when both ways are done or on an error. */
static void conn_pump(Bridge *b, Conn *c) {
        if (relay_step(&c->relay) != 0)
                conn_free(b, c);
}

static void connect_failed(Bridge *b, int error) {
        b->failures++;
        if (b->failures == 1 || b->failures % FAILURES_LOGGED_EVERY == 0)
                bridge_log(
                        b,
                        LOG_WARNING,
                        "%s bridge: could not connect to %s: %s (%u connections refused so far)",
                        b->name,
                        b->path,
                        strerror(error),
                        b->failures);
}

static void bridge_accept(Bridge *b) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memcpy(sa.sun_path, b->path, strlen(b->path) + 1); /* checked in bridge_new() */
        for (int i = 0; i < ACCEPTS_PER_DISPATCH && b->n_conns < BRIDGE_CONNECTIONS_MAX; i++) {
                _cleanup_close_ int tcp = -EBADF, ux = -EBADF;
                bool connecting = false;
                Conn *c;

                tcp = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (tcp < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                bridge_log(
                                        b, LOG_WARNING, "%s bridge: accept: %s", b->name, strerror(errno));
                        return;
                }
                ux = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (ux < 0) {
                        connect_failed(b, errno);
                        continue;
                }
                if (connect(ux, (const struct sockaddr *) &sa, sizeof(sa)) < 0) {
                        if (errno != EINPROGRESS) { /* EAGAIN: the daemon's backlog is full */
                                connect_failed(b, errno);
                                continue; /* closing tcp tells the client */
                        }
                        connecting = true;
                }

                c = calloc(1, sizeof(*c));
                if (!c || relay_init(&c->relay, tcp, ux) < 0) {
                        free(c);
                        bridge_log(b, LOG_ERR, "%s bridge: out of memory for a connection", b->name);
                        continue;
                }
                c->tcp = TAKE_FD(tcp);
                c->ux = TAKE_FD(ux);
                c->connecting = connecting;
                if (b->connect) {
                        c->handshake = true;
                        (void) relay_buffer_put(&c->relay.buffer[0], b->connect, strlen(b->connect));
                }
                c->next = b->conns;
                if (b->conns)
                        b->conns->prev = c;
                b->conns = c;
                b->n_conns++;
        }
}

/* A forward's handshake: writes the CONNECT, reads the answer's head. 0 while it goes on or once it is
 * done (c->handshake false, bytes after the head passed on), < 0 when the forward was refused. */
static int conn_handshake(Bridge *b, Conn *c) {
        bool progress = false;
        const char *end;
        ssize_t k;
        int r;

        r = relay_buffer_write(&c->relay.buffer[0], c->ux, &progress);
        if (r < 0)
                return r;
        k = read(c->ux, c->answer + c->answer_len, sizeof(c->answer) - 1 - c->answer_len);
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (k == 0)
                return -ECONNRESET;
        c->answer_len += (size_t) k;
        c->answer[c->answer_len] = '\0';
        end = strstr(c->answer, "\r\n\r\n");
        if (!end)
                return c->answer_len + 1 >= sizeof(c->answer) ? -EBADMSG : 0;
        if (!startswith(c->answer, "HTTP/1.1 200 ") && !startswith(c->answer, "HTTP/1.0 200 ")) {
                const char *body = end + 4;

                bridge_log(
                        b,
                        LOG_WARNING,
                        "%s bridge: the egress proxy refused the forward: %.*s%s%.200s",
                        b->name,
                        (int) strcspn(c->answer, "\r\n"),
                        c->answer,
                        *body ? ": " : "",
                        body);
                return -EACCES;
        }
        end += 4;
        (void) relay_buffer_put(&c->relay.buffer[1], end, c->answer_len - (size_t) (end - c->answer));
        c->handshake = false;
        return 0;
}

/* ---- the bridge ---- */

int bridge_new_forward(const char *name, const char *socket_path, const char *target, Bridge **ret) {
        Bridge *b;
        int r;

        if (isempty(target) || strpbrk(target, " \r\n") || strlen(target) > 300)
                return -EINVAL;
        r = bridge_new(name, socket_path, &b);
        if (r < 0)
                return r;
        if (asprintf(&b->connect, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target) < 0) {
                b->connect = NULL;
                bridge_free(b);
                return -ENOMEM;
        }
        *ret = b;
        return 0;
}

int bridge_new(const char *name, const char *socket_path, Bridge **ret) {
        struct sockaddr_un un;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        Bridge *b;

        if (isempty(name) || isempty(socket_path) || !ret)
                return -EINVAL;
        if (strlen(socket_path) >= sizeof(un.sun_path))
                return -ENAMETOOLONG;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->listen_fd = -EBADF;
        b->name = strdup(name);
        b->path = strdup(socket_path);
        if (!b->name || !b->path) {
                bridge_free(b);
                return -ENOMEM;
        }
        b->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (b->listen_fd < 0 || bind(b->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(b->listen_fd, SOMAXCONN) < 0 ||
            getsockname(b->listen_fd, (struct sockaddr *) &sa, &len) < 0) {
                int error = errno;

                bridge_free(b);
                return -error;
        }
        b->port = ntohs(sa.sin_port);
        *ret = b;
        return 0;
}

Bridge *bridge_free(Bridge *b) {
        if (!b)
                return NULL;
        while (b->conns)
                conn_free(b, b->conns);
        safe_close(b->listen_fd);
        free(b->name);
        free(b->path);
        free(b->connect);
        free(b);
        return NULL;
}

void bridge_set_log(Bridge *b, BridgeLogFunc log, void *userdata) {
        b->log = log;
        b->userdata = userdata;
}

uint16_t bridge_port(const Bridge *b) {
        return b->port;
}

size_t bridge_connections(const Bridge *b) {
        return b->n_conns;
}

size_t bridge_poll_max(const Bridge *b) {
        return 1 + 2 * b->n_conns;
}

static struct pollfd poll_entry(int fd, short events) {
        return (struct pollfd){ .fd = events ? fd : -1, .events = events };
}

size_t bridge_poll_fill(Bridge *b, struct pollfd *p) {
        size_t n = 0;

        b->listen_polled = b->n_conns < BRIDGE_CONNECTIONS_MAX;
        p[n++] = poll_entry(b->listen_fd, b->listen_polled ? POLLIN : 0);
        for (Conn *c = b->conns; c; c = c->next) {
                short tcp = 0, ux = POLLOUT;

                if (c->handshake && !c->connecting)
                        ux = (short) (POLLIN | (relay_buffer_wants_write(&c->relay.buffer[0]) ? POLLOUT : 0));
                else if (!c->connecting) {
                        tcp = (short) relay_events(&c->relay, 0);
                        ux = (short) relay_events(&c->relay, 1);
                }
                c->polled = true;
                c->poll_index = n;
                p[n++] = poll_entry(c->tcp, tcp);
                p[n++] = poll_entry(c->ux, ux);
        }
        return n;
}

void bridge_poll_dispatch(Bridge *b, const struct pollfd *p) {
        Conn *next;

        for (Conn *c = b->conns; c; c = next) {
                next = c->next;
                if (!c->polled || (p[c->poll_index].revents | p[c->poll_index + 1].revents) == 0)
                        continue;
                c->polled = false;
                if (c->connecting) {
                        int error = 0;
                        socklen_t len = sizeof(error);

                        if (getsockopt(c->ux, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                                error = errno;
                        if (error != 0) {
                                connect_failed(b, error);
                                conn_free(b, c);
                                continue;
                        }
                        c->connecting = false;
                }
                if (c->handshake) {
                        if (conn_handshake(b, c) < 0) {
                                conn_free(b, c); /* closing tcp tells the client */
                                continue;
                        }
                        if (c->handshake)
                                continue;
                }
                conn_pump(b, c);
        }
        /* Accepted last: a new connection is not in p. */
        if (b->listen_polled && p[0].revents)
                bridge_accept(b);
}

int bridge_setenv(uint16_t model_port, uint16_t egress_port) {
        char url[64];

        if (model_port != 0) {
                const char *key = getenv("ANTHROPIC_API_KEY"), *token = getenv("ANTHROPIC_AUTH_TOKEN"),
                           *oauth = getenv("CLAUDE_CODE_OAUTH_TOKEN");

                (void) snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned) model_port);
                if (setenv("ANTHROPIC_BASE_URL", url, 1) < 0)
                        return -errno;
                if (isempty(key) && isempty(token) && isempty(oauth) &&
                    setenv("ANTHROPIC_API_KEY", BRIDGE_PLACEHOLDER_API_KEY, 1) < 0)
                        return -errno;
        }
        if (egress_port != 0) {
                static const char *const names[] = {
                        "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"
                };

                (void) snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned) egress_port);
                for (size_t i = 0; i < ELEMENTSOF(names); i++)
                        if (setenv(names[i], url, 1) < 0)
                                return -errno;
                if (setenv("NO_PROXY", BRIDGE_NO_PROXY, 1) < 0 || setenv("no_proxy", BRIDGE_NO_PROXY, 1) < 0)
                        return -errno;
        }
        return 0;
}

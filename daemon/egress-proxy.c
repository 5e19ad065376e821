/* The egress proxy: one CONNECT proxy socket per session on the daemon's sd-event loop. A connection
 * sends one request head (at most EGRESS_HEAD_MAX bytes, parsed here by a small strict parser); a
 * CONNECT to an allowed host:port is resolved (numeric addresses at once, names with glibc's
 * getaddrinfo_a, polled from a timer so that no resolver thread ever calls into our code), connected
 * non-blocking, answered 200, and then relayed both ways through two bounded buffers with half-closes
 * passed on. Every decision is a journal record. docs/egress-proxy.md describes the behaviour. */
#define _GNU_SOURCE
#include "egress-proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define PIPE_SIZE (64 * 1024) /* per direction of a relayed connection */
#define CONNECTIONS_MAX 128   /* per session; the socket is not read while this many are open */
#define HEAD_TIMEOUT_USEC (30 * USEC_PER_SEC)    /* to send the request head */
#define CONNECT_TIMEOUT_USEC (30 * USEC_PER_SEC) /* to resolve and connect upstream */
#define REFUSE_TIMEOUT_USEC (10 * USEC_PER_SEC)  /* for the client to take an error answer and close */
#define REFUSE_DRAIN_MAX (1024 * 1024)           /* bytes read and dropped after an error answer */
#define RESOLVE_POLL_USEC (5 * 1000)
#define ACCEPTS_PER_EVENT 32
#define PUMPS_PER_EVENT 16

typedef struct Connection Connection;
typedef struct Resolution Resolution;

/* A byte queue in one direction: data[start, end) is pending; eof once the source ended, shut once
 * that end was passed on to the destination. */
typedef struct Pipe {
        char *data;
        size_t start, end;
        bool eof, shut;
} Pipe;

typedef enum ConnState {
        CONN_HEAD,       /* reading the request head */
        CONN_RESOLVING,  /* the host name is being looked up */
        CONN_CONNECTING, /* connecting to c->addr */
        CONN_RELAY,      /* tunnelling */
        CONN_REFUSING,   /* writing an error answer, then reading the client's rest until it closes */
} ConnState;

struct Connection {
        EgressSession *session;
        Connection *prev, *next;
        ConnState state;
        int client_fd, upstream_fd;
        sd_event_source *client_source, *upstream_source, *timer;
        char head[EGRESS_HEAD_MAX];
        size_t head_len;
        EgressRequest req;
        Resolution *resolution;
        struct addrinfo *addrs, *addr;
        int connect_error;
        size_t drained; /* bytes dropped after an error answer */
        Pipe up, down;  /* client to upstream, upstream to client */
};

/* One getaddrinfo_a() request. It outlives its connection when that goes first: libc writes into cb
 * until the lookup ends, so it is freed only then. */
struct Resolution {
        EgressProxy *proxy;
        Resolution *prev, *next;
        Connection *connection; /* NULL once the connection is gone */
        struct gaicb cb;
        struct addrinfo hints;
        char name[EGRESS_HOST_MAX + 1];
        char service[8];
};

struct EgressSession {
        EgressProxy *proxy;
        EgressSession *prev, *next;
        char *id, *socket_path;
        char **allowed;
        int listen_fd;
        sd_event_source *listen_source;
        bool bound;
        Connection *connections;
        unsigned n_connections;
};

struct EgressProxy {
        sd_event *event;
        EgressSession *sessions;
        Resolution *resolutions;
        sd_event_source *resolve_timer;
};

#define LIST_PREPEND(head, item)               \
        do {                                   \
                (item)->prev = NULL;           \
                (item)->next = (head);         \
                if (head)                      \
                        (head)->prev = (item); \
                (head) = (item);               \
        } while (0)

#define LIST_REMOVE(head, item)                            \
        do {                                               \
                if ((item)->prev)                          \
                        (item)->prev->next = (item)->next; \
                else                                       \
                        (head) = (item)->next;             \
                if ((item)->next)                          \
                        (item)->next->prev = (item)->prev; \
                (item)->prev = (item)->next = NULL;        \
        } while (0)

/* ---- the request head ---- */

static bool is_tchar(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_name_char(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '.' || c == '_';
}

/* A port of 1 to 5 digits, 1-65535, in s[0, n). */
static bool parse_port(const char *s, size_t n, uint16_t *ret) {
        unsigned v = 0;

        if (n == 0 || n > 5)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v == 0 || v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

/* A host in s[0, n): a DNS-ish name or IPv4 literal of [A-Za-z0-9._-], or "[IPv6]". Written lowercased
 * and without brackets to ret (EGRESS_HOST_MAX + 1 bytes). */
static bool parse_host(const char *s, size_t n, char *ret) {
        if (n >= 2 && s[0] == '[') {
                char v6[INET6_ADDRSTRLEN];
                struct in6_addr a;

                if (s[n - 1] != ']' || n - 2 == 0 || n - 2 >= sizeof(v6))
                        return false;
                for (size_t i = 1; i < n - 1; i++)
                        if (!strchr("0123456789abcdefABCDEF:.", s[i]) || s[i] == '\0')
                                return false;
                memcpy(v6, s + 1, n - 2);
                v6[n - 2] = '\0';
                if (inet_pton(AF_INET6, v6, &a) != 1)
                        return false;
                for (size_t i = 0; i <= n - 2; i++)
                        ret[i] = (char) tolower((unsigned char) v6[i]);
                return true;
        }
        if (n == 0 || n > EGRESS_HOST_MAX || s[0] == '.' || s[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                if (!is_name_char((unsigned char) s[i]))
                        return false;
                ret[i] = (char) tolower((unsigned char) s[i]);
        }
        ret[n] = '\0';
        return true;
}

/* "host:port" in s[0, n), the authority form of a CONNECT target (RFC 9110 9.3.6). */
static bool parse_authority(const char *s, size_t n, char *ret_host, uint16_t *ret_port) {
        const char *colon = NULL;

        for (size_t i = n; i > 0; i--)
                if (s[i - 1] == ':') {
                        colon = s + i - 1;
                        break;
                }
        if (!colon)
                return false;
        if (!parse_port(colon + 1, (size_t) (s + n - colon - 1), ret_port))
                return false;
        return parse_host(s, (size_t) (colon - s), ret_host);
}

/* The request line in s[0, n): METHOD SP TARGET SP HTTP/1.x. */
static bool parse_request_line(
        const char *s, size_t n, char *ret_method, const char **ret_target, size_t *ret_target_len) {
        size_t i = 0, m, t0;

        while (i < n && is_tchar((unsigned char) s[i]))
                i++;
        m = i;
        if (m == 0 || m > EGRESS_METHOD_MAX || i >= n || s[i] != ' ')
                return false;
        t0 = ++i;
        while (i < n && (unsigned char) s[i] > 0x20 && (unsigned char) s[i] < 0x7f)
                i++;
        if (i == t0 || i >= n || s[i] != ' ')
                return false;
        if (n - i - 1 != 8 ||
            (memcmp(s + i + 1, "HTTP/1.1", 8) != 0 && memcmp(s + i + 1, "HTTP/1.0", 8) != 0))
                return false;
        memcpy(ret_method, s, m);
        ret_method[m] = '\0';
        *ret_target = s + t0;
        *ret_target_len = i - t0;
        return true;
}

/* A header field line in s[0, n): NAME ":" VALUE, no obsolete folding, no control characters. */
static bool header_line_valid(const char *s, size_t n) {
        size_t i = 0;

        while (i < n && is_tchar((unsigned char) s[i]))
                i++;
        if (i == 0 || i >= n || s[i] != ':')
                return false;
        for (i++; i < n; i++) {
                unsigned char c = (unsigned char) s[i];

                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return false;
        }
        return true;
}

int egress_parse_head(const char *buf, size_t len, EgressRequest *ret, size_t *ret_head_len) {
        size_t limit = len < EGRESS_HEAD_MAX ? len : EGRESS_HEAD_MAX, line_start = 0, head_len = 0;
        unsigned lines = 0;
        EgressRequest req = {};
        const char *target = NULL;
        size_t target_len = 0;

        if (!buf && len > 0)
                return -EBADMSG;

        /* Find the blank line that ends the head; lines end in LF, optionally after CR. */
        for (size_t i = 0; i < limit; i++) {
                size_t line_end;

                if (buf[i] != '\n')
                        continue;
                line_end = i > line_start && buf[i - 1] == '\r' ? i - 1 : i;
                if (line_end == line_start) {
                        if (lines == 0)
                                return -EBADMSG; /* no request line */
                        head_len = i + 1;
                        break;
                }
                lines++;
                line_start = i + 1;
        }

        if (head_len == 0) {
                /* Not complete. Text that cannot start a request is refused now, not after 8 KiB. */
                for (size_t i = 0; i < limit && buf[i] != '\n'; i++) {
                        unsigned char c = (unsigned char) buf[i];

                        if ((c < 0x20 && c != '\r') || c >= 0x7f)
                                return -EBADMSG;
                }
                return len >= EGRESS_HEAD_MAX ? -E2BIG : 0;
        }

        /* Check every line of [0, head_len). */
        line_start = 0;
        lines = 0;
        for (size_t i = 0; i < head_len; i++) {
                size_t line_end, n;

                if (buf[i] != '\n')
                        continue;
                line_end = i > line_start && buf[i - 1] == '\r' ? i - 1 : i;
                n = line_end - line_start;
                if (n == 0)
                        break;
                if (memchr(buf + line_start, '\r', n))
                        return -EBADMSG; /* a CR that does not end the line */
                if (lines == 0) {
                        if (!parse_request_line(buf + line_start, n, req.method, &target, &target_len))
                                return -EBADMSG;
                } else if (!header_line_valid(buf + line_start, n))
                        return -EBADMSG;
                lines++;
                line_start = i + 1;
        }

        if (!streq(req.method, "CONNECT")) {
                *ret = req;
                *ret_head_len = head_len;
                return -EOPNOTSUPP;
        }
        if (!parse_authority(target, target_len, req.host, &req.port))
                return -EBADMSG;
        *ret = req;
        *ret_head_len = head_len;
        return 1;
}

/* ---- the allowlist ---- */

typedef struct AllowEntry {
        char host[EGRESS_HOST_MAX + 1];
        uint16_t port; /* 0: every port */
        bool wildcard; /* "*.host" */
} AllowEntry;

static bool allow_entry_parse(const char *entry, AllowEntry *ret) {
        AllowEntry e = {};
        size_t n, host_len;
        const char *s = entry, *colon;

        if (isempty(entry))
                return false;
        n = strlen(entry);
        if (startswith(s, "*.")) {
                e.wildcard = true;
                s += 2;
                n -= 2;
        }
        /* A port follows the last ':' unless the host is a bare IPv6 literal, which must be bracketed. */
        colon = strrchr(s, ':');
        if (s[0] == '[') {
                const char *close = strchr(s, ']');

                if (!close || e.wildcard)
                        return false;
                colon = close[1] == ':' ? close + 1 : NULL;
                if (!colon && close[1] != '\0')
                        return false;
        } else if (colon && strchr(s, ':') != colon)
                return false;
        host_len = colon ? (size_t) (colon - s) : n;
        if (colon && !parse_port(colon + 1, strlen(colon + 1), &e.port))
                return false;
        if (!parse_host(s, host_len, e.host))
                return false;
        *ret = e;
        return true;
}

bool egress_allow_entry_valid(const char *entry) {
        AllowEntry e;

        return allow_entry_parse(entry, &e);
}

static bool hosts_equal(const char *a, const char *b) {
        struct in6_addr x, y;

        if (strchr(a, ':') && strchr(b, ':'))
                return inet_pton(AF_INET6, a, &x) == 1 && inet_pton(AF_INET6, b, &y) == 1 &&
                        memcmp(&x, &y, sizeof(x)) == 0;
        return strcasecmp(a, b) == 0;
}

bool egress_host_allowed(char *const *allowed, const char *host, uint16_t port) {
        if (isempty(host) || port == 0)
                return false;
        for (size_t i = 0; allowed && allowed[i]; i++) {
                AllowEntry e;

                if (!allow_entry_parse(allowed[i], &e))
                        continue;
                if (e.port != 0 && e.port != port)
                        continue;
                if (e.wildcard) {
                        size_t hl = strlen(host), el = strlen(e.host);

                        if (hl > el + 1 && host[hl - el - 1] == '.' &&
                            strcasecmp(host + hl - el, e.host) == 0)
                                return true;
                } else if (hosts_equal(host, e.host))
                        return true;
        }
        return false;
}

/* ---- pipes ---- */

static size_t pipe_len(const Pipe *p) {
        return p->end - p->start;
}

static int pipe_alloc(Pipe *p) {
        if (!p->data) {
                p->data = malloc(PIPE_SIZE);
                if (!p->data)
                        return -ENOMEM;
        }
        return 0;
}

static bool pipe_wants_read(const Pipe *p) {
        return p->data && !p->eof && pipe_len(p) < PIPE_SIZE;
}

static void pipe_put(Pipe *p, const void *data, size_t n) {
        /* Callers put at most an answer and the bytes after a head into an empty pipe. */
        if (n > PIPE_SIZE - p->end)
                n = PIPE_SIZE - p->end;
        memcpy(p->data + p->end, data, n);
        p->end += n;
}

static int pipe_read(Pipe *p, int fd, bool *progress) {
        ssize_t k;

        if (!pipe_wants_read(p))
                return 0;
        if (p->end == PIPE_SIZE) {
                memmove(p->data, p->data + p->start, pipe_len(p));
                p->end -= p->start;
                p->start = 0;
        }
        do
                k = read(fd, p->data + p->end, PIPE_SIZE - p->end);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return errno == EAGAIN ? 0 : -errno;
        if (k == 0)
                p->eof = true;
        p->end += (size_t) k;
        *progress = true;
        return 0;
}

static int pipe_write(Pipe *p, int fd, bool *progress) {
        if (pipe_len(p) > 0) {
                ssize_t k;

                do
                        k = send(fd, p->data + p->start, pipe_len(p), MSG_NOSIGNAL);
                while (k < 0 && errno == EINTR);
                if (k < 0)
                        return errno == EAGAIN ? 0 : -errno;
                p->start += (size_t) k;
                if (p->start == p->end)
                        p->start = p->end = 0;
                *progress = true;
        }
        if (p->eof && pipe_len(p) == 0 && !p->shut) {
                if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN)
                        return -errno;
                p->shut = true;
                *progress = true;
        }
        return 0;
}

/* ---- connections ---- */

static sd_event *connection_event(Connection *c) {
        return c->session->proxy->event;
}

static const char *session_id(Connection *c) {
        return c->session->id;
}

/* host:port for messages, with an IPv6 literal in brackets. */
static void format_target(const EgressRequest *req, char *buf, size_t size) {
        if (strchr(req->host, ':'))
                (void) snprintf(buf, size, "[%s]:%u", req->host, (unsigned) req->port);
        else
                (void) snprintf(buf, size, "%s:%u", req->host, (unsigned) req->port);
}

static void connection_detach_resolution(Connection *c) {
        if (!c->resolution)
                return;
        /* The lookup goes on in libc; the proxy's timer frees it when it ends. */
        c->resolution->connection = NULL;
        (void) gai_cancel(&c->resolution->cb);
        c->resolution = NULL;
}

static void connection_free(Connection *c);
static int connection_update(Connection *c);
static void connection_connect_next(Connection *c);

static void log_decision(Connection *c, int priority, const char *decision, const char *why) {
        char target[EGRESS_HOST_MAX + 16];

        format_target(&c->req, target, sizeof(target));
        log_struct(
                priority,
                "MESSAGE=session %s: egress to %s %s%s%s",
                session_id(c),
                target,
                decision,
                why ? ": " : "",
                strempty(why),
                "MESSAGE_ID=" EGRESS_DECISION_MESSAGE_ID,
                "CCDOCKER_SESSION=%s",
                session_id(c),
                "CCDOCKER_EVENT=egress",
                "CCDOCKER_EGRESS_HOST=%s",
                c->req.host,
                "CCDOCKER_EGRESS_PORT=%u",
                (unsigned) c->req.port,
                "CCDOCKER_EGRESS_DECISION=%s",
                decision,
                NULL);
}

static void log_bad_request(Connection *c, const char *decision, const char *why) {
        log_struct(
                LOG_WARNING,
                "MESSAGE=session %s: egress request refused (%s): %s",
                session_id(c),
                decision,
                why,
                "MESSAGE_ID=" EGRESS_DECISION_MESSAGE_ID,
                "CCDOCKER_SESSION=%s",
                session_id(c),
                "CCDOCKER_EVENT=egress",
                "CCDOCKER_EGRESS_DECISION=%s",
                decision,
                NULL);
}

static int set_io(sd_event_source *s, uint32_t events) {
        int r;

        if (!s)
                return 0;
        if (events == 0)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        r = sd_event_source_set_io_events(s, events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s, SD_EVENT_ON);
}

static int connection_set_timer(Connection *c, uint64_t usec) {
        uint64_t now_usec;
        int r;

        if (usec == 0)
                return c->timer ? sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) : 0;
        r = sd_event_now(connection_event(c), CLOCK_MONOTONIC, &now_usec);
        if (r < 0)
                return r;
        r = sd_event_source_set_time(c->timer, now_usec + usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

/* Answers with an error and closes once the client has it. */
static void connection_refuse(
        Connection *c, const char *status, const char *extra_headers, const char *body) {
        char head[512];
        int n, r;

        connection_detach_resolution(c);
        c->upstream_source = sd_event_source_disable_unref(c->upstream_source);
        c->upstream_fd = safe_close(c->upstream_fd);
        if (c->addrs)
                freeaddrinfo(c->addrs);
        c->addrs = c->addr = NULL;

        if (pipe_alloc(&c->down) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        c->down.start = c->down.end = 0;
        n = snprintf(
                head,
                sizeof(head),
                "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s"
                "Connection: close\r\n\r\n",
                status,
                strlen(body),
                strempty(extra_headers));
        pipe_put(&c->down, head, (size_t) n);
        pipe_put(&c->down, body, strlen(body));
        c->down.eof = true;
        c->state = CONN_REFUSING;
        r = connection_set_timer(c, REFUSE_TIMEOUT_USEC);
        if (r >= 0)
                r = connection_update(c);
        if (r < 0)
                connection_free(c);
}

/* "cc-docker: WHAT HOST:PORTAFTER\n" */
static void connection_refuse_target(
        Connection *c, const char *status, const char *what, const char *after) {
        char target[EGRESS_HOST_MAX + 16], body[1024];

        format_target(&c->req, target, sizeof(target));
        (void) snprintf(body, sizeof(body), "cc-docker: %s %s%s\n", what, target, strempty(after));
        connection_refuse(c, status, NULL, body);
}

static void connection_refuse_failed(Connection *c, const char *what, const char *why) {
        char target[EGRESS_HOST_MAX + 16], after[256];

        format_target(&c->req, target, sizeof(target));
        log_struct(
                LOG_WARNING,
                "MESSAGE=session %s: egress to %s failed: %s %s: %s",
                session_id(c),
                target,
                what,
                target,
                why,
                "CCDOCKER_SESSION=%s",
                session_id(c),
                "CCDOCKER_EVENT=egress-failed",
                "CCDOCKER_EGRESS_HOST=%s",
                c->req.host,
                "CCDOCKER_EGRESS_PORT=%u",
                (unsigned) c->req.port,
                NULL);
        (void) snprintf(after, sizeof(after), ": %s", why);
        connection_refuse_target(c, "502 Bad Gateway", what, after);
}

static int connection_update(Connection *c) {
        uint32_t client = 0, upstream = 0;
        int r;

        switch (c->state) {
        case CONN_HEAD:
                client = EPOLLIN;
                break;
        case CONN_RESOLVING:
                break;
        case CONN_CONNECTING:
                upstream = EPOLLOUT;
                break;
        case CONN_RELAY:
                if (pipe_wants_read(&c->up))
                        client |= EPOLLIN;
                if (pipe_len(&c->down) > 0 || (c->down.eof && !c->down.shut))
                        client |= EPOLLOUT;
                if (pipe_wants_read(&c->down))
                        upstream |= EPOLLIN;
                if (pipe_len(&c->up) > 0 || (c->up.eof && !c->up.shut))
                        upstream |= EPOLLOUT;
                break;
        case CONN_REFUSING:
                client = c->down.shut ? EPOLLIN : EPOLLOUT;
                break;
        }
        r = set_io(c->client_source, client);
        if (r < 0)
                return r;
        return set_io(c->upstream_source, upstream);
}

/* After an error answer: reads and drops what the client still sends, until it closes (1) or errs
 * (-errno), 0 meanwhile. Closing a unix socket with unread data would reset the client's end, and
 * the client could lose the answer. Bounded by REFUSE_DRAIN_MAX and the refusal's timer. */
static int connection_drain(Connection *c) {
        char buf[4096];

        for (;;) {
                ssize_t k = read(c->client_fd, buf, sizeof(buf));

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return errno == EAGAIN ? 0 : -errno;
                if (k == 0)
                        return 1;
                c->drained += (size_t) k;
                if (c->drained > REFUSE_DRAIN_MAX)
                        return -E2BIG;
        }
}

/* Moves bytes both ways as far as the sockets take them now. */
static void connection_pump(Connection *c) {
        int r = 0;

        for (int i = 0; i < PUMPS_PER_EVENT; i++) {
                bool progress = false;

                if (c->state == CONN_REFUSING) {
                        r = pipe_write(&c->down, c->client_fd, &progress);
                        if (r >= 0 && c->down.shut)
                                r = connection_drain(c);
                        if (r != 0) {
                                connection_free(c);
                                return;
                        }
                } else {
                        r = pipe_read(&c->up, c->client_fd, &progress);
                        if (r >= 0)
                                r = pipe_write(&c->up, c->upstream_fd, &progress);
                        if (r >= 0)
                                r = pipe_read(&c->down, c->upstream_fd, &progress);
                        if (r >= 0)
                                r = pipe_write(&c->down, c->client_fd, &progress);
                        if (r < 0) {
                                log_debug_errno(r, "session %s: egress relay ended: %m", session_id(c));
                                connection_free(c);
                                return;
                        }
                        if (c->up.shut && c->down.shut) {
                                connection_free(c);
                                return;
                        }
                }
                if (!progress)
                        break;
        }
        r = connection_update(c);
        if (r < 0)
                connection_free(c);
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static void connection_established(Connection *c) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        int r;

        if (c->addrs)
                freeaddrinfo(c->addrs);
        c->addrs = c->addr = NULL;
        if (pipe_alloc(&c->down) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        pipe_put(&c->down, ok, sizeof(ok) - 1);
        c->state = CONN_RELAY;
        r = connection_set_timer(c, 0);
        if (r < 0) {
                connection_free(c);
                return;
        }
        connection_pump(c);
}

static void connection_connect_next(Connection *c) {
        for (; c->addr; c->addr = c->addr->ai_next) {
                _cleanup_close_ int fd = -EBADF;
                int r;

                fd =
                        socket(c->addr->ai_family,
                               c->addr->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                               c->addr->ai_protocol);
                if (fd < 0) {
                        c->connect_error = errno;
                        continue;
                }
                if (connect(fd, c->addr->ai_addr, c->addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
                        c->connect_error = errno;
                        continue;
                }
                c->upstream_fd = TAKE_FD(fd);
                r = sd_event_add_io(
                        connection_event(c),
                        &c->upstream_source,
                        c->upstream_fd,
                        EPOLLOUT,
                        on_upstream_io,
                        c);
                if (r < 0) {
                        log_error_errno(
                                r, "session %s: could not watch an egress connection: %m", session_id(c));
                        connection_free(c);
                        return;
                }
                c->state = CONN_CONNECTING;
                return;
        }
        connection_refuse_failed(c, "could not connect to", strerror(c->connect_error ?: EHOSTUNREACH));
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Connection *c = userdata;

        if (c->state == CONN_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error == 0) {
                        connection_established(c);
                        return 0;
                }
                c->connect_error = error;
                c->upstream_source = sd_event_source_disable_unref(c->upstream_source);
                c->upstream_fd = safe_close(c->upstream_fd);
                c->addr = c->addr->ai_next;
                connection_connect_next(c);
                return 0;
        }
        connection_pump(c);
        return 0;
}

/* ---- resolving ---- */

static void resolution_free(Resolution *r) {
        if (r->cb.ar_result)
                freeaddrinfo(r->cb.ar_result);
        free(r);
}

static void resolution_done(Resolution *r, int error) {
        Connection *c = r->connection;

        if (!c) {
                resolution_free(r);
                return;
        }
        c->resolution = NULL;
        if (error != 0) {
                connection_refuse_failed(c, "could not resolve the host of", gai_strerror(error));
                resolution_free(r);
                return;
        }
        c->addrs = c->addr = TAKE_PTR(r->cb.ar_result);
        resolution_free(r);
        connection_connect_next(c);
}

static int on_resolve_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        EgressProxy *p = userdata;
        Resolution *next;

        for (Resolution *r = p->resolutions; r; r = next) {
                int e = gai_error(&r->cb);

                next = r->next;
                if (e == EAI_INPROGRESS)
                        continue;
                LIST_REMOVE(p->resolutions, r);
                resolution_done(r, e);
        }
        if (p->resolutions) {
                (void) sd_event_source_set_time_relative(s, RESOLVE_POLL_USEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

static void connection_resolve(Connection *c) {
        EgressProxy *p = c->session->proxy;
        struct addrinfo hints = {
                .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                .ai_socktype = SOCK_STREAM,
        };
        struct gaicb *list[1];
        struct sigevent sev = { .sigev_notify = SIGEV_NONE };
        char service[8];
        Resolution *r;
        int e;

        (void) snprintf(service, sizeof(service), "%u", (unsigned) c->req.port);
        c->state = CONN_RESOLVING;

        /* A literal address needs no lookup and none is started. */
        e = getaddrinfo(c->req.host, service, &hints, &c->addrs);
        if (e == 0) {
                c->addr = c->addrs;
                connection_connect_next(c);
                return;
        }

        r = calloc(1, sizeof(*r));
        if (!r) {
                log_oom();
                connection_free(c);
                return;
        }
        r->proxy = p;
        r->hints = (struct addrinfo){ .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
        memcpy(r->name, c->req.host, sizeof(r->name));
        memcpy(r->service, service, sizeof(r->service));
        r->cb = (struct gaicb){ .ar_name = r->name, .ar_service = r->service, .ar_request = &r->hints };
        list[0] = &r->cb;
        e = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
        if (e != 0) {
                free(r);
                connection_refuse_failed(c, "could not resolve the host of", gai_strerror(e));
                return;
        }
        r->connection = c;
        c->resolution = r;
        LIST_PREPEND(p->resolutions, r);
        if (sd_event_source_get_enabled(p->resolve_timer, NULL) == 0) {
                (void) sd_event_source_set_time_relative(p->resolve_timer, RESOLVE_POLL_USEC);
                (void) sd_event_source_set_enabled(p->resolve_timer, SD_EVENT_ONESHOT);
        }
}

/* ---- the head and the decision ---- */

static void connection_decide(Connection *c, size_t head_len) {
        EgressSession *s = c->session;
        size_t rest = c->head_len - head_len;
        int r;

        if (!egress_host_allowed(s->allowed, c->req.host, c->req.port)) {
                log_decision(c, LOG_WARNING, "denied", "not in the session's allowlist");
                connection_refuse_target(
                        c, "403 Forbidden", "egress to", " is not allowed for this session");
                return;
        }
        log_decision(c, LOG_INFO, "allowed", NULL);

        /* Bytes the client sent after the head (a TLS hello that did not wait) go through the tunnel. */
        if (pipe_alloc(&c->up) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        pipe_put(&c->up, c->head + head_len, rest);
        r = connection_set_timer(c, CONNECT_TIMEOUT_USEC);
        if (r >= 0)
                r = set_io(c->client_source, 0);
        if (r < 0) {
                connection_free(c);
                return;
        }
        connection_resolve(c);
}

static void connection_read_head(Connection *c) {
        size_t head_len = 0;
        ssize_t k;
        int r;

        do
                k = read(c->client_fd, c->head + c->head_len, sizeof(c->head) - c->head_len);
        while (k < 0 && errno == EINTR);
        if (k < 0 && errno == EAGAIN)
                return;
        if (k <= 0) { /* gone before asking anything */
                connection_free(c);
                return;
        }
        c->head_len += (size_t) k;

        r = egress_parse_head(c->head, c->head_len, &c->req, &head_len);
        if (r == 0)
                return;
        if (r == 1) {
                connection_decide(c, head_len);
                return;
        }
        if (r == -EOPNOTSUPP) {
                log_bad_request(c, "method-not-allowed", c->req.method);
                connection_refuse(
                        c,
                        "405 Method Not Allowed",
                        "Allow: CONNECT\r\n",
                        "cc-docker: the egress proxy only tunnels with CONNECT (use https:// URLs)\n");
                return;
        }
        log_bad_request(c, "bad-request", r == -E2BIG ? "request head too long" : "malformed request head");
        connection_refuse(
                c,
                "400 Bad Request",
                NULL,
                r == -E2BIG ? "cc-docker: the request head is longer than 8 KiB\n"
                            : "cc-docker: the egress proxy expects \"CONNECT host:port HTTP/1.1\"\n");
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Connection *c = userdata;

        if (c->state == CONN_HEAD)
                connection_read_head(c);
        else
                connection_pump(c);
        return 0;
}

static int on_connection_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Connection *c = userdata;

        switch (c->state) {
        case CONN_RESOLVING:
        case CONN_CONNECTING:
                connection_refuse_target(c, "504 Gateway Timeout", "timed out connecting to", NULL);
                break;
        default:
                connection_free(c);
        }
        return 0;
}

static void connection_free(Connection *c) {
        EgressSession *s = c->session;

        LIST_REMOVE(s->connections, c);
        s->n_connections--;
        connection_detach_resolution(c);
        c->client_source = sd_event_source_disable_unref(c->client_source);
        c->upstream_source = sd_event_source_disable_unref(c->upstream_source);
        c->timer = sd_event_source_disable_unref(c->timer);
        safe_close(c->client_fd);
        safe_close(c->upstream_fd);
        if (c->addrs)
                freeaddrinfo(c->addrs);
        free(c->up.data);
        free(c->down.data);
        free(c);

        if (s->listen_source && s->n_connections < CONNECTIONS_MAX)
                (void) sd_event_source_set_enabled(s->listen_source, SD_EVENT_ON);
}

static int connection_new(EgressSession *s, int fd) {
        sd_event *e = s->proxy->event;
        Connection *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        *c = (Connection){ .session = s, .state = CONN_HEAD, .client_fd = fd, .upstream_fd = -EBADF };
        LIST_PREPEND(s->connections, c);
        s->n_connections++;

        r = sd_event_add_io(e, &c->client_source, fd, EPOLLIN, on_client_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        e, &c->timer, CLOCK_MONOTONIC, HEAD_TIMEOUT_USEC, 0, on_connection_timer, c);
        if (r < 0) {
                connection_free(c);
                return r;
        }
        (void) sd_event_source_set_description(c->client_source, "egress-client");
        return 0;
}

static int on_listen_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        EgressSession *s = userdata;

        for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
                int cfd, r;

                if (s->n_connections >= CONNECTIONS_MAX) {
                        log_warning(
                                "session %s: %u egress connections are open: not accepting more for now",
                                s->id,
                                s->n_connections);
                        (void) sd_event_source_set_enabled(source, SD_EVENT_OFF);
                        return 0;
                }
                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(
                                        errno,
                                        "session %s: could not accept on %s: %m",
                                        s->id,
                                        s->socket_path);
                        return 0;
                }
                r = connection_new(s, cfd);
                if (r < 0)
                        log_error_errno(r, "session %s: could not set up an egress connection: %m", s->id);
        }
        return 0;
}

/* ---- sessions and the proxy ---- */

static int session_bind(EgressSession *s, uid_t uid, gid_t gid) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *name;
        struct stat st;
        mode_t old_umask;
        char proc[64];
        int r;

        if (strlen(s->socket_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "egress socket path %s is too long", s->socket_path);
        memcpy(sa.sun_path, s->socket_path, strlen(s->socket_path) + 1);
        name = strrchr(s->socket_path, '/');
        if (!name || isempty(name + 1))
                return log_error_errno(EINVAL, "egress socket path %s is not DIR/NAME", s->socket_path);
        dir = name == s->socket_path ? strdup("/")
                                     : strndup(s->socket_path, (size_t) (name - s->socket_path));
        if (!dir)
                return log_oom();
        name++;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return log_error_errno(errno, "could not open directory %s: %m", dir);
        /* A socket left by an earlier daemon: nobody listens on it any more. */
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return log_error_errno(errno, "could not remove stale %s: %m", s->socket_path);

        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return log_error_errno(errno, "could not create a socket: %m");
        /* Created 0600 from the start; the daemon has one thread, so the process-wide umask is safe. */
        old_umask = umask(0177);
        r = bind(s->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        (void) umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "could not bind %s: %m", s->socket_path);
        s->bound = true;

        /* Owner and mode are set on the inode checked to be a socket: the directory belongs to the
         * container's user, who could put a symlink in its place (as in channel.c). */
        fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "could not open %s: %m", s->socket_path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "could not stat %s: %m", s->socket_path);
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(EBADFD, "%s was replaced by something else", s->socket_path);
        if ((st.st_uid != uid || st.st_gid != gid) && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return log_error_errno(
                        errno,
                        "could not give %s to %u:%u: %m",
                        s->socket_path,
                        (unsigned) uid,
                        (unsigned) gid);
        if ((st.st_mode & 07777) != 0600) {
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                if (chmod(proc, 0600) < 0)
                        return log_error_errno(errno, "could not make %s mode 0600: %m", s->socket_path);
        }

        if (listen(s->listen_fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "could not listen on %s: %m", s->socket_path);
        return 0;
}

int egress_proxy_listen(
        EgressProxy *p,
        const char *session_id_arg,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        char **allowed_hosts,
        EgressSession **ret) {
        _cleanup_(egress_session_freep) EgressSession *s = NULL;
        int r;

        if (!p || isempty(session_id_arg) || isempty(socket_path) || !ret)
                return -EINVAL;
        for (size_t i = 0; allowed_hosts && allowed_hosts[i]; i++)
                if (!egress_allow_entry_valid(allowed_hosts[i]))
                        return log_error_errno(
                                EINVAL,
                                "session %s: egress allowlist entry '%s' is not host or host:port",
                                session_id_arg,
                                allowed_hosts[i]);

        s = calloc(1, sizeof(*s));
        if (!s)
                return log_oom();
        *s = (EgressSession){ .proxy = p, .listen_fd = -EBADF };
        LIST_PREPEND(p->sessions, s);
        s->id = strdup(session_id_arg);
        s->socket_path = strdup(socket_path);
        s->allowed = allowed_hosts ? strv_copy(allowed_hosts) : calloc(1, sizeof(char *));
        if (!s->id || !s->socket_path || !s->allowed)
                return log_oom();

        r = session_bind(s, uid, gid);
        if (r < 0)
                return r;
        r = sd_event_add_io(p->event, &s->listen_source, s->listen_fd, EPOLLIN, on_listen_io, s);
        if (r < 0)
                return log_error_errno(r, "could not watch %s: %m", s->socket_path);
        (void) sd_event_source_set_description(s->listen_source, "egress-listen");

        log_debug("session %s: egress proxy on %s", s->id, s->socket_path);
        *ret = TAKE_PTR(s);
        return 0;
}

EgressSession *egress_session_free(EgressSession *s) {
        if (!s)
                return NULL;
        while (s->connections)
                connection_free(s->connections);
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->listen_fd = safe_close(s->listen_fd);
        if (s->bound && unlink(s->socket_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "could not remove %s: %m", s->socket_path);
        LIST_REMOVE(s->proxy->sessions, s);
        strv_free(s->allowed);
        free(s->id);
        free(s->socket_path);
        free(s);
        return NULL;
}

unsigned egress_session_connections(const EgressSession *s) {
        return s ? s->n_connections : 0;
}

int egress_proxy_new(sd_event *event, EgressProxy **ret) {
        _cleanup_(egress_proxy_freep) EgressProxy *p = NULL;
        int r;

        if (!event || !ret)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        r = sd_event_add_time_relative(
                event, &p->resolve_timer, CLOCK_MONOTONIC, RESOLVE_POLL_USEC, 0, on_resolve_timer, p);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(p->resolve_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(p->resolve_timer, "egress-resolve");
        *ret = TAKE_PTR(p);
        return 0;
}

EgressProxy *egress_proxy_free(EgressProxy *p) {
        if (!p)
                return NULL;
        while (p->sessions)
                egress_session_free(p->sessions);

        /* Lookups that could not be cancelled still write into their Resolution: wait for them. */
        for (Resolution *r = p->resolutions; r; r = r->next)
                (void) gai_cancel(&r->cb);
        while (p->resolutions) {
                Resolution *r = p->resolutions;

                if (gai_error(&r->cb) == EAI_INPROGRESS) {
                        const struct gaicb *list[1] = { &r->cb };

                        (void) gai_suspend(list, 1, NULL);
                        continue;
                }
                LIST_REMOVE(p->resolutions, r);
                resolution_free(r);
        }
        p->resolve_timer = sd_event_source_disable_unref(p->resolve_timer);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}

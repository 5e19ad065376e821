/* The egress proxy: one CONNECT proxy socket per session on the daemon's sd-event loop. A connection
 * sends one request head (at most EGRESS_HEAD_MAX bytes, parsed by egress-policy.c's strict parser); a
 * CONNECT to an allowed host:port is resolved (numeric addresses at once, names with c-ares, whose
 * sockets and timeout the loop watches), each address checked (a loopback, link-local or private one
 * only when the allowlist names it), connected non-blocking to an address that passed, answered 200,
 * and then relayed both ways by common/relay.c (two bounded buffers, half-closes passed on). Every
 * decision is a journal record. What may pass (the parser, the allowlist, the address check) is pure, in
 * egress-policy.c; this file is the I/O. docs/egress-proxy.md describes the behaviour. */
#define _GNU_SOURCE
#include "egress-proxy.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "list.h"
#include "log.h"
#include "ratelimit.h"
#include "relay.h"
#include "time-util.h"
#include "util.h"

#define CONNECTIONS_MAX 128 /* per session; the socket is not read while this many are open */
#define RESOLUTIONS_MAX 256 /* lookups running in the proxy, those of connections gone included */
#define ADDRESSES_MAX 16    /* addresses of a name kept and tried in turn */
#define HEAD_TIMEOUT_USEC (30 * USEC_PER_SEC)    /* to send the request head */
#define CONNECT_TIMEOUT_USEC (30 * USEC_PER_SEC) /* to resolve and connect upstream */
#define REFUSE_TIMEOUT_USEC (10 * USEC_PER_SEC)  /* for the client to take an error answer and close */
#define REFUSE_DRAIN_MAX (1024 * 1024)           /* bytes read and dropped after an error answer */
#define ACCEPTS_PER_EVENT 32

typedef struct Connection Connection;
typedef struct Resolution Resolution;
typedef struct ResolverWatch ResolverWatch;

enum {
        UP,   /* client to upstream */
        DOWN, /* upstream to client */
};

typedef enum ConnState {
        CONN_HEAD,       /* reading the request head */
        CONN_RESOLVING,  /* the host name is being looked up */
        CONN_CONNECTING, /* connecting to c->addrs[c->addr] */
        CONN_RELAY,      /* tunnelling */
        CONN_REFUSING,   /* writing an error answer, then reading the client's rest until it closes */
} ConnState;

/* An address to connect to, one that passed the address check. */
typedef struct Address {
        struct sockaddr_storage sa;
        socklen_t len;
} Address;

struct Connection {
        EgressSession *session;
        Connection *prev, *next;
        ConnState state;
        int client_fd, upstream_fd;
        sd_event_source *client_source, *upstream_source, *timer;
        char head[EGRESS_HEAD_MAX];
        size_t head_len;
        EgressRequest req;
        bool decided; /* the decision record is written */
        bool forward; /* a forward's destination (req is its host:port): no address check */
        Resolution *resolution;
        Address addrs[ADDRESSES_MAX];   /* those that passed the address check */
        size_t n_addrs, addr;           /* addrs[addr] is the one being tried */
        char refused[INET6_ADDRSTRLEN]; /* the first address the check refused, "" for none */
        EgressAddressClass refused_class;
        int connect_error;
        size_t drained; /* bytes dropped after an error answer */
        /* The tunnel: fd[0] the client, fd[1] upstream once connected; buffer[0] (UP) holds the bytes
         * after the head, buffer[1] (DOWN) the answer, both allocated when first needed. */
        Relay relay;
};

/* One ares_getaddrinfo() request. c-ares cannot cancel one query alone, so this outlives its
 * connection when that goes first, and is freed when c-ares calls back (at the latest when the
 * channel is destroyed). */
struct Resolution {
        EgressProxy *proxy;
        Resolution *prev, *next;
        Connection *connection; /* NULL once the connection is gone */
};

/* A socket of c-ares, watched on the loop for what c-ares asks (ARES_OPT_SOCK_STATE_CB). */
struct ResolverWatch {
        EgressProxy *proxy;
        ResolverWatch *prev, *next;
        int fd;
        sd_event_source *source;
};

/* A TCP forward: an id the container names, a destination it does not (egress_session_add_forward()). */
typedef struct EgressForward {
        char id[EGRESS_FORWARD_ID_MAX + 1];
        char *host;
        uint16_t port;
} EgressForward;

struct EgressSession {
        EgressProxy *proxy;
        EgressForward forwards[EGRESS_FORWARDS_MAX];
        size_t n_forwards;
        McpRemoteSession *remote; /* its remote MCP servers, or NULL */
        EgressSession *prev, *next;
        char *id, *socket_path;
        char **allowed;
        int listen_fd;
        sd_event_source *listen_source;
        bool bound;
        Connection *connections;
        unsigned n_connections;
        int (*admit)(int fd, void *userdata); /* who may connect (egress_session_set_admit()) */
        void *admit_userdata;
        RateLimit log_limit; /* its decision records (egress_log_below()) */
        uint64_t log_dropped;
};

struct EgressProxy {
        sd_event *event;
        EgressSession *sessions;
        ares_channel resolver;
        bool resolver_initialized; /* ares_library_init() done */
        int resolve_flags;         /* ARES_AI_* of every lookup */
        ResolverWatch *watches;
        sd_event_source *resolve_timer; /* c-ares's next timeout (ares_timeout) */
        Resolution *resolutions;
        unsigned n_resolutions;
        McpRemote *remote; /* made when a session first has remote MCP servers */
};

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
        /* The lookup goes on in c-ares; its callback frees the Resolution when it ends. */
        c->resolution->connection = NULL;
        c->resolution = NULL;
}

static void connection_free(Connection *c);
static int connection_update(Connection *c);
static void connection_connect_next(Connection *c);

/* The decision record; address, when not NULL, is the resolved address the decision was about. */
/* A container decides how often it connects: its session's records are bounded (EGRESS_LOG_BURST per
 * EGRESS_LOG_INTERVAL_SEC), and what was left out is said with the next one, so that a flood of
 * refused CONNECTs cannot push the daemon's warnings and audit records out of journald's limits. */
static bool egress_log_below(Connection *c) {
        EgressSession *s = c->session;

        if (!ratelimit_below(&s->log_limit, event_now_usec(connection_event(c), CLOCK_MONOTONIC))) {
                s->log_dropped++;
                return false;
        }
        if (s->log_dropped > 0) {
                log_struct(
                        LOG_INFO,
                        "MESSAGE=session %s: %" PRIu64 " egress record(s) not written (rate limit)",
                        s->id,
                        s->log_dropped,
                        "CCDOCKER_SESSION=%s",
                        s->id,
                        NULL);
                s->log_dropped = 0;
        }
        return true;
}

static void log_decision(
        Connection *c, int priority, const char *decision, const char *why, const char *address) {
        char target[EGRESS_HOST_MAX + 16];

        c->decided = true;
        if (!egress_log_below(c))
                return;
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
                address ? "CCDOCKER_EGRESS_ADDRESS=%s" : NULL,
                address,
                NULL);
}

/* A name allowed that then failed to resolve or connect in time: the decision was "allowed". */
static void log_allowed_once(Connection *c) {
        if (!c->decided)
                log_decision(c, LOG_INFO, "allowed", NULL, NULL);
}

static void log_bad_request(Connection *c, const char *decision, const char *why) {
        if (!egress_log_below(c))
                return;
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
        c->n_addrs = c->addr = 0;

        if (relay_buffer_alloc(&c->relay.buffer[DOWN]) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        c->relay.buffer[DOWN].start = c->relay.buffer[DOWN].end = 0;
        n = snprintf(
                head,
                sizeof(head),
                "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s"
                "Connection: close\r\n\r\n",
                status,
                strlen(body),
                strempty(extra_headers));
        (void) relay_buffer_put(&c->relay.buffer[DOWN], head, (size_t) n);
        (void) relay_buffer_put(&c->relay.buffer[DOWN], body, strlen(body));
        c->relay.buffer[DOWN].eof = true;
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

        log_allowed_once(c);
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
                client = relay_events(&c->relay, 0);
                upstream = relay_events(&c->relay, 1);
                break;
        case CONN_REFUSING:
                client = c->relay.buffer[DOWN].shut ? EPOLLIN : EPOLLOUT;
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

/* Moves bytes both ways as far as the sockets take them now; while refusing, writes the answer and
 * then drains the client. */
static void connection_pump(Connection *c) {
        int r;

        if (c->state == CONN_REFUSING) {
                RelayBuffer *down = &c->relay.buffer[DOWN];

                for (int i = 0; i < RELAY_STEPS_MAX; i++) {
                        bool progress = false;

                        r = relay_buffer_write(down, c->client_fd, &progress);
                        if (r >= 0 && down->shut)
                                r = connection_drain(c);
                        if (r != 0) {
                                connection_free(c);
                                return;
                        }
                        if (!progress)
                                break;
                }
        } else {
                r = relay_step(&c->relay);
                if (r < 0)
                        log_debug_errno(r, "session %s: egress relay ended: %m", session_id(c));
                if (r != 0) {
                        connection_free(c);
                        return;
                }
        }
        r = connection_update(c);
        if (r < 0)
                connection_free(c);
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static void connection_established(Connection *c) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        int r;

        c->n_addrs = c->addr = 0;
        if (relay_buffer_alloc(&c->relay.buffer[DOWN]) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        (void) relay_buffer_put(&c->relay.buffer[DOWN], ok, sizeof(ok) - 1);
        c->relay.fd[0] = c->client_fd;
        c->relay.fd[1] = c->upstream_fd;
        c->state = CONN_RELAY;
        r = connection_set_timer(c, 0);
        if (r < 0) {
                connection_free(c);
                return;
        }
        connection_pump(c);
}

/* Connects to addrs[addr], or the next one that takes it; every one of them passed the address check. */
static void connection_connect_next(Connection *c) {
        for (; c->addr < c->n_addrs; c->addr++) {
                const Address *a = &c->addrs[c->addr];
                _cleanup_close_ int fd = -EBADF;
                int r;

                fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        c->connect_error = errno;
                        continue;
                }
                if (connect(fd, (const struct sockaddr *) &a->sa, a->len) < 0 && errno != EINPROGRESS) {
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
                c->addr++;
                connection_connect_next(c);
                return 0;
        }
        connection_pump(c);
        return 0;
}

/* ---- resolving ---- */

/* Keeps sa (len bytes) for connecting if it passes the address check and there is room (the first
 * ADDRESSES_MAX that pass), else remembers it as the first one refused, for the answer. */
static void connection_add_address(Connection *c, const struct sockaddr *sa, size_t len) {
        const void *addr;
        int family;

        if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || len > sizeof(c->addrs[0].sa))
                return;
        if (c->forward || egress_address_permitted(c->session->allowed, c->req.host, c->req.port, sa)) {
                if (c->n_addrs < ADDRESSES_MAX) {
                        memcpy(&c->addrs[c->n_addrs].sa, sa, len);
                        c->addrs[c->n_addrs].len = (socklen_t) len;
                        c->n_addrs++;
                }
                return;
        }
        if (!isempty(c->refused))
                return;
        family = sa->sa_family;
        addr = family == AF_INET ? (const void *) &((const struct sockaddr_in *) sa)->sin_addr
                                 : (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
        c->refused_class = egress_address_classify(family, addr);
        if (!inet_ntop(family, addr, c->refused, sizeof(c->refused)))
                (void) snprintf(c->refused, sizeof(c->refused), "?");
}

/* Every address is in: connects to the first kept, or, when none passed the check, denies the request
 * saying which address was refused and why. */
static void connection_addresses_done(Connection *c) {
        char why[256], after[320];

        c->addr = 0;
        if (c->n_addrs == 0 && !isempty(c->refused)) {
                const char *class = egress_address_class_to_string(c->refused_class);

                (void) snprintf(
                        why,
                        sizeof(why),
                        "it resolves to %s %s address %s; allowed_hosts must name it explicitly",
                        strchr("aeiou", class[0]) ? "an" : "a",
                        class,
                        c->refused);
                log_decision(c, LOG_WARNING, "denied", why, c->refused);
                (void) snprintf(after, sizeof(after), " is not allowed for this session: %s", why);
                connection_refuse_target(c, "403 Forbidden", "egress to", after);
                return;
        }
        if (c->n_addrs == 0) {
                connection_refuse_failed(c, "could not resolve the host of", "no address");
                return;
        }
        log_allowed_once(c);
        connection_connect_next(c);
}

static void on_resolved(void *arg, int status, int timeouts, struct ares_addrinfo *result) {
        Resolution *r = arg;
        EgressProxy *p = r->proxy;
        Connection *c = r->connection;

        LIST_REMOVE(p->resolutions, r);
        p->n_resolutions--;
        free(r);
        if (!c) {
                ares_freeaddrinfo(result);
                return;
        }
        c->resolution = NULL;
        if (status != ARES_SUCCESS) {
                ares_freeaddrinfo(result);
                connection_refuse_failed(c, "could not resolve the host of", ares_strerror(status));
                return;
        }
        for (struct ares_addrinfo_node *i = result ? result->nodes : NULL; i; i = i->ai_next)
                if (i->ai_addr && i->ai_addrlen > 0)
                        connection_add_address(c, i->ai_addr, (size_t) i->ai_addrlen);
        ares_freeaddrinfo(result);
        connection_addresses_done(c);
}

/* A literal address in host: the one address, with port. */
static bool parse_literal(const char *host, uint16_t port, Address *ret) {
        struct sockaddr_in *v4 = (struct sockaddr_in *) &ret->sa;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &ret->sa;

        *ret = (Address){};
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                v4->sin_port = htons(port);
                ret->len = sizeof(*v4);
                return true;
        }
        if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                v6->sin6_port = htons(port);
                ret->len = sizeof(*v6);
                return true;
        }
        return false;
}

static void proxy_update_resolve_timer(EgressProxy *p);

static void connection_resolve(Connection *c) {
        EgressProxy *p = c->session->proxy;
        struct ares_addrinfo_hints hints = {
                .ai_flags = ARES_AI_NUMERICSERV | p->resolve_flags,
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
        };
        char service[8];
        Address literal;
        Resolution *r;

        c->state = CONN_RESOLVING;

        /* A literal address needs no lookup and none is started. */
        if (parse_literal(c->req.host, c->req.port, &literal)) {
                connection_add_address(c, (const struct sockaddr *) &literal.sa, literal.len);
                connection_addresses_done(c);
                return;
        }

        if (p->n_resolutions >= RESOLUTIONS_MAX) {
                log_allowed_once(c);
                log_warning(
                        "session %s: %u host lookups are running: refusing another for now",
                        session_id(c),
                        p->n_resolutions);
                connection_refuse_target(
                        c, "503 Service Unavailable", "too many host lookups are running to look up", NULL);
                return;
        }
        r = calloc(1, sizeof(*r));
        if (!r) {
                log_oom();
                connection_free(c);
                return;
        }
        *r = (Resolution){ .proxy = p, .connection = c };
        c->resolution = r;
        LIST_PREPEND(p->resolutions, r);
        p->n_resolutions++;

        /* c-ares may call back before it returns (a name in /etc/hosts), and the callback may free c. */
        (void) snprintf(service, sizeof(service), "%u", (unsigned) c->req.port);
        ares_getaddrinfo(p->resolver, c->req.host, service, &hints, on_resolved, r);
        proxy_update_resolve_timer(p);
}

/* ---- the head and the decision ---- */

/* "CONNECT ID.forward.invalid:PORT": 1 when it names one of the session's forwards (c->req is then the
 * forward's destination), 0 when the target is no forward name, -ENOENT when it names none of its. */
static int connection_forward(Connection *c) {
        EgressSession *s = c->session;
        char id[EGRESS_FORWARD_ID_MAX + 1];

        if (!egress_forward_id_of(c->req.host, id))
                return endswith(c->req.host, EGRESS_FORWARD_SUFFIX) ? -ENOENT : 0;
        for (size_t i = 0; i < s->n_forwards; i++)
                if (streq(s->forwards[i].id, id) && s->forwards[i].port == c->req.port) {
                        (void) snprintf(c->req.host, sizeof(c->req.host), "%s", s->forwards[i].host);
                        c->forward = true;
                        return 1;
                }
        return -ENOENT;
}

static void connection_decide(Connection *c, size_t head_len) {
        EgressSession *s = c->session;
        size_t rest = c->head_len - head_len;
        int r;

        r = connection_forward(c);
        if (r < 0) {
                log_decision(c, LOG_WARNING, "denied", "not one of the session's forwards", NULL);
                connection_refuse_target(
                        c, "403 Forbidden", "egress to", " is not a forward of this session");
                return;
        }
        if (r == 0 && !egress_host_allowed(s->allowed, c->req.host, c->req.port)) {
                log_decision(c, LOG_WARNING, "denied", "not in the session's allowlist", NULL);
                connection_refuse_target(
                        c, "403 Forbidden", "egress to", " is not allowed for this session");
                return;
        }
        /* The name is allowed; the record is written once its addresses are checked. */
        /* Bytes the client sent after the head (a TLS hello that did not wait) go through the tunnel. */
        if (relay_buffer_alloc(&c->relay.buffer[UP]) < 0) {
                log_oom();
                connection_free(c);
                return;
        }
        (void) relay_buffer_put(&c->relay.buffer[UP], c->head + head_len, rest);
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
                log_allowed_once(c);
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
        relay_done(&c->relay);
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
        *c = (Connection){
                .session = s,
                .state = CONN_HEAD,
                .client_fd = fd,
                .upstream_fd = -EBADF,
                .relay = { .fd = { -EBADF, -EBADF } },
        };
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
                if (s->admit && s->admit(cfd, s->admit_userdata) <= 0) {
                        safe_close(cfd);
                        continue;
                }
                r = connection_new(s, cfd);
                if (r < 0)
                        log_error_errno(r, "session %s: could not set up an egress connection: %m", s->id);
        }
        return 0;
}

/* ---- sessions and the proxy ---- */

void egress_session_set_admit(EgressSession *s, int (*admit)(int fd, void *userdata), void *userdata) {
        s->admit = admit;
        s->admit_userdata = userdata;
        if (s->remote)
                mcp_remote_session_set_admit(s->remote, admit, userdata);
}

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
        *s = (EgressSession){
                .proxy = p,
                .listen_fd = -EBADF,
                .log_limit = { .interval_usec = EGRESS_LOG_INTERVAL_SEC * USEC_PER_SEC,
                               .burst = EGRESS_LOG_BURST },
        };
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
        s->remote = mcp_remote_session_free(s->remote);
        strv_free(s->allowed);
        for (size_t i = 0; i < s->n_forwards; i++)
                free(s->forwards[i].host);
        free(s->id);
        free(s->socket_path);
        free(s);
        return NULL;
}

int egress_session_add_forward(EgressSession *s, const char *id, const char *host, uint16_t port) {
        char parsed[EGRESS_HOST_MAX + 16];
        EgressForward *f;

        if (!s || !egress_forward_id_valid(id) || isempty(host) || port == 0)
                return -EINVAL;
        /* A host the CONNECT parser would take: a name, an IPv4 literal or an IPv6 one. */
        (void) snprintf(parsed, sizeof(parsed), strchr(host, ':') ? "[%s]:1" : "%s:1", host);
        if (!egress_allow_entry_valid(parsed) || strchr(host, '*'))
                return -EINVAL;
        for (size_t i = 0; i < s->n_forwards; i++)
                if (streq(s->forwards[i].id, id))
                        return -EEXIST;
        if (s->n_forwards >= EGRESS_FORWARDS_MAX)
                return -E2BIG;
        f = &s->forwards[s->n_forwards];
        f->host = strdup(host);
        if (!f->host)
                return -ENOMEM;
        (void) snprintf(f->id, sizeof(f->id), "%s", id);
        f->port = port;
        s->n_forwards++;
        log_debug("session %s: egress forward %s to %s port %u", s->id, id, host, (unsigned) port);
        return 0;
}

int egress_session_add_mcp_remote(
        EgressSession *s,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        const McpRemoteServer *servers,
        size_t n) {
        int r;

        if (!s)
                return -EINVAL;
        if (s->remote)
                return -EEXIST;
        if (!s->proxy->remote) {
                r = mcp_remote_new(s->proxy->event, &s->proxy->remote);
                if (r < 0)
                        return r;
        }
        r = mcp_remote_listen(s->proxy->remote, s->id, socket_path, uid, gid, servers, n, &s->remote);
        if (r < 0)
                return r;
        mcp_remote_session_set_admit(s->remote, s->admit, s->admit_userdata);
        return 0;
}

unsigned egress_session_connections(const EgressSession *s) {
        return s ? s->n_connections : 0;
}

/* ---- the resolver on the loop ---- */

static void proxy_update_resolve_timer(EgressProxy *p) {
        struct timeval tv, *t;
        int r;

        if (!p->resolver || !p->resolve_timer)
                return;
        t = ares_timeout(p->resolver, NULL, &tv);
        if (!t) {
                (void) sd_event_source_set_enabled(p->resolve_timer, SD_EVENT_OFF);
                return;
        }
        r = sd_event_source_set_time_relative(
                p->resolve_timer, (uint64_t) t->tv_sec * USEC_PER_SEC + (uint64_t) t->tv_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->resolve_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "could not set the host lookups' timer: %m");
}

static int on_resolve_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        EgressProxy *p = userdata;

        ares_process_fd(p->resolver, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        proxy_update_resolve_timer(p);
        return 0;
}

static int on_resolver_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ResolverWatch *w = userdata;
        EgressProxy *p = w->proxy; /* w may be gone once c-ares has processed */

        ares_process_fd(
                p->resolver,
                revents & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD,
                revents & EPOLLOUT ? fd : ARES_SOCKET_BAD);
        proxy_update_resolve_timer(p);
        return 0;
}

static void resolver_watch_free(ResolverWatch *w) {
        LIST_REMOVE(w->proxy->watches, w);
        sd_event_source_disable_unref(w->source);
        free(w);
}

/* c-ares opened, changed or closed one of its sockets: watch it for what it wants. */
static void on_resolver_socket(void *data, ares_socket_t fd, int readable, int writable) {
        EgressProxy *p = data;
        uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
        ResolverWatch *w;
        int r;

        for (w = p->watches; w && w->fd != fd; w = w->next)
                ;
        if (events == 0) {
                if (w)
                        resolver_watch_free(w);
                return;
        }
        if (w) {
                r = sd_event_source_set_io_events(w->source, events);
                if (r < 0)
                        log_warning_errno(r, "could not watch a host lookup's socket: %m");
                return;
        }
        w = calloc(1, sizeof(*w));
        if (!w) {
                log_oom(); /* the lookup then ends at its timeout */
                return;
        }
        *w = (ResolverWatch){ .proxy = p, .fd = fd };
        r = sd_event_add_io(p->event, &w->source, fd, events, on_resolver_io, w);
        if (r < 0) {
                log_warning_errno(r, "could not watch a host lookup's socket: %m");
                free(w);
                return;
        }
        (void) sd_event_source_set_description(w->source, "egress-resolver");
        LIST_PREPEND(p->watches, w);
}

static int proxy_init_resolver(EgressProxy *p) {
        struct ares_options options = {
                .sock_state_cb = on_resolver_socket,
                .sock_state_cb_data = p,
                .lookups = (char *) "fb", /* /etc/hosts, then DNS, as libc's "files dns" */
        };
        const char *hosts;
        int r;

        r = ares_library_init(ARES_LIB_INIT_ALL);
        if (r != ARES_SUCCESS)
                return log_error_errno(ENOMEM, "could not initialise c-ares: %s", ares_strerror(r));
        p->resolver_initialized = true;
        r = ares_init_options(&p->resolver, &options, ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS);
        if (r != ARES_SUCCESS) {
                p->resolver = NULL;
                return log_error_errno(
                        r == ARES_ENOMEM ? ENOMEM : EIO,
                        "could not set up the resolver: %s",
                        ares_strerror(r));
        }
        /* c-ares's own CARES_HOSTS names another hosts file, for the tests (docs/egress-proxy.md). Only when
         * it is set: some c-ares releases fail every lookup with ARES_AI_ENVHOSTS and no CARES_HOSTS. */
        hosts = getenv("CARES_HOSTS");
        if (!isempty(hosts))
                p->resolve_flags |= ARES_AI_ENVHOSTS;

        r = sd_event_add_time_relative(
                p->event, &p->resolve_timer, CLOCK_MONOTONIC, 0, 0, on_resolve_timer, p);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(p->resolve_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(p->resolve_timer, "egress-resolve");
        return 0;
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
        r = proxy_init_resolver(p);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

EgressProxy *egress_proxy_free(EgressProxy *p) {
        if (!p)
                return NULL;
        while (p->sessions)
                egress_session_free(p->sessions);
        p->remote = mcp_remote_free(p->remote);

        /* Every lookup still running ends now: c-ares calls each back (ARES_EDESTRUCTION), which frees
         * its Resolution, and closes its sockets. */
        if (p->resolver)
                ares_destroy(p->resolver);
        p->resolver = NULL;
        while (p->watches)
                resolver_watch_free(p->watches);
        if (p->resolver_initialized)
                ares_library_cleanup();
        p->resolve_timer = sd_event_source_disable_unref(p->resolve_timer);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}

/* ccdocker-httpd's internal interfaces: the server (server.c: libmicrohttpd on sd-event, requests and
 * their replies), the REST routes (routes.c), request bodies (body.c), token scope (scope.c), the
 * WebSocket and SSE streams (stream.c) and the metrics (metrics.c). */
#pragma once

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "hashmap.h"
#include "mhd-event.h"
#include "tokens.h"

#define BUS_NAME "org.ccdocker1"
#define MANAGER_PATH "/org/ccdocker1"
#define MANAGER_INTERFACE "org.ccdocker1.Manager"
#define SESSION_INTERFACE "org.ccdocker1.Session"
#define SESSION_PATH_PREFIX "/org/ccdocker1/session"

/* Request bodies larger than this are refused with 413. */
#define BODY_MAX (1024U * 1024U)

/* What a client may hold of the server (docs/ccdocker-httpd.md, "Limits"); the flags of ccdocker-httpd. */
typedef struct ServerLimits {
        unsigned max_connections;            /* --max-connections */
        unsigned max_connections_per_client; /* --max-connections-per-client: per IP address */
        uint64_t max_body_memory;            /* --max-body-memory: bytes of bodies across connections */
        uint64_t body_timeout_usec;          /* --body-timeout: from the headers to the body's last byte */
        unsigned max_sessions_per_token;     /* --max-sessions-per-token: live sessions a token created */
        uint64_t stream_queue;               /* --stream-queue: bytes waiting for one stream client */
        uint64_t ticket_ttl_usec;            /* --ticket-ttl: how long a stream ticket is good for */
} ServerLimits;

#define SERVER_LIMITS_DEFAULT                                          \
        ((ServerLimits){ .max_connections = 8192U,                     \
                         .max_connections_per_client = 256U,           \
                         .max_body_memory = 64ULL * 1024ULL * 1024ULL, \
                         .body_timeout_usec = 30ULL * 1000000ULL,      \
                         .max_sessions_per_token = 16U,                \
                         .stream_queue = 8ULL * 1024ULL * 1024ULL,     \
                         .ticket_ttl_usec = 30ULL * 1000000ULL })

/* Stream tickets waiting to be used, at most, in all and per token. */
#define TICKETS_MAX 4096U
#define TICKETS_MAX_PER_TOKEN 64U
/* The WebSocket subprotocol a browser offers beside bearer.TOKEN, and the one echoed. */
#define WS_PROTOCOL "ccdocker.v1"

/* Calls that wait on systemd or podman (CreateSession, SpawnChild, Stop). */
#define SLOW_CALL_USEC (120ULL * 1000000ULL)

typedef struct Server Server;
typedef struct Request Request;
typedef struct Metrics Metrics;
typedef struct ParentCache ParentCache;
typedef struct SessionCache SessionCache;
typedef struct Tickets Tickets;
typedef struct Feed Feed;
typedef struct Events Events;

typedef void (*request_handler_t)(Request *req);

/* Routes, in the order of the table in routes.c; also the metrics' route labels. */
typedef struct Route {
        const char *method;
        const char *pattern; /* "{id}" matches one path segment */
        request_handler_t handler;
        bool open;               /* no token needed (/health) */
        bool body;               /* takes a JSON body */
        const char *const *args; /* the query arguments it knows, NULL-terminated; NULL: none */
} Route;

extern const Route routes[];
extern const size_t n_routes;

struct Server {
        sd_event *event;
        sd_bus *bus;
        struct MHD_Daemon *mhd;
        MhdEvent mhd_event;
        TokenStore *tokens;
        ParentCache *parents;
        SessionCache *sessions; /* GET's answers (cache.c) */
        Hashmap *feeds;         /* Feed by session id: one Attach per watched session (fanout.c) */
        Tickets *tickets;       /* stream tickets (tickets.c) */
        Metrics *metrics;
        struct Stream *streams; /* live WebSocket and SSE streams, to close at exit */
        Events *events;         /* GET /api/v1/events (events.c), made on first use */
        Request *waiting;       /* suspended requests, waiting for the daemon */
        bool exiting;
        ServerLimits limits;
        uint64_t body_memory; /* bytes reserved for request bodies, at most limits.max_body_memory */
};

struct Request {
        Server *server;
        Request *waiting_prev, *waiting_next; /* in Server.waiting while suspended */
        struct MHD_Connection *connection;
        char *method;
        char *path;
        int route; /* index into routes[], -1 for none */
        char *id;  /* the {id} of the path */
        char *body;
        size_t body_len;
        size_t body_reserved;           /* of Server.body_memory: the Content-Length, or what came */
        sd_event_source *body_deadline; /* closes the connection if the body is not complete by then */
        uint64_t start_usec;
        bool started, suspended;

        /* The reply, once known: queued at the next call of the access handler. */
        struct MHD_Response *response;
        unsigned status;

        int64_t token_id;
        sd_bus_slot *slot; /* the pending D-Bus call, cancelled if the request goes away */
        json_t *json;      /* the parsed body */
        request_handler_t next;
        unsigned tries;
        sd_event_source *timer; /* DELETE: until the session's State is final */

        /* GET .../stream */
        struct Stream *stream; /* until the WebSocket upgrade happens */
        int attach_fd;
        uint64_t since;
        bool websocket, streaming;
        const char *ws_protocol; /* the subprotocol to echo (static text), or NULL */
        Feed *feed;              /* the feed it waits for while that attaches */
        Request *feed_next;      /* in Feed.waiting */
};

/* server.c */
/* limits NULL: SERVER_LIMITS_DEFAULT. */
int server_new(
        sd_event *event, sd_bus *bus, TokenStore *tokens, int fd, const ServerLimits *l, Server **ret);
Server *server_free(Server *s);
void server_kick(Server *s);
void server_stop_streams(Server *s);

/* The reply of a request: sets it and resumes the connection if it waits. json is taken. */
void request_reply_json(Request *req, unsigned status, json_t *json);
void request_reply_text(Request *req, unsigned status, const char *content_type, const char *text);
void request_reply_error(Request *req, unsigned status, const char *code, const char *format, ...)
        __attribute__((format(printf, 4, 5)));
/* A D-Bus error as an HTTP error: the status and code that fit its name, its message. */
void request_reply_bus_error(Request *req, const sd_bus_error *error, int r);
void request_reply_response(Request *req, unsigned status, struct MHD_Response *response);
const char *request_header(Request *req, const char *name);
const char *request_arg(Request *req, const char *name);

/* routes-questions.c: GET .../questions, GET /api/v1/questions, POST .../questions/{qid}/answer. */
void route_questions(Request *req);
void route_all_questions(Request *req);
void route_answer(Request *req);

/* scope.c: which sessions a token may see. */
int parent_cache_new(ParentCache **ret);
ParentCache *parent_cache_free(ParentCache *c);
int parent_cache_put(ParentCache *c, const char *id, const char *parent_id);
/* Checks that req->id is in the scope of req->token_id and calls next, or replies 404. May ask the
 * daemon (ListSessions) for parents it does not know yet. */
void request_check_scope(Request *req, request_handler_t next);
/* 1 if id is in scope, 0 if not, -EAGAIN if a parent in its chain is not known. */
int scope_check(Server *s, int64_t token_id, const char *id);
/* Reads ListSessions' reply into the cache (the message is rewound first). */
int parent_cache_fill(ParentCache *c, sd_bus_message *reply);

/* body.c: JSON request bodies. */
/* Appends CreateSession's (and SpawnChild's) a{sv} for a body of POST /sessions to m. On a refused body
 * returns -EINVAL with *ret_field naming the field (static text) and ret_message the reason. */
int body_to_session_config(json_t *body, sd_bus_message *m, char *ret_message, size_t size);
/* The same for POST .../spawn and SpawnChild's a{sv}: prompt, task_type, timeout_seconds, stream_output,
 * context (the options of the spawn_child tool, docs/channel.md). */
int body_to_spawn_options(json_t *body, sd_bus_message *m, char *ret_message, size_t size);
/* The body of POST .../prompts: its prompt, or -EINVAL with the reason. */
int body_prompt(json_t *body, const char **ret_prompt, char *ret_message, size_t size);

/* stream.c */
/* The token of a bearer.TOKEN entry in a Sec-WebSocket-Protocol list, copied to ret; NULL if none. */
const char *websocket_protocol_bearer(const char *value, char *ret, size_t size);
/* GET .../stream once the session is known to be in scope: WebSocket or SSE. */
void stream_start(Request *req);
void stream_free(struct Stream *st);
unsigned stream_count(Server *s, bool websocket);

/* routes.c: sets the keys of o for the properties in the a{sv} at m. */
int session_json_update(sd_bus_message *m, json_t *o);

/* cache.c: the sessions' properties, kept by the daemon's signals. */
/* The session id of an object path under SESSION_PATH_PREFIX (a signal's sender), or NULL. */
char *session_path_to_id(const char *path);
int session_cache_new(sd_bus *bus, SessionCache **ret);
SessionCache *session_cache_free(SessionCache *c);
/* The cached object (borrowed), or NULL. */
json_t *session_cache_get(SessionCache *c, const char *id);
/* Puts (replaces) the object of a GetAll reply; takes a reference of its own. */
int session_cache_put(SessionCache *c, const char *id, json_t *session);
void session_cache_stats(SessionCache *c, uint64_t *ret_hits, uint64_t *ret_misses, size_t *ret_size);

/* fanout.c: one Attach per watched session, its lines handed to every stream of the session. */
/* A stream request (scope checked, handshake valid): joins the session's feed, attaching it first if
 * there is none; calls stream_attached() or replies with the error. */
void feed_request(Request *req);
/* The request went away while it waited for its feed. */
void feed_forget_request(Request *req);
/* Subscribes st (its own last seq in stream_last_seq()); st catches up by itself when the feed is ahead. */
int feed_add(Feed *f, struct Stream *st);
void feed_remove(Feed *f, struct Stream *st);
uint64_t feed_last_seq(Feed *f);
bool feed_ended(Feed *f);
unsigned feed_count(Server *s);
void feeds_free(Server *s);

/* stream.c, for fanout.c */
/* The feed has the fd: build the stream for req and answer it (101 or the SSE response). */
void stream_attached(Request *req, Feed *f);
/* One Attach line (NUL-terminated at len) for st; < 0 if st was freed. *frame (NULL at first) is the
 * line's WebSocket frame, built by the first stream that needs it and shared by the others; the caller
 * drops it with ws_frame_unref() once the line is handed out. */
typedef struct WsFrame WsFrame;
int stream_line(struct Stream *st, uint64_t seq, const char *line, size_t len, WsFrame **frame);
void ws_frame_unref(WsFrame *fr);
/* After a batch of lines: send what is queued; < 0 if st was freed. */
int stream_flush(struct Stream *st);
/* The session ended (or the feed failed): st ends once it has everything. May free st. */
void stream_feed_ended(struct Stream *st, const char *reason);

/* tickets.c: single-use stream tickets (POST /api/v1/stream-tickets). */
int tickets_new(Tickets **ret);
Tickets *tickets_free(Tickets *t);
/* The token id of a ticket, which is used up: -ENOENT for an unknown, used or expired one. */
int tickets_take(Server *s, const char *ticket, int64_t *ret_token_id);
void route_stream_ticket(Request *req);

/* metrics.c */
int metrics_new(Metrics **ret);
Metrics *metrics_free(Metrics *m);
void metrics_request(Metrics *m, int route, unsigned status, uint64_t usec);
void metrics_event_sent(Metrics *m, bool websocket);
void metrics_spawn(Metrics *m);
void metrics_refusal(Metrics *m, const char *reason);
/* The Prometheus text; sessions is ListSessions' reply (or NULL). */
char *metrics_render(Server *s, sd_bus_message *sessions);

/* events.c: GET /api/v1/events, the changes to every session in scope (the dashboard's tree). */
void route_events(Request *req);
/* Ends every client of /api/v1/events (before libmicrohttpd stops). */
void events_stop(Server *s);
Events *events_free(Events *e);
unsigned events_count(Server *s);

/* usage.c: the Usage property (the variant at m) as o's "usage". */
int session_json_numbers(sd_bus_message *m, json_t *o, const char *key_name);

/* routes-remove.c: POST /api/v1/sessions/{id}/remove. */
void route_remove(Request *req);

/* dashboard.c: the web dashboard's static files (docs/dashboard.md). */
void route_dashboard_index(Request *req);
void route_dashboard_file(Request *req);

/* The HTTP server: libmicrohttpd in its external-epoll mode on our sd-event loop (its epoll fd is an
 * sd-event io source, MHD_get_timeout() a timer), and the life of a request. The access handler routes
 * and checks the bearer token on the headers alone, before a byte of the body is read (a request without
 * a valid token never makes us hold its body); then it collects the body (at most BODY_MAX, within a
 * budget shared by every connection, by a deadline that each byte does not push back), and hands the
 * request to its route; a route that asks the daemon something suspends the connection and replies from
 * the D-Bus reply handler, which resumes it, so the loop never waits. Errors are JSON
 * {"error":{"code","message"}}. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "mhd-event.h"
#include "time-util.h"
#include "util.h"

/* Idle keep-alive connections are closed after this long (libmicrohttpd: since the last byte). */
#define CONNECTION_TIMEOUT_SEC 60U

static void request_free(Request *req) {
        if (!req)
                return;
        req->server->body_memory -= req->body_reserved;
        sd_bus_slot_unref(req->slot);
        feed_forget_request(req);
        sd_event_source_disable_unref(req->timer);
        sd_event_source_disable_unref(req->body_deadline);
        stream_free(req->stream);
        if (req->response)
                MHD_destroy_response(req->response);
        json_decref(req->json);
        safe_close(req->attach_fd);
        free(req->method);
        free(req->path);
        free(req->id);
        free(req->body);
        free(req);
}

const char *request_header(Request *req, const char *name) {
        return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *request_arg(Request *req, const char *name) {
        return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

static void add_common_headers(struct MHD_Response *response) {
        (void) MHD_add_response_header(response, "Cache-Control", "no-store");
        (void) MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
}

void request_reply_response(Request *req, unsigned status, struct MHD_Response *response) {
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = response;
        req->status = status;
        if (req->suspended) {
                Server *s = req->server;

                if (req->waiting_prev)
                        req->waiting_prev->waiting_next = req->waiting_next;
                else
                        s->waiting = req->waiting_next;
                if (req->waiting_next)
                        req->waiting_next->waiting_prev = req->waiting_prev;
                req->waiting_prev = req->waiting_next = NULL;
                req->suspended = false;
                MHD_resume_connection(req->connection);
                server_kick(req->server);
        }
}

static struct MHD_Response *response_from_text(const char *content_type, const char *text, size_t len) {
        struct MHD_Response *response;

        response = MHD_create_response_from_buffer(len, (void *) text, MHD_RESPMEM_MUST_COPY);
        if (!response)
                return NULL;
        (void) MHD_add_response_header(response, "Content-Type", content_type);
        add_common_headers(response);
        return response;
}

void request_reply_text(Request *req, unsigned status, const char *content_type, const char *text) {
        struct MHD_Response *response = response_from_text(content_type, text, strlen(text));

        if (!response) {
                log_oom();
                return;
        }
        request_reply_response(req, status, response);
}

void request_reply_json(Request *req, unsigned status, json_t *json) {
        _cleanup_free_ char *text = NULL;

        /* jansson's default of 17 significant digits: every number reads back as it was stored
         * (fewer digits changed some of Claude Code's costs, so /output and /stream disagreed). */
        if (json)
                text = json_dumps(json, JSON_COMPACT);
        json_decref(json);
        if (!text) {
                static const char oom[] =
                        "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";

                request_reply_text(req, 500, "application/json", oom);
                return;
        }
        request_reply_text(req, status, "application/json", text);
}

void request_reply_error(Request *req, unsigned status, const char *code, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int n;

        va_start(ap, format);
        n = vasprintf(&message, format, ap);
        va_end(ap);
        if (n < 0)
                message = NULL;

        request_reply_json(
                req, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message ?: code));
        if (status == 401 && req->response)
                (void) MHD_add_response_header(
                        req->response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"ccdocker\"");
}

static const struct {
        const char *name;
        unsigned status;
        const char *code;
} bus_errors[] = {
        { "org.ccdocker1.Error.InvalidConfig", 400, "invalid_config" },
        { "org.ccdocker1.Error.InvalidPrompt", 400, "invalid_prompt" },
        { "org.ccdocker1.Error.NoSuchImage", 400, "no_such_image" },
        { "org.ccdocker1.Error.LimitExceeded", 400, "limit_exceeded" },
        { "org.ccdocker1.Error.NoSuchSession", 404, "not_found" },
        { "org.ccdocker1.Error.AccessDenied", 403, "access_denied" },
        { "org.ccdocker1.Error.BadState", 409, "bad_state" },
        { SD_BUS_ERROR_UNKNOWN_OBJECT, 404, "not_found" },
        { SD_BUS_ERROR_INVALID_ARGS, 400, "invalid_argument" },
        { SD_BUS_ERROR_UNKNOWN_METHOD, 501, "not_implemented" },
        { SD_BUS_ERROR_SERVICE_UNKNOWN, 503, "unavailable" },
        { SD_BUS_ERROR_NAME_HAS_NO_OWNER, 503, "unavailable" },
        { SD_BUS_ERROR_NO_REPLY, 504, "timeout" },
        { SD_BUS_ERROR_TIMEOUT, 504, "timeout" },
        { SD_BUS_ERROR_DISCONNECTED, 503, "unavailable" },
        { SD_BUS_ERROR_ACCESS_DENIED, 403, "access_denied" },
};

void request_reply_bus_error(Request *req, const sd_bus_error *error, int r) {
        unsigned status = 502;
        const char *code = "daemon_error";

        if (!sd_bus_error_is_set(error)) {
                if (r == -ETIMEDOUT)
                        request_reply_error(req, 504, "timeout", "ccdockerd did not answer in time");
                else
                        request_reply_error(
                                req, 503, "unavailable", "ccdockerd cannot be reached: %s", strerror(-r));
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(bus_errors); i++)
                if (sd_bus_error_has_name(error, bus_errors[i].name)) {
                        status = bus_errors[i].status;
                        code = bus_errors[i].code;
                        break;
                }
        /* LimitExceeded is both "over a ceiling" (the request is wrong) and "too many live sessions" (try
         * again later); only the daemon's message tells them apart. */
        if (streq(code, "limit_exceeded") && error->message && strstr(error->message, "MaxSessions"))
                status = 429;
        if (status == 404)
                /* The same answer as for a session outside the token's scope. */
                request_reply_error(req, 404, "not_found", "no such session");
        else if (status >= 503)
                request_reply_error(req, status, code, "ccdockerd: %s", strempty(error->message));
        else
                request_reply_error(req, status, code, "%s", strempty(error->message) ?: error->name);
        if (status == 400 || status == 429 || status == 403)
                metrics_refusal(req->server->metrics, code);
}

/* ---- routing ---- */

/* Matches path against pattern; the {id} segment, if any, is returned in *ret_id (allocated). */
static bool route_match(const char *pattern, const char *path, char **ret_id) {
        const char *p = pattern, *s = path;
        const char *id = NULL;
        size_t id_len = 0;

        while (*p && *s) {
                if (startswith(p, "{id}")) {
                        const char *end = strchr(s, '/') ?: s + strlen(s);

                        if (end == s)
                                return false;
                        id = s;
                        id_len = (size_t) (end - s);
                        s = end;
                        p += 4;
                        continue;
                }
                if (*p != *s)
                        return false;
                p++;
                s++;
        }
        if (*p || *s)
                return false;
        if (ret_id) {
                *ret_id = id ? strndup(id, id_len) : NULL;
                if (id && !*ret_id)
                        return false;
        }
        return true;
}

static int find_route(const char *method, const char *path, char **ret_id, bool *ret_other_method) {
        *ret_other_method = false;
        for (size_t i = 0; i < n_routes; i++) {
                if (!route_match(routes[i].pattern, path, NULL))
                        continue;
                if (!streq(routes[i].method, method)) {
                        *ret_other_method = true;
                        continue;
                }
                if (!route_match(routes[i].pattern, path, ret_id))
                        return -ENOMEM;
                return (int) i;
        }
        return -ENOENT;
}

typedef struct ArgCheck {
        const char *const *known;
        const char *unknown;
} ArgCheck;

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        ArgCheck *c = cls;

        for (const char *const *k = c->known; k && *k; k++)
                if (streq(*k, key))
                        return MHD_YES;
        c->unknown = key;
        return MHD_NO;
}

static bool route_is_stream(int route) {
        return route >= 0 && endswith(routes[route].pattern, "/stream");
}

/* Authorization: Bearer TOKEN; on the stream route also a browser's ways (docs/api.md, "Streams from a
 * browser"): Sec-WebSocket-Protocol: bearer.TOKEN, or ?ticket= from POST /api/v1/stream-tickets, used up
 * here. -ENOENT if absent or unknown. */
static int request_authenticate(Request *req) {
        const char *h = request_header(req, MHD_HTTP_HEADER_AUTHORIZATION), *token;
        char buf[128];

        if (!h && route_is_stream(req->route)) {
                const char *protocols = request_header(req, "Sec-WebSocket-Protocol"), *ticket;

                if (protocols && websocket_protocol_bearer(protocols, buf, sizeof buf))
                        return token_store_lookup(req->server->tokens, buf, &req->token_id);
                ticket = request_arg(req, "ticket");
                if (ticket)
                        return tickets_take(req->server, ticket, &req->token_id);
        }
        if (!h)
                return -ENOENT;
        token = startswith(h, "Bearer ");
        if (!token)
                return -ENOENT;
        token += strspn(token, " ");
        return token_store_lookup(req->server->tokens, token, &req->token_id);
}

typedef struct QueryToken {
        const char *name;
} QueryToken;

static enum MHD_Result find_query_token(
        void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        static const char *const names[] = { "token", "access_token", "bearer", "authorization", NULL };
        QueryToken *q = cls;

        for (const char *const *n = names; *n; n++)
                if (strcasecmp(key, *n) == 0) {
                        q->name = key;
                        return MHD_NO;
                }
        if ((value && startswith(value, TOKEN_PREFIX)) || startswith(key, TOKEN_PREFIX)) {
                q->name = key;
                return MHD_NO;
        }
        return MHD_YES;
}

/* On the headers alone: the route, the token, the query arguments. Sets the reply if the request is
 * refused. */
static void request_admit(Request *req) {
        const Route *route;
        bool other_method;
        QueryToken query = {};
        int r;

        /* URLs are logged (here, by proxies, in browser histories): a token in one is refused outright. */
        (void) MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, find_query_token, &query);
        if (query.name) {
                metrics_refusal(req->server->metrics, "token_in_query");
                request_reply_error(
                        req,
                        400,
                        "token_in_query",
                        "a token in the URL (query argument '%.32s') is refused: URLs are logged. Send it as "
                        "Authorization: Bearer, as the WebSocket subprotocol bearer.TOKEN beside " WS_PROTOCOL
                        ", or get a stream ticket from POST /api/v1/stream-tickets; consider the token exposed",
                        query.name);
                return;
        }

        r = find_route(req->method, req->path, &req->id, &other_method);
        if (r == -ENOMEM) {
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        if (r < 0) {
                /* Unauthenticated clients learn nothing about which paths exist. */
                if (request_authenticate(req) < 0 && !streq(req->path, "/health")) {
                        request_reply_error(req, 401, "unauthorized", "a valid bearer token is needed");
                        return;
                }
                if (other_method)
                        request_reply_error(
                                req,
                                405,
                                "method_not_allowed",
                                "%s is not allowed on %s",
                                req->method,
                                req->path);
                else
                        request_reply_error(req, 404, "not_found", "no route %s", req->path);
                return;
        }
        req->route = r;
        route = &routes[r];

        if (!route->open) {
                r = request_authenticate(req);
                if (r < 0) {
                        if (r != -ENOENT)
                                request_reply_error(
                                        req, 503, "unavailable", "the token store cannot be read");
                        else
                                request_reply_error(
                                        req, 401, "unauthorized", "a valid bearer token is needed");
                        return;
                }
        }

        ArgCheck check = { .known = route->args };
        (void) MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, check_arg, &check);
        if (check.unknown) {
                request_reply_error(
                        req, 400, "invalid_argument", "unknown query argument '%s'", check.unknown);
                return;
        }
}

/* Once the body is complete: its JSON, and the route's handler. */
static void request_dispatch(Request *req) {
        const Route *route = &routes[req->route];

        if (route->body) {
                json_error_t e;
                const char *ct = request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);

                if (ct && !startswith(ct, "application/json")) {
                        request_reply_error(
                                req,
                                415,
                                "unsupported_media_type",
                                "the body must be application/json, got '%s'",
                                ct);
                        return;
                }
                req->json = json_loadb(req->body ?: "", req->body_len, JSON_REJECT_DUPLICATES, &e);
                if (!req->json) {
                        request_reply_error(
                                req,
                                400,
                                "invalid_json",
                                "the body is not valid JSON: %s (at byte %d)",
                                e.text,
                                e.position);
                        return;
                }
                if (!json_is_object(req->json)) {
                        request_reply_error(req, 400, "invalid_json", "the body must be a JSON object");
                        return;
                }
        } else if (req->body_len > 0) {
                request_reply_error(
                        req, 400, "invalid_argument", "%s %s takes no body", req->method, route->pattern);
                return;
        }

        route->handler(req);
}

static enum MHD_Result queue_reply(Request *req) {
        enum MHD_Result ret;

        ret = MHD_queue_response(req->connection, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        return ret;
}

/* The body did not arrive whole by its deadline: a slow client (or a slowloris) loses its connection.
 * libmicrohttpd's own timeout restarts with every byte and has no call to close a connection from
 * outside its callbacks, so the socket is shut down: libmicrohttpd reads its end and closes it, and
 * on_completed() frees the request. */
static int on_body_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        Request *req = userdata;
        const union MHD_ConnectionInfo *info;

        if (req->started)
                return 0;
        log_info(
                "Closing a connection whose request body was not complete after %" PRIu64 " s.",
                (uint64_t) (req->server->limits.body_timeout_usec / 1000000U));
        metrics_refusal(req->server->metrics, "body_timeout");
        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info)
                (void) shutdown(info->connect_fd, SHUT_RDWR);
        server_kick(req->server);
        return 0;
}

/* Takes n more bytes of the server's body budget for req; false if the budget cannot hold them. */
static bool body_reserve(Request *req, uint64_t n) {
        Server *s = req->server;

        if (n > s->limits.max_body_memory || s->body_memory > s->limits.max_body_memory - n)
                return false;
        s->body_memory += n;
        req->body_reserved += n;
        return true;
}

static enum MHD_Result refuse_body_memory(Request *req) {
        metrics_refusal(req->server->metrics, "body_memory");
        request_reply_error(
                req,
                503,
                "unavailable",
                "the server holds %" PRIu64 " bytes of request bodies, its limit: try again later",
                req->server->body_memory);
        return queue_reply(req);
}

/* The first call of a request, with its headers and none of its body: everything that can be refused
 * is refused here, so that no unauthenticated or unwanted body is ever read. */
static enum MHD_Result request_begin(Request *req) {
        const char *cl = request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t length = 0;
        int r;

        request_admit(req);
        if (req->response)
                return queue_reply(req);

        if (cl && safe_atou64(cl, &length) >= 0 && length > BODY_MAX) {
                request_reply_error(
                        req, 413, "payload_too_large", "the body is larger than %u bytes", BODY_MAX);
                return queue_reply(req);
        }
        if (length > 0 && !routes[req->route].body) {
                request_reply_error(
                        req,
                        400,
                        "invalid_argument",
                        "%s %s takes no body",
                        req->method,
                        routes[req->route].pattern);
                return queue_reply(req);
        }
        /* A declared length is reserved whole now, so that a client sending it slowly holds its share
         * from the start; a chunked body reserves as it comes. */
        if (length > 0 && !body_reserve(req, length))
                return refuse_body_memory(req);

        r = sd_event_add_time_relative(
                req->server->event,
                &req->body_deadline,
                CLOCK_MONOTONIC,
                req->server->limits.body_timeout_usec,
                0,
                on_body_deadline,
                req);
        if (r < 0) {
                request_reply_error(req, 500, "internal", "cannot time the request: %s", strerror(-r));
                return queue_reply(req);
        }
        return MHD_YES;
}

static enum MHD_Result on_access(
        void *cls,
        struct MHD_Connection *connection,
        const char *url,
        const char *method,
        const char *version,
        const char *upload_data,
        size_t *upload_data_size,
        void **con_cls) {
        Server *s = cls;
        Request *req = *con_cls;

        if (!req) {
                req = calloc(1, sizeof(Request));
                if (!req)
                        return MHD_NO;
                *req = (Request){
                        .server = s,
                        .connection = connection,
                        .route = -1,
                        .attach_fd = -EBADF,
                        .start_usec = now_usec(CLOCK_MONOTONIC),
                        .method = strdup(method),
                        .path = strdup(url),
                };
                *con_cls = req;
                if (!req->method || !req->path)
                        return MHD_NO;
                return request_begin(req);
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                *upload_data_size = 0;
                if (req->status != 0)
                        return MHD_YES; /* already refused: the rest is dropped, never held */
                if (req->body_len + n > BODY_MAX) {
                        request_reply_error(
                                req, 413, "payload_too_large", "the body is larger than %u bytes", BODY_MAX);
                        return queue_reply(req);
                }
                if (req->body_len + n > req->body_reserved &&
                    !body_reserve(req, req->body_len + n - req->body_reserved))
                        return refuse_body_memory(req);
                char *b = realloc(req->body, req->body_len + n + 1);
                if (!b)
                        return MHD_NO;
                memcpy(b + req->body_len, upload_data, n);
                req->body = b;
                req->body_len += n;
                req->body[req->body_len] = '\0';
                return MHD_YES;
        }

        if (!req->started) {
                req->started = true;
                req->body_deadline = sd_event_source_disable_unref(req->body_deadline);
                request_dispatch(req);
        }
        if (req->response)
                return queue_reply(req);
        if (!req->suspended) {
                req->suspended = true;
                req->waiting_next = s->waiting;
                if (s->waiting)
                        s->waiting->waiting_prev = req;
                s->waiting = req;
                MHD_suspend_connection(connection);
        }
        return MHD_YES;
}

static void on_completed(
        void *cls, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode toe) {
        Server *s = cls;
        Request *req = *con_cls;

        if (!req)
                return;
        /* A request that never got an answer counts as 499; a stream's length is not a latency. */
        metrics_request(
                s->metrics,
                req->route,
                req->status ?: 499,
                req->streaming && (req->status == 101 || req->status == 200)
                        ? UINT64_MAX
                        : now_usec(CLOCK_MONOTONIC) - req->start_usec);
        request_free(req);
        *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *format, va_list ap) {
        _cleanup_free_ char *text = NULL;

        if (vasprintf(&text, format, ap) < 0)
                return;
        text[strcspn(text, "\n")] = '\0';
        log_debug("libmicrohttpd: %s", text);
}

void server_kick(Server *s) {
        mhd_event_kick(&s->mhd_event);
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        /* libmicrohttpd must not be stopped with suspended connections: answer what waits. */
        server_stop_streams(s);
        events_stop(s);
        while (s->waiting)
                request_reply_error(s->waiting, 503, "unavailable", "ccdocker-httpd is stopping");
        if (s->mhd)
                for (unsigned i = 0; i < 3; i++)
                        (void) MHD_run(s->mhd);
        mhd_event_detach(&s->mhd_event);
        if (s->mhd)
                MHD_stop_daemon(s->mhd);
        events_free(s->events);
        parent_cache_free(s->parents);
        if (s->feeds) {
                feeds_free(s);
                hashmap_free(s->feeds);
        }
        session_cache_free(s->sessions);
        tickets_free(s->tickets);
        metrics_free(s->metrics);
        sd_bus_unref(s->bus);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Server *, server_free);

int server_new(
        sd_event *event,
        sd_bus *bus,
        TokenStore *tokens,
        int listen_fd,
        const ServerLimits *limits,
        Server **ret) {
        _cleanup_(server_freep) Server *s = NULL;
        int r;

        s = calloc(1, sizeof(Server));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->bus = sd_bus_ref(bus);
        s->tokens = tokens;
        s->limits = limits ? *limits : SERVER_LIMITS_DEFAULT;

        r = parent_cache_new(&s->parents);
        if (r >= 0)
                r = metrics_new(&s->metrics);
        if (r >= 0)
                r = session_cache_new(bus, &s->sessions);
        if (r >= 0)
                r = tickets_new(&s->tickets);
        if (r >= 0)
                r = (s->feeds = hashmap_new()) ? 0 : -ENOMEM;
        if (r < 0)
                return r;

        s->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG,
                0,
                NULL,
                NULL,
                on_access,
                s,
                MHD_OPTION_EXTERNAL_LOGGER,
                on_mhd_log,
                s,
                MHD_OPTION_LISTEN_SOCKET,
                (MHD_socket) listen_fd,
                MHD_OPTION_NOTIFY_COMPLETED,
                on_completed,
                s,
                MHD_OPTION_CONNECTION_TIMEOUT,
                (unsigned) CONNECTION_TIMEOUT_SEC,
                MHD_OPTION_CONNECTION_LIMIT,
                s->limits.max_connections,
                MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                s->limits.max_connections_per_client,
                MHD_OPTION_END);
        if (!s->mhd)
                return log_error_errno(EIO, "libmicrohttpd did not start on the listening socket.");

        r = mhd_event_attach(&s->mhd_event, event, s->mhd);
        if (r < 0)
                return log_error_errno(r, "Failed to add libmicrohttpd to the event loop: %m");

        *ret = TAKE_PTR(s);
        return 0;
}

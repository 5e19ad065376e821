/* Remote MCP servers through the daemon (see mcp-remote.h): per-session unix sockets of the per-session
 * HTTP server (session-http.c, shared with the model proxy), a request's session the one of the socket
 * its connection came in on; each request on /NAME is sent to that server's upstream with libcurl multi
 * (curl-glue) with the server's credential header added, and the answer streamed back through
 * session-http's bounded buffer. The model proxy's shape without its accounting and admission: an MCP
 * server's calls are not the model's. */
#define _GNU_SOURCE
#include "mcp-remote.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "curl-glue.h"
#include "list.h"
#include "log.h"
#include "session-http.h"
#include "util.h"

#define RESPONSE_HEADERS_MAX 64

typedef struct Request Request;
typedef struct Server Server;

struct Server {
        char *name, *url, *header;
};

struct McpRemoteSession {
        McpRemote *proxy;
        McpRemoteSession *prev, *next;
        char *id;
        SessionHttpSocket *socket; /* mcp.sock, its connections (session-http.c) */
        Server *servers;
        size_t n_servers;
};

struct Request {
        unsigned n_ref;
        McpRemote *proxy;
        McpRemoteSession *session; /* NULL once the session is gone */
        char *session_id, *server, *method;
        SessionHttpRequest http; /* its connection, body and answer not yet queued */
        Request *prev, *next;

        char *url;              /* upstream */
        const char *credential; /* the server's header, borrowed from the session */
        SessionHttpUpstream up; /* the transfer and the answer (up.stream.done once the upstream is) */
};

struct McpRemote {
        sd_event *event;
        CurlGlue *glue;
        SessionHttp *http;
        McpRemoteSession *sessions;
        Request *requests;
};

/* ---- pure parts ---- */

static bool name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                c == '-';
}

bool mcp_remote_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;

        if (n == 0 || n > MCP_REMOTE_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!name_char(name[i]))
                        return false;
        return true;
}

bool mcp_remote_target_name(const char *target, char *ret) {
        size_t n;

        if (!target || target[0] != '/')
                return false;
        n = strcspn(target + 1, "/?");
        if (n == 0 || n > MCP_REMOTE_NAME_MAX)
                return false;
        memcpy(ret, target + 1, n);
        ret[n] = '\0';
        return mcp_remote_name_valid(ret);
}

/* Whether the path part of rest has a "." or ".." segment, plain or percent-encoded. */
static bool has_dot_segment(const char *rest) {
        size_t end = strcspn(rest, "?#");

        for (size_t i = 0; i < end;) {
                size_t j = i, n;
                char seg[8];
                size_t k = 0;

                while (j < end && rest[j] != '/')
                        j++;
                n = j - i;
                if (n > 0 && n <= 9) {
                        for (size_t x = i; x < j && k < sizeof(seg) - 1; x++) {
                                if (rest[x] == '%' && x + 2 < j + 1 &&
                                    strncasecmp(rest + x, "%2e", 3) == 0) {
                                        seg[k++] = '.';
                                        x += 2;
                                } else
                                        seg[k++] = rest[x];
                        }
                        seg[k] = '\0';
                        if (streq(seg, ".") || streq(seg, ".."))
                                return true;
                }
                i = j + 1;
        }
        return false;
}

char *mcp_remote_upstream_url(const char *target, const char *name, const char *url) {
        char found[MCP_REMOTE_NAME_MAX + 1];
        const char *rest;
        size_t len;
        char *ret;

        if (!mcp_remote_target_name(target, found) || !streq(found, name) || !url)
                return NULL;
        rest = target + 1 + strlen(name);
        if (strchr(rest, '#') || has_dot_segment(rest))
                return NULL;
        for (const char *i = rest; *i; i++)
                if ((unsigned char) *i <= ' ' || (unsigned char) *i >= 0x7f)
                        return NULL;
        len = strlen(url);
        if (rest[0] == '/' && len > 0 && url[len - 1] == '/')
                rest++;
        if (asprintf(&ret, "%s%s", url, rest) < 0)
                return NULL;
        return ret;
}

bool mcp_remote_request_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "host",   "content-length",  "connection", "keep-alive", "transfer-encoding",
                "te",     "trailer",         "upgrade",    "expect",     "authorization",
                "cookie", "accept-encoding", "origin",
        };

        return session_http_header_forwarded(name, dropped, ELEMENTSOF(dropped));
}

bool mcp_remote_response_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "connection", "keep-alive", "transfer-encoding", "content-length",
                "te",         "trailer",    "upgrade",           "set-cookie",
        };

        return session_http_header_forwarded(name, dropped, ELEMENTSOF(dropped));
}

/* ---- requests ---- */

static void proxy_kick(McpRemote *p) {
        session_http_kick(p->http);
}

static Request *request_ref(Request *req) {
        req->n_ref++;
        return req;
}

static void request_cancel_transfer(Request *req) {
        if (!req->up.transfer)
                return;
        curl_glue_remove(req->proxy->glue, req->up.easy);
        req->up.transfer = false;
        req->n_ref--; /* the transfer's reference; another is always held by the caller */
}

static Request *request_unref(Request *req) {
        if (!req || --req->n_ref > 0)
                return NULL;
        if (req->proxy)
                LIST_REMOVE(req->proxy->requests, req);
        session_http_request_release(&req->http);
        session_http_upstream_done(&req->up, req->proxy ? req->proxy->glue : NULL);
        free(req->url);
        free(req->method);
        free(req->server);
        free(req->session_id);
        return mfree(req);
}

static void request_wake(Request *req) {
        session_http_request_resume(&req->http);
        if (req->proxy)
                proxy_kick(req->proxy);
}

static void request_log(Request *req, int level, const char *what) {
        log_struct(
                level,
                "MESSAGE=session %s: MCP server %s: %s %s",
                strempty(req->session_id),
                strempty(req->server),
                strempty(req->method),
                what,
                "MESSAGE_ID=" MCP_REMOTE_CALL_MESSAGE_ID,
                "CCDOCKER_SESSION=%s",
                strempty(req->session_id),
                "CCDOCKER_EVENT=mcp-remote",
                "CCDOCKER_MCP_SERVER=%s",
                strempty(req->server),
                "CCDOCKER_MCP_STATUS=%u",
                req->http.status,
                NULL);
}

/* An answer of the daemon's own: a JSON-RPC error body (what an MCP client shows), status status. */
static void request_fail(Request *req, unsigned status, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

static void request_fail(Request *req, unsigned status, const char *format, ...) {
        _cleanup_free_ char *message = NULL, *body = NULL;
        json_t *j;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&message, format, ap) < 0)
                message = NULL;
        va_end(ap);
        j = json_pack(
                "{s:s, s:n, s:{s:i, s:s}}",
                "jsonrpc",
                "2.0",
                "id",
                "error",
                "code",
                -32000,
                "message",
                message ?: "cc-docker: MCP forward error");
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        session_http_request_answer(&req->http, status, body);
        req->up.stream.done = true;
        request_log(req, LOG_WARNING, message ?: "refused");
        request_wake(req);
}

static ssize_t on_response_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Request *req = cls;

        return session_http_upstream_read(&req->up, &req->http, MCP_REMOTE_BUFFER_MAX, buf, max);
}

static void on_response_free(void *cls) {
        request_unref(cls);
}

/* The upstream's headers are in: start passing its answer on. */
static void on_upstream_headers(Request *req) {
        struct MHD_Response *response;

        response = session_http_stream_response(
                req->up.headers,
                req->up.n_headers,
                req->method,
                req->up.status,
                mcp_remote_response_header_forwarded,
                on_response_read,
                req,
                on_response_free);
        if (!response) {
                request_cancel_transfer(req);
                request_fail(req, 502, "cc-docker: out of memory forwarding to MCP server %s", req->server);
                return;
        }
        request_ref(req); /* the response's */
        session_http_upstream_answer(&req->up, &req->http, response);
        request_wake(req);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata) {
        Request *req = userdata;
        size_t n = size * nitems;
        int r;

        r = session_http_upstream_header(&req->up, buffer, n, RESPONSE_HEADERS_MAX);
        if (r < 0)
                return 0;
        if (r == SESSION_HTTP_HEADER_END && req->up.status >= 200 && !req->up.answering)
                on_upstream_headers(req);
        return n;
}

static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Request *req = userdata;
        size_t n = size * nmemb, r;

        if (!req->up.answering || !req->http.connection)
                return n; /* nobody to give it to */
        r = session_http_stream_write(&req->up.stream, MCP_REMOTE_BUFFER_MAX, ptr, n);
        if (r == n)
                request_wake(req);
        return r;
}

static void on_upstream_done(CURL *easy, CURLcode result, void *userdata) {
        Request *req = userdata;

        req->up.transfer = false;
        if (!req->up.answering) {
                if (req->http.connection)
                        request_fail(
                                req,
                                502,
                                "cc-docker: could not reach MCP server %s: %s",
                                req->server,
                                curl_easy_strerror(result));
        } else {
                req->up.stream.done = true;
                req->up.stream.result = result;
                request_log(
                        req,
                        result == CURLE_OK ? LOG_INFO : LOG_WARNING,
                        result == CURLE_OK ? "forwarded" : "forwarded, answer cut short");
                request_wake(req);
        }
        request_unref(req); /* the transfer's */
}

typedef struct HeaderCollect {
        struct curl_slist *list;
        bool has_content_type;
        int r;
} HeaderCollect;

static enum MHD_Result on_request_header(
        void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        HeaderCollect *hc = cls;
        _cleanup_free_ char *line = NULL;

        if (!key || !mcp_remote_request_header_forwarded(key))
                return MHD_YES;
        if (strcasecmp(key, "content-type") == 0)
                hc->has_content_type = true;
        if ((isempty(value) ? asprintf(&line, "%s;", key) : asprintf(&line, "%s: %s", key, value)) < 0) {
                hc->r = -ENOMEM;
                return MHD_NO;
        }
        hc->r = session_http_slist_add(&hc->list, line);
        return hc->r < 0 ? MHD_NO : MHD_YES;
}

static int request_start(Request *req) {
        HeaderCollect hc = {};
        CURL *easy;
        int r;

        (void) MHD_get_connection_values(req->http.connection, MHD_HEADER_KIND, on_request_header, &hc);
        r = hc.r;
        if (r >= 0 && req->credential)
                r = session_http_slist_add(&hc.list, req->credential);
        if (r >= 0)
                r = session_http_slist_add(&hc.list, "Expect:");
        if (r >= 0 && !hc.has_content_type)
                r = session_http_slist_add(&hc.list, "Content-Type:");
        req->up.request_headers = hc.list;
        if (r < 0)
                return r;

        r = session_http_easy_new(
                req->url,
                req->up.request_headers,
                on_upstream_header,
                on_upstream_write,
                req,
                req->method,
                req->http.body,
                req->http.body_len,
                &easy);
        if (r < 0)
                return r;
        req->up.easy = easy;
        /* The proxy's environment is not the session's: no proxy of the daemon's own. */
        if (curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK)
                return -EINVAL;
        r = curl_glue_add(req->proxy->glue, easy, on_upstream_done, req);
        if (r < 0)
                return r;
        request_ref(req); /* the transfer's */
        req->up.transfer = true;
        return 0;
}

/* ---- the server's callbacks (session-http.h) ---- */

static Request *request_of(SessionHttpRequest *http) {
        return (Request *) ((char *) http - offsetof(Request, http));
}

static SessionHttpRequest *on_open(
        void *userdata,
        struct MHD_Connection *connection,
        void *session,
        const char *target,
        const char *url,
        const char *method) {
        McpRemote *p = userdata;
        McpRemoteSession *s = session;
        char name[MCP_REMOTE_NAME_MAX + 1];
        Request *req;

        req = calloc(1, sizeof(Request));
        if (!req)
                return NULL;
        *req = (Request){ .n_ref = 1, .proxy = p, .session = s, .http.connection = connection };
        LIST_PREPEND(p->requests, req);
        req->method = strdup(method);
        req->session_id = strdup(s ? s->id : "");
        if (!req->method || !req->session_id) {
                request_unref(req);
                return NULL;
        }

        if (!s) {
                request_fail(req, 503, "cc-docker: this session's MCP forward is closed");
                return &req->http;
        }
        if (!target || !mcp_remote_target_name(target, name)) {
                request_fail(
                        req, 404, "cc-docker: the MCP forward serves /NAME of the session's remote servers");
                return &req->http;
        }
        req->server = strdup(name);
        if (!req->server) {
                request_unref(req);
                return NULL;
        }
        for (size_t i = 0; i < s->n_servers; i++)
                if (streq(s->servers[i].name, name)) {
                        req->url = mcp_remote_upstream_url(target, name, s->servers[i].url);
                        req->credential = s->servers[i].header;
                        break;
                }
        if (!req->url)
                request_fail(req, 404, "cc-docker: %.64s is not a remote MCP server of this session", name);
        else if (!streq(method, "POST") && !streq(method, "GET") && !streq(method, "DELETE"))
                request_fail(
                        req,
                        405,
                        "cc-docker: MCP streamable HTTP uses POST, GET and DELETE, not %.16s",
                        method);
        return &req->http;
}

static void on_too_large(SessionHttpRequest *http) {
        request_fail(
                request_of(http),
                413,
                "cc-docker: the request body is larger than %u bytes",
                MCP_REMOTE_BODY_MAX);
}

static void on_start(SessionHttpRequest *http) {
        Request *req = request_of(http);
        int r;

        r = request_start(req);
        if (r < 0)
                request_fail(
                        req,
                        502,
                        "cc-docker: could not start the request to MCP server %s: %s",
                        req->server,
                        strerror(-r));
}

static void on_completed(SessionHttpRequest *http, bool complete) {
        Request *req = request_of(http);

        if (req->up.transfer) {
                request_ref(req);
                request_cancel_transfer(req); /* the client went away: so does the request */
                request_unref(req);
        }
        request_unref(req);
}

static const SessionHttpOps http_ops = {
        .name = "MCP forward",
        .body_max = MCP_REMOTE_BODY_MAX,
        .connections_max = MCP_REMOTE_CONNECTIONS_MAX,
        .open = on_open,
        .too_large = on_too_large,
        .start = on_start,
        .completed = on_completed,
};

/* ---- sessions ---- */

static void server_wipe(Server *v) {
        if (v->header)
                explicit_bzero(v->header, strlen(v->header));
        free(v->header);
        free(v->name);
        free(v->url);
}

McpRemoteSession *mcp_remote_session_free(McpRemoteSession *s) {
        Request *req, *next;
        McpRemote *p;

        if (!s)
                return NULL;
        p = s->proxy;
        LIST_FOREACH_SAFE(req, next, p->requests) {
                if (req->session != s)
                        continue;
                request_ref(req);
                req->session = NULL;
                req->credential = NULL;
                request_cancel_transfer(req);
                if (req->http.connection && !req->http.queued && !req->up.answering)
                        request_fail(req, 503, "cc-docker: the session ended");
                else {
                        req->up.stream.done = true;
                        req->up.stream.result = CURLE_ABORTED_BY_CALLBACK;
                        request_wake(req);
                }
                request_unref(req);
        }
        session_http_socket_free(s->socket); /* closes its connections */
        LIST_REMOVE(p->sessions, s);
        for (size_t i = 0; i < s->n_servers; i++)
                server_wipe(&s->servers[i]);
        free(s->servers);
        free(s->id);
        proxy_kick(p);
        return mfree(s);
}

void mcp_remote_session_set_admit(
        McpRemoteSession *s, int (*admit)(int fd, void *userdata), void *userdata) {
        session_http_socket_set_admit(s->socket, admit, userdata);
}

int mcp_remote_listen(
        McpRemote *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        const McpRemoteServer *servers,
        size_t n,
        McpRemoteSession **ret) {
        _cleanup_(mcp_remote_session_freep) McpRemoteSession *s = NULL;
        int r;

        if (!p || isempty(session_id) || isempty(socket_path) || socket_path[0] != '/' || !ret ||
            n > MCP_REMOTE_SERVERS_MAX || (n > 0 && !servers))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!mcp_remote_name_valid(servers[i].name) || !http_url_is_valid(servers[i].url) ||
                    (servers[i].header &&
                     (strlen(servers[i].header) > MCP_REMOTE_HEADER_MAX || !strchr(servers[i].header, ':') ||
                      strpbrk(servers[i].header, "\r\n"))))
                        return -EINVAL;
                for (size_t j = 0; j < i; j++)
                        if (streq(servers[i].name, servers[j].name))
                                return -EINVAL;
        }
        s = calloc(1, sizeof(McpRemoteSession));
        if (!s)
                return -ENOMEM;
        *s = (McpRemoteSession){ .proxy = p };
        LIST_PREPEND(p->sessions, s);
        s->id = strdup(session_id);
        s->servers = calloc(n + 1, sizeof(Server));
        if (!s->id || !s->servers)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                Server *v = &s->servers[s->n_servers++];

                v->name = strdup(servers[i].name);
                v->url = strdup(servers[i].url);
                v->header = servers[i].header ? strdup(servers[i].header) : NULL;
                if (!v->name || !v->url || (servers[i].header && !v->header))
                        return -ENOMEM;
        }

        r = session_http_listen(p->http, session_id, socket_path, uid, gid, s, &s->socket);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

/* ---- the forward ---- */

McpRemote *mcp_remote_free(McpRemote *p) {
        Request *req, *next;

        if (!p)
                return NULL;
        while (p->sessions)
                mcp_remote_session_free(p->sessions);
        /* Nothing may stay suspended when libmicrohttpd stops. */
        LIST_FOREACH_SAFE(req, next, p->requests) {
                request_ref(req);
                request_cancel_transfer(req);
                if (req->http.connection && !req->http.queued && !req->http.response)
                        request_fail(req, 503, "cc-docker: the MCP forward is stopping");
                req->up.stream.done = true;
                req->up.stream.result = CURLE_ABORTED_BY_CALLBACK;
                request_wake(req);
                request_unref(req);
        }
        p->http = session_http_free(p->http);
        LIST_FOREACH_SAFE(req, next, p->requests) {
                LIST_REMOVE(p->requests, req);
                req->proxy = NULL;
        }
        curl_glue_unref(p->glue);
        sd_event_unref(p->event);
        return mfree(p);
}

int mcp_remote_new(sd_event *event, McpRemote **ret) {
        _cleanup_(mcp_remote_freep) McpRemote *p = NULL;
        int r;

        if (!event || !ret)
                return -EINVAL;
        p = calloc(1, sizeof(McpRemote));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        r = curl_glue_new(event, &p->glue);
        if (r < 0)
                return r;
        r = session_http_new(event, &http_ops, p, &p->http);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

/* Remote MCP servers through the daemon (see mcp-remote.h): per-session unix sockets accepted here and
 * handed to one libmicrohttpd daemon (no thread, no listening socket, on sd-event through mhd-event), a
 * request's session found from the socket its connection came in on; each request on /NAME is sent to
 * that server's upstream with libcurl multi (curl-glue) with the server's credential header added, and
 * the answer streamed back (on_response_read, suspending the connection while nothing is buffered and
 * pausing the transfer while too much is). The same shape as the model proxy (model-proxy.c,
 * model-request.c), without its accounting and admission: an MCP server's calls are not the model's. */
#define _GNU_SOURCE
#include "mcp-remote.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "curl-glue.h"
#include "list.h"
#include "log.h"
#include "mhd-event.h"
#include "util.h"

#define ACCEPT_PER_CALLBACK 16U
#define CONNECTION_TIMEOUT_SEC 600U /* an idle connection is closed after this */
#define CONNECT_TIMEOUT_SEC 30L
#define RESPONSE_HEADERS_MAX 64

typedef struct Conn Conn;
typedef struct Request Request;
typedef struct Server Server;

struct Server {
        char *name, *url, *header;
};

struct McpRemoteSession {
        McpRemote *proxy;
        McpRemoteSession *prev, *next;
        char *id, *socket_path;
        int listen_fd;
        sd_event_source *listen_source;
        unsigned n_connections;
        Server *servers;
        size_t n_servers;
        int (*admit)(int fd, void *userdata);
        void *admit_userdata;
};

struct Conn {
        McpRemote *proxy;
        McpRemoteSession *session; /* NULL once the session is gone */
        int fd;
        bool started;
        char *target; /* the raw request target (URI log callback) */
        Conn *prev, *next;
};

typedef struct Header {
        char *name, *value;
} Header;

struct Request {
        unsigned n_ref;
        McpRemote *proxy;
        McpRemoteSession *session; /* NULL once the session is gone */
        char *session_id, *server, *method;
        struct MHD_Connection *connection; /* NULL once libmicrohttpd is done with it */
        bool suspended, started, queued;
        Request *prev, *next;

        char *url;              /* upstream */
        const char *credential; /* the server's header, borrowed from the session */
        char *body;
        size_t body_len;
        struct curl_slist *upstream_headers;

        struct MHD_Response *response;
        unsigned status;

        CURL *easy;
        bool transfer;
        long upstream_status;
        bool answering, upstream_done, paused;
        CURLcode upstream_result;
        Header *headers;
        size_t n_headers;
        char *buf;
        size_t buf_start, buf_end, buf_allocated;
};

struct McpRemote {
        sd_event *event;
        CurlGlue *glue;
        struct MHD_Daemon *mhd;
        MhdEvent mhd_event;
        McpRemoteSession *sessions;
        Conn *conns;
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

static bool header_in(const char *name, const char *const *list, size_t n) {
        if (isempty(name) || strncasecmp(name, "proxy-", 6) == 0)
                return true;
        for (size_t i = 0; i < n; i++)
                if (strcasecmp(name, list[i]) == 0)
                        return true;
        return false;
}

bool mcp_remote_request_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "host",   "content-length",  "connection", "keep-alive", "transfer-encoding",
                "te",     "trailer",         "upgrade",    "expect",     "authorization",
                "cookie", "accept-encoding", "origin",
        };

        return !header_in(name, dropped, ELEMENTSOF(dropped));
}

bool mcp_remote_response_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "connection", "keep-alive", "transfer-encoding", "content-length",
                "te",         "trailer",    "upgrade",           "set-cookie",
        };

        return !header_in(name, dropped, ELEMENTSOF(dropped));
}

/* ---- requests ---- */

static void proxy_kick(McpRemote *p) {
        mhd_event_kick(&p->mhd_event);
}

static Request *request_ref(Request *req) {
        req->n_ref++;
        return req;
}

static void request_reset_answer(Request *req) {
        for (size_t i = 0; i < req->n_headers; i++) {
                free(req->headers[i].name);
                free(req->headers[i].value);
        }
        req->headers = mfree(req->headers);
        req->n_headers = 0;
        req->upstream_status = 0;
        req->answering = false;
        req->buf_start = req->buf_end = 0;
}

static void request_cancel_transfer(Request *req) {
        if (!req->transfer)
                return;
        curl_glue_remove(req->proxy->glue, req->easy);
        req->transfer = false;
        req->n_ref--; /* the transfer's reference; another is always held by the caller */
}

static Request *request_unref(Request *req) {
        if (!req || --req->n_ref > 0)
                return NULL;
        if (req->proxy)
                LIST_REMOVE(req->proxy->requests, req);
        if (req->easy) {
                if (req->transfer && req->proxy)
                        curl_glue_remove(req->proxy->glue, req->easy);
                curl_easy_cleanup(req->easy);
        }
        if (req->response)
                MHD_destroy_response(req->response);
        request_reset_answer(req);
        curl_slist_free_all(req->upstream_headers);
        free(req->buf);
        free(req->body);
        free(req->url);
        free(req->method);
        free(req->server);
        free(req->session_id);
        return mfree(req);
}

static void request_wake(Request *req) {
        if (req->suspended && req->connection) {
                req->suspended = false;
                MHD_resume_connection(req->connection);
        }
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
                req->status,
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
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = MHD_create_response_from_buffer(
                body ? strlen(body) : 0, body ?: (char *) "", MHD_RESPMEM_MUST_COPY);
        if (req->response)
                (void) MHD_add_response_header(req->response, "Content-Type", "application/json");
        req->status = status;
        req->upstream_done = true;
        request_log(req, LOG_WARNING, message ?: "refused");
        request_wake(req);
}

static ssize_t on_response_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Request *req = cls;
        size_t n = req->buf_end - req->buf_start;

        if (n > 0) {
                if (n > max)
                        n = max;
                memcpy(buf, req->buf + req->buf_start, n);
                req->buf_start += n;
                if (req->buf_start == req->buf_end)
                        req->buf_start = req->buf_end = 0;
                if (req->paused && req->transfer &&
                    req->buf_end - req->buf_start <= MCP_REMOTE_BUFFER_MAX / 2) {
                        req->paused = false;
                        (void) curl_easy_pause(req->easy, CURLPAUSE_CONT);
                }
                return (ssize_t) n;
        }
        if (req->upstream_done)
                return req->upstream_result == CURLE_OK ? MHD_CONTENT_READER_END_OF_STREAM
                                                        : MHD_CONTENT_READER_END_WITH_ERROR;
        req->suspended = true;
        MHD_suspend_connection(req->connection);
        return 0;
}

static void on_response_free(void *cls) {
        request_unref(cls);
}

/* The upstream's headers are in: start passing its answer on. */
static void on_upstream_headers(Request *req) {
        struct MHD_Response *response;
        uint64_t size = MHD_SIZE_UNKNOWN;

        for (size_t i = 0; i < req->n_headers; i++)
                if (strcasecmp(req->headers[i].name, "content-length") == 0 && !streq(req->method, "HEAD") &&
                    req->upstream_status != 204 && req->upstream_status != 304) {
                        uint64_t v;

                        if (safe_atou64(req->headers[i].value, &v) >= 0)
                                size = v;
                }
        response =
                MHD_create_response_from_callback(size, 16 * 1024, on_response_read, req, on_response_free);
        if (!response) {
                request_cancel_transfer(req);
                request_fail(req, 502, "cc-docker: out of memory forwarding to MCP server %s", req->server);
                return;
        }
        request_ref(req); /* the response's */
        for (size_t i = 0; i < req->n_headers; i++)
                if (mcp_remote_response_header_forwarded(req->headers[i].name))
                        (void) MHD_add_response_header(
                                response, req->headers[i].name, req->headers[i].value);
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = response;
        req->answering = true;
        req->status = (unsigned) req->upstream_status;
        request_wake(req);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata) {
        Request *req = userdata;
        size_t n = size * nitems, len = n;
        const char *colon, *v;
        size_t vlen;
        Header *nh;

        while (len > 0 && (buffer[len - 1] == '\n' || buffer[len - 1] == '\r'))
                len--;
        if (len >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
                const char *sp = memchr(buffer, ' ', len);

                request_reset_answer(req);
                req->upstream_status = sp ? strtol(sp + 1, NULL, 10) : 0;
                return n;
        }
        if (len == 0) {
                if (req->upstream_status >= 200 && !req->answering)
                        on_upstream_headers(req);
                return n;
        }
        colon = memchr(buffer, ':', len);
        if (!colon || colon == buffer || req->n_headers >= RESPONSE_HEADERS_MAX)
                return n;
        nh = reallocarray(req->headers, req->n_headers + 1, sizeof(Header));
        if (!nh)
                return 0;
        req->headers = nh;
        v = colon + 1;
        vlen = len - (size_t) (v - buffer);
        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
        }
        nh[req->n_headers].name = strndup(buffer, (size_t) (colon - buffer));
        nh[req->n_headers].value = strndup(v, vlen);
        if (!nh[req->n_headers].name || !nh[req->n_headers].value) {
                free(nh[req->n_headers].name);
                free(nh[req->n_headers].value);
                return 0;
        }
        req->n_headers++;
        return n;
}

static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Request *req = userdata;
        size_t n = size * nmemb, used = req->buf_end - req->buf_start;

        if (!req->answering || !req->connection)
                return n; /* nobody to give it to */
        if (used > 0 && used + n > MCP_REMOTE_BUFFER_MAX) {
                req->paused = true;
                return CURL_WRITEFUNC_PAUSE;
        }
        if (req->buf_start > 0 && req->buf_end + n > req->buf_allocated) {
                memmove(req->buf, req->buf + req->buf_start, used);
                req->buf_start = 0;
                req->buf_end = used;
        }
        if (req->buf_end + n > req->buf_allocated) {
                size_t a = req->buf_allocated ?: 16384;
                char *b;

                while (a < req->buf_end + n)
                        a *= 2;
                b = realloc(req->buf, a);
                if (!b)
                        return 0;
                req->buf = b;
                req->buf_allocated = a;
        }
        memcpy(req->buf + req->buf_end, ptr, n);
        req->buf_end += n;
        request_wake(req);
        return n;
}

static void on_upstream_done(CURL *easy, CURLcode result, void *userdata) {
        Request *req = userdata;

        req->transfer = false;
        if (!req->answering) {
                if (req->connection)
                        request_fail(
                                req,
                                502,
                                "cc-docker: could not reach MCP server %s: %s",
                                req->server,
                                curl_easy_strerror(result));
        } else {
                req->upstream_done = true;
                req->upstream_result = result;
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

static int slist_add(struct curl_slist **list, const char *line) {
        struct curl_slist *l = curl_slist_append(*list, line);

        if (!l)
                return -ENOMEM;
        *list = l;
        return 0;
}

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
        hc->r = slist_add(&hc->list, line);
        return hc->r < 0 ? MHD_NO : MHD_YES;
}

static int request_start(Request *req) {
        HeaderCollect hc = {};
        CURL *easy;
        int r;

        (void) MHD_get_connection_values(req->connection, MHD_HEADER_KIND, on_request_header, &hc);
        r = hc.r;
        if (r >= 0 && req->credential)
                r = slist_add(&hc.list, req->credential);
        if (r >= 0)
                r = slist_add(&hc.list, "Expect:");
        if (r >= 0 && !hc.has_content_type)
                r = slist_add(&hc.list, "Content-Type:");
        req->upstream_headers = hc.list;
        if (r < 0)
                return r;

        easy = curl_easy_init();
        if (!easy)
                return -ENOMEM;
        req->easy = easy;
        if (curl_easy_setopt(easy, CURLOPT_URL, req->url) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->upstream_headers) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_upstream_header) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HEADERDATA, req) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_upstream_write) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_WRITEDATA, req) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SEC) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
            /* The proxy's environment is not the session's: no proxy of the daemon's own. */
            curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK ||
#if LIBCURL_VERSION_NUM >= 0x075500
            curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
#else
            curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK
#endif
        )
                return -EINVAL;
        if (streq(req->method, "GET"))
                r = curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) == CURLE_OK ? 0 : -EINVAL;
        else if (
                curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ?: "") != CURLE_OK ||
                curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len) !=
                        CURLE_OK ||
                (!streq(req->method, "POST") &&
                 curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method) != CURLE_OK))
                r = -EINVAL;
        if (r < 0)
                return r;
        r = curl_glue_add(req->proxy->glue, easy, on_upstream_done, req);
        if (r < 0)
                return r;
        request_ref(req); /* the transfer's */
        req->transfer = true;
        return 0;
}

/* ---- libmicrohttpd ---- */

static Conn *connection_context(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        return ci ? ci->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
        Conn *conn = connection_context(connection);

        if (conn) {
                free(conn->target);
                conn->target = uri ? strdup(uri) : NULL;
        }
        return NULL;
}

static enum MHD_Result queue_answer(Request *req) {
        enum MHD_Result ret = MHD_queue_response(req->connection, req->status, req->response);

        MHD_destroy_response(req->response);
        req->response = NULL;
        req->queued = true;
        return ret;
}

static Request *request_new(McpRemote *p, struct MHD_Connection *connection, const char *method) {
        Conn *conn = connection_context(connection);
        McpRemoteSession *s = conn ? conn->session : NULL;
        char name[MCP_REMOTE_NAME_MAX + 1];
        Request *req;

        req = calloc(1, sizeof(Request));
        if (!req)
                return NULL;
        *req = (Request){ .n_ref = 1, .proxy = p, .session = s, .connection = connection };
        LIST_PREPEND(p->requests, req);
        req->method = strdup(method);
        req->session_id = strdup(s ? s->id : "");
        if (!req->method || !req->session_id)
                return request_unref(req);

        if (!s) {
                request_fail(req, 503, "cc-docker: this session's MCP forward is closed");
                return req;
        }
        if (!conn->target || !mcp_remote_target_name(conn->target, name)) {
                request_fail(
                        req, 404, "cc-docker: the MCP forward serves /NAME of the session's remote servers");
                return req;
        }
        req->server = strdup(name);
        if (!req->server)
                return request_unref(req);
        for (size_t i = 0; i < s->n_servers; i++)
                if (streq(s->servers[i].name, name)) {
                        req->url = mcp_remote_upstream_url(conn->target, name, s->servers[i].url);
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
        return req;
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
        McpRemote *p = cls;
        Request *req = *con_cls;
        int r;

        if (!req) {
                const char *cl;
                uint64_t length;

                req = request_new(p, connection, method);
                if (!req)
                        return MHD_NO;
                *con_cls = req;
                cl = MHD_lookup_connection_value(
                        connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (!req->response && cl && (safe_atou64(cl, &length) < 0 || length > MCP_REMOTE_BODY_MAX))
                        request_fail(
                                req,
                                413,
                                "cc-docker: the request body is larger than %u bytes",
                                MCP_REMOTE_BODY_MAX);
                if (req->response)
                        return queue_answer(req);
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                char *b;

                *upload_data_size = 0;
                if (req->queued || req->response)
                        return MHD_YES;
                if (req->body_len + n > MCP_REMOTE_BODY_MAX) {
                        request_fail(
                                req,
                                413,
                                "cc-docker: the request body is larger than %u bytes",
                                MCP_REMOTE_BODY_MAX);
                        return queue_answer(req);
                }
                b = realloc(req->body, req->body_len + n + 1);
                if (!b)
                        return MHD_NO;
                memcpy(b + req->body_len, upload_data, n);
                req->body = b;
                req->body_len += n;
                return MHD_YES;
        }

        if (req->queued)
                return MHD_YES;
        if (!req->started && !req->response) {
                req->started = true;
                r = request_start(req);
                if (r < 0)
                        request_fail(
                                req,
                                502,
                                "cc-docker: could not start the request to MCP server %s: %s",
                                req->server,
                                strerror(-r));
        }
        if (req->response)
                return queue_answer(req);
        if (!req->suspended) {
                req->suspended = true;
                MHD_suspend_connection(connection);
        }
        return MHD_YES;
}

static void on_completed(
        void *cls, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode toe) {
        Request *req = *con_cls;

        if (!req)
                return;
        *con_cls = NULL;
        req->connection = NULL;
        req->suspended = false;
        if (req->transfer) {
                request_ref(req);
                request_cancel_transfer(req); /* the client went away: so does the request */
                request_unref(req);
        }
        request_unref(req);
}

static Conn *conn_free(Conn *conn) {
        if (!conn)
                return NULL;
        LIST_REMOVE(conn->proxy->conns, conn);
        if (conn->session)
                conn->session->n_connections--;
        free(conn->target);
        return mfree(conn);
}

static void on_connection(
        void *cls,
        struct MHD_Connection *connection,
        void **socket_context,
        enum MHD_ConnectionNotificationCode toe) {
        McpRemote *p = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

                if (!ci)
                        return;
                for (Conn *conn = p->conns; conn; conn = conn->next)
                        if (conn->fd == ci->connect_fd && !conn->started) {
                                conn->started = true;
                                *socket_context = conn;
                                return;
                        }
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
                conn_free(*socket_context);
                *socket_context = NULL;
        }
}

static void on_mhd_log(void *cls, const char *format, va_list ap) {
        _cleanup_free_ char *text = NULL;

        if (vasprintf(&text, format, ap) < 0)
                return;
        text[strcspn(text, "\n")] = '\0';
        log_debug("MCP forward: libmicrohttpd: %s", text);
}

/* ---- sessions ---- */

static int on_session_listen(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        McpRemoteSession *s = userdata;
        McpRemote *p = s->proxy;

        for (unsigned i = 0; i < ACCEPT_PER_CALLBACK; i++) {
                struct sockaddr_un sa = {};
                socklen_t salen = sizeof(sa);
                Conn *conn;
                int cfd;

                cfd = accept4(s->listen_fd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(
                                        errno, "session %s: MCP forward: accept failed: %m", s->id);
                        break;
                }
                if ((s->admit && s->admit(cfd, s->admit_userdata) <= 0) ||
                    s->n_connections >= MCP_REMOTE_CONNECTIONS_MAX) {
                        safe_close(cfd);
                        continue;
                }
                conn = calloc(1, sizeof(Conn));
                if (!conn) {
                        safe_close(cfd);
                        break;
                }
                *conn = (Conn){ .proxy = p, .session = s, .fd = cfd };
                LIST_PREPEND(p->conns, conn);
                s->n_connections++;
                /* libmicrohttpd owns (and closes) the fd from here. */
                if (MHD_add_connection(p->mhd, cfd, (const struct sockaddr *) &sa, salen) != MHD_YES) {
                        log_warning_errno(
                                errno,
                                "session %s: MCP forward: libmicrohttpd refused a connection: %m",
                                s->id);
                        for (Conn *c = p->conns; c; c = c->next)
                                if (c == conn && !c->started) {
                                        conn_free(conn);
                                        break;
                                }
                }
        }
        proxy_kick(p);
        return 0;
}

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
        for (Conn *conn = p->conns; conn; conn = conn->next)
                if (conn->session == s) {
                        conn->session = NULL;
                        (void) shutdown(conn->fd, SHUT_RDWR);
                }
        s->n_connections = 0;
        LIST_FOREACH_SAFE(req, next, p->requests) {
                if (req->session != s)
                        continue;
                request_ref(req);
                req->session = NULL;
                req->credential = NULL;
                request_cancel_transfer(req);
                if (req->connection && !req->queued && !req->answering)
                        request_fail(req, 503, "cc-docker: the session ended");
                else {
                        req->upstream_done = true;
                        req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                        request_wake(req);
                }
                request_unref(req);
        }
        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->listen_fd);
        if (s->socket_path && unlink(s->socket_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "MCP forward: could not remove %s: %m", s->socket_path);
        LIST_REMOVE(p->sessions, s);
        for (size_t i = 0; i < s->n_servers; i++)
                server_wipe(&s->servers[i]);
        free(s->servers);
        free(s->socket_path);
        free(s->id);
        proxy_kick(p);
        return mfree(s);
}

void mcp_remote_session_set_admit(
        McpRemoteSession *s, int (*admit)(int fd, void *userdata), void *userdata) {
        s->admit = admit;
        s->admit_userdata = userdata;
}

/* Owner and mode on the inode checked to be a socket (the directory is the container user's). */
static int fix_socket(int dfd, const char *name, const char *path, uid_t uid, gid_t gid) {
        _cleanup_close_ int fd = -EBADF;
        char proc[64];
        struct stat st;

        fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return log_error_errno(errno, "MCP forward: could not open %s: %m", path);
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(EBADFD, "MCP forward: %s was replaced by something else", path);
        if ((st.st_uid != uid || st.st_gid != gid) && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return log_error_errno(
                        errno,
                        "MCP forward: could not give %s to %u:%u: %m",
                        path,
                        (unsigned) uid,
                        (unsigned) gid);
        (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if ((st.st_mode & 07777) != 0600 && chmod(proc, 0600) < 0)
                return log_error_errno(errno, "MCP forward: could not make %s mode 0600: %m", path);
        return 0;
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
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dfd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *name;
        mode_t old_umask;
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
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);

        s = calloc(1, sizeof(McpRemoteSession));
        if (!s)
                return -ENOMEM;
        *s = (McpRemoteSession){ .proxy = p, .listen_fd = -EBADF };
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

        name = strrchr(socket_path, '/') + 1;
        if (isempty(name))
                return -EINVAL;
        dir = strndup(socket_path, (size_t) (name - socket_path));
        if (!dir)
                return -ENOMEM;
        dfd = open(dir, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_PATH);
        if (dfd < 0)
                return log_error_errno(errno, "MCP forward: could not open %s: %m", dir);
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return log_error_errno(errno, "MCP forward: could not remove stale %s: %m", socket_path);
        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return log_error_errno(errno, "MCP forward: could not create a socket: %m");
        old_umask = umask(0177); /* one thread: the process-wide umask is safe */
        r = bind(s->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        (void) umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "MCP forward: could not bind %s: %m", socket_path);
        s->socket_path = strdup(socket_path);
        if (!s->socket_path) {
                (void) unlink(socket_path);
                return -ENOMEM;
        }
        r = fix_socket(dfd, name, socket_path, uid, gid);
        if (r < 0)
                return r;
        if (listen(s->listen_fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "MCP forward: could not listen on %s: %m", socket_path);
        r = sd_event_add_io(p->event, &s->listen_source, s->listen_fd, EPOLLIN, on_session_listen, s);
        if (r < 0)
                return log_error_errno(r, "MCP forward: could not watch %s: %m", socket_path);
        (void) sd_event_source_set_description(s->listen_source, "mcp-remote-listen");
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
                if (req->connection && !req->queued && !req->response)
                        request_fail(req, 503, "cc-docker: the MCP forward is stopping");
                req->upstream_done = true;
                req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                request_wake(req);
                request_unref(req);
        }
        if (p->mhd)
                for (unsigned i = 0; i < 3; i++)
                        (void) MHD_run(p->mhd);
        mhd_event_detach(&p->mhd_event);
        if (p->mhd)
                MHD_stop_daemon(p->mhd);
        while (p->conns)
                conn_free(p->conns);
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
        p->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
                0,
                NULL,
                NULL,
                on_access,
                p,
                MHD_OPTION_EXTERNAL_LOGGER,
                on_mhd_log,
                p,
                MHD_OPTION_URI_LOG_CALLBACK,
                on_uri,
                p,
                MHD_OPTION_NOTIFY_COMPLETED,
                on_completed,
                p,
                MHD_OPTION_NOTIFY_CONNECTION,
                on_connection,
                p,
                MHD_OPTION_CONNECTION_TIMEOUT,
                CONNECTION_TIMEOUT_SEC,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                (size_t) (128 * 1024),
                MHD_OPTION_END);
        if (!p->mhd)
                return log_error_errno(EIO, "MCP forward: libmicrohttpd did not start");
        r = mhd_event_attach(&p->mhd_event, event, p->mhd);
        if (r < 0)
                return log_error_errno(r, "MCP forward: could not add libmicrohttpd to the event loop: %m");
        (void) sd_event_source_set_description(p->mhd_event.io, "mcp-remote-mhd");
        *ret = TAKE_PTR(p);
        return 0;
}

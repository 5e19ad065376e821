/* A small per-session HTTP server, and an answer streamed from libcurl to its client: what the model
 * proxy (model-proxy.c, model-request.c) and the remote MCP forward (mcp-remote.c) share. One
 * libmicrohttpd daemon (no thread, no listening socket, on sd-event through mhd-event) serves any number
 * of per-session unix sockets; a request's session is the socket its connection was accepted on. The
 * server reads each request (its body bounded), answers refusals made from the headers only once a
 * small declared body is read, and hands the rest to its owner's callbacks (SessionHttpOps). The
 * stream helpers pass an upstream answer on through a bounded buffer: curl's write callback fills it
 * (a full one pauses the transfer), libmicrohttpd's content reader drains it (an empty one suspends the
 * connection until woken). */
#pragma once

#include <curl/curl.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "curl-glue.h"

/* A refused request's declared body up to this size is read (and dropped) before the refusal is sent:
 * answering before it leaves the client writing into a connection that closes, and it then sees a reset
 * instead of the refusal. A larger or chunked body is refused at once. */
#define SESSION_HTTP_REFUSED_BODY_DRAIN (1024U * 1024)

typedef struct SessionHttp SessionHttp;
typedef struct SessionHttpSocket SessionHttpSocket;

/* What each request of a SessionHttp holds for it; the owner embeds it in its own request. */
typedef struct SessionHttpRequest {
        struct MHD_Connection *connection; /* NULL once libmicrohttpd is done with the request */
        struct MHD_Response *response;     /* an answer not yet queued */
        unsigned status;
        bool suspended;
        bool queued;  /* the response is handed to libmicrohttpd */
        bool started; /* read whole and handed to ops->start */
        char *body;   /* NUL-terminated */
        size_t body_len;
} SessionHttpRequest;

typedef struct SessionHttpOps {
        const char *name;         /* "model proxy": what the logs call it */
        size_t body_max;          /* a request body */
        unsigned connections_max; /* open connections per socket */
        /* A request libmicrohttpd started: session is the socket's (NULL once it is closed), target the
         * raw request target (query and all; NULL when unknown), url the decoded path. Returns the
         * request, holding one reference for the connection, or NULL (the connection is closed). It may
         * answer at once (a refusal from the headers). */
        SessionHttpRequest *(*open)(
                void *userdata,
                struct MHD_Connection *connection,
                void *session,
                const char *target,
                const char *url,
                const char *method);
        /* Answers 413: the body is larger than body_max. */
        void (*too_large)(SessionHttpRequest *req);
        /* The request is read: answer it, or go on (the connection waits suspended until woken). */
        void (*start)(SessionHttpRequest *req);
        /* libmicrohttpd is done with the request (complete: its answer was sent whole): drop the
         * connection's reference. */
        void (*completed)(SessionHttpRequest *req, bool complete);
} SessionHttpOps;

int session_http_new(sd_event *event, const SessionHttpOps *ops, void *userdata, SessionHttp **ret);
/* Runs libmicrohttpd a few last times (answers the caller queued go out), then stops it: requests still
 * open are completed. The sockets must be freed first, and nothing may stay suspended. */
SessionHttp *session_http_free(SessionHttp *h);
/* Runs libmicrohttpd at the loop's next turn (after a request is woken). */
void session_http_kick(SessionHttp *h);

/* Listens on socket_path (a stale socket there is replaced; mode 0600, owned by uid:gid, the
 * container's user; the directory is the caller's) for session_id; its requests are opened with
 * session. */
int session_http_listen(
        SessionHttp *h,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        void *session,
        SessionHttpSocket **ret);
/* Closes the socket (and removes it) and shuts its connections down. */
SessionHttpSocket *session_http_socket_free(SessionHttpSocket *s);
/* admit(fd, userdata) is asked of each new connection before it is read: <= 0 closes it unheard. */
void session_http_socket_set_admit(
        SessionHttpSocket *s, int (*admit)(int fd, void *userdata), void *userdata);

/* An answer of the owner's own: body (JSON; NULL: empty) with status, replacing any not yet queued.
 * The response stays NULL when out of memory. */
void session_http_request_answer(SessionHttpRequest *req, unsigned status, const char *body);
/* Hands the response to libmicrohttpd. */
enum MHD_Result session_http_request_queue(SessionHttpRequest *req);
/* Frees the answer not yet queued and the body (when the owner's request is freed). */
void session_http_request_release(SessionHttpRequest *req);
/* Resumes a suspended connection (the caller then kicks the server). */
void session_http_request_resume(SessionHttpRequest *req);

/* ---- an upstream answer streamed back ---- */

typedef struct SessionHttpHeader {
        char *name, *value;
} SessionHttpHeader;

void session_http_headers_free(SessionHttpHeader *headers, size_t n);
/* Whether a header named name crosses the proxy: not empty, no proxy- header, none of dropped. */
bool session_http_header_forwarded(const char *name, const char *const *dropped, size_t n_dropped);

typedef enum SessionHttpHeaderLine {
        SESSION_HTTP_HEADER_FIELD,  /* a header, kept (or dropped past max) */
        SESSION_HTTP_HEADER_STATUS, /* a status line (*ret_status): a new header block starts */
        SESSION_HTTP_HEADER_END,    /* the blank line that ends a block */
} SessionHttpHeaderLine;

/* One line from curl's header callback: a field is appended to *headers (at most max). Returns a
 * SessionHttpHeaderLine, or -ENOMEM. */
int session_http_header_line(
        const char *buffer,
        size_t n,
        SessionHttpHeader **headers,
        size_t *n_headers,
        size_t max,
        long *ret_status);

/* The response that streams an upstream answer (status, headers) to the client through reader: its size
 * is the upstream's Content-Length (unknown without, or for HEAD, 204 and 304), and the headers
 * forwarded() lets through are copied. NULL when out of memory. */
struct MHD_Response *session_http_stream_response(
        const SessionHttpHeader *headers,
        size_t n_headers,
        const char *method,
        long status,
        bool (*forwarded)(const char *name),
        MHD_ContentReaderCallback reader,
        void *cls,
        MHD_ContentReaderFreeCallback free_cb);

typedef struct SessionHttpStream {
        char *buf;
        size_t start, end, allocated;
        bool paused; /* the transfer is paused: the buffer was full */
        bool done;   /* the upstream is done: the stream ends once the buffer is drained */
        CURLcode result;
} SessionHttpStream;

/* The upstream side of a request: the transfer, its answer's status and headers, and the stream. */
typedef struct SessionHttpUpstream {
        CURL *easy;
        bool transfer; /* easy is added to the multi handle */
        struct curl_slist *request_headers;
        long status;
        bool answering; /* the answer is being passed on */
        SessionHttpHeader *headers;
        size_t n_headers;
        SessionHttpStream stream;
} SessionHttpUpstream;

/* Forgets the answer so far (before an attempt): its status, headers and what is buffered. */
void session_http_upstream_reset(SessionHttpUpstream *u);
/* Frees it all; a running transfer is taken out of glue first. */
void session_http_upstream_done(SessionHttpUpstream *u, CurlGlue *glue);
/* A line from curl's header callback (session_http_header_line(), at most max headers): a status line
 * resets the answer and sets its status. */
int session_http_upstream_header(SessionHttpUpstream *u, const char *buffer, size_t n, size_t max);
/* response (session_http_stream_response()) becomes req's answer, with the upstream's status. */
void session_http_upstream_answer(
        SessionHttpUpstream *u, SessionHttpRequest *req, struct MHD_Response *response);
/* libmicrohttpd's content reader over u's stream (session_http_stream_read()). */
ssize_t session_http_upstream_read(
        SessionHttpUpstream *u, SessionHttpRequest *req, size_t max, char *buf, size_t size);

/* curl's write callback, into a buffer bounded at max (an empty one takes any piece, so progress is
 * always made): n, CURL_WRITEFUNC_PAUSE (paused; curl hands the piece over again on resumption), or 0
 * when out of memory (fails the transfer). */
size_t session_http_stream_write(SessionHttpStream *s, size_t max, const char *ptr, size_t n);
/* libmicrohttpd's content reader: what is buffered (resuming easy, when not NULL, once half of max is
 * free), the end of the stream once done, or 0 with the connection suspended until more comes. */
ssize_t session_http_stream_read(
        SessionHttpStream *s, SessionHttpRequest *req, CURL *easy, size_t max, char *buf, size_t size);
void session_http_stream_done(SessionHttpStream *s);

/* An easy handle for url with the callbacks (userdata for both), headers (borrowed: they must outlive
 * the handle), no signals, a connect timeout and TCP keep-alive, http and https only; GET, HEAD, or
 * method with body (borrowed). */
int session_http_easy_new(
        const char *url,
        struct curl_slist *headers,
        curl_write_callback on_header,
        curl_write_callback on_write,
        void *userdata,
        const char *method,
        const char *body,
        size_t body_len,
        CURL **ret);
int session_http_slist_add(struct curl_slist **list, const char *line);

static inline void session_http_freep(SessionHttp **h) {
        if (*h)
                session_http_free(*h);
}

static inline void session_http_socket_freep(SessionHttpSocket **s) {
        if (*s)
                session_http_socket_free(*s);
}

/* The per-session HTTP server and the streamed answer (see session-http.h): sockets accepted here and
 * handed to libmicrohttpd (fd -> Conn, found again in its connection-start notification), its
 * callbacks, and the bounded buffer between libcurl and libmicrohttpd. */
#define _GNU_SOURCE
#include "session-http.h"

#include <errno.h>
#include <fcntl.h>
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
#include "list.h"
#include "log.h"
#include "mhd-event.h"
#include "util.h"

#define ACCEPT_PER_CALLBACK 16U     /* connections accepted per io event of a session socket */
#define CONNECTION_TIMEOUT_SEC 600U /* an idle keep-alive connection is closed after this */
#define CONNECT_TIMEOUT_SEC 30L     /* to reach upstream */

typedef struct Conn Conn;

/* One accepted connection; libmicrohttpd owns its fd. */
struct Conn {
        SessionHttp *http;
        SessionHttpSocket *socket; /* NULL once the socket is closed */
        int fd;
        bool started; /* libmicrohttpd announced it (its socket context points here) */
        char *target; /* the raw request target of the request being read (URI log callback) */
        Conn *prev, *next;
};

struct SessionHttpSocket {
        SessionHttp *http;
        char *id, *socket_path;
        void *session;
        int listen_fd;
        sd_event_source *listen_source;
        unsigned n_connections;
        int (*admit)(int fd, void *userdata);
        void *admit_userdata;
        SessionHttpSocket *prev, *next;
};

struct SessionHttp {
        sd_event *event;
        const SessionHttpOps *ops;
        void *userdata;
        struct MHD_Daemon *mhd;
        MhdEvent mhd_event;
        SessionHttpSocket *sockets;
        Conn *conns;
};

/* ---- requests ---- */

void session_http_request_answer(SessionHttpRequest *req, unsigned status, const char *body) {
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = MHD_create_response_from_buffer(
                body ? strlen(body) : 0, (void *) (body ?: ""), MHD_RESPMEM_MUST_COPY);
        if (req->response)
                (void) MHD_add_response_header(req->response, "Content-Type", "application/json");
        req->status = status;
}

enum MHD_Result session_http_request_queue(SessionHttpRequest *req) {
        enum MHD_Result ret;

        ret = MHD_queue_response(req->connection, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        req->queued = true;
        return ret;
}

void session_http_request_release(SessionHttpRequest *req) {
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = NULL;
        req->body = mfree(req->body);
        req->body_len = 0;
}

void session_http_request_resume(SessionHttpRequest *req) {
        if (req->suspended && req->connection) {
                req->suspended = false;
                MHD_resume_connection(req->connection);
        }
}

void session_http_kick(SessionHttp *h) {
        if (h)
                mhd_event_kick(&h->mhd_event);
}

/* ---- libmicrohttpd callbacks ---- */

static Conn *connection_context(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        return ci ? ci->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
        Conn *conn = connection_context(connection);

        /* The raw request target, query and all (the access handler only sees the decoded path). */
        if (conn) {
                free(conn->target);
                conn->target = uri ? strdup(uri) : NULL;
        }
        return NULL;
}

static bool declared_length(struct MHD_Connection *connection, uint64_t *ret) {
        const char *cl =
                MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

        return cl && safe_atou64(cl, ret) >= 0;
}

/* A refusal made from the headers alone is sent at once only when the body is large or of unknown
 * length; a small declared body is read (and dropped) first (SESSION_HTTP_REFUSED_BODY_DRAIN). */
static bool refusal_waits_for_body(struct MHD_Connection *connection, const SessionHttpRequest *req) {
        uint64_t length;

        if (req->status == 413)
                return false;
        if (!declared_length(connection, &length))
                return false;
        return length > 0 && length <= SESSION_HTTP_REFUSED_BODY_DRAIN;
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
        SessionHttp *h = cls;
        SessionHttpRequest *req = *con_cls;

        if (!req) {
                Conn *conn = connection_context(connection);
                uint64_t length;

                req = h->ops->open(
                        h->userdata,
                        connection,
                        conn && conn->socket ? conn->socket->session : NULL,
                        conn ? conn->target : NULL,
                        url,
                        method);
                if (!req)
                        return MHD_NO;
                *con_cls = req;

                if (!req->response &&
                    MHD_lookup_connection_value(
                            connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) &&
                    (!declared_length(connection, &length) || length > h->ops->body_max))
                        h->ops->too_large(req);
                if (req->response && !refusal_waits_for_body(connection, req))
                        return session_http_request_queue(req);
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                char *b;

                *upload_data_size = 0;
                if (req->queued || req->response)
                        return MHD_YES; /* already answered: the rest is dropped */
                if (req->body_len + n > h->ops->body_max) {
                        h->ops->too_large(req);
                        return session_http_request_queue(req);
                }
                b = realloc(req->body, req->body_len + n + 1);
                if (!b)
                        return MHD_NO;
                memcpy(b + req->body_len, upload_data, n);
                req->body = b;
                req->body_len += n;
                req->body[req->body_len] = '\0';
                return MHD_YES;
        }

        if (req->queued)
                return MHD_YES;
        if (req->response) /* a refusal that waited for its body */
                return session_http_request_queue(req);
        if (!req->started) {
                req->started = true;
                h->ops->start(req);
        }
        if (req->response)
                return session_http_request_queue(req);
        if (!req->suspended) {
                req->suspended = true;
                MHD_suspend_connection(connection);
        }
        return MHD_YES;
}

static void on_completed(
        void *cls, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode toe) {
        SessionHttp *h = cls;
        SessionHttpRequest *req = *con_cls;

        if (!req)
                return;
        *con_cls = NULL;
        req->connection = NULL;
        req->suspended = false;
        h->ops->completed(req, req->queued && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

static Conn *conn_free(Conn *conn) {
        if (!conn)
                return NULL;
        LIST_REMOVE(conn->http->conns, conn);
        if (conn->socket)
                conn->socket->n_connections--;
        free(conn->target);
        return mfree(conn);
}

static void on_connection(
        void *cls,
        struct MHD_Connection *connection,
        void **socket_context,
        enum MHD_ConnectionNotificationCode toe) {
        SessionHttp *h = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

                if (!ci)
                        return;
                for (Conn *conn = h->conns; conn; conn = conn->next)
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
        SessionHttp *h = cls;
        _cleanup_free_ char *text = NULL;

        if (vasprintf(&text, format, ap) < 0)
                return;
        text[strcspn(text, "\n")] = '\0';
        log_debug("%s: libmicrohttpd: %s", h->ops->name, text);
}

/* ---- sockets ---- */

static int on_socket_listen(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        SessionHttpSocket *s = userdata;
        SessionHttp *h = s->http;

        for (unsigned i = 0; i < ACCEPT_PER_CALLBACK; i++) {
                struct sockaddr_un sa = {};
                socklen_t salen = sizeof(sa);
                Conn *conn;
                int cfd;

                cfd = accept4(s->listen_fd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_struct(
                                        LOG_WARNING,
                                        "MESSAGE=session %s: %s: accept failed: %m",
                                        s->id,
                                        h->ops->name,
                                        "CCDOCKER_SESSION=%s",
                                        s->id,
                                        NULL);
                        break;
                }
                if (s->admit && s->admit(cfd, s->admit_userdata) <= 0) {
                        safe_close(cfd);
                        continue;
                }
                if (s->n_connections >= h->ops->connections_max) {
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: %s: too many connections, refusing one",
                                s->id,
                                h->ops->name,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                        safe_close(cfd);
                        continue;
                }

                conn = calloc(1, sizeof(Conn));
                if (!conn) {
                        safe_close(cfd);
                        break;
                }
                *conn = (Conn){ .http = h, .socket = s, .fd = cfd };
                LIST_PREPEND(h->conns, conn);
                s->n_connections++;

                /* libmicrohttpd owns (and closes) the fd from here, whatever it answers. */
                if (MHD_add_connection(h->mhd, cfd, (const struct sockaddr *) &sa, salen) != MHD_YES) {
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: %s: libmicrohttpd refused a connection: %m",
                                s->id,
                                h->ops->name,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                        for (Conn *c = h->conns; c; c = c->next)
                                if (c == conn && !c->started) {
                                        conn_free(conn);
                                        break;
                                }
                }
        }
        session_http_kick(h);
        return 0;
}

/* The socket's owner and mode, set on the inode checked to be a socket: the directory belongs to the
 * container's user, who could put a symlink in its place between bind() and a chmod by path. */
static int fix_socket(const char *what, int dfd, const char *name, const char *path, uid_t uid, gid_t gid) {
        _cleanup_close_ int fd = -EBADF;
        char proc[64];
        struct stat st;

        fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "%s: could not open %s: %m", what, path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "%s: could not stat %s: %m", what, path);
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(EBADFD, "%s: %s was replaced by something else", what, path);
        if ((st.st_uid != uid || st.st_gid != gid) && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return log_error_errno(
                        errno,
                        "%s: could not give %s to %u:%u: %m",
                        what,
                        path,
                        (unsigned) uid,
                        (unsigned) gid);
        if ((st.st_mode & 07777) != 0600) {
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                if (chmod(proc, 0600) < 0)
                        return log_error_errno(errno, "%s: could not make %s mode 0600: %m", what, path);
        }
        return 0;
}

SessionHttpSocket *session_http_socket_free(SessionHttpSocket *s) {
        SessionHttp *h;

        if (!s)
                return NULL;
        h = s->http;

        /* Its connections are closed: libmicrohttpd notices the shutdown. */
        for (Conn *conn = h->conns; conn; conn = conn->next)
                if (conn->socket == s) {
                        conn->socket = NULL;
                        (void) shutdown(conn->fd, SHUT_RDWR);
                }
        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->listen_fd);
        if (s->socket_path && unlink(s->socket_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "%s: could not remove %s: %m", h->ops->name, s->socket_path);
        LIST_REMOVE(h->sockets, s);
        free(s->socket_path);
        free(s->id);
        session_http_kick(h);
        return mfree(s);
}

void session_http_socket_set_admit(
        SessionHttpSocket *s, int (*admit)(int fd, void *userdata), void *userdata) {
        s->admit = admit;
        s->admit_userdata = userdata;
}

int session_http_listen(
        SessionHttp *h,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        void *session,
        SessionHttpSocket **ret) {
        _cleanup_(session_http_socket_freep) SessionHttpSocket *s = NULL;
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dfd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *what, *name;
        mode_t old_umask;
        int r;

        if (!h || isempty(session_id) || isempty(socket_path) || socket_path[0] != '/' || !ret)
                return -EINVAL;
        what = h->ops->name;
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "%s: socket path %s is too long", what, socket_path);
        memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);

        s = calloc(1, sizeof(SessionHttpSocket));
        if (!s)
                return -ENOMEM;
        *s = (SessionHttpSocket){ .http = h, .session = session, .listen_fd = -EBADF };
        LIST_PREPEND(h->sockets, s);
        s->id = strdup(session_id);
        name = strrchr(socket_path, '/') + 1;
        if (isempty(name))
                return -EINVAL;
        dir = strndup(socket_path, (size_t) (name - socket_path));
        if (!s->id || !dir)
                return -ENOMEM;

        dfd = open(dir, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_PATH);
        if (dfd < 0)
                return log_error_errno(errno, "%s: could not open %s: %m", what, dir);
        /* A socket left by an earlier daemon: nobody listens on it any more. */
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return log_error_errno(errno, "%s: could not remove stale %s: %m", what, socket_path);

        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return log_error_errno(errno, "%s: could not create a socket: %m", what);

        /* Created 0600 from the start. The daemon has one thread, so the process-wide umask is safe. */
        old_umask = umask(0177);
        r = bind(s->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        (void) umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "%s: could not bind %s: %m", what, socket_path);
        s->socket_path = strdup(socket_path);
        if (!s->socket_path) {
                (void) unlink(socket_path);
                return -ENOMEM;
        }

        r = fix_socket(what, dfd, name, socket_path, uid, gid);
        if (r < 0)
                return r;
        if (listen(s->listen_fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "%s: could not listen on %s: %m", what, socket_path);

        r = sd_event_add_io(h->event, &s->listen_source, s->listen_fd, EPOLLIN, on_socket_listen, s);
        if (r < 0)
                return log_error_errno(r, "%s: could not watch %s: %m", what, socket_path);
        (void) sd_event_source_set_description(s->listen_source, "session-http-listen");

        *ret = TAKE_PTR(s);
        return 0;
}

/* ---- the server ---- */

SessionHttp *session_http_free(SessionHttp *h) {
        if (!h)
                return NULL;
        while (h->sockets)
                session_http_socket_free(h->sockets);
        if (h->mhd)
                for (unsigned i = 0; i < 3; i++)
                        (void) MHD_run(h->mhd);
        mhd_event_detach(&h->mhd_event);
        if (h->mhd)
                MHD_stop_daemon(h->mhd); /* closes the connections: their requests are completed */
        while (h->conns)
                conn_free(h->conns);
        sd_event_unref(h->event);
        return mfree(h);
}

int session_http_new(sd_event *event, const SessionHttpOps *ops, void *userdata, SessionHttp **ret) {
        _cleanup_(session_http_freep) SessionHttp *h = NULL;
        int r;

        if (!event || !ops || !ops->open || !ops->too_large || !ops->start || !ops->completed || !ret)
                return -EINVAL;
        h = calloc(1, sizeof(SessionHttp));
        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(event);
        h->ops = ops;
        h->userdata = userdata;

        h->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
                0,
                NULL,
                NULL,
                on_access,
                h,
                MHD_OPTION_EXTERNAL_LOGGER,
                on_mhd_log,
                h,
                MHD_OPTION_URI_LOG_CALLBACK,
                on_uri,
                h,
                MHD_OPTION_NOTIFY_COMPLETED,
                on_completed,
                h,
                MHD_OPTION_NOTIFY_CONNECTION,
                on_connection,
                h,
                MHD_OPTION_CONNECTION_TIMEOUT,
                CONNECTION_TIMEOUT_SEC,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                (size_t) (128 * 1024),
                MHD_OPTION_END);
        if (!h->mhd)
                return log_error_errno(EIO, "%s: libmicrohttpd did not start.", ops->name);

        r = mhd_event_attach(&h->mhd_event, event, h->mhd);
        if (r < 0)
                return log_error_errno(
                        r, "%s: failed to add libmicrohttpd to the event loop: %m", ops->name);
        (void) sd_event_source_set_description(h->mhd_event.io, "session-http-mhd");

        *ret = TAKE_PTR(h);
        return 0;
}

/* ---- the answer, streamed ---- */

void session_http_headers_free(SessionHttpHeader *headers, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(headers[i].name);
                free(headers[i].value);
        }
        free(headers);
}

bool session_http_header_forwarded(const char *name, const char *const *dropped, size_t n_dropped) {
        if (isempty(name) || strncasecmp(name, "proxy-", 6) == 0)
                return false;
        for (size_t i = 0; i < n_dropped; i++)
                if (strcasecmp(name, dropped[i]) == 0)
                        return false;
        return true;
}

int session_http_header_line(
        const char *buffer,
        size_t n,
        SessionHttpHeader **headers,
        size_t *n_headers,
        size_t max,
        long *ret_status) {
        size_t len = n, vlen;
        const char *colon, *v;
        SessionHttpHeader *nh;

        while (len > 0 && (buffer[len - 1] == '\n' || buffer[len - 1] == '\r'))
                len--;
        if (len >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
                /* A status line starts a new header block (after a 1xx). */
                const char *sp = memchr(buffer, ' ', len);

                *ret_status = sp ? strtol(sp + 1, NULL, 10) : 0;
                return SESSION_HTTP_HEADER_STATUS;
        }
        if (len == 0)
                return SESSION_HTTP_HEADER_END;

        colon = memchr(buffer, ':', len);
        if (!colon || colon == buffer || *n_headers >= max)
                return SESSION_HTTP_HEADER_FIELD;
        nh = reallocarray(*headers, *n_headers + 1, sizeof(SessionHttpHeader));
        if (!nh)
                return -ENOMEM;
        *headers = nh;
        v = colon + 1;
        vlen = len - (size_t) (v - buffer);
        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
        }
        nh[*n_headers].name = strndup(buffer, (size_t) (colon - buffer));
        nh[*n_headers].value = strndup(v, vlen);
        if (!nh[*n_headers].name || !nh[*n_headers].value) {
                free(nh[*n_headers].name);
                free(nh[*n_headers].value);
                return -ENOMEM;
        }
        (*n_headers)++;
        return SESSION_HTTP_HEADER_FIELD;
}

struct MHD_Response *session_http_stream_response(
        const SessionHttpHeader *headers,
        size_t n_headers,
        const char *method,
        long status,
        bool (*forwarded)(const char *name),
        MHD_ContentReaderCallback reader,
        void *cls,
        MHD_ContentReaderFreeCallback free_cb) {
        const char *content_length = NULL;
        struct MHD_Response *response;
        uint64_t size = MHD_SIZE_UNKNOWN;

        for (size_t i = 0; i < n_headers; i++)
                if (strcasecmp(headers[i].name, "content-length") == 0)
                        content_length = headers[i].value;
        if (content_length && !streq(method, "HEAD") && status != 204 && status != 304) {
                uint64_t v;

                if (safe_atou64(content_length, &v) >= 0)
                        size = v;
        }

        response = MHD_create_response_from_callback(size, 16 * 1024, reader, cls, free_cb);
        if (!response)
                return NULL;
        for (size_t i = 0; i < n_headers; i++)
                if (forwarded(headers[i].name))
                        (void) MHD_add_response_header(response, headers[i].name, headers[i].value);
        return response;
}

size_t session_http_stream_write(SessionHttpStream *s, size_t max, const char *ptr, size_t n) {
        size_t used = s->end - s->start;

        if (used > 0 && used + n > max) {
                s->paused = true;
                return CURL_WRITEFUNC_PAUSE;
        }
        if (s->start > 0 && s->end + n > s->allocated) {
                memmove(s->buf, s->buf + s->start, used);
                s->start = 0;
                s->end = used;
        }
        if (s->end + n > s->allocated) {
                size_t a = s->allocated ?: 16384;
                char *b;

                while (a < s->end + n)
                        a *= 2;
                b = realloc(s->buf, a);
                if (!b)
                        return 0;
                s->buf = b;
                s->allocated = a;
        }
        memcpy(s->buf + s->end, ptr, n);
        s->end += n;
        return n;
}

ssize_t session_http_stream_read(
        SessionHttpStream *s, SessionHttpRequest *req, CURL *easy, size_t max, char *buf, size_t size) {
        size_t n = s->end - s->start;

        if (n > 0) {
                if (n > size)
                        n = size;
                memcpy(buf, s->buf + s->start, n);
                s->start += n;
                if (s->start == s->end)
                        s->start = s->end = 0;
                /* Drained enough: let curl go on (it may hand over what it holds right here). */
                if (s->paused && easy && s->end - s->start <= max / 2) {
                        s->paused = false;
                        (void) curl_easy_pause(easy, CURLPAUSE_CONT);
                }
                return (ssize_t) n;
        }
        if (s->done)
                return s->result == CURLE_OK ? MHD_CONTENT_READER_END_OF_STREAM
                                             : MHD_CONTENT_READER_END_WITH_ERROR;
        /* Nothing yet: wait off libmicrohttpd's loop until curl brings more. */
        req->suspended = true;
        MHD_suspend_connection(req->connection);
        return 0;
}

void session_http_stream_done(SessionHttpStream *s) {
        s->buf = mfree(s->buf);
        s->start = s->end = s->allocated = 0;
}

void session_http_upstream_reset(SessionHttpUpstream *u) {
        session_http_headers_free(u->headers, u->n_headers);
        u->headers = NULL;
        u->n_headers = 0;
        u->status = 0;
        u->answering = false;
        u->stream.done = false;
        u->stream.paused = false;
        u->stream.start = u->stream.end = 0;
}

void session_http_upstream_done(SessionHttpUpstream *u, CurlGlue *glue) {
        if (u->easy) {
                if (u->transfer && glue)
                        curl_glue_remove(glue, u->easy);
                curl_easy_cleanup(u->easy);
                u->easy = NULL;
        }
        u->transfer = false;
        session_http_upstream_reset(u);
        curl_slist_free_all(u->request_headers);
        u->request_headers = NULL;
        session_http_stream_done(&u->stream);
}

int session_http_upstream_header(SessionHttpUpstream *u, const char *buffer, size_t n, size_t max) {
        long status;
        int r;

        r = session_http_header_line(buffer, n, &u->headers, &u->n_headers, max, &status);
        if (r == SESSION_HTTP_HEADER_STATUS) {
                session_http_upstream_reset(u);
                u->status = status;
        }
        return r;
}

void session_http_upstream_answer(
        SessionHttpUpstream *u, SessionHttpRequest *req, struct MHD_Response *response) {
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = response;
        req->status = (unsigned) u->status;
        u->answering = true;
}

ssize_t session_http_upstream_read(
        SessionHttpUpstream *u, SessionHttpRequest *req, size_t max, char *buf, size_t size) {
        return session_http_stream_read(&u->stream, req, u->transfer ? u->easy : NULL, max, buf, size);
}

/* ---- the call upstream ---- */

int session_http_slist_add(struct curl_slist **list, const char *line) {
        struct curl_slist *l = curl_slist_append(*list, line);

        if (!l)
                return -ENOMEM;
        *list = l;
        return 0;
}

int session_http_easy_new(
        const char *url,
        struct curl_slist *headers,
        curl_write_callback on_header,
        curl_write_callback on_write,
        void *userdata,
        const char *method,
        const char *body,
        size_t body_len,
        CURL **ret) {
        CURL *easy;
        bool ok;

        easy = curl_easy_init();
        if (!easy)
                return -ENOMEM;
        ok = curl_easy_setopt(easy, CURLOPT_URL, url) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_HEADERDATA, userdata) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_WRITEDATA, userdata) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SEC) == CURLE_OK &&
                curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
#if LIBCURL_VERSION_NUM >= 0x075500
                curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
#else
                curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)) ==
                        CURLE_OK;
#endif
        if (ok) {
                if (streq(method, "GET"))
                        ok = curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) == CURLE_OK;
                else if (streq(method, "HEAD"))
                        ok = curl_easy_setopt(easy, CURLOPT_NOBODY, 1L) == CURLE_OK;
                else
                        ok = curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body ?: "") == CURLE_OK &&
                                curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len) ==
                                        CURLE_OK &&
                                (streq(method, "POST") ||
                                 curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK);
        }
        if (!ok) {
                curl_easy_cleanup(easy);
                return -EINVAL;
        }
        *ret = easy;
        return 0;
}

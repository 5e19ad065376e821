/* The model proxy (see model-proxy.h): per-session unix sockets accepted here and handed to one
 * libmicrohttpd daemon (no thread, no listening socket, driven from sd-event through its epoll fd), and
 * libmicrohttpd's callbacks, which read a request and hand it to model-request.c: it admits the call
 * (model-admission.c), makes it upstream through libcurl multi on the same loop (curl-glue) and streams
 * the answer back. A request's session comes from the socket its connection was accepted on
 * (fd -> ProxyConn, found again in libmicrohttpd's connection-start notification). */
#define _GNU_SOURCE
#include "model-proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "list.h"
#include "model-proxy-internal.h"
#include "time-util.h"
#include "util.h"

#define ACCEPT_PER_CALLBACK 16U     /* connections accepted per io event of a session socket */
#define CONNECTION_TIMEOUT_SEC 600U /* an idle keep-alive connection is closed after this */
#define DEFAULT_MAX_IN_FLIGHT 4U
#define DEFAULT_REQUESTS_PER_MINUTE 50U
#define DEFAULT_QUEUE_MAX 256U

static void explicit_wipe(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
}

/* ---- libmicrohttpd callbacks ---- */

static ProxyConn *connection_context(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        return ci ? ci->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *connection) {
        ProxyConn *conn = connection_context(connection);

        /* The raw request target, query and all (the access handler only sees the decoded path). */
        if (conn) {
                free(conn->target);
                conn->target = uri ? strdup(uri) : NULL;
        }
        return NULL;
}

static enum MHD_Result request_queue_answer(ProxyRequest *req) {
        enum MHD_Result ret;

        ret = MHD_queue_response(req->connection, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        req->queued = true;
        return ret;
}

/* A refusal made from the headers alone is sent at once only when the body is large or of unknown
 * length. A small declared body is read (and dropped) first: answering before it leaves the client
 * writing into a connection that closes, and it then sees a reset instead of the refusal. */
static bool refusal_waits_for_body(struct MHD_Connection *connection, const ProxyRequest *req) {
        const char *cl;
        uint64_t length;

        if (req->status == 413)
                return false;
        cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!cl || safe_atou64(cl, &length) < 0)
                return false;
        return length > 0 && length <= MODEL_PROXY_REFUSED_BODY_DRAIN;
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
        ModelProxy *p = cls;
        ProxyRequest *req = *con_cls;

        if (!req) {
                ProxyConn *conn = connection_context(connection);
                const char *cl;
                uint64_t length;
                int r;

                req = proxy_request_new(p, connection, conn, url, method);
                if (!req)
                        return MHD_NO;
                *con_cls = req;

                if (!req->session)
                        proxy_request_fail(
                                req,
                                503,
                                "api_error",
                                NULL,
                                "cc-docker: this session's model proxy is closed");
                else if (!model_target_valid(req->target))
                        proxy_request_fail(
                                req,
                                404,
                                "not_found_error",
                                NULL,
                                "cc-docker: the model proxy forwards only /v1/... paths");
                else if ((r = model_endpoint_check(method, req->path)) == -EACCES) {
                        request_log(
                                req,
                                LOG_WARNING,
                                "call refused: %s %.200s is not forwarded",
                                method,
                                req->path);
                        proxy_request_fail(
                                req,
                                403,
                                "permission_error",
                                NULL,
                                "cc-docker: the model proxy does not forward %.200s: only " MODEL_ENDPOINTS_ALLOWED
                                " are allowed",
                                req->path);
                } else if (r < 0) {
                        request_log(
                                req, LOG_WARNING, "call refused: method %s on %.200s", method, req->path);
                        proxy_request_fail(
                                req,
                                405,
                                "invalid_request_error",
                                NULL,
                                "cc-docker: method %s is not allowed on %.200s: only " MODEL_ENDPOINTS_ALLOWED
                                " are allowed",
                                method,
                                req->path);
                } else {
                        cl = MHD_lookup_connection_value(
                                connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                        if (cl && (safe_atou64(cl, &length) < 0 || length > MODEL_PROXY_BODY_MAX))
                                proxy_request_fail(
                                        req,
                                        413,
                                        "request_too_large",
                                        NULL,
                                        "cc-docker: the request body is larger than %u bytes",
                                        MODEL_PROXY_BODY_MAX);
                }
                if (req->response && !refusal_waits_for_body(connection, req))
                        return request_queue_answer(req);
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;
                char *b;

                *upload_data_size = 0;
                if (req->queued || req->response)
                        return MHD_YES; /* already answered: the rest is dropped */
                if (req->body_len + n > MODEL_PROXY_BODY_MAX) {
                        proxy_request_fail(
                                req,
                                413,
                                "request_too_large",
                                NULL,
                                "cc-docker: the request body is larger than %u bytes",
                                MODEL_PROXY_BODY_MAX);
                        return request_queue_answer(req);
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
                return request_queue_answer(req);
        if (req->state == REQUEST_READING) {
                req->received_usec = now_usec(CLOCK_MONOTONIC);
                proxy_request_start(req);
        }
        if (req->response)
                return request_queue_answer(req);
        if (!req->suspended) {
                req->suspended = true;
                MHD_suspend_connection(connection);
        }
        return MHD_YES;
}

static void on_completed(
        void *cls, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode toe) {
        ModelProxy *p = cls;
        ProxyRequest *req = *con_cls;

        if (!req)
                return;
        *con_cls = NULL;

        req->connection = NULL;
        req->suspended = false;
        req->complete = req->queued && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
        proxy_request_dequeue(req);
        if (req->transfer) {
                /* The client went away: so does the call. */
                proxy_request_cancel_transfer(req);
                model_admission_pump(&p->admission);
        }
        if (!req->done_usec)
                req->done_usec = now_usec(CLOCK_MONOTONIC);
        req->state = REQUEST_DONE;
        proxy_request_record(req);
        proxy_request_unref(req);
}

static ProxyConn *proxy_conn_free(ProxyConn *conn) {
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
        ModelProxy *p = cls;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

                if (!ci)
                        return;
                for (ProxyConn *conn = p->conns; conn; conn = conn->next)
                        if (conn->fd == ci->connect_fd && !conn->started) {
                                conn->started = true;
                                *socket_context = conn;
                                return;
                        }
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
                proxy_conn_free(*socket_context);
                *socket_context = NULL;
        }
}

static void on_mhd_log(void *cls, const char *format, va_list ap) {
        _cleanup_free_ char *text = NULL;

        if (vasprintf(&text, format, ap) < 0)
                return;
        text[strcspn(text, "\n")] = '\0';
        log_debug("model proxy: libmicrohttpd: %s", text);
}

/* ---- sessions ---- */

static int on_session_listen(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        ModelProxySession *s = userdata;
        ModelProxy *p = s->proxy;

        for (unsigned i = 0; i < ACCEPT_PER_CALLBACK; i++) {
                struct sockaddr_un sa = {};
                socklen_t salen = sizeof(sa);
                ProxyConn *conn;
                int cfd;

                cfd = accept4(s->listen_fd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_struct(
                                        LOG_WARNING,
                                        "MESSAGE=session %s: model proxy: accept failed: %m",
                                        s->id,
                                        "CCDOCKER_SESSION=%s",
                                        s->id,
                                        NULL);
                        break;
                }
                if (s->admit && s->admit(cfd, s->admit_userdata) <= 0) {
                        safe_close(cfd);
                        continue;
                }
                if (s->n_connections >= MODEL_PROXY_CONNECTIONS_MAX) {
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: model proxy: too many connections, refusing one",
                                s->id,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                        safe_close(cfd);
                        continue;
                }

                conn = calloc(1, sizeof(ProxyConn));
                if (!conn) {
                        safe_close(cfd);
                        break;
                }
                *conn = (ProxyConn){ .proxy = p, .session = s, .fd = cfd };
                LIST_PREPEND(p->conns, conn);
                s->n_connections++;

                /* libmicrohttpd owns (and closes) the fd from here, whatever it answers. */
                if (MHD_add_connection(p->mhd, cfd, (const struct sockaddr *) &sa, salen) != MHD_YES) {
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: model proxy: libmicrohttpd refused a connection: %m",
                                s->id,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                        for (ProxyConn *c = p->conns; c; c = c->next)
                                if (c == conn && !c->started) {
                                        proxy_conn_free(conn);
                                        break;
                                }
                }
        }
        proxy_mhd_kick(p);
        return 0;
}

/* The socket's owner and mode, set on the inode checked to be a socket: the directory belongs to the
 * container's user, who could put a symlink in its place between bind() and a chmod by path. */
static int fix_socket(int dfd, const char *name, const char *path, uid_t uid, gid_t gid) {
        _cleanup_close_ int fd = -EBADF;
        char proc[64];
        struct stat st;

        fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "model proxy: could not open %s: %m", path);
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "model proxy: could not stat %s: %m", path);
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(EBADFD, "model proxy: %s was replaced by something else", path);
        if ((st.st_uid != uid || st.st_gid != gid) && fchownat(fd, "", uid, gid, AT_EMPTY_PATH) < 0)
                return log_error_errno(
                        errno,
                        "model proxy: could not give %s to %u:%u: %m",
                        path,
                        (unsigned) uid,
                        (unsigned) gid);
        if ((st.st_mode & 07777) != 0600) {
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
                if (chmod(proc, 0600) < 0)
                        return log_error_errno(errno, "model proxy: could not make %s mode 0600: %m", path);
        }
        return 0;
}

ModelProxySession *model_proxy_session_free(ModelProxySession *s) {
        ProxyRequest *req, *next;
        ModelProxy *p;

        if (!s)
                return NULL;
        p = s->proxy;

        /* Its connections are closed (libmicrohttpd notices the shutdown), its calls ended. */
        for (ProxyConn *conn = p->conns; conn; conn = conn->next)
                if (conn->session == s) {
                        conn->session = NULL;
                        (void) shutdown(conn->fd, SHUT_RDWR);
                }
        s->n_connections = 0;
        LIST_FOREACH_SAFE(req, next, p->requests) {
                if (req->session != s)
                        continue;
                proxy_request_ref(req);
                req->session = NULL;
                if (req->state == REQUEST_QUEUED) {
                        proxy_request_dequeue(req);
                        proxy_request_fail(req, 503, "api_error", NULL, "cc-docker: the session ended");
                } else if (req->transfer) {
                        proxy_request_cancel_transfer(req);
                        req->upstream_done = true;
                        req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                        req->state = REQUEST_DONE;
                        if (!req->response && !req->queued)
                                proxy_request_fail(
                                        req, 503, "api_error", NULL, "cc-docker: the session ended");
                        else
                                proxy_request_wake(req);
                }
                proxy_request_unref(req);
        }
        model_admission_pump(&p->admission);

        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->listen_fd);
        if (s->socket_path && unlink(s->socket_path) < 0 && errno != ENOENT)
                log_debug("model proxy: could not remove %s: %m", s->socket_path);
        LIST_REMOVE(p->sessions, s);
        free(s->socket_path);
        free(s->id);
        proxy_mhd_kick(p);
        return mfree(s);
}

void model_proxy_session_set_admit(
        ModelProxySession *s, int (*admit)(int fd, void *userdata), void *userdata) {
        s->admit = admit;
        s->admit_userdata = userdata;
}

int model_proxy_listen(
        ModelProxy *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        ModelProxySession **ret) {
        _cleanup_(model_proxy_session_freep) ModelProxySession *s = NULL;
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dfd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *name;
        mode_t old_umask;
        int r;

        if (!p || isempty(session_id) || isempty(socket_path) || socket_path[0] != '/' || !ret)
                return -EINVAL;
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "model proxy: socket path %s is too long", socket_path);
        memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);

        s = calloc(1, sizeof(ModelProxySession));
        if (!s)
                return -ENOMEM;
        *s = (ModelProxySession){ .proxy = p, .listen_fd = -EBADF };
        LIST_PREPEND(p->sessions, s);
        s->id = strdup(session_id);
        name = strrchr(socket_path, '/') + 1;
        dir = strndup(socket_path, (size_t) (name - socket_path));
        if (!s->id || !dir)
                return -ENOMEM;
        if (isempty(name))
                return -EINVAL;

        dfd = open(dir, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_PATH);
        if (dfd < 0)
                return log_error_errno(errno, "model proxy: could not open %s: %m", dir);
        /* A socket left by an earlier daemon: nobody listens on it any more. */
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return log_error_errno(errno, "model proxy: could not remove stale %s: %m", socket_path);

        s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return log_error_errno(errno, "model proxy: could not create a socket: %m");

        /* Created 0600 from the start. The daemon has one thread, so the process-wide umask is safe. */
        old_umask = umask(0177);
        r = bind(s->listen_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0;
        (void) umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "model proxy: could not bind %s: %m", socket_path);
        s->socket_path = strdup(socket_path);
        if (!s->socket_path) {
                (void) unlink(socket_path);
                return -ENOMEM;
        }

        r = fix_socket(dfd, name, socket_path, uid, gid);
        if (r < 0)
                return r;
        if (listen(s->listen_fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "model proxy: could not listen on %s: %m", socket_path);

        r = sd_event_add_io(p->event, &s->listen_source, s->listen_fd, EPOLLIN, on_session_listen, s);
        if (r < 0)
                return log_error_errno(r, "model proxy: could not watch %s: %m", socket_path);
        (void) sd_event_source_set_description(s->listen_source, "model-proxy-listen");

        *ret = TAKE_PTR(s);
        return 0;
}

void model_proxy_session_reserved(const ModelProxySession *s, ModelReservation *ret) {
        if (!ret)
                return;
        *ret = s ? s->reserved : (ModelReservation){};
}

void model_proxy_session_totals(const ModelProxySession *s, ModelSessionTotals *ret) {
        if (!ret)
                return;
        *ret = s ? s->totals : (ModelSessionTotals){};
}

unsigned model_proxy_in_flight(const ModelProxy *p) {
        return p ? p->admission.in_flight : 0;
}

unsigned model_proxy_in_flight_peak(const ModelProxy *p) {
        return p ? p->admission.in_flight_peak : 0;
}

/* ---- the proxy ---- */

ModelProxy *model_proxy_free(ModelProxy *p) {
        ProxyRequest *req, *next;

        if (!p)
                return NULL;

        while (p->sessions)
                model_proxy_session_free(p->sessions);

        /* Whatever is left (connections of no session): answered, so nothing stays suspended, since
         * libmicrohttpd must not be stopped with suspended connections. */
        LIST_FOREACH_SAFE(req, next, p->requests) {
                proxy_request_ref(req);
                proxy_request_dequeue(req);
                if (req->transfer)
                        proxy_request_cancel_transfer(req);
                if (req->connection && !req->queued && !req->response)
                        proxy_request_fail(
                                req, 503, "api_error", NULL, "cc-docker: the model proxy is stopping");
                if (!req->upstream_done) {
                        req->upstream_done = true;
                        req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                }
                proxy_request_wake(req);
                proxy_request_unref(req);
        }
        if (p->mhd)
                for (unsigned i = 0; i < 3; i++)
                        (void) MHD_run(p->mhd);

        mhd_event_detach(&p->mhd_event);
        model_admission_done(&p->admission);
        if (p->mhd)
                MHD_stop_daemon(p->mhd); /* closes the connections: their requests are released */
        while (p->conns)
                proxy_conn_free(p->conns);
        /* Requests still referenced by nothing but a transfer were released with it; any left over
         * lose their link to the proxy. */
        LIST_FOREACH_SAFE(req, next, p->requests) {
                LIST_REMOVE(p->requests, req);
                req->proxy = NULL;
        }
        curl_glue_unref(p->glue);
        sd_event_unref(p->event);

        explicit_wipe(p->credential_header);
        free(p->credential_header);
        free(p->base_url);
        model_prices_free(p->prices, p->n_prices);
        return mfree(p);
}

int model_proxy_new(sd_event *event, const ModelProxyConfig *cfg, ModelProxy **ret) {
        _cleanup_(model_proxy_freep) ModelProxy *p = NULL;
        size_t len;
        int r;

        if (!event || !cfg || !ret || isempty(cfg->upstream_base_url))
                return -EINVAL;
        if (!http_url_is_valid(cfg->upstream_base_url))
                return log_error_errno(EINVAL, "model proxy: the upstream URL must be http:// or https://");
        if (cfg->credential_kind != MODEL_CREDENTIAL_NONE && isempty(cfg->credential))
                return -EINVAL;

        p = calloc(1, sizeof(ModelProxy));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        p->credential_kind = cfg->credential_kind;
        p->on_usage = cfg->on_usage;
        p->budget = cfg->budget;
        p->userdata = cfg->userdata;

        p->base_url = strdup(cfg->upstream_base_url);
        if (!p->base_url)
                return -ENOMEM;
        len = strlen(p->base_url);
        while (len > 0 && p->base_url[len - 1] == '/')
                p->base_url[--len] = '\0';

        if (cfg->credential_kind == MODEL_CREDENTIAL_API_KEY)
                r = asprintf(&p->credential_header, "x-api-key: %s", cfg->credential);
        else if (cfg->credential_kind == MODEL_CREDENTIAL_OAUTH)
                r = asprintf(&p->credential_header, "Authorization: Bearer %s", cfg->credential);
        else
                r = 0;
        if (r < 0) {
                p->credential_header = NULL;
                return -ENOMEM;
        }

        if (cfg->n_prices > 0) {
                p->prices = calloc(cfg->n_prices, sizeof(ModelPrice));
                if (!p->prices)
                        return -ENOMEM;
                for (size_t i = 0; i < cfg->n_prices; i++) {
                        p->prices[i] = cfg->prices[i];
                        p->prices[i].model_prefix = strdup(strempty(cfg->prices[i].model_prefix));
                        if (!p->prices[i].model_prefix)
                                return -ENOMEM;
                        p->n_prices++;
                }
        }

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
                return log_error_errno(EIO, "model proxy: libmicrohttpd did not start.");

        r = mhd_event_attach(&p->mhd_event, event, p->mhd);
        if (r >= 0)
                r = model_admission_init(
                        &p->admission,
                        event,
                        cfg->max_in_flight ?: DEFAULT_MAX_IN_FLIGHT,
                        cfg->max_in_flight_per_session,
                        cfg->requests_per_minute ?: DEFAULT_REQUESTS_PER_MINUTE,
                        cfg->queue_max ?: DEFAULT_QUEUE_MAX,
                        proxy_request_admitted,
                        p);
        if (r < 0)
                return log_error_errno(r, "model proxy: failed to add libmicrohttpd to the event loop: %m");
        (void) sd_event_source_set_description(p->mhd_event.io, "model-proxy-mhd");

        *ret = TAKE_PTR(p);
        return 0;
}

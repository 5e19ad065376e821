/* The model proxy (see model-proxy.h): its sessions, each a unix socket of the per-session HTTP server
 * (session-http.c: libmicrohttpd on sd-event, the request read with its body bounded), and the server's
 * callbacks, which refuse what is refused from the headers and hand the rest to model-request.c: it
 * admits the call (model-admission.c), makes it upstream through libcurl multi on the same loop
 * (curl-glue) and streams the answer back. */
#define _GNU_SOURCE
#include "model-proxy.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "list.h"
#include "model-proxy-internal.h"
#include "time-util.h"
#include "util.h"

#define DEFAULT_MAX_IN_FLIGHT 4U
#define DEFAULT_REQUESTS_PER_MINUTE 50U
#define DEFAULT_QUEUE_MAX 256U

static void explicit_wipe(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
}

/* ---- the server's callbacks (session-http.h) ---- */

static ProxyRequest *request_of(SessionHttpRequest *http) {
        return (ProxyRequest *) ((char *) http - offsetof(ProxyRequest, http));
}

static SessionHttpRequest *on_open(
        void *userdata,
        struct MHD_Connection *connection,
        void *session,
        const char *target,
        const char *url,
        const char *method) {
        ModelProxy *p = userdata;
        ProxyRequest *req;
        int r;

        req = proxy_request_new(p, connection, session, target, url, method);
        if (!req)
                return NULL;

        if (!req->session)
                proxy_request_fail(
                        req, 503, "api_error", NULL, "cc-docker: this session's model proxy is closed");
        else if (!model_target_valid(req->target))
                proxy_request_fail(
                        req,
                        404,
                        "not_found_error",
                        NULL,
                        "cc-docker: the model proxy forwards only /v1/... paths");
        else if ((r = model_endpoint_check(method, req->path)) == -EACCES) {
                request_log(req, LOG_WARNING, "call refused: %s %.200s is not forwarded", method, req->path);
                proxy_request_fail(
                        req,
                        403,
                        "permission_error",
                        NULL,
                        "cc-docker: the model proxy does not forward %.200s: only " MODEL_ENDPOINTS_ALLOWED
                        " are allowed",
                        req->path);
        } else if (r < 0) {
                request_log(req, LOG_WARNING, "call refused: method %s on %.200s", method, req->path);
                proxy_request_fail(
                        req,
                        405,
                        "invalid_request_error",
                        NULL,
                        "cc-docker: method %s is not allowed on %.200s: only " MODEL_ENDPOINTS_ALLOWED
                        " are allowed",
                        method,
                        req->path);
        }
        return &req->http;
}

static void on_too_large(SessionHttpRequest *http) {
        proxy_request_fail(
                request_of(http),
                413,
                "request_too_large",
                NULL,
                "cc-docker: the request body is larger than %u bytes",
                MODEL_PROXY_BODY_MAX);
}

static void on_start(SessionHttpRequest *http) {
        ProxyRequest *req = request_of(http);

        req->received_usec = now_usec(CLOCK_MONOTONIC);
        proxy_request_start(req);
}

static void on_completed(SessionHttpRequest *http, bool complete) {
        ProxyRequest *req = request_of(http);
        ModelProxy *p = req->proxy;

        req->complete = complete;
        proxy_request_dequeue(req);
        if (req->up.transfer) {
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

static const SessionHttpOps http_ops = {
        .name = "model proxy",
        .body_max = MODEL_PROXY_BODY_MAX,
        .connections_max = MODEL_PROXY_CONNECTIONS_MAX,
        .open = on_open,
        .too_large = on_too_large,
        .start = on_start,
        .completed = on_completed,
};

/* ---- sessions ---- */

ModelProxySession *model_proxy_session_free(ModelProxySession *s) {
        ProxyRequest *req, *next;
        ModelProxy *p;

        if (!s)
                return NULL;
        p = s->proxy;

        /* Its calls are ended, its connections closed. */
        LIST_FOREACH_SAFE(req, next, p->requests) {
                if (req->session != s)
                        continue;
                proxy_request_ref(req);
                req->session = NULL;
                if (req->state == REQUEST_QUEUED) {
                        proxy_request_dequeue(req);
                        proxy_request_fail(req, 503, "api_error", NULL, "cc-docker: the session ended");
                } else if (req->up.transfer) {
                        proxy_request_cancel_transfer(req);
                        req->up.stream.done = true;
                        req->up.stream.result = CURLE_ABORTED_BY_CALLBACK;
                        req->state = REQUEST_DONE;
                        if (!req->http.response && !req->http.queued)
                                proxy_request_fail(
                                        req, 503, "api_error", NULL, "cc-docker: the session ended");
                        else
                                proxy_request_wake(req);
                }
                proxy_request_unref(req);
        }
        model_admission_pump(&p->admission);

        session_http_socket_free(s->socket);
        LIST_REMOVE(p->sessions, s);
        free(s->id);
        proxy_mhd_kick(p);
        return mfree(s);
}

void model_proxy_session_set_admit(
        ModelProxySession *s, int (*admit)(int fd, void *userdata), void *userdata) {
        session_http_socket_set_admit(s->socket, admit, userdata);
}

int model_proxy_listen(
        ModelProxy *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        ModelProxySession **ret) {
        _cleanup_(model_proxy_session_freep) ModelProxySession *s = NULL;
        int r;

        if (!p || isempty(session_id) || isempty(socket_path) || socket_path[0] != '/' || !ret)
                return -EINVAL;

        s = calloc(1, sizeof(ModelProxySession));
        if (!s)
                return -ENOMEM;
        *s = (ModelProxySession){ .proxy = p };
        LIST_PREPEND(p->sessions, s);
        s->id = strdup(session_id);
        if (!s->id)
                return -ENOMEM;

        r = session_http_listen(p->http, session_id, socket_path, uid, gid, s, &s->socket);
        if (r < 0)
                return r;

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
                if (req->up.transfer)
                        proxy_request_cancel_transfer(req);
                if (req->http.connection && !req->http.queued && !req->http.response)
                        proxy_request_fail(
                                req, 503, "api_error", NULL, "cc-docker: the model proxy is stopping");
                if (!req->up.stream.done) {
                        req->up.stream.done = true;
                        req->up.stream.result = CURLE_ABORTED_BY_CALLBACK;
                }
                proxy_request_wake(req);
                proxy_request_unref(req);
        }
        /* The last answers go out; libmicrohttpd stops and completes the requests left. */
        p->http = session_http_free(p->http);
        model_admission_done(&p->admission);
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

        r = session_http_new(event, &http_ops, p, &p->http);
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
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

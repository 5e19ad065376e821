/* The model proxy's own types, shared by its two halves: model-proxy.c (the proxy, its sessions and
 * connections, libmicrohttpd's callbacks) and model-request.c (one call: its admission, the call
 * upstream, the answer streamed back, the record). Nothing outside them includes this. */
#pragma once

#include <curl/curl.h>
#include <microhttpd.h>

#include "curl-glue.h"
#include "log.h"
#include "model-admission.h"
#include "model-proxy.h"
#include "session-http.h"

typedef struct ProxyRequest ProxyRequest;

struct ModelProxySession {
        ModelProxy *proxy;
        char *id;
        SessionHttpSocket *socket; /* model.sock, its connections (session-http.c) */
        ModelSessionTotals totals;
        ModelReservation reserved; /* of its admitted calls not yet recorded */
        ModelProxySession *prev, *next;
};

typedef enum RequestState {
        REQUEST_READING,  /* headers and body arriving */
        REQUEST_QUEUED,   /* waiting for admission */
        REQUEST_UPSTREAM, /* a transfer is running */
        REQUEST_DONE,     /* the answer is decided (streamed or an error); no transfer waits */
} RequestState;

struct ProxyRequest {
        unsigned n_ref;
        ModelProxy *proxy;
        ModelProxySession *session; /* NULL once the session is gone */
        char *session_id;
        SessionHttpRequest http; /* its connection, body and answer not yet queued */
        RequestState state;
        ProxyRequest *prev, *next;     /* the proxy's requests */
        ModelAdmissionEntry admission; /* in the admission queue while REQUEST_QUEUED */

        char *method, *target, *path;

        bool complete; /* the answer (http.response: the proxy's own, or the upstream's) went whole */

        /* upstream: the transfer, this attempt's answer (up.answering: being passed on) */
        SessionHttpUpstream up;
        unsigned attempts;
        bool retrying; /* this attempt's answer is thrown away; the request is retried */
        ModelUsageParser usage;

        uint64_t received_usec, done_usec;
        bool recorded;
        bool reserving;            /* reserved is held against the session's budgets */
        ModelReservation reserved; /* what it reserved when the budget let it through */
};

struct ModelProxy {
        sd_event *event;
        CurlGlue *glue;
        SessionHttp *http;

        char *base_url;
        ModelCredentialKind credential_kind;
        char *credential_header; /* "x-api-key: ..." or "Authorization: Bearer ..." */
        ModelPrice *prices;
        size_t n_prices;
        model_proxy_usage_t on_usage;
        model_proxy_budget_t budget;
        void *userdata;

        ModelAdmission admission;
        ProxyRequest *requests;
        ModelProxySession *sessions;
};

#define request_log(req, level, format, ...)                \
        log_struct(                                         \
                (level),                                    \
                "MESSAGE=session %s: model proxy: " format, \
                (req)->session_id,                          \
                ##__VA_ARGS__,                              \
                "CCDOCKER_SESSION=%s",                      \
                (req)->session_id,                          \
                NULL)

static inline void proxy_mhd_kick(ModelProxy *p) {
        session_http_kick(p->http);
}

/* model-request.c */

/* A request libmicrohttpd started on connection (session: the one of the socket it came on, or NULL;
 * target: its raw request target, or NULL for url), in p's list, with one reference, the connection's. */
ProxyRequest *proxy_request_new(
        ModelProxy *p,
        struct MHD_Connection *connection,
        ModelProxySession *session,
        const char *target,
        const char *url,
        const char *method);
ProxyRequest *proxy_request_ref(ProxyRequest *req);
ProxyRequest *proxy_request_unref(ProxyRequest *req);
/* Lets libmicrohttpd look at the request again: it queues an answer or sends more of one. */
void proxy_request_wake(ProxyRequest *req);
/* An answer of the proxy's own, Anthropic-shaped. extra: NULL-ended name, value pairs. */
void proxy_request_fail(
        ProxyRequest *req, unsigned status, const char *type, const char *extra[], const char *format, ...)
        __attribute__((format(printf, 5, 6)));
/* Ends the request's transfer, if it has one (the admission is not run again). */
void proxy_request_cancel_transfer(ProxyRequest *req);
/* The request is read: refuse it, or queue it for admission. */
void proxy_request_start(ProxyRequest *req);
/* Takes a queued request out of the admission queue (its call ended before its turn). */
void proxy_request_dequeue(ProxyRequest *req);
/* The journal record and the usage callback, once per request. */
void proxy_request_record(ProxyRequest *req);
/* The admission's start callback: the queued request's turn to go upstream. */
void proxy_request_admitted(ModelAdmissionEntry *e, void *userdata);

/* The model proxy (DESIGN.md decision 11, docs/model-proxy.md): the only way a session's container
 * reaches the model. Each session has a unix socket, model.sock in its runtime directory, that
 * ccdocker-init bridges to a loopback port the CLI's ANTHROPIC_BASE_URL points at; whatever arrives on
 * it speaks for that session. The proxy forwards only what it accounts for (POST /v1/messages and
 * /v1/messages/count_tokens) upstream with libcurl, adding the credential itself (the container only
 * holds a placeholder), streams the answer back as it arrives, reads the token usage out of it, and
 * applies admission control for the credential: at most max_in_flight calls upstream (and fewer of one
 * session), a token bucket of requests per minute, a bounded queue fair between sessions, and upstream
 * 429/529 retry-after honoured by pausing admission and retrying the call itself. Budgets are the
 * daemon's business: it is asked before each call, with what the call reserves, and told the usage of
 * each. Everything
 * runs on the daemon's sd-event loop (libmicrohttpd without a thread or a listening socket; libcurl
 * multi through curl-glue). The credential never appears in a log, an error or an answer.
 *
 * The proxy is model-proxy.c (sockets, connections, libmicrohttpd) and model-request.c (one call);
 * beside them model-admission.c, model-usage.c, model-prices.c and credentials.c (the credential). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "credentials.h"
#include "model-prices.h"
#include "model-usage.h"

#define MODEL_SOCKET_NAME "model.sock"

/* The MESSAGE_ID of the journal record written for each call (docs/model-proxy.md). */
#define MODEL_CALL_MESSAGE_ID "ba83ae243ad545989d5829bdc797f1a8"

/* The anthropic-beta value a Claude subscription OAuth token needs beside "Authorization: Bearer". */
#define MODEL_OAUTH_BETA "oauth-2025-04-20"

/* Bounds. */
#define MODEL_PROXY_BODY_MAX (32U * 1024 * 1024) /* a request body (the API's own limit) */
#define MODEL_PROXY_BUFFER_MAX (256U * 1024)     /* response bytes held for a slow client */
#define MODEL_PROXY_MAX_RETRIES 3                /* upstream 429/529 retried by the proxy */
#define MODEL_PROXY_RETRY_AFTER_MAX_SEC 60       /* a longer retry-after is passed to the client */
#define MODEL_PROXY_CONNECTIONS_MAX 32           /* open connections per session */

typedef struct ModelProxy ModelProxy;
typedef struct ModelProxySession ModelProxySession;

/* What an admitted call holds against its session's budgets until it ends: a bound of its tokens and
 * their cost (model_call_reservation()). */
typedef struct ModelReservation {
        uint64_t calls;
        uint64_t tokens;
        double cost_usd;
} ModelReservation;

/* One call, as the usage callback and the journal record see it. Strings are borrowed for the
 * callback's duration. */
typedef struct ModelCall {
        const char *session_id;
        const char *method;
        const char *path;  /* without the query */
        const char *model; /* from the response, else the request; "" when neither said */
        unsigned status;   /* the HTTP status sent to the client; 0 if none was (it went away first) */
        bool complete;     /* the client received the whole answer */
        bool upstream;     /* upstream was called (false for refusals by the proxy itself) */
        unsigned attempts; /* upstream attempts, retries included */
        ModelUsage usage;
        double cost_usd;
        uint64_t latency_usec;     /* from the end of the request to the end of the answer */
        uint64_t queued_usec;      /* of which waiting for admission (retries included) */
        ModelReservation reserved; /* what it held against the budgets, released as this is recorded */
} ModelCall;

typedef struct ModelSessionTotals {
        uint64_t calls;
        ModelUsage usage;
        double cost_usd;
} ModelSessionTotals;

/* Called once per call that got as far as a request, from the event loop. */
typedef void (*model_proxy_usage_t)(const ModelCall *call, void *userdata);
/* The budget hook's answer. */
typedef enum ModelBudgetVerdict {
        MODEL_BUDGET_ALLOW,  /* go; the reservation is held */
        MODEL_BUDGET_BUSY,   /* no room beside the calls running: 429 with retry-after, the client retries */
        MODEL_BUDGET_REFUSE, /* used up: 400, not retried */
} ModelBudgetVerdict;

/* Asked before each call goes upstream, with what the call would reserve. MODEL_BUDGET_ALLOW lets it
 * through (the reservation is then held for the session, model_proxy_session_reserved(), until the
 * call's record settles it to its real usage); the others refuse it, with *ret_reason (malloc'd, may
 * stay NULL) put in the error the client sees: it must hold no secret. */
typedef ModelBudgetVerdict (*model_proxy_budget_t)(
        const char *session_id, const ModelReservation *reserve, char **ret_reason, void *userdata);

typedef struct ModelProxyConfig {
        const char *upstream_base_url; /* "https://api.anthropic.com"; a path prefix is kept */
        ModelCredentialKind credential_kind;
        const char *credential;             /* copied; wiped from memory when the proxy is freed */
        unsigned max_in_flight;             /* 0: 4 */
        unsigned max_in_flight_per_session; /* 0: max(1, max_in_flight / 2) */
        unsigned requests_per_minute;       /* 0: 50 */
        unsigned queue_max;                 /* 0: 256 */
        const ModelPrice *prices;           /* copied; the longest matching prefix wins */
        size_t n_prices;
        model_proxy_usage_t on_usage; /* may be NULL */
        model_proxy_budget_t budget;  /* may be NULL: no budgets */
        void *userdata;
} ModelProxyConfig;

int model_proxy_new(sd_event *event, const ModelProxyConfig *cfg, ModelProxy **ret);
/* Ends every session (their sockets are removed) and every call. */
ModelProxy *model_proxy_free(ModelProxy *p);

/* Listens on socket_path (a stale socket there is replaced; mode 0600, owned by uid:gid, the
 * container's user; the directory is the caller's) for session_id. */
int model_proxy_listen(
        ModelProxy *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        ModelProxySession **ret);
/* Closes the socket (and removes it), the session's connections and its calls. */
ModelProxySession *model_proxy_session_free(ModelProxySession *s);
/* admit(fd, userdata) is asked of each new connection before it is read: <= 0 closes it unheard. */
void model_proxy_session_set_admit(
        ModelProxySession *s, int (*admit)(int fd, void *userdata), void *userdata);
/* What the session's calls used so far. */
void model_proxy_session_totals(const ModelProxySession *s, ModelSessionTotals *ret);
/* What the session's admitted calls that have not ended hold against its budgets. */
void model_proxy_session_reserved(const ModelProxySession *s, ModelReservation *ret);

/* Calls upstream now, and the most there were at once: for tests and status. */
unsigned model_proxy_in_flight(const ModelProxy *p);
unsigned model_proxy_in_flight_peak(const ModelProxy *p);

/* ---- The pure parts, exported for the unit tests ---- */

/* Output tokens reserved for a /v1/messages call whose max_tokens cannot be read. */
#define MODEL_RESERVE_OUTPUT_DEFAULT 128000U

/* What a call reserves: for POST /v1/messages, its body's size in bytes (a bound on its input tokens,
 * cache writes and reads included: no token is shorter than a byte) plus its max_tokens (a bound the
 * API enforces on its output; MODEL_RESERVE_OUTPUT_DEFAULT when the body does not say), at the prices
 * of its model with the input priced as cache writes (the dearest way in); count_tokens reserves
 * nothing (it costs nothing). */
void model_call_reservation(
        const char *path,
        const char *body,
        size_t body_len,
        const ModelPrice *prices,
        size_t n_prices,
        ModelReservation *ret);
/* Whether a budget lets one more call reserve reserve: the tree has used less than budget, and either
 * nothing else of it is reserved, or used + reserved + reserve fits in budget. So concurrent calls never
 * together overrun it, and the one call admitted alone overruns it by at most its own usage. A budget of
 * 0 is none. */
bool model_budget_admits(uint64_t budget, uint64_t used, uint64_t reserved, uint64_t reserve);
bool model_budget_admits_usd(double budget, double used, double reserved, double reserve);

/* Whether a request header of the client's is copied upstream (the credential, hop-by-hop headers,
 * Host and Content-Length, Accept-Encoding and anthropic-beta are not; the last is merged). */
bool model_request_header_forwarded(const char *name);
/* Whether an upstream answer's header is copied to the client (not the hop-by-hop ones). */
bool model_response_header_forwarded(const char *name);
/* The anthropic-beta value to send upstream: what the client sent (NULL: nothing), with add appended
 * unless it is already one of its comma-separated items. A new string; NULL when out of memory. */
char *model_beta_merge(const char *client, const char *add);
/* A retry-after value: whole or decimal seconds. -EINVAL for anything else (an HTTP date). */
int model_parse_retry_after(const char *value, uint64_t *ret_usec);
/* The endpoints the proxy forwards, and accounts for: nothing else reaches upstream. */
#define MODEL_ENDPOINTS_ALLOWED "POST /v1/messages and POST /v1/messages/count_tokens"
/* Whether method on path (without its query) is forwarded: 0 yes; -EACCES for a path that is not one
 * of MODEL_ENDPOINTS_ALLOWED (403); -EOPNOTSUPP for another method than POST on one that is (405). */
int model_endpoint_check(const char *method, const char *path);
/* Whether a request target is well-formed: "/v1/..." in printable ASCII, no "." or ".."
 * segment (also percent-encoded), no fragment. */
bool model_target_valid(const char *target);

static inline void model_proxy_freep(ModelProxy **p) {
        if (*p)
                model_proxy_free(*p);
}

static inline void model_proxy_session_freep(ModelProxySession **s) {
        if (*s)
                model_proxy_session_free(*s);
}

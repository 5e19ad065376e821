/* One call through the model proxy (see model-proxy.h): from the request libmicrohttpd has read, past
 * the budget and the admission queue (model-admission.c), to the call upstream through libcurl multi
 * (curl-glue), and the answer streamed back. curl's write callback fills a bounded buffer that
 * libmicrohttpd's content reader drains; a full buffer pauses the transfer, an empty one suspends the
 * connection. The usage parser (model-usage.c) reads along, and once the call is over its journal
 * record and the usage callback say what it used and cost (model-prices.c). Also the pure checks of
 * what passes: request targets, which headers are copied, anthropic-beta, retry-after. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "list.h"
#include "model-proxy-internal.h"
#include "time-util.h"
#include "util.h"

#define RESPONSE_HEADERS_MAX 128 /* upstream answer headers kept */
#define LOW_SPEED_TIME_SEC 600L  /* an upstream silent this long is given up (paused ones are not) */

static void request_reserve(ModelProxySession *s, const ModelReservation *r, int sign);

/* ---- requests ---- */

ProxyRequest *proxy_request_new(
        ModelProxy *p,
        struct MHD_Connection *connection,
        ModelProxySession *session,
        const char *target,
        const char *url,
        const char *method) {
        ProxyRequest *req;

        req = calloc(1, sizeof(ProxyRequest));
        if (!req)
                return NULL;
        *req = (ProxyRequest){
                .n_ref = 1,
                .proxy = p,
                .session = session,
                .http.connection = connection,
                .state = REQUEST_READING,
                .received_usec = now_usec(CLOCK_MONOTONIC),
        };
        LIST_PREPEND(p->requests, req);

        req->session_id = strdup(req->session ? req->session->id : "-");
        req->method = strdup(method);
        req->target = strdup(target ?: url);
        if (!req->session_id || !req->method || !req->target)
                return proxy_request_unref(req);
        req->path = strndup(req->target, strcspn(req->target, "?"));
        if (!req->path)
                return proxy_request_unref(req);
        return req;
}

ProxyRequest *proxy_request_ref(ProxyRequest *req) {
        req->n_ref++;
        return req;
}

static void request_reset_usage(ProxyRequest *req) {
        model_usage_parser_done(&req->usage);
        model_usage_parser_init(&req->usage, MODEL_USAGE_NONE);
}

static void request_reset_answer(ProxyRequest *req) {
        session_http_upstream_reset(&req->up);
        request_reset_usage(req);
}

ProxyRequest *proxy_request_unref(ProxyRequest *req) {
        if (!req || --req->n_ref > 0)
                return NULL;

        if (req->proxy)
                LIST_REMOVE(req->proxy->requests, req);
        session_http_request_release(&req->http);
        session_http_upstream_done(&req->up, req->proxy ? req->proxy->glue : NULL);
        model_usage_parser_done(&req->usage);
        free(req->method);
        free(req->target);
        free(req->path);
        free(req->session_id);
        return mfree(req);
}

void proxy_request_wake(ProxyRequest *req) {
        session_http_request_resume(&req->http);
        if (req->proxy)
                proxy_mhd_kick(req->proxy);
}

static int request_enqueue(ProxyRequest *req, bool front) {
        int r;

        r = model_admission_enqueue(&req->proxy->admission, &req->admission, req->session_id, front);
        if (r < 0)
                return r;
        req->state = REQUEST_QUEUED;
        return 0;
}

void proxy_request_dequeue(ProxyRequest *req) {
        if (req->state == REQUEST_QUEUED)
                model_admission_dequeue(&req->proxy->admission, &req->admission);
}

void proxy_request_fail(
        ProxyRequest *req, unsigned status, const char *type, const char *extra[], const char *format, ...) {
        _cleanup_free_ char *message = NULL, *body = NULL;
        json_t *j;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                message = NULL;

        j = json_pack(
                "{s:s, s:{s:s, s:s}}",
                "type",
                "error",
                "error",
                "type",
                type,
                "message",
                message ?: "cc-docker: model proxy error");
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);

        session_http_request_answer(&req->http, status, body);
        if (req->http.response)
                for (size_t i = 0; extra && extra[i] && extra[i + 1]; i += 2)
                        (void) MHD_add_response_header(req->http.response, extra[i], extra[i + 1]);
        req->state = REQUEST_DONE;
        proxy_request_wake(req);
}

void proxy_request_cancel_transfer(ProxyRequest *req) {
        ModelProxy *p = req->proxy;

        if (!req->up.transfer)
                return;
        curl_glue_remove(p->glue, req->up.easy);
        req->up.transfer = false;
        model_admission_end(&p->admission, &req->admission);
        proxy_request_unref(req); /* the transfer's reference */
}

void proxy_request_record(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        ModelUsageParser scan;
        ModelCall call;
        uint64_t end;
        int r;

        if (req->recorded || !p)
                return;
        req->recorded = true;
        end = req->done_usec ?: now_usec(CLOCK_MONOTONIC);

        r = model_usage_parser_finish(&req->usage);
        if (r == -E2BIG)
                request_log(
                        req,
                        LOG_WARNING,
                        "the answer's usage is not counted: its JSON body is larger than %u bytes",
                        MODEL_USAGE_JSON_MAX);
        else if (r == -ELOOP)
                request_log(
                        req,
                        LOG_WARNING,
                        "the answer's usage is not counted: its JSON body nests deeper than %u",
                        MODEL_USAGE_DEPTH_MAX);
        /* The model the client asked for, for an answer that names none (the proxy's own answers). */
        model_usage_parser_init(&scan, MODEL_USAGE_JSON);
        if (!req->usage.model[0] && req->http.body_len > 0)
                (void) model_usage_read_json(&scan, req->http.body, req->http.body_len);

        call = (ModelCall){
                .session_id = req->session_id,
                .method = strempty(req->method),
                .path = strempty(req->path),
                .model = req->usage.model[0] ? req->usage.model : scan.model,
                .status = req->http.queued ? req->http.status : 0,
                .complete = req->complete,
                .upstream = req->attempts > 0,
                .attempts = req->attempts,
                .usage = req->usage.usage,
                .latency_usec =
                        req->received_usec > 0 && end > req->received_usec ? end - req->received_usec : 0,
                .queued_usec = req->admission.queued_usec,
        };
        call.cost_usd = model_price_cost(p->prices, p->n_prices, call.model, &call.usage);

        log_struct(
                LOG_INFO,
                "MESSAGE=session %s: model call %s %s: %u%s, model %s, %" PRIu64 " in + %" PRIu64
                " out tokens (cache %" PRIu64 " written, %" PRIu64 " read), %.6f USD, %" PRIu64 " ms",
                req->session_id,
                call.method,
                call.path,
                call.status,
                call.complete ? "" : " (not completed)",
                call.model[0] ? call.model : "-",
                call.usage.input_tokens,
                call.usage.output_tokens,
                call.usage.cache_creation_input_tokens,
                call.usage.cache_read_input_tokens,
                call.cost_usd,
                call.latency_usec / 1000,
                "MESSAGE_ID=" MODEL_CALL_MESSAGE_ID,
                "CCDOCKER_SESSION=%s",
                req->session_id,
                "CCDOCKER_EVENT=model-call",
                "CCDOCKER_MODEL=%s",
                call.model,
                "CCDOCKER_MODEL_PATH=%s",
                call.path,
                "CCDOCKER_MODEL_STATUS=%u",
                call.status,
                "CCDOCKER_MODEL_ATTEMPTS=%u",
                call.attempts,
                "CCDOCKER_INPUT_TOKENS=%" PRIu64,
                call.usage.input_tokens,
                "CCDOCKER_OUTPUT_TOKENS=%" PRIu64,
                call.usage.output_tokens,
                "CCDOCKER_CACHE_CREATION_TOKENS=%" PRIu64,
                call.usage.cache_creation_input_tokens,
                "CCDOCKER_CACHE_READ_TOKENS=%" PRIu64,
                call.usage.cache_read_input_tokens,
                "CCDOCKER_COST_USD=%.6f",
                call.cost_usd,
                "CCDOCKER_LATENCY_MS=%" PRIu64,
                call.latency_usec / 1000,
                "CCDOCKER_QUEUED_MS=%" PRIu64,
                call.queued_usec / 1000,
                NULL);

        if (req->reserving) {
                call.reserved = req->reserved;
                req->reserving = false;
                if (req->session)
                        request_reserve(req->session, &req->reserved, -1);
        }
        if (req->session) {
                ModelSessionTotals *t = &req->session->totals;

                t->calls++;
                t->usage.input_tokens += call.usage.input_tokens;
                t->usage.output_tokens += call.usage.output_tokens;
                t->usage.cache_creation_input_tokens += call.usage.cache_creation_input_tokens;
                t->usage.cache_read_input_tokens += call.usage.cache_read_input_tokens;
                t->cost_usd += call.cost_usd;
        }
        if (p->on_usage)
                p->on_usage(&call, p->userdata);
}

/* ---- the answer, streamed ---- */

static ssize_t on_response_read(void *cls, uint64_t pos, char *buf, size_t max) {
        ProxyRequest *req = cls;

        return session_http_upstream_read(&req->up, &req->http, MODEL_PROXY_BUFFER_MAX, buf, max);
}

static void on_response_free(void *cls) {
        proxy_request_unref(cls);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata);
static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata);
static void on_upstream_done(CURL *easy, CURLcode result, void *userdata);

/* The headers of an upstream answer are in: retry it, or start passing it on. */
static void on_upstream_headers(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        const char *content_type = NULL, *retry_after = NULL;
        struct MHD_Response *response;
        uint64_t wait = 0;

        for (size_t i = 0; i < req->up.n_headers; i++) {
                if (strcasecmp(req->up.headers[i].name, "content-type") == 0)
                        content_type = req->up.headers[i].value;
                else if (strcasecmp(req->up.headers[i].name, "retry-after") == 0)
                        retry_after = req->up.headers[i].value;
        }

        if ((req->up.status == 429 || req->up.status == 529) && req->attempts <= MODEL_PROXY_MAX_RETRIES &&
            req->http.connection) {
                if (!retry_after || model_parse_retry_after(retry_after, &wait) < 0)
                        wait = USEC_PER_SEC << (req->attempts - 1); /* 1 s, 2 s, 4 s */
                if (wait <= (uint64_t) MODEL_PROXY_RETRY_AFTER_MAX_SEC * USEC_PER_SEC) {
                        uint64_t until = now_usec(CLOCK_MONOTONIC) + wait;

                        /* The whole credential waits, not only this call. */
                        model_admission_pause_until(&p->admission, until);
                        req->retrying = true;
                        request_log(
                                req,
                                LOG_INFO,
                                "upstream answered %ld, admission paused for %" PRIu64
                                " ms; retrying (attempt %u)",
                                req->up.status,
                                wait / 1000,
                                req->attempts + 1);
                        return;
                }
        }

        response = session_http_stream_response(
                req->up.headers,
                req->up.n_headers,
                req->method,
                req->up.status,
                model_response_header_forwarded,
                on_response_read,
                req,
                on_response_free);
        if (!response) {
                proxy_request_cancel_transfer(req);
                proxy_request_fail(
                        req, 502, "api_error", NULL, "cc-docker: the model proxy ran out of memory");
                return;
        }
        proxy_request_ref(req); /* the response's reference */

        model_usage_parser_init(&req->usage, model_usage_format_for(content_type));
        session_http_upstream_answer(&req->up, &req->http, response);
        proxy_request_wake(req);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata) {
        ProxyRequest *req = userdata;
        size_t n = size * nitems;
        int r;

        r = session_http_upstream_header(&req->up, buffer, n, RESPONSE_HEADERS_MAX);
        if (r < 0)
                return 0; /* fails the transfer */
        if (r == SESSION_HTTP_HEADER_STATUS)
                request_reset_usage(req);
        else if (r == SESSION_HTTP_HEADER_END && req->up.status >= 200)
                on_upstream_headers(req);
        return n;
}

static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        ProxyRequest *req = userdata;
        size_t n = size * nmemb, r;

        if (!req->up.answering || req->state == REQUEST_DONE)
                return n; /* thrown away: a retried 429, or nobody to give it to */

        /* Bounded: a client that does not read pauses the transfer. */
        r = session_http_stream_write(&req->up.stream, MODEL_PROXY_BUFFER_MAX, ptr, n);
        if (r != n)
                return r;

        model_usage_parser_feed(&req->usage, ptr, n);
        proxy_request_wake(req);
        return n;
}

/* ---- the call upstream ---- */

typedef struct HeaderCollect {
        struct curl_slist *list;
        char *beta;
        bool has_content_type;
        int r;
} HeaderCollect;

static enum MHD_Result on_request_header(
        void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        HeaderCollect *hc = cls;
        _cleanup_free_ char *line = NULL;
        struct curl_slist *l;

        if (!key)
                return MHD_YES;
        value = strempty(value);

        if (strcasecmp(key, "anthropic-beta") == 0) {
                char *merged = model_beta_merge(hc->beta, value);

                if (!merged) {
                        hc->r = -ENOMEM;
                        return MHD_NO;
                }
                free(hc->beta);
                hc->beta = merged;
                return MHD_YES;
        }
        if (strcasecmp(key, "content-type") == 0)
                hc->has_content_type = true;
        if (!model_request_header_forwarded(key))
                return MHD_YES;

        /* "Name;" is curl's way to send a header with an empty value ("Name:" would remove it). */
        if ((isempty(value) ? asprintf(&line, "%s;", key) : asprintf(&line, "%s: %s", key, value)) < 0) {
                hc->r = -ENOMEM;
                return MHD_NO;
        }
        l = curl_slist_append(hc->list, line);
        if (!l) {
                hc->r = -ENOMEM;
                return MHD_NO;
        }
        hc->list = l;
        return MHD_YES;
}

static int request_build_upstream(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        HeaderCollect hc = {};
        _cleanup_free_ char *url = NULL, *beta = NULL, *beta_line = NULL;
        CURL *easy;
        int r = 0;

        if (asprintf(&url, "%s%s", p->base_url, req->target) < 0)
                return -ENOMEM;

        (void) MHD_get_connection_values(req->http.connection, MHD_HEADER_KIND, on_request_header, &hc);
        r = hc.r;
        if (r >= 0) {
                beta = p->credential_kind == MODEL_CREDENTIAL_OAUTH
                        ? model_beta_merge(hc.beta, MODEL_OAUTH_BETA)
                        : (hc.beta ? strdup(hc.beta) : NULL);
                if ((p->credential_kind == MODEL_CREDENTIAL_OAUTH || hc.beta) && !beta)
                        r = -ENOMEM;
        }
        if (r >= 0 && beta && asprintf(&beta_line, "anthropic-beta: %s", beta) < 0)
                r = -ENOMEM;
        if (r >= 0 && beta_line)
                r = session_http_slist_add(&hc.list, beta_line);
        if (r >= 0 && p->credential_header)
                r = session_http_slist_add(&hc.list, p->credential_header);
        /* No "Expect: 100-continue" round trip, and no form content type curl would make up. */
        if (r >= 0)
                r = session_http_slist_add(&hc.list, "Expect:");
        if (r >= 0 && !hc.has_content_type)
                r = session_http_slist_add(&hc.list, "Content-Type:");
        free(hc.beta);
        if (r < 0) {
                curl_slist_free_all(hc.list);
                return r;
        }
        req->up.request_headers = hc.list;

        r = session_http_easy_new(
                url,
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
        if (curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_SEC) != CURLE_OK)
                return -EINVAL;
        return 0;
}

static int request_send(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        int r;

        if (!req->up.easy) {
                r = request_build_upstream(req);
                if (r < 0)
                        return r;
        }

        request_reset_answer(req);
        req->retrying = false;
        r = curl_glue_add(p->glue, req->up.easy, on_upstream_done, req);
        if (r < 0)
                return r;
        proxy_request_ref(req); /* the transfer's reference */
        req->up.transfer = true;
        req->state = REQUEST_UPSTREAM;
        req->attempts++;
        return 0;
}

static void on_upstream_done(CURL *easy, CURLcode result, void *userdata) {
        ProxyRequest *req = userdata;
        ModelProxy *p = req->proxy;

        req->up.transfer = false;
        model_admission_end(&p->admission, &req->admission);

        if (req->retrying && req->http.connection && req->state == REQUEST_UPSTREAM &&
            request_enqueue(req, true) >= 0) {
                /* Back to the front of its session's queue: it was admitted before the rest. */
        } else if (req->state == REQUEST_UPSTREAM && !req->up.answering) {
                /* Nothing came back: no connection, or the upstream hung up before its headers. */
                request_log(req, LOG_WARNING, "upstream call failed: %s", curl_easy_strerror(result));
                proxy_request_fail(
                        req,
                        502,
                        "api_error",
                        NULL,
                        "cc-docker: the model proxy could not reach the model API (%s)",
                        curl_easy_strerror(result));
        } else {
                if (result != CURLE_OK)
                        request_log(
                                req,
                                LOG_WARNING,
                                "upstream answer cut short: %s",
                                curl_easy_strerror(result));
                req->up.stream.done = true;
                req->up.stream.result = result;
                req->state = REQUEST_DONE;
                req->done_usec = now_usec(CLOCK_MONOTONIC);
                proxy_request_wake(req);
        }

        model_admission_pump(&p->admission);
        proxy_request_unref(req); /* the transfer's reference */
}

void proxy_request_admitted(ModelAdmissionEntry *e, void *userdata) {
        ProxyRequest *req = (ProxyRequest *) ((char *) e - offsetof(ProxyRequest, admission));
        int r;

        r = request_send(req);
        if (r < 0) {
                model_admission_end(&req->proxy->admission, e);
                request_log(req, LOG_WARNING, "could not start the upstream call: %s", strerror(-r));
                proxy_request_fail(
                        req, 502, "api_error", NULL, "cc-docker: the model proxy could not start the call");
        }
}

/* ---- admission ---- */

static void request_reserve(ModelProxySession *s, const ModelReservation *r, int sign) {
        ModelReservation *t = &s->reserved;

        if (sign > 0) {
                t->calls += r->calls;
                t->tokens += r->tokens;
                t->cost_usd += r->cost_usd;
                return;
        }
        t->calls = t->calls > r->calls ? t->calls - r->calls : 0;
        t->tokens = t->tokens > r->tokens ? t->tokens - r->tokens : 0;
        t->cost_usd = t->cost_usd > r->cost_usd ? t->cost_usd - r->cost_usd : 0;
        if (t->calls == 0) /* no rounding left behind */
                *t = (ModelReservation){};
}

void model_call_reservation(
        const char *path,
        const char *body,
        size_t body_len,
        const ModelPrice *prices,
        size_t n_prices,
        ModelReservation *ret) {
        ModelUsageParser scan;
        ModelUsage bound;

        *ret = (ModelReservation){ .calls = 1 };
        if (!path || !streq(path, "/v1/messages"))
                return;
        model_usage_parser_init(&scan, MODEL_USAGE_JSON);
        if (body && body_len > 0)
                (void) model_usage_read_json(&scan, body, body_len);
        bound = (ModelUsage){
                .cache_creation_input_tokens = body_len,
                .output_tokens = scan.have_max_tokens ? scan.max_tokens : MODEL_RESERVE_OUTPUT_DEFAULT,
        };
        ret->tokens = model_usage_tokens(&bound);
        ret->cost_usd = model_price_cost(prices, n_prices, scan.model, &bound);
}

bool model_budget_admits(uint64_t budget, uint64_t used, uint64_t reserved, uint64_t reserve) {
        if (budget == 0)
                return true;
        if (used >= budget)
                return false;
        return reserved == 0 || (reserved <= budget - used && reserve <= budget - used - reserved);
}

bool model_budget_admits_usd(double budget, double used, double reserved, double reserve) {
        if (budget <= 0)
                return true;
        if (used >= budget)
                return false;
        return reserved <= 0 || used + reserved + reserve <= budget;
}

/* The request is read: refuse it, or queue it for admission. */
void proxy_request_start(ProxyRequest *req) {
        ModelProxy *p = req->proxy;

        if (p->budget) {
                _cleanup_free_ char *reason = NULL;
                ModelBudgetVerdict verdict;
                ModelReservation reserve;

                model_call_reservation(
                        req->path, req->http.body, req->http.body_len, p->prices, p->n_prices, &reserve);
                verdict = p->budget(req->session_id, &reserve, &reason, p->userdata);
                if (verdict == MODEL_BUDGET_BUSY) {
                        static const char *extra[] = {
                                "retry-after", "2", "x-should-retry", "true", NULL,
                        };

                        request_log(
                                req,
                                LOG_INFO,
                                "call deferred: no room in the budget beside the calls running");
                        /* 429: the SDK retries it after retry-after, by when calls running have settled. */
                        proxy_request_fail(
                                req,
                                429,
                                "rate_limit_error",
                                extra,
                                "cc-docker: this session tree's budget has no room for this call beside the calls "
                                "running (%s); try again shortly",
                                reason ?: "reserved");
                        return;
                }
                if (verdict != MODEL_BUDGET_ALLOW) {
                        static const char *extra[] = { "x-should-retry", "false", NULL };

                        request_log(req, LOG_NOTICE, "call refused: over budget");
                        /* 400 invalid_request_error: the CLI shows it and does not retry. */
                        proxy_request_fail(
                                req,
                                400,
                                "invalid_request_error",
                                extra,
                                "cc-docker: this session tree is over its budget (%s)",
                                reason ?: "no more model calls are allowed");
                        return;
                }
                /* Held from now until the record settles it: the next call's check sees it. */
                if (req->session) {
                        req->reserved = reserve;
                        req->reserving = true;
                        request_reserve(req->session, &reserve, +1);
                }
        }

        if (model_admission_full(&p->admission)) {
                static const char *extra[] = { "retry-after", "5", NULL };

                request_log(
                        req,
                        LOG_WARNING,
                        "call refused: the admission queue is full (%u waiting)",
                        p->admission.n_queued);
                proxy_request_fail(
                        req,
                        429,
                        "rate_limit_error",
                        extra,
                        "cc-docker: the model proxy's queue is full (%u calls waiting); try again shortly",
                        p->admission.n_queued);
                return;
        }

        if (request_enqueue(req, false) < 0) {
                proxy_request_fail(
                        req, 502, "api_error", NULL, "cc-docker: the model proxy ran out of memory");
                return;
        }
        model_admission_pump(&p->admission);
}

/* ---- headers, targets, retry-after ---- */

bool model_request_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "host",           "content-length",    "connection",
                "keep-alive",     "transfer-encoding", "te",
                "trailer",        "upgrade",           "expect",
                "x-api-key",      "authorization",     "accept-encoding",
                "anthropic-beta",
        };

        return session_http_header_forwarded(name, dropped, ELEMENTSOF(dropped));
}

bool model_response_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "connection", "keep-alive", "transfer-encoding", "content-length",
                "te",         "trailer",    "upgrade",
        };

        return session_http_header_forwarded(name, dropped, ELEMENTSOF(dropped));
}

static bool beta_list_has(const char *list, const char *item) {
        size_t n = strlen(item);

        for (const char *p = list; p && *p;) {
                size_t len;

                p += strspn(p, " \t,");
                len = strcspn(p, ",");
                while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                        len--;
                if (len == n && strncasecmp(p, item, n) == 0)
                        return true;
                p += strcspn(p, ",");
        }
        return false;
}

char *model_beta_merge(const char *client, const char *add) {
        char *s;

        if (isempty(client))
                return strdup(strempty(add));
        if (isempty(add) || beta_list_has(client, add))
                return strdup(client);
        if (asprintf(&s, "%s,%s", client, add) < 0)
                return NULL;
        return s;
}

int model_parse_retry_after(const char *value, uint64_t *ret_usec) {
        uint64_t whole = 0, frac = 0, scale = USEC_PER_SEC;
        const char *p = value;

        if (!value)
                return -EINVAL;
        p += strspn(p, " \t");
        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                if (whole > 100000000)
                        return -ERANGE;
                whole = whole * 10 + (uint64_t) (*p - '0');
        }
        if (*p == '.') {
                p++;
                for (; isdigit((unsigned char) *p); p++)
                        if (scale > 1) {
                                scale /= 10;
                                frac += (uint64_t) (*p - '0') * scale;
                        }
        }
        p += strspn(p, " \t\r\n");
        if (*p != '\0')
                return -EINVAL;
        *ret_usec = whole * USEC_PER_SEC + frac;
        return 0;
}

int model_endpoint_check(const char *method, const char *path) {
        if (!path || (!streq(path, "/v1/messages") && !streq(path, "/v1/messages/count_tokens")))
                return -EACCES;
        if (!method || !streq(method, "POST"))
                return -EOPNOTSUPP;
        return 0;
}

static bool segment_is_dots(const char *seg, size_t len) {
        size_t dots = 0;

        for (size_t i = 0; i < len; dots++)
                if (seg[i] == '.')
                        i++;
                else if (
                        len - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                        (seg[i + 2] == 'e' || seg[i + 2] == 'E'))
                        i += 3;
                else
                        return false;
        return dots == 1 || dots == 2;
}

bool model_target_valid(const char *target) {
        const char *p, *end;

        if (!target || !startswith(target, "/v1/"))
                return false;
        for (p = target; *p; p++)
                if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f || *p == '#' || *p == '\\')
                        return false;

        end = target + strcspn(target, "?");
        for (p = target + 1; p < end;) {
                size_t len = strcspn(p, "/?");

                if (p + len > end)
                        len = (size_t) (end - p);
                if (segment_is_dots(p, len))
                        return false;
                /* An encoded slash or backslash would hide a segment from the check above. */
                for (size_t i = 0; i + 2 < len; i++)
                        if (p[i] == '%' &&
                            ((p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F')) ||
                             (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C'))))
                                return false;
                p += len;
                if (*p == '/')
                        p++;
        }
        return true;
}

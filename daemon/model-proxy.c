/* The model proxy: per-session unix sockets accepted here and handed to one libmicrohttpd daemon (no
 * thread, no listening socket, driven from sd-event through its epoll fd), upstream calls through
 * libcurl multi on the same loop (curl-glue), and between them a FIFO admission queue for the one
 * credential. A request's answer is streamed: curl's write callback fills a bounded buffer that
 * libmicrohttpd's content reader drains; a full buffer pauses the transfer, an empty one suspends the
 * connection. The usage parser reads along. A request's session comes from the socket its connection
 * was accepted on (fd -> ProxyConn, found again in libmicrohttpd's connection-start notification). */
#define _GNU_SOURCE
#include "model-proxy.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
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
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "curl-glue.h"
#include "log.h"
#include "mhd-event.h"
#include "util.h"

#define SSE_LINE_MAX (64U * 1024)   /* longer SSE lines (big content deltas) are not parsed */
#define SSE_DATA_MAX (256U * 1024)  /* one event's data, when it is one we read */
#define JSON_VALUE_MAX (16U * 1024) /* a captured top-level value (usage, model) */
#define RESPONSE_HEADERS_MAX 128    /* upstream answer headers kept */
#define ACCEPT_PER_CALLBACK 16U     /* connections accepted per io event of a session socket */
#define CONNECTION_TIMEOUT_SEC 600U /* an idle keep-alive connection is closed after this */
#define CONNECT_TIMEOUT_SEC 30L     /* to reach upstream */
#define LOW_SPEED_TIME_SEC 600L     /* an upstream silent this long is given up (paused ones are not) */
#define DEFAULT_MAX_IN_FLIGHT 4U
#define DEFAULT_REQUESTS_PER_MINUTE 50U
#define DEFAULT_QUEUE_MAX 256U
#define TOKEN_UNIT UINT64_C(60000000)

typedef struct ProxyConn ProxyConn;
typedef struct ProxyRequest ProxyRequest;

/* One accepted connection; libmicrohttpd owns its fd. */
struct ProxyConn {
        ModelProxy *proxy;
        ModelProxySession *session; /* NULL once the session is gone */
        int fd;
        bool started; /* libmicrohttpd announced it (its socket context points here) */
        char *target; /* the raw request target of the request being read (URI log callback) */
        ProxyConn *prev, *next;
};

struct ModelProxySession {
        ModelProxy *proxy;
        char *id;
        char *socket_path;
        int listen_fd;
        sd_event_source *listen_source;
        unsigned n_connections;
        ModelSessionTotals totals;
        ModelProxySession *prev, *next;
};

typedef enum RequestState {
        REQUEST_READING,  /* headers and body arriving */
        REQUEST_QUEUED,   /* waiting for admission */
        REQUEST_UPSTREAM, /* a transfer is running */
        REQUEST_DONE,     /* the answer is decided (streamed or an error); no transfer waits */
} RequestState;

typedef struct Header {
        char *name, *value;
} Header;

struct ProxyRequest {
        unsigned n_ref;
        ModelProxy *proxy;
        ModelProxySession *session; /* NULL once the session is gone */
        char *session_id;
        struct MHD_Connection *connection; /* NULL once libmicrohttpd is done with the request */
        RequestState state;
        bool suspended;
        ProxyRequest *prev, *next;             /* the proxy's requests */
        ProxyRequest *queue_prev, *queue_next; /* the admission queue */

        char *method, *target, *path;
        char *body;
        size_t body_len;
        char *model_requested;
        struct curl_slist *upstream_headers;

        /* The answer: an error of the proxy's own, or the upstream's. */
        struct MHD_Response *response;
        unsigned status;
        bool queued; /* response handed to libmicrohttpd */
        bool complete;

        /* upstream */
        CURL *easy;
        bool transfer; /* easy is added to the multi handle */
        unsigned attempts;
        long upstream_status;
        bool retrying;  /* this attempt's answer is thrown away; the request is retried */
        bool answering; /* this attempt's answer is being passed on */
        Header *headers;
        size_t n_headers;
        bool upstream_done;
        CURLcode upstream_result;
        bool paused;
        char *buf;
        size_t buf_start, buf_end, buf_allocated;
        ModelUsageParser usage;

        uint64_t received_usec, queued_since_usec, queued_usec, done_usec;
        bool recorded;
};

struct ModelProxy {
        sd_event *event;
        CurlGlue *glue;
        struct MHD_Daemon *mhd;
        MhdEvent mhd_event;
        sd_event_source *admit_timer;

        char *base_url;
        ModelCredentialKind credential_kind;
        char *credential_header; /* "x-api-key: ..." or "Authorization: Bearer ..." */
        unsigned max_in_flight, queue_max;
        ModelPrice *prices;
        size_t n_prices;
        model_proxy_usage_t on_usage;
        model_proxy_budget_t budget;
        void *userdata;

        ModelTokenBucket bucket;
        uint64_t paused_until;
        unsigned in_flight, in_flight_peak, n_queued;
        ProxyRequest *queue_head, *queue_tail;
        ProxyRequest *requests;
        ProxyConn *conns;
        ModelProxySession *sessions;
};

#define LIST_UNLINK(head, item)                            \
        do {                                               \
                if ((item)->next)                          \
                        (item)->next->prev = (item)->prev; \
                if ((item)->prev)                          \
                        (item)->prev->next = (item)->next; \
                else                                       \
                        (head) = (item)->next;             \
                (item)->prev = (item)->next = NULL;        \
        } while (0)

#define LIST_PREPEND(head, item)               \
        do {                                   \
                (item)->prev = NULL;           \
                (item)->next = (head);         \
                if (head)                      \
                        (head)->prev = (item); \
                (head) = (item);               \
        } while (0)

#define request_log(req, level, format, ...)                \
        log_struct(                                         \
                (level),                                    \
                "MESSAGE=session %s: model proxy: " format, \
                (req)->session_id,                          \
                ##__VA_ARGS__,                              \
                "CCDOCKER_SESSION=%s",                      \
                (req)->session_id,                          \
                NULL)

static uint64_t now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000U + (uint64_t) ts.tv_nsec / 1000U;
}

static void explicit_wipe(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
}

/* ---- token bucket ---- */

void model_token_bucket_init(ModelTokenBucket *b, unsigned per_minute, unsigned burst, uint64_t now_usec) {
        *b = (ModelTokenBucket){
                .per_minute = per_minute > 0 ? per_minute : 1,
                .capacity = (uint64_t) (burst > 0 ? burst : 1) * TOKEN_UNIT,
                .last_usec = now_usec,
        };
        b->level = b->capacity;
}

static void token_bucket_refill(ModelTokenBucket *b, uint64_t now) {
        uint64_t elapsed;

        if (now <= b->last_usec)
                return;
        elapsed = now - b->last_usec;
        b->last_usec = now;
        /* Past the time to fill up, the product could overflow: it is full. */
        if (elapsed >= (b->capacity - b->level) / b->per_minute + 1)
                b->level = b->capacity;
        else
                b->level += elapsed * b->per_minute;
        if (b->level > b->capacity)
                b->level = b->capacity;
}

bool model_token_bucket_take(ModelTokenBucket *b, uint64_t now) {
        token_bucket_refill(b, now);
        if (b->level < TOKEN_UNIT)
                return false;
        b->level -= TOKEN_UNIT;
        return true;
}

uint64_t model_token_bucket_wait(ModelTokenBucket *b, uint64_t now) {
        token_bucket_refill(b, now);
        if (b->level >= TOKEN_UNIT)
                return 0;
        return (TOKEN_UNIT - b->level + b->per_minute - 1) / b->per_minute;
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

        if (isempty(name) || strncasecmp(name, "proxy-", 6) == 0)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
                if (strcasecmp(name, dropped[i]) == 0)
                        return false;
        return true;
}

bool model_response_header_forwarded(const char *name) {
        static const char *const dropped[] = {
                "connection", "keep-alive", "transfer-encoding", "content-length",
                "te",         "trailer",    "upgrade",
        };

        if (isempty(name) || strncasecmp(name, "proxy-", 6) == 0)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
                if (strcasecmp(name, dropped[i]) == 0)
                        return false;
        return true;
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
        uint64_t whole = 0, frac = 0, scale = 1000000;
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
        *ret_usec = whole * 1000000 + frac;
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

/* ---- usage ---- */

enum {
        TOP_KEY_EXPECTED,
        TOP_IN_KEY,
        TOP_COLON_EXPECTED,
        TOP_IN_VALUE,
};

enum {
        CAPTURE_NONE,
        CAPTURE_USAGE,
        CAPTURE_MODEL,
};

ModelUsageFormat model_usage_format_for(const char *content_type) {
        if (!content_type)
                return MODEL_USAGE_NONE;
        content_type += strspn(content_type, " \t");
        if (strncasecmp(content_type, "text/event-stream", 17) == 0)
                return MODEL_USAGE_SSE;
        if (strncasecmp(content_type, "application/json", 16) == 0)
                return MODEL_USAGE_JSON;
        return MODEL_USAGE_NONE;
}

void model_usage_parser_init(ModelUsageParser *u, ModelUsageFormat format) {
        *u = (ModelUsageParser){ .format = format };
}

void model_usage_parser_done(ModelUsageParser *u) {
        u->line = mfree(u->line);
        u->data = mfree(u->data);
        u->value = mfree(u->value);
        u->line_len = u->data_len = u->value_len = 0;
}

/* Sets the fields usage has: message_delta's are cumulative, so a later value replaces an earlier. */
static void usage_apply(ModelUsageParser *u, json_t *usage) {
        static const struct {
                const char *key;
                size_t offset;
        } fields[] = {
                { "input_tokens", offsetof(ModelUsage, input_tokens) },
                { "output_tokens", offsetof(ModelUsage, output_tokens) },
                { "cache_creation_input_tokens", offsetof(ModelUsage, cache_creation_input_tokens) },
                { "cache_read_input_tokens", offsetof(ModelUsage, cache_read_input_tokens) },
        };

        if (!json_is_object(usage))
                return;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                json_t *v = json_object_get(usage, fields[i].key);

                if (json_is_integer(v) && json_integer_value(v) >= 0) {
                        *(uint64_t *) ((uint8_t *) &u->usage + fields[i].offset) =
                                (uint64_t) json_integer_value(v);
                        u->have_usage = true;
                }
        }
}

static void usage_set_model(ModelUsageParser *u, json_t *model) {
        if (json_is_string(model) && json_string_length(model) < sizeof(u->model))
                memcpy(u->model, json_string_value(model), json_string_length(model) + 1);
}

static bool sse_event_wanted(const char *event) {
        return isempty(event) || streq(event, "message_start") || streq(event, "message_delta");
}

static void sse_dispatch(ModelUsageParser *u) {
        json_t *j, *type;

        if (u->data_len > 0 && !u->data_overflow && sse_event_wanted(u->event)) {
                j = json_loadb(u->data, u->data_len, 0, NULL);
                type = json_object_get(j, "type");
                if (json_is_string(type) && streq(json_string_value(type), "message_start")) {
                        json_t *message = json_object_get(j, "message");

                        usage_apply(u, json_object_get(message, "usage"));
                        usage_set_model(u, json_object_get(message, "model"));
                } else if (json_is_string(type) && streq(json_string_value(type), "message_delta"))
                        usage_apply(u, json_object_get(j, "usage"));
                json_decref(j);
        }
        u->event[0] = '\0';
        u->data_len = 0;
        u->data_overflow = false;
}

static void sse_line(ModelUsageParser *u) {
        const char *value;
        size_t name_len, value_len;

        if (u->line_overflow)
                return;
        if (u->line_len == 0) {
                sse_dispatch(u);
                return;
        }
        if (u->line[0] == ':')
                return;

        name_len = 0;
        while (name_len < u->line_len && u->line[name_len] != ':')
                name_len++;
        value = u->line + name_len;
        value_len = u->line_len - name_len;
        if (value_len > 0) { /* the colon, then one optional space */
                value++;
                value_len--;
                if (value_len > 0 && *value == ' ') {
                        value++;
                        value_len--;
                }
        }

        if (name_len == 5 && memcmp(u->line, "event", 5) == 0) {
                if (value_len < sizeof(u->event)) {
                        memcpy(u->event, value, value_len);
                        u->event[value_len] = '\0';
                } else
                        strcpy(u->event, "?");
        } else if (name_len == 4 && memcmp(u->line, "data", 4) == 0) {
                if (!sse_event_wanted(u->event) || u->data_overflow)
                        return;
                if (u->data_len + value_len + 1 > SSE_DATA_MAX) {
                        u->data_overflow = true;
                        return;
                }
                if (!u->data) {
                        u->data = malloc(SSE_DATA_MAX);
                        if (!u->data) {
                                u->data_overflow = true;
                                return;
                        }
                }
                if (u->data_len > 0)
                        u->data[u->data_len++] = '\n';
                memcpy(u->data + u->data_len, value, value_len);
                u->data_len += value_len;
        }
}

static void sse_feed(ModelUsageParser *u, const char *p, size_t len) {
        for (size_t i = 0; i < len; i++) {
                char c = p[i];

                if (c == '\n' && u->after_cr) {
                        u->after_cr = false;
                        continue;
                }
                u->after_cr = c == '\r';
                if (c == '\r' || c == '\n') {
                        sse_line(u);
                        u->line_len = 0;
                        u->line_overflow = false;
                        continue;
                }
                if (u->line_overflow)
                        continue;
                if (u->line_len >= SSE_LINE_MAX) {
                        u->line_overflow = true;
                        continue;
                }
                if (!u->line) {
                        u->line = malloc(SSE_LINE_MAX);
                        if (!u->line) {
                                u->line_overflow = true;
                                continue;
                        }
                }
                u->line[u->line_len++] = c;
        }
}

static void json_capture_char(ModelUsageParser *u, char c) {
        if (u->value_overflow)
                return;
        if (u->value_len >= JSON_VALUE_MAX) {
                u->value_overflow = true;
                return;
        }
        if (!u->value) {
                u->value = malloc(JSON_VALUE_MAX);
                if (!u->value) {
                        u->value_overflow = true;
                        return;
                }
        }
        u->value[u->value_len++] = c;
}

static void json_capture_end(ModelUsageParser *u) {
        if (!u->value_overflow && u->value_len > 0) {
                json_t *j = json_loadb(u->value, u->value_len, JSON_DECODE_ANY, NULL);

                if (u->capture == CAPTURE_USAGE)
                        usage_apply(u, j);
                else if (u->capture == CAPTURE_MODEL)
                        usage_set_model(u, j);
                json_decref(j);
        }
        u->capture = CAPTURE_NONE;
        u->value_len = 0;
        u->value_overflow = false;
}

static void json_feed(ModelUsageParser *u, const char *p, size_t len) {
        for (size_t i = 0; i < len; i++) {
                char c = p[i];

                if (u->in_string) {
                        if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                        if (u->escape)
                                u->escape = false;
                        else if (c == '\\')
                                u->escape = true;
                        else if (c == '"') {
                                u->in_string = false;
                                if (u->depth == 1 && u->top_state == TOP_IN_KEY)
                                        u->top_state = TOP_COLON_EXPECTED;
                                else if (u->depth == 1 && u->capture != CAPTURE_NONE)
                                        json_capture_end(u); /* a string value */
                                continue;
                        }
                        if (u->depth == 1 && u->top_state == TOP_IN_KEY && u->key_len < sizeof(u->key) - 1)
                                u->key[u->key_len++] = c;
                        continue;
                }

                switch (c) {
                case '"':
                        u->in_string = true;
                        if (u->depth == 1 && u->top_state == TOP_KEY_EXPECTED) {
                                u->top_state = TOP_IN_KEY;
                                u->key_len = 0;
                        } else if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                        break;
                case '{':
                case '[':
                        if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                        if (u->depth == 0 && c == '{')
                                u->top_state = TOP_KEY_EXPECTED;
                        if (u->depth < UINT_MAX)
                                u->depth++;
                        break;
                case '}':
                case ']':
                        if (u->depth > 0)
                                u->depth--;
                        if (u->capture != CAPTURE_NONE) {
                                if (u->depth == 1) { /* the captured object or list closed */
                                        json_capture_char(u, c);
                                        json_capture_end(u);
                                } else if (u->depth == 0)
                                        json_capture_end(u); /* a scalar ended by the closing brace */
                                else
                                        json_capture_char(u, c);
                        }
                        break;
                case ':':
                        if (u->depth == 1 && u->top_state == TOP_COLON_EXPECTED) {
                                u->top_state = TOP_IN_VALUE;
                                u->key[u->key_len] = '\0';
                                if (streq(u->key, "usage"))
                                        u->capture = CAPTURE_USAGE;
                                else if (streq(u->key, "model"))
                                        u->capture = CAPTURE_MODEL;
                                u->value_len = 0;
                                u->value_overflow = false;
                        } else if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                        break;
                case ',':
                        if (u->depth == 1) {
                                if (u->capture != CAPTURE_NONE)
                                        json_capture_end(u);
                                u->top_state = TOP_KEY_EXPECTED;
                        } else if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                        break;
                default:
                        if (u->capture != CAPTURE_NONE)
                                json_capture_char(u, c);
                }
        }
}

void model_usage_parser_feed(ModelUsageParser *u, const char *data, size_t len) {
        if (!u || !data)
                return;
        if (u->format == MODEL_USAGE_SSE)
                sse_feed(u, data, len);
        else if (u->format == MODEL_USAGE_JSON)
                json_feed(u, data, len);
}

/* ---- prices ---- */

void model_prices_free(ModelPrice *prices, size_t n) {
        for (size_t i = 0; prices && i < n; i++)
                free(prices[i].model_prefix);
        free(prices);
}

static int parse_price_number(const char *s, size_t len, double *ret) {
        char buf[32], *end;
        double v;

        if (len == 0 || len >= sizeof(buf) || strspn(s, "0123456789.") < len)
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        errno = 0;
        v = strtod(buf, &end);
        if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > 1e6)
                return -EINVAL;
        *ret = v;
        return 0;
}

int model_prices_parse(const char *text, ModelPrice **ret, size_t *ret_n) {
        ModelPrice *prices = NULL;
        size_t n = 0;
        const char *p = text;
        int r;

        if (!text || !ret || !ret_n)
                return -EINVAL;

        for (;;) {
                const char *word, *eq, *slash;
                size_t len;
                ModelPrice *np;
                double in, out;

                p += strspn(p, " \t");
                if (*p == '\0')
                        break;
                word = p;
                len = strcspn(p, " \t");
                p += len;

                eq = memchr(word, '=', len);
                if (!eq) {
                        r = -EINVAL;
                        goto fail;
                }
                slash = memchr(eq, '/', (size_t) (word + len - eq));
                if (!slash || parse_price_number(eq + 1, (size_t) (slash - eq - 1), &in) < 0 ||
                    parse_price_number(slash + 1, (size_t) (word + len - slash - 1), &out) < 0) {
                        r = -EINVAL;
                        goto fail;
                }
                for (const char *c = word; c < eq; c++)
                        if (!isalnum((unsigned char) *c) && !strchr("-._:@*", *c)) {
                                r = -EINVAL;
                                goto fail;
                        }

                np = reallocarray(prices, n + 1, sizeof(ModelPrice));
                if (!np) {
                        r = -ENOMEM;
                        goto fail;
                }
                prices = np;
                prices[n] = (ModelPrice){ .input_per_mtok = in, .output_per_mtok = out };
                /* "*" and a trailing '*' mean "any": a prefix says that already. */
                len = (size_t) (eq - word);
                if (len > 0 && word[len - 1] == '*')
                        len--;
                prices[n].model_prefix = strndup(word, len);
                if (!prices[n].model_prefix) {
                        r = -ENOMEM;
                        goto fail;
                }
                n++;
        }

        *ret = prices;
        *ret_n = n;
        return 0;

fail:
        /* (The one ladder here: a partly built array.) */
        model_prices_free(prices, n);
        return r;
}

double model_price_cost(const ModelPrice *prices, size_t n, const char *model, const ModelUsage *u) {
        const ModelPrice *best = NULL;
        size_t best_len = 0;

        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(prices[i].model_prefix);

                if (strncmp(strempty(model), prices[i].model_prefix, len) == 0 &&
                    (!best || len > best_len)) {
                        best = prices + i;
                        best_len = len;
                }
        }
        if (!best)
                return 0;

        return ((double) u->input_tokens * best->input_per_mtok +
                (double) u->cache_creation_input_tokens * best->input_per_mtok * 1.25 +
                (double) u->cache_read_input_tokens * best->input_per_mtok * 0.1 +
                (double) u->output_tokens * best->output_per_mtok) /
                1e6;
}

static void mhd_kick(ModelProxy *p) {
        mhd_event_kick(&p->mhd_event);
}

/* ---- requests ---- */

static void proxy_pump(ModelProxy *p);

static ProxyRequest *request_ref(ProxyRequest *req) {
        req->n_ref++;
        return req;
}

static void request_reset_answer(ProxyRequest *req) {
        for (size_t i = 0; i < req->n_headers; i++) {
                free(req->headers[i].name);
                free(req->headers[i].value);
        }
        req->headers = mfree(req->headers);
        req->n_headers = 0;
        req->upstream_status = 0;
        req->answering = false;
        req->upstream_done = false;
        req->paused = false;
        req->buf_start = req->buf_end = 0;
        model_usage_parser_done(&req->usage);
        model_usage_parser_init(&req->usage, MODEL_USAGE_NONE);
}

static ProxyRequest *request_unref(ProxyRequest *req) {
        if (!req || --req->n_ref > 0)
                return NULL;

        if (req->proxy)
                LIST_UNLINK(req->proxy->requests, req);
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
        free(req->model_requested);
        free(req->method);
        free(req->target);
        free(req->path);
        free(req->session_id);
        return mfree(req);
}

/* Lets libmicrohttpd look at the request again: it queues an answer or sends more of one. */
static void request_wake(ProxyRequest *req) {
        if (req->suspended && req->connection) {
                req->suspended = false;
                MHD_resume_connection(req->connection);
        }
        if (req->proxy)
                mhd_kick(req->proxy);
}

static void queue_unlink(ModelProxy *p, ProxyRequest *req) {
        if (req->queue_prev)
                req->queue_prev->queue_next = req->queue_next;
        else
                p->queue_head = req->queue_next;
        if (req->queue_next)
                req->queue_next->queue_prev = req->queue_prev;
        else
                p->queue_tail = req->queue_prev;
        req->queue_prev = req->queue_next = NULL;
        p->n_queued--;
}

static void queue_push(ModelProxy *p, ProxyRequest *req, bool front) {
        if (front) {
                req->queue_prev = NULL;
                req->queue_next = p->queue_head;
                if (p->queue_head)
                        p->queue_head->queue_prev = req;
                else
                        p->queue_tail = req;
                p->queue_head = req;
        } else {
                req->queue_next = NULL;
                req->queue_prev = p->queue_tail;
                if (p->queue_tail)
                        p->queue_tail->queue_next = req;
                else
                        p->queue_head = req;
                p->queue_tail = req;
        }
        p->n_queued++;
        req->state = REQUEST_QUEUED;
        req->queued_since_usec = now_usec();
}

/* An answer of the proxy's own, Anthropic-shaped. extra: NULL-ended name, value pairs. */
static void request_fail(
        ProxyRequest *req, unsigned status, const char *type, const char *extra[], const char *format, ...)
        __attribute__((format(printf, 5, 6)));

static void request_fail(
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

        if (req->response)
                MHD_destroy_response(req->response);
        req->response = MHD_create_response_from_buffer(
                body ? strlen(body) : 0, body ?: (char *) "", MHD_RESPMEM_MUST_COPY);
        if (req->response) {
                (void) MHD_add_response_header(req->response, "Content-Type", "application/json");
                for (size_t i = 0; extra && extra[i] && extra[i + 1]; i += 2)
                        (void) MHD_add_response_header(req->response, extra[i], extra[i + 1]);
        }
        req->status = status;
        req->state = REQUEST_DONE;
        request_wake(req);
}

static void request_cancel_transfer(ProxyRequest *req) {
        ModelProxy *p = req->proxy;

        if (!req->transfer)
                return;
        curl_glue_remove(p->glue, req->easy);
        req->transfer = false;
        p->in_flight--;
        request_unref(req); /* the transfer's reference */
}

/* The journal record and the usage callback, once per request. */
static void request_record(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        ModelCall call;
        uint64_t end;

        if (req->recorded || !p)
                return;
        req->recorded = true;
        end = req->done_usec ?: now_usec();

        call = (ModelCall){
                .session_id = req->session_id,
                .method = strempty(req->method),
                .path = strempty(req->path),
                .model = req->usage.model[0] ? req->usage.model : strempty(req->model_requested),
                .status = req->queued ? req->status : 0,
                .complete = req->complete,
                .upstream = req->attempts > 0,
                .attempts = req->attempts,
                .usage = req->usage.usage,
                .latency_usec =
                        req->received_usec > 0 && end > req->received_usec ? end - req->received_usec : 0,
                .queued_usec = req->queued_usec,
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
        size_t n = req->buf_end - req->buf_start;

        if (n > 0) {
                if (n > max)
                        n = max;
                memcpy(buf, req->buf + req->buf_start, n);
                req->buf_start += n;
                if (req->buf_start == req->buf_end)
                        req->buf_start = req->buf_end = 0;
                /* Drained enough: let curl go on (it may hand over what it holds right here). */
                if (req->paused && req->transfer &&
                    req->buf_end - req->buf_start <= MODEL_PROXY_BUFFER_MAX / 2) {
                        req->paused = false;
                        (void) curl_easy_pause(req->easy, CURLPAUSE_CONT);
                }
                return (ssize_t) n;
        }
        if (req->upstream_done) {
                if (req->upstream_result != CURLE_OK)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                return MHD_CONTENT_READER_END_OF_STREAM;
        }
        /* Nothing yet: wait off libmicrohttpd's loop until curl brings more. */
        req->suspended = true;
        MHD_suspend_connection(req->connection);
        return 0;
}

static void on_response_free(void *cls) {
        request_unref(cls);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata);
static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata);
static void on_upstream_done(CURL *easy, CURLcode result, void *userdata);

/* The headers of an upstream answer are in: retry it, or start passing it on. */
static void on_upstream_headers(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        const char *content_length = NULL, *content_type = NULL, *retry_after = NULL;
        struct MHD_Response *response;
        uint64_t size = MHD_SIZE_UNKNOWN, wait = 0;

        for (size_t i = 0; i < req->n_headers; i++) {
                if (strcasecmp(req->headers[i].name, "content-length") == 0)
                        content_length = req->headers[i].value;
                else if (strcasecmp(req->headers[i].name, "content-type") == 0)
                        content_type = req->headers[i].value;
                else if (strcasecmp(req->headers[i].name, "retry-after") == 0)
                        retry_after = req->headers[i].value;
        }

        if ((req->upstream_status == 429 || req->upstream_status == 529) &&
            req->attempts <= MODEL_PROXY_MAX_RETRIES && req->connection) {
                if (!retry_after || model_parse_retry_after(retry_after, &wait) < 0)
                        wait = UINT64_C(1000000) << (req->attempts - 1); /* 1 s, 2 s, 4 s */
                if (wait <= (uint64_t) MODEL_PROXY_RETRY_AFTER_MAX_SEC * 1000000) {
                        uint64_t until = now_usec() + wait;

                        /* The whole credential waits, not only this call. */
                        if (until > p->paused_until)
                                p->paused_until = until;
                        req->retrying = true;
                        request_log(
                                req,
                                LOG_INFO,
                                "upstream answered %ld, admission paused for %" PRIu64
                                " ms; retrying (attempt %u)",
                                req->upstream_status,
                                wait / 1000,
                                req->attempts + 1);
                        return;
                }
        }

        if (content_length && !streq(req->method, "HEAD") && req->upstream_status != 204 &&
            req->upstream_status != 304) {
                uint64_t v;

                if (safe_atou64(content_length, &v) >= 0)
                        size = v;
        }

        response =
                MHD_create_response_from_callback(size, 16 * 1024, on_response_read, req, on_response_free);
        if (!response) {
                request_cancel_transfer(req);
                request_fail(req, 502, "api_error", NULL, "cc-docker: the model proxy ran out of memory");
                return;
        }
        request_ref(req); /* the response's reference */
        for (size_t i = 0; i < req->n_headers; i++)
                if (model_response_header_forwarded(req->headers[i].name))
                        (void) MHD_add_response_header(
                                response, req->headers[i].name, req->headers[i].value);

        model_usage_parser_init(&req->usage, model_usage_format_for(content_type));
        if (req->response)
                MHD_destroy_response(req->response);
        req->response = response;
        req->answering = true;
        req->status = (unsigned) req->upstream_status;
        request_wake(req);
}

static size_t on_upstream_header(char *buffer, size_t size, size_t nitems, void *userdata) {
        ProxyRequest *req = userdata;
        size_t n = size * nitems, len = n;
        const char *colon;
        Header *nh;

        while (len > 0 && (buffer[len - 1] == '\n' || buffer[len - 1] == '\r'))
                len--;

        if (len >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
                /* A status line starts a new header block (after a 1xx). */
                const char *sp = memchr(buffer, ' ', len);

                request_reset_answer(req);
                req->upstream_status = sp ? strtol(sp + 1, NULL, 10) : 0;
                return n;
        }
        if (len == 0) {
                if (req->upstream_status >= 200)
                        on_upstream_headers(req);
                return n;
        }

        colon = memchr(buffer, ':', len);
        if (!colon || colon == buffer || req->n_headers >= RESPONSE_HEADERS_MAX)
                return n;
        nh = reallocarray(req->headers, req->n_headers + 1, sizeof(Header));
        if (!nh)
                return 0; /* fails the transfer */
        req->headers = nh;
        {
                const char *v = colon + 1;
                size_t vlen = len - (size_t) (v - buffer);

                while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                        v++;
                        vlen--;
                }
                req->headers[req->n_headers].name = strndup(buffer, (size_t) (colon - buffer));
                req->headers[req->n_headers].value = strndup(v, vlen);
        }
        if (!req->headers[req->n_headers].name || !req->headers[req->n_headers].value) {
                free(req->headers[req->n_headers].name);
                free(req->headers[req->n_headers].value);
                return 0;
        }
        req->n_headers++;
        return n;
}

static size_t on_upstream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        ProxyRequest *req = userdata;
        size_t n = size * nmemb, used = req->buf_end - req->buf_start;

        if (!req->answering || req->state == REQUEST_DONE)
                return n; /* thrown away: a retried 429, or nobody to give it to */

        /* Bounded: a client that does not read pauses the transfer (curl keeps this piece and hands it
         * over again on resumption). An empty buffer takes any piece, so progress is always made. */
        if (used > 0 && used + n > MODEL_PROXY_BUFFER_MAX) {
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

        model_usage_parser_feed(&req->usage, ptr, n);
        request_wake(req);
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

static int slist_add(struct curl_slist **list, const char *line) {
        struct curl_slist *l = curl_slist_append(*list, line);

        if (!l)
                return -ENOMEM;
        *list = l;
        return 0;
}

static int request_build_upstream(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        HeaderCollect hc = {};
        _cleanup_free_ char *url = NULL, *beta = NULL, *beta_line = NULL;
        CURL *easy;
        int r = 0;

        if (asprintf(&url, "%s%s", p->base_url, req->target) < 0)
                return -ENOMEM;

        (void) MHD_get_connection_values(req->connection, MHD_HEADER_KIND, on_request_header, &hc);
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
                r = slist_add(&hc.list, beta_line);
        if (r >= 0 && p->credential_header)
                r = slist_add(&hc.list, p->credential_header);
        /* No "Expect: 100-continue" round trip, and no form content type curl would make up. */
        if (r >= 0)
                r = slist_add(&hc.list, "Expect:");
        if (r >= 0 && !hc.has_content_type)
                r = slist_add(&hc.list, "Content-Type:");
        free(hc.beta);
        if (r < 0) {
                curl_slist_free_all(hc.list);
                return r;
        }
        req->upstream_headers = hc.list;

        easy = curl_easy_init();
        if (!easy)
                return -ENOMEM;
        req->easy = easy;

        if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->upstream_headers) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_upstream_header) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_HEADERDATA, req) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_upstream_write) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_WRITEDATA, req) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SEC) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_SEC) != CURLE_OK ||
            curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
#if LIBCURL_VERSION_NUM >= 0x075500
            curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
#else
            curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK
#endif
        )
                return -EINVAL;

        if (streq(req->method, "GET"))
                r = curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) == CURLE_OK ? 0 : -EINVAL;
        else if (streq(req->method, "HEAD"))
                r = curl_easy_setopt(easy, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : -EINVAL;
        else if (
                curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ?: "") != CURLE_OK ||
                curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len) !=
                        CURLE_OK ||
                (!streq(req->method, "POST") &&
                 curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method) != CURLE_OK))
                r = -EINVAL;
        return r;
}

static int request_send(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        int r;

        if (!req->easy) {
                r = request_build_upstream(req);
                if (r < 0)
                        return r;
        }

        request_reset_answer(req);
        req->retrying = false;
        r = curl_glue_add(p->glue, req->easy, on_upstream_done, req);
        if (r < 0)
                return r;
        request_ref(req); /* the transfer's reference */
        req->transfer = true;
        req->state = REQUEST_UPSTREAM;
        req->attempts++;
        p->in_flight++;
        if (p->in_flight > p->in_flight_peak)
                p->in_flight_peak = p->in_flight;
        return 0;
}

static void on_upstream_done(CURL *easy, CURLcode result, void *userdata) {
        ProxyRequest *req = userdata;
        ModelProxy *p = req->proxy;

        req->transfer = false;
        p->in_flight--;

        if (req->retrying && req->connection && req->state == REQUEST_UPSTREAM) {
                /* Back to the front of the queue: it was admitted before everything waiting. */
                queue_push(p, req, true);
        } else if (req->state == REQUEST_UPSTREAM && !req->answering) {
                /* Nothing came back: no connection, or the upstream hung up before its headers. */
                request_log(req, LOG_WARNING, "upstream call failed: %s", curl_easy_strerror(result));
                request_fail(
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
                req->upstream_done = true;
                req->upstream_result = result;
                req->state = REQUEST_DONE;
                req->done_usec = now_usec();
                request_wake(req);
        }

        proxy_pump(p);
        request_unref(req); /* the transfer's reference */
}

/* ---- admission ---- */

static void admit_timer_arm(ModelProxy *p, uint64_t when) {
        (void) sd_event_source_set_time(p->admit_timer, when);
        (void) sd_event_source_set_enabled(p->admit_timer, SD_EVENT_ONESHOT);
}

static void proxy_pump(ModelProxy *p) {
        while (p->queue_head && p->in_flight < p->max_in_flight) {
                ProxyRequest *req = p->queue_head;
                uint64_t now = now_usec(), wait;
                int r;

                if (now < p->paused_until) {
                        admit_timer_arm(p, p->paused_until);
                        return;
                }
                wait = model_token_bucket_wait(&p->bucket, now);
                if (wait > 0) {
                        admit_timer_arm(p, now + wait);
                        return;
                }
                (void) model_token_bucket_take(&p->bucket, now);

                queue_unlink(p, req);
                req->queued_usec += now - req->queued_since_usec;
                r = request_send(req);
                if (r < 0) {
                        request_log(req, LOG_WARNING, "could not start the upstream call: %s", strerror(-r));
                        request_fail(
                                req,
                                502,
                                "api_error",
                                NULL,
                                "cc-docker: the model proxy could not start the call");
                }
        }
}

static int on_admit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        proxy_pump(userdata);
        return 0;
}

/* The request is read: refuse it, or queue it for admission. */
static void request_start(ProxyRequest *req) {
        ModelProxy *p = req->proxy;
        ModelUsageParser scan;

        /* The model the client asked for, for the record (the answer's own wins when it names one). */
        model_usage_parser_init(&scan, MODEL_USAGE_JSON);
        model_usage_parser_feed(&scan, req->body, req->body_len);
        if (scan.model[0])
                req->model_requested = strdup(scan.model);
        model_usage_parser_done(&scan);

        if (p->budget) {
                _cleanup_free_ char *reason = NULL;

                if (!p->budget(req->session_id, &reason, p->userdata)) {
                        static const char *extra[] = { "x-should-retry", "false", NULL };

                        request_log(req, LOG_NOTICE, "call refused: over budget");
                        /* 400 invalid_request_error: the CLI shows it and does not retry. */
                        request_fail(
                                req,
                                400,
                                "invalid_request_error",
                                extra,
                                "cc-docker: this session tree is over its budget (%s)",
                                reason ?: "no more model calls are allowed");
                        return;
                }
        }

        if (p->n_queued >= p->queue_max) {
                static const char *extra[] = { "retry-after", "5", NULL };

                request_log(
                        req,
                        LOG_WARNING,
                        "call refused: the admission queue is full (%u waiting)",
                        p->n_queued);
                request_fail(
                        req,
                        429,
                        "rate_limit_error",
                        extra,
                        "cc-docker: the model proxy's queue is full (%u calls waiting); try again shortly",
                        p->n_queued);
                return;
        }

        queue_push(p, req, false);
        proxy_pump(p);
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

static ProxyRequest *request_new(
        ModelProxy *p,
        struct MHD_Connection *connection,
        ProxyConn *conn,
        const char *url,
        const char *method) {
        ProxyRequest *req;

        req = calloc(1, sizeof(ProxyRequest));
        if (!req)
                return NULL;
        *req = (ProxyRequest){
                .n_ref = 1,
                .proxy = p,
                .session = conn ? conn->session : NULL,
                .connection = connection,
                .state = REQUEST_READING,
                .received_usec = now_usec(),
        };
        LIST_PREPEND(p->requests, req);

        req->session_id = strdup(req->session ? req->session->id : "-");
        req->method = strdup(method);
        req->target = conn && conn->target ? TAKE_PTR(conn->target) : strdup(url);
        if (!req->session_id || !req->method || !req->target)
                return request_unref(req);
        req->path = strndup(req->target, strcspn(req->target, "?"));
        if (!req->path)
                return request_unref(req);
        return req;
}

static bool method_forwarded(const char *method) {
        static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE" };

        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (streq(method, methods[i]))
                        return true;
        return false;
}

static enum MHD_Result request_queue_answer(ProxyRequest *req) {
        enum MHD_Result ret;

        ret = MHD_queue_response(req->connection, req->status, req->response);
        MHD_destroy_response(req->response);
        req->response = NULL;
        req->queued = true;
        return ret;
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

                req = request_new(p, connection, conn, url, method);
                if (!req)
                        return MHD_NO;
                *con_cls = req;

                if (!req->session)
                        request_fail(
                                req,
                                503,
                                "api_error",
                                NULL,
                                "cc-docker: this session's model proxy is closed");
                else if (!model_target_valid(req->target))
                        request_fail(
                                req,
                                404,
                                "not_found_error",
                                NULL,
                                "cc-docker: the model proxy forwards only /v1/... paths");
                else if (!method_forwarded(method))
                        request_fail(
                                req,
                                405,
                                "invalid_request_error",
                                NULL,
                                "cc-docker: method %s is not forwarded",
                                method);
                else {
                        cl = MHD_lookup_connection_value(
                                connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                        if (cl && (safe_atou64(cl, &length) < 0 || length > MODEL_PROXY_BODY_MAX))
                                request_fail(
                                        req,
                                        413,
                                        "request_too_large",
                                        NULL,
                                        "cc-docker: the request body is larger than %u bytes",
                                        MODEL_PROXY_BODY_MAX);
                }
                if (req->response)
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
                        request_fail(
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
        if (req->state == REQUEST_READING) {
                req->received_usec = now_usec();
                request_start(req);
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
        if (req->state == REQUEST_QUEUED) {
                queue_unlink(p, req);
                req->queued_usec += now_usec() - req->queued_since_usec;
        }
        if (req->transfer) {
                /* The client went away: so does the call. */
                request_cancel_transfer(req);
                proxy_pump(p);
        }
        if (!req->done_usec)
                req->done_usec = now_usec();
        req->state = REQUEST_DONE;
        request_record(req);
        request_unref(req);
}

static ProxyConn *proxy_conn_free(ProxyConn *conn) {
        if (!conn)
                return NULL;
        LIST_UNLINK(conn->proxy->conns, conn);
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
        mhd_kick(p);
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
        for (ProxyRequest *req = p->requests, *next; req; req = next) {
                if (req->session != s) {
                        next = req->next;
                        continue;
                }
                request_ref(req);
                req->session = NULL;
                if (req->state == REQUEST_QUEUED) {
                        queue_unlink(p, req);
                        request_fail(req, 503, "api_error", NULL, "cc-docker: the session ended");
                } else if (req->transfer) {
                        request_cancel_transfer(req);
                        req->upstream_done = true;
                        req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                        req->state = REQUEST_DONE;
                        if (!req->response && !req->queued)
                                request_fail(req, 503, "api_error", NULL, "cc-docker: the session ended");
                        else
                                request_wake(req);
                }
                next = req->next;
                request_unref(req);
        }
        proxy_pump(p);

        sd_event_source_disable_unref(s->listen_source);
        safe_close(s->listen_fd);
        if (s->socket_path && unlink(s->socket_path) < 0 && errno != ENOENT)
                log_debug("model proxy: could not remove %s: %m", s->socket_path);
        LIST_UNLINK(p->sessions, s);
        free(s->socket_path);
        free(s->id);
        mhd_kick(p);
        return mfree(s);
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

void model_proxy_session_totals(const ModelProxySession *s, ModelSessionTotals *ret) {
        if (!ret)
                return;
        *ret = s ? s->totals : (ModelSessionTotals){};
}

unsigned model_proxy_in_flight(const ModelProxy *p) {
        return p ? p->in_flight : 0;
}

unsigned model_proxy_in_flight_peak(const ModelProxy *p) {
        return p ? p->in_flight_peak : 0;
}

/* ---- the proxy ---- */

ModelProxy *model_proxy_free(ModelProxy *p) {
        if (!p)
                return NULL;

        while (p->sessions)
                model_proxy_session_free(p->sessions);

        /* Whatever is left (connections of no session): answered, so nothing stays suspended, since
         * libmicrohttpd must not be stopped with suspended connections. */
        for (ProxyRequest *req = p->requests, *next; req; req = next) {
                request_ref(req);
                if (req->state == REQUEST_QUEUED)
                        queue_unlink(p, req);
                if (req->transfer)
                        request_cancel_transfer(req);
                if (req->connection && !req->queued && !req->response)
                        request_fail(req, 503, "api_error", NULL, "cc-docker: the model proxy is stopping");
                if (!req->upstream_done) {
                        req->upstream_done = true;
                        req->upstream_result = CURLE_ABORTED_BY_CALLBACK;
                }
                request_wake(req);
                next = req->next;
                request_unref(req);
        }
        if (p->mhd)
                for (unsigned i = 0; i < 3; i++)
                        (void) MHD_run(p->mhd);

        mhd_event_detach(&p->mhd_event);
        sd_event_source_disable_unref(p->admit_timer);
        if (p->mhd)
                MHD_stop_daemon(p->mhd); /* closes the connections: their requests are released */
        while (p->conns)
                proxy_conn_free(p->conns);
        /* Requests still referenced by nothing but a transfer were released with it; any left over
         * lose their link to the proxy. */
        while (p->requests) {
                ProxyRequest *req = p->requests;

                LIST_UNLINK(p->requests, req);
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
        unsigned rpm;
        int r;

        if (!event || !cfg || !ret || isempty(cfg->upstream_base_url))
                return -EINVAL;
        if (!startswith(cfg->upstream_base_url, "http://") &&
            !startswith(cfg->upstream_base_url, "https://"))
                return log_error_errno(EINVAL, "model proxy: the upstream URL must be http:// or https://");
        if (cfg->credential_kind != MODEL_CREDENTIAL_NONE && isempty(cfg->credential))
                return -EINVAL;

        p = calloc(1, sizeof(ModelProxy));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        p->credential_kind = cfg->credential_kind;
        p->max_in_flight = cfg->max_in_flight ?: DEFAULT_MAX_IN_FLIGHT;
        p->queue_max = cfg->queue_max ?: DEFAULT_QUEUE_MAX;
        p->on_usage = cfg->on_usage;
        p->budget = cfg->budget;
        p->userdata = cfg->userdata;
        rpm = cfg->requests_per_minute ?: DEFAULT_REQUESTS_PER_MINUTE;
        /* Ten seconds' worth of requests may go at once; after that, one every 60/rpm seconds. */
        model_token_bucket_init(&p->bucket, rpm, (rpm + 5) / 6, now_usec());

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
                r = sd_event_add_time(event, &p->admit_timer, CLOCK_MONOTONIC, 0, 1000, on_admit_timer, p);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->admit_timer, SD_EVENT_OFF);
        if (r < 0)
                return log_error_errno(r, "model proxy: failed to add libmicrohttpd to the event loop: %m");
        (void) sd_event_source_set_description(p->mhd_event.io, "model-proxy-mhd");
        (void) sd_event_source_set_description(p->admit_timer, "model-proxy-admit");

        *ret = TAKE_PTR(p);
        return 0;
}

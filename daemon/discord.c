/* discord: see discord.h. One operation (HumanSinkOp) has at most one request at a time; requests wait
 * in one FIFO queue until the global limit, their route's bucket and the in-flight cap let them go.
 * A question is two requests (the message, then the thread from it); a watch is a read repeated every
 * poll interval until a person replies. Discord's facts are REFERENCE.md C.1. */
#define _GNU_SOURCE
#include "discord.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "config-build.h"
#include "curl-glue.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define DISCORD_USER_AGENT "DiscordBot (https://github.com/cc-docker/cc-docker, " PROJECT_VERSION ")"
#define DISCORD_RESPONSE_MAX (4U * 1024U * 1024U)
#define DISCORD_CONNECT_TIMEOUT_MSEC 10000L
#define DISCORD_REQUEST_TIMEOUT_MSEC 30000L
/* Requests on the wire at once, across routes; one per route bucket. */
#define DISCORD_IN_FLIGHT_MAX 4U
/* Discord allows 50 requests a second per bot; we stay under it on our own. */
#define DISCORD_GLOBAL_PER_SEC 45U
/* A post rate limited this many times in a row is reported -EAGAIN (the core tries again later). */
#define DISCORD_MAX_RATE_LIMITED 50U
#define DISCORD_BACKOFF_FIRST_USEC (500U * USEC_PER_MSEC)
#define DISCORD_BACKOFF_MAX_USEC (60U * USEC_PER_SEC)
/* Message content is at most 2000 characters; a thread name at most 100. */
#define DISCORD_CONTENT_MAX 2000U
#define DISCORD_THREAD_NAME_MAX 100U
/* Buckets beyond this many are pruned of the idle ones. */
#define DISCORD_BUCKETS_PRUNE 256U
#define ZWSP "\xe2\x80\x8b"

typedef enum OpKind {
        OP_NOTICE,
        OP_QUESTION,
        OP_IN_THREAD,
        OP_WATCH,
} OpKind;

typedef enum OpState {
        OP_IDLE,     /* waiting on its own timer (backoff, next poll) */
        OP_QUEUED,   /* in the queue */
        OP_IN_FLIGHT /* its request is on the wire */
} OpState;

typedef struct DiscordBucket {
        char *key; /* method, route and major parameter: "POST /channels/123/messages" */
        bool in_flight;
        bool known;          /* remaining and reset_usec come from headers */
        unsigned remaining;  /* requests left until reset_usec */
        uint64_t reset_usec; /* CLOCK_MONOTONIC */
} DiscordBucket;

struct HumanSinkOp {
        Discord *discord;
        HumanSinkOp *prev, *next;   /* every op of the client */
        HumanSinkOp *qprev, *qnext; /* the queue, while OP_QUEUED */
        OpKind kind;
        OpState state;
        unsigned step; /* questions: 0 the message, 1 the thread */

        HumanPostDone done;
        HumanReplyFn reply_fn;
        void *userdata;

        char *channel_id; /* where the post goes or the watch reads */
        char *body;       /* the message's JSON */
        char *thread_name;
        char *message_id; /* a question's message, once posted */
        uint64_t cursor;  /* a watch: replies after this id */

        unsigned failures;     /* 5xx and network failures in a row */
        unsigned rate_limited; /* 429s in a row */
        sd_event_source *timer;

        /* The request on the wire. */
        CURL *easy;
        struct curl_slist *headers;
        char *url;
        char *request_body;
        char *response;
        size_t response_size, response_allocated;
        bool response_too_big;
        char error_buffer[CURL_ERROR_SIZE];
        DiscordBucket *bucket;
        /* Its answer's headers. */
        bool h_has_remaining, h_global;
        unsigned h_remaining;
        double h_reset_after, h_retry_after;
        char h_scope[16];
};

struct Discord {
        sd_event *event;
        CurlGlue *glue;
        char *api_url;
        char *channel_id;
        char *authorization; /* "Authorization: Bot <token>", wiped when freed */
        unsigned max_retries;
        uint64_t poll_usec;
        char self_id[24]; /* our user id, learnt from our first message */

        HumanSinkOp *ops;
        unsigned n_ops;
        HumanSinkOp *queue_head, *queue_tail;
        unsigned in_flight;
        Hashmap *buckets;
        uint64_t global_until_usec; /* a global 429: nothing goes before this */
        uint64_t window_start_usec; /* our own global limit: requests in the current second */
        unsigned window_count;
        sd_event_source *dispatch_timer;
        sd_event_source *dispatch_defer;
};

static void discord_schedule(Discord *d);

bool discord_snowflake_parse(const char *s, uint64_t *ret) {
        uint64_t v = 0;
        size_t n;

        if (isempty(s))
                return false;
        n = strlen(s);
        if (n > 20 || strspn(s, "0123456789") != n)
                return false;
        for (const char *p = s; *p; p++) {
                unsigned digit = (unsigned) (*p - '0');

                if (v > (UINT64_MAX - digit) / 10)
                        return false;
                v = v * 10 + digit;
        }
        if (ret)
                *ret = v;
        return true;
}

char *discord_neutralise_mentions(const char *text) {
        size_t n = 0, len;
        char *out, *o;

        if (!text)
                return NULL;
        len = strlen(text);
        for (size_t i = 0; i < len; i++)
                if (text[i] == '@' || (text[i] == '<' && text[i + 1] == '#'))
                        n++;
        out = malloc(len + n * (sizeof(ZWSP) - 1) + 1);
        if (!out)
                return NULL;
        o = out;
        for (size_t i = 0; i < len; i++) {
                *o++ = text[i];
                if (text[i] == '<' && text[i + 1] == '#') {
                        *o++ = text[++i];
                        o = stpcpy(o, ZWSP);
                } else if (text[i] == '@')
                        o = stpcpy(o, ZWSP);
        }
        *o = '\0';
        return out;
}

/* The byte length of the first max characters (code points) of s: cuts never split a character. */
static size_t utf8_prefix_bytes(const char *s, size_t max, bool *ret_cut) {
        size_t chars = 0, i = 0;

        while (s[i]) {
                size_t l = 1;

                if (chars == max) {
                        *ret_cut = true;
                        return i;
                }
                while ((s[i + l] & 0xC0) == 0x80)
                        l++;
                i += l;
                chars++;
        }
        *ret_cut = false;
        return i;
}

static size_t utf8_chars(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                if ((*s & 0xC0) != 0x80)
                        n++;
        return n;
}

/* -- requests */

static void op_request_done(HumanSinkOp *op) {
        if (op->easy) {
                curl_glue_remove(op->discord->glue, op->easy);
                curl_easy_cleanup(op->easy);
                op->easy = NULL;
        }
        /* The Authorization header is a copy in the list: wipe it before it is freed. */
        for (struct curl_slist *l = op->headers; l; l = l->next)
                explicit_bzero(l->data, strlen(l->data));
        curl_slist_free_all(op->headers);
        op->headers = NULL;
        op->url = mfree(op->url);
        op->request_body = mfree(op->request_body);
        op->response = mfree(op->response);
        op->response_size = op->response_allocated = 0;
        op->response_too_big = false;
        if (op->bucket) {
                op->bucket->in_flight = false;
                op->bucket = NULL;
        }
        if (op->state == OP_IN_FLIGHT) {
                op->discord->in_flight--;
                op->state = OP_IDLE;
        }
}

static void queue_remove(Discord *d, HumanSinkOp *op) {
        if (op->state != OP_QUEUED)
                return;
        if (op->qprev)
                op->qprev->qnext = op->qnext;
        else
                d->queue_head = op->qnext;
        if (op->qnext)
                op->qnext->qprev = op->qprev;
        else
                d->queue_tail = op->qprev;
        op->qprev = op->qnext = NULL;
        op->state = OP_IDLE;
}

/* front: a request that was rate limited keeps its place before later ones. */
static void queue_add(Discord *d, HumanSinkOp *op, bool front) {
        op->state = OP_QUEUED;
        if (front) {
                op->qprev = NULL;
                op->qnext = d->queue_head;
                if (d->queue_head)
                        d->queue_head->qprev = op;
                else
                        d->queue_tail = op;
                d->queue_head = op;
        } else {
                op->qnext = NULL;
                op->qprev = d->queue_tail;
                if (d->queue_tail)
                        d->queue_tail->qnext = op;
                else
                        d->queue_head = op;
                d->queue_tail = op;
        }
        discord_schedule(d);
}

static HumanSinkOp *op_free(HumanSinkOp *op) {
        Discord *d;

        if (!op)
                return NULL;
        d = op->discord;
        queue_remove(d, op);
        op_request_done(op);
        sd_event_source_disable_unref(op->timer);
        LIST_REMOVE(d->ops, op);
        d->n_ops--;
        free(op->channel_id);
        free(op->body);
        free(op->thread_name);
        free(op->message_id);
        free(op);
        discord_schedule(d);
        return NULL;
}

/* The route and its major parameter, as Discord keys buckets: ids other than the first are templated. */
static char *route_key(const char *method, const char *path) {
        char *k, *o;
        bool first = true;

        k = malloc(strlen(method) + 1 + strlen(path) + 1);
        if (!k)
                return NULL;
        o = stpcpy(k, method);
        *o++ = ' ';
        for (const char *p = path; *p;) {
                if (*p >= '0' && *p <= '9' && p > path && p[-1] == '/') {
                        size_t n = strspn(p, "0123456789");

                        if (first) {
                                memcpy(o, p, n);
                                o += n;
                                first = false;
                        } else
                                *o++ = '#';
                        p += n;
                } else if (*p == '?')
                        break;
                else
                        *o++ = *p++;
        }
        *o = '\0';
        return k;
}

static DiscordBucket *bucket_get(Discord *d, const char *key) {
        DiscordBucket *b = hashmap_get(d->buckets, key);

        if (b)
                return b;
        if (hashmap_size(d->buckets) >= DISCORD_BUCKETS_PRUNE) {
                uint64_t now = event_now_usec(d->event, CLOCK_MONOTONIC);
                DiscordBucket *o;
                Iterator i;

                HASHMAP_FOREACH(o, d->buckets, i)
                if (!o->in_flight && (!o->known || o->reset_usec <= now)) {
                        hashmap_remove(d->buckets, o->key);
                        free(o->key);
                        free(o);
                }
        }
        b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
        b->key = strdup(key);
        if (!b->key || hashmap_put(d->buckets, b->key, b) < 0) {
                free(b->key);
                free(b);
                return NULL;
        }
        return b;
}

static size_t op_on_write(char *data, size_t size, size_t nmemb, void *userdata) {
        HumanSinkOp *op = userdata;
        size_t n = size * nmemb;

        if (n > DISCORD_RESPONSE_MAX || op->response_size > DISCORD_RESPONSE_MAX - n) {
                op->response_too_big = true;
                return 0;
        }
        if (op->response_size + n + 1 > op->response_allocated) {
                size_t a = op->response_allocated ?: 4096;
                char *p;

                while (a < op->response_size + n + 1)
                        a *= 2;
                p = realloc(op->response, a);
                if (!p)
                        return 0;
                op->response = p;
                op->response_allocated = a;
        }
        memcpy(op->response + op->response_size, data, n);
        op->response_size += n;
        op->response[op->response_size] = '\0';
        return n;
}

static bool header_value(const char *line, size_t len, const char *name, char *buf, size_t bufsize) {
        size_t n = strlen(name), v;

        if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
                return false;
        line += n + 1;
        len -= n + 1;
        while (len > 0 && (*line == ' ' || *line == '\t')) {
                line++;
                len--;
        }
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
                len--;
        v = len < bufsize - 1 ? len : bufsize - 1;
        memcpy(buf, line, v);
        buf[v] = '\0';
        return true;
}

static size_t op_on_header(char *data, size_t size, size_t nmemb, void *userdata) {
        HumanSinkOp *op = userdata;
        size_t n = size * nmemb;
        char v[64];

        if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
                /* A new response (after a 100 or a redirect): forget the previous one's headers. */
                op->h_has_remaining = op->h_global = false;
                op->h_reset_after = op->h_retry_after = -1;
                op->h_scope[0] = '\0';
        } else if (header_value(data, n, "x-ratelimit-remaining", v, sizeof(v))) {
                uint64_t r;

                if (safe_atou64(v, &r) >= 0) {
                        op->h_has_remaining = true;
                        op->h_remaining = r > UINT_MAX ? UINT_MAX : (unsigned) r;
                }
        } else if (header_value(data, n, "x-ratelimit-reset-after", v, sizeof(v)))
                op->h_reset_after = strtod(v, NULL);
        else if (header_value(data, n, "retry-after", v, sizeof(v)))
                op->h_retry_after = strtod(v, NULL);
        else if (header_value(data, n, "x-ratelimit-global", v, sizeof(v)))
                op->h_global = strcasecmp(v, "true") == 0;
        else
                (void) header_value(data, n, "x-ratelimit-scope", op->h_scope, sizeof(op->h_scope));
        return n;
}

static void op_on_done(CURL *easy, CURLcode result, void *userdata);

/* Puts op's request (method and path under the API URL, JSON body or NULL) on the wire. */
static int op_start(HumanSinkOp *op, const char *method, const char *path, const char *body) {
        Discord *d = op->discord;
        int r;

        op->easy = curl_easy_init();
        if (!op->easy)
                return -ENOMEM;
        if (asprintf(&op->url, "%s%s", d->api_url, path) < 0) {
                op->url = NULL;
                return -ENOMEM;
        }
        op->headers = curl_slist_append(NULL, d->authorization);
        if (!op->headers)
                return -ENOMEM;
        if (body) {
                struct curl_slist *l = curl_slist_append(op->headers, "Content-Type: application/json");

                if (!l)
                        return -ENOMEM;
                op->headers = l;
                op->request_body = strdup(body);
                if (!op->request_body)
                        return -ENOMEM;
        }
        {
                struct curl_slist *l = curl_slist_append(op->headers, "Expect:");

                if (!l)
                        return -ENOMEM;
                op->headers = l;
        }
        op->error_buffer[0] = '\0';
        op->h_has_remaining = op->h_global = false;
        op->h_reset_after = op->h_retry_after = -1;
        op->h_scope[0] = '\0';

        if (curl_easy_setopt(op->easy, CURLOPT_URL, op->url) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_CONNECTTIMEOUT_MS, DISCORD_CONNECT_TIMEOUT_MSEC) !=
                    CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_TIMEOUT_MS, DISCORD_REQUEST_TIMEOUT_MSEC) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_USERAGENT, DISCORD_USER_AGENT) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, op->headers) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_ERRORBUFFER, op->error_buffer) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_WRITEFUNCTION, op_on_write) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_WRITEDATA, op) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_HEADERFUNCTION, op_on_header) != CURLE_OK ||
            curl_easy_setopt(op->easy, CURLOPT_HEADERDATA, op) != CURLE_OK)
                return -EINVAL;
        if (streq(method, "POST")) {
                if (curl_easy_setopt(op->easy, CURLOPT_POSTFIELDS, op->request_body ?: "") != CURLE_OK ||
                    curl_easy_setopt(
                            op->easy,
                            CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) strlen(op->request_body ?: "")) != CURLE_OK)
                        return -EINVAL;
        } else if (curl_easy_setopt(op->easy, CURLOPT_HTTPGET, 1L) != CURLE_OK)
                return -EINVAL;

        r = curl_glue_add(d->glue, op->easy, op_on_done, op);
        if (r < 0)
                return r;
        op->state = OP_IN_FLIGHT;
        d->in_flight++;
        return 0;
}

/* What op sends next: the method, the path (into buf) and the body. */
static void op_next_request(
        HumanSinkOp *op, const char **ret_method, char *buf, size_t size, const char **ret_body) {
        switch (op->kind) {
        case OP_NOTICE:
        case OP_IN_THREAD:
                snprintf(buf, size, "/channels/%s/messages", op->channel_id);
                *ret_method = "POST";
                *ret_body = op->body;
                return;
        case OP_QUESTION:
                if (op->step == 0) {
                        snprintf(buf, size, "/channels/%s/messages", op->channel_id);
                        *ret_body = op->body;
                } else {
                        snprintf(
                                buf,
                                size,
                                "/channels/%s/messages/%s/threads",
                                op->channel_id,
                                op->message_id);
                        *ret_body = op->thread_name;
                }
                *ret_method = "POST";
                return;
        case OP_WATCH:
                snprintf(
                        buf,
                        size,
                        "/channels/%s/messages?after=%" PRIu64 "&limit=100",
                        op->channel_id,
                        op->cursor);
                *ret_method = "GET";
                *ret_body = NULL;
                return;
        }
}

/* -- finishing */

static void op_fail(HumanSinkOp *op, int r, const char *error) {
        HumanPostDone done = op->done;
        HumanReplyFn reply_fn = op->reply_fn;
        void *userdata = op->userdata;
        bool watch = op->kind == OP_WATCH;

        op_free(op);
        if (watch)
                reply_fn(userdata, r, error, NULL, NULL, NULL);
        else
                done(userdata, r, error, NULL, NULL);
}

static void op_posted(HumanSinkOp *op, const char *message_id, const char *thread_id) {
        HumanPostDone done = op->done;
        void *userdata = op->userdata;
        _cleanup_free_ char *m = strdup(message_id), *t = thread_id ? strdup(thread_id) : NULL;

        op_free(op);
        if (!m || (thread_id && !t))
                done(userdata, -ENOMEM, "out of memory", NULL, NULL);
        else
                done(userdata, 0, NULL, m, t);
}

static int op_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HumanSinkOp *op = userdata;

        op->timer = sd_event_source_disable_unref(op->timer);
        queue_add(op->discord, op, false);
        return 0;
}

static void op_wait(HumanSinkOp *op, uint64_t usec) {
        int r;

        op->timer = sd_event_source_disable_unref(op->timer);
        r = sd_event_add_time_relative(
                op->discord->event, &op->timer, CLOCK_MONOTONIC, usec, 0, op_on_timer, op);
        if (r < 0) {
                op_fail(op, -EAGAIN, "Discord: cannot arm a retry timer");
                return;
        }
}

static uint64_t backoff_usec(unsigned failures) {
        uint64_t u = DISCORD_BACKOFF_FIRST_USEC;

        for (unsigned i = 1; i < failures && u < DISCORD_BACKOFF_MAX_USEC; i++)
                u *= 2;
        return u < DISCORD_BACKOFF_MAX_USEC ? u : DISCORD_BACKOFF_MAX_USEC;
}

/* A transient failure: again after a backoff, or -EAGAIN to the core once a post has had its retries.
 * A watch keeps trying (the question waits for Discord to come back). */
static void op_transient(HumanSinkOp *op, const char *what) {
        op->failures++;
        if (op->kind != OP_WATCH && op->failures > op->discord->max_retries) {
                _cleanup_free_ char *m = NULL;

                if (asprintf(&m, "Discord unavailable after %u attempts: %s", op->failures, what) < 0)
                        m = NULL;
                op_fail(op, -EAGAIN, m ?: "Discord unavailable");
                return;
        }
        log_debug("Discord: %s; trying again (%u)", what, op->failures);
        op_wait(op, backoff_usec(op->failures));
}

static const char *author_name(json_t *author) {
        const char *s = json_string_value(json_object_get(author, "global_name"));

        if (isempty(s))
                s = json_string_value(json_object_get(author, "username"));
        return s ?: "";
}

static int compare_messages(const void *a, const void *b) {
        uint64_t x = 0, y = 0;

        (void) discord_snowflake_parse(json_string_value(json_object_get(*(json_t *const *) a, "id")), &x);
        (void) discord_snowflake_parse(json_string_value(json_object_get(*(json_t *const *) b, "id")), &y);
        return x < y ? -1 : x > y;
}

/* A page of a watched thread, newest first: the first person's message after the cursor, oldest first. */
static void watch_on_page(HumanSinkOp *op, json_t *page) {
        _cleanup_free_ json_t **v = NULL;
        size_t n = json_array_size(page);

        if (!json_is_array(page)) {
                op_transient(op, "Discord answered a read with something other than a list");
                return;
        }
        if (n > 0) {
                v = calloc(n, sizeof(*v));
                if (!v) {
                        op_transient(op, "out of memory");
                        return;
                }
                for (size_t i = 0; i < n; i++)
                        v[i] = json_array_get(page, i);
                qsort(v, n, sizeof(*v), compare_messages);
        }
        for (size_t i = 0; i < n; i++) {
                json_t *author = json_object_get(v[i], "author");
                const char *id = json_string_value(json_object_get(v[i], "id"));
                const char *author_id = json_string_value(json_object_get(author, "id"));
                json_int_t type = json_integer_value(json_object_get(v[i], "type"));
                uint64_t sf;

                if (!discord_snowflake_parse(id, &sf) || sf <= op->cursor)
                        continue;
                op->cursor = sf;
                /* Not a bot, not us, and a message a person typed (0) or a reply (19). */
                if (json_is_true(json_object_get(author, "bot")) ||
                    streq_ptr(author_id, op->discord->self_id) || (type != 0 && type != 19))
                        continue;
                {
                        HumanReplyFn fn = op->reply_fn;
                        void *userdata = op->userdata;
                        _cleanup_free_ char *rid = strdup(id),
                                            *text = strdup(strempty(
                                                    json_string_value(json_object_get(v[i], "content")))),
                                            *who = strdup(author_name(author));

                        op_free(op);
                        if (!rid || !text || !who)
                                fn(userdata, -ENOMEM, "out of memory", NULL, NULL, NULL);
                        else
                                fn(userdata, 0, NULL, rid, text, who);
                        return;
                }
        }
        op->failures = 0;
        if (n >= 100)
                queue_add(op->discord, op, false); /* more after this page */
        else
                op_wait(op, op->discord->poll_usec);
}

static void op_on_success(HumanSinkOp *op, json_t *reply) {
        const char *id = json_string_value(json_object_get(reply, "id"));

        op->failures = op->rate_limited = 0;
        if (op->kind == OP_WATCH) {
                watch_on_page(op, reply);
                return;
        }
        if (!discord_snowflake_parse(id, NULL)) {
                op_fail(op, -EPROTO, "Discord answered a post without a message id");
                return;
        }
        if (op->step == 0 && isempty(op->discord->self_id)) {
                const char *self =
                        json_string_value(json_object_get(json_object_get(reply, "author"), "id"));

                if (discord_snowflake_parse(self, NULL))
                        snprintf(op->discord->self_id, sizeof(op->discord->self_id), "%s", self);
        }
        if (op->kind != OP_QUESTION) {
                op_posted(op, id, NULL);
                return;
        }
        if (op->step == 0) {
                op->message_id = strdup(id);
                if (!op->message_id) {
                        op_fail(op, -ENOMEM, "out of memory");
                        return;
                }
                op->step = 1;
                queue_add(op->discord, op, true);
                return;
        }
        op_posted(op, op->message_id, id);
}

static void op_on_rate_limited(HumanSinkOp *op, json_t *reply) {
        Discord *d = op->discord;
        uint64_t now = event_now_usec(d->event, CLOCK_MONOTONIC), wait;
        json_t *ra = json_object_get(reply, "retry_after");
        double secs = json_is_number(ra) ? json_number_value(ra) : op->h_retry_after;
        bool global = json_is_true(json_object_get(reply, "global")) || op->h_global ||
                streq(op->h_scope, "global");
        DiscordBucket *b = op->bucket;

        if (!(secs >= 0) || secs > 3600)
                secs = 1;
        wait = (uint64_t) (secs * USEC_PER_SEC) + 1;
        if (global) {
                if (d->global_until_usec < now + wait)
                        d->global_until_usec = now + wait;
        } else if (b) {
                b->known = true;
                b->remaining = 0;
                b->reset_usec = now + wait;
        }
        log_debug("Discord: rate limited (%s) for %.3f s", global ? "global" : "route", secs);
        op->rate_limited++;
        op_request_done(op);
        if (op->kind != OP_WATCH && op->rate_limited > DISCORD_MAX_RATE_LIMITED) {
                op_fail(op, -EAGAIN, "Discord rate limited this post too many times");
                return;
        }
        queue_add(d, op, true);
}

static void op_on_done(CURL *easy, CURLcode result, void *userdata) {
        HumanSinkOp *op = userdata;
        Discord *d = op->discord;
        _cleanup_(json_decrefp) json_t *reply = NULL;
        _cleanup_free_ char *msg = NULL;
        long status = 0;
        uint64_t now = event_now_usec(d->event, CLOCK_MONOTONIC);

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (op->bucket && op->h_has_remaining) {
                op->bucket->known = true;
                op->bucket->remaining = op->h_remaining;
                op->bucket->reset_usec = now +
                        (op->h_reset_after > 0 && op->h_reset_after < 3600
                                 ? (uint64_t) (op->h_reset_after * USEC_PER_SEC)
                                 : 0);
        }
        if (result == CURLE_OK && op->response_size > 0)
                reply = json_loadb(op->response, op->response_size, JSON_DECODE_ANY, NULL);

        if (result != CURLE_OK) {
                if (asprintf(
                            &msg,
                            "%s",
                            !isempty(op->error_buffer) ? op->error_buffer : curl_easy_strerror(result)) < 0)
                        msg = NULL;
                op_request_done(op);
                op_transient(op, msg ?: "request failed");
                return;
        }
        if (status == 429) {
                op_on_rate_limited(op, reply);
                return;
        }
        op_request_done(op);

        if (status >= 200 && status < 300) {
                if (!reply) {
                        op_transient(op, "Discord answered with invalid JSON");
                        return;
                }
                op_on_success(op, reply);
                return;
        }
        if (status >= 500 || status < 200) {
                if (asprintf(&msg, "HTTP %ld from Discord", status) < 0)
                        msg = NULL;
                op_transient(op, msg ?: "HTTP error from Discord");
                return;
        }

        {
                const char *m = json_string_value(json_object_get(reply, "message"));
                json_int_t code = json_integer_value(json_object_get(reply, "code"));
                int r;

                /* A thread already made from our message (a retry after a lost answer) is ours. */
                if (op->kind == OP_QUESTION && op->step == 1 && code == 160004) {
                        op_posted(op, op->message_id, op->message_id);
                        return;
                }
                r = status == 401 ? -EACCES : status == 403 ? -EPERM : status == 404 ? -ENOENT : -EPROTO;
                if (asprintf(
                            &msg,
                            "Discord refused the request (HTTP %ld, code %lld): %.200s%s",
                            status,
                            (long long) code,
                            strempty(m),
                            status == 401           ? " (check the bot token)"
                                    : status == 403 ? " (check the bot's permissions in the channel)"
                                                    : "") < 0)
                        msg = NULL;
                log_debug("%s", strempty(msg));
                op_fail(op, r, msg ?: "Discord refused the request");
        }
}

/* -- dispatch */

static int discord_on_dispatch_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void discord_dispatch(Discord *d) {
        uint64_t now = event_now_usec(d->event, CLOCK_MONOTONIC), wake = UINT64_MAX;
        HumanSinkOp *op, *next;

        if (now < d->global_until_usec)
                wake = d->global_until_usec;
        else
                for (op = d->queue_head; op && d->in_flight < DISCORD_IN_FLIGHT_MAX; op = next) {
                        char path[256];
                        const char *method = NULL, *body = NULL;
                        _cleanup_free_ char *key = NULL;
                        DiscordBucket *b;
                        int r;

                        next = op->qnext;
                        if (now >= d->window_start_usec + USEC_PER_SEC) {
                                d->window_start_usec = now;
                                d->window_count = 0;
                        }
                        if (d->window_count >= DISCORD_GLOBAL_PER_SEC) {
                                wake = d->window_start_usec + USEC_PER_SEC;
                                break;
                        }
                        op_next_request(op, &method, path, sizeof(path), &body);
                        key = route_key(method, path);
                        b = key ? bucket_get(d, key) : NULL;
                        if (!b) {
                                /* A callback may free any op: stop walking, go on from the loop. */
                                queue_remove(d, op);
                                op_transient(op, "out of memory");
                                discord_schedule(d);
                                break;
                        }
                        if (b->in_flight)
                                continue;
                        if (b->known && b->remaining == 0 && now < b->reset_usec) {
                                if (b->reset_usec < wake)
                                        wake = b->reset_usec;
                                continue;
                        }
                        queue_remove(d, op);
                        r = op_start(op, method, path, body);
                        if (r < 0) {
                                op_request_done(op);
                                op_transient(op, "cannot start a request");
                                discord_schedule(d);
                                break;
                        }
                        op->bucket = b;
                        b->in_flight = true;
                        if (b->known && b->remaining > 0)
                                b->remaining--;
                        d->window_count++;
                }

        d->dispatch_timer = sd_event_source_disable_unref(d->dispatch_timer);
        if (wake != UINT64_MAX && d->queue_head)
                (void) sd_event_add_time(
                        d->event,
                        &d->dispatch_timer,
                        CLOCK_MONOTONIC,
                        wake,
                        0,
                        discord_on_dispatch_timer,
                        d);
}

static int discord_on_dispatch_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Discord *d = userdata;

        d->dispatch_timer = sd_event_source_disable_unref(d->dispatch_timer);
        discord_dispatch(d);
        return 0;
}

static int discord_on_dispatch_defer(sd_event_source *s, void *userdata) {
        Discord *d = userdata;

        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        discord_dispatch(d);
        return 0;
}

/* Dispatches from the loop, never from inside the caller: callbacks never run inside a call. */
static void discord_schedule(Discord *d) {
        if (d->dispatch_defer)
                (void) sd_event_source_set_enabled(d->dispatch_defer, SD_EVENT_ONESHOT);
}

/* -- the sink */

static const char *kind_title(const char *kind) {
        if (streq_ptr(kind, "question"))
                return "\xe2\x9d\x93 **Question**"; /* ❓ */
        if (streq_ptr(kind, "permission"))
                return "\xf0\x9f\x94\x90 **Permission request** (answer `allow` or `deny`)"; /* 🔐 */
        return "\xf0\x9f\x94\x94 **Notice**";                                                /* 🔔 */
}

/* The message's content: a header line (urgency, kind, session, the id to answer elsewhere with), the
 * text with its mentions neutralised, cut so the whole is at most 2000 characters. */
static char *format_content(const HumanPost *p, bool in_thread) {
        _cleanup_free_ char *head = NULL, *foot = NULL, *text = NULL, *out = NULL;
        bool question = !streq_ptr(p->kind, "notification");
        size_t budget, cut_bytes;
        bool cut;
        int r;

        /* In a thread the core's own words (a reminder, or that it was answered elsewhere), as they are. */
        if (in_thread)
                r = asprintf(&head, "%s", p->urgent ? "\xf0\x9f\x9a\xa8 **URGENT** " : "");
        else
                r = asprintf(
                        &head,
                        "%s%s from session `%s` \xc2\xb7 id `%s`\n",
                        p->urgent ? "\xf0\x9f\x9a\xa8 **URGENT** " : "",
                        kind_title(p->kind),
                        strempty(p->session_id),
                        strempty(p->interaction_id));
        if (r < 0)
                return NULL;
        if (question && (!in_thread || p->attempt > 1))
                r = asprintf(
                        &foot,
                        "\n-# Reply in this thread, or elsewhere: `ccdockerctl answer %s TEXT`",
                        strempty(p->interaction_id));
        else
                r = asprintf(&foot, "%s", "");
        if (r < 0)
                return NULL;

        text = discord_neutralise_mentions(p->text);
        if (!text)
                return NULL;
        if (utf8_chars(head) + utf8_chars(foot) + 16 > DISCORD_CONTENT_MAX)
                return NULL;
        budget = DISCORD_CONTENT_MAX - utf8_chars(head) - utf8_chars(foot);
        cut_bytes = utf8_prefix_bytes(text, budget, &cut);
        if (cut) /* room for the ellipsis */
                cut_bytes = utf8_prefix_bytes(text, budget - 1, &cut);
        if (asprintf(&out, "%s%.*s%s%s", head, (int) cut_bytes, text, cut ? "\xe2\x80\xa6" : "", foot) < 0)
                return NULL;
        return TAKE_PTR(out);
}

/* A nonce Discord dedups a resend with (enforce_nonce): the same post of the same record, retried by us
 * or by the core, is posted once. At most 25 characters. */
static void post_nonce(const HumanPost *p, const char *what, char buf[static 26]) {
        _cleanup_free_ char *s = NULL;
        uint64_t h;

        if (asprintf(
                    &s,
                    "%s|%s|%u|%s|%s",
                    strempty(p->interaction_id),
                    what,
                    p->attempt,
                    strempty(p->thread_id),
                    strempty(p->text)) < 0)
                s = NULL;
        h = string_hash(s ?: strempty(p->interaction_id));
        snprintf(buf, 26, "cc%016" PRIx64, h);
}

static char *message_body(const HumanPost *p, bool in_thread, const char *what) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_free_ char *content = format_content(p, in_thread);
        char nonce[26];

        if (!content)
                return NULL;
        post_nonce(p, what, nonce);
        j = json_pack(
                "{s:s, s:{s:[]}, s:s, s:b}",
                "content",
                content,
                "allowed_mentions",
                "parse",
                "nonce",
                nonce,
                "enforce_nonce",
                1);
        return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

static char *thread_body(const HumanPost *p) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        _cleanup_free_ char *name = NULL, *flat = NULL;
        size_t cut_bytes;
        bool cut;

        flat = discord_neutralise_mentions(strempty(p->text));
        if (!flat)
                return NULL;
        for (char *c = flat; *c; c++)
                if (*c == '\n' || *c == '\r' || *c == '\t')
                        *c = ' ';
        cut_bytes = utf8_prefix_bytes(flat, 60, &cut);
        if (asprintf(
                    &name,
                    "%s %.8s: %.*s%s",
                    streq_ptr(p->kind, "permission") ? "Permission" : "Question",
                    strempty(p->interaction_id),
                    (int) cut_bytes,
                    flat,
                    cut ? "\xe2\x80\xa6" : "") < 0)
                return NULL;
        if (utf8_chars(name) > DISCORD_THREAD_NAME_MAX)
                name[utf8_prefix_bytes(name, DISCORD_THREAD_NAME_MAX, &cut)] = '\0';
        /* 1440: a day without activity archives it; a reply unarchives it. */
        j = json_pack("{s:s, s:i}", "name", name, "auto_archive_duration", 1440);
        return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

static int op_new(Discord *d, OpKind kind, const char *channel_id, HumanSinkOp **ret) {
        HumanSinkOp *op;

        if (d->n_ops >= DISCORD_MAX_OPS)
                return -ENOBUFS;
        if (!discord_snowflake_parse(channel_id, NULL))
                return -EINVAL;
        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->discord = d;
        op->kind = kind;
        op->channel_id = strdup(channel_id);
        if (!op->channel_id) {
                free(op);
                return -ENOMEM;
        }
        LIST_PREPEND(d->ops, op);
        d->n_ops++;
        *ret = op;
        return 0;
}

static int discord_post(
        Discord *d, OpKind kind, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret) {
        HumanSinkOp *op;
        int r;

        if (!d || !p || !done || isempty(p->text))
                return -EINVAL;
        r = op_new(d, kind, kind == OP_IN_THREAD ? p->thread_id : d->channel_id, &op);
        if (r < 0)
                return r;
        op->done = done;
        op->userdata = userdata;
        op->body = message_body(
                p,
                kind == OP_IN_THREAD,
                kind == OP_QUESTION         ? "q"
                        : kind == OP_NOTICE ? "n"
                                            : "t");
        if (kind == OP_QUESTION)
                op->thread_name = thread_body(p);
        if (!op->body || (kind == OP_QUESTION && !op->thread_name)) {
                op_free(op);
                return -ENOMEM;
        }
        queue_add(d, op, false);
        if (ret)
                *ret = op;
        return 0;
}

static int sink_post_notice(
        void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret) {
        return discord_post(sink, OP_NOTICE, p, done, userdata, ret);
}

static int sink_post_question(
        void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret) {
        return discord_post(sink, OP_QUESTION, p, done, userdata, ret);
}

static int sink_post_in_thread(
        void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret) {
        if (!p || !discord_snowflake_parse(p->thread_id, NULL))
                return -EINVAL;
        return discord_post(sink, OP_IN_THREAD, p, done, userdata, ret);
}

static int sink_watch_replies(
        void *sink,
        const char *thread_id,
        const char *after_id,
        HumanReplyFn fn,
        void *userdata,
        HumanSinkOp **ret) {
        Discord *d = sink;
        HumanSinkOp *op;
        uint64_t cursor;
        int r;

        if (!d || !fn || !discord_snowflake_parse(thread_id, &cursor))
                return -EINVAL;
        /* The thread's id is its first message's: every reply is after it. */
        if (after_id && !discord_snowflake_parse(after_id, &cursor))
                return -EINVAL;
        r = op_new(d, OP_WATCH, thread_id, &op);
        if (r < 0)
                return r;
        op->reply_fn = fn;
        op->userdata = userdata;
        op->cursor = cursor;
        queue_add(d, op, false);
        if (ret)
                *ret = op;
        return 0;
}

static void sink_cancel(void *sink, HumanSinkOp *op) {
        if (op)
                op_free(op);
}

static const HumanSinkVtable discord_vtable = {
        .surface = "discord",
        .post_notice = sink_post_notice,
        .post_question = sink_post_question,
        .post_in_thread = sink_post_in_thread,
        .watch_replies = sink_watch_replies,
        .cancel = sink_cancel,
};

HumanSink discord_human_sink(Discord *d) {
        return (HumanSink){ .vtable = &discord_vtable, .sink = d };
}

static bool token_is_valid(const char *t) {
        if (isempty(t) || strlen(t) > DISCORD_TOKEN_MAX)
                return false;
        for (const char *p = t; *p; p++)
                if (*p <= ' ' || *p >= 127)
                        return false;
        return true;
}

int discord_new(sd_event *event, const DiscordConfig *config, Discord **ret) {
        _cleanup_(discord_freep) Discord *d = NULL;
        size_t n;
        int r;

        if (!event || !config || !ret)
                return -EINVAL;
        if (!config->api_url || !http_url_is_valid(config->api_url))
                return log_error_errno(EINVAL, "DiscordAPIURL= must be an http(s) URL.");
        if (!discord_snowflake_parse(config->channel_id, NULL))
                return log_error_errno(EINVAL, "DiscordChannelID= must be a channel id (a snowflake).");
        if (!token_is_valid(config->token))
                return log_error_errno(
                        EINVAL,
                        "The Discord bot token is empty, too long, or has spaces or control characters.");

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(event);
        d->max_retries = config->max_retries;
        d->poll_usec = config->poll_usec ?: DISCORD_POLL_INTERVAL_SEC_DEFAULT * USEC_PER_SEC;
        d->api_url = strdup(config->api_url);
        d->channel_id = strdup(config->channel_id);
        d->buckets = hashmap_new();
        if (!d->api_url || !d->channel_id || !d->buckets)
                return -ENOMEM;
        n = strlen(d->api_url);
        while (n > 0 && d->api_url[n - 1] == '/')
                d->api_url[--n] = '\0';
        if (asprintf(&d->authorization, "Authorization: Bot %s", config->token) < 0) {
                d->authorization = NULL;
                return -ENOMEM;
        }
        r = curl_glue_new(event, &d->glue);
        if (r < 0)
                return r;
        r = sd_event_add_defer(event, &d->dispatch_defer, discord_on_dispatch_defer, d);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(d->dispatch_defer, SD_EVENT_OFF);
        *ret = TAKE_PTR(d);
        return 0;
}

Discord *discord_free(Discord *d) {
        DiscordBucket *b;
        Iterator i;

        if (!d)
                return NULL;
        /* Frees without dispatching: op_free() schedules, and the defer source is gone below. */
        while (d->ops)
                op_free(d->ops);
        HASHMAP_FOREACH(b, d->buckets, i) {
                free(b->key);
                free(b);
        }
        hashmap_free(d->buckets);
        d->dispatch_timer = sd_event_source_disable_unref(d->dispatch_timer);
        d->dispatch_defer = sd_event_source_disable_unref(d->dispatch_defer);
        if (d->glue)
                curl_glue_unref(d->glue);
        if (d->authorization)
                explicit_bzero(d->authorization, strlen(d->authorization));
        free(d->authorization);
        free(d->api_url);
        free(d->channel_id);
        sd_event_unref(d->event);
        return mfree(d);
}

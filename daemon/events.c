/* Session output (DESIGN.md decision 6): every batch of events goes into SQLite in one transaction first,
 * then out to Redis (XADD to the bounded stream session:{id}:output and PUBLISH on the channel of the same
 * name, pipelined through hiredis's async API on our sd-event loop) and to local subscribers (socketpairs
 * handed out by Attach, one write each per batch). SQLite is the truth; Redis is caught up from it. Per
 * session the bus knows the highest seq the stream holds: after every (re)connect it asks the stream
 * (XREVRANGE ... COUNT 1) for each session it knows and, slice by slice, for every session with stored
 * events, then publishes what is missing in order, a chunk at a time, before new events are published
 * live; so the stream gets each event exactly once and a subscriber that stays connected sees them all in
 * order. A local subscriber first gets its replay from SQLite a slice at a time, then live events; one
 * that lets its buffer pass a bound is dropped, and the daemon never blocks on any of them. */
#define _GNU_SOURCE
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "hashmap.h"
#include "log.h"
#include "redis-sdevent.h"
#include "util.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)

/* The stream keeps about this many entries (MAXLEN ~: trimmed in whole nodes, which is cheap). Older
 * events than that are never re-published: they would be trimmed at once. */
#define STREAM_MAXLEN 10000
#define STREAM_MAXLEN_STR "10000"

#define REDIS_BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define REDIS_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
#define REDIS_RETRY_USEC (1 * USEC_PER_SEC)
/* Events read from SQLite per catch-up step; the next step starts when Redis has answered them all. */
#define REDIS_CATCHUP_CHUNK 1000
/* XADDs of one session, and bytes of all, awaiting a reply before publishing pauses and continues from
 * SQLite once Redis has answered: bounds what hiredis buffers for a Redis that is slow or stuck. */
#define REDIS_MAX_INFLIGHT 20000
#define REDIS_MAX_INFLIGHT_BYTES (64U * 1024 * 1024)
/* Sessions with events looked up per slice of the scan after a (re)connect. */
#define REDIS_SCAN_CHUNK 256

/* A local subscriber that lets this much pile up is dropped. */
#define SUBSCRIBER_MAX_BUFFER (32U * 1024 * 1024)
/* The replay from SQLite is read in slices of about this size, each once the previous one is written. */
#define SUBSCRIBER_REPLAY_BYTES (1024U * 1024)
#define SUBSCRIBER_REPLAY_CHUNK 1000

/* The longest line prefix: {"seq":N,"time":N,"data": with two 20-digit numbers. */
#define LINE_PREFIX_MAX 80

typedef enum RedisState {
        REDIS_UNKNOWN, /* what the stream holds is not known: ask once connected */
        REDIS_SYNCING, /* XREVRANGE sent */
        REDIS_CATCHUP, /* publishing the backlog from SQLite, a chunk at a time */
        REDIS_LIVE,    /* caught up: appended events are published as they come */
} RedisState;

/* Pending bytes: data[start, end). */
typedef struct Buffer {
        char *data;
        size_t start, end, cap;
} Buffer;

typedef struct BusSession BusSession;
typedef struct Subscriber Subscriber;

typedef struct Inflight {
        uint64_t seq;
        size_t bytes; /* of the XADD and the PUBLISH */
} Inflight;

struct Subscriber {
        BusSession *session;
        int fd;
        sd_event_source *io;
        Buffer out;
        uint64_t queued; /* the highest seq put into out (or since, before the first) */
        bool live;       /* the replay from SQLite is done: appended events are queued as they come */
        bool ending;     /* the session ended: EOF once everything is written */
        Subscriber *prev, *next;
};

struct BusSession {
        EventBus *bus;
        char *id;
        char *key; /* "session:{id}:output", the stream and the channel */
        size_t key_len;
        BusSession *hash_next;

        Subscriber *subscribers;

        /* Active (appended to or attached, and not ended): kept when idle. A session found by the scan,
         * or ended, goes once nothing is left to do for it. */
        bool keep;
        bool from_scan; /* its XREVRANGE is counted in the bus's scan_pending */

        RedisState redis;
        uint64_t sent;      /* highest seq sent to the current connection, or found in the stream */
        uint64_t published; /* highest seq whose XADD Redis acknowledged */
        bool xadd_failing;  /* an error reply was logged; quiet until one succeeds */

        /* The XADDs awaiting a reply, oldest first (replies come in order). */
        Inflight *inflight;
        size_t inflight_head, n_inflight, inflight_cap;
};

/* One line of the batch being appended, as offsets into the bus's scratch buffer. */
typedef struct BatchLine {
        uint64_t seq, time;
        size_t line_off, line_len; /* the line without its newline */
        size_t data_off, data_len;
} BatchLine;

struct EventBus {
        sd_event *event;
        Store *store;
        bool freeing;

        char *redis_socket; /* NULL: no Redis */
        redisAsyncContext *redis;
        bool redis_connected;
        bool redis_quiet; /* a connect failure was logged; the next ones go to debug */
        uint64_t backoff_usec;
        size_t inflight_bytes;
        sd_event_source *reconnect_timer;
        sd_event_source *retry_timer;

        /* The scan of every session with events after a (re)connect: in slices, the next after
         * scan_cursor once the XREVRANGEs of the previous slice are answered. */
        bool scanning;
        char *scan_cursor;
        unsigned scan_pending;

        BusSession **buckets;
        size_t n_buckets, n_sessions;

        /* Reused from batch to batch. */
        Buffer scratch;
        BatchLine *lines;
        size_t lines_cap;
        StoreEvent *store_events;
        size_t store_events_cap;
        Buffer line; /* one line of a catch-up */
};

static void redis_sync(BusSession *s);
static void redis_catchup(BusSession *s);
static void bus_scan_step(EventBus *b);
static void bus_schedule_retry(EventBus *b);

/* ---- buffers ---- */

static size_t buffer_len(const Buffer *buf) {
        return buf->end - buf->start;
}

static void buffer_done(Buffer *buf) {
        buf->data = mfree(buf->data);
        buf->start = buf->end = buf->cap = 0;
}

static int buffer_reserve(Buffer *buf, size_t extra) {
        size_t len = buffer_len(buf), cap;
        char *p;

        if (buf->start > 0 && (len == 0 || buf->start >= buf->cap / 2 || buf->end + extra > buf->cap)) {
                memmove(buf->data, buf->data + buf->start, len);
                buf->start = 0;
                buf->end = len;
        }
        if (buf->end + extra <= buf->cap)
                return 0;

        if (extra > SIZE_MAX / 2 - buf->end)
                return -ENOMEM;
        cap = buf->cap > 0 ? buf->cap : 4096;
        while (cap < buf->end + extra)
                cap *= 2;
        p = realloc(buf->data, cap);
        if (!p)
                return -ENOMEM;
        buf->data = p;
        buf->cap = cap;
        return 0;
}

static int buffer_append(Buffer *buf, const void *data, size_t len) {
        int r;

        r = buffer_reserve(buf, len);
        if (r < 0)
                return r;
        memcpy(buf->data + buf->end, data, len);
        buf->end += len;
        return 0;
}

static void buffer_consume(Buffer *buf, size_t len) {
        buf->start += len;
        if (buf->start == buf->end)
                buf->start = buf->end = 0;
}

/* After a batch: a scratch buffer that grew for one huge batch does not keep the memory. */
static void buffer_reset(Buffer *buf) {
        buf->start = buf->end = 0;
        if (buf->cap > 4U * 1024 * 1024)
                buffer_done(buf);
}

static int buffer_append_json(const char *text, size_t len, void *userdata) {
        return buffer_append(userdata, text, len) < 0 ? -1 : 0;
}

static int line_prefix(char *p, size_t size, uint64_t seq, uint64_t time) {
        return snprintf(p, size, "{\"seq\":%" PRIu64 ",\"time\":%" PRIu64 ",\"data\":", seq, time);
}

/* ---- the session registry ---- */

static BusSession *bus_session_find(EventBus *b, const char *id) {
        if (b->n_buckets == 0)
                return NULL;
        for (BusSession *s = b->buckets[string_hash(id) & (b->n_buckets - 1)]; s; s = s->hash_next)
                if (streq(s->id, id))
                        return s;
        return NULL;
}

static int bus_grow(EventBus *b) {
        size_t n = b->n_buckets > 0 ? b->n_buckets * 2 : 64;
        BusSession **buckets;

        buckets = calloc(n, sizeof(BusSession *));
        if (!buckets)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_buckets; i++)
                while (b->buckets[i]) {
                        BusSession *s = b->buckets[i];
                        size_t h = string_hash(s->id) & (n - 1);

                        b->buckets[i] = s->hash_next;
                        s->hash_next = buckets[h];
                        buckets[h] = s;
                }
        free(b->buckets);
        b->buckets = buckets;
        b->n_buckets = n;
        return 0;
}

static void subscriber_free(Subscriber *sub);

static void bus_session_free(BusSession *s) {
        EventBus *b;

        if (!s)
                return;
        b = s->bus;

        while (s->subscribers)
                subscriber_free(s->subscribers);

        for (BusSession **p = &b->buckets[string_hash(s->id) & (b->n_buckets - 1)]; *p; p = &(*p)->hash_next)
                if (*p == s) {
                        *p = s->hash_next;
                        b->n_sessions--;
                        break;
                }

        free(s->inflight);
        free(s->key);
        free(s->id);
        free(s);
}

static int bus_session_new(EventBus *b, const char *id, BusSession **ret) {
        BusSession *s;
        size_t h;
        int r;

        if (b->n_sessions >= b->n_buckets) {
                r = bus_grow(b);
                if (r < 0)
                        return r;
        }

        s = calloc(1, sizeof(BusSession));
        if (!s)
                return -ENOMEM;
        s->bus = b;
        s->id = strdup(id);
        if (!s->id || asprintf(&s->key, "session:%s:output", id) < 0) {
                free(s->id);
                free(s);
                return -ENOMEM;
        }
        s->key_len = strlen(s->key);
        s->redis = REDIS_UNKNOWN;

        h = string_hash(id) & (b->n_buckets - 1);
        s->hash_next = b->buckets[h];
        b->buckets[h] = s;
        b->n_sessions++;

        *ret = s;
        return 0;
}

/* The session's entry, made if needed; an active one (appended to or attached) is kept. */
static int bus_session_get(EventBus *b, const char *id, BusSession **ret) {
        BusSession *s;
        int r;

        s = bus_session_find(b, id);
        if (!s) {
                r = bus_session_new(b, id, &s);
                if (r < 0)
                        return r;
                s->keep = true;
                if (b->redis_connected)
                        redis_sync(s);
        }
        *ret = s;
        return 0;
}

static bool bus_session_idle(BusSession *s) {
        if (s->keep || s->subscribers || s->n_inflight > 0 || s->from_scan)
                return false;
        /* Connected: only once the stream has everything. Otherwise the scan after the next connect
         * finds the session again from its stored events. */
        return !s->bus->redis_connected || s->redis == REDIS_LIVE;
}

static void bus_session_maybe_free(BusSession *s) {
        if (s && !s->bus->freeing && bus_session_idle(s))
                bus_session_free(s);
}

/* Calls fn for every session; fn may free the session it is given, and no other. */
static void bus_foreach_session(EventBus *b, void (*fn)(BusSession *s)) {
        for (size_t i = 0; i < b->n_buckets; i++)
                for (BusSession *s = b->buckets[i], *next; s; s = next) {
                        next = s->hash_next;
                        fn(s);
                }
}

/* ---- Redis: the inflight ring ---- */

static int inflight_reserve(BusSession *s, size_t extra) {
        size_t cap;
        Inflight *p;

        if (s->n_inflight + extra <= s->inflight_cap)
                return 0;

        cap = s->inflight_cap > 0 ? s->inflight_cap : 64;
        while (cap < s->n_inflight + extra)
                cap *= 2;
        p = reallocarray(NULL, cap, sizeof(Inflight));
        if (!p)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_inflight; i++)
                p[i] = s->inflight[(s->inflight_head + i) % s->inflight_cap];
        free(s->inflight);
        s->inflight = p;
        s->inflight_cap = cap;
        s->inflight_head = 0;
        return 0;
}

static void inflight_push(BusSession *s, uint64_t seq, size_t bytes) {
        /* Reserved by the caller. */
        s->inflight[(s->inflight_head + s->n_inflight) % s->inflight_cap] = (Inflight){ seq, bytes };
        s->n_inflight++;
        s->bus->inflight_bytes += bytes;
}

static uint64_t inflight_pop(BusSession *s) {
        uint64_t seq;

        if (s->n_inflight == 0)
                return 0;
        seq = s->inflight[s->inflight_head].seq;
        s->bus->inflight_bytes -= s->inflight[s->inflight_head].bytes;
        s->inflight_head = (s->inflight_head + 1) % s->inflight_cap;
        s->n_inflight--;
        if (s->n_inflight == 0 && s->inflight_cap > 4096) {
                s->inflight = mfree(s->inflight);
                s->inflight_cap = s->inflight_head = 0;
        }
        return seq;
}

/* ---- Redis: publishing ---- */

static void on_xadd_reply(redisAsyncContext *ac, void *reply, void *userdata) {
        BusSession *s = userdata;
        redisReply *rep = reply;
        uint64_t seq;

        seq = inflight_pop(s);

        /* No reply: the connection is gone (or the bus is being freed). The next connection starts from
         * what the stream holds. */
        if (!rep || s->bus->freeing)
                return;

        if (rep->type == REDIS_REPLY_ERROR) {
                if (!s->xadd_failing)
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: Redis refused XADD to %s: %s",
                                s->id,
                                s->key,
                                rep->str,
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                s->xadd_failing = true;
        } else {
                s->xadd_failing = false;
                if (seq > s->published)
                        s->published = seq;
        }

        if (s->n_inflight > 0)
                return;
        if (s->redis == REDIS_CATCHUP)
                redis_catchup(s);
        bus_session_maybe_free(s);
}

/* XADD and PUBLISH of one event, pipelined; the ring has room. -ENOTCONN when hiredis takes no more
 * commands (the connection is closing). */
static int redis_publish_one(
        BusSession *s,
        uint64_t seq,
        uint64_t time,
        const char *data,
        size_t data_len,
        const char *line,
        size_t line_len) {
        redisAsyncContext *ac = s->bus->redis;
        char seq_str[24], time_str[24];
        const char *xadd[12] = {
                "XADD", s->key,   "MAXLEN", "~",  STREAM_MAXLEN_STR, "*", "seq", seq_str,
                "time", time_str, "data",   data,
        };
        size_t xadd_len[12] = { 4, s->key_len, 6, 1, strlen(STREAM_MAXLEN_STR), 1, 3, 0, 4, 0, 4, data_len };
        const char *publish[3] = { "PUBLISH", s->key, line };
        size_t publish_len[3] = { 7, s->key_len, line_len };

        xadd_len[7] = (size_t) snprintf(seq_str, sizeof seq_str, "%" PRIu64, seq);
        xadd_len[9] = (size_t) snprintf(time_str, sizeof time_str, "%" PRIu64, time);

        if (redisAsyncCommandArgv(ac, on_xadd_reply, s, 12, xadd, xadd_len) != REDIS_OK)
                return -ENOTCONN;
        inflight_push(s, seq, data_len + line_len + 2 * s->key_len + 128);
        s->sent = seq;

        /* Best effort, and nobody to tell: pub/sub is at-most-once anyway; the stream is the record. */
        (void) redisAsyncCommandArgv(ac, NULL, NULL, 3, publish, publish_len);
        return 0;
}

typedef struct CatchupChunk {
        BusSession *session;
        bool full; /* stopped early: Redis has enough bytes to answer for */
} CatchupChunk;

static int catchup_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        CatchupChunk *chunk = userdata;
        BusSession *s = chunk->session;
        Buffer *line = &s->bus->line;
        char prefix[LINE_PREFIX_MAX];
        int k, r;

        k = line_prefix(prefix, sizeof prefix, seq, time);
        line->start = line->end = 0;
        r = buffer_append(line, prefix, (size_t) k);
        if (r >= 0)
                r = buffer_append(line, data, data_len);
        if (r >= 0)
                r = buffer_append(line, "}", 1);
        if (r < 0)
                return r;

        r = redis_publish_one(s, seq, time, data, data_len, line->data, buffer_len(line));
        if (r < 0)
                return r;
        if (s->bus->inflight_bytes > REDIS_MAX_INFLIGHT_BYTES) {
                chunk->full = true;
                return 1;
        }
        return 0;
}

/* One step of the catch-up: the next chunk of stored events after s->sent, or live if there are no
 * more. Only with nothing in flight for the session, so that the order holds. */
static void redis_catchup(BusSession *s) {
        CatchupChunk chunk = { .session = s };
        EventBus *b = s->bus;
        uint64_t last;
        int n, r;

        if (!b->redis_connected || b->freeing || s->n_inflight > 0)
                return;
        s->redis = REDIS_CATCHUP;
        if (b->inflight_bytes > REDIS_MAX_INFLIGHT_BYTES) {
                /* Other sessions' events fill the pipeline: try again in a while. */
                bus_schedule_retry(b);
                return;
        }

        r = store_last_seq(b->store, s->id, &last);
        if (r < 0) {
                log_warning_errno(r, "session %s: could not read its events to publish them: %m", s->id);
                bus_schedule_retry(b);
                return;
        }
        if (last <= s->sent) {
                s->redis = REDIS_LIVE;
                return;
        }
        /* What the stream would trim at once is not sent at all. */
        if (last - s->sent > STREAM_MAXLEN)
                s->sent = last - STREAM_MAXLEN;

        r = inflight_reserve(s, REDIS_CATCHUP_CHUNK);
        if (r < 0) {
                log_oom();
                bus_schedule_retry(b);
                return;
        }

        n = store_load_events(b->store, s->id, s->sent, REDIS_CATCHUP_CHUNK, catchup_one, &chunk);
        if (n == -ENOTCONN)
                return; /* the disconnect callback follows */
        if (n < 0) {
                log_warning_errno(n, "session %s: could not read its events to publish them: %m", s->id);
                bus_schedule_retry(b);
                return;
        }
        if (!chunk.full && n < REDIS_CATCHUP_CHUNK)
                s->redis = REDIS_LIVE; /* everything stored is sent; what comes next goes live */
        /* Otherwise the reply to the chunk's last XADD takes the next step. */
}

/* The seq field of the stream's last entry: [[id, [field, value, ...]]]. */
static uint64_t stream_last_seq(const redisReply *rep) {
        const redisReply *entry, *fields;
        uint64_t seq;

        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1)
                return 0;
        entry = rep->element[0];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2)
                return 0;
        fields = entry->element[1];
        if (fields->type != REDIS_REPLY_ARRAY)
                return 0;
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
                const redisReply *k = fields->element[i], *v = fields->element[i + 1];

                if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING && streq(k->str, "seq") &&
                    safe_atou64(v->str, &seq) >= 0)
                        return seq;
        }
        return 0;
}

static void on_xrevrange_reply(redisAsyncContext *ac, void *reply, void *userdata) {
        BusSession *s = userdata;
        EventBus *b = s->bus;
        redisReply *rep = reply;
        bool from_scan = s->from_scan;

        s->from_scan = false;
        if (from_scan && b->scan_pending > 0)
                b->scan_pending--;

        if (!rep || b->freeing) {
                s->redis = REDIS_UNKNOWN;
                return;
        }

        if (rep->type == REDIS_REPLY_ERROR)
                log_warning("session %s: Redis refused XREVRANGE on %s: %s", s->id, s->key, rep->str);
        s->sent = s->published = stream_last_seq(rep);
        log_debug("session %s: the Redis stream holds events up to %" PRIu64 ".", s->id, s->sent);

        redis_catchup(s);
        if (from_scan && b->scan_pending == 0)
                bus_scan_step(b);
        bus_session_maybe_free(s);
}

/* Asks the stream how far it goes; the catch-up follows the answer. */
static void redis_sync(BusSession *s) {
        const char *argv[6] = { "XREVRANGE", s->key, "+", "-", "COUNT", "1" };
        size_t argv_len[6] = { 9, s->key_len, 1, 1, 5, 1 };
        EventBus *b = s->bus;

        s->redis = REDIS_UNKNOWN;
        if (!b->redis_connected)
                return;
        if (redisAsyncCommandArgv(b->redis, on_xrevrange_reply, s, 6, argv, argv_len) != REDIS_OK)
                return;
        s->redis = REDIS_SYNCING;
}

/* A batch just stored: published at once if the session is caught up, else left to the catch-up, which
 * reads it from SQLite. */
static void redis_publish_batch(BusSession *s, const BatchLine *lines, size_t n) {
        EventBus *b = s->bus;
        const char *text = b->scratch.data + b->scratch.start;

        if (!b->redis_connected)
                return;

        switch (s->redis) {
        case REDIS_UNKNOWN:
                redis_sync(s);
                return;
        case REDIS_SYNCING:
        case REDIS_CATCHUP:
                return;
        case REDIS_LIVE:
                break;
        }

        if (lines[0].seq != s->sent + 1 || s->n_inflight + n > REDIS_MAX_INFLIGHT ||
            b->inflight_bytes > REDIS_MAX_INFLIGHT_BYTES || inflight_reserve(s, n) < 0) {
                s->redis = REDIS_CATCHUP;
                redis_catchup(s); /* at once if nothing is in flight, else after the last reply */
                return;
        }

        for (size_t i = 0; i < n; i++)
                if (redis_publish_one(
                            s,
                            lines[i].seq,
                            lines[i].time,
                            text + lines[i].data_off,
                            lines[i].data_len,
                            text + lines[i].line_off,
                            lines[i].line_len) < 0)
                        return;
}

/* ---- Redis: the connection ---- */

static int scan_one(const char *id, uint64_t last_seq, void *userdata) {
        EventBus *b = userdata;
        BusSession *s;
        char *cursor;
        int r;

        cursor = strdup(id);
        if (!cursor)
                return -ENOMEM;

        /* A session with an entry was asked about at the connect or when it was made. */
        if (!bus_session_find(b, id)) {
                r = bus_session_new(b, id, &s);
                if (r < 0) {
                        free(cursor);
                        return r; /* the retry starts again from this one */
                }
                redis_sync(s);
                if (s->redis == REDIS_SYNCING) {
                        s->from_scan = true;
                        b->scan_pending++;
                }
        }

        free(b->scan_cursor);
        b->scan_cursor = cursor;
        return 0;
}

/* The next slice of the scan, once the previous one is answered. */
static void bus_scan_step(EventBus *b) {
        while (b->scanning && b->redis_connected && b->scan_pending == 0) {
                int n;

                n = store_load_event_sessions(b->store, b->scan_cursor, REDIS_SCAN_CHUNK, scan_one, b);
                if (n < 0) {
                        log_warning_errno(n, "Could not list the sessions with events to publish: %m");
                        bus_schedule_retry(b);
                        return;
                }
                if (n < REDIS_SCAN_CHUNK) {
                        b->scanning = false;
                        b->scan_cursor = mfree(b->scan_cursor);
                }
        }
}

static void redis_catchup_stalled(BusSession *s) {
        if (s->redis == REDIS_CATCHUP && s->n_inflight == 0)
                redis_catchup(s);
}

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        EventBus *b = userdata;

        if (!b->redis_connected)
                return 0;
        bus_foreach_session(b, redis_catchup_stalled);
        bus_scan_step(b);
        return 0;
}

static void bus_schedule_retry(EventBus *b) {
        int r;

        if (b->freeing)
                return;
        if (!b->retry_timer)
                r = sd_event_add_time_relative(
                        b->event, &b->retry_timer, CLOCK_MONOTONIC, REDIS_RETRY_USEC, 0, on_retry, b);
        else {
                r = sd_event_source_set_time_relative(b->retry_timer, REDIS_RETRY_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(b->retry_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                log_warning_errno(r, "Could not arm the event bus's retry timer: %m");
}

static void bus_connect(EventBus *b);

static int on_reconnect(sd_event_source *source, uint64_t usec, void *userdata) {
        bus_connect(userdata);
        return 0;
}

static void bus_schedule_reconnect(EventBus *b) {
        int r;

        if (b->freeing || !b->redis_socket)
                return;

        b->backoff_usec = b->backoff_usec == 0 ? REDIS_BACKOFF_MIN_USEC : b->backoff_usec * 2;
        if (b->backoff_usec > REDIS_BACKOFF_MAX_USEC)
                b->backoff_usec = REDIS_BACKOFF_MAX_USEC;

        if (!b->reconnect_timer) {
                r = sd_event_add_time_relative(
                        b->event,
                        &b->reconnect_timer,
                        CLOCK_MONOTONIC,
                        b->backoff_usec,
                        10 * USEC_PER_MSEC,
                        on_reconnect,
                        b);
                if (r >= 0)
                        (void) sd_event_source_set_description(b->reconnect_timer, "redis-reconnect");
        } else {
                r = sd_event_source_set_time_relative(b->reconnect_timer, b->backoff_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(b->reconnect_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                log_error_errno(r, "Could not arm the Redis reconnect timer; events are stored only: %m");
}

static void redis_connect_failed(EventBus *b, const char *why) {
        if (!b->redis_quiet)
                log_warning(
                        "Could not connect to Redis at %s: %s; events are stored and will be published "
                        "once it is reachable.",
                        b->redis_socket,
                        why);
        else
                log_debug("Could not connect to Redis at %s: %s", b->redis_socket, why);
        b->redis_quiet = true;
        bus_schedule_reconnect(b);
}

static void on_redis_connect(const redisAsyncContext *ac, int status) {
        EventBus *b = ac->data;

        if (status != REDIS_OK) {
                /* hiredis frees the context when this returns. */
                b->redis = NULL;
                redis_connect_failed(b, ac->errstr);
                return;
        }

        b->redis_connected = true;
        b->redis_quiet = false;
        b->backoff_usec = 0;
        log_info("Connected to Redis at %s.", b->redis_socket);

        /* Every session known now, then, in slices, every one with stored events. */
        bus_foreach_session(b, redis_sync);

        b->scan_cursor = mfree(b->scan_cursor);
        b->scan_pending = 0;
        b->scanning = true;
        bus_scan_step(b);
}

/* After a disconnect: what the stream holds is to be asked again. */
static void redis_forget(BusSession *s) {
        s->redis = REDIS_UNKNOWN;
        s->from_scan = false;
        bus_session_maybe_free(s);
}

static void on_redis_disconnect(const redisAsyncContext *ac, int status) {
        EventBus *b = ac->data;

        /* Every reply callback has run (with no reply) before this. */
        b->redis = NULL;
        b->redis_connected = false;
        b->scanning = false;
        b->scan_pending = 0;
        b->scan_cursor = mfree(b->scan_cursor);
        if (b->freeing)
                return;

        log_warning(
                "Lost the connection to Redis at %s: %s; reconnecting, events are stored meanwhile.",
                b->redis_socket,
                ac->errstr ?: "closed");
        b->redis_quiet = true;

        bus_foreach_session(b, redis_forget);
        bus_schedule_reconnect(b);
}

static void bus_connect(EventBus *b) {
        redisAsyncContext *ac;
        int r;

        if (b->redis || b->freeing)
                return;

        ac = redisAsyncConnectUnix(b->redis_socket);
        if (!ac) {
                redis_connect_failed(b, "out of memory");
                return;
        }
        if (ac->err) {
                /* A unix socket refuses at once: no such file, or nobody listening. */
                char why[128];

                snprintf(why, sizeof why, "%s", ac->errstr);
                redisAsyncFree(ac);
                redis_connect_failed(b, why);
                return;
        }

        ac->data = b;
        r = redis_sdevent_attach(ac, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                redisAsyncFree(ac);
                redis_connect_failed(b, strerror(-r));
                return;
        }
        (void) redisAsyncSetConnectCallback(ac, on_redis_connect);
        (void) redisAsyncSetDisconnectCallback(ac, on_redis_disconnect);
        b->redis = ac;
}

/* ---- local subscribers ---- */

static void subscriber_free(Subscriber *sub) {
        BusSession *s;

        if (!sub)
                return;
        s = sub->session;

        if (sub->prev)
                sub->prev->next = sub->next;
        else
                s->subscribers = sub->next;
        if (sub->next)
                sub->next->prev = sub->prev;

        sub->io = sd_event_source_disable_unref(sub->io);
        safe_close(sub->fd);
        buffer_done(&sub->out);
        free(sub);
}

/* Writes what is pending, without blocking. -errno when the peer is gone. */
static int subscriber_write(Subscriber *sub) {
        while (buffer_len(&sub->out) > 0) {
                const char *p = sub->out.data + sub->out.start;
                ssize_t k;

                k = send(sub->fd, p, buffer_len(&sub->out), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                buffer_consume(&sub->out, (size_t) k);
        }
        return 0;
}

typedef struct ReplaySlice {
        Subscriber *sub;
        bool full;
} ReplaySlice;

static int replay_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        ReplaySlice *slice = userdata;
        Subscriber *sub = slice->sub;
        char prefix[LINE_PREFIX_MAX];
        int k, r;

        k = line_prefix(prefix, sizeof prefix, seq, time);
        r = buffer_reserve(&sub->out, (size_t) k + data_len + 2);
        if (r < 0)
                return r;
        (void) buffer_append(&sub->out, prefix, (size_t) k);
        (void) buffer_append(&sub->out, data, data_len);
        (void) buffer_append(&sub->out, "}\n", 2);
        sub->queued = seq;

        if (buffer_len(&sub->out) >= SUBSCRIBER_REPLAY_BYTES) {
                slice->full = true;
                return 1;
        }
        return 0;
}

/* The next slice of the replay from SQLite; live once it comes up short. */
static int subscriber_replay(Subscriber *sub) {
        ReplaySlice slice = { .sub = sub };
        int n;

        n = store_load_events(
                sub->session->bus->store,
                sub->session->id,
                sub->queued,
                SUBSCRIBER_REPLAY_CHUNK,
                replay_one,
                &slice);
        if (n < 0)
                return n;
        if (!slice.full && n < SUBSCRIBER_REPLAY_CHUNK)
                sub->live = true;
        return 0;
}

/* Writes, replays further while the socket takes it, and arms EPOLLOUT for the rest. Returns 1 when the
 * subscriber is done (the session ended and everything is written: EOF sent), -errno when it is to be
 * dropped, else 0. */
static int subscriber_pump(Subscriber *sub) {
        int r;

        for (;;) {
                r = subscriber_write(sub);
                if (r < 0)
                        return r;
                if (buffer_len(&sub->out) > 0 || sub->live)
                        break;
                r = subscriber_replay(sub);
                if (r < 0)
                        return r;
        }

        if (buffer_len(&sub->out) == 0 && sub->live && sub->ending) {
                (void) shutdown(sub->fd, SHUT_WR);
                return 1;
        }

        return sd_event_source_set_io_events(
                sub->io, EPOLLRDHUP | (buffer_len(&sub->out) > 0 ? EPOLLOUT : 0));
}

static int on_subscriber_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Subscriber *sub = userdata;
        BusSession *s = sub->session;
        int r;

        if (revents & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                log_debug("session %s: a subscriber closed its end.", s->id);
                subscriber_free(sub);
                bus_session_maybe_free(s);
                return 0;
        }

        r = subscriber_pump(sub);
        if (r != 0) {
                if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                subscriber_free(sub);
                bus_session_maybe_free(s);
        }
        return 0;
}

/* Queues text (whole lines) for a live subscriber: written at once if nothing is pending, the rest kept
 * for EPOLLOUT. -ENOBUFS when the subscriber has let too much pile up. */
static int subscriber_queue(Subscriber *sub, const char *text, size_t len) {
        size_t pending = buffer_len(&sub->out);
        int r;

        if (pending + len > SUBSCRIBER_MAX_BUFFER)
                return -ENOBUFS;

        if (pending == 0) {
                while (len > 0) {
                        ssize_t k = send(sub->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);

                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        break;
                                return -errno;
                        }
                        text += k;
                        len -= (size_t) k;
                }
                if (len == 0)
                        return 0;
        }

        r = buffer_append(&sub->out, text, len);
        if (r < 0)
                return r;
        return sd_event_source_set_io_events(sub->io, EPOLLRDHUP | EPOLLOUT);
}

static void deliver_batch(BusSession *s, const BatchLine *lines, size_t n) {
        const char *text = s->bus->scratch.data + s->bus->scratch.start;
        size_t total = buffer_len(&s->bus->scratch);

        for (Subscriber *sub = s->subscribers, *next; sub; sub = next) {
                size_t first = 0;
                int r;

                next = sub->next;
                if (!sub->live)
                        continue; /* still replaying: it reads these from SQLite */

                while (first < n && lines[first].seq <= sub->queued)
                        first++;
                if (first == n)
                        continue;

                r = subscriber_queue(sub, text + lines[first].line_off, total - lines[first].line_off);
                if (r == -ENOBUFS)
                        log_struct(
                                LOG_WARNING,
                                "MESSAGE=session %s: dropping a subscriber that does not read (%zu bytes unread).",
                                s->id,
                                buffer_len(&sub->out),
                                "CCDOCKER_SESSION=%s",
                                s->id,
                                NULL);
                else if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                if (r < 0) {
                        subscriber_free(sub);
                        continue;
                }
                sub->queued = lines[n - 1].seq;
        }
}

/* ---- the API ---- */

int event_bus_new(sd_event *event, Store *store, const char *redis_socket, EventBus **ret) {
        EventBus *b;

        if (!event || !store || !ret)
                return -EINVAL;

        b = calloc(1, sizeof(EventBus));
        if (!b)
                return -ENOMEM;
        b->event = sd_event_ref(event);
        b->store = store;
        if (!isempty(redis_socket)) {
                b->redis_socket = strdup(redis_socket);
                if (!b->redis_socket) {
                        event_bus_free(b);
                        return -ENOMEM;
                }
                /* The connect finishes on the loop; until then, and whenever Redis is away, events are
                 * stored and published later. */
                bus_connect(b);
        }

        *ret = b;
        return 0;
}

EventBus *event_bus_free(EventBus *b) {
        if (!b)
                return NULL;

        b->freeing = true;
        b->reconnect_timer = sd_event_source_disable_unref(b->reconnect_timer);
        b->retry_timer = sd_event_source_disable_unref(b->retry_timer);

        /* What hiredis has not written yet is dropped: it is in SQLite, and the scan after the next
         * connect, in this process or the next, publishes it. */
        if (b->redis) {
                redisAsyncContext *ac = TAKE_PTR(b->redis);
                redisAsyncFree(ac);
        }

        for (size_t i = 0; i < b->n_buckets; i++)
                while (b->buckets[i])
                        bus_session_free(b->buckets[i]);
        free(b->buckets);

        free(b->scan_cursor);
        free(b->redis_socket);
        buffer_done(&b->scratch);
        buffer_done(&b->line);
        free(b->lines);
        free(b->store_events);
        sd_event_unref(b->event);
        free(b);
        return NULL;
}

int event_bus_last_seq(EventBus *b, const char *session_id, uint64_t *ret) {
        if (!b || !session_id || !ret)
                return -EINVAL;
        return store_last_seq(b->store, session_id, ret);
}

/* Renders the batch into the scratch buffer: each line {"seq":N,"time":N,"data":...} and a newline, its
 * data serialized once for SQLite, Redis and the subscribers alike. */
static int batch_build(EventBus *b, json_t *events, size_t n) {
        size_t i;
        json_t *e;
        int r;

        if (n > b->lines_cap) {
                BatchLine *lines = reallocarray(b->lines, n, sizeof(BatchLine));
                StoreEvent *se;

                if (!lines)
                        return -ENOMEM;
                b->lines = lines;
                se = reallocarray(b->store_events, n, sizeof(StoreEvent));
                if (!se)
                        return -ENOMEM;
                b->store_events = se;
                b->lines_cap = b->store_events_cap = n;
        }

        buffer_reset(&b->scratch);
        json_array_foreach (events, i, e) {
                json_t *seq = json_object_get(e, "seq"), *time = json_object_get(e, "time"),
                       *data = json_object_get(e, "data");
                char prefix[LINE_PREFIX_MAX];
                BatchLine *l = &b->lines[i];
                int k;

                if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !json_is_integer(time) ||
                    json_integer_value(time) < 0 || !data)
                        return -EINVAL;
                *l = (BatchLine){
                        .seq = (uint64_t) json_integer_value(seq),
                        .time = (uint64_t) json_integer_value(time),
                };
                if (i > 0 && l->seq != b->lines[i - 1].seq + 1)
                        return -EINVAL;

                k = line_prefix(prefix, sizeof prefix, l->seq, l->time);
                l->line_off = buffer_len(&b->scratch);
                r = buffer_append(&b->scratch, prefix, (size_t) k);
                if (r < 0)
                        return r;
                l->data_off = buffer_len(&b->scratch);
                if (json_dump_callback(
                            data, buffer_append_json, &b->scratch, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
                        return -ENOMEM;
                l->data_len = buffer_len(&b->scratch) - l->data_off;
                r = buffer_append(&b->scratch, "}\n", 2);
                if (r < 0)
                        return r;
                l->line_len = buffer_len(&b->scratch) - 1 - l->line_off;
        }

        for (i = 0; i < n; i++)
                b->store_events[i] = (StoreEvent){
                        .seq = b->lines[i].seq,
                        .time_usec = b->lines[i].time,
                        .data = b->scratch.data + b->lines[i].data_off,
                        .data_len = b->lines[i].data_len,
                };
        return 0;
}

int event_bus_append(EventBus *b, const char *session_id, json_t *events) {
        BusSession *s;
        size_t n;
        int r;

        if (!b || !session_id || !json_is_array(events))
                return -EINVAL;
        n = json_array_size(events);
        if (n == 0)
                return 0;

        r = batch_build(b, events, n);
        if (r < 0)
                return r;

        /* The store first: it is the truth, and what Redis and the replays are caught up from. */
        r = store_append_events(b->store, session_id, b->store_events, n);
        if (r < 0)
                return r;

        r = bus_session_get(b, session_id, &s);
        if (r < 0) {
                /* Stored, which is what the caller's ack means; the scan after the next reconnect
                 * publishes them. */
                log_oom();
                return 0;
        }

        redis_publish_batch(s, b->lines, n);
        deliver_batch(s, b->lines, n);
        bus_session_maybe_free(s);
        return 0;
}

static int get_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        json_t *array = userdata, *d;

        d = json_loadb(data, data_len, JSON_DECODE_ANY, NULL);
        if (!d)
                return -EBADMSG;
        if (json_array_append_new(
                    array,
                    json_pack(
                            "{s:I,s:I,s:o}",
                            "seq",
                            (json_int_t) seq,
                            "time",
                            (json_int_t) time,
                            "data",
                            d)) < 0)
                return -ENOMEM;
        return 0;
}

int event_bus_get(EventBus *b, const char *session_id, uint64_t since, unsigned limit, json_t **ret) {
        _cleanup_(json_decrefp) json_t *array = NULL;
        int r;

        if (!b || !session_id || !ret)
                return -EINVAL;

        array = json_array();
        if (!array)
                return -ENOMEM;
        r = store_load_events(b->store, session_id, since, limit, get_one, array);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(array);
        return 0;
}

int event_bus_attach(EventBus *b, const char *session_id, uint64_t since, int *ret_fd) {
        _cleanup_close_ int ours = -EBADF, theirs = -EBADF;
        int pair[2], flags, r;
        BusSession *s;
        Subscriber *sub;

        if (!b || !session_id || !ret_fd)
                return -EINVAL;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
                return -errno;
        ours = pair[0];
        theirs = pair[1];

        /* Non-blocking is for our end; the reader gets an ordinary blocking descriptor. */
        flags = fcntl(theirs, F_GETFL);
        if (flags < 0 || fcntl(theirs, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;

        r = bus_session_get(b, session_id, &s);
        if (r < 0)
                return r;

        sub = calloc(1, sizeof(Subscriber));
        if (!sub) {
                bus_session_maybe_free(s);
                return -ENOMEM;
        }
        sub->session = s;
        sub->fd = TAKE_FD(ours);
        sub->queued = since;
        sub->next = s->subscribers;
        if (s->subscribers)
                s->subscribers->prev = sub;
        s->subscribers = sub;

        r = sd_event_add_io(b->event, &sub->io, sub->fd, EPOLLRDHUP, on_subscriber_io, sub);
        if (r >= 0) {
                (void) sd_event_source_set_description(sub->io, "event-subscriber");
                r = subscriber_pump(sub);
        }
        if (r < 0) {
                subscriber_free(sub);
                bus_session_maybe_free(s);
                return r;
        }
        /* A pump that returned 1 (ending) cannot happen here: a new subscriber is not ending. */

        *ret_fd = TAKE_FD(theirs);
        return 0;
}

void event_bus_session_ended(EventBus *b, const char *session_id) {
        BusSession *s;

        if (!b || !session_id)
                return;
        s = bus_session_find(b, session_id);
        if (!s)
                return;

        s->keep = false;
        for (Subscriber *sub = s->subscribers, *next; sub; sub = next) {
                int r;

                next = sub->next;
                sub->ending = true;
                r = subscriber_pump(sub);
                if (r < 0)
                        log_debug_errno(r, "session %s: dropping a subscriber: %m", s->id);
                if (r != 0)
                        subscriber_free(sub);
        }
        bus_session_maybe_free(s);
}

void event_bus_forget(EventBus *b, const char *session_id) {
        char key[256];
        int n;

        if (!b || !session_id || !b->redis || !b->redis_connected)
                return;
        n = snprintf(key, sizeof(key), "session:%s:output", session_id);
        if (n < 0 || (size_t) n >= sizeof(key))
                return;
        if (redisAsyncCommand(b->redis, NULL, NULL, "DEL %b", key, (size_t) n) != REDIS_OK)
                log_debug("session %s: could not delete its Redis stream", session_id);
}

int event_bus_notify(EventBus *b, const char *channel, json_t *msg) {
        _cleanup_free_ char *text = NULL;
        const char *argv[3];
        size_t argv_len[3];

        if (!b || !channel || !msg)
                return -EINVAL;
        if (!b->redis_connected)
                return 0;
        text = json_dumps(msg, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        argv[0] = "PUBLISH";
        argv[1] = channel;
        argv[2] = text;
        argv_len[0] = 7;
        argv_len[1] = strlen(channel);
        argv_len[2] = strlen(text);
        if (redisAsyncCommandArgv(b->redis, NULL, NULL, 3, argv, argv_len) != REDIS_OK)
                return -ENOTCONN;
        return 1;
}

bool event_bus_redis_connected(EventBus *b) {
        return b && b->redis_connected;
}

int event_bus_published_seq(EventBus *b, const char *session_id, uint64_t *ret) {
        BusSession *s;

        if (!b || !session_id || !ret)
                return -EINVAL;
        s = bus_session_find(b, session_id);
        *ret = s ? s->published : 0;
        return 0;
}

unsigned event_bus_n_subscribers(EventBus *b, const char *session_id) {
        BusSession *s;
        unsigned n = 0;

        if (!b || !session_id)
                return 0;
        s = bus_session_find(b, session_id);
        if (s)
                for (Subscriber *sub = s->subscribers; sub; sub = sub->next)
                        n++;
        return n;
}

bool event_bus_redis_caught_up(EventBus *b) {
        if (!b || !b->redis_connected || b->scanning)
                return false;
        for (size_t i = 0; i < b->n_buckets; i++)
                for (BusSession *s = b->buckets[i]; s; s = s->hash_next)
                        if (s->redis != REDIS_LIVE || s->n_inflight > 0)
                                return false;
        return true;
}

/* The event bus's Redis side (events.c is the rest): XADD to the bounded stream session:{id}:output and
 * PUBLISH on the channel of the same name, pipelined through hiredis's async API on our sd-event loop.
 * Per session the bus knows the highest seq the stream holds: after every (re)connect it asks the stream
 * (XREVRANGE ... COUNT 1) for each session it knows and, slice by slice, for every session with stored
 * events, then publishes what is missing in order, a chunk at a time, before new events are published
 * live; so the stream gets each event exactly once and a subscriber that stays connected sees them all in
 * order. What Redis has not answered is bounded (the inflight ring); past the bound, publishing pauses
 * and continues from SQLite. Also the Redis-only calls of events.h: notices, forgetting a stream, and
 * the state for tests and status. */
#define _GNU_SOURCE
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "events-internal.h"
#include "hashmap.h"
#include "log.h"
#include "redis-sdevent.h"
#include "time-util.h"
#include "util.h"

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

static void redis_catchup(BusSession *s);
static void bus_scan_step(EventBus *b);
static void bus_schedule_retry(EventBus *b);

/* ---- the inflight ring ---- */

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

/* ---- publishing ---- */

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

/* Decimal digits of v, written to end backwards; returns where they start. */
static char *format_u64(char *end, uint64_t v) {
        do {
                *--end = (char) ('0' + v % 10);
                v /= 10;
        } while (v > 0);
        return end;
}

/* Appends one argument of a RESP command: $len CRLF bytes CRLF. The room is reserved by the caller. */
static void resp_arg(Buffer *buf, const char *s, size_t len) {
        char num[24], *p = format_u64(num + sizeof num, len);
        char *out = buf->data + buf->end;

        *out++ = '$';
        memcpy(out, p, (size_t) (num + sizeof num - p));
        out += num + sizeof num - p;
        *out++ = '\r';
        *out++ = '\n';
        memcpy(out, s, len);
        out += len;
        *out++ = '\r';
        *out++ = '\n';
        buf->end = (size_t) (out - buf->data);
}

/* The room resp_format() needs for a command. */
static size_t resp_size(int argc, const size_t *argv_len) {
        size_t need = 16;

        for (int i = 0; i < argc; i++)
                need += argv_len[i] + 32;
        return need;
}

/* A command of argc arguments appended to buf (room reserved by the caller, resp_size()), as
 * redisFormatCommandArgv() would format it, without its printf-style formatting: what that cost was
 * a tenth of the daemon's time at flood. */
static void resp_format(Buffer *buf, int argc, const char *const *argv, const size_t *argv_len) {
        buf->data[buf->end++] = '*';
        {
                char num[24], *p = format_u64(num + sizeof num, (uint64_t) argc);

                memcpy(buf->data + buf->end, p, (size_t) (num + sizeof num - p));
                buf->end += (size_t) (num + sizeof num - p);
        }
        buf->data[buf->end++] = '\r';
        buf->data[buf->end++] = '\n';
        for (int i = 0; i < argc; i++)
                resp_arg(buf, argv[i], argv_len[i]);
}

/* XADD and PUBLISH of one event, pipelined; the ring has room. -ENOTCONN when hiredis takes no more
 * commands (the connection is closing), -ENOMEM. */
static int redis_publish_one(
        BusSession *s,
        uint64_t seq,
        uint64_t time,
        const char *data,
        size_t data_len,
        const char *line,
        size_t line_len) {
        redisAsyncContext *ac = s->bus->redis;
        Buffer *resp = &s->bus->resp;
        char seq_buf[24], time_buf[24];
        const char *seq_str = format_u64(seq_buf + sizeof seq_buf, seq),
                   *time_str = format_u64(time_buf + sizeof time_buf, time);
        const char *xadd[12] = {
                "XADD", s->key,   "MAXLEN", "~",  STREAM_MAXLEN_STR, "*", "seq", seq_str,
                "time", time_str, "data",   data,
        };
        size_t xadd_len[12] = {
                4,
                s->key_len,
                6,
                1,
                strlen(STREAM_MAXLEN_STR),
                1,
                3,
                (size_t) (seq_buf + sizeof seq_buf - seq_str),
                4,
                (size_t) (time_buf + sizeof time_buf - time_str),
                4,
                data_len,
        };
        const char *publish[3] = { "PUBLISH", s->key, line };
        size_t publish_len[3] = { 7, s->key_len, line_len };

        size_t xadd_end;

        /* Both formatted before either is sent: an event's XADD goes with its PUBLISH. */
        resp->start = resp->end = 0;
        if (buffer_reserve(resp, resp_size(12, xadd_len) + resp_size(3, publish_len)) < 0)
                return -ENOMEM;
        resp_format(resp, 12, xadd, xadd_len);
        xadd_end = resp->end;
        resp_format(resp, 3, publish, publish_len);

        if (redisAsyncFormattedCommand(ac, on_xadd_reply, s, resp->data, xadd_end) != REDIS_OK)
                return -ENOTCONN;
        inflight_push(s, seq, data_len + line_len + 2 * s->key_len + 128);
        s->sent = seq;

        /* Nobody to tell if hiredis refuses it now (the connection is closing): pub/sub is at-most-once
         * anyway, and the stream is the record. */
        (void) redisAsyncFormattedCommand(ac, NULL, NULL, resp->data + xadd_end, resp->end - xadd_end);
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
        /* Of what was stored while Redis was away, the part the stream would trim at once is not sent
         * at all: nobody could have been subscribed to it then. A backlog that grew while Redis was up
         * (a flood faster than Redis answers) is sent whole, so that live subscribers miss nothing. */
        if (s->sent < s->stored_offline && last - s->sent > STREAM_MAXLEN)
                s->sent =
                        last - STREAM_MAXLEN < s->stored_offline ? last - STREAM_MAXLEN : s->stored_offline;

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
void redis_sync(BusSession *s) {
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
void redis_publish_batch(BusSession *s, const BatchLine *lines, size_t n) {
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

/* ---- the connection ---- */

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
                s->stored_offline = last_seq;
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

/* A session known before the connect: what it stored until now was stored while Redis was away. */
static void redis_sync_after_connect(BusSession *s) {
        uint64_t last;

        if (store_last_seq(s->bus->store, s->id, &last) >= 0 && last > s->stored_offline)
                s->stored_offline = last;
        redis_sync(s);
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
        bus_foreach_session(b, redis_sync_after_connect);

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

void bus_connect(EventBus *b) {
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

/* For event_bus_free(): the timers go, and so does the connection. What hiredis has not written yet is
 * dropped: it is in SQLite, and the scan after the next connect, in this process or the next, publishes
 * it. */
void bus_redis_close(EventBus *b) {
        b->reconnect_timer = sd_event_source_disable_unref(b->reconnect_timer);
        b->retry_timer = sd_event_source_disable_unref(b->retry_timer);

        if (b->redis) {
                redisAsyncContext *ac = TAKE_PTR(b->redis);
                redisAsyncFree(ac);
        }
}

/* ---- the API ---- */

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

bool event_bus_redis_caught_up(EventBus *b) {
        if (!b || !b->redis_connected || b->scanning)
                return false;
        BusSession *s;
        Iterator i;

        HASHMAP_FOREACH(s, b->sessions, i)
        if (s->redis != REDIS_LIVE || s->n_inflight > 0)
                return false;
        return true;
}

/* The event bus's insides, shared by its three files and by nothing else: events.c (the API, the session
 * registry, store-then-publish), events-redis.c (the stream, the channel and the connection) and
 * events-subscribers.c (Attach fds and their bounded buffers). The public API is events.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "events.h"
#include "hashmap.h"
#include "store.h"

struct redisAsyncContext;

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

        Subscriber *subscribers;

        /* Active (appended to or attached, and not ended): kept when idle. A session found by the scan,
         * or ended, goes once nothing is left to do for it. */
        bool keep;
        bool from_scan; /* its XREVRANGE is counted in the bus's scan_pending */

        RedisState redis;
        uint64_t sent;      /* highest seq sent to the current connection, or found in the stream */
        uint64_t published; /* highest seq whose XADD Redis acknowledged */
        /* The highest seq stored while the bus had no connection to Redis (set at the connect): only
         * those may be left out of a catch-up. What is stored while Redis is up reaches subscribers. */
        uint64_t stored_offline;
        bool xadd_failing; /* an error reply was logged; quiet until one succeeds */

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
        struct redisAsyncContext *redis;
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

        Hashmap *sessions; /* id -> BusSession */

        /* Reused from batch to batch. */
        Buffer scratch;
        BatchLine *lines;
        size_t lines_cap;
        StoreEvent *store_events;
        size_t store_events_cap;
        Buffer line; /* one line of a catch-up */
        Buffer resp; /* one Redis command, formatted (events-redis.c) */
};

/* ---- the session registry (events.c) ---- */

BusSession *bus_session_find(EventBus *b, const char *id);
/* A new entry, not kept (the caller sets keep). */
int bus_session_new(EventBus *b, const char *id, BusSession **ret);
/* The session's entry, made if needed; an active one (appended to or attached) is kept. */
int bus_session_get(EventBus *b, const char *id, BusSession **ret);
/* Frees the entry if nothing is left to do for it. */
void bus_session_maybe_free(BusSession *s);
/* Calls fn for every session; fn may free the session it is given, and no other. */
void bus_foreach_session(EventBus *b, void (*fn)(BusSession *s));

/* ---- Redis (events-redis.c) ---- */

/* Connects (on the loop) to b->redis_socket; on failure retries with a backoff. */
void bus_connect(EventBus *b);
/* The timers and the connection go (event_bus_free()). */
void bus_redis_close(EventBus *b);
/* Asks the stream how far it goes; the catch-up follows the answer. */
void redis_sync(BusSession *s);
/* A batch just stored, in b->scratch: published at once if the session is caught up, else left to the
 * catch-up. */
void redis_publish_batch(BusSession *s, const BatchLine *lines, size_t n);

/* ---- buffers and local subscribers (events-subscribers.c) ---- */

size_t buffer_len(const Buffer *buf);
void buffer_done(Buffer *buf);
int buffer_reserve(Buffer *buf, size_t extra);
int buffer_append(Buffer *buf, const void *data, size_t len);
/* After a batch: a scratch buffer that grew for one huge batch does not keep the memory. */
void buffer_reset(Buffer *buf);
/* A json_dump_callback() appending to the Buffer userdata. */
int buffer_append_json(const char *text, size_t len, void *userdata);
/* Writes the line prefix {"seq":N,"time":N,"data": into p (LINE_PREFIX_MAX bytes); returns its length. */
int line_prefix(char *p, size_t size, uint64_t seq, uint64_t time);

void subscriber_free(Subscriber *sub);
/* A batch just stored, in b->scratch: queued for every live subscriber of the session. */
void deliver_batch(BusSession *s, const BatchLine *lines, size_t n);

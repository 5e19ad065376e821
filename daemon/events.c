/* Session output (DESIGN.md decision 6): every batch of events goes into SQLite in one transaction first,
 * then out to Redis (events-redis.c) and to local subscribers (events-subscribers.c), each line rendered
 * once for all three. SQLite is the truth; Redis and the subscribers' replays are caught up from it. This
 * file holds the API of events.h that is not Redis's or the subscribers' own, the registry of the sessions
 * the bus knows (those appended to or attached, and those the Redis scan found), and store-then-publish.
 * The types shared by the three files are events-internal.h. */
#define _GNU_SOURCE
#include "events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "events-internal.h"
#include "hashmap.h"
#include "jsonrpc.h"
#include "log.h"
#include "util.h"

/* ---- the session registry ---- */

BusSession *bus_session_find(EventBus *b, const char *id) {
        return hashmap_get(b->sessions, id);
}

static void bus_session_free(BusSession *s) {
        EventBus *b;

        if (!s)
                return;
        b = s->bus;

        while (s->subscribers)
                subscriber_free(s->subscribers);
        (void) hashmap_remove(b->sessions, s->id);

        free(s->inflight);
        free(s->key);
        free(s->id);
        free(s);
}

int bus_session_new(EventBus *b, const char *id, BusSession **ret) {
        BusSession *s;
        int r;

        if (!b->sessions) {
                b->sessions = hashmap_new();
                if (!b->sessions)
                        return -ENOMEM;
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

        r = hashmap_put(b->sessions, s->id, s);
        if (r < 0) {
                free(s->key);
                free(s->id);
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* The session's entry, made if needed; an active one (appended to or attached) is kept. */
int bus_session_get(EventBus *b, const char *id, BusSession **ret) {
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

void bus_session_maybe_free(BusSession *s) {
        if (s && !s->bus->freeing && bus_session_idle(s))
                bus_session_free(s);
}

/* Calls fn for every session; fn may free the session it is given, and no other. */
void bus_foreach_session(EventBus *b, void (*fn)(BusSession *s)) {
        BusSession *s;
        Iterator i;

        HASHMAP_FOREACH(s, b->sessions, i)
        fn(s);
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
        bus_redis_close(b);

        {
                BusSession *s;
                Iterator i;

                HASHMAP_FOREACH(s, b->sessions, i)
                bus_session_free(s);
                b->sessions = hashmap_free(b->sessions);
        }

        free(b->scan_cursor);
        free(b->redis_socket);
        buffer_done(&b->scratch);
        buffer_done(&b->line);
        buffer_done(&b->resp);
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

/* Room for n lines of a batch. */
static int batch_reserve(EventBus *b, size_t n) {
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
        return 0;
}

/* Renders the batch into the scratch buffer: each line {"seq":N,"time":N,"data":...} and a newline, its
 * data serialized once for SQLite, Redis and the subscribers alike. */
static int batch_build(EventBus *b, json_t *events, size_t n) {
        size_t i;
        json_t *e;
        int r;

        r = batch_reserve(b, n);
        if (r < 0)
                return r;

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
                        .result = streq_ptr(
                                json_string_value(json_object_get(
                                        json_object_get(json_array_get(events, i), "data"), "type")),
                                "result"),
                };
        return 0;
}

static int batch_commit(EventBus *b, const char *session_id, size_t n, int built);

int event_bus_append(EventBus *b, const char *session_id, json_t *events) {
        if (!b || !session_id || !json_is_array(events))
                return -EINVAL;
        return batch_commit(
                b, session_id, json_array_size(events), batch_build(b, events, json_array_size(events)));
}

/* Renders text events into the scratch buffer as batch_build() does, their data copied as they are. */
static int batch_build_text(EventBus *b, const StoreEvent *events, size_t n) {
        int r;

        r = batch_reserve(b, n);
        if (r < 0)
                return r;

        buffer_reset(&b->scratch);
        for (size_t i = 0; i < n; i++) {
                char prefix[LINE_PREFIX_MAX];
                BatchLine *l = &b->lines[i];
                int k;

                if (!events[i].data || events[i].seq < 1 ||
                    (i > 0 && events[i].seq != events[i - 1].seq + 1))
                        return -EINVAL;
                *l = (BatchLine){ .seq = events[i].seq, .time = events[i].time_usec };
                k = line_prefix(prefix, sizeof prefix, l->seq, l->time);
                r = buffer_reserve(&b->scratch, (size_t) k + events[i].data_len + 2);
                if (r < 0)
                        return r;
                l->line_off = buffer_len(&b->scratch);
                (void) buffer_append(&b->scratch, prefix, (size_t) k);
                l->data_off = buffer_len(&b->scratch);
                (void) buffer_append(&b->scratch, events[i].data, events[i].data_len);
                l->data_len = events[i].data_len;
                (void) buffer_append(&b->scratch, "}\n", 2);
                l->line_len = buffer_len(&b->scratch) - 1 - l->line_off;
        }
        for (size_t i = 0; i < n; i++)
                b->store_events[i] = (StoreEvent){
                        .seq = b->lines[i].seq,
                        .time_usec = b->lines[i].time,
                        .data = b->scratch.data + b->lines[i].data_off,
                        .data_len = b->lines[i].data_len,
                        .result = events[i].result,
                };
        return 0;
}

int event_bus_append_text(EventBus *b, const char *session_id, const StoreEvent *events, size_t n) {
        if (!b || !session_id || (!events && n > 0))
                return -EINVAL;
        return batch_commit(b, session_id, n, batch_build_text(b, events, n));
}

/* Stores the batch of n lines rendered in the scratch buffer (built: what rendering it returned), then
 * publishes it. */
static int batch_commit(EventBus *b, const char *session_id, size_t n, int built) {
        BusSession *s;
        int r;

        if (built < 0)
                return built;
        if (n == 0)
                return 0;

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

/* Stored data parsed back: what a container sent before its lines were bounded (docs/channel.md) may
 * be anything up to 8 MiB, and jansson's tree of it tens of times that. So it is measured first, with
 * the channel's limits; an event over them becomes a placeholder that says how big it was. */
static int event_data_parse(const char *data, size_t data_len, size_t *ret_values, json_t **ret) {
        size_t values = 0;
        json_t *d;

        if (jsonrpc_scan(data, data_len, JSONRPC_MAX_DEPTH, JSONRPC_MAX_VALUES, &values) < 0) {
                d = json_pack("{s:s, s:I}", "type", "oversized", "bytes", (json_int_t) data_len);
                values = 3;
        } else
                d = json_loadb(data, data_len, JSON_DECODE_ANY, NULL);
        if (!d)
                return -EBADMSG;
        if (ret_values)
                *ret_values = values;
        *ret = d;
        return 0;
}

typedef struct GetState {
        json_t *array;
        size_t values; /* parsed so far */
} GetState;

static int get_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        GetState *g = userdata;
        size_t values = 0;
        json_t *d;
        int r;

        r = event_data_parse(data, data_len, &values, &d);
        if (r < 0)
                return r;
        /* However many events were asked for, one call parses at most about one line's worth: the
         * page ends early (never empty), and the caller asks again from its last seq. */
        if (json_array_size(g->array) > 0 && g->values + values > EVENT_BUS_GET_MAX_VALUES) {
                json_decref(d);
                return 1;
        }
        g->values += values;
        if (json_array_append_new(
                    g->array,
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
        GetState g = {};
        int r;

        if (!b || !session_id || !ret)
                return -EINVAL;

        array = json_array();
        if (!array)
                return -ENOMEM;
        g.array = array;
        r = store_load_events(b->store, session_id, since, limit, get_one, &g);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(array);
        return 0;
}

static int last_result_one(uint64_t seq, uint64_t time, const char *data, size_t data_len, void *userdata) {
        return event_data_parse(data, data_len, NULL, userdata);
}

int event_bus_last_result(EventBus *b, const char *session_id, json_t **ret) {
        json_t *d = NULL;
        int r;

        if (!b || !session_id || !ret)
                return -EINVAL;

        r = store_load_last_result(b->store, session_id, last_result_one, &d);
        if (r < 0)
                return r;
        *ret = d;
        return r;
}

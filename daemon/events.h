/* Session output: events are stored in SQLite first, then published (DESIGN.md decision 6): to Redis
 * (XADD to the stream session:{id}:output, bounded, and PUBLISH on the channel session:{id}:output)
 * and to local subscribers (D-Bus Attach fds). Redis is reached through hiredis's async API on the
 * daemon's sd-event loop; if it is down, sessions go on, and publishing catches up from SQLite when it
 * returns. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "store.h"

typedef struct EventBus EventBus;

/* redis_socket: a unix socket path, or NULL for no Redis (events are then only stored and attached). */
int event_bus_new(sd_event *event, Store *store, const char *redis_socket, EventBus **ret);
EventBus *event_bus_free(EventBus *b);

/* The highest stored seq of a session (0 if none). */
int event_bus_last_seq(EventBus *b, const char *session_id, uint64_t *ret);

/* Stores events (a JSON array of {seq, time, data}, seqs checked by the caller to continue last_seq
 * without gaps, duplicates already dropped) in one transaction, then publishes them. */
int event_bus_append(EventBus *b, const char *session_id, json_t *events);

/* The same for events already in text form (the channel's fast path): each data is compact JSON text, not
 * NUL-terminated, result says whether it is a "result" event; time_usec is the event's time. */
int event_bus_append_text(EventBus *b, const char *session_id, const StoreEvent *events, size_t n);

/* Events with seq > since, at most limit (0: no limit), oldest first, as a new JSON array of
 * {seq, time, data}. What one call parses is bounded: it ends early (with at least one event, if there
 * is one) before the values parsed pass EVENT_BUS_GET_MAX_VALUES, and a stored event over the channel's
 * limits (jsonrpc.h; stored before they were enforced) comes back as {"type":"oversized","bytes":N}. */
#define EVENT_BUS_GET_MAX_VALUES 400000U /* two lines of the channel at its JSONRPC_MAX_VALUES */
int event_bus_get(EventBus *b, const char *session_id, uint64_t since, unsigned limit, json_t **ret);

/* The data of the session's latest "result" event, parsed as event_bus_get() does, from one stored row
 * (a restart reads nothing else of a history): 1 and a new reference in *ret, or 0 and NULL if the
 * session has none. */
int event_bus_last_result(EventBus *b, const char *session_id, json_t **ret);

/* A new fd (the caller owns it) that streams the session's events as JSON lines {seq, time, data}:
 * first those with seq > since from SQLite, then new ones as they are appended. A subscriber that
 * does not read is dropped (its fd closed) once its buffer passes a bound; the daemon never blocks
 * on it. When the session ends, its subscribers get what is left and then EOF. */
int event_bus_attach(EventBus *b, const char *session_id, uint64_t since, int *ret_fd);
void event_bus_session_ended(EventBus *b, const char *session_id);

/* The session was removed: its Redis stream goes too (if Redis is there now; else it stays, bounded). */
void event_bus_forget(EventBus *b, const char *session_id);

/* PUBLISH of one message (compact JSON) on a channel of SPEC.md 2.5 other than the output
 * (session:{id}:input, :control, :parent, :child:{child_id}): best effort, at most once, like any
 * pub/sub; nothing is kept for a Redis that is down. 1 if sent, 0 without Redis. */
int event_bus_notify(EventBus *b, const char *channel, json_t *msg);

/* Whether Redis is connected now (for tests and status). */
bool event_bus_redis_connected(EventBus *b);

/* The highest seq of the session that Redis has acknowledged (XADD) on the current connection, or found
 * in the stream when it connected; 0 if not known (for tests and status). */
int event_bus_published_seq(EventBus *b, const char *session_id, uint64_t *ret);

/* Whether Redis is connected and has acknowledged every stored event of every session (up to the
 * stream's bound), none in flight and none left to catch up (for tests and status). */
bool event_bus_redis_caught_up(EventBus *b);

/* The number of local subscribers (Attach fds) of the session (for tests and status). */
unsigned event_bus_n_subscribers(EventBus *b, const char *session_id);

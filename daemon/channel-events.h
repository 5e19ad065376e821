/* The fast path of the channel's "events" requests (channel-events.c): such a line is validated in one
 * pass and its events handed on as spans of the line itself, so that an event's data is neither parsed
 * into a tree nor serialized again on its way to SQLite, Redis and the Attach subscribers. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One event of a request: data is its JSON text as the line has it (compact), not NUL-terminated. */
typedef struct ChannelEvent {
        uint64_t seq;
        uint64_t time;
        const char *data;
        size_t data_len;
        bool result; /* data is an object whose "type" is "result" */
} ChannelEvent;

/* Parses line (n bytes, no newline) as a request {"jsonrpc":"2.0","id":ID,"method":"events","params":
 * {"events":[{seq, time, data}, ...]}} of 1..max events, each seq an integer >= 1 and time an integer
 * >= 0. Returns 1 with the events in events[0..*ret_n) (pointing into line) and *ret_id a new reference
 * to the id; 0 if the line is anything else, or anything the fast path does not take (escapes it cannot
 * compare, numbers jansson might refuse, whitespace inside a data value, ...): the caller then parses it
 * as any line, and answers what is wrong with it. Whatever it takes, jansson would parse to the same
 * values with JSON_REJECT_DUPLICATES; it takes a subset, never more. -ENOMEM. The caller has checked the
 * line's depth (jsonrpc_scan()). */
int channel_events_parse(
        const char *line, size_t n, ChannelEvent *events, size_t max, size_t *ret_n, json_t **ret_id);

/* libFuzzer target: the channel's fast path for events requests (daemon/channel-events.c), against jansson.
 * The input is one line as a container would send it. Whatever channel_events_parse() takes, jansson must
 * parse with JSON_REJECT_DUPLICATES to the same request: method "events", the same id, and per event the
 * same seq, time, data value and result flag; a line it takes that jansson refuses, or reads otherwise, is
 * a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel-events.h"
#include "cleanup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ChannelEvent events[1000];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_decrefp) json_t *id = NULL, *msg = NULL;
        const char *line = (const char *) data;
        size_t n = 0;
        json_t *evs;
        int r;

        r = channel_events_parse(line, size, events, 1000, &n, &id);
        if (r < 0 || r > 1)
                abort();
        if (r == 0)
                return 0;

        msg = json_loadb(line, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (!msg || !json_equal(id, json_object_get(msg, "id")))
                abort();
        if (strcmp(json_string_value(json_object_get(msg, "method")) ?: "", "events") != 0)
                abort();
        evs = json_object_get(json_object_get(msg, "params"), "events");
        if (json_array_size(evs) != n)
                abort();
        for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(evs, i), *d = json_object_get(e, "data"), *type;
                _cleanup_(json_decrefp) json_t *mine = json_loadb(
                        events[i].data, events[i].data_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
                bool result;

                type = json_object_get(d, "type");
                result = json_is_object(d) && json_is_string(type) &&
                        strcmp(json_string_value(type), "result") == 0;
                if (!mine || !json_equal(mine, d) || events[i].result != result ||
                    (json_int_t) events[i].seq != json_integer_value(json_object_get(e, "seq")) ||
                    (json_int_t) events[i].time != json_integer_value(json_object_get(e, "time")) ||
                    memchr(events[i].data, '\n', events[i].data_len))
                        abort();
        }
        return 0;
}

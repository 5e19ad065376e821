/* What a model call used: see model-usage.h. */
#define _GNU_SOURCE
#include "model-usage.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "util.h"

#define SSE_LINE_MAX (64U * 1024)  /* longer SSE lines (big content deltas) are not parsed */
#define SSE_DATA_MAX (256U * 1024) /* one event's data, when it is one we read */
#define JSON_BODY_CHUNK (16U * 1024)

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
        u->body = mfree(u->body);
        u->line_len = u->data_len = u->body_len = u->body_allocated = 0;
}

/* Whether text nests objects and lists at most max deep (brackets in strings do not count). jansson
 * has a limit of its own, but one compiled into it; this one is ours. */
static bool json_depth_within(const char *text, size_t len, unsigned max) {
        unsigned depth = 0;
        bool in_string = false, escape = false;

        for (size_t i = 0; i < len; i++) {
                char c = text[i];

                if (in_string) {
                        if (escape)
                                escape = false;
                        else if (c == '\\')
                                escape = true;
                        else if (c == '"')
                                in_string = false;
                } else if (c == '"')
                        in_string = true;
                else if (c == '{' || c == '[') {
                        if (++depth > max)
                                return false;
                } else if ((c == '}' || c == ']') && depth > 0)
                        depth--;
        }
        return true;
}

static int json_load_bounded(const char *text, size_t len, json_t **ret) {
        json_t *j;

        if (len > MODEL_USAGE_JSON_MAX)
                return -E2BIG;
        if (!json_depth_within(text, len, MODEL_USAGE_DEPTH_MAX))
                return -ELOOP;
        j = json_loadb(text, len, 0, NULL);
        if (!j)
                return -EBADMSG;
        *ret = j;
        return 0;
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

int model_usage_read_json(ModelUsageParser *u, const char *text, size_t len) {
        json_t *j = NULL;
        int r;

        r = json_load_bounded(text, len, &j);
        if (r < 0)
                return r;
        usage_apply(u, json_object_get(j, "usage"));
        usage_set_model(u, json_object_get(j, "model"));
        if (json_is_integer(json_object_get(j, "max_tokens")) &&
            json_integer_value(json_object_get(j, "max_tokens")) >= 0) {
                u->max_tokens = (uint64_t) json_integer_value(json_object_get(j, "max_tokens"));
                u->have_max_tokens = true;
        }
        json_decref(j);
        return 0;
}

/* ---- SSE ---- */

static bool sse_event_wanted(const char *event) {
        return isempty(event) || streq(event, "message_start") || streq(event, "message_delta");
}

static void sse_dispatch(ModelUsageParser *u) {
        json_t *j = NULL, *type;

        if (u->data_len > 0 && !u->data_overflow && sse_event_wanted(u->event) &&
            json_load_bounded(u->data, u->data_len, &j) >= 0) {
                type = json_object_get(j, "type");
                if (json_is_string(type) && streq(json_string_value(type), "message_start")) {
                        json_t *message = json_object_get(j, "message");

                        usage_apply(u, json_object_get(message, "usage"));
                        usage_set_model(u, json_object_get(message, "model"));
                } else if (json_is_string(type) && streq(json_string_value(type), "message_delta")) {
                        usage_apply(u, json_object_get(j, "usage"));
                        if (json_is_object(json_object_get(j, "usage")))
                                u->have_final = true;
                }
                json_decref(j);
        }
        u->event[0] = '\0';
        u->data_len = 0;
        u->data_overflow = false;
}

/* Bytes of a content_block_delta's data that are not content (80 for a text_delta at index 0). */
#define DELTA_FRAMING 72U
#define DELTA_BYTES_PER_TOKEN 3U

uint64_t model_usage_delta_estimate(const ModelUsageParser *u) {
        uint64_t by_size = (u->delta_bytes + DELTA_BYTES_PER_TOKEN - 1) / DELTA_BYTES_PER_TOKEN;

        return by_size > u->delta_events ? by_size : u->delta_events;
}

static void sse_line(ModelUsageParser *u) {
        const char *value;
        size_t name_len, value_len;

        /* Content deltas are not parsed, only measured: what a stream cut short is charged. The line
         * holds its first SSE_LINE_MAX bytes even when it is longer. */
        if (streq(u->event, "content_block_delta") && u->line_len >= 5 && memcmp(u->line, "data:", 5) == 0) {
                u->delta_events++;
                if (u->line_total > 5 + DELTA_FRAMING)
                        u->delta_bytes += u->line_total - 5 - DELTA_FRAMING;
        }
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
                        u->line_len = u->line_total = 0;
                        u->line_overflow = false;
                        continue;
                }
                u->line_total++;
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

/* ---- JSON ---- */

static void json_feed(ModelUsageParser *u, const char *p, size_t len) {
        if (u->body_overflow || len == 0)
                return;
        if (len > MODEL_USAGE_JSON_MAX - u->body_len) {
                /* Too big to read: nothing of it is kept. */
                u->body_overflow = true;
                u->body = mfree(u->body);
                u->body_len = u->body_allocated = 0;
                return;
        }
        if (u->body_len + len > u->body_allocated) {
                size_t a = u->body_allocated ?: JSON_BODY_CHUNK;
                char *b;

                while (a < u->body_len + len)
                        a *= 2;
                if (a > MODEL_USAGE_JSON_MAX)
                        a = MODEL_USAGE_JSON_MAX;
                b = realloc(u->body, a);
                if (!b) {
                        u->body_overflow = true;
                        u->body = mfree(u->body);
                        u->body_len = u->body_allocated = 0;
                        return;
                }
                u->body = b;
                u->body_allocated = a;
        }
        memcpy(u->body + u->body_len, p, len);
        u->body_len += len;
}

void model_usage_parser_feed(ModelUsageParser *u, const char *data, size_t len) {
        if (!u || !data || u->finished)
                return;
        if (u->format == MODEL_USAGE_SSE)
                sse_feed(u, data, len);
        else if (u->format == MODEL_USAGE_JSON)
                json_feed(u, data, len);
}

int model_usage_parser_finish(ModelUsageParser *u) {
        int r = 0;

        if (!u || u->finished)
                return 0;
        u->finished = true;
        if (u->format == MODEL_USAGE_SSE && !u->have_final && u->delta_events > 0) {
                uint64_t est = model_usage_delta_estimate(u);

                if (est > u->usage.output_tokens)
                        u->usage.output_tokens = est;
                u->have_usage = true;
        }
        if (u->format != MODEL_USAGE_JSON)
                return 0;
        if (u->body_overflow)
                r = -E2BIG;
        else if (u->body_len > 0)
                r = model_usage_read_json(u, u->body, u->body_len);
        u->body = mfree(u->body);
        u->body_len = u->body_allocated = 0;
        return r;
}

/* What a model call used: see model-usage.h. */
#define _GNU_SOURCE
#include "model-usage.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "util.h"

#define SSE_LINE_MAX (64U * 1024)   /* longer SSE lines (big content deltas) are not parsed */
#define SSE_DATA_MAX (256U * 1024)  /* one event's data, when it is one we read */
#define JSON_VALUE_MAX (16U * 1024) /* a captured top-level value (usage, model) */

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

/* What a model call used: the token counts of Anthropic's answers, read as an answer passes through the
 * model proxy, fed in pieces of any size. An SSE stream is read event by event (message_start's
 * message.usage and message.model, then message_delta's cumulative usage); a JSON body is kept whole,
 * up to MODEL_USAGE_JSON_MAX, and read at its end (its top-level usage and model). Each piece of JSON
 * (an event's data, a body) is parsed with jansson once it is whole, refused beyond
 * MODEL_USAGE_DEPTH_MAX levels of nesting. Memory is bounded whatever is fed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_USAGE_JSON_MAX (4U * 1024 * 1024) /* a JSON body read for its usage */
#define MODEL_USAGE_DEPTH_MAX 128U              /* nesting of objects and lists in one JSON document */

typedef struct ModelUsage {
        uint64_t input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens;
} ModelUsage;

/* The tokens a call counts against budget_tokens: all four counters, one for one. */
static inline uint64_t model_usage_tokens(const ModelUsage *u) {
        return u->input_tokens + u->output_tokens + u->cache_creation_input_tokens +
                u->cache_read_input_tokens;
}

typedef enum ModelUsageFormat {
        MODEL_USAGE_NONE,
        MODEL_USAGE_SSE,
        MODEL_USAGE_JSON,
} ModelUsageFormat;

typedef struct ModelUsageParser {
        ModelUsageFormat format;
        /* SSE: the line being read, and the data of the event being read */
        char *line;
        size_t line_len;
        bool line_overflow, after_cr;
        char event[32];
        char *data;
        size_t data_len;
        bool data_overflow;
        size_t line_total;                  /* bytes of the line being read, also past SSE_LINE_MAX */
        uint64_t delta_events, delta_bytes; /* content_block_delta events so far, and their data's size */
        bool have_final;                    /* message_delta's usage was read */
        /* JSON: the body so far */
        char *body;
        size_t body_len, body_allocated;
        bool body_overflow, finished;
        /* results */
        bool have_usage;
        ModelUsage usage;
        char model[128];
        bool have_max_tokens; /* a request's top-level max_tokens (model_usage_read_json()) */
        uint64_t max_tokens;
} ModelUsageParser;

void model_usage_parser_init(ModelUsageParser *u, ModelUsageFormat format);
/* The format an answer's Content-Type calls for (NULL: none). */
ModelUsageFormat model_usage_format_for(const char *content_type);
void model_usage_parser_feed(ModelUsageParser *u, const char *data, size_t len);
/* The output tokens a stream produced so far, estimated from its content_block_delta events (for a
 * stream cut short before message_delta said): one token per event at least, and one per 3 bytes of
 * the deltas' content (each event's data less 72 bytes of framing). */
uint64_t model_usage_delta_estimate(const ModelUsageParser *u);
/* The answer is over: a JSON body is read now (an SSE event not ended by its blank line is dropped); a
 * stream that ended before message_delta's usage is charged model_usage_delta_estimate() of output.
 * 0 when there was nothing to read or it was read; for a JSON body that could not be: -E2BIG (over
 * MODEL_USAGE_JSON_MAX), -ELOOP (nested too deep), -EBADMSG (not JSON, or cut short). Once only: a
 * second call, or feeding more, changes nothing. */
int model_usage_parser_finish(ModelUsageParser *u);
void model_usage_parser_done(ModelUsageParser *u);

/* Reads a whole JSON document (a request body, say) into u as a JSON body would be: its top-level
 * usage, model and max_tokens. Errors as model_usage_parser_finish(). */
int model_usage_read_json(ModelUsageParser *u, const char *text, size_t len);

/* What a model call used: the token counts of Anthropic's answers, read as an answer passes through the
 * model proxy, fed in pieces of any size: an SSE stream (message_start's message.usage and
 * message.model, then message_delta's cumulative usage) or a JSON body (its top-level usage and model).
 * Memory is bounded whatever is fed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ModelUsage {
        uint64_t input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens;
} ModelUsage;

typedef enum ModelUsageFormat {
        MODEL_USAGE_NONE,
        MODEL_USAGE_SSE,
        MODEL_USAGE_JSON,
} ModelUsageFormat;

typedef struct ModelUsageParser {
        ModelUsageFormat format;
        /* SSE */
        char *line;
        size_t line_len;
        bool line_overflow, after_cr;
        char event[32];
        char *data;
        size_t data_len;
        bool data_overflow;
        /* JSON: the top level of one object */
        unsigned depth;
        bool in_string, escape;
        int top_state;
        char key[16];
        size_t key_len;
        int capture; /* which top-level key's value is being captured */
        char *value;
        size_t value_len;
        bool value_overflow;
        /* results */
        bool have_usage;
        ModelUsage usage;
        char model[128];
} ModelUsageParser;

void model_usage_parser_init(ModelUsageParser *u, ModelUsageFormat format);
/* The format an answer's Content-Type calls for (NULL: none). */
ModelUsageFormat model_usage_format_for(const char *content_type);
void model_usage_parser_feed(ModelUsageParser *u, const char *data, size_t len);
void model_usage_parser_done(ModelUsageParser *u);

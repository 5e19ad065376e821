/* ccdocker-mcp's tools: their definitions (mcp/tools.json, embedded at build time), the checks of a
 * call's arguments, the channel request each call starts with, and the CallToolResult built from the
 * daemon's answer or from an error. Everything here is pure: ccdocker-mcp.c does the I/O. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum ToolId {
        TOOL_SPAWN_CHILD,
        TOOL_SEND_TO_CHILD,
        TOOL_GET_CHILD_OUTPUT,
        TOOL_GET_CHILD_RESULT,
        TOOL_LIST_CHILDREN,
        TOOL_STOP_CHILD,
        TOOL_GET_PARENT_CONTEXT,
        TOOL_NOTIFY_USER,
        TOOL_ASK_USER,
        TOOL_PERMISSION_PROMPT,
        _TOOL_MAX,
} ToolId;

typedef struct Tool {
        ToolId id;
        const char *name;
        const char *method; /* the channel method a call of it starts with (docs/channel.md) */
        json_t *definition; /* as tools/list shows it; owned by the table */
} Tool;

/* Loads the embedded definitions. 0, -ENOMEM, or -EBADMSG if they do not match the C table (a
 * build that should not have passed its unit tests). Idempotent. */
int tools_load(void);
void tools_unload(void);

/* NULL for a name that is not a tool. tools_load() first. */
const Tool *tool_find(const char *name);
const Tool *tool_get(ToolId id);

/* The "tools" array of tools/list: a new reference. */
json_t *tools_list(void);

/* Checks args (NULL for none) against the tool's inputSchema, plus the rules a schema cannot say
 * (since_seq and since_timestamp together). 0 and *ret_args (a new object, integers normalised), or
 * -EINVAL with *ret_message (malloc()ed, starts with the tool's name, names the argument), -ENOMEM. */
int tool_check_arguments(const Tool *t, const json_t *args, json_t **ret_args, char **ret_message);

/* ask_user: the lowest timeout_seconds the daemon takes (its hello's question_timeout_min) when it is
 * not the schema's 60. NULL when t is not ask_user or timeout_seconds is absent or at least min;
 * else the refusal (malloc()ed), worded as the schema check words it. */
char *tool_check_question_timeout(const Tool *t, const json_t *args, int64_t min);

/* What a permission question asks a person: "Allow Bash: rm -rf build?" (the command, the file or
 * the input as compact JSON, cut to fit a question). malloc()ed, NULL on ENOMEM. */
char *tool_permission_question(const char *tool_name, const json_t *input);

/* The params of the first channel request of a call with these (checked) arguments: the arguments the
 * channel method takes, with the tool's defaults where they differ from the daemon's. New reference,
 * NULL on ENOMEM. */
json_t *tool_channel_params(const Tool *t, const json_t *args);

/* {"content":[{"type":"text","text":<structured, compact>}],"structuredContent":<structured>}. The
 * structured value is projected through the tool's outputSchema first, so it always fits it.
 * 0 and *ret (new reference); -EBADMSG with *ret_message when the answer does not fit ("'status' is
 * missing"); -ENOMEM. A tool without an outputSchema (permission_prompt) gets the text block only,
 * structured as it is. */
int tool_result(const Tool *t, const json_t *structured, json_t **ret, char **ret_message);

/* {"content":[{"type":"text","text":message}],"isError":true}; NULL on ENOMEM. */
json_t *tool_error(const char *message);
json_t *tool_errorf(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* What the model reads when the daemon answered a channel request with an error: the daemon's message
 * and what to do about it, per code (docs/channel.md). malloc()ed, NULL on ENOMEM. */
char *tool_channel_error_message(const Tool *t, const char *method, int code, const char *message);

/* The last bytes of s, at most max, starting on a UTF-8 character: for progress messages. */
const char *utf8_tail(const char *s, size_t max);

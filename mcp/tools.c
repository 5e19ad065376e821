/* ccdocker-mcp's tool table: the definitions of mcp/tools.json (names, descriptions, input and output
 * schemas, annotations: what the model reads), joined to what the C side needs for each tool (its
 * channel method, which arguments that method takes, the defaults that differ from the daemon's). */
#define _GNU_SOURCE
#include "tools.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "jsonrpc.h"
#include "schema.h"
#include "tools-json.h"
#include "util.h"

/* The channel errors of docs/channel.md ("ccdocker-mcp's methods"). */
enum {
        CHANNEL_ERROR_FAILED = -32000,
        CHANNEL_ERROR_LIMIT = -32001,
        CHANNEL_ERROR_NO_CHILD = -32002,
        CHANNEL_ERROR_NO_SURFACE = -32003,
};

static Tool table[_TOOL_MAX] = {
        [TOOL_SPAWN_CHILD] = { TOOL_SPAWN_CHILD, "spawn_child", "child.spawn", NULL },
        [TOOL_SEND_TO_CHILD] = { TOOL_SEND_TO_CHILD, "send_to_child", "child.send", NULL },
        [TOOL_GET_CHILD_OUTPUT] = { TOOL_GET_CHILD_OUTPUT, "get_child_output", "child.output", NULL },
        [TOOL_GET_CHILD_RESULT] = { TOOL_GET_CHILD_RESULT, "get_child_result", "child.result", NULL },
        [TOOL_LIST_CHILDREN] = { TOOL_LIST_CHILDREN, "list_children", "child.list", NULL },
        [TOOL_STOP_CHILD] = { TOOL_STOP_CHILD, "stop_child", "child.stop", NULL },
        [TOOL_GET_PARENT_CONTEXT] = { TOOL_GET_PARENT_CONTEXT,
                                      "get_parent_context",
                                      "parent.context",
                                      NULL },
        [TOOL_NOTIFY_USER] = { TOOL_NOTIFY_USER, "notify_user", "human.notify", NULL },
        [TOOL_ASK_USER] = { TOOL_ASK_USER, "ask_user", "human.ask", NULL },
        [TOOL_PERMISSION_PROMPT] = { TOOL_PERMISSION_PROMPT, "permission_prompt", "human.ask", NULL },
};

/* The arguments that go to the channel method unchanged, by the same name. */
static const char *const passed[_TOOL_MAX][7] = {
        [TOOL_SPAWN_CHILD] = { "prompt",
                               "context",
                               "task_type",
                               "stream_output",
                               "timeout_seconds",
                               "secrets" },
        [TOOL_SEND_TO_CHILD] = { "child_session_id", "prompt" },
        [TOOL_GET_CHILD_OUTPUT] = { "child_session_id", "since_seq", "since_timestamp" },
        [TOOL_GET_CHILD_RESULT] = { "child_session_id", "wait", "timeout_seconds" },
        [TOOL_LIST_CHILDREN] = { "status_filter", "include_completed" },
        [TOOL_STOP_CHILD] = { "child_session_id", "force" },
        [TOOL_GET_PARENT_CONTEXT] = {},
        [TOOL_NOTIFY_USER] = { "message", "priority" },
        [TOOL_ASK_USER] = { "question", "timeout_seconds", "max_attempts", "priority" },
        [TOOL_PERMISSION_PROMPT] = {},
};

/* How long a person has to approve a tool call, in one attempt: Claude Code waits for its permission
 * prompt tool as for any MCP call, and nobody answering is a deny. */
#define PERMISSION_TIMEOUT_SEC 600
#define PERMISSION_TEXT_MAX 300 /* bytes of the tool's input shown in the question */

static json_t *definitions; /* the parsed tools.json */
/* ask_user's inputSchema with timeout_seconds from 1: the daemon's lowest (its hello says it) may be
 * below the 60 the schema publishes, and is checked once it is known. */
static json_t *ask_schema;

int tools_load(void) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        json_error_t error;
        json_t *tools, *def;
        size_t i;

        if (definitions)
                return 0;
        root = json_loads(tools_json, JSON_REJECT_DUPLICATES, &error);
        if (!root)
                return -ENOMEM; /* the build checked it is JSON */
        tools = json_object_get(root, "tools");
        if (json_array_size(tools) != _TOOL_MAX)
                return -EBADMSG;
        for (ToolId id = 0; id < _TOOL_MAX; id++)
                table[id].definition = NULL;
        json_array_foreach (tools, i, def) {
                const char *name = json_string_value(json_object_get(def, "name"));
                bool found = false;

                /* permission_prompt has no outputSchema: Claude Code takes its answer from a single
                 * text block only, and a tool with an outputSchema must send structuredContent. */
                if (!json_is_object(json_object_get(def, "inputSchema")) ||
                    (!json_is_object(json_object_get(def, "outputSchema")) &&
                     !streq_ptr(name, "permission_prompt")))
                        return -EBADMSG;
                for (ToolId id = 0; id < _TOOL_MAX; id++)
                        if (streq_ptr(name, table[id].name) && !table[id].definition) {
                                table[id].definition = def;
                                found = true;
                        }
                if (!found)
                        return -EBADMSG;
        }
        ask_schema = json_deep_copy(json_object_get(table[TOOL_ASK_USER].definition, "inputSchema"));
        if (!ask_schema ||
            json_object_set_new(
                    json_object_get(json_object_get(ask_schema, "properties"), "timeout_seconds"),
                    "minimum",
                    json_integer(1)) < 0) {
                json_decref(ask_schema);
                ask_schema = NULL;
                return -ENOMEM;
        }
        definitions = TAKE_PTR(root);
        return 0;
}

void tools_unload(void) {
        for (ToolId id = 0; id < _TOOL_MAX; id++)
                table[id].definition = NULL;
        json_decref(definitions);
        definitions = NULL;
        json_decref(ask_schema);
        ask_schema = NULL;
}

const Tool *tool_find(const char *name) {
        for (ToolId id = 0; id < _TOOL_MAX; id++)
                if (table[id].definition && streq(name, table[id].name))
                        return &table[id];
        return NULL;
}

const Tool *tool_get(ToolId id) {
        return id < _TOOL_MAX && table[id].definition ? &table[id] : NULL;
}

json_t *tools_list(void) {
        return json_deep_copy(json_object_get(definitions, "tools"));
}

int tool_check_arguments(const Tool *t, const json_t *args, json_t **ret_args, char **ret_message) {
        _cleanup_(json_decrefp) json_t *checked = NULL;
        int r;

        r = schema_check_arguments(
                t->id == TOOL_ASK_USER ? ask_schema : json_object_get(t->definition, "inputSchema"),
                t->name,
                args,
                &checked,
                ret_message);
        if (r < 0)
                return r;
        if (t->id == TOOL_GET_CHILD_OUTPUT && json_object_get(checked, "since_seq") &&
            json_object_get(checked, "since_timestamp")) {
                *ret_message = strdup(
                        "get_child_output: give since_seq or since_timestamp, not both (since_seq = last_seq "
                        "of your previous call is the exact one)");
                return *ret_message ? -EINVAL : -ENOMEM;
        }
        *ret_args = TAKE_PTR(checked);
        return 0;
}

char *tool_check_question_timeout(const Tool *t, const json_t *args, int64_t min) {
        json_t *v = json_object_get(args, "timeout_seconds");
        char *message = NULL;

        if (t->id != TOOL_ASK_USER || !json_is_integer(v) || json_integer_value(v) >= min)
                return NULL;
        if (asprintf(
                    &message,
                    "%s: argument 'timeout_seconds' must be an integer from %" PRIi64
                    " to 7200, got %" JSON_INTEGER_FORMAT,
                    t->name,
                    min,
                    json_integer_value(v)) < 0)
                return NULL;
        return message;
}

char *tool_permission_question(const char *tool_name, const json_t *input) {
        _cleanup_free_ char *dumped = NULL;
        const char *shown = NULL;
        char *q = NULL;
        size_t n;

        /* The part of the input a person decides on, when the tool has one. */
        static const char *const keys[] = { "command", "file_path", "path", "url", "pattern", "prompt" };
        for (size_t i = 0; i < ELEMENTSOF(keys) && !shown; i++)
                shown = json_string_value(json_object_get(input, keys[i]));
        if (!shown) {
                dumped = json_dumps(input, JSON_COMPACT);
                if (!dumped)
                        return NULL;
                shown = dumped;
        }
        n = strlen(shown);
        if (n > PERMISSION_TEXT_MAX) {
                n = PERMISSION_TEXT_MAX;
                while (n > 0 && ((unsigned char) shown[n] & 0xC0) == 0x80)
                        n--;
        }
        if (asprintf(
                    &q, "Allow %.128s: %.*s%s?", tool_name, (int) n, shown, n < strlen(shown) ? "..." : "") <
            0)
                return NULL;
        return q;
}

json_t *tool_channel_params(const Tool *t, const json_t *args) {
        _cleanup_(json_decrefp) json_t *params = json_object();

        if (!params)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(passed[t->id]) && passed[t->id][i]; i++) {
                json_t *v = json_object_get(args, passed[t->id][i]);

                if (v && json_object_set(params, passed[t->id][i], v) < 0)
                        return NULL;
        }
        switch (t->id) {
        case TOOL_GET_CHILD_OUTPUT:
                /* The first request answers at once; a stream waits in the requests after it. */
                if (json_object_set_new(params, "wait_seconds", json_integer(0)) < 0)
                        return NULL;
                break;
        case TOOL_GET_CHILD_RESULT:
                /* The tool waits by default, the channel method does not. */
                if (!json_object_get(params, "wait") && json_object_set_new(params, "wait", json_true()) < 0)
                        return NULL;
                if (!json_object_get(params, "timeout_seconds") &&
                    json_object_set_new(params, "timeout_seconds", json_integer(300)) < 0)
                        return NULL;
                break;
        case TOOL_ASK_USER:
                /* An answer that comes after Claude Code gave up on the call still reaches the model,
                 * as the session's next prompt (docs/ccdocker-mcp.md, "Long waits"). */
                if (json_object_set_new(params, "late_delivery", json_string("prompt")) < 0)
                        return NULL;
                break;
        case TOOL_PERMISSION_PROMPT: {
                const char *name = json_string_value(json_object_get(args, "tool_name"));
                json_t *input = json_object_get(args, "input");
                _cleanup_free_ char *q = tool_permission_question(name, input);

                if (!q || json_object_set_new(params, "question", json_string(q)) < 0 ||
                    json_object_set_new(params, "kind", json_string("permission")) < 0 ||
                    json_object_set_new(
                            params, "tool", json_pack("{s:s, s:O}", "name", name, "input", input)) < 0 ||
                    json_object_set_new(params, "timeout_seconds", json_integer(PERMISSION_TIMEOUT_SEC)) <
                            0 ||
                    json_object_set_new(params, "max_attempts", json_integer(1)) < 0 ||
                    json_object_set_new(params, "priority", json_string("urgent")) < 0)
                        return NULL;
                break;
        }
        default:
                break;
        }
        return TAKE_PTR(params);
}

int tool_result(const Tool *t, const json_t *structured, json_t **ret, char **ret_message) {
        _cleanup_(json_decrefp) json_t *projected = NULL, *result = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!json_object_get(t->definition, "outputSchema")) {
                text = json_dumps(structured, JSON_COMPACT);
                if (!text)
                        return -ENOMEM;
                result = json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", text);
                if (!result)
                        return -ENOMEM;
                *ret = TAKE_PTR(result);
                return 0;
        }
        r = schema_project(
                json_object_get(t->definition, "outputSchema"), structured, &projected, ret_message);
        if (r < 0)
                return r;
        text = json_dumps(projected, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        result = json_pack(
                "{s:[{s:s, s:s}], s:O}",
                "content",
                "type",
                "text",
                "text",
                text,
                "structuredContent",
                projected);
        if (!result)
                return -ENOMEM;
        *ret = TAKE_PTR(result);
        return 0;
}

json_t *tool_error(const char *message) {
        return json_pack(
                "{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", message, "isError", true);
}

json_t *tool_errorf(const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                return NULL;
        return tool_error(message);
}

char *tool_channel_error_message(const Tool *t, const char *method, int code, const char *message) {
        _cleanup_free_ char *copy = strdup(isempty(message) ? "no reason given" : message);
        char *text = NULL;
        size_t n;
        int r;

        if (!copy)
                return NULL;
        /* The sentences below go on after it. */
        n = strlen(copy);
        while (n > 1 && strchr(". \n", copy[n - 1]))
                copy[--n] = '\0';
        message = copy;
        if (t->id == TOOL_NOTIFY_USER || t->id == TOOL_ASK_USER || t->id == TOOL_PERMISSION_PROMPT) {
                const char *hint = code == CHANNEL_ERROR_LIMIT
                        ? "Send fewer (at most 10 notices a minute: put several updates in one) and try "
                          "again in a minute."
                        : code == CHANNEL_ERROR_NO_CHILD ? "The question is no longer known to the daemon."
                        : code == CHANNEL_ERROR_NO_SURFACE
                        ? "No person can be reached now: go on without an answer, or try again later."
                        : NULL;

                if (hint) {
                        r = asprintf(&text, "%s: %s. %s", t->name, message, hint);
                        return r < 0 ? NULL : text;
                }
        }
        switch (code) {
        case JSONRPC_INVALID_PARAMS:
                r = asprintf(&text, "%s: %s. Correct that argument and call again.", t->name, message);
                break;
        case CHANNEL_ERROR_LIMIT:
                r = asprintf(
                        &text,
                        "%s refused by a limit: %s. Wait for running children to finish (get_child_result) "
                        "or stop those you no longer need (list_children, stop_child), then try again; "
                        "at the depth limit, do the task yourself instead.",
                        t->name,
                        message);
                break;
        case CHANNEL_ERROR_NO_CHILD:
                r = asprintf(
                        &text,
                        "%s: %s. Use a child_session_id that spawn_child returned to this session: "
                        "list_children shows them (a session sees only its own children, not theirs).",
                        t->name,
                        message);
                break;
        case CHANNEL_ERROR_FAILED:
                r = asprintf(&text, "%s failed: the cc-docker daemon could not do it: %s", t->name, message);
                break;
        case JSONRPC_METHOD_NOT_FOUND:
                r = asprintf(
                        &text,
                        "%s is not available: the cc-docker daemon does not know '%s' (%s); it may be an "
                        "older version.",
                        t->name,
                        method,
                        message);
                break;
        default:
                r = asprintf(
                        &text,
                        "%s failed: the cc-docker daemon answered %s with error %d: %s",
                        t->name,
                        method,
                        code,
                        message);
        }
        return r < 0 ? NULL : text;
}

const char *utf8_tail(const char *s, size_t max) {
        size_t len = strlen(s);
        const char *p;

        if (len <= max)
                return s;
        p = s + len - max;
        while (*p && ((unsigned char) *p & 0xC0) == 0x80)
                p++;
        return p;
}

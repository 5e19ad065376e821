/* ccdocker-mcp's tool table: the definitions of mcp/tools.json (names, descriptions, input and output
 * schemas, annotations: what the model reads), joined to what the C side needs for each tool (its
 * channel method, which arguments that method takes, the defaults that differ from the daemon's). */
#define _GNU_SOURCE
#include "tools.h"

#include <errno.h>
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
};

static json_t *definitions; /* the parsed tools.json */

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

                if (!json_is_object(json_object_get(def, "inputSchema")) ||
                    !json_is_object(json_object_get(def, "outputSchema")))
                        return -EBADMSG;
                for (ToolId id = 0; id < _TOOL_MAX; id++)
                        if (streq_ptr(name, table[id].name) && !table[id].definition) {
                                table[id].definition = def;
                                found = true;
                        }
                if (!found)
                        return -EBADMSG;
        }
        definitions = TAKE_PTR(root);
        return 0;
}

void tools_unload(void) {
        for (ToolId id = 0; id < _TOOL_MAX; id++)
                table[id].definition = NULL;
        json_decref(definitions);
        definitions = NULL;
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
                json_object_get(t->definition, "inputSchema"), t->name, args, &checked, ret_message);
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
        default:
                break;
        }
        return TAKE_PTR(params);
}

int tool_result(const Tool *t, const json_t *structured, json_t **ret, char **ret_message) {
        _cleanup_(json_decrefp) json_t *projected = NULL, *result = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

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

/* Request bodies: the JSON of POST /sessions and POST .../spawn (SPEC.md 8.2 and 8.3) turned into
 * CreateSession's a{sv}, and the body of POST .../prompts. Only the shape is checked here (known fields,
 * JSON types, integer ranges), each refusal naming the field; values are checked once, by the daemon,
 * whose messages name its own keys. Fields of SPEC.md 8.2/8.3 that the daemon does not take yet are
 * refused as such rather than dropped. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "httpd.h"
#include "util.h"

static int refuse(char *ret_message, size_t size, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
static int refuse(char *ret_message, size_t size, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(ret_message, size, format, ap);
        va_end(ap);
        return -EINVAL;
}

/* "an object", "a string", ...: for messages naming what a field got. */
static const char *json_type_name(json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a number";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        default:
                return "null";
        }
}

static int append_string(sd_bus_message *m, const char *key, const char *value) {
        return sd_bus_message_append(m, "{sv}", key, "s", value);
}

static int append_u32(
        json_t *v, sd_bus_message *m, const char *key, const char *field, char *msg, size_t size) {
        if (!json_is_integer(v))
                return refuse(msg, size, "field '%s' must be an integer, got %s", field, json_type_name(v));
        if (json_integer_value(v) < 0 || json_integer_value(v) > (json_int_t) UINT32_MAX)
                return refuse(msg, size, "field '%s' must be between 0 and %u", field, UINT32_MAX);
        return sd_bus_message_append(m, "{sv}", key, "u", (uint32_t) json_integer_value(v));
}

static int append_workspace(json_t *v, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *value, *type, *path;

        if (!json_is_object(v))
                return refuse(msg, size, "field 'workspace' must be an object, got %s", json_type_name(v));
        json_object_foreach (v, key, value)
                if (!streq(key, "type") && !streq(key, "path"))
                        return refuse(msg, size, "unknown field 'workspace.%s'", key);
        type = json_object_get(v, "type");
        path = json_object_get(v, "path");
        if (!json_is_string(type))
                return refuse(
                        msg, size, "field 'workspace.type' must be a string, \"ephemeral\" or \"host\"");
        if (streq(json_string_value(type), "ephemeral")) {
                if (path)
                        return refuse(
                                msg,
                                size,
                                "field 'workspace.path' is only for a workspace of type \"host\"");
                return append_string(m, "workspace", "ephemeral");
        }
        if (!streq(json_string_value(type), "host"))
                return refuse(msg, size, "field 'workspace.type' must be \"ephemeral\" or \"host\"");
        if (!json_is_string(path))
                return refuse(msg, size, "field 'workspace.path' must be a string, an absolute host path");
        return append_string(m, "workspace", json_string_value(path));
}

static int append_environment(json_t *v, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *value;
        int r;

        if (!json_is_object(v))
                return refuse(
                        msg,
                        size,
                        "field 'config.environment' must be an object, got %s",
                        json_type_name(v));
        json_object_foreach (v, key, value)
                if (!json_is_string(value))
                        return refuse(
                                msg,
                                size,
                                "field 'config.environment.%s' must be a string, got %s",
                                key,
                                json_type_name(value));

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "environment");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a{ss}");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{ss}");
        json_object_foreach (v, key, value)
                if (r >= 0)
                        r = sd_bus_message_append(m, "{ss}", key, json_string_value(value));
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* An array of strings (config.secrets, .allowed_hosts, .mcp_servers, .skills, .claude_config.allowed_tools)
 * as the daemon's "as" key, which checks the values; field names it in messages. */
static int append_strv(
        json_t *v, sd_bus_message *m, const char *key, const char *field, char *msg, size_t size) {
        size_t i;
        json_t *e;
        int r;

        if (!json_is_array(v))
                return refuse(
                        msg,
                        size,
                        "field '%s' must be an array of strings, got %s",
                        field,
                        json_type_name(v));
        json_array_foreach (v, i, e)
                if (!json_is_string(e))
                        return refuse(
                                msg,
                                size,
                                "field '%s[%zu]' must be a string, got %s",
                                field,
                                i,
                                json_type_name(e));

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "s");
        json_array_foreach (v, i, e)
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", json_string_value(e));
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* SPEC.md 8.2's claude_config: permission_mode and allowed_tools, the daemon's keys of the same names. */
static int append_claude_config(json_t *v, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *e;
        int r = 0;

        if (!json_is_object(v))
                return refuse(
                        msg,
                        size,
                        "field 'config.claude_config' must be an object, got %s",
                        json_type_name(v));
        json_object_foreach (v, key, e) {
                if (streq(key, "permission_mode")) {
                        if (!json_is_string(e))
                                r = refuse(
                                        msg,
                                        size,
                                        "field 'config.claude_config.permission_mode' must be a string, got %s",
                                        json_type_name(e));
                        else
                                r = append_string(m, "permission_mode", json_string_value(e));
                } else if (streq(key, "allowed_tools"))
                        r = append_strv(
                                e, m, "allowed_tools", "config.claude_config.allowed_tools", msg, size);
                else
                        r = refuse(msg, size, "unknown field 'config.claude_config.%s'", key);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int append_config(json_t *config, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *v;
        int r = 0;

        if (!json_is_object(config))
                return refuse(msg, size, "field 'config' must be an object, got %s", json_type_name(config));

        json_object_foreach (config, key, v) {
                if (streq(key, "timeout_seconds"))
                        r = append_u32(v, m, "timeout_seconds", "config.timeout_seconds", msg, size);
                else if (streq(key, "tasks"))
                        r = append_u32(v, m, "tasks", "config.tasks", msg, size);
                else if (streq(key, "memory")) {
                        if (json_is_string(v))
                                r = append_string(m, "memory", json_string_value(v));
                        else if (json_is_integer(v) && json_integer_value(v) > 0)
                                r = sd_bus_message_append(
                                        m, "{sv}", "memory", "t", (uint64_t) json_integer_value(v));
                        else
                                r = refuse(
                                        msg,
                                        size,
                                        "field 'config.memory' must be a size like \"512M\" or a positive number of bytes, got %s",
                                        json_type_name(v));
                } else if (streq(key, "cpus")) {
                        if (json_is_string(v))
                                r = append_string(m, "cpus", json_string_value(v));
                        else if (json_is_number(v))
                                r = sd_bus_message_append(m, "{sv}", "cpus", "d", json_number_value(v));
                        else
                                r = refuse(
                                        msg,
                                        size,
                                        "field 'config.cpus' must be a number of CPUs like 1.5, got %s",
                                        json_type_name(v));
                } else if (streq(key, "network")) {
                        if (!json_is_string(v))
                                r = refuse(
                                        msg,
                                        size,
                                        "field 'config.network' must be a string, \"none\" or \"host\", got %s",
                                        json_type_name(v));
                        else
                                r = append_string(m, "network", json_string_value(v));
                } else if (streq(key, "environment"))
                        r = append_environment(v, m, msg, size);
                else if (
                        streq(key, "secrets") || streq(key, "allowed_hosts") || streq(key, "mcp_servers") ||
                        streq(key, "skills")) {
                        _cleanup_free_ char *field = NULL;

                        r = asprintf(&field, "config.%s", key) < 0
                                ? -ENOMEM
                                : append_strv(v, m, key, field, msg, size);
                } else if (streq(key, "claude_config"))
                        r = append_claude_config(v, m, msg, size);
                else if (streq(key, "mcp_overrides")) {
                        _cleanup_free_ char *text = NULL;

                        if (!json_is_object(v))
                                r = refuse(
                                        msg,
                                        size,
                                        "field 'config.mcp_overrides' must be an object of servers, got %s",
                                        json_type_name(v));
                        else if (!(text = json_dumps(v, JSON_COMPACT)))
                                r = -ENOMEM;
                        else
                                r = append_string(m, "mcp_overrides", text);
                } else
                        r = refuse(msg, size, "unknown field 'config.%s'", key);
                if (r < 0)
                        return r;
        }
        return 0;
}

int body_to_session_config(json_t *body, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *v;
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        json_object_foreach (body, key, v) {
                if (streq(key, "workspace"))
                        r = append_workspace(v, m, msg, size);
                else if (streq(key, "config"))
                        r = append_config(v, m, msg, size);
                else if (streq(key, "image") || streq(key, "task_type") || streq(key, "prompt")) {
                        if (!json_is_string(v))
                                r =
                                        refuse(msg,
                                               size,
                                               "field '%s' must be a string, got %s",
                                               key,
                                               json_type_name(v));
                        else
                                r = append_string(m, key, json_string_value(v));
                } else
                        r = refuse(msg, size, "unknown field '%s'", key);
                if (r < 0)
                        return r;
        }

        return sd_bus_message_close_container(m);
}

int body_prompt(json_t *body, const char **ret_prompt, char *msg, size_t size) {
        const char *key;
        json_t *v, *prompt;

        json_object_foreach (body, key, v)
                if (!streq(key, "prompt"))
                        return refuse(msg, size, "unknown field '%s'", key);
        prompt = json_object_get(body, "prompt");
        if (!prompt)
                return refuse(msg, size, "field 'prompt' is required");
        if (!json_is_string(prompt))
                return refuse(msg, size, "field 'prompt' must be a string, got %s", json_type_name(prompt));
        *ret_prompt = json_string_value(prompt);
        return 0;
}

int body_to_spawn_options(json_t *body, sd_bus_message *m, char *msg, size_t size) {
        const char *key;
        json_t *v;
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        json_object_foreach (body, key, v) {
                if (streq(key, "prompt") || streq(key, "task_type")) {
                        if (!json_is_string(v))
                                r =
                                        refuse(msg,
                                               size,
                                               "field '%s' must be a string, got %s",
                                               key,
                                               json_type_name(v));
                        else
                                r = append_string(m, key, json_string_value(v));
                } else if (streq(key, "timeout_seconds"))
                        r = append_u32(v, m, key, key, msg, size);
                else if (streq(key, "stream_output")) {
                        if (!json_is_boolean(v))
                                r =
                                        refuse(msg,
                                               size,
                                               "field '%s' must be a boolean, got %s",
                                               key,
                                               json_type_name(v));
                        else
                                r = sd_bus_message_append(m, "{sv}", key, "b", (int) json_is_true(v));
                } else if (streq(key, "context")) {
                        _cleanup_free_ char *text = NULL;

                        if (!json_is_object(v))
                                r =
                                        refuse(msg,
                                               size,
                                               "field '%s' must be an object, got %s",
                                               key,
                                               json_type_name(v));
                        else if (!(text = json_dumps(v, JSON_COMPACT)))
                                r = -ENOMEM;
                        else
                                r = append_string(m, key, text);
                } else
                        r = refuse(msg, size, "unknown field '%s'", key);
                if (r < 0)
                        return r;
        }

        return sd_bus_message_close_container(m);
}

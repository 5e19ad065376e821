/* SessionConfig (session-config.h): its free, its JSON form for the store, and what a child inherits. */
#define _GNU_SOURCE
#include "session-config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "util.h"

SessionConfig *session_config_free(SessionConfig *c) {
        if (!c)
                return NULL;

        free(c->workspace_path);
        free(c->image);
        free(c->task_type);
        strv_free(c->environment);
        free(c->network);
        free(c->prompt);
        free(c->context);
        free(c->slice);
        free(c->runtime);
        strv_free(c->secrets);
        strv_free(c->allowed_hosts);
        strv_free(c->mcp_servers);
        strv_free(c->skills);
        strv_free(c->allowed_tools);
        free(c->permission_mode);
        free(c->mcp_overrides);
        free(c);
        return NULL;
}

/* ---- JSON ---- */

static int json_set_u64(json_t *o, const char *key, uint64_t v) {
        if (v > INT64_MAX)
                return -ERANGE;
        return json_object_set_new(o, key, json_integer((json_int_t) v)) < 0 ? -ENOMEM : 0;
}

static int json_set_string(json_t *o, const char *key, const char *s) {
        return json_object_set_new(o, key, json_string(s)) < 0 ? -ENOMEM : 0;
}

/* A NULL-ended list as an array under key; nothing for NULL. */
static int json_set_strv(json_t *o, const char *key, char **l) {
        json_t *a;

        if (!l)
                return 0;
        a = json_array();
        if (!a || json_object_set_new(o, key, a) < 0)
                return -ENOMEM;
        for (char **i = l; *i; i++)
                if (json_array_append_new(a, json_string(*i)) < 0)
                        return -ENOMEM;
        return 0;
}

char *session_config_to_json(const SessionConfig *c) {
        _cleanup_(json_decrefp) json_t *o = NULL, *ws = NULL;
        char *s;
        int r;

        if (!c || !c->image || !c->network || (c->workspace_type == WORKSPACE_HOST && !c->workspace_path)) {
                errno = EINVAL;
                return NULL;
        }

        o = json_object();
        ws = json_object();
        if (!o || !ws) {
                errno = ENOMEM;
                return NULL;
        }

        r = json_set_string(ws, "type", c->workspace_type == WORKSPACE_HOST ? "host" : "ephemeral");
        if (r >= 0 && c->workspace_type == WORKSPACE_HOST)
                r = json_set_string(ws, "path", c->workspace_path);
        if (r >= 0)
                r = json_object_set(o, "workspace", ws) < 0 ? -ENOMEM : 0;
        if (r >= 0)
                r = json_set_string(o, "image", c->image);
        if (r >= 0)
                r = json_set_u64(o, "memory", c->memory);
        if (r >= 0)
                r = json_set_u64(o, "cpu_millis", c->cpu_millis);
        if (r >= 0)
                r = json_set_u64(o, "tasks", c->tasks);
        if (r >= 0)
                r = json_set_u64(o, "timeout_sec", c->timeout_sec);
        if (r >= 0 && c->task_type)
                r = json_set_string(o, "task_type", c->task_type);
        if (r >= 0 && c->environment) {
                json_t *env = json_object();

                r = env ? json_object_set_new(o, "environment", env) : -1;
                r = r < 0 ? -ENOMEM : 0;
                for (char **i = c->environment; r >= 0 && *i; i++) {
                        const char *eq = strchr(*i, '=');
                        _cleanup_free_ char *name = NULL;

                        if (!eq) {
                                r = -EINVAL;
                                break;
                        }
                        name = strndup(*i, (size_t) (eq - *i));
                        r = name ? json_set_string(env, name, eq + 1) : -ENOMEM;
                }
        }
        if (r >= 0)
                r = json_set_string(o, "network", c->network);
        if (r >= 0 && c->context) {
                json_t *context = json_loads(c->context, JSON_REJECT_DUPLICATES, NULL);

                r = json_is_object(context) ? 0 : -EINVAL;
                if (r >= 0)
                        r = json_object_set(o, "context", context) < 0 ? -ENOMEM : 0;
                json_decref(context);
        }
        if (r >= 0 && c->slice)
                r = json_set_string(o, "slice", c->slice);
        if (r >= 0 && c->runtime)
                r = json_set_string(o, "runtime", c->runtime);
        if (r >= 0)
                r = json_set_strv(o, "allowed_hosts", c->allowed_hosts);
        if (r >= 0)
                r = json_set_strv(o, "secrets", c->secrets);
        if (r >= 0)
                r = json_set_strv(o, "mcp_servers", c->mcp_servers);
        if (r >= 0)
                r = json_set_strv(o, "skills", c->skills);
        if (r >= 0)
                r = json_set_strv(o, "allowed_tools", c->allowed_tools);
        if (r >= 0 && c->permission_mode)
                r = json_set_string(o, "permission_mode", c->permission_mode);
        if (r >= 0 && c->budget_tokens > 0)
                r = json_set_u64(o, "budget_tokens", c->budget_tokens);
        if (r >= 0 && c->budget_usd > 0)
                r = json_object_set_new(o, "budget_usd", json_real(c->budget_usd)) < 0 ? -ENOMEM : 0;
        if (r >= 0 && c->mcp_overrides) {
                json_t *overrides = json_loads(c->mcp_overrides, 0, NULL);

                r = json_is_object(overrides) && json_object_set_new(o, "mcp_overrides", overrides) >= 0
                        ? 0
                        : -EINVAL;
        }
        if (r < 0) {
                errno = -r;
                return NULL;
        }

        s = json_dumps(o, JSON_COMPACT);
        if (!s)
                errno = ENOMEM;
        return s;
}

static int json_get_u64(json_t *o, const char *key, uint64_t *ret) {
        json_t *v = json_object_get(o, key);

        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -EBADMSG;
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

static int json_get_string(json_t *o, const char *key, bool optional, char **ret) {
        json_t *v = json_object_get(o, key);
        char *s;

        if (!v && optional) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v))
                return -EBADMSG;
        s = strdup(json_string_value(v));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* An optional array of strings as a NULL-ended list (NULL when absent). */
static int json_get_strv(json_t *o, const char *key, char ***ret) {
        json_t *a = json_object_get(o, key), *v;
        _cleanup_(strv_freep) char **l = NULL;
        size_t i;

        if (!a)
                return 0;
        if (!json_is_array(a))
                return -EBADMSG;
        l = calloc(json_array_size(a) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        json_array_foreach (a, i, v) {
                if (!json_is_string(v))
                        return -EBADMSG;
                l[i] = strdup(json_string_value(v));
                if (!l[i])
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

int session_config_from_json(const char *json, SessionConfig **ret) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        _cleanup_(json_decrefp) json_t *o = NULL;
        json_t *ws, *env, *type;
        int r;

        if (!json || !ret)
                return -EINVAL;

        o = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(o))
                return -EBADMSG;

        c = calloc(1, sizeof(SessionConfig));
        if (!c)
                return -ENOMEM;

        ws = json_object_get(o, "workspace");
        type = json_object_get(ws, "type");
        if (!json_is_string(type))
                return -EBADMSG;
        if (streq(json_string_value(type), "ephemeral"))
                c->workspace_type = WORKSPACE_EPHEMERAL;
        else if (streq(json_string_value(type), "host")) {
                c->workspace_type = WORKSPACE_HOST;
                r = json_get_string(ws, "path", false, &c->workspace_path);
                if (r < 0)
                        return r;
        } else
                return -EBADMSG;

        r = json_get_string(o, "image", false, &c->image);
        if (r >= 0)
                r = json_get_u64(o, "memory", &c->memory);
        if (r >= 0)
                r = json_get_u64(o, "cpu_millis", &c->cpu_millis);
        if (r >= 0)
                r = json_get_u64(o, "tasks", &c->tasks);
        if (r >= 0)
                r = json_get_u64(o, "timeout_sec", &c->timeout_sec);
        if (r >= 0)
                r = json_get_string(o, "task_type", true, &c->task_type);
        if (r >= 0)
                r = json_get_string(o, "network", false, &c->network);
        if (r >= 0)
                r = json_get_string(o, "slice", true, &c->slice);
        if (r >= 0)
                r = json_get_string(o, "runtime", true, &c->runtime);
        if (r < 0)
                return r;
        r = json_get_strv(o, "secrets", &c->secrets);
        if (r >= 0)
                r = json_get_strv(o, "allowed_hosts", &c->allowed_hosts);
        if (r >= 0)
                r = json_get_strv(o, "mcp_servers", &c->mcp_servers);
        if (r >= 0)
                r = json_get_strv(o, "skills", &c->skills);
        if (r >= 0)
                r = json_get_strv(o, "allowed_tools", &c->allowed_tools);
        if (r >= 0)
                r = json_get_string(o, "permission_mode", true, &c->permission_mode);
        if (r >= 0 && json_object_get(o, "budget_tokens"))
                r = json_get_u64(o, "budget_tokens", &c->budget_tokens);
        if (r < 0)
                return r;
        if (json_is_number(json_object_get(o, "budget_usd")))
                c->budget_usd = json_number_value(json_object_get(o, "budget_usd"));
        if (json_object_get(o, "mcp_overrides")) {
                if (!json_is_object(json_object_get(o, "mcp_overrides")))
                        return -EBADMSG;
                c->mcp_overrides = json_dumps(json_object_get(o, "mcp_overrides"), JSON_COMPACT);
                if (!c->mcp_overrides)
                        return -ENOMEM;
        }
        if (json_object_get(o, "context")) {
                if (!json_is_object(json_object_get(o, "context")))
                        return -EBADMSG;
                c->context = json_dumps(json_object_get(o, "context"), JSON_COMPACT);
                if (!c->context)
                        return -ENOMEM;
        }

        env = json_object_get(o, "environment");
        if (env) {
                const char *name;
                json_t *value;
                size_t n = 0;

                if (!json_is_object(env))
                        return -EBADMSG;
                c->environment = calloc(json_object_size(env) + 1, sizeof(char *));
                if (!c->environment)
                        return -ENOMEM;
                json_object_foreach (env, name, value) {
                        if (!json_is_string(value))
                                return -EBADMSG;
                        if (asprintf(&c->environment[n], "%s=%s", name, json_string_value(value)) < 0) {
                                c->environment[n] = NULL;
                                return -ENOMEM;
                        }
                        n++;
                }
        }

        *ret = TAKE_PTR(c);
        return 0;
}

int session_config_inherit(const SessionConfig *parent, SessionConfig **ret) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;

        c = calloc(1, sizeof(SessionConfig));
        if (!c)
                return -ENOMEM;
        *c = (SessionConfig){
                .workspace_type = WORKSPACE_EPHEMERAL,
                .memory = parent->memory,
                .cpu_millis = parent->cpu_millis,
                .tasks = parent->tasks,
                .timeout_sec = parent->timeout_sec,
        };
        c->image = strdup(parent->image);
        c->network = strdup(parent->network);
        if (!c->image || !c->network)
                return -ENOMEM;
        if (parent->environment) {
                c->environment = strv_copy(parent->environment);
                if (!c->environment)
                        return -ENOMEM;
        }
        /* Claude Code's configuration too: a child works the way its parent does. */
        if ((parent->allowed_hosts && !(c->allowed_hosts = strv_copy(parent->allowed_hosts))) ||
            (parent->mcp_servers && !(c->mcp_servers = strv_copy(parent->mcp_servers))) ||
            (parent->skills && !(c->skills = strv_copy(parent->skills))) ||
            (parent->allowed_tools && !(c->allowed_tools = strv_copy(parent->allowed_tools))) ||
            (parent->permission_mode && !(c->permission_mode = strdup(parent->permission_mode))) ||
            (parent->mcp_overrides && !(c->mcp_overrides = strdup(parent->mcp_overrides))))
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

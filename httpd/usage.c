/* A session's a{sv} property of numbers as one object of its JSON (docs/dbus-api.md): Usage as "usage"
 * (its model calls through the model proxy, its own and its tree's: {"calls": 3, "input_tokens": 1200,
 * ..., "cost_usd": 0.01, "tree_calls": ..., "tree_cost_usd": ...}) and Limits as "limits" ({"memory":
 * bytes, "cpu_millis": ..., "tasks": ..., "timeout_sec": ..., "budget_usd": ..., "budget_tokens": ...}).
 * Kept current by PropertiesChanged like the other keys (session_json_update() in routes.c calls this).
 * Values of other types are skipped. */
#define _GNU_SOURCE
#include <errno.h>

#include "cleanup.h"
#include "httpd.h"
#include "util.h"

int session_json_numbers(sd_bus_message *m, json_t *o, const char *key_name) {
        _cleanup_(json_decrefp) json_t *usage = json_object();
        int r;

        if (!usage)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'v', "a{sv}");
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key, *contents;
                json_t *value = NULL;
                char type;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r <= 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return r;
                if (streq(contents, "t") || streq(contents, "u") || streq(contents, "d")) {
                        uint64_t t = 0;
                        uint32_t u = 0;
                        double d = 0;

                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r >= 0)
                                r = sd_bus_message_read_basic(
                                        m,
                                        contents[0],
                                        contents[0] == 't'           ? (void *) &t
                                                : contents[0] == 'u' ? (void *) &u
                                                                     : (void *) &d);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        value = contents[0] == 'd'
                                ? json_real(d)
                                : json_integer(contents[0] == 't' ? (json_int_t) t : (json_int_t) u);
                        if (r >= 0 && (!value || json_object_set_new(usage, key, value) < 0))
                                return -ENOMEM;
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return json_object_set(o, key_name, usage) < 0 ? -ENOMEM : 0;
}

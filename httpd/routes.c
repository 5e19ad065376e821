/* The REST routes of /api/v1 (docs/api.md, docs/openapi.yaml), each a thin mapping onto one or two
 * D-Bus calls of ccdockerd (docs/dbus-api.md): check the session is in the token's scope, make the call
 * asynchronously, turn the reply into JSON. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "config-build.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

/* GET .../output returns at most this many events per call, OUTPUT_DEFAULT_LIMIT unless asked. */
#define OUTPUT_MAX_LIMIT 10000U
#define OUTPUT_DEFAULT_LIMIT 1000U
/* GET .../result?wait=true without timeout waits this long; the daemon takes at most 3600 s. */
#define RESULT_DEFAULT_WAIT_SEC 60U
#define RESULT_MAX_WAIT_SEC 3600U
#define RESULT_CALL_MARGIN_USEC (30ULL * 1000000ULL)
/* DELETE waits at most this many times this long for State to become final after Stop. */
#define STOP_STATE_TRIES 50U
#define STOP_STATE_DELAY_USEC (100ULL * 1000ULL)

static int session_path(const char *id, char **ret) {
        return sd_bus_path_encode(SESSION_PATH_PREFIX, id, ret);
}

static bool reply_failed(Request *req, sd_bus_message *m) {
        req->slot = sd_bus_slot_unref(req->slot);
        if (!sd_bus_message_is_method_error(m, NULL))
                return false;
        request_reply_bus_error(req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
        return true;
}

static void reply_bad_reply(Request *req, int r) {
        log_warning_errno(r, "%s %s: unexpected reply from ccdockerd: %m", req->method, req->path);
        request_reply_error(req, 502, "daemon_error", "ccdockerd sent an unexpected reply");
}

/* Starts a call of member on the object path (NULL: the session req->id). */
static void call(
        Request *req,
        const char *object,
        const char *iface,
        const char *member,
        sd_bus_message_handler_t callback,
        uint64_t usec,
        const char *types,
        ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        va_list ap;
        int r;

        if (object)
                r = (path = strdup(object)) ? 0 : -ENOMEM;
        else
                r = session_path(req->id, &path);
        if (r >= 0)
                r = sd_bus_message_new_method_call(req->server->bus, &m, BUS_NAME, path, iface, member);
        if (r >= 0 && types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
        }
        if (r >= 0)
                r = sd_bus_call_async(req->server->bus, &req->slot, m, callback, req, usec);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

static json_t *time_json(uint64_t usec) {
        char buf[64];
        struct tm tm;
        time_t sec = (time_t) (usec / 1000000ULL);

        if (usec == 0 || !gmtime_r(&sec, &tm))
                return json_null();
        snprintf(
                buf,
                sizeof buf,
                "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRIu64 "Z",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec,
                (uint64_t) (usec % 1000000U));
        return json_string(buf);
}

static json_t *string_or_null(const char *s) {
        return isempty(s) ? json_null() : json_string(s);
}

/* ---- the session object (GetAll) ---- */

static const struct {
        const char *property;
        const char *key;
        char type;
} session_keys[] = {
        { "Id", "id", 's' },
        { "ParentId", "parent_id", 's' },
        { "Depth", "depth", 'u' },
        { "State", "state", 's' },
        { "StateReason", "state_reason", 's' },
        { "Unit", "unit", 's' },
        { "ContainerId", "container_id", 's' },
        { "TaskType", "task_type", 's' },
        { "CreatedAt", "created_at", 't' },
        { "Image", "image", 's' },
        { "Workspace", "workspace", 's' },
        { "LastSeq", "last_seq", 't' },
        { "PendingPrompts", "pending_prompts", 'u' },
        { "BudgetExhaustedReason", "budget_exhausted", 's' },
};

/* Sets the keys of o for the properties in the a{sv} at m (GetAll's reply, PropertiesChanged's changes);
 * leaves the others as they are. */
int session_json_update(sd_bus_message *m, json_t *o) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *name, *contents;
                json_t *value = NULL;
                size_t i;
                char type;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return r;
                for (i = 0; i < ELEMENTSOF(session_keys); i++)
                        if (streq(session_keys[i].property, name))
                                break;

                if (i < ELEMENTSOF(session_keys) && contents[0] == session_keys[i].type && !contents[1]) {
                        const char *s;
                        uint64_t t;
                        uint32_t u;

                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                return r;
                        if (contents[0] == 's') {
                                r = sd_bus_message_read_basic(m, 's', &s);
                                value = r < 0 ? NULL
                                        : streq(session_keys[i].key, "parent_id") ||
                                                streq(session_keys[i].key, "task_type") ||
                                                streq(session_keys[i].key, "container_id") ||
                                                streq(session_keys[i].key, "budget_exhausted")
                                        ? string_or_null(s)
                                        : json_string(s);
                        } else if (contents[0] == 'u') {
                                r = sd_bus_message_read_basic(m, 'u', &u);
                                value = json_integer(u);
                        } else {
                                r = sd_bus_message_read_basic(m, 't', &t);
                                value = streq(session_keys[i].key, "created_at")
                                        ? time_json(t)
                                        : json_integer((json_int_t) t);
                        }
                        if (r < 0)
                                return r;
                        if (!value || json_object_set_new(o, session_keys[i].key, value) < 0)
                                return -ENOMEM;
                        r = sd_bus_message_exit_container(m);
                } else if (streq(name, "Children") && streq(contents, "as")) {
                        _cleanup_(strv_freep) char **children = NULL;
                        json_t *a = json_array();

                        if (!a || json_object_set_new(o, "children", a) < 0)
                                return -ENOMEM;
                        r = sd_bus_message_enter_container(m, 'v', "as");
                        if (r >= 0)
                                r = sd_bus_message_read_strv(m, &children);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        for (char **c = children; r >= 0 && c && *c; c++)
                                if (json_array_append_new(a, json_string(*c)) < 0)
                                        return -ENOMEM;
                } else if (streq(name, "Usage") && streq(contents, "a{sv}"))
                        r = session_json_numbers(m, o, "usage");
                else if (streq(name, "Limits") && streq(contents, "a{sv}"))
                        r = session_json_numbers(m, o, "limits");
                else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

static int session_json(sd_bus_message *m, json_t **ret) {
        _cleanup_(json_decrefp) json_t *o = json_object();
        int r;

        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(session_keys); i++)
                if (json_object_set_new(o, session_keys[i].key, json_null()) < 0)
                        return -ENOMEM;
        r = session_json_update(m, o);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        json_t *o = NULL;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = session_json(m, &o);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        /* The newest state: whatever the cache held was sent before this reply. */
        (void) session_cache_put(req->server->sessions, req->id, o);
        /* POST /sessions and .../spawn answer 201 with the new session. */
        request_reply_json(req, req->status ?: 200, o);
        return 0;
}

static void get_session(Request *req) {
        call(req, NULL, "org.freedesktop.DBus.Properties", "GetAll", on_get_all, 0, "s", SESSION_INTERFACE);
}

/* GET: from the property cache (httpd/cache.c) when it holds the session, else GetAll, which fills it. */
static void get_session_cached(Request *req) {
        json_t *o = session_cache_get(req->server->sessions, req->id);

        if (!o) {
                get_session(req);
                return;
        }
        request_reply_json(req, 200, json_incref(o));
}

/* ---- the list (ListSessions) ---- */

static int compare_created(const void *a, const void *b) {
        json_t *x = *(json_t *const *) a, *y = *(json_t *const *) b;
        json_int_t cx = json_integer_value(json_object_get(x, "created_usec"));
        json_int_t cy = json_integer_value(json_object_get(y, "created_usec"));

        return cx < cy    ? -1
                : cx > cy ? 1
                          : strcmp(json_string_value(json_object_get(x, "id")),
                                   json_string_value(json_object_get(y, "id")));
}

/* The sessions of a ListSessions reply in the token's scope, oldest first; filtered by state and by
 * parent ("" for top-level sessions) when those are not NULL. */
static int session_list_json(
        Request *req, sd_bus_message *m, const char *state, const char *parent, json_t **ret) {
        _cleanup_(json_decrefp) json_t *a = json_array();
        _cleanup_free_ json_t **items = NULL;
        const char *id, *parent_id, *st, *unit, *path;
        uint64_t created;
        size_t n = 0;
        int r;

        if (!a)
                return -ENOMEM;
        r = parent_cache_fill(req->server->parents, m);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "(ssssto)");
        if (r < 0)
                return r;
        /* One read transaction for all the scope checks: SQLite locks and checks the file once, not per
         * session. */
        _cleanup_(token_store_read_endp) TokenStore *reading =
                token_store_read_begin(req->server->tokens) >= 0 ? req->server->tokens : NULL;
        while ((r = sd_bus_message_read(m, "(ssssto)", &id, &parent_id, &st, &unit, &created, &path)) > 0) {
                json_t *o;

                if (state && !streq(state, st))
                        continue;
                if (parent && !streq(parent, parent_id))
                        continue;
                r = scope_check(req->server, req->token_id, id);
                if (r < 0 && r != -EAGAIN)
                        return r;
                if (r <= 0)
                        continue;
                o = json_pack(
                        "{s:s,s:o,s:s,s:s,s:o,s:I}",
                        "id",
                        id,
                        "parent_id",
                        string_or_null(parent_id),
                        "state",
                        st,
                        "unit",
                        unit,
                        "created_at",
                        time_json(created),
                        "created_usec",
                        (json_int_t) created);
                if (!o || json_array_append_new(a, o) < 0)
                        return -ENOMEM;
        }
        if (r < 0)
                return r;

        /* Oldest first; created_usec is only for sorting. */
        n = json_array_size(a);
        items = calloc(n + 1, sizeof(json_t *));
        if (!items)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                items[i] = json_incref(json_array_get(a, i));
        qsort(items, n, sizeof(json_t *), compare_created);
        json_array_clear(a);
        for (size_t i = 0; i < n; i++) {
                json_object_del(items[i], "created_usec");
                if (json_array_append_new(a, items[i]) < 0)
                        return -ENOMEM;
        }
        *ret = json_pack("{s:O}", "sessions", a);
        return *ret ? 0 : -ENOMEM;
}

static int on_list(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        json_t *o = NULL;
        const char *parent;
        int r;

        if (reply_failed(req, m))
                return 0;
        parent = req->id ? req->id : request_arg(req, "parent");
        r = session_list_json(req, m, req->id ? NULL : request_arg(req, "state"), parent, &o);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        request_reply_json(req, 200, o);
        return 0;
}

static const char *const states[] = { "starting", "idle", "running", "stopped", "failed", NULL };

static void route_list(Request *req) {
        const char *state = request_arg(req, "state"), *parent = request_arg(req, "parent");
        bool ok = !state;

        for (const char *const *s = states; state && *s; s++)
                ok = ok || streq(*s, state);
        if (!ok) {
                request_reply_error(
                        req,
                        400,
                        "invalid_argument",
                        "query argument 'state' must be one of starting, idle, running, stopped, failed");
                return;
        }
        if (parent && !isempty(parent) && strlen(parent) != 12) {
                request_reply_error(
                        req,
                        400,
                        "invalid_argument",
                        "query argument 'parent' must be a session id or empty");
                return;
        }
        call(req, MANAGER_PATH, MANAGER_INTERFACE, "ListSessions", on_list, 0, NULL);
}

static void children_in_scope(Request *req) {
        call(req, MANAGER_PATH, MANAGER_INTERFACE, "ListSessions", on_list, 0, NULL);
}

static void route_children(Request *req) {
        request_check_scope(req, children_in_scope);
}

/* ---- create and spawn ---- */

static int on_created(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        const char *id, *path;
        bool spawn = req->id != NULL;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = sd_bus_message_read(m, "so", &id, &path);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        /* Recorded before anything else, so the session is in scope from now on. */
        r = token_store_add_session(req->server->tokens, req->token_id, id);
        if (r < 0)
                log_error_errno(r, "Failed to record session %s for its token: %m", id);
        (void) parent_cache_put(req->server->parents, id, spawn ? req->id : "");
        if (spawn)
                metrics_spawn(req->server->metrics);
        log_info("%s session %s.", spawn ? "Spawned" : "Created", id);

        free(req->id);
        req->id = strdup(id);
        if (!req->id) {
                request_reply_error(req, 500, "internal", "out of memory");
                return 0;
        }
        req->status = 201;
        get_session(req);
        return 0;
}

static void create_with(Request *req, const char *iface, const char *member) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        char message[512] = "";
        int r;

        if (req->id)
                r = session_path(req->id, &path);
        else
                r = (path = strdup(MANAGER_PATH)) ? 0 : -ENOMEM;
        if (r >= 0)
                r = sd_bus_message_new_method_call(req->server->bus, &m, BUS_NAME, path, iface, member);
        if (r >= 0)
                r = req->id ? body_to_spawn_options(req->json, m, message, sizeof message)
                            : body_to_session_config(req->json, m, message, sizeof message);
        if (r < 0 && message[0]) {
                request_reply_error(req, 400, "invalid_body", "%s", message);
                return;
        }
        if (r >= 0)
                r = sd_bus_call_async(req->server->bus, &req->slot, m, on_created, req, SLOW_CALL_USEC);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

/* Per-token quota (issue 14, defect 9): httpd creates every session as its own user, so the daemon's
 * MaxSessionsPerOwner= caps all its clients together; each token may hold --max-sessions-per-token live
 * sessions of its own (those it created; their children count in the daemon's MaxTreeSessions=). */
static int on_quota_listed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        const char *id, *parent, *state, *unit, *path;
        uint64_t created;
        unsigned live = 0, max = req->server->limits.max_sessions_per_token;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "(ssssto)");
        while (r > 0) {
                r = sd_bus_message_read(m, "(ssssto)", &id, &parent, &state, &unit, &created, &path);
                if (r > 0 && !streq(state, "stopped") && !streq(state, "failed") &&
                    token_store_has_session(req->server->tokens, req->token_id, id) > 0)
                        live++;
        }
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        if (live >= max) {
                request_reply_error(
                        req,
                        429,
                        "limit_exceeded",
                        "this token has %u live sessions, the most ccdocker-httpd's --max-sessions-per-token allows; "
                        "stop one first",
                        live);
                return 0;
        }
        create_with(req, MANAGER_INTERFACE, "CreateSession");
        return 0;
}

static void route_create(Request *req) {
        call(req, MANAGER_PATH, MANAGER_INTERFACE, "ListSessions", on_quota_listed, 0, NULL);
}

static void spawn_in_scope(Request *req) {
        create_with(req, SESSION_INTERFACE, "SpawnChild");
}

static void route_spawn(Request *req) {
        request_check_scope(req, spawn_in_scope);
}

/* ---- one session ---- */

static void route_get(Request *req) {
        request_check_scope(req, get_session_cached);
}

static void get_stopped_session(Request *req);

static int on_stop_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Request *req = userdata;

        req->timer = sd_event_source_disable_unref(req->timer);
        get_stopped_session(req);
        return 0;
}

/* Stop returns when systemd has stopped the unit; State follows when the daemon has seen it end. The
 * answer waits for that, briefly, so that it shows the session stopped. */
static int on_stopped_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        json_t *o = NULL;
        const char *state;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = session_json(m, &o);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        state = json_string_value(json_object_get(o, "state"));
        if (!streq_ptr(state, "stopped") && !streq_ptr(state, "failed") && ++req->tries < STOP_STATE_TRIES &&
            sd_event_add_time_relative(
                    req->server->event,
                    &req->timer,
                    CLOCK_MONOTONIC,
                    STOP_STATE_DELAY_USEC,
                    0,
                    on_stop_retry,
                    req) >= 0) {
                json_decref(o);
                return 0;
        }
        request_reply_json(req, 200, o);
        return 0;
}

static void get_stopped_session(Request *req) {
        call(req,
             NULL,
             "org.freedesktop.DBus.Properties",
             "GetAll",
             on_stopped_get_all,
             0,
             "s",
             SESSION_INTERFACE);
}

static int on_stopped(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;

        if (reply_failed(req, m))
                return 0;
        get_stopped_session(req);
        return 0;
}

static bool parse_bool_arg(Request *req, const char *name, bool *ret) {
        const char *v = request_arg(req, name);

        if (!v) {
                *ret = false;
                return true;
        }
        if (streq(v, "true") || streq(v, "1") || isempty(v))
                *ret = true;
        else if (streq(v, "false") || streq(v, "0"))
                *ret = false;
        else {
                request_reply_error(
                        req, 400, "invalid_argument", "query argument '%s' must be true or false", name);
                return false;
        }
        return true;
}

static void stop_in_scope(Request *req) {
        bool force;

        if (!parse_bool_arg(req, "force", &force))
                return;
        call(req, NULL, SESSION_INTERFACE, "Stop", on_stopped, SLOW_CALL_USEC, "b", (int) force);
}

static void route_delete(Request *req) {
        request_check_scope(req, stop_in_scope);
}

static int on_prompt_sent(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        const char *message_id;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = sd_bus_message_read(m, "s", &message_id);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        request_reply_json(req, 202, json_pack("{s:s}", "message_id", message_id));
        return 0;
}

static void prompt_in_scope(Request *req) {
        const char *prompt;
        char message[256];

        if (body_prompt(req->json, &prompt, message, sizeof message) < 0) {
                request_reply_error(req, 400, "invalid_body", "%s", message);
                return;
        }
        call(req, NULL, SESSION_INTERFACE, "SendPrompt", on_prompt_sent, 0, "s", prompt);
}

static void route_prompt(Request *req) {
        request_check_scope(req, prompt_in_scope);
}

/* ---- the budget (SetBudget) ---- */

static int on_budget_set(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;

        if (reply_failed(req, m))
                return 0;
        get_session(req);
        return 0;
}

static void budget_in_scope(Request *req) {
        json_t *usd, *tokens, *v;
        const char *key;
        double amount = 0;

        if (!json_is_object(req->json)) {
                request_reply_error(req, 400, "invalid_body", "the body must be a JSON object");
                return;
        }
        json_object_foreach (req->json, key, v)
                if (!streq(key, "budget_usd") && !streq(key, "budget_tokens")) {
                        request_reply_error(
                                req,
                                400,
                                "invalid_body",
                                "unknown field '%.64s': the fields are budget_usd and budget_tokens",
                                key);
                        return;
                }
        usd = json_object_get(req->json, "budget_usd");
        tokens = json_object_get(req->json, "budget_tokens");
        if (!usd && !tokens) {
                request_reply_error(req, 400, "invalid_body", "give budget_usd, budget_tokens or both");
                return;
        }
        if (usd) {
                amount = json_number_value(usd);
                if (!json_is_number(usd) || !(amount >= 0)) {
                        request_reply_error(req, 400, "invalid_body", "budget_usd must be a number >= 0");
                        return;
                }
        }
        if (tokens && (!json_is_integer(tokens) || json_integer_value(tokens) < 0)) {
                request_reply_error(req, 400, "invalid_body", "budget_tokens must be a whole number >= 0");
                return;
        }
        /* Given keys first: with one, the array has one entry and the last pair is not read. */
        if (usd)
                call(req,
                     NULL,
                     SESSION_INTERFACE,
                     "SetBudget",
                     on_budget_set,
                     0,
                     "a{sv}",
                     tokens ? 2 : 1,
                     "budget_usd",
                     "d",
                     amount,
                     "budget_tokens",
                     "t",
                     (uint64_t) json_integer_value(tokens));
        else
                call(req,
                     NULL,
                     SESSION_INTERFACE,
                     "SetBudget",
                     on_budget_set,
                     0,
                     "a{sv}",
                     1,
                     "budget_tokens",
                     "t",
                     (uint64_t) json_integer_value(tokens));
}

static void route_budget(Request *req) {
        request_check_scope(req, budget_in_scope);
}

static int on_output(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        _cleanup_(json_decrefp) json_t *events = json_array();
        uint64_t seq, time, last = req->since;
        const char *data;
        int r;

        if (reply_failed(req, m))
                return 0;
        if (!events) {
                request_reply_error(req, 500, "internal", "out of memory");
                return 0;
        }
        r = sd_bus_message_enter_container(m, 'a', "(tts)");
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        while ((r = sd_bus_message_read(m, "(tts)", &seq, &time, &data)) > 0) {
                json_t *d = json_loads(data, JSON_DECODE_ANY, NULL);

                if (!d)
                        d = json_pack("{s:s,s:s}", "type", "raw", "text", data);
                if (json_array_append_new(
                            events,
                            json_pack(
                                    "{s:I,s:I,s:o}",
                                    "seq",
                                    (json_int_t) seq,
                                    "time",
                                    (json_int_t) time,
                                    "data",
                                    d)) < 0) {
                        r = -ENOMEM;
                        break;
                }
                last = seq;
        }
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        request_reply_json(
                req, 200, json_pack("{s:O,s:I}", "events", events, "next_since", (json_int_t) last));
        return 0;
}

static bool parse_u64_arg(Request *req, const char *name, uint64_t max, uint64_t *ret) {
        const char *v = request_arg(req, name);
        uint64_t u;

        if (!v)
                return true;
        if (safe_atou64(v, &u) < 0 || u > max) {
                request_reply_error(
                        req,
                        400,
                        "invalid_argument",
                        "query argument '%s' must be an integer from 0 to %" PRIu64,
                        name,
                        max);
                return false;
        }
        *ret = u;
        return true;
}

static void output_in_scope(Request *req) {
        uint64_t limit = OUTPUT_DEFAULT_LIMIT;

        req->since = 0;
        if (!parse_u64_arg(req, "since", INT64_MAX, &req->since) ||
            !parse_u64_arg(req, "limit", OUTPUT_MAX_LIMIT, &limit))
                return;
        if (limit == 0)
                limit = OUTPUT_DEFAULT_LIMIT;
        call(req, NULL, SESSION_INTERFACE, "GetOutput", on_output, 0, "tu", req->since, (uint32_t) limit);
}

static void route_output(Request *req) {
        request_check_scope(req, output_in_scope);
}

static int on_result(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        const char *status, *result, *error, *usage;
        json_t *u;
        int r;

        if (reply_failed(req, m))
                return 0;
        r = sd_bus_message_read(m, "ssss", &status, &result, &error, &usage);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        u = json_loads(usage, 0, NULL);
        if (!json_is_object(u)) {
                json_decref(u);
                u = json_object();
        }
        request_reply_json(
                req,
                200,
                json_pack(
                        "{s:s,s:o,s:o,s:o}",
                        "status",
                        status,
                        "result",
                        string_or_null(result),
                        "error",
                        string_or_null(error),
                        "usage",
                        u));
        return 0;
}

static void result_in_scope(Request *req) {
        uint64_t timeout = RESULT_DEFAULT_WAIT_SEC;
        bool wait;

        if (!parse_bool_arg(req, "wait", &wait) ||
            !parse_u64_arg(req, "timeout", RESULT_MAX_WAIT_SEC, &timeout))
                return;
        if (!wait)
                timeout = 0;
        call(req,
             NULL,
             SESSION_INTERFACE,
             "GetResult",
             on_result,
             timeout * 1000000ULL + RESULT_CALL_MARGIN_USEC,
             "bu",
             (int) wait,
             (uint32_t) timeout);
}

static void route_result(Request *req) {
        request_check_scope(req, result_in_scope);
}

static void route_stream(Request *req) {
        request_check_scope(req, stream_start);
}

/* ---- health and metrics ---- */

static int on_version(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        const char *version;
        int r;

        req->slot = sd_bus_slot_unref(req->slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                request_reply_json(
                        req,
                        503,
                        json_pack(
                                "{s:s,s:s,s:s}",
                                "status",
                                "unavailable",
                                "version",
                                PROJECT_VERSION,
                                "daemon",
                                strempty(sd_bus_message_get_error(m)->message)));
                return 0;
        }
        r = sd_bus_message_read(m, "v", "s", &version);
        if (r < 0) {
                reply_bad_reply(req, r);
                return 0;
        }
        request_reply_json(
                req,
                200,
                json_pack(
                        "{s:s,s:s,s:s}",
                        "status",
                        "ok",
                        "version",
                        PROJECT_VERSION,
                        "daemon_version",
                        version));
        return 0;
}

static void route_health(Request *req) {
        call(req,
             MANAGER_PATH,
             "org.freedesktop.DBus.Properties",
             "Get",
             on_version,
             5ULL * 1000000ULL,
             "ss",
             MANAGER_INTERFACE,
             "Version");
}

static int on_metrics_sessions(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        _cleanup_free_ char *text = NULL;

        req->slot = sd_bus_slot_unref(req->slot);
        text = metrics_render(req->server, sd_bus_message_is_method_error(m, NULL) ? NULL : m);
        if (!text) {
                request_reply_error(req, 500, "internal", "out of memory");
                return 0;
        }
        request_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text);
        return 0;
}

static void route_metrics(Request *req) {
        call(req,
             MANAGER_PATH,
             MANAGER_INTERFACE,
             "ListSessions",
             on_metrics_sessions,
             5ULL * 1000000ULL,
             NULL);
}

/* ---- the table ---- */

static const char *const args_list[] = { "state", "parent", NULL };
static const char *const args_delete[] = { "force", NULL };
static const char *const args_output[] = { "since", "limit", NULL };
static const char *const args_result[] = { "wait", "timeout", NULL };
static const char *const args_stream[] = { "since", "ticket", NULL };
static const char *const args_questions[] = { "all", NULL };

const Route routes[] = {
        { "GET", "/health", route_health, true, false, NULL },
        { "GET", "/metrics", route_metrics, false, false, NULL },
        { "GET", "/api/v1/sessions", route_list, false, false, args_list },
        { "POST", "/api/v1/sessions", route_create, false, true, NULL },
        { "GET", "/api/v1/sessions/{id}", route_get, false, false, NULL },
        { "DELETE", "/api/v1/sessions/{id}", route_delete, false, false, args_delete },
        { "POST", "/api/v1/sessions/{id}/prompts", route_prompt, false, true, NULL },
        { "PATCH", "/api/v1/sessions/{id}/budget", route_budget, false, true, NULL },
        { "GET", "/api/v1/sessions/{id}/output", route_output, false, false, args_output },
        { "GET", "/api/v1/sessions/{id}/result", route_result, false, false, args_result },
        { "GET", "/api/v1/sessions/{id}/children", route_children, false, false, NULL },
        { "POST", "/api/v1/sessions/{id}/spawn", route_spawn, false, true, NULL },
        { "GET", "/api/v1/sessions/{id}/stream", route_stream, false, false, args_stream },
        { "GET", "/api/v1/sessions/{id}/questions", route_questions, false, false, args_questions },
        { "GET", "/api/v1/questions", route_all_questions, false, false, args_questions },
        { "POST", "/api/v1/sessions/{id}/questions/{id}/answer", route_answer, false, true, NULL },
        { "POST", "/api/v1/stream-tickets", route_stream_ticket, false, false, NULL },
        { "GET", "/api/v1/events", route_events, false, false, NULL },
        { "POST", "/api/v1/sessions/{id}/remove", route_remove, false, false, NULL },
        { "GET", "/", route_dashboard_index, true, false, NULL },
        { "GET", "/dashboard/{id}", route_dashboard_file, true, false, NULL },
};

const size_t n_routes = ELEMENTSOF(routes);

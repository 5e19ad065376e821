/* org.ccdocker1.Session at /org/ccdocker1/session/<escaped id> (dbus/org.ccdocker1.Session.xml): the
 * session's properties and methods. The handlers only read their arguments, authorise the caller and call
 * one operation of the core (session.c, session-channel.c, session-children.c), then marshal what it
 * answers. Objects are served by a fallback vtable that finds the session by path, so a session needs no
 * registration of its own; PropertiesChanged goes out from the manager's one publishing flush
 * (session_dbus_send_changed()). */
#define _GNU_SOURCE
#include "session-dbus.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "cleanup.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"
#include "polkit.h"
#include "session-budget.h"
#include "util.h"
#include "validate.h"

#define SESSION_PATH "/org/ccdocker1/session"
#define SESSION_INTERFACE "org.ccdocker1.Session"

int session_object_find(
        sd_bus *bus,
        const char *path,
        const char *interface,
        void *userdata,
        void **found,
        sd_bus_error *error) {
        Manager *m = userdata;
        sd_bus_message *message = sd_bus_get_current_message(bus);
        Session *s;
        uid_t uid;

        s = manager_get_session_by_path(m, path);
        if (!s)
                return 0;
        /* Our methods authorise their caller themselves (session_authorize()). Reading the object
         * (Properties, Introspect) is for those who see the session; to anyone else it does not exist. */
        if (m->config.mode == DAEMON_SYSTEM && message &&
            !streq_ptr(sd_bus_message_get_interface(message), SESSION_INTERFACE) &&
            (bus_message_caller_uid(message, &uid) < 0 || !manager_caller_sees(m, uid, s)))
                return 0;
        *found = s;
        return 1;
}

static int session_node_enumerator(
        sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        sd_bus_message *message = sd_bus_get_current_message(bus);
        _cleanup_free_ Session **sessions = NULL;
        _cleanup_(strv_freep) char **l = NULL;
        uid_t uid = 0;
        size_t n, k = 0;
        int r;

        /* Only the objects the caller sees (manager_caller_sees()): introspecting the tree shows no
         * other owner's sessions. */
        if (m->config.mode == DAEMON_SYSTEM && message && bus_message_caller_uid(message, &uid) < 0)
                uid = (uid_t) -1;
        r = manager_list_sessions(m, NULL, &sessions, &n);
        if (r < 0)
                return r;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (m->config.mode == DAEMON_SYSTEM && message && !manager_caller_sees(m, uid, sessions[i]))
                        continue;
                l[k] = strdup(sessions[i]->object_path);
                if (!l[k++])
                        return -ENOMEM;
        }
        *nodes = TAKE_PTR(l);
        return 1;
}

/* Strings that may be NULL are published as "". */
static int property_get_string(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        char **p = userdata;

        return sd_bus_message_append(reply, "s", strempty(*p));
}

static int property_get_state(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        Session *s = userdata;

        return sd_bus_message_append(reply, "s", session_state_to_string(s->state));
}

static int append_usage(sd_bus_message *reply, const char *prefix, const StoreUsage *u) {
        const struct {
                const char *name;
                uint64_t v;
        } counts[] = {
                { "calls", u->calls },
                { "input_tokens", u->input_tokens },
                { "output_tokens", u->output_tokens },
                { "cache_creation_input_tokens", u->cache_creation_input_tokens },
                { "cache_read_input_tokens", u->cache_read_input_tokens },
        };
        char key[64];
        int r = 0;

        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(counts); i++) {
                (void) snprintf(key, sizeof(key), "%s%s", prefix, counts[i].name);
                r = sd_bus_message_append(reply, "{sv}", key, "t", counts[i].v);
        }
        (void) snprintf(key, sizeof(key), "%scost_usd", prefix);
        if (r >= 0)
                r = sd_bus_message_append(reply, "{sv}", key, "d", u->cost_usd);
        return r;
}

/* What the session's own model calls used, and ("tree_"...) it with all its descendants. */
static int property_get_usage(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        Session *s = userdata;
        StoreUsage tree;
        int r;

        manager_subtree_usage(s->manager, s, &tree);
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = append_usage(reply, "", &s->usage);
        if (r >= 0)
                r = append_usage(reply, "tree_", &tree);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

/* The limits the session was created with (and its budget as SetBudget left it): "memory" bytes,
 * "cpu_millis", "tasks", "timeout_sec" (0: none), "budget_usd" and "budget_tokens" (0: none). Empty
 * for a session whose configuration the daemon no longer has. */
static int property_get_limits(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        Session *s = userdata;
        const SessionConfig *c = s->config;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0 && c)
                r = sd_bus_message_append(
                        reply,
                        "{sv}{sv}{sv}{sv}{sv}{sv}",
                        "memory",
                        "t",
                        c->memory,
                        "cpu_millis",
                        "t",
                        c->cpu_millis,
                        "tasks",
                        "t",
                        c->tasks,
                        "timeout_sec",
                        "t",
                        c->timeout_sec,
                        "budget_usd",
                        "d",
                        c->budget_usd,
                        "budget_tokens",
                        "t",
                        c->budget_tokens);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int property_get_budget(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        Session *s = userdata;

        if (streq(property, "BudgetExhausted"))
                return sd_bus_message_append(reply, "b", (int) s->budget_exhausted);
        return sd_bus_message_append(reply, "s", s->budget_reason);
}

static int property_get_children(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        Session *s = userdata;
        _cleanup_free_ Session **children = NULL;
        size_t n;
        int r;

        r = manager_list_sessions(s->manager, s, &children, &n);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "s", children[i]->id);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

/* ---- authorisation: the owner and root pass, anyone else needs polkit's manage-sessions ---- */

typedef void (*authorized_t)(Session *s, sd_bus_message *message, uid_t caller);

typedef struct AuthRequest {
        Session *session;
        uid_t caller;
        authorized_t next;
        const char *method;
} AuthRequest;

static void on_authorized(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        AuthRequest *req = userdata;
        Session *s = req->session;

        if (r > 0 && !s->removed) {
                manager_admin_seen(s->manager, req->caller);
                req->next(s, call, req->caller);
        } else if (r > 0)
                (void) sd_bus_reply_method_errorf(
                        call, CCDOCKER_ERROR_NO_SUCH_SESSION, "%s: no session '%s'", req->method, s->id);
        else {
                audit_log(
                        AUDIT_EVENT_DENIED,
                        s->id,
                        s->parent_id,
                        s->unit,
                        req->caller,
                        "%s of session %s denied for uid %u",
                        req->method,
                        s->id,
                        (unsigned) req->caller);
                (void) sd_bus_reply_method_errorf(
                        call,
                        CCDOCKER_ERROR_ACCESS_DENIED,
                        "%s: uid %u may not manage session %s (polkit action %s)%s%s",
                        req->method,
                        (unsigned) req->caller,
                        s->id,
                        POLKIT_ACTION_MANAGE_ANY,
                        error && error->message ? ": " : "",
                        error && error->message ? error->message : "");
        }
        session_unref(req->session);
        free(req);
}

int session_authorize(
        Session *s, sd_bus_message *message, const char *method, authorized_t next, sd_bus_error *error) {
        Manager *m = s->manager;
        AuthRequest *req;
        uid_t uid;
        int r;

        r = bus_message_caller_uid(message, &uid);
        if (r < 0)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_ACCESS_DENIED,
                        "%s: could not identify the caller: %s",
                        method,
                        strerror(-r));

        /* On the user bus only the user can call; on the system bus the owner and root pass. */
        if (m->config.mode == DAEMON_USER || uid == 0 || uid == s->owner_uid) {
                next(s, message, uid);
                return 1;
        }

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (AuthRequest){ .session = session_ref(s), .caller = uid, .next = next, .method = method };
        r = polkit_check_async(m->bus, message, POLKIT_ACTION_MANAGE_ANY, NULL, on_authorized, req);
        if (r < 0) {
                session_unref(req->session);
                free(req);
                return sd_bus_error_setf(
                        error,
                        CCDOCKER_ERROR_ACCESS_DENIED,
                        "%s: could not ask polkit: %s",
                        method,
                        strerror(-r));
        }
        return 1;
}

/* ---- Stop ---- */

static void on_stopped(int r, const char *error, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = userdata;

        if (r < 0)
                (void) sd_bus_reply_method_errorf(
                        message,
                        SD_BUS_ERROR_FAILED,
                        "Stop: systemd could not stop the unit: %s",
                        error ? error : strerror(-r));
        else
                (void) sd_bus_reply_method_return(message, NULL);
}

static void do_stop(Session *s, sd_bus_message *message, uid_t caller) {
        int force = 0, r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "b", &force);
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_INVALID_ARGS, "Stop: %s", strerror(-r));
                return;
        }
        sd_bus_message_ref(message);
        r = session_stop(s, force, caller, on_stopped, message);
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(
                        message,
                        SD_BUS_ERROR_FAILED,
                        "Stop: could not stop session %s: %s",
                        s->id,
                        strerror(-r));
                sd_bus_message_unref(message);
        }
}

static int method_stop(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int force, r;

        /* Read once here so that a wrong type is refused before anything is asked. */
        r = sd_bus_message_read(message, "b", &force);
        if (r < 0)
                return r;
        return session_authorize(userdata, message, "Stop", do_stop, error);
}

/* ---- Remove ---- */

static void do_remove(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_(session_unrefp) Session *ref = session_ref(s);
        CoreError e;
        int r;

        r = session_remove(s, caller, NULL, &e);
        if (r < 0)
                (void) bus_reply_core_error(message, "Remove", &e);
        else
                (void) sd_bus_reply_method_return(message, NULL);
}

static int method_remove(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return session_authorize(userdata, message, "Remove", do_remove, error);
}

/* ---- SendPrompt, GetOutput, GetResult, Attach ---- */

static void do_send_prompt(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_free_ char *mid = NULL;
        const char *prompt;
        CoreError e;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "s", &prompt);
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_INVALID_ARGS, "SendPrompt: %s", strerror(-r));
                return;
        }
        r = session_send_prompt(s, "SendPrompt", prompt, &mid, &e);
        if (r < 0)
                (void) bus_reply_core_error(message, NULL, &e);
        else
                (void) sd_bus_reply_method_return(message, "s", mid);
}

/* SetBudget's a{sv}: budget_usd (d) and budget_tokens (t), each optional. */
static int read_budget(
        sd_bus_message *message, bool *set_usd, double *usd, bool *set_tokens, uint64_t *tokens) {
        int r;

        *set_usd = *set_tokens = false;
        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(message, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "budget_usd")) {
                        r = sd_bus_message_read(message, "v", "d", usd);
                        *set_usd = true;
                } else if (streq(key, "budget_tokens")) {
                        r = sd_bus_message_read(message, "v", "t", tokens);
                        *set_tokens = true;
                } else
                        return -EBADR;
                if (r >= 0)
                        r = sd_bus_message_exit_container(message);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(message);
        return r;
}

static void do_set_budget(Session *s, sd_bus_message *message, uid_t caller) {
        bool set_usd, set_tokens;
        double usd = 0;
        uint64_t tokens = 0;
        CoreError e;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = read_budget(message, &set_usd, &usd, &set_tokens, &tokens);
        if (r >= 0)
                r = session_set_budget(s, set_usd, usd, set_tokens, tokens, &e);
        else
                r = core_error(&e, r, CORE_ERROR_INVALID_CONFIG, "SetBudget: %s", strerror(-r));
        if (r < 0)
                (void) bus_reply_core_error(message, NULL, &e);
        else
                (void) sd_bus_reply_method_return(message, "");
}

static int method_set_budget(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        bool set_usd, set_tokens;
        double usd;
        uint64_t tokens;
        int r;

        r = read_budget(message, &set_usd, &usd, &set_tokens, &tokens);
        if (r == -EBADR)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_INVALID_ARGS,
                        "SetBudget: the keys are budget_usd (d) and budget_tokens (t)");
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "SetBudget: %s", strerror(-r));
        return session_authorize(userdata, message, "SetBudget", do_set_budget, error);
}

static int method_send_prompt(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *prompt;
        int r;

        r = sd_bus_message_read(message, "s", &prompt);
        if (r < 0)
                return r;
        return session_authorize(userdata, message, "SendPrompt", do_send_prompt, error);
}

static void do_get_output(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *events = NULL;
        uint64_t since;
        uint32_t limit;
        size_t i;
        json_t *e;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "tu", &since, &limit);
        if (r >= 0)
                r = session_get_output(s, since, limit, &events);
        if (r >= 0)
                r = sd_bus_message_new_method_return(message, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(tts)");
        json_array_foreach (events, i, e) {
                _cleanup_free_ char *data = NULL;

                if (r < 0)
                        break;
                data = json_dumps(json_object_get(e, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
                if (!data) {
                        r = -ENOMEM;
                        break;
                }
                r = sd_bus_message_append(
                        reply,
                        "(tts)",
                        (uint64_t) json_integer_value(json_object_get(e, "seq")),
                        (uint64_t) json_integer_value(json_object_get(e, "time")),
                        data);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_FAILED, "GetOutput: %s", strerror(-r));
}

static int method_get_output(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        uint64_t since;
        uint32_t limit;
        int r;

        r = sd_bus_message_read(message, "tu", &since, &limit);
        if (r < 0)
                return r;
        return session_authorize(userdata, message, "GetOutput", do_get_output, error);
}

static void reply_result(Session *s, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *message = userdata;
        _cleanup_free_ char *result = NULL, *error = NULL, *usage = NULL;
        const char *status;
        int r;

        r = session_result(s, &status, &result, &error, &usage);
        if (r < 0)
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_NO_MEMORY, "GetResult: %s", strerror(-r));
        else
                (void) sd_bus_reply_method_return(message, "ssss", status, result, error, usage);
}

static void do_get_result(Session *s, sd_bus_message *message, uid_t caller) {
        int wait = 0, r;
        uint32_t timeout = 0;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "bu", &wait, &timeout);
        if (r >= 0) {
                r = session_wait_result(s, wait, timeout, reply_result, sd_bus_message_ref(message));
                if (r < 0)
                        sd_bus_message_unref(message);
        }
        if (r == -EUSERS)
                (void) sd_bus_reply_method_errorf(
                        message,
                        CCDOCKER_ERROR_LIMIT,
                        "GetResult: session %s already has %u calls waiting on it, the configured "
                        "MaxWaitersPerSession",
                        s->id,
                        s->n_waiters);
        else if (r < 0)
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_FAILED, "GetResult: %s", strerror(-r));
}

static int method_get_result(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int wait, r;
        uint32_t timeout;

        r = sd_bus_message_read(message, "bu", &wait, &timeout);
        if (r < 0)
                return r;
        if (timeout > 3600)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_INVALID_ARGS,
                        "GetResult: timeout_seconds must be at most 3600, got %u",
                        timeout);
        return session_authorize(userdata, message, "GetResult", do_get_result, error);
}

static void do_attach(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_close_ int fd = -EBADF;
        uint64_t since;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "t", &since);
        if (r >= 0)
                r = session_attach(s, since, &fd);
        if (r == -EUSERS) {
                (void) sd_bus_reply_method_errorf(
                        message,
                        CCDOCKER_ERROR_LIMIT,
                        "Attach: session %s has %u subscribers, the configured MaxAttachPerSession",
                        s->id,
                        s->manager->config.max_attach);
                return;
        }
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(message, SD_BUS_ERROR_FAILED, "Attach: %s", strerror(-r));
                return;
        }
        (void) sd_bus_reply_method_return(message, "h", fd);
}

static int method_attach(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        uint64_t since;
        int r;

        r = sd_bus_message_read(message, "t", &since);
        if (r < 0)
                return r;
        return session_authorize(userdata, message, "Attach", do_attach, error);
}

/* ---- SpawnChild ---- */

/* SpawnChild's a{sv} as the params of spawn_child (docs/channel.md), which session_spawn_child() checks:
 * prompt (s), task_type (s), timeout_seconds (u or t), stream_output (b), context (s, a JSON object). */
static int spawn_params_from_bus(sd_bus_message *message, json_t **ret, sd_bus_error *error) {
        _cleanup_(json_decrefp) json_t *params = json_object();
        int r;

        if (!params)
                return -ENOMEM;
        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        while (r >= 0) {
                const char *key, *contents, *str;
                json_t *v = NULL;
                uint64_t t;
                uint32_t u;
                int b;

                r = sd_bus_message_enter_container(message, 'e', "sv");
                if (r <= 0)
                        break;
                r = sd_bus_message_read_basic(message, 's', &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(message, NULL, &contents);
                if (r < 0)
                        break;
                if (json_object_get(params, key))
                        return sd_bus_error_setf(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "SpawnChild: field '%.64s' must be given at most once",
                                key);
                if (streq(key, "context") && streq(contents, "s")) {
                        r = sd_bus_message_read(message, "v", "s", &str);
                        if (r >= 0) {
                                v = json_loads(str, JSON_REJECT_DUPLICATES, NULL);
                                if (!json_is_object(v)) {
                                        json_decref(v);
                                        return sd_bus_error_setf(
                                                error,
                                                CCDOCKER_ERROR_INVALID_CONFIG,
                                                "SpawnChild: field 'context' must be the text of a JSON object");
                                }
                        }
                } else if ((streq(key, "prompt") || streq(key, "task_type")) && streq(contents, "s")) {
                        r = sd_bus_message_read(message, "v", "s", &str);
                        v = r >= 0 ? json_string(str) : NULL;
                } else if (streq(key, "timeout_seconds") && streq(contents, "u")) {
                        r = sd_bus_message_read(message, "v", "u", &u);
                        v = r >= 0 ? json_integer(u) : NULL;
                } else if (streq(key, "timeout_seconds") && streq(contents, "t")) {
                        r = sd_bus_message_read(message, "v", "t", &t);
                        v = r >= 0 ? json_integer(t > INT64_MAX ? INT64_MAX : (json_int_t) t) : NULL;
                } else if (streq(key, "stream_output") && streq(contents, "b")) {
                        r = sd_bus_message_read(message, "v", "b", &b);
                        v = r >= 0 ? json_boolean(b) : NULL;
                } else if (
                        streq(key, "prompt") || streq(key, "task_type") || streq(key, "timeout_seconds") ||
                        streq(key, "stream_output") || streq(key, "context"))
                        return sd_bus_error_setf(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "SpawnChild: field '%s' must not be of type '%.16s'",
                                key,
                                contents);
                else
                        return sd_bus_error_setf(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "SpawnChild: unknown field '%.64s' (known: prompt, task_type, timeout_seconds, "
                                "stream_output, context)",
                                key);
                if (r < 0)
                        break;
                if (!v || json_object_set_new(params, key, v) < 0)
                        return -ENOMEM;
                r = sd_bus_message_exit_container(message);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(message);
        if (r < 0)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_INVALID_ARGS,
                        "SpawnChild: could not read the options: %s",
                        strerror(-r));
        *ret = TAKE_PTR(params);
        return 0;
}

static void do_spawn_child(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(json_decrefp) json_t *params = NULL;
        _cleanup_(session_unrefp) Session *child = NULL;
        const char *name, *text;
        SpawnError e;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = spawn_params_from_bus(message, &params, &error);
        if (r < 0 || sd_bus_error_is_set(&error)) {
                if (!sd_bus_error_is_set(&error))
                        (void) sd_bus_error_set_errno(&error, r);
                (void) sd_bus_reply_method_error(message, &error);
                return;
        }
        r = session_spawn_child(s, params, caller, &child, &e);
        if (r < 0) {
                name = r == -EINVAL    ? CCDOCKER_ERROR_INVALID_CONFIG
                        : r == -EPERM  ? CCDOCKER_ERROR_LIMIT
                        : r == -ESTALE ? CCDOCKER_ERROR_BAD_STATE
                                       : SD_BUS_ERROR_FAILED;
                text = startswith(e.message, "spawn_child:") ?: e.message;
                (void) sd_bus_reply_method_errorf(
                        message, name, "SpawnChild:%s%s", *text == ' ' ? "" : " ", text);
                return;
        }
        (void) sd_bus_reply_method_return(message, "so", child->id, child->object_path);
        (void) session_start(child);
}

static int method_spawn_child(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return session_authorize(userdata, message, "SpawnChild", do_spawn_child, error);
}

/* sd-bus reads "u" properties straight from these fields. */
_Static_assert(sizeof(uid_t) == sizeof(uint32_t), "OwnerUID is read as a uint32_t");
_Static_assert(
        sizeof(((Session *) 0)->n_prompts) == sizeof(uint32_t), "PendingPrompts is read as a uint32_t");

static const sd_bus_vtable session_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", property_get_string, offsetof(Session, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "ParentId",
                "s",
                property_get_string,
                offsetof(Session, parent_id),
                SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Depth", "u", NULL, offsetof(Session, depth), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY(
                "StateReason",
                "s",
                property_get_string,
                offsetof(Session, state_reason),
                SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY(
                "Unit", "s", property_get_string, offsetof(Session, unit), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "ContainerId",
                "s",
                property_get_string,
                offsetof(Session, container_id),
                SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY(
                "TaskType",
                "s",
                property_get_string,
                offsetof(Session, task_type),
                SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "CreatedAt", "t", NULL, offsetof(Session, created_usec), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("OwnerUID", "u", NULL, offsetof(Session, owner_uid), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "Image", "s", property_get_string, offsetof(Session, image), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "Workspace",
                "s",
                property_get_string,
                offsetof(Session, workspace),
                SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY(
                "LastSeq", "t", NULL, offsetof(Session, last_seq), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY(
                "PendingPrompts",
                "u",
                NULL,
                offsetof(Session, n_prompts),
                SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Children", "as", property_get_children, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Usage", "a{sv}", property_get_usage, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Limits", "a{sv}", property_get_limits, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BudgetExhausted", "b", property_get_budget, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY(
                "BudgetExhaustedReason", "s", property_get_budget, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS(
                "SpawnChild",
                SD_BUS_ARGS("a{sv}", options),
                SD_BUS_RESULT("s", id, "o", session),
                method_spawn_child,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "SendPrompt",
                SD_BUS_ARGS("s", prompt),
                SD_BUS_RESULT("s", message_id),
                method_send_prompt,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "SetBudget",
                SD_BUS_ARGS("a{sv}", budget),
                SD_BUS_NO_RESULT,
                method_set_budget,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "GetOutput",
                SD_BUS_ARGS("t", since, "u", limit),
                SD_BUS_RESULT("a(tts)", events),
                method_get_output,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "GetResult",
                SD_BUS_ARGS("b", wait, "u", timeout_seconds),
                SD_BUS_RESULT("s", status, "s", result, "s", error, "s", usage),
                method_get_result,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "Attach",
                SD_BUS_ARGS("t", since),
                SD_BUS_RESULT("h", fd),
                method_attach,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "Stop", SD_BUS_ARGS("b", force), SD_BUS_NO_RESULT, method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "Remove", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int session_dbus_attach(Manager *m) {
        int r;

        r = sd_bus_add_fallback_vtable(
                m->bus, NULL, SESSION_PATH, SESSION_INTERFACE, session_vtable, session_object_find, m);
        if (r < 0)
                return log_error_errno(r, "could not publish %s: %m", SESSION_INTERFACE);
        r = sd_bus_add_node_enumerator(m->bus, NULL, SESSION_PATH, session_node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "could not publish the session objects: %m");
        return 0;
}

void session_dbus_send_changed(Manager *m, Session *s, unsigned changes) {
        static const struct {
                unsigned change;
                const char *names[5];
        } map[] = {
                { SESSION_CHANGED_STATE,
                  { "State", "StateReason", "BudgetExhausted", "BudgetExhaustedReason", "Limits" } },
                { SESSION_CHANGED_CONTAINER, { "ContainerId" } },
                { SESSION_CHANGED_OUTPUT, { "LastSeq" } },
                { SESSION_CHANGED_PROMPTS, { "PendingPrompts" } },
                { SESSION_CHANGED_CHILDREN, { "Children" } },
                { SESSION_CHANGED_USAGE, { "Usage" } },
        };
        const char *names[5 * ELEMENTSOF(map) + 1];
        size_t n = 0;
        int r;

        if (!m->bus)
                return;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                for (size_t j = 0; (changes & map[i].change) && j < ELEMENTSOF(map[i].names); j++)
                        if (map[i].names[j])
                                names[n++] = map[i].names[j];
        if (n == 0)
                return;
        names[n] = NULL;
        r = sd_bus_emit_properties_changed_strv(m->bus, s->object_path, SESSION_INTERFACE, (char **) names);
        if (r < 0)
                log_debug_errno(r, "session %s: could not emit PropertiesChanged: %m", s->id);
}

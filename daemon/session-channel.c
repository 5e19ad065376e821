/* The session's side of its channel (docs/channel.md): what ccdocker-init's hello, heartbeats and events
 * mean for the session, the prompt queue (stored before it is acknowledged, delivered one turn at a time,
 * in order), and the result of the latest turn. channel.c frames and validates; this file decides. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-id128.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "channel.h"
#include "cleanup.h"
#include "events.h"
#include "log.h"
#include "manager.h"
#include "peer.h"
#include "questions.h"
#include "ratelimit.h"
#include "session-budget.h"
#include "session-remote.h"
#include "session.h"
#include "time-util.h"
#include "util.h"
#include "validate.h"

/* ---- the prompt queue ---- */

static void prompt_free(Prompt *p) {
        if (!p)
                return;
        free(p->message_id);
        free(p->text);
        free(p);
}

void session_prompts_clear(Session *s) {
        while (s->prompts) {
                Prompt *p = s->prompts;

                s->prompts = p->next;
                prompt_free(p);
        }
        s->n_prompts = 0;
}

static void prompt_append(Session *s, Prompt *p) {
        Prompt **i = &s->prompts;

        while (*i)
                i = &(*i)->next;
        *i = p;
        s->n_prompts++;
}

static int on_deliver(sd_event_source *source, void *userdata) {
        Session *s = userdata;

        s->deliver_source = sd_event_source_unref(s->deliver_source);
        session_deliver_next(s);
        session_unref(s);
        return 0;
}

/* Delivers from the event loop, so that a hello's answer goes out before the first prompt. */
static void session_schedule_delivery(Session *s) {
        int r;

        if (s->deliver_source)
                return;
        r = sd_event_add_defer(s->manager->event, &s->deliver_source, on_deliver, s);
        if (r < 0) {
                log_warning_errno(r, "session %s: could not schedule prompt delivery: %m", s->id);
                return;
        }
        session_ref(s);
}

void session_deliver_next(Session *s) {
        Prompt *p = s->prompts;
        int r;

        if (!p || p->sent || !s->channel || !channel_has_init(s->channel) ||
            session_state_is_final(s->state) || session_budget_holds(s) || s->pool_handover)
                return;
        r = channel_send_prompt(s->channel, p->message_id, p->text);
        if (r < 0) {
                log_debug_errno(
                        r, "session %s: prompt %s waits for ccdocker-init: %m", s->id, p->message_id);
                return;
        }
        p->sent = true;
        if (s->state == SESSION_IDLE || s->state == SESSION_STARTING)
                session_set_state(s, SESSION_RUNNING, NULL);
}

int session_queue_prompt(Session *s, const char *text, char **ret_message_id) {
        _cleanup_free_ char *mid = NULL;
        Prompt *p;
        sd_id128_t id;
        int r;

        r = sd_id128_randomize(&id);
        if (r < 0)
                return r;
        mid = malloc(SD_ID128_STRING_MAX);
        if (!mid)
                return -ENOMEM;
        sd_id128_to_string(id, mid);

        /* Stored before it is acknowledged: a prompt the caller was told about survives a crash. */
        r = store_prompt_add(s->manager->store, s->id, mid, text, now_usec(CLOCK_REALTIME));
        if (r < 0)
                return r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->message_id = strdup(mid);
        p->text = strdup(text);
        if (!p->message_id || !p->text) {
                prompt_free(p);
                return -ENOMEM;
        }
        prompt_append(s, p);
        session_mark_changed(s, SESSION_CHANGED_PROMPTS);
        {
                _cleanup_(json_decrefp) json_t *msg = json_pack(
                        "{s:s, s:s, s:s, s:s}",
                        "type",
                        "prompt",
                        "session_id",
                        s->id,
                        "message_id",
                        mid,
                        "text",
                        text);

                session_notify(s, "input", msg);
        }
        session_schedule_delivery(s);

        if (ret_message_id)
                *ret_message_id = TAKE_PTR(mid);
        return 0;
}

int session_send_prompt(
        Session *s, const char *method, const char *text, char **ret_message_id, CoreError *e) {
        int r;

        if (session_state_is_final(s->state) || s->stop_requested)
                return core_error(
                        e,
                        -ESTALE,
                        CORE_ERROR_BAD_STATE,
                        "%s: session %s is %s and takes no prompts",
                        method,
                        s->id,
                        session_state_is_final(s->state) ? session_state_to_string(s->state) : "stopping");
        if (s->n_prompts >= s->manager->config.max_queued_prompts)
                return core_error(
                        e,
                        -ENOBUFS,
                        CORE_ERROR_LIMIT,
                        "%s: session %s has %u prompts waiting, the configured MaxQueuedPrompts; wait for a result",
                        method,
                        s->id,
                        s->n_prompts);
        r = validate_prompt(&s->manager->config, method, text, e);
        if (r < 0)
                return r;
        r = session_queue_prompt(s, text, ret_message_id);
        if (r < 0)
                return core_error(
                        e, r, CORE_ERROR_FAILED, "%s: could not queue the prompt: %s", method, strerror(-r));
        return 0;
}

static int load_prompt(
        const char *message_id, const char *text, const char *state, uint64_t usec, void *userdata) {
        Session *s = userdata;
        Prompt *p;

        if (streq(state, "done") || streq(state, "failed"))
                return 0;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->message_id = strdup(message_id);
        p->text = strdup(text);
        if (!p->message_id || !p->text) {
                prompt_free(p);
                return -ENOMEM;
        }
        /* A delivered one is sent again: ccdocker-init drops prompts it has already written. */
        p->delivered = streq(state, "delivered");
        prompt_append(s, p);
        return 0;
}

/* The output of a session whose record was read back after a restart: how far its events go, the
 * result of its latest turn, and the prompts not yet answered. */
int session_restore_output(Session *s) {
        json_t *result = NULL;
        int r;

        r = event_bus_last_seq(s->manager->events, s->id, &s->last_seq);
        if (r < 0)
                return r;
        /* One stored row, never the history: what a container stored may be huge to parse. */
        r = event_bus_last_result(s->manager->events, s->id, &result);
        if (r < 0)
                return r;
        json_decref(s->last_result);
        s->last_result = result;
        if (session_state_is_final(s->state))
                return 0;
        return store_load_prompts(s->manager->store, s->id, load_prompt, s);
}

/* ---- output ---- */

int session_get_output(Session *s, uint64_t since, unsigned limit, json_t **ret) {
        unsigned max = s->manager->config.max_output_events;

        return event_bus_get(s->manager->events, s->id, since, limit == 0 || limit > max ? max : limit, ret);
}

int session_attach(Session *s, uint64_t since, int *ret_fd) {
        int r;

        /* Each subscriber is an fd and a buffer in the daemon: a caller may not open them without end. */
        if (event_bus_n_subscribers(s->manager->events, s->id) >= s->manager->config.max_attach)
                return -EUSERS;
        r = event_bus_attach(s->manager->events, s->id, since, ret_fd);
        if (r < 0)
                return r;
        /* An ended session's subscriber gets what there is, then EOF. */
        if (session_state_is_final(s->state))
                event_bus_session_ended(s->manager->events, s->id);
        return 0;
}

/* ---- results ---- */

/* Someone waiting for a session: GetResult with wait, ccdocker-mcp's child.result and child.output. */
typedef struct ResultWaiter {
        Session *session;
        bool output; /* also woken by each new event */
        session_wait_t done;
        void *userdata;
        sd_event_source *timer;
        struct ResultWaiter *next;
} ResultWaiter;

bool session_result_pending(Session *s) {
        if (session_state_is_final(s->state))
                return false;
        return s->n_prompts > 0 || !s->last_result;
}

/* status, result, error and usage (JSON text) of the latest turn, as GetResult answers them. */
int session_result(
        Session *s, const char **ret_status, char **ret_result, char **ret_error, char **ret_usage) {
        _cleanup_(json_decrefp) json_t *usage = json_object();
        const char *status, *result = "", *error = "";
        json_t *u;

        if (!usage)
                return -ENOMEM;
        if (s->last_result) {
                json_t *r = s->last_result;
                bool failed = json_is_true(json_object_get(r, "is_error")) ||
                        !streq_ptr(json_string_value(json_object_get(r, "subtype")), "success");

                u = json_object_get(r, "usage");
                if (json_is_integer(json_object_get(u, "input_tokens")))
                        json_object_set(usage, "input_tokens", json_object_get(u, "input_tokens"));
                if (json_is_integer(json_object_get(u, "output_tokens")))
                        json_object_set(usage, "output_tokens", json_object_get(u, "output_tokens"));
                if (json_is_number(json_object_get(r, "total_cost_usd")))
                        json_object_set(usage, "total_cost_usd", json_object_get(r, "total_cost_usd"));
                if (failed)
                        error = json_string_value(json_object_get(r, "result"))
                                ?: "the turn ended in an error";
                else
                        result = json_string_value(json_object_get(r, "result")) ?: "";
        }

        if (s->state == SESSION_FAILED) {
                status = "failed";
                error = strempty(s->state_reason);
                result = "";
        } else if (s->state == SESSION_STOPPED && (s->n_prompts > 0 || s->ended_mid_turn)) {
                /* Stopped with a prompt not yet answered: that turn will never end. */
                status = "failed";
                error = "the session was stopped before its turn ended";
                result = "";
        } else if (session_result_pending(s))
                status = "pending";
        else if (*error)
                status = "failed";
        else
                status = "completed";

        *ret_status = status;
        *ret_result = strdup(strempty(result));
        *ret_error = strdup(strempty(error));
        *ret_usage = json_dumps(usage, JSON_COMPACT | JSON_SORT_KEYS);
        if (!*ret_result || !*ret_error || !*ret_usage) {
                *ret_result = mfree(*ret_result);
                *ret_error = mfree(*ret_error);
                *ret_usage = mfree(*ret_usage);
                return -ENOMEM;
        }
        return 0;
}

static void waiter_free(ResultWaiter *w) {
        sd_event_source_unref(w->timer);
        session_unref(w->session);
        free(w);
}

static void waiter_unlink(ResultWaiter *w) {
        for (ResultWaiter **i = &w->session->waiters; *i; i = &(*i)->next)
                if (*i == w) {
                        *i = w->next;
                        w->session->n_waiters--;
                        return;
                }
}

static void waiter_finish(ResultWaiter *w) {
        w->done(w->session, w->userdata);
        waiter_free(w);
}

static int on_waiter_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        ResultWaiter *w = userdata;

        waiter_unlink(w);
        waiter_finish(w);
        return 0;
}

/* Wakes every waiter (the turn ended, or the session did), or with output_only those waiting for
 * output (an event was stored). Waiters added by a done callback wait for the next wake. */
void session_wake(Session *s, bool output_only) {
        _cleanup_(session_unrefp) Session *ref = session_ref(s);
        ResultWaiter *woken = NULL, **i = &s->waiters;

        while (*i) {
                ResultWaiter *w = *i;

                if (output_only && !w->output) {
                        i = &w->next;
                        continue;
                }
                *i = w->next;
                s->n_waiters--;
                w->next = woken;
                woken = w;
        }
        while (woken) {
                ResultWaiter *w = woken;

                woken = w->next;
                waiter_finish(w);
        }
}

void session_wake_waiters(Session *s) {
        session_wake(s, false);
}

int session_wait(Session *s, bool output, uint32_t timeout_sec, session_wait_t done, void *userdata) {
        ResultWaiter *w;
        int r;

        if (s->n_waiters >= s->manager->config.max_waiters)
                return -EUSERS;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        *w = (ResultWaiter){
                .session = session_ref(s), .output = output, .done = done, .userdata = userdata
        };
        r = sd_event_add_time_relative(
                s->manager->event,
                &w->timer,
                CLOCK_MONOTONIC,
                (uint64_t) (timeout_sec ?: 1) * USEC_PER_SEC,
                0,
                on_waiter_timeout,
                w);
        if (r < 0) {
                waiter_free(w);
                return r;
        }
        w->next = s->waiters;
        s->waiters = w;
        s->n_waiters++;
        return 0;
}

int session_wait_result(Session *s, bool wait, uint32_t timeout_sec, session_wait_t done, void *userdata) {
        int r;

        if (!wait || !session_result_pending(s)) {
                done(s, userdata);
                return 0;
        }
        r = session_wait(s, false, timeout_sec, done, userdata);
        return r < 0 ? r : 1;
}

/* ---- the channel's hooks ---- */

static json_t *strv_to_json(char **l) {
        json_t *a = json_array();

        for (char **i = l; a && i && *i; i++)
                if (json_array_append_new(a, json_string(*i)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static bool json_strv_contains(json_t *a, const char *s) {
        size_t i;
        json_t *v;

        json_array_foreach (a, i, v)
                if (streq_ptr(json_string_value(v), s))
                        return true;
        return false;
}

/* What ccdocker-init configures Claude Code with (docs/channel.md, hello): the session's own choices
 * (SPEC.md 8.2, 8.3) or the defaults, the names of the granted secrets (their values are in the
 * container, not here), and the conditional MCP servers of SPEC.md 7.2 those secrets enable. */
static json_t *session_claude_config(Session *s) {
        static char *default_mcp[] = { (char *) "cc-docker", NULL };
        static char *default_skills[] = {
                (char *) "delegate-task", (char *) "coordinate-children", (char *) "child-status", NULL
        };
        SessionConfig *c = s->config;
        _cleanup_(json_decrefp) json_t *config = NULL;
        json_t *mcp;

        config = json_pack(
                "{s:s, s:o, s:i, s:o, s:s, s:o, s:o, s:o, s:o}",
                "session_id",
                s->id,
                "parent_id",
                s->parent_id ? json_string(s->parent_id) : json_null(),
                "depth",
                (int) s->depth,
                "task_type",
                s->task_type ? json_string(s->task_type) : json_null(),
                "permission_mode",
                c && c->permission_mode ? c->permission_mode : "bypassPermissions",
                "mcp_servers",
                strv_to_json(c && c->mcp_servers ? c->mcp_servers
                                                 : s->manager->config.default_mcp_servers ?: default_mcp),
                "skills",
                strv_to_json(c && c->skills ? c->skills : default_skills),
                "allowed_tools",
                strv_to_json(c ? c->allowed_tools : NULL),
                "secrets",
                strv_to_json(c ? c->secrets : NULL));
        if (!config)
                return NULL;
        mcp = json_object_get(config, "mcp_servers");
        for (char **i = c ? c->secrets : NULL; i && *i; i++) {
                const char *server = streq(*i, "GITHUB_TOKEN") ? "github"
                        : streq(*i, "POSTGRES_URL")            ? "postgres"
                                                               : NULL;

                if (server && !json_strv_contains(mcp, server) &&
                    json_array_append_new(mcp, json_string(server)) < 0)
                        return NULL;
        }
        if (c && c->mcp_overrides &&
            json_object_set_new(config, "mcp_overrides", json_loads(c->mcp_overrides, 0, NULL)) < 0)
                return NULL;
        if (c && session_remote_hello(s, config) < 0)
                return NULL;
        return TAKE_PTR(config);
}

static void hook_heartbeat(void *userdata);

static json_t *hook_hello(void *userdata, const char *role, char **error) {
        Session *s = userdata;
        _cleanup_(json_decrefp) json_t *config = NULL;
        json_t *result;

        if (streq(role, "init")) {
                s->init_connected = true;
                hook_heartbeat(s);
                /* Prompts that were sent to a previous connection go again (init drops duplicates). */
                for (Prompt *p = s->prompts; p; p = p->next)
                        p->sent = false;
                session_schedule_delivery(s);
        }
        config = session_claude_config(s);
        if (!config) {
                *error = strdup("out of memory");
                return NULL;
        }
        log_info("session %s: %s connected to the channel", s->id, role);
        result = json_pack(
                "{s:i, s:s, s:I, s:O}",
                "protocol",
                1,
                "session_id",
                s->id,
                "last_seq",
                (json_int_t) s->last_seq,
                "config",
                config);
        /* What ccdocker-mcp validates ask_user's timeout_seconds against (docs/channel.md). */
        if (result && streq(role, "mcp") &&
            json_object_set_new(
                    result,
                    "question_timeout_min",
                    json_integer((json_int_t) s->manager->config.question_min_timeout_sec)) < 0) {
                json_decref(result);
                result = NULL;
        }
        if (!result)
                *error = strdup("out of memory");
        return result;
}

/* Stamped with the loop's time, the clock the periodic check reads too: a heartbeat handled in the same
 * turn as the check is never "after" it. */
static void hook_heartbeat(void *userdata) {
        Session *s = userdata;

        s->last_heartbeat_usec = event_now_usec(s->manager->event, CLOCK_MONOTONIC);
}

static void session_turn_ended(Session *s, json_t *result) {
        Prompt *p = s->prompts;

        json_decref(s->last_result);
        s->last_result = json_incref(result);
        /* The result answers the oldest prompt claude was given, also one given before a reconnect
         * whose resend has not gone out yet. */
        if (p && (p->sent || p->delivered)) {
                int r = store_prompt_set_state(
                        s->manager->store, p->message_id, "done", now_usec(CLOCK_REALTIME));
                if (r < 0)
                        log_warning_errno(
                                r, "session %s: could not mark prompt %s done: %m", s->id, p->message_id);
                s->prompts = p->next;
                s->n_prompts--;
                prompt_free(p);
                session_mark_changed(s, SESSION_CHANGED_PROMPTS);
        }
        if (s->parent_id) {
                _cleanup_free_ char *status_result = NULL, *error = NULL, *usage = NULL;
                const char *status;

                if (session_result(s, &status, &status_result, &error, &usage) >= 0) {
                        _cleanup_(json_decrefp) json_t *msg = json_pack(
                                "{s:s, s:s, s:s, s:s, s:s}",
                                "type",
                                "result",
                                "session_id",
                                s->id,
                                "status",
                                status,
                                "result",
                                status_result,
                                "error",
                                error);

                        session_notify(s, "parent", msg);
                }
        }
        if (s->state == SESSION_RUNNING && !s->prompts)
                session_set_state(s, SESSION_IDLE, NULL);
        session_mark_changed(s, SESSION_CHANGED_TURN);
        session_deliver_next(s);
}

static int hook_events(void *userdata, json_t *events, uint64_t *ret_acked, char **error) {
        Session *s = userdata;
        _cleanup_(json_decrefp) json_t *fresh = json_array();
        uint64_t next = s->last_seq + 1;
        size_t i;
        json_t *e;
        int r;

        if (!fresh)
                return -ENOMEM;
        json_array_foreach (events, i, e) {
                uint64_t seq = (uint64_t) json_integer_value(json_object_get(e, "seq"));

                if (seq < next)
                        continue; /* already stored: a resend after a reconnect */
                if (seq > next) {
                        if (asprintf(
                                    error,
                                    "events[%zu]: gap: expected seq %" PRIu64 ", got %" PRIu64,
                                    i,
                                    next,
                                    seq) < 0)
                                *error = NULL;
                        return -EBADMSG;
                }
                if (json_array_append(fresh, e) < 0)
                        return -ENOMEM;
                next++;
        }
        if (json_array_size(fresh) > 0) {
                r = event_bus_append(s->manager->events, s->id, fresh);
                if (r < 0) {
                        if (asprintf(error, "could not store the events: %s", strerror(-r)) < 0)
                                *error = NULL;
                        return r;
                }
                s->last_seq = next - 1;
                session_mark_changed(s, SESSION_CHANGED_OUTPUT);
                json_array_foreach (fresh, i, e) {
                        json_t *data = json_object_get(e, "data");

                        if (streq_ptr(json_string_value(json_object_get(data, "type")), "result"))
                                session_turn_ended(s, data);
                }
        }
        *ret_acked = s->last_seq;
        return 0;
}

/* hook_events() for a request the channel's fast path took: the same checks and effects, the events'
 * data stored as the line had them. */
static int hook_events_raw(
        void *userdata, const ChannelEvent *events, size_t n, uint64_t *ret_acked, char **error) {
        static StoreEvent fresh[CHANNEL_MAX_EVENTS_PER_CALL];
        _cleanup_(json_decrefp) json_t *results = NULL;
        Session *s = userdata;
        uint64_t next = s->last_seq + 1;
        size_t k = 0, i;
        json_t *data;
        int r;

        for (i = 0; i < n && k < ELEMENTSOF(fresh); i++) {
                if (events[i].seq < next)
                        continue; /* already stored: a resend after a reconnect */
                if (events[i].seq > next) {
                        if (asprintf(
                                    error,
                                    "events[%zu]: gap: expected seq %" PRIu64 ", got %" PRIu64,
                                    i,
                                    next,
                                    events[i].seq) < 0)
                                *error = NULL;
                        return -EBADMSG;
                }
                fresh[k++] = (StoreEvent){
                        .seq = events[i].seq,
                        .time_usec = events[i].time,
                        .data = events[i].data,
                        .data_len = events[i].data_len,
                        .result = events[i].result,
                };
                next++;
                if (events[i].result) {
                        /* Parsed before anything happens: the spans live as long as the line does. */
                        if (!results && !(results = json_array()))
                                return -ENOMEM;
                        if (json_array_append_new(
                                    results, json_loadb(events[i].data, events[i].data_len, 0, NULL)) < 0)
                                return -ENOMEM;
                }
        }
        if (k > 0) {
                r = event_bus_append_text(s->manager->events, s->id, fresh, k);
                if (r < 0) {
                        if (asprintf(error, "could not store the events: %s", strerror(-r)) < 0)
                                *error = NULL;
                        return r;
                }
                s->last_seq = next - 1;
                session_mark_changed(s, SESSION_CHANGED_OUTPUT);
                json_array_foreach (results, i, data)
                        session_turn_ended(s, data);
        }
        *ret_acked = s->last_seq;
        return 0;
}

/* A container's log line as the journal gets it: at most SESSION_LOG_LINE_MAX bytes, every control
 * character (a newline that would forge a line, an escape sequence for a terminal) written as \xNN. */
static void log_line_neutralise(const char *in, char *out, size_t size) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) in; *p && n + 5 < size; p++)
                if (*p < 0x20 || *p == 0x7f)
                        n += (size_t) snprintf(out + n, size - n, "\\x%02x", *p);
                else
                        out[n++] = (char) *p;
        out[n] = '\0';
}

/* ccdocker-init's diagnostics. A container says what it likes here, so: each session may log
 * SESSION_LOG_BURST lines per SESSION_LOG_INTERVAL_SEC and all sessions together MANAGER_LOG_BURST
 * (what is dropped is counted and said once logging resumes); a line is cut and its control
 * characters escaped; and its priority is at most info whatever level it claims, its claim kept in
 * CCDOCKER_LOG_LEVEL=. journald limits each priority of a service apart, so a flood at info can never
 * push out the daemon's audit records (notice) or its warnings and errors. */
static void hook_log(void *userdata, const char *level, const char *message) {
        Session *s = userdata;
        Manager *m = s->manager;
        char line[SESSION_LOG_LINE_MAX + 1];
        uint64_t now = event_now_usec(m->event, CLOCK_MONOTONIC);
        int priority = streq_ptr(level, "debug") ? LOG_DEBUG : LOG_INFO;

        if (!ratelimit_below(&s->log_limit, now) || !ratelimit_below(&m->log_limit, now)) {
                s->log_dropped++;
                return;
        }
        if (s->log_dropped > 0) {
                log_struct(
                        LOG_INFO,
                        "MESSAGE=session %s: ccdocker-init: %" PRIu64 " log line(s) dropped (rate limit)",
                        s->id,
                        s->log_dropped,
                        "CCDOCKER_SESSION=%s",
                        s->id,
                        "UNIT=%s",
                        s->unit,
                        NULL);
                s->log_dropped = 0;
        }
        log_line_neutralise(message, line, sizeof(line));
        log_struct(
                priority,
                "MESSAGE=session %s: ccdocker-init: %s",
                s->id,
                line,
                "CCDOCKER_SESSION=%s",
                s->id,
                "CCDOCKER_LOG_LEVEL=%.16s",
                strempty(level),
                "UNIT=%s",
                s->unit,
                NULL);
}

static void hook_prompt_delivered(void *userdata, const char *message_id, int r) {
        Session *s = userdata;

        for (Prompt *p = s->prompts; p; p = p->next) {
                if (!streq(p->message_id, message_id))
                        continue;
                if (r < 0) {
                        /* Not written: it goes again with the next hello. */
                        p->sent = false;
                        log_warning_errno(
                                r, "session %s: prompt %s was not delivered: %m", s->id, message_id);
                        return;
                }
                p->delivered = true;
                r = store_prompt_set_state(
                        s->manager->store, message_id, "delivered", now_usec(CLOCK_REALTIME));
                if (r < 0)
                        log_warning_errno(
                                r, "session %s: could not mark prompt %s delivered: %m", s->id, message_id);
                return;
        }
}

static void hook_init_gone(void *userdata) {
        Session *s = userdata;

        s->init_connected = false;
        for (Prompt *p = s->prompts; p; p = p->next)
                p->sent = false;
        log_info("session %s: ccdocker-init disconnected from the channel", s->id);
}

/* Only the session's own container speaks on its sockets (peer.h); a refusal is audited, at most
 * SESSION_PEER_AUDIT_BURST a minute, so that a flood of connects cannot flood the journal. */
int session_admit_peer(Session *s, int fd, const char *socket_name) {
        PeerInfo peer;
        int r;

        r = peer_check_session(fd, s->unit, geteuid(), &peer);
        if (r > 0)
                return 1;
        if (r < 0)
                (void) snprintf(
                        peer.reason,
                        sizeof(peer.reason),
                        "its credentials could not be read: %s",
                        strerror(-r));
        if (ratelimit_below(&s->peer_audit_limit, event_now_usec(s->manager->event, CLOCK_MONOTONIC)))
                audit_log(
                        AUDIT_EVENT_DENIED,
                        s->id,
                        s->parent_id,
                        s->unit,
                        peer.uid,
                        "session %s: a connection to its %s from pid %d (uid %u) was refused: %s",
                        s->id,
                        socket_name,
                        (int) peer.pid,
                        (unsigned) peer.uid,
                        peer.reason);
        return 0;
}

static int hook_admit(void *userdata, int fd) {
        return session_admit_peer(userdata, fd, "session.sock");
}

static void hook_call(void *userdata, const char *method, json_t *params, ChannelCall *call) {
        if (startswith(method, "human."))
                questions_call(userdata, method, params, call);
        else
                session_children_call(userdata, method, params, call);
}

const ChannelHooks session_channel_hooks = {
        .admit = hook_admit,
        .hello = hook_hello,
        .heartbeat = hook_heartbeat,
        .events = hook_events,
        .events_raw = hook_events_raw,
        .log = hook_log,
        .prompt_delivered = hook_prompt_delivered,
        .call = hook_call,
        .init_gone = hook_init_gone,
};

/* Called by the manager's periodic check. */
void session_check_heartbeat(Session *s, uint64_t now_monotonic) {
        uint64_t timeout = s->manager->config.heartbeat_timeout_sec;
        _cleanup_free_ char *reason = NULL;

        if (timeout == 0 || !s->init_connected || session_state_is_final(s->state) || s->stop_requested)
                return;
        if (now_monotonic - s->last_heartbeat_usec < timeout * USEC_PER_SEC)
                return;
        if (asprintf(&reason, "no heartbeat from ccdocker-init for %" PRIu64 " s", timeout) < 0)
                reason = NULL;
        log_warning("session %s: %s; stopping it", s->id, reason ? reason : "no heartbeat");
        session_fail_and_stop(s, reason ? reason : "no heartbeat from ccdocker-init");
}

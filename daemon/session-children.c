/* A session's children, as ccdocker-mcp asks for them on the session's channel (docs/channel.md,
 * "ccdocker-mcp's methods"): spawn under the limits of SPEC.md 9.2 and 9.6, follow-up prompts, output
 * (with a bounded long poll), results (with a wait), the list, stop, and the context a parent gave. A
 * session sees only its own children: any other id gets the same answer as one that does not exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "channel.h"
#include "cleanup.h"
#include "events.h"
#include "jsonrpc.h"
#include "log.h"
#include "manager.h"
#include "ratelimit.h"
#include "session.h"
#include "test-clock.h"
#include "time-util.h"
#include "util.h"
#include "validate.h"

#define CONTEXT_MAX_BYTES (64U * 1024)
#define TASK_TYPE_MAX 64
#define SPAWN_TIMEOUT_MAX 86400U
#define RATE_WINDOW_USEC (60ULL * 1000000ULL)
#define OUTPUT_MAX_EVENTS 500U
#define OUTPUT_MAX_BYTES (1024U * 1024)
#define OUTPUT_MAX_WAIT_SEC 300
#define RESULT_MAX_WAIT_SEC 3600
#define RESULT_DEFAULT_WAIT_SEC 300
#define STOP_WAIT_SEC 30

static uint64_t now_realtime(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* "2026-11-25T14:03:07.374314Z" */
static json_t *json_time(uint64_t usec) {
        char buf[64];
        struct tm tm;
        time_t t = (time_t) (usec / 1000000ULL);

        if (!gmtime_r(&t, &tm))
                return json_null();
        (void) snprintf(
                buf,
                sizeof(buf),
                "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRIu64 "Z",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec,
                (uint64_t) (usec % 1000000ULL));
        return json_string(buf);
}

/* ISO 8601 in UTC ("Z" or "+00:00", or no zone), with optional fractional seconds, to µs. */
static int parse_time(const char *s, uint64_t *ret) {
        struct tm tm = {};
        const char *p;
        uint64_t frac = 0, scale = 1000000ULL;
        time_t t;

        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++)
                        if (scale > 1) {
                                scale /= 10;
                                frac += (uint64_t) (*p - '0') * scale;
                        }
        }
        if (!streq(p, "Z") && !streq(p, "+00:00") && !streq(p, ""))
                return -EINVAL;
        t = timegm(&tm);
        if (t < 0)
                return -ERANGE;
        *ret = (uint64_t) t * 1000000ULL + frac;
        return 0;
}

/* ---- params ---- */

/* Answers -32602 and returns -EINVAL for a param not in allowed (NULL-ended). */
static int check_params(ChannelCall **call, const char *method, json_t *params, const char *const *allowed) {
        const char *key;
        json_t *v;

        json_object_foreach (params, key, v) {
                bool ok = false;
                char list[256] = "";

                for (const char *const *a = allowed; *a; a++)
                        ok = ok || streq(*a, key);
                if (ok)
                        continue;
                for (const char *const *a = allowed; *a; a++) {
                        size_t l = strlen(list);
                        (void) snprintf(list + l, sizeof(list) - l, "%s%s", l ? ", " : "", *a);
                }
                channel_call_error(
                        TAKE_PTR(*call),
                        JSONRPC_INVALID_PARAMS,
                        "%s: unknown param '%.64s' (known: %s)",
                        method,
                        key,
                        *list ? list : "none");
                return -EINVAL;
        }
        return 0;
}

static int param_bool(ChannelCall **call, const char *method, json_t *params, const char *name, bool *v) {
        json_t *j = json_object_get(params, name);

        if (!j)
                return 0;
        if (!json_is_boolean(j)) {
                channel_call_error(
                        TAKE_PTR(*call), JSONRPC_INVALID_PARAMS, "%s: %s must be a boolean", method, name);
                return -EINVAL;
        }
        *v = json_is_true(j);
        return 0;
}

static int param_uint(
        ChannelCall **call,
        const char *method,
        json_t *params,
        const char *name,
        uint64_t min,
        uint64_t max,
        uint64_t *v) {
        json_t *j = json_object_get(params, name);

        if (!j)
                return 0;
        if (!json_is_integer(j) || json_integer_value(j) < 0 || (uint64_t) json_integer_value(j) < min ||
            (uint64_t) json_integer_value(j) > max) {
                channel_call_error(
                        TAKE_PTR(*call),
                        JSONRPC_INVALID_PARAMS,
                        "%s: %s must be an integer from %" PRIu64 " to %" PRIu64,
                        method,
                        name,
                        min,
                        max);
                return -EINVAL;
        }
        *v = (uint64_t) json_integer_value(j);
        return 0;
}

static int param_string(
        ChannelCall **call,
        const char *method,
        json_t *params,
        const char *name,
        bool required,
        const char **v) {
        json_t *j = json_object_get(params, name);

        if (!j && !required)
                return 0;
        if (!json_is_string(j)) {
                channel_call_error(
                        TAKE_PTR(*call),
                        JSONRPC_INVALID_PARAMS,
                        "%s: %s %s",
                        method,
                        name,
                        j ? "must be a string" : "is missing");
                return -EINVAL;
        }
        *v = json_string_value(j);
        return 0;
}

/* The child named by params.child_session_id, if it is one of s's own. */
static Session *find_child(Session *s, ChannelCall **call, const char *method, json_t *params) {
        const char *id = NULL;
        Session *c;

        if (param_string(call, method, params, "child_session_id", true, &id) < 0)
                return NULL;
        c = manager_get_session(s->manager, id);
        if (!c || c->removed || !session_is_child_of(c, s)) {
                channel_call_error(
                        TAKE_PTR(*call),
                        CHANNEL_ERROR_NO_CHILD,
                        "no child session '%.64s' of this session",
                        id);
                return NULL;
        }
        return c;
}

/* ---- spawn ---- */

static unsigned count_children(Session *s, bool live_only, uint64_t created_after) {
        _cleanup_free_ Session **children = NULL;
        size_t n_children;
        unsigned n = 0;

        if (manager_list_sessions(s->manager, s, &children, &n_children) < 0)
                return UINT_MAX; /* out of memory: every limit refuses */
        for (size_t i = 0; i < n_children; i++) {
                Session *c = children[i];

                if (live_only && session_state_is_final(c->state))
                        continue;
                if (c->created_usec < created_after)
                        continue;
                n++;
        }
        return n;
}

static int spawn_error(SpawnError *e, int r, int code, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

static int spawn_error(SpawnError *e, int r, int code, const char *format, ...) {
        va_list ap;

        e->code = code;
        va_start(ap, format);
        (void) vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return r;
}

static int spawn_refused(Session *parent, uid_t caller, SpawnError *e, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

static int spawn_refused(Session *parent, uid_t caller, SpawnError *e, const char *format, ...) {
        va_list ap;

        e->code = CHANNEL_ERROR_REFUSED;
        va_start(ap, format);
        (void) vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        /* A container may try as often as it likes: its refusals are audited at most
         * SESSION_REFUSAL_AUDIT_BURST a minute, the rest counted into the next record. */
        if (!ratelimit_below(
                    &parent->refusal_audit_limit, event_now_usec(parent->manager->event, CLOCK_MONOTONIC))) {
                parent->refusals_unaudited++;
                return -EPERM;
        }
        audit_log(
                AUDIT_EVENT_CHILD_REFUSED,
                parent->id,
                parent->parent_id,
                parent->unit,
                caller,
                "session %s: spawn of a child refused: %s%s",
                parent->id,
                e->message,
                parent->refusals_unaudited > 0 ? " (and earlier refusals not recorded, over the rate limit)"
                                               : "");
        parent->refusals_unaudited = 0;
        return -EPERM;
}

int session_spawn_child(Session *parent, json_t *params, uid_t caller, Session **ret, SpawnError *e) {
        static const char *const allowed[] = { "prompt",          "context", "task_type", "stream_output",
                                               "timeout_seconds", "secrets", NULL };
        const DaemonConfig *dc = &parent->manager->config;
        _cleanup_(session_config_freep) SessionConfig *config = NULL;
        CoreError error;
        json_t *prompt, *context, *task_type, *stream, *timeout, *secrets;
        size_t i;
        uint64_t timeout_sec = dc->child_timeout_sec, now;
        unsigned n;
        const char *key;
        json_t *v;
        int r;

        *e = (SpawnError){};
        json_object_foreach (params, key, v) {
                bool ok = false;

                for (const char *const *a = allowed; *a; a++)
                        ok = ok || streq(*a, key);
                if (!ok)
                        return spawn_error(
                                e,
                                -EINVAL,
                                JSONRPC_INVALID_PARAMS,
                                "spawn_child: unknown param '%.64s' (known: prompt, context, task_type, "
                                "stream_output, timeout_seconds, secrets)",
                                key);
        }

        prompt = json_object_get(params, "prompt");
        if (!json_is_string(prompt))
                return spawn_error(
                        e,
                        -EINVAL,
                        JSONRPC_INVALID_PARAMS,
                        "spawn_child: prompt %s",
                        prompt ? "must be a string" : "is missing: give the child its task");
        r = validate_prompt(dc, "spawn_child: prompt", json_string_value(prompt), &error);
        if (r < 0)
                return spawn_error(e, -EINVAL, JSONRPC_INVALID_PARAMS, "%s", error.message);

        context = json_object_get(params, "context");
        if (context && !json_is_object(context) && !json_is_null(context))
                return spawn_error(
                        e, -EINVAL, JSONRPC_INVALID_PARAMS, "spawn_child: context must be a JSON object");

        task_type = json_object_get(params, "task_type");
        if (task_type) {
                const char *t = json_string_value(task_type);
                bool ok = t && *t && strlen(t) <= TASK_TYPE_MAX;

                for (const char *p = t; ok && *p; p++)
                        ok = *p >= 0x20 && *p < 0x7f;
                if (!ok)
                        return spawn_error(
                                e,
                                -EINVAL,
                                JSONRPC_INVALID_PARAMS,
                                "spawn_child: task_type must be a string of 1 to %d printable ASCII characters",
                                TASK_TYPE_MAX);
        }

        stream = json_object_get(params, "stream_output");
        if (stream && !json_is_boolean(stream))
                return spawn_error(
                        e, -EINVAL, JSONRPC_INVALID_PARAMS, "spawn_child: stream_output must be a boolean");

        timeout = json_object_get(params, "timeout_seconds");
        if (timeout) {
                if (!json_is_integer(timeout) || json_integer_value(timeout) < 1 ||
                    json_integer_value(timeout) > SPAWN_TIMEOUT_MAX)
                        return spawn_error(
                                e,
                                -EINVAL,
                                JSONRPC_INVALID_PARAMS,
                                "spawn_child: timeout_seconds must be an integer from 1 to %u",
                                SPAWN_TIMEOUT_MAX);
                timeout_sec = (uint64_t) json_integer_value(timeout);
        }

        /* The limits, each a refusal with an audit record. */
        if (session_state_is_final(parent->state) || parent->stop_requested)
                return spawn_error(
                        e,
                        -ESTALE,
                        CHANNEL_ERROR_FAILED,
                        "spawn_child: this session is %s and spawns no children",
                        session_state_is_final(parent->state) ? session_state_to_string(parent->state)
                                                              : "stopping");
        if (parent->depth + 1 > dc->max_child_depth)
                return spawn_refused(
                        parent,
                        caller,
                        e,
                        "spawn_child: maximum child depth %u reached (this session is at depth %u); do the work "
                        "here instead",
                        dc->max_child_depth,
                        parent->depth);
        n = count_children(parent, true, 0);
        if (n >= dc->max_running_children)
                return spawn_refused(
                        parent,
                        caller,
                        e,
                        "spawn_child: %u children are already running, the most a session may have is %u "
                        "(MaxRunningChildren); wait for one with get_child_result or stop one with stop_child",
                        n,
                        dc->max_running_children);
        /* The window's clock is CLOCK_REALTIME, which tests move forward (test-clock.h). */
        now = test_clock_realtime_usec();
        n = count_children(parent, false, now > RATE_WINDOW_USEC ? now - RATE_WINDOW_USEC : 0);
        if (n >= dc->max_spawns_per_minute)
                return spawn_refused(
                        parent,
                        caller,
                        e,
                        "spawn_child: spawn rate limit: %u children spawned in the last minute, at most %u "
                        "children per minute (MaxSpawnsPerMinute); try again in a minute",
                        n,
                        dc->max_spawns_per_minute);
        if (timeout_sec > dc->child_timeout_sec)
                return spawn_refused(
                        parent,
                        caller,
                        e,
                        "spawn_child: timeout_seconds %" PRIu64 " is over the child timeout of %" PRIu64
                        " s (ChildTimeoutSec)",
                        timeout_sec,
                        dc->child_timeout_sec);
        if (!parent->config)
                return spawn_error(
                        e,
                        -ENODATA,
                        CHANNEL_ERROR_FAILED,
                        "spawn_child: this session's configuration is unknown");

        /* SPEC.md 9.6: a child gets only secrets its parent holds, and only those it asks for. */
        secrets = json_object_get(params, "secrets");
        if (secrets && !json_is_array(secrets))
                return spawn_error(
                        e,
                        -EINVAL,
                        JSONRPC_INVALID_PARAMS,
                        "spawn_child: secrets must be an array of secret names");
        json_array_foreach (secrets, i, v) {
                const char *name = json_string_value(v);
                bool held = false;

                if (!name || !secret_name_is_valid(name))
                        return spawn_error(
                                e,
                                -EINVAL,
                                JSONRPC_INVALID_PARAMS,
                                "spawn_child: secrets[%zu] must be a secret name",
                                i);
                for (char **h = parent->config ? parent->config->secrets : NULL; h && *h; h++)
                        held = held || streq(*h, name);
                if (!held)
                        return spawn_refused(
                                parent,
                                caller,
                                e,
                                "spawn_child: cannot give secret '%s' to a child: this session does not hold it",
                                name);
        }

        /* What the child inherits: never more than the parent has. */
        r = session_config_inherit(parent->config, &config);
        if (r < 0)
                return spawn_error(e, r, CHANNEL_ERROR_FAILED, "spawn_child: %s", strerror(-r));
        if (parent->config->timeout_sec > 0 && timeout_sec > parent->config->timeout_sec)
                timeout_sec = parent->config->timeout_sec;
        config->timeout_sec = timeout_sec;
        config->prompt = strdup(json_string_value(prompt));
        if (!config->prompt)
                return spawn_error(e, -ENOMEM, CHANNEL_ERROR_FAILED, "spawn_child: out of memory");
        if (task_type) {
                config->task_type = strdup(json_string_value(task_type));
                if (!config->task_type)
                        return spawn_error(e, -ENOMEM, CHANNEL_ERROR_FAILED, "spawn_child: out of memory");
        }
        if (json_array_size(secrets) > 0) {
                config->secrets = calloc(json_array_size(secrets) + 1, sizeof(char *));
                if (!config->secrets)
                        return spawn_error(e, -ENOMEM, CHANNEL_ERROR_FAILED, "spawn_child: out of memory");
                json_array_foreach (secrets, i, v) {
                        bool dup = false;

                        for (size_t k = 0; k < i; k++)
                                dup = dup || streq(config->secrets[k] ?: "", json_string_value(v));
                        if (dup)
                                return spawn_error(
                                        e,
                                        -EINVAL,
                                        JSONRPC_INVALID_PARAMS,
                                        "spawn_child: secrets[%zu] is given twice",
                                        i);
                        config->secrets[i] = strdup(json_string_value(v));
                        if (!config->secrets[i])
                                return spawn_error(
                                        e, -ENOMEM, CHANNEL_ERROR_FAILED, "spawn_child: out of memory");
                }
        }
        if (json_is_object(context)) {
                config->context = json_dumps(context, JSON_COMPACT);
                if (!config->context)
                        return spawn_error(e, -ENOMEM, CHANNEL_ERROR_FAILED, "spawn_child: out of memory");
                if (strlen(config->context) > CONTEXT_MAX_BYTES)
                        return spawn_error(
                                e,
                                -EINVAL,
                                JSONRPC_INVALID_PARAMS,
                                "spawn_child: context is %zu bytes as JSON, more than %u",
                                strlen(config->context),
                                CONTEXT_MAX_BYTES);
        }

        r = manager_create_session(parent->manager, &config, parent->owner_uid, parent, ret, &error);
        if (r == -EUSERS)
                return spawn_refused(parent, caller, e, "spawn_child: %s", error.message);
        if (r < 0)
                return spawn_error(e, r, CHANNEL_ERROR_FAILED, "spawn_child: %s", error.message);
        return 0;
}

/* session:{parent}:child:{child} (SPEC.md 2.5): what a parent tells its child. */
static void notify_child(Session *parent, Session *child, const char *type, const char *message_id) {
        _cleanup_(json_decrefp) json_t *msg = NULL;
        _cleanup_free_ char *suffix = NULL;

        msg = json_pack(
                "{s:s, s:s, s:s}", "type", type, "session_id", parent->id, "child_session_id", child->id);
        if (msg && message_id)
                (void) json_object_set_new(msg, "message_id", json_string(message_id));
        if (msg && asprintf(&suffix, "child:%s", child->id) >= 0)
                session_notify(parent, suffix, msg);
}

static void call_spawn(Session *s, json_t *params, ChannelCall *call) {
        _cleanup_(session_unrefp) Session *child = NULL;
        _cleanup_(json_decrefp) json_t *result = NULL;
        SpawnError e;
        int r;

        r = session_spawn_child(s, params, (uid_t) -1, &child, &e);
        if (r < 0) {
                channel_call_error(call, e.code, "%s", e.message);
                return;
        }
        result = json_pack(
                "{s:s, s:s}",
                "child_session_id",
                child->id,
                "status",
                session_state_to_string(child->state));
        channel_call_reply(call, result);
        notify_child(s, child, "spawned", NULL);
        (void) session_start(child);
}

/* ---- send ---- */

static void call_send(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = { "child_session_id", "prompt", NULL };
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *mid = NULL;
        const char *prompt = NULL;
        CoreError error;
        Session *c;
        bool at_once;
        int r;

        if (check_params(&call, "child.send", params, allowed) < 0)
                return;
        c = find_child(s, &call, "child.send", params);
        if (!c || param_string(&call, "child.send", params, "prompt", true, &prompt) < 0)
                return;

        at_once = c->state == SESSION_IDLE && c->n_prompts == 0 && c->init_connected;
        r = session_send_prompt(c, "send_to_child", prompt, &mid, &error);
        if (r < 0) {
                channel_call_error(
                        call,
                        error.kind == CORE_ERROR_INVALID_PROMPT ? JSONRPC_INVALID_PARAMS
                                                                : CHANNEL_ERROR_FAILED,
                        "%s%s",
                        error.message,
                        error.kind == CORE_ERROR_BAD_STATE ? ": spawn a new child instead" : "");
                return;
        }
        result = json_pack("{s:s, s:s}", "message_id", mid, "status", at_once ? "processing" : "queued");
        channel_call_reply(call, result);
        notify_child(s, c, "prompt", mid);
}

/* ---- output ---- */

static bool session_turn_complete(Session *c) {
        return session_state_is_final(c->state) || !session_result_pending(c);
}

static void render_event(json_t *data, FILE *f) {
        const char *type = json_string_value(json_object_get(data, "type"));
        size_t i;
        json_t *block;

        if (streq_ptr(type, "assistant")) {
                json_array_foreach (json_object_get(json_object_get(data, "message"), "content"), i, block) {
                        const char *bt = json_string_value(json_object_get(block, "type"));

                        if (streq_ptr(bt, "text"))
                                fprintf(f,
                                        "%s\n",
                                        strempty(json_string_value(json_object_get(block, "text"))));
                        else if (streq_ptr(bt, "tool_use"))
                                fprintf(f,
                                        "[tool %s]\n",
                                        strempty(json_string_value(json_object_get(block, "name"))));
                }
        } else if (streq_ptr(type, "result")) {
                bool failed = json_is_true(json_object_get(data, "is_error")) ||
                        !streq_ptr(json_string_value(json_object_get(data, "subtype")), "success");

                if (failed)
                        fprintf(f,
                                "[turn failed: %s]\n",
                                json_string_value(json_object_get(data, "result"))
                                        ?: strempty(json_string_value(json_object_get(data, "subtype"))));
                else
                        fprintf(f, "[turn complete]\n");
        }
}

typedef struct OutputQuery {
        ChannelCall *call;
        uint64_t since_seq;
        uint64_t since_usec; /* 0: no time filter */
        bool waited;
} OutputQuery;

/* Answers the query, or returns 0 without answering when there is nothing yet and it may wait. */
static int output_answer(Session *c, OutputQuery *q, bool may_wait) {
        _cleanup_(json_decrefp) json_t *picked = json_array(), *result = NULL;
        _cleanup_free_ char *text = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        uint64_t cursor = q->since_seq, last_time = 0;
        size_t text_len = 0, bytes = 0;
        bool more = false, done = false;
        int r;

        if (!picked)
                return -ENOMEM;
        f = open_memstream(&text, &text_len);
        if (!f)
                return -ENOMEM;
        /* Pass over what is older than since_timestamp in SQL, not row by row here. */
        if (q->since_usec) {
                r = store_skip_events_until(c->manager->store, c->id, cursor, q->since_usec, &cursor);
                if (r < 0)
                        return r;
        }

        while (!done) {
                _cleanup_(json_decrefp) json_t *batch = NULL;
                size_t i;
                json_t *e;

                r = event_bus_get(c->manager->events, c->id, cursor, OUTPUT_MAX_EVENTS, &batch);
                if (r < 0)
                        return r;
                if (json_array_size(batch) == 0)
                        break;
                json_array_foreach (batch, i, e) {
                        uint64_t seq = (uint64_t) json_integer_value(json_object_get(e, "seq"));
                        uint64_t time = (uint64_t) json_integer_value(json_object_get(e, "time"));
                        _cleanup_free_ char *dump = NULL;

                        if (q->since_usec && time <= q->since_usec) {
                                cursor = seq;
                                continue;
                        }
                        dump = json_dumps(json_object_get(e, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
                        if (json_array_size(picked) >= OUTPUT_MAX_EVENTS ||
                            (json_array_size(picked) > 0 &&
                             bytes + (dump ? strlen(dump) : 0) > OUTPUT_MAX_BYTES)) {
                                more = true;
                                done = true;
                                break;
                        }
                        bytes += dump ? strlen(dump) : 0;
                        if (json_array_append(picked, e) < 0)
                                return -ENOMEM;
                        render_event(json_object_get(e, "data"), f);
                        cursor = seq;
                        last_time = time;
                }
                if (json_array_size(batch) < OUTPUT_MAX_EVENTS)
                        break;
        }

        if (json_array_size(picked) == 0 && may_wait && !session_turn_complete(c))
                return 0;

        if (fflush(f) != 0)
                return -ENOMEM;
        result = json_pack(
                "{s:O, s:s#, s:I, s:b, s:b, s:s, s:o}",
                "events",
                picked,
                "output",
                text ?: "",
                text_len,
                "last_seq",
                (json_int_t) cursor,
                "more",
                more,
                "is_complete",
                session_turn_complete(c) && !more,
                "status",
                session_state_to_string(c->state),
                "timestamp",
                json_time(last_time ?: now_realtime()));
        if (!result)
                return -ENOMEM;
        channel_call_reply(TAKE_PTR(q->call), result);
        return 1;
}

static void output_query_free(OutputQuery *q) {
        channel_call_free(q->call);
        free(q);
}

static void on_output_wait(Session *c, void *userdata) {
        OutputQuery *q = userdata;
        int r;

        r = output_answer(c, q, false);
        if (r < 0)
                channel_call_error(
                        TAKE_PTR(q->call),
                        CHANNEL_ERROR_FAILED,
                        "could not read the output: %s",
                        strerror(-r));
        output_query_free(q);
}

static void call_output(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = {
                "child_session_id", "since_seq", "since_timestamp", "wait_seconds", NULL
        };
        const char *since_ts = NULL;
        uint64_t wait = 0;
        OutputQuery *q;
        Session *c;
        int r;

        if (check_params(&call, "child.output", params, allowed) < 0)
                return;
        c = find_child(s, &call, "child.output", params);
        if (!c)
                return;
        q = calloc(1, sizeof(*q));
        if (!q) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        q->call = call;
        if (param_uint(&q->call, "child.output", params, "since_seq", 0, INT64_MAX, &q->since_seq) < 0 ||
            param_uint(&q->call, "child.output", params, "wait_seconds", 0, OUTPUT_MAX_WAIT_SEC, &wait) <
                    0 ||
            param_string(&q->call, "child.output", params, "since_timestamp", false, &since_ts) < 0) {
                output_query_free(q);
                return;
        }
        if (since_ts && parse_time(since_ts, &q->since_usec) < 0) {
                channel_call_error(
                        TAKE_PTR(q->call),
                        JSONRPC_INVALID_PARAMS,
                        "child.output: since_timestamp '%.64s' is not an ISO 8601 UTC time like 2026-11-25T14:03:07Z",
                        since_ts);
                {
                        output_query_free(q);
                        return;
                }
        }

        r = output_answer(c, q, wait > 0);
        if (r == 0)
                r = session_wait(c, true, (uint32_t) wait, on_output_wait, q);
        if (r == -EUSERS)
                channel_call_error(
                        TAKE_PTR(q->call),
                        CHANNEL_ERROR_REFUSED,
                        "child %s already has %u calls waiting on it, the configured MaxWaitersPerSession",
                        c->id,
                        c->n_waiters);
        else if (r < 0)
                channel_call_error(
                        TAKE_PTR(q->call),
                        CHANNEL_ERROR_FAILED,
                        "could not read the output: %s",
                        strerror(-r));
        if (r != 0)
                output_query_free(q);
}

/* ---- result ---- */

static void reply_result(Session *c, ChannelCall *call) {
        _cleanup_free_ char *result = NULL, *error = NULL, *usage = NULL;
        _cleanup_(json_decrefp) json_t *answer = NULL;
        const char *status;
        int r;

        r = session_result(c, &status, &result, &error, &usage);
        if (r < 0) {
                channel_call_error(
                        call, CHANNEL_ERROR_FAILED, "could not read the result: %s", strerror(-r));
                return;
        }
        answer = json_pack(
                "{s:s, s:o, s:o, s:o, s:s}",
                "status",
                status,
                "result",
                streq(status, "completed") ? json_string(result) : json_null(),
                "error",
                *error ? json_string(error) : json_null(),
                "usage",
                json_loads(usage, 0, NULL) ?: json_object(),
                "session_status",
                session_state_to_string(c->state));
        if (!answer) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        channel_call_reply(call, answer);
}

static void on_result_wait(Session *c, void *userdata) {
        reply_result(c, userdata);
}

static void call_result(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = { "child_session_id", "wait", "timeout_seconds", NULL };
        uint64_t timeout = RESULT_DEFAULT_WAIT_SEC;
        bool wait = false;
        Session *c;
        int r;

        if (check_params(&call, "child.result", params, allowed) < 0)
                return;
        c = find_child(s, &call, "child.result", params);
        if (!c || param_bool(&call, "child.result", params, "wait", &wait) < 0 ||
            param_uint(&call, "child.result", params, "timeout_seconds", 1, RESULT_MAX_WAIT_SEC, &timeout) <
                    0)
                return;
        if (!wait || !session_result_pending(c)) {
                reply_result(c, call);
                return;
        }
        r = session_wait(c, false, (uint32_t) timeout, on_result_wait, call);
        if (r == -EUSERS)
                channel_call_error(
                        call,
                        CHANNEL_ERROR_REFUSED,
                        "child %s already has %u calls waiting on it, the configured MaxWaitersPerSession",
                        c->id,
                        c->n_waiters);
        else if (r < 0)
                channel_call_error(
                        call, CHANNEL_ERROR_FAILED, "could not wait for the result: %s", strerror(-r));
}

/* ---- list ---- */

static void call_list(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = { "status_filter", "include_completed", NULL };
        _cleanup_(json_decrefp) json_t *children = json_array(), *result = NULL;
        _cleanup_free_ Session **all = NULL;
        size_t n_all;
        bool include_completed = true;
        json_t *filter, *f;
        size_t i;

        if (!children) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        if (check_params(&call, "child.list", params, allowed) < 0 ||
            param_bool(&call, "child.list", params, "include_completed", &include_completed) < 0)
                return;
        filter = json_object_get(params, "status_filter");
        if (filter && !json_is_array(filter)) {
                channel_call_error(
                        call,
                        JSONRPC_INVALID_PARAMS,
                        "child.list: status_filter must be an array of statuses");
                return;
        }
        json_array_foreach (filter, i, f)
                if (!json_is_string(f) || session_state_from_string(json_string_value(f)) < 0) {
                        channel_call_error(
                                call,
                                JSONRPC_INVALID_PARAMS,
                                "child.list: status_filter[%zu] must be one of starting, idle, running, stopped, failed",
                                i);
                        return;
                }

        if (manager_list_sessions(s->manager, s, &all, &n_all) < 0) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        for (size_t k = 0; k < n_all; k++) {
                Session *c = all[k];
                const char *state = session_state_to_string(c->state);
                bool match = !filter || json_array_size(filter) == 0;
                json_t *o;

                if (!include_completed && session_state_is_final(c->state))
                        continue;
                json_array_foreach (filter, i, f)
                        match = match || streq(json_string_value(f), state);
                if (!match)
                        continue;
                o = json_pack(
                        "{s:s, s:s, s:o, s:i}",
                        "session_id",
                        c->id,
                        "status",
                        state,
                        "created_at",
                        json_time(c->created_usec),
                        "depth",
                        (int) c->depth);
                if (o && c->task_type)
                        json_object_set_new(o, "task_type", json_string(c->task_type));
                if (!o || json_array_append_new(children, o) < 0) {
                        channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                        return;
                }
        }
        result = json_pack("{s:O}", "children", children);
        channel_call_reply(call, result);
}

/* ---- stop ---- */

typedef struct StopCall {
        ChannelCall *call;
        Session *child;
        bool waited;
} StopCall;

static void stop_call_free(StopCall *sc) {
        channel_call_free(sc->call);
        session_unref(sc->child);
        free(sc);
}

static void stop_reply(StopCall *sc) {
        _cleanup_(json_decrefp) json_t *result = NULL;

        result = json_pack(
                "{s:b, s:s}", "success", 1, "final_status", session_state_to_string(sc->child->state));
        channel_call_reply(TAKE_PTR(sc->call), result);
        stop_call_free(sc);
}

static void on_stop_settled(Session *c, void *userdata) {
        StopCall *sc = userdata;

        /* The unit is down; the state follows once podman told how the container ended. */
        if (!session_state_is_final(c->state) && !sc->waited) {
                sc->waited = true;
                if (session_wait(c, false, STOP_WAIT_SEC, on_stop_settled, sc) >= 0)
                        return;
        }
        stop_reply(sc);
}

static void on_child_stopped(int r, const char *error, void *userdata) {
        StopCall *sc = userdata;

        if (r < 0) {
                channel_call_error(
                        TAKE_PTR(sc->call),
                        CHANNEL_ERROR_FAILED,
                        "could not stop child %s: %s",
                        sc->child->id,
                        error ?: strerror(-r));
                stop_call_free(sc);
                return;
        }
        on_stop_settled(sc->child, sc);
}

static void call_stop(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = { "child_session_id", "force", NULL };
        _cleanup_free_ char *reason = NULL;
        bool force = false;
        StopCall *sc;
        Session *c;
        int r;

        if (check_params(&call, "child.stop", params, allowed) < 0)
                return;
        c = find_child(s, &call, "child.stop", params);
        if (!c || param_bool(&call, "child.stop", params, "force", &force) < 0)
                return;

        sc = calloc(1, sizeof(*sc));
        if (!sc) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        *sc = (StopCall){ .call = call, .child = session_ref(c) };
        if (session_state_is_final(c->state)) {
                stop_reply(sc);
                return;
        }

        if (!c->stop_requested && asprintf(&reason, "stopped by its parent %s", s->id) >= 0) {
                free(c->stop_reason);
                c->stop_reason = TAKE_PTR(reason);
        }
        notify_child(s, c, "stop", NULL);
        r = session_stop(c, force, (uid_t) -1, on_child_stopped, sc);
        if (r < 0) {
                channel_call_error(
                        TAKE_PTR(sc->call),
                        CHANNEL_ERROR_FAILED,
                        "could not stop child %s: %s",
                        c->id,
                        strerror(-r));
                stop_call_free(sc);
        }
}

/* ---- the parent's context ---- */

static void call_parent_context(Session *s, json_t *params, ChannelCall *call) {
        static const char *const allowed[] = { NULL };
        _cleanup_(json_decrefp) json_t *result = NULL;
        json_t *context = NULL;

        if (check_params(&call, "parent.context", params, allowed) < 0)
                return;
        if (s->config && s->config->context)
                context = json_loads(s->config->context, 0, NULL);
        result = json_pack(
                "{s:s, s:o, s:i, s:o, s:o}",
                "session_id",
                s->id,
                "parent_session_id",
                s->parent_id ? json_string(s->parent_id) : json_null(),
                "depth",
                (int) s->depth,
                "task_type",
                s->task_type ? json_string(s->task_type) : json_null(),
                "context",
                context ?: json_null());
        if (!result) {
                channel_call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                return;
        }
        channel_call_reply(call, result);
}

void session_children_call(Session *s, const char *method, json_t *params, ChannelCall *call) {
        static const struct {
                const char *name;
                void (*handler)(Session *s, json_t *params, ChannelCall *call);
        } calls[] = {
                { "child.spawn", call_spawn },
                { "child.send", call_send },
                { "child.output", call_output },
                { "child.result", call_result },
                { "child.list", call_list },
                { "child.stop", call_stop },
                { "parent.context", call_parent_context },
        };

        for (size_t i = 0; i < ELEMENTSOF(calls); i++)
                if (streq(calls[i].name, method)) {
                        calls[i].handler(s, params, call);
                        return;
                }
        channel_call_error(call, JSONRPC_METHOD_NOT_FOUND, "Unknown method \"%.64s\"", method);
}

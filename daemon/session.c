/* The session object and its state machine. Creation is a chain of asynchronous steps, each resumed
 * from the event loop: workspace, secrets, container (libpod REST), unit (StartTransientUnit), then the
 * unit's state changes drive the session's. Every asynchronous step holds a reference on the session.
 *
 * Longer than our ~1,200 lines on purpose: creation, the unit's end, cleanup, adoption, stopping and
 * removal are one state machine over the same fields and flags, and read best in one file. What is not
 * part of it lives elsewhere: the channel's side and the prompt queue (session-channel.c), the agent
 * tree (session-children.c), the rules for how a unit ended (session-end.c), the container spec
 * (podman.c), publishing (manager.c's flush). */
#define _GNU_SOURCE
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "async.h"
#include "audit.h"
#include "channel.h"
#include "cleanup.h"
#include "events.h"
#include "log.h"
#include "manager.h"
#include "oom.h"
#include "pool.h"
#include "session-end.h"
#include "session-remote.h"
#include "session-runtime.h"
#include "time-util.h"
#include "unit.h"
#include "util.h"
#include "workspace.h"

#define SESSION_UID 1000
#define SESSION_GID 1000

static int session_stop_unit(
        Session *s, bool force, void (*cb)(int r, const char *error, void *userdata), void *userdata);

static const char *const state_names[_SESSION_STATE_MAX] = {
        [SESSION_STARTING] = "starting", [SESSION_IDLE] = "idle",     [SESSION_RUNNING] = "running",
        [SESSION_STOPPED] = "stopped",   [SESSION_FAILED] = "failed",
};

const char *session_state_to_string(SessionState s) {
        if (s < 0 || s >= _SESSION_STATE_MAX)
                return NULL;
        return state_names[s];
}

SessionState session_state_from_string(const char *s) {
        if (!s)
                return _SESSION_STATE_INVALID;
        for (SessionState i = 0; i < _SESSION_STATE_MAX; i++)
                if (streq(state_names[i], s))
                        return i;
        return _SESSION_STATE_INVALID;
}

/* The podman secret that carries the session's secret name: "ccdocker-<id>-<NAME>". */
static char *session_secret_object(Session *s, const char *name) {
        char *o;

        return asprintf(&o, "ccdocker-%s-%s", s->id, name) < 0 ? NULL : o;
}

static int session_alloc(Manager *m, const char *id, Session **ret) {
        _cleanup_(session_unrefp) Session *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->manager = m;
        m->n_session_objects++;
        s->owner_uid = (uid_t) -1;
        s->stop_uid = (uid_t) -1;
        s->peer_audit_limit =
                (RateLimit){ .interval_usec = USEC_PER_MINUTE, .burst = SESSION_PEER_AUDIT_BURST };
        s->refusal_audit_limit =
                (RateLimit){ .interval_usec = USEC_PER_MINUTE, .burst = SESSION_REFUSAL_AUDIT_BURST };
        s->log_limit = (RateLimit){ .interval_usec = SESSION_LOG_INTERVAL_SEC * USEC_PER_SEC,
                                    .burst = SESSION_LOG_BURST };
        s->id = strdup(id);
        if (!s->id)
                return -ENOMEM;
        if (asprintf(&s->unit, "ccdocker-session-%s.service", id) < 0 ||
            asprintf(&s->container_name, "ccdocker-%s", id) < 0) {
                s->unit = s->container_name = NULL;
                return -ENOMEM;
        }
        r = sd_bus_path_encode("/org/ccdocker1/session", id, &s->object_path);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

int session_new(Manager *m, SessionConfig **config, uid_t owner, Session *parent, Session **ret) {
        _cleanup_(session_unrefp) Session *s = NULL;
        char id[13];
        int r;

        r = session_id_new(id);
        if (r < 0)
                return r;
        r = session_alloc(m, id, &s);
        if (r < 0)
                return r;

        s->config = TAKE_PTR(*config);
        s->state = SESSION_STARTING;
        s->owner_uid = owner;
        if (parent) {
                s->parent_id = strdup(parent->id);
                if (!s->parent_id)
                        return -ENOMEM;
                s->depth = parent->depth + 1;
        }
        /* The resource tree is the agent tree (DESIGN.md 12): systemd nests "a-b.slice" in "a.slice". */
        free(s->config->slice);
        if (parent && parent->slice && endswith(parent->slice, ".slice"))
                r = asprintf(
                        &s->config->slice,
                        "%.*s-%s.slice",
                        (int) (strlen(parent->slice) - strlen(".slice")),
                        parent->slice,
                        id);
        else
                r = asprintf(&s->config->slice, "ccdocker-%s.slice", id);
        if (r < 0) {
                s->config->slice = NULL;
                return -ENOMEM;
        }
        s->slice = strdup(s->config->slice);
        if (!s->slice)
                return -ENOMEM;
        /* The runtime is recorded with the session: a restarted daemon re-adopts it through this one. */
        free(s->config->runtime);
        s->config->runtime = strdup(runtime_kind_to_string(manager_runtime_kind(m)));
        if (!s->config->runtime)
                return -ENOMEM;
        s->created_usec = now_usec(CLOCK_REALTIME);
        s->image = strdup(s->config->image);
        if (!s->image)
                return -ENOMEM;
        if (s->config->task_type) {
                s->task_type = strdup(s->config->task_type);
                if (!s->task_type)
                        return -ENOMEM;
        }
        if (s->config->workspace_type == WORKSPACE_HOST) {
                s->workspace = strdup(s->config->workspace_path);
        } else {
                s->workspace_ephemeral = true;
                if (asprintf(&s->workspace, "%s/workspaces/%s", m->config.state_dir, id) < 0)
                        s->workspace = NULL;
        }
        if (!s->workspace)
                return -ENOMEM;

        *ret = TAKE_PTR(s);
        return 0;
}

static int strdup_or_null(const char *in, char **out) {
        if (!in) {
                *out = NULL;
                return 0;
        }
        *out = strdup(in);
        return *out ? 0 : -ENOMEM;
}

int session_new_from_record(Manager *m, const SessionRecord *rec, Session **ret) {
        _cleanup_(session_unrefp) Session *s = NULL;
        int r;

        if (!session_id_is_valid(rec->id))
                return log_error_errno(EINVAL, "store: session id '%s' is not valid, ignoring it", rec->id);
        r = session_alloc(m, rec->id, &s);
        if (r < 0)
                return r;

        s->state = session_state_from_string(rec->state);
        if (s->state < 0)
                return log_error_errno(
                        EINVAL, "store: session %s has unknown state '%s'", rec->id, rec->state);
        s->depth = rec->depth;
        s->owner_uid = rec->owner_uid;
        s->created_usec = rec->created_usec;
        s->workspace_ephemeral = rec->workspace_ephemeral;
        if (strdup_or_null(rec->parent_id, &s->parent_id) < 0 ||
            strdup_or_null(rec->state_reason, &s->state_reason) < 0 ||
            strdup_or_null(rec->container_id, &s->container_id) < 0 ||
            strdup_or_null(rec->task_type, &s->task_type) < 0 ||
            strdup_or_null(rec->workspace_path, &s->workspace) < 0)
                return -ENOMEM;
        if (rec->config_json) {
                r = session_config_from_json(rec->config_json, &s->config);
                if (r < 0)
                        return log_error_errno(r, "store: session %s has an unreadable config: %m", rec->id);
                if (strdup_or_null(s->config->image, &s->image) < 0 ||
                    strdup_or_null(s->config->slice, &s->slice) < 0)
                        return -ENOMEM;
        }
        r = store_usage_load(m->store, s->id, &s->usage);
        if (r < 0)
                log_warning_errno(r, "session %s: could not read its model usage: %m", s->id);
        /* A session that had ended was cleaned up before it was recorded as ended, its last save. */
        s->cleaned_up = session_state_is_final(s->state);
        if (s->cleaned_up)
                s->ended_usec = rec->updated_usec;

        *ret = TAKE_PTR(s);
        return 0;
}

static Session *session_free(Session *s) {
        s->manager->n_session_objects--;
        sd_bus_slot_unref(s->unit_watch);
        free(s->id);
        free(s->parent_id);
        free(s->state_reason);
        free(s->unit);
        free(s->slice);
        free(s->stop_reason);
        free(s->container_name);
        free(s->container_id);
        free(s->task_type);
        free(s->image);
        free(s->workspace);
        free(s->object_path);
        free(s->channel_dir);
        session_config_free(s->config);
        egress_session_free(s->egress);
        model_proxy_session_free(s->model);
        channel_free(s->channel);
        session_prompts_clear(s);
        json_decref(s->last_result);
        return mfree(s);
}

Session *session_ref(Session *s) {
        if (s)
                s->n_ref++;
        return s;
}

Session *session_unref(Session *s) {
        if (!s)
                return NULL;
        if (--s->n_ref > 0)
                return NULL;
        return session_free(s);
}

void session_to_record(Session *s, SessionRecord *r, char **ret_config_json) {
        *ret_config_json = s->config ? session_config_to_json(s->config) : NULL;
        *r = (SessionRecord){
                .id = s->id,
                .parent_id = s->parent_id,
                .depth = s->depth,
                .state = (char *) session_state_to_string(s->state),
                .state_reason = s->state_reason,
                .unit = s->unit,
                .container_name = s->container_name,
                .container_id = s->container_id,
                .task_type = s->task_type,
                .workspace_path = s->workspace,
                .workspace_ephemeral = s->workspace_ephemeral,
                .owner_uid = s->owner_uid,
                .created_usec = s->created_usec,
                .updated_usec = now_usec(CLOCK_REALTIME),
                .config_json = *ret_config_json,
        };
}

static void session_save(Session *s) {
        _cleanup_free_ char *json = NULL;
        SessionRecord rec;
        int r;

        if (s->removed || s->pooled)
                return;
        session_to_record(s, &rec, &json);
        r = store_save_session(s->manager->store, &rec);
        if (r < 0)
                log_error_errno(r, "session %s: could not store the session: %m", s->id);
}

int session_store_new(Session *s) {
        _cleanup_free_ char *json = NULL;
        SessionRecord rec;
        int r;

        session_to_record(s, &rec, &json);
        r = store_save_session(s->manager->store, &rec);
        if (r < 0)
                return log_error_errno(r, "session %s: could not store it: %m", s->id);
        r = store_record_state(
                s->manager->store, s->id, session_state_to_string(s->state), NULL, s->created_usec);
        if (r < 0)
                return log_error_errno(r, "session %s: could not store its first state: %m", s->id);
        return 0;
}

void session_set_state(Session *s, SessionState state, const char *reason) {
        const char *name = session_state_to_string(state);
        int r;

        if (s->state == state && streq_ptr(s->state_reason, reason))
                return;
        /* An ended session stays ended: a late unit event must not revive it. */
        if (session_state_is_final(s->state) && s->state != state)
                return;

        free(s->state_reason);
        s->state_reason = reason ? strdup(reason) : NULL;
        s->state = state;
        if (session_state_is_final(state))
                s->ended_usec = now_usec(CLOCK_REALTIME);
        if (s->pooled) {
                pool_member_changed(s); /* not a user's session yet: nothing stored, audited or sent */
                return;
        }

        r = store_record_state(s->manager->store, s->id, name, reason, now_usec(CLOCK_REALTIME));
        if (r < 0)
                log_error_errno(r, "session %s: could not store state %s: %m", s->id, name);
        session_save(s);

        audit_log(
                AUDIT_EVENT_STATE,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "session %s is %s%s%s",
                s->id,
                name,
                reason ? ": " : "",
                strempty(reason));
        session_mark_changed(
                s, SESSION_CHANGED_STATE | (session_state_is_final(state) ? SESSION_CHANGED_TURN : 0));
        {
                _cleanup_(json_decrefp) json_t *msg = json_pack(
                        "{s:s, s:s, s:s, s:o}",
                        "type",
                        "state",
                        "session_id",
                        s->id,
                        "state",
                        name,
                        "reason",
                        reason ? json_string(reason) : json_null());

                session_notify(s, "control", msg);
                if (s->parent_id)
                        session_notify(s, "parent", msg);
        }
}

void session_mark_changed(Session *s, unsigned changes) {
        if (s->pooled)
                return;
        s->changed |= changes;
        manager_queue_publish(s->manager, s);
}

void session_notify(Session *s, const char *suffix, json_t *msg) {
        _cleanup_free_ char *channel = NULL;

        if (!msg || s->pooled)
                return;
        if (asprintf(&channel, "session:%s:%s", s->id, suffix) < 0)
                return (void) log_oom();
        manager_queue_notice(s->manager, channel, msg);
}

/* ---- cleanup: container, unit, workspace ---- */

static void on_workspace_removed(int r, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (r < 0)
                log_warning_errno(
                        r, "session %s: could not remove all of workspace %s: %m", s->id, s->workspace);
}

/* A tree of any size: removed by a forked worker (async.c), not on the loop. */
static void remove_tree(Session *s) {
        int r;

        r = async_rm_rf(s->manager->event, s->workspace, on_workspace_removed, session_ref(s));
        if (r < 0) {
                session_unref(s);
                log_warning_errno(
                        r, "session %s: could not start removing workspace %s: %m", s->id, s->workspace);
        }
}

static int on_remove_retry(sd_event_source *source, uint64_t usec, void *userdata);

static void session_remove_secrets(Session *s);

static void on_container_removed(int r, long status, json_t *reply, const char *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (r >= 0) {
                session_remove_secrets(s);
                return;
        }
        log_warning_errno(
                r,
                "session %s: could not remove container %s: %s",
                s->id,
                s->container_name,
                strempty(error));
        /* A container that is still being killed (stopping, frozen) cannot go yet: try again a few times. */
        if (s->remove_attempts >= 5)
                session_remove_secrets(s);
        if (s->remove_attempts < 5 &&
            sd_event_add_time_relative(
                    s->manager->event,
                    NULL,
                    CLOCK_MONOTONIC,
                    2 * USEC_PER_SEC,
                    0,
                    on_remove_retry,
                    session_ref(s)) < 0)
                session_unref(s);
}

static int on_remove_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;
        int r;

        s->remove_attempts++;
        r = runtime_container_remove(session_runtime(s), s->container_name, on_container_removed, s);
        if (r < 0) {
                log_warning_errno(
                        r,
                        "session %s: could not ask %s to remove the container: %m",
                        s->id,
                        session_runtime_name(s));
                session_unref(s);
        }
        /* On success the reference passes to on_container_removed(). */
        return 0;
}

static void on_unit_reset(int r, const sd_bus_error *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        /* A unit that is already gone has nothing to reset. */
        if (r < 0 && !sd_bus_error_has_name(error, "org.freedesktop.systemd1.NoSuchUnit"))
                log_debug_errno(
                        r,
                        "session %s: reset-failed of %s: %s",
                        s->id,
                        s->unit,
                        error ? error->message : "");
}

static void on_slice_stopped(int r, const sd_bus_error *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (r < 0)
                log_warning(
                        "session %s: could not stop slice %s: %s",
                        s->id,
                        s->slice,
                        error && error->message ? error->message : strerror(-r));
}

/* Removes what the session left: the container (ExecStopPost normally did), the failed unit's record,
 * and an ephemeral workspace. Idempotent. */
static void session_cleanup(Session *s) {
        Manager *m = s->manager;
        int r;

        if (s->cleaned_up)
                return;
        s->cleaned_up = true;
        s->unit_watch = sd_bus_slot_unref(s->unit_watch);

        r = runtime_container_remove(
                session_runtime(s), s->container_name, on_container_removed, session_ref(s));
        if (r < 0) {
                session_unref(s);
                log_warning_errno(
                        r,
                        "session %s: could not ask %s to remove the container: %m",
                        s->id,
                        session_runtime_name(s));
        }
        r = unit_reset_failed(m->systemd_bus, s->unit, on_unit_reset, session_ref(s));
        if (r < 0)
                session_unref(s);
        /* A session's end is its subtree's: the children are told why, then systemd stops the slice
         * with whatever still runs in it. */
        session_stop_descendants(s, NULL);
        if (s->slice) {
                r = unit_stop(m->systemd_bus, s->slice, on_slice_stopped, session_ref(s));
                if (r < 0) {
                        session_unref(s);
                        log_warning_errno(r, "session %s: could not stop slice %s: %m", s->id, s->slice);
                }
        }
        if (s->workspace_ephemeral)
                remove_tree(s);
        /* The egress and model sockets first: the channel removes the directory they share. */
        s->egress = egress_session_free(s->egress);
        s->model = model_proxy_session_free(s->model);
        s->channel = channel_free(s->channel);
        s->init_connected = false;
        event_bus_session_ended(m->events, s->id);
        s->ended_mid_turn = s->n_prompts > 0;
        session_prompts_clear(s);
        session_mark_changed(s, SESSION_CHANGED_PROMPTS | SESSION_CHANGED_TURN);
}

void session_fail_and_stop(Session *s, const char *reason) {
        int r;

        session_set_state(s, SESSION_FAILED, reason);
        r = session_stop_unit(s, true, NULL, NULL);
        if (r < 0) {
                log_warning_errno(r, "session %s: could not kill unit %s: %m", s->id, s->unit);
                session_cleanup(s);
        }
        /* Otherwise the unit's end cleans up. */
}

static void session_fail(Session *s, const char *reason) {
        log_warning("session %s failed: %s", s->id, reason);
        session_set_state(s, SESSION_FAILED, reason);
        session_cleanup(s);
}

/* ---- following the unit ---- */

/* The end of a unit, as far as systemd told it, kept while podman is asked how the container ended. */
typedef struct UnitEnd {
        Session *session;
        char *result;
        int exec_main_code;
        int exec_main_status;
        bool exists;
} UnitEnd;

static void unit_end_free(UnitEnd *e) {
        session_unref(e->session);
        free(e->result);
        free(e);
}

static void session_end(Session *s, const UnitState *st, bool oom_killed) {
        _cleanup_free_ char *reason = NULL;
        SessionState next;

        if (s->removed)
                return;
        if (!session_state_is_final(s->state)) {
                reason = session_end_describe(
                        &(SessionEndFacts){
                                .stop_requested = s->stop_requested,
                                .stop_reason = s->stop_reason,
                                .stop_uid = s->stop_uid,
                                .memory = s->config ? s->config->memory : 0,
                                .timeout_sec = s->config ? s->config->timeout_sec : 0,
                        },
                        st,
                        oom_killed,
                        &next);
                session_set_state(s, next, reason ? reason : "the unit ended");
        }
        session_cleanup(s);
}

static void on_end_inspected(int r, long status, json_t *reply, const char *error, void *userdata) {
        UnitEnd *e = userdata;
        Session *s = e->session;
        json_t *state = json_object_get(reply, "State");
        bool oom;
        UnitState st = {
                .result = e->result,
                .exec_main_code = e->exec_main_code,
                .exec_main_status = e->exec_main_status,
                .exists = e->exists,
        };

        if (!e->exists && !e->result) {
                /* systemd forgot the unit (the daemon was down): the container is all that is left. */
                if (r < 0 && !s->stop_requested) {
                        _cleanup_free_ char *reason = NULL;

                        if (asprintf(
                                    &reason,
                                    "lost while the daemon was down: unit %s and container %s are gone",
                                    s->unit,
                                    s->container_name) < 0)
                                reason = NULL;
                        if (!session_state_is_final(s->state)) {
                                session_set_state(s, SESSION_FAILED, reason ? reason : "lost");
                                session_cleanup(s);
                        }
                        unit_end_free(e);
                        return;
                }
                st.exec_main_code = CLD_EXITED;
                st.exec_main_status = (int) json_integer_value(json_object_get(state, "ExitCode"));
                st.result = st.exec_main_status == 0 ? "success" : "exit-code";
        }
        /* On cgroup v1 systemd cannot tell an OOM kill from another SIGKILL: ask conmon's record, then the
         * kernel's. */
        oom = r >= 0 && json_is_true(json_object_get(state, "OOMKilled"));
        if (!oom && !s->stop_requested && st.exec_main_code != 0 &&
            (st.exec_main_status == 137 || st.exec_main_status == SIGKILL))
                oom = oom_kill_recorded(s->unit, s->created_usec);
        session_end(s, &st, oom);
        unit_end_free(e);
}

/* The unit ended: ask podman how the container ended (the unit leaves it for that), then end the
 * session with the reason and clean up. */
static void session_unit_ended(Session *s, const UnitState *st) {
        UnitEnd *e;
        int r;

        if (s->ending)
                return;
        s->ending = true;

        e = calloc(1, sizeof(*e));
        if (e) {
                *e = (UnitEnd){
                        .session = session_ref(s),
                        .result = st->result ? strdup(st->result) : NULL,
                        .exec_main_code = st->exec_main_code,
                        .exec_main_status = st->exec_main_status,
                        .exists = st->exists,
                };
                r = runtime_container_inspect(session_runtime(s), s->container_name, on_end_inspected, e);
                if (r >= 0)
                        return;
                unit_end_free(e);
        }
        session_end(s, st, false); /* podman could not be asked: what systemd said must do */
}

static void on_unit_state(const UnitState *st, void *userdata) {
        Session *s = userdata;

        /* A session that ended before its unit (session_fail_and_stop()) still waits for the unit's end
         * to clean up. */
        if (s->removed || s->cleaned_up)
                return;

        log_debug(
                "session %s: unit %s is %s/%s (result %s)",
                s->id,
                s->unit,
                strempty(st->active_state),
                strempty(st->sub_state),
                strempty(st->result));

        if (streq_ptr(st->active_state, "active")) {
                s->unit_was_active = true;
                if (session_state_is_final(s->state))
                        return;
                if (s->stop_requested && !s->stop_issued) {
                        /* Stop arrived while the session was starting. */
                        int r = session_stop_unit(s, s->stop_force, NULL, NULL);
                        if (r < 0)
                                log_warning_errno(
                                        r, "session %s: could not stop unit %s: %m", s->id, s->unit);
                } else if (s->state == SESSION_STARTING)
                        session_set_state(s, SESSION_IDLE, NULL);
                return;
        }
        if (!st->exists && !s->unit_was_active)
                return; /* not started yet: the start job will tell */

        if (streq_ptr(st->active_state, "inactive") || streq_ptr(st->active_state, "failed") || !st->exists)
                session_unit_ended(s, st);
}

static int session_watch_unit(Session *s) {
        if (s->unit_watch)
                return 0;
        return unit_watch(s->manager->systemd_bus, s->unit, on_unit_state, s, &s->unit_watch);
}

/* ---- creation ---- */

static void on_unit_started(int r, const sd_bus_error *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;
        _cleanup_free_ char *reason = NULL;

        if (r >= 0 || session_state_is_final(s->state))
                return;
        if (asprintf(
                    &reason,
                    "systemd could not start unit %s: %s",
                    s->unit,
                    error && error->message ? error->message : strerror(-r)) < 0)
                reason = NULL;
        audit_log(
                AUDIT_EVENT_CREATE_FAILED,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "%s",
                reason ? reason : "unit start failed");
        session_fail(s, reason ? reason : "systemd could not start the unit");
}

static void session_start_service(Session *s) {
        Manager *m = s->manager;
        _cleanup_free_ char *description = NULL;
        int r;

        if (asprintf(&description, "cc-docker session %s", s->id) < 0) {
                session_fail(s, "out of memory");
                return;
        }

        UnitSpec spec = {
                .name = s->unit,
                .description = description,
                .slice = s->slice,
                .container_name = s->container_name,
                .memory_max = s->config->memory,
                .cpu_millis = s->config->cpu_millis,
                .tasks_max = s->config->tasks,
                .runtime_max_sec = s->config->timeout_sec,
                .stop_timeout_sec = m->config.stop_timeout_sec,
                .keep_container = true,
        };
        runtime_unit_spec(session_runtime(s), &spec);

        r = session_watch_unit(s);
        if (r < 0)
                log_warning_errno(r, "session %s: could not watch unit %s: %m", s->id, s->unit);
        r = unit_start(m->systemd_bus, &spec, on_unit_started, session_ref(s));
        if (r < 0) {
                session_unref(s);
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "could not ask systemd to start %s: %s", s->unit, strerror(-r)) < 0)
                        reason = NULL;
                session_fail(s, reason ? reason : "could not start the unit");
        }
}

static void on_slice_started(int r, const sd_bus_error *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;
        _cleanup_free_ char *reason = NULL;

        if (session_state_is_final(s->state) || s->removed)
                return;
        /* An existing slice (a restarted daemon's) is as good as a new one. */
        if (r >= 0 || r == -EEXIST) {
                session_start_service(s);
                return;
        }
        if (asprintf(
                    &reason,
                    "systemd could not start slice %s: %s",
                    s->slice,
                    error && error->message ? error->message : strerror(-r)) < 0)
                reason = NULL;
        audit_log(
                AUDIT_EVENT_CREATE_FAILED,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "%s",
                reason ?: "slice start failed");
        session_fail(s, reason ?: "systemd could not start the slice");
}

/* The session's slice first, carrying its limits, so that they cap its children too; then the service
 * in it. */
static void session_start_unit(Session *s) {
        Manager *m = s->manager;
        _cleanup_free_ char *description = NULL;
        int r;

        if (!s->slice) {
                session_start_service(s);
                return;
        }
        if (asprintf(&description, "cc-docker session %s and its children", s->id) < 0) {
                session_fail(s, "out of memory");
                return;
        }
        SliceSpec spec = {
                .name = s->slice,
                .description = description,
                .memory_max = s->config->memory,
                .cpu_millis = s->config->cpu_millis,
                .tasks_max = s->config->tasks,
        };
        r = unit_start_slice(m->systemd_bus, &spec, on_slice_started, session_ref(s));
        if (r < 0) {
                _cleanup_free_ char *reason = NULL;

                session_unref(s);
                if (asprintf(&reason, "could not ask systemd to start %s: %s", s->slice, strerror(-r)) < 0)
                        reason = NULL;
                session_fail(s, reason ?: "could not start the slice");
        }
}

static void on_container_created(int r, long status, json_t *reply, const char *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;
        const char *id;

        if (session_state_is_final(s->state) || s->removed)
                return;
        if (r < 0) {
                _cleanup_free_ char *reason = NULL;

                if (asprintf(
                            &reason,
                            "%s could not create the container: %s",
                            session_runtime_name(s),
                            error ? error : strerror(-r)) < 0)
                        reason = NULL;
                audit_log(
                        AUDIT_EVENT_CREATE_FAILED,
                        s->id,
                        s->parent_id,
                        s->unit,
                        (uid_t) -1,
                        "%s",
                        reason ? reason : "container create failed");
                session_fail(s, reason ? reason : "the runtime could not create the container");
                return;
        }

        id = json_string_value(json_object_get(reply, "Id"));
        if (id) {
                free(s->container_id);
                s->container_id = strdup(id);
                session_save(s);
                session_mark_changed(s, SESSION_CHANGED_CONTAINER);
        }
        if (s->stop_requested) {
                session_set_state(s, SESSION_STOPPED, "stopped on request before it started");
                session_cleanup(s);
                return;
        }
        session_start_unit(s);
}

/* The session's container (SPEC.md 9.4) as a PodmanContainerSpec, whose JSON (podman.c) adds what every
 * container has: no capabilities, no new privileges, tmpfs /tmp, /run and home. Here: uid 1000, a
 * read-only root, the session's /workspace, environment and granted secrets, and its limits also as the
 * container's own (the unit's bind too: docs/sandbox.md). */
static json_t *session_container_spec(Session *s) {
        const SessionConfig *c = s->config;
        Manager *m = s->manager;
        _cleanup_free_ char *id_env = NULL, *label = NULL, *cgroup_parent = NULL;
        _cleanup_free_ char **env = NULL; /* borrowed strings */
        _cleanup_(strv_freep) char **objects = NULL;
        _cleanup_free_ PodmanSecretMount *secrets = NULL;
        size_t n_env = 0, n_secrets = 0;
        json_t *spec = NULL;

        /* The caller's environment, then the session's id, which wins. */
        while (c->environment && c->environment[n_env])
                n_env++;
        while (c->secrets && c->secrets[n_secrets])
                n_secrets++;
        env = calloc(n_env + 2, sizeof(char *));
        objects = calloc(n_secrets + 1, sizeof(char *));
        secrets = calloc(n_secrets + 1, sizeof(PodmanSecretMount));
        if (!env || !objects || !secrets || asprintf(&id_env, "CCDOCKER_SESSION_ID=%s", s->id) < 0 ||
            asprintf(&label, "org.ccdocker.session=%s", s->id) < 0)
                return NULL;
        for (size_t i = 0; i < n_env; i++)
                env[i] = c->environment[i];
        env[n_env] = id_env;

        /* Granted secrets, as files of the session's podman secrets; not those the daemon holds. */
        for (size_t i = 0, k = 0; i < n_secrets; i++) {
                if (session_secret_held(c, c->secrets[i]))
                        continue;
                objects[k] = session_secret_object(s, c->secrets[i]);
                if (!objects[k])
                        return NULL;
                secrets[k] = (PodmanSecretMount){ .secret = objects[k], .file = c->secrets[i] };
                k++;
        }
        while (n_secrets > 0 && !secrets[n_secrets - 1].secret)
                n_secrets--;

        PodmanContainerSpec spec_in = {
                .name = s->container_name,
                .image = c->image,
                .labels = (char *[]){ label, NULL },
                .environment = env,
                .workspace = s->workspace,
                .channel_dir = s->channel_dir,
                .home = "/home/claude",
                .uid = 1000,
                .gid = 1000,
                .network = c->network,
                .read_only_root = true,
                .memory = c->memory,
                .cpu_millis = c->cpu_millis,
                .pids = c->tasks,
                .stop_timeout_sec = m->config.stop_timeout_sec,
                .secrets = secrets,
                .n_secrets = n_secrets,
                .command = m->config.session_command,
                .shared = m->config.shared_dir,
                .shared_read_only = m->config.shared_read_only,
        };
        if (runtime_kind(session_runtime(s)) == RUNTIME_DOCKER &&
            session_unit_cgroup(s, &cgroup_parent) < 0) /* Docker's container goes below its unit's cgroup */
                return NULL;
        spec_in.cgroup_parent = cgroup_parent;
        if (runtime_container_spec_to_json(session_runtime(s), &spec_in, &spec) < 0)
                return NULL;
        return spec;
}

/* ---- secrets: podman secrets made for the session and removed after it ---- */

static void on_secret_removed(int r, long status, json_t *reply, const char *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (r < 0)
                log_warning_errno(
                        r, "session %s: could not remove a podman secret: %s", s->id, strempty(error));
}

static void session_remove_secrets(Session *s) {
        if (!s->config || !s->config->secrets || s->secrets_removed)
                return;
        s->secrets_removed = true;
        for (char **i = s->config->secrets; *i; i++) {
                _cleanup_free_ char *object = NULL;
                int r;

                if (session_secret_held(s->config, *i))
                        continue;
                object = session_secret_object(s, *i);
                if (!object) {
                        log_oom();
                        continue;
                }
                r = runtime_secret_remove(session_runtime(s), object, on_secret_removed, session_ref(s));
                if (r < 0) {
                        session_unref(s);
                        log_warning_errno(
                                r,
                                "session %s: could not ask podman to remove secret %s: %m",
                                s->id,
                                object);
                }
        }
}

static void session_create_container(Session *s);

static void on_secret_created(int r, long status, json_t *reply, const char *error, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (r < 0 && !s->secrets_failed) {
                _cleanup_free_ char *reason = NULL;

                s->secrets_failed = true;
                /* The message is podman's, about the request: it never quotes the value. */
                if (asprintf(
                            &reason,
                            "%s could not create the session's secrets: %s",
                            session_runtime_name(s),
                            error ?: strerror(-r)) < 0)
                        reason = NULL;
                if (!session_state_is_final(s->state))
                        session_fail(s, reason ?: "the runtime could not create the session's secrets");
        }
        if (--s->secrets_pending > 0 || s->secrets_failed || session_state_is_final(s->state) || s->removed)
                return;
        session_create_container(s);
}

/* One podman secret per granted secret, then the container. */
static int session_create_secrets(Session *s) {
        const SecretStore *store = s->manager->secrets;

        for (char **i = s->config->secrets; *i; i++) {
                _cleanup_free_ char *object = NULL;
                const char *value = secret_store_get(store, *i);
                int r;

                if (session_secret_held(s->config, *i))
                        continue; /* the daemon adds it to a remote MCP server's requests */
                object = session_secret_object(s, *i);
                if (!object)
                        return -ENOMEM;
                if (!value)
                        return -ENOKEY; /* gone since it was granted: the daemon restarted without it */
                r = runtime_secret_create(
                        session_runtime(s), object, value, on_secret_created, session_ref(s));
                if (r < 0) {
                        session_unref(s);
                        return r;
                }
                s->secrets_pending++;
        }
        return 0;
}

static int session_make_workspace(Session *s) {
        _cleanup_free_ char *parent = NULL;

        if (!s->workspace_ephemeral)
                return 0;
        if (asprintf(&parent, "%s/workspaces", s->manager->config.state_dir) < 0)
                return -ENOMEM;
        if (mkdir(parent, 0711) < 0 && errno != EEXIST)
                return log_error_errno(errno, "session %s: could not create %s: %m", s->id, parent);
        if (mkdir(s->workspace, 0750) < 0)
                return log_error_errno(
                        errno, "session %s: could not create workspace %s: %m", s->id, s->workspace);
        if (chown(s->workspace, SESSION_UID, SESSION_GID) < 0)
                return log_error_errno(
                        errno,
                        "session %s: could not hand workspace %s to uid %d: %m",
                        s->id,
                        s->workspace,
                        SESSION_UID);
        return 0;
}

/* The channel socket in <RuntimeDirectory>/sessions/<id>/, for the container's uid (docs/channel.md). */
/* What the session may reach through the egress proxy: its config's allowed_hosts, and the hosts of the
 * conditional MCP servers its secrets enable (SPEC.md 9.5: only the hosts it needs). */
static char **session_allowed_hosts(Session *s) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0;

        l = strv_copy(s->config ? s->config->allowed_hosts : NULL);
        if (!l)
                return NULL;
        while (l[n])
                n++;
        for (char **i = s->config ? s->config->secrets : NULL; i && *i; i++)
                if (streq(*i, "GITHUB_TOKEN")) {
                        char **k = reallocarray(l, n + 2, sizeof(char *));

                        if (!k)
                                return NULL;
                        l = k;
                        l[n] = strdup("api.githubcopilot.com:443");
                        l[++n] = NULL;
                        if (!l[n - 1])
                                return NULL;
                }
        return TAKE_PTR(l);
}

static int admit_model(int fd, void *userdata) {
        return session_admit_peer(userdata, fd, "model.sock");
}

static int admit_egress(int fd, void *userdata) {
        return session_admit_peer(userdata, fd, "egress.sock");
}

/* A session without a network reaches the model through the daemon's model proxy, on model.sock beside
 * its channel (DESIGN.md decision 11): ccdocker-init bridges it and points ANTHROPIC_BASE_URL at it,
 * and the proxy adds the credential the container never sees. */
static int session_open_model(Session *s) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (s->model || !s->manager->model || !s->config || !streq_ptr(s->config->network, "none"))
                return 0;
        if (asprintf(&path, "%s/%s", s->channel_dir, MODEL_SOCKET_NAME) < 0)
                return -ENOMEM;
        r = model_proxy_listen(s->manager->model, s->id, path, SESSION_UID, SESSION_GID, &s->model);
        if (r < 0)
                return r;
        /* The daemon's credential is behind this socket: only the session's container may use it. */
        model_proxy_session_set_admit(s->model, admit_model, s);
        return 0;
}

/* A session without a network reaches other hosts only through the egress proxy, on egress.sock beside
 * its channel (DESIGN.md decision 11); ccdocker-init bridges it and sets HTTPS_PROXY. */
static int session_open_egress(Session *s) {
        _cleanup_(strv_freep) char **allowed = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        r = session_open_model(s);
        if (r < 0)
                return r;
        if (s->egress || !s->config || !streq_ptr(s->config->network, "none"))
                return 0;
        allowed = session_allowed_hosts(s);
        if (!allowed || asprintf(&path, "%s/%s", s->channel_dir, EGRESS_SOCKET_NAME) < 0)
                return -ENOMEM;
        r = egress_proxy_listen(
                s->manager->egress, s->id, path, SESSION_UID, SESSION_GID, allowed, &s->egress);
        if (r < 0)
                return r;
        egress_session_set_admit(s->egress, admit_egress, s);
        return session_open_remote(s, SESSION_UID, SESSION_GID);
}

static int session_open_channel(Session *s) {
        int r;

        if (!s->channel_dir &&
            asprintf(&s->channel_dir, "%s/sessions/%s", s->manager->config.runtime_dir, s->id) < 0) {
                s->channel_dir = NULL;
                return -ENOMEM;
        }
        if (!s->channel) {
                r = channel_new(
                        s->manager->event,
                        &session_channel_hooks,
                        s,
                        s->id,
                        s->channel_dir,
                        SESSION_UID,
                        SESSION_GID,
                        &s->channel);
                if (r < 0)
                        return r;
        }
        return session_open_egress(s);
}

int session_start(Session *s) {
        _cleanup_free_ char *reason = NULL;
        int r;

        if (s->pool_handover)
                return pool_handover_start(s); /* started already: its limits go on the unit */

        r = session_make_workspace(s);
        if (r < 0) {
                if (asprintf(&reason, "could not create the workspace %s: %s", s->workspace, strerror(-r)) <
                    0)
                        reason = NULL;
                session_fail(s, reason ? reason : "could not create the workspace");
                return r;
        }

        r = session_open_channel(s);
        if (r < 0) {
                if (asprintf(&reason, "could not create the session channel: %s", strerror(-r)) < 0)
                        reason = NULL;
                session_fail(s, reason ? reason : "could not create the session channel");
                return r;
        }

        if (s->config->secrets) {
                r = session_create_secrets(s);
                if (r < 0) {
                        s->secrets_failed = true;
                        if (asprintf(
                                    &reason,
                                    "could not create the session's secrets: %s",
                                    r == -ENOKEY ? "a granted secret is no longer configured"
                                                 : strerror(-r)) < 0)
                                reason = NULL;
                        session_fail(s, reason ?: "could not create the session's secrets");
                        return r;
                }
                if (s->secrets_pending > 0)
                        return 0;
                /* Every secret stays in the daemon: no podman secret to wait for. */
        }
        session_create_container(s);
        return 0;
}

static void session_create_container(Session *s) {
        _cleanup_(json_decrefp) json_t *spec = NULL;
        _cleanup_free_ char *reason = NULL;
        int r;

        /* The host directory podman will mount is the one the caller was allowed, still (workspace.h):
         * a symlink or another directory swapped in since is refused. */
        if (s->config->workspace_type == WORKSPACE_HOST) {
                r = s->config->workspace_checked ? workspace_verify(
                                                           s->config->workspace_path,
                                                           s->config->workspace_dev,
                                                           s->config->workspace_ino)
                                                 : -ENOLINK;
                if (r < 0) {
                        if (asprintf(
                                    &reason,
                                    "workspace %s is not the directory its caller was allowed: %s",
                                    s->config->workspace_path,
                                    r == -ESTALE ? "it was replaced since it was checked"
                                            : r == -ELOOP
                                            ? "a symlink was put in its path since it was checked"
                                            : r == -ENOLINK ? "it was never checked"
                                                            : strerror(-r)) < 0)
                                reason = NULL;
                        session_fail(
                                s, reason ?: "the workspace is not the directory its caller was allowed");
                        return;
                }
        }

        spec = session_container_spec(s);
        if (!spec) {
                session_fail(s, "out of memory building the container spec");
                return;
        }
        r = runtime_container_create(session_runtime(s), spec, on_container_created, session_ref(s));
        if (r < 0) {
                session_unref(s);
                if (asprintf(
                            &reason,
                            "could not ask %s to create the container: %s",
                            session_runtime_name(s),
                            strerror(-r)) < 0)
                        reason = NULL;
                session_fail(s, reason ? reason : "could not ask the runtime to create the container");
        }
}

/* ---- adoption after a restart ---- */

static void on_adopt_state(const UnitState *st, void *userdata) {
        _cleanup_(session_unrefp) Session *s = userdata;

        if (session_state_is_final(s->state))
                return;
        if (st->exists &&
            (streq_ptr(st->active_state, "active") || streq_ptr(st->active_state, "activating") ||
             streq_ptr(st->active_state, "deactivating"))) {
                int r;

                log_info("session %s: re-adopting running unit %s", s->id, s->unit);
                r = session_open_channel(s);
                if (r < 0)
                        log_warning_errno(r, "session %s: could not reopen its channel: %m", s->id);
                s->unit_was_active = streq_ptr(st->active_state, "active");
                r = session_watch_unit(s);
                if (r < 0)
                        log_warning_errno(r, "session %s: could not watch unit %s: %m", s->id, s->unit);
                if (s->state == SESSION_STARTING && s->unit_was_active)
                        session_set_state(s, SESSION_IDLE, NULL);
                return;
        }
        if (st->error < 0) {
                /* systemd could not be asked: follow the unit; its first report settles it. */
                log_warning_errno(
                        st->error, "session %s: could not read the state of %s: %m", s->id, s->unit);
                s->unit_was_active = true;
                (void) session_watch_unit(s);
                return;
        }
        /* Ended while the daemon was down (or gone entirely): the container tells the rest. */
        s->unit_was_active = true;
        session_unit_ended(s, st);
}

int session_adopt(Session *s) {
        int r;

        if (session_state_is_final(s->state))
                return 0;
        r = unit_get_state(s->manager->systemd_bus, s->unit, on_adopt_state, session_ref(s));
        if (r < 0)
                session_unref(s);
        return r;
}

/* ---- stopping ---- */

typedef struct StopRequest {
        Session *session;
        void (*cb)(int r, const char *error, void *userdata);
        void *userdata;
} StopRequest;

static void on_stop_done(int r, const sd_bus_error *error, void *userdata) {
        StopRequest *req = userdata;

        if (req->cb)
                req->cb(r, r < 0 && error ? error->message : NULL, req->userdata);
        session_unref(req->session);
        free(req);
}

static int session_stop_unit(
        Session *s, bool force, void (*cb)(int r, const char *error, void *userdata), void *userdata) {
        StopRequest *req;
        int r;

        s->stop_issued = true;
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (StopRequest){ .session = session_ref(s), .cb = cb, .userdata = userdata };

        if (force)
                r = unit_kill(s->manager->systemd_bus, s->unit, SIGKILL, on_stop_done, req);
        else
                r = unit_stop(s->manager->systemd_bus, s->unit, on_stop_done, req);
        if (r < 0) {
                session_unref(req->session);
                free(req);
        }
        return r;
}

void session_stop_descendants(Session *s, const char *why) {
        _cleanup_free_ Session **children = NULL;
        _cleanup_free_ char *reason = NULL;
        size_t n;

        if (!why) {
                if (asprintf(&reason, "stopped with its parent %s", s->id) < 0) {
                        log_oom();
                        return;
                }
                why = reason;
        }
        if (manager_list_sessions(s->manager, s, &children, &n) < 0) {
                log_oom();
                return;
        }
        for (size_t i = 0; i < n; i++) {
                Session *c = children[i];

                if (session_state_is_final(c->state) || c->stop_requested)
                        continue;
                free(c->stop_reason);
                c->stop_reason = strdup(why);
                (void) session_stop(c, false, (uid_t) -1, NULL, NULL);
        }
}

int session_stop(
        Session *s,
        bool force,
        uid_t caller,
        void (*cb)(int r, const char *error, void *userdata),
        void *userdata) {
        audit_log(
                AUDIT_EVENT_STOP,
                s->id,
                s->parent_id,
                s->unit,
                caller,
                "session %s: stop%s requested",
                s->id,
                force ? " (force)" : "");
        if (!s->stop_requested) {
                _cleanup_(json_decrefp) json_t *msg = json_pack(
                        "{s:s, s:s, s:b, s:o}",
                        "type",
                        "stop",
                        "session_id",
                        s->id,
                        "force",
                        force,
                        "uid",
                        caller == (uid_t) -1 ? json_null() : json_integer(caller));

                session_notify(s, "control", msg);
        }
        s->stop_requested = true;
        s->stop_force = s->stop_force || force;
        s->stop_uid = caller;
        /* Marked before systemd stops anything, so each descendant ends "stopped" with the reason. */
        session_stop_descendants(s, NULL);

        if (session_state_is_final(s->state) || !s->unit_was_active) {
                /* Nothing runs yet (or any more). A session still starting is stopped as soon as its
                 * container is created or its unit is active, whichever comes first. */
                if (cb)
                        cb(0, NULL, userdata);
                return 0;
        }
        return session_stop_unit(s, force, cb, userdata);
}

/* ---- removal ---- */

int session_remove(Session *s, uid_t caller, const char *why, CoreError *e) {
        Manager *m = s->manager;
        _cleanup_(session_unrefp) Session *ref = session_ref(s);
        int r;

        if (!session_state_is_final(s->state))
                return core_error(
                        e,
                        -EBUSY,
                        CORE_ERROR_BAD_STATE,
                        "session %s is %s; stop it first",
                        s->id,
                        session_state_to_string(s->state));
        r = store_delete_session_output(m->store, s->id);
        if (r >= 0)
                r = store_delete_session(m->store, s->id);
        if (r < 0)
                return core_error(
                        e, r, CORE_ERROR_FAILED, "could not delete session %s: %s", s->id, strerror(-r));
        event_bus_forget(m->events, s->id);
        audit_log(
                AUDIT_EVENT_REMOVED,
                s->id,
                s->parent_id,
                s->unit,
                caller,
                "session %s removed%s%s",
                s->id,
                why ? ": " : "",
                strempty(why));
        manager_remove_session(m, s);
        return 0;
}

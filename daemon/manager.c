/* The manager: one sd-event loop, the API bus (where org.ccdocker1 lives) and the bus systemd is reached
 * on, the store, the podman client and the session registry. On start it loads every stored session and
 * re-adopts those whose units still run, before it takes the bus name, so a client never sees a
 * half-loaded daemon. */
#define _GNU_SOURCE
#include "manager.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "audit.h"
#include "cleanup.h"
#include "hashmap.h"
#include "log.h"
#include "pool.h"
#include "session-budget.h"
#include "session-runtime.h"
#include "time-util.h"
#include "unit.h"
#include "util.h"

int manager_new(DaemonConfig *config, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        /* The manager takes the configuration over; the caller's copy is emptied. */
        m->config = *config;
        *config = (DaemonConfig){};
        m->log_limit = (RateLimit){ .interval_usec = SESSION_LOG_INTERVAL_SEC * USEC_PER_SEC,
                                    .burst = MANAGER_LOG_BURST };

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        r = questions_new(m, &m->questions);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* What the last turn changed still goes out: the notices to Redis, the waiters answered. */
        manager_flush_changes(m);
        m->publish_source = sd_event_source_disable_unref(m->publish_source);
        json_decref(m->notices);
        /* Before the sessions: its waiters hold channel calls of theirs. */
        m->questions = questions_free(m->questions);
        m->pool = pool_free(m->pool);
        for (size_t i = 0; i < m->n_sessions; i++) {
                /* Watches hold plain pointers to their session: drop them before the sessions. */
                m->sessions[i]->unit_watch = sd_bus_slot_unref(m->sessions[i]->unit_watch);
                /* The proxy goes below; a session still referenced elsewhere must not keep its socket. */
                m->sessions[i]->egress = egress_session_free(m->sessions[i]->egress);
                m->sessions[i]->model = model_proxy_session_free(m->sessions[i]->model);
                session_unref(m->sessions[i]);
        }
        free(m->sessions);
        hashmap_free(m->session_index);
        sd_event_source_unref(m->heartbeat_timer);
        sd_event_source_unref(m->gc_timer);
        sd_event_source_unref(m->shutdown_timer);
        event_bus_free(m->events);
        secret_store_free(m->secrets);
        /* After the sessions: each frees its own egress and model sockets first. */
        egress_proxy_free(m->egress);
        model_proxy_free(m->model);
        model_prices_free(m->prices, m->n_prices);
        manager_free_runtimes(m);
        podman_client_free(m->podman);
        store_close(m->store);
        if (m->systemd_bus != m->bus)
                sd_bus_flush_close_unref(m->systemd_bus);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        config_done(&m->config);
        return mfree(m);
}

/* ---- the registry ---- */

Session *manager_get_session(Manager *m, const char *id) {
        if (!id)
                return NULL;
        return hashmap_get(m->session_index, id);
}

Session *manager_get_session_by_path(Manager *m, const char *path) {
        _cleanup_free_ char *id = NULL;

        if (sd_bus_path_decode(path, "/org/ccdocker1/session", &id) <= 0)
                return NULL;
        return manager_get_session(m, id);
}

int manager_add_session(Manager *m, Session *s) {
        Session **n;
        int r;

        if (!m->session_index) {
                m->session_index = hashmap_new();
                if (!m->session_index)
                        return -ENOMEM;
        }
        n = reallocarray(m->sessions, m->n_sessions + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        m->sessions = n;
        r = hashmap_put(m->session_index, s->id, s);
        if (r < 0)
                return r;
        m->sessions[m->n_sessions++] = session_ref(s);
        return 0;
}

/* Takes s out of the registry without telling anyone (it was never announced, or is being removed). */
static void manager_drop_session(Manager *m, Session *s) {
        for (size_t i = 0; i < m->n_sessions; i++) {
                if (m->sessions[i] != s)
                        continue;
                memmove(m->sessions + i,
                        m->sessions + i + 1,
                        (m->n_sessions - i - 1) * sizeof(*m->sessions));
                m->n_sessions--;
                (void) hashmap_remove(m->session_index, s->id);
                s->removed = true;
                s->unit_watch = sd_bus_slot_unref(s->unit_watch);
                session_unref(s);
                return;
        }
}

void manager_remove_session(Manager *m, Session *s) {
        Session *parent = manager_get_session(m, s->parent_id);

        if (m->publisher && m->publisher->session_removed)
                m->publisher->session_removed(m, s);
        if (parent)
                session_mark_changed(parent, SESSION_CHANGED_CHILDREN);
        manager_drop_session(m, s);
}

size_t manager_n_sessions(Manager *m) {
        return m->n_sessions;
}

int manager_list_sessions(Manager *m, const Session *parent, Session ***ret, size_t *ret_n) {
        Session **l;
        size_t n = 0;

        l = calloc(m->n_sessions + 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_sessions; i++)
                if (!parent || (session_is_child_of(m->sessions[i], parent) && !m->sessions[i]->removed))
                        l[n++] = m->sessions[i];
        *ret = l;
        *ret_n = n;
        return 0;
}

/* ---- publishing: the one seam between the core and its publishers (STYLE.md 14) ---- */

static int on_publish(sd_event_source *source, void *userdata) {
        manager_flush_changes(userdata);
        return 0;
}

static void manager_schedule_publish(Manager *m) {
        int r;

        if (!m->publish_source) {
                /* At the normal priority, not idle: a flood of channel input must not starve it. */
                r = sd_event_add_defer(m->event, &m->publish_source, on_publish, m);
                if (r < 0) {
                        log_warning_errno(r, "could not set up publishing, publishing at once: %m");
                        manager_flush_changes(m);
                        return;
                }
                (void) sd_event_source_set_description(m->publish_source, "publish");
        }
        r = sd_event_source_set_enabled(m->publish_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "could not schedule publishing: %m");
}

void manager_queue_publish(Manager *m, Session *s) {
        if (s->publish_queued)
                return;
        s->publish_queued = true;
        s->publish_next = NULL;
        if (m->publish_queue_tail)
                m->publish_queue_tail->publish_next = session_ref(s);
        else
                m->publish_queue = session_ref(s);
        m->publish_queue_tail = s;
        manager_schedule_publish(m);
}

static void manager_publish_notices(Manager *m) {
        _cleanup_(json_decrefp) json_t *notices = TAKE_PTR(m->notices);
        size_t i;
        json_t *n;

        json_array_foreach (notices, i, n) {
                const char *channel = json_string_value(json_array_get(n, 0));
                int r;

                r = event_bus_notify(m->events, channel, json_array_get(n, 1));
                if (r < 0)
                        log_debug_errno(r, "could not publish on %s: %m", channel);
        }
}

void manager_queue_notice(Manager *m, const char *channel, json_t *msg) {
        json_t *notice;

        if (!m->events)
                return;
        if (!m->notices) {
                m->notices = json_array();
                if (!m->notices)
                        return (void) log_oom();
        }
        /* Bounded: a burst larger than this between two flushes sends what is held first. */
        if (json_array_size(m->notices) >= MANAGER_NOTICES_MAX)
                manager_publish_notices(m);
        notice = json_pack("[s,O]", channel, msg);
        if (!notice || json_array_append_new(m->notices, notice) < 0) {
                json_decref(notice);
                return (void) log_oom();
        }
        manager_schedule_publish(m);
}

void manager_flush_changes(Manager *m) {
        while (m->publish_queue || m->notices) {
                _cleanup_(session_unrefp) Session *s = NULL;
                unsigned changes;

                /* Notices first, in the order they were queued: they say what happened, and a waiter
                 * woken below may answer a caller who then looks. */
                manager_publish_notices(m);
                if (!m->publish_queue)
                        continue;
                s = m->publish_queue;
                m->publish_queue = s->publish_next;
                if (!m->publish_queue)
                        m->publish_queue_tail = NULL;
                s->publish_next = NULL;
                s->publish_queued = false;
                changes = s->changed;
                s->changed = 0;

                /* A session's usage is in the tree figures of each of its ancestors. */
                if (changes & SESSION_CHANGED_USAGE) {
                        Session *a = manager_get_session(m, s->parent_id);

                        if (a)
                                session_mark_changed(a, SESSION_CHANGED_USAGE);
                }
                if (changes != 0 && !s->removed && m->publisher && m->publisher->session_changed)
                        m->publisher->session_changed(m, s, changes);
                if (changes & SESSION_CHANGED_TURN)
                        session_wake(s, false);
                else if (changes & SESSION_CHANGED_OUTPUT)
                        session_wake(s, true);
        }
}

/* ---- who sees what (docs/security.md) ---- */

void manager_admin_seen(Manager *m, uid_t uid) {
        size_t oldest = 0;
        uint64_t now = event_now_usec(m->event, CLOCK_MONOTONIC);

        for (size_t i = 0; i < ELEMENTSOF(m->admins); i++) {
                if (m->admins[i].until_usec > now && m->admins[i].uid == uid) {
                        oldest = i;
                        break;
                }
                if (m->admins[i].until_usec < m->admins[oldest].until_usec)
                        oldest = i;
        }
        m->admins[oldest].uid = uid;
        m->admins[oldest].until_usec = now + MANAGER_ADMIN_CACHE_SEC * USEC_PER_SEC;
}

bool manager_caller_sees(Manager *m, uid_t uid, const Session *s) {
        uint64_t now;

        if (m->config.mode == DAEMON_USER || uid == 0 || uid == s->owner_uid)
                return true;
        now = event_now_usec(m->event, CLOCK_MONOTONIC);
        for (size_t i = 0; i < ELEMENTSOF(m->admins); i++)
                if (m->admins[i].uid == uid && m->admins[i].until_usec > now)
                        return true;
        return false;
}

/* ---- secrets: which a caller may give a new session ---- */

int manager_check_secret(Manager *m, uid_t uid, const char *name, CoreError *e) {
        if (!secret_store_get(m->secrets, name))
                return core_error(
                        e,
                        -ENOKEY,
                        CORE_ERROR_INVALID_CONFIG,
                        "no secret '%s' is configured (a credential file %s or a variable CC_SECRET_%s of the "
                        "daemon)",
                        name,
                        name,
                        name);
        if (m->config.mode == DAEMON_USER) {
                for (char **a = m->config.allowed_secrets; a && *a; a++)
                        if (streq(*a, name))
                                return 0;
                audit_log(
                        AUDIT_EVENT_DENIED,
                        NULL,
                        NULL,
                        NULL,
                        uid,
                        "CreateSession: secret %s is not in AllowedSecrets",
                        name);
                return core_error(
                        e,
                        -EPERM,
                        CORE_ERROR_ACCESS_DENIED,
                        "secret '%s' may not be used: it is not in the daemon's AllowedSecrets=",
                        name);
        }
        return uid == 0 ? 0 : 1;
}

/* ---- the model proxy's hooks: usage goes to the session and the store; budgets cap whole trees ---- */

static void usage_add(StoreUsage *to, const StoreUsage *u) {
        to->calls += u->calls;
        to->input_tokens += u->input_tokens;
        to->output_tokens += u->output_tokens;
        to->cache_creation_input_tokens += u->cache_creation_input_tokens;
        to->cache_read_input_tokens += u->cache_read_input_tokens;
        to->cost_usd += u->cost_usd;
}

void manager_subtree_usage(Manager *m, Session *root, StoreUsage *ret) {
        *ret = root->usage;
        for (size_t i = 0; i < m->n_sessions; i++)
                if (session_is_child_of(m->sessions[i], root)) {
                        StoreUsage sub;

                        manager_subtree_usage(m, m->sessions[i], &sub);
                        usage_add(ret, &sub);
                }
}

static void on_model_usage(const ModelCall *call, void *userdata) {
        Manager *m = userdata;
        Session *s = manager_get_session(m, call->session_id);
        StoreUsage u = {
                .calls = 1,
                .input_tokens = call->usage.input_tokens,
                .output_tokens = call->usage.output_tokens,
                .cache_creation_input_tokens = call->usage.cache_creation_input_tokens,
                .cache_read_input_tokens = call->usage.cache_read_input_tokens,
                .cost_usd = call->cost_usd,
        };
        int r;

        if (!call->upstream)
                return; /* refused by the proxy itself: nothing was used */
        r = store_usage_add(m->store, call->session_id, &u);
        if (r < 0)
                log_warning_errno(
                        r, "session %s: could not store a model call's usage: %m", call->session_id);
        if (s) {
                usage_add(&s->usage, &u);
                session_mark_changed(s, SESSION_CHANGED_USAGE);
                (void) session_budget_holds(s); /* used up now: paused before its next prompt */
        }
}

/* Whether session_id may call the model and reserve what the call might use (session-budget.c): a
 * session whose tree used a budget up is paused until the budget is raised; a call that only lacks room
 * beside the calls running is deferred. */
static ModelBudgetVerdict on_model_budget(
        const char *session_id, const ModelReservation *reserve, char **ret_reason, void *userdata) {
        Session *s = manager_get_session(userdata, session_id);

        if (!s || session_budget_admits(s, reserve, ret_reason))
                return MODEL_BUDGET_ALLOW;
        if (session_budget_admits(s, NULL, NULL))
                return MODEL_BUDGET_BUSY;
        session_budget_set_paused(s, *ret_reason ?: "a budget of its tree is used up");
        return MODEL_BUDGET_REFUSE;
}

/* The model proxy, when the daemon has a credential (a credential file, ANTHROPIC_API_KEY or
 * CLAUDE_CODE_OAUTH_TOKEN): sessions without a network reach the model through it, and never see the
 * credential. */
static int manager_start_model_proxy(Manager *m) {
        _cleanup_free_ char *credential = NULL;
        ModelCredentialKind kind = MODEL_CREDENTIAL_NONE;
        int r;

        r = model_credential_load(getenv("CREDENTIALS_DIRECTORY"), &kind, &credential);
        if (r < 0)
                return log_error_errno(r, "could not read the model credential: %m");
        if (kind == MODEL_CREDENTIAL_NONE) {
                log_info("no model credential: sessions without a network get no model proxy");
                return 0;
        }
        r = model_prices_parse(m->config.model_prices, &m->prices, &m->n_prices);
        if (r < 0) {
                explicit_bzero(credential, strlen(credential));
                return log_error_errno(r, "ModelPrices= could not be read: %m");
        }
        ModelProxyConfig cfg = {
                .upstream_base_url = m->config.model_upstream_url,
                .credential_kind = kind,
                .credential = credential,
                .max_in_flight = m->config.model_max_in_flight,
                .max_in_flight_per_session = m->config.model_max_in_flight_per_session,
                .requests_per_minute = m->config.model_requests_per_minute,
                .queue_max = m->config.model_queue_max,
                .prices = m->prices,
                .n_prices = m->n_prices,
                .on_usage = on_model_usage,
                .budget = on_model_budget,
                .userdata = m,
        };
        r = model_proxy_new(m->event, &cfg, &m->model);
        explicit_bzero(credential, strlen(credential));
        if (r < 0)
                return log_error_errno(r, "could not set up the model proxy: %m");
        log_info(
                "model proxy: forwarding to %s with %s",
                m->config.model_upstream_url,
                kind == MODEL_CREDENTIAL_API_KEY ? "an API key" : "an OAuth token");
        return 0;
}

/* The root of s's tree, as far as the registry knows it. */
static Session *manager_tree_root(Manager *m, Session *s) {
        Session *p;

        while (s && (p = manager_get_session(m, s->parent_id)))
                s = p;
        return s;
}

int manager_check_quota(Manager *m, uid_t uid, Session *parent, CoreError *e) {
        Session *root = parent ? manager_tree_root(m, parent) : NULL;
        unsigned live = 0, owners = 0, tree = 0;

        /* One pass over the registry for the three counts. */
        for (size_t i = 0; i < m->n_sessions; i++) {
                Session *s = m->sessions[i];

                if (session_state_is_final(s->state))
                        continue;
                live++;
                owners += s->owner_uid == uid;
                tree += root && manager_tree_root(m, s) == root;
        }
        if (live >= m->config.max_sessions)
                return core_error(
                        e,
                        -EUSERS,
                        CORE_ERROR_LIMIT,
                        "%u sessions are already live, the configured MaxSessions; try again later",
                        live);
        if (owners >= m->config.max_sessions_per_owner)
                return core_error(
                        e,
                        -EUSERS,
                        CORE_ERROR_LIMIT,
                        "uid %u has %u live sessions, the configured MaxSessionsPerOwner",
                        (unsigned) uid,
                        owners);
        if (root && tree >= m->config.max_tree_sessions)
                return core_error(
                        e,
                        -EUSERS,
                        CORE_ERROR_LIMIT,
                        "the tree of session %s has %u live sessions, the configured MaxTreeSessions",
                        root->id,
                        tree);
        return 0;
}

int manager_create_session(
        Manager *m, SessionConfig **config, uid_t uid, Session *parent, Session **ret, CoreError *e) {
        _cleanup_(session_unrefp) Session *s = NULL;
        int r;

        r = manager_check_quota(m, uid, parent, e);
        if (r < 0)
                return r;

        r = pool_take(m->pool, config, uid, parent, &s); /* 1: a started session was handed over */
        if (r == 0)
                r = session_new(m, config, uid, parent, &s);
        if (r >= 0)
                r = manager_add_session(m, s);
        if (r < 0)
                return core_error(e, r, CORE_ERROR_FAILED, "could not make the session: %s", strerror(-r));
        /* Recorded before it is announced: a daemon killed right after the reply still knows it. */
        r = session_store_new(s);
        if (r < 0) {
                manager_drop_session(m, s);
                return core_error(e, r, CORE_ERROR_FAILED, "could not record the session: %s", strerror(-r));
        }
        if (s->config->prompt) {
                r = session_queue_prompt(s, s->config->prompt, NULL);
                if (r < 0)
                        log_warning_errno(r, "session %s: could not queue the initial prompt: %m", s->id);
        }
        if (parent)
                audit_log(
                        AUDIT_EVENT_CREATED,
                        s->id,
                        s->parent_id,
                        s->unit,
                        uid,
                        "session %s created as a child of %s (depth %u, image %s)",
                        s->id,
                        parent->id,
                        s->depth,
                        s->image);
        else
                audit_log(
                        AUDIT_EVENT_CREATED,
                        s->id,
                        s->parent_id,
                        s->unit,
                        uid,
                        "session %s created by uid %u (image %s)",
                        s->id,
                        (unsigned) uid,
                        s->image);
        if (m->publisher && m->publisher->session_new)
                m->publisher->session_new(m, s);
        if (parent)
                session_mark_changed(parent, SESSION_CHANGED_CHILDREN);

        *ret = TAKE_PTR(s);
        return 0;
}

unsigned manager_live_sessions(Manager *m) {
        unsigned n = 0;

        for (size_t i = 0; i < m->n_sessions; i++)
                if (!session_state_is_final(m->sessions[i]->state))
                        n++;
        return n;
}

static int open_bus(const char *which, sd_bus **ret) {
        if (streq(which, "user"))
                return sd_bus_open_user(ret);
        if (streq(which, "system"))
                return sd_bus_open_system(ret);
        return -EINVAL;
}

static int load_session(const SessionRecord *rec, void *userdata) {
        Manager *m = userdata;
        _cleanup_(session_unrefp) Session *s = NULL;
        int r;

        r = session_new_from_record(m, rec, &s);
        if (r < 0)
                return 0; /* logged; one bad record must not keep the daemon from starting */
        return manager_add_session(m, s);
}

int manager_startup(Manager *m) {
        const char *api_bus = m->config.mode == DAEMON_SYSTEM ? "system" : "user";
        _cleanup_free_ char *db = NULL;
        int r;

        r = mkdir_p(m->config.state_dir, 0700);
        if (r < 0)
                return log_error_errno(
                        r, "could not create the state directory %s: %m", m->config.state_dir);
        if (asprintf(&db, "%s/ccdockerd.db", m->config.state_dir) < 0)
                return log_oom();
        r = store_open(db, &m->store);
        if (r < 0)
                return log_error_errno(r, "could not open the store %s: %m", db);

        r = secret_store_load(getenv("CREDENTIALS_DIRECTORY"), &m->secrets);
        if (r < 0)
                return log_error_errno(r, "could not read the secrets: %m");

        r = manager_start_model_proxy(m);
        if (r < 0)
                return r;

        r = egress_proxy_new(m->event, &m->egress);
        if (r < 0)
                return log_error_errno(r, "could not set up the egress proxy: %m");

        r = event_bus_new(m->event, m->store, m->config.redis_socket, &m->events);
        if (r < 0)
                return log_error_errno(r, "could not set up the event bus: %m");
        {
                _cleanup_free_ char *sessions = NULL;

                if (asprintf(&sessions, "%s/sessions", m->config.runtime_dir) < 0)
                        return log_oom();
                r = mkdir_p(sessions, 0755);
                if (r < 0)
                        return log_error_errno(r, "could not create %s: %m", sessions);
        }

        r = podman_client_new(m->event, m->config.podman_socket, &m->podman);
        if (r >= 0)
                r = podman_client_set_timeout(m->podman, m->config.podman_timeout_sec);
        if (r < 0)
                return log_error_errno(r, "could not set up the podman client: %m");

        r = open_bus(api_bus, &m->bus);
        if (r < 0)
                return log_error_errno(r, "could not connect to the %s bus: %m", api_bus);
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "could not attach the bus to the event loop: %m");

        if (streq(m->config.systemd_bus, api_bus))
                m->systemd_bus = m->bus;
        else {
                r = open_bus(m->config.systemd_bus, &m->systemd_bus);
                if (r < 0)
                        return log_error_errno(
                                r, "could not connect to the %s bus for systemd: %m", m->config.systemd_bus);
                r = sd_bus_attach_event(m->systemd_bus, m->event, SD_EVENT_PRIORITY_NORMAL);
                if (r < 0)
                        return log_error_errno(r, "could not attach the systemd bus to the event loop: %m");
        }
        r = unit_subscribe(m->systemd_bus);
        if (r < 0)
                return log_error_errno(r, "could not subscribe to systemd's signals: %m");

        r = manager_start_runtimes(m);
        if (r < 0)
                return r;

        if (m->publisher && m->publisher->attach) {
                r = m->publisher->attach(m);
                if (r < 0)
                        return r;
        }

        r = store_load_sessions(m->store, load_session, m);
        if (r < 0)
                return log_error_errno(r, "could not load the stored sessions: %m");
        for (size_t i = 0; i < m->n_sessions; i++) {
                r = session_restore_output(m->sessions[i]);
                if (r < 0)
                        log_warning_errno(
                                r,
                                "session %s: could not restore its output and prompts: %m",
                                m->sessions[i]->id);
                r = session_adopt(m->sessions[i]);
                if (r < 0)
                        log_warning_errno(
                                r, "session %s: could not look up its unit: %m", m->sessions[i]->id);
        }
        log_info("loaded %zu session(s), %u live", m->n_sessions, manager_live_sessions(m));
        r = questions_load(m->questions);
        if (r < 0)
                return r;
        /* After the stored sessions: what a pool left before a restart is cleaned, never adopted. */
        r = pool_new(m, &m->pool);
        if (r < 0)
                return log_error_errno(r, "could not set up the warm pool: %m");

        r = sd_bus_request_name(m->bus, "org.ccdocker1", 0);
        if (r < 0)
                return log_error_errno(r, "could not take the bus name org.ccdocker1: %m");
        return 0;
}

/* ---- retention: ended sessions are removed EndedSessionRetentionSec after they ended ---- */

static uint64_t manager_gc_period(Manager *m) {
        uint64_t p = m->config.ended_retention_sec * USEC_PER_SEC / 2;

        return p < USEC_PER_SEC ? USEC_PER_SEC : p > USEC_PER_MINUTE ? USEC_PER_MINUTE : p;
}

static int on_gc(sd_event_source *source, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ Session **sessions = NULL;
        uint64_t now = now_usec(CLOCK_REALTIME), retention = m->config.ended_retention_sec * USEC_PER_SEC;
        size_t n;

        if (manager_list_sessions(m, NULL, &sessions, &n) >= 0)
                for (size_t i = 0; i < n; i++) {
                        Session *s = sessions[i];
                        CoreError e;

                        /* Only once nothing is under way for it (its container's removal, a delivery). */
                        if (!session_state_is_final(s->state) || !s->cleaned_up || s->n_ref > 1 ||
                            s->ended_usec == 0 || now < s->ended_usec || now - s->ended_usec < retention)
                                continue;
                        if (session_remove(
                                    s, (uid_t) -1, "its retention (EndedSessionRetentionSec) ran out", &e) <
                            0)
                                log_warning("session %s: %s", s->id, e.message);
                }
        (void) sd_event_source_set_time_relative(source, manager_gc_period(m));
        return 0;
}

static int on_heartbeat_check(sd_event_source *source, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now;

        /* usec is when the timer was due, which a heartbeat handled since may postdate: compare with
         * the loop's now. */
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0)
                now = usec;
        for (size_t i = 0; i < m->n_sessions; i++)
                session_check_heartbeat(m->sessions[i], now);
        (void) sd_event_source_set_time(source, now + 5 * USEC_PER_SEC);
        return 0;
}

/* Whether an asynchronous operation still holds a session: a removal or reset on its way to podman
 * or systemd, a delivery about to run. */
static const char *signal_to_string_or_number(uint32_t sig) {
        return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal";
}

static bool manager_busy(Manager *m) {
        if (m->n_session_objects != m->n_sessions)
                return true;
        for (size_t i = 0; i < m->n_sessions; i++)
                if (m->sessions[i]->n_ref > 1)
                        return true;
        return false;
}

static int on_shutdown_check(sd_event_source *source, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (!manager_busy(m) || usec >= m->shutdown_deadline)
                return sd_event_exit(m->event, 0);
        return sd_event_source_set_time(source, usec + 20 * 1000);
}

/* SIGTERM or SIGINT: sessions keep running (their units are systemd's), but what is under way for
 * them (a container removal, a unit reset) gets up to 5 s to finish, and waiting GetResult calls are
 * answered, so that nothing is dropped half-way. */
static int on_exit_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        uint64_t now;
        int r;

        if (m->shutdown_timer)
                return sd_event_exit(m->event, 0); /* a second signal: now */
        log_info("shutting down on %s; sessions keep running", signal_to_string_or_number(si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down; sessions keep running.");
        for (size_t i = 0; i < m->n_sessions; i++)
                session_wake_waiters(m->sessions[i]);
        pool_shutdown(m->pool); /* the pool's sessions are no one's: they stop, the shutdown waits */
        r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (r >= 0) {
                m->shutdown_deadline = now + 5 * USEC_PER_SEC;
                r = sd_event_add_time(
                        m->event, &m->shutdown_timer, CLOCK_MONOTONIC, now, 0, on_shutdown_check, m);
        }
        if (r >= 0)
                r = sd_event_source_set_enabled(m->shutdown_timer, SD_EVENT_ON);
        if (r < 0)
                return sd_event_exit(m->event, 0);
        return 0;
}

int manager_run(Manager *m) {
        uint64_t now;
        int r;

        if (m->config.heartbeat_timeout_sec > 0) {
                r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                if (r >= 0)
                        r = sd_event_add_time(
                                m->event,
                                &m->heartbeat_timer,
                                CLOCK_MONOTONIC,
                                now + 5 * USEC_PER_SEC,
                                0,
                                on_heartbeat_check,
                                m);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->heartbeat_timer, SD_EVENT_ON);
                if (r < 0)
                        return log_error_errno(r, "could not set up the heartbeat check: %m");
        }

        if (m->config.ended_retention_sec > 0) {
                r = sd_event_add_time_relative(
                        m->event, &m->gc_timer, CLOCK_MONOTONIC, manager_gc_period(m), 0, on_gc, m);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->gc_timer, SD_EVENT_ON);
                if (r < 0)
                        return log_error_errno(r, "could not set up the removal of ended sessions: %m");
        }

        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r < 0)
                return r;
        (void) sd_event_set_watchdog(m->event, true);

        (void) sd_notify(false, "READY=1\nSTATUS=Managing sessions.");
        return sd_event_loop(m->event);
}

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
#include "log.h"
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

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_sessions; i++) {
                /* Watches hold plain pointers to their session: drop them before the sessions. */
                m->sessions[i]->unit_watch = sd_bus_slot_unref(m->sessions[i]->unit_watch);
                /* The proxy goes below; a session still referenced elsewhere must not keep its socket. */
                m->sessions[i]->egress = egress_session_free(m->sessions[i]->egress);
                m->sessions[i]->model = model_proxy_session_free(m->sessions[i]->model);
                session_unref(m->sessions[i]);
        }
        free(m->sessions);
        sd_event_source_unref(m->heartbeat_timer);
        sd_event_source_unref(m->shutdown_timer);
        event_bus_free(m->events);
        secret_store_free(m->secrets);
        /* After the sessions: each frees its own egress and model sockets first. */
        egress_proxy_free(m->egress);
        model_proxy_free(m->model);
        model_prices_free(m->prices, m->n_prices);
        podman_client_free(m->podman);
        store_close(m->store);
        if (m->systemd_bus != m->bus)
                sd_bus_flush_close_unref(m->systemd_bus);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        config_done(&m->config);
        return mfree(m);
}

Session *manager_get_session(Manager *m, const char *id) {
        if (!id)
                return NULL;
        for (size_t i = 0; i < m->n_sessions; i++)
                if (streq(m->sessions[i]->id, id))
                        return m->sessions[i];
        return NULL;
}

Session *manager_get_session_by_path(Manager *m, const char *path) {
        for (size_t i = 0; i < m->n_sessions; i++)
                if (streq(m->sessions[i]->object_path, path))
                        return m->sessions[i];
        return NULL;
}

int manager_add_session(Manager *m, Session *s) {
        Session **n;

        n = reallocarray(m->sessions, m->n_sessions + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        m->sessions = n;
        m->sessions[m->n_sessions++] = session_ref(s);
        return 0;
}

void manager_remove_session(Manager *m, Session *s) {
        for (size_t i = 0; i < m->n_sessions; i++) {
                if (m->sessions[i] != s)
                        continue;
                memmove(m->sessions + i,
                        m->sessions + i + 1,
                        (m->n_sessions - i - 1) * sizeof(*m->sessions));
                m->n_sessions--;
                s->removed = true;
                s->unit_watch = sd_bus_slot_unref(s->unit_watch);
                session_unref(s);
                return;
        }
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
        if (s)
                usage_add(&s->usage, &u);
        /* The tree's figures of every ancestor changed too. */
        for (; s; s = s->parent_id ? manager_get_session(m, s->parent_id) : NULL)
                session_dbus_emit_changed(s, "Usage", NULL);
}

/* Whether session_id may call the model: no ancestor (itself included) with a budget has used it up
 * with its whole tree. */
static bool on_model_budget(const char *session_id, char **ret_reason, void *userdata) {
        Manager *m = userdata;

        for (Session *a = manager_get_session(m, session_id); a;
             a = a->parent_id ? manager_get_session(m, a->parent_id) : NULL) {
                StoreUsage u;

                if (!a->config || (a->config->budget_usd <= 0 && a->config->budget_tokens == 0))
                        continue;
                manager_subtree_usage(m, a, &u);
                if (a->config->budget_tokens > 0 &&
                    u.input_tokens + u.output_tokens >= a->config->budget_tokens) {
                        if (asprintf(
                                    ret_reason,
                                    "session %s and its children have used %" PRIu64
                                    " of their budget of %" PRIu64 " tokens (budget_tokens)",
                                    a->id,
                                    u.input_tokens + u.output_tokens,
                                    a->config->budget_tokens) < 0)
                                *ret_reason = NULL;
                        return false;
                }
                if (a->config->budget_usd > 0 && u.cost_usd >= a->config->budget_usd) {
                        if (asprintf(
                                    ret_reason,
                                    "session %s and its children have used $%.4f of their budget of $%.4f (budget_usd)",
                                    a->id,
                                    u.cost_usd,
                                    a->config->budget_usd) < 0)
                                *ret_reason = NULL;
                        return false;
                }
        }
        return true;
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

int manager_create_session(Manager *m, SessionConfig **config, uid_t uid, Session *parent, Session **ret) {
        _cleanup_(session_unrefp) Session *s = NULL;
        int r;

        if (manager_live_sessions(m) >= m->config.max_sessions)
                return -EUSERS;

        r = session_new(m, config, uid, parent, &s);
        if (r >= 0)
                r = manager_add_session(m, s);
        if (r < 0)
                return r;
        /* Recorded before it is announced: a daemon killed right after the reply still knows it. */
        r = session_store_new(s);
        if (r < 0) {
                manager_remove_session(m, s);
                return r;
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
        manager_dbus_emit_session_new(m, s);
        if (parent)
                session_dbus_emit_changed(parent, "Children", NULL);

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

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
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

        r = manager_dbus_register(m);
        if (r < 0)
                return r;
        r = session_dbus_register(m);
        if (r < 0)
                return r;

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

        r = sd_bus_request_name(m->bus, "org.ccdocker1", 0);
        if (r < 0)
                return log_error_errno(r, "could not take the bus name org.ccdocker1: %m");
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
        (void) sd_event_source_set_time(source, now + 5 * 1000000ULL);
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
        r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (r >= 0) {
                m->shutdown_deadline = now + 5 * 1000000ULL;
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
                                now + 5 * 1000000ULL,
                                0,
                                on_heartbeat_check,
                                m);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->heartbeat_timer, SD_EVENT_ON);
                if (r < 0)
                        return log_error_errno(r, "could not set up the heartbeat check: %m");
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

/* The warm pool (docs/ccdockerd.md, "The warm pool"): PoolSize= sessions of the default configuration,
 * started the way any session is (session_start()), but in no registry, store, list or Redis channel
 * until a CreateSession takes one. The id a member was made with is the one its user gets: the unit,
 * container, workspace and socket are named for it, and none of them is listed anywhere a user looks
 * before the hand-over. Each member has a marker file <StateDirectory>/pool/<id> until it is handed over
 * or gone, so that a daemon restarted after a crash removes what its pool left rather than adopting it. */
#define _GNU_SOURCE
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async.h"
#include "cleanup.h"
#include "log.h"
#include "manager.h"
#include "session-end.h"
#include "session.h"
#include "time-util.h"
#include "unit.h"
#include "util.h"
#include "validate.h"

#define POOL_TICK_USEC (500 * USEC_PER_MSEC)
#define POOL_TICK_STOPPING_USEC (50 * USEC_PER_MSEC)
/* A member that ended before it was ready (no image, podman down): the next one waits this long. */
#define POOL_BACKOFF_USEC (10 * USEC_PER_SEC)
/* After a hand-over the next member waits this long: its start (container, init, the CLI: a second of
 * CPU) would otherwise compete with the first answer of the session just handed over. */
#define POOL_REFILL_DELAY_USEC (5 * USEC_PER_SEC)

/* A handed-over session's timeout_seconds (below, "deadlines"). */
typedef struct Deadline {
        Pool *pool;
        char id[13];
        sd_event_source *timer; /* CLOCK_REALTIME */
        struct Deadline *next;
} Deadline;

struct Pool {
        Manager *manager;
        Deadline *deadlines;
        Session **members; /* started, starting, or ending and not yet cleaned up */
        size_t n_members;
        sd_event_source *timer;
        uint64_t next_fill_usec; /* CLOCK_MONOTONIC */
        bool stopping;
};

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static char *pool_marker(Manager *m, const char *id) {
        char *p;

        return asprintf(&p, "%s/pool/%s", m->config.state_dir, id) < 0 ? NULL : p;
}

static void pool_unlink_marker(Manager *m, const char *id) {
        _cleanup_free_ char *path = pool_marker(m, id);

        if (path && unlink(path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "pool: could not remove %s: %m", path);
}

/* ---- what a pool left before a restart ---- */

typedef struct Leftover {
        Manager *manager;
        char *id, *unit, *slice, *container;
} Leftover;

static void leftover_free(Leftover *l) {
        if (!l)
                return;
        free(l->id);
        free(l->unit);
        free(l->slice);
        free(l->container);
        free(l);
}

static void on_leftover_done(int r, const sd_bus_error *error, void *userdata) {
        if (r < 0)
                log_debug_errno(
                        r, "pool: cleaning a leftover: %s", error && error->message ? error->message : "");
}

static void on_leftover_tree(int r, void *userdata) {
        if (r < 0)
                log_warning_errno(r, "pool: could not remove a leftover directory: %m");
}

static void leftover_remove_tree(Manager *m, const char *fmt_dir, const char *id) {
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/%s", fmt_dir, id) < 0)
                return (void) log_oom();
        if (access(path, F_OK) < 0)
                return;
        if (async_rm_rf(m->event, path, on_leftover_tree, NULL) < 0)
                log_warning("pool: could not start removing %s", path);
}

static void on_leftover_container_removed(
        int r, long status, json_t *reply, const char *error, void *userdata) {
        Leftover *l = userdata;
        Manager *m = l->manager;
        _cleanup_free_ char *workspaces = NULL, *sessions = NULL;

        if (r < 0 && status != 404)
                log_warning(
                        "pool: could not remove leftover container %s: %s", l->container, strempty(error));
        if (unit_reset_failed(m->systemd_bus, l->unit, on_leftover_done, NULL) < 0 ||
            unit_stop(m->systemd_bus, l->slice, on_leftover_done, NULL) < 0)
                log_warning("pool: could not ask systemd to clean up after %s", l->unit);
        if (asprintf(&workspaces, "%s/workspaces", m->config.state_dir) >= 0)
                leftover_remove_tree(m, workspaces, l->id);
        if (asprintf(&sessions, "%s/sessions", m->config.runtime_dir) >= 0)
                leftover_remove_tree(m, sessions, l->id);
        /* Last: until here, a daemon killed again finds the marker and starts over. */
        if (r >= 0 || status == 404)
                pool_unlink_marker(m, l->id);
        leftover_free(l);
}

static void on_leftover_unit_stopped(int r, const sd_bus_error *error, void *userdata) {
        Leftover *l = userdata;

        if (r < 0)
                log_warning(
                        "pool: could not stop leftover unit %s: %s",
                        l->unit,
                        error && error->message ? error->message : strerror(-r));
        /* Forced: a container whose unit could not be stopped is killed by podman. */
        r = podman_container_remove(l->manager->podman, l->container, on_leftover_container_removed, l);
        if (r < 0) {
                log_warning_errno(r, "pool: could not ask podman to remove %s: %m", l->container);
                leftover_free(l);
        }
}

/* A member of the pool of a daemon that did not stop cleanly: its unit stopped, its container, slice,
 * workspace and socket directory removed. It was never a user's session, so nothing is stored or
 * audited. */
static int pool_clean_leftover(Manager *m, const char *id) {
        Leftover *l;
        int r;

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->manager = m;
        l->id = strdup(id);
        if (!l->id || asprintf(&l->unit, "ccdocker-session-%s.service", id) < 0 ||
            asprintf(&l->slice, "ccdocker-%s.slice", id) < 0 ||
            asprintf(&l->container, "ccdocker-%s", id) < 0) {
                leftover_free(l);
                return -ENOMEM;
        }
        log_info("pool: removing session %s, left in the warm pool before the daemon restarted", id);
        r = unit_stop(m->systemd_bus, l->unit, on_leftover_unit_stopped, l);
        if (r < 0)
                leftover_free(l);
        return r;
}

static int pool_clean_leftovers(Manager *m) {
        _cleanup_free_ char *dir = NULL;
        DIR *d;
        int r;

        if (asprintf(&dir, "%s/pool", m->config.state_dir) < 0)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        d = opendir(dir);
        if (!d)
                return -errno;
        for (struct dirent *de; (de = readdir(d));) {
                if (!session_id_is_valid(de->d_name))
                        continue;
                /* Handed over before the daemon went: a user's session now, adopted like any. */
                if (manager_get_session(m, de->d_name)) {
                        pool_unlink_marker(m, de->d_name);
                        continue;
                }
                r = pool_clean_leftover(m, de->d_name);
                if (r < 0)
                        log_warning_errno(r, "pool: could not clean up session %s: %m", de->d_name);
        }
        closedir(d);
        return 0;
}

/* ---- deadlines ----
 *
 * systemd (252 here) cannot change RuntimeMaxSec= of a running unit ("Cannot set property
 * RuntimeMaxUSec"), so a member's unit is started without one and a handed-over session's
 * timeout_seconds is kept here: a CLOCK_REALTIME timer at its creation time plus the timeout, which ends
 * it the way a unit's RuntimeMaxSec would (failed, session_end_describe()'s timeout reason, unit
 * killed). A marker <StateDirectory>/pool-deadlines/<id> keeps it over a restart: pool_new() arms the
 * timers again from the stored sessions' creation time and config. */

static char *deadline_marker(Manager *m, const char *id) {
        char *p;

        return asprintf(&p, "%s/pool-deadlines%s%s", m->config.state_dir, id ? "/" : "", strempty(id)) < 0
                ? NULL
                : p;
}

static void deadline_free(Deadline *d) {
        sd_event_source_disable_unref(d->timer);
        free(d);
}

static void deadline_drop(Pool *p, Deadline *d) {
        _cleanup_free_ char *marker = deadline_marker(p->manager, d->id);

        for (Deadline **i = &p->deadlines; *i; i = &(*i)->next)
                if (*i == d) {
                        *i = d->next;
                        break;
                }
        if (marker && unlink(marker) < 0 && errno != ENOENT)
                log_warning_errno(errno, "pool: could not remove %s: %m", marker);
        deadline_free(d);
}

static int on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        Deadline *d = userdata;
        Pool *p = d->pool;
        Session *s = manager_get_session(p->manager, d->id);

        if (s && !session_state_is_final(s->state)) {
                _cleanup_free_ char *reason = NULL;
                SessionState next;

                reason = session_end_describe(
                        &(SessionEndFacts){ .stop_uid = (uid_t) -1,
                                            .memory = s->config ? s->config->memory : 0,
                                            .timeout_sec = s->config ? s->config->timeout_sec : 0 },
                        &(UnitState){ .result = "timeout", .exists = true },
                        false,
                        &next);
                log_info("session %s: its timeout_seconds passed", s->id);
                session_fail_and_stop(s, reason ?: "timeout");
        }
        deadline_drop(p, d);
        return 0;
}

static int pool_arm_deadline(Pool *p, Session *s) {
        Deadline *d;
        uint64_t at;
        int r;

        if (!s->config || s->config->timeout_sec == 0)
                return 0;
        at = add_sat(s->created_usec, s->config->timeout_sec * USEC_PER_SEC);
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->pool = p;
        memcpy(d->id, s->id, sizeof(d->id) - 1);
        r = sd_event_add_time(p->manager->event, &d->timer, CLOCK_REALTIME, at, 0, on_deadline, d);
        if (r < 0) {
                free(d);
                return r;
        }
        (void) sd_event_source_set_description(d->timer, "pool-deadline");
        d->next = p->deadlines;
        p->deadlines = d;
        return 0;
}

/* A handed-over session's deadline, and its marker for a restart. */
static int pool_add_deadline(Pool *p, Session *s) {
        _cleanup_free_ char *dir = deadline_marker(p->manager, NULL),
                            *marker = deadline_marker(p->manager, s->id);
        int fd, r;

        if (!s->config || s->config->timeout_sec == 0)
                return 0;
        if (!dir || !marker)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        close(fd);
        return pool_arm_deadline(p, s);
}

static void pool_load_deadlines(Pool *p) {
        _cleanup_free_ char *dir = deadline_marker(p->manager, NULL);
        DIR *d;

        if (!dir || !(d = opendir(dir)))
                return;
        for (struct dirent *de; (de = readdir(d));) {
                Session *s;

                if (!session_id_is_valid(de->d_name))
                        continue;
                s = manager_get_session(p->manager, de->d_name);
                if (s && !session_state_is_final(s->state) && pool_arm_deadline(p, s) >= 0)
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        log_warning_errno(errno, "pool: could not remove %s/%s: %m", dir, de->d_name);
        }
        closedir(d);
}

/* ---- members ---- */

static bool member_ready(const Session *s) {
        return s->state == SESSION_IDLE && s->init_connected && s->channel && !s->stop_requested;
}

static int pool_add_member(Pool *p) {
        Manager *m = p->manager;
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        _cleanup_(session_unrefp) Session *s = NULL;
        _cleanup_free_ char *marker = NULL;
        _cleanup_close_ int fd = -EBADF;
        Session **n;
        int r;

        c = session_config_new_default(&m->config);
        if (!c)
                return -ENOMEM;
        c->timeout_sec = 0; /* its unit has no RuntimeMaxSec: the caller's is a deadline (above) */
        r = session_new(m, &c, (uid_t) -1, NULL, &s);
        if (r < 0)
                return r;
        s->pooled = true;

        marker = pool_marker(m, s->id);
        if (!marker)
                return -ENOMEM;
        fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_warning_errno(errno, "pool: could not create %s: %m", marker);
        n = reallocarray(p->members, p->n_members + 1, sizeof(*n));
        if (!n) {
                (void) unlink(marker);
                return -ENOMEM;
        }
        p->members = n;
        p->members[p->n_members++] = session_ref(s);
        log_debug("pool: starting session %s", s->id);
        /* A failure ends it (session_set_state() tells the pool); the tick takes it out. */
        (void) session_start(s);
        return 0;
}

static unsigned pool_live(Pool *p) {
        unsigned n = 0;

        for (size_t i = 0; i < p->n_members; i++)
                n += !session_state_is_final(p->members[i]->state) && !p->members[i]->stop_requested;
        return n;
}

static void pool_fill(Pool *p) {
        unsigned live = pool_live(p);

        for (; live < p->manager->config.pool_size; live++)
                if (pool_add_member(p) < 0) {
                        p->next_fill_usec = now_usec(CLOCK_MONOTONIC) + POOL_BACKOFF_USEC;
                        break;
                }
}

static void pool_schedule(Pool *p, uint64_t usec) {
        uint64_t when = add_sat(now_usec(CLOCK_MONOTONIC), usec);

        if (sd_event_source_set_time(p->timer, when) < 0 ||
            sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT) < 0)
                log_warning("pool: could not schedule its next look at its members");
}

static int on_pool_tick(sd_event_source *source, uint64_t usec, void *userdata) {
        Pool *p = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        size_t k = 0;

        for (size_t i = 0; i < p->n_members; i++) {
                Session *s = p->members[i];

                /* Gone once nothing else holds it: its container's removal, its workspace's. */
                if (session_state_is_final(s->state) && s->cleaned_up && s->n_ref == 1) {
                        pool_unlink_marker(p->manager, s->id);
                        session_unref(s);
                        continue;
                }
                if (!session_state_is_final(s->state))
                        session_check_heartbeat(s, event_now_usec(p->manager->event, CLOCK_MONOTONIC));
                p->members[k++] = s;
        }
        p->n_members = k;
        /* Deadlines of sessions that ended or went before their timeout: one each, not a day's worth. */
        for (Deadline *d = p->deadlines, *next; d; d = next) {
                Session *s = manager_get_session(p->manager, d->id);

                next = d->next;
                if (!s || session_state_is_final(s->state))
                        deadline_drop(p, d);
        }
        if (!p->stopping && now >= p->next_fill_usec)
                pool_fill(p);
        if (p->stopping && p->n_members == 0)
                return 0;
        pool_schedule(p, p->stopping ? POOL_TICK_STOPPING_USEC : POOL_TICK_USEC);
        return 0;
}

int pool_new(Manager *m, Pool **ret) {
        _cleanup_free_ Pool *p = NULL;
        int r;

        r = pool_clean_leftovers(m);
        if (r < 0)
                log_warning_errno(r, "pool: could not look for what a previous daemon's pool left: %m");
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->manager = m;
        /* Also with PoolSize=0: sessions handed over before a restart keep their deadlines. */
        pool_load_deadlines(p);
        r = sd_event_add_time(m->event, &p->timer, CLOCK_MONOTONIC, 0, 0, on_pool_tick, p);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(p->timer, "pool");
        if (m->config.pool_size == 0)
                (void) sd_event_source_set_enabled(p->timer, SD_EVENT_OFF);
        else
                log_info("pool: keeping %u session(s) started", m->config.pool_size);
        *ret = TAKE_PTR(p);
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;
        sd_event_source_disable_unref(p->timer);
        while (p->deadlines) {
                Deadline *d = p->deadlines;

                p->deadlines = d->next;
                deadline_free(d); /* the marker stays: the next start arms it again */
        }
        for (size_t i = 0; i < p->n_members; i++) {
                Session *s = p->members[i];

                /* As manager_free() does for the registry's: the watch and the sockets go before the
                 * session, whoever else still holds it. The marker stays for the next start. */
                s->unit_watch = sd_bus_slot_unref(s->unit_watch);
                s->egress = egress_session_free(s->egress);
                s->model = model_proxy_session_free(s->model);
                session_unref(s);
        }
        free(p->members);
        return mfree(p);
}

unsigned pool_n_members(Pool *p) {
        return p ? (unsigned) p->n_members : 0;
}

void pool_member_changed(Session *s) {
        Pool *p = s->manager->pool;

        if (!p)
                return;
        if (s->state == SESSION_IDLE && s->pool_active_usec == 0)
                s->pool_active_usec = now_usec(CLOCK_MONOTONIC);
        if (session_state_is_final(s->state)) {
                log_debug("pool: session %s ended: %s", s->id, strempty(s->state_reason));
                if (s->pool_active_usec == 0 && !p->stopping && !s->stop_requested)
                        p->next_fill_usec = now_usec(CLOCK_MONOTONIC) + POOL_BACKOFF_USEC;
        }
        pool_schedule(p, 0);
}

void pool_shutdown(Pool *p) {
        if (!p || p->stopping || p->manager->config.pool_size == 0)
                return;
        p->stopping = true;
        for (size_t i = 0; i < p->n_members; i++) {
                Session *s = p->members[i];

                if (session_state_is_final(s->state) || s->stop_requested)
                        continue;
                /* As session_stop() would, without its audit record (no one's session was stopped):
                 * a member still starting stops once its container or unit is there. */
                s->stop_requested = s->stop_force = true;
                if (s->unit_was_active)
                        session_fail_and_stop(s, "the daemon stopped");
        }
        pool_schedule(p, 0);
}

/* ---- the hand-over ---- */

bool pool_can_serve(Manager *m, const SessionConfig *c, const Session *parent) {
        const DaemonConfig *dc = &m->config;

        /* A child's slice nests in its parent's, which a started member's cannot. */
        if (parent || !c)
                return false;
        /* What the container was made with, or what ccdocker-init wrote from the hello. */
        if (c->workspace_type != WORKSPACE_EPHEMERAL || !streq_ptr(c->image, dc->default_image) ||
            !streq_ptr(c->network, "none") || c->environment || c->secrets || c->allowed_hosts ||
            c->task_type || c->context || c->mcp_servers || c->skills || c->permission_mode ||
            c->allowed_tools || c->mcp_overrides)
                return false;
        /* The container's own limits are the defaults; the unit's, lowered at hand-over, bind it. */
        return c->memory <= dc->default_memory && c->cpu_millis <= dc->default_cpu_millis &&
                c->tasks <= dc->default_tasks;
}

int pool_take(Pool *p, SessionConfig **config, uid_t uid, Session *parent, Session **ret) {
        Session *s = NULL;
        char *slice;
        size_t i;

        if (!p || p->stopping || !pool_can_serve(p->manager, *config, parent))
                return 0;
        for (i = 0; i < p->n_members; i++)
                if (member_ready(p->members[i]) && streq_ptr(p->members[i]->image, (*config)->image)) {
                        s = p->members[i];
                        break;
                }
        if (!s) {
                log_debug("pool: no started session to hand over; starting one cold");
                return 0;
        }
        slice = strdup(s->slice);
        if (!slice)
                return 0;
        memmove(p->members + i, p->members + i + 1, (p->n_members - i - 1) * sizeof(*p->members));
        p->n_members--;

        /* From here it is the caller's new session: its config, owner and creation time, starting until
         * its limits are on the unit. The pool's reference is the caller's. */
        session_config_free(s->config);
        s->config = TAKE_PTR(*config);
        free(s->config->slice);
        s->config->slice = slice;
        s->owner_uid = uid;
        s->created_usec = now_usec(CLOCK_REALTIME);
        s->state = SESSION_STARTING;
        s->state_reason = mfree(s->state_reason);
        s->pooled = false;
        s->pool_handover = true;
        log_info("session %s: handed over from the warm pool", s->id);
        p->next_fill_usec = now_usec(CLOCK_MONOTONIC) + POOL_REFILL_DELAY_USEC;
        pool_schedule(p, POOL_REFILL_DELAY_USEC);
        *ret = s;
        return 1;
}

typedef struct HandOver {
        Session *session;
        unsigned pending;
        bool failed;
        char *error;
} HandOver;

static void on_limits_set(int r, const sd_bus_error *error, void *userdata) {
        HandOver *h = userdata;
        Session *s = h->session;

        if (r < 0)
                h->failed = true;
        if (r < 0 && !h->error &&
            asprintf(
                    &h->error,
                    "could not apply the session's limits to its unit: %s",
                    error && error->message ? error->message : strerror(-r)) < 0)
                h->error = NULL;
        if (--h->pending > 0)
                return;
        s->pool_handover = false;
        if (!session_state_is_final(s->state)) {
                if (h->failed)
                        session_fail_and_stop(
                                s, h->error ?: "could not apply the session's limits to its unit");
                else {
                        r = s->manager->pool ? pool_add_deadline(s->manager->pool, s) : -ENOMEDIUM;
                        if (r < 0)
                                log_warning_errno(
                                        r, "session %s: could not keep its timeout_seconds: %m", s->id);
                        session_set_state(s, SESSION_IDLE, NULL);
                        session_deliver_next(s);
                }
        }
        session_unref(s);
        free(h->error);
        free(h);
}

int pool_handover_start(Session *s) {
        const SessionConfig *c = s->config;
        HandOver *h;
        int r;

        /* Recorded as the caller's (manager_create_session()): no longer the pool's to clean. */
        pool_unlink_marker(s->manager, s->id);

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->session = session_ref(s);

        /* The slice first (it caps the session and what it spawns), then the unit. Its timeout_seconds is
         * a deadline of the pool's, once both are set (above). */
        UnitLimits limits[] = {
                { .name = s->slice,
                  .memory_max = c->memory,
                  .cpu_millis = c->cpu_millis,
                  .tasks_max = c->tasks },
                {
                        .name = s->unit,
                        .memory_max = c->memory,
                        .cpu_millis = c->cpu_millis,
                        .tasks_max = c->tasks,
                },
        };
        for (size_t i = 0; i < ELEMENTSOF(limits); i++) {
                r = unit_set_limits(s->manager->systemd_bus, &limits[i], on_limits_set, h);
                if (r < 0) {
                        log_warning_errno(
                                r, "session %s: could not ask systemd to set its limits: %m", s->id);
                        if (h->pending == 0) {
                                s->pool_handover = false;
                                session_unref(h->session);
                                free(h);
                                session_fail_and_stop(s, "could not apply the session's limits to its unit");
                                return r;
                        }
                        h->failed = true;
                        break;
                }
                h->pending++;
        }
        return 0;
}

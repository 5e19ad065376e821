/* The manager: the daemon's state. It owns the event loop, the bus connections, the store, the podman
 * client and the registry of sessions, enforces the session limits, and re-adopts sessions after a
 * restart. */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "config.h"
#include "egress-proxy.h"
#include "events.h"
#include "hashmap.h"
#include "model-proxy.h"
#include "podman.h"
#include "pool.h"
#include "questions.h"
#include "runtime.h"
#include "secrets.h"
#include "session.h"
#include "store.h"

/* The core's publishers: what the D-Bus objects (manager-dbus.c, session-dbus.c) are told. The core calls
 * nothing of theirs but through this table, so that the API sits on the core and not in it; without a
 * publisher (unit tests) nothing is published on a bus. */
typedef struct ManagerPublisher {
        /* Publishes the objects on m->bus, once it is connected and before the name is taken. */
        int (*attach)(Manager *m);
        /* At once: a session was created (before its creator is answered) or removed. */
        void (*session_new)(Manager *m, Session *s);
        void (*session_removed)(Manager *m, Session *s);
        /* Once per event-loop turn: what changed on a session still published (SessionChange bits). */
        void (*session_changed)(Manager *m, Session *s, unsigned changes);
        /* At once: a question of s was asked (status "pending"), answered or timed out (questions.c). */
        void (*question)(
                Manager *m,
                Session *s,
                const char *id,
                const char *kind,
                const char *status,
                const char *text);
} ManagerPublisher;

struct Manager {
        DaemonConfig config;
        sd_event *event;
        sd_bus *bus;         /* the API bus: org.ccdocker1 lives here */
        sd_bus *systemd_bus; /* where systemd is reached; may be the same bus */
        Store *store;
        PodmanClient *podman;
        Runtime *runtimes[_RUNTIME_KIND_MAX]; /* session-runtime.h; podman's wraps podman above */
        char *systemd_cgroup;                 /* the systemd manager's own cgroup (Runtime=docker) */
        EventBus *events;
        SecretStore *secrets;
        EgressProxy *egress;
        ModelProxy *model; /* NULL without a model credential */
        ModelPrice *prices;
        size_t n_prices;
        sd_event_source *heartbeat_timer;
        sd_event_source *gc_timer; /* removes ended sessions past EndedSessionRetentionSec */

        RateLimit log_limit; /* ccdocker-init's log lines of all sessions together */

        /* --system: uids polkit recently allowed org.ccdocker1.manage-sessions, so that the synchronous
         * property reads of other owners' sessions can follow that answer (manager_caller_sees()). */
        struct {
                uid_t uid;
                uint64_t until_usec; /* CLOCK_MONOTONIC */
        } admins[8];

        const ManagerPublisher *publisher; /* may be NULL */
        Session *publish_queue;            /* sessions with changes to publish, first queued first */
        Session *publish_queue_tail;
        json_t *notices;                 /* Redis notices [[channel, message], ...], oldest first */
        sd_event_source *publish_source; /* the one defer source that flushes both */

        Hashmap *session_index; /* the registry by id (borrowed keys: each session's own id) */
        Session **sessions;     /* ... and in creation order, for listing: walked only in manager.c */
        size_t n_sessions;
        size_t n_session_objects; /* allocated, registered or not (a removed one may still be referenced) */
        sd_event_source *shutdown_timer;
        uint64_t shutdown_deadline;

        Questions *questions; /* notices and questions for a human (questions.c) */
        Pool *pool;           /* the warm pool (pool.c); NULL with PoolSize=0 */
};

int manager_new(DaemonConfig *config, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Connects the buses, opens the store, creates the podman client, publishes the objects, loads and
 * re-adopts the stored sessions, and takes the bus name. */
int manager_startup(Manager *m);

int manager_run(Manager *m);

Session *manager_get_session(Manager *m, const char *id);
Session *manager_get_session_by_path(Manager *m, const char *path);
int manager_add_session(Manager *m, Session *s);
/* Unpublishes s (SessionRemoved), tells its parent's Children, and drops the registry's reference. */
void manager_remove_session(Manager *m, Session *s);

/* The registry, for those who list it: a new array (the caller frees it, not the sessions, which it
 * borrows) in creation order, of every session, or of parent's children (those not removed) when parent
 * is not NULL. */
int manager_list_sessions(Manager *m, const Session *parent, Session ***ret, size_t *ret_n);
/* Sessions in the registry. */
size_t manager_n_sessions(Manager *m);
/* Queues s for the next flush (session_mark_changed() calls it). */
void manager_queue_publish(Manager *m, Session *s);
/* Queues a PUBLISH of msg on channel for the next flush, after those queued before it. */
void manager_queue_notice(Manager *m, const char *channel, json_t *msg);
/* Notices held between two flushes; one more sends them at once. */
#define MANAGER_NOTICES_MAX 1024
/* Publishes every queued change now: the flush of the publishing source, also run at shutdown. */
void manager_flush_changes(Manager *m);
/* Whether uid may have one more live session (a child of parent, or top-level when NULL): -EUSERS
 * (CORE_ERROR_LIMIT, naming the limit) when MaxSessions are live on the host, MaxSessionsPerOwner are
 * uid's, or MaxTreeSessions are in parent's tree. */
int manager_check_quota(Manager *m, uid_t uid, Session *parent, CoreError *e);
/* Creates, records, announces and audits a session (a child of parent, or top-level when NULL), with its
 * initial prompt queued; the caller starts it (session_start()) after replying. Takes *config.
 * -EUSERS (manager_check_quota()) or another negative errno, with *e set. */
int manager_create_session(
        Manager *m, SessionConfig **config, uid_t uid, Session *parent, Session **ret, CoreError *e);
/* What root and all its descendants (those still known) used of the model. */
void manager_subtree_usage(Manager *m, Session *root, StoreUsage *ret);
/* Sessions not stopped or failed. */
unsigned manager_live_sessions(Manager *m);

/* Who sees a session's metadata (docs/security.md): on the user bus everyone on it (the user); on the
 * system bus root, its owner, and a uid that polkit allowed org.ccdocker1.manage-sessions within the last
 * MANAGER_ADMIN_CACHE_SEC. Others are told it does not exist. */
bool manager_caller_sees(Manager *m, uid_t uid, const Session *s);
/* Records that polkit allowed uid to manage any session, for MANAGER_ADMIN_CACHE_SEC. */
void manager_admin_seen(Manager *m, uid_t uid);
#define MANAGER_ADMIN_CACHE_SEC 60

/* Whether uid may use the secret name in a new session: -ENOKEY when no such secret is configured,
 * -EPERM when the daemon's policy refuses it (AllowedSecrets= in --user mode; audited), 0 when granted,
 * 1 when polkit must decide (--system mode, a caller other than root). *e says why not. */
int manager_check_secret(Manager *m, uid_t uid, const char *name, CoreError *e);

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
#include "model-proxy.h"
#include "podman.h"
#include "secrets.h"
#include "session.h"
#include "store.h"

typedef struct SessionTable SessionTable;

struct Manager {
        DaemonConfig config;
        sd_event *event;
        sd_bus *bus;         /* the API bus: org.ccdocker1 lives here */
        sd_bus *systemd_bus; /* where systemd is reached; may be the same bus */
        Store *store;
        PodmanClient *podman;
        EventBus *events;
        SecretStore *secrets;
        EgressProxy *egress;
        ModelProxy *model; /* NULL without a model credential */
        ModelPrice *prices;
        size_t n_prices;
        sd_event_source *heartbeat_timer;

        Session **sessions; /* registry, in creation order */
        size_t n_sessions;
        size_t n_session_objects; /* allocated, registered or not (a removed one may still be referenced) */
        sd_event_source *shutdown_timer;
        uint64_t shutdown_deadline;
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
void manager_remove_session(Manager *m, Session *s);
/* Creates, records, announces and audits a session (a child of parent, or top-level when NULL), with its
 * initial prompt queued; the caller starts it (session_start()) after replying. Takes *config.
 * -EUSERS when MaxSessions are live. */
int manager_create_session(Manager *m, SessionConfig **config, uid_t uid, Session *parent, Session **ret);
/* What root and all its descendants (those still known) used of the model. */
void manager_subtree_usage(Manager *m, Session *root, StoreUsage *ret);
/* Sessions not stopped or failed. */
unsigned manager_live_sessions(Manager *m);

/* Publishing on the bus (manager-dbus.c). */
int manager_dbus_register(Manager *m);
void manager_dbus_emit_session_new(Manager *m, Session *s);
void manager_dbus_emit_session_removed(Manager *m, Session *s);

/* session-dbus.c */
int session_dbus_register(Manager *m);
void session_dbus_emit_changed(Session *s, const char *property, ...);

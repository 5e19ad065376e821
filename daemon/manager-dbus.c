/* org.ccdocker1.Manager at /org/ccdocker1: CreateSession, ListSessions, GetSession and the SessionNew and
 * SessionRemoved signals (dbus/org.ccdocker1.Manager.xml). The handlers marshal, authorise and call into
 * the manager and the session; CreateSession answers once the image is known to exist and the session is
 * recorded, and the container and unit follow asynchronously as state changes. */
#define _GNU_SOURCE
#include "manager-dbus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "audit.h"
#include "cleanup.h"
#include "config-build.h"
#include "log.h"
#include "manager.h"
#include "polkit.h"
#include "session-dbus.h"
#include "session-runtime.h"
#include "util.h"
#include "validate.h"
#include "workspace.h"

typedef struct CreateRequest {
        Manager *manager;
        sd_bus_message *message;
        SessionConfig *config;
        uid_t uid;
        size_t secret_index; /* the next secret to authorise */
} CreateRequest;

static CreateRequest *create_request_free(CreateRequest *req) {
        if (!req)
                return NULL;
        sd_bus_message_unref(req->message);
        session_config_free(req->config);
        return mfree(req);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(CreateRequest *, create_request_free);

static void reply_error(sd_bus_message *message, const char *name, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

static void reply_error(sd_bus_message *message, const char *name, const char *format, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;

        va_start(ap, format);
        (void) sd_bus_error_setfv(&error, name, format, ap);
        va_end(ap);
        (void) sd_bus_reply_method_error(message, &error);
}

static void on_image_checked(int r, long status, json_t *reply, const char *error, void *userdata) {
        _cleanup_(create_request_freep) CreateRequest *req = userdata;
        _cleanup_(session_unrefp) Session *s = NULL;
        Manager *m = req->manager;
        const char *image = req->config->image;
        CoreError e;

        if (r == -ENOENT) {
                reply_error(
                        req->message,
                        CCDOCKER_ERROR_NO_SUCH_IMAGE,
                        "CreateSession: image '%s' does not exist in %s's storage",
                        image,
                        runtime_kind_to_string(manager_runtime_kind(m)));
                return;
        }
        if (r < 0) {
                reply_error(
                        req->message,
                        SD_BUS_ERROR_FAILED,
                        "CreateSession: could not ask %s whether image '%s' exists: %s",
                        runtime_kind_to_string(manager_runtime_kind(m)),
                        image,
                        error ? error : strerror(-r));
                return;
        }
        r = manager_create_session(m, &req->config, req->uid, NULL, &s, &e);
        if (r < 0) {
                (void) bus_reply_core_error(req->message, "CreateSession", &e);
                return;
        }

        r = sd_bus_reply_method_return(req->message, "so", s->id, s->object_path);
        if (r < 0)
                log_warning_errno(r, "CreateSession: could not send the reply: %m");

        (void) session_start(s);
}

static int create_continue(CreateRequest *req);

static void on_secret_authorized(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        CreateRequest *req = userdata;
        const char *name = req->config->secrets[req->secret_index];

        if (r <= 0) {
                audit_log(
                        AUDIT_EVENT_DENIED,
                        NULL,
                        NULL,
                        NULL,
                        req->uid,
                        "CreateSession: secret %s denied for uid %u",
                        name,
                        (unsigned) req->uid);
                reply_error(
                        req->message,
                        CCDOCKER_ERROR_ACCESS_DENIED,
                        "CreateSession: not authorized to use secret '%s' (polkit action %s, detail secret=%s)%s%s",
                        name,
                        POLKIT_ACTION_USE_SECRET,
                        name,
                        error && error->message ? ": " : "",
                        error && error->message ? error->message : "");
                create_request_free(req);
                return;
        }
        req->secret_index++;
        (void) create_continue(req);
}

/* Each secret asked for must exist, and the caller may use it (manager_check_secret(): AllowedSecrets= in
 * --user mode; in --system mode polkit decides, which is asked here). Returns 1 when an answer is
 * pending (the request is owned by the callback), 0 when all are granted, < 0 after replying an error. */
static int create_check_secrets(CreateRequest *req) {
        Manager *m = req->manager;
        char **secrets = req->config->secrets;
        CoreError e;
        int r;

        for (; secrets && secrets[req->secret_index]; req->secret_index++) {
                const char *name = secrets[req->secret_index];
                const char *details[] = { "secret", name, NULL };

                r = manager_check_secret(m, req->uid, name, &e);
                if (r < 0) {
                        (void) bus_reply_core_error(req->message, "CreateSession", &e);
                        return r;
                }
                if (r == 0)
                        continue;
                r = polkit_check_async(
                        m->bus, req->message, POLKIT_ACTION_USE_SECRET, details, on_secret_authorized, req);
                if (r < 0) {
                        reply_error(
                                req->message,
                                CCDOCKER_ERROR_ACCESS_DENIED,
                                "CreateSession: could not ask polkit about secret '%s': %s",
                                name,
                                strerror(-r));
                        return r;
                }
                return 1;
        }
        return 0;
}

static void create_check_image(CreateRequest *req) {
        int r;

        r = runtime_image_exists(
                manager_runtime(req->manager, manager_runtime_kind(req->manager)),
                req->config->image,
                on_image_checked,
                req);
        if (r < 0) {
                reply_error(
                        req->message,
                        SD_BUS_ERROR_FAILED,
                        "CreateSession: could not reach %s: %s",
                        runtime_kind_to_string(manager_runtime_kind(req->manager)),
                        strerror(-r));
                create_request_free(req);
        }
}

static void on_workspace_checked(
        int r, const char *path, dev_t dev, ino_t ino, const char *message, void *userdata) {
        CreateRequest *req = userdata;
        char *copy;

        if (r < 0) {
                reply_error(
                        req->message,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'workspace': %s",
                        message);
                create_request_free(req);
                return;
        }
        copy = strdup(path);
        if (!copy) {
                reply_error(req->message, SD_BUS_ERROR_NO_MEMORY, "CreateSession: out of memory");
                create_request_free(req);
                return;
        }
        free(req->config->workspace_path);
        req->config->workspace_path = copy;
        req->config->workspace_dev = dev;
        req->config->workspace_ino = ino;
        req->config->workspace_checked = true;
        create_check_image(req);
}

static int create_continue(CreateRequest *req) {
        int r;

        r = create_check_secrets(req);
        if (r != 0) {
                if (r < 0)
                        create_request_free(req);
                return 1;
        }

        /* A host workspace, with the caller's own rights (workspace.h), once the caller is authorised. */
        if (req->config->workspace_type == WORKSPACE_HOST) {
                r = workspace_check_async(
                        req->manager->event,
                        req->uid,
                        req->config->workspace_path,
                        req->manager->config.workspace_roots,
                        on_workspace_checked,
                        req);
                if (r < 0) {
                        reply_error(
                                req->message,
                                SD_BUS_ERROR_FAILED,
                                "CreateSession: could not check the workspace: %s",
                                strerror(-r));
                        create_request_free(req);
                }
                return 1;
        }
        create_check_image(req);
        return 1;
}

static void on_create_authorized(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        CreateRequest *req = userdata;

        if (r <= 0) {
                audit_log(
                        AUDIT_EVENT_DENIED,
                        NULL,
                        NULL,
                        NULL,
                        req->uid,
                        "CreateSession denied for uid %u: %s",
                        (unsigned) req->uid,
                        error && error->message ? error->message : "not authorized");
                reply_error(
                        req->message,
                        CCDOCKER_ERROR_ACCESS_DENIED,
                        "CreateSession: not authorized (polkit action %s)%s%s",
                        POLKIT_ACTION_CREATE,
                        error && error->message ? ": " : "",
                        error && error->message ? error->message : "");
                create_request_free(req);
                return;
        }
        (void) create_continue(req);
}

static int method_create_session(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        CoreError e;
        int r;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->manager = m;
        req->message = sd_bus_message_ref(message);

        r = session_config_from_bus(message, &m->config, &req->config, error);
        if (r < 0)
                return r;
        r = bus_message_caller_uid(message, &req->uid);
        if (r < 0)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_ACCESS_DENIED,
                        "CreateSession: could not identify the caller: %s",
                        strerror(-r));
        /* Refused before polkit and podman are asked; asked again when the session is made. */
        r = manager_check_quota(m, req->uid, NULL, &e);
        if (r < 0)
                return sd_bus_error_setf(error, core_error_bus_name(e.kind), "CreateSession: %s", e.message);

        if (m->config.mode == DAEMON_SYSTEM) {
                r = polkit_check_async(
                        m->bus, message, POLKIT_ACTION_CREATE, NULL, on_create_authorized, req);
                if (r < 0)
                        return sd_bus_error_setf(
                                error,
                                CCDOCKER_ERROR_ACCESS_DENIED,
                                "CreateSession: could not ask polkit: %s",
                                strerror(-r));
                TAKE_PTR(req);
                return 1;
        }
        return create_continue(TAKE_PTR(req));
}

/* ---- ListSessions and GetSession: what the caller sees (manager_caller_sees(), docs/security.md) ---- */

static int reply_list(Manager *m, sd_bus_message *message, uid_t uid) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ Session **sessions = NULL;
        size_t n;
        int r;

        r = manager_list_sessions(m, NULL, &sessions, &n);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssssto)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                Session *s = sessions[i];

                if (!manager_caller_sees(m, uid, s))
                        continue;
                r = sd_bus_message_append(
                        reply,
                        "(ssssto)",
                        s->id,
                        strempty(s->parent_id),
                        session_state_to_string(s->state),
                        s->unit,
                        s->created_usec,
                        s->object_path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int reply_get(Manager *m, sd_bus_message *message, uid_t uid) {
        const char *id;
        Session *s;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        s = manager_get_session(m, id);
        /* One answer whether it does not exist or belongs to someone the caller may not see. */
        if (!s || !manager_caller_sees(m, uid, s))
                return sd_bus_reply_method_errorf(
                        message, CCDOCKER_ERROR_NO_SUCH_SESSION, "GetSession: no session '%s'", id);
        return sd_bus_reply_method_return(message, "o", s->object_path);
}

typedef struct LookupRequest {
        Manager *manager;
        uid_t uid;
        int (*reply)(Manager *m, sd_bus_message *message, uid_t uid);
} LookupRequest;

static void on_lookup_authorized(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        LookupRequest *req = userdata;

        /* Not allowed (or polkit could not say): the caller sees its own sessions only. */
        if (r > 0)
                manager_admin_seen(req->manager, req->uid);
        r = req->reply(req->manager, call, req->uid);
        if (r < 0)
                (void) sd_bus_reply_method_errno(call, r, NULL);
        free(req);
}

/* --system, a caller other than root: other owners' sessions only if polkit allows it
 * org.ccdocker1.manage-sessions (remembered for MANAGER_ADMIN_CACHE_SEC). */
static int lookup(
        Manager *m,
        sd_bus_message *message,
        const char *method,
        int (*reply)(Manager *m, sd_bus_message *message, uid_t uid),
        sd_bus_error *error) {
        LookupRequest *req;
        uid_t uid = 0;
        int r;

        if (m->config.mode == DAEMON_USER)
                return reply(m, message, uid);
        r = bus_message_caller_uid(message, &uid);
        if (r < 0)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_ACCESS_DENIED,
                        "%s: could not identify the caller: %s",
                        method,
                        strerror(-r));
        if (uid == 0)
                return reply(m, message, uid);
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (LookupRequest){ .manager = m, .uid = uid, .reply = reply };
        r = polkit_check_async(m->bus, message, POLKIT_ACTION_MANAGE_ANY, NULL, on_lookup_authorized, req);
        if (r < 0) {
                free(req);
                return reply(m, message, uid);
        }
        return 1;
}

static int method_list_sessions(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return lookup(userdata, message, "ListSessions", reply_list, error);
}

static int method_get_session(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *id;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        return lookup(userdata, message, "GetSession", reply_get, error);
}

static int property_version(
        sd_bus *bus,
        const char *path,
        const char *interface,
        const char *property,
        sd_bus_message *reply,
        void *userdata,
        sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS(
                "CreateSession",
                SD_BUS_ARGS("a{sv}", config),
                SD_BUS_RESULT("s", id, "o", session),
                method_create_session,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "ListSessions",
                SD_BUS_NO_ARGS,
                SD_BUS_RESULT("a(ssssto)", sessions),
                method_list_sessions,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "GetSession",
                SD_BUS_ARGS("s", id),
                SD_BUS_RESULT("o", session),
                method_get_session,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("SessionNew", SD_BUS_ARGS("s", id, "o", session), 0),
        SD_BUS_SIGNAL_WITH_ARGS("SessionRemoved", SD_BUS_ARGS("s", id, "o", session), 0),
        SD_BUS_VTABLE_END,
};

static int manager_dbus_attach(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(
                m->bus, NULL, "/org/ccdocker1", "org.ccdocker1.Manager", manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "could not publish org.ccdocker1.Manager: %m");
        r = questions_dbus_attach(m);
        if (r < 0)
                return r;
        return session_dbus_attach(m);
}

static void manager_dbus_send_session_signal(Manager *m, Session *s, const char *member) {
        int r;

        if (!m->bus)
                return;
        r = sd_bus_emit_signal(
                m->bus, "/org/ccdocker1", "org.ccdocker1.Manager", member, "so", s->id, s->object_path);
        if (r < 0)
                log_warning_errno(r, "could not emit %s for %s: %m", member, s->id);
}

static void manager_dbus_session_new(Manager *m, Session *s) {
        manager_dbus_send_session_signal(m, s, "SessionNew");
}

static void manager_dbus_session_removed(Manager *m, Session *s) {
        manager_dbus_send_session_signal(m, s, "SessionRemoved");
}

const ManagerPublisher manager_dbus_publisher = {
        .attach = manager_dbus_attach,
        .session_new = manager_dbus_session_new,
        .session_removed = manager_dbus_session_removed,
        .session_changed = session_dbus_send_changed,
        .question = questions_dbus_question,
};

int bus_reply_core_error(sd_bus_message *message, const char *method, const CoreError *e) {
        return sd_bus_reply_method_errorf(
                message,
                core_error_bus_name(e->kind),
                "%s%s%s",
                strempty(method),
                method ? ": " : "",
                e->message);
}

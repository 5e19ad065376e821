/* polkit_check_async(): one asynchronous CheckAuthorization per question, with the caller's unique bus
 * name as the subject (system-bus-name: polkitd resolves the peer itself, so there is no PID race), the
 * pattern of systemd's bus_verify_polkit_async() without its re-dispatching of the message: the caller
 * resumes in its callback instead. Root is answered without asking polkit, but through a defer source
 * on the bus's event loop so that the callback never runs inside polkit_check_async() itself. A missing
 * polkitd is a denial ("polkit is not available"), never a silent pass. */
#include "polkit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"

/* Generous: with flags 0 polkitd answers at once, but its JavaScript rules may be slow on a loaded
 * host, and a late answer is better than a spurious denial. The caller's own D-Bus timeout (25 s by
 * default) bounds how long anyone waits for the method anyway. */
#define POLKIT_TIMEOUT_USEC (90ULL * 1000ULL * 1000ULL)

/* CheckAuthorizationFlags: none. Bit 1 would be AllowUserInteraction (see polkit_check_async()). */
#define POLKIT_CHECK_FLAGS_NONE 0U

struct polkit_query {
        sd_bus_message *call; /* referenced until cb has run */
        char *action;
        polkit_callback_t cb;
        void *userdata;
        sd_event_source *defer; /* the root shortcut's, else NULL */
};

static struct polkit_query *polkit_query_free(struct polkit_query *q) {
        if (!q)
                return NULL;
        (void) sd_event_source_disable_unref(q->defer);
        sd_bus_message_unref(q->call);
        free(q->action);
        return mfree(q);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct polkit_query *, polkit_query_free);

/* The callback gets a valid error pointer in every case, set only when r < 0, so that it may read
 * error->message without testing error for NULL first. */
static void polkit_query_finish(struct polkit_query *q, int r, const sd_bus_error *error) {
        static const sd_bus_error no_error = SD_BUS_ERROR_NULL;

        q->cb(r, q->call, error ?: &no_error, q->userdata);
}

static bool error_is_service_missing(const sd_bus_error *e) {
        return sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(polkit_query_freep) struct polkit_query *q = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const sd_bus_error *e;
        int authorized, challenge, r;

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (error_is_service_missing(e)) {
                        log_warning("polkit is not available, denying %s: %s", q->action, e->message);
                        (void) sd_bus_error_setf(
                                &error,
                                SD_BUS_ERROR_ACCESS_DENIED,
                                "polkit is not available to authorise %s: %s",
                                q->action,
                                e->message);
                        polkit_query_finish(q, -EACCES, &error);
                        return 0;
                }
                log_warning("polkit failed to check %s: %s: %s", q->action, e->name, e->message);
                polkit_query_finish(q, -sd_bus_error_get_errno(e), e);
                return 0;
        }

        r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_STRUCT, "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r >= 0)
                r = sd_bus_message_skip(reply, "a{ss}");
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0) {
                log_warning_errno(r, "polkit sent a malformed answer for %s: %m", q->action);
                (void) sd_bus_error_setf(
                        &error,
                        SD_BUS_ERROR_ACCESS_DENIED,
                        "polkit sent a malformed answer for %s: %s",
                        q->action,
                        strerror(-r));
                polkit_query_finish(q, -EBADMSG, &error);
                return 0;
        }

        /* A challenge means that authenticating could help; we did not allow interaction, so it is a no. */
        log_debug(
                "polkit: %s for %s: %s%s",
                sd_bus_message_get_sender(q->call),
                q->action,
                authorized ? "yes" : "no",
                !authorized && challenge ? " (authentication would be needed)" : "");
        polkit_query_finish(q, authorized ? 1 : 0, NULL);
        return 0;
}

static int on_root_defer(sd_event_source *s, void *userdata) {
        _cleanup_(polkit_query_freep) struct polkit_query *q = userdata;

        log_debug(
                "polkit: %s is root, %s allowed without asking",
                sd_bus_message_get_sender(q->call),
                q->action);
        polkit_query_finish(q, 1, NULL);
        return 0;
}

/* The effective uid as the bus daemon saw it when the caller connected (SO_PEERCRED), not anything
 * read from /proc: SD_BUS_CREDS_AUGMENT data is racy and not for authorisation. This is one round trip
 * to the bus daemon, as in systemd's sd_bus_query_sender_privilege(); polkitd is never waited for. */
static bool sender_is_root(sd_bus *bus, const char *sender) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t euid;
        int r;

        r = sd_bus_get_name_creds(bus, sender, SD_BUS_CREDS_EUID, &creds);
        if (r < 0) {
                log_debug_errno(r, "polkit: no bus credentials for %s, asking polkit: %m", sender);
                return false;
        }
        r = sd_bus_creds_get_euid(creds, &euid);
        if (r < 0) {
                log_debug_errno(r, "polkit: the bus gave no uid for %s, asking polkit: %m", sender);
                return false;
        }
        return euid == 0;
}

static int append_details(sd_bus_message *m, const char **details) {
        int r;

        r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, "{ss}");
        if (r < 0)
                return r;
        for (const char **d = details; d && *d; d += 2) {
                r = sd_bus_message_append(m, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

static int check_details(const char **details) {
        for (const char **d = details; d && *d; d += 2) {
                if (!d[1])
                        return log_error_errno(
                                EINVAL,
                                "polkit: detail '%s' has no value (details are key, value pairs)",
                                d[0]);
                /* polkitd refuses the whole question if a caller sets one of its own keys. */
                if (startswith(d[0], "polkit."))
                        return log_error_errno(
                                EINVAL, "polkit: detail key '%s' is reserved for polkit", d[0]);
        }
        return 0;
}

int polkit_check_async(
        sd_bus *bus,
        sd_bus_message *call,
        const char *action,
        const char **details,
        polkit_callback_t cb,
        void *userdata) {
        _cleanup_(polkit_query_freep) struct polkit_query *q = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const char *sender;
        int r;

        if (!bus || !call || isempty(action) || !cb)
                return -EINVAL;
        r = check_details(details);
        if (r < 0)
                return r;

        /* Only a bus connection has a sender to name as the subject. On a direct connection there is
         * nobody to ask about, and ccdockerd does not take those. */
        sender = sd_bus_message_get_sender(call);
        if (!sender)
                return log_error_errno(ENXIO, "polkit: the call to check for %s has no sender", action);

        q = calloc(1, sizeof(*q));
        if (!q)
                return log_oom();
        q->action = strdup(action);
        if (!q->action)
                return log_oom();
        q->call = sd_bus_message_ref(call);
        q->cb = cb;
        q->userdata = userdata;

        if (sender_is_root(bus, sender)) {
                sd_event *event = sd_bus_get_event(bus);

                if (!event)
                        return log_error_errno(ENXIO, "polkit: the bus is not attached to an event loop");
                r = sd_event_add_defer(event, &q->defer, on_root_defer, q);
                if (r < 0)
                        return log_error_errno(r, "polkit: could not defer the answer for %s: %m", action);
                (void) sd_event_source_set_description(q->defer, "polkit-root");
                TAKE_PTR(q);
                return 0;
        }

        r = sd_bus_message_new_method_call(
                bus,
                &m,
                "org.freedesktop.PolicyKit1",
                "/org/freedesktop/PolicyKit1/Authority",
                "org.freedesktop.PolicyKit1.Authority",
                "CheckAuthorization");
        if (r >= 0)
                r = sd_bus_message_append(m, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r >= 0)
                r = append_details(m, details);
        /* No AllowUserInteraction: the daemon has no agent to wait for, and a method call must not hang on a
         * password prompt. Whoever may act is allowed by a polkit rule, or is root. */
        if (r >= 0)
                r = sd_bus_message_append(m, "us", POLKIT_CHECK_FLAGS_NONE, "");
        if (r < 0)
                return log_error_errno(r, "polkit: could not build the question for %s: %m", action);

        /* A floating slot: sd-bus frees it after the reply (or the synthetic error it makes when the
         * connection closes), and on_check_reply() frees the query. */
        r = sd_bus_call_async(bus, NULL, m, on_check_reply, q, POLKIT_TIMEOUT_USEC);
        if (r < 0)
                return log_error_errno(r, "polkit: could not ask about %s: %m", action);
        TAKE_PTR(q);
        return 0;
}

/* Asking the bus for a sender's uid is a synchronous call to the bus driver, and every method call
 * and every property read of a session (on the system bus) needs it. A unique name (":1.42") is
 * never given to another connection on the same bus, so what it answered once stays true: the last
 * CALLER_CACHE_SIZE answers are kept. */
#define CALLER_CACHE_SIZE 64

static struct {
        sd_bus *bus; /* not a reference: only compared */
        char name[64];
        uid_t uid;
} caller_cache[CALLER_CACHE_SIZE];
static size_t caller_cache_next;

int bus_message_caller_uid(sd_bus_message *message, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        sd_bus *bus = sd_bus_message_get_bus(message);
        const char *sender = sd_bus_message_get_sender(message);
        bool cacheable = sender && sender[0] == ':' && strlen(sender) < sizeof(caller_cache[0].name);
        uid_t uid;
        int r;

        for (size_t i = 0; cacheable && i < CALLER_CACHE_SIZE; i++)
                if (caller_cache[i].bus == bus && streq(caller_cache[i].name, sender)) {
                        *ret = caller_cache[i].uid;
                        return 0;
                }
        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;
        if (cacheable) {
                caller_cache[caller_cache_next].bus = bus;
                (void) snprintf(
                        caller_cache[caller_cache_next].name, sizeof(caller_cache[0].name), "%s", sender);
                caller_cache[caller_cache_next].uid = uid;
                caller_cache_next = (caller_cache_next + 1) % CALLER_CACHE_SIZE;
        }
        *ret = uid;
        return 0;
}

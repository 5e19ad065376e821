/* polkit-probe: daemon/polkit.c on a real system bus with a real polkitd, for
 * tests/integration/test_polkit.py. It owns org.ccdocker1.PolkitProbe on the bus that sd_bus_open_system()
 * finds ($DBUS_SYSTEM_BUS_ADDRESS) and offers one method, Check(s action) -> b, which asks
 * polkit_check_async() about the caller, exactly as ccdockerd's methods do, and answers true when the
 * caller may, or fails with org.ccdocker1.Error.AccessDenied naming the action (and polkit's reason)
 * when not; it never answers false. "ready" on stdout says that the name is owned. It runs on one sd-event
 * loop and exits on SIGTERM or SIGINT. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "log.h"
#include "polkit.h"

#define PROBE_NAME "org.ccdocker1.PolkitProbe"
#define PROBE_PATH "/org/ccdocker1/PolkitProbe"
#define PROBE_INTERFACE "org.ccdocker1.PolkitProbe"
#define ERROR_ACCESS_DENIED "org.ccdocker1.Error.AccessDenied"

static void on_checked(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        const char *action = NULL;
        int q;

        /* polkit_check_async() keeps the call; its argument is read again rather than copied. */
        q = sd_bus_message_rewind(call, true);
        if (q >= 0)
                q = sd_bus_message_read(call, "s", &action);
        if (q < 0) {
                log_error_errno(q, "Check: could not read the action again: %m");
                (void) sd_bus_reply_method_errnof(call, q, "Check: could not read the action again: %m");
                return;
        }

        if (r > 0)
                q = sd_bus_reply_method_return(call, "b", 1);
        else if (r == 0)
                q = sd_bus_reply_method_errorf(
                        call, ERROR_ACCESS_DENIED, "Access denied: polkit does not authorise %s", action);
        else
                q = sd_bus_reply_method_errorf(
                        call, ERROR_ACCESS_DENIED, "Access denied to %s: %s", action, error->message);
        if (q < 0)
                log_error_errno(q, "Check: could not reply: %m");
}

static int method_check(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        /* Sent along as polkit details so that the a{ss} path is exercised too. */
        static const char *details[] = { "probe", "polkit-probe", NULL };
        const char *action;
        int r;

        r = sd_bus_message_read(m, "s", &action);
        if (r < 0)
                return r;
        r = polkit_check_async(sd_bus_message_get_bus(m), m, action, details, on_checked, NULL);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Check: could not ask polkit about %s: %m", action);
        return 1; /* on_checked() replies */
}

static const sd_bus_vtable probe_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS(
                "Check",
                SD_BUS_ARGS("s", action),
                SD_BUS_RESULT("b", allowed),
                method_check,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int main(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        sigset_t mask;
        int r;

        log_set_prefix("polkit-probe");
        if (argc != 1) {
                fprintf(stderr, "usage: polkit-probe (on the bus of $DBUS_SYSTEM_BUS_ADDRESS)\n");
                return EXIT_FAILURE;
        }

        if (sigemptyset(&mask) < 0 || sigaddset(&mask, SIGTERM) < 0 || sigaddset(&mask, SIGINT) < 0 ||
            sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                log_error_errno(errno, "Failed to block SIGTERM and SIGINT: %m");
                return EXIT_FAILURE;
        }

        r = sd_event_default(&event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate the event loop: %m");
                return EXIT_FAILURE;
        }
        /* NULL handlers: the signal makes the loop exit. */
        r = sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to watch SIGTERM and SIGINT: %m");
                return EXIT_FAILURE;
        }

        r = sd_bus_open_system(&bus);
        if (r < 0) {
                log_error_errno(r, "Failed to connect to the system bus: %m");
                return EXIT_FAILURE;
        }
        r = sd_bus_add_object_vtable(bus, NULL, PROBE_PATH, PROBE_INTERFACE, probe_vtable, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to add the object: %m");
                return EXIT_FAILURE;
        }
        r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                log_error_errno(r, "Failed to attach the bus to the event loop: %m");
                return EXIT_FAILURE;
        }
        r = sd_bus_request_name(bus, PROBE_NAME, 0);
        if (r < 0) {
                log_error_errno(r, "Failed to own %s (is its bus policy installed?): %m", PROBE_NAME);
                return EXIT_FAILURE;
        }

        if (puts("ready") == EOF || fflush(stdout) == EOF)
                return EXIT_FAILURE;

        r = sd_event_loop(event);
        if (r < 0) {
                log_error_errno(r, "The event loop failed: %m");
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

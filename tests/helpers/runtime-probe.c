/* runtime-probe: runs the daemon's real libpod client (daemon/podman.c) and transient-unit code
 * (daemon/unit.c) on one sd-event loop against the sandbox's podman service ($CCDOCKER_PODMAN_SOCKET)
 * and user manager (the user bus, $DBUS_SESSION_BUS_ADDRESS), for tests/integration/test_runtime.py.
 * "run" creates a hardened container over REST, starts it as ccdocker-probe-NAME.service and prints one
 * JSON line per unit state it observes until the unit has ended, then removes the container and resets
 * the unit; the other subcommands are single calls ("cancel" frees the client under a pending one). Errors
 * go to stderr with the message from podman or systemd, and the exit status is non-zero. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "log.h"
#include "podman.h"
#include "unit.h"
#include "util.h"

typedef struct Probe {
        sd_event *event;
        sd_bus *bus;
        PodmanClient *podman;
        uint64_t t0;
        int exit_code;

        /* run */
        const char *name;
        const char *image;
        char *unit;
        char **command;
        int n_command;
        UnitSpec spec;
        sd_bus_slot *watch;
        bool start_done;
        bool seen_active;
        bool ending;
        bool unit_created; /* ours to reset at the end (not so when the name was taken) */
} Probe;

static void usage(void) {
        fprintf(stderr,
                "usage: runtime-probe run [--stop-timeout=SEC] [--cpu-millis=N] [--podman=PATH] NAME IMAGE\n"
                "                         MEMORY_BYTES TASKS RUNTIME_SEC -- CMD...\n"
                "       runtime-probe create NAME IMAGE -- CMD...\n"
                "       runtime-probe inspect NAME\n"
                "       runtime-probe cancel NAME   (inspect, then free the client at once)\n"
                "       runtime-probe remove NAME\n"
                "       runtime-probe image-exists IMAGE\n"
                "       runtime-probe stop UNIT\n"
                "       runtime-probe kill UNIT SIGNAL\n"
                "       runtime-probe reset-failed UNIT\n"
                "       runtime-probe state UNIT\n");
}

static void probe_exit(Probe *p, int code) {
        if (code != 0 && p->exit_code == 0)
                p->exit_code = code;
        (void) sd_event_exit(p->event, p->exit_code);
}

static double probe_elapsed(Probe *p) {
        uint64_t now = 0;

        (void) sd_event_now(p->event, CLOCK_MONOTONIC, &now);
        return (double) (now - p->t0) / 1e6;
}

static void print_json(json_t *j) {
        _cleanup_free_ char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(7));

        if (!s) {
                log_oom();
                return;
        }
        printf("%s\n", s);
        fflush(stdout);
}

static void print_state(Probe *p, const UnitState *st) {
        _cleanup_(json_decrefp) json_t *j = NULL;

        j = json_pack(
                "{s:s?, s:s?, s:s?, s:i, s:i, s:b, s:f}",
                "active_state",
                st->active_state,
                "sub_state",
                st->sub_state,
                "result",
                st->result,
                "exec_main_code",
                st->exec_main_code,
                "exec_main_status",
                st->exec_main_status,
                "exists",
                (int) st->exists,
                "t",
                probe_elapsed(p));
        if (j)
                print_json(j);
}

static const char *bus_error_text(const sd_bus_error *e) {
        return e ? (e->message ?: e->name) : NULL;
}

/* ---- the hardened container spec (SPEC.md 9.4, docs/sandbox.md) ---- */

static json_t *tmpfs_mount(const char *destination, const char *mode_or_owner) {
        return json_pack(
                "{s:s, s:s, s:s, s:[s,s,s,s]}",
                "type",
                "tmpfs",
                "source",
                "tmpfs",
                "destination",
                destination,
                "options",
                "rw",
                "nosuid",
                "nodev",
                mode_or_owner);
}

static json_t *container_spec(const char *name, const char *image, char **command, int n_command) {
        _cleanup_(json_decrefp) json_t *cmd = json_array(), *mounts = json_array();

        if (!cmd || !mounts)
                return NULL;
        for (int i = 0; i < n_command; i++)
                if (json_array_append_new(cmd, json_string(command[i])) < 0)
                        return NULL;

        /* A read-only root: the places a program expects to write are tmpfs (podman 4.3 adds none of
         * them by itself over REST), and /workspace belongs to the container's user ("U"). */
        if (json_array_append_new(mounts, tmpfs_mount("/tmp", "mode=1777")) < 0 ||
            json_array_append_new(mounts, tmpfs_mount("/var/tmp", "mode=1777")) < 0 ||
            json_array_append_new(mounts, tmpfs_mount("/run", "mode=0755")) < 0 ||
            json_array_append_new(mounts, tmpfs_mount("/workspace", "U")) < 0)
                return NULL;

        return json_pack(
                "{s:s, s:s, s:O, s:s, s:[s], s:b, s:s, s:{s:s}, s:b, s:O, s:{s:s}}",
                "name",
                name,
                "image",
                image,
                "command",
                cmd,
                "user",
                "1000:1000",
                "cap_drop",
                "ALL",
                "no_new_privileges",
                1,
                "cgroups_mode",
                "split", /* podman start inside the unit puts the payload in the unit's cgroup */
                "netns",
                "nsmode",
                "none",
                "read_only_filesystem",
                1,
                "mounts",
                mounts,
                "labels",
                "org.ccdocker.test",
                "1");
}

/* ---- run ---- */

static void run_on_reset(int r, const sd_bus_error *error, void *userdata) {
        Probe *p = userdata;

        if (r < 0) {
                log_error_errno(r, "resetting unit %s: %s", p->unit, strempty(bus_error_text(error)));
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        probe_exit(p, 0);
}

static void run_on_removed(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;

        if (r < 0) {
                log_error_errno(r, "removing container %s: %s", p->name, strempty(error));
                p->exit_code = EXIT_FAILURE;
        }

        if (!p->unit_created) {
                probe_exit(p, 0);
                return;
        }
        r = unit_reset_failed(p->bus, p->unit, run_on_reset, p);
        if (r < 0) {
                log_error_errno(r, "resetting unit %s: %m", p->unit);
                probe_exit(p, EXIT_FAILURE);
        }
}

/* The end of a run, whichever way it came: stop watching, remove the container, reset the unit. */
static void run_finish(Probe *p, int code) {
        int r;

        if (p->ending)
                return;
        p->ending = true;
        if (code != 0)
                p->exit_code = code;
        p->watch = sd_bus_slot_unref(p->watch);

        r = podman_container_remove(p->podman, p->name, run_on_removed, p);
        if (r < 0) {
                log_error_errno(r, "removing container %s: %m", p->name);
                probe_exit(p, EXIT_FAILURE);
        }
}

static bool state_is_down(const char *active_state) {
        return streq_ptr(active_state, "inactive") || streq_ptr(active_state, "failed");
}

static void run_on_state(const UnitState *st, void *userdata) {
        Probe *p = userdata;

        if (p->ending)
                return;
        print_state(p, st);

        if (streq_ptr(st->active_state, "active"))
                p->seen_active = true;
        /* Type=exec: the start job is done once podman runs, so the unit was active if it is down now. */
        if (p->start_done && p->seen_active && state_is_down(st->active_state))
                run_finish(p, 0);
}

static void run_on_started(int r, const sd_bus_error *error, void *userdata) {
        Probe *p = userdata;

        if (r < 0) {
                /* A failed job leaves a unit behind; a failed call (such as UnitExists) made none. */
                p->unit_created =
                        error && sd_bus_error_has_name(error, "org.freedesktop.systemd1.JobFailed");
                log_error_errno(
                        r,
                        "starting unit %s: %s: %s",
                        p->unit,
                        error ? error->name : "error",
                        error ? strempty(bus_error_text(error)) : "no reply");
                run_finish(p, EXIT_FAILURE);
                return;
        }

        p->start_done = true;
        p->seen_active = true;
}

static void run_on_created(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;

        if (r < 0) {
                log_error_errno(r, "creating container %s (HTTP %ld): %s", p->name, status, strempty(error));
                probe_exit(p, EXIT_FAILURE);
                return;
        }

        /* The watch first, so that no change between the start and the first read is lost. */
        r = unit_watch(p->bus, p->unit, run_on_state, p, &p->watch);
        if (r < 0) {
                log_error_errno(r, "watching unit %s: %m", p->unit);
                run_finish(p, EXIT_FAILURE);
                return;
        }

        p->unit_created = true;
        r = unit_start(p->bus, &p->spec, run_on_started, p);
        if (r < 0) {
                p->unit_created = false;
                log_error_errno(r, "starting unit %s: %m", p->unit);
                run_finish(p, EXIT_FAILURE);
        }
}

static void run_on_image(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;
        _cleanup_(json_decrefp) json_t *spec = NULL;

        if (r == -ENOENT) {
                log_error("image %s does not exist: %s", p->image, strempty(error));
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        if (r < 0) {
                log_error_errno(r, "checking image %s: %s", p->image, strempty(error));
                probe_exit(p, EXIT_FAILURE);
                return;
        }

        spec = container_spec(p->name, p->image, p->command, p->n_command);
        if (!spec) {
                log_oom();
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        r = podman_container_create(p->podman, spec, run_on_created, p);
        if (r < 0) {
                log_error_errno(r, "creating container %s: %m", p->name);
                probe_exit(p, EXIT_FAILURE);
        }
}

static int parse_u64(const char *what, const char *s, uint64_t *ret) {
        int r = safe_atou64(s, ret);

        if (r < 0)
                return log_error_errno(r, "%s must be a number, got '%s'", what, s);
        return 0;
}

/* Splits "ARGS... -- CMD..." at the "--". */
static int split_command(int argc, char **argv, int *ret_nargs, char ***ret_cmd, int *ret_ncmd) {
        for (int i = 0; i < argc; i++)
                if (streq(argv[i], "--")) {
                        if (i + 1 >= argc)
                                break;
                        *ret_nargs = i;
                        *ret_cmd = argv + i + 1;
                        *ret_ncmd = argc - i - 1;
                        return 0;
                }
        usage();
        return -EINVAL;
}

static int cmd_run(Probe *p, int argc, char **argv) {
        uint64_t memory, tasks, runtime, stop_timeout = 5, cpu_millis = 0;
        const char *podman_path = NULL;
        int nargs, r;
        const char *v;

        while (argc > 0 && startswith(argv[0], "--") && !streq(argv[0], "--")) {
                if ((v = startswith(argv[0], "--stop-timeout="))) {
                        if (parse_u64("--stop-timeout", v, &stop_timeout) < 0)
                                return -EINVAL;
                } else if ((v = startswith(argv[0], "--cpu-millis="))) {
                        if (parse_u64("--cpu-millis", v, &cpu_millis) < 0)
                                return -EINVAL;
                } else if ((v = startswith(argv[0], "--podman=")))
                        podman_path = v;
                else {
                        usage();
                        return -EINVAL;
                }
                argc--;
                argv++;
        }

        r = split_command(argc, argv, &nargs, &p->command, &p->n_command);
        if (r < 0)
                return r;
        if (nargs != 5) {
                usage();
                return -EINVAL;
        }
        if (parse_u64("MEMORY_BYTES", argv[2], &memory) < 0 || parse_u64("TASKS", argv[3], &tasks) < 0 ||
            parse_u64("RUNTIME_SEC", argv[4], &runtime) < 0)
                return -EINVAL;

        p->name = argv[0];
        p->image = argv[1];
        if (asprintf(&p->unit, "ccdocker-probe-%s.service", p->name) < 0)
                return log_oom();

        p->spec = (UnitSpec){
                .name = p->unit,
                .description = "cc-docker runtime probe",
                .container_name = p->name,
                .podman_path = podman_path,
                .memory_max = memory,
                .cpu_millis = cpu_millis,
                .tasks_max = tasks,
                .runtime_max_sec = runtime,
                .stop_timeout_sec = stop_timeout,
        };

        r = podman_image_exists(p->podman, p->image, run_on_image, p);
        if (r < 0)
                return log_error_errno(r, "checking image %s: %m", p->image);
        return 0;
}

/* ---- single calls ---- */

static void on_created(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;

        if (r < 0) {
                log_error_errno(r, "creating container (HTTP %ld): %s", status, strempty(error));
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        print_json(reply);
        probe_exit(p, 0);
}

static int cmd_create(Probe *p, int argc, char **argv) {
        _cleanup_(json_decrefp) json_t *spec = NULL;
        char **command;
        int nargs, ncommand, r;

        r = split_command(argc, argv, &nargs, &command, &ncommand);
        if (r < 0)
                return r;
        if (nargs != 2) {
                usage();
                return -EINVAL;
        }
        spec = container_spec(argv[0], argv[1], command, ncommand);
        if (!spec)
                return log_oom();
        r = podman_container_create(p->podman, spec, on_created, p);
        if (r < 0)
                return log_error_errno(r, "creating container %s: %m", argv[0]);
        return 0;
}

static void on_podman_reply(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;
        _cleanup_(json_decrefp) json_t *out = NULL;

        if (r < 0) {
                log_error_errno(r, "libpod request failed (HTTP %ld): %s", status, strempty(error));
                probe_exit(p, r == -ENOENT ? 2 : EXIT_FAILURE);
                return;
        }
        if (reply)
                print_json(reply);
        else {
                out = json_pack("{s:i}", "status", (int) status);
                if (out)
                        print_json(out);
        }
        probe_exit(p, 0);
}

static void on_unit_done(int r, const sd_bus_error *error, void *userdata) {
        Probe *p = userdata;
        _cleanup_(json_decrefp) json_t *out = NULL;

        if (r < 0) {
                if (error)
                        log_error_errno(r, "%s: %s", error->name, strempty(bus_error_text(error)));
                else
                        log_error_errno(r, "%m");
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        out = json_pack("{s:s}", "outcome", "done");
        if (out)
                print_json(out);
        probe_exit(p, 0);
}

static void on_unit_state(const UnitState *st, void *userdata) {
        Probe *p = userdata;

        if (st->error < 0) {
                log_error_errno(st->error, "reading the unit's state: %m");
                probe_exit(p, EXIT_FAILURE);
                return;
        }
        print_state(p, st);
        probe_exit(p, 0);
}

/* cancel: a request that podman_client_free() drops must never reach its callback. */
static void on_cancelled_reply(int r, long status, json_t *reply, const char *error, void *userdata) {
        Probe *p = userdata;

        log_error("the callback of a cancelled request ran (r=%i, HTTP %ld)", r, status);
        probe_exit(p, 3);
}

static int on_cancel_done(sd_event_source *s, uint64_t usec, void *userdata) {
        Probe *p = userdata;
        _cleanup_(json_decrefp) json_t *out = json_pack("{s:s}", "outcome", "cancelled");

        if (out)
                print_json(out);
        probe_exit(p, 0);
        return 0;
}

static int cmd_cancel(Probe *p, const char *name) {
        int r;

        r = podman_container_inspect(p->podman, name, on_cancelled_reply, p);
        if (r < 0)
                return log_error_errno(r, "inspecting %s: %m", name);
        /* Callbacks only ever run from the event loop, which has not run yet: the request is pending. */
        p->podman = podman_client_free(p->podman);
        /* Give a wrongly kept request time to complete and show itself. */
        r = sd_event_add_time_relative(p->event, NULL, CLOCK_MONOTONIC, 300 * 1000, 0, on_cancel_done, p);
        if (r < 0)
                return log_error_errno(r, "adding a timer: %m");
        return 0;
}

static int probe_setup(Probe *p) {
        const char *socket_path = getenv("CCDOCKER_PODMAN_SOCKET");
        int r;

        r = sd_event_default(&p->event);
        if (r < 0)
                return log_error_errno(r, "sd_event_default: %m");
        (void) sd_event_now(p->event, CLOCK_MONOTONIC, &p->t0);

        /* No handler: sd-event exits the loop with the userdata as the exit code. */
        r = sd_event_add_signal(p->event, NULL, SIGTERM, NULL, (void *) (intptr_t) (128 + SIGTERM));
        if (r < 0)
                return log_error_errno(r, "watching SIGTERM: %m");
        r = sd_event_add_signal(p->event, NULL, SIGINT, NULL, (void *) (intptr_t) (128 + SIGINT));
        if (r < 0)
                return log_error_errno(r, "watching SIGINT: %m");

        /* sd_bus_open_user() follows $DBUS_SESSION_BUS_ADDRESS: the sandbox's bus. */
        r = sd_bus_open_user(&p->bus);
        if (r < 0)
                return log_error_errno(r, "connecting to the user bus: %m");
        r = sd_bus_attach_event(p->bus, p->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "attaching the bus to the event loop: %m");
        r = unit_subscribe(p->bus);
        if (r < 0)
                return log_error_errno(r, "subscribing to systemd: %m");

        if (isempty(socket_path))
                return log_error_errno(EINVAL, "CCDOCKER_PODMAN_SOCKET is not set");
        r = podman_client_new(p->event, socket_path, &p->podman);
        if (r < 0)
                return log_error_errno(r, "podman client for %s: %m", socket_path);
        return 0;
}

static void probe_done(Probe *p) {
        p->watch = sd_bus_slot_unref(p->watch);
        p->podman = podman_client_free(p->podman);
        p->bus = sd_bus_flush_close_unref(p->bus);
        p->event = sd_event_unref(p->event);
        free(p->unit);
}

int main(int argc, char *argv[]) {
        _cleanup_(probe_done) Probe p = {};
        const char *verb;
        sigset_t mask;
        int r;

        log_set_prefix("runtime-probe");
        log_set_target(LOG_TARGET_STDERR);

        if (argc < 3) {
                usage();
                return EXIT_FAILURE;
        }
        verb = argv[1];

        /* sd-event's signal sources need the signals blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return EXIT_FAILURE;

        r = probe_setup(&p);
        if (r < 0)
                return EXIT_FAILURE;

        if (streq(verb, "run"))
                r = cmd_run(&p, argc - 2, argv + 2);
        else if (streq(verb, "create"))
                r = cmd_create(&p, argc - 2, argv + 2);
        else if (streq(verb, "inspect") && argc == 3)
                r = podman_container_inspect(p.podman, argv[2], on_podman_reply, &p);
        else if (streq(verb, "cancel") && argc == 3)
                r = cmd_cancel(&p, argv[2]);
        else if (streq(verb, "remove") && argc == 3)
                r = podman_container_remove(p.podman, argv[2], on_podman_reply, &p);
        else if (streq(verb, "image-exists") && argc == 3)
                r = podman_image_exists(p.podman, argv[2], on_podman_reply, &p);
        else if (streq(verb, "stop") && argc == 3)
                r = unit_stop(p.bus, argv[2], on_unit_done, &p);
        else if (streq(verb, "reset-failed") && argc == 3)
                r = unit_reset_failed(p.bus, argv[2], on_unit_done, &p);
        else if (streq(verb, "state") && argc == 3)
                r = unit_get_state(p.bus, argv[2], on_unit_state, &p);
        else if (streq(verb, "kill") && argc == 4) {
                int sig;

                r = safe_atoi(argv[3], &sig);
                if (r < 0) {
                        log_error_errno(r, "SIGNAL must be a number, got '%s'", argv[3]);
                        return EXIT_FAILURE;
                }
                r = unit_kill(p.bus, argv[2], sig, on_unit_done, &p);
        } else {
                usage();
                return EXIT_FAILURE;
        }
        if (r < 0) {
                log_error_errno(r, "%s: %m", verb);
                return EXIT_FAILURE;
        }

        r = sd_event_loop(p.event);
        if (r < 0) {
                log_error_errno(r, "event loop: %m");
                return EXIT_FAILURE;
        }
        return r;
}

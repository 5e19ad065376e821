/* Transient systemd units over sd-bus, asynchronously: a session is ccdocker-session-<id>.service
 * running `podman start --attach <container>` with Delegate=yes, so the unit's cgroup holds the
 * container and its limits bind it (docs/sandbox.md, "The shape of a session"). The daemon follows
 * each unit's state through PropertiesChanged to learn of exits it did not cause. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

typedef struct UnitSpec {
        const char *name; /* ccdocker-session-<id>.service */
        const char *description;
        const char *slice;          /* NULL: the manager's default */
        const char *container_name; /* what ExecStart starts and ExecStopPost removes */
        const char *podman_path;    /* NULL: /usr/bin/podman */
        uint64_t memory_max;        /* bytes; 0 = none */
        uint64_t cpu_millis;        /* CPUQuota, 1000 = 100%; 0 = none */
        uint64_t tasks_max;         /* 0 = none */
        uint64_t runtime_max_sec;   /* RuntimeMaxSec; 0 = none */
        uint64_t stop_timeout_sec;  /* TimeoutStopSec: graceful stop, then SIGKILL */
        bool keep_container;        /* no ExecStopPost removal: the caller reads the container's end first */
        /* Set: a Docker Engine container (runtime.h), run by `docker -H unix://<docker_socket> start
         * --attach`; the container's cgroup was put below the unit's when it was created. */
        const char *docker_socket;
        const char *docker_path; /* NULL: /usr/bin/docker */
} UnitSpec;

/* A session's slice: its limits cap the session and every session nested below it. */
typedef struct SliceSpec {
        const char *name; /* ccdocker-<id>.slice, ccdocker-<parent>-<id>.slice, ... */
        const char *description;
        uint64_t memory_max; /* bytes; 0 = none */
        uint64_t cpu_millis; /* 0 = none */
        uint64_t tasks_max;  /* 0 = none */
} SliceSpec;

/* The state of a unit as systemd reports it. Strings are borrowed for the callback's duration; NULL when
 * not known (a unit never seen loaded; result of a unit that is not a service). */
typedef struct UnitState {
        const char *active_state; /* active, activating, deactivating, inactive, failed */
        const char *sub_state;
        const char *result;   /* success, exit-code, signal, oom-kill, timeout, ... */
        int exec_main_code;   /* CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3; 0 unknown */
        int exec_main_status; /* exit status or signal number */
        bool exists;          /* false: no such unit loaded. A watch then reports the last values it saw:
                                 a unit that ends successfully is unloaded at once, so its final
                                 inactive/success state arrives with exists = false */
        int error;            /* unit_get_state() only: 0, or a negative errno when the state could not be
                                 read (logged); the other fields are then unknown (NULL, 0, false) */
} UnitState;

typedef void (*unit_done_t)(int r, const sd_bus_error *error, void *userdata);
typedef void (*unit_state_t)(const UnitState *state, void *userdata);

/* Subscribes to the manager's signals; call once after connecting. */
int unit_subscribe(sd_bus *bus);

/* StartTransientUnit with mode "fail"; cb runs when the start job finishes (JobRemoved: r = 0 for
 * "done", -EIO with a message naming the job result otherwise) or when the call fails (the error
 * from systemd, e.g. org.freedesktop.systemd1.UnitExists with r = -EEXIST).
 *
 * For all calls here: when the call returns < 0 nothing was sent and cb is never called; otherwise cb
 * runs exactly once, from the event loop. A pending job holds a reference on the bus until it ends. */
int unit_start(sd_bus *bus, const UnitSpec *spec, unit_done_t cb, void *userdata);

/* StartTransientUnit of a slice, mode "fail"; cb as for unit_start(). Its parent slice (by systemd's
 * dash nesting) must exist or be loadable. */
int unit_start_slice(sd_bus *bus, const SliceSpec *spec, unit_done_t cb, void *userdata);

/* StopUnit(name, "replace"); cb when the stop job finishes. A unit that is not loaded is success. */
int unit_stop(sd_bus *bus, const char *name, unit_done_t cb, void *userdata);

/* ResetFailedUnit(name): forgets a failed unit's result so its name can be used again (the default
 * CollectMode keeps a failed unit, and its Result, until this). A unit that is not loaded is success. */
int unit_reset_failed(sd_bus *bus, const char *name, unit_done_t cb, void *userdata);

/* KillUnit(name, "all", signal). */
int unit_kill(sd_bus *bus, const char *name, int signal, unit_done_t cb, void *userdata);

/* Calls cb on every change of the unit's ActiveState/SubState/Result (PropertiesChanged of
 * org.freedesktop.systemd1.Unit and .Service), and once right away with the current state. The watch
 * lasts until *ret_slot is unref'd. */
int unit_watch(sd_bus *bus, const char *name, unit_state_t cb, void *userdata, sd_bus_slot **ret_slot);

/* One asynchronous read of the current state (exists = false when the unit is not loaded). A failed read
 * still calls cb, with state->error set. */
int unit_get_state(sd_bus *bus, const char *name, unit_state_t cb, void *userdata);

/* What unit_set_limits() changes on a running unit (0: left as it is). Not RuntimeMaxSec: systemd 252
 * refuses to change it on a running unit. */
typedef struct UnitLimits {
        const char *name;
        uint64_t memory_max; /* bytes */
        uint64_t cpu_millis;
        uint64_t tasks_max;
} UnitLimits;

/* SetUnitProperties(name, runtime, ...) with MemoryMax, CPUQuotaPerSecUSec and TasksMax;
 * cb once systemd answered. */
int unit_set_limits(sd_bus *bus, const UnitLimits *limits, unit_done_t cb, void *userdata);

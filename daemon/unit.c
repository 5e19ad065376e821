/* unit: the daemon's side of systemd, over sd-bus and never blocking. A session's container runs in a
 * transient service made with StartTransientUnit; its start and stop jobs are followed to their
 * JobRemoved signal (matched before the call, compared by job path), and its state is followed through
 * PropertiesChanged on the unit's object, re-reading both the Unit and the Service interface so that a
 * caller sees ActiveState together with the Result that explains it. */
#define _GNU_SOURCE
#include "unit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define SYSTEMD_DEST "org.freedesktop.systemd1"
#define SYSTEMD_PATH "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER "org.freedesktop.systemd1.Manager"
#define SYSTEMD_UNIT "org.freedesktop.systemd1.Unit"
#define SYSTEMD_SERVICE "org.freedesktop.systemd1.Service"
#define SYSTEMD_UNIT_PATH_PREFIX "/org/freedesktop/systemd1/unit"
#define BUS_PROPERTIES "org.freedesktop.DBus.Properties"

/* The errno values systemd itself gives its errors (src/libsystemd/sd-bus/bus-common-errors.c), so that
 * sd_bus_error_get_errno() on an error handed to a callback says what happened. */
static const sd_bus_error_map systemd_errors[] = {
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.NoSuchUnit", ENOENT),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.NoUnitForPID", ESRCH),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.UnitExists", EEXIST),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.LoadFailed", EIO),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.BadUnitSetting", ENOEXEC),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.NoSuchJob", ENOENT),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.NotSubscribed", EINVAL),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.AlreadySubscribed", EINVAL),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.OnlyByDependency", EINVAL),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.TransactionJobsConflicting", EDEADLK),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.TransactionOrderIsCyclic", EDEADLK),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.TransactionIsDestructive", EDEADLK),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.UnitMasked", ERFKILL),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.UnitGenerated", EADDRNOTAVAIL),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.UnitLinked", ELOOP),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.JobTypeNotApplicable", EBADR),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.NoIsolation", EPERM),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.ShuttingDown", ECANCELED),
        SD_BUS_ERROR_MAP("org.freedesktop.systemd1.ScopeNotRunning", EHOSTDOWN),
        SD_BUS_ERROR_MAP_END
};

static void register_systemd_errors(void) {
        /* Idempotent: sd-bus keeps a list of maps and ignores one it already has. */
        (void) sd_bus_error_add_map(systemd_errors);
}

/* A unit name as systemd accepts it (unit_name_is_valid(), without template handling). */
static bool unit_name_is_valid(const char *name) {
        const char *dot;

        if (isempty(name) || strlen(name) > 255)
                return false;
        for (const char *p = name; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@", *p))
                        return false;
        dot = strrchr(name, '.');
        return dot && dot != name && dot[1] != '\0';
}

/* podman's container name rule; it also keeps the name from being read as an option of podman's. */
static bool container_name_is_valid(const char *name) {
        if (isempty(name) || strlen(name) > 253)
                return false;
        for (const char *p = name; *p; p++) {
                bool alnum =
                        (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');

                if (!alnum && (p == name || !strchr("_.-", *p)))
                        return false;
        }
        return true;
}

static int reply_errno(sd_bus_message *reply) {
        int r = sd_bus_message_get_errno(reply);

        return r > 0 ? -r : -EIO;
}

/* ---------------------------------------------------------------------------------------------------
 * Jobs: StartTransientUnit and StopUnit, followed to their JobRemoved. */

typedef struct UnitJob {
        char *unit;
        const char *verb;   /* "start", "stop": for messages */
        bool missing_ok;    /* NoSuchUnit from the call is success (stop) */
        sd_bus_slot *match; /* JobRemoved */
        sd_bus_slot *call;  /* the method call */
        char *job_path;     /* from the reply */
        char *early_job;    /* a JobRemoved for our unit seen before the reply */
        char *early_result;
        unit_done_t cb;
        void *userdata;
} UnitJob;

static UnitJob *unit_job_free(UnitJob *j) {
        if (!j)
                return NULL;
        sd_bus_slot_unref(j->match);
        sd_bus_slot_unref(j->call);
        free(j->unit);
        free(j->job_path);
        free(j->early_job);
        free(j->early_result);
        return mfree(j);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(UnitJob *, unit_job_free);

/* Ends the job: the callback runs once, after which the job is gone. Slots are released from inside their
 * own handlers, which sd-bus allows (it holds a reference while dispatching). */
static void unit_job_finish(UnitJob *j, int r, const sd_bus_error *error) {
        unit_done_t cb = j->cb;
        void *userdata = j->userdata;

        unit_job_free(j);
        cb(r, error, userdata);
}

static void unit_job_finish_result(UnitJob *j, const char *result) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        if (streq(result, "done")) {
                unit_job_finish(j, 0, NULL);
                return;
        }

        /* canceled, timeout, failed, dependency, skipped, ...: say which, and for which unit. */
        (void) sd_bus_error_setf(
                &error,
                "org.freedesktop.systemd1.JobFailed",
                "Job to %s %s finished with result '%s'",
                j->verb,
                j->unit,
                result);
        unit_job_finish(j, -EIO, &error);
}

static int unit_job_on_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitJob *j = userdata;
        const char *path, *unit, *result;
        uint32_t id;
        int r;

        r = sd_bus_message_read(m, "uoss", &id, &path, &unit, &result);
        if (r < 0) {
                log_debug_errno(r, "Ignoring a malformed JobRemoved signal: %m");
                return 0;
        }

        if (j->job_path) {
                if (streq(path, j->job_path))
                        unit_job_finish_result(j, result);
                return 0;
        }

        /* The reply with the job path is not here yet. systemd answers the call before the job can end,
         * but keep the signal for our unit rather than rely on it. */
        if (streq(unit, j->unit)) {
                char *p = strdup(path), *res = strdup(result);

                if (!p || !res) {
                        free(p);
                        free(res);
                        log_oom();
                        return 0;
                }
                free(j->early_job);
                free(j->early_result);
                j->early_job = p;
                j->early_result = res;
        }
        return 0;
}

static int unit_job_on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitJob *j = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (!e)
                return 0;
        log_error("Failed to watch JobRemoved for %s: %s", j->unit, e->message ?: e->name);
        unit_job_finish(j, reply_errno(m), e);
        return 0;
}

static int unit_job_on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitJob *j = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *path;
        int r;

        if (e) {
                if (j->missing_ok && sd_bus_error_has_name(e, "org.freedesktop.systemd1.NoSuchUnit")) {
                        unit_job_finish(j, 0, NULL);
                        return 0;
                }
                unit_job_finish(j, reply_errno(reply), e);
                return 0;
        }

        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0) {
                unit_job_finish(j, r, NULL);
                return 0;
        }

        if (j->early_job && streq(j->early_job, path)) {
                _cleanup_free_ char *result = TAKE_PTR(j->early_result);

                unit_job_finish_result(j, result);
                return 0;
        }

        j->job_path = strdup(path);
        if (!j->job_path)
                unit_job_finish(j, -ENOMEM, NULL);
        return 0;
}

/* Allocates a job and installs its JobRemoved match: the match goes out on the bus before the call
 * that creates the job, so the signal cannot slip past. */
static int unit_job_new(
        sd_bus *bus, const char *unit, const char *verb, unit_done_t cb, void *userdata, UnitJob **ret) {
        _cleanup_(unit_job_freep) UnitJob *j = NULL;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->verb = verb;
        j->cb = cb;
        j->userdata = userdata;
        j->unit = strdup(unit);
        if (!j->unit)
                return -ENOMEM;

        r = sd_bus_match_signal_async(
                bus,
                &j->match,
                SYSTEMD_DEST,
                SYSTEMD_PATH,
                SYSTEMD_MANAGER,
                "JobRemoved",
                unit_job_on_removed,
                unit_job_on_match_installed,
                j);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(j);
        return 0;
}

static int append_exec(
        sd_bus_message *m, const char *property, const char *path, bool ignore_failure, char **argv) {
        int r;

        r = sd_bus_message_open_container(m, 'r', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", property);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'v', "a(sasb)");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "(sasb)");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'r', "sasb");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", path);
        if (r < 0)
                return r;
        r = sd_bus_message_append_strv(m, argv);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "b", (int) ignore_failure);
        if (r < 0)
                return r;
        for (int i = 0; i < 4; i++) { /* r, a, v, r */
                r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int append_usec(sd_bus_message *m, const char *property, uint64_t sec) {
        if (sec > UINT64_MAX / USEC_PER_SEC - 1)
                return -ERANGE;
        return sd_bus_message_append(m, "(sv)", property, "t", sec * USEC_PER_SEC);
}

/* MemoryMax=, CPUQuota= and TasksMax= (0: not set). */
static int append_limits(sd_bus_message *m, uint64_t memory_max, uint64_t cpu_millis, uint64_t tasks_max) {
        int r;

        if (memory_max > 0) {
                r = sd_bus_message_append(m, "(sv)", "MemoryMax", "t", memory_max);
                if (r < 0)
                        return r;
        }
        if (cpu_millis > 0) {
                if (cpu_millis > UINT64_MAX / 1000)
                        return -ERANGE;
                /* CPUQuota= in µs of CPU time per second: 1000 millis (one CPU) = 1000000. */
                r = sd_bus_message_append(m, "(sv)", "CPUQuotaPerSecUSec", "t", cpu_millis * 1000);
                if (r < 0)
                        return r;
        }
        if (tasks_max > 0) {
                r = sd_bus_message_append(m, "(sv)", "TasksMax", "t", tasks_max);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Docker's CLI in the unit: `docker start --attach` forwards SIGTERM to the container and exits with its
 * status, as `podman start --attach` does; the container's processes sit below the unit's cgroup
 * (HostConfig.CgroupParent), so the unit's final SIGKILL and its limits reach them too. */
static int append_docker_execs(sd_bus_message *m, const UnitSpec *spec) {
        const char *docker = spec->docker_path ?: "/usr/bin/docker";
        _cleanup_free_ char *host = NULL;
        int r;

        if (asprintf(&host, "unix://%s", spec->docker_socket) < 0)
                return -ENOMEM;
        /* clang-format off */
        char *start_argv[] = { (char *) "docker", (char *) "-H", host, (char *) "start", (char *) "--attach",
                               (char *) spec->container_name, NULL };
        char *rm_argv[] = { (char *) "docker", (char *) "-H", host, (char *) "rm", (char *) "--force",
                            (char *) spec->container_name, NULL };
        /* clang-format on */

        r = append_exec(m, "ExecStart", docker, false, start_argv);
        if (r >= 0 && !spec->keep_container)
                r = append_exec(m, "ExecStopPost", docker, true, rm_argv);
        return r;
}

static int build_start_message(sd_bus *bus, const UnitSpec *spec, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *description = NULL;
        const char *podman = spec->podman_path ?: "/usr/bin/podman";
        /* conmon's own cleanup can die with the unit: ExecStopPost removes the container once the unit
         * is down, and a failure there does not fail the unit (REFERENCE.md B.2). */
        /* clang-format off */
        char *start_argv[] = { (char *) "podman", (char *) "start", (char *) "--attach",
                               (char *) spec->container_name, NULL };
        char *rm_argv[] = { (char *) "podman", (char *) "rm", (char *) "--force", (char *) "--ignore",
                            (char *) "--time", (char *) "0", (char *) spec->container_name, NULL };
        /* clang-format on */
        int r;

        if (!spec->description && asprintf(&description, "cc-docker container %s", spec->container_name) < 0)
                return -ENOMEM;

        r = sd_bus_message_new_method_call(
                bus, &m, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER, "StartTransientUnit");
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "ss", spec->name, "fail");
        if (r < 0)
                return r;

        r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r < 0)
                return r;

        /* Type=exec: active once podman runs; its exit is the container's.
         * Delegate: podman's split cgroup mode moves itself and the payload into sub-cgroups of ours.
         * KillMode=mixed: SIGTERM to podman, which forwards it to the container; the final SIGKILL to all.
         * OOMPolicy=stop: the default under Delegate=yes is "continue", and we want Result=oom-kill. */
        /* clang-format off */
        r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)",
                                  "Description", "s", spec->description ?: description,
                                  "Type", "s", "exec",
                                  "Delegate", "b", 1,
                                  "KillMode", "s", "mixed",
                                  "OOMPolicy", "s", "stop");
        /* clang-format on */
        if (r < 0)
                return r;
        /* No CollectMode: the default keeps a failed unit, and its Result, until unit_reset_failed(). */

        if (spec->slice) {
                r = sd_bus_message_append(m, "(sv)", "Slice", "s", spec->slice);
                if (r < 0)
                        return r;
        }

        if (spec->docker_socket)
                r = append_docker_execs(m, spec);
        else {
                r = append_exec(m, "ExecStart", podman, false, start_argv);
                if (r >= 0 && !spec->keep_container)
                        r = append_exec(m, "ExecStopPost", podman, true, rm_argv);
        }
        if (r < 0)
                return r;

        r = append_limits(m, spec->memory_max, spec->cpu_millis, spec->tasks_max);
        if (r < 0)
                return r;
        if (spec->runtime_max_sec > 0) {
                r = append_usec(m, "RuntimeMaxUSec", spec->runtime_max_sec);
                if (r < 0)
                        return r;
        }
        if (spec->stop_timeout_sec > 0) {
                r = append_usec(m, "TimeoutStopUSec", spec->stop_timeout_sec);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

static int unit_on_subscribed(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e && !sd_bus_error_has_name(e, "org.freedesktop.systemd1.AlreadySubscribed"))
                log_error("Failed to subscribe to systemd's signals: %s", e->message ?: e->name);
        return 0;
}

int unit_subscribe(sd_bus *bus) {
        if (!bus)
                return -EINVAL;
        register_systemd_errors();

        /* Without a subscriber systemd sends no JobRemoved and no PropertiesChanged. Asynchronous, yet in
         * effect before any later call of ours: systemd handles one connection's messages in order. */
        return sd_bus_call_method_async(
                bus,
                NULL,
                SYSTEMD_DEST,
                SYSTEMD_PATH,
                SYSTEMD_MANAGER,
                "Subscribe",
                unit_on_subscribed,
                NULL,
                NULL);
}

int unit_start(sd_bus *bus, const UnitSpec *spec, unit_done_t cb, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(unit_job_freep) UnitJob *j = NULL;
        int r;

        if (!bus || !spec || !cb || !unit_name_is_valid(spec->name) ||
            !container_name_is_valid(spec->container_name))
                return -EINVAL;
        if (spec->podman_path && spec->podman_path[0] != '/')
                return -EINVAL;
        if ((spec->docker_path && spec->docker_path[0] != '/') ||
            (spec->docker_socket && spec->docker_socket[0] != '/'))
                return -EINVAL;
        register_systemd_errors();

        r = build_start_message(bus, spec, &m);
        if (r < 0)
                return r;

        r = unit_job_new(bus, spec->name, "start", cb, userdata, &j);
        if (r < 0)
                return r;

        r = sd_bus_call_async(bus, &j->call, m, unit_job_on_reply, j, 0);
        if (r < 0)
                return r;

        TAKE_PTR(j);
        return 0;
}

int unit_start_slice(sd_bus *bus, const SliceSpec *spec, unit_done_t cb, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(unit_job_freep) UnitJob *j = NULL;
        int r;

        if (!bus || !spec || !cb || !unit_name_is_valid(spec->name) || !endswith(spec->name, ".slice"))
                return -EINVAL;
        register_systemd_errors();

        r = sd_bus_message_new_method_call(
                bus, &m, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER, "StartTransientUnit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", spec->name, "fail");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0 && spec->description)
                r = sd_bus_message_append(m, "(sv)", "Description", "s", spec->description);
        if (r >= 0)
                r = append_limits(m, spec->memory_max, spec->cpu_millis, spec->tasks_max);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r < 0)
                return r;

        r = unit_job_new(bus, spec->name, "start", cb, userdata, &j);
        if (r < 0)
                return r;
        r = sd_bus_call_async(bus, &j->call, m, unit_job_on_reply, j, 0);
        if (r < 0)
                return r;
        TAKE_PTR(j);
        return 0;
}

int unit_stop(sd_bus *bus, const char *name, unit_done_t cb, void *userdata) {
        _cleanup_(unit_job_freep) UnitJob *j = NULL;
        int r;

        if (!bus || !cb || !unit_name_is_valid(name))
                return -EINVAL;
        register_systemd_errors();

        r = unit_job_new(bus, name, "stop", cb, userdata, &j);
        if (r < 0)
                return r;
        j->missing_ok = true;

        r = sd_bus_call_method_async(
                bus,
                &j->call,
                SYSTEMD_DEST,
                SYSTEMD_PATH,
                SYSTEMD_MANAGER,
                "StopUnit",
                unit_job_on_reply,
                j,
                "ss",
                name,
                "replace");
        if (r < 0)
                return r;

        TAKE_PTR(j);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Plain calls without a job: KillUnit, ResetFailedUnit. */

typedef struct UnitCall {
        bool missing_ok;
        unit_done_t cb;
        void *userdata;
} UnitCall;

static void unit_call_destroy(void *userdata) {
        free(userdata);
}

static int unit_call_on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitCall *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e && !(c->missing_ok && sd_bus_error_has_name(e, "org.freedesktop.systemd1.NoSuchUnit")))
                c->cb(reply_errno(reply), e, c->userdata);
        else
                c->cb(0, NULL, c->userdata);
        return 0;
}

static int unit_call(
        sd_bus *bus,
        const char *member,
        bool missing_ok,
        unit_done_t cb,
        void *userdata,
        const char *types,
        ...) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        UnitCall *c;
        va_list ap;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->missing_ok = missing_ok;
        c->cb = cb;
        c->userdata = userdata;

        va_start(ap, types);
        r = sd_bus_call_method_asyncv(
                bus,
                &slot,
                SYSTEMD_DEST,
                SYSTEMD_PATH,
                SYSTEMD_MANAGER,
                member,
                unit_call_on_reply,
                c,
                types,
                ap);
        va_end(ap);
        if (r < 0) {
                free(c);
                return r;
        }

        /* The bus owns the call from here; the context goes with the slot, after the reply or when the
         * connection is freed. */
        (void) sd_bus_slot_set_destroy_callback(slot, unit_call_destroy);
        r = sd_bus_slot_set_floating(slot, 1);
        if (r < 0)
                return r;
        return 0;
}

int unit_kill(sd_bus *bus, const char *name, int signal, unit_done_t cb, void *userdata) {
        if (!bus || !cb || !unit_name_is_valid(name) || signal <= 0 || signal >= 65)
                return -EINVAL;
        register_systemd_errors();
        return unit_call(bus, "KillUnit", false, cb, userdata, "ssi", name, "all", (int32_t) signal);
}

int unit_reset_failed(sd_bus *bus, const char *name, unit_done_t cb, void *userdata) {
        if (!bus || !cb || !unit_name_is_valid(name))
                return -EINVAL;
        register_systemd_errors();
        return unit_call(bus, "ResetFailedUnit", true, cb, userdata, "s", name);
}

/* ---------------------------------------------------------------------------------------------------
 * State: one read is GetUnit (which, unlike LoadUnit or a call on the unit's path, does not load a unit
 * that is not there), then GetAll on the Unit and Service interfaces of the path it returned. */

typedef struct UnitSnapshot {
        char *load_state;
        char *active_state;
        char *sub_state;
        char *result;
        int exec_main_code;
        int exec_main_status;
        bool exists;
} UnitSnapshot;

static void unit_snapshot_done(UnitSnapshot *s) {
        s->load_state = mfree(s->load_state);
        s->active_state = mfree(s->active_state);
        s->sub_state = mfree(s->sub_state);
        s->result = mfree(s->result);
        s->exec_main_code = s->exec_main_status = 0;
        s->exists = false;
}

static int strdup_to(char **dst, const char *src) {
        char *p = NULL;

        if (src) {
                p = strdup(src);
                if (!p)
                        return -ENOMEM;
        }
        free(*dst);
        *dst = p;
        return 0;
}

static int unit_snapshot_copy(UnitSnapshot *dst, const UnitSnapshot *src) {
        int r;

        if (dst == src)
                return 0;
        r = strdup_to(&dst->load_state, src->load_state);
        if (r < 0)
                return r;
        r = strdup_to(&dst->active_state, src->active_state);
        if (r < 0)
                return r;
        r = strdup_to(&dst->sub_state, src->sub_state);
        if (r < 0)
                return r;
        r = strdup_to(&dst->result, src->result);
        if (r < 0)
                return r;
        dst->exec_main_code = src->exec_main_code;
        dst->exec_main_status = src->exec_main_status;
        dst->exists = src->exists;
        return 0;
}

static bool unit_snapshot_equal(const UnitSnapshot *a, const UnitSnapshot *b) {
        return streq_ptr(a->active_state, b->active_state) && streq_ptr(a->sub_state, b->sub_state) &&
                streq_ptr(a->result, b->result) && a->exec_main_code == b->exec_main_code &&
                a->exec_main_status == b->exec_main_status && a->exists == b->exists;
}

static UnitState unit_snapshot_to_state(const UnitSnapshot *s) {
        return (UnitState){
                .active_state = s->active_state,
                .sub_state = s->sub_state,
                .result = s->result,
                .exec_main_code = s->exec_main_code,
                .exec_main_status = s->exec_main_status,
                .exists = s->exists,
        };
}

static int read_string_variant(sd_bus_message *m, char **dst) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "v", "s", &s);
        if (r < 0)
                return r;
        return strdup_to(dst, s);
}

/* Reads an a{sv} of properties (from GetAll or PropertiesChanged) into s, skipping the ones we do not
 * follow. Only the properties present are written. */
static int read_properties(sd_bus_message *m, UnitSnapshot *s) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;
                int32_t i;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;

                if (streq(name, "LoadState"))
                        r = read_string_variant(m, &s->load_state);
                else if (streq(name, "ActiveState"))
                        r = read_string_variant(m, &s->active_state);
                else if (streq(name, "SubState"))
                        r = read_string_variant(m, &s->sub_state);
                else if (streq(name, "Result"))
                        r = read_string_variant(m, &s->result);
                else if (streq(name, "ExecMainCode")) {
                        r = sd_bus_message_read(m, "v", "i", &i);
                        if (r >= 0)
                                s->exec_main_code = i;
                } else if (streq(name, "ExecMainStatus")) {
                        r = sd_bus_message_read(m, "v", "i", &i);
                        if (r >= 0)
                                s->exec_main_status = i;
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;

        return sd_bus_message_exit_container(m);
}

typedef struct UnitReader UnitReader;
typedef void (*unit_reader_done_t)(UnitReader *rd, int r, UnitSnapshot *snapshot, void *userdata);

struct UnitReader {
        sd_bus *bus;
        char *name;
        bool is_service;
        sd_bus_slot *get_unit;
        sd_bus_slot *get_all_unit;
        sd_bus_slot *get_all_service;
        unsigned pending;
        int error;
        UnitSnapshot snapshot;
        unit_reader_done_t done;
        void *userdata;
};

static UnitReader *unit_reader_free(UnitReader *rd) {
        if (!rd)
                return NULL;
        sd_bus_slot_unref(rd->get_unit);
        sd_bus_slot_unref(rd->get_all_unit);
        sd_bus_slot_unref(rd->get_all_service);
        sd_bus_unref(rd->bus);
        unit_snapshot_done(&rd->snapshot);
        free(rd->name);
        return mfree(rd);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(UnitReader *, unit_reader_free);

/* The owner gets the snapshot and may free the reader from its callback. */
static void unit_reader_finish(UnitReader *rd, int r) {
        if (r >= 0 && rd->snapshot.exists && streq_ptr(rd->snapshot.load_state, "not-found")) {
                /* Unloaded between GetUnit and GetAll, and loaded again as an empty stub by the GetAll. */
                unit_snapshot_done(&rd->snapshot);
        }
        rd->done(rd, r, &rd->snapshot, rd->userdata);
}

static int unit_reader_on_get_all(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitReader *rd = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int r = 0;

        if (e) {
                log_debug("Reading the properties of %s failed: %s", rd->name, e->message ?: e->name);
                r = reply_errno(reply);
        } else {
                r = read_properties(reply, &rd->snapshot);
                if (r < 0)
                        log_debug_errno(r, "Failed to parse the properties of %s: %m", rd->name);
        }
        if (r < 0 && rd->error >= 0)
                rd->error = r;

        if (--rd->pending > 0)
                return 0;
        unit_reader_finish(rd, rd->error);
        return 0;
}

static int unit_reader_on_get_unit(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitReader *rd = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *path;
        int r;

        if (e) {
                if (sd_bus_error_has_name(e, "org.freedesktop.systemd1.NoSuchUnit")) {
                        unit_snapshot_done(&rd->snapshot);
                        unit_reader_finish(rd, 0);
                        return 0;
                }
                log_debug("GetUnit(%s) failed: %s", rd->name, e->message ?: e->name);
                unit_reader_finish(rd, reply_errno(reply));
                return 0;
        }

        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0) {
                unit_reader_finish(rd, r);
                return 0;
        }
        rd->snapshot.exists = true;

        r = sd_bus_call_method_async(
                rd->bus,
                &rd->get_all_unit,
                SYSTEMD_DEST,
                path,
                BUS_PROPERTIES,
                "GetAll",
                unit_reader_on_get_all,
                rd,
                "s",
                SYSTEMD_UNIT);
        if (r < 0) {
                unit_reader_finish(rd, r);
                return 0;
        }
        rd->pending++;

        if (rd->is_service) {
                r = sd_bus_call_method_async(
                        rd->bus,
                        &rd->get_all_service,
                        SYSTEMD_DEST,
                        path,
                        BUS_PROPERTIES,
                        "GetAll",
                        unit_reader_on_get_all,
                        rd,
                        "s",
                        SYSTEMD_SERVICE);
                if (r < 0) {
                        /* The Unit read is in flight and finishes the reader with this error. */
                        rd->error = r;
                        return 0;
                }
                rd->pending++;
        }
        return 0;
}

static int unit_reader_new(
        sd_bus *bus, const char *name, unit_reader_done_t done, void *userdata, UnitReader **ret) {
        _cleanup_(unit_reader_freep) UnitReader *rd = NULL;
        const char *suffix;
        int r;

        rd = calloc(1, sizeof(*rd));
        if (!rd)
                return -ENOMEM;
        rd->bus = sd_bus_ref(bus);
        rd->done = done;
        rd->userdata = userdata;
        rd->name = strdup(name);
        if (!rd->name)
                return -ENOMEM;
        suffix = strrchr(name, '.');
        rd->is_service = suffix && streq(suffix, ".service");

        r = sd_bus_call_method_async(
                bus,
                &rd->get_unit,
                SYSTEMD_DEST,
                SYSTEMD_PATH,
                SYSTEMD_MANAGER,
                "GetUnit",
                unit_reader_on_get_unit,
                rd,
                "s",
                name);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(rd);
        return 0;
}

typedef struct UnitGetState {
        UnitReader *reader;
        unit_state_t cb;
        void *userdata;
} UnitGetState;

static void unit_get_state_on_read(UnitReader *rd, int r, UnitSnapshot *snapshot, void *userdata) {
        UnitGetState *g = userdata;
        UnitState state;

        if (r < 0) {
                log_warning_errno(r, "Failed to read the state of unit %s: %m", rd->name);
                state = (UnitState){ .error = r };
        } else
                state = unit_snapshot_to_state(snapshot);
        g->cb(&state, g->userdata);
        unit_reader_free(g->reader);
        free(g);
}

int unit_get_state(sd_bus *bus, const char *name, unit_state_t cb, void *userdata) {
        _cleanup_free_ UnitGetState *g = NULL;
        int r;

        if (!bus || !cb || !unit_name_is_valid(name))
                return -EINVAL;
        register_systemd_errors();

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->cb = cb;
        g->userdata = userdata;

        r = unit_reader_new(bus, name, unit_get_state_on_read, g, &g->reader);
        if (r < 0)
                return r;

        TAKE_PTR(g);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Watches. systemd sends the Service interface's PropertiesChanged (Result, ExecMain*) before the Unit
 * one (ActiveState), so each signal starts a fresh read of both; reads do not overlap, a signal during a
 * read asks for one more. A unit that ends successfully is unloaded at once (default CollectMode), so
 * the read finds nothing: then the values the signals carried, which systemd flushes before unloading,
 * are the last state. */

typedef struct UnitWatch {
        sd_bus *bus;
        char *name;
        UnitReader *reader;
        bool again;
        UnitSnapshot signalled; /* the latest values seen in signals */
        UnitSnapshot reported;
        bool have_reported;
        unit_state_t cb;
        void *userdata;
} UnitWatch;

static void unit_watch_free(void *userdata) {
        UnitWatch *w = userdata;

        if (!w)
                return;
        unit_reader_free(w->reader);
        unit_snapshot_done(&w->signalled);
        unit_snapshot_done(&w->reported);
        free(w->name);
        free(w);
}

static void unit_watch_on_read(UnitReader *rd, int r, UnitSnapshot *snapshot, void *userdata);

static int unit_watch_read(UnitWatch *w) {
        int r;

        if (w->reader) {
                w->again = true;
                return 0;
        }
        w->again = false;
        r = unit_reader_new(w->bus, w->name, unit_watch_on_read, w, &w->reader);
        if (r < 0)
                return log_warning_errno(r, "Failed to read the state of unit %s: %m", w->name);
        return 0;
}

static void unit_watch_on_read(UnitReader *rd, int r, UnitSnapshot *snapshot, void *userdata) {
        UnitWatch *w = userdata;
        _cleanup_(unit_snapshot_done) UnitSnapshot current = {};
        _cleanup_(unit_snapshot_done) UnitSnapshot copy = {};
        UnitState state;

        /* Take the snapshot over before the reader goes. */
        current = *snapshot;
        *snapshot = (UnitSnapshot){};
        w->reader = unit_reader_free(w->reader);

        if (r < 0) {
                log_warning_errno(r, "Failed to read the state of unit %s: %m", w->name);
                if (w->again)
                        (void) unit_watch_read(w);
                return;
        }

        if (current.exists) {
                /* The freshest full picture: it also stands for the unit once it is gone. */
                if (unit_snapshot_copy(&w->signalled, &current) < 0) {
                        log_oom();
                        return;
                }
        } else if (w->signalled.active_state) {
                if (unit_snapshot_copy(&current, &w->signalled) < 0) {
                        log_oom();
                        return;
                }
                current.exists = false;
        }

        if (w->again)
                (void) unit_watch_read(w);

        if (w->have_reported && unit_snapshot_equal(&current, &w->reported))
                return;
        if (unit_snapshot_copy(&w->reported, &current) < 0) {
                log_oom();
                return;
        }
        w->have_reported = true;

        /* The callback may end the watch (unref its slot), which frees w: hand it strings of our own. */
        copy = current;
        current = (UnitSnapshot){};
        state = unit_snapshot_to_state(&copy);
        w->cb(&state, w->userdata);
}

static int unit_watch_on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitWatch *w = userdata;
        const char *interface;
        int r;

        r = sd_bus_message_read(m, "s", &interface);
        if (r < 0)
                return 0;
        if (!streq(interface, SYSTEMD_UNIT) && !streq(interface, SYSTEMD_SERVICE))
                return 0;

        r = read_properties(m, &w->signalled);
        if (r < 0)
                log_debug_errno(r, "Failed to parse PropertiesChanged of %s: %m", w->name);
        else if (streq(interface, SYSTEMD_UNIT))
                w->signalled.exists = true;

        (void) unit_watch_read(w);
        return 0;
}

static int unit_watch_on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        UnitWatch *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e)
                log_error("Failed to watch unit %s: %s", w->name, e->message ?: e->name);
        return 0;
}

int unit_watch(sd_bus *bus, const char *name, unit_state_t cb, void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_free_ char *path = NULL;
        UnitWatch *w;
        int r;

        if (!bus || !cb || !ret_slot || !unit_name_is_valid(name))
                return -EINVAL;
        register_systemd_errors();

        r = sd_bus_path_encode(SYSTEMD_UNIT_PATH_PREFIX, name, &path);
        if (r < 0)
                return r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->bus = bus;
        w->cb = cb;
        w->userdata = userdata;
        w->name = strdup(name);
        if (!w->name) {
                unit_watch_free(w);
                return -ENOMEM;
        }

        /* The match goes out first: a change after the initial read below cannot be missed. */
        r = sd_bus_match_signal_async(
                bus,
                &slot,
                SYSTEMD_DEST,
                path,
                BUS_PROPERTIES,
                "PropertiesChanged",
                unit_watch_on_properties_changed,
                unit_watch_on_match_installed,
                w);
        if (r < 0) {
                unit_watch_free(w);
                return r;
        }
        /* The caller owns the slot; the watch goes with it. */
        (void) sd_bus_slot_set_destroy_callback(slot, unit_watch_free);

        r = unit_watch_read(w);
        if (r < 0)
                return r; /* freeing the slot frees w */

        *ret_slot = TAKE_PTR(slot);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * SetUnitProperties on a running unit: the warm pool's hand-over (pool.c) gives a started session the
 * limits its caller asked for. */

int unit_set_limits(sd_bus *bus, const UnitLimits *limits, unit_done_t cb, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        UnitCall *c;
        int r;

        if (!bus || !limits || !cb || !unit_name_is_valid(limits->name))
                return -EINVAL;
        register_systemd_errors();

        r = sd_bus_message_new_method_call(
                bus, &m, SYSTEMD_DEST, SYSTEMD_PATH, SYSTEMD_MANAGER, "SetUnitProperties");
        if (r < 0)
                return r;
        /* runtime = true: the change is for this run of the unit, not written to /etc. */
        r = sd_bus_message_append(m, "sb", limits->name, 1);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0)
                r = append_limits(m, limits->memory_max, limits->cpu_millis, limits->tasks_max);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->cb = cb;
        c->userdata = userdata;
        r = sd_bus_call_async(bus, &slot, m, unit_call_on_reply, c, 0);
        if (r < 0) {
                free(c);
                return r;
        }
        (void) sd_bus_slot_set_destroy_callback(slot, unit_call_destroy);
        return sd_bus_slot_set_floating(slot, 1);
}

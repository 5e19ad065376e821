/* ccdockerctl: the command-line client of ccdockerd. It speaks the D-Bus API of docs/dbus-api.md and
 * nothing else, on the system bus or, with --user, the user bus: create, list, show, stop and remove
 * sessions, printing a table or "Key: value" lines for people and, with --json, JSON for scripts. Input
 * is checked only as far as building the D-Bus message needs (numbers, NAME=VALUE); the daemon
 * validates everything else once, at its edge, and its error messages are shown as they come. Exit
 * status 1 is a failure reported by the bus or the daemon, 2 a usage error. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "cleanup.h"
#include "config-build.h"
#include "log.h"
#include "util.h"

#define EXIT_USAGE 2

#define BUS_NAME "org.ccdocker1"
#define MANAGER_PATH "/org/ccdocker1"
#define MANAGER_INTERFACE "org.ccdocker1.Manager"
#define SESSION_INTERFACE "org.ccdocker1.Session"

/* CreateSession replies after polkit and podman have answered (is the image there?), which a busy
 * podman can make slow; Stop replies when systemd has stopped the unit, which may take the daemon's
 * StopTimeoutSec= and the container's removal. sd-bus's default of 25 s is too short for either. */
#define SLOW_CALL_USEC (120ULL * 1000000ULL)

/* Global options. */
static bool arg_user = false;
static bool arg_json = false;

/* create */
static const char *arg_image = NULL;
static const char *arg_memory = NULL;
static const char *arg_cpus = NULL;
static uint32_t arg_tasks = 0;
static bool arg_tasks_set = false;
static uint32_t arg_timeout = 0;
static bool arg_timeout_set = false;
static const char *arg_workspace = NULL;
static const char *arg_task_type = NULL;
static const char *arg_network = NULL;
static char **arg_env = NULL; /* "NAME=VALUE" strings of argv, in order; a later NAME wins */
static size_t arg_n_env = 0;

/* stop */
static bool arg_force = false;

enum {
        ARG_VERSION = 0x100,
        ARG_USER,
        ARG_SYSTEM,
        ARG_JSON,
        ARG_IMAGE,
        ARG_MEMORY,
        ARG_CPUS,
        ARG_TASKS,
        ARG_TIMEOUT,
        ARG_WORKSPACE,
        ARG_TASK_TYPE,
        ARG_ENV,
        ARG_NETWORK,
        ARG_FORCE,
};

/* Accepted before the command and after it, so "ccdockerctl list --json" works too. */
/* clang-format off */
#define COMMON_OPTIONS                                 \
        { "help", no_argument, NULL, 'h' },            \
        { "version", no_argument, NULL, ARG_VERSION }, \
        { "user", no_argument, NULL, ARG_USER },       \
        { "system", no_argument, NULL, ARG_SYSTEM },   \
        { "json", no_argument, NULL, ARG_JSON }
/* clang-format on */

static void help(void) {
        printf("ccdockerctl [OPTIONS...] COMMAND [ARGS...]\n"
               "\n"
               "Control ccdockerd, the daemon that runs Claude Code sessions in containers, over its\n"
               "D-Bus API (org.ccdocker1 on the system bus, or with --user on the user bus).\n"
               "\n"
               "Commands:\n"
               "  create [CREATE OPTIONS...]  Create and start a session and print its ID\n"
               "  list                        List sessions: ID, state, parent, unit, creation time\n"
               "  status ID                   Show every property of a session\n"
               "  stop ID [--force]           Stop a session\n"
               "  remove ID                   Forget a stopped or failed session\n"
               "\n"
               "Options (before or after the command):\n"
               "  -h --help                   Show this help and exit\n"
               "     --version                Show the version and exit\n"
               "     --system                 Talk to ccdockerd on the system bus (the default)\n"
               "     --user                   Talk to ccdockerd on the calling user's bus\n"
               "     --json                   Print JSON instead of text (create, list, status)\n"
               "\n"
               "Create options (absent ones take the daemon's defaults; values over the daemon's\n"
               "ceilings are refused):\n"
               "     --image IMAGE            Container image\n"
               "     --memory SIZE            Memory limit: bytes, or with K, M, G or T (512M, 2G)\n"
               "     --cpus N                 CPU limit in CPUs (1, 1.5)\n"
               "     --tasks N                Limit on processes and threads\n"
               "     --timeout SEC            End the session after SEC seconds\n"
               "     --workspace ephemeral|PATH\n"
               "                              A fresh directory removed with the session, or an\n"
               "                              absolute host path below the daemon's workspace roots\n"
               "     --task-type TYPE         A free-text label for the session\n"
               "     --env NAME=VALUE         Set an environment variable in the session; may be\n"
               "                              repeated, the last value of a NAME wins\n"
               "     --network none|host      The container's network (default: none)\n"
               "\n"
               "Stop options:\n"
               "     --force                  Kill at once instead of stopping gracefully\n"
               "\n"
               "Output:\n"
               "  create prints the new session's ID; list prints a table with CREATED in local\n"
               "  time (ISO 8601); status prints \"Key: value\" lines. With --json, create and status\n"
               "  print a session object and list an array of them, with the keys id, state,\n"
               "  state_reason, unit, container_id, parent_id, depth, task_type, created_at (RFC 3339,\n"
               "  UTC), owner_uid, image, workspace and object_path. stop and remove print nothing.\n"
               "\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the bus or ccdockerd reported a failure; stderr has one line\n"
               "     \"ccdockerctl: <what failed>: <the daemon's message>\"\n"
               "  2  usage error: unknown command or option, missing or bad argument\n"
               "\n"
               "Examples:\n"
               "  ccdockerctl create --memory 2G --cpus 1.5 --env LANG=C.UTF-8\n"
               "  ccdockerctl create --workspace /srv/work/project --timeout 3600 --json\n"
               "  ccdockerctl --user list\n"
               "  ccdockerctl status 3f2a9c0b71de --json | jq -r .state\n"
               "  ccdockerctl stop 3f2a9c0b71de && ccdockerctl remove 3f2a9c0b71de\n"
               "\n"
               "See also: docs/ccdockerctl.md, docs/dbus-api.md, busctl(1)\n");
}

static int usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *format, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0)
                return log_oom();

        log_error("%s (see 'ccdockerctl --help')", s);
        return -EINVAL;
}

/* Reports what getopt_long() refused. With opterr off and ':' in the option string it returns '?' for
 * an unknown, ambiguous or wrongly given option and ':' for a missing argument, and says nothing
 * itself, so the message names the option as the user wrote it. */
static int option_error(int c, char *argv[], const struct option *options, const char *verb) {
        char name[64] = "", where[64] = "";
        const char *arg = argv[optind - 1];
        size_t len, n_matches = 0;
        bool exact_flag = false;

        if (verb)
                (void) snprintf(where, sizeof(where), " for '%s'", verb);

        if (optopt > 0 && optopt < 0x100 && !startswith(arg, "--"))
                return usage_error("Unknown option '-%c'%s", optopt, where);

        len = strcspn(arg, "=");
        (void) snprintf(name, sizeof(name), "%.*s", (int) len, arg);

        if (c == ':')
                return usage_error("Option '%s' needs an argument", name);

        if (startswith(name, "--"))
                for (const struct option *o = options; o->name; o++) {
                        if (streq(o->name, name + 2)) {
                                exact_flag = o->has_arg == no_argument;
                                n_matches = 1;
                                break;
                        }
                        if (startswith(o->name, name + 2))
                                n_matches++;
                }

        if (exact_flag)
                return usage_error("Option '%s' takes no argument", name);
        if (n_matches > 1)
                return usage_error("Ambiguous option '%s'%s", name, where);
        return usage_error("Unknown option '%s'%s", name, where);
}

/* Handles an option of COMMON_OPTIONS. Returns 1 if handled, 0 if c is not one of them, and for --help
 * and --version -ECANCELED after printing, which ends the program successfully. */
static int parse_common_option(int c) {
        switch (c) {
        case 'h':
                help();
                return -ECANCELED;
        case ARG_VERSION:
                printf("ccdockerctl %s\n", PROJECT_VERSION);
                return -ECANCELED;
        case ARG_USER:
                arg_user = true;
                return 1;
        case ARG_SYSTEM:
                arg_user = false;
                return 1;
        case ARG_JSON:
                arg_json = true;
                return 1;
        default:
                return 0;
        }
}

static int parse_u32(const char *option, const char *s, uint32_t *ret) {
        uint64_t v;
        int r;

        r = safe_atou64(s, &v);
        if (r < 0 || v > UINT32_MAX)
                return usage_error(
                        "Option '%s' needs a whole number from 0 to %" PRIu32 ", got '%s'",
                        option,
                        UINT32_MAX,
                        s);
        *ret = (uint32_t) v;
        return 0;
}

static bool env_name_is_valid(const char *s, size_t len) {
        if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (size_t i = 0; i < len; i++)
                if (!(s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= '0' && s[i] <= '9')))
                        return false;
        return true;
}

static int add_env(char *assignment) {
        const char *eq = strchr(assignment, '=');
        char **l;

        if (!eq || !env_name_is_valid(assignment, (size_t) (eq - assignment)))
                return usage_error(
                        "Option '--env' needs NAME=VALUE with NAME of letters, digits and '_', not starting "
                        "with a digit, got '%s'",
                        assignment);

        l = reallocarray(arg_env, arg_n_env + 1, sizeof(char *));
        if (!l)
                return log_oom();
        arg_env = l;
        arg_env[arg_n_env++] = assignment;
        return 0;
}

static int parse_create_option(int c, char *optarg_value) {
        switch (c) {
        case ARG_IMAGE:
                arg_image = optarg_value;
                return 0;
        case ARG_MEMORY:
                arg_memory = optarg_value;
                return 0;
        case ARG_CPUS:
                arg_cpus = optarg_value;
                return 0;
        case ARG_TASKS:
                arg_tasks_set = true;
                return parse_u32("--tasks", optarg_value, &arg_tasks);
        case ARG_TIMEOUT:
                arg_timeout_set = true;
                return parse_u32("--timeout", optarg_value, &arg_timeout);
        case ARG_WORKSPACE:
                /* A relative path would mean the daemon's working directory, not ours. */
                if (!streq(optarg_value, "ephemeral") && optarg_value[0] != '/')
                        return usage_error(
                                "Option '--workspace' needs 'ephemeral' or an absolute path, got '%s'",
                                optarg_value);
                arg_workspace = optarg_value;
                return 0;
        case ARG_TASK_TYPE:
                arg_task_type = optarg_value;
                return 0;
        case ARG_ENV:
                return add_env(optarg_value);
        case ARG_NETWORK:
                arg_network = optarg_value;
                return 0;
        default:
                return -EINVAL;
        }
}

static int parse_stop_option(int c, char *optarg_value) {
        if (c != ARG_FORCE)
                return -EINVAL;
        arg_force = true;
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* D-Bus helpers */

static const char *bus_error_text(const sd_bus_error *error, int r) {
        if (sd_bus_error_is_set(error))
                return !isempty(error->message) ? error->message : error->name;
        return strerror(r < 0 ? -r : r);
}

static int connect_bus(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = arg_user ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r < 0)
                return log_error_errno(
                        r, "Failed to connect to the %s bus: %m", arg_user ? "user" : "system");

        *ret = TAKE_PTR(bus);
        return 0;
}

static int get_session_path(sd_bus *bus, const char *id, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        char *p;
        int r;

        r = sd_bus_call_method(
                bus, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "GetSession", &error, &reply, "s", id);
        if (r < 0) {
                log_error("Failed to look up session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }

        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of GetSession: %m");

        p = strdup(path);
        if (!p)
                return log_oom();
        *ret = p;
        return 0;
}

static int get_session_properties(sd_bus *bus, const char *path, sd_bus_message **ret, sd_bus_error *error) {
        return sd_bus_call_method(
                bus,
                BUS_NAME,
                path,
                "org.freedesktop.DBus.Properties",
                "GetAll",
                error,
                ret,
                "s",
                SESSION_INTERFACE);
}

/* One property value of a GetAll reply. Basic types are read into the union; for any other type
 * (arrays, structs, dictionaries) only the signature is known. */
typedef struct PropertyValue {
        const char *signature;
        char type; /* the basic type, or 0 */
        union {
                const char *s; /* s, o, g */
                int b;
                uint8_t y;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
        };
} PropertyValue;

typedef int (*property_cb_t)(const char *name, const PropertyValue *value, void *userdata);

/* Calls cb for each entry of the a{sv} of a GetAll reply, in the order the daemon sent them. */
static int read_properties(sd_bus_message *reply, property_cb_t cb, void *userdata) {
        int r;

        r = sd_bus_message_rewind(reply, true);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;

        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                PropertyValue v = {};
                const char *name;
                char type;

                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return r;

                r = sd_bus_message_peek_type(reply, &type, &v.signature);
                if (r < 0)
                        return r;
                if (type != 'v')
                        return -EBADMSG;

                r = sd_bus_message_enter_container(reply, 'v', v.signature);
                if (r < 0)
                        return r;

                if (v.signature[0] != '\0' && v.signature[1] == '\0' &&
                    strchr("sogbynqiuxtd", v.signature[0])) {
                        v.type = v.signature[0];
                        r = sd_bus_message_read_basic(reply, v.type, &v.s);
                } else
                        r = sd_bus_message_skip(reply, v.signature);
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;

                r = cb(name, &v, userdata);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;

        return sd_bus_message_exit_container(reply);
}

/* ------------------------------------------------------------------------------------------------ */
/* Time formats */

/* "2025-03-14T09:26:53+01:00": local time, ISO 8601 with the UTC offset. */
static int format_local_time(uint64_t usec, char *buf, size_t size) {
        time_t sec = (time_t) (usec / 1000000);
        struct tm tm;
        size_t n;

        if (usec == 0 || !localtime_r(&sec, &tm))
                return -ERANGE;

        n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm);
        /* strftime's %z is "+0100"; ISO 8601's extended form, like the date, has a colon. */
        if (n < 5 || n + 2 > size)
                return -ERANGE;
        memmove(buf + n - 1, buf + n - 2, 3);
        buf[n - 2] = ':';
        return 0;
}

/* "2025-03-14T08:26:53.123456Z": UTC, RFC 3339 with microseconds. */
static int format_rfc3339_utc(uint64_t usec, char *buf, size_t size) {
        time_t sec = (time_t) (usec / 1000000);
        struct tm tm;
        size_t n;

        if (usec == 0 || !gmtime_r(&sec, &tm))
                return -ERANGE;

        n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        if (n == 0 ||
            (size_t) snprintf(buf + n, size - n, ".%06uZ", (unsigned) (usec % 1000000)) >= size - n)
                return -ERANGE;
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Output */

static int max_int(int a, int b) {
        return a > b ? a : b;
}

/* CreatedAt, and any later ...At property of type t, is usec since the epoch. */
static bool property_is_timestamp(const char *name) {
        size_t len = strlen(name);

        return len > 2 && streq(name + len - 2, "At");
}

static int flush_stdout(void) {
        if (fflush(stdout) != 0 || ferror(stdout))
                return log_error_errno(errno ?: EIO, "Failed to write output: %m");
        return 0;
}

static int print_json(json_t *j) {
        if (json_dumpf(j, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF)
                return log_error_errno(EIO, "Failed to write JSON output: %m");
        return flush_stdout();
}

enum {
        MAP_EMPTY_IS_NULL = 1 << 0, /* an empty string becomes null */
        MAP_TIMESTAMP = 1 << 1,     /* usec since the epoch becomes RFC 3339 text, 0 null */
};

/* The session object of --json: these keys in this order, null for a property the daemon did not
 * send, plus object_path. */
static const struct {
        const char *property;
        const char *key;
        char type;
        unsigned flags;
} session_json_map[] = {
        { "Id", "id", 's', 0 },
        { "State", "state", 's', 0 },
        { "StateReason", "state_reason", 's', 0 },
        { "Unit", "unit", 's', 0 },
        { "ContainerId", "container_id", 's', 0 },
        { "ParentId", "parent_id", 's', MAP_EMPTY_IS_NULL },
        { "Depth", "depth", 'u', 0 },
        { "TaskType", "task_type", 's', MAP_EMPTY_IS_NULL },
        { "CreatedAt", "created_at", 't', MAP_TIMESTAMP },
        { "OwnerUID", "owner_uid", 'u', 0 },
        { "Image", "image", 's', 0 },
        { "Workspace", "workspace", 's', 0 },
};

static int session_json_property(const char *name, const PropertyValue *v, void *userdata) {
        json_t *o = userdata, *value;

        for (size_t i = 0; i < ELEMENTSOF(session_json_map); i++) {
                if (!streq(session_json_map[i].property, name))
                        continue;
                if (v->type != session_json_map[i].type)
                        return 0; /* not the documented type: leave it null */

                if (v->type == 's')
                        value = (session_json_map[i].flags & MAP_EMPTY_IS_NULL) && isempty(v->s)
                                ? json_null()
                                : json_string(v->s);
                else if (v->type == 'u')
                        value = json_integer(v->u);
                else if (session_json_map[i].flags & MAP_TIMESTAMP) {
                        char buf[64];

                        value = format_rfc3339_utc(v->t, buf, sizeof(buf)) < 0 ? json_null()
                                                                               : json_string(buf);
                } else
                        value = json_integer((json_int_t) v->t);

                if (!value || json_object_set_new(o, session_json_map[i].key, value) < 0)
                        return -ENOMEM;
                return 0;
        }
        return 0;
}

static int session_json_from_reply(sd_bus_message *reply, const char *path, json_t **ret) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        int r;

        o = json_object();
        if (!o)
                return log_oom();

        /* Every key first, so the order is fixed whatever order the daemon sends. */
        for (size_t i = 0; i < ELEMENTSOF(session_json_map); i++)
                if (json_object_set_new(o, session_json_map[i].key, json_null()) < 0)
                        return log_oom();
        if (json_object_set_new(o, "object_path", json_string(path)) < 0)
                return log_oom();

        r = read_properties(reply, session_json_property, o);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(r, "Failed to parse the properties of %s: %m", path);

        *ret = TAKE_PTR(o);
        return 0;
}

/* The session object of the session at path; a vanished session is reported as -ENOENT, unlogged,
 * for list to skip. */
static int session_json_from_path(sd_bus *bus, const char *id, const char *path, json_t **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = get_session_properties(bus, path, &reply, &error);
        if (r < 0) {
                if (sd_bus_error_has_names(
                            &error,
                            "org.ccdocker1.Error.NoSuchSession",
                            SD_BUS_ERROR_UNKNOWN_OBJECT,
                            SD_BUS_ERROR_UNKNOWN_INTERFACE))
                        return -ENOENT;
                log_error("Failed to get the properties of session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }

        return session_json_from_reply(reply, path, ret);
}

static int print_property(const char *name, const PropertyValue *v, void *userdata) {
        char buf[64];

        printf("%s: ", name);
        switch (v->type) {
        case 's':
        case 'o':
        case 'g':
                printf("%s\n", isempty(v->s) ? "-" : v->s);
                break;
        case 'b':
                printf("%s\n", v->b ? "yes" : "no");
                break;
        case 'y':
                printf("%u\n", (unsigned) v->y);
                break;
        case 'n':
                printf("%d\n", (int) v->n);
                break;
        case 'q':
                printf("%u\n", (unsigned) v->q);
                break;
        case 'i':
                printf("%" PRIi32 "\n", v->i);
                break;
        case 'u':
                printf("%" PRIu32 "\n", v->u);
                break;
        case 'x':
                printf("%" PRIi64 "\n", v->x);
                break;
        case 't':
                if (property_is_timestamp(name) && format_local_time(v->t, buf, sizeof(buf)) >= 0)
                        printf("%s\n", buf);
                else
                        printf("%" PRIu64 "\n", v->t);
                break;
        case 'd':
                printf("%g\n", v->d);
                break;
        default:
                printf("[%s]\n", v->signature);
        }
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Commands */

static int append_variant_string(sd_bus_message *m, const char *key, const char *value) {
        return value ? sd_bus_message_append(m, "{sv}", key, "s", value) : 0;
}

static int append_environment(sd_bus_message *m) {
        int r;

        if (arg_n_env == 0)
                return 0;

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", "environment");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'v', "a{ss}");
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;

        for (size_t i = 0; i < arg_n_env; i++) {
                size_t len = strcspn(arg_env[i], "=");
                _cleanup_free_ char *name = NULL;
                bool overridden = false;

                for (size_t j = i + 1; j < arg_n_env && !overridden; j++)
                        overridden = strncmp(arg_env[j], arg_env[i], len + 1) == 0;
                if (overridden)
                        continue;

                name = strndup(arg_env[i], len);
                if (!name)
                        return -ENOMEM;
                r = sd_bus_message_append(m, "{ss}", name, arg_env[i] + len + 1);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* The a{sv} of CreateSession: only what was given, so the daemon applies its defaults to the rest. */
static int append_create_config(sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        r = append_variant_string(m, "workspace", arg_workspace);
        if (r >= 0)
                r = append_variant_string(m, "image", arg_image);
        if (r >= 0)
                r = append_variant_string(m, "memory", arg_memory);
        if (r >= 0)
                r = append_variant_string(m, "cpus", arg_cpus);
        if (r >= 0 && arg_tasks_set)
                r = sd_bus_message_append(m, "{sv}", "tasks", "u", arg_tasks);
        if (r >= 0 && arg_timeout_set)
                r = sd_bus_message_append(m, "{sv}", "timeout_seconds", "u", arg_timeout);
        if (r >= 0)
                r = append_variant_string(m, "task_type", arg_task_type);
        if (r >= 0)
                r = append_environment(m);
        if (r >= 0)
                r = append_variant_string(m, "network", arg_network);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

static int verb_create(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(json_decrefp) json_t *o = NULL;
        const char *id, *path;
        int r;

        r = sd_bus_message_new_method_call(
                bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "CreateSession");
        if (r < 0)
                return log_error_errno(r, "Failed to create the CreateSession call: %m");

        r = append_create_config(m);
        if (r < 0)
                return log_error_errno(r, "Failed to build the session configuration: %m");

        r = sd_bus_call(bus, m, SLOW_CALL_USEC, &error, &reply);
        if (r < 0) {
                log_error("Failed to create session: %s", bus_error_text(&error, r));
                return r;
        }

        r = sd_bus_message_read(reply, "so", &id, &path);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of CreateSession: %m");

        if (!arg_json) {
                printf("%s\n", id);
                return flush_stdout();
        }

        r = session_json_from_path(bus, id, path, &o);
        if (r == -ENOENT)
                return log_error_errno(r, "Session '%s' was removed before it could be shown.", id);
        if (r < 0)
                return r;
        return print_json(o);
}

typedef struct SessionRow {
        const char *id, *parent_id, *state, *unit, *path;
        uint64_t created_at;
} SessionRow;

static int session_row_compare(const void *a, const void *b) {
        const SessionRow *x = a, *y = b;

        if (x->created_at != y->created_at)
                return x->created_at < y->created_at ? -1 : 1;
        return strcmp(x->id, y->id);
}

#define N_COLUMNS 5

/* The last column is not padded. */
static void print_row(const int widths[static N_COLUMNS], const char *const cells[static N_COLUMNS]) {
        for (size_t j = 0; j < N_COLUMNS - 1; j++)
                printf("%-*s  ", widths[j], cells[j]);
        printf("%s\n", cells[N_COLUMNS - 1]);
}

static int print_session_table(const SessionRow *rows, size_t n) {
        static const char *const header[N_COLUMNS] = { "ID", "STATE", "PARENT", "UNIT", "CREATED" };
        int widths[N_COLUMNS];

        if (n == 0) {
                printf("No sessions.\n");
                return flush_stdout();
        }

        for (size_t j = 0; j < N_COLUMNS; j++)
                widths[j] = (int) strlen(header[j]);
        for (size_t i = 0; i < n; i++) {
                widths[0] = max_int(widths[0], (int) strlen(rows[i].id));
                widths[1] = max_int(widths[1], (int) strlen(rows[i].state));
                widths[2] = max_int(widths[2], (int) strlen(strempty(rows[i].parent_id)));
                widths[3] = max_int(widths[3], (int) strlen(rows[i].unit));
        }

        print_row(widths, header);
        for (size_t i = 0; i < n; i++) {
                char created[64];

                if (format_local_time(rows[i].created_at, created, sizeof(created)) < 0)
                        strcpy(created, "-");
                print_row(
                        widths,
                        (const char *const[N_COLUMNS]){
                                rows[i].id,
                                rows[i].state,
                                isempty(rows[i].parent_id) ? "-" : rows[i].parent_id,
                                rows[i].unit,
                                created,
                        });
        }
        return flush_stdout();
}

static int print_session_array(sd_bus *bus, const SessionRow *rows, size_t n) {
        _cleanup_(json_decrefp) json_t *a = NULL;
        int r;

        a = json_array();
        if (!a)
                return log_oom();

        for (size_t i = 0; i < n; i++) {
                json_t *o;

                r = session_json_from_path(bus, rows[i].id, rows[i].path, &o);
                if (r == -ENOENT)
                        continue; /* removed since ListSessions */
                if (r < 0)
                        return r;
                if (json_array_append_new(a, o) < 0)
                        return log_oom();
        }

        return print_json(a);
}

static int verb_list(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ SessionRow *rows = NULL;
        size_t n = 0;
        SessionRow row;
        int r;

        r = sd_bus_call_method(
                bus, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "ListSessions", &error, &reply, NULL);
        if (r < 0) {
                log_error("Failed to list sessions: %s", bus_error_text(&error, r));
                return r;
        }

        r = sd_bus_message_enter_container(reply, 'a', "(ssssto)");
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of ListSessions: %m");

        while ((r = sd_bus_message_read(
                        reply,
                        "(ssssto)",
                        &row.id,
                        &row.parent_id,
                        &row.state,
                        &row.unit,
                        &row.created_at,
                        &row.path)) > 0) {
                SessionRow *l = reallocarray(rows, n + 1, sizeof(SessionRow));

                if (!l)
                        return log_oom();
                rows = l;
                rows[n++] = row;
        }
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of ListSessions: %m");

        if (n > 0)
                qsort(rows, n, sizeof(SessionRow), session_row_compare);

        return arg_json ? print_session_array(bus, rows, n) : print_session_table(rows, n);
}

static int verb_status(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *o = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        r = get_session_properties(bus, path, &reply, &error);
        if (r < 0) {
                log_error("Failed to get the properties of session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }

        if (arg_json) {
                r = session_json_from_reply(reply, path, &o);
                if (r < 0)
                        return r;
                return print_json(o);
        }

        r = read_properties(reply, print_property, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the properties of session '%s': %m", id);
        return flush_stdout();
}

static int verb_stop(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        r = sd_bus_set_method_call_timeout(bus, SLOW_CALL_USEC);
        if (r < 0)
                return log_error_errno(r, "Failed to set the method call timeout: %m");

        r = sd_bus_call_method(bus, BUS_NAME, path, SESSION_INTERFACE, "Stop", &error, NULL, "b", arg_force);
        if (r < 0) {
                log_error("Failed to stop session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }
        return 0;
}

static int verb_remove(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        r = sd_bus_call_method(bus, BUS_NAME, path, SESSION_INTERFACE, "Remove", &error, NULL, NULL);
        if (r < 0) {
                log_error("Failed to remove session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Command line */

static const struct option create_options[] = {
        COMMON_OPTIONS,
        { "image", required_argument, NULL, ARG_IMAGE },
        { "memory", required_argument, NULL, ARG_MEMORY },
        { "cpus", required_argument, NULL, ARG_CPUS },
        { "tasks", required_argument, NULL, ARG_TASKS },
        { "timeout", required_argument, NULL, ARG_TIMEOUT },
        { "workspace", required_argument, NULL, ARG_WORKSPACE },
        { "task-type", required_argument, NULL, ARG_TASK_TYPE },
        { "env", required_argument, NULL, ARG_ENV },
        { "network", required_argument, NULL, ARG_NETWORK },
        {},
};

static const struct option stop_options[] = {
        COMMON_OPTIONS,
        { "force", no_argument, NULL, ARG_FORCE },
        {},
};

static const struct option common_options[] = {
        COMMON_OPTIONS,
        {},
};

typedef struct Verb {
        const char *name;
        const char *argument; /* the one positional argument, or NULL for none */
        const struct option *options;
        int (*parse_option)(int c, char *optarg_value); /* the verb's own options; NULL: none */
        int (*run)(sd_bus *bus, char **args);
} Verb;

static const Verb verbs[] = {
        { "create", NULL, create_options, parse_create_option, verb_create },
        { "list", NULL, common_options, NULL, verb_list },
        { "status", "ID", common_options, NULL, verb_status },
        { "stop", "ID", stop_options, parse_stop_option, verb_stop },
        { "remove", "ID", common_options, NULL, verb_remove },
};

/* Parses "VERB [OPTIONS...] [ARG]" (argv[0] is the verb), options in any position. Returns 0, or
 * -ECANCELED after --help or --version, or -EINVAL after reporting a usage error. */
static int parse_verb_argv(const Verb *verb, int argc, char *argv[]) {
        int c, r, n_args;

        optind = 0; /* glibc: start over with this argv */
        while ((c = getopt_long(argc, argv, ":h", verb->options, NULL)) >= 0) {
                if (c == '?' || c == ':')
                        return option_error(c, argv, verb->options, verb->name);

                r = parse_common_option(c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                /* Only codes of verb->options come here, and each verb handles its own. */
                r = verb->parse_option ? verb->parse_option(c, optarg) : -EINVAL;
                if (r < 0)
                        return r;
        }

        n_args = argc - optind;
        if (verb->argument && n_args == 0)
                return usage_error("Command '%s' needs a session %s", verb->name, verb->argument);
        if (n_args > (verb->argument ? 1 : 0))
                return usage_error(
                        "Unexpected argument '%s' for '%s'",
                        argv[optind + (verb->argument ? 1 : 0)],
                        verb->name);
        return 0;
}

/* The global options before the command, then the command and its own. */
static int parse_argv(int argc, char *argv[], const Verb **ret_verb, char ***ret_args) {
        const Verb *verb = NULL;
        int c, r;

        /* '+': stop at the command, whose options are parsed against its own table. */
        while ((c = getopt_long(argc, argv, "+:h", common_options, NULL)) >= 0) {
                if (c == '?' || c == ':')
                        return option_error(c, argv, common_options, NULL);
                r = parse_common_option(c);
                if (r < 0)
                        return r;
        }

        if (optind >= argc)
                return usage_error("No command given");

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, argv[optind]))
                        verb = &verbs[i];
        if (!verb)
                return usage_error("Unknown command '%s'", argv[optind]);

        argc -= optind;
        argv += optind;
        r = parse_verb_argv(verb, argc, argv);
        if (r < 0)
                return r;

        *ret_verb = verb;
        *ret_args = argv + optind; /* the positional argument, after getopt's permutation */
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *verb = NULL;
        char **args = NULL;
        int r;

        r = parse_argv(argc, argv, &verb, &args);
        if (r == -ECANCELED)
                return flush_stdout() < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        if (r == -ENOMEM)
                return EXIT_FAILURE;
        if (r < 0)
                return EXIT_USAGE;

        r = connect_bus(&bus);
        if (r < 0)
                return EXIT_FAILURE;

        r = verb->run(bus, args);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char *argv[]) {
        int r;

        log_set_prefix("ccdockerctl");
        /* A command-line tool reports to whoever ran it, even from a unit whose stderr is the journal. */
        log_set_target(LOG_TARGET_STDERR);

        r = run(argc, argv);
        free(arg_env);
        return r;
}

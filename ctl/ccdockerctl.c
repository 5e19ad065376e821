/* ccdockerctl: the command-line client of ccdockerd. It speaks the D-Bus API of docs/dbus-api.md and
 * nothing else, on the system bus or, with --user, the user bus: create, list, show, stop and remove
 * sessions, send them prompts, read and follow their output and results, printing a table, "Key:
 * value" lines or one-line event summaries for people and, with --json, JSON for scripts. Input is
 * checked only as far as building the D-Bus message needs (numbers, NAME=VALUE); the daemon validates
 * everything else once, at its edge, and its error messages are shown as they come. Exit status 1 is
 * a failure reported by the bus or the daemon (or a failed turn), 2 a usage error, 3 a result that is
 * still pending.
 *
 * Longer than our ~1,200 lines: one program whose commands share the parsed options (arg_*), the D-Bus
 * helpers and the output formats, in the order of its man page (docs/ccdockerctl.md); the token
 * commands, which need no bus, are token.c. Split it by command family when one grows state of its
 * own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "config-build.h"
#include "log.h"
#include "time-util.h"
#include "token.h"
#include "util.h"

#define EXIT_USAGE 2
#define EXIT_PENDING 3       /* result: the turn has not ended (yet) */
#define EXIT_INTERRUPTED 130 /* run: a signal before the result, as a shell reports SIGINT */

#define BUS_NAME "org.ccdocker1"
#define MANAGER_PATH "/org/ccdocker1"
#define MANAGER_INTERFACE "org.ccdocker1.Manager"
#define SESSION_INTERFACE "org.ccdocker1.Session"

/* CreateSession replies after polkit and podman have answered (is the image there?), which a busy
 * podman can make slow; Stop replies when systemd has stopped the unit, which may take the daemon's
 * StopTimeoutSec= and the container's removal. sd-bus's default of 25 s is too short for either. */
#define SLOW_CALL_USEC (120 * USEC_PER_SEC)

/* GetOutput is asked for at most this many events per call, so a long session's output never has to
 * fit in one D-Bus message. */
#define OUTPUT_PAGE 256U

/* GetResult waits at most 3600 s per call; a longer or unlimited wait is made of calls this long. The
 * D-Bus call gets the wait plus a margin for the daemon to answer. */
#define RESULT_WAIT_CHUNK_SEC 600U
#define RESULT_CALL_MARGIN_USEC (30 * USEC_PER_SEC)

/* An Attach line carries one event of up to 8 MiB (docs/channel.md) with its escaping and wrapper. */
#define EVENT_LINE_MAX (64U * 1024U * 1024U)

/* After an Attach stream ends while the session is still live (the daemon drops a reader that falls
 * too far behind, or its State has not caught up yet), it is attached again; this many times in a row
 * without a new event, REATTACH_DELAY_MSEC apart, and ccdockerctl gives up. */
#define REATTACH_TRIES 50U
#define REATTACH_DELAY_MSEC 100

/* The human event summaries: texts and tool results are cut at this many characters, tool input at
 * the second. */
#define SUMMARY_TEXT_MAX 100U
#define SUMMARY_INPUT_MAX 80U

/* Reals (total_cost_usd) in JSON that ccdockerctl builds: 15 digits print 0.0123 as 0.0123, where the
 * 17 that jansson uses by default print 0.012300000000000001. */
#define JSON_OUTPUT_FLAGS JSON_REAL_PRECISION(15)

/* Global options. */
static bool arg_user = false;
static bool arg_bus_set = false; /* --user or --system given: no picking (pick_bus) */
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

static const char *arg_prompt = NULL; /* create --prompt, and run's PROMPT */
static char **arg_secrets = NULL;     /* --secret NAME..., words of argv */
static size_t arg_n_secrets = 0;
static char **arg_allowed_hosts = NULL; /* --allow-host HOST..., words of argv */
static size_t arg_n_allowed_hosts = 0;

/* stop */
static bool arg_force = false;

/* run */
static bool arg_keep = false;
static bool arg_all_questions = false;

/* output, attach */
static uint64_t arg_since = 0;

/* output */
static uint32_t arg_limit = 0;

/* budget */
static double arg_budget_usd = 0;
static bool arg_budget_usd_set = false;
static uint64_t arg_budget_tokens = 0;
static bool arg_budget_tokens_set = false;

/* result */
static bool arg_wait = false;
static uint32_t arg_wait_timeout = 0; /* 0: no limit */
static bool arg_wait_timeout_set = false;

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
        ARG_SECRET,
        ARG_ALLOW_HOST,
        ARG_PROMPT,
        ARG_FORCE,
        ARG_KEEP,
        ARG_SINCE,
        ARG_LIMIT,
        ARG_WAIT,
        ARG_WAIT_TIMEOUT,
        ARG_USD,
        ARG_TOKENS,
        ARG_ALL,
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
               "D-Bus API: org.ccdocker1 on the system bus, or on the user bus when only the user\n"
               "bus has one (ccdockerd --user); --system or --user picks the bus.\n"
               "\n"
               "Commands:\n"
               "  create [CREATE OPTIONS...]  Create and start a session and print its ID\n"
               "  run [CREATE OPTIONS...] [--keep] PROMPT\n"
               "                              Create a session with PROMPT, print its events until\n"
               "                              the first result, print the result, stop the session\n"
               "  list                        List sessions: ID, state, parent, unit, creation time\n"
               "  tree [ID]                   Show the sessions as the tree of parents and the\n"
               "                              children they spawned, with states (or ID's subtree)\n"
               "  children ID                 List the sessions ID spawned, as list does\n"
               "  status ID                   Show every property of a session\n"
               "  send ID PROMPT              Queue a prompt for a session and print its message ID\n"
               "  output ID [--since SEQ] [--limit N]\n"
               "                              Print the events a session has stored\n"
               "  attach ID [--since SEQ]     Print a session's events, then follow new ones until\n"
               "                              the session ends or Ctrl-C (like journalctl -f)\n"
               "  result ID [--wait [--timeout SEC]]\n"
               "                              Print the result of the session's latest turn\n"
               "  budget ID [--usd X] [--tokens N]\n"
               "                              Set a session's model budget for its whole tree (0:\n"
               "                              none); a session paused at its budget resumes\n"
               "  stop ID [--force]           Stop a session\n"
               "  remove ID                   Forget a stopped or failed session\n"
               "  questions [ID] [--all]      List the questions waiting for a human (of session ID,\n"
               "                              or of every session you see); --all: answered too\n"
               "  answer QUESTION-ID TEXT     Answer a session's question (allow or deny for a\n"
               "                              permission); the first answer on any surface wins\n"
               "  token create NAME|list|revoke NAME\n"
               "                              Manage ccdocker-httpd's bearer tokens (no daemon\n"
               "                              needed; --tokens PATH picks the store)\n"
               "\n"
               "Options (before or after the command):\n"
               "  -h --help                   Show this help and exit\n"
               "     --version                Show the version and exit\n"
               "     --system                 Talk to ccdockerd on the system bus only\n"
               "     --user                   Talk to ccdockerd on the calling user's bus only\n"
               "     --json                   Print JSON instead of text\n"
               "\n"
               "Create options, for create and run (absent ones take the daemon's defaults; values\n"
               "over the daemon's ceilings are refused):\n"
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
               "     --secret NAME            Give the session the daemon's secret NAME (as an\n"
               "                              environment variable of claude); may be repeated\n"
               "     --allow-host HOST[:PORT] Let a session without a network reach HOST through\n"
               "                              the egress proxy (*.domain for its subdomains); may\n"
               "                              be repeated\n"
               "     --prompt PROMPT          (create only) The session's first prompt\n"
               "\n"
               "Run options:\n"
               "     --keep                   Leave the session running after the result\n"
               "\n"
               "Output and attach options:\n"
               "     --since SEQ              Only events after sequence number SEQ (default: 0, all)\n"
               "     --limit N                (output only) At most N events (default: 0, all)\n"
               "\n"
               "Result options:\n"
               "     --wait                   Wait while the result is pending (a turn runs or a\n"
               "                              prompt is queued)\n"
               "     --timeout SEC            With --wait: give up after SEC seconds (default: none)\n"
               "\n"
               "Budget options (either or both; 0 removes that budget):\n"
               "     --usd X                  The most the tree may spend, in USD at ModelPrices=\n"
               "     --tokens N               The most tokens it may use: input, output, cache\n"
               "                              writes and reads\n"
               "\n"
               "Stop options:\n"
               "     --force                  Kill at once instead of stopping gracefully\n"
               "\n"
               "Output:\n"
               "  create prints the new session's ID; list prints a table with CREATED in local\n"
               "  time (ISO 8601); status prints \"Key: value\" lines. With --json, create and status\n"
               "  print a session object and list an array of them, with the keys id, state,\n"
               "  state_reason, unit, container_id, parent_id, depth, task_type, created_at (RFC 3339,\n"
               "  UTC), owner_uid, image, workspace and object_path. budget, stop and remove print\n"
               "  nothing.\n"
               "  send prints the message ID; with --json {\"message_id\": ...}.\n"
               "  output, attach and run print a line per event (per content block of a message):\n"
               "    09:26:55 #2 [assistant] tool_use Write {\"file_path\":\"/workspace/hello.md\",...}\n"
               "  and with --json one JSON object per line: {\"seq\":N,\"time\":USEC,\"data\":{...}},\n"
               "  data being Claude Code's stream-json event. run starts with \"Session ID\" and ends\n"
               "  with the result as result prints it; with --json its last line is the result\n"
               "  object with the session's \"id\" added.\n"
               "  result prints the result text, the error of a failed turn, or \"pending\"; with\n"
               "  --json {\"status\":..., \"result\":..., \"error\":..., \"usage\":{...}}, result and error\n"
               "  null when empty.\n"
               "\n"
               "Exit status:\n"
               "  0  success; for result and run: the turn completed\n"
               "  1  the bus or ccdockerd reported a failure; stderr has one line\n"
               "     \"ccdockerctl: <what failed>: <the daemon's message>\"; for result and run also:\n"
               "     the turn (or the session) failed\n"
               "  2  usage error: unknown command or option, missing or bad argument\n"
               "  3  result: the turn is still pending\n"
               "  130  run: interrupted (SIGINT, SIGTERM, SIGHUP) before the result; the session\n"
               "     is stopped unless --keep\n"
               "\n"
               "Examples:\n"
               "  ccdockerctl create --memory 2G --cpus 1.5 --env LANG=C.UTF-8\n"
               "  ccdockerctl create --workspace /srv/work/project --timeout 3600 --json\n"
               "  ccdockerctl --user list\n"
               "  ccdockerctl status 3f2a9c0b71de --json | jq -r .state\n"
               "  ccdockerctl run --workspace /srv/work/project 'Review src/ for security issues'\n"
               "  ccdockerctl run --json 'What is 2+2?' | tail -n 1 | jq -r .result\n"
               "  ccdockerctl send 3f2a9c0b71de 'Now write the tests'\n"
               "  ccdockerctl output 3f2a9c0b71de --since 40 --limit 10\n"
               "  ccdockerctl output 3f2a9c0b71de --json | jq -c 'select(.data.type == \"result\")'\n"
               "  ccdockerctl attach 3f2a9c0b71de\n"
               "  ccdockerctl result 3f2a9c0b71de --wait --timeout 600\n"
               "  ccdockerctl budget 3f2a9c0b71de --usd 5 --tokens 2000000\n"
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
                arg_bus_set = true;
                return 1;
        case ARG_SYSTEM:
                arg_user = false;
                arg_bus_set = true;
                return 1;
        case ARG_JSON:
                arg_json = true;
                return 1;
        default:
                return 0;
        }
}

static int parse_u64(const char *option, const char *s, uint64_t *ret) {
        if (safe_atou64(s, ret) < 0)
                return usage_error(
                        "Option '%s' needs a whole number from 0 to %" PRIu64 ", got '%s'",
                        option,
                        UINT64_MAX,
                        s);
        return 0;
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

static int add_env(char *assignment) {
        const char *eq = strchr(assignment, '=');
        _cleanup_free_ char *name = eq ? strndup(assignment, (size_t) (eq - assignment)) : NULL;
        char **l;

        if (eq && !name)
                return log_oom();
        if (!eq || !env_name_is_valid(name))
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

/* Appends a word of argv (not copied) to a NULL-ended list. */
static int add_word(char ***list, size_t *n, char *word) {
        char **l = reallocarray(*list, *n + 2, sizeof(char *));

        if (!l)
                return log_oom();
        l[(*n)++] = word;
        l[*n] = NULL;
        *list = l;
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
        case ARG_SECRET:
                return add_word(&arg_secrets, &arg_n_secrets, optarg_value);
        case ARG_ALLOW_HOST:
                return add_word(&arg_allowed_hosts, &arg_n_allowed_hosts, optarg_value);
        case ARG_PROMPT:
                arg_prompt = optarg_value;
                return 0;
        default:
                return -EINVAL;
        }
}

static int parse_run_option(int c, char *optarg_value) {
        if (c != ARG_KEEP)
                return parse_create_option(c, optarg_value);
        arg_keep = true;
        return 0;
}

static int parse_questions_option(int c, char *optarg_value) {
        if (c != ARG_ALL)
                return -EINVAL;
        arg_all_questions = true;
        return 0;
}

static int parse_stop_option(int c, char *optarg_value) {
        if (c != ARG_FORCE)
                return -EINVAL;
        arg_force = true;
        return 0;
}

static int parse_budget_option(int c, char *optarg_value) {
        char *end = NULL;

        switch (c) {
        case ARG_USD:
                errno = 0;
                arg_budget_usd = strtod(optarg_value, &end);
                if (errno != 0 || !end || end == optarg_value || *end != '\0' || !(arg_budget_usd >= 0) ||
                    arg_budget_usd > 1e12)
                        return usage_error(
                                "Option '--usd' needs an amount in USD >= 0, got '%s'", optarg_value);
                arg_budget_usd_set = true;
                return 0;
        case ARG_TOKENS:
                arg_budget_tokens_set = true;
                return parse_u64("--tokens", optarg_value, &arg_budget_tokens);
        default:
                return -EINVAL;
        }
}

static int check_budget_options(void) {
        if (!arg_budget_usd_set && !arg_budget_tokens_set)
                return usage_error("Command 'budget' needs --usd X, --tokens N or both");
        return 0;
}

static int parse_output_option(int c, char *optarg_value) {
        switch (c) {
        case ARG_SINCE:
                return parse_u64("--since", optarg_value, &arg_since);
        case ARG_LIMIT:
                return parse_u32("--limit", optarg_value, &arg_limit);
        default:
                return -EINVAL;
        }
}

static int parse_result_option(int c, char *optarg_value) {
        switch (c) {
        case ARG_WAIT:
                arg_wait = true;
                return 0;
        case ARG_WAIT_TIMEOUT:
                arg_wait_timeout_set = true;
                return parse_u32("--timeout", optarg_value, &arg_wait_timeout);
        default:
                return -EINVAL;
        }
}

/* A timeout without --wait would be silently meaningless: GetResult without wait answers at once. */
static int check_result_options(void) {
        if (arg_wait_timeout_set && !arg_wait)
                return usage_error("Option '--timeout' of 'result' needs '--wait'");
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* D-Bus helpers */

static const char *bus_error_text(const sd_bus_error *error, int r) {
        if (sd_bus_error_is_set(error))
                return !isempty(error->message) ? error->message : error->name;
        return strerror(r < 0 ? -r : r);
}

/* Without --system or --user: the system bus when a ccdockerd holds org.ccdocker1 there, else the user
 * bus when one holds it there (a workstation or the sandbox, where only ccdockerd --user runs), else
 * the system bus, whose error then says what is missing. */
static void pick_bus(void) {
        for (int user = 0; user <= 1; user++) {
                _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                int has = 0;

                if ((user ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus)) < 0 ||
                    sd_bus_call_method(
                            bus,
                            "org.freedesktop.DBus",
                            "/org/freedesktop/DBus",
                            "org.freedesktop.DBus",
                            "NameHasOwner",
                            NULL,
                            &reply,
                            "s",
                            BUS_NAME) < 0 ||
                    sd_bus_message_read(reply, "b", &has) < 0 || !has)
                        continue;
                arg_user = user;
                return;
        }
        arg_user = false;
}

static int connect_bus(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        if (!arg_bus_set)
                pick_bus();
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

static bool bus_error_is_gone(const sd_bus_error *error) {
        return sd_bus_error_has_names(
                error,
                "org.ccdocker1.Error.NoSuchSession",
                SD_BUS_ERROR_UNKNOWN_OBJECT,
                SD_BUS_ERROR_UNKNOWN_INTERFACE);
}

/* State and StateReason of the session at path; -ENOENT, unlogged, if it is gone. */
static int get_session_state(
        sd_bus *bus, const char *id, const char *path, char **ret_state, char **ret_reason) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *state = NULL, *reason = NULL;
        int r;

        r = sd_bus_get_property_string(bus, BUS_NAME, path, SESSION_INTERFACE, "State", &error, &state);
        if (r >= 0)
                r = sd_bus_get_property_string(
                        bus, BUS_NAME, path, SESSION_INTERFACE, "StateReason", &error, &reason);
        if (r < 0) {
                if (bus_error_is_gone(&error))
                        return -ENOENT;
                log_error("Failed to get the state of session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }

        *ret_state = TAKE_PTR(state);
        *ret_reason = TAKE_PTR(reason);
        return 0;
}

static bool state_is_final(const char *state) {
        return streq(state, "stopped") || streq(state, "failed");
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
        time_t sec = (time_t) (usec / USEC_PER_SEC);
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
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;
        size_t n;

        if (usec == 0 || !gmtime_r(&sec, &tm))
                return -ERANGE;

        n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        if (n == 0 ||
            (size_t) snprintf(buf + n, size - n, ".%06uZ", (unsigned) (usec % USEC_PER_SEC)) >= size - n)
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
        if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_OUTPUT_FLAGS) < 0 || fputc('\n', stdout) == EOF)
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
                if (bus_error_is_gone(&error))
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
/* Events */

static const char *json_get_string(json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

/* The next character of s as it is shown to people: a control character that could drive a terminal
 * (C0 except, with keep_newlines, \n and \t; DEL; C1 in its UTF-8 form) as a C-style escape, anything
 * else as it is. Writes it NUL-terminated to buf and its width to *ret_width, and returns how many
 * bytes of s it took: 0 at the end of s. Model output is untrusted text. */
static size_t next_shown_char(const char *s, bool keep_newlines, char buf[static 8], size_t *ret_width) {
        const unsigned char *u = (const unsigned char *) s;
        size_t n = 1;

        if (u[0] == '\0')
                return 0;

        if (u[0] < 0x20 || u[0] == 0x7f) {
                if (keep_newlines && (u[0] == '\n' || u[0] == '\t'))
                        (void) snprintf(buf, 8, "%c", u[0]);
                else if (u[0] == '\n')
                        strcpy(buf, "\\n");
                else if (u[0] == '\r')
                        strcpy(buf, "\\r");
                else if (u[0] == '\t')
                        strcpy(buf, "\\t");
                else
                        (void) snprintf(buf, 8, "\\x%02x", u[0]);
                *ret_width = strlen(buf);
                return 1;
        }

        if (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f) {
                (void) snprintf(buf, 8, "\\u%04x", u[1]);
                *ret_width = strlen(buf);
                return 2;
        }

        /* One character of UTF-8: its first byte and the continuation bytes after it. */
        while (n < 4 && (u[n] & 0xc0) == 0x80)
                n++;
        memcpy(buf, s, n);
        buf[n] = '\0';
        *ret_width = 1;
        return n;
}

/* Writes s as next_shown_char() shows it; with max > 0, at most max characters (an escape counting
 * as its length), the last of them "…" when s is longer. */
static void print_shown(const char *s, size_t max, bool keep_newlines) {
        size_t total = 0, used = 0, n, width;
        char buf[8];

        if (!s)
                return;

        if (max > 0)
                for (const char *p = s;
                     total <= max && (n = next_shown_char(p, keep_newlines, buf, &width)) > 0;
                     p += n)
                        total += width;

        for (const char *p = s; (n = next_shown_char(p, keep_newlines, buf, &width)) > 0; p += n) {
                if (max > 0 && total > max && used + width > max - 1) {
                        fputs("…", stdout);
                        return;
                }
                fputs(buf, stdout);
                used += width;
        }
}

/* "09:26:55 #2 ": the local time of the event and its sequence number. */
static void print_event_prefix(uint64_t seq, uint64_t usec) {
        char t[16] = "--:--:--";
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (usec > 0 && localtime_r(&sec, &tm))
                (void) strftime(t, sizeof(t), "%H:%M:%S", &tm);
        printf("%s #%" PRIu64 " ", t, seq);
}

/* A line "PREFIX [tag] text", text shown cut at max characters (0: whole); text may be NULL. */
static void print_summary_line(uint64_t seq, uint64_t usec, const char *tag, const char *text, size_t max) {
        print_event_prefix(seq, usec);
        printf("[%s]", tag);
        if (text) {
                putchar(' ');
                print_shown(text, max, false);
        }
        putchar('\n');
}

/* The text of a tool_result's content: a string, or the text blocks of an array joined by spaces;
 * anything else as compact JSON. NULL if out of memory. */
static char *tool_result_text(json_t *content) {
        _cleanup_fclose_ FILE *f = NULL;
        char *buf = NULL;
        size_t size = 0, i;
        bool first = true;
        json_t *block;

        if (json_is_string(content))
                return strdup(json_string_value(content));
        if (!json_is_array(content))
                return content ? json_dumps(content, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("");

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        json_array_foreach (content, i, block) {
                const char *text = json_get_string(block, "text");

                if (!text)
                        continue;
                fprintf(f, "%s%s", first ? "" : " ", text);
                first = false;
        }
        if (fclose(TAKE_PTR(f)) != 0)
                return mfree(buf);
        return buf;
}

static void print_init_summary(uint64_t seq, uint64_t usec, json_t *data) {
        static const struct {
                const char *key, *format;
        } fields[] = {
                { "claude_code_version", "Claude Code " },
                { "model", "model " },
                { "tools", NULL },
                { "cwd", "cwd " },
                { "permissionMode", "permission mode " },
        };
        const char *separator = " ";

        print_event_prefix(seq, usec);
        fputs("[system/init]", stdout);
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                json_t *v = json_object_get(data, fields[i].key);

                if (fields[i].format && json_is_string(v)) {
                        printf("%s%s", separator, fields[i].format);
                        print_shown(json_string_value(v), SUMMARY_TEXT_MAX, false);
                } else if (!fields[i].format && json_is_array(v))
                        printf("%s%zu tools", separator, json_array_size(v));
                else
                        continue;
                separator = ", ";
        }
        putchar('\n');
}

static int print_assistant_summary(uint64_t seq, uint64_t usec, json_t *data) {
        json_t *content = json_object_get(json_object_get(data, "message"), "content"), *block;
        size_t n = 0, i;

        if (json_is_string(content)) {
                print_summary_line(seq, usec, "assistant", json_string_value(content), SUMMARY_TEXT_MAX);
                return 0;
        }

        json_array_foreach (content, i, block) {
                const char *type = json_get_string(block, "type");

                n++;
                if (streq_ptr(type, "text"))
                        print_summary_line(
                                seq,
                                usec,
                                "assistant",
                                strempty(json_get_string(block, "text")),
                                SUMMARY_TEXT_MAX);
                else if (streq_ptr(type, "thinking"))
                        print_summary_line(
                                seq,
                                usec,
                                "thinking",
                                strempty(json_get_string(block, "thinking")),
                                SUMMARY_TEXT_MAX);
                else if (streq_ptr(type, "tool_use")) {
                        _cleanup_free_ char *input = NULL;
                        json_t *v = json_object_get(block, "input");

                        if (v) {
                                input = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_OUTPUT_FLAGS);
                                if (!input)
                                        return log_oom();
                        }
                        print_event_prefix(seq, usec);
                        fputs("[assistant] tool_use ", stdout);
                        print_shown(strempty(json_get_string(block, "name")), SUMMARY_TEXT_MAX, false);
                        if (input) {
                                putchar(' ');
                                print_shown(input, SUMMARY_INPUT_MAX, false);
                        }
                        putchar('\n');
                } else {
                        print_event_prefix(seq, usec);
                        fputs("[assistant] (", stdout);
                        print_shown(type ?: "?", SUMMARY_TEXT_MAX, false);
                        fputs(")\n", stdout);
                }
        }
        if (n == 0)
                print_summary_line(seq, usec, "assistant", "(no content)", 0);
        return 0;
}

static int print_user_summary(uint64_t seq, uint64_t usec, json_t *data) {
        json_t *content = json_object_get(json_object_get(data, "message"), "content"), *block;
        size_t n = 0, i;

        if (json_is_string(content)) {
                print_summary_line(seq, usec, "user", json_string_value(content), SUMMARY_TEXT_MAX);
                return 0;
        }

        json_array_foreach (content, i, block) {
                const char *type = json_get_string(block, "type");

                if (streq_ptr(type, "tool_result")) {
                        _cleanup_free_ char *text = tool_result_text(json_object_get(block, "content"));

                        if (!text)
                                return log_oom();
                        print_event_prefix(seq, usec);
                        fputs(json_is_true(json_object_get(block, "is_error")) ? "[tool_result] (error) "
                                                                               : "[tool_result] ",
                              stdout);
                        print_shown(text, SUMMARY_TEXT_MAX, false);
                        putchar('\n');
                } else if (streq_ptr(type, "text"))
                        print_summary_line(
                                seq,
                                usec,
                                "user",
                                strempty(json_get_string(block, "text")),
                                SUMMARY_TEXT_MAX);
                else
                        continue;
                n++;
        }
        if (n == 0)
                print_summary_line(seq, usec, "user", NULL, 0);
        return 0;
}

static void print_result_summary(uint64_t seq, uint64_t usec, json_t *data) {
        json_t *turns = json_object_get(data, "num_turns"), *duration = json_object_get(data, "duration_ms"),
               *cost = json_object_get(data, "total_cost_usd");
        bool is_error = json_is_true(json_object_get(data, "is_error"));
        const char *separator = " (";

        print_event_prefix(seq, usec);
        fputs("[result/", stdout);
        print_shown(json_get_string(data, "subtype") ?: "?", SUMMARY_TEXT_MAX, false);
        putchar(']');
        if (json_get_string(data, "result")) {
                putchar(' ');
                print_shown(json_get_string(data, "result"), SUMMARY_TEXT_MAX, false);
        }
        if (is_error) {
                printf("%serror", separator);
                separator = ", ";
        }
        if (json_is_integer(turns)) {
                printf("%sturns %" JSON_INTEGER_FORMAT, separator, json_integer_value(turns));
                separator = ", ";
        }
        if (json_is_integer(duration)) {
                printf("%s%" JSON_INTEGER_FORMAT " ms", separator, json_integer_value(duration));
                separator = ", ";
        }
        if (json_is_number(cost)) {
                printf("%s$%.4f", separator, json_number_value(cost));
                separator = ", ";
        }
        if (!streq(separator, " ("))
                putchar(')');
        putchar('\n');
}

/* One line per event and content block, for people: what the demo shows. */
static int print_event_summary(uint64_t seq, uint64_t usec, json_t *data) {
        const char *type = json_get_string(data, "type"), *subtype = json_get_string(data, "subtype");

        if (streq_ptr(type, "system") && streq_ptr(subtype, "init"))
                print_init_summary(seq, usec, data);
        else if (streq_ptr(type, "assistant"))
                return print_assistant_summary(seq, usec, data);
        else if (streq_ptr(type, "user"))
                return print_user_summary(seq, usec, data);
        else if (streq_ptr(type, "result"))
                print_result_summary(seq, usec, data);
        else if (streq_ptr(type, "raw"))
                print_summary_line(
                        seq, usec, "raw", strempty(json_get_string(data, "text")), SUMMARY_TEXT_MAX);
        else {
                print_event_prefix(seq, usec);
                putchar('[');
                print_shown(type ?: "event", SUMMARY_TEXT_MAX, false);
                if (subtype) {
                        putchar('/');
                        print_shown(subtype, SUMMARY_TEXT_MAX, false);
                }
                fputs("]\n", stdout);
        }
        return 0;
}

/* An event of GetOutput, whose data is JSON text. With --json it is printed as the daemon sent it, in
 * one line: a raw line break in JSON can only be whitespace between tokens, and a number reparsed by
 * jansson could print differently. Text that is not JSON, which the daemon should never send, is
 * shown the way the channel wraps such a line: {"type":"raw","text":...}. */
static int print_stored_event(uint64_t seq, uint64_t usec, const char *text) {
        _cleanup_(json_decrefp) json_t *data = NULL;
        bool valid;

        data = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        valid = data;
        if (!data) {
                data = json_pack("{s:s, s:s}", "type", "raw", "text", text);
                if (!data)
                        return log_oom();
        }

        if (!arg_json)
                return print_event_summary(seq, usec, data);

        printf("{\"seq\":%" PRIu64 ",\"time\":%" PRIu64 ",\"data\":", seq, usec);
        if (valid)
                for (const char *p = text; *p; p++)
                        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
        else if (json_dumpf(data, stdout, JSON_COMPACT) < 0)
                return log_error_errno(EIO, "Failed to write JSON output: %m");
        fputs("}\n", stdout);
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Following a session: Attach */

typedef enum FollowEnd {
        FOLLOW_EOF,         /* the stream ended and the session with it (or it is gone) */
        FOLLOW_RESULT,      /* stop_at_result: a result event came */
        FOLLOW_INTERRUPTED, /* SIGINT, SIGTERM or SIGHUP */
} FollowEnd;

typedef struct Follow {
        const char *id, *path;
        int signal_fd;
        uint64_t last_seq; /* the last event printed, or --since */
        bool stop_at_result;
        json_t *result;             /* with stop_at_result: the data of the result event */
        char *state, *state_reason; /* at FOLLOW_EOF: the session's end, NULL if it is gone */
} Follow;

static void follow_done(Follow *f) {
        json_decref(f->result);
        free(f->state);
        free(f->state_reason);
}

/* The signals that end following are taken through a signalfd, so that they are seen in poll() and a
 * run can stop its session before it exits. Blocked until the process ends. */
static int block_exit_signals(int *ret_fd) {
        sigset_t mask;
        int fd;

        if (sigemptyset(&mask) < 0 || sigaddset(&mask, SIGINT) < 0 || sigaddset(&mask, SIGTERM) < 0 ||
            sigaddset(&mask, SIGHUP) < 0 || sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");

        fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create a signalfd: %m");
        *ret_fd = fd;
        return 0;
}

/* One line of the Attach stream, {"seq":N,"time":T,"data":{...}}: printed as it came with --json, as
 * a summary otherwise. Returns 1 if it is the result event a run waits for. */
static int follow_line(Follow *f, const char *line, size_t len) {
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_t *seq, *jtime, *data;
        json_error_t e;
        uint64_t s;
        int r;

        if (len == 0)
                return 0;

        j = json_loadb(line, len, JSON_ALLOW_NUL, &e);
        seq = json_object_get(j, "seq");
        jtime = json_object_get(j, "time");
        data = json_object_get(j, "data");
        if (!json_is_integer(seq) || json_integer_value(seq) <= 0 || !json_is_object(data)) {
                log_warning(
                        "Skipping a line of the event stream of session '%s' that is not an event: %s",
                        f->id,
                        j ? "no seq or data" : e.text);
                return 0;
        }

        s = (uint64_t) json_integer_value(seq);
        if (s <= f->last_seq)
                return 0; /* seen before a reattach */
        f->last_seq = s;

        if (arg_json) {
                fwrite(line, 1, len, stdout);
                putchar('\n');
        } else {
                json_int_t t = json_is_integer(jtime) ? json_integer_value(jtime) : 0;

                r = print_event_summary(s, t > 0 ? (uint64_t) t : 0, data);
                if (r < 0)
                        return r;
        }
        r = flush_stdout();
        if (r < 0)
                return r;

        if (f->stop_at_result && streq_ptr(json_get_string(data, "type"), "result")) {
                f->result = json_incref(data);
                return 1;
        }
        return 0;
}

/* Reads the stream of one Attach fd until EOF, a result (stop_at_result) or a signal; lines may come
 * in any pieces. Returns a FollowEnd, or < 0 after logging. */
static int follow_stream(Follow *f, int fd) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, len = 0, scanned = 0;
        int r;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = fd, .events = POLLIN },
                        { .fd = f->signal_fd, .events = POLLIN },
                };
                size_t start = 0;
                char *nl;
                ssize_t n;

                if (poll(p, ELEMENTSOF(p), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(
                                errno, "Failed to wait for events of session '%s': %m", f->id);
                }
                if (p[1].revents & POLLIN)
                        return FOLLOW_INTERRUPTED;
                if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
                        continue;

                if (len == size) {
                        size_t new_size = size == 0 ? 64 * 1024 : size * 2;
                        char *b;

                        if (size >= EVENT_LINE_MAX)
                                return log_error_errno(
                                        EMSGSIZE,
                                        "Failed to read the events of session '%s': a line is longer than %u MiB",
                                        f->id,
                                        EVENT_LINE_MAX / 1024 / 1024);
                        b = realloc(buf, new_size);
                        if (!b)
                                return log_oom();
                        buf = b;
                        size = new_size;
                }

                n = read(fd, buf + len, size - len);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return log_error_errno(
                                errno, "Failed to read the events of session '%s': %m", f->id);
                }
                if (n == 0) {
                        /* A last line without its newline: the daemon's end cut it short, or not. */
                        r = follow_line(f, buf, len);
                        if (r < 0)
                                return r;
                        return r > 0 ? FOLLOW_RESULT : FOLLOW_EOF;
                }
                len += (size_t) n;

                while ((nl = memchr(buf + scanned, '\n', len - scanned))) {
                        r = follow_line(f, buf + start, (size_t) (nl - (buf + start)));
                        if (r < 0)
                                return r;
                        if (r > 0)
                                return FOLLOW_RESULT;
                        start = scanned = (size_t) (nl - buf) + 1;
                }
                memmove(buf, buf + start, len - start);
                len -= start;
                scanned = len;
        }
}

static int attach_session(sd_bus *bus, Follow *f, int *ret_fd) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int fd, r;

        r = sd_bus_call_method(
                bus, BUS_NAME, f->path, SESSION_INTERFACE, "Attach", &error, &reply, "t", f->last_seq);
        if (r < 0) {
                log_error("Failed to attach to session '%s': %s", f->id, bus_error_text(&error, r));
                return r;
        }

        r = sd_bus_message_read(reply, "h", &fd);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of Attach: %m");

        /* The fd belongs to the reply. */
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return log_error_errno(errno, "Failed to duplicate the fd of Attach: %m");
        *ret_fd = fd;
        return 0;
}

/* Attaches at f->last_seq and prints events until the session has ended, a result (stop_at_result)
 * or a signal. A stream that ends while the session is still live is attached again after the last
 * event printed. Returns a FollowEnd, or < 0 after logging. */
static int follow_session(sd_bus *bus, Follow *f) {
        unsigned n_empty = 0;
        int r;

        for (;;) {
                _cleanup_close_ int fd = -EBADF;
                uint64_t before = f->last_seq;
                struct pollfd p = { .fd = f->signal_fd, .events = POLLIN };

                r = attach_session(bus, f, &fd);
                if (r < 0)
                        return r;

                r = follow_stream(f, fd);
                if (r != FOLLOW_EOF)
                        return r;

                f->state = mfree(f->state);
                f->state_reason = mfree(f->state_reason);
                r = get_session_state(bus, f->id, f->path, &f->state, &f->state_reason);
                if (r == -ENOENT)
                        return FOLLOW_EOF;
                if (r < 0)
                        return r;
                if (state_is_final(f->state))
                        return FOLLOW_EOF;

                n_empty = f->last_seq == before ? n_empty + 1 : 0;
                if (n_empty >= REATTACH_TRIES)
                        return log_error_errno(
                                EPIPE,
                                "Failed to follow session '%s': its event stream keeps ending while it is %s",
                                f->id,
                                f->state);

                r = poll(&p, 1, n_empty > 0 ? REATTACH_DELAY_MSEC : 0);
                if (r < 0 && errno != EINTR)
                        return log_error_errno(
                                errno, "Failed to wait for events of session '%s': %m", f->id);
                if (r > 0)
                        return FOLLOW_INTERRUPTED;
        }
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
static int append_variant_strv(sd_bus_message *m, const char *key, char **l) {
        int r;

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, l);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

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
        if (r >= 0 && arg_secrets)
                r = append_variant_strv(m, "secrets", arg_secrets);
        if (r >= 0 && arg_allowed_hosts)
                r = append_variant_strv(m, "allowed_hosts", arg_allowed_hosts);
        if (r >= 0)
                r = append_variant_string(m, "prompt", arg_prompt);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

/* CreateSession with the create options (and arg_prompt); the new session's id and object path. */
static int create_session(sd_bus *bus, char **ret_id, char **ret_path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *id_copy = NULL, *path_copy = NULL;
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

        id_copy = strdup(id);
        path_copy = strdup(path);
        if (!id_copy || !path_copy)
                return log_oom();
        *ret_id = TAKE_PTR(id_copy);
        *ret_path = TAKE_PTR(path_copy);
        return 0;
}

static int verb_create(sd_bus *bus, char **args) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        _cleanup_free_ char *id = NULL, *path = NULL;
        int r;

        r = create_session(bus, &id, &path);
        if (r < 0)
                return r;

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

/* ListSessions, oldest first. The rows borrow their strings from *ret_reply. */
static int list_sessions(sd_bus *bus, sd_bus_message **ret_reply, SessionRow **ret_rows, size_t *ret_n) {
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

        *ret_reply = TAKE_PTR(reply);
        *ret_rows = TAKE_PTR(rows);
        *ret_n = n;
        return 0;
}

static int verb_list(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ SessionRow *rows = NULL;
        size_t n = 0;
        int r;

        r = list_sessions(bus, &reply, &rows, &n);
        if (r < 0)
                return r;
        return arg_json ? print_session_array(bus, rows, n) : print_session_table(rows, n);
}

static const SessionRow *find_row(const SessionRow *rows, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (streq(rows[i].id, id))
                        return &rows[i];
        return NULL;
}

/* A root of the tree: no parent, or a parent that has been removed. */
static bool row_is_root(const SessionRow *rows, size_t n, const SessionRow *row) {
        return isempty(row->parent_id) || !find_row(rows, n, row->parent_id);
}

static void print_tree_node(
        const SessionRow *rows, size_t n, const SessionRow *node, const char *prefix, bool root, bool last) {
        _cleanup_free_ char *child_prefix = NULL;
        size_t n_children = 0, seen = 0;

        printf("%s%s%s  %s\n", prefix, root ? "" : last ? "`- " : "|- ", node->id, node->state);
        if (asprintf(&child_prefix, "%s%s", prefix, root ? "" : last ? "   " : "|  ") < 0) {
                log_oom();
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(rows[i].parent_id, node->id))
                        n_children++;
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(rows[i].parent_id, node->id)) {
                        seen++;
                        print_tree_node(rows, n, &rows[i], child_prefix, false, seen == n_children);
                }
}

static json_t *tree_json(const SessionRow *rows, size_t n, const SessionRow *node) {
        json_t *o, *children;

        o = json_pack(
                "{s:s, s:s, s:s, s:[]}",
                "id",
                node->id,
                "state",
                node->state,
                "unit",
                node->unit,
                "children");
        if (!o)
                return NULL;
        children = json_object_get(o, "children");
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(rows[i].parent_id, node->id) &&
                    json_array_append_new(children, tree_json(rows, n, &rows[i])) < 0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

static int verb_tree(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *a = NULL;
        _cleanup_free_ SessionRow *rows = NULL;
        const SessionRow *only = NULL;
        size_t n = 0;
        int r;

        r = list_sessions(bus, &reply, &rows, &n);
        if (r < 0)
                return r;
        if (args[0]) {
                only = find_row(rows, n, args[0]);
                if (!only)
                        return log_error_errno(ENOENT, "No session '%s'.", args[0]);
        }
        if (arg_json) {
                a = json_array();
                if (!a)
                        return log_oom();
                for (size_t i = 0; i < n; i++)
                        if (only ? &rows[i] == only : row_is_root(rows, n, &rows[i]))
                                if (json_array_append_new(a, tree_json(rows, n, &rows[i])) < 0)
                                        return log_oom();
                return print_json(a);
        }
        if (n == 0) {
                printf("No sessions.\n");
                return flush_stdout();
        }
        for (size_t i = 0; i < n; i++)
                if (only ? &rows[i] == only : row_is_root(rows, n, &rows[i]))
                        print_tree_node(rows, n, &rows[i], "", true, true);
        return flush_stdout();
}

static int verb_children(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ SessionRow *rows = NULL, *children = NULL;
        _cleanup_free_ char *path = NULL;
        size_t n = 0, k = 0;
        int r;

        r = get_session_path(bus, args[0], &path);
        if (r < 0)
                return r;
        r = list_sessions(bus, &reply, &rows, &n);
        if (r < 0)
                return r;
        children = calloc(n ?: 1, sizeof(SessionRow));
        if (!children)
                return log_oom();
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(rows[i].parent_id, args[0]))
                        children[k++] = rows[i];
        if (arg_json)
                return print_session_array(bus, children, k);
        if (k == 0) {
                printf("Session %s has no children.\n", args[0]);
                return flush_stdout();
        }
        return print_session_table(children, k);
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

static int verb_budget(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, path, SESSION_INTERFACE, "SetBudget");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_budget_usd_set)
                r = sd_bus_message_append(m, "{sv}", "budget_usd", "d", arg_budget_usd);
        if (r >= 0 && arg_budget_tokens_set)
                r = sd_bus_message_append(m, "{sv}", "budget_tokens", "t", arg_budget_tokens);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_error_errno(r, "Failed to build the SetBudget call: %m");
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0) {
                log_error("Failed to set the budget of session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }
        return 0;
}

static int verb_send(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *o = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0], *message_id;
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        r = sd_bus_call_method(
                bus, BUS_NAME, path, SESSION_INTERFACE, "SendPrompt", &error, &reply, "s", args[1]);
        if (r < 0) {
                log_error("Failed to send the prompt to session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }

        r = sd_bus_message_read(reply, "s", &message_id);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of SendPrompt: %m");

        if (!arg_json) {
                printf("%s\n", message_id);
                return flush_stdout();
        }

        o = json_pack("{s:s}", "message_id", message_id);
        if (!o)
                return log_oom();
        return print_json(o);
}

/* GetOutput in pages of OUTPUT_PAGE events, --limit in all. */
static int verb_output(sd_bus *bus, char **args) {
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        uint64_t since = arg_since, left = arg_limit;
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        for (;;) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                uint32_t page = arg_limit > 0 && left < OUTPUT_PAGE ? (uint32_t) left : OUTPUT_PAGE, n = 0;
                uint64_t seq, usec;
                const char *data;

                r = sd_bus_call_method(
                        bus,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "GetOutput",
                        &error,
                        &reply,
                        "tu",
                        since,
                        page);
                if (r < 0) {
                        log_error(
                                "Failed to get the output of session '%s': %s",
                                id,
                                bus_error_text(&error, r));
                        return r;
                }

                r = sd_bus_message_enter_container(reply, 'a', "(tts)");
                if (r < 0)
                        return log_error_errno(r, "Failed to parse the reply of GetOutput: %m");

                while ((arg_limit == 0 || left > 0) &&
                       (r = sd_bus_message_read(reply, "(tts)", &seq, &usec, &data)) > 0) {
                        if (seq <= since)
                                continue; /* not asked for; the daemon sends seq > since */
                        r = print_stored_event(seq, usec, data);
                        if (r < 0)
                                return r;
                        since = seq;
                        n++;
                        if (arg_limit > 0)
                                left--;
                }
                if (r < 0)
                        return log_error_errno(r, "Failed to parse the reply of GetOutput: %m");

                r = flush_stdout();
                if (r < 0)
                        return r;
                if (n < page || (arg_limit > 0 && left == 0))
                        return 0;
        }
}

/* The exit status of a result status. */
static int result_exit_status(const char *status) {
        if (streq(status, "completed"))
                return EXIT_SUCCESS;
        if (streq(status, "pending"))
                return EXIT_PENDING;
        return EXIT_FAILURE; /* failed, or what a later daemon may add */
}

/* The result object of --json: status, result and error (null when empty), usage; with an id, it
 * comes first (run). Takes usage. */
static json_t *result_json_new(
        const char *id, const char *status, const char *result, const char *error, json_t *usage) {
        _cleanup_(json_decrefp) json_t *o = json_object(), *u = usage;

        if (!o || !u)
                return NULL;
        if ((id && json_object_set_new(o, "id", json_string(id)) < 0) ||
            json_object_set_new(o, "status", json_string(status)) < 0 ||
            json_object_set_new(o, "result", isempty(result) ? json_null() : json_string(result)) < 0 ||
            json_object_set_new(o, "error", isempty(error) ? json_null() : json_string(error)) < 0 ||
            json_object_set_new(o, "usage", TAKE_PTR(u)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* For people: the result text of a completed turn, the error of a failed one, or the status. */
static int print_result_text(const char *status, const char *result, const char *error) {
        const char *text = streq(status, "completed") ? result
                : streq(status, "failed")             ? (isempty(error) ? "failed" : error)
                                                      : status;

        print_shown(text, 0, true);
        if (!isempty(text) && text[strlen(text) - 1] != '\n')
                putchar('\n');
        return flush_stdout();
}

static int call_get_result(
        sd_bus *bus, const char *id, const char *path, bool wait, uint32_t wait_sec, sd_bus_message **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, path, SESSION_INTERFACE, "GetResult");
        if (r >= 0)
                r = sd_bus_message_append(m, "bu", wait, wait_sec);
        if (r < 0)
                return log_error_errno(r, "Failed to create the GetResult call: %m");

        r = sd_bus_call(bus, m, wait ? wait_sec * USEC_PER_SEC + RESULT_CALL_MARGIN_USEC : 0, &error, ret);
        if (r < 0) {
                log_error("Failed to get the result of session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }
        return 0;
}

/* With --wait, GetResult is called in waits of at most RESULT_WAIT_CHUNK_SEC until the result is no
 * longer pending or --timeout has passed, so neither a long --timeout nor none at all meets the
 * daemon's limit of one call. A daemon that answered "pending" at once, again and again, would make
 * this a busy loop: after 30 such answers in a row the result is reported as pending. */
static int verb_result(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *usage = NULL, *o = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0], *status, *result, *error, *usage_text;
        uint64_t deadline = UINT64_MAX;
        unsigned n_quick = 0;
        json_error_t e;
        int r;

        r = get_session_path(bus, id, &path);
        if (r < 0)
                return r;

        if (arg_wait && arg_wait_timeout > 0)
                deadline = now_usec(CLOCK_MONOTONIC) + arg_wait_timeout * USEC_PER_SEC;

        for (;;) {
                uint64_t start = now_usec(CLOCK_MONOTONIC);
                uint32_t wait_sec = arg_wait ? RESULT_WAIT_CHUNK_SEC : 0;

                if (deadline != UINT64_MAX &&
                    (deadline - start + USEC_PER_SEC - 1) / USEC_PER_SEC < wait_sec)
                        wait_sec = (uint32_t) ((deadline - start + USEC_PER_SEC - 1) / USEC_PER_SEC);

                reply = sd_bus_message_unref(reply);
                r = call_get_result(bus, id, path, arg_wait, wait_sec, &reply);
                if (r < 0)
                        return r;

                r = sd_bus_message_read(reply, "ssss", &status, &result, &error, &usage_text);
                if (r < 0)
                        return log_error_errno(r, "Failed to parse the reply of GetResult: %m");

                if (!arg_wait || !streq(status, "pending"))
                        break;
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        break;
                n_quick = now_usec(CLOCK_MONOTONIC) - start < USEC_PER_SEC ? n_quick + 1 : 0;
                if (n_quick >= 30)
                        break;
        }

        if (!arg_json) {
                r = print_result_text(status, result, error);
                return r < 0 ? r : result_exit_status(status);
        }

        usage = json_loads(isempty(usage_text) ? "{}" : usage_text, 0, &e);
        if (!json_is_object(usage)) {
                log_error(
                        "Failed to parse the reply of GetResult: usage is not a JSON object: %s",
                        usage ? usage_text : e.text);
                return -EBADMSG;
        }
        o = result_json_new(NULL, status, result, error, TAKE_PTR(usage));
        if (!o)
                return log_oom();
        r = print_json(o);
        return r < 0 ? r : result_exit_status(status);
}

static int verb_attach(sd_bus *bus, char **args) {
        _cleanup_close_ int signal_fd = -EBADF;
        _cleanup_free_ char *path = NULL;
        Follow f;
        int r;

        r = block_exit_signals(&signal_fd);
        if (r < 0)
                return r;

        r = get_session_path(bus, args[0], &path);
        if (r < 0)
                return r;

        f = (Follow){ .id = args[0], .path = path, .signal_fd = signal_fd, .last_seq = arg_since };
        r = follow_session(bus, &f);
        follow_done(&f);
        return r < 0 ? r : 0;
}

/* The result of run, from the result event itself, in the form GetResult gives: failed unless its
 * subtype is success and is_error false, the error being its result text. Returns the exit status. */
static int print_run_result(const char *id, json_t *event) {
        const char *text = json_get_string(event, "result");
        bool failed = json_is_true(json_object_get(event, "is_error")) ||
                !streq_ptr(json_get_string(event, "subtype"), "success");
        const char *status = failed ? "failed" : "completed";
        const char *error = failed ? (text ?: "the turn ended in an error") : NULL;
        _cleanup_(json_decrefp) json_t *usage = NULL, *o = NULL;
        json_t *u = json_object_get(event, "usage"), *v;
        int r;

        if (!arg_json) {
                putchar('\n');
                r = print_result_text(status, failed ? NULL : text, error);
                return r < 0 ? r : result_exit_status(status);
        }

        usage = json_object();
        if (!usage)
                return log_oom();
        if (json_is_integer(v = json_object_get(u, "input_tokens")) &&
            json_object_set(usage, "input_tokens", v) < 0)
                return log_oom();
        if (json_is_integer(v = json_object_get(u, "output_tokens")) &&
            json_object_set(usage, "output_tokens", v) < 0)
                return log_oom();
        if (json_is_number(v = json_object_get(event, "total_cost_usd")) &&
            json_object_set(usage, "total_cost_usd", v) < 0)
                return log_oom();

        o = result_json_new(id, status, failed ? NULL : text, error, TAKE_PTR(usage));
        if (!o)
                return log_oom();
        if (json_dumpf(o, stdout, JSON_COMPACT | JSON_OUTPUT_FLAGS) < 0 || putchar('\n') == EOF)
                return log_error_errno(EIO, "Failed to write JSON output: %m");
        r = flush_stdout();
        return r < 0 ? r : result_exit_status(status);
}

static int stop_session(sd_bus *bus, const char *id, const char *path, bool force) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, path, SESSION_INTERFACE, "Stop");
        if (r >= 0)
                r = sd_bus_message_append(m, "b", force);
        if (r < 0)
                return log_error_errno(r, "Failed to create the Stop call: %m");

        r = sd_bus_call(bus, m, SLOW_CALL_USEC, &error, NULL);
        if (r < 0) {
                log_error("Failed to stop session '%s': %s", id, bus_error_text(&error, r));
                return r;
        }
        return 0;
}

/* create, attach from the start, the first result, stop. Signals are blocked from the start, so that
 * a Ctrl-C while CreateSession is under way still stops the session it creates. */
static int verb_run(sd_bus *bus, char **args) {
        _cleanup_close_ int signal_fd = -EBADF;
        _cleanup_free_ char *id = NULL, *path = NULL;
        bool gone;
        Follow f;
        int r, ret;

        arg_prompt = args[0];

        r = block_exit_signals(&signal_fd);
        if (r < 0)
                return r;
        /* A closed stdout must not kill ccdockerctl before it has stopped the session. */
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                return log_error_errno(errno, "Failed to ignore SIGPIPE: %m");

        r = create_session(bus, &id, &path);
        if (r < 0)
                return r;

        f = (Follow){ .id = id, .path = path, .signal_fd = signal_fd, .stop_at_result = true };
        if (!arg_json) {
                printf("Session %s\n", id);
                r = flush_stdout();
        }
        if (r >= 0)
                r = follow_session(bus, &f);

        if (r == FOLLOW_RESULT)
                ret = print_run_result(id, f.result);
        else if (r == FOLLOW_INTERRUPTED) {
                log_error("Interrupted; %s session '%s'", arg_keep ? "leaving running" : "stopping", id);
                ret = EXIT_INTERRUPTED;
        } else if (r == FOLLOW_EOF) {
                if (!f.state)
                        log_error("Session '%s' ended without a result: it was removed", id);
                else
                        log_error(
                                "Session '%s' ended without a result: %s%s%s",
                                id,
                                f.state,
                                isempty(f.state_reason) ? "" : ": ",
                                strempty(f.state_reason));
                ret = EXIT_FAILURE;
        } else
                ret = r;
        gone = r == FOLLOW_EOF && !f.state;
        follow_done(&f);

        if (!arg_keep && !gone) {
                r = stop_session(bus, id, path, false);
                if (r < 0 && ret == EXIT_SUCCESS)
                        ret = r;
        }
        return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* Command line */

/* The options of create and run but --prompt, which run takes as its argument. */
/* clang-format off */
#define SESSION_CONFIG_OPTIONS                                     \
        { "image", required_argument, NULL, ARG_IMAGE },           \
        { "memory", required_argument, NULL, ARG_MEMORY },         \
        { "cpus", required_argument, NULL, ARG_CPUS },             \
        { "tasks", required_argument, NULL, ARG_TASKS },           \
        { "timeout", required_argument, NULL, ARG_TIMEOUT },       \
        { "workspace", required_argument, NULL, ARG_WORKSPACE },   \
        { "task-type", required_argument, NULL, ARG_TASK_TYPE },   \
        { "env", required_argument, NULL, ARG_ENV },               \
        { "network", required_argument, NULL, ARG_NETWORK },       \
        { "secret", required_argument, NULL, ARG_SECRET },         \
        { "allow-host", required_argument, NULL, ARG_ALLOW_HOST }
/* clang-format on */

static const struct option create_options[] = {
        COMMON_OPTIONS,
        SESSION_CONFIG_OPTIONS,
        { "prompt", required_argument, NULL, ARG_PROMPT },
        {},
};

static const struct option run_options[] = {
        COMMON_OPTIONS,
        SESSION_CONFIG_OPTIONS,
        { "keep", no_argument, NULL, ARG_KEEP },
        {},
};

static const struct option stop_options[] = {
        COMMON_OPTIONS,
        { "force", no_argument, NULL, ARG_FORCE },
        {},
};

static const struct option output_options[] = {
        COMMON_OPTIONS,
        { "since", required_argument, NULL, ARG_SINCE },
        { "limit", required_argument, NULL, ARG_LIMIT },
        {},
};

static const struct option attach_options[] = {
        COMMON_OPTIONS,
        { "since", required_argument, NULL, ARG_SINCE },
        {},
};

static const struct option result_options[] = {
        COMMON_OPTIONS,
        { "wait", no_argument, NULL, ARG_WAIT },
        { "timeout", required_argument, NULL, ARG_WAIT_TIMEOUT },
        {},
};

static const struct option budget_options[] = {
        COMMON_OPTIONS,
        { "usd", required_argument, NULL, ARG_USD },
        { "tokens", required_argument, NULL, ARG_TOKENS },
        {},
};

static const struct option common_options[] = {
        COMMON_OPTIONS,
        {},
};

/* ---- questions for a human (docs/ccdockerctl.md: questions, answer) ---- */

/* The questions of session id (NULL: of every session the caller sees), pending ones unless --all. */
static int verb_questions(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_decrefp) json_t *list = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0], *text;
        json_t *q;
        size_t i;
        int r;

        if (id) {
                r = get_session_path(bus, id, &path);
                if (r < 0)
                        return r;
                r = sd_bus_call_method(
                        bus,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "ListQuestions",
                        &error,
                        &reply,
                        "b",
                        !arg_all_questions);
        } else
                r = sd_bus_call_method(
                        bus,
                        BUS_NAME,
                        MANAGER_PATH,
                        MANAGER_INTERFACE,
                        "ListQuestions",
                        &error,
                        &reply,
                        "b",
                        !arg_all_questions);
        if (r < 0) {
                log_error("Failed to list the questions: %s", bus_error_text(&error, r));
                return r;
        }
        r = sd_bus_message_read(reply, "s", &text);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of ListQuestions: %m");
        list = json_loads(text, 0, NULL);
        if (!json_is_array(list))
                return log_error_errno(EBADMSG, "ListQuestions did not answer a JSON array");
        if (arg_json)
                return print_json(list);

        if (json_array_size(list) > 0)
                printf("%-36s  %-36s  %-10s  %-8s  %-7s  %s\n",
                       "QUESTION",
                       "SESSION",
                       "KIND",
                       "STATUS",
                       "ATTEMPT",
                       "TEXT");
        json_array_foreach (list, i, q) {
                const char *t = json_string_value(json_object_get(q, "message"));
                char attempt[32];

                (void) snprintf(
                        attempt,
                        sizeof(attempt),
                        "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                        json_integer_value(json_object_get(q, "attempt")),
                        json_integer_value(json_object_get(q, "max_attempts")));
                /* One line each: the text up to its first line break, at most 60 bytes. */
                printf("%-36s  %-36s  %-10s  %-8s  %-7s  %.*s\n",
                       strempty(json_string_value(json_object_get(q, "interaction_id"))),
                       strempty(json_string_value(json_object_get(q, "session_id"))),
                       strempty(json_string_value(json_object_get(q, "type"))),
                       strempty(json_string_value(json_object_get(q, "status"))),
                       attempt,
                       (int) (strcspn(strempty(t), "\r\n") < 60 ? strcspn(strempty(t), "\r\n") : 60),
                       strempty(t));
        }
        return flush_stdout();
}

static int verb_answer(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(
                bus,
                BUS_NAME,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "AnswerQuestion",
                &error,
                NULL,
                "ssa{sv}",
                args[0],
                args[1],
                1,
                "surface",
                "s",
                "ctl");
        if (r < 0) {
                log_error("Failed to answer question '%s': %s", args[0], bus_error_text(&error, r));
                return r;
        }
        if (arg_json) {
                _cleanup_(json_decrefp) json_t *o =
                        json_pack("{s:s, s:b}", "interaction_id", args[0], "answered", true);

                return o ? print_json(o) : log_oom();
        }
        return 0;
}

static const struct option questions_options[] = {
        COMMON_OPTIONS,
        { "all", no_argument, NULL, ARG_ALL },
        {},
};

/* The positional arguments of a verb, as the usage error names them; "[...]" ones are optional (and
 * last). */
static const char *const args_id[] = { "a session ID", NULL };
static const char *const args_id_prompt[] = { "a session ID", "a PROMPT", NULL };
static const char *const args_prompt[] = { "a PROMPT", NULL };
static const char *const args_optional_id[] = { "[a session ID]", NULL };
static const char *const args_answer[] = { "a QUESTION-ID", "a TEXT", NULL };

typedef struct Verb {
        const char *name;
        const char *const *arguments; /* the positional arguments, NULL-terminated; NULL for none */
        const struct option *options;
        int (*parse_option)(int c, char *optarg_value); /* the verb's own options; NULL: none */
        int (*check_options)(void); /* after parsing: how options combine; NULL: nothing to check */
        int (*run)(sd_bus *bus, char **args); /* < 0 failure (logged), else the exit status */
} Verb;

static const Verb verbs[] = {
        { "create", NULL, create_options, parse_create_option, NULL, verb_create },
        { "run", args_prompt, run_options, parse_run_option, NULL, verb_run },
        { "list", NULL, common_options, NULL, NULL, verb_list },
        { "tree", args_optional_id, common_options, NULL, NULL, verb_tree },
        { "children", args_id, common_options, NULL, NULL, verb_children },
        { "status", args_id, common_options, NULL, NULL, verb_status },
        { "send", args_id_prompt, common_options, NULL, NULL, verb_send },
        { "output", args_id, output_options, parse_output_option, NULL, verb_output },
        { "attach", args_id, attach_options, parse_output_option, NULL, verb_attach },
        { "result", args_id, result_options, parse_result_option, check_result_options, verb_result },
        { "budget", args_id, budget_options, parse_budget_option, check_budget_options, verb_budget },
        { "stop", args_id, stop_options, parse_stop_option, NULL, verb_stop },
        { "remove", args_id, common_options, NULL, NULL, verb_remove },
        { "questions", args_optional_id, questions_options, parse_questions_option, NULL, verb_questions },
        { "answer", args_answer, common_options, NULL, NULL, verb_answer },
};

/* Parses "VERB [OPTIONS...] [ARGS...]" (argv[0] is the verb), options in any position. Returns 0, or
 * -ECANCELED after --help or --version, or -EINVAL after reporting a usage error. */
static int parse_verb_argv(const Verb *verb, int argc, char *argv[]) {
        int c, r, n_args, n_wanted = 0;

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

        while (verb->arguments && verb->arguments[n_wanted])
                n_wanted++;
        n_args = argc - optind;
        if (n_args < n_wanted && !startswith(verb->arguments[n_args], "["))
                return usage_error("Command '%s' needs %s", verb->name, verb->arguments[n_args]);
        if (n_args > n_wanted)
                return usage_error(
                        "Unexpected argument '%s' for '%s'%s",
                        argv[optind + n_wanted],
                        verb->name,
                        n_wanted > 0 && streq(verb->arguments[n_wanted - 1], "a PROMPT")
                                ? " (quote a PROMPT of several words)"
                                : "");

        return verb->check_options ? verb->check_options() : 0;
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
        *ret_args = argv + optind; /* the positional arguments, after getopt's permutation */
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
        return r < 0 ? EXIT_FAILURE : r;
}

int main(int argc, char *argv[]) {
        int r;

        log_set_prefix("ccdockerctl");
        /* A command-line tool reports to whoever ran it, even from a unit whose stderr is the journal. */
        log_set_target(LOG_TARGET_STDERR);

        if (token_command_requested(argc, argv))
                return token_main(argc, argv);
        r = run(argc, argv);
        free(arg_env);
        free(arg_secrets);
        free(arg_allowed_hosts);
        return r;
}

/* ccdockerctl token: creates, lists and revokes the bearer tokens of ccdocker-httpd in its token store
 * (httpd/tokens.c). It does not talk to ccdockerd: a token is a key to the HTTP adapter, which then acts
 * on the daemon as its own D-Bus client. "create" prints the token once; only its SHA-256 is stored. */
#define _GNU_SOURCE
#include "token.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "time-util.h"
#include "tokens.h"
#include "util.h"

#define EXIT_USAGE 2
/* The system token store belongs to the user ccdocker-httpd runs as (units/ccdocker-httpd.sysusers). */
#define HTTPD_USER "ccdocker-httpd"

static bool arg_user = false;
static bool arg_json = false;
static const char *arg_tokens = NULL;

static void help(void) {
        printf("ccdockerctl [--user] [--json] [--tokens PATH] token COMMAND\n"
               "\n"
               "Manage the bearer tokens of ccdocker-httpd, the HTTP and WebSocket adapter.\n"
               "\n"
               "Commands:\n"
               "  token create NAME    Make a new token and print it; it is shown only this once\n"
               "  token list           List tokens: name, creation, last use, sessions created\n"
               "  token revoke NAME    Delete a token; requests with it get 401 from then on\n"
               "\n"
               "Options:\n"
               "     --user            Use the user-mode token store\n"
               "                       ($XDG_STATE_HOME/ccdocker-httpd/tokens.db)\n"
               "     --system          Use the system token store (default:\n"
               "                       /var/lib/ccdocker-httpd/tokens.db)\n"
               "     --tokens PATH     Use this token store (also $CCDOCKER_HTTPD_TOKENS)\n"
               "     --json            Print JSON\n"
               "\n"
               "NAME is 1-64 characters of A-Z a-z 0-9 . _ -.\n");
}

bool token_command_requested(int argc, char *argv[]) {
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--tokens")) {
                        i++;
                        continue;
                }
                if (argv[i][0] == '-')
                        continue;
                return streq(argv[i], "token");
        }
        return false;
}

static int format_time(uint64_t usec, char *buf, size_t size) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (usec == 0)
                return snprintf(buf, size, "never");
        if (!localtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm) == 0)
                return snprintf(buf, size, "-");
        return 0;
}

static int open_store(bool create, TokenStore **ret) {
        _cleanup_free_ char *path = NULL;
        const char *p = arg_tokens ?: getenv("CCDOCKER_HTTPD_TOKENS");
        int r;

        if (isempty(p)) {
                r = token_store_default_path(arg_user, &path);
                if (r < 0)
                        return log_error_errno(r, "Cannot tell where the token store is (no $HOME?): %m");
                p = path;
        }
        r = token_store_open(p, create, ret);
        if (r < 0)
                return r;

        /* A system store made by root here must stay writable for ccdocker-httpd, which records in it
         * the sessions each token creates. */
        if (create && !arg_user && geteuid() == 0) {
                struct passwd *pw = getpwnam(HTTPD_USER);

                if (pw && chown(p, pw->pw_uid, pw->pw_gid) < 0)
                        log_warning_errno(errno, "Failed to give %s to user %s: %m", p, HTTPD_USER);
        }
        return 0;
}

static int token_create(const char *name) {
        _cleanup_(token_store_freep) TokenStore *s = NULL;
        _cleanup_free_ char *token = NULL;
        int r;

        if (!token_name_is_valid(name)) {
                log_error("Token name '%s' is not valid: 1-64 characters of A-Z a-z 0-9 . _ -", name);
                return EXIT_USAGE;
        }
        r = open_store(true, &s);
        if (r < 0)
                return EXIT_FAILURE;
        r = token_store_create(s, name, &token);
        if (r == -EEXIST) {
                log_error("A token named '%s' exists already; revoke it first.", name);
                return EXIT_FAILURE;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to create a token: %m");
                return EXIT_FAILURE;
        }
        if (arg_json) {
                _cleanup_free_ char *text = NULL;
                _cleanup_(json_decrefp) json_t *o = json_pack("{s:s,s:s}", "name", name, "token", token);

                text = o ? json_dumps(o, JSON_COMPACT) : NULL;
                if (!text)
                        return log_oom(), EXIT_FAILURE;
                printf("%s\n", text);
        } else
                printf("%s\n", token);
        explicit_bzero(token, strlen(token));
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int token_list(void) {
        _cleanup_(token_store_freep) TokenStore *s = NULL;
        _cleanup_(json_decrefp) json_t *a = NULL;
        TokenInfo *t = NULL;
        size_t n = 0;
        int r;

        r = open_store(false, &s);
        if (r < 0)
                return EXIT_FAILURE;
        r = token_store_list(s, &t, &n);
        if (r < 0)
                return EXIT_FAILURE;

        if (arg_json)
                a = json_array();
        else if (n > 0)
                printf("%-24s %-24s %-24s %s\n", "NAME", "CREATED", "LAST USED", "SESSIONS");
        for (size_t i = 0; i < n; i++) {
                char created[64], used[64];

                format_time(t[i].created_usec, created, sizeof created);
                format_time(t[i].last_used_usec, used, sizeof used);
                if (a)
                        json_array_append_new(
                                a,
                                json_pack(
                                        "{s:s,s:s,s:s?,s:I}",
                                        "name",
                                        t[i].name,
                                        "created_at",
                                        created,
                                        "last_used_at",
                                        t[i].last_used_usec ? used : NULL,
                                        "sessions",
                                        (json_int_t) t[i].n_sessions));
                else
                        printf("%-24s %-24s %-24s %" PRIu64 "\n", t[i].name, created, used, t[i].n_sessions);
        }
        token_info_free_many(t, n);
        if (a) {
                _cleanup_free_ char *text = json_dumps(a, JSON_COMPACT);

                if (!text)
                        return log_oom(), EXIT_FAILURE;
                printf("%s\n", text);
        }
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int token_revoke(const char *name) {
        _cleanup_(token_store_freep) TokenStore *s = NULL;
        int r;

        r = open_store(false, &s);
        if (r < 0)
                return EXIT_FAILURE;
        r = token_store_revoke(s, name);
        if (r == -ENOENT) {
                log_error("No token named '%s'.", name);
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int token_main(int argc, char *argv[]) {
        enum { ARG_USER = 0x100, ARG_SYSTEM, ARG_JSON, ARG_TOKENS };
        static const struct option options[] = {
                { "user", no_argument, NULL, ARG_USER }, { "system", no_argument, NULL, ARG_SYSTEM },
                { "json", no_argument, NULL, ARG_JSON }, { "tokens", required_argument, NULL, ARG_TOKENS },
                { "help", no_argument, NULL, 'h' },      {},
        };
        const char *verb;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_USER:
                        arg_user = true;
                        break;
                case ARG_SYSTEM:
                        arg_user = false;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_TOKENS:
                        arg_tokens = optarg;
                        break;
                default:
                        return EXIT_USAGE;
                }

        /* argv[optind] is "token" (getopt moved the options before it). */
        if (argc - optind < 2) {
                log_error("Command 'token' needs create, list or revoke; see 'ccdockerctl token --help'.");
                return EXIT_USAGE;
        }
        verb = argv[optind + 1];
        if (streq(verb, "create") && argc - optind == 3)
                return token_create(argv[optind + 2]);
        if (streq(verb, "list") && argc - optind == 2)
                return token_list();
        if (streq(verb, "revoke") && argc - optind == 3)
                return token_revoke(argv[optind + 2]);
        if (streq(verb, "create") || streq(verb, "revoke"))
                log_error("'token %s' needs exactly one NAME.", verb);
        else if (streq(verb, "list"))
                log_error("'token list' takes no argument.");
        else
                log_error("Unknown token command '%s'; use create, list or revoke.", verb);
        return EXIT_USAGE;
}

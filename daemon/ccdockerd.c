/* ccdockerd: runs Claude Code sessions as podman containers inside transient systemd units and serves
 * them over D-Bus as org.ccdocker1. This file is only the command line; manager.c is the daemon. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cleanup.h"
#include "config-build.h"
#include "config.h"
#include "credentials.h"
#include "discord.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"
#include "oom.h"
#include "questions.h"
#include "time-util.h"
#include "util.h"

#define DEFAULT_CONFIG_FILE "/etc/ccdocker/ccdockerd.conf"

static void help(void) {
        printf("Usage: ccdockerd [OPTIONS...]\n"
               "\n"
               "Runs Claude Code sessions, each in a podman container inside a transient systemd unit\n"
               "ccdocker-session-<id>.service, and serves them on D-Bus as org.ccdocker1 (see\n"
               "docs/dbus-api.md). Sessions keep running when the daemon stops; a restarted daemon\n"
               "re-adopts them from its store.\n"
               "\n"
               "Options:\n"
               "  --user              Serve on the user bus and use the user's systemd manager; no polkit\n"
               "  --system            Serve on the system bus, authorise every call with polkit (default\n"
               "                      for root)\n"
               "  --config=PATH       Read this configuration file (default %s; a missing default\n"
               "                      file is fine, a missing named one is an error)\n"
               "  --set=KEY=VALUE     Set one configuration key, after the file (repeatable; keys as in\n"
               "                      docs/ccdockerd.conf.md, e.g. --set=MaxMemory=4G)\n"
               "  --log-level=LEVEL   debug, info (default), notice, warning, err\n"
               "  -h --help           Show this help\n"
               "  --version           Show the version\n"
               "\n"
               "Exit status: 0 after SIGTERM or SIGINT, 1 on a startup error (the log says which).\n",
               DEFAULT_CONFIG_FILE);
}

static int parse_level(const char *s) {
        static const struct {
                const char *name;
                int level;
        } levels[] = {
                { "debug", LOG_DEBUG },     { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR },   { "error", LOG_ERR },
        };
        for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                if (streq(levels[i].name, s))
                        return levels[i].level;
        return -EINVAL;
}

/* Every live session holds file descriptors (its channel, egress and model sockets; more while its
 * container is made), so the soft limit of 1024 that systemd gives a service (for select()'s sake: nothing
 * here calls select(), and the forked workers of async.c exec nothing) would refuse new sessions at a few
 * hundred (tests/bench/scale.py). The hard limit is the admin's bound; the soft one goes up to it. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                log_warning_errno(
                        errno,
                        "could not raise the open-file limit to %llu: %m",
                        (unsigned long long) rl.rlim_max);
}

/* The Discord sink, when DiscordChannelID= is set (docs/discord.md): without a token that is a
 * configuration error, as a channel nobody can post in would leave every question unanswered there. */
static int discord_setup(Manager *m, const char *token, Discord **ret) {
        const DaemonConfig *c = &m->config;

        *ret = NULL;
        if (isempty(c->discord_channel_id)) {
                if (token)
                        log_info("A Discord bot token is set but DiscordChannelID= is not: Discord is off.");
                return 0;
        }
        if (!token)
                return log_error_errno(
                        EINVAL,
                        "DiscordChannelID= is set but there is no bot token (credential discord-bot-token or DISCORD_BOT_TOKEN).");
        return discord_new(
                m->event,
                &(DiscordConfig){
                        .api_url = c->discord_api_url,
                        .channel_id = c->discord_channel_id,
                        .token = token,
                        .max_retries = c->discord_max_retries,
                        .poll_usec = (uint64_t) c->discord_poll_interval_sec * USEC_PER_SEC,
                },
                ret);
}

int main(int argc, char *argv[]) {
        enum { ARG_USER = 0x100, ARG_SYSTEM, ARG_CONFIG, ARG_SET, ARG_LOG_LEVEL, ARG_VERSION };
        static const struct option options[] = {
                { "user", no_argument, NULL, ARG_USER },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "set", required_argument, NULL, ARG_SET },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        /* Before m: freed after it, as the questions core holds its sink until then. */
        _cleanup_(discord_freep) Discord *discord = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        HumanSink discord_sink;
        char *discord_token = NULL;
        DaemonConfig config = {};
        const char *config_file = NULL;
        char **sets = NULL;
        size_t n_sets = 0;
        DaemonMode mode = geteuid() == 0 ? DAEMON_SYSTEM : DAEMON_USER;
        sigset_t mask;
        int c, r;

        log_set_prefix("ccdockerd");
        log_set_target(LOG_TARGET_AUTO);

        sets = calloc(argc + 1, sizeof(char *));
        if (!sets)
                return EXIT_FAILURE;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_USER:
                        mode = DAEMON_USER;
                        break;
                case ARG_SYSTEM:
                        mode = DAEMON_SYSTEM;
                        break;
                case ARG_CONFIG:
                        config_file = optarg;
                        break;
                case ARG_SET:
                        sets[n_sets++] = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        r = parse_level(optarg);
                        if (r < 0) {
                                log_error(
                                        "--log-level: unknown level '%s' (debug, info, notice, warning, err)",
                                        optarg);
                                free(sets);
                                return EXIT_FAILURE;
                        }
                        log_set_max_level(r);
                        break;
                case 'h':
                        help();
                        free(sets);
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("ccdockerd %s\n", PROJECT_VERSION);
                        free(sets);
                        return EXIT_SUCCESS;
                default:
                        free(sets);
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                log_error("unexpected argument '%s' (see --help)", argv[optind]);
                free(sets);
                return EXIT_FAILURE;
        }

        r = config_init(&config, mode);
        if (r >= 0)
                r = config_load_file(&config, config_file ?: DEFAULT_CONFIG_FILE, config_file != NULL);
        for (size_t i = 0; r >= 0 && i < n_sets; i++) {
                _cleanup_free_ char *key = NULL;
                const char *eq = strchr(sets[i], '=');

                if (!eq) {
                        log_error("--set: '%s' is not KEY=VALUE", sets[i]);
                        r = -EINVAL;
                        break;
                }
                key = strndup(sets[i], eq - sets[i]);
                if (!key) {
                        r = log_oom();
                        break;
                }
                r = config_set(&config, key, eq + 1); /* logs what was wrong */
        }
        free(sets);
        if (r >= 0)
                r = config_verify(&config);
        if (r < 0) {
                config_done(&config);
                return EXIT_FAILURE;
        }

        /* The bot token leaves the environment at once, whether Discord is configured or not. */
        r = discord_token_load(getenv("CREDENTIALS_DIRECTORY"), DISCORD_TOKEN_MAX, &discord_token);
        if (r < 0) {
                config_done(&config);
                return EXIT_FAILURE;
        }

        /* sd-event handles these; they must be blocked first. SIGCHLD: the forked workers of async.c
         * are watched with sd_event_add_child(). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        raise_fd_limit();

        r = manager_new(&config, &m);
        if (r < 0) {
                config_done(&config);
                log_error_errno(r, "could not set up: %m");
                return EXIT_FAILURE;
        }
        /* The D-Bus API sits on the core: the core tells it what changed through this table only. */
        m->publisher = &manager_dbus_publisher;
        r = discord_setup(m, discord_token, &discord);
        if (discord_token)
                explicit_bzero(discord_token, strlen(discord_token));
        discord_token = mfree(discord_token);
        if (r < 0)
                return EXIT_FAILURE;
        if (discord) {
                discord_sink = discord_human_sink(discord);
                questions_set_sink(m->questions, &discord_sink);
        }
        r = oom_watch_start(m->event);
        if (r >= 0)
                r = manager_startup(m);
        if (r < 0) {
                oom_watch_stop();
                return EXIT_FAILURE;
        }
        log_info(
                "ccdockerd %s serving org.ccdocker1 on the %s bus",
                PROJECT_VERSION,
                mode == DAEMON_SYSTEM ? "system" : "user");
        r = manager_run(m);
        oom_watch_stop();
        if (r < 0) {
                log_error_errno(r, "event loop failed: %m");
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

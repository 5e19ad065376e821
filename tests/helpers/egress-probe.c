/* egress-probe: runs the daemon's real egress proxy (daemon/egress-proxy.c) on its own sd-event loop for
 * one "session" socket, for tests/integration/test_egress.py. It listens on --socket for --session
 * with the allowlist of its --allow entries (socket owned by --uid/--gid, default its own), prints
 * "ready" on stdout once it listens, and runs until SIGTERM or SIGINT, then frees everything and exits
 * 0 (so a sanitizer build reports leaks). Exit status 1 on error, 2 for bad usage. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "egress-proxy.h"
#include "log.h"
#include "util.h"

static void usage(void) {
        fprintf(stderr,
                "usage: egress-probe --socket=PATH --session=ID [--allow=HOST[:PORT]]... [--forward=ID=HOST:PORT]... [--uid=N] [--gid=N]\n");
}

static void sd_event_unrefp_local(sd_event **e) {
        if (*e)
                sd_event_unref(*e);
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' }, { "session", required_argument, NULL, 'i' },
                { "allow", required_argument, NULL, 'a' },  { "forward", required_argument, NULL, 'f' },
                { "uid", required_argument, NULL, 'u' },    { "gid", required_argument, NULL, 'g' },
                { "debug", no_argument, NULL, 'd' },        {},
        };
        _cleanup_(sd_event_unrefp_local) sd_event *event = NULL;
        _cleanup_(egress_proxy_freep) EgressProxy *proxy = NULL;
        const char *socket_path = NULL, *session = NULL;
        char **allowed = NULL, **forwards = NULL;
        size_t n_allowed = 0, n_forwards = 0;
        uid_t uid = getuid();
        gid_t gid = getgid();
        EgressSession *s = NULL;
        sigset_t mask;
        int c, r;

        log_set_prefix("egress-probe");
        allowed = calloc((size_t) argc + 1, sizeof(char *));
        forwards = calloc((size_t) argc + 1, sizeof(char *));
        if (!allowed || !forwards)
                return 1;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                int v;

                switch (c) {
                case 's':
                        socket_path = optarg;
                        break;
                case 'i':
                        session = optarg;
                        break;
                case 'a':
                        allowed[n_allowed++] = optarg;
                        break;
                case 'f':
                        forwards[n_forwards++] = optarg;
                        break;
                case 'u':
                case 'g':
                        if (safe_atoi(optarg, &v) < 0 || v < 0) {
                                usage();
                                return 2;
                        }
                        if (c == 'u')
                                uid = (uid_t) v;
                        else
                                gid = (gid_t) v;
                        break;
                case 'd':
                        log_set_max_level(LOG_DEBUG);
                        break;
                default:
                        usage();
                        return 2;
                }
        }
        if (!socket_path || !session || optind != argc) {
                usage();
                free(allowed);
                return 2;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Could not block signals: %m"), 1;

        r = sd_event_default(&event);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
        if (r < 0) {
                log_error_errno(r, "Could not set up the event loop: %m");
                free(allowed);
                return 1;
        }

        r = egress_proxy_new(event, &proxy);
        if (r < 0) {
                log_error_errno(r, "Could not create the egress proxy: %m");
                free(allowed);
                return 1;
        }
        r = egress_proxy_listen(proxy, session, socket_path, uid, gid, allowed, &s);
        free(allowed); /* the session keeps a copy */
        if (r < 0)
                return 1;
        /* ID=scheme://HOST:PORT, read as the daemon reads a secret's URL. */
        for (size_t i = 0; i < n_forwards; i++) {
                _cleanup_free_ char *id = NULL, *host = NULL;
                const char *eq = strchr(forwards[i], '=');
                uint16_t port;

                if (!eq || !(id = strndup(forwards[i], (size_t) (eq - forwards[i]))) ||
                    egress_url_authority(eq + 1, 0, &host, &port) < 0 ||
                    egress_session_add_forward(s, id, host, port) < 0) {
                        log_error("bad --forward=%s", forwards[i]);
                        free(forwards);
                        return 2;
                }
        }
        free(forwards);

        printf("ready\n");
        fflush(stdout);

        r = sd_event_loop(event);
        if (r < 0) {
                log_error_errno(r, "The event loop failed: %m");
                return 1;
        }
        log_info("stopping with %u open connections", egress_session_connections(s));
        egress_session_free(s);
        return 0;
}

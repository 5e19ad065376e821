/* ccdocker-httpd: the HTTP and WebSocket adapter of ccdockerd for remote apps (DESIGN.md decision 9). An
 * unprivileged D-Bus client of the daemon, like ccdockerctl; it keeps nothing of the daemon's, only its
 * token store. This file is the command line, the listening socket (socket activation or --listen) and
 * the event loop; server.c is the server. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "cleanup.h"
#include "config-build.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

static void help(void) {
        printf("Usage: ccdocker-httpd [OPTIONS...]\n"
               "\n"
               "Serves ccdockerd's sessions over HTTP for remote apps: a JSON REST API under /api/v1,\n"
               "a WebSocket or Server-Sent Events stream of each session's events, /health and\n"
               "/metrics (Prometheus). It is a D-Bus client of ccdockerd (org.ccdocker1) and needs no\n"
               "privilege. Every request but GET /health needs a bearer token made with\n"
               "'ccdockerctl token create NAME'; a token sees the sessions created with it and their\n"
               "descendants, nothing else. See docs/ccdocker-httpd.md and docs/api.md.\n"
               "\n"
               "Options:\n"
               "  --listen=ADDR:PORT  Listen on this TCP address (127.0.0.1:8080, [::1]:8080) instead\n"
               "                      of the socket passed by systemd (ccdocker-httpd.socket)\n"
               "  --user              Talk to ccdockerd on the user bus (ccdockerd --user)\n"
               "  --system            Talk to ccdockerd on the system bus (the default)\n"
               "  --tokens=PATH       The token store (default $CCDOCKER_HTTPD_TOKENS, else\n"
               "                      /var/lib/ccdocker-httpd/tokens.db, with --user\n"
               "                      $XDG_STATE_HOME/ccdocker-httpd/tokens.db); made if missing\n"
               "  --log-level=LEVEL   debug, info (default), notice, warning, err\n"
               "  --max-connections=N Connections open at once (default 8192)\n"
               "  --max-connections-per-client=N\n"
               "                      Connections from one IP address at once (default 256)\n"
               "  --max-body-memory=SIZE\n"
               "                      Request bodies held at once, across connections\n"
               "                      (default 64M); a body that does not fit gets 503\n"
               "  --max-sessions-per-token=N\n"
               "                      Live sessions one token may have created (default 16)\n"
               "  --body-timeout=SEC  A request's body must be complete this long after its\n"
               "                      headers (default 30), however it trickles in\n"
               "  --stream-queue=SIZE Bytes queued for one stream client (default 8M, at least\n"
               "                      64K); a client that falls further behind is dropped\n"
               "  --ticket-ttl=SEC    How long a stream ticket may wait to be used (default 30)\n"
               "  -h --help           Show this help\n"
               "  --version           Show the version\n"
               "\n"
               "Environment:\n"
               "  CCDOCKER_HTTPD_TOKENS   the token store, unless --tokens is given\n"
               "  LISTEN_FDS, LISTEN_PID  socket activation (sd_listen_fds(3)): one TCP socket\n"
               "\n"
               "Exit status: 0 after SIGTERM or SIGINT, 1 on a startup error (the log says which).\n"
               "\n"
               "Examples:\n"
               "  ccdockerctl token create my-app          # prints the token once\n"
               "  ccdocker-httpd --user --listen=127.0.0.1:8080\n"
               "  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/api/v1/sessions\n");
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

/* "127.0.0.1:8080", "[::1]:8080" or ":8080" (every address), as a listening socket. */
static int listen_on(const char *spec) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *host = NULL;
        const char *colon = strrchr(spec, ':');
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } addr = {};
        socklen_t len;
        uint64_t port;
        int one = 1;

        if (!colon || safe_atou64(colon + 1, &port) < 0 || port > 65535)
                return log_error_errno(EINVAL, "--listen: '%s' is not ADDR:PORT", spec);
        host = strndup(spec, (size_t) (colon - spec));
        if (!host)
                return log_oom();
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
                addr.in6.sin6_family = AF_INET6;
                addr.in6.sin6_port = htons((uint16_t) port);
                if (inet_pton(AF_INET6, host, &addr.in6.sin6_addr) != 1)
                        return log_error_errno(EINVAL, "--listen: '%s' is not an IPv6 address", host);
                len = sizeof addr.in6;
        } else {
                addr.in.sin_family = AF_INET;
                addr.in.sin_port = htons((uint16_t) port);
                if (isempty(host))
                        addr.in.sin_addr.s_addr = htonl(INADDR_ANY);
                else if (inet_pton(AF_INET, host, &addr.in.sin_addr) != 1)
                        return log_error_errno(EINVAL, "--listen: '%s' is not an IPv4 address", host);
                len = sizeof addr.in;
        }

        fd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to make a socket: %m");
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, &addr.sa, len) < 0)
                return log_error_errno(errno, "Failed to bind to %s: %m", spec);
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "Failed to listen on %s: %m", spec);
        return TAKE_FD(fd);
}

static int on_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        Server *s = userdata;

        log_info("Stopping on %s.", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1");
        s->exiting = true;
        server_stop_streams(s);
        return sd_event_exit(sd_event_source_get_event(source), 0);
}

/* Streams and idle keep-alive connections each hold a descriptor. */
static void raise_nofile(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int main(int argc, char *argv[]) {
        enum {
                ARG_LISTEN = 0x100,
                ARG_USER,
                ARG_SYSTEM,
                ARG_TOKENS,
                ARG_LOG_LEVEL,
                ARG_VERSION,
                ARG_MAX_CONNECTIONS,
                ARG_MAX_PER_CLIENT,
                ARG_MAX_BODY_MEMORY,
                ARG_BODY_TIMEOUT,
                ARG_MAX_PER_TOKEN,
                ARG_STREAM_QUEUE,
                ARG_TICKET_TTL,
        };
        static const struct option options[] = {
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "user", no_argument, NULL, ARG_USER },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "tokens", required_argument, NULL, ARG_TOKENS },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
                { "max-connections-per-client", required_argument, NULL, ARG_MAX_PER_CLIENT },
                { "max-body-memory", required_argument, NULL, ARG_MAX_BODY_MEMORY },
                { "body-timeout", required_argument, NULL, ARG_BODY_TIMEOUT },
                { "max-sessions-per-token", required_argument, NULL, ARG_MAX_PER_TOKEN },
                { "stream-queue", required_argument, NULL, ARG_STREAM_QUEUE },
                { "ticket-ttl", required_argument, NULL, ARG_TICKET_TTL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(token_store_freep) TokenStore *tokens = NULL;
        _cleanup_free_ char *default_tokens = NULL;
        _cleanup_close_ int listen_fd = -EBADF;
        const char *listen_spec = NULL, *tokens_path = getenv("CCDOCKER_HTTPD_TOKENS");
        ServerLimits limits = SERVER_LIMITS_DEFAULT;
        Server *server = NULL;
        bool user = false;
        uint64_t v;
        sigset_t mask;
        int c, n, r;

        log_set_prefix("ccdocker-httpd");
        log_set_target(LOG_TARGET_AUTO);

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("ccdocker-httpd %s\n", PROJECT_VERSION);
                        return EXIT_SUCCESS;
                case ARG_LISTEN:
                        listen_spec = optarg;
                        break;
                case ARG_USER:
                        user = true;
                        break;
                case ARG_SYSTEM:
                        user = false;
                        break;
                case ARG_TOKENS:
                        tokens_path = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        r = parse_level(optarg);
                        if (r < 0) {
                                log_error("Unknown log level '%s'.", optarg);
                                return EXIT_FAILURE;
                        }
                        log_set_max_level(r);
                        break;
                case ARG_MAX_CONNECTIONS:
                case ARG_MAX_PER_CLIENT:
                        if (safe_atou64(optarg, &v) < 0 || v == 0 || v > 65536) {
                                log_error(
                                        "--%s: '%s' is not a number from 1 to 65536.",
                                        c == ARG_MAX_CONNECTIONS ? "max-connections"
                                                                 : "max-connections-per-client",
                                        optarg);
                                return EXIT_FAILURE;
                        }
                        if (c == ARG_MAX_CONNECTIONS)
                                limits.max_connections = (unsigned) v;
                        else
                                limits.max_connections_per_client = (unsigned) v;
                        break;
                case ARG_MAX_PER_TOKEN:
                        if (safe_atou64(optarg, &v) < 0 || v == 0 || v > 65536) {
                                log_error(
                                        "--max-sessions-per-token: '%s' is not a number from 1 to 65536.",
                                        optarg);
                                return EXIT_FAILURE;
                        }
                        limits.max_sessions_per_token = (unsigned) v;
                        break;
                case ARG_MAX_BODY_MEMORY:
                        if (parse_size(optarg, &v) < 0 || v < BODY_MAX) {
                                log_error("--max-body-memory: '%s' is not a size of at least 1M.", optarg);
                                return EXIT_FAILURE;
                        }
                        limits.max_body_memory = v;
                        break;
                case ARG_BODY_TIMEOUT:
                        if (safe_atou64(optarg, &v) < 0 || v == 0 || v > 3600) {
                                log_error(
                                        "--body-timeout: '%s' is not a number of seconds from 1 to 3600.",
                                        optarg);
                                return EXIT_FAILURE;
                        }
                        limits.body_timeout_usec = v * 1000000ULL;
                        break;
                case ARG_STREAM_QUEUE:
                        if (parse_size(optarg, &v) < 0 || v < 64U * 1024U || v > 1024ULL * 1024U * 1024U) {
                                log_error("--stream-queue: '%s' is not a size from 64K to 1G.", optarg);
                                return EXIT_FAILURE;
                        }
                        limits.stream_queue = v;
                        break;
                case ARG_TICKET_TTL:
                        if (safe_atou64(optarg, &v) < 0 || v == 0 || v > 3600) {
                                log_error(
                                        "--ticket-ttl: '%s' is not a number of seconds from 1 to 3600.",
                                        optarg);
                                return EXIT_FAILURE;
                        }
                        limits.ticket_ttl_usec = v * 1000000ULL;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                log_error("Unexpected argument '%s'; see --help.", argv[optind]);
                return EXIT_FAILURE;
        }

        raise_nofile();

        if (isempty(tokens_path)) {
                r = token_store_default_path(user, &default_tokens);
                if (r < 0) {
                        log_error_errno(r, "Cannot tell where the token store is (no $HOME?): %m");
                        return EXIT_FAILURE;
                }
                tokens_path = default_tokens;
        }
        r = token_store_open(tokens_path, true, &tokens);
        if (r < 0)
                return EXIT_FAILURE;

        if (listen_spec) {
                listen_fd = listen_on(listen_spec);
                if (listen_fd < 0)
                        return EXIT_FAILURE;
        } else {
                n = sd_listen_fds(true);
                if (n < 0) {
                        log_error_errno(n, "Failed to read the sockets passed by systemd: %m");
                        return EXIT_FAILURE;
                }
                if (n != 1) {
                        log_error("Need --listen=ADDR:PORT or exactly one socket from systemd, got %d.", n);
                        return EXIT_FAILURE;
                }
                listen_fd = SD_LISTEN_FDS_START;
        }

        r = sd_event_default(&event);
        if (r >= 0)
                r = user ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r >= 0)
                /* Above HTTP: a GET answered from the property cache comes after every signal that had
                 * arrived with it (httpd/cache.c). */
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL - 1);
        if (r < 0) {
                log_error_errno(r, "Failed to connect to the %s bus: %m", user ? "user" : "system");
                return EXIT_FAILURE;
        }

        r = server_new(event, bus, tokens, listen_fd, &limits, &server);
        if (r < 0)
                return EXIT_FAILURE;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);
        r = sd_event_add_signal(event, NULL, SIGTERM, on_signal, server);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, on_signal, server);
        if (r < 0) {
                log_error_errno(r, "Failed to watch signals: %m");
                server_free(server);
                return EXIT_FAILURE;
        }

        log_info(
                "Serving ccdockerd (%s bus) on %s; tokens in %s; at most %u connections, %u per client, "
                "%" PRIu64 " bytes of bodies, %" PRIu64 " s per body.",
                user ? "user" : "system",
                listen_spec ?: "the socket from systemd",
                tokens_path,
                limits.max_connections,
                limits.max_connections_per_client,
                limits.max_body_memory,
                (uint64_t) (limits.body_timeout_usec / 1000000U));
        (void) sd_notify(false, "READY=1\nSTATUS=Serving");

        r = sd_event_loop(event);
        server_free(server);
        /* MHD closed the listening socket it was given. */
        listen_fd = -EBADF;
        if (r < 0) {
                log_error_errno(r, "The event loop failed: %m");
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}

/* model-proxy-probe: runs the daemon's real model proxy (daemon/model-proxy.c and its parts) on its own
 * sd-event loop with one session socket, for tests/integration/test_model_proxy.py. The credential comes
 * the way the daemon gets it (model_credential_load() of daemon/credentials.c: --credentials-dir files,
 * then ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN). With --budget-file, a call is refused while that
 * file exists and is not empty, with its text as the reason; with --budget-tokens N, the daemon's
 * reservation arithmetic is applied to each session alone. --also ID=PATH listens for one more session
 * (up to four). It prints JSON lines on stdout:
 * {"event":"ready",...} once the socket listens, {"event":"call",...} per call (the usage callback), and
 * {"event":"totals",...} at SIGTERM or SIGINT, after which it frees everything and exits 0. Logs go to
 * stderr, debug included. Exit status 1 on a setup error, 2 for bad usage. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "model-proxy.h"
#include "util.h"

#define EXTRA_SESSIONS_MAX 4

typedef struct Probe {
        ModelProxy *proxy;
        ModelProxySession *session;
        const char *session_id;
        const char *budget_file;
        uint64_t budget_tokens;
        size_t n_extra;
        const char *extra_id[EXTRA_SESSIONS_MAX], *extra_path[EXTRA_SESSIONS_MAX];
        ModelProxySession *extra[EXTRA_SESSIONS_MAX];
} Probe;

static ModelProxySession *probe_session(Probe *probe, const char *id) {
        if (streq(id, probe->session_id))
                return probe->session;
        for (size_t i = 0; i < probe->n_extra; i++)
                if (streq(id, probe->extra_id[i]))
                        return probe->extra[i];
        return NULL;
}

static void print_json(json_t *j) {
        char *s = json_dumps(j, JSON_COMPACT);

        if (s)
                printf("%s\n", s);
        free(s);
        json_decref(j);
        fflush(stdout);
}

static void on_usage(const ModelCall *c, void *userdata) {
        Probe *probe = userdata;

        print_json(json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:b, s:i, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:i, s:I}",
                "event",
                "call",
                "session",
                c->session_id,
                "method",
                c->method,
                "path",
                c->path,
                "model",
                c->model,
                "status",
                (int) c->status,
                "complete",
                c->complete,
                "upstream",
                c->upstream,
                "attempts",
                (int) c->attempts,
                "input_tokens",
                (json_int_t) c->usage.input_tokens,
                "output_tokens",
                (json_int_t) c->usage.output_tokens,
                "cache_creation_input_tokens",
                (json_int_t) c->usage.cache_creation_input_tokens,
                "cache_read_input_tokens",
                (json_int_t) c->usage.cache_read_input_tokens,
                "cost_usd",
                c->cost_usd,
                "latency_ms",
                (json_int_t) (c->latency_usec / 1000),
                "queued_ms",
                (json_int_t) (c->queued_usec / 1000),
                "in_flight_peak",
                (int) model_proxy_in_flight_peak(probe->proxy),
                "reserved_tokens",
                (json_int_t) c->reserved.tokens));
}

static ModelBudgetVerdict on_budget(
        const char *session_id, const ModelReservation *reserve, char **ret_reason, void *userdata) {
        Probe *probe = userdata;
        char buf[512];
        FILE *f;
        size_t n;

        /* --budget-tokens: the daemon's arithmetic (model_budget_admits()) over this session alone. */
        if (probe->budget_tokens > 0) {
                ModelProxySession *s = probe_session(probe, session_id);
                ModelSessionTotals t;
                ModelReservation held;

                model_proxy_session_totals(s, &t);
                model_proxy_session_reserved(s, &held);
                if (!model_budget_admits(
                            probe->budget_tokens,
                            model_usage_tokens(&t.usage),
                            held.tokens,
                            reserve->tokens)) {
                        if (asprintf(
                                    ret_reason,
                                    "used %" PRIu64 " and reserved %" PRIu64 " of %" PRIu64 " tokens",
                                    model_usage_tokens(&t.usage),
                                    held.tokens,
                                    probe->budget_tokens) < 0)
                                *ret_reason = NULL;
                        /* Used up, or only no room beside the calls running. */
                        return model_usage_tokens(&t.usage) >= probe->budget_tokens ? MODEL_BUDGET_REFUSE
                                                                                    : MODEL_BUDGET_BUSY;
                }
        }

        if (!probe->budget_file)
                return MODEL_BUDGET_ALLOW;
        f = fopen(probe->budget_file, "re");
        if (!f)
                return MODEL_BUDGET_ALLOW;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        if (buf[0] == '\0')
                return MODEL_BUDGET_ALLOW;
        *ret_reason = strdup(buf);
        return MODEL_BUDGET_REFUSE;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void usage(void) {
        fprintf(stderr,
                "usage: model-proxy-probe --upstream URL --socket PATH [--session ID] [--max-in-flight N]\n"
                "       [--rpm N] [--queue-max N] [--prices TEXT] [--budget-file PATH] [--credentials-dir DIR]\n"
                "       [--max-in-flight-per-session N] [--budget-tokens N] [--also ID=PATH]...\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "upstream", required_argument, NULL, 'u' },
                { "socket", required_argument, NULL, 's' },
                { "session", required_argument, NULL, 'i' },
                { "max-in-flight", required_argument, NULL, 'm' },
                { "rpm", required_argument, NULL, 'r' },
                { "queue-max", required_argument, NULL, 'q' },
                { "prices", required_argument, NULL, 'p' },
                { "budget-file", required_argument, NULL, 'b' },
                { "credentials-dir", required_argument, NULL, 'c' },
                { "max-in-flight-per-session", required_argument, NULL, 'M' },
                { "budget-tokens", required_argument, NULL, 'B' },
                { "also", required_argument, NULL, 'a' },
                {},
        };
        const char *upstream = NULL, *socket_path = NULL, *session_id = "probe0000001",
                   *prices_text = "*=3/15", *credentials_dir = NULL;
        unsigned max_in_flight = 0, max_per_session = 0, rpm = 0, queue_max = 0;
        _cleanup_free_ char *credential = NULL;
        ModelCredentialKind kind;
        ModelPrice *prices = NULL;
        size_t n_prices = 0;
        sd_event *event = NULL;
        Probe probe = {};
        ModelSessionTotals totals;
        sigset_t mask;
        int c, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                uint64_t v;

                switch (c) {
                case 'u':
                        upstream = optarg;
                        break;
                case 's':
                        socket_path = optarg;
                        break;
                case 'i':
                        session_id = optarg;
                        break;
                case 'B':
                        if (safe_atou64(optarg, &probe.budget_tokens) < 0) {
                                usage();
                                return 2;
                        }
                        break;
                case 'a': {
                        char *eq = strchr(optarg, '=');

                        if (!eq || probe.n_extra >= EXTRA_SESSIONS_MAX) {
                                usage();
                                return 2;
                        }
                        *eq = '\0';
                        probe.extra_id[probe.n_extra] = optarg;
                        probe.extra_path[probe.n_extra++] = eq + 1;
                        break;
                }
                case 'm':
                case 'M':
                case 'r':
                case 'q':
                        if (safe_atou64(optarg, &v) < 0 || v > 100000) {
                                usage();
                                return 2;
                        }
                        if (c == 'm')
                                max_in_flight = (unsigned) v;
                        else if (c == 'M')
                                max_per_session = (unsigned) v;
                        else if (c == 'r')
                                rpm = (unsigned) v;
                        else
                                queue_max = (unsigned) v;
                        break;
                case 'p':
                        prices_text = optarg;
                        break;
                case 'b':
                        probe.budget_file = optarg;
                        break;
                case 'c':
                        credentials_dir = optarg;
                        break;
                default:
                        usage();
                        return 2;
                }
        }
        if (!upstream || !socket_path || optind != argc) {
                usage();
                return 2;
        }

        log_set_target(LOG_TARGET_STDERR);
        log_set_max_level(LOG_DEBUG);
        setvbuf(stdout, NULL, _IOLBF, 0);

        r = model_credential_load(credentials_dir, &kind, &credential);
        if (r < 0)
                return 1;
        if (model_prices_parse(prices_text, &prices, &n_prices) < 0) {
                log_error("bad --prices '%s'", prices_text);
                return 2;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&event);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGTERM, on_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, on_signal, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to set up the event loop: %m");
                return 1;
        }

        r = model_proxy_new(
                event,
                &(ModelProxyConfig){
                        .upstream_base_url = upstream,
                        .credential_kind = kind,
                        .credential = credential,
                        .max_in_flight = max_in_flight,
                        .max_in_flight_per_session = max_per_session,
                        .requests_per_minute = rpm,
                        .queue_max = queue_max,
                        .prices = prices,
                        .n_prices = n_prices,
                        .on_usage = on_usage,
                        .budget = on_budget,
                        .userdata = &probe,
                },
                &probe.proxy);
        model_prices_free(prices, n_prices);
        if (credential)
                explicit_bzero(credential, strlen(credential));
        if (r < 0) {
                log_error_errno(r, "Failed to start the model proxy: %m");
                sd_event_unref(event);
                return 1;
        }

        probe.session_id = session_id;
        r = model_proxy_listen(probe.proxy, session_id, socket_path, getuid(), getgid(), &probe.session);
        for (size_t i = 0; r >= 0 && i < probe.n_extra; i++)
                r = model_proxy_listen(
                        probe.proxy,
                        probe.extra_id[i],
                        probe.extra_path[i],
                        getuid(),
                        getgid(),
                        &probe.extra[i]);
        if (r < 0) {
                model_proxy_free(probe.proxy);
                sd_event_unref(event);
                return 1;
        }

        print_json(json_pack(
                "{s:s, s:s, s:s}",
                "event",
                "ready",
                "socket",
                socket_path,
                "credential",
                kind == MODEL_CREDENTIAL_API_KEY         ? "api-key"
                        : kind == MODEL_CREDENTIAL_OAUTH ? "oauth"
                                                         : "none"));

        r = sd_event_loop(event);

        model_proxy_session_totals(probe.session, &totals);
        print_json(json_pack(
                "{s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:i}",
                "event",
                "totals",
                "calls",
                (json_int_t) totals.calls,
                "input_tokens",
                (json_int_t) totals.usage.input_tokens,
                "output_tokens",
                (json_int_t) totals.usage.output_tokens,
                "cache_creation_input_tokens",
                (json_int_t) totals.usage.cache_creation_input_tokens,
                "cache_read_input_tokens",
                (json_int_t) totals.usage.cache_read_input_tokens,
                "cost_usd",
                totals.cost_usd,
                "in_flight_peak",
                (int) model_proxy_in_flight_peak(probe.proxy)));

        for (size_t i = 0; i < probe.n_extra; i++)
                model_proxy_session_free(probe.extra[i]);
        model_proxy_session_free(probe.session);
        model_proxy_free(probe.proxy);
        sd_event_unref(event);
        return r < 0 ? 1 : 0;
}

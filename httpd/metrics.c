/* GET /metrics in the Prometheus text format (0.0.4): requests by route, method and status, a latency
 * histogram per route, streams open and events sent per transport, spawns and refusals as this process
 * saw them, and the daemon's sessions by state from ListSessions at the time of the scrape. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "config-build.h"
#include "httpd.h"
#include "util.h"

static const double buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
#define N_BUCKETS (sizeof(buckets) / sizeof(buckets[0]))
#define MAX_CODES 16U
#define MAX_REFUSALS 16U

typedef struct RouteMetrics {
        struct {
                unsigned status;
                uint64_t count;
        } codes[MAX_CODES];
        uint64_t bucket[N_BUCKETS]; /* not cumulative here */
        uint64_t observed;
        double sum;
} RouteMetrics;

struct Metrics {
        RouteMetrics *routes; /* n_routes + 1: the last for requests that matched no route */
        uint64_t events_ws, events_sse, spawns;
        struct {
                char reason[32];
                uint64_t count;
        } refusals[MAX_REFUSALS];
};

int metrics_new(Metrics **ret) {
        Metrics *m = calloc(1, sizeof(Metrics));

        if (!m)
                return -ENOMEM;
        m->routes = calloc(n_routes + 1, sizeof(RouteMetrics));
        if (!m->routes) {
                free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        free(m->routes);
        free(m);
        return NULL;
}

void metrics_request(Metrics *m, int route, unsigned status, uint64_t usec) {
        RouteMetrics *r = &m->routes[route >= 0 ? (size_t) route : n_routes];
        double sec;

        for (size_t i = 0; i < MAX_CODES; i++)
                if (r->codes[i].status == status || r->codes[i].status == 0) {
                        r->codes[i].status = status;
                        r->codes[i].count++;
                        break;
                }
        if (usec == UINT64_MAX)
                return;
        sec = (double) usec / 1e6;
        r->observed++;
        r->sum += sec;
        for (size_t i = 0; i < N_BUCKETS; i++)
                if (sec <= buckets[i]) {
                        r->bucket[i]++;
                        break;
                }
}

void metrics_event_sent(Metrics *m, bool websocket) {
        if (websocket)
                m->events_ws++;
        else
                m->events_sse++;
}

void metrics_spawn(Metrics *m) {
        m->spawns++;
}

void metrics_refusal(Metrics *m, const char *reason) {
        for (size_t i = 0; i < MAX_REFUSALS; i++)
                if (streq(m->refusals[i].reason, reason) || !m->refusals[i].reason[0]) {
                        snprintf(m->refusals[i].reason, sizeof m->refusals[i].reason, "%s", reason);
                        m->refusals[i].count++;
                        return;
                }
}

static const char *route_label(size_t i) {
        return i < n_routes ? routes[i].pattern : "other";
}

static const char *route_method(size_t i) {
        return i < n_routes ? routes[i].method : "other";
}

char *metrics_render(Server *s, sd_bus_message *sessions) {
        static const char *const states[] = { "starting", "idle", "running", "stopped", "failed" };
        Metrics *m = s->metrics;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        _cleanup_fclose_ FILE *f = open_memstream(&text, &size);

        if (!f)
                return NULL;

        fprintf(f,
                "# HELP ccdocker_httpd_info The ccdocker-httpd version.\n# TYPE ccdocker_httpd_info gauge\n");
        fprintf(f, "ccdocker_httpd_info{version=\"%s\"} 1\n", PROJECT_VERSION);

        if (sessions) {
                uint64_t count[ELEMENTSOF(states)] = {};
                const char *id, *parent, *state, *unit, *path;
                uint64_t created;
                int r;

                r = sd_bus_message_enter_container(sessions, 'a', "(ssssto)");
                while (r >= 0 &&
                       (r = sd_bus_message_read(
                                sessions, "(ssssto)", &id, &parent, &state, &unit, &created, &path)) > 0)
                        for (size_t i = 0; i < ELEMENTSOF(states); i++)
                                if (streq(states[i], state))
                                        count[i]++;
                fprintf(f,
                        "# HELP ccdocker_sessions Sessions ccdockerd knows, by state.\n"
                        "# TYPE ccdocker_sessions gauge\n");
                for (size_t i = 0; i < ELEMENTSOF(states); i++)
                        fprintf(f, "ccdocker_sessions{state=\"%s\"} %" PRIu64 "\n", states[i], count[i]);
        }
        fprintf(f,
                "# HELP ccdocker_httpd_daemon_up Whether ccdockerd answered the scrape's ListSessions.\n"
                "# TYPE ccdocker_httpd_daemon_up gauge\nccdocker_httpd_daemon_up %d\n",
                sessions ? 1 : 0);

        fprintf(f,
                "# HELP ccdocker_httpd_requests_total HTTP requests answered, by route, method and status.\n"
                "# TYPE ccdocker_httpd_requests_total counter\n");
        for (size_t i = 0; i <= n_routes; i++)
                for (size_t c = 0; c < MAX_CODES && m->routes[i].codes[c].status; c++)
                        fprintf(f,
                                "ccdocker_httpd_requests_total{route=\"%s\",method=\"%s\",code=\"%u\"} %" PRIu64
                                "\n",
                                route_label(i),
                                route_method(i),
                                m->routes[i].codes[c].status,
                                m->routes[i].codes[c].count);

        fprintf(f,
                "# HELP ccdocker_httpd_request_duration_seconds Time from a request's headers to its complete answer (streams excluded).\n"
                "# TYPE ccdocker_httpd_request_duration_seconds histogram\n");
        for (size_t i = 0; i <= n_routes; i++) {
                RouteMetrics *r = &m->routes[i];
                uint64_t cumulative = 0;

                if (r->observed == 0)
                        continue;
                for (size_t b = 0; b < N_BUCKETS; b++) {
                        cumulative += r->bucket[b];
                        fprintf(f,
                                "ccdocker_httpd_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"%g\"} %" PRIu64
                                "\n",
                                route_label(i),
                                route_method(i),
                                buckets[b],
                                cumulative);
                }
                fprintf(f,
                        "ccdocker_httpd_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"+Inf\"} %" PRIu64
                        "\n"
                        "ccdocker_httpd_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.6f\n"
                        "ccdocker_httpd_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %" PRIu64
                        "\n",
                        route_label(i),
                        route_method(i),
                        r->observed,
                        route_label(i),
                        route_method(i),
                        r->sum,
                        route_label(i),
                        route_method(i),
                        r->observed);
        }

        fprintf(f,
                "# HELP ccdocker_httpd_stream_clients Clients following a session's stream now.\n"
                "# TYPE ccdocker_httpd_stream_clients gauge\n"
                "ccdocker_httpd_stream_clients{transport=\"websocket\"} %u\n"
                "ccdocker_httpd_stream_clients{transport=\"sse\"} %u\n",
                stream_count(s, true),
                stream_count(s, false));
        fprintf(f,
                "# HELP ccdocker_httpd_events_sent_total Session events sent to stream clients.\n"
                "# TYPE ccdocker_httpd_events_sent_total counter\n"
                "ccdocker_httpd_events_sent_total{transport=\"websocket\"} %" PRIu64 "\n"
                "ccdocker_httpd_events_sent_total{transport=\"sse\"} %" PRIu64 "\n",
                m->events_ws,
                m->events_sse);
        uint64_t hits, misses;
        size_t cached;
        session_cache_stats(s->sessions, &hits, &misses, &cached);
        fprintf(f,
                "# HELP ccdocker_httpd_session_feeds Sessions followed now, each through one Session.Attach.\n"
                "# TYPE ccdocker_httpd_session_feeds gauge\nccdocker_httpd_session_feeds %u\n"
                "# HELP ccdocker_httpd_session_cache_entries Sessions whose properties are cached.\n"
                "# TYPE ccdocker_httpd_session_cache_entries gauge\nccdocker_httpd_session_cache_entries %zu\n"
                "# HELP ccdocker_httpd_session_cache_total GET /api/v1/sessions/{id} answered from the cache "
                "(hit) or by GetAll (miss).\n"
                "# TYPE ccdocker_httpd_session_cache_total counter\n"
                "ccdocker_httpd_session_cache_total{result=\"hit\"} %" PRIu64 "\n"
                "ccdocker_httpd_session_cache_total{result=\"miss\"} %" PRIu64 "\n",
                feed_count(s),
                cached,
                hits,
                misses);
        fprintf(f,
                "# HELP ccdocker_httpd_spawns_total Child sessions spawned through POST /api/v1/sessions/{id}/spawn.\n"
                "# TYPE ccdocker_httpd_spawns_total counter\nccdocker_httpd_spawns_total %" PRIu64 "\n",
                m->spawns);
        fprintf(f,
                "# HELP ccdocker_httpd_refusals_total Requests ccdockerd refused, by its reason.\n"
                "# TYPE ccdocker_httpd_refusals_total counter\n");
        for (size_t i = 0; i < MAX_REFUSALS && m->refusals[i].reason[0]; i++)
                fprintf(f,
                        "ccdocker_httpd_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
                        m->refusals[i].reason,
                        m->refusals[i].count);

        if (fflush(f) != 0 || ferror(f))
                return NULL;
        fclose(TAKE_PTR(f));
        return TAKE_PTR(text);
}

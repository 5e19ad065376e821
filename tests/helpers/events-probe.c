/* events-probe: runs the daemon's real event bus (daemon/events.c, daemon/store.c) on an sd-event loop
 * against Redis on a unix socket, for tests/integration/test_events_redis.py and for measuring. It opens
 * a store (--db, kept; else one in a temporary directory, removed), appends COUNT events of session ID
 * after those already stored, in batches (all at once, or one batch per --interval-ms), and runs the
 * loop until Redis has acknowledged every stored event of every session (XADD) or --wait-for-redis
 * seconds have passed since the last was stored (0: do not wait); with --attach it also reads the
 * session through a local Attach fd and waits for every line there. It prints JSON lines on stdout:
 * {"stored":N} once all are stored, {"published":K} as Redis catches up, and a closing summary with
 * timings and, with --attach, the delivery latency of the local subscriber. Exit status 0 when all was
 * published (and received), 1 on timeout or error, 2 for bad usage. With --after-connect the appending
 * starts only once the bus is connected to Redis (a flood while Redis is up, not a backlog). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "util.h"

typedef struct Probe {
        sd_event *event;
        Store *store;
        EventBus *bus;
        const char *session;
        uint64_t count, total, batch, interval_usec, wait_usec, pad;
        bool attach;
        bool redis;
        bool after_connect, appending;

        uint64_t next_seq;
        uint64_t t0, stored_at, published_at, received_at, deadline;
        uint64_t reported;
        sd_event_source *append_timer, *check_timer;
        char *padding;

        int fd;
        sd_event_source *io;
        char partial[256]; /* the start of the current line: enough for its seq and time */
        size_t partial_len;
        bool in_line_prefix;
        uint64_t received;
        uint64_t *latency; /* usec, per received event */
        int exit_code;
} Probe;

static uint64_t now(clockid_t clock) {
        struct timespec ts;

        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void usage(void) {
        fprintf(stderr,
                "usage: events-probe --session=ID --count=N [--socket=PATH] [--db=PATH] [--batch=N]\n"
                "                    [--interval-ms=MS] [--pad=BYTES] [--wait-for-redis=SECONDS] [--attach]\n"
                "                    [--after-connect]\n");
}

static bool done(Probe *p) {
        if (p->stored_at == 0)
                return false;
        if (p->redis && p->wait_usec > 0 && !event_bus_redis_caught_up(p->bus))
                return false;
        return !p->attach || p->received >= p->total;
}

static void stored(Probe *p) {
        p->stored_at = now(CLOCK_MONOTONIC);
        p->deadline = p->stored_at + p->wait_usec;
        printf("{\"stored\":%" PRIu64 "}\n", p->total);
        fflush(stdout);
}

static int append_batch(Probe *p) {
        _cleanup_(json_decrefp) json_t *events = json_array();
        uint64_t n = p->batch, t = now(CLOCK_REALTIME);
        int r;

        if (!events)
                return -ENOMEM;
        if (p->next_seq + n - 1 > p->total)
                n = p->total - p->next_seq + 1;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t seq = p->next_seq + i;

                if (json_array_append_new(
                            events,
                            json_pack(
                                    "{s:I,s:I,s:{s:s,s:I,s:s}}",
                                    "seq",
                                    (json_int_t) seq,
                                    "time",
                                    (json_int_t) t,
                                    "data",
                                    "type",
                                    "probe",
                                    "i",
                                    (json_int_t) seq,
                                    "pad",
                                    p->padding)) < 0)
                        return -ENOMEM;
        }
        r = event_bus_append(p->bus, p->session, events);
        if (r < 0)
                return log_error_errno(r, "Could not append events %" PRIu64 "..: %m", p->next_seq);
        p->next_seq += n;
        if (p->next_seq > p->total)
                stored(p);
        return 0;
}

static int on_append(sd_event_source *s, uint64_t usec, void *userdata) {
        Probe *p = userdata;
        int r;

        r = append_batch(p);
        if (r < 0)
                return sd_event_exit(p->event, 1);
        if (p->next_seq > p->total)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        r = sd_event_source_set_time(s, usec + p->interval_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r;
}

static int start_appending(Probe *p);

static int on_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Probe *p = userdata;
        uint64_t published = 0;
        int r;

        if (!p->appending && event_bus_redis_connected(p->bus) && start_appending(p) < 0)
                return sd_event_exit(p->event, 1);
        if (!p->appending && now(CLOCK_MONOTONIC) > p->t0 + p->wait_usec) {
                log_error("Timed out: Redis never connected.");
                return sd_event_exit(p->event, 1);
        }
        (void) event_bus_published_seq(p->bus, p->session, &published);
        if (p->stored_at > 0 && p->published_at == 0 && event_bus_redis_caught_up(p->bus))
                p->published_at = now(CLOCK_MONOTONIC);
        if (published != p->reported) {
                printf("{\"published\":%" PRIu64 "}\n", published);
                fflush(stdout);
                p->reported = published;
        }
        if (done(p))
                return sd_event_exit(p->event, 0);
        if (p->stored_at > 0 && now(CLOCK_MONOTONIC) > p->deadline) {
                log_error(
                        "Timed out: %" PRIu64 " of %" PRIu64 " events published, %" PRIu64
                        " received; Redis %s.",
                        published,
                        p->total,
                        p->received,
                        event_bus_redis_connected(p->bus) ? "connected" : "not connected");
                return sd_event_exit(p->event, 1);
        }
        r = sd_event_source_set_time(s, usec + 10000);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r;
}

/* The local subscriber: only the start of each line is looked at ({"seq":N,"time":N,...), for the order
 * and the latency. */
static void on_line_prefix(Probe *p) {
        uint64_t seq, t;

        p->partial[p->partial_len] = '\0';
        if (sscanf(p->partial, "{\"seq\":%" SCNu64 ",\"time\":%" SCNu64, &seq, &t) != 2 ||
            seq != p->received + 1) {
                log_error(
                        "Local subscriber: line %" PRIu64 " is out of order or malformed: %.80s",
                        p->received + 1,
                        p->partial);
                p->exit_code = 1;
                (void) sd_event_exit(p->event, 1);
                return;
        }
        if (p->received >= p->total) {
                log_error("Local subscriber: more lines than events.");
                p->exit_code = 1;
                (void) sd_event_exit(p->event, 1);
                return;
        }
        p->latency[p->received] = now(CLOCK_REALTIME) - t;
        p->received++;
        if (p->received == p->total)
                p->received_at = now(CLOCK_MONOTONIC);
}

static int on_subscriber(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Probe *p = userdata;
        char buf[65536];

        for (;;) {
                ssize_t k = read(fd, buf, sizeof buf);

                if (k < 0) {
                        if (errno == EAGAIN)
                                break;
                        return log_error_errno(errno, "Reading the local subscriber: %m");
                }
                if (k == 0) {
                        log_error("The local subscriber got EOF after %" PRIu64 " events.", p->received);
                        return sd_event_exit(p->event, 1);
                }
                for (ssize_t i = 0; i < k; i++) {
                        if (buf[i] == '\n') {
                                p->partial_len = 0;
                                p->in_line_prefix = true;
                                continue;
                        }
                        if (!p->in_line_prefix)
                                continue;
                        if (buf[i] == ',' && memchr(p->partial, ',', p->partial_len)) {
                                /* The second comma: seq and time are in. */
                                on_line_prefix(p);
                                p->in_line_prefix = false;
                                continue;
                        }
                        if (p->partial_len + 1 < sizeof p->partial)
                                p->partial[p->partial_len++] = buf[i];
                }
        }
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void print_summary(Probe *p) {
        uint64_t published = 0;
        double store_s = p->stored_at > 0 ? (double) (p->stored_at - p->t0) / 1e6 : 0;

        (void) event_bus_published_seq(p->bus, p->session, &published);
        printf("{\"done\":%s,\"count\":%" PRIu64 ",\"total\":%" PRIu64 ",\"published\":%" PRIu64
               ",\"received\":%" PRIu64 ",\"store_ms\":%.1f,\"store_rate\":%.0f",
               p->exit_code == 0 ? "true" : "false",
               p->count,
               p->total,
               published,
               p->received,
               store_s * 1e3,
               store_s > 0 ? (double) p->count / store_s : 0);
        if (p->published_at > 0)
                printf(",\"publish_ms\":%.1f,\"publish_rate\":%.0f",
                       (double) (p->published_at - p->t0) / 1e3,
                       (double) p->count * 1e6 / (double) (p->published_at - p->t0));
        if (p->attach && p->received > 0) {
                qsort(p->latency, p->received, sizeof(uint64_t), cmp_u64);
                printf(",\"receive_ms\":%.1f,\"latency_p50_us\":%" PRIu64 ",\"latency_p99_us\":%" PRIu64
                       ",\"latency_max_us\":%" PRIu64,
                       p->received_at > 0 ? (double) (p->received_at - p->t0) / 1e3 : -1.0,
                       p->latency[p->received / 2],
                       p->latency[p->received * 99 / 100],
                       p->latency[p->received - 1]);
        }
        printf("}\n");
        fflush(stdout);
}

static int start_appending(Probe *p) {
        int r;

        p->appending = true;
        p->t0 = now(CLOCK_MONOTONIC);
        if (p->count == 0)
                stored(p);
        else if (p->interval_usec == 0) {
                /* All at once, in one go: the store's pace alone. */
                while (p->next_seq <= p->total) {
                        r = append_batch(p);
                        if (r < 0)
                                return r;
                }
        } else {
                r = sd_event_add_time(
                        p->event, &p->append_timer, CLOCK_MONOTONIC, now(CLOCK_MONOTONIC), 1, on_append, p);
                if (r < 0)
                        return log_error_errno(r, "Could not add a timer: %m");
        }
        return 0;
}

/* Sets up, appends and runs the loop; what it made is freed by probe_done(). */
static int probe_run(Probe *p, const char *db, const char *socket_path) {
        int r;

        r = sd_event_default(&p->event);
        if (r >= 0)
                r = store_open(db, &p->store);
        if (r >= 0)
                r = event_bus_new(p->event, p->store, socket_path, &p->bus);
        if (r < 0)
                return log_error_errno(r, "Could not set up the event bus: %m");

        r = event_bus_last_seq(p->bus, p->session, &p->next_seq);
        if (r < 0)
                return log_error_errno(r, "Could not read the stored events: %m");
        p->next_seq++;
        p->total = p->next_seq - 1 + p->count;
        p->latency = calloc(p->total + 1, sizeof(uint64_t));
        if (!p->latency)
                return log_oom();

        if (p->attach) {
                r = event_bus_attach(p->bus, p->session, 0, &p->fd);
                if (r >= 0 && fcntl(p->fd, F_SETFL, O_NONBLOCK) < 0)
                        r = -errno;
                if (r >= 0)
                        r = sd_event_add_io(p->event, &p->io, p->fd, EPOLLIN, on_subscriber, p);
                if (r < 0)
                        return log_error_errno(r, "Could not attach: %m");
        }

        p->t0 = now(CLOCK_MONOTONIC);
        if (!p->after_connect) {
                r = start_appending(p);
                if (r < 0)
                        return r;
        }
        r = sd_event_add_time(
                p->event, &p->check_timer, CLOCK_MONOTONIC, now(CLOCK_MONOTONIC), 1000, on_check, p);
        if (r < 0)
                return log_error_errno(r, "Could not add a timer: %m");

        r = sd_event_loop(p->event);
        if (r < 0)
                return log_error_errno(r, "The event loop failed: %m");
        if (r > 0 && p->exit_code == 0)
                p->exit_code = 1;
        print_summary(p);
        return 0;
}

static void probe_done(Probe *p) {
        sd_event_source_disable_unref(p->append_timer);
        sd_event_source_disable_unref(p->check_timer);
        sd_event_source_disable_unref(p->io);
        safe_close(p->fd);
        event_bus_free(p->bus);
        store_close(p->store);
        sd_event_unref(p->event);
        free(p->padding);
        free(p->latency);
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' },
                { "session", required_argument, NULL, 'i' },
                { "count", required_argument, NULL, 'n' },
                { "batch", required_argument, NULL, 'b' },
                { "interval-ms", required_argument, NULL, 'I' },
                { "pad", required_argument, NULL, 'p' },
                { "wait-for-redis", required_argument, NULL, 'w' },
                { "attach", no_argument, NULL, 'a' },
                { "after-connect", no_argument, NULL, 'C' },
                { "db", required_argument, NULL, 'd' },
                {},
        };
        static const char *const suffixes[] = { "", "-wal", "-shm" };
        Probe p = {
                .batch = 100, .wait_usec = 10 * 1000000, .pad = 100, .fd = -EBADF, .in_line_prefix = true
        };
        char dir[] = "/tmp/events-probe-XXXXXX", db[64];
        const char *socket_path = NULL, *db_path = NULL;
        uint64_t v;
        int c, r;

        log_set_target(LOG_TARGET_STDERR);
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 's':
                        socket_path = optarg;
                        break;
                case 'i':
                        p.session = optarg;
                        break;
                case 'C':
                        p.after_connect = true;
                        break;
                case 'a':
                        p.attach = true;
                        break;
                case 'd':
                        db_path = optarg;
                        break;
                case 'n':
                case 'b':
                case 'I':
                case 'p':
                case 'w':
                        if (safe_atou64(optarg, &v) < 0 || v > UINT32_MAX) {
                                usage();
                                return 2;
                        }
                        if (c == 'n')
                                p.count = v;
                        else if (c == 'b')
                                p.batch = v;
                        else if (c == 'I')
                                p.interval_usec = v * 1000;
                        else if (c == 'p')
                                p.pad = v;
                        else
                                p.wait_usec = v * 1000000;
                        break;
                default:
                        usage();
                        return 2;
                }
        }
        if (!p.session || p.batch == 0 || optind != argc) {
                usage();
                return 2;
        }
        p.redis = !isempty(socket_path);

        p.padding = malloc(p.pad + 1);
        if (!p.padding) {
                log_oom();
                probe_done(&p);
                return 1;
        }
        memset(p.padding, 'x', p.pad);
        p.padding[p.pad] = '\0';

        if (db_path) {
                r = probe_run(&p, db_path, socket_path);
                if (r < 0)
                        p.exit_code = 1;
                probe_done(&p);
                return p.exit_code;
        }

        if (!mkdtemp(dir)) {
                log_error_errno(errno, "mkdtemp: %m");
                probe_done(&p);
                return 1;
        }
        snprintf(db, sizeof db, "%s/ccdockerd.db", dir);

        r = probe_run(&p, db, socket_path);
        if (r < 0)
                p.exit_code = 1;
        probe_done(&p);

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                char path[80];

                snprintf(path, sizeof path, "%s%s", db, suffixes[i]);
                (void) unlink(path);
        }
        (void) rmdir(dir);
        return p.exit_code;
}

/* Unit tests for the event bus (daemon/events.c, events-subscribers.c) and the output half of
 * daemon/store.c, against a real SQLite file in a mkdtemp() directory, a real sd-event loop and real
 * socketpairs from Attach (no Redis: the bus is made without one, or with a socket nobody listens on).
 * Appended events come back from get with since and limit; an attached reader gets the replay and then live
 * events as JSON lines; a reader that does not read is dropped while appends go on; a session's end gives
 * the reader everything and then EOF; get and the latest result bound what they parse of hostile
 * stored events; events and prompts survive closing and reopening the store, and a
 * database of the schema before them is migrated with its sessions kept. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "events.h"
#include "jsonrpc.h"
#include "log.h"
#include "store.h"
#include "unit-test.h"
#include "util.h"

typedef struct Fixture {
        char dir[64];
        char path[128];
        sd_event *event;
        Store *store;
        EventBus *bus;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-events-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/ccdockerd.db", f->dir);
        log_set_target(LOG_TARGET_STDERR);
        log_set_max_level(LOG_WARNING);

        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(store_open(f->path, &f->store), 0);
        assert_int_equal(event_bus_new(f->event, f->store, NULL, &f->bus), 0);
        *state = f;
        return 0;
}

static void unlink_db(Fixture *f) {
        static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                char p[160];

                snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
                (void) unlink(p);
        }
}

static int teardown(void **state) {
        Fixture *f = *state;

        event_bus_free(f->bus);
        store_close(f->store);
        sd_event_unref(f->event);
        unlink_db(f);
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

static uint64_t now_msec(void) {
        struct timespec ts;

        assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* A batch of events first..first+n-1, each with data {"i":seq,"pad":"xxx..."} of about pad bytes. */
static json_t *batch(uint64_t first, size_t n, size_t pad) {
        _cleanup_free_ char *padding = malloc(pad + 1);
        json_t *a = json_array();

        assert_non_null(padding);
        assert_non_null(a);
        memset(padding, 'x', pad);
        padding[pad] = '\0';
        for (size_t i = 0; i < n; i++)
                assert_int_equal(
                        json_array_append_new(
                                a,
                                json_pack(
                                        "{s:I,s:I,s:{s:I,s:s}}",
                                        "seq",
                                        (json_int_t) (first + i),
                                        "time",
                                        (json_int_t) (1700000000000000 + first + i),
                                        "data",
                                        "i",
                                        (json_int_t) (first + i),
                                        "pad",
                                        padding)),
                        0);
        return a;
}

static void append(Fixture *f, const char *id, uint64_t first, size_t n, size_t pad) {
        _cleanup_(json_decrefp) json_t *a = batch(first, n, pad);

        assert_int_equal(event_bus_append(f->bus, id, a), 0);
}

/* What a reader has read: whole lines, the bytes after the last newline, and whether it saw EOF. */
typedef struct Reader {
        int fd;
        char *partial;
        size_t partial_len;
        json_t *lines; /* parsed */
        size_t bytes;
        bool eof;
} Reader;

static void reader_init(Reader *r, int fd) {
        *r = (Reader){ .fd = fd, .lines = json_array() };
        assert_non_null(r->lines);
        /* The daemon hands out a blocking descriptor; the test reads between loop iterations. */
        assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void reader_done(Reader *r) {
        safe_close(r->fd);
        free(r->partial);
        json_decref(r->lines);
}

/* Reads what is there now; returns false when nothing was. */
static bool reader_read(Reader *r) {
        char buf[65536];
        bool any = false;

        for (;;) {
                ssize_t k = read(r->fd, buf, sizeof buf);
                size_t start = 0;

                if (k < 0) {
                        assert_int_equal(errno, EAGAIN);
                        return any;
                }
                if (k == 0) {
                        r->eof = true;
                        return true;
                }
                any = true;
                r->bytes += (size_t) k;
                for (size_t i = 0; i < (size_t) k; i++) {
                        json_t *j;
                        char *line;

                        if (buf[i] != '\n')
                                continue;
                        line = malloc(r->partial_len + (i - start) + 1);
                        assert_non_null(line);
                        if (r->partial_len > 0) /* partial is NULL until a line is split */
                                memcpy(line, r->partial, r->partial_len);
                        memcpy(line + r->partial_len, buf + start, i - start);
                        line[r->partial_len + (i - start)] = '\0';
                        j = json_loads(line, 0, NULL);
                        if (!j)
                                fail_msg("not a JSON line: %.200s", line);
                        free(line);
                        assert_int_equal(json_array_append_new(r->lines, j), 0);
                        r->partial_len = 0;
                        start = i + 1;
                }
                if (start < (size_t) k) {
                        char *p = realloc(r->partial, r->partial_len + ((size_t) k - start));

                        assert_non_null(p);
                        r->partial = p;
                        memcpy(r->partial + r->partial_len, buf + start, (size_t) k - start);
                        r->partial_len += (size_t) k - start;
                }
        }
}

/* Runs the loop and reads until the reader has n lines (or EOF), at most 10 s. */
static void reader_wait(Fixture *f, Reader *r, size_t n) {
        uint64_t deadline = now_msec() + 10000;

        while (json_array_size(r->lines) < n && !r->eof) {
                assert_true(now_msec() < deadline);
                assert_true(sd_event_run(f->event, 1000) >= 0);
                (void) reader_read(r);
        }
}

static void reader_wait_eof(Fixture *f, Reader *r) {
        uint64_t deadline = now_msec() + 10000;

        while (!r->eof) {
                assert_true(now_msec() < deadline);
                assert_true(sd_event_run(f->event, 1000) >= 0);
                (void) reader_read(r);
        }
}

/* The lines are seqs first, first+1, ... in order, with their data. */
static void assert_lines(json_t *lines, uint64_t first, size_t n) {
        assert_int_equal(json_array_size(lines), n);
        for (size_t i = 0; i < n; i++) {
                json_t *l = json_array_get(lines, i);

                assert_int_equal(json_integer_value(json_object_get(l, "seq")), first + i);
                assert_int_equal(
                        json_integer_value(json_object_get(l, "time")), 1700000000000000 + first + i);
                assert_int_equal(
                        json_integer_value(json_object_get(json_object_get(l, "data"), "i")), first + i);
        }
}

static void test_events_append_then_get_with_since_and_limit(void **state) {
        _cleanup_(json_decrefp) json_t *all = NULL, *tail = NULL, *some = NULL, *none = NULL;
        Fixture *f = *state;
        uint64_t last;

        assert_int_equal(event_bus_last_seq(f->bus, "s1", &last), 0);
        assert_int_equal(last, 0);

        append(f, "s1", 1, 3, 10);
        append(f, "s1", 4, 7, 10);
        append(f, "other", 1, 2, 10);

        assert_int_equal(event_bus_last_seq(f->bus, "s1", &last), 0);
        assert_int_equal(last, 10);
        assert_int_equal(event_bus_last_seq(f->bus, "other", &last), 0);
        assert_int_equal(last, 2);

        assert_int_equal(event_bus_get(f->bus, "s1", 0, 0, &all), 0);
        assert_lines(all, 1, 10);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(json_array_get(all, 0), "data"), "pad")),
                "xxxxxxxxxx");

        assert_int_equal(event_bus_get(f->bus, "s1", 6, 0, &tail), 0);
        assert_lines(tail, 7, 4);

        assert_int_equal(event_bus_get(f->bus, "s1", 2, 3, &some), 0);
        assert_lines(some, 3, 3);

        assert_int_equal(event_bus_get(f->bus, "s1", 10, 0, &none), 0);
        assert_int_equal(json_array_size(none), 0);
}

static void test_events_latest_result_is_kept_from_what_is_appended(void **state) {
        _cleanup_(json_decrefp) json_t *none = NULL, *got = NULL, *again = NULL;
        _cleanup_(json_decrefp) json_t *
                a = json_loads(
                       "[{\"seq\":1,\"time\":1,\"data\":{\"type\":\"result\",\"result\":\"first\"}},"
                       " {\"seq\":2,\"time\":2,\"data\":{\"type\":\"result\",\"result\":\"second\"}},"
                       " {\"seq\":3,\"time\":3,\"data\":[\"result\"]}]",
                       0,
                       NULL),
               *b = json_loads(
                       "[{\"seq\":4,\"time\":4,\"data\":{\"type\":\"assistant\",\"message\":{\"type\":\"result\"}}}]",
                       0,
                       NULL);
        Fixture *f = *state;

        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(event_bus_last_result(f->bus, "s1", &none), 0);
        assert_null(none);

        /* Only an event whose type is "result" counts, not one that merely mentions it. */
        assert_int_equal(event_bus_append(f->bus, "s1", a), 0);
        assert_int_equal(event_bus_append(f->bus, "s1", b), 0);
        assert_int_equal(event_bus_last_result(f->bus, "s1", &got), 1);
        assert_string_equal(json_string_value(json_object_get(got, "result")), "second");

        /* It is read from the store, so a new bus on the same store (a restart) has it too. */
        event_bus_free(f->bus);
        assert_int_equal(event_bus_new(f->event, f->store, NULL, &f->bus), 0);
        assert_int_equal(event_bus_last_result(f->bus, "s1", &again), 1);
        assert_true(json_equal(got, again));
}

/* The text of n values as cheap to write as they are dear to parse: [{},{},...]. */
static char *wide_text(size_t n, const char *prefix, const char *suffix) {
        size_t lp = strlen(prefix), ls = strlen(suffix);
        char *t = malloc(lp + 3 * n + ls + 2), *p = t;

        assert_non_null(t);
        p = stpcpy(p, prefix);
        *p++ = '[';
        for (size_t i = 0; i < n; i++) {
                memcpy(p, i > 0 ? ",{}" : "{}", i > 0 ? 3 : 2);
                p += i > 0 ? 3 : 2;
        }
        *p++ = ']';
        strcpy(p, suffix);
        return t;
}

static void assert_oversized(json_t *e, uint64_t seq, size_t bytes) {
        json_t *d = json_object_get(e, "data");

        assert_int_equal(json_integer_value(json_object_get(e, "seq")), seq);
        assert_string_equal(json_string_value(json_object_get(d, "type")), "oversized");
        assert_int_equal(json_integer_value(json_object_get(d, "bytes")), bytes);
        assert_int_equal(json_object_size(d), 2);
}

static void test_events_get_bounds_what_it_parses_of_hostile_stored_events(void **state) {
        _cleanup_(json_decrefp) json_t *page = NULL, *next = NULL, *rest = NULL, *result = NULL;
        /* Stored as a container could before its lines were bounded: past the channel's limits. */
        _cleanup_free_ char *wide = wide_text(JSONRPC_MAX_VALUES + 1, "", ""),
                            *hostile_result = wide_text(300000, "{\"type\":\"result\",\"x\":", "}"),
                            *deep = malloc(2 * 100 + 1),
                            /* Within them, but three of them more than one call parses. */
                                    *big = wide_text(JSONRPC_MAX_VALUES - 100, "", "");
        StoreEvent events[8];
        Fixture *f = *state;

        assert_non_null(deep);
        memset(deep, '[', 100);
        memset(deep + 100, ']', 100);
        deep[200] = '\0';
        events[0] = (StoreEvent){ .seq = 1, .data = "{\"type\":\"system\"}" };
        events[1] = (StoreEvent){ .seq = 2, .data = wide };
        events[2] = (StoreEvent){ .seq = 3, .data = deep };
        events[3] = (StoreEvent){ .seq = 4, .data = big };
        events[4] = (StoreEvent){ .seq = 5, .data = big };
        events[5] = (StoreEvent){ .seq = 6, .data = big };
        events[6] = (StoreEvent){ .seq = 7, .data = hostile_result, .result = true };
        events[7] = (StoreEvent){ .seq = 8, .data = "{\"type\":\"assistant\"}" };
        for (size_t i = 0; i < ELEMENTSOF(events); i++)
                events[i].data_len = strlen(events[i].data);
        assert_int_equal(store_append_events(f->store, "s1", events, ELEMENTSOF(events)), 0);

        /* The first page: the good event, the two placeholders, and two big events; the third would
         * pass what one call parses. */
        assert_int_equal(event_bus_get(f->bus, "s1", 0, 100, &page), 0);
        assert_int_equal(json_array_size(page), 5);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(json_array_get(page, 0), "data"), "type")),
                "system");
        assert_oversized(json_array_get(page, 1), 2, strlen(wide));
        assert_oversized(json_array_get(page, 2), 3, 200);
        assert_int_equal(
                json_array_size(json_object_get(json_array_get(page, 4), "data")), JSONRPC_MAX_VALUES - 100);

        /* Paging on from the last seq gets the rest. */
        assert_int_equal(event_bus_get(f->bus, "s1", 5, 100, &next), 0);
        assert_int_equal(json_array_size(next), 3);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(next, 0), "seq")), 6);
        assert_oversized(json_array_get(next, 1), 7, strlen(hostile_result));
        assert_int_equal(event_bus_get(f->bus, "s1", 8, 100, &rest), 0);
        assert_int_equal(json_array_size(rest), 0);

        /* The latest result, which a restart reads, is bounded the same way. */
        assert_int_equal(event_bus_last_result(f->bus, "s1", &result), 1);
        assert_string_equal(json_string_value(json_object_get(result, "type")), "oversized");
        assert_int_equal(json_integer_value(json_object_get(result, "bytes")), strlen(hostile_result));
}

static void test_events_append_refuses_bad_batches_and_stores_nothing(void **state) {
        _cleanup_(json_decrefp) json_t *gap = batch(2, 2, 0), *dup = batch(1, 2, 0), *got = NULL,
                                       *no_data = json_pack("[{s:i,s:i}]", "seq", 3, "time", 1),
                                       *zero = json_pack("[{s:i,s:i,s:n}]", "seq", 0, "time", 1, "data");
        Fixture *f = *state;
        uint64_t last;

        append(f, "s1", 1, 1, 0);

        /* A gap inside a batch is the caller's bug; so is a seq that is already stored. */
        assert_int_equal(json_array_remove(gap, 1), 0);
        assert_int_equal(
                json_array_append_new(gap, json_pack("{s:i,s:i,s:n}", "seq", 9, "time", 1, "data")), 0);
        assert_int_equal(event_bus_append(f->bus, "s1", gap), -EINVAL);
        assert_int_equal(event_bus_append(f->bus, "s1", dup), -EEXIST);
        assert_int_equal(event_bus_append(f->bus, "s1", no_data), -EINVAL);
        assert_int_equal(event_bus_append(f->bus, "s1", zero), -EINVAL);

        /* The duplicate batch's seq 2 was not stored either: one transaction. */
        assert_int_equal(event_bus_last_seq(f->bus, "s1", &last), 0);
        assert_int_equal(last, 1);
        assert_int_equal(event_bus_get(f->bus, "s1", 0, 0, &got), 0);
        assert_lines(got, 1, 1);
}

static void test_events_attach_replays_then_streams_live(void **state) {
        Fixture *f = *state;
        Reader r;
        int fd;

        append(f, "s1", 1, 5, 20);
        assert_int_equal(event_bus_attach(f->bus, "s1", 2, &fd), 0);
        assert_true(fd >= 0);
        assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
        reader_init(&r, fd);
        assert_int_equal(event_bus_n_subscribers(f->bus, "s1"), 1);

        reader_wait(f, &r, 3);
        assert_lines(r.lines, 3, 3);

        append(f, "s1", 6, 2, 20);
        append(f, "other", 1, 1, 20);
        append(f, "s1", 8, 1, 20);
        reader_wait(f, &r, 6);
        assert_lines(r.lines, 3, 6);
        assert_false(r.eof);
        assert_int_equal(r.partial_len, 0);

        reader_done(&r);
}

static void test_events_attach_replays_a_long_history_in_order(void **state) {
        Fixture *f = *state;
        Reader r;
        int fd;

        /* About 12 MiB: more than a replay slice and more than the socket takes at once, so the replay
         * goes in many slices, each after the reader has taken the previous one. */
        for (uint64_t seq = 1; seq <= 6000; seq += 500)
                append(f, "s1", seq, 500, 2000);
        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        reader_init(&r, fd);
        append(f, "s1", 6001, 10, 2000); /* while the replay is under way */

        reader_wait(f, &r, 6010);
        assert_lines(r.lines, 1, 6010);
        reader_done(&r);
}

static void test_events_slow_subscriber_is_dropped_without_blocking_append(void **state) {
        Fixture *f = *state;
        uint64_t start, seq = 1;
        Reader slow, fast;
        int fd;

        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        reader_init(&slow, fd);
        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        reader_init(&fast, fd);

        /* 48 MiB of events, with the loop never run and the slow reader never reading: append must not
         * wait for it, and must let go of it once its buffer passes 32 MiB. The fast one reads along. */
        start = now_msec();
        for (int i = 0; i < 48; i++, seq += 256) {
                append(f, "s1", seq, 256, 4000);
                for (;;) {
                        int r = sd_event_run(f->event, 0);

                        assert_true(r >= 0);
                        if (!reader_read(&fast) && r == 0)
                                break;
                }
        }
        assert_true(now_msec() - start < 30000);
        assert_int_equal(event_bus_n_subscribers(f->bus, "s1"), 1);

        /* The slow one gets what was in its socket, then EOF: a prefix of the events. */
        reader_wait_eof(f, &slow);
        assert_true(json_array_size(slow.lines) > 0);
        assert_true(json_array_size(slow.lines) < seq - 1);
        assert_lines(slow.lines, 1, json_array_size(slow.lines));

        reader_wait(f, &fast, seq - 1);
        assert_lines(fast.lines, 1, seq - 1);
        assert_false(fast.eof);

        reader_done(&slow);
        reader_done(&fast);
}

static void test_events_session_ended_gives_eof_after_the_data(void **state) {
        Fixture *f = *state;
        Reader live, behind;
        uint64_t seq = 4;
        int fd;

        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        reader_init(&live, fd);
        append(f, "s1", 1, 3, 10);

        /* This one has more pending than its socket holds: the end waits until it has read it all. */
        for (int i = 0; i < 4; i++, seq += 500)
                append(f, "s1", seq, 500, 3000);
        assert_int_equal(seq - 1, 2003);
        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        reader_init(&behind, fd);

        event_bus_session_ended(f->bus, "s1");

        reader_wait_eof(f, &live);
        assert_lines(live.lines, 1, 2003);
        assert_int_equal(live.partial_len, 0);
        reader_wait_eof(f, &behind);
        assert_lines(behind.lines, 1, 2003);
        assert_int_equal(behind.partial_len, 0);
        assert_int_equal(event_bus_n_subscribers(f->bus, "s1"), 0);

        /* Attaching to an ended session (as Attach does: attach, then ended) gives the replay and EOF. */
        assert_int_equal(event_bus_attach(f->bus, "s1", 1993, &fd), 0);
        event_bus_session_ended(f->bus, "s1");
        reader_done(&live);
        reader_init(&live, fd);
        reader_wait_eof(f, &live);
        assert_lines(live.lines, 1994, 10);

        reader_done(&live);
        reader_done(&behind);
}

static void test_events_subscriber_that_closes_is_freed(void **state) {
        Fixture *f = *state;
        int fd;

        assert_int_equal(event_bus_attach(f->bus, "s1", 0, &fd), 0);
        assert_int_equal(event_bus_n_subscribers(f->bus, "s1"), 1);
        safe_close(fd);

        for (int i = 0; i < 100 && event_bus_n_subscribers(f->bus, "s1") > 0; i++)
                assert_true(sd_event_run(f->event, 10000) >= 0);
        assert_int_equal(event_bus_n_subscribers(f->bus, "s1"), 0);

        /* And appending afterwards is fine. */
        append(f, "s1", 1, 2, 10);
}

static void test_events_append_succeeds_while_redis_is_unreachable(void **state) {
        _cleanup_(json_decrefp) json_t *got = NULL;
        Fixture *f = *state;
        char sock[160];
        EventBus *bus;
        uint64_t published = 1;

        /* A socket path nobody listens on: the bus keeps retrying in the background. */
        snprintf(sock, sizeof sock, "%s/no-redis.sock", f->dir);
        assert_int_equal(event_bus_new(f->event, f->store, sock, &bus), 0);
        assert_false(event_bus_redis_connected(bus));

        {
                _cleanup_(json_decrefp) json_t *a = batch(1, 5, 10);

                assert_int_equal(event_bus_append(bus, "s1", a), 0);
        }
        for (int i = 0; i < 30; i++)
                assert_true(sd_event_run(f->event, 10000) >= 0); /* reconnect attempts come and go */
        assert_false(event_bus_redis_connected(bus));
        assert_int_equal(event_bus_published_seq(bus, "s1", &published), 0);
        assert_int_equal(published, 0);

        assert_int_equal(event_bus_get(bus, "s1", 0, 0, &got), 0);
        assert_lines(got, 1, 5);
        event_bus_free(bus);
}

typedef struct Prompt {
        char message_id[64], text[64], state[16];
        uint64_t usec;
} Prompt;

typedef struct Prompts {
        Prompt p[8];
        size_t n;
} Prompts;

static int collect_prompt(
        const char *message_id, const char *text, const char *state, uint64_t usec, void *userdata) {
        Prompts *l = userdata;

        assert_true(l->n < ELEMENTSOF(l->p));
        snprintf(l->p[l->n].message_id, sizeof l->p[l->n].message_id, "%s", message_id);
        snprintf(l->p[l->n].text, sizeof l->p[l->n].text, "%s", text);
        snprintf(l->p[l->n].state, sizeof l->p[l->n].state, "%s", state);
        l->p[l->n].usec = usec;
        l->n++;
        return 0;
}

static int collect_session(const char *id, uint64_t last_seq, void *userdata) {
        json_t *o = userdata;

        assert_int_equal(json_object_set_new(o, id, json_integer((json_int_t) last_seq)), 0);
        return 0;
}

static void test_events_store_survives_reopen_with_events_and_prompts(void **state) {
        _cleanup_(json_decrefp) json_t *got = NULL, *sessions = json_object();
        Fixture *f = *state;
        Prompts prompts = {};
        uint64_t last;

        append(f, "s1", 1, 4, 10);
        append(f, "s2", 1, 2, 10);
        assert_int_equal(store_prompt_add(f->store, "s1", "m1", "first", 100), 0);
        assert_int_equal(store_prompt_add(f->store, "s1", "m2", "second", 200), 0);
        assert_int_equal(store_prompt_add(f->store, "s1", "m3", "third", 300), 0);
        assert_int_equal(store_prompt_add(f->store, "s2", "m4", "other", 50), 0);
        assert_int_equal(store_prompt_add(f->store, "s1", "m1", "again", 400), -EEXIST);
        assert_int_equal(store_prompt_set_state(f->store, "m1", "delivered", 110), 0);
        assert_int_equal(store_prompt_set_state(f->store, "m1", "done", 120), 0);
        assert_int_equal(store_prompt_set_state(f->store, "m2", "failed", 210), 0);
        assert_int_equal(store_prompt_set_state(f->store, "m2", "lost", 220), -EINVAL);
        assert_int_equal(store_prompt_set_state(f->store, "nope", "done", 220), -ENOENT);

        f->bus = event_bus_free(f->bus);
        f->store = store_close(f->store);
        assert_int_equal(store_open(f->path, &f->store), 0);
        assert_int_equal(event_bus_new(f->event, f->store, NULL, &f->bus), 0);

        assert_int_equal(event_bus_last_seq(f->bus, "s1", &last), 0);
        assert_int_equal(last, 4);
        assert_int_equal(event_bus_get(f->bus, "s1", 0, 0, &got), 0);
        assert_lines(got, 1, 4);
        append(f, "s1", 5, 1, 10); /* and it goes on where it was */

        assert_int_equal(store_load_prompts(f->store, "s1", collect_prompt, &prompts), 3);
        assert_string_equal(prompts.p[0].message_id, "m1");
        assert_string_equal(prompts.p[0].text, "first");
        assert_string_equal(prompts.p[0].state, "done");
        assert_int_equal(prompts.p[0].usec, 100);
        assert_string_equal(prompts.p[1].message_id, "m2");
        assert_string_equal(prompts.p[1].state, "failed");
        assert_string_equal(prompts.p[2].message_id, "m3");
        assert_string_equal(prompts.p[2].text, "third");
        assert_string_equal(prompts.p[2].state, "queued");

        /* The sessions with events, for the catch-up scan, in slices. */
        assert_int_equal(store_load_event_sessions(f->store, NULL, 0, collect_session, sessions), 2);
        assert_int_equal(json_integer_value(json_object_get(sessions, "s1")), 5);
        assert_int_equal(json_integer_value(json_object_get(sessions, "s2")), 2);
        json_object_clear(sessions);
        assert_int_equal(store_load_event_sessions(f->store, "s1", 1, collect_session, sessions), 1);
        assert_int_equal(json_integer_value(json_object_get(sessions, "s2")), 2);

        /* Deleting a session's output takes its events and prompts, and nobody else's. */
        assert_int_equal(store_delete_session_output(f->store, "s1"), 5);
        assert_int_equal(store_last_seq(f->store, "s1", &last), 0);
        assert_int_equal(last, 0);
        prompts.n = 0;
        assert_int_equal(store_load_prompts(f->store, "s1", collect_prompt, &prompts), 0);
        assert_int_equal(store_load_prompts(f->store, "s2", collect_prompt, &prompts), 1);
        assert_int_equal(store_last_seq(f->store, "s2", &last), 0);
        assert_int_equal(last, 2);
}

static int count_session(const SessionRecord *rec, void *userdata) {
        unsigned *n = userdata;

        assert_string_equal(rec->id, "old");
        (*n)++;
        return 0;
}

static void test_events_store_migrates_a_version_1_database(void **state) {
        _cleanup_(json_decrefp) json_t *got = NULL;
        Fixture *f = *state;
        Prompts prompts = {};
        unsigned n = 0;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;

        /* A database as the schema before session output left it, with one session in it. */
        f->bus = event_bus_free(f->bus);
        f->store = store_close(f->store);
        unlink_db(f);
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(
                sqlite3_exec(
                        db,
                        "PRAGMA journal_mode = WAL;"
                        "CREATE TABLE sessions (id TEXT PRIMARY KEY NOT NULL, parent_id TEXT, depth INTEGER NOT NULL,"
                        " state TEXT NOT NULL, state_reason TEXT, unit TEXT, container_name TEXT, container_id TEXT,"
                        " task_type TEXT, workspace_path TEXT, workspace_ephemeral INTEGER NOT NULL,"
                        " owner_uid INTEGER NOT NULL, created_usec INTEGER NOT NULL, updated_usec INTEGER NOT NULL,"
                        " config_json TEXT) STRICT;"
                        "CREATE TABLE session_states (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                        " id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, state TEXT NOT NULL,"
                        " reason TEXT, usec INTEGER NOT NULL) STRICT;"
                        "CREATE INDEX session_states_by_id ON session_states(id, seq);"
                        "INSERT INTO sessions (id, depth, state, workspace_ephemeral, owner_uid, created_usec,"
                        " updated_usec) VALUES ('old', 0, 'stopped', 0, 1000, 1, 1);"
                        "PRAGMA user_version = 1;",
                        NULL,
                        NULL,
                        NULL),
                SQLITE_OK);
        sqlite3_close(db);

        assert_int_equal(store_open(f->path, &f->store), 0);
        assert_int_equal(event_bus_new(f->event, f->store, NULL, &f->bus), 0);
        assert_int_equal(store_load_sessions(f->store, count_session, &n), 1);
        assert_int_equal(n, 1);
        append(f, "old", 1, 2, 10);
        assert_int_equal(event_bus_get(f->bus, "old", 0, 0, &got), 0);
        assert_lines(got, 1, 2);
        assert_int_equal(store_prompt_add(f->store, "old", "m1", "hello", 5), 0);
        assert_int_equal(store_load_prompts(f->store, "old", collect_prompt, &prompts), 1);

        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_true(sqlite3_column_int(st, 0) >= 2);
        sqlite3_finalize(st);
        sqlite3_close(db);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_events_append_then_get_with_since_and_limit),
                T(test_events_latest_result_is_kept_from_what_is_appended),
                T(test_events_get_bounds_what_it_parses_of_hostile_stored_events),
                T(test_events_append_refuses_bad_batches_and_stores_nothing),
                T(test_events_attach_replays_then_streams_live),
                T(test_events_attach_replays_a_long_history_in_order),
                T(test_events_slow_subscriber_is_dropped_without_blocking_append),
                T(test_events_session_ended_gives_eof_after_the_data),
                T(test_events_subscriber_that_closes_is_freed),
                T(test_events_append_succeeds_while_redis_is_unreachable),
                T(test_events_store_survives_reopen_with_events_and_prompts),
                T(test_events_store_migrates_a_version_1_database),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}

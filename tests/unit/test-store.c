/* Unit tests for daemon/store.c against real SQLite files in a mkdtemp() directory: records survive a
 * close and reopen, a save replaces the whole record but keeps its history, state changes are appended
 * in order, deleting takes the history along, the file is in WAL mode at the current schema version,
 * a newer schema is refused, each session's latest result is kept as events are appended and found
 * by the migration in an older store, and the WAL is checkpointed by the store's thread, not in the
 * commits. */
#define _GNU_SOURCE
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "store-checkpoint.h"
#include "store.h"
#include "unit-test.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_close);

typedef struct Fixture {
        char dir[64];
        char path[128];
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/ccdockerd.db", f->dir);
        log_set_target(LOG_TARGET_STDERR);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
        Fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                char p[160];

                snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
                (void) unlink(p);
        }
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

static SessionRecord sample(const char *id, const char *parent, uint64_t created) {
        return (SessionRecord){
                .id = (char *) id,
                .parent_id = (char *) parent,
                .depth = parent ? 1 : 0,
                .state = (char *) "starting",
                .unit = (char *) "ccdocker-session-x.service",
                .container_name = (char *) "ccdocker-x",
                .task_type = (char *) "review",
                .workspace_path = (char *) "/var/lib/ccdocker/workspaces/x",
                .workspace_ephemeral = true,
                .owner_uid = 1000,
                .created_usec = created,
                .updated_usec = created,
                .config_json = (char *) "{\"image\":\"i\"}",
        };
}

/* Collects copies of what store_load_sessions() hands out. */
typedef struct Loaded {
        SessionRecord r[8];
        size_t n;
} Loaded;

static char *strdup_or_null(const char *s) {
        return s ? strdup(s) : NULL;
}

static int collect(const SessionRecord *r, void *userdata) {
        Loaded *l = userdata;
        SessionRecord *c;

        assert_true(l->n < ELEMENTSOF(l->r));
        c = &l->r[l->n++];
        *c = *r;
        c->id = strdup_or_null(r->id);
        c->parent_id = strdup_or_null(r->parent_id);
        c->state = strdup_or_null(r->state);
        c->state_reason = strdup_or_null(r->state_reason);
        c->unit = strdup_or_null(r->unit);
        c->container_name = strdup_or_null(r->container_name);
        c->container_id = strdup_or_null(r->container_id);
        c->task_type = strdup_or_null(r->task_type);
        c->workspace_path = strdup_or_null(r->workspace_path);
        c->config_json = strdup_or_null(r->config_json);
        return 0;
}

static void loaded_done(Loaded *l) {
        for (size_t i = 0; i < l->n; i++)
                session_record_done(&l->r[i]);
        l->n = 0;
}

typedef struct States {
        char text[512];
        size_t n;
} States;

static int collect_state(const char *state, const char *reason, uint64_t usec, void *userdata) {
        States *s = userdata;
        size_t len = strlen(s->text);

        snprintf(
                s->text + len,
                sizeof s->text - len,
                "%s%s/%s/%llu",
                s->n > 0 ? " " : "",
                state,
                reason ?: "-",
                (unsigned long long) usec);
        s->n++;
        return 0;
}

/* ---- tests ---- */

static void test_store_survives_reopen(void **state) {
        _cleanup_(loaded_done) Loaded l = {};
        Fixture *f = *state;
        Store *s = NULL;
        SessionRecord a = sample("aaaaaaaaaaaa", NULL, 2000),
                      b = sample("bbbbbbbbbbbb", "aaaaaaaaaaaa", 1000);
        struct stat st;

        b.container_id = (char *) "0123abcd";
        b.workspace_ephemeral = false;
        b.task_type = NULL;
        b.owner_uid = 4294967294u;

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), 0);
        assert_int_equal(store_save_session(s, &b), 0);
        s = store_close(s);
        assert_null(s);

        /* The records hold configurations: not for other users' eyes. */
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_load_sessions(s, collect, &l), 2);
        s = store_close(s);

        /* Oldest first. */
        assert_int_equal(l.n, 2);
        assert_string_equal(l.r[0].id, "bbbbbbbbbbbb");
        assert_string_equal(l.r[0].parent_id, "aaaaaaaaaaaa");
        assert_int_equal(l.r[0].depth, 1);
        assert_string_equal(l.r[0].container_id, "0123abcd");
        assert_null(l.r[0].task_type);
        assert_false(l.r[0].workspace_ephemeral);
        assert_true(l.r[0].owner_uid == 4294967294u);

        assert_string_equal(l.r[1].id, "aaaaaaaaaaaa");
        assert_null(l.r[1].parent_id);
        assert_int_equal(l.r[1].depth, 0);
        assert_string_equal(l.r[1].state, "starting");
        assert_null(l.r[1].state_reason);
        assert_string_equal(l.r[1].unit, "ccdocker-session-x.service");
        assert_string_equal(l.r[1].container_name, "ccdocker-x");
        assert_null(l.r[1].container_id);
        assert_string_equal(l.r[1].task_type, "review");
        assert_string_equal(l.r[1].workspace_path, "/var/lib/ccdocker/workspaces/x");
        assert_true(l.r[1].workspace_ephemeral);
        assert_true(l.r[1].owner_uid == 1000);
        assert_true(l.r[1].created_usec == 2000);
        assert_true(l.r[1].updated_usec == 2000);
        assert_string_equal(l.r[1].config_json, "{\"image\":\"i\"}");
}

static void test_store_records_state_history(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_(loaded_done) Loaded l = {};
        States h = {}, none = {};
        Fixture *f = *state;
        SessionRecord a = sample("aaaaaaaaaaaa", NULL, 1000);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), 0);
        assert_int_equal(store_record_state(s, "aaaaaaaaaaaa", "idle", NULL, 1100), 0);
        assert_int_equal(store_record_state(s, "aaaaaaaaaaaa", "running", "prompt", 1200), 0);
        assert_int_equal(store_record_state(s, "aaaaaaaaaaaa", "failed", "unit failed: exit-code", 1300), 0);

        assert_int_equal(store_load_states(s, "aaaaaaaaaaaa", collect_state, &h), 3);
        assert_string_equal(h.text, "idle/-/1100 running/prompt/1200 failed/unit failed: exit-code/1300");

        /* The session carries the latest. */
        assert_int_equal(store_load_sessions(s, collect, &l), 1);
        assert_string_equal(l.r[0].state, "failed");
        assert_string_equal(l.r[0].state_reason, "unit failed: exit-code");
        assert_true(l.r[0].updated_usec == 1300);
        assert_true(l.r[0].created_usec == 1000);

        /* Nothing is recorded for a session the store does not know. */
        assert_int_equal(store_record_state(s, "cccccccccccc", "idle", NULL, 1400), -ENOENT);
        assert_int_equal(store_load_states(s, "cccccccccccc", collect_state, &none), 0);
        assert_int_equal(none.n, 0);
}

static void test_store_replaces_session(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_(loaded_done) Loaded l = {};
        States h = {};
        Fixture *f = *state;
        SessionRecord a = sample("aaaaaaaaaaaa", NULL, 1000);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), 0);
        assert_int_equal(store_record_state(s, "aaaaaaaaaaaa", "idle", NULL, 1100), 0);

        a.container_id = (char *) "deadbeef";
        a.state = (char *) "running";
        a.task_type = NULL;
        a.updated_usec = 1500;
        assert_int_equal(store_save_session(s, &a), 0);

        assert_int_equal(store_load_sessions(s, collect, &l), 1);
        assert_string_equal(l.r[0].container_id, "deadbeef");
        assert_string_equal(l.r[0].state, "running");
        assert_null(l.r[0].task_type);
        assert_true(l.r[0].updated_usec == 1500);

        /* Saving the whole record again does not lose its history. */
        assert_int_equal(store_load_states(s, "aaaaaaaaaaaa", collect_state, &h), 1);
        assert_string_equal(h.text, "idle/-/1100");
}

static void test_store_delete_removes_history(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_(loaded_done) Loaded l = {};
        States h = {};
        Fixture *f = *state;
        SessionRecord a = sample("aaaaaaaaaaaa", NULL, 1000), b = sample("bbbbbbbbbbbb", NULL, 1001);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), 0);
        assert_int_equal(store_save_session(s, &b), 0);
        assert_int_equal(store_record_state(s, "aaaaaaaaaaaa", "stopped", NULL, 1100), 0);

        assert_int_equal(store_delete_session(s, "aaaaaaaaaaaa"), 1);
        assert_int_equal(store_delete_session(s, "aaaaaaaaaaaa"), 0);
        assert_int_equal(store_load_states(s, "aaaaaaaaaaaa", collect_state, &h), 0);
        assert_int_equal(store_load_sessions(s, collect, &l), 1);
        assert_string_equal(l.r[0].id, "bbbbbbbbbbbb");
}

static int stop_at_first(const SessionRecord *r, void *userdata) {
        (*(unsigned *) userdata)++;
        return -ECANCELED;
}

/* The callback may use the store while sessions are handed out: the daemon records states as it
 * re-adopts. */
static int record_while_loading(const SessionRecord *r, void *userdata) {
        return store_record_state(userdata, r->id, "stopped", "not found at startup", 5000);
}

static void test_store_load_callback_controls_iteration(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        SessionRecord a = sample("aaaaaaaaaaaa", NULL, 1000), b = sample("bbbbbbbbbbbb", NULL, 1001);
        unsigned calls = 0;
        States h = {};

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), 0);
        assert_int_equal(store_save_session(s, &b), 0);

        assert_int_equal(store_load_sessions(s, stop_at_first, &calls), -ECANCELED);
        assert_int_equal(calls, 1);

        assert_int_equal(store_load_sessions(s, record_while_loading, s), 2);
        assert_int_equal(store_load_states(s, "bbbbbbbbbbbb", collect_state, &h), 1);
        assert_string_equal(h.text, "stopped/not found at startup/5000");
}

static void test_store_refuses_incomplete_record(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        SessionRecord a = sample(NULL, NULL, 1000), b = sample("bbbbbbbbbbbb", NULL, UINT64_MAX);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_save_session(s, &a), -EINVAL);
        a = sample("aaaaaaaaaaaa", NULL, 1000);
        a.state = NULL;
        assert_int_equal(store_save_session(s, &a), -EINVAL);
        /* A time SQLite cannot hold. */
        assert_int_equal(store_save_session(s, &b), -EINVAL);
}

static void test_store_uses_wal_and_schema_version(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;

        assert_int_equal(store_open(f->path, &s), 0);

        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *) sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 6); /* the schema version: events and prompts came in 2,
                                                         * usage in 3, events_by_time in 4, session_results
                                                         * in 5, discord_interactions in 6 */
        sqlite3_finalize(st);
        assert_int_equal(
                sqlite3_prepare_v2(
                        db,
                        "SELECT count(*) FROM sqlite_schema WHERE name IN ('sessions', 'session_states', 'session_states_by_id')",
                        -1,
                        &st,
                        NULL),
                SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 3);
        sqlite3_finalize(st);
        sqlite3_close(db);

        /* Opening again migrates nothing and keeps the version. */
        s = store_close(s);
        assert_int_equal(store_open(f->path, &s), 0);
}

static void test_store_refuses_newer_schema(void **state) {
        Fixture *f = *state;
        sqlite3 *db = NULL;
        Store *s = NULL;

        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        assert_int_equal(store_open(f->path, &s), -EPROTO);
        assert_null(s);
}

static void test_store_refuses_file_that_is_not_a_database(void **state) {
        Fixture *f = *state;
        Store *s = NULL;
        FILE *file;

        file = fopen(f->path, "we");
        assert_non_null(file);
        fputs("this is not an SQLite database, and it is long enough for SQLite to read a header from it. "
              "this is not an SQLite database, and it is long enough for SQLite to read a header from it.\n",
              file);
        fclose(file);

        assert_int_equal(store_open(f->path, &s), -EBADMSG);
        assert_null(s);
}

static void test_store_skips_events_until_a_time(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        const StoreEvent events[] = {
                { .seq = 1, .time_usec = 100, .data = "{}", .data_len = 2 },
                { .seq = 2, .time_usec = 200, .data = "{}", .data_len = 2 },
                { .seq = 3, .time_usec = 300, .data = "{}", .data_len = 2 },
                { .seq = 4, .time_usec = 300, .data = "{}", .data_len = 2 },
        };
        static const struct {
                const char *id;
                uint64_t since, usec, want;
        } cases[] = {
                /* Read on after the last event stamped at or before the time. */
                { "a", 0, 150, 1 },
                { "a", 0, 200, 2 },
                { "a", 0, 99, 0 },
                /* Nothing later: all of them pass, equal times included. */
                { "a", 0, 300, 4 },
                /* Never before since, however early the time. */
                { "a", 3, 50, 3 },
                { "a", 9, 50, 9 },
                /* Other sessions' events do not count. */
                { "b", 0, 150, 1 },
                { "none", 0, 150, 0 },
        };
        uint64_t seq;

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_append_events(s, "a", events, ELEMENTSOF(events)), 0);
        assert_int_equal(store_append_events(s, "b", events, 1), 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_int_equal(
                        store_skip_events_until(s, cases[i].id, cases[i].since, cases[i].usec, &seq), 0);
                assert_true(seq == cases[i].want);
        }
}

typedef struct LastResult {
        uint64_t seq;
        char data[64];
} LastResult;

static int last_result_cb(
        uint64_t seq, uint64_t time_usec, const char *data, size_t data_len, void *userdata) {
        LastResult *l = userdata;

        assert_int_equal(strlen(data), data_len);
        assert_true(data_len < sizeof l->data);
        l->seq = seq;
        memcpy(l->data, data, data_len + 1);
        return 0;
}

/* The seq of the session's latest result, 0 for none. */
static uint64_t last_result(Store *s, const char *id) {
        LastResult l = {};
        int r = store_load_last_result(s, id, last_result_cb, &l);

        assert_true(r == 0 || r == 1);
        assert_true((r == 1) == (l.seq > 0));
        return l.seq;
}

static void test_store_keeps_the_latest_result_as_events_are_appended(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        const StoreEvent first[] = {
                { .seq = 1, .time_usec = 1, .data = "{\"type\":\"system\"}", .data_len = 17 },
                { .seq = 2,
                  .time_usec = 2,
                  .data = "{\"type\":\"result\",\"n\":2}",
                  .data_len = 23,
                  .result = true },
                { .seq = 3,
                  .time_usec = 3,
                  .data = "{\"type\":\"result\",\"n\":3}",
                  .data_len = 23,
                  .result = true },
                { .seq = 4, .time_usec = 4, .data = "{\"type\":\"assistant\"}", .data_len = 20 },
        };
        const StoreEvent later[] = {
                { .seq = 5, .time_usec = 5, .data = "{\"type\":\"assistant\"}", .data_len = 20 },
        };
        const StoreEvent again[] = {
                { .seq = 6,
                  .time_usec = 6,
                  .data = "{\"type\":\"result\",\"n\":6}",
                  .data_len = 23,
                  .result = true },
                { .seq = 5, .time_usec = 6, .data = "{}", .data_len = 2 },
        };
        LastResult l = {};

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_load_last_result(s, "a", last_result_cb, &l), 0);
        assert_int_equal(l.seq, 0);

        /* The latest of a batch; a batch without one keeps it. */
        assert_int_equal(store_append_events(s, "a", first, ELEMENTSOF(first)), 0);
        assert_int_equal(store_append_events(s, "b", first, 2), 0);
        assert_int_equal(store_load_last_result(s, "a", last_result_cb, &l), 1);
        assert_int_equal(l.seq, 3);
        assert_string_equal(l.data, "{\"type\":\"result\",\"n\":3}");
        assert_int_equal(store_append_events(s, "a", later, ELEMENTSOF(later)), 0);
        assert_int_equal(last_result(s, "a"), 3);
        assert_int_equal(last_result(s, "b"), 2);

        /* A batch that is refused leaves it too. */
        assert_int_equal(store_append_events(s, "a", again, ELEMENTSOF(again)), -EEXIST);
        assert_int_equal(last_result(s, "a"), 3);
        assert_int_equal(store_append_events(s, "a", again, 1), 0);

        /* It survives a reopen, and goes with the session's output. */
        s = store_close(s);
        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(last_result(s, "a"), 6);
        assert_int_equal(store_delete_session_output(s, "a"), 6);
        assert_int_equal(last_result(s, "a"), 0);
        assert_int_equal(last_result(s, "b"), 2);
}

static void test_store_migration_finds_the_latest_results_of_an_older_store(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        sqlite3 *db = NULL;

        /* A store of schema version 4, with the events a daemon of then wrote. */
        assert_int_equal(store_open(f->path, &s), 0);
        s = store_close(s);
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(
                sqlite3_exec(
                        db,
                        "DROP TABLE session_results; PRAGMA user_version = 4;"
                        /* a: its latest result is not its last event */
                        "INSERT INTO events VALUES ('a', 1, 1, '{\"type\":\"result\",\"n\":1}');"
                        "INSERT INTO events VALUES ('a', 2, 2, '{\"type\":\"result\",\"n\":2}');"
                        "INSERT INTO events VALUES ('a', 3, 3, '{\"type\":\"assistant\",\"x\":\"{\\\"type\\\":\\\"result\\\"\"}');"
                        /* b: no result at all */
                        "INSERT INTO events VALUES ('b', 1, 1, '{\"type\":\"system\"}');"
                        /* c: a result more than 1000 events back is not looked for, as before */
                        "INSERT INTO events VALUES ('c', 1, 1, '{\"type\":\"result\"}');"
                        "INSERT INTO events VALUES ('c', 1001, 2, '{\"type\":\"assistant\"}');"
                        /* d: the one 1000 back still is */
                        "INSERT INTO events VALUES ('d', 2, 1, '{\"type\":\"result\"}');"
                        "INSERT INTO events VALUES ('d', 1001, 2, '{\"type\":\"assistant\"}');",
                        NULL,
                        NULL,
                        NULL),
                SQLITE_OK);
        sqlite3_close(db);

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(last_result(s, "a"), 2);
        assert_int_equal(last_result(s, "b"), 0);
        assert_int_equal(last_result(s, "c"), 0);
        assert_int_equal(last_result(s, "d"), 2);
}

static void test_store_fails_busy_when_another_writer_holds_the_lock(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        SessionRecord a = sample("a", NULL, 1);
        sqlite3 *db = NULL;

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

        /* The short busy timeout runs out: the write fails instead of holding the loop. */
        assert_int_equal(store_save_session(s, &a), -EBUSY);

        assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(store_save_session(s, &a), 0);
}

static int count_interaction(const StoreInteraction *i, void *userdata) {
        (*(int *) userdata)++;
        return 0;
}

static void test_store_interaction_survives_reopen_and_updates(void **state) {
        _cleanup_(store_closep) Store *s = NULL;
        Fixture *f = *state;
        StoreInteraction q = {
                .id = (char *) "q1",
                .session_id = (char *) "a",
                .type = (char *) "question",
                .message = (char *) "Deploy?",
                .status = (char *) "pending",
                .priority = (char *) "urgent",
                .attempt = 1,
                .max_attempts = 3,
                .timeout_sec = 60,
                .created_usec = 10,
                .deadline_usec = 70,
                .late_delivery = (char *) "prompt",
        };
        StoreInteraction got = {};
        int n = 0;

        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_interaction_save(s, &q), 0);
        s = store_close(s);
        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_interaction_load(s, "q1", &got), 1);
        assert_string_equal(got.message, "Deploy?");
        assert_string_equal(got.late_delivery, "prompt");
        assert_int_equal(got.deadline_usec, 70);
        assert_null(got.response);
        store_interaction_done(&got);
        assert_int_equal(store_load_interactions(s, "a", true, 0, count_interaction, &n), 1);

        /* Answered but not handed over: still open; handed over: not. */
        q.status = (char *) "answered";
        q.response = (char *) "yes";
        q.answered_surface = (char *) "ctl";
        q.answered_usec = 20;
        assert_int_equal(store_interaction_save(s, &q), 0);
        assert_int_equal(store_load_interactions(s, NULL, true, 0, count_interaction, &n), 1);
        q.handed_over = true;
        assert_int_equal(store_interaction_save(s, &q), 0);
        n = 0;
        assert_int_equal(store_load_interactions(s, NULL, true, 0, count_interaction, &n), 0);
        assert_int_equal(store_load_interactions(s, "a", false, 0, count_interaction, &n), 1);
        assert_int_equal(store_interaction_load(s, "q1", &got), 1);
        assert_string_equal(got.response, "yes");
        assert_string_equal(got.answered_surface, "ctl");
        assert_true(got.handed_over);
        store_interaction_done(&got);
        assert_int_equal(store_interaction_load(s, "nope", &got), 0);
}

static int count_event(uint64_t seq, uint64_t time_usec, const char *data, size_t data_len, void *userdata) {
        size_t *n = userdata;

        (*n)++;
        return data_len == 1000 ? 0 : -EBADMSG;
}

static off_t file_size(const char *path, const char *suffix) {
        char p[160];
        struct stat st;

        snprintf(p, sizeof p, "%s%s", path, suffix);
        return stat(p, &st) < 0 ? -errno : st.st_size;
}

/* Commits past STORE_CHECKPOINT_FRAMES are checkpointed by the thread: the database file has the events
 * while the store is open, no commit checkpointed (far below STORE_CHECKPOINT_INLINE_FRAMES), and the
 * close leaves no WAL and every event. */
static void test_store_checkpoints_in_its_thread(void **state) {
        Fixture *f = *state;
        _cleanup_(store_closep) Store *s = NULL;
        StoreCheckpointStats stats = {};
        static char data[1001];
        StoreEvent batch[50];
        uint64_t seq = 0;
        size_t n = 0;

        memset(data, 'x', 1000);
        data[0] = '"';
        data[999] = '"';
        assert_int_equal(store_open(f->path, &s), 0);
        /* 6000 events of 1000 bytes: about 1500 pages of 4 KiB, in 120 commits. */
        for (unsigned b = 0; b < 120; b++) {
                for (size_t i = 0; i < ELEMENTSOF(batch); i++)
                        batch[i] = (StoreEvent){
                                .seq = ++seq, .time_usec = seq, .data = data, .data_len = 1000
                        };
                assert_int_equal(store_append_events(s, "a", batch, ELEMENTSOF(batch)), 0);
        }

        for (unsigned i = 0; i < 2000; i++) { /* up to 20 s, for a slow machine */
                assert_int_equal(store_checkpoint_stats(s, &stats), 0);
                if (stats.background > 0 && file_size(f->path, "") > 5 * 1000 * 1000)
                        break;
                (void) usleep(10 * 1000);
        }
        assert_true(stats.background > 0);
        assert_int_equal(stats.inline_, 0);
        assert_int_equal(stats.last_error, 0);
        assert_true(file_size(f->path, "") > 5 * 1000 * 1000);

        s = store_close(s);
        assert_int_equal(file_size(f->path, "-wal"), -ENOENT);
        assert_int_equal(store_open(f->path, &s), 0);
        assert_int_equal(store_load_events(s, "a", 0, 0, count_event, &n), 6000);
        assert_int_equal(n, 6000);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_store_survives_reopen),
                T(test_store_records_state_history),
                T(test_store_replaces_session),
                T(test_store_delete_removes_history),
                T(test_store_load_callback_controls_iteration),
                T(test_store_refuses_incomplete_record),
                T(test_store_uses_wal_and_schema_version),
                T(test_store_refuses_newer_schema),
                T(test_store_refuses_file_that_is_not_a_database),
                T(test_store_skips_events_until_a_time),
                T(test_store_keeps_the_latest_result_as_events_are_appended),
                T(test_store_migration_finds_the_latest_results_of_an_older_store),
                T(test_store_fails_busy_when_another_writer_holds_the_lock),
                T(test_store_interaction_survives_reopen_and_updates),
                T(test_store_checkpoints_in_its_thread),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}

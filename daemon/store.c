/* The durable record of sessions, their output events and their queued prompts in SQLite (REFERENCE.md
 * C.5): WAL with synchronous=NORMAL, so that a commit costs no fsync yet a crash of the daemon never loses
 * one; events appended a batch per transaction; a schema versioned by user_version and migrated forward
 * step by step; every statement prepared once at open and run with bound parameters only. SQLite's errors
 * become negative errno values, logged here with SQLite's own message since only this file has it. */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "store-checkpoint.h"
#include "util.h"

/* How long a statement waits for another process's lock (the daemon is the only writer; in WAL mode
 * readers never block it, so only an outside writer such as the sqlite3 shell or a backup can). Short,
 * because it is time the event loop stands still. Failed writes are not retried later from the loop:
 * every caller acts on the outcome at once (CreateSession is refused, ccdocker-init resends the
 * events it was not acked, a prompt is refused to its sender, the session record is rewritten whole
 * at its next change), and a write held back for a retry would report success for a row a following
 * read (store_load_events(), GetResult) does not yet see, and could land after a later delete. */
#define STORE_BUSY_TIMEOUT_MSEC 100

/* migrations[i] takes the schema from user_version i to i + 1, in one transaction with the version bump.
 * Only ever append. */
static const char *const migrations[] = {
        /* 0 -> 1 */
        "CREATE TABLE sessions ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  parent_id TEXT,"
        "  depth INTEGER NOT NULL,"
        "  state TEXT NOT NULL,"
        "  state_reason TEXT,"
        "  unit TEXT,"
        "  container_name TEXT,"
        "  container_id TEXT,"
        "  task_type TEXT,"
        "  workspace_path TEXT,"
        "  workspace_ephemeral INTEGER NOT NULL,"
        "  owner_uid INTEGER NOT NULL,"
        "  created_usec INTEGER NOT NULL,"
        "  updated_usec INTEGER NOT NULL,"
        "  config_json TEXT"
        ") STRICT;"
        "CREATE TABLE session_states ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
        "  state TEXT NOT NULL,"
        "  reason TEXT,"
        "  usec INTEGER NOT NULL"
        ") STRICT;"
        "CREATE INDEX session_states_by_id ON session_states(id, seq);",
        /* 1 -> 2: session output. events is keyed by (session_id, seq) rather than tied to sessions by a
         * foreign key: an event is stored before anything else may look at it, and the output of a
         * deleted session goes only when asked (store_delete_session_output()). */
        "CREATE TABLE events ("
        "  session_id TEXT NOT NULL,"
        "  seq INTEGER NOT NULL,"
        "  time_usec INTEGER NOT NULL,"
        "  data TEXT NOT NULL,"
        "  PRIMARY KEY (session_id, seq)"
        ") STRICT;"
        "CREATE TABLE prompts ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  message_id TEXT NOT NULL UNIQUE,"
        "  session_id TEXT NOT NULL,"
        "  text TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'done', 'failed')),"
        "  created_usec INTEGER NOT NULL,"
        "  updated_usec INTEGER NOT NULL"
        ") STRICT;"
        "CREATE INDEX prompts_by_session ON prompts(session_id, seq);",
        /* 2 -> 3: what each session's model calls used (the model proxy), so budgets outlive a restart. */
        "CREATE TABLE model_usage ("
        "  session_id TEXT PRIMARY KEY,"
        "  calls INTEGER NOT NULL,"
        "  input_tokens INTEGER NOT NULL,"
        "  output_tokens INTEGER NOT NULL,"
        "  cache_creation_input_tokens INTEGER NOT NULL,"
        "  cache_read_input_tokens INTEGER NOT NULL,"
        "  cost_usd REAL NOT NULL"
        ") STRICT;",
        /* 3 -> 4: finding a session's output by time (child.output's since_timestamp) with one seek. */
        "CREATE INDEX events_by_time ON events(session_id, time_usec, seq);",
        /* 4 -> 5: the seq of each session's latest "result" event, kept as events are appended, so that
         * a restart reads one row instead of parsing the end of every history. The rows of a store
         * from before are found in the last 1000 events of each session, as the restart used to look:
         * by the text's start, without parsing it (ccdocker-init writes Claude Code's events
         * compactly, in their order, and a result event starts with its type). */
        "CREATE TABLE session_results ("
        "  session_id TEXT PRIMARY KEY NOT NULL,"
        "  seq INTEGER NOT NULL"
        ") STRICT;"
        "INSERT INTO session_results (session_id, seq) "
        "SELECT id, (SELECT seq FROM events WHERE session_id = ids.id AND seq > ids.last - 1000 "
        "            AND substr(data, 1, 16) = '{\"type\":\"result\"' ORDER BY seq DESC LIMIT 1) AS seq "
        "FROM (SELECT session_id AS id, max(seq) AS last FROM events GROUP BY session_id) AS ids "
        "WHERE seq IS NOT NULL;",
        /* 5 -> 6: notices and questions for a human (SPEC.md 2.7.6, daemon/questions.c), with what a
         * question needs to outlive a restart: the deadline of its attempt, where Discord has it, who
         * answered, and whether the answer reached the session. IF NOT EXISTS: a store whose version
         * was set back (a test forging an older store) keeps its table. */
        "CREATE TABLE IF NOT EXISTS discord_interactions ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  session_id TEXT NOT NULL,"
        "  interaction_type TEXT NOT NULL CHECK (interaction_type IN ('notification', 'question', 'permission')),"
        "  message TEXT NOT NULL,"
        "  response TEXT,"
        "  status TEXT NOT NULL CHECK (status IN ('pending', 'answered', 'timeout', 'completed')),"
        "  discord_thread_id TEXT,"
        "  attempt INTEGER NOT NULL,"
        "  max_attempts INTEGER NOT NULL,"
        "  timeout_seconds INTEGER NOT NULL,"
        "  priority TEXT NOT NULL CHECK (priority IN ('normal', 'urgent')),"
        "  created_at INTEGER NOT NULL,"
        "  answered_at INTEGER,"
        "  discord_message_id TEXT,"
        "  deadline INTEGER NOT NULL,"
        "  tool_json TEXT,"
        "  answered_surface TEXT,"
        "  answered_by TEXT,"
        "  late_delivery TEXT,"
        "  handed_over INTEGER NOT NULL,"
        "  posted INTEGER NOT NULL,"
        "  reply_cursor TEXT"
        ") STRICT;"
        "CREATE INDEX IF NOT EXISTS discord_interactions_by_session ON discord_interactions(session_id, created_at);"
        "CREATE INDEX IF NOT EXISTS discord_interactions_open ON discord_interactions(status, handed_over);",
};

#define STORE_SCHEMA_VERSION ((int) ELEMENTSOF(migrations))

#define SESSION_COLUMNS                                                                              \
        "id, parent_id, depth, state, state_reason, unit, container_name, container_id, task_type, " \
        "workspace_path, workspace_ephemeral, owner_uid, created_usec, updated_usec, config_json"

#define INTERACTION_COLUMNS                                                                         \
        "id, session_id, interaction_type, message, response, status, discord_thread_id, attempt, " \
        "max_attempts, timeout_seconds, priority, created_at, answered_at, discord_message_id, "    \
        "deadline, tool_json, answered_surface, answered_by, late_delivery, handed_over, posted, "  \
        "reply_cursor"

enum {
        STMT_SAVE_SESSION,
        STMT_UPDATE_STATE,
        STMT_INSERT_STATE,
        STMT_LOAD_SESSIONS,
        STMT_LOAD_STATES,
        STMT_DELETE_SESSION,
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_INSERT_EVENT,
        STMT_LOAD_EVENTS,
        STMT_LAST_SEQ,
        STMT_FIRST_AFTER_TIME,
        STMT_EVENT_SESSIONS,
        STMT_DELETE_EVENTS,
        STMT_SET_RESULT,
        STMT_LAST_RESULT,
        STMT_DELETE_RESULT,
        STMT_PROMPT_ADD,
        STMT_PROMPT_SET_STATE,
        STMT_LOAD_PROMPTS,
        STMT_DELETE_PROMPTS,
        STMT_INTERACTION_SAVE,
        STMT_INTERACTION_LOAD,
        STMT_INTERACTIONS_LOAD,
        _STMT_MAX,
};

static const char *const statements[_STMT_MAX] = {
        /* An upsert, not INSERT OR REPLACE: a replace deletes the row first, and with it (ON DELETE
         * CASCADE) the session's state history. */
        [STMT_SAVE_SESSION] =
                "INSERT INTO sessions (" SESSION_COLUMNS ") "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
                "ON CONFLICT (id) DO UPDATE SET "
                "parent_id = excluded.parent_id, depth = excluded.depth, state = excluded.state, "
                "state_reason = excluded.state_reason, unit = excluded.unit, "
                "container_name = excluded.container_name, container_id = excluded.container_id, "
                "task_type = excluded.task_type, workspace_path = excluded.workspace_path, "
                "workspace_ephemeral = excluded.workspace_ephemeral, owner_uid = excluded.owner_uid, "
                "created_usec = excluded.created_usec, updated_usec = excluded.updated_usec, "
                "config_json = excluded.config_json",
        [STMT_UPDATE_STATE] =
                "UPDATE sessions SET state = ?2, state_reason = ?3, updated_usec = ?4 WHERE id = ?1",
        [STMT_INSERT_STATE] = "INSERT INTO session_states (id, state, reason, usec) VALUES (?1, ?2, ?3, ?4)",
        [STMT_LOAD_SESSIONS] = "SELECT " SESSION_COLUMNS " FROM sessions ORDER BY created_usec, rowid",
        [STMT_LOAD_STATES] = "SELECT state, reason, usec FROM session_states WHERE id = ?1 ORDER BY seq",
        [STMT_DELETE_SESSION] = "DELETE FROM sessions WHERE id = ?1",
        /* The event path runs often enough that even its transaction control is prepared once. */
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_INSERT_EVENT] =
                "INSERT INTO events (session_id, seq, time_usec, data) VALUES (?1, ?2, ?3, ?4)",
        [STMT_LOAD_EVENTS] =
                "SELECT seq, time_usec, data FROM events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        [STMT_LAST_SEQ] = "SELECT max(seq) FROM events WHERE session_id = ?1",
        /* One seek in events_by_time to the first event stamped after ?3; then at most the events
         * between that time and seq ?2, which the caller has read already. */
        [STMT_FIRST_AFTER_TIME] =
                "SELECT seq FROM events INDEXED BY events_by_time "
                "WHERE session_id = ?1 AND time_usec > ?3 AND seq > ?2 ORDER BY time_usec, seq LIMIT 1",
        /* A skip scan over the primary key: one index seek per session, however many events each has. */
        [STMT_EVENT_SESSIONS] =
                "WITH RECURSIVE ids(id, n) AS ("
                "  SELECT (SELECT min(session_id) FROM events WHERE session_id > ?1), 1"
                "  UNION ALL"
                "  SELECT (SELECT min(session_id) FROM events WHERE session_id > ids.id), n + 1 FROM ids"
                "  WHERE ids.id IS NOT NULL AND n < ?2"
                ") "
                "SELECT id, (SELECT max(seq) FROM events WHERE session_id = ids.id) FROM ids WHERE id IS NOT NULL",
        [STMT_DELETE_EVENTS] = "DELETE FROM events WHERE session_id = ?1",
        [STMT_SET_RESULT] = "INSERT INTO session_results (session_id, seq) VALUES (?1, ?2) "
                            "ON CONFLICT (session_id) DO UPDATE SET seq = excluded.seq",
        [STMT_LAST_RESULT] =
                "SELECT e.seq, e.time_usec, e.data FROM session_results AS r "
                "JOIN events AS e ON e.session_id = r.session_id AND e.seq = r.seq WHERE r.session_id = ?1",
        [STMT_DELETE_RESULT] = "DELETE FROM session_results WHERE session_id = ?1",
        [STMT_PROMPT_ADD] =
                "INSERT INTO prompts (message_id, session_id, text, state, created_usec, updated_usec) "
                "VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
        [STMT_PROMPT_SET_STATE] = "UPDATE prompts SET state = ?2, updated_usec = ?3 WHERE message_id = ?1",
        [STMT_LOAD_PROMPTS] =
                "SELECT message_id, text, state, created_usec FROM prompts WHERE session_id = ?1 ORDER BY seq",
        [STMT_DELETE_PROMPTS] = "DELETE FROM prompts WHERE session_id = ?1",
        [STMT_INTERACTION_SAVE] =
                "INSERT INTO discord_interactions (" INTERACTION_COLUMNS ") "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
                "?19, ?20, ?21, ?22) "
                "ON CONFLICT (id) DO UPDATE SET response = excluded.response, status = excluded.status, "
                "discord_thread_id = excluded.discord_thread_id, attempt = excluded.attempt, "
                "answered_at = excluded.answered_at, discord_message_id = excluded.discord_message_id, "
                "deadline = excluded.deadline, answered_surface = excluded.answered_surface, "
                "answered_by = excluded.answered_by, handed_over = excluded.handed_over, "
                "posted = excluded.posted, reply_cursor = excluded.reply_cursor",
        [STMT_INTERACTION_LOAD] = "SELECT " INTERACTION_COLUMNS " FROM discord_interactions WHERE id = ?1",
        /* ?2 = 1: only those the daemon still has work for (pending, or an outcome not handed over). */
        [STMT_INTERACTIONS_LOAD] =
                "SELECT " INTERACTION_COLUMNS " FROM discord_interactions "
                "WHERE (?1 IS NULL OR session_id = ?1) "
                "AND (?2 = 0 OR status = 'pending' OR (status <> 'completed' AND handed_over = 0)) "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?3",
};

struct Store {
        sqlite3 *db;
        char *path;
        sqlite3_stmt *stmt[_STMT_MAX];
        StoreCheckpointer *checkpointer; /* NULL: SQLite's automatic checkpoints, in the commits */
};

/* Maps a (possibly extended) result code to a negative errno. */
static int sqlite_to_errno(sqlite3 *db, int rc) {
        int sys;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_INTERRUPT:
                return -EINTR;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_PROTOCOL:
                return -EPROTO;
        case SQLITE_MISMATCH:
        case SQLITE_RANGE:
        case SQLITE_MISUSE:
                return -EINVAL;
        case SQLITE_CONSTRAINT:
                switch (rc) {
                case SQLITE_CONSTRAINT_FOREIGNKEY:
                        return -ENOENT;
                case SQLITE_CONSTRAINT_PRIMARYKEY:
                case SQLITE_CONSTRAINT_UNIQUE:
                        return -EEXIST;
                default:
                        return -EINVAL;
                }
        case SQLITE_CANTOPEN:
        case SQLITE_IOERR:
                sys = db ? sqlite3_system_errno(db) : 0;
                if (sys > 0)
                        return -sys;
                return (rc & 0xff) == SQLITE_CANTOPEN ? -ENOENT : -EIO;
        default:
                return -EIO;
        }
}

static int log_sqlite(Store *s, int rc, const char *what) {
        return log_error_errno(
                sqlite_to_errno(s->db, rc),
                "Failed to %s in %s: %s (SQLite %d)",
                what,
                s->path,
                s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc),
                rc);
}

/* A statement in use is reset and its bindings cleared when the scope is left, ready for the next call. */
static void stmt_resetp(sqlite3_stmt **st) {
        if (*st) {
                (void) sqlite3_reset(*st);
                (void) sqlite3_clear_bindings(*st);
        }
}

#define _cleanup_stmt_ _cleanup_(stmt_resetp)

/* For the few statements that are run once and not kept. */
static void stmt_finalizep(sqlite3_stmt **st) {
        (void) sqlite3_finalize(*st);
}

static int store_exec(Store *s, const char *sql, const char *what) {
        int rc;

        /* Constant SQL only: every value goes through a prepared statement with bound parameters. */
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, what);
        return 0;
}

static void rollback(Store *s) {
        if (!sqlite3_get_autocommit(s->db))
                (void) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int bind_text(sqlite3_stmt *st, int i, const char *v) {
        return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* Callers have checked that v fits. */
static int bind_usec(sqlite3_stmt *st, int i, uint64_t v) {
        return sqlite3_bind_int64(st, i, (sqlite3_int64) v);
}

/* A lower bound ("seq > ?", "time_usec > ?"): one past what SQLite holds means the same as the most. */
static int bind_bound(sqlite3_stmt *st, int i, uint64_t v) {
        return bind_usec(st, i, v > INT64_MAX ? (uint64_t) INT64_MAX : v);
}

static int pragma_int(Store *s, const char *sql, int *ret) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_sqlite(s, rc, sql);

        *ret = sqlite3_column_int(st, 0);
        return 0;
}

static int store_migrate(Store *s) {
        char bump[64];
        int version = 0, r;

        /* Read and raised under one write lock, so that two openers cannot both migrate. DDL is
         * transactional in SQLite: a failed step leaves the previous schema. */
        r = store_exec(s, "BEGIN IMMEDIATE", "begin a schema migration");
        if (r < 0)
                return r;

        r = pragma_int(s, "PRAGMA user_version", &version);
        if (r < 0) {
                rollback(s);
                return r;
        }
        if (version > STORE_SCHEMA_VERSION) {
                rollback(s);
                return log_error_errno(
                        EPROTO,
                        "%s has schema version %d, newer than the %d this ccdockerd knows; refusing to use it.",
                        s->path,
                        version,
                        STORE_SCHEMA_VERSION);
        }
        if (version == STORE_SCHEMA_VERSION)
                return store_exec(s, "COMMIT", "end a schema check");

        for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
                r = store_exec(s, migrations[v], "migrate the schema");
                if (r < 0) {
                        rollback(s);
                        return r;
                }
        }

        /* PRAGMA takes no parameters; the number is ours. */
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        r = store_exec(s, bump, "set the schema version");
        if (r >= 0)
                r = store_exec(s, "COMMIT", "commit a schema migration");
        if (r < 0) {
                rollback(s);
                return r;
        }

        log_debug("Migrated %s from schema version %d to %d.", s->path, version, STORE_SCHEMA_VERSION);
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;

        /* First: the last connection to close checkpoints the WAL and removes it. */
        s->checkpointer = store_checkpointer_stop(s->checkpointer);
        for (size_t i = 0; i < _STMT_MAX; i++)
                (void) sqlite3_finalize(s->stmt[i]);
        if (s->db)
                (void) sqlite3_close(s->db);
        free(s->path);
        free(s);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_close);

int store_open(const char *path, Store **ret) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *mode;
        int rc, r;

        if (!path || !ret)
                return -EINVAL;

        s = calloc(1, sizeof(Store));
        if (!s)
                return -ENOMEM;
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;

        /* Created here rather than by SQLite, so that it is 0600 whatever the umask: the records hold
         * the sessions' configurations, environment included. SQLite gives -wal and -shm the same mode. */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open %s: %m", path);
        fd = safe_close(fd);

        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE, NULL);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "open the database");
        (void) sqlite3_extended_result_codes(s->db, 1);

        rc = sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MSEC);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "set the busy timeout");

        /* journal_mode answers with the mode in force: anything but "wal" (a filesystem without shared
         * memory, say) is an error rather than a silent fallback to a rollback journal. */
        {
                _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;

                rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(st);
                if (rc != SQLITE_ROW)
                        return log_sqlite(s, rc, "switch to WAL");

                mode = (const char *) sqlite3_column_text(st, 0);
                if (!mode || strcasecmp(mode, "wal") != 0)
                        return log_error_errno(
                                EOPNOTSUPP,
                                "%s cannot use WAL, journal mode is '%s'.",
                                path,
                                strempty(mode));
        }

        r = store_exec(s, "PRAGMA synchronous = NORMAL", "set synchronous=NORMAL");
        if (r < 0)
                return r;
        r = store_exec(s, "PRAGMA foreign_keys = ON", "enable foreign keys");
        if (r < 0)
                return r;

        r = store_migrate(s);
        if (r < 0)
                return r;

        for (size_t i = 0; i < _STMT_MAX; i++) {
                rc = sqlite3_prepare_v3(
                        s->db, statements[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
                if (rc != SQLITE_OK)
                        return log_sqlite(s, rc, "prepare a statement");
        }

        /* Checkpoints off the loop (store-checkpoint.h); without the thread, in the commits as before. */
        (void) store_checkpointer_start(s->db, s->path, &s->checkpointer);

        *ret = TAKE_PTR(s);
        return 0;
}

int store_checkpoint_stats(Store *s, StoreCheckpointStats *ret) {
        if (!s->checkpointer)
                return -ENOTCONN;
        store_checkpointer_stats(s->checkpointer, ret);
        return 0;
}

int store_save_session(Store *s, const SessionRecord *rec) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !rec || !rec->id || !rec->state || rec->created_usec > INT64_MAX ||
            rec->updated_usec > INT64_MAX)
                return -EINVAL;

        st = s->stmt[STMT_SAVE_SESSION];
        rc = bind_text(st, 1, rec->id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, rec->parent_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, rec->depth);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 4, rec->state);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 5, rec->state_reason);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 6, rec->unit);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 7, rec->container_name);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 8, rec->container_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 9, rec->task_type);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 10, rec->workspace_path);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 11, rec->workspace_ephemeral);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 12, rec->owner_uid);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 13, rec->created_usec);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 14, rec->updated_usec);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 15, rec->config_json);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "save a session");

        return 0;
}

int store_record_state(Store *s, const char *id, const char *state, const char *reason, uint64_t usec) {
        int rc, r;

        if (!s || !id || !state || usec > INT64_MAX)
                return -EINVAL;

        /* The history and the session's current state change together or not at all. */
        r = store_exec(s, "BEGIN IMMEDIATE", "begin a state change");
        if (r < 0)
                return r;

        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_UPDATE_STATE];

                rc = bind_text(st, 1, id);
                if (rc == SQLITE_OK)
                        rc = bind_text(st, 2, state);
                if (rc == SQLITE_OK)
                        rc = bind_text(st, 3, reason);
                if (rc == SQLITE_OK)
                        rc = bind_usec(st, 4, usec);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(st);
                if (rc != SQLITE_DONE) {
                        r = log_sqlite(s, rc, "update a session's state");
                        rollback(s);
                        return r;
                }
                if (sqlite3_changes(s->db) == 0) {
                        rollback(s);
                        return -ENOENT;
                }
        }

        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_INSERT_STATE];

                rc = bind_text(st, 1, id);
                if (rc == SQLITE_OK)
                        rc = bind_text(st, 2, state);
                if (rc == SQLITE_OK)
                        rc = bind_text(st, 3, reason);
                if (rc == SQLITE_OK)
                        rc = bind_usec(st, 4, usec);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(st);
                if (rc != SQLITE_DONE) {
                        r = log_sqlite(s, rc, "append to a session's state history");
                        rollback(s);
                        return r;
                }
        }

        r = store_exec(s, "COMMIT", "commit a state change");
        if (r < 0) {
                rollback(s);
                return r;
        }
        return 0;
}

void session_record_done(SessionRecord *r) {
        if (!r)
                return;

        r->id = mfree(r->id);
        r->parent_id = mfree(r->parent_id);
        r->state = mfree(r->state);
        r->state_reason = mfree(r->state_reason);
        r->unit = mfree(r->unit);
        r->container_name = mfree(r->container_name);
        r->container_id = mfree(r->container_id);
        r->task_type = mfree(r->task_type);
        r->workspace_path = mfree(r->workspace_path);
        r->config_json = mfree(r->config_json);
}

/* A copy of a text column: NULL for SQL NULL. */
static int column_text(sqlite3_stmt *st, int i, char **ret) {
        const unsigned char *t;

        if (sqlite3_column_type(st, i) == SQLITE_NULL) {
                *ret = NULL;
                return 0;
        }
        t = sqlite3_column_text(st, i);
        if (!t)
                return -ENOMEM;
        *ret = strdup((const char *) t);
        return *ret ? 0 : -ENOMEM;
}

static uint64_t column_u64(sqlite3_stmt *st, int i) {
        sqlite3_int64 v = sqlite3_column_int64(st, i);
        return v < 0 ? 0 : (uint64_t) v;
}

static int read_session_row(sqlite3_stmt *st, SessionRecord *rec) {
        int r;

        *rec = (SessionRecord){
                .depth = (unsigned) sqlite3_column_int64(st, 2),
                .workspace_ephemeral = sqlite3_column_int(st, 10) != 0,
                .owner_uid = (uid_t) sqlite3_column_int64(st, 11),
                .created_usec = column_u64(st, 12),
                .updated_usec = column_u64(st, 13),
        };

        r = column_text(st, 0, &rec->id);
        if (r >= 0)
                r = column_text(st, 1, &rec->parent_id);
        if (r >= 0)
                r = column_text(st, 3, &rec->state);
        if (r >= 0)
                r = column_text(st, 4, &rec->state_reason);
        if (r >= 0)
                r = column_text(st, 5, &rec->unit);
        if (r >= 0)
                r = column_text(st, 6, &rec->container_name);
        if (r >= 0)
                r = column_text(st, 7, &rec->container_id);
        if (r >= 0)
                r = column_text(st, 8, &rec->task_type);
        if (r >= 0)
                r = column_text(st, 9, &rec->workspace_path);
        if (r >= 0)
                r = column_text(st, 14, &rec->config_json);
        if (r < 0)
                session_record_done(rec);
        return r;
}

typedef struct RecordList {
        SessionRecord *items;
        size_t n;
} RecordList;

static void record_list_done(RecordList *l) {
        for (size_t i = 0; i < l->n; i++)
                session_record_done(&l->items[i]);
        l->items = mfree(l->items);
        l->n = 0;
}

int store_load_sessions(Store *s, int (*cb)(const SessionRecord *r, void *userdata), void *userdata) {
        _cleanup_(record_list_done) RecordList l = {};
        int rc, r;

        if (!s || !cb)
                return -EINVAL;

        /* Read everything first and reset the statement, so that cb may use the store (record a state,
         * delete a session) while the rows are handed out. */
        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_LOAD_SESSIONS];

                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        SessionRecord *items;

                        items = reallocarray(l.items, l.n + 1, sizeof(SessionRecord));
                        if (!items)
                                return log_oom();
                        l.items = items;
                        r = read_session_row(st, &l.items[l.n]);
                        if (r < 0)
                                return log_oom();
                        l.n++;
                }
                if (rc != SQLITE_DONE)
                        return log_sqlite(s, rc, "load the sessions");
        }

        for (size_t i = 0; i < l.n; i++) {
                r = cb(&l.items[i], userdata);
                if (r < 0)
                        return r;
        }

        return (int) l.n;
}

typedef struct StateRow {
        char *state, *reason;
        uint64_t usec;
} StateRow;

typedef struct StateList {
        StateRow *items;
        size_t n;
} StateList;

static void state_list_done(StateList *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].state);
                free(l->items[i].reason);
        }
        l->items = mfree(l->items);
        l->n = 0;
}

int store_load_states(
        Store *s,
        const char *id,
        int (*cb)(const char *state, const char *reason, uint64_t usec, void *userdata),
        void *userdata) {
        _cleanup_(state_list_done) StateList l = {};
        int rc, r;

        if (!s || !id || !cb)
                return -EINVAL;

        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_LOAD_STATES];

                rc = bind_text(st, 1, id);
                if (rc != SQLITE_OK)
                        return log_sqlite(s, rc, "load a session's states");

                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        StateRow *items;

                        items = reallocarray(l.items, l.n + 1, sizeof(StateRow));
                        if (!items)
                                return log_oom();
                        l.items = items;
                        l.items[l.n] = (StateRow){ .usec = column_u64(st, 2) };
                        r = column_text(st, 0, &l.items[l.n].state);
                        if (r >= 0)
                                r = column_text(st, 1, &l.items[l.n].reason);
                        l.n++; /* counted even when half-filled, so that it is freed */
                        if (r < 0)
                                return log_oom();
                }
                if (rc != SQLITE_DONE)
                        return log_sqlite(s, rc, "load a session's states");
        }

        for (size_t i = 0; i < l.n; i++) {
                r = cb(l.items[i].state, l.items[i].reason, l.items[i].usec, userdata);
                if (r < 0)
                        return r;
        }

        return (int) l.n;
}

int store_delete_session(Store *s, const char *id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !id)
                return -EINVAL;

        /* The state history goes with it (ON DELETE CASCADE). */
        st = s->stmt[STMT_DELETE_SESSION];
        rc = bind_text(st, 1, id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "delete a session");

        return sqlite3_changes(s->db);
}

/* ---- Session output ---- */

static int store_begin(Store *s, const char *what) {
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_BEGIN];
        int rc;

        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, what);
        return 0;
}

static int store_commit(Store *s, const char *what) {
        int rc, r = 0;

        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_COMMIT];

                rc = sqlite3_step(st);
                if (rc != SQLITE_DONE)
                        r = log_sqlite(s, rc, what);
        }
        if (r < 0)
                rollback(s);
        return r;
}

int store_append_events(Store *s, const char *session_id, const StoreEvent *events, size_t n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, r;

        if (!s || !session_id || (!events && n > 0))
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (events[i].seq == 0 || events[i].seq > INT64_MAX || events[i].time_usec > INT64_MAX ||
                    !events[i].data)
                        return -EINVAL;
        if (n == 0)
                return 0;

        /* One transaction for the whole batch: the cost of a write is in its commit, not its rows. */
        r = store_begin(s, "begin appending events");
        if (r < 0)
                return r;

        st = s->stmt[STMT_INSERT_EVENT];
        rc = bind_text(st, 1, session_id);
        for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
                rc = bind_usec(st, 2, events[i].seq);
                if (rc == SQLITE_OK)
                        rc = bind_usec(st, 3, events[i].time_usec);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_text64(
                                st, 4, events[i].data, events[i].data_len, SQLITE_STATIC, SQLITE_UTF8);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(st);
                if (rc == SQLITE_DONE)
                        rc = sqlite3_reset(st);
        }
        if (rc != SQLITE_OK) {
                r = log_sqlite(s, rc, "append events");
                (void) sqlite3_reset(st);
                rollback(s);
                return r;
        }

        /* The batch's latest result, in the same transaction: it never points past what is stored. */
        for (size_t i = n; i > 0; i--) {
                if (!events[i - 1].result)
                        continue;
                {
                        _cleanup_stmt_ sqlite3_stmt *res = s->stmt[STMT_SET_RESULT];

                        rc = bind_text(res, 1, session_id);
                        if (rc == SQLITE_OK)
                                rc = bind_usec(res, 2, events[i - 1].seq);
                        if (rc == SQLITE_OK)
                                rc = sqlite3_step(res);
                        if (rc != SQLITE_DONE) {
                                r = log_sqlite(s, rc, "record a session's latest result");
                                rollback(s);
                                return r;
                        }
                }
                break;
        }

        return store_commit(s, "commit appended events");
}

typedef int (*event_cb_t)(
        uint64_t seq, uint64_t time_usec, const char *data, size_t data_len, void *userdata);

/* Steps through a bound statement whose rows are (seq, time_usec, data), calling cb for each as
 * store_load_events() says. */
static int step_events(Store *s, sqlite3_stmt *st, event_cb_t cb, void *userdata, const char *what) {
        int rc, n = 0, r;

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *data = (const char *) sqlite3_column_text(st, 2);

                if (!data)
                        return log_oom();
                r = cb(column_u64(st, 0),
                       column_u64(st, 1),
                       data,
                       (size_t) sqlite3_column_bytes(st, 2),
                       userdata);
                if (r < 0)
                        return r;
                if (n < INT_MAX)
                        n++;
                if (r > 0)
                        return n;
        }
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, what);

        return n;
}

int store_load_events(
        Store *s, const char *session_id, uint64_t since, unsigned limit, event_cb_t cb, void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !cb)
                return -EINVAL;

        st = s->stmt[STMT_LOAD_EVENTS];
        rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = bind_bound(st, 2, since);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, limit > 0 ? (sqlite3_int64) limit : -1);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "load events");

        return step_events(s, st, cb, userdata, "load events");
}

int store_load_last_result(Store *s, const char *session_id, event_cb_t cb, void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !cb)
                return -EINVAL;

        st = s->stmt[STMT_LAST_RESULT];
        rc = bind_text(st, 1, session_id);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "load a session's latest result");

        return step_events(s, st, cb, userdata, "load a session's latest result");
}

int store_last_seq(Store *s, const char *session_id, uint64_t *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !ret)
                return -EINVAL;

        st = s->stmt[STMT_LAST_SEQ];
        rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_sqlite(s, rc, "read a session's last event");

        *ret = column_u64(st, 0); /* max() of no rows is NULL, read as 0 */
        return 0;
}

int store_skip_events_until(Store *s, const char *session_id, uint64_t since, uint64_t usec, uint64_t *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        uint64_t last;
        int rc, r;

        if (!s || !session_id || !ret)
                return -EINVAL;

        st = s->stmt[STMT_FIRST_AFTER_TIME];
        rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = bind_bound(st, 2, since);
        if (rc == SQLITE_OK)
                rc = bind_bound(st, 3, usec);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = column_u64(st, 0) - 1; /* >= since: the row's seq is > since */
                return 0;
        }
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "find a session's events by time");

        /* Nothing is later: every event there is passes. */
        r = store_last_seq(s, session_id, &last);
        if (r < 0)
                return r;
        *ret = last > since ? last : since;
        return 0;
}

int store_load_event_sessions(
        Store *s,
        const char *after,
        unsigned limit,
        int (*cb)(const char *session_id, uint64_t last_seq, void *userdata),
        void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, n = 0, r;

        if (!s || !cb)
                return -EINVAL;

        st = s->stmt[STMT_EVENT_SESSIONS];
        rc = bind_text(st, 1, strempty(after));
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, limit > 0 ? (sqlite3_int64) limit : INT64_MAX);
        if (rc != SQLITE_OK)
                return log_sqlite(s, rc, "list the sessions with events");

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *id = (const char *) sqlite3_column_text(st, 0);

                if (!id)
                        return log_oom();
                r = cb(id, column_u64(st, 1), userdata);
                if (r < 0)
                        return r;
                if (n < INT_MAX)
                        n++;
                if (r > 0)
                        return n;
        }
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "list the sessions with events");

        return n;
}

int store_prompt_add(
        Store *s, const char *session_id, const char *message_id, const char *text, uint64_t usec) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !message_id || !text || usec > INT64_MAX)
                return -EINVAL;

        st = s->stmt[STMT_PROMPT_ADD];
        rc = bind_text(st, 1, message_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, session_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 3, text);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 4, usec);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "queue a prompt");

        return 0;
}

static bool prompt_state_valid(const char *state) {
        return streq(state, "queued") || streq(state, "delivered") || streq(state, "done") ||
                streq(state, "failed");
}

int store_prompt_set_state(Store *s, const char *message_id, const char *state, uint64_t usec) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !message_id || !state || !prompt_state_valid(state) || usec > INT64_MAX)
                return -EINVAL;

        st = s->stmt[STMT_PROMPT_SET_STATE];
        rc = bind_text(st, 1, message_id);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 2, state);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 3, usec);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "set a prompt's state");

        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

typedef struct PromptRow {
        char *message_id, *text, *state;
        uint64_t usec;
} PromptRow;

typedef struct PromptList {
        PromptRow *items;
        size_t n;
} PromptList;

static void prompt_list_done(PromptList *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].message_id);
                free(l->items[i].text);
                free(l->items[i].state);
        }
        l->items = mfree(l->items);
        l->n = 0;
}

int store_load_prompts(
        Store *s,
        const char *session_id,
        int (*cb)(
                const char *message_id, const char *text, const char *state, uint64_t usec, void *userdata),
        void *userdata) {
        _cleanup_(prompt_list_done) PromptList l = {};
        int rc, r;

        if (!s || !session_id || !cb)
                return -EINVAL;

        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_LOAD_PROMPTS];

                rc = bind_text(st, 1, session_id);
                if (rc != SQLITE_OK)
                        return log_sqlite(s, rc, "load a session's prompts");

                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        PromptRow *items;

                        items = reallocarray(l.items, l.n + 1, sizeof(PromptRow));
                        if (!items)
                                return log_oom();
                        l.items = items;
                        l.items[l.n] = (PromptRow){ .usec = column_u64(st, 3) };
                        r = column_text(st, 0, &l.items[l.n].message_id);
                        if (r >= 0)
                                r = column_text(st, 1, &l.items[l.n].text);
                        if (r >= 0)
                                r = column_text(st, 2, &l.items[l.n].state);
                        l.n++; /* counted even when half-filled, so that it is freed */
                        if (r < 0)
                                return log_oom();
                }
                if (rc != SQLITE_DONE)
                        return log_sqlite(s, rc, "load a session's prompts");
        }

        for (size_t i = 0; i < l.n; i++) {
                r = cb(l.items[i].message_id, l.items[i].text, l.items[i].state, l.items[i].usec, userdata);
                if (r < 0)
                        return r;
        }

        return (int) l.n;
}

/* Runs one of the DELETE ... WHERE session_id = ?1 statements; the number of rows deleted. */
static int delete_session_rows(Store *s, int statement, const char *session_id, const char *what) {
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[statement];
        int rc;

        rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, what);
        return sqlite3_changes(s->db);
}

int store_delete_session_output(Store *s, const char *session_id) {
        int n, r;

        if (!s || !session_id)
                return -EINVAL;

        r = store_begin(s, "begin deleting a session's output");
        if (r < 0)
                return r;

        n = delete_session_rows(s, STMT_DELETE_EVENTS, session_id, "delete a session's events");
        if (n >= 0)
                r = delete_session_rows(
                        s, STMT_DELETE_RESULT, session_id, "delete a session's latest result");
        if (n >= 0 && r >= 0)
                r = delete_session_rows(s, STMT_DELETE_PROMPTS, session_id, "delete a session's prompts");
        if (n < 0 || r < 0) {
                rollback(s);
                return n < 0 ? n : r;
        }

        r = store_commit(s, "commit deleting a session's output");
        if (r < 0)
                return r;
        return n;
}

int store_usage_add(Store *s, const char *session_id, const StoreUsage *u) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !u)
                return -EINVAL;
        rc = sqlite3_prepare_v2(
                s->db,
                "INSERT INTO model_usage VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(session_id) DO UPDATE SET "
                "calls = calls + ?2, input_tokens = input_tokens + ?3, output_tokens = output_tokens + ?4, "
                "cache_creation_input_tokens = cache_creation_input_tokens + ?5, "
                "cache_read_input_tokens = cache_read_input_tokens + ?6, cost_usd = cost_usd + ?7",
                -1,
                &st,
                NULL);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, (sqlite3_int64) u->calls);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, (sqlite3_int64) u->input_tokens);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 4, (sqlite3_int64) u->output_tokens);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 5, (sqlite3_int64) u->cache_creation_input_tokens);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 6, (sqlite3_int64) u->cache_read_input_tokens);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_double(st, 7, u->cost_usd);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "add to a session's model usage");
        return 0;
}

int store_usage_load(Store *s, const char *session_id, StoreUsage *ret) {
        _cleanup_(stmt_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        if (!s || !session_id || !ret)
                return -EINVAL;
        *ret = (StoreUsage){};
        rc = sqlite3_prepare_v2(
                s->db,
                "SELECT calls, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, "
                "cost_usd FROM model_usage WHERE session_id = ?1",
                -1,
                &st,
                NULL);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 1, session_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return log_sqlite(s, rc, "read a session's model usage");
        *ret = (StoreUsage){
                .calls = (uint64_t) sqlite3_column_int64(st, 0),
                .input_tokens = (uint64_t) sqlite3_column_int64(st, 1),
                .output_tokens = (uint64_t) sqlite3_column_int64(st, 2),
                .cache_creation_input_tokens = (uint64_t) sqlite3_column_int64(st, 3),
                .cache_read_input_tokens = (uint64_t) sqlite3_column_int64(st, 4),
                .cost_usd = sqlite3_column_double(st, 5),
        };
        return 1;
}

/* ---- notices and questions for a human (daemon/questions.c) ---- */

void store_interaction_done(StoreInteraction *i) {
        char **fields[] = { &i->id,
                            &i->session_id,
                            &i->type,
                            &i->message,
                            &i->response,
                            &i->status,
                            &i->thread_id,
                            &i->priority,
                            &i->message_id,
                            &i->tool_json,
                            &i->answered_surface,
                            &i->answered_by,
                            &i->late_delivery,
                            &i->reply_cursor };

        for (size_t k = 0; k < ELEMENTSOF(fields); k++)
                *fields[k] = mfree(*fields[k]);
}

int store_interaction_save(Store *s, const StoreInteraction *i) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const char *text[] = { i->id,       i->session_id, i->type,     i->message,
                               i->response, i->status,     i->thread_id };
        int rc = SQLITE_OK;

        if (!s || !i->id || !i->session_id || !i->type || !i->message || !i->status || !i->priority ||
            i->created_usec > INT64_MAX || i->answered_usec > INT64_MAX || i->deadline_usec > INT64_MAX)
                return -EINVAL;

        st = s->stmt[STMT_INTERACTION_SAVE];
        for (size_t k = 0; k < ELEMENTSOF(text) && rc == SQLITE_OK; k++)
                rc = bind_text(st, (int) k + 1, text[k]);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 8, i->attempt);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 9, i->max_attempts);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 10, i->timeout_sec);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 11, i->priority);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 12, i->created_usec);
        if (rc == SQLITE_OK)
                rc = i->answered_usec > 0 ? bind_usec(st, 13, i->answered_usec) : sqlite3_bind_null(st, 13);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 14, i->message_id);
        if (rc == SQLITE_OK)
                rc = bind_usec(st, 15, i->deadline_usec);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 16, i->tool_json);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 17, i->answered_surface);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 18, i->answered_by);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 19, i->late_delivery);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 20, i->handed_over);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 21, i->posted);
        if (rc == SQLITE_OK)
                rc = bind_text(st, 22, i->reply_cursor);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return log_sqlite(s, rc, "save an interaction");
        return 0;
}

static int read_interaction_row(sqlite3_stmt *st, StoreInteraction *i) {
        char **text[] = { &i->id,       &i->session_id, &i->type,     &i->message,
                          &i->response, &i->status,     &i->thread_id };
        int r = 0;

        *i = (StoreInteraction){
                .attempt = (unsigned) sqlite3_column_int64(st, 7),
                .max_attempts = (unsigned) sqlite3_column_int64(st, 8),
                .timeout_sec = (unsigned) sqlite3_column_int64(st, 9),
                .created_usec = column_u64(st, 11),
                .answered_usec = column_u64(st, 12),
                .deadline_usec = column_u64(st, 14),
                .handed_over = sqlite3_column_int(st, 19) != 0,
                .posted = sqlite3_column_int(st, 20) != 0,
        };
        for (size_t k = 0; k < ELEMENTSOF(text) && r >= 0; k++)
                r = column_text(st, (int) k, text[k]);
        if (r >= 0)
                r = column_text(st, 10, &i->priority);
        if (r >= 0)
                r = column_text(st, 13, &i->message_id);
        if (r >= 0)
                r = column_text(st, 15, &i->tool_json);
        if (r >= 0)
                r = column_text(st, 16, &i->answered_surface);
        if (r >= 0)
                r = column_text(st, 17, &i->answered_by);
        if (r >= 0)
                r = column_text(st, 18, &i->late_delivery);
        if (r >= 0)
                r = column_text(st, 21, &i->reply_cursor);
        if (r < 0)
                store_interaction_done(i);
        return r;
}

int store_interaction_load(Store *s, const char *id, StoreInteraction *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, r;

        if (!s || !id || !ret)
                return -EINVAL;
        st = s->stmt[STMT_INTERACTION_LOAD];
        rc = bind_text(st, 1, id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return log_sqlite(s, rc, "load an interaction");
        r = read_interaction_row(st, ret);
        if (r < 0)
                return log_oom();
        return 1;
}

typedef struct InteractionList {
        StoreInteraction *items;
        size_t n;
} InteractionList;

static void interaction_list_done(InteractionList *l) {
        for (size_t k = 0; k < l->n; k++)
                store_interaction_done(&l->items[k]);
        l->items = mfree(l->items);
        l->n = 0;
}

int store_load_interactions(
        Store *s,
        const char *session_id,
        bool open_only,
        unsigned limit,
        int (*cb)(const StoreInteraction *i, void *userdata),
        void *userdata) {
        _cleanup_(interaction_list_done) InteractionList l = {};
        int rc, r;

        if (!s || !cb)
                return -EINVAL;
        {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_INTERACTIONS_LOAD];

                rc = bind_text(st, 1, session_id);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int(st, 2, open_only);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 3, limit > 0 ? (sqlite3_int64) limit : -1);
                if (rc != SQLITE_OK)
                        return log_sqlite(s, rc, "load interactions");
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        StoreInteraction *items;

                        items = reallocarray(l.items, l.n + 1, sizeof(StoreInteraction));
                        if (!items)
                                return log_oom();
                        l.items = items;
                        r = read_interaction_row(st, &l.items[l.n]);
                        if (r < 0)
                                return log_oom();
                        l.n++;
                }
                if (rc != SQLITE_DONE)
                        return log_sqlite(s, rc, "load interactions");
        }
        for (size_t k = 0; k < l.n; k++) {
                r = cb(&l.items[k], userdata);
                if (r < 0)
                        return r;
        }
        return (int) l.n;
}

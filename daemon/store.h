/* The durable record of sessions: SQLite in WAL mode (ccdockerd.db under the state directory). Every
 * session and every state change is written before it is announced, so a daemon that is killed and
 * restarted knows every session it had (manager.c re-adopts those whose units still run). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct Store Store;

typedef struct SessionRecord {
        char *id;
        char *parent_id; /* NULL for a top-level session */
        unsigned depth;
        char *state; /* "starting", "idle", "running", "stopped", "failed" */
        char *state_reason;
        char *unit;
        char *container_name;
        char *container_id; /* NULL until created */
        char *task_type;
        char *workspace_path;
        bool workspace_ephemeral;
        uid_t owner_uid;
        uint64_t created_usec; /* CLOCK_REALTIME */
        uint64_t updated_usec;
        char *config_json; /* the SessionConfig, validate.h's session_config_to_json() */
} SessionRecord;

/* Opens (creating it 0600 if needed) and migrates the database. Errors are negative errno values, logged
 * here with SQLite's message: -EBUSY (locked past the 5 s busy timeout), -EBADMSG (not a database, or
 * corrupt), -EPROTO (a schema newer than this daemon knows), -ENOSPC, -EROFS, -EACCES, -EIO, ... */
int store_open(const char *path, Store **ret);
Store *store_close(Store *s);

/* Inserts or replaces the whole record (id and state required); a replaced record keeps its history. */
int store_save_session(Store *s, const SessionRecord *r);

/* Appends to the state history (and updates the session's state, reason and updated_usec), in one
 * transaction. -ENOENT if no session has this id. */
int store_record_state(Store *s, const char *id, const char *state, const char *reason, uint64_t usec);

/* Calls cb for every stored session, oldest first; a negative return from cb stops and is returned.
 * Otherwise returns the number of sessions. The record is valid only during the call; cb may use the
 * store (the rows are read before the first call). */
int store_load_sessions(Store *s, int (*cb)(const SessionRecord *r, void *userdata), void *userdata);

/* The state history of a session, oldest first; returns the number of entries, as above. */
int store_load_states(
        Store *s,
        const char *id,
        int (*cb)(const char *state, const char *reason, uint64_t usec, void *userdata),
        void *userdata);

/* Deletes the session and its history. Returns 1, or 0 if there was no such session. */
int store_delete_session(Store *s, const char *id);

/* Frees the strings of a record that owns them (the fields are set to NULL). */
void session_record_done(SessionRecord *r);

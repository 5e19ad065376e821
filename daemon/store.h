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
        char *config_json; /* the SessionConfig, session-config.h's session_config_to_json() */
} SessionRecord;

/* Opens (creating it 0600 if needed) and migrates the database. Errors are negative errno values, logged
 * here with SQLite's message: -EBUSY (locked by another process past the 100 ms busy timeout), -EBADMSG (not
 * a database, or corrupt), -EPROTO (a schema newer than this daemon knows), -ENOSPC, -EROFS, -EACCES, -EIO,
 * ... */
int store_open(const char *path, Store **ret);
Store *store_close(Store *s);

/* How the WAL's checkpoints went (store-checkpoint.h); -ENOTCONN if they are SQLite's own, in the
 * commits (the thread could not start). */
typedef struct StoreCheckpointStats StoreCheckpointStats;
int store_checkpoint_stats(Store *s, StoreCheckpointStats *ret);

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

/* ---- Session output: events (DESIGN.md decision 6) and queued prompts ---- */

/* One event as stored: data is its JSON text, data_len bytes long (it need not be NUL-terminated). */
typedef struct StoreEvent {
        uint64_t seq;
        uint64_t time_usec; /* CLOCK_REALTIME */
        const char *data;
        size_t data_len;
        bool result; /* a turn's "result" event: the session's latest, if none later is */
} StoreEvent;

/* Appends n events of a session in one transaction: all of them or none. -EEXIST if a seq is already
 * stored (nothing is then written), -EINVAL for a seq of 0 or a value past INT64_MAX. */
int store_append_events(Store *s, const char *session_id, const StoreEvent *events, size_t n);

/* Calls cb for the session's events with seq > since, oldest first, at most limit of them (0: no
 * limit). data is NUL-terminated JSON text, valid only during the call. cb is called while the rows are
 * read, so that a long history is never held in memory: it must not use the store. A negative return
 * from cb stops and is returned; a positive one stops without error. Otherwise returns the number of
 * events handed to cb. */
int store_load_events(
        Store *s,
        const char *session_id,
        uint64_t since,
        unsigned limit,
        int (*cb)(uint64_t seq, uint64_t time_usec, const char *data, size_t data_len, void *userdata),
        void *userdata);

/* Calls cb (as store_load_events() does) for the latest event stored with .result set, if the session
 * has one: one row, however long its history. Returns 1 if there was one, 0 if not, or cb's negative
 * return. */
int store_load_last_result(
        Store *s,
        const char *session_id,
        int (*cb)(uint64_t seq, uint64_t time_usec, const char *data, size_t data_len, void *userdata),
        void *userdata);

/* The highest stored seq of a session, 0 if it has no events. */
int store_last_seq(Store *s, const char *session_id, uint64_t *ret);

/* Where to read a session's events from (a seq for store_load_events()'s since) to pass over those
 * stamped at or before usec: one before the first event after since in time order that is stamped
 * later, or the last seq (at least since) when none is. One index seek, however long the history.
 * Events are stamped in the order they are made; one stamped out of order (a clock step) is passed
 * over when an earlier seq is stamped later than it. */
int store_skip_events_until(Store *s, const char *session_id, uint64_t since, uint64_t usec, uint64_t *ret);

/* Calls cb for up to limit sessions that have events and whose id sorts after `after` (NULL or "": from
 * the first), in id order, with their highest seq; for walking every session's output in slices
 * (EventBus's catch-up after Redis returns). Same callback rules as store_load_events(). Returns the
 * number of sessions handed to cb. */
int store_load_event_sessions(
        Store *s,
        const char *after,
        unsigned limit,
        int (*cb)(const char *session_id, uint64_t last_seq, void *userdata),
        void *userdata);

/* Queues a prompt (state "queued"). -EEXIST if message_id is already stored. */
int store_prompt_add(
        Store *s, const char *session_id, const char *message_id, const char *text, uint64_t usec);

/* Sets a prompt's state: "queued", "delivered", "done" or "failed" (-EINVAL for anything else).
 * -ENOENT if no prompt has this message_id. */
int store_prompt_set_state(Store *s, const char *message_id, const char *state, uint64_t usec);

/* Calls cb for every prompt of the session, oldest (first queued) first, with the time it was queued.
 * The rows are read before the first call: cb may use the store. Returns the number of prompts, or the
 * first negative return of cb. */
int store_load_prompts(
        Store *s,
        const char *session_id,
        int (*cb)(
                const char *message_id, const char *text, const char *state, uint64_t usec, void *userdata),
        void *userdata);

/* Deletes a session's events, the mark of its latest result and its prompts in one transaction
 * (store_delete_session() keeps them). Returns the number of events deleted. */
int store_delete_session_output(Store *s, const char *session_id);

/* What a session's model calls used, added up (the model proxy's records). */
typedef struct StoreUsage {
        uint64_t calls, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens;
        double cost_usd;
} StoreUsage;

/* Adds u to the session's usage (a row is made for its first call). */
int store_usage_add(Store *s, const char *session_id, const StoreUsage *u);
/* The session's usage: 1 and *ret filled, or 0 and zeros when it has made no call. */
int store_usage_load(Store *s, const char *session_id, StoreUsage *ret);

/* ---- Notices and questions for a human: the discord_interactions table (SPEC.md 2.7.6) ---- */

typedef struct StoreInteraction {
        char *id;
        char *session_id;
        char *type;      /* interaction_type: "notification", "question" or "permission" */
        char *message;   /* the text shown to people */
        char *response;  /* the answer; NULL until answered */
        char *status;    /* "pending", "answered", "timeout", "completed" */
        char *thread_id; /* discord_thread_id: where a sink takes the replies */
        unsigned attempt, max_attempts, timeout_sec;
        char *priority;                       /* "normal" or "urgent" */
        uint64_t created_usec, answered_usec; /* CLOCK_REALTIME; answered_usec 0 until answered */
        char *message_id;                     /* the sink's posted message */
        uint64_t deadline_usec;               /* CLOCK_REALTIME: the end of the current attempt (0: none) */
        char *tool_json;                      /* a permission question's {"name":...,"input":...} */
        char *answered_surface;               /* "discord", "dbus", "ctl", "http", "redis" */
        char *answered_by;                    /* who, where known (uid, token name, Discord user) */
        char *late_delivery;                  /* NULL or "prompt" */
        bool handed_over;                     /* the outcome reached the session (or is no one's to take) */
        bool posted;                          /* the sink has it (or there is no sink to post to) */
        char *reply_cursor;                   /* the sink's last reply seen */
} StoreInteraction;

/* Inserts a record, or updates the fields that change (all but the question itself). */
int store_interaction_save(Store *s, const StoreInteraction *i);
/* 1 and *ret filled (free with store_interaction_done()), or 0 if no record has this id. */
int store_interaction_load(Store *s, const char *id, StoreInteraction *ret);
/* Calls cb for the records of session_id (NULL: of every session), newest first, at most limit (0: all);
 * with open_only only those still pending or whose outcome was not handed over. The rows are read
 * before the first call: cb may use the store. Returns the number, or cb's first negative return. */
int store_load_interactions(
        Store *s,
        const char *session_id,
        bool open_only,
        unsigned limit,
        int (*cb)(const StoreInteraction *i, void *userdata),
        void *userdata);
void store_interaction_done(StoreInteraction *i);

/* A session: one Claude Code container inside one transient unit, and its state machine (SPEC.md 4.5):
 * starting -> idle (the unit runs the container) -> running (a prompt is being worked on, later issues)
 * -> stopped (asked to stop, or the container ended cleanly) or failed (anything else, with the reason).
 * The session drives its own creation (container over libpod REST, then the unit) and follows its unit
 * to learn of exits it did not cause. */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <systemd/sd-bus.h> /* sd_bus_slot: the unit watch on systemd's bus */
#include <systemd/sd-event.h>

#include "channel.h"
#include "cleanup.h"
#include "core-error.h"
#include "ratelimit.h"
#include "session-config.h"
#include "store.h"

typedef struct Manager Manager;
typedef struct Session Session;
typedef struct EgressSession EgressSession;
typedef struct ModelProxySession ModelProxySession;
typedef struct ResultWaiter ResultWaiter;

/* A prompt not yet answered by a result event, oldest first. */
typedef struct Prompt {
        char *message_id;
        char *text;
        bool sent;      /* sent to the current init connection, result awaited */
        bool delivered; /* ccdocker-init has written it to claude (now or before a reconnect) */
        struct Prompt *next;
} Prompt;

/* What changed on a session since it was last published. The core marks it (session_mark_changed()) and
 * the manager's one publishing source sends it on, once per event-loop turn however often it changed:
 * PropertiesChanged through the manager's publisher, the Redis notices the session queued, and the
 * waiters it wakes. */
typedef enum SessionChange {
        SESSION_CHANGED_STATE = 1 << 0,     /* State, StateReason */
        SESSION_CHANGED_CONTAINER = 1 << 1, /* ContainerId */
        SESSION_CHANGED_OUTPUT = 1 << 2,    /* LastSeq; wakes those waiting for output */
        SESSION_CHANGED_PROMPTS = 1 << 3,   /* PendingPrompts */
        SESSION_CHANGED_CHILDREN = 1 << 4,  /* Children */
        SESSION_CHANGED_USAGE = 1 << 5,     /* Usage: its own, and so the tree figures of its ancestors */
        SESSION_CHANGED_TURN = 1 << 6,      /* a turn or the session ended: wakes every waiter */
} SessionChange;

typedef enum SessionState {
        SESSION_STARTING,
        SESSION_IDLE,
        SESSION_RUNNING,
        SESSION_STOPPED,
        SESSION_FAILED,
        _SESSION_STATE_MAX,
        _SESSION_STATE_INVALID = -EINVAL,
} SessionState;

struct Session {
        unsigned n_ref;
        Manager *manager;

        char *id;
        char *parent_id;
        unsigned depth;
        SessionState state;
        char *state_reason;
        char *unit;
        char *slice; /* ccdocker-<id>.slice, or nested in the parent's: ccdocker-<parent>-<id>.slice */
        char *container_name;
        char *container_id;
        char *task_type;
        char *image;
        char *workspace;
        bool workspace_ephemeral;
        uid_t owner_uid;
        uint64_t created_usec;
        uint64_t ended_usec; /* CLOCK_REALTIME: when it became stopped or failed */
        SessionConfig *config;
        char *object_path;

        sd_bus_slot *unit_watch;
        bool unit_was_active; /* the unit reached active at least once */
        bool stop_requested;  /* Stop was called: the end is "stopped", whatever the unit's result */
        bool stop_force;      /* ... with force: SIGKILL rather than a graceful stop */
        bool stop_issued;     /* the stop or kill has been sent to systemd */
        uid_t stop_uid;
        char *stop_reason; /* why it was stopped, when not on someone's request (its parent ended) */
        bool ending;       /* the unit ended; podman is being asked how the container did */
        /* The channel and what came through it (session-channel.c). */
        Channel *channel;
        char *channel_dir;
        EgressSession *egress;    /* the session's egress.sock, for sessions without a network */
        ModelProxySession *model; /* the session's model.sock, likewise, when the daemon has a credential */
        StoreUsage usage;         /* what its own model calls used (the model proxy's records) */
        bool budget_exhausted;    /* paused: a budget of its tree is used up (session-budget.c) */
        char budget_reason[256];  /* ... which one */
        bool init_connected;
        uint64_t last_heartbeat_usec; /* CLOCK_MONOTONIC */
        uint64_t last_seq;            /* the highest stored event */
        json_t *last_result;          /* the data of the latest "result" event */
        Prompt *prompts;
        unsigned n_prompts;
        sd_event_source *deliver_source;
        ResultWaiter *waiters;
        unsigned n_waiters; /* at most MaxWaitersPerSession */

        unsigned secrets_pending; /* podman secrets being created before the container */
        bool secrets_failed;
        bool secrets_removed;
        bool ended_mid_turn;      /* it ended with prompts unanswered: GetResult says failed */
        unsigned remove_attempts; /* retries of the container's removal */
        bool cleaned_up;          /* container removed, unit reset, ephemeral workspace gone */
        bool removed;             /* forgotten (Remove): no object, no record */

        RateLimit log_limit;           /* ccdocker-init's log notifications (session-channel.c) */
        RateLimit peer_audit_limit;    /* audit records of refused connections to its sockets */
        RateLimit refusal_audit_limit; /* ... of its refused spawns (session-children.c) */
        uint64_t refusals_unaudited;
        uint64_t log_dropped; /* ... dropped since the last one logged */

        /* The warm pool (pool.c). A member (pooled) is in no registry, store, list or Redis channel;
         * handed over, it waits (pool_handover: no prompt goes out) until its caller's limits are on the
         * unit. */
        bool pooled;
        bool pool_handover;
        uint64_t pool_active_usec; /* CLOCK_MONOTONIC: when its unit was seen active */

        /* Publishing (manager.c): what changed since the last flush. */
        unsigned changed; /* SessionChange */
        bool publish_queued;
        Session *publish_next;
};

/* ccdocker-init's log notifications, per session and for all together (session-channel.c). */
#define SESSION_LOG_INTERVAL_SEC 10
#define SESSION_LOG_BURST 200
#define MANAGER_LOG_BURST 2000
#define SESSION_LOG_LINE_MAX 2048

const char *session_state_to_string(SessionState s);
SessionState session_state_from_string(const char *s);
static inline bool session_state_is_final(SessionState s) {
        return s == SESSION_STOPPED || s == SESSION_FAILED;
}

/* A new session in state starting, not yet stored or published, a child of parent (or top-level when
 * NULL). Takes ownership of *config. */
int session_new(Manager *m, SessionConfig **config, uid_t owner, Session *parent, Session **ret);
/* A session read back from the store (daemon restart). */
int session_new_from_record(Manager *m, const SessionRecord *r, Session **ret);

Session *session_ref(Session *s);
Session *session_unref(Session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Session *, session_unref);

/* Creates the workspace and the container, then starts the unit. Progress and failure arrive as state
 * changes; nothing is left behind when it fails. */
int session_start(Session *s);

/* Follows the unit of a session whose unit may still run after a daemon restart: re-adopts it if the
 * unit is active, else ends the session with the reason. */
int session_adopt(Session *s);

/* Stops the unit: gracefully (TimeoutStopSec, then SIGKILL) or at once with SIGKILL. cb (may be NULL)
 * runs when the stop job is done. */
int session_stop(
        Session *s,
        bool force,
        uid_t caller,
        void (*cb)(int r, const char *error, void *userdata),
        void *userdata);

/* session-children.c: a spawn refused or failed, with the channel's error code (docs/channel.md) and a
 * message for the caller. */
typedef struct SpawnError {
        int code;
        char message[256];
} SpawnError;

/* Creates a child of parent from spawn_child's params (prompt, context, task_type, stream_output,
 * timeout_seconds), under the daemon's limits; the caller replies, then starts it with session_start().
 * -EINVAL for bad params, -EPERM for a limit (audited), -ESTALE when the parent has ended, other
 * negative errnos for failures; *e says what to answer. caller is the uid asking, or -1 for the
 * session itself. */
int session_spawn_child(Session *parent, json_t *params, uid_t caller, Session **ret, SpawnError *e);

/* PUBLISH msg on session:{id}:{suffix} (SPEC.md 2.5: "input", "control", "parent", "child:<id>"), at the
 * next flush, in the order notices of all sessions were queued. */
void session_notify(Session *s, const char *suffix, json_t *msg);

/* Marks what changed (SessionChange bits) for the next flush. */
void session_mark_changed(Session *s, unsigned changes);

/* Forgets an ended session: its output, prompts and record go from the store, its Redis stream goes, its
 * object is unpublished, and the removal is audited (caller: who asked, or -1 for the daemon; why: NULL
 * or the reason). -EBUSY (CORE_ERROR_BAD_STATE) while it is live. */
int session_remove(Session *s, uid_t caller, const char *why, CoreError *e);

/* A prompt from a caller (SendPrompt, send_to_child): refused when the session has ended or is stopping,
 * or when the prompt breaks a rule (validate_prompt()); else stored and queued. method prefixes the
 * errors. */
int session_send_prompt(
        Session *s, const char *method, const char *text, char **ret_message_id, CoreError *e);

/* Stops every live descendant of s (they end "stopped", with why as the reason). */
void session_stop_descendants(Session *s, const char *why);

/* Whether s is a direct child of parent. */
static inline bool session_is_child_of(const Session *s, const Session *parent) {
        return s->parent_id && parent && parent->id && strcmp(s->parent_id, parent->id) == 0;
}

/* Writes a new session and its first state to the store. */
int session_store_new(Session *s);

/* Moves to state with reason (NULL: none): stored, announced on the bus, audited. */
void session_set_state(Session *s, SessionState state, const char *reason);

/* Ends the session as failed with reason, and kills its unit. */
void session_fail_and_stop(Session *s, const char *reason);

/* Whether the peer of fd, a new connection to the session's socket_name, is the session's own container
 * (peer.h): 1 yes, 0 no (audited). For the channel, model.sock and egress.sock alike. */
int session_admit_peer(Session *s, int fd, const char *socket_name);
#define SESSION_PEER_AUDIT_BURST 10
#define SESSION_REFUSAL_AUDIT_BURST 30

/* session-channel.c: the channel's hooks for a session (their userdata is the session). */
extern const ChannelHooks session_channel_hooks;
/* session-children.c: ccdocker-mcp's methods (child.*, parent.context) on the session's channel. */
void session_children_call(Session *s, const char *method, json_t *params, ChannelCall *call);

/* session-channel.c */
/* GetOutput: events with seq > since, at most limit (0: all), as event_bus_get() gives them. */
int session_get_output(Session *s, uint64_t since, unsigned limit, json_t **ret);
/* Attach: a new fd streaming the session's events after since (events.h), EOF once it has ended;
 * -EUSERS when MaxAttachPerSession are attached already. */
int session_attach(Session *s, uint64_t since, int *ret_fd);
int session_queue_prompt(Session *s, const char *text, char **ret_message_id);
void session_deliver_next(Session *s);
void session_prompts_clear(Session *s);
int session_restore_output(Session *s);
bool session_result_pending(Session *s);
int session_result(
        Session *s, const char **ret_status, char **ret_result, char **ret_error, char **ret_usage);
/* Calls done(s, userdata) exactly once (-EUSERS when MaxWaitersPerSession wait already): when the session's
 * turn ends or the session ends (and, with output, when a new event is stored), at the daemon's shutdown, or
 * after timeout_sec. The caller checks what it waited for. */
typedef void (*session_wait_t)(Session *s, void *userdata);
int session_wait(Session *s, bool output, uint32_t timeout_sec, session_wait_t done, void *userdata);
/* GetResult's wait: done(s, userdata) now (returns 0) when no result is pending or !wait, else when the
 * turn or the session ends or after timeout_sec (returns 1). done reads session_result(). */
int session_wait_result(Session *s, bool wait, uint32_t timeout_sec, session_wait_t done, void *userdata);
/* Wakes every waiter, or with output_only those that also wait for output. */
void session_wake(Session *s, bool output_only);
void session_wake_waiters(Session *s);
void session_check_heartbeat(Session *s, uint64_t now_monotonic);

/* Fills a store record that borrows the session's strings. */
void session_to_record(Session *s, SessionRecord *r, char **ret_config_json);

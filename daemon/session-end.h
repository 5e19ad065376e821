/* How a session's unit ended, as the final state and reason the session takes (SPEC.md 4.5): a pure
 * function of what systemd said of the unit (its result, how its main process ended), whether the kernel
 * OOM-killed it, and whether the session was asked to stop. Kept out of session.c so that its cmocka
 * test (tests/unit/test-session-end.c) links it alone. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "session.h"
#include "unit.h"

/* What the session knew of itself when its unit ended. */
typedef struct SessionEndFacts {
        bool stop_requested;     /* Stop was called: the end is "stopped", whatever the unit's result */
        const char *stop_reason; /* why it was stopped, when not on someone's request; or NULL */
        uid_t stop_uid;          /* who asked, (uid_t) -1 if unknown */
        uint64_t memory;         /* the session's memory limit in bytes, for the OOM reason */
        uint64_t timeout_sec;    /* its timeout_seconds, for the timeout reason */
} SessionEndFacts;

/* The state (SESSION_STOPPED or SESSION_FAILED) in *ret_state and the reason, a new string; NULL if out
 * of memory (*ret_state is set all the same). */
char *session_end_describe(
        const SessionEndFacts *facts, const UnitState *st, bool oom_killed, SessionState *ret_state);

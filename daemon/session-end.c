/* The end of a session's unit as the session's final state and reason (see session-end.h). */
#define _GNU_SOURCE
#include "session-end.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

char *session_end_describe(
        const SessionEndFacts *f, const UnitState *st, bool oom_killed, SessionState *ret_state) {
        char *reason = NULL;
        int r = 0;

        if (f->stop_requested) {
                *ret_state = SESSION_STOPPED;
                if (f->stop_reason)
                        r = asprintf(&reason, "%s", f->stop_reason);
                else if (f->stop_uid != (uid_t) -1)
                        r = asprintf(&reason, "stopped on request of uid %u", (unsigned) f->stop_uid);
                else
                        r = asprintf(&reason, "stopped on request");
        } else if (streq_ptr(st->result, "success")) {
                *ret_state = SESSION_STOPPED;
                r = asprintf(&reason, "the container exited with status 0");
        } else if (streq_ptr(st->result, "oom-kill") || oom_killed) {
                *ret_state = SESSION_FAILED;
                r = asprintf(
                        &reason,
                        "out of memory: the container was killed at its memory limit (%" PRIu64 " bytes)",
                        f->memory);
        } else if (streq_ptr(st->result, "timeout")) {
                *ret_state = SESSION_FAILED;
                r = asprintf(
                        &reason,
                        "timeout: the session ran longer than timeout_seconds (%" PRIu64 " s)",
                        f->timeout_sec);
        } else if (st->exec_main_code == CLD_KILLED || st->exec_main_code == CLD_DUMPED) {
                *ret_state = SESSION_FAILED;
                r = asprintf(
                        &reason,
                        "the container was killed by signal %s (unit result %s)",
                        strsignal(st->exec_main_status),
                        strempty(st->result));
        } else if (st->exec_main_code == CLD_EXITED && st->exec_main_status == 137) {
                *ret_state = SESSION_FAILED;
                r = asprintf(
                        &reason,
                        "the container was killed (SIGKILL, exit status 137; unit result %s)",
                        strempty(st->result));
        } else if (st->exec_main_code == CLD_EXITED) {
                *ret_state = SESSION_FAILED;
                r = asprintf(
                        &reason,
                        "the container exited with status %d (unit result %s)",
                        st->exec_main_status,
                        strempty(st->result));
        } else {
                *ret_state = SESSION_FAILED;
                r = asprintf(&reason, "the unit ended with result %s", strempty(st->result));
        }
        return r < 0 ? NULL : reason;
}

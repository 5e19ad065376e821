/* The audit trail: one journald record per create, state change, stop, removal and denial, each kind with
 * its fixed MESSAGE_ID (listed in docs/audit.md), and the fields CCDOCKER_SESSION, CCDOCKER_PARENT, UNIT,
 * CALLER_UID, CCDOCKER_EVENT, so that `journalctl MESSAGE_ID=... CCDOCKER_SESSION=...` finds them. */
#pragma once

#include <sys/types.h>

#define AUDIT_SESSION_CREATED "a9d92449b44246168afa8e04f30b2fdf"
#define AUDIT_SESSION_STATE "7fc538d2299444988e9fbd8f21a4ea48"
#define AUDIT_SESSION_STOP "fc6618581d66411a813b43e273a65345"
#define AUDIT_ACCESS_DENIED "c2962f7914b0421cae356094e82b5bf0"
#define AUDIT_CREATE_FAILED "c3dd46ac2dde4839996a2140953888ae"
#define AUDIT_CHILD_REFUSED "dd4aba8bee574aaab6e27129ac91e41f"
#define AUDIT_SESSION_REMOVED "4333de2810f34e878734153e95480218"
#define AUDIT_HUMAN_NOTICE "5b0f3c1e9d2a4e7f8a61c4d2b9e07a13"
#define AUDIT_HUMAN_QUESTION "8e4d2a7c1f6b4b09a3d5e2c7f1a09b64"
#define AUDIT_HUMAN_ANSWER "c17a9e3b5d2f4a68b0e4d91f7c3a2e58"
#define AUDIT_HUMAN_TIMEOUT "2f9b7d4e6a1c4c3d8e05b7a9d2f4c1e0"
#define AUDIT_HUMAN_REFUSED "9a6c3e1d7b4f4e2a9c18f5b3d7e0a4c6"

typedef enum AuditEvent {
        AUDIT_EVENT_CREATED,          /* a session was created */
        AUDIT_EVENT_STATE,            /* a session changed state */
        AUDIT_EVENT_STOP,             /* someone asked to stop a session */
        AUDIT_EVENT_DENIED,           /* a call was refused by polkit or ownership */
        AUDIT_EVENT_CREATE_FAILED,    /* a CreateSession failed after validation (podman, systemd) */
        AUDIT_EVENT_CHILD_REFUSED,    /* a limit refused a session's spawn of a child (SPEC.md 9.6) */
        AUDIT_EVENT_REMOVED,          /* an ended session was removed: by Remove, or its retention ran out */
        AUDIT_EVENT_NOTICE,           /* a session sent a notice for a human (human.notify) */
        AUDIT_EVENT_QUESTION,         /* a session asked a human a question or a permission */
        AUDIT_EVENT_ANSWER,           /* a question was answered: the surface and the answerer */
        AUDIT_EVENT_QUESTION_TIMEOUT, /* an attempt of a question timed out (the last: no answer) */
        AUDIT_EVENT_HUMAN_REFUSED,    /* a notice or question was refused (bad input, a limit) */
} AuditEvent;

/* Sends one record. session_id, parent_id and unit may be NULL (their fields are then left out);
 * caller_uid is (uid_t) -1 when there is no caller (the daemon itself noticed a change). The message is
 * printf-style. Never pass secret values. Returns what sd_journal_send returned. */
int audit_log(
        AuditEvent event,
        const char *session_id,
        const char *parent_id,
        const char *unit,
        uid_t caller_uid,
        const char *format,
        ...) __attribute__((format(printf, 6, 7)));

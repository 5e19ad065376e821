/* The audit trail: one journald record per session event, with a fixed MESSAGE_ID per kind (audit.h,
 * docs/audit.md) and the session, parent, unit and caller as fields of their own, so that an
 * administrator selects with journalctl matches rather than by parsing text. The records go to the
 * journal whatever the log target is; on a terminal they are echoed to stderr as well. */
#define _GNU_SOURCE
#include "audit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include "cleanup.h"
#include "log.h"

static const struct {
        const char *message_id;
        const char *name; /* CCDOCKER_EVENT= */
        int priority;
} audit_events[] = {
        [AUDIT_EVENT_CREATED] = { AUDIT_SESSION_CREATED, "created", LOG_NOTICE },
        [AUDIT_EVENT_STATE] = { AUDIT_SESSION_STATE, "state", LOG_NOTICE },
        [AUDIT_EVENT_STOP] = { AUDIT_SESSION_STOP, "stop", LOG_NOTICE },
        [AUDIT_EVENT_DENIED] = { AUDIT_ACCESS_DENIED, "denied", LOG_WARNING },
        [AUDIT_EVENT_CREATE_FAILED] = { AUDIT_CREATE_FAILED, "create-failed", LOG_WARNING },
        [AUDIT_EVENT_CHILD_REFUSED] = { AUDIT_CHILD_REFUSED, "child-refused", LOG_WARNING },
        [AUDIT_EVENT_REMOVED] = { AUDIT_SESSION_REMOVED, "removed", LOG_NOTICE },
        [AUDIT_EVENT_NOTICE] = { AUDIT_HUMAN_NOTICE, "human-notice", LOG_NOTICE },
        [AUDIT_EVENT_QUESTION] = { AUDIT_HUMAN_QUESTION, "human-question", LOG_NOTICE },
        [AUDIT_EVENT_ANSWER] = { AUDIT_HUMAN_ANSWER, "human-answer", LOG_NOTICE },
        [AUDIT_EVENT_QUESTION_TIMEOUT] = { AUDIT_HUMAN_TIMEOUT, "human-timeout", LOG_NOTICE },
        [AUDIT_EVENT_HUMAN_REFUSED] = { AUDIT_HUMAN_REFUSED, "human-refused", LOG_WARNING },
};

#define AUDIT_FIELDS_MAX 9

typedef struct Fields {
        char *v[AUDIT_FIELDS_MAX];
        size_t n;
} Fields;

static void fields_done(Fields *f) {
        for (size_t i = 0; i < f->n; i++)
                free(f->v[i]);
        f->n = 0;
}

static int fields_add(Fields *f, const char *format, ...) __attribute__((format(printf, 2, 3)));

static int fields_add(Fields *f, const char *format, ...) {
        va_list ap;
        int r;

        if (f->n >= AUDIT_FIELDS_MAX)
                return -E2BIG;

        va_start(ap, format);
        r = vasprintf(&f->v[f->n], format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;

        f->n++;
        return 0;
}

int audit_log(
        AuditEvent event,
        const char *session_id,
        const char *parent_id,
        const char *unit,
        uid_t caller_uid,
        const char *format,
        ...) {
        _cleanup_(fields_done) Fields f = {};
        _cleanup_free_ char *message = NULL;
        struct iovec iov[AUDIT_FIELDS_MAX];
        va_list ap;
        int r;

        if ((unsigned) event >= ELEMENTSOF(audit_events) || !format)
                return -EINVAL;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;

        r = fields_add(&f, "MESSAGE=%s", message);
        if (r >= 0)
                r = fields_add(&f, "MESSAGE_ID=%s", audit_events[event].message_id);
        if (r >= 0)
                r = fields_add(&f, "PRIORITY=%i", audit_events[event].priority);
        if (r >= 0)
                r = fields_add(&f, "SYSLOG_IDENTIFIER=ccdockerd");
        if (r >= 0)
                r = fields_add(&f, "CCDOCKER_EVENT=%s", audit_events[event].name);
        if (r >= 0 && session_id)
                r = fields_add(&f, "CCDOCKER_SESSION=%s", session_id);
        if (r >= 0 && parent_id)
                r = fields_add(&f, "CCDOCKER_PARENT=%s", parent_id);
        if (r >= 0 && unit)
                r = fields_add(&f, "UNIT=%s", unit);
        if (r >= 0 && caller_uid != (uid_t) -1)
                r = fields_add(&f, "CALLER_UID=%u", (unsigned) caller_uid);
        if (r < 0)
                return r;

        for (size_t i = 0; i < f.n; i++)
                iov[i] = (struct iovec){ .iov_base = f.v[i], .iov_len = strlen(f.v[i]) };

        /* On a terminal nobody reads the journal while developing; the record still goes there. */
        if (log_get_target() == LOG_TARGET_STDERR)
                log_full(audit_events[event].priority, "%s", message);

        return sd_journal_sendv(iov, (int) f.n);
}

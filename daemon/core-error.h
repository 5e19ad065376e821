/* What the core says when it refuses or fails an operation, for whichever surface asked: the D-Bus
 * vtables turn it into an org.ccdocker1.Error.* reply, the session channel into a JSON-RPC error. The
 * core never builds a reply itself and never takes an sd_bus_error (STYLE.md 14). */
#pragma once

#include <stdarg.h>

/* The D-Bus error names of cc-docker. */
#define CCDOCKER_ERROR_INVALID_CONFIG "org.ccdocker1.Error.InvalidConfig"
#define CCDOCKER_ERROR_LIMIT "org.ccdocker1.Error.LimitExceeded"
#define CCDOCKER_ERROR_NO_SUCH_SESSION "org.ccdocker1.Error.NoSuchSession"
#define CCDOCKER_ERROR_NO_SUCH_IMAGE "org.ccdocker1.Error.NoSuchImage"
#define CCDOCKER_ERROR_ACCESS_DENIED "org.ccdocker1.Error.AccessDenied"
#define CCDOCKER_ERROR_BAD_STATE "org.ccdocker1.Error.BadState"
#define CCDOCKER_ERROR_INVALID_PROMPT "org.ccdocker1.Error.InvalidPrompt"

typedef enum CoreErrorKind {
        CORE_ERROR_FAILED,         /* the daemon could not do it (its own fault, or a service's) */
        CORE_ERROR_INVALID_CONFIG, /* a field of the request is wrong */
        CORE_ERROR_INVALID_PROMPT, /* a prompt breaks a rule (SPEC.md 9.1) */
        CORE_ERROR_LIMIT,          /* a configured limit refused it */
        CORE_ERROR_BAD_STATE,      /* not in this state (ended, still running, stopping) */
        CORE_ERROR_NO_SUCH_SESSION,
        CORE_ERROR_ACCESS_DENIED,
        _CORE_ERROR_KIND_MAX,
} CoreErrorKind;

typedef struct CoreError {
        CoreErrorKind kind;
        char message[512]; /* for people: says what was wrong, naming the field or the limit */
} CoreError;

/* Fills *e (which may be NULL) and returns r, a negative errno, so that a refusal reads
 * "return core_error(e, -EINVAL, CORE_ERROR_INVALID_CONFIG, "...", ...);". */
int core_error(CoreError *e, int r, CoreErrorKind kind, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

/* The org.ccdocker1.Error.* name (or org.freedesktop.DBus.Error.Failed) a D-Bus reply carries for kind:
 * only strings, so that the core's callers on the bus need not map it themselves. */
const char *core_error_bus_name(CoreErrorKind kind);

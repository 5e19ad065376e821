/* CoreError: see core-error.h. */
#include "core-error.h"

#include <stdio.h>

#include "util.h"

int core_error(CoreError *e, int r, CoreErrorKind kind, const char *format, ...) {
        va_list ap;

        if (!e)
                return r;
        e->kind = kind;
        va_start(ap, format);
        (void) vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return r;
}

const char *core_error_bus_name(CoreErrorKind kind) {
        static const char *const names[_CORE_ERROR_KIND_MAX] = {
                [CORE_ERROR_FAILED] = "org.freedesktop.DBus.Error.Failed",
                [CORE_ERROR_INVALID_CONFIG] = CCDOCKER_ERROR_INVALID_CONFIG,
                [CORE_ERROR_INVALID_PROMPT] = CCDOCKER_ERROR_INVALID_PROMPT,
                [CORE_ERROR_LIMIT] = CCDOCKER_ERROR_LIMIT,
                [CORE_ERROR_BAD_STATE] = CCDOCKER_ERROR_BAD_STATE,
                [CORE_ERROR_NO_SUCH_SESSION] = CCDOCKER_ERROR_NO_SUCH_SESSION,
                [CORE_ERROR_ACCESS_DENIED] = CCDOCKER_ERROR_ACCESS_DENIED,
        };

        if (kind < 0 || kind >= _CORE_ERROR_KIND_MAX)
                return names[CORE_ERROR_FAILED];
        return names[kind];
}

/* The log implementation: level filtering, choice of target, formatting with %m bound to the error
 * being logged, and delivery either as one write() to stderr or as one sd_journal_sendv() entry. */
#define _GNU_SOURCE
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <printf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

static int log_max_level = LOG_INFO;
static enum log_target log_target = LOG_TARGET_AUTO;
static enum log_target log_target_resolved = LOG_TARGET_AUTO; /* AUTO: not resolved yet */
static const char *log_prefix;
static bool log_prefix_set;

/* Restores errno when the scope is left, so that logging never clobbers it for the caller. */
static void errno_restore(int *saved) {
        errno = *saved;
}

#define PROTECT_ERRNO _cleanup_(errno_restore) __attribute__((unused)) int _saved_errno_ = errno

void log_set_max_level(int level) {
        log_max_level = LOG_PRI(level);
}

int log_get_max_level(void) {
        return log_max_level;
}

static bool stderr_is_journal_stream(void) {
        const char *e;
        struct stat st;
        uint64_t dev, ino;
        int n = 0;

        e = getenv("JOURNAL_STREAM");
        if (isempty(e))
                return false;

        /* Exactly "<dev>:<ino>" in decimal, as systemd writes it. */
        if (sscanf(e, "%" SCNu64 ":%" SCNu64 "%n", &dev, &ino, &n) != 2 || n <= 0 || e[n] != '\0')
                return false;

        if (fstat(STDERR_FILENO, &st) < 0)
                return false;

        return (uint64_t) st.st_dev == dev && (uint64_t) st.st_ino == ino;
}

static enum log_target resolve_target(enum log_target target) {
        if (target != LOG_TARGET_AUTO)
                return target;
        return stderr_is_journal_stream() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
}

void log_set_target(enum log_target target) {
        PROTECT_ERRNO;

        log_target = target;
        log_target_resolved = resolve_target(target);
}

enum log_target log_get_target(void) {
        PROTECT_ERRNO;

        if (log_target_resolved == LOG_TARGET_AUTO)
                log_target_resolved = resolve_target(log_target);
        return log_target_resolved;
}

void log_set_prefix(const char *prefix) {
        log_prefix = prefix;
        log_prefix_set = true;
}

static const char *get_prefix(void) {
        return log_prefix_set ? log_prefix : program_invocation_short_name;
}

static void write_stderr(const char *message) {
        const char *prefix = get_prefix();
        struct iovec iov[4];
        size_t n = 0;

        /* One writev() per message, so that lines of concurrent writers do not interleave. */
        if (!isempty(prefix)) {
                iov[n++] = (struct iovec){ .iov_base = (char *) prefix, .iov_len = strlen(prefix) };
                iov[n++] = (struct iovec){ .iov_base = (char *) ": ", .iov_len = 2 };
        }
        iov[n++] = (struct iovec){ .iov_base = (char *) message, .iov_len = strlen(message) };
        iov[n++] = (struct iovec){ .iov_base = (char *) "\n", .iov_len = 1 };

        (void) writev(STDERR_FILENO, iov, (int) n);
}

/* Sends one journal entry made of the caller's fields (each "KEY=value") plus the standard ones.
 * Returns < 0 if the journal could not be reached. */
static int write_journal(
        int level,
        int error,
        const char *file,
        int line,
        const char *func,
        char *const *fields,
        size_t n_fields) {
        char priority[sizeof("PRIORITY=") + 12], errno_field[sizeof("ERRNO=") + 12];
        char code_line[sizeof("CODE_LINE=") + 12];
        _cleanup_free_ char *code_file = NULL, *identifier = NULL;
        _cleanup_free_ struct iovec *iov = NULL;
        const char *prefix = get_prefix();
        size_t n = 0;

        iov = calloc(n_fields + 3, sizeof(struct iovec));
        if (!iov)
                return -ENOMEM;

        for (size_t i = 0; i < n_fields; i++)
                iov[n++] = (struct iovec){ .iov_base = fields[i], .iov_len = strlen(fields[i]) };

        (void) snprintf(priority, sizeof(priority), "PRIORITY=%i", LOG_PRI(level));
        iov[n++] = (struct iovec){ .iov_base = priority, .iov_len = strlen(priority) };

        if (error != 0) {
                (void) snprintf(errno_field, sizeof(errno_field), "ERRNO=%i", error < 0 ? -error : error);
                iov[n++] = (struct iovec){ .iov_base = errno_field, .iov_len = strlen(errno_field) };
        }

        if (!isempty(prefix)) {
                if (asprintf(&identifier, "SYSLOG_IDENTIFIER=%s", prefix) < 0)
                        return -ENOMEM;
                iov[n++] = (struct iovec){ .iov_base = identifier, .iov_len = strlen(identifier) };
        }

        if (asprintf(&code_file, "CODE_FILE=%s", file) < 0)
                return -ENOMEM;
        (void) snprintf(code_line, sizeof(code_line), "CODE_LINE=%i", line);

        return sd_journal_sendv_with_location(code_file, code_line, func, iov, (int) n);
}

/* message is the text for stderr; fields (which include "MESSAGE=...") are for the journal. */
static void dispatch(
        int level,
        int error,
        const char *file,
        int line,
        const char *func,
        const char *message,
        char *const *fields,
        size_t n_fields) {
        if (n_fields > 0 && log_get_target() == LOG_TARGET_JOURNAL &&
            write_journal(level, error, file, line, func, fields, n_fields) >= 0)
                return;

        if (message)
                write_stderr(message);
}

int log_internal(
        int level, int error, const char *file, int line, const char *func, const char *format, ...) {
        PROTECT_ERRNO;
        _cleanup_free_ char *message = NULL, *field = NULL;
        va_list ap;
        int r;

        if (LOG_PRI(level) > log_max_level)
                return log_errno_value(error);

        if (error != 0)
                errno = error < 0 ? -error : error;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                return log_errno_value(error);

        if (asprintf(&field, "MESSAGE=%s", message) < 0)
                field = NULL; /* the journal gets nothing; stderr still gets the message */

        dispatch(level, error, file, line, func, message, field ? &field : NULL, field ? 1 : 0);
        return log_errno_value(error);
}

/* Moves ap past the arguments that format consumes, using glibc's parse_printf_format(). This is how
 * a NULL-terminated list of printf-style fields is walked without relying on vasprintf() to advance
 * a va_list it was handed (the C standard leaves it indeterminate). */
static int va_format_advance(const char *format, va_list *ap) {
        int types[128];
        size_t n;

        n = parse_printf_format(format, ELEMENTSOF(types), types);
        if (n > ELEMENTSOF(types))
                return -E2BIG;

        for (size_t i = 0; i < n; i++) {
                if (types[i] & PA_FLAG_PTR) {
                        (void) va_arg(*ap, void *);
                        continue;
                }

                switch (types[i]) {
                case PA_INT:
                case PA_INT | PA_FLAG_SHORT:
                case PA_CHAR:
                case PA_WCHAR:
                        (void) va_arg(*ap, int);
                        break;
                case PA_INT | PA_FLAG_LONG:
                        (void) va_arg(*ap, long);
                        break;
                case PA_INT | PA_FLAG_LONG_LONG:
                        (void) va_arg(*ap, long long);
                        break;
                case PA_STRING:
                case PA_WSTRING:
                case PA_POINTER:
                        (void) va_arg(*ap, void *);
                        break;
                case PA_FLOAT:
                case PA_DOUBLE:
                        (void) va_arg(*ap, double);
                        break;
                case PA_DOUBLE | PA_FLAG_LONG_DOUBLE:
                        (void) va_arg(*ap, long double);
                        break;
                default:
                        return -EINVAL;
                }
        }
        return 0;
}

static void strv_free_n(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
int log_struct_internal(
        int level, int error, const char *file, int line, const char *func, const char *format, ...) {
        PROTECT_ERRNO;
        char **fields = NULL;
        size_t n_fields = 0, n_allocated = 0;
        const char *message = NULL;
        va_list ap;

        if (LOG_PRI(level) > log_max_level)
                return log_errno_value(error);

        va_start(ap, format);
        for (const char *f = format; f; f = va_arg(ap, const char *)) {
                char *s = NULL;
                va_list aq;
                int r;

                if (n_fields == n_allocated) {
                        size_t k = n_allocated ? n_allocated * 2 : 8;
                        char **t = reallocarray(fields, k, sizeof(char *));

                        if (!t)
                                break;
                        fields = t;
                        n_allocated = k;
                }

                /* %m in any field refers to the error being logged. */
                if (error != 0)
                        errno = error < 0 ? -error : error;

                va_copy(aq, ap);
                r = vasprintf(&s, f, aq);
                va_end(aq);
                if (r < 0)
                        break;
                fields[n_fields++] = s;

                if (va_format_advance(f, &ap) < 0)
                        break; /* the rest of the list cannot be found; log what we have */
        }
        va_end(ap);

        for (size_t i = 0; i < n_fields && !message; i++)
                message = startswith(fields[i], "MESSAGE=");

        dispatch(level, error, file, line, func, message, fields, n_fields);
        strv_free_n(fields, n_fields);
        return log_errno_value(error);
}
#pragma GCC diagnostic pop

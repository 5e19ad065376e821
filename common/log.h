/* Logging for every cc-docker program: syslog levels, a program-name prefix, and two targets. On stderr
 * a line is "prefix: message"; in the journal (sd_journal_sendv) an entry carries MESSAGE=, PRIORITY=,
 * SYSLOG_IDENTIFIER=, CODE_FILE/LINE/FUNC=, ERRNO= and, through log_struct(), any structured fields
 * such as CCDOCKER_SESSION= (STYLE.md 8). The *_errno() forms return -abs(error), so a failure can be
 * logged and returned in one statement: "return log_error_errno(r, "Failed to ...: %m");". */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <syslog.h>

enum log_target {
        LOG_TARGET_AUTO, /* the journal if stderr is connected to it ($JOURNAL_STREAM), else stderr */
        LOG_TARGET_STDERR,
        LOG_TARGET_JOURNAL, /* stderr when sending fails; libsystemd drops messages silently if no journald
                               listens */
};

/* Messages with a level numerically above max_level (less important) are dropped. Default LOG_INFO. */
void log_set_max_level(int level);
int log_get_max_level(void);

/* LOG_TARGET_AUTO is resolved here and at the first message, by comparing $JOURNAL_STREAM ("dev:ino")
 * with stderr; set it again after redirecting stderr. */
void log_set_target(enum log_target target);
/* The effective target: never LOG_TARGET_AUTO. */
enum log_target log_get_target(void);

/* The program name put before stderr messages and used as SYSLOG_IDENTIFIER=. The string is not
 * copied and must outlive its use. NULL means no prefix. Default: program_invocation_short_name. */
void log_set_prefix(const char *prefix);

/* Not called directly: the macros below pass the location. error is an errno value of either sign or
 * 0; when it is not 0, %m in the format prints strerror(abs(error)); when it is 0, %m prints the
 * current errno. errno is preserved. Returns -abs(error), or 0 when error is 0. */
int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...)
        __attribute__((format(printf, 6, 7)));

/* format and the following arguments are a NULL-terminated list of printf-style fields, as for
 * sd_journal_send(): "MESSAGE=...", "CCDOCKER_SESSION=%s", id, ..., NULL. On stderr only the MESSAGE=
 * field is printed (nothing if there is none). Same errno and return rules as log_internal(). */
int log_struct_internal(
        int level, int error, const char *file, int line, const char *func, const char *format, ...)
        __attribute__((format(printf, 6, 0))) __attribute__((sentinel));

static inline int log_errno_value(int error) {
        return error < 0 ? error : -error;
}

/* The level test is done before the arguments are evaluated, so debug messages cost little. */
#define log_full_errno(level, error, ...)                                                                   \
        ({                                                                                                  \
                int _log_level_ = (level), _log_error_ = (error);                                           \
                (LOG_PRI(_log_level_) <= log_get_max_level())                                               \
                        ? log_internal(_log_level_, _log_error_, __FILE__, __LINE__, __func__, __VA_ARGS__) \
                        : log_errno_value(_log_error_);                                                     \
        })

#define log_full(level, ...) ((void) log_full_errno((level), 0, __VA_ARGS__))

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, (error), __VA_ARGS__)
#define log_notice_errno(error, ...) log_full_errno(LOG_NOTICE, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

#define log_struct_errno(level, error, ...) \
        log_struct_internal((level), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_struct(level, ...) log_struct_errno((level), 0, __VA_ARGS__)

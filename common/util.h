/* Small string and number helpers shared by the daemons and helpers: comparisons that read like
 * prose, and strict parsers for integers and sizes taken from untrusted input (D-Bus, HTTP, MCP),
 * which accept exactly the documented forms and report -EINVAL for junk and -ERANGE for overflow. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cleanup.h"

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

/* Both NULL, or equal strings. */
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

/* If s begins with prefix, a pointer into s just after it; else NULL. */
static inline char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);

        if (strncmp(s, prefix, l) != 0)
                return NULL;
        return (char *) s + l;
}

/* Whether s ends with suffix. */
static inline bool endswith(const char *s, const char *suffix) {
        size_t ls = strlen(s), lx = strlen(suffix);

        return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

/* An environment variable's name: [A-Za-z_][A-Za-z0-9_]*. */
bool env_name_is_valid(const char *s);

/* s, or "" if s is NULL: for printing optional strings. */
static inline const char *strempty(const char *s) {
        return s ?: "";
}

/* True if s is NULL or "". */
static inline bool isempty(const char *s) {
        return !s || s[0] == '\0';
}

/* Decimal digits only: no sign, no whitespace, no base prefix, nothing after. -EINVAL for anything
 * else, -ERANGE if the value does not fit. *ret is written only on success. */
int safe_atou64(const char *s, uint64_t *ret);

/* As safe_atou64(), with an optional leading '-'. */
int safe_atoi(const char *s, int *ret);

/* A byte count: decimal digits with an optional binary suffix K, M, G or T (either case; K = 1024).
 * "1024", "512M", "2G". -EINVAL for junk (fractions, spaces, other suffixes, "B"), -ERANGE if the
 * result does not fit in 64 bits. */
int parse_size(const char *s, uint64_t *ret);

/* n random bytes from the kernel (getrandom(2), retried on EINTR). -errno, or -EIO for a short read. */
int random_bytes(void *buf, size_t n);

/* Frees a NULL-ended list of strings and the list; returns NULL. */
static inline char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);

/* Entries of a NULL-ended list of strings (0 for NULL). */
static inline size_t strv_length(char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* A deep copy of a NULL-ended list of strings; NULL when out of memory. */
char **strv_copy(char *const *l);

/* mkdir -p: path and the directories above it that are missing, the ones above with mode 0755 and
 * path itself with mode (both less the umask). Directories that exist are left as they are. 0 or
 * -errno. */
int mkdir_p(const char *path, mode_t mode);

/* The out-of-line helpers of util.h: strict decimal and size parsers, and mkdir -p. They are deliberately
 * narrower than strtoull(), which skips whitespace, accepts signs and base prefixes and wraps "-1" around.
 */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/stat.h>

/* Parses the leading decimal digits of s (at least one) into *ret and sets *end after them. All digits
 * are consumed even when the value overflows, so the caller can report trailing junk as -EINVAL
 * before reporting -ERANGE. */
static int parse_digits(const char *s, uint64_t *ret, const char **end) {
        bool overflow = false;
        uint64_t v = 0;
        const char *p;

        for (p = s; *p >= '0' && *p <= '9'; p++) {
                unsigned d = (unsigned) (*p - '0');

                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        if (p == s)
                return -EINVAL;

        *end = p;
        if (overflow)
                return -ERANGE;
        *ret = v;
        return 0;
}

int safe_atou64(const char *s, uint64_t *ret) {
        const char *end;
        uint64_t v = 0;
        int r;

        if (!s)
                return -EINVAL;

        r = parse_digits(s, &v, &end);
        if (r == -EINVAL || *end != '\0')
                return -EINVAL;
        if (r < 0)
                return r;

        *ret = v;
        return 0;
}

int safe_atoi(const char *s, int *ret) {
        bool negative = false;
        const char *end;
        uint64_t v = 0;
        int r;

        if (!s)
                return -EINVAL;

        if (*s == '-') {
                negative = true;
                s++;
        }

        r = parse_digits(s, &v, &end);
        if (r == -EINVAL || *end != '\0')
                return -EINVAL;
        if (r < 0)
                return r;

        if (negative) {
                if (v > (uint64_t) INT_MAX + 1)
                        return -ERANGE;
                *ret = v == (uint64_t) INT_MAX + 1 ? INT_MIN : -(int) v;
        } else {
                if (v > INT_MAX)
                        return -ERANGE;
                *ret = (int) v;
        }
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        const char *end;
        unsigned shift;
        uint64_t v = 0;
        int r;

        if (!s)
                return -EINVAL;

        r = parse_digits(s, &v, &end);
        if (r == -EINVAL)
                return r;

        switch (*end) {
        case '\0':
                shift = 0;
                break;
        case 'K':
        case 'k':
                shift = 10;
                break;
        case 'M':
        case 'm':
                shift = 20;
                break;
        case 'G':
        case 'g':
                shift = 30;
                break;
        case 'T':
        case 't':
                shift = 40;
                break;
        default:
                return -EINVAL;
        }
        if (shift > 0 && end[1] != '\0')
                return -EINVAL;
        if (r < 0)
                return r; /* -ERANGE: well-formed, but too many digits */

        if (v > (UINT64_MAX >> shift))
                return -ERANGE;

        *ret = v << shift;
        return 0;
}

char **strv_copy(char *const *l) {
        _cleanup_(strv_freep) char **copy = NULL;
        size_t n = 0;

        while (l && l[n])
                n++;
        copy = calloc(n + 1, sizeof(char *));
        if (!copy)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                copy[i] = strdup(l[i]);
                if (!copy[i])
                        return NULL;
        }
        return TAKE_PTR(copy);
}

bool env_name_is_valid(const char *s) {
        if (!s || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return false;
        for (const char *p = s + 1; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '_'))
                        return false;
        return true;
}

int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int random_bytes(void *buf, size_t n) {
        ssize_t r;

        do
                r = getrandom(buf, n, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        return (size_t) r == n ? 0 : -EIO;
}

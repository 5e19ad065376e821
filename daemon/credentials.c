/* The daemon's systemd credentials: see credentials.h. */
#define _GNU_SOURCE
#include "credentials.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

int credential_read(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;

        if (!dir || isempty(name) || strchr(name, '/') || streq(name, ".") || streq(name, "..") || !ret ||
            !ret_len)
                return -EINVAL;

        dfd = open(dir, O_DIRECTORY | O_PATH | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (st.st_size < 0 || (uint64_t) st.st_size > max)
                return -EFBIG;
        buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        /* Up to one byte more than the bound, whatever the size said: a file that grew is refused too. */
        for (;;) {
                ssize_t n = read(fd, buf + len, max + 1 - len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        explicit_bzero(buf, len);
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > max) {
                        explicit_bzero(buf, len);
                        return -EFBIG;
                }
        }
        buf[len] = '\0';
        if (memchr(buf, '\0', len)) {
                explicit_bzero(buf, len);
                return -EBADMSG;
        }
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int credential_list(const char *dir, char ***ret) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_(strv_freep) char **names = NULL;
        struct dirent *de;
        size_t n = 0;

        if (!dir || !ret)
                return -EINVAL;
        d = opendir(dir);
        if (!d)
                return -errno;
        names = calloc(1, sizeof(char *));
        if (!names)
                return -ENOMEM;
        while ((errno = 0, de = readdir(d))) {
                char **l;

                if (de->d_name[0] == '.')
                        continue;
                l = reallocarray(names, n + 2, sizeof(char *));
                if (!l)
                        return -ENOMEM;
                names = l;
                names[n] = strdup(de->d_name);
                names[n + 1] = NULL;
                if (!names[n])
                        return -ENOMEM;
                n++;
        }
        if (errno != 0)
                return -errno;
        qsort(names, n, sizeof(char *), compare_names);
        *ret = TAKE_PTR(names);
        return 0;
}

static const struct {
        const char *file, *env;
        ModelCredentialKind kind;
} model_sources[] = {
        { "anthropic-api-key", NULL, MODEL_CREDENTIAL_API_KEY },
        { "claude-oauth-token", NULL, MODEL_CREDENTIAL_OAUTH },
        { NULL, "ANTHROPIC_API_KEY", MODEL_CREDENTIAL_API_KEY },
        { NULL, "CLAUDE_CODE_OAUTH_TOKEN", MODEL_CREDENTIAL_OAUTH },
};

bool credential_is_model(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(model_sources); i++)
                if (model_sources[i].file && streq_ptr(name, model_sources[i].file))
                        return true;
        /* The Discord bot token is the daemon's too: never a session's secret. */
        return streq_ptr(name, DISCORD_TOKEN_CREDENTIAL);
}

/* The value without surrounding whitespace, checked to fit in a header: 1 with *ret set, 0 when it is
 * empty. what names the credential in the messages ("model credential"), source where it came from;
 * never the value. */
static int credential_clean(
        const char *what, const char *source, const char *value, size_t max, char **ret) {
        size_t len;
        const char *s = value;

        s += strspn(s, " \t\r\n");
        len = strlen(s);
        while (len > 0 && strchr(" \t\r\n", s[len - 1]))
                len--;
        if (len == 0)
                return 0;
        if (len > max)
                return log_error_errno(EINVAL, "The %s from %s is too long.", what, source);
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
                        return log_error_errno(
                                EINVAL,
                                "The %s from %s has spaces or control characters in it.",
                                what,
                                source);
        *ret = strndup(s, len);
        return *ret ? 1 : -ENOMEM;
}

static int model_credential_clean(const char *source, const char *value, char **ret) {
        return credential_clean("model credential", source, value, MODEL_CREDENTIAL_MAX, ret);
}

static int model_credential_read_file(const char *dir, const char *name, char **ret) {
        _cleanup_free_ char *path = NULL;
        char *buf = NULL;
        size_t len = 0;
        int r;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        /* Room for whitespace around the longest value. */
        r = credential_read(dir, name, MODEL_CREDENTIAL_MAX + 62, &buf, &len);
        if (r == -ENOENT)
                return 0;
        if (r == -EFBIG)
                return log_error_errno(EINVAL, "The credential %s is too long.", path);
        if (r == -EBADMSG)
                return log_error_errno(
                        EINVAL,
                        "The model credential from %s has spaces or control characters in it.",
                        path);
        if (r < 0)
                return log_error_errno(r, "Failed to read the credential %s: %m", path);
        r = model_credential_clean(path, buf, ret);
        explicit_bzero(buf, len);
        free(buf);
        return r;
}

int model_credential_load(const char *credentials_dir, ModelCredentialKind *ret_kind, char **ret_value) {
        char *value = NULL;
        ModelCredentialKind kind = MODEL_CREDENTIAL_NONE;
        int r = 0;

        if (!ret_kind || !ret_value)
                return -EINVAL;

        for (size_t i = 0; i < ELEMENTSOF(model_sources) && !value; i++) {
                if (model_sources[i].file) {
                        if (isempty(credentials_dir))
                                continue;
                        r = model_credential_read_file(credentials_dir, model_sources[i].file, &value);
                } else {
                        char *e = getenv(model_sources[i].env);

                        if (!e)
                                continue;
                        r = model_credential_clean(model_sources[i].env, e, &value);
                }
                if (r < 0)
                        break;
                if (value)
                        kind = model_sources[i].kind;
        }

        /* Whichever was used, neither variable stays in the daemon's environment. */
        for (size_t i = 0; i < ELEMENTSOF(model_sources); i++)
                if (model_sources[i].env) {
                        char *e = getenv(model_sources[i].env);

                        if (e)
                                explicit_bzero(e, strlen(e));
                        (void) unsetenv(model_sources[i].env);
                }
        if (r < 0)
                return r;

        *ret_kind = kind;
        *ret_value = value;
        return 0;
}

int discord_token_load(const char *credentials_dir, size_t max, char **ret) {
        char *value = NULL, *e;
        int r = 0;

        if (!ret)
                return -EINVAL;
        if (!isempty(credentials_dir)) {
                _cleanup_free_ char *path = NULL;
                char *buf = NULL;
                size_t len = 0;

                if (asprintf(&path, "%s/%s", credentials_dir, DISCORD_TOKEN_CREDENTIAL) < 0)
                        return -ENOMEM;
                r = credential_read(credentials_dir, DISCORD_TOKEN_CREDENTIAL, max + 62, &buf, &len);
                if (r >= 0) {
                        r = credential_clean("Discord bot token", path, buf, max, &value);
                        explicit_bzero(buf, len);
                        free(buf);
                } else if (r == -ENOENT)
                        r = 0;
                else if (r == -EFBIG || r == -EBADMSG)
                        r = log_error_errno(
                                EINVAL, "The credential %s is too long or has a NUL byte in it.", path);
                else
                        r = log_error_errno(r, "Failed to read the credential %s: %m", path);
        }
        e = getenv(DISCORD_TOKEN_ENV);
        if (r >= 0 && !value && e)
                r = credential_clean("Discord bot token", DISCORD_TOKEN_ENV, e, max, &value);
        /* Whichever was used, the variable does not stay in the daemon's environment (nor its children's).
         */
        if (e)
                explicit_bzero(e, strlen(e));
        (void) unsetenv(DISCORD_TOKEN_ENV);
        if (r < 0)
                return r;
        *ret = value;
        return 0;
}

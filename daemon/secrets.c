/* The daemon's secrets: see secrets.h. */
#define _GNU_SOURCE
#include "secrets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credentials.h"
#include "log.h"
#include "util.h"

#define SECRET_ENV_PREFIX "CC_SECRET_"

typedef struct Secret {
        char *name;
        char *value;
        size_t len;
} Secret;

struct SecretStore {
        Secret *secrets;
        size_t n;
};

bool secret_name_is_valid(const char *s) {
        return env_name_is_valid(s) && strlen(s) <= SECRET_NAME_MAX;
}

SecretStore *secret_store_free(SecretStore *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n; i++) {
                explicit_bzero(s->secrets[i].value, s->secrets[i].len);
                free(s->secrets[i].value);
                free(s->secrets[i].name);
        }
        free(s->secrets);
        return mfree(s);
}

static Secret *find(const SecretStore *s, const char *name) {
        for (size_t i = 0; s && i < s->n; i++)
                if (streq(s->secrets[i].name, name))
                        return &s->secrets[i];
        return NULL;
}

const char *secret_store_get(const SecretStore *s, const char *name) {
        Secret *x = find(s, name);

        return x ? x->value : NULL;
}

size_t secret_store_count(const SecretStore *s) {
        return s ? s->n : 0;
}

/* Takes value (len bytes, NUL-terminated). A later source of the same name replaces nothing: the first
 * one added wins. */
static int add(SecretStore *s, const char *name, char *value, size_t len, const char *source) {
        Secret *l;

        if (find(s, name)) {
                log_warning(
                        "secret %s from %s ignored: it is already set by a credential file", name, source);
                explicit_bzero(value, len);
                free(value);
                return 0;
        }
        l = reallocarray(s->secrets, s->n + 1, sizeof(Secret));
        if (!l) {
                explicit_bzero(value, len);
                free(value);
                return -ENOMEM;
        }
        s->secrets = l;
        s->secrets[s->n] = (Secret){ .name = strdup(name), .value = value, .len = len };
        if (!s->secrets[s->n].name) {
                explicit_bzero(value, len);
                free(value);
                return -ENOMEM;
        }
        s->n++;
        return 0;
}

static int load_credentials(SecretStore *s, const char *dir) {
        _cleanup_(strv_freep) char **names = NULL;
        int r;

        r = credential_list(dir, &names);
        if (r == -ENOENT)
                return 0;
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_warning_errno(r, "could not read the credentials directory %s: %m", dir);
        for (char **name = names; *name; name++) {
                char *value = NULL;
                size_t len = 0;

                /* The model proxy's credential, not a session's secret. */
                if (credential_is_model(*name))
                        continue;
                if (!secret_name_is_valid(*name)) {
                        log_warning(
                                "credential %s/%s ignored: a secret's name must match [A-Za-z_][A-Za-z0-9_]* "
                                "(at most %d characters)",
                                dir,
                                *name,
                                SECRET_NAME_MAX);
                        continue;
                }
                r = credential_read(dir, *name, SECRET_VALUE_MAX, &value, &len);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0) {
                        log_warning_errno(r, "credential %s/%s ignored: %m", dir, *name);
                        continue;
                }
                /* A trailing newline is the file's, not the secret's (echo TOKEN > file). */
                if (len > 0 && value[len - 1] == '\n')
                        value[--len] = '\0';
                r = add(s, *name, value, len, "the credentials directory");
                if (r < 0)
                        return log_oom();
        }
        return 0;
}

static int load_environment(SecretStore *s) {
        _cleanup_(strv_freep) char **names = NULL;
        size_t n = 0;
        int r;

        /* Collected first: unsetenv() changes environ under the loop. */
        for (char **e = environ; e && *e; e++) {
                const char *rest = startswith(*e, SECRET_ENV_PREFIX);
                const char *eq = rest ? strchr(rest, '=') : NULL;
                char **l;

                if (!eq)
                        continue;
                l = reallocarray(names, n + 2, sizeof(char *));
                if (!l)
                        return log_oom();
                names = l;
                names[n] = strndup(*e, (size_t) (eq - *e));
                names[n + 1] = NULL;
                if (!names[n])
                        return log_oom();
                n++;
        }
        for (size_t i = 0; i < n; i++) {
                const char *name = names[i] + strlen(SECRET_ENV_PREFIX);
                const char *v = getenv(names[i]);
                char *value;

                if (!secret_name_is_valid(name) || !v || strlen(v) > SECRET_VALUE_MAX)
                        log_warning(
                                "variable %s ignored: a secret's name must match [A-Za-z_][A-Za-z0-9_]* and "
                                "its value be at most %u bytes",
                                names[i],
                                SECRET_VALUE_MAX);
                else {
                        value = strdup(v);
                        if (!value)
                                return log_oom();
                        r = add(s, name, value, strlen(value), "the environment");
                        if (r < 0)
                                return log_oom();
                }
                /* Gone from the environment, so nothing the daemon starts inherits it, and wiped where it
                 * was, so that /proc/PID/environ (the initial block) no longer shows the value. */
                if (v)
                        explicit_bzero((char *) v, strlen(v));
                (void) unsetenv(names[i]);
        }
        return 0;
}

int secret_store_load(const char *credentials_dir, SecretStore **ret) {
        _cleanup_(secret_store_freep) SecretStore *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        if (credentials_dir) {
                r = load_credentials(s, credentials_dir);
                if (r < 0)
                        return r;
        }
        r = load_environment(s);
        if (r < 0)
                return r;
        if (s->n > 0) {
                _cleanup_free_ char *list = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&list, &len);

                if (f) {
                        for (size_t i = 0; i < s->n; i++)
                                fprintf(f, "%s%s", i ? " " : "", s->secrets[i].name);
                        fclose(f);
                }
                log_info("secrets available to sessions: %s", list ? list : "(could not list them)");
        }
        *ret = TAKE_PTR(s);
        return 0;
}

/* A session's forwards and remote MCP servers: see session-remote.h. */
#define _GNU_SOURCE
#include "session-remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress-proxy.h"
#include "log.h"
#include "manager.h"
#include "mcp-remote.h"
#include "secrets.h"
#include "session.h"
#include "util.h"

static bool strv_has(char *const *l, const char *s) {
        for (size_t i = 0; l && l[i]; i++)
                if (streq(l[i], s))
                        return true;
        return false;
}

static bool config_is_offline(const SessionConfig *c) {
        return c && streq_ptr(c->network, "none");
}

/* ---- ${NAME} in a header ---- */

static bool name_start(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool name_char(char c) {
        return name_start(c) || (c >= '0' && c <= '9');
}

/* Calls each(name, len, userdata) for each ${NAME} of value, in order; stops at the first < 0. */
static int header_refs(
        const char *value, int (*each)(const char *name, size_t len, void *userdata), void *userdata) {
        for (const char *p = value; p && (p = strstr(p, "${"));) {
                const char *n = p + 2, *e = n;
                int r;

                if (!name_start(*e)) {
                        p = n;
                        continue;
                }
                while (name_char(*e))
                        e++;
                if (*e != '}') {
                        p = n;
                        continue;
                }
                r = each(n, (size_t) (e - n), userdata);
                if (r < 0)
                        return r;
                p = e + 1;
        }
        return 0;
}

static int collect_ref(const char *name, size_t len, void *userdata) {
        char ***l = userdata;
        size_t n = strv_length(*l);
        char **k = reallocarray(*l, n + 2, sizeof(char *));

        if (!k)
                return -ENOMEM;
        *l = k;
        k[n] = strndup(name, len);
        k[n + 1] = NULL;
        return k[n] ? 0 : -ENOMEM;
}

char **session_remote_header_secrets(const char *value) {
        char **l = calloc(1, sizeof(char *));

        if (!l)
                return NULL;
        if (header_refs(value, collect_ref, &l) < 0)
                return strv_free(l);
        return l;
}

int session_remote_expand_header(
        const char *value,
        const char *(*lookup)(const char *name, void *userdata),
        void *userdata,
        char **ret,
        char **ret_missing) {
        _cleanup_free_ char *out = NULL;
        size_t size = 0;
        FILE *f;
        const char *p = value;

        f = open_memstream(&out, &size);
        if (!f)
                return -ENOMEM;
        while (p && *p) {
                const char *n, *e;
                _cleanup_free_ char *name = NULL;
                const char *v;

                if (!startswith(p, "${") || !name_start(p[2])) {
                        fputc(*p++, f);
                        continue;
                }
                n = p + 2;
                for (e = n; name_char(*e); e++)
                        ;
                if (*e != '}') {
                        fputc(*p++, f);
                        continue;
                }
                name = strndup(n, (size_t) (e - n));
                if (!name) {
                        fclose(f);
                        return -ENOMEM;
                }
                v = lookup(name, userdata);
                if (!v) {
                        fclose(f);
                        explicit_bzero(out, size);
                        if (ret_missing)
                                *ret_missing = TAKE_PTR(name);
                        return -ENOKEY;
                }
                fputs(v, f);
                p = e + 1;
        }
        if (fclose(f) != 0 || !out)
                return -ENOMEM;
        *ret = TAKE_PTR(out);
        return 0;
}

/* ---- the remote servers of a config ---- */

/* An mcp_overrides entry the daemon forwards: type http, with a url. */
static bool override_is_remote(const json_t *entry) {
        return json_is_object(entry) &&
                streq_ptr(json_string_value(json_object_get(entry, "type")), "http") &&
                json_is_string(json_object_get(entry, "url"));
}

static bool github_is_remote(const SessionConfig *c) {
        return config_is_offline(c) && strv_has(c->secrets, "GITHUB_TOKEN");
}

bool session_secret_held(const SessionConfig *c, const char *name) {
        _cleanup_(json_decrefp) json_t *overrides = NULL;
        const char *key;
        json_t *entry;

        if (!config_is_offline(c) || !name)
                return false;
        if (streq(name, "GITHUB_TOKEN") && github_is_remote(c))
                return true;
        overrides = c->mcp_overrides ? json_loads(c->mcp_overrides, 0, NULL) : NULL;
        json_object_foreach (overrides, key, entry) {
                const char *h;
                json_t *v;

                if (!override_is_remote(entry))
                        continue;
                json_object_foreach (json_object_get(entry, "headers"), h, v) {
                        _cleanup_(strv_freep) char **refs =
                                session_remote_header_secrets(json_string_value(v));

                        if (strv_has(refs, name))
                                return true;
                }
        }
        return false;
}

static const char *lookup_granted(const char *name, void *userdata) {
        Session *s = userdata;

        if (!strv_has(s->config->secrets, name))
                return NULL;
        return secret_store_get(s->manager->secrets, name);
}

typedef struct Remote {
        char *name, *url, *header;
} Remote;

static void remotes_free(Remote *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (l[i].header)
                        explicit_bzero(l[i].header, strlen(l[i].header));
                free(l[i].header);
                free(l[i].name);
                free(l[i].url);
        }
        free(l);
}

/* The session's remote servers with their credential header lines (to be wiped). */
static int session_remotes(Session *s, Remote **ret, size_t *ret_n) {
        const SessionConfig *c = s->config;
        _cleanup_(json_decrefp) json_t *overrides = NULL;
        Remote *l = NULL;
        size_t n = 0;
        const char *key;
        json_t *entry;
        int r = 0;

        l = calloc(MCP_REMOTE_SERVERS_MAX + 1, sizeof(Remote));
        if (!l)
                return -ENOMEM;
        overrides = c->mcp_overrides ? json_loads(c->mcp_overrides, 0, NULL) : NULL;
        if (github_is_remote(c) && !override_is_remote(json_object_get(overrides, "github"))) {
                const char *token = secret_store_get(s->manager->secrets, "GITHUB_TOKEN");

                l[n].name = strdup("github");
                l[n].url = strdup(s->manager->config.github_mcp_url);
                if (!l[n].name || !l[n].url ||
                    (token && asprintf(&l[n].header, "Authorization: Bearer %s", token) < 0))
                        r = -ENOMEM;
                n++;
        }
        json_object_foreach (overrides, key, entry) {
                const char *h = NULL;
                json_t *v = NULL;

                if (r < 0 || !override_is_remote(entry) || n >= MCP_REMOTE_SERVERS_MAX)
                        continue;
                l[n].name = strdup(key);
                l[n].url = strdup(json_string_value(json_object_get(entry, "url")));
                if (!l[n].name || !l[n].url)
                        r = -ENOMEM;
                /* One header (validate.c): its ${NAME}s are the granted secrets' values. */
                json_object_foreach (json_object_get(entry, "headers"), h, v) {
                        _cleanup_free_ char *value = NULL, *missing = NULL;

                        if (r < 0 || l[n].header)
                                break;
                        r = session_remote_expand_header(
                                json_string_value(v), lookup_granted, s, &value, &missing);
                        if (r == -ENOKEY) {
                                log_warning(
                                        "session %s: MCP server %s: header %s names secret %s, which is not granted: left out",
                                        s->id,
                                        key,
                                        h,
                                        missing ? missing : "?");
                                r = 0;
                                break;
                        }
                        if (r >= 0 && asprintf(&l[n].header, "%s: %s", h, value) < 0)
                                r = -ENOMEM;
                        if (value)
                                explicit_bzero(value, strlen(value));
                }
                n++;
        }
        if (r < 0) {
                remotes_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

int session_open_remote(Session *s, uid_t uid, gid_t gid) {
        _cleanup_free_ char *path = NULL, *host = NULL;
        _cleanup_free_ McpRemoteServer *servers = NULL;
        Remote *remotes = NULL;
        size_t n = 0;
        uint16_t port;
        int r;

        if (!s->egress || !config_is_offline(s->config))
                return 0;

        /* POSTGRES_URL: its host:port, as the forward "postgres". */
        if (strv_has(s->config->secrets, "POSTGRES_URL")) {
                const char *dsn = secret_store_get(s->manager->secrets, "POSTGRES_URL");

                r = dsn ? egress_url_authority(dsn, POSTGRES_DEFAULT_PORT, &host, &port) : -ENOKEY;
                if (r >= 0)
                        r = egress_session_add_forward(s->egress, SESSION_FORWARD_POSTGRES, host, port);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        log_warning_errno(
                                r,
                                "session %s: no forward for POSTGRES_URL: its host and port cannot be read (a TCP host is needed): %m",
                                s->id);
        }

        r = session_remotes(s, &remotes, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                remotes_free(remotes, n);
                return 0;
        }
        servers = calloc(n, sizeof(McpRemoteServer));
        if (!servers || asprintf(&path, "%s/%s", s->channel_dir, MCP_REMOTE_SOCKET_NAME) < 0) {
                remotes_free(remotes, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                servers[i] = (McpRemoteServer){ .name = remotes[i].name,
                                                .url = remotes[i].url,
                                                .header = remotes[i].header };
        r = egress_session_add_mcp_remote(s->egress, path, uid, gid, servers, n);
        remotes_free(remotes, n);
        if (r < 0)
                return log_error_errno(r, "session %s: could not set up its remote MCP servers: %m", s->id);
        return 0;
}

int session_remote_hello(Session *s, json_t *config) {
        const SessionConfig *c = s->config;
        _cleanup_(json_decrefp) json_t *forwards = json_object(), *remote = json_object(), *overrides = NULL;
        json_t *secrets = json_object_get(config, "secrets"), *entry;
        const char *key;
        size_t i;

        if (!forwards || !remote)
                return -ENOMEM;
        if (!config_is_offline(c))
                return 0;

        if (strv_has(c->secrets, "POSTGRES_URL")) {
                _cleanup_free_ char *host = NULL, *connect = NULL;
                const char *dsn = secret_store_get(s->manager->secrets, "POSTGRES_URL");
                uint16_t port;

                if (dsn && egress_url_authority(dsn, POSTGRES_DEFAULT_PORT, &host, &port) >= 0) {
                        if (asprintf(
                                    &connect,
                                    "%s%s:%u",
                                    SESSION_FORWARD_POSTGRES,
                                    EGRESS_FORWARD_SUFFIX,
                                    (unsigned) port) < 0 ||
                            json_object_set_new(
                                    forwards,
                                    SESSION_FORWARD_POSTGRES,
                                    json_pack("{s:s, s:s}", "secret", "POSTGRES_URL", "connect", connect)) <
                                    0)
                                return -ENOMEM;
                }
        }

        if (github_is_remote(c) && json_object_set_new(remote, "github", json_object()) < 0)
                return -ENOMEM;
        overrides = c->mcp_overrides ? json_loads(c->mcp_overrides, 0, NULL) : NULL;
        json_object_foreach (overrides, key, entry)
                if (override_is_remote(entry) && json_object_set_new(remote, key, json_object()) < 0)
                        return -ENOMEM;

        /* The held secrets are not in the container: ccdocker-init is not to look for them. */
        for (i = json_array_size(secrets); i > 0; i--)
                if (session_secret_held(c, json_string_value(json_array_get(secrets, i - 1))) &&
                    json_array_remove(secrets, i - 1) < 0)
                        return -ENOMEM;

        if (json_object_set(config, "forwards", forwards) < 0 ||
            json_object_set(config, "remote_mcp", remote) < 0)
                return -ENOMEM;
        return 0;
}

/* The configuration files of a session: template expansion with the session's variables, the choice
 * of MCP servers (only those whose executable is in the image), hooks whose scripts exist, the skills
 * the session asked for, and atomic writes that never follow a symlink planted in the workspace.
 * Everything written is a file ccdocker-init owns; nothing else in a host workspace is touched. */
#define _GNU_SOURCE
#include "init-config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "url-authority.h"
#include "util.h"

#define TEMPLATE_MAX (1024 * 1024)

#define _cleanup_json_ _cleanup_(json_decrefp)

/* Sets *ret_what to a new string and returns r (a negative errno). */
static int fail(int r, char **ret_what, const char *format, ...) __attribute__((format(printf, 3, 4)));

static int fail(int r, char **ret_what, const char *format, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, format);
        if (vasprintf(&s, format, ap) < 0)
                s = NULL;
        va_end(ap);
        free(*ret_what);
        *ret_what = s;
        return r;
}

static void warn(json_t *warnings, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void warn(json_t *warnings, const char *format, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r >= 0 && warnings)
                (void) json_array_append_new(warnings, json_string(s));
}

/* ---- variables and expansion ---- */

static int var_set(json_t *vars, const char *key, const char *value) {
        _cleanup_free_ char *name = strdup(key);

        if (!name)
                return -ENOMEM;
        for (char *p = name; *p; p++)
                *p = *p >= 'a' && *p <= 'z' ? (char) (*p - 'a' + 'A') : *p;
        return json_object_set_new(vars, name, json_string(value)) < 0 ? -ENOMEM : 0;
}

json_t *init_config_vars(const json_t *config) {
        _cleanup_json_ json_t *vars = json_object();
        const char *key;
        json_t *v;

        if (!vars)
                return NULL;

        json_object_foreach ((json_t *) config, key, v) {
                _cleanup_free_ char *text = NULL;
                bool ok = true;

                if (isempty(key))
                        continue;
                for (const char *p = key; *p; p++)
                        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                              (*p >= '0' && *p <= '9') || *p == '_'))
                                ok = false;
                if (!ok)
                        continue;

                if (json_is_string(v))
                        text = strdup(json_string_value(v));
                else if (json_is_integer(v))
                        (void) asprintf(&text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                else if (json_is_null(v))
                        text = strdup("");
                else if (json_is_boolean(v))
                        text = strdup(json_is_true(v) ? "true" : "false");
                else if (json_is_array(v)) {
                        size_t size = 0, i;
                        FILE *f = open_memstream(&text, &size);
                        bool first = true;
                        json_t *e;

                        if (!f)
                                return NULL;
                        json_array_foreach (v, i, e) {
                                if (!json_is_string(e))
                                        continue;
                                fprintf(f, "%s%s", first ? "" : ", ", json_string_value(e));
                                first = false;
                        }
                        if (fclose(f) != 0)
                                return NULL;
                } else
                        continue; /* objects and reals: no template needs them */
                if (!text || var_set(vars, key, text) < 0)
                        return NULL;
        }

        json_t *parent = json_object_get(config, "parent_id");
        const char *p = json_is_string(parent) ? json_string_value(parent) : "";
        if (var_set(vars, "parent_session_id", p) < 0 ||
            var_set(vars, "container_role", isempty(p) ? "root" : "child") < 0)
                return NULL;

        return TAKE_PTR(vars);
}

static bool name_start(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool name_char(char c) {
        return name_start(c) || (c >= '0' && c <= '9');
}

static void put_value(FILE *f, const char *value, bool json_escape) {
        _cleanup_free_ char *dumped = NULL;
        json_t *s;

        if (!json_escape) {
                fputs(value, f);
                return;
        }
        s = json_string(value);
        if (s)
                dumped = json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(s);
        if (dumped && strlen(dumped) >= 2) /* without the quotes */
                fwrite(dumped + 1, 1, strlen(dumped) - 2, f);
}

int init_template_expand(const char *text, const json_t *vars, bool json_escape, char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&out, &size);
        if (!f)
                return -ENOMEM;

        for (const char *p = text; *p;) {
                const char *name, *end, *def = NULL;
                size_t name_len;
                json_t *v;

                if (p[0] != '$' || p[1] != '{' || !name_start(p[2])) {
                        fputc(*p++, f);
                        continue;
                }
                name = p + 2;
                for (end = name; name_char(*end); end++)
                        ;
                name_len = (size_t) (end - name);
                if (end[0] == ':' && end[1] == '-') {
                        def = end + 2;
                        end = strchr(def, '}');
                } else if (*end != '}')
                        end = NULL;
                if (!end) { /* not a reference after all */
                        fputc(*p++, f);
                        continue;
                }

                _cleanup_free_ char *key = strndup(name, name_len);
                if (!key) {
                        fclose(f);
                        return -ENOMEM;
                }
                v = json_object_get(vars, key);
                if (!json_is_string(v))
                        fwrite(p, 1, (size_t) (end + 1 - p), f); /* for Claude Code to expand */
                else if (isempty(json_string_value(v)) && def)
                        fwrite(def, 1, (size_t) (end - def), f);
                else
                        put_value(f, json_string_value(v), json_escape);
                p = end + 1;
        }

        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(out);
        return 0;
}

bool init_executable_exists(const char *command) {
        _cleanup_free_ char *path = NULL;
        const char *dirs;
        struct stat st;

        if (isempty(command))
                return false;
        if (strchr(command, '/'))
                return command[0] == '/' && stat(command, &st) == 0 && S_ISREG(st.st_mode) &&
                        access(command, X_OK) == 0;

        dirs = getenv("PATH");
        if (isempty(dirs))
                dirs = "/usr/local/bin:/usr/bin:/bin";
        path = strdup(dirs);
        if (!path)
                return false;
        for (char *save = NULL, *d = strtok_r(path, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *full = NULL;

                if (d[0] != '/' || asprintf(&full, "%s/%s", d, command) < 0)
                        continue;
                if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
                        return true;
        }
        return false;
}

/* ---- files ---- */

static int read_text(const char *path, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t n = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        if (st.st_size > TEMPLATE_MAX)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t) st.st_size - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        if (strlen(buf) != n)
                return -EBADMSG; /* a NUL byte: not a text file */
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Opens root/rel as a directory, creating the missing parts with create, and never following a
 * symlink below root. */
static int open_dir(const char *root, const char *rel, bool create) {
        _cleanup_free_ char *copy = strdup(rel);
        _cleanup_close_ int fd = -EBADF;

        if (!copy)
                return -ENOMEM;
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (char *save = NULL, *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                int nfd;

                if (create && mkdirat(fd, c, 0755) < 0 && errno != EEXIST)
                        return -errno;
                nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return errno == ELOOP ? -ENOTDIR : -errno;
                safe_close(fd);
                fd = nfd;
        }
        return TAKE_FD(fd);
}

/* Replaces dirfd/name atomically (a temporary file, then rename(), which replaces a symlink rather
 * than writing through it). */
static int write_at(int dirfd, const char *name, const char *data, size_t len) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t n = 0;
        int r = 0;

        if (asprintf(&tmp, ".%s.ccdocker-tmp", name) < 0)
                return -ENOMEM;
        (void) unlinkat(dirfd, tmp, 0); /* left by an init that died here */
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        while (n < len) {
                ssize_t k = write(fd, data + n, len - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        break;
                }
                n += (size_t) k;
        }
        if (r >= 0 && fchmod(fd, 0644) < 0)
                r = -errno;
        if (r >= 0 && close(TAKE_FD(fd)) < 0)
                r = -errno;
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0)
                (void) unlinkat(dirfd, tmp, 0);
        return r;
}

/* Writes root/rel/name, creating root/rel. */
static int write_file(
        const char *root, const char *rel, const char *name, const char *data, char **ret_what) {
        _cleanup_close_ int dfd = -EBADF;
        int r;

        dfd = open_dir(root, rel, true);
        if (dfd < 0)
                return fail(dfd, ret_what, "creating %s/%s", root, rel);
        r = write_at(dfd, name, data, strlen(data));
        if (r < 0)
                return fail(r, ret_what, "writing %s/%s/%s", root, rel, name);
        return 0;
}

static int write_json(
        const char *root, const char *rel, const char *name, const json_t *j, char **ret_what) {
        _cleanup_free_ char *text = NULL, *line = NULL;

        text = json_dumps(j, JSON_INDENT(2));
        if (!text || asprintf(&line, "%s\n", text) < 0)
                return fail(-ENOMEM, ret_what, "formatting %s/%s", rel, name);
        return write_file(root, rel, name, line, ret_what);
}

/* Reads and expands templates/name. 0 and *ret NULL when the template does not exist: the file it
 * makes is left out with a warning. */
static int load_template(
        const InitPaths *paths,
        const char *name,
        const json_t *vars,
        bool json,
        json_t *warnings,
        char **ret,
        char **ret_what) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        int r;

        if (asprintf(&path, "%s/%s", paths->templates, name) < 0)
                return fail(-ENOMEM, ret_what, "reading templates");
        r = read_text(path, &text);
        if (r == -ENOENT) {
                warn(warnings, "template %s is missing: the file it makes is not written", path);
                *ret = NULL;
                return 0;
        }
        if (r < 0)
                return fail(r, ret_what, "reading %s", path);
        r = init_template_expand(text, vars, json, ret);
        if (r < 0)
                return fail(r, ret_what, "expanding %s", path);
        return 0;
}

static int load_json_template(
        const InitPaths *paths,
        const char *name,
        const json_t *vars,
        json_t *warnings,
        json_t **ret,
        char **ret_what) {
        _cleanup_free_ char *text = NULL;
        json_error_t err;
        json_t *j;
        int r;

        r = load_template(paths, name, vars, true, warnings, &text, ret_what);
        if (r < 0)
                return r;
        if (!text) {
                *ret = NULL;
                return 0;
        }
        j = json_loads(text, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_object(j)) {
                json_decref(j);
                return fail(
                        -EBADMSG,
                        ret_what,
                        "parsing %s/%s (after expansion), line %d: %s",
                        paths->templates,
                        name,
                        err.line,
                        j ? "not a JSON object" : err.text);
        }
        *ret = j;
        return 0;
}

/* ---- the parts of the session config ---- */

/* config[key] must be absent, null or an array of strings. */
static int config_strv(const json_t *config, const char *key, json_t **ret, char **ret_what) {
        json_t *v = json_object_get(config, key), *e;
        size_t i;

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return fail(
                        -EINVAL,
                        ret_what,
                        "reading the session config: '%s' must be an array of strings",
                        key);
        json_array_foreach (v, i, e)
                if (!json_is_string(e))
                        return fail(
                                -EINVAL,
                                ret_what,
                                "reading the session config: '%s' must be an array of strings",
                                key);
        *ret = v;
        return 0;
}

static bool strv_contains(const json_t *array, const char *s) {
        size_t i;
        json_t *e;

        json_array_foreach ((json_t *) array, i, e)
                if (json_is_string(e) && streq(json_string_value(e), s))
                        return true;
        return false;
}

static bool skill_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > 64 || name[0] == '-')
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return false;
        return true;
}

/* ---- .mcp.json ---- */

/* Why server (a .mcp.json entry) cannot run here, or NULL if it can. */
static const char *mcp_unusable(const json_t *server, char *buf, size_t size) {
        const char *type = json_string_value(json_object_get(server, "type"));
        const char *command = json_string_value(json_object_get(server, "command"));

        if (!json_is_object(server))
                return "its entry is not an object";
        if (type && (streq(type, "http") || streq(type, "sse")))
                return json_is_string(json_object_get(server, "url")) ? NULL : "it has no url";
        if (!command)
                return "it has no command";
        if (!init_executable_exists(command)) {
                snprintf(buf, size, "its command %s is not in the container", command);
                return buf;
        }
        return NULL;
}

static int mcp_add(json_t *servers, json_t *included, const char *name, const json_t *entry) {
        json_t *copy = json_deep_copy(entry);
        json_t *info;

        if (!copy)
                return -ENOMEM;
        info = json_pack("{s:s, s:O?}", "name", name, "description", json_object_get(copy, "description"));
        (void) json_object_del(copy, "description"); /* ours, not Claude Code's */
        if (!info || json_object_set_new(servers, name, copy) < 0 ||
            json_array_append_new(included, info) < 0)
                return -ENOMEM;
        return 0;
}

/* Builds .mcp.json from the template (SPEC.md 7.2: "mcpServers" and "conditionalServers"). wanted is
 * the session's "mcp_servers", or NULL for every server of the template. *ret_included lists
 * {name, description} of the servers written, in template order. */
/* The session's remote servers (config "remote_mcp", NAME: {"url": the loopback bridge's URL}, which
 * ccdocker-init fills in): each becomes an http entry on its bridge, replacing the url and dropping the
 * headers of a template or override entry of that name (the daemon adds the credential). */
static int mcp_apply_remote(json_t *servers, json_t *included, const json_t *remote, json_t *warnings) {
        const char *name;
        json_t *entry;

        json_object_foreach ((json_t *) remote, name, entry) {
                const char *url = json_string_value(json_object_get(entry, "url"));
                json_t *old = json_object_get(servers, name);
                _cleanup_json_ json_t *server = NULL;

                if (!url) {
                        warn(warnings,
                             "MCP server '%s' left out: there is no bridge to the daemon for it",
                             name);
                        if (old)
                                (void) json_object_del(servers, name);
                        continue;
                }
                server = old ? json_deep_copy(old) : json_object();
                if (!server || json_object_set_new(server, "type", json_string("http")) < 0 ||
                    json_object_set_new(server, "url", json_string(url)) < 0)
                        return -ENOMEM;
                (void) json_object_del(server, "headers");
                if (old) {
                        if (json_object_set(servers, name, server) < 0)
                                return -ENOMEM;
                } else if (mcp_add(servers, included, name, server) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int mcp_build(
        const json_t *tmpl,
        const json_t *wanted,
        const json_t *overrides,
        const json_t *remote,
        json_t *warnings,
        json_t **ret_mcp,
        json_t **ret_included) {
        _cleanup_json_ json_t *mcp = NULL, *included = json_array();
        json_t *servers = json_object(), *plain, *cond, *entry, *w;
        const char *name, *why;
        char buf[PATH_MAX + 64];
        size_t i;

        mcp = json_pack("{s:o}", "mcpServers", servers);
        if (!mcp || !included || !servers)
                return -ENOMEM;

        plain = json_object_get(tmpl, "mcpServers");
        cond = json_object_get(tmpl, "conditionalServers");

        json_object_foreach (plain, name, entry) {
                if (wanted && !strv_contains(wanted, name))
                        continue;
                why = mcp_unusable(entry, buf, sizeof(buf));
                if (why) {
                        warn(warnings, "MCP server '%s' left out: %s", name, why);
                        continue;
                }
                if (mcp_add(servers, included, name, entry) < 0)
                        return -ENOMEM;
        }

        json_object_foreach (cond, name, entry) {
                const char *condition = json_string_value(json_object_get(entry, "condition"));
                const char *var = condition ? startswith(condition, "env:") : NULL;
                json_t *server = json_object_get(entry, "config");

                if (wanted && !strv_contains(wanted, name))
                        continue;
                if (json_object_get(servers, name))
                        continue; /* a plain entry of the same name won */
                if (json_object_get(remote, name))
                        continue; /* the daemon's: its credential stays there (mcp_apply_remote()) */
                if (!var || !json_is_object(server)) {
                        warn(warnings,
                             "MCP server '%s' left out: its template entry has no env: condition or config",
                             name);
                        continue;
                }
                if (isempty(getenv(var))) {
                        if (wanted) /* asked for by name: say why it is not there */
                                warn(warnings, "MCP server '%s' left out: %s is not set", name, var);
                        continue;
                }
                why = mcp_unusable(server, buf, sizeof(buf));
                if (why) {
                        warn(warnings, "MCP server '%s' left out: %s", name, why);
                        continue;
                }
                if (mcp_add(servers, included, name, server) < 0)
                        return -ENOMEM;
        }

        json_array_foreach ((json_t *) wanted, i, w) {
                name = json_string_value(w);
                if (!json_object_get(plain, name) && !json_object_get(cond, name) &&
                    !json_object_get(overrides, name))
                        warn(warnings,
                             "MCP server '%s' left out: the template mcp.json.tmpl does not know it",
                             name);
        }

        /* SPEC.md 8.3: an override's keys replace those of the server of that name (which it may add:
         * a server the template does not have). The result must still be usable here. */
        json_object_foreach ((json_t *) overrides, name, entry) {
                _cleanup_json_ json_t *merged = NULL;
                json_t *old = json_object_get(servers, name);

                if (!json_is_object(entry)) {
                        warn(warnings, "MCP override '%s' left out: it is not an object", name);
                        continue;
                }
                merged = old ? json_deep_copy(old) : json_object();
                if (!merged || json_object_update(merged, entry) < 0)
                        return -ENOMEM;
                why = mcp_unusable(merged, buf, sizeof(buf));
                if (why) {
                        warn(warnings, "MCP override '%s' left out: %s", name, why);
                        continue;
                }
                if (old) {
                        if (json_object_set(servers, name, merged) < 0)
                                return -ENOMEM;
                } else if (mcp_add(servers, included, name, merged) < 0)
                        return -ENOMEM;
        }
        if (mcp_apply_remote(servers, included, remote, warnings) < 0)
                return -ENOMEM;

        *ret_mcp = TAKE_PTR(mcp);
        *ret_included = TAKE_PTR(included);
        return 0;
}

/* ---- skills ---- */

/* The first line of the "description:" of a SKILL.md front matter (a block scalar's first line), or
 * NULL. */
static char *skill_description(const char *text) {
        const char *p = startswith(text, "---\n");

        while (p && *p && !startswith(p, "---")) {
                const char *eol = strchrnul(p, '\n'), *v = startswith(p, "description:");

                if (v) {
                        while (*v == ' ' || *v == '\t')
                                v++;
                        if (*v == '|' || *v == '>' || v == eol) { /* block scalar: the next line */
                                v = *eol ? eol + 1 : eol;
                                eol = strchrnul(v, '\n');
                                while (*v == ' ' || *v == '\t')
                                        v++;
                        }
                        while (eol > v && (eol[-1] == ' ' || eol[-1] == '\r'))
                                eol--;
                        return eol > v ? strndup(v, (size_t) (eol - v)) : NULL;
                }
                p = *eol ? eol + 1 : eol;
        }
        return NULL;
}

/* Copies skills/<name>/SKILL.md into the workspace for each skill asked for. *ret_installed lists
 * {name, description} of those copied. */
static int skills_install(
        const InitPaths *paths,
        const json_t *wanted,
        json_t *warnings,
        json_t **ret_installed,
        char **ret_what) {
        _cleanup_json_ json_t *installed = json_array();
        size_t i;
        json_t *w;
        int r;

        if (!installed)
                return fail(-ENOMEM, ret_what, "installing skills");

        json_array_foreach ((json_t *) wanted, i, w) {
                _cleanup_free_ char *src = NULL, *text = NULL, *rel = NULL, *desc = NULL;
                const char *name = json_string_value(w);

                if (!skill_name_valid(name)) {
                        warn(warnings,
                             "skill '%s' left out: a skill name is lowercase letters, digits and '-'",
                             name);
                        continue;
                }
                if (asprintf(&src, "%s/%s/SKILL.md", paths->skills, name) < 0 ||
                    asprintf(&rel, ".claude/skills/%s", name) < 0)
                        return fail(-ENOMEM, ret_what, "installing skills");
                r = read_text(src, &text);
                if (r == -ENOENT) {
                        warn(warnings, "skill '%s' left out: %s does not exist", name, src);
                        continue;
                }
                if (r < 0)
                        return fail(r, ret_what, "reading %s", src);
                r = write_file(paths->workspace, rel, "SKILL.md", text, ret_what);
                if (r < 0)
                        return r;
                desc = skill_description(text);
                if (json_array_append_new(
                            installed, json_pack("{s:s, s:s?}", "name", name, "description", desc)) < 0)
                        return fail(-ENOMEM, ret_what, "installing skills");
        }

        *ret_installed = TAKE_PTR(installed);
        return 0;
}

/* ---- settings ---- */

/* Drops the command hooks whose script (the first word of the command, if an absolute path) is not
 * an executable file, and what becomes empty by that. */
static void hooks_filter(json_t *settings, json_t *warnings) {
        json_t *hooks = json_object_get(settings, "hooks"), *matchers;
        const char *event;
        void *tmp;

        if (!json_is_object(hooks))
                return;

        json_object_foreach_safe (hooks, tmp, event, matchers) {
                for (size_t i = json_array_size(matchers); i-- > 0;) {
                        json_t *list = json_object_get(json_array_get(matchers, i), "hooks");

                        for (size_t k = json_array_size(list); k-- > 0;) {
                                json_t *h = json_array_get(list, k);
                                const char *command = json_string_value(json_object_get(h, "command"));
                                _cleanup_free_ char *script = NULL;

                                if (!command || command[0] != '/')
                                        continue;
                                script = strndup(command, strcspn(command, " \t"));
                                if (!script || init_executable_exists(script))
                                        continue;
                                warn(warnings,
                                     "%s hook %s left out: the script is not in the container",
                                     event,
                                     script);
                                (void) json_array_remove(list, k);
                        }
                        if (json_is_array(list) && json_array_size(list) == 0)
                                (void) json_array_remove(matchers, i);
                }
                if (json_is_array(matchers) && json_array_size(matchers) == 0)
                        (void) json_object_del(hooks, event);
        }
        if (json_object_size(hooks) == 0)
                (void) json_object_del(settings, "hooks");
}

/* Appends each of tools to settings.permissions.allow that is not there yet. */
static int allow_tools(json_t *settings, const json_t *tools) {
        json_t *perms = json_object_get(settings, "permissions"), *allow, *t;
        size_t i;

        if (json_array_size(tools) == 0)
                return 0;
        if (!json_is_object(perms)) {
                perms = json_object();
                if (!perms || json_object_set_new(settings, "permissions", perms) < 0)
                        return -ENOMEM;
        }
        allow = json_object_get(perms, "allow");
        if (!json_is_array(allow)) {
                allow = json_array();
                if (!allow || json_object_set_new(perms, "allow", allow) < 0)
                        return -ENOMEM;
        }
        json_array_foreach ((json_t *) tools, i, t)
                if (!strv_contains(allow, json_string_value(t)) && json_array_append(allow, t) < 0)
                        return -ENOMEM;
        return 0;
}

/* Outside bypassPermissions a tool call that needs approval goes to a person (ccdocker-init's
 * --permission-prompt-tool): the template's blanket approvals (Bash, Write, ...) would skip that
 * person, so only cc-docker's own tools stay approved, with what the session's allowed_tools names. */
static int allow_only_cc_docker(json_t *settings, const json_t *config) {
        const char *mode = json_string_value(json_object_get(config, "permission_mode"));
        json_t *allow = json_object_get(json_object_get(settings, "permissions"), "allow");
        size_t i = 0;

        if (streq_ptr(mode, "bypassPermissions") || !json_is_array(allow))
                return 0;
        while (i < json_array_size(allow)) {
                const char *t = json_string_value(json_array_get(allow, i));

                if (t && startswith(t, "mcp__cc-docker__"))
                        i++;
                else if (json_array_remove(allow, i) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* ~/.claude.json: onboarding done and the workspace trusted, or a headless CLI ignores the project's
 * settings (docs/scripted-model.md). Whatever else a persistent home holds there is kept. */
static int claude_state_write(const InitPaths *paths, char **ret_what) {
        _cleanup_json_ json_t *state = NULL;
        _cleanup_free_ char *path = NULL;
        json_t *projects, *project;

        if (asprintf(&path, "%s/.claude.json", paths->home) < 0)
                return fail(-ENOMEM, ret_what, "writing ~/.claude.json");
        state = json_load_file(path, 0, NULL);
        if (!json_is_object(state)) {
                json_decref(state);
                state = json_object();
        }
        projects = json_object_get(state, "projects");
        if (!json_is_object(projects)) {
                projects = json_object();
                if (json_object_set_new(state, "projects", projects) < 0)
                        return fail(-ENOMEM, ret_what, "writing %s", path);
        }
        project = json_object_get(projects, paths->workspace);
        if (!json_is_object(project)) {
                project = json_object();
                if (json_object_set_new(projects, paths->workspace, project) < 0)
                        return fail(-ENOMEM, ret_what, "writing %s", path);
        }
        if (json_object_set_new(state, "hasCompletedOnboarding", json_true()) < 0 ||
            json_object_set_new(project, "hasTrustDialogAccepted", json_true()) < 0)
                return fail(-ENOMEM, ret_what, "writing %s", path);
        return write_json(paths->home, "", ".claude.json", state, ret_what);
}

/* A markdown list of {name, description}, "- **<prefix><name>**: description" per line. */
static char *md_list(const json_t *items, const char *prefix) {
        _cleanup_free_ char *out = NULL;
        size_t size = 0, i;
        json_t *it;
        FILE *f;

        f = open_memstream(&out, &size);
        if (!f)
                return NULL;
        json_array_foreach ((json_t *) items, i, it) {
                const char *d = json_string_value(json_object_get(it, "description"));

                fprintf(f,
                        "%s- **%s%s**",
                        i > 0 ? "\n" : "",
                        prefix,
                        json_string_value(json_object_get(it, "name")));
                if (!isempty(d))
                        fprintf(f, ": %s", d);
        }
        if (json_array_size(items) == 0)
                fputs("- (none)", f);
        if (fclose(f) != 0)
                return NULL;
        return TAKE_PTR(out);
}

int init_config_write(const InitPaths *paths, const json_t *config, json_t *warnings, char **ret_what) {
        _cleanup_json_ json_t *vars = NULL, *mcp_tmpl = NULL, *mcp = NULL, *servers = NULL, *skills = NULL,
                              *user = NULL, *project = NULL, *names = NULL;
        _cleanup_free_ char *claude_md = NULL, *servers_md = NULL, *skills_md = NULL;
        json_t *wanted_mcp, *wanted_skills, *allowed, *it;
        size_t i;
        int r;

        if (!json_is_object(config))
                return fail(-EINVAL, ret_what, "reading the session config: not a JSON object");
        r = config_strv(config, "mcp_servers", &wanted_mcp, ret_what);
        if (r < 0)
                return r;
        r = config_strv(config, "skills", &wanted_skills, ret_what);
        if (r < 0)
                return r;
        r = config_strv(config, "allowed_tools", &allowed, ret_what);
        if (r < 0)
                return r;

        vars = init_config_vars(config);
        if (!vars)
                return fail(-ENOMEM, ret_what, "reading the session config");

        /* /workspace/.mcp.json */
        r = load_json_template(paths, "mcp.json.tmpl", vars, warnings, &mcp_tmpl, ret_what);
        if (r < 0)
                return r;
        if (mcp_tmpl) {
                r = mcp_build(
                        mcp_tmpl,
                        wanted_mcp,
                        json_object_get(config, "mcp_overrides"),
                        json_object_get(config, "remote_mcp"),
                        warnings,
                        &mcp,
                        &servers);
                if (r < 0)
                        return fail(r, ret_what, "building .mcp.json");
                r = write_json(paths->workspace, "", ".mcp.json", mcp, ret_what);
                if (r < 0)
                        return r;
        } else if (!(servers = json_array()))
                return fail(-ENOMEM, ret_what, "building .mcp.json");

        /* /workspace/.claude/skills/<name>/SKILL.md */
        r = skills_install(paths, wanted_skills, warnings, &skills, ret_what);
        if (r < 0)
                return r;

        /* /workspace/.claude/CLAUDE.md, with the lists of what was installed */
        servers_md = md_list(servers, "");
        skills_md = md_list(skills, "/");
        if (!servers_md || !skills_md ||
            json_object_set_new(vars, "MCP_SERVERS", json_string(servers_md)) < 0 ||
            json_object_set_new(vars, "SKILLS", json_string(skills_md)) < 0)
                return fail(-ENOMEM, ret_what, "building CLAUDE.md");
        r = load_template(paths, "CLAUDE.md.tmpl", vars, false, warnings, &claude_md, ret_what);
        if (r < 0)
                return r;
        if (claude_md) {
                r = write_file(paths->workspace, ".claude", "CLAUDE.md", claude_md, ret_what);
                if (r < 0)
                        return r;
        }

        /* /workspace/.claude/settings.json: the servers written above approved */
        r = load_json_template(paths, "project-settings.json.tmpl", vars, warnings, &project, ret_what);
        if (r < 0)
                return r;
        if (project) {
                names = json_array();
                if (!names)
                        return fail(-ENOMEM, ret_what, "building .claude/settings.json");
                json_array_foreach (servers, i, it)
                        if (json_array_append(names, json_object_get(it, "name")) < 0)
                                return fail(-ENOMEM, ret_what, "building .claude/settings.json");
                if (json_object_set(project, "enabledMcpjsonServers", names) < 0)
                        return fail(-ENOMEM, ret_what, "building .claude/settings.json");
                r = write_json(paths->workspace, ".claude", "settings.json", project, ret_what);
                if (r < 0)
                        return r;
        }

        /* ~/.claude/settings.json */
        r = load_json_template(paths, "settings.json.tmpl", vars, warnings, &user, ret_what);
        if (r < 0)
                return r;
        if (user) {
                hooks_filter(user, warnings);
                if (allow_only_cc_docker(user, config) < 0 || allow_tools(user, allowed) < 0)
                        return fail(-ENOMEM, ret_what, "building ~/.claude/settings.json");
                r = write_json(paths->home, ".claude", "settings.json", user, ret_what);
                if (r < 0)
                        return r;
        }

        /* ~/.claude.json */
        return claude_state_write(paths, ret_what);
}

/* ---- secrets ---- */

int init_secrets_load(const json_t *config, const char *dir, json_t *warnings) {
        json_t *names = json_object_get(config, "secrets"), *v;
        size_t i;
        int n = 0;

        json_array_foreach (names, i, v) {
                const char *name = json_string_value(v);
                _cleanup_free_ char *path = NULL, *value = NULL;
                _cleanup_fclose_ FILE *f = NULL;
                size_t len = 0;
                ssize_t k;

                if (!name || !*name || strchr(name, '/') || strchr(name, '=') || name[0] == '.') {
                        warn(warnings, "secret #%zu left out: not a valid name", i);
                        continue;
                }
                if (asprintf(&path, "%s/%s", dir, name) < 0)
                        return -ENOMEM;
                f = fopen(path, "re");
                if (!f) {
                        warn(warnings, "secret %s left out: %s: %s", name, path, strerror(errno));
                        continue;
                }
                k = getdelim(&value, &len, '\0', f);
                if (k < 0) {
                        value = mfree(value);
                        value = strdup("");
                        if (!value)
                                return -ENOMEM;
                        k = 0;
                }
                if (k > 0 && value[k - 1] == '\n')
                        value[--k] = '\0';
                if (setenv(name, value, 1) < 0)
                        return -errno;
                explicit_bzero(value, (size_t) k);
                n++;
        }
        return n;
}

/* ---- forwards ---- */

int init_url_with_authority(const char *url, const char *host, unsigned port, char **ret) {
        const char *start, *end;
        char *out;

        if (isempty(host) || port == 0 || port > 65535 || url_authority(url, &start, &end) < 0)
                return -EINVAL;
        if (asprintf(&out, "%.*s%s:%u%s", (int) (start - url), url, host, port, end) < 0)
                return -ENOMEM;
        *ret = out;
        return 0;
}

int init_forward_env(const char *name, unsigned port, json_t *warnings) {
        _cleanup_free_ char *url = NULL;
        const char *value = name ? getenv(name) : NULL;
        int r;

        if (isempty(value)) {
                warn(warnings, "forward for %s left out: %s is not set", strempty(name), strempty(name));
                return 0;
        }
        r = init_url_with_authority(value, "127.0.0.1", port, &url);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                warn(warnings, "forward for %s left out: its URL has no host:port to replace", name);
                return 0;
        }
        if (setenv(name, url, 1) < 0)
                return -errno;
        explicit_bzero(url, strlen(url));
        return 1;
}

/* Validation at the edge (STYLE.md 7): CreateSession's a{sv} is read here, key by key, each value's
 * variant type checked before it is read, and every value checked against the daemon's ceilings and
 * policy (workspace roots, host network) before anything is created. A refusal is a D-Bus error that
 * names the field, what it must be and what it got. The SessionConfig itself, its JSON form and what a
 * child inherits are session-config.c. */
#define _GNU_SOURCE
#include "validate.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "curl-glue.h"
#include "egress-proxy.h"
#include "log.h"
#include "util.h"
#include "workspace.h"

/* podman refuses memory limits below 6M ("minimum memory limit allowed is 6MB"); say so at the edge. */
#define SESSION_MEMORY_MIN (UINT64_C(6) << 20)
#define SESSION_ENV_MAX 64
#define SESSION_ENV_ENTRY_MAX 4096 /* bytes of "NAME=value" */
#define SESSION_TASK_TYPE_MAX 64
#define SESSION_IMAGE_MAX 512
/* The longest value echoed back in an error message; longer ones are cut and end in "...". */
#define ECHO_MAX 64

/* Caller-supplied text as it is put into an error message: control characters replaced by '?', and cut
 * at ECHO_MAX bytes, so that a refusal can be logged and printed safely whatever was sent. */
static const char *echo(const char *s, char buf[static ECHO_MAX + 4]) {
        size_t i;

        for (i = 0; s[i] && i < ECHO_MAX; i++)
                buf[i] = (unsigned char) s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}

static int refuse(sd_bus_error *error, const char *name, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

static int refuse(sd_bus_error *error, const char *name, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) sd_bus_error_setfv(error, name, format, ap);
        va_end(ap);
        return -EINVAL;
}

static int refuse_read(sd_bus_error *error, const char *field, int r) {
        if (r == -ENOMEM)
                return r;
        if (field)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field '%s' could not be read: %s",
                        field,
                        strerror(-r));
        return refuse(
                error,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: the configuration must be of type a{sv}: %s",
                strerror(-r));
}

/* ---- the fields ---- */

enum {
        FIELD_WORKSPACE,
        FIELD_IMAGE,
        FIELD_MEMORY,
        FIELD_CPUS,
        FIELD_TASKS,
        FIELD_TIMEOUT,
        FIELD_TASK_TYPE,
        FIELD_ENVIRONMENT,
        FIELD_NETWORK,
        FIELD_PROMPT,
        FIELD_SECRETS,
        FIELD_ALLOWED_HOSTS,
        FIELD_MCP_SERVERS,
        FIELD_SKILLS,
        FIELD_PERMISSION_MODE,
        FIELD_ALLOWED_TOOLS,
        FIELD_MCP_OVERRIDES,
        FIELD_BUDGET_USD,
        FIELD_BUDGET_TOKENS,
        _FIELD_MAX,
};

static const struct {
        const char *name;
        const char *types[2]; /* the variant signatures accepted, NULL-padded */
} fields[_FIELD_MAX] = {
        /* clang-format off */
        [FIELD_WORKSPACE]       = { "workspace",       { "s" } },
        [FIELD_IMAGE]           = { "image",           { "s" } },
        [FIELD_MEMORY]          = { "memory",          { "s", "t" } },
        [FIELD_CPUS]            = { "cpus",            { "s", "d" } },
        [FIELD_TASKS]           = { "tasks",           { "u", "t" } },
        [FIELD_TIMEOUT]         = { "timeout_seconds", { "u", "t" } },
        [FIELD_TASK_TYPE]       = { "task_type",       { "s" } },
        [FIELD_ENVIRONMENT]     = { "environment",     { "a{ss}" } },
        [FIELD_NETWORK]         = { "network",         { "s" } },
        [FIELD_PROMPT]          = { "prompt",          { "s" } },
        [FIELD_SECRETS]         = { "secrets",         { "as" } },
        [FIELD_ALLOWED_HOSTS]   = { "allowed_hosts",   { "as" } },
        [FIELD_MCP_SERVERS]     = { "mcp_servers",     { "as" } },
        [FIELD_SKILLS]          = { "skills",          { "as" } },
        [FIELD_PERMISSION_MODE] = { "permission_mode", { "s" } },
        [FIELD_ALLOWED_TOOLS]   = { "allowed_tools",   { "as" } },
        [FIELD_MCP_OVERRIDES]   = { "mcp_overrides",   { "s" } },
        [FIELD_BUDGET_USD]      = { "budget_usd",      { "d" } },
        [FIELD_BUDGET_TOKENS]   = { "budget_tokens",   { "t", "u" } },
        /* clang-format on */
};

static bool path_has_dotdot(const char *p) {
        for (const char *c = p; *c;) {
                size_t len;

                c += strspn(c, "/");
                len = strcspn(c, "/");
                if (len == 2 && c[0] == '.' && c[1] == '.')
                        return true;
                c += len;
        }
        return false;
}

/* Drops "." components, repeated and trailing slashes; p is absolute and has no "..". */
static char *path_normalize(const char *p) {
        char *s, *o;

        s = o = malloc(strlen(p) + 2);
        if (!s)
                return NULL;

        for (const char *c = p; *c;) {
                size_t len;

                c += strspn(c, "/");
                len = strcspn(c, "/");
                if (len == 0 || (len == 1 && c[0] == '.')) {
                        c += len;
                        continue;
                }
                *o++ = '/';
                memcpy(o, c, len);
                o += len;
                c += len;
        }
        if (o == s)
                *o++ = '/';
        *o = '\0';
        return s;
}

/* Is path below one of the roots, either as configured or as it resolves (a root may itself be a
 * symlink, like /home on some distributions)? */
static int path_is_below_a_root(const char *path, char **roots) {
        for (char **i = roots; i && *i; i++) {
                _cleanup_free_ char *real = NULL, *norm = NULL;

                norm = path_normalize(*i);
                if (!norm)
                        return -ENOMEM;
                if (path_is_below(path, norm))
                        return true;

                real = realpath(*i, NULL);
                if (!real) {
                        if (errno == ENOMEM)
                                return -ENOMEM;
                        continue; /* a root that does not exist holds nothing */
                }
                if (path_is_below(path, real))
                        return true;
        }
        return false;
}

static int check_host_workspace(const char *value, const DaemonConfig *dc, char **ret, sd_bus_error *error) {
        _cleanup_free_ char *norm = NULL;
        char e[ECHO_MAX + 4];
        int r;

        if (value[0] != '/' || strlen(value) >= PATH_MAX)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'workspace' must be \"ephemeral\" or an absolute path, got '%s'",
                        echo(value, e));
        if (path_has_dotdot(value))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'workspace' must be a path without \"..\", got '%s'",
                        echo(value, e));
        if (!dc->workspace_roots || !dc->workspace_roots[0])
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'workspace' must be \"ephemeral\": no host workspace roots are configured (WorkspaceRoots=), got '%s'",
                        echo(value, e));

        /* Lexically first, so that a caller cannot learn through the errors below what exists outside
         * the roots (the system daemon resolves paths as root). */
        norm = path_normalize(value);
        if (!norm)
                return -ENOMEM;
        r = path_is_below_a_root(norm, dc->workspace_roots);
        if (r < 0)
                return r;
        if (r == 0)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'workspace' must lie below a configured workspace root, got '%s'",
                        echo(value, e));

        /* What the path is on disk is checked later, as the caller (workspace.c), once the caller is
         * authorised: here nothing is looked at, so no error tells anyone what exists. */
        *ret = TAKE_PTR(norm);
        return 0;
}

static int read_workspace(sd_bus_message *m, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "workspace", r);

        if (streq(s, "ephemeral")) {
                c->workspace_type = WORKSPACE_EPHEMERAL;
                c->workspace_path = mfree(c->workspace_path);
                return 0;
        }

        r = check_host_workspace(s, dc, &c->workspace_path, error);
        if (r < 0)
                return r;
        c->workspace_type = WORKSPACE_HOST;
        return 0;
}

static int read_image(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        char e[ECHO_MAX + 4];
        const char *s;
        char *copy;
        bool bad;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "image", r);

        bad = isempty(s) || s[0] == '-' || strlen(s) > SESSION_IMAGE_MAX;
        for (const char *p = s; !bad && *p; p++)
                bad = (unsigned char) *p <= ' ' || *p == 0x7f;
        if (bad)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'image' must be an image reference without spaces like localhost/ccdocker-session:latest, got '%s'",
                        echo(s, e));

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(c->image);
        c->image = copy;
        return 0;
}

static int read_memory(
        sd_bus_message *m, const char *type, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        char got[CONFIG_FORMAT_MAX + ECHO_MAX + 4], b[CONFIG_FORMAT_MAX];
        uint64_t v;
        int r;

        if (streq(type, "t")) {
                r = sd_bus_message_read_basic(m, 't', &v);
                if (r < 0)
                        return refuse_read(error, "memory", r);
                snprintf(got, sizeof got, "%" PRIu64, v);
        } else {
                const char *s;

                r = sd_bus_message_read_basic(m, 's', &s);
                if (r < 0)
                        return refuse_read(error, "memory", r);
                echo(s, got);
                r = parse_size(s, &v);
                if (r == -ERANGE)
                        v = UINT64_MAX; /* well-formed, and certainly over the ceiling */
                else if (r < 0)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'memory' must be a size like 2G or 512M, got '%s'",
                                got);
        }

        if (v < SESSION_MEMORY_MIN)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'memory' must be at least %s, got '%s'",
                        config_format_size(SESSION_MEMORY_MIN, b),
                        got);
        if (v > dc->max_memory)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'memory' must be at most %s, got '%s'",
                        config_format_size(dc->max_memory, b),
                        got);

        c->memory = v;
        return 0;
}

static int read_cpus(
        sd_bus_message *m, const char *type, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        char got[CONFIG_FORMAT_MAX + ECHO_MAX + 4], b[CONFIG_FORMAT_MAX];
        uint64_t v;
        int r;

        if (streq(type, "d")) {
                double d;

                r = sd_bus_message_read_basic(m, 'd', &d);
                if (r < 0)
                        return refuse_read(error, "cpus", r);
                snprintf(got, sizeof got, "%g", d);
                if (!isfinite(d) || d < 0)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'cpus' must be a number of CPUs like 2 or 1.5, got '%s'",
                                got);
                /* Anything this large is over every ceiling; avoid the undefined conversion. Rounded
                 * by hand: libm is not linked for one call. */
                v = d * 1000 >= 0x1p63 ? UINT64_MAX : (uint64_t) (d * 1000 + 0.5);
        } else {
                const char *s;

                r = sd_bus_message_read_basic(m, 's', &s);
                if (r < 0)
                        return refuse_read(error, "cpus", r);
                echo(s, got);
                r = config_parse_cpus(s, &v);
                if (r == -ERANGE)
                        v = UINT64_MAX;
                else if (r < 0)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'cpus' must be a number of CPUs like 2 or 1.5, got '%s'",
                                got);
        }

        if (v == 0)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'cpus' must be at least 0.001, got '%s'",
                        got);
        if (v > dc->max_cpu_millis)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'cpus' must be at most %s, got '%s'",
                        config_format_cpus(dc->max_cpu_millis, b),
                        got);

        c->cpu_millis = v;
        return 0;
}

/* u or t, as a uint64_t. */
static int read_unsigned(
        sd_bus_message *m, const char *type, const char *field, uint64_t *ret, sd_bus_error *error) {
        int r;

        if (streq(type, "u")) {
                uint32_t u;

                r = sd_bus_message_read_basic(m, 'u', &u);
                if (r < 0)
                        return refuse_read(error, field, r);
                *ret = u;
                return 0;
        }

        r = sd_bus_message_read_basic(m, 't', ret);
        if (r < 0)
                return refuse_read(error, field, r);
        return 0;
}

static int read_tasks(
        sd_bus_message *m, const char *type, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        uint64_t v;
        int r;

        r = read_unsigned(m, type, "tasks", &v, error);
        if (r < 0)
                return r;

        if (v == 0)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'tasks' must be at least 1, got '0'");
        if (v > dc->max_tasks)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'tasks' must be at most %" PRIu64 ", got '%" PRIu64 "'",
                        dc->max_tasks,
                        v);

        c->tasks = v;
        return 0;
}

static int read_timeout(
        sd_bus_message *m, const char *type, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        uint64_t v;
        int r;

        r = read_unsigned(m, type, "timeout_seconds", &v, error);
        if (r < 0)
                return r;

        /* 0 asks for no limit, which only a daemon without a ceiling grants. */
        if (dc->max_timeout_sec > 0 && (v == 0 || v > dc->max_timeout_sec))
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'timeout_seconds' must be at most %" PRIu64 "%s, got '%" PRIu64
                        "'",
                        dc->max_timeout_sec,
                        v == 0 ? " (0, no limit, is not allowed)" : "",
                        v);
        if (v > UINT64_MAX / 1000000 - 1)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'timeout_seconds' must be at most %" PRIu64 ", got '%" PRIu64
                        "'",
                        UINT64_MAX / 1000000 - 1,
                        v);

        c->timeout_sec = v;
        return 0;
}

static int read_task_type(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        char e[ECHO_MAX + 4];
        const char *s;
        char *copy = NULL;
        bool bad;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "task_type", r);

        bad = strlen(s) > SESSION_TASK_TYPE_MAX;
        for (const char *p = s; !bad && *p; p++)
                bad = *p < 0x20 || *p > 0x7e;
        if (bad)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'task_type' must be at most %d printable ASCII characters, got '%s'",
                        SESSION_TASK_TYPE_MAX,
                        echo(s, e));

        if (!isempty(s)) {
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
        }
        free(c->task_type);
        c->task_type = copy;
        return 0;
}

static int read_environment(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        _cleanup_(strv_freep) char **env = NULL;
        char e[ECHO_MAX + 4];
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{ss}");
        if (r < 0)
                return refuse_read(error, "environment", r);

        for (;;) {
                const char *name, *value;
                size_t len;
                char *entry, **ne;

                r = sd_bus_message_read(m, "{ss}", &name, &value);
                if (r < 0)
                        return refuse_read(error, "environment", r);
                if (r == 0)
                        break;

                if (n >= SESSION_ENV_MAX) {
                        size_t total = n + 1;

                        while ((r = sd_bus_message_skip(m, "{ss}")) > 0)
                                total++;
                        if (r < 0)
                                return refuse_read(error, "environment", r);
                        return refuse(
                                error,
                                CCDOCKER_ERROR_LIMIT,
                                "CreateSession: field 'environment' must have at most %d entries, got '%zu'",
                                SESSION_ENV_MAX,
                                total);
                }

                if (!env_name_is_valid(name))
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'environment' names must match [A-Za-z_][A-Za-z0-9_]*, got '%s'",
                                echo(name, e));

                len = strlen(name);
                for (size_t i = 0; i < n; i++)
                        if (strncmp(env[i], name, len) == 0 && env[i][len] == '=')
                                return refuse(
                                        error,
                                        CCDOCKER_ERROR_INVALID_CONFIG,
                                        "CreateSession: field 'environment' names must be unique, got '%s' twice",
                                        echo(name, e));

                /* D-Bus strings cannot hold NUL; the length is what counts here. */
                if (len + 1 + strlen(value) > SESSION_ENV_ENTRY_MAX)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_LIMIT,
                                "CreateSession: field 'environment' entries must be at most %d bytes as NAME=value, got '%zu' for '%s'",
                                SESSION_ENV_ENTRY_MAX,
                                len + 1 + strlen(value),
                                echo(name, e));

                if (asprintf(&entry, "%s=%s", name, value) < 0)
                        return -ENOMEM;
                ne = reallocarray(env, n + 2, sizeof(char *));
                if (!ne) {
                        free(entry);
                        return -ENOMEM;
                }
                env = ne;
                env[n++] = entry;
                env[n] = NULL;
        }

        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return refuse_read(error, "environment", r);

        strv_free(c->environment);
        c->environment = TAKE_PTR(env);
        return 0;
}

static int read_network(sd_bus_message *m, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        char e[ECHO_MAX + 4];
        const char *s;
        char *copy;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "network", r);

        if (!streq(s, "none") && !streq(s, "host"))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'network' must be \"none\" or \"host\", got '%s'",
                        echo(s, e));
        if (streq(s, "host") && !dc->allow_host_network)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'network' may be \"host\" only where the daemon is configured with AllowHostNetwork=yes, got 'host'");

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(c->network);
        c->network = copy;
        return 0;
}

int validate_prompt(const DaemonConfig *dc, const char *method, const char *prompt, CoreError *e) {
        size_t len = strlen(prompt);

        if (len == 0)
                return core_error(e, -EINVAL, CORE_ERROR_INVALID_PROMPT, "%s: the prompt is empty", method);
        if (len > dc->max_prompt_bytes)
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_PROMPT,
                        "%s: the prompt is %zu bytes, more than MaxPromptBytes (%" PRIu64 ")",
                        method,
                        len,
                        dc->max_prompt_bytes);
        for (char **p = dc->prompt_deny_patterns; p && *p; p++) {
                regex_t re;
                int m;

                if (regcomp(&re, *p, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0)
                        continue; /* config.c checked them */
                m = regexec(&re, prompt, 0, NULL, 0);
                regfree(&re);
                if (m == 0)
                        return core_error(
                                e,
                                -EINVAL,
                                CORE_ERROR_INVALID_PROMPT,
                                "%s: the prompt matches the refused pattern '%s' (PromptDenyPatterns)",
                                method,
                                *p);
        }
        return 0;
}

static int read_prompt(sd_bus_message *m, const DaemonConfig *dc, SessionConfig *c, sd_bus_error *error) {
        CoreError e;
        const char *s;
        char *copy;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "prompt", r);
        r = validate_prompt(dc, "CreateSession: field 'prompt'", s, &e);
        if (r < 0)
                return refuse(error, core_error_bus_name(e.kind), "%s", e.message);
        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(c->prompt);
        c->prompt = copy;
        return 0;
}

/* Secret names as a session asks for them: valid (secrets.h), unique, at most SESSION_SECRETS_MAX. */
static int secrets_validate_names(char **names, const char *what, sd_bus_error *error) {
        char e[ECHO_MAX + 4];
        size_t n = 0;

        for (char **i = names; i && *i; i++, n++) {
                if (!secret_name_is_valid(*i))
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "%s: secret names must match [A-Za-z_][A-Za-z0-9_]* (at most %d characters), got '%s'",
                                what,
                                SECRET_NAME_MAX,
                                echo(*i, e));
                for (char **j = names; j < i; j++)
                        if (streq(*j, *i))
                                return refuse(
                                        error,
                                        CCDOCKER_ERROR_INVALID_CONFIG,
                                        "%s: secret names must be unique, got '%s' twice",
                                        what,
                                        echo(*i, e));
        }
        if (n > SESSION_SECRETS_MAX)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "%s: at most %d secrets, got '%zu'",
                        what,
                        SESSION_SECRETS_MAX,
                        n);
        return 0;
}

static int read_secrets(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        _cleanup_(strv_freep) char **names = NULL;
        int r;

        r = sd_bus_message_read_strv(m, &names);
        if (r < 0)
                return refuse_read(error, "secrets", r);
        r = secrets_validate_names(names, "CreateSession: field 'secrets'", error);
        if (r < 0)
                return r;
        strv_free(c->secrets);
        c->secrets = names && names[0] ? TAKE_PTR(names) : NULL;
        return 0;
}

/* ---- Claude Code's configuration (SPEC.md 8.2, 8.3) ---- */

/* An MCP server's or a skill's name: what a directory and a JSON key may safely be. */
static bool config_name_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* A tool rule of Claude Code's permissions: "Read", "Bash(npm test:*)", "mcp__cc-docker__spawn_child". */
static bool tool_rule_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 256)
                return false;
        for (const char *p = s; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        return false;
        return true;
}

/* An "as" field into *dst (NULL when empty), each entry checked by valid. */
static int read_strv_field(
        sd_bus_message *m,
        const char *field,
        bool (*valid)(const char *),
        const char *rule,
        size_t max,
        char ***dst,
        sd_bus_error *error) {
        _cleanup_(strv_freep) char **l = NULL;
        char e[ECHO_MAX + 4];
        size_t n = 0;
        int r;

        r = sd_bus_message_read_strv(m, &l);
        if (r < 0)
                return refuse_read(error, field, r);
        for (char **i = l; i && *i; i++, n++)
                if (!valid(*i))
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field '%s' entries must be %s, got '%s'",
                                field,
                                rule,
                                echo(*i, e));
        if (n > max)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field '%s' must have at most %zu entries, got '%zu'",
                        field,
                        max,
                        n);
        strv_free(*dst);
        *dst = l && l[0] ? TAKE_PTR(l) : NULL;
        return 0;
}

static int read_permission_mode(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        static const char *const modes[] = { "default", "acceptEdits", "bypassPermissions", "plan", NULL };
        char e[ECHO_MAX + 4];
        const char *s;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "permission_mode", r);
        for (const char *const *i = modes; *i; i++)
                if (streq(*i, s)) {
                        free(c->permission_mode);
                        c->permission_mode = strdup(s);
                        return c->permission_mode ? 0 : -ENOMEM;
                }
        return refuse(
                error,
                CCDOCKER_ERROR_INVALID_CONFIG,
                "CreateSession: field 'permission_mode' must be default, acceptEdits, bypassPermissions or plan, "
                "got '%s'",
                echo(s, e));
}

static int read_mcp_overrides(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        const char *s, *name;
        char e[ECHO_MAX + 4];
        json_t *v;
        int r;

        r = sd_bus_message_read_basic(m, 's', &s);
        if (r < 0)
                return refuse_read(error, "mcp_overrides", r);
        if (strlen(s) > SESSION_MCP_OVERRIDES_MAX)
                return refuse(
                        error,
                        CCDOCKER_ERROR_LIMIT,
                        "CreateSession: field 'mcp_overrides' must be at most %d bytes, got '%zu'",
                        SESSION_MCP_OVERRIDES_MAX,
                        strlen(s));
        o = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(o))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides' must be the text of a JSON object of servers");
        json_object_foreach (o, name, v)
                if (!config_name_is_valid(name) || !json_is_object(v))
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'mcp_overrides' must map server names ([a-z0-9_-]) to objects, "
                                "got '%s'",
                                echo(name, e));
        free(c->mcp_overrides);
        c->mcp_overrides = json_dumps(o, JSON_COMPACT);
        return c->mcp_overrides ? 0 : -ENOMEM;
}

/* ---- what mcp_overrides may say (docs/mcp-servers.md, "Overrides") ---- */

static bool has_space_or_control(const char *s) {
        for (; s && *s; s++)
                if ((unsigned char) *s <= ' ' || (unsigned char) *s == 0x7f)
                        return true;
        return false;
}

/* A server's command must be the image's: a bare name (searched in the image's PATH) or an absolute
 * path under its read-only /usr, /opt or /bin; never the workspace, /shared, /tmp or home, where a
 * session could put a program of its own. */
static bool override_command_valid(const char *cmd) {
        static const char *const roots[] = { "/usr/", "/opt/", "/bin/" };
        bool under = false;

        if (isempty(cmd) || strlen(cmd) > PATH_MAX)
                return false;
        if (cmd[0] != '/')
                return strspn(cmd, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") ==
                        strlen(cmd) &&
                        cmd[0] != '.';
        for (size_t i = 0; i < ELEMENTSOF(roots); i++)
                under = under || startswith(cmd, roots[i]);
        return under && !strstr(cmd, "/../") && !endswith(cmd, "/..") && !strstr(cmd, "/./") &&
                !strstr(cmd, "//") && !has_space_or_control(cmd);
}

/* Each ${NAME} of a header value must be a secret the session is granted. */
static int override_header_check(
        const SessionConfig *c,
        const char *server,
        const char *header,
        const char *value,
        sd_bus_error *error) {
        char e[ECHO_MAX + 4];

        for (const char *p = value; (p = strstr(p, "${"));) {
                const char *n = p + 2, *end = strchr(n, '}');
                _cleanup_free_ char *name = end ? strndup(n, (size_t) (end - n)) : NULL;
                bool granted = false;

                if (!end)
                        break;
                if (!name)
                        return -ENOMEM;
                for (char **i = c->secrets; i && *i; i++)
                        granted = granted || streq(*i, name);
                if (!granted)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'mcp_overrides.%s.headers.%s' names secret '%s', which "
                                "the session is not granted (field 'secrets')",
                                server,
                                header,
                                echo(name, e));
                p = end + 1;
        }
        return 0;
}

static int override_check(const SessionConfig *c, const char *server, json_t *o, sd_bus_error *error) {
        static const char *const keys[] = {
                "type", "command", "args", "env", "url", "headers", "description"
        };
        const char *type = json_string_value(json_object_get(o, "type")), *key, *h;
        char e[ECHO_MAX + 4];
        json_t *v, *x;
        size_t i;
        int r;

        json_object_foreach (o, key, v) {
                bool known = false;

                for (i = 0; i < ELEMENTSOF(keys); i++)
                        known = known || streq(key, keys[i]);
                if (!known)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'mcp_overrides.%s.%s' is not a key of an MCP server "
                                "(type, command, args, env, url, headers, description)",
                                server,
                                echo(key, e));
        }
        v = json_object_get(o, "type");
        if (v && (!type || (!streq(type, "stdio") && !streq(type, "http"))))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.type' must be stdio or http, got '%s'",
                        server,
                        type ? echo(type, e) : "(not a string)");
        v = json_object_get(o, "command");
        if (v && !override_command_valid(json_string_value(v)))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.command' must be a program of the image (a "
                        "name in its PATH, or a path under /usr, /opt or /bin), got '%s'",
                        server,
                        json_is_string(v) ? echo(json_string_value(v), e) : "(not a string)");
        v = json_object_get(o, "args");
        json_array_foreach (v, i, x)
                if (!json_is_string(x) || json_string_length(x) > PATH_MAX)
                        v = NULL;
        if (json_object_get(o, "args") && (!json_is_array(json_object_get(o, "args")) || !v))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.args' must be an array of strings",
                        server);
        v = json_object_get(o, "env");
        json_object_foreach (v, key, x)
                if (!env_name_is_valid(key) || !json_is_string(x))
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'mcp_overrides.%s.env' must map variable names to strings, "
                                "got '%s'",
                                server,
                                echo(key, e));
        if (v && !json_is_object(v))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.env' must be an object",
                        server);
        v = json_object_get(o, "url");
        if (v &&
            (!json_is_string(v) || !http_url_is_valid(json_string_value(v)) ||
             has_space_or_control(json_string_value(v))))
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.url' must be an http:// or https:// URL, got "
                        "'%s'",
                        server,
                        json_is_string(v) ? echo(json_string_value(v), e) : "(not a string)");
        if (type && streq(type, "http") && !v)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.url' is needed by type http",
                        server);
        v = json_object_get(o, "headers");
        if (!v)
                return 0;
        if (!type || !streq(type, "http") || !json_is_object(v) || json_object_size(v) > 1)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'mcp_overrides.%s.headers' must be an object of one header, on a "
                        "server of type http",
                        server);
        json_object_foreach (v, h, x) {
                const char *value = json_string_value(x);

                if (isempty(h) || strlen(h) > 64 ||
                    strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") !=
                            strlen(h) ||
                    !value || has_space_or_control(h) || strpbrk(value, "\r\n") || strlen(value) > 4096)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field 'mcp_overrides.%s.headers' must map a header name to a "
                                "one-line string, got '%s'",
                                server,
                                echo(h, e));
                r = override_header_check(c, server, h, value, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* After every field is read (the secrets a header names may come after mcp_overrides). */
static int session_config_check_overrides(const SessionConfig *c, sd_bus_error *error) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        const char *name;
        json_t *v;
        int r;

        if (!c->mcp_overrides)
                return 0;
        o = json_loads(c->mcp_overrides, 0, NULL);
        if (!o)
                return -ENOMEM;
        json_object_foreach (o, name, v) {
                r = override_check(c, name, v, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- budgets of a session's tree (the model proxy enforces them) ---- */

static int read_budget_usd(sd_bus_message *m, SessionConfig *c, sd_bus_error *error) {
        double d;
        int r;

        r = sd_bus_message_read_basic(m, 'd', &d);
        if (r < 0)
                return refuse_read(error, "budget_usd", r);
        if (!(d > 0) || d > 1e9)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'budget_usd' must be a number of dollars above 0, got '%g'",
                        d);
        c->budget_usd = d;
        return 0;
}

static int read_budget_tokens(sd_bus_message *m, const char *type, SessionConfig *c, sd_bus_error *error) {
        uint64_t t = 0;
        uint32_t u;
        int r;

        if (streq(type, "u")) {
                r = sd_bus_message_read_basic(m, 'u', &u);
                t = u;
        } else
                r = sd_bus_message_read_basic(m, 't', &t);
        if (r < 0)
                return refuse_read(error, "budget_tokens", r);
        if (t == 0 || t > INT64_MAX)
                return refuse(
                        error,
                        CCDOCKER_ERROR_INVALID_CONFIG,
                        "CreateSession: field 'budget_tokens' must be a number of tokens above 0, got '%" PRIu64
                        "'",
                        t);
        c->budget_tokens = t;
        return 0;
}

static int read_field(
        sd_bus_message *m,
        unsigned field,
        const char *type,
        const DaemonConfig *dc,
        SessionConfig *c,
        sd_bus_error *error) {
        switch (field) {
        case FIELD_WORKSPACE:
                return read_workspace(m, dc, c, error);
        case FIELD_IMAGE:
                return read_image(m, c, error);
        case FIELD_MEMORY:
                return read_memory(m, type, dc, c, error);
        case FIELD_CPUS:
                return read_cpus(m, type, dc, c, error);
        case FIELD_TASKS:
                return read_tasks(m, type, dc, c, error);
        case FIELD_TIMEOUT:
                return read_timeout(m, type, dc, c, error);
        case FIELD_TASK_TYPE:
                return read_task_type(m, c, error);
        case FIELD_ENVIRONMENT:
                return read_environment(m, c, error);
        case FIELD_NETWORK:
                return read_network(m, dc, c, error);
        case FIELD_PROMPT:
                return read_prompt(m, dc, c, error);
        case FIELD_SECRETS:
                return read_secrets(m, c, error);
        case FIELD_ALLOWED_HOSTS:
                return read_strv_field(
                        m,
                        "allowed_hosts",
                        egress_allow_entry_valid,
                        "host, host:port, *.domain or *.domain:port",
                        SESSION_ALLOWED_HOSTS_MAX,
                        &c->allowed_hosts,
                        error);
        case FIELD_MCP_SERVERS:
                return read_strv_field(
                        m,
                        "mcp_servers",
                        config_name_is_valid,
                        "names of [a-z0-9_-]",
                        32,
                        &c->mcp_servers,
                        error);
        case FIELD_SKILLS:
                return read_strv_field(
                        m, "skills", config_name_is_valid, "names of [a-z0-9_-]", 32, &c->skills, error);
        case FIELD_PERMISSION_MODE:
                return read_permission_mode(m, c, error);
        case FIELD_ALLOWED_TOOLS:
                return read_strv_field(
                        m,
                        "allowed_tools",
                        tool_rule_is_valid,
                        "tool rules of printable ASCII (at most 256 characters)",
                        128,
                        &c->allowed_tools,
                        error);
        case FIELD_MCP_OVERRIDES:
                return read_mcp_overrides(m, c, error);
        case FIELD_BUDGET_USD:
                return read_budget_usd(m, c, error);
        case FIELD_BUDGET_TOKENS:
                return read_budget_tokens(m, type, c, error);
        default:
                return -EINVAL;
        }
}

SessionConfig *session_config_new_default(const DaemonConfig *dc) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;

        c = calloc(1, sizeof(SessionConfig));
        if (!c)
                return NULL;

        *c = (SessionConfig){
                .workspace_type = WORKSPACE_EPHEMERAL,
                .memory = dc->default_memory,
                .cpu_millis = dc->default_cpu_millis,
                .tasks = dc->default_tasks,
                .timeout_sec = dc->default_timeout_sec,
        };
        c->image = strdup(dc->default_image);
        c->network = strdup("none");
        if (!c->image || !c->network)
                return NULL;

        return TAKE_PTR(c);
}

int session_config_from_bus(
        sd_bus_message *m, const DaemonConfig *dc, SessionConfig **ret, sd_bus_error *error) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL;
        bool seen[_FIELD_MAX] = {};
        int r;

        if (!m || !dc || !ret || !dc->default_image)
                return -EINVAL;

        c = session_config_new_default(dc);
        if (!c)
                return -ENOMEM;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return refuse_read(error, NULL, r);

        for (;;) {
                char e[ECHO_MAX + 4], t[ECHO_MAX + 4];
                const char *key, *contents;
                unsigned field;
                char type;
                bool ok;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return refuse_read(error, NULL, r);
                if (r == 0)
                        break;

                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        return refuse_read(error, NULL, r);

                for (field = 0; field < _FIELD_MAX; field++)
                        if (streq(fields[field].name, key))
                                break;
                if (field >= _FIELD_MAX)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: unknown field '%s'",
                                echo(key, e));
                if (seen[field])
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field '%s' must be given at most once",
                                fields[field].name);
                seen[field] = true;

                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return refuse_read(error, fields[field].name, r);
                if (r == 0 || type != SD_BUS_TYPE_VARIANT || !contents)
                        return refuse_read(error, fields[field].name, -EBADMSG);

                ok = false;
                for (size_t i = 0; i < ELEMENTSOF(fields[field].types) && fields[field].types[i]; i++)
                        ok = ok || streq(contents, fields[field].types[i]);
                if (!ok)
                        return refuse(
                                error,
                                CCDOCKER_ERROR_INVALID_CONFIG,
                                "CreateSession: field '%s' must be of type %s%s%s, got '%s'",
                                fields[field].name,
                                fields[field].types[0],
                                fields[field].types[1] ? " or " : "",
                                strempty(fields[field].types[1]),
                                echo(contents, t));

                r = sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, contents);
                if (r < 0)
                        return refuse_read(error, fields[field].name, r);

                r = read_field(m, field, contents, dc, c, error);
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(m); /* the variant */
                if (r >= 0)
                        r = sd_bus_message_exit_container(m); /* the dict entry */
                if (r < 0)
                        return refuse_read(error, fields[field].name, r);
        }

        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return refuse_read(error, NULL, r);
        r = session_config_check_overrides(c, error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

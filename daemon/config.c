/* The daemon's configuration: the built-in defaults of each mode, the KEY=VALUE assignments of the
 * configuration file and of the command line's --set (one table of keys, one parser per kind of value),
 * and the cross-field checks done once everything is read. Every key is described in
 * docs/ccdockerd.conf.md; a key added here must be added there too. */
#define _GNU_SOURCE
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <regex.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "curl-glue.h"
#include "discord.h"
#include "log.h"
#include "model-prices.h"
#include "podman.h"
#include "secrets.h"
#include "util.h"

#define WHITESPACE " \t\r\n"

/* A NULL-ended copy of the given strings (the list ends at the first NULL); NULL when out of memory. */
static char **strv_new_from(const char *first, ...) {
        size_t n = 0;
        char **l;
        va_list ap;

        va_start(ap, first);
        for (const char *i = first; i; i = va_arg(ap, const char *))
                n++;
        va_end(ap);

        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return NULL;
        n = 0;
        va_start(ap, first);
        for (const char *i = first; i; i = va_arg(ap, const char *)) {
                l[n] = strdup(i);
                if (!l[n]) {
                        va_end(ap);
                        return strv_free(l);
                }
                n++;
        }
        va_end(ap);
        return l;
}

/* Splits s into words at runs of spaces and tabs, with a little of the shell's quoting so that a word
 * can hold spaces: '...' is taken literally; in "..." a backslash escapes '"' and '\\' (and is kept
 * before anything else); outside quotes a backslash escapes the next character. Nothing is expanded.
 * -EINVAL for an unterminated quote or a trailing backslash. An empty or all-blank s gives NULL (no
 * list), not an empty list, so "SessionCommand=" and "WorkspaceRoots=" mean "none". */
static int split_words(const char *s, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        const char *p = s;
        size_t n = 0;

        for (;;) {
                _cleanup_free_ char *w = NULL;
                char quote = 0, **nl;
                size_t len = 0;

                p += strspn(p, WHITESPACE);
                if (*p == '\0')
                        break;

                w = malloc(strlen(p) + 1);
                if (!w)
                        return -ENOMEM;

                for (; *p; p++) {
                        if (quote == '\'') {
                                if (*p == '\'')
                                        quote = 0;
                                else
                                        w[len++] = *p;
                        } else if (quote == '"') {
                                if (*p == '"')
                                        quote = 0;
                                else if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                                        w[len++] = *++p;
                                else
                                        w[len++] = *p;
                        } else if (strchr(WHITESPACE, *p))
                                break;
                        else if (*p == '\'' || *p == '"')
                                quote = *p;
                        else if (*p == '\\') {
                                if (p[1] == '\0')
                                        return -EINVAL;
                                w[len++] = *++p;
                        } else
                                w[len++] = *p;
                }
                if (quote)
                        return -EINVAL;
                w[len] = '\0';

                nl = reallocarray(l, n + 2, sizeof(char *));
                if (!nl)
                        return -ENOMEM;
                l = nl;
                l[n++] = TAKE_PTR(w);
                l[n] = NULL;
        }

        *ret = TAKE_PTR(l);
        return 0;
}

/* Absolute, and no ".." component: a configured path means what it says, without a walk upwards. */
static bool path_is_safe_absolute(const char *p) {
        if (!p || p[0] != '/')
                return false;

        for (const char *c = p; *c;) {
                size_t len;

                c += strspn(c, "/");
                len = strcspn(c, "/");
                if (len == 2 && c[0] == '.' && c[1] == '.')
                        return false;
                c += len;
        }
        return true;
}

static bool string_has_space_or_control(const char *s) {
        for (const char *p = s; *p; p++)
                if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p))
                        return true;
        return false;
}

static int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

int config_parse_cpus(const char *s, uint64_t *ret_millis) {
        uint64_t whole = 0, frac = 0;
        const char *dot;
        int r;

        if (!s)
                return -EINVAL;

        dot = strchr(s, '.');
        if (!dot)
                r = safe_atou64(s, &whole);
        else {
                _cleanup_free_ char *w = strndup(s, (size_t) (dot - s));
                size_t digits = strlen(dot + 1);
                char f[4] = "000";

                if (!w)
                        return -ENOMEM;
                if (digits < 1 || digits > 3 || strspn(dot + 1, "0123456789") != digits)
                        return -EINVAL;
                memcpy(f, dot + 1, digits);
                r = safe_atou64(w, &whole);
                if (r >= 0)
                        r = safe_atou64(f, &frac);
        }
        if (r < 0)
                return r;

        if (whole > (UINT64_MAX - frac) / 1000)
                return -ERANGE;

        *ret_millis = whole * 1000 + frac;
        return 0;
}

const char *config_format_size(uint64_t bytes, char buf[static CONFIG_FORMAT_MAX]) {
        static const char suffixes[] = "TGMK";

        for (unsigned i = 0; i < 4; i++) {
                unsigned shift = 10 * (4 - i);

                if (bytes != 0 && bytes % (UINT64_C(1) << shift) == 0) {
                        snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64 "%c", bytes >> shift, suffixes[i]);
                        return buf;
                }
        }

        snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64, bytes);
        return buf;
}

const char *config_format_cpus(uint64_t millis, char buf[static CONFIG_FORMAT_MAX]) {
        uint64_t frac = millis % 1000;

        if (frac == 0)
                snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64, millis / 1000);
        else if (frac % 100 == 0)
                snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64 ".%" PRIu64, millis / 1000, frac / 100);
        else if (frac % 10 == 0)
                snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64 ".%02" PRIu64, millis / 1000, frac / 10);
        else
                snprintf(buf, CONFIG_FORMAT_MAX, "%" PRIu64 ".%03" PRIu64, millis / 1000, frac);
        return buf;
}

/* ---- the keys ---- */

/* Each parser writes its field only when the value is good; otherwise it logs, with where ("PATH:LINE: "
 * or "") in front, what the key must be and what it got, and returns -EINVAL. */
typedef int (*ConfigParser)(void *field, const char *key, const char *value, const char *where);

static int parse_bus(void *field, const char *key, const char *value, const char *where) {
        char *s, **p = field;

        if (!streq(value, "user") && !streq(value, "system"))
                return log_error_errno(
                        EINVAL, "%s%s must be \"user\" or \"system\", got '%s'", where, key, value);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

static int parse_runtime(void *field, const char *key, const char *value, const char *where) {
        char *s, **p = field;

        if (!streq(value, "podman") && !streq(value, "docker"))
                return log_error_errno(
                        EINVAL, "%s%s must be \"podman\" or \"docker\", got '%s'", where, key, value);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

static int parse_path(void *field, const char *key, const char *value, const char *where) {
        char *s, **p = field;

        if (!path_is_safe_absolute(value))
                return log_error_errno(
                        EINVAL, "%s%s must be an absolute path without \"..\", got '%s'", where, key, value);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

/* An absolute path, or empty for none. */
static int parse_optional_path(void *field, const char *key, const char *value, const char *where) {
        char **p = field;

        if (isempty(value)) {
                *p = mfree(*p);
                return 0;
        }
        return parse_path(field, key, value, where);
}

/* Words (quoted as for SessionCommand), each a POSIX extended regular expression. */
static int parse_patterns(void *field, const char *key, const char *value, const char *where) {
        char ***p = field, **l = NULL;
        int r;

        r = split_words(value, &l);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(
                        r,
                        "%s%s must be quoted regular expressions separated by spaces, got '%s'",
                        where,
                        key,
                        value);
        for (char **i = l; i && *i; i++) {
                regex_t re;

                if (regcomp(&re, *i, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0) {
                        log_error("%s%s: '%s' is not a valid extended regular expression", where, key, *i);
                        strv_free(l);
                        return -EINVAL;
                }
                regfree(&re);
        }
        strv_free(*p);
        *p = l;
        return 0;
}

static int parse_image(void *field, const char *key, const char *value, const char *where) {
        char *s, **p = field;

        if (isempty(value) || value[0] == '-' || string_has_space_or_control(value))
                return log_error_errno(
                        EINVAL,
                        "%s%s must be an image reference without spaces, like localhost/ccdocker-session:latest, got '%s'",
                        where,
                        key,
                        value);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

static int parse_command(void *field, const char *key, const char *value, const char *where) {
        char ***p = field, **l = NULL;
        int r;

        r = split_words(value, &l);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(
                        r,
                        "%s%s must be words separated by spaces, with no unterminated quote or trailing backslash, got '%s'",
                        where,
                        key,
                        value);

        strv_free(*p);
        *p = l;
        return 0;
}

static int parse_roots(void *field, const char *key, const char *value, const char *where) {
        _cleanup_(strv_freep) char **l = NULL;
        char ***p = field;
        int r;

        r = split_words(value, &l);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(
                        r,
                        "%s%s must be paths separated by spaces, with no unterminated quote or trailing backslash, got '%s'",
                        where,
                        key,
                        value);

        for (char **i = l; i && *i; i++)
                if (!path_is_safe_absolute(*i))
                        return log_error_errno(
                                EINVAL,
                                "%s%s must be absolute paths without \"..\", separated by spaces, got '%s'",
                                where,
                                key,
                                *i);

        strv_free(*p);
        *p = TAKE_PTR(l);
        return 0;
}

static int parse_secret_names(void *field, const char *key, const char *value, const char *where) {
        _cleanup_(strv_freep) char **l = NULL;
        char ***p = field;
        int r;

        r = split_words(value, &l);
        if (r == -ENOMEM)
                return log_oom();
        for (char **i = l; r >= 0 && i && *i; i++)
                if (!secret_name_is_valid(*i))
                        r = -EINVAL;
        if (r < 0)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be secret names ([A-Za-z_][A-Za-z0-9_]*) separated by spaces, got '%s'",
                        where,
                        key,
                        value);
        strv_free(*p);
        *p = l && l[0] ? TAKE_PTR(l) : NULL;
        return 0;
}

/* "cc-docker,filesystem playwright": MCP server names ([a-z0-9_-]) separated by commas or spaces. */
static int parse_mcp_server_names(void *field, const char *key, const char *value, const char *where) {
        _cleanup_(strv_freep) char **l = NULL;
        _cleanup_free_ char *copy = strdup(value);
        char ***p = field;
        int r;

        if (!copy)
                return log_oom();
        for (char *i = copy; *i; i++)
                if (*i == ',')
                        *i = ' ';
        r = split_words(copy, &l);
        if (r == -ENOMEM)
                return log_oom();
        for (char **i = l; r >= 0 && i && *i; i++)
                if (strlen(*i) > 64 || strspn(*i, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(*i))
                        r = -EINVAL;
        if (r < 0 || !l || !l[0])
                return log_error_errno(
                        EINVAL,
                        "%s%s must be MCP server names ([a-z0-9_-]) separated by commas, got '%s'",
                        where,
                        key,
                        value);
        strv_free(*p);
        *p = TAKE_PTR(l);
        return 0;
}

static int parse_positive_size(void *field, const char *key, const char *value, const char *where) {
        uint64_t v, *p = field;
        int r;

        r = parse_size(value, &v);
        if (r < 0 || v == 0)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be a size greater than 0 like 2G or 512M, got '%s'",
                        where,
                        key,
                        value);

        *p = v;
        return 0;
}

static int parse_positive_cpus(void *field, const char *key, const char *value, const char *where) {
        uint64_t v, *p = field;
        int r;

        r = config_parse_cpus(value, &v);
        if (r < 0 || v == 0)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be a number of CPUs greater than 0 like 2 or 1.5, got '%s'",
                        where,
                        key,
                        value);

        *p = v;
        return 0;
}

static int parse_positive_u64(void *field, const char *key, const char *value, const char *where) {
        uint64_t v, *p = field;
        int r;

        r = safe_atou64(value, &v);
        if (r < 0 || v == 0)
                return log_error_errno(
                        EINVAL, "%s%s must be a whole number greater than 0, got '%s'", where, key, value);

        *p = v;
        return 0;
}

static int parse_seconds(void *field, const char *key, const char *value, const char *where) {
        uint64_t v, *p = field;
        int r;

        /* A unit's RuntimeMaxSec is in microseconds internally: keep the product in range. */
        r = safe_atou64(value, &v);
        if (r < 0 || v > UINT64_MAX / 1000000 - 1)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be a whole number of seconds (0 for none), got '%s'",
                        where,
                        key,
                        value);

        *p = v;
        return 0;
}

/* Every libpod call has a limit (podman.h): no 0 for "none", and at most a day, which curl's
 * milliseconds hold everywhere. */
static int parse_podman_timeout(void *field, const char *key, const char *value, const char *where) {
        uint64_t v, *p = field;
        int r;

        r = safe_atou64(value, &v);
        if (r < 0 || v == 0 || v > 86400)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be a whole number of seconds from 1 to 86400, got '%s'",
                        where,
                        key,
                        value);

        *p = v;
        return 0;
}

static int parse_positive_unsigned(void *field, const char *key, const char *value, const char *where) {
        unsigned *p = field;
        uint64_t v;
        int r;

        r = safe_atou64(value, &v);
        if (r < 0 || v == 0 || v > UINT_MAX)
                return log_error_errno(
                        EINVAL, "%s%s must be a whole number greater than 0, got '%s'", where, key, value);

        *p = (unsigned) v;
        return 0;
}

/* PoolSize=: 0 (no pool) to CONFIG_POOL_SIZE_MAX. */
static int parse_pool_size(void *field, const char *key, const char *value, const char *where) {
        unsigned *p = field;
        uint64_t v;
        int r;

        r = safe_atou64(value, &v);
        if (r < 0 || v > CONFIG_POOL_SIZE_MAX)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be a whole number from 0 to %u, got '%s'",
                        where,
                        key,
                        CONFIG_POOL_SIZE_MAX,
                        value);

        *p = (unsigned) v;
        return 0;
}

static int parse_bool(void *field, const char *key, const char *value, const char *where) {
        bool *p = field;
        int r;

        r = parse_boolean(value);
        if (r < 0)
                return log_error_errno(EINVAL, "%s%s must be yes or no, got '%s'", where, key, value);

        *p = r;
        return 0;
}

/* ---- the model proxy's keys ---- */

static int parse_url(void *field, const char *key, const char *value, const char *where) {
        char *s, **p = field;

        if (!http_url_is_valid(value) || string_has_space_or_control(value) || strchr(value, '?') ||
            strchr(value, '#'))
                return log_error_errno(
                        EINVAL,
                        "%s%s must be an http:// or https:// URL without spaces, query or fragment, like https://api.anthropic.com, got '%s'",
                        where,
                        key,
                        value);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

/* ---- Discord's keys ---- */

/* A channel id: a snowflake (decimal digits, 64 bits); empty: no Discord. */
static int parse_snowflake(void *field, const char *key, const char *value, const char *where) {
        char *s = NULL, **p = field;

        if (!isempty(value)) {
                if (!discord_snowflake_parse(value, NULL))
                        return log_error_errno(
                                EINVAL,
                                "%s%s must be a Discord channel id (decimal digits, like 1234567890123456789), got '%s'",
                                where,
                                key,
                                value);
                s = strdup(value);
                if (!s)
                        return log_oom();
        }
        free(*p);
        *p = s;
        return 0;
}

static int parse_discord_retries(void *field, const char *key, const char *value, const char *where) {
        unsigned *p = field;
        uint64_t v;

        if (safe_atou64(value, &v) < 0 || v > 100)
                return log_error_errno(
                        EINVAL, "%s%s must be a whole number from 0 to 100, got '%s'", where, key, value);
        *p = (unsigned) v;
        return 0;
}

static int parse_prices(void *field, const char *key, const char *value, const char *where) {
        ModelPrice *prices = NULL;
        size_t n = 0;
        char *s, **p = field;
        int r;

        r = model_prices_parse(value, &prices, &n);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                return log_error_errno(
                        EINVAL,
                        "%s%s must be MODEL-PREFIX=INPUT/OUTPUT prices in USD per million tokens separated by spaces, like 'claude-opus=15/75 *=3/15', got '%s'",
                        where,
                        key,
                        value);
        model_prices_free(prices, n);

        s = strdup(value);
        if (!s)
                return log_oom();
        free(*p);
        *p = s;
        return 0;
}

static const struct {
        const char *key;
        ConfigParser parse;
        size_t offset;
} config_keys[] = {
        { "SystemdBus", parse_bus, offsetof(DaemonConfig, systemd_bus) },
        { "PodmanSocket", parse_path, offsetof(DaemonConfig, podman_socket) },
        { "Runtime", parse_runtime, offsetof(DaemonConfig, runtime) },
        { "DockerSocket", parse_path, offsetof(DaemonConfig, docker_socket) },
        { "StateDirectory", parse_path, offsetof(DaemonConfig, state_dir) },
        { "DefaultImage", parse_image, offsetof(DaemonConfig, default_image) },
        { "SessionCommand", parse_command, offsetof(DaemonConfig, session_command) },
        { "DefaultMemory", parse_positive_size, offsetof(DaemonConfig, default_memory) },
        { "MaxMemory", parse_positive_size, offsetof(DaemonConfig, max_memory) },
        { "DefaultCPUs", parse_positive_cpus, offsetof(DaemonConfig, default_cpu_millis) },
        { "MaxCPUs", parse_positive_cpus, offsetof(DaemonConfig, max_cpu_millis) },
        { "DefaultTasks", parse_positive_u64, offsetof(DaemonConfig, default_tasks) },
        { "MaxTasks", parse_positive_u64, offsetof(DaemonConfig, max_tasks) },
        { "DefaultTimeoutSec", parse_seconds, offsetof(DaemonConfig, default_timeout_sec) },
        { "MaxTimeoutSec", parse_seconds, offsetof(DaemonConfig, max_timeout_sec) },
        { "StopTimeoutSec", parse_positive_u64, offsetof(DaemonConfig, stop_timeout_sec) },
        { "PodmanTimeoutSec", parse_podman_timeout, offsetof(DaemonConfig, podman_timeout_sec) },
        { "MaxSessions", parse_positive_unsigned, offsetof(DaemonConfig, max_sessions) },
        { "AllowHostNetwork", parse_bool, offsetof(DaemonConfig, allow_host_network) },
        { "WorkspaceRoots", parse_roots, offsetof(DaemonConfig, workspace_roots) },
        { "RuntimeDirectory", parse_path, offsetof(DaemonConfig, runtime_dir) },
        { "RedisSocket", parse_optional_path, offsetof(DaemonConfig, redis_socket) },
        { "HeartbeatTimeoutSec", parse_seconds, offsetof(DaemonConfig, heartbeat_timeout_sec) },
        { "MaxPromptBytes", parse_positive_size, offsetof(DaemonConfig, max_prompt_bytes) },
        { "PromptDenyPatterns", parse_patterns, offsetof(DaemonConfig, prompt_deny_patterns) },
        { "MaxChildDepth", parse_positive_unsigned, offsetof(DaemonConfig, max_child_depth) },
        { "MaxSpawnsPerMinute", parse_positive_unsigned, offsetof(DaemonConfig, max_spawns_per_minute) },
        { "MaxRunningChildren", parse_positive_unsigned, offsetof(DaemonConfig, max_running_children) },
        { "ChildTimeoutSec", parse_positive_u64, offsetof(DaemonConfig, child_timeout_sec) },
        { "AllowedSecrets", parse_secret_names, offsetof(DaemonConfig, allowed_secrets) },
        { "MaxSessionsPerOwner", parse_positive_unsigned, offsetof(DaemonConfig, max_sessions_per_owner) },
        { "MaxTreeSessions", parse_positive_unsigned, offsetof(DaemonConfig, max_tree_sessions) },
        { "MaxQueuedPrompts", parse_positive_unsigned, offsetof(DaemonConfig, max_queued_prompts) },
        { "MaxWaitersPerSession", parse_positive_unsigned, offsetof(DaemonConfig, max_waiters) },
        { "MaxOutputEvents", parse_positive_unsigned, offsetof(DaemonConfig, max_output_events) },
        { "MaxAttachPerSession", parse_positive_unsigned, offsetof(DaemonConfig, max_attach) },
        { "EndedSessionRetentionSec", parse_seconds, offsetof(DaemonConfig, ended_retention_sec) },
        { "PoolSize", parse_pool_size, offsetof(DaemonConfig, pool_size) },
        { "ModelUpstreamURL", parse_url, offsetof(DaemonConfig, model_upstream_url) },
        { "ModelMaxInFlight", parse_positive_unsigned, offsetof(DaemonConfig, model_max_in_flight) },
        { "ModelMaxInFlightPerSession",
          parse_positive_unsigned,
          offsetof(DaemonConfig, model_max_in_flight_per_session) },
        { "ModelRequestsPerMinute",
          parse_positive_unsigned,
          offsetof(DaemonConfig, model_requests_per_minute) },
        { "ModelQueueMax", parse_positive_unsigned, offsetof(DaemonConfig, model_queue_max) },
        { "ModelPrices", parse_prices, offsetof(DaemonConfig, model_prices) },
        { "GithubMcpURL", parse_url, offsetof(DaemonConfig, github_mcp_url) },
        { "DefaultMcpServers", parse_mcp_server_names, offsetof(DaemonConfig, default_mcp_servers) },
        { "SharedDirectory", parse_optional_path, offsetof(DaemonConfig, shared_dir) },
        { "SharedReadOnly", parse_bool, offsetof(DaemonConfig, shared_read_only) },
        { "DiscordChannelID", parse_snowflake, offsetof(DaemonConfig, discord_channel_id) },
        { "DiscordAPIURL", parse_url, offsetof(DaemonConfig, discord_api_url) },
        { "DiscordMaxRetries", parse_discord_retries, offsetof(DaemonConfig, discord_max_retries) },
        { "DiscordPollIntervalSec",
          parse_positive_unsigned,
          offsetof(DaemonConfig, discord_poll_interval_sec) },
        { "DiscordQuestionTimeoutSec", parse_positive_u64, offsetof(DaemonConfig, question_timeout_sec) },
        { "QuestionMinTimeoutSec", parse_positive_u64, offsetof(DaemonConfig, question_min_timeout_sec) },
        { "MaxPendingQuestionsPerSession",
          parse_positive_unsigned,
          offsetof(DaemonConfig, max_pending_questions) },
};

/* The defaults and their ceilings. A default that was never assigned follows a ceiling set below it;
 * one that was assigned is left for config_verify() to refuse. */
static const struct {
        const char *default_key, *max_key;
        size_t default_offset, max_offset;
} config_ceilings[] = {
        { "DefaultMemory",
          "MaxMemory",
          offsetof(DaemonConfig, default_memory),
          offsetof(DaemonConfig, max_memory) },
        { "DefaultCPUs",
          "MaxCPUs",
          offsetof(DaemonConfig, default_cpu_millis),
          offsetof(DaemonConfig, max_cpu_millis) },
        { "DefaultTasks",
          "MaxTasks",
          offsetof(DaemonConfig, default_tasks),
          offsetof(DaemonConfig, max_tasks) },
        { "DefaultTimeoutSec",
          "MaxTimeoutSec",
          offsetof(DaemonConfig, default_timeout_sec),
          offsetof(DaemonConfig, max_timeout_sec) },
};

static void config_follow_ceiling(DaemonConfig *c, const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(config_ceilings); i++) {
                uint64_t *def = (uint64_t *) ((uint8_t *) c + config_ceilings[i].default_offset);
                uint64_t max = *(uint64_t *) ((uint8_t *) c + config_ceilings[i].max_offset);

                if (streq(key, config_ceilings[i].default_key))
                        c->defaults_assigned |= 1u << i;
                else if (
                        streq(key, config_ceilings[i].max_key) && !(c->defaults_assigned & (1u << i)) &&
                        max > 0 && *def > max) {
                        /* (max 0 is "no ceiling" for the timeout.) */
                        log_debug(
                                "%s= is below the default, and %s= was not set: it follows the ceiling down.",
                                config_ceilings[i].max_key,
                                config_ceilings[i].default_key);
                        *def = max;
                }
        }
}

static int config_set_at(DaemonConfig *c, const char *key, const char *value, const char *where) {
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (streq(config_keys[i].key, key)) {
                        int r;

                        r = config_keys[i].parse((uint8_t *) c + config_keys[i].offset, key, value, where);
                        if (r < 0)
                                return r;
                        config_follow_ceiling(c, key);
                        return 0;
                }

        return log_error_errno(EINVAL, "%sunknown key '%s'", where, key);
}

int config_set(DaemonConfig *c, const char *key, const char *value) {
        if (!c || !key || !value)
                return -EINVAL;

        return config_set_at(c, key, value, "");
}

/* ---- defaults ---- */

static int home_directory(const char **ret) {
        const char *e;
        struct passwd *pw;

        e = getenv("HOME");
        if (e && e[0] == '/') {
                *ret = e;
                return 0;
        }

        errno = 0;
        pw = getpwuid(getuid());
        if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/')
                return errno > 0 ? -errno : -ENXIO;

        *ret = pw->pw_dir;
        return 0;
}

static int user_state_dir(char **ret) {
        const char *e;
        char *s;
        int r;

        /* The XDG base directory specification says relative values are to be ignored. */
        e = getenv("XDG_STATE_HOME");
        if (e && e[0] == '/')
                r = asprintf(&s, "%s/ccdocker", e);
        else {
                const char *home;

                r = home_directory(&home);
                if (r < 0)
                        return log_error_errno(
                                r, "Failed to find the home directory for the state directory: %m");
                r = asprintf(&s, "%s/.local/state/ccdocker", home);
        }
        if (r < 0)
                return log_oom();

        *ret = s;
        return 0;
}

static int user_podman_socket(char **ret) {
        const char *e;
        char *s;
        int r;

        e = getenv("XDG_RUNTIME_DIR");
        if (e && e[0] == '/')
                r = asprintf(&s, "%s/podman/podman.sock", e);
        else
                r = asprintf(&s, "/run/user/%u/podman/podman.sock", (unsigned) getuid());
        if (r < 0)
                return log_oom();

        *ret = s;
        return 0;
}

int config_init(DaemonConfig *c, DaemonMode mode) {
        int r;

        if (!c || (mode != DAEMON_USER && mode != DAEMON_SYSTEM))
                return -EINVAL;

        *c = (DaemonConfig){
                .mode = mode,
                .default_memory = UINT64_C(2) << 30,
                .max_memory = UINT64_C(4) << 30,
                .default_cpu_millis = 1000,
                .max_cpu_millis = 2000,
                .default_tasks = 256,
                .max_tasks = 1024,
                .default_timeout_sec = 3600,
                .max_timeout_sec = 86400,
                .stop_timeout_sec = 10,
                .podman_timeout_sec = PODMAN_TIMEOUT_DEFAULT_SEC,
                .max_sessions = 64,
                .allow_host_network = false,
                .workspace_roots = NULL, /* host workspaces are refused until roots are configured */
                .session_command = NULL, /* the image's own entrypoint and command */
                .heartbeat_timeout_sec = 30,
                .max_prompt_bytes = 100000,
                .max_child_depth = 3,
                .max_spawns_per_minute = 5,
                .max_running_children = 5,
                .child_timeout_sec = 1800,
                .max_sessions_per_owner = 32,
                .max_tree_sessions = 32,
                .max_queued_prompts = 64,
                .max_waiters = 64,
                .max_output_events = 1000,
                .max_attach = 256,
                .ended_retention_sec = 7 * 24 * 3600,
                .model_max_in_flight = 4,
                .model_requests_per_minute = 50,
                .model_queue_max = 256,
                .discord_max_retries = DISCORD_MAX_RETRIES_DEFAULT,
                .discord_poll_interval_sec = DISCORD_POLL_INTERVAL_SEC_DEFAULT,
                .question_timeout_sec = 1800,
                .question_min_timeout_sec = 60,
                .max_pending_questions = 16,
        };

        c->systemd_bus = strdup(mode == DAEMON_USER ? "user" : "system");
        c->default_image = strdup("localhost/ccdocker-session:latest");
        /* SPEC.md 9.1: prompts with obvious injection patterns are refused. */
        c->prompt_deny_patterns = strv_new_from(
                "ignore (all )?previous instructions",
                "system prompt override",
                "admin mode activate",
                "<system>",
                "\\[INST\\]",
                NULL);
        c->model_upstream_url = strdup("https://api.anthropic.com");
        c->model_prices = strdup("*=3/15");
        c->github_mcp_url = strdup("https://api.githubcopilot.com/mcp/");
        c->default_mcp_servers = strv_new_from("cc-docker", NULL);
        c->discord_api_url = strdup(DISCORD_API_URL_DEFAULT);
        c->runtime = strdup("podman");
        c->docker_socket = strdup("/run/docker.sock");
        if (!c->systemd_bus || !c->default_image || !c->prompt_deny_patterns || !c->model_upstream_url ||
            !c->model_prices || !c->github_mcp_url || !c->default_mcp_servers || !c->discord_api_url ||
            !c->runtime || !c->docker_socket) {
                config_done(c);
                return log_oom();
        }

        if (mode == DAEMON_USER) {
                const char *xdg = getenv("XDG_RUNTIME_DIR");

                r = user_state_dir(&c->state_dir);
                if (r >= 0)
                        r = user_podman_socket(&c->podman_socket);
                if (r >= 0 &&
                    (xdg ? asprintf(&c->runtime_dir, "%s/ccdocker", xdg)
                         : asprintf(&c->runtime_dir, "/run/user/%u/ccdocker", (unsigned) getuid())) < 0) {
                        c->runtime_dir = NULL;
                        r = log_oom();
                }
                if (r < 0) {
                        config_done(c);
                        return r;
                }
        } else {
                c->state_dir = strdup("/var/lib/ccdocker");
                c->podman_socket = strdup("/run/podman/podman.sock");
                c->runtime_dir = strdup("/run/ccdocker");
                if (!c->state_dir || !c->podman_socket || !c->runtime_dir) {
                        config_done(c);
                        return log_oom();
                }
        }

        return 0;
}

void config_done(DaemonConfig *c) {
        if (!c)
                return;

        c->systemd_bus = mfree(c->systemd_bus);
        c->podman_socket = mfree(c->podman_socket);
        c->runtime = mfree(c->runtime);
        c->docker_socket = mfree(c->docker_socket);
        c->state_dir = mfree(c->state_dir);
        c->default_image = mfree(c->default_image);
        c->session_command = strv_free(c->session_command);
        c->workspace_roots = strv_free(c->workspace_roots);
        c->runtime_dir = mfree(c->runtime_dir);
        c->redis_socket = mfree(c->redis_socket);
        c->prompt_deny_patterns = strv_free(c->prompt_deny_patterns);
        c->allowed_secrets = strv_free(c->allowed_secrets);
        c->model_upstream_url = mfree(c->model_upstream_url);
        c->model_prices = mfree(c->model_prices);
        c->github_mcp_url = mfree(c->github_mcp_url);
        c->default_mcp_servers = strv_free(c->default_mcp_servers);
        c->shared_dir = mfree(c->shared_dir);
        c->discord_channel_id = mfree(c->discord_channel_id);
        c->discord_api_url = mfree(c->discord_api_url);
}

/* ---- the file ---- */

static char *strip(char *s) {
        char *e;

        s += strspn(s, WHITESPACE);
        e = s + strlen(s);
        while (e > s && strchr(WHITESPACE, e[-1]))
                *--e = '\0';
        return s;
}

int config_load_file(DaemonConfig *c, const char *path, bool must_exist) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        unsigned line = 0;
        int ret = 1;

        if (!c || !path)
                return -EINVAL;

        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && !must_exist) {
                        log_debug("Configuration file %s does not exist, using the defaults.", path);
                        return 0;
                }
                return log_error_errno(errno, "Failed to open configuration file %s: %m", path);
        }

        for (;;) {
                _cleanup_free_ char *where = NULL;
                char *l, *eq, *key, *value;
                ssize_t n;
                int r;

                errno = 0;
                n = getline(&buf, &size, f);
                if (n < 0) {
                        if (ferror(f))
                                return log_error_errno(
                                        errno > 0 ? errno : EIO,
                                        "Failed to read configuration file %s: %m",
                                        path);
                        break;
                }
                line++;

                if (asprintf(&where, "%s:%u: ", path, line) < 0)
                        return log_oom();

                if (strlen(buf) != (size_t) n) {
                        ret = log_error_errno(EINVAL, "%sline contains a NUL byte", where);
                        continue;
                }

                l = strip(buf);
                if (l[0] == '\0' || l[0] == '#' || l[0] == ';')
                        continue;

                if (l[0] == '[') {
                        if (!streq(l, "[ccdockerd]"))
                                ret = log_error_errno(
                                        EINVAL,
                                        "%sunknown section '%s', only [ccdockerd] is known",
                                        where,
                                        l);
                        continue;
                }

                eq = strchr(l, '=');
                if (!eq) {
                        ret = log_error_errno(EINVAL, "%sexpected KEY=VALUE, got '%s'", where, l);
                        continue;
                }
                *eq = '\0';
                key = strip(l);
                value = strip(eq + 1);
                if (key[0] == '\0') {
                        ret = log_error_errno(EINVAL, "%sexpected KEY=VALUE, got no key", where);
                        continue;
                }

                r = config_set_at(c, key, value, where);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        ret = r;
        }

        return ret;
}

/* ---- consistency ---- */

int config_verify(const DaemonConfig *c) {
        char a[CONFIG_FORMAT_MAX], b[CONFIG_FORMAT_MAX];
        int r = 0;

        if (!c)
                return -EINVAL;

        if (!c->systemd_bus || (!streq(c->systemd_bus, "user") && !streq(c->systemd_bus, "system")))
                r = log_error_errno(
                        EINVAL,
                        "SystemdBus must be \"user\" or \"system\", got '%s'",
                        strempty(c->systemd_bus));
        if (!path_is_safe_absolute(c->podman_socket))
                r = log_error_errno(
                        EINVAL,
                        "PodmanSocket must be an absolute path, got '%s'",
                        strempty(c->podman_socket));
        if (!path_is_safe_absolute(c->state_dir))
                r = log_error_errno(
                        EINVAL, "StateDirectory must be an absolute path, got '%s'", strempty(c->state_dir));
        if (isempty(c->default_image))
                r = log_error_errno(EINVAL, "DefaultImage must not be empty");

        if (c->default_memory == 0 || c->default_memory > c->max_memory)
                r = log_error_errno(
                        EINVAL,
                        "DefaultMemory=%s must be greater than 0 and at most MaxMemory=%s",
                        config_format_size(c->default_memory, a),
                        config_format_size(c->max_memory, b));
        if (c->default_cpu_millis == 0 || c->default_cpu_millis > c->max_cpu_millis)
                r = log_error_errno(
                        EINVAL,
                        "DefaultCPUs=%s must be greater than 0 and at most MaxCPUs=%s",
                        config_format_cpus(c->default_cpu_millis, a),
                        config_format_cpus(c->max_cpu_millis, b));
        if (c->default_tasks == 0 || c->default_tasks > c->max_tasks)
                r = log_error_errno(
                        EINVAL,
                        "DefaultTasks=%" PRIu64 " must be greater than 0 and at most MaxTasks=%" PRIu64,
                        c->default_tasks,
                        c->max_tasks);
        if (c->max_timeout_sec > 0 &&
            (c->default_timeout_sec == 0 || c->default_timeout_sec > c->max_timeout_sec))
                r = log_error_errno(
                        EINVAL,
                        "DefaultTimeoutSec=%" PRIu64 " must be between 1 and MaxTimeoutSec=%" PRIu64
                        " (0 means no limit, which a MaxTimeoutSec forbids)",
                        c->default_timeout_sec,
                        c->max_timeout_sec);
        if (c->stop_timeout_sec == 0)
                r = log_error_errno(EINVAL, "StopTimeoutSec must be greater than 0");
        if (c->max_sessions == 0)
                r = log_error_errno(EINVAL, "MaxSessions must be greater than 0");
        if (c->session_command && !c->session_command[0])
                r = log_error_errno(EINVAL, "SessionCommand must not be an empty list");
        for (char **i = c->workspace_roots; i && *i; i++)
                if (!path_is_safe_absolute(*i))
                        r = log_error_errno(EINVAL, "WorkspaceRoots must be absolute paths, got '%s'", *i);

        return r;
}

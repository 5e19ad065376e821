/* The daemon's configuration: defaults, the configuration file (/etc/ccdocker/ccdockerd.conf, key=value
 * lines, documented in docs/ccdockerd.conf.md) and the command line, in that order of precedence from
 * lowest to highest. Ceilings bound what a CreateSession may ask for. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef enum DaemonMode {
        DAEMON_USER,   /* the user bus, the user's systemd manager; no polkit */
        DAEMON_SYSTEM, /* the system bus, the system manager; every method asks polkit */
} DaemonMode;

typedef struct DaemonConfig {
        DaemonMode mode;
        /* Which bus systemd is reached on: "user" or "system". Defaults to the mode's own bus; the test
         * sandbox runs --system against a user manager (PID 1 here is not systemd). */
        char *systemd_bus;
        char *podman_socket;         /* libpod REST socket path */
        uint64_t podman_timeout_sec; /* the overall limit of one libpod call */
        char *runtime;               /* new sessions' container runtime: "podman" or "docker" (runtime.h) */
        char *docker_socket;         /* Docker Engine's API socket path */
        char *state_dir;             /* ccdockerd.db and ephemeral workspaces live here */
        char *default_image;
        char **session_command; /* NULL: the image's own entrypoint and command; else argv, NULL-ended */

        uint64_t default_memory, max_memory;         /* bytes */
        uint64_t default_cpu_millis, max_cpu_millis; /* 1000 = one CPU */
        uint64_t default_tasks, max_tasks;
        uint64_t default_timeout_sec, max_timeout_sec; /* RuntimeMaxSec of the unit; 0 = none */
        uint64_t stop_timeout_sec;                     /* a graceful stop gets this long, then SIGKILL */
        unsigned max_sessions;                         /* live (not stopped or failed) sessions at once */
        bool allow_host_network;                       /* may a session ask for network "host" */
        char **workspace_roots; /* host workspace paths must lie below one of these; NULL-ended */
        char *runtime_dir;      /* per-session channel sockets: <runtime_dir>/sessions/<id>/session.sock */
        char *redis_socket;     /* NULL: no Redis (events are stored and attached only) */
        uint64_t
                heartbeat_timeout_sec; /* fail a session whose ccdocker-init stops heartbeating; 0 = never */
        uint64_t max_prompt_bytes;
        char **prompt_deny_patterns; /* POSIX extended regexes, matched case-insensitively (SPEC.md 9.1) */
        /* The agent tree (SPEC.md 9.2, 9.6). */
        unsigned max_child_depth;       /* a top-level session is depth 0 */
        unsigned max_spawns_per_minute; /* per session */
        unsigned max_running_children;  /* per session: children not stopped or failed */
        uint64_t child_timeout_sec;     /* default and ceiling of a child's timeout */
        char **allowed_secrets;         /* --user: the secrets a session may ask for (--system asks polkit);
                                           NULL-ended */
        /* What a caller or a container can make the daemon hold (docs/security.md). */
        unsigned max_sessions_per_owner; /* live sessions of one uid, children included */
        unsigned max_tree_sessions;      /* live sessions in one tree, its root included */
        unsigned max_queued_prompts;     /* prompts of one session not yet answered */
        unsigned max_waiters;            /* GetResult/child.result/child.output waits on one session */
        unsigned max_output_events;      /* events one GetOutput answers at most */
        unsigned max_attach;             /* Attach subscribers of one session at once */
        uint64_t ended_retention_sec;    /* an ended session is removed this long after it ended; 0: kept */
        unsigned pool_size;              /* warm pool members kept started (pool.c); 0: no pool */
        /* The model proxy (docs/model-proxy.md). */
        char *model_upstream_url;                 /* http(s)://..., the Messages API the proxy forwards to */
        unsigned model_max_in_flight;             /* calls upstream at once, for the credential */
        unsigned model_max_in_flight_per_session; /* of which one session's; 0: max(1, the above / 2) */
        unsigned model_requests_per_minute;       /* token bucket of the credential */
        unsigned model_queue_max;                 /* calls waiting for admission; more are answered 429 */
        char *model_prices;                       /* "PREFIX=IN/OUT ...", USD per million tokens */
        /* Claude Code's MCP servers (docs/mcp-servers.md). */
        char *github_mcp_url;       /* the GitHub MCP server the daemon forwards a session's github to */
        char **default_mcp_servers; /* mcp_servers of a session that names none (CC_DEFAULT_MCP_SERVERS) */
        /* /shared in every session (SPEC.md 3.3): a host directory shared across sessions. */
        char *shared_dir;      /* NULL: none, the image's empty /shared */
        bool shared_read_only; /* bound read-only rather than read-write */
        /* Discord (docs/discord.md). */
        char *discord_channel_id;     /* NULL: no Discord; notices and questions use the other surfaces */
        char *discord_api_url;        /* https://discord.com/api/v10; tests point it at the fake */
        unsigned discord_max_retries; /* 5xx or network failures of one post before it waits for later */
        unsigned discord_poll_interval_sec; /* between two reads of a question's thread */
        /* Asking a human (docs/channel.md, human.*; daemon/questions.c). */
        uint64_t question_timeout_sec;     /* DiscordQuestionTimeoutSec: default wait of one attempt */
        uint64_t question_min_timeout_sec; /* QuestionMinTimeoutSec: the least timeout_seconds */
        unsigned max_pending_questions;    /* MaxPendingQuestionsPerSession */

        /* config.c's own: which Default* keys were assigned. A default nobody set follows its ceiling
         * down (MaxMemory=1G alone makes the default 1G); one that was set must fit under it. */
        unsigned defaults_assigned;
} DaemonConfig;

/* Fills c with the built-in defaults for mode (state_dir /var/lib/ccdocker or $XDG_STATE_HOME/ccdocker,
 * podman socket /run/podman/podman.sock or $XDG_RUNTIME_DIR/podman/podman.sock, ...). */
int config_init(DaemonConfig *c, DaemonMode mode);
void config_done(DaemonConfig *c);

/* Reads key=value lines ('#' and ';' comments, blank lines, an optional "[ccdockerd]" section header;
 * keys as in docs/ccdockerd.conf.md, e.g. "MaxMemory=4G"). A missing file is fine when !must_exist.
 * Unknown keys and bad values are errors: -EINVAL, logged as "PATH:LINE: ..." naming the key; every
 * bad line is reported before returning. Returns 1 if the file was read, 0 if it was missing. */
int config_load_file(DaemonConfig *c, const char *path, bool must_exist);

/* Applies one KEY=VALUE assignment (the command line's --set KEY=VALUE uses the same keys). Logs what
 * was wrong and returns -EINVAL for an unknown key or a bad value (c is then unchanged). */
int config_set(DaemonConfig *c, const char *key, const char *value);

/* Checks cross-field consistency (defaults within ceilings, absolute paths); logs and returns -EINVAL. */
int config_verify(const DaemonConfig *c);

/* A number of CPUs as the configuration and CreateSession write it: "2", "1.5", "0.25" (decimal digits,
 * at most three after the point) in thousandths of a CPU. 0 is returned as 0 (callers refuse it);
 * -EINVAL for anything else, -ERANGE if it does not fit. */
int config_parse_cpus(const char *s, uint64_t *ret_millis);

/* Enough for any value of the two formatters below, with the NUL. */
#define CONFIG_FORMAT_MAX 32
/* The most PoolSize= may keep started (daemon/pool.c). */
#define CONFIG_POOL_SIZE_MAX 16

/* The shortest exact form parse_size() reads back: 4294967296 -> "4G", 1536 -> "1536", 1048576 -> "1M". */
const char *config_format_size(uint64_t bytes, char buf[static CONFIG_FORMAT_MAX]);
/* Thousandths of a CPU as config_parse_cpus() reads them: 2000 -> "2", 1500 -> "1.5", 250 -> "0.25". */
const char *config_format_cpus(uint64_t millis, char buf[static CONFIG_FORMAT_MAX]);

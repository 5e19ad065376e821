/* Validation at the edge (STYLE.md 7): CreateSession's a{sv} becomes a SessionConfig here, checked
 * against the daemon's ceilings, or a D-Bus error that names the field. Nothing past this file sees
 * unchecked input. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "cleanup.h"
#include "config.h"
#include "core-error.h"
#include "secrets.h"

typedef enum WorkspaceType {
        WORKSPACE_EPHEMERAL, /* a directory the daemon creates and removes with the session */
        WORKSPACE_HOST,      /* an existing host directory, below a configured workspace root */
} WorkspaceType;

typedef struct SessionConfig {
        WorkspaceType workspace_type;
        char *workspace_path; /* WORKSPACE_HOST: absolute, normalised; else NULL */
        char *image;
        uint64_t memory;     /* bytes */
        uint64_t cpu_millis; /* 1000 = one CPU */
        uint64_t tasks;
        uint64_t timeout_sec; /* 0 = no limit */
        char *task_type;      /* free text, may be NULL */
        char **environment;   /* "NAME=value", NULL-ended, names [A-Za-z_][A-Za-z0-9_]*; may be NULL */
        char *network;        /* "none" or "host" */
        char *prompt;         /* an initial prompt (validated like SendPrompt's), or NULL; not stored */
        char *context;        /* a child's: the JSON object its parent gave (spawn_child), or NULL */
        char *slice;          /* the session's slice (set by the daemon, not by callers) */
        char **secrets;       /* the names of the secrets asked for (granted once created), or NULL */
        char **allowed_hosts; /* what the egress proxy lets the session reach (egress-proxy.h entries) */
        /* Claude Code's configuration (SPEC.md 8.2, 8.3); NULL: ccdocker-init's defaults. */
        char **mcp_servers;    /* names of the template's servers to write into .mcp.json */
        char **skills;         /* names of the skills to install */
        char *permission_mode; /* default, acceptEdits, bypassPermissions or plan */
        char **allowed_tools;  /* permissions.allow rules */
        char *mcp_overrides;   /* JSON text of an object: server name -> keys replacing (or adding) */
        /* The most the session and its descendants together may use of the model (0: no limit). */
        double budget_usd;
        uint64_t budget_tokens; /* input + output tokens */
} SessionConfig;

/* The D-Bus error names of cc-docker. */
#define CCDOCKER_ERROR_INVALID_CONFIG "org.ccdocker1.Error.InvalidConfig"
#define CCDOCKER_ERROR_LIMIT "org.ccdocker1.Error.LimitExceeded"
#define CCDOCKER_ERROR_NO_SUCH_SESSION "org.ccdocker1.Error.NoSuchSession"
#define CCDOCKER_ERROR_NO_SUCH_IMAGE "org.ccdocker1.Error.NoSuchImage"
#define CCDOCKER_ERROR_ACCESS_DENIED "org.ccdocker1.Error.AccessDenied"
#define CCDOCKER_ERROR_BAD_STATE "org.ccdocker1.Error.BadState"
#define CCDOCKER_ERROR_INVALID_PROMPT "org.ccdocker1.Error.InvalidPrompt"

/* A prompt for SendPrompt, send_to_child, spawn_child or CreateSession's "prompt": not empty, at most
 * MaxPromptBytes, matching none of PromptDenyPatterns (SPEC.md 9.1). method prefixes the error
 * message. -EINVAL with *e (may be NULL) set to CORE_ERROR_INVALID_PROMPT naming the rule. */
int validate_prompt(const DaemonConfig *dc, const char *method, const char *prompt, CoreError *e);

/* Reads an a{sv} (the message must be positioned at it) into a new SessionConfig with the daemon's
 * defaults for what is absent. Keys: workspace (s: "ephemeral", or an absolute host path), image (s),
 * memory (s like "512M", or t bytes), cpus (s like "1.5", or d), tasks (u or t), timeout_seconds (u or
 * t), task_type (s), environment (a{ss}), network (s: "none" or "host"). On bad input returns -EINVAL
 * with *error set to CCDOCKER_ERROR_INVALID_CONFIG or CCDOCKER_ERROR_LIMIT and a message naming the
 * field, what it must be, and what it got: "CreateSession: field 'memory' must be at most 4G, got
 * '8G'". Unknown keys are refused by name, as are keys given twice. Any other negative return (-ENOMEM)
 * leaves *error unset: an internal failure, not the caller's. A host workspace is returned resolved
 * (realpath) and must lie below a WorkspaceRoots= entry both as written and as resolved; whether the
 * caller may use that directory is not checked here. */
int session_config_from_bus(
        sd_bus_message *m, const DaemonConfig *dc, SessionConfig **ret, sd_bus_error *error);

SessionConfig *session_config_free(SessionConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SessionConfig *, session_config_free);

/* As JSON text and back, for the store (the config a session was created with). to_json returns NULL
 * with errno set (ENOMEM, EINVAL); from_json returns -EBADMSG for text that is not such an object. The
 * JSON is {"workspace":{"type":"ephemeral"|"host","path":...},"image":...,"memory":...,"cpu_millis":...,
 * "tasks":...,"timeout_sec":...,"task_type":...,"environment":{NAME:value},"network":...,"context":{...},
 * "slice":...}; task_type, environment, context and slice are left out when NULL. */
char *session_config_to_json(const SessionConfig *c);
#define SESSION_ALLOWED_HOSTS_MAX 64
#define SESSION_MCP_OVERRIDES_MAX (64 * 1024)

/* A copy of what a child inherits from its parent's config: image, limits, network, environment and
 * allowed hosts;
 * an ephemeral workspace; no prompt, task type, context or slice. */
int session_config_inherit(const SessionConfig *parent, SessionConfig **ret);
int session_config_from_json(const char *json, SessionConfig **ret);

/* A session id is 12 lowercase hex digits: valid in unit and slice names (no '-'), in object paths
 * once escaped, and in container names. */
bool session_id_is_valid(const char *id);
int session_id_new(char ret[static 13]);

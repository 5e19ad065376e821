/* SessionConfig, the core's description of a session as it was asked for: what CreateSession (validate.h)
 * or spawn_child (session_config_inherit()) makes, what the store keeps (as JSON) and what a session is
 * built from. Also its free and its JSON round-trip. Session ids are common/session-id.h. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cleanup.h"
#include "session-id.h"

typedef enum WorkspaceType {
        WORKSPACE_EPHEMERAL, /* a directory the daemon creates and removes with the session */
        WORKSPACE_HOST,      /* an existing host directory, below a configured workspace root */
} WorkspaceType;

typedef struct SessionConfig {
        WorkspaceType workspace_type;
        char *workspace_path; /* WORKSPACE_HOST: absolute, normalised; resolved once checked; else NULL */
        /* WORKSPACE_HOST: the directory the caller was found to be allowed (workspace.h); checked again
         * before the container is made. Not stored: a session read back from the store is not made again. */
        dev_t workspace_dev;
        ino_t workspace_ino;
        bool workspace_checked;
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
        char *runtime;        /* "podman" or "docker" (runtime.h; set by the daemon); NULL: podman */
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

SessionConfig *session_config_free(SessionConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SessionConfig *, session_config_free);

/* As JSON text and back, for the store (the config a session was created with). to_json returns NULL
 * with errno set (ENOMEM, EINVAL); from_json returns -EBADMSG for text that is not such an object. The
 * JSON is {"workspace":{"type":"ephemeral"|"host","path":...},"image":...,"memory":...,"cpu_millis":...,
 * "tasks":...,"timeout_sec":...,"task_type":...,"environment":{NAME:value},"network":...,"context":{...},
 * "slice":...,"runtime":...}; task_type, environment, context, slice and runtime are left out when NULL
 * (a record without "runtime" is podman's). */
char *session_config_to_json(const SessionConfig *c);
int session_config_from_json(const char *json, SessionConfig **ret);

/* A copy of what a child inherits from its parent's config: image, limits, network, environment,
 * allowed hosts and Claude Code's configuration; an ephemeral workspace; no prompt, task type,
 * context, secrets, budget or slice. */
int session_config_inherit(const SessionConfig *parent, SessionConfig **ret);

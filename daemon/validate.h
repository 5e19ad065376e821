/* Validation at the edge (STYLE.md 7): CreateSession's a{sv} becomes a SessionConfig here, checked
 * against the daemon's ceilings, or a D-Bus error that names the field. Nothing past this file sees
 * unchecked input. The SessionConfig itself is session-config.h. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "cleanup.h"
#include "config.h"
#include "core-error.h"
#include "secrets.h"
#include "session-config.h"

/* The D-Bus error names of cc-docker are in core-error.h. */

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

/* A config with the daemon's defaults and nothing asked for: what CreateSession with an empty a{sv} gets
 * (the warm pool's sessions are made from it). NULL when out of memory. */
SessionConfig *session_config_new_default(const DaemonConfig *dc);

/* Ceilings of CreateSession's list fields. */
#define SESSION_ALLOWED_HOSTS_MAX 64
#define SESSION_MCP_OVERRIDES_MAX (64 * 1024)

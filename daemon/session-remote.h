/* What a session without a network reaches through the daemon beyond the model and its allowlist
 * (docs/mcp-servers.md, docs/egress-proxy.md): TCP forwards for the databases its secrets name
 * (POSTGRES_URL's host:port, as the forward "postgres"), and remote MCP servers whose credential the
 * daemon adds (github with GITHUB_TOKEN; mcp_overrides entries of type http, with the secrets their
 * headers name). A secret that a remote server's header uses stays in the daemon: it is not made a
 * podman secret of the container. ccdocker-init learns the forwards and remote servers from the hello
 * (session_remote_hello()). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "session-config.h"

typedef struct Session Session;

/* The forward id POSTGRES_URL is reached by, and the DSN's default port. */
#define SESSION_FORWARD_POSTGRES "postgres"
#define POSTGRES_DEFAULT_PORT 5432

/* Whether the secret name of session config c stays in the daemon (it is a remote MCP server's
 * credential, and c has no network of its own). */
bool session_secret_held(const SessionConfig *c, const char *name);

/* After the session's egress socket is made: its forwards, and its remote MCP servers on mcp.sock
 * (owned by uid:gid). 0 or -errno; a secret whose URL cannot be read is a warning, not an error. */
int session_open_remote(Session *s, uid_t uid, gid_t gid);

/* Adds to the hello's config what ccdocker-init needs: "forwards" {ID: {"secret": NAME, "connect":
 * "ID.forward.invalid:PORT"}}, "remote_mcp" {NAME: {}}, and takes the held secrets out of "secrets". */
int session_remote_hello(Session *s, json_t *config);

/* For the unit tests: the value of an http override's header with each ${NAME} replaced by
 * lookup(NAME); -ENOKEY when lookup has no value for one (ret_missing names it, malloc'd). */
int session_remote_expand_header(
        const char *value,
        const char *(*lookup)(const char *name, void *userdata),
        void *userdata,
        char **ret,
        char **ret_missing);
/* The secret names a header value refers to as ${NAME}, in order, or an empty list. NULL on ENOMEM. */
char **session_remote_header_secrets(const char *value);

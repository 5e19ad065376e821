/* Remote MCP servers through the daemon (docs/mcp-servers.md, docs/egress-proxy.md "Remote MCP
 * servers"): the container's .mcp.json names http://127.0.0.1:PORT/NAME, a loopback port ccdocker-init
 * bridges to mcp.sock in the session's runtime directory; the daemon forwards each request on /NAME to
 * the upstream URL the session's config gives that server, adding the server's credential header
 * itself ("Authorization: Bearer <token>" from a secret), as the model proxy does for the model. The
 * token never enters the container: the client's own Authorization is dropped, and nothing here logs
 * a header. MCP streamable HTTP (POST, GET for the server's stream, DELETE) goes through unchanged;
 * answers (JSON or an SSE stream) are streamed back as they arrive, through a bounded buffer. Runs on
 * the daemon's sd-event loop: libmicrohttpd without a thread or a listening socket, libcurl multi
 * through curl-glue. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#define MCP_REMOTE_SOCKET_NAME "mcp.sock"

/* The MESSAGE_ID of the journal record written for each forwarded request. */
#define MCP_REMOTE_CALL_MESSAGE_ID "7d1f3c0e5a6b4e0f9a3c2b8d1e4f6a70"

#define MCP_REMOTE_BODY_MAX (4U * 1024 * 1024) /* a request body */
#define MCP_REMOTE_BUFFER_MAX (256U * 1024)    /* answer bytes held for a slow client */
#define MCP_REMOTE_CONNECTIONS_MAX 32          /* open connections per session */
#define MCP_REMOTE_SERVERS_MAX 16              /* remote servers per session */
#define MCP_REMOTE_NAME_MAX 64                 /* a server's name, the first path segment */
#define MCP_REMOTE_HEADER_MAX 8192             /* the credential header line */

typedef struct McpRemote McpRemote;
typedef struct McpRemoteSession McpRemoteSession;

/* One remote server of a session. Strings are copied (header wiped from memory when freed). */
typedef struct McpRemoteServer {
        const char *name;   /* [A-Za-z0-9_-], the request path's first segment: /NAME */
        const char *url;    /* the upstream, http:// or https:// */
        const char *header; /* "Name: value" added to every request, or NULL */
} McpRemoteServer;

int mcp_remote_new(sd_event *event, McpRemote **ret);
/* Ends every session (their sockets are removed) and every request. */
McpRemote *mcp_remote_free(McpRemote *p);

/* Listens on socket_path (a stale socket is replaced; mode 0600, owned by uid:gid) for session_id, which
 * reaches the n servers (each name once, at most MCP_REMOTE_SERVERS_MAX; -EINVAL otherwise). */
int mcp_remote_listen(
        McpRemote *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        const McpRemoteServer *servers,
        size_t n,
        McpRemoteSession **ret);
McpRemoteSession *mcp_remote_session_free(McpRemoteSession *s);
/* admit(fd, userdata) is asked of each new connection before it is read: <= 0 closes it unheard. */
void mcp_remote_session_set_admit(McpRemoteSession *s, int (*admit)(int fd, void *userdata), void *userdata);

/* ---- pure, for the unit tests ---- */

/* Whether name is a remote server name: 1 to MCP_REMOTE_NAME_MAX of [A-Za-z0-9_-]. */
bool mcp_remote_name_valid(const char *name);
/* The upstream URL of request target ("/NAME", "/NAME/rest", "/NAME?query") for server name at url:
 * url with the rest after /NAME appended (one '/' between them). NULL when target is not on /NAME or has
 * a "." or ".." segment, or out of memory. */
char *mcp_remote_upstream_url(const char *target, const char *name, const char *url);
/* The first path segment of target: the server's name (copied to ret, MCP_REMOTE_NAME_MAX + 1 bytes). */
bool mcp_remote_target_name(const char *target, char *ret);
/* Whether a client's request header goes upstream (not the client's Authorization or Cookie, hop-by-hop
 * headers, Host, Content-Length, Accept-Encoding) and an upstream answer's comes back. */
bool mcp_remote_request_header_forwarded(const char *name);
bool mcp_remote_response_header_forwarded(const char *name);

static inline void mcp_remote_freep(McpRemote **p) {
        if (*p)
                mcp_remote_free(*p);
}

static inline void mcp_remote_session_freep(McpRemoteSession **s) {
        if (*s)
                mcp_remote_session_free(*s);
}

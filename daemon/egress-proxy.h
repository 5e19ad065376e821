/* The egress proxy (DESIGN.md decision 11, SPEC.md 9.5): an HTTP CONNECT proxy on one unix socket per
 * session (egress.sock in the session's runtime directory, bridged to a loopback port in the container
 * by ccdocker-init and set as its HTTPS_PROXY). A session reaches only the hosts its allowlist names;
 * everything else is answered 403 with the host named, and so is an allowed name whose addresses are all
 * loopback, link-local or private ones the allowlist does not name. Every decision is a journal record.
 * docs/egress-proxy.md has the behaviour; the head parser, the allowlist match and the address check are
 * pure (egress-policy.c) and exported for the unit and fuzz tests. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "mcp-remote.h"

#define EGRESS_SOCKET_NAME "egress.sock"
#define EGRESS_HEAD_MAX 8192 /* bytes of a request head, up to and including its blank line */
#define EGRESS_HOST_MAX 253  /* a DNS name's length; an IPv6 literal is shorter */
#define EGRESS_METHOD_MAX 15

/* The MESSAGE_ID of an egress decision record (docs/egress-proxy.md). */
#define EGRESS_DECISION_MESSAGE_ID "5cae453ebbd44387a722330274638946"

typedef struct EgressProxy EgressProxy;
typedef struct EgressSession EgressSession;

/* A parsed request head. For CONNECT, host is the target without brackets (an IPv6 literal has ':'
 * in it), lowercased, and port its port; for other methods host and port are empty/0. */
typedef struct EgressRequest {
        char method[EGRESS_METHOD_MAX + 1];
        char host[EGRESS_HOST_MAX + 1];
        uint16_t port;
} EgressRequest;

/* Parses the request head at the start of buf[0, len). Returns 0 when more bytes are needed (no blank
 * line yet and len < EGRESS_HEAD_MAX); 1 for a CONNECT with a valid authority (*ret_head_len is the
 * head's length including its blank line: what follows belongs to the tunnel); -EOPNOTSUPP for a
 * well-formed request with another method (ret->method says which); -E2BIG when no head ends within
 * EGRESS_HEAD_MAX bytes; -EBADMSG for anything else. Never reads past buf[len - 1]; ret and
 * ret_head_len are written only when the return value is 1 or -EOPNOTSUPP. */
int egress_parse_head(const char *buf, size_t len, EgressRequest *ret, size_t *ret_head_len);

/* Whether an allowlist entry is well formed: "host", "host:port", "*.domain", "*.domain:port", with
 * "[v6]" for an IPv6 literal. */
bool egress_allow_entry_valid(const char *entry);

/* Whether host:port (as parsed: lowercase, no brackets) is allowed by one of the entries (a NULL-
 * terminated list; NULL is empty). "host" allows every port, "*.domain" every name under domain but
 * not domain itself. Names compare case-insensitively; malformed entries allow nothing. */
bool egress_host_allowed(char *const *allowed, const char *host, uint16_t port);

/* What an address is, for the check of the addresses an allowed host resolves to. */
typedef enum EgressAddressClass {
        EGRESS_ADDRESS_PUBLIC,
        EGRESS_ADDRESS_LOOPBACK,    /* 127/8, ::1 */
        EGRESS_ADDRESS_LINK_LOCAL,  /* 169.254/16 (169.254.169.254, the cloud metadata service), fe80::/10 */
        EGRESS_ADDRESS_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10 */
        EGRESS_ADDRESS_UNSPECIFIED, /* 0/8, :: */
        EGRESS_ADDRESS_MULTICAST,   /* 224/4, ff00::/8 */
        EGRESS_ADDRESS_RESERVED,    /* 240/4 with 255.255.255.255, another family */
} EgressAddressClass;

/* The class of addr, a struct in_addr for AF_INET or a struct in6_addr for AF_INET6. An IPv4 address
 * inside IPv6 (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd::)
 * has the class of that IPv4 address. */
EgressAddressClass egress_address_classify(int family, const void *addr);
/* "public", "loopback", "link-local", "private", "unspecified", "multicast", "reserved". */
const char *egress_address_class_to_string(EgressAddressClass c);

/* Whether a CONNECT to host:port, which egress_host_allowed() allowed, may go to sa (AF_INET or
 * AF_INET6), one of the addresses host is (or resolves to): a public address always; any other only when
 * an entry of allowed that is not a wildcard, and whose port matches, is that address as a literal
 * (IPv4 and IPv4-mapped IPv6 compare equal), or, for a loopback address, is the name host when that is
 * "localhost" or a name under it. */
bool egress_address_permitted(
        char *const *allowed, const char *host, uint16_t port, const struct sockaddr *sa);

/* The proxy: owns the sessions' sockets and connections, and its resolver, on the daemon's loop. */
int egress_proxy_new(sd_event *event, EgressProxy **ret);
/* Frees every session (their sockets are removed) and ends the host name lookups still running. */
EgressProxy *egress_proxy_free(EgressProxy *p);

/* Listens on socket_path (a stale socket there is replaced; created 0600 and owned by uid:gid, the
 * container's user) for the session session_id, which may reach the hosts of allowed_hosts (copied;
 * NULL or empty: none). Every entry must pass egress_allow_entry_valid() (else -EINVAL). The session
 * lives until egress_session_free() or the proxy's end. */
int egress_proxy_listen(
        EgressProxy *p,
        const char *session_id,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        char **allowed_hosts,
        EgressSession **ret);

/* Each session's decision records: at most this many per window (the rest counted and said). */
#define EGRESS_LOG_INTERVAL_SEC 10
#define EGRESS_LOG_BURST 100

/* Closes the socket (and removes it) and every connection of the session. */
EgressSession *egress_session_free(EgressSession *s);
/* admit(fd, userdata) is asked of each new connection before it is read: <= 0 closes it unheard. */
void egress_session_set_admit(EgressSession *s, int (*admit)(int fd, void *userdata), void *userdata);

/* TCP forwards (docs/egress-proxy.md, "Forwards"): a session may be given a few destinations that it
 * names by id, not by address: "CONNECT ID.forward.invalid:PORT" reaches the host:port the daemon set for
 * that id (PORT must be the forward's own port), and nothing else. The container cannot choose where a
 * forward goes; a forward's destination is the daemon's (a secret's host:port), so it is not subject to
 * the allowlist or the local-address check, and it does not widen the allowlist either. */
#define EGRESS_FORWARD_SUFFIX ".forward.invalid"
#define EGRESS_FORWARD_ID_MAX 32
#define EGRESS_FORWARDS_MAX 8 /* per session */

/* Whether id is a forward id: 1 to EGRESS_FORWARD_ID_MAX of [a-z0-9-], not starting with '-'. */
bool egress_forward_id_valid(const char *id);
/* Whether host (as parsed: lowercase) is "ID.forward.invalid" with a valid ID; writes ID to ret
 * (EGRESS_FORWARD_ID_MAX + 1 bytes). */
bool egress_forward_id_of(const char *host, char *ret);
/* The host and port of a URL "scheme://[userinfo@]host[:port][/...]" (a DSN such as
 * postgresql://u:p@db.example.com:5432/app), default_port when it has none. The host is lowercased,
 * without brackets. -EINVAL for no host (a unix socket DSN), several hosts, or a malformed one. */
int egress_url_authority(const char *url, uint16_t default_port, char **ret_host, uint16_t *ret_port);
/* Adds the forward id -> host:port to the session (-EINVAL for a bad id or host, -EEXIST for an id it
 * has, -E2BIG past EGRESS_FORWARDS_MAX). */
int egress_session_add_forward(EgressSession *s, const char *id, const char *host, uint16_t port);

/* The session's remote MCP servers (mcp-remote.h) on socket_path (mcp.sock beside egress.sock), owned
 * by uid:gid and admitted as the egress socket is; they end with the session. Once per session
 * (-EEXIST). */
int egress_session_add_mcp_remote(
        EgressSession *s,
        const char *socket_path,
        uid_t uid,
        gid_t gid,
        const McpRemoteServer *servers,
        size_t n);

/* Open connections of the session, for tests and the session's status. */
unsigned egress_session_connections(const EgressSession *s);

static inline void egress_proxy_freep(EgressProxy **p) {
        if (*p)
                egress_proxy_free(*p);
}

static inline void egress_session_freep(EgressSession **s) {
        if (*s)
                egress_session_free(*s);
}

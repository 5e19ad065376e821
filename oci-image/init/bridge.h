/* Loopback bridges of ccdocker-init (DESIGN.md decision 11): a container runs with --network=none, and
 * what it may reach (the daemon's model proxy, its egress proxy) are unix sockets in /run/ccdocker. A
 * Bridge listens on 127.0.0.1 on an ephemeral port inside the container and relays each accepted
 * connection to a new connection to its unix socket, both ways, with half-closes passed on. It runs in
 * the caller's poll() loop: the caller asks for pollfds (bridge_poll_fill) and hands back what poll()
 * said (bridge_poll_dispatch). No threads; each connection's bytes go through a Relay (common/relay.h), one
 * bounded buffer per direction. */
#pragma once

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#define BRIDGE_CONNECTIONS_MAX 256 /* the listener is not polled while this many are open */

/* What ccdocker-init puts in claude's environment for the bridges. */
#define BRIDGE_PLACEHOLDER_API_KEY "sk-ant-placeholder-ccdocker"
#define BRIDGE_NO_PROXY "127.0.0.1,localhost"

typedef struct Bridge Bridge;

/* Called for what a bridge has to say (level is a syslog level); message is only valid during the call. */
typedef void (*BridgeLogFunc)(int level, const char *message, void *userdata);

/* Listens on 127.0.0.1:0 for connections to relay to socket_path. name ("model", "egress") is for
 * messages. Returns 0 or -errno. */
int bridge_new(const char *name, const char *socket_path, Bridge **ret);
/* A TCP forward (docs/egress-proxy.md, "Forwards"): a bridge to the egress socket at socket_path whose
 * every connection first asks "CONNECT target HTTP/1.1" (target "ID.forward.invalid:PORT", as the
 * daemon's hello gives it) and, once the proxy answers 200, relays; a refusal closes the connection and
 * is logged with the proxy's answer. */
int bridge_new_forward(const char *name, const char *socket_path, const char *target, Bridge **ret);
Bridge *bridge_free(Bridge *b);
void bridge_set_log(Bridge *b, BridgeLogFunc log, void *userdata);

/* The port it listens on, in host order. */
uint16_t bridge_port(const Bridge *b);
/* Connections open now. */
size_t bridge_connections(const Bridge *b);

/* The most pollfds bridge_poll_fill() may write now. */
size_t bridge_poll_max(const Bridge *b);
/* Writes the bridge's pollfds to p (room for bridge_poll_max()) and returns how many. Entries it has
 * nothing to wait for have fd -1, which poll() skips. */
size_t bridge_poll_fill(Bridge *b, struct pollfd *p);
/* Handles what poll() reported in p, the same entries bridge_poll_fill() wrote: accepts, relays,
 * closes finished connections. */
void bridge_poll_dispatch(Bridge *b, const struct pollfd *p);

/* Sets the environment claude gets: for a model bridge (model_port != 0) ANTHROPIC_BASE_URL, and
 * ANTHROPIC_API_KEY to a placeholder when no credential variable is set (the daemon's proxy adds the
 * real one); for an egress bridge (egress_port != 0) HTTPS_PROXY, HTTP_PROXY, https_proxy, http_proxy
 * and NO_PROXY/no_proxy. Returns 0 or -errno. */
int bridge_setenv(uint16_t model_port, uint16_t egress_port);

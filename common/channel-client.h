/* The client side of the session channel (docs/channel.md), as ccdocker-init and ccdocker-mcp speak
 * it inside a session container: a non-blocking connection to the unix socket (by default
 * /run/ccdocker/session.sock), a "hello" with the client's role sent as soon as it is connected,
 * JSON-RPC 2.0 one message per line (common/jsonrpc.h) both ways, and integer request ids. It runs in
 * the caller's poll() loop and needs no other event loop: the caller polls channel_client_fd() for
 * channel_client_poll_events(), hands what poll() said to channel_client_dispatch(), and calls
 * channel_client_flush() before it polls again. What the program does with the messages, and when it
 * reconnects, is its own: it learns of them through three hooks. The program ignores SIGPIPE. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonrpc.h"
#include "time-util.h"

#define CHANNEL_LINE_MAX (8U * 1024 * 1024) /* the channel's line limit, both ways */
#define CHANNEL_PROTOCOL 1

typedef enum ChannelState {
        CHANNEL_DOWN,       /* no connection */
        CHANNEL_CONNECTING, /* connect() under way */
        CHANNEL_HELLO,      /* connected, hello sent, its answer not in yet */
        CHANNEL_READY,      /* the daemon answered hello */
} ChannelState;

typedef struct ChannelClient ChannelClient;

typedef struct ChannelClientHooks {
        /* The answer to hello. A result: the state is CHANNEL_READY now. An error response: the
         * connection is closed already (CHANNEL_DOWN). */
        void (*hello)(ChannelClient *c, const struct jsonrpc_message *m, void *userdata);
        /* Every other valid message: the daemon's requests and notifications, and the answers to the
         * program's requests. (An invalid one is logged and, when it had an id, answered with the
         * error; the program does not see it.) */
        void (*message)(ChannelClient *c, const struct jsonrpc_message *m, void *userdata);
        /* The connect failed (was is CHANNEL_CONNECTING; error is what connect() said), or the
         * connection ended (was is CHANNEL_HELLO or CHANNEL_READY; error is ECONNRESET). why says it
         * for messages. The connection is closed already; the hook may connect again. */
        void (*down)(ChannelClient *c, ChannelState was, int error, const char *why, void *userdata);
} ChannelClientHooks;

/* A client for the socket at path, saying hello as role ("init", "mcp"). Both strings are borrowed
 * and must outlive the client. Nothing is connected yet. 0 or -ENOMEM. */
int channel_client_new(
        const char *path,
        const char *role,
        const ChannelClientHooks *hooks,
        void *userdata,
        ChannelClient **ret);
ChannelClient *channel_client_free(ChannelClient *c);

ChannelState channel_client_state(const ChannelClient *c);
const char *channel_client_path(const ChannelClient *c);

/* Starts connecting (the state must be CHANNEL_DOWN). A connect() that fails is reported through the
 * down hook, called before this returns, and this returns 0; a connection that is made at once sends
 * hello at once. -errno only for what no retry mends: -ENAMETOOLONG (the path is too long for a unix
 * socket), socket() failing, -ENOMEM. */
int channel_client_connect(ChannelClient *c);
/* Closes the connection, drops what was not written and forgets the hello; CHANNEL_DOWN. No hook. */
void channel_client_close(ChannelClient *c);

/* The fd to poll (-EBADF while down) and what to poll it for: POLLOUT while connecting, else POLLIN,
 * with POLLOUT while bytes wait to be written. */
int channel_client_fd(const ChannelClient *c);
short channel_client_poll_events(const ChannelClient *c);
/* Handles what poll() reported for the fd: a finished connect (then hello goes), or reads what there
 * is and calls the hooks for each message, until the socket has nothing more, a bounded number of
 * reads, or the connection is closed or replaced by a hook. 0, or -ENOMEM. */
int channel_client_dispatch(ChannelClient *c, short revents);
/* Writes what the socket takes now; a failed write ends the connection (the down hook). */
void channel_client_flush(ChannelClient *c);
/* Writes what is queued, waiting up to timeout: for the last moments of a program. */
void channel_client_flush_blocking(ChannelClient *c, usec_t timeout);
/* Bytes queued and not yet written. */
size_t channel_client_pending(const ChannelClient *c);

/* Queues msg (borrowed) as one line. 0, or -ENOMEM / -EINVAL from jsonrpc_format_line(). */
int channel_client_send(ChannelClient *c, json_t *msg);
/* Queues a request with the next id and returns the id in *ret_id. params is borrowed. */
int channel_client_request(ChannelClient *c, const char *method, json_t *params, int64_t *ret_id);
int channel_client_respond(ChannelClient *c, json_t *id, json_t *result);
int channel_client_respond_error(ChannelClient *c, json_t *id, int code, const char *message);
/* For a program that writes a request's line itself (ccdocker-init's events): the next id, taken, and
 * raw bytes to queue as they are. */
int64_t channel_client_take_id(ChannelClient *c);
int channel_client_put(ChannelClient *c, const void *data, size_t n);

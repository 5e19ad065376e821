/* The session channel (docs/channel.md): one unix socket per session, bind-mounted into the container
 * as /run/ccdocker/session.sock; JSON-RPC 2.0 lines on common/jsonrpc. This file is the protocol only:
 * it accepts connections, frames and validates messages, answers errors, and calls the session hooks
 * below; the session decides what a message means. A flood on one session's socket cannot starve the
 * others: each connection reads a bounded amount per event-loop iteration. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "channel-events.h"

typedef struct Channel Channel;

#define CHANNEL_MAX_LINE (8U * 1024 * 1024)
#define CHANNEL_MAX_EVENTS_PER_CALL 1000

/* Error codes of docs/channel.md beyond JSON-RPC's own. */
#define CHANNEL_ERROR_FAILED (-32000)   /* the daemon could not do it */
#define CHANNEL_ERROR_REFUSED (-32001)  /* a limit refused it */
#define CHANNEL_ERROR_NO_CHILD (-32002) /* no such child of this session (whether or not the id exists) */

/* A request of ccdocker-mcp's (child.*, parent.context) that the session answers now or later. It
 * holds its connection: an answer after the connection closed is dropped. */
typedef struct ChannelCall ChannelCall;

/* What the channel calls when a message means something for its session (session-channel.c implements
 * them for the daemon; each gets the userdata the channel was created with). */
typedef struct ChannelHooks {
        /* A new connection on fd: > 0 to take it, <= 0 to close it unheard. NULL: every one is taken. */
        int (*admit)(void *userdata, int fd);
        /* hello: role is "init" or "mcp". Returns the result object (a new reference) or NULL with *error
         * set (a malloc'd message). */
        json_t *(*hello)(void *userdata, const char *role, char **error);
        void (*heartbeat)(void *userdata);
        /* events: already checked to be an array of 1..1000 objects each with integer seq >= 1, integer
         * time and any data. Returns 0 and the acked seq, or a negative errno with *error set: -EBADMSG
         * for a gap (JSON-RPC -32602), other errors -32000. */
        int (*events)(void *userdata, json_t *events, uint64_t *ret_acked, char **error);
        /* The same for a request the fast path took (channel-events.h): n (1..1000) events whose data are
         * spans of the line, valid during the call only. NULL: every request goes to events. */
        int (*events_raw)(
                void *userdata, const ChannelEvent *events, size_t n, uint64_t *ret_acked, char **error);
        void (*log)(void *userdata, const char *level, const char *message);
        /* The answer to a prompt request: r = 0 delivered, negative: the error the client answered or
         * -ECONNRESET when the connection closed first. */
        void (*prompt_delivered)(void *userdata, const char *message_id, int r);
        /* A request of one of ccdocker-mcp's methods (docs/channel.md), on a connection whose hello said
         * "mcp": method is "child.spawn", ..., "parent.context"; params is an object (borrowed). The hook
         * owns call and answers it exactly once, now or later. */
        void (*call)(void *userdata, const char *method, json_t *params, ChannelCall *call);
        /* The init connection went away (the container stopped, or ccdocker-init crashed). */
        void (*init_gone)(void *userdata);
} ChannelHooks;

/* Creates dir (mode 0700, owned by uid:gid), listens on dir/session.sock (mode 0600, owned by uid:gid)
 * on event. A stale socket from an earlier daemon is replaced. hooks (which must outlive the channel)
 * are called with userdata; log_id names the session in log messages. */
int channel_new(
        sd_event *event,
        const ChannelHooks *hooks,
        void *userdata,
        const char *log_id,
        const char *dir,
        uid_t uid,
        gid_t gid,
        Channel **ret);
/* Closes every connection and the listening socket, unlinks the socket and removes dir. No hook is
 * called after it. */
Channel *channel_free(Channel *c);

/* Sends a "prompt" request to the init connection. 0 when sent (the answer arrives through the
 * prompt_delivered hook), -ENOTCONN when no init has said hello. */
int channel_send_prompt(Channel *c, const char *message_id, const char *text);
bool channel_has_init(Channel *c);

/* Answer a call and free it. reply borrows result. */
void channel_call_reply(ChannelCall *call, json_t *result);
void channel_call_error(ChannelCall *call, int code, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
/* A notification (progress) to the caller of a call not yet answered: -ENOTCONN when it is gone.
 * params is borrowed. */
int channel_call_notify(ChannelCall *call, const char *method, json_t *params);
/* Whether the answer can still reach the caller. */
bool channel_call_is_open(const ChannelCall *call);
/* The JSON-RPC id of the request (borrowed), for a notification to name the request it is about. */
json_t *channel_call_id(const ChannelCall *call);
/* Frees a call without answering (its connection is gone). */
ChannelCall *channel_call_free(ChannelCall *call);

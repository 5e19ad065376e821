/* ccdocker-init: the entrypoint (PID 1) of a session container. It says hello on the session channel
 * (docs/channel.md), writes Claude Code's configuration from the session config it gets back, runs
 * one long-lived `claude -p` in stream-json mode, turns each line of its output into a numbered event
 * that it keeps until the daemon has stored it, writes the daemon's prompts to claude's stdin, sends
 * heartbeats, survives a daemon restart (reconnects, resends what was not acked), restarts a claude
 * that dies (--resume), bridges loopback ports to the daemon's model and egress proxies (bridge.c), and
 * reaps every orphan as an init must. One poll() loop over a signalfd, a timerfd, the channel socket,
 * claude's pipes and the bridges' sockets; no threads. docs/ccdocker-init.md has the rest. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "byte-queue.h"
#include "channel-client.h"
#include "cleanup.h"
#include "init-config.h"
#include "jsonrpc.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define PROGRAM "ccdocker-init"

#define EVENTS_PER_CALL 1000
#define EVENT_DATA_MAX (CHANNEL_LINE_MAX - 64 * 1024) /* one event's data, leaving room for the call */
#define TRUNCATED_KEEP (64 * 1024)                    /* text kept of a line too long for the channel */
#define QUEUE_PAUSE_BYTES (64U * 1024 * 1024)         /* stop reading claude while this much is unacked */
#define READ_CHUNK (64 * 1024)
#define READS_PER_ITERATION 16
#define EXTRA_BRIDGES_MAX 9 /* EGRESS_FORWARDS_MAX forwards and the remote MCP servers' bridge */

#define START_CONNECT_USEC (30 * USEC_PER_SEC)
#define BACKOFF_MIN_USEC (50 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (2 * USEC_PER_SEC)
#define HEARTBEAT_USEC (5 * USEC_PER_SEC)
#define EVENTS_HOLD_USEC (1 * USEC_PER_SEC)
#define QUICK_EXIT_USEC (30 * USEC_PER_SEC)
#define MAX_QUICK_RESTARTS 5
#define STOP_CLAUDE_USEC (1500 * USEC_PER_MSEC) /* after closing its stdin, then SIGTERM */
#define STOP_KILL_USEC (1 * USEC_PER_SEC)       /* after SIGTERM, then SIGKILL */
#define STOP_FLUSH_USEC (2 * USEC_PER_SEC)      /* for the last events to be acked */
#define DELIVERED_MAX 1024
#define PENDING_LOGS_MAX 256

enum {
        EXIT_SETUP = 1, /* die(): something needed at start failed */
        EXIT_CLAUDE_GAVE_UP = 2,
};

/* One line of claude's output, waiting for the daemon's ack. data is the JSON text of "data". */
typedef struct Event {
        uint64_t seq;
        int64_t time;
        char *data;
        size_t len;
} Event;

static struct {
        /* what the environment says */
        const char *channel_path;
        const char *claude_bin;
        InitPaths paths;

        int signal_fd, timer_fd;

        /* the channel */
        ChannelClient *conn;
        int64_t events_id;
        uint64_t events_last;  /* the last seq of the events call in flight */
        usec_t events_hold_at; /* the daemon acked only part of a call: the next one waits until then */
        bool ever_ready;
        usec_t start_deadline, reconnect_at, backoff, heartbeat_at;
        json_t *pending_logs; /* log params waiting for a connection */

        /* events not acked yet, oldest first: queue[head, head + n) */
        Event *queue;
        size_t head, n, cap, bytes;
        uint64_t next_seq;

        /* claude */
        char *permission_mode;
        bool permission_prompt; /* --permission-prompt-tool PERMISSION_PROMPT_TOOL */
        char *claude_session;   /* from its system/init event, for --resume */
        pid_t claude_pid;
        int claude_in, claude_out;
        ByteQueue claude_input;
        bool input_midline; /* the last write to claude's stdin stopped inside a line */
        char *line;
        size_t line_len, line_cap;
        uint64_t line_bytes; /* of the current line, including what did not fit */
        usec_t claude_started, restart_at;
        unsigned quick_exits;

        /* message ids of the prompts already written, a ring */
        char *delivered[DELIVERED_MAX];
        size_t delivered_next;

        /* the loopback bridges to the daemon's proxies, when their sockets exist */
        Bridge *model_bridge, *egress_bridge;
        /* the session's TCP forwards and its remote MCP servers' bridge (remote_bridges_open()) */
        Bridge *extra_bridges[EXTRA_BRIDGES_MAX];
        size_t n_extra_bridges;
        struct pollfd *pollfds;
        size_t pollfds_cap;

        /* stopping */
        bool stopping;
        int exit_code;
        usec_t term_at, kill_at, flush_deadline;
} S = {
        .signal_fd = -EBADF,
        .timer_fd = -EBADF,
        .claude_in = -EBADF,
        .claude_out = -EBADF,
        .next_seq = 1,
};

/* Fails loudly (STYLE.md 9): "ccdocker-init: what failed: strerror". The daemon gets the message too
 * when it can be told. */
static _Noreturn void die_errno(int error, const char *format, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void die(const char *format, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void die_va(int error, const char *format, va_list ap) {
        _cleanup_free_ char *what = NULL, *message = NULL;

        if (vasprintf(&what, format, ap) < 0)
                what = NULL;
        if (error != 0)
                (void) asprintf(&message, "%s: %s", strempty(what), strerror(abs(error)));
        else
                message = what ? strdup(what) : NULL;
        fprintf(stderr, PROGRAM ": %s\n", strempty(message));

        if (S.conn && channel_client_state(S.conn) == CHANNEL_READY && message) {
                _cleanup_(json_decrefp)
                        json_t *params = json_pack("{s:s, s:s}", "level", "error", "message", message),
                               *n = params ? jsonrpc_notification_new("log", params) : NULL;

                if (n && channel_client_send(S.conn, n) >= 0)
                        channel_client_flush_blocking(S.conn, USEC_PER_SEC);
        }
        if (S.claude_pid > 0)
                (void) kill(S.claude_pid, SIGKILL);
        /* _exit(): what the callers' frames own is not freed on this way out, and is no leak. */
        _exit(EXIT_SETUP);
}

static void die_errno(int error, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        die_va(error, format, ap);
}

static void die(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        die_va(0, format, ap);
}

static _Noreturn void die_oom(void) {
        die_errno(ENOMEM, "allocating memory");
}

/* ---- byte queues ---- */

static void buf_put(ByteQueue *b, const void *p, size_t n) {
        if (byte_queue_put(b, p, n) < 0)
                die_oom();
}

static void buf_puts(ByteQueue *b, const char *s) {
        buf_put(b, s, strlen(s));
}

/* ---- logging to the daemon ---- */

/* Logs on stderr (the container log) and sends a "log" notification to the daemon, now or after the
 * next hello. */
static void report(int level, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void conn_send(json_t *msg);

static void send_log(const char *level, const char *message) {
        _cleanup_(json_decrefp) json_t *params = json_pack("{s:s, s:s}", "level", level, "message", message);

        if (!params)
                die_oom();
        if (channel_client_state(S.conn) == CHANNEL_READY) {
                _cleanup_(json_decrefp) json_t *n = jsonrpc_notification_new("log", params);

                if (!n)
                        die_oom();
                conn_send(n);
        } else if (json_array_size(S.pending_logs) < PENDING_LOGS_MAX)
                (void) json_array_append(S.pending_logs, params);
}

static void report(int level, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                die_oom();
        log_full(level, "%s", message);
        send_log(level <= LOG_ERR ? "error" : level == LOG_WARNING ? "warning" : "info", message);
}

/* ---- the event queue ---- */

static Event *queue_at(size_t i) {
        return &S.queue[S.head + i];
}

static void queue_push(int64_t time, char *data, size_t len) {
        if (S.head + S.n == S.cap) {
                if (S.head > 0) {
                        memmove(S.queue, S.queue + S.head, S.n * sizeof(Event));
                        S.head = 0;
                }
                if (S.n == S.cap) {
                        size_t cap = S.cap ? S.cap * 2 : 256;
                        Event *q = reallocarray(S.queue, cap, sizeof(Event));

                        if (!q)
                                die_oom();
                        S.queue = q;
                        S.cap = cap;
                }
        }
        S.queue[S.head + S.n++] = (Event){ .seq = S.next_seq++, .time = time, .data = data, .len = len };
        S.bytes += len;
}

/* Drops the events the daemon has stored, seq <= acked. */
static void queue_ack(uint64_t acked) {
        while (S.n > 0 && queue_at(0)->seq <= acked) {
                S.bytes -= queue_at(0)->len;
                free(queue_at(0)->data);
                S.head++;
                S.n--;
        }
        if (S.n == 0)
                S.head = 0;
}

/* After a hello: the daemon has stored everything up to last_seq. What is left is numbered on from
 * there, which changes nothing unless the daemon lost events (then a gap would be refused forever) or
 * this is a new init in an old session (its first event follows the last one stored). */
static void queue_resync(uint64_t last_seq) {
        queue_ack(last_seq);
        if (S.n > 0 && queue_at(0)->seq != last_seq + 1)
                report(LOG_WARNING,
                       "the daemon has events up to %" PRIu64 " but the oldest unacked one is %" PRIu64
                       ": numbering the %zu unacked events from %" PRIu64,
                       last_seq,
                       queue_at(0)->seq,
                       S.n,
                       last_seq + 1);
        for (size_t i = 0; i < S.n; i++)
                queue_at(i)->seq = last_seq + 1 + i;
        S.next_seq = last_seq + 1 + S.n;
}

/* ---- the channel ---- */

static void conn_send(json_t *msg) {
        if (channel_client_send(S.conn, msg) < 0)
                die_oom();
}

static int64_t conn_request(const char *method, json_t *params) {
        int64_t id;

        if (channel_client_request(S.conn, method, params, &id) < 0)
                die_oom();
        return id;
}

static void conn_respond(json_t *id, json_t *result) {
        if (channel_client_respond(S.conn, id, result) < 0)
                die_oom();
}

static void conn_respond_error(json_t *id, int code, const char *message) {
        if (channel_client_respond_error(S.conn, id, code, message) < 0)
                die_oom();
}

static void conn_close(void) {
        channel_client_close(S.conn);
        S.events_id = 0;
        S.heartbeat_at = S.events_hold_at = 0;
}

/* A connect that failed or a connection that ended: try again after the backoff. Before the first
 * hello, only until the start deadline. */
static void conn_retry(int error) {
        usec_t t = now_usec(CLOCK_MONOTONIC);

        conn_close();
        if (!S.ever_ready && t >= S.start_deadline)
                die_errno(error, "connecting to %s", S.channel_path);
        S.reconnect_at = t + S.backoff;
        S.backoff = S.backoff * 2 > BACKOFF_MAX_USEC ? BACKOFF_MAX_USEC : S.backoff * 2;
}

/* The channel client's down hook: a connect failed, or the connection ended. */
static void on_conn_down(ChannelClient *c, ChannelState was, int error, const char *why, void *userdata) {
        if (was == CHANNEL_READY)
                log_warning("the channel to the daemon is gone (%s): reconnecting", why);
        conn_retry(was == CHANNEL_CONNECTING ? error : ECONNRESET);
}

/* The daemon refused something: the connection goes, and the next hello says where it is. */
static void conn_lost(const char *why) {
        on_conn_down(S.conn, channel_client_state(S.conn), ECONNRESET, why, NULL);
}

static void conn_connect(void) {
        int r;

        S.reconnect_at = 0;
        r = channel_client_connect(S.conn);
        if (r == -ENAMETOOLONG)
                die("the channel path %s is longer than a unix socket path may be", S.channel_path);
        if (r < 0)
                die_errno(r, "connecting to %s", S.channel_path);
}

/* The answer to the last events call: drop what is stored; the rest goes again with the next call. */
static void on_events_answer(const struct jsonrpc_message *m) {
        json_t *acked = json_object_get(m->result, "acked");

        S.events_id = 0;
        if (m->kind == JSONRPC_ERROR_RESPONSE || !json_is_integer(acked) || json_integer_value(acked) < 0) {
                /* A gap or a store failure: reconnect, and hello says where the daemon is. */
                report(LOG_WARNING,
                       "the daemon refused events %" PRIu64 "..: %s",
                       S.n > 0 ? queue_at(0)->seq : S.next_seq,
                       m->error_message ?: "no \"acked\" in the answer");
                conn_lost("events refused");
                return;
        }
        queue_ack((uint64_t) json_integer_value(acked));
        if ((uint64_t) json_integer_value(acked) < S.events_last) /* stored only part: not at once again */
                S.events_hold_at = now_usec(CLOCK_MONOTONIC) + EVENTS_HOLD_USEC;
}

static int claude_start(void);
static void remote_bridges_open(json_t *config, json_t *warnings);

/* ccdocker-mcp's tool that asks a person to approve a tool call (docs/ccdocker-mcp.md). */
#define PERMISSION_PROMPT_TOOL "mcp__cc-docker__permission_prompt"

/* A session that is not in bypassPermissions asks a person about each tool call that needs approval,
 * through ccdocker-mcp, when the session has the cc-docker MCP server (an absent list is all of them). */
static bool wants_permission_prompt(const json_t *config, const char *mode) {
        json_t *servers = json_object_get(config, "mcp_servers"), *it;
        size_t i;

        if (streq(mode, "bypassPermissions"))
                return false;
        if (!json_is_array(servers))
                return true;
        json_array_foreach (servers, i, it)
                if (streq_ptr(json_string_value(it), "cc-docker"))
                        return true;
        return false;
}

/* The first hello: now Claude Code can be configured and started. */
static void first_start(json_t *config) {
        _cleanup_(json_decrefp) json_t *warnings = json_array();
        _cleanup_free_ char *what = NULL;
        json_t *mode = json_object_get(config, "permission_mode"), *w;
        size_t i;
        int r;

        if (!warnings)
                die_oom();
        if (!json_is_object(config))
                die("the daemon's hello answer has no session config");
        if (mode && !json_is_null(mode)) {
                const char *m = json_string_value(mode);

                if (isempty(m) ||
                    strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(m))
                        die("the session config has an invalid permission_mode");
                S.permission_mode = strdup(m);
        } else
                S.permission_mode = strdup("default");
        if (!S.permission_mode)
                die_oom();
        S.permission_prompt = wants_permission_prompt(config, S.permission_mode);

        /* Before the configuration: the conditional MCP servers look at these variables. */
        r = init_secrets_load(config, getenv("CCDOCKER_SECRETS_DIR") ?: "/run/ccdocker-secrets", warnings);
        if (r < 0)
                die_errno(r, "reading the session's secrets");
        remote_bridges_open(config, warnings);

        r = init_config_write(&S.paths, config, warnings, &what);
        if (r < 0)
                die_errno(r, "%s", strempty(what));
        json_array_foreach (warnings, i, w)
                report(LOG_WARNING, "%s", json_string_value(w));

        r = claude_start();
        if (r < 0)
                die_errno(r, "starting %s", S.claude_bin);
}

static void on_hello_answer(ChannelClient *c, const struct jsonrpc_message *m, void *userdata) {
        json_t *protocol, *last_seq;
        size_t i;
        json_t *p;

        if (m->kind == JSONRPC_ERROR_RESPONSE) {
                if (!S.ever_ready)
                        die("the daemon refused hello: %s (%d)", m->error_message, m->error_code);
                log_warning("the daemon refused hello: %s (%d)", m->error_message, m->error_code);
                conn_lost("hello refused");
                return;
        }
        protocol = json_object_get(m->result, "protocol");
        last_seq = json_object_get(m->result, "last_seq");
        if (!json_is_integer(protocol) || json_integer_value(protocol) != 1)
                die("the daemon speaks channel protocol %s, this init speaks 1",
                    json_is_integer(protocol) ? "another" : "(none given)");
        if (!json_is_integer(last_seq) || json_integer_value(last_seq) < 0)
                die("the daemon's hello answer has no valid last_seq");

        S.backoff = BACKOFF_MIN_USEC;
        S.heartbeat_at = now_usec(CLOCK_MONOTONIC) + HEARTBEAT_USEC;
        queue_resync((uint64_t) json_integer_value(last_seq));

        json_array_foreach (S.pending_logs, i, p) {
                _cleanup_(json_decrefp) json_t *n = jsonrpc_notification_new("log", p);

                if (!n)
                        die_oom();
                conn_send(n);
        }
        json_array_clear(S.pending_logs);

        if (!S.ever_ready) {
                S.ever_ready = true;
                log_info(
                        "connected to %s; the session's events start at %" PRIu64,
                        S.channel_path,
                        S.next_seq);
                first_start(json_object_get(m->result, "config"));
        } else
                log_info("reconnected to %s; resending %zu unacked events", S.channel_path, S.n);
}

static bool delivered(const char *message_id) {
        for (size_t i = 0; i < DELIVERED_MAX; i++)
                if (S.delivered[i] && streq(S.delivered[i], message_id))
                        return true;
        return false;
}

/* prompt: one stream-json user message on claude's stdin, once per message_id. */
static void on_prompt(json_t *id, json_t *params) {
        json_t *mid = json_object_get(params, "message_id"), *text = json_object_get(params, "text");
        _cleanup_(json_decrefp) json_t *msg = NULL, *empty = json_object();
        _cleanup_free_ char *line = NULL;

        if (!json_is_string(mid) || isempty(json_string_value(mid))) {
                conn_respond_error(
                        id, JSONRPC_INVALID_PARAMS, "params.message_id must be a non-empty string");
                return;
        }
        if (!json_is_string(text)) {
                conn_respond_error(id, JSONRPC_INVALID_PARAMS, "params.text must be a string");
                return;
        }
        if (S.stopping) {
                conn_respond_error(id, -32000, "ccdocker-init is stopping");
                return;
        }

        if (!delivered(json_string_value(mid))) {
                msg = json_pack(
                        "{s:s, s:{s:s, s:O}, s:n, s:s}",
                        "type",
                        "user",
                        "message",
                        "role",
                        "user",
                        "content",
                        text,
                        "parent_tool_use_id",
                        "session_id",
                        "default");
                if (!msg)
                        die_oom();
                line = json_dumps(msg, JSON_COMPACT);
                if (!line)
                        die_oom();
                buf_puts(&S.claude_input, line);
                buf_puts(&S.claude_input, "\n");

                free(S.delivered[S.delivered_next]);
                S.delivered[S.delivered_next] = strdup(json_string_value(mid));
                if (!S.delivered[S.delivered_next])
                        die_oom();
                S.delivered_next = (S.delivered_next + 1) % DELIVERED_MAX;
                log_debug("prompt %s queued for claude (%zu bytes)", json_string_value(mid), strlen(line));
        }
        if (!empty)
                die_oom();
        conn_respond(id, empty);
}

/* The channel client's message hook: the daemon's requests and the answers to events. */
static void on_conn_message(ChannelClient *c, const struct jsonrpc_message *m, void *userdata) {
        int64_t id;

        switch (m->kind) {
        case JSONRPC_REQUEST:
                if (streq(m->method, "prompt"))
                        on_prompt(m->id, m->params);
                else {
                        _cleanup_free_ char *text = NULL;

                        if (asprintf(&text, "unknown method '%s'", m->method) < 0)
                                die_oom();
                        conn_respond_error(m->id, JSONRPC_METHOD_NOT_FOUND, text);
                }
                break;
        case JSONRPC_NOTIFICATION:
                break;
        case JSONRPC_RESPONSE:
        case JSONRPC_ERROR_RESPONSE:
                id = json_is_integer(m->id) ? (int64_t) json_integer_value(m->id) : 0;
                if (id != 0 && id == S.events_id)
                        on_events_answer(m);
                else if (m->kind == JSONRPC_ERROR_RESPONSE)
                        log_warning(
                                "the daemon answered request %" PRIi64 " with an error: %s (%d)",
                                id,
                                m->error_message,
                                m->error_code);
                break;
        }
}

static const ChannelClientHooks conn_hooks = {
        .hello = on_hello_answer,
        .message = on_conn_message,
        .down = on_conn_down,
};

static void conn_put(const void *p, size_t n) {
        if (channel_client_put(S.conn, p, n) < 0)
                die_oom();
}

static void conn_puts(const char *s) {
        conn_put(s, strlen(s));
}

/* Sends the unacked events, one events call at a time: what arrives while one is in flight goes in
 * the next call, so the first event of a burst waits for nothing and the rest are batched. */
static void events_send(void) {
        char head[128], item[96];
        size_t len, count = 0;

        if (S.events_hold_at && now_usec(CLOCK_MONOTONIC) >= S.events_hold_at)
                S.events_hold_at = 0;
        if (channel_client_state(S.conn) != CHANNEL_READY || S.events_id != 0 || S.n == 0 ||
            S.events_hold_at)
                return;

        S.events_id = channel_client_take_id(S.conn);
        len = (size_t) snprintf(
                head,
                sizeof(head),
                "{\"jsonrpc\":\"2.0\",\"id\":%" PRIi64 ",\"method\":\"events\",\"params\":{\"events\":[",
                S.events_id);
        conn_puts(head);
        for (size_t i = 0; i < S.n && count < EVENTS_PER_CALL; i++) {
                Event *e = queue_at(i);
                int k = snprintf(
                        item,
                        sizeof(item),
                        "%s{\"seq\":%" PRIu64 ",\"time\":%" PRIi64 ",\"data\":",
                        count > 0 ? "," : "",
                        e->seq,
                        e->time);

                if (count > 0 && len + (size_t) k + e->len + 8 > CHANNEL_LINE_MAX)
                        break;
                conn_put(item, (size_t) k);
                conn_put(e->data, e->len);
                conn_puts("}");
                len += (size_t) k + e->len + 1;
                count++;
                S.events_last = e->seq;
        }
        conn_puts("]}}\n");
}

static void heartbeat(void) {
        _cleanup_(json_decrefp) json_t *params = json_object();

        if (!params)
                die_oom();
        (void) conn_request("heartbeat", params);
        S.heartbeat_at = now_usec(CLOCK_MONOTONIC) + HEARTBEAT_USEC;
}

/* ---- claude's output ---- */

/* A copy of s[0, n) in which every byte that is not part of valid UTF-8, and NUL, is U+FFFD: the text
 * of a raw event must survive a JSON parser. */
static char *utf8_sanitize(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        char *out = malloc(n * 3 + 1), *o = out;
        size_t i = 0;

        if (!out)
                die_oom();
        while (i < n) {
                unsigned c = p[i];
                size_t len = 0;

                if (c >= 0x01 && c <= 0x7f)
                        len = 1;
                else if (c >= 0xc2 && c <= 0xdf && i + 1 < n && (p[i + 1] & 0xc0) == 0x80)
                        len = 2;
                else if (
                        c >= 0xe0 && c <= 0xef && i + 2 < n && (p[i + 1] & 0xc0) == 0x80 &&
                        (p[i + 2] & 0xc0) == 0x80 && !(c == 0xe0 && p[i + 1] < 0xa0) &&
                        !(c == 0xed && p[i + 1] > 0x9f))
                        len = 3;
                else if (
                        c >= 0xf0 && c <= 0xf4 && i + 3 < n && (p[i + 1] & 0xc0) == 0x80 &&
                        (p[i + 2] & 0xc0) == 0x80 && (p[i + 3] & 0xc0) == 0x80 &&
                        !(c == 0xf0 && p[i + 1] < 0x90) && !(c == 0xf4 && p[i + 1] > 0x8f))
                        len = 4;

                if (len == 0) {
                        memcpy(o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(o, s + i, len);
                        o += len;
                        i += len;
                }
        }
        *o = '\0';
        return out;
}

/* {"type":"raw","text":...}: a line that is not JSON, or (truncated) one too long for the channel. */
static char *raw_event_data(const char *line, size_t len, bool truncated, uint64_t total) {
        _cleanup_free_ char *text =
                utf8_sanitize(line, truncated && len > TRUNCATED_KEEP ? TRUNCATED_KEEP : len);
        _cleanup_(json_decrefp) json_t *j = NULL;
        char *data;

        j = truncated ? json_pack(
                                "{s:s, s:s, s:b, s:I}",
                                "type",
                                "raw",
                                "text",
                                text,
                                "truncated",
                                1,
                                "bytes",
                                (json_int_t) total)
                      : json_pack("{s:s, s:s}", "type", "raw", "text", text);
        if (!j)
                die_oom();
        data = json_dumps(j, JSON_COMPACT);
        if (!data)
                die_oom();
        return data;
}

/* Remembers claude's session id from its system/init event, for --resume. */
static void watch_event(const json_t *data) {
        const char *type = json_string_value(json_object_get(data, "type"));
        const char *subtype = json_string_value(json_object_get(data, "subtype"));
        const char *sid = json_string_value(json_object_get(data, "session_id"));

        if (!type || !streq(type, "system") || !subtype || !streq(subtype, "init") || isempty(sid))
                return;
        if (S.claude_session && streq(S.claude_session, sid))
                return;
        free(S.claude_session);
        S.claude_session = strdup(sid);
        if (!S.claude_session)
                die_oom();
        log_info("claude session %s", sid);
}

static void emit_line(void) {
        int64_t time = (int64_t) now_usec(CLOCK_REALTIME);
        bool truncated = S.line_bytes > S.line_len;
        size_t len = S.line_len;
        char *data = NULL;

        while (len > 0 && S.line[len - 1] == '\r')
                len--;
        if (len == 0 && !truncated)
                goto done; /* a blank line is no event */

        if (!truncated) {
                _cleanup_(json_decrefp) json_t *j = json_loadb(S.line, len, JSON_DECODE_ANY, NULL);

                if (j) {
                        watch_event(j);
                        data = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
                        if (!data)
                                die_oom();
                        if (strlen(data) > EVENT_DATA_MAX) {
                                data = mfree(data);
                                truncated = true;
                        }
                }
        }
        if (!data)
                data = raw_event_data(S.line, len, truncated, S.line_bytes);
        if (strlen(data) > EVENT_DATA_MAX) { /* escaping made a long line longer still */
                free(data);
                data = raw_event_data(S.line, len, true, S.line_bytes);
        }
        queue_push(time, data, strlen(data));
done:
        S.line_len = 0;
        S.line_bytes = 0;
}

static void line_append(const char *p, size_t n) {
        size_t room = EVENT_DATA_MAX - S.line_len, take = n < room ? n : room;

        S.line_bytes += n;
        if (take == 0)
                return;
        if (S.line_len + take > S.line_cap) {
                size_t cap = S.line_cap ? S.line_cap : 4096;
                char *l;

                while (cap < S.line_len + take)
                        cap *= 2;
                l = realloc(S.line, cap);
                if (!l)
                        die_oom();
                S.line = l;
                S.line_cap = cap;
        }
        memcpy(S.line + S.line_len, p, take);
        S.line_len += take;
}

static void claude_output_feed(const char *p, size_t n) {
        while (n > 0) {
                const char *nl = memchr(p, '\n', n);
                size_t k = nl ? (size_t) (nl - p) : n;

                line_append(p, k);
                if (!nl)
                        return;
                emit_line();
                p += k + 1;
                n -= k + 1;
        }
}

/* Reads claude's stdout: a bounded amount per loop iteration, or (drain) all there is now. */
static void claude_read(bool drain) {
        char chunk[READ_CHUNK];

        for (int i = 0; S.claude_out >= 0 && (drain || i < READS_PER_ITERATION); i++) {
                ssize_t k = read(S.claude_out, chunk, sizeof(chunk));

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        return;
                if (k <= 0) { /* end of output; a last line without "\n" still counts */
                        if (k < 0)
                                log_warning("reading claude's output: %m");
                        if (S.line_bytes > 0)
                                emit_line();
                        S.claude_out = safe_close(S.claude_out);
                        return;
                }
                claude_output_feed(chunk, (size_t) k);
        }
}

/* ---- running claude ---- */

static int claude_start(void) {
        _cleanup_close_ int in_r = -EBADF, in_w = -EBADF, out_r = -EBADF, out_w = -EBADF, err_r = -EBADF,
                            err_w = -EBADF;
        const char *argv[16];
        int fds[2], n = 0, error = 0;
        ssize_t k;
        pid_t pid;

        argv[n++] = S.claude_bin;
        argv[n++] = "-p";
        argv[n++] = "--input-format";
        argv[n++] = "stream-json";
        argv[n++] = "--output-format";
        argv[n++] = "stream-json";
        argv[n++] = "--verbose";
        argv[n++] = "--permission-mode";
        argv[n++] = S.permission_mode;
        if (S.permission_prompt) {
                argv[n++] = "--permission-prompt-tool";
                argv[n++] = PERMISSION_PROMPT_TOOL;
        }
        if (S.claude_session) {
                argv[n++] = "--resume";
                argv[n++] = S.claude_session;
        }
        argv[n] = NULL;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        in_r = fds[0], in_w = fds[1];
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        out_r = fds[0], out_w = fds[1];
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        err_r = fds[0], err_w = fds[1];

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                sigset_t none;

                /* Undo what init set for itself: its blocked signals and ignored SIGPIPE. */
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) signal(SIGPIPE, SIG_DFL);
                if (dup2(in_r, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 ||
                    chdir(S.paths.workspace) < 0)
                        error = errno;
                else {
                        execvp(S.claude_bin, (char **) argv);
                        error = errno;
                }
                k = write(err_w, &error, sizeof(error));
                _exit(127);
        }

        err_w = safe_close(err_w);
        do
                k = read(err_r, &error, sizeof(error));
        while (k < 0 && errno == EINTR);
        if (k == sizeof(error)) { /* exec failed: the child is gone, reap it here */
                (void) waitpid(pid, NULL, 0);
                return -error;
        }

        if (fcntl(in_w, F_SETFL, O_NONBLOCK) < 0 || fcntl(out_r, F_SETFL, O_NONBLOCK) < 0) {
                error = errno;
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                return -error;
        }
        S.claude_pid = pid;
        S.claude_in = TAKE_FD(in_w);
        S.claude_out = TAKE_FD(out_r);
        S.claude_started = now_usec(CLOCK_MONOTONIC);
        S.line_len = S.line_bytes = 0;
        log_info(
                "started claude (pid %d)%s%s",
                (int) pid,
                S.claude_session ? ", resuming " : "",
                strempty(S.claude_session));
        return 0;
}

static void begin_stop(int code);

static void claude_exited(int status) {
        usec_t t = now_usec(CLOCK_MONOTONIC), lived = t - S.claude_started;
        char how[64], quick[64] = "";

        claude_read(true);
        if (S.claude_out >= 0) { /* an orphan of claude still holds the pipe: stop listening to it */
                if (S.line_bytes > 0)
                        emit_line();
                S.claude_out = safe_close(S.claude_out);
        }
        S.claude_in = safe_close(S.claude_in);
        S.claude_pid = 0;
        /* A prompt cut in the middle goes nowhere; whole ones wait for the next claude. */
        if (S.input_midline) {
                char *nl = memchr(
                        S.claude_input.data + S.claude_input.start, '\n', byte_queue_len(&S.claude_input));

                S.claude_input.start = nl ? (size_t) (nl + 1 - S.claude_input.data) : S.claude_input.end;
                S.input_midline = false;
        }

        if (WIFEXITED(status))
                snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
        else
                snprintf(how, sizeof(how), "was killed by signal %s", sigabbrev_np(WTERMSIG(status)) ?: "?");

        if (S.stopping) {
                log_info("claude %s", how);
                S.flush_deadline = t + STOP_FLUSH_USEC;
                return;
        }

        S.quick_exits = lived < QUICK_EXIT_USEC ? S.quick_exits + 1 : 0;
        if (S.quick_exits > MAX_QUICK_RESTARTS) {
                report(LOG_ERR,
                       "claude %s %u times within %u s of its start: giving up",
                       how,
                       S.quick_exits,
                       (unsigned) (QUICK_EXIT_USEC / USEC_PER_SEC));
                begin_stop(EXIT_CLAUDE_GAVE_UP);
                return;
        }
        if (S.quick_exits > 0)
                snprintf(
                        quick,
                        sizeof(quick),
                        " (quick restart %u of %u)",
                        S.quick_exits,
                        MAX_QUICK_RESTARTS);
        report(LOG_WARNING,
               "claude %s after %.1f s; restarting it%s%s%s",
               how,
               (double) lived / USEC_PER_SEC,
               S.claude_session ? " with --resume " : "",
               strempty(S.claude_session),
               quick);
        S.restart_at = t + (S.quick_exits == 0 ? 0 : (250 * USEC_PER_MSEC) << (S.quick_exits - 1));
}

static void claude_restart(void) {
        int r;

        S.restart_at = 0;
        r = claude_start();
        if (r >= 0)
                return;
        S.claude_started = now_usec(CLOCK_MONOTONIC);
        report(LOG_ERR, "restarting claude: %s", strerror(-r));
        claude_exited(W_EXITCODE(127, 0));
}

/* ---- signals and stopping ---- */

static void begin_stop(int code) {
        usec_t t = now_usec(CLOCK_MONOTONIC);

        if (S.stopping)
                return;
        S.stopping = true;
        S.exit_code = code;
        S.restart_at = 0;
        if (S.claude_pid > 0) {
                /* EOF on its stdin ends a stream-json claude once it is idle. */
                S.claude_in = safe_close(S.claude_in);
                byte_queue_clear(&S.claude_input);
                S.term_at = t + STOP_CLAUDE_USEC;
        } else
                S.flush_deadline = t + STOP_FLUSH_USEC;
}

static void reap(void) {
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);

                if (pid <= 0)
                        return;
                if (pid == S.claude_pid)
                        claude_exited(status);
        }
}

static void on_signal(void) {
        struct signalfd_siginfo si;

        while (read(S.signal_fd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD:
                        reap();
                        break;
                case SIGTERM:
                case SIGINT:
                        if (!S.ever_ready)
                                exit(EXIT_SUCCESS); /* nothing started yet, nothing to hand over */
                        log_info("SIG%s: stopping", sigabbrev_np((int) si.ssi_signo));
                        begin_stop(EXIT_SUCCESS);
                        break;
                }
        }
}

static void on_timers(void) {
        usec_t t = now_usec(CLOCK_MONOTONIC);

        if (S.reconnect_at && t >= S.reconnect_at)
                conn_connect();
        if (S.heartbeat_at && t >= S.heartbeat_at && channel_client_state(S.conn) == CHANNEL_READY)
                heartbeat();
        if (S.restart_at && t >= S.restart_at)
                claude_restart();
        if (S.term_at && t >= S.term_at) {
                S.term_at = 0;
                if (S.claude_pid > 0) {
                        log_info("claude did not exit on EOF: SIGTERM");
                        (void) kill(S.claude_pid, SIGTERM);
                        S.kill_at = t + STOP_KILL_USEC;
                }
        }
        if (S.kill_at && t >= S.kill_at) {
                S.kill_at = 0;
                if (S.claude_pid > 0) {
                        log_info("claude did not exit on SIGTERM: SIGKILL");
                        (void) kill(S.claude_pid, SIGKILL);
                }
        }
}

static void arm_timer(void) {
        usec_t next = 0, d[] = { S.reconnect_at, S.heartbeat_at,   S.restart_at,    S.term_at,
                                 S.kill_at,      S.flush_deadline, S.events_hold_at };
        struct itimerspec its = {};

        for (size_t i = 0; i < ELEMENTSOF(d); i++)
                if (d[i] && (!next || d[i] < next))
                        next = d[i];
        if (next) {
                its.it_value.tv_sec = (time_t) (next / USEC_PER_SEC);
                its.it_value.tv_nsec = (long) ((next % USEC_PER_SEC) * NSEC_PER_USEC);
                if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                        its.it_value.tv_nsec = 1;
        }
        if (timerfd_settime(S.timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
                die_errno(errno, "arming the timer");
}

/* Done stopping: claude is gone and every event is acked, or the flush deadline passed. */
static void maybe_exit(void) {
        if (!S.stopping || S.claude_pid > 0)
                return;
        if ((S.n == 0 && channel_client_pending(S.conn) == 0) ||
            now_usec(CLOCK_MONOTONIC) >= S.flush_deadline || !S.ever_ready) {
                if (S.n > 0)
                        log_warning("exiting with %zu events the daemon has not acked", S.n);
                exit(S.exit_code);
        }
}

/* ---- main ---- */

static const char *env_or(const char *name, const char *def) {
        const char *v = getenv(name);

        return isempty(v) ? def : v;
}

static void bridge_report(int level, const char *message, void *userdata) {
        report(level, "%s", message);
}

/* A bridge to the daemon's socket at path, if there is one now; NULL if not (then claude's environment
 * is left as it is, as before there were bridges). */
static Bridge *bridge_open(const char *name, const char *path) {
        struct stat st;
        Bridge *b;
        int r;

        if (stat(path, &st) < 0) {
                if (errno != ENOENT)
                        report(LOG_WARNING, "no %s bridge: %s: %s", name, path, strerror(errno));
                return NULL;
        }
        if (!S_ISSOCK(st.st_mode)) {
                report(LOG_WARNING, "no %s bridge: %s is not a socket", name, path);
                return NULL;
        }
        r = bridge_new(name, path, &b);
        if (r < 0)
                die_errno(r, "listening on 127.0.0.1 for the %s bridge", name);
        bridge_set_log(b, bridge_report, NULL);
        report(LOG_INFO, "%s bridge: 127.0.0.1:%u to %s", name, (unsigned) bridge_port(b), path);
        return b;
}

static void bridges_open(void) {
        int r;

        S.model_bridge = bridge_open("model", env_or("CCDOCKER_MODEL_SOCKET", "/run/ccdocker/model.sock"));
        S.egress_bridge =
                bridge_open("egress", env_or("CCDOCKER_EGRESS_SOCKET", "/run/ccdocker/egress.sock"));
        r = bridge_setenv(
                S.model_bridge ? bridge_port(S.model_bridge) : 0,
                S.egress_bridge ? bridge_port(S.egress_bridge) : 0);
        if (r < 0)
                die_errno(r, "setting claude's environment for the bridges");
}

/* The hello's forwards (ID: {"secret", "connect"}): a bridge each to egress.sock that asks for the
 * forward, and the secret's URL pointed at it; its remote MCP servers: one bridge to mcp.sock, and each
 * server's url (http://127.0.0.1:PORT/NAME) put into config for .mcp.json. docs/ccdocker-init.md. */
static void remote_bridges_open(json_t *config, json_t *warnings) {
        const char *egress = env_or("CCDOCKER_EGRESS_SOCKET", "/run/ccdocker/egress.sock");
        json_t *forwards = json_object_get(config, "forwards"),
               *remote = json_object_get(config, "remote_mcp");
        const char *name;
        json_t *entry;
        Bridge *b;
        int r;

        json_object_foreach (forwards, name, entry) {
                const char *secret = json_string_value(json_object_get(entry, "secret"));
                const char *connect = json_string_value(json_object_get(entry, "connect"));

                if (!secret || !connect || S.n_extra_bridges >= EXTRA_BRIDGES_MAX) {
                        report(LOG_WARNING, "forward %s left out: no secret, target or room for it", name);
                        continue;
                }
                r = bridge_new_forward(name, egress, connect, &b);
                if (r < 0) {
                        report(LOG_WARNING, "forward %s left out: %s", name, strerror(-r));
                        continue;
                }
                bridge_set_log(b, bridge_report, NULL);
                S.extra_bridges[S.n_extra_bridges++] = b;
                report(LOG_INFO, "forward %s: 127.0.0.1:%u to %s", name, (unsigned) bridge_port(b), connect);
                r = init_forward_env(secret, bridge_port(b), warnings);
                if (r < 0)
                        die_errno(r, "pointing %s at its forward", secret);
        }

        if (json_object_size(remote) == 0)
                return;
        b = S.n_extra_bridges < EXTRA_BRIDGES_MAX
                ? bridge_open("mcp", env_or("CCDOCKER_MCP_SOCKET", "/run/ccdocker/mcp.sock"))
                : NULL;
        if (b)
                S.extra_bridges[S.n_extra_bridges++] = b;
        json_object_foreach (remote, name, entry) {
                _cleanup_free_ char *url = NULL;

                if (!b || !json_is_object(entry))
                        continue; /* init-config says it is left out */
                if (asprintf(&url, "http://127.0.0.1:%u/%s", (unsigned) bridge_port(b), name) < 0 ||
                    json_object_set_new(entry, "url", json_string(url)) < 0)
                        die_oom();
        }
}

/* Room for n pollfds. */
static struct pollfd *pollfds_ensure(size_t n) {
        if (n > S.pollfds_cap) {
                struct pollfd *p = reallocarray(S.pollfds, n * 2, sizeof(struct pollfd));

                if (!p)
                        die_oom();
                S.pollfds = p;
                S.pollfds_cap = n * 2;
        }
        return S.pollfds;
}

int main(int argc, char *argv[]) {
        sigset_t mask;

        log_set_prefix(PROGRAM);
        if (argc > 1) {
                /* A command given to the image (podman run IMAGE CMD...) runs instead, as the image's CMD
                 * did before there was an init: no channel, no configuration. */
                execvp(argv[1], argv + 1);
                die_errno(errno, "executing %s", argv[1]);
        }

        /* As PID 1 it may start without 0, 1 and 2: a pipe must not land there. */
        for (int fd = 0; fd < 3; fd++)
                if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
                        die_errno(errno, "opening /dev/null");
        umask(0022);

        S.channel_path = env_or("CCDOCKER_CHANNEL", "/run/ccdocker/session.sock");
        S.claude_bin = env_or("CCDOCKER_CLAUDE", "claude");
        S.paths = (InitPaths){
                .templates = env_or("CCDOCKER_TEMPLATES", "/opt/cc-docker/templates"),
                .skills = env_or("CCDOCKER_SKILLS", "/opt/cc-docker/skills"),
                .workspace = env_or("CCDOCKER_WORKSPACE", "/workspace"),
                .home = env_or("HOME", "/home/claude"),
        };
        S.pending_logs = json_array();
        if (!S.pending_logs || channel_client_new(S.channel_path, "init", &conn_hooks, NULL, &S.conn) < 0)
                die_oom();

        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                die_errno(errno, "blocking signals");
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                die_errno(errno, "ignoring SIGPIPE");
        S.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (S.signal_fd < 0)
                die_errno(errno, "creating a signalfd");
        S.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (S.timer_fd < 0)
                die_errno(errno, "creating a timerfd");

        bridges_open();

        S.start_deadline = now_usec(CLOCK_MONOTONIC) + START_CONNECT_USEC;
        S.backoff = BACKOFF_MIN_USEC;
        conn_connect();

        for (;;) {
                struct pollfd *p;
                int n = 0, i_conn = -1, i_out = -1, i_in = -1, i_model = -1, i_egress = -1, r;
                int i_extra[EXTRA_BRIDGES_MAX];
                size_t n_extra, n_extra_polled;

                /* Everything that may be written is written now; poll() waits for the rest. */
                events_send();
                channel_client_flush(S.conn);
                if (S.claude_in >= 0 && byte_queue_len(&S.claude_input) > 0) {
                        r = byte_queue_write(&S.claude_input, S.claude_in);
                        if (r < 0) { /* claude is going away; SIGCHLD follows */
                                log_debug("writing to claude: %s", strerror(-r));
                                S.claude_in = safe_close(S.claude_in);
                        }
                        S.input_midline = S.claude_input.start > 0 &&
                                S.claude_input.data[S.claude_input.start - 1] != '\n' &&
                                byte_queue_len(&S.claude_input) > 0;
                }
                maybe_exit();
                arm_timer();

                n_extra = 0;
                for (size_t k = 0; k < S.n_extra_bridges; k++)
                        n_extra += bridge_poll_max(S.extra_bridges[k]);
                p = pollfds_ensure(
                        5 + n_extra + (S.model_bridge ? bridge_poll_max(S.model_bridge) : 0) +
                        (S.egress_bridge ? bridge_poll_max(S.egress_bridge) : 0));
                p[n++] = (struct pollfd){ .fd = S.signal_fd, .events = POLLIN };
                p[n++] = (struct pollfd){ .fd = S.timer_fd, .events = POLLIN };
                if (channel_client_fd(S.conn) >= 0) {
                        i_conn = n;
                        p[n++] = (struct pollfd){
                                .fd = channel_client_fd(S.conn),
                                .events = channel_client_poll_events(S.conn),
                        };
                }
                if (S.claude_out >= 0 && S.bytes < QUEUE_PAUSE_BYTES) {
                        i_out = n;
                        p[n++] = (struct pollfd){ .fd = S.claude_out, .events = POLLIN };
                }
                if (S.claude_in >= 0 && byte_queue_len(&S.claude_input) > 0) {
                        i_in = n;
                        p[n++] = (struct pollfd){ .fd = S.claude_in, .events = POLLOUT };
                }
                if (S.model_bridge) {
                        i_model = n;
                        n += (int) bridge_poll_fill(S.model_bridge, p + n);
                }
                if (S.egress_bridge) {
                        i_egress = n;
                        n += (int) bridge_poll_fill(S.egress_bridge, p + n);
                }
                n_extra_polled = S.n_extra_bridges; /* one may be added while dispatching */
                for (size_t k = 0; k < n_extra_polled; k++) {
                        i_extra[k] = n;
                        n += (int) bridge_poll_fill(S.extra_bridges[k], p + n);
                }

                if (poll(p, (nfds_t) n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die_errno(errno, "poll");
                }

                if (p[0].revents)
                        on_signal();
                if (p[1].revents) {
                        uint64_t expirations;

                        if (read(S.timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                                die_errno(errno, "reading the timerfd");
                }
                if (i_out >= 0 && p[i_out].revents && S.claude_out == p[i_out].fd)
                        claude_read(false);
                if (i_conn >= 0 && channel_client_fd(S.conn) == p[i_conn].fd &&
                    channel_client_dispatch(S.conn, p[i_conn].revents) < 0)
                        die_oom();
                (void) i_in; /* claude's stdin is written at the top of the loop */
                if (i_model >= 0)
                        bridge_poll_dispatch(S.model_bridge, p + i_model);
                if (i_egress >= 0)
                        bridge_poll_dispatch(S.egress_bridge, p + i_egress);
                for (size_t k = 0; k < n_extra_polled; k++)
                        bridge_poll_dispatch(S.extra_bridges[k], p + i_extra[k]);
                on_timers();
        }
}

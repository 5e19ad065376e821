/* ccdocker-mcp: the MCP server Claude Code starts in a session container, from the generated
 * /workspace/.mcp.json. It speaks JSON-RPC 2.0 on stdio (one message per line, REFERENCE.md A.1): the
 * initialize handshake, ping, tools/list and tools/call of the tools in tools.json. Each tool call is
 * a JSON-RPC request (or a few, for a wait or a stream) on the session channel, the unix socket
 * /run/ccdocker/session.sock (docs/channel.md), connected at the first call. One poll() loop over
 * stdin and the channel, no threads: several calls may be in flight, a long wait does not hold up the
 * others, and a cancelled call is dropped. Answers go to stdout, one compact line each; logs go to
 * stderr. It exits 0 when stdin ends. docs/ccdocker-mcp.md has the rest. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "byte-queue.h"
#include "channel-client.h"
#include "cleanup.h"
#include "config-build.h"
#include "jsonrpc.h"
#include "log.h"
#include "time-util.h"
#include "tools.h"
#include "util.h"

#define PROGRAM "ccdocker-mcp"
#define LINE_MAX_BYTES CHANNEL_LINE_MAX /* of stdin, as of the channel (docs/channel.md) */
#define READ_CHUNK (64 * 1024)
#define TOOL_NAME_SHOWN 128 /* of an unknown tool's name in the error message */
#define DEFAULT_CHANNEL "/run/ccdocker/session.sock"

#define CONNECT_TIMEOUT_USEC (10 * USEC_PER_SEC) /* connect and hello */
#define RECONNECT_DELAY_USEC (1 * USEC_PER_SEC)  /* before the one retry of a failed connect */
#define ANSWER_GRACE_USEC (120 * USEC_PER_SEC)   /* past a request's own wait, before giving up on it */
#define DEFAULT_WAIT_SEC 300                     /* of get_child_result, send_to_child and a stream */
#define STREAM_POLL_SEC 10                       /* wait_seconds of each child.output of a stream */
#define STREAM_OUTPUT_MAX (64U * 1024)           /* a stream ends early once it has collected this much */
#define PROGRESS_TEXT_MAX 500                    /* bytes of the newest output in a progress message */
#define KEEPALIVE_USEC (60 * USEC_PER_SEC)       /* progress while a person is asked (idle timeout) */
#define HUMAN_RECONNECT_USEC (2 * USEC_PER_SEC)  /* between connects while a question waits on */
#define HUMAN_RECONNECT_MAX_USEC (600 * USEC_PER_SEC) /* of reconnecting for a question, in all */
#define QUESTION_TIMEOUT_MIN 60                       /* of ask_user, when the hello does not say */
#define ATTEMPT_TIMEOUT_MAX 7200                      /* of one attempt of a question */
#define ATTEMPTS_DEFAULT 3

#define INSTRUCTIONS                                                                                      \
        "ccdocker-mcp connects this Claude Code session to cc-docker, which runs it in a container. Its " \
        "tools spawn child sessions (each a Claude Code in a container of its own), steer them, read "    \
        "their output and collect their results; get_parent_context tells a child what its parent gave "  \
        "it. notify_user tells the person who runs the session something; ask_user asks them and waits "  \
        "for the answer."

/* Newest first: the first is what a client asking for another version gets. */
static const char *const protocol_versions[] = { "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05" };

/* Set once the initialize request has been answered: from then on the client may send any request. */
static bool initialized;

/* A tools/call under way: the MCP request to answer and the channel request it waits for. */
typedef struct Call {
        struct Call *next;
        json_t *id; /* the MCP request's id */
        const Tool *tool;
        json_t *args;           /* checked */
        json_t *progress_token; /* from _meta, or NULL */
        usec_t deadline;        /* of a wait or a stream as a whole; 0 for none */

        /* The channel request: in flight when channel_id != 0, else waiting for the connection. */
        const char *method;
        json_t *params;
        int64_t channel_id;
        usec_t answer_deadline;

        json_t *sent; /* send_to_child: the answer of child.send, while child.result waits */

        /* ask_user and permission_prompt: the question, once the daemon has said its id (human.waiting),
         * for a human.wait after a reconnect; the next keepalive progress */
        json_t *interaction_id;
        usec_t keepalive_at;
        usec_t reconnect_until; /* a human.wait waiting for the daemon to come back, until then */

        /* get_child_output with stream: what was collected so far */
        ByteQueue output;
        bool have_seq; /* last_seq is one an event had: the next request asks from it */
        int64_t last_seq;
        uint64_t events;
} Call;

static struct {
        const char *path;
        ChannelClient *client;
        usec_t connect_deadline;      /* of CONNECTING and HELLO */
        usec_t retry_at;              /* the retry of a failed connect is due then */
        bool retried;                 /* the connect under way is that retry */
        int64_t question_timeout_min; /* the hello's, else QUESTION_TIMEOUT_MIN */
} C;

static Call *calls; /* newest first */

/* Fails loudly (STYLE.md 9): "ccdocker-mcp: what failed: strerror", exit 1. _exit(): what the callers'
 * frames own is not freed on this way out, and is no leak. */
static _Noreturn void die(int error, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void die(int error, const char *format, ...) {
        va_list ap;

        fputs(PROGRAM ": ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        if (error != 0)
                fprintf(stderr, ": %s", strerror(abs(error)));
        fputc('\n', stderr);
        _exit(EXIT_FAILURE);
}

static _Noreturn void die_oom(void) {
        die(ENOMEM, "allocating memory");
}

/* asprintf() that fails only by dying. */
static void xasprintf(char **ret, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void xasprintf(char **ret, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(ret, format, ap);
        va_end(ap);
        if (r < 0)
                die_oom();
}

/* ---- byte queues ---- */

static void buf_put(ByteQueue *b, const void *p, size_t n) {
        if (byte_queue_put(b, p, n) < 0)
                die_oom();
}

/* ---- stdout: the MCP client ---- */

/* One line on stdout, flushed at once: the client waits for it. A stdout that cannot be written means
 * the client is gone, and there is nobody left to answer. */
static void send_message(json_t *msg) {
        _cleanup_free_ char *line = NULL;
        size_t len;
        int r;

        if (!msg)
                die(errno ?: ENOMEM, "building a message");
        r = jsonrpc_format_line(msg, &line, &len);
        if (r < 0)
                die(r, "formatting a message");
        if (fwrite(line, 1, len, stdout) != len || fflush(stdout) != 0)
                die(errno, "writing to stdout");
}

/* Takes result. */
static void reply_result(json_t *id, json_t *result) {
        _cleanup_(json_decrefp) json_t *msg = NULL;

        if (!result)
                die(ENOMEM, "building a result");
        msg = jsonrpc_result_new(id, result);
        json_decref(result);
        send_message(msg);
}

static void reply_error(json_t *id, int code, const char *format, ...) __attribute__((format(printf, 3, 4)));

static void reply_error(json_t *id, int code, const char *format, ...) {
        _cleanup_(json_decrefp) json_t *msg = NULL;
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                die(ENOMEM, "building an error message");
        log_debug("answering error %d: %s", code, message);
        msg = jsonrpc_error_new(id, code, message, NULL);
        send_message(msg);
}

/* ---- calls ---- */

static Call *call_free(Call *c) {
        if (!c)
                return NULL;
        json_decref(c->id);
        json_decref(c->args);
        json_decref(c->progress_token);
        json_decref(c->params);
        json_decref(c->sent);
        json_decref(c->interaction_id);
        byte_queue_free(&c->output);
        free(c);
        return NULL;
}

static void call_unlink(Call *c) {
        for (Call **i = &calls; *i; i = &(*i)->next)
                if (*i == c) {
                        *i = c->next;
                        return;
                }
}

/* Answers the call with result (taken) and forgets it. */
static void call_finish(Call *c, json_t *result) {
        reply_result(c->id, result);
        call_unlink(c);
        call_free(c);
}

static void call_fail(Call *c, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void call_fail(Call *c, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                die_oom();
        log_debug("%s: %s", c->tool->name, message);
        if (c->tool->id == TOOL_PERMISSION_PROMPT) {
                /* Claude Code needs a decision: whatever went wrong, the call is not approved. */
                _cleanup_free_ char *text = NULL, *unfit = NULL;
                json_t *result = NULL;
                _cleanup_(json_decrefp) json_t *deny = NULL;

                xasprintf(&text, "Denied: nobody could approve this tool call (%s).", message);
                deny = json_pack("{s:s, s:s}", "behavior", "deny", "message", text);
                if (!deny || tool_result(c->tool, deny, &result, &unfit) < 0)
                        die_oom();
                call_finish(c, result);
                return;
        }
        call_finish(c, tool_error(message));
}

/* Answers with structured, projected through the tool's output schema. */
static void call_succeed(Call *c, const json_t *structured) {
        _cleanup_free_ char *message = NULL;
        json_t *result = NULL;
        int r;

        r = tool_result(c->tool, structured, &result, &message);
        if (r == -ENOMEM)
                die_oom();
        if (r < 0) {
                log_warning(
                        "the daemon's answer to %s does not fit the output of %s: %s",
                        c->method,
                        c->tool->name,
                        message);
                call_fail(
                        c,
                        "%s failed: the cc-docker daemon's answer to %s was not what this tool expects (%s); "
                        "it may be another version than ccdocker-mcp.",
                        c->tool->name,
                        c->method,
                        message);
                return;
        }
        call_finish(c, result);
}

/* Seconds left of the call's wait, rounded down. */
static int64_t call_seconds_left(const Call *c) {
        usec_t t = now_usec(CLOCK_MONOTONIC);

        return c->deadline > t ? (int64_t) ((c->deadline - t) / USEC_PER_SEC) : 0;
}

/* ---- the channel ---- */

static void conn_start(void);

static ChannelState conn_state(void) {
        return channel_client_state(C.client);
}

static void conn_send(json_t *msg) {
        if (channel_client_send(C.client, msg) < 0)
                die_oom();
}

static int64_t conn_request(const char *method, json_t *params) {
        int64_t id;

        if (channel_client_request(C.client, method, params, &id) < 0)
                die_oom();
        return id;
}

/* ask_user and permission_prompt: a person is asked, and the call waits for the answer. */
static bool call_asks(const Call *c) {
        return c->tool->id == TOOL_ASK_USER || c->tool->id == TOOL_PERMISSION_PROMPT;
}

/* Sends the call's request now if the channel is ready; else it goes once it is. */
static void call_send(Call *c) {
        int64_t wait = 0;

        if (conn_state() != CHANNEL_READY) {
                c->channel_id = 0;
                conn_start();
                return;
        }
        if (c->tool->id == TOOL_ASK_USER && streq(c->method, "human.ask")) {
                /* The daemon's lowest timeout is known only now, from its hello. */
                _cleanup_free_ char *refusal =
                        tool_check_question_timeout(c->tool, c->args, C.question_timeout_min);

                if (refusal) {
                        call_fail(c, "%s", refusal);
                        return;
                }
        }
        if (call_asks(c)) {
                json_t *t = json_object_get(c->params, "timeout_seconds"),
                       *a = json_object_get(c->params, "max_attempts");

                /* human.wait does not know what is left: the longest a question can take. */
                wait = (t ? json_integer_value(t) : ATTEMPT_TIMEOUT_MAX) *
                        (a                                        ? json_integer_value(a)
                                 : streq(c->method, "human.wait") ? 5
                                                                  : ATTEMPTS_DEFAULT);
                if (c->keepalive_at == 0)
                        c->keepalive_at = now_usec(CLOCK_MONOTONIC) + KEEPALIVE_USEC;
                c->reconnect_until = 0;
        } else if (json_is_true(json_object_get(c->params, "wait")))
                wait = json_integer_value(json_object_get(c->params, "timeout_seconds"));
        else if (json_is_integer(json_object_get(c->params, "wait_seconds")))
                wait = json_integer_value(json_object_get(c->params, "wait_seconds"));
        c->channel_id = conn_request(c->method, c->params);
        c->answer_deadline = now_usec(CLOCK_MONOTONIC) + (usec_t) wait * USEC_PER_SEC + ANSWER_GRACE_USEC;
        log_debug("%s: request %" PRIi64 " %s", c->tool->name, c->channel_id, c->method);
}

/* Issues the call's next channel request; takes params. */
static void call_request(Call *c, const char *method, json_t *params) {
        if (!params)
                die_oom();
        json_decref(c->params);
        c->method = method;
        c->params = params;
        call_send(c);
}

static void conn_close(void) {
        channel_client_close(C.client);
        C.connect_deadline = 0;
}

/* The calls waiting for a connection that will not come get what went wrong. */
static void fail_waiting(const char *format, ...) __attribute__((format(printf, 1, 2)));

static void fail_waiting(const char *format, ...) {
        _cleanup_free_ char *why = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&why, format, ap);
        va_end(ap);
        if (r < 0)
                die_oom();
        for (Call *c = calls, *next; c; c = next) {
                next = c->next;
                if (c->channel_id == 0 && c->reconnect_until <= now_usec(CLOCK_MONOTONIC))
                        call_fail(c, "%s failed: %s", c->tool->name, why);
        }
}

/* A question whose connection was lost waits for the daemon to come back, for a while. */
static bool any_reconnecting(void) {
        for (Call *c = calls; c; c = c->next)
                if (c->channel_id == 0 && c->reconnect_until > now_usec(CLOCK_MONOTONIC))
                        return true;
        return false;
}

static bool any_waiting(void) {
        for (Call *c = calls; c; c = c->next)
                if (c->channel_id == 0)
                        return true;
        return false;
}

/* A connect or hello that failed: one retry a moment later (the daemon may be restarting), then the
 * calls waiting for it fail. The next call tries again. */
static void conn_failed(int error) {
        conn_close();
        if (!C.retried) {
                log_debug("connecting to %s: %s; retrying once", C.path, strerror(abs(error)));
                C.retry_at = now_usec(CLOCK_MONOTONIC) + RECONNECT_DELAY_USEC;
                return;
        }
        log_warning("cannot reach the session channel %s: %s", C.path, strerror(abs(error)));
        C.retried = false;
        fail_waiting(
                "cannot reach the cc-docker session channel %s: %s. The cc-docker daemon may be "
                "restarting: try again in a few seconds.",
                C.path,
                strerror(abs(error)));
        if (any_reconnecting())
                C.retry_at = now_usec(CLOCK_MONOTONIC) + HUMAN_RECONNECT_USEC;
}

/* The connection ended: what was in flight on it is lost (the daemon forgets it too). Calls that were
 * only waiting for the connection connect again. */
static void conn_lost(const char *why) {
        log_warning("the session channel %s is gone (%s)", C.path, why);
        conn_close();
        for (Call *c = calls, *next; c; c = next) {
                next = c->next;
                if (c->channel_id == 0)
                        continue;
                if (call_asks(c) && c->interaction_id) {
                        /* The question lives on in the daemon's store: ask it for the answer once it is
                         * back (docs/channel.md, human.wait). */
                        json_t *params = json_pack("{s:O}", "interaction_id", c->interaction_id);

                        if (!params)
                                die_oom();
                        json_decref(c->params);
                        c->params = params;
                        c->method = "human.wait";
                        c->channel_id = 0;
                        c->reconnect_until = now_usec(CLOCK_MONOTONIC) + HUMAN_RECONNECT_MAX_USEC;
                        log_info(
                                "%s: will wait for question %s again",
                                c->tool->name,
                                json_string_value(c->interaction_id));
                        continue;
                }
                if (c->tool->id == TOOL_ASK_USER)
                        call_fail(
                                c,
                                "ask_user: the connection to the cc-docker daemon was lost while the question "
                                "waited for its answer (%s; the daemon may have restarted). The question is "
                                "kept: the answer will come to you as a new prompt starting with \"[answer to "
                                "question\". Do not ask it again.",
                                why);
                else
                        call_fail(
                                c,
                                "%s failed: the connection to the cc-docker daemon was lost before it answered "
                                "%s (%s; the daemon may have restarted). %s",
                                c->tool->name,
                                c->method,
                                why,
                                c->tool->id == TOOL_SPAWN_CHILD || c->tool->id == TOOL_SEND_TO_CHILD ||
                                                c->tool->id == TOOL_STOP_CHILD
                                        ? "It may or may not have taken effect: check with list_children "
                                          "before you call it again."
                                        : "Call it again.");
        }
        if (any_waiting())
                conn_start();
}

/* The channel client's down hook: a connect or a hello that failed, or a connection that ended. */
static void on_conn_down(
        ChannelClient *client, ChannelState was, int error, const char *why, void *userdata) {
        if (was == CHANNEL_READY)
                conn_lost(why);
        else
                conn_failed(was == CHANNEL_CONNECTING ? error : ECONNRESET);
}

static void conn_start(void) {
        int r;

        if (conn_state() != CHANNEL_DOWN || C.retry_at != 0)
                return;
        C.connect_deadline = now_usec(CLOCK_MONOTONIC) + CONNECT_TIMEOUT_USEC;
        r = channel_client_connect(C.client);
        if (r == -ENAMETOOLONG) {
                C.retried = true;
                conn_failed(r);
        } else if (r < 0)
                die(r, "connecting to %s", C.path);
}

static void on_hello_answer(ChannelClient *client, const struct jsonrpc_message *m, void *userdata) {
        const char *sid = json_string_value(json_object_get(m->result, "session_id"));

        if (m->kind == JSONRPC_ERROR_RESPONSE) {
                log_warning("the daemon refused the hello: %s (%d)", m->error_message, m->error_code);
                conn_close();
                C.retried = false;
                fail_waiting("the cc-docker daemon refused ccdocker-mcp's connection: %s", m->error_message);
                return;
        }
        C.connect_deadline = 0;
        C.retried = false;
        C.question_timeout_min = json_is_integer(json_object_get(m->result, "question_timeout_min"))
                ? json_integer_value(json_object_get(m->result, "question_timeout_min"))
                : QUESTION_TIMEOUT_MIN;
        log_info("connected to %s, session %s", C.path, strempty(sid));
        for (Call *c = calls, *next; c; c = next) {
                next = c->next;
                if (c->channel_id == 0)
                        call_send(c);
        }
}

/* ---- what each tool does with an answer ---- */

/* json_object_set_new() that fails only by dying. */
static void set_new(json_t *o, const char *key, json_t *v) {
        if (!v || json_object_set_new(o, key, v) < 0)
                die_oom();
}

static void set(json_t *o, const char *key, json_t *v) {
        if (json_object_set(o, key, v) < 0)
                die_oom();
}

static void send_progress(Call *c, const char *text) {
        _cleanup_(json_decrefp) json_t *params = NULL, *msg = NULL;

        if (!c->progress_token)
                return;
        params = json_pack(
                "{s:O, s:I}", "progressToken", c->progress_token, "progress", (json_int_t) c->events);
        if (!params)
                die_oom();
        if (!isempty(text))
                set_new(params, "message", json_string(utf8_tail(text, PROGRESS_TEXT_MAX)));
        msg = jsonrpc_notification_new("notifications/progress", params);
        send_message(msg);
}

/* get_child_output: one answer of child.output; with stream, the next request or the end. */
static void on_output(Call *c, json_t *result) {
        _cleanup_(json_decrefp) json_t *out = json_deep_copy(result), *params = NULL;
        json_t *events = json_object_get(result, "events"), *seq = json_object_get(result, "last_seq");
        const char *text = json_string_value(json_object_get(result, "output"));
        bool stream = json_is_true(json_object_get(c->args, "stream"));
        bool more = json_is_true(json_object_get(result, "more"));
        size_t n = json_array_size(events);

        if (!out)
                die_oom();
        if (n > 0 && json_is_integer(seq)) {
                c->have_seq = true;
                c->last_seq = json_integer_value(seq);
        }
        if (!isempty(text)) {
                if (byte_queue_len(&c->output) > 0 && c->output.data[c->output.end - 1] != '\n')
                        buf_put(&c->output, "\n", 1);
                buf_put(&c->output, text, strlen(text));
        }
        if (n > 0) {
                c->events += n;
                if (stream)
                        send_progress(c, text);
        }

        if (stream && byte_queue_len(&c->output) < STREAM_OUTPUT_MAX && call_seconds_left(c) >= 1 &&
            (more || !json_is_true(json_object_get(result, "is_complete")))) {
                int64_t left = call_seconds_left(c);

                params =
                        json_pack("{s:O}", "child_session_id", json_object_get(c->args, "child_session_id"));
                if (!params)
                        die_oom();
                /* Ask from the last event seen; before any, by the same timestamp again. */
                if (c->have_seq || !json_object_get(c->args, "since_timestamp"))
                        set_new(params,
                                "since_seq",
                                json_integer(
                                        c->have_seq ? c->last_seq
                                                    : json_integer_value(
                                                              json_object_get(c->args, "since_seq"))));
                else
                        set(params, "since_timestamp", json_object_get(c->args, "since_timestamp"));
                set_new(params,
                        "wait_seconds",
                        json_integer(
                                more                             ? 0
                                        : left < STREAM_POLL_SEC ? left
                                                                 : STREAM_POLL_SEC));
                call_request(c, "child.output", TAKE_PTR(params));
                return;
        }

        /* The text is all of it; last_seq is the last event's, also when the last answer had none. */
        set_new(out, "output", json_stringn(c->output.data ?: "", byte_queue_len(&c->output)));
        if (c->have_seq)
                set_new(out, "last_seq", json_integer(c->last_seq));
        else if (!json_is_integer(seq))
                set_new(out,
                        "last_seq",
                        json_integer(json_integer_value(json_object_get(c->args, "since_seq"))));
        json_object_del(out, "events");
        call_succeed(c, out);
}

/* get_child_result and the second half of send_to_child: wait on while pending. */
static void on_result(Call *c, json_t *result) {
        _cleanup_(json_decrefp) json_t *out = NULL;
        bool wait = c->tool->id == TOOL_SEND_TO_CHILD || json_is_true(json_object_get(c->params, "wait"));
        const char *key;
        json_t *v;

        if (wait && streq_ptr(json_string_value(json_object_get(result, "status")), "pending") &&
            call_seconds_left(c) >= 1) {
                json_t *params = json_deep_copy(c->params);

                if (!params)
                        die_oom();
                set_new(params, "timeout_seconds", json_integer(call_seconds_left(c)));
                call_request(c, "child.result", params);
                return;
        }
        if (c->tool->id == TOOL_GET_CHILD_RESULT) {
                call_succeed(c, result);
                return;
        }
        /* send_to_child: what child.send said, and the result under its own names. */
        out = json_deep_copy(c->sent);
        if (!out)
                die_oom();
        json_object_foreach (result, key, v) {
                if (streq(key, "status"))
                        set(out, "result_status", v);
                else if (streq(key, "result") || streq(key, "error") || streq(key, "usage"))
                        set(out, key, v);
        }
        call_succeed(c, out);
}

/* ask_user and permission_prompt: the answer of human.ask or human.wait. */
static void on_human_answer(Call *c, json_t *result) {
        _cleanup_(json_decrefp) json_t *out = NULL;
        bool timed_out = json_is_true(json_object_get(result, "timed_out"));
        const char *response = json_string_value(json_object_get(result, "response"));
        json_t *by = json_object_get(result, "answered_by");
        _cleanup_free_ char *text = NULL;

        if (c->tool->id == TOOL_ASK_USER) {
                out = json_deep_copy(result);
                if (!out)
                        die_oom();
                if (timed_out)
                        set_new(out, "error", json_string("User did not respond within timeout"));
                call_succeed(c, out);
                return;
        }
        if (!timed_out && streq_ptr(response, "allow"))
                out = json_pack(
                        "{s:s, s:O}",
                        "behavior",
                        "allow",
                        "updatedInput",
                        json_object_get(c->args, "input"));
        else {
                if (timed_out)
                        xasprintf(&text, "Denied: nobody approved this tool call in time.");
                else
                        xasprintf(
                                &text,
                                "Denied by a person (%s%s%s): do not try to get around it; ask with "
                                "ask_user if you need to know why.",
                                strempty(json_string_value(json_object_get(by, "surface"))),
                                json_is_string(json_object_get(by, "who")) ? ", " : "",
                                strempty(json_string_value(json_object_get(by, "who"))));
                out = json_pack("{s:s, s:s}", "behavior", "deny", "message", text);
        }
        if (!out)
                die_oom();
        call_succeed(c, out);
}

/* human.waiting: the daemon says which question a call waits for (and which attempt it is at). The
 * notification names the channel request when it has request_id; else it goes to the one question
 * under way whose id is not known yet. */
static void on_human_waiting(json_t *params) {
        json_t *iid = json_object_get(params, "interaction_id"),
               *rid = json_object_get(params, "request_id");
        Call *match = NULL, *unknown = NULL;
        size_t n_unknown = 0;
        _cleanup_free_ char *text = NULL;

        if (!json_is_string(iid))
                return;
        for (Call *c = calls; c; c = c->next) {
                if (!call_asks(c) || c->channel_id == 0)
                        continue;
                if (json_is_integer(rid)) {
                        if (c->channel_id == json_integer_value(rid))
                                match = c;
                } else if (c->interaction_id) {
                        if (json_equal(c->interaction_id, iid))
                                match = c;
                } else {
                        unknown = c;
                        n_unknown++;
                }
        }
        if (!match && n_unknown == 1)
                match = unknown;
        if (!match)
                return;
        if (!match->interaction_id)
                match->interaction_id = json_incref(iid);
        if (json_is_integer(json_object_get(params, "attempt")))
                xasprintf(
                        &text,
                        "waiting for an answer (question %s, attempt %" JSON_INTEGER_FORMAT
                        " of %" JSON_INTEGER_FORMAT ")",
                        json_string_value(iid),
                        json_integer_value(json_object_get(params, "attempt")),
                        json_integer_value(json_object_get(params, "max_attempts")));
        match->events++;
        send_progress(match, text);
}

static void on_call_answer(Call *c, const struct jsonrpc_message *m) {
        c->channel_id = 0;
        if (m->kind == JSONRPC_ERROR_RESPONSE) {
                _cleanup_free_ char *text =
                        tool_channel_error_message(c->tool, c->method, m->error_code, m->error_message);

                if (!text)
                        die_oom();
                log_debug(
                        "%s: %s answered %d: %s", c->tool->name, c->method, m->error_code, m->error_message);
                call_finish(c, tool_error(text));
                return;
        }
        if (!json_is_object(m->result)) {
                call_fail(
                        c,
                        "%s failed: the cc-docker daemon's answer to %s is not an object",
                        c->tool->name,
                        c->method);
                return;
        }

        if (call_asks(c))
                on_human_answer(c, m->result);
        else if (streq(c->method, "child.output"))
                on_output(c, m->result);
        else if (streq(c->method, "child.result"))
                on_result(c, m->result);
        else if (
                streq(c->method, "child.send") &&
                json_is_true(json_object_get(c->args, "wait_for_result"))) {
                json_t *params = json_pack(
                        "{s:O, s:b, s:I}",
                        "child_session_id",
                        json_object_get(c->args, "child_session_id"),
                        "wait",
                        true,
                        "timeout_seconds",
                        (json_int_t) (call_seconds_left(c) ?: 1));

                c->sent = json_incref(m->result);
                call_request(c, "child.result", params);
        } else
                call_succeed(c, m->result);
}

/* ---- reading the channel ---- */

/* The channel client's message hook. */
static void on_conn_message(ChannelClient *client, const struct jsonrpc_message *m, void *userdata) {
        int64_t id;

        switch (m->kind) {
        case JSONRPC_REQUEST: {
                /* The daemon sends no requests to an mcp connection (docs/channel.md). */
                _cleanup_(json_decrefp) json_t *answer = jsonrpc_error_new(
                        m->id, JSONRPC_METHOD_NOT_FOUND, "ccdocker-mcp takes no requests", NULL);

                conn_send(answer);
                break;
        }
        case JSONRPC_NOTIFICATION:
                if (streq(m->method, "human.waiting"))
                        on_human_waiting(m->params);
                break;
        case JSONRPC_RESPONSE:
        case JSONRPC_ERROR_RESPONSE:
                id = json_is_integer(m->id) ? (int64_t) json_integer_value(m->id) : 0;
                for (Call *c = calls; c; c = c->next)
                        if (id != 0 && c->channel_id == id) {
                                on_call_answer(c, m);
                                return;
                        }
                /* A cancelled or timed-out call's answer, come late. */
                log_debug("dropping the answer to channel request %" PRIi64, id);
                break;
        }
}

static const ChannelClientHooks conn_hooks = {
        .hello = on_hello_answer,
        .message = on_conn_message,
        .down = on_conn_down,
};

/* ---- MCP methods ---- */

static void handle_initialize(json_t *id, json_t *params) {
        const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
        const char *version = protocol_versions[0];

        /* A supported version is echoed; for any other the client gets the newest and decides. */
        for (size_t i = 0; asked && i < ELEMENTSOF(protocol_versions); i++)
                if (streq(asked, protocol_versions[i]))
                        version = protocol_versions[i];
        if (!streq_ptr(asked, version))
                log_info(
                        "the client asked for protocol version '%s', answering %s",
                        strempty(asked),
                        version);

        reply_result(
                id,
                json_pack(
                        "{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}",
                        "protocolVersion",
                        version,
                        "capabilities",
                        "tools",
                        "listChanged",
                        false,
                        "serverInfo",
                        "name",
                        PROGRAM,
                        "version",
                        PROJECT_VERSION,
                        "instructions",
                        INSTRUCTIONS));
        initialized = true;
}

static void handle_tools_list(json_t *id, json_t *params) {
        /* There is one page, and no cursor: any cursor is one this server never gave out. */
        if (json_object_get(params, "cursor")) {
                reply_error(id, JSONRPC_INVALID_PARAMS, "tools/list: unknown cursor");
                return;
        }
        reply_result(id, json_pack("{s:o}", "tools", tools_list()));
}

static void handle_tools_call(json_t *id, json_t *params) {
        const char *name = json_string_value(json_object_get(params, "name"));
        json_t *token = json_object_get(json_object_get(params, "_meta"), "progressToken");
        _cleanup_(json_decrefp) json_t *args = NULL;
        _cleanup_free_ char *message = NULL;
        const Tool *t;
        Call *c;
        int r;

        if (!name) {
                reply_error(id, JSONRPC_INVALID_PARAMS, "tools/call: params.name must be a string");
                return;
        }
        t = tool_find(name);
        if (!t) {
                reply_error(
                        id,
                        JSONRPC_INVALID_PARAMS,
                        "unknown tool '%.*s%s'",
                        TOOL_NAME_SHOWN,
                        name,
                        strlen(name) > TOOL_NAME_SHOWN ? "..." : "");
                return;
        }

        r = tool_check_arguments(t, json_object_get(params, "arguments"), &args, &message);
        if (r == -ENOMEM)
                die_oom();
        if (r < 0) {
                log_debug("refusing a call: %s", message);
                reply_result(id, tool_error(message));
                return;
        }

        c = calloc(1, sizeof(Call));
        if (!c)
                die_oom();
        c->id = json_incref(id);
        c->tool = t;
        c->args = TAKE_PTR(args);
        if (json_is_string(token) || json_is_integer(token))
                c->progress_token = json_incref(token);
        if (t->id == TOOL_GET_CHILD_RESULT || t->id == TOOL_SEND_TO_CHILD ||
            t->id == TOOL_GET_CHILD_OUTPUT) {
                json_t *timeout = json_object_get(c->args, "timeout_seconds");

                c->deadline = now_usec(CLOCK_MONOTONIC) +
                        (usec_t) (timeout ? json_integer_value(timeout) : DEFAULT_WAIT_SEC) * USEC_PER_SEC;
        }
        c->next = calls;
        calls = c;
        call_request(c, t->method, tool_channel_params(t, c->args));
}

/* notifications/cancelled: the call is forgotten and never answered; an answer of the daemon that
 * comes later is dropped. Unknown or finished ids are normal (the answer crossed the notification). */
static void handle_cancelled(json_t *params) {
        json_t *id = json_object_get(params, "requestId");

        for (Call *c = calls; c; c = c->next)
                if (id && json_equal(c->id, id)) {
                        log_debug("%s cancelled by the client", c->tool->name);
                        call_unlink(c);
                        call_free(c);
                        return;
                }
}

static void handle_request(const struct jsonrpc_message *m) {
        static const struct {
                const char *method;
                void (*handler)(json_t *id, json_t *params);
                bool before_initialize;
        } methods[] = {
                { "initialize", handle_initialize, true },
                { "ping", NULL, true },
                { "tools/list", handle_tools_list, false },
                { "tools/call", handle_tools_call, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                if (!streq(m->method, methods[i].method))
                        continue;

                if (streq(m->method, "initialize") && initialized)
                        reply_error(m->id, JSONRPC_INVALID_REQUEST, "already initialized");
                else if (!initialized && !methods[i].before_initialize)
                        reply_error(m->id, JSONRPC_INVALID_REQUEST, "initialize first");
                else if (methods[i].handler)
                        methods[i].handler(m->id, m->params);
                else
                        reply_result(m->id, json_object()); /* ping */
                return;
        }

        /* At once, also before initialize: a client probing for a method (server/discover) must not
         * wait for a timeout. */
        reply_error(m->id, JSONRPC_METHOD_NOT_FOUND, "unknown method '%s'", m->method);
}

static void handle_message(json_t *msg) {
        struct jsonrpc_message m;
        struct jsonrpc_error err;

        if (jsonrpc_classify(msg, &m, &err) < 0) {
                reply_error(err.id, err.code, "%s", err.message);
                return;
        }

        switch (m.kind) {
        case JSONRPC_REQUEST:
                handle_request(&m);
                break;
        case JSONRPC_NOTIFICATION:
                /* notifications/initialized needs nothing: requests are served once initialize is
                 * answered. */
                if (streq(m.method, "notifications/cancelled"))
                        handle_cancelled(m.params);
                else
                        log_debug("notification %s", m.method);
                break;
        case JSONRPC_RESPONSE:
        case JSONRPC_ERROR_RESPONSE:
                /* This server sends no requests, so no response is awaited. */
                log_debug("ignoring a response to a request never sent");
                break;
        }
}

/* Reads what stdin has. false at its end. */
static bool stdin_read(struct jsonrpc_reader *reader) {
        static char buf[READ_CHUNK];
        ssize_t n;
        int r;

        n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return true;
                die(errno, "reading stdin");
        }
        if (n == 0)
                return false;
        r = jsonrpc_reader_feed(reader, buf, (size_t) n);
        if (r < 0)
                die(r, "buffering stdin");

        for (;;) {
                _cleanup_(json_decrefp) json_t *msg = NULL;
                struct jsonrpc_error err;

                r = jsonrpc_reader_next(reader, &msg, &err);
                if (r == 0)
                        break;
                if (r < 0) {
                        log_warning("refusing a line: %s", err.message);
                        reply_error(NULL, err.code, "%s", err.message);
                        continue;
                }
                handle_message(msg);
        }
        return true;
}

/* ---- timers ---- */

static void on_timers(void) {
        usec_t t = now_usec(CLOCK_MONOTONIC);

        if (C.retry_at != 0 && t >= C.retry_at) {
                C.retry_at = 0;
                C.retried = true;
                if (any_waiting())
                        conn_start();
                else
                        C.retried = false;
        }
        if (C.connect_deadline != 0 && t >= C.connect_deadline && conn_state() != CHANNEL_READY)
                conn_failed(ETIMEDOUT);
        for (Call *c = calls, *next; c; c = next) {
                next = c->next;
                if (call_asks(c) && c->channel_id != 0 && c->progress_token && t >= c->keepalive_at) {
                        /* Claude Code ends a call that sends nothing for its idle timeout (30 min for
                         * stdio): a person may take longer. */
                        c->keepalive_at = t + KEEPALIVE_USEC;
                        c->events++;
                        send_progress(c, "waiting for an answer from a person");
                }
                if (c->channel_id != 0 && t >= c->answer_deadline)
                        call_fail(
                                c,
                                "%s failed: the cc-docker daemon did not answer %s in time. Try again; if it "
                                "keeps happening, the daemon is overloaded or stuck.",
                                c->tool->name,
                                c->method);
        }
}

/* Milliseconds until the next timer, -1 for none. */
static int next_timeout(void) {
        usec_t next = 0, t = now_usec(CLOCK_MONOTONIC);

        if (C.retry_at != 0)
                next = C.retry_at;
        if (C.connect_deadline != 0 && (next == 0 || C.connect_deadline < next))
                next = C.connect_deadline;
        for (Call *c = calls; c; c = c->next) {
                if (c->channel_id != 0 && (next == 0 || c->answer_deadline < next))
                        next = c->answer_deadline;
                if (call_asks(c) && c->channel_id != 0 && c->progress_token &&
                    (next == 0 || c->keepalive_at < next))
                        next = c->keepalive_at;
        }
        if (next == 0)
                return -1;
        return next <= t ? 0 : (int) ((next - t + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
}

/* ---- main ---- */

int main(int argc, char *argv[]) {
        _cleanup_(jsonrpc_reader_freep) struct jsonrpc_reader *reader = NULL;
        const char *path;
        int r;

        log_set_prefix(PROGRAM);
        log_set_target(LOG_TARGET_STDERR);
        if (argc > 1)
                die(0, "takes no arguments (it speaks MCP on stdin and stdout)");
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                die(errno, "ignoring SIGPIPE");
        r = jsonrpc_reader_new(LINE_MAX_BYTES, &reader);
        if (r < 0)
                die(r, "creating the message reader");
        r = tools_load();
        if (r < 0)
                die(r, "loading the tool definitions");
        path = getenv("CCDOCKER_CHANNEL_SOCKET");
        C.path = isempty(path) ? DEFAULT_CHANNEL : path;
        r = channel_client_new(C.path, "mcp", &conn_hooks, NULL, &C.client);
        if (r < 0)
                die(r, "creating the channel client");

        for (;;) {
                struct pollfd p[2];
                int n = 0, i_conn = -1;

                channel_client_flush(C.client);

                p[n++] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
                if (channel_client_fd(C.client) >= 0) {
                        i_conn = n;
                        p[n++] = (struct pollfd){
                                .fd = channel_client_fd(C.client),
                                .events = channel_client_poll_events(C.client),
                        };
                }
                if (poll(p, (nfds_t) n, next_timeout()) < 0) {
                        if (errno == EINTR)
                                continue;
                        die(errno, "poll");
                }

                if (i_conn >= 0 && channel_client_fd(C.client) == p[i_conn].fd &&
                    channel_client_dispatch(C.client, p[i_conn].revents) < 0)
                        die_oom();
                if (p[0].revents && !stdin_read(reader))
                        break;
                on_timers();
        }

        if (jsonrpc_reader_pending(reader) > 0)
                log_warning(
                        "stdin ended inside a message; %zu bytes dropped", jsonrpc_reader_pending(reader));
        while (calls) {
                Call *c = calls;

                calls = c->next;
                call_free(c);
        }
        C.client = channel_client_free(C.client);
        tools_unload();
        return EXIT_SUCCESS;
}

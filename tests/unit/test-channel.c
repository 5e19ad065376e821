/* Unit tests for daemon/channel.c over a real unix socket in a mkdtemp() directory, with real client
 * sockets and a real sd-event loop driven until each condition holds. The channel's hooks (ChannelHooks,
 * its one boundary to the session) are implemented here and record their calls; the executable links
 * the daemon's real core like every other unit test. Covered: the socket's and directory's modes, hello and
 * the roles, every refusal of docs/channel.md with the connection surviving it, events validation and the
 * acked value, prompts and their answers, init going away or being replaced, hooks that free the channel,
 * the output limit, the connection limit, and fairness against a flooding connection. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "log.h"
#include "unit-test.h"
#include "util.h"

/* ---- the hooks, recording ---- */

typedef enum FreeIn {
        FREE_NEVER,
        FREE_IN_HELLO,
        FREE_IN_PROMPT_DELIVERED,
        FREE_IN_INIT_GONE,
} FreeIn;

static struct {
        /* how the hooks answer */
        json_t *hello_result; /* returned (a new reference) if set */
        const char *hello_error;
        int events_r;
        const char *events_error;
        FreeIn free_channel_in;

        /* what they saw */
        char trace[1024]; /* "hello(init),delivered(m1,-104),gone," */
        unsigned n_hello;
        char hello_role[16];
        unsigned n_heartbeat;
        unsigned n_events;
        json_t *events;
        unsigned n_logs;
        char log_level[32];
        char log_message[128];
        unsigned n_delivered;
        char delivered_mid[16][64];
        int delivered_r[16];
        unsigned n_init_gone;
        bool had_init_in_gone;
        unsigned n_calls;
        char call_method[32];
        ChannelCall *held_call; /* a call the test answers later */
        bool hold_calls;
} rec;

/* The channel under test, for hooks that free it. */
static Channel **hook_channel;

static void trace(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *format, ...) {
        size_t l = strlen(rec.trace);
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(rec.trace + l, sizeof(rec.trace) - l, format, ap);
        va_end(ap);
}

static void maybe_free_channel(FreeIn where) {
        if (rec.free_channel_in == where && hook_channel && *hook_channel)
                *hook_channel = channel_free(*hook_channel);
}

static json_t *hook_hello(void *userdata, const char *role, char **error) {
        rec.n_hello++;
        snprintf(rec.hello_role, sizeof(rec.hello_role), "%s", role);
        trace("hello(%s),", role);
        maybe_free_channel(FREE_IN_HELLO);

        if (rec.hello_error) {
                *error = strdup(rec.hello_error);
                return NULL;
        }
        if (rec.hello_result)
                return json_incref(rec.hello_result);
        return json_pack(
                "{s:i, s:s, s:i}", "protocol", 1, "session_id", (const char *) userdata, "last_seq", 0);
}

static void hook_heartbeat(void *userdata) {
        rec.n_heartbeat++;
}

static int hook_events(void *userdata, json_t *events, uint64_t *ret_acked, char **error) {
        rec.n_events++;
        json_decref(rec.events);
        rec.events = json_deep_copy(events);

        if (rec.events_r < 0) {
                *error = rec.events_error ? strdup(rec.events_error) : NULL;
                return rec.events_r;
        }
        *ret_acked = (uint64_t) json_integer_value(
                json_object_get(json_array_get(events, json_array_size(events) - 1), "seq"));
        return 0;
}

static void hook_log(void *userdata, const char *level, const char *message) {
        rec.n_logs++;
        snprintf(rec.log_level, sizeof(rec.log_level), "%s", level);
        snprintf(rec.log_message, sizeof(rec.log_message), "%s", message);
}

static void hook_prompt_delivered(void *userdata, const char *message_id, int r) {
        if (rec.n_delivered < ELEMENTSOF(rec.delivered_r)) {
                snprintf(rec.delivered_mid[rec.n_delivered], sizeof(rec.delivered_mid[0]), "%s", message_id);
                rec.delivered_r[rec.n_delivered] = r;
        }
        rec.n_delivered++;
        trace("delivered(%s,%d),", message_id, r);
        maybe_free_channel(FREE_IN_PROMPT_DELIVERED);
}

static void hook_call(void *userdata, const char *method, json_t *params, ChannelCall *call) {
        rec.n_calls++;
        snprintf(rec.call_method, sizeof(rec.call_method), "%s", method);
        trace("call(%s),", method);
        if (rec.hold_calls) {
                channel_call_free(rec.held_call);
                rec.held_call = call;
                return;
        }
        if (json_object_get(params, "refuse"))
                channel_call_error(call, CHANNEL_ERROR_REFUSED, "refused: %s", method);
        else {
                _cleanup_(json_decrefp) json_t *result = json_pack("{s:s}", "method", method);
                channel_call_reply(call, result);
        }
}

static void hook_init_gone(void *userdata) {
        rec.n_init_gone++;
        rec.had_init_in_gone = channel_has_init(*hook_channel);
        trace("gone,");
        maybe_free_channel(FREE_IN_INIT_GONE);
}

static const ChannelHooks hooks = {
        .hello = hook_hello,
        .heartbeat = hook_heartbeat,
        .events = hook_events,
        .log = hook_log,
        .prompt_delivered = hook_prompt_delivered,
        .call = hook_call,
        .init_gone = hook_init_gone,
};

/* The session id the hooks get as their userdata. */
static char session_id[] = "3f9c0a1b2c4d";

/* ---- fixture ---- */

typedef struct Fixture {
        char tmp[64];
        char dir[128];
        char sock[192];
        sd_event *event;
        Channel *channel;
} Fixture;

static Fixture *F;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        json_decref(rec.hello_result);
        json_decref(rec.events);
        memset(&rec, 0, sizeof(rec));

        strcpy(f->tmp, "/tmp/test-channel-XXXXXX");
        assert_non_null(mkdtemp(f->tmp));
        snprintf(f->dir, sizeof(f->dir), "%s/session", f->tmp);
        snprintf(f->sock, sizeof(f->sock), "%s/session.sock", f->dir);

        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(
                channel_new(
                        f->event, &hooks, session_id, session_id, f->dir, getuid(), getgid(), &f->channel),
                0);
        assert_non_null(f->channel);

        F = f;
        hook_channel = &f->channel;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        f->channel = channel_free(f->channel);
        rec.held_call = channel_call_free(rec.held_call);
        hook_channel = NULL;
        F = NULL;
        (void) rmdir(f->dir);
        assert_int_equal(rmdir(f->tmp), 0);
        sd_event_unref(f->event);
        json_decref(rec.hello_result);
        json_decref(rec.events);
        memset(&rec, 0, sizeof(rec));
        free(f);
        return 0;
}

/* ---- driving the loop ---- */

static uint64_t now_usec(void) {
        struct timespec ts;

        assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* Runs the loop until cond holds, for at most timeout_sec. cond is evaluated once per turn. */
#define RUN_UNTIL_TIMEOUT(cond, timeout_sec)                                             \
        do {                                                                             \
                uint64_t _deadline_ = now_usec() + (uint64_t) (timeout_sec) *1000000ULL; \
                while (!(cond)) {                                                        \
                        if (now_usec() >= _deadline_)                                    \
                                fail_msg("timed out waiting for %s", #cond);             \
                        assert_true(sd_event_run(F->event, 10 * 1000ULL) >= 0);          \
                }                                                                        \
        } while (0)
#define RUN_UNTIL(cond) RUN_UNTIL_TIMEOUT(cond, 10)

/* ---- clients ---- */

typedef struct Client {
        int fd;
        char *buf;
        size_t len, allocated;
        bool eof;
} Client;

static Client *client_connect(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Client *cl = calloc(1, sizeof(Client));

        assert_non_null(cl);
        cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(cl->fd >= 0);
        strcpy(sa.sun_path, F->sock);
        assert_int_equal(connect(cl->fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return cl;
}

static void client_free(Client *cl) {
        if (!cl)
                return;
        safe_close(cl->fd);
        free(cl->buf);
        free(cl);
}

static void client_write(Client *cl, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = send(cl->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n < 0) {
                        assert_true(errno == EAGAIN || errno == EINTR);
                        /* The socket is full: let the daemon side read. */
                        assert_true(sd_event_run(F->event, 10 * 1000ULL) >= 0);
                        continue;
                }
                p += n;
                len -= (size_t) n;
        }
}

static void client_send(Client *cl, const char *line) {
        client_write(cl, line, strlen(line));
        client_write(cl, "\n", 1);
}

/* Reads what is there without running the loop. */
static void client_pull(Client *cl) {
        for (;;) {
                ssize_t n;

                if (cl->allocated - cl->len < 65536) {
                        cl->allocated = cl->allocated * 2 + 65536;
                        cl->buf = realloc(cl->buf, cl->allocated);
                        assert_non_null(cl->buf);
                }
                n = recv(cl->fd, cl->buf + cl->len, cl->allocated - cl->len, MSG_DONTWAIT);
                if (n < 0) {
                        assert_true(errno == EAGAIN || errno == EINTR || errno == ECONNRESET);
                        if (errno == ECONNRESET)
                                cl->eof = true;
                        return;
                }
                if (n == 0) {
                        cl->eof = true;
                        return;
                }
                cl->len += (size_t) n;
        }
}

/* Takes a complete line from what was read, parsed, or NULL. */
static json_t *client_take(Client *cl) {
        char *nl = cl->buf ? memchr(cl->buf, '\n', cl->len) : NULL;
        json_error_t e;
        json_t *j;
        size_t n;

        if (!nl)
                return NULL;
        n = (size_t) (nl - cl->buf);
        j = json_loadb(cl->buf, n, 0, &e);
        if (!j)
                fail_msg("the daemon sent a line that is not JSON: %s", e.text);
        memmove(cl->buf, nl + 1, cl->len - n - 1);
        cl->len -= n + 1;
        return j;
}

/* The next message from the daemon, running the loop until it comes. */
static json_t *client_recv(Client *cl) {
        json_t *j = NULL;

        RUN_UNTIL((client_pull(cl), (j = client_take(cl)) || cl->eof));
        if (!j)
                fail_msg("the daemon closed the connection instead of answering");
        return j;
}

static bool client_closed(Client *cl) {
        RUN_UNTIL((client_pull(cl), cl->eof));
        return true;
}

static json_t *expect_result(Client *cl, json_int_t id) {
        json_t *m = client_recv(cl), *result;

        if (json_object_get(m, "error"))
                fail_msg(
                        "expected a result for id %lld, got error %s",
                        (long long) id,
                        json_string_value(json_object_get(json_object_get(m, "error"), "message")));
        assert_string_equal(json_string_value(json_object_get(m, "jsonrpc")), "2.0");
        assert_true(json_is_integer(json_object_get(m, "id")));
        assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
        result = json_incref(json_object_get(m, "result"));
        assert_non_null(result);
        json_decref(m);
        return result;
}

static void expect_empty_result(Client *cl, json_int_t id) {
        _cleanup_(json_decrefp) json_t *result = expect_result(cl, id);

        assert_true(json_is_object(result));
        assert_int_equal(json_object_size(result), 0);
}

/* id < 0: the answer must carry "id": null. */
static void expect_error(Client *cl, json_int_t id, int code, const char *needle) {
        _cleanup_(json_decrefp) json_t *m = client_recv(cl);
        json_t *error = json_object_get(m, "error");
        const char *message;

        if (!error)
                fail_msg("expected error %d for id %lld, got a result", code, (long long) id);
        if (id < 0)
                assert_true(json_is_null(json_object_get(m, "id")));
        else {
                assert_true(json_is_integer(json_object_get(m, "id")));
                assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
        }
        assert_int_equal(json_integer_value(json_object_get(error, "code")), code);
        message = json_string_value(json_object_get(error, "message"));
        assert_non_null(message);
        if (!strstr(message, needle))
                fail_msg("error message \"%s\" does not mention \"%s\"", message, needle);
}

static void request(Client *cl, json_int_t id, const char *method, const char *params) {
        char line[4096];

        if (params)
                snprintf(
                        line,
                        sizeof(line),
                        "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\",\"params\":%s}",
                        (long long) id,
                        method,
                        params);
        else
                snprintf(
                        line,
                        sizeof(line),
                        "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\"}",
                        (long long) id,
                        method);
        client_send(cl, line);
}

/* A client whose hello as role was answered. */
static Client *hello(const char *role) {
        _cleanup_(json_decrefp) json_t *result = NULL;
        char params[64];
        Client *cl = client_connect();

        snprintf(params, sizeof(params), "{\"role\":\"%s\",\"protocol\":1}", role);
        request(cl, 1, "hello", params);
        result = expect_result(cl, 1);
        assert_true(json_is_object(result));
        return cl;
}

/* Reads the next prompt request and returns its id (malloc'd); checks message_id and text. */
static char *expect_prompt(Client *cl, const char *message_id, const char *text) {
        _cleanup_(json_decrefp) json_t *m = client_recv(cl);
        json_t *params = json_object_get(m, "params");
        const char *id = json_string_value(json_object_get(m, "id"));

        assert_string_equal(json_string_value(json_object_get(m, "jsonrpc")), "2.0");
        assert_string_equal(json_string_value(json_object_get(m, "method")), "prompt");
        assert_non_null(id);
        assert_non_null(startswith(id, "p-"));
        assert_string_equal(json_string_value(json_object_get(params, "message_id")), message_id);
        assert_string_equal(json_string_value(json_object_get(params, "text")), text);
        return strdup(id);
}

/* ---- the socket ---- */

static void test_socket_is_0600_in_a_0700_dir_owned_by_the_user(void **state) {
        struct stat st;

        assert_int_equal(stat(F->dir, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(st.st_uid, getuid());
        assert_int_equal(st.st_gid, getgid());

        assert_int_equal(lstat(F->sock, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_uid, getuid());
        assert_int_equal(st.st_gid, getgid());
}

static void test_existing_dir_is_fixed_and_stale_socket_replaced(void **state) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int stale = -EBADF;
        char dir[160], sock[192];
        Channel *c = NULL;
        struct stat st;
        Client *cl;

        /* What a crashed daemon leaves: the directory, with a loose mode, and a socket nobody listens on. */
        snprintf(dir, sizeof(dir), "%s/other", F->tmp);
        snprintf(sock, sizeof(sock), "%s/session.sock", dir);
        assert_int_equal(mkdir(dir, 0755), 0);
        assert_int_equal(chmod(dir, 0755), 0);
        stale = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(stale >= 0);
        strcpy(sa.sun_path, sock);
        assert_int_equal(bind(stale, (struct sockaddr *) &sa, sizeof(sa)), 0);
        stale = safe_close(stale);

        assert_int_equal(
                channel_new(F->event, &hooks, session_id, session_id, dir, getuid(), getgid(), &c), 0);
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(lstat(sock, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);

        /* It listens: a client gets an answer. */
        cl = calloc(1, sizeof(Client));
        assert_non_null(cl);
        cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_int_equal(connect(cl->fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        request(cl, 9, "ping", NULL);
        expect_empty_result(cl, 9);
        client_free(cl);

        channel_free(c);
        assert_int_equal(lstat(sock, &st), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(lstat(dir, &st), -1);
        assert_int_equal(errno, ENOENT);
}

static void test_free_removes_socket_and_dir_and_calls_no_hook(void **state) {
        Client *init = hello("init");
        struct stat st;

        assert_int_equal(channel_send_prompt(F->channel, "m1", "do X"), 0);
        F->channel = channel_free(F->channel);
        assert_int_equal(rec.n_delivered, 0);
        assert_int_equal(rec.n_init_gone, 0);
        assert_true(client_closed(init));

        assert_int_equal(lstat(F->sock, &st), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(lstat(F->dir, &st), -1);
        assert_int_equal(errno, ENOENT);
        client_free(init);
}

/* ---- hello ---- */

static void test_hello_answers_with_the_hooks_result(void **state) {
        _cleanup_(json_decrefp) json_t *result = NULL, *result2 = NULL;
        Client *cl = client_connect(), *mcp = client_connect();

        rec.hello_result = json_pack(
                "{s:i, s:s, s:i, s:{s:s}}",
                "protocol",
                1,
                "session_id",
                "abc",
                "last_seq",
                42,
                "config",
                "x",
                "y");
        assert_false(channel_has_init(F->channel));

        request(cl, 1, "hello", "{\"role\":\"init\",\"protocol\":1}");
        result = expect_result(cl, 1);
        assert_true(json_equal(result, rec.hello_result));
        assert_int_equal(rec.n_hello, 1);
        assert_string_equal(rec.hello_role, "init");
        assert_true(channel_has_init(F->channel));

        /* protocol is optional */
        request(mcp, 7, "hello", "{\"role\":\"mcp\"}");
        result2 = expect_result(mcp, 7);
        assert_true(json_equal(result2, rec.hello_result));
        assert_int_equal(rec.n_hello, 2);
        assert_string_equal(rec.hello_role, "mcp");
        assert_int_equal(rec.n_init_gone, 0);

        client_free(cl);
        client_free(mcp);
}

static void test_hello_refused_by_the_session_is_32000_and_may_be_retried(void **state) {
        Client *cl = client_connect();

        rec.hello_error = "the session is stopping";
        request(cl, 1, "hello", "{\"role\":\"init\"}");
        expect_error(cl, 1, -32000, "the session is stopping");
        assert_false(channel_has_init(F->channel));
        assert_int_equal(channel_send_prompt(F->channel, "m1", "x"), -ENOTCONN);

        /* Not said: other methods are still refused, and hello may come again. */
        request(cl, 2, "heartbeat", "{}");
        expect_error(cl, 2, -32600, "hello first");
        rec.hello_error = NULL;
        request(cl, 3, "hello", "{\"role\":\"init\"}");
        json_decref(expect_result(cl, 3));
        assert_true(channel_has_init(F->channel));
        client_free(cl);
}

static void test_second_hello_on_a_connection_is_refused(void **state) {
        Client *cl = hello("mcp");

        request(cl, 2, "hello", "{\"role\":\"init\"}");
        expect_error(cl, 2, -32600, "already");
        assert_int_equal(rec.n_hello, 1);
        assert_false(channel_has_init(F->channel));

        request(cl, 3, "ping", NULL);
        expect_empty_result(cl, 3);
        client_free(cl);
}

static void test_hello_params_are_checked(void **state) {
        Client *cl = client_connect();

        request(cl, 1, "hello", "{\"role\":\"root\"}");
        expect_error(cl, 1, -32602, "params.role");
        request(cl, 2, "hello", "{}");
        expect_error(cl, 2, -32602, "params.role");
        request(cl, 3, "hello", NULL);
        expect_error(cl, 3, -32602, "params.role");
        request(cl, 4, "hello", "{\"role\":1}");
        expect_error(cl, 4, -32602, "params.role");
        request(cl, 5, "hello", "{\"role\":\"init\",\"protocol\":\"1\"}");
        expect_error(cl, 5, -32602, "params.protocol");
        request(cl, 6, "hello", "[\"init\"]");
        expect_error(cl, 6, -32602, "must be an object");
        assert_int_equal(rec.n_hello, 0);

        request(cl, 7, "hello", "{\"role\":\"init\",\"protocol\":1,\"future\":true}");
        json_decref(expect_result(cl, 7));
        client_free(cl);
}

static void test_methods_before_hello_are_refused(void **state) {
        Client *cl = client_connect();

        request(cl, 1, "heartbeat", "{}");
        expect_error(cl, 1, -32600, "hello first");
        request(cl, 2, "events", "{\"events\":[{\"seq\":1,\"time\":0,\"data\":{}}]}");
        expect_error(cl, 2, -32600, "hello first");
        request(cl, 3, "frobnicate", NULL);
        expect_error(cl, 3, -32600, "hello first");
        /* A notification cannot be answered: it is dropped. */
        client_send(
                cl,
                "{\"jsonrpc\":\"2.0\",\"method\":\"log\","
                "\"params\":{\"level\":\"info\",\"message\":\"m\"}}");
        /* ping is allowed */
        request(cl, 4, "ping", NULL);
        expect_empty_result(cl, 4);

        assert_int_equal(rec.n_heartbeat, 0);
        assert_int_equal(rec.n_events, 0);
        assert_int_equal(rec.n_logs, 0);
        client_free(cl);
}

/* ---- refusals the connection survives ---- */

static void test_invalid_json_gets_32700_and_the_connection_survives(void **state) {
        Client *cl = client_connect();

        client_send(cl, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":");
        expect_error(cl, -1, -32700, "Parse error");
        client_send(cl, "\xff\xfe");
        expect_error(cl, -1, -32700, "Parse error");

        request(cl, 2, "ping", NULL);
        expect_empty_result(cl, 2);
        client_free(cl);
}

static void test_invalid_request_gets_32600_with_its_id(void **state) {
        Client *cl = client_connect();

        client_send(cl, "{\"id\":5,\"method\":\"ping\"}");
        expect_error(cl, 5, -32600, "jsonrpc");
        client_send(cl, "[{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\"}]");
        expect_error(cl, -1, -32600, "Batch");
        client_send(cl, "42");
        expect_error(cl, -1, -32600, "object");

        request(cl, 7, "ping", NULL);
        expect_empty_result(cl, 7);
        client_free(cl);
}

static void test_oversized_line_gets_32600_and_the_connection_survives(void **state) {
        static const char head[] =
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"pad\":\"";
        static const char tail[] = "\"}}\n";
        size_t pad = CHANNEL_MAX_LINE + 1024 * 1024;
        _cleanup_free_ char *line = malloc(sizeof(head) + pad + sizeof(tail));
        Client *cl = client_connect();
        size_t len;

        assert_non_null(line);
        memcpy(line, head, sizeof(head) - 1);
        memset(line + sizeof(head) - 1, 'x', pad);
        memcpy(line + sizeof(head) - 1 + pad, tail, sizeof(tail));
        len = strlen(line);
        assert_true(len > CHANNEL_MAX_LINE);

        client_write(cl, line, len);
        expect_error(cl, -1, -32600, "too long");

        /* The rest of the long line is skipped; the next one is read. */
        request(cl, 2, "ping", NULL);
        expect_empty_result(cl, 2);
        client_free(cl);
}

static void test_peer_that_shuts_down_its_side_gets_its_answers(void **state) {
        Client *cl = client_connect();

        request(cl, 1, "ping", NULL);
        request(cl, 2, "ping", NULL);
        assert_int_equal(shutdown(cl->fd, SHUT_WR), 0);
        expect_empty_result(cl, 1);
        expect_empty_result(cl, 2);
        assert_true(client_closed(cl));
        client_free(cl);
}

static void test_unknown_method_is_refused_naming_it(void **state) {
        Client *cl = hello("init");

        request(cl, 2, "frobnicate", "{}");
        expect_error(cl, 2, -32601, "frobnicate");
        request(cl, 3, "ping", NULL);
        expect_empty_result(cl, 3);
        client_free(cl);
}

static void test_mcp_methods_reach_the_session_only_from_mcp(void **state) {
        Client *init = hello("init"), *mcp = hello("mcp");
        json_t *res;

        request(init, 2, "child.list", "{}");
        expect_error(init, 2, -32601, "mcp");
        assert_int_equal(rec.n_calls, 0);

        request(mcp, 2, "child.list", "{}");
        res = expect_result(mcp, 2);
        assert_string_equal(json_string_value(json_object_get(res, "method")), "child.list");
        json_decref(res);
        request(mcp, 3, "parent.context", NULL);
        res = expect_result(mcp, 3);
        json_decref(res);
        assert_int_equal(rec.n_calls, 2);

        request(mcp, 4, "child.spawn", "{\"refuse\":true}");
        expect_error(mcp, 4, -32001, "refused: child.spawn");
        request(mcp, 5, "child.stop", "[1]");
        expect_error(mcp, 5, -32602, "must be an object");
        assert_int_equal(rec.n_calls, 3);

        client_free(init);
        client_free(mcp);
}

static void test_mcp_call_answered_later_or_dropped_when_closed(void **state) {
        Client *mcp = hello("mcp"), *other;
        json_t *res;

        rec.hold_calls = true;
        request(mcp, 7, "child.result", "{}");
        request(mcp, 8, "ping", NULL);
        /* The held call does not block the connection: ping is answered first. */
        expect_empty_result(mcp, 8);
        assert_non_null(rec.held_call);
        assert_true(channel_call_is_open(rec.held_call));
        {
                _cleanup_(json_decrefp) json_t *result = json_pack("{s:s}", "status", "completed");
                channel_call_reply(TAKE_PTR(rec.held_call), result);
        }
        res = expect_result(mcp, 7);
        assert_string_equal(json_string_value(json_object_get(res, "status")), "completed");
        json_decref(res);

        /* A call whose connection went away is answered into the void, and freed. */
        other = hello("mcp");
        request(other, 2, "child.output", "{}");
        for (int i = 0; i < 500 && !rec.held_call; i++)
                (void) sd_event_run(F->event, 10 * 1000);
        assert_non_null(rec.held_call);
        client_free(other);
        for (int i = 0; i < 500 && channel_call_is_open(rec.held_call); i++)
                (void) sd_event_run(F->event, 10 * 1000);
        assert_false(channel_call_is_open(rec.held_call));
        channel_call_reply(TAKE_PTR(rec.held_call), NULL);
        rec.hold_calls = false;
        client_free(mcp);
}

static void test_non_object_params_are_refused(void **state) {
        Client *cl = hello("init");

        request(cl, 2, "heartbeat", "[]");
        expect_error(cl, 2, -32602, "must be an object");
        request(cl, 3, "events", "[{\"seq\":1,\"time\":0,\"data\":{}}]");
        expect_error(cl, 3, -32602, "must be an object");
        assert_int_equal(rec.n_heartbeat, 0);
        assert_int_equal(rec.n_events, 0);
        client_free(cl);
}

/* ---- events ---- */

static void test_events_param_errors_name_the_index_and_field(void **state) {
        static const struct {
                const char *params;
                const char *needle;
        } cases[] = {
                { "{}", "params.events is missing" },
                { "{\"events\":[]}", "params.events must be an array of 1 to 1000" },
                { "{\"events\":{\"seq\":1}}", "params.events must be an array" },
                { "{\"events\":[{\"seq\":1,\"time\":0,\"data\":{}},5]}",
                  "params.events[1] must be an object" },
                { "{\"events\":[{\"seq\":0,\"time\":0,\"data\":{}}]}", "params.events[0].seq" },
                { "{\"events\":[{\"seq\":\"1\",\"time\":0,\"data\":{}}]}", "params.events[0].seq" },
                { "{\"events\":[{\"time\":0,\"data\":{}}]}", "params.events[0].seq" },
                { "{\"events\":[{\"seq\":1,\"time\":0,\"data\":1},{\"seq\":2,\"time\":0,\"data\":2},"
                  "{\"seq\":3,\"time\":-1,\"data\":{}}]}",
                  "params.events[2].time" },
                { "{\"events\":[{\"seq\":1,\"time\":1.5,\"data\":{}}]}", "params.events[0].time" },
                { "{\"events\":[{\"seq\":1,\"time\":0,\"data\":null},{\"seq\":2,\"time\":0}]}",
                  "params.events[1].data" },
        };
        Client *cl = hello("init");
        json_int_t id = 10;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++, id++) {
                request(cl, id, "events", cases[i].params);
                expect_error(cl, id, -32602, cases[i].needle);
        }

        /* One over the limit. */
        {
                _cleanup_(json_decrefp) json_t *params = json_pack("{s:[]}", "events");
                _cleanup_free_ char *text = NULL, *line = NULL;

                for (int i = 1; i <= CHANNEL_MAX_EVENTS_PER_CALL + 1; i++)
                        assert_int_equal(
                                json_array_append_new(
                                        json_object_get(params, "events"),
                                        json_pack("{s:i, s:i, s:{}}", "seq", i, "time", 0, "data")),
                                0);
                text = json_dumps(params, JSON_COMPACT);
                assert_non_null(text);
                assert_true(
                        asprintf(
                                &line,
                                "{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"events\",\"params\":%s}",
                                text) > 0);
                client_send(cl, line);
                expect_error(cl, 99, -32602, "1 to 1000");
        }

        assert_int_equal(rec.n_events, 0);
        client_free(cl);
}

static void test_events_returns_the_acked_seq(void **state) {
        _cleanup_(json_decrefp) json_t *result = NULL;
        Client *cl = hello("init");

        request(cl,
                2,
                "events",
                "{\"events\":[{\"seq\":1,\"time\":1795607655374314,\"data\":{\"type\":\"system\"}},"
                "{\"seq\":2,\"time\":1795607655380002,\"data\":{\"type\":\"raw\",\"text\":\"hi\"}}]}");
        result = expect_result(cl, 2);
        assert_int_equal(json_object_size(result), 1);
        assert_int_equal(json_integer_value(json_object_get(result, "acked")), 2);
        assert_int_equal(rec.n_events, 1);
        assert_int_equal(json_array_size(rec.events), 2);
        assert_string_equal(
                json_string_value(
                        json_object_get(json_object_get(json_array_get(rec.events, 1), "data"), "text")),
                "hi");
        client_free(cl);
}

static void test_events_gap_is_32602(void **state) {
        Client *cl = hello("init");

        rec.events_r = -EBADMSG;
        rec.events_error = "events[0]: gap: expected seq 3, got 5";
        request(cl, 2, "events", "{\"events\":[{\"seq\":5,\"time\":0,\"data\":{}}]}");
        expect_error(cl, 2, -32602, "expected seq 3, got 5");
        assert_int_equal(rec.n_events, 1);

        /* The connection goes on. */
        request(cl, 3, "ping", NULL);
        expect_empty_result(cl, 3);
        client_free(cl);
}

static void test_events_the_session_cannot_store_are_32000(void **state) {
        Client *cl = hello("init");

        rec.events_r = -EIO;
        rec.events_error = "could not store the events: Input/output error";
        request(cl, 2, "events", "{\"events\":[{\"seq\":1,\"time\":0,\"data\":{}}]}");
        expect_error(cl, 2, -32000, "could not store the events");

        rec.events_error = NULL;
        request(cl, 3, "events", "{\"events\":[{\"seq\":1,\"time\":0,\"data\":{}}]}");
        expect_error(cl, 3, -32000, "Input/output error");
        client_free(cl);
}

/* ---- heartbeat and log ---- */

static void test_heartbeat_of_init_reaches_the_session(void **state) {
        Client *init = hello("init"), *mcp = hello("mcp");

        request(init, 2, "heartbeat", "{}");
        expect_empty_result(init, 2);
        assert_int_equal(rec.n_heartbeat, 1);
        request(init, 3, "heartbeat", NULL);
        expect_empty_result(init, 3);
        assert_int_equal(rec.n_heartbeat, 2);

        /* The session watches init's heartbeat; an MCP server's is only answered. */
        request(mcp, 2, "heartbeat", "{}");
        expect_empty_result(mcp, 2);
        assert_int_equal(rec.n_heartbeat, 2);

        client_free(init);
        client_free(mcp);
}

static void test_log_notification_reaches_the_session(void **state) {
        Client *cl = hello("init");

        client_send(
                cl,
                "{\"jsonrpc\":\"2.0\",\"method\":\"log\","
                "\"params\":{\"level\":\"warning\",\"message\":\"claude restarted\"}}");
        /* Not valid: dropped, since a notification cannot be answered. */
        client_send(
                cl,
                "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"level\":\"warning\",\"message\":7}}");
        client_send(cl, "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":[\"x\"]}");
        client_send(cl, "{\"jsonrpc\":\"2.0\",\"method\":\"whatever\"}");
        request(cl, 2, "ping", NULL);
        expect_empty_result(cl, 2);

        assert_int_equal(rec.n_logs, 1);
        assert_string_equal(rec.log_level, "warning");
        assert_string_equal(rec.log_message, "claude restarted");

        /* level is optional */
        client_send(cl, "{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"message\":\"hello\"}}");
        RUN_UNTIL(rec.n_logs == 2);
        assert_string_equal(rec.log_level, "info");
        client_free(cl);
}

/* ---- prompts ---- */

static void test_prompt_reaches_init_and_its_answer_is_delivered(void **state) {
        _cleanup_free_ char *id1 = NULL, *id2 = NULL, *line = NULL;
        Client *init = hello("init"), *mcp = hello("mcp");

        assert_int_equal(channel_send_prompt(F->channel, "5b1e", "do X\nthen Y"), 0);
        id1 = expect_prompt(init, "5b1e", "do X\nthen Y");
        assert_int_equal(rec.n_delivered, 0);

        assert_true(asprintf(&line, "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"result\":{}}", id1) > 0);
        client_send(init, line);
        RUN_UNTIL(rec.n_delivered == 1);
        assert_string_equal(rec.delivered_mid[0], "5b1e");
        assert_int_equal(rec.delivered_r[0], 0);

        /* An answer to nothing we asked, and one on the wrong connection, are ignored. */
        client_send(init, line);
        client_send(mcp, line);
        request(init, 2, "ping", NULL);
        expect_empty_result(init, 2);
        request(mcp, 2, "ping", NULL);
        expect_empty_result(mcp, 2);
        assert_int_equal(rec.n_delivered, 1);

        /* A refusal is -EPROTO. */
        assert_int_equal(channel_send_prompt(F->channel, "6c2f", "do Z"), 0);
        id2 = expect_prompt(init, "6c2f", "do Z");
        assert_string_not_equal(id1, id2);
        line = mfree(line);
        assert_true(
                asprintf(
                        &line,
                        "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"error\":{\"code\":-32000,\"message\":\"no\"}}",
                        id2) > 0);
        client_send(init, line);
        RUN_UNTIL(rec.n_delivered == 2);
        assert_string_equal(rec.delivered_mid[1], "6c2f");
        assert_int_equal(rec.delivered_r[1], -EPROTO);

        client_free(init);
        client_free(mcp);
        RUN_UNTIL(rec.n_init_gone == 1);
        assert_int_equal(rec.n_delivered, 2);
}

static void test_send_prompt_without_init_is_enotconn(void **state) {
        Client *mcp, *unsaid;

        assert_int_equal(channel_send_prompt(F->channel, "m1", "x"), -ENOTCONN);
        mcp = hello("mcp");
        unsaid = client_connect();
        request(unsaid, 1, "ping", NULL);
        expect_empty_result(unsaid, 1);
        assert_int_equal(channel_send_prompt(F->channel, "m1", "x"), -ENOTCONN);
        assert_false(channel_has_init(F->channel));
        client_free(mcp);
        client_free(unsaid);
}

static void test_closing_init_calls_init_gone_and_fails_pending_prompts(void **state) {
        Client *init = hello("init"), *mcp = hello("mcp");

        assert_int_equal(channel_send_prompt(F->channel, "m1", "one"), 0);
        assert_int_equal(channel_send_prompt(F->channel, "m2", "two"), 0);
        free(expect_prompt(init, "m1", "one"));
        free(expect_prompt(init, "m2", "two"));

        /* An MCP server going away means nothing to the session. */
        client_free(mcp);
        request(init, 2, "ping", NULL);
        expect_empty_result(init, 2);
        assert_int_equal(rec.n_init_gone, 0);

        client_free(init);
        RUN_UNTIL(rec.n_init_gone == 1);
        assert_int_equal(rec.n_delivered, 2);
        assert_string_equal(rec.delivered_mid[0], "m1");
        assert_int_equal(rec.delivered_r[0], -ECONNRESET);
        assert_string_equal(rec.delivered_mid[1], "m2");
        assert_int_equal(rec.delivered_r[1], -ECONNRESET);
        assert_string_equal(rec.trace, "hello(init),hello(mcp),delivered(m1,-104),delivered(m2,-104),gone,");
        assert_false(rec.had_init_in_gone);
        assert_false(channel_has_init(F->channel));
        assert_int_equal(channel_send_prompt(F->channel, "m3", "x"), -ENOTCONN);
}

static void test_second_init_replaces_the_first(void **state) {
        _cleanup_free_ char *id = NULL, *line = NULL;
        Client *first = hello("init"), *second;

        assert_int_equal(channel_send_prompt(F->channel, "m1", "one"), 0);
        free(expect_prompt(first, "m1", "one"));

        second = hello("init");
        /* The session heard of the old one's end before the new hello. */
        assert_string_equal(rec.trace, "hello(init),delivered(m1,-104),gone,hello(init),");
        assert_true(client_closed(first));
        assert_true(channel_has_init(F->channel));

        assert_int_equal(channel_send_prompt(F->channel, "m1", "one"), 0);
        id = expect_prompt(second, "m1", "one");
        assert_true(asprintf(&line, "{\"jsonrpc\":\"2.0\",\"id\":\"%s\",\"result\":{}}", id) > 0);
        client_send(second, line);
        RUN_UNTIL(rec.n_delivered == 2);
        assert_int_equal(rec.delivered_r[1], 0);
        assert_int_equal(rec.n_init_gone, 1);

        client_free(first);
        client_free(second);
}

static void test_peer_that_does_not_read_is_dropped(void **state) {
        size_t len = 1024 * 1024;
        _cleanup_free_ char *text = malloc(len + 1);
        Client *init = hello("init");
        unsigned sent = 0;
        int r = 0;

        assert_non_null(text);
        memset(text, 'a', len);
        text[len] = 0;

        /* Nothing is read: the queue reaches 16 MiB and the connection goes. */
        for (unsigned i = 0; i < 32; i++) {
                char mid[16];

                snprintf(mid, sizeof(mid), "m%u", i);
                r = channel_send_prompt(F->channel, mid, text);
                if (r < 0)
                        break;
                sent++;
        }
        assert_int_equal(r, -ENOBUFS);
        assert_true(sent >= 15);
        assert_false(channel_has_init(F->channel));

        RUN_UNTIL(rec.n_init_gone == 1);
        assert_int_equal(rec.n_delivered, sent);
        for (unsigned i = 0; i < sent && i < ELEMENTSOF(rec.delivered_r); i++)
                assert_int_equal(rec.delivered_r[i], -ECONNRESET);
        assert_true(client_closed(init));
        client_free(init);
}

/* ---- hooks that end the session ---- */

static void test_hook_may_free_the_channel_when_init_goes(void **state) {
        Client *init = hello("init");

        rec.free_channel_in = FREE_IN_INIT_GONE;
        client_free(init);
        RUN_UNTIL(rec.n_init_gone == 1);
        assert_null(F->channel);
}

static void test_no_hook_is_called_after_a_hook_freed_the_channel(void **state) {
        Client *init = hello("init"), *mcp = hello("mcp");

        assert_int_equal(channel_send_prompt(F->channel, "m1", "one"), 0);
        assert_int_equal(channel_send_prompt(F->channel, "m2", "two"), 0);
        rec.free_channel_in = FREE_IN_PROMPT_DELIVERED;
        client_free(init);
        RUN_UNTIL(rec.n_delivered >= 1);
        assert_null(F->channel);
        /* The loop goes on without the channel. */
        for (unsigned i = 0; i < 10; i++)
                assert_true(sd_event_run(F->event, 1000) >= 0);
        assert_int_equal(rec.n_delivered, 1);
        assert_int_equal(rec.n_init_gone, 0);
        assert_true(client_closed(mcp));
        client_free(mcp);
}

static void test_hook_may_free_the_channel_during_hello(void **state) {
        Client *cl = client_connect();

        rec.free_channel_in = FREE_IN_HELLO;
        request(cl, 1, "hello", "{\"role\":\"init\"}");
        /* The hello is in the same read as the ping: the ping must not be handled. */
        request(cl, 2, "ping", NULL);
        RUN_UNTIL(rec.n_hello == 1);
        assert_null(F->channel);
        assert_true(client_closed(cl));
        assert_int_equal(cl->len, 0);
        client_free(cl);
}

/* ---- limits and fairness ---- */

static void test_connections_over_the_limit_are_closed(void **state) {
        Client *clients[16] = {}, *extra;

        for (unsigned i = 0; i < ELEMENTSOF(clients); i++) {
                clients[i] = client_connect();
                request(clients[i], 1, "ping", NULL);
                expect_empty_result(clients[i], 1);
        }
        extra = client_connect();
        assert_true(client_closed(extra));
        client_free(extra);

        /* A place that frees up can be taken again, once the daemon side has seen it go. */
        client_free(clients[0]);
        while (sd_event_run(F->event, 10 * 1000ULL) > 0)
                ;
        clients[0] = client_connect();
        request(clients[0], 2, "ping", NULL);
        expect_empty_result(clients[0], 2);

        for (unsigned i = 0; i < ELEMENTSOF(clients); i++)
                client_free(clients[i]);
}

static void test_flooding_connection_does_not_starve_another(void **state) {
        size_t size = 6 * 1024 * 1024, len = 0;
        _cleanup_free_ char *flood = malloc(size + 128);
        Client *flooder = hello("init"), *other;
        unsigned total = 0, iterations, seen;
        json_t *answer = NULL;
        int status, flags;
        pid_t pid;

        assert_non_null(flood);
        while (len < size) {
                total++;
                len += (size_t) sprintf(
                        flood + len,
                        "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"heartbeat\"}\n",
                        total + 1);
        }

        /* The flood is written by another process, as fast as the daemon side takes it. */
        flags = fcntl(flooder->fd, F_GETFL);
        assert_true(flags >= 0);
        assert_int_equal(fcntl(flooder->fd, F_SETFL, flags & ~O_NONBLOCK), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                const char *p = flood;
                size_t left = len;

                while (left > 0) {
                        ssize_t n = send(flooder->fd, p, left, MSG_NOSIGNAL);

                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                _exit(EXIT_FAILURE);
                        }
                        p += n;
                        left -= (size_t) n;
                }
                _exit(EXIT_SUCCESS);
        }

        RUN_UNTIL(rec.n_heartbeat > 0);

        other = client_connect();
        request(other, 1, "hello", "{\"role\":\"mcp\"}");
        for (iterations = 0; iterations < 50 && !answer; iterations++) {
                assert_true(sd_event_run(F->event, 100 * 1000ULL) >= 0);
                client_pull(other);
                answer = client_take(other);
        }
        seen = rec.n_heartbeat;
        assert_non_null(answer);
        assert_non_null(json_object_get(answer, "result"));
        json_decref(answer);

        /* Answered within a few turns of the loop, while most of the flood was still to come. */
        if (iterations > 10)
                fail_msg("hello answered after %u iterations", iterations);
        if (seen >= total)
                fail_msg("the flood (%u requests) was over before the hello was answered", total);

        /* And nothing of the flood was lost. */
        RUN_UNTIL_TIMEOUT(rec.n_heartbeat == total, 120);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        client_free(flooder);
        client_free(other);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_socket_is_0600_in_a_0700_dir_owned_by_the_user),
                T(test_existing_dir_is_fixed_and_stale_socket_replaced),
                T(test_free_removes_socket_and_dir_and_calls_no_hook),
                T(test_hello_answers_with_the_hooks_result),
                T(test_hello_refused_by_the_session_is_32000_and_may_be_retried),
                T(test_second_hello_on_a_connection_is_refused),
                T(test_hello_params_are_checked),
                T(test_methods_before_hello_are_refused),
                T(test_invalid_json_gets_32700_and_the_connection_survives),
                T(test_invalid_request_gets_32600_with_its_id),
                T(test_oversized_line_gets_32600_and_the_connection_survives),
                T(test_peer_that_shuts_down_its_side_gets_its_answers),
                T(test_unknown_method_is_refused_naming_it),
                T(test_mcp_methods_reach_the_session_only_from_mcp),
                T(test_mcp_call_answered_later_or_dropped_when_closed),
                T(test_non_object_params_are_refused),
                T(test_events_param_errors_name_the_index_and_field),
                T(test_events_returns_the_acked_seq),
                T(test_events_gap_is_32602),
                T(test_events_the_session_cannot_store_are_32000),
                T(test_heartbeat_of_init_reaches_the_session),
                T(test_log_notification_reaches_the_session),
                T(test_prompt_reaches_init_and_its_answer_is_delivered),
                T(test_send_prompt_without_init_is_enotconn),
                T(test_closing_init_calls_init_gone_and_fails_pending_prompts),
                T(test_second_init_replaces_the_first),
                T(test_peer_that_does_not_read_is_dropped),
                T(test_hook_may_free_the_channel_when_init_goes),
                T(test_no_hook_is_called_after_a_hook_freed_the_channel),
                T(test_hook_may_free_the_channel_during_hello),
                T(test_connections_over_the_limit_are_closed),
                T(test_flooding_connection_does_not_starve_another),
        };
#undef T

        /* The clients write with MSG_NOSIGNAL, the channel too; this is for the forked flooder's peer. */
        (void) signal(SIGPIPE, SIG_IGN);
        log_set_target(LOG_TARGET_STDERR);
        log_set_max_level(LOG_WARNING);
        return cmocka_run_group_tests(tests, NULL, NULL);
}

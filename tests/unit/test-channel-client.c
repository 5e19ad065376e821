/* Unit tests for common/channel-client.c against a stand-in daemon on a real unix socket in a temporary
 * directory: the hello it sends (role, protocol), READY on the answer, request ids matched back, the
 * daemon's requests and notifications reaching the message hook, an invalid message with an id
 * answered with the error, a hello refused, the connection closed by the daemon, a socket that is not
 * there, and a path too long for a unix socket. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel-client.h"
#include "cleanup.h"
#include "unit-test.h"
#include "util.h"

typedef struct Fixture {
        char dir[64], path[128];
        int listen_fd, daemon_fd;
        ChannelClient *client;

        /* what the hooks saw */
        unsigned hellos, messages, downs;
        enum jsonrpc_kind last_kind;
        int64_t last_id;
        char last_method[64];
        ChannelState down_was;
        int down_error;
        char down_why[128];
} Fixture;

static void on_hello(ChannelClient *c, const struct jsonrpc_message *m, void *userdata) {
        Fixture *f = userdata;

        f->hellos++;
        f->last_kind = m->kind;
}

static void on_message(ChannelClient *c, const struct jsonrpc_message *m, void *userdata) {
        Fixture *f = userdata;

        f->messages++;
        f->last_kind = m->kind;
        f->last_id = json_is_integer(m->id) ? (int64_t) json_integer_value(m->id) : 0;
        snprintf(f->last_method, sizeof(f->last_method), "%s", strempty(m->method));
}

static void on_down(ChannelClient *c, ChannelState was, int error, const char *why, void *userdata) {
        Fixture *f = userdata;

        assert_int_equal(channel_client_state(c), CHANNEL_DOWN);
        assert_int_equal(channel_client_fd(c), -EBADF);
        f->downs++;
        f->down_was = was;
        f->down_error = error;
        snprintf(f->down_why, sizeof(f->down_why), "%s", why);
}

static const ChannelClientHooks hooks = {
        .hello = on_hello,
        .message = on_message,
        .down = on_down,
};

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-channel-client-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/session.sock", f->dir);
        strcpy(sa.sun_path, f->path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(f->listen_fd >= 0);
        assert_int_equal(bind(f->listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(f->listen_fd, 8), 0);
        f->daemon_fd = -EBADF;
        assert_int_equal(channel_client_new(f->path, "init", &hooks, f, &f->client), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        channel_client_free(f->client);
        safe_close(f->listen_fd);
        safe_close(f->daemon_fd);
        unlink(f->path);
        rmdir(f->dir);
        free(f);
        return 0;
}

/* Writes everything the client queued (the socket is a local one with room). */
static void client_flush(Fixture *f) {
        channel_client_flush(f->client);
        assert_int_equal(channel_client_pending(f->client), 0);
}

/* Waits for the client's fd and dispatches once. */
static void client_dispatch(Fixture *f) {
        struct pollfd p = { .fd = channel_client_fd(f->client),
                            .events = channel_client_poll_events(f->client) };

        assert_true(p.fd >= 0);
        assert_int_equal(poll(&p, 1, -1), 1);
        assert_int_equal(channel_client_dispatch(f->client, p.revents), 0);
}

/* One line the client sent, parsed. */
static json_t *daemon_read(Fixture *f) {
        char line[4096];
        size_t n = 0;
        json_t *j;

        while (n < sizeof(line) - 1) {
                ssize_t k = read(f->daemon_fd, line + n, 1);

                assert_int_equal(k, 1);
                if (line[n++] == '\n')
                        break;
        }
        line[n] = '\0';
        j = json_loads(line, 0, NULL);
        assert_non_null(j);
        return j;
}

static void daemon_write(Fixture *f, const char *line) {
        assert_int_equal(write(f->daemon_fd, line, strlen(line)), (ssize_t) strlen(line));
}

/* Connects, and the stand-in daemon takes the connection and the hello. Returns the hello's id. */
static int64_t connect_and_hello(Fixture *f) {
        _cleanup_(json_decrefp) json_t *hello = NULL;

        assert_int_equal(channel_client_connect(f->client), 0);
        f->daemon_fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(f->daemon_fd >= 0);
        if (channel_client_state(f->client) == CHANNEL_CONNECTING)
                client_dispatch(f);
        assert_int_equal(channel_client_state(f->client), CHANNEL_HELLO);
        client_flush(f);
        hello = daemon_read(f);
        assert_string_equal(json_string_value(json_object_get(hello, "method")), "hello");
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(hello, "params"), "role")), "init");
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(hello, "params"), "protocol")), 1);
        assert_true(json_is_integer(json_object_get(hello, "id")));
        return json_integer_value(json_object_get(hello, "id"));
}

/* Connects and answers the hello: READY. */
static void connect_ready(Fixture *f) {
        char line[256];

        snprintf(
                line,
                sizeof(line),
                "{\"jsonrpc\":\"2.0\",\"id\":%" PRIi64 ",\"result\":{\"protocol\":1}}\n",
                connect_and_hello(f));
        daemon_write(f, line);
        client_dispatch(f);
        assert_int_equal(channel_client_state(f->client), CHANNEL_READY);
}

static void test_channel_client_hello_then_requests_and_answers(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *params = json_object(), *sent = NULL;
        char line[256];
        int64_t hello_id, id;

        hello_id = connect_and_hello(f);
        snprintf(
                line,
                sizeof(line),
                "{\"jsonrpc\":\"2.0\",\"id\":%" PRIi64 ",\"result\":{\"protocol\":1}}\n",
                hello_id);
        daemon_write(f, line);
        client_dispatch(f);
        assert_int_equal(f->hellos, 1);
        assert_int_equal(f->last_kind, JSONRPC_RESPONSE);
        assert_int_equal(channel_client_state(f->client), CHANNEL_READY);
        assert_int_equal(f->messages, 0); /* the hello answer is not a message */

        /* A request gets a new id, and its answer reaches the message hook with it. */
        assert_int_equal(channel_client_request(f->client, "heartbeat", params, &id), 0);
        assert_true(id != hello_id);
        assert_true(channel_client_poll_events(f->client) & POLLOUT);
        client_flush(f);
        sent = daemon_read(f);
        assert_string_equal(json_string_value(json_object_get(sent, "method")), "heartbeat");
        assert_int_equal(json_integer_value(json_object_get(sent, "id")), id);
        snprintf(line, sizeof(line), "{\"jsonrpc\":\"2.0\",\"id\":%" PRIi64 ",\"result\":{}}\n", id);
        daemon_write(f, line);
        client_dispatch(f);
        assert_int_equal(f->messages, 1);
        assert_int_equal(f->last_kind, JSONRPC_RESPONSE);
        assert_int_equal(f->last_id, id);

        /* The daemon's request and a notification, in one read. */
        daemon_write(
                f,
                "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"prompt\",\"params\":{}}\n"
                "{\"jsonrpc\":\"2.0\",\"method\":\"note\"}\n");
        client_dispatch(f);
        assert_int_equal(f->messages, 3);
        assert_int_equal(f->last_kind, JSONRPC_NOTIFICATION);
        assert_string_equal(f->last_method, "note");
        assert_int_equal(f->downs, 0);
}

static void test_channel_client_answers_an_invalid_message_with_an_id(void **state) {
        Fixture *f = *state;
        _cleanup_(json_decrefp) json_t *answer = NULL;

        connect_ready(f);
        daemon_write(f, "{\"jsonrpc\":\"1.0\",\"id\":9,\"method\":\"prompt\"}\n");
        client_dispatch(f);
        assert_int_equal(f->messages, 0);
        client_flush(f);
        answer = daemon_read(f);
        assert_int_equal(json_integer_value(json_object_get(answer, "id")), 9);
        assert_int_equal(
                json_integer_value(json_object_get(json_object_get(answer, "error"), "code")),
                JSONRPC_INVALID_REQUEST);
        assert_int_equal(channel_client_state(f->client), CHANNEL_READY);
}

static void test_channel_client_hello_refused_closes(void **state) {
        Fixture *f = *state;
        char line[256];

        snprintf(
                line,
                sizeof(line),
                "{\"jsonrpc\":\"2.0\",\"id\":%" PRIi64 ",\"error\":{\"code\":-32000,\"message\":\"no\"}}\n",
                connect_and_hello(f));
        daemon_write(f, line);
        client_dispatch(f);
        assert_int_equal(f->hellos, 1);
        assert_int_equal(f->last_kind, JSONRPC_ERROR_RESPONSE);
        assert_int_equal(channel_client_state(f->client), CHANNEL_DOWN);
        assert_int_equal(channel_client_fd(f->client), -EBADF);
        assert_int_equal(f->downs, 0); /* the hello hook says it */
}

static void test_channel_client_connection_closed_by_the_daemon(void **state) {
        Fixture *f = *state;

        connect_ready(f);
        /* Queued bytes are dropped with the connection. */
        assert_int_equal(channel_client_put(f->client, "x\n", 2), 0);
        f->daemon_fd = safe_close(f->daemon_fd);
        client_dispatch(f);
        assert_int_equal(f->downs, 1);
        assert_int_equal(f->down_was, CHANNEL_READY);
        assert_int_equal(f->down_error, ECONNRESET);
        assert_string_equal(f->down_why, "closed by the daemon");
        assert_int_equal(channel_client_pending(f->client), 0);

        /* And it can connect again. */
        (void) connect_and_hello(f);
}

static void test_channel_client_socket_not_there(void **state) {
        Fixture *f = *state;

        unlink(f->path);
        assert_int_equal(channel_client_connect(f->client), 0);
        assert_int_equal(f->downs, 1);
        assert_int_equal(f->down_was, CHANNEL_CONNECTING);
        assert_int_equal(f->down_error, ENOENT);
        assert_int_equal(channel_client_state(f->client), CHANNEL_DOWN);
}

static void test_channel_client_path_too_long(void **state) {
        char path[200];
        ChannelClient *c;

        memset(path, 'a', sizeof(path) - 1);
        path[sizeof(path) - 1] = '\0';
        assert_int_equal(channel_client_new(path, "mcp", &hooks, NULL, &c), 0);
        assert_int_equal(channel_client_connect(c), -ENAMETOOLONG);
        assert_int_equal(channel_client_state(c), CHANNEL_DOWN);
        channel_client_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(
                        test_channel_client_hello_then_requests_and_answers, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_channel_client_answers_an_invalid_message_with_an_id, setup, teardown),
                cmocka_unit_test_setup_teardown(test_channel_client_hello_refused_closes, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_channel_client_connection_closed_by_the_daemon, setup, teardown),
                cmocka_unit_test_setup_teardown(test_channel_client_socket_not_there, setup, teardown),
                cmocka_unit_test(test_channel_client_path_too_long),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

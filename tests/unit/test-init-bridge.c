/* Unit tests for oci-image/init/bridge.c, ccdocker-init's loopback bridges, with real sockets: a forked
 * echo server on a unix socket (it echoes until the client's end, then sends "bye" and closes, so a
 * half-close must pass both ways), many concurrent TCP clients through one bridge driven by a poll()
 * loop as init drives it, a bridge whose socket is gone, and the environment set for claude. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "cleanup.h"
#include "unit-test.h"
#include "util.h"

#define CLIENTS 24
#define PAYLOAD (256 * 1024)

typedef struct Fixture {
        char dir[64], path[128];
        pid_t server;
        unsigned warnings;
        char last_warning[512];
} Fixture;

static void echo_connection(int fd) {
        char buf[16384];

        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf)), w = 0;

                if (k <= 0)
                        break;
                while (w < k) {
                        ssize_t m = write(fd, buf + w, (size_t) (k - w));

                        if (m <= 0)
                                _exit(1);
                        w += m;
                }
        }
        if (write(fd, "bye", 3) != 3)
                _exit(1);
        _exit(0);
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-init-bridge-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/upstream.sock", f->dir);
        strcpy(sa.sun_path, f->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 64), 0);

        f->server = fork();
        assert_true(f->server >= 0);
        if (f->server == 0) {
                signal(SIGCHLD, SIG_IGN); /* no zombies from the per-connection children */
                for (;;) {
                        int c = accept(fd, NULL, NULL);

                        if (c < 0)
                                continue;
                        if (fork() == 0)
                                echo_connection(c);
                        close(c);
                }
        }
        close(fd);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        kill(f->server, SIGKILL);
        waitpid(f->server, NULL, 0);
        unlink(f->path);
        rmdir(f->dir);
        free(f);
        return 0;
}

static void on_log(int level, const char *message, void *userdata) {
        Fixture *f = userdata;

        if (level <= LOG_WARNING) {
                f->warnings++;
                snprintf(f->last_warning, sizeof(f->last_warning), "%s", message);
        }
}

typedef struct Client {
        int fd;
        size_t sent, received;
        bool shut, done;
        char *in;
} Client;

static int client_connect(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        /* Completes against the listen backlog, before the bridge accepts. */
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
        return fd;
}

static char payload_byte(size_t client, size_t i) {
        return (char) ((i * 31 + client * 7) & 0xff);
}

static void test_bridge_relays_many_connections_both_ways_with_half_close(void **state) {
        Fixture *f = *state;
        Bridge *b = NULL;
        Client clients[CLIENTS] = {};
        struct pollfd *p;
        unsigned done = 0;

        assert_int_equal(bridge_new("test", f->path, &b), 0);
        bridge_set_log(b, on_log, f);
        assert_true(bridge_port(b) > 0);

        for (size_t i = 0; i < CLIENTS; i++) {
                clients[i].fd = client_connect(bridge_port(b));
                clients[i].in = malloc(PAYLOAD + 16);
                assert_non_null(clients[i].in);
        }

        p = calloc(CLIENTS + 1 + 2 * (BRIDGE_CONNECTIONS_MAX + 1), sizeof(struct pollfd));
        assert_non_null(p);
        for (time_t deadline = time(NULL) + 60; done < CLIENTS;) {
                size_t n = 0, nb;

                assert_true(time(NULL) < deadline);
                for (size_t i = 0; i < CLIENTS; i++) {
                        Client *c = &clients[i];
                        char out[8192];

                        /* Write what the socket takes, then read what there is. */
                        while (!c->shut && c->sent < PAYLOAD) {
                                size_t k = PAYLOAD - c->sent < sizeof(out) ? PAYLOAD - c->sent : sizeof(out);
                                ssize_t w;

                                for (size_t j = 0; j < k; j++)
                                        out[j] = payload_byte(i, c->sent + j);
                                w = write(c->fd, out, k);
                                if (w < 0) {
                                        assert_int_equal(errno, EAGAIN);
                                        break;
                                }
                                c->sent += (size_t) w;
                        }
                        if (!c->shut && c->sent == PAYLOAD) {
                                assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
                                c->shut = true;
                        }
                        while (!c->done) {
                                ssize_t k = read(c->fd, c->in + c->received, PAYLOAD + 16 - c->received);

                                if (k < 0) {
                                        assert_int_equal(errno, EAGAIN);
                                        break;
                                }
                                if (k == 0) {
                                        c->done = true;
                                        done++;
                                        break;
                                }
                                c->received += (size_t) k;
                        }
                }
                if (done == CLIENTS)
                        break;
                for (size_t i = 0; i < CLIENTS; i++)
                        p[n++] = (struct pollfd){
                                .fd = clients[i].done ? -1 : clients[i].fd,
                                .events = (short) (POLLIN | (clients[i].shut ? 0 : POLLOUT))
                        };
                assert_true(bridge_poll_max(b) <= 1 + 2 * (size_t) BRIDGE_CONNECTIONS_MAX);
                nb = bridge_poll_fill(b, p + n);
                assert_true(nb <= bridge_poll_max(b));
                assert_true(poll(p, (nfds_t) (n + nb), 5000) > 0);
                bridge_poll_dispatch(b, p + n);
        }

        for (size_t i = 0; i < CLIENTS; i++) {
                Client *c = &clients[i];

                assert_int_equal(c->received, PAYLOAD + 3);
                for (size_t j = 0; j < PAYLOAD; j++)
                        if (c->in[j] != payload_byte(i, j))
                                fail_msg("client %zu: byte %zu differs", i, j);
                assert_memory_equal(c->in + PAYLOAD, "bye", 3);
                close(c->fd);
                free(c->in);
        }

        /* The bridge lets go of connections that ended on both sides. */
        for (int round = 0; bridge_connections(b) > 0 && round < 100; round++) {
                size_t nb = bridge_poll_fill(b, p);

                (void) poll(p, (nfds_t) nb, 100);
                bridge_poll_dispatch(b, p);
        }
        assert_int_equal(bridge_connections(b), 0);
        assert_int_equal(f->warnings, 0);
        free(p);
        bridge_free(b);
}

static void test_bridge_closes_connections_when_the_socket_is_gone(void **state) {
        Fixture *f = *state;
        Bridge *b = NULL;
        struct pollfd p[8];
        char c;
        ssize_t k = 1;
        int fd;

        assert_int_equal(bridge_new("gone", "/nonexistent/ccdocker/egress.sock", &b), 0);
        bridge_set_log(b, on_log, f);
        fd = client_connect(bridge_port(b));
        for (int round = 0; round < 50 && k != 0; round++) {
                size_t nb = bridge_poll_fill(b, p);

                (void) poll(p, (nfds_t) nb, 100);
                bridge_poll_dispatch(b, p);
                k = read(fd, &c, 1);
                if (k < 0 && errno == ECONNRESET)
                        k = 0;
        }
        assert_int_equal(k, 0);
        assert_int_equal(bridge_connections(b), 0);
        assert_int_equal(f->warnings, 1);
        assert_non_null(strstr(
                f->last_warning, "gone bridge: could not connect to /nonexistent/ccdocker/egress.sock"));
        close(fd);
        bridge_free(b);
}

/* A stand-in for the egress proxy on dir/proxy.sock: reads one request head and answers 200 (then
 * "HELLO" and an echo) for the target good.forward.invalid:5432, a 403 for anything else. */
static pid_t fake_proxy(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pid_t pid;

        assert_true(fd >= 0);
        strcpy(sa.sun_path, path);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 8), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid > 0) {
                close(fd);
                return pid;
        }
        signal(SIGCHLD, SIG_IGN);
        for (;;) {
                char head[2048] = "", buf[4096];
                size_t n = 0;
                int c = accept(fd, NULL, NULL);

                if (c < 0)
                        continue;
                if (fork() != 0) {
                        close(c);
                        continue;
                }
                while (!strstr(head, "\r\n\r\n") && n < sizeof(head) - 1) {
                        ssize_t k = read(c, head + n, sizeof(head) - 1 - n);

                        if (k <= 0)
                                _exit(1);
                        n += (size_t) k;
                        head[n] = '\0';
                }
                if (!startswith(head, "CONNECT good.forward.invalid:5432 HTTP/1.1\r\n")) {
                        static const char no[] =
                                "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot yours";

                        (void) !write(c, no, sizeof(no) - 1);
                        _exit(0);
                }
                (void) !write(c, "HTTP/1.1 200 Connection established\r\n\r\nHELLO", 44);
                for (;;) {
                        ssize_t k = read(c, buf, sizeof(buf));

                        if (k <= 0 || write(c, buf, (size_t) k) != k)
                                _exit(0);
                }
        }
}

/* Runs the bridge until fd has want bytes (or is closed); returns what it read. */
static size_t pump_until(Bridge *b, int fd, char *out, size_t want, bool *closed) {
        size_t got = 0;

        *closed = false;
        for (int round = 0; round < 200 && got < want && !*closed; round++) {
                struct pollfd p[16];
                size_t nb = bridge_poll_fill(b, p);
                ssize_t k;

                (void) poll(p, (nfds_t) nb, 50);
                bridge_poll_dispatch(b, p);
                k = read(fd, out + got, want - got);
                if (k > 0)
                        got += (size_t) k;
                else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                        *closed = true;
        }
        return got;
}

static void test_forward_bridge_asks_for_its_target_and_relays(void **state) {
        Fixture *f = *state;
        char path[160], out[64] = "";
        Bridge *good = NULL, *bad = NULL;
        bool closed;
        pid_t proxy;
        int fd;

        snprintf(path, sizeof(path), "%s/proxy.sock", f->dir);
        proxy = fake_proxy(path);
        assert_int_equal(bridge_new_forward("pg", path, "bad target", &good), -EINVAL);
        assert_int_equal(bridge_new_forward("pg", path, "good.forward.invalid:5432", &good), 0);
        bridge_set_log(good, on_log, f);

        /* The answer's head is not passed on; what follows it and the relay are. The client speaks first
         * (as a PostgreSQL client does), before the proxy has answered. */
        fd = client_connect(bridge_port(good));
        assert_int_equal(write(fd, "ping", 4), 4);
        assert_int_equal(pump_until(good, fd, out, 9, &closed), 9);
        assert_false(closed);
        assert_memory_equal(out, "HELLOping", 9);
        assert_int_equal(f->warnings, 0);
        close(fd);

        /* Refused: the client's connection is closed and the proxy's answer is logged. */
        assert_int_equal(bridge_new_forward("pg", path, "other.forward.invalid:5432", &bad), 0);
        bridge_set_log(bad, on_log, f);
        fd = client_connect(bridge_port(bad));
        assert_int_equal(pump_until(bad, fd, out, sizeof(out), &closed), 0);
        assert_true(closed);
        assert_int_equal(f->warnings, 1);
        assert_non_null(
                strstr(f->last_warning,
                       "pg bridge: the egress proxy refused the forward: HTTP/1.1 403 "
                       "Forbidden: not yours"));
        close(fd);

        bridge_free(good);
        bridge_free(bad);
        kill(proxy, SIGKILL);
        waitpid(proxy, NULL, 0);
        unlink(path);
}

static void test_bridge_refuses_a_path_too_long(void **state) {
        char path[200];
        Bridge *b = NULL;

        memset(path, 'x', sizeof(path) - 1);
        path[0] = '/';
        path[sizeof(path) - 1] = '\0';
        assert_int_equal(bridge_new("x", path, &b), -ENAMETOOLONG);
        assert_null(b);
}

static void unset_all(void) {
        static const char *const names[] = {
                "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                "HTTPS_PROXY",        "HTTP_PROXY",        "https_proxy",          "http_proxy",
                "NO_PROXY",           "no_proxy"
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                unsetenv(names[i]);
}

static void test_bridge_setenv(void **state) {
        unset_all();
        assert_int_equal(bridge_setenv(0, 0), 0);
        assert_null(getenv("ANTHROPIC_BASE_URL"));
        assert_null(getenv("ANTHROPIC_API_KEY"));
        assert_null(getenv("HTTPS_PROXY"));

        assert_int_equal(bridge_setenv(4242, 0), 0);
        assert_string_equal(getenv("ANTHROPIC_BASE_URL"), "http://127.0.0.1:4242");
        assert_string_equal(getenv("ANTHROPIC_API_KEY"), BRIDGE_PLACEHOLDER_API_KEY);
        assert_null(getenv("HTTPS_PROXY"));
        assert_null(getenv("NO_PROXY"));

        unset_all();
        setenv("ANTHROPIC_BASE_URL", "http://elsewhere:1", 1);
        setenv("ANTHROPIC_API_KEY", "sk-given", 1);
        assert_int_equal(bridge_setenv(4242, 3128), 0);
        assert_string_equal(getenv("ANTHROPIC_BASE_URL"), "http://127.0.0.1:4242");
        assert_string_equal(getenv("ANTHROPIC_API_KEY"), "sk-given");
        assert_string_equal(getenv("HTTPS_PROXY"), "http://127.0.0.1:3128");
        assert_string_equal(getenv("HTTP_PROXY"), "http://127.0.0.1:3128");
        assert_string_equal(getenv("https_proxy"), "http://127.0.0.1:3128");
        assert_string_equal(getenv("http_proxy"), "http://127.0.0.1:3128");
        assert_string_equal(getenv("NO_PROXY"), "127.0.0.1,localhost");
        assert_string_equal(getenv("no_proxy"), "127.0.0.1,localhost");

        unset_all();
        setenv("CLAUDE_CODE_OAUTH_TOKEN", "oauth", 1);
        assert_int_equal(bridge_setenv(1, 0), 0);
        assert_null(getenv("ANTHROPIC_API_KEY"));
        unset_all();
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(
                        test_bridge_relays_many_connections_both_ways_with_half_close, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_bridge_closes_connections_when_the_socket_is_gone, setup, teardown),
                cmocka_unit_test_setup_teardown(
                        test_forward_bridge_asks_for_its_target_and_relays, setup, teardown),
                cmocka_unit_test(test_bridge_refuses_a_path_too_long),
                cmocka_unit_test(test_bridge_setenv),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libFuzzer target: what a session container writes on its channel socket (docs/channel.md). The input is
 * the byte stream of one connection, read by the real daemon/channel.c (its framing on common/jsonrpc, the
 * classification, hello and the roles, the events checks (the fast path of channel-events.c too), the
 * answers to prompt requests, the ccdocker-mcp methods) over a real unix socket on a real sd-event loop. The
 * channel's hooks (ChannelHooks, its whole interface) are implemented here, as in tests/unit/test-channel.c,
 * and the target links the real core. Once an init has said hello the daemon sends it a prompt (id "p-1"),
 * so that answers to it are reached too. A fresh channel per input keeps each run deterministic. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Channel *channel;

static json_t *hook_hello(void *userdata, const char *role, char **error) {
        return json_pack(
                "{s:i, s:s, s:i}", "protocol", 1, "session_id", (const char *) userdata, "last_seq", 0);
}

static void hook_heartbeat(void *userdata) {
}

static int hook_events(void *userdata, json_t *events, uint64_t *ret_acked, char **error) {
        json_t *last = json_array_get(events, json_array_size(events) - 1);
        json_int_t seq = json_integer_value(json_object_get(last, "seq"));

        /* The session refuses a gap; here an odd seq stands for one, so that path is reached too. */
        if (seq % 7 == 3) {
                *error = strdup("a gap");
                return -EBADMSG;
        }
        *ret_acked = (uint64_t) seq;
        return 0;
}

/* The fast path's events (daemon/channel-events.c): each data it hands on must be JSON jansson takes. */
static int hook_events_raw(
        void *userdata, const ChannelEvent *events, size_t n, uint64_t *ret_acked, char **error) {
        for (size_t i = 0; i < n; i++) {
                json_t *d = json_loadb(
                        events[i].data, events[i].data_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);

                if (!d)
                        abort();
                json_decref(d);
        }
        if (events[n - 1].seq % 7 == 3) {
                *error = strdup("a gap");
                return -EBADMSG;
        }
        *ret_acked = events[n - 1].seq;
        return 0;
}

static void hook_log(void *userdata, const char *level, const char *message) {
}

static void hook_prompt_delivered(void *userdata, const char *message_id, int r) {
}

static void hook_call(void *userdata, const char *method, json_t *params, ChannelCall *call) {
        _cleanup_(json_decrefp) json_t *result = NULL;

        if (json_object_get(params, "refuse")) {
                channel_call_error(call, CHANNEL_ERROR_REFUSED, "refused: %s", method);
                return;
        }
        result = json_pack("{s:s}", "method", method);
        channel_call_reply(call, result);
}

static void hook_init_gone(void *userdata) {
}

static const ChannelHooks hooks = {
        .hello = hook_hello,
        .heartbeat = hook_heartbeat,
        .events = hook_events,
        .events_raw = hook_events_raw,
        .log = hook_log,
        .prompt_delivered = hook_prompt_delivered,
        .call = hook_call,
        .init_gone = hook_init_gone,
};

static char dir[128], sock_path[192];
static sd_event *event;
static char session_id[] = "3f9c0a1b2c4d";

static char tmp[] = "/tmp/fuzz-channel-XXXXXX";

/* libFuzzer ends with exit(): the channel removed its directory with each input, this is what is left. */
static void remove_tmp(void) {
        (void) rmdir(dir);
        (void) rmdir(tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        if (!mkdtemp(tmp))
                abort();
        (void) atexit(remove_tmp);
        snprintf(dir, sizeof dir, "%s/session", tmp);
        snprintf(sock_path, sizeof sock_path, "%s/session.sock", dir);
        if (sd_event_new(&event) < 0)
                abort();
        return 0;
}

/* Reads and drops what the daemon answered; true at EOF (the daemon closed the connection). */
static bool drain(int fd) {
        char buf[65536];

        for (;;) {
                ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        return true;
                if (n < 0)
                        return false;
        }
}

static void run_idle(void) {
        while (sd_event_run(event, 0) > 0)
                ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        bool prompted = false;
        size_t off = 0;

        if (channel_new(event, &hooks, session_id, session_id, dir, getuid(), getgid(), &channel) < 0)
                abort();

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                abort();
        strcpy(sa.sun_path, sock_path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                abort();

        /* Line by line, so that a prompt can go out between them once init said hello. */
        while (off < size && channel) {
                const uint8_t *nl = memchr(data + off, '\n', size - off);
                size_t end = nl ? (size_t) (nl - data) + 1 : size;

                while (off < end) {
                        ssize_t n = send(fd, data + off, end - off, MSG_DONTWAIT | MSG_NOSIGNAL);

                        if (n < 0 && errno != EAGAIN && errno != EINTR)
                                goto done; /* the daemon closed it */
                        if (n > 0)
                                off += (size_t) n;
                        run_idle();
                        if (drain(fd))
                                goto done;
                }
                run_idle();
                if (!prompted && channel_has_init(channel)) {
                        prompted = true;
                        (void) channel_send_prompt(channel, "m-1", "hello");
                        run_idle();
                }
                if (drain(fd))
                        goto done;
        }
        (void) shutdown(fd, SHUT_WR);
        /* The daemon reads the end and closes its side. */
        for (unsigned i = 0; i < 1000 && !drain(fd); i++)
                if (sd_event_run(event, i < 100 ? 0 : 1000) < 0)
                        break;
done:
        channel = channel_free(channel);
        run_idle();
        return 0;
}

/* libFuzzer target: what a WebSocket client sends on GET .../stream once libmicrohttpd upgraded the
 * connection: httpd/stream.c's own handling around wslay (the bytes libmicrohttpd read past the request
 * head, handed over as extra_in and replayed by ws_recv() before the socket; the receive callbacks, the
 * message length limit, the answers to pings and close frames, the close). stream.c is built into this
 * target (its functions are static), with the rest of ccdocker-httpd's core linked: the input's first half
 * arrives as extra_in, the second on the socket, and the loop runs until the stream is idle or closed. The
 * stream has no feed (fanout.c), so no events; the pipe that was its Attach fd stays only to keep the
 * target's shape. The header parser of Sec-WebSocket-Protocol (bearer.TOKEN) gets the input too. */
#include "../../httpd/stream.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sd_event *event;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        if (sd_event_new(&event) < 0)
                abort();
        return 0;
}

static void drain(int fd) {
        char buf[65536];

        while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
                ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Server server = { .event = event };
        Request req = { .server = &server, .id = (char *) "3f9c0a1b2c4d", .websocket = true };
        size_t half = size / 2, off;
        int attach[2], sv[2];
        Stream *st;

        if (size > 128 * 1024)
                return 0;
        {
                char token[128], *value = strndup((const char *) data, size);

                if (!value)
                        abort();
                (void) websocket_protocol_bearer(value, token, sizeof token);
                free(value);
        }
        if (pipe2(attach, O_CLOEXEC | O_NONBLOCK) < 0 ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
                abort();
        /* No feed: the Attach side is fanout.c's now, and this target is about the client's bytes. */
        st = stream_new(&req, NULL);
        if (!st)
                abort();

        /* The second half waits on the socket (as much as it takes; the rest follows below). */
        off = half;
        while (off < size) {
                ssize_t n = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n <= 0)
                        break;
                off += (size_t) n;
        }
        on_upgrade(st, NULL, NULL, (const char *) data, half, sv[0], NULL);

        for (unsigned i = 0; i < 64 && server.streams; i++) {
                drain(sv[1]);
                while (off < size) {
                        ssize_t n = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);

                        if (n <= 0)
                                break;
                        off += (size_t) n;
                }
                if (sd_event_run(event, 0) <= 0 && off >= size)
                        break;
        }
        while (server.streams)
                stream_free(server.streams);
        while (sd_event_run(event, 0) > 0)
                ;
        safe_close(attach[0]);
        safe_close(attach[1]);
        safe_close(sv[0]);
        safe_close(sv[1]);
        return 0;
}

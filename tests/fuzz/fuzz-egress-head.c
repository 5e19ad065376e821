/* libFuzzer target: the request head a session container sends to its egress proxy (daemon/egress-proxy.c
 * egress_parse_head(), as the proxy calls it on every read: the whole buffer so far), and the allowlist
 * match the parsed host then meets. The parser promises never to read past len and to fill its results
 * only on 1 and -EOPNOTSUPP; the buffer is a malloc'd copy of exactly len bytes so ASan sees a read past
 * it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress-proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses data[0, len) from a malloc'd copy of exactly len bytes. */
static void parse(const uint8_t *data, size_t len) {
        static char *const allowed[] = {
                (char *) "api.example.com", (char *) "*.example.org:443", (char *) "[::1]:8443", NULL
        };
        EgressRequest req;
        size_t head_len = 0;
        char *buf;
        int r;

        buf = malloc(len ?: 1);
        if (!buf)
                return;
        memcpy(buf, data, len);
        r = egress_parse_head(buf, len, &req, &head_len);
        if (r == 1) {
                if (head_len == 0 || head_len > len || req.port == 0 || strlen(req.host) == 0 ||
                    strlen(req.host) > EGRESS_HOST_MAX)
                        abort();
                (void) egress_host_allowed(allowed, req.host, req.port);
        } else if (r == -EOPNOTSUPP) {
                if (head_len > len || strlen(req.method) > EGRESS_METHOD_MAX)
                        abort();
        } else if (r != 0 && r != -E2BIG && r != -EBADMSG)
                abort();
        free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 2 * EGRESS_HEAD_MAX)
                return 0;
        /* The proxy parses the whole buffer after every read: the head so far, and then all of it. */
        parse(data, size / 2);
        parse(data, size);

        /* The allowlist entries of a session's config are checked by the same code. */
        if (size < 300) {
                char entry[301];

                memcpy(entry, data, size);
                entry[size] = '\0';
                if (egress_allow_entry_valid(entry)) {
                        char *const list[] = { entry, NULL };

                        (void) egress_host_allowed(list, "api.example.com", 443);
                }
        }
        return 0;
}

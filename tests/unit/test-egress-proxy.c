/* Unit tests for the egress proxy's pure parts (daemon/egress-policy.c): the request head parser (CONNECT
 * targets, other methods, malformed and oversized heads, incomplete input) and the allowlist (exact hosts,
 * ports, wildcards, IPv6 literals), the address classes and the check of resolved addresses (local ranges
 * only when the list names them), plus a fuzz-style test: tens of thousands of random, mutated and truncated
 * heads, each in a buffer of exactly its length so that the ASan build catches any read past it, must
 * give one of the documented results and consistent output. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress-proxy.h"
#include "unit-test.h"
#include "util.h"

static int parse(const char *text, EgressRequest *req, size_t *head_len) {
        return egress_parse_head(text, strlen(text), req, head_len);
}

static void test_parse_connect(void **state) {
        EgressRequest req;
        size_t hl = 0;
        const char *h =
                "CONNECT Api.Example.COM:443 HTTP/1.1\r\nHost: api.example.com:443\r\nUser-Agent: x\r\n\r\n";

        assert_int_equal(parse(h, &req, &hl), 1);
        assert_string_equal(req.method, "CONNECT");
        assert_string_equal(req.host, "api.example.com");
        assert_int_equal(req.port, 443);
        assert_int_equal(hl, strlen(h));
}

static void test_parse_connect_keeps_what_follows_the_head(void **state) {
        EgressRequest req;
        size_t hl = 0;
        const char *h = "CONNECT 127.0.0.1:8080 HTTP/1.0\n\n\x16\x03\x01tls";

        assert_int_equal(parse(h, &req, &hl), 1);
        assert_string_equal(req.host, "127.0.0.1");
        assert_int_equal(req.port, 8080);
        assert_int_equal(hl, strlen("CONNECT 127.0.0.1:8080 HTTP/1.0\n\n"));
}

static void test_parse_connect_ipv6(void **state) {
        EgressRequest req;
        size_t hl;

        assert_int_equal(parse("CONNECT [::1]:443 HTTP/1.1\r\n\r\n", &req, &hl), 1);
        assert_string_equal(req.host, "::1");
        assert_int_equal(req.port, 443);
        assert_int_equal(parse("CONNECT [2001:DB8::1]:1 HTTP/1.1\r\n\r\n", &req, &hl), 1);
        assert_string_equal(req.host, "2001:db8::1");
        assert_int_equal(parse("CONNECT [nothex]:443 HTTP/1.1\r\n\r\n", &req, &hl), -EBADMSG);
        assert_int_equal(parse("CONNECT ::1:443 HTTP/1.1\r\n\r\n", &req, &hl), -EBADMSG);
}

static void test_parse_incomplete_head_needs_more(void **state) {
        EgressRequest req;
        size_t hl;

        assert_int_equal(parse("", &req, &hl), 0);
        assert_int_equal(parse("CONN", &req, &hl), 0);
        assert_int_equal(parse("CONNECT a:1 HTTP/1.1\r\n", &req, &hl), 0);
        assert_int_equal(parse("CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r", &req, &hl), 0);
}

static void test_parse_other_methods_are_not_supported(void **state) {
        EgressRequest req;
        size_t hl;

        assert_int_equal(
                parse("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", &req, &hl),
                -EOPNOTSUPP);
        assert_string_equal(req.method, "GET");
        assert_int_equal(parse("connect a:1 HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
}

static void test_parse_rejects_malformed_heads(void **state) {
        static const char *const bad[] = {
                "\r\n\r\n",
                "\x16\x03\x01\x02\x00",
                "CONNECT a:1\r\n\r\n",
                "CONNECT a:1 HTTP/2\r\n\r\n",
                "CONNECT a:1 HTTP/1.1 \r\n\r\n",
                "CONNECT  a:1 HTTP/1.1\r\n\r\n",
                "CONNECT a HTTP/1.1\r\n\r\n",
                "CONNECT a: HTTP/1.1\r\n\r\n",
                "CONNECT a:0 HTTP/1.1\r\n\r\n",
                "CONNECT a:65536 HTTP/1.1\r\n\r\n",
                "CONNECT a:+80 HTTP/1.1\r\n\r\n",
                "CONNECT a:080080 HTTP/1.1\r\n\r\n",
                "CONNECT :80 HTTP/1.1\r\n\r\n",
                "CONNECT user@a:80 HTTP/1.1\r\n\r\n",
                "CONNECT a/b:80 HTTP/1.1\r\n\r\n",
                "CONNECT -a:80 HTTP/1.1\r\n\r\n",
                "CONNECT http://a:80/ HTTP/1.1\r\n\r\n",
                "CONNECT a:80 HTTP/1.1\r\nno colon\r\n\r\n",
                "CONNECT a:80 HTTP/1.1\r\n: empty name\r\n\r\n",
                "CONNECT a:80 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                "CONNECT a:80 HTTP/1.1\r\nHost: a\rb\r\n\r\n",
                "CONNECT a:80 HTTP/1.1\r\nHost: \x01\r\n\r\n",
                "TOOLONGMETHODNAME a:80 HTTP/1.1\r\n\r\n",
        };
        EgressRequest req;
        size_t hl;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = parse(bad[i], &req, &hl);

                if (r != -EBADMSG)
                        fail_msg("head %zu (%s) gave %d, not -EBADMSG", i, bad[i], r);
        }
        /* A NUL is not a header character either. */
        assert_int_equal(
                egress_parse_head("CONNECT a:80 HTTP/1.1\r\nX: \0\r\n\r\n", 31, &req, &hl), -EBADMSG);
}

static void test_parse_refuses_a_head_over_8k(void **state) {
        size_t n = EGRESS_HEAD_MAX + 100, hl;
        char *buf = malloc(n);
        EgressRequest req;
        int k;

        assert_non_null(buf);
        k = snprintf(buf, n, "CONNECT a:1 HTTP/1.1\r\n");
        for (size_t i = (size_t) k; i < n; i++)
                buf[i] = (i % 50 == 49) ? '\n' : (i % 50 == 0 ? 'X' : (i % 50 == 1 ? ':' : 'v'));
        assert_int_equal(egress_parse_head(buf, n, &req, &hl), -E2BIG);
        assert_int_equal(egress_parse_head(buf, EGRESS_HEAD_MAX, &req, &hl), -E2BIG);
        assert_int_equal(egress_parse_head(buf, EGRESS_HEAD_MAX - 1, &req, &hl), 0);
        free(buf);
}

static void test_allowlist_entries(void **state) {
        assert_true(egress_allow_entry_valid("api.github.com"));
        assert_true(egress_allow_entry_valid("api.github.com:443"));
        assert_true(egress_allow_entry_valid("*.example.org"));
        assert_true(egress_allow_entry_valid("*.example.org:8443"));
        assert_true(egress_allow_entry_valid("127.0.0.1:8080"));
        assert_true(egress_allow_entry_valid("[::1]"));
        assert_true(egress_allow_entry_valid("[::1]:443"));
        assert_false(egress_allow_entry_valid(""));
        assert_false(egress_allow_entry_valid(NULL));
        assert_false(egress_allow_entry_valid("::1"));
        assert_false(egress_allow_entry_valid("a:b:c"));
        assert_false(egress_allow_entry_valid("host:0"));
        assert_false(egress_allow_entry_valid("host:99999"));
        assert_false(egress_allow_entry_valid("https://host"));
        assert_false(egress_allow_entry_valid("*.[::1]"));
        assert_false(egress_allow_entry_valid("[::1]x"));
        assert_false(egress_allow_entry_valid("*"));
}

static void test_allowlist_matches(void **state) {
        char *allowed[] = { "api.github.com", "registry.npmjs.org:443",
                            "*.example.org",  "[::1]:8443",
                            "bad entry",      NULL };

        assert_true(egress_host_allowed(allowed, "api.github.com", 443));
        assert_true(egress_host_allowed(allowed, "api.github.com", 22));
        assert_true(egress_host_allowed(allowed, "API.GitHub.com", 443));
        assert_true(egress_host_allowed(allowed, "registry.npmjs.org", 443));
        assert_false(egress_host_allowed(allowed, "registry.npmjs.org", 80));
        assert_true(egress_host_allowed(allowed, "a.example.org", 443));
        assert_true(egress_host_allowed(allowed, "a.b.example.org", 443));
        assert_false(egress_host_allowed(allowed, "example.org", 443));
        assert_false(egress_host_allowed(allowed, "aexample.org", 443));
        assert_false(egress_host_allowed(allowed, "github.com", 443));
        assert_false(egress_host_allowed(allowed, "api.github.com.evil.net", 443));
        assert_true(egress_host_allowed(allowed, "0:0::1", 8443));
        assert_false(egress_host_allowed(allowed, "::1", 443));
        assert_false(egress_host_allowed(allowed, "bad entry", 443));
        assert_false(egress_host_allowed(NULL, "api.github.com", 443));
        assert_false(egress_host_allowed(allowed, "", 443));
}

/* ---- the address check ---- */

/* The class of a literal address, v4 or v6. */
static EgressAddressClass classify(const char *text) {
        struct in6_addr a6;
        struct in_addr a4;

        if (inet_pton(AF_INET, text, &a4) == 1)
                return egress_address_classify(AF_INET, &a4);
        if (inet_pton(AF_INET6, text, &a6) == 1)
                return egress_address_classify(AF_INET6, &a6);
        fail_msg("not an address: %s", text);
        return EGRESS_ADDRESS_PUBLIC;
}

static void test_address_classes(void **state) {
        static const struct {
                const char *address;
                EgressAddressClass class;
        } cases[] = {
                { "127.0.0.1", EGRESS_ADDRESS_LOOPBACK },
                { "127.0.0.2", EGRESS_ADDRESS_LOOPBACK },
                { "127.255.255.254", EGRESS_ADDRESS_LOOPBACK },
                { "::1", EGRESS_ADDRESS_LOOPBACK },
                { "::ffff:127.0.0.1", EGRESS_ADDRESS_LOOPBACK },
                { "::127.0.0.1", EGRESS_ADDRESS_LOOPBACK },
                { "64:ff9b::7f00:1", EGRESS_ADDRESS_LOOPBACK },
                { "2002:7f00:1::1", EGRESS_ADDRESS_LOOPBACK },
                { "169.254.169.254", EGRESS_ADDRESS_LINK_LOCAL },
                { "169.254.0.0", EGRESS_ADDRESS_LINK_LOCAL },
                { "::ffff:169.254.169.254", EGRESS_ADDRESS_LINK_LOCAL },
                { "fe80::1", EGRESS_ADDRESS_LINK_LOCAL },
                { "febf:ffff::1", EGRESS_ADDRESS_LINK_LOCAL },
                { "10.0.0.1", EGRESS_ADDRESS_PRIVATE },
                { "10.255.255.255", EGRESS_ADDRESS_PRIVATE },
                { "172.16.0.1", EGRESS_ADDRESS_PRIVATE },
                { "172.31.255.255", EGRESS_ADDRESS_PRIVATE },
                { "192.168.1.1", EGRESS_ADDRESS_PRIVATE },
                { "100.64.0.1", EGRESS_ADDRESS_PRIVATE },
                { "100.127.255.255", EGRESS_ADDRESS_PRIVATE },
                { "::ffff:10.1.2.3", EGRESS_ADDRESS_PRIVATE },
                { "fc00::1", EGRESS_ADDRESS_PRIVATE },
                { "fd12:3456::1", EGRESS_ADDRESS_PRIVATE },
                { "fec0::1", EGRESS_ADDRESS_PRIVATE },
                { "0.0.0.0", EGRESS_ADDRESS_UNSPECIFIED },
                { "0.1.2.3", EGRESS_ADDRESS_UNSPECIFIED },
                { "::", EGRESS_ADDRESS_UNSPECIFIED },
                { "::ffff:0.0.0.0", EGRESS_ADDRESS_UNSPECIFIED },
                { "224.0.0.1", EGRESS_ADDRESS_MULTICAST },
                { "239.255.255.250", EGRESS_ADDRESS_MULTICAST },
                { "ff02::1", EGRESS_ADDRESS_MULTICAST },
                { "240.0.0.1", EGRESS_ADDRESS_RESERVED },
                { "255.255.255.255", EGRESS_ADDRESS_RESERVED },
                /* Their neighbours are public. */
                { "1.1.1.1", EGRESS_ADDRESS_PUBLIC },
                { "126.255.255.255", EGRESS_ADDRESS_PUBLIC },
                { "128.0.0.1", EGRESS_ADDRESS_PUBLIC },
                { "169.253.255.255", EGRESS_ADDRESS_PUBLIC },
                { "169.255.0.1", EGRESS_ADDRESS_PUBLIC },
                { "9.255.255.255", EGRESS_ADDRESS_PUBLIC },
                { "11.0.0.1", EGRESS_ADDRESS_PUBLIC },
                { "172.15.255.255", EGRESS_ADDRESS_PUBLIC },
                { "172.32.0.1", EGRESS_ADDRESS_PUBLIC },
                { "192.167.1.1", EGRESS_ADDRESS_PUBLIC },
                { "192.169.1.1", EGRESS_ADDRESS_PUBLIC },
                { "100.63.255.255", EGRESS_ADDRESS_PUBLIC },
                { "100.128.0.1", EGRESS_ADDRESS_PUBLIC },
                { "223.255.255.255", EGRESS_ADDRESS_PUBLIC },
                { "93.184.216.34", EGRESS_ADDRESS_PUBLIC },
                { "::ffff:93.184.216.34", EGRESS_ADDRESS_PUBLIC },
                { "2606:4700::1111", EGRESS_ADDRESS_PUBLIC },
                { "2002:5db8:d822::1", EGRESS_ADDRESS_PUBLIC },
                { "fbff::1", EGRESS_ADDRESS_PUBLIC },
                { "fe00::1", EGRESS_ADDRESS_PUBLIC },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                if (classify(cases[i].address) != cases[i].class)
                        fail_msg(
                                "%s is %s, not %s",
                                cases[i].address,
                                egress_address_class_to_string(classify(cases[i].address)),
                                egress_address_class_to_string(cases[i].class));
        assert_int_equal(egress_address_classify(AF_UNIX, "x"), EGRESS_ADDRESS_RESERVED);
        assert_int_equal(egress_address_classify(AF_INET, NULL), EGRESS_ADDRESS_RESERVED);
        assert_string_equal(egress_address_class_to_string(EGRESS_ADDRESS_LINK_LOCAL), "link-local");
        assert_null(egress_address_class_to_string((EgressAddressClass) 99));
}

/* Whether host:port may go to the literal address text, with port. */
static bool permitted(char *const *allowed, const char *host, uint16_t port, const char *text) {
        struct sockaddr_storage ss = {};
        struct sockaddr_in *v4 = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &ss;

        if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                v4->sin_port = htons(port);
        } else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                v6->sin6_port = htons(port);
        } else
                fail_msg("not an address: %s", text);
        return egress_address_permitted(allowed, host, port, (const struct sockaddr *) &ss);
}

static void test_address_check_refuses_local_ranges_not_named(void **state) {
        char *allowed[] = { "api.example.com", "*.example.org", "intranet.example.net:8080",
                            "*.0.0.1",         "*.localhost",   NULL };

        /* Public addresses of an allowed name are fine. */
        assert_true(permitted(allowed, "api.example.com", 443, "93.184.216.34"));
        assert_true(permitted(allowed, "api.example.com", 443, "2606:4700::1111"));
        assert_true(permitted(allowed, "a.example.org", 443, "93.184.216.34"));
        /* An allowed name (or a wildcard's) that resolves to a local address is not. */
        assert_false(permitted(allowed, "api.example.com", 443, "127.0.0.1"));
        assert_false(permitted(allowed, "api.example.com", 443, "::1"));
        assert_false(permitted(allowed, "api.example.com", 443, "::ffff:127.0.0.1"));
        assert_false(permitted(allowed, "api.example.com", 80, "169.254.169.254"));
        assert_false(permitted(allowed, "api.example.com", 80, "::ffff:169.254.169.254"));
        assert_false(permitted(allowed, "api.example.com", 443, "fe80::1"));
        assert_false(permitted(allowed, "a.example.org", 443, "10.0.0.1"));
        assert_false(permitted(allowed, "a.example.org", 443, "172.20.1.1"));
        assert_false(permitted(allowed, "a.example.org", 443, "192.168.0.1"));
        assert_false(permitted(allowed, "a.example.org", 443, "fd00::1"));
        assert_false(permitted(allowed, "intranet.example.net", 8080, "10.1.2.3"));
        assert_false(permitted(allowed, "api.example.com", 443, "0.0.0.0"));
        assert_false(permitted(allowed, "api.example.com", 443, "::"));
        assert_false(permitted(allowed, "api.example.com", 443, "224.0.0.1"));
        assert_false(permitted(allowed, "api.example.com", 443, "255.255.255.255"));
        /* A wildcard that matches an address literal as a name names no address. */
        assert_false(permitted(allowed, "127.0.0.1", 443, "127.0.0.1"));
        /* "localhost" is a name like any other when no entry names it. */
        assert_false(permitted(allowed, "localhost", 443, "127.0.0.1"));
        assert_false(permitted(NULL, "api.example.com", 443, "127.0.0.1"));
        assert_false(egress_address_permitted(allowed, "api.example.com", 443, NULL));
}

static void test_address_check_allows_what_the_list_names(void **state) {
        char *allowed[] = { "127.0.0.1:8080",
                            "[::1]",
                            "10.1.2.3:5432",
                            "intranet.example.net",
                            "localhost:9000",
                            "*.localhost",
                            "[fe80::1]:80",
                            "db.localhost:5432",
                            NULL };

        /* An address literal entry names that address, at its port; v4 and v4-mapped v6 are one. */
        assert_true(permitted(allowed, "127.0.0.1", 8080, "127.0.0.1"));
        assert_true(permitted(allowed, "::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1"));
        assert_false(permitted(allowed, "127.0.0.1", 8081, "127.0.0.1"));
        assert_false(permitted(allowed, "127.0.0.2", 8080, "127.0.0.2"));
        assert_true(permitted(allowed, "::1", 22, "::1"));
        assert_true(permitted(allowed, "fe80::1", 80, "fe80::1"));
        assert_false(permitted(allowed, "fe80::2", 80, "fe80::2"));
        /* A name allowed, resolving to an address the list names as a literal. */
        assert_true(permitted(allowed, "intranet.example.net", 5432, "10.1.2.3"));
        assert_false(permitted(allowed, "intranet.example.net", 5433, "10.1.2.3"));
        assert_false(permitted(allowed, "intranet.example.net", 5432, "10.1.2.4"));
        assert_true(permitted(allowed, "anything.example.net", 8080, "127.0.0.1"));
        /* "localhost" (and a name under it) by name names the loopback, at its port, nothing else. */
        assert_true(permitted(allowed, "localhost", 9000, "127.0.0.1"));
        assert_true(permitted(allowed, "LOCALHOST", 9000, "::1"));
        assert_false(permitted(allowed, "localhost", 9001, "127.0.0.1"));
        assert_false(permitted(allowed, "localhost", 9000, "10.0.0.1"));
        assert_false(permitted(allowed, "localhost", 9000, "169.254.169.254"));
        assert_true(permitted(allowed, "db.localhost", 5432, "127.0.0.5"));
        /* ... but not through a wildcard. */
        assert_false(permitted(allowed, "other.localhost", 5432, "127.0.0.1"));
}

/* ---- fuzz ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static const char *const SEEDS[] = {
        "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Connection: keep-alive\r\n\r\n",
        "CONNECT [::1]:8443 HTTP/1.0\n\n",
        "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\ntrailing bytes",
};

static const char PIECES[] = "CONNECT HTTP/1.1:[]. \r\n\t\0\x7f\xff"
                             "abcxyz0123456789-_@/";

/* Runs the parser on data[0, n) copied into a buffer of exactly n bytes, and checks its promises. */
static void check_parse(const char *data, size_t n) {
        char *copy = malloc(n ? n : 1);
        EgressRequest req;
        size_t hl = SIZE_MAX;
        int r;

        assert_non_null(copy);
        if (n > 0)
                memcpy(copy, data, n);
        memset(&req, 0xaa, sizeof(req));
        r = egress_parse_head(copy, n, &req, &hl);
        switch (r) {
        case 1:
                assert_true(hl > 0 && hl <= n && hl <= EGRESS_HEAD_MAX);
                assert_true(copy[hl - 1] == '\n');
                assert_non_null(memchr(req.host, '\0', sizeof(req.host)));
                assert_true(strlen(req.host) > 0);
                assert_true(req.port > 0);
                assert_string_equal(req.method, "CONNECT");
                /* Whatever it parsed, the allowlist check is safe on it. */
                (void) egress_host_allowed(
                        (char *[]){ "*.example.com", "[::1]:8443", NULL }, req.host, req.port);
                break;
        case -EOPNOTSUPP:
                assert_true(hl > 0 && hl <= n);
                assert_non_null(memchr(req.method, '\0', sizeof(req.method)));
                break;
        case 0:
                assert_true(n < EGRESS_HEAD_MAX);
                break;
        case -E2BIG:
                assert_true(n >= EGRESS_HEAD_MAX);
                break;
        case -EBADMSG:
                break;
        default:
                fail_msg("egress_parse_head() returned %d", r);
        }
        free(copy);
}

static void test_forward_ids(void **state) {
        char id[EGRESS_FORWARD_ID_MAX + 1];

        assert_true(egress_forward_id_valid("postgres"));
        assert_true(egress_forward_id_valid("pg-2"));
        assert_false(egress_forward_id_valid(""));
        assert_false(egress_forward_id_valid("-pg"));
        assert_false(egress_forward_id_valid("Pg"));
        assert_false(egress_forward_id_valid("p.g"));
        assert_false(egress_forward_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 33 */

        assert_true(egress_forward_id_of("postgres.forward.invalid", id));
        assert_string_equal(id, "postgres");
        assert_false(egress_forward_id_of("forward.invalid", id));
        assert_false(egress_forward_id_of(".forward.invalid", id));
        assert_false(egress_forward_id_of("a.b.forward.invalid", id));
        assert_false(egress_forward_id_of("postgres.forward.invalid.example.com", id));
        assert_false(egress_forward_id_of("postgres", id));
}

static void test_url_authority(void **state) {
        static const struct {
                const char *url;
                const char *host;
                uint16_t port;
        } good[] = {
                { "postgresql://u:p@db.example.com:6543/app?sslmode=disable", "db.example.com", 6543 },
                { "postgres://u@127.0.0.1/app", "127.0.0.1", 5432 },
                { "postgres://DB.Example.COM", "db.example.com", 5432 },
                { "postgres://u:p%40ss@[::1]:5433/x", "::1", 5433 },
                { "postgres://u:p@ss@host:1/x", "host", 1 }, /* the last '@' ends the userinfo */
                { "https://api.githubcopilot.com/mcp/", "api.githubcopilot.com", 5432 },
        };
        static const char *const bad[] = {
                "postgres:///app?host=/run/postgresql", /* a unix socket */
                "postgres://h1:5432,h2:5432/app",       /* several hosts */
                "postgres://host:0/x",
                "postgres://host:65536/x",
                "postgres://host:x/x",
                "postgres://[::1/x",
                "postgres://[::1]x/x",
                "postgres://ho st/x",
                "db.example.com:5432",
                "://host",
                "",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *host = NULL;
                uint16_t port = 0;

                assert_int_equal(egress_url_authority(good[i].url, 5432, &host, &port), 0);
                assert_string_equal(host, good[i].host);
                assert_int_equal(port, good[i].port);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *host = NULL;
                uint16_t port = 0;

                assert_int_equal(egress_url_authority(bad[i], 5432, &host, &port), -EINVAL);
                assert_null(host);
        }
}

static void test_fuzz_parser_never_misbehaves(void **state) {
        char buf[EGRESS_HEAD_MAX + 512];
        unsigned iterations = 0;

        /* Every prefix of every seed: truncated heads. */
        for (size_t s = 0; s < ELEMENTSOF(SEEDS); s++)
                for (size_t n = 0; n <= strlen(SEEDS[s]); n++, iterations++)
                        check_parse(SEEDS[s], n);

        /* Mutations of the seeds: bytes replaced, inserted, removed, then truncated at random. */
        for (int i = 0; i < 30000; i++, iterations++) {
                const char *seed = SEEDS[rnd() % ELEMENTSOF(SEEDS)];
                size_t n = strlen(seed), k = 1 + rnd() % 4;

                memcpy(buf, seed, n);
                for (size_t j = 0; j < k && n > 0; j++) {
                        size_t at = rnd() % n;
                        char c = (rnd() & 1) ? PIECES[rnd() % (sizeof(PIECES) - 1)] : (char) rnd();

                        switch (rnd() % 3) {
                        case 0:
                                buf[at] = c;
                                break;
                        case 1:
                                memmove(buf + at + 1, buf + at, n - at);
                                buf[at] = c;
                                n++;
                                break;
                        case 2:
                                memmove(buf + at, buf + at + 1, n - at - 1);
                                n--;
                                break;
                        }
                }
                if (rnd() % 4 == 0)
                        n = n ? rnd() % (n + 1) : 0;
                check_parse(buf, n);
        }

        /* Random text from the pieces and random bytes, of every length up to past the limit. */
        for (int i = 0; i < 20000; i++, iterations++) {
                size_t n = (i % 10 == 0) ? EGRESS_HEAD_MAX - 8 + rnd() % 64 : rnd() % 300;

                for (size_t j = 0; j < n; j++)
                        buf[j] = (rnd() % 3) ? PIECES[rnd() % (sizeof(PIECES) - 1)] : (char) rnd();
                check_parse(buf, n);
        }

        /* Allowlist entries from random text. */
        for (int i = 0; i < 20000; i++, iterations++) {
                char entry[64];
                size_t n = rnd() % (sizeof(entry) - 1);

                for (size_t j = 0; j < n; j++) {
                        entry[j] = PIECES[rnd() % (sizeof(PIECES) - 1)];
                        if (entry[j] == '\0')
                                entry[j] = '*';
                }
                entry[n] = '\0';
                (void) egress_allow_entry_valid(entry);
                (void) egress_host_allowed((char *[]){ entry, NULL }, "a.example.com", 443);
        }
        assert_true(iterations > 70000);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_connect),
                cmocka_unit_test(test_parse_connect_keeps_what_follows_the_head),
                cmocka_unit_test(test_parse_connect_ipv6),
                cmocka_unit_test(test_parse_incomplete_head_needs_more),
                cmocka_unit_test(test_parse_other_methods_are_not_supported),
                cmocka_unit_test(test_parse_rejects_malformed_heads),
                cmocka_unit_test(test_parse_refuses_a_head_over_8k),
                cmocka_unit_test(test_allowlist_entries),
                cmocka_unit_test(test_allowlist_matches),
                cmocka_unit_test(test_address_classes),
                cmocka_unit_test(test_address_check_refuses_local_ranges_not_named),
                cmocka_unit_test(test_address_check_allows_what_the_list_names),
                cmocka_unit_test(test_forward_ids),
                cmocka_unit_test(test_url_authority),
                cmocka_unit_test(test_fuzz_parser_never_misbehaves),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

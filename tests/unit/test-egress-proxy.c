/* Unit tests for daemon/egress-proxy.c's pure parts: the request head parser (CONNECT targets, other
 * methods, malformed and oversized heads, incomplete input) and the allowlist (exact hosts, ports,
 * wildcards, IPv6 literals), plus a fuzz-style test: tens of thousands of random, mutated and truncated
 * heads, each in a buffer of exactly its length so that the ASan build catches any read past it, must
 * give one of the documented results and consistent output. */
#define _GNU_SOURCE
#include <errno.h>
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
                cmocka_unit_test(test_fuzz_parser_never_misbehaves),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

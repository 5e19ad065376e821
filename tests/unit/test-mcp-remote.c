/* Unit tests for daemon/mcp-remote.c's pure parts (which request reaches which upstream, which headers
 * cross) and session-remote.c's ${NAME} handling of an http override's header (the secrets it names,
 * their values put in, a missing one refused). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mcp-remote.h"
#include "session-remote.h"
#include "unit-test.h"
#include "util.h"

static void test_target_names_the_server(void **state) {
        char name[MCP_REMOTE_NAME_MAX + 1];

        assert_true(mcp_remote_target_name("/github", name));
        assert_string_equal(name, "github");
        assert_true(mcp_remote_target_name("/custom-server/x?y=1", name));
        assert_string_equal(name, "custom-server");
        assert_false(mcp_remote_target_name("/", name));
        assert_false(mcp_remote_target_name("github", name));
        assert_false(mcp_remote_target_name("/a.b", name));
        assert_false(mcp_remote_target_name("/%67ithub", name));
}

static void test_upstream_url(void **state) {
        static const struct {
                const char *target, *url, *want;
        } good[] = {
                { "/github", "https://api.githubcopilot.com/mcp/", "https://api.githubcopilot.com/mcp/" },
                { "/github/", "https://api.githubcopilot.com/mcp/", "https://api.githubcopilot.com/mcp/" },
                { "/github?x=1", "http://127.0.0.1:9/mcp", "http://127.0.0.1:9/mcp?x=1" },
                { "/github/sub/path", "http://127.0.0.1:9/mcp", "http://127.0.0.1:9/mcp/sub/path" },
        };
        static const char *const bad[] = {
                "/other",      "/githubx",  "/github/../admin", "/github/%2e%2E/admin",
                "/github/./x", "/github#f", "/github/a b",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *u = mcp_remote_upstream_url(good[i].target, "github", good[i].url);

                assert_non_null(u);
                assert_string_equal(u, good[i].want);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_null(mcp_remote_upstream_url(bad[i], "github", "http://127.0.0.1:9/mcp"));
}

static void test_headers_that_cross(void **state) {
        assert_false(mcp_remote_request_header_forwarded("Authorization"));
        assert_false(mcp_remote_request_header_forwarded("cookie"));
        assert_false(mcp_remote_request_header_forwarded("Host"));
        assert_false(mcp_remote_request_header_forwarded("Proxy-Authorization"));
        assert_false(mcp_remote_request_header_forwarded("Content-Length"));
        assert_true(mcp_remote_request_header_forwarded("Mcp-Session-Id"));
        assert_true(mcp_remote_request_header_forwarded("MCP-Protocol-Version"));
        assert_true(mcp_remote_request_header_forwarded("Accept"));
        assert_true(mcp_remote_response_header_forwarded("Mcp-Session-Id"));
        assert_true(mcp_remote_response_header_forwarded("Content-Type"));
        assert_false(mcp_remote_response_header_forwarded("Set-Cookie"));
        assert_false(mcp_remote_response_header_forwarded("Transfer-Encoding"));
}

static const char *lookup(const char *name, void *userdata) {
        return streq(name, "TOKEN") ? "s3cret" : NULL;
}

static void test_header_secrets(void **state) {
        _cleanup_(strv_freep) char **refs =
                session_remote_header_secrets("Bearer ${TOKEN} ${OTHER} $NOPE ${1X}");
        _cleanup_free_ char *v = NULL, *missing = NULL, *w = NULL;

        assert_non_null(refs);
        assert_int_equal(strv_length(refs), 2);
        assert_string_equal(refs[0], "TOKEN");
        assert_string_equal(refs[1], "OTHER");
        assert_int_equal(session_remote_expand_header("Bearer ${TOKEN}", lookup, NULL, &v, NULL), 0);
        assert_string_equal(v, "Bearer s3cret");
        assert_int_equal(
                session_remote_expand_header("${TOKEN}:${OTHER}", lookup, NULL, &w, &missing), -ENOKEY);
        assert_null(w);
        assert_string_equal(missing, "OTHER");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_target_names_the_server),
                cmocka_unit_test(test_upstream_url),
                cmocka_unit_test(test_headers_that_cross),
                cmocka_unit_test(test_header_secrets),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

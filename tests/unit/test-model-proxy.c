/* Unit tests for the pure parts of the model proxy: the usage parser (daemon/model-usage.c) fed a real
 * SSE stream and a real JSON body split at every byte and in random pieces, garbage, documents too
 * big or too deep; the header filters and the anthropic-beta merge, request targets and retry-after
 * (daemon/model-request.c); the upstream URL check (daemon/model-proxy.c); the token bucket's
 * arithmetic and the fair queue between sessions (daemon/model-admission.c); the endpoint policy, the
 * reservation and budget arithmetic, and what an abandoned stream is charged; prices
 * (daemon/model-prices.c); and the credential reader and the model credential's order and redaction of its
 * sources (daemon/credentials.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "credentials.h"
#include "model-admission.h"
#include "model-prices.h"
#include "model-proxy.h"
#include "model-usage.h"
#include "unit-test.h"
#include "util.h"

static const char sse[] =
        "event: message_start\r\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"claude-x-1\",\"content\":[],\"usage\":{\"input_tokens\":120,\"cache_creation_input_tokens\":7,"
        "\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\r\n"
        "\r\n"
        ": a comment\n"
        "event: ping\n"
        "data: {\"type\":\"ping\"}\n"
        "\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"\\\"usage\\\": {\\\"output_tokens\\\": 999}\"}}\n"
        "\n"
        "event: message_delta\r"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":10}}\r"
        "\r"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{},\n"
        "data: \"usage\":{\"output_tokens\":42}}\n"
        "\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n"
        "\n";

static const char json_body[] =
        "{\"id\":\"msg_2\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"a \\\"usage\\\": {} "
        "\\\\\"}],\"model\" : \"claude-y\",\"nested\":{\"usage\":{\"input_tokens\":5}},\"stop_reason\":\"end_turn\","
        "\"usage\": {\"input_tokens\": 11, \"cache_creation_input_tokens\": 0, \"cache_read_input_tokens\": 2, "
        "\"output_tokens\": 9}}";

static void check_sse(const ModelUsageParser *u) {
        assert_true(u->have_usage);
        assert_int_equal(u->usage.input_tokens, 120);
        assert_int_equal(u->usage.output_tokens, 42);
        assert_int_equal(u->usage.cache_creation_input_tokens, 7);
        assert_int_equal(u->usage.cache_read_input_tokens, 30);
        assert_string_equal(u->model, "claude-x-1");
}

static void check_json(const ModelUsageParser *u) {
        assert_true(u->have_usage);
        assert_int_equal(u->usage.input_tokens, 11);
        assert_int_equal(u->usage.output_tokens, 9);
        assert_int_equal(u->usage.cache_creation_input_tokens, 0);
        assert_int_equal(u->usage.cache_read_input_tokens, 2);
        assert_string_equal(u->model, "claude-y");
}

static void feed_split(
        ModelUsageFormat format,
        const char *text,
        size_t len,
        size_t split,
        unsigned seed,
        void (*check)(const ModelUsageParser *)) {
        ModelUsageParser u;

        model_usage_parser_init(&u, format);
        if (seed == 0) {
                model_usage_parser_feed(&u, text, split);
                model_usage_parser_feed(&u, text + split, len - split);
        } else {
                srand(seed);
                for (size_t i = 0; i < len;) {
                        size_t n = (size_t) rand() % 17 + 1;

                        if (n > len - i)
                                n = len - i;
                        model_usage_parser_feed(&u, text + i, n);
                        i += n;
                }
        }
        assert_int_equal(model_usage_parser_finish(&u), 0);
        check(&u);
        model_usage_parser_done(&u);
}

static void test_sse_usage_in_any_split(void **state) {
        size_t len = strlen(sse);

        for (size_t split = 0; split <= len; split++)
                feed_split(MODEL_USAGE_SSE, sse, len, split, 0, check_sse);
        for (unsigned seed = 1; seed < 200; seed++)
                feed_split(MODEL_USAGE_SSE, sse, len, 0, seed, check_sse);
}

static void test_json_usage_in_any_split(void **state) {
        size_t len = strlen(json_body);

        for (size_t split = 0; split <= len; split++)
                feed_split(MODEL_USAGE_JSON, json_body, len, split, 0, check_json);
        for (unsigned seed = 1; seed < 200; seed++)
                feed_split(MODEL_USAGE_JSON, json_body, len, 0, seed, check_json);
}

static void test_usage_parser_bounds_long_lines_and_ignores_junk(void **state) {
        ModelUsageParser u;
        size_t big = 3U * 1024 * 1024;
        char *junk = malloc(big);

        assert_non_null(junk);
        memset(junk, 'x', big);
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, "data: ", 6);
        model_usage_parser_feed(&u, junk, big); /* one 3 MB line: not kept */
        model_usage_parser_feed(&u, "\n\n", 2);
        model_usage_parser_feed(&u, sse, strlen(sse));
        check_sse(&u);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, "{\"usage\": {\"input_tokens\": ", 27);
        model_usage_parser_feed(&u, junk, big); /* a value too long to capture */
        model_usage_parser_feed(&u, "}}", 2);
        assert_int_equal(model_usage_parser_finish(&u), -EBADMSG);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, "[1,{\"usage\":{\"input_tokens\":3}}]", 32); /* not a top-level key */
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, "{\"usage\": -1, \"model\": 5}", 25);
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_false(u.have_usage);
        assert_string_equal(u.model, "");
        model_usage_parser_done(&u);
        free(junk);

        assert_int_equal(model_usage_format_for("text/event-stream; charset=utf-8"), MODEL_USAGE_SSE);
        assert_int_equal(model_usage_format_for("application/json"), MODEL_USAGE_JSON);
        assert_int_equal(model_usage_format_for("text/html"), MODEL_USAGE_NONE);
        assert_int_equal(model_usage_format_for(NULL), MODEL_USAGE_NONE);
}

static void test_header_filters(void **state) {
        static const char *const dropped[] = {
                "Host",
                "Content-Length",
                "Connection",
                "Transfer-Encoding",
                "x-api-key",
                "X-Api-Key",
                "Authorization",
                "Proxy-Authorization",
                "proxy-connection",
                "Keep-Alive",
                "TE",
                "Upgrade",
                "Expect",
                "Accept-Encoding",
                "anthropic-beta",
        };
        static const char *const kept[] = {
                "anthropic-version",        "Content-Type", "User-Agent",
                "x-claude-code-session-id", "accept",       "x-stainless-retry-count",
        };

        for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
                assert_false(model_request_header_forwarded(dropped[i]));
        for (size_t i = 0; i < ELEMENTSOF(kept); i++)
                assert_true(model_request_header_forwarded(kept[i]));

        assert_false(model_response_header_forwarded("Transfer-Encoding"));
        assert_false(model_response_header_forwarded("content-length"));
        assert_false(model_response_header_forwarded("Connection"));
        assert_true(model_response_header_forwarded("retry-after"));
        assert_true(model_response_header_forwarded("request-id"));
        assert_true(model_response_header_forwarded("Content-Type"));
}

static void test_beta_merge(void **state) {
        static const struct {
                const char *client, *add, *want;
        } cases[] = {
                { NULL, MODEL_OAUTH_BETA, MODEL_OAUTH_BETA },
                { "", MODEL_OAUTH_BETA, MODEL_OAUTH_BETA },
                { "a,b", MODEL_OAUTH_BETA, "a,b," MODEL_OAUTH_BETA },
                { "a, " MODEL_OAUTH_BETA " ,b", MODEL_OAUTH_BETA, "a, " MODEL_OAUTH_BETA " ,b" },
                { "OAUTH-2025-04-20", MODEL_OAUTH_BETA, "OAUTH-2025-04-20" },
                { "oauth-2025-04-200", MODEL_OAUTH_BETA, "oauth-2025-04-200," MODEL_OAUTH_BETA },
                { "a", NULL, "a" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = model_beta_merge(cases[i].client, cases[i].add);

                assert_non_null(s);
                assert_string_equal(s, cases[i].want);
        }
}

static void test_targets(void **state) {
        static const char *const good[] = {
                "/v1/messages",
                "/v1/messages?beta=true",
                "/v1/messages/count_tokens?beta=true",
                "/v1/models",
                "/v1/a..b/c",
                "/v1/x?q=/../y",
        };
        static const char *const bad[] = {
                "/v2/messages", "/v1",       "v1/messages", "/v1/../admin", "/v1/./x", "/v1/%2e%2E/x",
                "/v1/.%2e",     "/v1/a%2fb", "/v1/a%5Cb",   "/v1/a b",      "/v1/x#f", "/v1/a\\b",
                "/v1/\x01",     "",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_true(model_target_valid(good[i]));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_false(model_target_valid(bad[i]));
        assert_false(model_target_valid(NULL));
}

static void test_retry_after(void **state) {
        uint64_t v = 0;

        assert_int_equal(model_parse_retry_after("5", &v), 0);
        assert_int_equal(v, 5000000);
        assert_int_equal(model_parse_retry_after(" 0.25 ", &v), 0);
        assert_int_equal(v, 250000);
        assert_int_equal(model_parse_retry_after("1.0000001", &v), 0);
        assert_int_equal(v, 1000000);
        assert_int_equal(model_parse_retry_after("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(model_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", &v), -EINVAL);
        assert_int_equal(model_parse_retry_after("-1", &v), -EINVAL);
        assert_int_equal(model_parse_retry_after("", &v), -EINVAL);
        assert_int_equal(model_parse_retry_after("3s", &v), -EINVAL);
        assert_int_equal(model_parse_retry_after("99999999999999", &v), -ERANGE);
}

static void test_token_bucket(void **state) {
        ModelTokenBucket b;
        uint64_t t = 1000000;

        /* 60 per minute (one a second), bursts of 3. */
        model_token_bucket_init(&b, 60, 3, t);
        for (unsigned i = 0; i < 3; i++)
                assert_true(model_token_bucket_take(&b, t));
        assert_false(model_token_bucket_take(&b, t));
        assert_int_equal(model_token_bucket_wait(&b, t), 1000000);
        assert_int_equal(model_token_bucket_wait(&b, t + 400000), 600000);
        assert_false(model_token_bucket_take(&b, t + 999999));
        assert_true(model_token_bucket_take(&b, t + 1000000));
        assert_false(model_token_bucket_take(&b, t + 1000000));
        /* A long pause refills to the burst, no further, without overflowing. */
        t += UINT64_C(1) << 62;
        for (unsigned i = 0; i < 3; i++)
                assert_true(model_token_bucket_take(&b, t));
        assert_false(model_token_bucket_take(&b, t));
        /* Time going backwards changes nothing. */
        assert_false(model_token_bucket_take(&b, t - 5000000));

        /* 50 per minute: 1.2 s per request; 10 requests after the burst of 9 take 12 s. */
        model_token_bucket_init(&b, 50, 9, 0);
        for (unsigned i = 0; i < 9; i++)
                assert_true(model_token_bucket_take(&b, 0));
        assert_int_equal(model_token_bucket_wait(&b, 0), 1200000);
        t = 0;
        for (unsigned i = 0; i < 10; i++) {
                t += model_token_bucket_wait(&b, t);
                assert_true(model_token_bucket_take(&b, t));
        }
        assert_int_equal(t, 12000000);
}

static void test_prices(void **state) {
        ModelPrice *p = NULL;
        size_t n = 0;
        ModelUsage u = { .input_tokens = 1000000,
                         .output_tokens = 2000000,
                         .cache_creation_input_tokens = 1000000,
                         .cache_read_input_tokens = 1000000 };

        assert_int_equal(model_prices_parse("claude-opus=15/75  claude-opus-4-5=5/25 *=3/15", &p, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(p[2].model_prefix, "");
        /* input 5 + output 2*25 + cache write 1.25*5 + cache read 0.1*5 */
        assert_float_equal(
                model_price_cost(p, n, "claude-opus-4-5-20251101", &u), 5 + 50 + 6.25 + 0.5, 1e-9);
        assert_float_equal(model_price_cost(p, n, "claude-opus-4-1", &u), 15 + 150 + 18.75 + 1.5, 1e-9);
        assert_float_equal(model_price_cost(p, n, "claude-sonnet", &u), 3 + 30 + 3.75 + 0.3, 1e-9);
        assert_float_equal(model_price_cost(p, n, "", &u), 3 + 30 + 3.75 + 0.3, 1e-9);
        model_prices_free(p, n);

        assert_int_equal(model_prices_parse("claude-haiku=1/5", &p, &n), 0);
        assert_float_equal(model_price_cost(p, n, "other", &u), 0, 0);
        model_prices_free(p, n);
        assert_int_equal(model_prices_parse("", &p, &n), 0);
        assert_int_equal(n, 0);
        model_prices_free(p, n);

        static const char *const bad[] = { "x",       "x=1",     "x=1/",   "x=/1",    "x=a/b",
                                           "x=1/2/3", "x y=1/2", "x=-1/2", "x=1e3/2", "a=b=1/2" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(model_prices_parse(bad[i], &p, &n), -EINVAL);
}

static void test_credential_load_order_and_env_cleanup(void **state) {
        char dir[] = "/tmp/test-model-proxy-XXXXXX";
        _cleanup_free_ char *path = NULL;
        ModelCredentialKind kind;
        char *value = NULL;
        FILE *f;

        assert_non_null(mkdtemp(dir));

        /* Environment only: the API key first; both variables are removed. */
        setenv("ANTHROPIC_API_KEY", "  sk-env-key\n", 1);
        setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-env-oauth", 1);
        assert_int_equal(model_credential_load(dir, &kind, &value), 0);
        assert_int_equal(kind, MODEL_CREDENTIAL_API_KEY);
        assert_string_equal(value, "sk-env-key");
        assert_null(getenv("ANTHROPIC_API_KEY"));
        assert_null(getenv("CLAUDE_CODE_OAUTH_TOKEN"));
        value = mfree(value);

        setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-env-oauth", 1);
        assert_int_equal(model_credential_load(NULL, &kind, &value), 0);
        assert_int_equal(kind, MODEL_CREDENTIAL_OAUTH);
        assert_string_equal(value, "sk-env-oauth");
        value = mfree(value);

        /* Nothing at all. */
        assert_int_equal(model_credential_load(dir, &kind, &value), 0);
        assert_int_equal(kind, MODEL_CREDENTIAL_NONE);
        assert_null(value);

        /* A credential file wins over the environment. */
        assert_true(asprintf(&path, "%s/claude-oauth-token", dir) > 0);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs("sk-file-oauth\n", f);
        fclose(f);
        setenv("ANTHROPIC_API_KEY", "sk-env-key", 1);
        assert_int_equal(model_credential_load(dir, &kind, &value), 0);
        assert_int_equal(kind, MODEL_CREDENTIAL_OAUTH);
        assert_string_equal(value, "sk-file-oauth");
        assert_null(getenv("ANTHROPIC_API_KEY"));
        value = mfree(value);

        /* A value that would break the header is refused. */
        setenv("ANTHROPIC_API_KEY", "sk-bad\r\nX-Injected: 1", 1);
        assert_int_equal(model_credential_load(NULL, &kind, &value), -EINVAL);
        assert_null(getenv("ANTHROPIC_API_KEY"));

        (void) unlink(path);
        (void) rmdir(dir);
}

/* A message_start and a message_delta, as the API streams them. */
static const char sse_short[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-z\",\"usage\":{\"input_tokens\":3,"
        "\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n"
        "\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n"
        "\n";

static void check_sse_short(const ModelUsageParser *u) {
        assert_true(u->have_usage);
        assert_int_equal(u->usage.input_tokens, 3);
        assert_int_equal(u->usage.output_tokens, 6);
        assert_int_equal(u->usage.cache_creation_input_tokens, 4);
        assert_int_equal(u->usage.cache_read_input_tokens, 5);
        assert_string_equal(u->model, "claude-z");
}

static void test_sse_message_start_and_delta_cut_at_every_two_bytes(void **state) {
        size_t len = strlen(sse_short);

        /* Three pieces, cut at every pair of places: each event's data may be cut anywhere. */
        for (size_t a = 0; a <= len; a++)
                for (size_t b = a; b <= len; b++) {
                        ModelUsageParser u;

                        model_usage_parser_init(&u, MODEL_USAGE_SSE);
                        model_usage_parser_feed(&u, sse_short, a);
                        model_usage_parser_feed(&u, sse_short + a, b - a);
                        model_usage_parser_feed(&u, sse_short + b, len - b);
                        assert_int_equal(model_usage_parser_finish(&u), 0);
                        check_sse_short(&u);
                        model_usage_parser_done(&u);
                }

        /* A stream cut short: message_delta's event is not ended, so only message_start counts. */
        {
                ModelUsageParser u;

                model_usage_parser_init(&u, MODEL_USAGE_SSE);
                model_usage_parser_feed(&u, sse_short, len - 1);
                assert_int_equal(model_usage_parser_finish(&u), 0);
                assert_int_equal(u.usage.output_tokens, 1);
                model_usage_parser_done(&u);
        }
}

static void test_json_body_is_read_at_its_end(void **state) {
        ModelUsageParser u;

        /* Nothing is known before the end; finishing twice reads once. */
        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, json_body, strlen(json_body));
        assert_false(u.have_usage);
        assert_int_equal(model_usage_parser_finish(&u), 0);
        check_json(&u);
        model_usage_parser_feed(&u, "garbage", 7);
        assert_int_equal(model_usage_parser_finish(&u), 0);
        check_json(&u);
        model_usage_parser_done(&u);

        /* A request body read whole (the model it asks for). */
        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        assert_int_equal(model_usage_read_json(&u, "{\"max_tokens\":5,\"model\":\"claude-q\"}", 35), 0);
        assert_string_equal(u.model, "claude-q");
        assert_false(u.have_usage);
        model_usage_parser_done(&u);

        /* A body cut short has no usage. */
        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, json_body, strlen(json_body) - 1);
        assert_int_equal(model_usage_parser_finish(&u), -EBADMSG);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);
}

static void test_usage_parser_garbage(void **state) {
        static const char *const garbage[] = {
                "",
                "{",
                "}}}}]]]",
                "\"usage\": {\"input_tokens\": 5}",
                "{\"usage\": {\"input_tokens\": 5}",
                "{\"usage\": {\"input_tokens\": 5}}}",
                "{\"usage\": {\"input_tokens\": \"5\", \"output_tokens\": 1.5, \"cache_read_input_tokens\": -2}}",
                "{\"usage\": [5]}",
                "{\"usage\": {\"input_tokens\": 5}} trailing",
                "\xff\xfe\x00{\"usage\": {\"input_tokens\": 5}}",
                "{\"usage\": {\"input_tokens\": 5}, \"model\": \"\\u0000\"} x",
        };
        char noise[4096];
        ModelUsageParser u;

        for (size_t i = 0; i < ELEMENTSOF(garbage); i++) {
                size_t len = strlen(garbage[i]);

                model_usage_parser_init(&u, MODEL_USAGE_JSON);
                model_usage_parser_feed(&u, garbage[i], len);
                (void) model_usage_parser_finish(&u);
                assert_false(u.have_usage);
                model_usage_parser_done(&u);

                /* The same as an event's data. */
                model_usage_parser_init(&u, MODEL_USAGE_SSE);
                model_usage_parser_feed(&u, "data: ", 6);
                model_usage_parser_feed(&u, garbage[i], len);
                model_usage_parser_feed(&u, "\n\n", 2);
                assert_int_equal(model_usage_parser_finish(&u), 0);
                assert_false(u.have_usage);
                model_usage_parser_done(&u);
        }

        /* CR LF ends one line, not two: the data belongs to the ping event, which is not read. */
        {
                static const char ping[] =
                        "event: ping\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":99}}\r\n\r\n";

                model_usage_parser_init(&u, MODEL_USAGE_SSE);
                model_usage_parser_feed(&u, ping, strlen(ping));
                assert_false(u.have_usage);
                model_usage_parser_done(&u);
        }

        /* Random bytes, then the real stream: the noise is dropped, the stream read. */
        srand(7);
        for (size_t i = 0; i < sizeof(noise); i++)
                noise[i] = (char) (rand() % 256);
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, noise, sizeof(noise));
        model_usage_parser_feed(&u, "\n\n", 2);
        model_usage_parser_feed(&u, sse_short, strlen(sse_short));
        check_sse_short(&u);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, noise, sizeof(noise));
        assert_int_equal(model_usage_parser_finish(&u), -EBADMSG);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);
}

/* {"usage":{"input_tokens":7},"x":[[...]]}, with the lists nested so that the deepest is depth deep. */
static char *deep_document(unsigned depth) {
        static const char head[] = "{\"usage\":{\"input_tokens\":7},\"x\":";
        size_t len = strlen(head) + 2 * (depth - 1) + 1;
        char *s = malloc(len + 1), *p;

        assert_non_null(s);
        p = stpcpy(s, head);
        for (unsigned i = 1; i < depth; i++)
                *p++ = '[';
        for (unsigned i = 1; i < depth; i++)
                *p++ = ']';
        *p++ = '}';
        *p = '\0';
        return s;
}

static void test_usage_parser_refuses_too_deep_documents(void **state) {
        _cleanup_free_ char *ok = deep_document(MODEL_USAGE_DEPTH_MAX);
        _cleanup_free_ char *deep = deep_document(MODEL_USAGE_DEPTH_MAX + 1);
        _cleanup_free_ char *very_deep = deep_document(100000);
        _cleanup_free_ char *event = NULL;
        ModelUsageParser u;

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, ok, strlen(ok));
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_int_equal(u.usage.input_tokens, 7);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        model_usage_parser_feed(&u, deep, strlen(deep));
        assert_int_equal(model_usage_parser_finish(&u), -ELOOP);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);

        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        assert_int_equal(model_usage_read_json(&u, very_deep, strlen(very_deep)), -ELOOP);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);

        /* Brackets inside strings, after an escaped quote too, are no nesting. */
        {
                char strings[512], *p = strings;

                p = stpcpy(p, "{\"a\":\"\\\"");
                for (unsigned i = 0; i < MODEL_USAGE_DEPTH_MAX + 10; i++)
                        *p++ = '[';
                (void) stpcpy(p, "\",\"usage\":{\"input_tokens\":1}}");
                model_usage_parser_init(&u, MODEL_USAGE_JSON);
                assert_int_equal(model_usage_read_json(&u, strings, strlen(strings)), 0);
        }
        assert_int_equal(u.usage.input_tokens, 1);
        model_usage_parser_done(&u);

        /* A message_delta event nested too deep. */
        assert_true(
                asprintf(
                        &event, "event: message_delta\ndata: {\"type\":\"message_delta\",%s\n\n", deep + 1) >
                0);
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, event, strlen(event));
        assert_false(u.have_usage);
        model_usage_parser_done(&u);
}

static void test_usage_parser_bounds_json_bodies(void **state) {
        static const char head[] = "{\"usage\":{\"input_tokens\":8},\"pad\":\"";
        size_t len = MODEL_USAGE_JSON_MAX;
        char *body = malloc(len + 2);
        ModelUsageParser u;

        /* Exactly the bound: read. */
        assert_non_null(body);
        memset(body, 'x', len);
        memcpy(body, head, strlen(head));
        memcpy(body + len - 2, "\"}", 2);
        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        for (size_t i = 0; i < len; i += 65536)
                model_usage_parser_feed(&u, body + i, len - i < 65536 ? len - i : 65536);
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_int_equal(u.usage.input_tokens, 8);
        model_usage_parser_done(&u);

        /* One byte more: not kept, not read. */
        memcpy(body + len - 2, "x\"}", 3);
        model_usage_parser_init(&u, MODEL_USAGE_JSON);
        for (size_t i = 0; i < len + 1; i += 65536)
                model_usage_parser_feed(&u, body + i, len + 1 - i < 65536 ? len + 1 - i : 65536);
        assert_null(u.body);
        assert_int_equal(model_usage_parser_finish(&u), -E2BIG);
        assert_false(u.have_usage);
        model_usage_parser_done(&u);
        free(body);
}

static void test_upstream_url_check(void **state) {
        static const char *const bad[] = {
                "ftp://example.com", "https://", "example.com", "file:///etc/passwd", "https//x", "",
        };
        static const char *const good[] = {
                "http://127.0.0.1:9",
                "https://api.anthropic.com",
                "https://example.com/prefix/",
                "HTTPS://api.anthropic.com",
        };
        sd_event *event = NULL;

        assert_int_equal(sd_event_new(&event), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ModelProxy *p = NULL;

                assert_int_equal(
                        model_proxy_new(event, &(ModelProxyConfig){ .upstream_base_url = bad[i] }, &p),
                        -EINVAL);
                assert_null(p);
        }
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                ModelProxy *p = NULL;

                assert_int_equal(
                        model_proxy_new(event, &(ModelProxyConfig){ .upstream_base_url = good[i] }, &p), 0);
                model_proxy_free(p);
        }
        sd_event_unref(event);
}

static void write_file(const char *dir, const char *name, const char *data, size_t len) {
        _cleanup_free_ char *path = NULL;
        FILE *f;

        assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
        f = fopen(path, "we");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        fclose(f);
}

static void test_credential_reader(void **state) {
        char dir[] = "/tmp/test-credentials-XXXXXX";
        _cleanup_free_ char *link = NULL, *sub = NULL, *target = NULL;
        _cleanup_(strv_freep) char **names = NULL;
        ModelCredentialKind kind;
        char *value = NULL;
        size_t len = 0;

        assert_non_null(mkdtemp(dir));
        write_file(dir, "b", "two\n", 4);
        write_file(dir, "a", "one", 3);
        write_file(dir, ".hidden", "x", 1);
        write_file(dir, "nul", "a\0b", 3);
        write_file(dir, "big", "12345678", 8);
        assert_true(asprintf(&target, "%s/a", dir) > 0);
        assert_true(asprintf(&link, "%s/anthropic-api-key", dir) > 0);
        assert_int_equal(symlink(target, link), 0);
        assert_true(asprintf(&sub, "%s/directory", dir) > 0);
        assert_int_equal(mkdir(sub, 0700), 0);

        assert_int_equal(credential_read(dir, "b", 64, &value, &len), 0);
        assert_int_equal(len, 4);
        assert_string_equal(value, "two\n");
        value = mfree(value);
        assert_int_equal(credential_read(dir, "big", 8, &value, &len), 0);
        value = mfree(value);
        assert_int_equal(credential_read(dir, "big", 7, &value, &len), -EFBIG);
        assert_int_equal(credential_read(dir, "nul", 64, &value, &len), -EBADMSG);
        assert_int_equal(credential_read(dir, "anthropic-api-key", 64, &value, &len), -ELOOP);
        assert_int_equal(credential_read(dir, "directory", 64, &value, &len), -EBADFD);
        assert_int_equal(credential_read(dir, "missing", 64, &value, &len), -ENOENT);
        assert_int_equal(credential_read(dir, "../etc", 64, &value, &len), -EINVAL);
        assert_int_equal(credential_read(dir, "..", 64, &value, &len), -EINVAL);
        assert_null(value);

        assert_int_equal(credential_list(dir, &names), 0);
        assert_non_null(names[0]);
        assert_string_equal(names[0], "a");
        assert_string_equal(names[1], "anthropic-api-key");
        assert_string_equal(names[2], "b");
        assert_string_equal(names[3], "big");
        assert_string_equal(names[4], "directory");
        assert_string_equal(names[5], "nul");
        assert_null(names[6]);
        assert_int_equal(credential_list("/nonexistent-credentials", &names), -ENOENT);

        assert_true(credential_is_model("anthropic-api-key"));
        assert_true(credential_is_model("claude-oauth-token"));
        assert_false(credential_is_model("ANTHROPIC_API_KEY"));
        assert_false(credential_is_model("a"));

        /* The model credential is not read through a symlink. */
        assert_int_equal(model_credential_load(dir, &kind, &value), -ELOOP);
        assert_null(value);

        (void) unlink(link);
        (void) rmdir(sub);
        (void) unlink(target);
        for (const char *const *n = (const char *const[]){ "b", ".hidden", "nul", "big", NULL }; *n; n++) {
                _cleanup_free_ char *path = NULL;

                assert_true(asprintf(&path, "%s/%s", dir, *n) > 0);
                (void) unlink(path);
        }
        (void) rmdir(dir);
}

static void test_endpoint_policy(void **state) {
        /* Only what the proxy accounts for is forwarded. */
        assert_int_equal(model_endpoint_check("POST", "/v1/messages"), 0);
        assert_int_equal(model_endpoint_check("POST", "/v1/messages/count_tokens"), 0);
        /* Batches (never counted) and files (the shared key's files): refused, 403. */
        for (const char *const *path = (const char *const[]){ "/v1/messages/batches",
                                                              "/v1/messages/batches/msgbatch_1/results",
                                                              "/v1/files",
                                                              "/v1/files/file_1/content",
                                                              "/v1/models",
                                                              "/v1/messages/",
                                                              "/v1/Messages",
                                                              "/v1/%6Dessages",
                                                              "/v1/complete",
                                                              "/v1/organizations/me",
                                                              "",
                                                              NULL };
             *path;
             path++) {
                assert_int_equal(model_endpoint_check("POST", *path), -EACCES);
                assert_int_equal(model_endpoint_check("GET", *path), -EACCES);
                assert_int_equal(model_endpoint_check("DELETE", *path), -EACCES);
        }
        assert_int_equal(model_endpoint_check("POST", NULL), -EACCES);
        /* The right path with another method: 405. */
        for (const char *const *m =
                     (const char *const[]){
                             "GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "post", NULL };
             *m;
             m++) {
                assert_int_equal(model_endpoint_check(*m, "/v1/messages"), -EOPNOTSUPP);
                assert_int_equal(model_endpoint_check(*m, "/v1/messages/count_tokens"), -EOPNOTSUPP);
        }
}

static void test_budget_reservation_arithmetic(void **state) {
        ModelPrice prices[] = {
                { .model_prefix = (char *) "", .input_per_mtok = 3, .output_per_mtok = 15 }
        };
        const char *body = "{\"model\":\"claude-x\",\"max_tokens\":1000,\"messages\":[]}";
        ModelReservation r;

        /* A call reserves its body's bytes (a bound on all its input, cache included) and its
         * max_tokens, priced as cache writes and output. */
        model_call_reservation("/v1/messages", body, strlen(body), prices, 1, &r);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.tokens, strlen(body) + 1000);
        assert_true(r.cost_usd > (strlen(body) * 3 * 1.25 + 1000 * 15) / 1e6 - 1e-12);
        assert_true(r.cost_usd < (strlen(body) * 3 * 1.25 + 1000 * 15) / 1e6 + 1e-12);
        /* Without a readable max_tokens, the default bound. */
        model_call_reservation("/v1/messages", "not json", 8, prices, 1, &r);
        assert_int_equal(r.tokens, 8 + MODEL_RESERVE_OUTPUT_DEFAULT);
        model_call_reservation("/v1/messages", NULL, 0, prices, 1, &r);
        assert_int_equal(r.tokens, MODEL_RESERVE_OUTPUT_DEFAULT);
        /* count_tokens costs nothing and reserves nothing. */
        model_call_reservation("/v1/messages/count_tokens", body, strlen(body), prices, 1, &r);
        assert_int_equal(r.tokens, 0);
        assert_true(r.cost_usd == 0);

        /* No budget: everything passes. */
        assert_true(model_budget_admits(0, 1000000, 1000000, 1000000));
        /* Used up: nothing passes, whatever is reserved. */
        assert_false(model_budget_admits(100, 100, 0, 0));
        assert_false(model_budget_admits(100, 150, 0, 1));
        /* Under budget with nothing held: one call goes, however big (it may overrun by itself only). */
        assert_true(model_budget_admits(100, 99, 0, 1000));
        /* Others held: the call must fit beside them. */
        assert_true(model_budget_admits(100, 10, 40, 50));
        assert_false(model_budget_admits(100, 10, 40, 51));
        assert_false(model_budget_admits(100, 10, 95, 1)); /* held beyond what is left */
        /* N concurrent calls against a budget: they never reserve more than it, beyond the first. */
        {
                uint64_t budget = 3000, reserve = 1100, held = 0;
                unsigned admitted = 0;

                for (unsigned i = 0; i < 10; i++)
                        if (model_budget_admits(budget, 0, held, reserve)) {
                                held += reserve;
                                admitted++;
                        }
                assert_int_equal(admitted, 2);
                assert_true(held <= budget);
        }
        assert_true(model_budget_admits_usd(0, 5, 5, 5));
        assert_false(model_budget_admits_usd(1.0, 1.0, 0, 0));
        assert_true(model_budget_admits_usd(1.0, 0.5, 0, 3.0));
        assert_true(model_budget_admits_usd(1.0, 0.5, 0.2, 0.3));
        assert_false(model_budget_admits_usd(1.0, 0.5, 0.2, 0.31));

        /* Cache tokens count in budget_tokens, one for one. */
        assert_int_equal(
                model_usage_tokens(&(ModelUsage){ .input_tokens = 1,
                                                  .output_tokens = 20,
                                                  .cache_creation_input_tokens = 300,
                                                  .cache_read_input_tokens = 4000 }),
                4321);
}

static void test_abandoned_stream_is_charged_its_deltas(void **state) {
        static const char start[] =
                "event: message_start\n"
                "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":50,"
                "\"output_tokens\":1}}}\n\n";
        ModelUsageParser u;
        char delta[512];
        int n;

        /* Cut after three deltas of 90 bytes of text each: no message_delta, so the deltas count. */
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, start, strlen(start));
        n = snprintf(
                delta,
                sizeof(delta),
                "event: content_block_delta\n"
                "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                "\"text\":\"%090d\"}}\n\n",
                0);
        for (int i = 0; i < 3; i++)
                model_usage_parser_feed(&u, delta, (size_t) n);
        assert_int_equal(u.delta_events, 3);
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_int_equal(u.usage.input_tokens, 50);
        assert_true(u.usage.output_tokens >= 3 * 90 / 3);
        assert_true(u.usage.output_tokens <= 3 * 160 / 3);
        model_usage_parser_done(&u);

        /* Cut before any delta: message_start's own figure. */
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, start, strlen(start));
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_int_equal(u.usage.output_tokens, 1);
        model_usage_parser_done(&u);

        /* A whole stream: message_delta's figure, not the estimate. */
        model_usage_parser_init(&u, MODEL_USAGE_SSE);
        model_usage_parser_feed(&u, start, strlen(start));
        model_usage_parser_feed(&u, delta, (size_t) n);
        model_usage_parser_feed(
                &u,
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n",
                strlen("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}"
                       "\n\n"));
        assert_int_equal(model_usage_parser_finish(&u), 0);
        assert_int_equal(u.usage.output_tokens, 2);
        model_usage_parser_done(&u);
}

/* The fair queue: entries tagged with their flow, started in the order the admission gives them. */
typedef struct FairEntry {
        ModelAdmissionEntry e;
        char flow;
        int started;
} FairEntry;

typedef struct FairLog {
        char order[64];
        size_t n;
} FairLog;

static void on_fair_start(ModelAdmissionEntry *e, void *userdata) {
        FairEntry *f = (FairEntry *) e;
        FairLog *log = userdata;

        f->started = 1;
        log->order[log->n++] = f->flow;
}

static void test_fair_admission_between_sessions(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        ModelAdmission a;
        FairEntry es[16] = {};
        FairLog log = {};
        char key[2] = "A";

        assert_int_equal(sd_event_new(&event), 0);
        /* Four slots, two per session; a bucket big enough not to matter. */
        assert_int_equal(model_admission_init(&a, event, 4, 0, 6000, 64, on_fair_start, &log), 0);
        assert_int_equal(a.max_in_flight_per_flow, 2);

        /* A floods ten calls, then B and C queue one each. */
        for (int i = 0; i < 10; i++) {
                es[i].flow = 'A';
                assert_int_equal(model_admission_enqueue(&a, &es[i].e, "A", false), 0);
        }
        es[10].flow = 'B';
        es[11].flow = 'C';
        key[0] = 'B';
        assert_int_equal(model_admission_enqueue(&a, &es[10].e, key, false), 0);
        key[0] = 'C';
        assert_int_equal(model_admission_enqueue(&a, &es[11].e, key, false), 0);
        assert_int_equal(a.n_queued, 12);
        model_admission_pump(&a);
        /* A gets its two, B and C theirs at once: A's flood does not hold them back. */
        assert_int_equal(log.n, 4);
        assert_memory_equal(log.order, "ABCA", 4);
        assert_true(es[10].started && es[11].started);
        assert_int_equal(a.in_flight, 4);

        /* A's calls end one by one: only A waits, but it stays at two at once. */
        model_admission_end(&a, &es[0].e);
        model_admission_pump(&a);
        assert_int_equal(log.n, 5);
        assert_int_equal(a.in_flight, 4);
        model_admission_end(&a, &es[10].e); /* B's ends: A is at its cap, so the slot stays free */
        model_admission_pump(&a);
        assert_int_equal(log.n, 5);
        assert_int_equal(a.in_flight, 3);

        /* B queues again behind A's eight waiting: it goes as soon as a slot is free. */
        es[12].flow = 'B';
        assert_int_equal(model_admission_enqueue(&a, &es[12].e, "B", false), 0);
        model_admission_pump(&a);
        assert_int_equal(log.n, 6);
        assert_int_equal(log.order[5], 'B');

        /* A retried call goes first within its flow. */
        es[13].flow = 'a';
        assert_int_equal(model_admission_enqueue(&a, &es[13].e, "A", true), 0);
        model_admission_end(&a, &es[1].e);
        model_admission_pump(&a);
        assert_int_equal(log.order[log.n - 1], 'a');

        /* Dequeued entries and ends are counted once; everything lets go at the end. */
        model_admission_dequeue(&a, &es[9].e);
        model_admission_dequeue(&a, &es[9].e);
        model_admission_end(&a, &es[1].e);
        assert_int_equal(a.n_queued, 6);
        model_admission_done(&a);

        /* One slot in all: per-session cap 1, and still round-robin. */
        memset(es, 0, sizeof(es));
        log = (FairLog){};
        assert_int_equal(model_admission_init(&a, event, 1, 0, 6000, 64, on_fair_start, &log), 0);
        assert_int_equal(a.max_in_flight_per_flow, 1);
        for (int i = 0; i < 3; i++) {
                es[i].flow = 'A';
                assert_int_equal(model_admission_enqueue(&a, &es[i].e, "A", false), 0);
        }
        es[3].flow = 'B';
        assert_int_equal(model_admission_enqueue(&a, &es[3].e, "B", false), 0);
        for (int i = 0; i < 4; i++) {
                model_admission_pump(&a);
                for (int j = 0; j < 4; j++)
                        if (es[j].started == 1) {
                                es[j].started = 2;
                                model_admission_end(&a, &es[j].e);
                        }
        }
        assert_int_equal(log.n, 4);
        assert_memory_equal(log.order, "ABAA", 4);
        model_admission_done(&a);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sse_usage_in_any_split),
                cmocka_unit_test(test_json_usage_in_any_split),
                cmocka_unit_test(test_usage_parser_bounds_long_lines_and_ignores_junk),
                cmocka_unit_test(test_sse_message_start_and_delta_cut_at_every_two_bytes),
                cmocka_unit_test(test_json_body_is_read_at_its_end),
                cmocka_unit_test(test_usage_parser_garbage),
                cmocka_unit_test(test_usage_parser_refuses_too_deep_documents),
                cmocka_unit_test(test_usage_parser_bounds_json_bodies),
                cmocka_unit_test(test_upstream_url_check),
                cmocka_unit_test(test_credential_reader),
                cmocka_unit_test(test_header_filters),
                cmocka_unit_test(test_beta_merge),
                cmocka_unit_test(test_targets),
                cmocka_unit_test(test_retry_after),
                cmocka_unit_test(test_token_bucket),
                cmocka_unit_test(test_endpoint_policy),
                cmocka_unit_test(test_budget_reservation_arithmetic),
                cmocka_unit_test(test_abandoned_stream_is_charged_its_deltas),
                cmocka_unit_test(test_fair_admission_between_sessions),
                cmocka_unit_test(test_prices),
                cmocka_unit_test(test_credential_load_order_and_env_cleanup),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

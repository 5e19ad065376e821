/* Unit tests for daemon/discord.c's pure parts: mentions made inert, snowflakes parsed as 64-bit
 * numbers, and the Discord keys of the configuration and the bot token's loading. The client on the
 * wire is tested against the fake Discord in tests/integration/test_discord.py. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "credentials.h"
#include "discord.h"
#include "unit-test.h"
#include "util.h"

#define Z "\xe2\x80\x8b"

static void test_neutralise_mentions_leaves_no_mention(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "hello", "hello" },
                { "@everyone", "@" Z "everyone" },
                { "hi @here!", "hi @" Z "here!" },
                { "<@123456789012345678>", "<@" Z "123456789012345678>" },
                { "<@!1> <@&2>", "<@" Z "!1> <@" Z "&2>" },
                { "<#1000>", "<#" Z "1000>" },
                { "a@b.c <#", "a@" Z "b.c <#" Z },
                { "", "" },
                { "@", "@" Z },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = discord_neutralise_mentions(cases[i].in);

                assert_non_null(s);
                assert_string_equal(s, cases[i].out);
        }
        assert_null(discord_neutralise_mentions(NULL));
}

static void test_snowflake_parse_is_numeric_and_bounded(void **state) {
        uint64_t v = 0;

        assert_true(discord_snowflake_parse("1456074443980931072", &v));
        assert_true(v == UINT64_C(1456074443980931072));
        assert_true(discord_snowflake_parse("99999999999999999", &v));
        /* Shorter as a string, smaller as a number, though larger by strcmp(). */
        assert_true(v < UINT64_C(1456074443980931072));
        assert_true(strcmp("99999999999999999", "1456074443980931072") > 0);
        assert_true(discord_snowflake_parse("18446744073709551615", &v));
        assert_true(v == UINT64_MAX);
        assert_false(discord_snowflake_parse("18446744073709551616", &v));
        assert_false(discord_snowflake_parse("123456789012345678901", &v));
        assert_false(discord_snowflake_parse("", &v));
        assert_false(discord_snowflake_parse(NULL, &v));
        assert_false(discord_snowflake_parse("12a", &v));
        assert_false(discord_snowflake_parse("-1", &v));
        assert_false(discord_snowflake_parse(" 1", &v));
}

static void test_config_discord_keys(void **state) {
        DaemonConfig c;

        assert_int_equal(config_init(&c, DAEMON_USER), 0);
        assert_null(c.discord_channel_id);
        assert_string_equal(c.discord_api_url, DISCORD_API_URL_DEFAULT);
        assert_int_equal(c.discord_max_retries, 3);
        assert_int_equal(c.discord_poll_interval_sec, 5);
        assert_int_equal(config_set(&c, "DiscordChannelID", "1000000000000000100"), 0);
        assert_string_equal(c.discord_channel_id, "1000000000000000100");
        assert_int_equal(config_set(&c, "DiscordChannelID", "#general"), -EINVAL);
        assert_string_equal(c.discord_channel_id, "1000000000000000100");
        assert_int_equal(config_set(&c, "DiscordChannelID", ""), 0);
        assert_null(c.discord_channel_id);
        assert_int_equal(config_set(&c, "DiscordAPIURL", "http://127.0.0.1:1/api/v10"), 0);
        assert_int_equal(config_set(&c, "DiscordAPIURL", "discord.com"), -EINVAL);
        assert_int_equal(config_set(&c, "DiscordMaxRetries", "0"), 0);
        assert_int_equal(c.discord_max_retries, 0);
        assert_int_equal(config_set(&c, "DiscordMaxRetries", "101"), -EINVAL);
        assert_int_equal(config_set(&c, "DiscordPollIntervalSec", "0"), -EINVAL);
        config_done(&c);
}

static void test_token_from_the_environment_is_wiped(void **state) {
        char *t = NULL;

        assert_int_equal(setenv("DISCORD_BOT_TOKEN", "  abc.def-ghi\n", 1), 0);
        assert_int_equal(discord_token_load(NULL, DISCORD_TOKEN_MAX, &t), 0);
        assert_string_equal(t, "abc.def-ghi");
        assert_null(getenv("DISCORD_BOT_TOKEN"));
        free(t);
        t = NULL;
        assert_int_equal(discord_token_load(NULL, DISCORD_TOKEN_MAX, &t), 0);
        assert_null(t);
        assert_int_equal(setenv("DISCORD_BOT_TOKEN", "has space", 1), 0);
        assert_int_equal(discord_token_load(NULL, DISCORD_TOKEN_MAX, &t), -EINVAL);
        assert_null(getenv("DISCORD_BOT_TOKEN"));
        assert_true(credential_is_model("discord-bot-token"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_neutralise_mentions_leaves_no_mention),
                cmocka_unit_test(test_snowflake_parse_is_numeric_and_bounded),
                cmocka_unit_test(test_config_discord_keys),
                cmocka_unit_test(test_token_from_the_environment_is_wiped),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

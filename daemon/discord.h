/* discord: the daemon's Discord REST v10 client, a HumanSink (human-sink.h) without a gateway. A notice
 * is a message in the configured channel; a question is a message there plus a thread of its own; a
 * watch polls that thread with the after= cursor for the first reply by a person. Every request runs on
 * libcurl's multi interface on the daemon's sd-event loop (curl-glue.c), goes through one bounded queue
 * that obeys Discord's rate limits (per-route buckets from the X-RateLimit-* headers, retry_after and the
 * global limit of 429 bodies), retries 5xx and network failures with backoff, and never retries a
 * 401/403. The bot token is only ever in the Authorization header: never logged, never in an error. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "human-sink.h"

#define DISCORD_API_URL_DEFAULT "https://discord.com/api/v10"
#define DISCORD_MAX_RETRIES_DEFAULT 3U
#define DISCORD_POLL_INTERVAL_SEC_DEFAULT 5U
/* Operations (posts and watches) outstanding at once; one more is refused with -ENOBUFS. */
#define DISCORD_MAX_OPS 1024U
/* A bot token longer than this is not one. */
#define DISCORD_TOKEN_MAX 512U

typedef struct DiscordConfig {
        const char *api_url;    /* e.g. DISCORD_API_URL_DEFAULT, without a trailing slash */
        const char *channel_id; /* a snowflake */
        const char *token;      /* copied; the copy is wiped when the client is freed */
        unsigned max_retries;   /* 5xx or network failures of one post before -EAGAIN */
        uint64_t poll_usec;     /* between two reads of a watched thread */
} DiscordConfig;

typedef struct Discord Discord;

/* -EINVAL (logged, without the token) for a bad URL, channel id or token. */
int discord_new(sd_event *event, const DiscordConfig *config, Discord **ret);
/* Cancels every operation without calling it back. */
Discord *discord_free(Discord *d);

static inline void discord_freep(Discord **d) {
        if (*d)
                (void) discord_free(*d);
}

/* The sink that posts through d. */
HumanSink discord_human_sink(Discord *d);

/* Text with every mention made inert: a zero-width space after each '@' (so no @everyone, @here, <@id>,
 * <@!id> or <@&id> is parsed) and after each "<#" (channel mentions). NULL when out of memory. */
char *discord_neutralise_mentions(const char *text);

/* Whether s is a snowflake (1-20 decimal digits that fit 64 bits); its value in *ret. */
bool discord_snowflake_parse(const char *s, uint64_t *ret);

/* discord-probe: the daemon's Discord client (daemon/discord.c) on its own sd-event loop, driven line by
 * line, for tests/integration/test_discord.py against tests/fixtures/fake-discord.py. The bot token comes
 * from $DISCORD_BOT_TOKEN (removed from the environment at once). Each stdin line is one JSON command
 * with a "tag" naming it:
 *   {"tag":"a","op":"notice"|"question"|"in_thread","interaction_id","session_id","kind","text",
 *    "urgent","attempt","max_attempts","thread_id"}
 *   {"tag":"b","op":"watch","thread_id","after"}
 *   {"tag":"c","op":"cancel","target":"a"}
 * Each outcome is one JSON line on stdout: {"event":"ready"}, then {"event":"started","tag","r"},
 * {"event":"posted","tag","r","error","message_id","thread_id"}, {"event":"reply","tag","r","error",
 * "reply_id","text","answerer"}, {"event":"cancelled","tag"}; {"event":"bug","what"} if a callback ran
 * inside the call that started it. At the end of stdin, or on SIGTERM, it frees everything and exits 0
 * (so a sanitizer build reports leaks). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "cleanup.h"
#include "discord.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define MAX_OPS 4096

typedef struct Slot {
        char *tag;
        HumanSinkOp *op;
        struct Probe *probe;
} Slot;

typedef struct Probe {
        sd_event *event;
        Discord *discord;
        HumanSink sink;
        Slot slots[MAX_OPS];
        size_t n_slots;
        bool in_call;
        char buf[65536];
        size_t len;
} Probe;

static void emit(json_t *j) {
        char *s = json_dumps(j, JSON_COMPACT);

        if (s) {
                printf("%s\n", s);
                fflush(stdout);
                free(s);
        }
        json_decref(j);
}

static void check_not_inside(Slot *slot) {
        if (slot->probe->in_call)
                emit(json_pack("{s:s, s:s}", "event", "bug", "what", "callback inside the call"));
}

static void on_posted(
        void *userdata, int r, const char *error, const char *message_id, const char *thread_id) {
        Slot *slot = userdata;

        check_not_inside(slot);
        slot->op = NULL;
        emit(json_pack(
                "{s:s, s:s, s:i, s:s?, s:s?, s:s?}",
                "event",
                "posted",
                "tag",
                slot->tag,
                "r",
                r,
                "error",
                error,
                "message_id",
                message_id,
                "thread_id",
                thread_id));
}

static void on_reply(
        void *userdata,
        int r,
        const char *error,
        const char *reply_id,
        const char *text,
        const char *answerer) {
        Slot *slot = userdata;

        check_not_inside(slot);
        slot->op = NULL;
        emit(json_pack(
                "{s:s, s:s, s:i, s:s?, s:s?, s:s?, s:s?}",
                "event",
                "reply",
                "tag",
                slot->tag,
                "r",
                r,
                "error",
                error,
                "reply_id",
                reply_id,
                "text",
                text,
                "answerer",
                answerer));
}

static Slot *slot_find(Probe *p, const char *tag) {
        for (size_t i = 0; i < p->n_slots; i++)
                if (streq(p->slots[i].tag, tag))
                        return &p->slots[i];
        return NULL;
}

static const char *jstr(json_t *j, const char *key) {
        return json_string_value(json_object_get(j, key));
}

static void command(Probe *p, const char *line) {
        _cleanup_(json_decrefp) json_t *j = json_loads(line, 0, NULL);
        const char *tag = jstr(j, "tag"), *op = jstr(j, "op");
        HumanPost post;
        Slot *slot;
        int r;

        if (!j || isempty(tag) || isempty(op)) {
                emit(json_pack("{s:s, s:s}", "event", "bug", "what", "bad command"));
                return;
        }
        if (streq(op, "cancel")) {
                slot = slot_find(p, strempty(jstr(j, "target")));
                if (slot && slot->op) {
                        p->sink.vtable->cancel(p->sink.sink, slot->op);
                        slot->op = NULL;
                }
                emit(json_pack("{s:s, s:s}", "event", "cancelled", "tag", tag));
                return;
        }
        if (p->n_slots >= MAX_OPS) {
                emit(json_pack("{s:s, s:s}", "event", "bug", "what", "too many commands"));
                return;
        }
        slot = &p->slots[p->n_slots++];
        slot->tag = strdup(tag);
        slot->probe = p;
        post = (HumanPost){
                .interaction_id = jstr(j, "interaction_id") ?: "00000000-0000-4000-8000-000000000000",
                .session_id = jstr(j, "session_id") ?: "0123456789ab",
                .kind = jstr(j, "kind") ?: (streq(op, "notice") ? "notification" : "question"),
                .text = jstr(j, "text") ?: "",
                .urgent = json_is_true(json_object_get(j, "urgent")),
                .attempt = json_integer_value(json_object_get(j, "attempt")) ?: 1,
                .max_attempts = json_integer_value(json_object_get(j, "max_attempts")) ?: 3,
                .thread_id = jstr(j, "thread_id"),
        };
        p->in_call = true;
        if (streq(op, "notice"))
                r = p->sink.vtable->post_notice(p->sink.sink, &post, on_posted, slot, &slot->op);
        else if (streq(op, "question"))
                r = p->sink.vtable->post_question(p->sink.sink, &post, on_posted, slot, &slot->op);
        else if (streq(op, "in_thread"))
                r = p->sink.vtable->post_in_thread(p->sink.sink, &post, on_posted, slot, &slot->op);
        else if (streq(op, "watch"))
                r = p->sink.vtable->watch_replies(
                        p->sink.sink, jstr(j, "thread_id"), jstr(j, "after"), on_reply, slot, &slot->op);
        else
                r = -EOPNOTSUPP;
        p->in_call = false;
        if (r < 0)
                slot->op = NULL;
        emit(json_pack("{s:s, s:s, s:i}", "event", "started", "tag", tag, "r", r));
}

static int on_stdin(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Probe *p = userdata;
        ssize_t n;
        char *nl;

        n = read(fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
        if (n <= 0)
                return sd_event_exit(p->event, 0);
        p->len += (size_t) n;
        p->buf[p->len] = '\0';
        while ((nl = memchr(p->buf, '\n', p->len))) {
                *nl = '\0';
                if (nl > p->buf)
                        command(p, p->buf);
                p->len -= (size_t) (nl + 1 - p->buf);
                memmove(p->buf, nl + 1, p->len);
        }
        if (p->len >= sizeof(p->buf) - 1)
                return sd_event_exit(p->event, 1);
        return 0;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "api-url", required_argument, NULL, 'u' },
                { "channel", required_argument, NULL, 'c' },
                { "max-retries", required_argument, NULL, 'm' },
                { "poll-ms", required_argument, NULL, 'p' },
                {},
        };
        static Probe probe;
        Probe *p = &probe;
        DiscordConfig cfg = { .max_retries = DISCORD_MAX_RETRIES_DEFAULT, .poll_usec = 200 * USEC_PER_MSEC };
        _cleanup_free_ char *token = NULL;
        sd_event_source *in = NULL;
        const char *e;
        sigset_t mask;
        int c, r, rc = 0;

        log_set_prefix("discord-probe");
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                uint64_t v;

                switch (c) {
                case 'u':
                        cfg.api_url = optarg;
                        break;
                case 'c':
                        cfg.channel_id = optarg;
                        break;
                case 'm':
                        if (safe_atou64(optarg, &v) < 0 || v > 100)
                                return 2;
                        cfg.max_retries = (unsigned) v;
                        break;
                case 'p':
                        if (safe_atou64(optarg, &v) < 0 || v == 0)
                                return 2;
                        cfg.poll_usec = v * USEC_PER_MSEC;
                        break;
                default:
                        fprintf(stderr,
                                "usage: discord-probe --api-url=URL --channel=ID [--max-retries=N] [--poll-ms=N]\n");
                        return 2;
                }
        }
        e = getenv("DISCORD_BOT_TOKEN");
        if (e) {
                token = strdup(e);
                explicit_bzero((char *) e, strlen(e));
                (void) unsetenv("DISCORD_BOT_TOKEN");
        }
        cfg.token = token;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_default(&p->event);
        if (r < 0)
                return 1;
        (void) sd_event_add_signal(p->event, NULL, SIGTERM, NULL, NULL);
        (void) sd_event_add_signal(p->event, NULL, SIGINT, NULL, NULL);
        r = discord_new(p->event, &cfg, &p->discord);
        if (token)
                explicit_bzero(token, strlen(token));
        if (r < 0) {
                fprintf(stderr, "discord-probe: discord_new: %s\n", strerror(-r));
                sd_event_unref(p->event);
                return 1;
        }
        p->sink = discord_human_sink(p->discord);
        r = sd_event_add_io(p->event, &in, STDIN_FILENO, EPOLLIN, on_stdin, p);
        if (r < 0)
                return 1;
        emit(json_pack("{s:s}", "event", "ready"));
        r = sd_event_loop(p->event);
        if (r != 0)
                rc = 1;
        sd_event_source_disable_unref(in);
        discord_free(p->discord);
        for (size_t i = 0; i < p->n_slots; i++)
                free(p->slots[i].tag);
        sd_event_unref(p->event);
        return rc;
}

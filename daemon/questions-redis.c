/* Answers to questions over Redis (questions.h): a connection of its own, subscribed with PSUBSCRIBE to
 * session:*:control, that takes {"type":"answer","interaction_id":...,"text":...} for a question of the
 * session the channel names and ignores every other message. Redis is best effort, as for the notices
 * the daemon publishes: a link that drops is made again with a backoff, and what was published
 * meanwhile is not seen (the other surfaces still answer). Whoever can PUBLISH on the Redis socket
 * answers here: the socket is the daemon's and its users' (docs/security.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "questions.h"
#include "redis-sdevent.h"
#include "time-util.h"
#include "util.h"

#define BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (10 * USEC_PER_SEC)
/* A control message longer than this is not an answer of at most 2000 characters. */
#define CONTROL_MAX_BYTES 16384

struct QuestionsRedis {
        Questions *questions;
        sd_event *event;
        char *socket;
        redisAsyncContext *redis;
        sd_event_source *reconnect_timer;
        uint64_t backoff_usec;
        bool quiet;
        bool freeing;
};

static void redis_connect(QuestionsRedis *r);

static int on_reconnect(sd_event_source *source, uint64_t usec, void *userdata) {
        redis_connect(userdata);
        return 0;
}

static void schedule_reconnect(QuestionsRedis *r) {
        int k;

        if (r->freeing)
                return;
        r->backoff_usec = r->backoff_usec == 0            ? BACKOFF_MIN_USEC
                : r->backoff_usec >= BACKOFF_MAX_USEC / 2 ? BACKOFF_MAX_USEC
                                                          : r->backoff_usec * 2;
        r->reconnect_timer = sd_event_source_disable_unref(r->reconnect_timer);
        k = sd_event_add_time_relative(
                r->event,
                &r->reconnect_timer,
                CLOCK_MONOTONIC,
                r->backoff_usec,
                10 * USEC_PER_MSEC,
                on_reconnect,
                r);
        if (k < 0)
                log_warning_errno(k, "could not arm the reconnect to Redis for answers: %m");
}

/* session:{id}:control -> id */
static int channel_session(const char *channel, size_t len, char *ret, size_t size) {
        const char *p = startswith(channel, "session:");
        size_t n;

        if (!p || len < strlen("session:") + strlen(":control") || !endswith(channel, ":control"))
                return -EINVAL;
        n = len - strlen("session:") - strlen(":control");
        if (n == 0 || n >= size)
                return -EINVAL;
        memcpy(ret, p, n);
        ret[n] = '\0';
        return 0;
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata) {
        QuestionsRedis *r = privdata;
        redisReply *rep = reply;
        _cleanup_(json_decrefp) json_t *msg = NULL;
        char session_id[128];
        const char *id, *text, *who;
        CoreError e;
        int k;

        /* ["pmessage", pattern, channel, payload] */
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 ||
            rep->element[0]->type != REDIS_REPLY_STRING || !streq(rep->element[0]->str, "pmessage") ||
            rep->element[2]->type != REDIS_REPLY_STRING || rep->element[3]->type != REDIS_REPLY_STRING)
                return;
        if (rep->element[3]->len > CONTROL_MAX_BYTES)
                return;
        if (channel_session(rep->element[2]->str, rep->element[2]->len, session_id, sizeof(session_id)) < 0)
                return;
        msg = json_loadb(rep->element[3]->str, rep->element[3]->len, 0, NULL);
        if (!json_is_object(msg) || !streq_ptr(json_string_value(json_object_get(msg, "type")), "answer"))
                return;
        id = json_string_value(json_object_get(msg, "interaction_id"));
        text = json_string_value(json_object_get(msg, "text"));
        who = json_string_value(json_object_get(msg, "who"));
        if (who && (strlen(who) == 0 || strlen(who) > 128))
                who = NULL;
        if (!id || !text) {
                log_info(
                        "session %s: an answer on Redis without interaction_id or text was ignored",
                        session_id);
                return;
        }
        k = questions_answer(r->questions, session_id, id, text, "redis", who, (uid_t) -1, &e);
        if (k < 0)
                /* Nobody to answer on a channel: said in the log, and the record has the winner. */
                log_info("session %s: an answer on Redis was refused: %s", session_id, e.message);
}

static void on_connect(const redisAsyncContext *cac, int status) {
        redisAsyncContext *ac = (redisAsyncContext *) cac;
        QuestionsRedis *r = ac->data;

        if (status != REDIS_OK) {
                r->redis = NULL;
                if (!r->quiet)
                        log_info("answers on Redis at %s wait for it: %s", r->socket, ac->errstr);
                r->quiet = true;
                schedule_reconnect(r);
                return;
        }
        r->backoff_usec = 0;
        r->quiet = false;
        if (redisAsyncCommand(ac, on_message, r, "PSUBSCRIBE session:*:control") != REDIS_OK)
                log_warning("could not subscribe to session:*:control on Redis");
        else
                log_info("listening for answers on Redis (session:*:control)");
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
        QuestionsRedis *r = ac->data;

        r->redis = NULL;
        if (r->freeing)
                return;
        log_info("lost Redis for answers: %s; reconnecting", ac->errstr ?: "closed");
        schedule_reconnect(r);
}

static void redis_connect(QuestionsRedis *r) {
        redisAsyncContext *ac;
        int k;

        if (r->redis || r->freeing)
                return;
        ac = redisAsyncConnectUnix(r->socket);
        if (!ac) {
                schedule_reconnect(r);
                return;
        }
        if (ac->err) {
                redisAsyncFree(ac);
                if (!r->quiet)
                        log_info("answers on Redis at %s wait for it to listen", r->socket);
                r->quiet = true;
                schedule_reconnect(r);
                return;
        }
        ac->data = r;
        k = redis_sdevent_attach(ac, r->event, SD_EVENT_PRIORITY_NORMAL);
        if (k < 0) {
                redisAsyncFree(ac);
                schedule_reconnect(r);
                return;
        }
        (void) redisAsyncSetConnectCallback(ac, on_connect);
        (void) redisAsyncSetDisconnectCallback(ac, on_disconnect);
        r->redis = ac;
}

int questions_redis_new(Questions *q, const char *redis_socket, QuestionsRedis **ret) {
        QuestionsRedis *r;

        *ret = NULL;
        if (!redis_socket)
                return 0;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->questions = q;
        r->event = questions_event(q);
        r->socket = strdup(redis_socket);
        if (!r->socket) {
                free(r);
                return -ENOMEM;
        }
        redis_connect(r);
        *ret = r;
        return 0;
}

QuestionsRedis *questions_redis_free(QuestionsRedis *r) {
        if (!r)
                return NULL;
        r->freeing = true;
        r->reconnect_timer = sd_event_source_disable_unref(r->reconnect_timer);
        if (r->redis) {
                redisAsyncContext *ac = TAKE_PTR(r->redis);

                redisAsyncFree(ac);
        }
        free(r->socket);
        return mfree(r);
}

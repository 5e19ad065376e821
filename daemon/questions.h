/* Notices and questions for a human (SPEC.md 2.7, docs/channel.md "asking a human"): the durable records
 * of the discord_interactions table, the attempts and their timeouts, and the answers from every surface
 * (a HumanSink such as Discord, D-Bus, ccdockerctl, HTTP, Redis), of which the first wins. A question
 * outlives a daemon restart and a reconnect of ccdocker-mcp: its record holds the deadline of its
 * attempt and an answer nobody has taken yet, which human.wait hands over. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "channel.h"
#include "core-error.h"
#include "human-sink.h"

typedef struct Manager Manager;
typedef struct Session Session;
typedef struct Questions Questions;

/* At most this many notices a minute per session (SPEC.md 2.7.9 rule 2). */
#define QUESTIONS_NOTICES_PER_MINUTE 10
/* At most this many calls wait on one question at once (human.ask plus human.wait after reconnects). */
#define QUESTIONS_WAITERS_MAX 4
/* The text of a notice, a question or an answer: 1 to this many characters (code points). */
#define QUESTIONS_TEXT_MAX 2000
#define QUESTIONS_TIMEOUT_MAX 7200
#define QUESTIONS_ATTEMPTS_MAX 5

int questions_new(Manager *m, Questions **ret);
Questions *questions_free(Questions *q);

/* At startup, once the sessions are loaded: the records still open, their timers re-armed from the
 * stored deadlines, and what the sink has not yet got posted (or its threads watched again). */
int questions_load(Questions *q);

/* The sink people answer on besides the daemon's own surfaces; NULL (the default) for none. May be
 * set before or after questions_load(); what it has not got is posted then. The sink must outlive
 * the Questions or be unset first. */
void questions_set_sink(Questions *q, const HumanSink *sink);

/* The channel's human.notify, human.ask and human.wait (role mcp). Owns call. */
void questions_call(Session *s, const char *method, json_t *params, ChannelCall *call);

/* An answer from a surface ("dbus", "ctl", "http", "redis", or the sink's): session_id, when not NULL,
 * must be the question's session. who names the answerer for the record (NULL: unknown); uid is the
 * caller's, or -1. -ENOENT (no such question), -EALREADY (answered or timed out already), -EINVAL (a
 * permission question takes only allow or deny; an empty or too long text), with *e saying so. */
int questions_answer(
        Questions *q,
        const char *session_id,
        const char *id,
        const char *text,
        const char *surface,
        const char *who,
        uid_t uid,
        CoreError *e);

/* The session of question id (to authorise an answer given by id alone): 0 and a new string, or
 * -ENOENT. */
int questions_session_of(Questions *q, const char *id, char **ret_session_id);

/* A JSON array of the records of session_id (NULL: every session's), newest first, at most limit:
 * with pending_only only the questions still waiting for an answer. Each object is as
 * docs/dbus-api.md's ListQuestions describes. */
int questions_list(Questions *q, const char *session_id, bool pending_only, unsigned limit, json_t **ret);

/* questions-redis.c: answers PUBLISHed on session:{id}:control ({"type":"answer", ...}); NULL path:
 * none. */
typedef struct QuestionsRedis QuestionsRedis;
sd_event *questions_event(Questions *q);
int questions_redis_new(Questions *q, const char *redis_socket, QuestionsRedis **ret);
QuestionsRedis *questions_redis_free(QuestionsRedis *r);

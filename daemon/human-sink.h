/* A place outside the daemon where people read a session's notices and answer its questions: Discord
 * (daemon/discord.c) is the one there is. The questions core (daemon/questions.c) owns the durable
 * records, the timeouts, the attempts and the answers from every surface; a sink only posts and
 * watches. The core works with no sink at all (no Discord configured): questions are then answered
 * on D-Bus, ccdockerctl, HTTP or Redis.
 *
 * Every operation takes a callback that runs at most once, from the event loop (never from inside the
 * call that started it), unless the operation is cancelled first. An operation returning < 0 started
 * nothing and never calls back. */
#pragma once

#include <stdbool.h>

typedef struct HumanSinkOp HumanSinkOp;

/* What to post. All strings are borrowed for the duration of the call only. */
typedef struct HumanPost {
        const char *interaction_id; /* the record's id, shown to people so they can answer elsewhere */
        const char *session_id;
        const char *kind;           /* "notification", "question" or "permission" */
        const char *text;           /* validated (1-2000 chars); mentions are the sink's to neutralise */
        bool urgent;
        unsigned attempt;           /* 1 for the first post; > 1 for a reminder */
        unsigned max_attempts;
        const char *thread_id;      /* reminders: the question's thread; otherwise NULL */
} HumanPost;

/* r: 0 posted, or a negative errno with error a one-line message without secrets. A sink that gave up
 * after its own retries reports -EAGAIN for a transient failure (unreachable, 5xx, rate limited for
 * long) and -EACCES/-EPERM for one no retry will mend (401/403); the core retries -EAGAIN later.
 * message_id: the posted message; thread_id: the thread a question's replies go to (questions only). */
typedef void (*HumanPostDone)(
        void *userdata, int r, const char *error, const char *message_id, const char *thread_id);

/* A reply by a person (never a bot, never the sink's own posts) in the watched thread, the first one
 * after the cursor. reply_id: its id (a later watch may start after it); answerer: a display name
 * for the audit record. The watch ends after calling back once; r < 0 ends it with a failure the sink
 * could not ride out (-EACCES, -EPERM, -ENOENT for a deleted thread). */
typedef void (*HumanReplyFn)(
        void *userdata, int r, const char *error, const char *reply_id, const char *text, const char *answerer);

typedef struct HumanSinkVtable {
        const char *surface; /* "discord": the surface named in answers and audit records */
        /* A message in the configured channel. */
        int (*post_notice)(void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret);
        /* A message plus a thread of its own for the replies (SPEC 2.7.9 rule 4). */
        int (*post_question)(void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret);
        /* A message in p->thread_id: a reminder (attempt > 1), or word that the question was answered
         * or timed out elsewhere. */
        int (*post_in_thread)(void *sink, const HumanPost *p, HumanPostDone done, void *userdata, HumanSinkOp **ret);
        /* Waits for the first reply by a person in thread_id after the message after_id (polling). */
        int (*watch_replies)(
                void *sink,
                const char *thread_id,
                const char *after_id,
                HumanReplyFn fn,
                void *userdata,
                HumanSinkOp **ret);
        /* Cancels an operation that has not called back yet: it never will. */
        void (*cancel)(void *sink, HumanSinkOp *op);
} HumanSinkVtable;

typedef struct HumanSink {
        const HumanSinkVtable *vtable;
        void *sink;
} HumanSink;

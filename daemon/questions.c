/* Notices and questions for a human (questions.h). Each record is written to the store before anything
 * is answered or announced, and again at each change, so that a daemon killed at any point finds it as
 * it was: a pending question's timer is re-armed from its stored deadline, a post the sink had not done
 * is done, and an answer given while nobody waited is handed to the next human.wait. The sink (Discord)
 * only posts and watches; the timeouts, the attempts and the first-answer-wins rule are here, so that
 * every surface obeys them alike. */
#define _GNU_SOURCE
#include "questions.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <systemd/sd-id128.h>

#include "audit.h"
#include "cleanup.h"
#include "hashmap.h"
#include "jsonrpc.h"
#include "log.h"
#include "manager.h"
#include "ratelimit.h"
#include "session.h"
#include "time-util.h"
#include "util.h"

/* A failed post to the sink is tried again after this, doubling up to the most. */
#define POST_RETRY_FIRST_USEC (2 * USEC_PER_SEC)
#define POST_RETRY_MAX_USEC (5 * USEC_PER_MINUTE)

typedef struct Interaction Interaction;

typedef struct Waiter {
        ChannelCall *call;
        struct Waiter *next;
} Waiter;

struct Interaction {
        Questions *questions;
        StoreInteraction rec;
        sd_event_source *timer;      /* the end of the current attempt (CLOCK_REALTIME, stored) */
        sd_event_source *retry;      /* the next try of a failed post */
        sd_event_source *late_timer; /* an answer nobody took goes as a prompt (late_delivery) */
        uint64_t retry_usec;
        HumanSinkOp *post_op;
        HumanSinkOp *watch_op;
        HumanSinkOp *thread_op; /* a word in the thread (reminder, answered elsewhere) */
        Waiter *waiters;
        unsigned n_waiters;
};

/* Per session: the notices of the last minute. */
typedef struct NoticeLimit {
        char *session_id;
        RateLimit limit;
} NoticeLimit;

struct Questions {
        Manager *manager;
        const HumanSink *sink;
        Hashmap *open;    /* id -> Interaction: pending, or an outcome not yet handed over */
        Hashmap *notices; /* session id -> NoticeLimit */
        QuestionsRedis *redis;
};

static bool is_notice(const Interaction *i) {
        return streq(i->rec.type, "notification");
}

static bool is_permission(const Interaction *i) {
        return streq(i->rec.type, "permission");
}

static void interaction_post(Interaction *i);
static void interaction_watch(Interaction *i);

/* ---- the records ---- */

static Interaction *interaction_free(Interaction *i) {
        if (!i)
                return NULL;
        sd_event_source_disable_unref(i->timer);
        sd_event_source_disable_unref(i->retry);
        sd_event_source_disable_unref(i->late_timer);
        if (i->questions->sink) {
                const HumanSink *k = i->questions->sink;

                if (i->post_op)
                        k->vtable->cancel(k->sink, i->post_op);
                if (i->watch_op)
                        k->vtable->cancel(k->sink, i->watch_op);
                if (i->thread_op)
                        k->vtable->cancel(k->sink, i->thread_op);
        }
        while (i->waiters) {
                Waiter *w = i->waiters;

                i->waiters = w->next;
                channel_call_free(w->call);
                free(w);
        }
        store_interaction_done(&i->rec);
        return mfree(i);
}

static void interaction_forget(Interaction *i) {
        hashmap_remove(i->questions->open, i->rec.id);
        interaction_free(i);
}

static int interaction_save(Interaction *i) {
        int r = store_interaction_save(i->questions->manager->store, &i->rec);

        if (r < 0)
                log_warning_errno(r, "interaction %s: could not store it: %m", i->rec.id);
        return r;
}

static int set_string(char **field, const char *v) {
        char *c = NULL;

        if (v) {
                c = strdup(v);
                if (!c)
                        return -ENOMEM;
        }
        free(*field);
        *field = c;
        return 0;
}

/* Characters (UTF-8 code points) of s, which jansson has checked to be valid UTF-8. */
static size_t utf8_chars(const char *s) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        n++;
        return n;
}

static json_t *interaction_to_json(const StoreInteraction *r) {
        json_t *answered_by = json_null(), *tool = json_null();

        if (r->answered_surface)
                answered_by = json_pack(
                        "{s:s, s:o}",
                        "surface",
                        r->answered_surface,
                        "who",
                        r->answered_by ? json_string(r->answered_by) : json_null());
        if (r->tool_json)
                tool = json_loads(r->tool_json, 0, NULL) ?: json_null();
        return json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:o, s:I, s:o, s:o}",
                "interaction_id",
                r->id,
                "session_id",
                r->session_id,
                "type",
                r->type,
                "message",
                r->message,
                "status",
                r->status,
                "priority",
                r->priority,
                "response",
                r->response ? json_string(r->response) : json_null(),
                "attempt",
                (json_int_t) r->attempt,
                "max_attempts",
                (json_int_t) r->max_attempts,
                "timeout_seconds",
                (json_int_t) r->timeout_sec,
                "created_usec",
                (json_int_t) r->created_usec,
                "answered_usec",
                r->answered_usec ? json_integer((json_int_t) r->answered_usec) : json_null(),
                "deadline_usec",
                (json_int_t) r->deadline_usec,
                "answered_by",
                answered_by ?: json_null(),
                "tool",
                tool);
}

/* What human.ask and human.wait answer once the question is answered or timed out. */
static json_t *interaction_result(const StoreInteraction *r) {
        bool timed_out = streq(r->status, "timeout");
        json_t *answered_by = json_null();

        if (r->answered_surface && !timed_out)
                answered_by = json_pack(
                        "{s:s, s:o}",
                        "surface",
                        r->answered_surface,
                        "who",
                        r->answered_by ? json_string(r->answered_by) : json_null());
        return json_pack(
                "{s:s, s:s, s:b, s:o}",
                "interaction_id",
                r->id,
                "response",
                r->response ?: "",
                "timed_out",
                timed_out,
                "answered_by",
                answered_by ?: json_null());
}

/* Tells the bus and Redis: asked ("question"), answered or timed out. */
static void interaction_publish(Interaction *i) {
        Manager *m = i->questions->manager;
        Session *s = manager_get_session(m, i->rec.session_id);
        _cleanup_(json_decrefp) json_t *msg = NULL;

        if (!s)
                return;
        msg = json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:s, s:o}",
                "type",
                streq(i->rec.status, "pending") ? "question" : "question_closed",
                "session_id",
                s->id,
                "interaction_id",
                i->rec.id,
                "kind",
                i->rec.type,
                "status",
                i->rec.status,
                "message",
                i->rec.message,
                "answered_by",
                i->rec.answered_surface ? json_string(i->rec.answered_surface) : json_null());
        if (msg)
                session_notify(s, "questions", msg);
        if (m->publisher && m->publisher->question)
                m->publisher->question(m, s, i->rec.id, i->rec.type, i->rec.status, i->rec.message);
}

static Session *interaction_session(Interaction *i) {
        return manager_get_session(i->questions->manager, i->rec.session_id);
}

/* ---- handing the outcome over ---- */

static bool waiters_prune(Interaction *i) {
        for (Waiter **w = &i->waiters; *w;)
                if (!channel_call_is_open((*w)->call)) {
                        Waiter *dead = *w;

                        *w = dead->next;
                        channel_call_free(dead->call);
                        free(dead);
                        i->n_waiters--;
                } else
                        w = &(*w)->next;
        return i->waiters != NULL;
}

static void interaction_late_prompt(Interaction *i) {
        _cleanup_free_ char *text = NULL;
        Session *s = interaction_session(i);
        CoreError e;
        int r;

        if (!s)
                return;
        if (asprintf(
                    &text,
                    "[answer to question %s] %s",
                    i->rec.id,
                    streq(i->rec.status, "timeout") ? "(no answer: the question timed out)"
                                                    : strempty(i->rec.response)) < 0)
                return;
        r = session_send_prompt(s, "late answer", text, NULL, &e);
        if (r < 0) {
                log_warning(
                        "session %s: the late answer to %s could not be queued: %s",
                        s->id,
                        i->rec.id,
                        e.message);
                return;
        }
        i->rec.handed_over = true;
        (void) interaction_save(i);
}

static int on_late(sd_event_source *source, uint64_t usec, void *userdata) {
        Interaction *i = userdata;

        i->late_timer = sd_event_source_disable_unref(i->late_timer);
        if (i->rec.handed_over)
                return 0;
        interaction_late_prompt(i);
        if (i->rec.handed_over)
                interaction_forget(i);
        return 0;
}

/* The question is answered or timed out: to whoever waits; else kept for the next human.wait, or with
 * late_delivery a prompt once nobody came for it within QuestionMinTimeoutSec. Frees i once handed
 * over. */
static void interaction_finish(Interaction *i) {
        Manager *m = i->questions->manager;
        _cleanup_(json_decrefp) json_t *result = interaction_result(&i->rec);
        bool handed = false;

        i->timer = sd_event_source_disable_unref(i->timer);
        if (!result) {
                log_oom();
                return;
        }
        while (i->waiters) {
                Waiter *w = i->waiters;

                i->waiters = w->next;
                i->n_waiters--;
                if (channel_call_is_open(w->call)) {
                        handed = true;
                        channel_call_reply(w->call, result);
                } else
                        channel_call_free(w->call);
                free(w);
        }
        if (handed) {
                i->rec.handed_over = true;
                (void) interaction_save(i);
                /* A word still going to its thread (answered elsewhere) forgets it when done. */
                if (!i->thread_op)
                        interaction_forget(i);
                return;
        }
        if (streq_ptr(i->rec.late_delivery, "prompt") && !i->late_timer) {
                int r = sd_event_add_time_relative(
                        m->event,
                        &i->late_timer,
                        CLOCK_MONOTONIC,
                        m->config.question_min_timeout_sec * USEC_PER_SEC,
                        0,
                        on_late,
                        i);
                if (r < 0)
                        interaction_late_prompt(i);
        }
}

/* ---- the sink ---- */

static void thread_word_done(
        void *userdata, int r, const char *error, const char *message_id, const char *thread_id) {
        Interaction *i = userdata;

        i->thread_op = NULL;
        if (r < 0)
                log_info(
                        "interaction %s: the word in its thread was not posted: %s",
                        i->rec.id,
                        strempty(error));
        /* Closed and handed over meanwhile: nothing else holds it. */
        if (!streq(i->rec.status, "pending") && i->rec.handed_over && !i->late_timer)
                interaction_forget(i);
}

/* A reminder (attempt > 1), or the word that it was answered elsewhere or timed out. */
static void interaction_say_in_thread(Interaction *i, const char *text) {
        const HumanSink *k = i->questions->sink;
        HumanPost p = {
                .interaction_id = i->rec.id,
                .session_id = i->rec.session_id,
                .kind = i->rec.type,
                .text = text,
                .urgent = streq(i->rec.priority, "urgent"),
                .attempt = i->rec.attempt,
                .max_attempts = i->rec.max_attempts,
                .thread_id = i->rec.thread_id,
        };

        if (!k || !i->rec.thread_id || !k->vtable->post_in_thread)
                return;
        if (i->thread_op) {
                k->vtable->cancel(k->sink, i->thread_op);
                i->thread_op = NULL;
        }
        if (k->vtable->post_in_thread(k->sink, &p, thread_word_done, i, &i->thread_op) < 0)
                i->thread_op = NULL;
}

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
        Interaction *i = userdata;

        i->retry = sd_event_source_disable_unref(i->retry);
        interaction_post(i);
        return 0;
}

static void interaction_retry_later(Interaction *i) {
        int r;

        i->retry_usec = i->retry_usec == 0                 ? POST_RETRY_FIRST_USEC
                : i->retry_usec >= POST_RETRY_MAX_USEC / 2 ? POST_RETRY_MAX_USEC
                                                           : i->retry_usec * 2;
        r = sd_event_add_time_relative(
                i->questions->manager->event, &i->retry, CLOCK_MONOTONIC, i->retry_usec, 0, on_retry, i);
        if (r < 0)
                log_warning_errno(r, "interaction %s: could not arm the retry of its post: %m", i->rec.id);
}

static void post_done(
        void *userdata, int r, const char *error, const char *message_id, const char *thread_id) {
        Interaction *i = userdata;

        i->post_op = NULL;
        if (r < 0) {
                log_warning(
                        "interaction %s: %s could not post it: %s%s",
                        i->rec.id,
                        i->questions->sink->vtable->surface,
                        strempty(error),
                        r == -EAGAIN ? "; trying again later" : "");
                if (r == -EAGAIN)
                        interaction_retry_later(i);
                return;
        }
        i->retry_usec = 0;
        i->rec.posted = true;
        if (set_string(&i->rec.message_id, message_id) < 0 || set_string(&i->rec.thread_id, thread_id) < 0)
                log_oom();
        if (is_notice(i))
                i->rec.status = mfree(i->rec.status), i->rec.status = strdup("completed");
        (void) interaction_save(i);
        if (is_notice(i)) {
                interaction_forget(i);
                return;
        }
        if (streq(i->rec.status, "pending"))
                interaction_watch(i);
}

static void interaction_post(Interaction *i) {
        const HumanSink *k = i->questions->sink;
        HumanPost p = {
                .interaction_id = i->rec.id,
                .session_id = i->rec.session_id,
                .kind = i->rec.type,
                .text = i->rec.message,
                .urgent = streq(i->rec.priority, "urgent"),
                .attempt = i->rec.attempt,
                .max_attempts = i->rec.max_attempts,
        };
        int r;

        if (!k || i->rec.posted || i->post_op || i->retry || !streq(i->rec.status, "pending"))
                return;
        r = (is_notice(i) ? k->vtable->post_notice
                          : k->vtable->post_question)(k->sink, &p, post_done, i, &i->post_op);
        if (r < 0) {
                i->post_op = NULL;
                log_warning_errno(r, "interaction %s: could not start its post: %m", i->rec.id);
                interaction_retry_later(i);
        }
}

static void reply_done(
        void *userdata,
        int r,
        const char *error,
        const char *reply_id,
        const char *text,
        const char *answerer) {
        Interaction *i = userdata;
        CoreError e;
        int q;

        i->watch_op = NULL;
        if (r < 0) {
                log_warning(
                        "interaction %s: %s stopped watching its thread: %s; it is still answerable on the other surfaces",
                        i->rec.id,
                        i->questions->sink->vtable->surface,
                        strempty(error));
                return;
        }
        if (set_string(&i->rec.reply_cursor, reply_id) < 0)
                log_oom();
        q = questions_answer(
                i->questions,
                i->rec.session_id,
                i->rec.id,
                text,
                i->questions->sink->vtable->surface,
                answerer,
                (uid_t) -1,
                &e);
        if (q == -EINVAL) {
                /* Not an answer it takes (a permission question: allow or deny): said, and watched on. */
                (void) interaction_save(i);
                interaction_say_in_thread(i, e.message);
                interaction_watch(i);
        }
}

static void interaction_watch(Interaction *i) {
        const HumanSink *k = i->questions->sink;
        int r;

        if (!k || !i->rec.thread_id || i->watch_op || !streq(i->rec.status, "pending"))
                return;
        r = k->vtable->watch_replies(
                k->sink,
                i->rec.thread_id,
                i->rec.reply_cursor ?: i->rec.message_id,
                reply_done,
                i,
                &i->watch_op);
        if (r < 0) {
                i->watch_op = NULL;
                log_warning_errno(r, "interaction %s: could not watch its thread: %m", i->rec.id);
        }
}

void questions_set_sink(Questions *q, const HumanSink *sink) {
        Interaction *i;
        const char *key;
        Iterator it;

        if (q->sink == sink)
                return;
        /* What the old sink had under way is its own no more. */
        HASHMAP_FOREACH_KEY(i, key, q->open, it) {
                if (q->sink) {
                        if (i->post_op)
                                q->sink->vtable->cancel(q->sink->sink, i->post_op);
                        if (i->watch_op)
                                q->sink->vtable->cancel(q->sink->sink, i->watch_op);
                        if (i->thread_op)
                                q->sink->vtable->cancel(q->sink->sink, i->thread_op);
                }
                i->post_op = i->watch_op = i->thread_op = NULL;
        }
        q->sink = sink;
        HASHMAP_FOREACH_KEY(i, key, q->open, it) {
                interaction_post(i);
                interaction_watch(i);
        }
}

/* ---- timeouts ---- */

static int interaction_arm(Interaction *i);

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Interaction *i = userdata;
        Session *s = interaction_session(i);

        i->timer = sd_event_source_disable_unref(i->timer);
        if (!streq(i->rec.status, "pending"))
                return 0;
        audit_log(
                AUDIT_EVENT_QUESTION_TIMEOUT,
                i->rec.session_id,
                s ? s->parent_id : NULL,
                s ? s->unit : NULL,
                (uid_t) -1,
                "session %s: attempt %u of %u of question %s timed out after %u s%s",
                i->rec.session_id,
                i->rec.attempt,
                i->rec.max_attempts,
                i->rec.id,
                i->rec.timeout_sec,
                i->rec.attempt >= i->rec.max_attempts
                        ? (is_permission(i) ? "; denied" : "; no more attempts")
                        : "");
        if (i->rec.attempt < i->rec.max_attempts) {
                _cleanup_free_ char *reminder = NULL;
                _cleanup_(json_decrefp) json_t *progress = NULL;

                i->rec.attempt++;
                i->rec.deadline_usec =
                        now_usec(CLOCK_REALTIME) + (uint64_t) i->rec.timeout_sec * USEC_PER_SEC;
                (void) interaction_save(i);
                (void) interaction_arm(i);
                progress = json_pack(
                        "{s:s, s:I, s:I}",
                        "interaction_id",
                        i->rec.id,
                        "attempt",
                        (json_int_t) i->rec.attempt,
                        "max_attempts",
                        (json_int_t) i->rec.max_attempts);
                for (Waiter *w = i->waiters; progress && w; w = w->next)
                        (void) channel_call_notify(w->call, "human.waiting", progress);
                if (asprintf(
                            &reminder,
                            "Reminder (attempt %u of %u): %s",
                            i->rec.attempt,
                            i->rec.max_attempts,
                            i->rec.message) >= 0)
                        interaction_say_in_thread(i, reminder);
                return 0;
        }
        free(i->rec.status);
        i->rec.status = strdup("timeout");
        if (is_permission(i)) {
                free(i->rec.response);
                i->rec.response = strdup("deny");
        }
        i->rec.deadline_usec = 0;
        if (!i->rec.status)
                return log_oom();
        (void) interaction_save(i);
        if (i->watch_op) {
                i->questions->sink->vtable->cancel(i->questions->sink->sink, i->watch_op);
                i->watch_op = NULL;
        }
        interaction_say_in_thread(
                i,
                is_permission(i) ? "No answer in time: denied."
                                 : "No answer in time: the question has timed out.");
        interaction_publish(i);
        interaction_finish(i);
        return 0;
}

static int interaction_arm(Interaction *i) {
        int r;

        i->timer = sd_event_source_disable_unref(i->timer);
        r = sd_event_add_time(
                i->questions->manager->event,
                &i->timer,
                CLOCK_REALTIME,
                i->rec.deadline_usec,
                USEC_PER_SEC / 10,
                on_timeout,
                i);
        if (r < 0)
                return log_warning_errno(r, "interaction %s: could not arm its timeout: %m", i->rec.id);
        return 0;
}

/* ---- making and loading ---- */

static int interaction_add(Questions *q, Interaction *i) {
        int r;

        if (!q->open) {
                q->open = hashmap_new();
                if (!q->open)
                        return -ENOMEM;
        }
        r = hashmap_put(q->open, i->rec.id, i);
        return r < 0 ? r : 0;
}

static int copy_record(const StoreInteraction *from, StoreInteraction *to) {
        const char *const *src[] = {
                (const char *const *) &from->id,
                (const char *const *) &from->session_id,
                (const char *const *) &from->type,
                (const char *const *) &from->message,
                (const char *const *) &from->response,
                (const char *const *) &from->status,
                (const char *const *) &from->thread_id,
                (const char *const *) &from->priority,
                (const char *const *) &from->message_id,
                (const char *const *) &from->tool_json,
                (const char *const *) &from->answered_surface,
                (const char *const *) &from->answered_by,
                (const char *const *) &from->late_delivery,
                (const char *const *) &from->reply_cursor,
        };
        char **dst[] = { &to->id,
                         &to->session_id,
                         &to->type,
                         &to->message,
                         &to->response,
                         &to->status,
                         &to->thread_id,
                         &to->priority,
                         &to->message_id,
                         &to->tool_json,
                         &to->answered_surface,
                         &to->answered_by,
                         &to->late_delivery,
                         &to->reply_cursor };

        *to = (StoreInteraction){
                .attempt = from->attempt,
                .max_attempts = from->max_attempts,
                .timeout_sec = from->timeout_sec,
                .created_usec = from->created_usec,
                .answered_usec = from->answered_usec,
                .deadline_usec = from->deadline_usec,
                .handed_over = from->handed_over,
                .posted = from->posted,
        };
        for (size_t k = 0; k < ELEMENTSOF(dst); k++)
                if (set_string(dst[k], *src[k]) < 0) {
                        store_interaction_done(to);
                        return -ENOMEM;
                }
        return 0;
}

static int load_one(const StoreInteraction *rec, void *userdata) {
        Questions *q = userdata;
        Interaction *i;
        int r;

        /* A record of a session no longer known is nobody's to take. */
        if (!manager_get_session(q->manager, rec->session_id))
                return 0;
        i = calloc(1, sizeof(*i));
        if (!i)
                return -ENOMEM;
        i->questions = q;
        r = copy_record(rec, &i->rec);
        if (r >= 0)
                r = interaction_add(q, i);
        if (r < 0) {
                store_interaction_done(&i->rec);
                free(i);
                return r;
        }
        if (streq(i->rec.status, "pending") && !is_notice(i))
                (void) interaction_arm(i);
        else if (!streq(i->rec.status, "pending"))
                interaction_finish(i); /* nobody waits yet: kept (or queued as a prompt later) */
        interaction_post(i);
        interaction_watch(i);
        return 0;
}

int questions_load(Questions *q) {
        int r;

        r = store_load_interactions(q->manager->store, NULL, true, 0, load_one, q);
        if (r < 0)
                return log_error_errno(r, "could not load the stored questions: %m");
        if (r > 0)
                log_info("loaded %d open notice(s) and question(s)", r);
        r = questions_redis_new(q, q->manager->config.redis_socket, &q->redis);
        if (r < 0)
                log_warning_errno(r, "could not listen for answers on Redis: %m");
        return 0;
}

sd_event *questions_event(Questions *q) {
        return q->manager->event;
}

int questions_new(Manager *m, Questions **ret) {
        Questions *q = calloc(1, sizeof(*q));

        if (!q)
                return -ENOMEM;
        q->manager = m;
        *ret = q;
        return 0;
}

Questions *questions_free(Questions *q) {
        Interaction *i;
        NoticeLimit *n;
        const char *key;
        Iterator it;

        if (!q)
                return NULL;
        questions_redis_free(q->redis);
        HASHMAP_FOREACH_KEY(i, key, q->open, it) {
                hashmap_remove(q->open, key);
                interaction_free(i);
        }
        hashmap_free(q->open);
        HASHMAP_FOREACH_KEY(n, key, q->notices, it) {
                hashmap_remove(q->notices, key);
                free(n->session_id);
                free(n);
        }
        hashmap_free(q->notices);
        return mfree(q);
}

/* ---- the channel's methods ---- */

typedef struct AskParams {
        const char *text;
        const char *priority;
        const char *kind;
        const char *late_delivery;
        json_t *tool;
        unsigned timeout_sec, max_attempts;
} AskParams;

static int param_text(json_t *params, const char *field, const char **ret, CoreError *e) {
        json_t *v = json_object_get(params, field);
        size_t n;

        if (!v)
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "%s is missing: it must be a string of 1-%d characters",
                        field,
                        QUESTIONS_TEXT_MAX);
        if (!json_is_string(v))
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "%s must be a string of 1-%d characters",
                        field,
                        QUESTIONS_TEXT_MAX);
        n = utf8_chars(json_string_value(v));
        if (n < 1 || n > QUESTIONS_TEXT_MAX || strlen(json_string_value(v)) != json_string_length(v))
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "%s must be 1-%d characters, got %zu",
                        field,
                        QUESTIONS_TEXT_MAX,
                        n);
        *ret = json_string_value(v);
        return 0;
}

static int param_enum(
        json_t *params, const char *field, const char *const *values, const char **ret, CoreError *e) {
        json_t *v = json_object_get(params, field);

        if (!v)
                return 0;
        for (size_t k = 0; json_is_string(v) && values[k]; k++)
                if (streq(values[k], json_string_value(v))) {
                        *ret = values[k];
                        return 0;
                }
        return core_error(
                e,
                -EINVAL,
                CORE_ERROR_INVALID_CONFIG,
                "%s must be %s%s%s%s",
                field,
                values[0],
                values[1] ? " or " : "",
                values[1] ? values[1] : "",
                "");
}

static int param_range(
        json_t *params, const char *field, unsigned min, unsigned max, unsigned *ret, CoreError *e) {
        json_t *v = json_object_get(params, field);

        if (!v)
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "%s must be an integer %u-%u",
                        field,
                        min,
                        max);
        *ret = (unsigned) json_integer_value(v);
        return 0;
}

static int params_only(json_t *params, const char *const *known, CoreError *e) {
        const char *key;
        json_t *v;

        json_object_foreach (params, key, v) {
                bool ok = false;

                for (size_t k = 0; known[k] && !ok; k++)
                        ok = streq(known[k], key);
                if (!ok)
                        return core_error(
                                e, -EINVAL, CORE_ERROR_INVALID_CONFIG, "unknown field \"%.64s\"", key);
        }
        return 0;
}

static const char *const priorities[] = { "normal", "urgent", NULL };

static int parse_ask(Questions *q, json_t *params, AskParams *a, CoreError *e) {
        static const char *const known[] = { "question",      "timeout_seconds",
                                             "max_attempts",  "priority",
                                             "kind",          "tool",
                                             "late_delivery", NULL };
        static const char *const kinds[] = { "question", "permission", NULL };
        static const char *const late[] = { "prompt", NULL };
        const DaemonConfig *c = &q->manager->config;
        unsigned min = c->question_min_timeout_sec < QUESTIONS_TIMEOUT_MAX
                ? (unsigned) c->question_min_timeout_sec
                : QUESTIONS_TIMEOUT_MAX;
        unsigned def = c->question_timeout_sec < min              ? min
                : c->question_timeout_sec > QUESTIONS_TIMEOUT_MAX ? QUESTIONS_TIMEOUT_MAX
                                                                  : (unsigned) c->question_timeout_sec;
        int r;

        *a = (AskParams){
                .priority = "normal",
                .kind = "question",
                .timeout_sec = def,
                .max_attempts = 3,
        };
        r = params_only(params, known, e);
        if (r >= 0)
                r = param_text(params, "question", &a->text, e);
        if (r >= 0)
                r = param_range(params, "timeout_seconds", min, QUESTIONS_TIMEOUT_MAX, &a->timeout_sec, e);
        if (r >= 0)
                r = param_range(params, "max_attempts", 1, QUESTIONS_ATTEMPTS_MAX, &a->max_attempts, e);
        if (r >= 0)
                r = param_enum(params, "priority", priorities, &a->priority, e);
        if (r >= 0)
                r = param_enum(params, "kind", kinds, &a->kind, e);
        if (r >= 0)
                r = param_enum(params, "late_delivery", late, &a->late_delivery, e);
        if (r < 0)
                return r;
        a->tool = json_object_get(params, "tool");
        if (streq(a->kind, "permission")) {
                json_t *name = json_object_get(a->tool, "name");

                if (!json_is_object(a->tool) || !json_is_string(name) || json_string_length(name) == 0 ||
                    json_string_length(name) > 256)
                        return core_error(
                                e,
                                -EINVAL,
                                CORE_ERROR_INVALID_CONFIG,
                                "tool must be an object {\"name\": a string of 1-256 characters, \"input\": ...} for a permission question");
        } else if (a->tool)
                return core_error(
                        e, -EINVAL, CORE_ERROR_INVALID_CONFIG, "tool is only for kind \"permission\"");
        return 0;
}

static int new_id(char ret[static 37]) {
        sd_id128_t id;
        int r;

        r = sd_id128_randomize(&id);
        if (r < 0)
                return r;
        (void) snprintf(
                ret,
                37,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                id.bytes[0],
                id.bytes[1],
                id.bytes[2],
                id.bytes[3],
                id.bytes[4],
                id.bytes[5],
                id.bytes[6],
                id.bytes[7],
                id.bytes[8],
                id.bytes[9],
                id.bytes[10],
                id.bytes[11],
                id.bytes[12],
                id.bytes[13],
                id.bytes[14],
                id.bytes[15]);
        return 0;
}

static int refuse(Session *s, ChannelCall *call, int code, const char *what, const char *message) {
        audit_log(
                AUDIT_EVENT_HUMAN_REFUSED,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "session %s: %s refused: %s",
                s->id,
                what,
                message);
        channel_call_error(call, code, "%s", message);
        return 0;
}

static int call_error(ChannelCall *call, int code, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

static int call_error(ChannelCall *call, int code, const char *format, ...) {
        char message[256];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        channel_call_error(call, code, "%s", message);
        return 0;
}

/* A new record for session s, stored and open; i->rec filled by the caller first. */
static int interaction_create(Questions *q, Interaction **ret, StoreInteraction *rec) {
        Interaction *i;
        int r;

        r = store_interaction_save(q->manager->store, rec);
        if (r < 0) {
                store_interaction_done(rec);
                return r;
        }
        i = calloc(1, sizeof(*i));
        if (!i) {
                store_interaction_done(rec);
                return -ENOMEM;
        }
        i->questions = q;
        i->rec = *rec;
        *rec = (StoreInteraction){};
        r = interaction_add(q, i);
        if (r < 0) {
                interaction_free(i);
                return r;
        }
        *ret = i;
        return 0;
}

/* The fields every new record has: attempt 1, created now. */
static int record_new(
        StoreInteraction *rec,
        Session *s,
        const char *id,
        const char *type,
        const char *text,
        const char *status,
        const char *priority) {
        *rec = (StoreInteraction){
                .id = strdup(id),
                .session_id = strdup(s->id),
                .type = strdup(type),
                .message = strdup(text),
                .status = strdup(status),
                .priority = strdup(priority),
                .attempt = 1,
                .created_usec = now_usec(CLOCK_REALTIME),
        };
        if (!rec->id || !rec->session_id || !rec->type || !rec->message || !rec->status || !rec->priority) {
                store_interaction_done(rec);
                return -ENOMEM;
        }
        return 0;
}

static bool notice_allowed(Questions *q, Session *s) {
        NoticeLimit *n;

        if (!q->notices) {
                q->notices = hashmap_new();
                if (!q->notices)
                        return false;
        }
        n = hashmap_get(q->notices, s->id);
        if (!n) {
                n = calloc(1, sizeof(*n));
                if (!n)
                        return false;
                n->session_id = strdup(s->id);
                n->limit = (RateLimit){ .interval_usec = USEC_PER_MINUTE,
                                        .burst = QUESTIONS_NOTICES_PER_MINUTE };
                if (!n->session_id || hashmap_put(q->notices, n->session_id, n) < 0) {
                        free(n->session_id);
                        free(n);
                        return false;
                }
        }
        return ratelimit_below(&n->limit, event_now_usec(q->manager->event, CLOCK_MONOTONIC));
}

static unsigned pending_questions(Questions *q, const char *session_id) {
        Interaction *i;
        const char *key;
        unsigned n = 0;
        Iterator it;

        HASHMAP_FOREACH_KEY(i, key, q->open, it)
        if (!is_notice(i) && streq(i->rec.status, "pending") && streq(i->rec.session_id, session_id))
                n++;
        return n;
}

static int call_notify(Session *s, json_t *params, ChannelCall *call) {
        static const char *const known[] = { "message", "priority", NULL };
        Questions *q = s->manager->questions;
        const char *text = NULL, *priority = "normal";
        _cleanup_(json_decrefp) json_t *result = NULL;
        StoreInteraction rec;
        Interaction *i;
        char id[37];
        CoreError e;
        int r;

        r = params_only(params, known, &e);
        if (r >= 0)
                r = param_text(params, "message", &text, &e);
        if (r >= 0)
                r = param_enum(params, "priority", priorities, &priority, &e);
        if (r < 0)
                return refuse(s, call, JSONRPC_INVALID_PARAMS, "a notice", e.message);
        if (!notice_allowed(q, s))
                return refuse(
                        s,
                        call,
                        CHANNEL_ERROR_REFUSED,
                        "a notice",
                        "at most 10 notices a minute per session (SPEC.md 2.7.9): this one is refused; wait a minute");
        r = new_id(id);
        if (r < 0)
                return call_error(call, CHANNEL_ERROR_FAILED, "could not make an id: %s", strerror(-r));
        /* With nobody to post it to, it is done once stored: the surfaces list it. */
        r = record_new(&rec, s, id, "notification", text, q->sink ? "pending" : "completed", priority);
        if (r < 0)
                return call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
        rec.max_attempts = 1;
        rec.handed_over = true;
        rec.posted = !q->sink;
        r = interaction_create(q, &i, &rec);
        if (r < 0)
                return call_error(
                        call, CHANNEL_ERROR_FAILED, "could not store the notice: %s", strerror(-r));
        audit_log(
                AUDIT_EVENT_NOTICE,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "session %s: notice %s (%s, %zu characters)",
                s->id,
                id,
                priority,
                utf8_chars(text));
        result = json_pack("{s:s, s:b}", "interaction_id", id, "success", true);
        channel_call_reply(call, result);
        if (!q->sink) {
                interaction_forget(i);
                return 0;
        }
        interaction_post(i);
        return 0;
}

static int add_waiter(Interaction *i, ChannelCall *call) {
        Waiter *w;

        (void) waiters_prune(i);
        if (i->n_waiters >= QUESTIONS_WAITERS_MAX)
                return -EUSERS;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->call = call;
        w->next = i->waiters;
        i->waiters = w;
        i->n_waiters++;
        return 0;
}

static int call_ask(Session *s, json_t *params, ChannelCall *call) {
        Questions *q = s->manager->questions;
        _cleanup_free_ char *tool = NULL;
        StoreInteraction rec;
        Interaction *i;
        AskParams a;
        char id[37];
        unsigned n;
        CoreError e;
        int r;

        r = parse_ask(q, params, &a, &e);
        if (r < 0)
                return refuse(s, call, JSONRPC_INVALID_PARAMS, "a question", e.message);
        n = pending_questions(q, s->id);
        if (n >= s->manager->config.max_pending_questions) {
                char m[256];

                (void) snprintf(
                        m,
                        sizeof(m),
                        "session %s has %u questions pending, the configured MaxPendingQuestionsPerSession; wait for an answer",
                        s->id,
                        n);
                return refuse(s, call, CHANNEL_ERROR_REFUSED, "a question", m);
        }
        if (a.tool) {
                tool = json_dumps(a.tool, JSON_COMPACT | JSON_SORT_KEYS);
                if (!tool)
                        return call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
        }
        r = new_id(id);
        if (r < 0)
                return call_error(call, CHANNEL_ERROR_FAILED, "could not make an id: %s", strerror(-r));
        r = record_new(&rec, s, id, a.kind, a.text, "pending", a.priority);
        if (r >= 0 && a.late_delivery && !(rec.late_delivery = strdup(a.late_delivery)))
                r = -ENOMEM;
        if (r < 0) {
                store_interaction_done(&rec);
                return call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
        }
        rec.max_attempts = a.max_attempts;
        rec.timeout_sec = a.timeout_sec;
        rec.deadline_usec = rec.created_usec + (uint64_t) a.timeout_sec * USEC_PER_SEC;
        rec.tool_json = TAKE_PTR(tool);
        r = interaction_create(q, &i, &rec);
        if (r < 0)
                return call_error(
                        call, CHANNEL_ERROR_FAILED, "could not store the question: %s", strerror(-r));
        audit_log(
                AUDIT_EVENT_QUESTION,
                s->id,
                s->parent_id,
                s->unit,
                (uid_t) -1,
                "session %s: %s %s asked (%s, %u attempt(s) of %u s)",
                s->id,
                a.kind,
                id,
                a.priority,
                a.max_attempts,
                a.timeout_sec);
        (void) add_waiter(i, call);
        (void) interaction_arm(i);
        interaction_publish(i);
        interaction_post(i);
        return 0;
}

static int call_wait(Session *s, json_t *params, ChannelCall *call) {
        static const char *const known[] = { "interaction_id", NULL };
        Questions *q = s->manager->questions;
        json_t *v = json_object_get(params, "interaction_id");
        Interaction *i;
        CoreError e;
        int r;

        r = params_only(params, known, &e);
        if (r < 0)
                return call_error(call, JSONRPC_INVALID_PARAMS, "%s", e.message);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 64)
                return call_error(
                        call,
                        JSONRPC_INVALID_PARAMS,
                        "interaction_id must be the id human.ask answered with");
        i = hashmap_get(q->open, json_string_value(v));
        if (i && streq(i->rec.session_id, s->id) && !is_notice(i)) {
                r = add_waiter(i, call);
                if (r < 0)
                        return call_error(
                                call,
                                CHANNEL_ERROR_REFUSED,
                                "question %s already has %d calls waiting on it",
                                i->rec.id,
                                QUESTIONS_WAITERS_MAX);
                if (!streq(i->rec.status, "pending")) {
                        i->late_timer = sd_event_source_disable_unref(i->late_timer);
                        interaction_finish(i);
                }
                return 0;
        }
        {
                /* Handed over already (or queued as a prompt): the outcome again, from the store. */
                _cleanup_(store_interaction_done) StoreInteraction rec = {};
                _cleanup_(json_decrefp) json_t *result = NULL;

                r = store_interaction_load(s->manager->store, json_string_value(v), &rec);
                if (r < 0)
                        return call_error(
                                call, CHANNEL_ERROR_FAILED, "could not read the store: %s", strerror(-r));
                if (r == 0 || !streq(rec.session_id, s->id) || streq(rec.type, "notification") ||
                    streq(rec.status, "pending"))
                        return call_error(
                                call,
                                CHANNEL_ERROR_NO_CHILD,
                                "no question %.64s in this session",
                                json_string_value(v));
                result = interaction_result(&rec);
                if (!result)
                        return call_error(call, CHANNEL_ERROR_FAILED, "out of memory");
                channel_call_reply(call, result);
        }
        return 0;
}

void questions_call(Session *s, const char *method, json_t *params, ChannelCall *call) {
        if (!s->manager->questions)
                channel_call_error(call, CHANNEL_ERROR_FAILED, "the daemon has no questions store");
        else if (streq(method, "human.notify"))
                (void) call_notify(s, params, call);
        else if (streq(method, "human.ask"))
                (void) call_ask(s, params, call);
        else if (streq(method, "human.wait"))
                (void) call_wait(s, params, call);
        else
                channel_call_error(call, JSONRPC_METHOD_NOT_FOUND, "Unknown method \"%.64s\"", method);
}

/* ---- answers from the surfaces ---- */

int questions_session_of(Questions *q, const char *id, char **ret_session_id) {
        _cleanup_(store_interaction_done) StoreInteraction rec = {};
        Interaction *i = hashmap_get(q->open, id);
        int r;

        if (i) {
                *ret_session_id = strdup(i->rec.session_id);
                return *ret_session_id ? 0 : -ENOMEM;
        }
        r = store_interaction_load(q->manager->store, id, &rec);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        *ret_session_id = TAKE_PTR(rec.session_id);
        return 0;
}

/* The refusal of an answer to a question that has its outcome: answered (and where), or timed out. */
static int already_closed(CoreError *e, const StoreInteraction *rec) {
        bool timed_out = streq(rec->status, "timeout");

        return core_error(
                e,
                -EALREADY,
                CORE_ERROR_BAD_STATE,
                "question %s was already %s%s%s",
                rec->id,
                timed_out ? "closed: it timed out" : "answered",
                rec->answered_surface && !timed_out ? " on " : "",
                rec->answered_surface && !timed_out ? rec->answered_surface : "");
}

int questions_answer(
        Questions *q,
        const char *session_id,
        const char *id,
        const char *text,
        const char *surface,
        const char *who,
        uid_t uid,
        CoreError *e) {
        Interaction *i = id ? hashmap_get(q->open, id) : NULL;
        _cleanup_free_ char *said = NULL;
        const char *answer = text;
        Session *s;
        size_t n;
        int r;

        if (!i || is_notice(i) || (session_id && !streq(i->rec.session_id, session_id))) {
                _cleanup_(store_interaction_done) StoreInteraction rec = {};

                r = id ? store_interaction_load(q->manager->store, id, &rec) : 0;
                if (r > 0 && !streq(rec.type, "notification") &&
                    (!session_id || streq(rec.session_id, session_id)))
                        return already_closed(e, &rec);
                return core_error(
                        e,
                        -ENOENT,
                        CORE_ERROR_NO_SUCH_SESSION,
                        "no question %.64s%s%s",
                        strempty(id),
                        session_id ? " in session " : "",
                        strempty(session_id));
        }
        if (!streq(i->rec.status, "pending"))
                return already_closed(e, &i->rec);
        n = text ? utf8_chars(text) : 0;
        if (n < 1 || n > QUESTIONS_TEXT_MAX)
                return core_error(
                        e,
                        -EINVAL,
                        CORE_ERROR_INVALID_CONFIG,
                        "an answer must be 1-%d characters, got %zu",
                        QUESTIONS_TEXT_MAX,
                        n);
        if (is_permission(i)) {
                if (strcasecmp(text, "allow") == 0)
                        answer = "allow";
                else if (strcasecmp(text, "deny") == 0)
                        answer = "deny";
                else
                        return core_error(
                                e,
                                -EINVAL,
                                CORE_ERROR_INVALID_CONFIG,
                                "question %s asks for a permission: the only answers are allow and deny",
                                id);
        }
        s = interaction_session(i);
        free(i->rec.status);
        i->rec.status = strdup("answered");
        r = set_string(&i->rec.response, answer);
        if (r >= 0)
                r = set_string(&i->rec.answered_surface, surface);
        if (r >= 0)
                r = set_string(&i->rec.answered_by, who);
        if (r < 0 || !i->rec.status)
                return core_error(e, -ENOMEM, CORE_ERROR_FAILED, "out of memory");
        i->rec.answered_usec = now_usec(CLOCK_REALTIME);
        i->rec.deadline_usec = 0;
        r = interaction_save(i);
        if (r < 0)
                return core_error(e, r, CORE_ERROR_FAILED, "could not store the answer: %s", strerror(-r));
        audit_log(
                AUDIT_EVENT_ANSWER,
                i->rec.session_id,
                s ? s->parent_id : NULL,
                s ? s->unit : NULL,
                uid,
                "session %s: question %s answered on %s by %s%s%s",
                i->rec.session_id,
                id,
                surface,
                who ? who : "someone unknown",
                is_permission(i) ? ": " : "",
                is_permission(i) ? answer : "");
        if (q->sink && !streq(surface, q->sink->vtable->surface)) {
                if (i->watch_op) {
                        q->sink->vtable->cancel(q->sink->sink, i->watch_op);
                        i->watch_op = NULL;
                }
                if (asprintf(&said, "Answered on %s%s%s.", surface, who ? " by " : "", strempty(who)) >= 0)
                        interaction_say_in_thread(i, said);
        }
        interaction_publish(i);
        interaction_finish(i);
        return 0;
}

static int list_one(const StoreInteraction *rec, void *userdata) {
        json_t *a = userdata;
        json_t *o;

        o = interaction_to_json(rec);
        return o && json_array_append_new(a, o) >= 0 ? 0 : -ENOMEM;
}

static int list_pending(const StoreInteraction *rec, void *userdata) {
        if (streq(rec->type, "notification") || !streq(rec->status, "pending"))
                return 0;
        return list_one(rec, userdata);
}

int questions_list(Questions *q, const char *session_id, bool pending_only, unsigned limit, json_t **ret) {
        _cleanup_(json_decrefp) json_t *a = json_array();
        int r;

        if (!a)
                return -ENOMEM;
        r = store_load_interactions(
                q->manager->store,
                session_id,
                pending_only,
                pending_only ? 0 : limit,
                pending_only ? list_pending : list_one,
                a);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

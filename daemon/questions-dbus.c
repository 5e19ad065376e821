/* The D-Bus surface of the questions (questions.h, docs/dbus-api.md): on each Session object
 * ListQuestions, Answer and the signals QuestionAsked and QuestionClosed, in a vtable of its own on the
 * Session interface; on the Manager ListQuestions (of every session the caller sees) and AnswerQuestion
 * (by the question's id alone, for ccdockerctl). Answering is authorised as SendPrompt is
 * (session_authorize()); listing as GetOutput is. Only marshalling here: the core decides. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "manager-dbus.h"
#include "manager.h"
#include "polkit.h"
#include "questions.h"
#include "session-dbus.h"
#include "util.h"

#define SESSION_PATH "/org/ccdocker1/session"
#define SESSION_INTERFACE "org.ccdocker1.Session"
#define MANAGER_INTERFACE "org.ccdocker1.Manager"
/* What one ListQuestions answers at most, newest first. */
#define LIST_MAX 200

/* Answer's options: surface ("dbus", "ctl" or "http"; default "dbus") and who (the answerer as the
 * caller knows it, such as an HTTP token's name), each a string. */
static int read_answer(
        sd_bus_message *message,
        const char **id,
        const char **text,
        const char **surface,
        const char **who) {
        int r;

        *surface = "dbus";
        *who = NULL;
        r = sd_bus_message_read(message, "ss", id, text);
        if (r >= 0)
                r = sd_bus_message_enter_container(message, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                const char *key;

                r = sd_bus_message_read(message, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "surface"))
                        r = sd_bus_message_read(message, "v", "s", surface);
                else if (streq(key, "who"))
                        r = sd_bus_message_read(message, "v", "s", who);
                else
                        return -EBADR;
                if (r >= 0)
                        r = sd_bus_message_exit_container(message);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;
        if (!streq(*surface, "dbus") && !streq(*surface, "ctl") && !streq(*surface, "http"))
                return -EDOM;
        if (*who && (strlen(*who) == 0 || strlen(*who) > 128))
                return -ERANGE;
        return 0;
}

static int answer_args_error(sd_bus_error *error, const char *method, int r) {
        return sd_bus_error_setf(
                error,
                SD_BUS_ERROR_INVALID_ARGS,
                "%s: %s",
                method,
                r == -EBADR            ? "the options are surface (s) and who (s)"
                        : r == -EDOM   ? "option surface must be dbus, ctl or http"
                        : r == -ERANGE ? "option who must be 1-128 bytes"
                                       : strerror(-r));
}

static void do_answer(Session *s, sd_bus_message *message, uid_t caller) {
        const char *id, *text, *surface, *who;
        _cleanup_free_ char *answerer = NULL;
        const char *member = sd_bus_message_get_member(message);
        CoreError e;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = read_answer(message, &id, &text, &surface, &who);
        if (r < 0) {
                (void) sd_bus_reply_method_errorf(
                        message, SD_BUS_ERROR_INVALID_ARGS, "%s: %s", member, strerror(-r));
                return;
        }
        if (asprintf(
                    &answerer,
                    "%s%suid %u%s",
                    strempty(who),
                    who ? " (" : "",
                    (unsigned) caller,
                    who ? ")" : "") < 0) {
                (void) sd_bus_reply_method_errno(message, -ENOMEM, NULL);
                return;
        }
        r = questions_answer(s->manager->questions, s->id, id, text, surface, answerer, caller, &e);
        if (r < 0)
                (void) bus_reply_core_error(message, member, &e);
        else
                (void) sd_bus_reply_method_return(message, NULL);
}

static int method_answer(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *id, *text, *surface, *who;
        int r;

        r = read_answer(message, &id, &text, &surface, &who);
        if (r < 0)
                return answer_args_error(error, "Answer", r);
        return session_authorize(userdata, message, "Answer", do_answer, error);
}

static int reply_json(sd_bus_message *message, json_t *j) {
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);

        if (!text)
                return -ENOMEM;
        return sd_bus_reply_method_return(message, "s", text);
}

static void do_list(Session *s, sd_bus_message *message, uid_t caller) {
        _cleanup_(json_decrefp) json_t *list = NULL;
        int pending = 0, r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "b", &pending);
        if (r >= 0)
                r = questions_list(s->manager->questions, s->id, pending, LIST_MAX, &list);
        if (r >= 0)
                r = reply_json(message, list);
        if (r < 0)
                (void) sd_bus_reply_method_errorf(
                        message,
                        SD_BUS_ERROR_FAILED,
                        "ListQuestions: could not list them: %s",
                        strerror(-r));
}

static int method_list(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int pending, r;

        r = sd_bus_message_read(message, "b", &pending);
        if (r < 0)
                return r;
        return session_authorize(userdata, message, "ListQuestions", do_list, error);
}

static const sd_bus_vtable session_questions_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS(
                "ListQuestions",
                SD_BUS_ARGS("b", pending_only),
                SD_BUS_RESULT("s", questions),
                method_list,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "Answer",
                SD_BUS_ARGS("s", interaction_id, "s", text, "a{sv}", options),
                SD_BUS_NO_RESULT,
                method_answer,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("QuestionAsked", SD_BUS_ARGS("s", interaction_id, "s", kind, "s", text), 0),
        SD_BUS_SIGNAL_WITH_ARGS("QuestionClosed", SD_BUS_ARGS("s", interaction_id, "s", status), 0),
        SD_BUS_VTABLE_END,
};

/* ---- the Manager ---- */

static int manager_list_reply(Manager *m, sd_bus_message *message, uid_t uid, bool all) {
        _cleanup_(json_decrefp) json_t *list = NULL, *seen = json_array();
        int pending = 0, r;
        size_t i;
        json_t *q;

        if (!seen)
                return -ENOMEM;
        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = sd_bus_message_read(message, "b", &pending);
        if (r >= 0)
                r = questions_list(m->questions, NULL, pending, LIST_MAX, &list);
        if (r < 0)
                return r;
        json_array_foreach (list, i, q) {
                Session *s = manager_get_session(m, json_string_value(json_object_get(q, "session_id")));

                if (s && (all || manager_caller_sees(m, uid, s)) && json_array_append(seen, q) < 0)
                        return -ENOMEM;
        }
        return reply_json(message, seen);
}

typedef struct ListRequest {
        Manager *manager;
        uid_t uid;
} ListRequest;

static void on_list_authorized(int r, sd_bus_message *call, const sd_bus_error *error, void *userdata) {
        ListRequest *req = userdata;

        /* Not allowed (or polkit could not say): the caller sees its own sessions' questions only. */
        if (r > 0)
                manager_admin_seen(req->manager, req->uid);
        r = manager_list_reply(req->manager, call, req->uid, false);
        if (r < 0)
                (void) sd_bus_reply_method_errno(call, r, NULL);
        free(req);
}

static int method_manager_list(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        ListRequest *req;
        int pending, r;
        uid_t uid = 0;

        r = sd_bus_message_read(message, "b", &pending);
        if (r < 0)
                return r;
        if (m->config.mode == DAEMON_USER)
                return manager_list_reply(m, message, uid, true);
        r = bus_message_caller_uid(message, &uid);
        if (r < 0)
                return sd_bus_error_setf(
                        error,
                        SD_BUS_ERROR_ACCESS_DENIED,
                        "ListQuestions: could not identify the caller: %s",
                        strerror(-r));
        if (uid == 0)
                return manager_list_reply(m, message, uid, true);
        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (ListRequest){ .manager = m, .uid = uid };
        r = polkit_check_async(m->bus, message, POLKIT_ACTION_MANAGE_ANY, NULL, on_list_authorized, req);
        if (r < 0) {
                free(req);
                return manager_list_reply(m, message, uid, false);
        }
        return 1;
}

static int method_manager_answer(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *id, *text, *surface, *who;
        _cleanup_free_ char *session_id = NULL;
        Session *s;
        int r;

        r = read_answer(message, &id, &text, &surface, &who);
        if (r < 0)
                return answer_args_error(error, "AnswerQuestion", r);
        r = questions_session_of(m->questions, id, &session_id);
        s = r >= 0 ? manager_get_session(m, session_id) : NULL;
        if (!s)
                return sd_bus_error_setf(
                        error, CCDOCKER_ERROR_NO_SUCH_SESSION, "AnswerQuestion: no question '%.64s'", id);
        return session_authorize(s, message, "AnswerQuestion", do_answer, error);
}

static const sd_bus_vtable manager_questions_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS(
                "ListQuestions",
                SD_BUS_ARGS("b", pending_only),
                SD_BUS_RESULT("s", questions),
                method_manager_list,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS(
                "AnswerQuestion",
                SD_BUS_ARGS("s", interaction_id, "s", text, "a{sv}", options),
                SD_BUS_NO_RESULT,
                method_manager_answer,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int questions_dbus_attach(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(
                m->bus, NULL, "/org/ccdocker1", MANAGER_INTERFACE, manager_questions_vtable, m);
        if (r < 0)
                return log_error_errno(r, "could not publish the Manager's questions: %m");
        r = sd_bus_add_fallback_vtable(
                m->bus,
                NULL,
                SESSION_PATH,
                SESSION_INTERFACE,
                session_questions_vtable,
                session_object_find,
                m);
        if (r < 0)
                return log_error_errno(r, "could not publish the Sessions' questions: %m");
        return 0;
}

void questions_dbus_question(
        Manager *m, Session *s, const char *id, const char *kind, const char *status, const char *text) {
        int r;

        if (!m->bus || !s->object_path)
                return;
        if (streq(status, "pending"))
                r = sd_bus_emit_signal(
                        m->bus, s->object_path, SESSION_INTERFACE, "QuestionAsked", "sss", id, kind, text);
        else
                r = sd_bus_emit_signal(
                        m->bus, s->object_path, SESSION_INTERFACE, "QuestionClosed", "ss", id, status);
        if (r < 0)
                log_debug_errno(r, "session %s: could not emit the signal of question %s: %m", s->id, id);
}

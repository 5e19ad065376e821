/* The REST routes of the questions a session asks a human (docs/api.md "Questions"): list a session's
 * pending questions, list those of every session in the token's scope, and answer one. Each is one
 * D-Bus call of ccdockerd (ListQuestions, Answer; docs/dbus-api.md) after the token's scope is checked,
 * as for the other session routes; the answer is recorded with surface "http" and the token. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#define QUESTIONS_PATH "/api/v1/sessions/"

static bool questions_reply_failed(Request *req, sd_bus_message *m) {
        req->slot = sd_bus_slot_unref(req->slot);
        if (!sd_bus_message_is_method_error(m, NULL))
                return false;
        request_reply_bus_error(req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
        return true;
}

/* The "s" (a JSON array) of ListQuestions, kept to the sessions of the token's scope. */
static int on_listed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        _cleanup_(json_decrefp) json_t *list = NULL, *seen = json_array();
        const char *text;
        size_t i;
        json_t *q;
        int r;

        if (questions_reply_failed(req, m))
                return 0;
        r = sd_bus_message_read(m, "s", &text);
        if (r >= 0)
                list = json_loads(text, 0, NULL);
        if (!json_is_array(list) || !seen) {
                request_reply_error(req, 502, "daemon_error", "ccdockerd sent an unexpected reply");
                return 0;
        }
        json_array_foreach (list, i, q) {
                const char *sid = json_string_value(json_object_get(q, "session_id"));

                /* A session whose parents are not known yet is left out, as by GET /api/v1/sessions
                 * before the cache has them. */
                if (sid && scope_check(req->server, req->token_id, sid) > 0 &&
                    json_array_append(seen, q) < 0) {
                        request_reply_error(req, 500, "internal_error", "out of memory");
                        return 0;
                }
        }
        request_reply_json(req, 200, json_pack("{s:O}", "questions", seen));
        return 0;
}

/* ListQuestions of the object path (the Manager's, or the session's) with all=true's pending_only. */
static void list_questions(Request *req, const char *path, const char *interface) {
        int r;

        r = sd_bus_call_method_async(
                req->server->bus,
                &req->slot,
                BUS_NAME,
                path,
                interface,
                "ListQuestions",
                on_listed,
                req,
                "b",
                !streq_ptr(request_arg(req, "all"), "true"));
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

static void list_in_scope(Request *req) {
        _cleanup_free_ char *path = NULL;

        if (sd_bus_path_encode(SESSION_PATH_PREFIX, req->id, &path) < 0)
                request_reply_bus_error(req, NULL, -ENOMEM);
        else
                list_questions(req, path, SESSION_INTERFACE);
}

void route_questions(Request *req) {
        request_check_scope(req, list_in_scope);
}

void route_all_questions(Request *req) {
        /* The scope of each question's session is checked in the reply; the parents of sessions made
         * through this token are in the cache from their creation. */
        list_questions(req, MANAGER_PATH, MANAGER_INTERFACE);
}

static int on_answered(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;

        if (questions_reply_failed(req, m))
                return 0;
        request_reply_json(req, 200, json_pack("{s:b}", "answered", true));
        return 0;
}

/* The question id of .../questions/{qid}/answer, which the route table matched as a second {id}. */
static int path_question(const char *path, char **ret_session, char **ret_question) {
        const char *p = startswith(path, QUESTIONS_PATH), *q, *end;

        if (!p)
                return -EINVAL;
        q = strstr(p, "/questions/");
        if (!q)
                return -EINVAL;
        end = strchr(q + strlen("/questions/"), '/');
        if (!end || !streq(end, "/answer"))
                return -EINVAL;
        *ret_session = strndup(p, (size_t) (q - p));
        *ret_question = strndup(q + strlen("/questions/"), (size_t) (end - q - strlen("/questions/")));
        if (!*ret_session || !*ret_question) {
                *ret_session = mfree(*ret_session);
                *ret_question = mfree(*ret_question);
                return -ENOMEM;
        }
        return 0;
}

static void answer_in_scope(Request *req) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *path = NULL, *sid = NULL, *qid = NULL, *who = NULL;
        const char *key;
        json_t *v, *text;
        int r;

        json_object_foreach (req->json, key, v)
                if (!streq(key, "text")) {
                        request_reply_error(req, 400, "invalid_body", "unknown field '%.64s'", key);
                        return;
                }
        text = json_object_get(req->json, "text");
        if (!json_is_string(text)) {
                request_reply_error(
                        req, 400, "invalid_body", "field 'text' is required: a string of 1-2000 characters");
                return;
        }
        r = path_question(req->path, &sid, &qid);
        if (r < 0 || asprintf(&who, "http token #%lld", (long long) req->token_id) < 0) {
                request_reply_error(req, 404, "not_found", "no such question");
                return;
        }
        r = sd_bus_path_encode(SESSION_PATH_PREFIX, sid, &path);
        if (r >= 0)
                r = sd_bus_message_new_method_call(
                        req->server->bus, &m, BUS_NAME, path, SESSION_INTERFACE, "Answer");
        if (r >= 0)
                r = sd_bus_message_append(
                        m,
                        "ssa{sv}",
                        qid,
                        json_string_value(text),
                        2,
                        "surface",
                        "s",
                        "http",
                        "who",
                        "s",
                        who);
        if (r >= 0)
                r = sd_bus_call_async(req->server->bus, &req->slot, m, on_answered, req, 0);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

void route_answer(Request *req) {
        _cleanup_free_ char *sid = NULL, *qid = NULL;

        /* req->id is the last {id} of the path, the question's: the scope is the session's. */
        if (path_question(req->path, &sid, &qid) < 0) {
                request_reply_error(req, 404, "not_found", "no such question");
                return;
        }
        free(req->id);
        req->id = TAKE_PTR(sid);
        request_check_scope(req, answer_in_scope);
}

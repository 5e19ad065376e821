/* GET /api/v1/events: the changes to every session in the token's scope, as Server-Sent Events, for the
 * dashboard's tree (docs/api.md, "The tree's events"). One set of bus matches for all clients: the
 * daemon's PropertiesChanged of each session (the properties that changed, as GET shows them), SessionNew
 * (the whole session, after one GetAll, which also teaches the parent cache the new session's parent so
 * that a child spawned by a session in scope is in scope at once), SessionRemoved, and each session's
 * QuestionAsked and QuestionClosed. Each event goes to the clients whose token sees the session; nothing
 * is replayed: a client reads GET /api/v1/sessions after it has connected, and fetches any session it
 * hears of and does not know. A client whose token is revoked is ended (reason "token revoked") at the
 * next event or ping. Each client queues at most --stream-queue bytes (then it gets
 * "event: end" with reason "too slow" and reconnects) and gets a comment line every PING_INTERVAL, which
 * is how a client that went away is noticed. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#define PING_INTERVAL_USEC (20ULL * 1000000ULL)

typedef struct EventClient EventClient;

struct Events {
        Server *server;
        EventClient *clients;
        sd_bus_slot *match_changed, *match_new, *match_removed, *match_asked, *match_closed;
        sd_event_source *ping;
};

struct EventClient {
        Events *events; /* NULL once the server stops */
        EventClient *prev, *next;
        int64_t token_id;
        struct MHD_Connection *connection;
        bool suspended, done;
        char *out;
        size_t out_start, out_end, out_cap;
};

static void client_unlink(EventClient *c) {
        Events *e = c->events;

        if (!e)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else
                e->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->events = NULL;
}

static void client_wake(EventClient *c, Server *s) {
        if (!c->suspended)
                return;
        c->suspended = false;
        MHD_resume_connection(c->connection);
        server_kick(s);
}

/* force: past the bound (the last words to a client that is dropped). */
static int client_append(EventClient *c, Server *s, const char *text, size_t len, bool force) {
        if (!force && c->out_end - c->out_start + len > s->limits.stream_queue)
                return -ENOBUFS;
        if (c->out_start > 0 && c->out_end + len > c->out_cap) {
                memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
                c->out_end -= c->out_start;
                c->out_start = 0;
        }
        if (c->out_end + len > c->out_cap) {
                size_t cap = c->out_cap ?: 4096;
                char *p;

                while (cap < c->out_end + len)
                        cap *= 2;
                p = realloc(c->out, cap);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_end, text, len);
        c->out_end += len;
        return 0;
}

static void client_end(EventClient *c, Server *s, const char *reason) {
        _cleanup_free_ char *text = NULL;

        if (asprintf(&text, "event: end\ndata: {\"reason\":\"%s\"}\n\n", reason) >= 0)
                (void) client_append(c, s, text, strlen(text), true);
        c->done = true;
        client_unlink(c);
        client_wake(c, s);
}

static ssize_t client_read(void *cls, uint64_t pos, char *buf, size_t max) {
        EventClient *c = cls;
        size_t n = c->out_end - c->out_start;

        if (n > 0) {
                if (n > max)
                        n = max;
                memcpy(buf, c->out + c->out_start, n);
                c->out_start += n;
                if (c->out_start == c->out_end)
                        c->out_start = c->out_end = 0;
                return (ssize_t) n;
        }
        if (c->done)
                return MHD_CONTENT_READER_END_OF_STREAM;
        c->suspended = true;
        MHD_suspend_connection(c->connection);
        return 0;
}

static void client_free(void *cls) {
        EventClient *c = cls;

        client_unlink(c);
        free(c->out);
        free(c);
}

/* Sends "event: NAME" with data to every client that sees session id. data is taken. */
static void broadcast(Events *e, const char *name, const char *id, json_t *data) {
        _cleanup_free_ char *json = NULL, *text = NULL;
        Server *s = e->server;
        EventClient *next;

        if (data)
                json = json_dumps(data, JSON_COMPACT);
        json_decref(data);
        if (!json || asprintf(&text, "event: %s\ndata: %s\n\n", name, json) < 0) {
                log_oom();
                return;
        }
        for (EventClient *c = e->clients; c; c = next) {
                next = c->next;
                if (token_store_has_id(s->tokens, c->token_id) <= 0) {
                        client_end(c, s, "token revoked");
                        continue;
                }
                if (scope_check(s, c->token_id, id) <= 0)
                        continue;
                if (client_append(c, s, text, strlen(text), false) < 0) {
                        log_info("Dropping a client of /api/v1/events that does not read: too slow.");
                        metrics_refusal(s->metrics, "slow_client");
                        client_end(c, s, "too slow");
                        continue;
                }
                client_wake(c, s);
        }
}

static int on_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Events *e = userdata;
        _cleanup_free_ char *id = session_path_to_id(sd_bus_message_get_path(m));
        json_t *o;
        const char *iface;

        if (!id || !e->clients || sd_bus_message_read(m, "s", &iface) < 0 ||
            !streq(iface, SESSION_INTERFACE))
                return 0;
        o = json_object();
        if (!o || session_json_update(m, o) < 0) {
                json_decref(o);
                return 0;
        }
        broadcast(e, "session", id, json_pack("{s:s,s:s,s:o}", "id", id, "change", "changed", "session", o));
        return 0;
}

/* A GetAll of a new session: its id (a method reply carries no path). Freed with its floating slot. */
typedef struct NewSession {
        Events *events;
        char id[];
} NewSession;

static int on_new_session(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        NewSession *n = userdata;
        Events *e = n->events;
        const char *id = n->id;
        json_t *o, *parent;

        if (sd_bus_message_is_method_error(m, NULL))
                return 0;
        o = json_object();
        if (!o || session_json_update(m, o) < 0) {
                json_decref(o);
                return 0;
        }
        /* Parents never change: learnt here, a child of a session in scope is in scope from now on. */
        parent = json_object_get(o, "parent_id");
        (void) parent_cache_put(
                e->server->parents, id, json_is_string(parent) ? json_string_value(parent) : "");
        if (!parent)
                (void) json_object_set_new(o, "parent_id", json_null());
        broadcast(e, "session", id, json_pack("{s:s,s:s,s:o}", "id", id, "change", "new", "session", o));
        return 0;
}

static int on_session_new(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Events *e = userdata;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        const char *id, *path;
        NewSession *n;
        int r;

        if (!e->clients || sd_bus_message_read(m, "so", &id, &path) < 0)
                return 0;
        n = malloc(sizeof(NewSession) + strlen(id) + 1);
        if (!n)
                return 0;
        n->events = e;
        strcpy(n->id, id);
        r = sd_bus_call_method_async(
                e->server->bus,
                &slot,
                BUS_NAME,
                path,
                "org.freedesktop.DBus.Properties",
                "GetAll",
                on_new_session,
                n,
                "s",
                SESSION_INTERFACE);
        if (r < 0) {
                free(n);
                return 0;
        }
        /* Floating: the bus keeps it until the reply, and frees n with it (also when the bus closes first).
         */
        (void) sd_bus_slot_set_destroy_callback(slot, free);
        (void) sd_bus_slot_set_floating(slot, 1);
        return 0;
}

static int on_session_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Events *e = userdata;
        const char *id, *path;

        if (!e->clients || sd_bus_message_read(m, "so", &id, &path) < 0)
                return 0;
        broadcast(e, "session", id, json_pack("{s:s,s:s}", "id", id, "change", "removed"));
        return 0;
}

static int on_question(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Events *e = userdata;
        _cleanup_free_ char *id = session_path_to_id(sd_bus_message_get_path(m));
        const char *qid, *a, *b = NULL;
        bool asked = streq_ptr(sd_bus_message_get_member(m), "QuestionAsked");

        if (!id || !e->clients)
                return 0;
        if (asked ? sd_bus_message_read(m, "sss", &qid, &a, &b) < 0
                  : sd_bus_message_read(m, "ss", &qid, &a) < 0)
                return 0;
        if (asked)
                broadcast(
                        e,
                        "question",
                        id,
                        json_pack(
                                "{s:s,s:s,s:s,s:s}", "id", id, "interaction_id", qid, "kind", a, "text", b));
        else
                broadcast(
                        e,
                        "question_closed",
                        id,
                        json_pack("{s:s,s:s,s:s}", "id", id, "interaction_id", qid, "status", a));
        return 0;
}

static int on_ping(sd_event_source *source, uint64_t usec, void *userdata) {
        Events *e = userdata;
        EventClient *next;

        for (EventClient *c = e->clients; c; c = next) {
                next = c->next;
                if (token_store_has_id(e->server->tokens, c->token_id) <= 0)
                        client_end(c, e->server, "token revoked");
                else if (client_append(c, e->server, ": ping\n\n", 8, false) < 0)
                        client_end(c, e->server, "too slow");
                else
                        client_wake(c, e->server);
        }
        (void) sd_event_source_set_time_relative(source, PING_INTERVAL_USEC);
        return sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
}

static int events_new(Server *s, Events **ret) {
        Events *e = calloc(1, sizeof(Events));
        int r;

        if (!e)
                return -ENOMEM;
        e->server = s;
        r = sd_bus_add_match_async(
                s->bus,
                &e->match_changed,
                "type='signal',sender='" BUS_NAME "',interface='org.freedesktop.DBus.Properties',"
                "member='PropertiesChanged',path_namespace='" SESSION_PATH_PREFIX "'",
                on_changed,
                NULL,
                e);
        if (r >= 0)
                r = sd_bus_match_signal_async(
                        s->bus,
                        &e->match_new,
                        BUS_NAME,
                        MANAGER_PATH,
                        MANAGER_INTERFACE,
                        "SessionNew",
                        on_session_new,
                        NULL,
                        e);
        if (r >= 0)
                r = sd_bus_match_signal_async(
                        s->bus,
                        &e->match_removed,
                        BUS_NAME,
                        MANAGER_PATH,
                        MANAGER_INTERFACE,
                        "SessionRemoved",
                        on_session_removed,
                        NULL,
                        e);
        if (r >= 0)
                r = sd_bus_add_match_async(
                        s->bus,
                        &e->match_asked,
                        "type='signal',sender='" BUS_NAME "',interface='" SESSION_INTERFACE
                        "',member='QuestionAsked',path_namespace='" SESSION_PATH_PREFIX "'",
                        on_question,
                        NULL,
                        e);
        if (r >= 0)
                r = sd_bus_add_match_async(
                        s->bus,
                        &e->match_closed,
                        "type='signal',sender='" BUS_NAME "',interface='" SESSION_INTERFACE
                        "',member='QuestionClosed',path_namespace='" SESSION_PATH_PREFIX "'",
                        on_question,
                        NULL,
                        e);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        s->event, &e->ping, CLOCK_MONOTONIC, PING_INTERVAL_USEC, 0, on_ping, e);
        if (r < 0) {
                events_free(e);
                return r;
        }
        *ret = e;
        return 0;
}

void events_stop(Server *s) {
        if (!s->events)
                return;
        while (s->events->clients)
                client_end(s->events->clients, s, "server stopping");
}

Events *events_free(Events *e) {
        if (!e)
                return NULL;
        while (e->clients)
                client_unlink(e->clients);
        sd_bus_slot_unref(e->match_changed);
        sd_bus_slot_unref(e->match_new);
        sd_bus_slot_unref(e->match_removed);
        sd_bus_slot_unref(e->match_asked);
        sd_bus_slot_unref(e->match_closed);
        sd_event_source_disable_unref(e->ping);
        free(e);
        return NULL;
}

void route_events(Request *req) {
        const char *accept = request_header(req, MHD_HTTP_HEADER_ACCEPT);
        struct MHD_Response *response;
        Server *s = req->server;
        EventClient *c;
        int r;

        req->streaming = true;
        if (!accept || !strstr(accept, "text/event-stream")) {
                request_reply_error(
                        req,
                        406,
                        "not_acceptable",
                        "/api/v1/events is Server-Sent Events (Accept: text/event-stream)");
                return;
        }
        if (!s->events) {
                r = events_new(s, &s->events);
                if (r < 0) {
                        request_reply_error(
                                req, 500, "internal", "cannot watch the daemon: %s", strerror(-r));
                        return;
                }
        }
        c = calloc(1, sizeof(EventClient));
        if (!c) {
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        c->token_id = req->token_id;
        c->connection = req->connection;
        /* A first comment line, so that the client sees the stream open before the first event. */
        if (client_append(c, s, ": ccdocker-httpd\n\n", 18, true) < 0) {
                client_free(c);
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, client_read, c, client_free);
        if (!response) {
                client_free(c);
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        (void) MHD_add_response_header(response, "Content-Type", "text/event-stream");
        (void) MHD_add_response_header(response, "Cache-Control", "no-store");
        (void) MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
        (void) MHD_add_response_header(response, "X-Accel-Buffering", "no");
        c->events = s->events;
        c->next = s->events->clients;
        if (c->next)
                c->next->prev = c;
        s->events->clients = c;
        request_reply_response(req, 200, response);
}

unsigned events_count(Server *s) {
        unsigned n = 0;

        for (EventClient *c = s->events ? s->events->clients : NULL; c; c = c->next)
                n++;
        return n;
}

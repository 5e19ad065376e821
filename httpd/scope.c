/* What a token may see: the sessions it created (recorded in the token store at POST /sessions and
 * POST .../spawn) and their descendants. A session's parent never changes (ParentId is const), so the
 * parents learned from the daemon's ListSessions are kept in a small hash table and asked again only for
 * a session not seen before. A session outside the scope gets the same 404 as one that does not exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"
#include "session-id.h"
#include "util.h"

#define PARENT_BUCKETS 4096U
/* Deeper chains than the daemon allows are not followed. */
#define SCOPE_MAX_DEPTH 64U

typedef struct ParentEntry {
        struct ParentEntry *next;
        char *id;
        char *parent_id; /* "" for a top-level session */
} ParentEntry;

struct ParentCache {
        ParentEntry *buckets[PARENT_BUCKETS];
};

static size_t bucket_of(const char *id) {
        uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */

        for (; *id; id++) {
                h ^= (unsigned char) *id;
                h *= UINT64_C(1099511628211);
        }
        return (size_t) (h % PARENT_BUCKETS);
}

int parent_cache_new(ParentCache **ret) {
        ParentCache *c = calloc(1, sizeof(ParentCache));

        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

ParentCache *parent_cache_free(ParentCache *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < PARENT_BUCKETS; i++)
                for (ParentEntry *e = c->buckets[i], *next; e; e = next) {
                        next = e->next;
                        free(e->id);
                        free(e->parent_id);
                        free(e);
                }
        free(c);
        return NULL;
}

static const char *parent_cache_get(ParentCache *c, const char *id) {
        for (ParentEntry *e = c->buckets[bucket_of(id)]; e; e = e->next)
                if (streq(e->id, id))
                        return e->parent_id;
        return NULL;
}

int parent_cache_put(ParentCache *c, const char *id, const char *parent_id) {
        size_t b = bucket_of(id);
        ParentEntry *e;

        if (parent_cache_get(c, id))
                return 0;
        e = calloc(1, sizeof(ParentEntry));
        if (!e)
                return -ENOMEM;
        e->id = strdup(id);
        e->parent_id = strdup(parent_id ?: "");
        if (!e->id || !e->parent_id) {
                free(e->id);
                free(e->parent_id);
                free(e);
                return -ENOMEM;
        }
        e->next = c->buckets[b];
        c->buckets[b] = e;
        return 0;
}

int parent_cache_fill(ParentCache *c, sd_bus_message *reply) {
        const char *id, *parent, *state, *unit, *path;
        uint64_t created;
        int r;

        r = sd_bus_message_rewind(reply, true);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ssssto)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ssssto)", &id, &parent, &state, &unit, &created, &path)) >
               0) {
                r = parent_cache_put(c, id, parent);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_rewind(reply, true);
}

int scope_check(Server *s, int64_t token_id, const char *id) {
        const char *cur = id;

        for (unsigned depth = 0; depth < SCOPE_MAX_DEPTH; depth++) {
                int r = token_store_has_session(s->tokens, token_id, cur);

                if (r != 0)
                        return r;
                cur = parent_cache_get(s->parents, cur);
                if (!cur)
                        return -EAGAIN;
                if (isempty(cur))
                        return 0;
        }
        return 0;
}

static void reply_scope(Request *req, int r) {
        request_handler_t next = req->next;

        req->next = NULL;
        if (r > 0)
                next(req);
        else if (r == 0 || r == -EAGAIN)
                request_reply_error(req, 404, "not_found", "no such session");
        else
                request_reply_error(req, 503, "unavailable", "the token store cannot be read");
}

static int on_list_sessions(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;
        int r;

        req->slot = sd_bus_slot_unref(req->slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                request_reply_bus_error(req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
                return 0;
        }
        r = parent_cache_fill(req->server->parents, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to read ListSessions' reply: %m");
                request_reply_error(req, 502, "daemon_error", "ccdockerd sent an unexpected reply");
                return 0;
        }
        reply_scope(req, scope_check(req->server, req->token_id, req->id));
        return 0;
}

void request_check_scope(Request *req, request_handler_t next) {
        int r;

        if (!session_id_is_valid(req->id)) {
                request_reply_error(req, 404, "not_found", "no such session");
                return;
        }
        req->next = next;
        r = scope_check(req->server, req->token_id, req->id);
        if (r != -EAGAIN) {
                reply_scope(req, r);
                return;
        }

        r = sd_bus_call_method_async(
                req->server->bus,
                &req->slot,
                BUS_NAME,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "ListSessions",
                on_list_sessions,
                req,
                NULL);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

/* What a token may see: the sessions it created (recorded in the token store at POST /sessions and
 * POST .../spawn) and their descendants. A session's parent never changes (ParentId is const), so the
 * parents learned from the daemon's ListSessions are kept in a hashmap (common/hashmap.h) and asked
 * again only for a session not seen before. A session outside the scope gets the same 404 as one that does
 * not exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "hashmap.h"
#include "httpd.h"
#include "log.h"
#include "session-id.h"
#include "util.h"

/* Deeper chains than the daemon allows are not followed. */
#define SCOPE_MAX_DEPTH 64U

typedef struct ParentEntry {
        char *id;        /* the key */
        char *parent_id; /* "" for a top-level session */
} ParentEntry;

struct ParentCache {
        Hashmap *entries; /* ParentEntry by id */
};

static ParentEntry *parent_entry_free(ParentEntry *e) {
        if (!e)
                return NULL;
        free(e->id);
        free(e->parent_id);
        free(e);
        return NULL;
}

int parent_cache_new(ParentCache **ret) {
        ParentCache *c = calloc(1, sizeof(ParentCache));

        if (!c)
                return -ENOMEM;
        c->entries = hashmap_new();
        if (!c->entries) {
                free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

ParentCache *parent_cache_free(ParentCache *c) {
        ParentEntry *e;
        Iterator i;

        if (!c)
                return NULL;
        HASHMAP_FOREACH(e, c->entries, i)
        parent_entry_free(hashmap_remove(c->entries, e->id));
        hashmap_free(c->entries);
        free(c);
        return NULL;
}

static const char *parent_cache_get(ParentCache *c, const char *id) {
        ParentEntry *e = hashmap_get(c->entries, id);

        return e ? e->parent_id : NULL;
}

int parent_cache_put(ParentCache *c, const char *id, const char *parent_id) {
        ParentEntry *e;
        int r;

        if (parent_cache_get(c, id))
                return 0;
        e = calloc(1, sizeof(ParentEntry));
        if (!e)
                return -ENOMEM;
        e->id = strdup(id);
        e->parent_id = strdup(parent_id ?: "");
        r = e->id && e->parent_id ? hashmap_put(c->entries, e->id, e) : -ENOMEM;
        if (r < 0) {
                parent_entry_free(e);
                return r;
        }
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

/* The session property cache: GET /api/v1/sessions/{id} is answered from here, without a D-Bus round
 * trip. An entry is the session's JSON object, filled from one GetAll and kept current by the daemon's
 * PropertiesChanged signals (every property the object shows is const or emits its change), dropped on
 * SessionRemoved, on a property the daemon only invalidates, and all at once when ccdockerd's bus name
 * changes owner. All of these come from the daemon's one connection, in the order it sent them, so the
 * last message applied is the newest state: a GetAll reply replaces the entry, a signal updates it, and a
 * signal for a session with no entry is ignored (its first GET asks). The bus is dispatched before HTTP
 * (ccdocker-httpd.c gives it the higher priority), so a GET is answered after every signal that had
 * reached us when it arrived. At most CACHE_MAX_ENTRIES sessions are kept; beyond that a GET asks. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "hashmap.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#define CACHE_MAX_ENTRIES 65536U

typedef struct CacheEntry {
        char *id; /* the key */
        json_t *session;
} CacheEntry;

struct SessionCache {
        Hashmap *entries; /* CacheEntry by id */
        sd_bus_slot *match_changed, *match_removed, *match_owner;
        uint64_t hits, misses;
};

SessionCache *session_cache_free(SessionCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SessionCache *, session_cache_free);

static CacheEntry *cache_entry_free(CacheEntry *e) {
        if (!e)
                return NULL;
        json_decref(e->session);
        free(e->id);
        free(e);
        return NULL;
}

static void cache_drop(SessionCache *c, const char *id) {
        cache_entry_free(hashmap_remove(c->entries, id));
}

static void cache_clear(SessionCache *c) {
        CacheEntry *e;
        Iterator i;

        HASHMAP_FOREACH(e, c->entries, i)
        cache_entry_free(hashmap_remove(c->entries, e->id));
}

char *session_path_to_id(const char *path) {
        char *id = NULL;

        if (!path || sd_bus_path_decode(path, SESSION_PATH_PREFIX, &id) <= 0)
                return NULL;
        return id;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        SessionCache *c = userdata;
        _cleanup_free_ char *id = session_path_to_id(sd_bus_message_get_path(m));
        _cleanup_(strv_freep) char **invalidated = NULL;
        const char *iface;
        CacheEntry *e;
        int r;

        if (!id)
                return 0;
        e = hashmap_get(c->entries, id);
        if (!e)
                return 0;
        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || !streq(iface, SESSION_INTERFACE)) {
                if (r < 0)
                        cache_drop(c, id);
                return 0;
        }
        r = session_json_update(m, e->session);
        if (r >= 0)
                r = sd_bus_message_read_strv(m, &invalidated);
        if (r < 0 || (invalidated && invalidated[0])) {
                if (r < 0)
                        log_debug_errno(
                                r, "session %s: unreadable PropertiesChanged, forgetting it: %m", id);
                cache_drop(c, id);
        }
        return 0;
}

static int on_session_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        SessionCache *c = userdata;
        const char *id;

        if (sd_bus_message_read(m, "s", &id) >= 0)
                cache_drop(c, id);
        return 0;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        SessionCache *c = userdata;

        /* ccdockerd went away or came back: nothing cached is known to be current. */
        log_debug("%s changed owner: emptying the session cache.", BUS_NAME);
        cache_clear(c);
        return 0;
}

int session_cache_new(sd_bus *bus, SessionCache **ret) {
        _cleanup_(session_cache_freep) SessionCache *c = calloc(1, sizeof(SessionCache));
        int r;

        if (!c)
                return -ENOMEM;
        c->entries = hashmap_new();
        if (!c->entries)
                return -ENOMEM;
        /* Asynchronous AddMatch: the bus daemon handles them before any call we make after them. */
        r = sd_bus_add_match_async(
                bus,
                &c->match_changed,
                "type='signal',sender='" BUS_NAME "',interface='org.freedesktop.DBus.Properties',"
                "member='PropertiesChanged',path_namespace='" SESSION_PATH_PREFIX "'",
                on_properties_changed,
                NULL,
                c);
        if (r >= 0)
                r = sd_bus_match_signal_async(
                        bus,
                        &c->match_removed,
                        BUS_NAME,
                        MANAGER_PATH,
                        MANAGER_INTERFACE,
                        "SessionRemoved",
                        on_session_removed,
                        NULL,
                        c);
        if (r >= 0)
                r = sd_bus_add_match_async(
                        bus,
                        &c->match_owner,
                        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                        "member='NameOwnerChanged',arg0='" BUS_NAME "'",
                        on_owner_changed,
                        NULL,
                        c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

SessionCache *session_cache_free(SessionCache *c) {
        if (!c)
                return NULL;
        cache_clear(c);
        hashmap_free(c->entries);
        sd_bus_slot_unref(c->match_changed);
        sd_bus_slot_unref(c->match_removed);
        sd_bus_slot_unref(c->match_owner);
        free(c);
        return NULL;
}

json_t *session_cache_get(SessionCache *c, const char *id) {
        CacheEntry *e = hashmap_get(c->entries, id);

        if (!e) {
                c->misses++;
                return NULL;
        }
        c->hits++;
        return e->session;
}

int session_cache_put(SessionCache *c, const char *id, json_t *session) {
        CacheEntry *e = hashmap_get(c->entries, id);
        int r;

        if (e) {
                json_decref(e->session);
                e->session = json_incref(session);
                return 0;
        }
        if (hashmap_size(c->entries) >= CACHE_MAX_ENTRIES)
                return 0;
        e = calloc(1, sizeof(CacheEntry));
        if (!e)
                return -ENOMEM;
        e->id = strdup(id);
        if (!e->id) {
                free(e);
                return -ENOMEM;
        }
        e->session = json_incref(session);
        r = hashmap_put(c->entries, e->id, e);
        if (r < 0)
                cache_entry_free(e);
        return r;
}

void session_cache_stats(SessionCache *c, uint64_t *ret_hits, uint64_t *ret_misses, size_t *ret_size) {
        *ret_hits = c->hits;
        *ret_misses = c->misses;
        *ret_size = hashmap_size(c->entries);
}

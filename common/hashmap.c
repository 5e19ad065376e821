/* The string-keyed hashmap (hashmap.h): open addressing, linear probing, deleted slots marked. */
#include "hashmap.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HASHMAP_MIN_SLOTS 8

/* The key of a slot whose entry was removed: probing goes on past it, a put may reuse it. */
static const char deleted_key[1];
#define DELETED deleted_key

typedef struct Slot {
        const char *key; /* NULL: never used since the last resize; DELETED: removed */
        void *value;
        uint64_t hash;
} Slot;

struct Hashmap {
        Slot *slots;
        size_t n_slots; /* a power of two, or 0 before the first put */
        size_t n_entries, n_deleted;
        unsigned generation; /* bumped by every resize, which moves the entries */
};

uint64_t string_hash(const char *s) {
        uint64_t h = UINT64_C(14695981039346656037);

        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= UINT64_C(1099511628211);
        }
        return h;
}

Hashmap *hashmap_new(void) {
        return calloc(1, sizeof(Hashmap));
}

Hashmap *hashmap_free(Hashmap *h) {
        if (!h)
                return NULL;
        free(h->slots);
        free(h);
        return NULL;
}

static bool slot_live(const Slot *s) {
        return s->key && s->key != DELETED;
}

/* The slot holding key, or NULL. */
static Slot *find(const Hashmap *h, const char *key, uint64_t hash) {
        size_t mask = h->n_slots - 1;

        if (h->n_slots == 0)
                return NULL;
        for (size_t i = hash & mask;; i = (i + 1) & mask) {
                Slot *s = &h->slots[i];

                if (!s->key)
                        return NULL;
                if (s->key != DELETED && s->hash == hash && strcmp(s->key, key) == 0)
                        return s;
        }
}

/* Rebuilds the table with n_slots slots, which drops the deleted marks. */
static int resize(Hashmap *h, size_t n_slots) {
        Slot *slots = calloc(n_slots, sizeof(Slot));

        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < h->n_slots; i++) {
                const Slot *s = &h->slots[i];
                size_t j;

                if (!slot_live(s))
                        continue;
                for (j = s->hash & (n_slots - 1); slots[j].key; j = (j + 1) & (n_slots - 1))
                        ;
                slots[j] = *s;
        }
        free(h->slots);
        h->slots = slots;
        h->n_slots = n_slots;
        h->n_deleted = 0;
        h->generation++;
        return 0;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        uint64_t hash = string_hash(key);
        Slot *free_slot = NULL;
        size_t mask;

        if (find(h, key, hash))
                return -EEXIST;
        /* At most three quarters used, counting the deleted: else probes get long (or never end). */
        if ((h->n_entries + h->n_deleted + 1) * 4 > h->n_slots * 3) {
                size_t n = h->n_slots ?: HASHMAP_MIN_SLOTS;
                int r;

                while ((h->n_entries + 1) * 2 > n)
                        n *= 2;
                r = resize(h, n);
                if (r < 0)
                        return r;
        }
        mask = h->n_slots - 1;
        for (size_t i = hash & mask;; i = (i + 1) & mask)
                if (!slot_live(&h->slots[i])) {
                        free_slot = &h->slots[i];
                        break;
                }
        if (free_slot->key == DELETED)
                h->n_deleted--;
        *free_slot = (Slot){ .key = key, .value = value, .hash = hash };
        h->n_entries++;
        return 0;
}

void *hashmap_get(const Hashmap *h, const char *key) {
        Slot *s;

        if (!h)
                return NULL;
        s = find(h, key, string_hash(key));
        return s ? s->value : NULL;
}

void *hashmap_remove(Hashmap *h, const char *key) {
        Slot *s;
        void *value;

        if (!h)
                return NULL;
        s = find(h, key, string_hash(key));
        if (!s)
                return NULL;
        value = s->value;
        *s = (Slot){ .key = DELETED };
        h->n_entries--;
        h->n_deleted++;
        return value;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->n_entries : 0;
}

bool hashmap_iterate(const Hashmap *h, Iterator *i, void **ret_value, const char **ret_key) {
        if (!h)
                return false;
        if (i->index == 0)
                i->generation = h->generation;
        /* A put that grew the table moved the entries: going on would skip some and repeat others. */
        assert(i->generation == h->generation);
        for (; i->index < h->n_slots; i->index++) {
                const Slot *s = &h->slots[i->index];

                if (!slot_live(s))
                        continue;
                i->index++;
                if (ret_value)
                        *ret_value = s->value;
                if (ret_key)
                        *ret_key = s->key;
                return true;
        }
        return false;
}

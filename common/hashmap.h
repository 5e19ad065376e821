/* A string-keyed hashmap of pointers, as systemd's hashmap.h is used for registries: the key is
 * borrowed from the value (hashmap_put(h, s->id, s)), so it must live as long as the entry does, and
 * the map owns neither. Open addressing with linear probing on a power-of-two table that doubles when
 * three quarters full: get, put and remove are O(1) on average. Removing marks the slot (it never
 * moves other entries), so hashmap_remove() of the current entry, or of any other, is allowed inside
 * HASHMAP_FOREACH; hashmap_put() is not (growing moves every entry), and the next step of an iteration
 * after a put that grew the table fails an assertion. Keys hash with FNV-1a, string_hash(), which is
 * also the one hash of strings for the rest of the tree. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"

typedef struct Hashmap Hashmap;

/* Where an iteration is; start it at ITERATOR_FIRST. */
typedef struct Iterator {
        size_t index;
        unsigned generation;
} Iterator;

#define ITERATOR_FIRST ((Iterator){})

/* FNV-1a, 64 bits, of a NUL-terminated string. */
uint64_t string_hash(const char *s);

/* An empty map, or NULL when out of memory. */
Hashmap *hashmap_new(void);
/* Frees the map, not the keys or values; returns NULL. */
Hashmap *hashmap_free(Hashmap *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(Hashmap *, hashmap_free);

/* Adds value under key (borrowed: it must stay valid and unchanged while the entry is in the map).
 * 0, -EEXIST if the key is there already (the map is unchanged), -ENOMEM. */
int hashmap_put(Hashmap *h, const char *key, void *value);
/* The value under key, or NULL. h may be NULL (an empty map). */
void *hashmap_get(const Hashmap *h, const char *key);
/* Takes the entry under key out and returns its value, or NULL if there was none. */
void *hashmap_remove(Hashmap *h, const char *key);
/* Entries in the map; 0 for NULL. */
size_t hashmap_size(const Hashmap *h);

/* The next entry after *i in table order (not insertion order): true and its value and key (either
 * pointer may be NULL), false at the end. h may be NULL. */
bool hashmap_iterate(const Hashmap *h, Iterator *i, void **ret_value, const char **ret_key);

/* for (each value v of h): i is an Iterator. v may be removed in the body. */
#define HASHMAP_FOREACH(v, h, i) \
        for ((i) = ITERATOR_FIRST; hashmap_iterate((h), &(i), (void **) &(v), NULL);)

/* As HASHMAP_FOREACH, with the key too. */
#define HASHMAP_FOREACH_KEY(v, k, h, i) \
        for ((i) = ITERATOR_FIRST; hashmap_iterate((h), &(i), (void **) &(v), &(k));)

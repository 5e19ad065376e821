/* Intrusive doubly linked lists, as systemd's list.h: an item carries its own prev and next
 * pointers, the list is a pointer to its first item, and every operation is O(1) but a walk.
 * The item type needs fields named prev and next. */
#pragma once

#include <stddef.h>

/* Puts item first in the list whose head is head. */
#define LIST_PREPEND(head, item)               \
        do {                                   \
                (item)->prev = NULL;           \
                (item)->next = (head);         \
                if (head)                      \
                        (head)->prev = (item); \
                (head) = (item);               \
        } while (0)

/* Takes item out of the list whose head is head; its prev and next become NULL. */
#define LIST_REMOVE(head, item)                            \
        do {                                               \
                if ((item)->next)                          \
                        (item)->next->prev = (item)->prev; \
                if ((item)->prev)                          \
                        (item)->prev->next = (item)->next; \
                else                                       \
                        (head) = (item)->next;             \
                (item)->prev = (item)->next = NULL;        \
        } while (0)

/* for (each item of the list): i may be removed inside the loop body, n holds the next one. */
#define LIST_FOREACH_SAFE(i, n, head) for ((i) = (head); (i) && (((n) = (i)->next), 1); (i) = (n))

/* Stream tickets: a browser's EventSource cannot send a header, and a token in a URL would be logged, so
 * an authenticated POST /api/v1/stream-tickets gets a ticket that stands for its token on one stream
 * request (GET .../stream?ticket=...), once, within --ticket-ttl seconds (default 30). A ticket is 32
 * random bytes; only its SHA-256 is kept, in memory, with its token's id and its deadline; a restart
 * forgets them all. At most TICKETS_MAX wait in all and TICKETS_MAX_PER_TOKEN per token: one more is
 * answered 429. The token is looked up again when the ticket is used, so a token revoked since then does
 * not stream. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "hashmap.h"
#include "httpd.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

#define TICKET_PREFIX "cct_"

typedef struct Ticket {
        char hash[TOKEN_HASH_HEX_LENGTH + 1]; /* the key */
        int64_t token_id;
        uint64_t deadline_usec;
} Ticket;

struct Tickets {
        Hashmap *by_hash;
};

int tickets_new(Tickets **ret) {
        Tickets *t = calloc(1, sizeof(Tickets));

        if (!t)
                return -ENOMEM;
        t->by_hash = hashmap_new();
        if (!t->by_hash) {
                free(t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}

Tickets *tickets_free(Tickets *t) {
        Ticket *k;
        Iterator i;

        if (!t)
                return NULL;
        HASHMAP_FOREACH(k, t->by_hash, i)
        free(hashmap_remove(t->by_hash, k->hash));
        hashmap_free(t->by_hash);
        free(t);
        return NULL;
}

/* Forgets the expired tickets; returns how many of token_id's are left. */
static unsigned tickets_expire(Tickets *t, uint64_t now, int64_t token_id) {
        unsigned n = 0;
        Ticket *k;
        Iterator i;

        HASHMAP_FOREACH(k, t->by_hash, i) {
                if (k->deadline_usec <= now)
                        free(hashmap_remove(t->by_hash, k->hash));
                else
                        n += k->token_id == token_id;
        }
        return n;
}

int tickets_take(Server *s, const char *text, int64_t *ret_token_id) {
        char hash[TOKEN_HASH_HEX_LENGTH + 1];
        Ticket *k;
        int64_t id;
        bool valid;

        if (!startswith(text, TICKET_PREFIX) || strlen(text) != TOKEN_LENGTH)
                return -ENOENT;
        token_hash_hex(text, hash);
        k = hashmap_remove(s->tickets->by_hash, hash);
        if (!k)
                return -ENOENT;
        valid = k->deadline_usec > now_usec(CLOCK_MONOTONIC);
        id = k->token_id;
        free(k);
        if (!valid)
                return -ENOENT;
        /* Still a token of the store: not revoked since the ticket was made. */
        if (token_store_has_id(s->tokens, id) <= 0)
                return -ENOENT;
        *ret_token_id = id;
        return 0;
}

void route_stream_ticket(Request *req) {
        Server *s = req->server;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        char text[TOKEN_LENGTH + 1];
        Ticket *k;
        int r;

        if (tickets_expire(s->tickets, now, req->token_id) >= TICKETS_MAX_PER_TOKEN ||
            hashmap_size(s->tickets->by_hash) >= TICKETS_MAX) {
                metrics_refusal(s->metrics, "tickets");
                request_reply_error(
                        req,
                        429,
                        "limit_exceeded",
                        "%u stream tickets of this token (%u in all) wait to be used: use or let them expire first",
                        TICKETS_MAX_PER_TOKEN,
                        TICKETS_MAX);
                return;
        }
        r = token_random_text(TICKET_PREFIX, text);
        if (r < 0) {
                request_reply_error(req, 500, "internal", "no random bytes: %s", strerror(-r));
                return;
        }

        k = calloc(1, sizeof(Ticket));
        if (!k) {
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        token_hash_hex(text, k->hash);
        k->token_id = req->token_id;
        k->deadline_usec = now + s->limits.ticket_ttl_usec;
        r = hashmap_put(s->tickets->by_hash, k->hash, k);
        if (r < 0) {
                free(k);
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        request_reply_json(
                req,
                201,
                json_pack(
                        "{s:s,s:I}",
                        "ticket",
                        text,
                        "expires_in",
                        (json_int_t) (s->limits.ticket_ttl_usec / 1000000U)));
}

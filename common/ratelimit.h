/* A fixed-window rate limit, as systemd's RateLimit: at most burst events in each interval. The
 * caller passes the time, so that it can be the event loop's clock and tests can drive it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct RateLimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin_usec; /* the current window's start */
        unsigned num;        /* events in the current window */
} RateLimit;

/* Whether one more event at now_usec is within the limit (and counts it if so). */
static inline bool ratelimit_below(RateLimit *r, uint64_t now_usec) {
        if (r->begin_usec == 0 || now_usec < r->begin_usec || now_usec - r->begin_usec >= r->interval_usec) {
                r->begin_usec = now_usec ?: 1;
                r->num = 0;
        }
        if (r->num >= r->burst)
                return false;
        r->num++;
        return true;
}

/* Time units and clock reads, in microseconds as sd-event counts them. One definition for every
 * program, so that no file carries its own USEC_PER_SEC or now(). */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>
#include <time.h>

typedef uint64_t usec_t;

#define NSEC_PER_USEC UINT64_C(1000)
#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MINUTE (UINT64_C(60) * USEC_PER_SEC)
#define MSEC_PER_SEC UINT64_C(1000)

/* The clock's now in microseconds (CLOCK_REALTIME for times people read and the store keeps,
 * CLOCK_MONOTONIC for intervals). */
static inline usec_t now_usec(clockid_t clock) {
        struct timespec ts;

        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* The loop's now (the time of the current iteration, which every callback of it agrees on), or the
 * clock's when the loop has not run yet. */
static inline uint64_t event_now_usec(sd_event *e, clockid_t clock) {
        uint64_t now;

        return sd_event_now(e, clock, &now) >= 0 ? now : now_usec(clock);
}

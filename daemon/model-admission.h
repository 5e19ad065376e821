/* Admission of model calls for the one credential (docs/model-proxy.md): at most max_in_flight calls
 * upstream (ModelMaxInFlight=), of which at most max_in_flight_per_flow for one session
 * (ModelMaxInFlightPerSession=), requests per minute as a token bucket (ModelRequestsPerMinute=), a
 * bounded queue in front of them (ModelQueueMax=), and a pause the whole credential waits out after an
 * upstream 429/529. The queue is fair between sessions: each session (a flow, named by a key: the
 * session id) has its own FIFO, and the flows with calls waiting take turns, round-robin, so one session
 * flooding calls delays another's by at most one call of its own. A queue entry is embedded in the
 * caller's object; when it may go, the start callback gets it. On the sd-event loop: a timer runs the
 * queue again when the bucket or the pause lets the next call go. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "hashmap.h"

/* Requests per minute as a token bucket, in integers: one token is 60,000,000 units and the bucket
 * gains per_minute units per microsecond, up to burst tokens. */
typedef struct ModelTokenBucket {
        uint64_t per_minute, level, capacity, last_usec;
} ModelTokenBucket;

void model_token_bucket_init(ModelTokenBucket *b, unsigned per_minute, unsigned burst, uint64_t now_usec);
/* Takes a token if there is one. */
bool model_token_bucket_take(ModelTokenBucket *b, uint64_t now_usec);
/* Microseconds until a token is there (0: now). */
uint64_t model_token_bucket_wait(ModelTokenBucket *b, uint64_t now_usec);

typedef struct ModelAdmissionEntry ModelAdmissionEntry;
typedef struct ModelAdmissionFlow ModelAdmissionFlow;

/* One session's calls: its FIFO, and how many of its calls are upstream. Exists while it has either. */
struct ModelAdmissionFlow {
        char *key;
        ModelAdmissionEntry *head, *tail;
        unsigned n_queued, in_flight;
        ModelAdmissionFlow *ring_prev, *ring_next; /* in the ring of flows with calls waiting */
        bool in_ring;
};

struct ModelAdmissionEntry {
        ModelAdmissionEntry *prev, *next;
        ModelAdmissionFlow *flow; /* while queued or running */
        bool queued, running;
        uint64_t queued_since_usec;
        uint64_t queued_usec; /* waited in the queue so far, over all its turns (retries) */
};

/* An entry's turn: it left the queue and may go upstream (model_admission_begin() when it does). */
typedef void (*model_admission_start_t)(ModelAdmissionEntry *e, void *userdata);

typedef struct ModelAdmission {
        sd_event_source *timer;
        ModelTokenBucket bucket;
        uint64_t paused_until;
        unsigned max_in_flight, max_in_flight_per_flow, queue_max;
        unsigned in_flight, in_flight_peak, n_queued;
        Hashmap *flows;           /* key -> ModelAdmissionFlow */
        ModelAdmissionFlow *ring; /* the flow whose turn is next, in the ring of flows with calls waiting */
        model_admission_start_t start;
        void *userdata;
} ModelAdmission;

/* The default of max_in_flight_per_flow: half of max_in_flight, at least 1. */
static inline unsigned model_admission_default_per_flow(unsigned max_in_flight) {
        return max_in_flight / 2 > 0 ? max_in_flight / 2 : 1;
}

/* max_in_flight calls at once, max_in_flight_per_flow (0: the default above; at most max_in_flight) of
 * them for one flow, requests_per_minute with bursts of ten seconds' worth, queue_max waiting. */
int model_admission_init(
        ModelAdmission *a,
        sd_event *event,
        unsigned max_in_flight,
        unsigned max_in_flight_per_flow,
        unsigned requests_per_minute,
        unsigned queue_max,
        model_admission_start_t start,
        void *userdata);
void model_admission_done(ModelAdmission *a);

/* Whether the queue is full: a new call is refused. */
bool model_admission_full(const ModelAdmission *a);
/* Queues e in the flow named key (copied), last, or first (a retried call, admitted before the rest of
 * its flow). The queue is not run: model_admission_pump() does that. -ENOMEM. */
int model_admission_enqueue(ModelAdmission *a, ModelAdmissionEntry *e, const char *key, bool front);
/* Takes e out of the queue without its turn (its call ended); the time it waited is counted. */
void model_admission_dequeue(ModelAdmission *a, ModelAdmissionEntry *e);
/* Starts the calls whose turn it is, or arms the timer for the next. An entry whose turn it is counts as
 * running (upstream) from before the start callback gets it until model_admission_end(). */
void model_admission_pump(ModelAdmission *a);
/* A running call's transfer ended (or never started); nothing for an entry not running. */
void model_admission_end(ModelAdmission *a, ModelAdmissionEntry *e);
/* Nothing is admitted before until (CLOCK_MONOTONIC); a later pause wins. */
void model_admission_pause_until(ModelAdmission *a, uint64_t until);

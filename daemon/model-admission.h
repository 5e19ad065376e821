/* Admission of model calls for the one credential (docs/model-proxy.md): at most max_in_flight calls
 * upstream (ModelMaxInFlight=), requests per minute as a token bucket (ModelRequestsPerMinute=), a
 * bounded FIFO queue in front of them (ModelQueueMax=), and a pause the whole credential waits out
 * after an upstream 429/529. A queue entry is embedded in the caller's object; when it may go, the
 * start callback gets it. On the sd-event loop: a timer runs the queue again when the bucket or the
 * pause lets the next call go. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

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
struct ModelAdmissionEntry {
        ModelAdmissionEntry *prev, *next;
        bool queued;
        uint64_t queued_since_usec;
        uint64_t queued_usec; /* waited in the queue so far, over all its turns (retries) */
};

/* An entry's turn: it left the queue and may go upstream (model_admission_begin() when it does). */
typedef void (*model_admission_start_t)(ModelAdmissionEntry *e, void *userdata);

typedef struct ModelAdmission {
        sd_event_source *timer;
        ModelTokenBucket bucket;
        uint64_t paused_until;
        unsigned max_in_flight, queue_max;
        unsigned in_flight, in_flight_peak, n_queued;
        ModelAdmissionEntry *head, *tail;
        model_admission_start_t start;
        void *userdata;
} ModelAdmission;

/* max_in_flight calls at once, requests_per_minute with bursts of ten seconds' worth, queue_max
 * waiting. */
int model_admission_init(
        ModelAdmission *a,
        sd_event *event,
        unsigned max_in_flight,
        unsigned requests_per_minute,
        unsigned queue_max,
        model_admission_start_t start,
        void *userdata);
void model_admission_done(ModelAdmission *a);

/* Whether the queue is full: a new call is refused. */
bool model_admission_full(const ModelAdmission *a);
/* Queues e, last, or first (a retried call, admitted before everything waiting). The queue is not
 * run: model_admission_pump() does that. */
void model_admission_enqueue(ModelAdmission *a, ModelAdmissionEntry *e, bool front);
/* Takes e out of the queue without its turn (its call ended); the time it waited is counted. */
void model_admission_dequeue(ModelAdmission *a, ModelAdmissionEntry *e);
/* Starts the calls whose turn it is, or arms the timer for the next. */
void model_admission_pump(ModelAdmission *a);
/* A call went upstream, or its transfer ended. */
void model_admission_begin(ModelAdmission *a);
void model_admission_end(ModelAdmission *a);
/* Nothing is admitted before until (CLOCK_MONOTONIC); a later pause wins. */
void model_admission_pause_until(ModelAdmission *a, uint64_t until);

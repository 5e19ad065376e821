/* Admission of model calls: see model-admission.h. */
#define _GNU_SOURCE
#include "model-admission.h"

#include <errno.h>
#include <stddef.h>

#include "time-util.h"

/* A token in units: the bucket gains per_minute units per microsecond, a minute's worth of which is
 * per_minute tokens. */
#define TOKEN_UNIT USEC_PER_MINUTE

void model_token_bucket_init(ModelTokenBucket *b, unsigned per_minute, unsigned burst, uint64_t now_usec) {
        *b = (ModelTokenBucket){
                .per_minute = per_minute > 0 ? per_minute : 1,
                .capacity = (uint64_t) (burst > 0 ? burst : 1) * TOKEN_UNIT,
                .last_usec = now_usec,
        };
        b->level = b->capacity;
}

static void token_bucket_refill(ModelTokenBucket *b, uint64_t now) {
        uint64_t elapsed;

        if (now <= b->last_usec)
                return;
        elapsed = now - b->last_usec;
        b->last_usec = now;
        /* Past the time to fill up, the product could overflow: it is full. */
        if (elapsed >= (b->capacity - b->level) / b->per_minute + 1)
                b->level = b->capacity;
        else
                b->level += elapsed * b->per_minute;
        if (b->level > b->capacity)
                b->level = b->capacity;
}

bool model_token_bucket_take(ModelTokenBucket *b, uint64_t now) {
        token_bucket_refill(b, now);
        if (b->level < TOKEN_UNIT)
                return false;
        b->level -= TOKEN_UNIT;
        return true;
}

uint64_t model_token_bucket_wait(ModelTokenBucket *b, uint64_t now) {
        token_bucket_refill(b, now);
        if (b->level >= TOKEN_UNIT)
                return 0;
        return (TOKEN_UNIT - b->level + b->per_minute - 1) / b->per_minute;
}

static int on_admit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        model_admission_pump(userdata);
        return 0;
}

int model_admission_init(
        ModelAdmission *a,
        sd_event *event,
        unsigned max_in_flight,
        unsigned requests_per_minute,
        unsigned queue_max,
        model_admission_start_t start,
        void *userdata) {
        int r;

        if (!a || !event || max_in_flight == 0 || requests_per_minute == 0 || !start)
                return -EINVAL;
        *a = (ModelAdmission){
                .max_in_flight = max_in_flight,
                .queue_max = queue_max,
                .start = start,
                .userdata = userdata,
        };
        /* Ten seconds' worth of requests may go at once; after that, one every 60/rpm seconds. */
        model_token_bucket_init(
                &a->bucket, requests_per_minute, (requests_per_minute + 5) / 6, now_usec(CLOCK_MONOTONIC));

        r = sd_event_add_time(event, &a->timer, CLOCK_MONOTONIC, 0, 1000, on_admit_timer, a);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(a->timer, "model-proxy-admit");
        return 0;
}

void model_admission_done(ModelAdmission *a) {
        if (!a)
                return;
        a->timer = sd_event_source_disable_unref(a->timer);
        while (a->head)
                model_admission_dequeue(a, a->head);
}

bool model_admission_full(const ModelAdmission *a) {
        return a->n_queued >= a->queue_max;
}

void model_admission_enqueue(ModelAdmission *a, ModelAdmissionEntry *e, bool front) {
        if (e->queued)
                return;
        if (front) {
                e->prev = NULL;
                e->next = a->head;
                if (a->head)
                        a->head->prev = e;
                else
                        a->tail = e;
                a->head = e;
        } else {
                e->next = NULL;
                e->prev = a->tail;
                if (a->tail)
                        a->tail->next = e;
                else
                        a->head = e;
                a->tail = e;
        }
        a->n_queued++;
        e->queued = true;
        e->queued_since_usec = now_usec(CLOCK_MONOTONIC);
}

static void admission_unlink(ModelAdmission *a, ModelAdmissionEntry *e, uint64_t now) {
        if (e->prev)
                e->prev->next = e->next;
        else
                a->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                a->tail = e->prev;
        e->prev = e->next = NULL;
        e->queued = false;
        a->n_queued--;
        e->queued_usec += now - e->queued_since_usec;
}

void model_admission_dequeue(ModelAdmission *a, ModelAdmissionEntry *e) {
        if (e->queued)
                admission_unlink(a, e, now_usec(CLOCK_MONOTONIC));
}

static void admit_timer_arm(ModelAdmission *a, uint64_t when) {
        (void) sd_event_source_set_time(a->timer, when);
        (void) sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
}

void model_admission_pump(ModelAdmission *a) {
        while (a->head && a->in_flight < a->max_in_flight) {
                ModelAdmissionEntry *e = a->head;
                uint64_t now = now_usec(CLOCK_MONOTONIC), wait;

                if (now < a->paused_until) {
                        admit_timer_arm(a, a->paused_until);
                        return;
                }
                wait = model_token_bucket_wait(&a->bucket, now);
                if (wait > 0) {
                        admit_timer_arm(a, now + wait);
                        return;
                }
                (void) model_token_bucket_take(&a->bucket, now);

                admission_unlink(a, e, now);
                a->start(e, a->userdata);
        }
}

void model_admission_begin(ModelAdmission *a) {
        a->in_flight++;
        if (a->in_flight > a->in_flight_peak)
                a->in_flight_peak = a->in_flight;
}

void model_admission_end(ModelAdmission *a) {
        if (a->in_flight > 0)
                a->in_flight--;
}

void model_admission_pause_until(ModelAdmission *a, uint64_t until) {
        if (until > a->paused_until)
                a->paused_until = until;
}

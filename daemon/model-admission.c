/* Admission of model calls: see model-admission.h. */
#define _GNU_SOURCE
#include "model-admission.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
        unsigned max_in_flight_per_flow,
        unsigned requests_per_minute,
        unsigned queue_max,
        model_admission_start_t start,
        void *userdata) {
        int r;

        if (!a || !event || max_in_flight == 0 || requests_per_minute == 0 || !start)
                return -EINVAL;
        if (max_in_flight_per_flow == 0)
                max_in_flight_per_flow = model_admission_default_per_flow(max_in_flight);
        *a = (ModelAdmission){
                .max_in_flight = max_in_flight,
                .max_in_flight_per_flow =
                        max_in_flight_per_flow < max_in_flight ? max_in_flight_per_flow : max_in_flight,
                .queue_max = queue_max,
                .start = start,
                .userdata = userdata,
        };
        a->flows = hashmap_new();
        if (!a->flows)
                return -ENOMEM;
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

static void flow_ring_remove(ModelAdmission *a, ModelAdmissionFlow *f) {
        if (!f->in_ring)
                return;
        if (f->ring_next == f)
                a->ring = NULL;
        else {
                f->ring_prev->ring_next = f->ring_next;
                f->ring_next->ring_prev = f->ring_prev;
                if (a->ring == f)
                        a->ring = f->ring_next;
        }
        f->ring_prev = f->ring_next = NULL;
        f->in_ring = false;
}

/* A flow with a call newly waiting joins the ring last: just before the flow whose turn is next. */
static void flow_ring_add(ModelAdmission *a, ModelAdmissionFlow *f) {
        if (f->in_ring)
                return;
        if (!a->ring) {
                f->ring_prev = f->ring_next = f;
                a->ring = f;
        } else {
                f->ring_next = a->ring;
                f->ring_prev = a->ring->ring_prev;
                a->ring->ring_prev->ring_next = f;
                a->ring->ring_prev = f;
        }
        f->in_ring = true;
}

/* A flow with nothing waiting and nothing running is forgotten. */
static void flow_maybe_free(ModelAdmission *a, ModelAdmissionFlow *f) {
        if (f->n_queued > 0 || f->in_flight > 0)
                return;
        flow_ring_remove(a, f);
        (void) hashmap_remove(a->flows, f->key);
        free(f->key);
        free(f);
}

void model_admission_done(ModelAdmission *a) {
        ModelAdmissionFlow *f;
        Iterator i;

        if (!a)
                return;
        a->timer = sd_event_source_disable_unref(a->timer);
        if (!a->flows)
                return;
        /* Whatever still waits or runs is let go; the entries' owners are being freed. */
        HASHMAP_FOREACH(f, a->flows, i) {
                for (ModelAdmissionEntry *e = f->head; e; e = e->next)
                        e->queued = false, e->flow = NULL;
                (void) hashmap_remove(a->flows, f->key);
                free(f->key);
                free(f);
        }
        a->ring = NULL;
        a->flows = hashmap_free(a->flows);
}

bool model_admission_full(const ModelAdmission *a) {
        return a->n_queued >= a->queue_max;
}

int model_admission_enqueue(ModelAdmission *a, ModelAdmissionEntry *e, const char *key, bool front) {
        ModelAdmissionFlow *f;
        int r;

        if (e->queued)
                return 0;
        f = e->flow ?: hashmap_get(a->flows, key);
        if (!f) {
                f = calloc(1, sizeof(*f));
                if (!f)
                        return -ENOMEM;
                f->key = strdup(key);
                if (!f->key) {
                        free(f);
                        return -ENOMEM;
                }
                r = hashmap_put(a->flows, f->key, f);
                if (r < 0) {
                        free(f->key);
                        free(f);
                        return r;
                }
        }
        e->flow = f;
        if (front) {
                e->prev = NULL;
                e->next = f->head;
                if (f->head)
                        f->head->prev = e;
                else
                        f->tail = e;
                f->head = e;
        } else {
                e->next = NULL;
                e->prev = f->tail;
                if (f->tail)
                        f->tail->next = e;
                else
                        f->head = e;
                f->tail = e;
        }
        f->n_queued++;
        a->n_queued++;
        e->queued = true;
        e->queued_since_usec = now_usec(CLOCK_MONOTONIC);
        flow_ring_add(a, f);
        return 0;
}

static void admission_unlink(ModelAdmission *a, ModelAdmissionEntry *e, uint64_t now) {
        ModelAdmissionFlow *f = e->flow;

        if (e->prev)
                e->prev->next = e->next;
        else
                f->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                f->tail = e->prev;
        e->prev = e->next = NULL;
        e->queued = false;
        f->n_queued--;
        a->n_queued--;
        e->queued_usec += now - e->queued_since_usec;
        if (f->n_queued == 0)
                flow_ring_remove(a, f);
}

void model_admission_dequeue(ModelAdmission *a, ModelAdmissionEntry *e) {
        ModelAdmissionFlow *f = e->flow;

        if (!e->queued || !f)
                return;
        admission_unlink(a, e, now_usec(CLOCK_MONOTONIC));
        if (!e->running) {
                e->flow = NULL;
                flow_maybe_free(a, f);
        }
}

static void admit_timer_arm(ModelAdmission *a, uint64_t when) {
        (void) sd_event_source_set_time(a->timer, when);
        (void) sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
}

/* The flow whose turn it is: the first in the ring, from its cursor on, below its own cap. */
static ModelAdmissionFlow *admission_next_flow(ModelAdmission *a) {
        ModelAdmissionFlow *f = a->ring;

        if (!f)
                return NULL;
        do {
                if (f->in_flight < a->max_in_flight_per_flow)
                        return f;
                f = f->ring_next;
        } while (f != a->ring);
        return NULL;
}

void model_admission_pump(ModelAdmission *a) {
        while (a->n_queued > 0 && a->in_flight < a->max_in_flight) {
                ModelAdmissionFlow *f = admission_next_flow(a);
                ModelAdmissionEntry *e;
                uint64_t now = now_usec(CLOCK_MONOTONIC), wait;

                if (!f)
                        return; /* every waiting flow is at its cap: the end of one of its calls pumps */
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

                e = f->head;
                /* The next turn is the next flow's, whether or not this one still has calls waiting. */
                a->ring = f->ring_next;
                admission_unlink(a, e, now);
                e->running = true;
                f->in_flight++;
                a->in_flight++;
                if (a->in_flight > a->in_flight_peak)
                        a->in_flight_peak = a->in_flight;
                a->start(e, a->userdata);
        }
}

void model_admission_end(ModelAdmission *a, ModelAdmissionEntry *e) {
        ModelAdmissionFlow *f = e->flow;

        if (!e->running)
                return;
        e->running = false;
        if (a->in_flight > 0)
                a->in_flight--;
        if (!f || !a->flows)
                return; /* model_admission_done() let it go already */
        if (f->in_flight > 0)
                f->in_flight--;
        if (!e->queued) {
                e->flow = NULL;
                flow_maybe_free(a, f);
        }
}

void model_admission_pause_until(ModelAdmission *a, uint64_t until) {
        if (until > a->paused_until)
                a->paused_until = until;
}

/* hiredis's async API on an sd-event loop, after the pattern of hiredis's adapters/libevent.h (Debian 12
 * ships hiredis 0.14.1, whose adapters have no libsdevent.h; REFERENCE.md C.2). One IO source per
 * connection, its events kept equal to what hiredis asked for through addRead/delRead/addWrite/delWrite
 * and disabled when it wants nothing. hiredis calls cleanup while it frees the context, which happens
 * inside redisAsyncHandleRead/Write when the link drops: the source then goes at once (sd-event allows
 * that within its own callback) but the adapter's own memory only when the handler returns. Header-only,
 * like hiredis's adapters. */
#pragma once

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <systemd/sd-event.h>

typedef struct RedisSdEvent {
        redisAsyncContext *context;
        sd_event *event;
        sd_event_source *io;
        int fd;
        uint32_t mask;    /* EPOLLIN and/or EPOLLOUT, as hiredis asked */
        bool in_callback; /* inside redis_sdevent_on_io() */
        bool dead;        /* cleanup ran inside the callback: free when it returns */
        int64_t priority;
} RedisSdEvent;

static inline int redis_sdevent_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RedisSdEvent *e = userdata;

        e->in_callback = true;

        /* A hangup or an error is reported to the read side, which reads the EOF or the error and
         * disconnects; during connect, either handler checks the socket's error. */
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                redisAsyncHandleRead(e->context);
                if (e->dead) {
                        free(e);
                        return 0;
                }
        }
        if ((revents & EPOLLOUT) && (e->mask & EPOLLOUT)) {
                redisAsyncHandleWrite(e->context);
                if (e->dead) {
                        free(e);
                        return 0;
                }
        }

        e->in_callback = false;
        return 0;
}

static inline void redis_sdevent_update(RedisSdEvent *e, uint32_t mask) {
        int r;

        if (mask == e->mask || e->dead || !e->context)
                return;
        e->mask = mask;

        if (!e->io) {
                if (mask == 0)
                        return;
                r = sd_event_add_io(e->event, &e->io, e->fd, mask, redis_sdevent_on_io, e);
                if (r < 0) {
                        /* Nothing to return it to: the link then stalls, and it is the caller's
                         * watchdog that notices. It takes running out of memory or descriptors. */
                        e->mask = 0;
                        return;
                }
                (void) sd_event_source_set_priority(e->io, e->priority);
                (void) sd_event_source_set_description(e->io, "redis");
                return;
        }

        if (mask == 0) {
                (void) sd_event_source_set_enabled(e->io, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_io_events(e->io, mask);
        (void) sd_event_source_set_enabled(e->io, SD_EVENT_ON);
}

static inline void redis_sdevent_add_read(void *privdata) {
        RedisSdEvent *e = privdata;
        redis_sdevent_update(e, e->mask | EPOLLIN);
}

static inline void redis_sdevent_del_read(void *privdata) {
        RedisSdEvent *e = privdata;
        redis_sdevent_update(e, e->mask & ~(uint32_t) EPOLLIN);
}

static inline void redis_sdevent_add_write(void *privdata) {
        RedisSdEvent *e = privdata;
        redis_sdevent_update(e, e->mask | EPOLLOUT);
}

static inline void redis_sdevent_del_write(void *privdata) {
        RedisSdEvent *e = privdata;
        redis_sdevent_update(e, e->mask & ~(uint32_t) EPOLLOUT);
}

static inline void redis_sdevent_cleanup(void *privdata) {
        RedisSdEvent *e = privdata;

        if (!e)
                return;

        /* The source goes now, while hiredis has not yet closed the fd. */
        e->io = sd_event_source_disable_unref(e->io);
        e->event = sd_event_unref(e->event);
        e->context = NULL;
        e->mask = 0;

        if (e->in_callback)
                e->dead = true;
        else
                free(e);
}

/* Attaches ac (fresh from redisAsyncConnect*(), before redisAsyncSetConnectCallback(), which arms the
 * write event that detects the connect) to event. priority: that of the IO source, e.g.
 * SD_EVENT_PRIORITY_NORMAL. From then on hiredis owns the adapter and frees it with the context.
 * -EEXIST if something is attached already. */
static inline int redis_sdevent_attach(redisAsyncContext *ac, sd_event *event, int64_t priority) {
        RedisSdEvent *e;

        if (!ac || !event)
                return -EINVAL;
        if (ac->ev.data)
                return -EEXIST;

        e = calloc(1, sizeof(RedisSdEvent));
        if (!e)
                return -ENOMEM;
        *e = (RedisSdEvent){
                .context = ac,
                .event = sd_event_ref(event),
                .fd = ac->c.fd,
                .priority = priority,
        };

        ac->ev.addRead = redis_sdevent_add_read;
        ac->ev.delRead = redis_sdevent_del_read;
        ac->ev.addWrite = redis_sdevent_add_write;
        ac->ev.delWrite = redis_sdevent_del_write;
        ac->ev.cleanup = redis_sdevent_cleanup;
        ac->ev.data = e;
        return 0;
}

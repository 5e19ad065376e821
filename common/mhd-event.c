/* libmicrohttpd on sd-event: see mhd-event.h. */
#include "mhd-event.h"

#include <errno.h>
#include <sys/epoll.h>

static void mhd_event_run(MhdEvent *e) {
        MHD_UNSIGNED_LONG_LONG timeout;
        uint64_t now;

        (void) MHD_run(e->mhd);

        if (MHD_get_timeout(e->mhd, &timeout) != MHD_YES) {
                (void) sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
                return;
        }
        if (timeout == 0) {
                /* More to do at once: run again after the other sources had their turn. */
                (void) sd_event_source_set_enabled(e->defer, SD_EVENT_ONESHOT);
                (void) sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_now(e->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(e->timer, now + timeout * 1000ULL);
        (void) sd_event_source_set_enabled(e->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        mhd_event_run(userdata);
        return 0;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        mhd_event_run(userdata);
        return 0;
}

static int on_defer(sd_event_source *source, void *userdata) {
        mhd_event_run(userdata);
        return 0;
}

int mhd_event_attach(MhdEvent *e, sd_event *event, struct MHD_Daemon *mhd) {
        const union MHD_DaemonInfo *info;
        int r;

        *e = (MhdEvent){ .mhd = mhd, .event = event };
        info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return -EIO;

        r = sd_event_add_io(event, &e->io, info->epoll_fd, EPOLLIN, on_io, e);
        if (r >= 0)
                r = sd_event_add_time(event, &e->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, e);
        if (r >= 0)
                r = sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_defer(event, &e->defer, on_defer, e);
        if (r >= 0)
                r = sd_event_source_set_enabled(e->defer, SD_EVENT_ONESHOT);
        if (r < 0) {
                mhd_event_detach(e);
                return r;
        }
        return 0;
}

void mhd_event_kick(MhdEvent *e) {
        if (e->defer)
                (void) sd_event_source_set_enabled(e->defer, SD_EVENT_ONESHOT);
}

void mhd_event_detach(MhdEvent *e) {
        e->io = sd_event_source_disable_unref(e->io);
        e->timer = sd_event_source_disable_unref(e->timer);
        e->defer = sd_event_source_disable_unref(e->defer);
}

/* libmicrohttpd in its external-epoll mode (MHD_USE_EPOLL, no threads of its own) on an sd-event loop:
 * its epoll fd is an io source, MHD_get_timeout() drives a timer, and a defer source runs it again when
 * it has more to do at once (data already read, a resumed connection). ccdocker-httpd and the daemon's
 * model proxy both serve HTTP this way. */
#pragma once

#include <microhttpd.h>
#include <systemd/sd-event.h>

typedef struct MhdEvent {
        struct MHD_Daemon *mhd; /* borrowed */
        sd_event *event;        /* borrowed */
        sd_event_source *io, *timer, *defer;
} MhdEvent;

/* Adds mhd (started with MHD_USE_EPOLL) to event; it runs once at the loop's next turn. Returns 0 or a
 * negative errno (-EIO when mhd has no epoll fd); on failure nothing stays attached. */
int mhd_event_attach(MhdEvent *e, sd_event *event, struct MHD_Daemon *mhd);

/* Runs libmicrohttpd at the loop's next turn: after resuming a connection, or adding one. */
void mhd_event_kick(MhdEvent *e);

/* Removes the sources (the daemon itself is the caller's to stop). Idempotent. */
void mhd_event_detach(MhdEvent *e);

/* Slow work off the event loop, in a forked worker the loop watches (STYLE.md 16; systemd's
 * asynchronous_rm_rf() is the model). */
#pragma once

#include <systemd/sd-event.h>

/* r: 0 when the whole tree is gone (or was never there), -EIO when the worker could not remove
 * something (it logged what), -ECHILD when it died. */
typedef void (*async_done_t)(int r, void *userdata);

/* Removes path and everything below it in a forked child: symlinks are removed, never followed, and
 * nothing on another file system (a mount below path) is entered. cb runs once, from the loop, when the
 * child has exited; a child still running when the loop is freed goes on to the end unwatched.
 * SIGCHLD must be blocked (sd_event_add_child()). < 0 if the child could not be started; then cb is
 * never called. */
int async_rm_rf(sd_event *e, const char *path, async_done_t cb, void *userdata);

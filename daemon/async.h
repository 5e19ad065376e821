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

/* What a worker of async_call() sends back: r = 0 and the bytes it wrote (at most ASYNC_RESULT_MAX)
 * when it exited 0, -EIO when it exited otherwise, -ECHILD when it died. */
typedef void (*async_result_t)(int r, const void *data, size_t size, void *userdata);
#define ASYNC_RESULT_MAX 8192

/* Runs fn(arg, fd) in a forked child (arg is the parent's pointer: the child has a copy of its memory),
 * which writes its answer to fd and returns; the child then exits 0. cb runs once, from the loop, when
 * the child has exited. Same rules as async_rm_rf(): SIGCHLD blocked; < 0 and no cb if it could not
 * start. For work that must not run as the daemon (with a caller's rights) or on its loop. */
int async_call(
        sd_event *e,
        void (*fn)(const void *arg, int fd),
        const void *arg,
        async_result_t cb,
        void *userdata);

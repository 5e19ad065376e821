/* Forked workers for work that may take milliseconds or more, watched with sd_event_add_child(). */
#define _GNU_SOURCE
#include "async.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"

typedef struct AsyncJob {
        async_done_t cb;
        void *userdata;
} AsyncJob;

static int on_child_exit(sd_event_source *source, const siginfo_t *si, void *userdata) {
        AsyncJob *job = userdata;
        int r = 0;

        if (si->si_code != CLD_EXITED)
                r = -ECHILD;
        else if (si->si_status != EXIT_SUCCESS)
                r = -EIO;
        job->cb(r, job->userdata);
        /* A floating source holds its own reference: dropping it frees the source (once dispatch is
         * over) and, by its destroy callback, the job. */
        (void) sd_event_source_set_floating(source, false);
        return 0;
}

static bool rm_failed;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        if (remove(path) < 0 && errno != ENOENT) {
                log_warning_errno(errno, "could not remove %s: %m", path);
                rm_failed = true;
        }
        return 0;
}

/* The worker: depth first, symlinks as themselves (FTW_PHYS), not into other mounts (FTW_MOUNT). */
__attribute__((noreturn)) static void rm_rf_child(const char *path) {
        sigset_t none;

        /* The daemon's blocked signals (sd-event's) are not the worker's: a stop of the service ends
         * it. A daemon that dies first does not: the tree is still better gone. */
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        if (access(path, F_OK) < 0)
                _exit(errno == ENOENT ? EXIT_SUCCESS : EXIT_FAILURE);
        if (nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0) {
                log_warning_errno(errno, "could not walk %s: %m", path);
                _exit(EXIT_FAILURE);
        }
        _exit(rm_failed ? EXIT_FAILURE : EXIT_SUCCESS);
}

int async_rm_rf(sd_event *e, const char *path, async_done_t cb, void *userdata) {
        sd_event_source *source = NULL;
        AsyncJob *job;
        pid_t pid;
        int r;

        if (!e || !path || !cb)
                return -EINVAL;

        job = calloc(1, sizeof(*job));
        if (!job)
                return -ENOMEM;
        job->cb = cb;
        job->userdata = userdata;

        pid = fork();
        if (pid < 0) {
                r = -errno;
                free(job);
                return r;
        }
        if (pid == 0)
                rm_rf_child(path);

        r = sd_event_add_child(e, &source, pid, WEXITED, on_child_exit, job);
        if (r < 0) {
                /* Unwatched, the child would stay a zombie: end it (a kill is reaped at once). */
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                free(job);
                return r;
        }
        /* A loop freed first frees the job with the source, without the callback. */
        (void) sd_event_source_set_destroy_callback(source, free);
        r = sd_event_source_set_floating(source, true);
        sd_event_source_unref(source);
        return r < 0 ? r : 0;
}

/* ---- a call in a worker, with its answer ---- */

typedef struct AsyncCall {
        async_result_t cb;
        void *userdata;
        int fd; /* the pipe's read end */
} AsyncCall;

static void async_call_free(void *p) {
        AsyncCall *c = p;

        safe_close(c->fd);
        free(c);
}

static int on_call_exit(sd_event_source *source, const siginfo_t *si, void *userdata) {
        AsyncCall *c = userdata;
        char data[ASYNC_RESULT_MAX];
        size_t size = 0;
        int r = 0;

        if (si->si_code != CLD_EXITED)
                r = -ECHILD;
        else if (si->si_status != EXIT_SUCCESS)
                r = -EIO;
        /* The child has exited: what it wrote is all in the pipe, and the read end sees EOF after. */
        while (r == 0 && size < sizeof(data)) {
                ssize_t n = read(c->fd, data + size, sizeof(data) - size);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                if (n <= 0)
                        break;
                size += (size_t) n;
        }
        c->cb(r, data, r < 0 ? 0 : size, c->userdata);
        (void) sd_event_source_set_floating(source, false);
        return 0;
}

int async_call(
        sd_event *e,
        void (*fn)(const void *arg, int fd),
        const void *arg,
        async_result_t cb,
        void *userdata) {
        sd_event_source *source = NULL;
        AsyncCall *c;
        int pipefd[2], r;
        pid_t pid;

        if (!e || !fn || !cb)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = -errno;
                free(c);
                return r;
        }
        *c = (AsyncCall){ .cb = cb, .userdata = userdata, .fd = pipefd[0] };

        pid = fork();
        if (pid < 0) {
                r = -errno;
                safe_close(pipefd[1]);
                async_call_free(c);
                return r;
        }
        if (pid == 0) {
                sigset_t none;

                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) close(pipefd[0]);
                fn(arg, pipefd[1]);
                _exit(EXIT_SUCCESS);
        }
        safe_close(pipefd[1]);

        r = sd_event_add_child(e, &source, pid, WEXITED, on_call_exit, c);
        if (r < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                async_call_free(c);
                return r;
        }
        (void) sd_event_source_set_destroy_callback(source, async_call_free);
        r = sd_event_source_set_floating(source, true);
        sd_event_source_unref(source);
        return r < 0 ? r : 0;
}

/* Peer checks of session sockets: see peer.h. */
#define _GNU_SOURCE
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

bool peer_cgroup_line_in_unit(const char *line, const char *unit) {
        const char *path = strchr(line, ':');
        size_t l = strlen(unit);

        if (!path || !(path = strchr(path + 1, ':')))
                return false;
        path++;
        for (const char *p = strchr(path, '/'); p; p = strchr(p + 1, '/'))
                if (strncmp(p + 1, unit, l) == 0 &&
                    (p[1 + l] == '/' || p[1 + l] == '\0' || p[1 + l] == '\n'))
                        return true;
        return false;
}

/* The pid a pidfd refers to, from /proc/self/fdinfo. */
static int pidfd_get_pid(int pidfd, pid_t *ret) {
        _cleanup_fclose_ FILE *f = NULL;
        char path[64], line[128];

        (void) snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                const char *v = startswith(line, "Pid:");
                int pid;

                if (!v)
                        continue;
                pid = atoi(v);
                if (pid <= 0)
                        return -ESRCH; /* 0: in another pid namespace; -1: exited */
                *ret = pid;
                return 0;
        }
        return -ENOENT;
}

static void refuse(PeerInfo *ret, const char *why, const char *unit) {
        (void) snprintf(ret->reason, sizeof(ret->reason), "%s%s", why, strempty(unit));
}

int peer_check_session(int fd, const char *unit, uid_t trusted_uid, PeerInfo *ret) {
        _cleanup_close_ int pidfd = -EBADF;
        _cleanup_fclose_ FILE *f = NULL;
        struct ucred cred = {};
        socklen_t l = sizeof(cred);
        char path[64], line[1024];
        bool inside = false;
        int r;

        *ret = (PeerInfo){ .pid = 0, .uid = (uid_t) -1 };
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &l) < 0)
                return -errno;
        ret->pid = cred.pid;
        ret->uid = cred.uid;
        if (cred.uid == trusted_uid)
                return 1;

        l = sizeof(pidfd);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &l) < 0) {
                if (errno != ENOPROTOOPT)
                        return -errno;
                pidfd = (int) syscall(SYS_pidfd_open, cred.pid, 0);
                if (pidfd < 0) {
                        refuse(ret, "the connecting process is gone", NULL);
                        return 0;
                }
        } else {
                r = pidfd_get_pid(pidfd, &ret->pid);
                if (r < 0) {
                        refuse(ret, "the connecting process is gone or in no pid namespace of ours", NULL);
                        return 0;
                }
        }

        (void) snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) ret->pid);
        f = fopen(path, "re");
        if (!f) {
                refuse(ret, "the connecting process is gone", NULL);
                return 0;
        }
        while (!inside && fgets(line, sizeof(line), f))
                inside = peer_cgroup_line_in_unit(line, unit);

        /* The pid still names the process the pidfd pins: it has not exited since we looked. */
        {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };

                if (poll(&p, 1, 0) != 0) {
                        refuse(ret, "the connecting process exited while it was checked", NULL);
                        return 0;
                }
        }
        if (!inside) {
                refuse(ret, "it runs outside the session's unit ", unit);
                return 0;
        }
        return 1;
}

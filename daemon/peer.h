/* Who is on the other end of a unix socket of a session (channel, model.sock, egress.sock). The socket
 * file's owner and mode keep out other users, but any process of the session user's uid on the host
 * could connect and speak for the session (issue 14, defect 2). A peer is admitted when it runs inside
 * the session's own unit (its container), or is the daemon's own user (root for --system), which owns
 * the daemon and its sockets anyway; everything else is refused. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct PeerInfo {
        pid_t pid;
        uid_t uid;
        char reason[160]; /* why it was refused, for the audit record */
} PeerInfo;

/* 1 when the peer of the connected socket fd may speak for the session whose unit is unit, 0 when it
 * may not (ret->reason says why), a negative errno when it could not be told (treat as refused). The
 * peer is pinned by a pidfd (SO_PEERPIDFD, else pidfd_open() of SO_PEERCRED's pid) for the check, so a
 * peer that exits and whose pid is reused is not mistaken for another process. */
int peer_check_session(int fd, const char *unit, uid_t trusted_uid, PeerInfo *ret);

/* Whether one line of /proc/PID/cgroup ("ID:CONTROLLERS:PATH") puts the process in unit (a path
 * component equal to unit, as in ".../ccdocker-session-<id>.service/libpod-payload-..."). */
bool peer_cgroup_line_in_unit(const char *line, const char *unit);

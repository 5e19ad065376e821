/* Host workspaces, checked with the caller's own rights (issue 14, defect 1; docs/security.md). The
 * system daemon runs as root, so a check it made itself would let any caller have any directory below
 * WorkspaceRoots= mounted read-write, and its errors would tell a caller what exists where the caller
 * cannot look. So the directory is resolved and opened in a forked worker that has become the caller
 * (uid, gid and the caller's groups): the caller gets it only if it could read, write and enter it
 * itself, and every error is what the caller would have seen. What was checked is kept as its device
 * and inode, and checked again, without following any symlink, just before the container is made. */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

/* r = 0: path (resolved, below a root as it resolves) is a directory uid may read, write and enter;
 * dev and ino say which. r < 0: message says why, in the caller's terms. */
typedef void (*workspace_checked_t)(
        int r, const char *path, dev_t dev, ino_t ino, const char *message, void *userdata);

/* roots: WorkspaceRoots=, resolved by the daemon (they are its configuration, not the caller's). */
int workspace_check_async(
        sd_event *e, uid_t uid, const char *path, char **roots, workspace_checked_t cb, void *userdata);

/* Whether path, walked again without following symlinks, is still the directory dev:ino. 0 yes,
 * -ESTALE it is another, another negative errno if it cannot be opened. */
int workspace_verify(const char *path, dev_t dev, ino_t ino);

/* Whether path (absolute, normalised) is below root or is root. */
bool path_is_below(const char *path, const char *root);

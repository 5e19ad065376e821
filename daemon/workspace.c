/* Host workspaces checked as the caller: see workspace.h. */
#define _GNU_SOURCE
#include "workspace.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "async.h"
#include "cleanup.h"
#include "util.h"

bool path_is_below(const char *path, const char *root) {
        const char *rest;

        if (streq(root, "/"))
                return true;
        rest = startswith(path, root);
        return rest && (rest[0] == '\0' || rest[0] == '/');
}

typedef struct WorkspaceRequest {
        uid_t uid;
        char *path;
        char **roots; /* resolved */
        workspace_checked_t cb;
        void *userdata;
} WorkspaceRequest;

/* What the worker writes back. */
typedef struct WorkspaceAnswer {
        int error; /* 0, or a positive errno */
        char what[64];
        dev_t dev;
        ino_t ino;
        char path[PATH_MAX];
} WorkspaceAnswer;

static void request_free(WorkspaceRequest *q) {
        free(q->path);
        strv_free(q->roots);
        free(q);
}

/* Becomes uid with its own groups, as its login would give them. */
static int become(uid_t uid) {
        struct passwd pw, *p = NULL;
        char buf[4096];
        gid_t groups[256];
        int n = (int) ELEMENTSOF(groups);
        gid_t gid = (gid_t) uid;

        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &p) == 0 && p) {
                gid = p->pw_gid;
                if (getgrouplist(p->pw_name, gid, groups, &n) < 0)
                        n = 0; /* more than we hold: only its primary group */
        } else
                n = 0;
        if (setgroups((size_t) n, groups) < 0 || setresgid(gid, gid, gid) < 0 ||
            setresuid(uid, uid, uid) < 0)
                return -errno;
        return 0;
}

static void answer(int fd, WorkspaceAnswer *a, int error, const char *what) {
        a->error = error;
        (void) snprintf(a->what, sizeof(a->what), "%s", what);
        (void) !write(fd, a, sizeof(*a));
}

static void check_child(const void *arg, int fd) {
        const WorkspaceRequest *q = arg;
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ char *real = NULL;
        WorkspaceAnswer a = {};
        struct stat st;
        bool below = false;
        int r;

        if (q->uid != geteuid()) {
                r = become(q->uid);
                if (r < 0)
                        return answer(fd, &a, -r, "the daemon could not take the caller's rights");
        }
        real = realpath(q->path, NULL);
        if (!real)
                return answer(fd, &a, errno, "it cannot be resolved");
        for (char **i = q->roots; i && *i && !below; i++)
                below = path_is_below(real, *i);
        if (!below)
                return answer(
                        fd, &a, EXDEV, "it leads out of every workspace root once symlinks are resolved");
        dfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return answer(fd, &a, errno, "it cannot be opened as a directory");
        if (fstat(dfd, &st) < 0)
                return answer(fd, &a, errno, "it cannot be looked at");
        /* As the caller itself: its uid, its groups, the ACLs that apply to them. */
        if (access(real, R_OK | W_OK | X_OK) < 0)
                return answer(fd, &a, errno, "the caller may not read, write and enter it");
        a.dev = st.st_dev;
        a.ino = st.st_ino;
        (void) snprintf(a.path, sizeof(a.path), "%s", real);
        answer(fd, &a, 0, "");
}

static void on_checked(int r, const void *data, size_t size, void *userdata) {
        WorkspaceRequest *q = userdata;
        const WorkspaceAnswer *a = data;
        char message[256];

        if (r < 0 || size != sizeof(*a)) {
                (void) snprintf(message, sizeof(message), "the check of '%s' did not finish", q->path);
                q->cb(r < 0 ? r : -EIO, NULL, 0, 0, message, q->userdata);
        } else if (a->error != 0) {
                (void) snprintf(
                        message,
                        sizeof(message),
                        "'%s' is not a workspace uid %u may use: %s (%s)",
                        q->path,
                        (unsigned) q->uid,
                        a->what,
                        strerror(a->error));
                q->cb(-a->error, NULL, 0, 0, message, q->userdata);
        } else
                q->cb(0, a->path, a->dev, a->ino, NULL, q->userdata);
        request_free(q);
}

int workspace_check_async(
        sd_event *e, uid_t uid, const char *path, char **roots, workspace_checked_t cb, void *userdata) {
        WorkspaceRequest *q;
        size_t n = 0;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        *q = (WorkspaceRequest){ .uid = uid, .cb = cb, .userdata = userdata };
        q->path = strdup(path);
        q->roots = calloc(strv_length(roots) + 1, sizeof(char *));
        if (!q->path || !q->roots) {
                request_free(q);
                return -ENOMEM;
        }
        /* The roots as they resolve, as the daemon sees them: the caller's view of them does not count. */
        for (char **i = roots; i && *i; i++) {
                char *real = realpath(*i, NULL);

                if (real)
                        q->roots[n++] = real;
        }
        r = async_call(e, check_child, q, on_checked, q);
        if (r < 0)
                request_free(q);
        return r;
}

int workspace_verify(const char *path, dev_t dev, ino_t ino) {
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        fd = (int) syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        return st.st_dev == dev && st.st_ino == ino ? 0 : -ESTALE;
}

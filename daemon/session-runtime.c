/* session-runtime: the manager's runtimes and a session's (session-runtime.h). */
#define _GNU_SOURCE
#include "session-runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "docker.h"
#include "log.h"
#include "manager.h"
#include "session.h"
#include "util.h"

static const char *runtime_socket_key(RuntimeKind k) {
        return k == RUNTIME_DOCKER ? "DockerSocket" : "PodmanSocket";
}

static const char *config_socket(const Manager *m, RuntimeKind k) {
        return k == RUNTIME_DOCKER ? m->config.docker_socket : m->config.podman_socket;
}

RuntimeKind manager_runtime_kind(const Manager *m) {
        RuntimeKind k = runtime_kind_from_string(m->config.runtime);

        return k < 0 ? RUNTIME_PODMAN : k;
}

Runtime *manager_runtime(Manager *m, RuntimeKind k) {
        _cleanup_free_ char *secrets = NULL;
        int r;

        if (k < 0 || k >= _RUNTIME_KIND_MAX)
                return NULL;
        if (m->runtimes[k])
                return m->runtimes[k];

        if (k == RUNTIME_DOCKER && asprintf(&secrets, "%s/docker-secrets", m->config.runtime_dir) < 0) {
                log_oom();
                return NULL;
        }
        r = runtime_new(
                m->event,
                k,
                config_socket(m, k),
                k == RUNTIME_PODMAN ? m->podman : NULL,
                secrets,
                &m->runtimes[k]);
        if (r >= 0)
                r = runtime_set_timeout(m->runtimes[k], m->config.podman_timeout_sec);
        if (r < 0) {
                m->runtimes[k] = runtime_free(m->runtimes[k]);
                log_error_errno(r, "could not set up the %s client: %m", runtime_kind_to_string(k));
                return NULL;
        }
        return m->runtimes[k];
}

/* Whether something accepts connections on the socket: a runtime that is not there fails the start
 * with its socket named, rather than every session later. A connect on a local socket does not wait. */
static int socket_answers(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        return 0;
}

/* The systemd manager's own cgroup, which its units' cgroups lie below: "/" for a system manager, the
 * user@.service's for a user's. Read once, at start. */
static int read_manager_cgroup(Manager *m) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char *s = NULL;
        int r;

        r = sd_bus_get_property_string(
                m->systemd_bus,
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1/unit/_2d_2eslice",
                "org.freedesktop.systemd1.Slice",
                "ControlGroup",
                &error,
                &s);
        if (r < 0)
                return log_error_errno(
                        r,
                        "Runtime=docker: could not read the systemd manager's root cgroup (-.slice): %s",
                        error.message ?: strerror(-r));
        if (isempty(s)) {
                free(s);
                s = strdup("/");
                if (!s)
                        return log_oom();
        }
        free(m->systemd_cgroup);
        m->systemd_cgroup = s;
        log_debug("Runtime=docker: units' cgroups are below %s", s);
        return 0;
}

int manager_start_runtimes(Manager *m) {
        RuntimeKind k = runtime_kind_from_string(m->config.runtime);
        int r;

        if (k < 0)
                return log_error_errno(EINVAL, "unknown Runtime=%s", strempty(m->config.runtime));
        if (!manager_runtime(m, RUNTIME_PODMAN) || !manager_runtime(m, k))
                return -ENOMEM;

        r = socket_answers(config_socket(m, k));
        if (r < 0)
                return log_error_errno(
                        r,
                        "Runtime=%s: nothing answers on %s (%s=): %m. Start %s, or point %s= at its socket",
                        runtime_kind_to_string(k),
                        config_socket(m, k),
                        runtime_socket_key(k),
                        k == RUNTIME_DOCKER ? "dockerd" : "the podman service (podman system service)",
                        runtime_socket_key(k));
        if (k == RUNTIME_DOCKER)
                return read_manager_cgroup(m);
        return 0;
}

void manager_free_runtimes(Manager *m) {
        for (int k = 0; k < _RUNTIME_KIND_MAX; k++)
                m->runtimes[k] = runtime_free(m->runtimes[k]);
        m->systemd_cgroup = mfree(m->systemd_cgroup);
}

Runtime *session_runtime(Session *s) {
        RuntimeKind k = runtime_kind_from_string(s->config ? s->config->runtime : NULL);

        if (k < 0) {
                log_error("session %s: unknown runtime '%s'", s->id, s->config->runtime);
                return NULL;
        }
        return manager_runtime(s->manager, k);
}

const char *session_runtime_name(const Session *s) {
        RuntimeKind k = runtime_kind_from_string(s->config ? s->config->runtime : NULL);

        return runtime_kind_to_string(k) ?: "the container runtime";
}

int session_unit_cgroup(Session *s, char **ret) {
        Manager *m = s->manager;

        if (!m->systemd_cgroup) {
                int r = read_manager_cgroup(m);

                if (r < 0)
                        return r;
        }
        return docker_unit_cgroup(m->systemd_cgroup, s->slice, s->unit, ret);
}

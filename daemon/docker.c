/* docker: Docker Engine as a session's runtime. The API calls are podman.c's client with Docker's URL
 * prefix (the transport, timeouts, size cap and error mapping are the same; Docker's error bodies are
 * {"message"}, which podman.c already reads). What differs is here: the create body (HostConfig), the
 * cgroup parent that puts the container in the session's unit, and secrets as files. */
#define _GNU_SOURCE
#include "docker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

int docker_client_new(sd_event *event, const char *socket_path, PodmanClient **ret) {
        PodmanClient *c = NULL;
        int r;

        if (!ret)
                return -EINVAL;
        r = podman_client_new(event, socket_path, &c);
        if (r < 0)
                return r;
        r = podman_client_set_url_prefix(c, DOCKER_URL_PREFIX);
        if (r < 0) {
                podman_client_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int docker_container_create(PodmanClient *c, json_t *spec, podman_callback_t cb, void *userdata) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        const char *name = json_string_value(json_object_get(spec, "Name"));

        if (!json_is_object(spec) || isempty(name))
                return -EINVAL;
        body = json_copy(spec); /* shallow: the values stay spec's */
        if (!body || json_object_del(body, "Name") < 0)
                return -ENOMEM;
        return podman_request_name(
                c, "POST", "/containers/create?name=", name, NULL, body, false, cb, userdata);
}

int docker_container_inspect(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata) {
        return podman_request_name(c, "GET", "/containers/", name, "/json", NULL, false, cb, userdata);
}

int docker_container_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata) {
        return podman_request_name(
                c, "DELETE", "/containers/", name, "?force=true&v=true", NULL, true, cb, userdata);
}

int docker_image_exists(PodmanClient *c, const char *image, podman_callback_t cb, void *userdata) {
        return podman_request_name(c, "GET", "/images/", image, "/json", NULL, false, cb, userdata);
}

int docker_ping(PodmanClient *c, podman_callback_t cb, void *userdata) {
        return podman_request(c, "GET", "/_ping", NULL, cb, userdata);
}

/* ---- secrets as files ---- */

static bool file_name_is_valid(const char *name) {
        return !isempty(name) && !strchr(name, '/') && !streq(name, ".") && !streq(name, "..");
}

int docker_secret_write(const char *dir, const char *name, const char *value) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        size_t n, done = 0;

        if (isempty(dir) || !file_name_is_valid(name) || !value)
                return -EINVAL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400);
        if (fd < 0)
                return -errno;
        n = strlen(value);
        while (done < n) {
                ssize_t k = write(fd, value + done, n - done);

                if (k < 0) {
                        int e = errno == EINTR ? 0 : -errno;

                        if (e == 0)
                                continue;
                        (void) unlink(path);
                        return e;
                }
                done += (size_t) k;
        }
        return 0;
}

int docker_secret_chown(const char *dir, const char *name, uid_t uid, gid_t gid) {
        _cleanup_free_ char *path = NULL;

        if (isempty(dir) || !file_name_is_valid(name))
                return -EINVAL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        if (lchown(path, uid, gid) < 0)
                return errno == EPERM ? 0 : -errno;
        return 0;
}

int docker_secret_unlink(const char *dir, const char *name) {
        _cleanup_free_ char *path = NULL;

        if (isempty(dir) || !file_name_is_valid(name))
                return -EINVAL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* ---- the unit's cgroup ---- */

int docker_unit_cgroup(const char *root, const char *slice, const char *unit, char **ret) {
        _cleanup_free_ char *path = NULL;
        const char *base, *dash;
        size_t stem;

        if (isempty(root) || root[0] != '/' || isempty(slice) || !endswith(slice, ".slice") ||
            isempty(unit) || strchr(unit, '/') || strchr(slice, '/') || !ret)
                return -EINVAL;

        /* The root without a trailing slash ("/" becomes ""), then every prefix of the slice's name that
         * ends before a dash, as its own slice: a-b-c.slice is a.slice/a-b.slice/a-b-c.slice. */
        path = strndup(root, strlen(root) - (endswith(root, "/") ? 1 : 0));
        if (!path)
                return -ENOMEM;
        stem = strlen(slice) - strlen(".slice");
        if (stem == 0 || slice[0] == '-' || slice[stem - 1] == '-')
                return -EINVAL;
        base = slice;
        for (dash = strchr(base, '-'); dash && (size_t) (dash - slice) < stem;
             dash = strchr(dash + 1, '-')) {
                char *p;

                if (dash[1] == '-')
                        return -EINVAL;
                if (asprintf(&p, "%s/%.*s.slice", path, (int) (dash - slice), slice) < 0)
                        return -ENOMEM;
                free(path);
                path = p;
        }
        {
                char *p;

                if (asprintf(&p, "%s/%s/%s", path, slice, unit) < 0)
                        return -ENOMEM;
                free(path);
                path = p;
        }
        *ret = TAKE_PTR(path);
        return 0;
}

/* ---- the create body ---- */

static int append_bind(json_t *mounts, const char *source, const char *target, bool read_only) {
        /* rprivate: nothing mounted later on the host side propagates in. Docker's bind mounts take no
         * nosuid (docs/runtimes.md): no-new-privileges and no capabilities keep a setuid file inert. */
        return json_array_append_new(
                       mounts,
                       json_pack(
                               "{s:s, s:s, s:s, s:b, s:{s:s}}",
                               "Type",
                               "bind",
                               "Source",
                               source,
                               "Target",
                               target,
                               "ReadOnly",
                               read_only,
                               "BindOptions",
                               "Propagation",
                               "rprivate")) < 0
                ? -ENOMEM
                : 0;
}

int docker_container_spec_to_json(const PodmanContainerSpec *p, const char *secrets_dir, json_t **ret) {
        _cleanup_(json_decrefp) json_t *spec = NULL, *host = NULL, *mounts = NULL, *env = NULL,
                                       *labels = NULL, *tmpfs = NULL;
        _cleanup_free_ char *user = NULL, *home = NULL;

        if (!p || !ret || isempty(p->name) || isempty(p->image) || isempty(p->network) ||
            isempty(p->workspace) || isempty(p->channel_dir) || isempty(p->home) ||
            isempty(p->cgroup_parent) || (p->n_secrets > 0 && isempty(secrets_dir)))
                return -EINVAL;

        mounts = json_array();
        env = json_array();
        labels = podman_assignments_to_object(p->labels);
        if (!mounts || !env || !labels ||
            asprintf(&user, "%u:%u", (unsigned) p->uid, (unsigned) p->gid) < 0 ||
            asprintf(
                    &home,
                    "rw,nosuid,nodev,size=256m,mode=0700,uid=%u,gid=%u",
                    (unsigned) p->uid,
                    (unsigned) p->gid) < 0)
                return -ENOMEM;
        /* Docker keeps the first of two equal names in Env; podman's later entries win: keep the last. */
        for (char **e = p->environment; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                bool later = false;

                if (!eq)
                        continue;
                for (char **f = e + 1; *f && !later; f++)
                        later = strncmp(*f, *e, (size_t) (eq - *e) + 1) == 0;
                if (!later && json_array_append_new(env, json_string(*e)) < 0)
                        return -ENOMEM;
        }

        /* The same tmpfs as podman's; the home is handed to the container's user (podman's "U"). */
        tmpfs = json_pack(
                "{s:s, s:s, s:s, s:s}",
                "/tmp",
                "rw,nosuid,nodev,size=256m",
                "/run",
                "rw,nosuid,nodev,size=256m",
                "/var/tmp",
                "rw,nosuid,nodev,size=256m",
                p->home,
                home);
        if (!tmpfs)
                return -ENOMEM;

        if (append_bind(mounts, p->workspace, "/workspace", false) < 0 ||
            (p->shared && append_bind(mounts, p->shared, "/shared", p->shared_read_only) < 0) ||
            /* The channel's directory, not its socket: a restarted daemon binds a new socket there. */
            append_bind(mounts, p->channel_dir, "/run/ccdocker", false) < 0)
                return -ENOMEM;
        /* Secrets: each a file of the daemon's, bound read-only where podman puts its secrets. */
        for (size_t i = 0; i < p->n_secrets; i++) {
                _cleanup_free_ char *source = NULL, *target = NULL;

                if (!file_name_is_valid(p->secrets[i].secret) || !file_name_is_valid(p->secrets[i].file))
                        return -EINVAL;
                if (asprintf(&source, "%s/%s", secrets_dir, p->secrets[i].secret) < 0 ||
                    asprintf(&target, "/run/ccdocker-secrets/%s", p->secrets[i].file) < 0)
                        return -ENOMEM;
                if (append_bind(mounts, source, target, true) < 0)
                        return -ENOMEM;
        }

        host = json_pack(
                "{s:[s], s:[s], s:b, s:s, s:s, s:s, s:O, s:O, s:I, s:I, s:I, s:I, s:b}",
                "CapDrop",
                "ALL",
                "SecurityOpt",
                "no-new-privileges",
                "ReadonlyRootfs",
                p->read_only_root,
                "NetworkMode",
                p->network,
                "CgroupParent",
                p->cgroup_parent,
                "CgroupnsMode",
                "private",
                "Mounts",
                mounts,
                "Tmpfs",
                tmpfs,
                "Memory",
                (json_int_t) p->memory,
                "MemorySwap",
                (json_int_t) p->memory,
                "NanoCpus",
                (json_int_t) (p->cpu_millis * 1000000),
                "PidsLimit",
                (json_int_t) p->pids,
                "Init",
                0);
        if (!host)
                return -ENOMEM;

        spec = json_pack(
                "{s:s, s:s, s:s, s:O, s:O, s:i, s:O, s:b, s:b, s:b}",
                "Name",
                p->name,
                "Image",
                p->image,
                "User",
                user,
                "Env",
                env,
                "Labels",
                labels,
                "StopTimeout",
                (int) p->stop_timeout_sec,
                "HostConfig",
                host,
                "AttachStdout",
                1,
                "AttachStderr",
                1,
                "Tty",
                0);
        if (!spec)
                return -ENOMEM;

        if (p->command) {
                json_t *argv = json_array();

                if (!argv || json_object_set_new(spec, "Cmd", argv) < 0)
                        return -ENOMEM;
                for (char **a = p->command; *a; a++)
                        if (json_array_append_new(argv, json_string(*a)) < 0)
                                return -ENOMEM;
        }

        *ret = TAKE_PTR(spec);
        return 0;
}

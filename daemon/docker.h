/* Docker Engine as a session's runtime (runtime.h): the API at /v1.41 (Docker 20.10, Debian 12's
 * docker.io) over its unix socket, through podman.c's client with Docker's URL prefix; the create body
 * of a session's container with the same hardening as podman's; secrets as files (Docker's own are
 * Swarm's only); and the cgroup a session's container goes below so that its unit holds it. */
#pragma once

#include <jansson.h>
#include <systemd/sd-event.h>

#include "podman.h"

/* The API version every path carries: Docker 20.10 speaks 1.41, and later engines accept it. */
#define DOCKER_URL_PREFIX "http://d/v1.41"
#define DOCKER_SOCKET_DEFAULT "/run/docker.sock"

/* A PodmanClient that speaks to Docker Engine at socket_path. */
int docker_client_new(sd_event *event, const char *socket_path, PodmanClient **ret);

/* Docker's POST /containers/create body for spec, with "Name" for docker_container_create() (sent as
 * ?name=, not in the body). Secrets are bind mounts of secrets_dir/<secret> at
 * /run/ccdocker-secrets/<file>, read-only. spec->cgroup_parent is required: it is what puts the
 * container in the session's unit. -EINVAL for a spec without it or the fields podman also needs. */
int docker_container_spec_to_json(const PodmanContainerSpec *spec, const char *secrets_dir, json_t **ret);
int docker_container_create(PodmanClient *c, json_t *spec, podman_callback_t cb, void *userdata);
/* GET /containers/{name}/json, DELETE /containers/{name}?force=true&v=true (404 is success),
 * GET /images/{name}/json (r = 0 it exists, -ENOENT not), GET /_ping. */
int docker_container_inspect(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata);
int docker_container_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata);
int docker_image_exists(PodmanClient *c, const char *image, podman_callback_t cb, void *userdata);
int docker_ping(PodmanClient *c, podman_callback_t cb, void *userdata);

/* A secret as the file dir/name, mode 0400, created exclusively (-EEXIST if there); its value is never
 * in the create body or in `docker inspect`, only its path. name must be a plain file name. */
int docker_secret_write(const char *dir, const char *name, const char *value);
/* Hands dir/name to uid:gid, the container's user (-EPERM as a non-root daemon is ignored: the file is
 * then the daemon's user's). */
int docker_secret_chown(const char *dir, const char *name, uid_t uid, gid_t gid);
/* Removes dir/name; a missing file is success. */
int docker_secret_unlink(const char *dir, const char *name);

/* The absolute cgroup path of unit inside slice below the systemd manager's own cgroup root ("/" for a
 * system manager; "/user.slice/user-1000.slice/user@1000.service" for a user's), following systemd's
 * dash nesting of slices ("a-b.slice" is "a.slice/a-b.slice"). A NULL slice (the manager's default,
 * which differs between managers) is not guessed: -EINVAL. */
int docker_unit_cgroup(const char *root, const char *slice, const char *unit, char **ret);

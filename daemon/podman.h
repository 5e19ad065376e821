/* A libpod REST client on libcurl's multi interface, driven by the daemon's sd-event loop (the pattern
 * of systemd's src/import/curl-util.c): nothing here blocks. Every call takes a callback that runs
 * once, from the event loop, with the outcome. Docker's compatible API would sit behind the same
 * functions. Also the JSON of a session's container (PodmanContainerSpec), as unit.h has its unit's. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

typedef struct PodmanClient PodmanClient;

/* r: 0 on success, or a negative errno (transport failure, or -EPROTO for an HTTP error status).
 * status: the HTTP status (0 if none arrived). reply: the parsed JSON body when there was one (borrowed
 * for the duration of the callback), else NULL. error: on failure a one-line human message taken from
 * libpod's {"cause","message"} body (its "message", which ends in the cause) or from curl, else NULL.
 *
 * Statuses 200-399 are success (304, "already in that state", included). Errors: 404 -> -ENOENT;
 * 409 -> -EBUSY (libpod's 409 means a conflict with the object's state, such as killing a stopped
 * container; "already exists" comes as a 500); a 500 whose "cause" is one of libpod's sentinels maps to
 * -EEXIST ("that name is already in use"), -ENOENT ("image not known", "no such container") or -EBUSY
 * ("container state improper"); any other status -> -EPROTO. A body over 16 MiB -> -EMSGSIZE, a 2xx body
 * that is not JSON -> -EBADMSG, curl failures -> -ECONNREFUSED, -ETIMEDOUT, -ECONNRESET or -EIO.
 *
 * When a call below returns < 0 the request was not sent and cb is never called; otherwise cb runs
 * exactly once, from the event loop (never from inside the call), unless podman_client_free() cancels
 * the request first. */
typedef void (*podman_callback_t)(int r, long status, json_t *reply, const char *error, void *userdata);

/* Every request has an overall timeout (connect, send, libpod's work, the answer): a call libpod never
 * answers fails with -ETIMEDOUT and an error starting "timeout:" instead of holding its caller forever.
 * No call here is meant to wait long (none is /wait or /attach). */
#define PODMAN_TIMEOUT_DEFAULT_SEC 120

int podman_client_new(sd_event *event, const char *socket_path, PodmanClient **ret);
/* The overall timeout, in seconds (> 0), of requests sent from now on; -EINVAL otherwise. */
int podman_client_set_timeout(PodmanClient *c, uint64_t sec);
/* Cancels outstanding requests without calling their callbacks. May be called from a callback. */
PodmanClient *podman_client_free(PodmanClient *c);

/* Any libpod call: method "GET"/"POST"/"DELETE", path below /v4.0.0/libpod (e.g. "/containers/create"),
 * body NULL or a JSON value sent as application/json (borrowed). */
int podman_request(
        PodmanClient *c,
        const char *method,
        const char *path,
        json_t *body,
        podman_callback_t cb,
        void *userdata);

/* The same client for another API of the same shape: prefix replaces "http://d/v4.0.0/libpod" in every
 * URL sent from now on (docker.c: "http://d/v1.41", Docker Engine's API). -EINVAL for an empty prefix. */
int podman_client_set_url_prefix(PodmanClient *c, const char *prefix);
/* Like podman_request(), with name URL-escaped between path and suffix (suffix may be NULL). remove:
 * a 404 is success, as for podman_container_remove(). */
int podman_request_name(
        PodmanClient *c,
        const char *method,
        const char *path,
        const char *name,
        const char *suffix,
        json_t *body,
        bool remove,
        podman_callback_t cb,
        void *userdata);

/* POST /containers/create; on success reply holds "Id". */
int podman_container_create(PodmanClient *c, json_t *spec, podman_callback_t cb, void *userdata);
/* GET /containers/{name}/json; 404 arrives as r = -ENOENT. */
int podman_container_inspect(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata);
/* DELETE /containers/{name}?force=true&v=true; a missing container is success (status 404, reply NULL). */
int podman_container_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata);
/* POST /secrets/create?name=NAME&driver=file with the value as the body (podman keeps it in its own
 * store; a container gets it through "secret_env" and `podman inspect` does not show it). An existing
 * name fails (-EEXIST or -EPROTO). The value is wiped from memory with the request. */
int podman_secret_create(
        PodmanClient *c, const char *name, const char *value, podman_callback_t cb, void *userdata);
/* DELETE /secrets/{name}; a missing secret is success. */
int podman_secret_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata);
/* GET /images/{name}/exists; r = 0 exists (204), -ENOENT not (404). */
int podman_image_exists(PodmanClient *c, const char *image, podman_callback_t cb, void *userdata);

/* ---- the container spec ---- */

/* A podman secret given to the container as a file: /run/ccdocker-secrets/<file>, mode 0400, owned by
 * the container's user. */
typedef struct PodmanSecretMount {
        const char *secret; /* the podman secret's name */
        const char *file;   /* the file's name below /run/ccdocker-secrets */
} PodmanSecretMount;

/* What a session's container is made of, for POST /containers/create: the counterpart of unit.h's
 * UnitSpec. Whatever is fixed for every session is not a field and cannot be turned off: no
 * capabilities (cap_drop ALL), no new privileges, split cgroups, tmpfs /tmp, /run, /var/tmp and a home
 * owned by the user, /workspace and /run/ccdocker bound nosuid (SPEC.md 9.4, docs/sandbox.md). All
 * strings are borrowed. */
typedef struct PodmanContainerSpec {
        const char *name; /* the container's name */
        const char *image;
        char **labels;           /* "KEY=value", NULL-ended; may be NULL */
        char **environment;      /* "NAME=value", NULL-ended, later entries win; may be NULL */
        const char *workspace;   /* host directory bound read-write at /workspace */
        const char *channel_dir; /* host directory bound at /run/ccdocker (the channel's socket) */
        const char *home;        /* the user's home, a tmpfs podman hands to the user */
        uid_t uid;               /* the user the container runs as */
        gid_t gid;
        const char *network; /* the network namespace mode: "none" or "host" */
        bool read_only_root; /* read_only_filesystem */
        uint64_t memory;     /* bytes, memory and memory+swap alike */
        uint64_t cpu_millis; /* 1000 = one CPU */
        uint64_t pids;       /* the most tasks */
        uint64_t stop_timeout_sec;
        const PodmanSecretMount *secrets; /* n_secrets of them; none: no "secrets" key */
        size_t n_secrets;
        char **command;        /* NULL-ended; NULL: the image's */
        const char *shared;    /* host directory bound at /shared; NULL: none */
        bool shared_read_only; /* ... read-only */
        /* Docker only (docker.h): the absolute cgroup the container's goes below, the session unit's.
         * podman finds it itself (split cgroups) and ignores this. */
        const char *cgroup_parent;
} PodmanContainerSpec;

/* "KEY=value" entries (labels, environment) as a JSON object; entries without '=' are skipped, a later
 * one wins. NULL on ENOMEM. */
json_t *podman_assignments_to_object(char **l);

/* libpod's SpecGenerator JSON for spec, for podman_container_create(). -EINVAL for a spec without a
 * name, image, network, workspace, channel_dir or home; -ENOMEM. */
int podman_container_spec_to_json(const PodmanContainerSpec *spec, json_t **ret);

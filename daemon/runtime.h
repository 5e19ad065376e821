/* The container runtime behind a session (DESIGN.md decision 3): podman through libpod REST (podman.h)
 * or Docker Engine through its own API (docker.h), both on libcurl multi and the daemon's sd-event loop.
 * A session names its runtime in its stored config, so a restarted daemon re-adopts it through the
 * runtime that made it, whatever Runtime= says now (docs/runtimes.md).
 *
 * Every call has podman.h's contract: < 0 means nothing was sent and cb is never called; otherwise cb
 * runs exactly once, from the event loop, with r = 0 or a negative errno and a one-line error. */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "cleanup.h"
#include "podman.h"
#include "unit.h"

typedef enum RuntimeKind {
        RUNTIME_PODMAN,
        RUNTIME_DOCKER,
        _RUNTIME_KIND_MAX,
        _RUNTIME_KIND_INVALID = -1,
} RuntimeKind;

/* "podman", "docker"; NULL for anything else. */
const char *runtime_kind_to_string(RuntimeKind k);
/* The kind named s; NULL (a record from before runtimes were recorded) is podman; _RUNTIME_KIND_INVALID
 * for an unknown name. */
RuntimeKind runtime_kind_from_string(const char *s);

typedef podman_callback_t runtime_callback_t;
/* What a session's container is made of, the same for both runtimes (podman.h). */
typedef PodmanContainerSpec RuntimeContainerSpec;
typedef PodmanSecretMount RuntimeSecretMount;

typedef struct Runtime Runtime;

/* A runtime over the API socket at socket_path. podman: client is the daemon's PodmanClient, borrowed
 * (it must outlive the runtime); socket_path is then only for messages. docker: client is NULL and one
 * is made; secrets_dir is where its secrets are kept as files (created 0700 if missing). */
int runtime_new(
        sd_event *event,
        RuntimeKind kind,
        const char *socket_path,
        PodmanClient *client,
        const char *secrets_dir,
        Runtime **ret);
Runtime *runtime_free(Runtime *rt);
DEFINE_TRIVIAL_CLEANUP_FUNC(Runtime *, runtime_free);

int runtime_set_timeout(Runtime *rt, uint64_t sec);
RuntimeKind runtime_kind(const Runtime *rt);
const char *runtime_socket(const Runtime *rt);

/* GET /_ping: whether the runtime answers at all (the daemon asks once at start). */
int runtime_ping(Runtime *rt, runtime_callback_t cb, void *userdata);

/* The create body of the runtime for spec. docker: also hands the secret files of spec->secrets to the
 * container's user (they are bind mounts there, not a store of the runtime's). */
int runtime_container_spec_to_json(Runtime *rt, const RuntimeContainerSpec *spec, json_t **ret);
/* Creates the container from runtime_container_spec_to_json()'s body; reply holds "Id". */
int runtime_container_create(Runtime *rt, json_t *spec, runtime_callback_t cb, void *userdata);
/* The container's inspect JSON; both runtimes give State.ExitCode, State.OOMKilled and State.Status. */
int runtime_container_inspect(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata);
/* Forced removal with its anonymous volumes; a missing container is success. */
int runtime_container_remove(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata);
/* A secret the container gets as /run/ccdocker-secrets/<file> (RuntimeSecretMount.secret = name): a
 * podman secret, or for Docker (whose secrets are Swarm's only) a file of the daemon's, mode 0400,
 * bound into the container. Neither shows the value in inspect. */
int runtime_secret_create(
        Runtime *rt, const char *name, const char *value, runtime_callback_t cb, void *userdata);
/* A missing secret is success. */
int runtime_secret_remove(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata);
/* r = 0 the image exists, -ENOENT not. */
int runtime_image_exists(Runtime *rt, const char *image, runtime_callback_t cb, void *userdata);

/* Start-in-unit: what the session's unit runs to start the container and wait for it (ExecStart),
 * filled into spec: `podman start --attach` or `docker -H unix://SOCKET start --attach`. */
void runtime_unit_spec(const Runtime *rt, UnitSpec *spec);

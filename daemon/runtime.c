/* runtime: one small interface over the two container runtimes (runtime.h). podman's calls go to
 * podman.c as they always did; Docker's to docker.c, whose secrets are files and so answer through a
 * deferred event source, keeping "the callback runs from the event loop, never from inside the call". */
#define _GNU_SOURCE
#include "runtime.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "docker.h"
#include "log.h"
#include "util.h"

typedef struct RuntimeDeferred RuntimeDeferred;

/* A file secret's outcome, waiting for the event loop. */
struct RuntimeDeferred {
        Runtime *runtime;
        RuntimeDeferred *prev, *next;
        sd_event_source *source;
        int r;
        runtime_callback_t cb;
        void *userdata;
};

struct Runtime {
        RuntimeKind kind;
        sd_event *event;
        char *socket_path;
        PodmanClient *client;
        bool own_client;
        char *secrets_dir; /* docker */
        RuntimeDeferred *deferred;
};

static const char *const kind_names[_RUNTIME_KIND_MAX] = {
        [RUNTIME_PODMAN] = "podman",
        [RUNTIME_DOCKER] = "docker",
};

const char *runtime_kind_to_string(RuntimeKind k) {
        if (k < 0 || k >= _RUNTIME_KIND_MAX)
                return NULL;
        return kind_names[k];
}

RuntimeKind runtime_kind_from_string(const char *s) {
        if (!s)
                return RUNTIME_PODMAN;
        for (int k = 0; k < _RUNTIME_KIND_MAX; k++)
                if (streq(s, kind_names[k]))
                        return (RuntimeKind) k;
        return _RUNTIME_KIND_INVALID;
}

int runtime_new(
        sd_event *event,
        RuntimeKind kind,
        const char *socket_path,
        PodmanClient *client,
        const char *secrets_dir,
        Runtime **ret) {
        _cleanup_(runtime_freep) Runtime *rt = NULL;
        int r;

        if (!event || !ret || isempty(socket_path) || kind < 0 || kind >= _RUNTIME_KIND_MAX)
                return -EINVAL;
        if (kind == RUNTIME_PODMAN && !client)
                return -EINVAL;
        if (kind == RUNTIME_DOCKER && (client || isempty(secrets_dir)))
                return -EINVAL;

        rt = calloc(1, sizeof(*rt));
        if (!rt)
                return -ENOMEM;
        rt->kind = kind;
        rt->event = sd_event_ref(event);
        rt->socket_path = strdup(socket_path);
        if (!rt->socket_path)
                return -ENOMEM;
        if (kind == RUNTIME_PODMAN) {
                rt->client = client;
                *ret = TAKE_PTR(rt);
                return 0;
        }

        rt->secrets_dir = strdup(secrets_dir);
        if (!rt->secrets_dir)
                return -ENOMEM;
        r = mkdir_p(rt->secrets_dir, 0700);
        if (r < 0)
                return r;
        r = docker_client_new(event, socket_path, &rt->client);
        if (r < 0)
                return r;
        rt->own_client = true;
        *ret = TAKE_PTR(rt);
        return 0;
}

static void deferred_free(RuntimeDeferred *d) {
        Runtime *rt = d->runtime;

        if (d->next)
                d->next->prev = d->prev;
        if (d->prev)
                d->prev->next = d->next;
        else if (rt)
                rt->deferred = d->next;
        sd_event_source_disable_unref(d->source);
        free(d);
}

Runtime *runtime_free(Runtime *rt) {
        if (!rt)
                return NULL;
        while (rt->deferred)
                deferred_free(rt->deferred);
        if (rt->own_client)
                podman_client_free(rt->client);
        sd_event_unref(rt->event);
        free(rt->socket_path);
        free(rt->secrets_dir);
        return mfree(rt);
}

int runtime_set_timeout(Runtime *rt, uint64_t sec) {
        if (!rt)
                return -EINVAL;
        return podman_client_set_timeout(rt->client, sec);
}

RuntimeKind runtime_kind(const Runtime *rt) {
        return rt ? rt->kind : _RUNTIME_KIND_INVALID;
}

const char *runtime_socket(const Runtime *rt) {
        return rt ? rt->socket_path : NULL;
}

static int on_deferred(sd_event_source *source, void *userdata) {
        RuntimeDeferred *d = userdata;
        runtime_callback_t cb = d->cb;
        void *cb_userdata = d->userdata;
        int r = d->r;

        deferred_free(d);
        cb(r, 0, NULL, r < 0 ? strerror(-r) : NULL, cb_userdata);
        return 0;
}

/* The outcome r of something already done, to cb from the event loop. */
static int runtime_defer(Runtime *rt, int r, runtime_callback_t cb, void *userdata) {
        RuntimeDeferred *d;
        int k;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        *d = (RuntimeDeferred){ .r = r, .cb = cb, .userdata = userdata };
        k = sd_event_add_defer(rt->event, &d->source, on_deferred, d);
        if (k < 0) {
                free(d);
                return k;
        }
        d->runtime = rt;
        d->next = rt->deferred;
        if (rt->deferred)
                rt->deferred->prev = d;
        rt->deferred = d;
        return 0;
}

int runtime_ping(Runtime *rt, runtime_callback_t cb, void *userdata) {
        if (!rt || !cb)
                return -EINVAL;
        if (rt->kind == RUNTIME_DOCKER)
                return docker_ping(rt->client, cb, userdata);
        return podman_request(rt->client, "GET", "/_ping", NULL, cb, userdata);
}

int runtime_container_spec_to_json(Runtime *rt, const RuntimeContainerSpec *spec, json_t **ret) {
        int r;

        if (!rt || !spec)
                return -EINVAL;
        if (rt->kind == RUNTIME_PODMAN)
                return podman_container_spec_to_json(spec, ret);
        r = docker_container_spec_to_json(spec, rt->secrets_dir, ret);
        if (r < 0)
                return r;
        for (size_t i = 0; i < spec->n_secrets; i++) {
                r = docker_secret_chown(rt->secrets_dir, spec->secrets[i].secret, spec->uid, spec->gid);
                if (r < 0) {
                        json_decref(*ret);
                        *ret = NULL;
                        return r;
                }
        }
        return 0;
}

int runtime_container_create(Runtime *rt, json_t *spec, runtime_callback_t cb, void *userdata) {
        if (!rt)
                return -EINVAL;
        if (rt->kind == RUNTIME_DOCKER)
                return docker_container_create(rt->client, spec, cb, userdata);
        return podman_container_create(rt->client, spec, cb, userdata);
}

int runtime_container_inspect(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata) {
        if (!rt)
                return -EINVAL;
        if (rt->kind == RUNTIME_DOCKER)
                return docker_container_inspect(rt->client, name, cb, userdata);
        return podman_container_inspect(rt->client, name, cb, userdata);
}

int runtime_container_remove(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata) {
        if (!rt)
                return -EINVAL;
        if (rt->kind == RUNTIME_DOCKER)
                return docker_container_remove(rt->client, name, cb, userdata);
        return podman_container_remove(rt->client, name, cb, userdata);
}

int runtime_secret_create(
        Runtime *rt, const char *name, const char *value, runtime_callback_t cb, void *userdata) {
        if (!rt || !cb)
                return -EINVAL;
        if (rt->kind == RUNTIME_PODMAN)
                return podman_secret_create(rt->client, name, value, cb, userdata);
        if (isempty(name) || !value)
                return -EINVAL;
        return runtime_defer(rt, docker_secret_write(rt->secrets_dir, name, value), cb, userdata);
}

int runtime_secret_remove(Runtime *rt, const char *name, runtime_callback_t cb, void *userdata) {
        if (!rt || !cb)
                return -EINVAL;
        if (rt->kind == RUNTIME_PODMAN)
                return podman_secret_remove(rt->client, name, cb, userdata);
        if (isempty(name))
                return -EINVAL;
        return runtime_defer(rt, docker_secret_unlink(rt->secrets_dir, name), cb, userdata);
}

int runtime_image_exists(Runtime *rt, const char *image, runtime_callback_t cb, void *userdata) {
        if (!rt)
                return -EINVAL;
        if (rt->kind == RUNTIME_DOCKER)
                return docker_image_exists(rt->client, image, cb, userdata);
        return podman_image_exists(rt->client, image, cb, userdata);
}

void runtime_unit_spec(const Runtime *rt, UnitSpec *spec) {
        if (!rt || !spec || rt->kind != RUNTIME_DOCKER)
                return;
        spec->docker_socket = rt->socket_path;
}

/* podman: the daemon's libpod REST client. Each call is one HTTP request over podman's unix socket,
 * run by libcurl's multi interface on the daemon's sd-event loop (curl-glue.c), with a JSON body out
 * and a size-capped JSON body back. The outcome reaches the caller's callback exactly once and always
 * from the event loop; libpod's error statuses and {"cause","message"} bodies are turned into negative
 * errno values and one readable line. At the end, the JSON of a session's container from its
 * PodmanContainerSpec, with the hardening every container gets. */
#define _GNU_SOURCE
#include "podman.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "cleanup.h"
#include "config-build.h"
#include "curl-glue.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

/* The host part is ignored on a unix socket; podman's own bindings use "d". /v4.0.0/ works on 4.3
 * through 5.x (REFERENCE.md B.1). */
#define PODMAN_URL_PREFIX "http://d/v4.0.0/libpod"

/* The largest body we keep. Inspect output is a few KiB; a bigger answer is a bug or an attack on
 * the daemon's memory, and fails the request. */
#define PODMAN_RESPONSE_MAX (16U * 1024U * 1024U)

/* Connecting to a local socket is quick or it fails; the whole request gets the client's timeout. */
#define PODMAN_CONNECT_TIMEOUT_MSEC 30000L

/* How a request reads its outcome beyond the generic status mapping. */
typedef enum PodmanMode {
        PODMAN_MODE_PLAIN,
        PODMAN_MODE_REMOVE, /* 404 is success (already gone); a 200 report with "Err" set is not */
} PodmanMode;

typedef struct PodmanRequest PodmanRequest;

struct PodmanRequest {
        PodmanClient *client;
        PodmanRequest *prev, *next;

        CURL *easy;
        struct curl_slist *headers;
        char *body; /* CURLOPT_POSTFIELDS is not copied by curl */
        char *response;
        size_t response_size;
        size_t response_allocated;
        bool response_too_big;
        char error_buffer[CURL_ERROR_SIZE];

        PodmanMode mode;
        uint64_t timeout_usec;
        podman_callback_t cb;
        void *userdata;
};

struct PodmanClient {
        sd_event *event;
        CurlGlue *glue;
        char *socket_path;
        char *url_prefix;      /* NULL: PODMAN_URL_PREFIX (docker.c sets Docker Engine's) */
        uint64_t timeout_usec; /* of a whole request */
        PodmanRequest *requests;
};

static void podman_request_unlink(PodmanRequest *req) {
        PodmanClient *c = req->client;

        if (!c)
                return;
        if (req->next)
                req->next->prev = req->prev;
        if (req->prev)
                req->prev->next = req->next;
        else
                c->requests = req->next;
        req->prev = req->next = NULL;
        req->client = NULL;
}

static PodmanRequest *podman_request_free(PodmanRequest *req) {
        if (!req)
                return NULL;

        if (req->client) {
                curl_glue_remove(req->client->glue, req->easy);
                podman_request_unlink(req);
        }
        if (req->easy)
                curl_easy_cleanup(req->easy);
        curl_slist_free_all(req->headers);
        /* A body may carry a secret's value (podman_secret_create()). */
        if (req->body)
                explicit_bzero(req->body, strlen(req->body));
        free(req->body);
        free(req->response);
        return mfree(req);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(PodmanRequest *, podman_request_free);

static size_t podman_on_write(char *data, size_t size, size_t nmemb, void *userdata) {
        PodmanRequest *req = userdata;
        size_t n = size * nmemb;

        if (n == 0)
                return 0;
        if (n > PODMAN_RESPONSE_MAX || req->response_size > PODMAN_RESPONSE_MAX - n) {
                /* Returning less than n makes curl fail the transfer with CURLE_WRITE_ERROR. */
                req->response_too_big = true;
                return 0;
        }

        /* Grow geometrically: curl hands over 16 KiB at a time, and a realloc per chunk copies the whole
         * body each time (quadratic; it showed in the sanitizer build). */
        if (req->response_size + n + 1 > req->response_allocated) {
                size_t a = req->response_allocated ?: 4096;
                char *p;

                while (a < req->response_size + n + 1)
                        a *= 2;
                p = realloc(req->response, a);
                if (!p)
                        return 0;
                req->response = p;
                req->response_allocated = a;
        }

        memcpy(req->response + req->response_size, data, n);
        req->response_size += n;
        req->response[req->response_size] = '\0';
        return n;
}

static int curl_code_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
                return -ECONNRESET;
        default:
                return -EIO;
        }
}

/* libpod's "cause" is a fixed sentinel string (the Go error it wraps); a few of them say more than the
 * status, which is 500 for most failures in 4.3. */
static int libpod_cause_to_errno(const char *cause) {
        static const struct {
                const char *cause;
                int error;
        } table[] = {
                { "that name is already in use", EEXIST }, /* create with a taken name */
                { "container already exists", EEXIST },
                { "image not known", ENOENT }, /* create from a missing image (404 from 4.8) */
                { "no such container", ENOENT },
                { "no such image", ENOENT },
                { "container state improper", EBUSY }, /* kill of a stopped container */
        };

        if (!cause)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(cause, table[i].cause))
                        return -table[i].error;
        return 0;
}

static int http_status_to_errno(long status, json_t *reply) {
        const char *cause = json_string_value(json_object_get(reply, "cause"));
        int r;

        if (status == 404)
                return -ENOENT;
        /* libpod answers 409 when a request conflicts with an object's state (kill of a stopped
         * container, removal of an image in use), not for "already exists" (that is a 500). */
        if (status == 409)
                return -EBUSY;
        r = libpod_cause_to_errno(cause);
        if (r < 0)
                return r;
        return -EPROTO;
}

/* One line for humans: libpod's "message" (which already ends in the cause), else its "cause", else
 * the start of a non-JSON body, else the status. */
static char *http_error_message(long status, json_t *reply, const char *body, size_t body_size) {
        const char *s;
        char *m = NULL;

        s = json_string_value(json_object_get(reply, "message"));
        if (isempty(s))
                s = json_string_value(json_object_get(reply, "cause"));
        if (!isempty(s))
                return strdup(s);

        if (!reply && body_size > 0) {
                int n = (int) strcspn(body, "\r\n");

                if (n > 200)
                        n = 200;
                if (asprintf(&m, "HTTP %ld from libpod: %.*s", status, n, body) < 0)
                        return NULL;
                return m;
        }

        if (asprintf(&m, "HTTP %ld from libpod", status) < 0)
                return NULL;
        return m;
}

/* A DELETE answers 200 with [{"Id","Err"}]: an entry with Err set is a failure with a 200 status. */
static const char *remove_report_error(json_t *reply) {
        size_t i;
        json_t *e;

        if (!json_is_array(reply))
                return NULL;
        json_array_foreach (reply, i, e) {
                const char *err = json_string_value(json_object_get(e, "Err"));

                if (!isempty(err))
                        return err;
        }
        return NULL;
}

static void podman_on_done(CURL *easy, CURLcode result, void *userdata) {
        _cleanup_(podman_request_freep) PodmanRequest *req = userdata;
        _cleanup_(json_decrefp) json_t *reply = NULL;
        _cleanup_free_ char *message = NULL;
        podman_callback_t cb = req->cb;
        void *cb_userdata = req->userdata;
        long status = 0;
        int r = 0;

        /* The glue has already taken the handle out of the multi handle: only unlink from the client,
         * which may be freed by the callback below. */
        podman_request_unlink(req);

        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        if (result != CURLE_OK) {
                if (req->response_too_big) {
                        r = -EMSGSIZE;
                        message = strdup("libpod's response is larger than 16 MiB");
                } else if (result == CURLE_OPERATION_TIMEDOUT) {
                        /* Say which limit ran out: a hung libpod call, not a slow network. */
                        r = -ETIMEDOUT;
                        if (asprintf(
                                    &message,
                                    "timeout: libpod did not answer within %" PRIu64
                                    " s (PodmanTimeoutSec=): %s",
                                    req->timeout_usec / USEC_PER_SEC,
                                    !isempty(req->error_buffer) ? req->error_buffer
                                                                : curl_easy_strerror(result)) < 0)
                                message = NULL;
                } else {
                        r = curl_code_to_errno(result);
                        message =
                                strdup(!isempty(req->error_buffer) ? req->error_buffer
                                                                   : curl_easy_strerror(result));
                }
                if (!message)
                        r = -ENOMEM;
                cb(r, status, NULL, message ?: "out of memory", cb_userdata);
                return;
        }

        if (req->response_size > 0) {
                json_error_t jerr;

                /* JSON_DECODE_ANY: some endpoints answer a bare value (wait: "137"). */
                reply = json_loadb(req->response, req->response_size, JSON_DECODE_ANY, &jerr);
                if (!reply && status >= 200 && status < 400) {
                        r = -EBADMSG;
                        if (asprintf(
                                    &message, "invalid JSON from libpod (HTTP %ld): %s", status, jerr.text) <
                            0)
                                message = NULL;
                        cb(r, status, NULL, message ?: "invalid JSON from libpod", cb_userdata);
                        return;
                }
        }

        if (status >= 400 || status < 200) {
                r = http_status_to_errno(status, reply);
                if (req->mode == PODMAN_MODE_REMOVE && r == -ENOENT) {
                        cb(0, status, NULL, NULL, cb_userdata);
                        return;
                }
                message = http_error_message(status, reply, req->response, req->response_size);
                cb(r, status, reply, message ?: "libpod request failed", cb_userdata);
                return;
        }

        if (req->mode == PODMAN_MODE_REMOVE) {
                const char *err = remove_report_error(reply);

                if (err) {
                        cb(-EIO, status, reply, err, cb_userdata);
                        return;
                }
        }

        cb(0, status, reply, NULL, cb_userdata);
}

static bool method_is_valid(const char *method) {
        if (isempty(method) || strlen(method) > 16)
                return false;
        for (const char *p = method; *p; p++)
                if (*p < 'A' || *p > 'Z')
                        return false;
        return true;
}

/* Printable ASCII without spaces: what goes into the request line unchanged. */
static bool url_part_is_valid(const char *s) {
        for (const char *p = s; *p; p++)
                if (*p <= ' ' || *p >= 127)
                        return false;
        return true;
}

static bool path_is_valid(const char *path) {
        return path && path[0] == '/' && url_part_is_valid(path);
}

static int podman_request_full(
        PodmanClient *c,
        const char *method,
        const char *path,
        const char *name, /* escaped and inserted after path, or NULL */
        const char *suffix,
        json_t *body,
        const char *raw_body, /* sent as is (application/octet-stream) instead of JSON, or NULL */
        PodmanMode mode,
        podman_callback_t cb,
        void *userdata) {
        _cleanup_(podman_request_freep) PodmanRequest *req = NULL;
        _cleanup_free_ char *url = NULL;
        char *escaped = NULL;
        int r;

        if (!c || !cb || !method_is_valid(method) || !path_is_valid(path))
                return -EINVAL;
        if (name && isempty(name))
                return -EINVAL;
        if (suffix && !url_part_is_valid(suffix))
                return -EINVAL;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->mode = mode;
        req->timeout_usec = c->timeout_usec;
        req->cb = cb;
        req->userdata = userdata;

        req->easy = curl_easy_init();
        if (!req->easy)
                return -ENOMEM;

        if (name) {
                escaped = curl_easy_escape(req->easy, name, 0);
                if (!escaped)
                        return -ENOMEM;
        }
        r = asprintf(
                &url,
                "%s%s%s%s",
                c->url_prefix ?: PODMAN_URL_PREFIX,
                path,
                strempty(escaped),
                strempty(suffix));
        curl_free(escaped);
        if (r < 0) {
                url = NULL;
                return -ENOMEM;
        }

        if (body) {
                req->body = json_dumps(body, JSON_COMPACT);
                if (!req->body)
                        return -ENOMEM;
                req->headers = curl_slist_append(req->headers, "Content-Type: application/json");
                if (!req->headers)
                        return -ENOMEM;
        } else if (raw_body) {
                req->body = strdup(raw_body);
                if (!req->body)
                        return -ENOMEM;
                req->headers = curl_slist_append(req->headers, "Content-Type: application/octet-stream");
                if (!req->headers)
                        return -ENOMEM;
        }
        /* No "Expect: 100-continue" round trip for larger bodies. */
        {
                struct curl_slist *l = curl_slist_append(req->headers, "Expect:");

                if (!l)
                        return -ENOMEM;
                req->headers = l;
        }

        if (curl_easy_setopt(req->easy, CURLOPT_UNIX_SOCKET_PATH, c->socket_path) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS, PODMAN_CONNECT_TIMEOUT_MSEC) !=
                    CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, (long) (c->timeout_usec / 1000)) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_USERAGENT, "ccdockerd/" PROJECT_VERSION) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->error_buffer) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, podman_on_write) != CURLE_OK ||
            curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req) != CURLE_OK)
                return -EINVAL;

        if (req->body || streq(method, "POST")) {
                /* An empty POST still needs POSTFIELDS, or curl reads the body from stdin. */
                if (curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body ?: "") != CURLE_OK ||
                    curl_easy_setopt(
                            req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(req->body ?: "")) !=
                            CURLE_OK)
                        return -EINVAL;
        } else if (curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L) != CURLE_OK)
                return -EINVAL;
        /* DELETE, PUT, and a GET with a body: the verb on top of the POST or GET set up above. */
        if (!streq(method, req->body || streq(method, "POST") ? "POST" : "GET") &&
            curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)
                return -EINVAL;

        r = curl_glue_add(c->glue, req->easy, podman_on_done, req);
        if (r < 0)
                return r;

        req->client = c;
        req->next = c->requests;
        if (c->requests)
                c->requests->prev = req;
        c->requests = req;
        TAKE_PTR(req);
        return 0;
}

int podman_client_new(sd_event *event, const char *socket_path, PodmanClient **ret) {
        _cleanup_(curl_glue_unrefp) CurlGlue *glue = NULL;
        PodmanClient *c;
        int r;

        if (!event || !ret || isempty(socket_path))
                return -EINVAL;
        if (strlen(socket_path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return -ENAMETOOLONG;

        r = curl_glue_new(event, &glue);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->socket_path = strdup(socket_path);
        if (!c->socket_path) {
                free(c);
                return -ENOMEM;
        }
        c->event = sd_event_ref(event);
        c->glue = TAKE_PTR(glue);
        c->timeout_usec = PODMAN_TIMEOUT_DEFAULT_SEC * USEC_PER_SEC;

        *ret = c;
        return 0;
}

int podman_client_set_timeout(PodmanClient *c, uint64_t sec) {
        /* CURLOPT_TIMEOUT_MS takes a long of milliseconds; 0 would mean no limit. */
        if (!c || sec == 0 || sec > (uint64_t) LONG_MAX / MSEC_PER_SEC)
                return -EINVAL;
        c->timeout_usec = sec * USEC_PER_SEC;
        return 0;
}

PodmanClient *podman_client_free(PodmanClient *c) {
        if (!c)
                return NULL;

        /* Outstanding requests are dropped without their callbacks. */
        while (c->requests)
                podman_request_free(c->requests);

        curl_glue_unref(c->glue);
        sd_event_unref(c->event);
        free(c->socket_path);
        free(c->url_prefix);
        return mfree(c);
}

int podman_client_set_url_prefix(PodmanClient *c, const char *prefix) {
        char *p;

        if (!c || isempty(prefix) || !url_part_is_valid(prefix))
                return -EINVAL;
        p = strdup(prefix);
        if (!p)
                return -ENOMEM;
        free(c->url_prefix);
        c->url_prefix = p;
        return 0;
}

int podman_request_name(
        PodmanClient *c,
        const char *method,
        const char *path,
        const char *name,
        const char *suffix,
        json_t *body,
        bool remove,
        podman_callback_t cb,
        void *userdata) {
        if (isempty(name))
                return -EINVAL;
        return podman_request_full(
                c,
                method,
                path,
                name,
                suffix,
                body,
                NULL,
                remove ? PODMAN_MODE_REMOVE : PODMAN_MODE_PLAIN,
                cb,
                userdata);
}

int podman_request(
        PodmanClient *c,
        const char *method,
        const char *path,
        json_t *body,
        podman_callback_t cb,
        void *userdata) {
        return podman_request_full(c, method, path, NULL, NULL, body, NULL, PODMAN_MODE_PLAIN, cb, userdata);
}

int podman_container_create(PodmanClient *c, json_t *spec, podman_callback_t cb, void *userdata) {
        if (!json_is_object(spec))
                return -EINVAL;
        return podman_request_full(
                c, "POST", "/containers/create", NULL, NULL, spec, NULL, PODMAN_MODE_PLAIN, cb, userdata);
}

int podman_container_inspect(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata) {
        if (isempty(name))
                return -EINVAL;
        return podman_request_full(
                c, "GET", "/containers/", name, "/json", NULL, NULL, PODMAN_MODE_PLAIN, cb, userdata);
}

int podman_container_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata) {
        if (isempty(name))
                return -EINVAL;
        return podman_request_full(
                c,
                "DELETE",
                "/containers/",
                name,
                "?force=true&v=true",
                NULL,
                NULL,
                PODMAN_MODE_REMOVE,
                cb,
                userdata);
}

int podman_image_exists(PodmanClient *c, const char *image, podman_callback_t cb, void *userdata) {
        if (isempty(image))
                return -EINVAL;
        /* 204 is success and 404 is -ENOENT through the generic mapping. */
        return podman_request_full(
                c, "GET", "/images/", image, "/exists", NULL, NULL, PODMAN_MODE_PLAIN, cb, userdata);
}

int podman_secret_create(
        PodmanClient *c, const char *name, const char *value, podman_callback_t cb, void *userdata) {
        if (isempty(name) || !value)
                return -EINVAL;
        return podman_request_full(
                c,
                "POST",
                "/secrets/create?name=",
                name,
                "&driver=file",
                NULL,
                value,
                PODMAN_MODE_PLAIN,
                cb,
                userdata);
}

int podman_secret_remove(PodmanClient *c, const char *name, podman_callback_t cb, void *userdata) {
        if (isempty(name))
                return -EINVAL;
        return podman_request_full(
                c, "DELETE", "/secrets/", name, NULL, NULL, NULL, PODMAN_MODE_REMOVE, cb, userdata);
}

/* ---- the container spec ---- */

static int json_add_tmpfs(json_t *mounts, const char *dest, const char *extra) {
        json_t *opts = json_pack("[ssss]", "rw", "nosuid", "nodev", "size=256m");

        if (!opts)
                return -ENOMEM;
        if (extra && json_array_append_new(opts, json_string(extra)) < 0) {
                json_decref(opts);
                return -ENOMEM;
        }
        if (json_array_append_new(
                    mounts,
                    json_pack(
                            "{s:s, s:s, s:s, s:o}",
                            "type",
                            "tmpfs",
                            "source",
                            "tmpfs",
                            "destination",
                            dest,
                            "options",
                            opts)) < 0)
                return -ENOMEM;
        return 0;
}

/* "KEY=value" entries as an object; entries without '=' are skipped, a later one wins. */
static json_t *json_object_of_assignments(char **l) {
        _cleanup_(json_decrefp) json_t *o = json_object();

        if (!o)
                return NULL;
        for (char **e = l; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                _cleanup_free_ char *name = NULL;

                if (!eq)
                        continue;
                name = strndup(*e, eq - *e);
                if (!name || json_object_set_new(o, name, json_string(eq + 1)) < 0)
                        return NULL;
        }
        return TAKE_PTR(o);
}

json_t *podman_assignments_to_object(char **l) {
        return json_object_of_assignments(l);
}

int podman_container_spec_to_json(const PodmanContainerSpec *p, json_t **ret) {
        _cleanup_(json_decrefp) json_t *spec = NULL, *mounts = NULL, *env = NULL, *labels = NULL;
        _cleanup_free_ char *user = NULL;

        if (!p || !ret || isempty(p->name) || isempty(p->image) || isempty(p->network) ||
            isempty(p->workspace) || isempty(p->channel_dir) || isempty(p->home))
                return -EINVAL;

        mounts = json_array();
        env = json_object_of_assignments(p->environment);
        labels = json_object_of_assignments(p->labels);
        if (!mounts || !env || !labels || asprintf(&user, "%u:%u", (unsigned) p->uid, (unsigned) p->gid) < 0)
                return -ENOMEM;

        /* "U": podman hands the tmpfs to the container's user, so the CLI can write its home. */
        if (json_add_tmpfs(mounts, "/tmp", NULL) < 0 || json_add_tmpfs(mounts, "/run", NULL) < 0 ||
            json_add_tmpfs(mounts, "/var/tmp", NULL) < 0 || json_add_tmpfs(mounts, p->home, "U") < 0)
                return -ENOMEM;
        if (json_array_append_new(
                    mounts,
                    json_pack(
                            "{s:s, s:s, s:s, s:[sss]}",
                            "type",
                            "bind",
                            "source",
                            p->workspace,
                            "destination",
                            "/workspace",
                            "options",
                            "rbind",
                            "rw",
                            "nosuid")) < 0)
                return -ENOMEM;
        if (p->shared &&
            json_array_append_new(
                    mounts,
                    json_pack(
                            "{s:s, s:s, s:s, s:[ssss]}",
                            "type",
                            "bind",
                            "source",
                            p->shared,
                            "destination",
                            "/shared",
                            "options",
                            "rbind",
                            p->shared_read_only ? "ro" : "rw",
                            "nosuid",
                            "nodev")) < 0)
                return -ENOMEM;
        /* The channel's directory, not its socket: a restarted daemon binds a new socket there. */
        if (json_array_append_new(
                    mounts,
                    json_pack(
                            "{s:s, s:s, s:s, s:[ssss]}",
                            "type",
                            "bind",
                            "source",
                            p->channel_dir,
                            "destination",
                            "/run/ccdocker",
                            "options",
                            "rbind",
                            "rw",
                            "nosuid",
                            "nodev")) < 0)
                return -ENOMEM;

        spec = json_pack(
                "{s:s, s:s, s:s, s:[s], s:b, s:b, s:s, s:{s:s}, s:O, s:O, s:O, s:i}",
                "name",
                p->name,
                "image",
                p->image,
                "user",
                user,
                "cap_drop",
                "ALL",
                "no_new_privileges",
                1,
                "read_only_filesystem",
                p->read_only_root,
                "cgroups_mode",
                "split",
                "netns",
                "nsmode",
                p->network,
                "mounts",
                mounts,
                "env",
                env,
                "labels",
                labels,
                "stop_timeout",
                (int) p->stop_timeout_sec);
        if (!spec)
                return -ENOMEM;

        if (json_object_set_new(
                    spec,
                    "resource_limits",
                    json_pack(
                            "{s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I}}",
                            "memory",
                            "limit",
                            (json_int_t) p->memory,
                            "swap",
                            (json_int_t) p->memory,
                            "cpu",
                            "quota",
                            (json_int_t) (p->cpu_millis * 100),
                            "period",
                            (json_int_t) 100000,
                            "pids",
                            "limit",
                            (json_int_t) p->pids)) < 0)
                return -ENOMEM;

        /* Secrets reach the container as files of podman secrets (/run/ccdocker-secrets/NAME, mode 0400,
         * owned by the container's user), which ccdocker-init puts into claude's environment. Not as
         * podman's environment secrets: `podman inspect` shows those values (DESIGN.md decision 10). */
        if (p->n_secrets > 0) {
                json_t *secrets = json_array();

                if (!secrets || json_object_set_new(spec, "secrets", secrets) < 0)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_secrets; i++) {
                        _cleanup_free_ char *target = NULL;

                        if (isempty(p->secrets[i].secret) || isempty(p->secrets[i].file))
                                return -EINVAL;
                        if (asprintf(&target, "/run/ccdocker-secrets/%s", p->secrets[i].file) < 0)
                                return -ENOMEM;
                        if (json_array_append_new(
                                    secrets,
                                    json_pack(
                                            "{s:s, s:s, s:i, s:i, s:i}",
                                            "source",
                                            p->secrets[i].secret,
                                            "target",
                                            target,
                                            "uid",
                                            (int) p->uid,
                                            "gid",
                                            (int) p->gid,
                                            "mode",
                                            0400)) < 0)
                                return -ENOMEM;
                }
        }

        if (p->command) {
                json_t *argv = json_array();

                if (!argv || json_object_set_new(spec, "command", argv) < 0)
                        return -ENOMEM;
                for (char **a = p->command; *a; a++)
                        if (json_array_append_new(argv, json_string(*a)) < 0)
                                return -ENOMEM;
        }

        *ret = TAKE_PTR(spec);
        return 0;
}

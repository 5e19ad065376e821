/* curl-glue: libcurl's multi interface driven by an sd-event loop, in the pattern of systemd's
 * src/import/curl-util.c. curl tells us which sockets to watch and when to wake it (socket and timer
 * callbacks); we turn those into sd-event io sources and one timer, hand events back through
 * curl_multi_socket_action(), and dispatch finished transfers to their own completion callbacks. Internal
 * to the daemon's HTTP clients (podman.c, and later the Discord client): nothing here blocks. */
#pragma once

#include <curl/curl.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

typedef struct CurlGlue CurlGlue;

/* Runs once per transfer, from the event loop, after the handle has been taken out of the multi handle:
 * the callee owns easy again and may clean it up, add new transfers, or drop its reference to the glue. */
typedef void (*curl_glue_done_t)(CURL *easy, CURLcode result, void *userdata);

int curl_glue_new(sd_event *event, CurlGlue **ret);
CurlGlue *curl_glue_ref(CurlGlue *g);
/* The last reference cleans up the multi handle; transfers still added are dropped without their
 * callbacks (their easy handles stay with their owners). */
CurlGlue *curl_glue_unref(CurlGlue *g);

static inline void curl_glue_unrefp(CurlGlue **g) {
        if (*g)
                curl_glue_unref(*g);
}

/* Adds a configured easy handle. The glue owns the handle's CURLOPT_PRIVATE while it is added. Never calls
 * done synchronously: completion is always reported from an io or timer event. */
int curl_glue_add(CurlGlue *g, CURL *easy, curl_glue_done_t done, void *userdata);

/* Takes an added handle out without calling its done callback (cancellation). A no-op for a handle that
 * is not added or has already completed. */
void curl_glue_remove(CurlGlue *g, CURL *easy);

/* Whether url is an absolute http or https URL with a host, as libcurl itself reads it (curl_url()). */
bool http_url_is_valid(const char *url);

/* The web dashboard (docs/dashboard.md): its static files, embedded at build time (dashboard-files.h),
 * served at / (index.html) and /dashboard/NAME with no token (they hold no data; the page asks the API
 * with the token its user signs in with). A name is looked up in the fixed table only, so no request
 * path reaches the file system: there is nothing to traverse and nothing to list. Every answer carries
 * a strict Content-Security-Policy (scripts and styles only from this origin, no inline script, no eval,
 * Trusted Types for the DOM's HTML sinks; connections only to this origin and its WebSocket), refuses
 * framing, and turns off content sniffing. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "dashboard-files.h"
#include "httpd.h"
#include "util.h"

#define CSP_BASE                                                                                            \
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "      \
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; " \
        "trusted-types 'none'; connect-src 'self'"

/* A Host header fit to be named in connect-src: a name or address and a port, nothing else. */
static bool host_is_plain(const char *host) {
        if (isempty(host) || strlen(host) > 255)
                return false;
        return host[strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")] ==
                '\0';
}

static void add_dashboard_headers(Request *req, struct MHD_Response *response) {
        const char *host = request_header(req, MHD_HTTP_HEADER_HOST);
        char csp[sizeof CSP_BASE + 2 * 256 + 32];

        /* 'self' covers ws: of this origin only in browsers that follow CSP 3; name it for the others. */
        if (host_is_plain(host))
                snprintf(csp, sizeof csp, "%s ws://%s wss://%s", CSP_BASE, host, host);
        else
                snprintf(csp, sizeof csp, "%s", CSP_BASE);
        (void) MHD_add_response_header(response, "Content-Security-Policy", csp);
        (void) MHD_add_response_header(response, "X-Frame-Options", "DENY");
        (void) MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
        (void) MHD_add_response_header(response, "Referrer-Policy", "no-referrer");
        (void) MHD_add_response_header(response, "Cross-Origin-Opener-Policy", "same-origin");
        (void) MHD_add_response_header(response, "Cache-Control", "no-cache");
}

static void reply_file(Request *req, const char *name) {
        struct MHD_Response *response;
        const DashboardFile *f;

        for (f = dashboard_files; f->name; f++)
                if (streq(f->name, name))
                        break;
        if (!f->name) {
                static const char missing[] = "not found\n";

                response = MHD_create_response_from_buffer(
                        sizeof missing - 1, (void *) missing, MHD_RESPMEM_PERSISTENT);
                if (!response) {
                        request_reply_error(req, 500, "internal", "out of memory");
                        return;
                }
                (void) MHD_add_response_header(response, "Content-Type", "text/plain; charset=utf-8");
                add_dashboard_headers(req, response);
                request_reply_response(req, 404, response);
                return;
        }
        response = MHD_create_response_from_buffer(f->size, (void *) f->data, MHD_RESPMEM_PERSISTENT);
        if (!response) {
                request_reply_error(req, 500, "internal", "out of memory");
                return;
        }
        (void) MHD_add_response_header(response, "Content-Type", f->content_type);
        add_dashboard_headers(req, response);
        request_reply_response(req, 200, response);
}

void route_dashboard_index(Request *req) {
        reply_file(req, "index.html");
}

void route_dashboard_file(Request *req) {
        /* {id} is one path segment, never a '/'; the table has no "." or "..". */
        reply_file(req, req->id);
}

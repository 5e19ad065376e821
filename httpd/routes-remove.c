/* POST /api/v1/sessions/{id}/remove: forgets an ended session (Session.Remove, docs/dbus-api.md), for the
 * dashboard's "remove"; DELETE only stops a session. The daemon refuses a session that has not ended
 * (409 bad_state). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "cleanup.h"
#include "httpd.h"

static int on_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Request *req = userdata;

        req->slot = sd_bus_slot_unref(req->slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                request_reply_bus_error(req, sd_bus_message_get_error(m), sd_bus_message_get_errno(m));
                return 0;
        }
        request_reply_json(req, 200, json_pack("{s:b}", "removed", 1));
        return 0;
}

static void remove_in_scope(Request *req) {
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(SESSION_PATH_PREFIX, req->id, &path);
        if (r >= 0)
                r = sd_bus_call_method_async(
                        req->server->bus,
                        &req->slot,
                        BUS_NAME,
                        path,
                        SESSION_INTERFACE,
                        "Remove",
                        on_removed,
                        req,
                        NULL);
        if (r < 0)
                request_reply_bus_error(req, NULL, r);
}

void route_remove(Request *req) {
        request_check_scope(req, remove_in_scope);
}

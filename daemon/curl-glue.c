/* curl-glue: the libcurl multi interface on sd-event, after systemd's src/import/curl-util.c. curl's
 * socket callback adds, modifies or removes one sd-event io source per socket; its timer callback only
 * arms (or disarms) a single CLOCK_MONOTONIC oneshot source, never calling back into curl. Io and timer
 * events go to curl_multi_socket_action(), after which curl_multi_info_read() is drained and every
 * finished transfer is taken out of the multi handle and handed to its own completion callback. */
#include "curl-glue.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "cleanup.h"
#include "list.h"
#include "log.h"
#include "util.h"

typedef struct CurlGlueIo CurlGlueIo;
typedef struct CurlGlueTransfer CurlGlueTransfer;

/* One watched socket: what curl_multi_assign() stores for it. */
struct CurlGlueIo {
        CurlGlue *glue;
        sd_event_source *source;
        curl_socket_t fd;
        CurlGlueIo *prev, *next;
};

/* One added easy handle: what its CURLOPT_PRIVATE points to while it is added. */
struct CurlGlueTransfer {
        CURL *easy;
        curl_glue_done_t done;
        void *userdata;
        CurlGlueTransfer *prev, *next;
};

struct CurlGlue {
        unsigned n_ref;
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        CurlGlueIo *ios;
        CurlGlueTransfer *transfers;
};

static CurlGlueIo *curl_glue_io_free(CurlGlueIo *io) {
        if (!io)
                return NULL;
        LIST_REMOVE(io->glue->ios, io);
        sd_event_source_disable_unref(io->source);
        return mfree(io);
}

static CurlGlueTransfer *curl_glue_transfer_detach(CurlGlue *g, CurlGlueTransfer *t) {
        LIST_REMOVE(g->transfers, t);
        (void) curl_easy_setopt(t->easy, CURLOPT_PRIVATE, NULL);
        return mfree(t);
}

static void curl_glue_check_finished(CurlGlue *g) {
        CURLMsg *msg;
        int left = 0;

        /* One call to curl_multi_socket_action() can finish several transfers: take them all. The done
         * callbacks may add or remove transfers; curl_multi_info_read() copes with that. */
        while ((msg = curl_multi_info_read(g->multi, &left))) {
                CurlGlueTransfer *t;
                curl_glue_done_t done;
                void *p = NULL;
                void *userdata;
                CURLcode result;
                CURL *easy;

                if (msg->msg != CURLMSG_DONE)
                        continue;

                /* msg is invalid once the handle is removed: copy out what we need first. */
                easy = msg->easy_handle;
                result = msg->data.result;

                (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
                (void) curl_multi_remove_handle(g->multi, easy);
                t = p;
                if (!t)
                        continue;

                done = t->done;
                userdata = t->userdata;
                curl_glue_transfer_detach(g, t);

                if (done)
                        done(easy, result, userdata);
        }
}

static int curl_glue_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(curl_glue_unrefp) CurlGlue *g = curl_glue_ref(userdata);
        int action = 0, running = 0;
        CURLMcode mc;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;

        mc = curl_multi_socket_action(g->multi, fd, action, &running);
        if (mc != CURLM_OK)
                log_warning(
                        "curl: failed to hand an io event on fd %i to curl: %s",
                        fd,
                        curl_multi_strerror(mc));

        curl_glue_check_finished(g);
        return 0;
}

static int curl_glue_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(curl_glue_unrefp) CurlGlue *g = curl_glue_ref(userdata);
        int running = 0;
        CURLMcode mc;

        mc = curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        if (mc != CURLM_OK)
                log_warning("curl: failed to hand a timeout to curl: %s", curl_multi_strerror(mc));

        curl_glue_check_finished(g);
        return 0;
}

/* CURLMOPT_SOCKETFUNCTION: 0 on success, -1 makes curl fail the transfers on this socket. */
static int curl_glue_socket_callback(CURL *easy, curl_socket_t fd, int what, void *userdata, void *socketp) {
        CurlGlue *g = userdata;
        CurlGlueIo *io = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (io) {
                        (void) curl_multi_assign(g->multi, fd, NULL);
                        curl_glue_io_free(io);
                }
                return 0;
        }

        if (what == CURL_POLL_IN)
                events = EPOLLIN;
        else if (what == CURL_POLL_OUT)
                events = EPOLLOUT;
        else if (what == CURL_POLL_INOUT)
                events = EPOLLIN | EPOLLOUT;

        if (io) {
                r = sd_event_source_set_io_events(io->source, events);
                if (r < 0) {
                        log_warning_errno(r, "curl: failed to change the events watched on fd %i: %m", fd);
                        return -1;
                }
                r = sd_event_source_set_enabled(io->source, SD_EVENT_ON);
                if (r < 0) {
                        log_warning_errno(r, "curl: failed to enable the io source of fd %i: %m", fd);
                        return -1;
                }
                return 0;
        }

        io = calloc(1, sizeof(*io));
        if (!io) {
                log_oom();
                return -1;
        }
        io->glue = g;
        io->fd = fd;
        LIST_PREPEND(g->ios, io);

        r = sd_event_add_io(g->event, &io->source, fd, events, curl_glue_on_io, g);
        if (r < 0) {
                log_warning_errno(r, "curl: failed to watch fd %i: %m", fd);
                curl_glue_io_free(io);
                return -1;
        }
        (void) sd_event_source_set_description(io->source, "curl-io");

        if (curl_multi_assign(g->multi, fd, io) != CURLM_OK) {
                curl_glue_io_free(io);
                return -1;
        }
        return 0;
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms our timer. Calling curl_multi_socket_action() from here would
 * re-enter curl, which its documentation forbids. */
static int curl_glue_timer_callback(CURLM *multi, long timeout_ms, void *userdata) {
        CurlGlue *g = userdata;
        uint64_t usec;
        int r;

        if (timeout_ms < 0) {
                if (g->timer) {
                        r = sd_event_source_set_enabled(g->timer, SD_EVENT_OFF);
                        if (r < 0) {
                                log_warning_errno(r, "curl: failed to disarm the timer: %m");
                                return -1;
                        }
                }
                return 0;
        }

        usec = (uint64_t) timeout_ms * 1000U;

        if (g->timer) {
                r = sd_event_source_set_time_relative(g->timer, usec);
                if (r < 0) {
                        log_warning_errno(r, "curl: failed to re-arm the timer: %m");
                        return -1;
                }
                r = sd_event_source_set_enabled(g->timer, SD_EVENT_ONESHOT);
                if (r < 0) {
                        log_warning_errno(r, "curl: failed to enable the timer: %m");
                        return -1;
                }
                return 0;
        }

        /* Accuracy 1 µs rather than sd-event's default of 250 ms: curl uses 0 ms timeouts to say "run
         * me now" (every new transfer starts that way), and that must not wait for timer coalescing. */
        r = sd_event_add_time_relative(g->event, &g->timer, CLOCK_MONOTONIC, usec, 1, curl_glue_on_timer, g);
        if (r < 0) {
                log_warning_errno(r, "curl: failed to add the timer: %m");
                return -1;
        }
        (void) sd_event_source_set_description(g->timer, "curl-timer");
        return 0;
}

static CurlGlue *curl_glue_free(CurlGlue *g) {
        if (g->multi) {
                /* Unhook the remaining transfers first: curl_multi_cleanup() leaves added easy handles
                 * orphaned, and their owners still hold them. */
                while (g->transfers) {
                        CURL *easy = g->transfers->easy;

                        curl_glue_transfer_detach(g, g->transfers);
                        (void) curl_multi_remove_handle(g->multi, easy);
                }
                (void) curl_multi_cleanup(g->multi);
        }

        /* Whatever sockets curl did not announce as removed during cleanup. */
        while (g->ios)
                curl_glue_io_free(g->ios);

        sd_event_source_disable_unref(g->timer);
        sd_event_unref(g->event);
        curl_global_cleanup();
        return mfree(g);
}

CurlGlue *curl_glue_ref(CurlGlue *g) {
        if (g)
                g->n_ref++;
        return g;
}

CurlGlue *curl_glue_unref(CurlGlue *g) {
        if (!g)
                return NULL;
        if (--g->n_ref > 0)
                return NULL;
        return curl_glue_free(g);
}

int curl_glue_new(sd_event *event, CurlGlue **ret) {
        _cleanup_(curl_glue_unrefp) CurlGlue *g = NULL;

        if (!event || !ret)
                return -EINVAL;

        /* Reference-counted inside libcurl, so every glue may call it; balanced in curl_glue_free(). */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;

        g = calloc(1, sizeof(*g));
        if (!g) {
                curl_global_cleanup();
                return -ENOMEM;
        }
        g->n_ref = 1;
        g->event = sd_event_ref(event);

        g->multi = curl_multi_init();
        if (!g->multi)
                return -ENOMEM;

        if (curl_multi_setopt(g->multi, CURLMOPT_SOCKETFUNCTION, curl_glue_socket_callback) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_SOCKETDATA, g) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERFUNCTION, curl_glue_timer_callback) != CURLM_OK ||
            curl_multi_setopt(g->multi, CURLMOPT_TIMERDATA, g) != CURLM_OK)
                return -EINVAL;

        *ret = TAKE_PTR(g);
        return 0;
}

int curl_glue_add(CurlGlue *g, CURL *easy, curl_glue_done_t done, void *userdata) {
        CurlGlueTransfer *t;

        if (!g || !easy)
                return -EINVAL;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->easy = easy;
        t->done = done;
        t->userdata = userdata;

        if (curl_easy_setopt(easy, CURLOPT_PRIVATE, t) != CURLE_OK) {
                free(t);
                return -EINVAL;
        }
        LIST_PREPEND(g->transfers, t);

        /* This only arms the timer (at 0 ms): the transfer starts on the next loop iteration. */
        if (curl_multi_add_handle(g->multi, easy) != CURLM_OK) {
                curl_glue_transfer_detach(g, t);
                return -EIO;
        }
        return 0;
}

void curl_glue_remove(CurlGlue *g, CURL *easy) {
        CurlGlueTransfer *t;
        void *p = NULL;

        if (!g || !easy)
                return;

        (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
        t = p;
        if (!t)
                return;

        curl_glue_transfer_detach(g, t);
        (void) curl_multi_remove_handle(g->multi, easy);
}

bool http_url_is_valid(const char *url) {
        CURLU *u;
        char *scheme = NULL, *host = NULL;
        bool valid;

        u = curl_url();
        if (!u)
                return false;
        valid = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
                (streq(scheme, "http") || streq(scheme, "https"));
        curl_free(scheme);
        curl_free(host);
        curl_url_cleanup(u);
        return valid;
}

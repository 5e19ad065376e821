/* Following the kernel's OOM-kill records in the journal (see oom.h for why). */
#define _GNU_SOURCE
#include "oom.h"

#include <errno.h>
#include <string.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "time-util.h"
#include "util.h"

/* Records read per step: a step is a few hundred microseconds, however far behind the journal is. */
#define OOM_STEP 256
/* How far back the watch starts: a unit that ended while the daemon was down is still found. */
#define OOM_LOOKBACK_USEC (60 * USEC_PER_MINUTE)
/* The OOM kills remembered: many more than end at once, since each is consulted right after. */
#define OOM_RECENT_MAX 64
#define OOM_RECORD_MAX 2048

typedef struct OomKill {
        uint64_t usec;               /* CLOCK_REALTIME of the record */
        char record[OOM_RECORD_MAX]; /* "oom_memcg=...,task_memcg=...,task=..." */
} OomKill;

static struct {
        sd_journal *journal;
        sd_event_source *io, *more;
        OomKill recent[OOM_RECENT_MAX];
        size_t n_recent, next;
} watch;

/* Keeps a kernel "oom-kill:" record from its oom_memcg= on: the cgroup that hit its limit (a session's
 * slice, say) and then task_memcg=, the victim's (inside the unit), either of which may name the unit.
 * A record longer than the buffer keeps its start. */
static void remember(const char *msg, size_t len, uint64_t usec) {
        static const char key[] = "oom_memcg=";
        const char *memcg;
        OomKill *k;
        size_t n;

        memcg = memmem(msg, len, key, strlen(key));
        if (!memcg)
                return;
        n = len - (size_t) (memcg - msg);
        if (n >= sizeof(k->record))
                n = sizeof(k->record) - 1;

        k = &watch.recent[watch.next];
        memcpy(k->record, memcg, n);
        k->record[n] = '\0';
        k->usec = usec;
        watch.next = (watch.next + 1) % OOM_RECENT_MAX;
        if (watch.n_recent < OOM_RECENT_MAX)
                watch.n_recent++;
        log_debug("oom: the kernel OOM-killed: %s", k->record);
}

/* Reads at most OOM_STEP new records; returns true if there may be more. */
static bool read_step(void) {
        int r;

        if (!watch.journal)
                return false;
        /* Picks up new and rotated files; the result (append, invalidate) does not matter here. */
        (void) sd_journal_process(watch.journal);
        for (unsigned n = 0; n < OOM_STEP; n++) {
                const void *data;
                uint64_t usec;
                size_t len;

                r = sd_journal_next(watch.journal);
                if (r < 0) {
                        log_debug_errno(r, "oom: could not read the journal: %m");
                        return false;
                }
                if (r == 0)
                        return false;
                if (sd_journal_get_data(watch.journal, "MESSAGE", &data, &len) < 0 ||
                    sd_journal_get_realtime_usec(watch.journal, &usec) < 0)
                        continue;
                /* data is "MESSAGE=..." and not NUL-terminated: searched within len only. */
                remember(data, len, usec);
        }
        return true;
}

static int on_more(sd_event_source *source, void *userdata) {
        if (!read_step())
                (void) sd_event_source_set_enabled(watch.more, SD_EVENT_OFF);
        return 0;
}

static int on_journal(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        /* More than a step's worth goes on from a defer source, one step per loop iteration. */
        if (read_step())
                (void) sd_event_source_set_enabled(watch.more, SD_EVENT_ON);
        return 0;
}

int oom_watch_start(sd_event *e) {
        int fd, events, r;

        if (watch.journal)
                return -EBUSY;

        r = sd_journal_open(&watch.journal, SD_JOURNAL_LOCAL_ONLY | SD_JOURNAL_SYSTEM);
        if (r < 0) {
                watch.journal = NULL;
                log_warning_errno(
                        r, "oom: could not open the journal, OOM kills on cgroup v1 go unnamed: %m");
                return 0;
        }
        /* The fd first (sd_journal_get_fd(3)): it watches the files from the start. */
        fd = sd_journal_get_fd(watch.journal);
        r = fd;
        if (r >= 0)
                r = sd_journal_add_match(watch.journal, "_TRANSPORT=kernel", 0);
        if (r >= 0)
                r = sd_journal_seek_realtime_usec(
                        watch.journal, now_usec(CLOCK_REALTIME) - OOM_LOOKBACK_USEC);
        if (r >= 0)
                r = events = sd_journal_get_events(watch.journal);
        if (r >= 0)
                r = sd_event_add_io(e, &watch.io, fd, (uint32_t) events, on_journal, NULL);
        if (r >= 0)
                r = sd_event_add_defer(e, &watch.more, on_more, NULL);
        if (r >= 0)
                r = sd_event_source_set_description(watch.io, "oom-journal");
        if (r < 0) {
                log_warning_errno(
                        r, "oom: could not follow the journal, OOM kills on cgroup v1 go unnamed: %m");
                oom_watch_stop();
                return 0;
        }
        /* The records since the lookback, from the loop in steps: ON (not the defer's ONESHOT) until a
         * step finds the end. */
        (void) sd_event_source_set_enabled(watch.more, SD_EVENT_ON);
        return 0;
}

void oom_watch_stop(void) {
        watch.io = sd_event_source_disable_unref(watch.io);
        watch.more = sd_event_source_disable_unref(watch.more);
        if (watch.journal)
                sd_journal_close(watch.journal);
        watch.journal = NULL;
        watch.n_recent = watch.next = 0;
}

bool oom_kill_recorded(const char *unit, uint64_t since_usec) {
        char needle[300];
        size_t n;

        /* The unit's name ends a path component of the OOM cgroup: ".../<unit>" or ".../<unit>/...". */
        n = (size_t) snprintf(needle, sizeof(needle), "/%s", unit);
        if (n >= sizeof(needle))
                return false;

        /* The kill was just now: what journald wrote since the last step is read first. */
        if (read_step())
                (void) sd_event_source_set_enabled(watch.more, SD_EVENT_ON);

        for (size_t i = 0; i < watch.n_recent; i++) {
                const OomKill *k = &watch.recent[i];
                const char *hit;

                if (k->usec < since_usec)
                        continue;
                for (hit = strstr(k->record, needle); hit; hit = strstr(hit + 1, needle))
                        if (hit[n] == '\0' || hit[n] == '/' || hit[n] == ',')
                                return true;
        }
        return false;
}

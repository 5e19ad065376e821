/* Finding a kernel OOM kill of a unit in the journal (see oom.h for why). */
#define _GNU_SOURCE
#include "oom.h"

#include <string.h>
#include <systemd/sd-journal.h>

#include "cleanup.h"
#include "log.h"

#define OOM_SCAN_MAX 20000

bool oom_kill_recorded(const char *unit, uint64_t since_usec) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        char needle[300];
        unsigned n = 0;
        int r;

        /* The unit's name ends a path component of the OOM cgroup: ".../<unit>" or ".../<unit>/...". */
        if ((size_t) snprintf(needle, sizeof(needle), "/%s", unit) >= sizeof(needle))
                return false;

        r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY | SD_JOURNAL_SYSTEM);
        if (r < 0) {
                log_debug_errno(r, "oom: could not open the journal: %m");
                return false;
        }
        r = sd_journal_add_match(j, "_TRANSPORT=kernel", 0);
        if (r >= 0)
                r = sd_journal_seek_realtime_usec(j, since_usec);
        if (r < 0) {
                log_debug_errno(r, "oom: could not search the journal: %m");
                return false;
        }
        while (n++ < OOM_SCAN_MAX && sd_journal_next(j) > 0) {
                const char *msg, *memcg, *hit;
                const void *data;
                size_t len;

                if (sd_journal_get_data(j, "MESSAGE", &data, &len) < 0)
                        continue;
                msg = data;
                /* data is "MESSAGE=..." and not NUL-terminated: search within len only. */
                memcg = memmem(msg, len, "oom_memcg=", strlen("oom_memcg="));
                if (!memcg)
                        continue;
                hit = memmem(memcg, len - (size_t) (memcg - msg), needle, strlen(needle));
                if (!hit)
                        continue;
                hit += strlen(needle);
                if (hit == msg + len || *hit == '/' || *hit == ',')
                        return true;
        }
        return false;
}

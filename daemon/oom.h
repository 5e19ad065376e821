/* Whether the kernel OOM-killed something in a unit's cgroup. systemd reports Result=oom-kill only on
 * cgroup v2; on v1 (this project's sandbox, a hybrid host) an OOM kill looks like any other SIGKILL and
 * conmon does not always see it, so this keeps the kernel's own records from the journal (journald reads
 * the kernel log): "oom-kill:... oom_memcg=<cgroup>" with the unit in it.
 *
 * One journal, opened once, is followed on the event loop through its fd (sd_journal_get_fd()) and read
 * in bounded steps; the cgroups of the last OOM kills are kept in a small ring that
 * oom_kill_recorded() consults. There is one watch per process: the journal is the system's. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* Opens the journal and follows its kernel records from a while before now (so that a unit that ended
 * while the daemon was down is still found). A journal that cannot be opened is logged and makes every
 * answer "no"; the daemon runs on. */
int oom_watch_start(sd_event *e);
void oom_watch_stop(void);

/* True if a kernel OOM-kill record at or after since_usec (CLOCK_REALTIME) names the unit's cgroup.
 * First reads what the journal got since the last step (at most a bounded number of records). */
bool oom_kill_recorded(const char *unit, uint64_t since_usec);

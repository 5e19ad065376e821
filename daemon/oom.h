/* Whether the kernel OOM-killed something in a unit's cgroup. systemd reports Result=oom-kill only on
 * cgroup v2; on v1 an OOM kill looks like any other SIGKILL, so this reads the kernel's own record from
 * the journal (journald reads the kernel log): "oom-kill:... oom_memcg=<cgroup>" with the unit in it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* True if a kernel OOM-kill record since since_usec (CLOCK_REALTIME) names the unit's cgroup. Reads at
 * most a bounded number of records; any error reading the journal is "no". */
bool oom_kill_recorded(const char *unit, uint64_t since_usec);

/* Which runtime (runtime.h) a manager and its sessions use: the manager keeps one per kind, made at start
 * for Runtime= and on demand for a stored session of the other kind; a session uses the one its config
 * names. Also the cgroup a Docker container goes below, its unit's. */
#pragma once

#include "runtime.h"

typedef struct Manager Manager;
typedef struct Session Session;

/* At start: the runtime of Runtime= (and podman's, which wraps m->podman), and a check that it answers
 * on its socket: when it does not, an error naming the socket and the key, and < 0. For Docker also the
 * systemd manager's own cgroup, below which units' cgroups lie (docker_unit_cgroup()). */
int manager_start_runtimes(Manager *m);
void manager_free_runtimes(Manager *m);
/* The runtime of kind k, made now if it was not (a stored session of the other kind); NULL on failure
 * (logged). */
Runtime *manager_runtime(Manager *m, RuntimeKind k);
/* The runtime of Runtime=, for new sessions. */
RuntimeKind manager_runtime_kind(const Manager *m);

/* The runtime the session's container lives in: its config's (podman for records from before). */
Runtime *session_runtime(Session *s);
/* "podman" or "docker", the runtime of the session's config, for messages (failure reasons name the
 * runtime that failed). */
const char *session_runtime_name(const Session *s);
/* The absolute cgroup of the session's unit, for a Docker container's CgroupParent. */
int session_unit_cgroup(Session *s, char **ret);

/* The warm pool: PoolSize= root sessions of the default configuration kept fully started (unit,
 * container, ccdocker-init, claude), so that a CreateSession one of them can serve is answered by a
 * session whose CLI has started already (docs/ccdockerd.md, "The warm pool"). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct Manager Manager;
typedef struct Session Session;
typedef struct SessionConfig SessionConfig;
typedef struct Pool Pool;

/* Cleans what a pool left before a restart (its sessions are never adopted), then starts filling the
 * pool. *ret is NULL with PoolSize=0, after the cleaning. */
int pool_new(Manager *m, Pool **ret);
Pool *pool_free(Pool *p);

/* Whether a session of the pool can be what config asks for (a root session when parent is NULL):
 * the default image, an ephemeral workspace, nothing in the container that a member was not started
 * with, and limits no higher than a member's (they are lowered on its unit at hand-over). */
bool pool_can_serve(Manager *m, const SessionConfig *config, const Session *parent);

/* When p has a started member that can serve *config: takes *config, makes the member the caller's
 * session (owner uid, its creation time, state starting) and returns 1 with *ret set; the caller
 * records and announces it as a new one, then calls session_start(), which applies its limits
 * (pool_handover_start()). 0 when it cannot (p may be NULL): start one cold. */
int pool_take(Pool *p, SessionConfig **config, uid_t uid, Session *parent, Session **ret);

/* session_start() of a handed-over session: SetUnitProperties on its slice and unit with the caller's
 * limits, then idle, and its prompts go out. */
int pool_handover_start(Session *s);

/* session_set_state() of a member: the pool looks at its members again. */
void pool_member_changed(Session *s);

/* The daemon stops: every member is stopped and removed (the shutdown waits for them); no more are
 * made. */
void pool_shutdown(Pool *p);

/* Members: started and starting, for tests and logs. */
unsigned pool_n_members(Pool *p);

/* The store's WAL checkpoints, off the event loop. SQLite's automatic checkpoint runs inside the commit
 * that crosses 1000 WAL frames, on the daemon's loop: it copies the frames into the database and
 * fsyncs both files, tens of milliseconds on a busy disk, during which no session is served (an events
 * call waited 3.5 ms at p99 at 1000 events/s with it, 0.4 ms without: docs/benchmarks.md). The
 * checkpointer replaces it with one thread on a connection of its own that runs a PASSIVE checkpoint
 * (it never blocks the writer, nor waits for it) whenever a commit leaves 1000 frames or more in the
 * WAL; the next writer then starts the WAL over. The only thread in ccdockerd (STYLE.md: a benchmark
 * showed the need); it touches nothing but its own connection and the fields below its mutex.
 *
 * Should the thread fall behind (the WAL past STORE_CHECKPOINT_INLINE_FRAMES, about 64 MiB), the commit
 * checkpoints inline as before, so that the WAL stays bounded whatever the disk does. */
#pragma once

#include <sqlite3.h>
#include <stdint.h>

#define STORE_CHECKPOINT_FRAMES 1000
#define STORE_CHECKPOINT_INLINE_FRAMES 16000

typedef struct StoreCheckpointer StoreCheckpointer;

typedef struct StoreCheckpointStats {
        uint64_t background; /* checkpoints the thread ran */
        uint64_t inline_;    /* checkpoints a commit ran because the thread was behind */
        int last_error;      /* the thread's last failure, a SQLite result code; 0: none */
} StoreCheckpointStats;

/* Opens a second connection to path and starts the thread, then takes over db's WAL hook (which ends
 * its automatic checkpoints). On failure (logged) db keeps its automatic checkpoints and nothing is
 * left running. */
int store_checkpointer_start(sqlite3 *db, const char *path, StoreCheckpointer **ret);
/* Gives db its automatic checkpoints back, stops the thread and closes its connection. */
StoreCheckpointer *store_checkpointer_stop(StoreCheckpointer *c);
void store_checkpointer_stats(StoreCheckpointer *c, StoreCheckpointStats *ret);

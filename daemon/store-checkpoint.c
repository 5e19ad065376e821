/* The store's checkpoint thread: see store-checkpoint.h. */
#include "store-checkpoint.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "log.h"

struct StoreCheckpointer {
        sqlite3 *db;  /* the store's connection, the loop's: only the WAL hook is ours */
        sqlite3 *own; /* the thread's connection */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        /* Under lock: */
        bool wanted, stopping;
        StoreCheckpointStats stats;
        int logged_error; /* the loop's: the last error it logged */
};

static void *checkpoint_thread(void *userdata) {
        StoreCheckpointer *c = userdata;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                int rc;

                while (!c->wanted && !c->stopping)
                        pthread_cond_wait(&c->wake, &c->lock);
                if (c->stopping)
                        break;
                c->wanted = false;
                pthread_mutex_unlock(&c->lock);

                /* PASSIVE: copies what no reader still needs, takes no lock a writer waits on. */
                rc = sqlite3_wal_checkpoint_v2(c->own, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

                pthread_mutex_lock(&c->lock);
                c->stats.background++;
                if (rc != SQLITE_OK)
                        c->stats.last_error = rc;
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* After each commit, on the loop, with the frames now in the WAL. */
static int on_wal(void *userdata, sqlite3 *db, const char *name, int frames) {
        StoreCheckpointer *c = userdata;
        bool behind = frames >= STORE_CHECKPOINT_INLINE_FRAMES;
        int error;

        if (frames < STORE_CHECKPOINT_FRAMES)
                return SQLITE_OK;

        pthread_mutex_lock(&c->lock);
        error = c->stats.last_error;
        if (behind)
                c->stats.inline_++;
        else {
                c->wanted = true;
                pthread_cond_signal(&c->wake);
        }
        pthread_mutex_unlock(&c->lock);

        if (error != 0 && error != c->logged_error) {
                c->logged_error = error;
                log_warning("The store's background checkpoint failed: %s", sqlite3_errstr(error));
        }
        if (behind) {
                log_debug("The store's WAL holds %d frames: checkpointing in the commit.", frames);
                (void) sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        }
        return SQLITE_OK;
}

int store_checkpointer_start(sqlite3 *db, const char *path, StoreCheckpointer **ret) {
        StoreCheckpointer *c;
        sigset_t all, saved;
        int rc, r;

        c = calloc(1, sizeof(StoreCheckpointer));
        if (!c)
                return log_oom();
        c->db = db;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->wake, NULL);

        /* NOMUTEX: the connection is only ever the thread's. */
        rc = sqlite3_open_v2(path, &c->own, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        /* A connection learns that the file is in WAL mode from its first read: until then its
         * checkpoints do nothing and say SQLITE_OK. */
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(c->own, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                r = log_warning_errno(
                        EIO,
                        "Could not open %s for background checkpoints, they stay in the commits: %s",
                        path,
                        c->own ? sqlite3_errmsg(c->own) : sqlite3_errstr(rc));
                goto fail;
        }

        /* Every signal blocked in the thread: they are the loop's (signalfd), whatever the loop has
         * blocked yet. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        r = -pthread_create(&c->thread, NULL, checkpoint_thread, c);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (r < 0) {
                log_warning_errno(
                        r, "Could not start the checkpoint thread, checkpoints stay in the commits: %m");
                goto fail;
        }

        (void) sqlite3_wal_hook(db, on_wal, c);
        *ret = c;
        return 0;

fail:
        (void) sqlite3_close(c->own);
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return r;
}

StoreCheckpointer *store_checkpointer_stop(StoreCheckpointer *c) {
        if (!c)
                return NULL;

        (void) sqlite3_wal_autocheckpoint(c->db, STORE_CHECKPOINT_FRAMES); /* replaces our hook */

        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_signal(&c->wake);
        pthread_mutex_unlock(&c->lock);
        (void) pthread_join(c->thread, NULL);

        (void) sqlite3_close(c->own);
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

void store_checkpointer_stats(StoreCheckpointer *c, StoreCheckpointStats *ret) {
        pthread_mutex_lock(&c->lock);
        *ret = c->stats;
        pthread_mutex_unlock(&c->lock);
}

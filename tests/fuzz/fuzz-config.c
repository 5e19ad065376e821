/* libFuzzer target: the daemon's configuration file (daemon/config.c config_load_file(), then
 * config_verify() as ccdockerd runs it at start). The file is a root-owned file and not untrusted, but a
 * parser of text all the same: whatever it holds must end in a clean error, never a crash. The input is
 * read from a memfd through /proc/self/fd, since the parser takes a path. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        fd = memfd_create("ccdockerd.conf", MFD_CLOEXEC);
        if (fd < 0)
                abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        DaemonConfig c;

        if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t) size)
                abort();
        if (config_init(&c, DAEMON_SYSTEM) < 0)
                abort();
        if (config_load_file(&c, path, true) >= 0)
                (void) config_verify(&c);
        config_done(&c);
        return 0;
}

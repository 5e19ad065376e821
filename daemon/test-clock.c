/* The spawn-rate window's clock, and its test-only offset (see test-clock.h). */
#define _GNU_SOURCE
#include "test-clock.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "time-util.h"
#include "util.h"

uint64_t test_clock_realtime_usec(void) {
        uint64_t now = now_usec(CLOCK_REALTIME), offset = 0;
        const char *path = getenv("CCDOCKER_TEST_CLOCK_OFFSET_FILE");
        _cleanup_fclose_ FILE *f = NULL;
        char line[32] = "";

        if (!path)
                return now;
        /* No file yet is no offset: the test writes it when it moves the clock. */
        f = fopen(path, "re");
        if (!f)
                return now;
        if (!fgets(line, sizeof(line), f))
                return now;
        line[strcspn(line, "\n")] = '\0';
        if (safe_atou64(line, &offset) < 0 || offset > UINT64_MAX / USEC_PER_SEC - now / USEC_PER_SEC - 1) {
                log_warning(
                        "test clock: %s holds '%s', not a number of seconds; not moving the clock",
                        path,
                        line);
                return now;
        }
        log_debug("test clock: %" PRIu64 " s ahead (%s)", offset, path);
        return now + offset * USEC_PER_SEC;
}

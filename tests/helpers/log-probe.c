/* log-probe: logs a fixed set of messages through common/log.h with the AUTO target, as the programs
 * do, for tests/integration/test_log_journal.py. Run as a unit of the sandbox's user manager it must
 * reach journald over the native protocol with its structured fields; run bare, stderr. "log-probe
 * TOKEN" puts TOKEN in every message so that the test finds this run's records; "probe-done" on
 * stdout says it got to the end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* This probe's own record type, for the test only: not one of the daemon's audit MESSAGE_IDs. */
#define LOG_PROBE_MESSAGE_ID "ba8518b38c034b1db9300e095a8dbe0f"

int main(int argc, char *argv[]) {
        const char *token;

        if (argc != 2) {
                fprintf(stderr, "usage: log-probe TOKEN\n");
                return EXIT_FAILURE;
        }
        token = argv[1];

        log_set_prefix("log-probe");
        log_set_target(LOG_TARGET_AUTO);

        /* Dropped at the default level, LOG_INFO. It comes first: journald takes the native messages of a
         * process in order, so once the records below are in the journal, this one would be too had the
         * filter let it through. */
        log_debug("probe %s debug, filtered", token);

        (void) log_struct(
                LOG_NOTICE,
                "MESSAGE=probe %s",
                token,
                "CCDOCKER_SESSION=%s",
                token,
                "CCDOCKER_EVENT=probe",
                "MESSAGE_ID=" LOG_PROBE_MESSAGE_ID,
                NULL);

        (void) log_error_errno(ENOENT, "probe %s failed: %m", token);

        if (puts("probe-done") == EOF || fflush(stdout) == EOF)
                return EXIT_FAILURE;
        return EXIT_SUCCESS;
}

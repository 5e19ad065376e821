/* libFuzzer target: a session's config as the daemon reads it back from its store
 * (daemon/validate.c session_config_from_json(), at every start for every stored session). The store is
 * the daemon's own, but a damaged or hostile row must be refused, not crash the daemon; what it accepts
 * must write back out and read back in the same (session_config_to_json()). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "log.h"
#include "validate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(session_config_freep) SessionConfig *c = NULL, *again = NULL, *child = NULL;
        _cleanup_free_ char *text = NULL, *json = NULL, *json_again = NULL;

        text = strndup((const char *) data, size);
        if (!text)
                return 0;
        if (session_config_from_json(text, &c) < 0)
                return 0;

        json = session_config_to_json(c);
        if (!json)
                return 0;
        if (session_config_from_json(json, &again) < 0)
                abort(); /* what was accepted and written must read back */
        json_again = session_config_to_json(again);
        if (!json_again || strcmp(json, json_again) != 0)
                abort();
        (void) session_config_inherit(c, &child);
        return 0;
}

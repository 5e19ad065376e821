/* libFuzzer target: a request body of ccdocker-httpd (httpd/body.c), read as server.c reads it (jansson,
 * duplicate keys refused, an object only) and turned into the a{sv} of CreateSession/SpawnChild and the
 * prompt of POST .../prompts. A message that body.c accepted is sealed and read back, as the daemon will.
 * The D-Bus messages belong to a bus on one end of a socketpair that is never read: building a message
 * needs a started bus, not a daemon. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cleanup.h"
#include "httpd.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sd_bus *bus;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        int fds[2];

        log_set_max_level(LOG_EMERG);
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
                abort();
        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, fds[0], fds[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        return 0;
}

/* Reads an a{sv} back: every key a string, every variant entered and skipped. */
static void read_back(sd_bus_message *m) {
        if (sd_bus_message_seal(m, 1, 0) < 0)
                abort();
        if (sd_bus_message_rewind(m, true) < 0 || sd_bus_message_enter_container(m, 'a', "{sv}") <= 0)
                abort();
        for (;;) {
                const char *key;
                int r = sd_bus_message_enter_container(m, 'e', "sv");

                if (r < 0)
                        abort();
                if (r == 0)
                        break;
                if (sd_bus_message_read(m, "s", &key) < 0 || sd_bus_message_skip(m, "v") < 0 ||
                    sd_bus_message_exit_container(m) < 0)
                        abort();
        }
}

static void try_body(json_t *body, bool spawn) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        char message[256] = "";
        int r;

        if (sd_bus_message_new_method_call(
                    bus,
                    &m,
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    spawn ? "SpawnChild" : "CreateSession") < 0)
                abort();
        r = spawn ? body_to_spawn_options(body, m, message, sizeof message)
                  : body_to_session_config(body, m, message, sizeof message);
        if (r == -EINVAL && message[0] == '\0')
                abort(); /* a refusal names what was wrong */
        if (r >= 0)
                read_back(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        char message[256];
        const char *prompt;
        json_error_t e;

        if (size > BODY_MAX)
                return 0;
        body = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, &e);
        if (!json_is_object(body))
                return 0;
        try_body(body, false);
        try_body(body, true);
        (void) body_prompt(body, &prompt, message, sizeof message);
        return 0;
}

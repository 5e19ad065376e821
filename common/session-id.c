/* Session ids (session-id.h): 12 lowercase hex digits, checked here and made from getrandom(). */
#include "session-id.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

bool session_id_is_valid(const char *id) {
        if (!id || strlen(id) != 12)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

int session_id_new(char ret[static 13]) {
        static const char hex[] = "0123456789abcdef";
        uint8_t b[6];
        int r;

        r = random_bytes(b, sizeof b);
        if (r < 0)
                return r;

        for (size_t i = 0; i < sizeof b; i++) {
                ret[2 * i] = hex[b[i] >> 4];
                ret[2 * i + 1] = hex[b[i] & 15];
        }
        ret[12] = '\0';
        return 0;
}

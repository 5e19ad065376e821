/* Session ids (session-id.h): 12 lowercase hex digits, checked here and made from getrandom(). */
#include "session-id.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

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
        ssize_t n;

        do
                n = getrandom(b, sizeof b, 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if ((size_t) n != sizeof b)
                return -EIO;

        for (size_t i = 0; i < sizeof b; i++) {
                ret[2 * i] = hex[b[i] >> 4];
                ret[2 * i + 1] = hex[b[i] & 15];
        }
        ret[12] = '\0';
        return 0;
}

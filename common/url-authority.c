/* The authority of a URL: see url-authority.h. */
#include "url-authority.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

int url_authority(const char *url, const char **ret_start, const char **ret_end) {
        const char *start, *end, *at = NULL;

        start = url ? strstr(url, "://") : NULL;
        if (!start || start == url)
                return -EINVAL;
        for (const char *i = url; i < start; i++)
                if (!((*i >= 'a' && *i <= 'z') || (*i >= 'A' && *i <= 'Z') || (*i >= '0' && *i <= '9') ||
                      (*i != '\0' && strchr("+-.", *i))))
                        return -EINVAL;
        start += 3;
        end = start + strcspn(start, "/?#");
        for (const char *i = start; i < end; i++)
                if (*i == '@')
                        at = i;
        if (at)
                start = at + 1;
        if (start == end || memchr(start, ',', (size_t) (end - start)))
                return -EINVAL;
        *ret_start = start;
        *ret_end = end;
        return 0;
}

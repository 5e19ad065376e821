/* The growable byte queue (byte-queue.h). */
#include "byte-queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void byte_queue_free(ByteQueue *q) {
        free(q->data);
        *q = (ByteQueue){};
}

void byte_queue_release_if_empty(ByteQueue *q) {
        if (q->start == q->end && q->cap > BYTE_QUEUE_KEEP)
                byte_queue_free(q);
}

int byte_queue_put(ByteQueue *q, const void *p, size_t n) {
        if (q->start == q->end)
                byte_queue_clear(q);
        if (q->end + n + 1 > q->cap && q->start > 0) {
                memmove(q->data, q->data + q->start, byte_queue_len(q));
                q->end -= q->start;
                q->start = 0;
        }
        if (q->end + n + 1 > q->cap) {
                size_t cap = q->cap ?: 4096;
                char *d;

                while (cap < q->end + n + 1)
                        cap *= 2;
                d = realloc(q->data, cap);
                if (!d)
                        return -ENOMEM;
                q->data = d;
                q->cap = cap;
        }
        memcpy(q->data + q->end, p, n);
        q->end += n;
        q->data[q->end] = '\0';
        return 0;
}

int byte_queue_puts(ByteQueue *q, const char *s) {
        return byte_queue_put(q, s, strlen(s));
}

int byte_queue_write(ByteQueue *q, int fd) {
        while (byte_queue_len(q) > 0) {
                ssize_t k = write(fd, q->data + q->start, byte_queue_len(q));

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return errno == EAGAIN ? 0 : -errno;
                q->start += (size_t) k;
        }
        byte_queue_release_if_empty(q);
        return 0;
}

/* A growable byte queue for what a program writes to a non-blocking fd: bytes are put at the end and
 * written from the start as far as the fd takes them. The pending bytes data[start, end) are always
 * followed by a NUL, so they read as a string too. Unbounded: the caller bounds what it puts (the
 * session channel's line limit, claude's input). Used by the session channel client, ccdocker-init
 * (claude's stdin) and ccdocker-mcp (a stream's output). */
#pragma once

#include <stddef.h>

typedef struct ByteQueue {
        char *data;
        size_t start, end, cap;
} ByteQueue;

static inline size_t byte_queue_len(const ByteQueue *q) {
        return q->end - q->start;
}

/* Forgets the pending bytes; keeps the memory. */
static inline void byte_queue_clear(ByteQueue *q) {
        q->start = q->end = 0;
}

/* Frees the memory; the queue is empty and can be used again. */
void byte_queue_free(ByteQueue *q);
/* What an empty queue keeps allocated: one burst (a long line, a big tool result) must not stay
 * resident for the life of a connection, hundreds of which are idle at a time. */
#define BYTE_QUEUE_KEEP (64U * 1024U)
/* If the queue is empty and holds more than BYTE_QUEUE_KEEP, frees its memory. Pointers into it are
 * then gone: call it only where none is held. */
void byte_queue_release_if_empty(ByteQueue *q);
/* Appends p[0, n). 0 or -ENOMEM (then nothing was appended). */
int byte_queue_put(ByteQueue *q, const void *p, size_t n);
int byte_queue_puts(ByteQueue *q, const char *s);
/* Writes what fd takes now. 0 (also when it takes nothing: EAGAIN) or -errno. write(2): the caller
 * ignores SIGPIPE. Once all is written, gives back memory over BYTE_QUEUE_KEEP. */
int byte_queue_write(ByteQueue *q, int fd);

/* Automatic cleanup in the systemd manner (STYLE.md 3): _cleanup_() attributes that free, close or
 * unref a variable when it goes out of scope, and TAKE_PTR()/TAKE_FD() to hand ownership on, so that
 * error paths are plain "return r;" without goto ladders. The library headers' own helpers
 * (json_decrefp, sd_bus_message_unrefp) are not repeated here. */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Number of elements of an array; refuses to compile when given a pointer. */
#define ELEMENTSOF(x)                                                            \
        (__builtin_choose_expr(                                                  \
                !__builtin_types_compatible_p(__typeof__(x), __typeof__(&*(x))), \
                sizeof(x) / sizeof((x)[0]),                                      \
                (void) 0))

/* Defines funcp(type *p), which calls func(*p) unless *p is NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
        static inline void func##p(type *p) {   \
                if (*p)                         \
                        func(*p);               \
        }

/* Returns the value of a pointer variable and sets the variable to NULL, so a _cleanup_ handler on it
 * does nothing: "return TAKE_PTR(x);" or "*ret = TAKE_PTR(x);". */
#define TAKE_PTR(ptr)                                      \
        ({                                                 \
                __typeof__(ptr) *_take_pptr_ = &(ptr);     \
                __typeof__(ptr) _take_ptr_ = *_take_pptr_; \
                *_take_pptr_ = NULL;                       \
                _take_ptr_;                                \
        })

/* The same for a file descriptor variable, which is left at -EBADF. */
#define TAKE_FD(fd)                          \
        ({                                   \
                int *_take_pfd_ = &(fd);     \
                int _take_fd_ = *_take_pfd_; \
                *_take_pfd_ = -EBADF;        \
                _take_fd_;                   \
        })

/* free() that returns NULL, for "p = mfree(p);". */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}

#define _cleanup_free_ _cleanup_(freep)

/* Closes fd if it is valid and returns -EBADF, for "fd = safe_close(fd);". errno is preserved, so it
 * can be used on error paths after the failing call has set errno. close() errors are ignored: on
 * Linux the descriptor is gone either way and retrying would be wrong. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved_errno = errno;

                (void) close(fd);
                errno = saved_errno;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        (void) safe_close(*fd);
}

#define _cleanup_close_ _cleanup_(closep)

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);
#define _cleanup_fclose_ _cleanup_(fclosep)

/* json_decrefp(), for _cleanup_(json_decrefp) json_t *j, comes from <jansson.h> (2.9 and later, with
 * GCC or clang), like sd_bus_message_unrefp() from <systemd/sd-bus.h>; neither is repeated here. */

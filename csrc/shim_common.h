/*
 * shim_common.h: what the xenctrl and xenstore shims do alike.  Each shim's
 * handle struct has `ops` (with a `name` and a `close`) and a char array
 * `last_error`; the macros below rely on those two names.  Included by the
 * shims' .c files only: it declares nothing for cffi.
 */
#ifndef SHIM_COMMON_H
#define SHIM_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Formats into buf (the handle's last_error) and returns -err. */
static int shim_set_error(char *buf, size_t buflen, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), unused));

static int shim_set_error(char *buf, size_t buflen, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, buflen, fmt, ap);
    va_end(ap);
    return -err;
}

#define set_error(h, err, ...) \
    shim_set_error((h)->last_error, sizeof((h)->last_error), (err), __VA_ARGS__)

/* Errors of open, before there is a handle: into the caller's buffer, if any. */
static void put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), unused));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* First lines of <prefix>_open: clear the caller's error, check and clear out. */
#define SHIM_OPEN_BEGIN(out, err, errlen)          \
    do {                                           \
        if ((err) && (errlen))                     \
            (err)[0] = '\0';                       \
        if (!(out)) {                              \
            put_err((err), (errlen), "out is NULL"); \
            return -EINVAL;                        \
        }                                          \
        *(out) = NULL;                             \
    } while (0)

/* Start of every call on an open handle: EBADF for a closed or NULL one. */
#define SHIM_ENTER(h)                 \
    do {                              \
        if (!(h) || !(h)->ops)        \
            return -EBADF;            \
        (h)->last_error[0] = '\0';    \
    } while (0)

/* The handle functions every shim exports alike: backend name, last error, close. */
#define SHIM_HANDLE_FUNCTIONS(prefix, handle_t)                  \
    const char *prefix##_backend(const handle_t *h)              \
    {                                                            \
        return h && h->ops ? h->ops->name : "";                  \
    }                                                            \
    const char *prefix##_last_error(const handle_t *h)           \
    {                                                            \
        return h ? h->last_error : "";                           \
    }                                                            \
    void prefix##_close(handle_t *h)                             \
    {                                                            \
        if (!h)                                                  \
            return;                                              \
        if (h->ops)                                              \
            h->ops->close(h);                                    \
        free(h);                                                 \
    }

#endif /* SHIM_COMMON_H */

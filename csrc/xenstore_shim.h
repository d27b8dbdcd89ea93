/*
 * xenstore_shim: a small xenstore client API.
 *
 * Backends, chosen at open time:
 *   "wire"  the built-in client of the xenstore wire protocol over a Unix
 *           socket (always compiled; the default).  It connects to any path,
 *           which is what the simulator and the tests need.
 *   "xs"    libxenstore's xs_open(0) (compiled only with HAVE_LIBXENSTORE):
 *           the socket named by XENSTORED_PATH / XENSTORED_RUNDIR / the
 *           default, else /dev/xen/xenbus -- the only way in when xenstored
 *           runs in a stub domain.  It cannot be given a path.
 *
 * Conventions: calls return 0 (or a count) on success and a negative errno
 * on failure: errors sent by xenstored (ENOENT, EACCES, EEXIST, EINVAL,
 * EAGAIN for a transaction conflict, ...), and connection errors (ENOENT or
 * ECONNREFUSED at open, ECONNRESET when the daemon hangs up, EIO for a
 * protocol violation, after which the handle answers EIO).  The message for
 * the last failure is in xss_last_error().  Nothing here aborts or exits;
 * SIGPIPE is never raised by the wire client (MSG_NOSIGNAL).
 *
 * A handle is for one thread at a time (the Python wrapper serialises).
 * Buffers handed out (xss_read, xss_directory) are malloc'd: free them with
 * xss_free().
 *
 * The part between CDEF-BEGIN and CDEF-END is the cffi cdef read by
 * csrc/build_xenstore.py: plain declarations and integer #defines only.
 */
#ifndef XAPI_XENSTORE_SHIM_H
#define XAPI_XENSTORE_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
#define XSS_API_VERSION 2
#define XSS_PAYLOAD_MAX 4096

/* wire message types (xen/io/xs_wire.h) */
#define XSS_DIRECTORY 1
#define XSS_READ 2
#define XSS_GET_PERMS 3
#define XSS_WATCH 4
#define XSS_UNWATCH 5
#define XSS_TRANSACTION_START 6
#define XSS_TRANSACTION_END 7
#define XSS_WRITE 11
#define XSS_MKDIR 12
#define XSS_RM 13
#define XSS_SET_PERMS 14
#define XSS_WATCH_EVENT 15
#define XSS_ERROR 16

typedef struct xss_handle xss_handle;

/* 1 when the module was built with the libxenstore ("xs") backend. */
int xss_have_libxenstore(void);

/* The socket the wire backend uses when given no path: $XENSTORED_PATH,
 * else $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket (as
 * libxenstore).  Writes a NUL-terminated string; returns its length or
 * -ENAMETOOLONG. */
int xss_default_path(char *buf, size_t buflen);

/*
 * backend: "wire" (NULL or "" mean "wire") or "xs".  path: the socket for
 * "wire" (NULL or "" for xss_default_path()); must be NULL or "" for "xs".
 * On failure *out is NULL and err holds a NUL-terminated message.
 */
int xss_open(const char *backend, const char *path, xss_handle **out,
             char *err, size_t errlen);

const char *xss_backend(const xss_handle *h);
const char *xss_last_error(const xss_handle *h);

/* tx is 0 outside a transaction. */

/* *value: malloc'd, *len bytes plus a terminating NUL not counted in *len. */
int xss_read(xss_handle *h, uint32_t tx, const char *path, char **value,
             size_t *len);
int xss_write(xss_handle *h, uint32_t tx, const char *path, const void *value,
              size_t len);
int xss_mkdir(xss_handle *h, uint32_t tx, const char *path);
int xss_rm(xss_handle *h, uint32_t tx, const char *path);
/* *names: malloc'd, the children's names each followed by a NUL, *len bytes
 * in all; returns the number of names. */
int xss_directory(xss_handle *h, uint32_t tx, const char *path, char **names,
                  size_t *len);
int xss_transaction_start(xss_handle *h, uint32_t *tx);
/* commit != 0 commits, 0 aborts; a conflicting commit fails with -EAGAIN. */
int xss_transaction_end(xss_handle *h, uint32_t tx, int commit);

/*
 * Permissions: a list of NUL-terminated strings "<p><domid>", p one of
 * n (none), r (read), w (write), b (both); the first names the owner and what
 * every domain not listed gets (as xenstore-ls and xenstore-chmod show them).
 * xss_get_perms returns the count, *perms malloc'd (*len bytes).
 */
int xss_get_perms(xss_handle *h, uint32_t tx, const char *path, char **perms,
                  size_t *len);
int xss_set_perms(xss_handle *h, uint32_t tx, const char *path,
                  const char *perms, size_t len);

/*
 * Watches: after xss_watch, changes at or below path (and the special
 * @introduceDomain / @releaseDomain) produce events, the first one at once.
 * xss_read_watch waits up to timeout_ms (-1: no limit, 0: only what is there)
 * and returns 1 with *event malloc'd as "path\0token\0" (*len bytes), or 0
 * when none came.  Events that arrive during other requests are queued.
 * xss_fileno is the descriptor that becomes readable when an event may be
 * waiting (to poll on between requests).
 */
int xss_watch(xss_handle *h, const char *path, const char *token);
int xss_unwatch(xss_handle *h, const char *path, const char *token);
int xss_read_watch(xss_handle *h, int timeout_ms, char **event, size_t *len);
int xss_fileno(xss_handle *h);

void xss_free(void *p);
/* Frees h; NULL is fine. */
void xss_close(xss_handle *h);
/* CDEF-END */

#endif /* XAPI_XENSTORE_SHIM_H */

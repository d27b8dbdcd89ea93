/*
 * xenstore_shim: see xenstore_shim.h.  The pure-Python reference of the wire
 * backend is xapi/xenstore_ref.py; keep the two in step (payloads, error
 * numbers and messages).
 */
#define _GNU_SOURCE
#include "xenstore_shim.h"
#include "shim_common.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBXENSTORE
#include <xenstore.h>
#endif

#define XSS_ERRLEN 512
#define XSS_HDR_LEN 16
/* Replies are at most XSS_PAYLOAD_MAX per the protocol; accept some slack
 * from lenient daemons, refuse anything absurd. */
#define XSS_REPLY_MAX (64 * 1024)
#define XSS_DEFAULT_SOCKET "/var/run/xenstored/socket"

struct xss_ops {
    const char *name;
    int (*read)(xss_handle *h, uint32_t tx, const char *path, char **value,
                size_t *len);
    int (*write)(xss_handle *h, uint32_t tx, const char *path,
                 const void *value, size_t len);
    int (*mkdir)(xss_handle *h, uint32_t tx, const char *path);
    int (*rm)(xss_handle *h, uint32_t tx, const char *path);
    int (*directory)(xss_handle *h, uint32_t tx, const char *path,
                     char **names, size_t *len);
    int (*transaction_start)(xss_handle *h, uint32_t *tx);
    int (*transaction_end)(xss_handle *h, uint32_t tx, int commit);
    void (*close)(xss_handle *h);
    int (*get_perms)(xss_handle *h, uint32_t tx, const char *path,
                     char **perms, size_t *len);
    int (*set_perms)(xss_handle *h, uint32_t tx, const char *path,
                     const char *perms, size_t len);
    int (*watch)(xss_handle *h, const char *path, const char *token);
    int (*unwatch)(xss_handle *h, const char *path, const char *token);
    int (*read_watch)(xss_handle *h, int timeout_ms, char **event,
                      size_t *len);
    int (*fileno)(xss_handle *h);
};

/* a watch event that arrived while waiting for a reply */
struct xss_event {
    struct xss_event *next;
    char *payload;            /* "path\0token\0" */
    size_t len;
};

struct xss_handle {
    const struct xss_ops *ops;
    char last_error[XSS_ERRLEN];
    /* wire backend */
    int fd;
    uint32_t next_req_id;
    int broken;               /* stream out of sync: every call fails EIO */
    struct xss_event *events, *events_tail;
#ifdef HAVE_LIBXENSTORE
    struct xs_handle *xsh;
#endif
};

/* ------------------------------------------------------------- errors -- */

/* The errno names xenstored sends in XS_ERROR (xen/io/xs_wire.h). */
static const struct { const char *name; int num; } xs_errors[] = {
    {"EINVAL", EINVAL}, {"EACCES", EACCES}, {"EEXIST", EEXIST},
    {"EISDIR", EISDIR}, {"ENOENT", ENOENT}, {"ENOMEM", ENOMEM},
    {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"ENOTEMPTY", ENOTEMPTY},
    {"ENOSYS", ENOSYS}, {"EROFS", EROFS}, {"EBUSY", EBUSY},
    {"EAGAIN", EAGAIN}, {"EISCONN", EISCONN}, {"E2BIG", E2BIG},
    {"EPERM", EPERM},
};

/* Unknown names map to EINVAL, as in libxenstore. */
static int xs_errno_of(const char *name)
{
    size_t i;
    for (i = 0; i < sizeof(xs_errors) / sizeof(xs_errors[0]); i++)
        if (strcmp(xs_errors[i].name, name) == 0)
            return xs_errors[i].num;
    return EINVAL;
}

/* --------------------------------------------------------------- wire -- */

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static int send_all(int fd, const unsigned char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 0, or -errno; end of stream is -ECONNRESET. */
static int recv_all(int fd, unsigned char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -ECONNRESET;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

static int wire_broken(xss_handle *h, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int wire_broken(xss_handle *h, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->last_error, sizeof(h->last_error), fmt, ap);
    va_end(ap);
    h->broken = 1;
    return -err;
}

static int queue_event(xss_handle *h, char *payload, size_t len)
{
    struct xss_event *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->next = NULL;
    e->payload = payload;
    e->len = len;
    if (h->events_tail)
        h->events_tail->next = e;
    else
        h->events = e;
    h->events_tail = e;
    return 0;
}

static int pop_event(xss_handle *h, char **event, size_t *len)
{
    struct xss_event *e = h->events;
    if (!e)
        return 0;
    h->events = e->next;
    if (!h->events)
        h->events_tail = NULL;
    *event = e->payload;
    *len = e->len;
    free(e);
    return 1;
}

/*
 * One request and its reply.  The payload is a (alen bytes) followed by b
 * (blen bytes).  what/arg name the request in messages.  On success *reply
 * is malloc'd (rlen bytes plus a NUL) when reply is not NULL.
 */
static int wire_request(xss_handle *h, uint32_t type, uint32_t tx,
                        const void *a, size_t alen, const void *b, size_t blen,
                        char **reply, size_t *rlen, const char *what,
                        const char *arg)
{
    unsigned char msg[XSS_HDR_LEN + XSS_PAYLOAD_MAX];
    unsigned char hdr[XSS_HDR_LEN];
    char ctx[160];
    uint32_t req_id;
    int rc;

    snprintf(ctx, sizeof(ctx), "%s%s%.128s", what, *arg ? " " : "", arg);

    if (h->broken)
        return set_error(h, EIO, "%s: connection to xenstored is unusable "
                         "after an earlier failure", ctx);
    if (alen + blen > XSS_PAYLOAD_MAX)
        return set_error(h, E2BIG, "%s: request of %zu bytes exceeds the "
                         "%d-byte payload limit", ctx, alen + blen,
                         XSS_PAYLOAD_MAX);
    req_id = h->next_req_id++;
    put_u32(msg, type);
    put_u32(msg + 4, req_id);
    put_u32(msg + 8, tx);
    put_u32(msg + 12, (uint32_t)(alen + blen));
    if (alen)
        memcpy(msg + XSS_HDR_LEN, a, alen);
    if (blen)
        memcpy(msg + XSS_HDR_LEN + alen, b, blen);
    rc = send_all(h->fd, msg, XSS_HDR_LEN + alen + blen);
    if (rc < 0)
        return wire_broken(h, -rc, "%s: sending to xenstored: %s", ctx, strerror(-rc));

    for (;;) {
        uint32_t rtype, rid, len;
        char *payload;
        rc = recv_all(h->fd, hdr, XSS_HDR_LEN);
        if (rc == -ECONNRESET)
            return wire_broken(h, ECONNRESET, "%s: xenstored closed the "
                               "connection", ctx);
        if (rc < 0)
            return wire_broken(h, -rc, "%s: receiving from xenstored: %s",
                               ctx, strerror(-rc));
        rtype = get_u32(hdr);
        rid = get_u32(hdr + 4);
        len = get_u32(hdr + 12);
        if (len > XSS_REPLY_MAX)
            return wire_broken(h, EIO, "%s: protocol error: reply of %u "
                               "bytes", ctx, len);
        payload = malloc((size_t)len + 1);
        if (!payload)
            return wire_broken(h, ENOMEM, "%s: out of memory", ctx);
        rc = recv_all(h->fd, (unsigned char *)payload, len);
        if (rc < 0) {
            free(payload);
            if (rc == -ECONNRESET)
                return wire_broken(h, ECONNRESET, "%s: xenstored closed "
                                   "the connection", ctx);
            return wire_broken(h, -rc, "%s: receiving from xenstored: %s",
                               ctx, strerror(-rc));
        }
        payload[len] = '\0';
        if (rtype == XSS_WATCH_EVENT) {
            /* kept for a later read_watch */
            if (queue_event(h, payload, len) < 0) {
                free(payload);
                return wire_broken(h, ENOMEM, "%s: out of memory", ctx);
            }
            continue;
        }
        if (rid != req_id) {
            free(payload);
            return wire_broken(h, EIO, "%s: protocol error: reply to "
                               "request %u, expected %u", ctx, rid,
                               req_id);
        }
        if (rtype == XSS_ERROR) {
            int e = xs_errno_of(payload);
            set_error(h, e, "%s: %s (%.32s)", ctx, strerror(e),
                      payload);
            free(payload);
            return -e;
        }
        if (rtype != type) {
            free(payload);
            return wire_broken(h, EIO, "%s: protocol error: reply type "
                               "%u to request type %u", ctx, rtype,
                               type);
        }
        if (reply) {
            *reply = payload;
            *rlen = len;
        } else {
            free(payload);
        }
        return 0;
    }
}

static int wire_read(xss_handle *h, uint32_t tx, const char *path,
                     char **value, size_t *len)
{
    return wire_request(h, XSS_READ, tx, path, strlen(path) + 1, NULL, 0,
                        value, len, "read", path);
}

static int wire_write(xss_handle *h, uint32_t tx, const char *path,
                      const void *value, size_t len)
{
    return wire_request(h, XSS_WRITE, tx, path, strlen(path) + 1, value, len,
                        NULL, NULL, "write", path);
}

static int wire_mkdir(xss_handle *h, uint32_t tx, const char *path)
{
    return wire_request(h, XSS_MKDIR, tx, path, strlen(path) + 1, NULL, 0,
                        NULL, NULL, "mkdir", path);
}

static int wire_rm(xss_handle *h, uint32_t tx, const char *path)
{
    return wire_request(h, XSS_RM, tx, path, strlen(path) + 1, NULL, 0,
                        NULL, NULL, "rm", path);
}

/* A request on path whose reply is NUL-terminated strings (directory names,
 * permissions): the reply in *out, its length in *len, the count returned. */
static int wire_strings(xss_handle *h, uint32_t type, uint32_t tx,
                        const char *path, const char *what, char **out,
                        size_t *len)
{
    char *buf;
    size_t n, i;
    int count = 0;
    int rc = wire_request(h, type, tx, path, strlen(path) + 1, NULL, 0, &buf,
                          &n, what, path);
    if (rc < 0)
        return rc;
    /* Each string is NUL-terminated; tolerate a missing final NUL (the
     * buffer always has one spare byte). */
    if (n > 0 && buf[n - 1] != '\0')
        buf[n++] = '\0';
    for (i = 0; i < n; i++)
        if (buf[i] == '\0')
            count++;
    *out = buf;
    *len = n;
    return count;
}

static int wire_directory(xss_handle *h, uint32_t tx, const char *path,
                          char **names, size_t *len)
{
    return wire_strings(h, XSS_DIRECTORY, tx, path, "directory", names, len);
}

static int wire_transaction_start(xss_handle *h, uint32_t *tx)
{
    char *buf, *end;
    size_t n;
    unsigned long v;
    int rc = wire_request(h, XSS_TRANSACTION_START, 0, "", 1, NULL, 0, &buf,
                          &n, "transaction_start", "");
    if (rc < 0)
        return rc;
    errno = 0;
    v = strtoul(buf, &end, 10);
    if (buf[0] < '0' || buf[0] > '9' || *end != '\0' || errno ||
        v == 0 || v > 0xffffffffUL) {
        set_error(h, EIO, "transaction_start: protocol error: bad "
                  "transaction id '%.32s'", buf);
        free(buf);
        return -EIO;
    }
    free(buf);
    *tx = (uint32_t)v;
    return 0;
}

static int wire_transaction_end(xss_handle *h, uint32_t tx, int commit)
{
    char arg[16];
    snprintf(arg, sizeof(arg), "%u", tx);
    return wire_request(h, XSS_TRANSACTION_END, tx, commit ? "T" : "F", 2,
                        NULL, 0, NULL, NULL, "transaction_end", arg);
}

static void wire_close(xss_handle *h)
{
    char *ev;
    size_t n;
    while (pop_event(h, &ev, &n))
        free(ev);
    if (h->fd >= 0) {
        close(h->fd);
        h->fd = -1;
    }
}

/* NUL-separated strings: the count, or -1 when one is malformed. */
static int count_perms(const char *perms, size_t len)
{
    size_t i, start = 0;
    int count = 0;
    if (len == 0 || perms[len - 1] != '\0')
        return -1;
    for (i = 0; i < len; i++) {
        if (perms[i] != '\0')
            continue;
        if (i == start)
            return -1;
        if (!strchr("nrwb", perms[start]) || i - start < 2)
            return -1;
        {
            size_t j;
            for (j = start + 1; j < i; j++)
                if (perms[j] < '0' || perms[j] > '9')
                    return -1;
        }
        count++;
        start = i + 1;
    }
    return count;
}

static int wire_get_perms(xss_handle *h, uint32_t tx, const char *path,
                          char **perms, size_t *len)
{
    return wire_strings(h, XSS_GET_PERMS, tx, path, "get_perms", perms, len);
}

static int wire_set_perms(xss_handle *h, uint32_t tx, const char *path,
                          const char *perms, size_t len)
{
    return wire_request(h, XSS_SET_PERMS, tx, path, strlen(path) + 1, perms,
                        len, NULL, NULL, "set_perms", path);
}

static int wire_watch_op(xss_handle *h, uint32_t type, const char *what,
                         const char *path, const char *token)
{
    return wire_request(h, type, 0, path, strlen(path) + 1, token,
                        strlen(token) + 1, NULL, NULL, what, path);
}

static int wire_watch(xss_handle *h, const char *path, const char *token)
{
    return wire_watch_op(h, XSS_WATCH, "watch", path, token);
}

static int wire_unwatch(xss_handle *h, const char *path, const char *token)
{
    return wire_watch_op(h, XSS_UNWATCH, "unwatch", path, token);
}

static int wire_read_watch(xss_handle *h, int timeout_ms, char **event,
                           size_t *len)
{
    unsigned char hdr[XSS_HDR_LEN];
    struct pollfd pfd;
    uint32_t rtype, rlen;
    char *payload;
    int rc;

    if (pop_event(h, event, len))
        return 1;
    if (h->broken)
        return set_error(h, EIO, "read_watch: connection to xenstored is "
                         "unusable after an earlier failure");
    pfd.fd = h->fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    do
        rc = poll(&pfd, 1, timeout_ms < 0 ? -1 : timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return set_error(h, errno, "read_watch: %s", strerror(errno));
    if (rc == 0)
        return 0;
    rc = recv_all(h->fd, hdr, XSS_HDR_LEN);
    if (rc == -ECONNRESET)
        return wire_broken(h, ECONNRESET, "read_watch: xenstored closed the "
                           "connection");
    if (rc < 0)
        return wire_broken(h, -rc, "read_watch: receiving from xenstored: %s",
                           strerror(-rc));
    rtype = get_u32(hdr);
    rlen = get_u32(hdr + 12);
    if (rlen > XSS_REPLY_MAX)
        return wire_broken(h, EIO, "read_watch: protocol error: message of "
                           "%u bytes", rlen);
    payload = malloc((size_t)rlen + 1);
    if (!payload)
        return wire_broken(h, ENOMEM, "read_watch: out of memory");
    rc = recv_all(h->fd, (unsigned char *)payload, rlen);
    if (rc < 0) {
        free(payload);
        return wire_broken(h, rc == -ECONNRESET ? ECONNRESET : -rc,
                           "read_watch: receiving from xenstored: %s",
                           strerror(-rc));
    }
    payload[rlen] = '\0';
    if (rtype != XSS_WATCH_EVENT) {
        free(payload);
        return wire_broken(h, EIO, "read_watch: protocol error: message "
                           "type %u with no request outstanding", rtype);
    }
    *event = payload;
    *len = rlen;
    return 1;
}

static int wire_fileno(xss_handle *h)
{
    return h->fd;
}

static const struct xss_ops wire_ops = {
    "wire", wire_read, wire_write, wire_mkdir, wire_rm, wire_directory,
    wire_transaction_start, wire_transaction_end, wire_close,
    wire_get_perms, wire_set_perms, wire_watch, wire_unwatch,
    wire_read_watch, wire_fileno,
};

int xss_default_path(char *buf, size_t buflen)
{
    const char *p = getenv("XENSTORED_PATH");
    const char *dir = getenv("XENSTORED_RUNDIR");
    int n;
    if (p && *p)
        n = snprintf(buf, buflen, "%s", p);
    else if (dir && *dir)
        n = snprintf(buf, buflen, "%s/socket", dir);
    else
        n = snprintf(buf, buflen, "%s", XSS_DEFAULT_SOCKET);
    if (n < 0 || (size_t)n >= buflen)
        return -ENAMETOOLONG;
    return n;
}

static int wire_open(xss_handle *h, const char *path, char *err,
                     size_t errlen)
{
    struct sockaddr_un sa;
    char def[4096];
    int fd, e;
    if (!path || !*path) {
        if (xss_default_path(def, sizeof(def)) < 0) {
            put_err(err, errlen, "the default xenstored socket path is too long");
            return -ENAMETOOLONG;
        }
        path = def;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        put_err(err, errlen, "cannot connect to xenstored at %s: %s", path,
                strerror(ENAMETOOLONG));
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        put_err(err, errlen, "cannot connect to xenstored at %s: %s", path,
                strerror(e));
        return -e;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        e = errno;
        close(fd);
        put_err(err, errlen, "cannot connect to xenstored at %s: %s", path,
                strerror(e));
        return -e;
    }
    h->fd = fd;
    h->next_req_id = 1;
    h->ops = &wire_ops;
    return 0;
}

/* ---------------------------------------------------------- libxenstore -- */

#ifdef HAVE_LIBXENSTORE

static int xs_fail(xss_handle *h, const char *what, const char *arg)
{
    int e = errno ? errno : EIO;
    return set_error(h, e, "%s%s%.128s: %s", what, *arg ? " " : "", arg,
                     strerror(e));
}

static int xsb_read(xss_handle *h, uint32_t tx, const char *path,
                    char **value, size_t *len)
{
    unsigned int n = 0;
    void *v;
    errno = 0;
    v = xs_read(h->xsh, tx, path, &n);
    if (!v)
        return xs_fail(h, "read", path);
    *value = v; /* malloc'd and NUL-terminated by libxenstore */
    *len = n;
    return 0;
}

static int xsb_write(xss_handle *h, uint32_t tx, const char *path,
                     const void *value, size_t len)
{
    if (len > XSS_PAYLOAD_MAX)
        return set_error(h, E2BIG, "write %s: value too long", path);
    errno = 0;
    if (!xs_write(h->xsh, tx, path, value, (unsigned int)len))
        return xs_fail(h, "write", path);
    return 0;
}

static int xsb_mkdir(xss_handle *h, uint32_t tx, const char *path)
{
    errno = 0;
    if (!xs_mkdir(h->xsh, tx, path))
        return xs_fail(h, "mkdir", path);
    return 0;
}

static int xsb_rm(xss_handle *h, uint32_t tx, const char *path)
{
    errno = 0;
    if (!xs_rm(h->xsh, tx, path))
        return xs_fail(h, "rm", path);
    return 0;
}

static int xsb_directory(xss_handle *h, uint32_t tx, const char *path,
                         char **names, size_t *len)
{
    unsigned int num = 0, i;
    size_t total = 0;
    char **v, *buf, *p;
    errno = 0;
    v = xs_directory(h->xsh, tx, path, &num);
    if (!v)
        return xs_fail(h, "directory", path);
    for (i = 0; i < num; i++)
        total += strlen(v[i]) + 1;
    buf = malloc(total + 1);
    if (!buf) {
        free(v);
        return set_error(h, ENOMEM, "directory %s: out of memory", path);
    }
    for (p = buf, i = 0; i < num; i++) {
        size_t l = strlen(v[i]) + 1;
        memcpy(p, v[i], l);
        p += l;
    }
    *p = '\0';
    free(v);
    *names = buf;
    *len = total;
    return (int)num;
}

static int xsb_transaction_start(xss_handle *h, uint32_t *tx)
{
    xs_transaction_t t;
    errno = 0;
    t = xs_transaction_start(h->xsh);
    if (t == XBT_NULL)
        return xs_fail(h, "transaction_start", "");
    *tx = t;
    return 0;
}

static int xsb_transaction_end(xss_handle *h, uint32_t tx, int commit)
{
    char arg[16];
    errno = 0;
    if (!xs_transaction_end(h->xsh, tx, !commit)) {
        snprintf(arg, sizeof(arg), "%u", tx);
        return xs_fail(h, "transaction_end", arg);
    }
    return 0;
}

static void xsb_close(xss_handle *h)
{
    if (h->xsh) {
        xs_close(h->xsh);
        h->xsh = NULL;
    }
}

static int xsb_get_perms(xss_handle *h, uint32_t tx, const char *path,
                         char **perms, size_t *len)
{
    static const char letters[] = "nrwb";
    unsigned int num = 0, i;
    struct xs_permissions *v;
    char *buf, *p;
    errno = 0;
    v = xs_get_permissions(h->xsh, tx, path, &num);
    if (!v)
        return xs_fail(h, "get_perms", path);
    buf = malloc((size_t)num * 12 + 1);
    if (!buf) {
        free(v);
        return set_error(h, ENOMEM, "get_perms %s: out of memory", path);
    }
    for (p = buf, i = 0; i < num; i++)
        p += sprintf(p, "%c%u", letters[v[i].perms & 3], v[i].id) + 1;
    free(v);
    *perms = buf;
    *len = (size_t)(p - buf);
    return (int)num;
}

static int xsb_set_perms(xss_handle *h, uint32_t tx, const char *path,
                         const char *perms, size_t len)
{
    int count = count_perms(perms, len), i;
    struct xs_permissions *v;
    const char *p = perms;
    if (count <= 0)
        return set_error(h, EINVAL, "set_perms %s: malformed permissions", path);
    v = calloc((size_t)count, sizeof(*v));
    if (!v)
        return set_error(h, ENOMEM, "set_perms %s: out of memory", path);
    for (i = 0; i < count; i++) {
        v[i].perms = *p == 'r' ? XS_PERM_READ : *p == 'w' ? XS_PERM_WRITE
                   : *p == 'b' ? (XS_PERM_READ | XS_PERM_WRITE) : XS_PERM_NONE;
        v[i].id = (unsigned int)strtoul(p + 1, NULL, 10);
        p += strlen(p) + 1;
    }
    errno = 0;
    if (!xs_set_permissions(h->xsh, tx, path, v, (unsigned int)count)) {
        free(v);
        return xs_fail(h, "set_perms", path);
    }
    free(v);
    return 0;
}

static int xsb_watch(xss_handle *h, const char *path, const char *token)
{
    errno = 0;
    if (!xs_watch(h->xsh, path, token))
        return xs_fail(h, "watch", path);
    return 0;
}

static int xsb_unwatch(xss_handle *h, const char *path, const char *token)
{
    errno = 0;
    if (!xs_unwatch(h->xsh, path, token))
        return xs_fail(h, "unwatch", path);
    return 0;
}

static int xsb_read_watch(xss_handle *h, int timeout_ms, char **event,
                          size_t *len)
{
    for (;;) {
        struct pollfd pfd;
        char **w;
        int rc;
        errno = 0;
        w = xs_check_watch(h->xsh);
        if (w) {
            size_t lp = strlen(w[XS_WATCH_PATH]) + 1;
            size_t lt = strlen(w[XS_WATCH_TOKEN]) + 1;
            char *buf = malloc(lp + lt + 1);
            if (!buf) {
                free(w);
                return set_error(h, ENOMEM, "read_watch: out of memory");
            }
            memcpy(buf, w[XS_WATCH_PATH], lp);
            memcpy(buf + lp, w[XS_WATCH_TOKEN], lt);
            buf[lp + lt] = '\0';
            free(w);
            *event = buf;
            *len = lp + lt;
            return 1;
        }
        if (errno != EAGAIN)
            return xs_fail(h, "read_watch", "");
        if (timeout_ms == 0)
            return 0;
        pfd.fd = xs_fileno(h->xsh);
        pfd.events = POLLIN;
        pfd.revents = 0;
        do
            rc = poll(&pfd, 1, timeout_ms);
        while (rc < 0 && errno == EINTR);
        if (rc < 0)
            return set_error(h, errno, "read_watch: %s", strerror(errno));
        if (rc == 0)
            return 0;
        timeout_ms = 0;     /* what is there now, then give up */
    }
}

static int xsb_fileno(xss_handle *h)
{
    return xs_fileno(h->xsh);
}

static const struct xss_ops xs_ops = {
    "xs", xsb_read, xsb_write, xsb_mkdir, xsb_rm, xsb_directory,
    xsb_transaction_start, xsb_transaction_end, xsb_close,
    xsb_get_perms, xsb_set_perms, xsb_watch, xsb_unwatch, xsb_read_watch,
    xsb_fileno,
};

static int xs_open_backend(xss_handle *h, char *err, size_t errlen)
{
    int e;
    errno = 0;
    h->xsh = xs_open(0);
    if (!h->xsh) {
        e = errno ? errno : EIO;
        put_err(err, errlen, "cannot connect to xenstored (libxenstore): %s",
                strerror(e));
        return -e;
    }
    h->ops = &xs_ops;
    return 0;
}

#endif /* HAVE_LIBXENSTORE */

/* ---------------------------------------------------------------- API -- */

int xss_have_libxenstore(void)
{
#ifdef HAVE_LIBXENSTORE
    return 1;
#else
    return 0;
#endif
}

int xss_open(const char *backend, const char *path, xss_handle **out,
             char *err, size_t errlen)
{
    xss_handle *h;
    int rc, xs;
    SHIM_OPEN_BEGIN(out, err, errlen);
    if (!backend || !*backend)
        backend = "wire";
    xs = strcmp(backend, "xs") == 0;
    if (!xs && strcmp(backend, "wire") != 0) {
        put_err(err, errlen, "unknown backend '%s' (expected 'wire' or 'xs')", backend);
        return -EINVAL;
    }
    if (xs) {
#ifndef HAVE_LIBXENSTORE
        put_err(err, errlen, "the xs backend is unavailable: built without libxenstore");
        return -ENOSYS;
#else
        if (path && *path) {
            put_err(err, errlen, "the xs backend takes no path (libxenstore "
                    "reads XENSTORED_PATH); use the wire backend");
            return -EINVAL;
        }
#endif
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        put_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    h->fd = -1;
#ifdef HAVE_LIBXENSTORE
    if (xs)
        rc = xs_open_backend(h, err, errlen);
    else
#endif
        rc = wire_open(h, path, err, errlen);
    if (rc < 0) {
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* xss_backend, xss_last_error, xss_close */
SHIM_HANDLE_FUNCTIONS(xss, xss_handle)

int xss_read(xss_handle *h, uint32_t tx, const char *path, char **value,
             size_t *len)
{
    SHIM_ENTER(h);
    if (!path || !value || !len)
        return set_error(h, EINVAL, "read: NULL argument");
    *value = NULL;
    *len = 0;
    return h->ops->read(h, tx, path, value, len);
}

int xss_write(xss_handle *h, uint32_t tx, const char *path, const void *value,
              size_t len)
{
    SHIM_ENTER(h);
    if (!path || (!value && len))
        return set_error(h, EINVAL, "write: NULL argument");
    return h->ops->write(h, tx, path, value ? value : "", len);
}

int xss_mkdir(xss_handle *h, uint32_t tx, const char *path)
{
    SHIM_ENTER(h);
    if (!path)
        return set_error(h, EINVAL, "mkdir: NULL argument");
    return h->ops->mkdir(h, tx, path);
}

int xss_rm(xss_handle *h, uint32_t tx, const char *path)
{
    SHIM_ENTER(h);
    if (!path)
        return set_error(h, EINVAL, "rm: NULL argument");
    return h->ops->rm(h, tx, path);
}

int xss_directory(xss_handle *h, uint32_t tx, const char *path, char **names,
                  size_t *len)
{
    SHIM_ENTER(h);
    if (!path || !names || !len)
        return set_error(h, EINVAL, "directory: NULL argument");
    *names = NULL;
    *len = 0;
    return h->ops->directory(h, tx, path, names, len);
}

int xss_transaction_start(xss_handle *h, uint32_t *tx)
{
    SHIM_ENTER(h);
    if (!tx)
        return set_error(h, EINVAL, "transaction_start: NULL argument");
    return h->ops->transaction_start(h, tx);
}

int xss_transaction_end(xss_handle *h, uint32_t tx, int commit)
{
    SHIM_ENTER(h);
    return h->ops->transaction_end(h, tx, commit);
}

int xss_get_perms(xss_handle *h, uint32_t tx, const char *path, char **perms,
                  size_t *len)
{
    SHIM_ENTER(h);
    if (!path || !perms || !len)
        return set_error(h, EINVAL, "get_perms: NULL argument");
    *perms = NULL;
    *len = 0;
    return h->ops->get_perms(h, tx, path, perms, len);
}

int xss_set_perms(xss_handle *h, uint32_t tx, const char *path,
                  const char *perms, size_t len)
{
    SHIM_ENTER(h);
    if (!path || !perms)
        return set_error(h, EINVAL, "set_perms: NULL argument");
    if (count_perms(perms, len) <= 0)
        return set_error(h, EINVAL, "set_perms %.128s: malformed permissions",
                         path);
    return h->ops->set_perms(h, tx, path, perms, len);
}

int xss_watch(xss_handle *h, const char *path, const char *token)
{
    SHIM_ENTER(h);
    if (!path || !token)
        return set_error(h, EINVAL, "watch: NULL argument");
    return h->ops->watch(h, path, token);
}

int xss_unwatch(xss_handle *h, const char *path, const char *token)
{
    SHIM_ENTER(h);
    if (!path || !token)
        return set_error(h, EINVAL, "unwatch: NULL argument");
    return h->ops->unwatch(h, path, token);
}

int xss_read_watch(xss_handle *h, int timeout_ms, char **event, size_t *len)
{
    SHIM_ENTER(h);
    if (!event || !len)
        return set_error(h, EINVAL, "read_watch: NULL argument");
    *event = NULL;
    *len = 0;
    return h->ops->read_watch(h, timeout_ms, event, len);
}

int xss_fileno(xss_handle *h)
{
    SHIM_ENTER(h);
    return h->ops->fileno(h);
}

void xss_free(void *p)
{
    free(p);
}

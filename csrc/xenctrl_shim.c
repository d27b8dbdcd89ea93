/*
 * xenctrl_shim: see xenctrl_shim.h.  The pure-Python reference of the sim
 * backend is xapi/xenctrl_ref.py; keep the two in step (defaults, limits,
 * error numbers and messages).
 */
#define _GNU_SOURCE
#include "xenctrl_shim.h"
#include "shim_common.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_LIBXENCTRL
#include <xenctrl.h>
#endif

#define XCS_ERRLEN 512
#define PAGES_PER_MIB (1024u * 1024u / XCS_PAGE_SIZE)

struct xcs_ops {
    const char *name;
    int (*physinfo)(xcs_handle *h, xcs_physinfo_t *out);
    int (*domain_list)(xcs_handle *h, uint32_t first, xcs_dominfo_t *out,
                       int max);
    void (*close)(xcs_handle *h);
    int (*domain_create)(xcs_handle *h, const uint8_t uuid[16], int hvm,
                         uint32_t max_vcpus, uint64_t max_mem_kib,
                         uint32_t *domid_out);
    int (*domain_destroy)(xcs_handle *h, uint32_t domid);
    int (*domain_pause)(xcs_handle *h, uint32_t domid);
    int (*domain_unpause)(xcs_handle *h, uint32_t domid);
    int (*domain_shutdown)(xcs_handle *h, uint32_t domid, uint32_t reason);
    int (*domain_setmaxmem)(xcs_handle *h, uint32_t domid, uint64_t kib);
    int (*domain_max_vcpus)(xcs_handle *h, uint32_t domid, uint32_t n);
    int (*domain_getinfo)(xcs_handle *h, uint32_t domid, xcs_dominfo_t *out);
};

/* ---------------------------------------------------------------- sim -- */

struct sim_domain {
    uint32_t domid;
    uint8_t handle[16];
    uint8_t dying, shutdown, paused, blocked, hvm;
    uint32_t shutdown_reason;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint32_t vcpus;
    uint64_t cpu_time_base;  /* ns accumulated before run_since */
    int64_t run_since;       /* monotonic ns when it last started running */
};

struct sim_host {
    pthread_mutex_t lock;
    uint64_t total_pages;
    uint32_t cpus;
    uint32_t cpu_khz;
    uint32_t load_pct;
    struct sim_domain *doms; /* sorted by domid */
    size_t ndoms;
    size_t cap;
};

#ifdef HAVE_LIBXENCTRL
/* A xentoollog logger that keeps the last error instead of printing it. */
struct xcs_logger {
    xentoollog_logger base;
    char last[XCS_ERRLEN];
};
#endif

struct xcs_handle {
    const struct xcs_ops *ops;
    char last_error[XCS_ERRLEN];
    struct sim_host *sim;
#ifdef HAVE_LIBXENCTRL
    xc_interface *xch;
    struct xcs_logger logger;
#endif
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sim config limits; mirrored in xapi/xenctrl_ref.py. */
#define SIM_MAX_MEMORY_MIB (1ull << 30)
#define SIM_MAX_CPUS 4096ull
#define SIM_MAX_CPU_MHZ 1000000ull

struct sim_key {
    const char *name;
    unsigned long long min, max;
};

enum { K_MEMORY, K_CPUS, K_MHZ, K_DOM0_MEM, K_DOM0_VCPUS, K_LOAD, K_COUNT };

static const struct sim_key sim_keys[K_COUNT] = {
    [K_MEMORY] = {"memory_mib", 1, SIM_MAX_MEMORY_MIB},
    [K_CPUS] = {"cpus", 1, SIM_MAX_CPUS},
    [K_MHZ] = {"cpu_mhz", 1, SIM_MAX_CPU_MHZ},
    [K_DOM0_MEM] = {"dom0_memory_mib", 1, SIM_MAX_MEMORY_MIB},
    [K_DOM0_VCPUS] = {"dom0_vcpus", 1, SIM_MAX_CPUS},
    [K_LOAD] = {"load_pct", 0, 100},
};

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Parse "key=value,..." into vals/set.  Returns 0 or -EINVAL with err. */
static int sim_parse(const char *cfg, unsigned long long vals[K_COUNT],
                     int set[K_COUNT], char *err, size_t errlen)
{
    const char *p = cfg ? cfg : "";
    while (1) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + n;
        while (a < b && is_blank(*a)) a++;
        while (b > a && is_blank(b[-1])) b--;
        if (a < b) {
            const char *eq = memchr(a, '=', (size_t)(b - a));
            const char *k1, *v0, *v1;
            int key = -1, i;
            if (!eq) {
                put_err(err, errlen, "sim config: item '%.*s' is not key=value",
                        (int)(b - a), a);
                return -EINVAL;
            }
            k1 = eq;
            while (k1 > a && is_blank(k1[-1])) k1--;
            v0 = eq + 1;
            while (v0 < b && is_blank(*v0)) v0++;
            v1 = b;
            for (i = 0; i < K_COUNT; i++) {
                if (strlen(sim_keys[i].name) == (size_t)(k1 - a) &&
                    memcmp(sim_keys[i].name, a, (size_t)(k1 - a)) == 0) {
                    key = i;
                    break;
                }
            }
            if (key < 0) {
                put_err(err, errlen, "sim config: unknown key '%.*s'",
                        (int)(k1 - a), a);
                return -EINVAL;
            }
            {
                unsigned long long v = 0;
                int ok = v0 < v1;
                const char *q;
                for (q = v0; ok && q < v1; q++) {
                    if (*q < '0' || *q > '9') {
                        ok = 0;
                        break;
                    }
                    v = v * 10 + (unsigned long long)(*q - '0');
                    if (v > sim_keys[key].max)
                        ok = 0; /* also stops before overflow */
                }
                if (ok && v < sim_keys[key].min)
                    ok = 0;
                if (!ok) {
                    put_err(err, errlen,
                            "sim config: bad value '%.*s' for %s (expected an "
                            "integer in [%llu, %llu])",
                            (int)(v1 - v0), v0, sim_keys[key].name,
                            sim_keys[key].min, sim_keys[key].max);
                    return -EINVAL;
                }
                vals[key] = v;
                set[key] = 1;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

static uint64_t sim_cpu_time(const struct sim_host *s,
                             const struct sim_domain *d, int64_t now)
{
    uint64_t t = d->cpu_time_base;
    if (d->run_since >= 0 && now > d->run_since) {
        uint64_t elapsed = (uint64_t)(now - d->run_since);
#ifdef __SIZEOF_INT128__
        unsigned __int128 x = (unsigned __int128)elapsed * d->vcpus * s->load_pct;
        t += (uint64_t)(x / 100);
#else
        t += (uint64_t)((long double)elapsed * d->vcpus * s->load_pct / 100);
#endif
    }
    return t;
}

static int sim_physinfo(xcs_handle *h, xcs_physinfo_t *out)
{
    struct sim_host *s = h->sim;
    uint64_t used = 0;
    size_t i;
    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->ndoms; i++)
        used += s->doms[i].tot_pages;
    memset(out, 0, sizeof(*out));
    out->nr_cpus = s->cpus;
    out->threads_per_core = 1;
    out->cores_per_socket = s->cpus;
    out->nr_nodes = 1;
    out->cpu_khz = s->cpu_khz;
    out->total_pages = s->total_pages;
    out->free_pages = used > s->total_pages ? 0 : s->total_pages - used;
    out->scrub_pages = 0;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void sim_fill(const struct sim_host *s, const struct sim_domain *d,
                     int64_t now, xcs_dominfo_t *o)
{
        memset(o, 0, sizeof(*o));
        o->domid = d->domid;
        memcpy(o->handle, d->handle, sizeof(o->handle));
        o->dying = d->dying;
        o->shutdown = d->shutdown;
        o->paused = d->paused;
        o->blocked = d->blocked;
        o->running = d->run_since >= 0;
        o->hvm = d->hvm;
        o->shutdown_reason = d->shutdown ? d->shutdown_reason : 0;
        o->tot_pages = d->tot_pages;
        o->max_pages = d->max_pages;
        o->nr_online_vcpus = d->vcpus;
        o->max_vcpu_id = d->vcpus ? d->vcpus - 1 : 0xffffffffu;
        o->cpu_time = sim_cpu_time(s, d, now);
}

static int sim_domain_list(xcs_handle *h, uint32_t first, xcs_dominfo_t *out,
                           int max)
{
    struct sim_host *s = h->sim;
    int64_t now = now_ns();
    int n = 0;
    size_t i;
    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->ndoms && n < max; i++) {
        if (s->doms[i].domid < first)
            continue;
        sim_fill(s, &s->doms[i], now, &out[n++]);
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Caller holds s->lock. */
static uint64_t sim_free_pages(const struct sim_host *s)
{
    uint64_t used = 0;
    size_t i;
    for (i = 0; i < s->ndoms; i++)
        used += s->doms[i].tot_pages;
    return used > s->total_pages ? 0 : s->total_pages - used;
}

/* Caller holds s->lock.  The domain or NULL after setting ESRCH. */
static struct sim_domain *sim_find(xcs_handle *h, const char *op,
                                   uint32_t domid)
{
    struct sim_host *s = h->sim;
    size_t i;
    for (i = 0; i < s->ndoms; i++)
        if (s->doms[i].domid == domid)
            return &s->doms[i];
    set_error(h, ESRCH, "%s: domain %u: no such domain", op, domid);
    return NULL;
}

/* Stop the cpu_time clock of d (caller holds the lock). */
static void sim_stop(const struct sim_host *s, struct sim_domain *d,
                     int64_t now)
{
    if (d->run_since >= 0) {
        d->cpu_time_base = sim_cpu_time(s, d, now);
        d->run_since = -1;
    }
}

static int sim_domain_create(xcs_handle *h, const uint8_t uuid[16], int hvm,
                             uint32_t max_vcpus, uint64_t max_mem_kib,
                             uint32_t *domid_out)
{
    struct sim_host *s = h->sim;
    uint64_t pages = max_mem_kib / (XCS_PAGE_SIZE / 1024), free_pages;
    uint32_t domid = 1;
    size_t i, pos;
    struct sim_domain *d;
    int rc = 0;
    if (max_vcpus < 1 || max_vcpus > XCS_MAX_VCPUS)
        return set_error(h, EINVAL, "domain_create: max_vcpus %u out of range [1, %u]",
                         max_vcpus, (unsigned)XCS_MAX_VCPUS);
    pthread_mutex_lock(&s->lock);
    free_pages = sim_free_pages(s);
    if (pages > free_pages) {
        rc = set_error(h, ENOMEM, "domain_create: %llu KiB needed, %llu KiB free",
                       (unsigned long long)max_mem_kib,
                       (unsigned long long)free_pages * (XCS_PAGE_SIZE / 1024));
        goto out;
    }
    /* doms is sorted: the lowest free domid >= 1 is the first gap. */
    for (pos = 0; pos < s->ndoms; pos++) {
        if (s->doms[pos].domid < domid)
            continue;
        if (s->doms[pos].domid > domid)
            break;
        domid++;
    }
    if (domid >= XCS_DOMID_FIRST_RESERVED) {
        rc = set_error(h, ENOSPC, "domain_create: no free domid");
        goto out;
    }
    if (s->ndoms == s->cap) {
        struct sim_domain *n = realloc(s->doms, s->cap * 2 * sizeof(*n));
        if (!n) {
            rc = set_error(h, ENOMEM, "out of memory");
            goto out;
        }
        s->doms = n;
        s->cap *= 2;
    }
    for (i = s->ndoms; i > pos; i--)
        s->doms[i] = s->doms[i - 1];
    s->ndoms++;
    d = &s->doms[pos];
    memset(d, 0, sizeof(*d));
    d->domid = domid;
    memcpy(d->handle, uuid, sizeof(d->handle));
    d->paused = 1;
    d->hvm = hvm ? 1 : 0;
    d->tot_pages = d->max_pages = pages;
    d->vcpus = max_vcpus;
    d->run_since = -1;
    *domid_out = domid;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_destroy(xcs_handle *h, uint32_t domid)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_destroy", domid)))
        rc = -ESRCH;
    else if (domid == 0)
        rc = set_error(h, EPERM, "domain_destroy: domain 0 is the control domain");
    else {
        size_t pos = (size_t)(d - s->doms);
        memmove(d, d + 1, (s->ndoms - pos - 1) * sizeof(*d));
        s->ndoms--;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_pause(xcs_handle *h, uint32_t domid)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_pause", domid)))
        rc = -ESRCH;
    else if (domid == 0)
        rc = set_error(h, EPERM, "domain_pause: domain 0 is the control domain");
    else {
        sim_stop(s, d, now_ns());
        d->paused = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_unpause(xcs_handle *h, uint32_t domid)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_unpause", domid)))
        rc = -ESRCH;
    else if (domid == 0)
        rc = set_error(h, EPERM, "domain_unpause: domain 0 is the control domain");
    else {
        d->paused = 0;
        if (!d->shutdown && d->run_since < 0)
            d->run_since = now_ns();
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_shutdown(xcs_handle *h, uint32_t domid, uint32_t reason)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    if (reason > XCS_SHUTDOWN_SOFT_RESET)
        return set_error(h, EINVAL, "domain_shutdown: bad reason %u", reason);
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_shutdown", domid)))
        rc = -ESRCH;
    else if (domid == 0)
        rc = set_error(h, EPERM, "domain_shutdown: domain 0 is the control domain");
    else if (!d->shutdown) {
        sim_stop(s, d, now_ns());
        d->shutdown = 1;
        d->shutdown_reason = reason;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_setmaxmem(xcs_handle *h, uint32_t domid, uint64_t kib)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    uint64_t pages = kib / (XCS_PAGE_SIZE / 1024);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_setmaxmem", domid)))
        rc = -ESRCH;
    else {
        uint64_t free_pages = sim_free_pages(s);
        if (pages > d->tot_pages && pages - d->tot_pages > free_pages)
            rc = set_error(h, ENOMEM,
                           "domain_setmaxmem: %llu KiB more needed, %llu KiB free",
                           (unsigned long long)(pages - d->tot_pages) * (XCS_PAGE_SIZE / 1024),
                           (unsigned long long)free_pages * (XCS_PAGE_SIZE / 1024));
        else
            d->tot_pages = d->max_pages = pages;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_max_vcpus(xcs_handle *h, uint32_t domid, uint32_t n)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    if (n < 1 || n > XCS_MAX_VCPUS)
        return set_error(h, EINVAL, "domain_max_vcpus: max_vcpus %u out of range [1, %u]",
                         n, (unsigned)XCS_MAX_VCPUS);
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_max_vcpus", domid)))
        rc = -ESRCH;
    else {
        int64_t now = now_ns();
        /* restart the clock so the new count only applies from now on */
        if (d->run_since >= 0) {
            d->cpu_time_base = sim_cpu_time(s, d, now);
            d->run_since = now;
        }
        d->vcpus = n;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sim_domain_getinfo(xcs_handle *h, uint32_t domid, xcs_dominfo_t *out)
{
    struct sim_host *s = h->sim;
    struct sim_domain *d;
    int rc = 0;
    int64_t now = now_ns();
    pthread_mutex_lock(&s->lock);
    if (!(d = sim_find(h, "domain_getinfo", domid)))
        rc = -ESRCH;
    else
        sim_fill(s, d, now, out);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void sim_close(xcs_handle *h)
{
    if (h->sim) {
        pthread_mutex_destroy(&h->sim->lock);
        free(h->sim->doms);
        free(h->sim);
        h->sim = NULL;
    }
}

static const struct xcs_ops sim_ops = {
    .name = "sim",
    .physinfo = sim_physinfo,
    .domain_list = sim_domain_list,
    .close = sim_close,
    .domain_create = sim_domain_create,
    .domain_destroy = sim_domain_destroy,
    .domain_pause = sim_domain_pause,
    .domain_unpause = sim_domain_unpause,
    .domain_shutdown = sim_domain_shutdown,
    .domain_setmaxmem = sim_domain_setmaxmem,
    .domain_max_vcpus = sim_domain_max_vcpus,
    .domain_getinfo = sim_domain_getinfo,
};

static int sim_open(xcs_handle *h, const char *cfg, char *err, size_t errlen)
{
    unsigned long long vals[K_COUNT] = {0};
    int set[K_COUNT] = {0};
    struct sim_host *s;
    struct sim_domain *d0;
    unsigned long long memory, dom0_mem, dom0_vcpus;
    int rc = sim_parse(cfg, vals, set, err, errlen);
    if (rc < 0)
        return rc;
    memory = set[K_MEMORY] ? vals[K_MEMORY] : 16384;
    if (!set[K_CPUS]) vals[K_CPUS] = 4;
    if (!set[K_MHZ]) vals[K_MHZ] = 2400;
    if (!set[K_LOAD]) vals[K_LOAD] = 10;
    dom0_mem = set[K_DOM0_MEM] ? vals[K_DOM0_MEM] : (memory < 1024 ? memory : 1024);
    dom0_vcpus = set[K_DOM0_VCPUS] ? vals[K_DOM0_VCPUS] : vals[K_CPUS];
    if (dom0_mem > memory) {
        put_err(err, errlen, "sim config: dom0_memory_mib (%llu) exceeds memory_mib (%llu)",
                dom0_mem, memory);
        return -EINVAL;
    }
    if (dom0_vcpus > vals[K_CPUS]) {
        put_err(err, errlen, "sim config: dom0_vcpus (%llu) exceeds cpus (%llu)",
                dom0_vcpus, vals[K_CPUS]);
        return -EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->doms = calloc(8, sizeof(*s->doms)))) {
        free(s);
        put_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->cap = 8;
    s->total_pages = memory * PAGES_PER_MIB;
    s->cpus = (uint32_t)vals[K_CPUS];
    s->cpu_khz = (uint32_t)(vals[K_MHZ] * 1000);
    s->load_pct = (uint32_t)vals[K_LOAD];

    /* Domain 0: the control domain, always running, PV, all-zero handle. */
    d0 = &s->doms[s->ndoms++];
    d0->domid = 0;
    d0->tot_pages = dom0_mem * PAGES_PER_MIB;
    d0->max_pages = d0->tot_pages;
    d0->vcpus = (uint32_t)dom0_vcpus;
    d0->run_since = now_ns();

    h->sim = s;
    h->ops = &sim_ops;
    return 0;
}

/* ----------------------------------------------------------------- xc -- */

#ifdef HAVE_LIBXENCTRL

static void quiet_vmessage(xentoollog_logger *logger, xentoollog_level level,
                           int errnoval, const char *context,
                           const char *format, va_list al)
{
    struct xcs_logger *l = (struct xcs_logger *)logger;
    char msg[XCS_ERRLEN / 2];
    (void)context;
    if (level < XTL_ERROR)
        return;
    vsnprintf(msg, sizeof(msg), format, al);
    if (errnoval >= 0)
        snprintf(l->last, sizeof(l->last), "%s: %s", msg, strerror(errnoval));
    else
        snprintf(l->last, sizeof(l->last), "%s", msg);
}

static void quiet_progress(xentoollog_logger *logger, const char *context,
                           const char *doing_what, int percent,
                           unsigned long done, unsigned long total)
{
    (void)logger; (void)context; (void)doing_what; (void)percent;
    (void)done; (void)total;
}

static void quiet_destroy(xentoollog_logger *logger)
{
    (void)logger; /* embedded in the handle: nothing to free */
}

static int xc_fail(xcs_handle *h, const char *what)
{
    int e = errno ? errno : EIO;
    if (h->logger.last[0])
        set_error(h, e, "%s: %s (libxenctrl: %s)", what, strerror(e), h->logger.last);
    else
        set_error(h, e, "%s: %s", what, strerror(e));
    h->logger.last[0] = '\0';
    return -e;
}

static int xcb_physinfo(xcs_handle *h, xcs_physinfo_t *out)
{
    xc_physinfo_t pi;
    memset(&pi, 0, sizeof(pi));
    errno = 0;
    if (xc_physinfo(h->xch, &pi) != 0)
        return xc_fail(h, "xc_physinfo");
    memset(out, 0, sizeof(*out));
    out->nr_cpus = pi.nr_cpus;
    out->threads_per_core = pi.threads_per_core;
    out->cores_per_socket = pi.cores_per_socket;
    out->nr_nodes = pi.nr_nodes;
    out->cpu_khz = pi.cpu_khz;
    out->total_pages = pi.total_pages;
    out->free_pages = pi.free_pages;
    out->scrub_pages = pi.scrub_pages;
    return 0;
}

static void xcb_fill(const xc_domaininfo_t *d, xcs_dominfo_t *o);

static int xcb_domain_list(xcs_handle *h, uint32_t first, xcs_dominfo_t *out,
                           int max)
{
    xc_domaininfo_t *info;
    int n, i;
    if (first > 0xffff)   /* domid_t is 16 bits */
        return 0;
    info = calloc((size_t)max, sizeof(*info));
    if (!info)
        return set_error(h, ENOMEM, "out of memory");
    errno = 0;
    n = xc_domain_getinfolist(h->xch, first, (unsigned int)max, info);
    if (n < 0) {
        int rc = xc_fail(h, "xc_domain_getinfolist");
        free(info);
        return rc;
    }
    for (i = 0; i < n; i++)
        xcb_fill(&info[i], &out[i]);
    free(info);
    return n;
}

static void xcb_fill(const xc_domaininfo_t *d, xcs_dominfo_t *o)
{
        memset(o, 0, sizeof(*o));
        o->domid = d->domain;
        memcpy(o->handle, d->handle, sizeof(o->handle));
        o->dying = !!(d->flags & XEN_DOMINF_dying);
        o->shutdown = !!(d->flags & XEN_DOMINF_shutdown);
        o->paused = !!(d->flags & XEN_DOMINF_paused);
        o->blocked = !!(d->flags & XEN_DOMINF_blocked);
        o->running = !!(d->flags & XEN_DOMINF_running);
        o->hvm = !!(d->flags & XEN_DOMINF_hvm_guest);
        o->shutdown_reason =
            (d->flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
        o->tot_pages = d->tot_pages;
        o->max_pages = d->max_pages;
        o->nr_online_vcpus = d->nr_online_vcpus;
        o->max_vcpu_id = d->max_vcpu_id;
        o->cpu_time = d->cpu_time;
}

static int xcb_domain_create(xcs_handle *h, const uint8_t uuid[16], int hvm,
                             uint32_t max_vcpus, uint64_t max_mem_kib,
                             uint32_t *domid_out)
{
    struct xen_domctl_createdomain cfg;
    uint32_t domid = 0;
    if (max_vcpus < 1 || max_vcpus > XCS_MAX_VCPUS)
        return set_error(h, EINVAL, "domain_create: max_vcpus %u out of range [1, %u]",
                         max_vcpus, (unsigned)XCS_MAX_VCPUS);
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.handle, uuid, sizeof(cfg.handle));
    cfg.flags = hvm ? (XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap) : 0;
    cfg.max_vcpus = max_vcpus;
    cfg.max_evtchn_port = 1023;
    cfg.max_grant_frames = -1;
    cfg.max_maptrack_frames = -1;
    cfg.grant_opts = XEN_DOMCTL_GRANT_version(1);
#if defined(__i386__) || defined(__x86_64__)
    cfg.arch.emulation_flags = hvm ? XEN_X86_EMU_ALL : 0;
#endif
    errno = 0;
    if (xc_domain_create(h->xch, &domid, &cfg) != 0)
        return xc_fail(h, "xc_domain_create");
    errno = 0;
    if (xc_domain_setmaxmem(h->xch, domid, max_mem_kib) != 0) {
        int rc = xc_fail(h, "xc_domain_setmaxmem");
        xc_domain_destroy(h->xch, domid);
        return rc;
    }
    *domid_out = domid;
    return 0;
}

static int xcb_domain_destroy(xcs_handle *h, uint32_t domid)
{
    errno = 0;
    return xc_domain_destroy(h->xch, domid) != 0 ? xc_fail(h, "xc_domain_destroy") : 0;
}

static int xcb_domain_pause(xcs_handle *h, uint32_t domid)
{
    errno = 0;
    return xc_domain_pause(h->xch, domid) != 0 ? xc_fail(h, "xc_domain_pause") : 0;
}

static int xcb_domain_unpause(xcs_handle *h, uint32_t domid)
{
    errno = 0;
    return xc_domain_unpause(h->xch, domid) != 0 ? xc_fail(h, "xc_domain_unpause") : 0;
}

static int xcb_domain_shutdown(xcs_handle *h, uint32_t domid, uint32_t reason)
{
    if (reason > XCS_SHUTDOWN_SOFT_RESET)
        return set_error(h, EINVAL, "domain_shutdown: bad reason %u", reason);
    errno = 0;
    return xc_domain_shutdown(h->xch, domid, (int)reason) != 0
               ? xc_fail(h, "xc_domain_shutdown") : 0;
}

static int xcb_domain_setmaxmem(xcs_handle *h, uint32_t domid, uint64_t kib)
{
    errno = 0;
    return xc_domain_setmaxmem(h->xch, domid, kib) != 0
               ? xc_fail(h, "xc_domain_setmaxmem") : 0;
}

static int xcb_domain_max_vcpus(xcs_handle *h, uint32_t domid, uint32_t n)
{
    if (n < 1 || n > XCS_MAX_VCPUS)
        return set_error(h, EINVAL, "domain_max_vcpus: max_vcpus %u out of range [1, %u]",
                         n, (unsigned)XCS_MAX_VCPUS);
    errno = 0;
    return xc_domain_max_vcpus(h->xch, domid, n) != 0
               ? xc_fail(h, "xc_domain_max_vcpus") : 0;
}

static int xcb_domain_getinfo(xcs_handle *h, uint32_t domid, xcs_dominfo_t *out)
{
    /* 4.17 has no xc_domain_getinfo_single: ask for one domain from domid on */
    xc_domaininfo_t info;
    int n;
    if (domid > 0xffff)
        return set_error(h, ESRCH, "domain_getinfo: domain %u: no such domain", domid);
    memset(&info, 0, sizeof(info));
    errno = 0;
    n = xc_domain_getinfolist(h->xch, domid, 1, &info);
    if (n < 0)
        return xc_fail(h, "xc_domain_getinfolist");
    if (n < 1 || info.domain != domid)
        return set_error(h, ESRCH, "domain_getinfo: domain %u: no such domain", domid);
    xcb_fill(&info, out);
    return 0;
}

static void xcb_close(xcs_handle *h)
{
    if (h->xch) {
        xc_interface_close(h->xch);
        h->xch = NULL;
    }
}

static const struct xcs_ops xc_ops = {
    .name = "xc",
    .physinfo = xcb_physinfo,
    .domain_list = xcb_domain_list,
    .close = xcb_close,
    .domain_create = xcb_domain_create,
    .domain_destroy = xcb_domain_destroy,
    .domain_pause = xcb_domain_pause,
    .domain_unpause = xcb_domain_unpause,
    .domain_shutdown = xcb_domain_shutdown,
    .domain_setmaxmem = xcb_domain_setmaxmem,
    .domain_max_vcpus = xcb_domain_max_vcpus,
    .domain_getinfo = xcb_domain_getinfo,
};

static int xc_open_backend(xcs_handle *h, char *err, size_t errlen)
{
    int e;
    h->logger.base.vmessage = quiet_vmessage;
    h->logger.base.progress = quiet_progress;
    h->logger.base.destroy = quiet_destroy;
    h->logger.last[0] = '\0';
    errno = 0;
    h->xch = xc_interface_open(&h->logger.base, &h->logger.base, 0);
    if (h->xch) {
        h->ops = &xc_ops;
        return 0;
    }
    e = errno ? errno : EIO;
    if (h->logger.last[0])
        put_err(err, errlen, "cannot open the hypervisor interface: %s",
                h->logger.last);
    else
        put_err(err, errlen, "cannot open the hypervisor interface: %s",
                strerror(e));
    return -e;
}

#endif /* HAVE_LIBXENCTRL */

/* ---------------------------------------------------------------- API -- */

int xcs_have_libxenctrl(void)
{
#ifdef HAVE_LIBXENCTRL
    return 1;
#else
    return 0;
#endif
}

int xcs_open(const char *backend, const char *sim_config, xcs_handle **out,
             char *err, size_t errlen)
{
    xcs_handle *h;
    int rc;
    SHIM_OPEN_BEGIN(out, err, errlen);
    if (!backend || !*backend)
        backend = "sim";
    if (strcmp(backend, "sim") != 0 && strcmp(backend, "xc") != 0) {
        put_err(err, errlen, "unknown backend '%s' (expected 'sim' or 'xc')", backend);
        return -EINVAL;
    }
    if (strcmp(backend, "xc") == 0) {
#ifndef HAVE_LIBXENCTRL
        put_err(err, errlen, "the xc backend is unavailable: built without libxenctrl");
        return -ENOSYS;
#else
        if (sim_config && *sim_config) {
            put_err(err, errlen, "sim_config is only for the sim backend");
            return -EINVAL;
        }
#endif
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        put_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (strcmp(backend, "sim") == 0)
        rc = sim_open(h, sim_config, err, errlen);
    else
#ifdef HAVE_LIBXENCTRL
        rc = xc_open_backend(h, err, errlen);
#else
        rc = -ENOSYS; /* not reached */
#endif
    if (rc < 0) {
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* xcs_backend, xcs_last_error, xcs_close */
SHIM_HANDLE_FUNCTIONS(xcs, xcs_handle)

int xcs_physinfo(xcs_handle *h, xcs_physinfo_t *out)
{
    SHIM_ENTER(h);
    if (!out)
        return set_error(h, EINVAL, "out is NULL");
    return h->ops->physinfo(h, out);
}

int xcs_domain_list(xcs_handle *h, uint32_t first_domid, xcs_dominfo_t *out,
                    int max)
{
    SHIM_ENTER(h);
    if (max < 0 || (max > 0 && !out))
        return set_error(h, EINVAL, "bad output buffer");
    if (max == 0)
        return 0;
    return h->ops->domain_list(h, first_domid, out, max);
}

int xcs_domain_create(xcs_handle *h, const uint8_t uuid[16], int hvm,
                      uint32_t max_vcpus, uint64_t max_mem_kib,
                      uint32_t *domid_out)
{
    SHIM_ENTER(h);
    if (!uuid || !domid_out)
        return set_error(h, EINVAL, "uuid or domid_out is NULL");
    return h->ops->domain_create(h, uuid, hvm, max_vcpus, max_mem_kib, domid_out);
}

int xcs_domain_destroy(xcs_handle *h, uint32_t domid)
{
    SHIM_ENTER(h);
    return h->ops->domain_destroy(h, domid);
}

int xcs_domain_pause(xcs_handle *h, uint32_t domid)
{
    SHIM_ENTER(h);
    return h->ops->domain_pause(h, domid);
}

int xcs_domain_unpause(xcs_handle *h, uint32_t domid)
{
    SHIM_ENTER(h);
    return h->ops->domain_unpause(h, domid);
}

int xcs_domain_shutdown(xcs_handle *h, uint32_t domid, uint32_t reason)
{
    SHIM_ENTER(h);
    return h->ops->domain_shutdown(h, domid, reason);
}

int xcs_domain_setmaxmem(xcs_handle *h, uint32_t domid, uint64_t kib)
{
    SHIM_ENTER(h);
    return h->ops->domain_setmaxmem(h, domid, kib);
}

int xcs_domain_max_vcpus(xcs_handle *h, uint32_t domid, uint32_t n)
{
    SHIM_ENTER(h);
    return h->ops->domain_max_vcpus(h, domid, n);
}

int xcs_domain_getinfo(xcs_handle *h, uint32_t domid, xcs_dominfo_t *out)
{
    SHIM_ENTER(h);
    if (!out)
        return set_error(h, EINVAL, "out is NULL");
    return h->ops->domain_getinfo(h, domid, out);
}

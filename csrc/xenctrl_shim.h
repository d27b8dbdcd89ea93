/*
 * xenctrl_shim: a small, stable C API for domain control.
 *
 * Two backends, chosen at open time:
 *   "sim"  the built-in simulated hypervisor (always compiled);
 *   "xc"   libxenctrl, compiled only when HAVE_LIBXENCTRL is defined
 *          (Debian's libxen-dev present at build time).
 *
 * Conventions: every call returns 0 (or a count) on success and a negative
 * errno value on failure; the message for the most recent failure on a handle
 * is available from xcs_last_error().  Nothing here aborts or exits.
 *
 * A handle is not meant to be shared between threads without external
 * locking (the Python wrapper serialises calls); the sim backend nevertheless
 * takes a mutex around its state.
 *
 * The part between CDEF-BEGIN and CDEF-END is read verbatim by
 * csrc/build_xenctrl.py as the cffi cdef, so it must stay plain C
 * declarations and integer #defines (no other preprocessor lines).
 */
#ifndef XAPI_XENCTRL_SHIM_H
#define XAPI_XENCTRL_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
#define XCS_API_VERSION 1
#define XCS_PAGE_SIZE 4096

/* shutdown_reason values (Xen's SHUTDOWN_*) */
#define XCS_SHUTDOWN_POWEROFF 0
#define XCS_SHUTDOWN_REBOOT 1
#define XCS_SHUTDOWN_SUSPEND 2
#define XCS_SHUTDOWN_CRASH 3
#define XCS_SHUTDOWN_WATCHDOG 4
#define XCS_SHUTDOWN_SOFT_RESET 5

typedef struct xcs_handle xcs_handle;

typedef struct {
    uint32_t nr_cpus;           /* CPUs online */
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t nr_nodes;
    uint32_t cpu_khz;
    uint64_t total_pages;       /* pages of XCS_PAGE_SIZE bytes */
    uint64_t free_pages;
    uint64_t scrub_pages;
} xcs_physinfo_t;

typedef struct {
    uint32_t domid;
    uint8_t handle[16];         /* the domain's UUID, big-endian bytes */
    uint8_t dying;              /* flags: 0 or 1 */
    uint8_t shutdown;
    uint8_t paused;
    uint8_t blocked;
    uint8_t running;
    uint8_t hvm;
    uint32_t shutdown_reason;   /* XCS_SHUTDOWN_*, meaningful when shutdown */
    uint64_t tot_pages;
    uint64_t max_pages;
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint64_t cpu_time;          /* nanoseconds, summed over vCPUs */
} xcs_dominfo_t;

/* 1 when the module was built with the libxenctrl ("xc") backend. */
int xcs_have_libxenctrl(void);

/*
 * Open a handle.  backend: "sim" (NULL or "" mean "sim") or "xc".
 * sim_config: "key=value,key=value" for the sim backend (NULL or "" for the
 * defaults); keys: memory_mib (16384), cpus (4), cpu_mhz (2400),
 * dom0_memory_mib (min(1024, memory_mib)), dom0_vcpus (cpus),
 * load_pct (10: the share of wall time each vCPU of a running domain burns).
 * Must be empty for "xc".
 * On failure *out is NULL and err (if errlen > 0) holds a NUL-terminated
 * message.
 */
int xcs_open(const char *backend, const char *sim_config, xcs_handle **out,
             char *err, size_t errlen);

/* "sim" or "xc" */
const char *xcs_backend(const xcs_handle *h);

/* Message for the most recent failure on h ("" if none).  Valid until the
 * next call on h. */
const char *xcs_last_error(const xcs_handle *h);

int xcs_physinfo(xcs_handle *h, xcs_physinfo_t *out);

/* Fill out[0..max) with the domains whose domid >= first_domid, in domid
 * order.  Returns the number written (>= 0) or a negative errno. */
int xcs_domain_list(xcs_handle *h, uint32_t first_domid, xcs_dominfo_t *out,
                    int max);

/*
 * Domain operations.  domid is a domain id; an unknown one fails with
 * -ESRCH.  In the sim backend domain 0 (the control domain) cannot be
 * destroyed, shut down, paused or unpaused (-EPERM).
 *
 * xcs_domain_create: uuid is the domain handle (16 big-endian bytes); hvm 0
 * or 1; max_vcpus in [1, XCS_MAX_VCPUS] (-EINVAL otherwise); max_mem_kib the
 * memory target.  The new domain is paused.  sim: the lowest free domid
 * >= 1, tot_pages = max_pages = max_mem_kib / 4, -ENOMEM when free memory is
 * short, -ENOSPC when no domid is free.
 */
#define XCS_MAX_VCPUS 4096
#define XCS_DOMID_FIRST_RESERVED 32752
int xcs_domain_create(xcs_handle *h, const uint8_t uuid[16], int hvm,
                      uint32_t max_vcpus, uint64_t max_mem_kib,
                      uint32_t *domid_out);
/* sim: frees the domain's memory. */
int xcs_domain_destroy(xcs_handle *h, uint32_t domid);
/* sim: a paused domain does not run and burns no CPU time; unpausing a shut
 * down domain clears the paused flag but it stays not running. */
int xcs_domain_pause(xcs_handle *h, uint32_t domid);
int xcs_domain_unpause(xcs_handle *h, uint32_t domid);
/* reason: XCS_SHUTDOWN_* (0..5, -EINVAL otherwise).  sim: sets shutdown and
 * shutdown_reason and stops the domain; the domain stays until destroyed.
 * Shutting down an already shut down domain keeps the first reason. */
int xcs_domain_shutdown(xcs_handle *h, uint32_t domid, uint32_t reason);
/* sim: tot_pages = max_pages = kib / 4; -ENOMEM if growing needs more than
 * the free memory. */
int xcs_domain_setmaxmem(xcs_handle *h, uint32_t domid, uint64_t kib);
/* n in [1, XCS_MAX_VCPUS], -EINVAL otherwise. */
int xcs_domain_max_vcpus(xcs_handle *h, uint32_t domid, uint32_t n);
int xcs_domain_getinfo(xcs_handle *h, uint32_t domid, xcs_dominfo_t *out);

/* Frees h; NULL is fine. */
void xcs_close(xcs_handle *h);
/* CDEF-END */

#endif /* XAPI_XENCTRL_SHIM_H */

/*
 * loadgen: a small closed-loop HTTP/1.1 load generator for the H* benchmarks.
 *
 * N TCP connections to host:port, each sending a fixed request (the exact bytes, read from a
 * file or given on the command line) and waiting for the whole response before sending the next
 * (or keeping up to -P requests in flight per connection when pipelining is asked for).
 * Responses are parsed incrementally: status line, Content-Length or chunked body, so responses
 * split over several reads or several responses in one read are both handled.  A response whose
 * status line is not "HTTP/1.1 200" counts as an error.  After a warm-up the client measures for
 * D seconds and prints one machine-readable line of key=value pairs:
 *
 *   loadgen mode=keepalive conns=16 depth=1 seconds=5.000 requests=... rps=... p50_us=... p90_us=...
 *           p99_us=... max_us=... errors=... non200=... io_errors=... timeouts=... server_closes=...
 *           connects=... warmup_errors=... client_cpu=...
 *
 * With -C each request goes on a new connection (connect, send, read the response, close): the
 * latency then includes the connect.
 *
 * Build: cc -O2 -o bench/loadgen bench/loadgen.c
 * Usage: loadgen -p PORT [-H HOST] [-c CONNS] [-d SECONDS] [-w WARMUP] [-P DEPTH] [-t TIMEOUT]
 *                [-C] [-v] (-f REQUEST_FILE | -r 'REQUEST with \r\n escapes')
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HBUF 16384           /* longest header block / chunk-size line accepted */
#define FINE_BUCKETS 100000  /* 1 µs buckets up to 100 ms */
#define COARSE_BUCKETS 100000 /* 1 ms buckets up to 100 s */
#define MAX_DEPTH 64

enum { ST_DEAD, ST_CONNECTING, ST_HDR, ST_BODY, ST_CHUNK_LINE, ST_CHUNK_DATA, ST_TRAILER };

struct conn {
    int fd;
    int state;
    int is200, close_after, chunked;
    uint64_t remaining;      /* body bytes (ST_BODY) or chunk bytes incl. CRLF (ST_CHUNK_DATA) */
    char hbuf[HBUF];
    size_t hlen;
    size_t woff;             /* bytes of the pending write already sent */
    size_t wpending;         /* bytes of requests still to write (multiple of reqlen) */
    int want_out;            /* EPOLLOUT registered */
    int64_t sent[MAX_DEPTH]; /* send (or connect) times of the requests in flight, a ring */
    int head, inflight;
    int64_t retry_at;        /* ST_DEAD: when to reconnect */
};

static const char *g_host = "127.0.0.1";
static int g_port = 0, g_conns = 1, g_depth = 1, g_churn = 0, g_verbose = 0;
static double g_duration = 5.0, g_warmup = 1.0, g_timeout = 5.0;
static char *g_req;
static size_t g_reqlen;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static int g_ep;
static struct conn *g_c;

static int64_t g_win_start, g_win_end; /* ns, monotonic */
static uint32_t *g_fine, *g_coarse;
static uint64_t g_over, g_count, g_max_us;
static uint64_t g_non200, g_io_errors, g_timeouts, g_server_closes, g_connects, g_warmup_errors;
static int g_printed_bad;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int in_window(int64_t t) { return t >= g_win_start && t < g_win_end; }

static void count_error(uint64_t *counter, int64_t t) {
    if (t < g_win_start) g_warmup_errors++;
    else if (t < g_win_end) (*counter)++;
}

static void record(int64_t lat_ns) {
    uint64_t us = lat_ns > 0 ? (uint64_t)(lat_ns / 1000) : 0;
    g_count++;
    if (us > g_max_us) g_max_us = us;
    if (us < FINE_BUCKETS) g_fine[us]++;
    else if (us / 1000 < COARSE_BUCKETS) g_coarse[us / 1000]++;
    else g_over++;
}

/* The latency (µs) below which a fraction q of the recorded responses fall. */
static uint64_t percentile(double q) {
    if (g_count == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)g_count);
    if (want >= g_count) want = g_count - 1;
    uint64_t seen = 0;
    for (uint64_t i = 0; i < FINE_BUCKETS; i++) {
        seen += g_fine[i];
        if (seen > want) return i;
    }
    for (uint64_t i = 0; i < COARSE_BUCKETS; i++) {
        seen += g_coarse[i];
        if (seen > want) return i * 1000 + 500;
    }
    return g_max_us;
}

static void ep_set(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g_ep, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) {
        perror("epoll_ctl");
        exit(3);
    }
}

static void conn_close(struct conn *c, int64_t t, int retry_delay_ms) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = ST_DEAD;
    c->inflight = 0;
    c->head = 0;
    c->retry_at = t + (int64_t)retry_delay_ms * 1000000LL;
}

static void conn_fail(struct conn *c, int64_t t, uint64_t *counter) {
    count_error(counter, t);
    conn_close(c, t, 10);
}

/* Queues `n` more copies of the request on the connection and writes as much as the socket takes. */
static int conn_write(struct conn *c, int n, int64_t t) {
    for (int i = 0; i < n; i++) {
        int slot = (c->head + c->inflight) % MAX_DEPTH;
        c->sent[slot] = t;
        c->inflight++;
    }
    c->wpending += (size_t)n * g_reqlen;
    while (c->wpending > 0) {
        size_t off = c->woff % g_reqlen;
        size_t len = g_reqlen - off;
        ssize_t w = send(c->fd, g_req + off, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            return -1;
        }
        c->woff += (size_t)w;
        c->wpending -= (size_t)w;
        if (c->woff % g_reqlen == 0) c->woff = 0;
    }
    int need_out = c->wpending > 0;
    if (need_out != c->want_out) {
        c->want_out = need_out;
        ep_set(c, EPOLL_CTL_MOD, EPOLLIN | (need_out ? EPOLLOUT : 0));
    }
    return 0;
}

static void conn_open(struct conn *c, int64_t t) {
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        exit(3);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->hlen = 0;
    c->woff = 0;
    c->wpending = 0;
    c->inflight = 0;
    c->head = 0;
    c->want_out = 1;
    g_connects++;
    /* in churn mode the latency runs from the connect; sent[] holds the connect time until the send */
    c->sent[0] = t;
    int r = connect(fd, (struct sockaddr *)&g_addr, g_addrlen);
    if (r < 0 && errno != EINPROGRESS) {
        c->state = ST_CONNECTING;
        conn_fail(c, t, &g_io_errors);
        return;
    }
    c->state = ST_CONNECTING;
    ep_set(c, EPOLL_CTL_ADD, EPOLLOUT | EPOLLIN);
}

static void on_connected(struct conn *c, int64_t t) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        if (g_verbose) fprintf(stderr, "loadgen: connect: %s\n", strerror(err));
        conn_fail(c, t, &g_io_errors);
        return;
    }
    int64_t t_connect = c->sent[0];
    c->state = ST_HDR;
    c->want_out = 1;
    if (conn_write(c, g_churn ? 1 : g_depth, t) < 0) {
        conn_fail(c, t, &g_io_errors);
        return;
    }
    if (g_churn) c->sent[c->head] = t_connect;
}

/* Parses the header block in c->hbuf (hlen bytes, ending in CRLFCRLF). */
static int parse_headers(struct conn *c) {
    char *h = c->hbuf;
    c->is200 = c->hlen >= 12 && memcmp(h, "HTTP/1.1 200", 12) == 0 && (c->hlen == 12 || h[12] == ' ' || h[12] == '\r');
    if (!c->is200 && g_verbose && g_printed_bad < 3) {
        g_printed_bad++;
        char *eol = memchr(h, '\r', c->hlen);
        fprintf(stderr, "loadgen: bad status: %.*s\n", (int)(eol ? eol - h : (long)c->hlen), h);
    }
    c->close_after = strncmp(h, "HTTP/1.0", 8) == 0; /* 1.0 closes unless keep-alive is said */
    c->chunked = 0;
    int64_t clen = -1;
    char *p = memchr(h, '\n', c->hlen);
    char *end = h + c->hlen;
    while (p && p + 1 < end) {
        char *line = p + 1;
        char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        size_t ll = (size_t)(eol - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0) break;
        char *colon = memchr(line, ':', ll);
        if (colon) {
            size_t nl = (size_t)(colon - line);
            char *v = colon + 1;
            while (v < line + ll && (*v == ' ' || *v == '\t')) v++;
            size_t vl = (size_t)(line + ll - v);
            if (nl == 14 && strncasecmp(line, "content-length", 14) == 0) {
                char tmp[32];
                if (vl == 0 || vl >= sizeof tmp) return -1;
                memcpy(tmp, v, vl);
                tmp[vl] = 0;
                char *e;
                long long x = strtoll(tmp, &e, 10);
                if (x < 0 || (*e && *e != ' ')) return -1;
                clen = x;
            } else if (nl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                if (vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0) c->chunked = 1;
            } else if (nl == 10 && strncasecmp(line, "connection", 10) == 0) {
                if (vl >= 5 && strncasecmp(v, "close", 5) == 0) c->close_after = 1;
                else if (vl >= 10 && strncasecmp(v, "keep-alive", 10) == 0) c->close_after = 0;
            }
        }
        p = eol;
    }
    if (c->chunked) {
        c->state = ST_CHUNK_LINE;
    } else if (clen >= 0) {
        c->remaining = (uint64_t)clen;
        c->state = ST_BODY;
    } else {
        return -1; /* a body delimited by the close is not supported */
    }
    return 0;
}

/* One whole response has arrived: record it, then send the next request (or reconnect). */
static int on_response(struct conn *c, int64_t t) {
    int64_t sent = c->sent[c->head];
    c->head = (c->head + 1) % MAX_DEPTH;
    c->inflight--;
    c->state = ST_HDR;
    c->hlen = 0;
    if (!c->is200) count_error(&g_non200, t);
    else if (in_window(t)) record(t - sent);
    if (g_churn) {
        conn_close(c, t, 0);
        if (t < g_win_end) conn_open(c, t);
        return 1;
    }
    if (c->close_after) {
        count_error(&g_server_closes, t);
        conn_close(c, t, 0);
        if (t < g_win_end) conn_open(c, t);
        return 1;
    }
    if (t < g_win_end && conn_write(c, 1, t) < 0) {
        conn_fail(c, t, &g_io_errors);
        return 1;
    }
    return 0;
}

/* Appends input to hbuf until `delim` (of length dl) appears; returns the bytes consumed from p,
   sets *done when the delimiter was found, -1 when the buffer overflows. */
static ssize_t accumulate(struct conn *c, const char *p, size_t n, const char *delim, size_t dl, int *done) {
    size_t old = c->hlen;
    size_t take = n < HBUF - old ? n : HBUF - old;
    memcpy(c->hbuf + old, p, take);
    c->hlen = old + take;
    size_t from = old >= dl - 1 ? old - (dl - 1) : 0;
    char *f = memmem(c->hbuf + from, c->hlen - from, delim, dl);
    if (f) {
        size_t endpos = (size_t)(f - c->hbuf) + dl;
        c->hlen = endpos;
        *done = 1;
        return (ssize_t)(endpos - old);
    }
    *done = 0;
    if (c->hlen == HBUF) return -1;
    return (ssize_t)take;
}

/* Feeds received bytes through the response state machine. Returns 1 if the connection was
   closed/reopened (the caller must stop using the buffer), 0 otherwise. */
static int feed(struct conn *c, const char *p, size_t n, int64_t t) {
    while (n > 0) {
        if (c->inflight == 0) { /* bytes nobody asked for */
            conn_fail(c, t, &g_io_errors);
            return 1;
        }
        int done;
        ssize_t k;
        switch (c->state) {
        case ST_HDR:
            k = accumulate(c, p, n, "\r\n\r\n", 4, &done);
            if (k < 0) goto bad;
            p += k, n -= (size_t)k;
            if (done) {
                if (parse_headers(c) < 0) goto bad;
                c->hlen = 0;
                if (c->state == ST_BODY && c->remaining == 0 && on_response(c, t)) return 1;
            }
            break;
        case ST_BODY: {
            size_t take = n < c->remaining ? n : (size_t)c->remaining;
            p += take, n -= take;
            c->remaining -= take;
            if (c->remaining == 0 && on_response(c, t)) return 1;
            break;
        }
        case ST_CHUNK_LINE:
            k = accumulate(c, p, n, "\r\n", 2, &done);
            if (k < 0) goto bad;
            p += k, n -= (size_t)k;
            if (done) {
                c->hbuf[c->hlen - 2] = 0;
                char *e;
                unsigned long long sz = strtoull(c->hbuf, &e, 16);
                if (e == c->hbuf) goto bad;
                c->hlen = 0;
                if (sz == 0) c->state = ST_TRAILER;
                else {
                    c->remaining = sz + 2;
                    c->state = ST_CHUNK_DATA;
                }
            }
            break;
        case ST_CHUNK_DATA: {
            size_t take = n < c->remaining ? n : (size_t)c->remaining;
            p += take, n -= take;
            c->remaining -= take;
            if (c->remaining == 0) c->state = ST_CHUNK_LINE;
            break;
        }
        case ST_TRAILER:
            k = accumulate(c, p, n, "\r\n", 2, &done);
            if (k < 0) goto bad;
            p += k, n -= (size_t)k;
            if (done) {
                int empty = c->hlen == 2;
                c->hlen = 0;
                if (empty && on_response(c, t)) return 1;
            }
            break;
        default:
            goto bad;
        }
    }
    return 0;
bad:
    if (g_verbose) fprintf(stderr, "loadgen: unparseable response\n");
    conn_fail(c, t, &g_io_errors);
    return 1;
}

static void on_readable(struct conn *c, int64_t t) {
    static char buf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r > 0) {
            if (feed(c, buf, (size_t)r, t)) return;
            if ((size_t)r < sizeof buf) return;
            continue;
        }
        if (r == 0) { /* peer closed */
            if (g_verbose) fprintf(stderr, "loadgen: server closed the connection (%d in flight)\n", c->inflight);
            if (c->inflight > 0 || c->state != ST_HDR) conn_fail(c, t, &g_io_errors);
            else {
                count_error(&g_server_closes, t);
                conn_close(c, t, 0);
            }
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        if (g_verbose) fprintf(stderr, "loadgen: recv: %s\n", strerror(errno));
        conn_fail(c, t, &g_io_errors);
        return;
    }
}

static char *unescape(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char e = s[++i];
            *o++ = e == 'r' ? '\r' : e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
            *o++ = s[i];
        }
    }
    *len = (size_t)(o - out);
    return out;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    struct stat st;
    fstat(fileno(f), &st);
    char *b = malloc((size_t)st.st_size + 1);
    *len = fread(b, 1, (size_t)st.st_size, f);
    fclose(f);
    return b;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -p PORT [-H HOST] [-c CONNS] [-d SECONDS] [-w WARMUP_SECONDS] [-P DEPTH]\n"
            "               [-t TIMEOUT_SECONDS] [-C (new connection per request)] [-v]\n"
            "               (-f REQUEST_FILE | -r 'REQUEST with \\r\\n escapes')\n");
    exit(2);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "H:p:c:d:w:P:t:f:r:Cv")) != -1) {
        switch (opt) {
        case 'H': g_host = optarg; break;
        case 'p': g_port = atoi(optarg); break;
        case 'c': g_conns = atoi(optarg); break;
        case 'd': g_duration = atof(optarg); break;
        case 'w': g_warmup = atof(optarg); break;
        case 'P': g_depth = atoi(optarg); break;
        case 't': g_timeout = atof(optarg); break;
        case 'f': g_req = read_file(optarg, &g_reqlen); break;
        case 'r': g_req = unescape(optarg, &g_reqlen); break;
        case 'C': g_churn = 1; break;
        case 'v': g_verbose = 1; break;
        default: usage();
        }
    }
    if (!g_req || g_reqlen == 0 || g_port <= 0 || g_conns <= 0 || g_duration <= 0 || g_warmup < 0 ||
        g_depth < 1 || g_depth > MAX_DEPTH)
        usage();
    if (g_churn) g_depth = 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", g_port);
    int gai = getaddrinfo(g_host, portstr, &hints, &ai);
    if (gai) {
        fprintf(stderr, "loadgen: %s: %s\n", g_host, gai_strerror(gai));
        return 2;
    }
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g_conns + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)g_conns + 64 ? rl.rlim_max : (rlim_t)g_conns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_fine = calloc(FINE_BUCKETS, sizeof *g_fine);
    g_coarse = calloc(COARSE_BUCKETS, sizeof *g_coarse);
    g_c = calloc((size_t)g_conns, sizeof *g_c);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g_fine || !g_coarse || !g_c || g_ep < 0) {
        perror("loadgen: setup");
        return 3;
    }

    int64_t t0 = now_ns();
    g_win_start = t0 + (int64_t)(g_warmup * 1e9);
    g_win_end = g_win_start + (int64_t)(g_duration * 1e9);
    int64_t timeout_ns = (int64_t)(g_timeout * 1e9);
    for (int i = 0; i < g_conns; i++) {
        g_c[i].fd = -1;
        conn_open(&g_c[i], t0);
    }

    struct epoll_event evs[256];
    int64_t next_scan = t0;
    double cpu_start = 0;
    int cpu_started = 0;
    for (;;) {
        int64_t t = now_ns();
        if (!cpu_started && t >= g_win_start) {
            cpu_start = cpu_seconds();
            cpu_started = 1;
        }
        if (t >= g_win_end) break;
        if (t >= next_scan) { /* reconnect dead connections, time out stuck requests */
            next_scan = t + 20000000LL;
            for (int i = 0; i < g_conns; i++) {
                struct conn *c = &g_c[i];
                if (c->state == ST_DEAD) {
                    if (t >= c->retry_at) conn_open(c, t);
                } else if (c->inflight > 0 && t - c->sent[c->head] > timeout_ns) {
                    if (g_verbose) fprintf(stderr, "loadgen: request timed out after %.1f s\n", g_timeout);
                    conn_fail(c, t, &g_timeouts);
                } else if (c->state == ST_CONNECTING && t - c->sent[0] > timeout_ns) {
                    conn_fail(c, t, &g_timeouts);
                }
            }
        }
        int wait_ms = (int)((g_win_end - t) / 1000000LL) + 1;
        if (wait_ms > 20) wait_ms = 20;
        int n = epoll_wait(g_ep, evs, 256, wait_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 3;
        }
        t = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->fd < 0) continue;
            if (c->state == ST_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, t);
                continue;
            }
            if ((e & EPOLLOUT) && c->want_out) {
                if (conn_write(c, 0, t) < 0) {
                    conn_fail(c, t, &g_io_errors);
                    continue;
                }
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, t);
        }
    }
    double cpu = cpu_seconds() - cpu_start;
    /* connections whose oldest request has waited over a second when the run ends: a hung server */
    int64_t t_end = now_ns();
    int still_inflight = 0;
    for (int i = 0; i < g_conns; i++) {
        struct conn *c = &g_c[i];
        if (c->fd >= 0 && c->inflight > 0 && t_end - c->sent[c->head] > 1000000000LL) still_inflight++;
    }

    uint64_t errors = g_non200 + g_io_errors + g_timeouts + (g_churn ? 0 : g_server_closes);
    printf("loadgen mode=%s conns=%d depth=%d seconds=%.3f requests=%llu rps=%.1f p50_us=%llu p90_us=%llu "
           "p99_us=%llu max_us=%llu errors=%llu non200=%llu io_errors=%llu timeouts=%llu server_closes=%llu "
           "connects=%llu warmup_errors=%llu stuck_at_end=%d client_cpu=%.2f\n",
           g_churn ? "churn" : "keepalive", g_conns, g_depth, g_duration, (unsigned long long)g_count,
           (double)g_count / g_duration, (unsigned long long)percentile(0.50), (unsigned long long)percentile(0.90),
           (unsigned long long)percentile(0.99), (unsigned long long)g_max_us, (unsigned long long)errors,
           (unsigned long long)g_non200, (unsigned long long)g_io_errors, (unsigned long long)g_timeouts,
           (unsigned long long)g_server_closes, (unsigned long long)g_connects,
           (unsigned long long)g_warmup_errors, still_inflight, cpu / g_duration);
    fflush(stdout);
    return g_count > 0 ? 0 : 1;
}

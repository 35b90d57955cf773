/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fcgi_load - a FastCGI load generator that talks to the application server
 * itself, with no web server in between, so that what it measures is the
 * FastCGI server alone (nginx's share of the CPU is out of the picture).
 *
 *   fcgi_load [-t THREADS] [-c CONNS] [-d SECONDS] [-w SECONDS] [-k] [-b BYTES]
 *             [-m METHOD] [-n REQUESTS] [-r MAX] [-T SECONDS] [-p NAME=VALUE]
 *             [-P PID] [--tsv] ADDRESS URI
 *
 * ADDRESS is unix:/path or a loopback TCP address (127.x.x.x:PORT,
 * [::1]:PORT); nothing else is accepted. Each of THREADS threads runs an
 * epoll loop over its share of CONNS non-blocking connections, each with
 * one request in flight (closed loop, like wrk). Without -k every request
 * gets a new connection and the server closes it, as nginx does by
 * default; with -k the request sets FCGI_KEEP_CONN and the next request
 * reuses the connection (nginx's fastcgi_keep_conn + upstream keepalive).
 *
 * The request carries the parameters nginx's fastcgi_params sends for the
 * URI, and a body of -b bytes in STDIN when there is one. The response is
 * parsed record by record (any record size, padding included); the HTTP
 * status comes from the CGI "Status:" header at the start of STDOUT (none
 * means 200). A "%r" in the URI becomes a random integer in 1..MAX per
 * request (as the harness's wrk script does for /item).
 *
 * Latencies go into a log-linear histogram (under 1 % error), not a list
 * of samples, so memory does not grow with the run. The run ends after
 * -w + -d seconds, or when -n requests were measured, or on SIGINT.
 * -P PID (repeatable) adds PID and its descendants to the server CPU
 * reported: utime + stime (+ the reaped children's) from /proc, read at
 * the edges of the measured period, so server and client CPU per request
 * cover the same requests.
 *
 * Exit status: 0 if requests were measured, all answered 200 and none
 * failed; 1 otherwise; 2 for a usage error.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fastcgi.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_ID 1      /* nginx never multiplexes: always id 1 */
#define STATUS_MAX 600    /* statuses counted one by one below this */
#define HEADERS_MAX 8192  /* CGI header block bigger than this: protocol error */
#define VARIANTS_MAX 1024 /* pre-built requests when the URI has %r */
#define MAX_PIDS 64
#define MAX_PARAMS 32
#define MAX_TREE 4096

/* ------------------------------------------------------------ histogram */

/* Log-linear buckets: exact below 256 us, then 128 buckets per power of
 * two (bucket width / value < 1/128). Up to 2^41 us, far past any run. */
#define HIST_SUB 128
#define HIST_BUCKETS (2 * HIST_SUB + 34 * HIST_SUB)

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count, max;
};

static unsigned hist_index(uint64_t us)
{
    if (us < 2 * HIST_SUB)
        return (unsigned)us;
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 7;
    unsigned i =
        2 * HIST_SUB + (unsigned)(shift - 1) * HIST_SUB + (unsigned)((us >> shift) - HIST_SUB);
    return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The middle of bucket i, in us. */
static uint64_t hist_value(unsigned i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = (i - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t top = (i - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
    return (top << shift) + ((1ull << shift) >> 1);
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->n[hist_index(us)]++;
    h->count++;
    if (us > h->max)
        h->max = us;
}

static void hist_merge(struct hist *into, const struct hist *h)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->n[i] += h->n[i];
    into->count += h->count;
    if (h->max > into->max)
        into->max = h->max;
}

/* The value at or below which a fraction p of the samples lie; the exact
 * maximum for the last bucket's samples rather than its middle. */
static uint64_t hist_percentile(const struct hist *h, double p)
{
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)(p * (double)h->count + 0.999999), seen = 0;
    if (want < 1)
        want = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------ options */

struct opts {
    int threads, conns, keep, tsv, id_max, help;
    double duration, warmup, timeout;
    long body, max_requests;
    const char *method, *addr, *uri;
    const char *params[MAX_PARAMS];
    int nparams;
    int pids[MAX_PIDS];
    int npids;
    struct sockaddr_storage sa;
    socklen_t salen;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fcgi_load [-t THREADS] [-c CONNS] [-d SECONDS] [-w SECONDS] [-k]\n"
               "                 [-b BYTES] [-m METHOD] [-n REQUESTS] [-r MAX] [-T SECONDS]\n"
               "                 [-p NAME=VALUE]... [-P PID]... [--tsv] ADDRESS URI\n"
               "  ADDRESS  unix:/path, 127.x.x.x:PORT or [::1]:PORT (loopback only)\n"
               "  -t 2 threads, -c 64 connections, -d 8 s measured after -w 2 s warm-up\n"
               "  -k       FCGI_KEEP_CONN: reuse connections (default: one per request)\n"
               "  -b N     N bytes of body in STDIN (method defaults to POST)\n"
               "  -n N     stop after N measured requests\n"
               "  -r MAX   %%r in URI becomes a random 1..MAX per request (10000)\n"
               "  -T S     a request unanswered after S seconds is a timeout (10)\n"
               "  -p N=V   one more FastCGI parameter\n"
               "  -P PID   count PID and its descendants as the server (CPU per request)\n"
               "  --tsv    also print the result as one key=value line\n");
}

/* Loopback and unix sockets only: the tool must not be a load generator
 * for anything off this machine. */
static int parse_addr(struct opts *o, const char *s)
{
    memset(&o->sa, 0, sizeof o->sa);
    if (strncmp(s, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&o->sa;
        if (strlen(s + 5) >= sizeof un->sun_path || !s[5])
            return -1;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, s + 5);
        o->salen = sizeof *un;
        return 0;
    }
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return -1;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&o->sa;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127)
            return -1;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        o->salen = sizeof *in4;
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->sa;
    size_t hl = strlen(host);
    if (hl < 3 || host[0] != '[' || host[hl - 1] != ']')
        return -1;
    host[hl - 1] = '\0';
    if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1 ||
        !IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
        return -1;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    o->salen = sizeof *in6;
    return 0;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* One option with an argument; -1 for a bad value. */
static int parse_opt(struct opts *o, int c, const char *arg)
{
    double v;
    switch (c) {
    case 't':
    case 'c':
    case 'r':
        if (parse_num(arg, 1, 1e6, &v) < 0)
            return -1;
        *(c == 't' ? &o->threads : c == 'c' ? &o->conns : &o->id_max) = (int)v;
        return 0;
    case 'd':
    case 'w':
    case 'T':
        if (parse_num(arg, 0, 1e6, &v) < 0)
            return -1;
        *(c == 'd' ? &o->duration : c == 'w' ? &o->warmup : &o->timeout) = v;
        return 0;
    case 'b':
    case 'n':
        if (parse_num(arg, 0, 1e12, &v) < 0)
            return -1;
        *(c == 'b' ? &o->body : &o->max_requests) = (long)v;
        return 0;
    case 'm':
        o->method = arg;
        return 0;
    case 'p':
        if (o->nparams == MAX_PARAMS || !strchr(arg, '='))
            return -1;
        o->params[o->nparams++] = arg;
        return 0;
    case 'P':
        if (o->npids == MAX_PIDS || parse_num(arg, 1, 1 << 30, &v) < 0)
            return -1;
        o->pids[o->npids++] = (int)v;
        return 0;
    }
    return -1;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    static const struct option longs[] = {
        {"tsv", no_argument, NULL, 'V'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    *o = (struct opts){
        .threads = 2, .conns = 64, .duration = 8, .warmup = 2, .timeout = 10, .id_max = 10000};
    int c;
    while ((c = getopt_long(argc, argv, "t:c:d:w:kb:m:n:r:T:p:P:h", longs, NULL)) != -1) {
        if (c == 'k')
            o->keep = 1;
        else if (c == 'V')
            o->tsv = 1;
        else if (c == 'h')
            o->help = 1;
        else if (c == '?' || parse_opt(o, c, optarg) < 0)
            return -1;
    }
    if (o->help || argc - optind != 2)
        return -1;
    o->addr = argv[optind];
    o->uri = argv[optind + 1];
    if (parse_addr(o, o->addr) < 0) {
        fprintf(stderr, "fcgi_load: %s: want unix:/path or a loopback host:port\n", o->addr);
        return -1;
    }
    if (o->uri[0] != '/') {
        fprintf(stderr, "fcgi_load: the URI must start with /\n");
        return -1;
    }
    if (!o->method)
        o->method = o->body ? "POST" : "GET";
    if (o->threads > o->conns)
        o->threads = o->conns;
    return 0;
}

/* ------------------------------------------------------------ requests */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void buf_put(struct buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) {
            perror("fcgi_load: realloc");
            exit(1);
        }
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* One record, padded to a multiple of 8 bytes as nginx pads them. */
static void put_record(struct buf *b, int type, const void *content, size_t len)
{
    static const unsigned char zeros[8];
    unsigned pad = (unsigned)((8 - len % 8) % 8);
    FCGI_Header h = {.version = FCGI_VERSION_1,
                     .type = (unsigned char)type,
                     .requestIdB0 = REQUEST_ID,
                     .contentLengthB1 = (unsigned char)(len >> 8),
                     .contentLengthB0 = (unsigned char)len,
                     .paddingLength = (unsigned char)pad};
    buf_put(b, &h, sizeof h);
    buf_put(b, content, len);
    buf_put(b, zeros, pad);
}

/* A stream (PARAMS, STDIN): records of at most 32 KiB, then the empty
 * record that ends it. */
static void put_stream(struct buf *b, int type, const unsigned char *data, size_t len)
{
    for (size_t off = 0; off < len; off += 32768)
        put_record(b, type, data + off, len - off < 32768 ? len - off : 32768);
    put_record(b, type, NULL, 0);
}

static void put_nv_len(struct buf *b, size_t n)
{
    if (n < 128) {
        unsigned char c = (unsigned char)n;
        buf_put(b, &c, 1);
        return;
    }
    unsigned char l[4] = {(unsigned char)((n >> 24) | 0x80), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    buf_put(b, l, 4);
}

static void put_nv(struct buf *b, const char *name, const char *value)
{
    put_nv_len(b, strlen(name));
    put_nv_len(b, strlen(value));
    buf_put(b, name, strlen(name));
    buf_put(b, value, strlen(value));
}

/* The parameters nginx sends with include fastcgi_params (Debian 12), plus
 * the two the benchmark harness adds (SCRIPT_FILENAME, PATH_INFO) and the
 * -p extras; SCRIPT_NAME is $fastcgi_script_name, the path. */
static void put_params(struct buf *b, const struct opts *o, const char *uri)
{
    char path[4096], clen[32];
    const char *q = strchr(uri, '?');
    size_t pl = q ? (size_t)(q - uri) : strlen(uri);
    if (pl >= sizeof path)
        pl = sizeof path - 1;
    memcpy(path, uri, pl);
    path[pl] = '\0';
    snprintf(clen, sizeof clen, "%ld", o->body);
    const char *nv[][2] = {
        {"QUERY_STRING", q ? q + 1 : ""},
        {"REQUEST_METHOD", o->method},
        {"CONTENT_TYPE", o->body ? "application/x-www-form-urlencoded" : ""},
        {"CONTENT_LENGTH", o->body ? clen : ""},
        {"SCRIPT_NAME", path},
        {"REQUEST_URI", uri},
        {"DOCUMENT_URI", path},
        {"DOCUMENT_ROOT", "/usr/share/nginx/html"},
        {"SERVER_PROTOCOL", "HTTP/1.1"},
        {"REQUEST_SCHEME", "http"},
        {"GATEWAY_INTERFACE", "CGI/1.1"},
        {"SERVER_SOFTWARE", "fcgi_load"},
        {"REMOTE_ADDR", "127.0.0.1"},
        {"REMOTE_PORT", "40000"},
        {"REMOTE_USER", ""},
        {"SERVER_ADDR", "127.0.0.1"},
        {"SERVER_PORT", "80"},
        {"SERVER_NAME", "localhost"},
        {"REDIRECT_STATUS", "200"},
        {"HTTP_HOST", "localhost"},
        {"SCRIPT_FILENAME", "/dev/null"},
        {"PATH_INFO", path},
    };
    struct buf p = {0};
    for (size_t i = 0; i < sizeof nv / sizeof nv[0]; i++)
        put_nv(&p, nv[i][0], nv[i][1]);
    for (int i = 0; i < o->nparams; i++) {
        char name[256];
        size_t nl = (size_t)(strchr(o->params[i], '=') - o->params[i]);
        snprintf(name, sizeof name, "%.*s", (int)nl, o->params[i]);
        put_nv(&p, name, o->params[i] + nl + 1);
    }
    put_stream(b, FCGI_PARAMS, p.p, p.len);
    free(p.p);
}

static void build_request(struct buf *b, const struct opts *o, const char *uri,
                          const unsigned char *body)
{
    FCGI_BeginRequestBody begin = {0, FCGI_RESPONDER, o->keep ? FCGI_KEEP_CONN : 0, {0}};
    put_record(b, FCGI_BEGIN_REQUEST, &begin, sizeof begin);
    put_params(b, o, uri);
    put_stream(b, FCGI_STDIN, body, (size_t)o->body);
}

/* The URI with its first %r replaced by n. */
static void expand_uri(char *out, size_t cap, const char *uri, int n)
{
    const char *r = strstr(uri, "%r");
    if (!r) {
        snprintf(out, cap, "%s", uri);
        return;
    }
    snprintf(out, cap, "%.*s%d%s", (int)(r - uri), uri, n, r + 2);
}

struct requests {
    struct buf *v;
    int n;
};

/* Every request is built before the run, so the client spends its CPU on
 * sockets, not on formatting: one, or VARIANTS_MAX with random %r values. */
static void build_requests(struct requests *rq, const struct opts *o)
{
    unsigned char *body = malloc((size_t)o->body + 1);
    if (!body) {
        perror("fcgi_load: malloc");
        exit(1);
    }
    for (long i = 0; i < o->body; i++)
        body[i] = i == 0 ? 'a' : i == 1 ? '=' : 'x';
    rq->n = strstr(o->uri, "%r") ? VARIANTS_MAX : 1;
    rq->v = calloc((size_t)rq->n, sizeof *rq->v);
    unsigned seed = (unsigned)time(NULL);
    for (int i = 0; i < rq->n; i++) {
        char uri[8192];
        expand_uri(uri, sizeof uri, o->uri, (int)(rand_r(&seed) % (unsigned)o->id_max) + 1);
        build_request(&rq->v[i], o, uri, body);
    }
    free(body);
}

/* ------------------------------------------------------------ stats */

struct stats {
    struct hist lat;
    uint64_t status[STATUS_MAX];
    uint64_t non200, err_connect, err_incomplete, err_closed, err_proto, err_timeout, stalled;
    uint64_t reconnects, stdout_bytes, stderr_bytes;
};

static void stats_merge(struct stats *into, const struct stats *s)
{
    hist_merge(&into->lat, &s->lat);
    for (int i = 0; i < STATUS_MAX; i++)
        into->status[i] += s->status[i];
    into->non200 += s->non200;
    into->err_connect += s->err_connect;
    into->err_incomplete += s->err_incomplete;
    into->err_closed += s->err_closed;
    into->err_proto += s->err_proto;
    into->err_timeout += s->err_timeout;
    into->stalled += s->stalled;
    into->reconnects += s->reconnects;
    into->stdout_bytes += s->stdout_bytes;
    into->stderr_bytes += s->stderr_bytes;
}

static uint64_t stats_errors(const struct stats *s)
{
    return s->err_connect + s->err_incomplete + s->err_closed + s->err_proto + s->err_timeout +
           s->stalled;
}

/* ------------------------------------------------------------ connections */

enum phase { WARMUP, MEASURE, STOP };
static _Atomic int phase = WARMUP;
static _Atomic uint64_t measure_start; /* us, set before phase turns MEASURE */

enum conn_state { C_IDLE, C_CONNECTING, C_BUSY };

struct conn {
    int fd;
    enum conn_state state;
    int reused;   /* this request went out on a kept connection */
    int answered; /* some byte of its response arrived */
    struct worker *w;
    const struct buf *req;
    size_t sent;
    uint64_t t_start;
    /* response parser */
    unsigned char hdr[FCGI_HEADER_LEN];
    size_t hdr_have, content_left, pad_left;
    unsigned char end[sizeof(FCGI_EndRequestBody)];
    size_t end_have;
    int headers_done, status;
    char headers[HEADERS_MAX];
    size_t headers_len;
};

struct worker {
    pthread_t tid;
    const struct opts *o;
    const struct requests *rq;
    struct conn *conns;
    int nconns, ep;
    unsigned seed;
    _Atomic uint64_t measured; /* read by the main thread for -n */
    struct stats warm, meas;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct stats *cur_stats(struct worker *w)
{
    return atomic_load_explicit(&phase, memory_order_relaxed) == MEASURE ? &w->meas : &w->warm;
}

static void parser_reset(struct conn *c)
{
    c->hdr_have = c->content_left = c->pad_left = c->end_have = 0;
    c->headers_done = c->headers_len = 0;
    c->status = 0;
    c->answered = 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = C_IDLE;
}

/* Writes what is left of the request; -1 on a write error. */
static int conn_send(struct conn *c)
{
    while (c->sent < c->req->len) {
        ssize_t n = send(c->fd, c->req->p + c->sent, c->req->len - c->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)n;
    }
    return 0;
}

static void on_lost(struct conn *c);

static void conn_request(struct conn *c)
{
    struct worker *w = c->w;
    c->req = &w->rq->v[w->rq->n == 1 ? 0 : rand_r(&w->seed) % (unsigned)w->rq->n];
    c->sent = 0;
    parser_reset(c);
}

/* Opens a connection and sends the request at once (a unix socket or a
 * loopback connect is usually complete on return, as nginx also assumes).
 * A unix socket with a full backlog fails with EAGAIN: a connect error, as
 * nginx counts it, and the slot tries again on the next loop turn. */
static void conn_open(struct conn *c, uint64_t t_start)
{
    const struct opts *o = c->w->o;
    c->t_start = t_start;
    c->reused = 0;
    conn_request(c);
    c->fd = socket(o->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        goto fail;
    int rc = connect(c->fd, (const struct sockaddr *)&o->sa, o->salen);
    if (rc < 0 && errno != EINPROGRESS)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        goto fail;
    c->state = rc == 0 ? C_BUSY : C_CONNECTING;
    if (rc == 0 && conn_send(c) < 0)
        on_lost(c);
    return;
fail:
    cur_stats(c->w)->err_connect++;
    conn_close(c);
}

static int on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        cur_stats(c->w)->err_connect++;
        conn_close(c);
        return -1;
    }
    c->state = C_BUSY;
    return 0;
}

/* "Status: 404 Not Found" in the CGI header block; none means 200. */
static int cgi_status(const char *h, size_t len)
{
    const char *p = h, *end = h + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if (eol - p > 7 && strncasecmp(p, "Status:", 7) == 0) {
            const char *v = p + 7;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            int code = 0, digits = 0;
            for (; v < eol && isdigit((unsigned char)*v) && digits < 3; v++, digits++)
                code = code * 10 + (*v - '0');
            return digits == 3 ? code : 0;
        }
        p = eol + 1;
    }
    return 200;
}

/* STDOUT content: the CGI headers come first, up to an empty line (CRLF or
 * LF line ends, as CGI allows); the rest is body and only counted. */
static int on_stdout(struct conn *c, const unsigned char *p, size_t n)
{
    cur_stats(c->w)->stdout_bytes += n;
    if (c->headers_done)
        return 0;
    size_t room = sizeof c->headers - c->headers_len;
    size_t k = n < room ? n : room;
    memcpy(c->headers + c->headers_len, p, k);
    size_t from = c->headers_len > 3 ? c->headers_len - 3 : 0;
    c->headers_len += k;
    for (size_t i = from; i < c->headers_len; i++) {
        if (c->headers[i] != '\n')
            continue;
        if ((i >= 1 && c->headers[i - 1] == '\n') ||
            (i >= 2 && c->headers[i - 1] == '\r' && c->headers[i - 2] == '\n')) {
            c->headers_done = 1;
            c->status = cgi_status(c->headers, i);
            return 0;
        }
    }
    return c->headers_len == sizeof c->headers ? -1 : 0;
}

/* A record header is complete: only what a responder may send us for our
 * request is accepted. */
static int record_begin(struct conn *c)
{
    const FCGI_Header *h = (const FCGI_Header *)c->hdr;
    int id = h->requestIdB1 << 8 | h->requestIdB0;
    c->content_left = (size_t)(h->contentLengthB1 << 8 | h->contentLengthB0);
    c->pad_left = h->paddingLength;
    if (h->version != FCGI_VERSION_1 || id != REQUEST_ID)
        return -1;
    switch (h->type) {
    case FCGI_STDOUT:
    case FCGI_STDERR:
        return 0;
    case FCGI_END_REQUEST:
        return c->content_left == sizeof(FCGI_EndRequestBody) ? 0 : -1;
    }
    return -1;
}

static int record_content(struct conn *c, const unsigned char *p, size_t n)
{
    const FCGI_Header *h = (const FCGI_Header *)c->hdr;
    if (h->type == FCGI_STDOUT)
        return on_stdout(c, p, n);
    if (h->type == FCGI_STDERR) {
        cur_stats(c->w)->stderr_bytes += n;
        return 0;
    }
    memcpy(c->end + c->end_have, p, n);
    c->end_have += n;
    return 0;
}

/* Feeds bytes to the record parser. 1: END_REQUEST complete (*used says
 * how far), 0: more needed, -1: protocol error. */
static int parse(struct conn *c, const unsigned char *p, size_t n, size_t *used)
{
    size_t i = 0;
    for (;;) {
        if (c->hdr_have < FCGI_HEADER_LEN) {
            size_t k = FCGI_HEADER_LEN - c->hdr_have;
            k = k < n - i ? k : n - i;
            memcpy(c->hdr + c->hdr_have, p + i, k);
            c->hdr_have += k;
            i += k;
            if (c->hdr_have < FCGI_HEADER_LEN)
                break;
            if (record_begin(c) < 0)
                return -1;
        }
        size_t k = c->content_left < n - i ? c->content_left : n - i;
        if (k && record_content(c, p + i, k) < 0)
            return -1;
        c->content_left -= k;
        i += k;
        k = c->pad_left < n - i ? c->pad_left : n - i;
        c->pad_left -= k;
        i += k;
        if (c->content_left || c->pad_left)
            break;
        c->hdr_have = 0;
        if (((const FCGI_Header *)c->hdr)->type == FCGI_END_REQUEST) {
            *used = i;
            return 1;
        }
    }
    *used = i;
    return 0;
}

/* END_REQUEST arrived: count the request, then the next one, on this
 * connection with -k, else on a new one. */
static void on_end(struct conn *c, uint64_t now)
{
    struct worker *w = c->w;
    struct stats *s = cur_stats(w);
    const FCGI_EndRequestBody *e = (const FCGI_EndRequestBody *)c->end;
    if (e->protocolStatus != FCGI_REQUEST_COMPLETE) {
        s->err_incomplete++;
    } else {
        int st = c->headers_done ? c->status : 0;
        s->status[st >= 0 && st < STATUS_MAX ? st : 0]++;
        s->non200 += st != 200;
        hist_add(&s->lat, now - c->t_start);
        if (s == &w->meas)
            atomic_fetch_add_explicit(&w->measured, 1, memory_order_relaxed);
    }
    if (!w->o->keep || e->protocolStatus != FCGI_REQUEST_COMPLETE) {
        conn_close(c);
        return;
    }
    c->t_start = now;
    c->reused = 1;
    conn_request(c);
    if (conn_send(c) < 0)
        conn_close(c);
}

/* The server closed, or reset, before END_REQUEST. On a kept connection
 * before any byte of the answer that is the server dropping an idle
 * connection: nginx retries those on a fresh one, and so does this. */
static void on_lost(struct conn *c)
{
    struct stats *s = cur_stats(c->w);
    uint64_t t = c->t_start;
    int retry = c->reused && !c->answered;
    if (retry)
        s->reconnects++;
    else
        s->err_closed++;
    conn_close(c);
    if (retry)
        conn_open(c, t);
}

static void conn_read(struct conn *c)
{
    unsigned char in[16384];
    for (;;) {
        ssize_t n = recv(c->fd, in, sizeof in, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            on_lost(c);
            return;
        }
        if (n < 0)
            return;
        c->answered = 1;
        size_t used;
        int r = parse(c, in, (size_t)n, &used);
        if (r < 0 || (r == 1 && used < (size_t)n)) {
            cur_stats(c->w)->err_proto++;
            conn_close(c);
            return;
        }
        if (r == 1) {
            on_end(c, now_us());
            return;
        }
    }
}

static void conn_event(struct conn *c, uint32_t events)
{
    if (c->state == C_CONNECTING && on_connected(c) < 0)
        return;
    if ((events & EPOLLOUT) && c->sent < c->req->len && conn_send(c) < 0) {
        on_lost(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_read(c);
}

/* Idle slots (a failed connect, a closed connection) get a new connection;
 * requests past the timeout are counted and dropped. */
static void worker_tick(struct worker *w, uint64_t now, int check_timeouts)
{
    uint64_t limit = (uint64_t)(w->o->timeout * 1e6);
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state != C_IDLE && check_timeouts && now - c->t_start > limit) {
            cur_stats(w)->err_timeout++;
            conn_close(c);
        }
        if (c->state == C_IDLE)
            conn_open(c, now);
    }
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    uint64_t last_check = now_us();
    while (atomic_load_explicit(&phase, memory_order_relaxed) != STOP) {
        int n = epoll_wait(w->ep, evs, 256, 10);
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events);
        uint64_t now = now_us();
        int check = now - last_check > 100000;
        if (check)
            last_check = now;
        worker_tick(w, now, check);
    }
    /* A request sent before the measured period and still unanswered at
     * its end was starved the whole time (a server serving a few kept
     * connections while the rest wait in its backlog): an error, not a
     * missing sample. */
    uint64_t m0 = atomic_load(&measure_start);
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state != C_IDLE && c->t_start < m0)
            w->meas.stalled++;
        conn_close(c);
    }
    return NULL;
}

/* ------------------------------------------------------------ server CPU */

/* utime + stime + cutime + cstime of one process, in clock ticks, and its
 * parent. The children's times cover workers that exited and were reaped
 * during the run; a live child is counted by itself. */
static int proc_ticks(int pid, int *ppid, unsigned long long *ticks)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* comm may hold spaces */
    unsigned long long ut, st;
    long long cut, cst;
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", ppid,
                     &ut, &st, &cut, &cst) != 5)
        return -1;
    *ticks = ut + st + (unsigned long long)cut + (unsigned long long)cst;
    return 0;
}

/* CPU seconds of the -P processes and all their descendants. */
static double server_cpu(const struct opts *o)
{
    static int pid[MAX_TREE], ppid[MAX_TREE];
    static unsigned long long ticks[MAX_TREE];
    static char in_tree[MAX_TREE];
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) && n < MAX_TREE) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        pid[n] = atoi(de->d_name);
        if (proc_ticks(pid[n], &ppid[n], &ticks[n]) == 0)
            n++;
    }
    if (d)
        closedir(d);
    memset(in_tree, 0, sizeof in_tree);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < o->npids; k++)
            in_tree[i] |= pid[i] == o->pids[k];
    /* Descendants: repeat until no process joins (depth is tiny here). */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n && !in_tree[i]; j++)
                if (in_tree[j] && ppid[i] == pid[j])
                    in_tree[i] = 1, changed = 1;
    }
    unsigned long long sum = 0;
    for (int i = 0; i < n; i++)
        sum += in_tree[i] ? ticks[i] : 0;
    return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

static double rusage_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* ------------------------------------------------------------ main */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t measured(struct worker *w, int n)
{
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += atomic_load_explicit(&w[i].measured, memory_order_relaxed);
    return sum;
}

/* Sleeps until deadline (us, CLOCK_MONOTONIC scale), -n requests or ^C. */
static void wait_until(struct worker *w, const struct opts *o, uint64_t deadline)
{
    while (!interrupted && now_us() < deadline) {
        if (o->max_requests && measured(w, o->threads) >= (uint64_t)o->max_requests)
            return;
        uint64_t left = deadline - now_us();
        struct timespec ts = {0, (long)(left < 20000 ? left : 20000) * 1000};
        nanosleep(&ts, NULL);
    }
}

static struct worker *start_workers(const struct opts *o, const struct requests *rq)
{
    struct worker *w = calloc((size_t)o->threads, sizeof *w);
    for (int i = 0; w && i < o->threads; i++) {
        w[i].o = o;
        w[i].rq = rq;
        w[i].seed = (unsigned)now_us() ^ (unsigned)(i * 7919);
        w[i].nconns = o->conns / o->threads + (i < o->conns % o->threads);
        w[i].conns = calloc((size_t)w[i].nconns, sizeof *w[i].conns);
        w[i].ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w[i].conns || w[i].ep < 0) {
            perror("fcgi_load: worker set-up");
            exit(1);
        }
        for (int k = 0; k < w[i].nconns; k++)
            w[i].conns[k] = (struct conn){.fd = -1, .w = &w[i]};
        if (pthread_create(&w[i].tid, NULL, worker_run, &w[i]) != 0) {
            perror("fcgi_load: pthread_create");
            exit(1);
        }
    }
    return w;
}

struct result {
    struct stats s;
    double secs, client_cpu, server_cpu;
};

static void print_statuses(const struct stats *s)
{
    int shown = 0;
    for (int i = 0; i < STATUS_MAX; i++) {
        if (!s->status[i] || i == 200)
            continue;
        printf("%s%s%d x %llu", shown ? ", " : "  statuses: ", i ? "" : "none/odd ", i,
               (unsigned long long)s->status[i]);
        shown = 1;
    }
    if (shown)
        printf("\n");
}

static void print_human(const struct opts *o, const struct result *r)
{
    const struct stats *s = &r->s;
    double n = (double)s->lat.count;
    printf("fcgi_load %s %s %s, %d threads x %d connections, %s, %.1f s measured after %.1f s\n",
           o->method, o->addr, o->uri, o->threads, o->conns,
           o->keep ? "FCGI_KEEP_CONN" : "new connection per request", r->secs, o->warmup);
    printf("  requests %llu, %.1f req/s\n", (unsigned long long)s->lat.count, n / r->secs);
    printf("  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
           hist_percentile(&s->lat, .50) / 1e3, hist_percentile(&s->lat, .90) / 1e3,
           hist_percentile(&s->lat, .99) / 1e3, s->lat.max / 1e3);
    printf("  errors: connect %llu, incomplete END_REQUEST %llu, closed early %llu, "
           "protocol %llu, timeout %llu, stalled %llu; non-200 %llu; kept connections retried "
           "%llu\n",
           (unsigned long long)s->err_connect, (unsigned long long)s->err_incomplete,
           (unsigned long long)s->err_closed, (unsigned long long)s->err_proto,
           (unsigned long long)s->err_timeout, (unsigned long long)s->stalled,
           (unsigned long long)s->non200, (unsigned long long)s->reconnects);
    print_statuses(s);
    printf("  client CPU %.3f s, %.1f us/request", r->client_cpu, n ? r->client_cpu * 1e6 / n : 0);
    if (o->npids)
        printf("; server CPU %.3f s, %.1f us/request", r->server_cpu,
               n ? r->server_cpu * 1e6 / n : 0);
    printf("\n");
}

static void print_kv(const struct opts *o, const struct result *r)
{
    const struct stats *s = &r->s;
    double n = (double)s->lat.count;
    char srv[32] = "-", srv_req[32] = "-";
    if (o->npids) {
        snprintf(srv, sizeof srv, "%.3f", r->server_cpu);
        snprintf(srv_req, sizeof srv_req, "%.2f", n ? r->server_cpu * 1e6 / n : 0);
    }
    printf("FCGI_LOAD requests=%llu secs=%.3f rps=%.1f p50_us=%llu p90_us=%llu p99_us=%llu "
           "max_us=%llu err_connect=%llu err_incomplete=%llu err_closed=%llu err_proto=%llu "
           "err_timeout=%llu stalled=%llu non200=%llu reconnects=%llu stderr_bytes=%llu "
           "client_cpu_s=%.3f client_us_per_req=%.2f server_cpu_s=%s server_us_per_req=%s "
           "keep=%d conns=%d threads=%d body=%ld\n",
           (unsigned long long)s->lat.count, r->secs, n / r->secs,
           (unsigned long long)hist_percentile(&s->lat, .50),
           (unsigned long long)hist_percentile(&s->lat, .90),
           (unsigned long long)hist_percentile(&s->lat, .99), (unsigned long long)s->lat.max,
           (unsigned long long)s->err_connect, (unsigned long long)s->err_incomplete,
           (unsigned long long)s->err_closed, (unsigned long long)s->err_proto,
           (unsigned long long)s->err_timeout, (unsigned long long)s->stalled,
           (unsigned long long)s->non200, (unsigned long long)s->reconnects,
           (unsigned long long)s->stderr_bytes, r->client_cpu, n ? r->client_cpu * 1e6 / n : 0, srv,
           srv_req, o->keep, o->conns, o->threads, o->body);
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(&o, argc, argv) < 0) {
        usage(o.help ? stdout : stderr);
        return o.help ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    struct requests rq;
    build_requests(&rq, &o);

    uint64_t t0 = now_us();
    struct worker *w = start_workers(&o, &rq);
    wait_until(w, &o, t0 + (uint64_t)(o.warmup * 1e6));
    double srv0 = o.npids ? server_cpu(&o) : 0, cli0 = rusage_cpu();
    uint64_t m0 = now_us();
    atomic_store(&measure_start, m0);
    atomic_store(&phase, MEASURE);
    wait_until(w, &o, m0 + (uint64_t)(o.duration * 1e6));
    atomic_store(&phase, STOP);
    uint64_t m1 = now_us();
    struct result r = {.secs = (double)(m1 - m0) / 1e6};
    r.client_cpu = rusage_cpu() - cli0;
    r.server_cpu = o.npids ? server_cpu(&o) - srv0 : 0;

    for (int i = 0; i < o.threads; i++) {
        pthread_join(w[i].tid, NULL);
        stats_merge(&r.s, &w[i].meas);
    }
    print_human(&o, &r);
    if (o.tsv)
        print_kv(&o, &r);
    for (int i = 0; i < o.threads; i++) {
        for (int k = 0; k < w[i].nconns; k++)
            if (w[i].conns[k].fd >= 0)
                close(w[i].conns[k].fd);
        free(w[i].conns);
        close(w[i].ep);
    }
    free(w);
    for (int i = 0; i < rq.n; i++)
        free(rq.v[i].p);
    free(rq.v);
    return r.s.lat.count && !stats_errors(&r.s) && !r.s.non200 ? 0 : 1;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * request.c - one request as the app sees it: the fcgate_* API.
 *
 * By the time the app runs, conn.c has read the whole request, params and
 * body, so reading never waits. Output is buffered: a response that fits
 * in OUT_FLUSH bytes leaves in one write with a Content-Length (nginx can
 * then keep its client connection alive without chunking); a larger one
 * leaves in OUT_FLUSH-sized pieces as the app writes it.
 *
 * Before the app runs, the time nginx received the request (its
 * X-Request-Start parameter) says how long it waited for a worker: counted
 * for the status page, and past queue_timeout answered 503 here, in one
 * place for every engine, without calling the module (its client has most
 * likely given up: php-src #11260's backlog of abandoned requests).
 */
#include "fcgate.h"
#include "log.h"

#include <ctype.h>
#include <fastcgi.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define OUT_FLUSH 65536

struct fcgate_req {
    struct req_chan *ch;
    uint16_t id;
    struct request_body *body;
    size_t read_off;
    const char *method, *path, *query;
    char *path_buf;
    int status;
    int has_ctype, has_clen;
    int headers_sent, gone;
    struct codec_buf out; /* body bytes not yet sent */
    size_t body_sent;
};

const char *fcgate_strerror(int status)
{
    switch (status) {
    case FCGATE_OK:
        return "success";
    case FCGATE_EINVAL:
        return "invalid argument or not found";
    case FCGATE_ENOMEM:
        return "out of memory";
    case FCGATE_EIO:
        return "I/O error";
    case FCGATE_ETOOBIG:
        return "too big";
    case FCGATE_EDB:
        return "database error";
    case FCGATE_ETIMEDOUT:
        return "timed out";
    case FCGATE_ECLOSED:
        return "client went away";
    case FCGATE_EUNAVAIL:
        return "database unavailable";
    default:
        return "unknown status";
    }
}

const char *fcgate_version(void)
{
    return FCGATE_VERSION;
}

/* ---- request data ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes src[0..n) into dst (cap bytes, NUL-terminated); '+' is a
 * space when plus is set. The length, or -1 if dst is too small. */
static long url_decode(const char *src, size_t n, char *dst, size_t cap, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)src[i];
        if (ch == '%' && i + 2 < n && hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
            ch = hexval(src[i + 1]) * 16 + hexval(src[i + 2]);
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        dst[o++] = (char)ch;
    }
    if (o >= cap)
        return -1;
    dst[o] = '\0';
    return (long)o;
}

/* REQUEST_URI is what the client sent; DOCUMENT_URI and SCRIPT_NAME are
 * what nginx made of it, and not every front end sends them. */
static const char *derive_path(struct fcgate_req *r)
{
    const struct codec *cd = &r->ch->codec;
    const char *uri = codec_param(cd, "REQUEST_URI");
    if (uri && *uri) {
        size_t n = strcspn(uri, "?#");
        r->path_buf = malloc(n + 1);
        if (r->path_buf) {
            long len = url_decode(uri, n, r->path_buf, n + 1, 0);
            if (len >= 0 && strlen(r->path_buf) == (size_t)len)
                return r->path_buf;
            memcpy(r->path_buf, uri, n); /* a %00 inside: keep it raw */
            r->path_buf[n] = '\0';
            return r->path_buf;
        }
    }
    const char *doc = codec_param(cd, "DOCUMENT_URI");
    if (doc && *doc)
        return doc;
    const char *script = codec_param(cd, "SCRIPT_NAME");
    const char *info = codec_param(cd, "PATH_INFO");
    if (info && *info && script) {
        size_t n = strlen(script) + strlen(info) + 1;
        r->path_buf = malloc(n);
        if (r->path_buf) {
            snprintf(r->path_buf, n, "%s%s", script, info);
            return r->path_buf;
        }
    }
    return script ? script : "/";
}

const char *fcgate_method(fcgate_req *r)
{
    return r->method;
}

const char *fcgate_path(fcgate_req *r)
{
    return r->path;
}

const char *fcgate_query(fcgate_req *r)
{
    return r->query;
}

const char *fcgate_param(fcgate_req *r, const char *name)
{
    return name ? codec_param(&r->ch->codec, name) : NULL;
}

const char *fcgate_header(fcgate_req *r, const char *name)
{
    char key[256] = "HTTP_";
    size_t n = 5;

    if (!name)
        return NULL;
    if (strcasecmp(name, "Content-Type") == 0)
        return codec_param(&r->ch->codec, "CONTENT_TYPE");
    if (strcasecmp(name, "Content-Length") == 0)
        return codec_param(&r->ch->codec, "CONTENT_LENGTH");
    for (const char *p = name; *p; p++) {
        if (n + 1 >= sizeof(key))
            return NULL;
        key[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    }
    key[n] = '\0';
    return codec_param(&r->ch->codec, key);
}

int fcgate_query_value(fcgate_req *r, const char *key, char *buf, size_t len)
{
    const char *q = r->query;
    size_t klen = key ? strlen(key) : 0;
    char name[256];

    if (!key || !buf)
        return FCGATE_EINVAL;
    while (*q) {
        size_t pair = strcspn(q, "&");
        size_t nlen = strcspn(q, "=&");
        long dn = url_decode(q, nlen, name, sizeof(name), 1);
        if (dn == (long)klen && memcmp(name, key, klen) == 0) {
            const char *v = nlen < pair ? q + nlen + 1 : q + nlen;
            size_t vlen = nlen < pair ? pair - nlen - 1 : 0;
            long n = url_decode(v, vlen, buf, len, 1);
            return n < 0 ? FCGATE_ETOOBIG : (int)n;
        }
        q += pair;
        if (*q == '&')
            q++;
    }
    return FCGATE_EINVAL;
}

long fcgate_read(fcgate_req *r, void *buf, size_t len)
{
    if (r->body->too_big)
        return FCGATE_ETOOBIG;
    size_t left = r->body->buf.len - r->read_off;
    if (len > left)
        len = left;
    if (len)
        memcpy(buf, r->body->buf.data + r->read_off, len);
    r->read_off += len;
    return (long)len;
}

int fcgate_read_all(fcgate_req *r, const char **body, size_t *len)
{
    if (r->body->too_big)
        return FCGATE_ETOOBIG;
    *body = r->body->buf.data ? (const char *)r->body->buf.data : "";
    *len = r->body->buf.len;
    return FCGATE_OK;
}

/* ---- response ---- */

static const char *reason_phrase(int code)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].code == code)
            return reasons[i].text;
    return "Unknown";
}

int fcgate_set_status(fcgate_req *r, int code)
{
    if (code < 100 || code > 599 || r->headers_sent)
        return FCGATE_EINVAL;
    r->status = code;
    return FCGATE_OK;
}

static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return 0;
    return 1;
}

int fcgate_add_header(fcgate_req *r, const char *name, const char *value)
{
    struct codec_buf *h = &r->ch->head;

    if (r->headers_sent || !name || !value || !is_token(name) || strpbrk(value, "\r\n") ||
        strcasecmp(name, "Status") == 0)
        return FCGATE_EINVAL;
    size_t old = h->len;
    if (codec_buf_append(h, name, strlen(name)) < 0 || codec_buf_append(h, ": ", 2) < 0 ||
        codec_buf_append(h, value, strlen(value)) < 0 || codec_buf_append(h, "\r\n", 2) < 0) {
        h->len = old;
        return FCGATE_ENOMEM;
    }
    r->has_ctype |= strcasecmp(name, "Content-Type") == 0;
    r->has_clen |= strcasecmp(name, "Content-Length") == 0;
    return FCGATE_OK;
}

/* Sends what is buffered; with final, the response ends (END_REQUEST). */
static int flush(struct fcgate_req *r, int final)
{
    struct req_chan *ch = r->ch;
    struct codec_buf *w = &ch->wire;
    int rc = 0;

    w->len = 0;
    if (!r->headers_sent) {
        char line[96];
        int n =
            snprintf(line, sizeof(line), "Status: %d %s\r\n", r->status, reason_phrase(r->status));
        struct codec_buf blk = {0};
        rc |= codec_buf_append(&blk, line, (size_t)n);
        if (!r->has_ctype && r->status != 204 && r->status != 304)
            rc |= codec_buf_append(&blk, "Content-Type: text/plain\r\n", 26);
        if (final && !r->has_clen && r->status != 204 && r->status != 304) {
            n = snprintf(line, sizeof(line), "Content-Length: %zu\r\n", r->out.len);
            rc |= codec_buf_append(&blk, line, (size_t)n);
        }
        rc |= codec_buf_append(&blk, ch->head.data, ch->head.len);
        rc |= codec_buf_append(&blk, "\r\n", 2);
        rc |= codec_buf_append(&blk, r->out.data, r->out.len);
        rc |= codec_put_stdout(w, r->id, blk.data, blk.len);
        codec_buf_free(&blk);
        r->headers_sent = 1;
    } else {
        rc |= codec_put_stdout(w, r->id, r->out.data, r->out.len);
    }
    r->body_sent += r->out.len;
    r->out.len = 0;
    if (final)
        rc |= codec_put_end(w, r->id, 0, FCGI_REQUEST_COMPLETE);
    if (rc < 0) {
        log_error("out of memory sending a response; closing the connection");
        r->gone = 1;
        return FCGATE_ENOMEM;
    }
    if (!r->gone && ch->io->write(ch, w->data, w->len) < 0)
        r->gone = 1;
    if (w->cap > 4 * OUT_FLUSH)
        codec_buf_free(w);
    return r->gone ? FCGATE_ECLOSED : FCGATE_OK;
}

int fcgate_write(fcgate_req *r, const void *buf, size_t len)
{
    if (r->ch->cancelled)
        return FCGATE_ETIMEDOUT;
    if (r->gone)
        return FCGATE_ECLOSED;
    if (codec_buf_append(&r->out, buf, len) < 0)
        return FCGATE_ENOMEM;
    return r->out.len >= OUT_FLUSH ? flush(r, 0) : FCGATE_OK;
}

int fcgate_printf(fcgate_req *r, const char *fmt, ...)
{
    char small[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return FCGATE_EINVAL;
    if ((size_t)n < sizeof(small))
        return fcgate_write(r, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return FCGATE_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = fcgate_write(r, big, (size_t)n);
    free(big);
    return rc;
}

/* ---- waiting: the engine decides what waiting means ---- */

int fcgate_db(fcgate_req *r, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    if (!fn)
        return FCGATE_EINVAL;
    return r->ch->io->db(r->ch, fn, arg);
}

int fcgate_sleep(fcgate_req *r, unsigned ms)
{
    return r->ch->io->sleep(r->ch, ms);
}

int fcgate_wait_fd(fcgate_req *r, int fd, short events, int timeout_ms)
{
    if (fd < 0)
        return FCGATE_EINVAL;
    return r->ch->io->wait_fd(r->ch, fd, events, timeout_ms);
}

/* PostgreSQL waits through the engine, bounded by the request's
 * `timeout`. In sync and threads mode the supervisor acts on a request
 * over `timeout` (it kills or retires the worker), so queries must end a
 * little before: a quarter of it, at most 250 ms, early. */
static int chan_pg_wait(void *ctx, int fd, short events, int timeout_ms)
{
    struct req_chan *ch = ctx;
    return ch->io->wait_fd(ch, fd, events, timeout_ms);
}

static int chan_pg_park(void *ctx, int timeout_ms)
{
    struct req_chan *ch = ctx;
    return ch->io->park(ch, timeout_ms);
}

static void chan_pg_unpark(void *ctx)
{
    struct req_chan *ch = ctx;
    ch->io->unpark(ch);
}

static struct pg_wait req_pg_wait(fcgate_req *r)
{
    struct pg_wait w = {chan_pg_wait, r->ch, 0, NULL, NULL};
    if (r->ch->io->park) {
        w.park = chan_pg_park;
        w.unpark = chan_pg_unpark;
    }
    uint64_t t = r->ch->app->timeout_ms > 0 ? (uint64_t)r->ch->app->timeout_ms : 0;
    if (t)
        w.deadline_ms = r->ch->start_ms + t - (t / 4 < 250 ? t / 4 : 250);
    return w;
}

/* A query cut off by the request's deadline: the request is answered
 * 504, as a request over `timeout` in async mode is. */
static int pg_outcome(fcgate_req *r, int rc)
{
    if (rc == FCGATE_ETIMEDOUT && !r->ch->cancelled) {
        log_error("%s: PostgreSQL query cancelled at the request's timeout (%d s); answered 504",
                  r->ch->what, r->ch->app->timeout_ms / 1000);
        r->ch->cancelled = 1;
    }
    return rc;
}

int fcgate_pg_configured(const fcgate_host *h)
{
    return h && h->cfg->app_postgres && *h->cfg->app_postgres;
}

int fcgate_pg_query(fcgate_req *r, PGresult **res, const char *sql, int nparams,
                    const char *const *params)
{
    struct pg_wait w = req_pg_wait(r);
    return pg_outcome(r, pg_query(&w, res, sql, nparams, params));
}

int fcgate_pg_transaction(fcgate_req *r, int (*fn)(fcgate_pg *tx, void *arg), void *arg)
{
    struct pg_wait w = req_pg_wait(r);
    return pg_outcome(r, pg_transaction(&w, fn, arg));
}

int fcgate_host_pg(const fcgate_host *h, int (*fn)(fcgate_pg *tx, void *arg), void *arg)
{
    (void)h;
    return pg_transaction(NULL, fn, arg);
}

void fcgate_log(fcgate_req *r, int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r)
        log_write(level, "app: %s %s: %s", r->method, r->path, msg);
    else
        log_write(level, "app: %s", msg);
}

const char *fcgate_setting(const fcgate_host *h, const char *name)
{
    return h && name ? config_setting(h->cfg, name) : NULL;
}

int fcgate_host_db(const fcgate_host *h, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)h;
    return fn ? db_run(fn, arg) : FCGATE_EINVAL;
}

/* ---- running one request ---- */

/* An error answer in place of whatever the handler buffered. */
static void replace_body(struct fcgate_req *r, const char *text)
{
    r->ch->head.len = 0;
    r->out.len = 0;
    r->has_ctype = r->has_clen = 0;
    if (codec_buf_append(&r->out, text, strlen(text)) < 0)
        r->out.len = 0;
}

/* The head is out, so no error answer can replace the response, and an
 * END_REQUEST would make the truncated body look whole to nginx and its
 * client. An invalid record instead (version 0): nginx takes it as an
 * upstream error and cuts its client off, with fastcgi_keep_conn on or
 * off (a bare close it takes as a normal end without keep_conn). The
 * connection closes after it. */
static void cut_off(struct fcgate_req *r)
{
    static const uint8_t invalid[FCGI_HEADER_LEN] = {0, FCGI_STDOUT};
    if (!r->gone)
        r->ch->io->write(r->ch, invalid, sizeof(invalid));
    r->gone = 1;
}

/* Whole digits of v into *n (at most 19, so no overflow); the count. */
static int digits(const char **v, uint64_t *n)
{
    int count = 0;
    for (*n = 0; **v >= '0' && **v <= '9'; (*v)++, count++) {
        if (count == 19)
            return -1;
        *n = *n * 10 + (uint64_t)(**v - '0');
    }
    return count;
}

/* The magnitudes, as New Relic's and Datadog's agents tell them apart:
 * epoch seconds stay below 1e11 until the year 5138, milliseconds below
 * 1e14, microseconds below 1e17; nanoseconds above. */
int request_start_us(const char *v, uint64_t *out)
{
    uint64_t whole, frac_us = 0;
    if (v[0] == 't' && v[1] == '=')
        v += 2;
    if (digits(&v, &whole) <= 0)
        return -1;
    if (*v == '.') {
        uint64_t scale = 100000;
        for (v++; *v >= '0' && *v <= '9'; v++, scale /= 10)
            frac_us += (uint64_t)(*v - '0') * scale;
    }
    if (*v != '\0')
        return -1;
    if (whole < 100000000000ull)
        *out = whole * 1000000u + frac_us;
    else if (whole < 100000000000000ull)
        *out = whole * 1000u + frac_us / 1000u;
    else if (whole < 100000000000000000ull)
        *out = whole;
    else
        *out = whole / 1000u;
    return 0;
}

/* How long the request waited, counted on its slot; 1 if that is past
 * queue_timeout, and then its answer is a 503 in place of the app's. */
static int queue_reject(struct fcgate_req *r)
{
    const char *v = codec_param(&r->ch->codec, "HTTP_X_REQUEST_START");
    unsigned long limit_ms = r->ch->app->queue_timeout_ms;
    struct timespec ts;
    uint64_t start_us;

    if (!v || request_start_us(v, &start_us) < 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint64_t wait_us = now_us > start_us ? now_us - start_us : 0; /* clocks apart: no wait */
    int reject = limit_ms && wait_us > (uint64_t)limit_ms * 1000u;
    if (r->ch->slot)
        scoreboard_queued(r->ch->slot, wait_us, reject);
    if (!reject)
        return 0;
    /* The client most likely gave up; one that did not may come back. */
    r->status = 503;
    fcgate_add_header(r, "Retry-After", "1");
    static const char body[] = "service unavailable: the request waited too long for a worker\n";
    fcgate_write(r, body, sizeof(body) - 1);
    return 1;
}

static void access_log(struct fcgate_req *r, uint64_t t0_us)
{
    struct timespec ts;
    char line[2048];
    const char *fmt = r->ch->app->access_format;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    struct access_fields f = {
        .remote_addr = codec_param(&r->ch->codec, "REMOTE_ADDR"),
        .method = r->method,
        .uri = codec_param(&r->ch->codec, "REQUEST_URI"),
        .path = r->path,
        .query = r->query,
        .status = r->status,
        .bytes = r->body_sent,
        .duration_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u - t0_us,
        .pid = (int)getpid(),
        .time_s = (long long)time(NULL),
    };
    if (!f.uri)
        f.uri = r->path;
    size_t n = log_access_render(line, sizeof(line), fmt ? fmt : LOG_ACCESS_FORMAT_DEFAULT, &f);
    log_access_line(line, n);
}

enum req_result request_run(struct req_chan *ch, uint16_t id, struct request_body *body)
{
    const struct req_app *app = ch->app;
    struct fcgate_req r = {.ch = ch, .id = id, .body = body, .status = 200};
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t0_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    ch->head.len = 0;
    r.method = codec_param(&ch->codec, "REQUEST_METHOD");
    if (!r.method)
        r.method = "";
    r.query = codec_param(&ch->codec, "QUERY_STRING");
    if (!r.query)
        r.query = "";
    r.path = derive_path(&r);
    ch->method = r.method;
    ch->path = r.path;
    ch->start_ms = t0_us / 1000u;
    ch->cancelled = 0;
    snprintf(ch->what, sizeof(ch->what), "%s %s", r.method, r.path);
    /* After what: a rescuer that wins the claim reads it. */
    atomic_store(&ch->claim_id, id);
    atomic_store(&ch->claim, REQ_UNSENT);
    if (ch->slot) {
        scoreboard_begin(ch->slot, r.method, r.path);
        atomic_fetch_add_explicit(&ch->slot->active, 1, memory_order_relaxed);
    }

    int rc = queue_reject(&r) ? 0 : app->app->handle(app->ctx, &r);
    if (ch->cancelled) {
        /* Over `timeout` (async mode): whatever the handler made of its
         * failed waits, the client gets a 504, or a cut if it already
         * had the head of the response. */
        if (r.headers_sent) {
            cut_off(&r);
        } else {
            r.status = 504;
            replace_body(&r, "gateway timeout\n");
        }
    } else if (rc != 0) {
        if (!r.gone)
            log_error("app: %s %s: handler failed (%d: %s)%s", r.method, r.path, rc,
                      fcgate_strerror(rc), r.headers_sent ? "; response cut short" : "");
        if (r.headers_sent) {
            cut_off(&r);
        } else if (!r.gone) {
            r.status = 500;
            replace_body(&r, "internal server error\n");
        }
    }
    if (!r.gone || !r.headers_sent)
        flush(&r, 1);
    if (log_access_enabled())
        access_log(&r, t0_us);
    if (ch->slot) {
        atomic_fetch_sub_explicit(&ch->slot->active, 1, memory_order_relaxed);
        scoreboard_end(ch->slot, r.status, monotonic_us() - t0_us);
    }
    codec_buf_free(&r.out);
    ch->method = ch->path = NULL;
    ch->cancelled = 0;
    /* A rescue in progress is using the connection: wait for it (a few
     * system calls) before the caller may close it. */
    while (atomic_load(&ch->claim) == REQ_RESCUING)
        sched_yield();
    if (atomic_exchange(&ch->claim, REQ_NONE) == REQ_RESCUED)
        r.gone = 1;
    free(r.path_buf);
    return r.gone ? REQ_PEER_GONE : REQ_ANSWERED;
}

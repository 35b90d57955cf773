/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * conn.c - one FastCGI connection: bytes from the socket through the
 * codec to requests, responses back.
 *
 * A request runs only once its body is complete (the empty STDIN record),
 * so every body is drained before the next request on a kept-alive
 * connection, and the app never waits on nginx while it runs. A body over
 * max_body_bytes is read and discarded: the app sees ETOOBIG and answers
 * 413 on a connection that is still in sync.
 *
 * Sockets are never waited on here: a read or write that would block asks
 * the engine's wait (a blocking poll, or a coroutine switch). Between
 * requests nothing waits at all: conn_serve returns CONN_IDLE and the
 * engine decides (park the connection, or let it go when stopping).
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <fastcgi.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One read's worth. Allocated while a request is being read, not on the
 * stack (a coroutine's may be small) nor kept by idle connections. */
#define READ_BUF 16384

static struct conn *chan_conn(struct req_chan *ch)
{
    return (struct conn *)((char *)ch - offsetof(struct conn, ch));
}

/* io_timeout: a peer that neither sends the rest of its request nor
 * reads what we write loses its connection (nginx bounds the same waits
 * from its side with fastcgi_read_timeout and fastcgi_send_timeout). */
static int wait_progress(struct conn *c, short events)
{
    switch (c->ops->wait(c, events, c->env->io_timeout_ms)) {
    case CONN_WAIT_READY:
        return 0;
    case CONN_WAIT_TIMEOUT:
        if (events & POLLOUT)
            log_warn("%s%sthe peer read nothing for %g s (io_timeout); closing the connection",
                     c->ch.method ? c->ch.what : "", c->ch.method ? ": " : "",
                     c->env->io_timeout_ms / 1000.0);
        else
            log_warn("a request stalled: nothing more of it for %g s (io_timeout); closing "
                     "the connection",
                     c->env->io_timeout_ms / 1000.0);
        return -1;
    case CONN_WAIT_FAILED:
        break;
    }
    return -1;
}

static int send_all(struct conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            p += n;
            len -= (size_t)n;
        } else if (errno == EAGAIN) {
            if (wait_progress(c, POLLOUT) < 0)
                return -1;
        } else if (errno != EINTR) {
            return -1; /* EPIPE, ECONNRESET: nginx closed; the client is gone */
        }
    }
    return 0;
}

/* ---- the request side: writes go to the socket, waits to the engine ---- */

static int chan_write(struct req_chan *ch, const void *buf, size_t len)
{
    int unsent = REQ_UNSENT;
    if (atomic_load_explicit(&ch->claim, memory_order_relaxed) != REQ_SENT &&
        !atomic_compare_exchange_strong(&ch->claim, &unsent, REQ_SENT) && unsent >= REQ_RESCUING)
        return -1; /* answered for us: the peer is gone as far as we know */
    return send_all(chan_conn(ch), buf, len);
}

static int chan_sleep(struct req_chan *ch, unsigned ms)
{
    struct conn *c = chan_conn(ch);
    return c->ops->sleep(c, ms);
}

static int chan_wait_fd(struct req_chan *ch, int fd, short events, int timeout_ms)
{
    struct conn *c = chan_conn(ch);
    return c->ops->wait_fd(c, fd, events, timeout_ms);
}

static int chan_db(struct req_chan *ch, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    struct conn *c = chan_conn(ch);
    return c->ops->db(c, fn, arg);
}

static int chan_park(struct req_chan *ch, int timeout_ms)
{
    struct conn *c = chan_conn(ch);
    return c->ops->park(c, timeout_ms);
}

static void chan_unpark(struct req_chan *ch)
{
    struct conn *c = chan_conn(ch);
    c->ops->unpark(c);
}

static const struct req_io chan_io = {
    .write = chan_write,
    .sleep = chan_sleep,
    .wait_fd = chan_wait_fd,
    .db = chan_db,
};

/* For engines whose requests share a thread. */
static const struct req_io chan_io_parking = {
    .write = chan_write,
    .sleep = chan_sleep,
    .wait_fd = chan_wait_fd,
    .db = chan_db,
    .park = chan_park,
    .unpark = chan_unpark,
};

void conn_init(struct conn *c, int fd, const struct conn_ops *ops, const struct conn_env *env,
               int kept)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->ops = ops;
    c->env = env;
    c->ch.io = ops->park && ops->unpark ? &chan_io_parking : &chan_io;
    c->ch.app = &env->app;
    c->served = (unsigned long)kept; /* kept: between requests, not fresh */
    codec_init(&c->ch.codec, &env->limits);
}

static void body_reset(struct conn *c)
{
    struct request_body *b = &c->body;
    b->buf.len = 0;
    b->too_big = 0;
    b->limit = c->env->max_body_bytes;
    const char *cl = codec_param(&c->ch.codec, "CONTENT_LENGTH");
    /* Refuse early on the declared length; the bytes are still drained. */
    if (cl && *cl && strtoull(cl, NULL, 10) > b->limit)
        b->too_big = 1;
}

static void body_add(struct request_body *b, const uint8_t *p, size_t n)
{
    if (b->too_big)
        return;
    if (n > b->limit - b->buf.len || codec_buf_append(&b->buf, p, n) < 0) {
        b->too_big = 1;
        codec_buf_free(&b->buf);
    }
}

static int send_pending(struct conn *c)
{
    struct codec_buf *out = &c->ch.codec.out;
    if (out->len == 0)
        return 0;
    int rc = send_all(c, out->data, out->len);
    out->len = 0;
    return rc;
}

/* The reply to an aborted request: nothing more for it (spec 5.4). */
static int end_aborted(struct conn *c, uint16_t id)
{
    struct codec_buf *w = &c->ch.wire;
    w->len = 0;
    if (codec_put_end(w, id, 0, FCGI_REQUEST_COMPLETE) < 0)
        return -1;
    return send_all(c, w->data, w->len);
}

enum fill_result { FILL_OK, FILL_IDLE, FILL_EOF, FILL_ERROR };

/* More bytes into rbuf. Between requests an empty socket is FILL_IDLE;
 * inside one the engine waits. */
static enum fill_result fill(struct conn *c)
{
    if (!c->rbuf && !(c->rbuf = malloc(READ_BUF))) {
        log_error("out of memory reading a request; closing the connection");
        return FILL_ERROR;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf, READ_BUF, MSG_DONTWAIT);
        if (n > 0) {
            c->roff = 0;
            c->rhave = (size_t)n;
            return FILL_OK;
        }
        if (n == 0 || errno == ECONNRESET)
            return FILL_EOF;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return FILL_ERROR;
        if (c->ch.codec.rq == RQ_IDLE) {
            free(c->rbuf);
            c->rbuf = NULL;
            return FILL_IDLE;
        }
        if (wait_progress(c, POLLIN) < 0)
            return FILL_ERROR;
    }
}

/* The body is complete: run the request. Whether to keep the connection. */
static int run_request(struct conn *c, uint16_t id)
{
    struct request_body *b = &c->body;
    /* NUL-terminated for fcgate_read_all, not counted in len. */
    if (!b->too_big && codec_buf_append(&b->buf, "", 1) == 0)
        b->buf.len--;
    struct codec *k = &c->ch.codec;
    int keep = request_run(&c->ch, id, b) == REQ_ANSWERED && k->keep_conn;
    c->all_read = !k->keep_conn && c->roff == c->rhave && k->rs == REC_HEADER &&
                  k->hdr_have == 0; /* not even its padding is due */
    c->served++;
    codec_request_done(k);
    if (b->buf.cap > READ_BUF * 4)
        codec_buf_free(&b->buf);
    return keep;
}

enum conn_result conn_serve(struct conn *c)
{
    struct codec *k = &c->ch.codec;
    for (;;) {
        if (c->roff == c->rhave) {
            enum fill_result f = fill(c);
            if (f == FILL_IDLE)
                return CONN_IDLE;
            if (f == FILL_EOF) {
                const char *why = codec_eof(k);
                if (why)
                    log_warn("protocol error, closing connection: %s", why);
            }
            if (f != FILL_OK)
                break;
        }
        struct codec_event ev;
        size_t used;
        enum codec_event_type t = codec_next(k, c->rbuf + c->roff, c->rhave - c->roff, &used, &ev);
        c->roff += used;
        if (send_pending(c) < 0)
            break;
        int keep = 1;
        switch (t) {
        case CODEC_NEED_MORE:
        case CODEC_BEGIN:
            break;
        case CODEC_PARAMS:
            body_reset(c);
            break;
        case CODEC_STDIN:
            body_add(&c->body, ev.data, ev.len);
            break;
        case CODEC_STDIN_END:
            if (!run_request(c, ev.id))
                goto close;
            return CONN_SERVED;
        case CODEC_ABORT:
            keep = end_aborted(c, ev.id) == 0 && ev.keep_conn;
            codec_request_done(k);
            break;
        case CODEC_REJECTED:
            keep = ev.keep_conn;
            break;
        case CODEC_ERROR:
            log_warn("protocol error, closing connection: %s", ev.reason);
            keep = 0;
            break;
        }
        if (!keep)
            break;
    }
close:
    conn_close(c);
    return CONN_CLOSED;
}

int conn_at_boundary(const struct conn *c)
{
    const struct codec *k = &c->ch.codec;
    return k->rq == RQ_IDLE && k->rs == REC_HEADER && k->hdr_have == 0 && !k->failed &&
           c->roff == c->rhave;
}

int conn_buffered(const struct conn *c)
{
    return c->roff < c->rhave;
}

static void free_buffers(struct conn *c)
{
    codec_free(&c->ch.codec);
    codec_buf_free(&c->ch.wire);
    codec_buf_free(&c->ch.head);
    codec_buf_free(&c->body.buf);
    free(c->rbuf);
    c->rbuf = NULL;
    c->roff = c->rhave = 0;
}

/* Half-close first so nginx reads a clean EOF rather than a reset when
 * bytes it sent may still be unread here. After a request the peer did
 * not ask to keep the connection for, everything it sent has been read
 * (the empty STDIN record was its last): a plain close is as clean, and
 * two system calls per request cheaper. */
void conn_close(struct conn *c)
{
    char sink[4096];
    free_buffers(c);
    if (c->fd < 0)
        return;
    if (!c->all_read) {
        shutdown(c->fd, SHUT_WR);
        while (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
    }
    close(c->fd);
    c->fd = -1;
}

int conn_rescue(struct conn *c)
{
    static const char head[] = "Status: 504 Gateway Timeout\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 16\r\n\r\ngateway timeout\n";
    int unsent = REQ_UNSENT;
    /* RESCUING holds the descriptor open: the serving thread closes it
     * only after request_run, which waits for RESCUED. */
    if (!atomic_compare_exchange_strong(&c->ch.claim, &unsent, REQ_RESCUING))
        return 0;
    uint16_t id = atomic_load(&c->ch.claim_id);
    struct codec_buf out = {0};
    if (codec_put_stdout(&out, id, head, sizeof(head) - 1) == 0 &&
        codec_put_end(&out, id, 0, FCGI_REQUEST_COMPLETE) == 0) {
        const uint8_t *p = out.data;
        size_t left = out.len;
        /* A moment at most: the socket is otherwise idle. */
        for (int tries = 0; left > 0 && tries < 100; tries++) {
            ssize_t n = send(c->fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                p += n;
                left -= (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                break;
            } else {
                struct pollfd pf = {c->fd, POLLOUT, 0};
                poll(&pf, 1, 10);
            }
        }
    }
    codec_buf_free(&out);
    /* Its thread still holds the connection: nothing more goes on it. */
    shutdown(c->fd, SHUT_RDWR);
    atomic_store(&c->ch.claim, REQ_RESCUED);
    return 1;
}

/* No shutdown: it would act on the socket that another process now has. */
void conn_detach(struct conn *c)
{
    if (c->ops->unwatch)
        c->ops->unwatch(c);
    free_buffers(c);
    close(c->fd);
    c->fd = -1;
}

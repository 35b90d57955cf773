/*
 * conn.c - one FastCGI connection: bytes from the engine through the codec
 * to requests, responses back.
 *
 * A request runs only once its body is complete (the empty STDIN record),
 * so every body is drained before the next request on a kept-alive
 * connection, and the app never waits on nginx while it runs. A body over
 * limits.max_body_bytes is read and discarded: the app sees ETOOBIG and
 * answers 413 on a connection that is still in sync.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <fastcgi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF 16384

static int send_pending(struct conn *c)
{
    struct codec_buf *out = &c->codec.out;
    if (out->len == 0)
        return 0;
    int rc = c->io->write(c, out->data, out->len);
    out->len = 0;
    return rc;
}

static void body_reset(struct request_body *b, const struct conn *c)
{
    b->buf.len = 0;
    b->too_big = 0;
    b->limit = c->w->cfg->max_body_bytes;
    const char *cl = codec_param(&c->codec, "CONTENT_LENGTH");
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

/* The reply to an aborted request: nothing more for it (spec 5.4). */
static int end_aborted(struct conn *c, uint16_t id)
{
    c->wire.len = 0;
    if (codec_put_end(&c->wire, id, 0, FCGI_REQUEST_COMPLETE) < 0)
        return -1;
    return c->io->write(c, c->wire.data, c->wire.len);
}

/* Half-close first so nginx reads a clean EOF rather than a reset when
 * bytes it sent may still be unread here. After a request the peer did
 * not ask to keep the connection for, everything it sent has been read
 * (the empty STDIN record was its last): a plain close is as clean, and
 * two system calls per request cheaper. */
static void conn_close(struct conn *c)
{
    char sink[4096];
    if (!c->all_read) {
        shutdown(c->fd, SHUT_WR);
        while (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
    }
    close(c->fd);
    c->fd = -1;
}

int conn_accept(int lfd, int flags)
{
    int fd = accept4(lfd, NULL, NULL, flags | SOCK_CLOEXEC);
    if (fd >= 0)
        return fd;
    if (errno == EMFILE || errno == ENFILE) {
        /* The listen socket stays readable: the caller must pause, not spin. */
        log_error("accept: %s; pausing", strerror(errno));
        return CONN_ACCEPT_NOFD;
    }
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        log_error("accept: %s", strerror(errno));
    return -1;
}

void conn_init(struct conn *c)
{
    codec_init(&c->codec, &c->w->limits);
}

enum conn_result conn_serve(struct conn *c)
{
    uint8_t buf[READ_BUF];
    size_t have = 0, off = 0;
    struct request_body body = {0};
    int keep = 1;

    while (keep) {
        if (off == have) {
            int idle = c->codec.rq != RQ_IDLE ? CONN_BUSY
                       : c->served            ? CONN_IDLE_KEPT
                                              : CONN_IDLE_FRESH;
            ssize_t n = c->io->read(c, buf, sizeof(buf), idle);
            if (n == CONN_READ_PARK || n == CONN_READ_STOP) {
                /* Idle, nothing buffered: the state is all in c. */
                codec_buf_free(&body.buf);
                return n == CONN_READ_PARK ? CONN_PARKED : conn_leave(c);
            }
            if (n == 0) {
                const char *why = codec_eof(&c->codec);
                if (why)
                    log_warn("protocol error, closing connection: %s", why);
                break;
            }
            if (n < 0)
                break;
            have = (size_t)n;
            off = 0;
        }
        struct codec_event ev;
        size_t used;
        enum codec_event_type t = codec_next(&c->codec, buf + off, have - off, &used, &ev);
        off += used;
        if (send_pending(c) < 0)
            break;
        switch (t) {
        case CODEC_NEED_MORE:
        case CODEC_BEGIN:
            break;
        case CODEC_PARAMS:
            body_reset(&body, c);
            break;
        case CODEC_STDIN:
            body_add(&body, ev.data, ev.len);
            break;
        case CODEC_STDIN_END:
            /* NUL-terminated for fcgate_read_all, not counted in len. */
            if (!body.too_big && codec_buf_append(&body.buf, "", 1) == 0)
                body.buf.len--;
            keep = request_run(c, ev.id, &body) == 0 && c->codec.keep_conn;
            c->all_read = !c->codec.keep_conn && off == have && c->codec.rs == REC_HEADER &&
                          c->codec.hdr_have == 0; /* not even its padding is due */
            c->served++;
            codec_request_done(&c->codec);
            if (body.buf.cap > READ_BUF * 4)
                codec_buf_free(&body.buf);
            break;
        case CODEC_ABORT:
            keep = end_aborted(c, ev.id) == 0 && ev.keep_conn;
            codec_request_done(&c->codec);
            break;
        case CODEC_REJECTED:
            keep = ev.keep_conn;
            break;
        case CODEC_ERROR:
            log_warn("protocol error, closing connection: %s", ev.reason);
            keep = 0;
            break;
        }
        /* Stopping with nobody to hand over to: close between requests
         * (with a hand-over, the next read says CONN_READ_STOP). */
        if (keep && atomic_load(&c->w->stopping) && c->codec.rq == RQ_IDLE && off == have &&
            !handoff_is_open(c->w->handoff))
            keep = 0;
    }
    codec_buf_free(&body.buf);
    conn_discard(c);
    return CONN_CLOSED;
}

static void free_buffers(struct conn *c)
{
    codec_free(&c->codec);
    codec_buf_free(&c->wire);
    codec_buf_free(&c->head);
}

int conn_stop_idle(const struct conn *c, int idle)
{
    if (idle == CONN_BUSY || !atomic_load(&c->w->stopping))
        return 0;
    return idle == CONN_IDLE_KEPT || handoff_is_open(c->w->handoff);
}

/* Between records, nothing of the next one read: the connection can move. */
static int at_boundary(const struct codec *k)
{
    return k->rq == RQ_IDLE && k->rs == REC_HEADER && k->hdr_have == 0 && !k->failed;
}

enum conn_result conn_leave(struct conn *c)
{
    if (at_boundary(&c->codec) && handoff_send(c->w->handoff, c->fd, c->served > 0) == 0) {
        /* Closing our copy leaves the socket open: it is in flight to,
         * or already with, another worker. No shutdown, which would act
         * on the shared socket. */
        close(c->fd);
        c->fd = -1;
        atomic_fetch_add(&c->w->handed_over, 1);
        free_buffers(c);
        return CONN_HANDED_OFF;
    }
    conn_discard(c);
    return CONN_CLOSED;
}

/* EPOLLEXCLUSIVE wakes one of the workers watching a socket, and may pick
 * one that is stopping: it ignores the event, and the others are not told
 * until the next one. So once a stopping worker has taken the listen
 * sockets and the pair out of its epoll set, it passes on what may have
 * woken it: pending connections are accepted and handed over fresh, and
 * pending hand-overs are sent again, which wakes a worker that stays.
 * Bounded, in case two stopping workers pass the same ones back and
 * forth. */
void conn_pass_on_pending(struct worker *w)
{
    int kept, fd, n = 0;
    if (!handoff_is_open(w->handoff))
        return;
    while (n++ < 1024 && (fd = handoff_recv(w->handoff, &kept, -1)) >= 0) {
        handoff_send(w->handoff, fd, kept);
        close(fd);
    }
    for (size_t i = 0; i < w->nlisten; i++) {
        while (n++ < 2048 && (fd = conn_accept(w->listen_fds[i], 0)) >= 0) {
            if (handoff_send(w->handoff, fd, 0) < 0)
                shutdown(fd, SHUT_RDWR); /* refused, as a full backlog would */
            close(fd);
        }
    }
}

void conn_discard(struct conn *c)
{
    free_buffers(c);
    conn_close(c);
}

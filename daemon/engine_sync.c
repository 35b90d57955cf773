/*
 * engine_sync.c - blocking I/O: one connection at a time per thread.
 *
 * Used as is by sync mode (one thread) and by threads mode (several).
 * Each serving thread waits in its own epoll set holding the listen
 * sockets with EPOLLEXCLUSIVE, so a new connection wakes one waiter, not
 * the whole pool, plus the worker's stop eventfd. Reads try the socket
 * first and only wait when it is empty: with nginx's one-connection-per-
 * request default the request is usually there on accept.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static ssize_t blocking_read(struct conn *c, void *buf, size_t len, int idle)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == ECONNRESET)
            return 0;
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        /* Between requests a stopping worker gives the connection up;
         * inside one it reads on, so the request completes. */
        struct pollfd p[2] = {{c->fd, POLLIN, 0}, {c->w->stop_fd, POLLIN, 0}};
        if (idle && atomic_load(&c->w->stopping))
            return -2;
        int r = poll(p, idle ? 2 : 1, -1);
        if (r < 0 && errno != EINTR)
            return -1;
        if (idle && (p[1].revents & POLLIN))
            return -2;
    }
}

static int blocking_write(struct conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1; /* EPIPE, ECONNRESET: nginx closed; the client is gone */
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int blocking_sleep(struct conn *c, unsigned ms)
{
    (void)c;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return FCGATE_OK;
}

static int blocking_wait_fd(struct conn *c, int fd, short events, int timeout_ms)
{
    (void)c;
    struct pollfd p = {fd, events, 0};
    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r > 0)
            return FCGATE_OK;
        if (r == 0)
            return FCGATE_ETIMEDOUT;
        if (errno != EINTR)
            return FCGATE_EIO;
    }
}

static int blocking_db(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)c;
    return db_run(fn, arg);
}

static const struct conn_io blocking_io = {
    .read = blocking_read,
    .write = blocking_write,
    .sleep = blocking_sleep,
    .wait_fd = blocking_wait_fd,
    .db = blocking_db,
};

static int accept_set(struct worker *w)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -1;
    for (size_t i = 0; i <= w->nlisten; i++) {
        int fd = i < w->nlisten ? w->listen_fds[i] : w->stop_fd;
        struct epoll_event ev = {.events = EPOLLIN | (i < w->nlisten ? EPOLLEXCLUSIVE : 0),
                                 .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(ep);
            return -1;
        }
    }
    return ep;
}

void engine_sync_thread(struct worker *w, struct score_slot *slot)
{
    int ep = accept_set(w);
    if (ep < 0) {
        log_error("epoll: %s", strerror(errno));
        worker_stop(w);
        return;
    }
    while (!atomic_load(&w->stopping)) {
        struct epoll_event evs[CONFIG_MAX_LISTEN + 1];
        int n = epoll_wait(ep, evs, CONFIG_MAX_LISTEN + 1, -1);
        worker_poll_signals();
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n && !atomic_load(&w->stopping); i++) {
            if (evs[i].data.u32 >= w->nlisten)
                continue;
            int fd = accept4(w->listen_fds[evs[i].data.u32], NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE) {
                    /* Out of descriptors: pause rather than spin on a
                     * listen socket that stays readable. */
                    log_error("accept: %s; pausing 100 ms", strerror(errno));
                    blocking_sleep(NULL, 100);
                } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                    log_error("accept: %s", strerror(errno));
                }
                continue;
            }
            struct conn c = {.fd = fd, .w = w, .slot = slot, .io = &blocking_io};
            conn_serve(&c);
        }
    }
    close(ep);
}

void engine_sync_run(struct worker *w)
{
    engine_sync_thread(w, scoreboard_slot(w->sb, w->index, 0));
}

/*
 * engine_sync.c - blocking I/O: one connection at a time per thread.
 *
 * Used as is by sync mode (one thread) and by threads mode (several).
 * Each serving thread waits in its own epoll set holding the listen
 * sockets with EPOLLEXCLUSIVE, so a new connection wakes one waiter, not
 * the whole pool, plus the worker's stop eventfd. Reads try the socket
 * first and only wait when it is empty: with nginx's one-connection-per-
 * request default the request is usually there on accept.
 *
 * Idle kept-alive connections are parked in the worker's epoll set, not
 * held by a thread. A retiring worker hands them over (handoff.h): the
 * parked ones at once, the busy ones after their request.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRESH_WAIT_MS 5

static ssize_t blocking_read(struct conn *c, void *buf, size_t len, int idle)
{
    int fresh_waited = 0;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == ECONNRESET)
            return 0;
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        /* Between requests the thread does not wait on the connection:
         * it parks it and goes back to accepting, so idle kept-alive
         * connections never hold the pool. Inside a request it waits. */
        if (conn_stop_idle(c, idle))
            return CONN_READ_STOP;
        /* A connection just accepted carries its request in microseconds
         * (nginx writes right after connecting): waiting briefly is
         * cheaper than parking it and taking it back. */
        if (idle == CONN_IDLE_FRESH && !fresh_waited) {
            struct pollfd p = {c->fd, POLLIN, 0};
            fresh_waited = 1;
            if (poll(&p, 1, FRESH_WAIT_MS) > 0)
                continue;
        }
        if (idle)
            return CONN_READ_PARK;
        struct pollfd p = {c->fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return -1;
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

/* ---- the worker's epoll set ----
 *
 * One set per worker process, shared by its serving threads: the listen
 * sockets (EPOLLEXCLUSIVE, so one connection wakes one worker process,
 * not all of them), the stop eventfd, and parked connections. Threads
 * waiting on one epoll instance are woken one per event, and a parked
 * connection is EPOLLONESHOT, so exactly one thread takes it. Event data
 * below MAX_TAG is a listen socket's index (or STOP_TAG); anything else
 * is a parked struct conn.
 */
#define STOP_TAG CONFIG_MAX_LISTEN
#define HANDOFF_TAG (CONFIG_MAX_LISTEN + 1)
#define MAX_TAG 4096
#define ACCEPT_BURST 8

/* w->draining: what the first thread to see the worker stopping did. */
#define DRAIN_HANDING 1 /* intake stopped, idle connections handed over */
#define DRAIN_CLOSING 2 /* intake stopped, idle kept-alive ones woken to close */

static int watch(struct worker *w, int fd, uint64_t tag, uint32_t flags)
{
    struct epoll_event ev = {.events = EPOLLIN | flags, .data.u64 = tag};
    if (fd >= 0 && epoll_ctl(w->park_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_error("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int engine_sync_park_init(struct worker *w)
{
    w->parked = w->left = NULL;
    atomic_store(&w->draining, 0);
    pthread_mutex_init(&w->park_mu, NULL);
    w->park_ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->park_ep < 0) {
        log_error("epoll: %s", strerror(errno));
        return -1;
    }
    /* The listen sockets and the hand-over pair are shared with the other
     * workers (EPOLLEXCLUSIVE); the stop eventfd is the worker's own, and
     * level-triggered: once set it wakes every thread. */
    int rc = watch(w, w->stop_fd, STOP_TAG, 0);
    for (size_t i = 0; i < w->nlisten; i++)
        rc |= watch(w, w->listen_fds[i], i, EPOLLEXCLUSIVE);
    if (w->handoff)
        rc |= watch(w, w->handoff->rx, HANDOFF_TAG, EPOLLEXCLUSIVE);
    return rc;
}

static void park_unlink(struct worker *w, struct conn *c)
{
    if (c->park_prev)
        c->park_prev->park_next = c->park_next;
    else
        w->parked = c->park_next;
    if (c->park_next)
        c->park_next->park_prev = c->park_prev;
    c->park_prev = c->park_next = NULL;
}

/* The list is for closing or handing over what is parked when the worker
 * stops; the lock is held to link or unlink a connection, and for the
 * non-blocking hand-over, never across a wait. */
static void park(struct worker *w, struct conn *c)
{
    /* ADD here and DEL on the way out, rather than re-arming with MOD: an
     * ADD publishes everything this thread did to c before another
     * thread can take the event (and ThreadSanitizer sees it so). Under
     * the lock, so a hand-over never sees c linked but not yet added. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
    pthread_mutex_lock(&w->park_mu);
    int rc = epoll_ctl(w->park_ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (rc == 0) {
        c->parked = 1;
        c->park_prev = NULL;
        c->park_next = w->parked;
        if (w->parked)
            w->parked->park_prev = c;
        w->parked = c;
    }
    pthread_mutex_unlock(&w->park_mu);
    if (rc < 0) {
        log_error("epoll_ctl: %s; closing an idle connection", strerror(errno));
        conn_discard(c);
        free(c);
    }
}

/* A stopping worker with somewhere to hand over to sends its parked
 * connections there now, rather than when its last request is done. A
 * thread may hold an event for one of them already: c stays allocated
 * (on the left list, freed at exit) and unmarked, so that thread sees it
 * is no longer parked and lets go. */
static void hand_over_parked(struct worker *w)
{
    pthread_mutex_lock(&w->park_mu);
    while (w->parked) {
        struct conn *c = w->parked;
        park_unlink(w, c);
        c->parked = 0;
        epoll_ctl(w->park_ep, EPOLL_CTL_DEL, c->fd, NULL);
        conn_leave(c);
        c->park_next = w->left;
        w->left = c;
    }
    pthread_mutex_unlock(&w->park_mu);
}

/* Takes c, whose event this thread got, off the parked list: 0 when it
 * was handed over meanwhile (it is not ours then). */
static int unpark(struct worker *w, struct conn *c)
{
    pthread_mutex_lock(&w->park_mu);
    int was = c->parked;
    if (was) {
        park_unlink(w, c);
        c->parked = 0;
    }
    pthread_mutex_unlock(&w->park_mu);
    if (was)
        epoll_ctl(w->park_ep, EPOLL_CTL_DEL, c->fd, NULL);
    return was;
}

/* Serves c until it closes (freed) or parks again. */
static void serve(struct worker *w, struct conn *c, struct score_slot *slot)
{
    c->slot = slot;
    if (conn_serve(c) == CONN_PARKED)
        park(w, c);
    else
        free(c);
}

void engine_sync_park_fini(struct worker *w)
{
    while (w->parked) {
        struct conn *c = w->parked;
        park_unlink(w, c);
        conn_leave(c);
        free(c);
    }
    while (w->left) {
        struct conn *c = w->left;
        w->left = c->park_next;
        free(c);
    }
    if (w->park_ep >= 0)
        close(w->park_ep);
    pthread_mutex_destroy(&w->park_mu);
}

/* A new connection from listen socket lfd, or (lfd < 0) one handed over
 * by a retiring worker, served: 1; 0 when there was none. */
static int accept_one(struct worker *w, int lfd, struct score_slot *slot)
{
    int kept = 0;
    int fd = lfd >= 0 ? conn_accept(lfd, 0) : handoff_recv(w->handoff, &kept, 0);
    if (fd == CONN_ACCEPT_NOFD)
        blocking_sleep(NULL, 100);
    if (fd < 0)
        return 0;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("out of memory for a connection");
        close(fd);
        return 0;
    }
    *c = (struct conn){.fd = fd, .w = w, .io = &blocking_io};
    conn_init(c);
    c->served = (unsigned long)kept; /* kept: between requests, not fresh */
    serve(w, c, slot);
    return 1;
}

/* Out of the set: the listen sockets and the hand-over pair (the stop
 * eventfd too when told), so that the events they raise go to workers
 * that stay. */
static void stop_intake(struct worker *w, int stop_fd_too)
{
    for (size_t i = 0; i < w->nlisten; i++)
        epoll_ctl(w->park_ep, EPOLL_CTL_DEL, w->listen_fds[i], NULL);
    if (w->handoff && w->handoff->rx >= 0)
        epoll_ctl(w->park_ep, EPOLL_CTL_DEL, w->handoff->rx, NULL);
    if (stop_fd_too)
        epoll_ctl(w->park_ep, EPOLL_CTL_DEL, w->stop_fd, NULL);
}

/* The first thread to see the worker stopping takes the listen sockets
 * and the stop eventfd out of the set (they would stay readable) and
 * wakes every parked kept-alive connection with a read shutdown: each is
 * taken by a thread, reads EOF and closes. Fresh connections, not yet
 * asked anything, stay parked until their request arrives. */
static void begin_drain(struct worker *w)
{
    if (atomic_fetch_or(&w->draining, DRAIN_CLOSING) & DRAIN_CLOSING)
        return;
    stop_intake(w, 1);
    pthread_mutex_lock(&w->park_mu);
    for (struct conn *c = w->parked; c; c = c->park_next)
        if (c->served)
            shutdown(c->fd, SHUT_RD);
    pthread_mutex_unlock(&w->park_mu);
}

static int parked_left(struct worker *w)
{
    pthread_mutex_lock(&w->park_mu);
    int left = w->parked != NULL;
    pthread_mutex_unlock(&w->park_mu);
    return left;
}

void engine_sync_thread(struct worker *w, struct score_slot *slot)
{
    worker_thread_init(slot);
    for (;;) {
        int stopping = atomic_load(&w->stopping);
        if (stopping && handoff_is_open(w->handoff)) {
            /* What is parked leaves now; what is being served leaves
             * after its request (conn_serve). The stop eventfd stays in
             * the set: level-triggered, it wakes every thread. */
            if (!(atomic_fetch_or(&w->draining, DRAIN_HANDING) & DRAIN_HANDING)) {
                stop_intake(w, 0);
                conn_pass_on_pending(w);
            }
            hand_over_parked(w);
            break;
        }
        if (stopping) {
            begin_drain(w);
            if (!parked_left(w))
                break;
        }
        struct epoll_event ev;
        /* Without a hand-over, the drain takes the stop eventfd out of
         * the set: the threads look at `stopping` at least once a second
         * (every 100 ms while draining, when another thread may take the
         * last parked connection). */
        int n = epoll_wait(w->park_ep, &ev, 1, stopping ? 100 : 1000);
        worker_poll_signals();
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            worker_stop(w);
            break;
        }
        if (n != 1)
            continue;
        if (ev.data.u64 >= MAX_TAG) {
            struct conn *c = ev.data.ptr;
            if (unpark(w, c))
                serve(w, c, slot);
        } else if (ev.data.u64 < w->nlisten) {
            /* Under load the backlog is rarely empty: take the next
             * connections without waiting in epoll for each (a few, so
             * a parked connection's next request is not kept waiting). */
            for (int i = 0; i < ACCEPT_BURST && !atomic_load(&w->stopping); i++)
                if (!accept_one(w, w->listen_fds[ev.data.u64], slot))
                    break;
        } else if (ev.data.u64 == HANDOFF_TAG && !atomic_load(&w->stopping)) {
            accept_one(w, -1, slot);
        }
    }
    worker_thread_fini();
}

void engine_sync_run(struct worker *w)
{
    if (engine_sync_park_init(w) == 0)
        engine_sync_thread(w, scoreboard_slot(w->sb, w->index, 0));
    engine_sync_park_fini(w);
}

/*
 * engine_sync.c - blocking I/O: each serving thread takes one connection
 * at a time. sync mode is one such thread per worker, threads mode
 * `threads` of them; nothing else differs.
 *
 * The threads of a worker wait in one epoll set holding the intake
 * (listen sockets and hand-over pair, EPOLLEXCLUSIVE, so a new connection
 * wakes one worker process, not all of them), the stop eventfd, and the
 * parked connections. Threads waiting on one epoll instance are woken one
 * per event, and a parked connection is EPOLLONESHOT, so exactly one
 * thread takes it.
 *
 * Idle kept-alive connections are parked, not held by a thread, so they
 * never tie up the pool. No lock is shared on the request path: each
 * thread has its own scoreboard slot, read buffer and sqlite connection.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FRESH_WAIT_MS 5
#define ACCEPT_BURST 8
#define NOFD_PAUSE_MS 100
/* Event data below MAX_TAG is an intake source or STOP_TAG; anything
 * else is a parked struct bconn. */
#define STOP_TAG (CONFIG_MAX_LISTEN + 1)
#define MAX_TAG 4096

struct bconn {
    struct conn c;
    struct bengine *E;
    struct bconn *prev, *next; /* the parked list, or the left list */
    int parked;                /* on the parked list (under the engine's mu) */
    int registered;            /* in the epoll set (disarmed while served) */
    int fresh_waited;
};

struct bengine {
    struct worker *w;
    int ep;
    pthread_mutex_t mu; /* the parked list; never held across a wait */
    struct bconn *parked;
    struct bconn *left; /* let go while parked: freed at exit */
    atomic_int draining;
};

/* ---- waiting: the thread blocks ---- */

static int blocking_wait(struct conn *c, short events)
{
    struct pollfd p = {c->fd, events, 0};
    for (;;) {
        /* A second at a time: the thread keeps beating while it waits. */
        int r = poll(&p, 1, 1000);
        if (c->ch.slot)
            scoreboard_beat(c->ch.slot);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
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

static void blocking_unwatch(struct conn *c);

static const struct conn_ops blocking_ops = {
    .wait = blocking_wait,
    .sleep = blocking_sleep,
    .wait_fd = blocking_wait_fd,
    .db = blocking_db,
    .unwatch = blocking_unwatch,
};

/* ---- parking ---- */

static void list_unlink(struct bconn **head, struct bconn *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        *head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

static void list_push(struct bconn **head, struct bconn *b)
{
    b->prev = NULL;
    b->next = *head;
    if (*head)
        (*head)->prev = b;
    *head = b;
}

/* Registered once, EPOLLONESHOT, and re-armed with MOD on every park:
 * the event that takes b disarms it, so exactly one thread gets it, and
 * re-arming looks at readiness afresh (a request that came meanwhile
 * fires at once). Under the lock, which is also what orders everything
 * the parking thread did to b before the thread that takes it (and lets
 * ThreadSanitizer see so), and so that a release never sees b linked but
 * not yet armed. */
static void park(struct bengine *E, struct bconn *b)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = b};
    b->c.ch.slot = NULL;
    pthread_mutex_lock(&E->mu);
    int rc = epoll_ctl(E->ep, b->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, b->c.fd, &ev);
    if (rc == 0) {
        b->registered = 1;
        b->parked = 1;
        list_push(&E->parked, b);
        if (atomic_load(&E->draining)) /* see release_idle */
            epoll_ctl(E->ep, EPOLL_CTL_DEL, E->w->stop_fd, NULL);
    }
    pthread_mutex_unlock(&E->mu);
    if (rc < 0) {
        log_error("epoll_ctl: %s; closing an idle connection", strerror(errno));
        conn_close(&b->c);
        free(b);
    }
}

/* Takes b, whose event this thread got, off the parked list: 0 when it
 * was let go meanwhile (it is not ours then). */
static int unpark(struct bengine *E, struct bconn *b)
{
    pthread_mutex_lock(&E->mu);
    int was = b->parked;
    if (was) {
        list_unlink(&E->parked, b);
        b->parked = 0;
    }
    pthread_mutex_unlock(&E->mu);
    return was;
}

/* Only a handed-over socket needs it: closing the last descriptor of one
 * takes it out of the set by itself. */
static void blocking_unwatch(struct conn *c)
{
    struct bconn *b = (struct bconn *)((char *)c - offsetof(struct bconn, c));
    if (b->registered)
        epoll_ctl(b->E->ep, EPOLL_CTL_DEL, c->fd, NULL);
    b->registered = 0;
}

static int parked_left(struct bengine *E)
{
    pthread_mutex_lock(&E->mu);
    int left = E->parked != NULL;
    pthread_mutex_unlock(&E->mu);
    return left;
}

/* ---- serving ---- */

/* Serves b until it is gone (freed) or idle (parked). */
static void serve(struct bengine *E, struct bconn *b, struct score_slot *slot)
{
    b->c.ch.slot = slot;
    while (drain_serve(E->w, &b->c, 1) == CONN_IDLE) {
        /* A connection just accepted carries its request in microseconds
         * (nginx writes right after connecting): waiting briefly is
         * cheaper than parking it and taking it back. */
        struct pollfd p = {b->c.fd, POLLIN, 0};
        if (b->c.served == 0 && !b->fresh_waited) {
            b->fresh_waited = 1;
            if (poll(&p, 1, FRESH_WAIT_MS) > 0)
                continue;
        }
        park(E, b);
        return;
    }
    free(b);
}

/* New connections from intake source src, served: a few per wake-up, so
 * a busy backlog does not cost an epoll_wait each, and a parked
 * connection's next request is not kept waiting long. */
static void take(struct bengine *E, size_t src, struct score_slot *slot)
{
    for (int i = 0; i < ACCEPT_BURST && !drain_stopping(E->w); i++) {
        int fd, kept;
        enum intake_result r = intake_take(E->w, src, &fd, &kept);
        if (r == INTAKE_NOFD)
            blocking_sleep(NULL, NOFD_PAUSE_MS);
        if (r != INTAKE_OK)
            return;
        struct bconn *b = malloc(sizeof(*b));
        if (!b) {
            log_error("out of memory for a connection");
            close(fd);
            return;
        }
        b->E = E;
        b->prev = b->next = NULL;
        b->parked = b->registered = b->fresh_waited = 0;
        conn_init(&b->c, fd, &blocking_ops, &E->w->env, kept);
        serve(E, b, slot);
    }
}

/* ---- stopping: drain.c decides, these carry it out ---- */

static void stop_intake(void *e)
{
    struct bengine *E = e;
    epoll_data_t tags[CONFIG_MAX_LISTEN + 1];
    memset(tags, 0, sizeof(tags));
    intake_watch(E->w, E->ep, 0, tags);
}

/* A thread may hold an event for a connection let go here: it stays
 * allocated (on the left list, freed at exit) and unmarked, so that
 * thread sees it is no longer parked and lets go too. */
static void release_idle(void *e)
{
    struct bengine *E = e;
    pthread_mutex_lock(&E->mu);
    for (struct bconn *b = E->parked, *next; b; b = next) {
        next = b->next;
        if (!drain_should_leave(E->w, &b->c))
            continue;
        list_unlink(&E->parked, b);
        b->parked = 0;
        blocking_unwatch(&b->c);
        drain_leave(E->w, &b->c);
        list_push(&E->left, b);
    }
    /* The stop eventfd is level-triggered: while it is in the set, every
     * thread wakes and leaves. Fresh connections still waiting for their
     * first request keep the threads; they look every 100 ms instead. */
    if (E->parked)
        epoll_ctl(E->ep, EPOLL_CTL_DEL, E->w->stop_fd, NULL);
    pthread_mutex_unlock(&E->mu);
}

static const struct drain_ops blocking_drain = {
    .stop_intake = stop_intake,
    .release_idle = release_idle,
};

static void dispatch(struct bengine *E, const struct epoll_event *ev, struct score_slot *slot)
{
    uint64_t tag = ev->data.u64;
    if (tag >= MAX_TAG) {
        struct bconn *b = ev->data.ptr;
        if (unpark(E, b))
            serve(E, b, slot);
    } else if (tag < intake_sources(E->w)) {
        take(E, (size_t)tag, slot);
    }
}

static void serve_thread(struct bengine *E, struct score_slot *slot)
{
    struct worker *w = E->w;
    scoreboard_thread_enter(slot);
    for (;;) {
        int stopping = drain_stopping(w);
        if (stopping) {
            if (!atomic_exchange(&E->draining, 1))
                drain_begin(w, &blocking_drain, E);
            if (!parked_left(E))
                break;
        }
        struct epoll_event ev;
        int n = epoll_wait(E->ep, &ev, 1, stopping ? 100 : 1000);
        scoreboard_beat(slot);
        log_poll_reopen();
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            drain_stop(w);
            break;
        }
        if (n == 1)
            dispatch(E, &ev, slot);
    }
    scoreboard_thread_leave();
}

static int engine_init(struct bengine *E, struct worker *w)
{
    epoll_data_t tags[CONFIG_MAX_LISTEN + 1];
    memset(E, 0, sizeof(*E));
    E->w = w;
    pthread_mutex_init(&E->mu, NULL);
    E->ep = epoll_create1(EPOLL_CLOEXEC);
    if (E->ep < 0) {
        log_error("epoll: %s", strerror(errno));
        return -1;
    }
    for (size_t src = 0; src < intake_sources(w); src++)
        tags[src].u64 = src;
    struct epoll_event stop = {.events = EPOLLIN, .data.u64 = STOP_TAG};
    if (epoll_ctl(E->ep, EPOLL_CTL_ADD, w->stop_fd, &stop) < 0) {
        log_error("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return intake_watch(w, E->ep, 1, tags);
}

static void engine_fini(struct bengine *E)
{
    while (E->parked) {
        struct bconn *b = E->parked;
        list_unlink(&E->parked, b);
        drain_leave(E->w, &b->c);
        free(b);
    }
    while (E->left) {
        struct bconn *b = E->left;
        list_unlink(&E->left, b);
        free(b);
    }
    if (E->ep >= 0)
        close(E->ep);
    pthread_mutex_destroy(&E->mu);
}

struct thread_arg {
    struct bengine *E;
    struct score_slot *slot;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    serve_thread(a->E, a->slot);
    db_close_thread();
    return NULL;
}

/* The calling thread serves too: sync mode starts no thread. */
static void run_threads(struct bengine *E, size_t n)
{
    struct worker *w = E->w;
    pthread_t *tids = calloc(n, sizeof(*tids));
    struct thread_arg *args = calloc(n, sizeof(*args));
    size_t started = 1;

    if (!tids || !args) {
        log_error("out of memory starting %zu threads", n);
        goto out;
    }
    for (size_t t = 0; t < n; t++)
        args[t] = (struct thread_arg){E, scoreboard_slot(w->sb, w->index, t)};
    for (; started < n; started++) {
        int rc = pthread_create(&tids[started], NULL, thread_main, &args[started]);
        if (rc != 0) {
            log_error("cannot start serving thread %zu: %s", started, strerror(rc));
            drain_stop(w);
            break;
        }
    }
    serve_thread(E, args[0].slot);
    for (size_t t = 1; t < started; t++)
        pthread_join(tids[t], NULL);
out:
    free(tids);
    free(args);
}

static void blocking_run(struct worker *w)
{
    struct bengine E;
    if (engine_init(&E, w) == 0)
        run_threads(&E, w->engine->slots(w->cfg));
    engine_fini(&E);
}

static size_t one(const struct config *cfg)
{
    (void)cfg;
    return 1;
}

static unsigned one_request(const struct config *cfg)
{
    (void)cfg;
    return 1;
}

static size_t thread_slots(const struct config *cfg)
{
    return (size_t)cfg->threads;
}

static unsigned thread_requests(const struct config *cfg)
{
    return (unsigned)cfg->threads;
}

const struct engine engine_sync = {
    .name = "sync",
    .unit = "request at a time",
    .beater = "serving thread",
    .threadsafe = 0,
    .slots = one,
    .concurrency = one_request,
    .run = blocking_run,
};

const struct engine engine_threads = {
    .name = "threads",
    .unit = "threads",
    .beater = "serving thread",
    .threadsafe = 1,
    .slots = thread_slots,
    .concurrency = thread_requests,
    .run = blocking_run,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine_sync.c - blocking I/O: each serving thread takes one connection
 * at a time. sync mode is one such thread per worker, threads mode
 * `threads` of them; nothing else differs.
 *
 * A worker's threads share one epoll set holding the intake (listen
 * sockets and hand-over pair, EPOLLEXCLUSIVE, so a new connection wakes
 * one worker process, not all of them), the stop eventfd, and the parked
 * connections. One thread at a time waits in it, the leader; the others
 * wait their turn on a condition variable (leader/followers). The leader
 * takes one event, hands the lead to a follower once it has taken what
 * the event names (accepted the connection, unparked the connection) and
 * serves it. With all threads in epoll_wait instead, a level-triggered
 * listen socket woke them in a cascade (each event returned re-arms it and
 * wakes the next waiter) and all but one found accept() empty: 14 failed
 * accepts per request served at 8 connections, 8 threads. A parked
 * connection is EPOLLONESHOT, so exactly one thread takes it.
 *
 * Idle kept-alive connections are parked, not held by a thread, so they
 * never tie up the pool. No lock is shared on the request path: each
 * thread has its own scoreboard slot, read buffer and sqlite connection.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FRESH_WAIT_MS 5
#define ACCEPT_BURST 8
#define NOFD_PAUSE_MS 100
#define SWEEP_MS 1000
/* Event data: below MAX_TAG an intake source or STOP_TAG; else a parked
 * connection's handle, (generation << 32) | (MAX_TAG + index). */
#define STOP_TAG (CONFIG_MAX_LISTEN + 1)
#define MAX_TAG 4096
#define NO_HANDLE UINT32_MAX

struct bconn {
    struct conn c;
    struct bengine *E;
    struct bconn *prev, *next; /* the parked list */
    uint32_t handle;           /* index in the engine's handles, NO_HANDLE: none */
    int parked;                /* on the parked list (under the engine's mu) */
    int arming;                /* being re-armed by park, outside the lock (under mu) */
    int fired;                 /* its event came while arming: park serves it (under mu) */
    int registered;            /* in the epoll set (disarmed while served) */
    int fresh_waited;
    uint64_t parked_ms; /* since when it waits for its next request */
};

/* An event may reach a thread after the connection it names is gone (let
 * go by another thread meanwhile): events carry a handle, not a pointer,
 * and a handle whose generation moved on names nothing. */
struct handle {
    struct bconn *b;
    uint32_t gen;
    uint32_t next_free;
};

/* Each thread's connection, for a rescue; a lock of its own, so that
 * serving takes no lock another thread wants. */
struct serving {
    pthread_mutex_t mu;
    struct bconn *b;
};

struct bengine {
    struct worker *w;
    struct serving *serving; /* per thread */
    size_t nserving;
    int ep;
    pthread_mutex_t mu; /* the parked list and the handles; never held across a wait */
    struct bconn *parked;
    struct handle *handles;
    uint32_t nhandles, free_handle;
    atomic_int draining;
    _Atomic uint64_t next_sweep_ms;
    /* Leader/followers: who waits in ep (under lead_mu). */
    pthread_mutex_t lead_mu;
    int led;                     /* a thread is the leader */
    struct follower *followers;  /* waiting for the lead, latest first */
};

/* A thread waiting for the lead, on its own stack: woken alone, by a
 * futex on go, when the leader hands the lead to it. */
struct follower {
    _Atomic uint32_t go;
    struct follower *next;
};

/* ---- the lead: one thread waits in the epoll set ---- */

static void unlink_follower(struct bengine *E, struct follower *me)
{
    for (struct follower **f = &E->followers; *f; f = &(*f)->next) {
        if (*f == me) {
            *f = me->next;
            return;
        }
    }
}

/* Waits to lead, at most 1 s (the thread beats in between): 1 when this
 * thread is the leader now. sync mode has one thread: always. */
static int lead_take(struct bengine *E)
{
    struct follower me = {0, NULL};
    struct timespec second = {1, 0};

    if (E->nserving == 1)
        return 1; /* nobody to share the lead with: no lock on the request path */
    pthread_mutex_lock(&E->lead_mu);
    if (!E->led) {
        E->led = 1;
        pthread_mutex_unlock(&E->lead_mu);
        return 1;
    }
    me.next = E->followers;
    E->followers = &me;
    pthread_mutex_unlock(&E->lead_mu);
    /* A wake-up for an earlier use of this stack address, or a signal,
     * returns early: the lock below says what happened. */
    syscall(SYS_futex, &me.go, FUTEX_WAIT_PRIVATE, 0, &second, NULL, 0);
    pthread_mutex_lock(&E->lead_mu);
    int took = atomic_load(&me.go) != 0; /* handed over: off the list already */
    if (!took)
        unlink_follower(E, &me);
    pthread_mutex_unlock(&E->lead_mu);
    return took;
}

/* The leader hands the lead to the latest follower (its cache is the
 * warmest), or leaves it free; a no-op for a thread not leading. */
static void lead_pass(struct bengine *E, int *leading)
{
    if (!*leading)
        return;
    *leading = 0;
    if (E->nserving == 1)
        return;
    pthread_mutex_lock(&E->lead_mu);
    struct follower *f = E->followers;
    if (f) {
        E->followers = f->next;
        atomic_store(&f->go, 1);
    } else {
        E->led = 0;
    }
    pthread_mutex_unlock(&E->lead_mu);
    /* f may have seen go and gone on (its wait timed out): waking a stale
     * address wakes nobody, or a later follower there, which finds its
     * own go unset and waits again. */
    if (f)
        syscall(SYS_futex, &f->go, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- waiting: the thread blocks ---- */

static enum conn_wait blocking_wait(struct conn *c, short events, int timeout_ms)
{
    struct pollfd p = {c->fd, events, 0};
    uint64_t deadline = monotonic_ms() + (uint64_t)timeout_ms;
    for (;;) {
        /* A second at a time: the thread keeps beating while it waits. */
        uint64_t now = monotonic_ms();
        if (now >= deadline)
            return CONN_WAIT_TIMEOUT;
        int r = poll(&p, 1, deadline - now < 1000 ? (int)(deadline - now) : 1000);
        if (c->ch.slot)
            scoreboard_beat(c->ch.slot);
        if (r > 0)
            return CONN_WAIT_READY;
        if (r < 0 && errno != EINTR)
            return CONN_WAIT_FAILED;
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
    return fd_wait(fd, events, timeout_ms);
}

static int blocking_db(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)c;
    return db_run(fn, arg);
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

static const struct conn_ops blocking_ops = {
    .wait = blocking_wait,
    .sleep = blocking_sleep,
    .wait_fd = blocking_wait_fd,
    .db = blocking_db,
    .unwatch = blocking_unwatch,
};

/* ---- handles and the parked list (under mu) ---- */

static uint64_t handle_tag(const struct bengine *E, uint32_t i)
{
    return (uint64_t)E->handles[i].gen << 32 | (uint64_t)(MAX_TAG + i);
}

static int handle_take(struct bengine *E, struct bconn *b)
{
    if (E->free_handle == NO_HANDLE) {
        uint32_t n = E->nhandles ? E->nhandles * 2 : 64;
        struct handle *h = realloc(E->handles, n * sizeof(*h));
        if (!h || n > UINT32_MAX - MAX_TAG)
            return -1;
        for (uint32_t i = E->nhandles; i < n; i++)
            h[i] = (struct handle){NULL, 1, i + 1 < n ? i + 1 : NO_HANDLE};
        E->handles = h;
        E->free_handle = E->nhandles;
        E->nhandles = n;
    }
    b->handle = E->free_handle;
    E->free_handle = E->handles[b->handle].next_free;
    E->handles[b->handle].b = b;
    return 0;
}

static void handle_drop(struct bengine *E, struct bconn *b)
{
    if (b->handle == NO_HANDLE)
        return;
    struct handle *h = &E->handles[b->handle];
    h->b = NULL;
    h->gen++;
    h->next_free = E->free_handle;
    E->free_handle = b->handle;
    b->handle = NO_HANDLE;
}

static void list_unlink(struct bengine *E, struct bconn *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        E->parked = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
    b->parked = 0;
}

static void list_push(struct bengine *E, struct bconn *b)
{
    b->prev = NULL;
    b->next = E->parked;
    if (E->parked)
        E->parked->prev = b;
    E->parked = b;
    b->parked = 1;
}

/* Frees b, gone (closed or handed over): its handle names nothing now. */
static void forget(struct bengine *E, struct bconn *b)
{
    if (b->handle != NO_HANDLE) {
        pthread_mutex_lock(&E->mu);
        handle_drop(E, b);
        pthread_mutex_unlock(&E->mu);
    }
    free(b);
}

/* Registered once, EPOLLONESHOT, and re-armed with MOD on every park:
 * the event that takes b disarms it, so exactly one thread gets it, and
 * re-arming looks at readiness afresh (a request that came meanwhile
 * fires at once). The MOD is made outside the lock, which the other
 * threads would otherwise queue on for a system call's time: an event
 * that reaches another thread before b is linked finds it arming, marks
 * it fired and leaves it, and the parking thread serves it itself
 * (returns 1). Every hand-over of b between threads still goes through
 * the lock, which orders what one thread did to b before the next (and
 * lets ThreadSanitizer see so); a release never sees b armed but not
 * linked, since it only walks the list.
 *
 * sync mode has one thread, which looks at the set only between
 * requests: b stays registered level-triggered from its first park on,
 * and parking costs no system call. */
static int park(struct bengine *E, struct bconn *b)
{
    int oneshot = E->nserving > 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (oneshot ? EPOLLONESHOT : 0)};
    int rc = -1;
    b->c.ch.slot = NULL;
    b->parked_ms = monotonic_ms();
    pthread_mutex_lock(&E->mu);
    if (b->handle != NO_HANDLE || handle_take(E, b) == 0) {
        ev.data.u64 = handle_tag(E, b->handle);
        b->arming = 1;
        b->fired = 0;
        rc = 0;
    }
    pthread_mutex_unlock(&E->mu);
    if (rc == 0 && (oneshot || !b->registered))
        rc = epoll_ctl(E->ep, b->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, b->c.fd, &ev);
    int err = errno, again = 0;
    pthread_mutex_lock(&E->mu);
    b->arming = 0;
    if (rc == 0) {
        b->registered = 1;
        again = b->fired;
        if (!again) {
            list_push(E, b);
            if (atomic_load(&E->draining)) /* see release_idle */
                epoll_ctl(E->ep, EPOLL_CTL_DEL, E->w->stop_fd, NULL);
        }
    } else {
        handle_drop(E, b);
    }
    pthread_mutex_unlock(&E->mu);
    if (rc < 0) {
        log_error("cannot park an idle connection (%s); closing it", strerror(err));
        conn_close(&b->c);
        free(b);
    }
    return again;
}

/* The parked connection an event names, taken off the list; NULL when it
 * was let go meanwhile. */
static struct bconn *unpark(struct bengine *E, uint64_t tag)
{
    uint32_t i = (uint32_t)tag - MAX_TAG, gen = (uint32_t)(tag >> 32);
    struct bconn *b = NULL;
    pthread_mutex_lock(&E->mu);
    if (i < E->nhandles && E->handles[i].gen == gen && E->handles[i].b) {
        b = E->handles[i].b;
        if (b->parked) {
            list_unlink(E, b);
        } else {
            b->fired |= b->arming; /* its parking thread serves it (park) */
            b = NULL;
        }
    }
    pthread_mutex_unlock(&E->mu);
    return b;
}

static int parked_left(struct bengine *E)
{
    pthread_mutex_lock(&E->mu);
    int left = E->parked != NULL;
    pthread_mutex_unlock(&E->mu);
    return left;
}

/* Lets parked b go (under mu): handed over or closed by drain.c's rules
 * when stopping, closed when it waited too long. */
static void let_go(struct bengine *E, struct bconn *b, int expired)
{
    list_unlink(E, b);
    handle_drop(E, b);
    if (expired) {
        drain_expire(E->w, &b->c);
    } else {
        blocking_unwatch(&b->c);
        drain_leave(E->w, &b->c);
    }
    free(b);
}

/* Once a second, one thread closes the connections idle past their limit
 * (drain_idle_limit_ms). */
static void sweep(struct bengine *E)
{
    uint64_t now = monotonic_ms(), next = atomic_load(&E->next_sweep_ms);
    if (now < next || !atomic_compare_exchange_strong(&E->next_sweep_ms, &next, now + SWEEP_MS))
        return;
    pthread_mutex_lock(&E->mu);
    /* Read again under the lock: a connection parked since the first
     * reading would look parked for 2^64 ms. */
    now = monotonic_ms();
    for (struct bconn *b = E->parked, *nb; b; b = nb) {
        nb = b->next;
        if (now > b->parked_ms && now - b->parked_ms > (uint64_t)drain_idle_limit_ms(E->w, &b->c))
            let_go(E, b, 1);
    }
    pthread_mutex_unlock(&E->mu);
    drain_report(E->w);
}

/* ---- serving ---- */

static size_t thread_of(const struct bengine *E, const struct score_slot *slot)
{
    return (size_t)(slot - scoreboard_slot(E->w->sb, E->w->row, 0));
}

/* Only a mode that retires on timeout rescues (sync has no other thread
 * to do it): the others take no lock for it on the request path. */
static void set_serving(struct bengine *E, const struct score_slot *slot, struct bconn *b)
{
    if (!E->w->engine->retire_on_timeout)
        return;
    struct serving *s = &E->serving[thread_of(E, slot)];
    pthread_mutex_lock(&s->mu);
    s->b = b;
    pthread_mutex_unlock(&s->mu);
}

static enum conn_result serve_once(struct bengine *E, struct bconn *b, struct score_slot *slot)
{
    set_serving(E, slot, b);
    enum conn_result r = drain_serve(E->w, &b->c, 1);
    set_serving(E, slot, NULL);
    return r;
}

/* Serves b until it is gone (freed) or idle (parked). */
static void serve(struct bengine *E, struct bconn *b, struct score_slot *slot)
{
    enum conn_result r;
    do {
        b->c.ch.slot = slot;
        r = serve_once(E, b, slot);
        /* A connection just accepted carries its request in microseconds
         * (nginx writes right after connecting): waiting briefly is
         * cheaper than parking it and taking it back. */
        if (r == CONN_IDLE && b->c.served == 0 && !b->fresh_waited) {
            struct pollfd p = {b->c.fd, POLLIN, 0};
            b->fresh_waited = 1;
            if (poll(&p, 1, FRESH_WAIT_MS) > 0)
                r = serve_once(E, b, slot);
        }
        if (r != CONN_IDLE) {
            forget(E, b);
            return;
        }
    } while (park(E, b));
}

/* The supervisor retired this worker for a thread's request over
 * timeout: another thread answers it 504 if it still can. */
static void rescue(struct bengine *E)
{
    size_t n = E->w->engine->slots(E->w->cfg);
    for (size_t t = 0; t < n; t++) {
        struct score_slot *s = scoreboard_slot(E->w->sb, E->w->row, t);
        pthread_mutex_lock(&E->serving[t].mu);
        struct bconn *b = E->serving[t].b;
        if (b && atomic_load(&s->cancel) && conn_rescue(&b->c))
            log_error("%s over timeout: answered 504 for it", b->c.ch.what);
        pthread_mutex_unlock(&E->serving[t].mu);
    }
}

/* New connections from intake source src, served: a few per wake-up, so
 * a busy backlog does not cost an epoll_wait each, and a parked
 * connection's next request is not kept waiting long. */
static void take(struct bengine *E, size_t src, struct score_slot *slot, int *leading)
{
    for (int i = 0; i < ACCEPT_BURST && !drain_stopping(E->w); i++) {
        int fd, kept;
        enum intake_result r = intake_take(E->w, src, &fd, &kept);
        /* Taken (or found gone): the next leader's epoll_wait sees the
         * socket afresh, not the connection this thread has. */
        lead_pass(E, leading);
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
        conn_init(&b->c, fd, &blocking_ops, &E->w->env, kept);
        b->E = E;
        b->prev = b->next = NULL;
        b->handle = NO_HANDLE;
        b->parked = b->registered = b->fresh_waited = 0;
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

static void release_idle(void *e)
{
    struct bengine *E = e;
    rescue(E);
    pthread_mutex_lock(&E->mu);
    for (struct bconn *b = E->parked, *next; b; b = next) {
        next = b->next;
        if (drain_should_leave(E->w, &b->c))
            let_go(E, b, 0);
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

/* Called leading; passes the lead on as soon as the event is taken. */
static void dispatch(struct bengine *E, const struct epoll_event *ev, struct score_slot *slot,
                     int *leading)
{
    uint64_t tag = ev->data.u64;
    if ((uint32_t)tag >= MAX_TAG) {
        struct bconn *b = unpark(E, tag);
        lead_pass(E, leading);
        if (b)
            serve(E, b, slot);
    } else if (tag < intake_sources(E->w)) {
        take(E, (size_t)tag, slot, leading);
    }
    lead_pass(E, leading);
}

static void serve_thread(struct bengine *E, struct score_slot *slot)
{
    struct worker *w = E->w;
    scoreboard_thread_enter(slot, scoreboard_stack(w->sb, w->row));
    for (;;) {
        int stopping = drain_stopping(w);
        if (stopping) {
            if (!atomic_exchange(&E->draining, 1))
                drain_begin(w, &blocking_drain, E);
            if (!parked_left(E))
                break;
        }
        struct epoll_event ev;
        int leading = lead_take(E), n = 0;
        if (leading)
            n = epoll_wait(E->ep, &ev, 1, stopping ? 100 : 1000);
        scoreboard_beat(slot);
        log_poll_reopen();
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            lead_pass(E, &leading);
            drain_stop(w);
            break;
        }
        if (n == 1)
            dispatch(E, &ev, slot, &leading);
        lead_pass(E, &leading);
        sweep(E);
    }
    scoreboard_thread_leave();
}

static int engine_init(struct bengine *E, struct worker *w)
{
    epoll_data_t tags[CONFIG_MAX_LISTEN + 1];
    memset(E, 0, sizeof(*E));
    E->w = w;
    E->ep = -1;
    E->free_handle = NO_HANDLE;
    pthread_mutex_init(&E->mu, NULL);
    pthread_mutex_init(&E->lead_mu, NULL);
    E->nserving = w->engine->slots(w->cfg);
    E->serving = calloc(E->nserving, sizeof(*E->serving));
    if (!E->serving) {
        log_error("out of memory");
        return -1;
    }
    for (size_t t = 0; t < E->nserving; t++)
        pthread_mutex_init(&E->serving[t].mu, NULL);
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
    while (E->parked)
        let_go(E, E->parked, 0);
    free(E->handles);
    for (size_t t = 0; E->serving && t < E->nserving; t++)
        pthread_mutex_destroy(&E->serving[t].mu);
    free(E->serving);
    if (E->ep >= 0)
        close(E->ep);
    pthread_mutex_destroy(&E->mu);
    pthread_mutex_destroy(&E->lead_mu);
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
    pg_close_thread();
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
        args[t] = (struct thread_arg){E, scoreboard_slot(w->sb, w->row, t)};
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
    .retire_on_timeout = 1,
    .threadsafe = 1,
    .slots = thread_slots,
    .concurrency = thread_requests,
    .run = blocking_run,
};

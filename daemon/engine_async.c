/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine_async.c - one event-loop thread per worker; every connection runs
 * in its own coroutine.
 *
 * The coroutine runs the same conn_serve() as the blocking engines; only
 * its conn_io differs: where a blocking engine would wait, the coroutine
 * registers what it waits for and switches back to the loop. Sockets are
 * registered once, edge-triggered, and always tried before waiting, so an
 * edge cannot be missed. fcgate_db runs on the blocking pool; sleeps and
 * timeouts live in a binary heap keyed by deadline.
 *
 * `worker_connections` bounds connections per worker: at the bound the
 * listen sockets leave the epoll set, and new connections wait in the
 * kernel backlog until a slot frees. Stacks of finished connections are
 * kept for reuse, so a connection per request (nginx's default) costs no
 * mmap.
 */
#include "blocking_pool.h"
#include "coro.h"
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCKED_WARN_MS 100
#define STACK_CACHE 256
#define ACCEPT_BURST 64

#define NOFD_PAUSE_US 100000

enum src_kind { SRC_INTAKE, SRC_STOP, SRC_POOL, SRC_CONN, SRC_WAITFD };

struct src {
    enum src_kind kind;
    size_t index; /* SRC_INTAKE: the source (intake.c) */
};

struct aconn {
    struct src src;    /* the connection's socket (first: epoll data) */
    struct src waitfd; /* an fd the app waits on, fcgate_wait_fd */
    struct conn c;
    struct coro co;
    struct loop *L;
    uint32_t want;  /* EPOLLIN / EPOLLOUT the coroutine waits for, 0: none */
    int idle_wait;  /* waiting for its next request: may be told to leave */
    int waiting_fd; /* parked in fcgate_wait_fd */
    int fd_ready;
    uint64_t deadline; /* timer (monotonic us), when heap_idx is set */
    size_t heap_idx;   /* 1-based position in the timer heap, 0: none */
    int timer_fired;   /* the timer resumed it (not readiness) */
    int done;
    int in_pool;               /* waiting for a blocking-pool job */
    int parked, unparked;      /* in async_park; another request woke it */
    struct aconn *ready_prev, *ready_next; /* on the ready list (woken, not yet run) */
    int on_ready;
    uint64_t wait_since_ms;    /* it last yielded to the loop */
    uint64_t slow_start_ms;    /* start_ms of its request the slow log has seen */
    struct aconn *prev, *next; /* all connections, or the free list */
};

struct loop {
    struct worker *w;
    struct score_slot *slot;
    int ep;
    struct coro main;
    struct src intake_src[CONFIG_MAX_LISTEN + 1], stop_src, pool_src;
    struct blocking_pool pool;
    struct aconn *conns, *free_list;
    struct aconn *retired; /* finished during this batch of events */
    struct aconn *ready, *ready_tail; /* unparked: run before the next wait */
    size_t nconns, nfree, max_conns;
    size_t stack_size;
    int accepting, stopping;
    uint64_t accept_retry_us; /* out of descriptors: accept again then, 0: not paused */
    struct aconn **heap;
    size_t nheap, capheap;
    uint64_t next_timeout_check, next_slow_check;
    int have_pwait2;
    int pool_busy; /* jobs queued: look at the pool within 1 ms */
};

/* ---- timers: a min-heap of connections by deadline ---- */

static void heap_swap(struct loop *L, size_t i, size_t j)
{
    struct aconn *t = L->heap[i];
    L->heap[i] = L->heap[j];
    L->heap[j] = t;
    L->heap[i]->heap_idx = i + 1;
    L->heap[j]->heap_idx = j + 1;
}

static void heap_fix(struct loop *L, size_t i)
{
    while (i > 0 && L->heap[(i - 1) / 2]->deadline > L->heap[i]->deadline) {
        heap_swap(L, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < L->nheap && L->heap[l]->deadline < L->heap[m]->deadline)
            m = l;
        if (r < L->nheap && L->heap[r]->deadline < L->heap[m]->deadline)
            m = r;
        if (m == i)
            return;
        heap_swap(L, i, m);
        i = m;
    }
}

static int timer_add(struct loop *L, struct aconn *a, uint64_t deadline)
{
    if (L->nheap == L->capheap) {
        size_t cap = L->capheap ? L->capheap * 2 : 64;
        struct aconn **h = realloc(L->heap, cap * sizeof(*h));
        if (!h)
            return -1;
        L->heap = h;
        L->capheap = cap;
    }
    a->deadline = deadline;
    L->heap[L->nheap] = a;
    a->heap_idx = ++L->nheap;
    heap_fix(L, L->nheap - 1);
    return 0;
}

static void timer_del(struct loop *L, struct aconn *a)
{
    if (!a->heap_idx)
        return;
    size_t i = a->heap_idx - 1;
    a->heap_idx = 0;
    if (i != --L->nheap) {
        L->heap[i] = L->heap[L->nheap];
        L->heap[i]->heap_idx = i + 1;
        heap_fix(L, i);
    }
}

/* ---- switching ---- */

static void yield(struct aconn *a)
{
    a->wait_since_ms = monotonic_ms();
    coro_switch(&a->co, &a->L->main);
}

static void conn_retire(struct loop *L, struct aconn *a);

/* Runs a until it waits again; warns when it held the loop too long (the
 * equivalent of gevent's blocking detector: a handler that waits without
 * fcgate_sleep / fcgate_db / fcgate_wait_fd stalls every request here). */
static void resume(struct loop *L, struct aconn *a)
{
    /* The scoreboard names the request the loop is running, so a crash or
     * a stuck loop is blamed on it (and `timeout` applies to the loop). */
    if (a->c.ch.method)
        scoreboard_begin(L->slot, a->c.ch.method, a->c.ch.path);
    uint64_t t0 = monotonic_ms();
    scoreboard_thread_guard(a->co.map, (char *)a->co.stack_lo);
    coro_switch(&L->main, &a->co);
    scoreboard_thread_guard(NULL, NULL);
    uint64_t dt = monotonic_ms() - t0;
    scoreboard_idle(L->slot);
    if (dt > BLOCKED_WARN_MS)
        log_warn("event loop blocked for %llu ms by %s: the handler waited without "
                 "fcgate_sleep, fcgate_db or fcgate_wait_fd",
                 (unsigned long long)dt, a->c.ch.what[0] ? a->c.ch.what : "(no request)");
    if (a->done)
        conn_retire(L, a);
}

/* ---- waiting: the coroutine yields to the loop ---- */

/* Yields until the socket is ready for want or timeout_ms pass: 1 when
 * the time ran out. */
static int wait_socket(struct aconn *a, uint32_t want, int timeout_ms)
{
    a->timer_fired = 0;
    if (timer_add(a->L, a, monotonic_us() + (uint64_t)timeout_ms * 1000u) < 0)
        log_error("out of memory for a timer; a wait goes unbounded");
    a->want = want;
    yield(a);
    a->want = 0;
    timer_del(a->L, a);
    return a->timer_fired;
}

static enum conn_wait async_wait(struct conn *c, short events, int timeout_ms)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    int expired = wait_socket(a, events & POLLOUT ? EPOLLOUT : EPOLLIN, timeout_ms);
    if (c->ch.cancelled)
        return CONN_WAIT_FAILED;
    return expired ? CONN_WAIT_TIMEOUT : CONN_WAIT_READY;
}

static int async_sleep(struct conn *c, unsigned ms)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    if (c->ch.cancelled)
        return FCGATE_ETIMEDOUT;
    if (timer_add(a->L, a, monotonic_us() + (uint64_t)ms * 1000u) < 0)
        return FCGATE_ENOMEM;
    yield(a); /* the loop removes the timer when it fires */
    return c->ch.cancelled ? FCGATE_ETIMEDOUT : FCGATE_OK;
}

static int async_wait_fd(struct conn *c, int fd, short events, int timeout_ms)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    struct loop *L = a->L;
    struct epoll_event ev = {.events = EPOLLONESHOT, .data.ptr = &a->waitfd};

    if (c->ch.cancelled)
        return FCGATE_ETIMEDOUT;
    if (events & POLLIN)
        ev.events |= EPOLLIN | EPOLLRDHUP;
    if (events & POLLOUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno == EPERM)
            return FCGATE_OK; /* a regular file: always ready, as poll says */
        return FCGATE_EINVAL;
    }
    a->fd_ready = 0;
    a->waiting_fd = 1;
    if (timeout_ms >= 0 && timer_add(L, a, monotonic_us() + (uint64_t)timeout_ms * 1000u) < 0) {
        epoll_ctl(L->ep, EPOLL_CTL_DEL, fd, NULL);
        a->waiting_fd = 0;
        return FCGATE_ENOMEM;
    }
    yield(a);
    a->waiting_fd = 0;
    timer_del(L, a);
    epoll_ctl(L->ep, EPOLL_CTL_DEL, fd, NULL);
    return a->fd_ready && !c->ch.cancelled ? FCGATE_OK : FCGATE_ETIMEDOUT;
}

static int async_db(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    struct pool_job job = {.fn = fn, .arg = arg, .owner = a};
    if (c->ch.cancelled)
        return FCGATE_ETIMEDOUT;
    a->in_pool = 1;
    pool_submit(&a->L->pool, &job);
    /* Resumed only when the job comes back done: it lives on this stack,
     * so not even a cancel may resume us earlier. */
    yield(a);
    a->in_pool = 0;
    return c->ch.cancelled ? FCGATE_ETIMEDOUT : job.result;
}

/* ---- parking: a request waits for another (a pooled connection) ---- */

static void ready_unlink(struct loop *L, struct aconn *a)
{
    if (!a->on_ready)
        return;
    if (a->ready_prev)
        a->ready_prev->ready_next = a->ready_next;
    else
        L->ready = a->ready_next;
    if (a->ready_next)
        a->ready_next->ready_prev = a->ready_prev;
    else
        L->ready_tail = a->ready_prev;
    a->ready_prev = a->ready_next = NULL;
    a->on_ready = 0;
}

static int async_park(struct conn *c, int timeout_ms)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    struct loop *L = a->L;

    if (c->ch.cancelled)
        return FCGATE_ETIMEDOUT;
    if (timer_add(L, a, monotonic_us() + (uint64_t)timeout_ms * 1000u) < 0)
        return FCGATE_ENOMEM;
    a->parked = 1;
    a->unparked = 0;
    yield(a);
    /* Woken, timed out or cancelled; perhaps more than one of these. */
    a->parked = 0;
    timer_del(L, a);
    ready_unlink(L, a);
    return a->unparked && !c->ch.cancelled ? FCGATE_OK : FCGATE_ETIMEDOUT;
}

/* Called by the running request: the parked one runs once the loop has
 * it back, before the loop next waits, without a system call. */
static void async_unpark(struct conn *c)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    struct loop *L = a->L;

    if (!a->parked || a->unparked)
        return;
    a->unparked = 1;
    a->on_ready = 1;
    a->ready_next = NULL;
    a->ready_prev = L->ready_tail;
    if (L->ready_tail)
        L->ready_tail->ready_next = a;
    else
        L->ready = a;
    L->ready_tail = a;
}

static void run_ready(struct loop *L)
{
    while (L->ready) {
        struct aconn *a = L->ready;
        ready_unlink(L, a);
        resume(L, a);
    }
}

/* Registered for good (edge-triggered): a socket handed over lives on in
 * another process and would keep raising events here. */
static void async_unwatch(struct conn *c)
{
    struct aconn *a = (struct aconn *)((char *)c - offsetof(struct aconn, c));
    epoll_ctl(a->L->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

static const struct conn_ops async_ops = {
    .unwatch = async_unwatch,
    .wait = async_wait,
    .sleep = async_sleep,
    .wait_fd = async_wait_fd,
    .db = async_db,
    .park = async_park,
    .unpark = async_unpark,
};

/* ---- connections ---- */

static void conn_main(void *p)
{
    struct aconn *a = p;
    struct worker *w = a->L->w;
    while (drain_serve(w, &a->c, 0) == CONN_IDLE) {
        a->idle_wait = 1;
        int expired = wait_socket(a, EPOLLIN, drain_idle_limit_ms(w, &a->c));
        a->idle_wait = 0;
        if (expired) {
            drain_expire(w, &a->c);
            break;
        }
    }
    a->done = 1;
    yield(a); /* for good: resume() sees done and recycles the stack */
}

/* The intake is in the set while there is room for connections. */
static void set_accepting(struct loop *L, int on)
{
    epoll_data_t tags[CONFIG_MAX_LISTEN + 1];
    if (L->accepting == on)
        return;
    for (size_t src = 0; src < intake_sources(L->w); src++)
        tags[src].ptr = &L->intake_src[src];
    intake_watch(L->w, L->ep, on, tags);
    L->accepting = on;
}

/* A finished connection leaves the list now, and its memory after the
 * batch of events being dispatched: a later event of the same batch may
 * still name it (and finds it done, not reused for another connection). */
static void conn_retire(struct loop *L, struct aconn *a)
{
    timer_del(L, a);
    if (a->prev)
        a->prev->next = a->next;
    else
        L->conns = a->next;
    if (a->next)
        a->next->prev = a->prev;
    L->nconns--;
    a->prev = NULL;
    a->next = L->retired;
    L->retired = a;
}

static void free_retired(struct loop *L)
{
    while (L->retired) {
        struct aconn *a = L->retired;
        L->retired = a->next;
        if (L->nfree < STACK_CACHE) {
            a->next = L->free_list;
            L->free_list = a;
            L->nfree++;
        } else {
            coro_destroy(&a->co);
            free(a);
        }
    }
    if (!L->stopping && !L->accept_retry_us && L->nconns < L->max_conns)
        set_accepting(L, 1);
}

static struct aconn *conn_new(struct loop *L, int fd, int kept)
{
    struct aconn *a = L->free_list;
    if (a) {
        L->free_list = a->next;
        L->nfree--;
        struct coro co = a->co;
        memset(a, 0, sizeof(*a));
        a->co = co;
        coro_reset(&a->co, conn_main, a);
    } else {
        a = calloc(1, sizeof(*a));
        if (!a)
            return NULL;
        if (coro_create(&a->co, L->stack_size, conn_main, a) < 0) {
            log_error("cannot map a %zu-byte coroutine stack: %s", L->stack_size, strerror(errno));
            free(a);
            return NULL;
        }
    }
    a->src.kind = SRC_CONN;
    a->waitfd.kind = SRC_WAITFD;
    a->L = L;
    conn_init(&a->c, fd, &async_ops, &L->w->env, kept);
    a->c.ch.slot = L->slot; /* request_run marks requests that start here */
    a->next = L->conns;
    if (L->conns)
        L->conns->prev = a;
    L->conns = a;
    L->nconns++;
    return a;
}

/* New connections from intake source src. */
static void accept_some(struct loop *L, size_t src)
{
    for (int i = 0; i < ACCEPT_BURST && L->nconns < L->max_conns; i++) {
        int fd, kept;
        enum intake_result r = intake_take(L->w, src, &fd, &kept);
        if (r == INTAKE_NOFD) {
            /* The source stays readable: out of the set, or the loop
             * spins. Back when a connection closes, or after a pause
             * when there is none to close. */
            set_accepting(L, 0);
            L->accept_retry_us = monotonic_us() + NOFD_PAUSE_US;
        }
        if (r != INTAKE_OK)
            return;
        struct aconn *a = conn_new(L, fd, kept);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = a ? &a->src : NULL};
        if (!a || epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            if (a) {
                a->done = 1;
                conn_retire(L, a);
            }
            close(fd);
            continue;
        }
        resume(L, a);
    }
    if (L->nconns >= L->max_conns)
        set_accepting(L, 0);
}

/* ---- stopping: drain.c decides, these carry it out ---- */

static void stop_intake(void *e)
{
    struct loop *L = e;
    L->stopping = 1;
    set_accepting(L, 0);
}

/* Each idle connection's coroutine asks drain.c whether to leave. */
static void release_idle(void *e)
{
    struct loop *L = e;
    for (struct aconn *a = L->conns, *next; a; a = next) {
        next = a->next;
        if (a->idle_wait)
            resume(L, a);
    }
}

static const struct drain_ops async_drain = {
    .stop_intake = stop_intake,
    .release_idle = release_idle,
};

static void begin_stop(struct loop *L)
{
    if (!L->stopping)
        drain_begin(L->w, &async_drain, L);
}

static void on_event(struct loop *L, struct epoll_event *ev)
{
    struct src *s = ev->data.ptr;
    switch (s->kind) {
    case SRC_INTAKE:
        if (!L->stopping && !drain_stopping(L->w))
            accept_some(L, s->index);
        break;
    case SRC_STOP:
        begin_stop(L);
        break;
    case SRC_POOL:
        for (struct pool_job *j = pool_take_done(&L->pool), *next; j; j = next) {
            next = j->next; /* j lives on the resumed coroutine's stack */
            resume(L, j->owner);
        }
        break;
    case SRC_CONN: {
        struct aconn *a = (struct aconn *)s;
        uint32_t e = ev->events;
        if (a->want && (e & (a->want | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
            resume(L, a);
        break;
    }
    case SRC_WAITFD: {
        struct aconn *a = (struct aconn *)((char *)s - offsetof(struct aconn, waitfd));
        if (a->waiting_fd) {
            a->fd_ready = 1;
            resume(L, a);
        }
        break;
    }
    }
}

/* `timeout` in async mode: a request over it is cancelled, not its
 * worker killed. Its pending wait fails with FCGATE_ETIMEDOUT, every
 * later one too, and request_run answers 504. A handler that never waits
 * is the loop's problem: the supervisor sees the scoreboard slot busy
 * past the timeout and kills the worker. */
static void check_timeouts(struct loop *L)
{
    int timeout = L->w->cfg->timeout;
    uint64_t now = monotonic_ms();
    if (timeout <= 0 || now < L->next_timeout_check)
        return;
    L->next_timeout_check = now + 100;
    for (struct aconn *a = L->conns, *next; a; a = next) {
        next = a->next;
        struct req_chan *ch = &a->c.ch;
        if (!ch->method || ch->cancelled || now - ch->start_ms <= (uint64_t)timeout * 1000)
            continue;
        ch->cancelled = 1;
        log_error("%s running for %.1f s, over timeout %d s; cancelled, answered 504", ch->what,
                  (double)(now - ch->start_ms) / 1e3, timeout);
        if (a->in_pool)
            continue; /* resumes when its job is done */
        if (a->heap_idx || a->waiting_fd || a->want) {
            timer_del(L, a);
            resume(L, a);
        }
    }
}

static void run_timers(struct loop *L)
{
    uint64_t now = monotonic_us();
    while (L->nheap > 0 && L->heap[0]->deadline <= now) {
        struct aconn *a = L->heap[0];
        timer_del(L, a);
        a->timer_fired = 1;
        resume(L, a);
    }
}

/* Until the next timer, at most a second: the heartbeat and the request
 * timeouts are looked at at least that often even when nothing happens.
 * Microseconds, not epoll_wait's milliseconds: rounding a 20 ms sleep to
 * the clock's millisecond costs half a millisecond on average, which is a
 * few percent of throughput for every sleeping request. */
static struct timespec next_timeout(const struct loop *L)
{
    uint64_t wait = L->ready ? 0 : L->pool_busy ? 1000 : 1000000, now = monotonic_us();
    uint64_t d = L->nheap > 0 ? L->heap[0]->deadline : 0;
    if (L->accept_retry_us && (!d || L->accept_retry_us < d))
        d = L->accept_retry_us;
    if (d)
        wait = d <= now ? 0 : d - now < wait ? d - now : wait;
    struct timespec ts = {(time_t)(wait / 1000000u), (long)(wait % 1000000u) * 1000L};
    return ts;
}

static int loop_wait(struct loop *L, struct epoll_event *evs, int max)
{
    struct timespec ts = next_timeout(L);
    if (L->have_pwait2) {
        int n = epoll_pwait2(L->ep, evs, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        L->have_pwait2 = 0; /* kernel before 5.11 */
    }
    return epoll_wait(L->ep, evs, max, (int)(ts.tv_sec * 1000 + (ts.tv_nsec + 999999) / 1000000));
}

static int loop_init(struct loop *L, struct worker *w)
{
    memset(L, 0, sizeof(*L));
    L->w = w;
    L->slot = scoreboard_slot(w->sb, w->row, 0);
    L->max_conns = (size_t)w->cfg->worker_connections;
    L->stack_size = w->cfg->stack_size;
    L->have_pwait2 = 1;
    coro_main(&L->main);
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    if (L->ep < 0) {
        log_error("epoll: %s", strerror(errno));
        return -1;
    }
    if (pool_start(&L->pool, (size_t)w->cfg->blocking_threads) < 0)
        return -1;
    for (size_t src = 0; src < intake_sources(w); src++)
        L->intake_src[src] = (struct src){SRC_INTAKE, src};
    L->stop_src.kind = SRC_STOP;
    L->pool_src.kind = SRC_POOL;
    struct epoll_event stop = {.events = EPOLLIN, .data.ptr = &L->stop_src};
    struct epoll_event pool = {.events = EPOLLIN, .data.ptr = &L->pool_src};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, w->stop_fd, &stop) < 0 ||
        epoll_ctl(L->ep, EPOLL_CTL_ADD, L->pool.efd, &pool) < 0) {
        log_error("epoll_ctl: %s", strerror(errno));
        return -1;
    }
    set_accepting(L, 1);
    return 0;
}

static void loop_fini(struct loop *L)
{
    L->stopping = 1;
    free_retired(L);
    pool_stop(&L->pool);
    while (L->free_list) {
        struct aconn *a = L->free_list;
        L->free_list = a->next;
        coro_destroy(&a->co);
        free(a);
    }
    free(L->heap);
    if (L->ep >= 0)
        close(L->ep);
}

/* What a suspended request waits for, for the slow log. */
static void describe_wait(const struct aconn *a, char *buf, size_t len)
{
    if (a->in_pool)
        snprintf(buf, len, "the database (fcgate_db, a blocking-pool job)");
    else if (a->waiting_fd)
        snprintf(buf, len, "a descriptor (fcgate_wait_fd)");
    else if (a->parked)
        snprintf(buf, len, "a free PostgreSQL connection (postgres_pool)");
    else if (a->want)
        snprintf(buf, len, "the FastCGI connection (%s)",
                 a->want & EPOLLOUT ? "writing the response" : "reading the request");
    else if (a->heap_idx)
        snprintf(buf, len, "fcgate_sleep (%.3f s left)",
                 a->deadline > monotonic_us() ? (double)(a->deadline - monotonic_us()) / 1e6 : 0.0);
    else
        snprintf(buf, len, "its turn on the event loop");
}

/* slowlog.timeout in async mode: a request waiting (not holding the loop)
 * is reported by what it waits on; one holding the loop is the
 * supervisor's to report, with the loop thread's stack. */
static void check_slow(struct loop *L)
{
    const struct config *cfg = L->w->cfg;
    uint64_t now = monotonic_ms();
    if (!cfg->slowlog_file || !log_slow_enabled() || now < L->next_slow_check)
        return;
    L->next_slow_check = now + 100;
    for (struct aconn *a = L->conns; a; a = a->next) {
        const struct req_chan *ch = &a->c.ch;
        if (!ch->method || a->slow_start_ms == ch->start_ms ||
            now - ch->start_ms < cfg->slowlog_timeout_ms)
            continue;
        a->slow_start_ms = ch->start_ms;
        char what[96];
        describe_wait(a, what, sizeof(what));
        struct log_entry le;
        log_entry_start(&le);
        log_entry_add(&le, "pid %d generation %u worker %zu (async mode)", (int)getpid(),
                      L->w->generation, L->w->index);
        log_entry_add(&le, "request: %s", ch->what);
        log_entry_add(&le, "running: %.3f s", (double)(now - ch->start_ms) / 1e3);
        log_entry_add(&le, "waiting on: %s, for %.3f s", what,
                      (double)(now - a->wait_since_ms) / 1e3);
        log_entry_write(&le);
    }
}

static void async_run(struct worker *w)
{
    struct loop L;

    if (loop_init(&L, w) < 0) {
        loop_fini(&L);
        return;
    }
    scoreboard_thread_enter(L.slot, scoreboard_stack(w->sb, w->row));
    while (!L.stopping || L.nconns > 0) {
        struct epoll_event evs[256];
        int n = loop_wait(&L, evs, 256);
        log_poll_reopen();
        scoreboard_beat(L.slot);
        drain_report(w);
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            on_event(&L, &evs[i]);
            run_ready(&L); /* a connection given back is used at once */
        }
        run_timers(&L);
        check_timeouts(&L);
        run_ready(&L);
        check_slow(&L);
        free_retired(&L);
        L.pool_busy = pool_kick(&L.pool);
        if (L.accept_retry_us && monotonic_us() >= L.accept_retry_us) {
            L.accept_retry_us = 0;
            if (!L.stopping && L.nconns < L.max_conns)
                set_accepting(&L, 1);
        }
        if (drain_stopping(w))
            begin_stop(&L);
    }
    scoreboard_thread_leave();
    loop_fini(&L);
}

static size_t one_loop(const struct config *cfg)
{
    (void)cfg;
    return 1;
}

static unsigned connections(const struct config *cfg)
{
    return (unsigned)cfg->worker_connections;
}

const struct engine engine_async = {
    .name = "async",
    .unit = "connections",
    .beater = "event loop",
    .threadsafe = 0,
    .slots = one_loop,
    .concurrency = connections,
    .run = async_run,
};

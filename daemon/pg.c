/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * pg.c - PostgreSQL connections for the app, through libpq, non-blocking
 * in every mode.
 *
 * Each thread that runs requests has its own pool of at most
 * app.postgres_pool connections, opened lazily after fork (a connection
 * never crosses a fork or a thread). In async mode that thread is the
 * event loop and the pool is the worker's, shared by its coroutines; in
 * sync and threads mode a thread runs one request at a time and so holds
 * one connection (more only while a handler nests queries).
 *
 * libpq is driven non-blocking (PQconnectStart/Poll, PQsend*, PQflush,
 * PQconsumeInput, PQisBusy, PQgetResult) and every wait goes through the
 * caller's pg_wait: the engine's fd wait, which blocks a thread in sync
 * and threads mode and yields to the loop in async mode. So one code path
 * serves the three modes, and the loop never blocks on the database and
 * never hands a query to a thread.
 *
 * Cancellation: a query past the request's deadline is cancelled on the
 * server. libpq 15 has no non-blocking cancel (PQcancelConn came in 17),
 * and PQcancel connects and waits, so it runs on a short-lived detached
 * thread; the connection is marked dirty and cleaned (the cancelled
 * query's results read, an open transaction rolled back) by whoever
 * takes it next, after that thread is done, so a late cancel can never
 * hit the next request's query. One that cannot be cleaned in time is
 * closed and replaced.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define PG_STMT_CACHE 64
#define CONNECT_LOG_EVERY_MS 1000
#define PG_TRUST_IDLE_MS 100 /* an idle connection used this recently is not checked */

enum pg_state {
    PG_EMPTY, /* no connection: opened on next use */
    PG_IDLE,  /* open, no transaction, nothing pending */
    PG_DIRTY, /* a query was abandoned (cancelled): clean before use */
};

struct pg_slot {
    PGconn *conn;
    enum pg_state state;
    int in_use;
    int cancel_fd; /* read end of the cancel thread's pipe; EOF once it is done; -1: none */
    char **stmts;  /* SQL texts prepared on this connection as "fcgate_<index>" */
    size_t nstmts;
    uint64_t released_ms; /* last given back (monotonic) */
};

struct pg_waiter {
    const struct pg_wait *w; /* parked through w->park, woken by w->unpark */
    int efd;                 /* without a park: an eventfd to wait on */
    struct pg_slot *given;   /* the slot handed over by release */
    struct pg_waiter *next;
};

struct pg_pool {
    struct pg_slot *slots;
    size_t n;
    size_t nfree;              /* slots not in use */
    struct pg_waiter *waiters; /* requests waiting for a free connection, oldest first */
    uint64_t next_log_ms;      /* connection failures are logged at most once a second */
    unsigned long unlogged;
};

struct fcgate_pg {
    struct pg_slot *slot;
    const struct pg_wait *w;
};

static struct pg_settings cfg;
static _Thread_local struct pg_pool *tpool;

void pg_configure(const struct pg_settings *s)
{
    free((char *)cfg.conninfo);
    cfg = *s;
    cfg.conninfo = s->conninfo && *s->conninfo ? strdup(s->conninfo) : NULL;
    if (cfg.pool < 1)
        cfg.pool = 1;
}

int pg_enabled(void)
{
    return cfg.conninfo != NULL;
}

static int not_configured(void)
{
    static atomic_int said;
    if (!atomic_exchange(&said, 1))
        log_error("the app asked for PostgreSQL, but app.postgres is not set in the "
                  "configuration");
    return FCGATE_EINVAL;
}

/* ---- waiting ---- */

/* Milliseconds left until the deadline (monotonic ms), at most a day;
 * 0: it has passed. */
static int ms_until(uint64_t deadline)
{
    uint64_t now = monotonic_ms();
    if (now >= deadline)
        return 0;
    return deadline - now > 86400000u ? 86400000 : (int)(deadline - now);
}

/* Until fd is ready or the deadline (monotonic ms) passes. */
static int wait_until(const struct pg_wait *w, int fd, short events, uint64_t deadline)
{
    int ms = ms_until(deadline);
    if (ms == 0)
        return FCGATE_ETIMEDOUT;
    if (w && w->fn)
        return w->fn(w->ctx, fd, events, ms);
    return fd_wait(fd, events, ms);
}

/* The deadline of one exchange with the server: the request's, else
 * io_timeout from now. */
static uint64_t op_deadline(const struct pg_wait *w)
{
    uint64_t io = monotonic_ms() + (uint64_t)cfg.io_timeout_ms;
    return w && w->deadline_ms ? w->deadline_ms : io;
}

/* A wait ran out: the request's own deadline (FCGATE_ETIMEDOUT: it is
 * answered 504) or only an io_timeout bound (the server is unreachable). */
static int expired(const struct pg_wait *w)
{
    return w && w->deadline_ms && monotonic_ms() >= w->deadline_ms ? FCGATE_ETIMEDOUT
                                                                   : FCGATE_EUNAVAIL;
}

/* ---- the pool ---- */

static struct pg_pool *pool_get(void)
{
    if (tpool)
        return tpool;
    struct pg_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->slots = calloc((size_t)cfg.pool, sizeof(*p->slots));
    if (!p->slots) {
        free(p);
        return NULL;
    }
    p->n = p->nfree = (size_t)cfg.pool;
    for (size_t i = 0; i < p->n; i++)
        p->slots[i].cancel_fd = -1;
    tpool = p;
    return p;
}

static void forget_stmts(struct pg_slot *s)
{
    for (size_t i = 0; i < s->nstmts; i++)
        free(s->stmts[i]);
    free(s->stmts);
    s->stmts = NULL;
    s->nstmts = 0;
}

/* Closes s's connection: it is opened afresh on next use. */
static void slot_reset(struct pg_slot *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->state = PG_EMPTY;
    if (s->cancel_fd >= 0)
        close(s->cancel_fd);
    s->cancel_fd = -1;
    forget_stmts(s);
}

static void log_connect_failure(struct pg_pool *p, const char *why)
{
    uint64_t now = monotonic_ms();
    if (now < p->next_log_ms) {
        p->unlogged++;
        return;
    }
    size_t n = strlen(why);
    while (n > 0 && why[n - 1] == '\n')
        n--;
    if (p->unlogged)
        log_error("PostgreSQL: cannot connect: %.*s (and %lu more failures)", (int)n, why,
                  p->unlogged);
    else
        log_error("PostgreSQL: cannot connect: %.*s", (int)n, why);
    p->unlogged = 0;
    p->next_log_ms = now + CONNECT_LOG_EVERY_MS;
}

static void notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("PostgreSQL: %s", msg);
}

/* Opens s's connection without blocking: connect, TLS and authentication
 * are steps of PQconnectPoll, each waited for through w. */
static int slot_connect(struct pg_pool *p, struct pg_slot *s, const struct pg_wait *w)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {cfg.conninfo, "fcgate", NULL};
    uint64_t deadline = monotonic_ms() + (uint64_t)cfg.io_timeout_ms;

    if (w && w->deadline_ms && w->deadline_ms < deadline)
        deadline = w->deadline_ms;
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c)
        return FCGATE_ENOMEM;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    int rc = FCGATE_OK;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        rc = wait_until(w, PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (rc != FCGATE_OK)
            break;
        st = PQconnectPoll(c);
    }
    if (rc == FCGATE_ETIMEDOUT) {
        rc = expired(w);
        log_connect_failure(p, "timed out");
    } else if (rc == FCGATE_OK && (PQstatus(c) == CONNECTION_BAD || st != PGRES_POLLING_OK)) {
        log_connect_failure(p, PQerrorMessage(c));
        rc = FCGATE_EUNAVAIL;
    }
    if (rc == FCGATE_OK && PQsetnonblocking(c, 1) != 0) {
        log_connect_failure(p, PQerrorMessage(c));
        rc = FCGATE_EUNAVAIL;
    }
    if (rc != FCGATE_OK) {
        PQfinish(c);
        return rc;
    }
    PQsetNoticeProcessor(c, notice, NULL);
    s->conn = c;
    s->state = PG_IDLE;
    return FCGATE_OK;
}

/* ---- one exchange: send, flush, collect ---- */

static int broken(const PGconn *c, const PGresult *r)
{
    if (PQstatus(c) == CONNECTION_BAD)
        return 1;
    /* The server says it is going away (admin shutdown, crash recovery)
     * or the link failed: the connection is done even before libpq has
     * seen the end of the socket. */
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return state && (strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0);
}

static int flush(const struct pg_wait *w, PGconn *c, uint64_t deadline)
{
    int f;
    while ((f = PQflush(c)) == 1) {
        /* Read too while the output is blocked: the server may be
         * waiting for us to take its answer before it reads more. */
        int rc = wait_until(w, PQsocket(c), POLLIN | POLLOUT, deadline);
        if (rc != FCGATE_OK)
            return rc;
        if (!PQconsumeInput(c))
            return FCGATE_EUNAVAIL;
    }
    return f == 0 ? FCGATE_OK : FCGATE_EUNAVAIL;
}

/* Reads every result of the command sent. *out: the first failed one,
 * else the last one (NULL: none came). */
static int collect(const struct pg_wait *w, PGconn *c, uint64_t deadline, PGresult **out)
{
    *out = NULL;
    for (;;) {
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return FCGATE_OK;
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                PQclear(r); /* COPY is not supported: the connection is stuck in it */
                return FCGATE_EUNAVAIL;
            }
            int failed = *out && PQresultStatus(*out) == PGRES_FATAL_ERROR;
            if (failed) {
                PQclear(r);
            } else {
                PQclear(*out);
                *out = r;
            }
        }
        int rc = wait_until(w, PQsocket(c), POLLIN, deadline);
        if (rc != FCGATE_OK)
            return rc;
        if (!PQconsumeInput(c))
            return FCGATE_EUNAVAIL;
    }
}

struct cancel_job {
    PGcancel *k;
    int done_fd; /* the pipe's write end: closing it tells the slot the cancel is through */
};

static void *cancel_main(void *arg)
{
    struct cancel_job *job = arg;
    char err[256];
    if (!PQcancel(job->k, err, sizeof(err)))
        log_warn("PostgreSQL: cancel request failed: %s", err);
    PQfreeCancel(job->k);
    close(job->done_fd);
    free(job);
    return NULL;
}

/* The query running on s is abandoned: cancel it on the server, and mark
 * s to be cleaned before its next use. */
static void abandon(struct pg_slot *s)
{
    int fds[2];
    pthread_attr_t a;
    pthread_t t;
    struct cancel_job *job;

    s->state = PG_DIRTY;
    if (PQtransactionStatus(s->conn) != PQTRANS_ACTIVE)
        return; /* nothing runs: cleaning is enough */
    PGcancel *k = PQgetCancel(s->conn);
    if (!k || pipe2(fds, O_CLOEXEC) < 0)
        goto fail;
    if (!(job = malloc(sizeof(*job)))) {
        close(fds[0]);
        close(fds[1]);
        goto fail;
    }
    job->k = k;
    job->done_fd = fds[1];
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, cancel_main, job);
    pthread_attr_destroy(&a);
    if (rc != 0) {
        close(fds[0]);
        close(fds[1]);
        free(job);
        goto fail;
    }
    s->cancel_fd = fds[0];
    return;
fail:
    /* Without a cancel the query would run on: drop the connection (the
     * server ends the backend when it next writes to it). */
    log_error("PostgreSQL: cannot cancel a query (%s); closing its connection", strerror(errno));
    PQfreeCancel(k);
    slot_reset(s);
}

/* Where a failed exchange leaves s: broken (closed), timed out
 * (cancelled, dirty), or fine. Returns the status for the caller. */
static int settle(struct pg_slot *s, const struct pg_wait *w, int rc, PGresult *r)
{
    if ((rc == FCGATE_OK || rc == FCGATE_EDB) && broken(s->conn, r))
        rc = FCGATE_EUNAVAIL;
    if (rc == FCGATE_ETIMEDOUT) {
        abandon(s);
        return expired(w);
    }
    if (rc == FCGATE_EUNAVAIL || rc == FCGATE_EIO) {
        const char *why = r ? PQresultErrorMessage(r) : PQerrorMessage(s->conn);
        log_error("PostgreSQL: connection lost: %.*s", (int)strcspn(why, "\n"), why);
        slot_reset(s);
        return FCGATE_EUNAVAIL;
    }
    return rc;
}

static int stmt_index(const struct pg_slot *s, const char *sql)
{
    for (size_t i = 0; i < s->nstmts; i++)
        if (strcmp(s->stmts[i], sql) == 0)
            return (int)i;
    return -1;
}

/* Prepares sql on s as the next cached statement: its index, -1 when it
 * is to run unprepared (cache full, out of memory), or a failure status
 * below -1 with *res set (the server refused it: a syntax error). */
static int prepare(struct pg_slot *s, const struct pg_wait *w, const char *sql, int nparams,
                   uint64_t deadline, PGresult **res, int *rc)
{
    char name[32];
    char **v;

    *rc = FCGATE_OK;
    if (s->nstmts >= PG_STMT_CACHE || !(v = realloc(s->stmts, (s->nstmts + 1) * sizeof(*v))))
        return -1;
    s->stmts = v;
    if (!(v[s->nstmts] = strdup(sql)))
        return -1;
    snprintf(name, sizeof(name), "fcgate_%zu", s->nstmts);
    if (!PQsendPrepare(s->conn, name, sql, nparams, NULL))
        *rc = FCGATE_EUNAVAIL;
    else if ((*rc = flush(w, s->conn, deadline)) == FCGATE_OK)
        *rc = collect(w, s->conn, deadline, res);
    if (*rc == FCGATE_OK && *res && PQresultStatus(*res) == PGRES_COMMAND_OK) {
        PQclear(*res);
        *res = NULL;
        return (int)s->nstmts++;
    }
    free(v[s->nstmts]);
    if (*rc == FCGATE_OK)
        *rc = FCGATE_EDB;
    return -2;
}

static int send_query(struct pg_slot *s, const struct pg_wait *w, const char *sql, int nparams,
                      const char *const *params, int cached, uint64_t deadline, PGresult **res)
{
    int i = cached && cfg.prepare ? stmt_index(s, sql) : -1, rc = FCGATE_OK;
    char name[32];

    if (cached && cfg.prepare && i < 0) {
        i = prepare(s, w, sql, nparams, deadline, res, &rc);
        if (i < -1)
            return rc;
    }
    if (i >= 0) {
        snprintf(name, sizeof(name), "fcgate_%d", i);
        return PQsendQueryPrepared(s->conn, name, nparams, params, NULL, NULL, 0) ? FCGATE_OK
                                                                                  : FCGATE_EUNAVAIL;
    }
    return PQsendQueryParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0) ? FCGATE_OK
                                                                                 : FCGATE_EUNAVAIL;
}

/* One statement on s, in use by the caller. cached: may be prepared
 * (the app's statements; not BEGIN / COMMIT / ROLLBACK). */
static int run(struct pg_slot *s, const struct pg_wait *w, PGresult **res, const char *sql,
               int nparams, const char *const *params, int cached)
{
    PGresult *r = NULL;
    uint64_t deadline = op_deadline(w);
    int rc = send_query(s, w, sql, nparams, params, cached, deadline, &r);

    if (rc == FCGATE_OK && !r) {
        if ((rc = flush(w, s->conn, deadline)) == FCGATE_OK)
            rc = collect(w, s->conn, deadline, &r);
    }
    rc = settle(s, w, rc, r);
    if (rc == FCGATE_OK) {
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (r)
                log_debug("PostgreSQL: %s: %.*s", sql, (int)strcspn(PQresultErrorMessage(r), "\n"),
                          PQresultErrorMessage(r));
            rc = FCGATE_EDB;
        }
    }
    if (res && (rc == FCGATE_OK || rc == FCGATE_EDB))
        *res = r;
    else
        PQclear(r);
    return rc;
}

/* ---- taking and giving back a connection ---- */

/* An idle connection the server closed meanwhile (restart, idle timeout)
 * shows up readable: found before a request's query is lost on it. */
static int still_open(struct pg_slot *s)
{
    /* A server going away sends an error, then closes: one read takes
     * the error, the end of the stream shows only on the next. */
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {PQsocket(s->conn), POLLIN, 0};
        if (poll(&p, 1, 0) == 0)
            return 1;
        if (!PQconsumeInput(s->conn) || PQstatus(s->conn) != CONNECTION_OK || PQisBusy(s->conn) ||
            PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            goto closed;
    }
    return 1; /* talkative (notices), but open */
closed:
    log_info("PostgreSQL: an idle connection was closed by the server; reconnecting");
    slot_reset(s);
    return 0;
}

/* Reads what the abandoned query left and rolls back what it left open,
 * once its cancel is through. FCGATE_OK: s is idle again. */
static int clean(struct pg_slot *s, const struct pg_wait *w)
{
    PGresult *r = NULL;
    uint64_t deadline = op_deadline(w);
    int rc = FCGATE_OK;

    if (s->cancel_fd >= 0) {
        rc = wait_until(w, s->cancel_fd, POLLIN, deadline);
        if (rc != FCGATE_OK)
            return rc;
        close(s->cancel_fd);
        s->cancel_fd = -1;
    }
    /* A query abandoned while still being sent is sent whole first: the
     * server answers (or cancels) only complete messages. */
    if ((rc = flush(w, s->conn, deadline)) == FCGATE_OK)
        rc = collect(w, s->conn, deadline, &r);
    PQclear(r);
    if (rc == FCGATE_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        if (!PQsendQueryParams(s->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0))
            return FCGATE_EUNAVAIL;
        if ((rc = flush(w, s->conn, deadline)) == FCGATE_OK)
            rc = collect(w, s->conn, deadline, &r);
        PQclear(r);
    }
    if (rc == FCGATE_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        rc = FCGATE_EUNAVAIL;
    if (rc == FCGATE_OK)
        s->state = PG_IDLE;
    return rc;
}

static struct pg_slot *find(struct pg_pool *p, enum pg_state state)
{
    for (size_t i = 0; i < p->n; i++)
        if (!p->slots[i].in_use && p->slots[i].state == state)
            return &p->slots[i];
    return NULL;
}

/* A free slot, best first: an open connection, then one to clean, then
 * an empty one. */
static struct pg_slot *pick_free(struct pg_pool *p)
{
    struct pg_slot *s;
    if (p->nfree == 0)
        return NULL;
    if (!(s = find(p, PG_IDLE)) && !(s = find(p, PG_DIRTY)))
        s = find(p, PG_EMPTY);
    if (s) {
        s->in_use = 1;
        p->nfree--;
    }
    return s;
}

/* Makes s, now the caller's, ready for a query: an idle connection
 * checked, a dirty one cleaned, an empty or dead one opened. */
static int make_usable(struct pg_pool *p, struct pg_slot *s, const struct pg_wait *w)
{
    /* A connection given back moments ago is trusted without a look: the
     * check costs a system call per query, and it races with the server
     * anyway. One idle for longer (a server restart, an idle timeout) is
     * looked at before a request's query is lost on it. */
    if (s->state == PG_IDLE &&
        (monotonic_ms() - s->released_ms < PG_TRUST_IDLE_MS || still_open(s)))
        return FCGATE_OK;
    if (s->state == PG_DIRTY) {
        int rc = clean(s, w);
        if (rc == FCGATE_OK)
            return rc;
        if (rc == FCGATE_ETIMEDOUT && expired(w) == FCGATE_ETIMEDOUT)
            return rc; /* our own time ran out: the next taker cleans it */
        log_warn("PostgreSQL: a cancelled query's connection did not come back clean; "
                 "replacing it");
        slot_reset(s);
    }
    return slot_connect(p, s, w);
}

/* Gives s back: straight to the oldest waiter if there is one (so a
 * request that arrives meanwhile cannot take it first), else to the pool. */
static void release(struct pg_slot *s)
{
    struct pg_pool *p = tpool;
    struct pg_waiter *wt = p->waiters;
    uint64_t one = 1;

    s->released_ms = monotonic_ms();
    if (!wt) {
        s->in_use = 0;
        p->nfree++;
        return;
    }
    p->waiters = wt->next;
    wt->given = s;
    if (wt->w && wt->w->unpark)
        wt->w->unpark(wt->w->ctx);
    else if (write(wt->efd, &one, sizeof(one)) < 0)
        log_error("PostgreSQL: cannot wake a request waiting for a connection: %s",
                  strerror(errno));
}

static void unlink_waiter(struct pg_pool *p, struct pg_waiter *me)
{
    for (struct pg_waiter **q = &p->waiters; *q; q = &(*q)->next) {
        if (*q == me) {
            *q = me->next;
            return;
        }
    }
}

/* Queues for a connection given back by another request (async mode:
 * another coroutine), until the deadline. *given: the slot handed over,
 * NULL when none came. The engine parks the request where it can (async:
 * the coroutine sleeps, no system call); elsewhere it waits on an eventfd
 * of its own through the engine's fd wait. */
static int wait_turn(struct pg_pool *p, const struct pg_wait *w, uint64_t deadline,
                     struct pg_slot **given)
{
    struct pg_waiter me = {.w = w, .efd = -1, .given = NULL, .next = NULL};
    int park = w && w->park;
    int rc;

    *given = NULL;
    if (!park && (me.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return FCGATE_ENOMEM;
    struct pg_waiter **q = &p->waiters;
    while (*q)
        q = &(*q)->next;
    *q = &me;
    if (park) {
        int ms = ms_until(deadline);
        rc = ms == 0 ? FCGATE_ETIMEDOUT : w->park(w->ctx, ms);
    } else {
        rc = wait_until(w, me.efd, POLLIN, deadline);
        close(me.efd);
    }
    if (!me.given) {
        unlink_waiter(p, &me);
        return rc == FCGATE_OK ? FCGATE_ETIMEDOUT : rc;
    }
    if (rc != FCGATE_OK) {
        release(me.given); /* handed over as we gave up: on to the next */
        return rc;
    }
    *given = me.given;
    return FCGATE_OK;
}

static int acquire(const struct pg_wait *w, struct pg_slot **out)
{
    struct pg_pool *p;
    struct pg_slot *s;
    int rc;

    if (!pg_enabled())
        return not_configured();
    if (!(p = pool_get()))
        return FCGATE_ENOMEM;
    uint64_t deadline = monotonic_ms() + (uint64_t)cfg.pool_timeout_s * 1000u;
    if (w && w->deadline_ms && w->deadline_ms < deadline)
        deadline = w->deadline_ms;
    if (!(s = pick_free(p)) && (rc = wait_turn(p, w, deadline, &s)) != FCGATE_OK) {
        if (rc == FCGATE_ETIMEDOUT && expired(w) == FCGATE_EUNAVAIL) {
            log_error("PostgreSQL: no free connection within postgres_pool_timeout (%d s, "
                      "postgres_pool %d)",
                      cfg.pool_timeout_s, cfg.pool);
            return FCGATE_EUNAVAIL;
        }
        return rc;
    }
    if ((rc = make_usable(p, s, w)) != FCGATE_OK) {
        release(s);
        return rc;
    }
    *out = s;
    return FCGATE_OK;
}

/* ---- what request.c offers the app ---- */

int pg_query(const struct pg_wait *w, PGresult **res, const char *sql, int nparams,
             const char *const *params)
{
    struct pg_slot *s;

    if (res)
        *res = NULL;
    if (!sql || nparams < 0 || (nparams > 0 && !params))
        return FCGATE_EINVAL;
    int rc = acquire(w, &s);
    if (rc != FCGATE_OK)
        return rc;
    rc = run(s, w, res, sql, nparams, params, 1);
    release(s);
    return rc;
}

int fcgate_pg_exec(fcgate_pg *tx, PGresult **res, const char *sql, int nparams,
                   const char *const *params)
{
    if (res)
        *res = NULL;
    if (!tx || !sql || nparams < 0 || (nparams > 0 && !params))
        return FCGATE_EINVAL;
    if (tx->slot->state != PG_IDLE)
        return expired(tx->w); /* an earlier statement lost the connection or the time */
    return run(tx->slot, tx->w, res, sql, nparams, params, 1);
}

/* BEGIN / COMMIT / ROLLBACK. COMMIT of a transaction the server aborted
 * answers "ROLLBACK": that is a failure too. */
static int control(struct pg_slot *s, const struct pg_wait *w, const char *sql)
{
    PGresult *r = NULL;
    if (s->state != PG_IDLE)
        return expired(w);
    int rc = run(s, w, &r, sql, 0, NULL, 0);
    if (rc == FCGATE_OK && strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = FCGATE_EDB;
    PQclear(r);
    return rc;
}

int pg_transaction(const struct pg_wait *w, int (*fn)(fcgate_pg *tx, void *arg), void *arg)
{
    struct pg_slot *s;

    if (!fn)
        return FCGATE_EINVAL;
    int rc = acquire(w, &s);
    if (rc != FCGATE_OK)
        return rc;
    struct fcgate_pg tx = {s, w};
    rc = control(s, w, "BEGIN");
    if (rc == FCGATE_OK) {
        rc = fn(&tx, arg);
        if (rc == FCGATE_OK)
            rc = control(s, w, "COMMIT");
        else if (s->state == PG_IDLE)
            control(s, w, "ROLLBACK");
        /* Whatever failed on the way, no transaction outlives the call:
         * one still open is rolled back before the next use. */
        if (s->state == PG_IDLE && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            s->state = PG_DIRTY;
    }
    release(s);
    return rc;
}

void pg_close_thread(void)
{
    struct pg_pool *p = tpool;
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        slot_reset(&p->slots[i]);
    free(p->slots);
    free(p);
    tpool = NULL;
}

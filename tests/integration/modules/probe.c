/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * probe.c - an app module for the integration tests: endpoints that crash,
 * overflow their stack, block, stream or wait, or grow the worker's
 * memory, so the tests can see what the daemon does about each.
 */
#include <errno.h>
#include <fcgate/app.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long query_long(fcgate_req *r, const char *key, long dflt)
{
    char buf[32];
    if (fcgate_query_value(r, key, buf, sizeof(buf)) <= 0)
        return dflt;
    return strtol(buf, NULL, 10);
}

static int text(fcgate_req *r, int status, const char *body)
{
    fcgate_set_status(r, status);
    fcgate_add_header(r, "Content-Type", "text/plain");
    return fcgate_write(r, body, strlen(body));
}

/* Each frame keeps 4 KiB live, so the guard page is reached quickly; the
 * limit only exists to be far beyond any stack fcgate gives a handler. */
static int recurse(volatile char *prev, long depth)
{
    volatile char frame[4096];
    frame[0] = (char)depth;
    frame[4095] = prev ? prev[0] : 0;
    if (depth > 1L << 30)
        return frame[0];
    return recurse(frame, depth + 1) + frame[100];
}

static void busy_ms(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

/* Blocks its thread (and in async mode the loop) for ms, in the kernel,
 * through interruptions: the slow-log tests look for this function's
 * name, which only the module's .symtab has (hidden visibility). */
__attribute__((noinline)) static void probe_stuck_in_module(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        struct timespec d = {left / 1000, (left % 1000) * 1000000};
        nanosleep(&d, NULL);
    }
    __asm__ volatile("" ::: "memory"); /* not a tail call: keep this frame */
}

/* Burns ms of this thread's CPU time and reports when it started and
 * ended (CLOCK_MONOTONIC, microseconds): two such intervals overlap only
 * if nothing serialises the handlers. */
static int spin(fcgate_req *r)
{
    long ms = query_long(r, "ms", 200);
    struct timespec w0, w1, c0, c;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    do
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c);
    while ((c.tv_sec - c0.tv_sec) * 1000 + (c.tv_nsec - c0.tv_nsec) / 1000000 < ms);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    fcgate_add_header(r, "Content-Type", "text/plain");
    return fcgate_printf(r, "%lld %lld\n", (long long)w0.tv_sec * 1000000 + w0.tv_nsec / 1000,
                         (long long)w1.tv_sec * 1000000 + w1.tv_nsec / 1000);
}

static int wait_fd(fcgate_req *r)
{
    int p[2];
    if (pipe(p) < 0)
        return FCGATE_EIO;
    int first = fcgate_wait_fd(r, p[0], POLLIN, 50);
    (void)!write(p[1], "x", 1);
    int second = fcgate_wait_fd(r, p[0], POLLIN, 1000);
    close(p[0]);
    close(p[1]);
    fcgate_add_header(r, "Content-Type", "text/plain");
    return fcgate_printf(r, "%s %s\n", first == FCGATE_ETIMEDOUT ? "timeout" : "no-timeout",
                         second == FCGATE_OK ? "ready" : "not-ready");
}

static int stream(fcgate_req *r)
{
    long kb = query_long(r, "kb", 1024);
    char chunk[1024];
    fcgate_add_header(r, "Content-Type", "application/octet-stream");
    for (long i = 0; i < kb; i++) {
        memset(chunk, 'a' + (int)(i % 26), sizeof(chunk));
        int rc = fcgate_write(r, chunk, sizeof(chunk));
        if (rc != FCGATE_OK)
            return rc;
    }
    return query_long(r, "fail", 0) ? FCGATE_EIO : FCGATE_OK;
}

/* Memory /grow keeps for the worker's life: reachable from here, so a
 * leak checker does not call it lost. */
struct grown {
    struct grown *next;
};
static _Atomic(struct grown *) grown_list;
static _Atomic long grown_mb;

/* Allocates and touches ?mb= MiB (default 4) that stay: a worker whose
 * memory grows request by request, as a slow leak makes it. */
static int grow(fcgate_req *r)
{
    long mb = query_long(r, "mb", 4);
    if (mb < 1 || mb > 256)
        return text(r, 400, "mb: 1..256\n");
    struct grown *g = malloc((size_t)mb << 20);
    if (!g)
        return text(r, 507, "out of memory\n");
    memset(g, 0x5a, (size_t)mb << 20);
    g->next = atomic_exchange(&grown_list, g);
    long total = atomic_fetch_add(&grown_mb, mb) + mb;
    fcgate_add_header(r, "Content-Type", "text/plain");
    return fcgate_printf(r, "grown %ld %d\n", total, (int)getpid());
}

/* PostgreSQL: a failure as JSON, 503 when the server is out of reach. */
static int pg_error(fcgate_req *r, int rc, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    fcgate_set_status(r, rc == FCGATE_EUNAVAIL ? 503 : 500);
    fcgate_add_header(r, "Content-Type", "application/json");
    fcgate_printf(r, "{\"error\": \"%s\", \"sqlstate\": \"%s\"}\n", fcgate_strerror(rc),
                  state ? state : "");
    PQclear(res);
    return FCGATE_OK;
}

struct pg_tx {
    fcgate_req *r;
    char v[64], ms[24];
    int fail;
};

/* Inserts v, then optionally waits on the server and/or fails: commit,
 * rollback, and rollback at the request's timeout. */
static int pg_tx_fn(fcgate_pg *tx, void *arg)
{
    struct pg_tx *t = arg;
    const char *v[1] = {t->v}, *ms[1] = {t->ms};
    PGresult *res;
    int rc = fcgate_pg_exec(tx, &res, "INSERT INTO probe_rows(v) VALUES ($1)", 1, v);
    PQclear(res);
    if (rc == FCGATE_OK && strcmp(t->ms, "0") != 0) {
        rc = fcgate_pg_exec(tx, &res, "SELECT pg_sleep($1::float8 / 1000)", 1, ms);
        PQclear(res);
    }
    if (rc == FCGATE_OK && t->fail) {
        rc = fcgate_pg_exec(tx, &res, "SELECT 1/0", 0, NULL); /* an SQL error inside */
        PQclear(res);
    }
    return rc;
}

static int pg_tx(fcgate_req *r)
{
    struct pg_tx t = {.r = r, .fail = (int)query_long(r, "fail", 0)};
    if (fcgate_query_value(r, "v", t.v, sizeof(t.v)) < 0)
        return text(r, 400, "v?\n");
    snprintf(t.ms, sizeof(t.ms), "%ld", query_long(r, "ms", 0));
    int rc = fcgate_pg_transaction(r, pg_tx_fn, &t);
    if (rc != FCGATE_OK)
        return pg_error(r, rc, NULL);
    return text(r, 200, "committed\n");
}

/* The rows with v, as a number; ?sql= runs that statement instead (no
 * parameters) and answers its first value. */
static int pg_get(fcgate_req *r)
{
    char v[64], sql[256];
    const char *params[1] = {v};
    PGresult *res;
    int rc;
    if (fcgate_query_value(r, "sql", sql, sizeof(sql)) >= 0)
        rc = fcgate_pg_query(r, &res, sql, 0, NULL);
    else if (fcgate_query_value(r, "v", v, sizeof(v)) >= 0)
        rc = fcgate_pg_query(r, &res, "SELECT count(*) FROM probe_rows WHERE v = $1", 1, params);
    else
        return text(r, 400, "v or sql?\n");
    if (rc != FCGATE_OK)
        return pg_error(r, rc, res);
    fcgate_add_header(r, "Content-Type", "text/plain");
    rc = fcgate_printf(r, "%s\n", PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return rc;
}

static int handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    const char *path = fcgate_path(r);

    if (strcmp(path, "/hello") == 0)
        return text(r, 200, "hello\n");
    if (strcmp(path, "/sleep") == 0) {
        fcgate_sleep(r, (unsigned)query_long(r, "ms", 20));
        return text(r, 200, "ok\n");
    }
    if (strcmp(path, "/block") == 0) {
        busy_ms(query_long(r, "ms", 300));
        return text(r, 200, "blocked\n");
    }
    if (strcmp(path, "/stuck") == 0) {
        probe_stuck_in_module(query_long(r, "ms", 300));
        return text(r, 200, "unstuck\n");
    }
    if (strcmp(path, "/overflow") == 0)
        return recurse(NULL, 0);
    if (strcmp(path, "/segv") == 0) {
        volatile int *p = NULL;
        return *p;
    }
    /* "/fail/ANYTHING" too: the failure line then carries a path chosen by
     * the test. */
    if (strcmp(path, "/fail") == 0 || strncmp(path, "/fail/", 6) == 0)
        return FCGATE_EIO;
    if (strncmp(path, "/log/", 5) == 0) {
        fcgate_log(r, FCGATE_LOG_ERROR, "logged for %s", path);
        return text(r, 200, "logged\n");
    }
    if (strcmp(path, "/spin") == 0)
        return spin(r);
    if (strcmp(path, "/wait_fd") == 0)
        return wait_fd(r);
    if (strcmp(path, "/stream") == 0)
        return stream(r);
    if (strcmp(path, "/grow") == 0)
        return grow(r);

    if (strcmp(path, "/pg-tx") == 0)
        return pg_tx(r);
    if (strcmp(path, "/pg") == 0)
        return pg_get(r);
    if (strcmp(path, "/pid") == 0) {
        fcgate_add_header(r, "Content-Type", "text/plain");
        return fcgate_printf(r, "%d\n", (int)getpid());
    }
    return text(r, 404, "not found\n");
}

FCGATE_APP(.name = "probe", .flags = FCGATE_APP_THREADSAFE, .handle = handle);

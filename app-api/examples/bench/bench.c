/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench - the benchmark workloads of ../shared/peers, answered byte for
 * byte like peers/apps/app_fcgi.c, so fcgate can be measured with the same
 * harness against the same baselines:
 *
 *   GET /hello      200 text/plain "hello\n"
 *   GET /item?id=N  200 application/json {"id":N,"name":"...","qty":N}
 *                   (400 "bad id\n", 404 "no such item\n")
 *   GET /sleep      fcgate_sleep 20 ms (?ms=0..60000 overrides), "ok\n"
 *   GET /cpu        CPU_ITERS rounds of the integer hash, "%08x\n"
 *   GET /pg-item?id=N   the /item answer from PostgreSQL's items(id, name,
 *                   qty), created beforehand by whoever runs the benchmark
 *   GET /pg-sleep?ms=N  SELECT pg_sleep: a query that waits on the server
 *                   (ms as /sleep), "ok\n"
 *   PostgreSQL failures: 503 "db unavailable\n" (server unreachable, no
 *   free connection), 500 "db error\n"; over `timeout` fcgate answers 504.
 *
 * CPU_ITERS comes from the app setting "cpu_iters", else the environment
 * (as the peers harness passes it), else 730000 (about 1 ms).
 * Thread-safe: the only state is the iteration count, fixed at init.
 */
#include <fcgate/app.h>

#include <errno.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CPU_ITERS 730000u
#define DEFAULT_SLEEP_MS 20
#define MAX_SLEEP_MS 60000

struct bench {
    uint32_t cpu_iters;
};

/* Same loop in every language: h = ((h ^ (i & 255)) * 16777619) mod 2^32. */
static uint32_t cpu_work(uint32_t iters)
{
    uint32_t h = 2166136261u;

    for (uint32_t i = 0; i < iters; i++) {
        h ^= (i & 0xffu);
        h *= 16777619u;
    }
    return h;
}

static int reply(fcgate_req *r, int status, const char *ctype, const char *body)
{
    fcgate_set_status(r, status);
    fcgate_add_header(r, "Content-Type", ctype);
    fcgate_write(r, body, strlen(body));
    return 0;
}

static int reply_text(fcgate_req *r, int status, const char *body)
{
    return reply(r, status, "text/plain", body);
}

/* Appends s to dst as JSON string contents, stopping short of cap, exactly
 * as app_fcgi.c does. */
static void json_escape(char *dst, size_t cap, const unsigned char *s)
{
    size_t n = 0;

    for (; s && *s && n + 7 < cap; s++) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = '\0';
}

/* 1 and *out when key holds a whole integer in strtoll syntax without
 * overflow (as app_fcgi.c reads id), 0 when key is absent, else -1. */
static int query_ll(fcgate_req *r, const char *key, long long *out)
{
    char buf[64], *end;
    int n = fcgate_query_value(r, key, buf, sizeof buf);

    if (n == FCGATE_EINVAL)
        return 0;
    if (n < 0 || (size_t)n != strlen(buf))
        return -1;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return errno || end == buf || *end ? -1 : 1;
}

struct item {
    long long id;
    int found;
    long long qty;
    char name[512];
    char err[160]; /* sqlite's message, logged by the request's thread */
};

static int item_fn(sqlite3 *db, void *arg)
{
    struct item *it = arg;
    sqlite3_stmt *st = fcgate_stmt(db, "SELECT name, qty FROM items WHERE id = ?");
    int rc;

    if (!st)
        return FCGATE_EDB;
    sqlite3_bind_int64(st, 1, it->id);
    rc = sqlite3_step(st);
    it->found = rc == SQLITE_ROW;
    if (it->found) {
        json_escape(it->name, sizeof it->name, sqlite3_column_text(st, 0));
        it->qty = sqlite3_column_int64(st, 1);
    } else if (rc != SQLITE_DONE) {
        snprintf(it->err, sizeof it->err, "%s", sqlite3_errmsg(db));
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? FCGATE_OK : FCGATE_EDB;
}

static int bench_item(fcgate_req *r)
{
    struct item it = {0};
    char body[768];
    int rc;

    if (query_ll(r, "id", &it.id) <= 0)
        return reply_text(r, 400, "bad id\n");
    rc = fcgate_db(r, item_fn, &it);
    if (rc != FCGATE_OK) {
        fcgate_log(r, FCGATE_LOG_ERROR, "item %lld: %s", it.id,
                   *it.err ? it.err : fcgate_strerror(rc));
        return reply_text(r, 500, "db error\n");
    }
    if (!it.found)
        return reply_text(r, 404, "no such item\n");
    snprintf(body, sizeof body, "{\"id\":%lld,\"name\":\"%s\",\"qty\":%lld}", it.id, it.name,
             it.qty);
    return reply(r, 200, "application/json", body);
}

static int reply_pg_error(fcgate_req *r, const char *what, int rc, PGresult *res)
{
    if (res)
        fcgate_log(r, FCGATE_LOG_ERROR, "%s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    if (rc == FCGATE_EUNAVAIL)
        return reply_text(r, 503, "db unavailable\n");
    return reply_text(r, 500, "db error\n");
}

static int bench_pg_item(fcgate_req *r)
{
    long long id;
    char idbuf[24], name[512], body[768];
    const char *params[1] = {idbuf};
    PGresult *res;

    if (query_ll(r, "id", &id) <= 0)
        return reply_text(r, 400, "bad id\n");
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    int rc = fcgate_pg_query(r, &res, "SELECT name, qty FROM items WHERE id = $1", 1, params);
    if (rc != FCGATE_OK)
        return reply_pg_error(r, "pg-item", rc, res);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return reply_text(r, 404, "no such item\n");
    }
    json_escape(name, sizeof name, (const unsigned char *)PQgetvalue(res, 0, 0));
    snprintf(body, sizeof body, "{\"id\":%lld,\"name\":\"%s\",\"qty\":%s}", id, name,
             PQgetvalue(res, 0, 1));
    PQclear(res);
    return reply(r, 200, "application/json", body);
}

static int bench_pg_sleep(fcgate_req *r)
{
    long long ms = DEFAULT_SLEEP_MS;
    char msbuf[24];
    const char *params[1] = {msbuf};
    PGresult *res;

    if (query_ll(r, "ms", &ms) < 0 || ms < 0 || ms > MAX_SLEEP_MS)
        return reply_text(r, 400, "bad ms\n");
    snprintf(msbuf, sizeof msbuf, "%lld", ms);
    int rc = fcgate_pg_query(r, &res, "SELECT pg_sleep($1::float8 / 1000)", 1, params);
    if (rc != FCGATE_OK)
        return reply_pg_error(r, "pg-sleep", rc, res);
    PQclear(res);
    return reply_text(r, 200, "ok\n");
}

static int bench_sleep(fcgate_req *r)
{
    long long ms = DEFAULT_SLEEP_MS;

    if (query_ll(r, "ms", &ms) < 0 || ms < 0 || ms > MAX_SLEEP_MS)
        return reply_text(r, 400, "bad ms\n");
    fcgate_sleep(r, (unsigned)ms);
    return reply_text(r, 200, "ok\n");
}

static int bench_handle(void *ctx, fcgate_req *r)
{
    const struct bench *b = ctx;
    const char *path = fcgate_path(r);

    if (strcmp(path, "/hello") == 0)
        return reply_text(r, 200, "hello\n");
    if (strcmp(path, "/item") == 0)
        return bench_item(r);
    if (strcmp(path, "/sleep") == 0)
        return bench_sleep(r);
    if (strcmp(path, "/pg-item") == 0)
        return bench_pg_item(r);
    if (strcmp(path, "/pg-sleep") == 0)
        return bench_pg_sleep(r);
    if (strcmp(path, "/cpu") == 0) {
        char body[16];
        snprintf(body, sizeof body, "%08x\n", cpu_work(b->cpu_iters));
        return reply_text(r, 200, body);
    }
    return reply_text(r, 404, "not found\n");
}

/* The items table exactly as peers/run.sh create_db makes it (10,000 rows). */
static const char items_sql[] =
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);"
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000) "
    "INSERT INTO items SELECT x, printf('item-%05d', x), (x * 7919) % 1000 FROM c;";

static int items_exist(sqlite3 *db, int *exist)
{
    sqlite3_stmt *st =
        fcgate_stmt(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'");
    int rc;

    if (!st)
        return FCGATE_EDB;
    rc = sqlite3_step(st);
    *exist = rc == SQLITE_ROW;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? FCGATE_OK : FCGATE_EDB;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return FCGATE_OK;
    fcgate_log(NULL, FCGATE_LOG_ERROR, "creating the items table: %s", msg ? msg : "?");
    sqlite3_free(msg);
    return FCGATE_EDB;
}

/* Looks before writing, so a read-only database that already has the
 * table (the peers harness's) works; looks again under the write lock,
 * because every worker runs this at once on a fresh database. */
static int items_schema(sqlite3 *db, void *arg)
{
    int exist, rc;

    (void)arg;
    if ((rc = items_exist(db, &exist)) != FCGATE_OK || exist)
        return rc;
    if ((rc = exec_sql(db, "BEGIN IMMEDIATE")) != FCGATE_OK)
        return rc;
    if ((rc = items_exist(db, &exist)) == FCGATE_OK && !exist)
        rc = exec_sql(db, items_sql);
    if (rc == FCGATE_OK)
        rc = exec_sql(db, "COMMIT");
    if (rc != FCGATE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* A whole decimal uint32, as the iteration count must be. */
static int parse_iters(const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int bench_init(const fcgate_host *h, void **ctx)
{
    const char *iters = fcgate_setting(h, "cpu_iters");
    struct bench *b = calloc(1, sizeof *b);
    int rc;

    if (!b)
        return -1;
    if (!iters || !*iters)
        iters = getenv("CPU_ITERS");
    b->cpu_iters = DEFAULT_CPU_ITERS;
    if (iters && *iters && parse_iters(iters, &b->cpu_iters) < 0) {
        fcgate_log(NULL, FCGATE_LOG_ERROR, "bad cpu_iters \"%s\": want 0..4294967295", iters);
        free(b);
        return -1;
    }
    rc = fcgate_host_db(h, items_schema, NULL);
    if (rc == FCGATE_EINVAL)
        fcgate_log(NULL, FCGATE_LOG_INFO, "no database: /item answers 500");
    else if (rc != FCGATE_OK) {
        free(b);
        return -1;
    }
    *ctx = b;
    return 0;
}

static void bench_fini(void *ctx)
{
    free(ctx);
}

FCGATE_APP(.name = "bench", .flags = FCGATE_APP_THREADSAFE, .init = bench_init,
           .handle = bench_handle, .fini = bench_fini);

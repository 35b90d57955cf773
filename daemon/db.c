/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * db.c - sqlite connections for the app: one per thread, never shared.
 *
 * Opened lazily on the first fcgate_db call of a thread, which is always
 * after fork (NOTES.md: a connection must never cross a fork). Each
 * connection is NOMUTEX (it is only ever used by its thread), in WAL mode
 * with synchronous=NORMAL and a busy timeout, and keeps a cache of
 * persistent prepared statements keyed by SQL text.
 */
#include "fcgate.h"
#include "log.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STMT_CACHE 64
#define BUSY_TIMEOUT_MS 5000
#define SNAPSHOT_RETRIES 5

struct cached_stmt {
    char *copy;
    sqlite3_stmt *stmt;
    unsigned long used; /* the db_run callback that last handed it out */
};

/* Statements are kept oldest first. A statement handed out during the
 * current db_run callback (used == run) is never finalized before that
 * callback returns: the app may still hold it. So the cache may grow past
 * STMT_CACHE within one callback; settle() trims it back after. */
struct db_conn {
    sqlite3 *db;
    unsigned long run; /* counts db_run callbacks */
    size_t nstmts, cap;
    struct cached_stmt *stmts;
};

static char *db_path;
static _Thread_local struct db_conn *tconn;

void db_configure(const char *path)
{
    db_path = path && *path ? strdup(path) : NULL;
}

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        log_error("database %s: %s: %s", db_path, sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Switching a new database to WAL takes an exclusive lock, and sqlite
 * does not call the busy handler for it: workers opening a fresh file
 * together would fail. Retry for up to two seconds instead. */
static int set_wal(sqlite3 *db)
{
    for (int i = 0; i < 200; i++) {
        int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return exec(db, "PRAGMA journal_mode=WAL");
}

static struct db_conn *conn_get(void)
{
    if (tconn)
        return tconn;
    if (!db_path)
        return NULL;
    struct db_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    int rc = sqlite3_open_v2(
        db_path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("cannot open database %s: %s", db_path,
                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    if (set_wal(c->db) < 0 || exec(c->db, "PRAGMA synchronous=NORMAL") < 0)
        goto fail;
    tconn = c;
    return c;
fail:
    sqlite3_close(c->db);
    free(c);
    return NULL;
}

static void evict(struct db_conn *c, size_t i)
{
    sqlite3_finalize(c->stmts[i].stmt);
    free(c->stmts[i].copy);
    memmove(&c->stmts[i], &c->stmts[i + 1], (c->nstmts - i - 1) * sizeof(c->stmts[0]));
    c->nstmts--;
}

/* Room for one more entry: the oldest statement the running callback has
 * not been handed makes way (its SQL is prepared again if used again);
 * when it holds them all, the array grows instead. 0, or -1 on ENOMEM. */
static int make_room(struct db_conn *c)
{
    if (c->nstmts >= STMT_CACHE) {
        for (size_t i = 0; i < c->nstmts; i++) {
            if (c->stmts[i].used != c->run) {
                evict(c, i);
                break;
            }
        }
    }
    if (c->nstmts < c->cap)
        return 0;
    size_t cap = c->cap ? c->cap * 2 : STMT_CACHE;
    struct cached_stmt *v = realloc(c->stmts, cap * sizeof(*v));
    if (!v)
        return -1;
    c->stmts = v;
    c->cap = cap;
    return 0;
}

sqlite3_stmt *fcgate_stmt(sqlite3 *db, const char *sql)
{
    struct db_conn *c = tconn;
    if (!c || c->db != db || !sql)
        return NULL;
    for (size_t i = 0; i < c->nstmts; i++) {
        if (strcmp(c->stmts[i].copy, sql) == 0) {
            sqlite3_reset(c->stmts[i].stmt);
            sqlite3_clear_bindings(c->stmts[i].stmt);
            c->stmts[i].used = c->run;
            return c->stmts[i].stmt;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        log_error("database %s: cannot prepare \"%s\": %s", db_path, sql, sqlite3_errmsg(db));
        return NULL;
    }
    char *copy = strdup(sql);
    if (!copy || make_room(c) < 0) {
        free(copy);
        sqlite3_finalize(st);
        return NULL;
    }
    c->stmts[c->nstmts++] = (struct cached_stmt){copy, st, c->run};
    return st;
}

/* After each call: no statement keeps a read snapshot open (it would pin
 * the WAL), no transaction outlives the call, and the cache is back to its
 * size (nothing is handed out between calls). */
static void settle(struct db_conn *c)
{
    for (size_t i = 0; i < c->nstmts; i++)
        sqlite3_reset(c->stmts[i].stmt);
    while (c->nstmts > STMT_CACHE)
        evict(c, 0);
    if (!sqlite3_get_autocommit(c->db))
        exec(c->db, "ROLLBACK");
}

int db_run(int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    struct db_conn *c = conn_get();
    if (!c)
        return db_path ? FCGATE_EDB : FCGATE_EINVAL;
    int rc = FCGATE_EDB;
    for (int attempt = 0; attempt < SNAPSHOT_RETRIES; attempt++) {
        c->run++;
        rc = fn(c->db, arg);
        int busy_snapshot =
            rc != FCGATE_OK && sqlite3_extended_errcode(c->db) == SQLITE_BUSY_SNAPSHOT;
        settle(c);
        if (!busy_snapshot)
            break;
    }
    return rc;
}

void db_close_thread(void)
{
    struct db_conn *c = tconn;
    if (!c)
        return;
    for (size_t i = 0; i < c->nstmts; i++) {
        sqlite3_finalize(c->stmts[i].stmt);
        free(c->stmts[i].copy);
    }
    free(c->stmts);
    sqlite3_close(c->db);
    free(c);
    tconn = NULL;
}

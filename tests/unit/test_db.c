/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_db.c - db.c's statement cache: a statement handed to a db_run
 * callback stays valid for that whole callback, however many others the
 * callback prepares after it.
 */
/* cmocka needs these first. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "fcgate.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* More than db.c caches (64), so a full cache must make room mid-call. */
#define DISTINCT 200

static char db_file[] = "/tmp/fcgate-test-db-XXXXXX";

/* sqlite's allocations, scribbled over when freed: a statement used after
 * sqlite3_finalize then fails every time, instead of only when its memory
 * happens to be reused (libsqlite3 itself is not built with ASan, so ASan
 * cannot see its reads). */
static void *scribble_malloc(int n)
{
    size_t *p = malloc(sizeof(size_t) + (size_t)n);
    if (!p)
        return NULL;
    *p = (size_t)n;
    return p + 1;
}

static void scribble_free(void *q)
{
    if (!q)
        return;
    size_t *p = (size_t *)q - 1;
    memset(q, 0xa5, *p);
    free(p);
}

static void *scribble_realloc(void *q, int n)
{
    void *r = scribble_malloc(n);
    if (r && q) {
        size_t old = ((size_t *)q)[-1];
        memcpy(r, q, old < (size_t)n ? old : (size_t)n);
        scribble_free(q);
    }
    return r;
}

static int scribble_size(void *q)
{
    return q ? (int)((size_t *)q)[-1] : 0;
}

static int scribble_roundup(int n)
{
    return (n + 7) & ~7;
}

static int scribble_init(void *arg)
{
    (void)arg;
    return SQLITE_OK;
}

static void scribble_shutdown(void *arg)
{
    (void)arg;
}

static const sqlite3_mem_methods scribbling = {
    scribble_malloc,  scribble_free, scribble_realloc,  scribble_size,
    scribble_roundup, scribble_init, scribble_shutdown, NULL};

static int setup(void **state)
{
    (void)state;
    /* Lookaside slots are recycled inside sqlite, unseen by the allocator. */
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &scribbling) != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) != SQLITE_OK)
        return -1;
    int fd = mkstemp(db_file);
    if (fd < 0)
        return -1;
    close(fd);
    db_configure(db_file);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    db_close_thread();
    unlink(db_file);
    char side[sizeof(db_file) + 8];
    snprintf(side, sizeof(side), "%s-wal", db_file);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", db_file);
    unlink(side);
    return 0;
}

static int step_int(sqlite3_stmt *st, long long *out)
{
    if (sqlite3_step(st) != SQLITE_ROW)
        return -1;
    *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

/* Prepares DISTINCT statements, then uses the first and a middle one. */
static int many_statements(sqlite3 *db, void *arg)
{
    long long *got = arg, v;
    sqlite3_stmt *held[DISTINCT];
    char sql[64];

    for (int i = 0; i < DISTINCT; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i + 1000);
        held[i] = fcgate_stmt(db, sql);
        if (!held[i])
            return FCGATE_EDB;
    }
    for (int i = 0; i < DISTINCT; i += 37) {
        if (step_int(held[i], &v) < 0)
            return FCGATE_EDB;
        got[i] = v;
    }
    return FCGATE_OK;
}

static void test_db_statement_stays_valid_for_the_whole_callback(void **state)
{
    long long got[DISTINCT] = {0};
    (void)state;
    assert_int_equal(db_run(many_statements, got), FCGATE_OK);
    for (int i = 0; i < DISTINCT; i += 37)
        assert_int_equal(got[i], i + 1000);
}

/* The cache grew past its size inside the call and is trimmed after it:
 * the next calls still work, on cached and on new statements. */
static void test_db_cache_works_again_after_growing(void **state)
{
    long long got[DISTINCT] = {0};
    (void)state;
    for (int round = 0; round < 3; round++) {
        memset(got, 0, sizeof(got));
        assert_int_equal(db_run(many_statements, got), FCGATE_OK);
        for (int i = 0; i < DISTINCT; i += 37)
            assert_int_equal(got[i], i + 1000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_db_statement_stays_valid_for_the_whole_callback),
        cmocka_unit_test(test_db_cache_works_again_after_growing),
    };
    return cmocka_run_group_tests_name("db", tests, setup, teardown);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_pg.c - pg.c without a PostgreSQL server: the answer when none is
 * configured, a server that is not there, and one that accepts but never
 * answers, whose wait goes through the caller's wait function and ends at
 * the request's deadline (FCGATE_ETIMEDOUT) or at io_timeout
 * (FCGATE_EUNAVAIL). tests/integration/test_postgres.py has the server.
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

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char dir[] = "/tmp/fcgate-test-pg-XXXXXX";
static char sock_path[100];

static void configure(const char *conninfo, int io_timeout_ms)
{
    struct pg_settings s = {
        .conninfo = conninfo,
        .pool = 2,
        .pool_timeout_s = 1,
        .prepare = 1,
        .io_timeout_ms = io_timeout_ms,
    };
    pg_close_thread();
    pg_configure(&s);
}

static int waits;

/* The engine's wait as the async engine would do it, counted. */
static int counting_wait(void *ctx, int fd, short events, int timeout_ms)
{
    struct pollfd p = {fd, events, 0};
    (void)ctx;
    waits++;
    int r = poll(&p, 1, timeout_ms);
    return r > 0 ? FCGATE_OK : r == 0 ? FCGATE_ETIMEDOUT : FCGATE_EIO;
}

static int never_called(fcgate_pg *tx, void *arg)
{
    (void)tx;
    (void)arg;
    fail_msg("the transaction callback ran without a connection");
    return FCGATE_OK;
}

static void test_pg_not_configured_is_einval(void **state)
{
    PGresult *res = (PGresult *)1;
    (void)state;
    configure(NULL, 1000);
    assert_false(pg_enabled());
    assert_int_equal(pg_query(NULL, &res, "SELECT 1", 0, NULL), FCGATE_EINVAL);
    assert_null(res);
    assert_int_equal(pg_transaction(NULL, never_called, NULL), FCGATE_EINVAL);
}

static void test_pg_bad_arguments_are_einval(void **state)
{
    (void)state;
    configure("host=/nonexistent dbname=x", 1000);
    assert_int_equal(pg_query(NULL, NULL, NULL, 0, NULL), FCGATE_EINVAL);
    assert_int_equal(pg_query(NULL, NULL, "SELECT $1", 1, NULL), FCGATE_EINVAL);
    assert_int_equal(pg_transaction(NULL, NULL, NULL), FCGATE_EINVAL);
    assert_int_equal(fcgate_pg_exec(NULL, NULL, "SELECT 1", 0, NULL), FCGATE_EINVAL);
}

static void test_pg_absent_server_is_unavailable_at_once(void **state)
{
    char conninfo[256];
    (void)state;
    snprintf(conninfo, sizeof(conninfo), "host=%s/none port=5432 dbname=x", dir);
    configure(conninfo, 5000);
    uint64_t t0 = monotonic_ms();
    assert_int_equal(pg_query(NULL, NULL, "SELECT 1", 0, NULL), FCGATE_EUNAVAIL);
    assert_int_equal(pg_transaction(NULL, never_called, NULL), FCGATE_EUNAVAIL);
    assert_true(monotonic_ms() - t0 < 2000);
}

/* A listening socket nobody accepts on: libpq's connect succeeds and its
 * startup packet waits forever for an answer. */
static int silent_server(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    snprintf(sock_path, sizeof(sock_path), "%s/.s.PGSQL.5432", dir);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
    unlink(sock_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

static void test_pg_silent_server_ends_at_the_request_deadline(void **state)
{
    char conninfo[256];
    int fd = silent_server();
    (void)state;
    snprintf(conninfo, sizeof(conninfo), "host=%s port=5432 dbname=x", dir);
    configure(conninfo, 60000);
    struct pg_wait w = {counting_wait, NULL, monotonic_ms() + 300, NULL, NULL};
    waits = 0;
    uint64_t t0 = monotonic_ms();
    assert_int_equal(pg_query(&w, NULL, "SELECT 1", 0, NULL), FCGATE_ETIMEDOUT);
    uint64_t took = monotonic_ms() - t0;
    assert_true(took >= 250 && took < 3000);
    assert_true(waits >= 1); /* it waited through the engine, not on its own */
    close(fd);
}

static void test_pg_silent_server_ends_at_io_timeout(void **state)
{
    char conninfo[256];
    int fd = silent_server();
    (void)state;
    snprintf(conninfo, sizeof(conninfo), "host=%s port=5432 dbname=x", dir);
    configure(conninfo, 300);
    uint64_t t0 = monotonic_ms();
    assert_int_equal(pg_query(NULL, NULL, "SELECT 1", 0, NULL), FCGATE_EUNAVAIL);
    assert_true(monotonic_ms() - t0 < 3000);
    close(fd);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    configure(NULL, 1000);
    unlink(sock_path);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_not_configured_is_einval),
        cmocka_unit_test(test_pg_bad_arguments_are_einval),
        cmocka_unit_test(test_pg_absent_server_is_unavailable_at_once),
        cmocka_unit_test(test_pg_silent_server_ends_at_the_request_deadline),
        cmocka_unit_test(test_pg_silent_server_ends_at_io_timeout),
    };
    return cmocka_run_group_tests_name("pg", tests, setup, teardown);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_config.c - config.c: defaults, every key (valid and invalid), every
 * kind of error message, includes, command-line overrides, config_check.
 */
/* cmocka.h needs these four first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcgate/app.h>

#include "config.h"

#define NAME "fcgate.conf"

static char tmpdir[] = "/tmp/test_config.XXXXXX";

/* ---- helpers ---- */

static void dump_errors(const struct config_errors *e)
{
    size_t i;

    for (i = 0; i < e->n; i++)
        print_message("  error %zu: %s\n", i, e->msg[i]);
}

/* Asserts that e holds exactly the n messages in want, in order. */
static void expect_error_list(const struct config_errors *e, size_t n, const char *const *want)
{
    size_t i;

    if (e->n != n)
        dump_errors(e);
    assert_int_equal(e->n, n);
    for (i = 0; i < n; i++) {
        if (strcmp(e->msg[i], want[i]) != 0)
            dump_errors(e);
        assert_string_equal(e->msg[i], want[i]);
    }
}

#define expect_errors(e, n, ...) expect_error_list((e), (n), (const char *const[]){__VA_ARGS__})

/* Defaults, then text as "fcgate.conf"; returns the error count. */
static int load(struct config *c, struct config_errors *e, const char *text)
{
    int n;

    memset(e, 0, sizeof(*e));
    assert_int_equal(config_defaults(c), 0);
    n = config_load_string(c, text, NAME, e);
    assert_int_equal((size_t)n, e->n);
    return n;
}

/* text must produce exactly one error, want. */
static void expect_one(const char *text, const char *want)
{
    struct config c;
    struct config_errors e;

    load(&c, &e, text);
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
}

/* text must load without errors. */
static void load_ok(struct config *c, const char *text)
{
    struct config_errors e;

    if (load(c, &e, text) != 0)
        dump_errors(&e);
    assert_int_equal(e.n, 0);
    config_errors_free(&e);
}

static char *tmp_path(const char *name)
{
    char *p;

    assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
    return p;
}

static char *write_tmp(const char *name, const char *text, size_t len)
{
    char *p = tmp_path(name);
    FILE *f = fopen(p, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return p;
}

static char *write_text(const char *name, const char *text)
{
    return write_tmp(name, text, strlen(text));
}

/* conf/fcgate.conf, found from this file's path in the source tree. */
static char *example_conf_path(void)
{
    char *p, *s;

    assert_true(asprintf(&p, "%s", __FILE__) > 0);
    s = strstr(p, "tests/unit/test_config.c");
    assert_non_null(s);
    strcpy(s, "conf/fcgate.conf");
    return p;
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    char *cmd;
    int r;

    (void)state;
    if (asprintf(&cmd, "rm -rf '%s'", tmpdir) < 0)
        return -1;
    r = system(cmd);
    free(cmd);
    return r == 0 ? 0 : -1;
}

/* ---- defaults and the example file ---- */

static void test_config_defaults_match_design(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_null(c.path);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0], "unix:/run/fcgate/fcgate.sock");
    assert_int_equal(c.listen_backlog, 1024);
    assert_int_equal(c.listen_mode, 0660);
    assert_null(c.user);
    assert_null(c.group);
    assert_null(c.pidfile);
    assert_int_equal(c.mode, MODE_THREADS);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.threads, 8);
    assert_int_equal(c.worker_connections, 1000);
    assert_int_equal(c.blocking_threads, 4);
    assert_int_equal(c.stack_size, 262144);
    assert_int_equal(c.timeout, 30);
    assert_int_equal(c.graceful_timeout, 30);
    assert_int_equal(c.max_requests, 0);
    assert_int_equal(c.max_requests_jitter, 0);
    assert_int_equal(c.pm, PM_STATIC);
    assert_int_equal(c.min_workers, 1);
    assert_int_equal(c.max_workers, 8);
    assert_int_equal(c.idle_timeout, 10);
    assert_int_equal(c.queue_timeout_ms, 0);
    assert_int_equal(c.max_memory, 0);
    assert_string_equal(c.app_module, "/usr/lib/fcgate/apps/notes.so");
    assert_string_equal(c.app_database, "/var/lib/fcgate/notes.db");
    assert_int_equal(c.nsettings, 0);
    assert_int_equal(c.log_level, FCGATE_LOG_INFO);
    assert_string_equal(c.log_error, "-");
    assert_null(c.log_access);
    assert_int_equal(c.max_params_bytes, 65536);
    assert_int_equal(c.max_body_bytes, 10485760);
    assert_null(c.app_module_origin);
    assert_null(c.listen_origin[0]);
    config_free(&c);
}

static void test_config_empty_text_keeps_defaults(void **state)
{
    struct config c, d;

    (void)state;
    load_ok(&c, "# nothing but a comment\n");
    assert_int_equal(config_defaults(&d), 0);
    assert_int_equal(c.workers, d.workers);
    assert_string_equal(c.listen[0], d.listen[0]);
    assert_string_equal(c.app_module, d.app_module);
    config_free(&c);
    config_free(&d);
}

/* conf/fcgate.conf must load cleanly and state exactly the defaults. */
static void test_config_example_file_equals_defaults(void **state)
{
    struct config c, d;
    struct config_errors e = {0};
    char *path = example_conf_path();

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    if (config_load_file(&c, path, &e) != 0)
        dump_errors(&e);
    assert_int_equal(e.n, 0);
    assert_int_equal(config_defaults(&d), 0);
    assert_int_equal(c.nlisten, d.nlisten);
    assert_string_equal(c.listen[0], d.listen[0]);
    assert_int_equal(c.listen_backlog, d.listen_backlog);
    assert_int_equal(c.listen_mode, d.listen_mode);
    assert_null(c.user);
    assert_null(c.group);
    assert_null(c.pidfile);
    assert_int_equal(c.mode, d.mode);
    assert_int_equal(c.workers, d.workers);
    assert_int_equal(c.threads, d.threads);
    assert_int_equal(c.worker_connections, d.worker_connections);
    assert_int_equal(c.blocking_threads, d.blocking_threads);
    assert_int_equal(c.timeout, d.timeout);
    assert_int_equal(c.graceful_timeout, d.graceful_timeout);
    assert_int_equal(c.max_requests, d.max_requests);
    assert_int_equal(c.max_requests_jitter, d.max_requests_jitter);
    assert_int_equal(c.pm, d.pm);
    assert_int_equal(c.min_workers, d.min_workers);
    assert_int_equal(c.max_workers, d.max_workers);
    assert_int_equal(c.idle_timeout, d.idle_timeout);
    assert_int_equal(c.queue_timeout_ms, d.queue_timeout_ms);
    assert_int_equal(c.max_memory, d.max_memory);
    assert_string_equal(c.app_module, d.app_module);
    assert_string_equal(c.app_database, d.app_database);
    assert_null(c.app_postgres);
    assert_int_equal(c.app_postgres_pool, d.app_postgres_pool);
    assert_int_equal(c.app_postgres_pool_timeout, d.app_postgres_pool_timeout);
    assert_int_equal(c.app_postgres_prepare, d.app_postgres_prepare);
    assert_int_equal(c.nsettings, 0);
    assert_int_equal(c.log_level, d.log_level);
    assert_string_equal(c.log_error, d.log_error);
    assert_null(c.log_access);
    assert_int_equal(c.max_params_bytes, d.max_params_bytes);
    assert_int_equal(c.max_body_bytes, d.max_body_bytes);
    assert_null(c.status_listen);
    assert_string_equal(c.path, path);
    config_errors_free(&e);
    config_free(&c);
    config_free(&d);
    free(path);
}

/* Every key of the schema appears in conf/fcgate.conf as "key =", set or
 * commented out. */
static void test_config_example_file_documents_every_key(void **state)
{
    static const char *const keys[] = {
        "listen",
        "listen_backlog",
        "listen_mode",
        "umask",
        "user",
        "group",
        "pidfile",
        "mode",
        "workers",
        "threads",
        "worker_connections",
        "blocking_threads",
        "stack_size",
        "timeout",
        "graceful_timeout",
        "max_requests",
        "max_requests_jitter",
        "pm",
        "min_workers",
        "max_workers",
        "idle_timeout",
        "queue_timeout",
        "max_memory",
        "app",
        "module",
        "database",
        "postgres",
        "postgres_pool",
        "postgres_pool_timeout",
        "postgres_prepare",
        "settings",
        "log",
        "level",
        "error",
        "access",
        "access_format",
        "limits",
        "max_params_bytes",
        "max_body_bytes",
        "status",
        "slowlog",
        "file",
    };
    char *path = example_conf_path(), *text, pat[64];
    FILE *f = fopen(path, "r");
    size_t i, len;

    (void)state;
    assert_non_null(f);
    text = calloc(1, 1 << 16);
    assert_non_null(text);
    len = fread(text, 1, (1 << 16) - 1, f);
    assert_true(len > 0);
    fclose(f);
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(pat, sizeof(pat), "%s = ", keys[i]);
        if (strstr(text, pat) == NULL)
            print_message("not documented: %s\n", keys[i]);
        assert_non_null(strstr(text, pat));
    }
    free(text);
    free(path);
}

/* ---- every key, valid values ---- */

static void test_config_accepts_every_key(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "listen = [ \"127.0.0.1:9000\", \"[::1]:9001\", \"unix:run/x.sock\" ];\n"
                "listen_backlog = 511;\n"
                "listen_mode = \"0600\";\n"
                "user = \"fcgate\";\n"
                "group = \"www-data\";\n"
                "pidfile = \"/run/fcgate/fcgate.pid\";\n"
                "mode = \"async\";\n"
                "workers = 2;\n"
                "threads = 16;\n"
                "worker_connections = 5000;\n"
                "blocking_threads = 8;\n"
                "timeout = 0;\n"
                "graceful_timeout = 86400;\n"
                "max_requests = 10000;\n"
                "max_requests_jitter = 500;\n"
                "app = { module = \"/opt/app.so\"; database = \"/tmp/x.db\";\n"
                "        settings = { page = 50; big = 5000000000L; ratio = 1.5;\n"
                "                     debug = true; off = false; greeting = \"hi there\"; }; };\n"
                "log = { level = \"debug\"; error = \"/var/log/fcgate/error.log\";\n"
                "        access = \"/var/log/fcgate/access.log\"; };\n"
                "limits = { max_params_bytes = 1024; max_body_bytes = 0; };\n");
    assert_int_equal(c.nlisten, 3);
    assert_string_equal(c.listen[0], "127.0.0.1:9000");
    assert_string_equal(c.listen[1], "[::1]:9001");
    assert_string_equal(c.listen[2], "unix:run/x.sock");
    assert_string_equal(c.listen_origin[0], NAME ":1");
    assert_int_equal(c.listen_backlog, 511);
    assert_int_equal(c.listen_mode, 0600);
    assert_string_equal(c.user, "fcgate");
    assert_string_equal(c.group, "www-data");
    assert_string_equal(c.pidfile, "/run/fcgate/fcgate.pid");
    assert_int_equal(c.mode, MODE_ASYNC);
    assert_int_equal(c.workers, 2);
    assert_int_equal(c.threads, 16);
    assert_int_equal(c.worker_connections, 5000);
    assert_int_equal(c.blocking_threads, 8);
    assert_int_equal(c.timeout, 0);
    assert_int_equal(c.graceful_timeout, 86400);
    assert_int_equal(c.max_requests, 10000);
    assert_int_equal(c.max_requests_jitter, 500);
    assert_string_equal(c.app_module, "/opt/app.so");
    assert_string_equal(c.app_module_origin, NAME ":16");
    assert_string_equal(c.app_database, "/tmp/x.db");
    assert_int_equal(c.nsettings, 6);
    assert_string_equal(config_setting(&c, "page"), "50");
    assert_string_equal(config_setting(&c, "big"), "5000000000");
    assert_string_equal(config_setting(&c, "ratio"), "1.5");
    assert_string_equal(config_setting(&c, "debug"), "true");
    assert_string_equal(config_setting(&c, "off"), "false");
    assert_string_equal(config_setting(&c, "greeting"), "hi there");
    assert_null(config_setting(&c, "absent"));
    assert_int_equal(c.log_level, FCGATE_LOG_DEBUG);
    assert_string_equal(c.log_error, "/var/log/fcgate/error.log");
    assert_string_equal(c.log_access, "/var/log/fcgate/access.log");
    assert_int_equal(c.max_params_bytes, 1024);
    assert_int_equal(c.max_body_bytes, 0);
    config_free(&c);
}

/* The status endpoint: off by default, one address checked like
 * listen's, and its own socket mode. */
static void test_config_status_group(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "");
    assert_null(c.status_listen);
    assert_int_equal(c.status_listen_mode, 0660);
    config_free(&c);
    load_ok(&c,
            "status = { listen = \"unix:/run/fcgate/status.sock\"; listen_mode = \"0600\"; };\n");
    assert_string_equal(c.status_listen, "unix:/run/fcgate/status.sock");
    assert_int_equal(c.status_listen_mode, 0600);
    config_free(&c);
    load_ok(&c, "status = { listen = \"127.0.0.1:9001\"; };\n");
    assert_string_equal(c.status_listen, "127.0.0.1:9001");
    config_free(&c);
    expect_one("status = { listen = \"nowhere\"; };\n",
               NAME ":1: bad listen address 'nowhere': missing port (use HOST:PORT or unix:PATH)");
    expect_one("status = { listen = \"unix:/x\"; path = \"/status\"; };\n",
               NAME ":1: unknown key 'status.path'");
    expect_one("status = \"unix:/x\";\n",
               NAME ":1: 'status' must be a group, like status = { ... }");
}

/* The slow log: off by default (no file), a timeout in seconds with a
 * fraction, 5 s unless set. */
static void test_config_slowlog_group(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "");
    assert_null(c.slowlog_file);
    assert_int_equal(c.slowlog_timeout_ms, 5000);
    config_free(&c);
    load_ok(&c, "slowlog = { file = \"/var/log/fcgate/slow.log\"; timeout = 0.25; };\n");
    assert_string_equal(c.slowlog_file, "/var/log/fcgate/slow.log");
    assert_int_equal(c.slowlog_timeout_ms, 250);
    config_free(&c);
    load_ok(&c, "slowlog = { file = \"-\"; timeout = 2; };\n");
    assert_string_equal(c.slowlog_file, "-");
    assert_int_equal(c.slowlog_timeout_ms, 2000);
    config_free(&c);
    expect_one("slowlog = { file = \"/x\"; timeout = 0; };\n",
               NAME ":1: 'slowlog.timeout' must be between 0.001 and 86400 seconds, not 0");
    expect_one("slowlog = { file = \"/x\"; timeout = \"5s\"; };\n",
               NAME ":1: 'slowlog.timeout' must be a number of seconds, like 5 or 0.5");
    expect_one("slowlog = { file = \"/x\"; timeout = 90000.0; };\n",
               NAME ":1: 'slowlog.timeout' must be between 0.001 and 86400 seconds, not 90000");
}

/* app.postgres is checked by libpq's parser (syntax, not reachability);
 * its pool keys have documented defaults and ranges. */
static void test_config_postgres_keys(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "");
    assert_null(c.app_postgres);
    assert_int_equal(c.app_postgres_pool, 4);
    assert_int_equal(c.app_postgres_pool_timeout, 5);
    assert_int_equal(c.app_postgres_prepare, 1);
    config_free(&c);
    load_ok(&c, "app = { postgres = \"host=/run/postgresql dbname=app\"; postgres_pool = 16;\n"
                "        postgres_pool_timeout = 2; postgres_prepare = false; };\n");
    assert_string_equal(c.app_postgres, "host=/run/postgresql dbname=app");
    assert_int_equal(c.app_postgres_pool, 16);
    assert_int_equal(c.app_postgres_pool_timeout, 2);
    assert_int_equal(c.app_postgres_prepare, 0);
    config_free(&c);
    load_ok(&c,
            "app = { postgres = \"postgresql://app@127.0.0.1:5432/app?connect_timeout=3\"; };\n");
    assert_string_equal(c.app_postgres, "postgresql://app@127.0.0.1:5432/app?connect_timeout=3");
    config_free(&c);
    load_ok(&c, "app = { postgres = \"\"; };\n");
    assert_null(c.app_postgres);
    config_free(&c);
    expect_one("app = { postgres = \"host=/tmp dbname\"; };\n",
               NAME ":1: 'app.postgres': missing \"=\" after \"dbname\" in connection info string");
    expect_one("app = { postgres = \"hots=/tmp\"; };\n",
               NAME ":1: 'app.postgres': invalid connection option \"hots\"");
    expect_one("app = { postgres = \"postgresql://[::1\"; };\n",
               NAME ":1: 'app.postgres': end of string reached when looking for matching \"]\" "
                    "in IPv6 host address in URI: \"postgresql://[::1\"");
    expect_one("app = { postgres = 5; };\n", NAME ":1: 'app.postgres' must be a string");
    expect_one("app = { postgres_pool = 0; };\n",
               NAME ":1: 'app.postgres_pool' must be between 1 and 1024, not 0");
    expect_one("app = { postgres_pool = 1025; };\n",
               NAME ":1: 'app.postgres_pool' must be between 1 and 1024, not 1025");
    expect_one("app = { postgres_pool_timeout = 0; };\n",
               NAME ":1: 'app.postgres_pool_timeout' must be between 1 and 86400, not 0");
    expect_one("app = { postgres_prepare = 1; };\n",
               NAME ":1: 'app.postgres_prepare' must be true or false");
}

/* Integer keys at their lowest and highest allowed values. */
static void test_config_accepts_integer_bounds(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "listen_backlog = 1; workers = 1; threads = 1; worker_connections = 1;\n"
                "blocking_threads = 1; timeout = 0; graceful_timeout = 0;\n"
                "max_requests = 0; max_requests_jitter = 0;\n"
                "limits = { max_params_bytes = 1024; max_body_bytes = 0; };\n");
    assert_int_equal(c.listen_backlog, 1);
    assert_int_equal(c.workers, 1);
    assert_int_equal(c.threads, 1);
    assert_int_equal(c.worker_connections, 1);
    assert_int_equal(c.blocking_threads, 1);
    assert_int_equal(c.graceful_timeout, 0);
    assert_int_equal(c.max_params_bytes, 1024);
    config_free(&c);

    load_ok(&c, "listen_backlog = 65535; workers = 1024; threads = 1024;\n"
                "worker_connections = 1000000; blocking_threads = 256; timeout = 86400;\n"
                "graceful_timeout = 86400; max_requests = 2147483647;\n"
                "max_requests_jitter = 2147483647;\n"
                "limits = { max_params_bytes = 16777216; max_body_bytes = 4294967296L; };\n");
    assert_int_equal(c.listen_backlog, 65535);
    assert_int_equal(c.workers, 1024);
    assert_int_equal(c.threads, 1024);
    assert_int_equal(c.worker_connections, 1000000);
    assert_int_equal(c.blocking_threads, 256);
    assert_int_equal(c.timeout, 86400);
    assert_int_equal(c.graceful_timeout, 86400);
    assert_int_equal(c.max_requests, 2147483647L);
    assert_int_equal(c.max_requests_jitter, 2147483647L);
    assert_int_equal(c.max_params_bytes, 16777216);
    assert_int_equal(c.max_body_bytes, 4294967296ull);
    config_free(&c);
}

/* One step past each bound is refused with the range and the value. */
static void test_config_rejects_out_of_range_integers(void **state)
{
    static const char *const cases[][2] = {
        {"listen_backlog = 0;", NAME ":1: 'listen_backlog' must be between 1 and 65535, not 0"},
        {"listen_backlog = 65536;",
         NAME ":1: 'listen_backlog' must be between 1 and 65535, not 65536"},
        {"workers = 0;", NAME ":1: 'workers' must be between 1 and 1024, not 0"},
        {"workers = 1025;", NAME ":1: 'workers' must be between 1 and 1024, not 1025"},
        {"workers = -3;", NAME ":1: 'workers' must be between 1 and 1024, not -3"},
        {"threads = 0;", NAME ":1: 'threads' must be between 1 and 1024, not 0"},
        {"threads = 1025;", NAME ":1: 'threads' must be between 1 and 1024, not 1025"},
        {"worker_connections = 0;",
         NAME ":1: 'worker_connections' must be between 1 and 1000000, not 0"},
        {"worker_connections = 1000001;",
         NAME ":1: 'worker_connections' must be between 1 and 1000000, not 1000001"},
        {"blocking_threads = 0;", NAME ":1: 'blocking_threads' must be between 1 and 256, not 0"},
        {"stack_size = 4096;",
         NAME ":1: 'stack_size' must be between 32768 and 67108864, not 4096"},
        {"blocking_threads = 257;",
         NAME ":1: 'blocking_threads' must be between 1 and 256, not 257"},
        {"timeout = -1;", NAME ":1: 'timeout' must be between 0 and 86400, not -1"},
        {"timeout = 86401;", NAME ":1: 'timeout' must be between 0 and 86400, not 86401"},
        {"graceful_timeout = -1;",
         NAME ":1: 'graceful_timeout' must be between 0 and 86400, not -1"},
        {"graceful_timeout = 86401;",
         NAME ":1: 'graceful_timeout' must be between 0 and 86400, not 86401"},
        {"max_requests = -1;", NAME ":1: 'max_requests' must be between 0 and 2147483647, not -1"},
        {"max_requests = 2147483648L;",
         NAME ":1: 'max_requests' must be between 0 and 2147483647, not 2147483648"},
        {"max_requests_jitter = -1;",
         NAME ":1: 'max_requests_jitter' must be between 0 and 2147483647, not -1"},
        {"max_requests_jitter = 2147483648L;",
         NAME ":1: 'max_requests_jitter' must be between 0 and 2147483647, not 2147483648"},
        {"limits = { max_params_bytes = 1023; };",
         NAME ":1: 'limits.max_params_bytes' must be between 1024 and 16777216, not 1023"},
        {"limits = { max_params_bytes = 16777217; };",
         NAME ":1: 'limits.max_params_bytes' must be between 1024 and 16777216, not 16777217"},
        {"limits = { max_body_bytes = -1; };",
         NAME ":1: 'limits.max_body_bytes' must be between 0 and 4294967296, not -1"},
        {"limits = { max_body_bytes = 4294967297L; };",
         NAME ":1: 'limits.max_body_bytes' must be between 0 and 4294967296, not 4294967297"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_one(cases[i][0], cases[i][1]);
}

/* A float, a string, a boolean or a group where an integer belongs. */
static void test_config_rejects_wrong_types(void **state)
{
    static const char *const cases[][2] = {
        {"workers = 4.0;", NAME ":1: 'workers' must be an integer"},
        {"workers = \"4\";", NAME ":1: 'workers' must be an integer"},
        {"threads = true;", NAME ":1: 'threads' must be an integer"},
        {"listen_backlog = [ 1 ];", NAME ":1: 'listen_backlog' must be an integer"},
        {"worker_connections = 1e3;", NAME ":1: 'worker_connections' must be an integer"},
        {"blocking_threads = \"x\";", NAME ":1: 'blocking_threads' must be an integer"},
        {"timeout = 1.5;", NAME ":1: 'timeout' must be an integer"},
        {"graceful_timeout = { };", NAME ":1: 'graceful_timeout' must be an integer"},
        {"max_requests = \"0\";", NAME ":1: 'max_requests' must be an integer"},
        {"max_requests_jitter = 0.0;", NAME ":1: 'max_requests_jitter' must be an integer"},
        {"limits = { max_params_bytes = \"64k\"; };",
         NAME ":1: 'limits.max_params_bytes' must be an integer"},
        {"limits = { max_body_bytes = 1.0e7; };",
         NAME ":1: 'limits.max_body_bytes' must be an integer"},
        {"user = 1000;", NAME ":1: 'user' must be a string"},
        {"group = 33;", NAME ":1: 'group' must be a string"},
        {"pidfile = false;", NAME ":1: 'pidfile' must be a string"},
        {"mode = 1;", NAME ":1: 'mode' must be a string"},
        {"app = { module = 1; };", NAME ":1: 'app.module' must be a string"},
        {"app = { database = 0; };", NAME ":1: 'app.database' must be a string"},
        {"log = { level = 6; };", NAME ":1: 'log.level' must be a string"},
        {"log = { error = 2; };", NAME ":1: 'log.error' must be a string"},
        {"log = { access = false; };", NAME ":1: 'log.access' must be a string"},
        {"log = { access_format = \"$method $nope\"; };",
         NAME ":1: 'log.access_format': unknown variable '$nope'"},
        {"listen_mode = 0660;", NAME ":1: 'listen_mode' must be a string of octal digits, "
                                     "like \"0660\""},
        {"listen = \"127.0.0.1:9000\";",
         NAME ":1: 'listen' must be an array of strings, like [ \"127.0.0.1:9000\" ]"},
        {"app = \"/x.so\";", NAME ":1: 'app' must be a group, like app = { ... }"},
        {"log = [ \"info\" ];", NAME ":1: 'log' must be a group, like log = { ... }"},
        {"limits = ( 1 );", NAME ":1: 'limits' must be a group, like limits = { ... }"},
        {"app = { settings = [ 1 ]; };",
         NAME ":1: 'app.settings' must be a group, like settings = { name = \"value\"; }"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_one(cases[i][0], cases[i][1]);
}

/* A rejected value leaves the previous one in place. */
static void test_config_rejected_value_keeps_previous(void **state)
{
    struct config c;
    struct config_errors e;

    (void)state;
    assert_int_equal(load(&c, &e, "workers = 0;\nmode = \"fast\";\nlisten = [ \"x\" ];\n"), 3);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.mode, MODE_THREADS);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0], "unix:/run/fcgate/fcgate.sock");
    config_errors_free(&e);
    config_free(&c);
}

/* ---- unknown keys ---- */

static void test_config_rejects_unknown_key(void **state)
{
    (void)state;
    expect_one("workers = 4;\n\n\n\n\n\nworker = 4;\n", NAME ":7: unknown key 'worker'");
    expect_one("Workers = 4;", NAME ":1: unknown key 'Workers'");
    expect_one("app = {\n  modul = \"/x.so\";\n};", NAME ":2: unknown key 'app.modul'");
    expect_one("log = { levle = \"info\"; };", NAME ":1: unknown key 'log.levle'");
    expect_one("limits = { max_body = 1; };", NAME ":1: unknown key 'limits.max_body'");
    expect_one("app = { settings = { }; extra = { }; };", NAME ":1: unknown key 'app.extra'");
}

/* A key spelled twice is libconfig's error. */
static void test_config_rejects_duplicate_key(void **state)
{
    (void)state;
    expect_one("workers = 4;\nworkers = 5;\n", NAME ":2: duplicate setting name");
}

/* ---- collected errors, syntax errors ---- */

static void test_config_reports_every_error_with_line(void **state)
{
    struct config c;
    struct config_errors e;

    (void)state;
    assert_int_equal(load(&c, &e,
                          "listen = [ \"127.0.0.1:9000\",\n"  /* 1 */
                          "           \"foo\" ];\n"           /* 2 */
                          "workers = \"4\";\n"                /* 3 */
                          "threads = 0;\n"                    /* 4 */
                          "mode = \"fast\";\n"                /* 5 */
                          "app = {\n"                         /* 6 */
                          "  module = \"\";\n"                /* 7 */
                          "  colour = \"blue\";\n"            /* 8 */
                          "};\n"                              /* 9 */
                          "log = { level = \"loud\"; };\n"    /* 10 */
                          "limits = {\n"                      /* 11 */
                          "  max_body_bytes = 9999999999L;\n" /* 12 */
                          "};\n"                              /* 13 */
                          "worker = 1;\n"),                   /* 14 */
                     9);
    expect_errors(&e, 9,
                  NAME ":2: bad listen address 'foo': missing port (use HOST:PORT or unix:PATH)",
                  NAME ":3: 'workers' must be an integer",
                  NAME ":4: 'threads' must be between 1 and 1024, not 0",
                  NAME ":5: 'mode' must be \"sync\", \"threads\" or \"async\", not \"fast\"",
                  NAME ":7: 'app.module' must not be empty", NAME ":8: unknown key 'app.colour'",
                  NAME ":10: 'log.level' must be \"error\", \"warn\", \"info\" or \"debug\", "
                       "not \"loud\"",
                  NAME ":12: 'limits.max_body_bytes' must be between 0 and 4294967296, "
                       "not 9999999999",
                  NAME ":14: unknown key 'worker'");
    config_errors_free(&e);
    config_free(&c);
}

static void test_config_syntax_error_has_file_and_line(void **state)
{
    (void)state;
    expect_one("workers = 4;\nthreads = ;\n", NAME ":2: syntax error");
    expect_one("listen = [ \"127.0.0.1:9000\", ];\n", NAME ":1: syntax error");
    expect_one("app = { module = \"/x.so\";\n", NAME ":2: syntax error");
    expect_one("listen = [ 1, \"x\" ];", NAME ":1: mismatched element type in array");
}

static void test_config_string_without_name_uses_placeholder(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_string(&c, "worker = 1;", NULL, &e), 1);
    expect_errors(&e, 1, "(string):1: unknown key 'worker'");
    config_errors_free(&e);
    config_free(&c);
}

/* A file that did not parse says so: the checks of final values must not
 * run on the defaults it never reached. A parsed file with bad values does
 * not. */
static void test_config_syntax_error_marks_file_unparsed(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_string(&c, "workers = 2;\nthreads = ;\n", NAME, &e), 1);
    assert_true(e.unparsed);
    config_errors_free(&e);
    assert_false(e.unparsed);
    assert_int_equal(config_load_string(&c, "workers = \"four\";\n", NAME, &e), 1);
    assert_false(e.unparsed);
    config_errors_free(&e);
    config_free(&c);
}

/* Errors may be counted without being collected. */
static void test_config_counts_errors_without_list(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_string(&c, "worker = 1; threads = 0;", NAME, NULL), 2);
    assert_int_equal(config_override(&c, "workers", "0", NULL), 1);
    config_free(&c);
}

/* Control bytes from the file come back escaped and long values cut, so a
 * message stays one printable line. */
static void test_config_escapes_values_in_messages(void **state)
{
    char text[400], want[400];

    (void)state;
    expect_one("mode = \"a\\nb\\x1b[31m\";",
               NAME ":1: 'mode' must be \"sync\", \"threads\" or \"async\", "
                    "not \"a\\x0ab\\x1b[31m\"");
    snprintf(text, sizeof(text), "mode = \"%0200d\";", 0);
    snprintf(want, sizeof(want),
             NAME ":1: 'mode' must be \"sync\", \"threads\" or \"async\", not \"%080d...\"", 0);
    expect_one(text, want);
}

/* libconfig 1.5 leaks its string buffer on a string still open at the end
 * of the text (found by fuzz_config): such text never reaches it. */
static void test_config_unterminated_string_is_an_error(void **state)
{
    (void)state;
    expect_one("workers = 2;\nmode = \"sync;\nthreads = 3;\n", NAME ":2: unterminated string");
    expect_one("mode = \"sync\\\";", NAME ":1: unterminated string");
    expect_one("@include \"other.conf", NAME ":1: unterminated @include file name");
}

/* libconfig 1.5 accepts a comment left open and ignores everything after
 * it; a forgotten * / must not silently drop half the configuration. */
static void test_config_unterminated_comment_is_an_error(void **state)
{
    (void)state;
    expect_one("workers = 2;\n/* threads = 3;\nmode = \"sync\";\n",
               NAME ":2: unterminated /* comment");
}

/* ---- libconfig integer widths ---- */

static void test_config_int64_body_limit(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "limits = { max_body_bytes = 4294967296L; };");
    assert_int_equal(c.max_body_bytes, 4294967296ull);
    config_free(&c);
    load_ok(&c, "limits = { max_body_bytes = 3000000000L; max_params_bytes = 2048L; };");
    assert_int_equal(c.max_body_bytes, 3000000000ull);
    assert_int_equal(c.max_params_bytes, 2048);
    config_free(&c);
    /* Small values with the L suffix are INT64 too, and fine anywhere. */
    load_ok(&c, "workers = 8L; max_requests = 100L;");
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.max_requests, 100);
    config_free(&c);
    expect_one("limits = { max_body_bytes = 5000000000L; };",
               NAME ":1: 'limits.max_body_bytes' must be between 0 and 4294967296, "
                    "not 5000000000");
}

/* libconfig 1.5 fact documented in conf/fcgate.conf: without L, a value
 * above INT_MAX is silently truncated before fcgate sees it. If this test
 * fails, libconfig was fixed and the comment there can go. */
static void test_config_bare_big_integer_is_truncated_by_libconfig(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "limits = { max_body_bytes = 5000000000; };");
    assert_int_equal(c.max_body_bytes, 705032704);
    config_free(&c);
}

/* ---- listen ---- */

static void test_config_listen_accepts_array_and_list(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "listen = ( \"*:9000\", \"unix:/tmp/a.sock\" );");
    assert_int_equal(c.nlisten, 2);
    assert_string_equal(c.listen[0], "*:9000");
    assert_string_equal(c.listen[1], "unix:/tmp/a.sock");
    config_free(&c);
}

static void test_config_listen_rejects_bad_entries(void **state)
{
    struct config c;
    struct config_errors e;
    char text[2048];
    size_t o;
    int i;

    (void)state;
    expect_one("listen = [ ];", NAME ":1: 'listen' must list between 1 and 16 addresses, not 0");
    o = (size_t)snprintf(text, sizeof(text), "listen = [");
    for (i = 0; i < 17; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s\"127.0.0.1:%d\"", i ? ", " : " ",
                              9000 + i);
    snprintf(text + o, sizeof(text) - o, " ];");
    expect_one(text, NAME ":1: 'listen' must list between 1 and 16 addresses, not 17");
    expect_one("listen = [ 1 ];\n", NAME ":1: 'listen' entries must be strings");
    expect_one("listen = [ \"127.0.0.1:0\" ];",
               NAME ":1: bad listen address '127.0.0.1:0': bad port '0' (must be 1..65535)");
    expect_one("listen = [ \"localhost:9000\" ];",
               NAME ":1: bad listen address 'localhost:9000': bad IPv4 address 'localhost' "
                    "(host names are not resolved)");

    /* Each bad element is reported at its own line, and all of them.
     * libconfig 1.5 stamps an element with the line of the token after it,
     * so the last element is reported on the line of the closing ')'. */
    assert_int_equal(load(&c, &e,
                          "listen = (\n"
                          "  \"127.0.0.1:9000\",\n"
                          "  7,\n"
                          "  \"[::1]\"\n"
                          ");\n"),
                     2);
    expect_errors(&e, 2, NAME ":3: 'listen' entries must be strings",
                  NAME ":5: bad listen address '[::1]': missing port");
    config_errors_free(&e);
    config_free(&c);
}

/* ---- string keys ---- */

static void test_config_listen_mode_is_octal_string(void **state)
{
    static const char *const bad[] = {"0778", "abc", "", "01000", "0o660", "-1", "99999999999"};
    struct config c;
    char text[128], want[256];
    size_t i;

    (void)state;
    load_ok(&c, "listen_mode = \"660\";");
    assert_int_equal(c.listen_mode, 0660);
    config_free(&c);
    load_ok(&c, "listen_mode = \"0777\";");
    assert_int_equal(c.listen_mode, 0777);
    config_free(&c);
    load_ok(&c, "listen_mode = \"0\";");
    assert_int_equal(c.listen_mode, 0);
    config_free(&c);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "listen_mode = \"%s\";", bad[i]);
        snprintf(want, sizeof(want),
                 NAME ":1: 'listen_mode' must be octal permission bits between \"0\" and "
                      "\"0777\", not \"%s\"",
                 bad[i]);
        expect_one(text, want);
    }
}

static void test_config_mode_values(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "mode = \"sync\";");
    assert_int_equal(c.mode, MODE_SYNC);
    config_free(&c);
    load_ok(&c, "mode = \"threads\";");
    assert_int_equal(c.mode, MODE_THREADS);
    config_free(&c);
    load_ok(&c, "mode = \"async\";");
    assert_int_equal(c.mode, MODE_ASYNC);
    config_free(&c);
    expect_one("mode = \"Sync\";",
               NAME ":1: 'mode' must be \"sync\", \"threads\" or \"async\", not \"Sync\"");
    assert_string_equal(config_mode_name(MODE_SYNC), "sync");
    assert_string_equal(config_mode_name(MODE_THREADS), "threads");
    assert_string_equal(config_mode_name(MODE_ASYNC), "async");
    assert_string_equal(config_mode_name((enum config_mode)42), "unknown");
}

static void test_config_user_group_must_not_be_empty(void **state)
{
    (void)state;
    expect_one("user = \"\";", NAME ":1: 'user' must not be empty");
    expect_one("group = \"\";", NAME ":1: 'group' must not be empty");
}

/* "" turns a path off: no pidfile, no database. */
static void test_config_empty_pidfile_and_database_mean_none(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "pidfile = \"/run/x.pid\";");
    assert_string_equal(c.pidfile, "/run/x.pid");
    assert_int_equal(
        config_load_string(&c, "pidfile = \"\";\napp = { database = \"\"; };\n", NAME, NULL), 0);
    assert_null(c.pidfile);
    assert_null(c.app_database);
    config_free(&c);
}

static void test_config_app_module(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "\n\napp = {\n  module = \"./notes.so\";\n};");
    assert_string_equal(c.app_module, "./notes.so");
    assert_string_equal(c.app_module_origin, NAME ":4");
    config_free(&c);
    expect_one("app = { module = \"\"; };", NAME ":1: 'app.module' must not be empty");
}

static void test_config_settings_are_strings(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "app = { settings = { n = -7; hex = 0x1F; third = 0.1; sci = 1e300;\n"
                "                     yes = TRUE; s = \"a\" \"b\"; empty = \"\"; }; };");
    assert_int_equal(c.nsettings, 7);
    assert_string_equal(config_setting(&c, "n"), "-7");
    assert_string_equal(config_setting(&c, "hex"), "31");
    assert_string_equal(config_setting(&c, "third"), "0.1");
    assert_string_equal(config_setting(&c, "sci"), "1e+300");
    assert_string_equal(config_setting(&c, "yes"), "true");
    assert_string_equal(config_setting(&c, "s"), "ab");
    assert_string_equal(config_setting(&c, "empty"), "");
    config_free(&c);

    /* A later settings group replaces the earlier one as a whole. */
    load_ok(&c, "app = { settings = { a = 1; b = 2; }; };");
    assert_int_equal(config_load_string(&c, "app = { settings = { c = 3; }; };", NAME, NULL), 0);
    assert_int_equal(c.nsettings, 1);
    assert_null(config_setting(&c, "a"));
    assert_string_equal(config_setting(&c, "c"), "3");
    config_free(&c);
}

static void test_config_settings_reject_nested_values(void **state)
{
    struct config c;
    struct config_errors e;

    (void)state;
    assert_int_equal(load(&c, &e,
                          "app = { settings = {\n"
                          "  ok = 1;\n"
                          "  g = { x = 1; };\n"
                          "  a = [ 1, 2 ];\n"
                          "  l = ( \"x\" );\n"
                          "}; };\n"),
                     3);
    expect_errors(&e, 3, NAME ":3: 'app.settings.g' must be a number, a boolean or a string",
                  NAME ":4: 'app.settings.a' must be a number, a boolean or a string",
                  NAME ":5: 'app.settings.l' must be a number, a boolean or a string");
    /* None of the group is kept when part of it is wrong. */
    assert_int_equal(c.nsettings, 0);
    config_errors_free(&e);
    config_free(&c);
}

static void test_config_log_keys(void **state)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", FCGATE_LOG_ERROR},
                  {"warn", FCGATE_LOG_WARN},
                  {"info", FCGATE_LOG_INFO},
                  {"debug", FCGATE_LOG_DEBUG}};
    struct config c;
    char text[128];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        snprintf(text, sizeof(text), "log = { level = \"%s\"; };", levels[i].name);
        load_ok(&c, text);
        assert_int_equal(c.log_level, levels[i].level);
        config_free(&c);
    }
    expect_one("log = { level = \"warning\"; };",
               NAME ":1: 'log.level' must be \"error\", \"warn\", \"info\" or \"debug\", "
                    "not \"warning\"");

    load_ok(&c, "log = { access = \"-\"; error = \"/tmp/e.log\"; };");
    assert_string_equal(c.log_access, "-");
    assert_string_equal(c.log_error, "/tmp/e.log");
    assert_int_equal(config_load_string(&c, "log = { access = \"off\"; };", NAME, NULL), 0);
    assert_null(c.log_access);
    config_free(&c);
    expect_one("log = { access = \"\"; };",
               NAME ":1: 'log.access' must not be empty (\"off\" turns it off)");
    expect_one("log = { error = \"\"; };", NAME ":1: 'log.error' must not be empty");
}

/* A second load only changes the keys it names. */
static void test_config_second_load_overrides_only_its_keys(void **state)
{
    struct config c;

    (void)state;
    load_ok(&c, "workers = 7; threads = 3;");
    assert_int_equal(config_load_string(&c, "threads = 5;", NAME, NULL), 0);
    assert_int_equal(c.workers, 7);
    assert_int_equal(c.threads, 5);
    config_free(&c);
}

/* ---- files and includes ---- */

static void test_config_missing_file_reports_strerror(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *path = tmp_path("does-not-exist.conf"), want[512];

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
    expect_errors(&e, 1, want);
    config_errors_free(&e);

    /* A directory is not a file: a clear message, not libconfig's exit(). */
    assert_int_equal(config_load_file(&c, tmpdir, &e), 1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", tmpdir, strerror(EISDIR));
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
    free(path);
}

static void test_config_unreadable_file_reports_strerror(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *path, want[512];

    (void)state;
    if (geteuid() == 0)
        skip(); /* root reads mode 000 files */
    path = write_text("secret.conf", "workers = 2;\n");
    assert_int_equal(chmod(path, 0), 0);
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(EACCES));
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
    unlink(path);
    free(path);
}

static void test_config_file_errors_name_the_path(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *path = write_text("errors.conf", "workers = 2;\n\nworker = 3;\nthreads = ;\n");
    char want[512];

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    snprintf(want, sizeof(want), "%s:4: syntax error", path);
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
    unlink(path);
    free(path);

    path = write_text("errors2.conf", "workers = 2;\n\nworker = 3;\n");
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    snprintf(want, sizeof(want), "%s:3: unknown key 'worker'", path);
    expect_errors(&e, 1, want);
    assert_int_equal(c.workers, 2);
    assert_string_equal(c.path, path);
    config_errors_free(&e);
    config_free(&c);
    unlink(path);
    free(path);
}

/* libconfig would stop reading at a NUL; the rest of the file would be
 * silently ignored. */
static void test_config_file_with_nul_byte_is_refused(void **state)
{
    struct config c;
    struct config_errors e = {0};
    static const char text[] = "workers = 2;\nthreads = 3;\0 worker = 1;\n";
    char *path = write_tmp("nul.conf", text, sizeof(text) - 1);
    char want[512];

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    snprintf(want, sizeof(want), "%s:2: NUL byte in the file", path);
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
    unlink(path);
    free(path);
}

/* @include names are relative to the including file's directory, not to
 * the current directory; errors inside name the included file. */
static void test_config_include_is_relative_to_file(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *sub = tmp_path("inc"), *main_path, *inc_path, *bad_path, cwd[4096], want[1024];

    (void)state;
    assert_int_equal(mkdir(sub, 0700), 0);
    inc_path = write_text("inc/workers.conf", "workers = 9;\nthreads = 0;\n");
    main_path = write_text("inc/main.conf", "mode = \"sync\";\n"
                                            "  @include \"workers.conf\"\n"
                                            "timeout = 5;\n");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/"), 0);

    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, main_path, &e), 1);
    snprintf(want, sizeof(want), "%s:2: 'threads' must be between 1 and 1024, not 0", inc_path);
    expect_errors(&e, 1, want);
    assert_int_equal(c.mode, MODE_SYNC);
    assert_int_equal(c.workers, 9);
    assert_int_equal(c.timeout, 5);
    config_errors_free(&e);
    config_free(&c);

    /* A syntax error inside an included file names that file. */
    bad_path = write_text("inc/bad.conf", "a = ;\n");
    unlink(main_path);
    free(main_path);
    main_path = write_text("inc/main.conf", "@include \"bad.conf\"\n");
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, main_path, &e), 1);
    snprintf(want, sizeof(want), "%s:1: syntax error", bad_path);
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);

    assert_int_equal(chdir(cwd), 0);
    unlink(bad_path);
    unlink(inc_path);
    unlink(main_path);
    rmdir(sub);
    free(bad_path);
    free(inc_path);
    free(main_path);
    free(sub);
}

/* A bare file name: includes resolve in the current directory, and
 * messages keep the names short. */
static void test_config_include_from_relative_path(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *a = write_text("rel.conf", "@include \"rel-inc.conf\"\n");
    char *b = write_text("rel-inc.conf", "workers = 3;\nworker = 1;\n");
    char cwd[4096];

    (void)state;
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, "rel.conf", &e), 1);
    expect_errors(&e, 1, "rel-inc.conf:2: unknown key 'worker'");
    assert_int_equal(c.workers, 3);
    assert_int_equal(chdir(cwd), 0);
    config_errors_free(&e);
    config_free(&c);
    unlink(a);
    unlink(b);
    free(a);
    free(b);
}

/* libconfig 1.5's scanner exit()s on a directory and blocks on a FIFO:
 * such includes are refused before libconfig sees them, with a message. */
static void test_config_include_of_directory_or_missing_file_is_an_error(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *dir = tmp_path("incdir"), *fifo = tmp_path("incdir/fifo"), *main_path, want[3][1024];

    (void)state;
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    main_path = write_text("incdir/main.conf", "workers = 2;\n"
                                               "@include \".\"\n"
                                               "/* @include \"commented-out\" */\n"
                                               "# @include \"commented-out\"\n"
                                               "s = \"\n@include \\\"in-a-string\\\"\n\";\n"
                                               "@include \"fifo\"\n"
                                               "@include \"missing.conf\"\n");
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, main_path, &e), 3);
    snprintf(want[0], sizeof(want[0]), "%s:2: cannot include '%s/.': %s", main_path, dir,
             strerror(EISDIR));
    snprintf(want[1], sizeof(want[1]), "%s:8: cannot include '%s/fifo': not a regular file",
             main_path, dir);
    snprintf(want[2], sizeof(want[2]), "%s:9: cannot include '%s/missing.conf': %s", main_path, dir,
             strerror(ENOENT));
    expect_errors(&e, 3, want[0], want[1], want[2]);
    config_errors_free(&e);
    config_free(&c);
    unlink(main_path);
    unlink(fifo);
    rmdir(dir);
    free(main_path);
    free(fifo);
    free(dir);
}

/* An include cycle ends in libconfig's nesting limit, not in a hang. */
static void test_config_include_cycle_is_an_error(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *path = write_text("cycle.conf", "@include \"cycle.conf\"\n");

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_load_file(&c, path, &e), 1);
    assert_non_null(strstr(e.msg[0], "include file nesting too deep"));
    config_errors_free(&e);
    config_free(&c);
    unlink(path);
    free(path);
}

/* ---- command-line overrides ---- */

static void test_config_override_every_option(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_override(&c, "app", "./notes.so", &e), 0);
    assert_int_equal(config_override(&c, "mode", "sync", &e), 0);
    assert_int_equal(config_override(&c, "workers", "12", &e), 0);
    assert_int_equal(config_override(&c, "threads", "1024", &e), 0);
    assert_int_equal(config_override(&c, "worker-connections", "1000000", &e), 0);
    assert_int_equal(config_override(&c, "database", "/tmp/n.db", &e), 0);
    assert_int_equal(config_override(&c, "pidfile", "/tmp/f.pid", &e), 0);
    assert_int_equal(config_override(&c, "listen", "127.0.0.1:9000", &e), 0);
    assert_int_equal(e.n, 0);
    assert_string_equal(c.app_module, "./notes.so");
    assert_string_equal(c.app_module_origin, "--app");
    assert_int_equal(c.mode, MODE_SYNC);
    assert_int_equal(c.workers, 12);
    assert_int_equal(c.threads, 1024);
    assert_int_equal(c.worker_connections, 1000000);
    assert_string_equal(c.app_database, "/tmp/n.db");
    assert_string_equal(c.pidfile, "/tmp/f.pid");
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0], "127.0.0.1:9000");
    assert_string_equal(c.listen_origin[0], "--listen");

    assert_int_equal(config_override(&c, "database", "", &e), 0);
    assert_null(c.app_database);
    assert_int_equal(config_override(&c, "pidfile", "", &e), 0);
    assert_null(c.pidfile);
    config_free(&c);
}

static void test_config_override_rejects_bad_values(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_override(&c, "workers", "0", &e), 1);
    assert_int_equal(config_override(&c, "workers", "1025", &e), 1);
    assert_int_equal(config_override(&c, "workers", "four", &e), 1);
    assert_int_equal(config_override(&c, "workers", "4x", &e), 1);
    assert_int_equal(config_override(&c, "workers", "", &e), 1);
    assert_int_equal(config_override(&c, "workers", " 4", &e), 1);
    assert_int_equal(config_override(&c, "threads", "99999999999999999999", &e), 1);
    assert_int_equal(config_override(&c, "worker-connections", "-1", &e), 1);
    assert_int_equal(config_override(&c, "mode", "gevent", &e), 1);
    assert_int_equal(config_override(&c, "app", "", &e), 1);
    assert_int_equal(config_override(&c, "listen", "foo", &e), 1);
    assert_int_equal(config_override(&c, "user", "", &e), 1);
    assert_int_equal(config_override(&c, "no-such-option", "1", &e), 1);
    expect_errors(
        &e, 13, "--workers: must be between 1 and 1024, not 0",
        "--workers: must be between 1 and 1024, not 1025",
        "--workers: must be an integer, not 'four'", "--workers: must be an integer, not '4x'",
        "--workers: must be an integer, not ''", "--workers: must be an integer, not ' 4'",
        "--threads: must be between 1 and 1024, not 99999999999999999999",
        "--worker-connections: must be between 1 and 1000000, not -1",
        "--mode: must be \"sync\", \"threads\" or \"async\", not \"gevent\"",
        "--app: must not be empty",
        "--listen: bad listen address 'foo': missing port (use HOST:PORT or unix:PATH)",
        "--user: must not be empty", "--no-such-option: unknown option");
    /* Nothing changed. */
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.threads, 8);
    assert_int_equal(c.worker_connections, 1000);
    assert_int_equal(c.mode, MODE_THREADS);
    assert_string_equal(c.app_module, "/usr/lib/fcgate/apps/notes.so");
    assert_string_equal(c.listen[0], "unix:/run/fcgate/fcgate.sock");
    config_errors_free(&e);
    config_free(&c);
}

/* The first --listen replaces the file's list; later ones append. */
static void test_config_override_listen_replaces_then_appends(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char addr[32];
    int i;

    (void)state;
    load_ok(&c, "listen = [ \"127.0.0.1:8000\", \"127.0.0.1:8001\" ];");
    assert_int_equal(config_override(&c, "listen", "127.0.0.1:9000", &e), 0);
    assert_int_equal(c.nlisten, 1);
    assert_int_equal(config_override(&c, "listen", "unix:/tmp/x.sock", &e), 0);
    assert_int_equal(c.nlisten, 2);
    assert_string_equal(c.listen[0], "127.0.0.1:9000");
    assert_string_equal(c.listen[1], "unix:/tmp/x.sock");
    for (i = 2; i < CONFIG_MAX_LISTEN; i++) {
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", 9000 + i);
        assert_int_equal(config_override(&c, "listen", addr, &e), 0);
    }
    assert_int_equal(c.nlisten, CONFIG_MAX_LISTEN);
    assert_int_equal(config_override(&c, "listen", "127.0.0.1:9999", &e), 1);
    expect_errors(&e, 1, "--listen: at most 16 addresses");
    assert_int_equal(c.nlisten, CONFIG_MAX_LISTEN);
    config_errors_free(&e);
    config_free(&c);
}

/* ---- config_check ---- */

static void test_config_check_accepts_existing_module(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *mod = write_text("ok.so", "\x7f"
                                    "ELF");

    (void)state;
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_override(&c, "app", mod, &e), 0);
    assert_int_equal(config_check(&c, &e), 0);
    assert_int_equal(e.n, 0);
    config_free(&c);
    unlink(mod);
    free(mod);
}

/* The message points at where the module path came from. */
static void test_config_check_reports_missing_module_with_origin(void **state)
{
    struct config c;
    struct config_errors e;
    char want[1024];

    (void)state;
    load(&c, &e, "\n\napp = { module = \"/nonexistent/x.so\"; };");
    assert_int_equal(config_check(&c, &e), 1);
    expect_errors(&e, 1, NAME ":3: app module '/nonexistent/x.so': No such file or directory");
    config_errors_free(&e);

    assert_int_equal(config_override(&c, "app", "./missing.so", &e), 0);
    assert_int_equal(config_check(&c, &e), 1);
    expect_errors(&e, 1, "--app: app module './missing.so': No such file or directory");
    config_errors_free(&e);
    config_free(&c);

    assert_int_equal(config_defaults(&c), 0);
    free(c.app_module);
    c.app_module = strdup("/nonexistent/default.so");
    assert_int_equal(config_check(&c, &e), 1);
    expect_errors(&e, 1,
                  "(default): app module '/nonexistent/default.so': No such file or directory");
    config_errors_free(&e);

    free(c.app_module);
    c.app_module = strdup(tmpdir);
    assert_int_equal(config_check(&c, &e), 1);
    snprintf(want, sizeof(want), "(default): app module '%s': %s", tmpdir, strerror(EISDIR));
    expect_errors(&e, 1, want);
    config_errors_free(&e);

    free(c.app_module);
    c.app_module = NULL;
    assert_int_equal(config_check(&c, &e), 1);
    expect_errors(&e, 1, "(default): no app module configured");
    config_errors_free(&e);
    config_free(&c);
}

static void test_config_check_reports_unreadable_module(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *mod, want[1024];

    (void)state;
    if (geteuid() == 0)
        skip();
    mod = write_text("noread.so", "x");
    assert_int_equal(chmod(mod, 0), 0);
    assert_int_equal(config_defaults(&c), 0);
    assert_int_equal(config_override(&c, "app", mod, &e), 0);
    assert_int_equal(config_check(&c, &e), 1);
    snprintf(want, sizeof(want), "--app: app module '%s': %s", mod, strerror(EACCES));
    expect_errors(&e, 1, want);
    config_errors_free(&e);
    config_free(&c);
    unlink(mod);
    free(mod);
}

static void test_config_check_rejects_duplicate_listen(void **state)
{
    struct config c;
    struct config_errors e = {0};
    char *mod = write_text("dup.so", "x");

    (void)state;
    load_ok(&c, "listen = [ \"*:9000\",\n \"0.0.0.0:9000\",\n \"127.0.0.1:9000\" ];");
    assert_int_equal(config_override(&c, "app", mod, &e), 0);
    assert_int_equal(config_check(&c, &e), 1);
    expect_errors(&e, 1, NAME ":2: listen address '0.0.0.0:9000' is listed twice");
    config_errors_free(&e);
    config_free(&c);
    unlink(mod);
    free(mod);
}

/* ---- lifetime ---- */

static void test_config_free_is_idempotent(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    load_ok(&c, "app = { settings = { a = 1; }; };");
    config_free(&c);
    config_free(&c);
    config_free(NULL);
    config_errors_free(&e);
    config_errors_free(NULL);
}

/* The pool keys: pm's three values, the bounds, idle_timeout in whole
 * seconds, queue_timeout with a fraction, max_memory with a suffix. */
static void test_config_pool_keys(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    load_ok(&c, "pm = \"dynamic\"; min_workers = 2; max_workers = 64; idle_timeout = 3;\n"
                "queue_timeout = 0.25; max_memory = \"512M\";\n");
    assert_int_equal(c.pm, PM_DYNAMIC);
    assert_int_equal(c.min_workers, 2);
    assert_int_equal(c.max_workers, 64);
    assert_int_equal(c.idle_timeout, 3);
    assert_int_equal(c.queue_timeout_ms, 250);
    assert_int_equal(c.max_memory, 512ull << 20);
    assert_int_equal(config_check(&c, &e), 1); /* only the module, absent here */
    config_errors_free(&e);
    config_free(&c);
    load_ok(&c, "pm = \"ondemand\"; min_workers = 0; queue_timeout = 30; max_memory = 1048576;\n");
    assert_int_equal(c.pm, PM_ONDEMAND);
    assert_int_equal(c.min_workers, 0);
    assert_int_equal(c.queue_timeout_ms, 30000);
    assert_int_equal(c.max_memory, 1048576);
    assert_string_equal(config_pm_name(c.pm), "ondemand");
    config_free(&c);
    load_ok(&c, "pm = \"static\"; max_memory = \"2g\";\n");
    assert_int_equal(c.pm, PM_STATIC);
    assert_int_equal(c.max_memory, 2ull << 30);
    config_free(&c);
}

static void test_config_pool_keys_reject_bad_values(void **state)
{
    (void)state;
    expect_one("pm = \"adaptive\";\n",
               NAME ":1: 'pm' must be \"static\", \"dynamic\" or \"ondemand\", not \"adaptive\"");
    expect_one("max_workers = 0;\n", NAME ":1: 'max_workers' must be between 1 and 1024, not 0");
    expect_one("min_workers = 1025;\n",
               NAME ":1: 'min_workers' must be between 0 and 1024, not 1025");
    expect_one("idle_timeout = 0;\n", NAME ":1: 'idle_timeout' must be between 1 and 86400, not 0");
    expect_one("queue_timeout = -1.5;\n",
               NAME ":1: 'queue_timeout' must be between 0 and 86400 seconds, not -1.5");
    expect_one("queue_timeout = \"1s\";\n",
               NAME ":1: 'queue_timeout' must be a number of seconds, like 5 or 0.5");
    expect_one("max_memory = \"12X\";\n",
               NAME ":1: 'max_memory' must be a size like \"512M\" (K, M, G: powers of 1024) up "
                    "to 1T, not \"12X\"");
    expect_one("max_memory = \"M\";\n",
               NAME ":1: 'max_memory' must be a size like \"512M\" (K, M, G: powers of 1024) up "
                    "to 1T, not \"M\"");
    expect_one("max_memory = \"2048G\";\n",
               NAME ":1: 'max_memory' must be a size like \"512M\" (K, M, G: powers of 1024) up "
                    "to 1T, not \"2048G\"");
    expect_one("max_memory = 1.5;\n", NAME ":1: 'max_memory' must be a size like \"512M\"");
}

/* The bounds against each other, once everything is loaded. */
static void test_config_check_pool_bounds(void **state)
{
    struct config c;
    struct config_errors e = {0};

    (void)state;
    load_ok(&c, "pm = \"dynamic\"; min_workers = 9; max_workers = 8;\n");
    config_check(&c, &e);
    assert_int_equal(e.n, 2); /* the module (absent here), then the bounds */
    assert_string_equal(e.msg[1], "(default): min_workers (9) is above max_workers (8)");
    config_errors_free(&e);
    config_free(&c);
    load_ok(&c, "pm = \"dynamic\"; min_workers = 0;\n");
    config_check(&c, &e);
    assert_int_equal(e.n, 2);
    assert_non_null(strstr(e.msg[1], "needs min_workers >= 1"));
    config_errors_free(&e);
    config_free(&c);
    /* static ignores the bounds. */
    load_ok(&c, "min_workers = 9; max_workers = 8;\n");
    config_check(&c, &e);
    assert_int_equal(e.n, 1); /* the module */
    config_errors_free(&e);
    config_free(&c);
}

static void test_config_parse_size_suffixes(void **state)
{
    unsigned long long v;

    (void)state;
    assert_int_equal(config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(config_parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("3M", &v), 0);
    assert_int_equal(v, 3ull << 20);
    assert_int_equal(config_parse_size("1G", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(config_parse_size("", &v), -1);
    assert_int_equal(config_parse_size("1MB", &v), -1);
    assert_int_equal(config_parse_size("-1", &v), -1);
    assert_int_equal(config_parse_size("1 M", &v), -1);
    assert_int_equal(config_parse_size("99999999999999999999", &v), -1);
    assert_int_equal(config_parse_size("18014398509481984G", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_match_design),
        cmocka_unit_test(test_config_empty_text_keeps_defaults),
        cmocka_unit_test(test_config_example_file_equals_defaults),
        cmocka_unit_test(test_config_example_file_documents_every_key),
        cmocka_unit_test(test_config_accepts_every_key),
        cmocka_unit_test(test_config_pool_keys),
        cmocka_unit_test(test_config_pool_keys_reject_bad_values),
        cmocka_unit_test(test_config_check_pool_bounds),
        cmocka_unit_test(test_config_parse_size_suffixes),
        cmocka_unit_test(test_config_accepts_integer_bounds),
        cmocka_unit_test(test_config_rejects_out_of_range_integers),
        cmocka_unit_test(test_config_rejects_wrong_types),
        cmocka_unit_test(test_config_rejected_value_keeps_previous),
        cmocka_unit_test(test_config_rejects_unknown_key),
        cmocka_unit_test(test_config_rejects_duplicate_key),
        cmocka_unit_test(test_config_reports_every_error_with_line),
        cmocka_unit_test(test_config_syntax_error_has_file_and_line),
        cmocka_unit_test(test_config_string_without_name_uses_placeholder),
        cmocka_unit_test(test_config_counts_errors_without_list),
        cmocka_unit_test(test_config_escapes_values_in_messages),
        cmocka_unit_test(test_config_unterminated_string_is_an_error),
        cmocka_unit_test(test_config_unterminated_comment_is_an_error),
        cmocka_unit_test(test_config_int64_body_limit),
        cmocka_unit_test(test_config_bare_big_integer_is_truncated_by_libconfig),
        cmocka_unit_test(test_config_listen_accepts_array_and_list),
        cmocka_unit_test(test_config_listen_rejects_bad_entries),
        cmocka_unit_test(test_config_listen_mode_is_octal_string),
        cmocka_unit_test(test_config_mode_values),
        cmocka_unit_test(test_config_user_group_must_not_be_empty),
        cmocka_unit_test(test_config_empty_pidfile_and_database_mean_none),
        cmocka_unit_test(test_config_app_module),
        cmocka_unit_test(test_config_settings_are_strings),
        cmocka_unit_test(test_config_settings_reject_nested_values),
        cmocka_unit_test(test_config_log_keys),
        cmocka_unit_test(test_config_second_load_overrides_only_its_keys),
        cmocka_unit_test(test_config_missing_file_reports_strerror),
        cmocka_unit_test(test_config_unreadable_file_reports_strerror),
        cmocka_unit_test(test_config_file_errors_name_the_path),
        cmocka_unit_test(test_config_file_with_nul_byte_is_refused),
        cmocka_unit_test(test_config_include_is_relative_to_file),
        cmocka_unit_test(test_config_include_from_relative_path),
        cmocka_unit_test(test_config_include_of_directory_or_missing_file_is_an_error),
        cmocka_unit_test(test_config_include_cycle_is_an_error),
        cmocka_unit_test(test_config_override_every_option),
        cmocka_unit_test(test_config_override_rejects_bad_values),
        cmocka_unit_test(test_config_override_listen_replaces_then_appends),
        cmocka_unit_test(test_config_check_accepts_existing_module),
        cmocka_unit_test(test_config_check_reports_missing_module_with_origin),
        cmocka_unit_test(test_config_check_reports_unreadable_module),
        cmocka_unit_test(test_config_check_rejects_duplicate_listen),
        cmocka_unit_test(test_config_free_is_idempotent),
        cmocka_unit_test(test_config_status_group),
        cmocka_unit_test(test_config_slowlog_group),
        cmocka_unit_test(test_config_postgres_keys),
        cmocka_unit_test(test_config_syntax_error_marks_file_unparsed),
    };

    return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}

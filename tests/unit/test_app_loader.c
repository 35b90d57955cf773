/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_app_loader.c - loading application modules and refusing bad ones.
 *
 * The modules are built next to this test (MODULE_DIR), one for each way
 * a module can be wrong; each refusal must name the module's path and
 * what differs, because that message is all an operator sees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app_loader.h"

#define MOD(name) MODULE_DIR "/" name ".so"

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part)) {
        print_error("\"%s\" not found in \"%s\"\n", part, s);
        fail();
    }
}

/* Loads a module that must be refused; returns the message. */
static const char *refuse(const char *path)
{
    static char err[512];
    struct app_module m;

    memset(&m, 0xa5, sizeof(m));
    strcpy(err, "untouched");
    assert_int_equal(app_load(path, &m, err, sizeof(err)), -1);
    /* Nothing half-loaded is handed back: unloading it is a no-op. */
    assert_null(m.handle);
    assert_null(m.app);
    app_unload(&m);
    assert_contains(err, path);
    return err;
}

static void test_app_load_accepts_good_module(void **state)
{
    (void)state;
    struct app_module m;
    char err[256] = "";
    void *ctx = NULL;

    assert_int_equal(app_load(MOD("mod_good"), &m, err, sizeof(err)), 0);
    assert_non_null(m.handle);
    assert_non_null(m.app);
    assert_int_equal(m.app->magic, FCGATE_APP_MAGIC);
    assert_int_equal(m.app->abi_major, FCGATE_ABI_MAJOR);
    assert_int_equal(m.app->size, sizeof(struct fcgate_app));
    assert_string_equal(m.app->name, "good");
    assert_int_equal(m.app->flags & FCGATE_APP_THREADSAFE, FCGATE_APP_THREADSAFE);
    assert_null(m.app->fini);
    /* The record's functions are the module's own, callable. */
    assert_non_null(m.app->init);
    assert_int_equal(m.app->init(NULL, &ctx), 0);
    assert_non_null(ctx);
    assert_int_equal(m.app->handle(ctx, NULL), 0);
    assert_int_equal(m.app->handle(NULL, NULL), -1);
    app_unload(&m);
    assert_null(m.handle);
    assert_null(m.app);
}

/* ABI 1.1 added functions only: a module built for 1.0 loads as it was. */
static void test_app_load_accepts_older_minor_abi(void **state)
{
    (void)state;
    struct app_module m;
    char err[256] = "";

    assert_true(FCGATE_ABI_MINOR >= 1);
    assert_int_equal(app_load(MOD("mod_abi_1_0"), &m, err, sizeof(err)), 0);
    assert_int_equal(m.app->abi_minor, 0);
    assert_string_equal(m.app->name, "abi_1_0");
    app_unload(&m);
}

static void test_app_load_same_module_twice(void **state)
{
    (void)state;
    struct app_module a, b;
    char err[256];

    assert_int_equal(app_load(MOD("mod_good"), &a, err, sizeof(err)), 0);
    assert_int_equal(app_load(MOD("mod_good"), &b, err, sizeof(err)), 0);
    assert_ptr_not_equal(a.app, b.app); /* each load is its own snapshot */
    app_unload(&a);
    /* Unloading one leaves the other mapped. */
    assert_string_equal(b.app->name, "good");
    app_unload(&b);
}

/* Copies src over dst the way `cp` does: same inode, truncated, rewritten. */
static void cp_in_place(const char *src, const char *dst)
{
    char buf[65536];
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "r+b");
    assert_non_null(in);
    assert_non_null(out);
    assert_int_equal(ftruncate(fileno(out), 0), 0);
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* A loaded module keeps the code it loaded when its file is rewritten in
 * place; the next load sees the new file. */
static void test_app_load_keeps_its_snapshot_when_file_is_rewritten(void **state)
{
    (void)state;
    struct app_module m;
    char err[512], path[] = "/tmp/fcgate-test-module-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cp_in_place(MOD("mod_good"), path);
    assert_int_equal(app_load(path, &m, err, sizeof(err)), 0);
    cp_in_place(MOD("mod_not_threadsafe"), path);
    assert_string_equal(m.app->name, "good");
    assert_int_equal(m.app->handle(NULL, NULL), -1);
    struct app_module next;
    assert_int_equal(app_load(path, &next, err, sizeof(err)), 0);
    assert_string_equal(next.app->name, "not_threadsafe");
    app_unload(&next);
    app_unload(&m);
    unlink(path);
}

static void test_app_load_refuses_missing_file(void **state)
{
    (void)state;
    const char *err = refuse(MODULE_DIR "/no-such-module.so");
    assert_contains(err, "cannot load");
    assert_contains(err, "No such file");
}

static void test_app_load_refuses_non_module_file(void **state)
{
    (void)state;
    /* A file that exists but is no shared object: this very source. */
    const char *err = refuse(__FILE__);
    assert_contains(err, "cannot load");
}

static void test_app_load_refuses_unresolved_symbol_at_load(void **state)
{
    (void)state;
    const char *err = refuse(MOD("mod_unresolved"));
    assert_contains(err, "no_such_function_anywhere");
}

static void test_app_load_refuses_module_without_record(void **state)
{
    (void)state;
    const char *err = refuse(MOD("mod_no_symbol"));
    assert_contains(err, "fcgate_app_module");
}

static void test_app_load_refuses_bad_magic(void **state)
{
    (void)state;
    const char *err = refuse(MOD("mod_bad_magic"));
    assert_contains(err, "magic");
    assert_contains(err, "0xdeadbeef");
}

static void test_app_load_refuses_other_abi_major(void **state)
{
    (void)state;
    char want[64];
    const char *err = refuse(MOD("mod_bad_abi"));
    assert_contains(err, "ABI");
    snprintf(want, sizeof(want), "%u.0", FCGATE_ABI_MAJOR + 1);
    assert_contains(err, want);
}

static void test_app_load_refuses_too_small_record(void **state)
{
    (void)state;
    const char *err = refuse(MOD("mod_small_size"));
    assert_contains(err, "size");
    assert_contains(err, " 8 ");
}

static void test_app_load_refuses_module_without_handle(void **state)
{
    (void)state;
    const char *err = refuse(MOD("mod_no_handle"));
    assert_contains(err, "handle");
}

static void test_app_load_truncates_long_message_safely(void **state)
{
    (void)state;
    struct app_module m;
    char buf[40];

    memset(buf, 'X', sizeof(buf));
    assert_int_equal(app_load(MOD("mod_bad_magic"), &m, buf, 16), -1);
    assert_int_equal(strlen(buf), 15);
    for (size_t i = 16; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 'X');
}

static void test_app_check_threads_accepts_threadsafe_module(void **state)
{
    (void)state;
    struct app_module m;
    char err[256] = "";

    assert_int_equal(app_load(MOD("mod_good"), &m, err, sizeof(err)), 0);
    assert_int_equal(app_check_threads(&m, MOD("mod_good"), err, sizeof(err)), 0);
    app_unload(&m);
}

static void test_app_check_threads_refuses_module_not_threadsafe(void **state)
{
    (void)state;
    struct app_module m;
    char err[512] = "";

    /* Loadable: sync and async run it. */
    assert_int_equal(app_load(MOD("mod_not_threadsafe"), &m, err, sizeof(err)), 0);
    assert_int_equal(m.app->flags & FCGATE_APP_THREADSAFE, 0);
    assert_int_equal(app_check_threads(&m, MOD("mod_not_threadsafe"), err, sizeof(err)), -1);
    assert_contains(err, MOD("mod_not_threadsafe"));
    assert_contains(err, "not_threadsafe");
    assert_contains(err, "FCGATE_APP_THREADSAFE");
    app_unload(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_app_load_accepts_good_module),
        cmocka_unit_test(test_app_load_accepts_older_minor_abi),
        cmocka_unit_test(test_app_load_same_module_twice),
        cmocka_unit_test(test_app_load_keeps_its_snapshot_when_file_is_rewritten),
        cmocka_unit_test(test_app_load_refuses_missing_file),
        cmocka_unit_test(test_app_load_refuses_non_module_file),
        cmocka_unit_test(test_app_load_refuses_unresolved_symbol_at_load),
        cmocka_unit_test(test_app_load_refuses_module_without_record),
        cmocka_unit_test(test_app_load_refuses_bad_magic),
        cmocka_unit_test(test_app_load_refuses_other_abi_major),
        cmocka_unit_test(test_app_load_refuses_too_small_record),
        cmocka_unit_test(test_app_load_refuses_module_without_handle),
        cmocka_unit_test(test_app_load_truncates_long_message_safely),
        cmocka_unit_test(test_app_check_threads_accepts_threadsafe_module),
        cmocka_unit_test(test_app_check_threads_refuses_module_not_threadsafe),
    };
    return cmocka_run_group_tests_name("app_loader", tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_coro.c - the context switch and coroutine stacks (daemon/coro.c).
 */
/* cmocka needs these first. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "coro.h"

#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct coro main_co, co;
static int steps;

static void counter(void *arg)
{
    int *out = arg;
    for (int i = 0;; i++) {
        *out = i;
        steps++;
        coro_switch(&co, &main_co);
    }
}

static void test_coro_switches_back_and_forth_keeping_state(void **state)
{
    int value = -1;
    (void)state;
    coro_main(&main_co);
    assert_int_equal(coro_create(&co, 64 * 1024, counter, &value), 0);
    for (int i = 0; i < 1000; i++) {
        coro_switch(&main_co, &co);
        assert_int_equal(value, i);
    }
    assert_int_equal(steps, 1000);
    coro_destroy(&co);
}

/* Callee-saved registers survive: locals live across many switches in
 * both contexts, in an optimised build, including doubles. */
static void mixer(void *arg)
{
    double *acc = arg;
    double a = 1.0, b = 0.5;
    unsigned long k = 3;
    for (;;) {
        a = a * 1.000001 + b;
        k = k * 7 + 1;
        *acc = a + (double)(k & 0xff);
        coro_switch(&co, &main_co);
    }
}

static void test_coro_preserves_locals_across_switches(void **state)
{
    double acc = 0, a = 1.0, b = 0.5, mine = 42.0;
    unsigned long k = 3;
    (void)state;
    coro_main(&main_co);
    assert_int_equal(coro_create(&co, 64 * 1024, mixer, &acc), 0);
    for (int i = 0; i < 10000; i++) {
        coro_switch(&main_co, &co);
        a = a * 1.000001 + b;
        k = k * 7 + 1;
        assert_true(acc == a + (double)(k & 0xff));
        mine += 1.0;
    }
    assert_true(mine == 10042.0);
    coro_destroy(&co);
}

/* The floating-point control state is per context (MXCSR / FPCR): a
 * coroutine changing the rounding mode does not change its caller's. */
static int seen_mode;

static void rounder(void *arg)
{
    (void)arg;
    fesetround(FE_UPWARD);
    for (;;) {
        seen_mode = fegetround();
        coro_switch(&co, &main_co);
    }
}

static void test_coro_keeps_rounding_mode_per_context(void **state)
{
    (void)state;
    fesetround(FE_TONEAREST);
    coro_main(&main_co);
    assert_int_equal(coro_create(&co, 64 * 1024, rounder, NULL), 0);
    coro_switch(&main_co, &co);
    assert_int_equal(seen_mode, FE_UPWARD);
    assert_int_equal(fegetround(), FE_TONEAREST);
    coro_switch(&main_co, &co);
    assert_int_equal(seen_mode, FE_UPWARD);
    assert_int_equal(fegetround(), FE_TONEAREST);
    coro_destroy(&co);
}

/* A finished coroutine's stack is reused for a new one. */
static void once(void *arg)
{
    int *runs = arg;
    for (;;) {
        (*runs)++;
        coro_switch(&co, &main_co);
    }
}

static void test_coro_reset_reuses_the_stack(void **state)
{
    int runs = 0;
    (void)state;
    coro_main(&main_co);
    assert_int_equal(coro_create(&co, 64 * 1024, once, &runs), 0);
    void *map = co.map;
    for (int i = 0; i < 100; i++) {
        coro_switch(&main_co, &co);
        coro_reset(&co, once, &runs);
    }
    assert_int_equal(runs, 100);
    assert_ptr_equal(co.map, map);
    coro_destroy(&co);
}

/* Overflowing the stack faults on the guard page (SIGSEGV), in a child,
 * instead of running into other memory. */
static int deep(volatile char *prev, int depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[1023] = prev ? prev[0] : 0;
    if (depth > 1 << 20)
        return frame[0];
    return deep(frame, depth + 1) + frame[7];
}

static void overflow(void *arg)
{
    (void)arg;
    deep(NULL, 0);
    coro_switch(&co, &main_co);
}

static void test_coro_stack_overflow_hits_the_guard_page(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        coro_main(&main_co);
        if (coro_create(&co, 32 * 1024, overflow, NULL) < 0)
            _exit(2);
        coro_switch(&main_co, &co);
        _exit(0); /* not reached when the guard page works */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
}

/* Stacks are not executable. */
static void test_coro_stack_is_not_executable(void **state)
{
    char line[512], want[32];
    int found = 0;
    (void)state;
    assert_int_equal(coro_create(&co, 64 * 1024, once, NULL), 0);
    snprintf(want, sizeof(want), "%lx-", (unsigned long)co.map);
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        /* The guard page starts the mapping; the stack follows it. */
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
            continue;
        if (lo >= (unsigned long)co.map && hi <= (unsigned long)co.map + co.map_len) {
            found++;
            assert_int_not_equal(perms[2], 'x');
            if (lo == (unsigned long)co.map)
                assert_string_equal(perms, "---p");
        }
    }
    fclose(f);
    assert_true(found >= 2);
    coro_destroy(&co);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coro_switches_back_and_forth_keeping_state),
        cmocka_unit_test(test_coro_preserves_locals_across_switches),
        cmocka_unit_test(test_coro_keeps_rounding_mode_per_context),
        cmocka_unit_test(test_coro_reset_reuses_the_stack),
        cmocka_unit_test(test_coro_stack_overflow_hits_the_guard_page),
        cmocka_unit_test(test_coro_stack_is_not_executable),
    };
    return cmocka_run_group_tests_name("coro", tests, NULL, NULL);
}

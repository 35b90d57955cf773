/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * coro_switch - cost of one coroutine context switch (daemon/coro.c),
 * next to ucontext's swapcontext for comparison.
 *
 * Main and one coroutine ping-pong N times (main -> coroutine -> main is
 * two switches); each run reports ns per switch, and the result is the
 * median of RUNS runs. Output, one line per method:
 *
 *   coro_switch ns_per_switch=4.21 runs=4.20,4.21,... n=10000000
 *   swapcontext ns_per_switch=... runs=... n=...
 *
 * usage: coro_switch [N [RUNS]]   (defaults 10000000 and 5)
 */
#include "coro.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#define STACK_SIZE (64 * 1024)
#define MAX_RUNS 101

static struct coro main_co, ping_co;
static ucontext_t main_uc, ping_uc;
static volatile uint64_t bounces; /* work the optimizer cannot drop */

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The coroutine side: forever switch straight back to main. */
static void coro_pong(void *arg)
{
    (void)arg;
    for (;;) {
        bounces++;
        coro_switch(&ping_co, &main_co);
    }
}

static void uc_pong(void)
{
    for (;;) {
        bounces++;
        swapcontext(&ping_uc, &main_uc);
    }
}

/* ns per switch for n round trips (2n switches). */
static double run_coro(long n)
{
    double t0 = now_ns();

    for (long i = 0; i < n; i++)
        coro_switch(&main_co, &ping_co);
    return (now_ns() - t0) / (2.0 * (double)n);
}

static double run_uc(long n)
{
    double t0 = now_ns();

    for (long i = 0; i < n; i++)
        swapcontext(&main_uc, &ping_uc);
    return (now_ns() - t0) / (2.0 * (double)n);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void report(const char *name, double *ns, int runs, long n)
{
    double sorted[MAX_RUNS];

    memcpy(sorted, ns, (size_t)runs * sizeof(double));
    qsort(sorted, (size_t)runs, sizeof(double), cmp_double);
    printf("%s ns_per_switch=%.2f runs=", name, sorted[runs / 2]);
    for (int i = 0; i < runs; i++)
        printf("%s%.2f", i ? "," : "", ns[i]);
    printf(" n=%ld\n", n);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 10000000L;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    double ns[MAX_RUNS];

    if (n < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: coro_switch [N>=1 [RUNS 1..%d]]\n", MAX_RUNS);
        return 2;
    }

    coro_main(&main_co);
    if (coro_create(&ping_co, STACK_SIZE, coro_pong, NULL) < 0) {
        perror("coro_create");
        return 1;
    }
    run_coro(n / 10 + 1); /* warm up: first touch of the stack, caches */
    for (int i = 0; i < runs; i++)
        ns[i] = run_coro(n);
    report("coro_switch", ns, runs, n);
    /* ping_co is parked inside coro_switch; never resumed again. */
    coro_destroy(&ping_co);

    void *stack = malloc(STACK_SIZE);
    if (!stack || getcontext(&ping_uc) < 0) {
        perror("getcontext");
        return 1;
    }
    ping_uc.uc_stack.ss_sp = stack;
    ping_uc.uc_stack.ss_size = STACK_SIZE;
    ping_uc.uc_link = NULL;
    makecontext(&ping_uc, uc_pong, 0);
    run_uc(n / 10 + 1);
    for (int i = 0; i < runs; i++)
        ns[i] = run_uc(n);
    report("swapcontext", ns, runs, n);
    free(stack);

    return bounces > 0 ? 0 : 1;
}

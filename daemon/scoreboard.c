/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * scoreboard.c - per-thread request state in shared memory.
 *
 * Mapped MAP_SHARED before the first fork, so the supervisor and every
 * worker see the same slots. Workers write only their own slots, with
 * atomics for the fields decisions are made on (pid, start time); the
 * method and path are informational and may be read torn, which costs at
 * most a garbled log line, never a wrong kill.
 */
#include "fcgate.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int scoreboard_create(struct scoreboard *sb, size_t workers, size_t per_worker)
{
    size_t n = workers * per_worker;
    void *p = mmap(NULL, n * sizeof(struct score_slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    sb->slots = p;
    sb->nslots = n;
    sb->per_worker = per_worker;
    return 0;
}

void scoreboard_destroy(struct scoreboard *sb)
{
    if (sb->slots)
        munmap(sb->slots, sb->nslots * sizeof(struct score_slot));
    memset(sb, 0, sizeof(*sb));
}

struct score_slot *scoreboard_slot(const struct scoreboard *sb, size_t worker, size_t thread)
{
    return &sb->slots[worker * sb->per_worker + thread];
}

void scoreboard_begin(struct score_slot *s, const char *method, const char *path)
{
    snprintf(s->method, sizeof(s->method), "%s", method);
    snprintf(s->path, sizeof(s->path), "%s", path);
    atomic_store_explicit(&s->start_ms, monotonic_ms(), memory_order_release);
}

void scoreboard_end(struct score_slot *s)
{
    atomic_store_explicit(&s->start_ms, 0, memory_order_release);
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
}

void scoreboard_idle(struct score_slot *s)
{
    atomic_store_explicit(&s->start_ms, 0, memory_order_release);
}

void scoreboard_beat(struct score_slot *s)
{
    atomic_store_explicit(&s->heartbeat_ms, monotonic_ms(), memory_order_relaxed);
}

static _Thread_local struct score_slot *thread_slot;
static _Thread_local void *thread_altstack;
static _Thread_local const char *guard_lo, *guard_hi;

void scoreboard_thread_guard(const void *lo, const void *hi)
{
    guard_lo = lo;
    guard_hi = hi;
}

void scoreboard_thread_enter(struct score_slot *slot)
{
    thread_slot = slot;
    scoreboard_beat(slot);
    size_t size = SIGSTKSZ < 65536 ? 65536 : SIGSTKSZ;
    thread_altstack = malloc(size);
    if (thread_altstack) {
        stack_t ss = {.ss_sp = thread_altstack, .ss_size = size, .ss_flags = 0};
        sigaltstack(&ss, NULL);
    }
}

void scoreboard_thread_leave(void)
{
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    free(thread_altstack);
    thread_altstack = NULL;
    thread_slot = NULL;
}

void scoreboard_thread_crashed(const void *fault_addr)
{
    const char *a = fault_addr;
    if (thread_slot)
        atomic_store(&thread_slot->crashed,
                     a && a >= guard_lo && a < guard_hi ? SLOT_OVERFLOWED : SLOT_CRASHED);
}

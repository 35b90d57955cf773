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

const uint64_t scoreboard_bucket_us[SCORE_BUCKETS - 1] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

static size_t bucket_of(uint64_t us)
{
    size_t b = 0;
    while (b < SCORE_BUCKETS - 1 && us > scoreboard_bucket_us[b])
        b++;
    return b;
}

/* Relaxed: the readers want totals that only rise, not a consistent cut
 * across counters; a scrape may see a request in requests before its
 * bucket, never the reverse for long. */
void scoreboard_end(struct score_slot *s, int status, uint64_t duration_us)
{
    atomic_store_explicit(&s->start_ms, 0, memory_order_release);
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    if (status >= 100 && status <= 599)
        atomic_fetch_add_explicit(&s->by_class[status / 100 - 1], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->duration_le[bucket_of(duration_us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->duration_us, duration_us, memory_order_relaxed);
}

void scoreboard_queued(struct score_slot *s, uint64_t wait_us, int rejected)
{
    atomic_fetch_add_explicit(&s->queue_le[bucket_of(wait_us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->queue_us, wait_us, memory_order_relaxed);
    if (rejected)
        atomic_fetch_add_explicit(&s->queue_rejected, 1, memory_order_relaxed);
}

struct score_totals *scoreboard_totals_create(void)
{
    void *p = mmap(NULL, sizeof(struct score_totals), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void scoreboard_totals_destroy(struct score_totals *t)
{
    if (t)
        munmap(t, sizeof(*t));
}

void scoreboard_totals_absorb(struct score_totals *t, const struct scoreboard *sb)
{
    for (size_t i = 0; i < sb->nslots; i++) {
        const struct score_slot *s = &sb->slots[i];
        atomic_fetch_add(&t->requests, atomic_load(&s->requests));
        for (size_t c = 0; c < SCORE_CLASSES; c++)
            atomic_fetch_add(&t->by_class[c], atomic_load(&s->by_class[c]));
        for (size_t b = 0; b < SCORE_BUCKETS; b++)
            atomic_fetch_add(&t->duration_le[b], atomic_load(&s->duration_le[b]));
        atomic_fetch_add(&t->duration_us, atomic_load(&s->duration_us));
        for (size_t b = 0; b < SCORE_BUCKETS; b++)
            atomic_fetch_add(&t->queue_le[b], atomic_load(&s->queue_le[b]));
        atomic_fetch_add(&t->queue_us, atomic_load(&s->queue_us));
        atomic_fetch_add(&t->queue_rejected, atomic_load(&s->queue_rejected));
    }
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

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

#include <errno.h>
#include <poll.h>
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

static void *shared(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int fd_wait(int fd, short events, int timeout_ms)
{
    struct pollfd p = {fd, events, 0};
    uint64_t deadline = monotonic_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    for (int left = timeout_ms;;) {
        int r = poll(&p, 1, left);
        if (r > 0)
            return FCGATE_OK;
        if (r == 0)
            return FCGATE_ETIMEDOUT;
        if (errno != EINTR)
            return FCGATE_EIO;
        if (timeout_ms >= 0) {
            uint64_t now = monotonic_ms();
            left = now >= deadline ? 0 : (int)(deadline - now);
        }
    }
}

int scoreboard_create(struct scoreboard *sb, size_t workers, size_t per_worker)
{
    size_t n = workers * per_worker;
    sb->slots = shared(n * sizeof(struct score_slot));
    sb->stacks = shared(workers * sizeof(struct score_stack));
    sb->nslots = n;
    sb->per_worker = per_worker;
    if (!sb->slots || !sb->stacks) {
        int e = errno;
        scoreboard_destroy(sb);
        errno = e;
        return -1;
    }
    return 0;
}

void scoreboard_destroy(struct scoreboard *sb)
{
    if (sb->slots)
        munmap(sb->slots, sb->nslots * sizeof(struct score_slot));
    if (sb->stacks && sb->per_worker)
        munmap(sb->stacks, sb->nslots / sb->per_worker * sizeof(struct score_stack));
    memset(sb, 0, sizeof(*sb));
}

struct score_stack *scoreboard_stack(const struct scoreboard *sb, size_t worker)
{
    return &sb->stacks[worker];
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
static _Thread_local struct score_stack *thread_stack;
static _Thread_local pid_t thread_tid;
static _Thread_local void *thread_altstack;
static _Thread_local const char *guard_lo, *guard_hi;

void scoreboard_thread_guard(const void *lo, const void *hi)
{
    guard_lo = lo;
    guard_hi = hi;
}

void scoreboard_thread_enter(struct score_slot *slot, struct score_stack *stack)
{
    thread_slot = slot;
    thread_stack = stack;
    thread_tid = gettid();
    atomic_store(&slot->tid, thread_tid);
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
    if (thread_slot)
        atomic_store(&thread_slot->tid, 0);
    thread_slot = NULL;
    thread_stack = NULL;
}

void scoreboard_stack_signal(int sig, siginfo_t *si, void *ucontext)
{
    (void)sig;
    (void)si;
    struct score_stack *st = thread_stack;
    int saved = errno;
    if (st && atomic_load(&st->tid) == thread_tid) {
        unsigned asked = atomic_load(&st->asked);
        if (atomic_load(&st->done) != asked) {
            stack_capture(st->text, sizeof(st->text), ucontext);
            atomic_store(&st->done, asked);
        }
    }
    errno = saved;
}

void scoreboard_thread_crashed(const void *fault_addr)
{
    const char *a = fault_addr;
    if (thread_slot)
        atomic_store(&thread_slot->crashed,
                     a && a >= guard_lo && a < guard_hi ? SLOT_OVERFLOWED : SLOT_CRASHED);
}

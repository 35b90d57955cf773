/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * policy.c - the supervisor's decisions as functions of what it knows:
 * when to respawn after a failure, what to do when workers cannot boot,
 * whom to blame for a death, when a worker is stuck, how big the pool
 * should be, when a worker has outgrown max_memory. No I/O, no clock,
 * no globals; supervisor.c acts on the answers (PHP-FPM's process
 * control makes the same decisions inline, untested).
 */
#include "fcgate.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 10000
#define BACKOFF_FORGET_MS 10000 /* a quiet spell this long forgets earlier failures */
#define YOUNG_MS 1000           /* a worker that fails younger than this delays the next */
#define BOOT_FAILURES_MAX 5
#define SILENT_SLACK_MS 2000 /* threads beat once a second; allow for a late beat */
#define BOOT_SLACK_MS 10000  /* loading the module and its init, on a loaded machine */
#define POOL_HIGH_PCT 80     /* a busy share this high, for POOL_SUSTAIN_MS, grows the pool */
#define POOL_LOW_PCT 50      /* an idle worker retires only if the rest stay below this */
#define POOL_SUSTAIN_MS 300  /* three turns: one busy reading is no trend */
#define MEMORY_CHECKS 3      /* readings over max_memory in a row before a replacement */

/* A clean exit (max_requests, TTOU) is no failure. A worker that fails
 * young doubles the delay before the next spawn, up to BACKOFF_MAX_MS,
 * so a crash loop cannot become a fork storm. */
void policy_worker_ended(struct backoff *b, uint64_t now, uint64_t age_ms, int clean)
{
    if (clean)
        return;
    if (now - b->last_failure_ms > BACKOFF_FORGET_MS)
        b->delay_ms = 0;
    b->last_failure_ms = now;
    if (age_ms >= YOUNG_MS)
        return;
    b->delay_ms = b->delay_ms ? b->delay_ms * 2 : BACKOFF_FIRST_MS;
    if (b->delay_ms > BACKOFF_MAX_MS)
        b->delay_ms = BACKOFF_MAX_MS;
    b->next_spawn_ms = now + b->delay_ms;
}

/* A generation none of whose workers ever came up will not: a reload's
 * goes back to the one still serving, the first one stops the server.
 * One that served before gets a few more tries (a transient failure). */
enum boot_verdict policy_boot_failed(int gen_ever_ready, int have_previous, int *in_row)
{
    if (!gen_ever_ready)
        return have_previous ? BOOT_REVERT : BOOT_GIVE_UP;
    return ++*in_row >= BOOT_FAILURES_MAX ? BOOT_GIVE_UP : BOOT_RETRY;
}

long policy_blame(const struct score_slot *slots, size_t n, size_t timed_out)
{
    long busy = -1;
    /* Killed for a request over `timeout`: that request, whichever of the
     * worker's threads the signal happened to interrupt. */
    if (timed_out > 0 && timed_out <= n)
        return (long)timed_out - 1;
    for (size_t t = 0; t < n; t++) {
        int running = atomic_load(&slots[t].start_ms) != 0;
        if (running && atomic_load(&slots[t].crashed))
            return (long)t;
        if (running && busy < 0)
            busy = (long)t;
    }
    return busy;
}

int policy_boot_overdue(uint64_t started_ms, uint64_t now, int timeout_s)
{
    return timeout_s > 0 && now > started_ms &&
           now - started_ms > (uint64_t)timeout_s * 1000u + BOOT_SLACK_MS;
}

/* A request past timeout, or a thread silent past it while not in a
 * request (stopped, deadlocked, stuck in the kernel: gunicorn's silent
 * worker). A request's own time is bounded by the first rule. */
enum overdue policy_overdue(const struct score_slot *slots, size_t n, uint64_t now, int timeout_s,
                            size_t *which)
{
    uint64_t limit = (uint64_t)timeout_s * 1000u;
    if (timeout_s <= 0)
        return OVERDUE_NONE;
    for (size_t t = 0; t < n; t++) {
        uint64_t start = atomic_load(&slots[t].start_ms);
        if (start && now > start && now - start > limit) {
            *which = t;
            return OVERDUE_REQUEST;
        }
    }
    for (size_t t = 0; t < n; t++) {
        uint64_t start = atomic_load(&slots[t].start_ms);
        uint64_t hb = atomic_load(&slots[t].heartbeat_ms);
        if (!start && hb && now > hb && now - hb > limit + SILENT_SLACK_MS) {
            *which = t;
            return OVERDUE_SILENT;
        }
    }
    return OVERDUE_NONE;
}

static size_t div_up(uint64_t a, uint64_t b)
{
    return (size_t)((a + b - 1) / b);
}

/* The workers the load needs now, or 0 for none beyond the current ones.
 * Connections in the listen queue are demand already waiting: the pool
 * grows at once by as many workers as they fill, in one turn (PHP-FPM's
 * dynamic spawns at most 32 a second, doubling; its ondemand one per
 * event). A high busy share alone is only a trend: it must hold for
 * POOL_SUSTAIN_MS, then the pool grows to bring it back to POOL_HIGH_PCT.
 * Booting workers count as capacity, so a turn never adds workers for
 * demand that the previous turn's workers will take. */
static size_t pool_need(const struct pool_reading *r, struct pool_state *st, enum pool_spawn *why)
{
    uint64_t per = r->per_worker ? r->per_worker : 1;
    uint64_t cap = (uint64_t)r->workers * per;
    long queue = r->queue > 0 ? r->queue : 0;
    if (queue == 0 && r->waiting && r->workers == r->booting)
        queue = 1; /* ondemand: a connection came to an empty pool */
    if (queue > 0 && div_up(r->busy + (uint64_t)queue, per) > r->workers) {
        *why = SPAWN_QUEUE;
        return div_up(r->busy + (uint64_t)queue, per);
    }
    if (cap == 0 || r->busy * 100 < cap * POOL_HIGH_PCT) {
        st->high_since = 0;
        return 0;
    }
    if (!st->high_since)
        st->high_since = r->now ? r->now : 1;
    if (r->now - st->high_since < POOL_SUSTAIN_MS)
        return 0;
    *why = SPAWN_LOAD;
    return (size_t)(r->busy * 100 / (per * POOL_HIGH_PCT)) + 1; /* back below HIGH */
}

/* The idle worker to retire: the one idle longest past idle_timeout, as
 * long as the others stay below POOL_LOW_PCT busy without it (the gap
 * between LOW and HIGH is the hysteresis: a steady load neither grows nor
 * shrinks the pool). -1: none. */
static long pool_idle_victim(const struct pool_bounds *b, const struct pool_reading *r,
                             size_t floor)
{
    uint64_t per = r->per_worker ? r->per_worker : 1;
    long victim = -1;
    if (r->workers <= floor || r->queue > 0 || r->waiting || r->booting)
        return -1;
    if (r->busy * 100 > (uint64_t)(r->workers - 1) * per * POOL_LOW_PCT)
        return -1;
    for (size_t i = 0; i < r->workers; i++)
        if (r->idle_ms[i] >= b->idle_timeout_ms &&
            (victim < 0 || r->idle_ms[i] > r->idle_ms[victim]))
            victim = (long)i;
    return victim;
}

/* The worker idle longest, for a bound that moved below the pool. */
static long pool_most_idle(const struct pool_reading *r)
{
    long best = 0;
    for (size_t i = 1; i < r->workers; i++)
        if (r->idle_ms[i] > r->idle_ms[best])
            best = (long)i;
    return best;
}

void policy_pool(const struct pool_bounds *b, const struct pool_reading *r, struct pool_state *st,
                 struct pool_decision *d)
{
    size_t floor = b->pm == PM_ONDEMAND ? 0 : b->min;
    enum pool_spawn why = SPAWN_FLOOR;

    d->start = 0;
    d->start_why = SPAWN_FLOOR;
    d->retire = -1;
    d->retire_why = RETIRE_IDLE;
    if (b->pm == PM_STATIC)
        return;
    if (r->workers > b->max) {
        d->retire = pool_most_idle(r);
        d->retire_why = RETIRE_BOUND;
        return;
    }
    size_t need = pool_need(r, st, &why);
    if (need < floor) {
        need = floor;
        why = SPAWN_FLOOR;
    }
    if (need > b->max)
        need = b->max;
    if (need > r->workers) {
        d->start = need - r->workers;
        d->start_why = why;
        st->high_since = 0;
        return;
    }
    d->retire = pool_idle_victim(b, r, floor);
}

int policy_memory_over(uint64_t bytes, uint64_t max_memory, unsigned *over)
{
    if (max_memory == 0 || bytes <= max_memory) {
        *over = 0;
        return 0;
    }
    return ++*over >= MEMORY_CHECKS;
}

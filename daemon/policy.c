/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * policy.c - the supervisor's decisions as functions of what it knows:
 * when to respawn after a failure, what to do when workers cannot boot,
 * whom to blame for a death, when a worker is stuck. No I/O, no clock,
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

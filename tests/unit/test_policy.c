/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_policy.c - the supervisor's decisions (policy.c): respawn backoff,
 * what to do when workers cannot boot, whom to blame for a death, when a
 * worker counts as stuck, how the pool follows recorded load shapes (ramp,
 * burst, steady, idle), when a worker has outgrown max_memory.
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

#include <string.h>

static void test_policy_backoff_doubles_for_young_failures_up_to_10s(void **state)
{
    (void)state;
    struct backoff b = {0};
    uint64_t now = 100000;
    uint64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        policy_worker_ended(&b, now, 10, 0);
        assert_int_equal(b.delay_ms, want[i]);
        assert_int_equal(b.next_spawn_ms, now + want[i]);
        now += 50;
    }
}

static void test_policy_backoff_ignores_clean_exits_and_old_workers(void **state)
{
    (void)state;
    struct backoff b = {0};
    policy_worker_ended(&b, 5000, 10, 1); /* max_requests, TTOU */
    assert_int_equal(b.next_spawn_ms, 0);
    assert_int_equal(b.delay_ms, 0);
    policy_worker_ended(&b, 5000, 60000, 0); /* crashed after a minute's work */
    assert_int_equal(b.next_spawn_ms, 0);
    assert_int_equal(b.delay_ms, 0);
}

static void test_policy_backoff_forgets_after_a_quiet_spell(void **state)
{
    (void)state;
    struct backoff b = {0};
    policy_worker_ended(&b, 1000, 10, 0);
    policy_worker_ended(&b, 1100, 10, 0);
    assert_int_equal(b.delay_ms, 200);
    policy_worker_ended(&b, 1100 + 10001, 10, 0);
    assert_int_equal(b.delay_ms, 100);
}

static void test_policy_boot_failure_verdicts(void **state)
{
    (void)state;
    int row = 0;
    /* A first generation that never came up: nothing to fall back on. */
    assert_int_equal(policy_boot_failed(0, 0, &row), BOOT_GIVE_UP);
    /* A reload's generation that never came up: the old one keeps serving. */
    assert_int_equal(policy_boot_failed(0, 1, &row), BOOT_REVERT);
    assert_int_equal(row, 0);
    /* One that served before: a few more tries, then stop. */
    for (int i = 1; i < 5; i++) {
        assert_int_equal(policy_boot_failed(1, 0, &row), BOOT_RETRY);
        assert_int_equal(row, i);
    }
    assert_int_equal(policy_boot_failed(1, 0, &row), BOOT_GIVE_UP);
}

static void slot_busy(struct score_slot *s, uint64_t start)
{
    atomic_store(&s->start_ms, start);
}

static void test_policy_blame_prefers_timeout_then_crash_then_busy(void **state)
{
    (void)state;
    struct score_slot s[4];
    memset(s, 0, sizeof(s));
    assert_int_equal(policy_blame(s, 4, 0), -1);
    slot_busy(&s[1], 10);
    slot_busy(&s[3], 20);
    assert_int_equal(policy_blame(s, 4, 0), 1);
    atomic_store(&s[3].crashed, 1);
    assert_int_equal(policy_blame(s, 4, 0), 3);
    /* A crash mark on an idle slot is stale. */
    atomic_store(&s[0].crashed, 1);
    assert_int_equal(policy_blame(s, 4, 0), 3);
    /* Killed for slot 2's timeout: slot 2, whatever took the signal. */
    assert_int_equal(policy_blame(s, 4, 3), 2);
    assert_int_equal(policy_blame(s, 4, 9), 3); /* out of range: ignored */
}

static void test_policy_overdue_request_and_silent_thread(void **state)
{
    (void)state;
    struct score_slot s[2];
    size_t which = 99;
    uint64_t now = 1000000;
    memset(s, 0, sizeof(s));
    atomic_store(&s[0].heartbeat_ms, now);
    atomic_store(&s[1].heartbeat_ms, now);
    assert_int_equal(policy_overdue(s, 2, now, 30, &which), OVERDUE_NONE);
    /* A request within its timeout, its thread not beating: fine. */
    slot_busy(&s[1], now - 29000);
    atomic_store(&s[1].heartbeat_ms, now - 29000);
    assert_int_equal(policy_overdue(s, 2, now, 30, &which), OVERDUE_NONE);
    /* Past it. */
    assert_int_equal(policy_overdue(s, 2, now + 1001, 30, &which), OVERDUE_REQUEST);
    assert_int_equal(which, 1);
    /* An idle thread silent past timeout plus the beat's slack. */
    slot_busy(&s[1], 0);
    atomic_store(&s[1].heartbeat_ms, now);
    atomic_store(&s[0].heartbeat_ms, now - 31000);
    assert_int_equal(policy_overdue(s, 2, now, 30, &which), OVERDUE_NONE);
    atomic_store(&s[0].heartbeat_ms, now - 32001);
    assert_int_equal(policy_overdue(s, 2, now, 30, &which), OVERDUE_SILENT);
    assert_int_equal(which, 0);
    /* timeout = 0: never. A thread that has not started: not silent. */
    assert_int_equal(policy_overdue(s, 2, now, 0, &which), OVERDUE_NONE);
    atomic_store(&s[0].heartbeat_ms, 0);
    assert_int_equal(policy_overdue(s, 2, now, 30, &which), OVERDUE_NONE);
}

static void test_policy_boot_overdue_after_timeout_and_slack(void **state)
{
    (void)state;
    assert_false(policy_boot_overdue(1000, 6000, 1));
    assert_false(policy_boot_overdue(1000, 12000, 1));
    assert_true(policy_boot_overdue(1000, 12001, 1));
    assert_false(policy_boot_overdue(1000, 1000000, 0)); /* timeout 0: never */
    /* Forked after the supervisor read its clock for this turn. */
    assert_false(policy_boot_overdue(5000, 4999, 1));
}

/* ---- the pool over load shapes ----
 *
 * A small model of a pool: each turn (100 ms, the supervisor's tick) the
 * load is a number of requests in progress or waiting; the ready workers
 * take up to per_worker each, the first workers first (EPOLLEXCLUSIVE
 * wakes the first waiter), the rest waits in the listen queue. A worker
 * started in one turn is ready the next; a retired one is gone at once.
 */
#define TICK 100
#define SIM_MAX 128

struct sim {
    struct pool_bounds b;
    struct pool_state st;
    unsigned per_worker;
    size_t ready, booting;
    uint64_t idle_ms[SIM_MAX];
    uint64_t now;
    size_t spawned, retired, peak;
    size_t started_in_one_turn; /* the most started by one decision */
};

static void sim_init(struct sim *s, enum config_pm pm, size_t min, size_t max, unsigned per)
{
    memset(s, 0, sizeof(*s));
    s->b = (struct pool_bounds){pm, min, max, 2000};
    s->per_worker = per;
    s->now = 1000000;
}

/* One turn at load requests; returns the workers after it. */
static size_t sim_turn(struct sim *s, uint64_t load, int waiting)
{
    uint64_t cap = (uint64_t)s->ready * s->per_worker;
    uint64_t busy = load < cap ? load : cap;
    long queue = (long)(load - busy);
    for (size_t i = 0; i < s->ready; i++) {
        int used = (uint64_t)i * s->per_worker < busy;
        s->idle_ms[i] = used ? 0 : s->idle_ms[i] + TICK;
    }
    s->ready += s->booting; /* started last turn: ready now, not yet idle */
    s->booting = 0;
    struct pool_reading r = {
        .now = s->now,
        .workers = s->ready,
        .booting = 0,
        .per_worker = s->per_worker,
        .busy = busy,
        .queue = queue,
        .waiting = waiting || queue > 0,
        .idle_ms = s->idle_ms,
    };
    struct pool_decision d;
    policy_pool(&s->b, &r, &s->st, &d);
    if (d.retire >= 0) {
        assert_true((size_t)d.retire < s->ready);
        memmove(&s->idle_ms[d.retire], &s->idle_ms[d.retire + 1],
                (s->ready - (size_t)d.retire - 1) * sizeof(s->idle_ms[0]));
        s->ready--;
        s->retired++;
    }
    assert_true(s->ready + d.start <= SIM_MAX);
    for (size_t i = 0; i < d.start; i++)
        s->idle_ms[s->ready + i] = 0;
    s->booting = d.start;
    s->spawned += d.start;
    if (d.start > s->started_in_one_turn)
        s->started_in_one_turn = d.start;
    s->now += TICK;
    size_t n = s->ready + s->booting;
    if (n > s->peak)
        s->peak = n;
    return n;
}

static void test_policy_pool_static_never_changes_the_pool(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, PM_STATIC, 1, 8, 1);
    s.ready = 4;
    for (int t = 0; t < 100; t++)
        assert_int_equal(sim_turn(&s, t < 50 ? 40 : 0, 0), 4);
    assert_int_equal(s.spawned + s.retired, 0);
}

static void test_policy_pool_dynamic_starts_at_min_workers(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, PM_DYNAMIC, 3, 8, 1);
    assert_int_equal(sim_turn(&s, 0, 0), 3);
    for (int t = 0; t < 10; t++)
        assert_int_equal(sim_turn(&s, 0, 0), 3);
}

/* 64 clients arrive at once on an idle pool: the queue says how many
 * workers are missing and they start in one turn, not one a second. */
static void test_policy_pool_burst_spawns_what_the_queue_needs_at_once(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, PM_DYNAMIC, 2, 64, 1);
    for (int t = 0; t < 5; t++)
        sim_turn(&s, 0, 0);
    assert_int_equal(sim_turn(&s, 64, 0), 64);
    assert_int_equal(s.started_in_one_turn, 62);
    /* The queue empties once they are ready: no further growth. */
    for (int t = 0; t < 20; t++)
        assert_int_equal(sim_turn(&s, 64, 0), 64);
    /* Threads mode: 8 per worker, so 64 waiting need 8 workers. */
    sim_init(&s, PM_DYNAMIC, 1, 64, 8);
    sim_turn(&s, 0, 0);
    sim_turn(&s, 0, 0);
    assert_int_equal(sim_turn(&s, 64, 0), 8);
}

/* A ramp from 1 to 64 concurrent requests and back: the pool follows up,
 * never past max_workers, and after idle_timeout comes back to min. */
static void test_policy_pool_ramp_grows_then_shrinks_to_min(void **state)
{
    (void)state;
    struct sim s;
    size_t top = 0;
    sim_init(&s, PM_DYNAMIC, 2, 32, 1);
    for (uint64_t load = 1; load <= 64; load++)
        for (int t = 0; t < 5; t++) {
            size_t n = sim_turn(&s, load, 0);
            assert_true(n <= 32);
            if (n > top)
                top = n;
        }
    assert_int_equal(top, 32);
    for (uint64_t load = 64; load >= 1; load--)
        for (int t = 0; t < 5; t++)
            assert_true(sim_turn(&s, load, 0) >= 2);
    /* Idle: each worker retires idle_timeout after its last request. */
    for (int t = 0; t < 20 + 32 * 2; t++)
        sim_turn(&s, 0, 0);
    assert_int_equal(s.ready, 2);
    assert_int_equal(s.peak, 32);
}

/* A steady load with jitter (requests in progress wander by one) settles
 * and then neither grows nor shrinks the pool. */
static void test_policy_pool_steady_load_does_not_oscillate(void **state)
{
    (void)state;
    for (unsigned per = 1; per <= 8; per *= 8) {
        struct sim s;
        sim_init(&s, PM_DYNAMIC, 1, 64, per);
        uint64_t base = 12 * per;
        for (int t = 0; t < 100; t++) /* settle */
            sim_turn(&s, base + (uint64_t)(t % 3) - 1, 0);
        size_t spawned = s.spawned, retired = s.retired, n = s.ready + s.booting;
        for (int t = 0; t < 6000; t++) /* ten minutes */
            assert_int_equal(sim_turn(&s, base + (uint64_t)((t * 7) % 3) - 1, 0), n);
        assert_int_equal(s.spawned, spawned);
        assert_int_equal(s.retired, retired);
    }
}

/* One busy reading is no trend; a busy share that stays high grows the
 * pool back below it. */
static void test_policy_pool_grows_on_a_sustained_busy_share(void **state)
{
    (void)state;
    struct pool_bounds b = {PM_DYNAMIC, 1, 16, 2000};
    struct pool_state st = {0};
    struct pool_decision d;
    uint64_t idle[4] = {0, 0, 0, 0};
    struct pool_reading r = {
        .now = 5000, .workers = 4, .per_worker = 8, .busy = 30, .idle_ms = idle};
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.start, 0);
    r.now += 200;
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.start, 0);
    r.busy = 10; /* it fell back: the window starts again */
    r.now += 100;
    policy_pool(&b, &r, &st, &d);
    r.busy = 30;
    r.now += 100;
    policy_pool(&b, &r, &st, &d);
    r.now += 300;
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.start, 1); /* 30 of 40 slots: 5 workers bring it to 75 % */
    assert_int_equal(d.start_why, SPAWN_LOAD);
}

/* ondemand: no worker while idle, one as soon as a connection waits. */
static void test_policy_pool_ondemand_goes_to_zero_and_back(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, PM_ONDEMAND, 2, 8, 1);
    assert_int_equal(sim_turn(&s, 0, 0), 0);
    assert_int_equal(sim_turn(&s, 0, 1), 1); /* a connection: one worker */
    assert_int_equal(s.spawned, 1);
    /* One client keeps its one worker fully busy: a second one gives
     * headroom, and no more. */
    for (int t = 0; t < 10; t++)
        assert_true(sim_turn(&s, 1, 0) <= 2);
    assert_int_equal(sim_turn(&s, 1, 0), 2);
    for (int t = 0; t < 45; t++)
        sim_turn(&s, 0, 0);
    assert_int_equal(s.ready, 0);
    /* A connection waiting while a worker boots starts no second one. */
    uint64_t idle[1] = {0};
    struct pool_reading r = {.now = 1,
                             .workers = 1,
                             .booting = 1,
                             .per_worker = 1,
                             .queue = 1,
                             .waiting = 1,
                             .idle_ms = idle};
    struct pool_decision d;
    policy_pool(&s.b, &r, &s.st, &d);
    assert_int_equal(d.start, 0);
    assert_int_equal(d.retire, -1);
}

/* TTOU moved max_workers below the pool: the most idle worker goes. */
static void test_policy_pool_retires_above_max_workers(void **state)
{
    (void)state;
    struct pool_bounds b = {PM_DYNAMIC, 1, 2, 2000};
    struct pool_state st = {0};
    struct pool_decision d;
    uint64_t idle[3] = {0, 700, 300};
    struct pool_reading r = {
        .now = 5000, .workers = 3, .per_worker = 1, .busy = 1, .idle_ms = idle};
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.retire, 1);
    assert_int_equal(d.retire_why, RETIRE_BOUND);
    assert_int_equal(d.start, 0);
}

/* An idle worker stays while the queue is not empty or while the others
 * would be too busy without it. */
static void test_policy_pool_keeps_idle_workers_the_load_needs(void **state)
{
    (void)state;
    struct pool_bounds b = {PM_DYNAMIC, 1, 8, 2000};
    struct pool_state st = {0};
    struct pool_decision d;
    uint64_t idle[4] = {0, 0, 0, 5000};
    struct pool_reading r = {
        .now = 5000, .workers = 4, .per_worker = 1, .busy = 2, .idle_ms = idle};
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.retire, -1); /* 2 of 3 would be 67 % busy */
    r.busy = 1;
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.retire, 3);
    assert_int_equal(d.retire_why, RETIRE_IDLE);
    r.queue = 1;
    r.busy = 1;
    policy_pool(&b, &r, &st, &d);
    assert_int_equal(d.retire, -1);
}

static void test_policy_memory_over_needs_consecutive_readings(void **state)
{
    (void)state;
    unsigned over = 0;
    assert_false(policy_memory_over(200, 100, &over));
    assert_false(policy_memory_over(200, 100, &over));
    assert_false(policy_memory_over(90, 100, &over)); /* a dip starts the count again */
    assert_int_equal(over, 0);
    assert_false(policy_memory_over(101, 100, &over));
    assert_false(policy_memory_over(101, 100, &over));
    assert_true(policy_memory_over(101, 100, &over));
    over = 0;
    for (int i = 0; i < 10; i++)
        assert_false(policy_memory_over(1ull << 40, 0, &over)); /* 0: off */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_backoff_doubles_for_young_failures_up_to_10s),
        cmocka_unit_test(test_policy_backoff_ignores_clean_exits_and_old_workers),
        cmocka_unit_test(test_policy_backoff_forgets_after_a_quiet_spell),
        cmocka_unit_test(test_policy_boot_failure_verdicts),
        cmocka_unit_test(test_policy_blame_prefers_timeout_then_crash_then_busy),
        cmocka_unit_test(test_policy_overdue_request_and_silent_thread),
        cmocka_unit_test(test_policy_boot_overdue_after_timeout_and_slack),
        cmocka_unit_test(test_policy_pool_static_never_changes_the_pool),
        cmocka_unit_test(test_policy_pool_dynamic_starts_at_min_workers),
        cmocka_unit_test(test_policy_pool_burst_spawns_what_the_queue_needs_at_once),
        cmocka_unit_test(test_policy_pool_ramp_grows_then_shrinks_to_min),
        cmocka_unit_test(test_policy_pool_steady_load_does_not_oscillate),
        cmocka_unit_test(test_policy_pool_grows_on_a_sustained_busy_share),
        cmocka_unit_test(test_policy_pool_ondemand_goes_to_zero_and_back),
        cmocka_unit_test(test_policy_pool_retires_above_max_workers),
        cmocka_unit_test(test_policy_pool_keeps_idle_workers_the_load_needs),
        cmocka_unit_test(test_policy_memory_over_needs_consecutive_readings),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}

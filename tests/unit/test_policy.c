/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_policy.c - the supervisor's decisions (policy.c): respawn backoff,
 * what to do when workers cannot boot, whom to blame for a death, when a
 * worker counts as stuck.
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
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}

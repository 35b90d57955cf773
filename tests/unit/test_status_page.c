/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_status_page.c - the status page's forms (status_page.c) from a
 * made-up snapshot: which form a request gets, the text table, the JSON
 * keys, and OpenMetrics' families, cumulative buckets and # EOF; the pool's
 * bounds, spawns and retirements by reason, queue rejections and waits.
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

static struct status_slot slots[3] = {
    {.pid = 101,
     .generation = 2,
     .thread = 0,
     .state = STATE_BUSY,
     .requests = 5,
     .active = 1,
     .what = "GET /slow \"x\"",
     .running_ms = 1500,
     .rss_bytes = 4096 * 1024},
    {.pid = 101, .generation = 2, .thread = 1, .state = STATE_IDLE, .requests = 7},
    {.pid = 99, .generation = 1, .thread = 0, .state = STATE_STOPPING, .requests = 30},
};

static void snapshot(struct status_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->version = "9.9";
    s->mode = "threads";
    s->supervisor = 42;
    s->generation = 2;
    s->workers_configured = 1;
    s->workers[STATE_BUSY] = 1;
    s->workers[STATE_STOPPING] = 1;
    s->ready = 1;
    s->requests_total = 42;
    s->by_class[1] = 40;
    s->by_class[4] = 2;
    s->duration_le[0] = 30;
    s->duration_le[3] = 10;
    s->duration_le[SCORE_BUCKETS - 1] = 2;
    s->duration_us = 2500000;
    s->restarts[RESTART_RELOAD] = 1;
    s->timeouts = 3;
    s->nlisten = 1;
    strcpy(s->listen[0].address, "unix:/run/fcgate/fcgate.sock");
    s->listen[0].queue = 50;
    s->listen[0].max_queue = 511;
    s->slots = slots;
    s->nslots = 3;
    s->pm = "static";
    s->min_workers = 1;
    s->max_workers = 1;
    s->idle_timeout = 10;
    s->queue_timeout = 0.5;
    s->max_memory = 536870912;
    s->spawns[SPAWN_QUEUE] = 6;
    s->spawns[SPAWN_LOAD] = 1;
    s->spawns[SPAWN_MEMORY] = 1;
    s->retirements[RETIRE_IDLE] = 5;
    s->retirements[RETIRE_MEMORY] = 1;
    s->restarts[RESTART_MEMORY] = 1;
    s->queue_rejected = 4;
    s->queue_le[0] = 90; /* <= 5 ms */
    s->queue_le[7] = 6;  /* <= 1 s */
    s->queue_le[SCORE_BUCKETS - 1] = 4;
    s->queue_us = 42000000;
}

static char *render(enum status_format f, int full, struct codec_buf *b)
{
    struct status_snapshot s;
    snapshot(&s);
    memset(b, 0, sizeof(*b));
    assert_int_equal(status_page_render(b, &s, f, full), 0);
    assert_int_equal(codec_buf_append(b, "", 1), 0);
    return (char *)b->data;
}

static void test_status_page_format_from_query_and_accept(void **state)
{
    (void)state;
    int full;
    assert_int_equal(status_page_format("", NULL, &full), STATUS_TEXT);
    assert_int_equal(full, 0);
    assert_int_equal(status_page_format("json", NULL, &full), STATUS_JSON);
    assert_int_equal(status_page_format("full&json", NULL, &full), STATUS_JSON);
    assert_int_equal(full, 1);
    assert_int_equal(status_page_format("openmetrics", NULL, &full), STATUS_OPENMETRICS);
    assert_int_equal(
        status_page_format("x=1", "application/openmetrics-text; version=1.0.0", &full),
        STATUS_OPENMETRICS);
    assert_int_equal(status_page_format("html", NULL, &full), STATUS_HTML);
    assert_int_equal(status_page_format("jsonp", "text/html", &full), STATUS_TEXT);
    assert_int_equal(full, 0);
}

static void test_status_page_text_has_summary_queue_and_one_row_per_worker(void **state)
{
    (void)state;
    struct codec_buf b;
    const char *t = render(STATUS_TEXT, 0, &b);
    assert_non_null(strstr(t, "generation 2: 1 of 1 workers ready\n"));
    assert_non_null(strstr(t, "pool: pm static, 1..1 workers"));
    assert_non_null(strstr(t, "requests: 42 (1xx 0, 2xx 40, 3xx 0, 4xx 0, 5xx 2)"));
    assert_non_null(strstr(t, "unix:/run/fcgate/fcgate.sock                  50     511\n"));
    assert_non_null(strstr(t, "101         2 busy              12       1\n"));
    assert_non_null(strstr(t, "99          1 stopping          30       0\n"));
    assert_null(strstr(t, "GET /slow"));
    codec_buf_free(&b);
    t = render(STATUS_TEXT, 1, &b);
    assert_non_null(strstr(t, "1.500s      4096  GET /slow \"x\"\n"));
    codec_buf_free(&b);
}

static void test_status_page_json_keys_and_escapes(void **state)
{
    (void)state;
    struct codec_buf b;
    const char *j = render(STATUS_JSON, 1, &b);
    assert_non_null(strstr(j, "\"requests_total\":42,"));
    assert_non_null(strstr(j, "\"listen\":[{\"address\":\"unix:/run/fcgate/fcgate.sock\","
                              "\"queue\":50,\"max_queue\":511}]"));
    assert_non_null(strstr(j, "\"workers\":[{\"pid\":101,\"generation\":2,\"state\":\"busy\","
                              "\"requests\":12,\"active\":1},{\"pid\":99,"));
    assert_non_null(strstr(j, "\"request\":\"GET /slow \\\"x\\\"\""));
    assert_non_null(strstr(
        j, "\"restarts\":{\"crash\":0,\"timeout\":0,\"recycle\":0,\"reload\":1,\"memory\":1}"));
    assert_string_equal(j + strlen(j) - 2, "}\n");
    codec_buf_free(&b);
}

static void test_status_page_openmetrics_buckets_are_cumulative_and_end_in_eof(void **state)
{
    (void)state;
    struct codec_buf b;
    const char *m = render(STATUS_OPENMETRICS, 0, &b);
    assert_non_null(strstr(m, "fcgate_requests_total{status=\"2xx\"} 40\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_bucket{le=\"0.005\"} 30\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_bucket{le=\"0.05\"} 40\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_bucket{le=\"10\"} 40\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_bucket{le=\"+Inf\"} 42\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_count 42\n"));
    assert_non_null(strstr(m, "fcgate_request_duration_seconds_sum 2.500000\n"));
    assert_non_null(strstr(m, "# UNIT fcgate_request_duration_seconds seconds\n"));
    assert_non_null(strstr(m, "fcgate_workers{state=\"stopping\"} 1\n"));
    assert_non_null(strstr(m, "fcgate_listen_queue{listen=\"unix:/run/fcgate/fcgate.sock\"} 50\n"));
    assert_non_null(
        strstr(m, "fcgate_listen_queue_max{listen=\"unix:/run/fcgate/fcgate.sock\"} 511\n"));
    assert_non_null(strstr(m, "fcgate_worker_restarts_total{reason=\"reload\"} 1\n"));
    assert_non_null(strstr(m, "fcgate_timeouts_total 3\n"));
    assert_string_equal(m + strlen(m) - 6, "# EOF\n");
    codec_buf_free(&b);
}

static void test_status_page_html_is_self_contained_and_reads_the_json(void **state)
{
    (void)state;
    struct codec_buf b;
    const char *h = render(STATUS_HTML, 0, &b);
    assert_non_null(strstr(h, "<!doctype html>"));
    assert_non_null(strstr(h, "location.pathname + \"?json\""));
    assert_non_null(strstr(h, "setInterval(tick, 1000)"));
    assert_non_null(strstr(h, "id=\"workers-live\""));
    /* No external asset: no URL, no src= or href= anywhere. */
    assert_null(strstr(h, "http"));
    assert_null(strstr(h, "src="));
    assert_null(strstr(h, "href="));
    assert_string_equal(status_page_content_type(STATUS_HTML), "text/html; charset=utf-8");
    codec_buf_free(&b);
}

static char *render_dynamic(enum status_format f, struct codec_buf *b)
{
    struct status_snapshot s;
    snapshot(&s);
    s.pm = "dynamic";
    s.min_workers = 2;
    s.max_workers = 16;
    memset(b, 0, sizeof(*b));
    assert_int_equal(status_page_render(b, &s, f, 0), 0);
    assert_int_equal(codec_buf_append(b, "", 1), 0);
    return (char *)b->data;
}

static void test_status_page_pool_in_every_form(void **state)
{
    (void)state;
    struct codec_buf b;
    const char *t = render_dynamic(STATUS_TEXT, &b);
    assert_non_null(strstr(t, "generation 2: 1 workers ready (pm dynamic, 2..16)\n"));
    assert_non_null(strstr(t, "pool: pm dynamic, 2..16 workers, idle_timeout 10 s\n"));
    assert_non_null(strstr(t,
                           "spawns: min_workers 0, load 1, queue 6, memory 1; retirements: idle 5, "
                           "bound 0, memory 1\n"));
    assert_non_null(strstr(t, "queue: 100 requests timed (mean wait 420.0 ms), 4 answered 503 "
                              "(queue_timeout 0.5 s)\n"));
    codec_buf_free(&b);
    const char *j = render_dynamic(STATUS_JSON, &b);
    assert_non_null(strstr(j,
                           "\"pm\":\"dynamic\",\"min_workers\":2,\"max_workers\":16,"
                           "\"idle_timeout\":10,\"queue_timeout\":0.5,\"max_memory\":536870912"));
    assert_non_null(
        strstr(j, "\"spawns\":{\"min_workers\":0,\"load\":1,\"queue\":6,\"memory\":1}"));
    assert_non_null(strstr(j, "\"retirements\":{\"idle\":5,\"bound\":0,\"memory\":1}"));
    assert_non_null(strstr(j, "\"queue_rejections_total\":4,\"request_queue\":{\"count\":100,"
                              "\"sum_seconds\":42.000000}"));
    codec_buf_free(&b);
    const char *m = render_dynamic(STATUS_OPENMETRICS, &b);
    assert_non_null(strstr(m, "# TYPE fcgate_pool info\n"));
    assert_non_null(strstr(m, "fcgate_pool_info{pm=\"dynamic\"} 1\n"));
    assert_non_null(strstr(m, "fcgate_pool_min_workers 2\n"));
    assert_non_null(strstr(m, "fcgate_pool_max_workers 16\n"));
    assert_non_null(strstr(m, "fcgate_worker_spawns_total{reason=\"queue\"} 6\n"));
    assert_non_null(strstr(m, "fcgate_worker_retirements_total{reason=\"idle\"} 5\n"));
    assert_non_null(strstr(m, "fcgate_worker_restarts_total{reason=\"memory\"} 1\n"));
    assert_non_null(strstr(m, "fcgate_queue_rejections_total 4\n"));
    assert_non_null(strstr(m, "fcgate_request_queue_seconds_bucket{le=\"0.005\"} 90\n"));
    assert_non_null(strstr(m, "fcgate_request_queue_seconds_bucket{le=\"1\"} 96\n"));
    assert_non_null(strstr(m, "fcgate_request_queue_seconds_bucket{le=\"+Inf\"} 100\n"));
    assert_non_null(strstr(m, "fcgate_request_queue_seconds_count 100\n"));
    assert_non_null(strstr(m, "fcgate_request_queue_seconds_sum 42.000000\n"));
    assert_string_equal(m + strlen(m) - 6, "# EOF\n");
    codec_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_page_format_from_query_and_accept),
        cmocka_unit_test(test_status_page_text_has_summary_queue_and_one_row_per_worker),
        cmocka_unit_test(test_status_page_json_keys_and_escapes),
        cmocka_unit_test(test_status_page_openmetrics_buckets_are_cumulative_and_end_in_eof),
        cmocka_unit_test(test_status_page_html_is_self_contained_and_reads_the_json),
        cmocka_unit_test(test_status_page_pool_in_every_form),
    };
    return cmocka_run_group_tests_name("status_page", tests, NULL, NULL);
}

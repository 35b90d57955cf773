/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_log.c - access-log formats: checking and rendering (pure parts of
 * log.c), and whole lines from concurrent writers.
 */
/* cmocka needs these first. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct access_fields fields = {
    .remote_addr = "127.0.0.1",
    .method = "GET",
    .uri = "/notes?limit=2",
    .path = "/notes",
    .query = "limit=2",
    .status = 200,
    .bytes = 42,
    .duration_us = 1234,
    .pid = 77,
    .time_s = 0,
};

static void test_log_default_format_renders_every_field(void **state)
{
    char line[512];
    (void)state;
    size_t n = log_access_render(line, sizeof(line), LOG_ACCESS_FORMAT_DEFAULT, &fields);
    assert_string_equal(line, "127.0.0.1 - [01/Jan/1970:00:00:00 +0000] \"GET /notes?limit=2\" "
                              "200 42 1234us pid=77\n");
    assert_int_equal(n, strlen(line));
}

static void test_log_braced_variables_and_missing_values(void **state)
{
    char line[256];
    struct access_fields f = fields;
    (void)state;
    f.remote_addr = NULL;
    f.query = "";
    log_access_render(line, sizeof(line), "${status}s $remote_addr q=$query $time_iso $path", &f);
    assert_string_equal(line, "200s - q=- 1970-01-01T00:00:00Z /notes\n");
}

static void test_log_control_bytes_cannot_forge_lines(void **state)
{
    char line[256];
    struct access_fields f = fields;
    (void)state;
    f.uri = "/a\nGET /forged\r";
    log_access_render(line, sizeof(line), "$uri", &f);
    assert_string_equal(line, "/a?GET /forged?\n");
}

static void test_log_render_cuts_to_fit_and_keeps_newline(void **state)
{
    char line[8];
    (void)state;
    size_t n = log_access_render(line, sizeof(line), "$uri", &fields);
    assert_int_equal(n, 7);
    assert_string_equal(line, "/notes\n");
}

static void test_log_format_check_rejects_unknown_variables(void **state)
{
    char bad[80];
    (void)state;
    assert_int_equal(log_access_format_check(LOG_ACCESS_FORMAT_DEFAULT, bad, sizeof(bad)), 0);
    assert_int_equal(log_access_format_check("$method $bogus x", bad, sizeof(bad)), -1);
    assert_string_equal(bad, "$bogus");
    assert_int_equal(log_access_format_check("${status", bad, sizeof(bad)), -1);
    assert_int_equal(log_access_format_check("plain text", bad, sizeof(bad)), 0);
}

/* The whole error-log file written by one message. */
static char *error_log_of(const char *msg)
{
    char path[] = "/tmp/fcgate-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(log_open(FCGATE_LOG_INFO, path, NULL, NULL), 0);
    log_error("app: GET %s: failed", msg);
    log_open(FCGATE_LOG_INFO, "-", NULL, NULL);
    static char text[8192];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    assert_true(n > 0);
    text[n] = '\0';
    close(fd);
    unlink(path);
    return text;
}

static void test_log_error_line_escapes_control_bytes(void **state)
{
    (void)state;
    char *text = error_log_of("/a\nGET /forged\r\t\x01\x7f");
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0'); /* one line, newline kept at its end */
    assert_non_null(strstr(text, "app: GET /a\\x0aGET /forged\\x0d\\x09\\x01\\x7f: failed\n"));
}

static void test_log_error_line_cut_keeps_newline_and_whole_escapes(void **state)
{
    static char big[6000];
    (void)state;
    memset(big, '\n', sizeof(big) - 1);
    char *text = error_log_of(big);
    size_t len = strlen(text);
    assert_true(len <= 4096);
    assert_int_equal(text[len - 1], '\n');
    assert_null(memchr(text, '\n', len - 1));
    /* Cut between escapes, never inside one. */
    char *last = strrchr(text, '\\');
    assert_non_null(last);
    assert_int_equal(text + len - 1 - last, 4);
}

static void test_log_level_names(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("error"), FCGATE_LOG_ERROR);
    assert_int_equal(log_level_parse("WARN"), FCGATE_LOG_WARN);
    assert_int_equal(log_level_parse("info"), FCGATE_LOG_INFO);
    assert_int_equal(log_level_parse("debug"), FCGATE_LOG_DEBUG);
    assert_int_equal(log_level_parse("loud"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_default_format_renders_every_field),
        cmocka_unit_test(test_log_braced_variables_and_missing_values),
        cmocka_unit_test(test_log_control_bytes_cannot_forge_lines),
        cmocka_unit_test(test_log_render_cuts_to_fit_and_keeps_newline),
        cmocka_unit_test(test_log_format_check_rejects_unknown_variables),
        cmocka_unit_test(test_log_level_names),
        cmocka_unit_test(test_log_error_line_escapes_control_bytes),
        cmocka_unit_test(test_log_error_line_cut_keeps_newline_and_whole_escapes),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}

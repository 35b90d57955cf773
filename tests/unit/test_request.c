/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_request.c - the app API of request.c, without sockets: a request
 * decoded by the codec, run through request_run with a test handler, its
 * response captured from the channel's write and decoded back.
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

#include <fastcgi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct capture {
    struct codec_buf wire; /* everything written */
    int fail_writes;       /* the peer is gone */
    int cancel_on_sleep;   /* a wait that finds the request over its timeout */
    int writes;
};

static struct capture cap;
static int (*handler)(fcgate_req *r);

static int cap_write(struct req_chan *ch, const void *buf, size_t len)
{
    (void)ch;
    cap.writes++;
    if (cap.fail_writes)
        return -1;
    return codec_buf_append(&cap.wire, buf, len);
}

static int cap_sleep(struct req_chan *ch, unsigned ms)
{
    (void)ms;
    if (!cap.cancel_on_sleep)
        return FCGATE_OK;
    ch->cancelled = 1;
    return FCGATE_ETIMEDOUT;
}

static int cap_wait_fd(struct req_chan *ch, int fd, short events, int timeout_ms)
{
    (void)ch;
    (void)fd;
    (void)events;
    (void)timeout_ms;
    return FCGATE_ETIMEDOUT;
}

static int cap_db(struct req_chan *ch, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)ch;
    (void)fn;
    (void)arg;
    return FCGATE_EDB;
}

static const struct req_io cap_io = {cap_write, cap_sleep, cap_wait_fd, cap_db, NULL, NULL};

static int test_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    return handler(r);
}

static const struct fcgate_app test_app = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = FCGATE_ABI_MAJOR,
    .abi_minor = FCGATE_ABI_MINOR,
    .size = sizeof(struct fcgate_app),
    .name = "test",
    .handle = test_handle,
};
static const struct req_app app = {.app = &test_app};

struct run {
    struct req_chan ch;
    struct request_body body;
    struct codec_buf out; /* the STDOUT stream */
    int ended, proto_status;
};

static void add_param(struct codec_buf *p, const char *name, const char *value)
{
    assert_int_equal(codec_put_nv(p, name, strlen(name), value, strlen(value)), 0);
}

/* params: NULL-terminated name, value pairs. */
static void begin(struct run *t, const char *const *params)
{
    static const struct codec_limits lim = {65536, 1, 1};
    uint8_t begin_body[8] = {0, FCGI_RESPONDER, 0};
    struct codec_buf in = {0}, p = {0};

    memset(t, 0, sizeof(*t));
    memset(&cap, 0, sizeof(cap));
    t->ch.io = &cap_io;
    t->ch.app = &app;
    codec_init(&t->ch.codec, &lim);
    for (size_t i = 0; params[i]; i += 2)
        add_param(&p, params[i], params[i + 1]);
    codec_put_record(&in, FCGI_BEGIN_REQUEST, 1, begin_body, sizeof(begin_body));
    codec_put_record(&in, FCGI_PARAMS, 1, p.data, p.len);
    codec_put_record(&in, FCGI_PARAMS, 1, NULL, 0);
    size_t off = 0, used;
    struct codec_event ev;
    enum codec_event_type type;
    do {
        type = codec_next(&t->ch.codec, in.data + off, in.len - off, &used, &ev);
        off += used;
    } while (type != CODEC_PARAMS && type != CODEC_ERROR && off < in.len);
    assert_int_equal(type, CODEC_PARAMS);
    t->body.limit = 1024;
    codec_buf_free(&in);
    codec_buf_free(&p);
}

static void body(struct run *t, const char *text)
{
    assert_int_equal(codec_buf_append(&t->body.buf, text, strlen(text)), 0);
    assert_int_equal(codec_buf_append(&t->body.buf, "", 1), 0);
    t->body.buf.len--;
}

/* Runs the handler, then decodes what was written. */
static enum req_result run(struct run *t, int (*h)(fcgate_req *r))
{
    handler = h;
    enum req_result rc = request_run(&t->ch, 1, &t->body);
    const uint8_t *w = cap.wire.data;
    size_t off = 0;
    while (off + FCGI_HEADER_LEN <= cap.wire.len) {
        const FCGI_Header *hd = (const FCGI_Header *)(w + off);
        size_t clen = (size_t)hd->contentLengthB1 << 8 | hd->contentLengthB0;
        const uint8_t *content = w + off + FCGI_HEADER_LEN;
        if (hd->type == FCGI_STDOUT)
            codec_buf_append(&t->out, content, clen);
        if (hd->type == FCGI_END_REQUEST) {
            t->ended = 1;
            t->proto_status = content[4];
        }
        off += FCGI_HEADER_LEN + clen + hd->paddingLength;
    }
    codec_buf_append(&t->out, "", 1);
    return rc;
}

static const char *response(const struct run *t)
{
    return (const char *)t->out.data;
}

static void finish(struct run *t)
{
    codec_free(&t->ch.codec);
    codec_buf_free(&t->ch.wire);
    codec_buf_free(&t->ch.head);
    codec_buf_free(&t->body.buf);
    codec_buf_free(&t->out);
    codec_buf_free(&cap.wire);
}

/* ---- params ---- */

static char seen[8][256];

static void copy_seen(int i, const char *v)
{
    snprintf(seen[i], sizeof(seen[i]), "%s", v ? v : "(null)");
}

static int h_params(fcgate_req *r)
{
    char buf[64];
    copy_seen(0, fcgate_method(r));
    copy_seen(1, fcgate_path(r));
    copy_seen(2, fcgate_query(r));
    copy_seen(3, fcgate_param(r, "SERVER_NAME"));
    copy_seen(4, fcgate_param(r, "NOT_SENT"));
    int n = fcgate_query_value(r, "q", buf, sizeof(buf));
    copy_seen(5, n >= 0 ? buf : "(error)");
    assert_int_equal(n, (int)strlen("a b&c"));
    assert_int_equal(fcgate_query_value(r, "missing", buf, sizeof(buf)), FCGATE_EINVAL);
    assert_int_equal(fcgate_query_value(r, "q", buf, 3), FCGATE_ETOOBIG);
    assert_int_equal(fcgate_query_value(r, "empty", buf, sizeof(buf)), 0);
    assert_null(fcgate_param(r, NULL));
    return fcgate_printf(r, "ok");
}

static void test_request_params_and_query_values(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {"REQUEST_METHOD",      "GET",          "REQUEST_URI",
                       "/x?q=a+b%26c&empty=", "QUERY_STRING", "q=a+b%26c&empty=",
                       "SERVER_NAME",         "example",      NULL};
    begin(&t, p);
    assert_int_equal(run(&t, h_params), REQ_ANSWERED);
    assert_string_equal(seen[0], "GET");
    assert_string_equal(seen[1], "/x");
    assert_string_equal(seen[2], "q=a+b%26c&empty=");
    assert_string_equal(seen[3], "example");
    assert_string_equal(seen[4], "(null)");
    assert_string_equal(seen[5], "a b&c");
    assert_true(t.ended);
    finish(&t);
}

static int h_path(fcgate_req *r)
{
    copy_seen(0, fcgate_path(r));
    copy_seen(1, fcgate_method(r));
    copy_seen(2, fcgate_query(r));
    return 0;
}

static void path_of(const char *const *params, const char *want)
{
    struct run t;
    begin(&t, params);
    run(&t, h_path);
    assert_string_equal(seen[0], want);
    finish(&t);
}

static void test_request_path_derivation(void **state)
{
    (void)state;
    const char *uri[] = {"REQUEST_URI", "/a%20b/c?x=1#frag", "DOCUMENT_URI", "/other", NULL};
    path_of(uri, "/a b/c");
    const char *nul[] = {"REQUEST_URI", "/a%00b", NULL};
    path_of(nul, "/a%00b"); /* a decoded NUL would cut the path: kept raw */
    const char *doc[] = {"DOCUMENT_URI", "/doc", "SCRIPT_NAME", "/script", NULL};
    path_of(doc, "/doc");
    const char *info[] = {"SCRIPT_NAME", "/app", "PATH_INFO", "/more", NULL};
    path_of(info, "/app/more");
    const char *script[] = {"SCRIPT_NAME", "/only", NULL};
    path_of(script, "/only");
    const char *none[] = {NULL};
    path_of(none, "/");
    assert_string_equal(seen[1], ""); /* no method: empty, never NULL */
    assert_string_equal(seen[2], "");
}

static int h_headers(fcgate_req *r)
{
    copy_seen(0, fcgate_header(r, "X-Custom-Thing"));
    copy_seen(1, fcgate_header(r, "content-type"));
    copy_seen(2, fcgate_header(r, "Content-Length"));
    copy_seen(3, fcgate_header(r, "Absent"));
    return 0;
}

static void test_request_headers_map_to_params(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {
        "HTTP_X_CUSTOM_THING", "yes", "CONTENT_TYPE", "text/x", "CONTENT_LENGTH", "0", NULL};
    begin(&t, p);
    run(&t, h_headers);
    assert_string_equal(seen[0], "yes");
    assert_string_equal(seen[1], "text/x");
    assert_string_equal(seen[2], "0");
    assert_string_equal(seen[3], "(null)");
    finish(&t);
}

/* ---- response ---- */

static int h_status(fcgate_req *r)
{
    assert_int_equal(fcgate_set_status(r, 99), FCGATE_EINVAL);
    assert_int_equal(fcgate_set_status(r, 600), FCGATE_EINVAL);
    assert_int_equal(fcgate_set_status(r, 404), FCGATE_OK);
    assert_int_equal(fcgate_add_header(r, "X-Ok", "1"), FCGATE_OK);
    assert_int_equal(fcgate_add_header(r, "X-Bad", "a\r\nInjected: 1"), FCGATE_EINVAL);
    assert_int_equal(fcgate_add_header(r, "Bad Name", "x"), FCGATE_EINVAL);
    assert_int_equal(fcgate_add_header(r, "Status", "200"), FCGATE_EINVAL);
    return fcgate_write(r, "nope", 4);
}

static void test_request_status_and_headers(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {"REQUEST_METHOD", "GET", NULL};
    begin(&t, p);
    run(&t, h_status);
    assert_string_equal(response(&t), "Status: 404 Not Found\r\n"
                                      "Content-Type: text/plain\r\n"
                                      "Content-Length: 4\r\n"
                                      "X-Ok: 1\r\n"
                                      "\r\nnope");
    assert_int_equal(t.proto_status, FCGI_REQUEST_COMPLETE);
    finish(&t);
}

static int h_no_content(fcgate_req *r)
{
    return fcgate_set_status(r, 204);
}

static void test_request_204_has_no_body_headers(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    run(&t, h_no_content);
    assert_string_equal(response(&t), "Status: 204 No Content\r\n\r\n");
    finish(&t);
}

static int h_stream(fcgate_req *r)
{
    static char chunk[10000];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 10; i++)
        assert_int_equal(fcgate_write(r, chunk, sizeof(chunk)), FCGATE_OK);
    /* The head is out with the first 64 KiB: too late for a status. */
    assert_int_equal(fcgate_set_status(r, 500), FCGATE_EINVAL);
    return 0;
}

static void test_request_large_response_streams_without_length(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    run(&t, h_stream);
    assert_true(cap.writes >= 2);
    assert_null(strstr(response(&t), "Content-Length"));
    const char *body_start = strstr(response(&t), "\r\n\r\n");
    assert_non_null(body_start);
    assert_int_equal(strlen(body_start + 4), 100000);
    finish(&t);
}

static int h_fail(fcgate_req *r)
{
    fcgate_printf(r, "partial");
    return FCGATE_EIO;
}

static void test_request_failed_handler_answers_500(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    run(&t, h_fail);
    assert_non_null(strstr(response(&t), "Status: 500 Internal Server Error\r\n"));
    assert_null(strstr(response(&t), "partial"));
    finish(&t);
}

static int h_cancelled(fcgate_req *r)
{
    fcgate_printf(r, "late");
    assert_int_equal(fcgate_sleep(r, 1000), FCGATE_ETIMEDOUT);
    assert_int_equal(fcgate_write(r, "more", 4), FCGATE_ETIMEDOUT);
    return 0; /* whatever the handler says */
}

static void test_request_cancelled_answers_504(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    cap.cancel_on_sleep = 1;
    run(&t, h_cancelled);
    assert_non_null(strstr(response(&t), "Status: 504 Gateway Timeout\r\n"));
    assert_non_null(strstr(response(&t), "gateway timeout"));
    assert_null(strstr(response(&t), "late"));
    assert_int_equal(t.ch.cancelled, 0); /* cleared for the next request */
    finish(&t);
}

static int h_peer_gone(fcgate_req *r)
{
    static char big[70000];
    assert_int_equal(fcgate_write(r, big, sizeof(big)), FCGATE_ECLOSED);
    assert_int_equal(fcgate_write(r, "x", 1), FCGATE_ECLOSED);
    return 0;
}

static void test_request_write_to_gone_peer_is_eclosed(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    cap.fail_writes = 1;
    assert_int_equal(run(&t, h_peer_gone), REQ_PEER_GONE);
    finish(&t);
}

/* ---- body ---- */

static int h_body(fcgate_req *r)
{
    const char *b;
    size_t len;
    char small[4];
    assert_int_equal(fcgate_read_all(r, &b, &len), FCGATE_OK);
    copy_seen(0, b);
    assert_int_equal(len, 11);
    assert_int_equal(fcgate_read(r, small, sizeof(small)), 4);
    assert_memory_equal(small, "hell", 4);
    assert_int_equal(fcgate_read(r, small, sizeof(small)), 4);
    assert_int_equal(fcgate_read(r, small, sizeof(small)), 3);
    assert_int_equal(fcgate_read(r, small, sizeof(small)), 0);
    return 0;
}

static void test_request_body_read_all_and_in_pieces(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {"REQUEST_METHOD", "POST", NULL};
    begin(&t, p);
    body(&t, "hello world");
    run(&t, h_body);
    assert_string_equal(seen[0], "hello world");
    finish(&t);
}

static int h_too_big(fcgate_req *r)
{
    const char *b;
    size_t len;
    char buf[8];
    assert_int_equal(fcgate_read_all(r, &b, &len), FCGATE_ETOOBIG);
    assert_int_equal(fcgate_read(r, buf, sizeof(buf)), FCGATE_ETOOBIG);
    return fcgate_set_status(r, 413);
}

static void test_request_body_over_limit_is_etoobig(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {"REQUEST_METHOD", "POST", NULL};
    begin(&t, p);
    t.body.too_big = 1;
    run(&t, h_too_big);
    assert_non_null(strstr(response(&t), "Status: 413 Content Too Large"));
    finish(&t);
}

static int h_empty_body(fcgate_req *r)
{
    const char *b = NULL;
    size_t len = 1;
    assert_int_equal(fcgate_read_all(r, &b, &len), FCGATE_OK);
    assert_non_null(b);
    assert_string_equal(b, "");
    assert_int_equal(len, 0);
    return 0;
}

static void test_request_empty_body_reads_as_empty_string(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    run(&t, h_empty_body);
    finish(&t);
}

static int h_waits(fcgate_req *r)
{
    assert_int_equal(fcgate_sleep(r, 1), FCGATE_OK);
    assert_int_equal(fcgate_wait_fd(r, -1, 1, 0), FCGATE_EINVAL);
    assert_int_equal(fcgate_wait_fd(r, 0, 1, 0), FCGATE_ETIMEDOUT);
    assert_int_equal(fcgate_db(r, NULL, NULL), FCGATE_EINVAL);
    return 0;
}

static void test_request_waits_go_to_the_channel(void **state)
{
    (void)state;
    struct run t;
    const char *p[] = {NULL};
    begin(&t, p);
    run(&t, h_waits);
    finish(&t);
}

static void test_request_strerror_names_every_status(void **state)
{
    (void)state;
    for (int s = FCGATE_ECLOSED; s <= FCGATE_OK; s++)
        assert_string_not_equal(fcgate_strerror(s), "unknown status");
    assert_string_equal(fcgate_strerror(12345), "unknown status");
}

/* X-Request-Start as APM agents read it: seconds with a fraction (nginx's
 * ${msec}), or whole milliseconds, microseconds, nanoseconds. */
static void test_request_start_units_by_magnitude(void **state)
{
    (void)state;
    uint64_t us;
    assert_int_equal(request_start_us("t=1700000000.123", &us), 0);
    assert_int_equal(us, 1700000000123000ull);
    assert_int_equal(request_start_us("1700000000.5", &us), 0);
    assert_int_equal(us, 1700000000500000ull);
    assert_int_equal(request_start_us("t=1700000000", &us), 0);
    assert_int_equal(us, 1700000000000000ull);
    assert_int_equal(request_start_us("t=1700000000123", &us), 0);
    assert_int_equal(us, 1700000000123000ull);
    assert_int_equal(request_start_us("t=1700000000123456", &us), 0);
    assert_int_equal(us, 1700000000123456ull);
    assert_int_equal(request_start_us("t=1700000000123456789", &us), 0);
    assert_int_equal(us, 1700000000123456ull);
    assert_int_equal(request_start_us("t=1700000000.1234567", &us), 0); /* below 1 us: dropped */
    assert_int_equal(us, 1700000000123456ull);
    assert_int_equal(request_start_us("", &us), -1);
    assert_int_equal(request_start_us("t=", &us), -1);
    assert_int_equal(request_start_us("t=abc", &us), -1);
    assert_int_equal(request_start_us("t=17e8", &us), -1);
    assert_int_equal(request_start_us("t=-1", &us), -1);
    assert_int_equal(request_start_us("t=1700000000 ", &us), -1);
    assert_int_equal(request_start_us("t=99999999999999999999", &us), -1);
}

static int handled;

static int h_counted(fcgate_req *r)
{
    handled++;
    return fcgate_write(r, "ran\n", 4);
}

/* One request with X-Request-Start at start (NULL: none) and a
 * queue_timeout of limit_ms; what it was answered, and its slot. */
static void run_queued(const char *start, unsigned long limit_ms, struct run *t,
                       struct score_slot *slot)
{
    static struct req_app qapp;
    qapp = (struct req_app){.app = &test_app, .queue_timeout_ms = limit_ms};
    const char *with[] = {"REQUEST_METHOD",       "GET", "REQUEST_URI", "/x",
                          "HTTP_X_REQUEST_START", start, NULL};
    const char *without[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/x", NULL};
    begin(t, start ? with : without);
    t->ch.app = &qapp;
    t->ch.slot = slot;
    run(t, h_counted);
}

static void test_request_queue_timeout_answers_503_without_the_app(void **state)
{
    (void)state;
    struct run t;
    struct score_slot slot;
    char old[64], fresh[64];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(old, sizeof(old), "t=%lld.%03ld", (long long)now.tv_sec - 3, now.tv_nsec / 1000000);
    snprintf(fresh, sizeof(fresh), "t=%lld", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);

    memset(&slot, 0, sizeof(slot));
    handled = 0;
    run_queued(old, 1000, &t, &slot);
    assert_int_equal(handled, 0);
    assert_non_null(strstr(response(&t), "Status: 503 Service Unavailable\r\n"));
    assert_non_null(strstr(response(&t), "Retry-After: 1\r\n"));
    assert_int_equal(atomic_load(&slot.queue_rejected), 1);
    assert_int_equal(atomic_load(&slot.by_class[4]), 1);
    assert_true(atomic_load(&slot.queue_us) >= 2900000);
    assert_int_equal(atomic_load(&slot.queue_le[SCORE_BUCKETS - 3]), 1); /* <= 5 s */
    finish(&t);
    /* A fresh one runs, and its wait is counted. */
    run_queued(fresh, 1000, &t, &slot);
    assert_int_equal(handled, 1);
    assert_non_null(strstr(response(&t), "Status: 200 OK\r\n"));
    assert_int_equal(atomic_load(&slot.queue_rejected), 1);
    assert_int_equal(atomic_load(&slot.queue_le[0]), 1);
    finish(&t);
    /* Without the parameter, or with queue_timeout off, or with a value
     * that is not a time: never rejected. */
    run_queued(NULL, 1000, &t, &slot);
    finish(&t);
    run_queued(old, 0, &t, &slot);
    finish(&t);
    run_queued("t=soon", 1000, &t, &slot);
    assert_int_equal(handled, 4);
    assert_int_equal(atomic_load(&slot.queue_rejected), 1);
    finish(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_params_and_query_values),
        cmocka_unit_test(test_request_path_derivation),
        cmocka_unit_test(test_request_headers_map_to_params),
        cmocka_unit_test(test_request_status_and_headers),
        cmocka_unit_test(test_request_204_has_no_body_headers),
        cmocka_unit_test(test_request_large_response_streams_without_length),
        cmocka_unit_test(test_request_failed_handler_answers_500),
        cmocka_unit_test(test_request_cancelled_answers_504),
        cmocka_unit_test(test_request_write_to_gone_peer_is_eclosed),
        cmocka_unit_test(test_request_body_read_all_and_in_pieces),
        cmocka_unit_test(test_request_body_over_limit_is_etoobig),
        cmocka_unit_test(test_request_empty_body_reads_as_empty_string),
        cmocka_unit_test(test_request_waits_go_to_the_channel),
        cmocka_unit_test(test_request_strerror_names_every_status),
        cmocka_unit_test(test_request_start_units_by_magnitude),
        cmocka_unit_test(test_request_queue_timeout_answers_503_without_the_app),
    };
    return cmocka_run_group_tests_name("request", tests, NULL, NULL);
}

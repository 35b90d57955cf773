/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_conn.c - conn.c on its own: a connection over a socketpair, with
 * blocking waits standing in for an engine. What conn_serve returns is
 * what an engine acts on: SERVED (count, serve on), IDLE (park or let
 * go), CLOSED.
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
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static enum conn_wait test_wait(struct conn *c, short events, int timeout_ms)
{
    struct pollfd p = {c->fd, events, 0};
    int r = poll(&p, 1, timeout_ms);
    return r == 1 ? CONN_WAIT_READY : r == 0 ? CONN_WAIT_TIMEOUT : CONN_WAIT_FAILED;
}

static int no_sleep(struct conn *c, unsigned ms)
{
    (void)c;
    (void)ms;
    return 0;
}

static int no_wait_fd(struct conn *c, int fd, short events, int timeout_ms)
{
    (void)c;
    (void)fd;
    (void)events;
    (void)timeout_ms;
    return FCGATE_ETIMEDOUT;
}

static int no_db(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)c;
    (void)fn;
    (void)arg;
    return FCGATE_EDB;
}

static const struct conn_ops ops = {test_wait, no_sleep, no_wait_fd, no_db, NULL, NULL, NULL};

/* Answers the body's length, or 413 when it was too big. */
static int echo_len(void *ctx, fcgate_req *r)
{
    const char *b;
    size_t len;
    (void)ctx;
    if (fcgate_read_all(r, &b, &len) == FCGATE_ETOOBIG) {
        fcgate_set_status(r, 413);
        return fcgate_printf(r, "too big");
    }
    return fcgate_printf(r, "%s %zu", fcgate_method(r), len);
}

static const struct fcgate_app app = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = FCGATE_ABI_MAJOR,
    .abi_minor = FCGATE_ABI_MINOR,
    .size = sizeof(struct fcgate_app),
    .handle = echo_len,
};

static struct conn_env env = {
    .limits = {65536, 1, 1},
    .max_body_bytes = 100,
    .io_timeout_ms = 200,
    .keepalive_timeout_ms = 1000,
    .app = {.app = &app},
};

struct pair {
    struct conn c;
    int peer;
};

static void open_pair(struct pair *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    conn_init(&p->c, sv[0], &ops, &env, 0);
    p->peer = sv[1];
}

static void close_pair(struct pair *p)
{
    if (p->c.fd >= 0)
        conn_close(&p->c);
    close(p->peer);
}

static void put_request(struct codec_buf *b, uint16_t id, int keep, const char *method,
                        size_t body_len)
{
    uint8_t begin[8] = {0, FCGI_RESPONDER, keep ? FCGI_KEEP_CONN : 0};
    struct codec_buf nv = {0};
    char len[32];
    snprintf(len, sizeof(len), "%zu", body_len);
    codec_put_nv(&nv, "REQUEST_METHOD", 14, method, strlen(method));
    codec_put_nv(&nv, "CONTENT_LENGTH", 14, len, strlen(len));
    codec_put_record(b, FCGI_BEGIN_REQUEST, id, begin, sizeof(begin));
    codec_put_record(b, FCGI_PARAMS, id, nv.data, nv.len);
    codec_put_record(b, FCGI_PARAMS, id, NULL, 0);
    char *body = calloc(1, body_len + 1);
    for (size_t off = 0; off < body_len; off += 60000)
        codec_put_record(b, FCGI_STDIN, id, body + off,
                         body_len - off < 60000 ? body_len - off : 60000);
    codec_put_record(b, FCGI_STDIN, id, NULL, 0);
    free(body);
    codec_buf_free(&nv);
}

static void send_bytes(int fd, const struct codec_buf *b)
{
    assert_int_equal(write(fd, b->data, b->len), (ssize_t)b->len);
}

/* Everything the peer has received so far, as text (records and all). */
static size_t received(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    return n;
}

static int contains(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static void test_conn_kept_request_is_served_then_idle(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    char out[8192];
    open_pair(&p);
    assert_int_equal(conn_serve(&p.c), CONN_IDLE); /* nothing sent yet */
    assert_true(conn_at_boundary(&p.c));
    put_request(&in, 1, 1, "POST", 5);
    send_bytes(p.peer, &in);
    assert_int_equal(conn_serve(&p.c), CONN_SERVED);
    assert_int_equal(p.c.served, 1);
    size_t n = received(p.peer, out, sizeof(out));
    assert_true(contains(out, n, "POST 5"));
    assert_int_equal(conn_serve(&p.c), CONN_IDLE);
    assert_null(p.c.rbuf); /* an idle connection holds no read buffer */
    assert_true(conn_at_boundary(&p.c));
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_pipelined_requests_are_served_from_the_buffer(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    char out[8192];
    open_pair(&p);
    put_request(&in, 1, 1, "GET", 0);
    put_request(&in, 2, 1, "PUT", 3);
    send_bytes(p.peer, &in);
    assert_int_equal(conn_serve(&p.c), CONN_SERVED);
    assert_true(conn_buffered(&p.c));
    assert_false(conn_at_boundary(&p.c));
    assert_int_equal(conn_serve(&p.c), CONN_SERVED);
    assert_int_equal(conn_serve(&p.c), CONN_IDLE);
    size_t n = received(p.peer, out, sizeof(out));
    assert_true(contains(out, n, "GET 0"));
    assert_true(contains(out, n, "PUT 3"));
    assert_int_equal(p.c.served, 2);
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_without_keep_conn_closes_after_the_request(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    char out[8192];
    open_pair(&p);
    put_request(&in, 1, 0, "GET", 0);
    send_bytes(p.peer, &in);
    assert_int_equal(conn_serve(&p.c), CONN_CLOSED);
    assert_int_equal(p.c.served, 1); /* counted even though it closed */
    assert_int_equal(p.c.fd, -1);
    size_t n = received(p.peer, out, sizeof(out));
    assert_true(contains(out, n, "GET 0"));
    assert_int_equal(recv(p.peer, out, 1, 0), 0); /* EOF */
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_body_over_limit_reaches_the_app_as_etoobig(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    char out[8192];
    open_pair(&p);
    put_request(&in, 1, 1, "POST", 150000); /* over 100, and over a socket buffer */
    /* The peer writes while the connection reads: a child process. */
    pid_t pid = fork();
    if (pid == 0) {
        close(p.c.fd); /* the parent's end is the parent's alone */
        send_bytes(p.peer, &in);
        _exit(0);
    }
    struct pollfd first = {p.c.fd, POLLIN, 0};
    assert_int_equal(poll(&first, 1, 5000), 1);
    assert_int_equal(conn_serve(&p.c), CONN_SERVED);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    size_t n = received(p.peer, out, sizeof(out));
    assert_true(contains(out, n, "Status: 413"));
    /* Drained to its end: the connection is in sync for the next one. */
    assert_int_equal(conn_serve(&p.c), CONN_IDLE);
    assert_true(conn_at_boundary(&p.c));
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_stalled_request_closes_after_io_timeout(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    open_pair(&p);
    uint8_t begin[8] = {0, FCGI_RESPONDER, FCGI_KEEP_CONN};
    codec_put_record(&in, FCGI_BEGIN_REQUEST, 1, begin, sizeof(begin));
    send_bytes(p.peer, &in); /* and then nothing */
    uint64_t t0 = monotonic_ms();
    assert_int_equal(conn_serve(&p.c), CONN_CLOSED);
    assert_true(monotonic_ms() - t0 >= 150);
    assert_int_equal(p.c.served, 0);
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_peer_not_reading_closes_after_io_timeout(void **state)
{
    (void)state;
    struct pair p;
    struct codec_buf in = {0};
    open_pair(&p);
    /* GET_VALUES records whose replies nobody reads: the replies fill the
     * socket buffers, and the writer gives up after io_timeout. */
    uint8_t nv[] = {14, 0, 'F', 'C', 'G', 'I', '_', 'M', 'A', 'X', '_', 'C', 'O', 'N', 'N', 'S'};
    for (int i = 0; i < 40000; i++)
        codec_put_record(&in, FCGI_GET_VALUES, 0, nv, sizeof(nv));
    pid_t pid = fork();
    if (pid == 0) {
        close(p.c.fd); /* the parent's end is the parent's alone */
        (void)!write(p.peer, in.data, in.len);
        _exit(0);
    }
    struct pollfd first = {p.c.fd, POLLIN, 0};
    assert_int_equal(poll(&first, 1, 5000), 1);
    enum conn_result r;
    while ((r = conn_serve(&p.c)) == CONN_IDLE)
        assert_int_equal(poll(&first, 1, 5000), 1);
    assert_int_equal(r, CONN_CLOSED);
    close(p.peer); /* lets the writer finish */
    p.peer = -1;
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    codec_buf_free(&in);
    close_pair(&p);
}

static void test_conn_protocol_error_closes(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p);
    uint8_t bad[8] = {9, FCGI_BEGIN_REQUEST, 0, 1, 0, 8, 0, 0}; /* version 9 */
    assert_int_equal(write(p.peer, bad, sizeof(bad)), 8);
    assert_int_equal(conn_serve(&p.c), CONN_CLOSED);
    close_pair(&p);
}

static void test_conn_peer_close_between_requests_closes(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p);
    shutdown(p.peer, SHUT_WR);
    assert_int_equal(conn_serve(&p.c), CONN_CLOSED);
    assert_int_equal(p.c.served, 0);
    close_pair(&p);
}

static void test_conn_partial_record_is_not_a_boundary(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p);
    uint8_t half[4] = {FCGI_VERSION_1, FCGI_GET_VALUES, 0, 0};
    assert_int_equal(write(p.peer, half, sizeof(half)), 4);
    /* Idle as far as requests go, but not movable to another process. */
    assert_int_equal(conn_serve(&p.c), CONN_IDLE);
    assert_false(conn_at_boundary(&p.c));
    close_pair(&p);
}

static void test_conn_detach_leaves_the_peer_connected(void **state)
{
    (void)state;
    struct pair p;
    open_pair(&p);
    int dup_fd = dup(p.c.fd); /* as if handed over */
    conn_detach(&p.c);
    assert_int_equal(p.c.fd, -1);
    assert_int_equal(write(dup_fd, "x", 1), 1);
    char ch;
    assert_int_equal(recv(p.peer, &ch, 1, 0), 1);
    close(dup_fd);
    close_pair(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conn_kept_request_is_served_then_idle),
        cmocka_unit_test(test_conn_pipelined_requests_are_served_from_the_buffer),
        cmocka_unit_test(test_conn_without_keep_conn_closes_after_the_request),
        cmocka_unit_test(test_conn_body_over_limit_reaches_the_app_as_etoobig),
        cmocka_unit_test(test_conn_stalled_request_closes_after_io_timeout),
        cmocka_unit_test(test_conn_peer_not_reading_closes_after_io_timeout),
        cmocka_unit_test(test_conn_protocol_error_closes),
        cmocka_unit_test(test_conn_peer_close_between_requests_closes),
        cmocka_unit_test(test_conn_partial_record_is_not_a_boundary),
        cmocka_unit_test(test_conn_detach_leaves_the_peer_connected),
    };
    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}

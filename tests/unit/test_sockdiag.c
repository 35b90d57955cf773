/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_sockdiag.c - listen-queue depth (sockdiag.c): the sock_diag reply
 * parsed from canned netlink bytes, and the real kernel's answer for a
 * unix and a TCP listener with connections waiting.
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

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Appends one unix_diag_msg for ino, with an RQLEN attribute when q >= 0. */
static size_t put_msg(uint8_t *buf, size_t off, uint32_t ino, int q, int max)
{
    struct nlmsghdr *h = (void *)(buf + off);
    struct unix_diag_msg *m = NLMSG_DATA(h);
    size_t len = NLMSG_LENGTH(sizeof(*m));
    memset(h, 0, NLMSG_SPACE(sizeof(*m)) + RTA_SPACE(sizeof(struct unix_diag_rqlen)));
    m->udiag_family = AF_UNIX;
    m->udiag_state = 10;
    m->udiag_ino = ino;
    if (q >= 0) {
        struct rtattr *a = (void *)((uint8_t *)h + NLMSG_ALIGN(len));
        a->rta_type = UNIX_DIAG_RQLEN;
        a->rta_len = RTA_LENGTH(sizeof(struct unix_diag_rqlen));
        struct unix_diag_rqlen *r = RTA_DATA(a);
        r->udiag_rqueue = (uint32_t)q;
        r->udiag_wqueue = (uint32_t)max;
        len = NLMSG_ALIGN(len) + a->rta_len;
    }
    h->nlmsg_len = (uint32_t)len;
    h->nlmsg_type = SOCK_DIAG_BY_FAMILY;
    return off + NLMSG_ALIGN(len);
}

static size_t put_type(uint8_t *buf, size_t off, uint16_t type)
{
    struct nlmsghdr *h = (void *)(buf + off);
    memset(h, 0, NLMSG_SPACE(sizeof(int)));
    h->nlmsg_len = NLMSG_LENGTH(sizeof(int));
    h->nlmsg_type = type;
    return off + NLMSG_SPACE(sizeof(int));
}

static void test_sockdiag_finds_the_inode_among_others(void **state)
{
    (void)state;
    uint8_t buf[1024] __attribute__((aligned(8)));
    struct sockdiag_queue q = {-1, -1};
    size_t n = put_msg(buf, 0, 111, 3, 128);
    n = put_msg(buf, n, 222, 50, 511);
    assert_int_equal(sockdiag_unix_parse(buf, n, 222, &q), SOCKDIAG_FOUND);
    assert_int_equal(q.queue, 50);
    assert_int_equal(q.max_queue, 511);
}

static void test_sockdiag_asks_for_more_then_done(void **state)
{
    (void)state;
    uint8_t buf[1024] __attribute__((aligned(8)));
    struct sockdiag_queue q = {-1, -1};
    size_t n = put_msg(buf, 0, 111, 3, 128);
    assert_int_equal(sockdiag_unix_parse(buf, n, 222, &q), SOCKDIAG_MORE);
    n = put_type(buf, 0, NLMSG_DONE);
    assert_int_equal(sockdiag_unix_parse(buf, n, 222, &q), SOCKDIAG_DONE);
    n = put_type(buf, 0, NLMSG_ERROR);
    assert_int_equal(sockdiag_unix_parse(buf, n, 222, &q), SOCKDIAG_ERROR);
    assert_int_equal(q.queue, -1);
}

static void test_sockdiag_ignores_a_message_without_rqlen_or_truncated(void **state)
{
    (void)state;
    uint8_t buf[1024] __attribute__((aligned(8)));
    struct sockdiag_queue q = {-1, -1};
    size_t n = put_msg(buf, 0, 222, -1, 0);
    assert_int_equal(sockdiag_unix_parse(buf, n, 222, &q), SOCKDIAG_MORE);
    n = put_msg(buf, 0, 222, 7, 9);
    assert_int_equal(sockdiag_unix_parse(buf, n - 4, 222, &q), SOCKDIAG_MORE);
    assert_int_equal(sockdiag_unix_parse(buf, 3, 222, &q), SOCKDIAG_MORE);
    assert_int_equal(q.queue, -1);
}

static void test_sockdiag_request_asks_listeners_with_queue_lengths(void **state)
{
    (void)state;
    uint8_t buf[256] __attribute__((aligned(8)));
    assert_int_equal(sockdiag_unix_request(buf, 8, 1), 0);
    size_t n = sockdiag_unix_request(buf, sizeof(buf), 7);
    const struct nlmsghdr *h = (const void *)buf;
    const struct unix_diag_req *r = NLMSG_DATA(h);
    assert_int_equal(n, h->nlmsg_len);
    assert_int_equal(h->nlmsg_type, SOCK_DIAG_BY_FAMILY);
    assert_int_equal(h->nlmsg_seq, 7);
    assert_int_equal(r->sdiag_family, AF_UNIX);
    assert_int_equal(r->udiag_states, 1u << 10);
    assert_true(r->udiag_show & UDIAG_SHOW_RQLEN);
}

/* The kernel's own count, for a socket with three connections waiting. */
static void test_sockdiag_queue_of_real_unix_and_tcp_listeners(void **state)
{
    (void)state;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t inlen = sizeof(in);
    int c[6];
    snprintf(un.sun_path, sizeof(un.sun_path), "/tmp/test_sockdiag.%d", (int)getpid());
    int u = socket(AF_UNIX, SOCK_STREAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(u, (struct sockaddr *)&un, sizeof(un)), 0);
    assert_int_equal(bind(t, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(listen(u, 17), 0);
    assert_int_equal(listen(t, 19), 0);
    getsockname(t, (struct sockaddr *)&in, &inlen);
    for (int i = 0; i < 3; i++) {
        c[i] = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(connect(c[i], (struct sockaddr *)&un, sizeof(un)), 0);
        c[3 + i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(c[3 + i], (struct sockaddr *)&in, sizeof(in)), 0);
    }
    struct sockdiag_queue q;
    assert_int_equal(sockdiag_queue(u, &q), 0);
    assert_int_equal(q.queue, 3);
    assert_int_equal(q.max_queue, 17);
    usleep(50000); /* loopback handshakes complete at once, but not synchronously */
    assert_int_equal(sockdiag_queue(t, &q), 0);
    assert_int_equal(q.queue, 3);
    assert_int_equal(q.max_queue, 19);
    for (int i = 0; i < 6; i++)
        close(c[i]);
    close(u);
    close(t);
    unlink(un.sun_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sockdiag_finds_the_inode_among_others),
        cmocka_unit_test(test_sockdiag_asks_for_more_then_done),
        cmocka_unit_test(test_sockdiag_ignores_a_message_without_rqlen_or_truncated),
        cmocka_unit_test(test_sockdiag_request_asks_listeners_with_queue_lengths),
        cmocka_unit_test(test_sockdiag_queue_of_real_unix_and_tcp_listeners),
    };
    return cmocka_run_group_tests_name("sockdiag", tests, NULL, NULL);
}

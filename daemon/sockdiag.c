/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sockdiag.c - how many connections wait in a listen socket's queue, by
 * the kernel's own account.
 *
 * A listening unix socket shows its accept queue only through
 * NETLINK_SOCK_DIAG (UDIAG_SHOW_RQLEN: rqueue is the queue, wqueue the
 * backlog it was given); nothing in /proc or getsockopt has it, which is
 * why PHP-FPM and uWSGI report 0 there. A TCP listener gives both through
 * TCP_INFO (tcpi_unacked, tcpi_sacked mean queue and backlog in LISTEN).
 * The netlink reply is parsed by a pure function, tested on canned bytes.
 */
#include "fcgate.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define LISTEN_STATE 10 /* TCP_LISTEN, which unix sockets use too */

size_t sockdiag_unix_request(void *buf, size_t len, uint32_t seq)
{
    struct {
        struct nlmsghdr nlh;
        struct unix_diag_req r;
    } req;
    if (len < sizeof(req))
        return 0;
    memset(&req, 0, sizeof(req));
    req.nlh.nlmsg_len = sizeof(req);
    req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.nlh.nlmsg_seq = seq;
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_states = 1u << LISTEN_STATE;
    req.r.udiag_show = UDIAG_SHOW_RQLEN;
    memcpy(buf, &req, sizeof(req));
    return sizeof(req);
}

/* The RQLEN attribute of one unix_diag_msg, if the message is ino's. */
static int unix_msg(const struct nlmsghdr *h, uint32_t ino, struct sockdiag_queue *out)
{
    const struct unix_diag_msg *m = NLMSG_DATA(h);
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)) || m->udiag_ino != ino)
        return 0;
    int left = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
    const struct rtattr *a = (const void *)((const char *)m + NLMSG_ALIGN(sizeof(*m)));
    for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
        if (a->rta_type != UNIX_DIAG_RQLEN || RTA_PAYLOAD(a) < sizeof(struct unix_diag_rqlen))
            continue;
        const struct unix_diag_rqlen *q = RTA_DATA(a);
        out->queue = q->udiag_rqueue;
        out->max_queue = q->udiag_wqueue;
        return 1;
    }
    return 0;
}

int sockdiag_unix_parse(const void *buf, size_t len, uint32_t ino, struct sockdiag_queue *out)
{
    /* NLMSG_OK/NLMSG_NEXT, written out: they compare an unsigned length
     * with an int. */
    for (size_t off = 0; len - off >= sizeof(struct nlmsghdr);) {
        const struct nlmsghdr *h = (const void *)((const char *)buf + off);
        if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > len - off)
            break;
        if (h->nlmsg_type == NLMSG_DONE)
            return SOCKDIAG_DONE;
        if (h->nlmsg_type == NLMSG_ERROR)
            return SOCKDIAG_ERROR;
        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && unix_msg(h, ino, out))
            return SOCKDIAG_FOUND;
        off += NLMSG_ALIGN(h->nlmsg_len);
    }
    return SOCKDIAG_MORE;
}

static int unix_queue(int fd, struct sockdiag_queue *out)
{
    struct stat st;
    char buf[32768] __attribute__((aligned(8)));
    int rc = -1;
    if (fstat(fd, &st) < 0)
        return -1;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -1;
    struct timeval tv = {1, 0}; /* the kernel answers at once; never hang the status */
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t n = sockdiag_unix_request(buf, sizeof(buf), 1);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(nl, buf, n, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        goto out;
    for (;;) {
        ssize_t got = recv(nl, buf, sizeof(buf), 0);
        if (got <= 0)
            goto out;
        int r = sockdiag_unix_parse(buf, (size_t)got, (uint32_t)st.st_ino, out);
        if (r == SOCKDIAG_FOUND)
            rc = 0;
        if (r != SOCKDIAG_MORE)
            break;
    }
out:
    close(nl);
    return rc;
}

static int tcp_queue(int fd, struct sockdiag_queue *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ti.tcpi_state != LISTEN_STATE)
        return -1;
    out->queue = ti.tcpi_unacked;
    out->max_queue = ti.tcpi_sacked;
    return 0;
}

int sockdiag_queue(int fd, struct sockdiag_queue *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_UNIX)
        return unix_queue(fd, out);
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        return tcp_queue(fd, out);
    errno = EAFNOSUPPORT;
    return -1;
}

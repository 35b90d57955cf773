/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * handoff.c - passing idle connections between workers (see handoff.h).
 */
#include "handoff.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int handoff_init(struct handoff *h, int tx, int rx)
{
    h->tx = h->rx = -1;
    h->open =
        mmap(NULL, sizeof(*h->open), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (h->open == MAP_FAILED) {
        h->open = NULL;
        return -1;
    }
    if (tx < 0 || rx < 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
            return -1;
        tx = sv[0];
        rx = sv[1];
    }
    fcntl(tx, F_SETFD, FD_CLOEXEC);
    fcntl(rx, F_SETFD, FD_CLOEXEC);
    /* Never block on either end: a full pair means "close instead". */
    fcntl(tx, F_SETFL, fcntl(tx, F_GETFL) | O_NONBLOCK);
    fcntl(rx, F_SETFL, fcntl(rx, F_GETFL) | O_NONBLOCK);
    h->tx = tx;
    h->rx = rx;
    atomic_store(h->open, 1);
    return 0;
}

void handoff_fini(struct handoff *h)
{
    if (h->tx >= 0)
        close(h->tx);
    if (h->rx >= 0)
        close(h->rx);
    if (h->open)
        munmap(h->open, sizeof(*h->open));
    h->tx = h->rx = -1;
    h->open = NULL;
}

void handoff_set_open(const struct handoff *h, int open)
{
    if (h->open)
        atomic_store(h->open, open);
}

int handoff_is_open(const struct handoff *h)
{
    return h && h->open && h->tx >= 0 && atomic_load(h->open);
}

int handoff_send(const struct handoff *h, int fd, int kept)
{
    char tag = kept ? 'k' : 'f';
    struct iovec iov = {&tag, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));

    if (!handoff_is_open(h))
        return -1;
    for (;;) {
        if (sendmsg(h->tx, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
            return 0;
        if (errno != EINTR)
            break;
    }
    log_warn("cannot hand an idle connection over (%s); closing it", strerror(errno));
    return -1;
}

int handoff_recv(const struct handoff *h, int *kept, int nonblock)
{
    char tag = 0;
    struct iovec iov = {&tag, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n;

    if (!h || h->rx < 0)
        return -1;
    do
        n = recvmsg(h->rx, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    int fd = -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            cm->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    if (fd < 0 || (msg.msg_flags & MSG_CTRUNC)) {
        /* Out of descriptors here: the connection is lost with the
         * message (the kernel closed what it could not install). */
        log_error("a handed-over connection did not arrive (%s)",
                  msg.msg_flags & MSG_CTRUNC ? "no descriptor left" : "no descriptor");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* The file status flags came with the socket: set the receiving
     * engine's (a reload may have changed the mode). */
    int fl = fcntl(fd, F_GETFL);
    if (nonblock >= 0)
        fcntl(fd, F_SETFL, nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
    *kept = tag == 'k';
    return fd;
}

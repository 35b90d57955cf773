/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * intake.c - where a worker's connections come from: the listen sockets
 * it shares with every other worker, and the hand-over pair through which
 * retiring workers pass on their idle connections (handoff.h). One path
 * for every engine.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

size_t intake_sources(const struct worker *w)
{
    return w->nlisten + 1;
}

static int source_fd(const struct worker *w, size_t src)
{
    if (src < w->nlisten)
        return w->listen_fds[src];
    return w->handoff ? w->handoff->rx : -1;
}

int intake_watch(const struct worker *w, int ep, int on, const epoll_data_t *tags)
{
    int rc = 0;
    for (size_t src = 0; src < intake_sources(w); src++) {
        int fd = source_fd(w, src);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data = tags[src]};
        if (fd < 0)
            continue;
        if (epoll_ctl(ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, on ? &ev : NULL) < 0 && on) {
            log_error("epoll_ctl: %s", strerror(errno));
            rc = -1;
        }
    }
    return rc;
}

static enum intake_result accept_one(int lfd, int *fd)
{
    *fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (*fd >= 0)
        return INTAKE_OK;
    if (errno == EMFILE || errno == ENFILE) {
        log_error("accept: %s; pausing", strerror(errno));
        return INTAKE_NOFD;
    }
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        log_error("accept: %s", strerror(errno));
    return INTAKE_EMPTY;
}

enum intake_result intake_take(const struct worker *w, size_t src, int *fd, int *kept)
{
    *kept = 0;
    if (src < w->nlisten)
        return accept_one(w->listen_fds[src], fd);
    /* Out of descriptors, the message is consumed all the same (logged
     * by handoff_recv): nothing stays readable to spin on. */
    *fd = handoff_recv(w->handoff, kept, 1);
    return *fd >= 0 ? INTAKE_OK : INTAKE_EMPTY;
}

/* EPOLLEXCLUSIVE wakes one of the workers watching a socket, and may pick
 * one that is stopping: it ignores the event, and the others are not told
 * until the next one. So once a stopping worker has taken its sources out
 * of its epoll set, it passes on what may have woken it: pending
 * connections are accepted and handed over fresh, and pending hand-overs
 * are sent again, which wakes a worker that stays. Bounded, in case two
 * stopping workers pass the same ones back and forth. */
void intake_pass_on(const struct worker *w)
{
    int kept, fd, n = 0;
    if (!handoff_is_open(w->handoff))
        return;
    while (n++ < 1024 && (fd = handoff_recv(w->handoff, &kept, -1)) >= 0) {
        handoff_send(w->handoff, fd, kept);
        close(fd);
    }
    for (size_t i = 0; i < w->nlisten; i++) {
        while (n++ < 2048 && accept_one(w->listen_fds[i], &fd) == INTAKE_OK) {
            if (handoff_send(w->handoff, fd, 0) < 0)
                shutdown(fd, SHUT_RDWR); /* refused, as a full backlog would */
            close(fd);
        }
    }
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * systemd.c - the two systemd protocols fcgate speaks, without libsystemd:
 * readiness notification (sd_notify: a datagram to $NOTIFY_SOCKET) and
 * socket activation (listening fds from 3 on, $LISTEN_FDS of them, meant
 * for $LISTEN_PID). Both are no-ops when systemd did not set them up.
 */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int systemd_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char msg[512];
    va_list ap;

    if (!path || !*path)
        return 0;
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ssize_t w = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    close(fd);
    return w == n ? 0 : -1;
}

int systemd_listen_fds(int *fds, size_t max)
{
    const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
    int n = 0;

    if (pid && nfds && strtol(pid, NULL, 10) == (long)getpid()) {
        n = (int)strtol(nfds, NULL, 10);
        if (n < 0 || (size_t)n > max)
            n = -1;
        for (int i = 0; i < n; i++) {
            int fd = 3 + i;
            fds[i] = fd;
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
    }
    /* Not for our children, whoever they are. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n;
}

unsigned long long systemd_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!usec || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return 0;
    return strtoull(usec, NULL, 10);
}

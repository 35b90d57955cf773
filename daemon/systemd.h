/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * systemd.h - sd_notify and socket activation, spoken directly.
 */
#ifndef FCGATE_SYSTEMD_H
#define FCGATE_SYSTEMD_H

#include <stddef.h>

/* Sends "READY=1", "STATUS=...", ... to $NOTIFY_SOCKET; 0 when there is
 * none. -1 on failure. */
int systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Listening sockets passed by systemd to this process: their count (0 if
 * none), fds[] filled, made non-blocking and close-on-exec; -1 if more
 * than max. Clears LISTEN_* from the environment. */
int systemd_listen_fds(int *fds, size_t max);

/* The watchdog interval systemd asks for, in microseconds; 0: none. */
unsigned long long systemd_watchdog_usec(void);

#endif

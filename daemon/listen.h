/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * listen.h - listen addresses: parsing (pure) and opening sockets.
 */
#ifndef FCGATE_LISTEN_H
#define FCGATE_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct listen_addr {
    int family; /* AF_UNIX, AF_INET, AF_INET6 */
    struct sockaddr_storage ss;
    socklen_t sslen;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* AF_UNIX */
};

/* Parses "unix:/path", "IPv4:port", "[IPv6]:port" or "*:port" (all IPv4
 * addresses). Pure. 0, or -1 with a reason in err. */
int listen_parse(const char *spec, struct listen_addr *out, char *err, size_t errlen);

/* Creates, binds and listens (backlog), non-blocking and close-on-exec.
 * A stale unix socket (nobody accepting) is replaced; a live one is an
 * error. mode applies to unix sockets. Returns the fd, or -1 with err. */
int listen_open(const struct listen_addr *a, int backlog, unsigned mode, char *err, size_t errlen);

/* Writes a as "unix:/path", "127.0.0.1:9000" or "[::1]:9000", the form
 * listen_parse reads, for messages. Pure. Returns snprintf's result. */
int listen_format(const struct listen_addr *a, char *buf, size_t len);

/* Removes a unix socket file created by listen_open. */
void listen_unlink(const struct listen_addr *a);

#endif

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * listen.c - listen addresses: parsing (pure, no DNS) and opening sockets.
 *
 * Like redis' anet: nothing here logs or exits; failures come back as -1
 * with a one-line reason in the caller's buffer.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

static int fail(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Fills err (when there is one) and returns -1, for `return fail(...)`. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Input text inside a reason: bounded, control bytes escaped. len >= 8. */
static const char *shown(char *buf, size_t len, const char *s, size_t n)
{
    size_t i, o = 0;

    /* Each step leaves room for one escaped byte, "..." and the NUL. */
    for (i = 0; i < n && o + 8 <= len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    if (i < n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* Decimal 1..65535, digits only: no sign, no spaces, no service names. */
static int parse_port(const char *s, size_t n, unsigned *port, char *err, size_t errlen)
{
    char sb[64];
    unsigned long v = 0;
    size_t i;

    if (n == 0)
        return fail(err, errlen, "missing port");
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 5)
            return fail(err, errlen, "bad port '%s'", shown(sb, sizeof(sb), s, n));
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return fail(err, errlen, "bad port '%s' (must be 1..65535)", shown(sb, sizeof(sb), s, n));
    *port = (unsigned)v;
    return 0;
}

int listen_parse(const char *spec, struct listen_addr *out, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1], sb[64];
    unsigned port = 0;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (spec == NULL || *spec == '\0')
        return fail(err, errlen, "empty address");

    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *su = (struct sockaddr_un *)&out->ss;
        const char *path = spec + 5;

        n = strlen(path);
        if (n == 0)
            return fail(err, errlen, "missing unix socket path");
        if (n >= sizeof(su->sun_path))
            return fail(err, errlen, "unix socket path too long (%zu bytes, at most %zu)", n,
                        sizeof(su->sun_path) - 1);
        su->sun_family = AF_UNIX;
        memcpy(su->sun_path, path, n + 1);
        memcpy(out->path, path, n + 1);
        out->family = AF_UNIX;
        out->sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }

    if (spec[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
        const char *rb;

        rb = strchr(spec, ']');
        if (rb == NULL)
            return fail(err, errlen, "missing ']' after the IPv6 address");
        n = (size_t)(rb - spec - 1);
        if (rb[1] == '\0')
            return fail(err, errlen, "missing port");
        if (rb[1] != ':')
            return fail(err, errlen, "expected ':' and a port after ']'");
        if (n == 0 || n >= sizeof(host))
            return fail(err, errlen, "bad IPv6 address '%s'", shown(sb, sizeof(sb), spec + 1, n));
        memcpy(host, spec + 1, n);
        host[n] = '\0';
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return fail(err, errlen, "bad IPv6 address '%s'", shown(sb, sizeof(sb), host, n));
        if (parse_port(rb + 2, strlen(rb + 2), &port, err, errlen) < 0)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        out->family = AF_INET6;
        out->sslen = sizeof(*sin6);
        return 0;
    }

    {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        const char *colon;

        colon = strrchr(spec, ':');
        if (colon == NULL)
            return fail(err, errlen, "missing port (use HOST:PORT or unix:PATH)");
        n = (size_t)(colon - spec);
        if (memchr(spec, ':', n) != NULL)
            return fail(err, errlen, "IPv6 addresses need brackets, like [::1]:9000");
        if (n == 0)
            return fail(err, errlen, "missing host (use *:PORT for all IPv4 addresses)");
        if (n == 1 && spec[0] == '*') {
            sin->sin_addr.s_addr = htonl(INADDR_ANY);
        } else {
            /* Numeric only: a name would need DNS, and its answer could
             * change under a running server. */
            if (n < sizeof(host)) {
                memcpy(host, spec, n);
                host[n] = '\0';
            }
            if (n >= sizeof(host) || inet_pton(AF_INET, host, &sin->sin_addr) != 1)
                return fail(err, errlen, "bad IPv4 address '%s' (host names are not resolved)",
                            shown(sb, sizeof(sb), spec, n));
        }
        if (parse_port(colon + 1, strlen(colon + 1), &port, err, errlen) < 0)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        out->family = AF_INET;
        out->sslen = sizeof(*sin);
        return 0;
    }
}

int listen_format(const struct listen_addr *a, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];

    switch (a->family) {
    case AF_UNIX:
        return snprintf(buf, len, "unix:%s", a->path);
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host)) == NULL)
            break;
        return snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host)) == NULL)
            break;
        return snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    }
    }
    return snprintf(buf, len, "(unknown address family %d)", a->family);
}

/* A socket file left behind by a server that died keeps its path taken:
 * replace it, but only once a connect() proves nobody accepts on it. */
static int unix_clear(const struct listen_addr *a, char *err, size_t errlen)
{
    struct stat st;
    int fd, r, e;

    if (lstat(a->path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return fail(err, errlen, "cannot check %s: %s", a->path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return fail(err, errlen, "%s exists and is not a socket", a->path);

    /* Non-blocking: a live server with a full backlog answers EAGAIN
     * instead of holding the supervisor up. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(err, errlen, "cannot check %s: socket: %s", a->path, strerror(errno));
    r = connect(fd, (const struct sockaddr *)&a->ss, a->sslen);
    e = errno;
    close(fd);
    if (r == 0 || e == EAGAIN || e == EINPROGRESS)
        return fail(err, errlen, "another server is listening on %s", a->path);
    if (e == ENOENT)
        return 0;
    if (e != ECONNREFUSED)
        return fail(err, errlen, "cannot check %s: connect: %s", a->path, strerror(e));
    if (unlink(a->path) < 0 && errno != ENOENT)
        return fail(err, errlen, "cannot remove stale socket %s: %s", a->path, strerror(errno));
    return 0;
}

int listen_open(const struct listen_addr *a, int backlog, unsigned mode, char *err, size_t errlen)
{
    char name[sizeof(a->path) + 64];
    int fd, one = 1, bound = 0, e;

    listen_format(a, name, sizeof(name));
    if (a->family == AF_UNIX && unix_clear(a, err, errlen) < 0)
        return -1;

    fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(err, errlen, "cannot create a socket for %s: %s", name, strerror(errno));
    /* REUSEADDR: a restart must not wait out TIME_WAIT of the old
     * connections. V6ONLY: "[::]:9000" means IPv6 only, as written;
     * IPv4 is listed on its own, so both can be bound side by side. */
    if (a->family != AF_UNIX && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        e = errno;
        fail(err, errlen, "cannot set SO_REUSEADDR on %s: %s", name, strerror(e));
        goto fail;
    }
    if (a->family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) {
        e = errno;
        fail(err, errlen, "cannot set IPV6_V6ONLY on %s: %s", name, strerror(e));
        goto fail;
    }
    if (bind(fd, (const struct sockaddr *)&a->ss, a->sslen) < 0) {
        e = errno;
        fail(err, errlen, "cannot bind %s: %s", name, strerror(e));
        goto fail;
    }
    bound = 1;
    /* bind() created the file under the umask; the configured mode is
     * what lets nginx's user connect. Not through a link: the directory
     * may be writable by others, who could swap the socket for one. */
    if (a->family == AF_UNIX &&
        fchmodat(AT_FDCWD, a->path, mode & 07777, AT_SYMLINK_NOFOLLOW) < 0) {
        e = errno;
        fail(err, errlen, "cannot chmod %04o %s: %s", mode & 07777, a->path, strerror(e));
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        e = errno;
        fail(err, errlen, "cannot listen on %s: %s", name, strerror(e));
        goto fail;
    }
    return fd;

fail:
    close(fd);
    if (bound && a->family == AF_UNIX)
        unlink(a->path);
    return -1;
}

void listen_unlink(const struct listen_addr *a)
{
    if (a->family == AF_UNIX && a->path[0] != '\0')
        unlink(a->path);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_listen.c - listen.c: address parsing (every form, every reason) and
 * real sockets on loopback and in a private directory.
 */
/* cmocka.h needs these four first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"

static char tmpdir[] = "/tmp/test_listen.XXXXXX";

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    char *cmd;
    int r;

    (void)state;
    if (asprintf(&cmd, "rm -rf '%s'", tmpdir) < 0)
        return -1;
    r = system(cmd);
    free(cmd);
    return r == 0 ? 0 : -1;
}

/* spec must be refused with exactly the reason want. */
static void expect_bad(const char *spec, const char *want)
{
    struct listen_addr a;
    char err[256] = "";

    if (listen_parse(spec, &a, err, sizeof(err)) == 0)
        fail_msg("'%s' was accepted", spec ? spec : "(null)");
    assert_string_equal(err, want);
}

static void unix_addr(struct listen_addr *a, const char *name)
{
    char spec[256], err[256] = "";

    snprintf(spec, sizeof(spec), "unix:%s/%s", tmpdir, name);
    if (listen_parse(spec, a, err, sizeof(err)) < 0)
        fail_msg("%s: %s", spec, err);
}

/* 127.0.0.1 with port 0, which listen_parse rightly refuses: the kernel
 * picks a free port, so tests never collide with anything. */
static void loopback_any_port(struct listen_addr *a)
{
    assert_int_equal(listen_parse("127.0.0.1:1", a, NULL, 0), 0);
    ((struct sockaddr_in *)&a->ss)->sin_port = 0;
}

static unsigned bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    memset(&ss, 0, sizeof(ss));
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void assert_nonblock_cloexec(int fd)
{
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static int sockopt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

/* ---- parsing ---- */

static void test_listen_parse_unix_path(void **state)
{
    struct listen_addr a;
    const struct sockaddr_un *su = (const struct sockaddr_un *)&a.ss;

    (void)state;
    assert_int_equal(listen_parse("unix:/run/fcgate/fcgate.sock", &a, NULL, 0), 0);
    assert_int_equal(a.family, AF_UNIX);
    assert_int_equal(su->sun_family, AF_UNIX);
    assert_string_equal(su->sun_path, "/run/fcgate/fcgate.sock");
    assert_string_equal(a.path, "/run/fcgate/fcgate.sock");
    assert_int_equal(a.sslen, offsetof(struct sockaddr_un, sun_path) + 24);
}

static void test_listen_parse_relative_unix_path(void **state)
{
    struct listen_addr a;

    (void)state;
    assert_int_equal(listen_parse("unix:run/x.sock", &a, NULL, 0), 0);
    assert_string_equal(a.path, "run/x.sock");
}

/* sun_path holds 108 bytes with the NUL: 107 fit, 108 do not. */
static void test_listen_parse_unix_path_length_limit(void **state)
{
    struct listen_addr a;
    char spec[256], err[128];
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

    (void)state;
    strcpy(spec, "unix:/");
    memset(spec + 6, 'a', max - 1);
    spec[5 + max] = '\0';
    assert_int_equal(listen_parse(spec, &a, err, sizeof(err)), 0);
    assert_int_equal(strlen(a.path), max);

    strcat(spec, "b");
    assert_int_equal(listen_parse(spec, &a, err, sizeof(err)), -1);
    assert_string_equal(err, "unix socket path too long (108 bytes, at most 107)");
}

static void test_listen_parse_ipv4(void **state)
{
    struct listen_addr a;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;

    (void)state;
    assert_int_equal(listen_parse("127.0.0.1:9000", &a, NULL, 0), 0);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 9000);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(a.sslen, sizeof(struct sockaddr_in));

    assert_int_equal(listen_parse("10.1.2.3:1", &a, NULL, 0), 0);
    assert_int_equal(ntohs(sin->sin_port), 1);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x0a010203);
    assert_int_equal(listen_parse("0.0.0.0:65535", &a, NULL, 0), 0);
    assert_int_equal(ntohs(sin->sin_port), 65535);
}

static void test_listen_parse_star_is_ipv4_any(void **state)
{
    struct listen_addr a;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;

    (void)state;
    assert_int_equal(listen_parse("*:9000", &a, NULL, 0), 0);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(sin->sin_port), 9000);
}

static void test_listen_parse_ipv6(void **state)
{
    struct listen_addr a;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;

    (void)state;
    assert_int_equal(listen_parse("[::1]:9000", &a, NULL, 0), 0);
    assert_int_equal(a.family, AF_INET6);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 9000);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));
    assert_int_equal(a.sslen, sizeof(struct sockaddr_in6));

    assert_int_equal(listen_parse("[::]:80", &a, NULL, 0), 0);
    assert_memory_equal(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
    assert_int_equal(listen_parse("[2001:db8::ffff:1.2.3.4]:443", &a, NULL, 0), 0);
}

static void test_listen_parse_reports_missing_port(void **state)
{
    (void)state;
    expect_bad("127.0.0.1", "missing port (use HOST:PORT or unix:PATH)");
    expect_bad("/run/fcgate.sock", "missing port (use HOST:PORT or unix:PATH)");
    expect_bad("127.0.0.1:", "missing port");
    expect_bad("*:", "missing port");
    expect_bad("[::1]", "missing port");
    expect_bad("[::1]:", "missing port");
}

static void test_listen_parse_reports_bad_port(void **state)
{
    (void)state;
    expect_bad("127.0.0.1:0", "bad port '0' (must be 1..65535)");
    expect_bad("127.0.0.1:65536", "bad port '65536' (must be 1..65535)");
    expect_bad("127.0.0.1:99999", "bad port '99999' (must be 1..65535)");
    expect_bad("127.0.0.1:123456", "bad port '123456'");
    expect_bad("127.0.0.1:http", "bad port 'http'");
    expect_bad("127.0.0.1:-1", "bad port '-1'");
    expect_bad("127.0.0.1:+80", "bad port '+80'");
    expect_bad("127.0.0.1: 80", "bad port ' 80'");
    expect_bad("127.0.0.1:80 ", "bad port '80 '");
    expect_bad("*:0", "bad port '0' (must be 1..65535)");
    expect_bad("[::1]:0", "bad port '0' (must be 1..65535)");
    expect_bad("[::1]:x", "bad port 'x'");
}

static void test_listen_parse_reports_bad_ipv4_address(void **state)
{
    (void)state;
    expect_bad("256.0.0.1:80", "bad IPv4 address '256.0.0.1' (host names are not resolved)");
    expect_bad("127.1:80", "bad IPv4 address '127.1' (host names are not resolved)");
    expect_bad("localhost:80", "bad IPv4 address 'localhost' (host names are not resolved)");
    expect_bad(":80", "missing host (use *:PORT for all IPv4 addresses)");
    expect_bad("**:80", "bad IPv4 address '**' (host names are not resolved)");
    expect_bad("a-very-long-host-name-that-is-longer-than-any-address-at-all.example.com:80",
               "bad IPv4 address 'a-very-long-host-name-that-is-longer-than-any-address-at-...' "
               "(host names are not resolved)");
}

static void test_listen_parse_reports_bad_ipv6_address(void **state)
{
    (void)state;
    expect_bad("::1:9000", "IPv6 addresses need brackets, like [::1]:9000");
    expect_bad("[::1:9000", "missing ']' after the IPv6 address");
    expect_bad("[::1]9000", "expected ':' and a port after ']'");
    expect_bad("[::g]:80", "bad IPv6 address '::g'");
    expect_bad("[127.0.0.1]:80", "bad IPv6 address '127.0.0.1'");
    expect_bad("[]:80", "bad IPv6 address ''");
    expect_bad("[fe80::1%eth0]:80", "bad IPv6 address 'fe80::1%eth0'");
}

static void test_listen_parse_reports_empty_input(void **state)
{
    (void)state;
    expect_bad("", "empty address");
    expect_bad(NULL, "empty address");
    expect_bad("unix:", "missing unix socket path");
}

/* Control bytes in the input are escaped in the reason. */
static void test_listen_parse_escapes_control_bytes(void **state)
{
    (void)state;
    expect_bad("127.0.0.1:8\n0", "bad port '8\\x0a0'");
}

/* A NULL or zero-length error buffer is allowed, and a short one is cut. */
static void test_listen_parse_error_buffer_is_optional(void **state)
{
    struct listen_addr a;
    char err[8];

    (void)state;
    assert_int_equal(listen_parse("nope", &a, NULL, 0), -1);
    assert_int_equal(listen_parse("nope", &a, err, 0), -1);
    assert_int_equal(listen_parse("nope", &a, err, sizeof(err)), -1);
    assert_string_equal(err, "missing");
}

static void test_listen_format_round_trips(void **state)
{
    static const char *const specs[] = {"unix:/run/fcgate/fcgate.sock",
                                        "unix:rel.sock",
                                        "127.0.0.1:9000",
                                        "[::1]:9000",
                                        "0.0.0.0:1",
                                        "[2001:db8::1]:65535"};
    struct listen_addr a, b;
    char buf[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        assert_int_equal(listen_parse(specs[i], &a, NULL, 0), 0);
        assert_int_equal(listen_format(&a, buf, sizeof(buf)), (int)strlen(specs[i]));
        assert_string_equal(buf, specs[i]);
        assert_int_equal(listen_parse(buf, &b, NULL, 0), 0);
        assert_memory_equal(&a, &b, sizeof(a));
    }
    assert_int_equal(listen_parse("*:9000", &a, NULL, 0), 0);
    listen_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "0.0.0.0:9000");
}

/* ---- opening TCP sockets ---- */

static void test_listen_open_tcp_loopback(void **state)
{
    struct listen_addr a;
    struct sockaddr_in sin;
    char err[256] = "";
    int fd, c, s = -1;

    (void)state;
    loopback_any_port(&a);
    fd = listen_open(&a, 16, 0, err, sizeof(err));
    if (fd < 0)
        fail_msg("%s", err);
    assert_true(bound_port(fd) > 0);
    assert_nonblock_cloexec(fd);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEADDR), 1);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);

    /* Non-blocking: nothing to accept yet means EAGAIN, not a hang. */
    assert_int_equal(accept(fd, NULL, NULL), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)bound_port(fd));
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    for (int i = 0; i < 100 && (s = accept(fd, NULL, NULL)) < 0; i++)
        usleep(10000);
    assert_true(s >= 0);
    close(s);
    close(c);
    close(fd);
}

static void test_listen_open_tcp_reports_address_in_use(void **state)
{
    struct listen_addr a;
    char spec[64], err[256] = "", want[256];
    int fd, fd2;

    (void)state;
    loopback_any_port(&a);
    fd = listen_open(&a, 16, 0, err, sizeof(err));
    assert_true(fd >= 0);
    snprintf(spec, sizeof(spec), "127.0.0.1:%u", bound_port(fd));
    assert_int_equal(listen_parse(spec, &a, NULL, 0), 0);
    fd2 = listen_open(&a, 16, 0, err, sizeof(err));
    assert_int_equal(fd2, -1);
    snprintf(want, sizeof(want), "cannot bind %s: %s", spec, strerror(EADDRINUSE));
    assert_string_equal(err, want);
    close(fd);
}

static void test_listen_open_ipv6_loopback_is_v6only(void **state)
{
    struct listen_addr a;
    char err[256] = "";
    int fd, probe;

    (void)state;
    probe = socket(AF_INET6, SOCK_STREAM, 0);
    if (probe < 0)
        skip(); /* no IPv6 in this environment */
    close(probe);
    assert_int_equal(listen_parse("[::1]:1", &a, NULL, 0), 0);
    ((struct sockaddr_in6 *)&a.ss)->sin6_port = 0;
    fd = listen_open(&a, 16, 0, err, sizeof(err));
    if (fd < 0 && strstr(err, strerror(EADDRNOTAVAIL)) != NULL)
        skip(); /* IPv6 present, ::1 not configured */
    if (fd < 0)
        fail_msg("%s", err);
    assert_int_equal(sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY), 1);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_REUSEADDR), 1);
    assert_nonblock_cloexec(fd);
    assert_true(bound_port(fd) > 0);
    close(fd);
}

/* ---- opening unix sockets ---- */

static void test_listen_open_unix_applies_mode(void **state)
{
    struct listen_addr a;
    struct stat st;
    char err[256] = "";
    mode_t old = umask(077);
    int fd;

    (void)state;
    unix_addr(&a, "mode.sock");
    fd = listen_open(&a, 16, 0660, err, sizeof(err));
    if (fd < 0)
        fail_msg("%s", err);
    assert_int_equal(lstat(a.path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0660);
    assert_nonblock_cloexec(fd);
    assert_int_equal(sockopt(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);
    close(fd);
    listen_unlink(&a);

    fd = listen_open(&a, 16, 0600, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(lstat(a.path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    close(fd);
    listen_unlink(&a);
    umask(old);
}

/* A socket file nobody accepts on (a crashed server's) is replaced. */
static void test_listen_open_unix_replaces_stale_socket(void **state)
{
    struct listen_addr a;
    struct sockaddr_un su;
    char err[256] = "";
    int fd, c;

    (void)state;
    unix_addr(&a, "stale.sock");
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a.ss, a.sslen), 0);
    close(fd); /* the file stays, nobody listens */

    fd = listen_open(&a, 16, 0600, err, sizeof(err));
    if (fd < 0)
        fail_msg("%s", err);

    /* The new socket is the one at the path. */
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&su, 0, sizeof(su));
    su.sun_family = AF_UNIX;
    strcpy(su.sun_path, a.path);
    assert_int_equal(connect(c, (struct sockaddr *)&su, sizeof(su)), 0);
    close(c);
    close(fd);
    listen_unlink(&a);
}

/* A live server keeps its socket: the second start fails, the first one
 * still accepts. */
static void test_listen_open_unix_refuses_live_socket(void **state)
{
    struct listen_addr a;
    struct stat st;
    char err[256] = "", want[256];
    int fd, fd2, s;

    (void)state;
    unix_addr(&a, "live.sock");
    fd = listen_open(&a, 16, 0600, err, sizeof(err));
    assert_true(fd >= 0);
    fd2 = listen_open(&a, 16, 0600, err, sizeof(err));
    assert_int_equal(fd2, -1);
    snprintf(want, sizeof(want), "another server is listening on %s", a.path);
    assert_string_equal(err, want);
    assert_int_equal(lstat(a.path, &st), 0);
    /* The probe connection is what the live server sees; it is closed. */
    s = accept(fd, NULL, NULL);
    assert_true(s >= 0);
    close(s);
    close(fd);
    listen_unlink(&a);
}

/* Even with its backlog full a live server is not mistaken for stale. */
static void test_listen_open_unix_refuses_live_socket_with_full_backlog(void **state)
{
    struct listen_addr a;
    char err[256] = "";
    int fd, c[8], i, n = 0;

    (void)state;
    unix_addr(&a, "full.sock");
    fd = listen_open(&a, 1, 0600, err, sizeof(err));
    assert_true(fd >= 0);
    for (i = 0; i < 8; i++) {
        c[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(c[i], (struct sockaddr *)&a.ss, a.sslen) == 0)
            n++;
    }
    assert_true(n < 8); /* the queue did fill */
    assert_int_equal(listen_open(&a, 16, 0600, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "another server is listening on"));
    for (i = 0; i < 8; i++)
        close(c[i]);
    close(fd);
    listen_unlink(&a);
}

static void test_listen_open_unix_refuses_non_socket_file(void **state)
{
    struct listen_addr a;
    struct stat st;
    char err[256] = "", want[256];
    int f;

    (void)state;
    unix_addr(&a, "regular");
    f = open(a.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    assert_int_equal(write(f, "keep", 4), 4);
    close(f);
    assert_int_equal(listen_open(&a, 16, 0600, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s exists and is not a socket", a.path);
    assert_string_equal(err, want);
    assert_int_equal(stat(a.path, &st), 0);
    assert_int_equal(st.st_size, 4); /* untouched */
    unlink(a.path);
}

static void test_listen_open_unix_reports_missing_directory(void **state)
{
    struct listen_addr a;
    char err[256] = "", want[512];

    (void)state;
    unix_addr(&a, "no/such/dir.sock");
    assert_int_equal(listen_open(&a, 16, 0600, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "cannot bind unix:%s: %s", a.path, strerror(ENOENT));
    assert_string_equal(err, want);
}

static void test_listen_unlink_removes_socket_file(void **state)
{
    struct listen_addr a, t;
    struct stat st;
    char err[256] = "";
    int fd;

    (void)state;
    unix_addr(&a, "gone.sock");
    fd = listen_open(&a, 16, 0600, err, sizeof(err));
    assert_true(fd >= 0);
    close(fd);
    listen_unlink(&a);
    assert_int_equal(lstat(a.path, &st), -1);
    assert_int_equal(errno, ENOENT);
    /* Harmless for TCP addresses and for a file already gone. */
    listen_unlink(&a);
    loopback_any_port(&t);
    listen_unlink(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_parse_unix_path),
        cmocka_unit_test(test_listen_parse_relative_unix_path),
        cmocka_unit_test(test_listen_parse_unix_path_length_limit),
        cmocka_unit_test(test_listen_parse_ipv4),
        cmocka_unit_test(test_listen_parse_star_is_ipv4_any),
        cmocka_unit_test(test_listen_parse_ipv6),
        cmocka_unit_test(test_listen_parse_reports_missing_port),
        cmocka_unit_test(test_listen_parse_reports_bad_port),
        cmocka_unit_test(test_listen_parse_reports_bad_ipv4_address),
        cmocka_unit_test(test_listen_parse_reports_bad_ipv6_address),
        cmocka_unit_test(test_listen_parse_reports_empty_input),
        cmocka_unit_test(test_listen_parse_escapes_control_bytes),
        cmocka_unit_test(test_listen_parse_error_buffer_is_optional),
        cmocka_unit_test(test_listen_format_round_trips),
        cmocka_unit_test(test_listen_open_tcp_loopback),
        cmocka_unit_test(test_listen_open_tcp_reports_address_in_use),
        cmocka_unit_test(test_listen_open_ipv6_loopback_is_v6only),
        cmocka_unit_test(test_listen_open_unix_applies_mode),
        cmocka_unit_test(test_listen_open_unix_replaces_stale_socket),
        cmocka_unit_test(test_listen_open_unix_refuses_live_socket),
        cmocka_unit_test(test_listen_open_unix_refuses_live_socket_with_full_backlog),
        cmocka_unit_test(test_listen_open_unix_refuses_non_socket_file),
        cmocka_unit_test(test_listen_open_unix_reports_missing_directory),
        cmocka_unit_test(test_listen_unlink_removes_socket_file),
    };

    return cmocka_run_group_tests_name("listen", tests, group_setup, group_teardown);
}

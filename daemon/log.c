/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log.c - error and access logs.
 *
 * Each line is formatted into a stack buffer and written with one write(2)
 * to an O_APPEND descriptor: POSIX keeps such writes whole with respect to
 * each other, so the supervisor, every worker and every thread can share a
 * file without locks. Lines longer than the buffer are cut, never split,
 * and control bytes in a message are escaped, so one message is always
 * exactly one line.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

/* Other threads may be writing while the files are reopened. A file
 * replaces a file in place (dup3 onto the same descriptor number, which
 * the kernel does atomically), so nothing keeps the rotated file open.
 * Switching between stderr and a file swaps the number instead, and the
 * old descriptor is only closed at the swap after, so a write never lands
 * on a closed (or reused) descriptor number. */
struct log_target {
    _Atomic int fd;
    int retired; /* the previous descriptor, closed at the next swap */
};

static struct {
    int level;
    struct log_target error, access, slow;
    char *error_path, *access_path, *slow_path;
    char role[32];
} lg = {FCGATE_LOG_INFO, {2, -1}, {-1, -1}, {-1, -1}, NULL, NULL, NULL, "main"};

static const char *level_name(int level)
{
    switch (level) {
    case FCGATE_LOG_ERROR:
        return "error";
    case FCGATE_LOG_WARN:
        return "warn";
    case FCGATE_LOG_INFO:
        return "info";
    default:
        return "debug";
    }
}

int log_level_parse(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", FCGATE_LOG_ERROR},
                  {"warn", FCGATE_LOG_WARN},
                  {"info", FCGATE_LOG_INFO},
                  {"debug", FCGATE_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcasecmp(name, levels[i].name) == 0)
            return levels[i].level;
    return -1;
}

static void swap_fd(struct log_target *t, int nfd)
{
    int cur = atomic_load(&t->fd);
    if (cur > 2 && nfd > 2 && dup3(nfd, cur, O_CLOEXEC) == cur) {
        close(nfd);
        return;
    }
    int old = atomic_exchange(&t->fd, nfd);
    if (t->retired > 2)
        close(t->retired);
    t->retired = old;
}

/* "-" is the inherited stderr; anything else is opened for appending.
 * Never through a symbolic link: the supervisor opens these as root in a
 * directory the workers' user may write (logrotate's), and a link planted
 * there would have root append to, and then chown, any file. 0, or -1
 * with the reason in err. */
static int open_target(const char *path, struct log_target *t, char *err, size_t errlen)
{
    if (!path || strcmp(path, "-") == 0) {
        swap_fd(t, 2);
        return 0;
    }
    int nfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (nfd < 0) {
        if (errno == ELOOP)
            snprintf(err, errlen, "log file %s is a symbolic link; not following it", path);
        else
            snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        return -1;
    }
    swap_fd(t, nfd);
    return 0;
}

static void set_path(char **field, const char *path)
{
    free(*field);
    *field = path ? strdup(path) : NULL;
}

/* An optional file: off when path is NULL. */
static int open_optional(const char *path, struct log_target *t)
{
    char err[4200];
    if (!path) {
        swap_fd(t, -1);
        return 0;
    }
    if (open_target(path, t, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return -1;
    }
    return 0;
}

int log_open(int level, const char *error_path, const char *access_path, const char *slow_path)
{
    char err[4200];
    int rc = 0;

    set_path(&lg.error_path, error_path);
    set_path(&lg.access_path, access_path);
    set_path(&lg.slow_path, slow_path);
    lg.level = level;
    if (open_target(lg.error_path, &lg.error, err, sizeof(err)) < 0) {
        log_error("%s", err);
        rc = -1;
    }
    if (open_optional(lg.access_path, &lg.access) < 0)
        rc = -1;
    if (open_optional(lg.slow_path, &lg.slow) < 0)
        rc = -1;
    return rc;
}

/* The error log's NULL path is stderr; the others' is off. */
static int reopen_one(const char *name, const char *path, struct log_target *t, int optional)
{
    char err[4200];
    if (optional && !path)
        return 0;
    if (open_target(path, t, err, sizeof(err)) == 0)
        return 0;
    log_error("reopening the %s log: %s; still writing to the old file", name, err);
    return -1;
}

int log_reopen(void)
{
    int rc = reopen_one("error", lg.error_path, &lg.error, 0);
    rc |= reopen_one("access", lg.access_path, &lg.access, 1);
    rc |= reopen_one("slow", lg.slow_path, &lg.slow, 1);
    return rc;
}

/* Through the descriptor, not the name: the name may already lead
 * elsewhere. Only a regular file with one link, so a hard link to another
 * file, or a device such as /dev/null, keeps its owner. */
static int chown_target(const struct log_target *t, const char *path, uid_t uid, gid_t gid)
{
    struct stat st;
    int fd = atomic_load(&t->fd);

    if (!path || strcmp(path, "-") == 0 || fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        log_warn("log file %s: not a regular file with one link; its owner stays as it is", path);
        return -1;
    }
    if (fchown(fd, uid, gid) < 0) {
        log_warn("log file %s: chown: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int log_chown(uid_t uid, gid_t gid)
{
    int rc = chown_target(&lg.error, lg.error_path, uid, gid);
    if (chown_target(&lg.access, lg.access_path, uid, gid) < 0)
        rc = -1;
    if (chown_target(&lg.slow, lg.slow_path, uid, gid) < 0)
        rc = -1;
    return rc;
}

void log_set_role(const char *role)
{
    snprintf(lg.role, sizeof(lg.role), "%s", role);
}

/* Escapes control bytes of the len bytes at s as \xNN, in place, in a
 * buffer of cap bytes; returns the new length. Request data (a decoded
 * %0a in a path) would otherwise end the line early and forge lines of
 * its own. What does not fit is cut, never half an escape. */
static size_t escape_controls(char *s, size_t len, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t fit = 0, out = 0;

    for (; fit < len; fit++) {
        unsigned char ch = (unsigned char)s[fit];
        size_t w = ch < 0x20 || ch == 0x7f ? 4 : 1;
        if (out + w > cap)
            break;
        out += w;
    }
    /* Backwards: an escape only ever moves bytes to the right. */
    for (size_t i = fit, o = out; i-- > 0;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != 0x7f) {
            s[--o] = (char)ch;
            continue;
        }
        s[--o] = hex[ch & 15];
        s[--o] = hex[ch >> 4];
        s[--o] = 'x';
        s[--o] = '\\';
    }
    return out;
}

static void vlog(int level, const char *fmt, va_list ap)
{
    char line[LINE_MAX_BYTES];
    struct timespec ts;
    struct tm tm;
    int saved = errno;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ [%s %d] %s: ", ts.tv_nsec / 1000000,
                          lg.role, (int)getpid(), level_name(level));
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = n + (size_t)m >= sizeof(line) - 1 ? sizeof(line) - 2 - n : (size_t)m;
    n += escape_controls(line + n, len, sizeof(line) - 1 - n);
    line[n++] = '\n';
    (void)!write(atomic_load(&lg.error.fd), line, n);
    errno = saved;
}

/* ---- the slow log: entries of several lines, each written whole ---- */

void log_entry_start(struct log_entry *e)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    e->n = strftime(e->buf, sizeof(e->buf), "%Y-%m-%dT%H:%M:%S", &tm);
    e->n += (size_t)snprintf(e->buf + e->n, sizeof(e->buf) - e->n, ".%03ldZ ",
                             ts.tv_nsec / 1000000);
}

void log_entry_add(struct log_entry *e, const char *fmt, ...)
{
    size_t room = sizeof(e->buf) - e->n;
    if (room < 2)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(e->buf + e->n, room, fmt, ap);
    va_end(ap);
    size_t len = m < 0 ? 0 : (size_t)m >= room - 1 ? room - 2 : (size_t)m;
    e->n += escape_controls(e->buf + e->n, len, room - 1);
    e->buf[e->n++] = '\n';
}

int log_slow_enabled(void)
{
    return atomic_load(&lg.slow.fd) >= 0;
}

void log_entry_write(const struct log_entry *e)
{
    int fd = atomic_load(&lg.slow.fd);
    if (fd >= 0)
        (void)!write(fd, e->buf, e->n);
}

void log_write(int level, const char *fmt, ...)
{
    if (level > lg.level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(FCGATE_LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

int log_access_enabled(void)
{
    return atomic_load(&lg.access.fd) >= 0;
}

void log_access_line(const char *line, size_t len)
{
    int fd = atomic_load(&lg.access.fd);
    if (fd >= 0)
        (void)!write(fd, line, len);
}

/* ---- access-log formats ---- */

static const char *const access_vars[] = {"remote_addr", "time",        "time_iso", "method",
                                          "uri",         "path",        "query",    "status",
                                          "bytes",       "duration_us", "pid"};

/* The variable at p (after '$'): its index, *len its length in fmt. */
static int access_var(const char *p, size_t *len)
{
    int braced = *p == '{';
    const char *name = p + braced;
    size_t n = 0;
    while (name[n] == '_' || (name[n] >= 'a' && name[n] <= 'z'))
        n++;
    if (braced && name[n] != '}')
        return -1;
    *len = n + (braced ? 2 : 0);
    for (size_t i = 0; i < sizeof(access_vars) / sizeof(access_vars[0]); i++)
        if (strlen(access_vars[i]) == n && memcmp(access_vars[i], name, n) == 0)
            return (int)i;
    return -1;
}

int log_access_format_check(const char *fmt, char *bad, size_t badlen)
{
    for (const char *p = fmt; (p = strchr(p, '$')) != NULL;) {
        size_t len;
        if (access_var(p + 1, &len) < 0) {
            size_t n = strcspn(p + 1, " \t\"'[]()");
            snprintf(bad, badlen, "$%.*s", (int)(n < 64 ? n : 64), p + 1);
            return -1;
        }
        p += 1 + len;
    }
    return 0;
}

size_t log_access_render(char *out, size_t cap, const char *fmt, const struct access_fields *f)
{
    size_t n = 0;
    char tmp[64];

    if (cap < 2)
        return 0;
    for (const char *p = fmt; *p && n < cap - 2;) {
        size_t len;
        int v = *p == '$' ? access_var(p + 1, &len) : -1;
        if (v < 0) {
            out[n++] = *p++;
            continue;
        }
        p += 1 + len;
        const char *s = tmp;
        time_t t = (time_t)f->time_s;
        struct tm tm;
        switch (v) {
        case 0:
            s = f->remote_addr ? f->remote_addr : "-";
            break;
        case 1:
            gmtime_r(&t, &tm);
            strftime(tmp, sizeof(tmp), "%d/%b/%Y:%H:%M:%S +0000", &tm);
            break;
        case 2:
            gmtime_r(&t, &tm);
            strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%SZ", &tm);
            break;
        case 3:
            s = f->method;
            break;
        case 4:
            s = f->uri;
            break;
        case 5:
            s = f->path;
            break;
        case 6:
            s = f->query;
            break;
        case 7:
            snprintf(tmp, sizeof(tmp), "%d", f->status);
            break;
        case 8:
            snprintf(tmp, sizeof(tmp), "%zu", f->bytes);
            break;
        case 9:
            snprintf(tmp, sizeof(tmp), "%llu", f->duration_us);
            break;
        default:
            snprintf(tmp, sizeof(tmp), "%d", f->pid);
            break;
        }
        if (!s || !*s)
            s = "-";
        /* Control bytes from the request would forge log lines. */
        for (; *s && n < cap - 2; s++)
            out[n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    }
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}

/* A signal handler may only set a flag: reopening allocates and logs. */
static atomic_int reopen_pending;

void log_request_reopen(void)
{
    atomic_store(&reopen_pending, 1);
}

void log_poll_reopen(void)
{
    if (atomic_load_explicit(&reopen_pending, memory_order_relaxed) &&
        atomic_exchange(&reopen_pending, 0))
        log_reopen();
}

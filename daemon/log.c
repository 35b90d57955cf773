/*
 * log.c - error and access logs.
 *
 * Each line is formatted into a stack buffer and written with one write(2)
 * to an O_APPEND descriptor: POSIX keeps such writes whole with respect to
 * each other, so the supervisor, every worker and every thread can share a
 * file without locks. Lines longer than the buffer are cut, never split.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static struct {
    int level;
    int error_fd, access_fd;
    char *error_path, *access_path;
    char role[32];
} lg = {FCGATE_LOG_INFO, 2, -1, NULL, NULL, "main"};

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

/* "-" is the inherited stderr; anything else is opened for appending. */
static int open_target(const char *path, int *fd)
{
    if (!path || strcmp(path, "-") == 0) {
        *fd = 2;
        return 0;
    }
    int nfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (nfd < 0) {
        fprintf(stderr, "fcgate: cannot open log file %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (*fd > 2)
        close(*fd);
    *fd = nfd;
    return 0;
}

int log_open(int level, const char *error_path, const char *access_path)
{
    free(lg.error_path);
    free(lg.access_path);
    lg.error_path = error_path ? strdup(error_path) : NULL;
    lg.access_path = access_path ? strdup(access_path) : NULL;
    lg.level = level;
    if (open_target(lg.error_path, &lg.error_fd) < 0)
        return -1;
    if (!lg.access_path) {
        if (lg.access_fd > 2)
            close(lg.access_fd);
        lg.access_fd = -1;
        return 0;
    }
    return open_target(lg.access_path, &lg.access_fd);
}

int log_reopen(void)
{
    int rc = open_target(lg.error_path, &lg.error_fd);
    if (lg.access_path && open_target(lg.access_path, &lg.access_fd) < 0)
        rc = -1;
    if (rc < 0)
        log_error("reopening the log files failed; still writing to the old ones");
    return rc;
}

void log_set_role(const char *role)
{
    snprintf(lg.role, sizeof(lg.role), "%s", role);
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
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ [%s %d] %s: ",
                          ts.tv_nsec / 1000000, lg.role, (int)getpid(), level_name(level));
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (m < 0)
        m = 0;
    n = n + (size_t)m >= sizeof(line) - 1 ? sizeof(line) - 2 : n + (size_t)m;
    line[n++] = '\n';
    (void)!write(lg.error_fd, line, n);
    errno = saved;
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
    return lg.access_fd >= 0;
}

void log_access_line(const char *line, size_t len)
{
    if (lg.access_fd >= 0)
        (void)!write(lg.access_fd, line, len);
}

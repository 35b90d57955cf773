/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log.h - the error log and the access log.
 *
 * Every line goes out in one write(2) on an O_APPEND descriptor, so lines
 * from the supervisor, workers and threads never interleave.
 */
#ifndef FCGATE_LOG_H
#define FCGATE_LOG_H

#include <fcgate/app.h>
#include <stddef.h>
#include <sys/types.h>

/* Opens the error log ("-": stderr), the access log and the slow log
 * (NULL: off, "-": stderr) at the given level. Before it is called, lines
 * go to stderr at info level. A path that is a symbolic link is refused.
 * 0, or -1 with the reason logged (to the error log in use: stderr at
 * start). */
int log_open(int level, const char *error_path, const char *access_path, const char *slow_path);

/* Reopens the files (logrotate, USR1); a file that cannot be reopened
 * (or is now a symbolic link) keeps its old descriptor. 0 or -1 (logged). */
int log_reopen(void);

/* From a signal handler (async-signal-safe): reopen at the next poll. */
void log_request_reopen(void);
/* Reopens the files if a reopen was requested (serving loops call it). */
void log_poll_reopen(void);

/* Gives the open log files (not stderr) to uid:gid through their
 * descriptors, so the workers can reopen them. Regular files with one
 * link only. 0 or -1 (logged as a warning). */
int log_chown(uid_t uid, gid_t gid);

/* Tags lines with this process's role, e.g. "worker 3"; pid is added. */
void log_set_role(const char *role);

void log_write(int level, const char *fmt, ...) FCGATE_PRINTF(2, 3);

#define log_error(...) log_write(FCGATE_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(FCGATE_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(FCGATE_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(FCGATE_LOG_DEBUG, __VA_ARGS__)

/* Logs at error level and exits 1. Only before serving. */
void log_fatal(const char *fmt, ...) FCGATE_PRINTF(1, 2) __attribute__((noreturn));

/* A slow-log entry: a time stamp, then lines; written in one write(2)
 * (whole, like every log line), cut at the buffer's end. */
struct log_entry {
    char buf[8192];
    size_t n;
};
void log_entry_start(struct log_entry *e);
/* One line (control bytes escaped, newline added). */
void log_entry_add(struct log_entry *e, const char *fmt, ...) FCGATE_PRINTF(2, 3);
int log_slow_enabled(void);
void log_entry_write(const struct log_entry *e);

/* True when the access log is on. */
int log_access_enabled(void);

/* One access-log line (already formatted, without newline). */
void log_access_line(const char *line, size_t len);

/* The access-log line's fields; format variables name them. */
struct access_fields {
    const char *remote_addr, *method, *uri, *path, *query;
    int status;
    size_t bytes;
    unsigned long long duration_us;
    int pid;
    long long time_s; /* wall clock, seconds */
};

#define LOG_ACCESS_FORMAT_DEFAULT                                                                  \
    "$remote_addr - [$time] \"$method $uri\" $status $bytes ${duration_us}us pid=$pid"

/* Checks an access_format: 0, or -1 with the unknown variable in bad.
 * Variables: $remote_addr $time $time_iso $method $uri $path $query
 * $status $bytes $duration_us $pid; ${name} where letters follow. Pure. */
int log_access_format_check(const char *fmt, char *bad, size_t badlen);

/* Renders fmt into out (cap bytes, newline added, NUL-terminated, cut to
 * fit); returns the length. Pure. */
size_t log_access_render(char *out, size_t cap, const char *fmt, const struct access_fields *f);

/* "error", "warn", "info", "debug" -> level, -1 if unknown. */
int log_level_parse(const char *name);

#endif

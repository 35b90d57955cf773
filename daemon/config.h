/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config.h - fcgate's configuration: embedded defaults, the libconfig file,
 * command-line overrides, validation.
 *
 * libconfig is not thread-safe and calls uselocale(): the supervisor parses,
 * everything is copied into this plain struct, and the libconfig tree is
 * destroyed before any fork. Workers only ever see struct config.
 */
#ifndef FCGATE_CONFIG_H
#define FCGATE_CONFIG_H

#include <stddef.h>

enum config_mode { MODE_SYNC = 0, MODE_THREADS = 1, MODE_ASYNC = 2 };
/* How the pool is sized: a fixed count, between bounds with the load, or
 * from zero as connections arrive. */
enum config_pm { PM_STATIC = 0, PM_DYNAMIC = 1, PM_ONDEMAND = 2 };

#define CONFIG_MAX_LISTEN 16

struct config_setting {
    char *name;  /* key inside app.settings */
    char *value; /* converted to a string: 42, 1.5, true, "text" */
};

struct config {
    char *path; /* the file it came from, NULL for embedded defaults */

    char *listen[CONFIG_MAX_LISTEN]; /* "unix:/p", "127.0.0.1:9000", "[::1]:9000" */
    size_t nlisten;
    int listen_backlog;   /* 1..65535 */
    unsigned listen_mode; /* permission bits for unix sockets, e.g. 0660 */
    unsigned umask;       /* the process umask, e.g. 022 */
    char *user;           /* workers run as this user; "root" allows root */
    char *group;          /* NULL: the user's primary group */
    char *pidfile;        /* NULL: none */

    enum config_mode mode;
    int workers;            /* 1..1024 */
    int threads;            /* 1..1024, threads mode */
    int worker_connections; /* 1..1000000, async mode */
    int blocking_threads;   /* 1..256, async mode */
    size_t stack_size;      /* bytes per coroutine stack, async mode; 16 KiB..64 MiB */
    int timeout;            /* seconds, 0: never; 0..86400 */
    int graceful_timeout;   /* seconds, 0..86400 */
    int io_timeout;         /* seconds without progress reading a request or writing, 1..86400 */
    int keepalive_timeout;  /* seconds an idle kept-alive connection stays, 1..86400 */
    long max_requests;      /* 0: never recycle */
    long max_requests_jitter;

    enum config_pm pm;              /* PM_STATIC: `workers`; else min_workers..max_workers */
    int min_workers;                /* 0..1024; dynamic keeps at least this many (>= 1) */
    int max_workers;                /* 1..1024, >= min_workers */
    int idle_timeout;               /* seconds a worker may idle before it retires, 1..86400 */
    unsigned long queue_timeout_ms; /* 0: off; a request queued longer is answered 503 */
    unsigned long long max_memory;  /* bytes of PSS per worker; 0: off */

    char *app_module;   /* path of the .so */
    char *app_database; /* sqlite path; NULL or "": no database */
    char *app_postgres; /* libpq conninfo or URI; NULL: no PostgreSQL */
    int app_postgres_pool;         /* connections per worker (async), per thread's use; 1..1024 */
    int app_postgres_pool_timeout; /* seconds a request waits for a free connection; 1..86400 */
    int app_postgres_prepare;      /* 1: prepared statements cached per connection */
    struct config_setting *settings;
    size_t nsettings;

    int log_level;           /* FCGATE_LOG_ERROR..FCGATE_LOG_DEBUG */
    char *log_error;         /* "-": stderr, else a file path */
    char *log_access;        /* NULL: off ("off" in the file), "-": stderr, else a path */
    char *log_access_format; /* variables as in log.h; NULL: the default */

    char *status_listen;         /* the status socket; NULL: no status endpoint */
    unsigned status_listen_mode; /* its permission bits (unix), default 0660 */
    char *slowlog_file;          /* the slow log; NULL: off */
    unsigned long slowlog_timeout_ms; /* a request running longer is logged, 1 ms..86400 s */

    size_t max_params_bytes; /* 1024..16 MiB */
    size_t max_body_bytes;   /* 0..4 GiB */

    /* Where values came from, for config_check's messages: "FILE:LINE",
     * "--app", "--listen"; NULL: the embedded defaults. */
    char *app_module_origin;
    char *listen_origin[CONFIG_MAX_LISTEN];
};

/* Error messages collected while loading, each "FILE:LINE: message" (or
 * "--option: message" for the command line). */
struct config_errors {
    char **msg;
    size_t n;
    /* A file could not be parsed at all (unreadable, syntax error): the
     * values it would have set are unknown, so checks of the final values
     * would only report defaults the file never reached. */
    int unparsed;
};

/* Appends one message to errs; returns 1 (the errors it stands for). */
int config_error(struct config_errors *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fills c with the embedded defaults (DESIGN.md's table). 0, or -1 on ENOMEM. */
int config_defaults(struct config *c);

/* Parses the libconfig file at path over the values already in c. Every
 * error found is appended to errs (unknown keys, wrong types, out-of-range
 * values, bad listen addresses, syntax errors, an unreadable file).
 * Returns the number of errors added. */
int config_load_file(struct config *c, const char *path, struct config_errors *errs);

/* The same for text already in memory; name is used in messages. */
int config_load_string(struct config *c, const char *text, const char *name,
                       struct config_errors *errs);

/* One command-line override: key is the long option without "--"
 * ("listen", "app", "mode", "workers", "threads", "worker-connections",
 * "database", "pidfile", "user", "group"). The first "listen" override replaces the list,
 * later ones append. Returns the number of errors added (0 or 1). */
int config_override(struct config *c, const char *key, const char *value,
                    struct config_errors *errs);

/* Checks that need the final values: the module file exists and is
 * readable, listen addresses parse. Returns the number of errors added. */
int config_check(const struct config *c, struct config_errors *errs);

/* "sync", "threads", "async". */
const char *config_mode_name(enum config_mode m);
/* "static", "dynamic", "ondemand". */
const char *config_pm_name(enum config_pm pm);
/* "64M" style sizes: digits, then K, M or G (powers of 1024). 0, or -1. */
int config_parse_size(const char *v, unsigned long long *out);

/* Looks up an app.settings value, NULL if absent. */
const char *config_setting(const struct config *c, const char *name);

void config_free(struct config *c);
void config_errors_free(struct config_errors *e);

#endif

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fcgate/app.h - the one header a fcgate application module includes.
 *
 * A module is a shared object that exports `fcgate_app_module`, a
 * `struct fcgate_app` filled by FCGATE_APP(). fcgate loads it in every
 * worker process after fork (RTLD_NOW | RTLD_LOCAL); the module links
 * against nothing of fcgate's: the fcgate_* functions below are resolved
 * from the daemon at load time.
 *
 * The same module runs unmodified in the three worker modes:
 *   sync     one request at a time per process;
 *   threads  several requests at once per process, one per thread: a
 *            module must set FCGATE_APP_THREADSAFE to be loaded in it;
 *   async    many requests per process on one event-loop thread, each in
 *            its own coroutine: fcgate_db, fcgate_pg_*, fcgate_sleep and
 *            fcgate_wait_fd yield instead of blocking, so a handler must
 *            wait only through them. A coroutine's stack is stack_size bytes
 *            (default 256 KiB, at least 32 KiB); fcgate's own frames
 *            take under 8 KiB of it, so a handler always has at least
 *            24 KiB: keep larger buffers on the heap. Overflowing it
 *            kills the worker, logged as a stack overflow with the
 *            request and stack_size.
 *
 * Conventions: functions return FCGATE_OK (0) or a negative FCGATE_E*
 * status, described by fcgate_strerror(). Strings handed out are borrowed:
 * they stay valid for the lifetime stated on each function and must not
 * be freed. A request handle may only be used by the thread that runs the
 * handler it was given to.
 */
#ifndef FCGATE_APP_H
#define FCGATE_APP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same typedefs as <sqlite3.h>; repeating a typedef is valid C11. */
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
/* The same for <libpq-fe.h>: results are libpq's own, read with its
 * accessors (PQntuples, PQgetvalue, ...) and freed with PQclear. */
typedef struct pg_result PGresult;

#define FCGATE_APP_MAGIC 0x54474346u /* "FCGT" little-endian */
#define FCGATE_ABI_MAJOR 1           /* bumped on any incompatible change */
#define FCGATE_ABI_MINOR 1           /* bumped when functions are added (1: PostgreSQL) */

typedef struct fcgate_req fcgate_req;   /* one request; valid until handle() returns */
typedef struct fcgate_host fcgate_host; /* the worker's runtime; valid from init to fini */

enum fcgate_status {
    FCGATE_OK = 0,
    FCGATE_EINVAL = -1,    /* bad argument, or the thing asked for is absent */
    FCGATE_ENOMEM = -2,    /* out of memory */
    FCGATE_EIO = -3,       /* the connection to nginx failed */
    FCGATE_ETOOBIG = -4,   /* over a configured limit, or a buffer too small */
    FCGATE_EDB = -5,       /* database error (details in the error log) */
    FCGATE_ETIMEDOUT = -6, /* a wait ran out of time */
    FCGATE_ECLOSED = -7,   /* the client went away; stop working on the request */
    FCGATE_EUNAVAIL = -8,  /* ABI 1.1: the database cannot be reached now (connection failed
                              or lost, no free connection in time); try again later: 503 */
};

/* Levels for fcgate_log, in syslog order. */
enum fcgate_log_level {
    FCGATE_LOG_ERROR = 3,
    FCGATE_LOG_WARN = 4,
    FCGATE_LOG_INFO = 6,
    FCGATE_LOG_DEBUG = 7,
};

#if defined(__GNUC__)
#define FCGATE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FCGATE_PRINTF(f, a)
#endif

/* A static English description of a status; never NULL. Any thread. */
const char *fcgate_strerror(int status);

/* The daemon's version string, e.g. "0.1.0". Any thread. */
const char *fcgate_version(void);

/* ---- the request. Strings are borrowed until handle() returns. ---- */

/* "GET", "POST", ...: REQUEST_METHOD; "" if nginx sent none. */
const char *fcgate_method(fcgate_req *r);

/* The URL path, percent-decoded, without the query: from REQUEST_URI,
 * else DOCUMENT_URI, else SCRIPT_NAME + PATH_INFO. Never NULL. */
const char *fcgate_path(fcgate_req *r);

/* The raw query string (QUERY_STRING), "" when there is none. */
const char *fcgate_query(fcgate_req *r);

/* Any FastCGI parameter by exact name ("REMOTE_ADDR"), NULL if absent. */
const char *fcgate_param(fcgate_req *r, const char *name);

/* An HTTP request header by name, case-insensitive ("Content-Type",
 * "X-Foo"): CONTENT_TYPE, CONTENT_LENGTH or HTTP_*; NULL if absent. */
const char *fcgate_header(fcgate_req *r, const char *name);

/* The first query value for `key`, URL-decoded ('+' is a space) into buf,
 * NUL-terminated. Returns its length (>= 0), FCGATE_EINVAL when the key
 * is absent, FCGATE_ETOOBIG when buf (len bytes) is too small. */
int fcgate_query_value(fcgate_req *r, const char *key, char *buf, size_t len);

/* Copies up to len body bytes into buf; returns how many, 0 at the end of
 * the body, FCGATE_ETOOBIG if the body was over limits.max_body_bytes
 * (it was discarded). fcgate has read the whole body before handle(). */
long fcgate_read(fcgate_req *r, void *buf, size_t len);

/* The whole body, borrowed until handle() returns (NUL-terminated for
 * convenience; *len excludes the NUL). FCGATE_ETOOBIG over the limit. */
int fcgate_read_all(fcgate_req *r, const char **body, size_t *len);

/* ---- the response. Headers go out with the first body byte; until then
 * status and headers may change. A response with a body and without a
 * Content-Type gets text/plain. ---- */

/* 100..599; FCGATE_EINVAL otherwise or once headers went out. */
int fcgate_set_status(fcgate_req *r, int code);

/* Adds a response header. Names are tokens; CR and LF are refused in both
 * (FCGATE_EINVAL), as is any call once headers went out. */
int fcgate_add_header(fcgate_req *r, const char *name, const char *value);

/* Appends body bytes. Buffered: output is sent in large records, and a
 * response that is complete when handle() returns gets a Content-Length.
 * FCGATE_ECLOSED once the client is gone. */
int fcgate_write(fcgate_req *r, const void *buf, size_t len);

/* fcgate_write of a formatted string. */
int fcgate_printf(fcgate_req *r, const char *fmt, ...) FCGATE_PRINTF(2, 3);

/* ---- waiting. Blocks in sync and threads mode; yields to the event loop
 * in async mode. ---- */

/* Runs fn(db, arg) on this worker's database connection for the calling
 * thread (async mode: on a blocking thread, while the request waits) and
 * returns what fn returned. fn must return FCGATE_OK or a FCGATE_E*
 * status; it must not use r (it may run on another thread), but may call
 * fcgate_log(NULL, ...). fcgate_db does not log fn's failures. A
 * transaction fn leaves open is rolled back; cached statements are reset.
 * If fn returns a failure while the connection's extended error code is
 * SQLITE_BUSY_SNAPSHOT (a read transaction that tried to write after
 * another commit), the whole call is retried, up to 5 times, so fn must be
 * safe to run again. FCGATE_EINVAL if the worker has no database. */
int fcgate_db(fcgate_req *r, int (*fn)(sqlite3 *db, void *arg), void *arg);

/* A prepared statement for sql on db, from the connection's cache
 * (prepared once, persistent); reset and with cleared bindings. Only
 * inside an fcgate_db / fcgate_host_db callback, on the db it was given;
 * never finalize it. It stays valid until that callback returns, however
 * many other statements the callback prepares (asking again for the same
 * sql hands out the same statement, reset). NULL on a prepare error
 * (logged). */
sqlite3_stmt *fcgate_stmt(sqlite3 *db, const char *sql);

/* Waits ms milliseconds. FCGATE_OK. */
int fcgate_sleep(fcgate_req *r, unsigned ms);

/* Waits until fd is ready for `events` (POLLIN, POLLOUT) or timeout_ms
 * passes (-1: no limit). FCGATE_OK when ready, FCGATE_ETIMEDOUT. */
int fcgate_wait_fd(fcgate_req *r, int fd, short events, int timeout_ms);

/* A line to the error log, tagged with the module name, method and path.
 * r may be NULL outside a request. Any thread. */
void fcgate_log(fcgate_req *r, int level, const char *fmt, ...) FCGATE_PRINTF(3, 4);

/* ---- the host: from init to fini. ---- */

/* A value from the config's app.settings group, as a string (numbers and
 * booleans are converted); NULL if absent. */
const char *fcgate_setting(const fcgate_host *h, const char *name);

/* Like fcgate_db, for init(): creates the schema, warms caches. Runs on the
 * calling thread's connection. */
int fcgate_host_db(const fcgate_host *h, int (*fn)(sqlite3 *db, void *arg), void *arg);

/* ---- PostgreSQL (ABI 1.1). app.postgres names the server; each worker
 * keeps its own connections (never shared across fork). In sync and
 * threads mode each serving thread has its own connection; in async mode
 * the worker's requests share app.postgres_pool connections, driven
 * non-blocking by the event loop (a query is one more socket it waits
 * on), and a request waits for a free one up to
 * app.postgres_pool_timeout. In every mode a query is bounded by the
 * request's `timeout` (without one, by io_timeout): past it the query is
 * cancelled on the server (PQcancel), the connection cleaned before its
 * next use, and the request answered 504. A connection found broken
 * (server restart, network cut) is dropped and replaced on next use;
 * the request that hit it gets FCGATE_EUNAVAIL.
 *
 * Parameters are text ($1, $2, ...; NULL for SQL NULL), results text.
 * With app.postgres_prepare (the default) each SQL text is prepared once
 * per connection and run as a prepared statement after; turn it off
 * behind pgbouncer's transaction pooling.
 *
 * *res (when res is not NULL) receives the result whenever the server
 * sent one, an error included (PQresultErrorField(*res, PG_DIAG_SQLSTATE)
 * tells a unique violation from the rest); the caller PQclear()s it.
 * It is NULL otherwise. Returns FCGATE_OK (PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK), FCGATE_EDB (the statement failed: logged at debug
 * level only, the app decides), FCGATE_EUNAVAIL, FCGATE_ETIMEDOUT,
 * FCGATE_ENOMEM, or FCGATE_EINVAL when app.postgres is not set (logged). */

/* A connection pinned to one transaction; valid inside its callback. */
typedef struct fcgate_pg fcgate_pg;

/* 1 if app.postgres is set, so the module may pick its store by config. */
int fcgate_pg_configured(const fcgate_host *h);

/* One statement on a connection of the pool, outside any transaction
 * (it commits on its own). */
int fcgate_pg_query(fcgate_req *r, PGresult **res, const char *sql, int nparams,
                    const char *const *params);

/* BEGIN, fn(tx, arg), then COMMIT when fn returns FCGATE_OK, else
 * ROLLBACK; every fcgate_pg_exec(tx, ...) inside runs on the same
 * connection. fn runs on the request's thread and may use the request;
 * it must not keep tx. Returns fn's failure, or FCGATE_EDB when COMMIT
 * failed (a serialization failure: the whole call may be retried). A
 * request over `timeout` inside it is rolled back. */
int fcgate_pg_transaction(fcgate_req *r, int (*fn)(fcgate_pg *tx, void *arg), void *arg);

/* One statement inside fcgate_pg_transaction's or fcgate_host_pg's
 * callback. After a failure the transaction is aborted on the server:
 * return the failure from fn. */
int fcgate_pg_exec(fcgate_pg *tx, PGresult **res, const char *sql, int nparams,
                   const char *const *params);

/* fcgate_pg_transaction for init(): creates the schema (take an advisory
 * lock first: every worker runs init). Blocks, bounded by io_timeout. */
int fcgate_host_pg(const fcgate_host *h, int (*fn)(fcgate_pg *tx, void *arg), void *arg);

/* ---- the module ---- */

#define FCGATE_APP_THREADSAFE 1u /* handle() may run on several threads at once */

struct fcgate_app {                /* exported as `fcgate_app_module` */
    uint32_t magic;                /* FCGATE_APP_MAGIC */
    uint16_t abi_major, abi_minor; /* FCGATE_ABI_MAJOR / MINOR it was built with */
    uint32_t size;                 /* sizeof(struct fcgate_app), for growth */
    const char *name;              /* short name for logs */
    unsigned flags;                /* FCGATE_APP_THREADSAFE */
    /* Per worker, after fork, before any request. Non-zero fails the
     * worker; fcgate then exits with the logged message rather than
     * respawning forever. *ctx is handed to handle and fini. */
    int (*init)(const fcgate_host *h, void **ctx);
    /* One request. Non-zero is logged, and answered 500 if nothing was
     * sent yet. A response already started (its head went out with the
     * first 64 KiB written) is cut off instead: the client behind nginx
     * sees it end early (a short body, an unfinished chunked encoding),
     * never a truncated body that looks complete. The same goes for a
     * request over `timeout` in async mode (504 if nothing was sent). */
    int (*handle)(void *ctx, fcgate_req *r);
    /* At worker exit; may be NULL. */
    void (*fini)(void *ctx);
    void *reserved[4];
};

#if defined(__GNUC__)
#define FCGATE_EXPORT __attribute__((visibility("default")))
#else
#define FCGATE_EXPORT
#endif

/* FCGATE_APP(.name = "notes", .init = notes_init, .handle = notes_handle);
 * defines the exported module record; fills magic, ABI and size. */
#define FCGATE_APP(...)                                                                            \
    extern FCGATE_EXPORT const struct fcgate_app fcgate_app_module;                                \
    FCGATE_EXPORT const struct fcgate_app fcgate_app_module = {.magic = FCGATE_APP_MAGIC,          \
                                                               .abi_major = FCGATE_ABI_MAJOR,      \
                                                               .abi_minor = FCGATE_ABI_MINOR,      \
                                                               .size = sizeof(struct fcgate_app),  \
                                                               __VA_ARGS__}

#ifdef __cplusplus
}
#endif
#endif

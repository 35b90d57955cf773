/*
 * fcgate.h - the daemon's private interfaces, one banner per file.
 */
#ifndef FCGATE_FCGATE_H
#define FCGATE_FCGATE_H

#include "app_loader.h"
#include "config.h"
#include "fcgi_codec.h"
#include "handoff.h"
#include <fcgate/app.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

/* A worker's limits, answered to FCGI_GET_VALUES and used by engines. */
struct codec_limits worker_codec_limits(const struct config *cfg);

/* scoreboard.c: shared memory, written lock-free by workers, read by the
 * supervisor. One slot per serving thread (workers x threads). */
struct score_slot {
    _Atomic pid_t pid;           /* set once the worker is ready */
    _Atomic unsigned generation; /* the config generation it serves */
    _Atomic unsigned active;     /* requests in progress (async: all its coroutines') */
    _Atomic uint64_t requests;   /* served by this slot's thread */
    _Atomic uint64_t start_ms;   /* CLOCK_MONOTONIC ms of the current request, 0: idle */
    _Atomic uint64_t heartbeat_ms;
    _Atomic int crashed; /* set by the fatal-signal handler of its thread */
    char method[12];     /* of the current request; racy reads are tolerated */
    char path[116];
};

struct scoreboard {
    struct score_slot *slots;
    size_t nslots, per_worker;
};

int scoreboard_create(struct scoreboard *sb, size_t workers, size_t per_worker);
void scoreboard_destroy(struct scoreboard *sb);
struct score_slot *scoreboard_slot(const struct scoreboard *sb, size_t worker, size_t thread);
void scoreboard_begin(struct score_slot *s, const char *method, const char *path);
void scoreboard_end(struct score_slot *s);
/* Not running a request now (async: the loop left a coroutine). */
void scoreboard_idle(struct score_slot *s);
uint64_t monotonic_ms(void);
uint64_t monotonic_us(void);

/* db.c: one sqlite connection per thread, opened lazily after fork. */
void db_configure(const char *path);
int db_run(int (*fn)(sqlite3 *db, void *arg), void *arg);
void db_close_thread(void);

/* The runtime behind the app's fcgate_host handle. */
struct fcgate_host {
    const struct config *cfg;
};

/* worker.c */
struct worker {
    const struct config *cfg;
    struct app_module mod;
    void *app_ctx;
    const int *listen_fds;
    size_t nlisten;
    size_t index; /* worker number, 0-based */
    struct scoreboard *sb;
    int stop_fd; /* eventfd, readable once the worker is stopping */
    atomic_int stopping;
    atomic_long served;
    atomic_long handed_over; /* idle connections passed on while stopping */
    long max_requests;       /* 0: unlimited; this worker's share with jitter */
    unsigned generation;
    struct codec_limits limits;
    /* Blocking engines: idle kept-alive connections wait here, in an epoll
     * set of their own, instead of holding a serving thread. */
    int park_ep;
    pthread_mutex_t park_mu;
    struct conn *parked;
    struct conn *left;             /* handed over while parked: freed at exit */
    atomic_int draining;           /* stopping: the DRAIN_* steps of engine_sync.c done */
    const struct handoff *handoff; /* where idle connections go on retiring */
};

/* A worker that could not start (module, init, privileges) exits so. */
#define WORKER_EXIT_BOOT 3

/* The uid and gid of cfg->user / cfg->group (set). 0, or -1 (logged). */
int worker_ids(const struct config *cfg, uid_t *uid, gid_t *gid);

/* Runs in the child after fork; never returns. */
void worker_main(struct worker *w) __attribute__((noreturn));
/* Asks the worker to stop after its current requests (any thread). */
void worker_stop(struct worker *w);
/* The calling thread serves through slot: a crash on it (SIGSEGV, also
 * on a stack overflow, through an alternate signal stack) marks the slot
 * so the supervisor blames the right request. */
void worker_thread_init(struct score_slot *slot);
void worker_thread_fini(void);
/* Acts on signals recorded by handlers (USR1: reopen logs). */
void worker_poll_signals(void);
/* Counts one served request; stops the worker at max_requests. */
void worker_count_request(struct worker *w);

/* conn.c: one FastCGI connection, driven by the codec, with I/O through
 * the engine's functions (blocking, or yielding in async mode). */
struct conn;
#define CONN_READ_STOP (-2) /* idle, and the worker is stopping: hand over or close */
#define CONN_READ_PARK (-3) /* idle, no bytes yet: park the connection */
/* What a read waits for: the rest of a request, or the next one. A
 * stopping worker hands its idle connections over to a worker that stays
 * (handoff.h). Without one to hand to, it closes kept-alive connections
 * between requests, but serves the first request of a connection it has
 * accepted: nginx opened it to send one, and may already be sending. */
enum conn_idle { CONN_BUSY = 0, CONN_IDLE_FRESH, CONN_IDLE_KEPT };
struct conn_io {
    /* Up to len bytes into buf: >0, 0 at EOF, -1 on error; when idle
     * (enum conn_idle) also CONN_READ_PARK, and CONN_READ_STOP when
     * conn_stop_idle() says so. */
    ssize_t (*read)(struct conn *c, void *buf, size_t len, int idle);
    /* All of buf, or -1 (peer gone). */
    int (*write)(struct conn *c, const void *buf, size_t len);
    int (*sleep)(struct conn *c, unsigned ms);
    int (*wait_fd)(struct conn *c, int fd, short events, int timeout_ms);
    int (*db)(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg);
};

struct conn {
    int fd;
    struct worker *w;
    struct score_slot *slot;
    const struct conn_io *io;
    void *engine; /* the engine's own per-connection state */
    struct codec codec;
    struct codec_buf wire;              /* records on their way out, reused */
    struct codec_buf head;              /* the response head being built, reused */
    const char *method, *path;          /* of the request running, for logs */
    char what[128];                     /* "METHOD /path" of the last request started */
    uint64_t req_start_ms;              /* when the running request started */
    int cancelled;                      /* async: over `timeout`; its waits fail */
    int all_read;                       /* closing: the peer sent nothing more (conn_close) */
    unsigned long served;               /* requests answered on this connection */
    struct conn *park_prev, *park_next; /* blocking engines' parked list */
    int parked;                         /* on it (under the worker's park_mu) */
};

enum conn_result { CONN_CLOSED, CONN_PARKED, CONN_HANDED_OFF };
#define CONN_ACCEPT_NOFD (-2)
/* accept4 (close-on-exec, plus flags): the fd; -1 when there was nothing
 * to take; CONN_ACCEPT_NOFD when out of descriptors (logged: pause). */
int conn_accept(int lfd, int flags);
/* Prepares c (fd, w, io set) for conn_serve. */
void conn_init(struct conn *c);
/* Serves requests on c->fd until the peer closes, an error, or the worker
 * stops; then shuts the socket down, closes it and frees c's buffers:
 * CONN_CLOSED. CONN_PARKED when the engine's read asked to park an idle
 * connection: call conn_serve again once the socket is readable. */
enum conn_result conn_serve(struct conn *c);
/* Closes an idle (parked) connection and frees its buffers. */
void conn_discard(struct conn *c);
/* The worker is stopping and c, idle in state idle (enum conn_idle), is to
 * leave now: always when kept alive, and a fresh one when it can be
 * handed over (it must not be closed before its first request). */
int conn_stop_idle(const struct conn *c, int idle);
/* A stopping worker, its listen sockets and the hand-over pair out of its
 * epoll set, passes on the connections that may have woken it. */
void conn_pass_on_pending(struct worker *w);
/* An idle connection leaves a stopping worker: handed over to a serving
 * worker when possible (CONN_HANDED_OFF), else closed (CONN_CLOSED). Frees
 * c's buffers either way. */
enum conn_result conn_leave(struct conn *c);

/* request.c: the fcgate_req behind the app API. */
struct request_body {
    struct codec_buf buf;
    size_t limit;
    int too_big;
};
/* Runs the app on a complete request; writes the response and END_REQUEST.
 * -1 when the peer is gone (the connection is to be closed). */
int request_run(struct conn *c, uint16_t id, struct request_body *body);

/* engine_sync.c / engine_threads.c: serve until stopping. */
void engine_sync_run(struct worker *w);
void engine_threads_run(struct worker *w);
void engine_async_run(struct worker *w);
/* The accept loop of one serving thread (shared by sync and threads). */
void engine_sync_thread(struct worker *w, struct score_slot *slot);
/* Sets up / tears down the parking set (closing what is parked). */
int engine_sync_park_init(struct worker *w);
void engine_sync_park_fini(struct worker *w);

/* supervisor.c */
/* Builds the configuration afresh (file + command line) for a reload.
 * 0, or the number of errors added to errs. */
typedef int (*supervisor_reload_fn)(struct config *out, struct config_errors *errs);
/* Serves until stopped; the exit status for main. Takes over cfg. */
int supervisor_run(struct config *cfg, supervisor_reload_fn reload, char **argv);

#endif

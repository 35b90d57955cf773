/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fcgate.h - the daemon's private interfaces, one banner per file.
 *
 * The files are layers; each uses only the ones listed before it:
 *
 *   scoreboard.c db.c pg.c stack.c (and the leaves: codec, config, log, ...)
 *   request.c    one request behind the app API; knows no socket
 *   conn.c       one FastCGI connection: bytes, codec, requests
 *   intake.c     where connections come from: listen sockets, hand-over
 *   drain.c      counting, recycling, and how a stopping worker lets go
 *   engine_sync.c engine_async.c   the modes' serving loops
 *   engine.c     the table of modes
 *   worker.c     a worker process: privileges, the module, the engine
 *   status.c     the status process: conn.c and the scoreboards, no app
 *   cli.c        `fcgate status`: a FastCGI client of the status socket
 *   policy.c     the supervisor's decisions, pure
 *   supervisor.c the master process
 *
 * Lower layers return codes; the layer above decides (nothing calls up).
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
#include <sys/epoll.h>
#include <sys/types.h>

/* scoreboard.c: shared memory, written lock-free by workers, read by the
 * supervisor. One slot per serving thread (workers x slots per worker). */
#define SCORE_CLASSES 5  /* status classes 1xx..5xx */
#define SCORE_BUCKETS 12 /* duration histogram: the bounds below, then +Inf */
/* Upper bounds of the duration buckets, microseconds (Prometheus's
 * default buckets, 5 ms .. 10 s). */
extern const uint64_t scoreboard_bucket_us[SCORE_BUCKETS - 1];
struct score_slot {
    _Atomic pid_t pid;             /* set once the worker is ready */
    _Atomic unsigned generation;   /* the config generation it serves */
    _Atomic unsigned active;       /* requests in progress (async: all its coroutines') */
    _Atomic uint64_t requests;     /* served by this slot's thread */
    _Atomic uint64_t start_ms;     /* CLOCK_MONOTONIC ms of the current request, 0: idle */
    _Atomic uint64_t heartbeat_ms; /* the thread was last seen alive, idle or busy */
    _Atomic int crashed;           /* set by the fatal-signal handler of its thread */
    _Atomic int cancel;   /* the supervisor gave up on its request: answer it 504 if still can */
    _Atomic int stopping; /* the supervisor told its worker to stop (set by the supervisor) */
    /* Counters for the status page, never reset while the generation
     * lives (a respawned worker adds to its row's), so they only rise. */
    _Atomic uint64_t by_class[SCORE_CLASSES];    /* answered 1xx..5xx */
    _Atomic uint64_t duration_le[SCORE_BUCKETS]; /* per bucket, not cumulative */
    _Atomic uint64_t duration_us;                /* sum of all durations */
    _Atomic pid_t tid;        /* the thread serving through it (gettid), 0: none */
    _Atomic uint64_t slow_ms; /* start_ms of the request the slow log has seen */
    /* How long requests waited before this thread read them (from the
     * X-Request-Start parameter nginx adds; requests without it are not
     * counted), and those answered 503 for waiting past queue_timeout. */
    _Atomic uint64_t queue_le[SCORE_BUCKETS]; /* per bucket, not cumulative */
    _Atomic uint64_t queue_us;
    _Atomic uint64_t queue_rejected;
    char method[12]; /* of the current request; racy reads are tolerated */
    char path[116];
};

/* A stack asked of one thread of a worker (stack.c): the supervisor sets
 * tid, bumps asked and signals the thread (SIG_STACK); the thread's
 * handler writes text and sets done to asked. One per worker. */
#define STACK_TEXT 4096
struct score_stack {
    _Atomic pid_t tid;
    _Atomic unsigned asked, done;
    char text[STACK_TEXT]; /* "#0 0xADDR function+0xOFF (object)" lines */
};
#define SIG_STACK (SIGRTMIN + 4)

struct scoreboard {
    struct score_slot *slots;
    struct score_stack *stacks; /* one per worker row */
    size_t nslots, per_worker;
};

int scoreboard_create(struct scoreboard *sb, size_t workers, size_t per_worker);
void scoreboard_destroy(struct scoreboard *sb);
struct score_slot *scoreboard_slot(const struct scoreboard *sb, size_t worker, size_t thread);
struct score_stack *scoreboard_stack(const struct scoreboard *sb, size_t worker);
void scoreboard_begin(struct score_slot *s, const char *method, const char *path);
/* The request ended with HTTP status and took duration_us. */
void scoreboard_end(struct score_slot *s, int status, uint64_t duration_us);
/* The request had waited wait_us before it was read; rejected: answered
 * 503 for it (queue_timeout). */
void scoreboard_queued(struct score_slot *s, uint64_t wait_us, int rejected);

/* What outlives workers and generations, in one shared mapping: written by
 * the supervisor, read by the status process. */
enum {
    RESTART_CRASH,
    RESTART_TIMEOUT,
    RESTART_RECYCLE,
    RESTART_RELOAD,
    RESTART_MEMORY, /* over max_memory: replaced first, then retired */
    RESTART_REASONS
};
/* Why the pool grew or shrank (pm dynamic, ondemand; memory in any pm). */
enum pool_spawn {
    SPAWN_FLOOR,  /* below min_workers (start, after a crash) */
    SPAWN_LOAD,   /* the share of busy slots stayed high */
    SPAWN_QUEUE,  /* connections waited in the listen queue */
    SPAWN_MEMORY, /* the replacement of a worker over max_memory */
    SPAWN_REASONS
};
enum pool_retire {
    RETIRE_IDLE,   /* idle past idle_timeout */
    RETIRE_BOUND,  /* above max_workers (TTOU) */
    RETIRE_MEMORY, /* over max_memory */
    RETIRE_REASONS
};
struct score_totals {
    _Atomic uint64_t restarts[RESTART_REASONS];
    _Atomic uint64_t spawns[SPAWN_REASONS];
    _Atomic uint64_t retirements[RETIRE_REASONS];
    _Atomic uint64_t timeouts; /* requests or threads found over `timeout` */
    /* The counters of generations already freed, so totals never fall. */
    _Atomic uint64_t requests;
    _Atomic uint64_t by_class[SCORE_CLASSES];
    _Atomic uint64_t duration_le[SCORE_BUCKETS];
    _Atomic uint64_t duration_us;
    _Atomic uint64_t queue_le[SCORE_BUCKETS];
    _Atomic uint64_t queue_us;
    _Atomic uint64_t queue_rejected;
    /* The pool as the supervisor sizes it now (bounds move with TTIN/TTOU). */
    _Atomic int pool_min, pool_max;
};
/* NULL on failure (errno). */
struct score_totals *scoreboard_totals_create(void);
void scoreboard_totals_destroy(struct score_totals *t);
/* Adds sb's request counters to t (sb is about to be freed). */
void scoreboard_totals_absorb(struct score_totals *t, const struct scoreboard *sb);
/* Not running a request now (async: the loop left a coroutine). */
void scoreboard_idle(struct score_slot *s);
/* The thread is alive (at least once a second while it serves). */
void scoreboard_beat(struct score_slot *s);
/* The calling thread serves through slot: a crash on it (SIGSEGV, also on
 * a stack overflow, through an alternate signal stack) marks the slot, so
 * the supervisor blames the right request. */
void scoreboard_thread_enter(struct score_slot *slot, struct score_stack *stack);
void scoreboard_thread_leave(void);
/* The SIG_STACK handler: the calling thread's stack into its worker's
 * score_stack, if it is the thread asked. */
void scoreboard_stack_signal(int sig, siginfo_t *si, void *ucontext);

/* stack.c: symbolized stacks from inside the thread. stack_load reads the
 * symbol tables of the objects loaded now that an earlier call has not
 * read (module_path, if not NULL, names the app module, loaded from a
 * memfd): the supervisor calls it before forking, a worker after loading
 * its module. stack_capture is async-signal-safe: the frames from the
 * interrupted instruction (ucontext) down, one per line, into buf.
 * Returns the length written. */
void stack_load(const char *module_path);
size_t stack_capture(char *buf, size_t cap, const void *ucontext);
/* The guard page of the coroutine stack the thread runs on now (async),
 * NULL between coroutines: a fault there is a stack overflow. */
void scoreboard_thread_guard(const void *lo, const void *hi);
/* From a fatal-signal handler: marks the calling thread's slot,
 * SLOT_OVERFLOWED when the faulting address is in the guard page. */
void scoreboard_thread_crashed(const void *fault_addr);
enum { SLOT_CRASHED = 1, SLOT_OVERFLOWED = 2 };
uint64_t monotonic_ms(void);
uint64_t monotonic_us(void);
/* Until fd is ready for events (poll), at most timeout_ms (< 0: no
 * limit), through interruptions (for the time left): FCGATE_OK,
 * FCGATE_ETIMEDOUT or FCGATE_EIO. */
int fd_wait(int fd, short events, int timeout_ms);

/* sockdiag.c: a listen socket's accept queue, as the kernel counts it. */
struct sockdiag_queue {
    long queue;     /* connections waiting to be accepted */
    long max_queue; /* the backlog the socket listens with */
};
/* Any listening socket (unix, TCP): 0, or -1 (errno). About 50 µs. */
int sockdiag_queue(int fd, struct sockdiag_queue *out);
enum { SOCKDIAG_ERROR = -1, SOCKDIAG_MORE, SOCKDIAG_FOUND, SOCKDIAG_DONE };
/* Pure: the sock_diag dump request for listening unix sockets, with their
 * queue lengths, into buf; its length (0: len too small). */
size_t sockdiag_unix_request(void *buf, size_t len, uint32_t seq);
/* Pure: looks for socket inode ino in one netlink reply: SOCKDIAG_FOUND
 * (out filled), SOCKDIAG_MORE (read the next reply), SOCKDIAG_DONE (the
 * dump ended without it) or SOCKDIAG_ERROR. */
int sockdiag_unix_parse(const void *buf, size_t len, uint32_t ino, struct sockdiag_queue *out);

/* status_page.c: the status page rendered from a snapshot. Pure: the
 * status process fills the snapshot, these functions only format it. */
enum status_state { STATE_IDLE, STATE_BUSY, STATE_STOPPING, STATE_COUNT };
struct status_slot {
    pid_t pid;
    unsigned generation;
    size_t worker, thread;
    enum status_state state;
    uint64_t requests;
    unsigned active;     /* requests in progress (async: the worker's coroutines) */
    char what[140];      /* "METHOD /path" running, "" when idle */
    uint64_t running_ms; /* how long it has run */
    uint64_t rss_bytes;  /* of its process; 0: unknown */
};
struct status_listen {
    char address[128];
    long queue, max_queue; /* -1: unknown */
};
struct status_snapshot {
    const char *version, *mode;
    pid_t supervisor;
    unsigned generation; /* the current one */
    uint64_t uptime_s;
    int workers_configured;
    size_t workers[STATE_COUNT]; /* worker processes by state: busy if any thread is */
    size_t ready;                /* workers of the current generation not stopping */
    uint64_t requests_total;
    uint64_t by_class[SCORE_CLASSES];
    uint64_t duration_le[SCORE_BUCKETS];
    uint64_t duration_us;
    uint64_t restarts[RESTART_REASONS];
    uint64_t timeouts;
    const char *pm;               /* "static", "dynamic", "ondemand" */
    int min_workers, max_workers; /* the pool's bounds now */
    int idle_timeout;             /* s */
    double queue_timeout;         /* s, 0: off */
    uint64_t max_memory;          /* bytes, 0: off */
    uint64_t spawns[SPAWN_REASONS];
    uint64_t retirements[RETIRE_REASONS];
    uint64_t queue_rejected;
    uint64_t queue_le[SCORE_BUCKETS]; /* the wait before a worker read a request */
    uint64_t queue_us;
    struct status_listen listen[CONFIG_MAX_LISTEN];
    size_t nlisten;
    struct status_slot *slots; /* every live thread slot, worker by worker */
    size_t nslots;
};
enum status_format { STATUS_TEXT, STATUS_JSON, STATUS_OPENMETRICS, STATUS_HTML };
/* From the query string ("json", "openmetrics", "full", combined with
 * '&') and the HTTP Accept header (may be NULL). *full for ?full. */
enum status_format status_page_format(const char *query, const char *accept, int *full);
const char *status_page_content_type(enum status_format f);
const char *status_state_name(enum status_state s);
/* Appends the page to out: 0, or -1 (out of memory). */
int status_page_render(struct codec_buf *out, const struct status_snapshot *s, enum status_format f,
                       int full);

/* proc.c: another process as /proc shows it. */
/* Its state letter ('R', 'S', 'T' stopped, 'Z' zombie, ...); 0: gone. */
char proc_state(pid_t pid);
/* Its resident set in bytes; 0: gone. */
uint64_t proc_rss(pid_t pid);
/* Its proportional set (smaps_rollup) in bytes, *pss set; the resident
 * set where that cannot be read (*pss 0); 0: gone. */
uint64_t proc_memory(pid_t pid, int *pss);

/* db.c: one sqlite connection per thread, opened lazily after fork. */
void db_configure(const char *path);
int db_run(int (*fn)(sqlite3 *db, void *arg), void *arg);
void db_close_thread(void);

/* pg.c: PostgreSQL through libpq, non-blocking; a pool per thread that
 * runs requests (async: the loop's, shared by its coroutines). */
struct pg_settings {
    const char *conninfo; /* NULL or "": no PostgreSQL */
    int pool;             /* connections per pool */
    int pool_timeout_s;   /* a request waits this long for a free one */
    int prepare;          /* cache prepared statements per connection */
    int io_timeout_ms;    /* bounds a connect, and a query without a request deadline */
};
/* How a pool waits: the engine's fd wait for a request, poll() without. */
struct pg_wait {
    /* fd ready for events within timeout_ms: FCGATE_OK, else FCGATE_ETIMEDOUT
     * (also: the request was cancelled) or another failure. */
    int (*fn)(void *ctx, int fd, short events, int timeout_ms);
    void *ctx;
    uint64_t deadline_ms; /* monotonic; the request's queries end by then; 0: none */
    /* NULL, or the engine's park: sleeps until unpark(ctx) from another
     * request of the same thread, FCGATE_OK; FCGATE_ETIMEDOUT when
     * timeout_ms pass first (or the request was cancelled). */
    int (*park)(void *ctx, int timeout_ms);
    void (*unpark)(void *ctx);
};
void pg_configure(const struct pg_settings *s);
int pg_enabled(void);
/* w NULL: blocks (init). The app API's contracts (app.h). */
int pg_query(const struct pg_wait *w, PGresult **res, const char *sql, int nparams,
             const char *const *params);
int pg_transaction(const struct pg_wait *w, int (*fn)(fcgate_pg *tx, void *arg), void *arg);
/* Closes the calling thread's connections. */
void pg_close_thread(void);

/* The runtime behind the app's fcgate_host handle. */
struct fcgate_host {
    const struct config *cfg;
};

/* request.c: one request, the fcgate_req behind the app API. It knows no
 * socket, connection or worker: a req_chan says how to write and wait. */
struct req_chan;
struct req_io {
    /* All of buf, or -1 (the peer is gone). */
    int (*write)(struct req_chan *ch, const void *buf, size_t len);
    int (*sleep)(struct req_chan *ch, unsigned ms);
    int (*wait_fd)(struct req_chan *ch, int fd, short events, int timeout_ms);
    int (*db)(struct req_chan *ch, int (*fn)(sqlite3 *db, void *arg), void *arg);
    /* NULL where the engine runs one request per thread: nobody could
     * wake it. Else the request sleeps until another request of its
     * thread calls unpark on it (FCGATE_OK) or timeout_ms pass, or it is
     * cancelled (FCGATE_ETIMEDOUT). */
    int (*park)(struct req_chan *ch, int timeout_ms);
    void (*unpark)(struct req_chan *ch);
};

/* What requests run: one per worker. */
struct req_app {
    const struct fcgate_app *app;
    void *ctx;
    const char *access_format;      /* NULL: LOG_ACCESS_FORMAT_DEFAULT */
    unsigned long queue_timeout_ms; /* 0: never answer 503 for a long wait */
    int timeout_ms; /* `timeout`: a request's database waits end before it; 0: none */
};

/* The side of a connection a request sees. */
struct req_chan {
    const struct req_io *io;
    const struct req_app *app;
    struct codec codec;        /* the request's params */
    struct codec_buf wire;     /* records on their way out, reused */
    struct codec_buf head;     /* the response head being built, reused */
    struct score_slot *slot;   /* NULL: not on the scoreboard */
    const char *method, *path; /* of the request running, NULL between requests */
    char what[128];            /* "METHOD /path" of the last request started */
    uint64_t start_ms;         /* when the running request started */
    int cancelled;             /* over `timeout` (async): its waits fail */
    /* Who may write the running request's response: REQ_NONE between
     * requests; REQ_UNSENT until its first byte goes out; then REQ_SENT
     * (the handler's thread), or REQ_RESCUED (another thread answered
     * for a handler that overran, conn_rescue). */
    atomic_int claim;
    _Atomic uint16_t claim_id; /* the running request's id, for a rescue */
};
enum { REQ_NONE, REQ_UNSENT, REQ_SENT, REQ_RESCUING, REQ_RESCUED };

struct request_body {
    struct codec_buf buf;
    size_t limit;
    int too_big;
};

/* Pure: an X-Request-Start value ("t=1700000000.123", seconds with a
 * fraction, or whole milliseconds, microseconds or nanoseconds, told apart
 * by magnitude as APM agents do) as microseconds since the epoch. 0, or
 * -1 when it is none of these. */
int request_start_us(const char *v, uint64_t *out);

enum req_result { REQ_ANSWERED, REQ_PEER_GONE };
/* Runs the app on a complete request; writes the response and END_REQUEST. */
enum req_result request_run(struct req_chan *ch, uint16_t id, struct request_body *body);

/* conn.c: one FastCGI connection, driven by the codec. Reads and writes
 * never block: when the socket is not ready, the engine's wait decides
 * what waiting means (block the thread, or switch coroutines). */
struct conn;
enum conn_wait { CONN_WAIT_READY, CONN_WAIT_TIMEOUT, CONN_WAIT_FAILED };
struct conn_ops {
    /* Until fd is ready for events (POLLIN / POLLOUT), at most
     * timeout_ms: CONN_WAIT_READY, CONN_WAIT_TIMEOUT, or CONN_WAIT_FAILED
     * to give up on the connection (error, cancelled). */
    enum conn_wait (*wait)(struct conn *c, short events, int timeout_ms);
    int (*sleep)(struct conn *c, unsigned ms);
    int (*wait_fd)(struct conn *c, int fd, short events, int timeout_ms);
    int (*db)(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg);
    /* req_io's park and unpark; NULL both where requests never share a
     * thread. */
    int (*park)(struct conn *c, int timeout_ms);
    void (*unpark)(struct conn *c);
    /* The socket leaves this process while it lives on in another
     * (handed over): out of the engine's epoll set, or its events would
     * keep coming here. NULL: nothing to do. */
    void (*unwatch)(struct conn *c);
};

/* What every connection of a worker shares. */
struct conn_env {
    struct codec_limits limits;
    size_t max_body_bytes;
    int io_timeout_ms;        /* without progress inside a request, or before the first */
    int keepalive_timeout_ms; /* idle between requests */
    struct req_app app;
};

struct conn {
    int fd;
    const struct conn_ops *ops;
    const struct conn_env *env;
    struct req_chan ch;
    uint8_t *rbuf; /* received, not yet decoded: rbuf[roff..rhave) */
    size_t roff, rhave;
    struct request_body body;
    int all_read;         /* closing: the peer sent nothing more (conn_close) */
    unsigned long served; /* requests answered on this connection */
};

enum conn_result {
    CONN_SERVED, /* a request was answered and the connection stays: serve on */
    CONN_IDLE,   /* between requests, nothing received: wait until readable */
    CONN_CLOSED, /* closed (peer, error, protocol): fd closed, buffers freed */
};

/* Prepares c for conn_serve: fd, ops and env set by the caller. kept: a
 * connection that has served requests already (handed over). */
void conn_init(struct conn *c, int fd, const struct conn_ops *ops, const struct conn_env *env,
               int kept);
/* Serves c until a request is answered, it goes idle, or it closes. */
enum conn_result conn_serve(struct conn *c);
/* Between records, nothing of the next one received or buffered: the
 * connection may move to another process. */
int conn_at_boundary(const struct conn *c);
/* Bytes received and not yet decoded. */
int conn_buffered(const struct conn *c);
/* Shuts the socket down, closes it and frees c's buffers. */
void conn_close(struct conn *c);
/* Closes this process's descriptor only (the socket lives on elsewhere:
 * handed over) and frees c's buffers. */
void conn_detach(struct conn *c);
/* From another thread than the one serving c: answers c's running
 * request 504 and shuts the socket down, if nothing of its response went
 * out yet (the handler's later writes then fail). 1 if it did. */
int conn_rescue(struct conn *c);

/* intake.c: new connections, from the listen sockets and from the
 * hand-over pair, for every engine. Sources are numbered: 0..nlisten-1
 * the listen sockets, nlisten the pair. */
struct worker;
enum intake_result { INTAKE_OK, INTAKE_EMPTY, INTAKE_NOFD };
/* Adds (on) or removes the sources to/from epoll set ep, EPOLLEXCLUSIVE
 * so that one connection wakes one waiter; tags[src] is each source's
 * event data. 0, or -1 (logged). */
int intake_watch(const struct worker *w, int ep, int on, const epoll_data_t *tags);
size_t intake_sources(const struct worker *w);
/* One connection from src (non-blocking, close-on-exec): INTAKE_OK with
 * *fd and *kept (it served requests already); INTAKE_EMPTY; INTAKE_NOFD
 * when out of descriptors (logged: pause, the source stays readable). */
enum intake_result intake_take(const struct worker *w, size_t src, int *fd, int *kept);
/* A stopping worker, its sources out of its epoll set, passes on the
 * connections that may have woken it. */
void intake_pass_on(const struct worker *w);

/* drain.c: the worker's requests counted, and its stop decided in one
 * place. Engines supply how to close their intake and find their idle
 * connections; drain decides what happens to each. */
void drain_stop(struct worker *w);
/* The supervisor died (async-signal-safe): stop, hand nothing over (no
 * worker will stay), and exit by graceful_timeout, which nobody else
 * enforces now. */
void drain_orphaned(struct worker *w);
int drain_stopping(const struct worker *w);
/* n more requests served; at max_requests the worker starts to stop. */
void drain_count(struct worker *w, unsigned long n);
/* Serves c for the engine: CONN_CLOSED when c is gone (closed or handed
 * over; free it), CONN_IDLE when it waits for its next request (call
 * again once readable). An engine whose wait looks at readiness afresh
 * (level-triggered) sets idle_after_response: after a response with
 * nothing more received, c is idle without another read (which would
 * mostly find nothing: nginx sends the next request later). */
enum conn_result drain_serve(struct worker *w, struct conn *c, int idle_after_response);
/* An idle connection's fate now: 1 if it is to leave (hand over or
 * close), 0 if it waits for its next request. */
int drain_should_leave(const struct worker *w, const struct conn *c);
/* Hands c over to a worker that stays, else closes it. */
void drain_leave(struct worker *w, struct conn *c);
/* How long idle c may wait for its next request (ms): keepalive_timeout
 * once it has served one, io_timeout before its first. */
int drain_idle_limit_ms(const struct worker *w, const struct conn *c);
/* Idle c waited past that: closes it, counted for drain_report. */
void drain_expire(struct worker *w, struct conn *c);
/* Logs the connections closed idle since the last report, at most once a
 * second (any thread). */
void drain_report(struct worker *w);
struct drain_ops {
    void (*stop_intake)(void *engine);  /* no more new connections */
    void (*release_idle)(void *engine); /* drain_should_leave each idle one */
};
/* The stop sequence, once per worker: close intake, pass on what may have
 * woken us, let idle connections go. In-flight requests finish after. */
void drain_begin(struct worker *w, const struct drain_ops *ops, void *engine);

/* worker.c (its state; engines and drain read it) */
struct worker {
    const struct config *cfg;
    const struct engine *engine;
    const int *listen_fds;
    size_t nlisten;
    size_t index; /* worker number, 0-based */
    size_t row;   /* its slots in the scoreboard */
    struct scoreboard *sb;
    unsigned generation;
    long max_requests;             /* 0: unlimited; this worker's share with jitter */
    const struct handoff *handoff; /* where idle connections go on retiring */
    struct conn_env env;
    int stop_fd; /* eventfd, readable once the worker is stopping */
    atomic_int stopping;
    atomic_long served;
    atomic_long handed_over;                 /* idle connections passed on while stopping */
    atomic_long expired_kept, expired_fresh; /* closed idle, not yet reported */
    atomic_int orphaned;                     /* the supervisor is gone: 1, 2 once logged */
    _Atomic uint64_t next_report_ms;
    struct app_module mod;
};

/* engine_sync.c / engine_async.c: the modes, as descriptors. */
struct engine {
    const char *name;
    const char *unit;   /* what concurrency counts, for logs */
    const char *beater; /* what beats in a worker, for logs */
    /* A request over timeout retires its worker (the other threads'
     * requests finish) instead of killing it at once. */
    int retire_on_timeout;
    int threadsafe; /* the module must declare FCGATE_APP_THREADSAFE */
    /* Scoreboard slots per worker (serving threads). */
    size_t (*slots)(const struct config *cfg);
    /* Requests one worker serves at once. */
    unsigned (*concurrency)(const struct config *cfg);
    /* Serves until the worker has stopped. */
    void (*run)(struct worker *w);
};
extern const struct engine engine_sync, engine_threads, engine_async;

/* engine.c */
const struct engine *engine_for(enum config_mode mode);
/* A worker's limits, answered to FCGI_GET_VALUES. */
struct codec_limits engine_codec_limits(const struct config *cfg);

/* A worker that could not start (module, init, privileges) exits so. */
#define WORKER_EXIT_BOOT 3

/* The uid and gid of cfg->user / cfg->group (set). 0, or -1 (logged). */
int worker_ids(const struct config *cfg, uid_t *uid, gid_t *gid);
/* Root only binds; a child that serves (worker, status) runs as
 * cfg->user. 0, or -1 (logged). */
int worker_drop_privileges(const struct config *cfg);
/* Runs in the child after fork; never returns. */
void worker_main(struct worker *w) __attribute__((noreturn));

/* status.c: the status process, forked by the supervisor; never loads
 * the app. What it is given stays valid for its life (copied by fork). */
#define STATUS_MAX_GENS 8
struct status_gen {
    unsigned id;
    const struct scoreboard *sb;
};
struct status_env {
    const struct config *cfg; /* the current generation's */
    int fd;                   /* the status socket, listening */
    const int *listen_fds;
    const char (*listen_names)[128];
    size_t nlisten;
    struct status_gen gens[STATUS_MAX_GENS]; /* every live generation */
    size_t ngens;
    unsigned current;
    const struct score_totals *totals;
    pid_t supervisor;
    uint64_t started_ms; /* the supervisor's start (monotonic) */
};
/* Fills snap from the scoreboards, /proc and the kernel; snap->slots is
 * allocated (free it). 0, or -1 (out of memory). */
int status_collect(const struct status_env *env, struct status_snapshot *snap);
/* Runs in the child after fork; never returns. */
void status_main(const struct status_env *env) __attribute__((noreturn));

/* policy.c: the supervisor's decisions, functions of their inputs. */
struct backoff {
    uint64_t delay_ms, last_failure_ms, next_spawn_ms;
};
/* A worker that lived age_ms ended at now, cleanly or not: updates when
 * the next one may start (a floor against fork storms). */
void policy_worker_ended(struct backoff *b, uint64_t now, uint64_t age_ms, int clean);
enum boot_verdict {
    BOOT_RETRY,   /* respawn it */
    BOOT_REVERT,  /* a reload's generation cannot boot: keep the old one */
    BOOT_GIVE_UP, /* stop the server */
};
/* A worker could not boot. *in_row counts such failures since the last
 * worker that came up. */
enum boot_verdict policy_boot_failed(int gen_ever_ready, int have_previous, int *in_row);
/* The slot of a dead worker to blame: the one killed for a timeout
 * (timed_out: 1 + its index), the one its crash handler marked, else the
 * first one busy; -1 if none. */
long policy_blame(const struct score_slot *slots, size_t n, size_t timed_out);
enum overdue {
    OVERDUE_NONE,
    OVERDUE_REQUEST, /* a request runs past timeout */
    OVERDUE_SILENT,  /* a thread has not beaten past timeout, outside a request */
};
/* A worker forked at started_ms and still not ready at now is stuck
 * booting (stopped, or an init that hangs): timeout plus a generous
 * slack. (A worker forked after now was read is not.) */
int policy_boot_overdue(uint64_t started_ms, uint64_t now, int timeout_s);
/* Whether a ready worker's slots show it stuck; *which is the slot. */
enum overdue policy_overdue(const struct score_slot *slots, size_t n, uint64_t now, int timeout_s,
                            size_t *which);

/* The pool's size, decided each turn for pm dynamic and ondemand: how many
 * workers to start and which idle one to retire, from what the scoreboard
 * and the listen queues say now and a little memory of the turns before
 * (hysteresis). */
struct pool_bounds {
    enum config_pm pm;
    size_t min, max;
    uint64_t idle_timeout_ms;
};
struct pool_reading {
    uint64_t now;
    size_t workers;          /* alive and staying (not told to stop), booting included */
    size_t booting;          /* of those, not ready yet */
    unsigned per_worker;     /* requests one worker serves at once */
    uint64_t busy;           /* requests in progress on them */
    long queue;              /* connections waiting in the listen queues; -1: unknown */
    int waiting;             /* a connection waits for a worker (listen readable, parked) */
    const uint64_t *idle_ms; /* per staying worker, how long it has been idle */
};
struct pool_state {
    uint64_t high_since; /* the busy share first read high, 0: not high */
};
struct pool_decision {
    size_t start;
    enum pool_spawn start_why;
    long retire; /* an index into idle_ms, -1: none */
    enum pool_retire retire_why;
};
void policy_pool(const struct pool_bounds *b, const struct pool_reading *r, struct pool_state *st,
                 struct pool_decision *d);
/* A worker whose memory read over max_memory: *over counts the readings
 * in a row; 1 when it is time to replace it. */
int policy_memory_over(uint64_t bytes, uint64_t max_memory, unsigned *over);

/* cli.c: `fcgate status`, argv from "status" on; the exit status. */
int cli_status(int argc, char **argv);

/* supervisor.c */
/* Builds the configuration afresh (file + command line) for a reload.
 * 0, or the number of errors added to errs. */
typedef int (*supervisor_reload_fn)(struct config *out, struct config_errors *errs);
/* Serves until stopped; the exit status for main. Takes over cfg. */
int supervisor_run(struct config *cfg, supervisor_reload_fn reload, char **argv);

#endif

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * supervisor.c - the master process: listen sockets, the worker pool,
 * signals, reloads. Single-threaded; never loads the app; never serves.
 *
 * Signals stay blocked and are taken synchronously with sigtimedwait(), so
 * every decision is made in one loop, in a fixed order, once per turn
 * (nginx's master works the same way with sigsuspend and flags). A turn is
 * at most TICK_MS long, which bounds how late a timeout or a deadline can
 * be acted on.
 *
 * Workers belong to a generation: a config plus its scoreboard. HUP makes
 * a new generation from the re-read config; the old one is retired (TERM:
 * finish in-flight requests, then exit) only once every new worker has
 * reported ready, so a reload never leaves the socket without acceptors,
 * and a new generation that cannot boot is dropped in favour of the old.
 */
#include "fcgate.h"
#include "listen.h"
#include "log.h"
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100
#define MAX_WORKERS 1024
#define MAX_GENERATIONS 8
#define FAST_STOP_MS 2000
#define ABORT_GRACE_MS 1000
/* A thread asked for its stack answers within microseconds unless it is
 * stopped or stuck in the kernel; this long at most, then it is reported
 * without one. */
#define STACK_WAIT_MS 500
#define MEMORY_CHECK_MS 1000 /* max_memory: one reading per worker a second */
#define PARK_MAX 256         /* idle connections held while an ondemand pool is empty */

enum state {
    RUNNING,
    STOPPING,      /* TERM: in-flight requests finish within graceful_timeout */
    STOPPING_FAST, /* INT, QUIT, or workers that cannot boot */
};

struct generation {
    unsigned id;
    struct config cfg;
    struct scoreboard sb;
    int ever_ready;
    int retiring;
};

/* A stack asked of a worker's thread (stack.c) and what to do with it. */
enum { STACK_SLOWLOG = 1, STACK_ERRLOG = 2 };
struct stack_ask {
    uint64_t asked_ms; /* 0: none pending */
    size_t slot;       /* in the worker's row */
    unsigned to;       /* STACK_SLOWLOG | STACK_ERRLOG */
    int then_abort;    /* then SIGABRT (a timeout in a mode that kills) */
    uint64_t ran_ms;   /* how long its request had run when asked */
    char what[140];    /* "METHOD /path", when asked */
};

struct proc {
    pid_t pid;
    struct generation *gen;
    size_t index; /* worker number in its generation */
    size_t row;   /* its slots in the generation's scoreboard */
    int detached; /* retired for a request over timeout: its index is another's */
    uint64_t started_ms;
    uint64_t term_ms;  /* TERM sent (graceful): kill after graceful_timeout */
    uint64_t abort_ms; /* SIGABRT sent (timeout): SIGKILL after ABORT_GRACE_MS */
    size_t timed_out;  /* 1 + the scoreboard slot over `timeout`; 0: none */
    int ready;
    struct stack_ask ask; /* a stack asked of one of its threads */
    /* The pool (pool_*): when it was last seen busy, from its slots. */
    uint64_t busy_ms, seen_requests;
    unsigned mem_over; /* readings over max_memory in a row */
    int memory;        /* over max_memory: retires once its replacement is ready */
    pid_t replacement; /* that replacement, 0: none started */
};

static struct {
    struct generation *gens[MAX_GENERATIONS];
    struct generation *cur;
    struct proc procs[MAX_WORKERS * 2];
    size_t nprocs;
    int listen_fds[CONFIG_MAX_LISTEN];
    struct listen_addr addrs[CONFIG_MAX_LISTEN];
    size_t nlisten;
    enum state state;
    uint64_t stop_deadline_ms;
    int killed_all;
    int exit_code;
    struct backoff backoff;
    int boot_failures; /* in a row, since a worker last came up */
    unsigned next_gen;
    supervisor_reload_fn reload;
    char *pidfile;
    int owns_sockets[CONFIG_MAX_LISTEN]; /* unlink on exit (not systemd's, not handed on) */
    char specs[CONFIG_MAX_LISTEN][128];  /* how each socket is named on a hand-over */
    char **argv;
    char exe[4096];    /* the binary's path, read at start: USR2 runs what is there now */
    pid_t upgrade_pid; /* the new master started by USR2 */
    pid_t old_master;  /* after an upgrade: the master to retire once ready */
    int notified_ready;
    uint64_t next_status_ms, watchdog_ms, next_watchdog_ms;
    struct handoff handoff; /* idle connections from retiring workers (handoff.h) */
    int status_fd;          /* the status socket, -1: none */
    struct listen_addr status_addr;
    int owns_status;             /* unlink on exit */
    pid_t status_pid;            /* the status process, 0: none running */
    int status_stale;            /* the generations changed since it was forked */
    uint64_t status_next_ms;     /* respawn floor after it died */
    struct score_totals *totals; /* shared with the status process */
    uint64_t started_ms;
    /* The pool (pm dynamic, ondemand): see pool_apply. */
    struct pool_state pool;
    int signal_fd;             /* readable when a signal is pending: waits with fds */
    int pool_waiting;          /* a connection came to an empty ondemand pool */
    int parked[PARK_MAX];      /* idle kept-alive connections of an emptied pool */
    int parked_kept[PARK_MAX]; /* each has served requests already */
    size_t nparked;
    uint64_t next_memory_ms;
} S;

static void upgrade(void);
static void pool_apply(uint64_t now);
static void pool_publish(const struct generation *g);
static void pool_bound(int up);
static void pool_unpark(int all);
static void pool_child_close(void);
static void chown_logs(const struct config *cfg);
static void upgrade_failed(int status);
static void upgrade_done(void);

/* ---- generations ---- */

static struct generation *gen_new(struct config *cfg)
{
    struct generation *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    size_t per = engine_for(cfg->mode)->slots(cfg);
    if (scoreboard_create(&g->sb, MAX_WORKERS, per) < 0) {
        free(g);
        return NULL;
    }
    g->id = ++S.next_gen;
    g->cfg = *cfg; /* takes ownership of the strings */
    for (size_t i = 0; i < MAX_GENERATIONS; i++) {
        if (!S.gens[i]) {
            S.gens[i] = g;
            S.status_stale = 1;
            return g;
        }
    }
    scoreboard_destroy(&g->sb);
    free(g);
    return NULL;
}

static size_t gen_procs(const struct generation *g)
{
    size_t n = 0;
    for (size_t i = 0; i < S.nprocs; i++)
        n += S.procs[i].gen == g;
    return n;
}

static void gen_free_unused(void)
{
    for (size_t i = 0; i < MAX_GENERATIONS; i++) {
        struct generation *g = S.gens[i];
        if (g && g != S.cur && gen_procs(g) == 0) {
            /* Its requests stay counted. A status process forked before
             * this may count them twice until it is replaced, within a
             * turn: a known, brief overcount, never a drop. */
            scoreboard_totals_absorb(S.totals, &g->sb);
            S.status_stale = 1;
            scoreboard_destroy(&g->sb);
            config_free(&g->cfg);
            free(g);
            S.gens[i] = NULL;
        }
    }
}

/* ---- workers ---- */

static struct proc *proc_by_pid(pid_t pid)
{
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i].pid == pid)
            return &S.procs[i];
    return NULL;
}

static int index_taken(const struct generation *g, size_t index)
{
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i].gen == g && S.procs[i].index == index && !S.procs[i].detached)
            return 1;
    return 0;
}

/* A scoreboard row no live worker of g writes: a worker retired for a
 * timeout keeps writing its own while its replacement starts. */
static size_t free_row(const struct generation *g)
{
    for (size_t row = 0; row < MAX_WORKERS; row++) {
        size_t i = 0;
        while (i < S.nprocs && !(S.procs[i].gen == g && S.procs[i].row == row))
            i++;
        if (i == S.nprocs)
            return row;
    }
    return SIZE_MAX;
}

/* For the status page: the worker was told to stop. */
static void mark_stopping(const struct proc *p)
{
    for (size_t t = 0; t < p->gen->sb.per_worker; t++)
        atomic_store(&scoreboard_slot(&p->gen->sb, p->row, t)->stopping, 1);
}

static void signal_gen(const struct generation *g, int sig, uint64_t now)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = &S.procs[i];
        if (g && p->gen != g)
            continue;
        if (sig == SIGTERM || sig == SIGINT)
            mark_stopping(p);
        kill(p->pid, sig);
        if (sig == SIGTERM && !p->term_ms)
            p->term_ms = now;
    }
}

static int spawn(struct generation *g, size_t index)
{
    size_t row = free_row(g);
    if (S.nprocs == sizeof(S.procs) / sizeof(S.procs[0]) || row == SIZE_MAX)
        return -1;
    const struct config *cfg = &g->cfg;
    long max = cfg->max_requests;
    if (max > 0 && cfg->max_requests_jitter > 0)
        max += random() % (cfg->max_requests_jitter + 1);
    for (size_t t = 0; t < g->sb.per_worker; t++) {
        struct score_slot *s = scoreboard_slot(&g->sb, row, t);
        atomic_store(&s->cancel, 0);
        atomic_store(&s->pid, 0);
        atomic_store(&s->start_ms, 0);
        atomic_store(&s->crashed, 0);
        atomic_store(&s->heartbeat_ms, 0);
        atomic_store(&s->active, 0);
        atomic_store(&s->stopping, 0);
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        pool_child_close();
        struct worker w = {
            .cfg = cfg,
            .listen_fds = S.listen_fds,
            .nlisten = S.nlisten,
            .index = index,
            .row = row,
            .sb = &g->sb,
            .max_requests = max,
            .generation = g->id,
            .handoff = &S.handoff,
        };
        worker_main(&w);
    }
    struct proc *p = &S.procs[S.nprocs++];
    memset(p, 0, sizeof(*p));
    p->pid = pid;
    p->gen = g;
    p->index = index;
    p->row = row;
    p->started_ms = monotonic_ms();
    p->busy_ms = p->started_ms; /* idle_timeout counts from its start */
    log_debug("worker %zu started, pid %d (generation %u)", index, (int)pid, g->id);
    return 0;
}

/* Fills the current generation up to its worker count, respecting the
 * respawn floor set after crashes. */
static void spawn_missing(uint64_t now)
{
    struct generation *g = S.cur;
    if (g->cfg.pm != PM_STATIC) {
        pool_apply(now);
        return;
    }
    if (now < S.backoff.next_spawn_ms)
        return;
    for (size_t i = 0; i < (size_t)g->cfg.workers; i++)
        if (!index_taken(g, i) && spawn(g, i) < 0)
            return;
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "ended (status 0x%x)", (unsigned)status);
}

static void stop_all(enum state how, int code, uint64_t now);

/* The request a dead worker was running when it died, or NULL. */
static const struct score_slot *blame(const struct generation *g, const struct proc *p)
{
    const struct score_slot *slots = scoreboard_slot(&g->sb, p->row, 0);
    long t = policy_blame(slots, g->sb.per_worker, p->timed_out);
    return t < 0 ? NULL : &slots[t];
}

/* The generation a reload replaced, if it is still serving. */
static struct generation *previous_gen(void)
{
    struct generation *best = NULL;
    for (size_t i = 0; i < MAX_GENERATIONS; i++) {
        struct generation *g = S.gens[i];
        if (g && g != S.cur && !g->retiring && gen_procs(g) > 0 && (!best || g->id > best->id))
            best = g;
    }
    return best;
}

/* The new generation cannot boot: go back to the one still serving. */
static void reload_failed(uint64_t now)
{
    struct generation *bad = S.cur, *old = previous_gen();
    log_error("reload failed: workers of generation %u cannot start; generation %u keeps serving",
              bad->id, old->id);
    S.cur = old;
    S.status_stale = 1; /* it names the current generation */
    signal_gen(bad, SIGTERM, now);
}

static void on_exit_proc(struct proc *p, int status, uint64_t now)
{
    char how[96];
    struct proc dead = *p;
    struct generation *g = dead.gen;
    int boot = WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_BOOT && !dead.ready;
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

    *p = S.procs[--S.nprocs];
    describe_exit(status, how, sizeof(how));
    if (S.state != RUNNING || dead.term_ms || g != S.cur) {
        if (S.state == RUNNING && dead.memory)
            atomic_fetch_add(&S.totals->restarts[RESTART_MEMORY], 1);
        else if (S.state == RUNNING && (dead.timed_out || g->retiring))
            atomic_fetch_add(&S.totals->restarts[dead.timed_out ? RESTART_TIMEOUT : RESTART_RELOAD],
                             1);
        const struct score_slot *s = dead.timed_out ? blame(g, &dead) : NULL;
        if (s)
            log_error("worker %zu (pid %d) %s, still serving %s %s", dead.index, (int)dead.pid, how,
                      s->method, s->path);
        else if (!clean)
            log_info("worker %zu (pid %d) %s", dead.index, (int)dead.pid, how);
        return;
    }
    if (boot) {
        log_error("worker %zu (pid %d) could not start", dead.index, (int)dead.pid);
        switch (policy_boot_failed(g->ever_ready, previous_gen() != NULL, &S.boot_failures)) {
        case BOOT_REVERT:
            reload_failed(now);
            break;
        case BOOT_GIVE_UP:
            if (g->ever_ready)
                log_error("stopping: %d workers in a row could not start", S.boot_failures);
            else
                log_error("stopping: workers cannot start (see the error above)");
            stop_all(STOPPING_FAST, 1, now);
            break;
        case BOOT_RETRY:
            break;
        }
        if (S.state != RUNNING || g != S.cur)
            return;
    } else if (clean) {
        log_info("worker %zu (pid %d) exited; replacing it", dead.index, (int)dead.pid);
        atomic_fetch_add(&S.totals->restarts[RESTART_RECYCLE], 1);
    } else {
        atomic_fetch_add(
            &S.totals->restarts[dead.timed_out || dead.abort_ms ? RESTART_TIMEOUT : RESTART_CRASH],
            1);
        const struct score_slot *s = blame(g, &dead);
        if (s && atomic_load(&s->crashed) == SLOT_OVERFLOWED)
            log_error("worker %zu (pid %d) %s: stack overflow (stack_size %zu bytes) while "
                      "serving %s %s; respawning",
                      dead.index, (int)dead.pid, how, g->cfg.stack_size, s->method, s->path);
        else if (s)
            log_error("worker %zu (pid %d) %s while serving %s %s; respawning", dead.index,
                      (int)dead.pid, how, s->method, s->path);
        else
            log_error("worker %zu (pid %d) %s; respawning", dead.index, (int)dead.pid, how);
    }
    policy_worker_ended(&S.backoff, now, now - dead.started_ms, clean);
}

static void reap(uint64_t now)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == S.upgrade_pid) {
            upgrade_failed(status);
            continue;
        }
        if (pid == S.status_pid) {
            char how[96];
            describe_exit(status, how, sizeof(how));
            log_error("status process (pid %d) %s; restarting it", (int)pid, how);
            S.status_pid = 0;
            S.status_next_ms = now + 1000; /* a floor against fork storms */
            continue;
        }
        struct proc *p = proc_by_pid(pid);
        if (!p)
            continue; /* a status process replaced earlier */
        struct generation *g = p->gen;
        size_t row = p->row;
        on_exit_proc(p, status, now);
        /* Off the status page; spawn resets the rest when the row is reused. */
        for (size_t t = 0; t < g->sb.per_worker; t++)
            atomic_store(&scoreboard_slot(&g->sb, row, t)->pid, 0);
    }
}

/* ---- readiness, reload, timeouts ---- */

static void check_ready(void)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = &S.procs[i];
        if (p->ready)
            continue;
        struct score_slot *s = scoreboard_slot(&p->gen->sb, p->row, 0);
        if (atomic_load(&s->pid) == p->pid) {
            p->ready = 1;
            p->gen->ever_ready = 1;
            S.boot_failures = 0;
        }
    }
}

/* The workers a generation has up before it counts as ready (to retire
 * the one it replaces, to tell systemd): all of a static pool, the floor
 * of a dynamic one, none of an ondemand one. */
static size_t pool_ready_target(const struct generation *g)
{
    switch (g->cfg.pm) {
    case PM_DYNAMIC:
        return (size_t)g->cfg.min_workers;
    case PM_ONDEMAND:
        return 0;
    case PM_STATIC:
        break;
    }
    return (size_t)g->cfg.workers;
}

static size_t ready_count(const struct generation *g)
{
    size_t n = 0;
    for (size_t i = 0; i < S.nprocs; i++)
        n += S.procs[i].gen == g && S.procs[i].ready && !S.procs[i].detached;
    return n;
}

/* Old generations get TERM once the current one is fully up. */
static void retire_old(uint64_t now)
{
    if (ready_count(S.cur) < pool_ready_target(S.cur))
        return;
    for (size_t i = 0; i < MAX_GENERATIONS; i++) {
        struct generation *g = S.gens[i];
        if (!g || g == S.cur || g->retiring)
            continue;
        g->retiring = 1;
        log_info("generation %u ready; retiring generation %u", S.cur->id, g->id);
        signal_gen(g, SIGTERM, now);
    }
}

static int same_listen(const struct config *a, const struct config *b)
{
    if (a->nlisten != b->nlisten)
        return 0;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i], b->listen[i]) != 0)
            return 0;
    return 1;
}

static void reload(uint64_t now)
{
    struct config cfg;
    struct config_errors errs = {0};

    log_info("reloading the configuration");
    systemd_notify("RELOADING=1");
    S.notified_ready = 0;
    if (S.reload(&cfg, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++)
            log_error("%s", errs.msg[i]);
        log_error("reload: invalid configuration; still serving with generation %u", S.cur->id);
        config_errors_free(&errs);
        S.notified_ready = 1;
        systemd_notify("READY=1\nSTATUS=reload failed: invalid configuration");
        return;
    }
    if (!same_listen(&cfg, &S.cur->cfg))
        log_warn("reload: listen addresses changed; they take effect on restart or upgrade");
    if ((cfg.status_listen || S.cur->cfg.status_listen) &&
        (!cfg.status_listen || !S.cur->cfg.status_listen ||
         strcmp(cfg.status_listen, S.cur->cfg.status_listen) != 0))
        log_warn("reload: status.listen changed; it takes effect on restart or upgrade");
    log_open(cfg.log_level, cfg.log_error, cfg.log_access, cfg.slowlog_file);
    chown_logs(&cfg);
    struct generation *old = S.cur, *g = gen_new(&cfg);
    if (!g) {
        log_error("reload: too many generations still draining; try again later");
        config_free(&cfg);
        return;
    }
    S.cur = g;
    S.backoff.next_spawn_ms = 0;
    log_info("generation %u starting %zu workers; generation %u serves until they are ready", g->id,
             pool_ready_target(g), old->id);
    pool_publish(g);
    spawn_missing(now);
}

/* SIGSTOPped (state T): none of its threads can finish anything. */
static int stopped(pid_t pid)
{
    char st = proc_state(pid);
    return st == 'T' || st == 't';
}

/* ---- stacks: the slow log, and what a timeout reports ---- */

/* Asks thread `slot` of p for its stack: its handler (scoreboard.c) writes
 * it into the worker's score_stack; deliver_stack picks it up. */
static void ask_stack(struct proc *p, size_t slot, unsigned to, int then_abort, uint64_t now)
{
    struct score_slot *s = scoreboard_slot(&p->gen->sb, p->row, slot);
    struct stack_ask *a = &p->ask;
    if (a->asked_ms) { /* one at a time: add to the one in flight */
        a->to |= to;
        a->then_abort |= then_abort;
        return;
    }
    *a = (struct stack_ask){.asked_ms = now, .slot = slot, .to = to, .then_abort = then_abort};
    uint64_t start = atomic_load(&s->start_ms);
    a->ran_ms = start && now > start ? now - start : 0;
    snprintf(a->what, sizeof(a->what), "%.12s %.116s", s->method, s->path);
    struct score_stack *st = scoreboard_stack(&p->gen->sb, p->row);
    pid_t tid = atomic_load(&s->tid);
    atomic_store(&st->tid, tid);
    atomic_fetch_add(&st->asked, 1);
    /* A stopped worker cannot answer: report (and abort) now, not after
     * STACK_WAIT_MS. */
    if (tid <= 0 || stopped(p->pid) || syscall(SYS_tgkill, p->pid, tid, SIG_STACK) < 0)
        a->asked_ms = now - STACK_WAIT_MS; /* no answer will come: report now */
}

static void slow_entry(const struct proc *p, const char *stack, const char *missing)
{
    const struct stack_ask *a = &p->ask;
    const struct engine *e = engine_for(p->gen->cfg.mode);
    struct log_entry le;
    log_entry_start(&le);
    log_entry_add(&le, "pid %d generation %u worker %zu %s %zu (%s mode)", (int)p->pid,
                  p->gen->id, p->index, e->unit, a->slot, e->name);
    log_entry_add(&le, "request: %s", a->what);
    if (e->retire_on_timeout || strcmp(e->name, "sync") == 0)
        log_entry_add(&le, "running: %.3f s", (double)a->ran_ms / 1e3);
    else
        log_entry_add(&le, "running: %.3f s holding the event loop (no other request of "
                      "this worker runs)", (double)a->ran_ms / 1e3);
    if (missing) {
        log_entry_add(&le, "stack: not captured: %s", missing);
    } else {
        log_entry_add(&le, "stack:");
        for (const char *l = stack; *l;) {
            size_t n = strcspn(l, "\n");
            log_entry_add(&le, "  %.*s", (int)n, l);
            l += n + (l[n] == '\n');
        }
    }
    log_entry_write(&le);
}

static void errlog_stack(const struct proc *p, const char *stack, const char *missing)
{
    const struct stack_ask *a = &p->ask;
    if (missing) {
        log_error("worker %zu (pid %d): stack of %s: not captured: %s", p->index, (int)p->pid,
                  a->what, missing);
        return;
    }
    log_error("worker %zu (pid %d): stack of %s:", p->index, (int)p->pid, a->what);
    for (const char *l = stack; *l;) {
        size_t n = strcspn(l, "\n");
        log_error("worker %zu (pid %d):   %.*s", p->index, (int)p->pid, (int)n, l);
        l += n + (l[n] == '\n');
    }
}

/* The stack asked of p once it is there, or without it once the wait is
 * over; then the SIGABRT a timeout held back for it. */
static void deliver_stack(struct proc *p, uint64_t now)
{
    struct stack_ask *a = &p->ask;
    struct score_stack *st = scoreboard_stack(&p->gen->sb, p->row);
    int answered = atomic_load(&st->done) == atomic_load(&st->asked);
    if (!a->asked_ms || (!answered && now - a->asked_ms < STACK_WAIT_MS))
        return;
    /* The worker wrote it: take a bounded copy. */
    char text[STACK_TEXT];
    memcpy(text, st->text, sizeof(text));
    text[sizeof(text) - 1] = '\0';
    const char *missing = answered ? NULL
                          : stopped(p->pid)
                              ? "the worker is stopped (SIGSTOP)"
                              : "the thread did not answer within 0.5 s (blocked in the kernel?)";
    if (a->to & STACK_SLOWLOG)
        slow_entry(p, text, missing);
    if (a->to & STACK_ERRLOG)
        errlog_stack(p, text, missing);
    if (a->then_abort) {
        kill(p->pid, SIGABRT);
        p->abort_ms = now;
    }
    a->asked_ms = 0;
    a->then_abort = 0;
}

/* A request past slowlog.timeout, once per request. In async mode the
 * slot shows the request holding the loop (a request waiting is the
 * loop's to report, engine_async.c). */
static void check_slow(struct proc *p, uint64_t now)
{
    const struct config *cfg = &p->gen->cfg;
    if (!cfg->slowlog_file || !p->ready || p->abort_ms || p->ask.asked_ms)
        return;
    for (size_t t = 0; t < p->gen->sb.per_worker; t++) {
        struct score_slot *s = scoreboard_slot(&p->gen->sb, p->row, t);
        uint64_t start = atomic_load(&s->start_ms);
        if (!start || now < start || now - start < cfg->slowlog_timeout_ms ||
            atomic_load(&s->slow_ms) == start)
            continue;
        atomic_store(&s->slow_ms, start);
        ask_stack(p, t, STACK_SLOWLOG, 0, now);
        return;
    }
}

static void check_stacks(uint64_t now)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        deliver_stack(&S.procs[i], now);
        check_slow(&S.procs[i], now);
    }
}

/* Its other threads' requests did nothing wrong (uWSGI's harakiri kills
 * them too): the worker stops taking requests and hands its idle
 * connections over, a replacement takes its place at once, and the
 * stuck request is answered 504 by another of its threads if nothing of
 * its response went out. graceful_timeout later, it is killed. */
static void retire_for_timeout(struct proc *p, struct score_slot *s, uint64_t now)
{
    const struct config *cfg = &p->gen->cfg;
    log_error("worker %zu (pid %d): %s %s running for %.1f s, over timeout %d s; retiring the "
              "worker (its other requests finish within graceful_timeout %d s)",
              p->index, (int)p->pid, s->method, s->path,
              (double)(now - atomic_load(&s->start_ms)) / 1e3, cfg->timeout, cfg->graceful_timeout);
    atomic_store(&s->cancel, 1);
    ask_stack(p, (size_t)(s - scoreboard_slot(&p->gen->sb, p->row, 0)), STACK_ERRLOG, 0, now);
    mark_stopping(p);
    p->detached = 1;
    p->term_ms = now;
    kill(p->pid, SIGTERM);
}

/* A ready worker with a request past `timeout` or a thread silent past
 * it gets SIGABRT (its crash handler marks the slot; a core shows where),
 * then SIGKILL; one still draining past graceful_timeout gets SIGKILL. */
static void check_timeouts(uint64_t now)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = &S.procs[i];
        const struct config *cfg = &p->gen->cfg;
        if (p->ask.then_abort)
            continue; /* check_stacks sends the SIGABRT */
        if (p->abort_ms) {
            if (now - p->abort_ms > ABORT_GRACE_MS)
                kill(p->pid, SIGKILL);
            continue;
        }
        if (p->term_ms) {
            if (now - p->term_ms > (uint64_t)cfg->graceful_timeout * 1000u) {
                log_warn("worker %zu (pid %d) still busy %d s after TERM; killing", p->index,
                         (int)p->pid, cfg->graceful_timeout);
                kill(p->pid, SIGKILL);
                p->abort_ms = now;
            }
            continue;
        }
        if (!p->ready) {
            if (policy_boot_overdue(p->started_ms, now, cfg->timeout)) {
                log_error("worker %zu (pid %d) not ready %.1f s after it started; killing it",
                          p->index, (int)p->pid, (double)(now - p->started_ms) / 1e3);
                kill(p->pid, SIGKILL);
                p->abort_ms = now;
            }
            continue;
        }
        struct score_slot *slots = scoreboard_slot(&p->gen->sb, p->row, 0);
        size_t t = 0;
        switch (policy_overdue(slots, p->gen->sb.per_worker, now, cfg->timeout, &t)) {
        case OVERDUE_NONE:
            continue;
        case OVERDUE_REQUEST:
            atomic_fetch_add(&S.totals->timeouts, 1);
            p->timed_out = t + 1;
            if (engine_for(cfg->mode)->retire_on_timeout && free_row(p->gen) != SIZE_MAX &&
                !stopped(p->pid)) {
                retire_for_timeout(p, &slots[t], now);
                continue;
            }
            log_error("worker %zu (pid %d): %s %s running for %.1f s, over timeout %d s; "
                      "killing the worker",
                      p->index, (int)p->pid, slots[t].method, slots[t].path,
                      (double)(now - atomic_load(&slots[t].start_ms)) / 1e3, cfg->timeout);
            break;
        case OVERDUE_SILENT:
            atomic_fetch_add(&S.totals->timeouts, 1);
            log_error("worker %zu (pid %d): %s silent for %.1f s, over timeout %d s; killing "
                      "the worker",
                      p->index, (int)p->pid, engine_for(cfg->mode)->beater,
                      (double)(now - atomic_load(&slots[t].heartbeat_ms)) / 1e3, cfg->timeout);
            break;
        }
        /* Its stack first, then SIGABRT (check_stacks). */
        ask_stack(p, t, STACK_ERRLOG, 1, now);
    }
}

/* ---- the pool: pm dynamic and ondemand ----
 *
 * Each turn the pool is read (the current generation's workers from the
 * scoreboard, the listen queues from the kernel) and policy_pool decides
 * how many workers to start and which idle one to retire. A worker
 * retires the way TTOU retires one: TERM, its idle connections handed
 * over to the workers that stay, its requests in flight finished.
 *
 * An empty ondemand pool has no worker to accept or to take hand-overs:
 * the supervisor polls the listen sockets (never accepting) and the
 * hand-over pair, holds the idle connections the last worker passed on
 * (parked; it never reads them), and starts a worker as soon as a
 * connection waits or a parked one has a request. The parked ones then
 * go back into the pair for that worker.
 */

/* A worker of the current generation that is not on its way out. */
static int pool_staying(const struct proc *p)
{
    return p->gen == S.cur && !p->term_ms && !p->detached;
}

/* Requests in progress on p, and whether it served any since last read
 * (short requests fall between two turns). */
static uint64_t pool_track(struct proc *p, uint64_t now)
{
    uint64_t active = 0, requests = 0;
    for (size_t t = 0; t < p->gen->sb.per_worker; t++) {
        const struct score_slot *sl = scoreboard_slot(&p->gen->sb, p->row, t);
        active += atomic_load(&sl->active);
        requests += atomic_load(&sl->requests);
    }
    if (active || requests != p->seen_requests)
        p->busy_ms = now;
    p->seen_requests = requests;
    return active;
}

/* Connections waiting in every listen queue; -1 when none can be read. */
static long pool_queue(void)
{
    long total = -1;
    for (size_t i = 0; i < S.nlisten; i++) {
        struct sockdiag_queue q;
        if (sockdiag_queue(S.listen_fds[i], &q) == 0)
            total = (total < 0 ? 0 : total) + q.queue;
    }
    return total;
}

/* The lowest worker number no worker of g holds. */
static size_t pool_free_index(const struct generation *g)
{
    size_t i = 0;
    while (i < MAX_WORKERS && index_taken(g, i))
        i++;
    return i;
}

static void pool_retire(struct proc *p, enum pool_retire why, size_t stay, uint64_t now)
{
    if (why == RETIRE_IDLE)
        log_info("worker %zu (pid %d) idle for %.1f s; retiring it (%zu stay)", p->index,
                 (int)p->pid, (double)(now - p->busy_ms) / 1e3, stay);
    else
        log_info("worker %zu (pid %d): over max_workers %d; retiring it", p->index, (int)p->pid,
                 p->gen->cfg.max_workers);
    atomic_fetch_add(&S.totals->retirements[why], 1);
    mark_stopping(p);
    kill(p->pid, SIGTERM);
    p->term_ms = now;
}

static const char *const spawn_why[SPAWN_REASONS] = {"min_workers", "busy slots", "listen queue",
                                                     "memory"};

static void pool_start(size_t n, enum pool_spawn why, const struct pool_reading *r, uint64_t now)
{
    size_t started = 0;
    if (now < S.backoff.next_spawn_ms)
        return;
    while (started < n && spawn(S.cur, pool_free_index(S.cur)) == 0)
        started++;
    atomic_fetch_add(&S.totals->spawns[why], started);
    if (started && why != SPAWN_FLOOR)
        log_info("starting %zu worker%s (%s: %llu requests in progress, %ld queued; %zu "
                 "workers before)",
                 started, started == 1 ? "" : "s", spawn_why[why], (unsigned long long)r->busy,
                 r->queue > 0 ? r->queue : (long)r->waiting, r->workers);
}

/* One turn of the pool: read it, ask policy_pool, act. */
static void pool_apply(uint64_t now)
{
    struct generation *g = S.cur;
    struct proc *who[MAX_WORKERS];
    uint64_t idle[MAX_WORKERS];
    struct pool_reading r = {.now = now,
                             .per_worker = engine_for(g->cfg.mode)->concurrency(&g->cfg)};
    struct pool_bounds b = {g->cfg.pm, (size_t)g->cfg.min_workers, (size_t)g->cfg.max_workers,
                            (uint64_t)g->cfg.idle_timeout * 1000u};
    struct pool_decision d;

    for (size_t i = 0; i < S.nprocs && r.workers < MAX_WORKERS; i++) {
        struct proc *p = &S.procs[i];
        if (!pool_staying(p))
            continue;
        r.busy += pool_track(p, now);
        r.booting += !p->ready;
        idle[r.workers] = p->ready && now > p->busy_ms ? now - p->busy_ms : 0;
        who[r.workers++] = p;
    }
    r.queue = pool_queue();
    r.waiting = S.pool_waiting;
    r.idle_ms = idle;
    S.pool_waiting = 0;
    policy_pool(&b, &r, &S.pool, &d);
    if (d.retire >= 0)
        pool_retire(who[d.retire], d.retire_why, r.workers - 1, now);
    if (d.start)
        pool_start(d.start, d.start_why, &r, now);
    pool_unpark(0);
}

/* TTIN / TTOU on a dynamic or ondemand pool move max_workers; min_workers
 * follows it down. policy_pool retires what is above. */
static void pool_bound(int up)
{
    struct config *c = &S.cur->cfg;
    if (up && c->max_workers < MAX_WORKERS)
        c->max_workers++;
    if (!up && c->max_workers > 1)
        c->max_workers--;
    if (c->min_workers > c->max_workers)
        c->min_workers = c->max_workers;
    log_info("%s: pm %s, %d..%d workers", up ? "TTIN" : "TTOU", config_pm_name(c->pm),
             c->min_workers, c->max_workers);
    pool_publish(S.cur);
    S.status_stale = 1;
}

/* The bounds now, for the status process. */
static void pool_publish(const struct generation *g)
{
    int stat = g->cfg.pm == PM_STATIC;
    atomic_store(&S.totals->pool_min, stat ? g->cfg.workers : g->cfg.min_workers);
    atomic_store(&S.totals->pool_max, stat ? g->cfg.workers : g->cfg.max_workers);
}

/* An ondemand pool with no worker that stays: nothing accepts from its
 * sockets or takes hand-overs. */
static int pool_empty(void)
{
    if (S.state != RUNNING || S.cur->cfg.pm != PM_ONDEMAND)
        return 0;
    for (size_t i = 0; i < S.nprocs; i++)
        if (pool_staying(&S.procs[i]))
            return 0;
    return 1;
}

/* An empty pool is watched, but not while the respawn floor holds spawns
 * back: its sockets would stay readable and the turns would spin. */
static int pool_watching(void)
{
    return pool_empty() && monotonic_ms() >= S.backoff.next_spawn_ms;
}

/* Gives the parked connections back to the hand-over pair, once a worker
 * is there to take them (all: whoever comes next, an upgrade's master). */
static void pool_unpark(int all)
{
    size_t keep = 0;
    if (!all && pool_empty())
        return;
    for (size_t i = 0; i < S.nparked; i++) {
        if (handoff_send(&S.handoff, S.parked[i], S.parked_kept[i]) == 0 || all) {
            close(S.parked[i]);
            continue;
        }
        S.parked_kept[keep] = S.parked_kept[i];
        S.parked[keep++] = S.parked[i];
    }
    S.nparked = keep;
}

/* In a child: the supervisor's own descriptors are not its to hold (a
 * parked connection held by a worker would never close for nginx). */
static void pool_child_close(void)
{
    for (size_t i = 0; i < S.nparked; i++)
        close(S.parked[i]);
    if (S.signal_fd >= 0)
        close(S.signal_fd);
}

/* Takes what the last worker handed over into the pair. */
static void pool_park(void)
{
    int kept, fd;
    while (S.nparked < PARK_MAX && (fd = handoff_recv(&S.handoff, &kept, 1)) >= 0) {
        S.parked_kept[S.nparked] = kept;
        S.parked[S.nparked++] = fd;
    }
}

/* A parked connection nginx closed goes; one with a request waiting (or
 * anything else to read) wants a worker. */
static int pool_parked_event(size_t i, short revents)
{
    char c;
    if (!(revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)))
        return 0;
    ssize_t n = recv(S.parked[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 1;
    close(S.parked[i]);
    S.parked[i] = -1;
    return 0;
}

/* Drops the parked connections closed meanwhile (-1). */
static void pool_compact(void)
{
    size_t keep = 0;
    for (size_t i = 0; i < S.nparked; i++)
        if (S.parked[i] >= 0) {
            S.parked_kept[keep] = S.parked_kept[i];
            S.parked[keep++] = S.parked[i];
        }
    S.nparked = keep;
}

/* The turn's wait while the pool is watched: until a signal, a connection
 * on a listen socket or on a parked connection, or a tick. Then the
 * signal, if any, as sigtimedwait gives it. */
static int pool_wait(const sigset_t *set, siginfo_t *si)
{
    struct pollfd pf[1 + CONFIG_MAX_LISTEN + 1 + PARK_MAX];
    size_t n = 0, first_parked;
    struct timespec zero = {0, 0};

    pf[n++] = (struct pollfd){S.signal_fd, POLLIN, 0};
    for (size_t i = 0; i < S.nlisten; i++)
        pf[n++] = (struct pollfd){S.listen_fds[i], POLLIN, 0};
    pf[n++] = (struct pollfd){S.handoff.rx, POLLIN, 0};
    first_parked = n;
    for (size_t i = 0; i < S.nparked; i++)
        pf[n++] = (struct pollfd){S.parked[i], POLLIN | POLLRDHUP, 0};
    if (poll(pf, n, TICK_MS) > 0) {
        for (size_t i = 1; i < first_parked - 1; i++)
            S.pool_waiting |= (pf[i].revents & POLLIN) != 0;
        for (size_t i = first_parked; i < n; i++)
            S.pool_waiting |= pool_parked_event(i - first_parked, pf[i].revents);
        pool_compact();
        if (pf[first_parked - 1].revents & POLLIN) {
            pool_park();
            S.pool_waiting |= S.nparked == PARK_MAX; /* no room: let a worker take them */
        }
    }
    return sigtimedwait(set, si, &zero);
}

/* max_memory, any pm: a worker over it at MEMORY_CHECKS readings in a row
 * gets a replacement (same worker number), and retires once that one is
 * ready, so the pool never has one worker less (uWSGI's reload-on-rss
 * kills first; the requests in flight then fail). */
static void memory_replace(struct proc *p, uint64_t bytes, int pss)
{
    const struct config *cfg = &p->gen->cfg;
    log_warn("worker %zu (pid %d): %s %.1f MiB, over max_memory %.1f MiB; starting its "
             "replacement, then retiring it",
             p->index, (int)p->pid, pss ? "PSS" : "RSS", (double)bytes / 1048576.0,
             (double)cfg->max_memory / 1048576.0);
    p->memory = 1;
    p->detached = 1; /* its number is its replacement's */
    struct generation *g = p->gen;
    size_t index = p->index;
    pid_t pid = p->pid;
    if (spawn(g, index) == 0) {
        proc_by_pid(pid)->replacement = S.procs[S.nprocs - 1].pid;
        atomic_fetch_add(&S.totals->spawns[SPAWN_MEMORY], 1);
    }
}

static void memory_check(uint64_t now)
{
    if (now < S.next_memory_ms)
        return;
    S.next_memory_ms = now + MEMORY_CHECK_MS;
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = &S.procs[i];
        int pss = 0;
        if (!p->ready || p->term_ms || p->memory || !p->gen->cfg.max_memory)
            continue;
        uint64_t bytes = proc_memory(p->pid, &pss);
        if (policy_memory_over(bytes, p->gen->cfg.max_memory, &p->mem_over))
            memory_replace(p, bytes, pss);
    }
}

/* A worker over max_memory retires once its replacement is ready (or
 * could not start: then the pool refills as after any exit). */
static void memory_retire(uint64_t now)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = &S.procs[i];
        if (!p->memory || p->term_ms)
            continue;
        const struct proc *r = p->replacement ? proc_by_pid(p->replacement) : NULL;
        if (r && !r->ready)
            continue;
        log_info("worker %zu (pid %d) retiring for max_memory; worker pid %d replaces it", p->index,
                 (int)p->pid, r ? (int)r->pid : 0);
        atomic_fetch_add(&S.totals->retirements[RETIRE_MEMORY], 1);
        mark_stopping(p);
        kill(p->pid, SIGTERM);
        p->term_ms = now;
    }
}

/* ---- telling systemd (and the master we replace) ---- */

static void announce(uint64_t now)
{
    struct generation *g = S.cur;
    size_t ready = ready_count(g);

    if (!S.notified_ready && ready >= pool_ready_target(g)) {
        S.notified_ready = 1;
        if (S.old_master > 0) {
            log_info("upgrade: %zu workers ready; asking the old master (pid %d) to stop", ready,
                     (int)S.old_master);
            kill(S.old_master, SIGTERM);
            S.old_master = 0;
            systemd_notify("MAINPID=%d", (int)getpid());
        }
        systemd_notify("READY=1");
    }
    if (now >= S.next_status_ms) {
        unsigned long long served = 0, active = 0;
        for (size_t i = 0; i < g->sb.nslots; i++) {
            served += atomic_load(&g->sb.slots[i].requests);
            active += atomic_load(&g->sb.slots[i].active);
        }
        if (g->cfg.pm == PM_STATIC)
            systemd_notify("STATUS=%zu of %d workers ready (%s mode), %llu requests in progress, "
                           "%llu served",
                           ready, g->cfg.workers, engine_for(g->cfg.mode)->name, active, served);
        else
            systemd_notify("STATUS=%zu workers ready (pm %s, %d..%d; %s mode), %llu requests in "
                           "progress, %llu served",
                           ready, config_pm_name(g->cfg.pm), g->cfg.min_workers, g->cfg.max_workers,
                           engine_for(g->cfg.mode)->name, active, served);
        S.next_status_ms = now + 2000;
    }
    if (S.watchdog_ms && now >= S.next_watchdog_ms) {
        systemd_notify("WATCHDOG=1");
        S.next_watchdog_ms = now + S.watchdog_ms / 2;
    }
}

/* ---- stopping ---- */

static void stop_all(enum state how, int code, uint64_t now)
{
    if (S.state >= how)
        return;
    S.state = how;
    if (code)
        S.exit_code = code;
    /* Nobody stays to take idle connections, unless a new master does
     * (USR2): it shares the hand-over pair. */
    if (!S.upgrade_pid || how != STOPPING)
        handoff_set_open(&S.handoff, 0);
    if (how == STOPPING) {
        S.stop_deadline_ms = now + (uint64_t)S.cur->cfg.graceful_timeout * 1000u;
        signal_gen(NULL, SIGTERM, now);
    } else {
        S.stop_deadline_ms = now + FAST_STOP_MS;
        signal_gen(NULL, SIGINT, now);
    }
}

/* TTIN / TTOU on a static pool: one worker more or less. */
static void resize_static(int up, uint64_t now)
{
    if (up && S.cur->cfg.workers < MAX_WORKERS)
        S.cur->cfg.workers++;
    if (!up && S.cur->cfg.workers > 1) {
        size_t gone = (size_t)--S.cur->cfg.workers;
        for (size_t i = 0; i < S.nprocs; i++)
            if (S.procs[i].gen == S.cur && S.procs[i].index == gone && !S.procs[i].detached) {
                mark_stopping(&S.procs[i]);
                kill(S.procs[i].pid, SIGTERM);
                S.procs[i].term_ms = now;
            }
    }
    log_info("%s: %d workers", up ? "TTIN" : "TTOU", S.cur->cfg.workers);
    S.status_stale = 1; /* it reports the configured count */
}

static void on_signal(int sig, uint64_t now)
{
    switch (sig) {
    case SIGTERM:
        if (S.upgrade_pid) {
            log_info("TERM: the new master (pid %d) took over; stopping gracefully",
                     (int)S.upgrade_pid);
            upgrade_done();
        } else {
            log_info("TERM: graceful stop (up to %d s)", S.cur->cfg.graceful_timeout);
        }
        systemd_notify("STOPPING=1");
        stop_all(STOPPING, 0, now);
        break;
    case SIGINT:
    case SIGQUIT:
        log_info("%s: fast stop", sig == SIGINT ? "INT" : "QUIT");
        systemd_notify("STOPPING=1");
        stop_all(STOPPING_FAST, 0, now);
        break;
    case SIGHUP:
        if (S.state == RUNNING)
            reload(now);
        break;
    case SIGUSR2:
        if (S.state == RUNNING)
            upgrade();
        break;
    case SIGTTIN:
    case SIGTTOU:
        if (S.cur->cfg.pm != PM_STATIC)
            pool_bound(sig == SIGTTIN);
        else
            resize_static(sig == SIGTTIN, now);
        break;
    case SIGUSR1:
        log_reopen();
        chown_logs(&S.cur->cfg);
        signal_gen(NULL, SIGUSR1, now);
        log_info("USR1: log files reopened");
        break;
    default:
        break;
    }
}

/* Log files the root supervisor creates belong to the workers' user, who
 * must reopen them on USR1. The files just opened, by descriptor: their
 * names are in a directory that user can write. */
static void chown_logs(const struct config *cfg)
{
    uid_t uid;
    gid_t gid;
    if (geteuid() != 0 || !cfg->user || strcmp(cfg->user, "root") == 0 ||
        worker_ids(cfg, &uid, &gid) < 0)
        return;
    log_chown(uid, gid);
}

/* ---- set-up ---- */

/* Sockets handed over by the master we replace (USR2): UPGRADE_ENV is
 * "FD=SPEC;FD=SPEC;..." where SPEC is the listen address as that master
 * spelled it, "systemd:N" for a socket systemd had passed it, or
 * HANDOFF_TX / HANDOFF_RX for the connection hand-over pair. */
#define UPGRADE_ENV "FCGATE_UPGRADE_FDS"
#define UPGRADE_PARENT_ENV "FCGATE_UPGRADE_PARENT"
#define SPEC_MAX 128
#define HANDOFF_TX "handoff:tx"
#define HANDOFF_RX "handoff:rx"
#define STATUS_SPEC "status:" /* then the status.listen address */
#define STATUS_BACKLOG 64

static struct {
    int fd;
    char spec[SPEC_MAX];
} handed[CONFIG_MAX_LISTEN + 3];
static size_t nhanded;

/* Reads UPGRADE_ENV once, into handed[]. */
static void read_handed(void)
{
    const char *env = getenv(UPGRADE_ENV);
    for (const char *p = env; p && *p && nhanded < CONFIG_MAX_LISTEN + 3;) {
        char *eq;
        long fd = strtol(p, &eq, 10);
        if (*eq != '=')
            break;
        const char *addr = eq + 1, *end = strchr(addr, ';');
        size_t len = end ? (size_t)(end - addr) : strlen(addr);
        if (len < SPEC_MAX) {
            handed[nhanded].fd = (int)fd;
            memcpy(handed[nhanded].spec, addr, len);
            handed[nhanded++].spec[len] = '\0';
        }
        p = end ? end + 1 : addr + len;
    }
    unsetenv(UPGRADE_ENV);
}

/* The handed-over fd for spec, or -1. */
static int inherited_fd(const char *spec)
{
    for (size_t i = 0; i < nhanded; i++)
        if (strcmp(handed[i].spec, spec) == 0)
            return handed[i].fd;
    return -1;
}

/* Closes handed-over sockets the new config no longer lists. */
static void close_unused_inherited(void)
{
    for (size_t i = 0; i < nhanded; i++) {
        int used = strncmp(handed[i].spec, "handoff:", 8) == 0; /* taken by handoff_init */
        used |= handed[i].fd == S.status_fd;
        for (size_t j = 0; j < S.nlisten; j++)
            used |= S.listen_fds[j] == handed[i].fd;
        if (!used)
            close(handed[i].fd);
    }
    nhanded = 0;
}

/* Takes fd as a listener, remembering how to name it on a hand-over. */
static void adopt(int fd, const char *spec, int owned)
{
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* Workers accept after epoll says ready, and another may have taken
     * the connection first: accept must not block (systemd's sockets
     * come blocking unless the unit says NonBlocking=). */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    snprintf(S.specs[S.nlisten], SPEC_MAX, "%s", spec);
    S.owns_sockets[S.nlisten] = owned;
    S.listen_fds[S.nlisten++] = fd;
}

/* A unix socket belongs to the workers' user and group (nginx reaches it
 * through the group and listen_mode), as PHP-FPM's listen.owner does. */
static int socket_owner(const struct config *cfg, const struct listen_addr *a)
{
    uid_t uid;
    gid_t gid;
    struct stat st;
    if (a->family != AF_UNIX || geteuid() != 0 || !cfg->user)
        return 0;
    if (worker_ids(cfg, &uid, &gid) < 0)
        return -1;
    /* The directory may be writable by that user, who could swap the
     * socket for a link to any file between bind and here: never follow
     * one (lchown), and refuse anything but a socket. */
    if (lstat(a->path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        log_error("listen %s: no longer the socket just bound; not changing its owner", a->path);
        return -1;
    }
    if (fchownat(AT_FDCWD, a->path, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
        log_error("listen %s: chown: %s", a->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The status socket: opened here like the others (the status process,
 * unprivileged, could not bind a root-owned path), handed over on USR2,
 * and not changed by a reload (like listen). */
static int open_status(const struct config *cfg)
{
    char err[256], spec[SPEC_MAX];

    if (!cfg->status_listen)
        return 0;
    if (listen_parse(cfg->status_listen, &S.status_addr, err, sizeof(err)) < 0) {
        log_error("status.listen %s: %s", cfg->status_listen, err);
        return -1;
    }
    snprintf(spec, sizeof(spec), STATUS_SPEC "%s", cfg->status_listen);
    int fd = inherited_fd(spec);
    if (fd < 0) {
        fd = listen_open(&S.status_addr, STATUS_BACKLOG, cfg->status_listen_mode, err, sizeof(err));
        if (fd < 0) {
            log_error("status.listen %s: %s", cfg->status_listen, err);
            return -1;
        }
        if (socket_owner(cfg, &S.status_addr) < 0) {
            close(fd);
            return -1;
        }
        S.owns_status = 1;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    S.status_fd = fd;
    return 0;
}

static int open_listeners(const struct config *cfg)
{
    char err[256], spec[32];
    int fds[CONFIG_MAX_LISTEN];
    int n = systemd_listen_fds(fds, CONFIG_MAX_LISTEN);

    read_handed();
    if (handoff_init(&S.handoff, inherited_fd(HANDOFF_TX), inherited_fd(HANDOFF_RX)) < 0) {
        log_error("connection hand-over pair: %s", strerror(errno));
        return -1;
    }
    if (n < 0) {
        log_error("systemd passed more than %d sockets", CONFIG_MAX_LISTEN);
        return -1;
    }
    if (open_status(cfg) < 0)
        return -1;
    /* systemd's sockets, from systemd itself or through the master we
     * replace: systemd owns them and their paths; listen is not used. */
    for (int i = 0; i < n; i++) {
        snprintf(spec, sizeof(spec), "systemd:%d", i);
        adopt(fds[i], spec, 0);
    }
    for (size_t i = 0; i < nhanded; i++)
        if (strncmp(handed[i].spec, "systemd:", 8) == 0)
            adopt(handed[i].fd, handed[i].spec, 0);
    if (S.nlisten > 0) {
        log_info("using %zu socket%s from systemd; the listen setting is not used", S.nlisten,
                 S.nlisten == 1 ? "" : "s");
        close_unused_inherited();
        return 0;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (listen_parse(cfg->listen[i], &S.addrs[i], err, sizeof(err)) < 0) {
            log_error("listen %s: %s", cfg->listen[i], err);
            return -1;
        }
        int fd = inherited_fd(cfg->listen[i]);
        if (fd < 0) {
            fd = listen_open(&S.addrs[i], cfg->listen_backlog, cfg->listen_mode, err, sizeof(err));
            if (fd < 0) {
                log_error("listen %s: %s", cfg->listen[i], err);
                return -1;
            }
            if (socket_owner(cfg, &S.addrs[i]) < 0) {
                close(fd);
                return -1;
            }
        }
        adopt(fd, cfg->listen[i], 1);
    }
    close_unused_inherited();
    return 0;
}

static void close_listeners(void)
{
    for (size_t i = 0; i < S.nlisten; i++) {
        close(S.listen_fds[i]);
        if (S.owns_sockets[i])
            listen_unlink(&S.addrs[i]);
    }
    S.nlisten = 0;
    if (S.status_fd >= 0) {
        close(S.status_fd);
        if (S.owns_status)
            listen_unlink(&S.status_addr);
        S.status_fd = -1;
    }
}

/* ---- the status process ---- */

/* Forks the status process when there is none, or when the set of
 * generations changed: it can only see scoreboards mapped before it was
 * forked. The one it replaces finishes its connection and exits. */
static void status_spawn(uint64_t now)
{
    if (S.status_fd < 0 || (S.status_pid && !S.status_stale) || now < S.status_next_ms)
        return;
    struct status_env env = {
        .cfg = &S.cur->cfg,
        .fd = S.status_fd,
        .listen_fds = S.listen_fds,
        .listen_names = (const char(*)[128])S.specs,
        .nlisten = S.nlisten,
        .current = S.cur->id,
        .totals = S.totals,
        .supervisor = getpid(),
        .started_ms = S.started_ms,
    };
    for (size_t i = 0; i < MAX_GENERATIONS && env.ngens < STATUS_MAX_GENS; i++)
        if (S.gens[i])
            env.gens[env.ngens++] = (struct status_gen){S.gens[i]->id, &S.gens[i]->sb};
    pid_t pid = fork();
    if (pid == 0) {
        pool_child_close();
        status_main(&env);
    }
    if (pid < 0) {
        log_error("status process: fork: %s", strerror(errno));
        S.status_next_ms = now + 1000;
        return;
    }
    if (S.status_pid)
        kill(S.status_pid, SIGTERM);
    log_debug("status process started, pid %d", (int)pid);
    S.status_pid = pid;
    S.status_stale = 0;
}

static void status_stop(void)
{
    if (!S.status_pid)
        return;
    kill(S.status_pid, SIGTERM);
    while (waitpid(S.status_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    S.status_pid = 0;
}

/* ---- USR2: a new master from the binary on disk, same sockets ----
 *
 * The sequence: this master renames its pidfile to PIDFILE.oldbin and
 * starts the new binary with the listen sockets (their fds in the
 * environment, close-on-exec cleared). The new master binds nothing,
 * writes the pidfile, starts its workers, and once they are all ready
 * sends TERM to this master, which then stops gracefully: its in-flight
 * requests finish while the new workers already accept. If the new
 * master fails first, this one keeps serving and restores its pidfile.
 */
static void upgrade(void)
{
    char env[1024] = "", parent[32], *p = env;

    if (S.upgrade_pid) {
        log_warn("USR2: an upgrade (pid %d) is already running", (int)S.upgrade_pid);
        return;
    }
    pool_unpark(1); /* into the pair, for whichever master starts a worker first */
    for (size_t i = 0; i < S.nlisten; i++) {
        const char *spec = S.specs[i]; /* as opened, whatever a reload said since */
        int n = snprintf(p, sizeof(env) - (size_t)(p - env), "%s%d=%s", i ? ";" : "",
                         S.listen_fds[i], spec);
        if (n < 0 || (size_t)n >= sizeof(env) - (size_t)(p - env)) {
            log_error("USR2: too many listen addresses to hand over");
            return;
        }
        p += n;
    }
    int n = snprintf(p, sizeof(env) - (size_t)(p - env), ";%d=" HANDOFF_TX ";%d=" HANDOFF_RX,
                     S.handoff.tx, S.handoff.rx);
    if (n < 0 || (size_t)n >= sizeof(env) - (size_t)(p - env)) {
        log_error("USR2: too many listen addresses to hand over");
        return;
    }
    p += n;
    if (S.status_fd >= 0) {
        char spec[SPEC_MAX];
        snprintf(spec, sizeof(spec), STATUS_SPEC "%s", S.cur->cfg.status_listen);
        n = snprintf(p, sizeof(env) - (size_t)(p - env), ";%d=%s", S.status_fd, spec);
        if (n < 0 || (size_t)n >= sizeof(env) - (size_t)(p - env)) {
            log_error("USR2: too many listen addresses to hand over");
            return;
        }
    }
    if (S.pidfile) {
        char old[4096];
        snprintf(old, sizeof(old), "%s.oldbin", S.pidfile);
        if (rename(S.pidfile, old) < 0)
            log_warn("USR2: renaming the pidfile: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("USR2: fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (size_t i = 0; i < S.nlisten; i++)
            fcntl(S.listen_fds[i], F_SETFD, 0);
        fcntl(S.handoff.tx, F_SETFD, 0);
        fcntl(S.handoff.rx, F_SETFD, 0);
        if (S.status_fd >= 0)
            fcntl(S.status_fd, F_SETFD, 0);
        snprintf(parent, sizeof(parent), "%d", (int)getppid());
        setenv(UPGRADE_ENV, env, 1);
        setenv(UPGRADE_PARENT_ENV, parent, 1);
        /* The path, not /proc/self/exe: after a package upgrade that link
         * names the old, deleted binary. */
        if (S.exe[0])
            execv(S.exe, S.argv);
        execvp(S.argv[0], S.argv);
        log_error("USR2: cannot execute %s: %s", S.argv[0], strerror(errno));
        _exit(127);
    }
    S.upgrade_pid = pid;
    log_info("USR2: started the new master, pid %d", (int)pid);
}

static void upgrade_failed(int status)
{
    log_error("USR2: the new master (pid %d) exited (status 0x%x) before taking over; "
              "this master keeps serving",
              (int)S.upgrade_pid, (unsigned)status);
    S.upgrade_pid = 0;
    if (S.pidfile) {
        char old[4096];
        snprintf(old, sizeof(old), "%s.oldbin", S.pidfile);
        rename(old, S.pidfile);
    }
}

/* Handed over: what we leave behind belongs to the new master. */
static void upgrade_done(void)
{
    for (size_t i = 0; i < S.nlisten; i++)
        S.owns_sockets[i] = 0;
    S.owns_status = 0;
    if (S.pidfile) {
        char old[4096];
        snprintf(old, sizeof(old), "%s.oldbin", S.pidfile);
        unlink(old);
        free(S.pidfile);
        S.pidfile = NULL;
    }
}

/* Never through a symbolic link, and never truncating a file with other
 * names: the pidfile's directory may be writable by the workers' user. */
static int write_pidfile(const char *path)
{
    char buf[32];
    struct stat st;
    int rc = -1, fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == ELOOP)
            log_error("pidfile %s is a symbolic link; not following it", path);
        else
            log_error("pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        log_error("pidfile %s: not a regular file with one link; not writing it", path);
        goto out;
    }
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || write(fd, buf, (size_t)n) != n) {
        log_error("pidfile %s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

int supervisor_run(struct config *cfg, supervisor_reload_fn reload_fn, char **argv)
{
    sigset_t set;
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};

    S.reload = reload_fn;
    S.argv = argv;
    S.status_fd = -1;
    S.signal_fd = -1;
    S.started_ms = monotonic_ms();
    S.totals = scoreboard_totals_create();
    if (!S.totals) {
        log_error("cannot map the status counters: %s", strerror(errno));
        config_free(cfg);
        return 1;
    }
    ssize_t n = readlink("/proc/self/exe", S.exe, sizeof(S.exe) - 1);
    S.exe[n > 0 ? n : 0] = '\0';
    S.watchdog_ms = systemd_watchdog_usec() / 1000;
    const char *parent = getenv(UPGRADE_PARENT_ENV);
    if (parent) {
        S.old_master = (pid_t)strtol(parent, NULL, 10);
        unsetenv(UPGRADE_PARENT_ENV);
    }
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* Readable while a signal is pending: an empty ondemand pool waits
     * on its sockets and on this (pool_wait); sigtimedwait still takes
     * the signals. */
    S.signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    umask((mode_t)cfg->umask);
    srandom((unsigned)getpid() ^ (unsigned)time(NULL));

    if (open_listeners(cfg) < 0)
        goto fail;
    if (cfg->pidfile) {
        if (write_pidfile(cfg->pidfile) < 0)
            goto fail;
        S.pidfile = strdup(cfg->pidfile);
    }
    chown_logs(cfg);
    /* Names for the stacks of the slow log and the timeout reports: the
     * objects loaded now, once, for every worker to inherit. */
    stack_load(NULL);
    S.cur = gen_new(cfg);
    if (!S.cur) {
        log_error("cannot map the scoreboard: %s", strerror(errno));
        goto fail;
    }
    const struct engine *e = engine_for(S.cur->cfg.mode);
    pool_publish(S.cur);
    if (S.cur->cfg.pm == PM_STATIC)
        log_info("fcgate %s: %s mode, %d workers x %u %s, listening on %zu socket%s",
                 FCGATE_VERSION, e->name, S.cur->cfg.workers, e->concurrency(&S.cur->cfg), e->unit,
                 S.nlisten, S.nlisten == 1 ? "" : "s");
    else
        log_info("fcgate %s: %s mode, pm %s, %d..%d workers x %u %s, listening on %zu socket%s",
                 FCGATE_VERSION, e->name, config_pm_name(S.cur->cfg.pm), S.cur->cfg.min_workers,
                 S.cur->cfg.max_workers, e->concurrency(&S.cur->cfg), e->unit, S.nlisten,
                 S.nlisten == 1 ? "" : "s");

    for (;;) {
        uint64_t now = monotonic_ms();
        if (S.state == RUNNING)
            spawn_missing(now);
        struct timespec tick = {0, TICK_MS * 1000000L};
        siginfo_t si;
        int sig = pool_watching() ? pool_wait(&set, &si) : sigtimedwait(&set, &si, &tick);
        now = monotonic_ms();
        if (sig > 0 && sig != SIGCHLD)
            on_signal(sig, now);
        reap(now);
        check_ready();
        status_spawn(now);
        if (S.state != RUNNING) {
            if (S.nprocs == 0)
                break;
            if (now > S.stop_deadline_ms && !S.killed_all) {
                log_warn("%zu workers still running at the stop deadline; killing them", S.nprocs);
                signal_gen(NULL, SIGKILL, now);
                S.killed_all = 1;
            }
            continue;
        }
        retire_old(now);
        check_timeouts(now);
        check_stacks(now);
        memory_check(now);
        memory_retire(now);
        gen_free_unused();
        announce(now);
    }
    status_stop();
    pool_unpark(1);
    close_listeners();
    handoff_fini(&S.handoff);
    if (S.pidfile)
        unlink(S.pidfile);
    log_info("stopped");
    return S.exit_code;
fail:
    /* Every way here is before gen_new took cfg over. */
    config_free(cfg);
    close_listeners();
    handoff_fini(&S.handoff);
    return 1;
}

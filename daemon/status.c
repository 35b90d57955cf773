/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * status.c - the status process: answers status requests on its own
 * socket, over FastCGI, from the scoreboards.
 *
 * It is forked by the supervisor and never loads or runs application
 * code, so it answers while every worker is busy, hung or stopped (PHP-FPM
 * serves its status from the same workers, which go dark under the very
 * overload the page should show). It maps every live generation's
 * scoreboard because it is forked again whenever that set changes.
 *
 * The FastCGI side is conn.c and request.c as the workers use them, with
 * a built-in app and blocking waits; one connection at a time is enough
 * for requests this small, and every wait is bounded so that a client
 * that stalls cannot hold the page for long.
 */
#include "fcgate.h"
#include "listen.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A status client gets this long per wait at most, whatever io_timeout
 * says: the next client waits behind it. */
#define STATUS_WAIT_MS 2000

/* A worker the supervisor has not reaped yet (dead, or a zombie) keeps
 * its pid in the scoreboard until it is: not a worker any more. */
static int alive(pid_t pid)
{
    char st = proc_state(pid);
    return st && st != 'Z' && st != 'X';
}

static void slot_read(struct status_slot *o, const struct score_slot *s, uint64_t now)
{
    uint64_t start = atomic_load(&s->start_ms);
    unsigned active = atomic_load(&s->active);
    o->requests = atomic_load(&s->requests);
    o->active = active;
    o->state = atomic_load(&s->stopping) ? STATE_STOPPING
               : start || active         ? STATE_BUSY
                                         : STATE_IDLE;
    o->what[0] = '\0';
    if (start) {
        /* Racy copies, NUL-bounded: at worst a garbled path. */
        char method[sizeof(s->method)], path[sizeof(s->path)];
        memcpy(method, s->method, sizeof(method));
        memcpy(path, s->path, sizeof(path));
        method[sizeof(method) - 1] = path[sizeof(path) - 1] = '\0';
        snprintf(o->what, sizeof(o->what), "%s %s", method, path);
        o->running_ms = now > start ? now - start : 0;
    }
}

static void counters_add(struct status_snapshot *snap, const struct score_slot *s)
{
    snap->requests_total += atomic_load(&s->requests);
    for (size_t c = 0; c < SCORE_CLASSES; c++)
        snap->by_class[c] += atomic_load(&s->by_class[c]);
    for (size_t b = 0; b < SCORE_BUCKETS; b++)
        snap->duration_le[b] += atomic_load(&s->duration_le[b]);
    snap->duration_us += atomic_load(&s->duration_us);
    for (size_t b = 0; b < SCORE_BUCKETS; b++)
        snap->queue_le[b] += atomic_load(&s->queue_le[b]);
    snap->queue_us += atomic_load(&s->queue_us);
    snap->queue_rejected += atomic_load(&s->queue_rejected);
}

/* Every slot of g: its counters into the totals, live ones into slots. */
static void collect_gen(struct status_snapshot *snap, const struct status_gen *g, size_t cap,
                        uint64_t now)
{
    const struct scoreboard *sb = g->sb;
    pid_t last = 0;
    int last_alive = 0;
    for (size_t i = 0; i < sb->nslots; i++) {
        const struct score_slot *s = &sb->slots[i];
        counters_add(snap, s);
        pid_t pid = atomic_load(&s->pid);
        if (pid == 0 || snap->nslots == cap)
            continue;
        if (pid != last) {
            last = pid;
            last_alive = alive(pid);
        }
        if (!last_alive)
            continue;
        struct status_slot *o = &snap->slots[snap->nslots++];
        memset(o, 0, sizeof(*o));
        o->pid = pid;
        o->generation = g->id;
        o->worker = i / sb->per_worker;
        o->thread = i % sb->per_worker;
        slot_read(o, s, now);
        o->rss_bytes = snap->nslots > 1 && o[-1].pid == pid ? o[-1].rss_bytes : proc_rss(pid);
    }
}

/* Workers by state (a worker is as busy as its busiest thread), and the
 * ready ones of the current generation. */
static void count_workers(struct status_snapshot *snap)
{
    for (size_t i = 0; i < snap->nslots;) {
        enum status_state st = STATE_IDLE;
        size_t end = i;
        while (end < snap->nslots && snap->slots[end].pid == snap->slots[i].pid &&
               snap->slots[end].generation == snap->slots[i].generation) {
            if (snap->slots[end].state > st)
                st = snap->slots[end].state;
            end++;
        }
        snap->workers[st]++;
        if (st != STATE_STOPPING && snap->slots[i].generation == snap->generation)
            snap->ready++;
        i = end;
    }
}

/* A socket systemd passed is named by its address, not "systemd:N". */
static void name_socket(char *buf, size_t len, int fd, const char *spec)
{
    struct listen_addr a;
    memset(&a, 0, sizeof(a));
    a.sslen = sizeof(a.ss);
    if (strncmp(spec, "systemd:", 8) == 0 &&
        getsockname(fd, (struct sockaddr *)&a.ss, &a.sslen) == 0) {
        a.family = a.ss.ss_family;
        if (a.family == AF_UNIX)
            snprintf(a.path, sizeof(a.path), "%s", ((struct sockaddr_un *)&a.ss)->sun_path);
        if (listen_format(&a, buf, len) > 0)
            return;
    }
    snprintf(buf, len, "%s", spec);
}

static void collect_listen(struct status_snapshot *snap, const struct status_env *env)
{
    for (size_t i = 0; i < env->nlisten; i++) {
        struct status_listen *l = &snap->listen[snap->nlisten++];
        struct sockdiag_queue q;
        name_socket(l->address, sizeof(l->address), env->listen_fds[i], env->listen_names[i]);
        l->queue = l->max_queue = -1;
        if (sockdiag_queue(env->listen_fds[i], &q) == 0) {
            l->queue = q.queue;
            l->max_queue = q.max_queue;
        }
    }
}

/* The pool's settings and what the supervisor did with it. */
static void collect_pool(struct status_snapshot *snap, const struct status_env *env)
{
    const struct score_totals *t = env->totals;
    snap->pm = config_pm_name(env->cfg->pm);
    snap->min_workers = atomic_load(&t->pool_min);
    snap->max_workers = atomic_load(&t->pool_max);
    snap->idle_timeout = env->cfg->idle_timeout;
    snap->queue_timeout = (double)env->cfg->queue_timeout_ms / 1e3;
    snap->max_memory = env->cfg->max_memory;
    for (size_t r = 0; r < SPAWN_REASONS; r++)
        snap->spawns[r] = atomic_load(&t->spawns[r]);
    for (size_t r = 0; r < RETIRE_REASONS; r++)
        snap->retirements[r] = atomic_load(&t->retirements[r]);
    for (size_t b = 0; b < SCORE_BUCKETS; b++)
        snap->queue_le[b] = atomic_load(&t->queue_le[b]);
    snap->queue_us = atomic_load(&t->queue_us);
    snap->queue_rejected = atomic_load(&t->queue_rejected);
}

int status_collect(const struct status_env *env, struct status_snapshot *snap)
{
    const struct score_totals *t = env->totals;
    size_t cap = 0;
    uint64_t now = monotonic_ms();

    memset(snap, 0, sizeof(*snap));
    /* Only rows in use: a scoreboard has room for the most workers and
     * threads a reload may ask for, most of it empty. */
    for (size_t g = 0; g < env->ngens; g++)
        for (size_t i = 0; i < env->gens[g].sb->nslots; i++)
            cap += atomic_load(&env->gens[g].sb->slots[i].pid) != 0;
    cap += 64; /* workers that become ready while we read */
    snap->slots = calloc(cap, sizeof(*snap->slots));
    if (!snap->slots)
        return -1;
    snap->version = FCGATE_VERSION;
    snap->mode = config_mode_name(env->cfg->mode);
    snap->supervisor = env->supervisor;
    snap->generation = env->current;
    snap->uptime_s = (now - env->started_ms) / 1000u;
    /* A dynamic pool asks for its floor, an ondemand one for none. */
    snap->workers_configured = env->cfg->pm == PM_STATIC    ? env->cfg->workers
                               : env->cfg->pm == PM_DYNAMIC ? atomic_load(&t->pool_min)
                                                            : 0;
    snap->requests_total = atomic_load(&t->requests);
    for (size_t c = 0; c < SCORE_CLASSES; c++)
        snap->by_class[c] = atomic_load(&t->by_class[c]);
    for (size_t b = 0; b < SCORE_BUCKETS; b++)
        snap->duration_le[b] = atomic_load(&t->duration_le[b]);
    snap->duration_us = atomic_load(&t->duration_us);
    for (size_t r = 0; r < RESTART_REASONS; r++)
        snap->restarts[r] = atomic_load(&t->restarts[r]);
    snap->timeouts = atomic_load(&t->timeouts);
    collect_pool(snap, env);
    for (size_t g = 0; g < env->ngens; g++)
        collect_gen(snap, &env->gens[g], cap, now);
    count_workers(snap);
    collect_listen(snap, env);
    return 0;
}

/* ---- the built-in app ---- */

static int status_handle(void *ctx, fcgate_req *r)
{
    const struct status_env *env = ctx;
    struct status_snapshot snap;
    struct codec_buf page = {0};
    char ready[32];
    int full, rc = FCGATE_ENOMEM;

    enum status_format f = status_page_format(fcgate_query(r), fcgate_header(r, "Accept"), &full);
    if (status_collect(env, &snap) < 0)
        return FCGATE_ENOMEM;
    if (status_page_render(&page, &snap, f, full) < 0)
        goto out;
    snprintf(ready, sizeof(ready), "%zu", snap.ready);
    fcgate_add_header(r, "Content-Type", status_page_content_type(f));
    fcgate_add_header(r, "Cache-Control", "no-store");
    /* For `fcgate status`'s exit code, whatever the format. */
    fcgate_add_header(r, "X-Fcgate-Workers-Ready", ready);
    fcgate_add_header(r, "X-Fcgate-Pm", snap.pm);
    rc = fcgate_write(r, page.data, page.len);
out:
    codec_buf_free(&page);
    free(snap.slots);
    return rc;
}

static const struct fcgate_app status_app = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = FCGATE_ABI_MAJOR,
    .abi_minor = FCGATE_ABI_MINOR,
    .size = sizeof(struct fcgate_app),
    .name = "status",
    .handle = status_handle,
};

/* ---- blocking waits, one connection at a time ---- */

static enum conn_wait wait_poll(struct conn *c, short events, int timeout_ms)
{
    struct pollfd pf = {c->fd, events, 0};
    if (timeout_ms < 0 || timeout_ms > STATUS_WAIT_MS)
        timeout_ms = STATUS_WAIT_MS;
    int n;
    while ((n = poll(&pf, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (n == 0)
        return CONN_WAIT_TIMEOUT;
    return n > 0 ? CONN_WAIT_READY : CONN_WAIT_FAILED;
}

/* The status app neither sleeps nor waits on descriptors nor opens a
 * database. */
static int no_sleep(struct conn *c, unsigned ms)
{
    (void)c;
    (void)ms;
    return FCGATE_EIO;
}

static int no_wait_fd(struct conn *c, int fd, short events, int timeout_ms)
{
    (void)c;
    (void)fd;
    (void)events;
    (void)timeout_ms;
    return FCGATE_EIO;
}

static int no_db(struct conn *c, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
    (void)c;
    (void)fn;
    (void)arg;
    return FCGATE_EDB;
}

static const struct conn_ops status_ops = {
    .wait = wait_poll,
    .sleep = no_sleep,
    .wait_fd = no_wait_fd,
    .db = no_db,
};

static void serve_conn(int fd, const struct conn_env *cenv)
{
    struct conn c;
    conn_init(&c, fd, &status_ops, cenv, 0);
    for (;;) {
        enum conn_result r = conn_serve(&c);
        if (r == CONN_CLOSED)
            return;
        if (r == CONN_IDLE &&
            wait_poll(&c, POLLIN, cenv->keepalive_timeout_ms) != CONN_WAIT_READY) {
            conn_close(&c);
            return;
        }
    }
}

static volatile sig_atomic_t stop;

/* TERM (a replacement was forked, or the supervisor is gone): finish the
 * connection being served, then exit. */
static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void status_signals(void)
{
    struct sigaction sa;
    sigset_t none;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    int dfl[] = {SIGINT, SIGQUIT, SIGCHLD, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof(dfl) / sizeof(dfl[0]); i++)
        sigaction(dfl[i], &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void status_main(const struct status_env *env)
{
    log_set_role("status");
    status_signals();
    if (worker_drop_privileges(env->cfg) < 0)
        _exit(WORKER_EXIT_BOOT);
    /* After the drop, which clears it; the supervisor may already be gone. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != env->supervisor)
        _exit(0);
    struct conn_env cenv = {
        .limits = {.max_params_bytes = env->cfg->max_params_bytes, .max_conns = 1, .max_reqs = 1},
        .max_body_bytes = 0,
        .io_timeout_ms = env->cfg->io_timeout * 1000 < STATUS_WAIT_MS ? env->cfg->io_timeout * 1000
                                                                      : STATUS_WAIT_MS,
        .keepalive_timeout_ms = STATUS_WAIT_MS,
        .app = {.app = &status_app, .ctx = (void *)env, .access_format = NULL},
    };
    while (!stop) {
        struct pollfd pf = {env->fd, POLLIN, 0};
        if (poll(&pf, 1, 1000) <= 0)
            continue;
        int fd = accept4(env->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            serve_conn(fd, &cenv);
        else if (errno == EMFILE || errno == ENFILE)
            poll(NULL, 0, 100); /* the socket stays readable: do not spin */
    }
    _exit(0);
}

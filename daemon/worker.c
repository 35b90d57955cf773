/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * worker.c - a worker process: privileges, the app module, the engine.
 *
 * Everything that must not cross a fork happens here, after it: the app
 * module is loaded, its init runs, sqlite connections open on first use.
 * A worker that cannot boot exits with WORKER_EXIT_BOOT so the supervisor
 * stops instead of respawning it forever.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

static struct worker *self;
static pid_t supervisor; /* our parent at fork */

/* Marks the slot, then lets the signal take the process: SA_RESETHAND
 * restored the default action, SA_NODEFER lets the re-raise through. */
static void on_crash(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    scoreboard_thread_crashed(sig == SIGSEGV || sig == SIGBUS ? si->si_addr : NULL);
    raise(sig);
}

/* TERM from the supervisor is a stop; the same signal as the parent
 * death signal, after the kernel reparented us, is an orphan's. */
static void on_term(int sig)
{
    (void)sig;
    if (!self)
        return;
    if (getppid() != supervisor)
        drain_orphaned(self);
    else
        drain_stop(self);
}

static void on_usr1(int sig)
{
    (void)sig;
    log_request_reopen();
}

static void worker_signals(void)
{
    struct sigaction sa;
    sigset_t none;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTTIN, &sa, NULL);
    sigaction(SIGTTOU, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL); /* fast stop: the default, terminate */
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = NULL;
    sa.sa_sigaction = on_crash;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
    int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        sigaction(fatal[i], &sa, NULL);
    /* The supervisor asks a busy thread for its stack (the slow log, a
     * timeout). SA_RESTART: most system calls the thread is in go on; a
     * sleep or a poll returns early with EINTR, once per slow request. */
    sa.sa_sigaction = scoreboard_stack_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigaction(SIG_STACK, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int worker_ids(const struct config *cfg, uid_t *uid, gid_t *gid)
{
    errno = 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        log_error("user '%s': %s", cfg->user, errno ? strerror(errno) : "no such user");
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    if (cfg->group) {
        struct group *gr = getgrnam(cfg->group);
        if (!gr) {
            log_error("group '%s': no such group", cfg->group);
            return -1;
        }
        *gid = gr->gr_gid;
    }
    return 0;
}

/* Serving as root takes saying so (user = "root"): an app bug should not
 * own the machine. */
int worker_drop_privileges(const struct config *cfg)
{
    if (!cfg->user) {
        if (geteuid() != 0)
            return 0;
        log_error("refusing to serve as root: set user (e.g. user = \"www-data\"), or "
                  "user = \"root\" to allow it");
        return -1;
    }
    if (strcmp(cfg->user, "root") == 0 && geteuid() == 0)
        return 0;
    uid_t uid;
    gid_t gid;
    if (worker_ids(cfg, &uid, &gid) < 0)
        return -1;
    if (geteuid() != 0) {
        if (geteuid() == uid)
            return 0;
        log_error("cannot switch to user '%s': fcgate is not running as root", cfg->user);
        return -1;
    }
    if (initgroups(cfg->user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        log_error("cannot switch to user '%s': %s", cfg->user, strerror(errno));
        return -1;
    }
    return 0;
}

static void boot_failed(void)
{
    _exit(WORKER_EXIT_BOOT);
}

/* The module, checked against what the mode needs, and its init. */
static void load_app(struct worker *w)
{
    char err[512];
    void *ctx = NULL;
    struct fcgate_host host = {.cfg = w->cfg};

    if (app_load(w->cfg->app_module, &w->mod, err, sizeof(err)) < 0 ||
        (w->engine->threadsafe &&
         app_check_threads(&w->mod, w->cfg->app_module, err, sizeof(err)) < 0)) {
        log_error("%s", err);
        boot_failed();
    }
    if (w->mod.app->init) {
        int rc = w->mod.app->init(&host, &ctx);
        if (rc != 0) {
            log_error("app module %s (%s): init failed: %s", w->cfg->app_module,
                      w->mod.app->name ? w->mod.app->name : "unnamed", fcgate_strerror(rc));
            boot_failed();
        }
    }
    w->env = (struct conn_env){
        .limits = engine_codec_limits(w->cfg),
        .max_body_bytes = w->cfg->max_body_bytes,
        .io_timeout_ms = w->cfg->io_timeout * 1000,
        .keepalive_timeout_ms = w->cfg->keepalive_timeout * 1000,
        .app = {.app = w->mod.app,
                .ctx = ctx,
                .access_format = w->cfg->log_access_format,
                .queue_timeout_ms = w->cfg->queue_timeout_ms,
                .timeout_ms = w->cfg->timeout * 1000},
    };
}

void worker_main(struct worker *w)
{
    char role[32];

    self = w;
    supervisor = getppid();
    w->engine = engine_for(w->cfg->mode);
    snprintf(role, sizeof(role), "worker %zu", w->index);
    log_set_role(role);
    w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    worker_signals();
    if (w->stop_fd < 0) {
        log_error("eventfd: %s", strerror(errno));
        boot_failed();
    }
    if (worker_drop_privileges(w->cfg) < 0)
        boot_failed();
    /* If the supervisor dies, its workers stop too. After the drop: the
     * kernel clears the death signal on a change of credentials. The
     * supervisor may have died before it was set: look once. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != supervisor)
        drain_orphaned(w);
    db_configure(w->cfg->app_database);
    struct pg_settings pg = {
        .conninfo = w->cfg->app_postgres,
        .pool = w->cfg->app_postgres_pool,
        .pool_timeout_s = w->cfg->app_postgres_pool_timeout,
        .prepare = w->cfg->app_postgres_prepare,
        .io_timeout_ms = w->cfg->io_timeout * 1000,
    };
    pg_configure(&pg);
    load_app(w);
    /* init's connections belong to this thread, which may not serve
     * (threads mode): the serving threads open their own. */
    pg_close_thread();
    stack_load(w->cfg->app_module);
    for (size_t t = 0; t < w->sb->per_worker; t++) {
        struct score_slot *s = scoreboard_slot(w->sb, w->row, t);
        atomic_store(&s->generation, w->generation);
        atomic_store(&s->pid, getpid()); /* last: "ready" */
    }
    log_debug("serving (%s mode)", w->engine->name);

    w->engine->run(w);

    long handed = atomic_load(&w->handed_over);
    if (handed > 0)
        log_info("handed %ld idle connection%s over to the workers that stay", handed,
                 handed == 1 ? "" : "s");
    if (w->mod.app->fini)
        w->mod.app->fini(w->env.app.ctx);
    db_close_thread();
    pg_close_thread();
    exit(0);
}

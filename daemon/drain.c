/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * drain.c - a worker's requests counted, and how it stops, decided in one
 * place for every engine (nginx's worker cycle does the same for its
 * event modules).
 *
 * A worker stops on TERM from the supervisor (reload, upgrade, TTOU, a
 * full stop) or by itself at max_requests. Then, in this order: its
 * intake closes (the listen sockets and the hand-over pair leave its
 * epoll set, so their events go to workers that stay); it passes on what
 * may already have woken it (intake_pass_on); its idle connections leave.
 * Connections busy with a request finish it first (graceful_timeout
 * bounds the wait, from the supervisor).
 *
 * An idle connection leaves by hand-over to a worker that stays
 * (handoff.h), so nginx never sees a close it could race with. Without
 * one to hand to (a full stop), a kept-alive connection is closed, but a
 * fresh one, accepted and not yet asked anything, waits for its first
 * request: nginx opened it to send one, and may be sending it now.
 */
#include "fcgate.h"
#include "log.h"

#include <unistd.h>

void drain_stop(struct worker *w)
{
    uint64_t one = 1;
    atomic_store(&w->stopping, 1);
    /* An atomic store and write(2): safe in a signal handler. */
    (void)!write(w->stop_fd, &one, sizeof(one));
}

void drain_orphaned(struct worker *w)
{
    int grace = w->cfg->graceful_timeout;
    atomic_store(&w->orphaned, 1);
    drain_stop(w);
    /* SIGALRM's default action ends the process. */
    alarm(grace > 0 ? (unsigned)grace : 1);
}

/* Where idle connections can go: nowhere once orphaned. */
static int can_hand_over(const struct worker *w)
{
    return handoff_is_open(w->handoff) && !atomic_load(&w->orphaned);
}

int drain_stopping(const struct worker *w)
{
    return atomic_load_explicit(&w->stopping, memory_order_relaxed);
}

void drain_count(struct worker *w, unsigned long n)
{
    if (n == 0)
        return;
    long total = atomic_fetch_add(&w->served, (long)n) + (long)n;
    if (w->max_requests > 0 && total >= w->max_requests && total - (long)n < w->max_requests) {
        log_info("served %ld requests (max_requests); recycling", total);
        drain_stop(w);
    }
}

int drain_should_leave(const struct worker *w, const struct conn *c)
{
    if (!drain_stopping(w))
        return 0;
    return c->served > 0 || can_hand_over(w);
}

void drain_leave(struct worker *w, struct conn *c)
{
    if (can_hand_over(w) && conn_at_boundary(c) &&
        handoff_send(w->handoff, c->fd, c->served > 0) == 0) {
        conn_detach(c);
        atomic_fetch_add(&w->handed_over, 1);
    } else {
        conn_close(c);
    }
}

int drain_idle_limit_ms(const struct worker *w, const struct conn *c)
{
    return c->served ? w->env.keepalive_timeout_ms : w->env.io_timeout_ms;
}

void drain_expire(struct worker *w, struct conn *c)
{
    atomic_fetch_add(c->served ? &w->expired_kept : &w->expired_fresh, 1);
    conn_close(c);
}

/* One line a second, not one per connection: thousands of idle
 * connections can expire at once. */
void drain_report(struct worker *w)
{
    int one = 1;
    if (atomic_load_explicit(&w->orphaned, memory_order_relaxed) == 1 &&
        atomic_compare_exchange_strong(&w->orphaned, &one, 2))
        log_warn("the supervisor is gone; finishing the requests in flight (up to "
                 "graceful_timeout %d s) and exiting",
                 w->cfg->graceful_timeout);
    uint64_t now = monotonic_ms(), next = atomic_load(&w->next_report_ms);
    if (now < next || !atomic_compare_exchange_strong(&w->next_report_ms, &next, now + 1000))
        return;
    long kept = atomic_exchange(&w->expired_kept, 0);
    long fresh = atomic_exchange(&w->expired_fresh, 0);
    if (kept)
        log_info("closed %ld idle kept-alive connection%s after keepalive_timeout %d s", kept,
                 kept == 1 ? "" : "s", w->cfg->keepalive_timeout);
    if (fresh)
        log_info("closed %ld new connection%s that sent no request within io_timeout %d s", fresh,
                 fresh == 1 ? "" : "s", w->cfg->io_timeout);
}

enum conn_result drain_serve(struct worker *w, struct conn *c, int idle_after_response)
{
    for (;;) {
        unsigned long before = c->served;
        enum conn_result r = conn_serve(c);
        drain_count(w, c->served - before);
        if (r == CONN_CLOSED)
            return r;
        /* Between requests with nothing of the next one here: a stopping
         * worker lets go now, rather than on the next request, which
         * could keep it forever on a busy kept-alive connection. */
        if ((r == CONN_IDLE || !conn_buffered(c)) && drain_should_leave(w, c)) {
            drain_leave(w, c);
            return CONN_CLOSED;
        }
        if (r == CONN_IDLE || (idle_after_response && !conn_buffered(c)))
            return CONN_IDLE;
    }
}

void drain_begin(struct worker *w, const struct drain_ops *ops, void *engine)
{
    ops->stop_intake(engine);
    if (can_hand_over(w))
        intake_pass_on(w);
    ops->release_idle(engine);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * blocking_pool.c - the async worker's threads for work that blocks.
 *
 * The event loop hands a job (an fcgate_db callback) to one of
 * `blocking_threads` threads and parks the coroutine that asked; the
 * thread runs it on its own sqlite connection, queues the job as done and
 * wakes the loop through an eventfd. One mutex guards both queues: it is
 * held only to link or unlink a job, never while one runs.
 *
 * Waking a sleeping thread for every job costs more than a short sqlite
 * read (measured: async /item at 14k req/s waking one of 4 threads per
 * job, 22k with the rule below). So a job only wakes a thread when none
 * is awake; an awake thread takes queued jobs one after the other. A job
 * stuck behind a slow one is not left waiting: the loop calls pool_kick,
 * which wakes another thread once the oldest job has queued for
 * KICK_AFTER_US.
 */
#include "blocking_pool.h"
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define KICK_AFTER_US 2000

static void *pool_thread(void *p)
{
    struct blocking_pool *bp = p;

    pthread_mutex_lock(&bp->mu);
    for (;;) {
        while (!bp->head && !bp->stop) {
            bp->idle++;
            pthread_cond_wait(&bp->cv, &bp->mu);
            bp->idle--;
        }
        if (!bp->head)
            break;
        struct pool_job *j = bp->head;
        bp->head = j->next;
        if (!bp->head)
            bp->tail = NULL;
        bp->waking = 0;
        atomic_fetch_sub(&bp->queued, 1);
        pthread_mutex_unlock(&bp->mu);

        j->result = db_run(j->fn, j->arg);

        pthread_mutex_lock(&bp->mu);
        /* One wake-up per batch: the loop takes the whole list at once. */
        if (!bp->done) {
            uint64_t one = 1;
            (void)!write(bp->efd, &one, sizeof(one));
        }
        j->next = bp->done;
        bp->done = j;
    }
    pthread_mutex_unlock(&bp->mu);
    db_close_thread();
    return NULL;
}

int pool_start(struct blocking_pool *bp, size_t n)
{
    memset(bp, 0, sizeof(*bp));
    pthread_mutex_init(&bp->mu, NULL);
    pthread_cond_init(&bp->cv, NULL);
    bp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    bp->threads = calloc(n, sizeof(*bp->threads));
    if (bp->efd < 0 || !bp->threads) {
        log_error("blocking pool: %s", strerror(errno ? errno : ENOMEM));
        return -1;
    }
    for (; bp->n < n; bp->n++) {
        int rc = pthread_create(&bp->threads[bp->n], NULL, pool_thread, bp);
        if (rc != 0) {
            log_error("blocking pool: cannot start thread %zu: %s", bp->n, strerror(rc));
            return -1;
        }
    }
    return 0;
}

void pool_submit(struct blocking_pool *bp, struct pool_job *j)
{
    j->next = NULL;
    j->queued_us = monotonic_us();
    pthread_mutex_lock(&bp->mu);
    if (bp->tail)
        bp->tail->next = j;
    else
        bp->head = j;
    bp->tail = j;
    atomic_fetch_add(&bp->queued, 1);
    /* Threads not waiting on cv are running a job and take this one when
     * they loop: wake one only when all of them sleep, and only once
     * until it has taken a job (it counts as sleeping until it runs). */
    if (bp->idle == (int)bp->n && !bp->waking) {
        bp->waking = 1;
        pthread_cond_signal(&bp->cv);
    }
    pthread_mutex_unlock(&bp->mu);
}

int pool_kick(struct blocking_pool *bp)
{
    if (atomic_load(&bp->queued) == 0)
        return 0;
    pthread_mutex_lock(&bp->mu);
    if (bp->head && bp->idle > 0 && monotonic_us() - bp->head->queued_us >= KICK_AFTER_US)
        pthread_cond_signal(&bp->cv);
    pthread_mutex_unlock(&bp->mu);
    return 1;
}

struct pool_job *pool_take_done(struct blocking_pool *bp)
{
    uint64_t n;
    (void)!read(bp->efd, &n, sizeof(n));
    pthread_mutex_lock(&bp->mu);
    struct pool_job *done = bp->done;
    bp->done = NULL;
    pthread_mutex_unlock(&bp->mu);
    return done;
}

void pool_stop(struct blocking_pool *bp)
{
    pthread_mutex_lock(&bp->mu);
    bp->stop = 1;
    pthread_cond_broadcast(&bp->cv);
    pthread_mutex_unlock(&bp->mu);
    for (size_t i = 0; i < bp->n; i++)
        pthread_join(bp->threads[i], NULL);
    free(bp->threads);
    if (bp->efd >= 0)
        close(bp->efd);
    pthread_mutex_destroy(&bp->mu);
    pthread_cond_destroy(&bp->cv);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * blocking_pool.h - threads that run blocking work for an event loop.
 */
#ifndef FCGATE_BLOCKING_POOL_H
#define FCGATE_BLOCKING_POOL_H

#include <fcgate/app.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct pool_job {
    int (*fn)(sqlite3 *db, void *arg);
    void *arg;
    int result;
    void *owner; /* the caller's: who to resume */
    uint64_t queued_us;
    struct pool_job *next;
};

struct blocking_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pool_job *head, *tail; /* waiting to run */
    struct pool_job *done;        /* finished, for the loop */
    int efd;                      /* readable when done is not empty */
    int stop;
    int idle;          /* threads waiting on cv */
    int waking;        /* a thread was signalled and has not taken a job yet */
    atomic_int queued; /* jobs waiting to run, readable without mu */
    pthread_t *threads;
    size_t n;
};

/* Starts n threads. 0, or -1 (logged). */
int pool_start(struct blocking_pool *bp, size_t n);
/* Queues j; the caller keeps j alive until it comes back done. */
void pool_submit(struct blocking_pool *bp, struct pool_job *j);
/* Wakes another thread if the oldest queued job has waited too long
 * behind running ones. Returns non-zero while jobs are queued: the loop
 * then calls again within a millisecond. */
int pool_kick(struct blocking_pool *bp);
/* The finished jobs (a list through next), clearing the eventfd. */
struct pool_job *pool_take_done(struct blocking_pool *bp);
/* Runs what is queued, then joins the threads. */
void pool_stop(struct blocking_pool *bp);

#endif

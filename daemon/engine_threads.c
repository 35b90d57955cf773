/*
 * engine_threads.c - `threads` serving threads per worker, each running
 * the blocking loop of engine_sync.c on its own connection. No lock is
 * shared on the request path: each thread has its own scoreboard slot,
 * codec, buffers and sqlite connection.
 */
#include "fcgate.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct thread_arg {
    struct worker *w;
    struct score_slot *slot;
};

static void *serve(void *p)
{
    struct thread_arg *a = p;
    engine_sync_thread(a->w, a->slot);
    db_close_thread();
    return NULL;
}

void engine_threads_run(struct worker *w)
{
    size_t n = (size_t)w->cfg->threads;
    pthread_t *tids = calloc(n, sizeof(*tids));
    struct thread_arg *args = calloc(n, sizeof(*args));
    size_t started = 0;

    if (!tids || !args) {
        log_error("out of memory starting %zu threads", n);
        goto out;
    }
    if (engine_sync_park_init(w) < 0)
        goto out;
    for (; started < n; started++) {
        args[started].w = w;
        args[started].slot = scoreboard_slot(w->sb, w->index, started);
        int rc = pthread_create(&tids[started], NULL, serve, &args[started]);
        if (rc != 0) {
            log_error("cannot start serving thread %zu: %s", started, strerror(rc));
            worker_stop(w);
            break;
        }
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    engine_sync_park_fini(w);
out:
    free(tids);
    free(args);
}

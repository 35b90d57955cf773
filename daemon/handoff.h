/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * handoff.h - idle FastCGI connections passed from a retiring worker to a
 * serving one, so that a reload never closes a connection nginx keeps
 * alive (fastcgi_keep_conn + upstream keepalive).
 *
 * Closing an idle kept-alive connection races with nginx, which may be
 * writing the next request on it at that moment; nginx retries that
 * request only if it is idempotent, so a POST gets a 502. A worker that
 * retires (HUP, max_requests, TTOU, USR2) instead sends each idle
 * connection's descriptor (SCM_RIGHTS) into a SOCK_SEQPACKET pair that
 * every worker of every generation inherits; whichever serving worker
 * reads it first adopts the connection. nginx never sees a close. A worker
 * stops reading the pair as soon as it is stopping, so connections end up
 * with the workers that stay.
 *
 * A full stop (TERM, INT, QUIT) closes the hand-off (handoff_open() is 0):
 * there is nobody to hand to, and workers close connections as before.
 */
#ifndef FCGATE_HANDOFF_H
#define FCGATE_HANDOFF_H

#include <stdatomic.h>

struct handoff {
    int tx, rx;        /* send on tx, receive on rx; -1: no hand-off */
    _Atomic int *open; /* shared with the workers: 1 while handing off makes sense */
};

/* Uses the inherited pair (tx, rx >= 0, after USR2) or makes a new one,
 * and maps the shared open flag (set to 1). -1 with errno. */
int handoff_init(struct handoff *h, int tx, int rx);
void handoff_fini(struct handoff *h);
/* The supervisor: no more hand-offs (a full stop), or again. */
void handoff_set_open(const struct handoff *h, int open);
int handoff_is_open(const struct handoff *h);
/* Passes fd on (the caller still closes its copy); kept: it has served a
 * request already. 0 when sent; -1 when not (no room, closed: close it). */
int handoff_send(const struct handoff *h, int fd, int kept);
/* A descriptor from the pair (close-on-exec, O_NONBLOCK as nonblock
 * says, or as it came when nonblock < 0), *kept set; -1 when there is
 * none now. */
int handoff_recv(const struct handoff *h, int *kept, int nonblock);

#endif

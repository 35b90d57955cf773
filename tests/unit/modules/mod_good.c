/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_good.c - a well-formed, thread-safe module for test_app_loader.
 * It calls nothing of fcgate's: the test binary exports no fcgate_*.
 */
#include <fcgate/app.h>

static int good_token;

static int good_init(const fcgate_host *h, void **ctx)
{
    (void)h;
    *ctx = &good_token;
    return 0;
}

/* 0 only with the context init gave: proves the test reached this code. */
static int good_handle(void *ctx, fcgate_req *r)
{
    (void)r;
    return ctx == &good_token ? 0 : -1;
}

FCGATE_APP(.name = "good", .flags = FCGATE_APP_THREADSAFE, .init = good_init,
           .handle = good_handle);

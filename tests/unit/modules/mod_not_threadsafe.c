/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_not_threadsafe.c - a well-formed module that does not declare
 * FCGATE_APP_THREADSAFE: loadable, refused for threads mode.
 */
#include <fcgate/app.h>

static int nts_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return 0;
}

FCGATE_APP(.name = "not_threadsafe", .handle = nts_handle);

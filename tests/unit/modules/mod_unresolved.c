/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_unresolved.c - calls a function nothing defines. With RTLD_NOW the
 * load fails at once, instead of on the first request that reaches the
 * call. (The symbol is deliberately not an fcgate_* one.)
 */
#include <fcgate/app.h>

int no_such_function_anywhere(void);

static int unresolved_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return no_such_function_anywhere();
}

FCGATE_APP(.name = "unresolved", .flags = FCGATE_APP_THREADSAFE, .handle = unresolved_handle);

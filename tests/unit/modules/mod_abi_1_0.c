/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_abi_1_0.c - a module built for ABI 1.0 (before PostgreSQL): a
 * daemon of a later minor version still loads it.
 */
#include <fcgate/app.h>

static int old_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return 0;
}

extern FCGATE_EXPORT const struct fcgate_app fcgate_app_module;
FCGATE_EXPORT const struct fcgate_app fcgate_app_module = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = 1,
    .abi_minor = 0,
    .size = sizeof(struct fcgate_app),
    .name = "abi_1_0",
    .flags = FCGATE_APP_THREADSAFE,
    .handle = old_handle,
};

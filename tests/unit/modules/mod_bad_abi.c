/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_bad_abi.c - a module built for the next, incompatible ABI major.
 */
#include <fcgate/app.h>

static int bad_abi_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return 0;
}

FCGATE_EXPORT const struct fcgate_app fcgate_app_module = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = FCGATE_ABI_MAJOR + 1,
    .abi_minor = 0,
    .size = sizeof(struct fcgate_app),
    .name = "bad_abi",
    .flags = FCGATE_APP_THREADSAFE,
    .handle = bad_abi_handle,
};

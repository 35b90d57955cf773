/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_bad_magic.c - exports fcgate_app_module with a wrong magic, as a
 * stray object of the same name (or a corrupted build) would.
 */
#include <fcgate/app.h>

static int bad_magic_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return 0;
}

FCGATE_EXPORT const struct fcgate_app fcgate_app_module = {
    .magic = 0xdeadbeefu,
    .abi_major = FCGATE_ABI_MAJOR,
    .abi_minor = FCGATE_ABI_MINOR,
    .size = sizeof(struct fcgate_app),
    .name = "bad_magic",
    .flags = FCGATE_APP_THREADSAFE,
    .handle = bad_magic_handle,
};

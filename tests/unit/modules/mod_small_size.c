/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_small_size.c - a record claiming to be 8 bytes long: smaller than
 * the fields ABI 1.0 defines, so none of them may be trusted.
 */
#include <fcgate/app.h>

static int small_size_handle(void *ctx, fcgate_req *r)
{
    (void)ctx;
    (void)r;
    return 0;
}

FCGATE_EXPORT const struct fcgate_app fcgate_app_module = {
    .magic = FCGATE_APP_MAGIC,
    .abi_major = FCGATE_ABI_MAJOR,
    .abi_minor = FCGATE_ABI_MINOR,
    .size = 8,
    .name = "small_size",
    .flags = FCGATE_APP_THREADSAFE,
    .handle = small_size_handle,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_no_handle.c - a correct record without a handle function: nothing
 * could serve a request with it.
 */
#include <fcgate/app.h>

FCGATE_APP(.name = "no_handle", .flags = FCGATE_APP_THREADSAFE, .handle = NULL);

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mod_no_symbol.c - a shared object that is not a fcgate module: it
 * exports a function, but no fcgate_app_module.
 */
#include <fcgate/app.h>

FCGATE_EXPORT int not_an_app(void);
FCGATE_EXPORT int not_an_app(void)
{
    return 42;
}

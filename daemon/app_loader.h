/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * app_loader.h - loading an application module and checking its ABI.
 */
#ifndef FCGATE_APP_LOADER_H
#define FCGATE_APP_LOADER_H

#include <fcgate/app.h>
#include <stddef.h>

struct app_module {
    void *handle;                 /* dlopen handle */
    const struct fcgate_app *app; /* the module's exported record */
    int snapshot_fd;              /* the private copy loaded; valid with handle */
};

/* Copies the file at path into memory and dlopen()s that copy
 * (RTLD_NOW | RTLD_LOCAL), so rewriting the file later cannot change the
 * loaded code; each call loads its own copy. Checks fcgate_app_module:
 * present, magic, ABI major equal and minor not newer than the daemon's,
 * size at least what ABI 1.0 defined, handle set. 0, or -1 with a message
 * naming the module and what differs in err. */
int app_load(const char *path, struct app_module *m, char *err, size_t errlen);

/* Refuses a module that did not declare FCGATE_APP_THREADSAFE when it is
 * to run on several threads. 0, or -1 with err. */
int app_check_threads(const struct app_module *m, const char *path, char *err, size_t errlen);

void app_unload(struct app_module *m);

#endif

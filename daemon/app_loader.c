/*
 * app_loader.c - dlopen an application module and check that it speaks
 * this daemon's ABI before anything in it runs.
 *
 * RTLD_NOW: a module missing a symbol fails here, at load, not on the
 * first request that happens to call it. RTLD_LOCAL: two modules' symbols
 * never mix. The record's size lets later minor versions grow the struct:
 * a module built against 1.x with x <= ours is accepted as long as it
 * carries at least the fields 1.0 defined.
 */
#include "app_loader.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Everything up to and including the ABI 1.0 fields. */
#define ABI_1_0_SIZE (offsetof(struct fcgate_app, reserved) + 4 * sizeof(void *))

int app_load(const char *path, struct app_module *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "cannot load app module %s: %s", path, dlerror());
        return -1;
    }
    const struct fcgate_app *app = dlsym(h, "fcgate_app_module");
    if (!app) {
        snprintf(err, errlen,
                 "app module %s does not export fcgate_app_module (define it with FCGATE_APP)",
                 path);
        goto fail;
    }
    if (app->magic != FCGATE_APP_MAGIC) {
        snprintf(err, errlen, "app module %s: bad magic 0x%08x, expected 0x%08x", path, app->magic,
                 FCGATE_APP_MAGIC);
        goto fail;
    }
    if (app->abi_major != FCGATE_ABI_MAJOR || app->abi_minor > FCGATE_ABI_MINOR) {
        snprintf(err, errlen, "app module %s was built for ABI %u.%u; this fcgate provides %u.%u",
                 path, app->abi_major, app->abi_minor, FCGATE_ABI_MAJOR, FCGATE_ABI_MINOR);
        goto fail;
    }
    if (app->size < ABI_1_0_SIZE) {
        snprintf(err, errlen, "app module %s: record size %u is smaller than ABI %u.0's %zu", path,
                 app->size, FCGATE_ABI_MAJOR, (size_t)ABI_1_0_SIZE);
        goto fail;
    }
    if (!app->handle) {
        snprintf(err, errlen, "app module %s has no handle function", path);
        goto fail;
    }
    m->handle = h;
    m->app = app;
    return 0;
fail:
    dlclose(h);
    return -1;
}

int app_check_threads(const struct app_module *m, const char *path, char *err, size_t errlen)
{
    if (m->app->flags & FCGATE_APP_THREADSAFE)
        return 0;
    snprintf(err, errlen,
             "app module %s (%s) is not declared thread-safe (FCGATE_APP_THREADSAFE); "
             "run it with mode = \"sync\" or \"async\"",
             path, m->app->name ? m->app->name : "unnamed");
    return -1;
}

void app_unload(struct app_module *m)
{
    if (m->handle)
        dlclose(m->handle);
    memset(m, 0, sizeof(*m));
}

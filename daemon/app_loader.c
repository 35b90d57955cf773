/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * app_loader.c - dlopen an application module and check that it speaks
 * this daemon's ABI before anything in it runs.
 *
 * RTLD_NOW: a module missing a symbol fails here, at load, not on the
 * first request that happens to call it. RTLD_LOCAL: two modules' symbols
 * never mix. The record's size lets later minor versions grow the struct:
 * a module built against 1.x with x <= ours is accepted as long as it
 * carries at least the fields 1.0 defined.
 *
 * What is loaded is a private snapshot of the file, not the file: dlopen
 * maps the file it is given, and `cp new.so app.so` truncates and rewrites
 * that same inode, changing the code under running workers (they crashed
 * on their next request). A copy in a memfd cannot change; a reload loads
 * whatever the file holds then.
 */
#include "app_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

/* Everything up to and including the ABI 1.0 fields. */
#define ABI_1_0_SIZE (offsetof(struct fcgate_app, reserved) + 4 * sizeof(void *))

/* Tries to copy a file being rewritten this often before giving up. */
#define SNAPSHOT_TRIES 5

static int same_version(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Copies fd to its end into a new memfd: the memfd, or -1 (errno). *changed
 * is set when the file changed while it was being copied. */
static int copy_to_memfd(int fd, int *changed)
{
    struct stat before, after;
    ssize_t n;
    int mfd = -1;

    if (fstat(fd, &before) < 0)
        return -1;
    if (!S_ISREG(before.st_mode)) {
        errno = S_ISDIR(before.st_mode) ? EISDIR : EINVAL;
        return -1;
    }
    mfd = memfd_create("fcgate-app", MFD_CLOEXEC);
    if (mfd < 0)
        return -1;
    off_t off = 0;
    while ((n = sendfile(mfd, fd, &off, 1 << 20)) > 0)
        ;
    if (n < 0 || fstat(fd, &after) < 0)
        goto fail;
    *changed = !same_version(&before, &after);
    return mfd;
fail:
    close(mfd);
    return -1;
}

/* A private, unchanging copy of the file at path: a memfd, or -1 with err. */
static int snapshot(const char *path, char *err, size_t errlen)
{
    int changed = 1, mfd = -1;

    for (int i = 0; i < SNAPSHOT_TRIES && changed; i++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        if (mfd >= 0)
            close(mfd);
        mfd = copy_to_memfd(fd, &changed);
        close(fd);
        if (mfd < 0)
            break;
    }
    if (mfd < 0) {
        snprintf(err, errlen, "cannot load app module %s: %s", path, strerror(errno));
        return -1;
    }
    if (changed) {
        snprintf(err, errlen, "cannot load app module %s: it kept changing while being read", path);
        close(mfd);
        return -1;
    }
    return mfd;
}

/* dlerror() names the snapshot's /proc path: name the module instead. */
static const char *dl_reason(const char *proc)
{
    const char *e = dlerror();
    size_t n = strlen(proc);
    if (!e)
        return "unknown error";
    return strncmp(e, proc, n) == 0 && e[n] == ':' ? e + n + 1 + (e[n + 1] == ' ') : e;
}

/* Checks the exported record: 0, or -1 with what is wrong in err. */
static int check_record(const char *path, const struct fcgate_app *app, char *err, size_t errlen)
{
    if (!app) {
        snprintf(err, errlen,
                 "app module %s does not export fcgate_app_module (define it with FCGATE_APP)",
                 path);
        return -1;
    }
    if (app->magic != FCGATE_APP_MAGIC) {
        snprintf(err, errlen, "app module %s: bad magic 0x%08x, expected 0x%08x", path, app->magic,
                 FCGATE_APP_MAGIC);
        return -1;
    }
    if (app->abi_major != FCGATE_ABI_MAJOR || app->abi_minor > FCGATE_ABI_MINOR) {
        snprintf(err, errlen, "app module %s was built for ABI %u.%u; this fcgate provides %u.%u",
                 path, app->abi_major, app->abi_minor, FCGATE_ABI_MAJOR, FCGATE_ABI_MINOR);
        return -1;
    }
    if (app->size < ABI_1_0_SIZE) {
        snprintf(err, errlen, "app module %s: record size %u is smaller than ABI %u.0's %zu", path,
                 app->size, FCGATE_ABI_MAJOR, (size_t)ABI_1_0_SIZE);
        return -1;
    }
    if (!app->handle) {
        snprintf(err, errlen, "app module %s has no handle function", path);
        return -1;
    }
    return 0;
}

int app_load(const char *path, struct app_module *m, char *err, size_t errlen)
{
    char proc[64];
    void *h = NULL;

    memset(m, 0, sizeof(*m));
    int mfd = snapshot(path, err, errlen);
    if (mfd < 0)
        return -1;
    /* The memfd stays open while the module is loaded: dlopen knows
     * objects by name, and this name must not come back for another
     * module before this one is unloaded. */
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", mfd);
    h = dlopen(proc, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "cannot load app module %s: %s", path, dl_reason(proc));
        goto fail;
    }
    const struct fcgate_app *app = dlsym(h, "fcgate_app_module");
    if (check_record(path, app, err, errlen) < 0)
        goto fail;
    m->handle = h;
    m->app = app;
    m->snapshot_fd = mfd;
    return 0;
fail:
    if (h)
        dlclose(h);
    close(mfd);
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
    if (m->handle) {
        dlclose(m->handle);
        close(m->snapshot_fd);
    }
    memset(m, 0, sizeof(*m));
}

/*
 * hello.c - a minimal fcgate application module.
 *
 *   GET /anything?name=you   ->  200 "hello, you\n"  (text/plain)
 *   any other method         ->  405 with an Allow header
 *
 * The greeting comes from the configuration's app.settings:
 *     app = { module = "/path/to/hello.so"; settings = { greeting = "hi"; }; };
 *
 * Build it out of tree with the Makefile next to this file (it asks
 * pkg-config for the flags of <fcgate/app.h>), then run it with
 *     fcgate --app ./hello.so --listen 127.0.0.1:9000 --database ""
 */
#include <fcgate/app.h>

#include <stdlib.h>
#include <string.h>

struct hello {
    const char *greeting; /* borrowed from the host: valid until fini */
};

/* Once per worker, after fork. */
static int hello_init(const fcgate_host *h, void **ctx)
{
    struct hello *app = malloc(sizeof(*app));
    if (!app)
        return FCGATE_ENOMEM;
    app->greeting = fcgate_setting(h, "greeting");
    if (!app->greeting)
        app->greeting = "hello";
    *ctx = app;
    return FCGATE_OK;
}

/* Any number of threads at once (FCGATE_APP_THREADSAFE): ctx is read-only. */
static int hello_handle(void *ctx, fcgate_req *r)
{
    const struct hello *app = ctx;
    char name[128];

    if (strcmp(fcgate_method(r), "GET") != 0 && strcmp(fcgate_method(r), "HEAD") != 0) {
        fcgate_set_status(r, 405);
        fcgate_add_header(r, "Allow", "GET, HEAD");
        return fcgate_printf(r, "method not allowed\n");
    }
    if (fcgate_query_value(r, "name", name, sizeof(name)) < 0)
        strcpy(name, "world");
    fcgate_add_header(r, "Content-Type", "text/plain; charset=utf-8");
    return fcgate_printf(r, "%s, %s\n", app->greeting, name);
}

static void hello_fini(void *ctx)
{
    free(ctx);
}

FCGATE_APP(.name = "hello", .flags = FCGATE_APP_THREADSAFE, .init = hello_init,
           .handle = hello_handle, .fini = hello_fini);

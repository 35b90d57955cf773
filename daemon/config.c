/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config.c - embedded defaults, the libconfig file, command-line overrides
 * and validation, copied into the plain struct config.
 *
 * Pure in the sense of redis' anet: nothing here logs or exits. Every
 * problem becomes one "FILE:LINE: message" line in the caller's error
 * list, and loading goes on so that one run of `fcgate -t` shows them all.
 * A key whose value is rejected keeps its previous value; callers throw
 * the struct away when any error was reported.
 */
#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcgate/app.h>

#include "listen.h"

#define DEFAULT_LISTEN "unix:/run/fcgate/fcgate.sock"
#define DEFAULT_MODULE "/usr/lib/fcgate/apps/notes.so"
#define DEFAULT_DATABASE "/var/lib/fcgate/notes.db"

/* A configuration file is a few KiB; the cap only stops `-c /dev/zero`
 * from eating the supervisor's memory. */
#define CONFIG_FILE_MAX (16u << 20)

/* libconfig 1.5 refuses to nest includes deeper than 10; the pre-scan
 * below follows a little further so that include cycles still end. */
#define INCLUDE_DEPTH_MAX 16

/* max_body_bytes may be 4 GiB only where size_t can say so. */
#define BODY_MAX ((long long)(SIZE_MAX < 4294967296ull ? SIZE_MAX : 4294967296ull))

#define CLI_LISTEN "--listen"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* ---- error list ---- */

/* Appends one message; returns 1, the number of errors it stands for, even
 * when memory ran out and the text could not be kept. */
int config_error(struct config_errors *e, const char *fmt, ...)
{
    va_list ap;
    char *m, **v;
    int r;

    if (e == NULL)
        return 1;
    va_start(ap, fmt);
    r = vasprintf(&m, fmt, ap);
    va_end(ap);
    if (r < 0)
        return 1;
    v = realloc(e->msg, (e->n + 1) * sizeof(*v));
    if (v == NULL) {
        free(m);
        return 1;
    }
    e->msg = v;
    e->msg[e->n++] = m;
    return 1;
}

static void mark_unparsed(struct config_errors *e)
{
    if (e != NULL)
        e->unparsed = 1;
}

void config_errors_free(struct config_errors *e)
{
    size_t i;

    if (e == NULL)
        return;
    for (i = 0; i < e->n; i++)
        free(e->msg[i]);
    free(e->msg);
    e->msg = NULL;
    e->n = 0;
    e->unparsed = 0;
}

/* Text from the file or the command line, made safe for a one-line
 * message: at most QUOTE_MAX bytes, control bytes as \xNN. */
#define QUOTE_MAX 80
struct qbuf {
    char s[QUOTE_MAX * 4 + 4];
};

static const char *quote(struct qbuf *b, const char *s)
{
    size_t i, o = 0;

    for (i = 0; s[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == QUOTE_MAX) {
            memcpy(b->s + o, "...", 3);
            o += 3;
            break;
        }
        if (ch < 0x20 || ch == 0x7f) {
            snprintf(b->s + o, 5, "\\x%02x", ch);
            o += 4;
        } else {
            b->s[o++] = (char)ch;
        }
    }
    b->s[o] = '\0';
    return b->s;
}

/* ---- reading files ---- */

/* Reads a whole file into a NUL-terminated buffer. 0, or -1 with errno. */
static int read_all(const char *path, char **out, size_t *outlen)
{
    struct stat st;
    char *buf = NULL, *nbuf;
    size_t len = 0, cap = 0;
    ssize_t r;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0)
        goto fail;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        goto fail;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > CONFIG_FILE_MAX) {
                errno = EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            nbuf = realloc(buf, cap + 1);
            if (nbuf == NULL)
                goto fail;
            buf = nbuf;
        }
        r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf == NULL && (buf = malloc(1)) == NULL)
        return -1;
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;

fail:
    saved = errno;
    close(fd);
    free(buf);
    errno = saved;
    return -1;
}

/* How libconfig 1.5 resolves an @include: include_dir + "/" + name, even
 * when name is absolute. "." is left out so messages stay short. */
static char *include_path(const char *dir, const char *name)
{
    char *p;
    size_t dl;

    if (dir == NULL || (strcmp(dir, ".") == 0 && name[0] != '/'))
        return strdup(name);
    dl = strlen(dir);
    if (asprintf(&p, "%s%s%s", dir, dl > 0 && dir[dl - 1] == '/' ? "" : "/", name) < 0)
        return NULL;
    return p;
}

/* ---- the loader ---- */

struct loader {
    struct config *c;
    struct config_errors *errs;
    const char *name;        /* the top-level file or string, for messages */
    const char *include_dir; /* NULL: includes are relative to the cwd */
    int n;                   /* errors added */
};

/* "FILE:LINE" of a setting. libconfig names the file only for included
 * ones (the top level is read from memory), and names them as written. */
static char *where(const struct loader *L, const config_setting_t *s)
{
    const char *sf = config_setting_source_file(s);
    char *file = NULL, *w;
    int r;

    if (sf != NULL)
        file = include_path(L->include_dir, sf);
    r = asprintf(&w, "%s:%u", file ? file : sf ? sf : L->name, config_setting_source_line(s));
    free(file);
    return r < 0 ? NULL : w;
}

static void err_at(struct loader *L, const config_setting_t *s, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

static void err_at(struct loader *L, const config_setting_t *s, const char *fmt, ...)
{
    char *msg = NULL, *w = where(L, s);
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    L->n += config_error(L->errs, "%s: %s", w ? w : L->name, msg ? msg : "out of memory");
    free(msg);
    free(w);
}

/* Replaces *dst with a copy of v (NULL allowed). 0, or -1 after reporting. */
static int store(struct loader *L, const config_setting_t *s, char **dst, const char *v)
{
    char *d = NULL;

    if (v != NULL && (d = strdup(v)) == NULL) {
        err_at(L, s, "out of memory");
        return -1;
    }
    free(*dst);
    *dst = d;
    return 0;
}

struct key;
typedef void key_fn(struct loader *L, const config_setting_t *s, const struct key *k);

/* One known key. Integers are stored through off into an int, long or
 * size_t field according to set; strings into a char * field. */
struct key {
    const char *name;      /* as in the file */
    const char *path;      /* in messages: "limits.max_body_bytes" */
    key_fn *set;           /* validates and stores */
    size_t off;            /* field in struct config */
    long long min, max;    /* integer range */
    const struct key *sub; /* group members, ended by a NULL name */
};

#define FIELD(c, k, type) ((type *)(void *)((char *)(c) + (k)->off))

/* Integer keys accept both libconfig integer types: a value written with
 * an L suffix is an INT64 even when small. A float or a string is wrong. */
static int get_int(struct loader *L, const config_setting_t *s, const struct key *k, long long *out)
{
    long long v;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
        v = config_setting_get_int(s);
        break;
    case CONFIG_TYPE_INT64:
        v = config_setting_get_int64(s);
        break;
    default:
        err_at(L, s, "'%s' must be an integer", k->path);
        return -1;
    }
    if (v < k->min || v > k->max) {
        err_at(L, s, "'%s' must be between %lld and %lld, not %lld", k->path, k->min, k->max, v);
        return -1;
    }
    *out = v;
    return 0;
}

static void set_int(struct loader *L, const config_setting_t *s, const struct key *k)
{
    long long v;

    if (get_int(L, s, k, &v) == 0)
        *FIELD(L->c, k, int) = (int)v;
}

static void set_long(struct loader *L, const config_setting_t *s, const struct key *k)
{
    long long v;

    if (get_int(L, s, k, &v) == 0)
        *FIELD(L->c, k, long) = (long)v;
}

static void set_size(struct loader *L, const config_setting_t *s, const struct key *k)
{
    long long v;

    if (get_int(L, s, k, &v) == 0)
        *FIELD(L->c, k, size_t) = (size_t)v;
}

/* Seconds with a fraction (5, 0.5), stored as milliseconds in an
 * unsigned long; min and max are milliseconds: slowlog.timeout,
 * queue_timeout. */
static void set_seconds_ms(struct loader *L, const config_setting_t *s, const struct key *k)
{
    double v;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
        v = config_setting_get_int(s);
        break;
    case CONFIG_TYPE_INT64:
        v = (double)config_setting_get_int64(s);
        break;
    case CONFIG_TYPE_FLOAT:
        v = config_setting_get_float(s);
        break;
    default:
        err_at(L, s, "'%s' must be a number of seconds, like 5 or 0.5", k->path);
        return;
    }
    double ms = v * 1000.0;
    if (!(ms >= (double)k->min && ms <= (double)k->max)) {
        err_at(L, s, "'%s' must be between %g and %g seconds, not %g", k->path,
               (double)k->min / 1e3, (double)k->max / 1e3, v);
        return;
    }
    *FIELD(L->c, k, unsigned long) = (unsigned long)(ms + 0.5);
}

static const char *get_str(struct loader *L, const config_setting_t *s, const struct key *k)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        err_at(L, s, "'%s' must be a string", k->path);
        return NULL;
    }
    return config_setting_get_string(s);
}

/* A string that must not be empty: user, group, module, log file. */
static void set_str(struct loader *L, const config_setting_t *s, const struct key *k)
{
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (*v == '\0') {
        err_at(L, s, "'%s' must not be empty", k->path);
        return;
    }
    store(L, s, FIELD(L->c, k, char *), v);
}

/* A path where "" means none: pidfile, database. */
static void set_str_opt(struct loader *L, const config_setting_t *s, const struct key *k)
{
    const char *v = get_str(L, s, k);

    if (v != NULL)
        store(L, s, FIELD(L->c, k, char *), *v ? v : NULL);
}

/* A libpq connection string or URI, checked by libpq's own parser (its
 * syntax only: whether the server answers is the workers' concern). */
static void set_postgres(struct loader *L, const config_setting_t *s, const struct key *k)
{
    char *why = NULL;
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (*v == '\0') {
        store(L, s, FIELD(L->c, k, char *), NULL);
        return;
    }
    PQconninfoOption *opts = PQconninfoParse(v, &why);
    if (opts == NULL) {
        size_t n = why ? strlen(why) : 0;
        while (n > 0 && why[n - 1] == '\n')
            why[--n] = '\0';
        err_at(L, s, "'%s': %s", k->path, why ? why : "out of memory");
        PQfreemem(why);
        return;
    }
    PQconninfoFree(opts);
    store(L, s, FIELD(L->c, k, char *), v);
}

static void set_bool(struct loader *L, const config_setting_t *s, const struct key *k)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        err_at(L, s, "'%s' must be true or false", k->path);
        return;
    }
    *FIELD(L->c, k, int) = config_setting_get_bool(s) ? 1 : 0;
}

static void set_module(struct loader *L, const config_setting_t *s, const struct key *k)
{
    char *w;
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (*v == '\0') {
        err_at(L, s, "'%s' must not be empty", k->path);
        return;
    }
    if ((w = where(L, s)) == NULL) {
        err_at(L, s, "out of memory");
        return;
    }
    if (store(L, s, &L->c->app_module, v) < 0) {
        free(w);
        return;
    }
    free(L->c->app_module_origin);
    L->c->app_module_origin = w;
}

static void set_listen(struct loader *L, const config_setting_t *s, const struct key *k)
{
    char *list[CONFIG_MAX_LISTEN] = {0}, *orig[CONFIG_MAX_LISTEN] = {0};
    struct listen_addr a;
    struct qbuf qb;
    char why[128];
    int i, n, bad = 0;

    if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
        err_at(L, s, "'%s' must be an array of strings, like [ \"127.0.0.1:9000\" ]", k->path);
        return;
    }
    n = config_setting_length(s);
    if (n < 1 || n > CONFIG_MAX_LISTEN) {
        err_at(L, s, "'%s' must list between 1 and %d addresses, not %d", k->path,
               CONFIG_MAX_LISTEN, n);
        return;
    }
    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v;

        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            err_at(L, e, "'%s' entries must be strings", k->path);
            bad++;
            continue;
        }
        v = config_setting_get_string(e);
        if (listen_parse(v, &a, why, sizeof(why)) < 0) {
            err_at(L, e, "bad listen address '%s': %s", quote(&qb, v), why);
            bad++;
            continue;
        }
        list[i] = strdup(v);
        orig[i] = where(L, e);
        if (list[i] == NULL || orig[i] == NULL) {
            err_at(L, e, "out of memory");
            bad++;
        }
    }
    if (bad == 0) {
        for (i = 0; i < (int)L->c->nlisten; i++) {
            free(L->c->listen[i]);
            free(L->c->listen_origin[i]);
        }
        memcpy(L->c->listen, list, sizeof(list));
        memcpy(L->c->listen_origin, orig, sizeof(orig));
        L->c->nlisten = (size_t)n;
        return;
    }
    for (i = 0; i < n; i++) {
        free(list[i]);
        free(orig[i]);
    }
}

/* Octal digits in a string, because libconfig reads 0660 as decimal 660. */
static int parse_mode(const char *v, unsigned *out)
{
    unsigned m = 0;

    if (*v == '\0')
        return -1;
    for (; *v != '\0'; v++) {
        if (*v < '0' || *v > '7')
            return -1;
        m = m * 8 + (unsigned)(*v - '0');
        if (m > 0777)
            return -1;
    }
    *out = m;
    return 0;
}

/* Permission bits written as an octal string: listen_mode, umask. */
static void set_octal(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    unsigned m;
    const char *v;

    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        err_at(L, s, "'%s' must be a string of octal digits, like \"0660\"", k->path);
        return;
    }
    v = config_setting_get_string(s);
    if (parse_mode(v, &m) < 0) {
        err_at(L, s, "'%s' must be octal permission bits between \"0\" and \"0777\", not \"%s\"",
               k->path, quote(&qb, v));
        return;
    }
    *FIELD(L->c, k, unsigned) = m;
}

static int parse_worker_mode(const char *v, enum config_mode *out)
{
    if (strcmp(v, "sync") == 0)
        *out = MODE_SYNC;
    else if (strcmp(v, "threads") == 0)
        *out = MODE_THREADS;
    else if (strcmp(v, "async") == 0)
        *out = MODE_ASYNC;
    else
        return -1;
    return 0;
}

static void set_mode(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    const char *v = get_str(L, s, k);

    if (v != NULL && parse_worker_mode(v, &L->c->mode) < 0)
        err_at(L, s, "'%s' must be \"sync\", \"threads\" or \"async\", not \"%s\"", k->path,
               quote(&qb, v));
}

static void set_log_level(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    int level = log_level_parse(v);
    if (level >= 0) {
        L->c->log_level = level;
        return;
    }
    err_at(L, s, "'%s' must be \"error\", \"warn\", \"info\" or \"debug\", not \"%s\"", k->path,
           quote(&qb, v));
}

static void set_log_access(struct loader *L, const config_setting_t *s, const struct key *k)
{
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (*v == '\0') {
        err_at(L, s, "'%s' must not be empty (\"off\" turns it off)", k->path);
        return;
    }
    store(L, s, &L->c->log_access, strcmp(v, "off") == 0 ? NULL : v);
}

static void set_access_format(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    char bad[80];
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (log_access_format_check(v, bad, sizeof(bad)) < 0) {
        err_at(L, s, "'%s': unknown variable '%s'", k->path, quote(&qb, bad));
        return;
    }
    store(L, s, &L->c->log_access_format, v);
}

/* Shortest text that reads back as the same double. */
static int format_double(double d, char **out)
{
    char buf[40];

    snprintf(buf, sizeof(buf), "%.15g", d);
    if (strtod(buf, NULL) != d)
        snprintf(buf, sizeof(buf), "%.17g", d);
    *out = strdup(buf);
    return *out ? 0 : -1;
}

/* app.settings: free-form scalars the app reads as strings through
 * fcgate_setting(). Nested values have no string form, so they are
 * refused rather than silently dropped. */
static void set_settings(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct config_setting *v = NULL;
    struct qbuf qb;
    int i, n, bad = 0, r;

    if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
        err_at(L, s, "'%s' must be a group, like %s = { name = \"value\"; }", k->path, k->name);
        return;
    }
    n = config_setting_length(s);
    if (n > 0 && (v = calloc((size_t)n, sizeof(*v))) == NULL) {
        err_at(L, s, "out of memory");
        return;
    }
    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char *val = NULL;

        switch (config_setting_type(e)) {
        case CONFIG_TYPE_INT:
            r = asprintf(&val, "%d", config_setting_get_int(e));
            break;
        case CONFIG_TYPE_INT64:
            r = asprintf(&val, "%lld", config_setting_get_int64(e));
            break;
        case CONFIG_TYPE_FLOAT:
            r = format_double(config_setting_get_float(e), &val);
            break;
        case CONFIG_TYPE_BOOL:
            r = (val = strdup(config_setting_get_bool(e) ? "true" : "false")) ? 0 : -1;
            break;
        case CONFIG_TYPE_STRING:
            r = (val = strdup(config_setting_get_string(e))) ? 0 : -1;
            break;
        default:
            err_at(L, e, "'%s.%s' must be a number, a boolean or a string", k->path,
                   quote(&qb, config_setting_name(e)));
            bad++;
            continue;
        }
        if (r < 0) {
            val = NULL;
            err_at(L, e, "out of memory");
            bad++;
            continue;
        }
        v[i].value = val;
        if ((v[i].name = strdup(config_setting_name(e))) == NULL) {
            err_at(L, e, "out of memory");
            bad++;
        }
    }
    if (bad == 0) {
        for (i = 0; i < (int)L->c->nsettings; i++) {
            free(L->c->settings[i].name);
            free(L->c->settings[i].value);
        }
        free(L->c->settings);
        L->c->settings = v;
        L->c->nsettings = (size_t)n;
        return;
    }
    for (i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

static void set_pm(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (strcmp(v, "static") == 0)
        L->c->pm = PM_STATIC;
    else if (strcmp(v, "dynamic") == 0)
        L->c->pm = PM_DYNAMIC;
    else if (strcmp(v, "ondemand") == 0)
        L->c->pm = PM_ONDEMAND;
    else
        err_at(L, s, "'%s' must be \"static\", \"dynamic\" or \"ondemand\", not \"%s\"", k->path,
               quote(&qb, v));
}

int config_parse_size(const char *v, unsigned long long *out)
{
    unsigned long long n = 0, mult = 1;
    const char *p = v;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (ULLONG_MAX - 9) / 10)
            return -1;
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    switch (*p) {
    case 'k':
    case 'K':
        mult = 1ull << 10;
        break;
    case 'm':
    case 'M':
        mult = 1ull << 20;
        break;
    case 'g':
    case 'G':
        mult = 1ull << 30;
        break;
    case '\0':
        break;
    default:
        return -1;
    }
    if (*p != '\0' && p[1] != '\0')
        return -1;
    if (n > ULLONG_MAX / mult)
        return -1;
    *out = n * mult;
    return 0;
}

/* Bytes: "512M", "2G", "0" (off), or a plain integer. */
static void set_bytes(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct qbuf qb;
    unsigned long long v;
    long long i;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        if (get_int(L, s, k, &i) == 0)
            *FIELD(L->c, k, unsigned long long) = (unsigned long long)i;
        return;
    case CONFIG_TYPE_STRING:
        if (config_parse_size(config_setting_get_string(s), &v) < 0 ||
            v > (unsigned long long)k->max) {
            err_at(
                L, s,
                "'%s' must be a size like \"512M\" (K, M, G: powers of 1024) up to 1T, not \"%s\"",
                k->path, quote(&qb, config_setting_get_string(s)));
            return;
        }
        *FIELD(L->c, k, unsigned long long) = v;
        return;
    default:
        err_at(L, s, "'%s' must be a size like \"512M\"", k->path);
    }
}

static void walk(struct loader *L, const config_setting_t *g, const struct key *keys,
                 const char *group);

static void set_group(struct loader *L, const config_setting_t *s, const struct key *k)
{
    if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
        err_at(L, s, "'%s' must be a group, like %s = { ... }", k->path, k->name);
        return;
    }
    walk(L, s, k->sub, k->path);
}

#define OFF(f) offsetof(struct config, f)

static const struct key app_keys[] = {
    {"module", "app.module", set_module, 0, 0, 0, NULL},
    {"database", "app.database", set_str_opt, OFF(app_database), 0, 0, NULL},
    {"postgres", "app.postgres", set_postgres, OFF(app_postgres), 0, 0, NULL},
    {"postgres_pool", "app.postgres_pool", set_int, OFF(app_postgres_pool), 1, 1024, NULL},
    {"postgres_pool_timeout", "app.postgres_pool_timeout", set_int, OFF(app_postgres_pool_timeout),
     1, 86400, NULL},
    {"postgres_prepare", "app.postgres_prepare", set_bool, OFF(app_postgres_prepare), 0, 0, NULL},
    {"settings", "app.settings", set_settings, 0, 0, 0, NULL},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

static const struct key log_keys[] = {
    {"level", "log.level", set_log_level, 0, 0, 0, NULL},
    {"error", "log.error", set_str, OFF(log_error), 0, 0, NULL},
    {"access", "log.access", set_log_access, 0, 0, 0, NULL},
    {"access_format", "log.access_format", set_access_format, 0, 0, 0, NULL},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

static const struct key limits_keys[] = {
    {"max_params_bytes", "limits.max_params_bytes", set_size, OFF(max_params_bytes), 1024, 16777216,
     NULL},
    {"max_body_bytes", "limits.max_body_bytes", set_size, OFF(max_body_bytes), 0, BODY_MAX, NULL},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

/* One address, checked as listen's are. */
static void set_status_listen(struct loader *L, const config_setting_t *s, const struct key *k)
{
    struct listen_addr a;
    struct qbuf qb;
    char why[128];
    const char *v = get_str(L, s, k);

    if (v == NULL)
        return;
    if (listen_parse(v, &a, why, sizeof(why)) < 0) {
        err_at(L, s, "bad listen address '%s': %s", quote(&qb, v), why);
        return;
    }
    store(L, s, FIELD(L->c, k, char *), v);
}

static const struct key status_keys[] = {
    {"listen", "status.listen", set_status_listen, OFF(status_listen), 0, 0, NULL},
    {"listen_mode", "status.listen_mode", set_octal, OFF(status_listen_mode), 0, 0, NULL},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

static const struct key slowlog_keys[] = {
    {"file", "slowlog.file", set_str_opt, OFF(slowlog_file), 0, 0, NULL},
    {"timeout", "slowlog.timeout", set_seconds_ms, OFF(slowlog_timeout_ms), 1, 86400000, NULL},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

static const struct key root_keys[] = {
    {"listen", "listen", set_listen, 0, 0, 0, NULL},
    {"listen_backlog", "listen_backlog", set_int, OFF(listen_backlog), 1, 65535, NULL},
    {"listen_mode", "listen_mode", set_octal, OFF(listen_mode), 0, 0, NULL},
    {"umask", "umask", set_octal, OFF(umask), 0, 0, NULL},
    {"user", "user", set_str, OFF(user), 0, 0, NULL},
    {"group", "group", set_str, OFF(group), 0, 0, NULL},
    {"pidfile", "pidfile", set_str_opt, OFF(pidfile), 0, 0, NULL},
    {"mode", "mode", set_mode, 0, 0, 0, NULL},
    {"workers", "workers", set_int, OFF(workers), 1, 1024, NULL},
    {"threads", "threads", set_int, OFF(threads), 1, 1024, NULL},
    {"worker_connections", "worker_connections", set_int, OFF(worker_connections), 1, 1000000,
     NULL},
    {"blocking_threads", "blocking_threads", set_int, OFF(blocking_threads), 1, 256, NULL},
    {"stack_size", "stack_size", set_size, OFF(stack_size), 32768, 67108864, NULL},
    {"timeout", "timeout", set_int, OFF(timeout), 0, 86400, NULL},
    {"graceful_timeout", "graceful_timeout", set_int, OFF(graceful_timeout), 0, 86400, NULL},
    {"io_timeout", "io_timeout", set_int, OFF(io_timeout), 1, 86400, NULL},
    {"keepalive_timeout", "keepalive_timeout", set_int, OFF(keepalive_timeout), 1, 86400, NULL},
    {"max_requests", "max_requests", set_long, OFF(max_requests), 0, INT_MAX, NULL},
    {"max_requests_jitter", "max_requests_jitter", set_long, OFF(max_requests_jitter), 0, INT_MAX,
     NULL},
    {"pm", "pm", set_pm, 0, 0, 0, NULL},
    {"min_workers", "min_workers", set_int, OFF(min_workers), 0, 1024, NULL},
    {"max_workers", "max_workers", set_int, OFF(max_workers), 1, 1024, NULL},
    {"idle_timeout", "idle_timeout", set_int, OFF(idle_timeout), 1, 86400, NULL},
    {"queue_timeout", "queue_timeout", set_seconds_ms, OFF(queue_timeout_ms), 0, 86400000, NULL},
    {"max_memory", "max_memory", set_bytes, OFF(max_memory), 0, 1ll << 40, NULL},
    {"app", "app", set_group, 0, 0, 0, app_keys},
    {"log", "log", set_group, 0, 0, 0, log_keys},
    {"limits", "limits", set_group, 0, 0, 0, limits_keys},
    {"status", "status", set_group, 0, 0, 0, status_keys},
    {"slowlog", "slowlog", set_group, 0, 0, 0, slowlog_keys},
    {NULL, NULL, NULL, 0, 0, 0, NULL},
};

/* libconfig accepts any name; the schema is ours to enforce, so a typo
 * ("worker = 4") is an error instead of a silently ignored line. */
static void walk(struct loader *L, const config_setting_t *g, const struct key *keys,
                 const char *group)
{
    struct qbuf qb;
    int i, n = config_setting_length(g);

    for (i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(e);
        const struct key *k;

        for (k = keys; k->name != NULL; k++)
            if (strcmp(k->name, name) == 0)
                break;
        if (k->name != NULL)
            k->set(L, e, k);
        else
            err_at(L, e, "unknown key '%s%s%s'", group ? group : "", group ? "." : "",
                   quote(&qb, name));
    }
}

/* ---- pre-scan: what libconfig must not see ---- */

static void prescan(struct loader *L, const char *text, size_t len, const char *file, int depth);

/* One @include target: libconfig 1.5's flex scanner calls exit(2) when it
 * reads a directory ("input in flex scanner failed") and would block the
 * supervisor forever on a FIFO, so only regular files get through to it. */
static void check_include(struct loader *L, const char *file, unsigned line, const char *name,
                          int depth)
{
    struct qbuf qb;
    struct stat st;
    char *path, *text;
    size_t len;

    if ((path = include_path(L->include_dir, name)) == NULL) {
        L->n += config_error(L->errs, "%s:%u: out of memory", file, line);
        return;
    }
    if (stat(path, &st) < 0) {
        L->n += config_error(L->errs, "%s:%u: cannot include '%s': %s", file, line,
                             quote(&qb, path), strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        L->n +=
            config_error(L->errs, "%s:%u: cannot include '%s': %s", file, line, quote(&qb, path),
                         S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
    } else if (depth < INCLUDE_DEPTH_MAX) {
        if (read_all(path, &text, &len) < 0) {
            L->n += config_error(L->errs, "%s:%u: cannot include '%s': %s", file, line,
                                 quote(&qb, path), strerror(errno));
        } else {
            prescan(L, text, len, path, depth + 1);
            free(text);
        }
    }
    free(path);
}

/* At the start of a line, the way libconfig's scanner matches an include:
 * `[ \t]*@include[ \t]+"name"`, with \\ and \" as the only escapes in
 * the name (a lone backslash is dropped). Returns the position after the
 * closing quote once the target is checked, or NULL when the line is no
 * include. *line follows newlines inside the name. */
static const char *include_line(struct loader *L, const char *p, const char *end, unsigned *line,
                                const char *file, int depth)
{
    unsigned at = *line;
    char *name, *o;

    p += strspn(p, " \t"); /* texts end with a NUL, so this stops at end */
    if (end - p < 9 || memcmp(p, "@include", 8) != 0 || (p[8] != ' ' && p[8] != '\t'))
        return NULL;
    for (p += 8; p < end && (*p == ' ' || *p == '\t');)
        p++;
    if (p == end || *p != '"')
        return NULL;
    if ((name = malloc((size_t)(end - p))) == NULL) {
        L->n += config_error(L->errs, "%s:%u: out of memory", file, at);
        return end;
    }
    for (o = name, p++; p < end && *p != '"'; p++) {
        if (*p == '\\') {
            if (p + 1 < end && (p[1] == '\\' || p[1] == '"'))
                *o++ = *++p;
            continue;
        }
        *line += *p == '\n';
        *o++ = *p;
    }
    *o = '\0';
    if (p < end) {
        check_include(L, file, at, name, depth);
        p++;
    } else {
        L->n += config_error(L->errs, "%s:%u: unterminated @include file name", file, at);
    }
    free(name);
    return p;
}

/* Lexes text the way libconfig's scanner does, for what libconfig 1.5
 * handles badly:
 *  - @include targets are checked by check_include() first;
 *  - a string or include name still open at the end of a file leaks the
 *    scanner's string buffer (found by fuzz_config), and a comment still
 *    open silently hides the rest of the file: both are reported here and
 *    libconfig never sees them.
 * text[len] must be a NUL (include_line relies on it). */
static void prescan(struct loader *L, const char *text, size_t len, const char *file, int depth)
{
    const char *p = text, *end = text + len, *q;
    unsigned line = 1, at;
    int bol = 1;

    while (p < end) {
        if (bol) {
            bol = 0;
            if ((q = include_line(L, p, end, &line, file, depth)) != NULL) {
                p = q;
                continue;
            }
        }
        switch (*p) {
        case '\n':
            line++;
            bol = 1;
            p++;
            break;
        case '#':
            while (p < end && *p != '\n')
                p++;
            break;
        case '/':
            if (p + 1 < end && p[1] == '/') {
                while (p < end && *p != '\n')
                    p++;
            } else if (p + 1 < end && p[1] == '*') {
                at = line;
                for (p += 2; p < end && !(*p == '*' && p + 1 < end && p[1] == '/'); p++)
                    line += *p == '\n';
                if (p < end)
                    p += 2;
                else
                    L->n += config_error(L->errs, "%s:%u: unterminated /* comment", file, at);
            } else {
                p++;
            }
            break;
        case '"':
            at = line;
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\'))
                    p++;
                else
                    line += *p == '\n';
            }
            if (p < end)
                p++;
            else
                L->n += config_error(L->errs, "%s:%u: unterminated string", file, at);
            break;
        default:
            p++;
        }
    }
}

/* Parses text with libconfig and copies what the schema knows into c. */
static int load_text(struct config *c, const char *text, const char *name, const char *include_dir,
                     struct config_errors *errs)
{
    struct loader L = {c, errs, name, include_dir, 0};
    config_t cfg;

    prescan(&L, text, strlen(text), name, 0);
    if (L.n > 0) {
        mark_unparsed(errs);
        return L.n;
    }

    config_init(&cfg);
    if (include_dir != NULL)
        config_set_include_dir(&cfg, include_dir);
    if (config_read_string(&cfg, text) == CONFIG_TRUE) {
        walk(&L, config_root_setting(&cfg), root_keys, NULL);
    } else {
        const char *ef = config_error_file(&cfg);
        const char *et = config_error_text(&cfg);
        char *f = ef ? include_path(include_dir, ef) : NULL;
        const char *file = f ? f : ef ? ef : name;

        L.n += config_error(errs, "%s:%d: %s", file, config_error_line(&cfg),
                            et ? et : "syntax error");
        mark_unparsed(errs);
        free(f);
    }
    config_destroy(&cfg);
    return L.n;
}

int config_load_string(struct config *c, const char *text, const char *name,
                       struct config_errors *errs)
{
    return load_text(c, text, name ? name : "(string)", NULL, errs);
}

int config_load_file(struct config *c, const char *path, struct config_errors *errs)
{
    char *text = NULL, *dir = NULL, *copy = NULL;
    const char *slash;
    const char *nul;
    size_t len;
    int n;

    if (read_all(path, &text, &len) < 0) {
        mark_unparsed(errs);
        return config_error(errs, "%s: cannot read: %s", path, strerror(errno));
    }
    if ((nul = memchr(text, '\0', len)) != NULL) {
        unsigned line = 1;
        const char *p;

        mark_unparsed(errs);

        for (p = text; p < nul; p++)
            line += *p == '\n';
        n = config_error(errs, "%s:%u: NUL byte in the file", path, line);
        goto done;
    }
    /* @include names are relative to the file's directory, not the cwd. */
    slash = strrchr(path, '/');
    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    copy = strdup(path);
    if (dir == NULL || copy == NULL) {
        n = config_error(errs, "%s: out of memory", path);
        goto done;
    }
    free(c->path);
    c->path = copy;
    copy = NULL;
    n = load_text(c, text, path, dir, errs);
done:
    free(copy);
    free(dir);
    free(text);
    return n;
}

/* ---- defaults, overrides, checks ---- */

int config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    c->listen[0] = strdup(DEFAULT_LISTEN);
    c->nlisten = 1;
    c->listen_backlog = 1024;
    c->listen_mode = 0660;
    c->status_listen_mode = 0660;
    c->slowlog_timeout_ms = 5000;
    c->umask = 022;
    c->mode = MODE_THREADS;
    c->workers = 4;
    c->threads = 8;
    c->worker_connections = 1000;
    c->blocking_threads = 4;
    c->stack_size = 262144;
    c->timeout = 30;
    c->graceful_timeout = 30;
    c->io_timeout = 60;
    c->keepalive_timeout = 75;
    c->max_requests = 0;
    c->max_requests_jitter = 0;
    c->pm = PM_STATIC;
    c->min_workers = 1;
    c->max_workers = 8;
    c->idle_timeout = 10;
    c->queue_timeout_ms = 0;
    c->max_memory = 0;
    c->app_module = strdup(DEFAULT_MODULE);
    c->app_database = strdup(DEFAULT_DATABASE);
    c->app_postgres = NULL;
    c->app_postgres_pool = 4;
    c->app_postgres_pool_timeout = 5;
    c->app_postgres_prepare = 1;
    c->log_level = FCGATE_LOG_INFO;
    c->log_error = strdup("-");
    c->log_access = NULL;
    c->max_params_bytes = 65536;
    c->max_body_bytes = 10485760;
    if (c->listen[0] == NULL || c->app_module == NULL || c->app_database == NULL ||
        c->log_error == NULL) {
        config_free(c);
        return -1;
    }
    return 0;
}

/* Replaces *dst with a copy of v, NULL staying NULL. 0, or -1 (ENOMEM). */
static int replace(char **dst, const char *v)
{
    char *d = NULL;

    if (v != NULL && (d = strdup(v)) == NULL)
        return -1;
    free(*dst);
    *dst = d;
    return 0;
}

static int override_int(const char *key, const char *value, long min, long max, int *out,
                        struct config_errors *errs)
{
    struct qbuf qb;
    char *end;
    long v;

    errno = 0;
    v = strtol(value, &end, 10);
    if (!(value[0] >= '0' && value[0] <= '9') && value[0] != '-')
        return config_error(errs, "--%s: must be an integer, not '%s'", key, quote(&qb, value));
    if (*end != '\0' || end == value)
        return config_error(errs, "--%s: must be an integer, not '%s'", key, quote(&qb, value));
    if (errno == ERANGE || v < min || v > max)
        return config_error(errs, "--%s: must be between %ld and %ld, not %s", key, min, max,
                            quote(&qb, value));
    *out = (int)v;
    return 0;
}

static int override_listen(struct config *c, const char *value, struct config_errors *errs)
{
    struct listen_addr a;
    struct qbuf qb;
    char why[128], *v, *o;
    int first = c->nlisten == 0 || c->listen_origin[0] == NULL ||
                strcmp(c->listen_origin[0], CLI_LISTEN) != 0;

    if (listen_parse(value, &a, why, sizeof(why)) < 0)
        return config_error(errs, "--listen: bad listen address '%s': %s", quote(&qb, value), why);
    if (!first && c->nlisten >= CONFIG_MAX_LISTEN)
        return config_error(errs, "--listen: at most %d addresses", CONFIG_MAX_LISTEN);
    v = strdup(value);
    o = strdup(CLI_LISTEN);
    if (v == NULL || o == NULL) {
        free(v);
        free(o);
        return config_error(errs, "--listen: out of memory");
    }
    /* The first --listen replaces the file's list, later ones append. */
    if (first) {
        size_t i;

        for (i = 0; i < c->nlisten; i++) {
            free(c->listen[i]);
            free(c->listen_origin[i]);
            c->listen[i] = c->listen_origin[i] = NULL;
        }
        c->nlisten = 0;
    }
    c->listen[c->nlisten] = v;
    c->listen_origin[c->nlisten] = o;
    c->nlisten++;
    return 0;
}

int config_override(struct config *c, const char *key, const char *value,
                    struct config_errors *errs)
{
    struct qbuf qb;

    if (value == NULL)
        value = "";
    if (strcmp(key, "listen") == 0)
        return override_listen(c, value, errs);
    if (strcmp(key, "app") == 0) {
        if (*value == '\0')
            return config_error(errs, "--app: must not be empty");
        if (replace(&c->app_module, value) < 0 || replace(&c->app_module_origin, "--app") < 0)
            return config_error(errs, "--app: out of memory");
        return 0;
    }
    if (strcmp(key, "mode") == 0) {
        if (parse_worker_mode(value, &c->mode) < 0)
            return config_error(errs,
                                "--mode: must be \"sync\", \"threads\" or \"async\", not \"%s\"",
                                quote(&qb, value));
        return 0;
    }
    if (strcmp(key, "workers") == 0)
        return override_int(key, value, 1, 1024, &c->workers, errs);
    if (strcmp(key, "threads") == 0)
        return override_int(key, value, 1, 1024, &c->threads, errs);
    if (strcmp(key, "worker-connections") == 0)
        return override_int(key, value, 1, 1000000, &c->worker_connections, errs);
    if (strcmp(key, "database") == 0) {
        if (replace(&c->app_database, *value ? value : NULL) < 0)
            return config_error(errs, "--database: out of memory");
        return 0;
    }
    if (strcmp(key, "user") == 0 || strcmp(key, "group") == 0) {
        if (*value == '\0')
            return config_error(errs, "--%s: must not be empty", key);
        if (replace(key[0] == 'u' ? &c->user : &c->group, value) < 0)
            return config_error(errs, "--%s: out of memory", key);
        return 0;
    }
    if (strcmp(key, "pidfile") == 0) {
        if (replace(&c->pidfile, *value ? value : NULL) < 0)
            return config_error(errs, "--pidfile: out of memory");
        return 0;
    }
    return config_error(errs, "--%s: unknown option", quote(&qb, key));
}

/* Why the module at path could not be loaded, or NULL. Only looks: stat
 * and access have no side effects, where opening a FIFO or a device
 * could block or worse. The workers dlopen() it later. */
static const char *module_problem(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return strerror(errno);
    if (S_ISDIR(st.st_mode))
        return strerror(EISDIR);
    if (!S_ISREG(st.st_mode))
        return "not a regular file";
    if (faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) < 0)
        return strerror(errno);
    return NULL;
}

/* The bounds against each other, once every file and option is in. */
static int check_pool(const struct config *c, struct config_errors *errs)
{
    const char *file = c->path ? c->path : "(default)";

    if (c->pm == PM_STATIC)
        return 0;
    if (c->min_workers > c->max_workers)
        return config_error(errs, "%s: min_workers (%d) is above max_workers (%d)", file,
                            c->min_workers, c->max_workers);
    if (c->pm == PM_DYNAMIC && c->min_workers < 1)
        return config_error(errs,
                            "%s: pm = \"dynamic\" needs min_workers >= 1 (pm = \"ondemand\" "
                            "is the pool that empties)",
                            file);
    return 0;
}

int config_check(const struct config *c, struct config_errors *errs)
{
    const char *origin = c->app_module_origin ? c->app_module_origin : "(default)", *problem;
    struct listen_addr a[CONFIG_MAX_LISTEN];
    struct qbuf qb;
    char why[128];
    size_t i, j;
    int n = 0;

    if (c->app_module == NULL || c->app_module[0] == '\0')
        n += config_error(errs, "%s: no app module configured", origin);
    else if ((problem = module_problem(c->app_module)) != NULL)
        n += config_error(errs, "%s: app module '%s': %s", origin, quote(&qb, c->app_module),
                          problem);

    n += check_pool(c, errs);
    if (c->nlisten == 0 || c->nlisten > CONFIG_MAX_LISTEN)
        return n + config_error(errs,
                                "(default): between 1 and %d listen addresses are needed, not %zu",
                                CONFIG_MAX_LISTEN, c->nlisten);
    for (i = 0; i < c->nlisten; i++) {
        const char *lo = c->listen_origin[i] ? c->listen_origin[i] : "(default)";

        if (c->listen[i] == NULL || listen_parse(c->listen[i], &a[i], why, sizeof(why)) < 0) {
            n += config_error(errs, "%s: bad listen address '%s': %s", lo,
                              c->listen[i] ? quote(&qb, c->listen[i]) : "",
                              c->listen[i] ? why : "none");
            a[i].family = AF_UNSPEC;
            continue;
        }
        /* The second bind would fail with EADDRINUSE at start-up; say why now. */
        for (j = 0; j < i; j++) {
            if (a[j].family == a[i].family && a[j].sslen == a[i].sslen &&
                memcmp(&a[j].ss, &a[i].ss, a[i].sslen) == 0) {
                n += config_error(errs, "%s: listen address '%s' is listed twice", lo,
                                  quote(&qb, c->listen[i]));
                break;
            }
        }
    }
    return n;
}

const char *config_mode_name(enum config_mode m)
{
    switch (m) {
    case MODE_SYNC:
        return "sync";
    case MODE_THREADS:
        return "threads";
    case MODE_ASYNC:
        return "async";
    }
    return "unknown";
}

const char *config_pm_name(enum config_pm pm)
{
    switch (pm) {
    case PM_STATIC:
        return "static";
    case PM_DYNAMIC:
        return "dynamic";
    case PM_ONDEMAND:
        return "ondemand";
    }
    return "unknown";
}

const char *config_setting(const struct config *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->nsettings; i++)
        if (strcmp(c->settings[i].name, name) == 0)
            return c->settings[i].value;
    return NULL;
}

void config_free(struct config *c)
{
    size_t i;

    if (c == NULL)
        return;
    free(c->path);
    for (i = 0; i < CONFIG_MAX_LISTEN; i++) {
        free(c->listen[i]);
        free(c->listen_origin[i]);
    }
    free(c->user);
    free(c->group);
    free(c->pidfile);
    free(c->status_listen);
    free(c->slowlog_file);
    free(c->app_module);
    free(c->app_module_origin);
    free(c->app_database);
    free(c->app_postgres);
    for (i = 0; i < c->nsettings; i++) {
        free(c->settings[i].name);
        free(c->settings[i].value);
    }
    free(c->settings);
    free(c->log_error);
    free(c->log_access);
    free(c->log_access_format);
    memset(c, 0, sizeof(*c));
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * main.c - the command line: configuration, -t, then the supervisor.
 */
#include "fcgate.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_OVERRIDES 64

/* Kept for reloads: HUP re-reads the file and applies these again. */
static const char *config_file;
static struct {
    const char *key, *value;
} overrides[MAX_OVERRIDES];
static size_t noverrides;
static int test_only;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fcgate [-c FILE] [-t] [options]\n"
            "       fcgate status [-c FILE | --status ADDR] [--json] [--full]\n"
            "\n"
            "Runs C application modules behind nginx over FastCGI.\n"
            "\n"
            "  -c, --config FILE           the configuration file (libconfig); without it,\n"
            "                              the embedded defaults apply\n"
            "  -t, --test                  check the configuration and exit\n"
            "      --listen ADDR           unix:/path, 127.0.0.1:9000 or [::1]:9000 (repeatable;\n"
            "                              replaces the file's list)\n"
            "      --app PATH              the application module (.so)\n"
            "      --mode MODE             sync, threads or async\n"
            "      --workers N             worker processes\n"
            "      --threads N             threads per worker (threads mode)\n"
            "      --worker-connections N  connections per worker (async mode)\n"
            "      --database PATH         the app's sqlite database\n"
            "      --pidfile PATH          write the supervisor's pid there\n"
            "      --user USER             workers run as USER (root must say so: --user root)\n"
            "      --group GROUP           ... and GROUP\n"
            "  -v, --version               print the version and exit\n"
            "  -h, --help                  print this help and exit\n"
            "\n"
            "Signals: TERM graceful stop, INT/QUIT fast stop, HUP reload, USR2 upgrade the\n"
            "binary, TTIN/TTOU one worker more/less, USR1 reopen log files.\n");
}

/* The child of check_module_load: loads the module as a worker would (as
 * the workers' user, when root can switch to it) and writes why it could
 * not to fd. Exits 0 if it loaded. */
static void load_module_child(const struct config *c, int fd)
{
    char err[1024] = "";
    struct app_module m;
    uid_t uid;
    gid_t gid;

    if (geteuid() == 0 && c->user && strcmp(c->user, "root") != 0) {
        if (worker_ids(c, &uid, &gid) < 0 || initgroups(c->user, gid) < 0 || setgid(gid) < 0 ||
            setuid(uid) < 0) {
            snprintf(err, sizeof(err), "cannot switch to user '%s' to load the app module",
                     c->user);
            goto out;
        }
    }
    if (app_load(c->app_module, &m, err, sizeof(err)) == 0) {
        if (c->mode == MODE_THREADS)
            app_check_threads(&m, c->app_module, err, sizeof(err));
        app_unload(&m);
    }
out:
    (void)!write(fd, err, strlen(err));
    _exit(err[0] ? 1 : 0);
}

/* -t loads the module, in a child process: dlopen runs the module's
 * constructors, and a bad one must not take the checker down. A wrong
 * ABI, a missing symbol or a failing dlopen is reported at the line that
 * set app.module. Returns the number of errors added (0 or 1). */
static int check_module_load(const struct config *c, struct config_errors *errs)
{
    const char *origin = c->app_module_origin ? c->app_module_origin : "(default)";
    char why[1024];
    int pfd[2], status;
    ssize_t n = 0, r;

    if (pipe2(pfd, O_CLOEXEC) < 0)
        return config_error(errs, "%s: cannot check the app module: %s", origin, strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        load_module_child(c, pfd[1]);
    }
    close(pfd[1]);
    while (pid > 0 && (r = read(pfd[0], why + n, sizeof(why) - 1 - (size_t)n)) > 0)
        n += r;
    why[n] = '\0';
    close(pfd[0]);
    if (pid < 0)
        return config_error(errs, "%s: cannot check the app module: %s", origin, strerror(errno));
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status))
        return config_error(errs, "%s: loading app module %s killed the check with signal %d (%s)",
                            origin, c->app_module, WTERMSIG(status), strsignal(WTERMSIG(status)));
    if (WEXITSTATUS(status) != 0)
        return config_error(errs, "%s: %s", origin, why[0] ? why : "the app module did not load");
    return 0;
}

/* Worth loading: config_check has already reported any other module. */
static int module_loadable(const struct config *c)
{
    struct stat st;
    return c->app_module && stat(c->app_module, &st) == 0 && S_ISREG(st.st_mode) &&
           access(c->app_module, R_OK) == 0;
}

/* Defaults, then the file, then the command line: the order users expect. */
static int build_config(struct config *c, struct config_errors *errs)
{
    int n = 0;
    if (config_defaults(c) < 0) {
        fprintf(stderr, "fcgate: out of memory\n");
        exit(1);
    }
    if (config_file)
        n += config_load_file(c, config_file, errs);
    for (size_t i = 0; i < noverrides; i++)
        n += config_override(c, overrides[i].key, overrides[i].value, errs);
    /* Checks of the final values (module file, listen addresses) run even
     * after other errors, so -t reports everything in one go; not when the
     * file could not be read or parsed, where they would only be noise
     * about defaults the file may well have set. */
    if (errs->unparsed)
        goto out;
    n += config_check(c, errs);
    if (test_only && module_loadable(c))
        n += check_module_load(c, errs);
    /* The workers would refuse: say so now, and in -t. */
    if (geteuid() == 0 && !c->user)
        n += config_error(errs,
                          "%s: workers would run as root: set user (e.g. user = "
                          "\"www-data\"), or user = \"root\" to allow it",
                          config_file ? config_file : "(defaults)");
out:
    if (n)
        config_free(c);
    return n;
}

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_APP,
        OPT_MODE,
        OPT_WORKERS,
        OPT_THREADS,
        OPT_CONNS,
        OPT_DB,
        OPT_PIDFILE,
        OPT_USER,
        OPT_GROUP
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"app", required_argument, NULL, OPT_APP},
        {"mode", required_argument, NULL, OPT_MODE},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"worker-connections", required_argument, NULL, OPT_CONNS},
        {"database", required_argument, NULL, OPT_DB},
        {"pidfile", required_argument, NULL, OPT_PIDFILE},
        {"user", required_argument, NULL, OPT_USER},
        {"group", required_argument, NULL, OPT_GROUP},
        {NULL, 0, NULL, 0},
    };
    int opt;

    if (argc > 1 && strcmp(argv[1], "status") == 0)
        return cli_status(argc - 1, argv + 1);
    while ((opt = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_file = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'v':
            printf("fcgate %s (app ABI %d.%d)\n", FCGATE_VERSION, FCGATE_ABI_MAJOR,
                   FCGATE_ABI_MINOR);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case '?':
            usage(stderr);
            return 2;
        default:
            if (noverrides == MAX_OVERRIDES) {
                fprintf(stderr, "fcgate: too many command-line options\n");
                return 2;
            }
            overrides[noverrides].key = opts[opt - OPT_LISTEN + 4].name;
            overrides[noverrides].value = optarg;
            noverrides++;
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fcgate: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct config cfg;
    struct config_errors errs = {0};
    if (build_config(&cfg, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        if (!test_only)
            fprintf(stderr, "fcgate: %zu error%s in the configuration; not starting\n", errs.n,
                    errs.n == 1 ? "" : "s");
        config_errors_free(&errs);
        return 1;
    }
    if (test_only) {
        printf("configuration ok\n");
        config_free(&cfg);
        return 0;
    }
    if (log_open(cfg.log_level, cfg.log_error, cfg.log_access, cfg.slowlog_file) < 0) {
        config_free(&cfg);
        return 1;
    }
    return supervisor_run(&cfg, build_config, argv);
}

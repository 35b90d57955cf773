/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cli.c - `fcgate status`: asks the status socket, as a FastCGI client,
 * and prints the page. The health check of operators and of the systemd
 * unit: the exit status says whether fcgate serves.
 */
#include "fcgate.h"
#include "listen.h"

#include <errno.h>
#include <fastcgi.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CLI_DEFAULT_CONFIG "/etc/fcgate/fcgate.conf"
#define CLI_TIMEOUT_S 3

enum { CLI_SERVING = 0, CLI_NOT_READY = 1, CLI_USAGE = 2, CLI_NO_ANSWER = 3 };

static void cli_usage(FILE *out)
{
    fprintf(out, "usage: fcgate status [-c FILE | --status ADDR] [--json] [--full]\n"
                 "\n"
                 "Prints what fcgate's status endpoint says. Exit status: 0 serving, 1 no\n"
                 "worker ready, 3 no answer on the status socket, 2 usage or configuration.\n"
                 "\n"
                 "  -c, --config FILE  find the status socket in FILE's status.listen\n"
                 "                     (default " CLI_DEFAULT_CONFIG ")\n"
                 "      --status ADDR  ask ADDR (unix:/path or 127.0.0.1:9001)\n"
                 "      --json         the JSON form\n"
                 "      --full         one row per worker thread too\n");
}

/* status.listen from the configuration file. */
static char *address_from(const char *file)
{
    struct config c;
    struct config_errors errs = {0};
    char *addr = NULL;

    if (config_defaults(&c) < 0)
        return NULL;
    if (config_load_file(&c, file, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
    } else if (!c.status_listen) {
        fprintf(stderr, "fcgate status: %s sets no status.listen\n", file);
    } else {
        addr = strdup(c.status_listen);
    }
    config_errors_free(&errs);
    config_free(&c);
    return addr;
}

static int dial(const char *spec)
{
    struct listen_addr a;
    char err[128];
    struct timeval tv = {CLI_TIMEOUT_S, 0};

    if (listen_parse(spec, &a, err, sizeof(err)) < 0) {
        fprintf(stderr, "fcgate status: %s: %s\n", spec, err);
        return -1;
    }
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a.ss, a.sslen) < 0) {
        fprintf(stderr, "fcgate status: no answer at %s: %s\n", spec, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int put_param(struct codec_buf *b, const char *name, const char *value)
{
    return codec_put_nv(b, name, strlen(name), value, strlen(value));
}

static int send_request(int fd, const char *query)
{
    struct codec_buf req = {0}, params = {0};
    char uri[64];
    const uint8_t begin[8] = {0, FCGI_RESPONDER, 0};
    snprintf(uri, sizeof(uri), "/status%s%s", *query ? "?" : "", query);
    int rc = -1;
    if (put_param(&params, "REQUEST_METHOD", "GET") < 0 ||
        put_param(&params, "REQUEST_URI", uri) < 0 ||
        put_param(&params, "SCRIPT_NAME", "/status") < 0 ||
        put_param(&params, "QUERY_STRING", query) < 0 ||
        codec_put_record(&req, FCGI_BEGIN_REQUEST, 1, begin, sizeof(begin)) < 0 ||
        codec_put_record(&req, FCGI_PARAMS, 1, params.data, params.len) < 0 ||
        codec_put_record(&req, FCGI_PARAMS, 1, NULL, 0) < 0 ||
        codec_put_record(&req, FCGI_STDIN, 1, NULL, 0) < 0)
        goto out;
    rc = send(fd, req.data, req.len, MSG_NOSIGNAL) == (ssize_t)req.len ? 0 : -1;
out:
    codec_buf_free(&req);
    codec_buf_free(&params);
    return rc;
}

static int read_full(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* The STDOUT stream up to END_REQUEST, into out. */
static int read_response(int fd, struct codec_buf *out)
{
    uint8_t h[FCGI_HEADER_LEN], content[65536 + 255];
    for (;;) {
        if (read_full(fd, h, sizeof(h)) < 0)
            return -1;
        size_t clen = (size_t)h[4] << 8 | h[5], plen = h[6];
        if (read_full(fd, content, clen + plen) < 0)
            return -1;
        if (h[1] == FCGI_END_REQUEST)
            return 0;
        if (h[1] == FCGI_STDOUT && codec_buf_append(out, content, clen) < 0)
            return -1;
    }
}

/* The value of header name in the response head, or NULL. */
static const char *header(const char *head, const char *name, char *buf, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = head; p && *p;) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1 + strspn(p + n + 1, " ");
            snprintf(buf, len, "%.*s", (int)strcspn(v, "\r\n"), v);
            return buf;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return NULL;
}

static int ask(const char *addr, const char *query)
{
    struct codec_buf resp = {0};
    char ready[32], pm[32];
    int fd = dial(addr), rc = CLI_NO_ANSWER;

    if (fd < 0)
        return CLI_NO_ANSWER;
    if (send_request(fd, query) < 0 || read_response(fd, &resp) < 0 ||
        codec_buf_append(&resp, "", 1) < 0) {
        fprintf(stderr, "fcgate status: %s did not answer\n", addr);
        goto out;
    }
    char *body = strstr((char *)resp.data, "\r\n\r\n");
    if (!body || !header((char *)resp.data, "X-Fcgate-Workers-Ready", ready, sizeof(ready))) {
        fprintf(stderr, "fcgate status: %s answered something else than fcgate's status\n", addr);
        goto out;
    }
    fputs(body + 4, stdout);
    /* An ondemand pool with no worker while idle is serving: the next
     * connection starts one. */
    int empty_ok =
        header((char *)resp.data, "X-Fcgate-Pm", pm, sizeof(pm)) && strcmp(pm, "ondemand") == 0;
    rc = atoi(ready) > 0 || empty_ok ? CLI_SERVING : CLI_NOT_READY;
    if (rc == CLI_NOT_READY)
        fprintf(stderr, "fcgate status: no worker ready\n");
out:
    codec_buf_free(&resp);
    close(fd);
    return rc;
}

int cli_status(int argc, char **argv)
{
    enum { OPT_STATUS = 256, OPT_JSON, OPT_FULL };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"status", required_argument, NULL, OPT_STATUS},
        {"json", no_argument, NULL, OPT_JSON},    {"full", no_argument, NULL, OPT_FULL},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *file = NULL, *addr = NULL;
    int json = 0, full = 0, opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case OPT_STATUS:
            addr = optarg;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_FULL:
            full = 1;
            break;
        case 'h':
            cli_usage(stdout);
            return 0;
        default:
            cli_usage(stderr);
            return CLI_USAGE;
        }
    }
    if (optind < argc || (file && addr)) {
        cli_usage(stderr);
        return CLI_USAGE;
    }
    char *found = addr ? NULL : address_from(file ? file : CLI_DEFAULT_CONFIG);
    if (!addr && !found)
        return CLI_USAGE;
    int rc = ask(addr ? addr : found, json ? (full ? "json&full" : "json") : (full ? "full" : ""));
    free(found);
    return rc;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * status_page.c - the status page in its three forms, from a snapshot.
 *
 * Pure: the status process reads the scoreboards and the kernel into a
 * struct status_snapshot; this file only formats it, so every form is
 * unit-tested on made-up numbers. Metric names are stable and carry their
 * unit; labels take only bounded values (status class, state, reason, and
 * the configured listen addresses).
 */
#include "fcgate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const class_names[SCORE_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const reason_names[RESTART_REASONS] = {"crash", "timeout", "recycle", "reload",
                                                          "memory"};

static const char *const spawn_names[SPAWN_REASONS] = {"min_workers", "load", "queue", "memory"};
static const char *const retire_names[RETIRE_REASONS] = {"idle", "bound", "memory"};

const char *status_state_name(enum status_state s)
{
    static const char *const names[STATE_COUNT] = {"idle", "busy", "stopping"};
    return s < STATE_COUNT ? names[s] : "unknown";
}

/* One '&'-separated word of the query string, with or without a value. */
static int has_word(const char *query, const char *word)
{
    size_t n = strlen(word);
    for (const char *q = query; q && *q;) {
        size_t len = strcspn(q, "&");
        if (len >= n && strncmp(q, word, n) == 0 && (len == n || q[n] == '='))
            return 1;
        q += len;
        if (*q == '&')
            q++;
    }
    return 0;
}

enum status_format status_page_format(const char *query, const char *accept, int *full)
{
    *full = has_word(query, "full");
    if (has_word(query, "json"))
        return STATUS_JSON;
    if (has_word(query, "html"))
        return STATUS_HTML;
    if (has_word(query, "openmetrics") ||
        (accept && strstr(accept, "application/openmetrics-text")))
        return STATUS_OPENMETRICS;
    return STATUS_TEXT;
}

const char *status_page_content_type(enum status_format f)
{
    switch (f) {
    case STATUS_JSON:
        return "application/json";
    case STATUS_OPENMETRICS:
        return "application/openmetrics-text; version=1.0.0; charset=utf-8";
    case STATUS_HTML:
        return "text/html; charset=utf-8";
    case STATUS_TEXT:
        break;
    }
    return "text/plain; charset=utf-8";
}

/* ---- output ---- */

struct out {
    struct codec_buf *b;
    int failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    char line[1024], *p = line;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(line) && (p = malloc((size_t)n + 1)) != NULL) {
        va_start(ap, fmt); /* longer than a line of the page usually is */
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    if (n < 0 || !p || (!o->failed && codec_buf_append(o->b, p, (size_t)n) < 0))
        o->failed = 1;
    if (p != line)
        free(p);
}

/* s as the inside of a JSON string (or an OpenMetrics label value, whose
 * escapes are a subset: backslash, quote, newline). */
static void put_escaped(struct out *o, const char *s, int json)
{
    char buf[512];
    size_t n = 0;
    for (; *s && n + 7 < sizeof(buf); s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else if (c < 0x20) {
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, json ? "\\u%04x" : "?", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n] = '\0';
    put(o, "%s", buf);
}

/* A worker process's slots are consecutive: [i, end). Its state is the
 * busiest of its threads', stopping over all. */
static size_t worker_end(const struct status_snapshot *s, size_t i, enum status_state *st,
                         uint64_t *requests, unsigned *active)
{
    size_t end = i;
    *st = STATE_IDLE;
    *requests = 0;
    *active = 0;
    while (end < s->nslots && s->slots[end].pid == s->slots[i].pid &&
           s->slots[end].generation == s->slots[i].generation) {
        const struct status_slot *t = &s->slots[end++];
        if (t->state > *st)
            *st = t->state;
        *requests += t->requests;
        *active += t->active;
    }
    return end;
}

/* ---- text ---- */

static void text_counts(struct out *o, const char *const *names, const uint64_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put(o, "%s %s %llu", i ? "," : "", names[i], (unsigned long long)v[i]);
}

static uint64_t sum(const uint64_t *v, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i];
    return total;
}

static void text_pool(struct out *o, const struct status_snapshot *s)
{
    uint64_t waited = sum(s->queue_le, SCORE_BUCKETS);
    put(o, "pool: pm %s, %d..%d workers, idle_timeout %d s\nspawns:", s->pm ? s->pm : "static",
        s->min_workers, s->max_workers, s->idle_timeout);
    text_counts(o, spawn_names, s->spawns, SPAWN_REASONS);
    put(o, "; retirements:");
    text_counts(o, retire_names, s->retirements, RETIRE_REASONS);
    put(o, "\nqueue: %llu requests timed (mean wait %.1f ms), %llu answered 503",
        (unsigned long long)waited, waited ? (double)s->queue_us / 1e3 / (double)waited : 0.0,
        (unsigned long long)s->queue_rejected);
    if (s->queue_timeout > 0)
        put(o, " (queue_timeout %g s)\n", s->queue_timeout);
    else
        put(o, " (queue_timeout off)\n");
}

static void text_head(struct out *o, const struct status_snapshot *s)
{
    put(o, "fcgate %s, %s mode, supervisor pid %d, up %llu s\n", s->version, s->mode,
        (int)s->supervisor, (unsigned long long)s->uptime_s);
    if (s->pm && strcmp(s->pm, "static") != 0)
        put(o, "generation %u: %zu workers ready (pm %s, %d..%d)\n", s->generation, s->ready, s->pm,
            s->min_workers, s->max_workers);
    else
        put(o, "generation %u: %zu of %d workers ready\n", s->generation, s->ready,
            s->workers_configured);
    put(o, "workers: %zu idle, %zu busy, %zu stopping\n", s->workers[STATE_IDLE],
        s->workers[STATE_BUSY], s->workers[STATE_STOPPING]);
    put(o, "requests: %llu", (unsigned long long)s->requests_total);
    for (size_t c = 0; c < SCORE_CLASSES; c++)
        put(o, "%s%s %llu", c ? ", " : " (", class_names[c], (unsigned long long)s->by_class[c]);
    put(o, ")\nrestarts:");
    for (size_t r = 0; r < RESTART_REASONS; r++)
        put(o, "%s %s %llu", r ? "," : "", reason_names[r], (unsigned long long)s->restarts[r]);
    put(o, "; timeouts %llu\n", (unsigned long long)s->timeouts);
    text_pool(o, s);
    put(o, "\n");
    put(o, "%-40s %7s %7s\n", "LISTEN", "QUEUE", "MAX");
    for (size_t i = 0; i < s->nlisten; i++)
        put(o, "%-40s %7ld %7ld\n", s->listen[i].address, s->listen[i].queue,
            s->listen[i].max_queue);
}

static void text_workers(struct out *o, const struct status_snapshot *s)
{
    put(o, "\n%-8s %4s %-9s %10s %7s\n", "PID", "GEN", "STATE", "REQUESTS", "ACTIVE");
    for (size_t i = 0; i < s->nslots;) {
        enum status_state st;
        uint64_t requests;
        unsigned active;
        size_t end = worker_end(s, i, &st, &requests, &active);
        put(o, "%-8d %4u %-9s %10llu %7u\n", (int)s->slots[i].pid, s->slots[i].generation,
            status_state_name(st), (unsigned long long)requests, active);
        i = end;
    }
}

static void text_slots(struct out *o, const struct status_snapshot *s)
{
    put(o, "\n%-8s %4s %6s %-9s %10s %9s %9s  %s\n", "PID", "GEN", "THREAD", "STATE", "REQUESTS",
        "RUNNING", "RSS_KB", "REQUEST");
    for (size_t i = 0; i < s->nslots; i++) {
        const struct status_slot *t = &s->slots[i];
        put(o, "%-8d %4u %6zu %-9s %10llu %8.3fs %9llu  %s\n", (int)t->pid, t->generation,
            t->thread, status_state_name(t->state), (unsigned long long)t->requests,
            (double)t->running_ms / 1e3, (unsigned long long)(t->rss_bytes / 1024), t->what);
    }
}

/* ---- JSON ---- */

static void json_counts(struct out *o, const char *name, const char *const *names,
                        const uint64_t *v, size_t n)
{
    put(o, ",\"%s\":{", name);
    for (size_t i = 0; i < n; i++)
        put(o, "%s\"%s\":%llu", i ? "," : "", names[i], (unsigned long long)v[i]);
    put(o, "}");
}

static void json_pool(struct out *o, const struct status_snapshot *s)
{
    uint64_t waited = sum(s->queue_le, SCORE_BUCKETS);
    put(o,
        ",\"pm\":\"%s\",\"min_workers\":%d,\"max_workers\":%d,\"idle_timeout\":%d,"
        "\"queue_timeout\":%g,\"max_memory\":%llu",
        s->pm ? s->pm : "static", s->min_workers, s->max_workers, s->idle_timeout, s->queue_timeout,
        (unsigned long long)s->max_memory);
    json_counts(o, "spawns", spawn_names, s->spawns, SPAWN_REASONS);
    json_counts(o, "retirements", retire_names, s->retirements, RETIRE_REASONS);
    put(o,
        ",\"queue_rejections_total\":%llu,\"request_queue\":{\"count\":%llu,"
        "\"sum_seconds\":%.6f}",
        (unsigned long long)s->queue_rejected, (unsigned long long)waited,
        (double)s->queue_us / 1e6);
}

static void json_listen(struct out *o, const struct status_snapshot *s)
{
    put(o, ",\"listen\":[");
    for (size_t i = 0; i < s->nlisten; i++) {
        put(o, "%s{\"address\":\"", i ? "," : "");
        put_escaped(o, s->listen[i].address, 1);
        put(o, "\",\"queue\":%ld,\"max_queue\":%ld}", s->listen[i].queue, s->listen[i].max_queue);
    }
    put(o, "]");
}

static void json_workers(struct out *o, const struct status_snapshot *s)
{
    put(o, ",\"workers\":[");
    for (size_t i = 0; i < s->nslots;) {
        enum status_state st;
        uint64_t requests;
        unsigned active;
        size_t end = worker_end(s, i, &st, &requests, &active);
        put(o, "%s{\"pid\":%d,\"generation\":%u,\"state\":\"%s\",\"requests\":%llu,\"active\":%u}",
            i ? "," : "", (int)s->slots[i].pid, s->slots[i].generation, status_state_name(st),
            (unsigned long long)requests, active);
        i = end;
    }
    put(o, "]");
}

static void json_slots(struct out *o, const struct status_snapshot *s)
{
    put(o, ",\"slots\":[");
    for (size_t i = 0; i < s->nslots; i++) {
        const struct status_slot *t = &s->slots[i];
        put(o,
            "%s{\"pid\":%d,\"generation\":%u,\"thread\":%zu,\"state\":\"%s\",\"requests\":%llu,"
            "\"active\":%u,\"running_seconds\":%.3f,\"rss_bytes\":%llu,\"request\":\"",
            i ? "," : "", (int)t->pid, t->generation, t->thread, status_state_name(t->state),
            (unsigned long long)t->requests, t->active, (double)t->running_ms / 1e3,
            (unsigned long long)t->rss_bytes);
        put_escaped(o, t->what, 1);
        put(o, "\"}");
    }
    put(o, "]");
}

static void json_page(struct out *o, const struct status_snapshot *s, int full)
{
    uint64_t states[STATE_COUNT];
    static const char *const state_names[STATE_COUNT] = {"idle", "busy", "stopping"};
    for (size_t i = 0; i < STATE_COUNT; i++)
        states[i] = s->workers[i];
    put(o,
        "{\"version\":\"%s\",\"mode\":\"%s\",\"pid\":%d,\"generation\":%u,\"uptime_seconds\":%llu,"
        "\"workers_configured\":%d,\"workers_ready\":%zu,\"requests_total\":%llu",
        s->version, s->mode, (int)s->supervisor, s->generation, (unsigned long long)s->uptime_s,
        s->workers_configured, s->ready, (unsigned long long)s->requests_total);
    json_counts(o, "requests_by_class", class_names, s->by_class, SCORE_CLASSES);
    json_counts(o, "workers_by_state", state_names, states, STATE_COUNT);
    json_counts(o, "restarts", reason_names, s->restarts, RESTART_REASONS);
    put(o, ",\"timeouts_total\":%llu", (unsigned long long)s->timeouts);
    json_pool(o, s);
    json_listen(o, s);
    json_workers(o, s);
    if (full)
        json_slots(o, s);
    put(o, "}\n");
}

/* ---- OpenMetrics ---- */

static void om_family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

static void om_histogram(struct out *o, const char *h, const char *help, const uint64_t *le,
                         uint64_t sum_us)
{
    uint64_t cum = 0;
    om_family(o, h, "histogram", help);
    put(o, "# UNIT %s seconds\n", h);
    for (size_t b = 0; b < SCORE_BUCKETS; b++) {
        cum += le[b];
        if (b < SCORE_BUCKETS - 1)
            put(o, "%s_bucket{le=\"%g\"} %llu\n", h, (double)scoreboard_bucket_us[b] / 1e6,
                (unsigned long long)cum);
        else
            put(o, "%s_bucket{le=\"+Inf\"} %llu\n", h, (unsigned long long)cum);
    }
    put(o, "%s_count %llu\n%s_sum %.6f\n", h, (unsigned long long)cum, h, (double)sum_us / 1e6);
}

static void om_reasons(struct out *o, const char *name, const char *help, const char *const *names,
                       const uint64_t *v, size_t n)
{
    om_family(o, name, "counter", help);
    for (size_t i = 0; i < n; i++)
        put(o, "%s_total{reason=\"%s\"} %llu\n", name, names[i], (unsigned long long)v[i]);
}

static void om_pool(struct out *o, const struct status_snapshot *s)
{
    om_family(o, "fcgate_pool", "info", "How the pool is sized (pm).");
    put(o, "fcgate_pool_info{pm=\"%s\"} 1\n", s->pm ? s->pm : "static");
    om_family(o, "fcgate_pool_min_workers", "gauge", "The pool's lower bound now.");
    put(o, "fcgate_pool_min_workers %d\n", s->min_workers);
    om_family(o, "fcgate_pool_max_workers", "gauge", "The pool's upper bound now (TTIN/TTOU).");
    put(o, "fcgate_pool_max_workers %d\n", s->max_workers);
    om_reasons(o, "fcgate_worker_spawns", "Workers the pool started, by reason.", spawn_names,
               s->spawns, SPAWN_REASONS);
    om_reasons(o, "fcgate_worker_retirements", "Workers the pool retired, by reason.", retire_names,
               s->retirements, RETIRE_REASONS);
    om_family(o, "fcgate_queue_rejections", "counter",
              "Requests answered 503 for waiting past queue_timeout.");
    put(o, "fcgate_queue_rejections_total %llu\n", (unsigned long long)s->queue_rejected);
    om_histogram(o, "fcgate_request_queue_seconds",
                 "Time from nginx receiving a request (X-Request-Start) to a worker reading it.",
                 s->queue_le, s->queue_us);
}

static void om_listen(struct out *o, const struct status_snapshot *s, const char *name, int max)
{
    om_family(o, name, "gauge",
              max ? "The backlog a listen socket was opened with."
                  : "Connections waiting in a listen socket's accept queue (the kernel's count).");
    for (size_t i = 0; i < s->nlisten; i++) {
        long v = max ? s->listen[i].max_queue : s->listen[i].queue;
        if (v < 0)
            continue;
        put(o, "%s{listen=\"", name);
        put_escaped(o, s->listen[i].address, 0);
        put(o, "\"} %ld\n", v);
    }
}

static void om_page(struct out *o, const struct status_snapshot *s)
{
    om_family(o, "fcgate_requests", "counter", "Requests answered, by HTTP status class.");
    for (size_t c = 0; c < SCORE_CLASSES; c++)
        put(o, "fcgate_requests_total{status=\"%s\"} %llu\n", class_names[c],
            (unsigned long long)s->by_class[c]);
    om_histogram(o, "fcgate_request_duration_seconds",
                 "Time from a complete request to its last byte written.", s->duration_le,
                 s->duration_us);
    om_family(o, "fcgate_workers", "gauge", "Worker processes, by state.");
    for (size_t i = 0; i < STATE_COUNT; i++)
        put(o, "fcgate_workers{state=\"%s\"} %zu\n", status_state_name((enum status_state)i),
            s->workers[i]);
    om_family(o, "fcgate_workers_configured", "gauge",
              "Workers the configuration asks for (a dynamic pool's floor; 0 for ondemand).");
    put(o, "fcgate_workers_configured %d\n", s->workers_configured);
    om_listen(o, s, "fcgate_listen_queue", 0);
    om_listen(o, s, "fcgate_listen_queue_max", 1);
    om_family(o, "fcgate_worker_restarts", "counter", "Workers replaced, by reason.");
    for (size_t r = 0; r < RESTART_REASONS; r++)
        put(o, "fcgate_worker_restarts_total{reason=\"%s\"} %llu\n", reason_names[r],
            (unsigned long long)s->restarts[r]);
    om_family(o, "fcgate_timeouts", "counter",
              "Requests (or silent threads) found running past timeout.");
    put(o, "fcgate_timeouts_total %llu\n", (unsigned long long)s->timeouts);
    om_pool(o, s);
    om_family(o, "fcgate_uptime_seconds", "gauge", "Seconds since the supervisor started.");
    put(o, "fcgate_uptime_seconds %llu\n", (unsigned long long)s->uptime_s);
    put(o, "# EOF\n");
}

/* ---- HTML: a page that draws itself from ?json every second ---- */

/* Self-contained (no external asset): a worker grid coloured by state,
 * the listen queues, and requests per second as a moving line. */
static const char html_page[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fcgate status</title>\n"
    "<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\n"
    "h1{font-size:1.3em;margin:0 0 .3em}\n"
    "#summary{color:#555;margin-bottom:1em}\n"
    "#grid{display:flex;flex-wrap:wrap;gap:4px;margin:.5em 0 1em}\n"
    ".w{width:64px;height:40px;border-radius:4px;font-size:11px;display:flex;align-items:center;"
    "justify-content:center;color:#fff}\n"
    ".idle{background:#3a7}.busy{background:#d83}.stopping{background:#888}\n"
    "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}\n"
    "#err{color:#b00}\n"
    "</style></head><body>\n"
    "<h1>fcgate status</h1>\n"
    "<div id=\"summary\">loading&hellip;</div>\n"
    "<div><b id=\"workers-live\">0 workers</b> <span id=\"states\"></span></div>\n"
    "<div id=\"grid\"></div>\n"
    "<table id=\"listen\"><tr><th>listen</th><th>queue</th><th>max</th></tr></table>\n"
    "<p>requests per second <b id=\"rps\">-</b></p>\n"
    "<svg id=\"chart\" width=\"360\" height=\"60\" viewBox=\"0 0 360 60\"><polyline id=\"line\" "
    "fill=\"none\" stroke=\"#37a\" stroke-width=\"2\" points=\"\"/></svg>\n"
    "<p id=\"err\"></p>\n"
    "<script>\n"
    "\"use strict\";\n"
    "var url = location.pathname + \"?json\", last = null, hist = [];\n"
    "function text(id, s) { document.getElementById(id).textContent = s; }\n"
    "function cell(tr, s) { var td = document.createElement(\"td\"); td.textContent = s; "
    "tr.appendChild(td); }\n"
    "function draw() {\n"
    "  var max = Math.max.apply(null, hist.concat([1])), pts = [];\n"
    "  for (var i = 0; i < hist.length; i++)\n"
    "    pts.push((i * 6) + \",\" + (58 - 56 * hist[i] / max).toFixed(1));\n"
    "  document.getElementById(\"line\").setAttribute(\"points\", pts.join(\" \"));\n"
    "}\n"
    "function show(s) {\n"
    "  text(\"summary\", s.mode + \" mode, supervisor pid \" + s.pid + \", generation \" + "
    "s.generation +\n"
    "       \", up \" + s.uptime_seconds + \" s, \" + s.workers_ready + \" of \" + "
    "s.workers_configured +\n"
    "       \" workers ready, \" + s.requests_total + \" requests\");\n"
    "  text(\"workers-live\", s.workers.length + \" workers\");\n"
    "  var b = s.workers_by_state;\n"
    "  text(\"states\", \"(\" + b.idle + \" idle, \" + b.busy + \" busy, \" + b.stopping + \" "
    "stopping)\");\n"
    "  var grid = document.getElementById(\"grid\");\n"
    "  grid.textContent = \"\";\n"
    "  s.workers.forEach(function (w) {\n"
    "    var d = document.createElement(\"div\");\n"
    "    d.className = \"w \" + w.state;\n"
    "    d.title = \"pid \" + w.pid + \", generation \" + w.generation + \", \" + w.requests + \" "
    "requests\";\n"
    "    d.textContent = w.pid;\n"
    "    grid.appendChild(d);\n"
    "  });\n"
    "  var t = document.getElementById(\"listen\");\n"
    "  while (t.rows.length > 1) t.deleteRow(1);\n"
    "  s.listen.forEach(function (l) {\n"
    "    var tr = t.insertRow(-1);\n"
    "    cell(tr, l.address); cell(tr, l.queue); cell(tr, l.max_queue);\n"
    "  });\n"
    "  var now = Date.now();\n"
    "  if (last) {\n"
    "    var rps = Math.max(0, (s.requests_total - last.n) * 1000 / (now - last.t));\n"
    "    text(\"rps\", rps.toFixed(1));\n"
    "    hist.push(rps);\n"
    "    if (hist.length > 60) hist.shift();\n"
    "    draw();\n"
    "  }\n"
    "  last = {n: s.requests_total, t: now};\n"
    "}\n"
    "function tick() {\n"
    "  fetch(url, {cache: \"no-store\"}).then(function (r) { return r.json(); })\n"
    "    .then(function (s) { text(\"err\", \"\"); show(s); })\n"
    "    .catch(function (e) { text(\"err\", \"no answer: \" + e); });\n"
    "}\n"
    "tick();\n"
    "setInterval(tick, 1000);\n"
    "</script></body></html>\n";

int status_page_render(struct codec_buf *out, const struct status_snapshot *s, enum status_format f,
                       int full)
{
    struct out o = {.b = out, .failed = 0};
    switch (f) {
    case STATUS_JSON:
        json_page(&o, s, full);
        break;
    case STATUS_OPENMETRICS:
        om_page(&o, s);
        break;
    case STATUS_HTML:
        if (codec_buf_append(out, html_page, sizeof(html_page) - 1) < 0)
            o.failed = 1;
        break;
    case STATUS_TEXT:
        text_head(&o, s);
        text_workers(&o, s);
        if (full)
            text_slots(&o, s);
        break;
    }
    return o.failed ? -1 : 0;
}

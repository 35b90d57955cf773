/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * notes - the example JSON API (DESIGN.md, "Example apps"), over sqlite or
 * PostgreSQL: PostgreSQL when app.postgres is set, else app.database.
 *
 *   POST   /notes        {"text": "..."} or text=...  201, Location
 *   GET    /notes        ?limit=1..1000 (100) &offset=N, newest first
 *   GET    /notes/{id}   PUT /notes/{id} (same bodies)   DELETE /notes/{id}
 *
 * A note's text is any valid UTF-8, NUL included: it is stored with its
 * exact length (PostgreSQL: as bytea, since its text type cannot hold a
 * NUL) and returned byte for byte. JSON goes through jansson, in and out;
 * the nesting depth of a body is checked before jansson sees it, because
 * its parser recurses up to 2048 levels and a handler's stack in async
 * mode is a coroutine's. The same HTTP answers come from either store; a
 * database out of reach is a 503.
 *
 * Thread-safe: no mutable globals; all state lives on the stack or in heap
 * blocks owned by one request.
 */
#include <fcgate/app.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000
/* GET /notes hands rows over in chunks of about this size (sqlite), or of
 * this many rows (PostgreSQL, whose results arrive whole), so a long list
 * of big notes never has to sit in memory whole. */
#define LIST_CHUNK (256 * 1024)
#define LIST_PG_PAGE 32
/* Keeps jansson's recursion well inside a coroutine stack. */
#define JSON_MAX_DEPTH 64

/* The module's context: which store serves, fixed by init. */
struct notes {
    int pg;
};

/* ---- growable output buffer; on allocation failure it stops growing and
 * remembers, so callers check once at the end. ---- */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void buf_add(struct buf *b, const void *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* ---- UTF-8 (form bodies) ---- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF); 0 if invalid or cut short. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    if (c < 0xe0) {
        len = 2;
    } else if (c < 0xf0) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : lo;
        hi = c == 0xed ? 0x9f : hi;
    } else {
        len = 4;
        lo = c == 0xf0 ? 0x90 : lo;
        hi = c == 0xf4 ? 0x8f : hi;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n && (k = utf8_seq(u + i, n - i)) > 0)
        i += k;
    return i == n;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* ---- JSON, through jansson ---- */

/* Whether s nests arrays and objects at most JSON_MAX_DEPTH deep (brackets
 * inside strings do not count). Only a bound: jansson judges the rest. */
static int json_depth_ok(const char *s, size_t n)
{
    int depth = 0, in_str = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > JSON_MAX_DEPTH)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

/* Appends v, compact, to b and releases v (NULL: out of memory). */
static void buf_json(struct buf *b, json_t *v)
{
    size_t n = v ? json_dumpb(v, NULL, 0, JSON_COMPACT) : 0;

    if (n == 0) {
        b->oom = 1;
    } else {
        char *tmp = malloc(n);
        if (tmp && json_dumpb(v, tmp, n, JSON_COMPACT) == n)
            buf_add(b, tmp, n);
        else
            b->oom = 1;
        free(tmp);
    }
    json_decref(v);
}

/* A stored text that is not valid UTF-8 (only a database written by
 * something else can hold one) goes out as U+FFFD, keeping the answer
 * valid JSON. */
static void json_note(struct buf *b, long long id, const char *text, size_t len)
{
    json_t *t = json_stringn(text, len);

    if (!t && !utf8_valid(text, len))
        t = json_string("\xef\xbf\xbd");
    buf_json(b, t ? json_pack("{s:I,s:o}", "id", (json_int_t)id, "text", t) : NULL);
}

/* "text" from a JSON body into out (len bytes of room). 0, or -1 with a
 * message for the client in msg. A repeated "text" member: the last wins,
 * as with JSON.parse and Python's json. */
static int json_text(const char *body, size_t len, char *out, size_t *outlen, char *msg,
                     size_t msglen)
{
    json_error_t err;
    json_t *doc, *text;

    if (!json_depth_ok(body, len)) {
        snprintf(msg, msglen, "invalid JSON: nested deeper than %d", JSON_MAX_DEPTH);
        return -1;
    }
    doc = json_loadb(body, len, JSON_ALLOW_NUL, &err);
    if (!doc) {
        snprintf(msg, msglen, "invalid JSON: %.60s at byte %d", err.text, err.position);
        return -1;
    }
    text = json_is_object(doc) ? json_object_get(doc, "text") : NULL;
    if (!json_is_string(text)) {
        snprintf(msg, msglen, "%s",
                 !json_is_object(doc) ? "expected an object"
                 : text               ? "text must be a string"
                                      : "missing text");
        json_decref(doc);
        return -1;
    }
    /* Never longer than the body: no escape decodes to more bytes. */
    *outlen = json_string_length(text);
    memcpy(out, json_string_value(text), *outlen);
    json_decref(doc);
    return 0;
}

/* ---- form bodies ---- */

/* URL-decodes s[0..n) ('+' is a space) into out while it fits in cap
 * bytes; the full decoded length, or -1 for a bad %-escape. */
static long url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++, o++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return -1;
            c = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        }
        if (o < cap)
            out[o] = c;
    }
    return (long)o;
}

/* The first "text" field of an x-www-form-urlencoded body, as with
 * fcgate_query_value. */
static int form_text(const char *body, size_t len, char *out, size_t *outlen, char *msg,
                     size_t msglen)
{
    const char *p = body, *end = body + len;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        amp = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *val = eq ? eq + 1 : amp;
        char key[8];
        long n = url_decode(p, (size_t)((eq ? eq : amp) - p), key, sizeof key);
        if (n == 4 && memcmp(key, "text", 4) == 0) {
            n = url_decode(val, (size_t)(amp - val), out, len);
            if (n < 0)
                break;
            *outlen = (size_t)n;
            if (utf8_valid(out, *outlen))
                return 0;
            snprintf(msg, msglen, "%s", "text is not valid UTF-8");
            return -1;
        }
        if (n < 0)
            break;
        p = amp + 1;
    }
    snprintf(msg, msglen, "%s", p < end ? "invalid form encoding" : "missing text");
    return -1;
}

/* ---- responses ---- */

/* Sends b as the JSON body and frees it. */
static int send_json(fcgate_req *r, int status, struct buf *b)
{
    static const char oom[] = "{\"error\":\"out of memory\"}";

    fcgate_set_status(r, b->oom ? 500 : status);
    fcgate_add_header(r, "Content-Type", "application/json");
    if (b->oom)
        fcgate_write(r, oom, sizeof oom - 1);
    else
        fcgate_write(r, b->p, b->len);
    free(b->p);
    return 0;
}

static int reply_error(fcgate_req *r, int status, const char *msg)
{
    struct buf b = {0};

    buf_json(&b, json_pack("{s:s}", "error", msg));
    return send_json(r, status, &b);
}

static int reply_405(fcgate_req *r, const char *allow)
{
    fcgate_add_header(r, "Allow", allow);
    return reply_error(r, 405, "method not allowed");
}

static int reply_note(fcgate_req *r, int status, long long id, const char *text, size_t len)
{
    struct buf b = {0};

    json_note(&b, id, text, len);
    return send_json(r, status, &b);
}

/* Logs a failed database call once, here, and answers 500, or 503 when
 * the database is out of reach (a server restarting: try again). */
static int reply_db_failed(fcgate_req *r, int rc, const char *err)
{
    fcgate_log(r, FCGATE_LOG_ERROR, "database: %s", *err ? err : fcgate_strerror(rc));
    if (rc == FCGATE_EUNAVAIL)
        return reply_error(r, 503, "database unavailable");
    return reply_error(r, 500, rc == FCGATE_ENOMEM ? "out of memory" : "database error");
}

/* ---- request input ---- */

/* Decimal digits only, no sign, within [min, max]. */
static int parse_int(const char *s, long long min, long long max, long long *out)
{
    long long v = 0;

    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (LLONG_MAX - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* *out keeps its default when key is absent from the query. */
static int query_int(fcgate_req *r, const char *key, long long min, long long max, long long *out)
{
    char buf[32];
    int n = fcgate_query_value(r, key, buf, sizeof buf);

    if (n == FCGATE_EINVAL)
        return 0;
    if (n < 0 || (size_t)n != strlen(buf))
        return -1;
    return parse_int(buf, min, max, out);
}

static int is_json(fcgate_req *r, const char *body, size_t len)
{
    const char *ct = fcgate_header(r, "Content-Type");
    size_t i = 0;

    /* strchr finds the terminator too: a bare "application/json" counts */
    if (ct && strncasecmp(ct, "application/json", 16) == 0 && strchr("; \t", ct[16]))
        return 1;
    while (i < len && body[i] && strchr(" \t\r\n", body[i]))
        i++;
    return i < len && body[i] == '{';
}

/* One note as handed to and from a fcgate_db callback. */
struct job {
    long long id;
    char *text; /* heap, owned */
    size_t len;
    int found;
    char err[160]; /* the database's message, logged by the request's thread */
};

/* The text of a POST or PUT body into j: 0, or the status to answer with
 * and the message for the client in msg. */
static int read_text(fcgate_req *r, struct job *j, char *msg, size_t msglen)
{
    const char *body;
    size_t len;
    int rc = fcgate_read_all(r, &body, &len);

    if (rc == FCGATE_ETOOBIG) {
        snprintf(msg, msglen, "%s", "body too large");
        return 413;
    }
    if (rc != FCGATE_OK) {
        fcgate_log(r, FCGATE_LOG_ERROR, "reading the body: %s", fcgate_strerror(rc));
        snprintf(msg, msglen, "%s", "cannot read the body");
        return 500;
    }
    j->text = malloc(len + 1);
    if (!j->text) {
        snprintf(msg, msglen, "%s", "out of memory");
        return 500;
    }
    rc = is_json(r, body, len) ? json_text(body, len, j->text, &j->len, msg, msglen)
                               : form_text(body, len, j->text, &j->len, msg, msglen);
    return rc < 0 ? 400 : 0;
}

/* ---- database callbacks: each runs on whatever thread fcgate_db picks,
 * so they touch only their arg and db, and may run twice. ---- */

static int db_error(sqlite3 *db, char *err, size_t len)
{
    snprintf(err, len, "%s", sqlite3_errmsg(db));
    return sqlite3_errcode(db) == SQLITE_NOMEM ? FCGATE_ENOMEM : FCGATE_EDB;
}

/* Steps a write statement to its end and resets it. */
static int db_run(sqlite3 *db, sqlite3_stmt *st, struct job *j)
{
    int rc = sqlite3_step(st);

    if (rc != SQLITE_DONE) {
        rc = db_error(db, j->err, sizeof j->err);
        sqlite3_reset(st);
        return rc;
    }
    sqlite3_reset(st);
    return FCGATE_OK;
}

static int insert_fn(sqlite3 *db, void *arg)
{
    struct job *j = arg;
    sqlite3_stmt *st = fcgate_stmt(db, "INSERT INTO notes(text) VALUES (?1)");
    int rc;

    if (!st)
        return db_error(db, j->err, sizeof j->err);
    sqlite3_bind_text64(st, 1, j->text, j->len, SQLITE_STATIC, SQLITE_UTF8);
    rc = db_run(db, st, j);
    j->id = sqlite3_last_insert_rowid(db);
    return rc;
}

static int update_fn(sqlite3 *db, void *arg)
{
    struct job *j = arg;
    sqlite3_stmt *st = fcgate_stmt(db, "UPDATE notes SET text = ?1 WHERE id = ?2");
    int rc;

    if (!st)
        return db_error(db, j->err, sizeof j->err);
    sqlite3_bind_text64(st, 1, j->text, j->len, SQLITE_STATIC, SQLITE_UTF8);
    sqlite3_bind_int64(st, 2, j->id);
    rc = db_run(db, st, j);
    j->found = sqlite3_changes(db) > 0;
    return rc;
}

static int delete_fn(sqlite3 *db, void *arg)
{
    struct job *j = arg;
    sqlite3_stmt *st = fcgate_stmt(db, "DELETE FROM notes WHERE id = ?1");
    int rc;

    if (!st)
        return db_error(db, j->err, sizeof j->err);
    sqlite3_bind_int64(st, 1, j->id);
    rc = db_run(db, st, j);
    j->found = sqlite3_changes(db) > 0;
    return rc;
}

/* Copies the text column out: its memory goes when the statement resets. */
static int copy_text(sqlite3 *db, sqlite3_stmt *st, int col, char **out, size_t *len)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);

    if (!t && sqlite3_errcode(db) == SQLITE_NOMEM)
        return FCGATE_ENOMEM;
    *out = malloc(n + 1);
    if (!*out)
        return FCGATE_ENOMEM;
    if (n)
        memcpy(*out, t, n);
    *len = n;
    return FCGATE_OK;
}

static int get_fn(sqlite3 *db, void *arg)
{
    struct job *j = arg;
    sqlite3_stmt *st = fcgate_stmt(db, "SELECT text FROM notes WHERE id = ?1");
    int rc;

    free(j->text);
    j->text = NULL;
    if (!st)
        return db_error(db, j->err, sizeof j->err);
    sqlite3_bind_int64(st, 1, j->id);
    rc = sqlite3_step(st);
    j->found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        rc = copy_text(db, st, 0, &j->text, &j->len);
    else
        rc = rc == SQLITE_DONE ? FCGATE_OK : db_error(db, j->err, sizeof j->err);
    sqlite3_reset(st);
    return rc;
}

/* One chunk of GET /notes. The first chunk applies the offset; later ones
 * continue below the last id sent, so no chunk re-reads skipped rows. */
struct list {
    long long limit, offset;
    long long left, before; /* in: rows still wanted, last id sent */
    long long next_left, next_before;
    int more; /* out: stopped at LIST_CHUNK with rows left */
    struct buf out;
    char err[160];
};

static void list_add(struct list *l, long long id, const char *t, size_t n)
{
    if (l->next_left < l->limit)
        buf_add(&l->out, ",", 1);
    json_note(&l->out, id, t ? t : "", n);
    l->next_before = id;
    l->next_left--;
}

static void list_row(sqlite3_stmt *st, struct list *l)
{
    list_add(l, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
             (size_t)sqlite3_column_bytes(st, 1));
}

static int list_fn(sqlite3 *db, void *arg)
{
    struct list *l = arg;
    int first = l->left == l->limit;
    sqlite3_stmt *st = fcgate_stmt(
        db, first ? "SELECT id, text FROM notes ORDER BY id DESC LIMIT ?2 OFFSET ?1"
                  : "SELECT id, text FROM notes WHERE id < ?1 ORDER BY id DESC LIMIT ?2");
    int rc;

    l->out.len = 0;
    l->more = 0;
    l->next_left = l->left;
    l->next_before = l->before;
    if (!st)
        return db_error(db, l->err, sizeof l->err);
    sqlite3_bind_int64(st, 1, first ? l->offset : l->before);
    sqlite3_bind_int64(st, 2, l->left);
    if (first)
        buf_add(&l->out, "[", 1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        list_row(st, l);
        if (l->out.len >= LIST_CHUNK && l->next_left > 0) {
            l->more = 1;
            break;
        }
    }
    rc = l->more || rc == SQLITE_DONE ? FCGATE_OK : db_error(db, l->err, sizeof l->err);
    sqlite3_reset(st);
    if (!l->more)
        buf_add(&l->out, "]", 1);
    return rc == FCGATE_OK && l->out.oom ? FCGATE_ENOMEM : rc;
}

/* ---- PostgreSQL: the same statements, run from the request itself
 * (fcgate_pg_query waits as the mode waits). ---- */

static int pg_failed(PGresult *res, int rc, char *err, size_t len)
{
    if (res)
        snprintf(err, len, "%.*s", (int)strcspn(PQresultErrorMessage(res), "\n"),
                 PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

/* bytea in text form: "\x" and two hex digits a byte, so any text, NUL
 * included, goes through libpq's text parameters exactly. */
static char *pg_bytea(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *out = n <= (SIZE_MAX - 3) / 2 ? malloc(2 * n + 3) : NULL;

    if (!out)
        return NULL;
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        out[2 + 2 * i] = hex[(unsigned char)s[i] >> 4];
        out[3 + 2 * i] = hex[(unsigned char)s[i] & 15];
    }
    out[2 * n + 2] = '\0';
    return out;
}

/* A bytea column's value, decoded into a malloc'ed copy. */
static int pg_text(PGresult *res, int row, int col, char **out, size_t *len)
{
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), len);

    *out = raw ? malloc(*len + 1) : NULL;
    if (*out && *len)
        memcpy(*out, raw, *len);
    PQfreemem(raw);
    return *out ? FCGATE_OK : FCGATE_ENOMEM;
}

/* A statement with the note's text and/or id as parameters. */
static int pg_job(fcgate_req *r, struct job *j, const char *sql, int with_text, PGresult **res)
{
    char id[24], *text = NULL;
    const char *params[2];
    int n = 0, rc;

    if (with_text) {
        if (!(text = pg_bytea(j->text, j->len)))
            return FCGATE_ENOMEM;
        params[n++] = text;
    }
    snprintf(id, sizeof id, "%lld", j->id);
    if (strstr(sql, with_text ? "$2" : "$1"))
        params[n++] = id;
    rc = fcgate_pg_query(r, res, sql, n, params);
    free(text);
    return rc;
}

static int pg_insert(fcgate_req *r, struct job *j)
{
    PGresult *res;
    int rc = pg_job(r, j, "INSERT INTO notes(text) VALUES ($1) RETURNING id", 1, &res);

    if (rc != FCGATE_OK)
        return pg_failed(res, rc, j->err, sizeof j->err);
    j->id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return FCGATE_OK;
}

/* UPDATE or DELETE: found when it touched a row. */
static int pg_change(fcgate_req *r, struct job *j, const char *sql, int with_text)
{
    PGresult *res;
    int rc = pg_job(r, j, sql, with_text, &res);

    if (rc != FCGATE_OK)
        return pg_failed(res, rc, j->err, sizeof j->err);
    j->found = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return FCGATE_OK;
}

static int pg_get(fcgate_req *r, struct job *j)
{
    PGresult *res;
    int rc = pg_job(r, j, "SELECT text FROM notes WHERE id = $1", 0, &res);

    if (rc != FCGATE_OK)
        return pg_failed(res, rc, j->err, sizeof j->err);
    j->found = PQntuples(res) > 0;
    if (j->found)
        rc = pg_text(res, 0, 0, &j->text, &j->len);
    PQclear(res);
    return rc;
}

/* One page of GET /notes, as list_fn's chunks (keyset after the first). */
static int pg_list(fcgate_req *r, struct list *l)
{
    int first = l->left == l->limit;
    long long page = l->left < LIST_PG_PAGE ? l->left : LIST_PG_PAGE;
    char a[24], b[24];
    const char *params[2] = {a, b};
    PGresult *res;

    l->out.len = 0;
    l->next_left = l->left;
    l->next_before = l->before;
    snprintf(a, sizeof a, "%lld", first ? l->offset : l->before);
    snprintf(b, sizeof b, "%lld", page);
    int rc = fcgate_pg_query(
        r, &res,
        first ? "SELECT id, text FROM notes ORDER BY id DESC LIMIT $2 OFFSET $1"
              : "SELECT id, text FROM notes WHERE id < $1 ORDER BY id DESC LIMIT $2",
        2, params);
    if (rc != FCGATE_OK)
        return pg_failed(res, rc, l->err, sizeof l->err);
    if (first)
        buf_add(&l->out, "[", 1);
    for (int i = 0; i < PQntuples(res) && rc == FCGATE_OK; i++) {
        char *t;
        size_t n;
        if ((rc = pg_text(res, i, 1, &t, &n)) == FCGATE_OK)
            list_add(l, strtoll(PQgetvalue(res, i, 0), NULL, 10), t, n);
        free(t);
    }
    l->more = rc == FCGATE_OK && PQntuples(res) == page && l->next_left > 0;
    PQclear(res);
    if (!l->more)
        buf_add(&l->out, "]", 1);
    return rc == FCGATE_OK && l->out.oom ? FCGATE_ENOMEM : rc;
}

/* ---- the store: one call per operation, whichever database serves ---- */

static int store_insert(fcgate_req *r, const struct notes *n, struct job *j)
{
    return n->pg ? pg_insert(r, j) : fcgate_db(r, insert_fn, j);
}

static int store_update(fcgate_req *r, const struct notes *n, struct job *j)
{
    return n->pg ? pg_change(r, j, "UPDATE notes SET text = $1 WHERE id = $2", 1)
                 : fcgate_db(r, update_fn, j);
}

static int store_delete(fcgate_req *r, const struct notes *n, struct job *j)
{
    return n->pg ? pg_change(r, j, "DELETE FROM notes WHERE id = $1", 0)
                 : fcgate_db(r, delete_fn, j);
}

static int store_get(fcgate_req *r, const struct notes *n, struct job *j)
{
    free(j->text);
    j->text = NULL;
    return n->pg ? pg_get(r, j) : fcgate_db(r, get_fn, j);
}

static int store_list(fcgate_req *r, const struct notes *n, struct list *l)
{
    return n->pg ? pg_list(r, l) : fcgate_db(r, list_fn, l);
}

/* ---- handlers ---- */

static int list_notes(fcgate_req *r, const struct notes *n)
{
    struct list l = {.limit = LIST_DEFAULT};
    int rc;

    if (query_int(r, "limit", 1, LIST_MAX, &l.limit) < 0)
        return reply_error(r, 400, "limit must be an integer from 1 to 1000");
    if (query_int(r, "offset", 0, LLONG_MAX, &l.offset) < 0)
        return reply_error(r, 400, "offset must be a non-negative integer");
    l.left = l.limit;
    for (int first = 1;; first = 0) {
        rc = store_list(r, n, &l);
        if (rc != FCGATE_OK && first) {
            free(l.out.p);
            return reply_db_failed(r, rc, l.err);
        }
        if (rc != FCGATE_OK) {
            /* The headers are out: all that is left is to cut it short. */
            fcgate_log(r, FCGATE_LOG_ERROR, "database: %s", *l.err ? l.err : fcgate_strerror(rc));
            break;
        }
        if (first) {
            fcgate_set_status(r, 200);
            fcgate_add_header(r, "Content-Type", "application/json");
        }
        if (fcgate_write(r, l.out.p, l.out.len) < 0 || !l.more)
            break;
        l.left = l.next_left;
        l.before = l.next_before;
    }
    free(l.out.p);
    return rc;
}

static int create_note(fcgate_req *r, const struct notes *n)
{
    struct job j = {0};
    char loc[40], msg[96];
    int rc = read_text(r, &j, msg, sizeof msg);

    if (rc != 0) {
        reply_error(r, rc, msg);
        goto out;
    }
    rc = store_insert(r, n, &j);
    if (rc != FCGATE_OK) {
        reply_db_failed(r, rc, j.err);
        goto out;
    }
    snprintf(loc, sizeof loc, "/notes/%lld", j.id);
    fcgate_add_header(r, "Location", loc);
    reply_note(r, 201, j.id, j.text, j.len);
out:
    free(j.text);
    return 0;
}

static int get_note(fcgate_req *r, const struct notes *n, long long id)
{
    struct job j = {.id = id};
    int rc = store_get(r, n, &j);

    if (rc != FCGATE_OK)
        reply_db_failed(r, rc, j.err);
    else if (!j.found)
        reply_error(r, 404, "no such note");
    else
        reply_note(r, 200, id, j.text, j.len);
    free(j.text);
    return 0;
}

static int put_note(fcgate_req *r, const struct notes *n, long long id)
{
    struct job j = {.id = id};
    char msg[96];
    int rc = read_text(r, &j, msg, sizeof msg);

    if (rc != 0) {
        reply_error(r, rc, msg);
        goto out;
    }
    rc = store_update(r, n, &j);
    if (rc != FCGATE_OK)
        reply_db_failed(r, rc, j.err);
    else if (!j.found)
        reply_error(r, 404, "no such note");
    else
        reply_note(r, 200, id, j.text, j.len);
out:
    free(j.text);
    return 0;
}

static int delete_note(fcgate_req *r, const struct notes *n, long long id)
{
    struct job j = {.id = id};
    int rc = store_delete(r, n, &j);

    if (rc != FCGATE_OK)
        return reply_db_failed(r, rc, j.err);
    if (!j.found)
        return reply_error(r, 404, "no such note");
    fcgate_set_status(r, 204);
    return 0;
}

static int notes_collection(fcgate_req *r, const struct notes *n, const char *method)
{
    if (strcmp(method, "GET") == 0)
        return list_notes(r, n);
    if (strcmp(method, "POST") == 0)
        return create_note(r, n);
    return reply_405(r, "GET, POST");
}

static int notes_item(fcgate_req *r, const struct notes *n, const char *method, const char *sid)
{
    int get = strcmp(method, "GET") == 0, put = strcmp(method, "PUT") == 0;
    long long id;

    if (!get && !put && strcmp(method, "DELETE") != 0)
        return reply_405(r, "GET, PUT, DELETE");
    if (parse_int(sid, 1, LLONG_MAX, &id) < 0)
        return reply_error(r, 400, "bad id");
    if (get)
        return get_note(r, n, id);
    return put ? put_note(r, n, id) : delete_note(r, n, id);
}

static int notes_handle(void *ctx, fcgate_req *r)
{
    const struct notes *n = ctx;
    const char *path = fcgate_path(r), *method = fcgate_method(r);

    if (strcmp(path, "/notes") == 0)
        return notes_collection(r, n, method);
    if (strncmp(path, "/notes/", 7) == 0 && !strchr(path + 7, '/'))
        return notes_item(r, n, method, path + 7);
    return reply_error(r, 404, "not found");
}

static int notes_schema(sqlite3 *db, void *arg)
{
    char *msg = NULL;

    (void)arg;
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY AUTOINCREMENT, text "
                     "TEXT NOT NULL)",
                     NULL, NULL, &msg) == SQLITE_OK)
        return FCGATE_OK;
    fcgate_log(NULL, FCGATE_LOG_ERROR, "creating the notes table: %s", msg ? msg : "?");
    sqlite3_free(msg);
    return FCGATE_EDB;
}

/* Every worker runs init at once: the advisory lock makes the check and
 * the creation one step (CREATE TABLE IF NOT EXISTS alone races). */
static int notes_pg_schema(fcgate_pg *tx, void *arg)
{
    PGresult *res;
    int rc = fcgate_pg_exec(tx, &res, "SELECT pg_advisory_xact_lock(1852798067)", 0, NULL);

    if (rc == FCGATE_OK) {
        PQclear(res);
        rc = fcgate_pg_exec(tx, &res,
                            "CREATE TABLE IF NOT EXISTS notes(id bigserial PRIMARY KEY, "
                            "text bytea NOT NULL)",
                            0, NULL);
    }
    if (rc != FCGATE_OK)
        fcgate_log(NULL, FCGATE_LOG_ERROR, "creating the notes table: %s",
                   res ? PQresultErrorMessage(res) : fcgate_strerror(rc));
    PQclear(res);
    (void)arg;
    return rc;
}

static int notes_init(const fcgate_host *h, void **ctx)
{
    struct notes *n = calloc(1, sizeof *n);
    int rc;

    if (!n)
        return -1;
    n->pg = fcgate_pg_configured(h);
    rc = n->pg ? fcgate_host_pg(h, notes_pg_schema, NULL) : fcgate_host_db(h, notes_schema, NULL);
    if (rc == FCGATE_EINVAL)
        fcgate_log(NULL, FCGATE_LOG_ERROR,
                   "notes needs a database (app.postgres, or app.database / --database)");
    if (rc != FCGATE_OK) {
        free(n);
        return -1;
    }
    *ctx = n;
    return 0;
}

static void notes_fini(void *ctx)
{
    free(ctx);
}

FCGATE_APP(.name = "notes", .flags = FCGATE_APP_THREADSAFE, .init = notes_init,
           .handle = notes_handle, .fini = notes_fini);

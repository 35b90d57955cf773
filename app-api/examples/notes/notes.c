/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * notes - the example JSON API over sqlite (DESIGN.md, "Example apps").
 *
 *   POST   /notes        {"text": "..."} or text=...  201, Location
 *   GET    /notes        ?limit=1..1000 (100) &offset=N, newest first
 *   GET    /notes/{id}   PUT /notes/{id} (same bodies)   DELETE /notes/{id}
 *
 * A note's text is any valid UTF-8, NUL included: it is stored with its
 * exact length and returned byte for byte. Request bodies go through a
 * strict RFC 8259 parser, so nothing is stored from a body that another
 * JSON parser would read differently (or refuse).
 *
 * Thread-safe: no mutable globals; all state lives on the stack or in heap
 * blocks owned by one request.
 */
#include <fcgate/app.h>

#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000
/* GET /notes hands rows over in chunks of about this size, so a long list
 * of big notes never has to sit in memory whole. */
#define LIST_CHUNK (256 * 1024)
/* Keeps the parser's recursion well inside a coroutine stack. */
#define JSON_MAX_DEPTH 64

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

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* ---- UTF-8 and the JSON string encoder ---- */

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

/* The escape for byte c, which cannot go out as is. A byte >= 0x20 here
 * starts invalid UTF-8, which only a database written by something else
 * can hold: U+FFFD keeps the output valid JSON. */
static void json_escape_byte(struct buf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef", from[] = "\"\\\n\r\t\b\f", to[] = "\"\\nrtbf";
    const char *e = memchr(from, c, sizeof from - 1);

    if (e) {
        buf_add(b, (char[]){'\\', to[e - from]}, 2);
    } else if (c >= 0x20) {
        buf_add(b, "\\ufffd", 6);
    } else {
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        buf_add(b, u, 6);
    }
}

/* s as a JSON string literal; UTF-8 passes through unescaped. */
static void json_str(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, i = 0;

    buf_add(b, "\"", 1);
    while (i < n) {
        size_t k = u[i] >= 0x20 && u[i] != '"' && u[i] != '\\' ? utf8_seq(u + i, n - i) : 0;
        if (k > 0) {
            i += k;
            continue;
        }
        buf_add(b, s + start, i - start);
        json_escape_byte(b, u[i]);
        start = ++i;
    }
    buf_add(b, s + start, i - start);
    buf_add(b, "\"", 1);
}

static void json_note(struct buf *b, long long id, const char *text, size_t len)
{
    char num[48]; /* {"id": + 20 digits + ,"text": */

    snprintf(num, sizeof num, "{\"id\":%lld,\"text\":", id);
    buf_str(b, num);
    json_str(b, text, len);
    buf_add(b, "}", 1);
}

/* ---- the request parser: a strict RFC 8259 reader that keeps only the
 * top-level "text" member and checks everything else. ---- */

enum { TEXT_ABSENT, TEXT_STRING, TEXT_OTHER };

struct json {
    const unsigned char *p, *end, *start;
    int depth;
    const char *err; /* first error, NULL while the input is fine */
    size_t err_at;
    char *text; /* decoded "text"; room for the whole body, which is enough
                 * because no escape decodes to more bytes than it takes */
    size_t text_len, text_cap;
    int text_kind;
};

static int json_value(struct json *j);

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int json_fail(struct json *j, const char *msg)
{
    if (!j->err) {
        j->err = msg;
        j->err_at = (size_t)(j->p - j->start);
    }
    return -1;
}

static int json_peek(const struct json *j)
{
    return j->p < j->end ? *j->p : -1;
}

static void json_ws(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int json_hex4(struct json *j, unsigned *out)
{
    unsigned v = 0;

    if (j->end - j->p < 4)
        return json_fail(j, "bad \\u escape");
    for (int i = 0; i < 4; i++, j->p++) {
        int d = hexval(*j->p);
        if (d < 0)
            return json_fail(j, "bad \\u escape");
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return 0;
}

/* \uXXXX at j->p (past the "\u"), with its low half if it is a high
 * surrogate; a surrogate without its partner has no UTF-8 form. */
static int json_codepoint(struct json *j, unsigned *cp)
{
    unsigned lo;

    if (json_hex4(j, cp) < 0)
        return -1;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return json_fail(j, "lone surrogate");
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 0;
    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
        return json_fail(j, "lone surrogate");
    j->p += 2;
    if (json_hex4(j, &lo) < 0)
        return -1;
    if (lo < 0xdc00 || lo > 0xdfff)
        return json_fail(j, "lone surrogate");
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
    return 0;
}

static size_t utf8_put(unsigned cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The backslash escape at j->p, decoded to UTF-8 in o (4 bytes). */
static int json_escape(struct json *j, char *o, size_t *len)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned cp;
    int c;

    j->p++;
    c = json_peek(j);
    if (c < 0)
        return json_fail(j, "unterminated string");
    j->p++;
    for (size_t i = 0; i < sizeof from - 1; i++) {
        if (c == from[i]) {
            o[0] = to[i];
            *len = 1;
            return 0;
        }
    }
    if (c != 'u') {
        j->p--;
        return json_fail(j, "bad escape");
    }
    if (json_codepoint(j, &cp) < 0)
        return -1;
    *len = utf8_put(cp, o);
    return 0;
}

/* The string at j->p, decoded into out while it fits in cap bytes (out may
 * be NULL); *len is the full decoded length either way. */
static int json_string(struct json *j, char *out, size_t cap, size_t *len)
{
    char esc[4];
    const char *src;
    size_t n = 0, k;

    j->p++;
    for (;;) {
        int c = json_peek(j);
        if (c < 0)
            return json_fail(j, "unterminated string");
        if (c == '"')
            break;
        if (c < 0x20)
            return json_fail(j, "control character in string");
        if (c == '\\') {
            if (json_escape(j, esc, &k) < 0)
                return -1;
            src = esc;
        } else {
            k = utf8_seq(j->p, (size_t)(j->end - j->p));
            if (k == 0)
                return json_fail(j, "invalid UTF-8");
            src = (const char *)j->p;
            j->p += k;
        }
        if (out && n <= cap && k <= cap - n)
            memcpy(out + n, src, k);
        n += k;
    }
    j->p++;
    *len = n;
    return 0;
}

static size_t json_digits(struct json *j)
{
    const unsigned char *p = j->p;

    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return (size_t)(j->p - p);
}

static int json_number(struct json *j)
{
    if (json_peek(j) == '-')
        j->p++;
    if (json_peek(j) == '0')
        j->p++;
    else if (json_peek(j) < '1' || json_peek(j) > '9' || !json_digits(j))
        return json_fail(j, "bad number");
    if (json_peek(j) == '.') {
        j->p++;
        if (!json_digits(j))
            return json_fail(j, "bad number");
    }
    if (json_peek(j) == 'e' || json_peek(j) == 'E') {
        j->p++;
        if (json_peek(j) == '+' || json_peek(j) == '-')
            j->p++;
        if (!json_digits(j))
            return json_fail(j, "bad number");
    }
    return 0;
}

static int json_literal(struct json *j, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return json_fail(j, "unexpected character");
    j->p += n;
    return 0;
}

/* A member's value; `text` marks the top-level "text" member, the last of
 * which wins, as with JSON.parse and Python's json. */
static int json_member(struct json *j, int text)
{
    if (!text)
        return json_value(j);
    if (json_peek(j) != '"') {
        j->text_kind = TEXT_OTHER;
        return json_value(j);
    }
    j->text_kind = TEXT_STRING;
    return json_string(j, j->text, j->text_cap, &j->text_len);
}

/* The members of a non-empty object, up to its closing brace. */
static int json_members(struct json *j, int top)
{
    char key[8];
    size_t klen;

    for (;;) {
        if (json_peek(j) != '"')
            return json_fail(j, "expected a string key");
        if (json_string(j, key, sizeof key, &klen) < 0)
            return -1;
        json_ws(j);
        if (json_peek(j) != ':')
            return json_fail(j, "expected ':'");
        j->p++;
        json_ws(j);
        if (json_member(j, top && klen == 4 && memcmp(key, "text", 4) == 0) < 0)
            return -1;
        json_ws(j);
        if (json_peek(j) != ',')
            return 0;
        j->p++;
        json_ws(j);
    }
}

static int json_elements(struct json *j)
{
    for (;;) {
        if (json_value(j) < 0)
            return -1;
        json_ws(j);
        if (json_peek(j) != ',')
            return 0;
        j->p++;
        json_ws(j);
    }
}

/* An object or array at j->p; top marks the request object itself. */
static int json_container(struct json *j, int top)
{
    int closer = *j->p == '{' ? '}' : ']';

    if (++j->depth > JSON_MAX_DEPTH)
        return json_fail(j, "nested too deeply");
    j->p++;
    json_ws(j);
    if (json_peek(j) != closer && (closer == '}' ? json_members(j, top) : json_elements(j)) < 0)
        return -1;
    if (json_peek(j) != closer)
        return json_fail(j, closer == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    j->p++;
    j->depth--;
    return 0;
}

static int json_value(struct json *j)
{
    size_t n;
    int c = json_peek(j);

    switch (c) {
    case '{':
    case '[':
        return json_container(j, 0);
    case '"':
        return json_string(j, NULL, 0, &n);
    case 't':
        return json_literal(j, "true");
    case 'f':
        return json_literal(j, "false");
    case 'n':
        return json_literal(j, "null");
    case -1:
        return json_fail(j, "unexpected end");
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return json_number(j);
        return json_fail(j, "unexpected character");
    }
}

/* "text" from a JSON body into out (len bytes of room). 0, or -1 with a
 * message for the client in msg. */
static int json_text(const char *body, size_t len, char *out, size_t *outlen, char *msg,
                     size_t msglen)
{
    struct json j = {.p = (const unsigned char *)body, .text = out, .text_cap = len};

    j.start = j.p;
    j.end = j.p + len;
    json_ws(&j);
    if (json_peek(&j) != '{')
        json_fail(&j, json_peek(&j) < 0 ? "empty body" : "expected an object");
    else if (json_container(&j, 1) == 0)
        json_ws(&j);
    if (!j.err && j.p != j.end)
        json_fail(&j, "trailing characters");
    if (j.err)
        snprintf(msg, msglen, "invalid JSON: %s at byte %zu", j.err, j.err_at);
    else if (j.text_kind != TEXT_STRING)
        snprintf(msg, msglen, "%s", j.text_kind ? "text must be a string" : "missing text");
    *outlen = j.text_len;
    return j.err || j.text_kind != TEXT_STRING ? -1 : 0;
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

    buf_str(&b, "{\"error\":");
    json_str(&b, msg, strlen(msg));
    buf_add(&b, "}", 1);
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

/* Logs a failed fcgate_db call once, here, and answers 500. */
static int reply_db_failed(fcgate_req *r, int rc, const char *err)
{
    fcgate_log(r, FCGATE_LOG_ERROR, "database: %s", *err ? err : fcgate_strerror(rc));
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
    char err[160]; /* sqlite's message, logged by the request's thread */
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

static void list_row(sqlite3_stmt *st, struct list *l)
{
    long long id = sqlite3_column_int64(st, 0);
    const char *t = (const char *)sqlite3_column_text(st, 1);
    size_t n = (size_t)sqlite3_column_bytes(st, 1);

    if (l->next_left < l->limit)
        buf_add(&l->out, ",", 1);
    json_note(&l->out, id, t ? t : "", n);
    l->next_before = id;
    l->next_left--;
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

/* ---- handlers ---- */

static int list_notes(fcgate_req *r)
{
    struct list l = {.limit = LIST_DEFAULT};
    int rc;

    if (query_int(r, "limit", 1, LIST_MAX, &l.limit) < 0)
        return reply_error(r, 400, "limit must be an integer from 1 to 1000");
    if (query_int(r, "offset", 0, LLONG_MAX, &l.offset) < 0)
        return reply_error(r, 400, "offset must be a non-negative integer");
    l.left = l.limit;
    for (int first = 1;; first = 0) {
        rc = fcgate_db(r, list_fn, &l);
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

static int create_note(fcgate_req *r)
{
    struct job j = {0};
    char loc[40], msg[96];
    int rc = read_text(r, &j, msg, sizeof msg);

    if (rc != 0) {
        reply_error(r, rc, msg);
        goto out;
    }
    rc = fcgate_db(r, insert_fn, &j);
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

static int get_note(fcgate_req *r, long long id)
{
    struct job j = {.id = id};
    int rc = fcgate_db(r, get_fn, &j);

    if (rc != FCGATE_OK)
        reply_db_failed(r, rc, j.err);
    else if (!j.found)
        reply_error(r, 404, "no such note");
    else
        reply_note(r, 200, id, j.text, j.len);
    free(j.text);
    return 0;
}

static int put_note(fcgate_req *r, long long id)
{
    struct job j = {.id = id};
    char msg[96];
    int rc = read_text(r, &j, msg, sizeof msg);

    if (rc != 0) {
        reply_error(r, rc, msg);
        goto out;
    }
    rc = fcgate_db(r, update_fn, &j);
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

static int delete_note(fcgate_req *r, long long id)
{
    struct job j = {.id = id};
    int rc = fcgate_db(r, delete_fn, &j);

    if (rc != FCGATE_OK)
        return reply_db_failed(r, rc, j.err);
    if (!j.found)
        return reply_error(r, 404, "no such note");
    fcgate_set_status(r, 204);
    return 0;
}

static int notes_collection(fcgate_req *r, const char *method)
{
    if (strcmp(method, "GET") == 0)
        return list_notes(r);
    if (strcmp(method, "POST") == 0)
        return create_note(r);
    return reply_405(r, "GET, POST");
}

static int notes_item(fcgate_req *r, const char *method, const char *sid)
{
    int get = strcmp(method, "GET") == 0, put = strcmp(method, "PUT") == 0;
    long long id;

    if (!get && !put && strcmp(method, "DELETE") != 0)
        return reply_405(r, "GET, PUT, DELETE");
    if (parse_int(sid, 1, LLONG_MAX, &id) < 0)
        return reply_error(r, 400, "bad id");
    if (get)
        return get_note(r, id);
    return put ? put_note(r, id) : delete_note(r, id);
}

static int notes_handle(void *ctx, fcgate_req *r)
{
    const char *path = fcgate_path(r), *method = fcgate_method(r);

    (void)ctx;
    if (strcmp(path, "/notes") == 0)
        return notes_collection(r, method);
    if (strncmp(path, "/notes/", 7) == 0 && !strchr(path + 7, '/'))
        return notes_item(r, method, path + 7);
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

static int notes_init(const fcgate_host *h, void **ctx)
{
    int rc = fcgate_host_db(h, notes_schema, NULL);

    *ctx = NULL;
    if (rc == FCGATE_EINVAL)
        fcgate_log(NULL, FCGATE_LOG_ERROR, "notes needs a database (app.database, --database)");
    return rc == FCGATE_OK ? 0 : -1;
}

FCGATE_APP(.name = "notes", .flags = FCGATE_APP_THREADSAFE, .init = notes_init,
           .handle = notes_handle);

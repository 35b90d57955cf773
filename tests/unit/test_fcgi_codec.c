/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_fcgi_codec.c - the FastCGI codec, fed byte streams built here.
 *
 * The streams are encoded by this file's own helpers (not the codec's
 * encoders), and the codec's output records are decoded by this file's own
 * decoder, so an error in the codec cannot cancel itself out. Event
 * sequences are compared as a text trace that merges STDIN pieces, which
 * is the one thing the codec may deliver differently for different splits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fastcgi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_codec.h"

static const struct codec_limits test_limits = {
    .max_params_bytes = 4096,
    .max_conns = 17,
    .max_reqs = 23,
};

/* ---- stream building (independent of the codec's encoders) ---- */

static void put(struct codec_buf *b, const void *p, size_t n)
{
    assert_int_equal(codec_buf_append(b, p, n), 0);
}

static void put_byte(struct codec_buf *b, uint8_t v)
{
    put(b, &v, 1);
}

/* A record with an explicit version and padding; padding bytes are
 * garbage on purpose (the spec says the receiver ignores them). */
static void raw_record(struct codec_buf *b, uint8_t version, uint8_t type, uint16_t id,
                       const void *p, size_t clen, uint8_t plen)
{
    uint8_t h[8] = {
        version, type, (uint8_t)(id >> 8), (uint8_t)id, (uint8_t)(clen >> 8), (uint8_t)clen,
        plen,    0xee};

    assert_true(clen <= 0xffff);
    put(b, h, sizeof(h));
    if (clen)
        put(b, p, clen);
    for (unsigned i = 0; i < plen; i++)
        put_byte(b, (uint8_t)(0xa5 ^ i));
}

/* A version-1 record padded to a multiple of 8, as a web server sends it. */
static void record(struct codec_buf *b, uint8_t type, uint16_t id, const void *p, size_t clen)
{
    raw_record(b, FCGI_VERSION_1, type, id, p, clen, (uint8_t)((8 - (clen & 7)) & 7));
}

static void begin(struct codec_buf *b, uint16_t id, uint16_t role, uint8_t flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0, 0, 0, 0, 0};
    record(b, FCGI_BEGIN_REQUEST, id, body, sizeof(body));
}

static void enc_len(struct codec_buf *b, uint32_t n)
{
    if (n < 128) {
        put_byte(b, (uint8_t)n);
        return;
    }
    uint8_t l[4] = {(uint8_t)(0x80 | (n >> 24)), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(b, l, 4);
}

static void enc_nv(struct codec_buf *b, const char *name, const char *value)
{
    enc_len(b, (uint32_t)strlen(name));
    enc_len(b, (uint32_t)strlen(value));
    put(b, name, strlen(name));
    put(b, value, strlen(value));
}

/* A name-value stream as PARAMS records of at most `split` bytes each,
 * then the empty PARAMS record that ends the stream. */
static void params(struct codec_buf *b, uint16_t id, const struct codec_buf *nv, size_t split)
{
    for (size_t off = 0; off < nv->len; off += split) {
        size_t n = nv->len - off < split ? nv->len - off : split;
        record(b, FCGI_PARAMS, id, nv->data + off, n);
    }
    record(b, FCGI_PARAMS, id, NULL, 0);
}

static void stdin_data(struct codec_buf *b, uint16_t id, const char *s)
{
    record(b, FCGI_STDIN, id, s, strlen(s));
}

static void stdin_end(struct codec_buf *b, uint16_t id)
{
    record(b, FCGI_STDIN, id, NULL, 0);
}

/* The usual GET: a handful of params, no body. */
static void simple_request(struct codec_buf *b, uint16_t id, uint8_t flags, const char *uri,
                           const char *body)
{
    struct codec_buf nv = {0};
    enc_nv(&nv, "REQUEST_METHOD", body ? "POST" : "GET");
    enc_nv(&nv, "REQUEST_URI", uri);
    enc_nv(&nv, "QUERY_STRING", "");
    begin(b, id, FCGI_RESPONDER, flags);
    params(b, id, &nv, 8192);
    if (body && *body)
        stdin_data(b, id, body);
    stdin_end(b, id);
    codec_buf_free(&nv);
}

/* ---- decoding what the codec wrote (independent of the codec) ---- */

struct rec {
    uint8_t version, type;
    uint16_t id;
    size_t clen, plen;
    const uint8_t *content;
};

/* Splits a buffer into whole records; fails the test on a partial one. */
static size_t decode_records(const uint8_t *p, size_t len, struct rec *r, size_t max)
{
    size_t n = 0, off = 0;

    while (off < len) {
        assert_true(len - off >= 8);
        assert_true(n < max);
        const uint8_t *h = p + off;
        r[n].version = h[0];
        r[n].type = h[1];
        r[n].id = (uint16_t)(h[2] << 8 | h[3]);
        r[n].clen = (size_t)(h[4] << 8 | h[5]);
        r[n].plen = h[6];
        r[n].content = h + 8;
        assert_int_equal(r[n].version, FCGI_VERSION_1);
        assert_true(len - off - 8 >= r[n].clen + r[n].plen);
        off += 8 + r[n].clen + r[n].plen;
        n++;
    }
    return n;
}

static size_t dec_len(const uint8_t *p, size_t len, size_t *off)
{
    assert_true(*off < len);
    if (!(p[*off] & 0x80))
        return p[(*off)++];
    assert_true(len - *off >= 4);
    size_t n = ((size_t)(p[*off] & 0x7f) << 24) | ((size_t)p[*off + 1] << 16) |
               ((size_t)p[*off + 2] << 8) | p[*off + 3];
    *off += 4;
    return n;
}

/* The value of `name` in a name-value stream, and how often it occurs. */
static int nv_lookup(const uint8_t *p, size_t len, const char *name, char *value, size_t vmax)
{
    size_t off = 0;
    int count = 0;

    while (off < len) {
        size_t nl = dec_len(p, len, &off);
        size_t vl = dec_len(p, len, &off);
        assert_true(nl <= len - off && vl <= len - off - nl);
        if (nl == strlen(name) && memcmp(p + off, name, nl) == 0) {
            assert_true(vl < vmax);
            memcpy(value, p + off + nl, vl);
            value[vl] = '\0';
            count++;
        }
        off += nl + vl;
    }
    return count;
}

static size_t nv_count(const uint8_t *p, size_t len)
{
    size_t off = 0, n = 0;
    while (off < len) {
        size_t nl = dec_len(p, len, &off);
        size_t vl = dec_len(p, len, &off);
        assert_true(nl <= len - off && vl <= len - off - nl);
        off += nl + vl;
        n++;
    }
    return n;
}

/* ---- driving the codec like an engine, recording a trace ---- */

struct trace {
    struct codec_buf text; /* one line per event; STDIN pieces merged */
    struct codec_buf body; /* STDIN bytes not yet written to text */
    unsigned body_id;
    struct codec_buf out; /* everything the codec queued in codec.out */
    int failed;
};

static void tprintf(struct trace *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(struct trace *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(line));
    put(&t->text, line, (size_t)n);
}

static void flush_body(struct trace *t)
{
    if (t->body.len == 0)
        return;
    tprintf(t, "STDIN %u %zu:", t->body_id, t->body.len);
    put(&t->text, t->body.data, t->body.len);
    tprintf(t, "\n");
    t->body.len = 0;
}

static void trace_free(struct trace *t)
{
    codec_buf_free(&t->text);
    codec_buf_free(&t->body);
    codec_buf_free(&t->out);
}

/* Records one event and does what an engine does after it. */
static void trace_event(struct trace *t, struct codec *c, const struct codec_event *ev)
{
    if (ev->type != CODEC_STDIN && ev->type != CODEC_NEED_MORE)
        flush_body(t);
    switch (ev->type) {
    case CODEC_NEED_MORE:
        break;
    case CODEC_BEGIN:
        tprintf(t, "BEGIN %u keep=%d\n", ev->id, ev->keep_conn);
        break;
    case CODEC_PARAMS:
        tprintf(t, "PARAMS %u n=%zu\n", ev->id, codec_nparams(c));
        for (size_t i = 0; i < codec_nparams(c); i++) {
            struct codec_param p = codec_param_at(c, i);
            tprintf(t, "  %s=", p.name);
            put(&t->text, p.value, p.vlen);
            tprintf(t, "\n");
        }
        assert_true(codec_params_held(c) <= 3 * codec_params_wire(c));
        break;
    case CODEC_STDIN:
        assert_true(ev->len > 0);
        if (t->body.len && t->body_id != ev->id)
            flush_body(t);
        t->body_id = ev->id;
        put(&t->body, ev->data, ev->len);
        break;
    case CODEC_STDIN_END:
        tprintf(t, "STDIN_END %u\n", ev->id);
        codec_request_done(c);
        break;
    case CODEC_ABORT:
        tprintf(t, "ABORT %u keep=%d\n", ev->id, ev->keep_conn);
        codec_request_done(c);
        break;
    case CODEC_REJECTED:
        tprintf(t, "REJECTED %u keep=%d\n", ev->id, ev->keep_conn);
        break;
    case CODEC_ERROR:
        assert_non_null(ev->reason);
        tprintf(t, "ERROR %s\n", ev->reason);
        t->failed = 1;
        break;
    }
    if (c->out.len) {
        put(&t->out, c->out.data, c->out.len);
        c->out.len = 0;
    }
}

/* Feeds one chunk, event by event, until it is used up or the codec fails. */
static void feed(struct trace *t, struct codec *c, const uint8_t *p, size_t len)
{
    while (!t->failed) {
        struct codec_event ev;
        size_t used = 12345;
        enum codec_event_type type = codec_next(c, p, len, &used, &ev);
        assert_int_equal(type, ev.type);
        assert_true(used <= len);
        if (type == CODEC_STDIN) {
            /* STDIN data points into the bytes just consumed. */
            assert_true(ev.data >= p && ev.data + ev.len <= p + used);
        }
        trace_event(t, c, &ev);
        if (used) { /* p may be NULL for an empty stream */
            p += used;
            len -= used;
        }
        if (type == CODEC_NEED_MORE) {
            assert_int_equal(len, 0);
            break;
        }
    }
}

/* Runs a whole stream cut at the given offsets (ascending), then EOF. */
static void run_cuts(struct trace *t, const struct codec_limits *lim, const uint8_t *s, size_t len,
                     const size_t *cuts, size_t ncuts)
{
    struct codec c;
    size_t prev = 0;

    memset(t, 0, sizeof(*t));
    codec_init(&c, lim);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        feed(t, &c, s + prev, end - prev);
        prev = end;
    }
    flush_body(t);
    if (!t->failed) {
        const char *e = codec_eof(&c);
        tprintf(t, "EOF %s\n", e ? e : "clean");
    }
    codec_free(&c);
}

static void run_whole(struct trace *t, const struct codec_limits *lim, const uint8_t *s, size_t len)
{
    run_cuts(t, lim, s, len, NULL, 0);
}

static void run_bytewise(struct trace *t, const struct codec_limits *lim, const uint8_t *s,
                         size_t len)
{
    size_t *cuts = calloc(len ? len : 1, sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    run_cuts(t, lim, s, len, cuts, len ? len - 1 : 0);
    free(cuts);
}

static void assert_same_trace(const struct trace *a, const struct trace *b)
{
    if (a->text.len != b->text.len || memcmp(a->text.data, b->text.data, a->text.len) != 0) {
        size_t i = 0, line = 0;
        while (i < a->text.len && i < b->text.len && a->text.data[i] == b->text.data[i])
            i++;
        while (line < i && i - line < 200 && a->text.data[i - line - 1] != '\n')
            line++;
        i -= line;
        /* print_error truncates long messages: show from the first difference. */
        print_error(
            "traces differ at byte %zu:\nexpected: %.*s\ngot:      %.*s\n", i,
            (int)(a->text.len - i < 300 ? a->text.len - i : 300), (const char *)a->text.data + i,
            (int)(b->text.len - i < 300 ? b->text.len - i : 300), (const char *)b->text.data + i);
        fail();
    }
    assert_int_equal(a->out.len, b->out.len);
    if (a->out.len)
        assert_memory_equal(a->out.data, b->out.data, a->out.len);
}

static int trace_has(const struct trace *t, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; n <= t->text.len && i <= t->text.len - n; i++)
        if (memcmp(t->text.data + i, s, n) == 0)
            return 1;
    return 0;
}

/* ---- stepping by hand ---- */

struct cursor {
    const uint8_t *p;
    size_t len;
};

static enum codec_event_type step(struct codec *c, struct cursor *cur, struct codec_event *ev)
{
    size_t used = 0;
    enum codec_event_type t = codec_next(c, cur->p, cur->len, &used, ev);
    assert_true(used <= cur->len);
    cur->p += used;
    cur->len -= used;
    return t;
}

static void expect(struct codec *c, struct cursor *cur, struct codec_event *ev,
                   enum codec_event_type type, unsigned id)
{
    enum codec_event_type got = step(c, cur, ev);
    if (got == CODEC_ERROR && type != CODEC_ERROR)
        print_error("codec error: %s\n", ev->reason);
    assert_int_equal(got, type);
    if (type != CODEC_NEED_MORE && type != CODEC_ERROR)
        assert_int_equal(ev->id, id);
}

/* Asserts the codec is failed for good: more input is not taken. */
static void assert_stays_failed(struct codec *c, const char *reason)
{
    static const uint8_t more[16] = {1, FCGI_BEGIN_REQUEST, 0, 9, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0,
                                     0};
    for (int i = 0; i < 3; i++) {
        struct codec_event ev;
        size_t used = 99;
        assert_int_equal(codec_next(c, more, sizeof(more), &used, &ev), CODEC_ERROR);
        assert_int_equal(ev.type, CODEC_ERROR);
        assert_int_equal(used, 0);
        assert_non_null(ev.reason);
        assert_non_null(strstr(ev.reason, reason));
    }
}

/* Feeds a stream that must end in CODEC_ERROR with `reason` in its text,
 * whole and one byte at a time, with the same events before it. */
static void expect_error(const struct codec_buf *s, const struct codec_limits *lim,
                         const char *reason)
{
    struct trace whole, bytes;
    struct codec c;
    struct codec_event ev;
    struct cursor cur = {s->data, s->len};

    run_whole(&whole, lim, s->data, s->len);
    run_bytewise(&bytes, lim, s->data, s->len);
    assert_true(whole.failed);
    if (!trace_has(&whole, reason)) {
        print_error("no \"%s\" in:\n%.*s\n", reason, (int)whole.text.len,
                    (const char *)whole.text.data);
        fail();
    }
    assert_same_trace(&whole, &bytes);
    trace_free(&whole);
    trace_free(&bytes);

    codec_init(&c, lim);
    for (;;) {
        enum codec_event_type t = step(&c, &cur, &ev);
        if (t == CODEC_ERROR)
            break;
        assert_int_not_equal(t, CODEC_NEED_MORE);
        if (t == CODEC_STDIN_END || t == CODEC_ABORT)
            codec_request_done(&c);
    }
    assert_non_null(strstr(ev.reason, reason));
    assert_stays_failed(&c, reason);
    codec_free(&c);
}

/* ---- a full request ---- */

static void test_codec_decodes_full_responder_request(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec c;
    struct codec_event ev;

    enc_nv(&nv, "REQUEST_METHOD", "POST");
    enc_nv(&nv, "REQUEST_URI", "/notes?x=1");
    enc_nv(&nv, "CONTENT_LENGTH", "11");
    char big[300];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    enc_nv(&nv, "HTTP_X_BIG", big); /* a 4-byte value length */
    enc_nv(&nv, "EMPTY", "");
    begin(&s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    params(&s, 1, &nv, 7); /* records end inside names, values and lengths */
    stdin_data(&s, 1, "hello ");
    stdin_data(&s, 1, "world");
    stdin_end(&s, 1);

    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    assert_int_equal(ev.keep_conn, 1);
    assert_null(codec_param(&c, "REQUEST_METHOD")); /* not before PARAMS */
    assert_string_equal(codec_eof(&c), "connection closed before the request was complete");
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    assert_string_equal(codec_param(&c, "REQUEST_METHOD"), "POST");
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/notes?x=1");
    assert_string_equal(codec_param(&c, "CONTENT_LENGTH"), "11");
    assert_string_equal(codec_param(&c, "HTTP_X_BIG"), big);
    assert_string_equal(codec_param(&c, "EMPTY"), "");
    assert_null(codec_param(&c, "PATH_INFO"));
    assert_null(codec_param(&c, "REQUEST")); /* no prefix match */
    assert_int_equal(c.nparams, 5);

    char body[32] = "";
    size_t blen = 0;
    for (;;) {
        enum codec_event_type t = step(&c, &cur, &ev);
        if (t != CODEC_STDIN) {
            assert_int_equal(t, CODEC_STDIN_END);
            break;
        }
        assert_int_equal(ev.id, 1);
        assert_true(blen + ev.len < sizeof(body));
        memcpy(body + blen, ev.data, ev.len);
        blen += ev.len;
    }
    assert_int_equal(ev.id, 1);
    assert_int_equal(blen, 11);
    assert_memory_equal(body, "hello world", 11);
    assert_int_equal(cur.len, 0);
    assert_int_equal(c.out.len, 0);
    assert_null(codec_eof(&c)); /* the response is being produced */
    /* Params stay readable while the request runs. */
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/notes?x=1");
    codec_request_done(&c);
    assert_null(codec_param(&c, "REQUEST_URI"));
    assert_null(codec_eof(&c));
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);

    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_reports_keep_conn_clear(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct codec c;
    struct codec_event ev;

    simple_request(&s, 7, 0, "/hello", NULL);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 7);
    assert_int_equal(ev.keep_conn, 0);
    expect(&c, &cur, &ev, CODEC_PARAMS, 7);
    assert_string_equal(codec_param(&c, "REQUEST_METHOD"), "GET");
    assert_string_equal(codec_param(&c, "QUERY_STRING"), "");
    expect(&c, &cur, &ev, CODEC_STDIN_END, 7);
    assert_int_equal(cur.len, 0);
    codec_free(&c);
    codec_buf_free(&s);
}

static void test_codec_accepts_empty_params_stream(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct codec c;
    struct codec_event ev;

    begin(&s, 2, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 2, NULL, 0);
    stdin_end(&s, 2);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 2);
    expect(&c, &cur, &ev, CODEC_PARAMS, 2);
    assert_int_equal(c.nparams, 0);
    assert_null(codec_param(&c, "REQUEST_METHOD"));
    expect(&c, &cur, &ev, CODEC_STDIN_END, 2);
    codec_free(&c);
    codec_buf_free(&s);
}

/* The stream the split tests cut up: two kept-alive requests, management
 * records between and inside them, odd padding, 4-byte lengths. */
static void mixed_stream(struct codec_buf *s)
{
    struct codec_buf nv = {0}, gv = {0};
    char big[200];

    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    enc_nv(&nv, "REQUEST_METHOD", "POST");
    enc_nv(&nv, "REQUEST_URI", "/notes");
    enc_nv(&nv, "HTTP_COOKIE", big);
    enc_nv(&gv, FCGI_MAX_CONNS, "");
    enc_nv(&gv, FCGI_MPXS_CONNS, "");

    record(s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    begin(s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    params(s, 1, &nv, 100);
    uint8_t unknown[3] = {1, 2, 3};
    raw_record(s, FCGI_VERSION_1, 0x42, 0, unknown, sizeof(unknown), 13);
    stdin_data(s, 1, "{\"text\":");
    raw_record(s, FCGI_VERSION_1, FCGI_STDIN, 1, "\"hi\"}", 5, 0);
    stdin_end(s, 1);
    simple_request(s, 2, FCGI_KEEP_CONN, "/hello", "");
    begin(s, 3, FCGI_RESPONDER, 0);
    params(s, 3, &nv, 64);
    stdin_data(s, 3, "abc");
    record(s, FCGI_ABORT_REQUEST, 3, NULL, 0);
    codec_buf_free(&nv);
    codec_buf_free(&gv);
}

static const char mixed_expected_prefix[] = "BEGIN 1 keep=1\nPARAMS 1 n=3\n";

static void test_codec_gives_same_events_one_byte_at_a_time(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct trace whole, bytes;

    mixed_stream(&s);
    run_whole(&whole, &test_limits, s.data, s.len);
    run_bytewise(&bytes, &test_limits, s.data, s.len);
    assert_false(whole.failed);
    assert_memory_equal(whole.text.data, mixed_expected_prefix, strlen(mixed_expected_prefix));
    assert_true(trace_has(&whole, "STDIN 1 13:{\"text\":\"hi\"}\nSTDIN_END 1\n"));
    assert_true(trace_has(&whole, "BEGIN 2 keep=1\nPARAMS 2 n=3\n"));
    assert_true(trace_has(&whole, "STDIN_END 2\nBEGIN 3 keep=0\n"));
    assert_true(trace_has(&whole, "STDIN 3 3:abc\nABORT 3 keep=0\nEOF clean\n"));
    assert_same_trace(&whole, &bytes);
    trace_free(&whole);
    trace_free(&bytes);
    codec_buf_free(&s);
}

static void test_codec_gives_same_events_at_every_split_point(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct trace whole, part;

    mixed_stream(&s);
    run_whole(&whole, &test_limits, s.data, s.len);
    for (size_t k = 0; k <= s.len; k++) {
        run_cuts(&part, &test_limits, s.data, s.len, &k, 1);
        assert_same_trace(&whole, &part);
        trace_free(&part);
    }
    trace_free(&whole);
    codec_buf_free(&s);
}

static void test_codec_gives_same_events_at_every_pair_of_split_points(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct trace whole, part;

    simple_request(&s, 1, FCGI_KEEP_CONN, "/a", "body bytes");
    simple_request(&s, 2, 0, "/b", "");
    run_whole(&whole, &test_limits, s.data, s.len);
    for (size_t i = 0; i <= s.len; i++)
        for (size_t j = i; j <= s.len; j++) {
            size_t cuts[2] = {i, j};
            run_cuts(&part, &test_limits, s.data, s.len, cuts, 2);
            assert_same_trace(&whole, &part);
            trace_free(&part);
        }
    trace_free(&whole);
    codec_buf_free(&s);
}

static void test_codec_serves_second_request_on_kept_connection(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct codec c;
    struct codec_event ev;

    simple_request(&s, 1, FCGI_KEEP_CONN, "/first", "one");
    simple_request(&s, 1, FCGI_KEEP_CONN, "/second", "two"); /* the id may be reused */
    simple_request(&s, 9, 0, "/third", NULL);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};

    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    assert_int_equal(ev.keep_conn, 1);
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/first");
    expect(&c, &cur, &ev, CODEC_STDIN, 1);
    assert_memory_equal(ev.data, "one", 3);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 1);
    codec_request_done(&c);

    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/second");
    assert_string_equal(codec_param(&c, "REQUEST_METHOD"), "POST");
    expect(&c, &cur, &ev, CODEC_STDIN, 1);
    assert_memory_equal(ev.data, "two", 3);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 1);
    codec_request_done(&c);

    expect(&c, &cur, &ev, CODEC_BEGIN, 9);
    assert_int_equal(ev.keep_conn, 0);
    expect(&c, &cur, &ev, CODEC_PARAMS, 9);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/third");
    assert_string_equal(codec_param(&c, "REQUEST_METHOD"), "GET");
    expect(&c, &cur, &ev, CODEC_STDIN_END, 9);
    codec_request_done(&c);
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);
    assert_int_equal(cur.len, 0);
    assert_null(codec_eof(&c));
    codec_free(&c);
    codec_buf_free(&s);
}

/* A big params stream grows the buffer past what request_done keeps; the
 * next request must still parse from a fresh one. */
static void test_codec_serves_request_after_large_params(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec_limits lim = test_limits;
    struct trace t;
    char *v = malloc(30000);

    assert_non_null(v);
    memset(v, 'x', 29999);
    v[29999] = '\0';
    lim.max_params_bytes = 65536;
    enc_nv(&nv, "HTTP_X_LARGE", v);
    begin(&s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    params(&s, 1, &nv, 65535);
    stdin_end(&s, 1);
    simple_request(&s, 2, 0, "/after", NULL);
    run_whole(&t, &lim, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "STDIN_END 1\nBEGIN 2 keep=0\nPARAMS 2 n=3\n"
                              "  REQUEST_METHOD=GET\n  REQUEST_URI=/after\n"));
    trace_free(&t);
    free(v);
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

/* The parsed params of the smallest possible pairs (empty name, empty
 * value: 2 wire bytes each) at the params ceiling cost at most 3x their
 * wire size; each pair used to cost 24 bytes of index plus copies. */
static void test_codec_parsed_params_stay_within_3x_wire_size(void **state)
{
    (void)state;
    struct codec_limits lim = test_limits;
    struct codec_buf s = {0}, nv = {0};
    struct codec c;
    struct codec_event ev;
    size_t used, pos = 0;

    lim.max_params_bytes = 1 << 20;
    for (size_t i = 0; i < lim.max_params_bytes / 2 - 2; i++)
        assert_int_equal(codec_put_nv(&nv, "", 0, "", 0), 0);
    enc_nv(&nv, "A", "");
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 65535);
    codec_init(&c, &lim);
    while (codec_next(&c, s.data + pos, s.len - pos, &used, &ev) != CODEC_PARAMS) {
        assert_int_not_equal(ev.type, CODEC_ERROR);
        pos += used;
    }
    assert_int_equal(codec_params_wire(&c), nv.len);
    assert_int_equal(codec_nparams(&c), lim.max_params_bytes / 2 - 1);
    assert_true(codec_params_held(&c) <= 3 * nv.len);
    assert_string_equal(codec_param(&c, "A"), "");
    assert_string_equal(codec_param(&c, ""), "");
    assert_null(codec_param(&c, "B"));
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

/* A NUL inside a name ends it (lookups compare C strings); a NUL inside a
 * value is kept, with the value's length. */
static void test_codec_param_with_nul_bytes(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec c;
    struct codec_event ev;
    size_t used, pos = 0;

    assert_int_equal(codec_put_nv(&nv, "AB\0CD", 5, "x\0y", 3), 0);
    assert_int_equal(codec_put_nv(&nv, "E", 1, "z", 1), 0);
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 65535);
    codec_init(&c, &test_limits);
    while (codec_next(&c, s.data + pos, s.len - pos, &used, &ev) != CODEC_PARAMS)
        pos += used;
    struct codec_param p = codec_param_at(&c, 0);
    assert_string_equal(p.name, "AB");
    assert_int_equal(p.vlen, 3);
    assert_memory_equal(p.value, "x\0y", 4);
    assert_string_equal(codec_param(&c, "E"), "z");
    assert_int_equal(codec_param_at(&c, 1).vlen, 1);
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_ignores_padding_content(void **state)
{
    (void)state;
    struct codec_buf padded = {0}, plain = {0}, nv = {0};
    struct trace a, b;
    uint8_t role[8] = {0, FCGI_RESPONDER, FCGI_KEEP_CONN, 0, 0, 0, 0, 0};

    enc_nv(&nv, "REQUEST_URI", "/pad");
    /* Padding on aligned records, on empty records, the maximum, none on
     * unaligned records: only the header's padding length counts. */
    raw_record(&padded, 1, FCGI_BEGIN_REQUEST, 5, role, 8, 255);
    raw_record(&padded, 1, FCGI_PARAMS, 5, nv.data, nv.len, 1);
    raw_record(&padded, 1, FCGI_PARAMS, 5, NULL, 0, 7);
    raw_record(&padded, 1, FCGI_STDIN, 5, "abcdefgh", 8, 8);
    raw_record(&padded, 1, FCGI_STDIN, 5, "ij", 2, 0);
    raw_record(&padded, 1, FCGI_STDIN, 5, NULL, 0, 200);

    raw_record(&plain, 1, FCGI_BEGIN_REQUEST, 5, role, 8, 0);
    raw_record(&plain, 1, FCGI_PARAMS, 5, nv.data, nv.len, 0);
    raw_record(&plain, 1, FCGI_PARAMS, 5, NULL, 0, 0);
    raw_record(&plain, 1, FCGI_STDIN, 5, "abcdefghij", 10, 0);
    raw_record(&plain, 1, FCGI_STDIN, 5, NULL, 0, 0);

    run_whole(&a, &test_limits, plain.data, plain.len);
    run_bytewise(&b, &test_limits, padded.data, padded.len);
    assert_false(a.failed);
    assert_true(trace_has(&a, "STDIN 5 10:abcdefghij\nSTDIN_END 5\nEOF clean\n"));
    assert_same_trace(&a, &b);
    trace_free(&a);
    trace_free(&b);
    codec_buf_free(&padded);
    codec_buf_free(&plain);
    codec_buf_free(&nv);
}

/* ---- management records ---- */

static void test_codec_answers_get_values_with_limits(void **state)
{
    (void)state;
    struct codec_buf s = {0}, gv = {0};
    struct codec c;
    struct codec_event ev;
    struct rec r[4];
    char v[32];

    enc_nv(&gv, FCGI_MAX_CONNS, "");
    enc_nv(&gv, FCGI_MAX_REQS, "");
    enc_nv(&gv, FCGI_MPXS_CONNS, "");
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);
    assert_int_equal(cur.len, 0);

    assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 1);
    assert_int_equal(r[0].type, FCGI_GET_VALUES_RESULT);
    assert_int_equal(r[0].id, 0);
    assert_int_equal((r[0].clen + r[0].plen) % 8, 0);
    assert_int_equal(nv_count(r[0].content, r[0].clen), 3);
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MAX_CONNS, v, sizeof(v)), 1);
    assert_string_equal(v, "17");
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MAX_REQS, v, sizeof(v)), 1);
    assert_string_equal(v, "23");
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MPXS_CONNS, v, sizeof(v)), 1);
    assert_string_equal(v, "0");
    assert_null(codec_eof(&c));
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&gv);
}

static void test_codec_answers_get_values_mid_request(void **state)
{
    (void)state;
    struct codec_buf s = {0}, gv = {0}, nv = {0};
    struct trace t;
    struct rec r[4];
    char v[32];

    enc_nv(&gv, FCGI_MAX_REQS, "");
    enc_nv(&nv, "REQUEST_URI", "/mid");
    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 1, nv.data, 3);
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    record(&s, FCGI_PARAMS, 1, nv.data + 3, nv.len - 3);
    record(&s, FCGI_PARAMS, 1, NULL, 0);
    stdin_end(&s, 1);
    run_bytewise(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "PARAMS 1 n=1\n  REQUEST_URI=/mid\nSTDIN_END 1\n"));
    assert_int_equal(decode_records(t.out.data, t.out.len, r, 4), 1);
    assert_int_equal(r[0].type, FCGI_GET_VALUES_RESULT);
    assert_int_equal(nv_count(r[0].content, r[0].clen), 1);
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MAX_REQS, v, sizeof(v)), 1);
    assert_string_equal(v, "23");
    trace_free(&t);
    codec_buf_free(&s);
    codec_buf_free(&gv);
    codec_buf_free(&nv);
}

/* libfcgi aborts on 4 or more known names (a 64-byte stack buffer). */
static void test_codec_answers_1000_get_values_names_each_once(void **state)
{
    (void)state;
    static const char *const names[] = {FCGI_MAX_CONNS,  "X_UNKNOWN",       FCGI_MAX_REQS,
                                        FCGI_MPXS_CONNS, "FCGI_MAX_CONNSX", "FCGI_MAX"};
    struct codec_buf s = {0}, gv = {0};
    struct codec c;
    struct codec_event ev;
    struct rec r[4];
    char v[32];

    for (int i = 0; i < 1000; i++)
        enc_nv(&gv, names[i % 6], i % 7 == 0 ? "ignored" : "");
    assert_true(gv.len <= 0xffff);
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);
    assert_int_equal(cur.len, 0);
    assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 1);
    assert_int_equal(r[0].type, FCGI_GET_VALUES_RESULT);
    assert_int_equal(nv_count(r[0].content, r[0].clen), 3);
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MAX_CONNS, v, sizeof(v)), 1);
    assert_string_equal(v, "17");
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MAX_REQS, v, sizeof(v)), 1);
    assert_int_equal(nv_lookup(r[0].content, r[0].clen, FCGI_MPXS_CONNS, v, sizeof(v)), 1);
    assert_string_equal(v, "0");
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&gv);
}

static void test_codec_answers_get_values_naming_nothing_known(void **state)
{
    (void)state;
    struct codec_buf s = {0}, gv = {0};
    struct trace t;
    struct rec r[4];

    enc_nv(&gv, "SOMETHING_ELSE", "");
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    record(&s, FCGI_GET_VALUES, 0, NULL, 0);
    run_whole(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_int_equal(decode_records(t.out.data, t.out.len, r, 4), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].type, FCGI_GET_VALUES_RESULT);
        assert_int_equal(r[i].clen, 0);
    }
    trace_free(&t);
    codec_buf_free(&s);
    codec_buf_free(&gv);
}

static void test_codec_answers_unknown_management_type(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct trace t;
    struct rec r[4];
    static const uint8_t junk[20] = {9, 9, 9};

    raw_record(&s, FCGI_VERSION_1, 0x42, 0, junk, sizeof(junk), 4);
    record(&s, FCGI_GET_VALUES_RESULT, 0, NULL, 0); /* an app-side type, as management */
    simple_request(&s, 1, 0, "/still-works", NULL);
    run_bytewise(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "BEGIN 1 keep=0\n"));
    assert_true(trace_has(&t, "STDIN_END 1\nEOF clean\n"));
    assert_int_equal(decode_records(t.out.data, t.out.len, r, 4), 2);
    static const uint8_t want0[8] = {0x42, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t want1[8] = {FCGI_GET_VALUES_RESULT, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].type, FCGI_UNKNOWN_TYPE);
        assert_int_equal(r[i].id, 0);
        assert_int_equal(r[i].clen, 8);
        assert_memory_equal(r[i].content, i == 0 ? want0 : want1, 8);
    }
    trace_free(&t);
    codec_buf_free(&s);
}

/* ---- refusals and aborts ---- */

static void test_codec_refuses_second_begin_with_cant_mpx_conn(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0}, nv2 = {0};
    struct codec c;
    struct codec_event ev;
    struct rec r[4];

    enc_nv(&nv, "REQUEST_URI", "/first");
    enc_nv(&nv2, "REQUEST_URI", "/second");
    begin(&s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    begin(&s, 2, FCGI_RESPONDER, FCGI_KEEP_CONN); /* while 1 is in PARAMS */
    params(&s, 2, &nv2, 5);
    record(&s, FCGI_PARAMS, 1, NULL, 0);
    stdin_data(&s, 2, "not for us");
    stdin_data(&s, 1, "body1");
    record(&s, FCGI_ABORT_REQUEST, 2, NULL, 0);
    stdin_end(&s, 2);
    stdin_end(&s, 1);

    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/first");
    assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 2);
    /* The refusal: end of stream, then END_REQUEST with CANT_MPX_CONN. */
    assert_int_equal(r[0].type, FCGI_STDOUT);
    assert_int_equal(r[0].id, 2);
    assert_int_equal(r[0].clen, 0);
    assert_int_equal(r[1].type, FCGI_END_REQUEST);
    assert_int_equal(r[1].id, 2);
    assert_int_equal(r[1].clen, 8);
    assert_int_equal(r[1].content[4], FCGI_CANT_MPX_CONN);
    c.out.len = 0;
    expect(&c, &cur, &ev, CODEC_STDIN, 1);
    assert_int_equal(ev.len, 5);
    assert_memory_equal(ev.data, "body1", 5);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 1);
    assert_int_equal(cur.len, 0);
    assert_int_equal(c.out.len, 0);
    codec_request_done(&c);
    assert_null(codec_eof(&c));
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);
    codec_buf_free(&nv2);
}

static void test_codec_refuses_begin_while_response_runs(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct rec r[4];
    struct codec c;
    struct codec_event ev;
    struct codec_buf s2 = {0};

    /* Without request_done after STDIN_END, the request still runs. */
    simple_request(&s, 1, FCGI_KEEP_CONN, "/a", NULL);
    begin(&s2, 4, FCGI_RESPONDER, 0);
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 1);
    cur = (struct cursor){s2.data, s2.len};
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);
    assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 2);
    assert_int_equal(r[1].type, FCGI_END_REQUEST);
    assert_int_equal(r[1].id, 4);
    assert_int_equal(r[1].content[4], FCGI_CANT_MPX_CONN);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/a");
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&s2);
}

static void test_codec_rejects_unknown_role(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec c;
    struct codec_event ev;
    struct rec r[4];

    enc_nv(&nv, "REQUEST_URI", "/auth");
    begin(&s, 3, FCGI_AUTHORIZER, FCGI_KEEP_CONN);
    params(&s, 3, &nv, 100); /* dropped */
    stdin_end(&s, 3);
    simple_request(&s, 4, 0, "/next", NULL);

    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_REJECTED, 3);
    assert_int_equal(ev.keep_conn, 1);
    assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 2);
    assert_int_equal(r[1].type, FCGI_END_REQUEST);
    assert_int_equal(r[1].id, 3);
    assert_int_equal(r[1].clen, 8);
    assert_int_equal(r[1].content[4], FCGI_UNKNOWN_ROLE);
    c.out.len = 0;
    assert_null(codec_eof(&c));
    /* With keep_conn the connection goes on. */
    expect(&c, &cur, &ev, CODEC_BEGIN, 4);
    expect(&c, &cur, &ev, CODEC_PARAMS, 4);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/next");
    expect(&c, &cur, &ev, CODEC_STDIN_END, 4);
    assert_int_equal(c.out.len, 0);
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);

    /* FILTER, and a role nobody defined. */
    static const uint16_t roles[] = {FCGI_FILTER, 0, 0x1234};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        struct codec_buf b = {0};
        begin(&b, 8, roles[i], 0);
        codec_init(&c, &test_limits);
        cur = (struct cursor){b.data, b.len};
        expect(&c, &cur, &ev, CODEC_REJECTED, 8);
        assert_int_equal(ev.keep_conn, 0);
        assert_int_equal(decode_records(c.out.data, c.out.len, r, 4), 2);
        assert_int_equal(r[1].content[4], FCGI_UNKNOWN_ROLE);
        codec_free(&c);
        codec_buf_free(&b);
    }
}

/* A refused id is free again once a new BEGIN for it is accepted: its
 * records must then reach the new request, not be dropped. */
static void test_codec_accepts_refused_id_for_new_request(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct trace t;

    begin(&s, 3, FCGI_AUTHORIZER, FCGI_KEEP_CONN);
    stdin_end(&s, 3); /* dropped with the refused request */
    simple_request(&s, 3, FCGI_KEEP_CONN, "/again", "data");
    run_bytewise(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "REJECTED 3 keep=1\nBEGIN 3 keep=1\nPARAMS 3 n=3\n"));
    assert_true(trace_has(&t, "REQUEST_URI=/again\n"));
    assert_true(trace_has(&t, "STDIN 3 4:data\nSTDIN_END 3\nEOF clean\n"));
    trace_free(&t);

    /* The same after CANT_MPX_CONN: 2 refused while 1 runs, then reused. */
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    begin(&s, 2, FCGI_RESPONDER, FCGI_KEEP_CONN);
    record(&s, FCGI_PARAMS, 1, NULL, 0);
    stdin_end(&s, 1);
    simple_request(&s, 2, 0, "/two", "2");
    run_whole(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "STDIN_END 1\nBEGIN 2 keep=0\nPARAMS 2 n=3\n"));
    assert_true(trace_has(&t, "STDIN 2 1:2\nSTDIN_END 2\nEOF clean\n"));
    trace_free(&t);
    codec_buf_free(&s);
}

static void test_codec_reports_abort_for_current_request(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec c;
    struct codec_event ev;

    enc_nv(&nv, "REQUEST_URI", "/slow");
    /* Aborted in PARAMS, in STDIN, and while the response runs. */
    begin(&s, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    record(&s, FCGI_ABORT_REQUEST, 1, NULL, 0);
    begin(&s, 2, FCGI_RESPONDER, FCGI_KEEP_CONN);
    params(&s, 2, &nv, 100);
    stdin_data(&s, 2, "partial");
    record(&s, FCGI_ABORT_REQUEST, 2, NULL, 0);
    begin(&s, 3, FCGI_RESPONDER, 0);
    params(&s, 3, &nv, 100);
    stdin_end(&s, 3);
    record(&s, FCGI_ABORT_REQUEST, 3, NULL, 0);

    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    assert_string_equal(codec_eof(&c), "connection closed before the request was complete");
    expect(&c, &cur, &ev, CODEC_ABORT, 1);
    assert_int_equal(ev.keep_conn, 1);
    codec_request_done(&c);
    assert_null(codec_eof(&c));
    expect(&c, &cur, &ev, CODEC_BEGIN, 2);
    expect(&c, &cur, &ev, CODEC_PARAMS, 2);
    assert_string_equal(codec_param(&c, "REQUEST_URI"), "/slow");
    expect(&c, &cur, &ev, CODEC_STDIN, 2);
    expect(&c, &cur, &ev, CODEC_ABORT, 2);
    codec_request_done(&c);
    expect(&c, &cur, &ev, CODEC_BEGIN, 3);
    expect(&c, &cur, &ev, CODEC_PARAMS, 3);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 3);
    expect(&c, &cur, &ev, CODEC_ABORT, 3);
    assert_int_equal(ev.keep_conn, 0);
    codec_request_done(&c);
    expect(&c, &cur, &ev, CODEC_NEED_MORE, 0);
    assert_int_equal(c.out.len, 0);
    codec_free(&c);
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

/* ---- malformed input: CODEC_ERROR with a reason, failed for good ---- */

static void test_codec_rejects_bad_version(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    uint8_t role[8] = {0, FCGI_RESPONDER, 0, 0, 0, 0, 0, 0};

    raw_record(&s, 2, FCGI_BEGIN_REQUEST, 1, role, 8, 0);
    expect_error(&s, &test_limits, "bad version 2");
    s.len = 0;
    /* Also mid-connection, after a good request. */
    simple_request(&s, 1, FCGI_KEEP_CONN, "/", NULL);
    raw_record(&s, 0, FCGI_BEGIN_REQUEST, 1, role, 8, 0);
    expect_error(&s, &test_limits, "bad version 0");
    codec_buf_free(&s);
}

static void test_codec_rejects_begin_body_not_8_bytes(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    uint8_t role[16] = {0, FCGI_RESPONDER};

    record(&s, FCGI_BEGIN_REQUEST, 1, role, 9);
    expect_error(&s, &test_limits, "BEGIN_REQUEST body is 9 bytes, not 8");
    s.len = 0;
    record(&s, FCGI_BEGIN_REQUEST, 1, role, 0);
    expect_error(&s, &test_limits, "BEGIN_REQUEST body is 0 bytes");
    codec_buf_free(&s);
}

static void test_codec_rejects_name_length_0x7fffffff(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0x00, 'A', 'B'};

    enc_nv(&nv, "REQUEST_URI", "/");
    put(&nv, huge, sizeof(huge));
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    stdin_end(&s, 1);
    expect_error(&s, &test_limits, "name-value length runs past the end of PARAMS");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_value_length_past_params_end(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    /* name 4 bytes, value claims 100, 10 present */
    static const uint8_t pair[] = {4, 100, 'N', 'A', 'M', 'E', '0', '1', '2', '3', '4', '5'};
    /* and a value length cut inside its 4 bytes */
    static const uint8_t cut[] = {1, 0x80, 0x00};

    put(&nv, pair, sizeof(pair));
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 5);
    expect_error(&s, &test_limits, "name-value length runs past the end of PARAMS");

    s.len = nv.len = 0;
    enc_nv(&nv, "A", "b");
    put(&nv, cut, sizeof(cut));
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    expect_error(&s, &test_limits, "name-value length runs past the end of PARAMS");

    /* A name length with no value length after it. */
    s.len = nv.len = 0;
    enc_nv(&nv, "A", "b");
    put_byte(&nv, 3);
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    expect_error(&s, &test_limits, "name-value length runs past the end of PARAMS");

    /* A 4-byte value length just one byte past the end. */
    s.len = nv.len = 0;
    enc_len(&nv, 1);
    enc_len(&nv, 200);
    put_byte(&nv, 'n');
    for (int i = 0; i < 199; i++)
        put_byte(&nv, 'v');
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    expect_error(&s, &test_limits, "name-value length runs past the end of PARAMS");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_oversized_params(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    struct codec_limits lim = test_limits;
    struct trace t;
    char v[300];

    lim.max_params_bytes = 256;
    memset(v, 'p', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    enc_nv(&nv, "HTTP_X_A", v);
    enc_nv(&nv, "HTTP_X_B", v);
    assert_true(nv.len > 256);

    /* In one record. */
    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    expect_error(&s, &lim, "PARAMS over the limit of 256 bytes");

    /* Spread over several records, each under the limit. */
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 60);
    expect_error(&s, &lim, "limits.max_params_bytes");

    /* Exactly at the limit is fine. */
    s.len = nv.len = 0;
    memset(v, 'p', 256 - 3 - 10);
    v[256 - 3 - 10] = '\0';
    enc_nv(&nv, "HTTP_X_C", v); /* 1 + 4 + 8 + 243 = 256 */
    assert_int_equal(nv.len, 256);
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 64);
    stdin_end(&s, 1);
    run_bytewise(&t, &lim, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "PARAMS 1 n=1\n"));
    trace_free(&t);

    /* The limit is per request: two kept-alive requests of 256 each. */
    begin(&s, 2, FCGI_RESPONDER, 0);
    params(&s, 2, &nv, 200);
    stdin_end(&s, 2);
    run_whole(&t, &lim, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "STDIN_END 2\nEOF clean\n"));
    trace_free(&t);

    /* One byte over the limit in a single record: refused at its header. */
    s.len = 0;
    put_byte(&nv, 0);
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 257);
    expect_error(&s, &lim, "limits.max_params_bytes");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_params_for_unknown_request(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};

    enc_nv(&nv, "REQUEST_URI", "/");
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len); /* no BEGIN at all */
    expect_error(&s, &test_limits, "PARAMS for unknown request id 1");
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 2, nv.data, nv.len); /* another id */
    expect_error(&s, &test_limits, "PARAMS for unknown request id 2");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_stdin_for_unknown_request(void **state)
{
    (void)state;
    struct codec_buf s = {0};

    stdin_data(&s, 5, "x");
    expect_error(&s, &test_limits, "STDIN for unknown request id 5");
    s.len = 0;
    simple_request(&s, 1, FCGI_KEEP_CONN, "/", NULL);
    stdin_end(&s, 1); /* after request_done: the request is gone */
    expect_error(&s, &test_limits, "STDIN for unknown request id 1");
    codec_buf_free(&s);
}

static void test_codec_rejects_abort_for_unknown_request(void **state)
{
    (void)state;
    struct codec_buf s = {0};

    record(&s, FCGI_ABORT_REQUEST, 3, NULL, 0);
    expect_error(&s, &test_limits, "unknown request id 3");
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_ABORT_REQUEST, 2, NULL, 0);
    expect_error(&s, &test_limits, "record type 2 for unknown request id 2");
    codec_buf_free(&s);
}

static void test_codec_rejects_stdin_before_params_end(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};

    enc_nv(&nv, "REQUEST_URI", "/");
    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    stdin_data(&s, 1, "early");
    expect_error(&s, &test_limits, "STDIN before the end of PARAMS");
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, 0);
    stdin_end(&s, 1); /* even an empty one */
    expect_error(&s, &test_limits, "STDIN before the end of PARAMS");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_stdin_after_its_end(void **state)
{
    (void)state;
    struct codec_buf s = {0};

    begin(&s, 1, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 1, NULL, 0);
    stdin_data(&s, 1, "body");
    stdin_end(&s, 1);
    stdin_data(&s, 1, "more");
    /* The trace driver calls request_done at STDIN_END, so step by hand. */
    struct codec c;
    struct codec_event ev;
    struct cursor cur = {s.data, s.len};
    codec_init(&c, &test_limits);
    expect(&c, &cur, &ev, CODEC_BEGIN, 1);
    expect(&c, &cur, &ev, CODEC_PARAMS, 1);
    expect(&c, &cur, &ev, CODEC_STDIN, 1);
    expect(&c, &cur, &ev, CODEC_STDIN_END, 1);
    expect(&c, &cur, &ev, CODEC_ERROR, 0);
    assert_non_null(strstr(ev.reason, "STDIN after the end of the body"));
    assert_stays_failed(&c, "STDIN after the end of the body");
    codec_free(&c);
    codec_buf_free(&s);
}

static void test_codec_rejects_params_after_their_end(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};

    enc_nv(&nv, "REQUEST_URI", "/");
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    expect_error(&s, &test_limits, "PARAMS after the end of the params stream");
    s.len = 0;
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &nv, 100);
    record(&s, FCGI_PARAMS, 1, NULL, 0); /* a second empty one */
    expect_error(&s, &test_limits, "PARAMS after the end of the params stream");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_begin_for_active_id(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};

    enc_nv(&nv, "REQUEST_URI", "/");
    begin(&s, 6, FCGI_RESPONDER, 0);
    begin(&s, 6, FCGI_RESPONDER, 0);
    expect_error(&s, &test_limits, "request id 6, which is already active");
    s.len = 0;
    begin(&s, 6, FCGI_RESPONDER, 0);
    params(&s, 6, &nv, 100);
    stdin_data(&s, 6, "x");
    begin(&s, 6, FCGI_RESPONDER, 0);
    expect_error(&s, &test_limits, "already active");
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

static void test_codec_rejects_get_values_with_truncated_length(void **state)
{
    (void)state;
    struct codec_buf s = {0}, gv = {0};

    enc_nv(&gv, FCGI_MAX_CONNS, "");
    put_byte(&gv, 0x80); /* a 4-byte length with 1 byte present */
    put_byte(&gv, 0x00);
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    expect_error(&s, &test_limits, "GET_VALUES name-value length runs past the record");
    s.len = gv.len = 0;
    put_byte(&gv, 20); /* name of 20 bytes, 3 present */
    put_byte(&gv, 0);
    put(&gv, "FCG", 3);
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    expect_error(&s, &test_limits, "GET_VALUES name-value length runs past the record");
    codec_buf_free(&s);
    codec_buf_free(&gv);
}

static void test_codec_rejects_app_to_server_records(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    static const uint8_t end_body[8] = {0};
    static const uint8_t types[] = {
        FCGI_STDOUT, FCGI_STDERR, FCGI_END_REQUEST, FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE,
        0,           0x42};

    for (size_t i = 0; i < sizeof(types); i++) {
        char want[64];
        s.len = 0;
        record(&s, types[i], 1, end_body, types[i] == FCGI_STDOUT ? 4 : 8);
        snprintf(want, sizeof(want), "unexpected record type %u for request id 1", types[i]);
        expect_error(&s, &test_limits, want);
        /* Also while that very request is active. */
        s.len = 0;
        begin(&s, 1, FCGI_RESPONDER, 0);
        record(&s, types[i], 1, end_body, 8);
        expect_error(&s, &test_limits, want);
    }
    codec_buf_free(&s);
}

/* ---- end of input ---- */

static const char *eof_after(const struct codec_buf *s, size_t len)
{
    struct trace t;
    struct codec c;
    static char reason[128];
    const char *e;

    memset(&t, 0, sizeof(t));
    codec_init(&c, &test_limits);
    feed(&t, &c, s->data, len);
    assert_false(t.failed);
    e = codec_eof(&c);
    if (e) {
        snprintf(reason, sizeof(reason), "%s", e);
        e = reason;
    }
    codec_free(&c);
    trace_free(&t);
    return e;
}

static void test_codec_eof_is_clean_between_requests(void **state)
{
    (void)state;
    struct codec_buf s = {0}, gv = {0};

    assert_null(eof_after(&s, 0));
    simple_request(&s, 1, FCGI_KEEP_CONN, "/", "abc");
    assert_null(eof_after(&s, s.len));
    enc_nv(&gv, FCGI_MAX_CONNS, "");
    record(&s, FCGI_GET_VALUES, 0, gv.data, gv.len);
    assert_null(eof_after(&s, s.len));
    codec_buf_free(&s);
    codec_buf_free(&gv);
}

static void test_codec_eof_is_clean_after_stdin_end(void **state)
{
    (void)state;
    struct codec_buf s = {0};
    struct codec c;
    struct codec_event ev;

    simple_request(&s, 1, 0, "/", "abc");
    codec_init(&c, &test_limits);
    struct cursor cur = {s.data, s.len};
    while (step(&c, &cur, &ev) != CODEC_STDIN_END)
        assert_int_not_equal(ev.type, CODEC_NEED_MORE);
    assert_null(codec_eof(&c)); /* no request_done yet: the response runs */
    codec_free(&c);
    codec_buf_free(&s);
}

static void test_codec_eof_reports_truncated_input(void **state)
{
    (void)state;
    struct codec_buf s = {0}, nv = {0};
    static const char mid_record[] = "connection closed in the middle of a record";
    static const char mid_request[] = "connection closed before the request was complete";

    enc_nv(&nv, "REQUEST_URI", "/");
    begin(&s, 1, FCGI_RESPONDER, 0);
    size_t after_begin = s.len;
    record(&s, FCGI_PARAMS, 1, nv.data, nv.len);
    size_t after_params_rec = s.len;
    record(&s, FCGI_PARAMS, 1, NULL, 0);
    size_t after_params = s.len;
    stdin_data(&s, 1, "abc"); /* 3 content + 5 padding */
    size_t after_stdin_rec = s.len;
    stdin_end(&s, 1);

    assert_string_equal(eof_after(&s, 3), mid_record);                   /* mid-header */
    assert_string_equal(eof_after(&s, 8 + 4), mid_record);               /* mid-content */
    assert_string_equal(eof_after(&s, after_begin + 1), mid_record);     /* next header */
    assert_string_equal(eof_after(&s, after_begin + 9), mid_record);     /* PARAMS content */
    assert_string_equal(eof_after(&s, after_begin), mid_request);        /* mid-PARAMS */
    assert_string_equal(eof_after(&s, after_params_rec), mid_request);   /* mid-PARAMS */
    assert_string_equal(eof_after(&s, after_params), mid_request);       /* before STDIN */
    assert_string_equal(eof_after(&s, after_params + 9), mid_record);    /* STDIN content */
    assert_string_equal(eof_after(&s, after_stdin_rec - 2), mid_record); /* STDIN padding */
    assert_string_equal(eof_after(&s, after_stdin_rec), mid_request);    /* mid-STDIN */
    assert_null(eof_after(&s, s.len));
    codec_buf_free(&s);
    codec_buf_free(&nv);
}

/* ---- encoders ---- */

static void test_codec_put_stdout_splits_large_output(void **state)
{
    (void)state;
    struct codec_buf b = {0}, got = {0};
    size_t n = 200000;
    uint8_t *data = malloc(n);
    struct rec r[8];

    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7 + (i >> 8));
    assert_int_equal(codec_put_stdout(&b, 0x1234, data, n), 0);
    size_t nr = decode_records(b.data, b.len, r, 8);
    assert_int_equal(nr, 4); /* ceil(200000 / 65535): no more records than needed */
    for (size_t i = 0; i < nr; i++) {
        assert_int_equal(r[i].type, FCGI_STDOUT);
        assert_int_equal(r[i].id, 0x1234);
        assert_true(r[i].clen > 0 && r[i].clen <= 65535);
        assert_true(r[i].plen < 8);
        assert_int_equal((r[i].clen + r[i].plen) % 8, 0);
        for (size_t j = 0; j < r[i].plen; j++)
            assert_int_equal(r[i].content[r[i].clen + j], 0);
        put(&got, r[i].content, r[i].clen);
    }
    assert_int_equal(got.len, n);
    assert_memory_equal(got.data, data, n);

    /* An empty write adds nothing: an empty record would end the stream. */
    size_t before = b.len;
    assert_int_equal(codec_put_stdout(&b, 1, data, 0), 0);
    assert_int_equal(b.len, before);

    /* Odd sizes pad to 8. */
    b.len = 0;
    assert_int_equal(codec_put_stdout(&b, 1, "12345", 5), 0);
    assert_int_equal(decode_records(b.data, b.len, r, 8), 1);
    assert_int_equal(r[0].clen, 5);
    assert_int_equal(r[0].plen, 3);
    assert_int_equal(b.len, 16);

    free(data);
    codec_buf_free(&b);
    codec_buf_free(&got);
}

/* Our stdout records, fed through the codec's own decoder as if they were
 * STDIN (same record format): the round trip gives the bytes back. */
static void test_codec_put_stdout_round_trips_through_decoder(void **state)
{
    (void)state;
    struct codec_buf s = {0}, out = {0};
    size_t n = 200000;
    uint8_t *data = malloc(n);
    struct rec r[8];
    struct trace t;

    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)('a' + i % 26);
    assert_int_equal(codec_put_stdout(&out, 3, data, n), 0);
    assert_int_equal(codec_put_stderr(&out, 3, "warn", 4), 0);
    assert_int_equal(codec_put_end(&out, 3, 0, FCGI_REQUEST_COMPLETE), 0);

    /* Rewrite the type byte only: STDOUT -> STDIN, STDERR/END dropped. */
    begin(&s, 3, FCGI_RESPONDER, 0);
    record(&s, FCGI_PARAMS, 3, NULL, 0);
    size_t nr = decode_records(out.data, out.len, r, 8);
    for (size_t i = 0; i < nr; i++) {
        if (r[i].type != FCGI_STDOUT)
            continue;
        size_t at = s.len;
        put(&s, r[i].content - 8, 8 + r[i].clen + r[i].plen);
        s.data[at + 1] = FCGI_STDIN;
    }
    run_whole(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    char head[64];
    int hl = snprintf(head, sizeof(head), "BEGIN 3 keep=0\nPARAMS 3 n=0\nSTDIN 3 %zu:", n);
    assert_memory_equal(t.text.data, head, (size_t)hl);
    assert_memory_equal(t.text.data + hl, data, n);
    static const char tail[] = "\nSTDIN_END 3\nEOF clean\n";
    assert_int_equal(t.text.len, (size_t)hl + n + strlen(tail));
    assert_memory_equal(t.text.data + hl + n, tail, strlen(tail));
    trace_free(&t);
    free(data);
    codec_buf_free(&s);
    codec_buf_free(&out);
}

static void test_codec_put_stderr_writes_stderr_records(void **state)
{
    (void)state;
    struct codec_buf b = {0};
    struct rec r[2];

    assert_int_equal(codec_put_stderr(&b, 2, "oops\n", 5), 0);
    assert_int_equal(decode_records(b.data, b.len, r, 2), 1);
    assert_int_equal(r[0].type, FCGI_STDERR);
    assert_int_equal(r[0].id, 2);
    assert_int_equal(r[0].clen, 5);
    assert_memory_equal(r[0].content, "oops\n", 5);
    codec_buf_free(&b);
}

static void test_codec_put_end_gives_empty_stdout_and_end_request(void **state)
{
    (void)state;
    struct codec_buf b = {0};
    struct rec r[4];

    assert_int_equal(codec_put_end(&b, 0xbeef, 0x01020304u, FCGI_OVERLOADED), 0);
    assert_int_equal(decode_records(b.data, b.len, r, 4), 2);
    assert_int_equal(r[0].type, FCGI_STDOUT);
    assert_int_equal(r[0].id, 0xbeef);
    assert_int_equal(r[0].clen, 0);
    assert_int_equal(r[0].plen, 0);
    assert_int_equal(r[1].type, FCGI_END_REQUEST);
    assert_int_equal(r[1].id, 0xbeef);
    assert_int_equal(r[1].clen, 8);
    assert_int_equal(r[1].plen, 0);
    static const uint8_t want[8] = {1, 2, 3, 4, FCGI_OVERLOADED, 0, 0, 0};
    assert_memory_equal(r[1].content, want, 8);
    assert_int_equal(b.len, 24);

    b.len = 0;
    assert_int_equal(codec_put_end(&b, 1, 0, FCGI_REQUEST_COMPLETE), 0);
    assert_int_equal(decode_records(b.data, b.len, r, 4), 2);
    static const uint8_t zero[8] = {0};
    assert_memory_equal(r[1].content, zero, 8);
    codec_buf_free(&b);
}

static void test_codec_put_nv_uses_1_and_4_byte_lengths(void **state)
{
    (void)state;
    struct codec_buf b = {0}, s = {0};
    char v300[300], n128[128];
    struct trace t;

    assert_int_equal(codec_put_nv(&b, "ab", 2, "xyz", 3), 0);
    static const uint8_t want1[] = {2, 3, 'a', 'b', 'x', 'y', 'z'};
    assert_int_equal(b.len, sizeof(want1));
    assert_memory_equal(b.data, want1, sizeof(want1));

    b.len = 0;
    memset(v300, 'v', sizeof(v300));
    assert_int_equal(codec_put_nv(&b, "k", 1, v300, 127), 0); /* 127: still 1 byte */
    assert_int_equal(b.len, 2 + 1 + 127);
    assert_int_equal(b.data[1], 127);

    b.len = 0;
    memset(n128, 'N', sizeof(n128));
    assert_int_equal(codec_put_nv(&b, n128, 128, v300, 300), 0);
    static const uint8_t want4[] = {0x80, 0, 0, 128, 0x80, 0, 0x01, 0x2c};
    assert_int_equal(b.len, 8 + 128 + 300);
    assert_memory_equal(b.data, want4, 8);
    assert_memory_equal(b.data + 8, n128, 128);
    assert_memory_equal(b.data + 8 + 128, v300, 300);

    /* An empty value. */
    assert_int_equal(codec_put_nv(&b, "E", 1, "", 0), 0);

    /* What the encoder writes, the decoder reads. */
    begin(&s, 1, FCGI_RESPONDER, 0);
    params(&s, 1, &b, 65535);
    stdin_end(&s, 1);
    run_whole(&t, &test_limits, s.data, s.len);
    assert_false(t.failed);
    assert_true(trace_has(&t, "PARAMS 1 n=2\n  NNNN"));
    assert_true(trace_has(&t, "\n  E=\nSTDIN_END 1\n"));
    trace_free(&t);

    /* Lengths that do not fit 31 bits are refused, the buffer unchanged. */
    size_t before = b.len;
    assert_int_equal(codec_put_nv(&b, "x", 0x80000000u, "", 0), -1);
    assert_int_equal(codec_put_nv(&b, "x", 1, "", 0x80000000u), -1);
    assert_int_equal(b.len, before);
    codec_buf_free(&b);
    codec_buf_free(&s);
}

static void test_codec_put_record_refuses_oversized_content(void **state)
{
    (void)state;
    struct codec_buf b = {0};
    uint8_t *big = calloc(1, 65536);

    assert_non_null(big);
    assert_int_equal(codec_put_record(&b, FCGI_STDOUT, 1, "x", 1), 0);
    assert_int_equal(codec_put_record(&b, FCGI_STDOUT, 1, big, 65536), -1);
    assert_int_equal(b.len, 16);
    assert_int_equal(codec_put_record(&b, FCGI_STDOUT, 1, big, 65535), 0);
    assert_int_equal(b.len, 16 + 8 + 65535 + 1);
    free(big);
    codec_buf_free(&b);
}

static void test_codec_buf_consume_drops_prefix(void **state)
{
    (void)state;
    struct codec_buf b = {0};

    put(&b, "abcdef", 6);
    codec_buf_consume(&b, 2);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "cdef", 4);
    codec_buf_consume(&b, 10);
    assert_int_equal(b.len, 0);
    codec_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_decodes_full_responder_request),
        cmocka_unit_test(test_codec_reports_keep_conn_clear),
        cmocka_unit_test(test_codec_accepts_empty_params_stream),
        cmocka_unit_test(test_codec_gives_same_events_one_byte_at_a_time),
        cmocka_unit_test(test_codec_gives_same_events_at_every_split_point),
        cmocka_unit_test(test_codec_gives_same_events_at_every_pair_of_split_points),
        cmocka_unit_test(test_codec_serves_second_request_on_kept_connection),
        cmocka_unit_test(test_codec_serves_request_after_large_params),
        cmocka_unit_test(test_codec_ignores_padding_content),
        cmocka_unit_test(test_codec_parsed_params_stay_within_3x_wire_size),
        cmocka_unit_test(test_codec_param_with_nul_bytes),
        cmocka_unit_test(test_codec_answers_get_values_with_limits),
        cmocka_unit_test(test_codec_answers_get_values_mid_request),
        cmocka_unit_test(test_codec_answers_1000_get_values_names_each_once),
        cmocka_unit_test(test_codec_answers_get_values_naming_nothing_known),
        cmocka_unit_test(test_codec_answers_unknown_management_type),
        cmocka_unit_test(test_codec_refuses_second_begin_with_cant_mpx_conn),
        cmocka_unit_test(test_codec_refuses_begin_while_response_runs),
        cmocka_unit_test(test_codec_rejects_unknown_role),
        cmocka_unit_test(test_codec_accepts_refused_id_for_new_request),
        cmocka_unit_test(test_codec_reports_abort_for_current_request),
        cmocka_unit_test(test_codec_rejects_bad_version),
        cmocka_unit_test(test_codec_rejects_begin_body_not_8_bytes),
        cmocka_unit_test(test_codec_rejects_name_length_0x7fffffff),
        cmocka_unit_test(test_codec_rejects_value_length_past_params_end),
        cmocka_unit_test(test_codec_rejects_oversized_params),
        cmocka_unit_test(test_codec_rejects_params_for_unknown_request),
        cmocka_unit_test(test_codec_rejects_stdin_for_unknown_request),
        cmocka_unit_test(test_codec_rejects_abort_for_unknown_request),
        cmocka_unit_test(test_codec_rejects_stdin_before_params_end),
        cmocka_unit_test(test_codec_rejects_stdin_after_its_end),
        cmocka_unit_test(test_codec_rejects_params_after_their_end),
        cmocka_unit_test(test_codec_rejects_begin_for_active_id),
        cmocka_unit_test(test_codec_rejects_get_values_with_truncated_length),
        cmocka_unit_test(test_codec_rejects_app_to_server_records),
        cmocka_unit_test(test_codec_eof_is_clean_between_requests),
        cmocka_unit_test(test_codec_eof_is_clean_after_stdin_end),
        cmocka_unit_test(test_codec_eof_reports_truncated_input),
        cmocka_unit_test(test_codec_put_stdout_splits_large_output),
        cmocka_unit_test(test_codec_put_stdout_round_trips_through_decoder),
        cmocka_unit_test(test_codec_put_stderr_writes_stderr_records),
        cmocka_unit_test(test_codec_put_end_gives_empty_stdout_and_end_request),
        cmocka_unit_test(test_codec_put_nv_uses_1_and_4_byte_lengths),
        cmocka_unit_test(test_codec_put_record_refuses_oversized_content),
        cmocka_unit_test(test_codec_buf_consume_drops_prefix),
    };
    return cmocka_run_group_tests_name("fcgi_codec", tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_codec.c - libFuzzer target for the FastCGI codec.
 *
 * Input: 4 bytes choosing how the stream is cut into chunks, then the
 * stream. The stream is fed once whole, once in chunks of the chosen
 * sizes, and (up to 512 bytes) once a byte at a time, driving the codec
 * the way an engine does: request_done after STDIN_END or ABORT, codec.out
 * taken after each event, a response encoded for each finished request.
 * The runs must give the same trace (events, ids, params, the body bytes
 * merged, what the codec queued, the EOF verdict); every event must meet
 * the codec's contract. ASan and UBSan check the memory accesses.
 *
 * The byte-at-a-time run is limited to short inputs because it dominates
 * the cost; the keyed chunks include one-byte cuts anyway.
 */
#include <fastcgi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_codec.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const struct codec_limits limits = {
    .max_params_bytes = 4096,
    .max_conns = 3,
    .max_reqs = 5,
};

struct trace {
    struct codec_buf text;
    struct codec_buf body; /* STDIN bytes not yet flushed to text */
    struct codec_buf out;  /* everything the codec queued in codec.out */
    unsigned body_id;
    int failed;
    /* request state as seen through the events, to check their order */
    int active;
    unsigned id;
    int have_params, stdin_ended;
};

static void app(struct codec_buf *b, const void *p, size_t n)
{
    CHECK(codec_buf_append(b, p, n) == 0);
}

static void line(struct trace *t, const char *tag, unsigned a, unsigned b)
{
    char s[64];
    int n = snprintf(s, sizeof(s), "%s %u %u\n", tag, a, b);
    app(&t->text, s, (size_t)n);
}

static void flush_body(struct trace *t)
{
    if (t->body.len == 0)
        return;
    line(t, "STDIN", t->body_id, (unsigned)t->body.len);
    app(&t->text, t->body.data, t->body.len);
    t->body.len = 0;
}

/* codec.out must hold whole, well-formed records of the kinds the codec
 * writes on its own: refusals and management answers. */
static void check_out(const struct codec_buf *out)
{
    size_t off = 0;
    while (off < out->len) {
        CHECK(out->len - off >= FCGI_HEADER_LEN);
        const uint8_t *h = out->data + off;
        size_t clen = (size_t)(h[4] << 8 | h[5]), plen = h[6];
        unsigned id = (unsigned)(h[2] << 8 | h[3]);
        CHECK(h[0] == FCGI_VERSION_1);
        CHECK(out->len - off - FCGI_HEADER_LEN >= clen + plen);
        switch (h[1]) {
        case FCGI_STDOUT:
            CHECK(clen == 0 && id != 0);
            break;
        case FCGI_END_REQUEST:
            CHECK(clen == 8 && id != 0);
            CHECK(h[8 + 4] == FCGI_CANT_MPX_CONN || h[8 + 4] == FCGI_UNKNOWN_ROLE);
            break;
        case FCGI_GET_VALUES_RESULT:
            CHECK(id == 0);
            break;
        case FCGI_UNKNOWN_TYPE:
            CHECK(id == 0 && clen == 8);
            break;
        default:
            CHECK(!"unexpected record type in codec.out");
        }
        off += FCGI_HEADER_LEN + clen + plen;
    }
}

/* What an engine sends back for a finished request; exercises the
 * encoders on peer-controlled sizes. */
static void respond(const struct codec *c, unsigned id)
{
    struct codec_buf r = {0};
    const char *uri = codec_param(c, "REQUEST_URI");
    struct codec_param first = {NULL, NULL, 0};
    if (codec_nparams(c))
        first = codec_param_at(c, 0);
    size_t n = first.vlen;

    if (uri)
        CHECK(codec_put_stdout(&r, (uint16_t)id, uri, strlen(uri)) == 0);
    if (n)
        CHECK(codec_put_stderr(&r, (uint16_t)id, first.value, n) == 0);
    CHECK(codec_put_end(&r, (uint16_t)id, 0, FCGI_REQUEST_COMPLETE) == 0);
    size_t off = 0, total = 0;
    while (off < r.len) {
        const uint8_t *h = r.data + off;
        size_t clen = (size_t)(h[4] << 8 | h[5]);
        CHECK(h[0] == FCGI_VERSION_1 && (clen + h[6]) % 8 == 0 && h[6] < 8);
        CHECK((unsigned)(h[2] << 8 | h[3]) == id);
        if (h[1] != FCGI_END_REQUEST)
            total += clen;
        off += FCGI_HEADER_LEN + clen + h[6];
    }
    CHECK(off == r.len);
    CHECK(total == (uri ? strlen(uri) : 0) + n);
    codec_buf_free(&r);
}

static void on_event(struct trace *t, struct codec *c, const struct codec_event *ev,
                     const uint8_t *in, size_t used)
{
    if (ev->type != CODEC_STDIN && ev->type != CODEC_NEED_MORE)
        flush_body(t);
    switch (ev->type) {
    case CODEC_NEED_MORE:
        break;
    case CODEC_BEGIN:
        CHECK(!t->active && ev->id != 0);
        CHECK(ev->keep_conn == 0 || ev->keep_conn == 1);
        t->active = 1;
        t->id = ev->id;
        t->have_params = t->stdin_ended = 0;
        line(t, "BEGIN", ev->id, (unsigned)ev->keep_conn);
        break;
    case CODEC_PARAMS: {
        CHECK(t->active && ev->id == t->id && !t->have_params);
        t->have_params = 1;
        line(t, "PARAMS", ev->id, (unsigned)codec_nparams(c));
        /* The parsed form stays within 3x the wire bytes, whatever the
         * pairs look like. */
        CHECK(codec_params_held(c) <= 3 * codec_params_wire(c));
        CHECK(codec_params_wire(c) <= limits.max_params_bytes);
        size_t bytes = 0;
        for (size_t i = 0; i < codec_nparams(c); i++) {
            struct codec_param pv = codec_param_at(c, i);
            const struct codec_param *p = &pv;
            size_t nl = strlen(p->name);
            CHECK(p->value[p->vlen] == '\0');
            bytes += nl + p->vlen + 2;
            /* Lookup finds this name or an earlier one with the same text. */
            CHECK(codec_param(c, p->name) != NULL);
            line(t, "P", (unsigned)nl, (unsigned)p->vlen);
            app(&t->text, p->name, nl);
            app(&t->text, p->value, p->vlen);
        }
        CHECK(bytes <= limits.max_params_bytes);
        break;
    }
    case CODEC_STDIN:
        CHECK(t->active && ev->id == t->id && t->have_params && !t->stdin_ended);
        CHECK(ev->len > 0 && ev->data >= in && ev->data + ev->len <= in + used);
        if (t->body.len && t->body_id != ev->id)
            flush_body(t);
        t->body_id = ev->id;
        app(&t->body, ev->data, ev->len);
        break;
    case CODEC_STDIN_END:
        CHECK(t->active && ev->id == t->id && t->have_params && !t->stdin_ended);
        line(t, "STDIN_END", ev->id, 0);
        CHECK(codec_eof(c) == NULL || c->rs != REC_HEADER || c->hdr_have != 0);
        respond(c, ev->id);
        codec_request_done(c);
        t->active = 0;
        break;
    case CODEC_ABORT:
        CHECK(t->active && ev->id == t->id);
        line(t, "ABORT", ev->id, (unsigned)ev->keep_conn);
        codec_request_done(c);
        t->active = 0;
        break;
    case CODEC_REJECTED:
        CHECK(!t->active && ev->id != 0);
        line(t, "REJECTED", ev->id, (unsigned)ev->keep_conn);
        break;
    case CODEC_ERROR:
        CHECK(ev->reason != NULL && ev->reason[0] != '\0');
        line(t, "ERROR", 0, 0);
        app(&t->text, ev->reason, strlen(ev->reason));
        t->failed = 1;
        break;
    default:
        CHECK(!"unknown event type");
    }
    if (c->out.len) {
        check_out(&c->out);
        /* Kept apart from the events: a management record ending a chunk
         * is answered before the next event, otherwise after it. */
        app(&t->out, c->out.data, c->out.len);
        c->out.len = 0;
    }
}

static void feed(struct trace *t, struct codec *c, const uint8_t *p, size_t len)
{
    while (!t->failed) {
        struct codec_event ev;
        size_t used = (size_t)-1;
        enum codec_event_type type = codec_next(c, p, len, &used, &ev);
        CHECK(type == ev.type);
        CHECK(used <= len);
        on_event(t, c, &ev, p, used);
        p += used;
        len -= used;
        if (type == CODEC_NEED_MORE) {
            CHECK(len == 0);
            return;
        }
    }
    /* Failed for good: nothing more is taken. */
    struct codec_event ev;
    size_t used = 1;
    CHECK(codec_next(c, p, len, &used, &ev) == CODEC_ERROR && used == 0);
}

/* chunk(i) gives the size of the i-th chunk; 0 means the whole rest. */
typedef size_t (*chunker)(const uint8_t key[4], size_t i);

static size_t whole(const uint8_t key[4], size_t i)
{
    (void)key;
    (void)i;
    return 0;
}

static size_t bytewise(const uint8_t key[4], size_t i)
{
    (void)key;
    (void)i;
    return 1;
}

/* Sizes cycle through the key's nibbles, scaled by the first byte's top
 * bits: small cuts land inside headers and lengths, big ones across
 * records. */
static size_t keyed(const uint8_t key[4], size_t i)
{
    static const size_t scale[4] = {1, 3, 17, 251};
    unsigned nib = (unsigned)(key[1 + (i / 2) % 3] >> ((i & 1) * 4)) & 15;
    return 1 + nib * scale[key[0] >> 6] + ((key[0] & 0x3f) == i ? 1 : 0);
}

static void run(struct trace *t, const uint8_t key[4], const uint8_t *s, size_t len, chunker ch)
{
    struct codec c;
    size_t pos = 0;

    memset(t, 0, sizeof(*t));
    codec_init(&c, &limits);
    for (size_t i = 0; pos < len && !t->failed; i++) {
        size_t n = ch(key, i);
        if (n == 0 || n > len - pos)
            n = len - pos;
        feed(t, &c, s + pos, n);
        pos += n;
    }
    flush_body(t);
    if (!t->failed) {
        const char *e = codec_eof(&c);
        line(t, "EOF", e != NULL, 0);
        if (e)
            app(&t->text, e, strlen(e));
        /* EOF is clean exactly when no record and no request is open. */
        CHECK((e == NULL) ==
              (c.rs == REC_HEADER && c.hdr_have == 0 && (c.rq == RQ_IDLE || c.rq == RQ_RESPOND)));
    }
    codec_free(&c);
}

static void same(const struct trace *a, const struct trace *b)
{
    CHECK(a->failed == b->failed);
    CHECK(a->text.len == b->text.len);
    CHECK(a->text.len == 0 || memcmp(a->text.data, b->text.data, a->text.len) == 0);
    CHECK(a->out.len == b->out.len);
    CHECK(a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0);
}

static void trace_free(struct trace *t)
{
    codec_buf_free(&t->text);
    codec_buf_free(&t->body);
    codec_buf_free(&t->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t key[4] = {0};
    struct trace a, b;

    if (size < 4)
        return 0;
    memcpy(key, data, 4);
    data += 4;
    size -= 4;

    run(&a, key, data, size, whole);
    run(&b, key, data, size, keyed);
    same(&a, &b);
    trace_free(&b);
    if (size <= 512) {
        run(&b, key, data, size, bytewise);
        same(&a, &b);
        trace_free(&b);
    }
    trace_free(&a);
    return 0;
}

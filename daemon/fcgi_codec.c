/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fcgi_codec.c - the FastCGI record and request state machines.
 *
 * Two layers. The record layer assembles the 8-byte header, then walks
 * content and padding; it never needs more than one header of state, so
 * any split of the input gives the same result. The request layer checks
 * each record against the current request (FastCGI spec 3.3, 5.1-5.3):
 * BEGIN_REQUEST, then PARAMS until an empty PARAMS record, then STDIN until
 * an empty STDIN record; then the application answers.
 *
 * Everything the peer controls is bounded: PARAMS by max_params_bytes,
 * management records by their 16-bit content length, name-value lengths
 * by the bytes actually present (checked without overflow).
 */
#include "fcgi_codec.h"

#include <fastcgi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int codec_buf_append(struct codec_buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void codec_buf_consume(struct codec_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void codec_buf_free(struct codec_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void codec_init(struct codec *c, const struct codec_limits *lim)
{
    memset(c, 0, sizeof(*c));
    c->lim = *lim;
}

static void free_params(struct codec *c)
{
    free(c->pairs);
    c->pairs = NULL;
    c->nparams = 0;
    c->params_wire = 0;
    c->params_raw.len = 0;
}

void codec_free(struct codec *c)
{
    free_params(c);
    codec_buf_free(&c->params_raw);
    codec_buf_free(&c->rec);
    codec_buf_free(&c->out);
}

static int refused(const struct codec *c, uint16_t id)
{
    for (unsigned i = 0; i < sizeof(c->refused) / sizeof(c->refused[0]); i++)
        if (c->refused[i] == id)
            return 1;
    return 0;
}

/* Remembers the last few refused ids: their remaining records are dropped
 * (a client that ignores FCGI_MPXS_CONNS=0 may keep several in flight). */
static void refuse(struct codec *c, uint16_t id)
{
    c->refused[c->nrefused++ % (sizeof(c->refused) / sizeof(c->refused[0]))] = id;
}

static void unrefuse(struct codec *c, uint16_t id)
{
    for (unsigned i = 0; i < sizeof(c->refused) / sizeof(c->refused[0]); i++)
        if (c->refused[i] == id)
            c->refused[i] = 0;
}

void codec_request_done(struct codec *c)
{
    free_params(c);
    /* A long request's params buffer is not kept for the next one. */
    if (c->params_raw.cap > 16384)
        codec_buf_free(&c->params_raw);
    c->rq = RQ_IDLE;
    c->last_id = c->id;
    c->id = 0;
}

struct codec_param codec_param_at(const struct codec *c, size_t i)
{
    const char *base = (const char *)c->params_raw.data;
    size_t end = i + 1 < c->nparams ? c->pairs[i + 1] : c->params_raw.len;
    struct codec_param p = {base + c->pairs[i], NULL, 0};

    p.value = p.name + strlen(p.name) + 1;
    p.vlen = end - (size_t)(p.value - base) - 1;
    return p;
}

const char *codec_param(const struct codec *c, const char *name)
{
    const char *base = (const char *)c->params_raw.data;
    for (size_t i = 0; i < c->nparams; i++) {
        const char *n = base + c->pairs[i];
        if (strcmp(n, name) == 0)
            return n + strlen(n) + 1;
    }
    return NULL;
}

size_t codec_nparams(const struct codec *c)
{
    return c->nparams;
}

size_t codec_params_wire(const struct codec *c)
{
    return c->params_wire;
}

size_t codec_params_held(const struct codec *c)
{
    return c->params_raw.cap + c->nparams * sizeof(*c->pairs);
}

/* ---- encoding ---- */

int codec_put_record(struct codec_buf *b, uint8_t type, uint16_t id, const void *p, size_t n)
{
    static const uint8_t zeros[8];
    size_t pad = (8 - (n & 7)) & 7;
    uint8_t h[FCGI_HEADER_LEN] = {FCGI_VERSION_1,    type,       (uint8_t)(id >> 8), (uint8_t)id,
                                  (uint8_t)(n >> 8), (uint8_t)n, (uint8_t)pad,       0};

    if (n > FCGI_MAX_LENGTH)
        return -1;
    size_t old = b->len;
    if (codec_buf_append(b, h, sizeof(h)) < 0 || codec_buf_append(b, p, n) < 0 ||
        codec_buf_append(b, zeros, pad) < 0) {
        b->len = old;
        return -1;
    }
    return 0;
}

/* Stream records carry at most 65528 bytes: a multiple of 8, so full
 * records need no padding. */
static int put_stream(struct codec_buf *b, uint8_t type, uint16_t id, const void *p, size_t n)
{
    const uint8_t *s = p;
    size_t old = b->len;

    while (n > 0) {
        size_t chunk = n > 65528 ? 65528 : n;
        if (codec_put_record(b, type, id, s, chunk) < 0) {
            b->len = old;
            return -1;
        }
        s += chunk;
        n -= chunk;
    }
    return 0;
}

int codec_put_stdout(struct codec_buf *b, uint16_t id, const void *p, size_t n)
{
    return put_stream(b, FCGI_STDOUT, id, p, n);
}

int codec_put_stderr(struct codec_buf *b, uint16_t id, const void *p, size_t n)
{
    return put_stream(b, FCGI_STDERR, id, p, n);
}

int codec_put_end(struct codec_buf *b, uint16_t id, uint32_t app_status, uint8_t proto_status)
{
    uint8_t body[8] = {(uint8_t)(app_status >> 24),
                       (uint8_t)(app_status >> 16),
                       (uint8_t)(app_status >> 8),
                       (uint8_t)app_status,
                       proto_status,
                       0,
                       0,
                       0};
    size_t old = b->len;

    if (codec_put_record(b, FCGI_STDOUT, id, NULL, 0) < 0 ||
        codec_put_record(b, FCGI_END_REQUEST, id, body, sizeof(body)) < 0) {
        b->len = old;
        return -1;
    }
    return 0;
}

static int put_len(struct codec_buf *b, size_t n)
{
    if (n < 128) {
        uint8_t l = (uint8_t)n;
        return codec_buf_append(b, &l, 1);
    }
    uint8_t l[4] = {(uint8_t)((n >> 24) | 0x80), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    return codec_buf_append(b, l, 4);
}

int codec_put_nv(struct codec_buf *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    size_t old = b->len;

    if (nlen > 0x7fffffff || vlen > 0x7fffffff || put_len(b, nlen) < 0 || put_len(b, vlen) < 0 ||
        codec_buf_append(b, name, nlen) < 0 || codec_buf_append(b, value, vlen) < 0) {
        b->len = old;
        return -1;
    }
    return 0;
}

/* ---- name-value pairs (spec 3.4) ---- */

static int get_len(const uint8_t *p, size_t len, size_t *off, size_t *out)
{
    if (*off >= len)
        return -1;
    if (!(p[*off] & 0x80)) {
        *out = p[(*off)++];
        return 0;
    }
    if (len - *off < 4)
        return -1;
    const uint8_t *q = p + *off;
    *out = ((size_t)(q[0] & 0x7f) << 24) | ((size_t)q[1] << 16) | ((size_t)q[2] << 8) | q[3];
    *off += 4;
    return 0;
}

/* The next pair at *off; -1 when the lengths run past len. */
static int nv_next(const uint8_t *p, size_t len, size_t *off, size_t *name, size_t *nlen,
                   size_t *value, size_t *vlen)
{
    if (get_len(p, len, off, nlen) < 0 || get_len(p, len, off, vlen) < 0)
        return -1;
    size_t left = len - *off;
    if (*nlen > left || *vlen > left - *nlen)
        return -1;
    *name = *off;
    *value = *off + *nlen;
    *off += *nlen + *vlen;
    return 0;
}

static const char *fail(struct codec *c, const char *fmt, unsigned a, unsigned b)
{
    snprintf(c->errbuf, sizeof(c->errbuf), fmt, a, b);
    c->failed = 1;
    return c->errbuf;
}

/* The buffer grew by doubling while the stream came in: give the slack
 * back, so the parsed form is bounded by the wire size, not twice it. */
static void buf_shrink(struct codec_buf *b)
{
    if (b->len == 0) {
        codec_buf_free(b);
        return;
    }
    uint8_t *d = b->cap > b->len ? realloc(b->data, b->len) : NULL;
    if (d) {
        b->data = d;
        b->cap = b->len;
    }
}

/* Turns the PARAMS stream into NUL-terminated name/value strings, in
 * place: a pair's strings and their two NULs take no more than the pair's
 * wire bytes (two length bytes at least), so what is written never
 * reaches the next pair's header before it is read. */
static const char *parse_params(struct codec *c)
{
    size_t len = c->params_raw.len, off = 0, n = 0, w = 0;
    size_t name, nlen, value, vlen;

    while (off < len) {
        if (nv_next(c->params_raw.data, len, &off, &name, &nlen, &value, &vlen) < 0)
            return fail(c, "name-value length runs past the end of PARAMS (%u bytes)",
                        (unsigned)len, 0);
        n++;
    }
    if (len > UINT32_MAX)
        return fail(c, "PARAMS over 4 GiB", 0, 0);
    buf_shrink(&c->params_raw);
    if (n && !(c->pairs = malloc(n * sizeof(*c->pairs))))
        return fail(c, "out of memory for %u params", (unsigned)n, 0);
    uint8_t *p = c->params_raw.data;
    for (off = 0; off < len; c->nparams++) {
        nv_next(p, len, &off, &name, &nlen, &value, &vlen);
        const uint8_t *nul = memchr(p + name, '\0', nlen);
        size_t keep = nul ? (size_t)(nul - (p + name)) : nlen;
        c->pairs[c->nparams] = (uint32_t)w;
        memmove(p + w, p + name, keep);
        w += keep;
        p[w++] = '\0';
        memmove(p + w, p + value, vlen);
        w += vlen;
        p[w++] = '\0';
    }
    c->params_wire = len;
    c->params_raw.len = w;
    return NULL;
}

static int want_var(const char *want, const uint8_t *name, size_t nlen)
{
    return strlen(want) == nlen && memcmp(want, name, nlen) == 0;
}

/* Answers the variables we know, each once; unknown names are left out,
 * as the spec allows. libfcgi's fixed 64-byte reply buffer is the reason
 * this path is bounded by construction. */
static const char *get_values(struct codec *c)
{
    const uint8_t *p = c->rec.data;
    size_t len = c->rec.len, off = 0, name, nlen, value, vlen;
    struct codec_buf reply = {0};
    int seen = 0;
    char num[24];

    while (off < len) {
        if (nv_next(p, len, &off, &name, &nlen, &value, &vlen) < 0) {
            codec_buf_free(&reply);
            return fail(c, "GET_VALUES name-value length runs past the record", 0, 0);
        }
        const char *var = NULL;
        unsigned v = 0;
        int bit = 0;
        if (want_var(FCGI_MAX_CONNS, p + name, nlen))
            var = FCGI_MAX_CONNS, v = c->lim.max_conns, bit = 1;
        else if (want_var(FCGI_MAX_REQS, p + name, nlen))
            var = FCGI_MAX_REQS, v = c->lim.max_reqs, bit = 2;
        else if (want_var(FCGI_MPXS_CONNS, p + name, nlen))
            var = FCGI_MPXS_CONNS, v = 0, bit = 4;
        if (!var || (seen & bit))
            continue;
        seen |= bit;
        int n = snprintf(num, sizeof(num), "%u", v);
        if (codec_put_nv(&reply, var, strlen(var), num, (size_t)n) < 0) {
            codec_buf_free(&reply);
            return fail(c, "out of memory", 0, 0);
        }
    }
    int rc = codec_put_record(&c->out, FCGI_GET_VALUES_RESULT, 0, reply.data, reply.len);
    codec_buf_free(&reply);
    return rc < 0 ? fail(c, "out of memory", 0, 0) : NULL;
}

/* ---- decoding ---- */

/* Checks a header against the request state; decides whether its content
 * is kept (rec), streamed (STDIN), accumulated (PARAMS) or skipped. */
static const char *header_check(struct codec *c)
{
    const uint8_t *h = c->hdr;

    if (h[0] != FCGI_VERSION_1)
        return fail(c, "bad version %u", h[0], 0);
    c->type = h[1];
    c->rid = (uint16_t)(h[2] << 8 | h[3]);
    c->clen = (size_t)(h[4] << 8 | h[5]);
    c->plen = h[6];
    c->cpos = c->ppos = 0;
    c->skip = 0;
    c->rec.len = 0;

    if (c->rid == FCGI_NULL_REQUEST_ID) {
        /* Management records; GET_VALUES is the only one defined for a
         * web server to send, anything else is answered UNKNOWN_TYPE. */
        c->skip = c->type != FCGI_GET_VALUES;
        return NULL;
    }
    if (refused(c, c->rid) && c->type != FCGI_BEGIN_REQUEST) {
        c->skip = 1;
        return NULL;
    }
    /* An ABORT that crossed our END_REQUEST on the wire: already done. */
    if (c->type == FCGI_ABORT_REQUEST && c->rq == RQ_IDLE && c->rid == c->last_id) {
        c->skip = 1;
        return NULL;
    }
    switch (c->type) {
    case FCGI_BEGIN_REQUEST:
        if (c->clen != 8)
            return fail(c, "BEGIN_REQUEST body is %u bytes, not 8", (unsigned)c->clen, 0);
        if (c->rq != RQ_IDLE && c->rid == c->id)
            return fail(c, "BEGIN_REQUEST for request id %u, which is already active", c->rid, 0);
        return NULL;
    case FCGI_ABORT_REQUEST:
    case FCGI_DATA:
        if (c->rq == RQ_IDLE || c->rid != c->id)
            return fail(c, "record type %u for unknown request id %u", c->type, c->rid);
        c->skip = 1;
        return NULL;
    case FCGI_PARAMS:
        if (c->rq == RQ_IDLE || c->rid != c->id)
            return fail(c, "PARAMS for unknown request id %u", c->rid, 0);
        if (c->rq != RQ_PARAMS)
            return fail(c, "PARAMS after the end of the params stream (request id %u)", c->rid, 0);
        if (c->clen > c->lim.max_params_bytes - c->params_raw.len)
            return fail(c, "PARAMS over the limit of %u bytes (limits.max_params_bytes)",
                        (unsigned)c->lim.max_params_bytes, 0);
        return NULL;
    case FCGI_STDIN:
        if (c->rq == RQ_IDLE || c->rid != c->id)
            return fail(c, "STDIN for unknown request id %u", c->rid, 0);
        if (c->rq == RQ_PARAMS)
            return fail(c, "STDIN before the end of PARAMS (request id %u)", c->rid, 0);
        if (c->rq != RQ_STDIN)
            return fail(c, "STDIN after the end of the body (request id %u)", c->rid, 0);
        return NULL;
    default:
        return fail(c, "unexpected record type %u for request id %u", c->type, c->rid);
    }
}

/* A record's content is complete. */
static enum codec_event_type record_done(struct codec *c, struct codec_event *ev)
{
    const char *err = NULL;

    if (c->rid == FCGI_NULL_REQUEST_ID) {
        if (c->type == FCGI_GET_VALUES) {
            err = get_values(c);
        } else {
            uint8_t body[8] = {c->type};
            if (codec_put_record(&c->out, FCGI_UNKNOWN_TYPE, 0, body, 8) < 0)
                err = fail(c, "out of memory", 0, 0);
        }
        goto out;
    }
    if (c->skip) {
        if (c->type == FCGI_ABORT_REQUEST && c->rid == c->id) {
            ev->type = CODEC_ABORT;
            ev->id = c->id;
            ev->keep_conn = c->keep_conn;
        }
        return ev->type;
    }
    switch (c->type) {
    case FCGI_BEGIN_REQUEST: {
        const uint8_t *b = c->rec.data;
        unsigned role = (unsigned)(b[0] << 8 | b[1]);
        int keep = (b[2] & FCGI_KEEP_CONN) != 0;
        if (c->rq != RQ_IDLE) {
            /* One request per connection at a time (spec 5.1). */
            refuse(c, c->rid);
            if (codec_put_end(&c->out, c->rid, 0, FCGI_CANT_MPX_CONN) < 0)
                err = fail(c, "out of memory", 0, 0);
            break;
        }
        if (role != FCGI_RESPONDER) {
            refuse(c, c->rid);
            if (codec_put_end(&c->out, c->rid, 0, FCGI_UNKNOWN_ROLE) < 0)
                err = fail(c, "out of memory", 0, 0);
            ev->type = CODEC_REJECTED;
            ev->id = c->rid;
            ev->keep_conn = keep;
            break;
        }
        unrefuse(c, c->rid);
        c->rq = RQ_PARAMS;
        c->id = c->rid;
        c->keep_conn = keep;
        ev->type = CODEC_BEGIN;
        ev->id = c->id;
        ev->keep_conn = keep;
        break;
    }
    case FCGI_PARAMS:
        if (c->clen != 0)
            break;
        err = parse_params(c);
        if (!err) {
            c->rq = RQ_STDIN;
            ev->type = CODEC_PARAMS;
            ev->id = c->id;
        }
        break;
    case FCGI_STDIN:
        if (c->clen == 0) {
            c->rq = RQ_RESPOND;
            ev->type = CODEC_STDIN_END;
            ev->id = c->id;
        }
        break;
    }
out:
    if (err) {
        ev->type = CODEC_ERROR;
        ev->reason = err;
    }
    return ev->type;
}

enum codec_event_type codec_next(struct codec *c, const uint8_t *in, size_t len, size_t *used,
                                 struct codec_event *ev)
{
    size_t pos = 0;

    memset(ev, 0, sizeof(*ev));
    if (c->failed) {
        *used = 0;
        ev->type = CODEC_ERROR;
        ev->reason = c->errbuf;
        return CODEC_ERROR;
    }
    while (ev->type == CODEC_NEED_MORE && (pos < len || c->rs == REC_CONTENT)) {
        switch (c->rs) {
        case REC_HEADER: {
            size_t n = sizeof(c->hdr) - c->hdr_have;
            if (n > len - pos)
                n = len - pos;
            memcpy(c->hdr + c->hdr_have, in + pos, n);
            c->hdr_have += n;
            pos += n;
            if (c->hdr_have < sizeof(c->hdr))
                break;
            c->hdr_have = 0;
            const char *err = header_check(c);
            if (err) {
                ev->type = CODEC_ERROR;
                ev->reason = err;
                break;
            }
            c->rs = REC_CONTENT;
            break;
        }
        case REC_CONTENT: {
            size_t n = c->clen - c->cpos;
            if (n > len - pos)
                n = len - pos;
            if (n == 0 && c->cpos < c->clen)
                goto done; /* need more input */
            if (c->skip) {
                /* dropped */
            } else if (c->type == FCGI_STDIN) {
                if (n > 0) {
                    ev->type = CODEC_STDIN;
                    ev->id = c->id;
                    ev->data = in + pos;
                    ev->len = n;
                }
            } else {
                struct codec_buf *dst = c->type == FCGI_PARAMS ? &c->params_raw : &c->rec;
                if (codec_buf_append(dst, in + pos, n) < 0) {
                    ev->type = CODEC_ERROR;
                    ev->reason = fail(c, "out of memory", 0, 0);
                    break;
                }
            }
            c->cpos += n;
            pos += n;
            if (c->cpos == c->clen) {
                c->rs = c->plen ? REC_PADDING : REC_HEADER;
                /* A STDIN data event is reported first; the record's end
                 * only matters for an empty STDIN record. */
                if (ev->type == CODEC_NEED_MORE)
                    record_done(c, ev);
            }
            break;
        }
        case REC_PADDING: {
            size_t n = c->plen - c->ppos;
            if (n > len - pos)
                n = len - pos;
            c->ppos += n;
            pos += n;
            if (c->ppos == c->plen)
                c->rs = REC_HEADER;
            break;
        }
        }
    }
done:
    *used = pos;
    return ev->type;
}

const char *codec_eof(const struct codec *c)
{
    if (c->rs != REC_HEADER || c->hdr_have != 0)
        return "connection closed in the middle of a record";
    if (c->rq == RQ_PARAMS || c->rq == RQ_STDIN)
        return "connection closed before the request was complete";
    return NULL;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fcgi_codec.h - a pure FastCGI codec for the responder role.
 *
 * Bytes in, events out: no I/O, no globals, no logging. Input may arrive
 * split anywhere (down to one byte at a time); the events are the same,
 * except that STDIN data may come in more, smaller pieces. Management
 * replies (FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE, END_REQUEST for a
 * refused request) are queued in codec->out for the caller to send.
 *
 * One request at a time per connection (FCGI_MPXS_CONNS = 0): a second
 * BEGIN_REQUEST while one is active is answered FCGI_CANT_MPX_CONN and the
 * records of that refused id are dropped.
 */
#ifndef FCGATE_FCGI_CODEC_H
#define FCGATE_FCGI_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. */
struct codec_buf {
    uint8_t *data;
    size_t len, cap;
};

/* 0, or -1 when memory runs out (the buffer is unchanged). */
int codec_buf_append(struct codec_buf *b, const void *p, size_t n);
/* Drops the first n bytes. */
void codec_buf_consume(struct codec_buf *b, size_t n);
void codec_buf_free(struct codec_buf *b);

struct codec_limits {
    size_t max_params_bytes; /* the whole PARAMS stream of one request */
    unsigned max_conns;      /* FCGI_MAX_CONNS, as answered to GET_VALUES */
    unsigned max_reqs;       /* FCGI_MAX_REQS */
};

enum codec_event_type {
    CODEC_NEED_MORE = 0, /* all input consumed, nothing to report */
    CODEC_BEGIN,         /* a request started: id, keep_conn */
    CODEC_PARAMS,        /* its params are complete: codec_param() works */
    CODEC_STDIN,         /* body bytes: data, len (point into the input) */
    CODEC_STDIN_END,     /* the body is complete: run the request */
    CODEC_ABORT,         /* the peer aborted the current request */
    CODEC_REJECTED,      /* a request refused (unknown role); close unless keep_conn */
    CODEC_ERROR,         /* protocol error: reason; close the connection */
};

struct codec_event {
    enum codec_event_type type;
    uint16_t id;
    int keep_conn;
    const uint8_t *data;
    size_t len;
    const char *reason; /* CODEC_ERROR: static text, or the codec's errbuf */
};

/* One param, as codec_param_at gives it: NUL-terminated strings inside the
 * codec, valid until codec_request_done. A name is cut at a NUL byte it
 * carries (lookups compare it as a C string anyway); a value keeps its
 * bytes, vlen of them. */
struct codec_param {
    const char *name;
    const char *value;
    size_t vlen;
};

enum codec_record_state { REC_HEADER, REC_CONTENT, REC_PADDING };
enum codec_request_state { RQ_IDLE, RQ_PARAMS, RQ_STDIN, RQ_RESPOND };

struct codec {
    struct codec_limits lim;
    /* record layer */
    enum codec_record_state rs;
    uint8_t hdr[8];
    size_t hdr_have;
    uint8_t type;
    uint16_t rid;
    size_t clen, plen, cpos, ppos;
    int skip;             /* drop this record's content */
    struct codec_buf rec; /* content of a management or BEGIN/ABORT record */
    /* request layer */
    enum codec_request_state rq;
    uint16_t id, last_id; /* current request; the one answered last */
    uint16_t refused[4];  /* ids answered CANT_MPX_CONN / UNKNOWN_ROLE */
    unsigned nrefused;
    int keep_conn;
    /* The PARAMS stream as received; once complete, rewritten in place as
     * name\0value\0 pairs, which never take more than their wire bytes.
     * pairs[i] is the offset of the i-th name: with 4 bytes per pair of 2+
     * wire bytes, the parsed params cost at most 3x their wire size. */
    struct codec_buf params_raw;
    uint32_t *pairs;
    size_t nparams;
    size_t params_wire; /* bytes of the PARAMS stream, once complete */
    int failed;
    char errbuf[128];
    struct codec_buf out; /* management replies to send */
};

void codec_init(struct codec *c, const struct codec_limits *lim);
void codec_free(struct codec *c);

/* Consumes input up to and including the next event; *used is how many
 * bytes of in were taken. Call again with the rest. After CODEC_ERROR the
 * codec stays failed. STDIN events point into in. */
enum codec_event_type codec_next(struct codec *c, const uint8_t *in, size_t len, size_t *used,
                                 struct codec_event *ev);

/* The peer closed the connection: NULL if that was clean (between
 * requests, or while the response is being produced), else why not. */
const char *codec_eof(const struct codec *c);

/* The current request is answered (END_REQUEST queued by the caller):
 * back to idle, params freed. */
void codec_request_done(struct codec *c);

/* A FastCGI param of the current request, NULL if absent. */
const char *codec_param(const struct codec *c, const char *name);

/* The current request's params, in stream order: how many, and the i-th
 * (i < codec_nparams). */
size_t codec_nparams(const struct codec *c);
struct codec_param codec_param_at(const struct codec *c, size_t i);

/* Bytes of the current request's PARAMS stream on the wire, and bytes the
 * codec holds for its parsed form (at most 3x the wire bytes). */
size_t codec_params_wire(const struct codec *c);
size_t codec_params_held(const struct codec *c);

/* Encoders: append records to b. 0, or -1 on ENOMEM. */
int codec_put_stdout(struct codec_buf *b, uint16_t id, const void *p, size_t n);
int codec_put_stderr(struct codec_buf *b, uint16_t id, const void *p, size_t n);
/* An empty STDOUT (end of stream) then END_REQUEST. */
int codec_put_end(struct codec_buf *b, uint16_t id, uint32_t app_status, uint8_t proto_status);

/* Record encoding helpers for tests and clients. */
int codec_put_record(struct codec_buf *b, uint8_t type, uint16_t id, const void *p, size_t n);
int codec_put_nv(struct codec_buf *b, const char *name, size_t nlen, const char *value,
                 size_t vlen);

#endif
